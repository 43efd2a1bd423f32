//! The admin server's connections, served on the event loop: `GET /metrics`
//! (Prometheus text), `GET /ready`, `GET /live`, `GET /destinations` (JSON:
//! each live destination's endpoints and whether they are reached over mTLS;
//! `destinations.rs`). Each connection reads one small request, answers it
//! and closes; nothing here blocks.
//!
//! `/metrics` is written a piece at a time: the next piece is rendered only
//! once the socket has taken the last one, so a scrape holds one piece
//! (`METRICS_PIECE`) however many series there are, and a slow scraper only
//! slows itself. HTTP/1.1 gets the body chunked; HTTP/1.0 gets it ended by the
//! close.

pub mod destinations;

use std::io::{self, Write};

use mio::net::TcpStream;

use super::buffer::{Buffer, Filled};
use crate::metrics::RenderCursor;

/// Requests larger than this are refused (an admin request is one line).
const MAX_REQUEST: usize = 8 * 1024;
/// Bytes of exposition text rendered at a time for `/metrics`.
const METRICS_PIECE: usize = 32 * 1024;

pub struct AdminConn {
    pub stream: TcpStream,
    pub sock: usize,
    inbuf: Buffer,
    out: Vec<u8>,
    written: usize,
    answered: bool,
    /// The rest of a `/metrics` body, while there is one.
    metrics: Option<MetricsBody>,
}

/// What the admin endpoints need from the rest of the proxy.
pub trait AdminState {
    /// Appends exposition text from `cursor` on, until `out` holds at least
    /// `budget` bytes; `true` when the whole registry is written.
    fn render_metrics(&self, cursor: &mut RenderCursor, out: &mut String, budget: usize) -> bool;
    fn is_ready(&self) -> bool;
    /// The `/destinations` document.
    fn destinations(&self) -> String;
}

impl AdminConn {
    pub fn new(stream: TcpStream, sock: usize) -> Self {
        AdminConn {
            stream,
            sock,
            inbuf: Buffer::new(MAX_REQUEST),
            out: Vec::new(),
            written: 0,
            answered: false,
            metrics: None,
        }
    }

    /// Reads, answers and writes; `true` when the connection should close.
    pub fn drive(&mut self, state: &dyn AdminState) -> bool {
        if !self.answered {
            match self.inbuf.fill_from(&mut self.stream) {
                Ok(Filled::Eof) | Err(_) => return true,
                Ok(_) => {}
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let reply = match req.parse(self.inbuf.bytes()) {
                Ok(httparse::Status::Complete(_)) => respond(
                    req.method.unwrap_or(""),
                    req.path.unwrap_or(""),
                    req.version == Some(1),
                    state,
                ),
                Ok(httparse::Status::Partial) if !self.inbuf.is_full() => return false,
                _ => Reply::plain(response(400, "text/plain", b"bad request\n")),
            };
            self.out = reply.head;
            self.metrics = reply.metrics;
            self.answered = true;
        }
        loop {
            while self.written < self.out.len() {
                match self.stream.write(&self.out[self.written..]) {
                    Ok(0) => return true,
                    Ok(n) => self.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return true,
                }
            }
            let Some(body) = self.metrics.as_mut() else {
                return true;
            };
            self.out.clear();
            self.written = 0;
            if body.next_piece(state, &mut self.out) {
                self.metrics = None;
            }
        }
    }
}

/// An answer: the bytes to send first, and for `/metrics` the body still to
/// render.
pub struct Reply {
    pub head: Vec<u8>,
    pub metrics: Option<MetricsBody>,
}

impl Reply {
    fn plain(bytes: Vec<u8>) -> Self {
        Reply {
            head: bytes,
            metrics: None,
        }
    }
}

/// The part of a `/metrics` body not yet written.
pub struct MetricsBody {
    cursor: RenderCursor,
    chunked: bool,
    text: String,
}

impl MetricsBody {
    fn new(chunked: bool) -> Self {
        MetricsBody {
            cursor: RenderCursor::default(),
            chunked,
            text: String::new(),
        }
    }

    /// Appends the next piece of the body, framed, to `out`; `true` when it
    /// was the last.
    pub fn next_piece(&mut self, state: &dyn AdminState, out: &mut Vec<u8>) -> bool {
        self.text.clear();
        let done = state.render_metrics(&mut self.cursor, &mut self.text, METRICS_PIECE);
        if !self.chunked {
            out.extend_from_slice(self.text.as_bytes());
            return done;
        }
        if !self.text.is_empty() {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{:x}\r\n", self.text.len());
            out.extend_from_slice(self.text.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if done {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        done
    }
}

/// The answer to one admin request (pure; tested below). `http11`: the
/// request was HTTP/1.1, so a body of unknown length can be chunked.
pub fn respond(method: &str, target: &str, http11: bool, state: &dyn AdminState) -> Reply {
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return Reply::plain(response(405, "text/plain", b"method not allowed\n"));
    }
    let json;
    let (status, body): (u16, &[u8]) = match path {
        "/metrics" => {
            let framing = if http11 {
                "transfer-encoding: chunked\r\n"
            } else {
                ""
            };
            return Reply {
                head: format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n{framing}connection: close\r\n\r\n"
                )
                .into_bytes(),
                metrics: (!head_only).then(|| MetricsBody::new(http11)),
            };
        }
        "/ready" if state.is_ready() => (200, b"ready\n"),
        "/ready" => (503, b"not ready\n"),
        "/live" => (200, b"live\n"),
        "/destinations" => {
            json = state.destinations();
            (200, json.as_bytes())
        }
        _ => (404, b"not found\n"),
    };
    let content_type = if path == "/destinations" {
        "application/json"
    } else {
        "text/plain"
    };
    let mut out = response(status, content_type, body);
    if head_only {
        out.truncate(out.len() - body.len());
    }
    Reply::plain(out)
}

fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        crate::http1::status_reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Labels, Registry};

    struct Fixed {
        ready: bool,
        registry: Registry,
    }

    impl Fixed {
        fn new(ready: bool) -> Self {
            let registry = Registry::new();
            registry
                .counter_family("request_total", "Requests.")
                .unwrap()
                .series(Labels::new())
                .inc();
            Fixed { ready, registry }
        }
    }

    impl AdminState for Fixed {
        fn render_metrics(
            &self,
            cursor: &mut RenderCursor,
            out: &mut String,
            budget: usize,
        ) -> bool {
            self.registry.render_some(cursor, out, budget)
        }
        fn is_ready(&self) -> bool {
            self.ready
        }
        fn destinations(&self) -> String {
            "{\"destinations\": []}\n".into()
        }
    }

    /// Everything the connection would write for this reply.
    fn wire(reply: Reply, state: &dyn AdminState) -> String {
        let mut out = reply.head;
        if let Some(mut body) = reply.metrics {
            while !body.next_piece(state, &mut out) {}
        }
        String::from_utf8(out).unwrap()
    }

    fn get(target: &str, state: &Fixed) -> String {
        wire(respond("GET", target, true, state), state)
    }

    #[test]
    fn endpoints() {
        let r = get("/ready", &Fixed::new(true));
        assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
        assert!(r.ends_with("\r\n\r\nready\n"));
        let r = get("/ready", &Fixed::new(false));
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(r.ends_with("not ready\n"));
        assert!(get("/live", &Fixed::new(false)).ends_with("\r\n\r\nlive\n"));
        assert!(get("/nope", &Fixed::new(true)).starts_with("HTTP/1.1 404 "));
        let d = get("/destinations", &Fixed::new(true));
        assert!(d.starts_with("HTTP/1.1 200 "), "{d}");
        assert!(d.contains("content-type: application/json\r\n"), "{d}");
        assert!(d.ends_with("\r\n\r\n{\"destinations\": []}\n"), "{d}");
        let r = wire(
            respond("POST", "/ready", true, &Fixed::new(true)),
            &Fixed::new(true),
        );
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
    }

    #[test]
    fn head_requests_get_the_head_alone() {
        let state = Fixed::new(true);
        let r = wire(respond("HEAD", "/live", true, &state), &state);
        assert!(r.contains("content-length: 5\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "{r}");
        let r = wire(respond("HEAD", "/metrics", true, &state), &state);
        assert!(
            r.ends_with("\r\n\r\n") && !r.contains("request_total"),
            "{r}"
        );
    }

    #[test]
    fn metrics_are_chunked_for_http11_and_close_delimited_for_http10() {
        let state = Fixed::new(true);
        let r = get("/metrics?x=1", &state);
        assert!(r.contains("transfer-encoding: chunked\r\n"), "{r}");
        assert!(!r.contains("content-length"), "{r}");
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("connection: close"), "{head}");
        let text = crate::devtools::dechunk(body.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            state.registry.render_to_string()
        );

        let r = wire(respond("GET", "/metrics", false, &state), &state);
        assert!(
            !r.contains("transfer-encoding") && !r.contains("content-length"),
            "{r}"
        );
        assert_eq!(
            r.split_once("\r\n\r\n").unwrap().1,
            state.registry.render_to_string()
        );
    }

    #[test]
    fn a_large_registry_is_written_in_bounded_pieces() {
        let state = Fixed::new(true);
        let family = state.registry.histogram_family("lat_ms", "L.").unwrap();
        for i in 0..2_000 {
            family.series(Labels::new().with("authority", format!("svc{i}.example:80")));
        }
        let whole = state.registry.render_to_string();
        assert!(whole.len() > 20 * METRICS_PIECE, "{} bytes", whole.len());
        let mut body = respond("GET", "/metrics", false, &state).metrics.unwrap();
        let mut text = Vec::new();
        let mut pieces = 0;
        loop {
            let mut piece = Vec::new();
            let done = body.next_piece(&state, &mut piece);
            // A piece stops after the series that crossed the budget.
            assert!(
                piece.len() < METRICS_PIECE + 8 * 1024,
                "{} bytes",
                piece.len()
            );
            text.extend_from_slice(&piece);
            pieces += 1;
            if done {
                break;
            }
        }
        assert!(pieces > 20, "{pieces} pieces");
        assert_eq!(String::from_utf8(text).unwrap(), whole);
    }
}
