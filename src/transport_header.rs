//! Linkerd's opaque transport header, `transport.l5d.io/v1` (pure; encoded
//! by the event-loop thread for an outbound opaque connection to a meshed
//! endpoint's opaque-transport port, decoded on the inbound side's direct
//! port). The protobuf type stays behind this module.
//!
//! Wire format (after a TLS handshake that agreed on ALPN
//! `transport.l5d.io/v1`): the 23-byte preface `transport.l5d.io/v1\r\n\r\n`,
//! a big-endian u32 length, then a protobuf `Header{port, name,
//! session_protocol}`. The port must be 1-65535; a name means a gateway
//! connection; no session protocol means opaque TCP.

use protobuf::Message;

use crate::proto::transport_header as pb;

/// What a connection that speaks the header starts with.
pub const PREFACE: &[u8] = b"transport.l5d.io/v1\r\n\r\n";

/// A header longer than this is not one spoke reads (Linkerd's are a few
/// bytes: a port and an optional name).
const MAX_HEADER: usize = 16 * 1024;

/// The protocol the session inside carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionProtocol {
    Http1,
    Http2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportHeader {
    /// The port on the receiving pod the connection is for.
    pub port: u16,
    /// The target's logical name (gateway forwarding), if any.
    pub name: Option<String>,
    /// `None`: opaque TCP.
    pub protocol: Option<SessionProtocol>,
}

/// What the bytes so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    NeedMore,
    /// The header and how many bytes it took.
    Header(TransportHeader, usize),
    Invalid(String),
}

/// The header's bytes on the wire.
pub fn encode(h: &TransportHeader) -> Vec<u8> {
    let mut msg = pb::Header::new();
    msg.port = i32::from(h.port);
    msg.name = h.name.clone().unwrap_or_default();
    if let Some(p) = h.protocol {
        let mut sp = pb::SessionProtocol::new();
        match p {
            SessionProtocol::Http1 => sp.set_http1(pb::session_protocol::Http1::new()),
            SessionProtocol::Http2 => sp.set_http2(pb::session_protocol::Http2::new()),
        }
        msg.session_protocol = protobuf::MessageField::some(sp);
    }
    let body = msg.write_to_bytes().unwrap_or_default();
    let mut out = Vec::with_capacity(PREFACE.len() + 4 + body.len());
    out.extend_from_slice(PREFACE);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads a header from the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded {
    let n = bytes.len().min(PREFACE.len());
    if bytes[..n] != PREFACE[..n] {
        return Decoded::Invalid("no transport header preface".into());
    }
    let Some(len) = bytes.get(PREFACE.len()..PREFACE.len() + 4) else {
        return Decoded::NeedMore;
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_HEADER {
        return Decoded::Invalid(format!("a {len}-byte transport header"));
    }
    let start = PREFACE.len() + 4;
    let Some(body) = bytes.get(start..start + len) else {
        return Decoded::NeedMore;
    };
    let msg = match pb::Header::parse_from_bytes(body) {
        Ok(m) => m,
        Err(e) => return Decoded::Invalid(format!("transport header: {e}")),
    };
    let port = match u16::try_from(msg.port) {
        Ok(p) if p > 0 => p,
        _ => return Decoded::Invalid(format!("transport header port {}", msg.port)),
    };
    let protocol = msg.session_protocol.as_ref().and_then(|sp| {
        if sp.has_http1() {
            Some(SessionProtocol::Http1)
        } else if sp.has_http2() {
            Some(SessionProtocol::Http2)
        } else {
            None
        }
    });
    let header = TransportHeader {
        port,
        name: (!msg.name.is_empty()).then(|| msg.name.clone()),
        protocol,
    };
    Decoded::Header(header, start + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_whatever_arrives_at_once() {
        let h = TransportHeader {
            port: 5432,
            name: None,
            protocol: None,
        };
        let mut wire = encode(&h);
        assert_eq!(wire.len(), 23 + 4 + 3, "preface, length, port field");
        assert_eq!(&wire[..23], PREFACE);
        wire.extend_from_slice(b"rest");
        for cut in 0..wire.len() - 4 {
            assert_eq!(decode(&wire[..cut]), Decoded::NeedMore, "{cut} bytes");
        }
        assert_eq!(decode(&wire), Decoded::Header(h, wire.len() - 4));
        let h = TransportHeader {
            port: 8080,
            name: Some("web.default.svc.cluster.local".into()),
            protocol: Some(SessionProtocol::Http1),
        };
        assert_eq!(
            decode(&encode(&h)),
            Decoded::Header(h.clone(), encode(&h).len())
        );
    }

    #[test]
    fn bad_headers_are_refused() {
        assert!(matches!(decode(b"GET / HTTP/1.1\r\n"), Decoded::Invalid(_)));
        let mut huge = PREFACE.to_vec();
        huge.extend_from_slice(&(1u32 << 20).to_be_bytes());
        assert!(matches!(decode(&huge), Decoded::Invalid(_)));
        for port in [0, 70000, -1] {
            let mut msg = pb::Header::new();
            msg.port = port;
            let body = msg.write_to_bytes().unwrap();
            let mut wire = PREFACE.to_vec();
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(&body);
            assert!(matches!(decode(&wire), Decoded::Invalid(_)), "port {port}");
        }
        let mut junk = PREFACE.to_vec();
        junk.extend_from_slice(&[0, 0, 0, 2, 0xff, 0xff]);
        assert!(matches!(decode(&junk), Decoded::Invalid(_)));
    }
}
