//! The `event-loop` thread: one mio `Poll` over the outbound, inbound and
//! admin listeners, every client and upstream socket, the discovery waker and the
//! timer heap. Sessions (`conn`) do the HTTP work; this file dispatches
//! events to them, accepts connections, swaps discovery snapshots between
//! event batches (`destinations`), and runs housekeeping.
//!
//! Nothing here blocks: no DNS, no blocking connect, no lock held across I/O
//! (the metrics registry's mutex is taken only to render `/metrics`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::admin::{self, AdminConn, AdminState};
use super::conn::Session;
use super::ctx::{ByDirection, Ctx, DetectMetrics, LoopConfig, Owner, Role, Step, TcpPair};
use super::destinations::{Destinations, Waiter};
use super::h2::{H2World, ReadyList, TaskId, UpPool};
use super::inbound;
use super::listen::Listener;
use super::orig_dst::{self, OrigDst};
use super::pool::Pool;
use super::ready::Readiness;
use super::timers::{Timer, Timers};
use super::token;
use super::transport::Transport;
use crate::identity::CredentialsRx;
use crate::metrics::{Direction, ProxyMetrics, RenderCursor};
use crate::tls::{MeshTls, TlsConfigs};

/// Everything sessions may touch, kept apart from the session slab so both can
/// be borrowed at once.
struct Parts {
    socks: Slab<Owner>,
    pools: ByDirection<Pool>,
    /// HTTP/2 upstream connections, and the ready list of every h2 task.
    h2_pools: ByDirection<UpPool>,
    h2_ready: ReadyList,
    dsts: ByDirection<Destinations>,
    timers: Timers,
    cfg: LoopConfig,
    tcp: ByDirection<TcpPair>,
    /// Randomness for traffic splits.
    rng: fastrand::Rng,
    detect: DetectMetrics,
    /// The data plane's TLS: the configurations of the certificate in force.
    tls: MeshTls,
}

/// The sockets the loop serves, bound by the caller, and how it learns where
/// a redirected connection was going.
pub struct Sockets {
    pub outbound: TcpListener,
    pub inbound: TcpListener,
    pub admin: TcpListener,
    /// Every address spoke listens on (or will): a connection redirected to
    /// one of them is a loop.
    pub own: Vec<SocketAddr>,
    pub orig_dst: Box<dyn OrigDst>,
    /// When set, inbound connections are served only when their original
    /// destination is one of these IPs.
    pub inbound_ips: Option<Vec<IpAddr>>,
}

pub struct EventLoop {
    poll: Poll,
    listeners: Vec<Listener>,
    own: Vec<SocketAddr>,
    /// The inbound listener's port: an inbound connection whose original
    /// destination is this port came to spoke itself (Linkerd's direct
    /// connections, with the opaque transport header), not through a loop.
    inbound_port: u16,
    orig_dst: Box<dyn OrigDst>,
    inbound_ips: Option<Vec<IpAddr>>,
    /// Set when shutdown has begun.
    draining: bool,
    /// The last id given to a session (ids are never reused).
    next_session_id: u64,
    admin: TcpListener,
    sessions: Slab<Session>,
    /// HTTP/2: client connections handed over by sessions, their streams,
    /// and the shared upstream connections.
    h2: H2World,
    /// The h2 tasks of the round being polled (kept for its allocation).
    h2_batch: Vec<TaskId>,
    admins: Slab<AdminConn>,
    parts: Parts,
    metrics: ProxyMetrics,
    stop: Arc<AtomicBool>,
    ready: Box<dyn Fn() -> bool + Send>,
    /// The identity thread's channel, when identity is on, and the newest
    /// credentials it sent (data-plane TLS is to use them).
    identity: Option<CredentialsRx>,
}

/// The admin view of the loop.
struct Admin<'a> {
    metrics: &'a ProxyMetrics,
    ready: &'a dyn Fn() -> bool,
    dsts: &'a ByDirection<Destinations>,
    tls: &'a MeshTls,
}

impl AdminState for Admin<'_> {
    fn render_metrics(&self, cursor: &mut RenderCursor, out: &mut String, budget: usize) -> bool {
        self.metrics.registry().render_some(cursor, out, budget)
    }

    fn is_ready(&self) -> bool {
        (self.ready)()
    }

    fn destinations(&self) -> String {
        let views = self.dsts.inbound.views().chain(self.dsts.outbound.views());
        admin::destinations::render(self.tls, views.collect())
    }
}

impl EventLoop {
    pub fn new(
        poll: Poll,
        sockets: Sockets,
        dsts: ByDirection<Destinations>,
        cfg: LoopConfig,
        metrics: ProxyMetrics,
        stop: Arc<AtomicBool>,
        ready: Box<dyn Fn() -> bool + Send>,
    ) -> io::Result<EventLoop> {
        let Sockets {
            outbound,
            inbound,
            mut admin,
            own,
            orig_dst,
            inbound_ips,
        } = sockets;
        let inbound_port = inbound.local_addr()?.port();
        let listeners = vec![
            Listener::new(
                outbound,
                Direction::Outbound,
                token::OUTBOUND,
                poll.registry(),
            )?,
            Listener::new(inbound, Direction::Inbound, token::INBOUND, poll.registry())?,
        ];
        poll.registry()
            .register(&mut admin, token::ADMIN, Interest::READABLE)?;
        let h2 = H2World::new(&metrics);
        let h2_ready = h2.ready_list();
        Ok(EventLoop {
            poll,
            listeners,
            own,
            inbound_port,
            orig_dst,
            inbound_ips,
            draining: false,
            next_session_id: 0,
            admin,
            sessions: Slab::new(),
            h2,
            h2_batch: Vec::new(),
            admins: Slab::new(),
            parts: Parts {
                socks: Slab::new(),
                pools: ByDirection {
                    inbound: Pool::new(cfg.max_idle_per_endpoint.1),
                    outbound: Pool::new(cfg.max_idle_per_endpoint.0),
                },
                h2_pools: ByDirection::default(),
                h2_ready,
                dsts,
                timers: Timers::default(),
                tcp: ByDirection {
                    inbound: TcpPair::new(&metrics, Direction::Inbound),
                    outbound: TcpPair::new(&metrics, Direction::Outbound),
                },
                rng: fastrand::Rng::new(),
                detect: DetectMetrics::new(metrics.clone()),
                tls: MeshTls::Disabled,
                cfg,
            },
            metrics,
            stop,
            ready,
            identity: None,
        })
    }

    /// Receive the workload's credentials on `rx` (woken by the loop's waker).
    pub fn set_identity(&mut self, rx: CredentialsRx) {
        self.identity = Some(rx);
        self.parts.tls = MeshTls::Awaiting;
    }

    /// Keeps the newest credentials the identity thread sent, if any.
    fn drain_identity(&mut self) {
        if let Some(rx) = &self.identity {
            let Some(c) = rx.try_iter().last() else {
                return;
            };
            match TlsConfigs::new(&c.value) {
                Ok(cfg) => {
                    log::debug!("identity: new credentials in force for {}", c.value.name);
                    self.parts.tls = MeshTls::Ready(Box::new(cfg));
                }
                // Validated already, so this is not expected; the
                // certificate in force (if any) stays.
                Err(e) => log::error!("identity: the new certificate cannot be used: {e}"),
            }
        }
    }

    /// Runs until shutdown: when the stop flag is set and the waker fires, it
    /// stops accepting, closes idle connections, lets requests in flight
    /// finish within the grace period, then closes the rest and joins every
    /// discovery thread.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let housekeeping = self.housekeeping_interval();
        self.parts
            .timers
            .add(Instant::now() + housekeeping, Timer::Maintenance);
        let mut woken_sessions = Vec::new();
        loop {
            let timeout = if self.h2.has_ready() {
                Some(Duration::ZERO)
            } else {
                self.parts.timers.next_timeout(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("event loop poll failed: {e}");
                break;
            }
            let now = Instant::now();
            let mut woken = false;
            for event in events.iter() {
                match event.token() {
                    token::WAKER => woken = true,
                    token::OUTBOUND => self.accept(Direction::Outbound, now),
                    token::INBOUND => self.accept(Direction::Inbound, now),
                    token::ADMIN => self.accept_admin(),
                    t => self.socket_event(t, event, now),
                }
            }
            if woken {
                self.drain_identity();
                if self.stop.load(Ordering::Acquire) && !self.draining {
                    self.begin_drain(now);
                }
                // Swap in the newest snapshots, then let parked requests go.
                for dsts in self.parts.dsts.both_mut() {
                    dsts.drain(now, &mut woken_sessions);
                }
                for w in woken_sessions.drain(..) {
                    match w {
                        Waiter::Session(key) => self.drive(key, now),
                        Waiter::Stream(key) => self.h2.wake_stream(key),
                    }
                }
            }
            while let Some(timer) = self.parts.timers.pop_expired(now) {
                match timer {
                    Timer::Session { key, id } => self.session_timer(key, id, now),
                    Timer::H2(task) => self.h2.wake(task),
                    Timer::Maintenance => {
                        self.maintenance(now);
                        self.parts
                            .timers
                            .add(now + housekeeping, Timer::Maintenance);
                    }
                    Timer::Accept(direction) => self.accept(direction, now),
                    Timer::ShutdownDeadline => {
                        if self.draining && !self.sessions.is_empty() {
                            log::warn!(
                                "shutdown grace period over; closing {} connections",
                                self.sessions.len()
                            );
                        }
                        self.sessions_done();
                    }
                }
            }
            self.run_h2(now);
            if self.draining && self.sessions.is_empty() && self.h2.connections() == 0 {
                break;
            }
        }
        self.shutdown();
    }

    /// Shutdown begins: stop accepting, close idle connections, and give the
    /// others the grace period.
    fn begin_drain(&mut self, now: Instant) {
        log::info!(
            "draining {} connections ({} of them HTTP/2; grace period {:?})",
            self.sessions.len() + self.h2.connections(),
            self.h2.connections(),
            self.parts.cfg.shutdown_grace
        );
        self.draining = true;
        for l in &mut self.listeners {
            l.close(self.poll.registry());
        }
        let idle: Vec<usize> = self
            .sessions
            .iter_mut()
            .filter_map(|(k, s)| s.start_draining().then_some(k))
            .collect();
        for key in idle {
            self.close_session(key, now);
        }
        self.h2.drain();
        self.parts
            .timers
            .add(now + self.parts.cfg.shutdown_grace, Timer::ShutdownDeadline);
    }

    /// Closes every session still open (end of the grace period).
    fn sessions_done(&mut self) {
        let now = Instant::now();
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close_session(key, now);
        }
        for direction in [Direction::Inbound, Direction::Outbound] {
            let mut ctx = Self::ctx(&self.poll, &mut self.parts, direction, now);
            self.h2.close_all(&mut ctx);
        }
    }

    /// Polls the HTTP/2 tasks that were woken, for a bounded number of
    /// rounds (what is still queued then makes the next epoll wait zero).
    #[inline]
    fn run_h2(&mut self, now: Instant) {
        if !self.h2.has_ready() {
            return;
        }
        self.run_h2_tasks(now);
    }

    #[inline(never)]
    fn run_h2_tasks(&mut self, now: Instant) {
        let mut closed = false;
        for _ in 0..super::h2::MAX_ROUNDS {
            self.h2.take_ready(&mut self.h2_batch);
            if self.h2_batch.is_empty() {
                break;
            }
            for task in std::mem::take(&mut self.h2_batch).drain(..) {
                if let TaskId::Wire(sock) = task {
                    self.wire_woken(sock, now);
                    continue;
                }
                let Some(direction) = self.h2.direction_of(task) else {
                    continue;
                };
                let mut ctx = Self::ctx(&self.poll, &mut self.parts, direction, now);
                closed |= self.h2.poll_task(task, &mut ctx);
            }
        }
        if closed {
            self.resume_accepting(now);
        }
    }

    /// The HTTP/2 stream under an HTTP/1 exchange's upstream slot `sock`
    /// has news: its session steps. A wake for a slot that went (and may
    /// belong to another session now) only costs that session a step.
    fn wire_woken(&mut self, sock: usize, now: Instant) {
        if let Some(Owner::Conn {
            session,
            role: Role::Upstream,
        }) = self.parts.socks.get(sock).copied()
        {
            self.drive(session, now);
        }
    }

    fn housekeeping_interval(&self) -> Duration {
        (self.parts.cfg.discovery_idle_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    fn ctx<'a>(
        poll: &'a Poll,
        parts: &'a mut Parts,
        direction: Direction,
        now: Instant,
    ) -> Ctx<'a> {
        Ctx {
            registry: poll.registry(),
            socks: &mut parts.socks,
            pool: parts.pools.get_mut(direction),
            h2: parts.h2_pools.get_mut(direction),
            h2_ready: &parts.h2_ready,
            dsts: parts.dsts.get_mut(direction),
            timers: &mut parts.timers,
            cfg: &parts.cfg,
            direction,
            tcp: parts.tcp.get_mut(direction),
            rng: &mut parts.rng,
            detect: &mut parts.detect,
            tls: &parts.tls,
            now,
        }
    }

    /// Accepts on the listener of `direction` until it has no connection
    /// for now (see `Listener::accept`), starting a session for each.
    fn accept(&mut self, direction: Direction, now: Instant) {
        loop {
            let max = self.parts.cfg.http.max_connections;
            let open = self.sessions.len() + self.h2.connections();
            let Some(l) = self.listeners.iter_mut().find(|l| l.direction == direction) else {
                return;
            };
            let Some((stream, peer)) = l.accept(open, max, now, &mut self.parts.timers) else {
                return;
            };
            log::trace!("accepted {peer} ({})", direction.as_str());
            let Some(orig_dst) = self.orig_dst(&stream, peer, direction) else {
                continue;
            };
            let orig_dst = match direction {
                Direction::Outbound => orig_dst,
                Direction::Inbound => match inbound::admit(orig_dst, self.inbound_ips.as_deref()) {
                    Ok(target) => Some(target),
                    Err(refusal) => {
                        // Counted, and logged quietly: anyone can connect
                        // to the listener itself.
                        let reason = refusal.reason();
                        log::debug!(
                            "{peer}: inbound connection to {orig_dst:?} refused ({reason})"
                        );
                        self.metrics.connection_refused(direction, reason).inc();
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            if let Some(key) = self.add_session(stream, direction, orig_dst) {
                self.drive(key, now);
            }
        }
    }

    /// Where the connection was going before it was redirected (`Some(None)`:
    /// it was not). `None` when it was redirected to one of spoke's own
    /// listeners: such a connection is refused (dropped) and counted.
    fn orig_dst(
        &self,
        stream: &TcpStream,
        peer: SocketAddr,
        direction: Direction,
    ) -> Option<Option<SocketAddr>> {
        match self.orig_dst.lookup(stream, peer) {
            Ok(Some(orig))
                if direction == Direction::Inbound && orig.port() == self.inbound_port =>
            {
                Some(Some(orig))
            }
            Ok(Some(orig)) if orig_dst::is_loop(orig, &self.own) => {
                log::warn!(
                    "{peer}: {} connection redirected to {orig}, one of spoke's own listeners: \
                     refused (a loop)",
                    direction.as_str()
                );
                self.metrics.connection_refused(direction, "loop").inc();
                None
            }
            Ok(orig) => Some(orig),
            Err(e) => {
                log::debug!("{peer}: no original destination: {e}");
                Some(None)
            }
        }
    }

    fn add_session(
        &mut self,
        mut stream: TcpStream,
        direction: Direction,
        orig_dst: Option<SocketAddr>,
    ) -> Option<usize> {
        let key = self.sessions.vacant_key();
        let sock = self.parts.socks.insert(Owner::Conn {
            session: key,
            role: Role::Client,
        });
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token::socket(sock),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("cannot register client socket: {e}");
            self.parts.socks.remove(sock);
            return None;
        }
        self.next_session_id += 1;
        let client = Transport::accepted(stream);
        let id = self.next_session_id;
        let mut s = Session::new(key, id, direction, orig_dst, client, sock, &self.parts.cfg);
        if direction == Direction::Inbound
            && orig_dst.is_some_and(|o| o.port() == self.inbound_port)
        {
            s.set_direct();
        }
        self.sessions.insert(s);
        Some(key)
    }

    fn accept_admin(&mut self) {
        loop {
            let mut stream = match self.admin.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("admin accept failed: {e}");
                    return;
                }
            };
            let key = self.admins.vacant_key();
            let sock = self.parts.socks.insert(Owner::Admin(key));
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    token::socket(sock),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.parts.socks.remove(sock);
                continue;
            }
            self.admins.insert(AdminConn::new(stream, sock));
            self.drive_admin(key);
        }
    }

    fn drive_admin(&mut self, key: usize) {
        let Some(conn) = self.admins.get_mut(key) else {
            return;
        };
        let state = Admin {
            metrics: &self.metrics,
            ready: &*self.ready,
            dsts: &self.parts.dsts,
            tls: &self.parts.tls,
        };
        if conn.drive(&state) {
            let conn = self.admins.remove(key);
            self.parts.socks.remove(conn.sock);
        }
    }

    fn socket_event(&mut self, t: Token, event: &Event, now: Instant) {
        let Some(index) = token::socket_index(t) else {
            return;
        };
        // Unknown tokens are stale events for sockets already closed.
        match self.parts.socks.get(index).copied() {
            Some(Owner::Conn { session: key, role }) => {
                if let Some(s) = self.sessions.get_mut(key) {
                    s.ready(role, Readiness::of(event));
                }
                self.drive(key, now)
            }
            Some(Owner::Admin(key)) => self.drive_admin(key),
            Some(Owner::H2Server(i)) => self.h2.server_ready(i, Readiness::of(event)),
            Some(Owner::H2Upstream(d, i)) => {
                let r = Readiness::of(event);
                self.parts.h2_pools.get_mut(d).ready(i, r);
            }
            Some(Owner::H2Stream(k)) => self.h2.stream_socket_ready(k, Readiness::of(event)),
            Some(Owner::Idle(direction, bucket)) => {
                // A writable edge left over from the last exchange is
                // harmless (TLS output an idle connection may still hold,
                // such as an answer to a key update, goes out with its next
                // write); readable means the upstream closed the connection
                // (or sent bytes no request asked for): drop it. Over TLS,
                // records that carry no data (a key update) leave it open.
                if !(event.is_readable() || event.is_read_closed() || event.is_error()) {
                    return;
                }
                let pool = self.parts.pools.get_mut(direction);
                let Some(conn) = pool.get_mut(bucket, index) else {
                    return;
                };
                conn.stream.ready(Readiness::of(event));
                let alive = conn.stream.is_idle_and_open();
                if !alive {
                    if let Some(mut conn) = pool.remove(bucket, index) {
                        self.parts.socks.remove(index);
                        conn.stream.count_close();
                    }
                }
            }
            None => {}
        }
    }

    fn drive(&mut self, key: usize, now: Instant) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let mut ctx = Self::ctx(&self.poll, &mut self.parts, session.direction(), now);
        let step = session.drive(&mut ctx);
        self.after_step(key, step, now);
    }

    /// Acts on what a session's step said.
    fn after_step(&mut self, key: usize, step: Step, now: Instant) {
        match step {
            Step::Open => {}
            Step::Close => self.close_session(key, now),
            Step::H2 => {
                let Some(session) = self.sessions.try_remove(key) else {
                    return;
                };
                let handover = session.into_h2();
                log::trace!("{} connection speaks HTTP/2", handover.direction.as_str());
                let settings = *self.parts.cfg.h2_server(handover.direction);
                self.h2
                    .add_server(handover, &mut self.parts.socks, &settings, now);
                if self.draining {
                    self.h2.drain();
                }
            }
        }
    }

    fn session_timer(&mut self, key: usize, id: u64, now: Instant) {
        let Some(session) = self.sessions.get_mut(key) else {
            return;
        };
        let mut ctx = Self::ctx(&self.poll, &mut self.parts, session.direction(), now);
        let step = session.on_timer(id, &mut ctx);
        self.after_step(key, step, now);
    }

    fn close_session(&mut self, key: usize, now: Instant) {
        let Some(session) = self.sessions.try_remove(key) else {
            return;
        };
        let direction = session.direction();
        self.parts.socks.remove(session.client_sock());
        let mut ctx = Self::ctx(&self.poll, &mut self.parts, direction, now);
        session.release(&mut ctx);
        self.resume_accepting(now);
    }

    /// A connection closed: listeners paused at the connection cap accept
    /// again.
    fn resume_accepting(&mut self, now: Instant) {
        let paused: Vec<Direction> = self
            .listeners
            .iter()
            .filter(|l| l.at_cap())
            .map(|l| l.direction)
            .collect();
        for direction in paused {
            self.accept(direction, now);
        }
    }

    fn maintenance(&mut self, now: Instant) {
        for (_, session) in self.sessions.iter_mut() {
            session.trim();
        }
        let idle = self.parts.cfg.discovery_idle_timeout;
        for dsts in self.parts.dsts.both_mut() {
            dsts.evict_idle(now, idle);
        }
        let ttl = self.parts.cfg.pool_idle_timeout;
        for direction in [Direction::Inbound, Direction::Outbound] {
            let mut ctx = Self::ctx(&self.poll, &mut self.parts, direction, now);
            self.h2.maintenance(&mut ctx, ttl, now);
        }
        for pool in self.parts.pools.both_mut() {
            for mut conn in pool.expire(now, ttl) {
                self.parts.socks.remove(conn.sock);
                conn.stream.count_close();
            }
        }
    }

    fn shutdown(&mut self) {
        let now = Instant::now();
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close_session(key, now);
        }
        for direction in [Direction::Inbound, Direction::Outbound] {
            let mut ctx = Self::ctx(&self.poll, &mut self.parts, direction, now);
            self.h2.close_all(&mut ctx);
        }
        for pool in self.parts.pools.both_mut() {
            for mut conn in pool.drain() {
                self.parts.socks.remove(conn.sock);
                conn.stream.count_close();
            }
        }
        for dsts in self.parts.dsts.both_mut() {
            dsts.shutdown();
        }
        log::debug!("event loop stopped");
    }
}
