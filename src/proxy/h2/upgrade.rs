//! Linkerd's HTTP/1-over-HTTP/2 between proxies, the sending half
//! (event-loop thread): an outbound HTTP/1 request to an endpoint whose
//! discovery hint says its proxy takes HTTP/2 goes as one stream on the
//! shared HTTP/2 connection to it, with `l5d-orig-proto` naming the
//! original protocol (`HTTP/1.1`, `; absolute-form` when it was); the
//! receiving proxy turns it back into HTTP/1 (`downgrade.rs`).
//!
//! [`Upgraded`] looks to the HTTP/1 exchange like a connection of its own
//! (`proxy/exchange/wire.rs`): it takes the request's HTTP/1 bytes as the
//! exchange writes them (head, then the body in its HTTP/1 framing) and
//! gives back the response as HTTP/1 bytes, so every policy of the HTTP/1
//! path (retries with the replayed body, timeouts, P2C, its error
//! responses, `Connection` handling towards the client) applies unchanged,
//! and no h2 type leaves this module. Its task is the exchange's session:
//! h2 wakes [`TaskId::Wire`] with the upstream slot, and the loop drives
//! the session that owns it.
//!
//! Flow control: a request body run is sent as the stream's window allows
//! and no more is taken from the exchange until it is out; a response DATA
//! frame's window is released once its bytes were handed to the exchange's
//! read buffer, and the next is read only after that, so buffering here is
//! one run or one frame per direction.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};

use super::downgrade::{connection_names, L5D_ORIG_PROTO};
use super::pump::Half;
use super::task::{TaskHandle, TaskId};
use super::upstream::{self, Status, UpRef};
use crate::conn_failure::{ConnFailure, NotProcessed};
use crate::http1::{self, BodyDecoder, BodyFraming, Parsed, RequestHead};
use crate::proxy::buffer::{Buffer, Filled};
use crate::proxy::ctx::{Ctx, DialError};
use crate::proxy::pool::UpstreamKey;

const NOT_UPGRADABLE: &str = "the request has no HTTP/2 form";

/// What the client's request was, for `l5d-orig-proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Original {
    /// The client spoke HTTP/1.0 (`0`) or HTTP/1.1 (`1`).
    pub minor: u8,
    pub absolute_form: bool,
    /// A `HEAD` request: the response has no body, whatever it says.
    pub head: bool,
}

impl Original {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match (self.minor, self.absolute_form) {
            (0, false) => "HTTP/1.0",
            (0, true) => "HTTP/1.0; absolute-form",
            (_, false) => "HTTP/1.1",
            (_, true) => "HTTP/1.1; absolute-form",
        })
    }
}

/// Whether the HTTP/2 connection under an upgraded request is up.
pub enum Opened {
    Pending,
    Done,
    Failed(ConnFailure),
}

enum Req {
    /// The head's bytes so far.
    Head(Vec<u8>),
    /// Parsed; the stream starts once the connection takes one more.
    Start(Box<Request<()>>, BodyFraming),
    Body {
        to: SendStream<Bytes>,
        decoder: BodyDecoder,
        half: Half,
    },
    Done,
}

enum Resp {
    /// The stream has not started.
    NotYet,
    Head(ResponseFuture),
    Body {
        from: RecvStream,
        chunked: bool,
    },
    Done,
}

/// One HTTP/1 request carried as a stream on a shared HTTP/2 connection.
pub struct Upgraded {
    task: TaskHandle,
    up: UpRef,
    orig: Original,
    limits: http1::Limits,
    /// The `:authority` when the request has no `Host` (HTTP/1.0).
    fallback_authority: Arc<str>,
    send: Option<SendRequest<Bytes>>,
    req: Req,
    resp: Resp,
    /// Response bytes produced and not yet read by the exchange.
    out: Vec<u8>,
    out_off: usize,
    /// The connection takes no more streams (it refused one).
    retire: bool,
    /// Bytes the current `fill` gave the exchange.
    given: usize,
    /// An error met after them, for the next `fill`.
    deferred: Option<io::Error>,
}

impl Upgraded {
    /// Takes a stream slot on an HTTP/2 connection to `key` (connecting one
    /// when none has room) for a request whose exchange owns socket slot
    /// `sock`; that slot's session is driven when the stream has news.
    pub fn open(
        key: &UpstreamKey,
        sock: usize,
        orig: Original,
        fallback_authority: &Arc<str>,
        ctx: &mut Ctx<'_>,
    ) -> Result<Upgraded, DialError> {
        let task = TaskHandle::new(TaskId::Wire(sock), ctx.h2_ready);
        let up = upstream::checkout(ctx, key, task.waker())?;
        Ok(Upgraded {
            task,
            up,
            orig,
            limits: ctx.cfg.limits,
            fallback_authority: fallback_authority.clone(),
            send: None,
            req: Req::Head(Vec::with_capacity(512)),
            resp: Resp::NotYet,
            out: Vec::new(),
            out_off: 0,
            retire: false,
            given: 0,
            deferred: None,
        })
    }

    /// Whether the connection is ready for the stream.
    pub fn connect_status(&mut self, ctx: &mut Ctx<'_>) -> Opened {
        self.task.polling();
        match ctx.h2.status(self.up, self.task.waker()) {
            Status::Pending => Opened::Pending,
            Status::Failed(f) => Opened::Failed(f),
            Status::Ready(send) => {
                self.send = Some(send);
                Opened::Done
            }
        }
    }

    /// The exchange is done with it: the stream (reset if unfinished) and
    /// its slot on the connection go.
    pub fn close(self, ctx: &mut Ctx<'_>) {
        if self.retire {
            ctx.h2.retire(self.up);
        }
        ctx.h2.release(self.up, ctx.now);
    }

    /// Sends on what the request has queued (the stream's start, a body
    /// run the window had no room for, its end) and reads the response, as
    /// HTTP/1 bytes, into `buf`. The exchange calls it on every step: the
    /// request side may have nothing more to write and still be waiting.
    pub fn fill(&mut self, buf: &mut Buffer) -> io::Result<Filled> {
        self.task.polling();
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        self.feed(&[])?;
        self.given = 0;
        match buf.fill_from(self) {
            // A stream that failed right after the bytes it gave this call
            // (the head, part of a body, then RST_STREAM): the bytes first,
            // so the exchange sees the response started; the error on the
            // next call, which this wake brings.
            Err(e) if self.given > 0 => {
                self.deferred = Some(e);
                self.task.wake();
                Ok(Filled::Some(self.given))
            }
            other => other,
        }
    }

    /// Takes request bytes; `Ok(0)` only for empty input.
    fn feed(&mut self, input: &[u8]) -> io::Result<usize> {
        let mut used = 0;
        loop {
            match &mut self.req {
                Req::Head(head) => {
                    let rest = &input[used..];
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let from = head.len().saturating_sub(3);
                    head.extend_from_slice(rest);
                    let Some(at) = find_end(&head[from..]) else {
                        if head.len() > self.limits.max_head_bytes {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "request head to upgrade too large",
                            ));
                        }
                        return Ok(input.len());
                    };
                    let end = from + at;
                    let extra = head.len() - end;
                    head.truncate(end);
                    used = input.len() - extra;
                    let (req, framing) = self.request(end)?;
                    self.req = Req::Start(Box::new(req), framing);
                }
                Req::Start(..) => {
                    if !self.start()? {
                        return Ok(used);
                    }
                }
                Req::Body { to, decoder, half } => {
                    let mut cx = self.task.context();
                    match half.flush(None, to, &mut cx) {
                        Poll::Pending => return Ok(used),
                        Poll::Ready(Err(e)) => return Err(stream_error(e)),
                        Poll::Ready(Ok(())) => {}
                    }
                    if decoder.is_done() {
                        // The end of the body: an empty END_STREAM.
                        to.send_data(Bytes::new(), true).map_err(stream_error)?;
                        self.req = Req::Done;
                        continue;
                    }
                    let rest = &input[used..];
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let p = decoder
                        .feed_payload(rest)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    let data = &rest[p.framing..p.framing + p.payload];
                    if !data.is_empty() {
                        half.queue_replay(Bytes::copy_from_slice(data));
                    }
                    used += p.framing + p.payload;
                    if p.framing + p.payload == 0 && !decoder.is_done() {
                        // Nothing the decoder could take: the caller's bytes
                        // are not a body (it checked them already).
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "request body framing",
                        ));
                    }
                }
                // Bytes past the body: nothing an exchange writes.
                Req::Done => return Ok(input.len()),
            }
        }
    }

    /// The HTTP/2 request for the head's first `len` bytes.
    fn request(&mut self, len: usize) -> io::Result<(Request<()>, BodyFraming)> {
        let Req::Head(bytes) = &mut self.req else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        bytes.truncate(len);
        fill_empty_host(bytes, &self.fallback_authority);
        let head = match http1::parse_request(bytes, &self.limits) {
            Ok(Parsed::Complete { head, .. }) => head,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request head to upgrade",
                ))
            }
        };
        upgraded_request(&head, self.orig, &self.fallback_authority)
            .map(|req| (req, head.framing()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, NOT_UPGRADABLE))
    }

    /// Whether a write failed because the request has no HTTP/2 form (the
    /// exchange sends it as HTTP/1 instead).
    pub fn cannot_carry(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::InvalidInput && e.to_string() == NOT_UPGRADABLE
    }

    /// Starts the stream once the connection takes it; `false` while it
    /// cannot yet.
    fn start(&mut self) -> io::Result<bool> {
        let Some(send) = self.send.as_mut() else {
            return Ok(false);
        };
        let mut cx = self.task.context();
        match send.poll_ready(&mut cx) {
            Poll::Pending => return Ok(false),
            Poll::Ready(Err(e)) => {
                self.retire = true;
                return Err(stream_error(e));
            }
            Poll::Ready(Ok(())) => {}
        }
        let Req::Start(req, framing) = std::mem::replace(&mut self.req, Req::Done) else {
            return Ok(true);
        };
        let decoder = BodyDecoder::new(framing);
        let eos = decoder.is_done();
        let (resp, to) = send.send_request(*req, eos).map_err(|e| {
            self.retire = true;
            stream_error(e)
        })?;
        self.resp = Resp::Head(resp);
        if !eos {
            self.req = Req::Body {
                to,
                decoder,
                half: Half::default(),
            };
        }
        Ok(true)
    }

    /// Produces more response bytes into `out`; `false` when there are
    /// none for now.
    fn produce(&mut self) -> io::Result<bool> {
        let mut cx = self.task.context();
        match &mut self.resp {
            Resp::NotYet | Resp::Done => Ok(false),
            Resp::Head(fut) => match Pin::new(fut).poll(&mut cx) {
                Poll::Pending => Ok(false),
                Poll::Ready(Err(e)) => {
                    // A GOAWAY: the connection takes no new stream.
                    self.retire |= e.is_go_away();
                    Err(stream_error(e))
                }
                Poll::Ready(Ok(resp)) => {
                    self.resp = self.response_head(resp);
                    Ok(true)
                }
            },
            Resp::Body { from, chunked } => match from.poll_data(&mut cx) {
                Poll::Pending => Ok(false),
                Poll::Ready(Some(Err(e))) => Err(stream_error(e)),
                Poll::Ready(Some(Ok(data))) => {
                    // Handed on: the exchange's buffer took it.
                    let _ = from.flow_control().release_capacity(data.len());
                    if *chunked {
                        if !data.is_empty() {
                            let _ = write!(self.out, "{:x}\r\n", data.len());
                            self.out.extend_from_slice(&data);
                            self.out.extend_from_slice(b"\r\n");
                        }
                    } else {
                        self.out.extend_from_slice(&data);
                    }
                    Ok(true)
                }
                Poll::Ready(None) => match from.poll_trailers(&mut cx) {
                    Poll::Pending => Ok(false),
                    Poll::Ready(Err(e)) => Err(stream_error(e)),
                    Poll::Ready(Ok(trailers)) => {
                        if *chunked {
                            self.out.extend_from_slice(b"0\r\n");
                            if let Some(t) = &trailers {
                                write_fields(&mut self.out, t);
                            }
                            self.out.extend_from_slice(b"\r\n");
                        }
                        self.resp = Resp::Done;
                        Ok(true)
                    }
                },
            },
        }
    }

    /// Writes the HTTP/1 head of `resp` into `out`; what follows it.
    fn response_head(&mut self, resp: Response<RecvStream>) -> Resp {
        let (parts, body) = resp.into_parts();
        let eos = body.is_end_stream();
        let status = parts.status.as_u16();
        let bodiless = self.orig.head || status == 204 || status == 304 || status < 200;
        let framing = response_head(&mut self.out, status, &parts.headers, bodiless, eos);
        match framing {
            Some(chunked) => Resp::Body {
                from: body,
                chunked,
            },
            None => Resp::Done,
        }
    }
}

impl Read for Upgraded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_off < self.out.len() {
                let n = buf.len().min(self.out.len() - self.out_off);
                buf[..n].copy_from_slice(&self.out[self.out_off..self.out_off + n]);
                self.out_off += n;
                self.given += n;
                return Ok(n);
            }
            self.out.clear();
            self.out_off = 0;
            if !self.produce()? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }
}

impl Write for Upgraded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.task.polling();
        let mut total = 0;
        for b in bufs {
            let n = self.feed(b)?;
            total += n;
            if n < b.len() {
                break;
            }
        }
        let wanted: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 && wanted > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The exchange writes an empty `host:` for a request that named no
/// authority (HTTP/1.0 routed by `l5d-dst-override`); HTTP/2 needs one:
/// the destination's name goes there.
fn fill_empty_host(head: &mut Vec<u8>, authority: &str) {
    const EMPTY: &[u8] = b"\r\nhost: \r\n";
    if let Some(at) = head.windows(EMPTY.len()).position(|w| w == EMPTY) {
        let value = at + EMPTY.len() - 2;
        head.splice(value..value, authority.bytes());
    }
}

/// Where the head's blank line ends in `bytes`, if it is there.
fn find_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// An h2 error as the exchange takes it: a stream the peer refused
/// unprocessed goes again whatever the request (`NotProcessed`); any other,
/// before a response, is a connection failure (the request may go to another
/// endpoint under RFC 9110's rules); after, the response is cut short.
fn stream_error(e: h2::Error) -> io::Error {
    if upstream::unprocessed(&e) {
        NotProcessed::io_error(e)
    } else {
        io::Error::new(io::ErrorKind::ConnectionReset, e)
    }
}

/// Headers HTTP/2 has no place for (RFC 9113 section 8.2.2), and `Host`,
/// which becomes `:authority`.
fn connection_specific(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "host"
    )
}

/// The HTTP/2 request for an HTTP/1 request head: `:authority` from `Host`
/// (or `fallback`), connection-specific headers and those `Connection`
/// names dropped, `te` kept only as `trailers`, and `l5d-orig-proto`
/// added. `None` for a target HTTP/2 cannot carry (`OPTIONS *`).
pub fn upgraded_request(head: &RequestHead, orig: Original, fallback: &str) -> Option<Request<()>> {
    let host = head
        .header("host")
        .filter(|h| !h.is_empty())
        .unwrap_or(fallback.as_bytes());
    let target = head.target();
    let uri = if target.starts_with('/') {
        Uri::builder()
            .scheme("http")
            .authority(host)
            .path_and_query(target.split('#').next().unwrap_or(target))
            .build()
            .ok()?
    } else {
        // Absolute form: the target names the authority itself.
        target
            .parse::<Uri>()
            .ok()
            .filter(|u| u.authority().is_some())?
    };
    let named = connection_names(head.header("connection"));
    let mut headers = HeaderMap::new();
    for (name, value) in head.headers() {
        // `from_bytes` lowercases the name.
        let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let lower = n.as_str();
        if connection_specific(lower)
            || named.iter().any(|c| c == lower)
            || n == L5D_ORIG_PROTO
            || (lower == "te" && !value.eq_ignore_ascii_case(b"trailers"))
        {
            continue;
        }
        let Ok(v) = HeaderValue::from_bytes(value) else {
            continue;
        };
        headers.append(n, v);
    }
    headers.insert(L5D_ORIG_PROTO, orig.header());
    let mut req = Request::new(());
    *req.method_mut() = head.method().parse().ok()?;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Some(req)
}

/// Writes the HTTP/1.1 head of an HTTP/2 response into `out`, and says
/// how its body follows: `None`, none (`bodiless`, or the stream ended
/// with its head); `Some(false)`, as it comes (its `content-length` says
/// where it ends); `Some(true)`, chunked, trailers in the last chunk.
/// `l5d-orig-proto` (the receiving proxy's note) is dropped.
pub fn response_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &HeaderMap,
    bodiless: bool,
    eos: bool,
) -> Option<bool> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    write_fields(out, headers);
    let has_length = headers.contains_key(http::header::CONTENT_LENGTH);
    let framing = if bodiless {
        None
    } else if eos {
        if !has_length {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        None
    } else if has_length {
        Some(false)
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Some(true)
    };
    out.extend_from_slice(b"\r\n");
    framing
}

/// The fields as HTTP/1 header lines, but `l5d-orig-proto`.
fn write_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        if name == L5D_ORIG_PROTO {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether a request may be upgraded at all: not one asking for a
/// protocol upgrade or a tunnel (those need the HTTP/1 connection itself,
/// as in Linkerd), and not `OPTIONS *`.
pub fn upgradable(method: &str, target: &str, asks_upgrade: bool) -> bool {
    !asks_upgrade && method != "CONNECT" && target != "*"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> RequestHead {
        match http1::parse_request(raw.as_bytes(), &http1::Limits::default()) {
            Ok(Parsed::Complete { head, .. }) => head,
            other => panic!("{raw:?} does not parse: {:?}", other.is_ok()),
        }
    }

    const ORIG: Original = Original {
        minor: 1,
        absolute_form: false,
        head: false,
    };

    #[test]
    fn the_request_names_its_original_protocol_and_loses_hop_by_hop_headers() {
        let h = head(
            "POST /a?b=1 HTTP/1.1\r\nHost: books:7000\r\nConnection: keep-alive, x-hop\r\n\
             X-Hop: 1\r\nTE: gzip\r\nTransfer-Encoding: chunked\r\nX-Kept: 2\r\n\r\n",
        );
        let req = upgraded_request(&h, ORIG, "fallback:1").expect("upgradable");
        assert_eq!(req.method(), "POST");
        assert_eq!(req.uri().to_string(), "http://books:7000/a?b=1");
        let names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-kept", "l5d-orig-proto"], "{names:?}");
        assert_eq!(req.headers()[L5D_ORIG_PROTO], "HTTP/1.1");
    }

    #[test]
    fn http10_and_absolute_form_are_said_and_a_missing_host_is_filled_in() {
        let h = head("GET /x HTTP/1.0\r\nTE: trailers\r\n\r\n");
        let orig = Original { minor: 0, ..ORIG };
        let req = upgraded_request(&h, orig, "books.ns.svc:7000").expect("upgradable");
        assert_eq!(req.uri().to_string(), "http://books.ns.svc:7000/x");
        assert_eq!(req.headers()[L5D_ORIG_PROTO], "HTTP/1.0");
        assert_eq!(req.headers()["te"], "trailers");
        let abs = Original {
            absolute_form: true,
            ..ORIG
        };
        assert_eq!(abs.header(), "HTTP/1.1; absolute-form");
        let h = head("GET http://other:81/y HTTP/1.1\r\nHost: other:81\r\n\r\n");
        let req = upgraded_request(&h, abs, "f:1").expect("upgradable");
        assert_eq!(req.uri().to_string(), "http://other:81/y");
        assert!(!upgradable("OPTIONS", "*", false));
        assert!(!upgradable("GET", "/", true));
        assert!(!upgradable("CONNECT", "a:1", false));
        assert!(upgradable("GET", "/", false));
    }

    #[test]
    fn the_response_head_says_how_its_body_follows() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert(L5D_ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
        let mut out = Vec::new();
        assert_eq!(response_head(&mut out, 200, &h, false, false), Some(true));
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        h.insert("content-length", HeaderValue::from_static("5"));
        let mut out = Vec::new();
        assert_eq!(response_head(&mut out, 201, &h, false, false), Some(false));
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 201 Created\r\n"));
        // Ended with its head, no length: an empty body, said so.
        let mut out = Vec::new();
        assert_eq!(
            response_head(&mut out, 404, &HeaderMap::new(), false, true),
            None
        );
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
        );
        // HEAD: headers as they are, no body.
        let mut out = Vec::new();
        assert_eq!(response_head(&mut out, 200, &h, true, true), None);
        assert!(String::from_utf8_lossy(&out).contains("content-length: 5\r\n"));
        // Each response head parses as HTTP/1.
        let limits = http1::Limits::default();
        assert!(matches!(
            http1::parse_response(&out, &limits, true),
            Ok(Parsed::Complete { .. })
        ));
    }

    #[test]
    fn an_empty_host_gets_the_destination_name() {
        let mut h = b"GET /old HTTP/1.1\r\nhost: \r\nx: 1\r\n\r\n".to_vec();
        fill_empty_host(&mut h, "books:7000");
        assert_eq!(h, b"GET /old HTTP/1.1\r\nhost: books:7000\r\nx: 1\r\n\r\n");
        let mut h = b"GET / HTTP/1.1\r\nhost: a:1\r\n\r\n".to_vec();
        fill_empty_host(&mut h, "books:7000");
        assert_eq!(h, b"GET / HTTP/1.1\r\nhost: a:1\r\n\r\n");
    }

    #[test]
    fn the_head_end_is_found_across_writes() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n\r"), None);
    }
}
