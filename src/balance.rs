//! Endpoint choice for one destination: power of two choices over PeakEWMA
//! load, as Linkerd balances (behaviour reference §6; Tower's `p2c` and
//! `load::peak_ewma`).
//!
//! Owned by the event-loop thread, one [`Balancer`] per endpoint set in the
//! destination table (`proxy/destinations.rs`); the sets come from
//! `endpoints.rs` snapshots. The event loop tells it what happened (request
//! started, response head arrived, request abandoned, connect refused or
//! succeeded) and asks it where the next request goes. Time is passed in as
//! `Instant`s and randomness comes from an owned, seedable `fastrand::Rng`, so
//! the tests are deterministic. Nothing here does I/O.
//!
//! Load of an endpoint is `rtt_estimate × (pending + 1)`:
//!
//! - a sample above the estimate replaces it (the *peak*);
//! - a lower sample is blended in with weight `1 - exp(-Δt/decay)`, where `Δt`
//!   is the time since the estimate last changed;
//! - reading the load also decays the estimate toward zero the same way, so an
//!   endpoint that has not been tried for a while looks cheap again and gets a
//!   fresh sample. (Decays compose: `exp(-a)·exp(-b) = exp(-(a+b))`, so how often
//!   the load is read does not change the result.)
//!
//! Connection failures are not in Tower's balancer (there the endpoint stack
//! reports "not ready"); here an endpoint whose connection failed (refused,
//! unreachable, timed out, reset or closed before a response) leaves rotation
//! for an exponential backoff, comes back when it expires, and is forgiven
//! (the backoff starts again from the shortest) only once it answers a
//! request. A failure also counts as a response of [`FAILURE_RTT`] in its load:
//! an endpoint that fails fast must look expensive, never cheap, so it does
//! not draw traffic in the moments it is back in rotation. When every endpoint
//! is out of rotation, [`Balancer::pick`] says how long to wait for the first
//! to come back rather than sending a request to one that just failed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::conn_failure::ConnFailure;

/// RTT assumed for an endpoint with no samples yet (Linkerd's `DEFAULT_EWMA`).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Time constant of the RTT decay (Linkerd's `DEFAULT_EWMA`).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// First out-of-rotation period after a refused connect.
pub const MIN_CONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest out-of-rotation period; each further refusal doubles up to this.
pub const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(10);
/// The RTT sample a connection failure counts as (the default connect timeout):
/// with the peak rule it replaces any lower estimate at once, and decays back
/// over a few decay periods.
pub const FAILURE_RTT: Duration = Duration::from_secs(1);

/// Where the next request to a destination goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// This endpoint.
    Ready(SocketAddr),
    /// Every endpoint is out of rotation after failures: the first comes back
    /// at `until`; `cause` is how its last connection failed.
    Wait {
        until: Instant,
        cause: Option<ConnFailure>,
    },
    /// The set is empty.
    Empty,
}

/// Peak-EWMA load of one endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct PeakEwma {
    rtt_estimate_ns: f64,
    last_update: Instant,
    pending: u32,
}

impl PeakEwma {
    /// A fresh estimate of `default_rtt`, as of `now`, with nothing pending.
    pub fn new(default_rtt: Duration, now: Instant) -> PeakEwma {
        PeakEwma {
            rtt_estimate_ns: nanos(default_rtt),
            last_update: now,
            pending: 0,
        }
    }

    /// The load: the estimate decayed to `now`, times `pending + 1`.
    pub fn cost(&mut self, now: Instant, decay: Duration) -> f64 {
        let estimate = self.observe(0.0, now, decay);
        estimate * f64::from(self.pending.saturating_add(1))
    }

    /// Folds in one RTT sample taken at `now`; returns the new estimate (ns).
    pub fn sample(&mut self, rtt: Duration, now: Instant, decay: Duration) -> f64 {
        self.observe(nanos(rtt), now, decay)
    }

    /// Current RTT estimate in nanoseconds, as of its last update.
    pub fn rtt_estimate_ns(&self) -> f64 {
        self.rtt_estimate_ns
    }

    /// Requests started and not yet finished or abandoned.
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// Tower's `RttEstimate::update`: a peak replaces the estimate, anything
    /// lower moves it toward the sample by how long it has been since the last
    /// update. A sample of 0 is a pure decay.
    fn observe(&mut self, rtt_ns: f64, now: Instant, decay: Duration) -> f64 {
        if self.rtt_estimate_ns < rtt_ns {
            self.rtt_estimate_ns = rtt_ns;
        } else {
            let elapsed = nanos(now.saturating_duration_since(self.last_update));
            // A zero decay would divide by zero: treat it as "forget at once".
            let keep = match nanos(decay) {
                d if d > 0.0 => (-elapsed / d).exp(),
                _ => 0.0,
            };
            self.rtt_estimate_ns = self.rtt_estimate_ns * keep + rtt_ns * (1.0 - keep);
        }
        // A clock read out of order must not move the reference point back.
        self.last_update = self.last_update.max(now);
        self.rtt_estimate_ns
    }
}

/// Nanoseconds as `f64`; exact well beyond any latency we measure.
fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// One endpoint in the balancer.
#[derive(Clone, Debug)]
struct Slot {
    addr: SocketAddr,
    load: PeakEwma,
    /// Connection failures since the endpoint last answered a request.
    failures: u32,
    /// Out of rotation until then.
    retry_at: Option<Instant>,
    /// How its last connection failed, while `failures > 0`.
    last_failure: Option<ConnFailure>,
}

impl Slot {
    fn available(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| at <= now)
    }
}

/// P2C over the endpoints of one destination; see the module header.
#[derive(Debug)]
pub struct Balancer {
    /// Sorted by address (found by binary search: most destinations have a
    /// few endpoints, and a hash index would cost more than it saves).
    slots: Vec<Slot>,
    rng: fastrand::Rng,
    default_rtt: Duration,
    decay: Duration,
    /// Indices of the endpoints in rotation, rebuilt by each `pick`; kept to
    /// reuse its allocation.
    scratch: Vec<usize>,
}

impl Balancer {
    /// An empty balancer with Linkerd's defaults (30ms, 10s). Give it
    /// `fastrand::Rng::new()` in production and a seeded one in tests.
    pub fn new(rng: fastrand::Rng) -> Balancer {
        Balancer::with_params(DEFAULT_RTT, DEFAULT_DECAY, rng)
    }

    /// An empty balancer with a given default RTT and decay time.
    pub fn with_params(default_rtt: Duration, decay: Duration, rng: fastrand::Rng) -> Balancer {
        Balancer {
            slots: Vec::new(),
            rng,
            default_rtt,
            decay,
            scratch: Vec::new(),
        }
    }

    /// Replaces the endpoint set. Endpoints that stay keep their load, pending
    /// count and backoff; new ones start at the default RTT as of `now`.
    /// A repeated address counts once.
    pub fn update_set(&mut self, addrs: &[SocketAddr], now: Instant) {
        let mut wanted = addrs.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut old = std::mem::take(&mut self.slots).into_iter().peekable();
        let mut slots = Vec::with_capacity(wanted.len());
        for addr in wanted {
            while old.next_if(|s| s.addr < addr).is_some() {}
            let slot = old.next_if(|s| s.addr == addr).unwrap_or_else(|| Slot {
                addr,
                load: PeakEwma::new(self.default_rtt, now),
                failures: 0,
                retry_at: None,
                last_failure: None,
            });
            slots.push(slot);
        }
        self.slots = slots;
    }

    /// Number of endpoints, in rotation or not.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether `addr` is in the current set.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.position(addr).is_some()
    }

    /// The endpoint for the next request, skipping those in `excluded` (the
    /// ones that already failed for this request).
    ///
    /// Two distinct endpoints in rotation are drawn at random and the cheaper
    /// wins (the first drawn on a tie). With one in rotation, it is chosen.
    /// When every endpoint in rotation is excluded, they are all candidates
    /// again: their backoff has passed, so trying once more beats waiting.
    /// With none in rotation, the answer is to wait for the first to return.
    pub fn pick(&mut self, now: Instant, excluded: &[SocketAddr]) -> Pick {
        self.scratch.clear();
        self.scratch.extend(
            (0..self.slots.len()).filter(|&i| {
                self.slots[i].available(now) && !excluded.contains(&self.slots[i].addr)
            }),
        );
        if self.scratch.is_empty() && !excluded.is_empty() {
            self.scratch
                .extend((0..self.slots.len()).filter(|&i| self.slots[i].available(now)));
        }
        let chosen = match self.scratch.len() {
            0 => {
                let Some(first) = self.slots.iter().min_by_key(|s| s.retry_at) else {
                    return Pick::Empty;
                };
                return Pick::Wait {
                    until: first.retry_at.unwrap_or(now),
                    cause: first.last_failure,
                };
            }
            1 => self.scratch[0],
            n => {
                let a = self.rng.usize(..n);
                let mut b = self.rng.usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (self.scratch[a], self.scratch[b]);
                let cost_a = self.slots[a].load.cost(now, self.decay);
                let cost_b = self.slots[b].load.cost(now, self.decay);
                if cost_a <= cost_b {
                    a
                } else {
                    b
                }
            }
        };
        Pick::Ready(self.slots[chosen].addr)
    }

    /// A request was sent to `addr`.
    pub fn start(&mut self, addr: SocketAddr) {
        if let Some(s) = self.slot(addr) {
            s.load.pending = s.load.pending.saturating_add(1);
        }
    }

    /// The response head of a request to `addr` arrived after `rtt` (Linkerd
    /// measures at the first response frame). Ignored for an address no longer
    /// in the set.
    /// An answer forgives the endpoint its past connection failures.
    pub fn finish(&mut self, addr: SocketAddr, rtt: Duration, now: Instant) {
        let decay = self.decay;
        if let Some(s) = self.slot(addr) {
            s.load.pending = s.load.pending.saturating_sub(1);
            s.load.sample(rtt, now, decay);
            s.failures = 0;
            s.last_failure = None;
        }
    }

    /// A request to `addr` ended without a response (error, timeout, client
    /// gone): no RTT sample.
    pub fn abandon(&mut self, addr: SocketAddr) {
        if let Some(s) = self.slot(addr) {
            s.load.pending = s.load.pending.saturating_sub(1);
        }
    }

    /// A request's connection to `addr` failed (`cause`): the request is no
    /// longer pending there, the failure counts as a [`FAILURE_RTT`] response,
    /// and the endpoint leaves rotation for 100ms, doubling with each further
    /// failure before it answers a request, up to 10s.
    pub fn failed(&mut self, addr: SocketAddr, cause: ConnFailure, now: Instant) {
        let decay = self.decay;
        if let Some(s) = self.slot(addr) {
            s.load.pending = s.load.pending.saturating_sub(1);
            s.load.sample(FAILURE_RTT, now, decay);
            let backoff = MIN_CONNECT_BACKOFF
                .saturating_mul(2u32.saturating_pow(s.failures.min(31)))
                .min(MAX_CONNECT_BACKOFF);
            s.failures = s.failures.saturating_add(1);
            s.retry_at = Some(now.checked_add(backoff).unwrap_or(now));
            s.last_failure = Some(cause);
        }
    }

    /// A connect to `addr` succeeded: back in rotation. Its failure count
    /// stays until it answers a request, so an endpoint that accepts and then
    /// resets every connection backs off longer each time.
    pub fn connected(&mut self, addr: SocketAddr) {
        if let Some(s) = self.slot(addr) {
            s.retry_at = None;
        }
    }

    /// The load of `addr` as `pick` would see it at `now` (ns × (pending+1)),
    /// for metrics and tests. Like `pick`, this decays the stored estimate.
    pub fn cost(&mut self, addr: SocketAddr, now: Instant) -> Option<f64> {
        let decay = self.decay;
        self.slot(addr).map(|s| s.load.cost(now, decay))
    }

    /// End of the latest backoff of `addr` (possibly already past), or `None`
    /// if it is in rotation since its last successful connect.
    pub fn backoff_until(&self, addr: SocketAddr) -> Option<Instant> {
        self.slots[self.position(addr)?].retry_at
    }

    fn position(&self, addr: SocketAddr) -> Option<usize> {
        self.slots.binary_search_by_key(&addr, |s| s.addr).ok()
    }

    fn slot(&mut self, addr: SocketAddr) -> Option<&mut Slot> {
        match self.position(addr) {
            Some(i) => self.slots.get_mut(i),
            None => {
                log::debug!("balancer: {addr} is no longer in the endpoint set");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    const MS: f64 = 1_000_000.0;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 8080))
    }

    /// The endpoint `pick` chooses with nothing excluded (`None` when it says
    /// to wait, or the set is empty).
    fn pick(b: &mut Balancer, now: Instant) -> Option<SocketAddr> {
        match b.pick(now, &[]) {
            Pick::Ready(a) => Some(a),
            Pick::Wait { .. } | Pick::Empty => None,
        }
    }

    fn balancer(seed: u64, addrs: &[SocketAddr], now: Instant) -> Balancer {
        let mut b = Balancer::new(fastrand::Rng::with_seed(seed));
        b.update_set(addrs, now);
        b
    }

    /// How many of `n` picks at `now` went to each address.
    use std::collections::HashMap;

    fn tally(b: &mut Balancer, n: usize, now: Instant) -> HashMap<SocketAddr, usize> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            let a = pick(b, now).expect("non-empty");
            *counts.entry(a).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn default_estimate_decays_toward_zero() {
        // Tower's `default_decay` scenario: 10ms default, 1s decay.
        let t = Instant::now();
        let mut l = PeakEwma::new(ms(10), t);
        let decay = Duration::from_secs(1);
        assert_eq!(l.cost(t, decay), 10.0 * MS);
        let c = l.cost(t + ms(100), decay);
        assert!(9.0 * MS < c && c < 10.0 * MS, "{c}");
        let c = l.cost(t + ms(200), decay);
        assert!(8.0 * MS < c && c < 9.0 * MS, "{c}");
    }

    #[test]
    fn peaks_replace_and_lower_samples_blend_in() {
        // Tower's `compound_decay` scenario, with the clock passed in.
        let t = Instant::now();
        let decay = Duration::from_secs(1);
        let mut l = PeakEwma::new(ms(20), t);
        assert_eq!(l.cost(t, decay), 20.0 * MS);
        l.pending += 1; // sent at t+100
        assert!(l.cost(t + ms(100), decay) > 20.0 * MS);
        l.pending += 1; // sent at t+200
        assert!(l.cost(t + ms(200), decay) > 40.0 * MS);
        l.pending -= 1;
        l.sample(ms(200), t + ms(300), decay); // first response: a peak
        assert_eq!(l.cost(t + ms(300), decay), 400.0 * MS);
        l.pending -= 1;
        l.sample(ms(200), t + ms(400), decay); // equal: blends to the same
        assert_eq!(l.cost(t + ms(400), decay), 200.0 * MS);
        assert!(l.cost(t + ms(1_400), decay) < 100.0 * MS);
        assert!(l.cost(t + ms(11_400), decay) < 0.1 * MS);
    }

    #[test]
    fn lower_sample_weight_depends_on_elapsed_time() {
        let t = Instant::now();
        let decay = Duration::from_secs(10);
        let mut l = PeakEwma::new(ms(100), t);
        // Right after the last update a low sample barely moves the estimate.
        let e = l.sample(ms(10), t, decay);
        assert_eq!(e, 100.0 * MS);
        // After one decay period it lands 1/e of the way from the sample.
        let e = l.sample(ms(10), t + Duration::from_secs(10), decay);
        let want = 10.0 * MS + 90.0 * MS * (-1.0f64).exp();
        assert!((e - want).abs() < 1.0, "{e} vs {want}");
    }

    #[test]
    fn empty_and_single() {
        let t = Instant::now();
        let mut b = balancer(1, &[], t);
        assert!(b.is_empty());
        assert_eq!(b.pick(t, &[]), Pick::Empty);
        b.update_set(&[addr(1)], t);
        for _ in 0..10 {
            assert_eq!(b.pick(t, &[]), Pick::Ready(addr(1)));
        }
        b.update_set(&[], t);
        assert_eq!(b.pick(t, &[]), Pick::Empty);
    }

    #[test]
    fn duplicates_count_once() {
        let t = Instant::now();
        let b = balancer(1, &[addr(1), addr(2), addr(1)], t);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn equal_endpoints_share_the_load() {
        let t = Instant::now();
        let mut b = balancer(3, &[addr(1), addr(2), addr(3)], t);
        let counts = tally(&mut b, 3_000, t);
        for a in 1..=3 {
            let n = counts.get(&addr(a)).copied().unwrap_or(0);
            assert!((800..1_200).contains(&n), "{a}: {n}");
        }
    }

    #[test]
    fn pending_requests_steer_picks_away() {
        let t = Instant::now();
        let mut b = balancer(4, &[addr(1), addr(2)], t);
        for _ in 0..3 {
            b.start(addr(1));
        }
        // Both are always the two candidates, and 30ms×4 > 30ms×1.
        assert_eq!(tally(&mut b, 100, t).get(&addr(1)), None);
        for _ in 0..3 {
            b.abandon(addr(1));
        }
        b.start(addr(2));
        assert_eq!(tally(&mut b, 100, t).get(&addr(2)), None);
        // More abandons than starts do not underflow.
        b.abandon(addr(2));
        b.abandon(addr(2));
        assert_eq!(b.cost(addr(2), t), Some(30.0 * MS));
    }

    #[test]
    fn slower_endpoint_gets_few_requests() {
        // A request every 2ms for a minute; endpoint 1 answers in 10ms and
        // endpoint 2 in 30ms. Completions are processed before each arrival.
        let t0 = Instant::now();
        let mut b = balancer(5, &[addr(1), addr(2)], t0);
        let latency = |a: SocketAddr| if a == addr(1) { ms(10) } else { ms(30) };
        let mut in_flight: BinaryHeap<Reverse<(Instant, SocketAddr, Instant)>> = BinaryHeap::new();
        let mut slow = 0usize;
        let mut total = 0usize;
        for i in 0..30_000u64 {
            let now = t0 + ms(2 * i);
            while let Some(Reverse((done, a, sent))) = in_flight.peek().copied() {
                if done > now {
                    break;
                }
                in_flight.pop();
                b.finish(a, done - sent, done);
            }
            let a = pick(&mut b, now).expect("non-empty");
            b.start(a);
            in_flight.push(Reverse((now + latency(a), a, now)));
            // Count after a one-second warm-up.
            if i >= 500 {
                total += 1;
                slow += usize::from(a == addr(2));
            }
        }
        let share = slow as f64 / total as f64;
        // Costs balance near 6% of traffic on the slow endpoint (9.4% seen).
        assert!(share < 0.15, "slow endpoint got {:.1}%", share * 100.0);
        assert!(slow > 0, "the slow endpoint is still probed");
    }

    #[test]
    fn idle_slow_endpoint_is_retried_after_decay() {
        // One request at a time: endpoint 1 answers in 10ms, endpoint 2 peaked
        // at 30ms. Endpoint 2 is avoided until its estimate, decaying while it
        // is idle, falls below endpoint 1's.
        let t0 = Instant::now();
        let mut b = Balancer::with_params(ms(10), DEFAULT_DECAY, fastrand::Rng::with_seed(6));
        b.update_set(&[addr(1), addr(2)], t0);
        b.start(addr(2));
        b.finish(addr(2), ms(30), t0);
        let mut now = t0;
        let mut slow_again = None;
        while now < t0 + Duration::from_secs(20) {
            let a = pick(&mut b, now).expect("non-empty");
            if a == addr(2) {
                slow_again = Some(now - t0);
                break;
            }
            b.start(a);
            now += ms(10);
            b.finish(a, ms(10), now);
        }
        // 30ms·exp(-t/10s) < 10ms once t > 10s·ln 3 ≈ 11s.
        let after = slow_again.expect("slow endpoint retried");
        assert!(
            after > Duration::from_secs(10) && after < Duration::from_secs(12),
            "{after:?}"
        );
    }

    #[test]
    fn a_failed_endpoint_leaves_rotation_with_backoff() {
        let t = Instant::now();
        let refused = ConnFailure::Refused;
        let mut b = balancer(7, &[addr(1), addr(2), addr(3)], t);
        b.start(addr(1));
        b.failed(addr(1), refused, t);
        assert_eq!(b.backoff_until(addr(1)), Some(t + ms(100)));
        assert_eq!(tally(&mut b, 300, t + ms(99)).get(&addr(1)), None);
        // Back in rotation at the end of the backoff, and chosen when the others
        // are busy enough to cost more than its penalty.
        for _ in 0..40 {
            b.start(addr(2));
            b.start(addr(3));
        }
        let back = tally(&mut b, 300, t + ms(100));
        assert!(back.get(&addr(1)).copied().unwrap_or(0) > 50, "{back:?}");
        // Further failures double the backoff up to 10s.
        let mut now = t + ms(100);
        for want in [200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000] {
            b.failed(addr(1), refused, now);
            assert_eq!(b.backoff_until(addr(1)), Some(now + ms(want)));
            assert_eq!(tally(&mut b, 100, now + ms(want - 1)).get(&addr(1)), None);
            now += ms(want);
        }
        // A successful connect puts it back at once, but only an answer resets
        // the backoff: one that accepts and then resets backs off ever longer.
        b.failed(addr(1), refused, now);
        b.connected(addr(1));
        assert_eq!(b.backoff_until(addr(1)), None);
        b.failed(addr(1), ConnFailure::Reset, now);
        assert_eq!(b.backoff_until(addr(1)), Some(now + ms(10_000)));
        b.connected(addr(1));
        b.start(addr(1));
        b.finish(addr(1), ms(1), now);
        b.failed(addr(1), refused, now);
        assert_eq!(b.backoff_until(addr(1)), Some(now + ms(100)));
    }

    #[test]
    fn a_failure_counts_as_a_slow_response_and_a_fast_failure_draws_nothing() {
        let t = Instant::now();
        let mut b = balancer(11, &[addr(1), addr(2)], t);
        // addr(2) answers in 5ms; addr(1) fails at once, every time it is tried.
        let mut now = t;
        let mut tried = [0usize; 2];
        for _ in 0..2_000 {
            let a = pick(&mut b, now).expect("one is always in rotation");
            b.start(a);
            if a == addr(1) {
                tried[0] += 1;
                b.failed(a, ConnFailure::Reset, now);
            } else {
                tried[1] += 1;
                b.finish(a, ms(5), now);
            }
            now += ms(1);
        }
        assert!(
            tried[0] < 20,
            "the failing endpoint was tried {tried:?} times"
        );
        assert!(b.cost(addr(1), now) > b.cost(addr(2), now));
    }

    #[test]
    fn with_all_out_of_rotation_the_answer_is_to_wait_for_the_first_back() {
        let t = Instant::now();
        let mut b = balancer(8, &[addr(1), addr(2), addr(3)], t);
        b.failed(addr(2), ConnFailure::ConnectTimeout, t);
        b.failed(addr(3), ConnFailure::Refused, t + ms(10));
        b.failed(addr(1), ConnFailure::Refused, t + ms(20));
        assert_eq!(
            b.pick(t + ms(30), &[]),
            Pick::Wait {
                until: t + ms(100),
                cause: Some(ConnFailure::ConnectTimeout)
            }
        );
        // Only one back in rotation: it is chosen, whatever its load.
        for _ in 0..5 {
            b.start(addr(2));
        }
        assert_eq!(pick(&mut b, t + ms(100)), Some(addr(2)));
        // Two back, the idle one wins.
        for _ in 0..10 {
            assert_eq!(pick(&mut b, t + ms(110)), Some(addr(3)));
        }
    }

    #[test]
    fn endpoints_that_failed_for_this_request_are_skipped_while_others_remain() {
        let t = Instant::now();
        let mut b = balancer(12, &[addr(1), addr(2), addr(3)], t);
        for _ in 0..50 {
            assert_eq!(b.pick(t, &[addr(1), addr(3)]), Pick::Ready(addr(2)));
            let a = b.pick(t, &[addr(2)]);
            assert!(
                a == Pick::Ready(addr(1)) || a == Pick::Ready(addr(3)),
                "{a:?}"
            );
        }
        // Every one excluded and in rotation: they are candidates again.
        let all = [addr(1), addr(2), addr(3)];
        assert!(matches!(b.pick(t, &all), Pick::Ready(_)));
        // Excluded and out of rotation: wait for the first back.
        b.failed(addr(1), ConnFailure::Refused, t);
        b.failed(addr(2), ConnFailure::Refused, t);
        assert_eq!(b.pick(t, &[addr(1), addr(2)]), Pick::Ready(addr(3)));
        b.failed(addr(3), ConnFailure::Closed, t + ms(5));
        assert_eq!(
            b.pick(t + ms(5), &all),
            Pick::Wait {
                until: t + ms(100),
                cause: Some(ConnFailure::Refused)
            }
        );
    }

    #[test]
    fn update_keeps_surviving_state() {
        let t = Instant::now();
        let mut b = balancer(9, &[addr(1), addr(2)], t);
        b.start(addr(1));
        b.finish(addr(1), ms(500), t);
        b.start(addr(1));
        b.failed(addr(2), ConnFailure::Refused, t);
        b.update_set(&[addr(3), addr(1)], t);
        assert!(!b.contains(addr(2)));
        assert_eq!(b.cost(addr(1), t), Some(1_000.0 * MS));
        assert_eq!(b.cost(addr(3), t), Some(30.0 * MS));
        // Events for a removed endpoint are ignored.
        b.finish(addr(2), ms(1), t);
        b.abandon(addr(2));
        b.failed(addr(2), ConnFailure::Refused, t);
        b.connected(addr(2));
        assert_eq!(b.cost(addr(2), t), None);
        // Re-added, it starts fresh.
        b.update_set(&[addr(1), addr(2), addr(3)], t);
        assert_eq!(b.backoff_until(addr(2)), None);
        assert_eq!(b.cost(addr(2), t), Some(30.0 * MS));
    }

    #[test]
    fn same_seed_same_choices() {
        let t = Instant::now();
        let addrs: Vec<SocketAddr> = (1..=8).map(addr).collect();
        let run = |seed| {
            let mut b = balancer(seed, &addrs, t);
            (0..200)
                .map(|i| {
                    let now = t + ms(i);
                    let a = pick(&mut b, now).expect("non-empty");
                    b.start(a);
                    if i % 3 == 0 {
                        b.finish(a, ms(i % 50), now);
                    }
                    a
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn zero_decay_forgets_at_once() {
        let t = Instant::now();
        let mut l = PeakEwma::new(ms(30), t);
        assert_eq!(l.sample(ms(5), t, Duration::ZERO), 5.0 * MS);
        assert_eq!(l.cost(t, Duration::ZERO), 0.0);
    }
}
