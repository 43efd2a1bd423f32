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

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry};
use slab::Slab;

use super::buffer::{Buffer, Filled};
use super::destinations::{Destinations, Router};
use super::pipe::{Pipe, PipeError};
use super::pool::{IdleConn, Pool};
use super::timers::{Timer, Timers};
use super::token;
use crate::http1::{self, AfterResponse, BodyDecoder, BodyFraming, Parsed, RequestHead};
use crate::metrics::{AuthorityMetrics, TcpMetrics};
use crate::profile;

/// Who owns a socket token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Client(usize),
    Upstream(usize),
    Idle(SocketAddr),
    Admin(usize),
}

/// Event-loop settings a session needs.
pub struct LoopConfig {
    pub connect_timeout: Duration,
    pub failfast_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub discovery_idle_timeout: Duration,
    pub limits: http1::Limits,
    /// Read-buffer size per direction; bounds memory per connection.
    pub buffer_limit: usize,
}

/// The loop state a session may touch while it runs.
pub struct Ctx<'a> {
    pub registry: &'a Registry,
    pub socks: &'a mut Slab<Owner>,
    pub pool: &'a mut Pool,
    pub dsts: &'a mut Destinations,
    pub timers: &'a mut Timers,
    pub cfg: &'a LoopConfig,
    pub tcp_dst: &'a TcpMetrics,
    pub now: Instant,
}

/// What the loop should do with a session after `drive`.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Open,
    Close,
}

enum Phase {
    ReadHead,
    /// Waiting for the destination's first discovery answers.
    Parked(Arc<str>),
    Exchanging,
    /// Flush what is queued for the client, then close.
    Closing,
}

#[derive(PartialEq, Eq)]
enum Resp {
    AwaitHead,
    Body,
}

struct Upstream {
    stream: TcpStream,
    sock: usize,
    addr: SocketAddr,
    inbuf: Buffer,
    connected: bool,
    reused: bool,
    eof: bool,
}

struct Exchange {
    dst: Arc<str>,
    router: Rc<Router>,
    route: Option<usize>,
    authority: AuthorityMetrics,
    started: Instant,
    head_is_head: bool,
    client_minor: u8,
    keep_alive: bool,
    /// The upstream head, kept when the request has no body so it can be
    /// replayed once if a reused connection turns out to be dead.
    replay: Option<Vec<u8>>,
    req: Pipe,
    resp_state: Resp,
    status: u16,
    resp_keep_alive: bool,
    upstream: Option<Upstream>,
    head_latency: Option<Duration>,
}

pub struct Session {
    key: usize,
    client: TcpStream,
    sock: usize,
    inbuf: Buffer,
    /// Bytes for the client: a response head and body from upstream, or a
    /// response the proxy made itself.
    resp: Pipe,
    empty: Buffer,
    phase: Phase,
    /// Bumped per request so stale timers are ignored.
    epoch: u64,
    parked: Option<RequestHead>,
    ex: Option<Exchange>,
    client_eof: bool,
}

/// How an upstream attempt failed, for the status and the `error` label.
#[derive(Clone, Copy, Debug)]
enum UpstreamError {
    Connect,
    ConnectTimeout,
    Io,
    Protocol,
}

impl UpstreamError {
    fn response(self) -> (u16, &'static str, &'static str) {
        match self {
            UpstreamError::Connect => (502, "connection refused", "connect"),
            UpstreamError::ConnectTimeout => (504, "connect timeout", "timeout"),
            UpstreamError::Io => (502, "connection closed before response", "unavailable"),
            UpstreamError::Protocol => (502, "invalid response from upstream", "protocol"),
        }
    }
}

impl Session {
    pub fn new(key: usize, client: TcpStream, sock: usize, cfg: &LoopConfig) -> Session {
        Session {
            key,
            client,
            sock,
            inbuf: Buffer::new(cfg.buffer_limit.max(cfg.limits.max_head_bytes + 1)),
            resp: Pipe::default(),
            empty: Buffer::new(0),
            phase: Phase::ReadHead,
            epoch: 0,
            parked: None,
            ex: None,
            client_eof: false,
        }
    }

    pub fn client_sock(&self) -> usize {
        self.sock
    }

    pub fn client_mut(&mut self) -> &mut TcpStream {
        &mut self.client
    }

    /// Sockets this session holds besides the client's (for cleanup).
    pub fn release(mut self, ctx: &mut Ctx<'_>) {
        self.abandon_exchange(ctx);
    }

    /// A timer for this session fired.
    pub fn on_timer(&mut self, epoch: u64, ctx: &mut Ctx<'_>) -> Step {
        if epoch != self.epoch {
            return Step::Open;
        }
        match &self.phase {
            Phase::Parked(dst) => {
                log::info!("{dst}: no discovery answer in time; failing the request");
                let dst = dst.clone();
                let close = self
                    .parked
                    .take()
                    .is_none_or(|h| has_body(&h) || !h.keep_alive());
                self.synthetic(503, "service discovery timed out", close);
                if let Some(d) = ctx.dsts.get_mut(&dst) {
                    d.waiters.retain(|k| *k != self.key);
                }
            }
            Phase::Exchanging => {
                let connecting = matches!(&self.ex, Some(ex) if ex.upstream.as_ref().is_some_and(|u| !u.connected));
                if connecting {
                    self.upstream_failed(UpstreamError::ConnectTimeout, ctx);
                }
            }
            _ => {}
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
                    progress |= self.try_start(ctx);
                }
                Phase::Parked(ref dst) => {
                    let dst = dst.clone();
                    progress |= self.try_unpark(&dst, ctx);
                }
                Phase::Exchanging => match self.step_exchange(ctx) {
                    Ok(p) => progress |= p,
                    Err(()) => return Step::Close,
                },
                _ => {}
            }

            let src = match &mut self.ex {
                Some(Exchange {
                    upstream: Some(up), ..
                }) => &mut up.inbuf,
                _ => &mut self.empty,
            };
            match self.resp.pump(src, &mut self.client) {
                Ok(p) => progress |= p,
                Err(PipeError::Write(e)) => {
                    log::debug!("client write failed: {e}");
                    return Step::Close;
                }
                Err(PipeError::Body(e)) => {
                    // The upstream's body framing broke after the head went
                    // out: the client must not see a truncated body as whole.
                    log::warn!("invalid response body from upstream: {e}");
                    return Step::Close;
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
            Phase::ReadHead => true,
            Phase::Exchanging => self.ex.as_ref().is_some_and(|ex| !ex.req.body_read()),
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
            Phase::Exchanging => self.ex.as_ref().is_some_and(|ex| ex.req.body_read()),
            Phase::Closing => true,
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
            Ok(Parsed::Partial) => false,
            Ok(Parsed::Complete { head, consumed }) => {
                self.inbuf.consume(consumed);
                self.epoch += 1;
                self.begin(head, ctx);
                true
            }
            Err(e) => {
                log::debug!("rejecting request: {e}");
                self.synthetic(e.status(), e.reason(), true);
                true
            }
        }
    }

    fn begin(&mut self, head: RequestHead, ctx: &mut Ctx<'_>) {
        let Some((name, port)) = head.authority() else {
            self.synthetic(400, "missing or invalid host", true);
            return;
        };
        let dst = format!("{name}:{port}");
        let d = match ctx.dsts.get_or_start(&dst, &name, port, ctx.now) {
            Ok(d) => d,
            Err(e) => {
                log::error!("{dst}: cannot start discovery: {}", e.0);
                self.synthetic(503, "discovery unavailable", has_body(&head));
                return;
            }
        };
        if d.is_ready() {
            let name = d.name.clone();
            self.dispatch(head, &name, ctx);
        } else {
            d.waiters.push(self.key);
            let name = d.name.clone();
            ctx.timers.add(
                ctx.now + ctx.cfg.failfast_timeout,
                Timer::Session {
                    key: self.key,
                    epoch: self.epoch,
                },
            );
            self.parked = Some(head);
            self.phase = Phase::Parked(name);
        }
    }

    fn try_unpark(&mut self, dst: &Arc<str>, ctx: &mut Ctx<'_>) -> bool {
        let ready = ctx.dsts.get_mut(dst).is_some_and(|d| d.is_ready());
        if !ready {
            return false;
        }
        if let Some(d) = ctx.dsts.get_mut(dst) {
            d.waiters.retain(|k| *k != self.key);
        }
        match self.parked.take() {
            Some(head) => {
                self.dispatch(head, dst, ctx);
                true
            }
            None => false,
        }
    }

    /// Routes a request of a ready destination and starts its exchange.
    fn dispatch(&mut self, head: RequestHead, dst: &Arc<str>, ctx: &mut Ctx<'_>) {
        let Some(d) = ctx.dsts.get_mut(dst) else {
            self.synthetic(503, "destination evicted", has_body(&head));
            return;
        };
        d.last_used = ctx.now;
        self.epoch += 1;
        let router = d.router.clone().expect("ready destination has a router");
        let route = router.find(head.method(), head.path());
        d.authority.request();
        router.route_metrics(route).borrow().request();
        let addr = d.pick_endpoint();
        let mut authority = d.authority.clone();
        let Some(addr) = addr else {
            let msg = "no endpoints";
            authority.response(503, false, Some("no_endpoints"), Duration::ZERO);
            router.route_metrics(route).borrow_mut().response(
                503,
                false,
                Some("no_endpoints"),
                Duration::ZERO,
            );
            self.synthetic(503, msg, has_body(&head) || !head.keep_alive());
            return;
        };
        d.active += 1;

        let mut upstream_head = Vec::with_capacity(512);
        head.write_upstream(&mut upstream_head, head.upstream_host());
        let body = BodyDecoder::new(head.framing());
        let has_body = has_body(&head);
        let mut req = Pipe::default();
        let replay = (!has_body).then(|| upstream_head.clone());
        req.start(upstream_head, has_body.then_some(body));
        self.ex = Some(Exchange {
            dst: dst.clone(),
            router,
            route,
            authority,
            started: ctx.now,
            head_is_head: head.method() == "HEAD",
            client_minor: head.minor_version(),
            keep_alive: head.keep_alive(),
            replay,
            req,
            resp_state: Resp::AwaitHead,
            status: 0,
            resp_keep_alive: false,
            upstream: None,
            head_latency: None,
        });
        self.phase = Phase::Exchanging;
        if let Err(e) = self.open_upstream(addr, ctx) {
            self.upstream_failed(e, ctx);
        }
    }

    fn open_upstream(&mut self, addr: SocketAddr, ctx: &mut Ctx<'_>) -> Result<(), UpstreamError> {
        let ex = self.ex.as_mut().expect("exchange");
        let limit = ctx.cfg.buffer_limit.max(ctx.cfg.limits.max_head_bytes + 1);
        if let Some(IdleConn { stream, sock, .. }) = ctx.pool.take(addr) {
            ctx.socks[sock] = Owner::Upstream(self.key);
            ex.upstream = Some(Upstream {
                stream,
                sock,
                addr,
                inbuf: Buffer::new(limit),
                connected: true,
                reused: true,
                eof: false,
            });
            return Ok(());
        }
        let mut stream = TcpStream::connect(addr).map_err(|e| {
            log::debug!("connect to {addr} failed: {e}");
            UpstreamError::Connect
        })?;
        let sock = ctx.socks.insert(Owner::Upstream(self.key));
        if let Err(e) = ctx.registry.register(
            &mut stream,
            token::socket(sock),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register upstream socket: {e}");
            ctx.socks.remove(sock);
            return Err(UpstreamError::Connect);
        }
        ctx.tcp_dst.open();
        ctx.timers.add(
            ctx.now + ctx.cfg.connect_timeout,
            Timer::Session {
                key: self.key,
                epoch: self.epoch,
            },
        );
        ex.upstream = Some(Upstream {
            stream,
            sock,
            addr,
            inbuf: Buffer::new(limit),
            connected: false,
            reused: false,
            eof: false,
        });
        Ok(())
    }

    /// Advances the exchange; `Err` means close the client connection.
    fn step_exchange(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, ()> {
        let Session {
            inbuf, resp, ex, ..
        } = self;
        let Some(ex) = ex.as_mut() else {
            return Ok(false);
        };
        let Some(up) = ex.upstream.as_mut() else {
            return Ok(false);
        };
        let mut progress = false;

        if !up.connected {
            match connect_status(&up.stream) {
                Connect::Pending => return Ok(false),
                Connect::Failed(e) => {
                    log::debug!("connect to {} failed: {e}", up.addr);
                    self.upstream_failed(UpstreamError::Connect, ctx);
                    return Ok(true);
                }
                Connect::Done => {
                    up.connected = true;
                    let _ = up.stream.set_nodelay(true);
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
                self.upstream_failed(UpstreamError::Io, ctx);
                return Ok(true);
            }
        }

        if !up.eof && !up.inbuf.is_full() {
            match up.inbuf.fill_from(&mut up.stream) {
                Ok(Filled::Some(_)) => progress = true,
                Ok(Filled::Nothing) => {}
                Ok(Filled::Eof) => {
                    up.eof = true;
                    progress = true;
                }
                Err(e) => {
                    log::debug!("upstream read failed: {e}");
                    self.upstream_failed(UpstreamError::Io, ctx);
                    return Ok(true);
                }
            }
        }

        while ex.resp_state == Resp::AwaitHead && !up.inbuf.is_empty() {
            match http1::parse_response(up.inbuf.bytes(), &ctx.cfg.limits, ex.head_is_head) {
                Ok(Parsed::Partial) => break,
                Ok(Parsed::Complete { head, consumed }) => {
                    up.inbuf.consume(consumed);
                    progress = true;
                    let mut out = Vec::with_capacity(256);
                    if head.is_interim() {
                        // Interim response (100 Continue): pass it on to an
                        // HTTP/1.1 client and wait for the final one.
                        if ex.client_minor >= 1 {
                            head.write_downstream(&mut out, false, ex.client_minor);
                            resp.push_head(&out);
                        }
                        continue;
                    }
                    ex.status = head.status();
                    ex.resp_keep_alive = head.keep_alive();
                    ex.head_latency = Some(ctx.now.saturating_duration_since(ex.started));
                    let after = head.write_downstream(&mut out, !ex.keep_alive, ex.client_minor);
                    if after == AfterResponse::Close {
                        ex.keep_alive = false;
                    }
                    let body = (head.framing() != BodyFraming::None)
                        .then(|| BodyDecoder::new(head.framing()));
                    resp.set_body(&out, body);
                    ex.resp_state = Resp::Body;
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
                    self.upstream_failed(UpstreamError::Io, ctx);
                    return Ok(true);
                }
                Resp::Body if up.inbuf.is_empty() || resp.body_read() => {
                    if let Err(e) = resp.source_eof() {
                        log::debug!("upstream closed mid-body: {e}");
                        return Err(());
                    }
                }
                Resp::Body => {}
            }
        }
        Ok(progress)
    }

    /// The response is fully written: records metrics, returns the upstream
    /// connection to the pool when it is reusable, and gets ready for the next
    /// request. Returns whether anything changed.
    fn finish_exchange(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let Some(mut ex) = self.ex.take() else {
            return false;
        };
        let latency = ex
            .head_latency
            .unwrap_or_else(|| ctx.now.saturating_duration_since(ex.started));
        let route = ex.router.profile.routes.get(ex.route.unwrap_or(usize::MAX));
        let classes = route.map(|r| &r.response_classes[..]).unwrap_or(&[]);
        let success =
            profile::classify(classes, ex.status, None) == profile::Classification::Success;
        ex.authority.response(ex.status, success, None, latency);
        ex.router
            .route_metrics(ex.route)
            .borrow_mut()
            .response(ex.status, success, None, latency);
        if let Some(d) = ctx.dsts.get_mut(&ex.dst) {
            d.active = d.active.saturating_sub(1);
            d.last_used = ctx.now;
        }
        let reusable = ex.req.is_complete() && ex.resp_keep_alive;
        if let Some(up) = ex.upstream.take() {
            let reusable = reusable && up.inbuf.is_empty() && !up.eof;
            self.put_back(up, reusable, ctx);
        }
        self.resp.reset();
        self.phase = if ex.keep_alive && ex.req.is_complete() && !self.client_eof {
            Phase::ReadHead
        } else {
            Phase::Closing
        };
        if matches!(self.phase, Phase::Closing) {
            // Nothing left to write: close now.
            self.resp.start(Vec::new(), None);
        }
        true
    }

    fn put_back(&mut self, up: Upstream, reusable: bool, ctx: &mut Ctx<'_>) {
        if reusable {
            ctx.socks[up.sock] = Owner::Idle(up.addr);
            let idle = IdleConn {
                stream: up.stream,
                sock: up.sock,
                since: ctx.now,
            };
            if let Err(idle) = ctx.pool.put(up.addr, idle) {
                ctx.socks.remove(idle.sock);
                ctx.tcp_dst.close();
            }
        } else {
            ctx.socks.remove(up.sock);
            ctx.tcp_dst.close();
        }
    }

    /// The upstream failed before a complete response: retry a dead reused
    /// connection once, answer with a proxy error if nothing was sent yet, or
    /// give up on the client connection.
    fn upstream_failed(&mut self, err: UpstreamError, ctx: &mut Ctx<'_>) {
        let Some(ex) = self.ex.as_mut() else {
            return;
        };
        let nothing_received = ex.resp_state == Resp::AwaitHead && !self.resp.wrote_any();
        if let Some(up) = ex.upstream.take() {
            let retry = up.reused && nothing_received && ex.replay.is_some();
            let addr = up.addr;
            ctx.socks.remove(up.sock);
            ctx.tcp_dst.close();
            drop(up);
            if retry {
                // A pooled connection the upstream had already closed: the
                // request never reached it, so it is safe to send again.
                let head = ex.replay.take().unwrap_or_default();
                ex.req.start(head, None);
                if self.open_upstream(addr, ctx).is_ok() {
                    return;
                }
            }
        }
        let Some(mut ex) = self.ex.take() else {
            return;
        };
        if let Some(d) = ctx.dsts.get_mut(&ex.dst) {
            d.active = d.active.saturating_sub(1);
        }
        if !nothing_received {
            // Part of the response is out: the only honest signal left is
            // closing the connection.
            self.phase = Phase::Closing;
            self.resp.reset();
            self.resp.start(Vec::new(), None);
            return;
        }
        let (status, reason, label) = err.response();
        let latency = ctx.now.saturating_duration_since(ex.started);
        ex.authority.response(status, false, Some(label), latency);
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
    fn abandon_exchange(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(mut ex) = self.ex.take() {
            if let Some(up) = ex.upstream.take() {
                ctx.socks.remove(up.sock);
                ctx.tcp_dst.close();
            }
            if let Some(d) = ctx.dsts.get_mut(&ex.dst) {
                d.active = d.active.saturating_sub(1);
            }
        }
        if let Phase::Parked(dst) = &self.phase {
            if let Some(d) = ctx.dsts.get_mut(dst) {
                d.waiters.retain(|k| *k != self.key);
            }
        }
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

enum Connect {
    Pending,
    Done,
    Failed(io::Error),
}

/// Whether a non-blocking connect has finished (checked on a writable event).
fn connect_status(stream: &TcpStream) -> Connect {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return Connect::Failed(e),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Connect::Done,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Connect::Pending,
        Err(e) => Connect::Failed(e),
    }
}

fn has_body(head: &RequestHead) -> bool {
    head.framing() != BodyFraming::None
}
