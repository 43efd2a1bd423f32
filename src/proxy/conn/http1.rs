//! The HTTP/1 stage of a client connection (event-loop thread): parse a
//! request head, find its destination (or park until discovery answers),
//! start its exchange, and after the response get ready for the next request,
//! a tunnel, or closing. The exchange itself (policy and upstream wire) is
//! `proxy/exchange`; the connection's loop and stages are `mod.rs`.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use super::{Session, Stage, UNSETTLED};
use crate::http1::{self, BodyFraming, Parsed, RequestHead};
use crate::metrics::Direction;
use crate::proxy::addr_text;
use crate::proxy::ctx::Ctx;
use crate::proxy::destinations::Router;
use crate::proxy::exchange::{Exchange, From};
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
        let found = if self.direction == Direction::Inbound {
            // Always the original destination (there is one: the listener
            // refused connections without), whatever the request names.
            let Some(target) = self.orig_dst else {
                self.synthetic(502, "no original destination", true);
                return;
            };
            let host = head.host_authority().map(|(h, p)| DstKey::new(h, p));
            let host = host.as_ref().map(|k| (k.name(), k.key()));
            ctx.dsts
                .get_or_start_inbound(host, target, ctx.now)
                .inspect_err(|e| log::error!("{target}: cannot start discovery: {}", e.0))
        } else {
            let Some((host, port)) = head.authority_raw() else {
                self.synthetic(400, "missing or invalid host", true);
                return;
            };
            let key = DstKey::new(host, port);
            let (dst, name) = (key.key(), key.name());
            match ip_target(host, port, self.orig_dst) {
                // An IP names no destination: the target is where the
                // connection was going (or that IP), one fixed endpoint.
                Some(addr) => {
                    let mut text = [0u8; 64];
                    let fixed = addr_text(addr, &mut text);
                    ctx.dsts.get_or_start_fixed(fixed, addr, ctx.now)
                }
                None => ctx.dsts.get_or_start(dst, name, port, ctx.now),
            }
            .inspect_err(|e| log::error!("{dst}: cannot start discovery: {}", e.0))
        };
        let wait_on = match found {
            Err(_) => {
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
        self.stage = Stage::Parked(wait_on);
    }

    pub(super) fn try_unpark(&mut self, waited: &Arc<str>, ctx: &mut Ctx<'_>) -> bool {
        if let Some(d) = ctx.dsts.get_mut(waited) {
            d.waiters.retain(|k| *k != self.key);
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
                d.waiters.retain(|k| *k != self.key);
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

/// The target of a request whose authority is an IP literal: the original
/// destination of its connection when it was redirected, else that IP and
/// port. `None` for a name (the first byte tells most of them apart, so a
/// name costs one comparison).
fn ip_target(host: &str, port: u16, orig_dst: Option<SocketAddr>) -> Option<SocketAddr> {
    let first = *host.as_bytes().first()?;
    if !(first.is_ascii_digit() || first == b'[') {
        return None;
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = literal.parse().ok()?;
    Some(orig_dst.unwrap_or(SocketAddr::new(ip, port)))
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

pub(super) fn has_body(head: &RequestHead) -> bool {
    head.framing() != BodyFraming::None
}

/// `name:port` with the name lowercased: the destination table's key.
/// Built by hand into a buffer on the stack (a heap string for names longer
/// than any DNS name): this runs for every request, and `format!` plus two
/// strings cost about a tenth of a request's instructions on the loop.
pub(super) struct DstKey {
    buf: [u8; DST_KEY_INLINE],
    len: usize,
    name_len: usize,
    /// The key when it does not fit `buf` (empty otherwise: no allocation).
    heap: String,
}

/// A DNS name is at most 253 bytes; then `:` and five digits.
const DST_KEY_INLINE: usize = 260;

impl DstKey {
    pub(super) fn new(host: &str, port: u16) -> DstKey {
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

    pub(super) fn key(&self) -> &str {
        if !self.heap.is_empty() {
            return &self.heap;
        }
        // Lowercasing ASCII bytes keeps UTF-8 valid, so this never fails.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    pub(super) fn name(&self) -> &str {
        self.key().get(..self.name_len).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::{ip_target, DstKey, DST_KEY_INLINE};
    use std::net::SocketAddr;

    #[test]
    fn ip_literals_target_the_original_destination_or_themselves() {
        let sa = |s: &str| s.parse::<SocketAddr>().expect("addr");
        let orig = Some(sa("10.0.0.9:8080"));
        assert_eq!(ip_target("10.1.2.3", 80, None), Some(sa("10.1.2.3:80")));
        assert_eq!(ip_target("10.1.2.3", 80, orig), orig);
        assert_eq!(ip_target("[::1]", 7000, None), Some(sa("[::1]:7000")));
        assert_eq!(ip_target("books.default.svc", 80, orig), None);
        assert_eq!(ip_target("1password.com", 443, None), None);
        assert_eq!(ip_target("", 80, orig), None);
    }

    #[test]
    pub(super) fn dst_keys() {
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
