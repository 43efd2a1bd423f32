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
use support::frames::{frame, hpack};
use support::*;

const BOOKS: &str = "books.default.svc.cluster.local:7000";

fn opt() -> CallOption {
    CallOption::default().timeout(Duration::from_secs(10))
}

/// A client-streaming call sending `parts`, and its reply.
fn sum_of(
    client: &grpcio::Client,
    parts: &[impl AsRef<str>],
) -> spoke::proto::destination::GetDestination {
    let (mut tx, rx) = client.client_streaming(&echo::SUM, opt()).expect("starts");
    futures::executor::block_on(async {
        for p in parts {
            tx.send((msg(p.as_ref()), WriteFlags::default()))
                .await
                .expect("send");
        }
        tx.close().await.expect("close");
        rx.await
    })
    .expect("reply")
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
    let server = EchoServer::start("a");
    let (_ctl, app, client) = echo::proxied(&server, BOOKS);

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
    let sum = sum_of(&client, &["x", "y", "z"]);
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
        ("grpc_status", "13"),
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

/// Runs nghttp (HTTP/2 with prior knowledge) against `addr` with extra
/// headers and an optional body file; its verbose output.
fn nghttp(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[&str],
    data: Option<&std::path::Path>,
) -> String {
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("10").arg("nghttp").arg("-v");
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    if let Some(d) = data {
        cmd.arg("-d").arg(d);
    }
    cmd.arg(format!("http://{addr}{path}"));
    let out = cmd
        .output()
        .expect("nghttp runs (scripts/setup.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_request_upgraded_by_a_client_proxy_reaches_an_http1_application_as_http11() {
    let ctl = MockController::start();
    let app_b = backend_with(
        "app-b",
        std::sync::Arc::new(|req| {
            spoke::devtools::Response::new(
                200,
                format!("{} {} {}", req.method, req.target, req.body.len()),
            )
            .with_header("x-app", "b")
        }),
    );
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy_with_orig_dst(&config(ctl.addr()), Box::new(Injected::to(app_b.addr())));
    let authority = format!(":authority: {BOOKS}");
    let orig = "l5d-orig-proto: HTTP/1.1";

    let out = nghttp(
        app.inbound_addr(),
        "/books/1?x=2",
        &[&authority, orig],
        None,
    );
    assert!(out.contains(":status: 200"), "{out}");
    assert!(out.contains("x-app: b"), "{out}");
    assert!(out.contains("GET /books/1?x=2 0"), "{out}");
    let got = app_b.received().pop().expect("the application got it");
    assert_eq!(got.header("host"), Some(BOOKS));
    assert_eq!(got.header("l5d-orig-proto"), None);
    assert!(
        got.raw.windows(8).any(|w| w == b"HTTP/1.1"),
        "{:?}",
        got.raw
    );

    // A body goes with its length when the client said it, else chunked;
    // the app sees all of it.
    let dir = std::env::temp_dir().join(format!("spoke-h2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("body");
    std::fs::write(&file, vec![b'x'; 100_000]).expect("body");
    let out = nghttp(
        app.inbound_addr(),
        "/upload",
        &[&authority, orig],
        Some(&file),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.contains(":status: 200"), "{out}");
    let got = app_b.received().pop().expect("the upload");
    assert_eq!(got.method, "POST");
    let body = match got.header("transfer-encoding") {
        Some(_) => spoke::devtools::dechunk(&got.body).expect("chunked"),
        None => got.body.clone(),
    };
    assert_eq!(body.len(), 100_000);

    // A body of unknown length (gRPC sends none) goes chunked.
    let mut md = grpcio::MetadataBuilder::new();
    md.add_str("l5d-orig-proto", "HTTP/1.1").expect("metadata");
    let client = client_via(app.inbound_addr(), BOOKS);
    let with_orig = opt().headers(md.build());
    // The app answers plain text, which no gRPC client takes: only what it
    // received matters here.
    let _ = client.unary_call(&echo::UNARY, &msg("chunked body"), with_orig);
    let got = app_b.received().pop().expect("the gRPC call");
    assert_eq!(got.target, "/test.Echo/Unary");
    assert_eq!(got.header("transfer-encoding"), Some("chunked"));
    let body = spoke::devtools::dechunk(&got.body).expect("chunked");
    // gRPC's 5-byte frame header, then the message (field 1, 12 bytes).
    assert_eq!(body.len(), 5 + 2 + "chunked body".len());

    // The absolute form comes back when the client proxy says so.
    let abs = "l5d-orig-proto: HTTP/1.1; absolute-form";
    let out = nghttp(app.inbound_addr(), "/abs", &[&authority, abs], None);
    assert!(out.contains(&format!("GET http://{BOOKS}/abs 0")), "{out}");
}

#[test]
fn a_client_that_never_reads_stalls_no_other_client() {
    use std::io::Write;
    let server = EchoServer::start("a");
    let (_ctl, app, client) = echo::proxied(&server, BOOKS);
    client
        .unary_call(&echo::UNARY, &msg("warm"), opt())
        .expect("warm-up");

    // A raw HTTP/2 client asks for 3 MiB and never reads a byte, nor opens
    // its stream window: spoke may send it 64 KiB, and must not take the
    // rest from the upstream connection other clients share.
    let mut slow = std::net::TcpStream::connect(app.outbound_addr()).expect("connect");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    let headers = hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", BOOKS),
        (":path", "/test.Echo/Big"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]);
    out.extend(frame(0x1, 0x4, 1, &headers));
    let body = [0x0a, 3, b'1', b'0', b'0'];
    let mut grpc_msg = vec![0u8];
    grpc_msg.extend_from_slice(&(body.len() as u32).to_be_bytes());
    grpc_msg.extend_from_slice(&body);
    out.extend(frame(0x0, 0x1, 1, &grpc_msg));
    slow.write_all(&out).expect("send");
    eventually("the big call reached the server", || server.calls() >= 2);

    for i in 0..50 {
        let reply = client
            .unary_call(&echo::UNARY, &msg(&i.to_string()), opt())
            .expect("another client's call goes on");
        assert_eq!(reply.path, format!("a:{i}"));
    }
    drop(slow);
}

#[test]
fn p2c_moves_calls_away_from_a_slow_endpoint() {
    let ctl = MockController::start();
    let (a, b) = (EchoServer::start("a"), EchoServer::start("b"));
    let slow = EchoServer::slow("slow", 40);
    ctl.endpoints(BOOKS, &[a.addr, b.addr, slow.addr]);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy(&config(ctl.addr()));
    let client = client_via(app.outbound_addr(), BOOKS);
    for i in 0..60 {
        client
            .unary_call(&echo::UNARY, &msg(&i.to_string()), opt())
            .expect("call");
    }
    let (a, b, slow) = (a.calls(), b.calls(), slow.calls());
    assert_eq!(a + b + slow, 60);
    // Once its latency is known, the slow one loses every pair it is in.
    assert!(slow * 3 < a.min(b), "a {a}, b {b}, slow {slow}");
}

/// One-byte stream windows on the client side of the proxy: every DATA
/// byte a client sends waits for spoke's WINDOW_UPDATE, which spoke gives
/// only once the upstream took the byte. Calls in both directions still
/// complete, whole (no wakeup lost between the two legs' windows).
#[test]
fn calls_complete_through_one_byte_stream_windows() {
    let server = EchoServer::start("a");
    let ctl = MockController::start();
    ctl.endpoints(BOOKS, &[server.addr]);
    ctl.profile(BOOKS, &profile(vec![]));
    let vars = &spoke::config::OUTBOUND_H2;
    let app = proxy(&config(ctl.addr()).set(vars.initial_stream_window_size, "1"));
    let client = client_via(app.outbound_addr(), BOOKS);

    // Client streaming: 8 messages of 1 KiB, a byte at a time.
    let parts: Vec<String> = (0..8).map(|i| format!("{i}{}", "p".repeat(1023))).collect();
    let sum = sum_of(&client, &parts);
    assert_eq!(sum.path, format!("a:{}", parts.join("+")));

    // Bidirectional, each message answered before the next goes.
    let (mut tx, mut rx) = client.duplex_streaming(&echo::CHAT, opt()).expect("starts");
    futures::executor::block_on(async {
        for i in 0..5 {
            let m = format!("{i}{}", "c".repeat(300));
            tx.send((msg(&m), WriteFlags::default()))
                .await
                .expect("send");
            let got = rx.next().await.expect("a reply").expect("ok");
            assert_eq!(got.path, format!("a:{m}"));
        }
        tx.close().await.expect("close");
        assert!(rx.next().await.is_none());
    });

    // Server streaming the other way: 1 MiB back, with the trailers.
    let mut big = client
        .server_streaming(&echo::BIG, &msg("32"), opt())
        .expect("starts");
    let total = futures::executor::block_on(async {
        let mut n = 0;
        while let Some(m) = big.next().await {
            n += m.expect("message").path.len();
        }
        n
    });
    assert_eq!(total, 32 * 32 * 1024);
}

/// A read budget of one byte: every HTTP/2 connection (the client's and
/// the upstream one) yields after each byte it reads and must wake itself
/// to read on, with bytes still in the socket and no new event to come.
/// Every kind of call completes, whole.
#[test]
fn calls_complete_when_each_connection_reads_one_byte_per_poll() {
    let server = EchoServer::start("a");
    let ctl = MockController::start();
    ctl.endpoints(BOOKS, &[server.addr]);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy(&config(ctl.addr()).set(spoke::config::H2_READ_BUDGET, "1"));
    let client = client_via(app.outbound_addr(), BOOKS);

    let reply = client
        .unary_call(&echo::UNARY, &msg("one"), opt())
        .expect("unary");
    assert_eq!(reply.path, "a:one");
    let sum = sum_of(&client, &["x", "y", "z"]);
    assert_eq!(sum.path, "a:x+y+z");
    // 64 KiB back a byte per poll.
    let mut big = client
        .server_streaming(&echo::BIG, &msg("2"), opt())
        .expect("starts");
    let total = futures::executor::block_on(async {
        let mut n = 0;
        while let Some(m) = big.next().await {
            n += m.expect("message").path.len();
        }
        n
    });
    assert_eq!(total, 2 * 32 * 1024);
}
