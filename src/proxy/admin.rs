//! The admin server's connections, served on the event loop: `GET /metrics`
//! (Prometheus text), `GET /ready`, `GET /live`. Each connection reads one
//! small request, answers it and closes; nothing here blocks.

use std::io::{self, Write};

use mio::net::TcpStream;

use super::buffer::{Buffer, Filled};

/// Requests larger than this are refused (an admin request is one line).
const MAX_REQUEST: usize = 8 * 1024;

pub struct AdminConn {
    pub stream: TcpStream,
    pub sock: usize,
    inbuf: Buffer,
    out: Vec<u8>,
    written: usize,
    answered: bool,
}

/// What the admin endpoints need from the rest of the proxy.
pub trait AdminState {
    fn render_metrics(&self, out: &mut String);
    fn is_ready(&self) -> bool;
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
            match req.parse(self.inbuf.bytes()) {
                Ok(httparse::Status::Complete(_)) => {
                    self.out = respond(req.method.unwrap_or(""), req.path.unwrap_or(""), state);
                    self.answered = true;
                }
                Ok(httparse::Status::Partial) if !self.inbuf.is_full() => return false,
                _ => {
                    self.out = response(400, "text/plain", b"bad request\n");
                    self.answered = true;
                }
            }
        }
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return true,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        true
    }
}

/// The response for one admin request (pure; tested below).
pub fn respond(method: &str, target: &str, state: &dyn AdminState) -> Vec<u8> {
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return response(405, "text/plain", b"method not allowed\n");
    }
    match path {
        "/metrics" => {
            let mut text = String::with_capacity(16 * 1024);
            state.render_metrics(&mut text);
            response(200, "text/plain; version=0.0.4", text.as_bytes())
        }
        "/ready" if state.is_ready() => response(200, "text/plain", b"ready\n"),
        "/ready" => response(503, "text/plain", b"not ready\n"),
        "/live" => response(200, "text/plain", b"live\n"),
        _ => response(404, "text/plain", b"not found\n"),
    }
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

    struct Fixed(bool);
    impl AdminState for Fixed {
        fn render_metrics(&self, out: &mut String) {
            out.push_str("request_total 1\n");
        }
        fn is_ready(&self) -> bool {
            self.0
        }
    }

    fn text(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn endpoints() {
        let r = text(respond("GET", "/ready", &Fixed(true)));
        assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
        assert!(r.ends_with("\r\n\r\nready\n"));
        let r = text(respond("GET", "/ready", &Fixed(false)));
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(r.ends_with("not ready\n"));
        let r = text(respond("GET", "/live", &Fixed(false)));
        assert!(r.ends_with("\r\n\r\nlive\n"));
        let r = text(respond("GET", "/metrics?x=1", &Fixed(true)));
        assert!(r.contains("content-length: 16\r\n"), "{r}");
        assert!(r.ends_with("request_total 1\n"));
        assert!(text(respond("GET", "/nope", &Fixed(true))).starts_with("HTTP/1.1 404 "));
        assert!(text(respond("POST", "/ready", &Fixed(true))).starts_with("HTTP/1.1 405 "));
    }
}
