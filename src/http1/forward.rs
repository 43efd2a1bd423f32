//! Serializing heads for forwarding: a client's request head towards upstream and an
//! upstream's response head towards the client, minus hop-by-hop headers (RFC 9110
//! section 7.6.1) and with framing headers written from the parsed framing.
//!
//! Event-loop thread, pure: appends to the caller's write buffer (one reserve per head).
//! Parsing is in `request.rs` / `response.rs`; body bytes are forwarded by the connection,
//! delimited (and chunk framing rewritten) by `body.rs`.

use super::head::{Fields, Kind};
use super::{push_u64, BodyFraming, RequestHead, ResponseHead};

/// What the client connection must do once a forwarded response (and its body) is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterResponse {
    /// The connection can carry the client's next request.
    KeepAlive,
    /// Close the client connection after the body (the head said `connection: close`).
    Close,
}

/// Request headers a listener drops when forwarding, besides the hop-by-hop ones: a
/// fixed list of lowercase names, matched ignoring case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropHeaders(&'static [&'static str]);

impl DropHeaders {
    pub const fn new(names: &'static [&'static str]) -> DropHeaders {
        DropHeaders(names)
    }

    /// Whether header `name` is one of them.
    pub fn contains(self, name: &[u8]) -> bool {
        self.0
            .iter()
            .any(|n| n.len() == name.len() && n.as_bytes().eq_ignore_ascii_case(name))
    }
}

impl RequestHead {
    /// Appends the head to send upstream:
    ///
    /// ```text
    /// METHOD origin-form HTTP/1.1
    /// host: <authority_header>
    /// <client headers minus Host, hop-by-hop and framing headers, in order>
    /// content-length: n | transfer-encoding: chunked    (as the framing requires)
    /// ```
    ///
    /// An absolute-form target is sent in origin-form. `authority_header` replaces the
    /// client's `Host`; pass [`RequestHead::upstream_host`] to keep the client's (or the
    /// absolute URI's) authority. CR, LF and other control bytes in it are dropped.
    /// Removed: `Connection` and every header it names, `Keep-Alive`, `Proxy-Connection`,
    /// `TE`, `Trailer`, `Upgrade` (so an upgrade is declined) and `l5d-dst-override`.
    /// `Expect` is kept, so a `100 Continue` comes from upstream. The request line is
    /// always HTTP/1.1 (the upstream connection is spoke's own).
    pub fn write_upstream(&self, out: &mut Vec<u8>, authority_header: &str) {
        // Nothing more to drop: the check compiles away.
        self.write_upstream_with(out, authority_header, |_| false);
    }

    /// [`RequestHead::write_upstream`], also dropping the headers in `drop`
    /// (the inbound side's: what a client must not tell the application).
    pub fn write_upstream_dropping(
        &self,
        out: &mut Vec<u8>,
        authority_header: &str,
        drop: DropHeaders,
    ) {
        self.write_upstream_with(out, authority_header, |name| drop.contains(name));
    }

    #[inline]
    fn write_upstream_with(
        &self,
        out: &mut Vec<u8>,
        authority_header: &str,
        also_drop: impl Fn(&[u8]) -> bool,
    ) {
        let fields = &self.fields;
        out.reserve(fields.raw.len() + authority_header.len() + 48);
        out.extend_from_slice(self.method().as_bytes());
        out.push(b' ');
        if self.origin_needs_slash {
            out.push(b'/');
        }
        out.extend_from_slice(fields.bytes_of(self.origin));
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        push_sanitized(out, authority_header.as_bytes());
        out.extend_from_slice(b"\r\n");
        write_end_to_end(out, fields, |kind, name| {
            matches!(kind, Kind::Host | Kind::DstOverride)
                || is_hop_or_framing(kind)
                || (kind == Kind::Other && also_drop(name))
        });
        if self.upgrade() {
            // The one hop-by-hop exchange passed on: the upstream decides
            // whether to switch, and a 101 turns both connections into a
            // tunnel.
            write_upgrade(out, fields);
        }
        match self.framing() {
            BodyFraming::ContentLength(n) => push_header_u64(out, b"content-length", n),
            BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            BodyFraming::None | BodyFraming::CloseDelimited => {}
        }
        out.extend_from_slice(b"\r\n");
    }
}

impl ResponseHead {
    /// Appends the head to send to the client and says whether the client connection must
    /// close after this response.
    ///
    /// `close`: the caller wants to close anyway (client asked, draining, error);
    /// `client_minor_version`: the request's [`RequestHead::minor_version`].
    ///
    /// - The status line is `HTTP/1.1 <status> <reason>` (a server answers with its own
    ///   version; HTTP/1.0 clients accept it).
    /// - Hop-by-hop headers are removed as in `write_upstream`; Content-Length is written
    ///   once, normalized; Transfer-Encoding values are kept as sent (they may list
    ///   codings before `chunked`, which the client decodes). 1xx and 204 get neither;
    ///   HEAD and 304 responses keep them as metadata.
    /// - The connection closes (and the head says `connection: close`) when `close`, when
    ///   the body is close-delimited, or when an HTTP/1.0 client gets a chunked body: it
    ///   knows no transfer codings (RFC 9112 section 6.1), so the head has no
    ///   Transfer-Encoding, the caller passes on the chunk data alone
    ///   (`Pipe::dechunk`), and the close ends the body. An HTTP/1.0 client kept open
    ///   gets `connection: keep-alive`.
    /// - A 1xx head gets no connection header and returns `KeepAlive`; the caller must not
    ///   forward 1xx to an HTTP/1.0 client (RFC 9110 section 15.2).
    pub fn write_downstream(
        &self,
        out: &mut Vec<u8>,
        close: bool,
        client_minor_version: u8,
    ) -> AfterResponse {
        let fields = &self.fields;
        let status = self.status();
        out.reserve(fields.raw.len() + 48);
        out.extend_from_slice(b"HTTP/1.1 ");
        push_u64(out, u64::from(status));
        out.push(b' ');
        push_sanitized(out, self.reason().as_bytes());
        out.extend_from_slice(b"\r\n");
        write_end_to_end(out, fields, |kind, _| is_hop_or_framing(kind));

        if self.is_interim() {
            out.extend_from_slice(b"\r\n");
            return AfterResponse::KeepAlive;
        }
        if self.is_switching() {
            write_upgrade(out, fields);
            out.extend_from_slice(b"\r\n");
            return AfterResponse::Close;
        }
        if status != 204 {
            if self.has_transfer_encoding && client_minor_version == 0 {
                // Not for an HTTP/1.0 client: see above.
            } else if self.has_transfer_encoding {
                out.extend_from_slice(b"transfer-encoding: ");
                let mut first = true;
                for h in fields
                    .headers
                    .iter()
                    .filter(|h| h.kind == Kind::TransferEncoding)
                {
                    if !first {
                        out.extend_from_slice(b", ");
                    }
                    first = false;
                    out.extend_from_slice(fields.bytes_of(h.value));
                }
                out.extend_from_slice(b"\r\n");
            } else if let Some(n) = self.content_length {
                push_header_u64(out, b"content-length", n);
            }
        }
        let framing = self.framing();
        let must_close = close
            || framing == BodyFraming::CloseDelimited
            || (client_minor_version == 0 && framing == BodyFraming::Chunked);
        let after = if must_close {
            out.extend_from_slice(b"connection: close\r\n");
            AfterResponse::Close
        } else {
            if client_minor_version == 0 {
                out.extend_from_slice(b"connection: keep-alive\r\n");
            }
            AfterResponse::KeepAlive
        };
        out.extend_from_slice(b"\r\n");
        after
    }
}

/// Hop-by-hop headers (never forwarded) and framing headers (rewritten from the framing).
fn is_hop_or_framing(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Connection
            | Kind::KeepAlive
            | Kind::ProxyConnection
            | Kind::Te
            | Kind::Trailer
            | Kind::Upgrade
            | Kind::ContentLength
            | Kind::TransferEncoding
    )
}

/// Copies every header line that `skip` (given its kind and name) does not reject and that
/// `Connection` does not name, normalizing the separator to `": "` and the line end to CRLF.
fn write_end_to_end(out: &mut Vec<u8>, fields: &Fields, skip: impl Fn(Kind, &[u8]) -> bool) {
    for h in &fields.headers {
        let name = fields.bytes_of(h.name);
        if skip(h.kind, name) || fields.named_by_connection(name) {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(fields.bytes_of(h.value));
        out.extend_from_slice(b"\r\n");
    }
}

impl ResponseHead {
    /// Appends the head of a `2xx` answer to `CONNECT`: status line and
    /// end-to-end headers only (such an answer has no body, and the
    /// connection becomes a tunnel).
    pub fn write_tunnel_established(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_u64(out, u64::from(self.status()));
        out.push(b' ');
        push_sanitized(out, self.reason().as_bytes());
        out.extend_from_slice(b"\r\n");
        write_end_to_end(out, &self.fields, |kind, _| is_hop_or_framing(kind));
        out.extend_from_slice(b"\r\n");
    }
}

/// `upgrade: <protocols>` as sent, plus `connection: upgrade`.
fn write_upgrade(out: &mut Vec<u8>, fields: &Fields) {
    for h in fields.headers.iter().filter(|h| h.kind == Kind::Upgrade) {
        out.extend_from_slice(b"upgrade: ");
        out.extend_from_slice(fields.bytes_of(h.value));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: upgrade\r\n");
}

fn push_header_u64(out: &mut Vec<u8>, name: &[u8], n: u64) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    push_u64(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends `value` minus bytes that could end a header line or are not allowed in a field
/// value (CTLs other than HTAB), so caller-supplied text cannot inject header lines.
fn push_sanitized(out: &mut Vec<u8>, value: &[u8]) {
    out.extend(
        value
            .iter()
            .copied()
            .filter(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::{parse_request, parse_response, Limits, Parsed};

    #[track_caller]
    fn req(bytes: &[u8]) -> RequestHead {
        match parse_request(bytes, &Limits::default()) {
            Ok(Parsed::Complete { head, .. }) => head,
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    #[track_caller]
    fn res(bytes: &[u8], head_request: bool) -> ResponseHead {
        match parse_response(bytes, &Limits::default(), head_request) {
            Ok(Parsed::Complete { head, .. }) => head,
            other => panic!("expected a complete response, got {other:?}"),
        }
    }

    fn upstream(head: &RequestHead) -> String {
        let mut out = Vec::new();
        head.write_upstream(&mut out, head.upstream_host());
        String::from_utf8(out).expect("ascii test input")
    }

    fn downstream(head: &ResponseHead, close: bool, minor: u8) -> (String, AfterResponse) {
        let mut out = Vec::new();
        let after = head.write_downstream(&mut out, close, minor);
        (String::from_utf8(out).expect("ascii test input"), after)
    }

    #[test]
    fn upstream_plain_get() {
        let head = req(b"GET /a?b=1 HTTP/1.1\r\nHost: web:8080\r\nAccept: */*\r\n\r\n");
        assert_eq!(
            upstream(&head),
            "GET /a?b=1 HTTP/1.1\r\nhost: web:8080\r\nAccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn upstream_strips_hop_by_hop_and_connection_named() {
        let head = req(
            b"GET / HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, X-Secret, Upgrade\r\n\
              Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
              Trailer: x-sum\r\nUpgrade: websocket\r\nx-secret: 1\r\nl5d-dst-override: other:81\r\n\
              connection: Foo\r\nfoo: bar\r\nX-Keep: yes\r\n\r\n",
        );
        // An upgrade request is the one case where Upgrade goes on (as a
        // clean pair), since a 101 turns the connection into a tunnel.
        assert_eq!(
            upstream(&head),
            "GET / HTTP/1.1\r\nhost: web\r\nX-Keep: yes\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
        );
        let head = req(
            b"GET / HTTP/1.1\r\nHost: web\r\nConnection: X-Secret\r\nTE: trailers\r\n\
              Upgrade: websocket\r\nx-secret: 1\r\nX-Keep: yes\r\n\r\n",
        );
        assert_eq!(
            upstream(&head),
            "GET / HTTP/1.1\r\nhost: web\r\nX-Keep: yes\r\n\r\n"
        );
    }

    #[test]
    fn upstream_drops_the_listed_headers_in_any_case() {
        let head = req(
            b"GET / HTTP/1.1\r\nHost: web\r\nL5D-Client-Id: evil.ns.sa\r\n\
              x-keep: 1\r\nl5d-client-id: again\r\nl5d-client-idx: kept\r\n\r\n",
        );
        let drop = DropHeaders::new(&["l5d-client-id"]);
        let mut out = Vec::new();
        head.write_upstream_dropping(&mut out, head.upstream_host(), drop);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "GET / HTTP/1.1\r\nhost: web\r\nx-keep: 1\r\nl5d-client-idx: kept\r\n\r\n"
        );
        // Without a list, the header goes on.
        assert!(upstream(&head).contains("L5D-Client-Id: evil.ns.sa\r\n"));
        assert!(drop.contains(b"L5D-CLIENT-ID") && !drop.contains(b"l5d-client"));
    }

    #[test]
    fn upstream_absolute_form_becomes_origin_form() {
        let head = req(b"GET http://Example.COM:8080/x/y?q#f HTTP/1.1\r\nHost: ignored\r\n\r\n");
        assert_eq!(
            upstream(&head),
            "GET /x/y?q HTTP/1.1\r\nhost: Example.COM:8080\r\n\r\n"
        );
        let head = req(b"GET /p?q#frag HTTP/1.1\r\nHost: web\r\n\r\n");
        assert_eq!(upstream(&head), "GET /p?q HTTP/1.1\r\nhost: web\r\n\r\n");
        let head = req(b"GET http://web#f HTTP/1.1\r\nHost: web\r\n\r\n");
        assert_eq!(upstream(&head), "GET / HTTP/1.1\r\nhost: web\r\n\r\n");
        let head = req(b"GET http://web?q=1 HTTP/1.1\r\nHost: web\r\n\r\n");
        assert_eq!(upstream(&head), "GET /?q=1 HTTP/1.1\r\nhost: web\r\n\r\n");
        let head = req(b"OPTIONS * HTTP/1.1\r\nHost: web\r\n\r\n");
        assert_eq!(upstream(&head), "OPTIONS * HTTP/1.1\r\nhost: web\r\n\r\n");
    }

    #[test]
    fn upstream_framing_is_normalized() {
        let head =
            req(b"POST / HTTP/1.1\r\nHost: w\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(
            upstream(&head),
            "POST / HTTP/1.1\r\nhost: w\r\ncontent-length: 5\r\n\r\n"
        );
        let head = req(b"POST / HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(
            upstream(&head),
            "POST / HTTP/1.1\r\nhost: w\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let head = req(b"POST / HTTP/1.1\r\nHost: w\r\nContent-Length: 0\r\n\r\n");
        assert!(upstream(&head).contains("content-length: 0\r\n"));
    }

    #[test]
    fn upstream_authority_header_is_sanitized_and_replaces_host() {
        let head = req(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n");
        let mut out = Vec::new();
        head.write_upstream(&mut out, "evil\r\nx-injected: 1");
        assert_eq!(out, b"GET / HTTP/1.1\r\nhost: evilx-injected: 1\r\n\r\n");
    }

    #[test]
    fn upstream_http10_without_host() {
        let head = req(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let mut out = Vec::new();
        head.write_upstream(&mut out, "web.ns.svc.cluster.local:80");
        assert_eq!(
            out,
            b"GET / HTTP/1.1\r\nhost: web.ns.svc.cluster.local:80\r\n\r\n"
        );
    }

    #[test]
    fn upstream_keeps_expect() {
        let head =
            req(b"PUT /x HTTP/1.1\r\nHost: w\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(
            upstream(&head),
            "PUT /x HTTP/1.1\r\nhost: w\r\nExpect: 100-continue\r\ncontent-length: 3\r\n\r\n"
        );
    }

    #[test]
    fn downstream_plain() {
        let head = res(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n",
            false,
        );
        let (text, after) = downstream(&head, false, 1);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 2\r\n\r\n"
        );
        assert_eq!(after, AfterResponse::KeepAlive);
    }

    #[test]
    fn downstream_close_and_hop_by_hop() {
        let head = res(
            b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n\
              Transfer-Encoding: chunked\r\nTrailer: x-sum\r\nX-End: 2\r\n\r\n",
            false,
        );
        let (text, after) = downstream(&head, true, 1);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nX-End: 2\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(after, AfterResponse::Close);
    }

    #[test]
    fn downstream_close_delimited_forces_close() {
        let head = res(b"HTTP/1.1 200 OK\r\n\r\n", false);
        let (text, after) = downstream(&head, false, 1);
        assert_eq!(text, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
        assert_eq!(after, AfterResponse::Close);
    }

    #[test]
    fn downstream_http10_client() {
        let head = res(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        let (text, after) = downstream(&head, false, 0);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\n"
        );
        assert_eq!(after, AfterResponse::KeepAlive);
        // No transfer coding for an HTTP/1.0 client: the body goes de-chunked (a coding
        // besides chunked is refused before this, see `has_codings_besides_chunked`), ended
        // by the close.
        let head = res(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert!(!head.has_codings_besides_chunked());
        let (text, after) = downstream(&head, false, 0);
        assert_eq!(text, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
        assert_eq!(after, AfterResponse::Close);
        let head = res(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert!(head.has_codings_besides_chunked());
    }

    #[test]
    fn downstream_bodiless_statuses() {
        let head = res(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(
            downstream(&head, false, 1).0,
            "HTTP/1.1 204 No Content\r\n\r\n"
        );
        let head = res(
            b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n",
            false,
        );
        assert_eq!(
            downstream(&head, false, 1).0,
            "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\ncontent-length: 10\r\n\r\n"
        );
        let head = res(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true);
        assert_eq!(head.framing(), BodyFraming::None);
        assert_eq!(
            downstream(&head, false, 1).0,
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"
        );
    }

    #[test]
    fn downstream_interim() {
        let head = res(b"HTTP/1.1 100 Continue\r\n\r\n", false);
        let (text, after) = downstream(&head, true, 1);
        assert_eq!(text, "HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(after, AfterResponse::KeepAlive);
    }

    #[test]
    fn downstream_reason_with_obs_text_is_dropped() {
        let head = res(b"HTTP/1.1 200 \xffok\r\nContent-Length: 0\r\n\r\n", false);
        assert_eq!(
            downstream(&head, false, 1).0,
            "HTTP/1.1 200 \r\ncontent-length: 0\r\n\r\n"
        );
    }
}
