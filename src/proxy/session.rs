//! One client connection and the exchange in flight on it (event-loop thread).
//!
//! ```text
//!  ReadHead --head--> (destination not ready) Parked --ready/timeout--+
//!     ^                      |                                      |
//!     |                      +------ ready --> Exchanging <---------+
//!     |  response done, keep-alive               |
//!     +------------------------------------------+--> Closing (flush, close)
//! ```
//!
//! `Session::drive` makes every step it can (read, parse, route, connect,
//! pump both directions) until nothing moves, then returns what the loop
//! should do. It runs after any event on either socket, so a side that stopped
//! reading because the other side's writes were blocked resumes as soon as they
//! drain (that is the backpressure). Each request resolves its route once and
//! keeps that router (`Rc<Router>`) to the end, whatever swaps happen meanwhile.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::buffer::{Buffer, Filled};
use super::ctx::{Ctx, LoopConfig, Role, Step};
use super::destinations::Router;
use super::exchange::{ClientSide, ExNext, Exchange};
use super::pipe::{Pipe, PipeError};
use super::ready::Readiness;
use super::timers::{Deadlines, SessionDeadlines, SessionTimer, Timer};
use super::transport::Transport;
use super::tunnel::{Tunnel, TunnelStep};
use crate::http1::{self, BodyFraming, Parsed, RequestHead};
use crate::metrics::Direction;

enum Phase {
    ReadHead,
    /// Waiting for discovery answers from this destination (or split
    /// backend).
    Parked(Arc<str>),
    Exchanging,
    /// Flush what is queued for the client, then close.
    Closing,
    /// After `101 Switching Protocols`: bytes flow both ways as they are.
    Tunnel(Box<Tunnel>),
}

pub struct Session {
    key: usize,
    /// The listener it came from: inbound or outbound.
    direction: Direction,
    client: Transport,
    sock: usize,
    inbuf: Buffer,
    /// Bytes for the client: a response head and body from upstream, or a
    /// response the proxy made itself.
    resp: Pipe,
    empty: Buffer,
    phase: Phase,
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
}

impl Session {
    pub fn new(
        key: usize,
        id: u64,
        direction: Direction,
        client: Transport,
        sock: usize,
        cfg: &LoopConfig,
    ) -> Session {
        Session {
            key,
            direction,
            client,
            sock,
            inbuf: Buffer::new(cfg.buffer_limit.max(cfg.limits.max_head_bytes + 1)),
            resp: Pipe::default(),
            empty: Buffer::new(0),
            phase: Phase::ReadHead,
            id,
            deadlines: Deadlines::default(),
            parked: None,
            ex: None,
            spare_head: None,
            client_eof: false,
            draining: false,
        }
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
                if let Phase::Tunnel(t) = &mut self.phase {
                    t.up.ready(r);
                }
            }
        }
    }

    /// Sockets this session holds besides the client's (for cleanup).
    pub fn release(mut self, ctx: &mut Ctx<'_>) {
        self.abandon_exchange(ctx);
        if let Phase::Tunnel(t) = &self.phase {
            ctx.socks.remove(t.sock);
            ctx.tcp_dst.close();
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
            match (&self.phase, kind) {
                (Phase::Parked(waited), SessionTimer::Failfast) => {
                    log::info!("{waited}: no discovery answer in time; failing the request");
                    let waited = waited.clone();
                    let close = self
                        .parked
                        .take()
                        .is_none_or(|h| has_body(&h) || !h.keep_alive());
                    self.synthetic(503, "service discovery timed out", close);
                    if let Some(d) = ctx.dsts.get_mut(&waited) {
                        d.waiters.retain(|k| *k != self.key);
                    }
                }
                (Phase::Exchanging, SessionTimer::Connect) => {
                    self.exchange(ctx, |ex, cl, ctx| ex.connect_timer(cl, ctx));
                }
                (Phase::Exchanging, SessionTimer::Reconnect) => {
                    self.exchange(ctx, |ex, cl, ctx| ex.reconnect_timer(cl, ctx));
                }
                (Phase::Exchanging, SessionTimer::Route) => {
                    self.exchange(ctx, |ex, cl, ctx| ex.route_timeout(cl, ctx));
                }
                (Phase::Exchanging, SessionTimer::Body) => {
                    self.exchange(ctx, |ex, cl, ctx| ex.body_timeout(cl, ctx));
                }
                (Phase::ReadHead, SessionTimer::Idle)
                    if self.inbuf.is_empty() && !self.resp.is_active() =>
                {
                    log::debug!("closing an idle keep-alive connection");
                    return Step::Close;
                }
                (Phase::ReadHead, SessionTimer::Head) if !self.inbuf.is_empty() => {
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
                match self.inbuf.fill_from(&mut self.client) {
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

            match self.phase {
                Phase::ReadHead if !self.resp.is_active() => {
                    if self.draining && self.inbuf.is_empty() {
                        return Step::Close;
                    }
                    if self.inbuf.is_empty() && !self.deadlines.is_set(SessionTimer::Idle) {
                        self.set_deadline(SessionTimer::Idle, ctx.cfg.http.idle_timeout, ctx);
                    }
                    progress |= self.try_start(ctx);
                }
                Phase::Parked(ref dst) => {
                    let dst = dst.clone();
                    progress |= self.try_unpark(&dst, ctx);
                }
                Phase::Exchanging => {
                    progress |= self.exchange(ctx, |ex, cl, ctx| ex.step(cl, ctx));
                }
                Phase::Tunnel(ref mut t) => {
                    match t.step(&mut self.client, &mut self.inbuf, self.client_eof) {
                        TunnelStep::Progress(p) => progress |= p,
                        TunnelStep::Done => return Step::Close,
                    }
                }
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
                match self.phase {
                    Phase::Closing => return Step::Close,
                    Phase::Exchanging => {
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

    fn wants_client_bytes(&self) -> bool {
        if self.client_eof || self.inbuf.is_full() {
            return false;
        }
        match &self.phase {
            Phase::ReadHead | Phase::Tunnel(_) => true,
            Phase::Exchanging => self.ex.as_ref().is_some_and(|ex| !ex.body_read()),
            _ => false,
        }
    }

    /// Handles the client's EOF; `false` means close now.
    fn on_client_eof(&mut self) -> bool {
        match &self.phase {
            // Nothing in flight: a clean close (or a truncated head).
            Phase::ReadHead => self.resp.is_active() || !self.inbuf.is_empty(),
            Phase::Parked(_) => false,
            // Half-close after a complete request still gets its response.
            Phase::Exchanging => self.ex.as_ref().is_some_and(|ex| ex.body_read()),
            Phase::Closing | Phase::Tunnel(_) => true,
        }
    }

    /// Parses a request head from the buffer and starts it.
    fn try_start(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if self.inbuf.is_empty() {
            return false;
        }
        match http1::parse_request(self.inbuf.bytes(), &ctx.cfg.limits) {
            Ok(Parsed::Partial) if self.client_eof => {
                // The client went away in the middle of a head.
                self.phase = Phase::Closing;
                self.resp.start(Vec::new(), None);
                true
            }
            Ok(Parsed::Partial) => {
                // Part of a head: it must be complete within the deadline.
                if !self.deadlines.is_set(SessionTimer::Head) {
                    self.set_deadline(SessionTimer::Head, ctx.cfg.http.head_timeout, ctx);
                }
                false
            }
            Ok(Parsed::Complete { head, consumed }) => {
                self.inbuf.consume(consumed);
                self.deadlines.clear(SessionTimer::Idle);
                self.deadlines.clear(SessionTimer::Head);
                self.route_or_park(head, false, ctx);
                true
            }
            Err(e) => {
                log::debug!("rejecting request: {e}");
                self.synthetic(e.status(), e.reason(), true);
                true
            }
        }
    }

    /// Starts the request if everything it needs from discovery is there, or
    /// parks it on the destination (or split backend) it waits for. A request
    /// parked again after a wake-up keeps its original fail-fast deadline.
    fn route_or_park(&mut self, head: RequestHead, reparking: bool, ctx: &mut Ctx<'_>) {
        let Some((host, port)) = head.authority_raw() else {
            self.synthetic(400, "missing or invalid host", true);
            return;
        };
        let key = DstKey::new(host, port);
        let (dst, name) = (key.key(), key.name());
        let wait_on = match ctx.dsts.get_or_start(dst, name, port, ctx.now) {
            Err(e) => {
                log::error!("{dst}: cannot start discovery: {}", e.0);
                self.synthetic(503, "discovery unavailable", has_body(&head));
                return;
            }
            Ok(d) => match &d.router {
                None => d.name.clone(),
                // No split: the destination's own endpoints, already at hand.
                Some(router) if router.backends.is_empty() && d.endpoints.is_none() => {
                    d.name.clone()
                }
                Some(router) if router.backends.is_empty() => {
                    let (router, name) = (router.clone(), d.name.clone());
                    self.dispatch(head, &name, router, ctx);
                    return;
                }
                Some(router) => {
                    let (router, name) = (router.clone(), d.name.clone());
                    match waiting_for_backend(&router, ctx) {
                        None => {
                            self.dispatch(head, &name, router, ctx);
                            return;
                        }
                        Some(w) => w,
                    }
                }
            },
        };
        if let Some(d) = ctx.dsts.get_mut(&wait_on) {
            d.waiters.push(self.key);
        }
        if !reparking {
            self.set_deadline(SessionTimer::Failfast, ctx.cfg.failfast_timeout, ctx);
        }
        self.parked = Some(head);
        self.phase = Phase::Parked(wait_on);
    }

    fn try_unpark(&mut self, waited: &Arc<str>, ctx: &mut Ctx<'_>) -> bool {
        if let Some(d) = ctx.dsts.get_mut(waited) {
            d.waiters.retain(|k| *k != self.key);
        }
        match self.parked.take() {
            Some(head) => {
                self.route_or_park(head, true, ctx);
                !matches!(self.phase, Phase::Parked(_))
            }
            None => false,
        }
    }

    /// Shutdown: an idle connection closes now (`true`); a busy one finishes
    /// its request and then closes.
    pub fn start_draining(&mut self) -> bool {
        self.draining = true;
        let idle = matches!(self.phase, Phase::ReadHead)
            && self.inbuf.is_empty()
            && !self.resp.is_active();
        if !idle {
            if let Some(ex) = self.ex.as_mut() {
                ex.no_keep_alive();
            }
        }
        idle
    }

    /// Routes a request whose discovery answers are all there and starts its
    /// first attempt.
    fn dispatch(
        &mut self,
        head: RequestHead,
        dst: &Arc<str>,
        router: Rc<Router>,
        ctx: &mut Ctx<'_>,
    ) {
        let spare = self.spare_head.take();
        let slot = &mut self.ex;
        match Exchange::start_in(slot, &head, dst, router, spare, self.draining, ctx) {
            Err(next) => {
                self.apply(next);
            }
            Ok(()) => {
                self.clear_deadline(SessionTimer::Failfast);
                self.phase = Phase::Exchanging;
                self.exchange(ctx, |ex, cl, ctx| ex.begin(cl, ctx));
            }
        }
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
                self.phase = Phase::Closing;
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

    /// The response is fully written: the exchange records its metrics and
    /// pools its upstream connection, and the session gets ready for the
    /// next request (or a tunnel, or closing). Whether anything changed.
    fn finish_exchange(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let (ex, mut cl) = self.lend();
        let Some(exchange) = ex.as_mut() else {
            return false;
        };
        let done = exchange.finish(&mut cl, ctx);
        self.ex = None;
        self.spare_head = done.spare_head;
        self.resp.reset();
        if let Some((stream, sock, buf)) = done.tunnel {
            self.phase = Phase::Tunnel(Box::new(Tunnel::new(stream, sock, buf)));
            return true;
        }
        // A client that half-closed after pipelining still gets an answer to
        // every request it sent.
        let more = !self.client_eof || !self.inbuf.is_empty();
        if done.keep_alive && more && !self.draining {
            self.phase = Phase::ReadHead;
        } else {
            // Nothing left to write: close now.
            self.phase = Phase::Closing;
            self.resp.start(Vec::new(), None);
        }
        true
    }

    /// Drops the exchange and its upstream connection without a response,
    /// and stops waiting on a destination.
    fn abandon_exchange(&mut self, ctx: &mut Ctx<'_>) {
        let (ex, mut cl) = self.lend();
        if let Some(mut ex) = ex.take() {
            ex.abandon(&mut cl, ctx);
        }
        if let Phase::Parked(waited) = &self.phase {
            if let Some(d) = ctx.dsts.get_mut(waited) {
                d.waiters.retain(|k| *k != self.key);
            }
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

    /// Queues a response made by the proxy itself.
    fn synthetic(&mut self, status: u16, reason: &str, close: bool) {
        self.resp.reset();
        self.resp
            .start(http1::error_response(status, reason, close), None);
        self.phase = if close {
            Phase::Closing
        } else {
            Phase::ReadHead
        };
    }
}

/// With a traffic split, a request waits only until any one backend has
/// endpoints; this starts the backends' discovery and names one still missing.
fn waiting_for_backend(router: &Router, ctx: &mut Ctx<'_>) -> Option<Arc<str>> {
    let mut first_missing = None;
    for b in &router.backends {
        match ctx.dsts.start(b, ctx.now) {
            Ok(d) if d.endpoints.is_some() => return None,
            Ok(_) => {
                first_missing.get_or_insert_with(|| b.clone());
            }
            Err(e) => log::warn!("{b}: cannot start discovery: {}", e.0),
        }
    }
    // No backend could even start: fall through to a 503 at dispatch.
    first_missing
}

fn has_body(head: &RequestHead) -> bool {
    head.framing() != BodyFraming::None
}

/// `name:port` with the name lowercased: the destination table's key.
/// Built by hand into a buffer on the stack (a heap string for names longer
/// than any DNS name): this runs for every request, and `format!` plus two
/// strings cost about a tenth of a request's instructions on the loop.
struct DstKey {
    buf: [u8; DST_KEY_INLINE],
    len: usize,
    name_len: usize,
    /// The key when it does not fit `buf` (empty otherwise: no allocation).
    heap: String,
}

/// A DNS name is at most 253 bytes; then `:` and five digits.
const DST_KEY_INLINE: usize = 260;

impl DstKey {
    fn new(host: &str, port: u16) -> DstKey {
        let mut digits = [0u8; 20];
        let port = http1::decimal(u64::from(port), &mut digits);
        let len = host.len() + 1 + port.len();
        let mut key = DstKey {
            buf: [0u8; DST_KEY_INLINE],
            len,
            name_len: host.len(),
            heap: String::new(),
        };
        if len <= DST_KEY_INLINE {
            key.buf[..host.len()].copy_from_slice(host.as_bytes());
            key.buf[..host.len()].make_ascii_lowercase();
            key.buf[host.len()] = b':';
            key.buf[host.len() + 1..len].copy_from_slice(port);
        } else {
            key.heap = host.to_ascii_lowercase();
            key.heap.push(':');
            key.heap.extend(port.iter().map(|d| char::from(*d)));
        }
        key
    }

    fn key(&self) -> &str {
        if !self.heap.is_empty() {
            return &self.heap;
        }
        // Lowercasing ASCII bytes keeps UTF-8 valid, so this never fails.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    fn name(&self) -> &str {
        self.key().get(..self.name_len).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::{DstKey, DST_KEY_INLINE};

    #[test]
    fn dst_keys() {
        let key = |host: &str, port| {
            let k = DstKey::new(host, port);
            (k.key().to_owned(), k.name().to_owned())
        };
        assert_eq!(
            key("Books.default.svc.cluster.local", 7000),
            (
                "books.default.svc.cluster.local:7000".to_owned(),
                "books.default.svc.cluster.local".to_owned()
            )
        );
        assert_eq!(key("a", 0), ("a:0".to_owned(), "a".to_owned()));
        assert_eq!(
            key("[::1]", 65535),
            ("[::1]:65535".to_owned(), "[::1]".to_owned())
        );
        // Up to the inline size, and past it.
        for n in [DST_KEY_INLINE - 6, DST_KEY_INLINE - 5, DST_KEY_INLINE + 40] {
            let host = "X".repeat(n);
            let (k, name) = key(&host, 65535);
            assert_eq!(k, format!("{}:65535", "x".repeat(n)));
            assert_eq!(name, "x".repeat(n));
        }
    }
}
