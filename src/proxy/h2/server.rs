//! A client connection spoke serves HTTP/2 on (event-loop thread): h2's
//! server handshake and connection, driven by its own task, whose socket
//! token is this connection (`Owner::H2Server`). It accepts streams and
//! hands each to a stream task (`stream.rs`); it never routes anything
//! itself.
//!
//! Limits h2 enforces from its builder (per direction, `config/h2.rs`):
//! concurrent streams, header list size, windows, frame size, and
//! pending-accept resets (rapid reset: GOAWAY ENHANCE_YOUR_CALM). What h2
//! lacks is here, its deadlines kept by `guard.rs` and one timer-heap entry
//! (`Timer::H2(TaskId::Server)`), checked whenever the task is polled:
//! - the handshake: the client must prove its SETTINGS (answer spoke's
//!   first PING, or open a stream) within the handshake timeout;
//! - idle: no stream for the HTTP idle timeout, and a GOAWAY goes (the
//!   connection is closed if still open 10 s later);
//! - keepalive PINGs, when configured, each answered within its timeout;
//! - premature resets: streams the client reset after they were accepted
//!   (told by their tasks, [`ServerConn::client_reset`]), Envoy's rule,
//!   answered with GOAWAY ENHANCE_YOUR_CALM;
//! - a lingering close: a connection that ended with a GOAWAY (spoke's or
//!   h2's for a protocol error) shuts writing and reads what the client
//!   still sends for a bounded time, so the client reads the GOAWAY instead
//!   of a TCP reset.
//!
//! Every GOAWAY with an error code, spoke's or h2's, is counted in
//! `spoke_http2_goaway_total{direction, reason}` ([`Goaways`]).

use std::future::Future;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use h2::server::{Connection, Handshake, SendResponse};
use h2::{Ping, PingPong, Reason, RecvStream};
use http::Request;

use super::guard::{Clock, Due, Resets};
use super::io::{H2Io, IoShared};
use super::task::{ReadyList, TaskHandle, TaskId};
use super::Handover;
use crate::config::H2ServerSettings;
use crate::metrics::{Counter, ProxyMetrics};
use crate::metrics::{Direction, TlsLabel};
use crate::proxy::ready::Readiness;
use crate::proxy::timers::{Timer, Timers};
use crate::proxy::transport::Transport;

/// Bytes a lingering connection may still send before it is closed at once.
const LINGER_MAX_BYTES: usize = 1 << 20;

/// Which client connection a stream came on: its slot and a unique id, so a
/// stream that outlives its connection never counts against the one that
/// reuses the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerRef {
    pub index: usize,
    pub id: u64,
}

enum State {
    Handshaking(Pin<Box<Handshake<H2Io, Bytes>>>),
    Serving(Box<Connection<H2Io, Bytes>>),
    /// h2 is done; the socket drains until `until`.
    Lingering {
        transport: Transport,
        until: Instant,
        drained: usize,
    },
    Closed,
}

pub struct ServerConn {
    pub direction: Direction,
    pub orig_dst: Option<SocketAddr>,
    pub client_id: Option<Arc<str>>,
    /// Its TLS state, as metrics label it (its streams' `request_total`).
    pub tls: TlsLabel,
    pub sock: usize,
    pub id: u64,
    index: usize,
    task: TaskHandle,
    shared: Rc<IoShared>,
    state: State,
    draining: bool,
    settings: H2ServerSettings,
    clock: Clock,
    pings: Option<PingPong>,
    resets: Resets,
    /// Spoke said GOAWAY ENHANCE_YOUR_CALM already.
    calmed: bool,
    goaways: Goaways,
}

/// The `spoke_http2_goaway_total` series of one direction, made once and
/// shared by its connections.
#[derive(Clone)]
pub struct Goaways {
    premature_reset: Counter,
    enhance_your_calm: Counter,
    protocol_error: Counter,
    flow_control_error: Counter,
    other: Counter,
}

impl Goaways {
    pub fn new(metrics: &ProxyMetrics, direction: Direction) -> Goaways {
        let c = |reason| metrics.http2_goaway(direction, reason);
        Goaways {
            premature_reset: c("premature_reset"),
            enhance_your_calm: c("enhance_your_calm"),
            protocol_error: c("protocol_error"),
            flow_control_error: c("flow_control_error"),
            other: c("other"),
        }
    }

    /// h2 ended the connection with a GOAWAY of its own carrying `reason`.
    fn library(&self, reason: Option<Reason>) {
        let c = match reason {
            Some(Reason::NO_ERROR) => return,
            Some(Reason::ENHANCE_YOUR_CALM) => &self.enhance_your_calm,
            Some(Reason::FLOW_CONTROL_ERROR) => &self.flow_control_error,
            Some(
                Reason::PROTOCOL_ERROR
                | Reason::FRAME_SIZE_ERROR
                | Reason::COMPRESSION_ERROR
                | Reason::STREAM_CLOSED,
            ) => &self.protocol_error,
            _ => &self.other,
        };
        c.inc();
    }
}

/// What a poll of the connection found.
pub enum Served {
    Open,
    /// Over: the connection is closed.
    Closed,
}

impl ServerConn {
    pub fn new(
        at: ServerRef,
        h: Handover,
        settings: &H2ServerSettings,
        ready: &ReadyList,
        now: Instant,
        goaways: Goaways,
    ) -> ServerConn {
        let client_id = h.transport.peer_identity().cloned();
        let (io, shared) = H2Io::new(h.transport, h.prefix, settings.read_budget);
        let hs = h2::server::Builder::new()
            .max_concurrent_streams(settings.max_concurrent_streams)
            .max_header_list_size(settings.max_header_list_size)
            .max_pending_accept_reset_streams(settings.max_pending_accept_reset_streams)
            .initial_window_size(settings.initial_stream_window)
            .initial_connection_window_size(settings.initial_connection_window)
            .max_frame_size(settings.max_frame_size)
            .handshake(io);
        let task = TaskHandle::new(TaskId::Server(at.index), ready);
        task.wake();
        ServerConn {
            direction: h.direction,
            orig_dst: h.orig_dst,
            client_id,
            tls: h.tls,
            sock: h.sock,
            id: at.id,
            index: at.index,
            task,
            shared,
            state: State::Handshaking(Box::pin(hs)),
            draining: false,
            settings: *settings,
            clock: Clock::new(settings, now),
            pings: None,
            resets: Resets::default(),
            calmed: false,
            goaways,
        }
    }

    pub fn ready(&mut self, r: Readiness) {
        match &mut self.state {
            State::Lingering { transport, .. } => transport.ready(r),
            _ => self.shared.ready(r),
        }
        self.task.wake();
    }

    /// Shutdown: GOAWAY, streams in flight finish.
    pub fn drain(&mut self) {
        self.draining = true;
        if let State::Serving(conn) = &mut self.state {
            conn.graceful_shutdown();
        }
        self.task.wake();
    }

    /// A stream of this connection was reset by the client after it was
    /// accepted (a premature reset): too many, and the connection goes.
    pub fn client_reset(&mut self) {
        let over = self.resets.reset(self.settings.premature_reset_min);
        log::trace!(
            "h2 client resets (accepted, reset): {:?}",
            self.resets.counts()
        );
        if !over || self.calmed {
            return;
        }
        if let State::Serving(conn) = &mut self.state {
            let (accepted, reset) = self.resets.counts();
            log::info!(
                "h2 client reset {reset} of its {accepted} streams: GOAWAY ENHANCE_YOUR_CALM"
            );
            conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
            self.goaways.premature_reset.inc();
            self.calmed = true;
            self.task.wake();
        }
    }

    /// Drives the connection; new streams go to `accepted`.
    pub fn poll(
        &mut self,
        accepted: &mut Vec<(Request<RecvStream>, SendResponse<Bytes>)>,
        timers: &mut Timers,
        now: Instant,
    ) -> Served {
        self.task.polling();
        self.shared.new_poll();
        let served = self.step(accepted, now);
        if let Served::Open = served {
            let linger_until = match &self.state {
                State::Lingering { until, .. } => Some(*until),
                _ => None,
            };
            let at = match linger_until {
                Some(until) => (until > now).then_some(until),
                None => self.clock.arm(now),
            };
            if let Some(at) = at {
                timers.add(at, Timer::H2(TaskId::Server(self.index)));
            }
        }
        served
    }

    fn step(
        &mut self,
        accepted: &mut Vec<(Request<RecvStream>, SendResponse<Bytes>)>,
        now: Instant,
    ) -> Served {
        loop {
            match &mut self.state {
                State::Handshaking(hs) => {
                    if self.clock.due(now) == Due::HandshakeTimeout {
                        log::debug!("h2 client did not complete the handshake in time");
                        return self.close();
                    }
                    let mut cx = self.task.context();
                    match hs.as_mut().poll(&mut cx) {
                        Poll::Pending => return Served::Open,
                        Poll::Ready(Err(e)) => {
                            log::debug!("h2 handshake with a client failed: {e}");
                            return self.close();
                        }
                        Poll::Ready(Ok(mut conn)) => {
                            if self.draining {
                                conn.graceful_shutdown();
                            }
                            // The answer to this first PING proves the
                            // client's SETTINGS came (they must come first).
                            self.pings = conn.ping_pong();
                            if let Some(p) = &mut self.pings {
                                if p.send_ping(Ping::opaque()).is_ok() {
                                    self.clock.ping_sent(now);
                                }
                            }
                            self.state = State::Serving(Box::new(conn));
                        }
                    }
                }
                State::Serving(_) => {
                    if let Some(served) = self.timers(now) {
                        return served;
                    }
                    let State::Serving(conn) = &mut self.state else {
                        continue;
                    };
                    let mut cx = self.task.context();
                    match conn.poll_accept(&mut cx) {
                        Poll::Pending => {
                            self.clock.streams(conn.has_streams(), now);
                            return Served::Open;
                        }
                        Poll::Ready(Some(Ok(stream))) => {
                            self.clock.settled(now);
                            self.clock.streams(true, now);
                            self.resets.accepted();
                            accepted.push(stream);
                        }
                        Poll::Ready(Some(Err(e))) => {
                            log::debug!("h2 client connection failed: {e}");
                            if e.is_io() {
                                return self.close();
                            }
                            // Spoke's own premature-reset GOAWAY is counted
                            // where it is said.
                            if e.is_go_away() && e.is_library() && !self.calmed {
                                self.goaways.library(e.reason());
                            }
                            self.linger(now);
                        }
                        Poll::Ready(None) => self.linger(now),
                    }
                }
                State::Lingering {
                    transport,
                    until,
                    drained,
                } => return drain(transport, *until, drained, now),
                State::Closed => return Served::Closed,
            }
        }
    }

    /// The connection's deadlines, and the PING in flight; `Some` when
    /// the connection is over.
    fn timers(&mut self, now: Instant) -> Option<Served> {
        let State::Serving(conn) = &mut self.state else {
            return None;
        };
        let mut cx = self.task.context();
        if let (true, Some(p)) = (self.clock.ping_outstanding(), &mut self.pings) {
            match p.poll_pong(&mut cx) {
                Poll::Ready(Ok(_)) => self.clock.pong(now),
                // The connection's own error comes from poll_accept.
                Poll::Ready(Err(_)) => self.pings = None,
                Poll::Pending => {}
            }
        }
        match self.clock.due(now) {
            Due::HandshakeTimeout => {
                log::debug!("h2 client sent no SETTINGS in time");
                return Some(self.close());
            }
            Due::PingTimeout => {
                log::debug!("h2 client did not answer a keepalive PING in time");
                return Some(self.close());
            }
            Due::IdleGoawayOver => {
                log::debug!("h2 client connection still open after the idle GOAWAY");
                return Some(self.close());
            }
            Due::Idle => {
                log::debug!("h2 client connection idle: GOAWAY");
                conn.graceful_shutdown();
                self.clock.idle_done(now);
            }
            Due::SendPing => {
                if let Some(p) = &mut self.pings {
                    if p.send_ping(Ping::opaque()).is_ok() {
                        self.clock.ping_sent(now);
                        // Registers this task for the answer.
                        if let Poll::Ready(Ok(_)) = p.poll_pong(&mut cx) {
                            self.clock.pong(now);
                        }
                    }
                }
            }
            Due::Nothing => {}
        }
        None
    }

    /// h2 is done with the socket: shut writing and read what comes for
    /// the linger time.
    fn linger(&mut self, now: Instant) {
        let timeout = self.settings.linger_timeout;
        self.shared.keep_transport();
        // Dropping the connection hands its transport back.
        self.state = State::Closed;
        self.pings = None;
        let Some(mut transport) = self.shared.take_transport() else {
            return;
        };
        if timeout.is_zero() || transport.shutdown_write().is_err() {
            return;
        }
        self.state = State::Lingering {
            transport,
            until: now + timeout,
            drained: 0,
        };
    }

    fn close(&mut self) -> Served {
        self.state = State::Closed;
        Served::Closed
    }
}

impl Drop for ServerConn {
    /// A lingering socket is counted closed here (h2's adapter counts the
    /// others when h2 drops it).
    fn drop(&mut self) {
        if let State::Lingering { transport, .. } = &mut self.state {
            transport.count_close();
        }
    }
}

/// Reads and discards what a lingering client sends.
fn drain(transport: &mut Transport, until: Instant, drained: &mut usize, now: Instant) -> Served {
    let mut buf = [0u8; 8192];
    loop {
        match transport.read(&mut buf) {
            Ok(0) => return Served::Closed,
            Ok(n) => {
                *drained += n;
                if *drained > LINGER_MAX_BYTES {
                    return Served::Closed;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Served::Closed,
        }
    }
    if now >= until {
        Served::Closed
    } else {
        Served::Open
    }
}
