//! Deadlines for the event loop: a min-heap whose earliest entry sets the poll
//! timeout (event-loop thread only; no thread per timer).
//!
//! Sessions keep their own deadlines ([`Deadlines`], one per kind) and put
//! at most one entry in the heap at a time, for the earliest one; when it
//! fires the session handles what is due and re-arms for the next. So the heap
//! holds about one entry per connection however many requests it carries, and
//! a deadline is moved or cleared without touching the heap. Heap entries name
//! the session by slab key *and* a unique id, so an entry left over from a
//! closed session never fires on the session that reused its slot.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::metrics::Direction;

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
    /// A request waits for an endpoint to come back into rotation.
    Reconnect,
    /// Detection: the client has been silent for the quiet period.
    Quiet,
    /// Detection ran out of time.
    Detect,
}

const KINDS: [SessionTimer; 9] = [
    SessionTimer::Failfast,
    SessionTimer::Connect,
    SessionTimer::Route,
    SessionTimer::Idle,
    SessionTimer::Head,
    SessionTimer::Body,
    SessionTimer::Reconnect,
    SessionTimer::Quiet,
    SessionTimer::Detect,
];

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    /// Some deadline of session `key` (whose unique id is `id`) may be due.
    Session { key: usize, id: u64 },
    /// An HTTP/2 task (a stream's route timeout, fail-fast window or
    /// backoff): it is polled and sees for itself what is due.
    H2(crate::proxy::h2::TaskId),
    /// Periodic housekeeping: eviction, pool expiry, joining finished threads.
    Maintenance,
    /// Try accepting again after running out of descriptors.
    Accept(Direction),
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

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// One session's deadlines (pure; the session pushes the heap entries it is
/// told to).
#[derive(Debug, Default)]
pub struct Deadlines {
    at: [Option<Instant>; KINDS.len()],
    /// The earliest time for which a heap entry is outstanding.
    armed: Option<Instant>,
}

impl Deadlines {
    /// Sets `kind` to `at`. Returns `Some(at)` when a heap entry must be
    /// pushed for it (nothing outstanding fires by then).
    #[must_use]
    pub fn set(&mut self, kind: SessionTimer, at: Instant) -> Option<Instant> {
        self.at[kind as usize] = Some(at);
        match self.armed {
            Some(armed) if armed <= at => None,
            _ => {
                self.armed = Some(at);
                Some(at)
            }
        }
    }

    pub fn clear(&mut self, kind: SessionTimer) {
        self.at[kind as usize] = None;
    }

    pub fn is_set(&self, kind: SessionTimer) -> bool {
        self.at[kind as usize].is_some()
    }

    /// A heap entry fired at `now`: returns the kinds now due (and clears
    /// them), and the time to re-arm for, if a heap entry must be pushed.
    pub fn fired(&mut self, now: Instant) -> (Vec<SessionTimer>, Option<Instant>) {
        let mut due = Vec::new();
        for kind in KINDS {
            if self.at[kind as usize].is_some_and(|t| t <= now) {
                self.at[kind as usize] = None;
                due.push(kind);
            }
        }
        if self.armed.is_some_and(|a| a <= now) {
            self.armed = None;
        }
        let next = self.at.iter().flatten().min().copied();
        let rearm = match (next, self.armed) {
            (Some(n), Some(a)) if a <= n => None,
            (Some(n), _) => {
                self.armed = Some(n);
                Some(n)
            }
            (None, _) => None,
        };
        (due, rearm)
    }
}

/// One session's deadlines with what arming them takes: the session's slab
/// key and unique id, which its heap entries carry. Lent by the session to
/// the exchange it runs, which sets and clears its own kinds.
pub struct SessionDeadlines<'a> {
    pub deadlines: &'a mut Deadlines,
    pub key: usize,
    pub id: u64,
}

impl SessionDeadlines<'_> {
    /// Sets `kind` to `after` from `now`, pushing a heap entry only when no
    /// earlier one is outstanding.
    pub fn set(&mut self, kind: SessionTimer, after: Duration, now: Instant, timers: &mut Timers) {
        if let Some(at) = self.deadlines.set(kind, now + after) {
            timers.add(
                at,
                Timer::Session {
                    key: self.key,
                    id: self.id,
                },
            );
        }
    }

    pub fn clear(&mut self, kind: SessionTimer) {
        self.deadlines.clear(kind);
    }

    /// The exchange is over: its deadlines must not fire on the next one.
    pub fn clear_exchange(&mut self) {
        for kind in EXCHANGE_KINDS {
            self.deadlines.clear(kind);
        }
    }
}

/// The deadlines that belong to one exchange rather than to the connection.
const EXCHANGE_KINDS: [SessionTimer; 4] = [
    SessionTimer::Connect,
    SessionTimer::Route,
    SessionTimer::Body,
    SessionTimer::Reconnect,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_order() {
        let now = Instant::now();
        let mut t = Timers::default();
        t.add(now + Duration::from_millis(30), Timer::Maintenance);
        let s = Timer::Session { key: 1, id: 7 };
        t.add(now + Duration::from_millis(10), s);
        assert_eq!(t.next_timeout(now), Some(Duration::from_millis(10)));
        assert_eq!(t.pop_expired(now), None);
        let later = now + Duration::from_millis(40);
        assert_eq!(t.pop_expired(later), Some(s));
        assert_eq!(t.pop_expired(later), Some(Timer::Maintenance));
        assert_eq!(t.pop_expired(later), None);
        assert_eq!(t.next_timeout(later), None);
    }

    #[test]
    fn one_heap_entry_serves_later_deadlines() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::default();
        assert_eq!(d.set(SessionTimer::Idle, ms(60_000)), Some(ms(60_000)));
        // Later or equal deadlines need no new entry; a sooner one does.
        assert_eq!(d.set(SessionTimer::Body, ms(60_000)), None);
        assert_eq!(d.set(SessionTimer::Route, ms(100)), Some(ms(100)));
        assert_eq!(d.set(SessionTimer::Route, ms(200)), None);
        // The entry for 100ms fires: nothing due (the route moved), re-arm
        // for the route at 200ms.
        assert_eq!(d.fired(ms(100)), (vec![], Some(ms(200))));
        assert_eq!(
            d.fired(ms(200)),
            (vec![SessionTimer::Route], Some(ms(60_000)))
        );
        d.clear(SessionTimer::Body);
        assert_eq!(d.fired(ms(60_000)), (vec![SessionTimer::Idle], None));
        assert!(!d.is_set(SessionTimer::Idle));
    }

    #[test]
    fn a_stale_entry_fires_without_duplicating_the_armed_one() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::default();
        assert_eq!(d.set(SessionTimer::Idle, ms(1_000)), Some(ms(1_000)));
        assert_eq!(d.set(SessionTimer::Connect, ms(10)), Some(ms(10)));
        d.clear(SessionTimer::Connect);
        // The 10ms entry fires with nothing due: the 1s entry is still in
        // the heap, so nothing is pushed... but `armed` moved to 10ms, so
        // it re-arms once for 1s.
        let (due, rearm) = d.fired(ms(10));
        assert!(due.is_empty());
        assert_eq!(rearm, Some(ms(1_000)));
        // Then a fresh, sooner deadline still gets its own entry.
        assert_eq!(d.set(SessionTimer::Head, ms(500)), Some(ms(500)));
    }
}
