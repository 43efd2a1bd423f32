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
use support::mesh::*;
use support::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

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
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).expect("a frame header");
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).expect("a frame payload");
        match kind {
            RST_STREAM | GOAWAY => panic!("frame {kind} on stream {stream}: {payload:?}"),
            DATA if stream == 1 => {
                body.extend_from_slice(&payload);
                if flags & END_STREAM != 0 {
                    return body;
                }
            }
            HEADERS if stream == 1 && flags & END_STREAM != 0 => return body,
            _ => {}
        }
    }
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

    let name = rustls_pki_types::ServerName::try_from(BOOKS_ID.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(web_transport_tls(&m), name).unwrap();
    let tcp = TcpStream::connect(c.inbound_addr()).unwrap();
    tcp.set_read_timeout(Some(patience())).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut out = encode(&TransportHeader {
        port: m.app_b.addr().port(),
        name: None,
        protocol: Some(SessionProtocol::Http2),
    });
    out.extend_from_slice(PREFACE);
    out.extend_from_slice(&frame(SETTINGS, 0, 0, &[]));
    let fields = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", BOOKS),
        (":path", "/over-the-transport"),
        ("l5d-orig-proto", "HTTP/1.1"),
    ];
    out.extend_from_slice(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &hpack(&fields),
    ));
    s.write_all(&out).unwrap();
    s.flush().unwrap();
    let body = response_body(&mut s);
    // App B answered, told the identity the client proved to spoke C.
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("/over-the-transport {WEB}")
    );
    let h2 = [
        ("direction", "inbound"),
        ("protocol", "h2"),
        ("reason", "transport_header"),
    ];
    assert_eq!(
        metric(&c, "spoke_detect_total", &h2),
        1.0,
        "{}",
        metrics(&c)
    );
    // The client goes (else shutdown waits for its connection to end).
    drop(s);
    c.shutdown().unwrap();
}
