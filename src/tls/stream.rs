//! One TLS connection's state (event-loop thread), given its non-blocking
//! socket on each call (`proxy::transport` keeps the two together):
//! rustls's state machine pumped by hand, so that a TLS connection reads and
//! writes like a socket (`Read`/`Write` answering `WouldBlock`) and nothing
//! waits on a wakeup that will not come.
//!
//! - **Reading** returns plaintext rustls already holds before it touches
//!   the socket, so plaintext decrypted earlier (more than the caller's
//!   buffer had room for) is returned on the next call whatever the socket's
//!   readiness; only with none held does it read records from the socket.
//! - **Writing** takes plaintext only once rustls's encrypted output has
//!   gone to the socket; otherwise `WouldBlock`. What one write encrypts may
//!   still be queued when it returns (the socket was full): [`TlsStream::on_ready`]
//!   flushes it on the next writable event, and [`TlsStream::wants_flush`]
//!   tells a connection that is about to close to wait for it.
//! - **Closing** the write side sends `close_notify` and closes the
//!   socket's write side once that has been flushed ([`HalfClose`]).
//! - **The handshake** runs inside these calls, or inside
//!   [`TlsStream::handshake`] for a client that must know the outcome first
//!   (a failed handshake is a failed connect). When it completes, the peer's
//!   identity is read off its verified certificate; a client whose server
//!   must prove an identity other than the name it was asked for checks it
//!   then.
//! - An idle connection's records (a key update, `close_notify`) are
//!   processed by [`TlsStream::is_idle_and_open`], not taken for bytes
//!   nobody asked for.
//!
//! A peer that closes TCP without `close_notify` reads as an EOF, as a
//! plaintext close would: HTTP/1 framing still tells a truncated message.

use std::io::{self, IoSlice, Read, Write};

use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use super::config::{names, peer_identity, server_name};

/// Closing the write side of the stream under a TLS connection.
pub trait HalfClose {
    fn half_close(&mut self) -> io::Result<()>;
}

/// Where closing the write side stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fin {
    Open,
    /// `close_notify` is queued; the stream closes once it is flushed.
    Queued,
    Done,
}

pub struct TlsStream {
    conn: Connection,
    /// An error met while flushing on an event; the next read or write
    /// reports it.
    error: Option<io::Error>,
    fin: Fin,
    /// The handshake is over (and its checks passed).
    established: bool,
    /// The identity the peer's certificate proved, once established (a
    /// client without a certificate proves none).
    peer: Option<Arc<str>>,
    /// Client side: an identity the server must prove besides the SNI name.
    expect: Option<Arc<str>>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("established", &self.established)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn would_block<T>() -> io::Result<T> {
    Err(io::ErrorKind::WouldBlock.into())
}

/// Whether `e` came from TLS itself (a handshake or record failure) rather
/// than from the socket.
pub fn is_tls_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
        || e.get_ref().is_some_and(|inner| inner.is::<Mismatch>())
        || e.get_ref()
            .is_some_and(|inner| inner.is::<super::relay::HandshakeError>())
}

/// The server proved a name, but not the identity expected of it.
#[derive(Debug)]
struct Mismatch(String);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the server's certificate does not name {}", self.0)
    }
}

impl std::error::Error for Mismatch {}

impl TlsStream {
    /// A client connection asking for `name` (SNI) and verifying it; the
    /// server must also prove `server_id` when that differs.
    pub fn client(config: Arc<ClientConfig>, name: &str, server_id: &str) -> io::Result<TlsStream> {
        let sni = server_name(name).map_err(io::Error::other)?;
        let conn = ClientConnection::new(config, sni).map_err(tls_error)?;
        let expect = (!server_id.eq_ignore_ascii_case(name)).then(|| Arc::from(server_id));
        Ok(TlsStream::new(conn.into(), expect))
    }

    /// A server connection whose first `received` bytes (the ClientHello,
    /// read during detection) are already off the socket.
    pub fn server<S: Write + HalfClose>(
        io: &mut S,
        config: Arc<ServerConfig>,
        received: &[u8],
    ) -> io::Result<TlsStream> {
        let conn = ServerConnection::new(config).map_err(tls_error)?;
        let mut t = TlsStream::new(conn.into(), None);
        let mut rest = received;
        while !rest.is_empty() {
            if t.conn.read_tls(&mut rest)? == 0 {
                break;
            }
            t.process(io)?;
        }
        t.flush_tls(io)?;
        Ok(t)
    }

    fn new(conn: Connection, expect: Option<Arc<str>>) -> TlsStream {
        TlsStream {
            conn,
            error: None,
            fin: Fin::Open,
            established: false,
            peer: None,
            expect,
        }
    }

    /// The identity the peer proved (after the handshake).
    pub fn peer_identity(&self) -> Option<&Arc<str>> {
        self.peer.as_ref()
    }

    pub fn is_established(&self) -> bool {
        self.established
    }

    /// The ALPN protocol agreed on, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Decrypts what was read; on a failure the alert is queued and sent.
    fn process<S: Write + HalfClose>(&mut self, io: &mut S) -> io::Result<()> {
        match self.conn.process_new_packets() {
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = self.flush_tls(io);
                Err(tls_error(e))
            }
        }
    }

    /// Writes queued records until none are left or the socket is full; then
    /// closes the write side if `close_notify` was the last of them.
    fn flush_tls<S: Write + HalfClose>(&mut self, io: &mut S) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(io) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.fin == Fin::Queued {
            self.fin = Fin::Done;
            io.half_close()?;
        }
        Ok(())
    }

    /// Moves the handshake on as far as the socket allows; `true` once it is
    /// over. A failure (the peer's alert, a certificate that does not verify
    /// or does not name the expected identity, a close) is an error.
    pub fn handshake<S: Read + Write + HalfClose>(&mut self, io: &mut S) -> io::Result<bool> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        loop {
            self.flush_tls(io)?;
            if !self.conn.is_handshaking() {
                self.established(io)?;
                return Ok(true);
            }
            if !self.conn.wants_read() {
                return Ok(false);
            }
            match self.conn.read_tls(io) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    ))
                }
                Ok(_) => self.process(io)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The handshake just ended: check the expected identity, note the
    /// peer's.
    fn established<S: Write + HalfClose>(&mut self, io: &mut S) -> io::Result<()> {
        if self.established {
            return Ok(());
        }
        let leaf = self.conn.peer_certificates().and_then(|c| c.first());
        if let Some(id) = &self.expect {
            if !leaf.is_some_and(|l| names(l, id)) {
                let e = io::Error::new(io::ErrorKind::InvalidData, Mismatch(id.to_string()));
                self.conn.send_close_notify();
                let _ = self.flush_tls(io);
                return Err(e);
            }
        }
        self.peer = leaf.and_then(peer_identity).map(Arc::from);
        self.established = true;
        Ok(())
    }

    /// An event said the socket is writable (or readable): queued records
    /// go out now, since no read or write may follow soon. A failure is kept
    /// for the next call.
    pub fn on_ready<S: Write + HalfClose>(&mut self, io: &mut S) {
        if self.error.is_none() && (self.conn.wants_write() || self.fin == Fin::Queued) {
            if let Err(e) = self.flush_tls(io) {
                self.error = Some(e);
            }
        }
    }

    /// Encrypted output (or the closing of the write side) is still queued.
    pub fn wants_flush(&self) -> bool {
        self.error.is_none() && (self.conn.wants_write() || self.fin == Fin::Queued)
    }

    /// No more plaintext will be written: `close_notify`, then the socket's
    /// write side, once flushed.
    pub fn shutdown_write<S: Write + HalfClose>(&mut self, io: &mut S) -> io::Result<()> {
        if self.fin != Fin::Open {
            return Ok(());
        }
        self.conn.send_close_notify();
        self.fin = Fin::Queued;
        self.flush_tls(io)
    }

    /// An idle connection had an event: whether it is still usable. Records
    /// that carry no data (a key update) are processed; plaintext nobody
    /// asked for, `close_notify`, EOF or an error mean it is not.
    pub fn is_idle_and_open<S: Read + Write + HalfClose>(&mut self, io: &mut S) -> bool {
        loop {
            match self.conn.read_tls(io) {
                Ok(0) => return false,
                Ok(_) => {
                    if self.process(io).is_err() {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.flush_tls(io).is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.conn.reader().read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl TlsStream {
    /// Plaintext from the peer: what rustls holds first, then records read
    /// from `io`. `Ok(0)` is the end of the stream.
    pub fn read<S: Read + Write + HalfClose>(
        &mut self,
        io: &mut S,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if !self.established && !self.handshake(io)? {
            return would_block();
        }
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP closed without close_notify: an EOF like any other.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(io) {
                Ok(_) => {
                    self.process(io)?;
                    // Records may call for an answer (a key update).
                    self.flush_tls(io)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts what it takes of `bufs` for `io`; `WouldBlock` while earlier
    /// output is still queued.
    pub fn write_vectored<S: Read + Write + HalfClose>(
        &mut self,
        io: &mut S,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if !self.established && !self.handshake(io)? {
            return would_block();
        }
        self.flush_tls(io)?;
        if self.conn.wants_write() {
            return would_block();
        }
        let n = self.conn.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return would_block();
        }
        self.flush_tls(io)?;
        Ok(n)
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
