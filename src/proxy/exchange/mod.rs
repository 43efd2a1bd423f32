//! One request/response of a session, with the route's policies applied
//! (event-loop thread): traffic split and P2C endpoint choice per attempt,
//! the route timeout over all attempts, retries of failed responses within
//! the profile's budget, connection failures moved to another endpoint, and
//! the proxy's own error responses. The HTTP/1 wire (connect, send, parse
//! the response) is `h1.rs`.
//!
//! ```text
//! begin -> attempt: pick backend (split) -> pick endpoint (P2C) -> connect
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
//! Metrics: `request_total`/`response_total` carry Linkerd's TLS labels
//! (`metrics/tls.rs`). Inbound, the client connection's state, known before
//! the request is routed; outbound, the state of the connection to the
//! chosen endpoint, so an outbound request is counted in `request_total` at
//! its first attempt, and its response under the endpoint of the last one (a
//! request the proxy answers before any attempt: `no_endpoint`).
//!
//! An exchange never sees its session: the session lends it a [`ClientSide`]
//! (the client's read buffer, the response pipe, its deadlines) and applies
//! the [`ExNext`] each call returns.

mod h1;
mod wire;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::buffer::Buffer;
use super::ctx::{connect_label, Ctx, LoopConfig};
use super::destinations::{Destination, Router};
use super::inbound;
use super::pipe::Pipe;
use super::pool::{Proto, UpstreamKey};
use super::ready::Readiness;
use super::timers::{SessionDeadlines, SessionTimer};
use super::transport::Transport;
use crate::balance::Pick;
use crate::conn_failure::{self, ConnFailure, Progress};
use crate::endpoints::{EndpointRef, ProtocolHint};
use crate::http1::{BodyDecoder, BodyFraming, RequestHead};
use crate::metrics::{Direction, NoTlsReason, TlsLabel, TlsSlot};
use crate::profile::{self, Classification};
use crate::tls::MeshTls;

use h1::Upstream;

/// Request bodies up to this size are kept for a retry (Linkerd's replay cap).
pub const MAX_REPLAY_BODY: usize = 64 * 1024;
/// On routes without retries, bodies up to this size are kept so a request
/// whose connection failed before a response can be sent again on another
/// (small bodies only: copying large ones for that rare case costs more).
const MAX_REUSE_REPLAY_BODY: usize = 4 * 1024;
/// An upstream head buffer kept for the connection's next request is at most
/// this big: a replayed body can grow it, and that memory goes back.
const SPARE_HEAD_MAX: usize = 4 * 1024;

/// What of its session an exchange may touch.
pub(super) struct ClientSide<'a> {
    /// The session's slab key: the owner of the upstream sockets.
    pub session: usize,
    /// The client's read buffer: the request body comes from it.
    pub inbuf: &'a mut Buffer,
    /// The response pipe to the client.
    pub resp: &'a mut Pipe,
    pub deadlines: SessionDeadlines<'a>,
}

/// What the session does after a call into its exchange.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ExNext {
    /// The exchange goes on; whether anything moved.
    Going(bool),
    /// The exchange is over (its metrics counted, its upstream released):
    /// the session drops it and queues this response of its own.
    Respond {
        status: u16,
        reason: &'static str,
        close: bool,
    },
    /// The exchange is over and the client connection must close: part of
    /// the response went out, or the framing broke after it started.
    Close,
}

/// A response fully written: what the session goes on with.
pub(super) struct Finished {
    /// After `101` or a `CONNECT` 2xx: the upstream connection, for a tunnel.
    pub tunnel: Option<(Transport, usize, Buffer)>,
    /// Both sides allow another request on the client connection.
    pub keep_alive: bool,
    /// The upstream head buffer, for the next request to reuse.
    pub spare_head: Option<Vec<u8>>,
}

#[derive(PartialEq, Eq)]
enum Resp {
    AwaitHead,
    Body,
    /// `101` to an upgrade request: once its head is written, the
    /// connections become a tunnel.
    Switching,
}

/// One try at an endpoint.
struct Attempt {
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
    /// It may go upgraded to HTTP/2 to an endpoint whose proxy takes that
    /// (`proxy/h2::Upgraded`): outbound, and no upgrade or tunnel asked.
    upgradable: bool,
    /// The client's target was in absolute form (`l5d-orig-proto` says so).
    absolute_form: bool,
    has_body: bool,
    expect_continue: bool,
    timeout: Option<Duration>,
    req: Pipe,
    resp_state: Resp,
    status: u16,
    resp_keep_alive: bool,
    upstream: Option<Upstream>,
    head_latency: Option<Duration>,
    attempt: Attempt,
    /// The proxy answered `Expect: 100-continue` itself; an upstream 100 is
    /// not passed on again.
    sent_continue: bool,
    /// RFC 9110 lets the request be repeated once written (its method).
    idempotent: bool,
    /// What connection failures this request met; `None` (no allocation, a
    /// word to initialise) on the one-attempt path.
    failures: Option<Box<Failures>>,
    /// Where in its destination's `request_total`/`response_total` series
    /// the request counts, by TLS state: inbound, the client connection's;
    /// outbound, the connection to the endpoint of the latest attempt. Set
    /// when `request_total` counts it: outbound at the first attempt (or,
    /// answered before any, under `no_endpoint`).
    tls: Option<TlsSlot>,
}

/// An outbound request's TLS state when the proxy answers it before any
/// attempt picked an endpoint.
const NO_ENDPOINT: TlsLabel = TlsLabel::NoIdentity(NoTlsReason::NoEndpoint);

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

/// What the client's connection tells a new exchange.
pub struct From<'a> {
    /// The last exchange's head buffer, when there was one.
    pub spare_head: Option<Vec<u8>>,
    /// Shutting down: no keep-alive.
    pub draining: bool,
    /// The identity the client proved over mTLS (inbound).
    pub client_id: Option<&'a str>,
    /// The client connection's TLS state (inbound requests are counted
    /// under it).
    pub client_tls: &'a TlsLabel,
}

impl Exchange {
    /// Routes a request whose discovery answers are all there, into `slot`
    /// (built in place: the exchange is a few hundred bytes, and this runs
    /// for every request). `from` is what the client connection tells it.
    /// `Err` is the response the proxy makes instead (the destination is
    /// gone).
    #[inline]
    pub(super) fn start_in(
        slot: &mut Option<Exchange>,
        head: &RequestHead,
        dst: &Arc<str>,
        router: Rc<Router>,
        from: From<'_>,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), ExNext> {
        let From {
            spare_head,
            draining,
            client_id,
            client_tls,
        } = from;
        let has_body = head.framing() != BodyFraming::None;
        let Some(d) = ctx.dsts.get_mut(dst) else {
            return Err(ExNext::Respond {
                status: 503,
                reason: "destination evicted",
                close: has_body,
            });
        };
        d.last_used = ctx.now;
        d.active += 1;
        let route = router.find(head.method(), head.path());
        let tls = (ctx.direction == Direction::Inbound).then(|| {
            let slot = d.authority.slot(client_tls);
            d.authority.request(slot);
            slot
        });
        router.route_metrics(route).borrow().request();
        let policy = route.and_then(|i| router.profile.routes.get(i));
        let retryable = policy.is_some_and(|r| r.is_retryable) && router.budget.is_some();
        if retryable {
            if let Some(b) = &router.budget {
                b.borrow_mut().deposit(ctx.now);
            }
        }
        let timeout = policy.and_then(|r| r.timeout);
        let mut upstream_head = spare_head.unwrap_or_default();
        upstream_head.reserve(512);
        match ctx.direction {
            Direction::Outbound => head.write_upstream(&mut upstream_head, head.upstream_host()),
            Direction::Inbound => {
                // The destination's one endpoint is the target.
                let dsts = &*ctx.dsts;
                let target = || {
                    let set = dsts.get(dst)?.endpoints.as_ref()?;
                    set.endpoints.first().map(|e| e.addr)
                };
                inbound::write_upstream_head(head, &mut upstream_head, client_id, target);
            }
        }
        let mut req = Pipe::default();
        let body = has_body.then(|| BodyDecoder::new(head.framing()));
        req.start(upstream_head, body);
        // Keep what is sent for a retry (bodies up to 64 KiB), and for a
        // request whose connection fails before a response (small bodies).
        let keep = if retryable {
            MAX_REPLAY_BODY
        } else {
            MAX_REUSE_REPLAY_BODY
        };
        req.tap(keep);
        *slot = Some(Exchange {
            dst: dst.clone(),
            router,
            route,
            started: ctx.now,
            head_is_head: head.method() == "HEAD",
            client_minor: head.minor_version(),
            keep_alive: head.keep_alive() && !draining,
            retryable,
            upgrade: head.upgrade(),
            connect: head.method() == "CONNECT",
            upgradable: ctx.direction == Direction::Outbound
                && crate::proxy::h2::upgradable(head.method(), head.target(), head.upgrade()),
            absolute_form: head.is_absolute_form(),
            has_body,
            expect_continue: head.expect_continue() && head.minor_version() >= 1 && has_body,
            timeout,
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
            tls,
        });
        Ok(())
    }

    /// Arms the exchange's deadlines and starts its first attempt.
    #[inline]
    pub(super) fn begin(&mut self, cl: &mut ClientSide<'_>, ctx: &mut Ctx<'_>) -> ExNext {
        if self.expect_continue {
            // The request is routed and will be sent: tell the client to go
            // ahead rather than relying on the upstream to say so.
            cl.resp.push_head(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.sent_continue = true;
        }
        match self.timeout {
            Some(t) => cl
                .deadlines
                .set(SessionTimer::Route, t, ctx.now, ctx.timers),
            None => cl.deadlines.clear(SessionTimer::Route),
        }
        if self.has_body {
            let t = ctx.cfg.http.body_timeout;
            cl.deadlines.set(SessionTimer::Body, t, ctx.now, ctx.timers);
        } else {
            cl.deadlines.clear(SessionTimer::Body);
        }
        match self.start_attempt(cl, ctx) {
            Ok(()) => ExNext::Going(true),
            Err(e) => self.upstream_failed(e, cl, ctx),
        }
    }

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

    /// The whole request body has been read from the client.
    pub(super) fn body_read(&self) -> bool {
        self.req.body_read()
    }

    /// Records what an event said about the upstream socket.
    pub(super) fn upstream_ready(&mut self, r: Readiness) -> bool {
        match self.upstream.as_mut() {
            Some(up) => {
                up.stream.ready(r);
                true
            }
            None => false,
        }
    }

    /// The upstream's read buffer, which the response body is pumped from.
    pub(super) fn response_source(&mut self) -> Option<&mut Buffer> {
        self.upstream.as_mut().map(|up| &mut up.inbuf)
    }

    /// Picks a backend (split) and an endpoint (P2C) and connects; or, when
    /// every endpoint is out of rotation after failures, waits for the first
    /// to come back (at most until the request's fail-fast window ends).
    fn start_attempt(
        &mut self,
        cl: &mut ClientSide<'_>,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), UpstreamError> {
        let backend = self
            .router
            .pick_backend(&self.dst, ctx.dsts, ctx.rng)
            .ok_or(UpstreamError::NoEndpoints)?;
        let d = ctx
            .dsts
            .get_mut(&backend)
            .ok_or(UpstreamError::NoEndpoints)?;
        d.last_used = ctx.now;
        let addr = match d.pick_endpoint(ctx.now, self.failed_endpoints()) {
            Pick::Ready(addr) => addr,
            Pick::Empty => return Err(UpstreamError::NoEndpoints),
            Pick::Wait { until, cause } => {
                let last = self.last_failure().or(cause);
                let give_up_at = self.give_up_at(ctx.cfg);
                if ctx.now >= give_up_at {
                    return Err(match last {
                        Some(f) => UpstreamError::Conn(f),
                        None => UpstreamError::NoEndpoints,
                    });
                }
                if let Some(f) = last {
                    self.met(f, None);
                }
                let wait = until.min(give_up_at) - ctx.now;
                log::debug!("{backend}: no endpoint in rotation; waiting {wait:?}");
                cl.deadlines
                    .set(SessionTimer::Reconnect, wait, ctx.now, ctx.timers);
                return Ok(());
            }
        };
        d.balancer.start(addr);
        // The balancer's set and the endpoint set are swapped together, so
        // the endpoint is there; the fallback only keeps this total.
        let endpoint = d
            .endpoint_ref(addr)
            .unwrap_or_else(|| EndpointRef::plain(addr));
        if ctx.direction == Direction::Outbound {
            let label = connect_label(ctx.direction, endpoint.tls.as_ref(), ctx.tls);
            // Split or not, the request counts under its own destination.
            let own = if Arc::ptr_eq(&backend, &self.dst) {
                Some(d)
            } else {
                ctx.dsts.get_mut(&self.dst)
            };
            if let Some(own) = own {
                let slot = own.authority.slot(&label);
                if self.tls.replace(slot).is_none() {
                    own.authority.request(slot);
                }
            }
        }
        self.attempt = Attempt {
            backend,
            addr,
            started: ctx.now,
        };
        self.router
            .route_metrics(self.route)
            .borrow()
            .actual_request();
        // Linkerd's proxy-to-proxy upgrade: an endpoint whose proxy takes
        // HTTP/2, reached over mTLS, gets the request as an HTTP/2 stream on
        // the connection every request to it shares.
        let proto = if self.upgradable
            && ctx.cfg.orig_proto_upgrade
            && endpoint.hint == ProtocolHint::H2
            && endpoint.tls.is_some()
            && matches!(ctx.tls, MeshTls::Ready(_))
        {
            Proto::H2
        } else {
            Proto::Http1
        };
        self.open_upstream(UpstreamKey::new(&endpoint, proto), cl, ctx)
    }

    /// Sends the request again after a failed response: the connection that
    /// carried it is dropped (its body is unread), and the next attempt picks
    /// a backend and an endpoint afresh.
    fn retry(&mut self, cl: &mut ClientSide<'_>, ctx: &mut Ctx<'_>) -> ExNext {
        if let Some(up) = self.upstream.take() {
            h1::drop_upstream(up, ctx);
        }
        self.req.rewind();
        match self.start_attempt(cl, ctx) {
            Ok(()) => ExNext::Going(true),
            Err(e) => self.upstream_failed(e, cl, ctx),
        }
    }

    /// The response is fully written: records metrics and returns the
    /// upstream connection to the pool when it is reusable (or hands it over
    /// for a tunnel).
    /// The session drops the exchange afterwards (in place: it is large).
    pub(super) fn finish(&mut self, cl: &mut ClientSide<'_>, ctx: &mut Ctx<'_>) -> Finished {
        let spare_head = self.req.take_head(SPARE_HEAD_MAX);
        cl.deadlines.clear_exchange();
        let latency = self
            .head_latency
            .unwrap_or_else(|| ctx.now.saturating_duration_since(self.started));
        let route = self.route.and_then(|i| self.router.profile.routes.get(i));
        let classes = route.map(|r| &r.response_classes[..]).unwrap_or(&[]);
        let success = profile::classify(classes, self.status, None) == Classification::Success;
        self.router.route_metrics(self.route).borrow_mut().response(
            self.status,
            success,
            None,
            latency,
        );
        // The destination is still in the table: one in use is never evicted.
        if let Some(d) = ctx.dsts.get_mut(&self.dst) {
            let slot = counted_slot(&mut self.tls, d);
            d.authority
                .response(slot, self.status, success, None, latency);
            d.active = d.active.saturating_sub(1);
            d.last_used = ctx.now;
        }
        let mut tunnel = None;
        if let Some(up) = self.upstream.take() {
            if self.resp_state == Resp::Switching {
                // Requests that may switch are never upgraded.
                tunnel = up.into_conn(ctx).map(|(t, sock, buf, _)| (t, sock, buf));
            } else if self.req.is_complete()
                && self.resp_keep_alive
                && up.inbuf.is_empty()
                && !up.eof
            {
                h1::pool_upstream(up, ctx);
            } else {
                h1::drop_upstream(up, ctx);
            }
        }
        Finished {
            tunnel,
            keep_alive: self.keep_alive && self.req.is_complete(),
            spare_head,
        }
    }

    /// Shutdown: the response to the request in flight says `connection:
    /// close` (if its head has not gone out yet).
    pub(super) fn no_keep_alive(&mut self) {
        if self.resp_state == Resp::AwaitHead {
            self.keep_alive = false;
        }
    }

    /// The request body did not arrive in time: 408 if the response has not
    /// started, else just close.
    pub(super) fn body_timeout(&mut self, cl: &mut ClientSide<'_>, ctx: &mut Ctx<'_>) -> ExNext {
        if self.req.body_read() {
            return ExNext::Going(false);
        }
        log::debug!("{}: request body not complete in time", self.dst);
        if cl.resp.wrote_any() || self.resp_state != Resp::AwaitHead {
            self.abandon(cl, ctx);
            return ExNext::Close;
        }
        self.abandon_upstream(ctx);
        self.fail(408, "request body timeout", "body_timeout", cl, ctx)
    }

    /// The upstream's body framing broke before any of the response reached
    /// the client: the connection is dropped and the client gets 502.
    pub(super) fn bad_response_body(
        &mut self,
        cl: &mut ClientSide<'_>,
        ctx: &mut Ctx<'_>,
    ) -> ExNext {
        // The balancer already had this attempt's RTT at the head.
        if let Some(up) = self.upstream.take() {
            h1::drop_upstream(up, ctx);
        }
        self.fail(502, "invalid response from upstream", "protocol", cl, ctx)
    }

    /// A connect timer fired: fail the attempt if it is still connecting.
    pub(super) fn connect_timer(&mut self, cl: &mut ClientSide<'_>, ctx: &mut Ctx<'_>) -> ExNext {
        if self.upstream.as_ref().is_some_and(|u| !u.connected) {
            let timed_out = UpstreamError::Conn(ConnFailure::ConnectTimeout);
            return self.upstream_failed(timed_out, cl, ctx);
        }
        ExNext::Going(false)
    }

    /// The wait for an endpoint to come back into rotation is over: try again
    /// (or give up, if the fail-fast window has passed).
    pub(super) fn reconnect_timer(&mut self, cl: &mut ClientSide<'_>, ctx: &mut Ctx<'_>) -> ExNext {
        if self.upstream.is_some() || self.resp_state != Resp::AwaitHead {
            return ExNext::Going(false);
        }
        match self.start_attempt(cl, ctx) {
            Ok(()) => ExNext::Going(true),
            Err(e) => self.upstream_failed(e, cl, ctx),
        }
    }

    /// The route timeout fired. Until the response head has gone to the
    /// client, the exchange is abandoned and the client gets 504; after that
    /// the response is already streaming and is left alone (the timeout
    /// covers the wait for the response head, as in Linkerd).
    pub(super) fn route_timeout(&mut self, cl: &mut ClientSide<'_>, ctx: &mut Ctx<'_>) -> ExNext {
        if self.resp_state != Resp::AwaitHead {
            return ExNext::Going(false);
        }
        log::debug!(
            "{}: route timeout after {:?}",
            self.dst,
            ctx.now - self.started
        );
        self.abandon_upstream(ctx);
        self.fail(504, "response timeout", "timeout", cl, ctx)
    }

    /// The upstream failed before a complete response. A connection failure
    /// moves the request to another endpoint when it may be repeated and the
    /// fail-fast window lasts (see `conn_failure`); otherwise the client gets
    /// a proxy error if nothing of the response reached it yet, and the
    /// connection is closed if something did.
    fn upstream_failed(
        &mut self,
        mut err: UpstreamError,
        cl: &mut ClientSide<'_>,
        ctx: &mut Ctx<'_>,
    ) -> ExNext {
        // Interim heads (100 Continue) may have gone out; a final response
        // can still follow them.
        let nothing_received = self.resp_state == Resp::AwaitHead;
        let mut response_started = !nothing_received;
        if let Some(up) = self.upstream.take() {
            response_started |= up.received;
            if let Some(d) = ctx.dsts.get_mut(&self.attempt.backend) {
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
                self.met(f, (!up.reused).then_some(up.addr));
            }
            h1::drop_upstream(up, ctx);
        }
        // Each turn either starts an attempt (and returns) or fails one at
        // once on another endpoint, which then leaves rotation: so this ends
        // within one turn per endpoint, and then in a wait or an error.
        while let UpstreamError::Conn(f) = err {
            if response_started || !self.resend(f, ctx) {
                break;
            }
            match self.start_attempt(cl, ctx) {
                Ok(()) => return ExNext::Going(true),
                Err(e) => err = e,
            }
        }
        if !nothing_received {
            // Part of the response is out: the only honest signal left is
            // closing the connection.
            self.abandon(cl, ctx);
            return ExNext::Close;
        }
        let (status, reason, label) = err.response();
        self.fail(status, reason, label, cl, ctx)
    }

    /// Whether the request may go again after connection failure `f`, and
    /// if so queues it again (counted in `spoke_connect_retries_total`).
    fn resend(&mut self, f: ConnFailure, ctx: &mut Ctx<'_>) -> bool {
        let progress = Progress {
            wrote_any: self.req.wrote_any(),
            body_sent: self.req.body_sent(),
            complete: self.req.is_complete(),
            replayable: self.req.is_tapped(),
            response_started: false,
        };
        let late = ctx.now >= self.give_up_at(ctx.cfg);
        if late || !conn_failure::may_resend(self.idempotent, f, progress) {
            log::debug!(
                "{}: {} and the request cannot go again",
                self.dst,
                f.as_str()
            );
            return false;
        }
        if !self.req.rewind() {
            return false;
        }
        if let Some(d) = ctx.dsts.get_mut(&self.attempt.backend) {
            d.connect_retries.retry(&self.attempt.backend, f);
        }
        true
    }

    /// Ends the exchange with a response made by the proxy.
    fn fail(
        &mut self,
        status: u16,
        reason: &'static str,
        label: &'static str,
        cl: &mut ClientSide<'_>,
        ctx: &mut Ctx<'_>,
    ) -> ExNext {
        cl.deadlines.clear_exchange();
        if let Some(up) = self.upstream.take() {
            h1::drop_upstream(up, ctx);
        }
        let latency = ctx.now.saturating_duration_since(self.started);
        if let Some(d) = ctx.dsts.get_mut(&self.dst) {
            let slot = counted_slot(&mut self.tls, d);
            d.authority
                .response(slot, status, false, Some(label), latency);
            d.active = d.active.saturating_sub(1);
        }
        self.router.route_metrics(self.route).borrow_mut().response(
            status,
            false,
            Some(label),
            latency,
        );
        ExNext::Respond {
            status,
            reason,
            close: !self.req.body_read() || !self.keep_alive,
        }
    }

    /// Drops the exchange's upstream connection (waiting for a response):
    /// the balancer stops counting the request pending there.
    fn abandon_upstream(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(up) = self.upstream.take() {
            if let Some(d) = ctx.dsts.get_mut(&self.attempt.backend) {
                if self.resp_state == Resp::AwaitHead {
                    d.balancer.abandon(up.addr);
                }
            }
            h1::drop_upstream(up, ctx);
        }
    }

    /// Ends the exchange without a response: its upstream connection is
    /// dropped and the destination no longer counts it in use.
    pub(super) fn abandon(&mut self, cl: &mut ClientSide<'_>, ctx: &mut Ctx<'_>) {
        cl.deadlines.clear_exchange();
        self.abandon_upstream(ctx);
        if let Some(d) = ctx.dsts.get_mut(&self.dst) {
            counted_slot(&mut self.tls, d);
            d.active = d.active.saturating_sub(1);
        }
    }
}

/// The request's TLS slot in `d`'s series; one answered (or abandoned)
/// before any attempt is counted now, under `no_endpoint`.
pub(in crate::proxy) fn counted_slot(tls: &mut Option<TlsSlot>, d: &mut Destination) -> TlsSlot {
    *tls.get_or_insert_with(|| {
        let slot = d.authority.slot(&NO_ENDPOINT);
        d.authority.request(slot);
        slot
    })
}
