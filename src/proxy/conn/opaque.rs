//! The opaque stage of a session (event-loop thread): a byte tunnel between
//! the client and an upstream, today after `101 Switching Protocols`
//! (WebSocket and other upgrades) or a `CONNECT` 2xx.
//!
//! Bytes are copied both ways until each side has sent EOF, which is passed on
//! as a write shutdown (so half-closes work); then the session closes. The
//! client's read buffer is `Session::inbuf` (whatever followed the upgrade
//! request is already tunnel data); the upstream's is kept here.

use std::io::{self, Write};

use crate::proxy::buffer::{Buffer, Filled};
use crate::proxy::transport::Transport;

pub(super) struct Tunnel {
    pub(super) up: Transport,
    pub(super) sock: usize,
    up_buf: Buffer,
    up_eof: bool,
    /// EOF passed on to the upstream / the client.
    shut_up: bool,
    shut_client: bool,
}

/// What a tunnel step found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TunnelStep {
    Progress(bool),
    /// Both directions are finished (or one failed): close the session.
    Done,
}

impl Tunnel {
    pub(super) fn new(up: Transport, sock: usize, up_buf: Buffer) -> Tunnel {
        Tunnel {
            up,
            sock,
            up_buf,
            up_eof: false,
            shut_up: false,
            shut_client: false,
        }
    }

    /// Moves bytes both ways. `client_buf`/`client_eof` are the session's
    /// read side of the client, which the session fills.
    pub(super) fn step(
        &mut self,
        client: &mut Transport,
        client_buf: &mut Buffer,
        client_eof: bool,
    ) -> TunnelStep {
        let mut progress = false;
        // Client to upstream.
        match drain(client_buf, &mut self.up) {
            Ok(p) => progress |= p,
            Err(_) => return TunnelStep::Done,
        }
        if client_eof && client_buf.is_empty() && !self.shut_up {
            let _ = self.up.shutdown_write();
            self.shut_up = true;
            progress = true;
        }
        // Upstream to client.
        if !self.up_eof && !self.up_buf.is_full() {
            match self.up_buf.fill_from(&mut self.up) {
                Ok(Filled::Some(_)) => progress = true,
                Ok(Filled::Nothing) => {}
                Ok(Filled::Eof) => {
                    self.up_eof = true;
                    progress = true;
                }
                Err(_) => return TunnelStep::Done,
            }
        }
        match drain(&mut self.up_buf, client) {
            Ok(p) => progress |= p,
            Err(_) => return TunnelStep::Done,
        }
        if self.up_eof && self.up_buf.is_empty() && !self.shut_client {
            let _ = client.shutdown_write();
            self.shut_client = true;
            progress = true;
        }
        if self.shut_up && self.shut_client {
            return TunnelStep::Done;
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
