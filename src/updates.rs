//! Snapshot channels from discovery threads to the event loop.
//!
//! Each discovery thread owns one [`SnapshotTx`]: a bounded(1) crossbeam channel
//! plus the loop's `mio::Waker`. Publishing never blocks and the newest snapshot
//! always wins: when the slot is full, the stale value is taken out (the sender
//! keeps its own `Receiver` clone for that) and the new one put in. The loop
//! drains every receiver when woken (`proxy::destinations`).

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

/// A snapshot and when its discovery thread produced it, so the loop can report
/// the time from receipt to swap.
#[derive(Debug)]
pub struct Stamped<T> {
    pub value: T,
    pub at: Instant,
}

/// Something that can wake the event loop; `mio::Waker` in production.
pub trait Wake: Send + Sync {
    fn wake(&self);
}

impl Wake for mio::Waker {
    fn wake(&self) {
        if let Err(e) = mio::Waker::wake(self) {
            log::warn!("failed to wake the event loop: {e}");
        }
    }
}

/// The sending half: publish the newest snapshot, never block.
pub struct SnapshotTx<T> {
    tx: Sender<Stamped<T>>,
    stale: Receiver<Stamped<T>>,
    waker: Arc<dyn Wake>,
}

/// The receiver was dropped: the destination was evicted.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

pub fn channel<T>(waker: Arc<dyn Wake>) -> (SnapshotTx<T>, Receiver<Stamped<T>>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let tx = SnapshotTx {
        tx,
        stale: rx.clone(),
        waker,
    };
    (tx, rx)
}

impl<T> SnapshotTx<T> {
    /// Replaces whatever snapshot is waiting with `value` and wakes the loop.
    pub fn publish(&self, value: T) {
        let mut item = Stamped {
            value,
            at: Instant::now(),
        };
        loop {
            match self.tx.try_send(item) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    item = back;
                    // Drop the stale snapshot; if the loop took it first, the
                    // slot is free anyway and the next try succeeds.
                    match self.stale.try_recv() {
                        Ok(_) | Err(TryRecvError::Empty) => {}
                        Err(TryRecvError::Disconnected) => return,
                    }
                }
                // Unreachable while we hold `stale`, but harmless.
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        self.waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct CountWake(AtomicUsize);
    impl Wake for CountWake {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn newest_snapshot_wins_and_publish_never_blocks() {
        let w = Arc::new(CountWake::default());
        let (tx, rx) = channel::<u32>(w.clone());
        for i in 0..100 {
            tx.publish(i);
        }
        assert_eq!(rx.try_recv().unwrap().value, 99);
        assert!(rx.try_recv().is_err());
        assert_eq!(w.0.load(Ordering::SeqCst), 100);
    }

    #[test]
    fn concurrent_publish_and_drain_ends_on_the_last_value() {
        let w = Arc::new(CountWake::default());
        let (tx, rx) = channel::<u32>(w);
        let t = std::thread::spawn(move || {
            for i in 0..10_000 {
                tx.publish(i);
            }
        });
        let mut last = None;
        loop {
            if let Ok(s) = rx.try_recv() {
                if let Some(prev) = last {
                    assert!(s.value > prev, "snapshots went backwards");
                }
                last = Some(s.value);
            }
            if t.is_finished() && rx.is_empty() {
                break;
            }
        }
        t.join().unwrap();
        if let Ok(s) = rx.try_recv() {
            last = Some(s.value);
        }
        assert_eq!(last, Some(9_999));
    }
}
