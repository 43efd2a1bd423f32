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

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

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
    addr: SocketAddr,
}

impl DestinationServer {
    /// Binds `listen` (`ip:port`, port 0 for any) and starts serving.
    pub fn start(
        env: Arc<Environment>,
        listen: SocketAddr,
        hub: Arc<Hub>,
        source: Arc<dyn Source>,
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
            .add_server_streaming_handler(&SERVE_GET, handler(Kind::Endpoints, hub, source))
            .build();
        let mut server = ServerBuilder::new(env).register_service(service).build()?;
        let port = server.add_listening_port(listen.to_string(), ServerCredentials::insecure())?;
        server.start();
        Ok(DestinationServer {
            server,
            addr: SocketAddr::new(listen.ip(), port),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, cancels open calls, and waits for the server to stop.
    pub fn shutdown(mut self) {
        let done = self.server.shutdown();
        self.server.cancel_all_calls();
        if let Err(e) = futures::executor::block_on(done) {
            log::warn!("destination server shutdown: {e}");
        }
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
