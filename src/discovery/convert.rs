//! Protobuf -> domain conversion for the discovery client: the one module on the
//! client side that touches `crate::proto` (the embedded controller in
//! `controller/` is the other side of the wire).
//!
//! Runs on the `profile:<name:port>` and `endpoints:<name:port>` discovery
//! threads, on every message they receive; the results are the domain types of
//! `profile.rs` and `endpoints.rs`, which the event loop then uses. Pure: values
//! in, values out, no I/O besides `log` warnings.
//!
//! Conversion never trusts the controller. Anything invalid is dropped item by
//! item with a warning naming the destination and the reason, and the rest still
//! applies: a route whose condition does not convert, a response class whose
//! condition does not convert, a dst override with a bad authority, an endpoint
//! with a bad address. Conditions (`convert/condition.rs`) convert as a whole or
//! not at all: one bad leaf anywhere in a route's condition (a regex that does
//! not compile, an unknown match kind, a bad method) drops the whole route, and
//! one in a class's condition (a status range with a bound missing) the whole
//! class; unlike linkerd2-proxy, which filters out just the leaf and so can make
//! an `all` match every request. Path regexes are compiled there, once per
//! update (`RequestMatch::path` anchors them and bounds their size), and match
//! trees are depth-checked iteratively before the (bounded) recursive
//! conversion, so a hostile message cannot overflow the stack. Weight-0 dst
//! overrides are the one drop logged at debug: they are a deliberate way to park
//! a backend.

mod condition;

pub use condition::regex_reason;

use crate::endpoints::{ClientTls, Endpoint, EndpointUpdate, ProtocolHint};
use crate::profile::{
    normalize_authority, normalize_dns_name, PathPatterns, Profile, ResponseClass, RetryBudget,
    Route, WeightedDst,
};
use crate::proto::destination as pb;
use crate::proto::net::{ipaddress, IPAddress, IPv6, TcpAddress};
use protobuf::well_known_types::duration::Duration as PbDuration;
use protobuf::MessageField;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Deepest request or response condition accepted, counted in match messages
/// from the route's condition (depth 1) down to a leaf. Real profiles nest a
/// handful of levels; the limit bounds the recursion of conversion and matching.
pub const MAX_MATCH_DEPTH: usize = 32;

/// Longest duration accepted for a route timeout (anything longer is a mistake).
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Retry budget `ttl` bounds, as Linkerd validates them.
const MIN_BUDGET_TTL: Duration = Duration::from_secs(1);
const MAX_BUDGET_TTL: Duration = Duration::from_secs(60);

/// Why an item from the controller was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConvertError {
    /// An `Update` with none of `add`, `remove`, `no_endpoints` set.
    EmptyUpdate,
    /// A `WeightedAddr` without its `addr`.
    MissingAddr,
    /// A `TcpAddress` without an IP (or with an IP kind spoke does not know).
    MissingIp,
    /// A port outside 1..=65535.
    InvalidPort(u32),
    /// A route or response class without a condition.
    MissingCondition,
    /// A request or response match with no variant set.
    EmptyMatch,
    /// A condition nested deeper than [`MAX_MATCH_DEPTH`].
    TooDeep,
    /// A path regex that does not compile (or exceeds `PATH_REGEX_SIZE_LIMIT`).
    InvalidRegex { pattern: String, reason: String },
    /// An unknown registered method or a malformed extension method.
    InvalidMethod(String),
    /// A status range with a bound missing (0) or outside 100..=999, or min > max.
    InvalidStatusRange { min: u32, max: u32 },
    /// A negative or malformed duration, or one longer than a day.
    InvalidDuration { seconds: i64, nanos: i32 },
    /// A retry budget outside Linkerd's bounds; says which field.
    InvalidRetryBudget(String),
    /// A dst override or authority override that is not `name[:port]`.
    InvalidAuthority(String),
    /// A fully-qualified name that is not a DNS name.
    InvalidName(String),
    /// A metrics label key that is not `[A-Za-z0-9_]+`.
    InvalidLabel(String),
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::EmptyUpdate => write!(f, "update has no add, remove or no_endpoints"),
            ConvertError::MissingAddr => write!(f, "endpoint has no address"),
            ConvertError::MissingIp => write!(f, "address has no (known) IP"),
            ConvertError::InvalidPort(p) => write!(f, "port {p} is not in 1..=65535"),
            ConvertError::MissingCondition => write!(f, "no condition"),
            ConvertError::EmptyMatch => write!(f, "match has no variant set"),
            ConvertError::TooDeep => {
                write!(f, "condition nested deeper than {MAX_MATCH_DEPTH} levels")
            }
            ConvertError::InvalidRegex { pattern, reason } => {
                write!(f, "invalid path regex {pattern:?}: {reason}")
            }
            ConvertError::InvalidMethod(m) => write!(f, "invalid method {m:?}"),
            ConvertError::InvalidStatusRange { min, max } => write!(
                f,
                "invalid status range min={min} max={max} (need both bounds, in 100..=999, min <= max)"
            ),
            ConvertError::InvalidDuration { seconds, nanos } => write!(
                f,
                "invalid duration {seconds}s {nanos}ns (need non-negative, at most one day)"
            ),
            ConvertError::InvalidRetryBudget(why) => write!(f, "invalid retry budget: {why}"),
            ConvertError::InvalidAuthority(a) => write!(f, "invalid authority {a:?}"),
            ConvertError::InvalidName(n) => write!(f, "invalid DNS name {n:?}"),
            ConvertError::InvalidLabel(k) => write!(f, "invalid metrics label key {k:?}"),
        }
    }
}

/// The `Ok` value, or `None` after logging the error after `ctx`: how every
/// rejected item is dropped.
fn kept<T>(r: Result<T, ConvertError>, ctx: fmt::Arguments<'_>) -> Option<T> {
    r.map_err(|e| log::warn!("{ctx}: {e}")).ok()
}

/// At most 128 characters of untrusted text, for errors and logs.
fn excerpt(s: &str) -> String {
    const MAX: usize = 128;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_string(),
    }
}

// === Profiles ===

/// Converts a `GetProfile` answer for `dst` (`name:port`). Never fails: every
/// rejected item is logged and dropped, and the rest applies.
pub fn profile(pb: &pb::DestinationProfile, dst: &str, patterns: &PathPatterns) -> Profile {
    let routes: Vec<Route> = pb
        .routes
        .iter()
        .enumerate()
        .filter_map(|(index, r)| {
            let ctx = RouteCtx {
                dst,
                index,
                route: r,
                patterns,
            };
            kept(route(r, &ctx), format_args!("{ctx}: dropped"))
        })
        .collect();

    let retry_budget = pb.retry_budget.as_ref().and_then(|b| {
        kept(
            retry_budget(b),
            format_args!("profile {dst}: retries disabled"),
        )
    });
    if pb.retry_budget.is_none() && routes.iter().any(|r| r.is_retryable) {
        log::warn!("profile {dst}: retry_budget is missing; retries are disabled");
    }

    let dst_overrides: Vec<WeightedDst> = pb
        .dst_overrides
        .iter()
        .filter_map(|d| weighted_dst(d, dst))
        .collect();

    let fully_qualified_name = match pb.fully_qualified_name.as_str() {
        "" => None,
        name => {
            let dns = normalize_dns_name(name);
            if dns.is_none() {
                let e = ConvertError::InvalidName(excerpt(name));
                log::warn!("profile {dst}: fully_qualified_name ignored: {e}");
            }
            dns
        }
    };

    let ep_ctx = format!("profile {dst}: endpoint");
    let endpoint = pb.endpoint.as_ref().and_then(|ep| {
        let ep = weighted_addr(ep, &HashMap::new(), &ep_ctx);
        kept(ep, format_args!("{ep_ctx} ignored"))
    });

    Profile {
        routes: routes.into(),
        retry_budget,
        dst_overrides: dst_overrides.into(),
        opaque_protocol: pb.opaque_protocol,
        fully_qualified_name,
        endpoint,
    }
}

/// Names a route in warnings: destination, position and `route` label.
struct RouteCtx<'a> {
    dst: &'a str,
    index: usize,
    route: &'a pb::Route,
    patterns: &'a PathPatterns,
}

impl fmt::Display for RouteCtx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "profile {}: route #{}", self.dst, self.index)?;
        match self.route.metrics_labels.get("route") {
            Some(name) => write!(f, " ({:?})", excerpt(name)),
            None => Ok(()),
        }
    }
}

/// Converts one route; `Err` drops it, as does any error inside its condition.
/// Problems in its other parts (a response class, a label, the timeout) only
/// drop that part.
fn route(pb: &pb::Route, ctx: &RouteCtx<'_>) -> Result<Route, ConvertError> {
    let cond = pb
        .condition
        .as_ref()
        .ok_or(ConvertError::MissingCondition)?;
    let condition = condition::request_condition(cond, ctx.patterns)?;

    let response_classes: Vec<ResponseClass> = pb
        .response_classes
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            kept(
                condition::response_class(c),
                format_args!("{ctx}: response class #{i} dropped"),
            )
        })
        .collect();

    let timeout = match pb.timeout.as_ref().map(duration) {
        None => None,
        Some(Ok(d)) if d.is_zero() => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            log::warn!("{ctx}: timeout ignored: {e}");
            None
        }
    };

    Ok(Route {
        condition,
        response_classes: response_classes.into(),
        labels: labels(&HashMap::new(), &pb.metrics_labels, ctx),
        is_retryable: pb.is_retryable,
        timeout,
    })
}

/// A well-formed, non-negative duration of at most a day.
fn duration(pb: &PbDuration) -> Result<Duration, ConvertError> {
    let invalid = ConvertError::InvalidDuration {
        seconds: pb.seconds,
        nanos: pb.nanos,
    };
    let secs = u64::try_from(pb.seconds).map_err(|_| invalid.clone())?;
    let nanos = u32::try_from(pb.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)
        .ok_or_else(|| invalid.clone())?;
    if secs > MAX_DURATION.as_secs() {
        return Err(invalid);
    }
    let d = Duration::new(secs, nanos);
    if d > MAX_DURATION {
        return Err(invalid);
    }
    Ok(d)
}

fn retry_budget(pb: &pb::RetryBudget) -> Result<RetryBudget, ConvertError> {
    let ratio = pb.retry_ratio;
    if !ratio.is_finite() || !(0.0..=1000.0).contains(&ratio) {
        return Err(ConvertError::InvalidRetryBudget(format!(
            "retry_ratio {ratio} is not in 0..=1000"
        )));
    }
    if i32::try_from(pb.min_retries_per_second).is_err() {
        return Err(ConvertError::InvalidRetryBudget(format!(
            "min_retries_per_second {} exceeds {}",
            pb.min_retries_per_second,
            i32::MAX
        )));
    }
    let ttl = pb
        .ttl
        .as_ref()
        .ok_or_else(|| ConvertError::InvalidRetryBudget("ttl is missing".into()))?;
    let ttl = duration(ttl).map_err(|e| ConvertError::InvalidRetryBudget(format!("ttl: {e}")))?;
    if !(MIN_BUDGET_TTL..=MAX_BUDGET_TTL).contains(&ttl) {
        return Err(ConvertError::InvalidRetryBudget(format!(
            "ttl {ttl:?} is not in 1s..=60s"
        )));
    }
    Ok(RetryBudget {
        retry_ratio: ratio,
        min_retries_per_second: pb.min_retries_per_second,
        ttl,
    })
}

/// A traffic-split backend, or `None` (logged) when it must be dropped.
fn weighted_dst(pb: &pb::WeightedDst, dst: &str) -> Option<WeightedDst> {
    if pb.weight == 0 {
        // Weight 0 is how users park a backend (a canary at 0%), not bad input,
        // and profiles are re-sent often: debug, not warn.
        log::debug!(
            "profile {dst}: dst override {:?} has weight 0; skipped",
            excerpt(&pb.authority)
        );
        return None;
    }
    let authority = kept(
        authority(&pb.authority),
        format_args!("profile {dst}: dst override dropped"),
    )?;
    Some(WeightedDst {
        authority,
        weight: pb.weight,
    })
}

fn authority(raw: &str) -> Result<String, ConvertError> {
    normalize_authority(raw).ok_or_else(|| ConvertError::InvalidAuthority(excerpt(raw)))
}

/// Metrics labels sorted by key, `overlay` winning over `base`; keys that are
/// not `[A-Za-z0-9_]+` are dropped (they would corrupt the exposition format
/// once prefixed with `rt_` or `dst_`).
fn labels(
    base: &HashMap<String, String>,
    overlay: &HashMap<String, String>,
    ctx: &dyn fmt::Display,
) -> Arc<[(String, String)]> {
    let mut merged = BTreeMap::new();
    for (k, v) in base.iter().chain(overlay.iter()) {
        if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            merged.insert(k.clone(), v.clone());
        } else {
            log::warn!(
                "{ctx}: label dropped: {}",
                ConvertError::InvalidLabel(excerpt(k))
            );
        }
    }
    merged.into_iter().collect()
}

// === Endpoints ===

/// Converts one `Destination.Get` message. Endpoints with a bad address are
/// dropped individually (logged); only a message with nothing set is an error.
pub fn update(pb: &pb::Update) -> Result<EndpointUpdate, ConvertError> {
    use pb::update::Update;
    match &pb.update {
        Some(Update::Add(set)) => {
            let eps = set
                .addrs
                .iter()
                .filter_map(|a| {
                    let ep = weighted_addr(a, &set.metric_labels, &"endpoint update");
                    kept(ep, format_args!("endpoint update: endpoint dropped"))
                })
                .collect();
            Ok(EndpointUpdate::Add(eps))
        }
        Some(Update::Remove(set)) => {
            let addrs = set
                .addrs
                .iter()
                .filter_map(|a| {
                    kept(
                        tcp_address(a),
                        format_args!("endpoint update: removal dropped"),
                    )
                })
                .collect();
            Ok(EndpointUpdate::Remove(addrs))
        }
        Some(Update::NoEndpoints(n)) => Ok(EndpointUpdate::NoEndpoints { exists: n.exists }),
        _ => Err(ConvertError::EmptyUpdate),
    }
}

/// One endpoint, with the set-level labels merged under its own.
fn weighted_addr(
    pb: &pb::WeightedAddr,
    set_labels: &HashMap<String, String>,
    ctx: &dyn fmt::Display,
) -> Result<Endpoint, ConvertError> {
    let addr = tcp_address(pb.addr.as_ref().ok_or(ConvertError::MissingAddr)?)?;
    let authority_override = match pb.authority_override.as_ref() {
        Some(o) if !o.authority_override.is_empty() => kept(
            authority(&o.authority_override),
            format_args!("{ctx}: {addr}: authority override ignored"),
        ),
        _ => None,
    };
    Ok(Endpoint {
        addr,
        weight: pb.weight,
        labels: labels(set_labels, &pb.metric_labels, ctx),
        authority_override,
        tls: client_tls(pb.tls_identity.as_ref(), addr, ctx),
        protocol_hint: protocol_hint(pb.protocol_hint.as_ref()),
        opaque_port: opaque_port(pb.protocol_hint.as_ref(), addr, ctx),
    })
}

/// The identity an endpoint must prove (its DNS-like name or URI) and the
/// SNI to ask for it by: `server_name` when set, else a DNS-like identity
/// itself. Without an identity there is nothing to verify, so no TLS; a URI
/// identity needs a server name, since a URI is no SNI.
fn client_tls(
    id: Option<&pb::TlsIdentity>,
    addr: SocketAddr,
    ctx: &dyn fmt::Display,
) -> Option<ClientTls> {
    use pb::tls_identity::Strategy;
    let id = id?;
    let (server_id, dns_like) = match &id.strategy {
        Some(Strategy::DnsLikeIdentity(d)) if !d.name.is_empty() => (d.name.as_str(), true),
        Some(Strategy::UriLikeIdentity(u)) if !u.uri.is_empty() => (u.uri.as_str(), false),
        _ => {
            log::debug!("{ctx}: {addr}: a TLS identity without an identity: no TLS");
            return None;
        }
    };
    let server_name = match id.server_name.as_ref().map(|n| n.name.as_str()) {
        Some(name) if !name.is_empty() => name,
        _ if dns_like => server_id,
        _ => {
            log::warn!("{ctx}: {addr}: URI identity {server_id} without a server name: no TLS");
            return None;
        }
    };
    Some(ClientTls {
        server_name: Arc::from(server_name),
        server_id: Arc::from(server_id),
    })
}

/// The port of Linkerd's opaque transport, when the hint carries a valid one.
fn opaque_port(
    hint: Option<&pb::ProtocolHint>,
    addr: SocketAddr,
    ctx: &dyn fmt::Display,
) -> Option<u16> {
    let port = hint?.opaque_transport.as_ref()?.inbound_port;
    match u16::try_from(port) {
        Ok(p) if p != 0 => Some(p),
        _ => {
            log::warn!("{ctx}: {addr}: opaque transport port {port} ignored");
            None
        }
    }
}

fn protocol_hint(hint: Option<&pb::ProtocolHint>) -> ProtocolHint {
    use pb::protocol_hint::Protocol;
    match hint.and_then(|h| h.protocol.as_ref()) {
        Some(Protocol::H2(_)) => ProtocolHint::H2,
        Some(Protocol::Opaque(_)) => ProtocolHint::Opaque,
        _ => ProtocolHint::Unknown,
    }
}

/// A socket address. IPv4 is a `fixed32` whose value's big-endian bytes are
/// the octets (10.1.2.3 is 0x0A010203); IPv6 is two big-endian 64-bit halves.
pub fn tcp_address(pb: &TcpAddress) -> Result<SocketAddr, ConvertError> {
    let ip = match pb.ip.as_ref().and_then(|ip| ip.ip.as_ref()) {
        Some(ipaddress::Ip::Ipv4(v4)) => IpAddr::V4(Ipv4Addr::from(*v4)),
        Some(ipaddress::Ip::Ipv6(v6)) => {
            let bits = (u128::from(v6.first) << 64) | u128::from(v6.last);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        _ => return Err(ConvertError::MissingIp),
    };
    let port = u16::try_from(pb.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(ConvertError::InvalidPort(pb.port))?;
    Ok(SocketAddr::new(ip, port))
}

/// The inverse of [`tcp_address`] (IPv6 flow info and scope id are not sent).
pub fn to_tcp_address(addr: SocketAddr) -> TcpAddress {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => ipaddress::Ip::Ipv4(u32::from(v4)),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mut half = IPv6::new();
            half.first = (bits >> 64) as u64;
            half.last = bits as u64;
            ipaddress::Ip::Ipv6(half)
        }
    };
    let mut pb_ip = IPAddress::new();
    pb_ip.ip = Some(ip);
    let mut tcp = TcpAddress::new();
    tcp.ip = MessageField::some(pb_ip);
    tcp.port = u32::from(addr.port());
    tcp
}

/// A `Get`/`GetProfile` request for `path` (`name:port`); `scheme` stays
/// empty, as current Linkerd proxies send it.
pub fn get_destination(path: &str, context_token: &str) -> pb::GetDestination {
    let mut req = pb::GetDestination::new();
    req.path = path.to_string();
    req.context_token = context_token.to_string();
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::text_format::parse_from_str;

    // Messages are written in protobuf text format: literals, close to the wire.

    #[track_caller]
    pub(super) fn conv(text: &str) -> Profile {
        let pb: pb::DestinationProfile = parse_from_str(text).expect("test profile");
        profile(&pb, "books:80", &PathPatterns::default())
    }

    /// A kept route with a catch-all condition and the given other fields.
    #[track_caller]
    pub(super) fn route(fields: &str) -> Route {
        let p = conv(&format!(
            r#"routes {{ condition {{ all {{}} }} {fields} }}"#
        ));
        p.routes.first().cloned().expect("route kept")
    }

    #[track_caller]
    fn update_of(text: &str) -> Result<EndpointUpdate, ConvertError> {
        update(&parse_from_str::<pb::Update>(text).expect("test update"))
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn pairs(labels: &[(String, String)]) -> Vec<(&str, &str)> {
        labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn a_dropped_route_names_itself_and_the_reason() {
        let pb: pb::DestinationProfile = parse_from_str(
            r#"routes { condition { all { matches { method { registered: GET } }
                                          matches { not { path { regex: "/b/(" } } } } }
                        metrics_labels { key: "route" value: "GET /b" } }"#,
        )
        .expect("test profile");
        let patterns = PathPatterns::default();
        let ctx = RouteCtx {
            dst: "books:80",
            index: 0,
            route: &pb.routes[0],
            patterns: &patterns,
        };
        assert_eq!(ctx.to_string(), r#"profile books:80: route #0 ("GET /b")"#);
        match super::route(&pb.routes[0], &ctx) {
            Err(ConvertError::InvalidRegex { pattern, reason }) => {
                assert_eq!(pattern, "/b/(");
                assert!(reason.contains("unclosed group"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn labels_sorted_and_checked() {
        let r = route(
            r#"metrics_labels { key: "route" value: "GET /books" }
               metrics_labels { key: "a_key" value: "v" }
               metrics_labels { key: "bad-key" value: "v" }
               metrics_labels { key: "" value: "v" }"#,
        );
        assert_eq!(pairs(&r.labels), [("a_key", "v"), ("route", "GET /books")]);
    }

    #[test]
    fn timeouts() {
        let t = |d: &str| route(&format!("is_retryable: true timeout {{ {d} }}")).timeout;
        assert_eq!(route("").timeout, None);
        assert_eq!(t(""), None);
        assert_eq!(
            t("seconds: 1 nanos: 500000000"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(t("nanos: 1"), Some(Duration::from_nanos(1)));
        assert_eq!(t("seconds: 86400"), Some(Duration::from_secs(86_400)));
        for bad in [
            "seconds: -1",
            "nanos: -1",
            "nanos: 1000000000",
            "seconds: 86400 nanos: 1",
            "seconds: 9223372036854775807",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
        assert!(route("is_retryable: true").is_retryable);
    }

    #[test]
    fn retry_budgets() {
        let b = |text: &str| conv(&format!("retry_budget {{ {text} }}")).retry_budget;
        let want = RetryBudget {
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Duration::from_secs(10),
        };
        let ok = "retry_ratio: 0.2 min_retries_per_second: 10 ttl { seconds: 10 }";
        assert_eq!(b(ok), Some(want));
        assert!(b("ttl { seconds: 1 }").is_some());
        assert!(
            b("retry_ratio: 1000 min_retries_per_second: 2147483647 ttl { seconds: 60 }").is_some()
        );
        for bad in [
            "retry_ratio: nan ttl { seconds: 10 }",
            "retry_ratio: inf ttl { seconds: 10 }",
            "retry_ratio: -0.1 ttl { seconds: 10 }",
            "retry_ratio: 1000.1 ttl { seconds: 10 }",
            "min_retries_per_second: 2147483648 ttl { seconds: 10 }",
            "retry_ratio: 0.2",
            "ttl { nanos: 999999999 }",
            "ttl { seconds: 60 nanos: 1 }",
            "ttl { seconds: -1 }",
        ] {
            assert_eq!(b(bad), None, "{bad}");
        }
        assert_eq!(conv("").retry_budget, None);
    }

    fn overrides(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        let text: String = list
            .iter()
            .map(|(a, w)| format!("dst_overrides {{ authority: {a:?} weight: {w} }} "))
            .collect();
        let got = conv(&text).dst_overrides;
        got.iter()
            .map(|d| (d.authority.clone(), d.weight))
            .collect()
    }

    #[test]
    fn dst_overrides() {
        let got = overrides(&[
            ("books-v1.default.svc.cluster.local:7000", 900),
            ("books-v2", 100),
            ("Books-V3.default.svc.cluster.local.:8080", 5),
            ("zero:80", 0),
        ]);
        let want = [
            ("books-v1.default.svc.cluster.local:7000", 900),
            ("books-v2:80", 100),
            ("books-v3.default.svc.cluster.local:8080", 5),
        ];
        assert_eq!(got, want.map(|(a, w)| (a.to_string(), w)));
        // The full authority rules are tested in `profile`.
        for bad in ["", ":80", "books:0", "bad name:80", "[::1]:80"] {
            assert!(overrides(&[(bad, 1)]).is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn scalar_fields() {
        let p = conv(
            r#"opaque_protocol: true
               fully_qualified_name: "books.default.svc.cluster.local."
               endpoint { addr { ip { ipv4: 167838211 } port: 8080 } weight: 10000 }"#,
        );
        assert!(p.opaque_protocol);
        assert_eq!(
            p.fully_qualified_name.as_deref(),
            Some("books.default.svc.cluster.local")
        );
        let ep = p.endpoint.expect("endpoint");
        assert_eq!((ep.addr, ep.weight), (sa("10.1.2.3:8080"), 10_000));
        let fqn =
            |name: &str| conv(&format!("fully_qualified_name: {name:?}")).fully_qualified_name;
        assert_eq!(fqn("x.").as_deref(), Some("x"));
        for bad in ["", ".", "bad name"] {
            assert_eq!(fqn(bad), None, "{bad:?}");
        }
        assert_eq!(conv("endpoint { weight: 1 }").endpoint, None);
        assert_eq!(conv(""), Profile::default());
    }

    #[test]
    fn tcp_addresses() {
        let v4: TcpAddress = parse_from_str("ip { ipv4: 167838211 } port: 8080").expect("pb");
        assert_eq!(tcp_address(&v4), Ok(sa("10.1.2.3:8080")));
        assert_eq!(to_tcp_address(sa("10.1.2.3:8080")), v4);
        let v6: TcpAddress = parse_from_str("ip { ipv6 { last: 1 } } port: 80").expect("pb");
        assert_eq!(tcp_address(&v6), Ok(sa("[::1]:80")));
        assert_eq!(to_tcp_address(sa("[::1]:80")), v6);
        let doc = to_tcp_address(sa("[2001:db8::1]:443"));
        assert_eq!(
            (doc.ip.ipv6().first, doc.ip.ipv6().last),
            (0x2001_0db8_0000_0000, 1)
        );
        assert_eq!(tcp_address(&doc), Ok(sa("[2001:db8::1]:443")));
        for (text, err) in [
            ("ip { ipv4: 1 }", ConvertError::InvalidPort(0)),
            (
                "ip { ipv4: 1 } port: 65536",
                ConvertError::InvalidPort(65_536),
            ),
            ("port: 80", ConvertError::MissingIp),
            ("ip {} port: 80", ConvertError::MissingIp),
        ] {
            let pb: TcpAddress = parse_from_str(text).expect("pb");
            assert_eq!(tcp_address(&pb), Err(err), "{text}");
        }
    }

    #[test]
    fn add_converts_every_field_and_drops_bad_addresses() {
        let got = update_of(
            r#"add {
                 addrs { addr { ip { ipv4: 167772161 } port: 8080 } weight: 10000
                         metric_labels { key: "pod" value: "books-1" }
                         metric_labels { key: "namespace" value: "override" }
                         tls_identity { dns_like_identity { name: "books.default.sa.identity" } }
                         protocol_hint { h2 {} }
                         authority_override { authority_override: "books.remote:8080" } }
                 addrs { weight: 1 }
                 addrs { addr { ip { ipv4: 167772162 } port: 0 } }
                 addrs { addr { ip { ipv6 { first: 2306139568115548160 last: 1 } } port: 9090 }
                         protocol_hint { opaque {} opaque_transport { inbound_port: 4143 } }
                         tls_identity { server_name { name: "sni.example" } }
                         authority_override { authority_override: "bad name" } }
                 metric_labels { key: "namespace" value: "default" }
                 metric_labels { key: "service" value: "books" }
               }"#,
        );
        let eps = match got {
            Ok(EndpointUpdate::Add(eps)) => eps,
            other => panic!("{other:?}"),
        };
        assert_eq!(eps.len(), 2);
        let e = &eps[0];
        assert_eq!((e.addr, e.weight), (sa("10.0.0.1:8080"), 10_000));
        let want = [
            ("namespace", "override"),
            ("pod", "books-1"),
            ("service", "books"),
        ];
        assert_eq!(pairs(&e.labels), want);
        assert_eq!(e.protocol_hint, ProtocolHint::H2);
        assert_eq!(e.authority_override.as_deref(), Some("books.remote:8080"));
        let id = "books.default.sa.identity";
        assert_eq!(e.tls, Some(tls(id, id)), "the DNS id is the SNI too");
        assert_eq!(e.opaque_port, None);
        let e = &eps[1];
        assert_eq!(e.addr, sa("[2001:db8::1]:9090"));
        assert_eq!(e.protocol_hint, ProtocolHint::Opaque);
        assert_eq!(e.tls, None, "a server name alone proves nothing");
        assert_eq!(e.authority_override, None);
        assert_eq!(e.opaque_port, Some(4143));
    }

    fn tls(server_name: &str, server_id: &str) -> ClientTls {
        ClientTls {
            server_name: Arc::from(server_name),
            server_id: Arc::from(server_id),
        }
    }

    #[test]
    fn tls_identities_keep_the_sni_and_the_identity_apart() {
        let one = |tls_identity: &str, hint: &str| {
            let text = format!(
                "add {{ addrs {{ addr {{ ip {{ ipv4: 167772161 }} port: 80 }} \
                 tls_identity {{ {tls_identity} }} protocol_hint {{ {hint} }} }} }}"
            );
            match update_of(&text) {
                Ok(EndpointUpdate::Add(eps)) => (eps[0].tls.clone(), eps[0].opaque_port),
                other => panic!("{other:?}"),
            }
        };
        let both = r#"dns_like_identity { name: "a.ns.serviceaccount.identity.linkerd.cluster.local" }
                      server_name { name: "a.ns.svc" }"#;
        assert_eq!(
            one(both, "h2 {}"),
            (
                Some(tls(
                    "a.ns.svc",
                    "a.ns.serviceaccount.identity.linkerd.cluster.local"
                )),
                None
            )
        );
        let uri =
            r#"uri_like_identity { uri: "spiffe://td/ns/a/sa/b" } server_name { name: "b.a" }"#;
        assert_eq!(one(uri, "").0, Some(tls("b.a", "spiffe://td/ns/a/sa/b")));
        // A URI is no SNI: without a server name there is no TLS.
        assert_eq!(
            one(r#"uri_like_identity { uri: "spiffe://td/x" }"#, "").0,
            None
        );
        assert_eq!(one(r#"dns_like_identity { name: "" }"#, "").0, None);
        // The opaque transport port, when it fits a port.
        assert_eq!(
            one("", "opaque {} opaque_transport { inbound_port: 4143 }").1,
            Some(4143)
        );
        assert_eq!(one("", "opaque_transport { inbound_port: 0 }").1, None);
        assert_eq!(one("", "opaque_transport { inbound_port: 70000 }").1, None);
    }

    #[test]
    fn remove_no_endpoints_and_empty() {
        let remove = update_of("remove { addrs { ip { ipv4: 167772161 } port: 80 } addrs {} }");
        assert_eq!(remove, Ok(EndpointUpdate::Remove(vec![sa("10.0.0.1:80")])));
        let exists = update_of("no_endpoints { exists: true }");
        assert_eq!(exists, Ok(EndpointUpdate::NoEndpoints { exists: true }));
        let unknown = update_of("no_endpoints {}");
        assert_eq!(unknown, Ok(EndpointUpdate::NoEndpoints { exists: false }));
        assert_eq!(update_of("add {}"), Ok(EndpointUpdate::Add(vec![])));
        assert_eq!(update_of(""), Err(ConvertError::EmptyUpdate));
    }

    #[test]
    fn get_destination_request() {
        let req = get_destination("books.default.svc.cluster.local:80", r#"{"ns":"default"}"#);
        assert_eq!(req.scheme, "");
        assert_eq!(req.path, "books.default.svc.cluster.local:80");
        assert_eq!(req.context_token, r#"{"ns":"default"}"#);
    }

    #[test]
    fn errors_display_and_truncate() {
        assert!(
            authority(&"x".repeat(1000))
                .expect_err("bad")
                .to_string()
                .len()
                < 200
        );
        assert!(ConvertError::EmptyUpdate.to_string().contains("no add"));
        assert!(ConvertError::TooDeep.to_string().contains("32"));
    }
}
