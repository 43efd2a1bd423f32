//! The byte stream under a connection, client side or upstream side
//! (event-loop thread): a TCP socket with its readiness tracked beside it
//! (`ready.rs`), and, for a connection spoke speaks mutual TLS on, the TLS
//! state over it (`crate::tls::TlsStream`). One type serves every session
//! stage; a plaintext connection pays one predictable branch per call.
//!
//! Everything a session does to its sockets beyond reading and writing goes
//! through here (connect status and handshake, keepalive, half-close, the
//! idle check, what TLS still has queued), so the HTTP/1 stage, the tunnel
//! and the pool never touch a `TcpStream` or rustls. A connection also
//! carries the `tcp_*` series it is counted in, so wherever it goes (the
//! pool, a tunnel) its bytes and its close are counted under its own
//! direction, peer and TLS state. The TCP calls
//! themselves are in `connect.rs`.
//!
//! With TLS, an event on the socket also flushes what rustls has queued
//! (`ready`): a write that returned may have left encrypted bytes behind,
//! and no other call may come to send them.

mod connect;

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;

use super::buffer::{Buffer, Filled};
use super::ready::{Readiness, Tracked};
use crate::metrics::TcpSeries;
use crate::tls::{ClientConfig, HalfClose, ServerConfig, TlsStream};

pub use connect::Connect;

/// A connection's transport. The TLS state is boxed, so a plaintext
/// connection carries one pointer for it.
#[derive(Debug)]
pub struct Transport {
    io: Tracked<TcpStream>,
    tls: Option<Box<Tls>>,
    /// The `tcp_*` series the connection is counted in, once it is
    /// (`count_open`): its bytes and its close go there.
    tcp: Option<Arc<TcpSeries>>,
}

#[derive(Debug)]
struct Tls {
    stream: TlsStream,
    /// The TCP connect has finished (an upstream connection's handshake
    /// waits for it).
    tcp_up: bool,
}

impl HalfClose for Tracked<TcpStream> {
    fn half_close(&mut self) -> io::Result<()> {
        self.get_ref().shutdown(std::net::Shutdown::Write)
    }
}

impl Transport {
    /// A connection fresh from `accept`: bytes may have arrived before it was
    /// registered, and it has room to write.
    pub fn accepted(stream: TcpStream) -> Transport {
        Transport {
            io: Tracked::new(stream, true, true),
            tls: None,
            tcp: None,
        }
    }

    /// A connection registered while its connect is in progress: the
    /// writable edge says it finished (or failed), and bytes come only after.
    pub fn connecting(stream: TcpStream) -> Transport {
        Transport {
            io: Tracked::new(stream, false, false),
            tls: None,
            tcp: None,
        }
    }

    /// A connecting upstream connection that will speak mTLS once connected:
    /// SNI `name`, and the server must prove `server_id`.
    pub fn tls_client(
        mut self,
        config: Arc<ClientConfig>,
        name: &str,
        server_id: &str,
    ) -> io::Result<Transport> {
        self.tls = Some(Box::new(Tls {
            stream: TlsStream::client(config, name, server_id)?,
            tcp_up: false,
        }));
        Ok(self)
    }

    /// Terminates TLS on an accepted connection whose first `received` bytes
    /// (its ClientHello) were read already; what follows reads as plaintext.
    pub fn start_tls_server(
        &mut self,
        config: Arc<ServerConfig>,
        received: &[u8],
    ) -> io::Result<()> {
        self.tls = Some(Box::new(Tls {
            stream: TlsStream::server(&mut self.io, config, received)?,
            tcp_up: true,
        }));
        Ok(())
    }

    /// A pooled connection taken for a new request: its events while idle
    /// were all handled (bytes or a close would have dropped it), so nothing
    /// waits to be read, and its send buffer is empty.
    pub fn reused(mut self) -> Transport {
        self.io.reset(false, true);
        self
    }

    /// Whether spoke speaks TLS on this connection.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The identity the peer proved over mTLS, once the handshake is done.
    pub fn peer_identity(&self) -> Option<&Arc<str>> {
        self.tls.as_ref().and_then(|t| t.stream.peer_identity())
    }

    /// The ALPN protocol the TLS handshake agreed on.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tls.as_ref().and_then(|t| t.stream.alpn())
    }

    /// Records what an event said; with TLS, sends what rustls has queued.
    #[inline]
    pub fn ready(&mut self, r: Readiness) {
        self.io.ready(r);
        if let Some(t) = &mut self.tls {
            tls_ready(t, &mut self.io);
        }
    }

    /// Sends what TLS has queued, as far as the socket takes it (an HTTP/2
    /// flush: h2 writes and then asks for its bytes to be out).
    pub fn flush_tls(&mut self) {
        if let Some(t) = &mut self.tls {
            tls_ready(t, &mut self.io);
        }
    }

    /// TLS output (or a TLS close) is still queued: a connection about to
    /// close waits for it.
    #[inline]
    pub fn wants_flush(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.stream.wants_flush())
    }

    /// Whether a non-blocking connect has finished (on a writable event);
    /// with TLS, whether the handshake has too (a handshake that fails is a
    /// connect that failed).
    pub fn connect_status(&mut self) -> Connect {
        let Some(t) = &mut self.tls else {
            if !self.io.is_writable() {
                return Connect::Pending;
            }
            return connect::status(self.io.get_ref());
        };
        if !t.tcp_up {
            if !self.io.is_writable() {
                return Connect::Pending;
            }
            match connect::status(self.io.get_ref()) {
                Connect::Done => t.tcp_up = true,
                other => return other,
            }
        }
        match t.stream.handshake(&mut self.io) {
            Ok(true) => Connect::Done,
            Ok(false) => Connect::Pending,
            Err(e) => Connect::Failed(e),
        }
    }

    /// A connect finished: no Nagle delay, and kernel keepalive probing
    /// after `keepalive` of silence (`None`: off). A failure to set either
    /// only costs what it was for, so it is logged and the connection used.
    pub fn connected(&self, keepalive: Option<Duration>) {
        connect::tune(self.io.get_ref(), keepalive);
    }

    /// Counts the connection open in `series` (its direction, peer and TLS
    /// state); from here on its bytes and its close are counted there.
    pub fn count_open(&mut self, series: Arc<TcpSeries>) {
        debug_assert!(self.tcp.is_none(), "a connection is counted open once");
        series.open();
        self.tcp = Some(series);
    }

    /// Whether `count_open` counted the connection.
    pub fn is_counted(&self) -> bool {
        self.tcp.is_some()
    }

    /// Counts the bytes read and written on the socket since the last call,
    /// once the connection is counted (until then they wait).
    #[inline]
    pub fn count_bytes(&mut self) {
        if let Some(series) = &self.tcp {
            series.bytes(self.io.take_bytes());
        }
    }

    /// The connection is being closed: its last bytes and its close are
    /// counted (if it was counted open; a second call counts nothing).
    pub fn count_close(&mut self) {
        if let Some(series) = self.tcp.take() {
            series.bytes(self.io.take_bytes());
            series.close();
        }
    }

    /// Half-close: no more bytes will be written (with TLS, `close_notify`
    /// first).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match &mut self.tls {
            None => self.io.half_close(),
            Some(t) => t.stream.shutdown_write(&mut self.io),
        }
    }

    /// Whether an idle pooled connection is still usable: open, with nothing
    /// unread (a spurious readiness event leaves it so). With TLS, records
    /// that carry no data are processed on the way.
    pub fn is_idle_and_open(&mut self) -> bool {
        match &mut self.tls {
            None => connect::idle_and_open(self.io.get_ref()),
            Some(t) => t.stream.is_idle_and_open(&mut self.io),
        }
    }
}

impl Transport {
    /// Reads into `buf` what there is (see `Buffer::fill_from`). The
    /// transport is chosen once per fill, not once per read: the plaintext
    /// loop is the socket's own.
    #[inline]
    pub fn fill(&mut self, buf: &mut Buffer) -> io::Result<Filled> {
        match &mut self.tls {
            None => buf.fill_from(&mut self.io),
            Some(t) => tls_fill(t, &mut self.io, buf),
        }
    }
}

impl Read for Transport {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.io.read(buf),
            Some(t) => tls_read(t, &mut self.io, buf),
        }
    }
}

impl Write for Transport {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.io.write(buf),
            Some(t) => tls_write(t, &mut self.io, &[IoSlice::new(buf)]),
        }
    }

    #[inline]
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.io.write_vectored(bufs),
            Some(t) => tls_write(t, &mut self.io, bufs),
        }
    }

    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        self.io.flush()
    }
}

// The TLS calls stay out of line, so that the plaintext path that inlines
// `read`/`write` into its callers stays as small as it was.

#[cold]
#[inline(never)]
fn tls_read(t: &mut Tls, io: &mut Tracked<TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
    t.stream.read(io, buf)
}

#[cold]
#[inline(never)]
fn tls_fill(t: &mut Tls, io: &mut Tracked<TcpStream>, buf: &mut Buffer) -> io::Result<Filled> {
    struct Plaintext<'a> {
        t: &'a mut Tls,
        io: &'a mut Tracked<TcpStream>,
    }
    impl Read for Plaintext<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.t.stream.read(self.io, buf)
        }
    }
    buf.fill_from(&mut Plaintext { t, io })
}

#[cold]
#[inline(never)]
fn tls_write(t: &mut Tls, io: &mut Tracked<TcpStream>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    t.stream.write_vectored(io, bufs)
}

#[cold]
#[inline(never)]
fn tls_ready(t: &mut Tls, io: &mut Tracked<TcpStream>) {
    t.stream.on_ready(io)
}
