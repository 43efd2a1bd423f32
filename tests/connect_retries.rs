//! Connection-level failures through the real proxy: refused, reset, never-accepting and
//! partly-reading endpoints, and pooled connections closed before a response. A request
//! that may be repeated moves to another endpoint (or waits for the endpoint's backoff)
//! within the fail-fast window; one whose body was partly streamed is never sent again.
//!
//! The misbehaving endpoints are raw listeners on loopback, each a thread of the test
//! process that counts the connections it accepted and is stopped (and joined) on drop.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spoke::devtools::{Backend, Client};
use support::*;

const BOOKS: &str = "books.default.svc.cluster.local:7000";
const HOST: &str = "books.default.svc.cluster.local:7000";

/// What a raw endpoint does with each connection it accepts.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Reset at once, before reading anything.
    Reset,
    /// Read the request head and at least one body byte, then reset.
    ResetAfterBodyByte,
    /// Answer the first request on each connection with 200 keep-alive, then close
    /// (FIN) on the next one without answering.
    AnswerOnceThenClose,
}

struct RawEndpoint {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawEndpoint {
    fn start(behaviour: Behaviour) -> RawEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, halt) = (accepted.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("raw-endpoint".into())
            .spawn(move || {
                // One thread per connection (a pooled one may sit open), joined
                // when the listener stops; each ends when its peer closes.
                let mut conns = Vec::new();
                for conn in listener.incoming() {
                    if halt.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    n.fetch_add(1, Ordering::AcqRel);
                    conns.push(std::thread::spawn(move || serve(conn, behaviour)));
                }
                for c in conns {
                    let _ = c.join();
                }
            })
            .expect("spawn");
        RawEndpoint {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }
}

impl Drop for RawEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reset(conn: TcpStream) {
    let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
    drop(conn);
}

fn serve(mut conn: TcpStream, behaviour: Behaviour) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    match behaviour {
        Behaviour::Reset => reset(conn),
        Behaviour::ResetAfterBodyByte => {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let head_end = got.windows(4).position(|w| w == b"\r\n\r\n");
                if head_end.is_some_and(|end| got.len() > end + 4) {
                    break;
                }
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            reset(conn);
        }
        Behaviour::AnswerOnceThenClose => {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let mut answered = false;
            loop {
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    if answered {
                        // The second head: close without a word.
                        return;
                    }
                    got.drain(..end + 4);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                    if conn.write_all(ok).is_err() {
                        return;
                    }
                    answered = true;
                    continue;
                }
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        }
    }
}

fn retries(app: &spoke::app::App, reason: &str) -> f64 {
    metric(
        app,
        "spoke_connect_retries_total",
        &[("dst", BOOKS), ("reason", reason)],
    )
}

fn mesh(endpoints: &[SocketAddr], extra: &[(&str, &str)]) -> (MockController, spoke::app::App) {
    let ctl = MockController::start();
    ctl.endpoints(BOOKS, endpoints);
    ctl.profile(BOOKS, &profile(vec![]));
    let mut env = config(ctl.addr());
    for (k, v) in extra {
        env = env.set(k, *v);
    }
    let app = proxy(&env);
    (ctl, app)
}

#[test]
fn one_refusing_endpoint_of_two_loses_no_request() {
    let live = backend("live");
    let (_ctl, app) = mesh(&[live.addr(), dead_port()], &[]);
    let statuses: Vec<u16> = (0..100).map(|_| get(&app, HOST, "/").status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(live.hits(), 100);
    assert!(retries(&app, "refused") >= 1.0, "{}", metrics(&app));
}

/// One good endpoint, one refusing, one resetting every connection it accepts.
fn three_endpoints() -> (Backend, RawEndpoint, MockController, spoke::app::App) {
    let good = backend("good");
    let resetter = RawEndpoint::start(Behaviour::Reset);
    let (ctl, app) = mesh(&[good.addr(), dead_port(), resetter.addr], &[]);
    (good, resetter, ctl, app)
}

#[test]
fn a_resetting_endpoint_beside_a_refusing_one_loses_no_sequential_request() {
    let (good, resetter, _ctl, app) = three_endpoints();
    let statuses: Vec<u16> = (0..300).map(|_| get(&app, HOST, "/").status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(good.hits(), 300);
    // A fast failure costs it more each time: after its first few it gets almost
    // nothing (each failure backs it off longer and counts as a slow response).
    assert!(
        resetter.accepted() <= 12,
        "the resetting endpoint got {} connections",
        resetter.accepted()
    );
    assert!(retries(&app, "reset") >= 1.0, "{}", metrics(&app));
}

#[test]
fn a_resetting_endpoint_beside_a_refusing_one_loses_no_pipelined_request() {
    let (good, resetter, _ctl, app) = three_endpoints();
    let mut total = 0;
    for _ in 0..8 {
        let mut c = Client::connect(app.outbound_addr(), Duration::from_secs(10)).expect("connect");
        let one = format!("GET / HTTP/1.1\r\nhost: {HOST}\r\n\r\n");
        let batch = one.repeat(250);
        let first = c.send_raw(batch.as_bytes(), false).expect("first reply");
        assert_eq!(first.status, 200);
        for i in 1..250 {
            let r = c.read_reply(false).expect("reply");
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
        }
        total += 250;
    }
    assert_eq!(good.hits(), total);
    assert!(
        resetter.accepted() <= 12,
        "the resetting endpoint got {} connections",
        resetter.accepted()
    );
}

#[test]
fn an_endpoint_that_resets_before_reading_passes_the_request_on() {
    let good = backend("good");
    let resetter = RawEndpoint::start(Behaviour::Reset);
    let (_ctl, app) = mesh(&[resetter.addr, good.addr()], &[]);
    // Until the resetting endpoint has been tried at least once.
    let mut sent = 0;
    while resetter.accepted() == 0 && sent < 200 {
        assert_eq!(get(&app, HOST, "/").status, 200);
        sent += 1;
    }
    assert!(resetter.accepted() >= 1, "never tried in {sent} requests");
    assert_eq!(good.hits(), sent);
}

#[test]
fn a_listener_that_never_accepts_is_passed_over_and_alone_fails_after_the_failfast_window() {
    let (stuck, _fillers) = never_accepting();
    let stuck = stuck.local_addr().expect("addr").as_socket().expect("inet");
    let good = backend("good");
    let opts = [
        (spoke::config::OUTBOUND_CONNECT_TIMEOUT, "200ms"),
        (spoke::config::FAILFAST_TIMEOUT, "1s"),
    ];
    let (_ctl, app) = mesh(&[stuck, good.addr()], &opts);
    let statuses: Vec<u16> = (0..20).map(|_| get(&app, HOST, "/").status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(good.hits(), 20);

    // Alone, it fails the request only once the fail-fast window has passed.
    let (_ctl, app) = mesh(&[stuck], &opts);
    let started = Instant::now();
    let r = get(&app, HOST, "/");
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("l5d-proxy-error"), Some("connect timeout"));
    assert!(took >= Duration::from_millis(950), "failed after {took:?}");
    assert!(retries(&app, "connect_timeout") >= 1.0, "{}", metrics(&app));
}

#[test]
fn a_lone_endpoint_that_comes_up_within_the_window_serves_the_waiting_request() {
    let addr = dead_port();
    let (_ctl, app) = mesh(&[addr], &[(spoke::config::FAILFAST_TIMEOUT, "5s")]);
    let out = app.outbound_addr();
    let waiting = std::thread::spawn(move || {
        spoke::devtools::get(out, HOST, "/late")
            .expect("reply")
            .status
    });
    // Once the proxy has been refused at least twice, bring the endpoint up.
    eventually("two refusals", || retries(&app, "refused") >= 2.0);
    let late = Backend::start_on(
        "late",
        addr,
        Arc::new(|_| spoke::devtools::Response::new(200, "late\n")),
    )
    .expect("the port is free again");
    assert_eq!(waiting.join().expect("client thread"), 200);
    assert_eq!(late.hits(), 1);
}

#[test]
fn a_partly_streamed_body_is_never_sent_again() {
    let partial = RawEndpoint::start(Behaviour::ResetAfterBodyByte);
    let (_ctl, app) = mesh(&[partial.addr], &[]);
    let mut c = Client::connect(app.outbound_addr(), Duration::from_secs(10)).expect("connect");
    let head = format!("POST /upload HTTP/1.1\r\nhost: {HOST}\r\ncontent-length: 100000\r\n\r\n");
    // The head and a first part of the body; the endpoint resets after it.
    let mut first = head.into_bytes();
    first.extend_from_slice(&[b'x'; 1000]);
    let r = c
        .send_raw(&first, false)
        .expect("an answer before the body ends");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        r.header("l5d-proxy-error"),
        Some("connection reset before response")
    );
    assert_eq!(partial.accepted(), 1, "the request went again");
}

#[test]
fn a_pooled_connection_closed_before_a_response_repeats_only_what_rfc_9110_allows() {
    let ep = RawEndpoint::start(Behaviour::AnswerOnceThenClose);
    let (_ctl, app) = mesh(&[ep.addr], &[]);
    // The first GET leaves the connection in the pool; the second finds it closed
    // and goes again on a fresh one.
    assert_eq!(get(&app, HOST, "/one").status, 200);
    assert_eq!(get(&app, HOST, "/two").status, 200);
    assert_eq!(ep.accepted(), 2);
    assert!(retries(&app, "closed") >= 1.0, "{}", metrics(&app));

    // A POST with a body on the pooled connection: not idempotent, its body went
    // out, so it is not repeated.
    let mut c = Client::connect(app.outbound_addr(), Duration::from_secs(10)).expect("connect");
    let r = c
        .send("POST", HOST, "/order", &[], b"one order")
        .expect("reply");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(ep.accepted(), 2, "the POST went again");
}
