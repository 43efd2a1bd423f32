//! A TLS relay between a plaintext socket and the network: how gRPC, built
//! without a TLS stack of its own, reaches a control plane over rustls.
//!
//! The dialing thread (`control`, or `identity`) connects TCP, runs the TLS
//! handshake to completion ([`client`]; a failure is a failed dial), and then
//! hands the connection to one relay thread (named by the caller, e.g.
//! `control-tls`), which copies plaintext between one end of a socket pair
//! (gRPC holds the other) and the TLS connection until either side ends.
//! [`serve`] is the same relay in server mode (a TLS terminator in front of a
//! plaintext server; the tests put one in front of the embedded controller).
//!
//! The copy itself is [`Pump`] (generic over its sockets; tested in
//! `relay_tests.rs` over loopback sockets, both modes back to back); the
//! thread only waits on a mio `Poll` between pumps. Every relay
//! thread is kept in a [`Relays`] set: finished ones are joined when the next
//! one starts, and [`Relays::shutdown`] stops and joins the rest.
//!
//! Closing: when gRPC closes its end, the relay sends `close_notify` (then
//! FIN) and ends once that is flushed; when the network side ends (EOF,
//! `close_notify`, an error), the relay closes gRPC's end, which fails the
//! transport and makes the connection's owner redial.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::{ClientConfig, ServerConfig};

use super::stream::{HalfClose, TlsStream};

const NET: Token = Token(0);
const PLAIN: Token = Token(1);
const WAKE: Token = Token(2);

/// Bytes held per direction between a read and the write it feeds.
const BUFFER: usize = 32 * 1024;

/// The TLS handshake with the server did not succeed (a certificate that
/// does not verify or does not name the expected identity, an alert, a
/// close); told apart from an unreachable server by [`super::is_tls_error`].
#[derive(Debug)]
pub struct HandshakeError(pub String);

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandshakeError {}

/// The network side: a TCP stream whose write side can be closed alone.
struct Net(TcpStream);

impl Read for Net {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Net {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HalfClose for Net {
    fn half_close(&mut self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }
}

/// The plaintext side: gRPC's socket (a socket pair) or, in server mode, a
/// TCP connection to the plaintext server.
pub trait Plain: Read + Write + Source + Send + 'static {
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Plain for UnixStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Plain for TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// What one pump left behind.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing more can move until a socket is ready again.
    Idle,
    /// The relay is over: gRPC's side closed and everything it sent is out.
    Done,
}

/// The copy both ways, driven until nothing moves (sockets non-blocking and
/// edge-triggered: every source is read until it would block or its buffer
/// is full, every sink written until it would block or its buffer is empty).
#[derive(Debug, Default)]
pub struct Pump {
    /// Plaintext from the plain side, for the TLS connection.
    up: Vec<u8>,
    /// Plaintext from the TLS connection, for the plain side.
    down: Vec<u8>,
    plain_eof: bool,
    net_eof: bool,
    plain_closed: bool,
}

fn blocked(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

impl Pump {
    pub fn new() -> Pump {
        Pump::default()
    }

    /// Moves what it can. `Err`: either side failed (the relay ends).
    pub fn pump<N, P>(
        &mut self,
        tls: &mut TlsStream,
        net: &mut N,
        plain: &mut P,
    ) -> io::Result<Step>
    where
        N: Read + Write + HalfClose,
        P: Plain,
    {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let mut moved = false;
            tls.on_ready(net);
            // Plain side -> TLS.
            while !self.plain_eof && self.up.len() < BUFFER {
                let room = (BUFFER - self.up.len()).min(chunk.len());
                match plain.read(&mut chunk[..room]) {
                    Ok(0) => self.plain_eof = true,
                    Ok(n) => self.up.extend_from_slice(&chunk[..n]),
                    Err(e) if blocked(&e) => break,
                    Err(e) if interrupted(&e) => continue,
                    Err(e) => return Err(e),
                }
                moved = true;
            }
            while !self.up.is_empty() {
                match tls.write_vectored(net, &[IoSlice::new(&self.up)]) {
                    Ok(n) => {
                        self.up.drain(..n);
                        moved = true;
                    }
                    Err(e) if blocked(&e) => break,
                    Err(e) if interrupted(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            // TLS -> plain side.
            while !self.net_eof && self.down.len() < BUFFER {
                let room = (BUFFER - self.down.len()).min(chunk.len());
                match tls.read(net, &mut chunk[..room]) {
                    Ok(0) => self.net_eof = true,
                    Ok(n) => self.down.extend_from_slice(&chunk[..n]),
                    Err(e) if blocked(&e) => break,
                    Err(e) if interrupted(&e) => continue,
                    Err(e) => return Err(e),
                }
                moved = true;
            }
            while !self.down.is_empty() {
                match plain.write(&self.down) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.down.drain(..n);
                        moved = true;
                    }
                    Err(e) if blocked(&e) => break,
                    Err(e) if interrupted(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            if self.net_eof && self.down.is_empty() && !self.plain_closed {
                self.plain_closed = true;
                // The other end may already be gone.
                let _ = plain.shutdown_write();
            }
            if self.plain_eof && self.up.is_empty() {
                tls.shutdown_write(net)?;
                if !tls.wants_flush() {
                    return Ok(Step::Done);
                }
            }
            if !moved {
                return Ok(Step::Idle);
            }
        }
    }
}

/// One relay thread, as the set keeps it.
struct Running {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    handle: JoinHandle<()>,
}

/// The relay threads of one owner (cheap to clone; all clones share them).
#[derive(Clone, Default)]
pub struct Relays {
    running: Arc<Mutex<Vec<Running>>>,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays")
            .field("running", &self.len())
            .finish()
    }
}

fn join(r: Running) {
    if r.handle.join().is_err() {
        log::error!("a TLS relay thread panicked");
    }
}

impl Relays {
    pub fn new() -> Relays {
        Relays::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Relay threads not yet joined (finished ones are joined here).
    pub fn len(&self) -> usize {
        self.reap();
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn reap(&self) {
        let done: Vec<Running> = {
            let mut running = self.lock();
            let (done, live) = running.drain(..).partition(|r| r.handle.is_finished());
            *running = live;
            done
        };
        done.into_iter().for_each(join);
    }

    fn add(&self, r: Running) {
        self.reap();
        self.lock().push(r);
    }

    /// Stops every relay thread and joins them.
    pub fn shutdown(&self) {
        let all: Vec<Running> = self.lock().drain(..).collect();
        for r in &all {
            r.stop.store(true, Ordering::Release);
            if let Err(e) = r.waker.wake() {
                log::error!("cannot wake a TLS relay thread to stop it: {e}");
            }
        }
        all.into_iter().for_each(join);
    }
}

/// A network connection that completed its handshake, and the poll that
/// watches it (moved to the relay thread).
struct Established {
    poll: Poll,
    net: Net,
    tls: TlsStream,
}

/// Runs the handshake on `net` within `timeout`, naming `peer` in errors.
fn handshake(
    poll: &mut Poll,
    net: &mut Net,
    tls: &mut TlsStream,
    peer: &str,
    timeout: Duration,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut events = Events::with_capacity(4);
    loop {
        match tls.handshake(net) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if super::is_tls_error(&e) || e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    HandshakeError(format!("TLS handshake with {peer} failed: {e}")),
                ))
            }
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no TLS handshake with {peer} within {timeout:?}"),
            ));
        }
        poll.poll(&mut events, Some(deadline - now))?;
    }
}

/// `stream` made non-blocking and watched by a new poll.
fn watched(stream: std::net::TcpStream) -> io::Result<(Poll, Net)> {
    stream.set_nonblocking(true)?;
    let mut net = Net(TcpStream::from_std(stream));
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut net.0, NET, Interest::READABLE | Interest::WRITABLE)?;
    Ok((poll, net))
}

/// Connects TLS over `stream` (connected) as a client asking for `name` and
/// verifying it with `config`, within `timeout`; then starts relay thread
/// `thread` in `relays` and returns gRPC's end of the socket pair.
pub fn client(
    stream: std::net::TcpStream,
    config: Arc<ClientConfig>,
    name: &str,
    timeout: Duration,
    thread: &str,
    relays: &Relays,
) -> io::Result<StdUnixStream> {
    let (mut poll, mut net) = watched(stream)?;
    let mut tls = TlsStream::client(config, name, name)?;
    handshake(&mut poll, &mut net, &mut tls, name, timeout)?;
    let (grpc, ours) = StdUnixStream::pair()?;
    ours.set_nonblocking(true)?;
    spawn(
        thread,
        Established { poll, net, tls },
        UnixStream::from_std(ours),
        relays,
    )?;
    Ok(grpc)
}

/// Serves TLS on `stream` (accepted) with `config`: runs the handshake within
/// `timeout` on the calling thread, then relays the plaintext to `plain`
/// (connected, non-blocking) on relay thread `thread`. Returns the identity
/// the client's certificate proved, if it offered one. For a terminator in
/// front of a plaintext server.
pub fn serve<P: Plain>(
    stream: std::net::TcpStream,
    config: Arc<ServerConfig>,
    plain: P,
    timeout: Duration,
    thread: &str,
    relays: &Relays,
) -> io::Result<Option<Arc<str>>> {
    let (mut poll, mut net) = watched(stream)?;
    let mut tls = TlsStream::server(&mut net, config, &[])?;
    handshake(&mut poll, &mut net, &mut tls, "a client", timeout)?;
    let peer = tls.peer_identity().cloned();
    spawn(thread, Established { poll, net, tls }, plain, relays)?;
    Ok(peer)
}

fn spawn<P: Plain>(
    thread: &str,
    est: Established,
    mut plain: P,
    relays: &Relays,
) -> io::Result<()> {
    let Established { poll, net, tls } = est;
    poll.registry()
        .register(&mut plain, PLAIN, Interest::READABLE | Interest::WRITABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let name = thread.to_owned();
    let handle = std::thread::Builder::new()
        .name(thread.to_owned())
        .spawn(move || run(poll, net, tls, plain, &thread_stop, &name))?;
    relays.add(Running {
        stop,
        waker,
        handle,
    });
    Ok(())
}

/// The relay thread: pumps after every wakeup until the relay is over, a side
/// fails, or it is told to stop.
fn run<P: Plain>(
    mut poll: Poll,
    mut net: Net,
    mut tls: TlsStream,
    mut plain: P,
    stop: &AtomicBool,
    name: &str,
) {
    let mut pump = Pump::new();
    let mut events = Events::with_capacity(8);
    loop {
        if stop.load(Ordering::Acquire) {
            log::debug!("{name}: stopped");
            return;
        }
        match pump.pump(&mut tls, &mut net, &mut plain) {
            Ok(Step::Done) => {
                log::debug!("{name}: closed");
                return;
            }
            Ok(Step::Idle) => {}
            Err(e) => {
                log::debug!("{name}: relay ended: {e}");
                return;
            }
        }
        if let Err(e) = poll.poll(&mut events, None) {
            if !interrupted(&e) {
                log::error!("{name}: poll failed: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
