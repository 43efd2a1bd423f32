//! The gRPC Destination server shared by the embedded controller
//! (`controller::embedded`) and the test harness's mock controller.
//!
//! Runs on grpcio's completion-queue threads. Each `Get`/`GetProfile` call
//! subscribes to the [`Hub`] under its path and gets its opening messages from a
//! callback evaluated under the hub lock, so an update published concurrently is
//! never lost between the opening and the subscription. Messages are carried
//! pre-encoded (`Raw`), so a test can also push bytes no encoder would produce.
//! A stream ends when the hub fails or closes it, or when the client cancels it
//! (noticed even while idle, so the hub's open-stream counts are exact).
//!
//! [`DestinationServer::shutdown`] stops gracefully: grpc core sends GOAWAY
//! `NO_ERROR` and takes no new calls, every open stream is finished with status
//! OK (a Linkerd client re-requests a stream that ends, so it simply moves on to
//! the next controller), and only calls still open after the grace period are
//! cancelled. [`DestinationServer::abort`] cancels everything at once, which is
//! what a crash looks like to a client (`UNAVAILABLE "Cancelling all calls"`).

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::future::{poll_fn, select, Either};
use futures::{Sink, SinkExt, StreamExt};
use grpcio::{
    Environment, GrpcSlice, Marshaller, MessageReader, Method, MethodType, RpcContext, RpcStatus,
    RpcStatusCode, Server, ServerBuilder, ServerCredentials, ServerStreamingSink, ServiceBuilder,
    WriteFlags,
};

use crate::proto::destination::GetDestination;
use crate::proto::{METHOD_GET, METHOD_GET_PROFILE};

/// An encoded protobuf message.
pub type Raw = Vec<u8>;

fn raw_ser(msg: &Raw, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    *buf = GrpcSlice::from(msg.as_slice());
    Ok(())
}

fn raw_de(mut reader: MessageReader) -> grpcio::Result<Raw> {
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(out)
}

const RAW: Marshaller<Raw> = Marshaller {
    ser: raw_ser,
    de: raw_de,
};

const SERVE_GET: Method<GetDestination, Raw> = Method {
    ty: MethodType::ServerStreaming,
    name: METHOD_GET.name,
    req_mar: METHOD_GET.req_mar,
    resp_mar: RAW,
};

const SERVE_GET_PROFILE: Method<GetDestination, Raw> = Method {
    ty: MethodType::ServerStreaming,
    name: METHOD_GET_PROFILE.name,
    req_mar: METHOD_GET_PROFILE.req_mar,
    resp_mar: RAW,
};

/// Which method a stream belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Profile,
    Endpoints,
}

/// What a new stream gets first.
pub enum Opening {
    /// These messages, then the stream stays open for updates.
    Send(Vec<Raw>),
    /// End the call at once with this status.
    Fail(RpcStatus),
    /// Nothing yet; the stream stays open.
    Nothing,
}

/// Answers the opening of every new stream.
pub trait Source: Send + Sync + 'static {
    fn open(&self, kind: Kind, request: &GetDestination) -> Opening;
}

enum Cmd {
    Send(Raw),
    Fail(RpcStatus),
}

/// Open streams by method and path.
#[derive(Default)]
pub struct Hub {
    inner: Mutex<Streams>,
}

#[derive(Default)]
pub struct Streams {
    open: HashMap<(Kind, String), Vec<mpsc::UnboundedSender<Cmd>>>,
    /// Set by a graceful stop: a call that still slips in (accepted by grpc
    /// core just before the stop) ends at once, cleanly, instead of staying
    /// open past it.
    closing: bool,
}

impl Hub {
    /// Locks the hub, to publish several changes atomically with respect to
    /// new subscriptions.
    pub fn lock(&self) -> MutexGuard<'_, Streams> {
        // A panic while holding the lock leaves the map consistent (every
        // operation is a single insert/retain), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribe(
        &self,
        kind: Kind,
        path: &str,
        opening: impl FnOnce() -> Opening,
    ) -> mpsc::UnboundedReceiver<Cmd> {
        let (tx, rx) = mpsc::unbounded();
        let mut streams = self.lock();
        if streams.closing {
            // Dropping `tx` ends the call with status OK.
            return rx;
        }
        match opening() {
            Opening::Send(msgs) => {
                for m in msgs {
                    let _ = tx.unbounded_send(Cmd::Send(m));
                }
            }
            Opening::Fail(status) => {
                let _ = tx.unbounded_send(Cmd::Fail(status));
                return rx;
            }
            Opening::Nothing => {}
        }
        streams
            .open
            .entry((kind, path.to_string()))
            .or_default()
            .push(tx);
        rx
    }

    pub fn open_streams(&self, kind: Kind, path: &str) -> usize {
        self.lock().count(kind, path)
    }
}

impl Streams {
    /// Sends `msg` to every open stream of `path`; returns how many got it.
    pub fn send(&mut self, kind: Kind, path: &str, msg: &Raw) -> usize {
        self.each(kind, path, |tx| {
            tx.unbounded_send(Cmd::Send(msg.clone())).is_ok()
        })
    }

    /// Ends every open stream of `path` with `status`.
    pub fn fail(&mut self, kind: Kind, path: &str, status: &RpcStatus) -> usize {
        let n = self.each(kind, path, |tx| {
            tx.unbounded_send(Cmd::Fail(status.clone())).is_ok()
        });
        self.open.remove(&(kind, path.to_string()));
        n
    }

    /// Ends every open stream of `path` cleanly (status OK).
    pub fn close(&mut self, kind: Kind, path: &str) -> usize {
        let n = self.count(kind, path);
        self.open.remove(&(kind, path.to_string()));
        n
    }

    /// Ends every open stream cleanly (status OK), and every stream opened
    /// from now on, until a server starts on this hub again. Returns how many
    /// were open.
    pub fn close_all(&mut self) -> usize {
        self.closing = true;
        let n = self
            .open
            .values()
            .flatten()
            .filter(|tx| !tx.is_closed())
            .count();
        self.open.clear();
        n
    }

    /// Streams of `path` still open (cancelled ones are pruned first).
    pub fn count(&mut self, kind: Kind, path: &str) -> usize {
        self.each(kind, path, |_| true)
    }

    /// Every path with an open stream.
    pub fn paths(&mut self) -> Vec<(Kind, String)> {
        self.open.retain(|_, txs| {
            txs.retain(|tx| !tx.is_closed());
            !txs.is_empty()
        });
        let mut out: Vec<_> = self.open.keys().cloned().collect();
        out.sort();
        out
    }

    fn each(
        &mut self,
        kind: Kind,
        path: &str,
        mut f: impl FnMut(&mpsc::UnboundedSender<Cmd>) -> bool,
    ) -> usize {
        let key = (kind, path.to_string());
        let Some(txs) = self.open.get_mut(&key) else {
            return 0;
        };
        txs.retain(|tx| !tx.is_closed() && f(tx));
        let n = txs.len();
        if n == 0 {
            self.open.remove(&key);
        }
        n
    }
}

/// A running Destination server.
pub struct DestinationServer {
    server: Server,
    hub: Arc<Hub>,
    addr: SocketAddr,
}

/// How a graceful stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Streams that were open and were finished with status OK.
    pub finished: usize,
    /// Whether calls were still open when the grace period ran out, and so
    /// were cancelled.
    pub cancelled_late: bool,
}

impl DestinationServer {
    /// Binds `listen` (`ip:port`, port 0 for any) and starts serving.
    pub fn start(
        env: Arc<Environment>,
        listen: SocketAddr,
        hub: Arc<Hub>,
        source: Arc<dyn Source>,
    ) -> grpcio::Result<DestinationServer> {
        DestinationServer::start_with(env, listen, hub, source, None)
    }

    /// [`DestinationServer::start`], also serving `extra` (the embedded
    /// controller's Identity service) on the same port.
    pub fn start_with(
        env: Arc<Environment>,
        listen: SocketAddr,
        hub: Arc<Hub>,
        source: Arc<dyn Source>,
        extra: Option<grpcio::Service>,
    ) -> grpcio::Result<DestinationServer> {
        let handler = |kind: Kind, hub: Arc<Hub>, source: Arc<dyn Source>| {
            move |ctx: RpcContext<'_>, req: GetDestination, sink: ServerStreamingSink<Raw>| {
                let rx = hub.subscribe(kind, &req.path, || source.open(kind, &req));
                ctx.spawn(serve(rx, sink));
            }
        };
        let service = ServiceBuilder::new()
            .add_server_streaming_handler(
                &SERVE_GET_PROFILE,
                handler(Kind::Profile, hub.clone(), source.clone()),
            )
            .add_server_streaming_handler(&SERVE_GET, handler(Kind::Endpoints, hub.clone(), source))
            .build();
        let mut builder = ServerBuilder::new(env).register_service(service);
        if let Some(extra) = extra {
            builder = builder.register_service(extra);
        }
        let mut server = builder.build()?;
        let port = server.add_listening_port(listen.to_string(), ServerCredentials::insecure())?;
        // A hub outlives a stopped server when a test restarts one on it.
        hub.lock().closing = false;
        server.start();
        Ok(DestinationServer {
            server,
            hub,
            addr: SocketAddr::new(listen.ip(), port),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops gracefully: no new calls (grpc core sends GOAWAY `NO_ERROR` on
    /// every connection), every open stream finished with status OK, and a
    /// wait of at most `grace` for those calls to complete; what is still open
    /// then is cancelled.
    pub fn shutdown(mut self, grace: Duration) -> Stopped {
        // Stop taking calls first, so a client whose stream ends below does
        // not re-request it on this server: its connection has had GOAWAY.
        let mut done = self.server.shutdown();
        let finished = self.hub.lock().close_all();
        let cancelled_late = match block_until(&mut done, Instant::now() + grace) {
            Some(result) => {
                if let Err(e) = result {
                    log::warn!("destination server shutdown: {e}");
                }
                false
            }
            None => {
                self.server.cancel_all_calls();
                if let Err(e) = futures::executor::block_on(done) {
                    log::warn!("destination server shutdown: {e}");
                }
                true
            }
        };
        Stopped {
            finished,
            cancelled_late,
        }
    }

    /// Stops at once, cancelling every open call (clients see `UNAVAILABLE`):
    /// what a crashed controller looks like, for tests.
    pub fn abort(mut self) {
        let done = self.server.shutdown();
        self.server.cancel_all_calls();
        if let Err(e) = futures::executor::block_on(done) {
            log::warn!("destination server shutdown: {e}");
        }
        // Streams of this server are gone; a restart on the hub starts afresh.
        let mut streams = self.hub.lock();
        streams.open.clear();
    }
}

/// Wakes a thread parked in [`block_until`].
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` on this thread until it completes or `deadline` passes.
fn block_until<F: Future + Unpin>(fut: &mut F, deadline: Instant) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = Pin::new(&mut *fut).poll(&mut cx) {
            return Some(out);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        // A spurious or stale unpark only costs one more poll.
        std::thread::park_timeout(deadline - now);
    }
}

/// Forwards hub commands to one call until it ends or the client cancels.
async fn serve(mut rx: mpsc::UnboundedReceiver<Cmd>, mut sink: ServerStreamingSink<Raw>) {
    loop {
        let cmd = {
            // Completes when the client cancels: grpcio's `poll_ready` reports
            // the call's close (and registers the waker for it) even when no
            // write is pending.
            let cancelled = poll_fn(|cx| match Pin::new(&mut sink).poll_ready(cx) {
                Poll::Ready(Err(_)) => Poll::Ready(()),
                _ => Poll::Pending,
            });
            match select(rx.next(), Box::pin(cancelled)).await {
                Either::Left((cmd, _)) => cmd,
                Either::Right(_) => return,
            }
        };
        match cmd {
            Some(Cmd::Send(msg)) => {
                if sink.send((msg, WriteFlags::default())).await.is_err() {
                    return;
                }
            }
            Some(Cmd::Fail(status)) => {
                let _ = sink.fail(status).await;
                return;
            }
            None => {
                let _ = sink.close().await;
                return;
            }
        }
    }
}

/// `InvalidArgument` with a message, for names a source cannot serve.
pub fn invalid_argument(msg: impl Into<String>) -> RpcStatus {
    RpcStatus::with_message(RpcStatusCode::INVALID_ARGUMENT, msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::oneshot;

    fn next(rx: &mut mpsc::UnboundedReceiver<Cmd>) -> Option<Option<Cmd>> {
        // Some(None): the stream ended; None: nothing yet.
        match rx.try_recv() {
            Ok(cmd) => Some(Some(cmd)),
            Err(mpsc::TryRecvError::Closed) => Some(None),
            Err(mpsc::TryRecvError::Empty) => None,
        }
    }

    #[test]
    fn close_all_ends_open_streams_and_new_ones_until_restart() {
        let hub = Hub::default();
        let mut a = hub.subscribe(Kind::Profile, "a", || Opening::Nothing);
        let mut b = hub.subscribe(Kind::Endpoints, "b", || Opening::Send(vec![vec![1]]));
        assert!(next(&mut a).is_none(), "open and idle");
        assert_eq!(hub.lock().close_all(), 2);
        assert!(matches!(next(&mut a), Some(None)), "a ended cleanly");
        // What was queued is still delivered, then the end.
        assert!(matches!(next(&mut b), Some(Some(Cmd::Send(m))) if m == vec![1]));
        assert!(matches!(next(&mut b), Some(None)));

        let mut late = hub.subscribe(Kind::Profile, "a", || panic!("not consulted"));
        assert!(
            matches!(next(&mut late), Some(None)),
            "a late call ends at once"
        );
        assert_eq!(hub.open_streams(Kind::Profile, "a"), 0);

        hub.lock().closing = false;
        let mut again = hub.subscribe(Kind::Profile, "a", || Opening::Nothing);
        assert!(next(&mut again).is_none());
        assert_eq!(hub.open_streams(Kind::Profile, "a"), 1);
    }

    #[test]
    fn close_all_does_not_count_cancelled_streams() {
        let hub = Hub::default();
        let a = hub.subscribe(Kind::Profile, "a", || Opening::Nothing);
        let _b = hub.subscribe(Kind::Profile, "a", || Opening::Nothing);
        drop(a);
        assert_eq!(hub.lock().close_all(), 1);
    }

    #[test]
    fn block_until_returns_what_completes_and_gives_up_at_the_deadline() {
        let mut ready = futures::future::ready(7);
        assert_eq!(block_until(&mut ready, Instant::now()), Some(7));

        let (_keep, mut never) = oneshot::channel::<u8>();
        let start = Instant::now();
        assert_eq!(
            block_until(&mut never, start + Duration::from_millis(50)),
            None
        );
        assert!(start.elapsed() >= Duration::from_millis(50));

        // Completed from another thread: the waker unparks this one long
        // before the deadline.
        let (tx, mut rx) = oneshot::channel::<u8>();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = tx.send(3);
        });
        let start = Instant::now();
        let got = block_until(&mut rx, start + Duration::from_secs(30));
        assert_eq!(got, Some(Ok(3)));
        assert!(start.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
    }
}
