//! What an exchange's upstream bytes travel on (event-loop thread): a
//! connection of its own (HTTP/1, plaintext or mTLS, pooled after a clean
//! exchange), or, for an outbound request to an endpoint whose proxy takes
//! HTTP/2, one stream on the shared HTTP/2 connection to it
//! (`proxy/h2::Upgraded`, Linkerd's `l5d-orig-proto` upgrade), which reads
//! and writes HTTP/1 bytes like a connection. `h1.rs` drives either the
//! same way; the plain connection pays one predictable branch per call.

use std::io::{self, IoSlice, Write};
use std::time::Duration;

use crate::conn_failure::ConnFailure;
use crate::proxy::buffer::{Buffer, Filled};
use crate::proxy::ctx::Ctx;
use crate::proxy::h2::{Opened, Upgraded};
use crate::proxy::ready::Readiness;
use crate::proxy::transport::{Connect, Transport};

pub(super) enum Wire {
    Conn(Transport),
    H2(Box<Upgraded>),
}

impl Wire {
    /// Records what a socket event said (an upgraded stream has no socket:
    /// its wakes carry no readiness).
    #[inline]
    pub(super) fn ready(&mut self, r: Readiness) {
        if let Wire::Conn(t) = self {
            t.ready(r);
        }
    }

    /// Whether the connection is up (for an upgraded request: the shared
    /// HTTP/2 connection is ready to take its stream).
    pub(super) fn connect_status(&mut self, ctx: &mut Ctx<'_>) -> Opened {
        match self {
            Wire::Conn(t) => match t.connect_status() {
                Connect::Pending => Opened::Pending,
                Connect::Done => Opened::Done,
                Connect::Failed(e) => {
                    log::debug!("connect failed: {e}");
                    Opened::Failed(ConnFailure::of_connect(&e))
                }
            },
            Wire::H2(u) => u.connect_status(ctx),
        }
    }

    /// A connect finished: the socket's options (the shared HTTP/2
    /// connection set its own).
    pub(super) fn connected(&self, keepalive: Option<Duration>) {
        if let Wire::Conn(t) = self {
            t.connected(keepalive);
        }
    }

    #[inline]
    pub(super) fn fill(&mut self, buf: &mut Buffer) -> io::Result<Filled> {
        match self {
            Wire::Conn(t) => t.fill(buf),
            Wire::H2(u) => u.fill(buf),
        }
    }

    /// The exchange is done with it: a connection's bytes and close are
    /// counted; an upgraded stream leaves its connection.
    pub(super) fn close(self, ctx: &mut Ctx<'_>) {
        match self {
            Wire::Conn(mut t) => t.count_close(),
            Wire::H2(u) => u.close(ctx),
        }
    }
}

impl Write for Wire {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Conn(t) => t.write(buf),
            Wire::H2(u) => u.write(buf),
        }
    }

    #[inline]
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Wire::Conn(t) => t.write_vectored(bufs),
            Wire::H2(u) => u.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Conn(t) => t.flush(),
            Wire::H2(u) => u.flush(),
        }
    }
}
