//! Linkerd's HTTP/1-over-HTTP/2 between proxies, the receiving half
//! (event-loop thread): a request that came over HTTP/2 carrying
//! `l5d-orig-proto: HTTP/1.1` is an HTTP/1 request a client proxy upgraded
//! to share its connection; it goes to the application as HTTP/1.1 again,
//! the header removed (the `:authority` becomes `Host`, `; absolute-form`
//! restores the absolute request target), and the HTTP/1 response comes
//! back over the HTTP/2 stream, hop-by-hop headers dropped.
//!
//! The head conversions are pure functions ([`orig_proto`],
//! [`request_head`], [`response_headers`]); [`H1Leg`] is the one HTTP/1
//! connection a stream task drives for such a request (its socket's events
//! wake the stream task, `Owner::H2Stream`). The request body goes chunked
//! unless its length is known; the response body is decoded with the
//! HTTP/1 core's framing (`crate::http1`) and sent as DATA frames.

use std::io::{self, Write};
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};

use super::pump::Half;
use crate::http1::{self, BodyDecoder, BodyFraming, Parsed, ResponseHead};
use crate::proxy::buffer::{Buffer, Filled};
use crate::proxy::pool::IdleConn;
use crate::proxy::ready::Readiness;
use crate::proxy::transport::{Connect, Transport};

pub const L5D_ORIG_PROTO: HeaderName = HeaderName::from_static("l5d-orig-proto");

/// What `l5d-orig-proto` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrigProto {
    /// The original request target was in absolute form.
    pub absolute_form: bool,
}

/// The original protocol of an upgraded request, if it was HTTP/1.1 (the
/// only one spoke downgrades to; an HTTP/1.0 original goes as 1.1).
pub fn orig_proto(headers: &HeaderMap) -> Option<OrigProto> {
    let v = headers.get(L5D_ORIG_PROTO)?.to_str().ok()?;
    let mut parts = v.split(';').map(str::trim);
    let proto = parts.next()?;
    if !proto.eq_ignore_ascii_case("HTTP/1.1") && !proto.eq_ignore_ascii_case("HTTP/1.0") {
        return None;
    }
    let absolute_form = parts.any(|p| p.eq_ignore_ascii_case("absolute-form"));
    Some(OrigProto { absolute_form })
}

/// Headers HTTP/1 and HTTP/2 do not share (RFC 9113 section 8.2.2).
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade"
    )
}

/// The header names a `Connection` value lists (lowercase): hop-by-hop
/// too, so not carried across HTTP/1 and HTTP/2 either way.
pub fn connection_names(value: Option<&[u8]>) -> Vec<String> {
    value
        .map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

/// How the request body goes to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqFraming {
    None,
    Length,
    Chunked,
}

/// The HTTP/1.1 request head for an upgraded request, and how its body is
/// framed. `has_body`: the HTTP/2 request did not end with its HEADERS.
pub fn request_head(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    orig: OrigProto,
    has_body: bool,
) -> (Vec<u8>, ReqFraming) {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    if orig.absolute_form {
        out.extend_from_slice(uri.to_string().as_bytes());
    } else {
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        out.extend_from_slice(target.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(http::header::HOST) {
        if let Some(a) = uri.authority() {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(a.as_str().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    let mut length = false;
    for (name, value) in headers {
        let n = name.as_str();
        if n == L5D_ORIG_PROTO.as_str() || hop_by_hop(n) {
            continue;
        }
        length |= n == "content-length";
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = match (has_body, length) {
        (_, true) => ReqFraming::Length,
        (false, false) => ReqFraming::None,
        (true, false) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            ReqFraming::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    (out, framing)
}

/// The HTTP/2 response headers for an HTTP/1 response head: hop-by-hop
/// headers, and those its `Connection` names, dropped; `l5d-orig-proto`
/// says the response was HTTP/1.1 (Linkerd's client proxy reads it, and
/// drops it).
pub fn response_headers(head: &ResponseHead) -> HeaderMap {
    let named = connection_names(head.header("connection"));
    let mut map = HeaderMap::new();
    for (name, value) in head.headers() {
        let lower = name.to_ascii_lowercase();
        if hop_by_hop(&lower) || lower == "te" || named.contains(&lower) {
            continue;
        }
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(lower.as_bytes()),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        map.append(n, v);
    }
    map.insert(L5D_ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
    map
}

/// What a step of the leg produced.
pub enum LegEvent {
    /// Nothing more for now.
    Idle,
    /// Connected (the balancer may count it).
    Connected,
    /// The response head: status, headers, and its body's framing
    /// (`BodyFraming::None`: no body follows).
    Head(u16, HeaderMap, BodyFraming),
    /// The response is complete.
    Done,
}

/// Why the leg failed.
#[derive(Debug)]
pub enum LegError {
    Connect(io::Error),
    /// The connection failed before a response head (nothing of it sent on).
    Io(io::Error),
    /// The response was not valid HTTP/1.
    Protocol,
    /// The client's HTTP/2 stream failed.
    Client(h2::Error),
}

enum Resp {
    Head,
    Body {
        decoder: BodyDecoder,
        to: SendStream<Bytes>,
        half: Half,
    },
    Done,
}

/// The HTTP/1 connection to the application for one upgraded request:
/// taken from the direction's pool or made for it, and back in the pool
/// after a clean exchange ([`H1Leg::reusable`]).
pub struct H1Leg {
    pub transport: Transport,
    pub sock: usize,
    connected: bool,
    /// The response is complete.
    complete: bool,
    /// The response allows another request on the connection.
    keep_alive: bool,
    /// Some of the client's body went into it (a new attempt could not
    /// send it again).
    took_body: bool,
    out: Vec<u8>,
    written: usize,
    framing: ReqFraming,
    req_done: bool,
    head_is_head: bool,
    inbuf: Buffer,
    eof: bool,
    resp: Resp,
}

impl H1Leg {
    pub fn new(
        transport: Transport,
        sock: usize,
        head: Vec<u8>,
        framing: ReqFraming,
        head_is_head: bool,
        buffer: usize,
    ) -> H1Leg {
        H1Leg {
            transport,
            sock,
            connected: false,
            complete: false,
            keep_alive: false,
            took_body: false,
            out: head,
            written: 0,
            req_done: framing == ReqFraming::None,
            framing,
            head_is_head,
            inbuf: Buffer::new(buffer),
            eof: false,
            resp: Resp::Head,
        }
    }

    /// A leg on a pooled connection (connected, its read buffer kept).
    pub fn reusing(mut self, buf: Buffer) -> H1Leg {
        self.connected = true;
        self.inbuf = buf;
        self
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn took_body(&self) -> bool {
        self.took_body
    }

    /// The exchange ended cleanly, and both sides allow another on the
    /// connection: it may go back to the pool.
    pub fn reusable(&self) -> bool {
        self.complete
            && self.keep_alive
            && self.req_done
            && self.out.is_empty()
            && self.inbuf.is_empty()
            && !self.eof
    }

    /// The connection and its (empty) read buffer, idle from `now`, for
    /// the pool.
    pub fn into_idle(self, now: std::time::Instant) -> IdleConn {
        IdleConn {
            stream: self.transport,
            sock: self.sock,
            since: now,
            buf: self.inbuf,
        }
    }

    pub fn ready(&mut self, r: Readiness) {
        self.transport.ready(r);
    }

    /// Counts the bytes moved since the last call (`tcp_*`).
    pub fn count_bytes(&mut self) {
        self.transport.count_bytes();
    }

    /// The head went out and the response body's stream is `to` (the
    /// client's); from now on the body goes there.
    pub fn stream_to(&mut self, to: SendStream<Bytes>, framing: BodyFraming) {
        self.resp = Resp::Body {
            decoder: BodyDecoder::new(framing),
            to,
            half: Half::default(),
        };
    }

    /// Advances the leg: connect, write, read the client's body up, parse
    /// the response, send its body on.
    pub fn step(
        &mut self,
        client: &mut RecvStream,
        limits: &http1::Limits,
        cx: &mut Context<'_>,
    ) -> Result<LegEvent, LegError> {
        if !self.connected {
            match self.transport.connect_status() {
                Connect::Pending => return Ok(LegEvent::Idle),
                Connect::Failed(e) => return Err(LegError::Connect(e)),
                Connect::Done => {
                    self.connected = true;
                    return Ok(LegEvent::Connected);
                }
            }
        }
        loop {
            let mut progress = self.write_out().map_err(LegError::Io)?;
            if self.written == self.out.len() && !self.req_done {
                progress |= self.read_client(client, cx)?;
            }
            if !self.eof && !self.inbuf.is_full() {
                match self.transport.fill(&mut self.inbuf) {
                    Ok(Filled::Some(_)) => progress = true,
                    Ok(Filled::Nothing) => {}
                    Ok(Filled::Eof) => {
                        self.eof = true;
                        progress = true;
                    }
                    Err(e) => return Err(LegError::Io(e)),
                }
            }
            match self.resp {
                Resp::Head => {
                    if let Some(ev) = self.parse_head(limits)? {
                        return Ok(ev);
                    }
                    if self.eof {
                        return Err(LegError::Io(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Resp::Body { .. } => {
                    if self.body(cx)? {
                        self.resp = Resp::Done;
                        return Ok(LegEvent::Done);
                    }
                }
                Resp::Done => return Ok(LegEvent::Done),
            }
            if !progress {
                return Ok(LegEvent::Idle);
            }
        }
    }

    fn write_out(&mut self) -> io::Result<bool> {
        let mut progress = false;
        while self.written < self.out.len() {
            match self.transport.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(progress)
    }

    /// Takes one DATA frame (or the end) of the client's body into `out`,
    /// framed; its window is released once it is queued here.
    fn read_client(
        &mut self,
        client: &mut RecvStream,
        cx: &mut Context<'_>,
    ) -> Result<bool, LegError> {
        match client.poll_data(cx) {
            Poll::Pending => Ok(false),
            Poll::Ready(Some(Ok(chunk))) => {
                let _ = client.flow_control().release_capacity(chunk.len());
                self.took_body |= !chunk.is_empty();
                if self.framing == ReqFraming::Chunked && !chunk.is_empty() {
                    let _ = write!(self.out, "{:x}\r\n", chunk.len());
                    self.out.extend_from_slice(&chunk);
                    self.out.extend_from_slice(b"\r\n");
                } else {
                    self.out.extend_from_slice(&chunk);
                }
                Ok(true)
            }
            Poll::Ready(Some(Err(e))) => Err(LegError::Client(e)),
            Poll::Ready(None) => {
                // HTTP/2 trailers have no HTTP/1 place here but the
                // chunked trailer section, and Linkerd drops them too.
                if self.framing == ReqFraming::Chunked {
                    self.out.extend_from_slice(b"0\r\n\r\n");
                }
                self.req_done = true;
                Ok(true)
            }
        }
    }

    fn parse_head(&mut self, limits: &http1::Limits) -> Result<Option<LegEvent>, LegError> {
        loop {
            if self.inbuf.is_empty() {
                return Ok(None);
            }
            let parsed = http1::parse_response(self.inbuf.bytes(), limits, self.head_is_head)
                .map_err(|_| LegError::Protocol)?;
            let (head, consumed) = match parsed {
                Parsed::Partial => return Ok(None),
                Parsed::Complete { head, consumed } => (head, consumed),
            };
            self.inbuf.consume(consumed);
            if head.is_interim() {
                continue;
            }
            if head.is_switching() {
                return Err(LegError::Protocol);
            }
            self.keep_alive = head.keep_alive() && head.framing() != BodyFraming::CloseDelimited;
            self.complete = head.framing() == BodyFraming::None;
            let headers = response_headers(&head);
            return Ok(Some(LegEvent::Head(head.status(), headers, head.framing())));
        }
    }

    /// Sends what the response body has on; `true` once it is complete.
    fn body(&mut self, cx: &mut Context<'_>) -> Result<bool, LegError> {
        let Resp::Body { decoder, to, half } = &mut self.resp else {
            return Ok(true);
        };
        loop {
            match half.flush(None, to, cx) {
                Poll::Pending => return Ok(false),
                Poll::Ready(Err(e)) => return Err(LegError::Client(e)),
                Poll::Ready(Ok(())) => {}
            }
            if decoder.is_done() {
                let _ = to.send_data(Bytes::new(), true);
                self.complete = true;
                return Ok(true);
            }
            if self.inbuf.is_empty() {
                if self.eof {
                    decoder.finish_eof().map_err(|_| LegError::Protocol)?;
                    continue;
                }
                return Ok(false);
            }
            let p = decoder
                .feed_payload(self.inbuf.bytes())
                .map_err(|_| LegError::Protocol)?;
            let data = &self.inbuf.bytes()[p.framing..p.framing + p.payload];
            if !data.is_empty() {
                half.queue_replay(Bytes::copy_from_slice(data));
            }
            self.inbuf.consume(p.framing + p.payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn orig_proto_is_read_as_linkerd_writes_it() {
        let of = |v: &str| orig_proto(&headers(&[("l5d-orig-proto", v)]));
        assert_eq!(
            of("HTTP/1.1"),
            Some(OrigProto {
                absolute_form: false
            })
        );
        assert_eq!(
            of("HTTP/1.1; absolute-form"),
            Some(OrigProto {
                absolute_form: true
            })
        );
        assert_eq!(
            of("HTTP/1.0"),
            Some(OrigProto {
                absolute_form: false
            })
        );
        assert_eq!(of("HTTP/2"), None);
        assert_eq!(orig_proto(&HeaderMap::new()), None);
    }

    #[test]
    fn the_request_becomes_http11_with_host_and_framing() {
        let uri: Uri = "http://books.ns.svc:7000/a/b?c=1".parse().expect("uri");
        let h = headers(&[
            ("l5d-orig-proto", "HTTP/1.1"),
            ("x-a", "1"),
            ("te", "trailers"),
        ]);
        let orig = OrigProto {
            absolute_form: false,
        };
        let (head, framing) = request_head(&Method::POST, &uri, &h, orig, true);
        assert_eq!(
            String::from_utf8(head).expect("utf8"),
            "POST /a/b?c=1 HTTP/1.1\r\nhost: books.ns.svc:7000\r\nx-a: 1\r\nte: trailers\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(framing, ReqFraming::Chunked);
        // A known length is kept; no body, no framing; absolute form.
        let h = headers(&[("content-length", "3"), ("host", "other")]);
        let abs = OrigProto {
            absolute_form: true,
        };
        let (head, framing) = request_head(&Method::PUT, &uri, &h, abs, true);
        assert_eq!(
            String::from_utf8(head).expect("utf8"),
            "PUT http://books.ns.svc:7000/a/b?c=1 HTTP/1.1\r\ncontent-length: 3\r\nhost: other\r\n\r\n"
        );
        assert_eq!(framing, ReqFraming::Length);
        let (_, framing) = request_head(&Method::GET, &uri, &HeaderMap::new(), orig, false);
        assert_eq!(framing, ReqFraming::None);
    }

    #[test]
    fn hop_by_hop_response_headers_are_dropped() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\n\
                    Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-Kept: 2\r\n\r\n";
        let limits = http1::Limits::default();
        let Ok(Parsed::Complete { head, .. }) = http1::parse_response(raw, &limits, false) else {
            panic!("parses");
        };
        let h = response_headers(&head);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-kept"], "2");
        assert_eq!(h[L5D_ORIG_PROTO], "HTTP/1.1");
    }
}
