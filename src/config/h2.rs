//! HTTP/2 server settings per direction (read on the `main` thread with the
//! rest of the configuration; the event loop only reads the result): what
//! spoke tells its HTTP/2 clients in SETTINGS, the limits h2 enforces for
//! it, and the deadlines spoke keeps itself (`proxy/h2/server.rs`).
//!
//! Names are Linkerd's `LINKERD2_PROXY_{INBOUND,OUTBOUND}_SERVER_HTTP2_*`
//! where Linkerd has the setting (linkerd2-proxy `linkerd/app/src/env/http2.rs`);
//! the rest are `SPOKE_HTTP2_*`, shared by both directions. Two deliberate
//! differences from Linkerd: each window and the keepalive interval stand
//! on their own (Linkerd ignores one window without the other, and keepalive
//! without both interval and timeout), and the limits Linkerd leaves to h2's
//! defaults (no stream limit, 16 MiB header lists) have spoke's own.

use std::time::Duration;

use super::{count, dur, nonempty, positive, ConfigError, Env};

/// The variables of one direction.
pub struct H2ServerVars {
    pub max_concurrent_streams: &'static str,
    pub max_pending_accept_reset_streams: &'static str,
    pub initial_stream_window_size: &'static str,
    pub initial_connection_window_size: &'static str,
    pub max_header_list_size: &'static str,
    pub max_frame_size: &'static str,
    pub keep_alive_interval: &'static str,
    pub keep_alive_timeout: &'static str,
}

macro_rules! h2_vars {
    ($base:literal) => {
        H2ServerVars {
            max_concurrent_streams: concat!($base, "_MAX_CONCURRENT_STREAMS"),
            max_pending_accept_reset_streams: concat!($base, "_MAX_PENDING_ACCEPT_RESET_STREAMS"),
            initial_stream_window_size: concat!($base, "_INITIAL_STREAM_WINDOW_SIZE"),
            initial_connection_window_size: concat!($base, "_INITIAL_CONNECTION_WINDOW_SIZE"),
            max_header_list_size: concat!($base, "_MAX_HEADER_LIST_SIZE"),
            max_frame_size: concat!($base, "_MAX_FRAME_SIZE"),
            keep_alive_interval: concat!($base, "_KEEP_ALIVE_INTERVAL"),
            keep_alive_timeout: concat!($base, "_KEEP_ALIVE_TIMEOUT"),
        }
    };
}

pub const INBOUND_H2: H2ServerVars = h2_vars!("LINKERD2_PROXY_INBOUND_SERVER_HTTP2");
pub const OUTBOUND_H2: H2ServerVars = h2_vars!("LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2");
/// A client must finish the HTTP/2 handshake (its SETTINGS, proved by the
/// answer to spoke's first PING or by its first stream) within this.
pub const H2_HANDSHAKE_TIMEOUT: &str = "SPOKE_HTTP2_HANDSHAKE_TIMEOUT";
/// Streams the client reset after spoke accepted them, before a connection
/// may be closed for it (Envoy's rule: at least this many, and at least
/// half of the connection's streams). `0` turns the check off.
pub const H2_PREMATURE_RESETS: &str = "SPOKE_HTTP2_PREMATURE_RESET_MIN";
/// How long a connection that ended with a GOAWAY keeps reading (and
/// discarding) before its socket closes.
pub const H2_LINGER_TIMEOUT: &str = "SPOKE_HTTP2_LINGER_TIMEOUT";

/// Bytes an HTTP/2 connection reads per poll before it lets the loop serve
/// others (it wakes itself to read on); default 256 KiB.
pub const H2_READ_BUDGET: &str = "SPOKE_HTTP2_READ_BUDGET";

/// The largest flow-control window HTTP/2 allows (2^31-1).
pub const MAX_WINDOW: usize = (1 << 31) - 1;

/// Keepalive PINGs to an HTTP/2 client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2KeepAlive {
    /// A PING goes out this long after the last one was answered.
    pub interval: Duration,
    /// No answer within this: the connection is closed.
    pub timeout: Duration,
}

/// How spoke serves HTTP/2 to the clients of one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct H2ServerSettings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS (Linkerd: none; spoke: 100).
    pub max_concurrent_streams: u32,
    /// Streams reset before spoke accepted them, kept at once; beyond it,
    /// GOAWAY ENHANCE_YOUR_CALM (rapid reset; h2's default 20).
    pub max_pending_accept_reset_streams: usize,
    /// SETTINGS_INITIAL_WINDOW_SIZE (Linkerd: 65,535).
    pub initial_stream_window: u32,
    /// The connection's receive window (Linkerd: 1 MiB).
    pub initial_connection_window: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE, decoded (spoke: 64 KiB, as HTTP/1).
    pub max_header_list_size: u32,
    /// SETTINGS_MAX_FRAME_SIZE (protocol default 16,384).
    pub max_frame_size: u32,
    /// `None`: no keepalive PINGs (Linkerd's default).
    pub keep_alive: Option<H2KeepAlive>,
    pub handshake_timeout: Duration,
    /// A connection with no stream open this long is closed with GOAWAY
    /// (the HTTP idle timeout, `SPOKE_HTTP_IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
    /// See [`H2_PREMATURE_RESETS`] (`0`: off).
    pub premature_reset_min: u32,
    pub linger_timeout: Duration,
    /// Bytes one HTTP/2 connection (client or upstream) reads from its
    /// socket per poll of its task ([`H2_READ_BUDGET`]).
    pub read_budget: usize,
}

/// Reads the settings of one direction; `idle_timeout` is the HTTP one.
pub fn server_settings(
    env: &dyn Env,
    vars: &H2ServerVars,
    idle_timeout: Duration,
) -> Result<H2ServerSettings, ConfigError> {
    let u32_in = |var, default, lo, hi| count(env, var, default, lo..=hi).map(|n| n as u32);
    let interval = dur(env, vars.keep_alive_interval, "0")?;
    let timeout = positive(env, vars.keep_alive_timeout, "20s")?;
    Ok(H2ServerSettings {
        max_concurrent_streams: u32_in(vars.max_concurrent_streams, 100, 1, 1_000_000)?,
        max_pending_accept_reset_streams: count(
            env,
            vars.max_pending_accept_reset_streams,
            20,
            1..=100_000,
        )?,
        initial_stream_window: u32_in(vars.initial_stream_window_size, 65_535, 1, MAX_WINDOW)?,
        initial_connection_window: u32_in(
            vars.initial_connection_window_size,
            1 << 20,
            65_535,
            MAX_WINDOW,
        )?,
        max_header_list_size: u32_in(vars.max_header_list_size, 64 * 1024, 1024, 16 << 20)?,
        max_frame_size: u32_in(vars.max_frame_size, 16_384, 16_384, (1 << 24) - 1)?,
        keep_alive: (!interval.is_zero()).then_some(H2KeepAlive { interval, timeout }),
        handshake_timeout: positive(env, H2_HANDSHAKE_TIMEOUT, "10s")?,
        idle_timeout,
        premature_reset_min: count(env, H2_PREMATURE_RESETS, 100, 0..=1_000_000)? as u32,
        linger_timeout: linger(env)?,
        read_budget: count(env, H2_READ_BUDGET, 256 * 1024, 1..=64 << 20)?,
    })
}

/// `off`: outbound HTTP/1 requests to endpoints that hint H2 go as HTTP/1
/// (over mTLS, on pooled connections) instead of upgraded to HTTP/2
/// (Linkerd's `l5d-orig-proto`, the default).
pub const ORIG_PROTO_UPGRADE: &str = "SPOKE_OUTBOUND_ORIG_PROTO_UPGRADE";

/// Whether outbound HTTP/1 is upgraded for H2-hinted endpoints
/// ([`ORIG_PROTO_UPGRADE`]: `on`, the default, or `off`).
pub fn orig_proto_upgrade(env: &dyn Env) -> Result<bool, ConfigError> {
    match nonempty(env, ORIG_PROTO_UPGRADE).as_deref() {
        None | Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(ConfigError {
            var: ORIG_PROTO_UPGRADE,
            value: other.to_owned(),
            reason: "must be on or off".into(),
        }),
    }
}

/// At most 10s: a lingering connection holds a descriptor.
fn linger(env: &dyn Env) -> Result<Duration, ConfigError> {
    let d = dur(env, H2_LINGER_TIMEOUT, "1s")?;
    if d > Duration::from_secs(10) {
        return Err(ConfigError {
            var: H2_LINGER_TIMEOUT,
            value: nonempty(env, H2_LINGER_TIMEOUT).unwrap_or_default(),
            reason: "must be at most 10s".into(),
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::super::MapEnv;
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn the_upgrade_is_on_unless_turned_off() {
        assert!(orig_proto_upgrade(&MapEnv::new()).unwrap());
        let env = |v: &str| MapEnv::new().set(ORIG_PROTO_UPGRADE, v);
        assert!(orig_proto_upgrade(&env("on")).unwrap());
        assert!(!orig_proto_upgrade(&env("off")).unwrap());
        let e = orig_proto_upgrade(&env("no")).unwrap_err();
        assert_eq!(e.var, ORIG_PROTO_UPGRADE);
    }

    #[test]
    fn defaults() {
        let s = server_settings(&MapEnv::new(), &INBOUND_H2, IDLE).unwrap();
        assert_eq!(s.max_concurrent_streams, 100);
        assert_eq!(s.max_pending_accept_reset_streams, 20);
        assert_eq!(s.initial_stream_window, 65_535);
        assert_eq!(s.initial_connection_window, 1 << 20);
        assert_eq!(s.max_header_list_size, 65_536);
        assert_eq!(s.max_frame_size, 16_384);
        assert_eq!(s.keep_alive, None);
        assert_eq!(s.handshake_timeout, Duration::from_secs(10));
        assert_eq!(s.idle_timeout, IDLE);
        assert_eq!(s.premature_reset_min, 100);
        assert_eq!(s.linger_timeout, Duration::from_secs(1));
    }

    #[test]
    fn each_direction_has_its_own_linkerd_names() {
        let env = MapEnv::new()
            .set(
                "LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_CONCURRENT_STREAMS",
                "7",
            )
            .set(
                "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_INITIAL_STREAM_WINDOW_SIZE",
                "1048576",
            )
            .set(
                "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL",
                "10s",
            )
            .set(
                "LINKERD2_PROXY_OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT",
                "3s",
            );
        let inb = server_settings(&env, &INBOUND_H2, IDLE).unwrap();
        let out = server_settings(&env, &OUTBOUND_H2, IDLE).unwrap();
        assert_eq!(inb.max_concurrent_streams, 7);
        assert_eq!(out.max_concurrent_streams, 100);
        assert_eq!(inb.initial_stream_window, 65_535);
        assert_eq!(out.initial_stream_window, 1 << 20);
        assert_eq!(inb.keep_alive, None);
        assert_eq!(
            out.keep_alive,
            Some(H2KeepAlive {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(3)
            })
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: &[(&str, &str)] = &[
            (INBOUND_H2.max_concurrent_streams, "0"),
            (INBOUND_H2.max_concurrent_streams, "many"),
            (INBOUND_H2.max_pending_accept_reset_streams, "0"),
            (INBOUND_H2.initial_stream_window_size, "2147483648"),
            (INBOUND_H2.initial_connection_window_size, "1000"),
            (INBOUND_H2.max_header_list_size, "10"),
            (INBOUND_H2.max_frame_size, "16383"),
            (INBOUND_H2.max_frame_size, "16777216"),
            (INBOUND_H2.keep_alive_interval, "soon"),
            (INBOUND_H2.keep_alive_timeout, "0s"),
            (H2_HANDSHAKE_TIMEOUT, "0"),
            (H2_PREMATURE_RESETS, "-1"),
            (H2_LINGER_TIMEOUT, "11s"),
        ];
        for (var, value) in cases {
            let err =
                server_settings(&MapEnv::new().set(var, *value), &INBOUND_H2, IDLE).unwrap_err();
            assert_eq!(err.var, *var, "{value}");
            assert!(err.to_string().contains(value), "{err}");
        }
        // The largest window HTTP/2 allows is accepted.
        let env = MapEnv::new().set(INBOUND_H2.initial_connection_window_size, "2147483647");
        let s = server_settings(&env, &INBOUND_H2, IDLE).unwrap();
        assert_eq!(s.initial_connection_window, (1 << 31) - 1);
    }
}
