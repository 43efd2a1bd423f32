//! The inbound side through the real proxy, with the original destination of
//! each accepted connection injected (no iptables, no root): requests go to
//! the original destination whatever they name, carry `direction="inbound"`
//! metrics with route labels from their `Host`'s profile, are neither retried
//! nor split, lose `l5d-client-id`, and connections with no target (not
//! redirected, a target IP not listed, a loop, a direct connection without
//! mTLS) are refused and counted.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protobuf::well_known_types::duration::Duration as PbDuration;
use spoke::app::App;
use spoke::controller::server::Kind;
use spoke::devtools::{Client, Reply, Response};
use support::*;

const BOOKS: &str = "books.default.svc.cluster.local:7000";
const DECOY: &str = "decoy.default.svc.cluster.local:80";
/// A name outside the profile suffixes: no lookup, the default route.
const PLAIN: &str = "app.example:8080";

fn inbound_proxy(env: &spoke::config::MapEnv, orig: &Injected) -> App {
    proxy_with_orig_dst(env, Box::new(orig.clone()))
}

/// One GET on a fresh connection to the inbound listener.
#[track_caller]
fn inbound_get(app: &App, host: &str, path: &str) -> Reply {
    spoke::devtools::get(app.inbound_addr(), host, path).expect("inbound request")
}

/// What a raw GET on a fresh inbound connection gets back before the proxy
/// closes it (or the wait runs out).
fn raw_inbound(app: &App) -> Vec<u8> {
    raw_get_at(app.inbound_addr(), BOOKS)
}

fn refused(app: &App, reason: &str) -> f64 {
    metric(
        app,
        "spoke_connections_refused_total",
        &[("direction", "inbound"), ("reason", reason)],
    )
}

fn pb_duration(d: Duration) -> PbDuration {
    let mut p = PbDuration::new();
    p.seconds = d.as_secs() as i64;
    p.nanos = d.subsec_nanos() as i32;
    p
}

#[test]
fn an_inbound_request_goes_to_the_original_destination_whatever_it_names() {
    let ctl = MockController::start();
    let local = backend("local");
    let decoy = backend("decoy");
    // Were a request routed by what it names, it would reach the decoy.
    ctl.endpoints(BOOKS, &[decoy.addr()]);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = inbound_proxy(&config(ctl.addr()), &Injected::to(local.addr()));

    let decoy_ip = decoy.addr().to_string();
    for host in [BOOKS, decoy_ip.as_str(), "example.com", "example.com:8080"] {
        let r = inbound_get(&app, host, "/hello");
        assert_eq!(
            (r.status, r.text()),
            (200, "local\n".into()),
            "Host: {host}"
        );
    }
    // Without a Host (HTTP/1.0) it has a target all the same.
    let mut c = Client::connect(app.inbound_addr(), Duration::from_secs(5)).expect("connect");
    let r = c
        .send_raw(b"GET /no-host HTTP/1.0\r\n\r\n", false)
        .expect("reply");
    assert_eq!((r.status, r.text()), (200, "local\n".into()));
    // An override names nothing inbound either.
    let mut c = Client::connect(app.inbound_addr(), Duration::from_secs(5)).expect("connect");
    let r = c
        .send("GET", BOOKS, "/", &[("l5d-dst-override", DECOY)], b"")
        .expect("reply");
    assert_eq!((r.status, r.text()), (200, "local\n".into()));

    assert_eq!(decoy.hits(), 0);
    assert_eq!(local.hits(), 6);
    let seen: Vec<String> = local
        .received()
        .iter()
        .filter_map(|r| r.header("host").map(str::to_string))
        .collect();
    assert_eq!(
        &seen[..4],
        &[BOOKS, decoy_ip.as_str(), "example.com", "example.com:8080"],
        "the client's Host goes on"
    );
    let lookups: Vec<(Kind, String)> = ctl
        .requests()
        .into_iter()
        .map(|(k, g)| (k, g.path))
        .collect();
    assert_eq!(
        lookups,
        vec![(Kind::Profile, BOOKS.to_string())],
        "one GetProfile for the name under the suffixes; no Get ever"
    );
}

#[test]
fn inbound_requests_are_counted_inbound_with_routes_from_the_hosts_profile() {
    let ctl = MockController::start();
    let local = backend("local");
    ctl.profile(
        BOOKS,
        &profile(vec![route("get-book", Some("GET"), "/books/[^/]+")]),
    );
    let app = inbound_proxy(&config(ctl.addr()), &Injected::to(local.addr()));

    // Three requests on one connection: one upstream connection serves them.
    let mut c = Client::connect(app.inbound_addr(), Duration::from_secs(5)).expect("connect");
    for path in ["/books/1", "/books/2", "/authors"] {
        assert_eq!(c.get(BOOKS, path).expect("reply").status, 200, "{path}");
    }
    // An IP literal names no profile: the default route, under the target.
    let target = local.addr().to_string();
    assert_eq!(inbound_get(&app, &target, "/books/3").status, 200);

    let inbound = |family: &str, labels: &[(&str, &str)]| {
        let mut all = vec![("direction", "inbound")];
        all.extend_from_slice(labels);
        metric(&app, family, &all)
    };
    assert_eq!(inbound("request_total", &[("authority", BOOKS)]), 3.0);
    assert_eq!(
        inbound(
            "response_total",
            &[
                ("authority", BOOKS),
                ("status_code", "200"),
                ("classification", "success")
            ]
        ),
        3.0
    );
    assert_eq!(
        inbound(
            "route_request_total",
            &[("dst", BOOKS), ("rt_route", "get-book")]
        ),
        2.0,
        "{}",
        metrics(&app)
    );
    assert_eq!(
        inbound(
            "route_response_total",
            &[
                ("dst", BOOKS),
                ("rt_route", "get-book"),
                ("status_code", "200"),
                ("classification", "success")
            ]
        ),
        2.0
    );
    let text = metrics(&app);
    assert!(
        has_series(
            &text,
            "route_request_total",
            &[("direction", "inbound"), ("dst", BOOKS)]
        ),
        "the default route of the profiled name: {text}"
    );
    assert_eq!(inbound("request_total", &[("authority", &target)]), 1.0);
    assert!(has_series(
        &text,
        "route_request_total",
        &[("direction", "inbound"), ("dst", &target)]
    ));
    // Accepted and upstream connections both count inbound; one pooled
    // upstream connection served all four requests (the pool is by address).
    assert_eq!(inbound("tcp_open_total", &[("peer", "src")]), 2.0);
    assert_eq!(inbound("tcp_open_total", &[("peer", "dst")]), 1.0);
    // Identity is off here: Linkerd's tls="disabled" on what was accepted,
    // loopback on the connection to the application.
    assert_eq!(
        inbound("tcp_open_total", &[("peer", "src"), ("tls", "disabled")]),
        2.0
    );
    assert_eq!(
        inbound(
            "tcp_open_total",
            &[
                ("peer", "dst"),
                ("tls", "no_identity"),
                ("no_tls_reason", "loopback")
            ]
        ),
        1.0
    );
    assert_eq!(
        inbound("request_total", &[("tls", "disabled")]),
        inbound("request_total", &[])
    );
    for family in ["request_total", "tcp_open_total"] {
        let outbound = metric(&app, family, &[("direction", "outbound")]);
        assert_eq!(outbound, 0.0, "{family} counted outbound");
    }
}

#[test]
fn inbound_requests_keep_route_timeouts_but_are_neither_retried_nor_split() {
    let ctl = MockController::start();
    let local = backend_with(
        "local",
        Arc::new(|req| match req.path.as_str() {
            "/fail" => Response::new(500, "boom"),
            "/slow" => Response::new(200, "late").with_delay(Duration::from_secs(2)),
            _ => Response::new(200, "local\n"),
        }),
    );
    let decoy = backend("decoy");
    ctl.endpoints(DECOY, &[decoy.addr()]);
    let mut retry = route("fail", None, "/fail");
    retry.is_retryable = true;
    let mut slow = route("slow", None, "/slow");
    slow.timeout = Some(pb_duration(Duration::from_millis(100))).into();
    let mut p = profile(vec![retry, slow]);
    let mut budget = pb::RetryBudget::new();
    budget.retry_ratio = 1.0;
    budget.min_retries_per_second = 100;
    budget.ttl = Some(pb_duration(Duration::from_secs(10))).into();
    p.retry_budget = Some(budget).into();
    // The whole split goes to the decoy.
    let mut w = pb::WeightedDst::new();
    w.authority = DECOY.into();
    w.weight = 10_000;
    p.dst_overrides.push(w);
    ctl.profile(BOOKS, &p);
    let app = inbound_proxy(&config(ctl.addr()), &Injected::to(local.addr()));

    for _ in 0..5 {
        assert_eq!(inbound_get(&app, BOOKS, "/").text(), "local\n");
    }
    assert_eq!(decoy.hits(), 0, "an inbound request followed a split");

    assert_eq!(inbound_get(&app, BOOKS, "/fail").status, 500);
    let fails = local
        .received()
        .iter()
        .filter(|r| r.path == "/fail")
        .count();
    assert_eq!(fails, 1, "an inbound request was retried");
    let labels = [("direction", "inbound"), ("rt_route", "fail")];
    assert_eq!(metric(&app, "route_actual_request_total", &labels), 1.0);
    assert_eq!(metric(&app, "route_retryable_total", &labels), 0.0);

    let started = Instant::now();
    let r = inbound_get(&app, BOOKS, "/slow");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(took < Duration::from_millis(1500), "{took:?}");
    let timed_out = [
        ("direction", "inbound"),
        ("rt_route", "slow"),
        ("status_code", "504"),
        ("error", "timeout"),
    ];
    assert_eq!(metric(&app, "route_response_total", &timed_out), 1.0);
    assert!(
        !ctl.requests().iter().any(|(k, _)| *k == Kind::Endpoints),
        "the split's backend was looked up: {:?}",
        ctl.requests()
    );
}

#[test]
fn inbound_connections_without_a_target_are_refused_and_counted() {
    let ctl = MockController::start();
    let local = backend("local");
    let listed = "127.0.0.2,127.0.0.1";
    let env = config(ctl.addr()).set(spoke::config::INBOUND_IPS, listed);
    let orig = Injected::default();
    let app = inbound_proxy(&env, &orig);

    // Not redirected: nowhere to go.
    assert_eq!(raw_inbound(&app), b"", "served a connection with no target");
    assert_eq!(refused(&app, "no_orig_dst"), 1.0);
    // Redirected to an IP that is not the pod's.
    orig.set(Some(SocketAddr::from((
        [127, 0, 0, 3],
        local.addr().port(),
    ))));
    assert_eq!(raw_inbound(&app), b"");
    assert_eq!(refused(&app, "not_inbound_ip"), 1.0);
    // Redirected to spoke's other listeners: a loop.
    for own in [app.outbound_addr(), app.admin_addr()] {
        orig.set(Some(own));
        assert_eq!(raw_inbound(&app), b"", "answered a loop to {own}");
    }
    assert_eq!(refused(&app, "loop"), 2.0);
    assert_eq!(local.hits(), 0);
    let opened = metric(&app, "tcp_open_total", &[("direction", "inbound")]);
    assert_eq!(opened, 0.0, "a refused connection is no session");
    // To the inbound port itself: a direct connection (Linkerd's opaque
    // transport), which must be mTLS with the transport header.
    orig.set(Some(app.inbound_addr()));
    assert_eq!(raw_inbound(&app), b"");
    assert_eq!(refused(&app, "transport_header_required"), 1.0);

    // A listed IP is served.
    orig.set(Some(local.addr()));
    assert_eq!(inbound_get(&app, PLAIN, "/").text(), "local\n");
    assert_eq!(local.hits(), 1);
    let total = metric(&app, "spoke_connections_refused_total", &[]);
    assert_eq!(total, 5.0);
}

#[test]
fn an_application_that_refuses_or_never_answers_gets_502_or_504() {
    let ctl = MockController::start();
    let env = config(ctl.addr())
        .set(spoke::config::INBOUND_CONNECT_TIMEOUT, "100ms")
        .set(spoke::config::OUTBOUND_CONNECT_TIMEOUT, "5s")
        .set(spoke::config::FAILFAST_TIMEOUT, "1s");
    let orig = Injected::to(dead_port());
    let app = inbound_proxy(&env, &orig);

    let r = inbound_get(&app, PLAIN, "/");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("l5d-proxy-error"), Some("connection refused"));

    let (stuck, _fillers) = never_accepting();
    orig.set(stuck.local_addr().expect("addr").as_socket());
    let started = Instant::now();
    let r = inbound_get(&app, PLAIN, "/");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("l5d-proxy-error"), Some("connect timeout"));
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Each connect gave up after the inbound timeout, well inside the
    // fail-fast window, so the request tried again (with the outbound
    // timeout, the one connect would have lasted the whole window).
    let retried = metric(
        &app,
        "spoke_connect_retries_total",
        &[("direction", "inbound"), ("reason", "connect_timeout")],
    );
    assert!(retried >= 1.0, "{}", metrics(&app));
    assert_eq!(
        metric(
            &app,
            "response_total",
            &[
                ("direction", "inbound"),
                ("status_code", "504"),
                ("error", "timeout")
            ]
        ),
        1.0
    );
}

#[test]
fn l5d_client_id_never_reaches_the_application_inbound() {
    let ctl = MockController::start();
    let local = backend("local");
    let orig = Injected::to(local.addr());
    let app = inbound_proxy(&config(ctl.addr()), &orig);
    let claims = [
        (
            "l5d-client-id",
            "admin.default.serviceaccount.identity.linkerd.cluster.local",
        ),
        ("L5D-Client-ID", "root"),
        ("x-kept", "yes"),
    ];
    let mut c = Client::connect(app.inbound_addr(), Duration::from_secs(5)).expect("connect");
    let r = c.send("GET", PLAIN, "/", &claims, b"").expect("reply");
    assert_eq!(r.status, 200);
    // Outbound passes it on: only the inbound side strips it.
    let host = local.addr().to_string();
    let mut c = Client::connect(app.outbound_addr(), Duration::from_secs(5)).expect("connect");
    let r = c.send("GET", &host, "/", &claims, b"").expect("reply");
    assert_eq!(r.status, 200);

    let got = local.received();
    assert_eq!(got.len(), 2);
    let names = |i: usize| -> Vec<String> {
        got[i]
            .headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect()
    };
    let inbound = names(0);
    assert!(!inbound.iter().any(|n| n == "l5d-client-id"), "{inbound:?}");
    assert!(inbound.iter().any(|n| n == "x-kept"), "{inbound:?}");
    let outbound = names(1);
    assert_eq!(
        outbound.iter().filter(|n| *n == "l5d-client-id").count(),
        2,
        "{outbound:?}"
    );
}
