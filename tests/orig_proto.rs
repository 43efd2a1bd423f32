//! Linkerd's HTTP/1-over-HTTP/2 between two spokes: the embedded
//! controller gives the meshed endpoint (spoke B) the `H2` hint, so spoke
//! A carries the application's HTTP/1 requests to it as HTTP/2 streams
//! over mTLS with `l5d-orig-proto`, multiplexed on one connection, and
//! spoke B gives app B HTTP/1.1 again. What the applications see must be
//! what they would see without the upgrade: bodies byte for byte, their
//! headers, `Host`, HEAD, `Connection: close`, HTTP/1.0, absolute form;
//! requests asking for a protocol upgrade stay HTTP/1 end to end.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use spoke::devtools::{Client, Response};
use support::mesh::*;
use support::*;

/// App B's answer: its request's method, target and body content back, a
/// header, and a delay when the request asks for one.
fn mirror() -> spoke::devtools::Handler {
    Arc::new(|req| {
        let content = spoke::devtools::dechunk(&req.body).unwrap_or_else(|_| req.body.clone());
        let mut body = format!("{} {}\n", req.method, req.target).into_bytes();
        body.extend_from_slice(&content);
        let r = Response::new(200, body).with_header("x-from", "app-b");
        match req.header("x-delay-ms").and_then(|v| v.parse().ok()) {
            Some(ms) => r.with_delay(Duration::from_millis(ms)),
            None => r,
        }
    })
}

/// The two spokes with app B mirroring, once a request went through both.
fn warm_mesh(test: &str) -> Mesh {
    let m = mesh(test, Duration::from_secs(3600), BOOKS_ID, mirror());
    eventually("a request through both spokes", || {
        get(m.a(), BOOKS, "/warm").status == 200
    });
    m
}

fn client(m: &Mesh) -> Client {
    Client::connect(m.a().outbound_addr(), patience()).expect("connect to spoke A")
}

/// Some bytes that are not text, `n` long.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn has_header(req: &spoke::devtools::Request, name: &str) -> bool {
    req.headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(name))
}

#[test]
fn http1_requests_cross_to_the_meshed_spoke_as_http2_and_arrive_byte_exact() {
    let m = warm_mesh("exact");

    // A GET with headers of its own.
    let mut c = client(&m);
    let r = c
        .send("GET", BOOKS, "/a/b?c=1", &[("x-custom", "yes")], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "GET /a/b?c=1\n");
    assert_eq!(r.header("x-from"), Some("app-b"));
    assert_eq!(
        r.header("l5d-orig-proto"),
        None,
        "the proxies' note stays between them"
    );
    let seen = m.app_b.received().pop().unwrap();
    assert_eq!(seen.header("host"), Some(BOOKS));
    assert_eq!(seen.header("x-custom"), Some("yes"));
    assert!(!has_header(&seen, "l5d-orig-proto"), "{:?}", seen.headers);

    // Bodies with a length and chunked, on the same client connection.
    let body = payload(200 * 1024);
    let r = c.send("POST", BOOKS, "/upload", &[], &body).unwrap();
    assert_eq!(r.status, 200);
    let mut want = b"POST /upload\n".to_vec();
    want.extend_from_slice(&body);
    assert!(r.payload().unwrap() == want, "the body came back changed");
    let seen = m.app_b.received().pop().unwrap();
    assert_eq!(seen.header("content-length"), Some("204800"));

    let mut chunked =
        format!("PUT /chunks HTTP/1.1\r\nhost: {BOOKS}\r\ntransfer-encoding: chunked\r\n\r\n")
            .into_bytes();
    let parts = [&body[..1000], &body[1000..70_000], &body[70_000..70_001]];
    for p in parts {
        chunked.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        chunked.extend_from_slice(p);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = c.send_raw(&chunked, false).unwrap();
    assert_eq!(r.status, 200);
    let mut want = b"PUT /chunks\n".to_vec();
    want.extend_from_slice(&body[..70_001]);
    assert!(
        r.payload().unwrap() == want,
        "the chunked body came back changed"
    );

    // HEAD: the head with its length, no body.
    let r = c.send("HEAD", BOOKS, "/h", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("8"), "{:?}", r.headers);
    assert!(r.body.is_empty());
    // The connection still works after all of them.
    assert_eq!(c.get(BOOKS, "/again").unwrap().text(), "GET /again\n");

    // Spoke B saw HTTP/2 after TLS; spoke A carried concurrent requests
    // from three client connections on one connection to B.
    let h2 = [("direction", "inbound"), ("protocol", "h2")];
    assert!(
        metric(m.b(), "spoke_detect_total", &h2) >= 1.0,
        "{}",
        metrics(m.b())
    );
    let dst = [
        ("direction", "outbound"),
        ("peer", "dst"),
        ("tls", "true"),
        ("server_id", BOOKS_ID),
    ];
    let before = metric(m.a(), "tcp_open_total", &dst);
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let addr = m.a().outbound_addr();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, patience()).unwrap();
                let path = format!("/slow/{i}");
                c.send("GET", BOOKS, &path, &[("x-delay-ms", "300")], b"")
                    .unwrap()
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().unwrap();
        assert_eq!(r.text(), format!("GET /slow/{i}\n"));
    }
    assert_eq!(
        metric(m.a(), "tcp_open_total", &dst),
        before,
        "no new connection to B for concurrent requests: {}",
        metrics(m.a())
    );
    assert_eq!(before, 1.0, "one connection to B: {}", metrics(m.a()));
}

#[test]
fn http1_semantics_survive_the_upgrade() {
    let m = warm_mesh("semantics");

    // `Connection: close` from the client: answered, then closed; the
    // header itself is the client connection's, not app B's.
    let mut c = client(&m);
    let r = c
        .send("GET", BOOKS, "/bye", &[("connection", "close")], b"")
        .unwrap();
    assert_eq!(r.text(), "GET /bye\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());

    // HTTP/1.0 without Host (routed by `l5d-dst-override`): app B gets the
    // destination's name as Host, the client an answer with its length.
    let mut c = client(&m);
    let http10 = format!("GET /old HTTP/1.0\r\nl5d-dst-override: {BOOKS}\r\n\r\n");
    let r = c.send_raw(http10.as_bytes(), false).unwrap();
    assert_eq!((r.status, r.text()), (200, "GET /old\n".to_owned()));
    assert_eq!(r.header("content-length"), Some("9"), "{:?}", r.headers);
    let seen = m.app_b.received().pop().unwrap();
    assert_eq!(seen.header("host"), Some(BOOKS), "{:?}", seen.headers);

    // Absolute form: app B sees the absolute target, as Linkerd restores it.
    let mut c = client(&m);
    let abs = format!("GET http://{BOOKS}/abs HTTP/1.1\r\nhost: {BOOKS}\r\n\r\n");
    let r = c.send_raw(abs.as_bytes(), false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), format!("GET http://{BOOKS}/abs\n"));

    // A request asking for a protocol upgrade goes as HTTP/1, headers and
    // all (an HTTP/2 stream could not carry the switch).
    let mut c = client(&m);
    let r = c
        .send(
            "GET",
            BOOKS,
            "/ws",
            &[("connection", "upgrade"), ("upgrade", "websocket")],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let seen = m.app_b.received().pop().unwrap();
    assert_eq!(
        seen.header("upgrade"),
        Some("websocket"),
        "{:?}",
        seen.headers
    );
}

#[test]
fn a_target_http2_cannot_carry_goes_as_http1() {
    let m = warm_mesh("fallback");
    // `<`, `>` and a backtick pass HTTP/1 parsers, not HTTP/2's URI rules.
    let mut c = client(&m);
    let raw = format!("GET /a<b>`c HTTP/1.1\r\nhost: {BOOKS}\r\n\r\n");
    let r = c.send_raw(raw.as_bytes(), false).unwrap();
    assert_eq!((r.status, r.text()), (200, "GET /a<b>`c\n".to_owned()));
    // The endpoint was not charged with it: the next request is upgraded.
    let r = c.get(BOOKS, "/next").unwrap();
    assert_eq!(r.text(), "GET /next\n");
}

/// An application that answers every request with `reply` and closes: a
/// server whose HTTP/1 is broken. Stopped (and joined) on drop.
struct Broken {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Broken {
    fn start(reply: &'static [u8]) -> Broken {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("broken-app".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut head = Vec::new();
                    let mut b = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&b[..n]),
                        }
                    }
                    let _ = s.write_all(reply);
                }
            })
            .unwrap();
        Broken {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Broken {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_broken_application_response_is_a_proxy_error_or_a_cut_connection_across_the_upgrade() {
    // A head that is not HTTP/1: spoke B answers its stream 502, which spoke
    // A gives the client as HTTP/1, with the proxy's error header.
    let bad_head = Broken::start(b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n");
    let m = mesh_with(
        "broken-head",
        Duration::from_secs(3600),
        BOOKS_ID,
        mirror(),
        None,
        Some(bad_head.addr),
    );
    let r = eventually_some("spoke B's answer", || {
        let r = get(m.a(), BOOKS, "/x");
        (r.status == 502).then_some(r)
    });
    assert!(r.header("l5d-proxy-error").is_some(), "{:?}", r.headers);
    let h2 = [("direction", "inbound"), ("protocol", "h2")];
    assert!(
        metric(m.b(), "spoke_detect_total", &h2) >= 1.0,
        "{}",
        metrics(m.b())
    );
    drop(m);

    // A body cut short after the head went out: the client's connection
    // closes before the body is complete (nothing else could tell it).
    let cut = Broken::start(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly a part");
    let m = mesh_with(
        "broken-body",
        Duration::from_secs(3600),
        BOOKS_ID,
        mirror(),
        None,
        Some(cut.addr),
    );
    eventually("the response cut short", || {
        let mut c = client(&m);
        c.get(BOOKS, "/y").is_err()
    });
    // Spoke A still serves the next client.
    assert!(Client::connect(m.a().outbound_addr(), patience()).is_ok());
}

#[test]
fn with_the_upgrade_turned_off_requests_cross_as_http1_over_mtls() {
    let m = mesh_full(
        "no-upgrade",
        Duration::from_secs(3600),
        BOOKS_ID,
        mirror(),
        None,
        None,
        |env| env.set(spoke::config::ORIG_PROTO_UPGRADE, "off"),
    );
    let r = eventually_some("a request through both spokes", || {
        let r = get(m.a(), BOOKS, "/plain-h1");
        (r.status == 200).then_some(r)
    });
    assert_eq!(r.text(), "GET /plain-h1\n");
    let b = metrics(m.b());
    let detected = |protocol| {
        metric(
            m.b(),
            "spoke_detect_total",
            &[("direction", "inbound"), ("protocol", protocol)],
        )
    };
    assert_eq!(detected("h2"), 0.0, "{b}");
    assert!(detected("http1") >= 1.0, "{b}");
    let tls = [
        ("direction", "inbound"),
        ("protocol", "tls"),
        ("reason", "terminated"),
    ];
    assert!(metric(m.b(), "spoke_detect_total", &tls) >= 1.0, "{b}");
}

/// How [`Refuser`] turns a stream away once it has read all of it.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// `RST_STREAM` with `REFUSED_STREAM`; the connection stays.
    Reset,
    /// GOAWAY naming no stream processed, then the connection closes.
    GoAway,
}

/// A meshed endpoint proving `BOOKS_ID` that speaks just enough HTTP/2 to
/// read each request whole and then refuse it unprocessed (RFC 9113
/// section 8.7). Its connections and thread are stopped and joined on drop.
struct Refuser {
    addr: SocketAddr,
    /// Streams it read to their end and refused.
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Refuser {
    fn start(m: &Mesh, how: Refusal) -> Refuser {
        let cfg = server_as(&m.ca, &m.anchors, BOOKS_ID);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), refused.clone());
        let thread = std::thread::Builder::new()
            .name("refuser".into())
            .spawn(move || {
                let mut conns: Vec<(TcpStream, JoinHandle<()>)> = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    let Ok((s, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let (cfg, count) = (cfg.clone(), count.clone());
                    let closer = s.try_clone().unwrap();
                    let t = std::thread::spawn(move || refuse_all(s, cfg, how, &count));
                    conns.push((closer, t));
                }
                for (s, t) in conns {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    let _ = t.join();
                }
            })
            .unwrap();
        Refuser {
            addr,
            refused,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Refuser {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection of [`Refuser`]: TLS, the preface, SETTINGS both ways,
/// PINGs answered, and every stream refused once its request ended.
fn refuse_all(sock: TcpStream, cfg: Arc<rustls::ServerConfig>, how: Refusal, count: &AtomicUsize) {
    use support::frames::*;
    let conn = rustls::ServerConnection::new(cfg).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    let mut preface = [0u8; 24];
    if s.read_exact(&mut preface).is_err() || preface != PREFACE {
        return;
    }
    let send = |s: &mut rustls::StreamOwned<_, _>, f: Vec<u8>| {
        let _ = s.write_all(&f);
        let _ = s.flush();
    };
    send(&mut s, frame(SETTINGS, 0, 0, &[]));
    while let Some(f) = read_frame(&mut s) {
        match f.ty {
            SETTINGS if f.flags & ACK == 0 => send(&mut s, frame(SETTINGS, ACK, 0, &[])),
            PING if f.flags & ACK == 0 => send(&mut s, frame(PING, ACK, 0, &f.payload)),
            HEADERS | DATA if f.flags & END_STREAM != 0 => {
                count.fetch_add(1, Ordering::Relaxed);
                match how {
                    Refusal::Reset => {
                        send(&mut s, frame(RST_STREAM, 0, f.stream, &REFUSED_STREAM_CODE));
                    }
                    Refusal::GoAway => {
                        // Last stream id 0, NO_ERROR: none was processed.
                        send(&mut s, frame(GOAWAY, 0, 0, &[0; 8]));
                        s.conn.send_close_notify();
                        let _ = s.flush();
                        return;
                    }
                }
            }
            _ => {}
        }
    }
}

const REFUSED_STREAM_CODE: [u8; 4] = 7u32.to_be_bytes();

#[test]
fn a_post_the_peer_refused_unprocessed_goes_to_another_endpoint_whole() {
    for how in [Refusal::Reset, Refusal::GoAway] {
        let m = warm_mesh(&format!("refused-{how:?}"));
        let refuser = Refuser::start(&m, how);
        let yaml = mesh_yaml(&[m.b().inbound_addr(), refuser.addr], BOOKS_ID);
        std::fs::write(m.dir.join("mesh.yaml"), yaml).unwrap();
        // A POST is not idempotent: only the peer's word that it did not
        // process the stream lets it go again after its body went out (a
        // body small enough to be kept on a route without retries).
        let body = payload(3_000);
        let mut want = b"POST /order\n".to_vec();
        want.extend_from_slice(&body);
        let posted = m.app_b.received().len();
        let mut sent = 0;
        // App B answers slower than an endpoint with no latency known yet is
        // deemed to: P2C then tries the refuser.
        let slow = [("x-delay-ms", "60")];
        eventually("a POST refused by the endpoint", || {
            let r = client(&m)
                .send("POST", BOOKS, "/order", &slow, &body)
                .unwrap();
            sent += 1;
            assert_eq!(r.status, 200, "{how:?}: {:?} {}", r.headers, r.text());
            assert!(r.payload().unwrap() == want, "{how:?}: the body changed");
            refuser.refused.load(Ordering::Relaxed) >= 1
        });
        let orders = m.app_b.received()[posted..]
            .iter()
            .filter(|r| r.target == "/order")
            .count();
        assert_eq!(orders, sent, "{how:?}: app B got each POST once");
        let refused = [("direction", "outbound"), ("reason", "refused_stream")];
        assert!(
            metric(m.a(), "spoke_connect_retries_total", &refused) >= 1.0,
            "{how:?}: {}",
            metrics(m.a())
        );
    }
}
