//! The blocking stream loop each discovery thread runs (`profile:<dst>` and
//! `endpoints:<dst>` threads, spawned by `discovery::mod`).
//!
//! ```text
//!             open ok                first message
//! Disconnected -------> Waiting --------------------> Streaming --+
//!   ^   | open failed      | error / end (no message)    |  ^      | message
//!   |   v                  v                             |  +------+
//!   +- Backoff <-----------+----------- error -----------+
//!   ^                                                     | clean end
//!   +-----------------(at once)---------------------------+
//! ```
//!
//! A clean end after messages is re-requested at once; failures wait on the
//! exponential backoff, which resets when a message arrives. What a message or a
//! failure *means* is up to the [`Handler`] (profile vs endpoints). Every wait
//! also watches the hangup, so eviction ends the thread at once, and dropping the
//! stream cancels the RPC at the controller.

use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{select, Either};
use futures::StreamExt;
use grpcio::{CallOption, Client, ClientSStreamReceiver, Method, RpcStatus, RpcStatusCode};

use super::backoff::Backoff;
use super::control::ControlConn;
use super::wait::block_on_timeout;
use crate::metrics::DiscoveryMetrics;
use crate::proto::destination::GetDestination;

/// What the owner of a stream wants after a message or a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going (after a failure: back off, then reconnect).
    Continue,
    /// End this watch; the thread returns.
    Stop,
}

/// The kind-specific half of a watch.
pub trait Handler<M> {
    /// A new stream was opened (before its first message).
    fn stream_started(&mut self) {}
    fn message(&mut self, msg: M) -> Flow;
    /// The stream failed with `status`; `first_lookup` is true when no message
    /// was ever received on this thread.
    fn failed(&mut self, status: &RpcStatus, first_lookup: bool) -> Flow;
    /// While a stream is open: how long until [`Handler::tick`] should run
    /// (used for DNS refreshes in fallback mode). `None`: no tick.
    fn tick_after(&self) -> Option<Duration> {
        None
    }
    fn tick(&mut self) {}
}

enum State<M> {
    Disconnected,
    Waiting(ClientSStreamReceiver<M>),
    Streaming(ClientSStreamReceiver<M>),
    Backoff(Duration),
    Done(Exit),
}

/// Why a watch returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    HungUp,
    Stopped,
}

pub struct Watcher<'a, M> {
    pub conn: &'a ControlConn<Client>,
    pub method: &'a Method<GetDestination, M>,
    /// Boxed: it lives in a frame that a parked thread keeps (see `stack`).
    pub request: Box<GetDestination>,
    pub backoff: Backoff,
    pub hangup: &'a mut oneshot::Receiver<()>,
    pub metrics: &'a mut DiscoveryMetrics,
    pub dst: &'a str,
    /// The connection the open stream runs on (see `control`).
    pub generation: u64,
}

enum Next<M> {
    Item(grpcio::Result<M>),
    End,
    Tick,
    HungUp,
}

impl<M> Watcher<'_, M> {
    /// Runs the state machine until hangup or until the handler stops it.
    pub fn run(mut self, handler: &mut impl Handler<M>) -> Exit {
        let mut state = State::Disconnected;
        let mut ever_received = false;
        loop {
            state = match state {
                State::Disconnected => self.open(handler),
                State::Waiting(stream) => {
                    self.on_stream(stream, false, handler, &mut ever_received)
                }
                State::Streaming(stream) => {
                    self.on_stream(stream, true, handler, &mut ever_received)
                }
                State::Backoff(delay) => {
                    log::debug!("{}: reconnecting in {delay:?}", self.dst);
                    if block_on_timeout(&mut *self.hangup, Some(delay)).is_some() {
                        return Exit::HungUp;
                    }
                    self.metrics.reconnect();
                    State::Disconnected
                }
                State::Done(exit) => return exit,
            };
            if self.hung_up() {
                return Exit::HungUp;
            }
        }
    }

    fn hung_up(&mut self) -> bool {
        !matches!(self.hangup.try_recv(), Ok(None))
    }

    // Not inlined: starting a call is deep and wide, and a parked thread keeps
    // every stack page above its stack pointer (see `discovery::stack`).
    #[inline(never)]
    fn open(&mut self, handler: &mut impl Handler<M>) -> State<M> {
        let lease = match self.conn.lease() {
            Ok(lease) => lease,
            Err(why) => {
                self.metrics.error(why.code);
                log::debug!("{}: could not open discovery stream: {why}", self.dst);
                return State::Backoff(self.backoff.next_delay());
            }
        };
        self.generation = lease.generation;
        match lease
            .client
            .server_streaming(self.method, &self.request, CallOption::default())
        {
            Ok(stream) => {
                log::debug!("{}: discovery stream open", self.dst);
                self.metrics.stream_opened();
                handler.stream_started();
                State::Waiting(stream)
            }
            Err(e) => {
                self.conn.unavailable(self.generation);
                self.metrics.error(error_code(&e));
                log::warn!("{}: could not open discovery stream: {e}", self.dst);
                State::Backoff(self.backoff.next_delay())
            }
        }
    }

    /// Waits for the next event on an open stream. `received`: this stream
    /// has delivered a message (Streaming) or not yet (Waiting), which decides
    /// how an end is handled.
    fn on_stream(
        &mut self,
        mut stream: ClientSStreamReceiver<M>,
        received: bool,
        handler: &mut impl Handler<M>,
        ever_received: &mut bool,
    ) -> State<M> {
        let next = {
            let mut both = select(stream.next(), &mut *self.hangup);
            match block_on_timeout(&mut both, handler.tick_after()) {
                None => Next::Tick,
                Some(Either::Right(_)) => Next::HungUp,
                Some(Either::Left((Some(item), _))) => Next::Item(item),
                Some(Either::Left((None, _))) => Next::End,
            }
        };
        self.after(next, stream, received, handler, ever_received)
    }

    // Not inlined either: what follows a wake (converting a message, a
    // failure's bookkeeping) would otherwise widen the frame that stays live
    // while the thread is parked in `on_stream`.
    #[inline(never)]
    fn after(
        &mut self,
        next: Next<M>,
        stream: ClientSStreamReceiver<M>,
        received: bool,
        handler: &mut impl Handler<M>,
        ever_received: &mut bool,
    ) -> State<M> {
        match next {
            Next::Tick => {
                handler.tick();
                if received {
                    State::Streaming(stream)
                } else {
                    State::Waiting(stream)
                }
            }
            Next::HungUp => State::Done(Exit::HungUp),
            Next::Item(Ok(msg)) => {
                log::trace!("{}: discovery message", self.dst);
                self.metrics.message();
                self.backoff.reset();
                if !received {
                    self.conn.healthy(self.generation);
                }
                *ever_received = true;
                match handler.message(msg) {
                    Flow::Stop => State::Done(Exit::Stopped),
                    Flow::Continue => State::Streaming(stream),
                }
            }
            Next::Item(Err(e)) => {
                drop(stream);
                self.metrics.error(error_code(&e));
                let status = match e {
                    grpcio::Error::RpcFailure(status) => status,
                    other => RpcStatus::with_message(RpcStatusCode::INTERNAL, other.to_string()),
                };
                if status.code() == RpcStatusCode::UNAVAILABLE {
                    self.conn.unavailable(self.generation);
                }
                log::warn!(
                    "{}: discovery stream failed: {:?} {}",
                    self.dst,
                    status.code(),
                    status.message()
                );
                match handler.failed(&status, !*ever_received) {
                    Flow::Stop => State::Done(Exit::Stopped),
                    Flow::Continue => State::Backoff(self.backoff.next_delay()),
                }
            }
            Next::End if received => {
                log::debug!("{}: discovery stream ended; re-requesting", self.dst);
                State::Disconnected
            }
            Next::End => {
                log::debug!("{}: discovery stream ended before any message", self.dst);
                State::Backoff(self.backoff.next_delay())
            }
        }
    }
}

/// The label for `spoke_discovery_errors_total{code}`.
fn error_code(e: &grpcio::Error) -> &'static str {
    use grpcio::RpcStatusCode as C;
    match e {
        grpcio::Error::RpcFailure(s) => match s.code() {
            C::CANCELLED => "cancelled",
            C::UNKNOWN => "unknown",
            C::INVALID_ARGUMENT => "invalid_argument",
            C::DEADLINE_EXCEEDED => "deadline_exceeded",
            C::NOT_FOUND => "not_found",
            C::ALREADY_EXISTS => "already_exists",
            C::PERMISSION_DENIED => "permission_denied",
            C::RESOURCE_EXHAUSTED => "resource_exhausted",
            C::FAILED_PRECONDITION => "failed_precondition",
            C::ABORTED => "aborted",
            C::OUT_OF_RANGE => "out_of_range",
            C::UNIMPLEMENTED => "unimplemented",
            C::INTERNAL => "internal",
            C::UNAVAILABLE => "unavailable",
            C::DATA_LOSS => "data_loss",
            C::UNAUTHENTICATED => "unauthenticated",
            _ => "other",
        },
        grpcio::Error::Codec(_) => "decode",
        _ => "transport",
    }
}

/// Linkerd's `BackoffUnlessInvalidArgument`: these codes mean the controller
/// will never answer this name, so retrying is pointless.
pub fn is_terminal(status: &RpcStatus) -> bool {
    matches!(
        status.code(),
        grpcio::RpcStatusCode::INVALID_ARGUMENT | grpcio::RpcStatusCode::FAILED_PRECONDITION
    )
}
