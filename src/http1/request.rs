//! Request heads: `parse_request`, then the checks httparse leaves to us (RFC 9112 framing,
//! Host, request-target form) and the routing authority (DESIGN.md: `l5d-dst-override`,
//! then absolute-form authority, then `Host`).
//!
//! Event-loop thread, pure. Shared head plumbing is in `head.rs`; the upstream
//! serialization of a `RequestHead` is in `forward.rs`.

use super::authority::parse_authority;
use super::head::{head_window, with_header_slots, Fields, Kind, Span};
use super::{list_items, BodyFraming, HeadError, Limits, Parsed};

/// Which source `RequestHead::authority` came from (DESIGN.md: first that applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthoritySource {
    /// The `l5d-dst-override` header.
    DstOverride,
    /// The authority of an absolute-form request-target.
    AbsoluteUri,
    /// The `Host` header.
    Host,
}

#[derive(Clone, Copy, Debug)]
struct Routing {
    /// Host without a trailing dot; IPv6 literals keep their brackets.
    host: Span,
    port: u16,
    source: AuthoritySource,
}

/// A parsed, validated request head, owning a copy of its bytes.
#[derive(Clone, Debug)]
pub struct RequestHead {
    pub(super) fields: Fields,
    method: Span,
    target: Span,
    /// What goes on the upstream request line: the origin-form of the target.
    pub(super) origin: Span,
    /// An absolute-form target with an empty path: the origin-form needs a leading `/`.
    pub(super) origin_needs_slash: bool,
    path: Span,
    minor_version: u8,
    absolute_form: bool,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
    routing: Option<Routing>,
    upstream_host: Span,
}

/// Parses a request head from the start of `buf` (the connection's read buffer).
///
/// - `Ok(Parsed::Partial)`: no complete head yet; read more and call again with the whole
///   buffer. If `buf` already holds `limits.max_head_bytes` or more without a complete head,
///   the result is `Err(HeadError::TooLarge)` instead.
/// - `Ok(Parsed::Complete { head, consumed })`: `buf[..consumed]` was the head (leading empty
///   lines included, as RFC 9112 section 2.2 lets a server skip them).
/// - `Err(e)`: answer `e.status()` with `e.reason()` and close the connection.
///
/// Version: `HTTP/1.0` and `HTTP/1.1` are accepted; any other well-formed `HTTP/d.d` is
/// `UnsupportedVersion` (505); a malformed version is `Invalid` (400). A bare LF ending a
/// head line is accepted (RFC 9112 section 2.2 allows it; the head is re-serialized with CRLF
/// anyway); CR or NUL inside a value, obs-fold and whitespace before a colon are 400.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Parsed<RequestHead>, HeadError> {
    let (window, max) = head_window(buf, limits);
    let outcome = with_header_slots(limits.max_headers, |slots| {
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(window, slots) {
            Ok(httparse::Status::Complete(consumed)) => {
                let method = req.method.unwrap_or("");
                let target = req.path.unwrap_or("");
                let minor = req.version.unwrap_or(1);
                let fields = Fields::new(buf, consumed, req.headers);
                let method = Span::of(buf, method.as_bytes());
                let target = Span::of(buf, target.as_bytes());
                Ok(Some((fields, method, target, minor, consumed)))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(e) => Err(request_error(e, window)),
        }
    })?;
    let Some((fields, method, target, minor, consumed)) = outcome else {
        return if buf.len() >= max {
            Err(HeadError::TooLarge)
        } else {
            Ok(Parsed::Partial)
        };
    };
    let head = RequestHead::validate(fields, method, target, minor)?;
    Ok(Parsed::Complete { head, consumed })
}

/// Maps an httparse error to ours; a version error is 505 only if the version looks like
/// `HTTP/<digit>`, so that garbage stays a 400.
fn request_error(e: httparse::Error, window: &[u8]) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => HeadError::Invalid("invalid header line"),
        httparse::Error::HeaderValue => HeadError::Invalid("invalid header value"),
        httparse::Error::NewLine => HeadError::Invalid("invalid line ending"),
        httparse::Error::Version if version_well_formed(window) => HeadError::UnsupportedVersion,
        httparse::Error::Version => HeadError::Invalid("invalid HTTP version"),
        _ => HeadError::Invalid("invalid request line"),
    }
}

fn version_well_formed(window: &[u8]) -> bool {
    let start = window
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(window.len());
    let line = window.get(start..).unwrap_or(&[]);
    let line = line.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let Some(version) = line.split(|b| *b == b' ').nth(2) else {
        return false;
    };
    let digit = |i: usize| version.get(i).is_some_and(u8::is_ascii_digit);
    version.starts_with(b"HTTP/")
        && digit(5)
        && (version.len() < 8 || (version[6] == b'.' && digit(7)))
}

impl RequestHead {
    fn validate(
        fields: Fields,
        method: Span,
        target: Span,
        minor_version: u8,
    ) -> Result<RequestHead, HeadError> {
        let method_str = fields.str_of(method);
        let target_bytes = fields.bytes_of(target);
        if !target_bytes.is_ascii() {
            return Err(HeadError::Invalid("non-ASCII request target"));
        }
        let form = TargetForm::parse(method_str, target, target_bytes)?;

        // Host: RFC 9112 section 3.2 (missing in 1.1, repeated or invalid: 400).
        let mut hosts = fields.headers.iter().filter(|h| h.kind == Kind::Host);
        let host = hosts.next().map(|h| h.value);
        if hosts.next().is_some() {
            return Err(HeadError::Invalid("multiple host headers"));
        }
        let host_routing = match host {
            Some(value) => Some(
                authority_in(value, fields.bytes_of(value), AuthoritySource::Host)
                    .ok_or(HeadError::Invalid("invalid host header"))?,
            ),
            None if minor_version == 1 => return Err(HeadError::Invalid("missing host header")),
            None => None,
        };
        let mut overrides = fields
            .headers
            .iter()
            .filter(|h| h.kind == Kind::DstOverride);
        let dst_override = overrides.next().map(|h| h.value);
        if overrides.next().is_some() {
            return Err(HeadError::Invalid("multiple l5d-dst-override headers"));
        }
        let override_routing = match dst_override {
            Some(value) => Some(
                authority_in(value, fields.bytes_of(value), AuthoritySource::DstOverride)
                    .ok_or(HeadError::Invalid("invalid l5d-dst-override"))?,
            ),
            None => None,
        };
        let routing = override_routing.or(form.authority).or(host_routing);
        let upstream_host = form.authority_text.or(host).unwrap_or_default();

        let framing = request_framing(&fields, minor_version)?;
        let conn = fields.connection;
        let keep_alive = if minor_version == 1 {
            !conn.close
        } else {
            conn.keep_alive && !conn.close
        };
        // Both are HTTP/1.1 features a server must ignore in 1.0 requests (RFC 9110
        // sections 10.1.1 and 7.8).
        let expect_continue = minor_version == 1
            && fields
                .values(Kind::Expect)
                .flat_map(list_items)
                .any(|e| e.eq_ignore_ascii_case(b"100-continue"));
        let upgrade = minor_version == 1
            && conn.upgrade
            && fields.headers.iter().any(|h| h.kind == Kind::Upgrade);

        Ok(RequestHead {
            fields,
            method,
            target,
            origin: form.origin,
            origin_needs_slash: form.origin_needs_slash,
            path: form.path,
            minor_version,
            absolute_form: form.authority.is_some(),
            framing,
            keep_alive,
            expect_continue,
            upgrade,
            routing,
            upstream_host,
        })
    }

    /// The method, e.g. `GET` (case-sensitive, as sent).
    pub fn method(&self) -> &str {
        self.fields.str_of(self.method)
    }

    /// The request-target exactly as sent (origin-, absolute- or asterisk-form, including
    /// any fragment, which `write_upstream` drops).
    pub fn target(&self) -> &str {
        self.fields.str_of(self.target)
    }

    /// The path for route matching: the target's path without query (or fragment); `/` for
    /// an absolute-form target with an empty path; `*` for `OPTIONS *`.
    pub fn path(&self) -> &str {
        match self.fields.str_of(self.path) {
            "" => "/",
            path => path,
        }
    }

    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }

    /// Whether the target was in absolute-form (`GET http://host/path HTTP/1.1`).
    pub fn is_absolute_form(&self) -> bool {
        self.absolute_form
    }

    /// All header lines in order, names as sent, values with surrounding whitespace trimmed.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields.iter()
    }

    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.fields.first(name)
    }

    /// How the request body is delimited; never `CloseDelimited`.
    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// Whether the client connection may carry another request after this one: HTTP/1.1
    /// unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// HTTP/1.1 request with `Expect: 100-continue` (the header is forwarded as is).
    pub fn expect_continue(&self) -> bool {
        self.expect_continue
    }

    /// HTTP/1.1 request asking for a protocol upgrade (`Upgrade` plus `Connection: upgrade`).
    /// `write_upstream` passes both on; if the upstream answers `101`, the connection
    /// becomes a byte tunnel (the proxy's business, not this module's).
    pub fn upgrade(&self) -> bool {
        self.upgrade
    }

    /// The routing target: `l5d-dst-override`, else the absolute-form authority, else `Host`.
    /// The name is lowercased without a trailing dot (an IPv6 literal keeps its brackets, so
    /// `format!("{name}:{port}")` is a valid authority); the port defaults to 80. `None` only
    /// for an HTTP/1.0 request with none of the three.
    pub fn authority(&self) -> Option<(String, u16)> {
        self.authority_raw()
            .map(|(host, port)| (host.to_ascii_lowercase(), port))
    }

    /// [`RequestHead::authority`] as the client wrote the host (not lowercased),
    /// without allocating.
    pub fn authority_raw(&self) -> Option<(&str, u16)> {
        let routing = self.routing?;
        Some((self.fields.str_of(routing.host), routing.port))
    }

    /// The authority the client addressed, ignoring `l5d-dst-override` (an outbound
    /// routing instruction): the absolute-form authority, else `Host`; as written (not
    /// lowercased), without a trailing dot, port 80 when none is given. The inbound side
    /// labels a request by it. Parsed again on each call.
    pub fn host_authority(&self) -> Option<(&str, u16)> {
        let (start, end, port) = parse_authority(self.fields.bytes_of(self.upstream_host))?;
        Some((self.fields.str_of(self.upstream_host.sub(start, end)), port))
    }

    /// Where [`RequestHead::authority`] came from.
    pub fn authority_source(&self) -> Option<AuthoritySource> {
        self.routing.map(|r| r.source)
    }

    /// The `Host` value to send upstream when nothing overrides it: the absolute-form
    /// authority if any (RFC 9112 section 3.2.2), else the client's `Host`, else empty.
    pub fn upstream_host(&self) -> &str {
        self.fields.str_of(self.upstream_host)
    }
}

/// RFC 9112 section 6.1-6.3 for requests.
fn request_framing(fields: &Fields, minor_version: u8) -> Result<BodyFraming, HeadError> {
    let framing = fields.framing_headers()?;
    match framing.te {
        Some(_) if minor_version == 0 => {
            Err(HeadError::Invalid("transfer-encoding in HTTP/1.0 request"))
        }
        Some(te) if !te.final_chunked => {
            Err(HeadError::Invalid("final transfer coding is not chunked"))
        }
        Some(te) if te.other => Err(HeadError::UnsupportedTransferCoding),
        Some(_) => Ok(BodyFraming::Chunked),
        None => Ok(framing
            .content_length
            .map_or(BodyFraming::None, BodyFraming::ContentLength)),
    }
}

/// The request-target, split into what routing and forwarding need.
struct TargetForm {
    path: Span,
    origin: Span,
    origin_needs_slash: bool,
    /// Absolute-form only: the parsed authority and its full text (for upstream `Host`).
    authority: Option<Routing>,
    authority_text: Option<Span>,
}

impl TargetForm {
    fn parse(method: &str, span: Span, t: &[u8]) -> Result<TargetForm, HeadError> {
        let path_end = |s: &[u8]| {
            s.iter()
                .position(|b| *b == b'?' || *b == b'#')
                .unwrap_or(s.len())
        };
        // A fragment is not part of a request-target; some clients send one anyway, and it is
        // not passed on.
        let fragment = t.iter().position(|b| *b == b'#').unwrap_or(t.len());
        if t.first() == Some(&b'/') {
            return Ok(TargetForm {
                path: span.sub(0, path_end(t)),
                origin: span.sub(0, fragment),
                origin_needs_slash: false,
                authority: None,
                authority_text: None,
            });
        }
        if method == "CONNECT" {
            // Authority-form (RFC 9112 section 3.2.3): `host:port`, port required.
            let has_port = t
                .rsplit(|b| *b == b':')
                .next()
                .is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
                && t.contains(&b':')
                && !t.ends_with(b"]");
            if !has_port || t.contains(&b'/') || t.contains(&b'@') {
                return Err(HeadError::Invalid("CONNECT needs host:port"));
            }
            let routing = authority_in(span, t, AuthoritySource::AbsoluteUri)
                .ok_or(HeadError::Invalid("invalid CONNECT authority"))?;
            return Ok(TargetForm {
                path: span.sub(0, 0),
                origin: span,
                origin_needs_slash: false,
                authority: Some(routing),
                authority_text: Some(span),
            });
        }
        if t == b"*" {
            if method != "OPTIONS" {
                return Err(HeadError::Invalid("asterisk-form target requires OPTIONS"));
            }
            return Ok(TargetForm {
                path: span,
                origin: span,
                origin_needs_slash: false,
                authority: None,
                authority_text: None,
            });
        }
        let bad = HeadError::Invalid("invalid request target");
        let scheme_end = t.windows(3).position(|w| w == b"://").ok_or(bad)?;
        let scheme = &t[..scheme_end];
        let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b));
        if !scheme_ok {
            return Err(bad);
        }
        if !scheme.eq_ignore_ascii_case(b"http") {
            return Err(HeadError::Invalid("unsupported URI scheme"));
        }
        let auth_start = scheme_end + 3;
        let rest = &t[auth_start..];
        let auth_len = rest
            .iter()
            .position(|b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len());
        let auth_text = span.sub(auth_start, auth_start + auth_len);
        let auth = &rest[..auth_len];
        if auth.contains(&b'@') {
            return Err(HeadError::Invalid("userinfo in request target"));
        }
        let routing = authority_in(auth_text, auth, AuthoritySource::AbsoluteUri)
            .ok_or(HeadError::Invalid("invalid request target authority"))?;
        let origin_start = auth_start + auth_len;
        let origin = &t[origin_start..];
        Ok(TargetForm {
            path: span.sub(origin_start, origin_start + path_end(origin)),
            origin: span.sub(origin_start, fragment.max(origin_start)),
            origin_needs_slash: origin.first() != Some(&b'/'),
            authority: Some(routing),
            authority_text: Some(auth_text),
        })
    }
}

/// Parses `value` (whose bytes sit at `span`) as `uri-host [":" port]`.
fn authority_in(span: Span, value: &[u8], source: AuthoritySource) -> Option<Routing> {
    let (host_start, host_end, port) = parse_authority(value)?;
    Some(Routing {
        host: span.sub(host_start, host_end),
        port,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn ok(bytes: &[u8]) -> RequestHead {
        match parse_request(bytes, &Limits::default()) {
            Ok(Parsed::Complete { head, consumed }) => {
                assert_eq!(consumed, bytes.len(), "whole input is the head");
                head
            }
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    #[track_caller]
    fn err(bytes: &[u8]) -> HeadError {
        match parse_request(bytes, &Limits::default()) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[track_caller]
    fn status(bytes: &[u8]) -> u16 {
        err(bytes).status()
    }

    fn authority(head: &RequestHead) -> Option<(String, u16)> {
        head.authority()
    }

    #[test]
    fn simple_get() {
        let head = ok(b"GET /users/42?x=1 HTTP/1.1\r\nHost: web.ns.svc.cluster.local:8080\r\nAccept: */*\r\n\r\n");
        assert_eq!(head.method(), "GET");
        assert_eq!(head.target(), "/users/42?x=1");
        assert_eq!(head.path(), "/users/42");
        assert_eq!(head.minor_version(), 1);
        assert!(!head.is_absolute_form());
        assert_eq!(head.framing(), BodyFraming::None);
        assert!(head.keep_alive());
        assert!(!head.expect_continue());
        assert!(!head.upgrade());
        assert_eq!(
            authority(&head),
            Some(("web.ns.svc.cluster.local".to_string(), 8080))
        );
        assert_eq!(head.authority_source(), Some(AuthoritySource::Host));
        assert_eq!(head.upstream_host(), "web.ns.svc.cluster.local:8080");
        assert_eq!(head.header("accept"), Some(&b"*/*"[..]));
        assert_eq!(head.header("missing"), None);
        let names: Vec<&str> = head.headers().map(|(n, _)| n).collect();
        assert_eq!(names, ["Host", "Accept"]);
    }

    #[test]
    fn partial_then_complete() {
        let full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for len in 0..full.len() {
            assert!(
                matches!(
                    parse_request(&full[..len], &Limits::default()),
                    Ok(Parsed::Partial)
                ),
                "prefix of {len} bytes"
            );
        }
        ok(full);
    }

    #[test]
    fn pipelined_requests() {
        let buf = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabcGET";
        let Ok(Parsed::Complete { head, consumed }) = parse_request(buf, &Limits::default()) else {
            panic!("first head");
        };
        assert_eq!(head.path(), "/a");
        assert_eq!(consumed, 28);
        let rest = &buf[consumed..];
        let Ok(Parsed::Complete { head, consumed }) = parse_request(rest, &Limits::default())
        else {
            panic!("second head");
        };
        assert_eq!(head.method(), "POST");
        assert_eq!(head.framing(), BodyFraming::ContentLength(3));
        assert_eq!(&rest[consumed..], b"abcGET");
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let buf = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let head = ok(buf);
        assert_eq!(head.method(), "GET");
    }

    #[test]
    fn bare_lf_head_is_accepted() {
        let head = ok(b"GET / HTTP/1.1\nHost: a\n\n");
        assert_eq!(authority(&head), Some(("a".to_string(), 80)));
    }

    #[test]
    fn head_too_large() {
        let limits = Limits {
            max_head_bytes: 64,
            max_headers: 100,
        };
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
        buf.resize(63, b'p');
        assert!(matches!(parse_request(&buf, &limits), Ok(Parsed::Partial)));
        buf.push(b'p');
        assert_eq!(
            parse_request(&buf, &limits).err(),
            Some(HeadError::TooLarge)
        );
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_request(&buf, &limits).err(),
            Some(HeadError::TooLarge)
        );
        assert_eq!(HeadError::TooLarge.status(), 431);
        // A head of exactly the limit is fine.
        let exact = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let limits = Limits {
            max_head_bytes: exact.len(),
            max_headers: 100,
        };
        assert!(matches!(
            parse_request(exact, &limits),
            Ok(Parsed::Complete { consumed: 27, .. })
        ));
    }

    #[test]
    fn default_limit_is_64k() {
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
        buf.resize(64 * 1024, b'p');
        assert_eq!(err(&buf), HeadError::TooLarge);
    }

    #[test]
    fn too_many_headers() {
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..99 {
            buf.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        ok(&buf);
        let mut more = buf[..buf.len() - 2].to_vec();
        more.extend_from_slice(b"x-last: v\r\n\r\n");
        assert_eq!(err(&more), HeadError::TooManyHeaders);
        assert_eq!(status(&more), 431);
        let limits = Limits {
            max_head_bytes: 1 << 20,
            max_headers: 500,
        };
        assert!(matches!(
            parse_request(&more, &limits),
            Ok(Parsed::Complete { .. })
        ));
    }

    #[test]
    fn content_length_rules() {
        let head = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(head.framing(), BodyFraming::ContentLength(5));
        let head =
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(head.framing(), BodyFraming::ContentLength(5));
        let head = ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(head.framing(), BodyFraming::ContentLength(0));
        let head =
            ok(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n");
        assert_eq!(head.framing(), BodyFraming::ContentLength(u64::MAX));
        for bad in [
            &b"+5"[..],
            b"-1",
            b"1,2",
            b"5, 6",
            b"",
            b"5,",
            b"0x10",
            b"1 2",
            b"18446744073709551616",
            b"99999999999999999999999",
        ] {
            let mut buf = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ".to_vec();
            buf.extend_from_slice(bad);
            buf.extend_from_slice(b"\r\n\r\n");
            assert_eq!(status(&buf), 400, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            HeadError::Invalid("conflicting content-length")
        );
    }

    #[test]
    fn transfer_encoding_rules() {
        let head = ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(head.framing(), BodyFraming::Chunked);
        let head = ok(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , CHUNKED ,\r\n\r\n");
        assert_eq!(head.framing(), BodyFraming::Chunked);
        let cases: [(&[u8], u16); 9] = [
            (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400),
            (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
            (b"Transfer-Encoding: gzip\r\n", 400),
            (b"Transfer-Encoding: chunked, gzip\r\n", 400),
            (b"Transfer-Encoding: chunked, chunked\r\n", 400),
            (
                b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                400,
            ),
            (b"Transfer-Encoding: \r\n", 400),
            (b"Transfer-Encoding: gzip, chunked\r\n", 501),
            (
                b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                501,
            ),
        ];
        for (headers, expected) in cases {
            let mut buf = b"POST / HTTP/1.1\r\nHost: a\r\n".to_vec();
            buf.extend_from_slice(headers);
            buf.extend_from_slice(b"\r\n");
            assert_eq!(
                status(&buf),
                expected,
                "{:?}",
                String::from_utf8_lossy(headers)
            );
        }
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x\"y, chunked\r\n\r\n"),
            HeadError::Invalid("invalid transfer-encoding")
        );
        assert_eq!(
            status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
    }

    #[test]
    fn header_syntax_rejections() {
        let cases: [&[u8]; 8] = [
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n\tb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n",
        ];
        for buf in cases {
            assert_eq!(status(buf), 400, "{:?}", String::from_utf8_lossy(buf));
        }
        let lines: [&[u8]; 5] = [
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\rX\nHost: a\r\n\r\n",
            b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for buf in lines {
            assert_eq!(status(buf), 400, "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn versions() {
        assert_eq!(
            err(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            HeadError::UnsupportedVersion
        );
        assert_eq!(
            err(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
            HeadError::UnsupportedVersion
        );
        assert_eq!(
            err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            HeadError::UnsupportedVersion
        );
        assert_eq!(status(b"GET / HTTP/2.0\r\n"), 505);
        assert_eq!(
            err(b"GET / HTTP/1.x\r\n\r\n"),
            HeadError::Invalid("invalid HTTP version")
        );
        assert_eq!(
            err(b"GET / FTP/1.1\r\n\r\n"),
            HeadError::Invalid("invalid HTTP version")
        );
        assert_eq!(err(b"GET / http/1.1\r\n\r\n").status(), 400);
        let head = ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(head.minor_version(), 0);
        assert_eq!(head.authority(), None);
        assert_eq!(head.authority_source(), None);
        assert_eq!(head.upstream_host(), "");
    }

    #[test]
    fn host_rules() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\n\r\n"),
            HeadError::Invalid("missing host header")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
            HeadError::Invalid("multiple host headers")
        );
        assert_eq!(
            err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
            HeadError::Invalid("multiple host headers")
        );
        // The full syntax is tested in `authority.rs`.
        for bad in [&b""[..], b"a b", b"a:0", b"user@a", b"[::1"] {
            let mut buf = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            buf.extend_from_slice(bad);
            buf.extend_from_slice(b"\r\n\r\n");
            assert_eq!(
                err(&buf),
                HeadError::Invalid("invalid host header"),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn host_normalization() {
        let cases: [(&[u8], &str, u16); 8] = [
            (b"Web.NS.svc.Cluster.Local.", "web.ns.svc.cluster.local", 80),
            (b"WEB.example.com.:8080", "web.example.com", 8080),
            (b"[::1]:8080", "[::1]", 8080),
            (b"[2001:DB8::1]", "[2001:db8::1]", 80),
            (b"[::ffff:10.0.0.1]:443", "[::ffff:10.0.0.1]", 443),
            (b"10.0.0.1:9090", "10.0.0.1", 9090),
            (b"localhost:", "localhost", 80),
            (b"my_svc-1:065535", "my_svc-1", 65535),
        ];
        for (host, name, port) in cases {
            let mut buf = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            buf.extend_from_slice(host);
            buf.extend_from_slice(b"\r\n\r\n");
            let head = ok(&buf);
            assert_eq!(
                authority(&head),
                Some((name.to_string(), port)),
                "{:?}",
                String::from_utf8_lossy(host)
            );
            assert_eq!(head.upstream_host().as_bytes(), host);
        }
    }

    #[test]
    fn absolute_form() {
        let head =
            ok(b"GET http://Web.Example.com.:8080/a/b?c=d HTTP/1.1\r\nHost: other:1\r\n\r\n");
        assert!(head.is_absolute_form());
        assert_eq!(head.target(), "http://Web.Example.com.:8080/a/b?c=d");
        assert_eq!(head.path(), "/a/b");
        assert_eq!(
            authority(&head),
            Some(("web.example.com".to_string(), 8080))
        );
        assert_eq!(head.authority_source(), Some(AuthoritySource::AbsoluteUri));
        assert_eq!(head.upstream_host(), "Web.Example.com.:8080");

        let head = ok(b"GET HTTP://web HTTP/1.1\r\nHost: web\r\n\r\n");
        assert_eq!(head.path(), "/");
        assert_eq!(authority(&head), Some(("web".to_string(), 80)));
        let head = ok(b"GET http://[::1]:81?x HTTP/1.0\r\n\r\n");
        assert_eq!(head.path(), "/");
        assert_eq!(authority(&head), Some(("[::1]".to_string(), 81)));

        assert_eq!(
            err(b"GET https://web/ HTTP/1.1\r\nHost: web\r\n\r\n"),
            HeadError::Invalid("unsupported URI scheme")
        );
        assert_eq!(
            err(b"GET http://user:pw@web/ HTTP/1.1\r\nHost: web\r\n\r\n"),
            HeadError::Invalid("userinfo in request target")
        );
        assert_eq!(
            err(b"GET http:///x HTTP/1.1\r\nHost: web\r\n\r\n"),
            HeadError::Invalid("invalid request target authority")
        );
        // Absolute-form still needs a (valid) Host in HTTP/1.1 (RFC 9112 section 3.2).
        assert_eq!(status(b"GET http://web/ HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn other_target_forms() {
        let head = ok(b"OPTIONS * HTTP/1.1\r\nHost: web\r\n\r\n");
        assert_eq!(head.path(), "*");
        assert_eq!(status(b"GET * HTTP/1.1\r\nHost: web\r\n\r\n"), 400);
        assert_eq!(status(b"GET web/x HTTP/1.1\r\nHost: web\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET 1http://web/ HTTP/1.1\r\nHost: web\r\n\r\n"),
            400
        );
        let head = ok(b"CONNECT Web:443 HTTP/1.1\r\nHost: other:1\r\n\r\n");
        // No path in authority-form; routes see "/".
        assert_eq!(head.path(), "/");
        assert_eq!(head.authority(), Some(("web".to_string(), 443)));
        assert_eq!(head.upstream_host(), "Web:443");
        let mut out = Vec::new();
        head.write_upstream(&mut out, head.upstream_host());
        assert_eq!(out, b"CONNECT Web:443 HTTP/1.1\r\nhost: Web:443\r\n\r\n");
        for bad in [
            &b"CONNECT web HTTP/1.1\r\nHost: web\r\n\r\n"[..],
            b"CONNECT web:443/x HTTP/1.1\r\nHost: web\r\n\r\n",
            b"CONNECT u@web:443 HTTP/1.1\r\nHost: web\r\n\r\n",
            b"CONNECT [::1] HTTP/1.1\r\nHost: web\r\n\r\n",
        ] {
            assert_eq!(status(bad), 400, "{}", String::from_utf8_lossy(bad));
        }
        let head = ok(b"GET /p#frag HTTP/1.1\r\nHost: web\r\n\r\n");
        assert_eq!(head.path(), "/p");
    }

    #[test]
    fn dst_override_precedence() {
        let head = ok(b"GET http://abs:81/ HTTP/1.1\r\nHost: host:82\r\nl5d-dst-override: Over.Ride.:83\r\n\r\n");
        assert_eq!(authority(&head), Some(("over.ride".to_string(), 83)));
        assert_eq!(head.authority_source(), Some(AuthoritySource::DstOverride));
        // The upstream Host is still the request's own authority.
        assert_eq!(head.upstream_host(), "abs:81");
        let head = ok(b"GET / HTTP/1.1\r\nL5D-Dst-Override: svc.ns.svc.cluster.local\r\nHost: host:82\r\n\r\n");
        assert_eq!(
            authority(&head),
            Some(("svc.ns.svc.cluster.local".to_string(), 80))
        );
        assert_eq!(head.upstream_host(), "host:82");
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: h\r\nl5d-dst-override: bad host\r\n\r\n"),
            HeadError::Invalid("invalid l5d-dst-override")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: h\r\nl5d-dst-override: a\r\nl5d-dst-override: b\r\n\r\n"),
            HeadError::Invalid("multiple l5d-dst-override headers")
        );
    }

    #[test]
    fn host_authority_ignores_the_override() {
        let head =
            ok(b"GET http://Abs.:81/ HTTP/1.1\r\nHost: host:82\r\nl5d-dst-override: o:83\r\n\r\n");
        assert_eq!(head.host_authority(), Some(("Abs", 81)));
        let head = ok(b"GET / HTTP/1.1\r\nl5d-dst-override: o:83\r\nHost: Web.NS.svc.\r\n\r\n");
        assert_eq!(head.host_authority(), Some(("Web.NS.svc", 80)));
        let head = ok(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
        assert_eq!(head.host_authority(), Some(("[::1]", 8080)));
        let head = ok(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(head.host_authority(), None);
    }

    #[test]
    fn keep_alive_rules() {
        let cases: [(&[u8], bool); 7] = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n",
                false,
            ),
        ];
        for (buf, expected) in cases {
            assert_eq!(
                ok(buf).keep_alive(),
                expected,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn expect_and_upgrade_flags() {
        let head =
            ok(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
        assert!(head.expect_continue());
        assert!(!ok(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue());
        let head =
            ok(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(head.upgrade());
        assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").upgrade());
        assert!(
            !ok(b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade()
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0xbad5eed);
        let seeds: [&[u8]; 4] = [
            b"GET http://a:1/b?c HTTP/1.1\r\nHost: [::1]:8\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: gzip, chunked\r\nConnection: x\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nl5d-dst-override: a.b.:0\r\nHost: \r\n\r\n",
            b"GET / HTTP/1.1\nHost: a.\nExpect: 100-continue\n\n",
        ];
        let limits = Limits {
            max_head_bytes: 256,
            max_headers: 8,
        };
        for _ in 0..20_000 {
            let seed = seeds[rng.usize(0..seeds.len())];
            let mut bytes = seed.to_vec();
            for _ in 0..rng.usize(0..6) {
                let i = rng.usize(0..bytes.len());
                match rng.u8(0..3) {
                    0 => bytes[i] = rng.u8(..),
                    1 => bytes.insert(i, b"\r\n:, []@.%"[rng.usize(0..10)]),
                    _ => {
                        bytes.remove(i);
                    }
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if rng.u8(0..10) == 0 {
                bytes = (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect();
            }
            if let Ok(Parsed::Complete { head, consumed }) = parse_request(&bytes, &limits) {
                assert!(consumed <= bytes.len());
                let _ = (head.path(), head.authority(), head.headers().count());
                let mut out = Vec::new();
                head.write_upstream(&mut out, head.upstream_host());
                assert!(out.ends_with(b"\r\n\r\n"));
            }
        }
    }
}
