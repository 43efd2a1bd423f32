//! The deadlines and counters of one HTTP/2 client connection, without I/O
//! (event-loop thread; `server.rs` drives them): the handshake deadline, the
//! idle timer, keepalive PINGs and their answers, the end of a lingering
//! close, and the premature-reset count. h2 has no timers, so a connection
//! asks this what is due each time it is polled, and keeps one timer-heap
//! entry for the earliest deadline ([`Clock::arm`]).

use std::time::{Duration, Instant};

use crate::config::H2ServerSettings;

/// After the idle GOAWAY, the client has this long to let the connection
/// close (h2 waits for the answer to its shutdown PING).
pub const IDLE_GOAWAY_GRACE: Duration = Duration::from_secs(10);

/// What a poll of the connection must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The client did not finish the handshake in time: close.
    HandshakeTimeout,
    /// A keepalive PING went unanswered: close.
    PingTimeout,
    /// No stream for the idle timeout: GOAWAY, then close.
    Idle,
    /// The idle GOAWAY went out and the connection is still open: close.
    IdleGoawayOver,
    /// Time for a keepalive PING.
    SendPing,
    Nothing,
}

/// One connection's deadlines.
#[derive(Debug)]
pub struct Clock {
    /// Until the client proved its SETTINGS (answered the first PING, or
    /// opened a stream, which it may do only after SETTINGS).
    handshake_by: Option<Instant>,
    /// When the connection last had no stream (`None`: it has some).
    idle_since: Option<Instant>,
    /// An answer to the PING in flight is due by then.
    pong_by: Option<Instant>,
    /// When the next keepalive PING goes (`None`: keepalive off, or a PING
    /// is in flight).
    next_ping: Option<Instant>,
    /// `None` once the idle timer has done its work.
    idle: Option<Duration>,
    /// After the idle GOAWAY: the connection is closed by then.
    closing_by: Option<Instant>,
    keep_alive: Option<crate::config::H2KeepAlive>,
    /// The earliest time a heap entry is outstanding for.
    armed: Option<Instant>,
}

impl Clock {
    pub fn new(settings: &H2ServerSettings, now: Instant) -> Clock {
        Clock {
            handshake_by: Some(now + settings.handshake_timeout),
            idle_since: Some(now),
            pong_by: None,
            next_ping: None,
            idle: Some(settings.idle_timeout),
            closing_by: None,
            keep_alive: settings.keep_alive,
            armed: None,
        }
    }

    /// Whether the handshake is still to be proved.
    #[cfg(test)]
    pub fn handshaking(&self) -> bool {
        self.handshake_by.is_some()
    }

    /// The client proved its SETTINGS: keepalive starts.
    pub fn settled(&mut self, now: Instant) {
        if self.handshake_by.take().is_some() && self.pong_by.is_none() {
            self.next_ping = self.keep_alive.map(|k| now + k.interval);
        }
    }

    /// A PING went out (the handshake's, or a keepalive one).
    pub fn ping_sent(&mut self, now: Instant) {
        self.next_ping = None;
        self.pong_by = Some(match (self.handshake_by, self.keep_alive) {
            (Some(by), _) => by,
            (None, Some(k)) => now + k.timeout,
            // A PING without keepalive is the handshake's only.
            (None, None) => now + Duration::from_secs(20),
        });
    }

    pub fn ping_outstanding(&self) -> bool {
        self.pong_by.is_some()
    }

    /// The PING in flight was answered.
    pub fn pong(&mut self, now: Instant) {
        self.pong_by = None;
        self.handshake_by = None;
        self.next_ping = self.keep_alive.map(|k| now + k.interval);
    }

    /// Whether the connection has streams open, seen at `now`.
    pub fn streams(&mut self, open: bool, now: Instant) {
        if open {
            self.idle_since = None;
        } else if self.idle_since.is_none() {
            self.idle_since = Some(now);
        }
    }

    /// What is due at `now`, most severe first.
    pub fn due(&self, now: Instant) -> Due {
        if self.handshake_by.is_some_and(|t| t <= now) {
            return Due::HandshakeTimeout;
        }
        if self.pong_by.is_some_and(|t| t <= now) {
            return Due::PingTimeout;
        }
        if self.closing_by.is_some_and(|t| t <= now) {
            return Due::IdleGoawayOver;
        }
        let idle_at = self.idle_since.zip(self.idle).map(|(t, d)| t + d);
        if idle_at.is_some_and(|t| t <= now) {
            return Due::Idle;
        }
        if self.next_ping.is_some_and(|t| t <= now) {
            return Due::SendPing;
        }
        Due::Nothing
    }

    /// The idle timer has done its work (a GOAWAY is out at `now`): it
    /// stops, and the close is due within [`IDLE_GOAWAY_GRACE`].
    pub fn idle_done(&mut self, now: Instant) {
        self.idle = None;
        self.idle_since = None;
        self.closing_by = Some(now + IDLE_GOAWAY_GRACE);
    }

    /// The earliest deadline. With streams open, the idle check comes
    /// back one idle timeout later anyway, so a stream that ended without
    /// the connection being polled is still noticed.
    fn next(&self, now: Instant) -> Option<Instant> {
        let idle = self
            .idle
            .and_then(|d| self.idle_since.unwrap_or(now).checked_add(d));
        [
            self.handshake_by,
            self.pong_by,
            self.next_ping,
            idle,
            self.closing_by,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// After a poll at `now`: the time a timer-heap entry must be pushed
    /// for, if none outstanding fires by the earliest deadline.
    #[must_use]
    pub fn arm(&mut self, now: Instant) -> Option<Instant> {
        if self.armed.is_some_and(|a| a <= now) {
            self.armed = None;
        }
        let at = self.next(now)?;
        match self.armed {
            Some(a) if a <= at => None,
            _ => {
                self.armed = Some(at);
                Some(at)
            }
        }
    }
}

/// Envoy's premature-reset rule: streams the client reset after they were
/// accepted, against all it opened.
#[derive(Debug, Default)]
pub struct Resets {
    accepted: u64,
    reset: u64,
}

impl Resets {
    pub fn accepted(&mut self) {
        self.accepted += 1;
    }

    /// One more reset by the client; `true` when the connection must go:
    /// at least `min` resets, and at least half of its streams (`min` 0:
    /// never).
    pub fn reset(&mut self, min: u32) -> bool {
        self.reset += 1;
        min > 0 && self.reset >= u64::from(min) && self.reset * 2 >= self.accepted
    }

    pub fn counts(&self) -> (u64, u64) {
        (self.accepted, self.reset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, H2KeepAlive, MapEnv};

    /// The defaults: handshake 10s, idle 60s.
    fn settings(keep_alive: Option<H2KeepAlive>) -> H2ServerSettings {
        let mut s = Config::from_env(&MapEnv::new()).unwrap().h2_inbound;
        s.keep_alive = keep_alive;
        s
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_handshake_must_be_proved_in_time() {
        let t0 = Instant::now();
        let mut c = Clock::new(&settings(None), t0);
        assert_eq!(c.arm(t0), Some(t0 + 10 * S));
        c.ping_sent(t0);
        assert!(c.handshaking());
        assert_eq!(c.due(t0 + 9 * S), Due::Nothing);
        assert_eq!(c.due(t0 + 10 * S), Due::HandshakeTimeout);
        // Answered in time: settled, and nothing else is due.
        c.pong(t0 + S);
        assert!(!c.handshaking());
        assert_eq!(c.due(t0 + 10 * S), Due::Nothing);
    }

    #[test]
    fn a_first_stream_also_settles_the_handshake() {
        let t0 = Instant::now();
        let mut c = Clock::new(&settings(None), t0);
        c.settled(t0);
        c.streams(true, t0);
        assert_eq!(c.due(t0 + 100 * S), Due::Nothing);
    }

    #[test]
    fn idle_counts_from_the_last_stream() {
        let t0 = Instant::now();
        let mut c = Clock::new(&settings(None), t0);
        c.settled(t0);
        c.streams(true, t0 + S);
        assert_eq!(c.due(t0 + 61 * S), Due::Nothing);
        // The re-check comes one idle timeout after this poll.
        assert_eq!(c.arm(t0 + S), Some(t0 + 61 * S));
        c.streams(false, t0 + 5 * S);
        c.streams(false, t0 + 30 * S);
        assert_eq!(c.due(t0 + 64 * S), Due::Nothing);
        assert_eq!(c.due(t0 + 65 * S), Due::Idle);
        c.idle_done(t0 + 65 * S);
        c.streams(false, t0 + 70 * S);
        assert_eq!(c.due(t0 + 74 * S), Due::Nothing);
        assert_eq!(c.next(t0 + 70 * S), Some(t0 + 75 * S));
        assert_eq!(c.due(t0 + 75 * S), Due::IdleGoawayOver);
    }

    #[test]
    fn keepalive_pings_after_each_answer_and_times_out() {
        let ka = H2KeepAlive {
            interval: 5 * S,
            timeout: 2 * S,
        };
        let t0 = Instant::now();
        let mut c = Clock::new(&settings(Some(ka)), t0);
        c.ping_sent(t0);
        c.pong(t0 + S);
        assert_eq!(c.due(t0 + 5 * S), Due::Nothing);
        assert_eq!(c.due(t0 + 6 * S), Due::SendPing);
        c.ping_sent(t0 + 6 * S);
        assert!(c.ping_outstanding());
        assert_eq!(c.due(t0 + 7 * S), Due::Nothing);
        assert_eq!(c.due(t0 + 8 * S), Due::PingTimeout);
        c.pong(t0 + 7 * S);
        assert_eq!(c.due(t0 + 8 * S), Due::Nothing);
        assert_eq!(c.due(t0 + 12 * S), Due::SendPing);
    }

    #[test]
    fn one_heap_entry_for_the_earliest_deadline() {
        let t0 = Instant::now();
        let mut c = Clock::new(&settings(None), t0);
        assert_eq!(c.arm(t0), Some(t0 + 10 * S));
        // Nothing earlier: no new entry, however often it is polled.
        assert_eq!(c.arm(t0 + S), None);
        c.settled(t0 + S);
        assert_eq!(c.arm(t0 + 2 * S), None, "the 10s entry is still out");
        // It fired: the next one (idle, from t0) is pushed.
        assert_eq!(c.arm(t0 + 10 * S), Some(t0 + 60 * S));
    }

    #[test]
    fn premature_resets_follow_envoys_rule() {
        let mut r = Resets::default();
        for _ in 0..300 {
            r.accepted();
        }
        // 100 resets of 300 streams: a third, not enough.
        assert!(!(0..100).any(|_| r.reset(100)));
        assert!(!(0..49).any(|_| r.reset(100)));
        assert!(r.reset(100), "150 of 300: half");
        let mut few = Resets::default();
        for _ in 0..99 {
            few.accepted();
            assert!(!few.reset(100), "fewer than 100 resets never close");
        }
        few.accepted();
        assert!(few.reset(100));
        let mut off = Resets::default();
        off.accepted();
        assert!(!off.reset(0));
        assert_eq!(off.counts(), (1, 1));
    }
}
