//! A listener of the event loop and the rules for accepting on it
//! (event-loop thread): the connection cap, and backing off on a timer when
//! descriptors run out instead of spinning on a listener it cannot serve.
//! The loop asks [`Listener::accept`] for connections until it says there are
//! no more for now, and turns each into a session.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::timers::{Timer, Timers};
use crate::metrics::Direction;

const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Why accepting is paused, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepting {
    Yes,
    /// At the connection cap: resumes when a connection closes.
    AtCap,
    /// Out of descriptors (or memory): resumes on the `Accept` timer, with
    /// this backoff doubling on each failure.
    BackedOff(Duration),
}

/// One listening socket: the direction its connections go, and whether it
/// is accepting.
pub struct Listener {
    pub direction: Direction,
    /// `None` once shutdown has begun: no new connections.
    socket: Option<TcpListener>,
    accepting: Accepting,
}

impl Listener {
    /// Registers `socket` under `token` for connections going `direction`.
    pub fn new(
        mut socket: TcpListener,
        direction: Direction,
        token: Token,
        registry: &Registry,
    ) -> io::Result<Listener> {
        registry.register(&mut socket, token, Interest::READABLE)?;
        Ok(Listener {
            direction,
            socket: Some(socket),
            accepting: Accepting::Yes,
        })
    }

    /// The next connection waiting, if it may be taken now: `open` is the
    /// number of client connections the loop holds, `max` its cap. `None`
    /// when the backlog is empty, the cap is reached, descriptors ran out
    /// (then a `Timer::Accept` is set), or the listener is closed.
    pub fn accept(
        &mut self,
        open: usize,
        max: usize,
        now: Instant,
        timers: &mut Timers,
    ) -> Option<(TcpStream, SocketAddr)> {
        loop {
            if open >= max {
                if self.accepting == Accepting::Yes {
                    log::warn!("{open} client connections open: pausing accept");
                }
                self.accepting = Accepting::AtCap;
                return None;
            }
            let socket = self.socket.as_ref()?;
            match socket.accept() {
                Ok(conn) => {
                    self.accepting = Accepting::Yes;
                    return Some(conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accepting = Accepting::Yes;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_transient_accept_error(&e) => {
                    // The connection waits in the kernel's backlog.
                    let backoff = match self.accepting {
                        Accepting::BackedOff(d) => (d * 2).min(MAX_ACCEPT_BACKOFF),
                        _ => MIN_ACCEPT_BACKOFF,
                    };
                    if !matches!(self.accepting, Accepting::BackedOff(_)) {
                        log::warn!("accept failed ({e}); backing off");
                    }
                    self.accepting = Accepting::BackedOff(backoff);
                    timers.add(now + backoff, Timer::Accept(self.direction));
                    return None;
                }
                Err(e) => {
                    // Peer-side failures (e.g. aborted before accept) only
                    // concern that one connection.
                    log::debug!("accept failed: {e}");
                }
            }
        }
    }

    /// Paused at the connection cap: a connection closing should retry.
    pub fn at_cap(&self) -> bool {
        self.accepting == Accepting::AtCap
    }

    /// Shutdown: stop listening.
    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut socket) = self.socket.take() {
            let _ = registry.deregister(&mut socket);
        }
    }
}

/// Accept errors that say "not now" about this process, not about a peer:
/// out of descriptors or memory.
fn is_transient_accept_error(e: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12)) || e.kind() == io::ErrorKind::OutOfMemory
}
