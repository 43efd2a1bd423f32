//! Sans-IO HTTP/1.1 core of the data plane: request and response heads, body framing,
//! head serialization for forwarding, and the responses the proxy makes itself.
//!
//! Runs on the event-loop thread, called for every request; nothing here does I/O, blocks,
//! logs per byte or allocates per byte. The connection state machine (which owns the read
//! and write buffers and the sockets) lives in `proxy/conn`; route matching in `router.rs`.
//!
//! Layout:
//! - `head.rs`: what both heads share (owned bytes + header index, Content-Length and
//!   Transfer-Encoding validation, httparse plumbing);
//! - `request.rs`: [`parse_request`] into an owned [`RequestHead`] (framing, Host,
//!   request-target form, routing authority);
//! - `response.rs`: [`parse_response`] into an owned [`ResponseHead`] (RFC 9112 §6.3);
//! - `authority.rs`: `uri-host [":" port]` for Host, absolute URIs and `l5d-dst-override`;
//! - `forward.rs`: `write_upstream` / `write_downstream`, hop-by-hop header removal, and
//!   [`DropHeaders`], what a listener drops on top (`write_upstream_dropping`);
//! - `body.rs`: [`BodyDecoder`], which finds where a pass-through body ends, and
//!   `body/chunked.rs`, the chunked grammar and the canonical framing written instead;
//! - `respond.rs`: [`error_response`] and [`status_reason`];
//! - `fuzzing.rs`: [`fuzzing`], entry points for the fuzz targets in `fuzz/` and the smoke
//!   test `tests/fuzz_smoke.rs` (never called by the proxy).
//!
//! How a connection uses it:
//!
//! ```text
//!  read buffer --parse_request--> Partial (read more) | Err(e) -> error_response(e.status())
//!       |                         Complete { head, consumed }
//!       v
//!  head.authority() -> route; head.write_upstream(..) -> upstream write buffer
//!  BodyDecoder::new(head.framing()).feed(&buf[consumed..]) -> forward Progress.consumed bytes
//!       (chunked: feed_canonical -> drop Payload.framing bytes, write the canonical framing,
//!       forward Payload.payload bytes)
//!       ... until done; bytes after that belong to the next (pipelined) request
//!  upstream read buffer --parse_response(.., head.method() == "HEAD")--> ResponseHead
//!  response.write_downstream(..) and a BodyDecoder for the response body, as above
//! ```
//!
//! A head is copied once out of the read buffer (one allocation for its bytes, one for its
//! header index), so the caller can compact or reuse the buffer at once; every accessor
//! borrows from that copy.

mod authority;
mod body;
mod forward;
pub mod fuzzing;
mod head;
mod request;
mod respond;
mod response;

pub use body::{BodyDecoder, BodyError, Progress, MAX_CHUNK_LINE_BYTES, MAX_TRAILER_BYTES};
pub use forward::{AfterResponse, DropHeaders};
pub use request::{parse_request, AuthoritySource, RequestHead};
pub use respond::{error_response, status_reason};
pub use response::{parse_response, ResponseHead};

use std::fmt;

/// Bounds on a message head, checked before anything else is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest head (start line, header lines and the empty line) accepted. A head that is
    /// not complete within this many bytes is [`HeadError::TooLarge`].
    pub max_head_bytes: usize,
    /// Most header lines accepted; more is [`HeadError::TooManyHeaders`].
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// Result of a head parse that did not fail.
#[derive(Debug)]
pub enum Parsed<T> {
    /// The head is not complete yet: read more bytes and parse the whole buffer again.
    Partial,
    /// A complete head; `consumed` bytes of the buffer belong to it (the body, or the next
    /// pipelined message, starts right after).
    Complete { head: T, consumed: usize },
}

/// How the end of a message body is found (RFC 9112 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all (a request without Content-Length or Transfer-Encoding; responses to
    /// HEAD; 1xx, 204 and 304 responses).
    None,
    /// Exactly this many bytes (may be 0: the header is still forwarded).
    ContentLength(u64),
    /// Chunked transfer coding, up to and including the trailer section; forwarded with its
    /// framing in canonical form (`BodyDecoder::feed_canonical`).
    Chunked,
    /// Responses only: the body runs until the server closes the connection.
    CloseDelimited,
}

/// Why a head was refused.
///
/// For a request, [`HeadError::status`] is the status the proxy answers with. For a
/// response from upstream every variant means "bad gateway": the caller answers 502.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The head did not end within [`Limits::max_head_bytes`] (431).
    TooLarge,
    /// More than [`Limits::max_headers`] header lines (431).
    TooManyHeaders,
    /// Malformed or ambiguous: bad syntax, conflicting or invalid Content-Length, bad
    /// Transfer-Encoding, missing/repeated/invalid Host, and so on (400). The text is short
    /// and fixed, suitable for `l5d-proxy-error`.
    Invalid(&'static str),
    /// A well-formed `HTTP/x.y` version other than 1.0 and 1.1 (505).
    UnsupportedVersion,
    /// A transfer coding other than `chunked` in a request (501).
    UnsupportedTransferCoding,
}

impl HeadError {
    /// The status code the proxy answers a bad *request* with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Invalid(_) => 400,
            HeadError::UnsupportedVersion => 505,
            HeadError::UnsupportedTransferCoding => 501,
        }
    }

    /// Short fixed text for the `l5d-proxy-error` header and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::TooLarge => "head too large",
            HeadError::TooManyHeaders => "too many headers",
            HeadError::Invalid(why) => why,
            HeadError::UnsupportedVersion => "unsupported HTTP version",
            HeadError::UnsupportedTransferCoding => "unsupported transfer coding",
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for HeadError {}

// === shared helpers ===

/// Items of a comma-separated header list (RFC 9110 section 5.6.1), with optional
/// whitespace trimmed and empty items skipped, as recipients must accept them.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

/// `value` without leading and trailing spaces and tabs.
fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |i| i + 1);
    value.get(start..end).unwrap_or(&[])
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends the decimal form of `n` without going through `fmt` (no allocation, no error
/// path on a `Vec`).
fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(decimal(n, &mut digits));
}

/// The decimal digits of `n`, written at the end of `buf` (hot-path formatting without
/// `fmt`; also used for destination keys on the event loop).
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_items_trims_and_skips_empty() {
        let items: Vec<&[u8]> = list_items(b" a ,, b\t,c,").collect();
        assert_eq!(items, vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(list_items(b" , ").count(), 0);
    }

    #[test]
    fn trim_ows_edges() {
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b"  "), b"");
        assert_eq!(trim_ows(b"\tx y "), b"x y");
    }

    #[test]
    fn push_u64_formats() {
        let mut out = Vec::new();
        push_u64(&mut out, 0);
        out.push(b' ');
        push_u64(&mut out, 1234);
        out.push(b' ');
        push_u64(&mut out, u64::MAX);
        assert_eq!(out, b"0 1234 18446744073709551615");
    }

    #[test]
    fn head_error_statuses() {
        assert_eq!(HeadError::TooLarge.status(), 431);
        assert_eq!(HeadError::TooManyHeaders.status(), 431);
        assert_eq!(HeadError::Invalid("x").status(), 400);
        assert_eq!(HeadError::UnsupportedVersion.status(), 505);
        assert_eq!(HeadError::UnsupportedTransferCoding.status(), 501);
        assert_eq!(HeadError::Invalid("bad host").to_string(), "bad host (400)");
    }

    #[test]
    fn default_limits() {
        let l = Limits::default();
        assert_eq!(l.max_head_bytes, 65536);
        assert_eq!(l.max_headers, 100);
    }
}
