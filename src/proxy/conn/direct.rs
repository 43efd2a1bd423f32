//! The direct stage of an inbound session (event-loop thread): a connection
//! to spoke's own inbound port, as a linkerd2-proxy peer makes for an opaque
//! port (Linkerd's opaque transport, `transport.l5d.io/v1`).
//!
//! ```text
//!  Detect (direct) --ClientHello for the local identity--> terminate (ALPN offered)
//!     |                 anything else: refused, closed
//!     v
//!  plaintext: ALPN agreed? client identity? --no--> refused, closed
//!     | transport header (port, session protocol)
//!     v
//!  target = (original IP, header port): no protocol --> Opaque
//!                                       HTTP/1     --> ReadHead
//!                                       HTTP/2     --> H2 (served as a client
//!                                                      connection of its own)
//! ```
//!
//! Until the header has said where the connection goes it goes nowhere: no
//! probe, no opaque fallback on a timeout. Refusals are counted in
//! `spoke_connections_refused_total{direction="inbound"}`.

use std::net::SocketAddr;

use super::detect::{hello_for, HelloFor};
use super::Session;
use crate::detect::{self, Detected};
use crate::metrics::Direction;
use crate::proxy::ctx::Ctx;
use crate::tls::TRANSPORT_ALPN;
use crate::transport_header::{self, Decoded, SessionProtocol};

impl Session {
    /// One step of a direct connection's detection; `settle`: no more bytes
    /// will come (EOF or a full buffer). `Err` means close the session.
    pub(super) fn direct_step(&mut self, settle: bool, ctx: &mut Ctx<'_>) -> Result<bool, ()> {
        if !self.client.is_tls() {
            return self.direct_hello(settle, ctx);
        }
        if self.inbuf.is_empty() {
            // The handshake is under way, or the header has not come yet.
            return if self.client_eof { Err(()) } else { Ok(false) };
        }
        if self.client.alpn() != Some(TRANSPORT_ALPN) {
            return self.direct_refused("transport_header_required", ctx);
        }
        if self.client.peer_identity().is_none() {
            return self.direct_refused("no_identity", ctx);
        }
        let (header, used) = match transport_header::decode(self.inbuf.bytes()) {
            Decoded::NeedMore if !settle => return Ok(false),
            Decoded::Header(h, used) => (h, used),
            Decoded::NeedMore => return self.direct_refused("bad_transport_header", ctx),
            Decoded::Invalid(why) => {
                log::info!("direct inbound connection: {why}");
                return self.direct_refused("bad_transport_header", ctx);
            }
        };
        let Some(orig) = self.orig_dst else {
            return Err(());
        };
        if header.port == orig.port() {
            // The header names spoke's own port again.
            return self.direct_refused("loop", ctx);
        }
        self.inbuf.consume(used);
        self.orig_dst = Some(SocketAddr::new(orig.ip(), header.port));
        self.direct = false;
        match header.protocol {
            None => self.go_opaque("opaque", "transport_header", ctx)?,
            Some(SessionProtocol::Http1) => self.go_http1("transport_header", ctx),
            Some(SessionProtocol::Http2) => self.go_h2("transport_header", ctx)?,
        }
        Ok(true)
    }

    /// Before TLS: only a ClientHello for the local identity may come here.
    fn direct_hello(&mut self, settle: bool, ctx: &mut Ctx<'_>) -> Result<bool, ()> {
        match detect::classify(self.inbuf.bytes()) {
            Detected::NeedMore if !settle => return Ok(false),
            Detected::Tls => {}
            _ => return self.direct_refused("transport_header_required", ctx),
        }
        let local = ctx.tls.configs().map(|c| &*c.local_name);
        match hello_for(self.inbuf.bytes(), settle, local) {
            HelloFor::Wait => Ok(false),
            HelloFor::Unreadable => self.direct_refused("transport_header_required", ctx),
            HelloFor::Other(_) => self.direct_refused("not_local_identity", ctx),
            HelloFor::Local => {
                let cfg = ctx.tls.configs().map(|c| c.server_direct());
                match cfg.map(|cfg| self.terminate(cfg, ctx)) {
                    Some(Ok(())) => Ok(true),
                    _ => self.direct_refused("tls_handshake", ctx),
                }
            }
        }
    }

    fn direct_refused(&mut self, reason: &'static str, ctx: &mut Ctx<'_>) -> Result<bool, ()> {
        log::info!("direct inbound connection refused: {reason}");
        ctx.detect.refused(Direction::Inbound, reason);
        Err(())
    }
}
