//! Deadlines for the event loop: a min-heap whose earliest entry sets the poll
//! timeout (event-loop thread only; no thread per timer).
//!
//! Entries are never removed early: each carries the owner's epoch, and the
//! owner ignores a timer whose epoch no longer matches (lazy cancellation).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Which deadline of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SessionTimer {
    /// A parked request waited too long for discovery.
    Failfast,
    /// An upstream connect attempt took too long.
    Connect,
    /// The route's timeout (covers every retry) expired.
    Route,
    /// A keep-alive connection sat without a request for too long.
    Idle,
    /// A request head took too long to arrive after its first byte.
    Head,
    /// A request body took too long to arrive after its head.
    Body,
}

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// `epoch` names the request and `attempt` the try within it, so a timer
    /// left over from an earlier one is ignored.
    Session {
        key: usize,
        epoch: u64,
        attempt: u32,
        kind: SessionTimer,
    },
    /// Periodic housekeeping: eviction, pool expiry, joining finished threads.
    Maintenance,
    /// Try accepting again after running out of descriptors.
    Accept,
    /// The shutdown grace period is over: close what is left.
    ShutdownDeadline,
}

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub fn add(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// Time until the earliest deadline (zero if one has passed).
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    /// Removes and returns one deadline that has passed.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, t))| t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_order() {
        let now = Instant::now();
        let mut t = Timers::default();
        t.add(now + Duration::from_millis(30), Timer::Maintenance);
        let s = Timer::Session {
            key: 1,
            epoch: 0,
            attempt: 0,
            kind: SessionTimer::Connect,
        };
        t.add(now + Duration::from_millis(10), s);
        assert_eq!(t.next_timeout(now), Some(Duration::from_millis(10)));
        assert_eq!(t.pop_expired(now), None);
        let later = now + Duration::from_millis(40);
        assert_eq!(t.pop_expired(later), Some(s));
        assert_eq!(t.pop_expired(later), Some(Timer::Maintenance));
        assert_eq!(t.pop_expired(later), None);
        assert_eq!(t.next_timeout(later), None);
    }
}
