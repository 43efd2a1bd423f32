//! Latency histogram with Linkerd's millisecond buckets, and the pure quantile estimate
//! over cumulative buckets that both a live `Histogram` and scraped `/metrics` text use.
//!
//! Threads: any thread may `observe` (the event loop per response, discovery threads per
//! swap); the admin endpoint on the event loop reads a `HistogramSnapshot` when rendering.
//! Rendering lives in `metrics/render.rs`; the registry that owns the series in `metrics/mod.rs`.
//!
//! Bucketing compares the exact duration with each bound (`le="1"` holds everything up to
//! and including 1.000 ms), and the sum is kept in microseconds and rendered in ms with a
//! fractional part. Linkerd truncates to whole milliseconds first, so a 1.5 ms response is
//! in its `le="1"` bucket and in our `le="2"`; ours is what `le` literally says.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Inclusive upper bounds, in milliseconds, of the finite buckets. A final `+Inf` bucket
/// follows them. These are Linkerd's latency buckets, so existing dashboards line up.
pub const LATENCY_BUCKETS_MS: [u64; 25] = [
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1_000, 2_000, 3_000, 4_000, 5_000,
    10_000, 20_000, 30_000, 40_000, 50_000,
];

/// Finite buckets plus `+Inf`.
pub const BUCKET_COUNT: usize = LATENCY_BUCKETS_MS.len() + 1;

/// One observation adds at most this much to the sum (about 12.7 days in microseconds), so
/// a nonsense duration cannot wrap the `u64` sum; its bucket is `+Inf` either way.
const MAX_OBSERVATION_US: u64 = 1 << 40;

/// The shared cells. Per-bucket (not cumulative) counts, so `observe` touches one bucket;
/// the cumulative view is computed when reading.
#[derive(Debug, Default)]
struct Cells {
    counts: [AtomicU64; BUCKET_COUNT],
    sum_us: AtomicU64,
}

/// A latency histogram handle. Cloning shares the same cells (an `Arc`), so a caller keeps
/// a clone and the registry keeps another for rendering.
///
/// `observe` is two relaxed `fetch_add`s and a search over 25 constants: no lock and no
/// allocation. Relaxed is enough because each cell is an independent monotonic count; a
/// render that races an `observe` may see the bucket before the sum, which Prometheus
/// tolerates (the next scrape is consistent again).
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    cells: Arc<Cells>,
}

/// A point-in-time copy of a histogram, read bucket by bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative); index `LATENCY_BUCKETS_MS.len()` is `+Inf`.
    pub counts: [u64; BUCKET_COUNT],
    /// Sum of all observations in microseconds.
    pub sum_us: u64,
}

// === impl Histogram ===

impl Histogram {
    /// A histogram not attached to any registry (the registry creates its own series
    /// through `Family::series`; this is for tests and ad-hoc measurements).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one duration. Hot path: no allocation, no lock.
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.cells.counts[bucket_index(us)].fetch_add(1, Ordering::Relaxed);
        self.cells
            .sum_us
            .fetch_add(us.min(MAX_OBSERVATION_US), Ordering::Relaxed);
    }

    /// Reads every cell once.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut counts = [0u64; BUCKET_COUNT];
        for (slot, cell) in counts.iter_mut().zip(self.cells.counts.iter()) {
            *slot = cell.load(Ordering::Relaxed);
        }
        HistogramSnapshot {
            counts,
            sum_us: self.cells.sum_us.load(Ordering::Relaxed),
        }
    }

    /// Estimated `q`-quantile in milliseconds; see `bucket_quantile`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.snapshot().quantile(q)
    }
}

/// Index of the first bucket whose bound (in µs) is at least `us`; `+Inf` if none is.
fn bucket_index(us: u64) -> usize {
    LATENCY_BUCKETS_MS.partition_point(|&ms| ms.saturating_mul(1_000) < us)
}

// === impl HistogramSnapshot ===

impl HistogramSnapshot {
    /// Total number of observations (the `+Inf` cumulative count, hence `_count`).
    pub fn count(&self) -> u64 {
        self.counts
            .iter()
            .fold(0u64, |acc, c| acc.saturating_add(*c))
    }

    /// Sum of observations in milliseconds.
    pub fn sum_ms(&self) -> f64 {
        self.sum_us as f64 / 1_000.0
    }

    /// `(upper bound in ms, cumulative count)` for every bucket, ending with `+Inf`:
    /// the shape `bucket_quantile` takes and `_bucket` samples carry.
    pub fn cumulative(&self) -> Vec<(f64, f64)> {
        let mut running = 0u64;
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                running = running.saturating_add(*c);
                let bound = LATENCY_BUCKETS_MS
                    .get(i)
                    .map_or(f64::INFINITY, |ms| *ms as f64);
                (bound, running as f64)
            })
            .collect()
    }

    /// Estimated `q`-quantile in milliseconds; see `bucket_quantile`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        bucket_quantile(&self.cumulative(), q)
    }
}

/// Estimates the `q`-quantile (0 ≤ q ≤ 1) from cumulative buckets, the way Prometheus'
/// `histogram_quantile` does: find the bucket holding rank `q * total` and interpolate
/// linearly between its lower and upper bound (the first bucket starts at 0).
///
/// `buckets` are `(upper bound, cumulative count)` sorted by bound, the last one `+Inf`.
/// A rank that falls in `+Inf` yields the highest finite bound, since nothing better is
/// known. Returns `None` when `q` is outside [0, 1], there are no observations, the
/// `+Inf` bucket is missing, or a count is negative or not finite. Counts that decrease
/// (possible in text scraped while it was being updated) are treated as flat.
pub fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let (last_bound, _) = buckets.last()?;
    if *last_bound != f64::INFINITY {
        return None;
    }
    if buckets.iter().any(|(_, c)| !c.is_finite() || *c < 0.0) {
        return None;
    }
    // Make the counts monotonic before using them.
    let mut cumulative = Vec::with_capacity(buckets.len());
    let mut highest = 0.0f64;
    for (bound, count) in buckets {
        highest = highest.max(*count);
        cumulative.push((*bound, highest));
    }
    let total = highest;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    // The first bucket that reaches the rank and holds something; requiring a non-zero
    // count keeps q = 0 from landing in a leading empty bucket (a division by zero).
    let index = cumulative
        .iter()
        .position(|(_, c)| *c >= rank && *c > 0.0)?;
    let (upper, count) = cumulative[index];
    if upper == f64::INFINITY {
        // Only the +Inf bucket reaches the rank: report the highest finite bound.
        return index.checked_sub(1).map(|prev| cumulative[prev].0);
    }
    let (lower, below) = match index.checked_sub(1) {
        Some(prev) => cumulative[prev],
        None => {
            if upper <= 0.0 {
                return Some(upper);
            }
            (0.0, 0.0)
        }
    };
    let in_bucket = count - below;
    if in_bucket <= 0.0 {
        return Some(lower);
    }
    Some(lower + (upper - lower) * ((rank - below) / in_bucket))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_bounds_are_inclusive_and_exact() {
        assert_eq!(bucket_index(0), 0, "zero is in le=1");
        assert_eq!(bucket_index(1_000), 0, "exactly 1ms is in le=1");
        assert_eq!(bucket_index(1_001), 1, "just over 1ms is in le=2");
        assert_eq!(bucket_index(5_000), 4);
        assert_eq!(bucket_index(5_001), 5, "le=10");
        assert_eq!(bucket_index(50_000_000), 24, "50s is in le=50000");
        assert_eq!(bucket_index(50_000_001), 25, "past 50s is +Inf");
        assert_eq!(bucket_index(u64::MAX), 25);
    }

    #[test]
    fn observe_counts_and_sums() {
        let h = Histogram::new();
        h.observe(ms(1));
        h.observe(Duration::from_micros(1_500));
        h.observe(ms(7));
        h.observe(ms(60_000));
        let snap = h.snapshot();
        assert_eq!(snap.counts[0], 1, "1ms");
        assert_eq!(snap.counts[1], 1, "1.5ms goes to le=2");
        assert_eq!(snap.counts[5], 1, "7ms goes to le=10");
        assert_eq!(snap.counts[25], 1, "60s goes to +Inf");
        assert_eq!(snap.count(), 4);
        assert_eq!(snap.sum_us, 1_000 + 1_500 + 7_000 + 60_000_000);
        assert_eq!(snap.sum_ms(), 60_009.5);
    }

    #[test]
    fn cumulative_view_ends_with_inf_and_total() {
        let h = Histogram::new();
        h.observe(ms(3));
        h.observe(ms(3));
        h.observe(ms(100));
        let cum = h.snapshot().cumulative();
        assert_eq!(cum.len(), BUCKET_COUNT);
        assert_eq!(cum[0], (1.0, 0.0));
        assert_eq!(cum[2], (3.0, 2.0));
        assert_eq!(cum[9], (50.0, 2.0));
        assert_eq!(cum[10], (100.0, 3.0));
        assert_eq!(cum[25], (f64::INFINITY, 3.0));
    }

    #[test]
    fn absurd_duration_does_not_wrap_the_sum() {
        let h = Histogram::new();
        h.observe(Duration::MAX);
        h.observe(Duration::MAX);
        let snap = h.snapshot();
        assert_eq!(snap.counts[25], 2);
        assert_eq!(snap.sum_us, 2 * MAX_OBSERVATION_US);
    }

    #[test]
    fn quantile_interpolates_within_the_bucket() {
        // Four observations in (10, 20]: p50 is halfway through that bucket.
        let h = Histogram::new();
        for _ in 0..4 {
            h.observe(ms(15));
        }
        assert_eq!(h.quantile(0.5), Some(15.0));
        assert_eq!(h.quantile(1.0), Some(20.0));
        assert_eq!(h.quantile(0.25), Some(12.5));
        assert_eq!(
            h.quantile(0.0),
            Some(10.0),
            "q=0 is the lower edge of the first used bucket"
        );
    }

    #[test]
    fn quantile_in_first_bucket_starts_at_zero() {
        let buckets = [(1.0, 2.0), (2.0, 2.0), (f64::INFINITY, 2.0)];
        assert_eq!(bucket_quantile(&buckets, 0.5), Some(0.5));
    }

    #[test]
    fn quantile_across_buckets() {
        // 90 in le=5 (in (4,5]), 10 in (100,200].
        let buckets = [
            (4.0, 0.0),
            (5.0, 90.0),
            (100.0, 90.0),
            (200.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(bucket_quantile(&buckets, 0.5), Some(4.0 + 50.0 / 90.0));
        assert_eq!(bucket_quantile(&buckets, 0.99), Some(190.0));
    }

    #[test]
    fn quantile_in_inf_bucket_is_highest_finite_bound() {
        let h = Histogram::new();
        h.observe(ms(90_000));
        assert_eq!(h.quantile(0.5), Some(50_000.0));
        assert_eq!(bucket_quantile(&[(f64::INFINITY, 3.0)], 0.5), None);
    }

    #[test]
    fn quantile_rejects_what_it_cannot_answer() {
        assert_eq!(Histogram::new().quantile(0.5), None, "no observations");
        let ok = [(1.0, 1.0), (f64::INFINITY, 1.0)];
        assert_eq!(bucket_quantile(&ok, -0.1), None);
        assert_eq!(bucket_quantile(&ok, 1.1), None);
        assert_eq!(bucket_quantile(&ok, f64::NAN), None);
        assert_eq!(bucket_quantile(&[], 0.5), None);
        assert_eq!(bucket_quantile(&[(1.0, 1.0)], 0.5), None, "no +Inf bucket");
        assert_eq!(
            bucket_quantile(&[(1.0, f64::NAN), (f64::INFINITY, 1.0)], 0.5),
            None
        );
        assert_eq!(
            bucket_quantile(&[(1.0, -1.0), (f64::INFINITY, 1.0)], 0.5),
            None
        );
    }

    #[test]
    fn quantile_tolerates_decreasing_counts() {
        let buckets = [(1.0, 4.0), (2.0, 3.0), (f64::INFINITY, 4.0)];
        assert_eq!(bucket_quantile(&buckets, 0.5), Some(0.5));
    }
}
