//! One request/response on a session, with the route's policies applied
//! (event-loop thread): traffic split and P2C endpoint choice per attempt,
//! the route timeout over all attempts, retries of failed responses within
//! the profile's budget, and the proxy's own error responses.
//!
//! ```text
//! dispatch -> attempt: pick backend (split) -> pick endpoint (P2C) -> connect
//!   -> send request (tapped for replay, up to 64 KiB of body)
//!   -> response head: classify
//!        failure on a retryable route, request complete, budget allows
//!          -> drop the connection, next attempt (re-picks backend and endpoint)
//!        otherwise -> forward head and body -> finish (pool the connection)
//!   route timeout before the head was forwarded -> 504, connection dropped
//!   connection failure (refused, unreachable, connect timeout, reset or closed
//!   before a response) -> the same request to another endpoint, skipping the
//!   ones that failed for it, or after the endpoint's backoff when none is in
//!   rotation, while the fail-fast window lasts and the request may be repeated
//!   (`conn_failure`); then 502/504 naming the last cause
//! ```
//!
//! Lives beside `session`, which owns the client side and calls in here.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Interest;

use super::buffer::{Buffer, Filled};
use super::ctx::{Ctx, LoopConfig, Owner, Role};
use super::destinations::Router;
use super::pipe::{Pipe, PipeError};
use super::pool::{IdleConn, Proto, UpstreamKey};
use super::session::{has_body, Phase, Session};
use super::timers::SessionTimer;
use super::token;
use super::transport::{Connect, Transport};
use super::tunnel::Tunnel;
use crate::balance::Pick;
use crate::conn_failure::{self, ConnFailure, Progress};
use crate::endpoints::{EndpointRef, ProtocolHint};
use crate::http1::{self, AfterResponse, BodyDecoder, BodyFraming, RequestHead};
use crate::profile::{self, Classification};

/// Request bodies up to this size are kept for a retry (Linkerd's replay cap).
pub const MAX_REPLAY_BODY: usize = 64 * 1024;
/// On routes without retries, bodies up to this size are kept so a request
/// sent on a pooled connection the upstream had already closed can be sent
/// again on a fresh one.
const MAX_REUSE_REPLAY_BODY: usize = 4 * 1024;
/// An upstream head buffer kept for the connection's next request is at most
/// this big: a replayed body can grow it, and that memory goes back.
const SPARE_HEAD_MAX: usize = 4 * 1024;
/// A connect near the end of the fail-fast window still gets this long.
const MIN_CONNECT_WINDOW: Duration = Duration::from_millis(50);

#[derive(PartialEq, Eq)]
pub(super) enum Resp {
    AwaitHead,
    Body,
    /// `101` to an upgrade request: once its head is written, the
    /// connections become a tunnel.
    Switching,
}

pub(super) struct Upstream {
    pub(super) stream: Transport,
    pub(super) sock: usize,
    addr: SocketAddr,
    /// What the connection was made for: its bucket in the pool.
    key: UpstreamKey,
    pub(super) inbuf: Buffer,
    connected: bool,
    reused: bool,
    /// Some byte came back on this connection for this request.
    received: bool,
    eof: bool,
}

/// One try at an endpoint.
pub(super) struct Attempt {
    /// The destination whose endpoints served it (a split backend, or the
    /// request's own destination).
    backend: Arc<str>,
    addr: SocketAddr,
    started: Instant,
}

pub(super) struct Exchange {
    dst: Arc<str>,
    router: Rc<Router>,
    route: Option<usize>,
    started: Instant,
    head_is_head: bool,
    client_minor: u8,
    keep_alive: bool,
    /// Route is retryable and the profile has a budget.
    retryable: bool,
    /// The client asked for a protocol upgrade.
    upgrade: bool,
    /// The request is a `CONNECT`: a 2xx answer opens a tunnel.
    connect: bool,
    pub(super) req: Pipe,
    resp_state: Resp,
    status: u16,
    resp_keep_alive: bool,
    pub(super) upstream: Option<Upstream>,
    head_latency: Option<Duration>,
    pub(super) attempt: Attempt,
    /// The proxy answered `Expect: 100-continue` itself; an upstream 100 is
    /// not passed on again.
    sent_continue: bool,
    /// RFC 9110 lets the request be repeated once written (its method).
    idempotent: bool,
    /// What connection failures this request met; `None` (no allocation, a
    /// word to initialise) on the one-attempt path.
    failures: Option<Box<Failures>>,
}

/// The connection failures one request met.
#[derive(Default)]
struct Failures {
    /// Endpoints whose connection failed for this request: skipped by the
    /// next pick while others are in rotation.
    endpoints: Vec<SocketAddr>,
    /// The last failure, or the one the endpoint it waits for last had: what
    /// the client is told when time runs out.
    last: Option<ConnFailure>,
}

impl Exchange {
    /// Connection failures move the request to another endpoint until then:
    /// the fail-fast window, from dispatch.
    fn give_up_at(&self, cfg: &LoopConfig) -> Instant {
        self.started + cfg.failfast_timeout
    }

    fn failed_endpoints(&self) -> &[SocketAddr] {
        self.failures.as_ref().map_or(&[], |f| &f.endpoints)
    }

    fn last_failure(&self) -> Option<ConnFailure> {
        self.failures.as_ref().and_then(|f| f.last)
    }

    /// Records that the request met `f`, on `addr` when it was one of its
    /// own connections (then `addr` is skipped by the next pick).
    fn met(&mut self, f: ConnFailure, addr: Option<SocketAddr>) {
        let failures = self.failures.get_or_insert_with(Box::default);
        failures.last = Some(f);
        failures.endpoints.extend(addr);
    }
}

/// How an upstream attempt failed, for the status and the `error` label.
#[derive(Clone, Copy, Debug)]
enum UpstreamError {
    NoEndpoints,
    /// The connection failed; the request may move to another endpoint.
    Conn(ConnFailure),
    Protocol,
}

impl UpstreamError {
    fn response(self) -> (u16, &'static str, &'static str) {
        match self {
            UpstreamError::NoEndpoints => (503, "no endpoints", "no_endpoints"),
            UpstreamError::Conn(f) => f.response(),
            UpstreamError::Protocol => (502, "invalid response from upstream", "protocol"),
        }
    }
}

impl Session {
    /// Routes a request whose discovery answers are all there and starts its
    /// first attempt.
    pub(super) fn dispatch(
        &mut self,
        head: RequestHead,
        dst: &Arc<str>,
        router: Rc<Router>,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(d) = ctx.dsts.get_mut(dst) else {
            self.synthetic(503, "destination evicted", has_body(&head));
            return;
        };
        d.last_used = ctx.now;
        d.active += 1;
        self.clear_deadline(SessionTimer::Failfast);
        let route = router.find(head.method(), head.path());
        d.authority.request();
        router.route_metrics(route).borrow().request();
        let policy = route.and_then(|i| router.profile.routes.get(i));
        let retryable = policy.is_some_and(|r| r.is_retryable) && router.budget.is_some();
        if retryable {
            if let Some(b) = &router.budget {
                b.borrow_mut().deposit(ctx.now);
            }
        }
        let timeout = policy.and_then(|r| r.timeout);

        // The last exchange's head buffer, when there was one (see
        // `finish_exchange`).
        let mut upstream_head = self.spare_head.take().unwrap_or_default();
        upstream_head.reserve(512);
        head.write_upstream(&mut upstream_head, head.upstream_host());
        let mut req = Pipe::default();
        let body = has_body(&head).then(|| BodyDecoder::new(head.framing()));
        req.start(upstream_head, body);
        // Keep what is sent for a retry (bodies up to 64 KiB), and for a
        // replay on a pooled connection that turns out to be dead (small
        // bodies only: copying large ones for that rare race costs more).
        let keep = if retryable {
            MAX_REPLAY_BODY
        } else {
            MAX_REUSE_REPLAY_BODY
        };
        req.tap(keep);
        self.ex = Some(Exchange {
            dst: dst.clone(),
            router,
            route,
            started: ctx.now,
            head_is_head: head.method() == "HEAD",
            client_minor: head.minor_version(),
            keep_alive: head.keep_alive() && !self.draining,
            retryable,
            upgrade: head.upgrade(),
            connect: head.method() == "CONNECT",
            req,
            resp_state: Resp::AwaitHead,
            status: 0,
            resp_keep_alive: false,
            upstream: None,
            head_latency: None,
            attempt: Attempt {
                backend: dst.clone(),
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                started: ctx.now,
            },
            sent_continue: false,
            idempotent: conn_failure::idempotent(head.method()),
            failures: None,
        });
        self.phase = Phase::Exchanging;
        if head.expect_continue() && head.minor_version() >= 1 && has_body(&head) {
            // The request is routed and will be sent: tell the client to go
            // ahead rather than relying on the upstream to say so.
            self.resp.push_head(b"HTTP/1.1 100 Continue\r\n\r\n");
            if let Some(ex) = self.ex.as_mut() {
                ex.sent_continue = true;
            }
        }
        match timeout {
            Some(t) => self.set_deadline(SessionTimer::Route, t, ctx),
            None => self.clear_deadline(SessionTimer::Route),
        }
        if has_body(&head) {
            self.set_deadline(SessionTimer::Body, ctx.cfg.http.body_timeout, ctx);
        } else {
            self.clear_deadline(SessionTimer::Body);
        }
        if let Err(e) = self.start_attempt(ctx) {
            self.upstream_failed(e, ctx);
        }
    }

    /// Picks a backend (split) and an endpoint (P2C) and connects; or, when
    /// every endpoint is out of rotation after failures, waits for the first
    /// to come back (at most until the request's fail-fast window ends).
    fn start_attempt(&mut self, ctx: &mut Ctx<'_>) -> Result<(), UpstreamError> {
        let ex = self.ex.as_mut().expect("exchange");
        let backend = match &ex.router.split {
            None => ex.dst.clone(),
            Some(split) => {
                let backends = &ex.router.backends;
                let dsts = &*ctx.dsts;
                let ready = |i: usize| {
                    dsts.get(&backends[i])
                        .is_some_and(|d| d.endpoints.as_ref().is_some_and(|e| !e.is_empty()))
                };
                match split.pick_ready(ctx.rng, ready) {
                    Some(i) => backends[i].clone(),
                    None => return Err(UpstreamError::NoEndpoints),
                }
            }
        };
        let d = ctx
            .dsts
            .get_mut(&backend)
            .ok_or(UpstreamError::NoEndpoints)?;
        d.last_used = ctx.now;
        let addr = match d.pick_endpoint(ctx.now, ex.failed_endpoints()) {
            Pick::Ready(addr) => addr,
            Pick::Empty => return Err(UpstreamError::NoEndpoints),
            Pick::Wait { until, cause } => {
                let last = ex.last_failure().or(cause);
                let give_up_at = ex.give_up_at(ctx.cfg);
                if ctx.now >= give_up_at {
                    return Err(match last {
                        Some(f) => UpstreamError::Conn(f),
                        None => UpstreamError::NoEndpoints,
                    });
                }
                if let Some(f) = last {
                    ex.met(f, None);
                }
                let wait = until.min(give_up_at) - ctx.now;
                log::debug!("{backend}: no endpoint in rotation; waiting {wait:?}");
                self.set_deadline(SessionTimer::Reconnect, wait, ctx);
                return Ok(());
            }
        };
        d.balancer.start(addr);
        // The balancer's set and the endpoint set are swapped together, so
        // the endpoint is there; the fallback only keeps this total.
        let endpoint = match d.endpoints.as_ref().and_then(|set| set.get(addr)) {
            Some(e) => EndpointRef::of(e),
            None => EndpointRef {
                addr,
                tls: None,
                hint: ProtocolHint::Unknown,
                opaque_port: None,
            },
        };
        ex.attempt = Attempt {
            backend,
            addr,
            started: ctx.now,
        };
        ex.router.route_metrics(ex.route).borrow().actual_request();
        self.open_upstream(UpstreamKey::new(&endpoint, Proto::Http1), ctx)
    }

    fn open_upstream(&mut self, key: UpstreamKey, ctx: &mut Ctx<'_>) -> Result<(), UpstreamError> {
        let limit = ctx.cfg.buffer_limit.max(ctx.cfg.limits.max_head_bytes + 1);
        let addr = key.addr;
        if let Some(IdleConn {
            stream, sock, buf, ..
        }) = ctx.pool.take(&key)
        {
            ctx.socks[sock] = Owner::Conn {
                session: self.key,
                role: Role::Upstream,
            };
            self.ex.as_mut().expect("exchange").upstream = Some(Upstream {
                stream: stream.reused(),
                sock,
                addr,
                key,
                inbuf: buf,
                connected: true,
                reused: true,
                received: false,
                eof: false,
            });
            return Ok(());
        }
        let mut stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(e) => {
                log::debug!("connect to {addr} failed: {e}");
                return Err(self.conn_failed_at_once(addr, ConnFailure::of_connect(&e), ctx));
            }
        };
        let sock = ctx.socks.insert(Owner::Conn {
            session: self.key,
            role: Role::Upstream,
        });
        if let Err(e) = ctx.registry.register(
            &mut stream,
            token::socket(sock),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register upstream socket: {e}");
            ctx.socks.remove(sock);
            return Err(self.conn_failed_at_once(addr, ConnFailure::ConnectError, ctx));
        }
        ctx.tcp_dst.open();
        self.ex.as_mut().expect("exchange").upstream = Some(Upstream {
            stream: Transport::connecting(stream),
            sock,
            addr,
            key,
            inbuf: Buffer::new(limit),
            connected: false,
            reused: false,
            received: false,
            eof: false,
        });
        // The connect may take its timeout, but not past the fail-fast
        // window: after that no other endpoint would be tried anyway.
        let give_up_in = self.ex.as_ref().map_or(Duration::ZERO, |ex| {
            ex.give_up_at(ctx.cfg).saturating_duration_since(ctx.now)
        });
        let timeout = ctx
            .cfg
            .connect_timeout
            .min(give_up_in.max(MIN_CONNECT_WINDOW));
        self.set_deadline(SessionTimer::Connect, timeout, ctx);
        Ok(())
    }

    /// A connect that failed before a socket was registered: the endpoint
    /// is charged with the failure as if the socket had reported it, and the
    /// attempt fails with it (`upstream_failed` then moves the request).
    fn conn_failed_at_once(
        &mut self,
        addr: SocketAddr,
        f: ConnFailure,
        ctx: &mut Ctx<'_>,
    ) -> UpstreamError {
        if let Some(ex) = self.ex.as_mut() {
            if let Some(d) = ctx.dsts.get_mut(&ex.attempt.backend) {
                d.balancer.failed(addr, f, ctx.now);
            }
            ex.met(f, Some(addr));
        }
        UpstreamError::Conn(f)
    }

    /// Advances the exchange; `Err` means close the client connection.
    pub(super) fn step_exchange(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, ()> {
        let Session {
            inbuf,
            resp,
            ex,
            deadlines,
            ..
        } = self;
        let Some(ex) = ex.as_mut() else {
            return Ok(false);
        };
        let Some(up) = ex.upstream.as_mut() else {
            return Ok(false);
        };
        let mut progress = false;

        if !up.connected {
            if !up.stream.is_writable() {
                return Ok(false);
            }
            match up.stream.connect_status() {
                Connect::Pending => return Ok(false),
                Connect::Failed(e) => {
                    log::debug!("connect to {} failed: {e}", up.addr);
                    let f = ConnFailure::of_connect(&e);
                    self.upstream_failed(UpstreamError::Conn(f), ctx);
                    return Ok(true);
                }
                Connect::Done => {
                    deadlines.clear(SessionTimer::Connect);
                    up.connected = true;
                    up.stream.connected(ctx.cfg.connect_keepalive);
                    if let Some(d) = ctx.dsts.get_mut(&ex.attempt.backend) {
                        d.balancer.connected(up.addr);
                    }
                    progress = true;
                }
            }
        }

        match ex.req.pump(inbuf, &mut up.stream) {
            Ok(p) => progress |= p,
            Err(PipeError::Body(e)) => {
                // The client's body framing broke: nothing more can be sent
                // on either connection.
                log::debug!("invalid request body: {e}");
                if !resp.wrote_any() {
                    self.abandon_exchange(ctx);
                    self.synthetic(400, "invalid request body", true);
                    return Ok(true);
                }
                return Err(());
            }
            Err(PipeError::Write(e)) => {
                log::debug!("upstream write failed: {e}");
                let f = ConnFailure::of_io(&e);
                self.upstream_failed(UpstreamError::Conn(f), ctx);
                return Ok(true);
            }
        }

        if !up.eof && !up.inbuf.is_full() {
            match up.inbuf.fill_from(&mut up.stream) {
                Ok(Filled::Some(_)) => {
                    up.received = true;
                    progress = true;
                }
                Ok(Filled::Nothing) => {}
                Ok(Filled::Eof) => {
                    up.eof = true;
                    progress = true;
                }
                Err(e) => {
                    log::debug!("upstream read failed: {e}");
                    let f = ConnFailure::of_io(&e);
                    self.upstream_failed(UpstreamError::Conn(f), ctx);
                    return Ok(true);
                }
            }
        }

        while ex.resp_state == Resp::AwaitHead && !up.inbuf.is_empty() {
            match http1::parse_response(up.inbuf.bytes(), &ctx.cfg.limits, ex.head_is_head) {
                Ok(http1::Parsed::Partial) => break,
                Ok(http1::Parsed::Complete { head, consumed }) => {
                    up.inbuf.consume(consumed);
                    progress = true;
                    if head.is_interim() {
                        // Interim response (100 Continue): pass it on to an
                        // HTTP/1.1 client and wait for the final one.
                        if ex.client_minor >= 1 && !ex.sent_continue {
                            let mut out = Vec::new();
                            head.write_downstream(&mut out, false, ex.client_minor);
                            resp.push_head(&out);
                        }
                        continue;
                    }
                    let rtt = ctx.now.saturating_duration_since(ex.attempt.started);
                    if let Some(d) = ctx.dsts.get_mut(&ex.attempt.backend) {
                        d.balancer.finish(ex.attempt.addr, rtt, ctx.now);
                    }
                    let route = ex.route.and_then(|i| ex.router.profile.routes.get(i));
                    let classes = route.map(|r| &r.response_classes[..]).unwrap_or(&[]);
                    let class = profile::classify(classes, head.status(), None);
                    let success = class == Classification::Success;
                    let mut metrics = ex.router.route_metrics(ex.route).borrow_mut();
                    metrics.actual_response(head.status(), success);
                    if !success && ex.retryable && ex.req.is_complete() && ex.req.is_tapped() {
                        let allowed = ex
                            .router
                            .budget
                            .as_ref()
                            .is_some_and(|b| b.borrow_mut().withdraw(ctx.now));
                        metrics.retryable(!allowed);
                        drop(metrics);
                        if allowed {
                            self.retry(ctx);
                            return Ok(true);
                        }
                    } else {
                        drop(metrics);
                    }
                    if head.is_switching() && !ex.upgrade {
                        log::warn!("{}: 101 to a request that asked for no upgrade", up.addr);
                        self.upstream_failed(UpstreamError::Protocol, ctx);
                        return Ok(true);
                    }
                    ex.status = head.status();
                    ex.resp_keep_alive = head.keep_alive();
                    ex.head_latency = Some(ctx.now.saturating_duration_since(ex.started));
                    if ex.connect && (200..300).contains(&head.status()) {
                        // The upstream agreed to CONNECT: a tunnel from here.
                        let mut out = Vec::new();
                        head.write_tunnel_established(&mut out);
                        resp.set_body(&out, None);
                        ex.resp_state = Resp::Switching;
                        continue;
                    }
                    if ex.client_minor == 0
                        && head.framing() != BodyFraming::None
                        && head.has_codings_besides_chunked()
                    {
                        log::warn!(
                            "{}: a transfer coding an HTTP/1.0 client cannot take",
                            up.addr
                        );
                        self.upstream_failed(UpstreamError::Protocol, ctx);
                        return Ok(true);
                    }
                    // Straight into the client pipe's buffer (after any
                    // interim head), which keeps its capacity between
                    // responses: no allocation per response.
                    let after =
                        head.write_downstream(resp.head_buf(), !ex.keep_alive, ex.client_minor);
                    if after == AfterResponse::Close {
                        ex.keep_alive = false;
                    }
                    let body = (head.framing() != BodyFraming::None)
                        .then(|| BodyDecoder::new(head.framing()));
                    resp.set_framing(body);
                    if ex.client_minor == 0 && head.framing() == BodyFraming::Chunked {
                        resp.dechunk();
                    }
                    ex.resp_state = if head.is_switching() {
                        Resp::Switching
                    } else {
                        Resp::Body
                    };
                }
                Err(e) => {
                    log::warn!("invalid response head from {}: {e}", up.addr);
                    self.upstream_failed(UpstreamError::Protocol, ctx);
                    return Ok(true);
                }
            }
        }

        if up.eof {
            match ex.resp_state {
                Resp::AwaitHead => {
                    self.upstream_failed(UpstreamError::Conn(ConnFailure::Closed), ctx);
                    return Ok(true);
                }
                Resp::Body if up.inbuf.is_empty() || resp.body_read() => {
                    if let Err(e) = resp.source_eof() {
                        log::debug!("upstream closed mid-body: {e}");
                        return Err(());
                    }
                }
                // Tunnel data: the tunnel passes the EOF on.
                Resp::Body | Resp::Switching => {}
            }
        }
        Ok(progress)
    }

    /// Sends the request again after a failed response: the connection that
    /// carried it is dropped (its body is unread), and the next attempt picks
    /// a backend and an endpoint afresh.
    fn retry(&mut self, ctx: &mut Ctx<'_>) {
        let Some(ex) = self.ex.as_mut() else {
            return;
        };
        if let Some(up) = ex.upstream.take() {
            drop_upstream(up, ctx);
        }
        ex.req.rewind();
        if let Err(e) = self.start_attempt(ctx) {
            self.upstream_failed(e, ctx);
        }
    }

    /// The response is fully written: records metrics, returns the upstream
    /// connection to the pool when it is reusable, and gets ready for the next
    /// request. Returns whether anything changed.
    pub(super) fn finish_exchange(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let Some(mut ex) = self.ex.take() else {
            return false;
        };
        self.spare_head = ex.req.take_head(SPARE_HEAD_MAX);
        self.clear_exchange_deadlines();
        let latency = ex
            .head_latency
            .unwrap_or_else(|| ctx.now.saturating_duration_since(ex.started));
        let route = ex.route.and_then(|i| ex.router.profile.routes.get(i));
        let classes = route.map(|r| &r.response_classes[..]).unwrap_or(&[]);
        let success = profile::classify(classes, ex.status, None) == Classification::Success;
        ex.router
            .route_metrics(ex.route)
            .borrow_mut()
            .response(ex.status, success, None, latency);
        // The destination is still in the table: one in use is never evicted.
        if let Some(d) = ctx.dsts.get_mut(&ex.dst) {
            d.authority.response(ex.status, success, None, latency);
            d.active = d.active.saturating_sub(1);
            d.last_used = ctx.now;
        }
        if ex.resp_state == Resp::Switching {
            if let Some(up) = ex.upstream.take() {
                self.resp.reset();
                self.phase = Phase::Tunnel(Box::new(Tunnel::new(up.stream, up.sock, up.inbuf)));
                return true;
            }
        }
        let reusable = ex.req.is_complete() && ex.resp_keep_alive;
        if let Some(up) = ex.upstream.take() {
            if reusable && up.inbuf.is_empty() && !up.eof {
                pool_upstream(up, ctx);
            } else {
                drop_upstream(up, ctx);
            }
        }
        self.resp.reset();
        // A client that half-closed after pipelining still gets an answer to
        // every request it sent.
        let more = !self.client_eof || !self.inbuf.is_empty();
        if ex.keep_alive && ex.req.is_complete() && more && !self.draining {
            self.phase = Phase::ReadHead;
        } else {
            // Nothing left to write: close now.
            self.phase = Phase::Closing;
            self.resp.start(Vec::new(), None);
        }
        true
    }

    /// Shutdown: the response to the request in flight says `connection:
    /// close` (if its head has not gone out yet).
    pub(super) fn no_keep_alive(&mut self) {
        if let Some(ex) = self.ex.as_mut() {
            if ex.resp_state == Resp::AwaitHead {
                ex.keep_alive = false;
            }
        }
    }

    /// The request body did not arrive in time: 408 if the response has not
    /// started, else just close.
    pub(super) fn body_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let Some(ex) = self.ex.as_ref() else {
            return;
        };
        if ex.req.body_read() {
            return;
        }
        log::debug!("{}: request body not complete in time", ex.dst);
        if self.resp.wrote_any() || ex.resp_state != Resp::AwaitHead {
            self.abandon_exchange(ctx);
            self.phase = Phase::Closing;
            self.resp.reset();
            self.resp.start(Vec::new(), None);
            return;
        }
        if let Some(ex) = self.ex.as_mut() {
            if let Some(up) = ex.upstream.take() {
                if let Some(d) = ctx.dsts.get_mut(&ex.attempt.backend) {
                    d.balancer.abandon(up.addr);
                }
                drop_upstream(up, ctx);
            }
        }
        self.fail_exchange(408, "request body timeout", "body_timeout", ctx);
    }

    /// The upstream's body framing broke before any of the response reached
    /// the client: the connection is dropped and the client gets 502.
    pub(super) fn bad_response_body(&mut self, ctx: &mut Ctx<'_>) {
        // The balancer already had this attempt's RTT at the head.
        if let Some(ex) = self.ex.as_mut() {
            if let Some(up) = ex.upstream.take() {
                drop_upstream(up, ctx);
            }
        }
        self.fail_exchange(502, "invalid response from upstream", "protocol", ctx);
    }

    /// A connect timer fired: fail the attempt if it is still connecting.
    pub(super) fn connect_timer(&mut self, ctx: &mut Ctx<'_>) {
        let connecting = self
            .ex
            .as_ref()
            .is_some_and(|ex| ex.upstream.as_ref().is_some_and(|u| !u.connected));
        if connecting {
            self.upstream_failed(UpstreamError::Conn(ConnFailure::ConnectTimeout), ctx);
        }
    }

    /// The wait for an endpoint to come back into rotation is over: try again
    /// (or give up, if the fail-fast window has passed).
    pub(super) fn reconnect_timer(&mut self, ctx: &mut Ctx<'_>) {
        let waiting = self
            .ex
            .as_ref()
            .is_some_and(|ex| ex.upstream.is_none() && ex.resp_state == Resp::AwaitHead);
        if waiting {
            if let Err(e) = self.start_attempt(ctx) {
                self.upstream_failed(e, ctx);
            }
        }
    }

    /// The route timeout fired. Until the response head has gone to the
    /// client, the exchange is abandoned and the client gets 504; after that
    /// the response is already streaming and is left alone (the timeout
    /// covers the wait for the response head, as in Linkerd).
    pub(super) fn route_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let Some(ex) = self.ex.as_mut() else {
            return;
        };
        if ex.resp_state != Resp::AwaitHead {
            return;
        }
        log::debug!("{}: route timeout after {:?}", ex.dst, ctx.now - ex.started);
        if let Some(up) = ex.upstream.take() {
            if let Some(d) = ctx.dsts.get_mut(&ex.attempt.backend) {
                d.balancer.abandon(up.addr);
            }
            drop_upstream(up, ctx);
        }
        self.fail_exchange(504, "response timeout", "timeout", ctx);
    }

    /// The upstream failed before a complete response. A connection failure
    /// moves the request to another endpoint when it may be repeated and the
    /// fail-fast window lasts (see `conn_failure`); otherwise the client gets
    /// a proxy error if nothing of the response reached it yet, and the
    /// connection is closed if something did.
    fn upstream_failed(&mut self, mut err: UpstreamError, ctx: &mut Ctx<'_>) {
        let Some(ex) = self.ex.as_mut() else {
            return;
        };
        // Interim heads (100 Continue) may have gone out; a final response
        // can still follow them.
        let nothing_received = ex.resp_state == Resp::AwaitHead;
        let mut response_started = !nothing_received;
        if let Some(up) = ex.upstream.take() {
            response_started |= up.received;
            if let Some(d) = ctx.dsts.get_mut(&ex.attempt.backend) {
                match err {
                    // A pooled connection closed while idle says nothing
                    // about the endpoint; a fresh one that fails does.
                    UpstreamError::Conn(f) if !up.reused => d.balancer.failed(up.addr, f, ctx.now),
                    // After the head the balancer already counted it done.
                    _ if nothing_received => d.balancer.abandon(up.addr),
                    _ => {}
                }
            }
            if let UpstreamError::Conn(f) = err {
                ex.met(f, (!up.reused).then_some(up.addr));
            }
            drop_upstream(up, ctx);
        }
        // Each turn either starts an attempt (and returns) or fails one at
        // once on another endpoint, which then leaves rotation: so this ends
        // within one turn per endpoint, and then in a wait or an error.
        while let UpstreamError::Conn(f) = err {
            if response_started || !self.resend(f, ctx) {
                break;
            }
            match self.start_attempt(ctx) {
                Ok(()) => return,
                Err(e) => err = e,
            }
        }
        if !nothing_received {
            // Part of the response is out: the only honest signal left is
            // closing the connection.
            if let Some(ex) = self.ex.take() {
                if let Some(d) = ctx.dsts.get_mut(&ex.dst) {
                    d.active = d.active.saturating_sub(1);
                }
            }
            self.phase = Phase::Closing;
            self.resp.reset();
            self.resp.start(Vec::new(), None);
            return;
        }
        let (status, reason, label) = err.response();
        self.fail_exchange(status, reason, label, ctx);
    }

    /// Whether the request may go again after connection failure `f`, and
    /// if so queues it again (counted in `spoke_connect_retries_total`).
    fn resend(&mut self, f: ConnFailure, ctx: &mut Ctx<'_>) -> bool {
        let Some(ex) = self.ex.as_mut() else {
            return false;
        };
        let progress = Progress {
            wrote_any: ex.req.wrote_any(),
            body_sent: ex.req.body_sent(),
            complete: ex.req.is_complete(),
            replayable: ex.req.is_tapped(),
            response_started: false,
        };
        let late = ctx.now >= ex.give_up_at(ctx.cfg);
        if late || !conn_failure::may_resend(ex.idempotent, progress) {
            log::debug!("{}: {} and the request cannot go again", ex.dst, f.as_str());
            return false;
        }
        if !ex.req.rewind() {
            return false;
        }
        if let Some(d) = ctx.dsts.get_mut(&ex.attempt.backend) {
            d.connect_retries.retry(&ex.attempt.backend, f);
        }
        true
    }

    /// Ends the exchange with a response made by the proxy.
    fn fail_exchange(&mut self, status: u16, reason: &str, label: &'static str, ctx: &mut Ctx<'_>) {
        let Some(mut ex) = self.ex.take() else {
            return;
        };
        self.clear_exchange_deadlines();
        if let Some(up) = ex.upstream.take() {
            drop_upstream(up, ctx);
        }
        let latency = ctx.now.saturating_duration_since(ex.started);
        if let Some(d) = ctx.dsts.get_mut(&ex.dst) {
            d.authority.response(status, false, Some(label), latency);
            d.active = d.active.saturating_sub(1);
        }
        ex.router.route_metrics(ex.route).borrow_mut().response(
            status,
            false,
            Some(label),
            latency,
        );
        let close = !ex.req.body_read() || !ex.keep_alive;
        self.synthetic(status, reason, close);
    }

    /// Drops the exchange and its upstream connection without a response.
    pub(super) fn abandon_exchange(&mut self, ctx: &mut Ctx<'_>) {
        self.clear_exchange_deadlines();
        if let Some(mut ex) = self.ex.take() {
            if let Some(up) = ex.upstream.take() {
                if let Some(d) = ctx.dsts.get_mut(&ex.attempt.backend) {
                    if ex.resp_state == Resp::AwaitHead {
                        d.balancer.abandon(up.addr);
                    }
                }
                drop_upstream(up, ctx);
            }
            if let Some(d) = ctx.dsts.get_mut(&ex.dst) {
                d.active = d.active.saturating_sub(1);
            }
        }
        if let Phase::Parked(waited) = &self.phase {
            if let Some(d) = ctx.dsts.get_mut(waited) {
                d.waiters.retain(|k| *k != self.key);
            }
        }
    }
}

fn pool_upstream(up: Upstream, ctx: &mut Ctx<'_>) {
    let idle = IdleConn {
        stream: up.stream,
        direction: ctx.direction,
        sock: up.sock,
        since: ctx.now,
        buf: up.inbuf,
    };
    match ctx.pool.put(&up.key, idle) {
        Ok(bucket) => ctx.socks[up.sock] = Owner::Idle(bucket),
        Err(idle) => {
            ctx.socks.remove(idle.sock);
            ctx.tcp_dst.close();
        }
    }
}

fn drop_upstream(up: Upstream, ctx: &mut Ctx<'_>) {
    ctx.socks.remove(up.sock);
    ctx.tcp_dst.close();
}
