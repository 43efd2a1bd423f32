//! The HTTP/1 stage of a client connection (event-loop thread): parse a
//! request head, find its destination (or park until discovery answers),
//! start its exchange, and after the response get ready for the next request,
//! a tunnel, or closing. The exchange itself (policy and upstream wire) is
//! `proxy/exchange`; the connection's loop and stages are `mod.rs`.

use std::rc::Rc;
use std::sync::Arc;

use super::{Session, Stage, UNSETTLED};
use crate::http1::{self, BodyFraming, Parsed, RequestHead};
use crate::metrics::Direction;
use crate::proxy::ctx::Ctx;
use crate::proxy::destinations::{Router, Waiter};
use crate::proxy::exchange::{Exchange, From};
use crate::proxy::target::{self, Failed, Found};
use crate::proxy::timers::SessionTimer;

use super::opaque::Tunnel;

impl Session {
    /// Parses a request head from the buffer and starts it.
    pub(super) fn try_start(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if self.inbuf.is_empty() {
            return false;
        }
        match http1::parse_request(self.inbuf.bytes(), &ctx.cfg.limits) {
            Ok(Parsed::Partial) if self.client_eof => {
                // The client went away in the middle of a head.
                self.stage = Stage::Closing;
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
            Err(_) if crate::detect::starts_h2(self.inbuf.bytes()) => {
                // HTTP/2 with prior knowledge, to a port taken for HTTP/1.
                if self.go_h2("prior_knowledge", ctx).is_err() {
                    self.synthetic(403, "refused", true);
                }
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
    /// An inbound request's destination is its connection's original one
    /// (see `proxy/inbound`); an outbound one's is what the request names.
    pub(super) fn route_or_park(&mut self, head: RequestHead, reparking: bool, ctx: &mut Ctx<'_>) {
        // Inbound: the Host names the destination's profile (see
        // `proxy/inbound`); outbound: the request's authority is the target.
        let authority = match self.direction {
            Direction::Inbound => head.host_authority(),
            Direction::Outbound => head.authority_raw(),
        };
        let wait_on = match target::find(self.orig_dst, authority, ctx) {
            Found::Ready { name, router } => {
                self.dispatch(head, &name, router, ctx);
                return;
            }
            Found::Fail(Failed::NoOriginalDst) => {
                self.synthetic(502, "no original destination", true);
                return;
            }
            Found::Fail(Failed::NoAuthority) => {
                self.synthetic(400, "missing or invalid host", true);
                return;
            }
            Found::Fail(Failed::Discovery) => {
                self.synthetic(503, "discovery unavailable", has_body(&head));
                return;
            }
            Found::Wait(name) => name,
        };
        if let Some(d) = ctx.dsts.get_mut(&wait_on) {
            d.waiters.push(Waiter::Session(self.key));
        }
        if !reparking {
            self.set_deadline(SessionTimer::Failfast, ctx.cfg.failfast_timeout, ctx);
        }
        self.parked = Some(head);
        self.stage = Stage::Parked(wait_on);
    }

    pub(super) fn try_unpark(&mut self, waited: &Arc<str>, ctx: &mut Ctx<'_>) -> bool {
        if let Some(d) = ctx.dsts.get_mut(waited) {
            d.waiters.retain(|k| *k != Waiter::Session(self.key));
        }
        match self.parked.take() {
            Some(head) => {
                self.route_or_park(head, true, ctx);
                !matches!(self.stage, Stage::Parked(_))
            }
            None => false,
        }
    }

    /// Routes a request whose discovery answers are all there and starts its
    /// first attempt.
    pub(super) fn dispatch(
        &mut self,
        head: RequestHead,
        dst: &Arc<str>,
        router: Rc<Router>,
        ctx: &mut Ctx<'_>,
    ) {
        let from = From {
            spare_head: self.spare_head.take(),
            draining: self.draining,
            client_id: self.client.peer_identity().map(|id| &**id),
            client_tls: self.tls.as_ref().unwrap_or(&UNSETTLED),
        };
        let slot = &mut self.ex;
        match Exchange::start_in(slot, &head, dst, router, from, ctx) {
            Err(next) => {
                self.apply(next);
            }
            Ok(()) => {
                self.clear_deadline(SessionTimer::Failfast);
                self.stage = Stage::Exchanging;
                self.exchange(ctx, |ex, cl, ctx| ex.begin(cl, ctx));
            }
        }
    }

    /// The response is fully written: the exchange records its metrics and
    /// pools its upstream connection, and the session gets ready for the
    /// next request (or a tunnel, or closing). Whether anything changed.
    pub(super) fn finish_exchange(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let (ex, mut cl) = self.lend();
        let Some(exchange) = ex.as_mut() else {
            return false;
        };
        let done = exchange.finish(&mut cl, ctx);
        self.ex = None;
        self.client.count_bytes();
        self.spare_head = done.spare_head;
        self.resp.reset();
        if let Some((stream, sock, buf)) = done.tunnel {
            self.stage = Stage::Opaque(Box::new(Tunnel::new(stream, sock, buf)));
            return true;
        }
        // A client that half-closed after pipelining still gets an answer to
        // every request it sent.
        let more = !self.client_eof || !self.inbuf.is_empty();
        if done.keep_alive && more && !self.draining {
            self.stage = Stage::ReadHead;
        } else {
            // Nothing left to write: close now.
            self.stage = Stage::Closing;
            self.resp.start(Vec::new(), None);
        }
        true
    }

    /// Drops the exchange and its upstream connection without a response,
    /// and stops waiting on a destination.
    pub(super) fn abandon_exchange(&mut self, ctx: &mut Ctx<'_>) {
        let (ex, mut cl) = self.lend();
        if let Some(mut ex) = ex.take() {
            ex.abandon(&mut cl, ctx);
        }
        if let Stage::Parked(waited) = &self.stage {
            if let Some(d) = ctx.dsts.get_mut(waited) {
                d.waiters.retain(|k| *k != Waiter::Session(self.key));
            }
        }
    }

    /// Queues a response made by the proxy itself.
    pub(super) fn synthetic(&mut self, status: u16, reason: &str, close: bool) {
        self.resp.reset();
        self.resp
            .start(http1::error_response(status, reason, close), None);
        self.stage = if close {
            Stage::Closing
        } else {
            Stage::ReadHead
        };
    }
}

pub(super) fn has_body(head: &RequestHead) -> bool {
    head.framing() != BodyFraming::None
}
