//! A TLS terminator in front of a plaintext TCP server (the embedded
//! controller, in the integration tests): what a Linkerd control plane's own
//! proxy does for it. Not part of the data plane.
//!
//! One `tls-terminator` accept thread (mio, so stopping needs no
//! self-connect); each accepted connection is connected to the backend and
//! handed to a `terminator-tls` relay thread in server mode
//! (`relay::serve`; the handshake runs on the accept thread, bounded by
//! [`HANDSHAKE_TIMEOUT`], and the client's proven identity is recorded). The server configuration can be replaced while it runs
//! (a certificate for another name, then the right one); new connections
//! take the newest. Dropping it stops and joins every thread.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::ServerConfig;

use super::relay::{self, Relays};

const LISTENER: Token = Token(0);
const WAKE: Token = Token(1);

/// How long an accepted client has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one accepted connection proved: the client's identity, if it
/// offered a certificate (`Err`: the handshake failed, and why).
pub type Handshake = Result<Option<String>, String>;

pub struct Terminator {
    addr: SocketAddr,
    config: Arc<Mutex<Arc<ServerConfig>>>,
    accepted: Arc<AtomicUsize>,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    relays: Relays,
}

impl Terminator {
    /// Listens on a loopback port and terminates TLS with `config` for
    /// `backend`.
    pub fn start(backend: SocketAddr, config: Arc<ServerConfig>) -> io::Result<Terminator> {
        let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let config = Arc::new(Mutex::new(config));
        let accepted = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let relays = Relays::new();
        let thread = {
            let (config, accepted, stop, relays) = (
                config.clone(),
                accepted.clone(),
                stop.clone(),
                relays.clone(),
            );
            let handshakes = handshakes.clone();
            std::thread::Builder::new()
                .name("tls-terminator".into())
                .spawn(move || {
                    let mut poll = poll;
                    let ctx = Accept {
                        backend,
                        config,
                        accepted,
                        handshakes,
                        relays,
                    };
                    let mut events = Events::with_capacity(8);
                    while !stop.load(Ordering::Acquire) {
                        if let Err(e) = poll.poll(&mut events, None) {
                            if e.kind() != io::ErrorKind::Interrupted {
                                log::error!("tls-terminator: poll failed: {e}");
                                return;
                            }
                        }
                        ctx.accept_all(&listener);
                    }
                })?
        };
        Ok(Terminator {
            addr,
            config,
            accepted,
            handshakes,
            stop,
            waker,
            thread: Some(thread),
            relays,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Acquire)
    }

    /// Every accepted connection's handshake, in order.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Closes every relayed connection (as a restarted control plane would).
    pub fn drop_connections(&self) {
        self.relays.shutdown();
    }

    /// The configuration later connections are served with.
    pub fn set_config(&self, config: Arc<ServerConfig>) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

struct Accept {
    backend: SocketAddr,
    config: Arc<Mutex<Arc<ServerConfig>>>,
    accepted: Arc<AtomicUsize>,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    relays: Relays,
}

impl Accept {
    fn accept_all(&self, listener: &TcpListener) {
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    self.accepted.fetch_add(1, Ordering::AcqRel);
                    let outcome = self.relay(stream).map_err(|e| {
                        log::warn!("tls-terminator: {e}");
                        e.to_string()
                    });
                    self.handshakes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(outcome.map(|id| id.map(|i| i.to_string())));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("tls-terminator: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn relay(&self, stream: TcpStream) -> io::Result<Option<Arc<str>>> {
        let plain = std::net::TcpStream::connect(self.backend)?;
        plain.set_nonblocking(true)?;
        let config = self
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let stream = std::net::TcpStream::from(std::os::fd::OwnedFd::from(stream));
        relay::serve(
            stream,
            config,
            TcpStream::from_std(plain),
            HANDSHAKE_TIMEOUT,
            "terminator-tls",
            &self.relays,
        )
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the tls-terminator thread panicked");
            }
        }
        self.relays.shutdown();
    }
}
