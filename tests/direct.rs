//! Linkerd's opaque transport carrying HTTP/2: a linkerd2-proxy client
//! sends HTTP to a port its peer's side treats as opaque through the peer
//! proxy's inbound port, over mTLS with ALPN `transport.l5d.io/v1`, behind
//! a transport header naming the target port and the session protocol.
//! The client here is built from spoke's own TLS settings (its certificate
//! from the mesh's CA) and writes the header and the HTTP/2 frames by hand.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use spoke::identity::creds::{Anchors, Documents};
use spoke::identity::Credentials;
use spoke::tls::TlsConfigs;
use spoke::transport_header::{encode, SessionProtocol, TransportHeader};
use support::frames::*;
use support::mesh::*;
use support::*;

/// The client's TLS: spoke's client configuration for the opaque transport,
/// with a certificate for `web` from the mesh's CA.
fn web_transport_tls(m: &Mesh) -> std::sync::Arc<rustls::ClientConfig> {
    let docs = Documents::generate(WEB).unwrap();
    let leaf =
        m.ca.issue(WEB, &docs.csr, Duration::from_secs(3600), SystemTime::now())
            .unwrap();
    let creds = Credentials {
        name: WEB.to_owned(),
        key_pkcs8: docs.key_pkcs8.clone(),
        chain: vec![leaf.der.into()],
        not_after: leaf.not_after,
        anchors: Anchors::from_pem(&m.anchors).unwrap(),
    };
    TlsConfigs::new(&creds).unwrap().client_transport()
}

/// The body of stream 1's response, read frame by frame.
fn response_body(s: &mut impl Read) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(f) = read_frame(s) {
        match f.ty {
            RST_STREAM | GOAWAY => panic!("{f:?}"),
            DATA if f.stream == 1 => {
                body.extend_from_slice(&f.payload);
                if f.flags & END_STREAM != 0 {
                    return body;
                }
            }
            HEADERS if f.stream == 1 && f.flags & END_STREAM != 0 => return body,
            _ => {}
        }
    }
    panic!("the connection ended before the response did: {body:?}");
}

/// A connection to spoke C's inbound port as linkerd2-proxy makes one:
/// mTLS with `web`'s certificate, the transport ALPN, a header naming
/// `port` with HTTP/2, then `after`.
fn direct_to(
    m: &Mesh,
    c: &spoke::app::App,
    port: u16,
    after: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = rustls_pki_types::ServerName::try_from(BOOKS_ID.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(web_transport_tls(m), name).unwrap();
    let tcp = TcpStream::connect(c.inbound_addr()).unwrap();
    tcp.set_read_timeout(Some(patience())).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut out = encode(&TransportHeader {
        port,
        name: None,
        protocol: Some(SessionProtocol::Http2),
    });
    out.extend_from_slice(after);
    s.write_all(&out).unwrap();
    s.flush().unwrap();
    s
}

#[test]
fn a_transport_header_saying_http2_is_served_as_http2_to_the_port_it_names() {
    let m = mesh(
        "direct-h2",
        Duration::from_secs(3600),
        BOOKS_ID,
        std::sync::Arc::new(|req| {
            let who = req.header("l5d-client-id").unwrap_or("none");
            spoke::devtools::Response::new(200, format!("{} {who}", req.path))
        }),
    );
    // Spoke C: every inbound connection comes to its own inbound port.
    let direct = Injected::default();
    let ctl = m.ctl.as_ref().unwrap().addr();
    let c = proxy_with_orig_dst(
        &spoke_env(&m.dir, ctl, &m.anchors, BOOKS_ID, false),
        Box::new(direct.clone()),
    );
    direct.set(Some(c.inbound_addr()));
    eventually("spoke C certified", || ready(&c));

    let port = m.app_b.addr().port();
    let fields = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", BOOKS),
        (":path", "/over-the-transport"),
        ("l5d-orig-proto", "HTTP/1.1"),
    ];
    let mut h2 = PREFACE.to_vec();
    h2.extend_from_slice(&frame(SETTINGS, 0, 0, &[]));
    h2.extend_from_slice(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &hpack(&fields),
    ));

    // A header saying HTTP/2 and then no HTTP/2: the connection ends with
    // no response, and spoke C goes on serving.
    let mut bad = direct_to(&m, &c, port, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    while let Some(f) = read_frame(&mut bad) {
        assert!(f.ty != DATA && f.ty != HEADERS, "answered garbage: {f:?}");
    }

    let mut s = direct_to(&m, &c, port, &h2);
    let body = response_body(&mut s);
    // App B answered, told the identity the client proved to spoke C.
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("/over-the-transport {WEB}")
    );
    let detected = [
        ("direction", "inbound"),
        ("protocol", "h2"),
        ("reason", "transport_header"),
    ];
    // Both connections were taken for HTTP/2 by their header.
    assert_eq!(
        metric(&c, "spoke_detect_total", &detected),
        2.0,
        "{}",
        metrics(&c)
    );
    // The clients go (else shutdown waits for their connections to end).
    drop((s, bad));
    c.shutdown().unwrap();
}
