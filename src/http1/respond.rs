//! Responses the proxy makes itself (bad request, no endpoints, timeouts, ...), carrying
//! `l5d-proxy-error: <reason>` and a short text body, and the reason phrases they use.
//!
//! Event-loop thread, pure. Which cause gets which status is the caller's business
//! (DESIGN.md "Responses the proxy makes itself"); `HeadError::status` and
//! `HeadError::reason` in `mod.rs` cover bad request heads.

use super::push_u64;

/// Longest reason text kept; the rest is cut (it is a hint for humans and logs).
const MAX_REASON_BYTES: usize = 256;

/// The standard reason phrase for `code`, or `""` for codes without one here (an empty
/// reason phrase is valid HTTP/1.1).
pub fn status_reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A complete HTTP/1.1 response (head and body) for the proxy's own errors:
///
/// ```text
/// HTTP/1.1 503 Service Unavailable
/// l5d-proxy-error: no endpoints
/// content-type: text/plain
/// content-length: 13
/// connection: close            (only when `close`)
///
/// no endpoints
/// ```
///
/// `reason` is sanitized for use as a header value: control bytes (CR and LF included) and
/// non-ASCII characters become spaces, surrounding spaces are trimmed, and it is cut to 256
/// bytes; if nothing is left, the status phrase is used. The body is that text plus a newline.
/// A status outside 200..=599 becomes 500 (this is never an interim response). For a HEAD
/// request send only the head: it ends at the first `\r\n\r\n`.
pub fn error_response(status: u16, reason: &str, close: bool) -> Vec<u8> {
    let status = if (200..=599).contains(&status) {
        status
    } else {
        500
    };
    let phrase = status_reason(status);
    let clean = sanitize(reason);
    let text: &[u8] = if clean.is_empty() {
        phrase.as_bytes()
    } else {
        &clean
    };
    let body_len = text.len() + 1;

    let mut out = Vec::with_capacity(128 + 2 * body_len);
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(&mut out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(phrase.as_bytes());
    out.extend_from_slice(b"\r\nl5d-proxy-error: ");
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\ncontent-type: text/plain\r\ncontent-length: ");
    push_u64(&mut out, body_len as u64);
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

/// Printable ASCII only, trimmed, at most [`MAX_REASON_BYTES`].
fn sanitize(reason: &str) -> Vec<u8> {
    let mapped: Vec<u8> = reason
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c as u8
            } else {
                b' '
            }
        })
        .take(MAX_REASON_BYTES)
        .collect();
    super::trim_ows(&mapped).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{parse_response, BodyFraming, Limits, Parsed};

    #[test]
    fn no_endpoints_503() {
        let out = error_response(503, "no endpoints", false);
        assert_eq!(
            out,
            b"HTTP/1.1 503 Service Unavailable\r\nl5d-proxy-error: no endpoints\r\n\
              content-type: text/plain\r\ncontent-length: 13\r\n\r\nno endpoints\n"
        );
    }

    #[test]
    fn close_adds_connection_close() {
        let out = error_response(400, "invalid chunk size", true);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(text.contains("\r\nconnection: close\r\n\r\ninvalid chunk size\n"));
    }

    #[test]
    fn responses_parse_back_with_exact_length() {
        for status in [400, 404, 408, 413, 431, 500, 501, 502, 503, 504, 505] {
            let out = error_response(status, "some reason", status % 2 == 0);
            match parse_response(&out, &Limits::default(), false) {
                Ok(Parsed::Complete { head, consumed }) => {
                    assert_eq!(head.status(), status);
                    assert_eq!(head.reason(), status_reason(status));
                    assert_eq!(head.header("l5d-proxy-error"), Some(&b"some reason"[..]));
                    assert_eq!(
                        head.framing(),
                        BodyFraming::ContentLength((out.len() - consumed) as u64)
                    );
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn reason_cannot_inject_headers() {
        let out = error_response(502, "bad\r\nset-cookie: x=1\r\n\r\n<html>", false);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.contains("l5d-proxy-error: bad  set-cookie: x=1    <html>\r\n"));
        assert_eq!(text.matches("\r\n\r\n").count(), 1);
        let out = error_response(502, "caf\u{e9} \u{0}", false);
        assert!(String::from_utf8(out)
            .expect("ascii")
            .contains("l5d-proxy-error: caf\r\n"));
    }

    #[test]
    fn empty_reason_and_odd_status() {
        let out = error_response(42, "  ", false);
        assert_eq!(
            out,
            b"HTTP/1.1 500 Internal Server Error\r\nl5d-proxy-error: Internal Server Error\r\ncontent-type: text/plain\r\n\
              content-length: 22\r\n\r\nInternal Server Error\n"
        );
        let long = "x".repeat(1000);
        let out = error_response(504, &long, false);
        assert!(out.len() < 2 * MAX_REASON_BYTES + 200);
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(status_reason(400), "Bad Request");
        assert_eq!(status_reason(404), "Not Found");
        assert_eq!(status_reason(408), "Request Timeout");
        assert_eq!(status_reason(413), "Content Too Large");
        assert_eq!(status_reason(431), "Request Header Fields Too Large");
        assert_eq!(status_reason(500), "Internal Server Error");
        assert_eq!(status_reason(501), "Not Implemented");
        assert_eq!(status_reason(502), "Bad Gateway");
        assert_eq!(status_reason(503), "Service Unavailable");
        assert_eq!(status_reason(504), "Gateway Timeout");
        assert_eq!(status_reason(505), "HTTP Version Not Supported");
        assert_eq!(status_reason(599), "");
    }
}
