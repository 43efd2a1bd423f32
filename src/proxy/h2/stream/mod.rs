//! One proxied HTTP/2 request and its response, a *stream task*
//! (event-loop thread): the same target rules, profile route, timeout,
//! traffic split and P2C endpoint choice as an HTTP/1 exchange, applied per
//! request, so the calls of one client connection spread over every
//! endpoint. Its upstream stream rides a shared connection of `upstream.rs`;
//! bodies and trailers move through `pump.rs`.
//!
//! ```text
//! new --discovery not ready--> Parked --ready / fail-fast--+
//!  |                                                        v
//!  +--> Pick: split backend, P2C endpoint --> Connecting (shared connection)
//!         ^   connection failed, stream refused           |  ready
//!         +---(fail-fast window, request replayable)------+--> Sent: request body
//!                                                         |    flows; response head
//!                                                         v
//!                       Streaming: response body and trailers to the client
//! inbound with `l5d-orig-proto`: Pick --> H1 (its own HTTP/1 connection to
//!   the application, `h1.rs`) instead of Connecting/Sent/Streaming
//! route timeout before the head: 504 / grpc-status 4; other proxy errors:
//! 502/503 / grpc-status 14, trailers-only for gRPC (`grpc.rs`)
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};

mod h1;

use super::downgrade::{self, H1Leg, OrigProto};
use super::grpc;
use super::pump::{End, Half};
use super::task::{ReadyList, TaskHandle, TaskId};
use super::upstream::{self, Status, UpRef};
use crate::balance::Pick;
use crate::conn_failure::ConnFailure;
use crate::endpoints::EndpointRef;
use crate::metrics::{Direction, TlsLabel, TlsSlot};
use crate::profile::{self, Classification};
use crate::proxy::ctx::{connect_label, Ctx, DialError};
use crate::proxy::destinations::{Router, Waiter};
use crate::proxy::exchange::counted_slot;
use crate::proxy::pool::{Proto, UpstreamKey};
use crate::proxy::target::{self, Failed, Found};
use crate::proxy::timers::Timer;

/// Request bodies up to this size are kept so the request can be sent
/// again on another connection (a refused stream, a GOAWAY, a connection
/// that failed).
const MAX_REPLAY_BODY: usize = 64 * 1024;

const L5D_CLIENT_ID: http::HeaderName = http::HeaderName::from_static("l5d-client-id");

/// What a stream task needs of the loop while it runs.
pub struct Env<'a, 'c> {
    pub ctx: &'a mut Ctx<'c>,
}

/// What the connection a request came on tells its stream.
pub struct Origin {
    pub direction: Direction,
    pub orig_dst: Option<SocketAddr>,
    /// The identity the client proved over mTLS (inbound).
    pub client_id: Option<Arc<str>>,
    /// The connection's TLS state, as metrics label it.
    pub tls: TlsLabel,
    /// The client connection (its premature-reset guard hears of resets).
    pub server: super::server::ServerRef,
}

struct Routed {
    dst: Arc<str>,
    router: Rc<Router>,
    route: Option<usize>,
    /// The route is retryable and the profile has a budget.
    retryable: bool,
}

/// The request body as far as it is kept for another attempt.
#[derive(Default)]
struct Kept {
    chunks: Vec<Bytes>,
    len: usize,
    /// Past the limit: nothing kept, no attempt after the first write.
    overflowed: bool,
    trailers: Option<HeaderMap>,
    /// The client's body ended (END_STREAM seen).
    complete: bool,
}

/// The request leg of one attempt.
struct ReqLeg {
    to: SendStream<Bytes>,
    half: Half,
    /// Kept chunks sent on this attempt so far (a replay goes through them
    /// before reading the client again).
    replayed: usize,
    done: bool,
}

enum Phase {
    /// Waiting for discovery of this destination.
    Parked(Arc<str>),
    /// Routed; choosing an endpoint (again, after a failure).
    Pick,
    /// No endpoint in rotation: try again then.
    Backoff(Instant),
    Connecting,
    /// Sent; waiting for the response head while the body goes up.
    Sent(ResponseFuture),
    /// A downgraded request (`l5d-orig-proto`) on its own HTTP/1
    /// connection to the application, head and body.
    H1(Box<H1Leg>),
    /// The head is out: the response body and trailers follow.
    Streaming {
        from: RecvStream,
        to: SendStream<Bytes>,
        half: Half,
    },
    Done,
}

struct Attempt {
    backend: Arc<str>,
    addr: SocketAddr,
    started: Instant,
    /// The shared HTTP/2 connection it rides (`None`: a downgraded request
    /// on its own HTTP/1 connection, `Phase::H1`).
    up: Option<UpRef>,
    req: Option<ReqLeg>,
}

pub struct StreamTask {
    pub direction: Direction,
    key: usize,
    task: TaskHandle,
    origin: Origin,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    client_body: RecvStream,
    respond: SendResponse<Bytes>,
    grpc: bool,
    /// Inbound, `l5d-orig-proto` said the request was HTTP/1 upgraded by
    /// the client's proxy: it goes to the application as HTTP/1.1.
    orig: Option<OrigProto>,
    started: Instant,
    phase: Phase,
    routed: Option<Routed>,
    kept: Kept,
    attempt: Option<Attempt>,
    deadline: Option<Instant>,
    failed_endpoints: Vec<SocketAddr>,
    last_failure: Option<ConnFailure>,
    /// The response status, when its head went out, and its latency.
    status: Option<(u16, Duration)>,
    grpc_status: Option<u32>,
    /// Its `request_total` series (the TLS state it is counted under):
    /// inbound its connection's, outbound its first endpoint's.
    tls: Option<TlsSlot>,
    /// The client reset the stream before the response was over (its
    /// connection's premature-reset guard hears of it).
    reset_by_client: bool,
}

/// Whether a stream task is over.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    Going,
    Done,
    /// Over: the client reset the stream before its response.
    ResetByClient(super::server::ServerRef),
}

impl StreamTask {
    pub fn new(
        key: usize,
        req: Request<RecvStream>,
        respond: SendResponse<Bytes>,
        origin: Origin,
        ready: &ReadyList,
        now: Instant,
    ) -> StreamTask {
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        if origin.direction == Direction::Inbound {
            // Only an identity proved on this connection is passed on.
            headers.remove(L5D_CLIENT_ID);
            if let Some(id) = origin.client_id.as_deref() {
                if let Ok(v) = HeaderValue::from_str(id) {
                    headers.insert(L5D_CLIENT_ID, v);
                }
            }
        }
        let complete = body.is_end_stream();
        let orig = match origin.direction {
            Direction::Inbound => downgrade::orig_proto(&headers),
            Direction::Outbound => None,
        };
        StreamTask {
            orig,
            direction: origin.direction,
            key,
            task: TaskHandle::new(TaskId::Stream(key), ready),
            grpc: grpc::is_grpc(&headers),
            origin,
            method: parts.method,
            uri: parts.uri,
            headers,
            client_body: body,
            respond,
            started: now,
            phase: Phase::Pick,
            routed: None,
            kept: Kept {
                complete,
                ..Kept::default()
            },
            attempt: None,
            deadline: None,
            failed_endpoints: Vec::new(),
            last_failure: None,
            status: None,
            grpc_status: None,
            tls: None,
            reset_by_client: false,
        }
    }

    pub fn wake(&self) {
        self.task.wake();
    }

    fn authority(&self) -> Option<(&str, u16)> {
        let a = self.uri.authority()?;
        let port = a.port_u16().unwrap_or(match self.uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        Some((a.host(), port))
    }

    /// Advances the stream as far as it can go.
    pub fn poll(&mut self, env: &mut Env<'_, '_>) -> Polled {
        match self.advance(env) {
            Polled::Done if self.reset_by_client => Polled::ResetByClient(self.origin.server),
            polled => polled,
        }
    }

    fn advance(&mut self, env: &mut Env<'_, '_>) -> Polled {
        self.task.polling();
        if self.routed.is_none() {
            self.route(env);
        }
        loop {
            if let Some(d) = self.deadline {
                let going = !matches!(self.phase, Phase::Done);
                if going && env.ctx.now >= d && self.status.is_none() {
                    log::debug!("h2 stream: route timeout");
                    self.fail(504, "response timeout", "timeout", env);
                }
            }
            let progress = match &mut self.phase {
                Phase::Done => return Polled::Done,
                Phase::Parked(_) => {
                    if self.give_up_at(env) <= env.ctx.now {
                        self.fail(503, "service discovery timed out", "unavailable", env);
                        continue;
                    }
                    self.route(env);
                    !matches!(self.phase, Phase::Parked(_))
                }
                Phase::Pick => {
                    self.pick(env);
                    true
                }
                Phase::Backoff(until) => {
                    if env.ctx.now >= *until {
                        self.phase = Phase::Pick;
                        true
                    } else {
                        false
                    }
                }
                Phase::Connecting => self.connecting(env),
                Phase::Sent(_) => self.sent(env),
                Phase::H1(_) => self.h1(env),
                Phase::Streaming { .. } => self.streaming(env),
            };
            if matches!(self.phase, Phase::Done) {
                return Polled::Done;
            }
            if !progress {
                // A client that reset the stream before the response: stop.
                if self.status.is_none() {
                    let mut cx = self.task.context();
                    if let Poll::Ready(r) = self.respond.poll_reset(&mut cx) {
                        log::debug!("h2 stream reset by the client: {r:?}");
                        self.abandon(env);
                        self.reset_by_client = true;
                        return Polled::Done;
                    }
                }
                return Polled::Going;
            }
        }
    }

    fn give_up_at(&self, env: &Env<'_, '_>) -> Instant {
        self.started + env.ctx.cfg.failfast_timeout
    }

    /// Finds the destination, or parks on it.
    fn route(&mut self, env: &mut Env<'_, '_>) {
        let ctx = &mut *env.ctx;
        let authority = self.authority();
        let found = target::find(self.origin.orig_dst, authority, ctx);
        match found {
            Found::Ready { name, router } => {
                let Some(d) = ctx.dsts.get_mut(&name) else {
                    return self.fail(503, "destination evicted", "unavailable", env);
                };
                d.last_used = ctx.now;
                d.active += 1;
                if ctx.direction == Direction::Inbound {
                    let slot = d.authority.slot(&self.origin.tls);
                    d.authority.request(slot);
                    self.tls = Some(slot);
                }
                let route = router.find(self.method.as_str(), self.uri.path());
                router.route_metrics(route).borrow().request();
                let policy = route.and_then(|i| router.profile.routes.get(i));
                let timeout = policy.and_then(|r| r.timeout);
                let retryable = policy.is_some_and(|r| r.is_retryable);
                let retryable = match (&router.budget, retryable) {
                    (Some(b), true) => {
                        b.borrow_mut().deposit(ctx.now);
                        true
                    }
                    _ => false,
                };
                if let Some(t) = timeout {
                    let at = self.started + t;
                    self.deadline = Some(at);
                    ctx.timers.add(at, Timer::H2(TaskId::Stream(self.key)));
                }
                self.routed = Some(Routed {
                    dst: name,
                    router,
                    route,
                    retryable,
                });
                self.phase = Phase::Pick;
            }
            Found::Wait(name) => {
                if let Some(d) = ctx.dsts.get_mut(&name) {
                    d.waiters.push(Waiter::Stream(self.key));
                }
                if !matches!(self.phase, Phase::Parked(_)) {
                    let at = self.started + ctx.cfg.failfast_timeout;
                    ctx.timers.add(at, Timer::H2(TaskId::Stream(self.key)));
                }
                self.phase = Phase::Parked(name);
            }
            Found::Fail(Failed::NoOriginalDst) => {
                self.fail(502, "no original destination", "unavailable", env)
            }
            Found::Fail(Failed::NoAuthority) => {
                self.fail(400, "missing or invalid authority", "bad_request", env)
            }
            Found::Fail(Failed::Discovery) => {
                self.fail(503, "discovery unavailable", "unavailable", env)
            }
        }
    }

    /// Chooses a backend and an endpoint and takes a connection to it.
    fn pick(&mut self, env: &mut Env<'_, '_>) {
        let Some(routed) = &self.routed else {
            return;
        };
        let ctx = &mut *env.ctx;
        let Some(backend) = routed.router.pick_backend(&routed.dst, ctx.dsts, ctx.rng) else {
            return self.fail(503, "no endpoints", "no_endpoints", env);
        };
        let Some(d) = ctx.dsts.get_mut(&backend) else {
            return self.fail(503, "no endpoints", "no_endpoints", env);
        };
        d.last_used = ctx.now;
        let addr = match d.pick_endpoint(ctx.now, &self.failed_endpoints) {
            Pick::Ready(addr) => addr,
            Pick::Empty => return self.fail(503, "no endpoints", "no_endpoints", env),
            Pick::Wait { until, cause } => {
                let give_up_at = self.started + ctx.cfg.failfast_timeout;
                let last = self.last_failure.or(cause);
                if ctx.now >= give_up_at {
                    return self.conn_error(last, env);
                }
                let at = until.min(give_up_at);
                ctx.timers.add(at, Timer::H2(TaskId::Stream(self.key)));
                self.phase = Phase::Backoff(at);
                return;
            }
        };
        d.balancer.start(addr);
        let endpoint = d
            .endpoint_ref(addr)
            .unwrap_or_else(|| EndpointRef::plain(addr));
        if ctx.direction == Direction::Outbound && self.tls.is_none() {
            // Split or not, the request counts under its own destination.
            let label = connect_label(ctx.direction, endpoint.tls.as_ref(), ctx.tls);
            if let Some(own) = ctx.dsts.get_mut(&routed.dst) {
                let slot = own.authority.slot(&label);
                own.authority.request(slot);
                self.tls = Some(slot);
            }
        }
        routed
            .router
            .route_metrics(routed.route)
            .borrow()
            .actual_request();
        if let Some(orig) = self.orig {
            return self.start_h1(backend, addr, orig, env);
        }
        let key = UpstreamKey::new(&endpoint, Proto::H2);
        match upstream::checkout(ctx, &key, self.task.waker()) {
            Ok(up) => {
                self.attempt = Some(Attempt {
                    backend,
                    addr,
                    started: ctx.now,
                    up: Some(up),
                    req: None,
                });
                self.phase = Phase::Connecting;
            }
            Err(e) => self.dial_failed(e, &backend, addr, ctx),
        }
    }

    /// A connect to `addr` (of `backend`) failed at once: the endpoint is
    /// charged with it and the request picks again.
    fn dial_failed(&mut self, e: DialError, backend: &str, addr: SocketAddr, ctx: &mut Ctx<'_>) {
        let f = match e {
            DialError::Connect(e) | DialError::Register(e) => ConnFailure::of_connect(&e),
            DialError::Tls(_) => ConnFailure::Tls,
        };
        if let Some(d) = ctx.dsts.get_mut(backend) {
            d.balancer.failed(addr, f, ctx.now);
        }
        self.failed_endpoints.push(addr);
        self.last_failure = Some(f);
        self.phase = Phase::Pick;
    }

    /// Moves the request body up; `None` when the client's stream failed
    /// (the stream is abandoned).
    fn request_step(&mut self, env: &mut Env<'_, '_>) -> Option<bool> {
        match self.pump_request() {
            Ok(p) => Some(p),
            Err(e) => {
                log::debug!("h2 client stream failed: {e}");
                self.reset_by_client |= e.is_reset() && e.is_remote();
                self.abandon(env);
                None
            }
        }
    }

    /// Waits for the connection, then starts the upstream stream.
    fn connecting(&mut self, env: &mut Env<'_, '_>) -> bool {
        let Some(a) = self.attempt.as_mut() else {
            self.phase = Phase::Pick;
            return true;
        };
        let Some(up) = a.up else {
            self.phase = Phase::Pick;
            return true;
        };
        let mut send = match env.ctx.h2.status(up, self.task.waker()) {
            Status::Pending => return false,
            Status::Failed(f) => {
                self.attempt_failed(f, true, env);
                return true;
            }
            Status::Ready(send) => send,
        };
        let mut cx = self.task.context();
        match send.poll_ready(&mut cx) {
            Poll::Pending => return false,
            Poll::Ready(Err(e)) => {
                log::debug!("h2 upstream {} takes no stream: {e}", a.addr);
                env.ctx.h2.retire(up);
                self.attempt_failed(ConnFailure::Closed, false, env);
                return true;
            }
            Poll::Ready(Ok(())) => {}
        }
        let mut req = Request::new(());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        let eos = self.kept.complete && self.kept.chunks.is_empty() && self.kept.trailers.is_none();
        match send.send_request(req, eos) {
            Ok((resp, to)) => {
                a.req = (!eos).then(|| ReqLeg {
                    to,
                    half: Half::default(),
                    replayed: 0,
                    done: false,
                });
                self.phase = Phase::Sent(resp);
                true
            }
            Err(e) => {
                log::debug!("h2 upstream {}: cannot start a stream: {e}", a.addr);
                env.ctx.h2.retire(up);
                self.attempt_failed(ConnFailure::Closed, false, env);
                true
            }
        }
    }

    /// Moves the request body up (kept chunks first, on a new attempt).
    /// `Err` when the client's side failed (the stream is over).
    fn pump_request(&mut self) -> Result<bool, h2::Error> {
        let Some(leg) = self.attempt.as_mut().and_then(|a| a.req.as_mut()) else {
            return Ok(false);
        };
        if leg.done {
            return Ok(false);
        }
        let mut cx = self.task.context();
        let kept = &mut self.kept;
        let mut progress = false;
        loop {
            match leg
                .half
                .flush(Some(&mut self.client_body), &mut leg.to, &mut cx)
            {
                Poll::Pending => return Ok(progress),
                Poll::Ready(Err(e)) => {
                    log::debug!("h2 upstream stream failed while sending: {e}");
                    leg.done = true;
                    return Ok(true);
                }
                Poll::Ready(Ok(())) => {}
            }
            if leg.replayed < kept.chunks.len() {
                leg.half.queue_replay(kept.chunks[leg.replayed].clone());
                leg.replayed += 1;
                progress = true;
                continue;
            }
            if kept.complete {
                leg.done = true;
                let sent = match &kept.trailers {
                    Some(t) => leg.to.send_trailers(t.clone()),
                    None => leg.to.send_data(Bytes::new(), true),
                };
                if let Err(e) = sent {
                    log::debug!("h2 upstream stream failed at its end: {e}");
                }
                return Ok(true);
            }
            let replayed = &mut leg.replayed;
            let end = leg
                .half
                .pump(&mut self.client_body, &mut leg.to, &mut cx, |chunk| {
                    if !kept.overflowed && kept.len + chunk.len() <= MAX_REPLAY_BODY {
                        kept.len += chunk.len();
                        kept.chunks.push(chunk.clone());
                        *replayed += 1;
                    } else {
                        kept.overflowed = true;
                        kept.chunks = Vec::new();
                    }
                });
            match end {
                Poll::Pending => return Ok(progress),
                Poll::Ready(End::Done(trailers)) => {
                    kept.complete = true;
                    kept.trailers = trailers;
                    leg.done = true;
                    return Ok(true);
                }
                Poll::Ready(End::Recv(e)) => return Err(e),
                Poll::Ready(End::Send(e)) => {
                    log::debug!("h2 upstream stream failed while sending: {e}");
                    leg.done = true;
                    return Ok(true);
                }
            }
        }
    }

    /// Waits for the response head while the request body goes up.
    fn sent(&mut self, env: &mut Env<'_, '_>) -> bool {
        let Some(mut progress) = self.request_step(env) else {
            return true;
        };
        let Phase::Sent(resp) = &mut self.phase else {
            return progress;
        };
        let mut cx = self.task.context();
        let head = match Pin::new(resp).poll(&mut cx) {
            Poll::Pending => return progress,
            Poll::Ready(r) => r,
        };
        progress = true;
        let resp = match head {
            Ok(resp) => resp,
            Err(e) => {
                let refused = upstream::unprocessed(&e);
                log::debug!("h2 upstream stream failed before a response: {e}");
                if let Some(a) = &self.attempt {
                    if let (true, Some(up)) = (e.is_go_away(), a.up) {
                        env.ctx.h2.retire(up);
                    }
                }
                let f = if refused {
                    ConnFailure::StreamRefused
                } else if e.is_io() {
                    ConnFailure::Reset
                } else {
                    ConnFailure::Closed
                };
                // A refused stream never reached the application.
                self.attempt_failed(f, refused, env);
                return progress;
            }
        };
        self.forward_head(resp, env);
        progress
    }

    fn forward_head(&mut self, resp: Response<RecvStream>, env: &mut Env<'_, '_>) {
        let ctx = &mut *env.ctx;
        let (parts, body) = resp.into_parts();
        let status = parts.status.as_u16();
        if let Some(a) = &self.attempt {
            let rtt = ctx.now.saturating_duration_since(a.started);
            if let Some(d) = ctx.dsts.get_mut(&a.backend) {
                d.balancer.finish(a.addr, rtt, ctx.now);
            }
        }
        let eos = body.is_end_stream();
        if eos {
            // Trailers-only: the gRPC status is in the head.
            self.grpc_status = grpc::status(&parts.headers);
        }
        log::trace!(
            "h2 response head {status} (grpc-status {:?}, end of stream {eos})",
            self.grpc_status
        );
        if let Some(r) = &self.routed {
            let success = classify(r, status, self.grpc_status);
            let mut metrics = r.router.route_metrics(r.route).borrow_mut();
            metrics.actual_response(status, success);
            // A failed response on a retryable route goes again while the
            // budget allows, if the whole request is kept (the route
            // timeout still covers every attempt).
            let replayable = self.kept.complete && !self.kept.overflowed;
            if !success && r.retryable && replayable {
                let allowed = r
                    .router
                    .budget
                    .as_ref()
                    .is_some_and(|b| b.borrow_mut().withdraw(ctx.now));
                metrics.retryable(!allowed);
                if allowed {
                    drop(metrics);
                    log::debug!("h2 stream: retrying a failed response ({status})");
                    if let Some(up) = self.attempt.take().and_then(|a| a.up) {
                        ctx.h2.release(up, ctx.now);
                    }
                    self.grpc_status = None;
                    // Dropping the response's body resets that stream.
                    drop(body);
                    self.phase = Phase::Pick;
                    return;
                }
            }
        }
        let latency = ctx.now.saturating_duration_since(self.started);
        self.status = Some((status, latency));
        let out = Response::from_parts(parts, ());
        match self.respond.send_response(out, eos) {
            Ok(to) if !eos => {
                self.phase = Phase::Streaming {
                    from: body,
                    to,
                    half: Half::default(),
                };
            }
            Ok(_) => self.finish(env),
            Err(e) => {
                log::debug!("h2 client went away before the response: {e}");
                self.finish(env);
            }
        }
    }

    /// The response body and trailers to the client (and the rest of a
    /// streaming request up).
    fn streaming(&mut self, env: &mut Env<'_, '_>) -> bool {
        let Some(mut progress) = self.request_step(env) else {
            return true;
        };
        let Phase::Streaming { from, to, half } = &mut self.phase else {
            return progress;
        };
        let mut cx = self.task.context();
        match half.pump(from, to, &mut cx, |_| {}) {
            Poll::Pending => {}
            Poll::Ready(End::Done(trailers)) => {
                if let Some(t) = &trailers {
                    self.grpc_status = grpc::status(t);
                }
                self.finish(env);
                progress = true;
            }
            Poll::Ready(End::Recv(e)) => {
                // The upstream failed mid-response: the client's stream is
                // reset, the only honest signal left.
                log::debug!("h2 upstream failed mid-response: {e}");
                to.send_reset(h2::Reason::INTERNAL_ERROR);
                self.finish(env);
                progress = true;
            }
            Poll::Ready(End::Send(e)) => {
                log::debug!("h2 client went away mid-response: {e}");
                self.reset_by_client |= e.is_reset() && e.is_remote();
                self.finish(env);
                progress = true;
            }
        }
        progress
    }

    /// An attempt failed before a response. It goes again on another
    /// endpoint (or connection) while the fail-fast window lasts and the
    /// request may be repeated: nothing of it was sent (`unsent`), or all of
    /// its body is kept.
    fn attempt_failed(&mut self, f: ConnFailure, unsent: bool, env: &mut Env<'_, '_>) {
        self.close_leg(env.ctx);
        let ctx = &mut *env.ctx;
        if let Some(a) = self.attempt.take() {
            if let Some(d) = ctx.dsts.get_mut(&a.backend) {
                if unsent && a.req.is_none() {
                    d.balancer.failed(a.addr, f, ctx.now);
                } else {
                    d.balancer.abandon(a.addr);
                }
                d.connect_retries.retry(&a.backend, f);
            }
            if let Some(up) = a.up {
                ctx.h2.release(up, ctx.now);
            }
            self.failed_endpoints.push(a.addr);
        }
        self.last_failure = Some(f);
        let replayable = !self.kept.overflowed;
        let late = ctx.now >= self.started + ctx.cfg.failfast_timeout;
        if (unsent || replayable) && !late {
            self.phase = Phase::Pick;
        } else {
            self.conn_error(Some(f), env);
        }
    }

    fn conn_error(&mut self, f: Option<ConnFailure>, env: &mut Env<'_, '_>) {
        match f {
            Some(f) => {
                let (status, reason, label) = f.response();
                self.fail(status, reason, label, env)
            }
            None => self.fail(503, "no endpoints", "no_endpoints", env),
        }
    }

    /// Ends the stream with a response the proxy makes: trailers-only with a
    /// `grpc-status` for gRPC, else the status with `l5d-proxy-error`.
    fn fail(
        &mut self,
        status: u16,
        reason: &'static str,
        label: &'static str,
        env: &mut Env<'_, '_>,
    ) {
        self.drop_attempt(env);
        if self.status.is_some() {
            // The head is out already: reset is all that is left.
            if let Phase::Streaming { to, .. } = &mut self.phase {
                to.send_reset(h2::Reason::CANCEL);
            }
            self.finish(env);
            return;
        }
        let latency = env.ctx.now.saturating_duration_since(self.started);
        let shown = if self.grpc { 200 } else { status };
        let mut resp = Response::new(());
        if self.grpc {
            *resp.headers_mut() = grpc::error_headers(status, reason);
            self.grpc_status = grpc::status(resp.headers());
        } else {
            *resp.status_mut() =
                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
            let h = resp.headers_mut();
            h.insert(grpc::L5D_PROXY_ERROR, HeaderValue::from_static(reason));
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            );
        }
        match self.respond.send_response(resp, self.grpc) {
            Ok(mut body) if !self.grpc => {
                let _ = body.send_data(Bytes::from(format!("{reason}\n")), true);
            }
            Ok(_) => {}
            Err(e) => log::debug!("h2 client gone before the proxy's answer: {e}"),
        }
        self.record(shown, false, Some(label), latency, env);
        self.phase = Phase::Done;
    }

    /// The response is complete (or cut off after its head).
    fn finish(&mut self, env: &mut Env<'_, '_>) {
        self.drop_attempt(env);
        if let Some((status, latency)) = self.status {
            let success = self
                .routed
                .as_ref()
                .is_some_and(|r| classify(r, status, self.grpc_status));
            self.record(status, success, None, latency, env);
        }
        self.phase = Phase::Done;
    }

    fn record(
        &mut self,
        status: u16,
        success: bool,
        error: Option<&'static str>,
        latency: Duration,
        env: &mut Env<'_, '_>,
    ) {
        let Some(r) = self.routed.take() else {
            return;
        };
        let status = (status, self.grpc_status);
        r.router
            .route_metrics(r.route)
            .borrow_mut()
            .response_grpc(status, success, error, latency);
        if let Some(d) = env.ctx.dsts.get_mut(&r.dst) {
            let slot = counted_slot(&mut self.tls, d);
            d.authority
                .response_grpc(slot, status, success, error, latency);
            d.active = d.active.saturating_sub(1);
            d.last_used = env.ctx.now;
        }
    }

    fn drop_attempt(&mut self, env: &mut Env<'_, '_>) {
        self.close_leg(env.ctx);
        if let Some(a) = self.attempt.take() {
            if self.status.is_none() {
                if let Some(d) = env.ctx.dsts.get_mut(&a.backend) {
                    d.balancer.abandon(a.addr);
                }
            }
            if let Some(up) = a.up {
                env.ctx.h2.release(up, env.ctx.now);
            }
        }
        if let Phase::Sent(_) = self.phase {
            self.phase = Phase::Pick;
        }
    }

    /// Ends the stream with no response (the client went away): dropping
    /// the upstream handles resets the upstream stream.
    pub fn abandon(&mut self, env: &mut Env<'_, '_>) {
        self.drop_attempt(env);
        if let Phase::Parked(name) = &self.phase {
            if let Some(d) = env.ctx.dsts.get_mut(name) {
                d.waiters.retain(|w| *w != Waiter::Stream(self.key));
            }
        }
        if let Some(r) = self.routed.take() {
            if let Some(d) = env.ctx.dsts.get_mut(&r.dst) {
                counted_slot(&mut self.tls, d);
                d.active = d.active.saturating_sub(1);
            }
        }
        self.phase = Phase::Done;
    }
}

/// Whether a response is a success by the route's response classes (then
/// its gRPC status, then 5xx).
fn classify(r: &Routed, status: u16, grpc_status: Option<u32>) -> bool {
    let route = r.route.and_then(|i| r.router.profile.routes.get(i));
    let classes = route.map(|r| &r.response_classes[..]).unwrap_or(&[]);
    profile::classify(classes, status, grpc_status) == Classification::Success
}
