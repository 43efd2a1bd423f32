//! Routing and the data plane, through the real proxy: route-labelled
//! metrics, atomic router swaps, and the proxy's own error responses.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use spoke::devtools::{Client, Response};
use support::*;

const BOOKS: &str = "books.default.svc.cluster.local:7000";

#[test]
fn requests_are_routed_and_counted_per_route() {
    let ctl = MockController::start();
    let be = backend("books");
    ctl.endpoints(BOOKS, &[be.addr()]);
    ctl.profile(
        BOOKS,
        &profile(vec![
            route("GET /books/{id}", Some("GET"), "/books/[^/]+"),
            route("GET /books", Some("GET"), "/books"),
        ]),
    );
    let app = proxy(&config(ctl.addr()));

    for path in ["/books", "/books/1", "/books/2?x=1", "/other"] {
        let r = get(&app, BOOKS, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.text(), "books\n");
    }
    let text = metrics(&app);
    let base = [("direction", "outbound"), ("dst", BOOKS)];
    let with = |route: &'static str| {
        let mut v = base.to_vec();
        v.push(("rt_route", route));
        v
    };
    assert!(
        has_series(&text, "route_request_total", &with("GET /books")),
        "{text}"
    );
    assert_eq!(
        metric(&app, "route_request_total", &with("GET /books/{id}")),
        2.0
    );
    assert_eq!(
        metric(&app, "route_request_total", &with("GET /books")),
        1.0
    );
    // The unmatched request takes the default route, which has no rt_* labels.
    assert!(has_series(&text, "route_request_total", &base), "{text}");
    let mut ok = with("GET /books/{id}");
    ok.extend([("status_code", "200"), ("classification", "success")]);
    assert!(has_series(&text, "route_response_total", &ok), "{text}");
    assert_eq!(
        metric(&app, "request_total", &[("authority", BOOKS)]),
        4.0,
        "{text}"
    );
    assert!(
        metric(&app, "route_response_latency_ms_count", &with("GET /books")) >= 1.0,
        "{text}"
    );
    assert_eq!(be.hits(), 4);
}

#[test]
fn a_profile_update_applies_to_the_next_request_while_in_flight_keeps_its_route() {
    let ctl = MockController::start();
    let release = Arc::new(AtomicUsize::new(0));
    let r2 = release.clone();
    let be = backend_with(
        "slow",
        Arc::new(move |req| {
            if req.path == "/slow" {
                // Hold the in-flight request until the test has swapped the
                // profile (bounded).
                for _ in 0..500 {
                    if r2.load(Ordering::SeqCst) > 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Response::new(200, "ok")
        }),
    );
    ctl.endpoints(BOOKS, &[be.addr()]);
    ctl.profile(BOOKS, &profile(vec![route("v1", None, "/.*")]));
    let app = proxy(&config(ctl.addr()));
    assert_eq!(get(&app, BOOKS, "/warm").status, 200);

    let out = app.outbound_addr();
    let in_flight = std::thread::spawn(move || {
        let mut c = Client::connect(out, Duration::from_secs(10)).unwrap();
        c.get(BOOKS, "/slow").unwrap().status
    });
    eventually("the slow request reaches the backend", || {
        be.received().iter().any(|r| r.path == "/slow")
    });

    ctl.profile(BOOKS, &profile(vec![route("v2", None, "/.*")]));
    eventually("new requests take the v2 route", || {
        assert_eq!(get(&app, BOOKS, "/fast").status, 200);
        metric(&app, "route_request_total", &[("rt_route", "v2")]) >= 1.0
    });
    release.store(1, Ordering::SeqCst);
    assert_eq!(in_flight.join().unwrap(), 200);

    // The in-flight request was answered after the swap, on the route it
    // started with: its response is counted under v1.
    eventually("the slow response is recorded", || {
        metric(&app, "route_response_total", &[("rt_route", "v1")])
            == metric(&app, "route_request_total", &[("rt_route", "v1")])
    });
    let v1 = metric(&app, "route_request_total", &[("rt_route", "v1")]);
    assert!(v1 >= 2.0, "warm-up and the slow request are on v1 ({v1})");
    assert_eq!(
        metric(
            &app,
            "route_response_total",
            &[("rt_route", "v2"), ("status_code", "200")]
        ),
        metric(&app, "route_request_total", &[("rt_route", "v2")])
    );
}

/// A route whose condition does not convert is dropped whole, so it serves
/// nothing and the next route applies. (Dropping only the bad regex, as
/// linkerd2-proxy does, would leave `all: []`, which matches every request.)
#[test]
fn a_route_with_a_bad_regex_is_dropped_whole_and_the_next_one_serves() {
    let ctl = MockController::start();
    let be = backend("books");
    ctl.endpoints(BOOKS, &[be.addr()]);
    let mut broken = route("broken", None, "([");
    let bad_regex = broken.condition.take().unwrap();
    let mut seq = pb::request_match::Seq::new();
    seq.matches = vec![bad_regex];
    broken.condition.mut_or_insert_default().set_all(seq);
    // Were the broken route applied, its class would call every 200 a failure.
    let mut class = pb::ResponseClass::new();
    let mut status = pb::HttpStatusRange::new();
    (status.min, status.max) = (200, 299);
    class.condition.mut_or_insert_default().set_status(status);
    class.is_failure = true;
    broken.response_classes.push(class);
    ctl.profile(
        BOOKS,
        &profile(vec![
            broken,
            route("GET /books/{id}", Some("GET"), "/books/[^/]+"),
        ]),
    );
    let app = proxy(&config(ctl.addr()));

    for path in ["/books/1", "/books/2", "/other"] {
        let r = get(&app, BOOKS, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let text = metrics(&app);
    let books = [("dst", BOOKS), ("rt_route", "GET /books/{id}")];
    assert_eq!(metric(&app, "route_request_total", &books), 2.0, "{text}");
    let mut success = books.to_vec();
    success.push(("classification", "success"));
    assert_eq!(
        metric(&app, "route_response_total", &success),
        2.0,
        "{text}"
    );
    assert!(!text.contains("rt_route=\"broken\""), "{text}");
    // `/other` matches neither route and takes the default one.
    let default = [("direction", "outbound"), ("dst", BOOKS)];
    assert!(has_series(&text, "route_request_total", &default), "{text}");
    assert_eq!(be.hits(), 3);
}

/// A controller, a backend that echoes request bodies, and the proxy routing
/// `BOOKS` to it with an empty profile.
fn echo_mesh() -> (MockController, spoke::devtools::Backend, spoke::app::App) {
    let ctl = MockController::start();
    let be = backend_with("echo", Arc::new(|req| Response::new(200, req.body.clone())));
    ctl.endpoints(BOOKS, &[be.addr()]);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy(&config(ctl.addr()));
    (ctl, be, app)
}

/// Bodies far larger than every buffer on the way, several connections at once:
/// each side of the proxy keeps finding its socket full (or empty) and must
/// carry on from the next readiness event. Any lost wake-up stalls a transfer
/// (and times the client out); any misplaced byte shows in the echo.
#[test]
fn large_bodies_cross_intact_both_ways_on_parallel_connections() {
    let (_ctl, be, app) = echo_mesh();
    let addr = app.outbound_addr();
    let clients: Vec<_> = (0..4u8)
        .map(|k| {
            std::thread::spawn(move || {
                let body: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8 ^ k).collect();
                let mut c = Client::connect(addr, patience()).expect("connect");
                for round in 0..2 {
                    let r = c.send("POST", BOOKS, "/echo", &[], &body).expect("echo");
                    assert_eq!(r.status, 200, "client {k}, round {round}");
                    assert!(r.body == body, "client {k}, round {round}: body differs");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    assert_eq!(be.hits(), 8);
}

#[test]
fn malformed_request_gets_400_and_never_reaches_the_backend() {
    let ctl = MockController::start();
    let be = backend("books");
    ctl.endpoints(BOOKS, &[be.addr()]);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy(&config(ctl.addr()));

    let mut c = Client::connect(app.outbound_addr(), Duration::from_secs(5)).unwrap();
    let r = c
        .send_raw(
            format!("POST / HTTP/1.1\r\nhost: {BOOKS}\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n").as_bytes(),
            false,
        )
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.header("l5d-proxy-error").is_some(), "{:?}", r.headers);
    assert!(c.is_closed(), "the connection closes after a framing error");

    let mut c = Client::connect(app.outbound_addr(), Duration::from_secs(5)).unwrap();
    let r = c.send_raw(b"GET / HTTP/1.1\r\n\r\n", false).unwrap();
    assert_eq!(r.status, 400, "no Host");
    assert_eq!(be.hits(), 0);

    // The proxy keeps serving.
    assert_eq!(get(&app, BOOKS, "/").status, 200);
}

#[test]
fn refused_upstream_gets_502_and_empty_endpoint_set_gets_503() {
    let ctl = MockController::start();
    let dead = dead_port();
    ctl.endpoints(BOOKS, &[dead]);
    ctl.profile(BOOKS, &profile(vec![]));
    let empty = "empty.default.svc.cluster.local:80";
    ctl.endpoints(empty, &[]);
    ctl.profile(empty, &profile(vec![]));
    // A refused request waits for the endpoint's backoff until the fail-fast
    // window ends: keep it short.
    let app = proxy(&config(ctl.addr()).set(spoke::config::FAILFAST_TIMEOUT, "300ms"));

    let r = get(&app, BOOKS, "/");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("l5d-proxy-error"), Some("connection refused"));

    let r = get(&app, "empty.default.svc.cluster.local", "/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("l5d-proxy-error"), Some("no endpoints"));

    let text = metrics(&app);
    assert!(
        has_series(
            &text,
            "response_total",
            &[
                ("direction", "outbound"),
                ("authority", BOOKS),
                ("tls", "disabled"),
                ("status_code", "502"),
                ("classification", "failure"),
                ("error", "connect"),
            ]
        ),
        "{text}"
    );
    // Answered before any endpoint was tried: spoke's `no_endpoint`.
    let never_sent = [
        ("direction", "outbound"),
        ("authority", empty),
        ("tls", "no_identity"),
        ("no_tls_reason", "no_endpoint"),
    ];
    assert!(has_series(&text, "request_total", &never_sent), "{text}");
    let answered: Vec<_> = never_sent
        .into_iter()
        .chain([
            ("status_code", "503"),
            ("classification", "failure"),
            ("error", "no_endpoints"),
        ])
        .collect();
    assert!(has_series(&text, "response_total", &answered), "{text}");
}

#[test]
fn keep_alive_reuses_upstream_connections_and_streams_bodies() {
    let (_ctl, be, app) = echo_mesh();

    let mut c = Client::connect(app.outbound_addr(), Duration::from_secs(5)).unwrap();
    let big = vec![b'x'; 300_000];
    for i in 0..20 {
        let body = if i % 2 == 0 { &big[..] } else { b"small" };
        let r = c.send("POST", BOOKS, "/echo", &[], body).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), body.len());
    }
    // Chunked request body, already in canonical framing: passed through as it is.
    let r = c
        .send_raw(
            format!("POST /c HTTP/1.1\r\nhost: {BOOKS}\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").as_bytes(),
            false,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "5\r\nhello\r\n0\r\n\r\n");
    assert_eq!(be.hits(), 21);
    let opened = metric(&app, "tcp_open_total", &[("peer", "dst")]);
    assert_eq!(opened, 1.0, "one upstream connection carried every request");
}
