//! The inbound side's rules (event-loop thread, pure): which connections
//! accepted on the inbound listener are served, which destination an inbound
//! request belongs to, and what of a request never reaches the application.
//!
//! An inbound connection always goes to its original destination (the local
//! application's port), whatever its requests name. So a connection that was
//! not redirected has no target and is refused at accept; with
//! `LINKERD2_PROXY_INBOUND_IPS` set, so is one whose target IP is not listed.
//!
//! A request's route labels come from the profile of its `Host` when that
//! name is under the profile suffixes (as in Linkerd): its destination is then
//! keyed by the name *and* the target, labelled with the name, its profile
//! watched on the name, its one endpoint the target. Any other request (an IP
//! literal, a name outside the suffixes, no `Host`) belongs to the target's
//! own destination, labelled with the target address, on the default route.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::addr_text;
use crate::http1::{DropHeaders, RequestHead};
use crate::ports::PortSet;

/// What a request that arrived without a verified client identity loses on
/// its way to the application: a client's own `l5d-client-id` claims an
/// identity nobody checked. (With mTLS, the header is set from the peer's
/// certificate instead.)
pub const WITHOUT_IDENTITY: DropHeaders = DropHeaders::new(&["l5d-client-id"]);

/// Appends the head of inbound request `head` to send to the application:
/// with `l5d-client-id` set to `client_id`, the identity the client proved
/// over mTLS, and without any the client sent itself; and with the target's
/// address (`target()`, asked only then) as `Host` when the client sent none
/// (HTTP/1.0), since the request goes on as HTTP/1.1, which needs one.
pub fn write_upstream_head(
    head: &RequestHead,
    out: &mut Vec<u8>,
    client_id: Option<&str>,
    target: impl FnOnce() -> Option<SocketAddr>,
) {
    let mut text = [0u8; 64];
    let host = match head.upstream_host() {
        "" => target().map_or("", |t| addr_text(t, &mut text)),
        host => host,
    };
    head.write_upstream_dropping(out, host, WITHOUT_IDENTITY);
    if let Some(id) = client_id {
        // Before the blank line that ends the head.
        debug_assert!(out.ends_with(b"\r\n\r\n"));
        out.truncate(out.len() - 2);
        out.extend_from_slice(b"l5d-client-id: ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// Why an inbound connection is not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It was not redirected, so there is nowhere to forward it.
    NoOrigDst,
    /// Its target IP is not one of `LINKERD2_PROXY_INBOUND_IPS`.
    NotInboundIp,
    /// Its port requires a verified client identity, and it proved none.
    NoIdentity,
    /// Its port requires TLS, and it did not speak mTLS to spoke.
    NoTls,
}

impl Refusal {
    /// The `reason` label of `spoke_connections_refused_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoOrigDst => "no_orig_dst",
            Refusal::NotInboundIp => "not_inbound_ip",
            Refusal::NoIdentity => "no_identity",
            Refusal::NoTls => "no_tls",
        }
    }

    /// What an HTTP client is told (403, `l5d-proxy-error`).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoIdentity => "a verified client identity is required on this port",
            Refusal::NoTls => "TLS is required on this port",
            Refusal::NoOrigDst | Refusal::NotInboundIp => "refused",
        }
    }
}

/// Whether a connection to inbound `port` may be served: `tls` says it
/// spoke mTLS to spoke, `identity` that the client proved one. A port that
/// requires an identity requires TLS too.
pub fn port_policy(
    port: u16,
    require_identity: &PortSet,
    require_tls: &PortSet,
    tls: bool,
    identity: bool,
) -> Result<(), Refusal> {
    if require_identity.contains(port) && !identity {
        return Err(Refusal::NoIdentity);
    }
    if require_tls.contains(port) && !tls {
        return Err(Refusal::NoTls);
    }
    Ok(())
}

/// The target of an inbound connection whose original destination is
/// `orig`, when it may be served; `ips` is the allow-list, if set.
pub fn admit(orig: Option<SocketAddr>, ips: Option<&[IpAddr]>) -> Result<SocketAddr, Refusal> {
    let target = orig.ok_or(Refusal::NoOrigDst)?;
    match ips {
        Some(ips) if !ips.iter().any(|ip| same_ip(*ip, target.ip())) => Err(Refusal::NotInboundIp),
        _ => Ok(target),
    }
}

/// Equal addresses, an IPv4-mapped IPv6 address being the IPv4 one it maps.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Whether `name` (a request's host, no port) is an IP literal rather than
/// a name: it names no profile.
pub fn is_ip_literal(name: &str) -> bool {
    name.starts_with('[') || name.parse::<Ipv4Addr>().is_ok()
}

/// The longest DNS name (253) plus `:port` (6), `@` and the longest socket
/// address (47).
const KEY_MAX: usize = 320;
/// Names longer than a DNS name are not looked up (they fit no profile).
pub const MAX_NAME: usize = 253;

/// An inbound request's destination: its table key, its metric label and the
/// `name:port` whose profile is watched, if any. Written into a buffer on the
/// stack (this runs for every inbound request).
pub struct InboundDst {
    buf: [u8; KEY_MAX],
    len: usize,
    /// The label is `buf[..label_len]`.
    label_len: usize,
    profiled: bool,
}

impl InboundDst {
    /// For a request to `target` whose `Host` is `named` (`name:port`,
    /// lowercased) when it is under the profile suffixes, else `None`.
    pub fn new(named: Option<&str>, target: SocketAddr) -> InboundDst {
        let mut dst = InboundDst {
            buf: [0u8; KEY_MAX],
            len: 0,
            label_len: 0,
            profiled: false,
        };
        let named = named.filter(|n| n.len() <= MAX_NAME + 6);
        let mut cursor = std::io::Cursor::new(&mut dst.buf[..]);
        // Both fit the buffer, by its size and the filter above.
        let _ = match named {
            Some(name) => write!(cursor, "{name}@{target}"),
            None => write!(cursor, "{target}"),
        };
        dst.len = usize::try_from(cursor.position()).unwrap_or(0);
        dst.label_len = named.map_or(dst.len, str::len);
        dst.profiled = named.is_some();
        dst
    }

    /// The destination table's key: `name:port@target`, or `target`.
    pub fn key(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// The `authority` / `dst` label: `name:port`, or the target address.
    pub fn label(&self) -> &str {
        self.key().get(..self.label_len).unwrap_or("")
    }

    /// The `name:port` whose profile gives the request its routes.
    pub fn profile(&self) -> Option<&str> {
        self.profiled.then(|| self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn only_redirected_connections_to_listed_ips_are_served() {
        let app = sa("10.1.2.3:8080");
        assert_eq!(admit(Some(app), None), Ok(app));
        assert_eq!(admit(None, None), Err(Refusal::NoOrigDst));
        assert_eq!(admit(None, Some(&[])), Err(Refusal::NoOrigDst));
        let ips: Vec<IpAddr> = vec!["10.1.2.3".parse().unwrap(), "fd00::3".parse().unwrap()];
        assert_eq!(admit(Some(app), Some(&ips)), Ok(app));
        assert_eq!(
            admit(Some(sa("[fd00::3]:80")), Some(&ips)),
            Ok(sa("[fd00::3]:80"))
        );
        assert_eq!(
            admit(Some(sa("[::ffff:10.1.2.3]:80")), Some(&ips)),
            Ok(sa("[::ffff:10.1.2.3]:80")),
            "an IPv4-mapped address is its IPv4 address"
        );
        assert_eq!(
            admit(Some(sa("10.1.2.4:8080")), Some(&ips)),
            Err(Refusal::NotInboundIp)
        );
        assert_eq!(Refusal::NoOrigDst.reason(), "no_orig_dst");
        assert_eq!(Refusal::NotInboundIp.reason(), "not_inbound_ip");
    }

    #[test]
    fn a_named_request_is_keyed_by_name_and_target_and_labelled_by_name() {
        let target = sa("10.1.2.3:8080");
        let d = InboundDst::new(Some("books.default.svc.cluster.local:7000"), target);
        assert_eq!(
            d.key(),
            "books.default.svc.cluster.local:7000@10.1.2.3:8080"
        );
        assert_eq!(d.label(), "books.default.svc.cluster.local:7000");
        assert_eq!(d.profile(), Some("books.default.svc.cluster.local:7000"));

        let d = InboundDst::new(None, sa("[fd00::3]:8080"));
        assert_eq!(
            (d.key(), d.label(), d.profile()),
            ("[fd00::3]:8080", "[fd00::3]:8080", None)
        );

        // The longest name there can be, with the longest address.
        let long = format!("{}:65535", "a".repeat(MAX_NAME));
        let wide = sa("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535");
        let d = InboundDst::new(Some(&long), wide);
        assert_eq!(d.key(), format!("{long}@{wide}"));
        assert_eq!(d.profile(), Some(long.as_str()));
        // Longer is no DNS name: the target's own destination.
        let longer = format!("{}:65535", "a".repeat(MAX_NAME + 1));
        let d = InboundDst::new(Some(&longer), target);
        assert_eq!((d.key(), d.profile()), ("10.1.2.3:8080", None));
    }

    fn upstream_head_as(raw: &[u8], target: SocketAddr, client_id: Option<&str>) -> String {
        let limits = crate::http1::Limits::default();
        let head = match crate::http1::parse_request(raw, &limits) {
            Ok(crate::http1::Parsed::Complete { head, .. }) => head,
            other => panic!("not a request: {other:?}"),
        };
        let mut out = Vec::new();
        write_upstream_head(&head, &mut out, client_id, || Some(target));
        String::from_utf8(out).expect("ascii")
    }

    fn upstream_head(raw: &[u8], target: SocketAddr) -> String {
        upstream_head_as(raw, target, None)
    }

    #[test]
    fn a_verified_client_identity_replaces_any_the_client_claimed() {
        let target = sa("10.1.2.3:8080");
        let raw = b"GET /a HTTP/1.1\r\nHost: books:7000\r\nl5d-client-id: me\r\n\r\n";
        assert_eq!(
            upstream_head_as(
                raw,
                target,
                Some("web.ns.serviceaccount.identity.linkerd.local")
            ),
            "GET /a HTTP/1.1\r\nhost: books:7000\r\n\
             l5d-client-id: web.ns.serviceaccount.identity.linkerd.local\r\n\r\n"
        );
    }

    #[test]
    fn the_application_never_sees_a_client_id_and_always_a_host() {
        let target = sa("10.1.2.3:8080");
        let raw = b"GET /a HTTP/1.1\r\nHost: books:7000\r\nl5d-client-id: me\r\nx: 1\r\n\r\n";
        assert_eq!(
            upstream_head(raw, target),
            "GET /a HTTP/1.1\r\nhost: books:7000\r\nx: 1\r\n\r\n"
        );
        assert_eq!(
            upstream_head(b"GET /a HTTP/1.0\r\n\r\n", target),
            "GET /a HTTP/1.1\r\nhost: 10.1.2.3:8080\r\n\r\n"
        );
    }

    #[test]
    fn ip_literals_are_not_names() {
        assert!(is_ip_literal("10.1.2.3"));
        assert!(is_ip_literal("[::1]"));
        assert!(!is_ip_literal("books.default.svc.cluster.local"));
        assert!(!is_ip_literal("1password.com"));
        assert!(!is_ip_literal("10.1.2"));
    }

    #[test]
    fn required_identity_and_tls_are_enforced_per_port() {
        let identity = PortSet::parse("8080").unwrap();
        let tls = PortSet::parse("9090").unwrap();
        let policy = |port, t, id| port_policy(port, &identity, &tls, t, id);
        assert_eq!(policy(80, false, false), Ok(()));
        assert_eq!(policy(8080, false, false), Err(Refusal::NoIdentity));
        // TLS without a client certificate proves no identity.
        assert_eq!(policy(8080, true, false), Err(Refusal::NoIdentity));
        assert_eq!(policy(8080, true, true), Ok(()));
        assert_eq!(policy(9090, false, false), Err(Refusal::NoTls));
        assert_eq!(policy(9090, true, false), Ok(()));
    }
}
