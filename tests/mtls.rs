//! Mutual TLS between two spokes in one process: a standalone embedded
//! controller with its own CA certifies both (`web` and `books`); the client
//! app talks to spoke A's outbound side, A reaches spoke B's inbound side
//! over mTLS because discovery says B's address is `books`, and B hands the
//! plaintext request to app B with `l5d-client-id` set to A's identity.
//! Also: a wrong expected identity, a foreign SNI passed through untouched,
//! plaintext clients on the inbound side, multi-MiB bodies both ways to a
//! slow reader, and certificates rotating under steady traffic.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use spoke::app::App;
use spoke::config::MapEnv;
use spoke::devtools::Response;
use spoke::identity::creds::Documents;
use support::echo;
use support::mesh::*;
use support::*;

/// App B's answer: the client identity it was told.
fn echo_client_id() -> spoke::devtools::Handler {
    Arc::new(|req| {
        Response::new(
            200,
            req.header("l5d-client-id").unwrap_or("none").to_owned(),
        )
    })
}

#[test]
fn two_spokes_speak_mtls_and_the_application_sees_the_client_identity() {
    let m = mesh(
        "basic",
        Duration::from_secs(3600),
        BOOKS_ID,
        echo_client_id(),
    );
    let r = eventually_some("a request over mTLS", || {
        let r = get(m.a(), BOOKS, "/");
        (r.status == 200).then_some(r)
    });
    assert_eq!(r.text(), WEB);
    // A client's own claim never gets through: the header is the proof's.
    let mut c = spoke::devtools::Client::connect(m.a().outbound_addr(), patience()).unwrap();
    let forged = format!(
        "GET / HTTP/1.1\r\nhost: {BOOKS}\r\nl5d-client-id: admin.default.serviceaccount.identity.linkerd.cluster.local\r\n\r\n"
    );
    let r = c.send_raw(forged.as_bytes(), false).unwrap();
    assert_eq!((r.status, r.text()), (200, WEB.to_owned()));
    let last = m.app_b.received().pop().unwrap();
    let ids: Vec<_> = last
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("l5d-client-id"))
        .collect();
    assert_eq!(ids.len(), 1, "one l5d-client-id: {ids:?}");
    assert!(
        metric(
            m.b(),
            "spoke_detect_total",
            &[
                ("direction", "inbound"),
                ("protocol", "tls"),
                ("reason", "terminated")
            ]
        ) >= 1.0
    );
    // The admin server tells how each endpoint is reached.
    let doc = spoke::devtools::get(m.a().admin_addr(), "localhost", "/destinations").unwrap();
    assert_eq!(doc.header("content-type"), Some("application/json"));
    let doc = doc.text();
    assert!(
        doc.contains(&format!(
            "\"local_identity\": \"{WEB}\", \"tls\": \"ready\""
        )),
        "{doc}"
    );
    let books = format!(
        "{{\"direction\": \"outbound\", \"name\": \"{BOOKS}\", \"source\": \"controller\", \
         \"endpoints\": [{{\"addr\": \"{}\", \"protocol_hint\": \"h2\", \"mtls\": true, \
         \"server_id\": \"{BOOKS_ID}\", \"server_name\": \"{BOOKS_ID}\"}}]}}",
        m.b().inbound_addr()
    );
    assert!(doc.contains(&books), "{doc}");
    let doc = spoke::devtools::get(m.b().admin_addr(), "localhost", "/destinations")
        .unwrap()
        .text();
    assert!(doc.contains("\"no_tls_reason\": \"loopback\""), "{doc}");
    // A plaintext client of the inbound side is still served, with no
    // identity (and no claimed one).
    let plain = spoke::devtools::Client::connect(m.b().inbound_addr(), patience())
        .unwrap()
        .send_raw(forged.as_bytes(), false)
        .unwrap();
    assert_eq!((plain.status, plain.text()), (200, "none".to_owned()));
    // A service discovery names no identity for: A reaches it in plaintext.
    let mut yaml = mesh_yaml(&[m.b().inbound_addr()], BOOKS_ID);
    yaml.push_str(&format!(
        "---\napiVersion: spoke.dev/v1alpha1\nkind: Endpoints\nmetadata:\n  \
         name: plain.default.svc.cluster.local\nspec:\n  ports:\n  - port: 7000\n    \
         addresses:\n    - {}\n",
        m.app_b.addr()
    ));
    std::fs::write(m.dir.join("mesh.yaml"), yaml).unwrap();
    eventually("a request in plaintext", || {
        let r = get(m.a(), PLAIN, "/");
        r.status == 200 && r.text() == "none"
    });
    tls_labels_say_who_spoke_to_whom(&m);
}

const PLAIN: &str = "plain.default.svc.cluster.local:7000";

/// Linkerd's TLS labels after [`two_spokes_speak_mtls_and_the_application_sees_the_client_identity`]:
/// A's requests and its connection to B are mTLS to B's identity, its
/// client's connection is loopback; B's requests and accepted connection
/// carry A's identity, the plaintext client `no_tls_from_remote`, and B's
/// connection to its application is loopback.
fn tls_labels_say_who_spoke_to_whom(m: &Mesh) {
    let a = metrics(m.a());
    let b = metrics(m.b());
    let mtls_to_b = [
        ("direction", "outbound"),
        ("authority", BOOKS),
        ("tls", "true"),
        ("server_id", BOOKS_ID),
    ];
    assert!(has_series(&a, "request_total", &mtls_to_b), "{a}");
    assert!(metric(m.a(), "request_total", &mtls_to_b) >= 2.0, "{a}");
    let ok = [("status_code", "200"), ("classification", "success")];
    let ok_over_mtls: Vec<_> = mtls_to_b.iter().chain(&ok).copied().collect();
    assert!(has_series(&a, "response_total", &ok_over_mtls), "{a}");
    let dst = [
        ("direction", "outbound"),
        ("peer", "dst"),
        ("tls", "true"),
        ("server_id", BOOKS_ID),
    ];
    assert!(has_series(&a, "tcp_open_total", &dst), "{a}");
    assert!(metric(m.a(), "tcp_open_total", &dst) >= 1.0, "{a}");
    assert!(metric(m.a(), "tcp_write_bytes_total", &dst) > 0.0, "{a}");
    let from_app = [
        ("direction", "outbound"),
        ("peer", "src"),
        ("tls", "no_identity"),
        ("no_tls_reason", "loopback"),
    ];
    assert!(has_series(&a, "tcp_open_total", &from_app), "{a}");
    let unmeshed = [
        ("tls", "no_identity"),
        ("no_tls_reason", "not_provided_by_service_discovery"),
    ];
    let plain_to: Vec<_> = [("direction", "outbound"), ("authority", PLAIN)]
        .into_iter()
        .chain(unmeshed)
        .collect();
    assert!(has_series(&a, "request_total", &plain_to), "{a}");
    let plain_dst: Vec<_> = [("direction", "outbound"), ("peer", "dst")]
        .into_iter()
        .chain(unmeshed)
        .collect();
    assert!(has_series(&a, "tcp_open_total", &plain_dst), "{a}");
    assert_eq!(
        metric(m.a(), "request_total", &[("authority", BOOKS), unmeshed[1]]),
        0.0,
        "no request to books went in plaintext: {a}"
    );

    let from_a = [
        ("direction", "inbound"),
        ("tls", "true"),
        ("client_id", WEB),
    ];
    assert!(metric(m.b(), "request_total", &from_a) >= 2.0, "{b}");
    assert!(metric(m.b(), "response_total", &from_a) >= 2.0, "{b}");
    let src: Vec<_> = [("direction", "inbound"), ("peer", "src")]
        .into_iter()
        .chain(from_a.into_iter().skip(1))
        .collect();
    assert!(has_series(&b, "tcp_open_total", &src), "{b}");
    let plaintext = [
        ("tls", "no_identity"),
        ("no_tls_reason", "no_tls_from_remote"),
    ];
    let plain_src: Vec<_> = [("direction", "inbound"), ("peer", "src")]
        .into_iter()
        .chain(plaintext)
        .collect();
    assert!(has_series(&b, "tcp_open_total", &plain_src), "{b}");
    assert_eq!(metric(m.b(), "tcp_open_total", &plain_src), 1.0, "{b}");
    let plain_requests: Vec<_> = [("direction", "inbound")]
        .into_iter()
        .chain(plaintext)
        .collect();
    assert_eq!(metric(m.b(), "request_total", &plain_requests), 1.0, "{b}");
    let to_app = [
        ("direction", "inbound"),
        ("peer", "dst"),
        ("tls", "no_identity"),
        ("no_tls_reason", "loopback"),
    ];
    assert!(has_series(&b, "tcp_open_total", &to_app), "{b}");
}

/// A TLS server that is not the workload it claims to be: it presents
/// `chain` (for whatever name is asked) to every connection, until dropped.
struct Impostor {
    addr: SocketAddr,
    /// Connections it has accepted.
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Impostor {
    fn start(chain: Vec<rustls_pki_types::CertificateDer<'static>>, key: Vec<u8>) -> Impostor {
        let provider = spoke::tls::provider::default_provider();
        let cfg = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, rustls_pki_types::PrivateKeyDer::Pkcs8(key.into()))
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = hits.clone();
        let thread = std::thread::spawn(move || {
            for sock in listener.incoming() {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                seen.fetch_add(1, Ordering::Relaxed);
                let Ok(mut sock) = sock else { continue };
                let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
                let mut conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                // The client gives up on it; the error is expected.
                let _ = conn.complete_io(&mut sock);
            }
        });
        Impostor {
            addr,
            hits,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Points `books` at `impostor` (expected to prove `BOOKS_ID`) and asks
/// for it through spoke A until the impostor was reached: the answer.
fn books_at(m: &Mesh, impostor: &Impostor) -> spoke::devtools::Reply {
    let yaml = mesh_yaml(&[impostor.addr], BOOKS_ID);
    std::fs::write(m.dir.join("mesh.yaml"), yaml).unwrap();
    eventually_some("the endpoint moved", || {
        let r = get(m.a(), BOOKS, "/");
        (impostor.hits.load(Ordering::Relaxed) > 0).then_some(r)
    })
}

#[test]
fn the_inbound_side_agrees_on_alpn_h2_or_http11_with_a_client_that_offers_it() {
    let m = mesh(
        "alpn",
        Duration::from_secs(3600),
        BOOKS_ID,
        echo_client_id(),
    );
    let ca = m.dir.join("anchors.pem");
    std::fs::write(&ca, &m.anchors).unwrap();
    let (addr, ca) = (m.b().inbound_addr().to_string(), ca.display().to_string());
    // A TLS client with no client certificate that asks for a protocol gets
    // the one it prefers of spoke's and is served in it (over HTTP/2 its
    // request is an upgraded HTTP/1 one, for app B speaks HTTP/1).
    for (offer, agreed) in [
        ("h2,http/1.1", "h2"),
        ("http/1.1", "http/1.1"),
        ("h2", "h2"),
    ] {
        let out = python_client("tls_alpn.py", &[&addr, BOOKS_ID, &ca, offer, BOOKS, "/"]);
        assert_eq!(
            out,
            format!("alpn={agreed} status=200 body=none"),
            "offered {offer}"
        );
    }
    let h2 = [("direction", "inbound"), ("protocol", "h2")];
    assert!(
        metric(m.b(), "spoke_detect_total", &h2) >= 2.0,
        "{}",
        metrics(m.b())
    );
}

#[test]
fn a_port_that_requires_an_identity_serves_mtls_and_refuses_plaintext() {
    let var = spoke::config::INBOUND_REQUIRE_IDENTITY_PORTS;
    let m = mesh_with(
        "require",
        Duration::from_secs(3600),
        BOOKS_ID,
        echo_client_id(),
        Some(var),
        None,
    );
    let r = eventually_some("a request over mTLS", || {
        let r = get(m.a(), BOOKS, "/");
        (r.status == 200).then_some(r)
    });
    assert_eq!(r.text(), WEB);
    let hits = m.app_b.hits();
    // Plaintext HTTP to the same port: 403, said why.
    let plain = spoke::devtools::get(m.b().inbound_addr(), BOOKS, "/").unwrap();
    assert_eq!(plain.status, 403);
    assert!(
        plain
            .header("l5d-proxy-error")
            .is_some_and(|e| e.contains("identity")),
        "{:?}",
        plain.header("l5d-proxy-error")
    );
    // Plaintext TCP: closed, nothing forwarded.
    let mut raw = TcpStream::connect(m.b().inbound_addr()).unwrap();
    raw.set_read_timeout(Some(patience())).unwrap();
    raw.write_all(b"\x00\x01binary protocol\r\n").unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(m.app_b.hits(), hits, "nothing reached the application");
    assert_eq!(
        metric(
            m.b(),
            "spoke_connections_refused_total",
            &[("direction", "inbound"), ("reason", "no_identity")]
        ),
        2.0
    );
}

#[test]
fn an_endpoint_that_cannot_prove_the_expected_identity_is_refused() {
    let m = mesh(
        "wrong-id",
        Duration::from_secs(3600),
        BOOKS_ID,
        echo_client_id(),
    );
    eventually("a request over mTLS", || {
        get(m.a(), BOOKS, "/").status == 200
    });
    // A certificate from the mesh's own CA, but for another workload.
    let docs = Documents::generate(WEB).unwrap();
    let leaf =
        m.ca.issue(
            WEB,
            &docs.csr,
            Duration::from_secs(3600),
            std::time::SystemTime::now(),
        )
        .unwrap();
    let other = Impostor::start(vec![leaf.der.into()], docs.key_pkcs8.to_vec());
    // A certificate for the right name, from a CA the mesh does not trust.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec![BOOKS_ID.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let untrusted = Impostor::start(vec![cert.der().clone()], key.serialize_der());
    for impostor in [&other, &untrusted] {
        let r = books_at(&m, impostor);
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(
            r.header("l5d-proxy-error")
                .is_some_and(|e| e.contains("TLS")),
            "{:?}",
            r.header("l5d-proxy-error")
        );
    }
}

/// A TLS server for `name` with a self-signed certificate (the
/// application's own TLS, which the mesh must not touch), echoing what it
/// reads; and a client config trusting it.
fn app_tls(name: &str) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = spoke::tls::provider::default_provider();
    let der = rustls_pki_types::CertificateDer::from(cert.der().to_vec());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

#[test]
fn a_client_hello_for_another_name_passes_through_to_the_application() {
    let m = mesh(
        "foreign",
        Duration::from_secs(3600),
        BOOKS_ID,
        echo_client_id(),
    );
    let (server_cfg, client_cfg) = app_tls("app.example.com");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app_addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(server_cfg).unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        let mut got = vec![0u8; 5];
        tls.read_exact(&mut got).unwrap();
        tls.write_all(&got).unwrap();
        tls.flush().unwrap();
    });
    // Spoke B's inbound side, this connection redirected to the app.
    let injected = Injected::to(app_addr);
    let b2 = proxy_with_orig_dst(
        &spoke_env(
            &m.dir,
            m.ctl.as_ref().unwrap().addr(),
            &m.anchors,
            BOOKS_ID,
            false,
        ),
        Box::new(injected),
    );
    eventually("spoke certified", || ready(&b2));
    let mut sock = TcpStream::connect(b2.inbound_addr()).unwrap();
    sock.set_read_timeout(Some(patience())).unwrap();
    let name = rustls_pki_types::ServerName::try_from("app.example.com").unwrap();
    let mut conn = rustls::ClientConnection::new(client_cfg, name).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    tls.read_exact(&mut back).unwrap();
    // The application's own certificate verified end to end: nothing in
    // between terminated it.
    assert_eq!(&back, b"hello");
    echo.join().unwrap();
    drop(conn);
    drop(sock);
    assert!(
        metric(
            &b2,
            "spoke_detect_total",
            &[
                ("direction", "inbound"),
                ("protocol", "tls"),
                ("reason", "passthrough")
            ]
        ) >= 1.0
    );
    // Linkerd's label for a connection passed through by its SNI.
    let passed = [
        ("direction", "inbound"),
        ("peer", "src"),
        ("tls", "opaque"),
        ("sni", "app.example.com"),
    ];
    let text = metrics(&b2);
    assert!(has_series(&text, "tcp_open_total", &passed), "{text}");
    b2.shutdown().unwrap();
}

/// An `add` of `addr`, meshed as `identity`, opaque, whose proxy takes
/// Linkerd's opaque transport on `transport_port`.
fn opaque_endpoint(addr: SocketAddr, identity: &str, transport_port: u16) -> pb::Update {
    let mut transport = pb::protocol_hint::OpaqueTransport::new();
    transport.inbound_port = u32::from(transport_port);
    let mut hint = pb::ProtocolHint::new();
    hint.set_opaque(pb::protocol_hint::Opaque::new());
    hint.opaque_transport = Some(transport).into();
    let mut wa = meshed_addr(addr, identity);
    wa.protocol_hint = Some(hint).into();
    let mut set = pb::WeightedAddrSet::new();
    set.addrs.push(wa);
    let mut update = pb::Update::new();
    update.set_add(set);
    update
}

/// `addr` as discovery names a meshed endpoint: with `identity` as both the
/// identity and the server name, as Linkerd's controller fills them.
fn meshed_addr(addr: SocketAddr, identity: &str) -> pb::WeightedAddr {
    let mut name = pb::tls_identity::DnsLikeIdentity::new();
    name.name = identity.to_owned();
    let mut tls = pb::TlsIdentity::new();
    tls.set_dns_like_identity(name.clone());
    tls.server_name = Some(name).into();
    let mut wa = pb::WeightedAddr::new();
    wa.addr = Some(spoke::discovery::convert::to_tcp_address(addr)).into();
    wa.weight = 10_000;
    wa.tls_identity = Some(tls).into();
    wa
}

impl Mesh {
    /// A spoke certified as `name` by the mesh's controller, with discovery
    /// from `ctl` instead, profiles looked up for loopback addresses.
    fn env_with_discovery(&self, name: &str, ctl: &MockController) -> MapEnv {
        let identity = self.ctl.as_ref().unwrap().addr();
        spoke_env(&self.dir, identity, &self.anchors, name, false)
            .set(spoke::config::DESTINATION_SVC_ADDR, ctl.addr().to_string())
            .set(spoke::config::PROFILE_NETWORKS, "127.0.0.0/8")
    }
}

/// Echoes every byte back until EOF, on each connection, until dropped.
fn echo_server() -> (SocketAddr, std::thread::JoinHandle<()>, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = stop.clone();
    let t = std::thread::spawn(move || {
        for sock in listener.incoming() {
            if done.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut sock) = sock else { continue };
            let mut w = sock.try_clone().unwrap();
            let _ = std::io::copy(&mut sock, &mut w);
            let _ = w.shutdown(std::net::Shutdown::Write);
        }
    });
    (addr, t, stop)
}

#[test]
fn opaque_tcp_to_a_meshed_endpoint_uses_linkerds_opaque_transport() {
    let m = mesh(
        "transport",
        Duration::from_secs(3600),
        BOOKS_ID,
        echo_client_id(),
    );
    let (echo, echo_thread, echo_stop) = echo_server();
    // Spoke C, the server side: connections come to its inbound port itself.
    let direct = Injected::default();
    let c = proxy_with_orig_dst(
        &spoke_env(
            &m.dir,
            m.ctl.as_ref().unwrap().addr(),
            &m.anchors,
            BOOKS_ID,
            false,
        ),
        Box::new(direct.clone()),
    );
    direct.set(Some(c.inbound_addr()));
    // Spoke D, the client side, redirected to a service address with nothing
    // behind it; discovery (a mock) names the echo server, meshed, behind C.
    let ctl = MockController::start();
    let service = dead_port();
    let name = "db.default.svc.cluster.local";
    let mut p = profile(vec![]);
    p.fully_qualified_name = name.to_string();
    p.opaque_protocol = true;
    ctl.profile(&service.to_string(), &p);
    let path = format!("{name}:{}", service.port());
    ctl.endpoints_update(
        &path,
        &opaque_endpoint(echo, BOOKS_ID, c.inbound_addr().port()),
    );
    let d_env = m.env_with_discovery(WEB, &ctl);
    let d = proxy_with_orig_dst(&d_env, Box::new(Injected::to(service)));
    eventually("both spokes certified", || ready(&c) && ready(&d));

    let round_trip = |bytes: &[u8]| {
        let mut s = TcpStream::connect(d.outbound_addr()).unwrap();
        s.set_read_timeout(Some(patience())).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    };
    eventually("bytes echoed through the opaque transport", || {
        round_trip(b"\x00ping") == b"\x00ping"
    });
    let counted = |app: &App, family: &str, labels: &[(&str, &str)]| metric(app, family, labels);
    assert!(
        counted(
            &c,
            "spoke_detect_total",
            &[
                ("direction", "inbound"),
                ("protocol", "tls"),
                ("reason", "terminated")
            ]
        ) >= 1.0
    );
    assert!(
        counted(
            &c,
            "spoke_detect_total",
            &[
                ("direction", "inbound"),
                ("protocol", "opaque"),
                ("reason", "transport_header")
            ]
        ) >= 1.0
    );
    // Anything but mTLS with the header is refused on the direct port.
    let mut plain = TcpStream::connect(c.inbound_addr()).unwrap();
    plain.set_read_timeout(Some(patience())).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(
        counted(
            &c,
            "spoke_connections_refused_total",
            &[
                ("direction", "inbound"),
                ("reason", "transport_header_required")
            ]
        ),
        1.0
    );
    for app in [c, d] {
        app.shutdown().unwrap();
    }
    echo_stop.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect(echo);
    echo_thread.join().unwrap();
}

#[test]
fn a_pod_ip_named_directly_is_reached_over_mtls_when_its_profile_says_so() {
    let m = mesh(
        "pod-ip",
        Duration::from_secs(3600),
        BOOKS_ID,
        echo_client_id(),
    );
    // Spoke D asks a mock for the profile of B's address, which (as Linkerd's
    // controller does for a meshed pod's IP) names B's identity.
    let ctl = MockController::start();
    let pod = m.b().inbound_addr();
    let mut p = profile(vec![]);
    p.endpoint = Some(meshed_addr(pod, BOOKS_ID)).into();
    ctl.profile(&pod.to_string(), &p);
    let env = m.env_with_discovery(WEB, &ctl);
    let d = proxy(&env);
    eventually("spoke D certified", || ready(&d));
    // Before the profile is in, the request goes in plaintext (B serves it
    // without an identity); once it is, over mTLS.
    eventually("the pod reached over mTLS", || {
        get(&d, &pod.to_string(), "/").text() == WEB
    });
    d.shutdown().unwrap();
}

#[test]
fn megabytes_cross_mtls_both_ways_to_a_slow_reader() {
    // App B answers with the body it received, reversed.
    let echo = Arc::new(|req: &spoke::devtools::Request| {
        let mut body = req.body.clone();
        body.reverse();
        Response::new(200, body)
    });
    let m = mesh("bulk", Duration::from_secs(3600), BOOKS_ID, echo);
    eventually("a request over mTLS", || {
        get(m.a(), BOOKS, "/").status == 200
    });
    let body: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut sock = TcpStream::connect(m.a().outbound_addr()).unwrap();
    sock.set_read_timeout(Some(patience())).unwrap();
    let head = format!(
        "POST /up HTTP/1.1\r\nhost: {BOOKS}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut writer = sock.try_clone().unwrap();
    let up = body.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(head.as_bytes()).unwrap();
        writer.write_all(&up).unwrap();
    });
    // Read slowly: small reads, a pause every 256 KiB, so both spokes' TLS
    // output backs up behind a full socket again and again.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read after {} bytes: {e}", got.len()),
        }
        if got.len() % (256 * 1024) < 4096 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    sender.join().unwrap();
    let text_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..text_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut expected = body;
    expected.reverse();
    assert!(
        got[text_end..] == expected[..],
        "{} body bytes of {}",
        got.len() - text_end,
        expected.len()
    );
}

#[test]
fn certificates_rotate_under_steady_traffic_without_a_failed_request() {
    let m = mesh("rotate", Duration::from_secs(2), BOOKS_ID, echo_client_id());
    eventually("a request over mTLS", || {
        get(m.a(), BOOKS, "/").status == 200
    });
    let start = metric(m.a(), "identity_cert_refresh_count", &[]);
    let mut failures = 0;
    let mut sent = 0;
    // New connections (handshakes with whatever certificate is in force)
    // and one kept-alive connection, until both sides renewed three times.
    let mut kept = spoke::devtools::Client::connect(m.a().outbound_addr(), patience()).unwrap();
    eventually("three renewals on both sides under traffic", || {
        for _ in 0..5 {
            sent += 2;
            if get(m.a(), BOOKS, "/").status != 200 {
                failures += 1;
            }
            if kept.get(BOOKS, "/").map(|r| r.status).unwrap_or(0) != 200 {
                failures += 1;
            }
        }
        metric(m.a(), "identity_cert_refresh_count", &[]) >= start + 3.0
            && metric(m.b(), "identity_cert_refresh_count", &[]) >= 4.0
    });
    assert_eq!(failures, 0, "{failures} of {sent} requests failed");
}

#[test]
fn the_mesh_demo_reports_mtls_for_the_meshed_service_and_plaintext_for_the_other() {
    let _ = env_logger::builder().is_test(true).try_init();
    let cfg = spoke::config::Config::from_env(&MapEnv::new()).unwrap();
    let report = spoke::demo_mesh::run(&cfg, 30).unwrap();
    assert!(
        report.contains(&format!("l5d-client-id: {WEB}")),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "{BOOKS:<40} {:>8} {:>9}  mTLS {BOOKS_ID}",
            20, "100.0%"
        )),
        "{report}"
    );
    assert!(
        report.contains("plaintext (not_provided_by_service_discovery)"),
        "{report}"
    );
}

#[test]
fn grpc_calls_cross_mtls_as_http2_both_ways() {
    let server = echo::EchoServer::start("books");
    let m = mesh_with(
        "grpc",
        Duration::from_secs(3600),
        BOOKS_ID,
        echo_client_id(),
        None,
        Some(server.addr),
    );
    let client = echo::client_via(m.a().outbound_addr(), BOOKS);
    let opt = || grpcio::CallOption::default().timeout(Duration::from_secs(10));
    let first = eventually_some("a gRPC call over mTLS", || {
        client.unary_call(&echo::UNARY, &echo::msg("0"), opt()).ok()
    });
    assert_eq!(first.path, "books:0");
    for i in 1..20 {
        let r = client
            .unary_call(&echo::UNARY, &echo::msg(&i.to_string()), opt())
            .expect("call");
        assert_eq!(r.path, format!("books:{i}"));
    }
    // Spoke B terminated TLS, then saw the HTTP/2 preface under it.
    for protocol in ["tls", "h2"] {
        let reason = if protocol == "tls" {
            "terminated"
        } else {
            "detected"
        };
        let labels = [
            ("direction", "inbound"),
            ("protocol", protocol),
            ("reason", reason),
        ];
        assert!(
            metric(m.b(), "spoke_detect_total", &labels) >= 1.0,
            "{protocol}"
        );
    }
    assert_eq!(
        metric(m.b(), "request_total", &[("direction", "inbound")]),
        20.0
    );
    assert_eq!(server.calls(), 20);
}
