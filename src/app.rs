//! Wiring: builds every thread of a running spoke from a [`Config`] and tears
//! them down again. Used by the binary (`main`), by `spoke demo`, and by the
//! integration tests, which run the real proxy in-process on port 0.
//!
//! Threads started here: the embedded controller's (`controller-watch` plus
//! grpcio's completion queue) when no control plane is configured; the
//! `event-loop`; and, through it, the `profile:`/`endpoints:` discovery threads;
//! `identity` when the workload's identity is configured; a `control-tls` /
//! `identity-tls` relay thread per control-plane connection made over TLS
//! (a service name configured).
//! [`App::shutdown`] (or drop) stops the loop, which joins the discovery
//! threads, then joins the loop, the identity and control threads, then the
//! TLS relays, and stops the controller; a panic on the loop thread is reported, not swallowed.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use grpcio::{EnvBuilder, Environment};
use mio::net::TcpListener;
use mio::{Poll, Waker};

use crate::config::{is_loopback, Config, ControlPlane};
use crate::controller::embedded::{Controller, ControllerError, STOP_GRACE};
use crate::discovery::control::{self, ControlConn, ControlThread, ControlTls};
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::http1;
use crate::identity::client::{self as identity, IdentityMetrics, IdentityThread};
use crate::identity::config::IdentityService;
use crate::identity::CurrentCreds;
use crate::metrics::{Direction, DiscoveryKind, MetricsError, ProxyMetrics, Registry};
use crate::proxy::ctx::{ByDirection, LoopConfig};
use crate::proxy::destinations::Destinations;
use crate::proxy::event_loop::{EventLoop, Sockets};
use crate::proxy::orig_dst::{Kernel, OrigDst};
use crate::proxy::token;
use crate::tls::Relays;
use crate::updates;

/// How often DNS-resolved endpoint sets are refreshed.
const DNS_REFRESH: Duration = Duration::from_secs(5);
/// TCP connect timeout for the control plane (each resolved address).
const CONTROL_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Per-direction read buffer of a proxied connection.
const BUFFER_LIMIT: usize = 64 * 1024;

#[derive(Debug)]
pub enum StartError {
    Controller(ControllerError),
    Bind(&'static str, SocketAddr, std::io::Error),
    Io(std::io::Error),
    Metrics(MetricsError),
    Identity(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Controller(e) => write!(f, "embedded controller: {e}"),
            StartError::Bind(what, addr, e) => {
                write!(f, "cannot bind the {what} listener on {addr}: {e}")
            }
            StartError::Io(e) => write!(f, "{e}"),
            StartError::Metrics(e) => write!(f, "metrics: {e}"),
            StartError::Identity(e) => write!(f, "identity: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Io(e)
    }
}

/// A running proxy.
pub struct App {
    outbound_addr: SocketAddr,
    inbound_addr: SocketAddr,
    admin_addr: SocketAddr,
    control_addr: String,
    event_loop: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    controller: Option<Controller>,
    /// Keeps the control-plane connection; stopped after the event loop
    /// (and with it every discovery thread) has been joined.
    control: Option<ControlThread>,
    identity: Option<IdentityThread>,
    /// The TLS relays of control-plane connections; joined last.
    relays: RelayGuard,
    metrics: ProxyMetrics,
    _env: Arc<Environment>,
}

impl App {
    /// Binds the listeners and starts every thread. Returns once the loop
    /// is running, so the addresses are ready for traffic.
    pub fn start(cfg: &Config) -> Result<App, StartError> {
        App::start_with(cfg, Box::new(Kernel))
    }

    /// [`App::start`] with the original destinations of accepted connections
    /// told by `orig_dst` instead of the kernel (the tests' injection seam).
    pub fn start_with(cfg: &Config, orig_dst: Box<dyn OrigDst>) -> Result<App, StartError> {
        let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("grpc").build());
        let (controller, control_addr) = match &cfg.control_plane {
            ControlPlane::Remote(addr) => (None, addr.clone()),
            ControlPlane::Embedded(path) => {
                let listen = SocketAddr::from(([127, 0, 0, 1], 0));
                // Inside a proxy, a CA is generated only when told where to
                // write it (SPOKE_CONTROLLER_IDENTITY_TRUST_ANCHORS_OUT).
                let issuer = cfg.identity.issuer.source(None);
                let issuer = issuer.as_ref().map(|i| (i, cfg.identity.issuer.lifetime));
                let c = Controller::start(env.clone(), path, listen, issuer)
                    .map_err(StartError::Controller)?;
                let addr = c.addr().to_string();
                (Some(c), addr)
            }
        };
        // Declared before every thread that may start a relay, so that on
        // an early return it is dropped (and the relays joined) after them.
        let relays = RelayGuard(Relays::new());
        let current = CurrentCreds::default();
        let dst_tls = destination_tls(cfg, &relays.0, &current);
        let dial_env = env.clone();
        let dial_addr = control_addr.clone();
        let eager = controller.is_none();
        let (conn, control) = ControlConn::start(cfg.backoff, eager, move || {
            control::dial(
                &dial_env,
                &dial_addr,
                CONTROL_CONNECT_TIMEOUT,
                dst_tls.as_ref(),
            )
        })?;
        let registry = Registry::new();
        let metrics = ProxyMetrics::new(&registry).map_err(StartError::Metrics)?;

        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), token::WAKER)?);
        let (identity, identity_rx, identity_ready) = start_identity(
            cfg,
            &env,
            &registry,
            &control_addr,
            &controller,
            &waker,
            (&relays.0, &current),
        )?;
        let discovery = Discovery::new(
            conn.clone(),
            DiscoveryConfig {
                context_token: cfg.context_token.clone(),
                backoff: cfg.backoff,
                profile_suffixes: cfg.profile_suffixes.clone(),
                get_suffixes: cfg.get_suffixes.clone(),
                profile_networks: cfg.profile_networks.clone(),
                dns_refresh: DNS_REFRESH,
            },
            waker.clone(),
            metrics.discovery(DiscoveryKind::Profile),
            metrics.discovery(DiscoveryKind::Endpoints),
        );
        let outbound = TcpListener::bind(cfg.outbound_listen)
            .map_err(|e| StartError::Bind("outbound", cfg.outbound_listen, e))?;
        let inbound = TcpListener::bind(cfg.inbound_listen)
            .map_err(|e| StartError::Bind("inbound", cfg.inbound_listen, e))?;
        let admin = TcpListener::bind(cfg.admin_listen)
            .map_err(|e| StartError::Bind("admin", cfg.admin_listen, e))?;
        let outbound_addr = outbound.local_addr()?;
        let inbound_addr = inbound.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let own = vec![outbound_addr, admin_addr, inbound_addr];

        // Ready once the listeners are bound (they are, by now) and the
        // control plane answers: the embedded one has started; a remote one
        // is ready while spoke's connection to it is up.
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        // With identity on, also once the first certificate is in force.
        let certified = move || {
            identity_ready
                .as_ref()
                .is_none_or(|r| r.load(Ordering::Acquire))
        };
        let ready: Box<dyn Fn() -> bool + Send> = if controller.is_some() {
            Box::new(move || !stopping.load(Ordering::Acquire) && certified())
        } else {
            let conn = conn.clone();
            Box::new(move || !stopping.load(Ordering::Acquire) && conn.connected() && certified())
        };
        let loop_cfg = LoopConfig {
            connect_timeout: cfg.connect_timeout,
            inbound_connect_timeout: cfg.inbound_connect_timeout,
            connect_keepalive: cfg.connect_keepalive,
            failfast_timeout: cfg.failfast_timeout,
            pool_idle_timeout: cfg.pool_idle_timeout,
            max_idle_per_endpoint: cfg.max_idle_per_endpoint,
            discovery_idle_timeout: cfg.discovery_idle_timeout,
            limits: http1::Limits {
                max_head_bytes: cfg.http.max_head_bytes,
                max_headers: cfg.http.max_headers,
            },
            buffer_limit: BUFFER_LIMIT,
            http: cfg.http,
            shutdown_grace: cfg.shutdown_grace,
            detect: cfg.detect.clone(),
            h2_inbound: cfg.h2_inbound,
            h2_outbound: cfg.h2_outbound,
            orig_proto_upgrade: cfg.orig_proto_upgrade,
        };
        let (started_tx, started) = mpsc::channel();
        let loop_metrics = metrics.clone();
        let loop_stop = stop.clone();
        let inbound_ips = cfg.inbound_ips.clone();
        // The loop's state holds single-threaded routers (`Rc`), so it is
        // built on its own thread.
        let event_loop = std::thread::Builder::new()
            .name("event-loop".into())
            .spawn(move || {
                // The loop allocates and frees all the time: its small blocks
                // are cached (crate::alloc), given back when it ends.
                let _cache = crate::alloc::ThreadCache::enable();
                let dsts = ByDirection {
                    inbound: Destinations::new(
                        discovery.clone(),
                        loop_metrics.clone(),
                        Direction::Inbound,
                    ),
                    outbound: Destinations::new(
                        discovery,
                        loop_metrics.clone(),
                        Direction::Outbound,
                    ),
                };
                match EventLoop::new(
                    poll,
                    Sockets {
                        outbound,
                        inbound,
                        admin,
                        own,
                        orig_dst,
                        inbound_ips,
                    },
                    dsts,
                    loop_cfg,
                    loop_metrics,
                    loop_stop,
                    ready,
                ) {
                    Ok(mut l) => {
                        if let Some(rx) = identity_rx {
                            l.set_identity(rx);
                        }
                        let _ = started_tx.send(Ok(()));
                        l.run();
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                }
            })?;
        match started.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = event_loop.join();
                return Err(StartError::Io(e));
            }
            Err(_) => {
                let _ = event_loop.join();
                return Err(StartError::Io(std::io::Error::other(
                    "event loop exited during start-up",
                )));
            }
        }
        log::info!(
            "outbound proxy listening on {outbound_addr}; inbound on {inbound_addr}; \
             admin on {admin_addr}; control plane {control_addr}"
        );
        Ok(App {
            outbound_addr,
            inbound_addr,
            admin_addr,
            control_addr,
            event_loop: Some(event_loop),
            stop,
            waker,
            controller,
            control: Some(control),
            identity,
            relays,
            metrics,
            _env: env,
        })
    }

    pub fn outbound_addr(&self) -> SocketAddr {
        self.outbound_addr
    }

    /// The inbound listener's bound address.
    pub fn inbound_addr(&self) -> SocketAddr {
        self.inbound_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The control plane's `host:port` (the embedded controller's when embedded).
    pub fn control_addr(&self) -> &str {
        &self.control_addr
    }

    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }

    /// Stops every thread and joins them. `Err` if the event loop panicked.
    pub fn shutdown(mut self) -> Result<(), String> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<(), String> {
        let mut result = Ok(());
        if let Some(handle) = self.event_loop.take() {
            self.stop.store(true, Ordering::Release);
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake the event loop to stop it: {e}");
            }
            if handle.join().is_err() {
                result = Err("the event-loop thread panicked".to_string());
            }
        }
        drop(self.identity.take());
        drop(self.control.take());
        // Their connections are gone with them (gRPC closes its ends), but a
        // relay whose server has not yet answered the close is stopped here.
        self.relays.0.shutdown();
        if let Some(c) = self.controller.take() {
            // The discovery threads were joined with the loop, so no stream
            // is open and this returns at once.
            c.shutdown(STOP_GRACE);
        }
        result
    }
}

/// The identity thread's parts: the thread, the loop's receiver, and the
/// flag `/ready` reads; all `None` when identity is off.
type IdentityParts = (
    Option<IdentityThread>,
    Option<crate::identity::CredentialsRx>,
    Option<Arc<AtomicBool>>,
);

/// Stops and joins the relay threads when dropped (also on a failed start).
struct RelayGuard(Relays);

impl Drop for RelayGuard {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// TLS to a remote service at `addr` when `name` is configured (Linkerd:
/// a name means TLS with that server identity); without one, plaintext, which
/// Linkerd allows only on loopback: elsewhere spoke warns.
fn service_tls(
    what: &str,
    addr: &str,
    name: Option<&String>,
    anchors: Option<&crate::identity::creds::Anchors>,
    (relays, current): (&Relays, &CurrentCreds),
    thread: &'static str,
) -> Option<ControlTls> {
    match (name, anchors) {
        (Some(name), Some(anchors)) => {
            log::info!("{what} at {addr}: TLS, server identity {name}");
            Some(ControlTls {
                name: name.clone(),
                anchors: anchors.clone(),
                creds: current.clone(),
                relays: relays.clone(),
                thread,
            })
        }
        _ => {
            if !is_loopback(addr) {
                log::warn!(
                    "{what} at {addr} is not on loopback and no service name is set: \
                     plaintext gRPC"
                );
            }
            None
        }
    }
}

/// TLS to a remote destination service (config checked that identity is on
/// when a name is set).
fn destination_tls(cfg: &Config, relays: &Relays, current: &CurrentCreds) -> Option<ControlTls> {
    let ControlPlane::Remote(addr) = &cfg.control_plane else {
        return None;
    };
    let anchors = cfg.identity.proxy.as_ref().map(|p| &p.anchors);
    service_tls(
        "destination service",
        addr,
        cfg.destination_name.as_ref(),
        anchors,
        (relays, current),
        "control-tls",
    )
}

/// Starts the `identity` thread when the workload's identity is configured.
fn start_identity(
    cfg: &Config,
    env: &Arc<Environment>,
    registry: &Registry,
    control_addr: &str,
    controller: &Option<Controller>,
    waker: &Arc<Waker>,
    (relays, current): (&Relays, &CurrentCreds),
) -> Result<IdentityParts, StartError> {
    let Some(id) = &cfg.identity.proxy else {
        return Ok((None, None, None));
    };
    let mut tls = None;
    let addr = match &id.service {
        IdentityService::Remote(addr) => {
            tls = service_tls(
                "identity service",
                addr,
                id.service_name.as_ref(),
                Some(&id.anchors),
                (relays, current),
                "identity-tls",
            );
            addr.clone()
        }
        IdentityService::Embedded => {
            if controller.is_some() && cfg.identity.issuer.source(None).is_none() {
                return Err(StartError::Identity(
                    "the embedded controller has no CA to issue certificates: set \
                     SPOKE_CONTROLLER_IDENTITY_ISSUER_CERT and _KEY (the CA the trust \
                     anchors name), or LINKERD2_PROXY_IDENTITY_SVC_ADDR"
                        .into(),
                ));
            }
            control_addr.to_owned()
        }
    };
    let docs = identity::documents(id).map_err(|e| {
        StartError::Identity(format!("{}: {e}", crate::identity::config::IDENTITY_DIR))
    })?;
    let metrics = IdentityMetrics::new(registry).map_err(StartError::Metrics)?;
    let wake: Arc<dyn updates::Wake> = waker.clone();
    let (tx, rx) = updates::channel(wake);
    let ready = Arc::new(AtomicBool::new(false));
    let thread = identity::start(identity::Start {
        cfg: id.clone(),
        docs,
        addr,
        env: env.clone(),
        backoff: cfg.backoff,
        tx,
        current: current.clone(),
        tls,
        ready: ready.clone(),
        metrics,
    })?;
    Ok((Some(thread), Some(rx), Some(ready)))
}

impl Drop for App {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            // Surface the panic in tests, which drop the proxy on the way out,
            // unless we are already unwinding.
            if !std::thread::panicking() {
                panic!("{e}");
            }
        }
    }
}
