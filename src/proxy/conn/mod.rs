//! One accepted client connection, a *session* (event-loop thread): its
//! transport, read buffer and response pipe, its deadlines, and the stage it
//! is in. Each stage has its file: detection in `detect.rs` (what a
//! redirected connection speaks), the HTTP/1 phases in `http1.rs` (requests
//! one at a time, each an exchange of `proxy/exchange`), and the opaque stage
//! in `opaque.rs` (bytes both ways as they are: not HTTP, or after an upgrade
//! or `CONNECT`).
//!
//! ```text
//!  Accepted --> Detect --> Opaque (not HTTP/1; see detect.rs)
//!     |            | HTTP/1
//!     v            v
//!  ReadHead --head--> (destination not ready) Parked --ready/timeout--+
//!     ^                      |                                      |
//!     |                      +------ ready --> Exchanging <---------+
//!     |  response done, keep-alive               |   101 / CONNECT 2xx
//!     +------------------------------------------+--> Opaque --both EOF--+
//!                                                +--> Closing (flush, close)
//! ```
//!
//! `Session::drive` makes every step it can (read, parse, route, connect,
//! pump both directions) until nothing moves, then returns what the loop
//! should do. It runs after any event on either socket, so a side that stopped
//! reading because the other side's writes were blocked resumes as soon as they
//! drain (that is the backpressure). Each request resolves its route once and
//! keeps that router (`Rc<Router>`) to the end, whatever swaps happen meanwhile.

mod detect;
mod direct;
mod http1;
mod opaque;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::buffer::{Buffer, Filled};
use super::ctx::{accept_label, Ctx, LoopConfig, Role, Step};
use super::destinations::Waiter;
use super::exchange::{ClientSide, ExNext, Exchange};
use super::pipe::{Pipe, PipeError};
use super::ready::Readiness;
use super::timers::{Deadlines, SessionDeadlines, SessionTimer, Timer};
use super::transport::Transport;
use crate::conn_failure::ConnFailure;
use crate::http1::RequestHead;
use crate::metrics::{Direction, NoTlsReason, TlsLabel};

use http1::has_body;
use opaque::{Tunnel, TunnelStep};

/// Where a session is in its life.
enum Stage {
    /// Just accepted: the first step picks the stage (`detect.rs`).
    Accepted,
    /// Reading the first bytes to tell the protocol; with a connection to
    /// the target once the client was silent for the quiet period.
    Detect(Option<Box<Tunnel>>),
    /// HTTP/1: waiting for (the rest of) a request head.
    ReadHead,
    /// HTTP/1: waiting for discovery answers from this destination (or split
    /// backend).
    Parked(Arc<str>),
    /// HTTP/1: a request's exchange is in flight.
    Exchanging,
    /// Flush what is queued for the client, then close.
    Closing,
    /// Bytes flow both ways as they are (not HTTP, or after `101 Switching
    /// Protocols` or a `CONNECT` 2xx).
    Opaque(Box<Tunnel>),
    /// The client speaks HTTP/2: the loop hands the connection to
    /// `proxy/h2` ([`Session::into_h2`]).
    H2,
}

pub struct Session {
    key: usize,
    /// The listener it came from: inbound or outbound.
    direction: Direction,
    /// Where the client was connecting before iptables redirected it to
    /// spoke (`None`: it connected to the listener itself).
    orig_dst: Option<SocketAddr>,
    client: Transport,
    sock: usize,
    inbuf: Buffer,
    /// Bytes for the client: a response head and body from upstream, or a
    /// response the proxy made itself.
    resp: Pipe,
    empty: Buffer,
    stage: Stage,
    /// Unique for the life of the loop, so a heap entry left by a closed
    /// session never fires on the one that reused its slab key.
    id: u64,
    deadlines: Deadlines,
    parked: Option<RequestHead>,
    ex: Option<Exchange>,
    /// The head buffer of the last request sent upstream, kept for the next
    /// one on this connection (`dispatch`).
    spare_head: Option<Vec<u8>>,
    client_eof: bool,
    /// Shutting down: finish what is in flight, then close.
    draining: bool,
    /// An inbound connection to spoke's own port (`direct.rs`): mTLS with
    /// the opaque transport header says where it goes; until then it goes
    /// nowhere.
    direct: bool,
    /// The client connection's TLS state as its metrics label it: once it is
    /// settled (`settle_tls`), the state its `tcp_*` series and its requests
    /// carry; before, what detection saw of it, if anything (an opaque port,
    /// a ClientHello for another name).
    tls: Option<TlsLabel>,
}

/// The TLS state of a client connection not settled yet (never one that
/// carries requests: those are settled before).
static UNSETTLED: TlsLabel = TlsLabel::NoIdentity(NoTlsReason::NoTlsFromRemote);

impl Session {
    pub fn new(
        key: usize,
        id: u64,
        direction: Direction,
        orig_dst: Option<SocketAddr>,
        client: Transport,
        sock: usize,
        cfg: &LoopConfig,
    ) -> Session {
        Session {
            key,
            direction,
            orig_dst,
            client,
            sock,
            inbuf: Buffer::new(cfg.buffer_limit.max(cfg.limits.max_head_bytes + 1)),
            resp: Pipe::default(),
            empty: Buffer::new(0),
            stage: Stage::Accepted,
            id,
            deadlines: Deadlines::default(),
            parked: None,
            ex: None,
            spare_head: None,
            client_eof: false,
            draining: false,
            direct: false,
            tls: None,
        }
    }

    /// Gives up the client connection to HTTP/2 (after [`Step::H2`]): its
    /// transport, the bytes read so far (the preface, maybe more), its
    /// direction, original destination, socket and TLS state.
    pub fn into_h2(self) -> super::h2::Handover {
        super::h2::Handover {
            prefix: self.inbuf.bytes().to_vec(),
            transport: self.client,
            direction: self.direction,
            orig_dst: self.orig_dst,
            sock: self.sock,
            tls: self
                .tls
                .unwrap_or(TlsLabel::NoIdentity(NoTlsReason::NoTlsFromRemote)),
        }
    }

    /// The client sent the HTTP/2 preface: hand it over to HTTP/2. An
    /// inbound connection its port's policy refuses is closed instead
    /// (`Err`).
    pub(super) fn go_h2(&mut self, reason: &'static str, ctx: &mut Ctx<'_>) -> Result<(), ()> {
        ctx.detect.count(self.direction, "h2", reason);
        if matches!(self.stage, Stage::Detect(_)) {
            self.drop_probe(ctx);
            self.end_detection();
        }
        if self.refused(ctx).is_some() {
            return Err(());
        }
        self.settle_tls(ctx);
        self.stage = Stage::H2;
        Ok(())
    }

    /// Counts the client connection open, in the TLS state it turned out to
    /// have (once; later calls do nothing). Outbound that is known at once;
    /// inbound when detection (and TLS termination, if any) has finished, as
    /// Linkerd counts its accepted connections: one closed before that is
    /// in no `tcp_*` series.
    fn settle_tls(&mut self, ctx: &mut Ctx<'_>) {
        if self.client.is_counted() {
            return;
        }
        let terminated = self
            .client
            .is_tls()
            .then(|| self.client.peer_identity().cloned());
        let label = accept_label(self.direction, ctx.tls, self.tls.take(), terminated);
        self.client.count_open(ctx.tcp.src.series(&label));
        self.tls = Some(label);
    }

    /// The connection came to the inbound port itself (see `direct.rs`).
    pub fn set_direct(&mut self) {
        self.direct = true;
    }

    pub fn direction(&self) -> Direction {
        self.direction
    }

    pub fn client_sock(&self) -> usize {
        self.sock
    }

    /// Records what an event said about one of this session's sockets: the
    /// client's, or the upstream's (of the exchange or the tunnel). A session
    /// has at most one upstream socket at a time; an event for one it
    /// already dropped never reaches it (the slab entry went with it).
    pub fn ready(&mut self, role: Role, r: Readiness) {
        match role {
            Role::Client => self.client.ready(r),
            Role::Upstream => {
                if self.ex.as_mut().is_some_and(|ex| ex.upstream_ready(r)) {
                    return;
                }
                match &mut self.stage {
                    Stage::Opaque(t) => t.up.ready(r),
                    Stage::Detect(Some(t)) => t.up.ready(r),
                    _ => {}
                }
            }
        }
    }

    /// Sockets this session holds besides the client's (for cleanup).
    pub fn release(mut self, ctx: &mut Ctx<'_>) {
        self.abandon_exchange(ctx);
        self.client.count_close();
        match std::mem::replace(&mut self.stage, Stage::Closing) {
            Stage::Opaque(t) | Stage::Detect(Some(t)) => t.close(ctx),
            _ => {}
        }
    }

    /// Housekeeping: an idle connection gives back its empty read buffers.
    pub fn trim(&mut self) {
        match &mut self.stage {
            Stage::Opaque(t) => {
                self.inbuf.shrink_if_empty();
                t.trim();
            }
            Stage::ReadHead if self.ex.is_none() && !self.resp.is_active() => {
                self.inbuf.shrink_if_empty();
            }
            _ => {}
        }
    }

    /// A heap entry for this session fired: handle the deadlines that are
    /// due and re-arm for the next.
    pub fn on_timer(&mut self, id: u64, ctx: &mut Ctx<'_>) -> Step {
        if id != self.id {
            return Step::Open;
        }
        let (due, rearm) = self.deadlines.fired(ctx.now);
        if let Some(at) = rearm {
            ctx.timers.add(
                at,
                Timer::Session {
                    key: self.key,
                    id: self.id,
                },
            );
        }
        for kind in due {
            log::trace!("deadline {kind:?} is due");
            if matches!(self.stage, Stage::Detect(_)) {
                if self.detect_timer(kind, ctx).is_err() {
                    return Step::Close;
                }
                continue;
            }
            match (&self.stage, kind) {
                (Stage::Opaque(t), SessionTimer::Connect) if !t.is_connected() => {
                    log::info!("opaque connection to {:?}: connect timed out", t.addr());
                    if !self.opaque_connect_failed(ConnFailure::ConnectTimeout, ctx) {
                        return Step::Close;
                    }
                }
                (Stage::Closing, SessionTimer::Idle) => {
                    log::debug!("closing a connection whose client did not read its last bytes");
                    return Step::Close;
                }
                (Stage::Opaque(_), SessionTimer::Idle) => {
                    log::debug!("closing an idle opaque connection");
                    return Step::Close;
                }
                (Stage::Parked(waited), SessionTimer::Failfast) => {
                    log::info!("{waited}: no discovery answer in time; failing the request");
                    let waited = waited.clone();
                    let close = self
                        .parked
                        .take()
                        .is_none_or(|h| has_body(&h) || !h.keep_alive());
                    self.synthetic(503, "service discovery timed out", close);
                    if let Some(d) = ctx.dsts.get_mut(&waited) {
                        d.waiters.retain(|k| *k != Waiter::Session(self.key));
                    }
                }
                (Stage::Exchanging, SessionTimer::Connect) => {
                    self.exchange(ctx, |ex, cl, ctx| ex.connect_timer(cl, ctx));
                }
                (Stage::Exchanging, SessionTimer::Reconnect) => {
                    self.exchange(ctx, |ex, cl, ctx| ex.reconnect_timer(cl, ctx));
                }
                (Stage::Exchanging, SessionTimer::Route) => {
                    self.exchange(ctx, |ex, cl, ctx| ex.route_timeout(cl, ctx));
                }
                (Stage::Exchanging, SessionTimer::Body) => {
                    self.exchange(ctx, |ex, cl, ctx| ex.body_timeout(cl, ctx));
                }
                (Stage::ReadHead, SessionTimer::Idle)
                    if self.inbuf.is_empty() && !self.resp.is_active() =>
                {
                    log::debug!("closing an idle keep-alive connection");
                    return Step::Close;
                }
                (Stage::ReadHead, SessionTimer::Head) if !self.inbuf.is_empty() => {
                    log::debug!("request head not complete in time");
                    self.synthetic(408, "request head timeout", true);
                }
                _ => {}
            }
        }
        self.drive(ctx)
    }

    /// Makes all the progress it can.
    pub fn drive(&mut self, ctx: &mut Ctx<'_>) -> Step {
        loop {
            let mut progress = false;

            if self.wants_client_bytes() {
                match self.client.fill(&mut self.inbuf) {
                    Ok(Filled::Some(_)) => progress = true,
                    Ok(Filled::Nothing) => {}
                    Ok(Filled::Eof) => {
                        self.client_eof = true;
                        progress = true;
                    }
                    Err(e) => {
                        log::debug!("client read failed: {e}");
                        return Step::Close;
                    }
                }
            }

            if self.client_eof && !self.on_client_eof() {
                return Step::Close;
            }

            match self.stage {
                Stage::Accepted => {
                    if self.first_stage(ctx).is_err() {
                        return Step::Close;
                    }
                    progress = true;
                }
                Stage::Detect(_) => match self.detect_step(ctx) {
                    Ok(p) => progress |= p,
                    Err(()) => return Step::Close,
                },
                Stage::ReadHead if !self.resp.is_active() => {
                    if self.draining && self.inbuf.is_empty() {
                        return Step::Close;
                    }
                    if self.inbuf.is_empty() && !self.deadlines.is_set(SessionTimer::Idle) {
                        self.set_deadline(SessionTimer::Idle, ctx.cfg.http.idle_timeout, ctx);
                    }
                    progress |= self.try_start(ctx);
                }
                Stage::Parked(ref dst) => {
                    let dst = dst.clone();
                    progress |= self.try_unpark(&dst, ctx);
                }
                Stage::Exchanging => {
                    progress |= self.exchange(ctx, |ex, cl, ctx| ex.step(cl, ctx));
                }
                Stage::Opaque(_) => match self.opaque_step(ctx) {
                    Ok(p) => progress |= p,
                    Err(()) => return Step::Close,
                },
                Stage::H2 => return Step::H2,
                _ => {}
            }

            let src = match self.ex.as_mut().and_then(Exchange::response_source) {
                Some(src) => src,
                None => &mut self.empty,
            };
            match self.resp.pump(src, &mut self.client) {
                Ok(p) => progress |= p,
                Err(PipeError::Write(e)) => {
                    log::debug!("client write failed: {e}");
                    return Step::Close;
                }
                Err(PipeError::Body(e)) => {
                    log::warn!("invalid response body from upstream: {e}");
                    if self.resp.wrote_any() || self.ex.is_none() {
                        // The head went out: the client must not see a
                        // truncated body as whole, so the connection closes.
                        return Step::Close;
                    }
                    // Nothing reached the client yet: answer 502 instead.
                    self.exchange(ctx, |ex, cl, ctx| ex.bad_response_body(cl, ctx));
                    progress = true;
                }
            }

            if self.resp.is_complete() {
                match self.stage {
                    Stage::Closing => {
                        if self.closed(ctx) {
                            return Step::Close;
                        }
                    }
                    Stage::Exchanging => {
                        if self.finish_exchange(ctx) {
                            progress = true;
                        }
                    }
                    _ => {
                        // A synthetic response on a keep-alive connection.
                        self.resp.reset();
                        progress = true;
                    }
                }
            }

            if !progress {
                return Step::Open;
            }
        }
    }

    /// One step of the opaque stage (kept out of `drive`'s body, which the
    /// HTTP/1 path runs for every request). `Err`: close.
    #[inline(never)]
    fn opaque_step(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, ()> {
        let Stage::Opaque(t) = &mut self.stage else {
            return Ok(false);
        };
        match t.step(&mut self.client, &mut self.inbuf, self.client_eof, ctx) {
            TunnelStep::Progress(true) => {
                if let Some(idle) = ctx.cfg.detect.opaque_idle_timeout {
                    self.set_deadline(SessionTimer::Idle, idle, ctx);
                }
                Ok(true)
            }
            TunnelStep::Progress(false) => Ok(false),
            TunnelStep::ConnectFailed(cause) => {
                if self.opaque_connect_failed(cause, ctx) {
                    Ok(true)
                } else {
                    Err(())
                }
            }
            TunnelStep::Done => Err(()),
        }
    }

    /// The Closing stage's response is out: whether the connection may
    /// close now. Over TLS, `close_notify` goes first, and the last bytes may
    /// still be inside TLS: an event flushes them; a client that never reads
    /// them is closed when the idle timeout ends.
    #[cold]
    #[inline(never)]
    fn closed(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if self.client.is_tls() {
            let _ = self.client.shutdown_write();
        }
        if !self.client.wants_flush() {
            return true;
        }
        if !self.deadlines.is_set(SessionTimer::Idle) {
            self.set_deadline(SessionTimer::Idle, ctx.cfg.http.idle_timeout, ctx);
        }
        false
    }

    fn wants_client_bytes(&self) -> bool {
        if self.client_eof || self.inbuf.is_full() {
            return false;
        }
        match &self.stage {
            Stage::ReadHead | Stage::Opaque(_) | Stage::Detect(_) => true,
            Stage::Exchanging => self.ex.as_ref().is_some_and(|ex| !ex.body_read()),
            _ => false,
        }
    }

    /// Handles the client's EOF; `false` means close now.
    fn on_client_eof(&mut self) -> bool {
        match &self.stage {
            // Nothing in flight: a clean close (or a truncated head).
            Stage::ReadHead => self.resp.is_active() || !self.inbuf.is_empty(),
            Stage::Parked(_) => false,
            // Half-close after a complete request still gets its response.
            Stage::Exchanging => self.ex.as_ref().is_some_and(|ex| ex.body_read()),
            // Detection decides on what it has; a tunnel passes it on.
            Stage::Accepted | Stage::Detect(_) | Stage::Closing | Stage::Opaque(_) | Stage::H2 => {
                true
            }
        }
    }

    /// Shutdown: an idle connection closes now (`true`); a busy one finishes
    /// its request and then closes.
    pub fn start_draining(&mut self) -> bool {
        self.draining = true;
        let idle = matches!(
            self.stage,
            Stage::ReadHead | Stage::Accepted | Stage::Detect(None)
        ) && self.inbuf.is_empty()
            && !self.resp.is_active();
        if !idle {
            if let Some(ex) = self.ex.as_mut() {
                ex.no_keep_alive();
            }
        }
        idle
    }

    /// Runs `f` on the exchange with the parts of the session it may touch,
    /// and applies what it returns; whether anything moved.
    #[inline]
    fn exchange(
        &mut self,
        ctx: &mut Ctx<'_>,
        f: impl FnOnce(&mut Exchange, &mut ClientSide<'_>, &mut Ctx<'_>) -> ExNext,
    ) -> bool {
        let (ex, mut cl) = self.lend();
        let Some(ex) = ex.as_mut() else {
            return false;
        };
        let next = f(ex, &mut cl, ctx);
        self.apply(next)
    }

    /// Acts on what the exchange said; whether anything moved.
    #[inline]
    fn apply(&mut self, next: ExNext) -> bool {
        match next {
            ExNext::Going(progress) => progress,
            ExNext::Respond {
                status,
                reason,
                close,
            } => {
                self.ex = None;
                self.synthetic(status, reason, close);
                true
            }
            ExNext::Close => {
                self.ex = None;
                self.stage = Stage::Closing;
                self.resp.reset();
                self.resp.start(Vec::new(), None);
                true
            }
        }
    }

    /// The exchange slot, and the parts of the session an exchange may touch.
    #[inline]
    fn lend(&mut self) -> (&mut Option<Exchange>, ClientSide<'_>) {
        let cl = ClientSide {
            session: self.key,
            inbuf: &mut self.inbuf,
            resp: &mut self.resp,
            deadlines: SessionDeadlines {
                deadlines: &mut self.deadlines,
                key: self.key,
                id: self.id,
            },
        };
        (&mut self.ex, cl)
    }

    /// The session's deadlines with what arming them takes.
    fn session_deadlines(&mut self) -> SessionDeadlines<'_> {
        SessionDeadlines {
            deadlines: &mut self.deadlines,
            key: self.key,
            id: self.id,
        }
    }

    /// Sets a deadline `after` from now, pushing a heap entry only when no
    /// earlier one is outstanding.
    fn set_deadline(&mut self, kind: SessionTimer, after: Duration, ctx: &mut Ctx<'_>) {
        self.lend()
            .1
            .deadlines
            .set(kind, after, ctx.now, ctx.timers);
    }

    fn clear_deadline(&mut self, kind: SessionTimer) {
        self.deadlines.clear(kind);
    }
}
