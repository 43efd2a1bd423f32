//! Byte-level tools for the HTTP/1.1 conformance suite (`tests/http1_conformance.rs`):
//! a raw TCP backend that records every byte each accepted connection carried and answers
//! with whatever bytes its test scripts, and a raw client that writes arbitrary bytes to
//! the proxy and splits what comes back into responses.
//!
//! Test threads only: `RawBackend` runs a named accept thread plus one thread per
//! connection and joins them all on drop. The devtools `Backend` (see `support/mod.rs`)
//! records only requests it could parse; this one records garbage too, so "nothing reached
//! the backend" is checked on the wire, not on what a parser made of it.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use spoke::http1::{self, BodyDecoder, BodyFraming, Limits, Parsed};

use crate::support::{eventually, patience};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What one accepted connection carried from the proxy.
#[derive(Default)]
struct ConnLog {
    bytes: Mutex<Vec<u8>>,
    /// The proxy closed (or reset) its side.
    eof: AtomicBool,
}

/// The script of a raw backend: called once per accepted connection, on that
/// connection's own thread, with the connection's index in accept order.
pub type Script = Arc<dyn Fn(&mut BackendConn) + Send + Sync>;

struct Shared {
    stop: AtomicBool,
    logs: Mutex<Vec<Arc<ConnLog>>>,
    /// Each connection's socket (to shut it down on drop) and thread.
    threads: Mutex<Vec<(TcpStream, JoinHandle<()>)>>,
}

/// A loopback TCP server that records every byte and answers as scripted.
pub struct RawBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl RawBackend {
    pub fn start(name: &str, script: Script) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw backend");
        let addr = listener.local_addr().expect("raw backend address");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            logs: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let thread_name = format!("raw-backend:{name}");
        let accept = std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                for stream in listener.incoming() {
                    if sh.stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let _ = stream.set_nodelay(true);
                    let Ok(clone) = stream.try_clone() else {
                        continue;
                    };
                    let log = Arc::new(ConnLog::default());
                    let index = {
                        let mut logs = lock(&sh.logs);
                        logs.push(log.clone());
                        logs.len() - 1
                    };
                    let script = script.clone();
                    let t = std::thread::Builder::new()
                        .name(format!("{thread_name}:conn{index}"))
                        .spawn(move || {
                            let mut conn = BackendConn {
                                stream,
                                log,
                                buf: Vec::new(),
                                index,
                            };
                            script(&mut conn);
                            // Whatever the script left unread is still recorded.
                            conn.drain_to_eof();
                        })
                        .expect("spawn raw backend connection");
                    lock(&sh.threads).push((clone, t));
                }
            })
            .expect("spawn raw backend");
        RawBackend {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// A backend that answers every request with `reply(connection, request)`.
    pub fn serving(
        name: &str,
        reply: impl Fn(usize, &Got) -> Vec<u8> + Send + Sync + 'static,
    ) -> RawBackend {
        RawBackend::start(
            name,
            Arc::new(move |conn: &mut BackendConn| {
                while let Some(req) = conn.next_request() {
                    let bytes = reply(conn.index(), &req);
                    conn.write(&bytes);
                }
            }),
        )
    }

    /// A well-behaved backend: 200 with the request path as the body (for HEAD, the
    /// head alone).
    pub fn echo_path(name: &str) -> RawBackend {
        RawBackend::serving(name, |_, req| {
            let mut out = ok_response(req.path.as_bytes());
            if req.method == "HEAD" {
                out.truncate(out.len() - req.path.len());
            }
            out
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        lock(&self.shared.logs).len()
    }

    /// The bytes connection `i` has carried so far.
    pub fn conn_bytes(&self, i: usize) -> Vec<u8> {
        lock(&self.shared.logs)
            .get(i)
            .map(|l| lock(&l.bytes).clone())
            .unwrap_or_default()
    }

    /// Every byte received, all connections in accept order.
    pub fn all_bytes(&self) -> Vec<u8> {
        lock(&self.shared.logs)
            .iter()
            .flat_map(|l| lock(&l.bytes).clone())
            .collect()
    }

    /// Whether the proxy has closed connection `i`.
    pub fn conn_closed(&self, i: usize) -> bool {
        lock(&self.shared.logs)
            .get(i)
            .is_some_and(|l| l.eof.load(Ordering::Acquire))
    }

    /// Waits until the proxy has closed connection `i`.
    #[track_caller]
    pub fn wait_closed(&self, i: usize) {
        eventually(&format!("the proxy closes backend connection {i}"), || {
            self.conn_closed(i)
        });
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wake the blocking accept with a connection of our own.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let threads: Vec<_> = lock(&self.shared.threads).drain(..).collect();
        for (s, t) in threads {
            let _ = s.shutdown(Shutdown::Both);
            let _ = t.join();
        }
    }
}

/// A request as the raw backend read it.
#[derive(Clone, Debug)]
pub struct Got {
    pub method: String,
    pub path: String,
    /// Head and body exactly as received.
    pub raw: Vec<u8>,
}

/// One accepted connection, as its script sees it.
pub struct BackendConn {
    stream: TcpStream,
    log: Arc<ConnLog>,
    /// Received and not yet returned by `next_request`.
    buf: Vec<u8>,
    index: usize,
}

impl BackendConn {
    /// This connection's index in accept order (0 for the first).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Reads more; `false` at EOF or on an error (both mean the proxy is gone).
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                lock(&self.log.bytes).extend_from_slice(&chunk[..n]);
                true
            }
            _ => {
                self.log.eof.store(true, Ordering::Release);
                false
            }
        }
    }

    /// The next complete request, or `None` at EOF or when the bytes do not parse (they
    /// are still recorded).
    pub fn next_request(&mut self) -> Option<Got> {
        loop {
            match http1::parse_request(&self.buf, &Limits::default()) {
                Ok(Parsed::Complete { head, consumed }) => {
                    let mut dec = BodyDecoder::new(head.framing());
                    let mut len = 0;
                    while !dec.is_done() {
                        let p = dec.feed(&self.buf[consumed + len..]).ok()?;
                        len += p.consumed;
                        if !p.done && !self.fill() {
                            return None;
                        }
                    }
                    let raw: Vec<u8> = self.buf.drain(..consumed + len).collect();
                    return Some(Got {
                        method: head.method().to_string(),
                        path: head.path().to_string(),
                        raw,
                    });
                }
                Ok(Parsed::Partial) => {
                    if !self.fill() {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Writes `bytes`; a proxy that already hung up is not an error here.
    pub fn write(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Closes the write side (the proxy sees EOF).
    pub fn close_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads (and records) until the proxy closes the connection.
    pub fn drain_to_eof(&mut self) {
        while self.fill() {
            self.buf.clear();
        }
    }
}

/// `200 OK` with `body` and a Content-Length.
pub fn ok_response(body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// A response as the raw client received it.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// The status line without CRLF, e.g. `HTTP/1.1 400 Bad Request`.
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Head and body exactly as received.
    pub raw: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

/// A client connection to the proxy that writes raw bytes.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect to the proxy");
        stream
            .set_read_timeout(Some(patience()))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(patience()))
            .expect("write timeout");
        let _ = stream.set_nodelay(true);
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` in one call. The proxy may hang up before it has read them all (a
    /// head over the limit); that shows in what is read next, so a failed write is fine.
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Reads more; `Ok(false)` at EOF; a reset counts as EOF.
    fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The next response (interim ones included), for a request whose method was HEAD
    /// when `head_request`. Panics with what arrived if no complete response does.
    #[track_caller]
    pub fn reply(&mut self, head_request: bool) -> Reply {
        loop {
            let parsed = http1::parse_response(&self.buf, &Limits::default(), head_request);
            match parsed {
                Ok(Parsed::Complete { head, consumed }) => {
                    let framing = if head.is_interim() {
                        BodyFraming::None
                    } else {
                        head.framing()
                    };
                    let mut dec = BodyDecoder::new(framing);
                    let mut len = 0;
                    while !dec.is_done() {
                        let p = dec
                            .feed(&self.buf[consumed + len..])
                            .unwrap_or_else(|e| panic!("bad body from the proxy: {e}"));
                        len += p.consumed;
                        if p.done {
                            break;
                        }
                        match self.fill() {
                            Ok(true) => {}
                            Ok(false) => {
                                if dec.finish_eof().is_ok() {
                                    break;
                                }
                                panic!("body cut short: {:?}", self.pending());
                            }
                            Err(e) => panic!("reading a body: {e}; got {:?}", self.pending()),
                        }
                    }
                    let raw: Vec<u8> = self.buf.drain(..consumed + len).collect();
                    let status_line_end = raw.iter().position(|b| *b == b'\r').unwrap_or(0);
                    return Reply {
                        status: head.status(),
                        status_line: String::from_utf8_lossy(&raw[..status_line_end]).into(),
                        headers: head
                            .headers()
                            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into()))
                            .collect(),
                        body: raw[consumed..].to_vec(),
                        raw,
                    };
                }
                Ok(Parsed::Partial) => match self.fill() {
                    Ok(true) => {}
                    Ok(false) => {
                        panic!("connection closed before a response: {:?}", self.pending())
                    }
                    Err(e) => panic!("no response: {e}; got {:?}", self.pending()),
                },
                Err(e) => panic!("unparsable response ({e}): {:?}", self.pending()),
            }
        }
    }

    /// The next `n` bytes, whatever they are (part of a response still in flight).
    #[track_caller]
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => panic!("closed after {:?}", self.pending()),
                Err(e) => panic!("waiting for {n} bytes: {e}; got {:?}", self.pending()),
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Reads until the proxy closes the connection and returns the bytes that came before
    /// the close (the rest of a cut-short response, say). Panics if the connection stays
    /// open past the patience.
    #[track_caller]
    pub fn read_to_close(&mut self) -> Vec<u8> {
        loop {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return std::mem::take(&mut self.buf),
                Err(e) => panic!(
                    "the proxy did not close the connection ({e}); got {:?}",
                    self.pending()
                ),
            }
        }
    }

    /// Asserts the proxy closed the connection with nothing more to say.
    #[track_caller]
    pub fn assert_closed(&mut self) {
        let rest = self.read_to_close();
        assert!(
            rest.is_empty(),
            "bytes after the last response: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }

    fn pending(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}
