//! The retry budget of one profile: Tower's `TpsBudget`, which Linkerd uses to
//! bound retries (behaviour reference §3).
//!
//! Owned by the event-loop thread, one per profile snapshot that has a
//! `retry_budget` (the parameters are `profile::RetryBudget`, validated by
//! `discovery/convert.rs`). On a retryable route, a response classified as a
//! success deposits and a failure withdraws (and is retried only if that
//! succeeds), as Linkerd's retry policy does. Time is passed in, never read here, so the tests are exact.
//!
//! The arithmetic follows Tower exactly, quirks included, because users tune
//! `retryRatio` against Linkerd's behaviour:
//!
//! - amounts: `(deposit, withdraw)` is `(0, 1)` for ratio 0, `(1, trunc(1/ratio))`
//!   for ratio ≤ 1, else `(1000, trunc(1000/ratio))`, so 0.3 behaves like 1/3;
//! - `reserve = min_retries_per_second × whole seconds of ttl × withdraw` is
//!   always available on top of the deposits;
//! - deposits and withdrawals land in a "writer" slot that is committed to one of
//!   ten slots of `ttl/10` when that window ends; a slot is only overwritten when
//!   the ring comes back to it, so a balance lives about ten windows (up to
//!   eleven, depending on when calls land);
//! - the window clock restarts at the moment of the expiring call (not aligned
//!   to window boundaries), as Tower's does.

use std::fmt;
use std::time::{Duration, Instant};

/// Number of slots the `ttl` is divided into (Tower's constant).
const SLOTS: usize = 10;

/// Why a budget could not be built. `convert` already refuses these values, so
/// seeing one means a producer skipped validation.
#[derive(Clone, Debug, PartialEq)]
pub enum BudgetError {
    /// `retry_ratio` is NaN, infinite, negative or above 1000.
    Ratio(f32),
    /// `ttl` is outside 1s..=60s.
    Ttl(Duration),
    /// `min_retries_per_second` does not fit in an `i32`.
    MinRetries(u32),
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetError::Ratio(r) => write!(f, "retry_ratio {r} is not in 0..=1000"),
            BudgetError::Ttl(t) => write!(f, "retry budget ttl {t:?} is not in 1s..=60s"),
            BudgetError::MinRetries(n) => {
                write!(f, "min_retries_per_second {n} exceeds {}", i32::MAX)
            }
        }
    }
}

/// A token bucket over a sliding window; see the module header.
#[derive(Clone, Debug)]
pub struct TpsBudget {
    deposit_amount: i64,
    withdraw_amount: i64,
    /// Always available, never consumed for good: withdrawals against it are
    /// negative entries that expire with the window.
    reserve: i64,
    /// Committed balances of past windows.
    slots: [i64; SLOTS],
    /// Slot the writer is committed to when the current window ends.
    index: usize,
    /// Start of the current window.
    window_start: Instant,
    /// Length of one slot: `ttl / 10`.
    window: Duration,
    /// Changes made during the current window.
    writer: i64,
}

impl TpsBudget {
    /// A budget with the given parameters, its window starting at `now`.
    pub fn new(
        params: &crate::profile::RetryBudget,
        now: Instant,
    ) -> Result<TpsBudget, BudgetError> {
        let ratio = params.retry_ratio;
        if !ratio.is_finite() || !(0.0..=1000.0).contains(&ratio) {
            return Err(BudgetError::Ratio(ratio));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&params.ttl) {
            return Err(BudgetError::Ttl(params.ttl));
        }
        if i32::try_from(params.min_retries_per_second).is_err() {
            return Err(BudgetError::MinRetries(params.min_retries_per_second));
        }
        // `as` truncates toward zero, which is the point: Tower casts the same way.
        let (deposit_amount, withdraw_amount) = if ratio == 0.0 {
            // Deposits earn nothing; only the reserve can be withdrawn.
            (0, 1)
        } else if ratio <= 1.0 {
            (1, (1.0 / ratio) as i64)
        } else {
            (1000, (1000.0 / ratio) as i64)
        };
        let reserve = i64::from(params.min_retries_per_second)
            .saturating_mul(params.ttl.as_secs() as i64)
            .saturating_mul(withdraw_amount);
        Ok(TpsBudget {
            deposit_amount,
            withdraw_amount,
            reserve,
            slots: [0; SLOTS],
            index: 0,
            window_start: now,
            window: params.ttl / SLOTS as u32,
            writer: 0,
        })
    }

    /// Records a successful response (it earns retry credit).
    pub fn deposit(&mut self, now: Instant) {
        self.expire(now);
        self.writer = self.writer.saturating_add(self.deposit_amount);
    }

    /// Asks for one retry; `true` means it may go ahead and has been charged.
    pub fn withdraw(&mut self, now: Instant) -> bool {
        self.expire(now);
        if self.balance() >= self.withdraw_amount {
            self.writer = self.writer.saturating_sub(self.withdraw_amount);
            true
        } else {
            false
        }
    }

    /// Credit currently available, reserve included, in the budget's internal
    /// units (a retry costs [`TpsBudget::withdraw_amount`]). For debugging and
    /// metrics; does not advance the window.
    pub fn balance(&self) -> i64 {
        self.slots
            .iter()
            .fold(self.writer, |acc, s| acc.saturating_add(*s))
            .saturating_add(self.reserve)
    }

    /// What one deposit adds.
    pub fn deposit_amount(&self) -> i64 {
        self.deposit_amount
    }

    /// What one retry costs.
    pub fn withdraw_amount(&self) -> i64 {
        self.withdraw_amount
    }

    /// Ends the current window if it is over: commits the writer to the current
    /// slot and clears every slot skipped since.
    fn expire(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < self.window {
            return;
        }
        self.slots[self.index] = std::mem::take(&mut self.writer);
        // Tower clears one slot per further whole window while more than one
        // window remains: (elapsed - 1ns) / window of them. Computed directly so
        // an idle hour is not a loop of 36,000 steps; past ten, all are clear.
        let window_ns = self.window.as_nanos().max(1);
        let skipped = elapsed.as_nanos().saturating_sub(1) / window_ns;
        let mut idx = (self.index + 1) % SLOTS;
        for _ in 0..skipped.min(SLOTS as u128) {
            self.slots[idx] = 0;
            idx = (idx + 1) % SLOTS;
        }
        let extra = (skipped.saturating_sub(SLOTS as u128) % SLOTS as u128) as usize;
        self.index = (idx + extra) % SLOTS;
        self.window_start = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::RetryBudget;

    fn params(ratio: f32, min_per_sec: u32, ttl_ms: u64) -> RetryBudget {
        RetryBudget {
            retry_ratio: ratio,
            min_retries_per_second: min_per_sec,
            ttl: Duration::from_millis(ttl_ms),
        }
    }

    fn budget(ratio: f32, min_per_sec: u32, ttl_ms: u64, now: Instant) -> TpsBudget {
        TpsBudget::new(&params(ratio, min_per_sec, ttl_ms), now).expect("valid budget")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Withdraws until refused; returns how many succeeded.
    fn drain(b: &mut TpsBudget, now: Instant) -> usize {
        let mut n = 0;
        while b.withdraw(now) {
            n += 1;
            assert!(n < 1_000_000, "budget never ran out");
        }
        n
    }

    #[test]
    fn amounts_follow_tower() {
        let t = Instant::now();
        for (ratio, deposit, withdraw) in [
            (0.0, 0, 1),
            (0.2, 1, 5),
            (1.0, 1, 1),
            (0.3, 1, 3),
            (0.7, 1, 1),
            (2.0, 1000, 500),
            (3.0, 1000, 333),
            (1000.0, 1000, 1),
        ] {
            let b = budget(ratio, 0, 10_000, t);
            assert_eq!(
                (b.deposit_amount(), b.withdraw_amount()),
                (deposit, withdraw),
                "ratio {ratio}"
            );
        }
    }

    #[test]
    fn defaults_give_a_hundred_retries_then_one_per_five_requests() {
        let t = Instant::now();
        let mut b = budget(0.2, 10, 10_000, t);
        assert_eq!(b.balance(), 500);
        assert_eq!(drain(&mut b, t), 100);
        for _ in 0..4 {
            b.deposit(t);
        }
        assert!(!b.withdraw(t), "four requests do not pay for a retry");
        b.deposit(t);
        assert!(b.withdraw(t), "the fifth does");
        assert!(!b.withdraw(t));
        for _ in 0..50 {
            b.deposit(t + ms(500));
        }
        assert_eq!(drain(&mut b, t + ms(500)), 10);
    }

    #[test]
    fn reserve_comes_back_after_the_window() {
        let t = Instant::now();
        let mut b = budget(0.2, 10, 10_000, t);
        assert_eq!(drain(&mut b, t), 100);
        assert!(!b.withdraw(t + ms(5_000)));
        // Withdrawals made at `t` sit in a slot that lives 10 to 11 windows.
        assert!(!b.withdraw(t + ms(9_999)));
        assert_eq!(drain(&mut b, t + ms(11_001)), 100);
    }

    #[test]
    fn zero_ratio_and_zero_minimum_allow_nothing() {
        let t = Instant::now();
        let mut b = budget(0.0, 0, 1_000, t);
        for _ in 0..1000 {
            b.deposit(t);
        }
        assert!(!b.withdraw(t));
        assert!(!b.withdraw(t + ms(100_000)));
    }

    #[test]
    fn zero_ratio_allows_only_the_minimum() {
        let t = Instant::now();
        let mut b = budget(0.0, 3, 2_000, t);
        for _ in 0..1000 {
            b.deposit(t);
        }
        assert_eq!(drain(&mut b, t), 6);
    }

    #[test]
    fn empty_budget_refuses() {
        let t = Instant::now();
        let mut b = budget(1.0, 0, 1_000, t);
        assert!(!b.withdraw(t));
    }

    #[test]
    fn deposits_leak_away() {
        let t = Instant::now();
        let mut b = budget(1.0, 0, 1_000, t);
        b.deposit(t);
        assert!(!b.withdraw(t + ms(3_000)));
    }

    #[test]
    fn slots_slide() {
        // Tower's own slot scenario: ttl 1s, so ten windows of 100ms.
        let t = Instant::now();
        let mut b = budget(0.5, 0, 1_000, t);
        b.deposit(t);
        b.deposit(t);
        // 901ms later both deposits still count.
        assert!(b.withdraw(t + ms(901)));
        // A blank slate two seconds on.
        let t = t + ms(901 + 2_001);
        b.deposit(t);
        b.deposit(t + ms(301));
        b.deposit(t + ms(301 + 801));
        // The first has expired; the second and third pay for one retry.
        assert!(b.withdraw(t + ms(301 + 801)));
        assert!(!b.withdraw(t + ms(301 + 801)));
    }

    #[test]
    fn a_lone_deposit_lasts_one_ttl() {
        // ttl 1s: ten windows of 100ms. With no other calls in between, the
        // slot holding the deposit is cleared once the ring wraps past it.
        let t = Instant::now();
        let mut b = budget(1.0, 0, 1_000, t);
        b.deposit(t);
        assert_eq!(b.balance(), 1);
        assert!(b.withdraw(t + ms(999)));
        let mut b = budget(1.0, 0, 1_000, t);
        b.deposit(t);
        assert!(!b.withdraw(t + ms(1_001)));
        // Nothing carries over a long idle period either.
        let mut b = budget(1.0, 0, 1_000, t);
        b.deposit(t);
        let later = t + Duration::from_secs(3_600);
        assert!(!b.withdraw(later));
        b.deposit(later);
        assert!(b.withdraw(later + ms(1_000)));
    }

    /// Tower's expiry, step by step, to check the closed form against.
    fn reference_expire(b: &mut TpsBudget, now: Instant) {
        let mut elapsed = now.saturating_duration_since(b.window_start);
        if elapsed < b.window {
            return;
        }
        b.slots[b.index] = std::mem::take(&mut b.writer);
        let mut idx = (b.index + 1) % SLOTS;
        while elapsed > b.window {
            b.slots[idx] = 0;
            elapsed -= b.window;
            idx = (idx + 1) % SLOTS;
        }
        b.index = idx;
        b.window_start = now;
    }

    #[test]
    fn closed_form_expiry_matches_the_loop() {
        let t = Instant::now();
        let mut fast = budget(1.0, 0, 1_000, t);
        let mut slow = fast.clone();
        let mut now = t;
        let gaps = [
            0, 99, 100, 101, 200, 201, 250, 999, 1_000, 1_001, 1_370, 12_345, 7, 2_050,
        ];
        for (i, gap) in gaps.into_iter().enumerate() {
            now += ms(gap);
            fast.expire(now);
            reference_expire(&mut slow, now);
            assert_eq!(
                (fast.index, fast.slots, fast.window_start),
                (slow.index, slow.slots, slow.window_start),
                "gap {gap}ms"
            );
            // Leave a distinct mark in each window.
            fast.writer = i as i64 + 1;
            slow.writer = i as i64 + 1;
        }
    }

    #[test]
    fn ratio_truncation_distorts() {
        // 0.3 withdraws 3 per retry: one retry per three requests, like 1/3.
        let t = Instant::now();
        let mut b = budget(0.3, 0, 10_000, t);
        for _ in 0..9 {
            b.deposit(t);
        }
        assert_eq!(drain(&mut b, t), 3);
        // Above 1, each request pays 1000 and a retry costs trunc(1000/ratio).
        let mut b = budget(3.0, 0, 10_000, t);
        b.deposit(t);
        assert_eq!(drain(&mut b, t), 3);
    }

    #[test]
    fn reserve_scales_with_whole_seconds_of_ttl() {
        let t = Instant::now();
        let mut b = budget(1.0, 5, 1_000, t);
        assert_eq!(drain(&mut b, t), 5);
        // Tower uses the whole seconds of ttl: 1.9s counts as 1s.
        let mut b = budget(1.0, 5, 1_900, t);
        assert_eq!(drain(&mut b, t), 5);
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let t = Instant::now() + Duration::from_secs(10);
        let mut b = budget(1.0, 0, 1_000, t);
        b.deposit(t);
        assert!(b.withdraw(t - ms(500)));
    }

    #[test]
    fn bad_parameters_are_errors() {
        let t = Instant::now();
        for (p, err) in [
            (
                params(f32::NAN, 0, 1_000),
                "retry_ratio NaN is not in 0..=1000",
            ),
            (
                params(-0.5, 0, 1_000),
                "retry_ratio -0.5 is not in 0..=1000",
            ),
            (
                params(1000.5, 0, 1_000),
                "retry_ratio 1000.5 is not in 0..=1000",
            ),
            (
                params(0.2, 0, 999),
                "retry budget ttl 999ms is not in 1s..=60s",
            ),
            (
                params(0.2, 0, 60_001),
                "retry budget ttl 60.001s is not in 1s..=60s",
            ),
            (
                params(0.2, u32::MAX, 1_000),
                "min_retries_per_second 4294967295 exceeds 2147483647",
            ),
        ] {
            match TpsBudget::new(&p, t) {
                Err(e) => assert_eq!(e.to_string(), err),
                Ok(b) => panic!("{p:?} accepted: {b:?}"),
            }
        }
    }
}
