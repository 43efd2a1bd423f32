//! The opaque stage of a session (event-loop thread): a byte tunnel between
//! the client and an upstream. It carries connections detection found not to
//! be HTTP (or that skip detection: opaque ports and profiles), and HTTP/1
//! connections after `101 Switching Protocols` or a `CONNECT` 2xx.
//!
//! Bytes are copied both ways until each side has sent EOF, which is passed
//! on as a write shutdown (so half-closes work); then the session closes. A
//! side is read only while the buffer toward the other side has room, which
//! is the backpressure. The client's read buffer is `Session::inbuf`
//! (whatever detection or the upgrade request left there goes first); the
//! upstream's is kept here.
//!
//! A tunnel the session opened itself starts with a non-blocking connect
//! ([`Tunnel::connect`]); until it finishes nothing is written upstream, and
//! a failed connect ends the session. During detection's quiet period a
//! tunnel also serves as a *probe*: the session reads only the server's side
//! ([`Tunnel::listen`]) to learn whether it speaks first.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::conn_failure::ConnFailure;
use crate::endpoints::ClientTls;
use crate::proxy::buffer::{Buffer, Filled};
use crate::proxy::ctx::{Ctx, DialError, Owner, Role};
use crate::proxy::timers::{SessionDeadlines, SessionTimer};
use crate::proxy::transport::{Connect, Transport};
use crate::tls::TRANSPORT_ALPN;
use crate::transport_header::{self, TransportHeader};

pub(super) struct Tunnel {
    pub(super) up: Transport,
    pub(super) sock: usize,
    addr: Option<SocketAddr>,
    /// The destination whose balancer picked `addr`, when it was one: a
    /// failed connect is reported to it and another endpoint tried.
    pub(super) via: Option<Arc<str>>,
    /// Connects tried for this session so far (the first included).
    pub(super) attempts: u8,
    up_buf: Buffer,
    up_eof: bool,
    /// The connect has finished (always, for a tunnel taken over from an
    /// exchange).
    connected: bool,
    /// EOF passed on to the upstream / the client.
    shut_up: bool,
    shut_client: bool,
    /// The endpoint port the transport header names, when the connection
    /// goes to the endpoint's opaque-transport port.
    header_port: Option<u16>,
    /// What goes upstream before the client's bytes (the transport header).
    preamble: Vec<u8>,
}

/// What a tunnel step found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TunnelStep {
    Progress(bool),
    /// The connect failed (nothing was sent upstream): the session may try
    /// another endpoint.
    ConnectFailed(ConnFailure),
    /// Both directions are finished (or one failed): close the session.
    Done,
}

impl Tunnel {
    /// A tunnel over an upstream connection an exchange already holds.
    pub(super) fn new(up: Transport, sock: usize, up_buf: Buffer) -> Tunnel {
        Tunnel {
            up,
            sock,
            addr: None,
            via: None,
            attempts: 1,
            up_buf,
            up_eof: false,
            connected: true,
            shut_up: false,
            shut_client: false,
            header_port: None,
            preamble: Vec::new(),
        }
    }

    /// Starts connecting to `addr` for session `session`, with the
    /// direction's connect timeout as a session deadline. `Err` when the
    /// connect failed at once.
    /// With `transport_port` (a meshed endpoint's opaque-transport port), the
    /// connection goes to that port over mTLS offering Linkerd's transport
    /// ALPN, and starts with the transport header naming `addr`'s port.
    pub(super) fn connect(
        addr: SocketAddr,
        tls: Option<&ClientTls>,
        transport_port: Option<u16>,
        session: usize,
        deadlines: &mut SessionDeadlines<'_>,
        ctx: &mut Ctx<'_>,
    ) -> io::Result<Tunnel> {
        let owner = Owner::Conn {
            session,
            role: Role::Upstream,
        };
        let transport_port = transport_port.filter(|_| tls.is_some());
        let dial = transport_port.map_or(addr, |p| SocketAddr::new(addr.ip(), p));
        let (up, sock) = ctx
            .dial(dial, owner, tls, transport_port.is_some())
            .map_err(|e| match e {
                DialError::Connect(e) | DialError::Register(e) | DialError::Tls(e) => e,
            })?;
        let timeout = ctx.cfg.connect_timeout(ctx.direction);
        deadlines.set(SessionTimer::Connect, timeout, ctx.now, ctx.timers);
        Ok(Tunnel {
            up,
            sock,
            addr: Some(addr),
            via: None,
            attempts: 1,
            up_buf: Buffer::new(ctx.cfg.buffer_limit),
            up_eof: false,
            connected: false,
            shut_up: false,
            shut_client: false,
            header_port: transport_port.map(|_| addr.port()),
            preamble: Vec::new(),
        })
    }

    pub(super) fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the upstream has said anything (a byte or EOF) yet.
    pub(super) fn server_spoke(&self) -> bool {
        !self.up_buf.is_empty() || self.up_eof
    }

    /// Releases the upstream buffer's memory while it is empty (the loop's
    /// housekeeping calls this, so an idle tunnel, a database pool's say,
    /// keeps no buffer).
    pub(super) fn trim(&mut self) {
        self.up_buf.shrink_if_empty();
    }

    /// Gives the socket back to the loop (the session is closing or the
    /// probe is dropped), counting its bytes and its close.
    pub(super) fn close(mut self, ctx: &mut Ctx<'_>) {
        ctx.socks.remove(self.sock);
        self.up.count_close();
    }

    /// Where it connects (or connected).
    pub(super) fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Finishes a pending connect. `Err` when it failed, and how.
    fn finish_connect(&mut self, ctx: &Ctx<'_>) -> Result<bool, ConnFailure> {
        if self.connected {
            return Ok(false);
        }
        match self.up.connect_status() {
            Connect::Pending => Ok(false),
            Connect::Done => {
                self.up.connected(ctx.cfg.connect_keepalive);
                self.connected = true;
                if let Some(port) = self.header_port {
                    if self.up.alpn() == Some(TRANSPORT_ALPN) {
                        self.preamble = transport_header::encode(&TransportHeader {
                            port,
                            name: None,
                            protocol: None,
                        });
                    } else {
                        // As Linkerd: a peer that did not agree on the
                        // transport gets the bytes as they are.
                        log::debug!("{:?}: no transport ALPN agreed; no header", self.addr);
                    }
                }
                Ok(true)
            }
            Connect::Failed(e) => {
                log::info!("opaque connection to {:?} failed: {e}", self.addr);
                Err(ConnFailure::of_connect(&e))
            }
        }
    }

    /// A probe's step: finish the connect and read what the server sends,
    /// without relaying anything yet. `Err` when the connect or the read
    /// failed.
    pub(super) fn listen(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, ()> {
        let mut progress = self.finish_connect(ctx).map_err(|_| ())?;
        if self.connected {
            progress |= self.read_up()?;
        }
        Ok(progress)
    }

    fn read_up(&mut self) -> Result<bool, ()> {
        if self.up_eof || self.up_buf.is_full() {
            return Ok(false);
        }
        match self.up.fill(&mut self.up_buf) {
            Ok(Filled::Some(_)) => Ok(true),
            Ok(Filled::Nothing) => Ok(false),
            Ok(Filled::Eof) => {
                self.up_eof = true;
                Ok(true)
            }
            Err(e) => {
                log::debug!("opaque upstream read failed: {e}");
                Err(())
            }
        }
    }

    /// Moves bytes both ways. `client_buf`/`client_eof` are the session's
    /// read side of the client, which the session fills.
    pub(super) fn step(
        &mut self,
        client: &mut Transport,
        client_buf: &mut Buffer,
        client_eof: bool,
        ctx: &mut Ctx<'_>,
    ) -> TunnelStep {
        let mut progress = match self.finish_connect(ctx) {
            Ok(p) => p,
            Err(cause) => return TunnelStep::ConnectFailed(cause),
        };
        if !self.connected {
            return TunnelStep::Progress(progress);
        }
        // The transport header, then the client's bytes.
        while !self.preamble.is_empty() {
            match self.up.write(&self.preamble) {
                Ok(0) => return TunnelStep::Done,
                Ok(n) => {
                    self.preamble.drain(..n);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return TunnelStep::Progress(progress);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("opaque upstream write failed: {e}");
                    return TunnelStep::Done;
                }
            }
        }
        // Client to upstream.
        match drain(client_buf, &mut self.up) {
            Ok(p) => progress |= p,
            Err(e) => {
                log::debug!("opaque upstream write failed: {e}");
                return TunnelStep::Done;
            }
        }
        if client_eof && client_buf.is_empty() && !self.shut_up {
            let _ = self.up.shutdown_write();
            self.shut_up = true;
            progress = true;
        }
        // Upstream to client.
        match self.read_up() {
            Ok(p) => progress |= p,
            Err(()) => return TunnelStep::Done,
        }
        match drain(&mut self.up_buf, client) {
            Ok(p) => progress |= p,
            Err(e) => {
                log::debug!("opaque client write failed: {e}");
                return TunnelStep::Done;
            }
        }
        if self.up_eof && self.up_buf.is_empty() && !self.shut_client {
            let _ = client.shutdown_write();
            self.shut_client = true;
            progress = true;
        }
        // Both ways closed, and nothing left inside TLS on either side.
        if self.shut_up && self.shut_client && !self.up.wants_flush() && !client.wants_flush() {
            return TunnelStep::Done;
        }
        if progress {
            self.up.count_bytes();
            client.count_bytes();
        }
        TunnelStep::Progress(progress)
    }
}

/// Writes what `buf` holds to `sink` until it would block; `Ok(true)` if
/// anything moved.
fn drain(buf: &mut Buffer, sink: &mut impl Write) -> io::Result<bool> {
    let mut progress = false;
    while !buf.is_empty() {
        match sink.write(buf.bytes()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf.consume(n);
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(progress)
}
