//! The first stage of a session (event-loop thread): what the connection
//! speaks, and so which stage carries it.
//!
//! ```text
//!  Accepted --not redirected (outbound)-----------------------------> ReadHead
//!     |-------opaque port (inbound) / opaque profile (outbound)-----> Opaque
//!     +--> Detect: bytes read into `inbuf`, `crate::detect::classify`
//!            HTTP/1 request line ------------------------------------> ReadHead
//!            anything else (H2 preface and TLS too, for now) --------> Opaque
//!            client silent for the quiet period: connect the target
//!              (a probe), read only its side; it speaks first ------> Opaque
//!            detect timeout, EOF, or a full buffer: `on_timeout` ----> either
//! ```
//!
//! The probe is what lets server-speaks-first protocols (SMTP, MySQL, ...)
//! work on any port with no configuration and a delay of only the quiet
//! period: Linkerd waits for the detect timeout (10 s) there. A client that
//! speaks after all is detected as usual; if it turns out to be HTTP/1, the
//! probe is closed (HTTP routes by its own target) without a byte sent on it.
//!
//! Detection reads into the session's own buffer, so the next stage parses
//! or forwards the same bytes: nothing is peeked or replayed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::opaque::Tunnel;
use super::{Session, Stage};
use crate::balance::Pick;
use crate::client_hello::{self, Hello};
use crate::conn_failure::ConnFailure;
use crate::detect::{self, Detected};
use crate::endpoints::{EndpointRef, ProtocolHint};
use crate::metrics::{Direction, NoTlsReason, TlsLabel};
use crate::profile::Profile;
use crate::proxy::addr_text;
use crate::proxy::ctx::Ctx;
use crate::proxy::inbound::{port_policy, Refusal};
use crate::proxy::target::DstKey;
use crate::proxy::timers::SessionTimer;

/// Connects an opaque connection may try, across a service's endpoints,
/// before it gives up (a connect that failed sent nothing, so moving on is
/// safe).
const MAX_OPAQUE_CONNECTS: u8 = 3;

/// Where an opaque connection goes: the address, the destination whose
/// balancer picked it (if one did), and what the control plane says about
/// the endpoint (its mTLS identity and opaque-transport port), if anything.
type OpaqueTarget = (SocketAddr, Option<Arc<str>>, Option<EndpointRef>);

impl Session {
    /// The stage a new connection starts in.
    #[inline(never)]
    pub(super) fn first_stage(&mut self, ctx: &mut Ctx<'_>) -> Result<(), ()> {
        if self.direction == Direction::Outbound {
            self.settle_tls(ctx);
        }
        let Some(orig) = self.orig_dst else {
            // Sent to the outbound listener on purpose: HTTP/1 (an explicit
            // proxy), as it always was.
            self.stage = Stage::ReadHead;
            return Ok(());
        };
        let opaque = match self.direction {
            Direction::Inbound => ctx
                .cfg
                .detect
                .inbound_opaque_ports
                .contains(orig.port())
                .then_some("opaque_port"),
            Direction::Outbound => profile_says_opaque(orig, ctx).then_some("opaque_profile"),
        };
        if let Some(reason) = opaque {
            if self.direction == Direction::Inbound {
                self.tls = Some(TlsLabel::NoIdentity(NoTlsReason::PortSkipped));
            }
            if self.refused(ctx).is_some() {
                return Err(());
            }
            return self.go_opaque("opaque", reason, ctx);
        }
        let timeout = match self.direction {
            Direction::Inbound => ctx.cfg.detect.inbound_timeout,
            Direction::Outbound => ctx.cfg.detect.outbound_timeout,
        };
        self.stage = Stage::Detect(None);
        self.set_deadline(SessionTimer::Detect, timeout, ctx);
        self.set_deadline(SessionTimer::Quiet, ctx.cfg.detect.quiet_timeout, ctx);
        Ok(())
    }

    /// One detection step: the probe's side, then the client's bytes.
    /// `Err` means close the session.
    #[inline(never)]
    pub(super) fn detect_step(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, ()> {
        let mut progress = false;
        if let Stage::Detect(Some(probe)) = &mut self.stage {
            match probe.listen(ctx) {
                Ok(p) => progress |= p,
                Err(()) => {
                    // The target is not there (yet); the client may still
                    // speak, and then be carried as it says.
                    self.drop_probe(ctx);
                    progress = true;
                }
            }
        }
        if let Stage::Detect(Some(probe)) = &self.stage {
            if probe.server_spoke() {
                self.go_opaque("opaque", "quiet_server_first", ctx)?;
                return Ok(true);
            }
        }
        let settle = self.client_eof || self.inbuf.is_full();
        if self.direct {
            return self.direct_step(settle, ctx).map(|p| p || progress);
        }
        let bytes = self.inbuf.bytes();
        let found = if settle {
            detect::on_timeout(bytes)
        } else {
            detect::classify(bytes)
        };
        let reason = if self.client_eof { "eof" } else { "detected" };
        match found {
            Detected::NeedMore => Ok(progress),
            Detected::Tls if self.direction == Direction::Inbound && !self.client.is_tls() => {
                self.inbound_tls(settle, ctx).map(|p| p || progress)
            }
            Detected::Http1 => {
                self.go_http1(reason, ctx);
                Ok(true)
            }
            Detected::H2 => self.go_h2(reason, ctx).map(|()| true),
            _ if self.inbuf.is_empty() && !matches!(self.stage, Stage::Detect(Some(_))) => {
                // Connected and closed without a byte either way.
                ctx.detect.count(self.direction, "none", "eof");
                Err(())
            }
            d => {
                self.go_opaque(d.as_str(), reason, ctx)?;
                Ok(true)
            }
        }
    }

    /// An inbound ClientHello: a name that is the local identity is
    /// terminated here, and detection starts over on the plaintext; any
    /// other name (or a hello spoke cannot read) is the application's, passed
    /// through untouched as opaque TCP. `Err` means close the session.
    fn inbound_tls(&mut self, settle: bool, ctx: &mut Ctx<'_>) -> Result<bool, ()> {
        let local = ctx.tls.configs().map(|c| &*c.local_name);
        let reason = match hello_for(self.inbuf.bytes(), settle, local) {
            HelloFor::Wait => return Ok(false),
            HelloFor::Unreadable => "unreadable_hello",
            HelloFor::Other(name) => {
                // Linkerd's `tls="opaque",sni=...`; a hello naming no one is
                // `no_tls_from_remote`, as there.
                self.tls = name.map(|sni| TlsLabel::Opaque(sni.into()));
                "passthrough"
            }
            HelloFor::Local => {
                let cfg = ctx.tls.configs().map(|c| c.server());
                return match cfg.map(|cfg| self.terminate(cfg, ctx)) {
                    Some(Ok(())) => Ok(true),
                    _ => {
                        ctx.detect.count(self.direction, "tls", "handshake_failed");
                        Err(())
                    }
                };
            }
        };
        self.go_opaque("tls", reason, ctx)?;
        Ok(true)
    }

    /// Terminates TLS on the client connection with `config`, its
    /// ClientHello (in `inbuf`) fed to rustls; what follows reads as
    /// plaintext into the emptied buffer.
    pub(super) fn terminate(
        &mut self,
        config: Arc<crate::tls::ServerConfig>,
        ctx: &mut Ctx<'_>,
    ) -> io::Result<()> {
        if let Err(e) = self.client.start_tls_server(config, self.inbuf.bytes()) {
            log::info!("inbound TLS handshake failed: {e}");
            return Err(e);
        }
        ctx.detect.count(self.direction, "tls", "terminated");
        self.inbuf.consume(self.inbuf.len());
        Ok(())
    }

    /// A detection deadline is due. `Err` means close the session.
    pub(super) fn detect_timer(&mut self, kind: SessionTimer, ctx: &mut Ctx<'_>) -> Result<(), ()> {
        match kind {
            SessionTimer::Quiet if self.inbuf.is_empty() => {
                let Some((target, via, ep)) = self.opaque_target(ctx) else {
                    return Ok(());
                };
                match self.open_tunnel(target, via, ep, ctx) {
                    Ok(probe) => {
                        log::debug!(
                            "client silent: probing {target} for a server that speaks first"
                        );
                        self.stage = Stage::Detect(Some(probe));
                    }
                    Err(e) => log::debug!("cannot probe {target}: {e}"),
                }
                Ok(())
            }
            // A direct connection that did not say where it goes in time.
            SessionTimer::Detect if self.direct => Err(()),
            SessionTimer::Detect => match detect::on_timeout(self.inbuf.bytes()) {
                Detected::Http1 => {
                    self.go_http1("timeout", ctx);
                    Ok(())
                }
                d => self.go_opaque(d.as_str(), "timeout", ctx),
            },
            SessionTimer::Connect => {
                // The probe's connect took too long: detection goes on.
                if matches!(&self.stage, Stage::Detect(Some(p)) if !p.is_connected()) {
                    log::debug!("probe connect timed out");
                    self.drop_probe(ctx);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(super) fn go_http1(&mut self, reason: &'static str, ctx: &mut Ctx<'_>) {
        self.settle_tls(ctx);
        ctx.detect.count(self.direction, "http1", reason);
        self.drop_probe(ctx);
        self.end_detection();
        self.stage = Stage::ReadHead;
        if let Some(why) = self.refused(ctx) {
            self.synthetic(403, why.message(), true);
        }
    }

    /// An inbound connection its port's policy refuses (counted), if so:
    /// one that must prove an identity, or speak TLS, and did not.
    pub(super) fn refused(&mut self, ctx: &mut Ctx<'_>) -> Option<Refusal> {
        let (Direction::Inbound, Some(orig)) = (self.direction, self.orig_dst) else {
            return None;
        };
        let d = &ctx.cfg.detect;
        let tls = self.client.is_tls();
        let identity = self.client.peer_identity().is_some();
        let why = port_policy(
            orig.port(),
            &d.inbound_require_identity,
            &d.inbound_require_tls,
            tls,
            identity,
        )
        .err()?;
        log::info!("inbound connection to {orig} refused: {}", why.message());
        ctx.detect.refused(self.direction, why.reason());
        Some(why)
    }

    /// Carries the connection as opaque TCP from here: over the probe when
    /// there is one, else over a new connection to the target.
    pub(super) fn go_opaque(
        &mut self,
        protocol: &'static str,
        reason: &'static str,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), ()> {
        self.settle_tls(ctx);
        ctx.detect.count(self.direction, protocol, reason);
        self.end_detection();
        if self.refused(ctx).is_some() {
            return Err(());
        }
        let tunnel = match std::mem::replace(&mut self.stage, Stage::Closing) {
            Stage::Detect(Some(probe)) => probe,
            _ => {
                let Some((target, via, ep)) = self.opaque_target(ctx) else {
                    log::debug!("an opaque connection with no target: closing it");
                    return Err(());
                };
                match self.open_tunnel(target, via, ep, ctx) {
                    Ok(t) => t,
                    Err(e) => {
                        log::info!("opaque connection to {target} failed: {e}");
                        return Err(());
                    }
                }
            }
        };
        log::trace!("opaque ({protocol}, {reason})");
        self.stage = Stage::Opaque(tunnel);
        if let Some(idle) = ctx.cfg.detect.opaque_idle_timeout {
            self.set_deadline(SessionTimer::Idle, idle, ctx);
        }
        Ok(())
    }

    pub(super) fn end_detection(&mut self) {
        self.clear_deadline(SessionTimer::Quiet);
        self.clear_deadline(SessionTimer::Detect);
    }

    pub(super) fn drop_probe(&mut self, ctx: &mut Ctx<'_>) {
        if let Stage::Detect(probe) = &mut self.stage {
            if let Some(p) = probe.take() {
                p.close(ctx);
            }
        }
        self.clear_deadline(SessionTimer::Connect);
    }

    /// Starts connecting a tunnel to `target`, picked by `via`'s balancer if
    /// a balancer picked it, over mTLS when the endpoint is meshed (to its
    /// opaque-transport port, with the header, when it has one).
    fn open_tunnel(
        &mut self,
        target: SocketAddr,
        via: Option<Arc<str>>,
        ep: Option<EndpointRef>,
        ctx: &mut Ctx<'_>,
    ) -> io::Result<Box<Tunnel>> {
        let (key, mut deadlines) = (self.key, self.session_deadlines());
        let (tls, transport) = match &ep {
            Some(e) => (e.tls.as_ref(), e.opaque_port),
            None => (None, None),
        };
        let mut t = Tunnel::connect(target, tls, transport, key, &mut deadlines, ctx)?;
        t.via = via;
        Ok(Box::new(t))
    }

    /// Where an opaque connection goes: the original destination; outbound,
    /// when the profile of that address names a service whose endpoints are
    /// known, one of them, picked by the balancer (else the original
    /// destination, a service address the kernel balances). With the
    /// address, the destination whose balancer picked it, if one did, and
    /// how to reach the endpoint over mTLS when it is meshed.
    fn opaque_target(&mut self, ctx: &mut Ctx<'_>) -> Option<OpaqueTarget> {
        if self.direct {
            // Its header has not named a target yet.
            return None;
        }
        let orig = self.orig_dst?;
        if self.direction == Direction::Inbound {
            return Some((orig, None, None));
        }
        let Some(name) = orig_profile(orig, ctx).and_then(|p| p.fully_qualified_name.clone())
        else {
            // One address: what its profile says of it (a meshed pod's
            // identity), if anything.
            return Some((orig, None, orig_endpoint(orig, ctx)));
        };
        let dst = DstKey::new(&name, orig.port());
        match ctx
            .dsts
            .get_or_start(dst.key(), dst.name(), orig.port(), ctx.now)
        {
            Ok(d) => match d.pick_endpoint(ctx.now, &[]) {
                Pick::Ready(addr) => Some((addr, Some(d.name.clone()), d.endpoint_ref(addr))),
                _ => Some((orig, None, None)),
            },
            Err(_) => Some((orig, None, None)),
        }
    }

    /// The opaque connection's connect failed (`cause`), so nothing went
    /// upstream yet: when a balancer picked its endpoint, the balancer hears
    /// of it and another endpoint is tried, up to [`MAX_OPAQUE_CONNECTS`] in
    /// all, and counted in `spoke_connect_retries_total` as a request moved
    /// after a connection failure is. `false` means close the session.
    pub(super) fn opaque_connect_failed(&mut self, cause: ConnFailure, ctx: &mut Ctx<'_>) -> bool {
        let Stage::Opaque(t) = &self.stage else {
            return false;
        };
        let (Some(via), Some(addr), attempts) = (t.via.clone(), t.addr(), t.attempts) else {
            return false;
        };
        let Some(d) = ctx.dsts.get_mut(&via) else {
            return false;
        };
        d.balancer.failed(addr, cause, ctx.now);
        if attempts >= MAX_OPAQUE_CONNECTS {
            return false;
        }
        let Pick::Ready(next) = d.pick_endpoint(ctx.now, &[addr]) else {
            return false;
        };
        d.connect_retries.retry(&via, cause);
        let ep = d.endpoint_ref(next);
        if let Stage::Opaque(t) = std::mem::replace(&mut self.stage, Stage::Closing) {
            t.close(ctx);
        }
        self.clear_deadline(SessionTimer::Connect);
        log::debug!("{via}: opaque connect to {addr} failed ({cause:?}); trying {next}");
        match self.open_tunnel(next, Some(via), ep, ctx) {
            Ok(mut t) => {
                t.attempts = attempts + 1;
                self.stage = Stage::Opaque(t);
                true
            }
            Err(e) => {
                log::info!("opaque connection to {next} failed: {e}");
                false
            }
        }
    }
}

/// What a ClientHello that begins `bytes` asks of spoke, whose identity is
/// `local` (when a certificate is in force); `settle`: no more bytes come.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HelloFor {
    /// Not all of it has arrived.
    Wait,
    /// Not a ClientHello spoke can read.
    Unreadable,
    /// For another name (this one, if it names one), or spoke has no
    /// certificate.
    Other(Option<String>),
    /// For the local identity.
    Local,
}

pub(super) fn hello_for(bytes: &[u8], settle: bool, local: Option<&str>) -> HelloFor {
    match client_hello::parse(bytes) {
        Hello::Incomplete if !settle => HelloFor::Wait,
        Hello::Incomplete | Hello::Invalid(_) => HelloFor::Unreadable,
        Hello::Parsed(h) if local.is_some() && h.server_name.as_deref() == local => HelloFor::Local,
        Hello::Parsed(h) => HelloFor::Other(h.server_name),
    }
}

/// The profile of the fixed destination `orig`, once it has been fetched
/// (its table entry is made, and its lookup started, on first use).
fn orig_profile(orig: SocketAddr, ctx: &mut Ctx<'_>) -> Option<Arc<Profile>> {
    let mut text = [0u8; 64];
    let key = addr_text(orig, &mut text);
    let d = ctx.dsts.get_or_start_fixed(key, orig, ctx.now).ok()?;
    d.router.as_ref().map(|r| r.profile.clone())
}

/// The fixed destination `orig`'s one endpoint, as its profile describes it.
fn orig_endpoint(orig: SocketAddr, ctx: &mut Ctx<'_>) -> Option<EndpointRef> {
    let mut text = [0u8; 64];
    let key = addr_text(orig, &mut text);
    ctx.dsts.get(key)?.endpoint_ref(orig)
}

/// The profile of `orig` (when it has been fetched) marks it opaque.
fn profile_says_opaque(orig: SocketAddr, ctx: &mut Ctx<'_>) -> bool {
    orig_profile(orig, ctx).is_some_and(|p| {
        p.opaque_protocol
            || p.endpoint
                .as_ref()
                .is_some_and(|e| e.protocol_hint == ProtocolHint::Opaque)
    })
}
