//! HTTP/2 connections to upstreams, shared by every stream going to the
//! same endpoint, and their pool (event-loop thread).
//!
//! One multiplexed connection per [`UpstreamKey`] (address, identity,
//! protocol), more when it carries as many streams as the peer allows:
//! h2 would queue streams past `SETTINGS_MAX_CONCURRENT_STREAMS` silently,
//! so the pool counts them itself. A connection that received GOAWAY, failed
//! or closed takes no new stream; the streams it refused (above the GOAWAY's
//! last stream id) are sent again by their own tasks on another one. The
//! connection's receive window is sized for all of its streams' windows at
//! once, so one stream whose client does not read cannot stall the others
//! (see `shared/reference/http2-in-mio.md`).
//!
//! ```text
//! Connecting --TCP (+ mTLS) up--> Handshaking --preface, SETTINGS--> Ready --closed--> gone
//!      \--failed-------------------------\--failed--> Failed (waiters told; then gone)
//! ```

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use slab::Slab;

use super::io::{H2Io, IoShared};
use super::task::{TaskHandle, TaskId};
use crate::conn_failure::ConnFailure;
use crate::proxy::ctx::{Ctx, DialError, Owner};
use crate::proxy::pool::UpstreamKey;
use crate::proxy::transport::{Connect, Transport};
use crate::FastMap;

/// Whether the peer refused the stream `e` ended, unprocessed (RFC 9113
/// section 8.7): its `REFUSED_STREAM`, or its GOAWAY naming a last stream id
/// below this one (h2 gives those streams the GOAWAY as a remote error). A
/// GOAWAY h2 sent itself says nothing of what the peer did with the stream.
pub fn unprocessed(e: &h2::Error) -> bool {
    e.is_remote() && (e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// Streams one upstream connection carries at most, whatever the peer
/// allows: past this a second connection opens.
pub const MAX_STREAMS_PER_CONN: usize = 100;
/// Each stream's receive window (h2's default).
const STREAM_WINDOW: u32 = 65_535;
/// The connection window: every stream's window at once.
const CONN_WINDOW: u32 = STREAM_WINDOW * MAX_STREAMS_PER_CONN as u32;

type Handshake =
    Pin<Box<dyn Future<Output = Result<(SendRequest<Bytes>, Connection<H2Io, Bytes>), h2::Error>>>>;

enum State {
    Connecting(Option<Transport>),
    Handshaking(Handshake),
    Ready {
        send: SendRequest<Bytes>,
        conn: Box<Connection<H2Io, Bytes>>,
    },
    Failed(ConnFailure),
}

/// A stream's hold on a connection: the slab index and the connection's
/// unique id (a slot reused by another connection is not this one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpRef {
    pub index: usize,
    id: u64,
}

pub struct UpConn {
    pub key: UpstreamKey,
    id: u64,
    sock: usize,
    task: TaskHandle,
    state: State,
    /// The socket's events and byte counts once h2 owns it.
    shared: Option<Rc<IoShared>>,
    /// Streams started on it and not finished.
    active: usize,
    /// The tasks of the streams waiting for it to be ready (woken when it
    /// is, or fails).
    waiters: Vec<Waker>,
    /// No new streams (GOAWAY, an error, or the connection is ending).
    closing: bool,
    pub connect_by: Instant,
    idle_since: Instant,
}

/// What a stream learns from its connection.
pub enum Status {
    /// Still connecting; the stream is woken when that changes.
    Pending,
    /// Ready: a handle to start the stream with.
    Ready(SendRequest<Bytes>),
    /// The connection failed before it was ready.
    Failed(ConnFailure),
}

/// The HTTP/2 upstream connections of one direction. The loop keeps one
/// per direction beside its other shared state, so whatever carries a
/// request (an HTTP/2 stream task, an HTTP/1 exchange whose endpoint takes
/// HTTP/2) opens streams on the same connections (`ctx.h2`).
#[derive(Default)]
pub struct UpPool {
    conns: Slab<UpConn>,
    by_key: FastMap<UpstreamKey, Vec<usize>>,
    next_id: u64,
}

impl UpPool {
    pub fn new() -> UpPool {
        UpPool {
            conns: Slab::new(),
            by_key: FastMap::default(),
            next_id: 0,
        }
    }

    /// A connection to `key` with room for one more stream.
    fn with_room(&mut self, key: &UpstreamKey, waiter: &Waker) -> Option<UpRef> {
        for &i in self.by_key.get(key)? {
            let c = &mut self.conns[i];
            if c.has_room() {
                c.active += 1;
                if !matches!(c.state, State::Ready { .. }) {
                    c.waiters.push(waiter.clone());
                }
                return Some(UpRef { index: i, id: c.id });
            }
        }
        None
    }

    fn get(&mut self, r: UpRef) -> Option<&mut UpConn> {
        self.conns.get_mut(r.index).filter(|c| c.id == r.id)
    }

    /// Where connection `r` is, for the stream whose task `waiter` wakes.
    pub fn status(&mut self, r: UpRef, waiter: &Waker) -> Status {
        let Some(c) = self.get(r) else {
            return Status::Failed(ConnFailure::Closed);
        };
        match &c.state {
            State::Ready { send, .. } => Status::Ready(send.clone()),
            State::Failed(f) => Status::Failed(*f),
            _ => {
                if !c.waiters.iter().any(|w| w.will_wake(waiter)) {
                    c.waiters.push(waiter.clone());
                }
                Status::Pending
            }
        }
    }

    /// The stream that held `r` is over.
    pub fn release(&mut self, r: UpRef, now: Instant) {
        if let Some(c) = self.get(r) {
            c.active = c.active.saturating_sub(1);
            if c.active == 0 {
                c.idle_since = now;
            }
        }
    }

    /// Takes no more streams on `r` (it refused one, or said GOAWAY).
    pub fn retire(&mut self, r: UpRef) {
        if let Some(c) = self.get(r) {
            c.closing = true;
        }
    }

    /// Records an event on connection `index`'s socket.
    pub fn ready(&mut self, index: usize, r: crate::proxy::ready::Readiness) {
        if let Some(c) = self.conns.get_mut(index) {
            match (&mut c.state, &c.shared) {
                (State::Connecting(Some(t)), _) => t.ready(r),
                (_, Some(shared)) => shared.ready(r),
                _ => {}
            }
            c.task.wake();
        }
    }

    /// Polls connection `index` (connections that finish connecting
    /// tune their socket with `keepalive` and read at most `read_budget`
    /// bytes per poll; a closed one's socket slot goes from `socks`).
    pub fn poll(
        &mut self,
        index: usize,
        keepalive: Option<std::time::Duration>,
        read_budget: usize,
        socks: &mut Slab<Owner>,
    ) {
        let Some(c) = self.conns.get_mut(index) else {
            return;
        };
        c.task.polling();
        if let Some(shared) = &c.shared {
            shared.new_poll();
        }
        let gone = c.step(keepalive, read_budget);
        if gone {
            self.remove(index, socks);
        }
    }

    /// Connections past their connect deadline fail; idle ones past `ttl`
    /// close.
    pub fn expire(&mut self, now: Instant, ttl: std::time::Duration, socks: &mut Slab<Owner>) {
        let mut gone = Vec::new();
        for (i, c) in self.conns.iter_mut() {
            let connecting = !matches!(c.state, State::Ready { .. } | State::Failed(_));
            if connecting && now >= c.connect_by {
                log::debug!("h2 connect to {} timed out", c.key.addr);
                c.state = State::Failed(ConnFailure::ConnectTimeout);
                c.wake_waiters();
            }
            let idle = c.active == 0 && now.saturating_duration_since(c.idle_since) >= ttl;
            if idle || (matches!(c.state, State::Failed(_)) && c.active == 0) {
                gone.push(i);
            }
        }
        for i in gone {
            self.remove(i, socks);
        }
    }

    fn remove(&mut self, index: usize, socks: &mut Slab<Owner>) {
        let c = self.conns.remove(index);
        if let Some(list) = self.by_key.get_mut(&c.key) {
            list.retain(|&i| i != index);
            if list.is_empty() {
                self.by_key.remove(&c.key);
            }
        }
        socks.remove(c.sock);
        // Once h2 has it, the adapter counts the close when it goes.
        if let State::Connecting(Some(mut t)) = c.state {
            t.count_close();
        }
    }

    /// Every connection (shutdown).
    pub fn drain(&mut self, socks: &mut Slab<Owner>) {
        let all: Vec<usize> = self.conns.iter().map(|(i, _)| i).collect();
        for i in all {
            self.remove(i, socks);
        }
    }
}

/// A connection for a new stream to `key`: one with room, or a new one
/// (connecting), from the pool of `ctx`'s direction. The task `waiter`
/// wakes is woken when it is ready (or failed).
pub fn checkout(ctx: &mut Ctx<'_>, key: &UpstreamKey, waiter: &Waker) -> Result<UpRef, DialError> {
    if let Some(r) = ctx.h2.with_room(key, waiter) {
        return Ok(r);
    }
    let index = ctx.h2.conns.vacant_key();
    let (transport, sock) = ctx.dial(
        key.addr,
        Owner::H2Upstream(ctx.direction, index),
        key.tls.as_ref(),
        false,
    )?;
    let pool = &mut *ctx.h2;
    pool.next_id += 1;
    let id = pool.next_id;
    let conn = UpConn {
        key: key.clone(),
        id,
        sock,
        task: TaskHandle::new(TaskId::Upstream(ctx.direction, index), ctx.h2_ready),
        state: State::Connecting(Some(transport)),
        shared: None,
        active: 1,
        waiters: vec![waiter.clone()],
        closing: false,
        connect_by: ctx.now + ctx.cfg.connect_timeout(ctx.direction),
        idle_since: ctx.now,
    };
    pool.conns.insert(conn);
    pool.by_key.entry(key.clone()).or_default().push(index);
    Ok(UpRef { index, id })
}

impl UpConn {
    fn has_room(&self) -> bool {
        if self.closing {
            return false;
        }
        match &self.state {
            State::Failed(_) => false,
            State::Ready { send, .. } => {
                self.active < MAX_STREAMS_PER_CONN.min(send.current_max_send_streams())
            }
            // The peer's limit is not known yet: SETTINGS say it.
            _ => self.active < MAX_STREAMS_PER_CONN,
        }
    }

    fn wake_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }

    /// Advances the connection; `true` when it is over.
    fn step(&mut self, keepalive: Option<std::time::Duration>, read_budget: usize) -> bool {
        loop {
            match &mut self.state {
                State::Connecting(t) => {
                    let Some(transport) = t.as_mut() else {
                        return true;
                    };
                    match transport.connect_status() {
                        Connect::Pending => return false,
                        Connect::Failed(e) => {
                            log::debug!("h2 connect to {} failed: {e}", self.key.addr);
                            self.state = State::Failed(ConnFailure::of_connect(&e));
                            self.wake_waiters();
                            return self.active == 0;
                        }
                        Connect::Done => {
                            let Some(transport) = t.take() else {
                                return true;
                            };
                            transport.connected(keepalive);
                            let (io, shared) = H2Io::new(transport, Vec::new(), read_budget);
                            self.shared = Some(shared);
                            let hs = h2::client::Builder::new()
                                .initial_window_size(STREAM_WINDOW)
                                .initial_connection_window_size(CONN_WINDOW)
                                .max_concurrent_streams(0)
                                .enable_push(false)
                                .handshake::<_, Bytes>(io);
                            self.state = State::Handshaking(Box::pin(hs));
                        }
                    }
                }
                State::Handshaking(hs) => {
                    let mut cx = self.task.context();
                    match hs.as_mut().poll(&mut cx) {
                        Poll::Pending => return false,
                        Poll::Ready(Err(e)) => {
                            log::debug!("h2 handshake with {} failed: {e}", self.key.addr);
                            self.state = State::Failed(ConnFailure::Closed);
                            self.wake_waiters();
                            return self.active == 0;
                        }
                        Poll::Ready(Ok((send, conn))) => {
                            self.state = State::Ready {
                                send,
                                conn: Box::new(conn),
                            };
                            self.wake_waiters();
                        }
                    }
                }
                State::Ready { conn, send } => {
                    let mut cx = self.task.context();
                    if send.poll_ready(&mut cx).is_ready() {
                        // Ready, or an error (GOAWAY received): either way
                        // nothing to wait for here.
                    }
                    return match Pin::new(&mut **conn).poll(&mut cx) {
                        Poll::Pending => false,
                        Poll::Ready(r) => {
                            if let Err(e) = r {
                                log::debug!("h2 connection to {} ended: {e}", self.key.addr);
                            }
                            true
                        }
                    };
                }
                State::Failed(_) => return self.active == 0,
            }
        }
    }
}
