//! Blocking waits for the discovery threads: poll one future on the current
//! thread, parking it between wake-ups, with an optional deadline.
//!
//! This is `futures::executor::block_on` plus a timeout, which the discovery
//! loop needs to sleep through a backoff (or a DNS refresh interval) while still
//! noticing its destination's eviction at once. It runs no tasks of its own: it
//! is not an async runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

struct ThreadWaker {
    thread: Thread,
    woken: AtomicBool,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Polls `fut` until it completes (`Some`) or `timeout` passes (`None`).
/// `timeout: None` waits as long as it takes.
pub fn block_on_timeout<F: Future + Unpin>(
    fut: &mut F,
    timeout: Option<Duration>,
) -> Option<F::Output> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let state = Arc::new(ThreadWaker {
        thread: thread::current(),
        woken: AtomicBool::new(false),
    });
    let waker = Waker::from(state.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = Pin::new(&mut *fut).poll(&mut cx) {
            return Some(out);
        }
        // About to sleep, likely for long: the stack below here is dead.
        super::stack::release_unused();
        // Park until woken; unparks without a wake (spurious, or a leftover
        // token) loop back to the flag check.
        while !state.woken.swap(false, Ordering::Acquire) {
            match deadline {
                None => thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    thread::park_timeout(d - now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::oneshot;

    #[test]
    fn times_out_on_a_pending_future() {
        let (_tx, mut rx) = oneshot::channel::<()>();
        let start = Instant::now();
        assert!(block_on_timeout(&mut rx, Some(Duration::from_millis(20))).is_none());
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn wakes_when_another_thread_completes_it() {
        let (tx, mut rx) = oneshot::channel::<u32>();
        let t = thread::spawn(move || tx.send(7).unwrap());
        let got = block_on_timeout(&mut rx, Some(Duration::from_secs(10)));
        assert_eq!(got, Some(Ok(7)));
        t.join().unwrap();
    }

    #[test]
    fn a_dropped_sender_completes_the_wait() {
        let (tx, mut rx) = oneshot::channel::<()>();
        drop(tx);
        assert!(matches!(block_on_timeout(&mut rx, None), Some(Err(_))));
    }
}
