//! The downgraded path of a stream task (event-loop thread): a request
//! that came with `l5d-orig-proto` goes to the application on an HTTP/1
//! connection (`super::super::downgrade::H1Leg`) taken from the
//! direction's pool, as HTTP/1 requests' are, or made for it, and back in
//! the pool after a clean exchange; with the same balancer, metrics and
//! failure rules as the HTTP/2 path in `mod.rs`. A failed attempt goes
//! again only if none of the client's body went into it (the leg reads
//! the body straight from the client's stream; nothing is kept to replay).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Response};

use super::{classify, Attempt, Env, Phase, StreamTask};
use crate::conn_failure::{self, ConnFailure};
use crate::endpoints::EndpointRef;
use crate::proxy::ctx::{Ctx, Owner};
use crate::proxy::h2::downgrade::{self, H1Leg, LegError, LegEvent, OrigProto};
use crate::proxy::h2::TaskId;
use crate::proxy::pool::{Proto, UpstreamKey};
use crate::proxy::ready::Readiness;
use crate::proxy::timers::Timer;

impl StreamTask {
    /// Records an event on the downgraded request's HTTP/1 socket.
    pub fn leg_ready(&mut self, r: Readiness) {
        if let Phase::H1(leg) = &mut self.phase {
            leg.ready(r);
        }
        self.task.wake();
    }

    /// Ends the downgraded request's HTTP/1 connection, if it has one: back
    /// to the pool after a clean exchange, closed otherwise.
    pub(super) fn close_leg(&mut self, ctx: &mut Ctx<'_>) {
        if !matches!(self.phase, Phase::H1(_)) {
            return;
        }
        let Phase::H1(mut leg) = std::mem::replace(&mut self.phase, Phase::Pick) else {
            return;
        };
        match &self.attempt {
            Some(a) if leg.reusable() => {
                let idle = (*leg).into_idle(ctx.now);
                ctx.park_idle(&app_key(a.addr), idle);
            }
            _ => {
                leg.transport.count_close();
                ctx.socks.remove(leg.sock);
            }
        }
    }

    /// Connects to the application for a downgraded request.
    pub(super) fn start_h1(
        &mut self,
        backend: Arc<str>,
        addr: SocketAddr,
        orig: OrigProto,
        env: &mut Env<'_, '_>,
    ) {
        let ctx = &mut *env.ctx;
        let has_body = !self.client_body.is_end_stream();
        let (head, framing) =
            downgrade::request_head(&self.method, &self.uri, &self.headers, orig, has_body);
        let is_head = self.method == Method::HEAD;
        let owner = Owner::H2Stream(self.key);
        let check_open = !conn_failure::idempotent(self.method.as_str());
        if let Some(idle) = ctx.take_idle(&app_key(addr), check_open, owner) {
            let leg = H1Leg::new(idle.stream.reused(), idle.sock, head, framing, is_head, 0);
            self.leg_attempt(backend, addr, ctx.now);
            self.phase = Phase::H1(Box::new(leg.reusing(idle.buf)));
            self.task.wake();
            return;
        }
        match ctx.dial(addr, owner, None, false) {
            Ok((transport, sock)) => {
                let leg = H1Leg::new(
                    transport,
                    sock,
                    head,
                    framing,
                    is_head,
                    ctx.cfg.buffer_limit,
                );
                let connect_by = ctx.now + ctx.cfg.connect_timeout(ctx.direction);
                ctx.timers
                    .add(connect_by, Timer::H2(TaskId::Stream(self.key)));
                self.leg_attempt(backend, addr, ctx.now);
                self.phase = Phase::H1(Box::new(leg));
            }
            Err(e) => self.dial_failed(e, &backend, addr, ctx),
        }
    }

    /// The attempt a downgraded request makes on `addr` (of `backend`).
    fn leg_attempt(&mut self, backend: Arc<str>, addr: SocketAddr, now: std::time::Instant) {
        self.attempt = Some(Attempt {
            backend,
            addr,
            started: now,
            up: None,
            req: None,
        });
    }

    /// One step of a downgraded request.
    pub(super) fn h1(&mut self, env: &mut Env<'_, '_>) -> bool {
        let Phase::H1(leg) = &mut self.phase else {
            return false;
        };
        let ctx = &mut *env.ctx;
        let Some(a) = &self.attempt else {
            return false;
        };
        let (backend, addr, started) = (a.backend.clone(), a.addr, a.started);
        if !leg.is_connected() && ctx.now >= started + ctx.cfg.connect_timeout(ctx.direction) {
            self.attempt_failed(ConnFailure::ConnectTimeout, true, env);
            return true;
        }
        let mut cx = self.task.context();
        let ev = leg.step(&mut self.client_body, &ctx.cfg.limits, &mut cx);
        leg.count_bytes();
        if ev.is_err() && leg.took_body() {
            // Part of the body is gone into this connection: another
            // attempt could not send it whole.
            self.kept.overflowed = true;
        }
        match ev {
            Ok(LegEvent::Idle) => false,
            Ok(LegEvent::Connected) => {
                leg.transport.connected(ctx.cfg.connect_keepalive);
                if let Some(d) = ctx.dsts.get_mut(&backend) {
                    d.balancer.connected(addr);
                }
                true
            }
            Ok(LegEvent::Head(status, headers, framing)) => {
                let rtt = ctx.now.saturating_duration_since(started);
                if let Some(d) = ctx.dsts.get_mut(&backend) {
                    d.balancer.finish(addr, rtt, ctx.now);
                }
                if let Some(r) = &self.routed {
                    let success = classify(r, status, self.grpc_status);
                    r.router
                        .route_metrics(r.route)
                        .borrow_mut()
                        .actual_response(status, success);
                }
                let latency = ctx.now.saturating_duration_since(self.started);
                self.status = Some((status, latency));
                let mut resp = Response::new(());
                *resp.status_mut() =
                    http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
                *resp.headers_mut() = headers;
                let eos = framing == crate::http1::BodyFraming::None;
                match self.respond.send_response(resp, eos) {
                    Ok(to) if !eos => leg.stream_to(to, framing),
                    Ok(_) => self.finish(env),
                    Err(e) => {
                        log::debug!("h2 client went away before the response: {e}");
                        self.finish(env);
                    }
                }
                true
            }
            Ok(LegEvent::Done) => {
                self.finish(env);
                true
            }
            Err(LegError::Connect(e)) => {
                log::debug!("connect to {addr} failed: {e}");
                self.attempt_failed(ConnFailure::of_connect(&e), true, env);
                true
            }
            Err(LegError::Io(e)) if self.status.is_none() => {
                log::debug!("{addr} failed before a response: {e}");
                self.attempt_failed(ConnFailure::of_io(&e), false, env);
                true
            }
            Err(LegError::Protocol) if self.status.is_none() => {
                log::info!("{addr}: invalid HTTP/1 response to a downgraded request");
                self.fail(502, "invalid response from upstream", "protocol", env);
                true
            }
            Err(LegError::Client(e)) => {
                log::debug!("h2 client stream failed: {e}");
                self.abandon(env);
                true
            }
            Err(e) => {
                // The response is partly out: its stream is reset when the
                // task ends (nothing else tells the client it is cut short).
                log::debug!("{addr} failed mid-response: {e:?}");
                self.finish(env);
                true
            }
        }
    }
}

/// The pool key of a connection to the application at `addr` (inbound:
/// plaintext HTTP/1, shared with the HTTP/1 path's).
fn app_key(addr: SocketAddr) -> UpstreamKey {
    UpstreamKey::new(&EndpointRef::plain(addr), Proto::Http1)
}
