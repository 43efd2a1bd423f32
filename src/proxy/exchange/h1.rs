//! The HTTP/1 wire of an exchange (event-loop thread): the upstream
//! connection (taken from the pool or connected), the request pumped to it,
//! the response head parsed and classified, and the connection returned to
//! the pool or dropped. The decisions (retry, move to another endpoint,
//! answer with an error) are the policy's, in `mod.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ClientSide, ExNext, Exchange, Resp, UpstreamError};
use crate::conn_failure::ConnFailure;
use crate::http1::{self, AfterResponse, BodyDecoder, BodyFraming};
use crate::profile::{self, Classification};
use crate::proxy::buffer::{Buffer, Filled};
use crate::proxy::ctx::{Ctx, DialError, Owner, Role};
use crate::proxy::h2::{Opened, Original, Upgraded};
use crate::proxy::pipe::PipeError;
use crate::proxy::pool::{IdleConn, Proto, UpstreamKey};
use crate::proxy::timers::SessionTimer;
use crate::proxy::transport::Transport;

use super::wire::Wire;

/// A connect near the end of the fail-fast window still gets this long.
const MIN_CONNECT_WINDOW: Duration = Duration::from_millis(50);

pub(super) struct Upstream {
    pub(super) stream: Wire,
    pub(super) sock: usize,
    pub(super) addr: SocketAddr,
    /// What the connection was made for: its bucket in the pool.
    key: UpstreamKey,
    pub(super) inbuf: Buffer,
    pub(super) connected: bool,
    pub(super) reused: bool,
    /// Some byte came back on this connection for this request.
    pub(super) received: bool,
    pub(super) eof: bool,
}

impl Exchange {
    /// An idle connection made for `key`, or a new one.
    pub(super) fn open_upstream(
        &mut self,
        key: UpstreamKey,
        cl: &mut ClientSide<'_>,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), UpstreamError> {
        let limit = ctx.cfg.buffer_limit.max(ctx.cfg.limits.max_head_bytes + 1);
        let addr = key.addr;
        let owner = Owner::Conn {
            session: cl.session,
            role: Role::Upstream,
        };
        // A request that may not be sent twice checks that its pooled
        // connection is still open (see `Ctx::take_idle`).
        let pooled = (key.proto == Proto::Http1)
            .then(|| ctx.take_idle(&key, !self.idempotent, owner))
            .flatten();
        if let Some(IdleConn {
            stream, sock, buf, ..
        }) = pooled
        {
            self.upstream = Some(Upstream {
                stream: Wire::Conn(stream.reused()),
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
        let dialed = if key.proto == Proto::H2 {
            self.open_upgraded(&key, owner, ctx)
        } else {
            ctx.dial(addr, owner, key.tls.as_ref(), false)
                .map(|(t, sock)| (Wire::Conn(t), sock))
        };
        let (stream, sock) = match dialed {
            Ok(dialed) => dialed,
            Err(DialError::Connect(e)) => {
                log::debug!("connect to {addr} failed: {e}");
                return Err(self.conn_failed_at_once(addr, ConnFailure::of_connect(&e), ctx));
            }
            Err(DialError::Register(e)) => {
                log::warn!("cannot register upstream socket: {e}");
                return Err(self.conn_failed_at_once(addr, ConnFailure::ConnectError, ctx));
            }
            Err(DialError::Tls(e)) => {
                log::info!("{addr}: cannot speak mTLS to it: {e}");
                return Err(self.conn_failed_at_once(addr, ConnFailure::Tls, ctx));
            }
        };
        self.upstream = Some(Upstream {
            stream,
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
        let give_up_in = self.give_up_at(ctx.cfg).saturating_duration_since(ctx.now);
        let timeout = ctx
            .cfg
            .connect_timeout(ctx.direction)
            .min(give_up_in.max(MIN_CONNECT_WINDOW));
        cl.deadlines
            .set(SessionTimer::Connect, timeout, ctx.now, ctx.timers);
        Ok(())
    }

    /// A stream on the shared HTTP/2 connection to `key`'s endpoint (one
    /// connecting when none has room), for a request upgraded to it; its
    /// slot in the socket table names the session its wakes drive.
    fn open_upgraded(
        &self,
        key: &UpstreamKey,
        owner: Owner,
        ctx: &mut Ctx<'_>,
    ) -> Result<(Wire, usize), DialError> {
        let sock = ctx.socks.insert(owner);
        let orig = Original {
            minor: self.client_minor,
            absolute_form: self.absolute_form,
            head: self.head_is_head,
        };
        match Upgraded::open(key, sock, orig, &self.dst, ctx) {
            Ok(u) => Ok((Wire::H2(Box::new(u)), sock)),
            Err(e) => {
                ctx.socks.remove(sock);
                Err(e)
            }
        }
    }

    /// The request cannot be upgraded: it is sent again, as HTTP/1 (nothing
    /// of it was written), the endpoint not charged with anything.
    fn no_upgrade(&mut self, cl: &mut ClientSide<'_>, ctx: &mut Ctx<'_>) -> ExNext {
        self.upgradable = false;
        self.abandon_upstream(ctx);
        self.retry(cl, ctx)
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
        if let Some(d) = ctx.dsts.get_mut(&self.attempt.backend) {
            d.balancer.failed(addr, f, ctx.now);
        }
        self.met(f, Some(addr));
        UpstreamError::Conn(f)
    }

    /// Advances the exchange on the wire: finishes the connect, sends what
    /// the client has sent of the request, reads and parses the response
    /// head and queues it for the client.
    #[inline]
    pub(in crate::proxy) fn step(&mut self, cl: &mut ClientSide<'_>, ctx: &mut Ctx<'_>) -> ExNext {
        let Some(up) = self.upstream.as_mut() else {
            return ExNext::Going(false);
        };
        let mut progress = false;

        if !up.connected {
            match up.stream.connect_status(ctx) {
                Opened::Pending => return ExNext::Going(false),
                Opened::Failed(f) => {
                    log::debug!("connect to {} failed: {}", up.addr, f.as_str());
                    return self.upstream_failed(UpstreamError::Conn(f), cl, ctx);
                }
                Opened::Done => {
                    cl.deadlines.clear(SessionTimer::Connect);
                    up.connected = true;
                    up.stream.connected(ctx.cfg.connect_keepalive);
                    if let Some(d) = ctx.dsts.get_mut(&self.attempt.backend) {
                        d.balancer.connected(up.addr);
                    }
                    progress = true;
                }
            }
        }

        match self.req.pump(cl.inbuf, &mut up.stream) {
            Ok(p) => progress |= p,
            Err(PipeError::Body(e)) => {
                // The client's body framing broke: nothing more can be sent
                // on either connection.
                log::debug!("invalid request body: {e}");
                self.abandon(cl, ctx);
                if cl.resp.wrote_any() {
                    return ExNext::Close;
                }
                return ExNext::Respond {
                    status: 400,
                    reason: "invalid request body",
                    close: true,
                };
            }
            Err(PipeError::Write(e)) if Upgraded::cannot_carry(&e) => {
                // A request HTTP/2 has no form for (a target its URI rules
                // refuse): it goes as HTTP/1 after all.
                log::debug!("{}: {e}; sending it as HTTP/1", up.addr);
                return self.no_upgrade(cl, ctx);
            }
            Err(PipeError::Write(e)) => {
                log::debug!("upstream write failed: {e}");
                let f = ConnFailure::of_io(&e);
                return self.upstream_failed(UpstreamError::Conn(f), cl, ctx);
            }
        }

        if !up.eof && !up.inbuf.is_full() {
            match up.stream.fill(&mut up.inbuf) {
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
                    return self.upstream_failed(UpstreamError::Conn(f), cl, ctx);
                }
            }
        }

        while self.resp_state == Resp::AwaitHead && !up.inbuf.is_empty() {
            let parsed =
                http1::parse_response(up.inbuf.bytes(), &ctx.cfg.limits, self.head_is_head);
            match parsed {
                Ok(http1::Parsed::Partial) => break,
                Ok(http1::Parsed::Complete { head, consumed }) => {
                    up.inbuf.consume(consumed);
                    progress = true;
                    if head.is_interim() {
                        // Interim response (100 Continue): pass it on to an
                        // HTTP/1.1 client and wait for the final one.
                        if self.client_minor >= 1 && !self.sent_continue {
                            let mut out = Vec::new();
                            head.write_downstream(&mut out, false, self.client_minor);
                            cl.resp.push_head(&out);
                        }
                        continue;
                    }
                    let rtt = ctx.now.saturating_duration_since(self.attempt.started);
                    if let Some(d) = ctx.dsts.get_mut(&self.attempt.backend) {
                        d.balancer.finish(self.attempt.addr, rtt, ctx.now);
                    }
                    let route = self.route.and_then(|i| self.router.profile.routes.get(i));
                    let classes = route.map(|r| &r.response_classes[..]).unwrap_or(&[]);
                    let class = profile::classify(classes, head.status(), None);
                    let success = class == Classification::Success;
                    let mut metrics = self.router.route_metrics(self.route).borrow_mut();
                    metrics.actual_response(head.status(), success);
                    if !success && self.retryable && self.req.is_complete() && self.req.is_tapped()
                    {
                        let allowed = self
                            .router
                            .budget
                            .as_ref()
                            .is_some_and(|b| b.borrow_mut().withdraw(ctx.now));
                        metrics.retryable(!allowed);
                        drop(metrics);
                        if allowed {
                            return self.retry(cl, ctx);
                        }
                    } else {
                        drop(metrics);
                    }
                    if head.is_switching() && !self.upgrade {
                        log::warn!("{}: 101 to a request that asked for no upgrade", up.addr);
                        return self.upstream_failed(UpstreamError::Protocol, cl, ctx);
                    }
                    self.status = head.status();
                    self.resp_keep_alive = head.keep_alive();
                    self.head_latency = Some(ctx.now.saturating_duration_since(self.started));
                    if self.connect && (200..300).contains(&head.status()) {
                        // The upstream agreed to CONNECT: a tunnel from here.
                        let mut out = Vec::new();
                        head.write_tunnel_established(&mut out);
                        cl.resp.set_body(&out, None);
                        self.resp_state = Resp::Switching;
                        continue;
                    }
                    if self.client_minor == 0
                        && head.framing() != BodyFraming::None
                        && head.has_codings_besides_chunked()
                    {
                        log::warn!(
                            "{}: a transfer coding an HTTP/1.0 client cannot take",
                            up.addr
                        );
                        return self.upstream_failed(UpstreamError::Protocol, cl, ctx);
                    }
                    // Straight into the client pipe's buffer (after any
                    // interim head), which keeps its capacity between
                    // responses: no allocation per response.
                    let close = !self.keep_alive;
                    let after = head.write_downstream(cl.resp.head_buf(), close, self.client_minor);
                    if after == AfterResponse::Close {
                        self.keep_alive = false;
                    }
                    let body = (head.framing() != BodyFraming::None)
                        .then(|| BodyDecoder::new(head.framing()));
                    cl.resp.set_framing(body);
                    if self.client_minor == 0 && head.framing() == BodyFraming::Chunked {
                        cl.resp.dechunk();
                    }
                    self.resp_state = if head.is_switching() {
                        Resp::Switching
                    } else {
                        Resp::Body
                    };
                }
                Err(e) => {
                    log::warn!("invalid response head from {}: {e}", up.addr);
                    return self.upstream_failed(UpstreamError::Protocol, cl, ctx);
                }
            }
        }

        if up.eof {
            match self.resp_state {
                Resp::AwaitHead => {
                    let closed = UpstreamError::Conn(ConnFailure::Closed);
                    return self.upstream_failed(closed, cl, ctx);
                }
                Resp::Body if up.inbuf.is_empty() || cl.resp.body_read() => {
                    if let Err(e) = cl.resp.source_eof() {
                        log::debug!("upstream closed mid-body: {e}");
                        self.abandon(cl, ctx);
                        return ExNext::Close;
                    }
                }
                // Tunnel data: the tunnel passes the EOF on.
                Resp::Body | Resp::Switching => {}
            }
        }
        ExNext::Going(progress)
    }
}

impl Upstream {
    /// Its connection (socket slot, read buffer, pool key), for the pool
    /// or a tunnel; an upgraded stream has none of its own and just ends
    /// (`None`).
    pub(super) fn into_conn(
        self,
        ctx: &mut Ctx<'_>,
    ) -> Option<(Transport, usize, Buffer, UpstreamKey)> {
        match self.stream {
            Wire::Conn(t) => Some((t, self.sock, self.inbuf, self.key)),
            wire @ Wire::H2(_) => {
                ctx.socks.remove(self.sock);
                wire.close(ctx);
                None
            }
        }
    }
}

/// Back to the pool, under the key it was made for.
pub(super) fn pool_upstream(up: Upstream, ctx: &mut Ctx<'_>) {
    if let Some((stream, sock, buf, key)) = up.into_conn(ctx) {
        let idle = IdleConn {
            stream,
            sock,
            since: ctx.now,
            buf,
        };
        ctx.park_idle(&key, idle);
    }
}

pub(super) fn drop_upstream(up: Upstream, ctx: &mut Ctx<'_>) {
    ctx.socks.remove(up.sock);
    up.stream.close(ctx);
}
