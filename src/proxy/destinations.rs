//! The event loop's destination table: for each `name:port` in use, the router
//! and endpoint set in force, the discovery receivers, and who is waiting.
//!
//! Event-loop thread only. Snapshots arrive from discovery threads
//! (`discovery`), and [`Destinations::drain`] swaps them in between event
//! batches: each swap replaces an `Arc`, so a request that already resolved its
//! route keeps the router it started with. Idle destinations are evicted, which
//! hangs up their discovery threads; the threads are joined once they finish.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::TryRecvError;

use crate::discovery::{Discovery, Watch};
use crate::endpoints::EndpointSet;
use crate::metrics::{
    AuthorityMetrics, DiscoveryKind, DiscoveryMetrics, ProxyMetrics, RouteMetrics,
};
use crate::profile::Profile;
use crate::router::RouteTable;

/// A profile snapshot with the metric handles of its routes, built once per
/// swap so requests never allocate label sets.
pub struct Router {
    pub profile: Arc<Profile>,
    /// The routes with a RegexSet prefilter, so a lookup is one set match
    /// rather than a scan of every route's regex.
    table: RouteTable,
    // Route handles cache their series per status code and so need `&mut`;
    // the router is shared by in-flight requests on this one thread.
    routes: Vec<RefCell<RouteMetrics>>,
    default: RefCell<RouteMetrics>,
}

impl Router {
    fn new(profile: Arc<Profile>, dst: &str, metrics: &ProxyMetrics) -> Router {
        let routes = profile
            .routes
            .iter()
            .map(|r| RefCell::new(metrics.route("outbound", dst, &r.labels)))
            .collect();
        Router {
            table: RouteTable::new(profile.routes.clone()),
            profile,
            routes,
            default: RefCell::new(metrics.route("outbound", dst, &[])),
        }
    }

    /// The route index for a request (`None`: the default route).
    pub fn find(&self, method: &str, path: &str) -> Option<usize> {
        self.table.find(method, path)
    }

    pub fn route_metrics(&self, route: Option<usize>) -> &RefCell<RouteMetrics> {
        route
            .and_then(|i| self.routes.get(i))
            .unwrap_or(&self.default)
    }
}

pub struct Destination {
    pub name: Arc<str>,
    /// `None` until the first profile answer (or immediately the default when
    /// the name is outside the profile suffixes).
    pub router: Option<Rc<Router>>,
    pub endpoints: Option<Arc<EndpointSet>>,
    pub authority: AuthorityMetrics,
    /// Sessions parked until this destination is ready.
    pub waiters: Vec<usize>,
    /// Requests in flight; a destination in use is never evicted.
    pub active: usize,
    pub last_used: Instant,
    next_endpoint: usize,
    watch: Watch,
}

impl Destination {
    pub fn is_ready(&self) -> bool {
        self.router.is_some() && self.endpoints.is_some()
    }

    /// Round robin over the current endpoint set.
    pub fn pick_endpoint(&mut self) -> Option<std::net::SocketAddr> {
        let set = self.endpoints.as_ref()?;
        let eps = &set.endpoints;
        if eps.is_empty() {
            return None;
        }
        let i = self.next_endpoint % eps.len();
        self.next_endpoint = self.next_endpoint.wrapping_add(1);
        Some(eps[i].addr)
    }
}

pub struct Destinations {
    discovery: Discovery,
    metrics: ProxyMetrics,
    swap_profile: DiscoveryMetrics,
    swap_endpoints: DiscoveryMetrics,
    table: HashMap<Arc<str>, Destination>,
    /// Discovery threads that were hung up and not yet joined.
    dying: Vec<JoinHandle<()>>,
}

/// Why a destination could not be started.
pub struct StartFailed(pub std::io::Error);

impl Destinations {
    pub fn new(discovery: Discovery, metrics: ProxyMetrics) -> Self {
        Destinations {
            discovery,
            swap_profile: metrics.discovery(DiscoveryKind::Profile),
            swap_endpoints: metrics.discovery(DiscoveryKind::Endpoints),
            metrics,
            table: HashMap::new(),
            dying: Vec::new(),
        }
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
            let key: Arc<str> = Arc::from(dst);
            let router = match watch.profile {
                Some(_) => None,
                None => Some(Rc::new(Router::new(
                    Arc::new(Profile::default()),
                    dst,
                    &self.metrics,
                ))),
            };
            log::debug!("{dst}: new destination");
            self.table.insert(
                key.clone(),
                Destination {
                    authority: self.metrics.authority("outbound", dst),
                    name: key,
                    router,
                    endpoints: None,
                    waiters: Vec::new(),
                    active: 0,
                    last_used: now,
                    next_endpoint: 0,
                    watch,
                },
            );
        }
        let d = self.table.get_mut(dst).expect("inserted above");
        d.last_used = now;
        Ok(d)
    }

    pub fn get_mut(&mut self, dst: &str) -> Option<&mut Destination> {
        self.table.get_mut(dst)
    }

    /// Takes the newest snapshot from every discovery channel and swaps it in.
    /// Returns the sessions waiting on destinations that changed.
    pub fn drain(&mut self, woken: &mut Vec<usize>) {
        for (name, d) in self.table.iter_mut() {
            let mut changed = false;
            if let Some(rx) = &d.watch.profile {
                if let Some(s) = newest(rx) {
                    self.swap_profile.swap_latency(s.at.elapsed());
                    d.router = Some(Rc::new(Router::new(s.value, name, &self.metrics)));
                    changed = true;
                }
            }
            if let Some(s) = newest(&d.watch.endpoints) {
                self.swap_endpoints.swap_latency(s.at.elapsed());
                d.endpoints = Some(s.value);
                changed = true;
            }
            // Parked requests wait for readiness (a profile *and* endpoints),
            // so they are released only once both have arrived.
            if changed && d.is_ready() {
                woken.append(&mut d.waiters);
            }
        }
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
