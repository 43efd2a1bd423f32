//! Connection lifecycle through the real proxy: graceful shutdown, client
//! deadlines (idle, slow head, slow body), the connection cap, 100-continue,
//! TCP keepalive towards backends, and running out of file descriptors (in a
//! child process).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use spoke::config;
use spoke::devtools::{Client, Response};
use support::*;

const BOOKS: &str = "books.default.svc.cluster.local:7000";

/// Reads until EOF (or the timeout) and returns what arrived.
fn read_all(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(patience())).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn ready_proxy(
    env: spoke::config::MapEnv,
) -> (MockController, spoke::devtools::Backend, spoke::app::App) {
    let ctl = MockController::start();
    let be = backend_with(
        "books",
        Arc::new(|req| {
            let delay = if req.path == "/slow" { 300 } else { 0 };
            Response::new(200, "ok").with_delay(Duration::from_millis(delay))
        }),
    );
    ctl.endpoints(BOOKS, &[be.addr()]);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy(&env.set(config::DESTINATION_SVC_ADDR, ctl.addr().to_string()));
    assert_eq!(get(&app, BOOKS, "/").status, 200);
    (ctl, be, app)
}

#[test]
fn shutdown_lets_requests_in_flight_finish_and_closes_idle_connections() {
    let (_ctl, be, app) = ready_proxy(config("127.0.0.1:1".parse().unwrap()));
    let out = app.outbound_addr();
    let mut idle = Client::connect(out, Duration::from_secs(5)).unwrap();
    assert_eq!(idle.get(BOOKS, "/").unwrap().status, 200);

    let in_flight = std::thread::spawn(move || {
        let mut c = Client::connect(out, Duration::from_secs(10)).unwrap();
        let r = c.get(BOOKS, "/slow").unwrap();
        (r.status, r.header("connection").map(str::to_string))
    });
    eventually("the slow request reaches the backend", || {
        be.received().iter().any(|r| r.path == "/slow")
    });
    let shutdown = std::thread::spawn(move || app.shutdown());

    let (status, connection) = in_flight.join().unwrap();
    assert_eq!(status, 200, "the request in flight finished");
    assert_eq!(connection.as_deref(), Some("close"));
    assert!(
        idle.is_closed(),
        "the idle keep-alive connection was closed"
    );
    assert_eq!(shutdown.join().unwrap(), Ok(()));
    assert!(TcpStream::connect(out).is_err(), "no longer accepting");
}

#[test]
fn idle_and_slow_clients_are_cut_off() {
    let env = config("127.0.0.1:1".parse().unwrap())
        .set(config::IDLE_TIMEOUT, "200ms")
        .set(config::HEAD_TIMEOUT, "200ms")
        .set(config::BODY_TIMEOUT, "200ms");
    let (_ctl, be, app) = ready_proxy(env);

    // Idle keep-alive: closed without a response.
    let mut idle = TcpStream::connect(app.outbound_addr()).unwrap();
    assert_eq!(read_all(&mut idle), "");

    // Slowloris: half a head, then nothing.
    let mut slow = TcpStream::connect(app.outbound_addr()).unwrap();
    slow.write_all(format!("GET / HTTP/1.1\r\nhost: {BOOKS}\r\nx-slow: ").as_bytes())
        .unwrap();
    let reply = read_all(&mut slow);
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");

    // A body that never finishes.
    let hits = be.hits();
    let mut body = TcpStream::connect(app.outbound_addr()).unwrap();
    body.write_all(
        format!("POST / HTTP/1.1\r\nhost: {BOOKS}\r\ncontent-length: 100\r\n\r\nabc").as_bytes(),
    )
    .unwrap();
    let reply = read_all(&mut body);
    assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
    assert_eq!(
        be.hits(),
        hits,
        "the backend never answered an incomplete request"
    );
    assert_eq!(get(&app, BOOKS, "/").status, 200, "still serving");
}

#[test]
fn the_connection_cap_pauses_accepting_until_one_closes() {
    let env = config("127.0.0.1:1".parse().unwrap()).set(config::MAX_CONNECTIONS, "2");
    let (_ctl, _be, app) = ready_proxy(env);
    let out = app.outbound_addr();
    let mut a = Client::connect(out, Duration::from_secs(5)).unwrap();
    let mut b = Client::connect(out, Duration::from_secs(5)).unwrap();
    assert_eq!(a.get(BOOKS, "/").unwrap().status, 200);
    assert_eq!(b.get(BOOKS, "/").unwrap().status, 200);

    // The kernel completes the handshake, but the proxy does not accept it.
    let mut third = TcpStream::connect(out).unwrap();
    third
        .write_all(
            format!("GET / HTTP/1.1\r\nhost: {BOOKS}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(third.read(&mut buf).is_err(), "not served while at the cap");

    drop(a);
    let reply = read_all(&mut third);
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert_eq!(b.get(BOOKS, "/").unwrap().status, 200);
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (_ctl, be, app) = ready_proxy(config("127.0.0.1:1".parse().unwrap()));
    let mut s = TcpStream::connect(app.outbound_addr()).unwrap();
    s.set_read_timeout(Some(patience())).unwrap();
    s.write_all(
        format!("POST /up HTTP/1.1\r\nhost: {BOOKS}\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(read_head(&mut s), "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").unwrap();
    let mut c = Client::connect(app.outbound_addr(), Duration::from_secs(5)).unwrap();
    drop(c.get(BOOKS, "/"));
    eventually("the body reaches the backend", || {
        be.received()
            .iter()
            .any(|r| r.path == "/up" && r.body == b"hello")
    });
}

/// A port that was free a moment ago (for the child process, whose ports
/// cannot be read back).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn running_out_of_descriptors_sheds_load_without_spinning_or_crashing() {
    let be = backend("books");
    let dir = std::env::temp_dir().join(format!("spoke-fd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = dir.join("mesh.yaml");
    std::fs::write(
        &yaml,
        format!(
            "apiVersion: spoke.dev/v1alpha1\nkind: Endpoints\nmetadata:\n  name: books.default.svc.cluster.local\nspec:\n  ports:\n  - port: 7000\n    addresses:\n    - {}\n",
            be.addr()
        ),
    )
    .unwrap();
    let (out, admin, inbound) = (free_port(), free_port(), free_port());
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\"")
        .arg(env!("CARGO_BIN_EXE_spoke"))
        .env(config::CONTROLLER_CONFIG, &yaml)
        .env(config::OUTBOUND_LISTEN_ADDR, out.to_string())
        .env(config::ADMIN_LISTEN_ADDR, admin.to_string())
        .env(config::INBOUND_LISTEN_ADDR, inbound.to_string())
        .env(config::LOG, "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the proxy serves", || {
        spoke::devtools::get(out, BOOKS, "/").is_ok_and(|r| r.status == 200)
    });

    // Far more connections than descriptors: the kernel queues them, the
    // proxy accepts what it can and backs off on the rest.
    let flood: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(out).ok())
        .collect();
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    std::thread::sleep(Duration::from_millis(500));
    let spent_ticks = cpu() - before;
    assert!(
        spent_ticks < 25,
        "the proxy spun while out of descriptors ({spent_ticks} ticks in 0.5s)"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the proxy is still running"
    );
    drop(flood);
    eventually("serves again once descriptors free up", || {
        spoke::devtools::get(out, BOOKS, "/").is_ok_and(|r| r.status == 200)
    });

    // SIGTERM drains and exits 0.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pipelined_requests_are_answered_in_order_even_after_a_half_close() {
    let (_ctl, be, app) = ready_proxy(config("127.0.0.1:1".parse().unwrap()));
    let mut s = TcpStream::connect(app.outbound_addr()).unwrap();
    let mut all = Vec::new();
    for path in ["/one", "/slow", "/three"] {
        all.extend_from_slice(format!("GET {path} HTTP/1.1\r\nhost: {BOOKS}\r\n\r\n").as_bytes());
    }
    s.write_all(&all).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let reply = read_all(&mut s);
    assert_eq!(reply.matches("HTTP/1.1 200 ").count(), 3, "{reply}");
    let paths: Vec<String> = be
        .received()
        .iter()
        .skip(1)
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(paths, ["/one", "/slow", "/three"]);
}

#[test]
fn an_upgrade_becomes_a_byte_tunnel_after_101() {
    let (addr, upstream) = tunnel_upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n",
    );
    let (_ctl, _app, mut s) = proxied_to(addr);
    s.write_all(
        format!("GET /ws HTTP/1.1\r\nhost: {BOOKS}\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\nearly").as_bytes(),
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"early") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    assert!(text.contains("upgrade: echo\r\n"), "{text}");
    s.write_all(b" and late").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let rest = read_all(&mut s);
    assert_eq!(rest, " and late");
    let head = upstream.join().unwrap();
    assert!(
        head.contains("upgrade: echo\r\nconnection: upgrade\r\n"),
        "{head}"
    );
}

#[test]
fn connect_becomes_a_byte_tunnel_after_a_2xx() {
    let (addr, upstream) = tunnel_upstream(b"HTTP/1.1 200 Connection Established\r\n\r\n");
    let (_ctl, _app, mut s) = proxied_to(addr);
    s.write_all(format!("CONNECT {BOOKS} HTTP/1.1\r\nhost: {BOOKS}\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(
        read_head(&mut s),
        "HTTP/1.1 200 Connection Established\r\n\r\n"
    );
    s.write_all(b"\x16\x03\x01 opaque bytes").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let echoed = read_all(&mut s);
    assert_eq!(echoed, "\u{16}\u{3}\u{1} opaque bytes");
    let head = upstream.join().unwrap();
    assert!(
        head.starts_with(&format!("CONNECT {BOOKS} HTTP/1.1\r\n")),
        "{head}"
    );
}

/// A raw upstream for one connection: reads a head, answers `reply`, then
/// echoes bytes until EOF and passes the EOF back. Returns the head it read.
fn tunnel_upstream(reply: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(patience())).unwrap();
        let head = read_head(&mut s);
        s.write_all(reply).unwrap();
        let mut buf = [0u8; 1024];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        head
    });
    (addr, t)
}

/// A proxy whose books destination is the raw upstream at `addr`, and a
/// client connection to it.
fn proxied_to(addr: SocketAddr) -> (MockController, spoke::app::App, TcpStream) {
    let ctl = MockController::start();
    ctl.endpoints(BOOKS, &[addr]);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy(&config(ctl.addr()));
    let s = TcpStream::connect(app.outbound_addr()).unwrap();
    s.set_read_timeout(Some(patience())).unwrap();
    (ctl, app, s)
}

/// Reads one byte at a time up to the end of a head (so nothing after it is
/// consumed) and returns it.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).unwrap();
        assert!(
            n > 0,
            "closed before a complete head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn a_closed_connections_deadline_never_fires_on_the_one_that_reuses_its_slot() {
    let env = config("127.0.0.1:1".parse().unwrap()).set(config::IDLE_TIMEOUT, "300ms");
    let (_ctl, _be, app) = ready_proxy(env);
    let closed = || metric(&app, "tcp_close_total", &[("peer", "src")]);
    let before = closed();
    // A serves one request and goes away, leaving its idle deadline behind.
    let mut a = Client::connect(app.outbound_addr(), Duration::from_secs(5)).unwrap();
    assert_eq!(a.get(BOOKS, "/").unwrap().status, 200);
    drop(a);
    eventually("the proxy closed A", || closed() > before);
    // B takes A's slot and is never idle for 300ms; pacing its requests
    // 100ms apart spans the moment A's deadline comes due.
    let mut b = Client::connect(app.outbound_addr(), Duration::from_secs(5)).unwrap();
    for _ in 0..6 {
        assert_eq!(
            b.get(BOOKS, "/").unwrap().status,
            200,
            "B was closed as idle"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The keepalive timer of spoke's pooled connection to `backend`, from the
/// kernel's socket table (`/proc/net/tcp`, IPv4): `Some(seconds until it
/// fires)` when armed (timer kind 2, `sk_timer`, which on an established TCP
/// socket is keepalive), `None` when the connection has no timer running.
fn keepalive_timer(backend: SocketAddr) -> Option<Option<f64>> {
    let SocketAddr::V4(v4) = backend else {
        panic!("IPv4 backend expected")
    };
    let ip = u32::from_ne_bytes(v4.ip().octets());
    let remote = format!("{ip:08X}:{:04X}", v4.port());
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let line = table.lines().skip(1).find(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(2) == Some(&remote.as_str()) && f.get(3) == Some(&"01")
    })?;
    let timer = line.split_whitespace().nth(5)?;
    let (kind, when) = timer.split_once(':')?;
    let ticks = u64::from_str_radix(when, 16).ok()?;
    Some((kind == "02").then_some(ticks as f64 / 100.0))
}

#[test]
fn upstream_connections_probe_a_silent_backend() {
    for (setting, fires_within) in [
        (None, Some(10.0)),
        (Some("3s"), Some(3.0)),
        (Some("0"), None),
    ] {
        let mut env = config("127.0.0.1:1".parse().unwrap());
        if let Some(v) = setting {
            env = env.set(config::OUTBOUND_CONNECT_KEEPALIVE, v);
        }
        let (_ctl, be, app) = ready_proxy(env);
        // The request's connection now sits idle in the pool.
        match fires_within {
            Some(limit) => {
                let secs = eventually_some("a keepalive timer on the upstream connection", || {
                    keepalive_timer(be.addr()).flatten()
                });
                assert!(secs <= limit, "{setting:?}: keepalive fires in {secs} s");
            }
            None => {
                let timer =
                    eventually_some("the upstream connection", || keepalive_timer(be.addr()));
                assert_eq!(timer, None, "{setting:?}: keepalive is off");
            }
        }
        app.shutdown().unwrap();
    }
}
