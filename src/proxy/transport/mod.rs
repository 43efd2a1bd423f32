//! The byte stream under a connection, client side or upstream side
//! (event-loop thread): an enum, so one session type serves every transport
//! with static dispatch. Today only [`Transport::Plain`], a TCP socket with its
//! readiness tracked beside it (`ready.rs`); TLS arrives as a second variant.
//!
//! Everything a session does to its sockets beyond reading and writing goes
//! through here (connect status, keepalive, half-close, the idle check), so
//! the HTTP/1 stage, the tunnel and the pool never touch a `TcpStream`.
//! The TCP calls themselves are in `connect.rs`.

mod connect;

use std::io::{self, IoSlice, Read, Write};
use std::time::Duration;

use mio::net::TcpStream;

use super::ready::{Readiness, Tracked};

pub use connect::Connect;

/// A connection's transport.
#[derive(Debug)]
pub enum Transport {
    Plain(Tracked<TcpStream>),
}

impl Transport {
    /// A connection fresh from `accept`: bytes may have arrived before it was
    /// registered, and it has room to write.
    pub fn accepted(stream: TcpStream) -> Transport {
        Transport::Plain(Tracked::new(stream, true, true))
    }

    /// A connection registered while its connect is in progress: the
    /// writable edge says it finished (or failed), and bytes come only after.
    pub fn connecting(stream: TcpStream) -> Transport {
        Transport::Plain(Tracked::new(stream, false, false))
    }

    /// A pooled connection taken for a new request: its events while idle
    /// were all handled (bytes or a close would have dropped it), so nothing
    /// waits to be read, and its send buffer is empty.
    pub fn reused(self) -> Transport {
        match self {
            Transport::Plain(t) => Transport::Plain(Tracked::new(t.into_inner(), false, true)),
        }
    }

    /// Records what an event said.
    #[inline]
    pub fn ready(&mut self, r: Readiness) {
        match self {
            Transport::Plain(t) => t.ready(r),
        }
    }

    #[inline]
    pub fn is_writable(&self) -> bool {
        match self {
            Transport::Plain(t) => t.is_writable(),
        }
    }

    /// Whether a non-blocking connect has finished (on a writable event).
    pub fn connect_status(&self) -> Connect {
        match self {
            Transport::Plain(t) => connect::status(t.get_ref()),
        }
    }

    /// A connect finished: no Nagle delay, and kernel keepalive probing
    /// after `keepalive` of silence (`None`: off). A failure to set either
    /// only costs what it was for, so it is logged and the connection used.
    pub fn connected(&self, keepalive: Option<Duration>) {
        match self {
            Transport::Plain(t) => connect::tune(t.get_ref(), keepalive),
        }
    }

    /// Bytes read and written on the socket since the last call.
    #[inline]
    pub fn take_bytes(&mut self) -> (u64, u64) {
        match self {
            Transport::Plain(t) => t.take_bytes(),
        }
    }

    /// Half-close: no more bytes will be written.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Transport::Plain(t) => t.get_ref().shutdown(std::net::Shutdown::Write),
        }
    }

    /// Whether an idle pooled connection is still usable: open, with nothing
    /// unread (a spurious readiness event leaves it so).
    pub fn is_idle_and_open(&self) -> bool {
        match self {
            Transport::Plain(t) => connect::idle_and_open(t.get_ref()),
        }
    }
}

impl Read for Transport {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(t) => t.write(buf),
        }
    }

    #[inline]
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Plain(t) => t.write_vectored(bufs),
        }
    }

    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(t) => t.flush(),
        }
    }
}
