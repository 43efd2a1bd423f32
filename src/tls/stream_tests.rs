//! Unit tests of `TlsStream`: a client and a server joined by two in-memory
//! one-way "sockets" of bounded room, driven the way the event loop drives
//! them (calls that answer `WouldBlock`, `on_ready` as the events).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::identity::creds::{Anchors, Documents};
use crate::identity::issuer::Issuer;
use crate::identity::Credentials;
use crate::tls::config::tests::creds_for;
use crate::tls::config::TlsConfigs;
use rustls_pki_types::CertificateDer;

const A: &str = "a.ns.serviceaccount.identity.linkerd.cluster.local";
const B: &str = "b.ns.serviceaccount.identity.linkerd.cluster.local";

/// One direction of a socket pair: at most `room` bytes in flight.
#[derive(Default)]
struct Wire {
    bytes: VecDeque<u8>,
    room: usize,
    closed: bool,
}

/// One end: reads one wire, writes the other.
struct End {
    rx: Rc<RefCell<Wire>>,
    tx: Rc<RefCell<Wire>>,
}

fn pair(room: usize) -> (End, End) {
    let ab = Rc::new(RefCell::new(Wire {
        room,
        ..Wire::default()
    }));
    let ba = Rc::new(RefCell::new(Wire {
        room,
        ..Wire::default()
    }));
    (
        End {
            rx: ba.clone(),
            tx: ab.clone(),
        },
        End { rx: ab, tx: ba },
    )
}

impl Read for End {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut w = self.rx.borrow_mut();
        if w.bytes.is_empty() {
            return if w.closed { Ok(0) } else { would_block() };
        }
        let n = buf.len().min(w.bytes.len());
        for (i, b) in w.bytes.drain(..n).enumerate() {
            buf[i] = b;
        }
        Ok(n)
    }
}

impl Write for End {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut w = self.tx.borrow_mut();
        let free = w.room - w.bytes.len();
        if free == 0 {
            return would_block();
        }
        let n = buf.len().min(free);
        w.bytes.extend(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HalfClose for End {
    fn half_close(&mut self) -> io::Result<()> {
        self.tx.borrow_mut().closed = true;
        Ok(())
    }
}

/// A connection's TLS state with its socket end, as `Transport` pairs them.
struct Peer {
    io: End,
    tls: TlsStream,
}

impl Peer {
    fn handshake(&mut self) -> io::Result<bool> {
        self.tls.handshake(&mut self.io)
    }
    fn on_ready(&mut self) {
        self.tls.on_ready(&mut self.io)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.tls.shutdown_write(&mut self.io)
    }
    fn is_idle_and_open(&mut self) -> bool {
        self.tls.is_idle_and_open(&mut self.io)
    }
    fn peer_identity(&self) -> Option<&Arc<str>> {
        self.tls.peer_identity()
    }
    fn is_established(&self) -> bool {
        self.tls.is_established()
    }
    fn wants_flush(&self) -> bool {
        self.tls.wants_flush()
    }
    fn get_ref(&self) -> &End {
        &self.io
    }
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tls.read(&mut self.io, buf)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tls.write_vectored(&mut self.io, &[IoSlice::new(buf)])
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Mesh {
    issuer: Issuer,
}

impl Mesh {
    fn new() -> Mesh {
        Mesh {
            issuer: Issuer::generate().unwrap(),
        }
    }

    fn configs(&self, name: &str) -> TlsConfigs {
        TlsConfigs::new(&creds_for(&self.issuer, name, Duration::from_secs(3600))).unwrap()
    }
}

/// A client (`A`, asking for `sni`, expecting `id`) and a server (`B`).
fn connect(
    client: &TlsConfigs,
    server: &TlsConfigs,
    sni: &str,
    id: &str,
    room: usize,
) -> (Peer, Peer) {
    let (c, mut s) = pair(room);
    let c = Peer {
        tls: TlsStream::client(client.client(), sni, id).unwrap(),
        io: c,
    };
    let tls = TlsStream::server(&mut s, server.server(), &[]).unwrap();
    (c, Peer { io: s, tls })
}

/// Runs both handshakes to the end, or to the first failure.
fn handshake(c: &mut Peer, s: &mut Peer) -> (io::Result<bool>, io::Result<bool>) {
    let (mut rc, mut rs) = (Ok(false), Ok(false));
    for _ in 0..100 {
        rc = c.handshake();
        let mut buf = [0u8; 16];
        rs = match s.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(s.is_established()),
            Ok(_) => Ok(true),
            Err(e) => Err(e),
        };
        if rc.is_err() || rs.is_err() || (matches!(rc, Ok(true)) && matches!(rs, Ok(true))) {
            break;
        }
    }
    (rc, rs)
}

#[test]
fn both_sides_learn_the_identity_the_other_proved() {
    let mesh = Mesh::new();
    let (a, b) = (mesh.configs(A), mesh.configs(B));
    let (mut c, mut s) = connect(&a, &b, B, B, 1 << 16);
    let (rc, rs) = handshake(&mut c, &mut s);
    assert!(rc.unwrap() && rs.unwrap());
    assert_eq!(s.peer_identity().map(|p| &**p), Some(A));
    assert_eq!(c.peer_identity().map(|p| &**p), Some(B));
    assert_eq!(c.tls.alpn(), None);
}

#[test]
fn a_server_without_the_expected_identity_fails_the_handshake() {
    let mesh = Mesh::new();
    let (a, b) = (mesh.configs(A), mesh.configs(B));
    // Asked for a name B's certificate does not carry.
    let (mut c, mut s) = connect(
        &a,
        &b,
        "c.ns.serviceaccount.identity.linkerd.cluster.local",
        "c.ns.serviceaccount.identity.linkerd.cluster.local",
        1 << 16,
    );
    let e = handshake(&mut c, &mut s).0.unwrap_err();
    assert!(is_tls_error(&e), "{e}");
    // Asked for B's name, but expected to prove another identity.
    let (mut c, mut s) = connect(&a, &b, B, A, 1 << 16);
    let e = handshake(&mut c, &mut s).0.unwrap_err();
    assert!(is_tls_error(&e), "{e}");
    assert!(e.to_string().contains(A), "{e}");
}

#[test]
fn an_untrusted_or_expired_server_certificate_fails_the_handshake() {
    let mesh = Mesh::new();
    let other = Mesh::new();
    let a = mesh.configs(A);
    let (mut c, mut s) = connect(&a, &other.configs(B), B, B, 1 << 16);
    assert!(is_tls_error(&handshake(&mut c, &mut s).0.unwrap_err()));

    let docs = Documents::generate(B).unwrap();
    let long_ago = SystemTime::now() - Duration::from_secs(7200);
    let leaf = mesh
        .issuer
        .issue(B, &docs.csr, Duration::from_secs(60), long_ago)
        .unwrap();
    let expired = Credentials {
        name: B.into(),
        key_pkcs8: docs.key_pkcs8.clone(),
        chain: vec![CertificateDer::from(leaf.der)],
        not_after: leaf.not_after,
        anchors: Anchors::from_pem(&mesh.issuer.cert_pem()).unwrap(),
    };
    let (mut c, mut s) = connect(&a, &TlsConfigs::new(&expired).unwrap(), B, B, 1 << 16);
    let e = handshake(&mut c, &mut s).0.unwrap_err();
    assert!(e.to_string().to_lowercase().contains("expired"), "{e}");
}

/// Writes `data[*at..]` until the stream would block.
fn write_some(t: &mut Peer, data: &[u8], at: &mut usize) {
    while *at < data.len() {
        match t.write(&data[*at..(*at + 10_000).min(data.len())]) {
            Ok(n) => *at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Reads, a few bytes at a time, until the stream would block.
fn read_some(t: &mut Peer, out: &mut Vec<u8>, piece: usize) -> bool {
    let mut buf = vec![0u8; piece];
    loop {
        match t.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn megabytes_cross_both_ways_through_small_sockets_and_slow_readers() {
    let mesh = Mesh::new();
    let (a, b) = (mesh.configs(A), mesh.configs(B));
    // A socket with room for less than one record, and readers taking 100
    // bytes at a time: rustls holds decrypted plaintext and encrypted output
    // between calls, and nothing may be left behind.
    let (mut c, mut s) = connect(&a, &b, B, B, 3000);
    let up: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let down: Vec<u8> = (0..2_000_000u32).map(|i| (i * 13 % 253) as u8).collect();
    let (mut up_at, mut down_at) = (0, 0);
    let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
    let (mut c_eof, mut s_eof) = (false, false);
    for _ in 0..2_000_000 {
        write_some(&mut c, &up, &mut up_at);
        write_some(&mut s, &down, &mut down_at);
        if up_at == up.len() {
            c.shutdown_write().unwrap();
        }
        if down_at == down.len() {
            s.shutdown_write().unwrap();
        }
        s_eof |= read_some(&mut s, &mut got_up, 100);
        c_eof |= read_some(&mut c, &mut got_down, 100);
        // The events: each side's socket may have room again.
        c.on_ready();
        s.on_ready();
        if c_eof && s_eof && !c.wants_flush() && !s.wants_flush() {
            break;
        }
    }
    assert!(c_eof && s_eof);
    assert!(got_up == up, "{} of {} bytes up", got_up.len(), up.len());
    assert!(
        got_down == down,
        "{} of {} bytes down",
        got_down.len(),
        down.len()
    );
    // close_notify went first, then each socket's write side closed.
    assert!(c.get_ref().tx.borrow().closed && s.get_ref().tx.borrow().closed);
}

#[test]
fn an_idle_connection_stays_usable_until_the_peer_closes() {
    let mesh = Mesh::new();
    let (a, b) = (mesh.configs(A), mesh.configs(B));
    let (mut c, mut s) = connect(&a, &b, B, B, 1 << 16);
    let (rc, rs) = handshake(&mut c, &mut s);
    assert!(rc.unwrap() && rs.unwrap());
    assert!(c.is_idle_and_open());
    // Bytes nobody asked for make it unusable.
    s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
    assert!(!c.is_idle_and_open());

    let (mut c, mut s) = connect(&a, &b, B, B, 1 << 16);
    let _ = handshake(&mut c, &mut s);
    s.shutdown_write().unwrap();
    assert!(!c.is_idle_and_open());
}
