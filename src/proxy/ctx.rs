//! The event loop's shared state as a session sees it (event-loop thread):
//! who owns each socket token ([`Owner`]), the loop's settings
//! ([`LoopConfig`]), the parts of the loop a session may touch while it runs
//! ([`Ctx`], with [`Ctx::dial`] for new upstream connections), the metric
//! handles the loop keeps for sessions ([`TcpPair`], [`DetectMetrics`]),
//! the TLS state a connection's metrics carry ([`connect_label`],
//! [`accept_label`]), and what a session tells the loop after a step
//! ([`Step`]). Sessions (`conn`, `exchange`) and the loop (`event_loop`) both
//! import this; it imports neither.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry};
use slab::Slab;

use super::destinations::Destinations;
use super::h2::{ReadyList, UpPool};
use super::pool::{IdleConn, Pool, UpstreamKey};
use super::timers::Timers;
use super::token;
use super::transport::Transport;
use crate::endpoints::ClientTls;
use crate::http1;
use crate::metrics::{Counter, Direction, NoTlsReason, Peer, ProxyMetrics, TcpMetrics, TlsLabel};
use crate::tls::MeshTls;

/// Who owns a socket token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// One of a session's connections.
    Conn {
        session: usize,
        role: Role,
    },
    /// An idle upstream connection in the pool of this direction, in this
    /// bucket.
    Idle(Direction, usize),
    Admin(usize),
    /// A client connection served over HTTP/2 (index in the h2 servers).
    H2Server(usize),
    /// An HTTP/2 upstream connection of this direction's h2 pool.
    H2Upstream(Direction, usize),
    /// The HTTP/1 connection of one HTTP/2 stream (a downgraded request).
    H2Stream(usize),
}

/// Which side of a session a socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The connection the session accepted.
    Client,
    /// A connection the session made to an upstream.
    Upstream,
}

/// Event-loop settings a session needs.
pub struct LoopConfig {
    /// Upstream connect timeout of outbound requests.
    pub connect_timeout: Duration,
    /// Upstream connect timeout of inbound requests (to the local application).
    pub inbound_connect_timeout: Duration,
    /// TCP keepalive idle time and probe interval on upstream connections.
    pub connect_keepalive: Option<Duration>,
    pub failfast_timeout: Duration,
    pub pool_idle_timeout: Duration,
    /// Idle upstream connections kept per endpoint: outbound, inbound.
    pub max_idle_per_endpoint: (usize, usize),
    pub discovery_idle_timeout: Duration,
    pub limits: http1::Limits,
    /// Read-buffer size per direction; bounds memory per connection.
    pub buffer_limit: usize,
    /// Client-side deadlines and the connection cap.
    pub http: crate::config::HttpLimits,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Protocol detection and opaque TCP.
    pub detect: crate::config::DetectConfig,
    /// How HTTP/2 clients are served, per direction.
    pub h2_inbound: crate::config::H2ServerSettings,
    pub h2_outbound: crate::config::H2ServerSettings,
    /// Outbound HTTP/1 to endpoints that hint H2 goes upgraded.
    pub orig_proto_upgrade: bool,
}

/// The loop state a session may touch while it runs.
pub struct Ctx<'a> {
    pub registry: &'a Registry,
    pub socks: &'a mut Slab<Owner>,
    /// The idle upstream connections of the session's direction.
    pub pool: &'a mut Pool,
    /// Its HTTP/2 upstream connections, shared by every stream to the same
    /// endpoint, and the ready list their tasks' wakers queue on.
    pub h2: &'a mut UpPool,
    pub h2_ready: &'a ReadyList,
    /// The destination table of the session's direction.
    pub dsts: &'a mut Destinations,
    pub timers: &'a mut Timers,
    pub cfg: &'a LoopConfig,
    /// The direction of the session being driven.
    pub direction: Direction,
    /// Its `tcp_*` handles, for the client connection and for upstream ones.
    pub tcp: &'a mut TcpPair,
    pub rng: &'a mut fastrand::Rng,
    /// `spoke_detect_total`.
    pub detect: &'a mut DetectMetrics,
    /// The certificate in force, for mTLS both ways.
    pub tls: &'a MeshTls,
    pub now: Instant,
}

/// Why [`Ctx::dial`] failed.
pub enum DialError {
    /// The connect itself failed at once (no route, no descriptors, ...).
    Connect(io::Error),
    /// The socket could not be registered with the loop.
    Register(io::Error),
    /// The endpoint is to be reached over mTLS and that cannot be done:
    /// no certificate is in force yet, or its name is no DNS name.
    Tls(io::Error),
}

impl Ctx<'_> {
    /// An idle connection made for `key`, its socket now `owner`'s. With
    /// `check_open` (a request that may not be sent twice), one that its
    /// peer closed a moment ago, the event not handled yet, is closed and
    /// the next tried: one `peek` each.
    pub fn take_idle(
        &mut self,
        key: &UpstreamKey,
        check_open: bool,
        owner: Owner,
    ) -> Option<IdleConn> {
        loop {
            let mut idle = self.pool.take(key)?;
            if !check_open || idle.stream.is_idle_and_open() {
                self.socks[idle.sock] = owner;
                return Some(idle);
            }
            log::debug!("{}: a pooled connection was closed; not using it", key.addr);
            self.socks.remove(idle.sock);
            idle.stream.count_close();
        }
    }

    /// Keeps `idle` in the pool under `key` (its socket's events go to the
    /// pool), or closes it when the pool has no room.
    pub fn park_idle(&mut self, key: &UpstreamKey, mut idle: IdleConn) {
        idle.stream.count_bytes();
        let sock = idle.sock;
        match self.pool.put(key, idle) {
            Ok(bucket) => self.socks[sock] = Owner::Idle(self.direction, bucket),
            Err(mut idle) => {
                self.socks.remove(idle.sock);
                idle.stream.count_close();
            }
        }
    }

    /// Starts a non-blocking connect to `addr`, registered for `owner` and
    /// counted open (`tcp.dst`, in the TLS state [`connect_label`] gives);
    /// the writable edge will say how it went.
    /// With `tls` (the endpoint is meshed) and identity on, the connection
    /// speaks mTLS, its handshake part of the connect; with identity off, it
    /// stays plaintext. `transport`: offer the ALPN of Linkerd's opaque
    /// transport (the connection goes to the endpoint's opaque-transport
    /// port).
    pub fn dial(
        &mut self,
        addr: SocketAddr,
        owner: Owner,
        tls: Option<&ClientTls>,
        transport: bool,
    ) -> Result<(Transport, usize), DialError> {
        let client = match (tls, self.tls) {
            (Some(t), MeshTls::Ready(cfg)) if transport => Some((t, cfg.client_transport())),
            (Some(t), MeshTls::Ready(cfg)) => Some((t, cfg.client())),
            (Some(_), MeshTls::Awaiting) => {
                let e = io::Error::other("no certificate in force yet for mTLS");
                return Err(DialError::Tls(e));
            }
            _ => None,
        };
        let mut stream = TcpStream::connect(addr).map_err(DialError::Connect)?;
        let sock = self.socks.insert(owner);
        if let Err(e) = self.registry.register(
            &mut stream,
            token::socket(sock),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.socks.remove(sock);
            return Err(DialError::Register(e));
        }
        let mut transport = Transport::connecting(stream);
        if let Some((t, config)) = client {
            transport = match transport.tls_client(config, &t.server_name, &t.server_id) {
                Ok(tls) => tls,
                Err(e) => {
                    self.socks.remove(sock);
                    return Err(DialError::Tls(e));
                }
            };
        }
        let label = connect_label(self.direction, tls, self.tls);
        transport.count_open(self.tcp.dst.series(&label));
        Ok((transport, sock))
    }
}

impl LoopConfig {
    /// The upstream connect timeout of requests going `direction`.
    pub fn connect_timeout(&self, direction: Direction) -> Duration {
        match direction {
            Direction::Inbound => self.inbound_connect_timeout,
            Direction::Outbound => self.connect_timeout,
        }
    }

    /// How HTTP/2 clients of `direction` are served.
    pub fn h2_server(&self, direction: Direction) -> &crate::config::H2ServerSettings {
        match direction {
            Direction::Inbound => &self.h2_inbound,
            Direction::Outbound => &self.h2_outbound,
        }
    }
}

/// What the loop should do with a session after `drive`.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Open,
    Close,
    /// The client speaks HTTP/2: the loop hands the connection over.
    H2,
}

/// One of something per direction (the loop's destination tables and
/// pools): inbound and outbound never share one.
#[derive(Default)]
pub struct ByDirection<T> {
    pub inbound: T,
    pub outbound: T,
}

impl<T> ByDirection<T> {
    pub fn get(&self, direction: Direction) -> &T {
        match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }

    pub fn get_mut(&mut self, direction: Direction) -> &mut T {
        match direction {
            Direction::Inbound => &mut self.inbound,
            Direction::Outbound => &mut self.outbound,
        }
    }

    /// Both, inbound first.
    pub fn both_mut(&mut self) -> [&mut T; 2] {
        [&mut self.inbound, &mut self.outbound]
    }
}

/// The `tcp_*` handles of one direction, both peers (one per direction in
/// the loop, in a [`ByDirection`]).
pub struct TcpPair {
    pub src: TcpMetrics,
    pub dst: TcpMetrics,
}

impl TcpPair {
    pub fn new(metrics: &ProxyMetrics, direction: Direction) -> TcpPair {
        TcpPair {
            src: metrics.tcp(direction, Peer::Src),
            dst: metrics.tcp(direction, Peer::Dst),
        }
    }
}

/// The TLS state, as metrics label it, of a connection spoke makes going
/// `direction` to an endpoint discovery describes with `tls` (its identity,
/// if meshed), under `mesh`. Linkerd's: inbound connects to the local
/// application (`loopback`); with identity off, `disabled`; an endpoint
/// discovery names no identity for, `not_provided_by_service_discovery`.
/// spoke's own: a meshed endpoint while no certificate is in force yet
/// (`no_certificate_yet`: the connection is refused, never plaintext).
pub fn connect_label(direction: Direction, tls: Option<&ClientTls>, mesh: &MeshTls) -> TlsLabel {
    match (direction, tls, mesh) {
        (Direction::Inbound, ..) => TlsLabel::NoIdentity(NoTlsReason::Loopback),
        (_, _, MeshTls::Disabled) => TlsLabel::Disabled,
        (_, None, _) => TlsLabel::NoIdentity(NoTlsReason::NotProvidedByServiceDiscovery),
        (_, Some(_), MeshTls::Awaiting) => TlsLabel::NoIdentity(NoTlsReason::NoCertificateYet),
        (_, Some(t), MeshTls::Ready(_)) => TlsLabel::ServerId(t.server_id.clone()),
    }
}

/// The TLS state, as metrics label it, of a connection accepted going
/// `direction`, under `mesh`: `terminated` when spoke terminated TLS on it
/// (with the identity the client proved, if it presented a certificate),
/// and what detection found before that (`seen`: an opaque port, a
/// ClientHello for another name or none). As Linkerd: from the local
/// application (outbound) `loopback`; on a port that skips detection
/// `port_skipped`; with identity off `disabled`; else the client's identity,
/// or `no_tls_from_remote`.
pub fn accept_label(
    direction: Direction,
    mesh: &MeshTls,
    seen: Option<TlsLabel>,
    terminated: Option<Option<Arc<str>>>,
) -> TlsLabel {
    match (direction, mesh, seen, terminated) {
        (Direction::Outbound, ..) => TlsLabel::NoIdentity(NoTlsReason::Loopback),
        (_, _, Some(skipped @ TlsLabel::NoIdentity(NoTlsReason::PortSkipped)), _) => skipped,
        (_, MeshTls::Disabled, ..) => TlsLabel::Disabled,
        (_, _, _, Some(client_id)) => TlsLabel::ClientId(client_id),
        (_, _, Some(seen), None) => seen,
        (_, _, None, None) => TlsLabel::NoIdentity(NoTlsReason::NoTlsFromRemote),
    }
}

/// `spoke_detect_total`'s series, made on first use and kept (event loop).
pub struct DetectMetrics {
    metrics: ProxyMetrics,
    seen: Vec<((Direction, &'static str, &'static str), Counter)>,
}

impl DetectMetrics {
    pub fn new(metrics: ProxyMetrics) -> DetectMetrics {
        DetectMetrics {
            metrics,
            seen: Vec::new(),
        }
    }

    /// A connection refused after it was accepted
    /// (`spoke_connections_refused_total`).
    pub fn refused(&mut self, direction: Direction, reason: &'static str) {
        self.metrics.connection_refused(direction, reason).inc();
    }

    pub fn count(&mut self, direction: Direction, protocol: &'static str, reason: &'static str) {
        let key = (direction, protocol, reason);
        if let Some((_, c)) = self.seen.iter().find(|(k, _)| *k == key) {
            c.inc();
            return;
        }
        let c = self.metrics.detected(direction, protocol, reason);
        c.inc();
        self.seen.push((key, c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meshed() -> ClientTls {
        ClientTls {
            server_name: "b.ns.serviceaccount.identity.linkerd.cluster.local".into(),
            server_id: "b.ns.serviceaccount.identity.linkerd.cluster.local".into(),
        }
    }

    const fn no(why: NoTlsReason) -> TlsLabel {
        TlsLabel::NoIdentity(why)
    }

    #[test]
    fn connect_labels_are_linkerds() {
        use Direction::*;
        let b = meshed();
        let on = MeshTls::Awaiting;
        assert_eq!(connect_label(Inbound, None, &on), no(NoTlsReason::Loopback));
        assert_eq!(
            connect_label(Inbound, Some(&b), &on),
            no(NoTlsReason::Loopback)
        );
        assert_eq!(
            connect_label(Outbound, None, &on),
            no(NoTlsReason::NotProvidedByServiceDiscovery)
        );
        assert_eq!(
            connect_label(Outbound, Some(&b), &on),
            no(NoTlsReason::NoCertificateYet)
        );
        for tls in [None, Some(&b)] {
            assert_eq!(
                connect_label(Outbound, tls, &MeshTls::Disabled),
                TlsLabel::Disabled
            );
        }
        // With a certificate in force (`MeshTls::Ready`), the endpoint's
        // identity: tests/mtls.rs checks it end to end.
    }

    #[test]
    fn accept_labels_are_linkerds() {
        use Direction::*;
        let (on, off) = (MeshTls::Awaiting, MeshTls::Disabled);
        let alice = || Some(Arc::<str>::from("alice"));
        let sni = || Some(TlsLabel::Opaque("db.example".into()));
        let skipped = || Some(no(NoTlsReason::PortSkipped));
        assert_eq!(
            accept_label(Outbound, &on, None, None),
            no(NoTlsReason::Loopback)
        );
        assert_eq!(
            accept_label(Outbound, &off, sni(), None),
            no(NoTlsReason::Loopback)
        );
        assert_eq!(
            accept_label(Inbound, &on, None, None),
            no(NoTlsReason::NoTlsFromRemote)
        );
        assert_eq!(
            accept_label(Inbound, &on, None, Some(alice())),
            TlsLabel::ClientId(alice())
        );
        assert_eq!(
            accept_label(Inbound, &on, None, Some(None)),
            TlsLabel::ClientId(None)
        );
        assert_eq!(accept_label(Inbound, &on, sni(), None), sni().unwrap());
        assert_eq!(
            accept_label(Inbound, &on, skipped(), None),
            skipped().unwrap()
        );
        assert_eq!(
            accept_label(Inbound, &off, skipped(), None),
            skipped().unwrap()
        );
        assert_eq!(accept_label(Inbound, &off, None, None), TlsLabel::Disabled);
        assert_eq!(accept_label(Inbound, &off, sni(), None), TlsLabel::Disabled);
    }
}
