//! The event loop's destination table: for each `name:port` in use, the router
//! and endpoint set in force, the discovery receivers, and who is waiting.
//! The loop has one table per direction; the inbound one holds destinations
//! whose one endpoint is a connection's original destination.
//!
//! Event-loop thread only. Snapshots arrive from discovery threads
//! (`discovery`), and [`Destinations::drain`] swaps them in between event
//! batches: each swap replaces an `Arc`, so a request that already resolved its
//! route keeps the router it started with. Idle destinations are evicted, which
//! hangs up their discovery threads; the threads are joined once they finish.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::TryRecvError;

use super::admin::destinations::DestinationView;
use crate::balance::{Balancer, Pick};
use crate::discovery::{Discovery, Watch};
use crate::endpoints::{Endpoint, EndpointSet, Source};
use crate::metrics::{
    AuthorityMetrics, ConnectRetryMetrics, Direction, DiscoveryKind, DiscoveryMetrics,
    ProxyMetrics, RouteMetrics,
};
use crate::profile::Profile;
use crate::retry_budget::TpsBudget;
use crate::router::RoutedProfile;
use crate::split::Split;
use crate::FastMap;

use super::inbound::{self, InboundDst};

/// A profile snapshot with the metric handles of its routes, built once per
/// swap so requests never allocate label sets.
pub struct Router {
    pub profile: Arc<Profile>,
    /// The routes with a RegexSet prefilter, so a lookup is one set match
    /// rather than a scan of every route's regex (built by the profile thread).
    routed: Arc<RoutedProfile>,
    // Route handles cache their series per status code and so need `&mut`;
    // the router is shared by in-flight requests on this one thread.
    routes: Vec<RefCell<RouteMetrics>>,
    default: RefCell<RouteMetrics>,
    /// One retry budget shared by every route of this profile, as in Linkerd;
    /// `None` when the profile has no valid budget (then nothing is retried).
    pub budget: Option<RefCell<TpsBudget>>,
    /// The traffic split over `backends`, when the profile has overrides.
    pub split: Option<Split>,
    /// `name:port` of each override, resolved with its own `Get` watch.
    pub backends: Vec<Arc<str>>,
}

impl Router {
    /// The destination one attempt of a request to `dst` goes to: `dst`
    /// itself, or with a traffic split a backend picked by weight among
    /// those that have endpoints (`None`: none has).
    #[inline]
    pub fn pick_backend(
        &self,
        dst: &Arc<str>,
        dsts: &Destinations,
        rng: &mut fastrand::Rng,
    ) -> Option<Arc<str>> {
        let Some(split) = &self.split else {
            return Some(dst.clone());
        };
        let backends = &self.backends;
        let ready = |i: usize| {
            dsts.get(&backends[i])
                .is_some_and(|d| d.endpoints.as_ref().is_some_and(|e| !e.is_empty()))
        };
        split.pick_ready(rng, ready).map(|i| backends[i].clone())
    }

    fn new(
        routed: Arc<RoutedProfile>,
        dst: &str,
        direction: Direction,
        metrics: &ProxyMetrics,
        now: Instant,
    ) -> Router {
        let profile = routed.profile.clone();
        let routes = profile
            .routes
            .iter()
            .map(|r| RefCell::new(metrics.route(direction, dst, &r.labels)))
            .collect();
        // Retries and traffic splits are the client side's business (Linkerd
        // applies them outbound only): an inbound request is never retried
        // and always goes to its one target.
        let outbound = direction == Direction::Outbound;
        let budget = profile
            .retry_budget
            .as_ref()
            .filter(|_| outbound)
            .and_then(|b| match TpsBudget::new(b, now) {
                Ok(b) => Some(RefCell::new(b)),
                Err(e) => {
                    log::warn!("{dst}: retries disabled: {e}");
                    None
                }
            });
        let (split, backends) = if !outbound || profile.dst_overrides.is_empty() {
            (None, Vec::new())
        } else {
            (
                Some(Split::new(&profile.dst_overrides)),
                profile
                    .dst_overrides
                    .iter()
                    .map(|d| Arc::from(d.authority.as_str()))
                    .collect(),
            )
        };
        Router {
            routed,
            profile,
            routes,
            default: RefCell::new(metrics.route(direction, dst, &[])),
            budget,
            split,
            backends,
        }
    }

    /// The route index for a request (`None`: the default route).
    pub fn find(&self, method: &str, path: &str) -> Option<usize> {
        self.routed.table.find(method, path)
    }

    pub fn route_metrics(&self, route: Option<usize>) -> &RefCell<RouteMetrics> {
        route
            .and_then(|i| self.routes.get(i))
            .unwrap_or(&self.default)
    }
}

/// A request parked on a destination: an HTTP/1 session (by slab key) or
/// an HTTP/2 stream task (by its slab key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiter {
    Session(usize),
    Stream(usize),
}

pub struct Destination {
    /// Its key in the table.
    pub name: Arc<str>,
    /// Its `authority` and `dst` label: the key, except for inbound
    /// destinations keyed by name and target (see `inbound`).
    label: Arc<str>,
    /// `None` until the first profile answer (or immediately the default when
    /// the name is outside the profile suffixes).
    pub router: Option<Rc<Router>>,
    pub endpoints: Option<Arc<EndpointSet>>,
    pub authority: AuthorityMetrics,
    /// Requests parked until this destination is ready.
    pub waiters: Vec<Waiter>,
    /// Requests in flight; a destination in use is never evicted.
    pub active: usize,
    pub last_used: Instant,
    /// Load and connect-failure state of each endpoint.
    pub balancer: Balancer,
    /// Requests moved to another endpoint after a connection failure.
    pub connect_retries: ConnectRetryMetrics,
    watch: Watch,
}

impl Destination {
    pub fn is_ready(&self) -> bool {
        self.router.is_some() && self.endpoints.is_some()
    }

    /// The endpoint for the next attempt: power of two choices over
    /// PeakEWMA load, skipping endpoints whose connections failed recently
    /// and those in `excluded` (they failed for this request).
    pub fn pick_endpoint(&mut self, now: Instant, excluded: &[std::net::SocketAddr]) -> Pick {
        if self.endpoints.is_none() {
            return Pick::Empty;
        }
        self.balancer.pick(now, excluded)
    }

    /// What connecting to the endpoint at `addr` takes (its mTLS identity,
    /// its opaque-transport port), when the set has it.
    #[inline]
    pub fn endpoint_ref(
        &self,
        addr: std::net::SocketAddr,
    ) -> Option<crate::endpoints::EndpointRef> {
        self.endpoints
            .as_ref()?
            .get(addr)
            .map(crate::endpoints::EndpointRef::of)
    }
}

/// An outbound destination that is one address (a pod IP, say) takes what
/// its profile says about that address (Linkerd's `endpoint`: its mTLS
/// identity, protocol hint and opaque-transport port), so a connection to a
/// meshed pod by IP is mTLS as one by service name is.
fn adopt_profile_endpoint(d: &mut Destination, profile: &crate::profile::Profile) {
    let (Some(ep), Some(set)) = (&profile.endpoint, &d.endpoints) else {
        return;
    };
    if set.source != Source::Fixed || set.endpoints.len() != 1 || set.endpoints[0].addr != ep.addr {
        return;
    }
    if set.endpoints[0] != *ep {
        d.endpoints = Some(Arc::new(EndpointSet::new(vec![ep.clone()], Source::Fixed)));
    }
}

pub struct Destinations {
    /// The direction of the traffic this table routes (its metric label).
    direction: Direction,
    discovery: Discovery,
    metrics: ProxyMetrics,
    swap_profile: DiscoveryMetrics,
    swap_endpoints: DiscoveryMetrics,
    /// Boxed: a table of 1,000 destinations has 2,048 buckets, and an empty
    /// bucket costs the size of its value.
    table: FastMap<Arc<str>, Box<Destination>>,
    /// Discovery threads that were hung up and not yet joined.
    dying: Vec<JoinHandle<()>>,
}

/// Why a destination could not be started.
pub struct StartFailed(pub std::io::Error);

impl Destinations {
    pub fn new(discovery: Discovery, metrics: ProxyMetrics, direction: Direction) -> Self {
        Destinations {
            direction,
            discovery,
            swap_profile: metrics.discovery(DiscoveryKind::Profile),
            swap_endpoints: metrics.discovery(DiscoveryKind::Endpoints),
            metrics,
            table: FastMap::default(),
            dying: Vec::new(),
        }
    }

    /// The destination that is the one address `addr` (key `dst`, its text):
    /// its endpoint set is that address, with no discovery; its profile is
    /// looked up when the address is in the profile networks.
    pub fn get_or_start_fixed(
        &mut self,
        dst: &str,
        addr: SocketAddr,
        now: Instant,
    ) -> Result<&mut Destination, StartFailed> {
        if !self.table.contains_key(dst) {
            let watch = self.discovery.watch_fixed(addr).map_err(StartFailed)?;
            let set = EndpointSet::new(vec![Endpoint::from_addr(addr)], Source::Fixed);
            self.insert(dst, dst, watch, Some(Arc::new(set)), now);
        }
        let d = self.table.get_mut(dst).expect("inserted above");
        d.last_used = now;
        Ok(d)
    }

    /// The destination of an inbound request to `target` whose `Host` is
    /// `host` (`(name, name:port)`, lowercased), if it has one: keyed by
    /// name and target when the name is under the profile suffixes (its
    /// profile watched on the name), else the target's own (see `inbound`).
    /// Its endpoint set is the target, with no discovery.
    pub fn get_or_start_inbound(
        &mut self,
        host: Option<(&str, &str)>,
        target: SocketAddr,
        now: Instant,
    ) -> Result<&mut Destination, StartFailed> {
        let named = host
            .filter(|(name, _)| name.len() <= inbound::MAX_NAME && !inbound::is_ip_literal(name))
            .filter(|(name, _)| self.discovery.has_profile(name))
            .map(|(_, name_port)| name_port);
        let dst = InboundDst::new(named, target);
        if !self.table.contains_key(dst.key()) {
            let profile = dst.profile().map(str::to_string);
            let watch = self
                .discovery
                .watch_fixed_profile(profile)
                .map_err(StartFailed)?;
            let set = EndpointSet::new(vec![Endpoint::from_addr(target)], Source::Fixed);
            self.insert(dst.key(), dst.label(), watch, Some(Arc::new(set)), now);
        }
        let d = self.table.get_mut(dst.key()).expect("inserted above");
        d.last_used = now;
        Ok(d)
    }

    /// A new entry for `dst`, labelled `label` in metrics: the default router
    /// unless a profile is watched.
    fn insert(
        &mut self,
        dst: &str,
        label: &str,
        watch: Watch,
        endpoints: Option<Arc<EndpointSet>>,
        now: Instant,
    ) {
        let key: Arc<str> = Arc::from(dst);
        let label: Arc<str> = if label == dst {
            key.clone()
        } else {
            Arc::from(label)
        };
        let router = match watch.profile {
            Some(_) => None,
            None => Some(Rc::new(Router::new(
                Arc::new(RoutedProfile::new(Profile::default())),
                &label,
                self.direction,
                &self.metrics,
                now,
            ))),
        };
        let mut balancer = Balancer::new(fastrand::Rng::new());
        if let Some(set) = &endpoints {
            let addrs: Vec<_> = set.endpoints.iter().map(|e| e.addr).collect();
            balancer.update_set(&addrs, now);
        }
        log::debug!("{dst}: new {} destination", self.direction.as_str());
        self.table.insert(
            key.clone(),
            Box::new(Destination {
                authority: self.metrics.authority(self.direction, &label),
                name: key,
                label,
                router,
                endpoints,
                waiters: Vec::new(),
                active: 0,
                last_used: now,
                balancer,
                connect_retries: self.metrics.connect_retries(self.direction),
                watch,
            }),
        );
    }

    /// The destination for `name:port`, starting its discovery if it is new.
    pub fn get_or_start(
        &mut self,
        dst: &str,
        name: &str,
        port: u16,
        now: Instant,
    ) -> Result<&mut Destination, StartFailed> {
        if !self.table.contains_key(dst) {
            let watch = self.discovery.watch(name, port).map_err(StartFailed)?;
            self.insert(dst, dst, watch, None, now);
        }
        let d = self.table.get_mut(dst).expect("inserted above");
        d.last_used = now;
        Ok(d)
    }

    pub fn get(&self, dst: &str) -> Option<&Destination> {
        self.table.get(dst).map(|d| &**d)
    }

    pub fn get_mut(&mut self, dst: &str) -> Option<&mut Destination> {
        self.table.get_mut(dst).map(|d| &mut **d)
    }

    /// Takes the newest snapshot from every discovery channel and swaps it in,
    /// and starts the backends that new traffic splits name. Sessions parked
    /// on a destination that changed go to `woken`; they check for themselves
    /// whether what they wait for is there now.
    pub fn drain(&mut self, now: Instant, woken: &mut Vec<Waiter>) {
        let mut backends = Vec::new();
        for d in self.table.values_mut() {
            let mut changed = false;
            if let Some(rx) = &d.watch.profile {
                if let Some(s) = newest(rx) {
                    self.swap_profile.swap_latency(s.at.elapsed());
                    if self.direction == Direction::Outbound {
                        adopt_profile_endpoint(d, &s.value.profile);
                    }
                    let label = &d.label;
                    let router = Router::new(s.value, label, self.direction, &self.metrics, now);
                    backends.extend(router.backends.iter().cloned());
                    d.router = Some(Rc::new(router));
                    changed = true;
                }
            }
            if let Some(s) = newest(&d.watch.endpoints) {
                self.swap_endpoints.swap_latency(s.at.elapsed());
                let addrs: Vec<_> = s.value.endpoints.iter().map(|e| e.addr).collect();
                d.balancer.update_set(&addrs, now);
                d.endpoints = Some(s.value);
                changed = true;
            }
            if changed {
                woken.append(&mut d.waiters);
            }
        }
        for backend in backends {
            if let Err(e) = self.start(&backend, now) {
                log::warn!(
                    "{backend}: cannot start discovery for split backend: {}",
                    e.0
                );
            }
        }
    }

    /// Makes sure `name:port` has a destination entry (for split backends).
    pub fn start(&mut self, dst: &str, now: Instant) -> Result<&mut Destination, StartFailed> {
        let (name, port) = dst
            .rsplit_once(':')
            .and_then(|(n, p)| Some((n.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| StartFailed(std::io::Error::other(format!("{dst} is not name:port"))))?;
        self.get_or_start(dst, &name, port, now)
    }

    /// Evicts destinations idle for longer than `idle`, and joins discovery
    /// threads that have finished.
    pub fn evict_idle(&mut self, now: Instant, idle: Duration) {
        let evicted = self.table.extract_if(|_, d| {
            d.active == 0
                && d.waiters.is_empty()
                && now.saturating_duration_since(d.last_used) >= idle
        });
        for (name, d) in evicted {
            log::debug!("{name}: evicting idle destination");
            self.dying.extend(d.watch.hang_up());
        }
        self.join_finished();
    }

    fn join_finished(&mut self) {
        let mut i = 0;
        while i < self.dying.len() {
            if self.dying[i].is_finished() {
                let t = self.dying.swap_remove(i);
                let name = t.thread().name().unwrap_or("discovery").to_string();
                if t.join().is_err() {
                    log::error!("discovery thread {name} panicked");
                }
            } else {
                i += 1;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Each destination as `/destinations` shows it.
    pub fn views(&self) -> impl Iterator<Item = DestinationView<'_>> {
        self.table.values().map(|d| DestinationView {
            direction: self.direction,
            name: &d.name,
            endpoints: d.endpoints.as_deref(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Hangs up every destination and joins all discovery threads (shutdown;
    /// blocks until they exit, which they do at once).
    pub fn shutdown(&mut self) {
        for (_, d) in self.table.drain() {
            self.dying.extend(d.watch.hang_up());
        }
        for t in self.dying.drain(..) {
            let name = t.thread().name().unwrap_or("discovery").to_string();
            if t.join().is_err() {
                log::error!("discovery thread {name} panicked");
            }
        }
    }
}

fn newest<T>(rx: &crossbeam_channel::Receiver<T>) -> Option<T> {
    let mut last = None;
    loop {
        match rx.try_recv() {
            Ok(v) => last = Some(v),
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return last,
        }
    }
}
