//! Traffic split: which `dst_overrides` backend serves one attempt
//! (behaviour reference §5).
//!
//! Owned by the event-loop thread: one [`Split`] is built per profile snapshot
//! (the weights come from `profile::WeightedDst`, already filtered of weight 0 by
//! `discovery/convert.rs`) and asked once per attempt, so each retry re-picks, as
//! in Linkerd where the split sits inside the retry layer. Randomness comes from
//! a `fastrand::Rng` the caller passes in, seedable for tests. Nothing here does
//! I/O.
//!
//! Linkerd draws among *ready* backends only (a backend that cannot take the
//! request gets weight 0 for that draw); [`Split::pick_ready`] does that, with
//! readiness decided by the caller (for spoke: the backend has endpoints).

use crate::profile::WeightedDst;

/// Cumulative weights of a profile's `dst_overrides`, built once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// `cumulative[i]` is the sum of weights `0..=i`; u64 so that any number of
    /// u32 weights adds up without overflow.
    cumulative: Vec<u64>,
}

impl Split {
    /// The split over `dsts`, in their order (indices returned by `pick` index
    /// `dsts`).
    pub fn new(dsts: &[WeightedDst]) -> Split {
        Split::from_weights(dsts.iter().map(|d| d.weight))
    }

    /// The split over bare weights. A weight of 0 is allowed and never chosen.
    pub fn from_weights(weights: impl IntoIterator<Item = u32>) -> Split {
        let mut total = 0u64;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total = total.saturating_add(u64::from(w));
                total
            })
            .collect();
        Split { cumulative }
    }

    /// Number of backends, weight 0 included.
    pub fn len(&self) -> usize {
        self.cumulative.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cumulative.is_empty()
    }

    /// Sum of all weights.
    pub fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Weight of backend `i` (0 when out of range).
    pub fn weight(&self, i: usize) -> u64 {
        let below = match i.checked_sub(1) {
            Some(j) => self.cumulative.get(j).copied().unwrap_or(0),
            None => 0,
        };
        self.cumulative
            .get(i)
            .map_or(0, |c| c.saturating_sub(below))
    }

    /// A backend index drawn with probability proportional to its weight;
    /// `None` when there is none (or all weights are 0).
    pub fn pick(&self, rng: &mut fastrand::Rng) -> Option<usize> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let r = rng.u64(..total);
        // The first backend whose cumulative weight passes `r`; a zero-weight
        // backend shares its cumulative value with the one before and is skipped.
        Some(self.cumulative.partition_point(|&c| c <= r))
    }

    /// Like [`Split::pick`], but only among backends for which `ready(i)` holds;
    /// `None` when no backend with weight is ready (the caller waits).
    pub fn pick_ready(
        &self,
        rng: &mut fastrand::Rng,
        ready: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let total: u64 = (0..self.len())
            .filter(|&i| ready(i))
            .map(|i| self.weight(i))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = rng.u64(..total);
        for i in (0..self.len()).filter(|&i| ready(i)) {
            let w = self.weight(i);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        // Unreachable while `ready` answers the same twice; say no rather than
        // guess if it does not.
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dst(authority: &str, weight: u32) -> WeightedDst {
        WeightedDst {
            authority: authority.to_string(),
            weight,
        }
    }

    fn counts(n: usize, mut pick: impl FnMut() -> Option<usize>, len: usize) -> Vec<usize> {
        let mut c = vec![0; len];
        for _ in 0..n {
            c[pick().expect("a backend")] += 1;
        }
        c
    }

    #[test]
    fn eighty_twenty() {
        let split = Split::new(&[dst("books-v1:80", 8000), dst("books-v2:80", 2000)]);
        let mut rng = fastrand::Rng::with_seed(1);
        let c = counts(100_000, || split.pick(&mut rng), 2);
        let share = c[0] as f64 / 100_000.0;
        assert!((0.79..=0.81).contains(&share), "{c:?}");
    }

    #[test]
    fn three_way_in_decimillis() {
        // The controller sends weights in decimillis: 5000 + 3000 + 2000.
        let split = Split::from_weights([5000, 3000, 2000]);
        assert_eq!(split.total(), 10_000);
        let mut rng = fastrand::Rng::with_seed(2);
        let c = counts(100_000, || split.pick(&mut rng), 3);
        for (got, want) in c.iter().zip([0.5, 0.3, 0.2]) {
            let share = *got as f64 / 100_000.0;
            assert!((share - want).abs() < 0.01, "{c:?}");
        }
    }

    #[test]
    fn empty_and_single() {
        let mut rng = fastrand::Rng::with_seed(3);
        let empty = Split::new(&[]);
        assert!(empty.is_empty());
        assert_eq!(empty.pick(&mut rng), None);
        assert_eq!(empty.pick_ready(&mut rng, |_| true), None);
        let one = Split::new(&[dst("a:80", 7)]);
        for _ in 0..100 {
            assert_eq!(one.pick(&mut rng), Some(0));
        }
    }

    #[test]
    fn zero_weights_are_never_chosen() {
        let mut rng = fastrand::Rng::with_seed(4);
        let split = Split::from_weights([0, 1, 0, 1, 0]);
        let c = counts(10_000, || split.pick(&mut rng), 5);
        assert_eq!((c[0], c[2], c[4]), (0, 0, 0), "{c:?}");
        assert!(c[1] > 4_000 && c[3] > 4_000, "{c:?}");
        assert_eq!(Split::from_weights([0, 0]).pick(&mut rng), None);
        assert_eq!(split.weight(1), 1);
        assert_eq!(split.weight(2), 0);
        assert_eq!(split.weight(9), 0);
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let mut rng = fastrand::Rng::with_seed(5);
        let split = Split::from_weights([u32::MAX, u32::MAX, 1]);
        assert_eq!(split.total(), 2 * u64::from(u32::MAX) + 1);
        let c = counts(10_000, || split.pick(&mut rng), 3);
        assert!(c[0] > 4_000 && c[1] > 4_000, "{c:?}");
    }

    #[test]
    fn only_ready_backends_are_drawn() {
        let mut rng = fastrand::Rng::with_seed(6);
        let split = Split::from_weights([8, 1, 1]);
        let c = counts(10_000, || split.pick_ready(&mut rng, |i| i != 0), 3);
        assert_eq!(c[0], 0);
        assert!((4_500..5_500).contains(&c[1]), "{c:?}");
        assert_eq!(split.pick_ready(&mut rng, |_| false), None);
        // A ready backend of weight 0 does not count.
        let zero = Split::from_weights([0, 5]);
        assert_eq!(zero.pick_ready(&mut rng, |i| i == 0), None);
        assert_eq!(zero.pick_ready(&mut rng, |_| true), Some(1));
    }

    #[test]
    fn same_seed_same_choices() {
        let split = Split::from_weights([1, 2, 3, 4]);
        let run = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..100).map(|_| split.pick(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }
}
