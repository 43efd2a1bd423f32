//! Configuration: reads spoke's settings from an injected environment, validates
//! them, and returns a [`Config`]. No I/O besides reading the variables, no ports
//! bound here (the `main` thread binds them later).
//!
//! Variable names follow Linkerd's proxy where one exists (DESIGN.md, "External
//! contract"). Tests pass a [`MapEnv`] instead of mutating the process environment.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::duration;
use crate::networks::Networks;
use crate::ports::PortSet;

mod h2;

pub use h2::{
    H2KeepAlive, H2ServerSettings, H2ServerVars, H2_HANDSHAKE_TIMEOUT, H2_LINGER_TIMEOUT,
    H2_PREMATURE_RESETS, H2_READ_BUDGET, INBOUND_H2, ORIG_PROTO_UPGRADE, OUTBOUND_H2,
};

/// Where configuration values come from: the process environment in production,
/// a map in tests.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// A fixed set of variables, for tests and embedding.
#[derive(Clone, Debug, Default)]
pub struct MapEnv(pub HashMap<String, String>);

impl MapEnv {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.insert(key.to_string(), value.into());
        self
    }
}

impl Env for MapEnv {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

pub const DESTINATION_SVC_ADDR: &str = "LINKERD2_PROXY_DESTINATION_SVC_ADDR";
pub const DESTINATION_SVC_NAME: &str = "LINKERD2_PROXY_DESTINATION_SVC_NAME";
pub const CONTROLLER_CONFIG: &str = "SPOKE_CONTROLLER_CONFIG";
pub const DESTINATION_CONTEXT: &str = "LINKERD2_PROXY_DESTINATION_CONTEXT";
pub const PROFILE_SUFFIXES: &str = "LINKERD2_PROXY_DESTINATION_PROFILE_SUFFIXES";
pub const GET_SUFFIXES: &str = "LINKERD2_PROXY_DESTINATION_GET_SUFFIXES";
pub const OUTBOUND_LISTEN_ADDR: &str = "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR";
pub const INBOUND_LISTEN_ADDR: &str = "LINKERD2_PROXY_INBOUND_LISTEN_ADDR";
pub const ADMIN_LISTEN_ADDR: &str = "LINKERD2_PROXY_ADMIN_LISTEN_ADDR";
pub const INBOUND_DETECT_TIMEOUT: &str = "LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT";
pub const OUTBOUND_DETECT_TIMEOUT: &str = "LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT";
pub const DETECT_QUIET_TIMEOUT: &str = "SPOKE_DETECT_QUIET_TIMEOUT";
pub const INBOUND_OPAQUE_PORTS: &str = "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION";
/// Inbound ports served only to clients that proved an identity over mTLS.
pub const INBOUND_REQUIRE_IDENTITY_PORTS: &str = "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY";
/// Inbound ports served only over TLS (mTLS terminated by spoke).
pub const INBOUND_REQUIRE_TLS_PORTS: &str = "LINKERD2_PROXY_INBOUND_PORTS_REQUIRE_TLS";
pub const OPAQUE_IDLE_TIMEOUT: &str = "SPOKE_OPAQUE_IDLE_TIMEOUT";
pub const OUTBOUND_CONNECT_TIMEOUT: &str = "LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT";
pub const INBOUND_CONNECT_TIMEOUT: &str = "LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT";
pub const INBOUND_IPS: &str = "LINKERD2_PROXY_INBOUND_IPS";
pub const OUTBOUND_CONNECT_KEEPALIVE: &str = "LINKERD2_PROXY_OUTBOUND_CONNECT_KEEPALIVE";
pub const BACKOFF_MIN: &str = "LINKERD2_PROXY_CONTROL_EXP_BACKOFF_MIN";
pub const BACKOFF_MAX: &str = "LINKERD2_PROXY_CONTROL_EXP_BACKOFF_MAX";
pub const BACKOFF_JITTER: &str = "LINKERD2_PROXY_CONTROL_EXP_BACKOFF_JITTER";
pub const DISCOVERY_IDLE_TIMEOUT: &str = "LINKERD2_PROXY_OUTBOUND_DISCOVERY_IDLE_TIMEOUT";
pub const SHUTDOWN_GRACE_PERIOD: &str = "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD";
pub const FAILFAST_TIMEOUT: &str = "LINKERD2_PROXY_OUTBOUND_HTTP_QUEUE_FAILFAST_TIMEOUT";
pub const POOL_IDLE_TIMEOUT: &str = "LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT";
/// Idle upstream connections kept per endpoint, outbound (`0`: none, every
/// request opens a connection of its own).
pub const OUTBOUND_MAX_IDLE: &str = "LINKERD2_PROXY_OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT";
/// The same towards the local application.
pub const INBOUND_MAX_IDLE: &str = "LINKERD2_PROXY_INBOUND_MAX_IDLE_CONNS_PER_ENDPOINT";
pub const LOG: &str = "LINKERD2_PROXY_LOG";
pub const HEAD_TIMEOUT: &str = "SPOKE_HTTP_HEAD_TIMEOUT";
pub const BODY_TIMEOUT: &str = "SPOKE_HTTP_REQUEST_BODY_TIMEOUT";
pub const IDLE_TIMEOUT: &str = "SPOKE_HTTP_IDLE_TIMEOUT";
pub const MAX_HEAD_BYTES: &str = "SPOKE_HTTP_MAX_HEAD_BYTES";
pub const MAX_HEADERS: &str = "SPOKE_HTTP_MAX_HEADERS";
pub const MAX_CONNECTIONS: &str = "SPOKE_MAX_CONNECTIONS";
pub const PROFILE_NETWORKS: &str = "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS";

/// Idle connections kept per endpoint unless configured (Linkerd allows 10,000).
pub const MAX_IDLE_DEFAULT: usize = 10_000;

/// A bad setting: names the variable and the value, so the operator can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}={:?}: {}", self.var, self.value, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// A list of DNS suffixes a name must fall under. Matching is label-aligned and
/// ignores a trailing dot, as Linkerd's `NameMatch` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Suffixes {
    /// `.`: every name.
    All,
    /// The listed suffixes, lowercased, without leading or trailing dots. Empty
    /// means no name matches.
    List(Vec<String>),
}

impl Suffixes {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for raw in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if raw == "." {
                return Ok(Suffixes::All);
            }
            let trimmed = raw.trim_matches('.').to_ascii_lowercase();
            let valid = !trimmed.is_empty()
                && trimmed.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !valid {
                return Err(format!("{raw:?} is not a DNS suffix"));
            }
            out.push(trimmed);
        }
        Ok(Suffixes::List(out))
    }

    /// Whether `name` (no port) falls under one of the suffixes.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        match self {
            Suffixes::All => true,
            Suffixes::List(list) => list.iter().any(|suffix| {
                name.len() >= suffix.len()
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && (name.len() == suffix.len()
                        || name.as_bytes()[name.len() - suffix.len() - 1] == b'.')
            }),
        }
    }
}

/// Discovery reconnect backoff settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffConfig {
    pub min: Duration,
    pub max: Duration,
    /// Fraction of the base delay added at random, in `[0, 100]`.
    pub jitter: f64,
}

/// Where the proxy learns its destinations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlPlane {
    /// A remote Destination service at `host:port`.
    Remote(String),
    /// Start the embedded controller, serving this file.
    Embedded(PathBuf),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub control_plane: ControlPlane,
    /// The destination service's identity: with a remote control plane, the
    /// connection to it is TLS and its server must prove this name (needs
    /// identity on, for the trust anchors). Unused with the embedded one.
    pub destination_name: Option<String>,
    pub context_token: String,
    pub profile_suffixes: Suffixes,
    pub get_suffixes: Suffixes,
    /// IP addresses in these networks get a `GetProfile` lookup when a
    /// request names them.
    pub profile_networks: Networks,
    pub outbound_listen: SocketAddr,
    pub inbound_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub connect_timeout: Duration,
    /// Connect timeout towards the local application (inbound).
    pub inbound_connect_timeout: Duration,
    /// When set, inbound connections are served only when their original
    /// destination's IP is one of these (the pod's own addresses).
    pub inbound_ips: Option<Vec<IpAddr>>,
    /// TCP keepalive on upstream connections: the idle time before the first
    /// probe and between probes. `None` (set to `0`) leaves keepalive off.
    pub connect_keepalive: Option<Duration>,
    pub backoff: BackoffConfig,
    pub discovery_idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// How long a request waits for a new destination's first discovery answer
    /// before it fails fast (Linkerd: 3s).
    pub failfast_timeout: Duration,
    /// How long an idle upstream connection stays in the pool.
    pub pool_idle_timeout: Duration,
    /// Idle upstream connections kept per endpoint: outbound, inbound.
    pub max_idle_per_endpoint: (usize, usize),
    /// HTTP/1.1 limits and client-side deadlines (DESIGN: "Limits").
    pub http: HttpLimits,
    /// How HTTP/2 clients are served: inbound, outbound (`config/h2.rs`).
    pub h2_inbound: H2ServerSettings,
    pub h2_outbound: H2ServerSettings,
    /// Outbound HTTP/1 to endpoints that hint H2 goes upgraded
    /// (`SPOKE_OUTBOUND_ORIG_PROTO_UPGRADE`, on by default).
    pub orig_proto_upgrade: bool,
    /// Protocol detection and opaque TCP.
    pub detect: DetectConfig,
    /// The workload's identity and the embedded controller's CA
    /// (`identity::config`).
    pub identity: crate::identity::config::IdentitySettings,
    pub log_filter: String,
}

/// How connections are classified, and how opaque ones are carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectConfig {
    /// How long detection waits for a first message that has begun, per
    /// direction (Linkerd: 10s each).
    pub inbound_timeout: Duration,
    pub outbound_timeout: Duration,
    /// A redirected client silent this long gets its target connected, and
    /// whichever side speaks first decides (server-speaks-first protocols).
    pub quiet_timeout: Duration,
    /// Inbound ports carried as opaque TCP without reading a byte.
    pub inbound_opaque_ports: PortSet,
    /// Inbound ports refused to a client without a verified identity.
    pub inbound_require_identity: PortSet,
    /// Inbound ports refused to a client that did not speak mTLS to spoke.
    pub inbound_require_tls: PortSet,
    /// An opaque connection with no byte either way for this long is closed
    /// (`None`: never).
    pub opaque_idle_timeout: Option<Duration>,
}

/// Limits on what a client may send and how slowly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request head must arrive within this time of its first byte (slowloris).
    pub head_timeout: Duration,
    /// A request body must arrive within this time of its head.
    pub body_timeout: Duration,
    /// A keep-alive client connection with no request is closed after this.
    pub idle_timeout: Duration,
    /// Largest request head accepted (431 beyond).
    pub max_head_bytes: usize,
    /// Most header lines accepted (431 beyond).
    pub max_headers: usize,
    /// Open client connections; beyond it, accepting pauses.
    pub max_connections: usize,
}

impl Config {
    /// Reads and validates every setting; the first bad one is returned as an
    /// error naming the variable and the value.
    pub fn from_env(env: &dyn Env) -> Result<Config, ConfigError> {
        let control_plane = match nonempty(env, DESTINATION_SVC_ADDR) {
            Some(addr) => {
                validate_host_port(&addr).map_err(|reason| ConfigError {
                    var: DESTINATION_SVC_ADDR,
                    value: addr.clone(),
                    reason,
                })?;
                ControlPlane::Remote(addr)
            }
            None => ControlPlane::Embedded(PathBuf::from(
                nonempty(env, CONTROLLER_CONFIG).unwrap_or_else(|| "examples/mesh.yaml".into()),
            )),
        };
        let backoff = BackoffConfig {
            min: dur(env, BACKOFF_MIN, "100ms")?,
            max: dur(env, BACKOFF_MAX, "60s")?,
            jitter: jitter(env)?,
        };
        if backoff.min > backoff.max {
            return Err(ConfigError {
                var: BACKOFF_MIN,
                value: duration::format(backoff.min),
                reason: format!(
                    "larger than {BACKOFF_MAX} ({})",
                    duration::format(backoff.max)
                ),
            });
        }
        let identity = crate::identity::config::from_env(
            env,
            matches!(control_plane, ControlPlane::Embedded(_)),
        )?;
        let http = HttpLimits {
            head_timeout: positive(env, HEAD_TIMEOUT, "10s")?,
            body_timeout: positive(env, BODY_TIMEOUT, "60s")?,
            idle_timeout: positive(env, IDLE_TIMEOUT, "60s")?,
            max_head_bytes: count(env, MAX_HEAD_BYTES, 64 * 1024, 1024..=1024 * 1024)?,
            max_headers: count(env, MAX_HEADERS, 100, 1..=1000)?,
            max_connections: count(env, MAX_CONNECTIONS, 10_000, 1..=1_000_000)?,
        };
        let destination_name = nonempty(env, DESTINATION_SVC_NAME);
        if let Some(n) = &destination_name {
            crate::identity::config::check_dns_name(n).map_err(|reason| ConfigError {
                var: DESTINATION_SVC_NAME,
                value: n.clone(),
                reason,
            })?;
            if matches!(control_plane, ControlPlane::Remote(_)) && identity.proxy.is_none() {
                return Err(ConfigError {
                    var: DESTINATION_SVC_NAME,
                    value: n.clone(),
                    reason: "TLS to the destination service needs identity \
                             (LINKERD2_PROXY_IDENTITY_LOCAL_NAME and _TRUST_ANCHORS)"
                        .into(),
                });
            }
        }
        Ok(Config {
            identity,
            control_plane,
            destination_name: destination_name.map(|n| n.to_ascii_lowercase()),
            context_token: env.get(DESTINATION_CONTEXT).unwrap_or_default(),
            profile_suffixes: suffixes(env, PROFILE_SUFFIXES)?,
            profile_networks: {
                let value = env.get(PROFILE_NETWORKS).unwrap_or_default();
                Networks::parse(&value).map_err(|reason| ConfigError {
                    var: PROFILE_NETWORKS,
                    value,
                    reason,
                })?
            },
            get_suffixes: suffixes(env, GET_SUFFIXES)?,
            outbound_listen: addr(env, OUTBOUND_LISTEN_ADDR, "127.0.0.1:4140")?,
            inbound_listen: addr(env, INBOUND_LISTEN_ADDR, "0.0.0.0:4143")?,
            admin_listen: addr(env, ADMIN_LISTEN_ADDR, "127.0.0.1:4191")?,
            connect_timeout: positive(env, OUTBOUND_CONNECT_TIMEOUT, "1s")?,
            inbound_connect_timeout: positive(env, INBOUND_CONNECT_TIMEOUT, "300ms")?,
            inbound_ips: ips(env, INBOUND_IPS)?,
            connect_keepalive: keepalive(env, OUTBOUND_CONNECT_KEEPALIVE, "10s")?,
            backoff,
            discovery_idle_timeout: positive(env, DISCOVERY_IDLE_TIMEOUT, "5s")?,
            shutdown_grace: dur(env, SHUTDOWN_GRACE_PERIOD, "2m")?,
            failfast_timeout: positive(env, FAILFAST_TIMEOUT, "3s")?,
            pool_idle_timeout: dur(env, POOL_IDLE_TIMEOUT, "3s")?,
            max_idle_per_endpoint: (
                count(
                    env,
                    OUTBOUND_MAX_IDLE,
                    MAX_IDLE_DEFAULT,
                    0..=MAX_IDLE_DEFAULT,
                )?,
                count(
                    env,
                    INBOUND_MAX_IDLE,
                    MAX_IDLE_DEFAULT,
                    0..=MAX_IDLE_DEFAULT,
                )?,
            ),
            http,
            h2_inbound: h2::server_settings(env, &INBOUND_H2, http.idle_timeout)?,
            h2_outbound: h2::server_settings(env, &OUTBOUND_H2, http.idle_timeout)?,
            orig_proto_upgrade: h2::orig_proto_upgrade(env)?,
            detect: DetectConfig {
                inbound_timeout: positive(env, INBOUND_DETECT_TIMEOUT, "10s")?,
                outbound_timeout: positive(env, OUTBOUND_DETECT_TIMEOUT, "10s")?,
                quiet_timeout: positive(env, DETECT_QUIET_TIMEOUT, "300ms")?,
                inbound_opaque_ports: ports(env, INBOUND_OPAQUE_PORTS)?,
                inbound_require_identity: ports(env, INBOUND_REQUIRE_IDENTITY_PORTS)?,
                inbound_require_tls: ports(env, INBOUND_REQUIRE_TLS_PORTS)?,
                opaque_idle_timeout: Some(dur(env, OPAQUE_IDLE_TIMEOUT, "1h")?)
                    .filter(|d| !d.is_zero()),
            },
            log_filter: nonempty(env, LOG)
                .or_else(|| nonempty(env, "RUST_LOG"))
                .unwrap_or_else(|| "warn,spoke=info".into()),
        })
    }
}

fn nonempty(env: &dyn Env, var: &str) -> Option<String> {
    env.get(var)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

fn dur(env: &dyn Env, var: &'static str, default: &str) -> Result<Duration, ConfigError> {
    let value = nonempty(env, var).unwrap_or_else(|| default.to_string());
    duration::parse(&value).map_err(|e| ConfigError {
        var,
        value,
        reason: e.to_string(),
    })
}

/// A port list variable (empty when unset).
fn ports(env: &dyn Env, var: &'static str) -> Result<PortSet, ConfigError> {
    let value = env.get(var).unwrap_or_default();
    PortSet::parse(&value).map_err(|reason| ConfigError { var, value, reason })
}

fn positive(env: &dyn Env, var: &'static str, default: &str) -> Result<Duration, ConfigError> {
    let d = dur(env, var, default)?;
    if d.is_zero() {
        return Err(ConfigError {
            var,
            value: env.get(var).unwrap_or_default(),
            reason: "must be greater than zero".into(),
        });
    }
    Ok(d)
}

/// `0` turns keepalive off; otherwise whole seconds from 1s to 32767s, the
/// range Linux accepts for the probe idle time and interval.
fn keepalive(
    env: &dyn Env,
    var: &'static str,
    default: &str,
) -> Result<Option<Duration>, ConfigError> {
    let d = dur(env, var, default)?;
    if d.is_zero() {
        return Ok(None);
    }
    if d < Duration::from_secs(1) || d > Duration::from_secs(32_767) || d.subsec_nanos() != 0 {
        return Err(ConfigError {
            var,
            value: env.get(var).unwrap_or_default(),
            reason: "must be 0 (off) or whole seconds from 1s to 32767s".into(),
        });
    }
    Ok(Some(d))
}

fn count(
    env: &dyn Env,
    var: &'static str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    let Some(value) = nonempty(env, var) else {
        return Ok(default);
    };
    match value.parse::<usize>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ConfigError {
            var,
            value,
            reason: format!(
                "expected a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        }),
    }
}

fn jitter(env: &dyn Env) -> Result<f64, ConfigError> {
    let value = nonempty(env, BACKOFF_JITTER).unwrap_or_else(|| "0.1".into());
    match value.parse::<f64>() {
        Ok(j) if j.is_finite() && (0.0..=100.0).contains(&j) => Ok(j),
        _ => Err(ConfigError {
            var: BACKOFF_JITTER,
            value,
            reason: "expected a number between 0 and 100".into(),
        }),
    }
}

fn addr(env: &dyn Env, var: &'static str, default: &str) -> Result<SocketAddr, ConfigError> {
    let value = nonempty(env, var).unwrap_or_else(|| default.to_string());
    value.parse().map_err(|_| ConfigError {
        var,
        value,
        reason: "expected ip:port, e.g. 127.0.0.1:4140 or [::1]:4140".into(),
    })
}

/// A comma-separated list of IP addresses; unset or empty means no list.
fn ips(env: &dyn Env, var: &'static str) -> Result<Option<Vec<IpAddr>>, ConfigError> {
    let Some(value) = nonempty(env, var) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let ip = item.parse::<IpAddr>().map_err(|_| ConfigError {
            var,
            value: value.clone(),
            reason: format!("{item:?} is not an IP address (expected e.g. 10.1.2.3,fd00::3)"),
        })?;
        out.push(ip);
    }
    Ok((!out.is_empty()).then_some(out))
}

fn suffixes(env: &dyn Env, var: &'static str) -> Result<Suffixes, ConfigError> {
    // Unset means Linkerd's default; set-but-empty means "none".
    let value = env.get(var).unwrap_or_else(|| "svc.cluster.local.".into());
    Suffixes::parse(&value).map_err(|reason| ConfigError { var, value, reason })
}

/// Whether a `host:port` names this host's loopback (`127.0.0.0/8`, `::1`,
/// `localhost`): Linkerd reaches such a control plane in plaintext when no
/// name is configured.
pub fn is_loopback(addr: &str) -> bool {
    let Some((host, _)) = addr.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub(crate) fn validate_host_port(s: &str) -> Result<(), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port".to_string())?;
    if host.is_empty() {
        return Err("missing host".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("bad port {port:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connections_per_endpoint_can_be_limited_or_turned_off() {
        let c = Config::from_env(
            &MapEnv::new()
                .set(OUTBOUND_MAX_IDLE, "0")
                .set(INBOUND_MAX_IDLE, "7"),
        )
        .unwrap();
        assert_eq!(c.max_idle_per_endpoint, (0, 7));
        let err = Config::from_env(&MapEnv::new().set(OUTBOUND_MAX_IDLE, "-1")).unwrap_err();
        assert_eq!(err.var, OUTBOUND_MAX_IDLE);
        let err = Config::from_env(&MapEnv::new().set(INBOUND_MAX_IDLE, "10001")).unwrap_err();
        assert_eq!(err.var, INBOUND_MAX_IDLE);
    }

    #[test]
    fn defaults() {
        let c = Config::from_env(&MapEnv::new()).unwrap();
        assert_eq!(
            c.control_plane,
            ControlPlane::Embedded(PathBuf::from("examples/mesh.yaml"))
        );
        assert_eq!(c.outbound_listen, "127.0.0.1:4140".parse().unwrap());
        assert_eq!(c.inbound_listen, "0.0.0.0:4143".parse().unwrap());
        assert_eq!(c.admin_listen, "127.0.0.1:4191".parse().unwrap());
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.inbound_connect_timeout, Duration::from_millis(300));
        assert_eq!(c.inbound_ips, None);
        assert_eq!(c.connect_keepalive, Some(Duration::from_secs(10)));
        assert_eq!(c.backoff.min, Duration::from_millis(100));
        assert_eq!(c.backoff.max, Duration::from_secs(60));
        assert_eq!(c.backoff.jitter, 0.1);
        assert_eq!(c.discovery_idle_timeout, Duration::from_secs(5));
        assert_eq!(c.shutdown_grace, Duration::from_secs(120));
        assert_eq!(c.failfast_timeout, Duration::from_secs(3));
        assert_eq!(c.log_filter, "warn,spoke=info");
        assert_eq!(c.http.head_timeout, Duration::from_secs(10));
        assert_eq!(c.http.max_head_bytes, 65536);
        assert_eq!(c.http.max_headers, 100);
        assert_eq!(c.http.max_connections, 10_000);
        assert_eq!(c.max_idle_per_endpoint, (10_000, 10_000));
        assert_eq!(c.detect.inbound_timeout, Duration::from_secs(10));
        assert_eq!(c.detect.outbound_timeout, Duration::from_secs(10));
        assert_eq!(c.detect.quiet_timeout, Duration::from_millis(300));
        assert!(c.detect.inbound_opaque_ports.is_empty());
        assert_eq!(
            c.detect.opaque_idle_timeout,
            Some(Duration::from_secs(3600))
        );
        assert!(c
            .profile_suffixes
            .matches("books.default.svc.cluster.local"));
        assert!(!c.get_suffixes.matches("example.com"));
    }

    #[test]
    fn connect_keepalive_takes_whole_seconds_or_zero() {
        let ka = |v: &str| {
            Config::from_env(&MapEnv::new().set(OUTBOUND_CONNECT_KEEPALIVE, v))
                .map(|c| c.connect_keepalive)
        };
        assert_eq!(ka("10000ms"), Ok(Some(Duration::from_secs(10))));
        assert_eq!(ka("2m"), Ok(Some(Duration::from_secs(120))));
        assert_eq!(ka("0"), Ok(None));
        for bad in ["500ms", "1.5s", "10h", "soon"] {
            let err = ka(bad).unwrap_err();
            assert_eq!(err.var, OUTBOUND_CONNECT_KEEPALIVE, "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn bad_values_name_the_variable_and_value() {
        let err =
            Config::from_env(&MapEnv::new().set(OUTBOUND_CONNECT_TIMEOUT, "soon")).unwrap_err();
        assert_eq!(err.var, OUTBOUND_CONNECT_TIMEOUT);
        assert!(err.to_string().contains("\"soon\""), "{err}");
        let err = Config::from_env(&MapEnv::new().set(ADMIN_LISTEN_ADDR, "localhost")).unwrap_err();
        assert_eq!(err.var, ADMIN_LISTEN_ADDR);
        let err = Config::from_env(&MapEnv::new().set(BACKOFF_JITTER, "-1")).unwrap_err();
        assert_eq!(err.var, BACKOFF_JITTER);
        let err = Config::from_env(&MapEnv::new().set(DESTINATION_SVC_ADDR, "nohost")).unwrap_err();
        assert_eq!(err.var, DESTINATION_SVC_ADDR);
        let err = Config::from_env(&MapEnv::new().set(PROFILE_SUFFIXES, "a..b")).unwrap_err();
        assert_eq!(err.var, PROFILE_SUFFIXES);
        let err = Config::from_env(&MapEnv::new().set(BACKOFF_MIN, "2s").set(BACKOFF_MAX, "1s"))
            .unwrap_err();
        assert_eq!(err.var, BACKOFF_MIN);
        let err = Config::from_env(&MapEnv::new().set(MAX_HEADERS, "lots")).unwrap_err();
        assert_eq!(err.var, MAX_HEADERS);
        let err = Config::from_env(&MapEnv::new().set(MAX_CONNECTIONS, "0")).unwrap_err();
        assert_eq!(err.var, MAX_CONNECTIONS);
        let err = Config::from_env(&MapEnv::new().set(DISCOVERY_IDLE_TIMEOUT, "0s")).unwrap_err();
        assert_eq!(err.var, DISCOVERY_IDLE_TIMEOUT);
        let env = MapEnv::new().set(PROFILE_NETWORKS, "10.0.0.0/8,10.0.0.0/99");
        let err = Config::from_env(&env).unwrap_err();
        assert_eq!(err.var, PROFILE_NETWORKS);
        assert!(err.to_string().contains("10.0.0.0/99"), "{err}");
        let env = MapEnv::new().set(PROFILE_NETWORKS, "10.0.0.0/8 fd00::/8");
        let c = Config::from_env(&env).expect("valid networks");
        assert!(c.profile_networks.contains("10.9.9.9".parse().unwrap()));
    }

    #[test]
    fn detection_settings() {
        let env = MapEnv::new()
            .set(INBOUND_OPAQUE_PORTS, "25,3306,4000-4010")
            .set(DETECT_QUIET_TIMEOUT, "50ms")
            .set(OPAQUE_IDLE_TIMEOUT, "0");
        let c = Config::from_env(&env).expect("valid");
        assert!(c.detect.inbound_opaque_ports.contains(4005));
        assert_eq!(c.detect.quiet_timeout, Duration::from_millis(50));
        assert_eq!(c.detect.opaque_idle_timeout, None);
        let err =
            Config::from_env(&MapEnv::new().set(INBOUND_OPAQUE_PORTS, "25,smtp")).unwrap_err();
        assert_eq!(err.var, INBOUND_OPAQUE_PORTS);
        assert!(err.to_string().contains("smtp"), "{err}");
        let env = MapEnv::new()
            .set(INBOUND_REQUIRE_IDENTITY_PORTS, "8080")
            .set(INBOUND_REQUIRE_TLS_PORTS, "9000-9002");
        let c = Config::from_env(&env).expect("valid");
        assert!(c.detect.inbound_require_identity.contains(8080));
        assert!(c.detect.inbound_require_tls.contains(9001));
        assert!(!c.detect.inbound_require_tls.contains(8080));
        for var in [INBOUND_REQUIRE_IDENTITY_PORTS, INBOUND_REQUIRE_TLS_PORTS] {
            let err = Config::from_env(&MapEnv::new().set(var, "70000")).unwrap_err();
            assert_eq!(err.var, var);
        }
        for var in [
            INBOUND_DETECT_TIMEOUT,
            OUTBOUND_DETECT_TIMEOUT,
            DETECT_QUIET_TIMEOUT,
        ] {
            let err = Config::from_env(&MapEnv::new().set(var, "0s")).unwrap_err();
            assert_eq!(err.var, var);
        }
    }

    #[test]
    fn inbound_ips_are_a_list_of_addresses() {
        let ips =
            |v: &str| Config::from_env(&MapEnv::new().set(INBOUND_IPS, v)).map(|c| c.inbound_ips);
        let want: Vec<IpAddr> = vec!["10.1.2.3".parse().unwrap(), "fd00::3".parse().unwrap()];
        assert_eq!(ips("10.1.2.3,fd00::3"), Ok(Some(want.clone())));
        assert_eq!(ips(" 10.1.2.3 , fd00::3 ,"), Ok(Some(want)));
        assert_eq!(ips(""), Ok(None));
        assert_eq!(ips(" , "), Ok(None));
        for bad in ["10.1.2", "10.1.2.3:80", "10.0.0.0/8", "pod"] {
            let err = ips(&format!("10.9.9.9,{bad}")).unwrap_err();
            assert_eq!(err.var, INBOUND_IPS, "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
        let err = Config::from_env(&MapEnv::new().set(INBOUND_CONNECT_TIMEOUT, "0ms")).unwrap_err();
        assert_eq!(err.var, INBOUND_CONNECT_TIMEOUT);
        let c = Config::from_env(&MapEnv::new().set(INBOUND_CONNECT_TIMEOUT, "50ms")).unwrap();
        assert_eq!(c.inbound_connect_timeout, Duration::from_millis(50));
        assert_eq!(
            c.connect_timeout,
            Duration::from_secs(1),
            "outbound keeps its own"
        );
    }

    #[test]
    fn remote_control_plane() {
        let c = Config::from_env(&MapEnv::new().set(
            DESTINATION_SVC_ADDR,
            "linkerd-dst-headless.linkerd.svc.cluster.local.:8086",
        ))
        .unwrap();
        assert_eq!(
            c.control_plane,
            ControlPlane::Remote("linkerd-dst-headless.linkerd.svc.cluster.local.:8086".into())
        );
    }

    #[test]
    fn a_destination_name_means_tls_and_needs_identity() {
        let remote = MapEnv::new().set(DESTINATION_SVC_ADDR, "linkerd-dst:8086");
        assert_eq!(Config::from_env(&remote).unwrap().destination_name, None);
        let named = remote.clone().set(
            DESTINATION_SVC_NAME,
            "Linkerd-Destination.linkerd.serviceaccount.identity.linkerd.cluster.local",
        );
        let e = Config::from_env(&named).unwrap_err();
        assert_eq!(e.var, DESTINATION_SVC_NAME);
        assert!(e.reason.contains("needs identity"), "{}", e.reason);
        use crate::identity::config as id;
        let anchors = crate::identity::issuer::Issuer::generate()
            .unwrap()
            .cert_pem();
        let with_identity = named
            .set(
                id::LOCAL_NAME,
                "web.default.serviceaccount.identity.linkerd.cluster.local",
            )
            .set(id::TRUST_ANCHORS, anchors)
            .set(id::TOKEN_FILE, "/var/run/token")
            .set(id::SVC_ADDR, "linkerd-identity:8080");
        assert_eq!(
            Config::from_env(&with_identity)
                .unwrap()
                .destination_name
                .as_deref(),
            Some("linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local")
        );
        let bad = remote.set(DESTINATION_SVC_NAME, "not a name");
        assert_eq!(
            Config::from_env(&bad).unwrap_err().var,
            DESTINATION_SVC_NAME
        );
    }

    #[test]
    fn loopback_addresses_are_told() {
        assert!(is_loopback("127.0.0.1:8086"));
        assert!(is_loopback("127.3.2.1:8086"));
        assert!(is_loopback("[::1]:8086"));
        assert!(is_loopback("localhost:8086"));
        assert!(!is_loopback("10.0.0.1:8086"));
        assert!(!is_loopback(
            "linkerd-dst-headless.linkerd.svc.cluster.local.:8086"
        ));
        assert!(!is_loopback("no-port"));
    }

    #[test]
    fn suffix_matching_is_label_aligned() {
        let s = Suffixes::parse("svc.cluster.local.").unwrap();
        assert!(s.matches("books.default.svc.cluster.local"));
        assert!(s.matches("books.default.svc.cluster.local."));
        assert!(s.matches("BOOKS.default.SVC.cluster.local"));
        assert!(s.matches("svc.cluster.local"));
        assert!(!s.matches("books.default.xsvc.cluster.local"));
        assert!(!s.matches("example.com"));
        assert_eq!(Suffixes::parse(".").unwrap(), Suffixes::All);
        assert!(Suffixes::parse(".").unwrap().matches("example.com"));
        let none = Suffixes::parse("").unwrap();
        assert!(!none.matches("books.default.svc.cluster.local"));
        let two = Suffixes::parse("svc.cluster.local., example.com").unwrap();
        assert!(two.matches("api.example.com"));
    }

    #[test]
    fn empty_suffix_variable_means_none() {
        let c = Config::from_env(&MapEnv::new().set(PROFILE_SUFFIXES, "")).unwrap();
        assert_eq!(c.profile_suffixes, Suffixes::List(vec![]));
    }
}
