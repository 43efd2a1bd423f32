//! HTTP/2 and gRPC through the real proxy, with a real gRPC library on both
//! sides (grpcio): h2c with prior knowledge outbound and inbound, calls of
//! one client connection balanced per request over the endpoints, every
//! kind of call with its trailers and statuses, and the proxy's own errors
//! as gRPC statuses.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use grpcio::{CallOption, RpcStatusCode, WriteFlags};
use protobuf::well_known_types::duration::Duration as PbDuration;

use support::echo::{self, client_via, msg, EchoServer};
use support::*;

const BOOKS: &str = "books.default.svc.cluster.local:7000";

fn opt() -> CallOption {
    CallOption::default().timeout(Duration::from_secs(10))
}

fn served_by(reply: &str) -> &str {
    reply.split(':').next().unwrap_or("")
}

#[test]
fn unary_calls_on_one_connection_spread_over_every_endpoint() {
    let ctl = MockController::start();
    let servers: Vec<EchoServer> = ["a", "b", "c"]
        .iter()
        .map(|n| EchoServer::start(n))
        .collect();
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    ctl.endpoints(BOOKS, &addrs);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy(&config(ctl.addr()));
    let client = client_via(app.outbound_addr(), BOOKS);

    let mut by: HashMap<String, usize> = HashMap::new();
    for i in 0..90 {
        let reply = client
            .unary_call(&echo::UNARY, &msg(&format!("hi{i}")), opt())
            .expect("call through the proxy");
        assert!(reply.path.ends_with(&format!(":hi{i}")), "{}", reply.path);
        *by.entry(served_by(&reply.path).to_string()).or_default() += 1;
    }
    for name in ["a", "b", "c"] {
        assert!(
            by.get(name).copied().unwrap_or(0) > 0,
            "{name} got no call: {by:?}"
        );
    }
    let text = metrics(&app);
    let labels = [("direction", "outbound"), ("authority", BOOKS)];
    assert_eq!(metric(&app, "request_total", &labels), 90.0, "{text}");
    // One client connection carried them all.
    assert_eq!(
        metric(
            &app,
            "tcp_open_total",
            &[("direction", "outbound"), ("peer", "src")]
        ),
        1.0
    );
}

#[test]
fn streaming_calls_and_statuses_pass_through() {
    let ctl = MockController::start();
    let server = EchoServer::start("a");
    ctl.endpoints(BOOKS, &[server.addr]);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy(&config(ctl.addr()));
    let client = client_via(app.outbound_addr(), BOOKS);

    // Server streaming: every message, then the OK trailers.
    let mut many = client
        .server_streaming(&echo::MANY, &msg("50"), opt())
        .expect("starts");
    let got: Vec<String> = futures::executor::block_on(async {
        let mut v = Vec::new();
        while let Some(m) = many.next().await {
            v.push(m.expect("message").path);
        }
        v
    });
    assert_eq!(got.len(), 50);
    assert_eq!(got[49], "a:49");

    // Client streaming.
    let (mut tx, rx) = client.client_streaming(&echo::SUM, opt()).expect("starts");
    let sum = futures::executor::block_on(async {
        for p in ["x", "y", "z"] {
            tx.send((msg(p), WriteFlags::default()))
                .await
                .expect("send");
        }
        tx.close().await.expect("close");
        rx.await
    })
    .expect("reply");
    assert_eq!(sum.path, "a:x+y+z");

    // Bidirectional: each message answered before the next is sent.
    let (mut tx, mut rx) = client.duplex_streaming(&echo::CHAT, opt()).expect("starts");
    futures::executor::block_on(async {
        for i in 0..20 {
            tx.send((msg(&i.to_string()), WriteFlags::default()))
                .await
                .expect("send");
            let m = rx.next().await.expect("a reply").expect("ok");
            assert_eq!(m.path, format!("a:{i}"));
        }
        tx.close().await.expect("close");
        assert!(rx.next().await.is_none());
    });

    // A non-zero status (a trailers-only response) reaches the client as it was.
    let err = client
        .unary_call(&echo::UNARY, &msg("fail:5"), opt())
        .expect_err("NOT_FOUND");
    match err {
        grpcio::Error::RpcFailure(s) => {
            assert_eq!(s.code(), RpcStatusCode::NOT_FOUND);
            assert_eq!(s.message(), "a says no");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Classified by grpc-status, with Linkerd's failure codes (2, 4, 7, 13,
    // 14, 15): NOT_FOUND is a success, INTERNAL a failure, though the HTTP
    // status of both was 200.
    let err = client
        .unary_call(&echo::UNARY, &msg("fail:13"), opt())
        .expect_err("INTERNAL");
    assert!(matches!(err, grpcio::Error::RpcFailure(s) if s.code() == RpcStatusCode::INTERNAL));
    let failed = [
        ("direction", "outbound"),
        ("authority", BOOKS),
        ("classification", "failure"),
    ];
    eventually("the failed call is counted", || {
        metric(&app, "response_total", &failed) == 1.0
    });
}

fn pb_duration(d: Duration) -> PbDuration {
    let mut p = PbDuration::new();
    p.seconds = d.as_secs() as i64;
    p.nanos = d.subsec_nanos() as i32;
    p
}

#[test]
fn proxy_errors_are_grpc_statuses_never_internal() {
    let ctl = MockController::start();
    let server = EchoServer::start("a");
    ctl.endpoints(BOOKS, &[server.addr]);
    let mut slow = route("unary", None, "/test.Echo/Unary");
    slow.timeout = Some(pb_duration(Duration::from_millis(200))).into();
    ctl.profile(BOOKS, &profile(vec![slow]));
    let app = proxy(&config(ctl.addr()));
    let client = client_via(app.outbound_addr(), BOOKS);

    assert_eq!(
        client
            .unary_call(&echo::UNARY, &msg("quick"), opt())
            .expect("ok")
            .path,
        "a:quick"
    );
    // The route timeout: DEADLINE_EXCEEDED from the proxy.
    let err = client
        .unary_call(&echo::UNARY, &msg("slow:2000"), opt())
        .expect_err("timeout");
    match err {
        grpcio::Error::RpcFailure(s) => {
            assert_eq!(s.code(), RpcStatusCode::DEADLINE_EXCEEDED, "{s:?}");
            assert_eq!(s.message(), "response timeout");
        }
        other => panic!("unexpected {other:?}"),
    }

    // No endpoints: UNAVAILABLE, not INTERNAL.
    const EMPTY: &str = "empty.default.svc.cluster.local:7000";
    ctl.no_endpoints(EMPTY, true);
    ctl.profile(EMPTY, &profile(vec![]));
    let empty = client_via(app.outbound_addr(), EMPTY);
    let err = empty
        .unary_call(&echo::UNARY, &msg("x"), opt())
        .expect_err("unavailable");
    match err {
        grpcio::Error::RpcFailure(s) => assert_eq!(s.code(), RpcStatusCode::UNAVAILABLE, "{s:?}"),
        other => panic!("unexpected {other:?}"),
    }
    // The endpoint's connection refused: UNAVAILABLE too.
    const DEAD: &str = "dead.default.svc.cluster.local:7000";
    ctl.endpoints(DEAD, &[dead_port()]);
    ctl.profile(DEAD, &profile(vec![]));
    let dead = client_via(app.outbound_addr(), DEAD);
    let err = dead
        .unary_call(&echo::UNARY, &msg("x"), opt())
        .expect_err("unavailable");
    match err {
        grpcio::Error::RpcFailure(s) => assert_eq!(s.code(), RpcStatusCode::UNAVAILABLE, "{s:?}"),
        other => panic!("unexpected {other:?}"),
    }
    let timeouts = [
        ("direction", "outbound"),
        ("authority", BOOKS),
        ("error", "timeout"),
    ];
    assert_eq!(metric(&app, "response_total", &timeouts), 1.0);
}

#[test]
fn inbound_h2c_goes_to_the_original_destination() {
    let ctl = MockController::start();
    let local = EchoServer::start("local");
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy_with_orig_dst(&config(ctl.addr()), Box::new(Injected::to(local.addr)));
    let client = client_via(app.inbound_addr(), BOOKS);
    for i in 0..10 {
        let reply = client
            .unary_call(&echo::UNARY, &msg(&i.to_string()), opt())
            .expect("inbound call");
        assert_eq!(reply.path, format!("local:{i}"));
    }
    assert_eq!(local.calls(), 10);
    assert_eq!(
        metric(&app, "request_total", &[("direction", "inbound")]),
        10.0
    );
}

#[test]
fn failed_grpc_calls_on_a_retryable_route_go_to_another_endpoint() {
    let ctl = MockController::start();
    let good = EchoServer::start("good");
    let bad = EchoServer::failing("bad");
    ctl.endpoints(BOOKS, &[good.addr, bad.addr]);
    let mut unary = route("unary", None, "/test.Echo/Unary");
    unary.is_retryable = true;
    let mut p = profile(vec![unary]);
    let mut budget = pb::RetryBudget::new();
    budget.retry_ratio = 1.0;
    budget.min_retries_per_second = 1000;
    budget.ttl = Some(pb_duration(Duration::from_secs(10))).into();
    p.retry_budget = Some(budget).into();
    ctl.profile(BOOKS, &p);
    let app = proxy(&config(ctl.addr()));
    let client = client_via(app.outbound_addr(), BOOKS);

    for i in 0..30 {
        let reply = client
            .unary_call(&echo::UNARY, &msg(&i.to_string()), opt())
            .expect("retried to the good endpoint");
        assert_eq!(reply.path, format!("good:{i}"));
    }
    assert!(bad.calls() > 0, "the failing endpoint was never tried");
    let rt = [
        ("direction", "outbound"),
        ("dst", BOOKS),
        ("rt_route", "unary"),
    ];
    assert_eq!(metric(&app, "route_request_total", &rt), 30.0);
    let actual = metric(&app, "route_actual_request_total", &rt);
    assert_eq!(
        actual,
        30.0 + bad.calls() as f64,
        "one attempt more per failure"
    );
}

#[test]
fn an_upstream_going_away_mid_load_fails_no_call() {
    let ctl = MockController::start();
    let mut a = EchoServer::start("a");
    let b = EchoServer::start("b");
    ctl.endpoints(BOOKS, &[a.addr, b.addr]);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy(&config(ctl.addr()));
    let client = client_via(app.outbound_addr(), BOOKS);
    client
        .unary_call(&echo::UNARY, &msg("warm"), opt())
        .expect("warm-up call");

    let workers: Vec<_> = (0..4)
        .map(|w| {
            let client = client.clone();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for i in 0..60 {
                    let m = msg(&format!("slow:5-{w}-{i}"));
                    match client.unary_call(&echo::UNARY, &m, opt()) {
                        Ok(_) => {}
                        // grpc core's own shutdown cancels a call that
                        // reached it but no handler yet (trailers-only
                        // CANCELLED from the server, passed on as it was).
                        Err(grpcio::Error::RpcFailure(s))
                            if s.code() == RpcStatusCode::CANCELLED => {}
                        Err(e) => failures.push(format!("{e:?}")),
                    }
                }
                failures
            })
        })
        .collect();
    eventually("a has served some calls", || a.calls() > 20);
    // GOAWAY to spoke's connection while calls are in flight on it; the
    // endpoint then refuses connections, still in the endpoint set.
    a.shutdown();
    let failures: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    // Nothing turned into INTERNAL, UNKNOWN or UNAVAILABLE on the way:
    // calls in flight completed, refused ones went to b.
    assert!(failures.is_empty(), "calls failed: {failures:?}");
    assert!(b.calls() > 0);
}
