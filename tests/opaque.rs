//! Protocol detection and opaque TCP through the real proxy, with the
//! original destination injected (no iptables): redirected connections that
//! are not HTTP/1 are carried byte for byte to where they were going, both
//! ways, with half-closes; a server that speaks first is heard after the quiet
//! period, not the detect timeout; and each outcome is counted.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use spoke::config;
use support::*;

/// A plain TCP server on loopback running `serve` for each connection on its
/// own thread; stopped and joined on drop.
struct TcpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TcpServer {
    fn start(serve: fn(TcpStream)) -> TcpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let accept = std::thread::Builder::new()
            .name("tcp-server".into())
            .spawn(move || {
                let mut conns = Vec::new();
                for conn in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    conns.push(std::thread::spawn(move || serve(conn)));
                }
                for c in conns {
                    let _ = c.join();
                }
            })
            .expect("spawn");
        TcpServer {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Echoes until EOF, then half-closes its side.
fn echo(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

/// Speaks first (a banner, as SMTP or MySQL do), then echoes.
fn banner(mut conn: TcpStream) {
    if conn.write_all(b"220 ready\r\n").is_ok() {
        echo(conn);
    }
}

/// Says one line and half-closes at once, then still reads what comes and
/// answers with how many bytes it got.
fn says_and_closes(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.write_all(b"bye\n");
    let _ = conn.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got);
    // Its write side is shut: the test learns what arrived from the counter.
    RECEIVED.fetch_add(got.len(), Ordering::SeqCst);
    drop(conn);
}

static RECEIVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn proxy_to(server: SocketAddr, env: spoke::config::MapEnv) -> spoke::app::App {
    proxy_with_orig_dst(&env, Box::new(Injected::to(server)))
}

fn connect(app: &spoke::app::App) -> TcpStream {
    let s = TcpStream::connect(app.outbound_addr()).expect("connect");
    s.set_read_timeout(Some(patience())).expect("timeout");
    s
}

/// Sends `bytes` on a fresh connection to `addr`, half-closes, and returns
/// all that comes back before EOF (a failed write or read ends it early).
fn round_trip(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(patience())).expect("timeout");
    let mut got = Vec::new();
    if s.write_all(bytes).is_ok() && s.shutdown(Shutdown::Write).is_ok() {
        let _ = s.read_to_end(&mut got);
    }
    got
}

fn detected(app: &spoke::app::App, protocol: &str, reason: &str) -> f64 {
    metric(
        app,
        "spoke_detect_total",
        &[
            ("direction", "outbound"),
            ("protocol", protocol),
            ("reason", reason),
        ],
    )
}

#[test]
fn non_http_bytes_are_echoed_through_with_half_close_both_ways() {
    let ctl = MockController::start();
    let server = TcpServer::start(echo);
    let app = proxy_to(server.addr, config(ctl.addr()));

    // The client half-closes: the server sees EOF, echoes what it got and
    // half-closes too; the client reads all of it, then EOF.
    let msg = b"*1\r\n$4\r\nPING\r\n\x00\x01\x02 binary";
    assert_eq!(round_trip(app.outbound_addr(), msg), msg);
    eventually("the detection counted", || {
        detected(&app, "opaque", "detected") >= 1.0
    });

    // An outbound TLS ClientHello is the application's own TLS: opaque.
    let hello = &[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0, 0, 1, 3][..];
    assert_eq!(round_trip(app.outbound_addr(), hello), hello);
    // The HTTP/2 preface is HTTP/2 (tests/h2.rs): spoke's SETTINGS answer
    // it, nothing reaches the server.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let reply = round_trip(app.outbound_addr(), preface);
    assert_eq!(reply.get(3), Some(&4), "a SETTINGS frame: {reply:?}");
    eventually("h2 and tls counted", || {
        detected(&app, "h2", "detected") == 1.0 && detected(&app, "tls", "detected") == 1.0
    });
}

#[test]
fn a_server_that_half_closes_first_still_receives_the_clients_bytes() {
    let ctl = MockController::start();
    let server = TcpServer::start(says_and_closes);
    let app = proxy_to(server.addr, config(ctl.addr()));
    let before = RECEIVED.load(Ordering::SeqCst);

    let mut s = connect(&app);
    s.write_all(b"\x00hello").expect("write");
    let mut line = [0u8; 4];
    s.read_exact(&mut line).expect("the server's line");
    assert_eq!(&line, b"bye\n");
    // The server's EOF arrives while the client can still send.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("EOF");
    assert!(rest.is_empty());
    s.write_all(b" and more")
        .expect("write after the server's EOF");
    s.shutdown(Shutdown::Write).expect("half-close");
    eventually("the server got every byte", || {
        RECEIVED.load(Ordering::SeqCst) >= before + b"\x00hello and more".len()
    });
}

#[test]
fn a_server_that_speaks_first_is_heard_after_the_quiet_period() {
    let ctl = MockController::start();
    let server = TcpServer::start(banner);
    // A detect timeout far beyond the read timeout: only the quiet period
    // can get the banner to the client in time.
    let env = config(ctl.addr())
        .set(config::OUTBOUND_DETECT_TIMEOUT, "10m")
        .set(config::DETECT_QUIET_TIMEOUT, "100ms");
    let app = proxy_to(server.addr, env);

    let mut s = connect(&app);
    let mut got = [0u8; 11];
    s.read_exact(&mut got)
        .expect("the banner, before the detect timeout");
    assert_eq!(&got, b"220 ready\r\n");
    // Then it is a plain tunnel.
    s.write_all(b"HELO x\r\n").expect("write");
    let mut echo = [0u8; 8];
    s.read_exact(&mut echo).expect("echo");
    assert_eq!(&echo, b"HELO x\r\n");
    eventually("counted as server-first", || {
        detected(&app, "opaque", "quiet_server_first") == 1.0
    });
}

#[test]
fn a_client_that_speaks_after_the_quiet_period_is_still_detected() {
    let ctl = MockController::start();
    let be = backend("books");
    let books = "books.default.svc.cluster.local:7000";
    ctl.endpoints(books, &[be.addr()]);
    ctl.profile(books, &profile(vec![]));
    // The original destination is an echo server: an HTTP request routed by
    // Host reaches `books` instead, and the probe to the echo server is
    // dropped without a byte.
    let server = TcpServer::start(echo);
    let env = config(ctl.addr()).set(config::DETECT_QUIET_TIMEOUT, "20ms");
    let app = proxy_to(server.addr, env);

    let mut s = connect(&app);
    eventually("the probe is open", || {
        metric(
            &app,
            "tcp_open_connections",
            &[("direction", "outbound"), ("peer", "dst")],
        ) == 1.0
    });
    let req = format!("GET / HTTP/1.1\r\nhost: {books}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("response");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("books\n"), "{text}");
    assert_eq!(detected(&app, "http1", "detected"), 1.0);
}

#[test]
fn a_silent_connection_settles_as_opaque_at_the_detect_timeout_and_idles_out() {
    let ctl = MockController::start();
    let server = TcpServer::start(echo);
    let env = config(ctl.addr())
        .set(config::DETECT_QUIET_TIMEOUT, "20ms")
        .set(config::OUTBOUND_DETECT_TIMEOUT, "100ms")
        .set(config::OPAQUE_IDLE_TIMEOUT, "300ms");
    let app = proxy_to(server.addr, env);

    let mut s = connect(&app);
    eventually("settled by the timeout", || {
        detected(&app, "opaque", "timeout") == 1.0
    });
    // A tunnel now: bytes go through, and the idle timeout closes it later.
    s.write_all(b"GET / HTTP/1.1\r\n").expect("write");
    let mut got = [0u8; 16];
    s.read_exact(&mut got).expect("echoed, not parsed");
    assert_eq!(&got, b"GET / HTTP/1.1\r\n");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
    eventually("both sides closed", || {
        metric(&app, "tcp_open_connections", &[("direction", "outbound")]) == 0.0
    });
}

#[test]
fn a_partial_request_line_at_the_detect_timeout_is_http() {
    let ctl = MockController::start();
    let server = TcpServer::start(echo);
    let env = config(ctl.addr())
        .set(config::OUTBOUND_DETECT_TIMEOUT, "100ms")
        .set(config::HEAD_TIMEOUT, "100ms");
    let app = proxy_to(server.addr, env);

    let mut s = connect(&app);
    s.write_all(b"GET /a-very-long-pa").expect("write");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("answer");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(detected(&app, "http1", "timeout"), 1.0);
}

#[test]
fn large_transfers_both_ways_keep_every_byte_in_order() {
    let ctl = MockController::start();
    let server = TcpServer::start(echo);
    let app = proxy_to(server.addr, config(ctl.addr()));

    // 16 MiB written while the echo comes back: each direction fills the
    // proxy's buffers and the sockets', so both sides wait on each other.
    const TOTAL: usize = 16 * 1024 * 1024;
    let data: Arc<Vec<u8>> = Arc::new((0..TOTAL).map(|i| (i * 31 % 251) as u8).collect());
    let mut s = connect(&app);
    let mut w = s.try_clone().expect("clone");
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        // The first byte is not HTTP: opaque from the start.
        w.write_all(b"\x01").expect("write");
        for chunk in sent.chunks(64 * 1024) {
            w.write_all(chunk).expect("write");
        }
        w.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut got = Vec::with_capacity(TOTAL + 1);
    s.read_to_end(&mut got).expect("read");
    writer.join().expect("writer");
    assert_eq!(got.len(), TOTAL + 1);
    assert!(got[1..] == data[..], "bytes differ");

    let bytes = |family: &str, peer: &str| {
        metric(&app, family, &[("direction", "outbound"), ("peer", peer)])
    };
    let n = (TOTAL + 1) as f64;
    eventually("bytes counted on both sides", || {
        bytes("tcp_read_bytes_total", "src") >= n
            && bytes("tcp_write_bytes_total", "dst") >= n
            && bytes("tcp_read_bytes_total", "dst") >= n
            && bytes("tcp_write_bytes_total", "src") >= n
    });
}

#[test]
fn an_unreachable_target_closes_the_client() {
    let ctl = MockController::start();
    let app = proxy_to(dead_port(), config(ctl.addr()));
    let mut s = connect(&app);
    let _ = s.write_all(b"\x00\x01");
    let mut got = Vec::new();
    // EOF or a reset, but no bytes and no hang.
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty());
    eventually("the client is closed", || {
        metric(&app, "tcp_open_connections", &[("direction", "outbound")]) == 0.0
    });
}

#[test]
fn a_profile_that_marks_the_target_opaque_skips_detection() {
    let ctl = MockController::start();
    let server = TcpServer::start(echo);
    let mut p = profile(vec![]);
    p.opaque_protocol = true;
    ctl.profile(&server.addr.to_string(), &p);
    let env = config(ctl.addr()).set(config::PROFILE_NETWORKS, "127.0.0.0/8");
    let app = proxy_to(server.addr, env);

    // The first connection detects while the profile is on its way; once it
    // is in, an HTTP request is carried as bytes, echoed back verbatim.
    let req = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    eventually("the request is echoed, not answered", || {
        round_trip(app.outbound_addr(), req) == req
    });
    assert!(detected(&app, "opaque", "opaque_profile") >= 1.0);
}

#[test]
fn an_opaque_connection_to_a_service_address_is_balanced_over_its_endpoints() {
    let ctl = MockController::start();
    let server = TcpServer::start(echo);
    // The original destination is a service address with nothing behind it
    // (as a ClusterIP is, to spoke): its profile names the service, whose
    // endpoint is the echo server.
    let service_ip = dead_port();
    let name = "echo.default.svc.cluster.local";
    let mut p = profile(vec![]);
    p.fully_qualified_name = name.to_string();
    ctl.profile(&service_ip.to_string(), &p);
    ctl.endpoints(&format!("{name}:{}", service_ip.port()), &[server.addr]);
    let env = config(ctl.addr()).set(config::PROFILE_NETWORKS, "127.0.0.0/8");
    let app = proxy_to(service_ip, env);

    // Until both answers are in, connections go to the service address
    // itself and are refused; then they reach the endpoint.
    eventually(
        "an opaque connection reaches the service's endpoint",
        || round_trip(app.outbound_addr(), b"\x00ping") == b"\x00ping",
    );
}

#[test]
fn inbound_connections_are_detected_too_and_opaque_ports_skip_detection() {
    let ctl = MockController::start();
    let server = TcpServer::start(echo);
    let banner_server = TcpServer::start(banner);
    let env = config(ctl.addr())
        .set(config::INBOUND_OPAQUE_PORTS, server.addr.port().to_string())
        .set(config::DETECT_QUIET_TIMEOUT, "50ms");
    let orig = Injected::default();
    let app = proxy_with_orig_dst(&env, Box::new(orig.clone()));
    let inbound = || {
        let s = TcpStream::connect(app.inbound_addr()).expect("connect");
        s.set_read_timeout(Some(patience())).expect("timeout");
        s
    };
    let counted = |protocol: &str, reason: &str| {
        metric(
            &app,
            "spoke_detect_total",
            &[
                ("direction", "inbound"),
                ("protocol", protocol),
                ("reason", reason),
            ],
        )
    };

    // An opaque port: even an HTTP request is carried as bytes.
    orig.set(Some(server.addr));
    let req = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    assert_eq!(round_trip(app.inbound_addr(), req), req);
    assert_eq!(counted("opaque", "opaque_port"), 1.0);

    // Another port: a server that speaks first is heard after the quiet
    // period, on the inbound side as on the outbound one.
    orig.set(Some(banner_server.addr));
    let mut s = inbound();
    let mut got = [0u8; 11];
    s.read_exact(&mut got).expect("banner");
    assert_eq!(&got, b"220 ready\r\n");
    drop(s);
    eventually("counted inbound, bytes too", || {
        counted("opaque", "quiet_server_first") == 1.0
            && metric(
                &app,
                "tcp_write_bytes_total",
                &[("direction", "inbound"), ("peer", "src")],
            ) >= (req.len() + 11) as f64
    });
}

#[test]
fn an_opaque_connect_that_fails_moves_to_another_endpoint_of_the_service() {
    let ctl = MockController::start();
    let server = TcpServer::start(echo);
    let service_ip = dead_port();
    let name = "db.default.svc.cluster.local";
    let mut p = profile(vec![]);
    p.fully_qualified_name = name.to_string();
    ctl.profile(&service_ip.to_string(), &p);
    // Two endpoints, one refusing: a connection the balancer sends there
    // moves to the other, since nothing was sent on the failed connect.
    let dead = dead_port();
    ctl.endpoints(
        &format!("{name}:{}", service_ip.port()),
        &[dead, server.addr],
    );
    let env = config(ctl.addr()).set(config::PROFILE_NETWORKS, "127.0.0.0/8");
    let app = proxy_to(service_ip, env);

    let through = || round_trip(app.outbound_addr(), b"\x00ping") == b"\x00ping";
    eventually("the service's endpoints are known", through);
    // From here on every connection gets through, wherever P2C sends it:
    // both endpoints cost the same until the refusing one fails, so each
    // connection goes there half the time until then (and P2C keeps it out
    // after, its failure counting as a slow response).
    for i in 0..30 {
        assert!(through(), "connection {i} was lost");
    }
    // And one did have to move.
    let moved = metric(
        &app,
        "spoke_connect_retries_total",
        &[("direction", "outbound"), ("reason", "refused")],
    );
    assert!(moved >= 1.0, "no connection met the refusing endpoint");
}
