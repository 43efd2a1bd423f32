//! Response heads from upstream: `parse_response` and its RFC 9112 section 6.3 framing.
//!
//! Event-loop thread, pure. Shared head plumbing is in `head.rs`; the downstream
//! serialization of a `ResponseHead` is in `forward.rs`.

use super::head::{head_window, with_header_slots, Fields, Span};
use super::{BodyFraming, HeadError, Limits, Parsed};

/// A parsed, validated response head from upstream, owning a copy of its bytes.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub(super) fields: Fields,
    minor_version: u8,
    status: u16,
    reason: Span,
    framing: BodyFraming,
    keep_alive: bool,
    pub(super) content_length: Option<u64>,
    pub(super) has_transfer_encoding: bool,
    /// Transfer-Encoding names a coding other than `chunked` (`gzip, chunked`).
    other_codings: bool,
}

/// Parses a response head from the start of `buf` (an upstream connection's read buffer).
///
/// Same `Partial`/`Complete`/`TooLarge` contract as [`parse_request`](super::parse_request).
/// Every error means the upstream misbehaved: answer the client 502. Framing follows RFC 9112
/// section 6.3: responses to HEAD (`request_method_was_head`), 1xx, 204 and 304 have no body; then
/// Transfer-Encoding (chunked last: `Chunked`, else `CloseDelimited`), then Content-Length,
/// else `CloseDelimited`. Content-Length with Transfer-Encoding, an invalid Content-Length,
/// `chunked` twice, Transfer-Encoding in an HTTP/1.0 response, a status outside 100..=599,
/// are errors; `101 Switching Protocols` parses (bodiless) and the caller decides.
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
    request_method_was_head: bool,
) -> Result<Parsed<ResponseHead>, HeadError> {
    let (window, max) = head_window(buf, limits);
    let outcome = with_header_slots(limits.max_headers, |slots| {
        let mut res = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, window, slots)
        {
            Ok(httparse::Status::Complete(consumed)) => {
                let reason = Span::of(buf, res.reason.unwrap_or("").as_bytes());
                let fields = Fields::new(buf, consumed, res.headers);
                let minor = res.version.unwrap_or(1);
                Ok(Some((
                    fields,
                    minor,
                    res.code.unwrap_or(0),
                    reason,
                    consumed,
                )))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
            Err(httparse::Error::HeaderName) => Err(HeadError::Invalid("invalid header line")),
            Err(httparse::Error::HeaderValue) => Err(HeadError::Invalid("invalid header value")),
            Err(_) => Err(HeadError::Invalid("invalid status line")),
        }
    })?;
    let Some((fields, minor_version, status, reason, consumed)) = outcome else {
        return if buf.len() >= max {
            Err(HeadError::TooLarge)
        } else {
            Ok(Parsed::Partial)
        };
    };
    if !(100..=599).contains(&status) {
        return Err(HeadError::Invalid("invalid status code"));
    }
    let framing_headers = fields.framing_headers()?;
    if framing_headers.te.is_some() && minor_version == 0 {
        return Err(HeadError::Invalid("transfer-encoding in HTTP/1.0 response"));
    }
    let bodiless = request_method_was_head || status < 200 || status == 204 || status == 304;
    let framing = match &framing_headers.te {
        _ if bodiless => BodyFraming::None,
        Some(te) if te.final_chunked => BodyFraming::Chunked,
        Some(_) => BodyFraming::CloseDelimited,
        None => framing_headers
            .content_length
            .map_or(BodyFraming::CloseDelimited, BodyFraming::ContentLength),
    };
    let conn = fields.connection;
    let keep_alive = framing != BodyFraming::CloseDelimited
        && !conn.close
        && (minor_version == 1 || conn.keep_alive);
    let head = ResponseHead {
        fields,
        minor_version,
        status,
        reason,
        framing,
        keep_alive,
        content_length: framing_headers.content_length,
        has_transfer_encoding: framing_headers.te.is_some(),
        other_codings: framing_headers.te.as_ref().is_some_and(|te| te.other),
    };
    Ok(Parsed::Complete { head, consumed })
}

impl ResponseHead {
    /// Whether the body carries a transfer coding besides `chunked`: an HTTP/1.0 client
    /// knows none, and the proxy only removes `chunked`, so such a response cannot reach
    /// one.
    pub fn has_codings_besides_chunked(&self) -> bool {
        self.other_codings
    }

    /// The status code (100..=599).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as sent; empty if it was missing or held non-ASCII bytes.
    pub fn reason(&self) -> &str {
        self.fields.str_of(self.reason)
    }

    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }

    /// A 1xx interim response: forward it (to HTTP/1.1 clients only) and parse the next head.
    pub fn is_interim(&self) -> bool {
        self.status < 200 && self.status != 101
    }

    /// `101 Switching Protocols`: after this head the connection is a byte
    /// tunnel (only valid as the answer to an upgrade request, which the
    /// caller checks).
    pub fn is_switching(&self) -> bool {
        self.status == 101
    }

    /// All header lines in order, names as sent, values with surrounding whitespace trimmed.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields.iter()
    }

    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.fields.first(name)
    }

    /// How the response body is delimited.
    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// Whether the upstream connection can be reused once this response's body is read:
    /// HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`,
    /// never for a close-delimited body.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::AfterResponse;

    #[track_caller]
    fn ok(bytes: &[u8], head_request: bool) -> ResponseHead {
        match parse_response(bytes, &Limits::default(), head_request) {
            Ok(Parsed::Complete { head, consumed }) => {
                assert_eq!(consumed, bytes.len(), "whole input is the head");
                head
            }
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    #[track_caller]
    fn err(bytes: &[u8]) -> HeadError {
        match parse_response(bytes, &Limits::default(), false) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn simple_ok() {
        let head = ok(
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: b\r\n\r\n",
            false,
        );
        assert_eq!(head.status(), 200);
        assert_eq!(head.reason(), "OK");
        assert_eq!(head.minor_version(), 1);
        assert_eq!(head.framing(), BodyFraming::ContentLength(12));
        assert!(head.keep_alive());
        assert!(!head.is_interim());
        assert_eq!(head.header("x-a"), Some(&b"b"[..]));
        assert_eq!(head.headers().count(), 2);
    }

    #[test]
    fn partial_and_pipelined() {
        let buf = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        for len in 0..27 {
            assert!(matches!(
                parse_response(&buf[..len], &Limits::default(), false),
                Ok(Parsed::Partial)
            ));
        }
        let Ok(Parsed::Complete { head, consumed }) =
            parse_response(buf, &Limits::default(), false)
        else {
            panic!("first response");
        };
        assert_eq!((head.status(), consumed), (204, 27));
        let second = ok(&buf[consumed..], false);
        assert_eq!(second.framing(), BodyFraming::ContentLength(0));
    }

    #[test]
    fn bodiless_framing() {
        let cases: [(&[u8], bool); 6] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                true,
            ),
            (b"HTTP/1.1 100 Continue\r\n\r\n", false),
            (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false),
            (
                b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                false,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                false,
            ),
        ];
        for (buf, head_request) in cases {
            let head = ok(buf, head_request);
            assert_eq!(
                head.framing(),
                BodyFraming::None,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
            assert!(head.keep_alive());
        }
        assert!(ok(b"HTTP/1.1 100 Continue\r\n\r\n", false).is_interim());
    }

    #[test]
    fn body_framing() {
        let head = ok(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(head.framing(), BodyFraming::Chunked);
        assert!(head.keep_alive());
        let head = ok(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!(head.framing(), BodyFraming::Chunked);
        let head = ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
        assert_eq!(head.framing(), BodyFraming::CloseDelimited);
        assert!(!head.keep_alive());
        let head = ok(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
            false,
        );
        assert_eq!(head.framing(), BodyFraming::CloseDelimited);
        assert!(!head.keep_alive());
        let head = ok(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", false);
        assert_eq!(head.framing(), BodyFraming::ContentLength(3));
        assert!(!head.keep_alive());
        let head = ok(
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n",
            false,
        );
        assert!(head.keep_alive());
        let head = ok(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
            false,
        );
        assert!(!head.keep_alive());
    }

    #[test]
    fn switching_protocols_is_bodiless_and_not_interim() {
        let head = ok(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", false);
        assert!(head.is_switching());
        assert!(!head.is_interim());
        assert_eq!(head.framing(), BodyFraming::None);
        let mut out = Vec::new();
        assert_eq!(
            head.write_downstream(&mut out, false, 1),
            AfterResponse::Close
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn rejections() {
        let cases: [&[u8]; 11] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1 600 High\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
        ];
        for buf in cases {
            assert!(
                matches!(err(buf), HeadError::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        let limits = Limits {
            max_head_bytes: 32,
            max_headers: 1,
        };
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nA: b\r\nC: d\r\n\r\n", &limits, false).err(),
            Some(HeadError::TooManyHeaders)
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nA: bbbbbbbbbbbbbbbbbbbb",
                &limits,
                false
            )
            .err(),
            Some(HeadError::TooLarge)
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(42);
        let seed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close, x\r\nx: 1\r\n\r\n";
        for _ in 0..10_000 {
            let mut bytes = seed.to_vec();
            for _ in 0..rng.usize(1..5) {
                let i = rng.usize(0..bytes.len());
                bytes[i] = rng.u8(..);
            }
            if let Ok(Parsed::Complete { head, .. }) =
                parse_response(&bytes, &Limits::default(), rng.bool())
            {
                let mut out = Vec::new();
                head.write_downstream(&mut out, rng.bool(), rng.u8(0..2));
                assert!(out.ends_with(b"\r\n\r\n"));
            }
        }
    }
}
