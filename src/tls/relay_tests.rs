//! The relay over real loopback sockets: a client relay talks to a server
//! relay (terminator) in front of a plaintext echo server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use super::*;
use crate::identity::issuer::Issuer;
use crate::tls::config::control_client;
use crate::tls::config::tests::creds_for;
use crate::tls::TlsConfigs;

const SERVER: &str = "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local";
const CLIENT: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const LIFETIME: Duration = Duration::from_secs(600);
const TIMEOUT: Duration = Duration::from_secs(5);

#[track_caller]
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A plaintext echo server answering one connection, on its own thread.
fn echo() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (addr, t)
}

/// A terminator for one connection: TLS as `name` (issued by `issuer`),
/// relayed to `backend`. Returns its address; the relay joins `relays`.
fn terminator(issuer: &Issuer, name: &str, backend: SocketAddr, relays: &Relays) -> SocketAddr {
    let server = TlsConfigs::new(&creds_for(issuer, name, LIFETIME))
        .unwrap()
        .server();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let relays = relays.clone();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let plain = std::net::TcpStream::connect(backend).unwrap();
        plain.set_nonblocking(true).unwrap();
        // A refused client fails the server's handshake too.
        let _ = serve(
            s,
            server,
            TcpStream::from_std(plain),
            TIMEOUT,
            "test-tls-srv",
            &relays,
        );
    });
    addr
}

#[test]
fn bytes_cross_both_relays_and_closing_ends_them() {
    let ca = Issuer::generate().unwrap();
    let workload = creds_for(&ca, CLIENT, LIFETIME);
    let relays = Relays::new();
    let (backend, echo_thread) = echo();
    let at = terminator(&ca, SERVER, backend, &relays);
    let stream = std::net::TcpStream::connect(at).unwrap();
    let config = control_client(&workload.anchors, Some(&workload)).unwrap();
    let mut grpc = client(stream, config, SERVER, TIMEOUT, "test-tls", &relays).unwrap();
    // More than both relays buffer, both ways at once.
    let sent: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = grpc.try_clone().unwrap();
    let to_send = sent.clone();
    let w = std::thread::spawn(move || writer.write_all(&to_send).unwrap());
    let mut got = vec![0u8; sent.len()];
    grpc.read_exact(&mut got).unwrap();
    w.join().unwrap();
    assert!(got == sent, "the echo differs");
    // gRPC closing its end ends the client relay; the terminator then sees
    // close_notify and ends too, and the echo server its connection.
    drop(grpc);
    eventually("both relays to end", || relays.is_empty());
    echo_thread.join().unwrap();
}

#[test]
fn a_server_with_the_wrong_name_or_an_untrusted_ca_is_refused() {
    let ca = Issuer::generate().unwrap();
    let workload = creds_for(&ca, CLIENT, LIFETIME);
    let relays = Relays::new();
    let config = control_client(&workload.anchors, None).unwrap();

    let (backend, _echo) = echo();
    let wrong = "linkerd-impostor.linkerd.serviceaccount.identity.linkerd.cluster.local";
    let at = terminator(&ca, wrong, backend, &relays);
    let stream = std::net::TcpStream::connect(at).unwrap();
    let e = client(stream, config.clone(), SERVER, TIMEOUT, "test-tls", &relays).unwrap_err();
    assert!(crate::tls::is_tls_error(&e), "{e}");
    assert!(e.to_string().contains(SERVER), "{e}");
    assert!(e.to_string().contains("not valid for name"), "{e}");

    let other_ca = Issuer::generate().unwrap();
    let (backend, _echo) = echo();
    let at = terminator(&other_ca, SERVER, backend, &relays);
    let stream = std::net::TcpStream::connect(at).unwrap();
    let e = client(stream, config, SERVER, TIMEOUT, "test-tls", &relays).unwrap_err();
    assert!(crate::tls::is_tls_error(&e), "{e}");
    // Both test CAs have the same subject: the chain fails on its signature.
    assert!(e.to_string().contains("invalid peer certificate"), "{e}");
    relays.shutdown();
}

#[test]
fn a_silent_server_times_the_handshake_out() {
    let ca = Issuer::generate().unwrap();
    let config = control_client(&creds_for(&ca, CLIENT, LIFETIME).anchors, None).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let relays = Relays::new();
    let e = client(
        stream,
        config,
        SERVER,
        Duration::from_millis(100),
        "test-tls",
        &relays,
    )
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(!crate::tls::is_tls_error(&e));
    assert!(relays.is_empty());
}

#[test]
fn shutdown_stops_idle_relays() {
    let ca = Issuer::generate().unwrap();
    let workload = creds_for(&ca, CLIENT, LIFETIME);
    let relays = Relays::new();
    let (backend, echo_thread) = echo();
    let at = terminator(&ca, SERVER, backend, &relays);
    let stream = std::net::TcpStream::connect(at).unwrap();
    let config = control_client(&workload.anchors, Some(&workload)).unwrap();
    let grpc = client(stream, config, SERVER, TIMEOUT, "test-tls", &relays).unwrap();
    eventually("both relays", || relays.len() == 2);
    // Nothing is closed, yet shutdown returns with both joined.
    relays.shutdown();
    assert!(relays.is_empty());
    drop(grpc);
    echo_thread.join().unwrap();
}
