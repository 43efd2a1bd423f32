//! Exponential backoff with jitter for discovery reconnects (pure; used by the
//! `profile:` and `endpoints:` threads in `discovery::watch`).
//!
//! Same shape as Linkerd's `exp-backoff`: the base delay is `min * 2^attempt`
//! capped at `max`; a uniform random jitter in `[0, base * jitter]` is added, and
//! the total never exceeds `max`.

use std::time::Duration;

use crate::config::BackoffConfig;

/// The delay before reconnect attempt number `attempt` (0 for the first), given a
/// uniform random number `rand01` in `[0, 1)`.
pub fn delay(cfg: &BackoffConfig, attempt: u32, rand01: f64) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(31));
    let base = cfg.min.saturating_mul(factor).min(cfg.max);
    let jitter = base.mul_f64((cfg.jitter * rand01.clamp(0.0, 1.0)).min(1e6));
    base.saturating_add(jitter).min(cfg.max)
}

/// Attempt counter over [`delay`]; reset after a message arrives.
#[derive(Debug, Clone)]
pub struct Backoff {
    cfg: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    pub fn new(cfg: BackoffConfig) -> Self {
        Self { cfg, attempt: 0 }
    }

    /// The next delay, drawing the jitter from `fastrand`.
    pub fn next_delay(&mut self) -> Duration {
        let d = delay(&self.cfg, self.attempt, fastrand::f64());
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min_ms: u64, max_ms: u64, jitter: f64) -> BackoffConfig {
        BackoffConfig {
            min: Duration::from_millis(min_ms),
            max: Duration::from_millis(max_ms),
            jitter,
        }
    }

    #[test]
    fn doubles_from_min_and_caps_at_max() {
        let c = cfg(100, 1000, 0.0);
        let got: Vec<u64> = (0..6)
            .map(|n| delay(&c, n, 0.5).as_millis() as u64)
            .collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_is_bounded_and_never_passes_max() {
        let c = cfg(100, 1000, 0.1);
        assert_eq!(delay(&c, 0, 0.0), Duration::from_millis(100));
        assert_eq!(delay(&c, 0, 0.999_999).as_millis(), 109);
        assert_eq!(delay(&c, 10, 0.999), Duration::from_millis(1000));
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        let c = cfg(100, 60_000, 100.0);
        assert_eq!(delay(&c, u32::MAX, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(cfg(10, 1000, 0.0));
        assert_eq!(b.next_delay(), Duration::from_millis(10));
        assert_eq!(b.next_delay(), Duration::from_millis(20));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(10));
    }
}
