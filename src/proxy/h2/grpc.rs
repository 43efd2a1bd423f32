//! gRPC over HTTP/2 as the proxy sees it (pure; event-loop thread): whether
//! a request is gRPC, the `grpc-status` of a response, and the answers the
//! proxy makes itself. A gRPC client shows a bare HTTP error as `INTERNAL`
//! or `UNKNOWN`, so a gRPC request the proxy cannot serve gets a
//! *trailers-only* response (HTTP 200, `grpc-status` in the one HEADERS
//! frame, END_STREAM) that names what happened, as linkerd2-proxy does:
//! `DEADLINE_EXCEEDED` (4) for a timeout, `UNAVAILABLE` (14) otherwise.

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub const L5D_PROXY_ERROR: HeaderName = HeaderName::from_static("l5d-proxy-error");

/// `DEADLINE_EXCEEDED`.
pub const DEADLINE_EXCEEDED: u32 = 4;
/// `UNAVAILABLE`.
pub const UNAVAILABLE: u32 = 14;

/// Whether a request is gRPC: `content-type: application/grpc` (with any
/// `+format` or parameters after it).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim_start();
            ct.len() >= 16
                && ct[..16].eq_ignore_ascii_case("application/grpc")
                && matches!(ct.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// The `grpc-status` in `headers` (trailers, or a trailers-only response's
/// headers), if there is a valid one.
pub fn status(headers: &HeaderMap) -> Option<u32> {
    let v = headers.get(GRPC_STATUS)?.to_str().ok()?;
    v.trim().parse().ok()
}

/// The headers of a trailers-only gRPC response the proxy makes: the
/// status code that maps the proxy's own HTTP status, a message, and
/// `l5d-proxy-error`.
pub fn error_headers(http_status: u16, reason: &str) -> HeaderMap {
    let code = match http_status {
        504 => DEADLINE_EXCEEDED,
        _ => UNAVAILABLE,
    };
    let mut h = HeaderMap::with_capacity(4);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(GRPC_STATUS, HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(reason)) {
        h.insert(GRPC_MESSAGE, v);
    }
    if let Ok(v) = HeaderValue::from_str(reason) {
        h.insert(L5D_PROXY_ERROR, v);
    }
    h
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and
/// `%` itself.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_ct(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).expect("value"));
        h
    }

    #[test]
    fn grpc_requests_are_told_by_content_type() {
        assert!(is_grpc(&with_ct("application/grpc")));
        assert!(is_grpc(&with_ct("application/grpc+proto")));
        assert!(is_grpc(&with_ct("Application/GRPC; charset=utf-8")));
        assert!(!is_grpc(&with_ct("application/grpc-web")));
        assert!(!is_grpc(&with_ct("application/json")));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn status_is_read_from_trailers() {
        let mut h = HeaderMap::new();
        assert_eq!(status(&h), None);
        h.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        assert_eq!(status(&h), Some(0));
        h.insert(GRPC_STATUS, HeaderValue::from_static("14"));
        assert_eq!(status(&h), Some(14));
        h.insert(GRPC_STATUS, HeaderValue::from_static("x"));
        assert_eq!(status(&h), None);
    }

    #[test]
    fn proxy_errors_are_trailers_only_with_a_status() {
        let h = error_headers(504, "response timeout");
        assert_eq!(status(&h), Some(DEADLINE_EXCEEDED));
        assert_eq!(h[L5D_PROXY_ERROR], "response timeout");
        assert_eq!(h[CONTENT_TYPE], "application/grpc");
        let h = error_headers(503, "no endpoints 100%");
        assert_eq!(status(&h), Some(UNAVAILABLE));
        assert_eq!(h[GRPC_MESSAGE], "no endpoints 100%25");
        assert_eq!(status(&error_headers(502, "x")), Some(UNAVAILABLE));
    }
}
