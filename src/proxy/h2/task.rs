//! Tasks and wakers for HTTP/2 on the event loop (event-loop thread; wakers
//! may be called from anywhere, but h2 calls them on this thread).
//!
//! h2 is written against `std::task`: a stream handle that queues a frame
//! wakes the *connection* task, and a connection that receives one wakes the
//! *stream* task. There is no executor here: each task is an entry of the
//! [`H2World`](super::H2World) slabs, and its waker puts its [`TaskId`] on
//! one ready list that the loop drains after every batch of events. The
//! rules that keep this free of lost wakeups are in
//! `shared/reference/http2-in-mio.md`; the ones this file owns:
//! - a waker queues its task at most once until it is polled again (its
//!   `queued` flag is cleared just *before* the poll, so a wake during the
//!   poll queues it again);
//! - wakers are `Arc` + `std::task::Wake`: `Send + Sync`, no `unsafe`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

use crate::metrics::Direction;

/// Which task a waker or a socket token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskId {
    /// A client connection spoke serves HTTP/2 on (index in the servers slab).
    Server(usize),
    /// A connection to an upstream (index in that direction's pool).
    Upstream(Direction, usize),
    /// One proxied request/response (index in the streams slab).
    Stream(usize),
    /// An HTTP/1 exchange's upstream that is a stream on a shared HTTP/2
    /// connection (`upgrade.rs`): the slot in the socket-owner table, whose
    /// session the loop drives.
    Wire(usize),
}

/// The tasks woken since the loop last drained them. The loop looks at it
/// after every batch of events, HTTP/2 or not, so an empty list is told by
/// one atomic load, without the lock.
#[derive(Clone, Default)]
pub struct ReadyList {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    list: Mutex<Vec<TaskId>>,
    len: AtomicUsize,
}

impl ReadyList {
    /// Queues `task` (a socket event or a timer for it).
    pub fn push(&self, task: TaskId) {
        // A poisoned lock means a panic on the loop thread, which ends it
        // anyway; the list itself is always consistent.
        if let Ok(mut list) = self.inner.list.lock() {
            list.push(task);
            self.inner.len.store(list.len(), Ordering::Release);
        }
    }

    /// Moves what is queued into `out` (which the caller keeps, so its
    /// allocation is reused).
    #[inline]
    pub fn take_into(&self, out: &mut Vec<TaskId>) {
        if self.is_empty() {
            return;
        }
        if let Ok(mut list) = self.inner.list.lock() {
            out.append(&mut list);
            self.inner.len.store(0, Ordering::Release);
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.inner.len.load(Ordering::Acquire) == 0
    }
}

/// A task's waker: queues the task on the ready list once.
pub struct TaskWaker {
    task: TaskId,
    queued: AtomicBool,
    list: ReadyList,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.list.push(self.task);
        }
    }
}

/// What a task keeps to be polled: its waker, made once.
pub struct TaskHandle {
    arc: Arc<TaskWaker>,
    waker: Waker,
}

impl TaskHandle {
    pub fn new(task: TaskId, list: &ReadyList) -> TaskHandle {
        let arc = Arc::new(TaskWaker {
            task,
            queued: AtomicBool::new(false),
            list: list.clone(),
        });
        let waker = Waker::from(arc.clone());
        TaskHandle { arc, waker }
    }

    /// Called just before the task is polled: a wake from now on queues it
    /// again.
    pub fn polling(&self) {
        self.arc.queued.store(false, Ordering::Release);
    }

    /// Queues the task now (it has work it found itself, or is new).
    pub fn wake(&self) {
        self.waker.wake_by_ref();
    }

    /// The waker, for whatever wakes the task from outside h2 (a
    /// connection it waits for).
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    pub fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waker_queues_its_task_once_until_polled() {
        let list = ReadyList::default();
        let h = TaskHandle::new(TaskId::Stream(7), &list);
        let cx = h.context();
        cx.waker().wake_by_ref();
        cx.waker().wake_by_ref();
        h.wake();
        let mut out = Vec::new();
        list.take_into(&mut out);
        assert_eq!(out, vec![TaskId::Stream(7)]);
        assert!(list.is_empty());
        // Polled: the next wake queues it again, once.
        h.polling();
        let owned = cx.waker().clone();
        owned.wake();
        cx.waker().wake_by_ref();
        out.clear();
        list.take_into(&mut out);
        assert_eq!(out, vec![TaskId::Stream(7)]);
    }

    #[test]
    fn a_wake_during_the_poll_is_not_lost() {
        let list = ReadyList::default();
        let h = TaskHandle::new(TaskId::Server(1), &list);
        h.wake();
        let mut out = Vec::new();
        list.take_into(&mut out);
        h.polling();
        // The poll registers interest, and something wakes it meanwhile.
        h.context().waker().wake_by_ref();
        out.clear();
        list.take_into(&mut out);
        assert_eq!(out, vec![TaskId::Server(1)]);
    }
}
