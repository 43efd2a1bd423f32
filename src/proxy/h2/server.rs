//! A client connection spoke serves HTTP/2 on (event-loop thread): h2's
//! server handshake and connection, driven by its own task, whose socket
//! token is this connection (`Owner::H2Server`). It accepts streams and
//! hands each to a stream task (`stream.rs`); it never routes anything
//! itself. Limits from h2's builder: concurrent streams, header list size,
//! pending-accept resets (rapid reset: GOAWAY ENHANCE_YOUR_CALM).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use h2::server::{Connection, Handshake, SendResponse};
use h2::RecvStream;
use http::Request;

use super::io::{H2Io, IoShared};
use super::task::{ReadyList, TaskHandle, TaskId};
use super::Handover;
use crate::metrics::{Direction, TlsLabel};
use crate::proxy::ready::Readiness;

/// Streams one client may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// The largest header block accepted (decoded).
pub const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;

enum State {
    Handshaking(Pin<Box<Handshake<H2Io, Bytes>>>),
    Serving(Box<Connection<H2Io, Bytes>>),
}

pub struct ServerConn {
    pub direction: Direction,
    pub orig_dst: Option<SocketAddr>,
    pub client_id: Option<Arc<str>>,
    /// Its TLS state, as metrics label it (its streams' `request_total`).
    pub tls: TlsLabel,
    pub sock: usize,
    task: TaskHandle,
    shared: Rc<IoShared>,
    state: State,
    draining: bool,
}

/// What a poll of the connection found.
pub enum Served {
    Open,
    /// Over: the connection is closed.
    Closed,
}

impl ServerConn {
    pub fn new(index: usize, h: Handover, ready: &ReadyList) -> ServerConn {
        let client_id = h.transport.peer_identity().cloned();
        let (io, shared) = H2Io::new(h.transport, h.prefix);
        let hs = h2::server::Builder::new()
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .handshake(io);
        let task = TaskHandle::new(TaskId::Server(index), ready);
        task.wake();
        ServerConn {
            direction: h.direction,
            orig_dst: h.orig_dst,
            client_id,
            tls: h.tls,
            sock: h.sock,
            task,
            shared,
            state: State::Handshaking(Box::pin(hs)),
            draining: false,
        }
    }

    pub fn ready(&mut self, r: Readiness) {
        self.shared.ready(r);
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

    /// Drives the connection; new streams go to `accepted`.
    pub fn poll(
        &mut self,
        accepted: &mut Vec<(Request<RecvStream>, SendResponse<Bytes>)>,
    ) -> Served {
        self.task.polling();
        let mut cx = self.task.context();
        loop {
            match &mut self.state {
                State::Handshaking(hs) => match hs.as_mut().poll(&mut cx) {
                    Poll::Pending => return Served::Open,
                    Poll::Ready(Err(e)) => {
                        log::debug!("h2 handshake with a client failed: {e}");
                        return Served::Closed;
                    }
                    Poll::Ready(Ok(mut conn)) => {
                        if self.draining {
                            conn.graceful_shutdown();
                        }
                        self.state = State::Serving(Box::new(conn));
                    }
                },
                State::Serving(conn) => match conn.poll_accept(&mut cx) {
                    Poll::Pending => return Served::Open,
                    Poll::Ready(Some(Ok(stream))) => accepted.push(stream),
                    Poll::Ready(Some(Err(e))) => {
                        log::debug!("h2 client connection failed: {e}");
                        return Served::Closed;
                    }
                    Poll::Ready(None) => return Served::Closed,
                },
            }
        }
    }
}
