//! Which destination a request goes to (event-loop thread), the same for an
//! HTTP/1 request and an HTTP/2 stream: inbound, always the connection's
//! original destination (the `Host` only picks its profile, see
//! `proxy/inbound`); outbound, the request's authority: a name is a
//! discovered service, an IP literal the connection's original destination
//! (or that IP), one fixed endpoint. [`find`] starts discovery where it is
//! missing and says whether the request can go now or must wait.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use super::addr_text;
use super::ctx::Ctx;
use super::destinations::Router;
use crate::http1;
use crate::metrics::Direction;

/// Where a request stands with discovery.
pub enum Found {
    /// Everything it needs is there: the destination's name and router.
    Ready { name: Arc<str>, router: Rc<Router> },
    /// It waits for this destination (or split backend) to answer.
    Wait(Arc<str>),
    /// It can go nowhere.
    Fail(Failed),
}

/// Why a request can go nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Inbound with no original destination (the listener refuses those;
    /// this keeps it total).
    NoOriginalDst,
    /// Outbound with no usable authority.
    NoAuthority,
    /// Discovery could not start.
    Discovery,
}

/// Finds (or starts) the destination of a request on a connection whose
/// original destination is `orig_dst`, naming `authority`.
#[inline]
pub fn find(
    orig_dst: Option<SocketAddr>,
    authority: Option<(&str, u16)>,
    ctx: &mut Ctx<'_>,
) -> Found {
    let found = if ctx.direction == Direction::Inbound {
        let Some(target) = orig_dst else {
            return Found::Fail(Failed::NoOriginalDst);
        };
        let host = authority.map(|(h, p)| DstKey::new(h, p));
        let host = host.as_ref().map(|k| (k.name(), k.key()));
        ctx.dsts
            .get_or_start_inbound(host, target, ctx.now)
            .inspect_err(|e| log::error!("{target}: cannot start discovery: {}", e.0))
    } else {
        let Some((host, port)) = authority else {
            return Found::Fail(Failed::NoAuthority);
        };
        let key = DstKey::new(host, port);
        let (dst, name) = (key.key(), key.name());
        match ip_target(host, port, orig_dst) {
            Some(addr) => {
                let mut text = [0u8; 64];
                let fixed = addr_text(addr, &mut text);
                ctx.dsts.get_or_start_fixed(fixed, addr, ctx.now)
            }
            None => ctx.dsts.get_or_start(dst, name, port, ctx.now),
        }
        .inspect_err(|e| log::error!("{dst}: cannot start discovery: {}", e.0))
    };
    let d = match found {
        Err(_) => return Found::Fail(Failed::Discovery),
        Ok(d) => d,
    };
    match &d.router {
        None => Found::Wait(d.name.clone()),
        // No split: the destination's own endpoints, already at hand.
        Some(router) if router.backends.is_empty() && d.endpoints.is_none() => {
            Found::Wait(d.name.clone())
        }
        Some(router) if router.backends.is_empty() => Found::Ready {
            name: d.name.clone(),
            router: router.clone(),
        },
        Some(router) => {
            let (router, name) = (router.clone(), d.name.clone());
            match waiting_for_backend(&router, ctx) {
                None => Found::Ready { name, router },
                Some(w) => Found::Wait(w),
            }
        }
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

/// `name:port` with the name lowercased: the destination table's key.
/// Built by hand into a buffer on the stack (a heap string for names longer
/// than any DNS name): this runs for every request, and `format!` plus two
/// strings cost about a tenth of a request's instructions on the loop.
pub struct DstKey {
    buf: [u8; DST_KEY_INLINE],
    len: usize,
    name_len: usize,
    /// The key when it does not fit `buf` (empty otherwise: no allocation).
    heap: String,
}

/// A DNS name is at most 253 bytes; then `:` and five digits.
const DST_KEY_INLINE: usize = 260;

impl DstKey {
    pub fn new(host: &str, port: u16) -> DstKey {
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

    pub fn key(&self) -> &str {
        if !self.heap.is_empty() {
            return &self.heap;
        }
        // Lowercasing ASCII bytes keeps UTF-8 valid, so this never fails.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    pub fn name(&self) -> &str {
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
