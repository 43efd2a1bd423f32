//! Metrics: the registry of Prometheus families and the cheap handles threads update.
//!
//! Threads: every thread that counts something. The event loop updates per-request
//! handles; discovery threads update their own; the admin endpoint (on the event loop)
//! calls `Registry::render`. There are no globals and no `thread_local!`: a `Registry`
//! (an `Arc` inside) is created in `main` and handed to whoever registers families.
//!
//! Neighbours: `histogram.rs` (Linkerd's latency buckets, quantile estimate),
//! `render.rs` (text exposition format out, and a small parser back in for `spoke demo`),
//! `proxy.rs` (the typed families spoke emits: `ProxyMetrics` and its handles), `tcp.rs`
//! (the `tcp_*` handles), `tls.rs` (Linkerd's TLS labels, which both key their series by).
//!
//! Cost model, a design property rather than something a test can check:
//! - A series handle (`Counter`, `Gauge`, `Histogram`) is an `Arc` around atomics.
//!   Updating it is one or two relaxed atomic operations: no lock, no allocation, no
//!   label formatting. Relaxed suffices because every cell is an independent count that
//!   only the renderer reads, and nothing else is ordered by it.
//! - Creating a handle (`Family::series`) allocates its label set and takes the family's
//!   mutex; callers do it once per authority/route/status and keep the handle.
//! - Rendering takes the registry mutex and then each family's mutex in turn; it never
//!   blocks an increment because increments take no lock.
//!
//! Retention: the registry holds one clone of every series `Arc`. Dropping idle series
//! later (Linkerd's `METRICS_RETAIN_IDLE`) can be added without changing the hot path:
//! a series whose `Arc::strong_count` is 1 is held by no handle and can be removed from
//! its family's map once it has sat unchanged for the retention period.

mod histogram;
mod proxy;
mod render;
mod tcp;
mod tls;

pub use histogram::{
    bucket_quantile, Histogram, HistogramSnapshot, BUCKET_COUNT, LATENCY_BUCKETS_MS,
};
pub use proxy::{
    AuthorityMetrics, ConnectRetryMetrics, Direction, DiscoveryKind, DiscoveryMetrics,
    ProxyMetrics, RouteMetrics, TlsSlot,
};
pub use render::{
    escape_label_value, histogram_quantile, parse_line, parse_text, ParseError, Sample,
};
pub use tcp::{Peer, TcpMetrics, TcpSeries};
pub use tls::{NoTlsReason, TlsLabel};

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Errors from registering a family. Series creation cannot fail once a family exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsError {
    /// The name is not a valid Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
    InvalidName(String),
    /// The name, or one of the sample names it exposes (`_bucket`, `_sum`, `_count` for a
    /// histogram), is already used by a family of another kind or name.
    Conflict {
        /// The family being registered.
        name: String,
        /// The family already registered that it clashes with.
        existing: String,
    },
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsError::InvalidName(name) => write!(f, "invalid metric name {name:?}"),
            MetricsError::Conflict { name, existing } => write!(
                f,
                "metric family {name:?} clashes with registered family {existing:?}"
            ),
        }
    }
}

impl std::error::Error for MetricsError {}

/// The Prometheus type of a family, as written on its `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

// === Labels ===

/// An ordered label set identifying one series of a family.
///
/// Keys are `Cow<'static, str>` so the fixed keys (`direction`, `authority`, ...) cost
/// nothing, while computed keys (`rt_<key>`) can be owned. Keys are rendered in the order
/// given; the typed handles in `proxy.rs` always build them in the same order, so one
/// logical series is always one key. Sets compare (and therefore render) in that order,
/// pair by pair, which is what makes the output deterministic.
///
/// A set is immutable and shared: cloning one (the handles keep a base set for the
/// series they add later, and the family map keeps one per series) copies a pointer.
/// With 1,000 destinations there are about ten sets per destination, most of them
/// sharing a base.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Arc<[(Cow<'static, str>, Arc<str>)]>);

impl Default for Labels {
    fn default() -> Self {
        Labels(Arc::new([]))
    }
}

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a label (builder form). See `push`.
    pub fn with(mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Arc<str>>) -> Self {
        self.push(key, value);
        self
    }

    /// Adds a label. A key that is not a valid Prometheus label name has each invalid
    /// character replaced by `_` (route label keys come from the control plane); a key
    /// already present is dropped with a warning, since a series cannot repeat a label.
    /// This copies the set: label sets are built once per series, not per request.
    pub fn push(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Arc<str>>) {
        let key = sanitize_label_name(key.into());
        if self.0.iter().any(|(k, _)| *k == key) {
            log::warn!("metrics: dropping repeated label {key:?}");
            return;
        }
        let mut pairs = Vec::with_capacity(self.0.len() + 1);
        pairs.extend_from_slice(&self.0);
        pairs.push((key, value.into()));
        self.0 = pairs.into();
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), &**v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Turns any string into a valid label name: invalid characters become `_`, and a
/// leading digit (or an empty name) gets a `_` in front.
fn sanitize_label_name(key: Cow<'static, str>) -> Cow<'static, str> {
    if is_valid_label_name(&key) {
        return key;
    }
    let mut fixed = String::with_capacity(key.len() + 1);
    if key.chars().next().is_none_or(|c| c.is_ascii_digit()) {
        fixed.push('_');
    }
    fixed.extend(
        key.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    Cow::Owned(fixed)
}

fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

// === Counter, Gauge ===

/// A monotonically increasing count. Clones share the cell.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hot path: one relaxed `fetch_add`.
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (open connections). Signed, so an unmatched `dec`
/// shows as a negative number instead of wrapping to 2^64.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

// === Family ===

/// A registered family: its name, help and every series created so far.
#[derive(Debug)]
struct FamilyInner<S> {
    name: String,
    help: String,
    series: Mutex<BTreeMap<Labels, S>>,
}

/// A handle on one registered family; `series` gives the handle for one label set.
/// Cloning shares the family.
#[derive(Debug)]
pub struct Family<S> {
    inner: Arc<FamilyInner<S>>,
}

pub type CounterFamily = Family<Counter>;
pub type GaugeFamily = Family<Gauge>;
pub type HistogramFamily = Family<Histogram>;

impl<S> Clone for Family<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Clone + Default> Family<S> {
    fn detached(name: &str, help: &str) -> Self {
        Self {
            inner: Arc::new(FamilyInner {
                name: name.to_owned(),
                help: help.to_owned(),
                series: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The series for `labels`, created (at zero) if new. Not for the hot path: it takes
    /// the family mutex and may allocate. Keep the returned handle and update that.
    pub fn series(&self, labels: Labels) -> S {
        lock(&self.inner.series).entry(labels).or_default().clone()
    }
}

/// Writes `family`'s series after `cursor.after` until `out` reaches `budget`;
/// `true` when the family is finished.
fn render_family<S: render::Exposed>(
    family: &Family<S>,
    cursor: &mut RenderCursor,
    out: &mut String,
    budget: usize,
) -> bool {
    let inner = &family.inner;
    let series = lock(&inner.series);
    let after = cursor.after.take();
    let rest = match &after {
        None => series.range::<Labels, _>(..),
        Some(last) => series.range::<Labels, _>((Bound::Excluded(last), Bound::Unbounded)),
    };
    for (labels, one) in rest {
        if !cursor.started {
            render::header(out, &inner.name, &inner.help, S::KIND);
            cursor.started = true;
        }
        one.write(out, &inner.name, labels);
        if out.len() >= budget {
            cursor.after = Some(labels.clone());
            return false;
        }
    }
    true
}

/// Where a paced render (`Registry::render_some`) stopped.
#[derive(Debug, Default)]
pub struct RenderCursor {
    /// Index of the family being written, in registration order.
    family: usize,
    /// Its `# HELP`/`# TYPE` lines are written.
    started: bool,
    /// The last series written in it.
    after: Option<Labels>,
}

/// Locks a map even if a thread panicked while holding it: every critical section here
/// is a single map operation, so a poisoned map is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One entry of the registry, typed by kind so rendering knows how to read it.
#[derive(Clone, Debug)]
enum Registered {
    Counter(CounterFamily),
    Gauge(GaugeFamily),
    Histogram(HistogramFamily),
}

impl Registered {
    fn name(&self) -> &str {
        match self {
            Registered::Counter(f) => f.name(),
            Registered::Gauge(f) => f.name(),
            Registered::Histogram(f) => f.name(),
        }
    }

    fn kind(&self) -> MetricKind {
        match self {
            Registered::Counter(_) => MetricKind::Counter,
            Registered::Gauge(_) => MetricKind::Gauge,
            Registered::Histogram(_) => MetricKind::Histogram,
        }
    }
}

/// The sample names a family of `kind` writes, which must not collide across families.
fn exposed_names(name: &str, kind: MetricKind) -> Vec<String> {
    match kind {
        MetricKind::Counter | MetricKind::Gauge => vec![name.to_owned()],
        MetricKind::Histogram => vec![
            name.to_owned(),
            format!("{name}_bucket"),
            format!("{name}_sum"),
            format!("{name}_count"),
        ],
    }
}

// === Registry ===

/// Every family, in registration order (which is the render order). Cheap to clone:
/// clones share the same families.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    families: Arc<Mutex<Vec<Registered>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or finds) a counter family. Registering the same name and kind again
    /// returns the existing family, keeping its first help text.
    pub fn counter_family(&self, name: &str, help: &str) -> Result<CounterFamily, MetricsError> {
        self.register(
            name,
            help,
            MetricKind::Counter,
            Registered::Counter,
            |r| match r {
                Registered::Counter(f) => Some(f.clone()),
                _ => None,
            },
        )
    }

    /// Registers (or finds) a gauge family.
    pub fn gauge_family(&self, name: &str, help: &str) -> Result<GaugeFamily, MetricsError> {
        self.register(
            name,
            help,
            MetricKind::Gauge,
            Registered::Gauge,
            |r| match r {
                Registered::Gauge(f) => Some(f.clone()),
                _ => None,
            },
        )
    }

    /// Registers (or finds) a histogram family with `LATENCY_BUCKETS_MS`.
    pub fn histogram_family(
        &self,
        name: &str,
        help: &str,
    ) -> Result<HistogramFamily, MetricsError> {
        self.register(
            name,
            help,
            MetricKind::Histogram,
            Registered::Histogram,
            |r| match r {
                Registered::Histogram(f) => Some(f.clone()),
                _ => None,
            },
        )
    }

    fn register<S: Clone + Default>(
        &self,
        name: &str,
        help: &str,
        kind: MetricKind,
        wrap: fn(Family<S>) -> Registered,
        same_kind: fn(&Registered) -> Option<Family<S>>,
    ) -> Result<Family<S>, MetricsError> {
        if !is_valid_metric_name(name) {
            return Err(MetricsError::InvalidName(name.to_owned()));
        }
        let mut families = lock(&self.families);
        if let Some(existing) = families.iter().find(|r| r.name() == name) {
            return same_kind(existing).ok_or_else(|| MetricsError::Conflict {
                name: name.to_owned(),
                existing: existing.name().to_owned(),
            });
        }
        let wanted = exposed_names(name, kind);
        for existing in families.iter() {
            let taken = exposed_names(existing.name(), existing.kind());
            if wanted.iter().any(|n| taken.contains(n)) {
                return Err(MetricsError::Conflict {
                    name: name.to_owned(),
                    existing: existing.name().to_owned(),
                });
            }
        }
        let family = Family::detached(name, help);
        families.push(wrap(family.clone()));
        Ok(family)
    }

    /// Appends the whole registry in the Prometheus text exposition format (version
    /// 0.0.4): families in registration order, each with `# HELP` and `# TYPE`, series
    /// sorted by label set. Families without series are left out.
    pub fn render(&self, out: &mut String) {
        let mut cursor = RenderCursor::default();
        while !self.render_some(&mut cursor, out, usize::MAX) {}
    }

    /// Appends the exposition from where `cursor` stopped until `out` is at least
    /// `budget` bytes long (it stops after a whole series) or the registry is done;
    /// `true` when done. `/metrics` is written this way, a piece at a time as the
    /// socket drains, so a scrape costs a bounded buffer however many series exist.
    /// A series created between pieces shows up if it sorts after the cursor.
    pub fn render_some(&self, cursor: &mut RenderCursor, out: &mut String, budget: usize) -> bool {
        let families = lock(&self.families).clone();
        while let Some(family) = families.get(cursor.family) {
            let finished = match family {
                Registered::Counter(f) => render_family(f, cursor, out, budget),
                Registered::Gauge(f) => render_family(f, cursor, out, budget),
                Registered::Histogram(f) => render_family(f, cursor, out, budget),
            };
            if !finished {
                return false;
            }
            *cursor = RenderCursor {
                family: cursor.family + 1,
                ..RenderCursor::default()
            };
        }
        true
    }

    /// `render` into a new string.
    pub fn render_to_string(&self) -> String {
        let mut out = String::new();
        self.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counter_renders_with_help_type_and_labels() {
        let registry = Registry::new();
        let family = registry
            .counter_family("request_total", "Requests seen.")
            .expect("valid name");
        let c = family.series(
            Labels::new()
                .with("direction", "outbound")
                .with("authority", "a.b:80"),
        );
        c.inc();
        c.add(2);
        assert_eq!(
            registry.render_to_string(),
            "# HELP request_total Requests seen.\n\
             # TYPE request_total counter\n\
             request_total{direction=\"outbound\",authority=\"a.b:80\"} 3\n"
        );
    }

    #[test]
    fn series_without_labels_has_no_braces() {
        let registry = Registry::new();
        let g = registry
            .gauge_family("open", "Open things.")
            .expect("valid name")
            .series(Labels::new());
        g.inc();
        g.inc();
        g.dec();
        assert_eq!(
            registry.render_to_string(),
            "# HELP open Open things.\n# TYPE open gauge\nopen 1\n"
        );
    }

    #[test]
    fn gauge_can_go_negative_and_be_set() {
        let g = Gauge::new();
        g.dec();
        assert_eq!(g.get(), -1);
        g.set(7);
        assert_eq!(g.get(), 7);
    }

    #[test]
    fn histogram_renders_cumulative_buckets_sum_and_count() {
        let registry = Registry::new();
        let h = registry
            .histogram_family("lat_ms", "Latency.")
            .expect("valid name")
            .series(Labels::new().with("k", "v"));
        h.observe(Duration::from_micros(1_500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(90));
        let text = registry.render_to_string();
        let mut expected = String::from("# HELP lat_ms Latency.\n# TYPE lat_ms histogram\n");
        let mut cumulative = 0;
        for bound in LATENCY_BUCKETS_MS {
            if bound == 2 || bound == 3 {
                cumulative += 1;
            }
            expected.push_str(&format!(
                "lat_ms_bucket{{k=\"v\",le=\"{bound}\"}} {cumulative}\n"
            ));
        }
        expected.push_str("lat_ms_bucket{k=\"v\",le=\"+Inf\"} 3\n");
        expected.push_str("lat_ms_sum{k=\"v\"} 90004.5\n");
        expected.push_str("lat_ms_count{k=\"v\"} 3\n");
        assert_eq!(text, expected);
    }

    #[test]
    fn label_values_are_escaped() {
        let registry = Registry::new();
        registry
            .counter_family("x_total", "Help with \\ and\nnewline.")
            .expect("valid name")
            .series(Labels::new().with("path", "a\\b \"q\"\nz"))
            .inc();
        assert_eq!(
            registry.render_to_string(),
            "# HELP x_total Help with \\\\ and\\nnewline.\n\
             # TYPE x_total counter\n\
             x_total{path=\"a\\\\b \\\"q\\\"\\nz\"} 1\n"
        );
    }

    #[test]
    fn same_labels_give_the_same_series() {
        let family = Registry::new()
            .counter_family("c_total", "C.")
            .expect("valid name");
        let a = family.series(Labels::new().with("k", "v"));
        let b = family.series(Labels::new().with("k", "v"));
        a.inc();
        b.inc();
        assert_eq!(a.get(), 2);
    }

    #[test]
    fn families_keep_registration_order_and_series_sort_by_labels() {
        let registry = Registry::new();
        let z = registry.counter_family("z_total", "Z.").expect("valid");
        let a = registry.counter_family("a_total", "A.").expect("valid");
        a.series(Labels::new().with("k", "b")).inc();
        a.series(Labels::new().with("k", "a")).inc();
        z.series(Labels::new()).inc();
        // An empty family renders nothing.
        registry.gauge_family("empty", "E.").expect("valid");
        assert_eq!(
            registry.render_to_string(),
            "# HELP z_total Z.\n# TYPE z_total counter\nz_total 1\n\
             # HELP a_total A.\n# TYPE a_total counter\n\
             a_total{k=\"a\"} 1\na_total{k=\"b\"} 1\n"
        );
    }

    #[test]
    fn registration_is_idempotent_per_kind_and_rejects_clashes() {
        let registry = Registry::new();
        let first = registry.counter_family("x_total", "X.").expect("valid");
        let again = registry
            .counter_family("x_total", "other")
            .expect("same kind");
        again.series(Labels::new()).inc();
        assert_eq!(first.series(Labels::new()).get(), 1, "same family");
        let clash = registry.gauge_family("x_total", "X.");
        assert!(
            matches!(clash, Err(MetricsError::Conflict { ref existing, .. }) if existing == "x_total"),
            "{clash:?}"
        );
        registry.histogram_family("lat", "L.").expect("valid");
        let clash = registry.counter_family("lat_count", "C.");
        assert!(
            matches!(clash, Err(MetricsError::Conflict { ref existing, .. }) if existing == "lat"),
            "{clash:?}"
        );
    }

    #[test]
    fn invalid_names_are_rejected_with_a_message() {
        let err = Registry::new()
            .counter_family("bad-name", "B.")
            .expect_err("dash is invalid");
        assert_eq!(err, MetricsError::InvalidName("bad-name".into()));
        assert_eq!(err.to_string(), "invalid metric name \"bad-name\"");
        assert!(Registry::new().counter_family("", "E.").is_err());
        assert!(Registry::new().counter_family("9x", "E.").is_err());
        assert!(Registry::new().counter_family("ns:x_total", "E.").is_ok());
    }

    #[test]
    fn label_keys_are_sanitized_and_not_repeated() {
        let labels = Labels::new()
            .with("rt_a-b.c", "1")
            .with("9lives", "2")
            .with("", "3")
            .with("ok", "4")
            .with("ok", "5");
        let pairs: Vec<_> = labels.iter().collect();
        assert_eq!(
            pairs,
            vec![("rt_a_b_c", "1"), ("_9lives", "2"), ("_", "3"), ("ok", "4")]
        );
    }

    #[test]
    fn two_threads_incrementing_one_counter_add_up() {
        let registry = Registry::new();
        let family = registry.counter_family("n_total", "N.").expect("valid");
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let c = family.series(Labels::new().with("k", "v"));
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        c.inc();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("incrementing thread panicked");
        }
        assert_eq!(family.series(Labels::new().with("k", "v")).get(), 200_000);
        assert!(registry
            .render_to_string()
            .contains("n_total{k=\"v\"} 200000\n"));
    }

    #[test]
    fn a_paced_render_resumes_after_the_last_series_it_wrote() {
        let registry = Registry::new();
        let a = registry.counter_family("a_total", "A.").expect("valid");
        let h = registry.histogram_family("h_ms", "H.").expect("valid");
        registry.gauge_family("empty", "E.").expect("valid");
        for k in ["b", "d", "f"] {
            a.series(Labels::new().with("k", k)).inc();
            h.series(Labels::new().with("k", k));
        }
        // A budget of one byte: one series per piece.
        let mut cursor = RenderCursor::default();
        let mut pieces = Vec::new();
        loop {
            let mut piece = String::new();
            let done = registry.render_some(&mut cursor, &mut piece, 1);
            pieces.push(piece);
            if done {
                break;
            }
        }
        assert_eq!(pieces.concat(), registry.render_to_string());
        assert!(pieces[0].starts_with("# HELP a_total A.\n# TYPE a_total counter\n"));
        assert_eq!(pieces[1], "a_total{k=\"d\"} 1\n", "no second header");

        // Series created between pieces: one sorting after the cursor is
        // written, one before it is not (the next scrape has it), and nothing
        // is written twice.
        let mut cursor = RenderCursor::default();
        let mut text = String::new();
        assert!(!registry.render_some(&mut cursor, &mut text, 1));
        let budget = text.len() + 1;
        assert!(!registry.render_some(&mut cursor, &mut text, budget));
        a.series(Labels::new().with("k", "a")).inc();
        a.series(Labels::new().with("k", "e")).inc();
        while !registry.render_some(&mut cursor, &mut text, usize::MAX) {}
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("a_total")).collect();
        assert_eq!(
            lines,
            [
                "a_total{k=\"b\"} 1",
                "a_total{k=\"d\"} 1",
                "a_total{k=\"e\"} 1",
                "a_total{k=\"f\"} 1"
            ]
        );
        assert_eq!(text.matches("# TYPE h_ms histogram").count(), 1);
    }

    #[test]
    fn registry_clones_share_families() {
        let registry = Registry::new();
        let clone = registry.clone();
        clone
            .counter_family("shared_total", "S.")
            .expect("valid")
            .series(Labels::new())
            .inc();
        assert!(registry.render_to_string().contains("shared_total 1\n"));
    }
}
