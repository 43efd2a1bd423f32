//! Unit tests of `proxy.rs`: every family rendered exactly, series cached per
//! outcome and TLS state.

use super::super::tls::NoTlsReason;
use super::super::LATENCY_BUCKETS_MS;
use super::*;

fn metrics() -> ProxyMetrics {
    ProxyMetrics::new(&Registry::new()).expect("spoke's families register")
}

/// The text of one histogram series: `observations_ms` are whole milliseconds, so the
/// cumulative count at each bound and the sum are easy to state.
fn histogram_text(name: &str, labels: &str, observations_ms: &[u64]) -> String {
    let mut text = String::new();
    for bound in LATENCY_BUCKETS_MS {
        let n = observations_ms.iter().filter(|o| **o <= bound).count();
        text.push_str(&format!("{name}_bucket{{{labels},le=\"{bound}\"}} {n}\n"));
    }
    let total = observations_ms.len();
    let sum: u64 = observations_ms.iter().sum();
    text.push_str(&format!("{name}_bucket{{{labels},le=\"+Inf\"}} {total}\n"));
    text.push_str(&format!("{name}_sum{{{labels}}} {sum}\n"));
    text.push_str(&format!("{name}_count{{{labels}}} {total}\n"));
    text
}

fn header(name: &str, help: &str, kind: &str) -> String {
    format!("# HELP {name} {help}\n# TYPE {name} {kind}\n")
}

#[test]
fn authority_families_render_exactly() {
    let m = metrics();
    let mut books = m.authority(Direction::Outbound, "books.default.svc.cluster.local:7000");
    let mtls =
        TlsLabel::ServerId("books.default.serviceaccount.identity.linkerd.cluster.local".into());
    let mtls = books.slot(&mtls);
    books.request(mtls);
    books.request(mtls);
    books.request(mtls);
    books.response(mtls, 200, true, None, Duration::from_millis(4));
    books.response(mtls, 200, true, None, Duration::from_millis(12));
    books.response(
        mtls,
        504,
        false,
        Some("timeout"),
        Duration::from_millis(1_000),
    );

    let base = "direction=\"outbound\",authority=\"books.default.svc.cluster.local:7000\",\
                tls=\"true\",server_id=\"books.default.serviceaccount.identity.linkerd.cluster.local\"";
    let mut expected = header(
        "request_total",
        "Total HTTP requests received, by destination authority.",
        "counter",
    );
    expected.push_str(&format!("request_total{{{base}}} 3\n"));
    expected.push_str(&header(
        "response_total",
        "Total HTTP responses, by status code and classification.",
        "counter",
    ));
    expected.push_str(&format!(
        "response_total{{{base},status_code=\"200\",classification=\"success\"}} 2\n"
    ));
    expected.push_str(&format!(
        "response_total{{{base},status_code=\"504\",classification=\"failure\",error=\"timeout\"}} 1\n"
    ));
    expected.push_str(&header(
        "response_latency_ms",
        "Milliseconds from a request being received to its response, by status code.",
        "histogram",
    ));
    expected.push_str(&histogram_text(
        "response_latency_ms",
        &format!("{base},status_code=\"200\""),
        &[4, 12],
    ));
    expected.push_str(&histogram_text(
        "response_latency_ms",
        &format!("{base},status_code=\"504\""),
        &[1_000],
    ));
    assert_eq!(m.registry().render_to_string(), expected);
}

#[test]
fn grpc_responses_carry_their_status() {
    let m = metrics();
    let mut a = m.authority(Direction::Inbound, "a:80");
    let slot = a.slot(&TlsLabel::Disabled);
    let ms = Duration::from_millis(1);
    a.response_grpc(slot, (200, Some(0)), true, None, ms);
    a.response_grpc(slot, (200, Some(0)), true, None, ms);
    a.response_grpc(slot, (200, Some(14)), false, Some("unavailable"), ms);
    a.response(slot, 200, true, None, ms);
    let text = m.registry().render_to_string();
    let base = "direction=\"inbound\",authority=\"a:80\",tls=\"disabled\",status_code=\"200\"";
    for (tail, n) in [
        ("classification=\"success\",grpc_status=\"0\"", 2),
        (
            "classification=\"failure\",grpc_status=\"14\",error=\"unavailable\"",
            1,
        ),
        ("classification=\"success\"", 1),
    ] {
        let line = format!("response_total{{{base},{tail}}} {n}\n");
        assert!(text.contains(&line), "{line} in {text}");
    }
    // One latency series: grpc_status is not one of its labels.
    assert!(text.contains(&format!("response_latency_ms_count{{{base}}} 4\n")));
}

#[test]
fn repeated_outcomes_reuse_cached_series() {
    let m = metrics();
    let mut a = m.authority(Direction::Outbound, "a:80");
    let plain = TlsLabel::NoIdentity(NoTlsReason::NotProvidedByServiceDiscovery);
    for _ in 0..3 {
        let slot = a.slot(&plain);
        a.response(slot, 200, true, None, Duration::from_millis(1));
    }
    let slot = a.slot(&plain);
    a.response(slot, 200, false, None, Duration::from_millis(1));
    for _ in 0..2 {
        let error = Some("unavailable");
        a.response(slot, 503, false, error, Duration::from_millis(1));
    }
    assert_eq!(a.by_tls.len(), 1, "one entry per TLS state");
    assert_eq!(
        a.by_tls[0].2.seen.len(),
        3,
        "one entry per distinct outcome"
    );
    // 200 success and 200 failure share one latency series.
    let text = m.registry().render_to_string();
    let base = "direction=\"outbound\",authority=\"a:80\",tls=\"no_identity\",\
                no_tls_reason=\"not_provided_by_service_discovery\"";
    assert!(text.contains(&format!(
        "response_latency_ms_count{{{base},status_code=\"200\"}} 4\n"
    )));
    assert!(text.contains(&format!(
        "response_total{{{base},status_code=\"503\",\
         classification=\"failure\",error=\"unavailable\"}} 2\n"
    )));
}

#[test]
fn each_tls_state_of_an_authority_has_its_own_series() {
    let m = metrics();
    let mut a = m.authority(Direction::Inbound, "a:80");
    let alice = TlsLabel::ClientId(Some("alice".into()));
    let plain = TlsLabel::NoIdentity(NoTlsReason::NoTlsFromRemote);
    let (first, second) = (a.slot(&alice), a.slot(&plain));
    assert_ne!(first, second);
    a.request(first);
    a.request(second);
    let again = a.slot(&TlsLabel::ClientId(Some("alice".into())));
    assert_eq!(again, first, "a state seen before has its slot");
    a.request(again);
    a.response(first, 200, true, None, Duration::from_millis(1));
    assert_eq!(a.by_tls.len(), 2);
    let text = m.registry().render_to_string();
    for line in [
        "request_total{direction=\"inbound\",authority=\"a:80\",tls=\"true\",client_id=\"alice\"} 2\n",
        "request_total{direction=\"inbound\",authority=\"a:80\",tls=\"no_identity\",\
         no_tls_reason=\"no_tls_from_remote\"} 1\n",
        "response_total{direction=\"inbound\",authority=\"a:80\",tls=\"true\",client_id=\"alice\",\
         status_code=\"200\",classification=\"success\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert!(
        !text.contains("no_tls_from_remote\",status_code"),
        "no plaintext response yet"
    );
}

#[test]
fn route_families_render_exactly() {
    let m = metrics();
    let labels = vec![
        ("route".to_string(), "GET /books/{id}".to_string()),
        ("group".to_string(), "api".to_string()),
    ];
    let mut route = m.route(Direction::Outbound, "books:7000", &labels);
    route.request();
    route.actual_request();
    route.actual_response(500, false);
    route.retryable(false);
    route.actual_request();
    route.actual_response(500, false);
    route.retryable(true);
    route.response(500, false, None, Duration::from_millis(30));

    let base = "direction=\"outbound\",dst=\"books:7000\",rt_group=\"api\",\
                rt_route=\"GET /books/{id}\"";
    let mut expected = header(
        "route_request_total",
        "Total HTTP requests, by profile route.",
        "counter",
    );
    expected.push_str(&format!("route_request_total{{{base}}} 1\n"));
    expected.push_str(&header(
        "route_response_total",
        "Total HTTP responses by profile route, after retries and timeouts.",
        "counter",
    ));
    expected.push_str(&format!(
        "route_response_total{{{base},status_code=\"500\",classification=\"failure\"}} 1\n"
    ));
    expected.push_str(&header(
        "route_response_latency_ms",
        "Milliseconds from a request being received to its response, by profile route, \
         covering every attempt.",
        "histogram",
    ));
    expected.push_str(&histogram_text(
        "route_response_latency_ms",
        &format!("{base},status_code=\"500\""),
        &[30],
    ));
    expected.push_str(&header(
        "route_actual_request_total",
        "Total HTTP request attempts (retries included), by profile route.",
        "counter",
    ));
    expected.push_str(&format!("route_actual_request_total{{{base}}} 2\n"));
    expected.push_str(&header(
        "route_actual_response_total",
        "Total HTTP responses to each attempt (retries included), by profile route.",
        "counter",
    ));
    expected.push_str(&format!(
        "route_actual_response_total{{{base},status_code=\"500\",classification=\"failure\"}} 2\n"
    ));
    expected.push_str(&header(
        "route_retryable_total",
        "Failed responses on retryable routes; skipped=\"no_budget\" counts those \
         the retry budget did not allow to be retried.",
        "counter",
    ));
    expected.push_str(&format!("route_retryable_total{{{base}}} 1\n"));
    expected.push_str(&format!(
        "route_retryable_total{{{base},skipped=\"no_budget\"}} 1\n"
    ));
    assert_eq!(m.registry().render_to_string(), expected);
}

#[test]
fn default_route_has_no_rt_labels_and_bad_keys_are_sanitized() {
    let m = metrics();
    m.route(Direction::Outbound, "a:80", &[]).request();
    m.route(
        Direction::Outbound,
        "a:80",
        &[("team.name".into(), "x".into())],
    )
    .request();
    let text = m.registry().render_to_string();
    assert!(text.contains("route_request_total{direction=\"outbound\",dst=\"a:80\"} 1\n"));
    assert!(text.contains(
        "route_request_total{direction=\"outbound\",dst=\"a:80\",rt_team_name=\"x\"} 1\n"
    ));
    assert!(
        !text.contains("route_retryable_total"),
        "no retryable series until a retry is wanted"
    );
}

#[test]
fn discovery_families_render_exactly() {
    let m = metrics();
    let mut profile = m.discovery(DiscoveryKind::Profile);
    let endpoints = m.discovery(DiscoveryKind::Endpoints);
    profile.stream_opened();
    profile.message();
    profile.message();
    profile.error("Unavailable");
    profile.error("Unavailable");
    profile.error("Internal");
    profile.reconnect();
    profile.swap_latency(Duration::from_micros(250));
    endpoints.stream_opened();

    let mut expected = String::from(
        "# HELP spoke_discovery_streams_opened_total Discovery streams opened to the control plane.\n\
         # TYPE spoke_discovery_streams_opened_total counter\n\
         spoke_discovery_streams_opened_total{kind=\"endpoints\"} 1\n\
         spoke_discovery_streams_opened_total{kind=\"profile\"} 1\n\
         # HELP spoke_discovery_messages_total Discovery messages received from the control plane.\n\
         # TYPE spoke_discovery_messages_total counter\n\
         spoke_discovery_messages_total{kind=\"endpoints\"} 0\n\
         spoke_discovery_messages_total{kind=\"profile\"} 2\n\
         # HELP spoke_discovery_errors_total Discovery stream failures, by gRPC status code.\n\
         # TYPE spoke_discovery_errors_total counter\n\
         spoke_discovery_errors_total{kind=\"profile\",code=\"Internal\"} 1\n\
         spoke_discovery_errors_total{kind=\"profile\",code=\"Unavailable\"} 2\n\
         # HELP spoke_discovery_reconnects_total Discovery streams requested again after ending or failing.\n\
         # TYPE spoke_discovery_reconnects_total counter\n\
         spoke_discovery_reconnects_total{kind=\"endpoints\"} 0\n\
         spoke_discovery_reconnects_total{kind=\"profile\"} 1\n\
         # HELP spoke_discovery_swap_latency_ms Milliseconds from a discovery thread receiving a \
         snapshot to the event loop swapping it in.\n\
         # TYPE spoke_discovery_swap_latency_ms histogram\n",
    );
    expected.push_str(&histogram_text(
        "spoke_discovery_swap_latency_ms",
        "kind=\"endpoints\"",
        &[],
    ));
    let profile_hist = histogram_text("spoke_discovery_swap_latency_ms", "kind=\"profile\"", &[0])
        .replace("_sum{kind=\"profile\"} 0", "_sum{kind=\"profile\"} 0.25");
    expected.push_str(&profile_hist);
    assert_eq!(m.registry().render_to_string(), expected);
}

#[test]
fn two_proxy_metrics_on_one_registry_share_families() {
    let registry = Registry::new();
    let a = ProxyMetrics::new(&registry).expect("first");
    let b = ProxyMetrics::new(&registry).expect("second registration is idempotent");
    for metrics in [a, b] {
        let mut x = metrics.authority(Direction::Outbound, "x:1");
        let slot = x.slot(&TlsLabel::Disabled);
        x.request(slot);
    }
    assert!(registry
        .render_to_string()
        .contains("request_total{direction=\"outbound\",authority=\"x:1\",tls=\"disabled\"} 2\n"));
}

#[test]
fn handles_are_send_so_threads_can_own_them() {
    fn assert_send<T: Send + Sync>() {}
    assert_send::<ProxyMetrics>();
    assert_send::<AuthorityMetrics>();
    assert_send::<RouteMetrics>();
    assert_send::<TcpMetrics>();
    assert_send::<super::super::TcpSeries>();
    assert_send::<TlsLabel>();
    assert_send::<DiscoveryMetrics>();
    assert_send::<Registry>();
}
