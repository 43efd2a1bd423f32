//! HTTP/2 on the event loop (event-loop thread), and the only module that
//! sees `h2` or `http` types: the rest of the proxy hands it a client
//! connection whose preface said HTTP/2 and routes its socket events and
//! timers here; HTTP/1 code never meets an h2 type.
//!
//! There is no executor. [`H2World`] holds the tasks (client connections
//! `server.rs`, upstream connections `upstream.rs`, proxied streams
//! `stream.rs`), each with a waker that puts it on one ready list
//! (`task.rs`); the loop drains that list after each batch of events
//! ([`H2World::take_ready`], [`H2World::poll_task`]), a bounded number of
//! rounds before it looks at the sockets again, so self-wakes cannot starve
//! I/O. Sockets sit under h2 through `io.rs`; gRPC's rules are `grpc.rs`.
//!
//! ```text
//!  session detects the preface -> add_server -> Server task --accept--> Stream task
//!  Stream task --checkout--> Upstream task (shared, per endpoint) --frames--> upstream
//! ```

mod downgrade;
mod grpc;
mod guard;
mod io;
mod pump;
mod server;
mod stream;
mod task;
mod upgrade;
mod upstream;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::Request;
use slab::Slab;

use super::ctx::{ByDirection, Ctx, Owner};
use super::ready::Readiness;
use super::transport::Transport;
use crate::config::H2ServerSettings;
use crate::metrics::{Direction, ProxyMetrics, TlsLabel};
use server::{Goaways, Served, ServerConn, ServerRef};
use stream::{Env, Origin, Polled, StreamTask};
pub use task::{ReadyList, TaskId};
pub use upgrade::{upgradable, Opened, Original, Upgraded};
pub use upstream::UpPool;

/// A client connection a session hands over once it saw the preface.
pub struct Handover {
    pub transport: Transport,
    /// The bytes read so far (the preface, maybe more).
    pub prefix: Vec<u8>,
    pub direction: Direction,
    pub orig_dst: Option<SocketAddr>,
    /// Its socket's slab index (the token becomes the new connection's).
    pub sock: usize,
    /// Its TLS state, as metrics label it.
    pub tls: TlsLabel,
}

/// Rounds of the ready list per loop turn before sockets are polled again.
pub const MAX_ROUNDS: usize = 64;

pub struct H2World {
    ready: ReadyList,
    servers: Slab<ServerConn>,
    /// Stream tasks; a task is taken out while it runs.
    streams: Slab<Option<Box<StreamTask>>>,
    accepted: Vec<(Request<RecvStream>, SendResponse<Bytes>)>,
    /// The id of the next client connection (see [`ServerRef`]).
    next_server_id: u64,
    goaways: ByDirection<Goaways>,
}

impl H2World {
    pub fn new(metrics: &ProxyMetrics) -> H2World {
        H2World {
            ready: ReadyList::default(),
            servers: Slab::new(),
            streams: Slab::new(),
            accepted: Vec::new(),
            next_server_id: 0,
            goaways: ByDirection {
                inbound: Goaways::new(metrics, Direction::Inbound),
                outbound: Goaways::new(metrics, Direction::Outbound),
            },
        }
    }

    /// The ready list every h2 waker queues on: the loop's shared state
    /// keeps a handle (`ctx.h2_ready`) for tasks made outside this world
    /// (upstream connections, upgraded HTTP/1 requests).
    pub fn ready_list(&self) -> ReadyList {
        self.ready.clone()
    }

    /// Client connections served over HTTP/2.
    pub fn connections(&self) -> usize {
        self.servers.len()
    }

    /// Takes over a client connection whose first bytes (`prefix`, already
    /// read) are the HTTP/2 preface; its socket token becomes the new
    /// connection's, served with `settings`.
    pub fn add_server(
        &mut self,
        h: Handover,
        socks: &mut Slab<Owner>,
        settings: &H2ServerSettings,
        now: Instant,
    ) {
        let index = self.servers.vacant_key();
        let sock = h.sock;
        let at = ServerRef {
            index,
            id: self.next_server_id,
        };
        self.next_server_id += 1;
        let goaways = self.goaways.get(h.direction).clone();
        let conn = ServerConn::new(at, h, settings, &self.ready, now, goaways);
        self.servers.insert(conn);
        if let Some(owner) = socks.get_mut(sock) {
            *owner = Owner::H2Server(index);
        }
    }

    pub fn server_ready(&mut self, index: usize, r: Readiness) {
        if let Some(s) = self.servers.get_mut(index) {
            s.ready(r);
        }
    }

    pub fn wake_stream(&mut self, key: usize) {
        if let Some(Some(t)) = self.streams.get(key) {
            t.wake();
        }
    }

    /// An event on the HTTP/1 socket of downgraded stream `key`.
    pub fn stream_socket_ready(&mut self, key: usize, r: Readiness) {
        if let Some(Some(t)) = self.streams.get_mut(key) {
            t.leg_ready(r);
        }
    }

    /// A timer for `task` fired: it looks for itself what is due.
    pub fn wake(&mut self, task: TaskId) {
        self.ready.push(task);
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The tasks woken since the last call, into `out`.
    pub fn take_ready(&self, out: &mut Vec<TaskId>) {
        self.ready.take_into(out);
    }

    /// The direction whose loop state `task` uses (`None`: it is gone).
    pub fn direction_of(&self, task: TaskId) -> Option<Direction> {
        match task {
            TaskId::Server(i) => self.servers.get(i).map(|s| s.direction),
            TaskId::Upstream(d, _) => Some(d),
            TaskId::Stream(i) => self.streams.get(i)?.as_ref().map(|t| t.direction),
            // The loop drives the session itself.
            TaskId::Wire(_) => None,
        }
    }

    /// Polls one task; `true` when a client connection closed (the loop may
    /// accept again).
    pub fn poll_task(&mut self, task: TaskId, ctx: &mut Ctx<'_>) -> bool {
        match task {
            TaskId::Server(i) => return self.poll_server(i, ctx),
            TaskId::Upstream(d, i) => {
                let keepalive = ctx.cfg.connect_keepalive;
                let budget = ctx.cfg.h2_server(d).read_budget;
                ctx.h2.poll(i, keepalive, budget, ctx.socks);
            }
            TaskId::Stream(i) => self.poll_stream(i, ctx),
            TaskId::Wire(_) => {}
        }
        false
    }

    fn poll_server(&mut self, i: usize, ctx: &mut Ctx<'_>) -> bool {
        let Some(s) = self.servers.get_mut(i) else {
            return false;
        };
        let served = s.poll(&mut self.accepted, ctx.timers, ctx.now);
        let origin = |s: &ServerConn| Origin {
            direction: s.direction,
            orig_dst: s.orig_dst,
            client_id: s.client_id.clone(),
            tls: s.tls.clone(),
            server: ServerRef { index: i, id: s.id },
        };
        for (req, respond) in self.accepted.drain(..) {
            let key = self.streams.vacant_key();
            let task = StreamTask::new(key, req, respond, origin(s), &self.ready, ctx.now);
            task.wake();
            self.streams.insert(Some(Box::new(task)));
        }
        match served {
            Served::Open => false,
            Served::Closed => {
                let s = self.servers.remove(i);
                ctx.socks.remove(s.sock);
                true
            }
        }
    }

    fn poll_stream(&mut self, i: usize, ctx: &mut Ctx<'_>) {
        let Some(slot) = self.streams.get_mut(i) else {
            return;
        };
        let Some(mut t) = slot.take() else {
            return;
        };
        let mut env = Env { ctx };
        match t.poll(&mut env) {
            Polled::Going => self.streams[i] = Some(t),
            Polled::Done => {
                self.streams.remove(i);
            }
            Polled::ResetByClient(server) => {
                self.streams.remove(i);
                self.stream_reset_by_client(server);
            }
        }
    }

    /// A stream of client connection `server` was reset by the client
    /// after it was accepted (the premature-reset guard counts it).
    pub fn stream_reset_by_client(&mut self, server: ServerRef) {
        if let Some(s) = self.servers.get_mut(server.index) {
            if s.id == server.id {
                s.client_reset();
            }
        }
    }

    /// Shutdown: every client connection says GOAWAY; streams in flight
    /// finish.
    pub fn drain(&mut self) {
        for (_, s) in self.servers.iter_mut() {
            s.drain();
        }
    }

    /// Housekeeping for `direction`: upstream connections that took too
    /// long to connect fail, idle ones close.
    pub fn maintenance(&mut self, ctx: &mut Ctx<'_>, ttl: std::time::Duration, now: Instant) {
        ctx.h2.expire(now, ttl, ctx.socks);
    }

    /// Closes everything of `direction` (the end of the grace period, or
    /// the loop stopping): client connections, their streams, upstreams.
    pub fn close_all(&mut self, ctx: &mut Ctx<'_>) {
        let direction = ctx.direction;
        let keys: Vec<usize> = self
            .streams
            .iter()
            .filter(|(_, t)| t.as_ref().is_some_and(|t| t.direction == direction))
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            if let Some(Some(mut t)) = self.streams.try_remove(k) {
                let mut env = Env { ctx };
                t.abandon(&mut env);
            }
        }
        let servers: Vec<usize> = self
            .servers
            .iter()
            .filter(|(_, s)| s.direction == direction)
            .map(|(k, _)| k)
            .collect();
        for i in servers {
            let s = self.servers.remove(i);
            ctx.socks.remove(s.sock);
        }
        ctx.h2.drain(ctx.socks);
    }
}
