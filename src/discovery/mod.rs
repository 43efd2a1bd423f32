//! Discovery: one pair of named threads per live destination.
//!
//! `Discovery::watch` (called on the event loop when it first sees a
//! destination) spawns `profile:<name:port>` (only for names under the profile
//! suffixes) and `endpoints:<name:port>`. Each runs `watch::Watcher` over the
//! shared control-plane connection (`control`), converts messages with `convert` (the one place that
//! reads protobuf types), and publishes full snapshots through `updates`. Names
//! outside the `Get` suffixes, and names the controller does not know, are
//! resolved by DNS on the endpoints thread (`dns`), never on the loop.
//!
//! Eviction: the loop drops the [`Watch`] hangups; every wait in these threads
//! selects on them, so the threads return (and their streams are cancelled at
//! the controller) at once. Their `JoinHandle`s go back to the loop, which joins
//! them once finished.

pub mod backoff;
pub mod control;
pub mod convert;
pub mod dns;
#[allow(unsafe_code)]
pub mod stack;
pub mod wait;
pub mod watch;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;
use futures::channel::oneshot;
use grpcio::RpcStatus;

use self::backoff::Backoff;
use self::control::ControlConn;
use self::watch::{is_terminal, Flow, Handler, Watcher};
use crate::config::{BackoffConfig, Suffixes};
use crate::endpoints::{Applied, EndpointSet, EndpointState};
use crate::metrics::DiscoveryMetrics;
use crate::networks::Networks;
use crate::profile::{PathPatterns, Profile};
use crate::proto::destination::{DestinationProfile, Update};
use crate::proto::{METHOD_GET, METHOD_GET_PROFILE};
use crate::router::RoutedProfile;
use crate::updates::{self, SnapshotTx, Stamped, Wake};

/// Small stacks: a destination costs two threads, and a watch loop needs little.
const STACK_SIZE: usize = 256 * 1024;

#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    pub context_token: String,
    pub backoff: BackoffConfig,
    pub profile_suffixes: Suffixes,
    pub get_suffixes: Suffixes,
    /// IP addresses in these networks get a `GetProfile` lookup.
    pub profile_networks: Networks,
    /// How often DNS-resolved endpoint sets are refreshed.
    pub dns_refresh: Duration,
}

/// Spawns watches; cheap to share (a clone is a reference count).
#[derive(Clone)]
pub struct Discovery {
    shared: Arc<Shared>,
}

/// What every discovery thread reads; each thread holds an `Arc` of it.
struct Shared {
    conn: ControlConn,
    cfg: DiscoveryConfig,
    waker: Arc<dyn Wake>,
    profile_metrics: DiscoveryMetrics,
    endpoint_metrics: DiscoveryMetrics,
    /// Compiled path patterns, shared by every destination's profile.
    patterns: PathPatterns,
}

pub type ProfileRx = Receiver<Stamped<Arc<RoutedProfile>>>;
pub type EndpointsRx = Receiver<Stamped<Arc<EndpointSet>>>;

/// The event loop's side of one destination's discovery.
pub struct Watch {
    /// `None` when the name is outside the profile suffixes: the default
    /// profile applies and no stream is opened.
    pub profile: Option<ProfileRx>,
    pub endpoints: EndpointsRx,
    hangups: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Watch {
    /// Signals the threads to stop (they exit and cancel their streams at
    /// once) and hands back their handles for joining.
    pub fn hang_up(self) -> Vec<JoinHandle<()>> {
        drop(self.hangups);
        self.threads
    }
}

impl Discovery {
    pub fn new(
        conn: ControlConn,
        cfg: DiscoveryConfig,
        waker: Arc<dyn Wake>,
        profile_metrics: DiscoveryMetrics,
        endpoint_metrics: DiscoveryMetrics,
    ) -> Self {
        Discovery {
            shared: Arc::new(Shared {
                conn,
                cfg,
                waker,
                profile_metrics,
                endpoint_metrics,
                patterns: PathPatterns::default(),
            }),
        }
    }

    /// The watch of a destination that is one address (a request naming an
    /// IP, or the original destination of a redirected connection): no
    /// endpoint discovery, since the address is the endpoint; a profile
    /// stream on `ip:port` when the IP is in the profile networks.
    pub fn watch_fixed(&self, addr: SocketAddr) -> io::Result<Watch> {
        let profiled = self.shared.cfg.profile_networks.contains(addr.ip());
        self.watch_fixed_profile(profiled.then(|| addr.to_string()))
    }

    /// Whether `name` (no port) is under the profile suffixes: it gets a
    /// `GetProfile` stream.
    pub fn has_profile(&self, name: &str) -> bool {
        self.shared.cfg.profile_suffixes.matches(name)
    }

    /// The watch of a destination whose endpoint is fixed (no endpoint
    /// discovery), with the profile of `profile` (`name:port` or `ip:port`)
    /// when given, else the default one.
    pub fn watch_fixed_profile(&self, profile: Option<String>) -> io::Result<Watch> {
        let shared = &self.shared;
        let mut hangups = Vec::new();
        let mut threads = Vec::new();
        let profile = match profile {
            Some(dst) => Some(self.spawn_profile(dst, &mut threads, &mut hangups)?),
            None => None,
        };
        // Nothing will ever be sent: the set is the address, fixed.
        let (_, endpoints) = updates::channel(shared.waker.clone());
        Ok(Watch {
            profile,
            endpoints,
            hangups,
            threads,
        })
    }

    /// Starts the `profile:<dst>` thread; its handle and hang-up go into
    /// `threads` and `hangups`.
    fn spawn_profile(
        &self,
        dst: String,
        threads: &mut Vec<JoinHandle<()>>,
        hangups: &mut Vec<oneshot::Sender<()>>,
    ) -> io::Result<ProfileRx> {
        let (tx, rx) = updates::channel(self.shared.waker.clone());
        let (hangup_tx, hangup) = oneshot::channel();
        let this = self.shared.clone();
        let name = format!("profile:{dst}");
        threads.push(spawn(name, move || this.run_profile(dst, tx, hangup))?);
        hangups.push(hangup_tx);
        Ok(rx)
    }

    /// Starts the threads for `name:port`.
    pub fn watch(&self, name: &str, port: u16) -> io::Result<Watch> {
        let shared = &self.shared;
        let dst = format!("{name}:{port}");
        let mut hangups = Vec::with_capacity(2);
        let mut threads = Vec::with_capacity(2);

        let profile = if shared.cfg.profile_suffixes.matches(name) {
            Some(self.spawn_profile(dst.clone(), &mut threads, &mut hangups)?)
        } else {
            None
        };

        let (tx, endpoints) = updates::channel(shared.waker.clone());
        let (hangup_tx, hangup) = oneshot::channel();
        let this = shared.clone();
        let d = dst.clone();
        let spawned = spawn(format!("endpoints:{dst}"), move || {
            this.run_endpoints(d, port, tx, hangup)
        });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                // Don't leave the profile thread running without its pair.
                drop(hangups);
                for t in threads {
                    let _ = t.join();
                }
                return Err(e);
            }
        }
        hangups.push(hangup_tx);
        Ok(Watch {
            profile,
            endpoints,
            hangups,
            threads,
        })
    }
}

impl Shared {
    fn run_profile(
        &self,
        dst: String,
        tx: SnapshotTx<Arc<RoutedProfile>>,
        mut hangup: oneshot::Receiver<()>,
    ) {
        let watcher = Watcher {
            conn: &self.conn,
            method: &METHOD_GET_PROFILE,
            request: Box::new(convert::get_destination(&dst, &self.cfg.context_token)),
            backoff: Backoff::new(self.cfg.backoff),
            hangup: &mut hangup,
            metrics: &mut self.profile_metrics.clone(),
            dst: &dst,
            generation: 0,
        };
        let exit = watcher.run(&mut ProfileHandler {
            dst: &dst,
            tx: &tx,
            patterns: &self.patterns,
        });
        log::debug!("{dst}: profile watch ended ({exit:?})");
    }

    /// `dst` is `name:port`; the thread's closure carries only it (see `spawn`).
    fn run_endpoints(
        &self,
        dst: String,
        port: u16,
        tx: SnapshotTx<Arc<EndpointSet>>,
        mut hangup: oneshot::Receiver<()>,
    ) {
        let name = dst.rsplit_once(':').map_or(dst.as_str(), |(name, _)| name);
        let use_get = self.cfg.get_suffixes.matches(name);
        // Boxed, like the watch's request: this frame stays on a parked
        // thread's stack (see `stack`).
        let mut handler = Box::new(EndpointsHandler {
            dst: &dst,
            name,
            port,
            tx: &tx,
            state: EndpointState::new(),
            dns: None,
            refresh: self.cfg.dns_refresh,
        });
        if use_get {
            let watcher = Watcher {
                conn: &self.conn,
                method: &METHOD_GET,
                request: Box::new(convert::get_destination(&dst, &self.cfg.context_token)),
                backoff: Backoff::new(self.cfg.backoff),
                hangup: &mut hangup,
                metrics: &mut self.endpoint_metrics.clone(),
                dst: &dst,
                generation: 0,
            };
            if watcher.run(&mut *handler) == watch::Exit::HungUp {
                return;
            }
            // The controller refused the name for good: DNS from here on.
        }
        dns::run(name, port, self.cfg.dns_refresh, &tx, &mut hangup);
        log::debug!("{dst}: endpoint watch ended");
    }
}

/// Spawns a discovery thread. What the thread needs is captured behind
/// pointers (`f` is boxed, and holds an `Arc` of the shared state), so the
/// frames under its watch loop stay small: a parked thread keeps every page above its stack pointer
/// (see `stack`).
fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    let f: Box<dyn FnOnce() + Send> = Box::new(f);
    std::thread::Builder::new()
        .name(name)
        .stack_size(STACK_SIZE)
        .spawn(move || {
            stack::install();
            f()
        })
}

// === impl ProfileHandler ===

struct ProfileHandler<'a> {
    dst: &'a str,
    tx: &'a SnapshotTx<Arc<RoutedProfile>>,
    patterns: &'a PathPatterns,
}

impl Handler<DestinationProfile> for ProfileHandler<'_> {
    fn message(&mut self, msg: DestinationProfile) -> Flow {
        let profile = convert::profile(&msg, self.dst, self.patterns);
        self.tx.publish(Arc::new(RoutedProfile::new(profile)));
        Flow::Continue
    }

    fn failed(&mut self, status: &RpcStatus, first_lookup: bool) -> Flow {
        if !is_terminal(status) {
            return Flow::Continue;
        }
        if first_lookup {
            // Linkerd: InvalidArgument/FailedPrecondition on the first lookup
            // mean "no profile": the default route applies.
            log::info!(
                "{}: no profile ({:?}); using the default route",
                self.dst,
                status.code()
            );
            self.tx
                .publish(Arc::new(RoutedProfile::new(Profile::default())));
        }
        // Mid-stream, the last profile stays in force; either way, stop asking.
        Flow::Stop
    }
}

// === impl EndpointsHandler ===

struct EndpointsHandler<'a> {
    dst: &'a str,
    name: &'a str,
    port: u16,
    tx: &'a SnapshotTx<Arc<EndpointSet>>,
    state: EndpointState,
    /// Set while the controller says the name does not exist: the DNS answer
    /// in force and when to refresh it.
    dns: Option<dns::Resolved>,
    refresh: Duration,
}

impl Handler<Update> for EndpointsHandler<'_> {
    fn stream_started(&mut self) {
        self.state.reconnected();
    }

    fn message(&mut self, msg: Update) -> Flow {
        let update = match convert::update(&msg) {
            Ok(u) => u,
            Err(e) => {
                log::warn!("{}: ignoring endpoint update: {e}", self.dst);
                return Flow::Continue;
            }
        };
        match self.state.apply(update) {
            Applied::Changed(set) => {
                self.dns = None;
                self.tx.publish(Arc::new(set));
            }
            Applied::Unchanged => {}
            Applied::DoesNotExist => {
                log::info!("{}: unknown to the controller; resolving by DNS", self.dst);
                self.dns = Some(dns::Resolved::resolve(self.name, self.port, None, self.tx));
            }
        }
        Flow::Continue
    }

    fn failed(&mut self, status: &RpcStatus, _first_lookup: bool) -> Flow {
        if is_terminal(status) {
            log::info!(
                "{}: controller refused the name ({:?}); resolving by DNS",
                self.dst,
                status.code()
            );
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn tick_after(&self) -> Option<Duration> {
        self.dns.as_ref().map(|d| d.until_refresh(self.refresh))
    }

    fn tick(&mut self) {
        if let Some(prev) = self.dns.take() {
            self.dns = Some(dns::Resolved::resolve(
                self.name,
                self.port,
                Some(prev),
                self.tx,
            ));
        }
    }
}
