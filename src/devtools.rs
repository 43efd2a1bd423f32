//! Small blocking HTTP/1.1 backends and a client, for `spoke demo` and the
//! integration tests. Not part of the data plane.
//!
//! A [`Backend`] runs a named `backend:<name>` accept thread (mio, so shutdown
//! needs no self-connect) and one thread per connection; every request it
//! receives is recorded, and a handler decides the response. [`Client`] sends
//! requests over one keep-alive connection. Both parse heads with `http1` and
//! find body ends with its `BodyDecoder`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token, Waker};

use crate::http1::{self, BodyDecoder, BodyFraming, Limits, Parsed};

/// A request as a backend received it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body bytes as framed on the wire (chunked framing included).
    pub body: Vec<u8>,
    /// The whole message: head and body, exactly as received.
    pub raw: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// What a backend answers.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering (slow backends in tests and the demo).
    pub delay: Option<Duration>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: None,
        }
    }

    pub fn with_delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-length: {}\r\n",
            self.status,
            http1::status_reason(self.status),
            self.body.len()
        )
        .into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Each connection's socket (to shut it down) and its thread (to join it).
type Conns = Arc<Mutex<Vec<(TcpStream, JoinHandle<()>)>>>;

/// A test/demo HTTP/1.1 server on a loopback port.
pub struct Backend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    accept: Option<JoinHandle<()>>,
    conns: Conns,
}

const LISTENER: Token = Token(0);
const STOP: Token = Token(1);

impl Backend {
    /// Binds `127.0.0.1:0` and serves with `handler`.
    pub fn start(name: &str, handler: Handler) -> io::Result<Backend> {
        Self::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0)), handler)
    }

    pub fn start_on(name: &str, addr: SocketAddr, handler: Handler) -> io::Result<Backend> {
        let mut listener = mio::net::TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let mut poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), STOP)?);
        let hits = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let ctx = ConnCtx {
            handler,
            hits: hits.clone(),
            received: received.clone(),
            stop: stop.clone(),
        };
        let thread_name = format!("backend:{name}");
        let conns2 = conns.clone();
        let stop2 = stop.clone();
        let accept = std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                let mut events = Events::with_capacity(16);
                loop {
                    if let Err(e) = poll.poll(&mut events, None) {
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        return;
                    }
                    if stop2.load(Ordering::Acquire) {
                        return;
                    }
                    loop {
                        match listener.accept() {
                            Ok((s, _)) => {
                                let s: TcpStream = s.into();
                                if s.set_nonblocking(false).is_err() {
                                    continue;
                                }
                                let _ = s.set_nodelay(true);
                                let Ok(clone) = s.try_clone() else { continue };
                                let ctx = ctx.clone();
                                let t = std::thread::Builder::new()
                                    .name(format!("{thread_name}:conn"))
                                    .spawn(move || ctx.serve(s));
                                if let Ok(t) = t {
                                    lock(&conns2).push((clone, t));
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(_) => break,
                        }
                    }
                }
            })?;
        Ok(Backend {
            addr,
            hits,
            received,
            stop,
            waker,
            accept: Some(accept),
            conns,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Request> {
        lock(&self.received).clone()
    }

    /// Stops accepting, closes every connection and joins every thread.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let conns: Vec<_> = lock(&self.conns).drain(..).collect();
        for (s, t) in conns {
            let _ = s.shutdown(Shutdown::Both);
            let _ = t.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone)]
struct ConnCtx {
    handler: Handler,
    hits: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl ConnCtx {
    fn serve(&self, mut s: TcpStream) {
        let mut reader = MessageReader::default();
        while !self.stop.load(Ordering::Acquire) {
            let req = match reader.read_request(&mut s) {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => return,
            };
            lock(&self.received).push(req.clone());
            let resp = (self.handler)(&req);
            if let Some(d) = resp.delay {
                std::thread::sleep(d);
            }
            self.hits.fetch_add(1, Ordering::SeqCst);
            if s.write_all(&resp.encode()).is_err() {
                return;
            }
            let close = req
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            if close {
                let _ = s.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

/// Reads whole messages (head + body) from a blocking stream.
#[derive(Default)]
struct MessageReader {
    buf: Vec<u8>,
}

impl MessageReader {
    fn fill(&mut self, s: &mut impl Read) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = s.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next request, or `None` at a clean EOF.
    fn read_request(&mut self, s: &mut impl Read) -> io::Result<Option<Request>> {
        loop {
            match http1::parse_request(&self.buf, &Limits::default()) {
                Ok(Parsed::Complete { head, consumed }) => {
                    let body_len = self.body_len(s, consumed, head.framing())?;
                    let raw: Vec<u8> = self.buf.drain(..consumed + body_len).collect();
                    return Ok(Some(Request {
                        method: head.method().to_string(),
                        target: head.target().to_string(),
                        path: head.path().to_string(),
                        headers: head
                            .headers()
                            .map(|(n, v)| (n.to_string(), v.to_vec()))
                            .collect(),
                        body: raw[consumed..].to_vec(),
                        raw,
                    }));
                }
                Ok(Parsed::Partial) => {
                    if !self.fill(s)? {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
    }

    /// Reads until the body that starts at `start` is complete; its length.
    fn body_len(
        &mut self,
        s: &mut impl Read,
        start: usize,
        framing: BodyFraming,
    ) -> io::Result<usize> {
        if framing == BodyFraming::None {
            return Ok(0);
        }
        let mut dec = BodyDecoder::new(framing);
        let mut len = 0;
        loop {
            let p = dec
                .feed(&self.buf[start + len..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            len += p.consumed;
            if p.done {
                return Ok(len);
            }
            if !self.fill(s)? {
                dec.finish_eof()
                    .map_err(|e| io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string()))?;
                return Ok(len);
            }
        }
    }
}

/// A response as the client received it.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body bytes as framed on the wire.
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body's content: a chunked body with its framing taken out, any
    /// other body as it came.
    pub fn payload(&self) -> io::Result<Vec<u8>> {
        let chunked = self
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if !chunked {
            return Ok(self.body.clone());
        }
        dechunk(&self.body)
    }
}

/// The content of a complete chunked body.
pub fn dechunk(mut wire: &[u8]) -> io::Result<Vec<u8>> {
    let mut dec = BodyDecoder::new(BodyFraming::Chunked);
    let mut out = Vec::new();
    loop {
        let p = dec
            .feed_payload(wire)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        out.extend_from_slice(&wire[p.framing..p.framing + p.payload]);
        wire = &wire[p.framing + p.payload..];
        if p.done {
            return Ok(out);
        }
        if p.framing + p.payload == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// A blocking HTTP/1.1 client over one keep-alive connection.
pub struct Client {
    stream: TcpStream,
    reader: MessageReader,
}

impl Client {
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let _ = stream.set_nodelay(true);
        Ok(Client {
            stream,
            reader: MessageReader::default(),
        })
    }

    /// Sends a request with `host`, extra headers and a body (with a
    /// content-length when non-empty), and reads the response.
    pub fn send(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Reply> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n").into_bytes();
        for (n, v) in headers {
            req.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            req.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        self.send_raw(&req, method == "HEAD")
    }

    pub fn get(&mut self, host: &str, path: &str) -> io::Result<Reply> {
        self.send("GET", host, path, &[], b"")
    }

    /// Writes `bytes` as they are and reads one response.
    pub fn send_raw(&mut self, bytes: &[u8], head_request: bool) -> io::Result<Reply> {
        self.stream.write_all(bytes)?;
        self.read_reply(head_request)
    }

    pub fn read_reply(&mut self, head_request: bool) -> io::Result<Reply> {
        loop {
            match http1::parse_response(&self.reader.buf, &Limits::default(), head_request) {
                Ok(Parsed::Complete { head, consumed }) => {
                    if head.is_interim() {
                        self.reader.buf.drain(..consumed);
                        continue;
                    }
                    let len = self
                        .reader
                        .body_len(&mut self.stream, consumed, head.framing())?;
                    let raw: Vec<u8> = self.reader.buf.drain(..consumed + len).collect();
                    return Ok(Reply {
                        status: head.status(),
                        headers: head
                            .headers()
                            .map(|(n, v)| (n.to_string(), v.to_vec()))
                            .collect(),
                        body: raw[consumed..].to_vec(),
                    });
                }
                Ok(Parsed::Partial) => {
                    if !self.reader.fill(&mut self.stream)? {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
    }

    /// Whether the server has closed the connection (reads EOF without data).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0))
    }
}

/// One GET over a fresh connection.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> io::Result<Reply> {
    Client::connect(addr, Duration::from_secs(5))?.get(host, path)
}
