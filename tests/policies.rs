//! Route policies through the real proxy: timeouts, retries and their
//! budget, request replay limits, traffic split and load balancing.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protobuf::well_known_types::duration::Duration as PbDuration;
use spoke::devtools::{Client, Response};
use support::*;

const BOOKS: &str = "books.default.svc.cluster.local:7000";

fn pb_duration(d: Duration) -> PbDuration {
    let mut p = PbDuration::new();
    p.seconds = d.as_secs() as i64;
    p.nanos = d.subsec_nanos() as i32;
    p
}

fn budget(ratio: f32, min_per_sec: u32) -> pb::RetryBudget {
    let mut b = pb::RetryBudget::new();
    b.retry_ratio = ratio;
    b.min_retries_per_second = min_per_sec;
    b.ttl = Some(pb_duration(Duration::from_secs(10))).into();
    b
}

fn retryable(name: &str, regex: &str) -> pb::Route {
    let mut r = route(name, None, regex);
    r.is_retryable = true;
    r
}

/// A backend that fails every other request it receives with 500.
fn flaky(name: &str) -> (spoke::devtools::Backend, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let m = n.clone();
    let be = backend_with(
        name,
        Arc::new(move |req| {
            if m.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                Response::new(500, "boom")
            } else {
                Response::new(200, req.body.clone())
            }
        }),
    );
    (be, n)
}

#[test]
fn a_route_timeout_answers_504_without_waiting_for_the_backend() {
    let ctl = MockController::start();
    let be = backend_with(
        "slow",
        Arc::new(|_| Response::new(200, "late").with_delay(Duration::from_secs(2))),
    );
    ctl.endpoints(BOOKS, &[be.addr()]);
    let mut r = route("slow", None, "/.*");
    r.timeout = Some(pb_duration(Duration::from_millis(100))).into();
    ctl.profile(BOOKS, &profile(vec![r]));
    let app = proxy(&config(ctl.addr()));
    assert_eq!(get(&app, BOOKS, "/warm-up-discovery").status, 504);

    let started = Instant::now();
    let reply = get(&app, BOOKS, "/");
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(reply.header("l5d-proxy-error").is_some());
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "the backend's delay was not awaited: {took:?}"
    );
    assert_eq!(
        metric(
            &app,
            "route_response_total",
            &[
                ("rt_route", "slow"),
                ("status_code", "504"),
                ("error", "timeout")
            ]
        ),
        2.0
    );
}

#[test]
fn failed_responses_are_retried_within_the_budget() {
    let ctl = MockController::start();
    let (be, _) = flaky("flaky");
    ctl.endpoints(BOOKS, &[be.addr()]);
    let mut p = profile(vec![retryable("flaky", "/.*")]);
    p.retry_budget = Some(budget(0.2, 100)).into();
    ctl.profile(BOOKS, &p);
    let app = proxy(&config(ctl.addr()));

    let mut c = Client::connect(app.outbound_addr(), Duration::from_secs(5)).unwrap();
    let mut ok = 0;
    for _ in 0..100 {
        if c.get(BOOKS, "/x").unwrap().status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 100, "every failure was retried");
    let labels = [("rt_route", "flaky")];
    let requests = metric(&app, "route_request_total", &labels);
    let actual = metric(&app, "route_actual_request_total", &labels);
    let retried = metric(&app, "route_retryable_total", &labels)
        - metric(
            &app,
            "route_retryable_total",
            &[("rt_route", "flaky"), ("skipped", "no_budget")],
        );
    assert_eq!(requests, 100.0);
    assert_eq!(
        actual,
        requests + retried,
        "each retry is one more actual request"
    );
    assert_eq!(retried, 100.0);
    assert_eq!(be.hits(), 200);
    assert_eq!(
        metric(
            &app,
            "route_actual_response_total",
            &[("rt_route", "flaky"), ("status_code", "500")]
        ),
        100.0
    );
}

#[test]
fn an_empty_budget_stops_retries() {
    let ctl = MockController::start();
    let (be, _) = flaky("flaky");
    ctl.endpoints(BOOKS, &[be.addr()]);
    let mut p = profile(vec![retryable("flaky", "/.*")]);
    p.retry_budget = Some(budget(0.0, 0)).into();
    ctl.profile(BOOKS, &p);
    let app = proxy(&config(ctl.addr()));

    let mut c = Client::connect(app.outbound_addr(), Duration::from_secs(5)).unwrap();
    let failures = (0..20)
        .filter(|_| c.get(BOOKS, "/x").unwrap().status == 500)
        .count();
    assert_eq!(failures, 10);
    assert_eq!(be.hits(), 20, "nothing was retried");
    assert_eq!(
        metric(
            &app,
            "route_retryable_total",
            &[("rt_route", "flaky"), ("skipped", "no_budget")]
        ),
        10.0
    );
}

#[test]
fn small_bodies_are_replayed_intact_and_large_ones_are_not_retried() {
    let ctl = MockController::start();
    let (be, _) = flaky("flaky");
    ctl.endpoints(BOOKS, &[be.addr()]);
    let mut p = profile(vec![retryable("post", "/.*")]);
    p.retry_budget = Some(budget(0.2, 100)).into();
    ctl.profile(BOOKS, &p);
    let app = proxy(&config(ctl.addr()));
    let mut c = Client::connect(app.outbound_addr(), Duration::from_secs(5)).unwrap();

    let small: Vec<u8> = (0..10 * 1024).map(|i| (i % 251) as u8).collect();
    let r = c.send("POST", BOOKS, "/small", &[], &small).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, small, "the retried request carried the same body");
    let got = be.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].raw, got[1].raw,
        "the replay is byte for byte the original"
    );

    let large = vec![7u8; 1024 * 1024];
    let r = c.send("POST", BOOKS, "/large", &[], &large).unwrap();
    assert_eq!(
        r.status, 500,
        "a body over 64 KiB is not kept, so not retried"
    );
    assert_eq!(be.hits(), 3);
}

#[test]
fn traffic_is_split_by_weight() {
    let ctl = MockController::start();
    let a = backend("a");
    let b = backend("b");
    let (aa, ba) = (
        "a.default.svc.cluster.local:80",
        "b.default.svc.cluster.local:80",
    );
    ctl.endpoints(aa, &[a.addr()]);
    ctl.endpoints(ba, &[b.addr()]);
    ctl.endpoints(BOOKS, &[]);
    let mut p = profile(vec![]);
    for (authority, weight) in [(aa, 8000), (ba, 2000)] {
        let mut w = pb::WeightedDst::new();
        w.authority = authority.into();
        w.weight = weight;
        p.dst_overrides.push(w);
    }
    ctl.profile(BOOKS, &p);
    let app = proxy(&config(ctl.addr()));
    let mut c = Client::connect(app.outbound_addr(), Duration::from_secs(5)).unwrap();
    for _ in 0..2000 {
        assert_eq!(c.get(BOOKS, "/").unwrap().status, 200);
    }
    let share = a.hits() as f64 / 2000.0;
    assert!(
        (0.76..=0.84).contains(&share),
        "a got {:.1}%",
        share * 100.0
    );
    assert_eq!(a.hits() + b.hits(), 2000);
}

#[test]
fn p2c_sends_a_slow_endpoint_less_traffic() {
    let ctl = MockController::start();
    let fast = backend("fast");
    let slow = backend_with(
        "slow",
        Arc::new(|_| Response::new(200, "slow").with_delay(Duration::from_millis(20))),
    );
    ctl.endpoints(BOOKS, &[fast.addr(), slow.addr()]);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy(&config(ctl.addr()));
    let mut c = Client::connect(app.outbound_addr(), Duration::from_secs(5)).unwrap();
    for _ in 0..300 {
        assert_eq!(c.get(BOOKS, "/").unwrap().status, 200);
    }
    let share = slow.hits() as f64 / 300.0;
    assert!(share < 0.35, "the slow endpoint got {:.1}%", share * 100.0);
}

#[test]
fn a_refused_endpoint_stops_receiving_requests() {
    let ctl = MockController::start();
    let live = backend("live");
    let dead = dead_port();
    ctl.endpoints(BOOKS, &[live.addr(), dead]);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy(&config(ctl.addr()));
    // A refused connect moves the request to the live endpoint: none is lost.
    let statuses: Vec<u16> = (0..50).map(|_| get(&app, BOOKS, "/").status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(live.hits(), 50);
}

#[test]
fn response_classes_decide_success_and_failure() {
    let ctl = MockController::start();
    let be = backend_with(
        "status",
        Arc::new(|req| {
            let code = req.path.trim_start_matches('/').parse().unwrap_or(200);
            Response::new(code, "")
        }),
    );
    ctl.endpoints(BOOKS, &[be.addr()]);
    // 404 is a failure on this route; 503 is declared a success; anything
    // else falls back to "5xx fails".
    let mut r = route("classified", None, "/.*");
    for (min, max, failure) in [(404, 404, true), (503, 503, false)] {
        let mut status = pb::HttpStatusRange::new();
        status.min = min;
        status.max = max;
        let mut m = pb::ResponseMatch::new();
        m.set_status(status);
        let mut class = pb::ResponseClass::new();
        class.condition = Some(m).into();
        class.is_failure = failure;
        r.response_classes.push(class);
    }
    ctl.profile(BOOKS, &profile(vec![r]));
    let app = proxy(&config(ctl.addr()));
    for code in [200, 404, 503, 500] {
        assert_eq!(get(&app, BOOKS, &format!("/{code}")).status, code);
    }
    let class = |code: &str| {
        let text = metrics(&app);
        ["success", "failure"]
            .into_iter()
            .find(|c| {
                has_series(
                    &text,
                    "route_response_total",
                    &[
                        ("direction", "outbound"),
                        ("dst", BOOKS),
                        ("rt_route", "classified"),
                        ("status_code", code),
                        ("classification", c),
                    ],
                )
            })
            .unwrap_or("missing")
    };
    assert_eq!(class("200"), "success");
    assert_eq!(class("404"), "failure");
    assert_eq!(class("503"), "success");
    assert_eq!(class("500"), "failure");
    assert_eq!(
        metric(
            &app,
            "response_total",
            &[("status_code", "404"), ("classification", "failure")]
        ),
        1.0
    );
}
