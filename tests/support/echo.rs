//! A real gRPC test service (grpcio) for the HTTP/2 tests: each server has a
//! name it puts in every reply, so a test sees which endpoint served a call.
//! Messages are `GetDestination`, its `path` the payload (any protobuf
//! message would do; this one is already compiled here).
//!
//! Methods of `test.Echo`: `Unary` (`fail:<code>` answers that status,
//! `slow:<ms>[-tag]` waits first), `Many` (server streaming: `n` replies),
//! `Sum` (client streaming: the payloads joined), `Chat` (bidirectional:
//! each message echoed), `Big` (server streaming: `n` replies of 32 KiB).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt, TryStreamExt};
use grpcio::{
    ChannelBuilder, EnvBuilder, Environment, Method, MethodType, RpcStatus, RpcStatusCode, Server,
    ServerBuilder, ServiceBuilder, WriteFlags,
};

use spoke::proto::destination::GetDestination as Msg;

macro_rules! method {
    ($name:ident, $ty:ident, $path:literal) => {
        pub const $name: Method<Msg, Msg> = Method {
            ty: MethodType::$ty,
            name: $path,
            req_mar: grpcio::Marshaller {
                ser: grpcio::pb_ser,
                de: grpcio::pb_de,
            },
            resp_mar: grpcio::Marshaller {
                ser: grpcio::pb_ser,
                de: grpcio::pb_de,
            },
        };
    };
}

method!(UNARY, Unary, "/test.Echo/Unary");
method!(MANY, ServerStreaming, "/test.Echo/Many");
method!(SUM, ClientStreaming, "/test.Echo/Sum");
method!(CHAT, Duplex, "/test.Echo/Chat");
method!(BIG, ServerStreaming, "/test.Echo/Big");

pub fn msg(s: &str) -> Msg {
    let mut m = Msg::new();
    m.path = s.to_string();
    m
}

/// A running echo server.
pub struct EchoServer {
    server: Server,
    pub addr: std::net::SocketAddr,
    calls: Arc<AtomicUsize>,
}

impl EchoServer {
    pub fn start(name: &str) -> EchoServer {
        EchoServer::start_with(name, false, 0)
    }

    /// A server whose every unary call answers UNAVAILABLE.
    pub fn failing(name: &str) -> EchoServer {
        EchoServer::start_with(name, true, 0)
    }

    /// A server that waits `ms` before every unary answer.
    pub fn slow(name: &str, ms: u64) -> EchoServer {
        EchoServer::start_with(name, false, ms)
    }

    fn start_with(name: &str, failing: bool, delay_ms: u64) -> EchoServer {
        let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("echo").build());
        let calls = Arc::new(AtomicUsize::new(0));
        let (n1, n2, n3, n4) = (
            name.to_string(),
            name.to_string(),
            name.to_string(),
            name.to_string(),
        );
        let (c1, c2, c3, c4) = (calls.clone(), calls.clone(), calls.clone(), calls.clone());
        let c5 = calls.clone();
        let service = ServiceBuilder::new()
            .add_unary_handler(&UNARY, move |ctx, req: Msg, sink| {
                c1.fetch_add(1, Ordering::SeqCst);
                let name = n1.clone();
                ctx.spawn(async move {
                    let p = req.path;
                    let p = match (failing, delay_ms) {
                        (true, _) => "fail:14".to_string(),
                        (false, 0) => p,
                        (false, ms) => format!("slow:{ms}-{p}"),
                    };
                    if let Some(code) = p.strip_prefix("fail:") {
                        let code: i32 = code.parse().unwrap_or(2);
                        let status = RpcStatus::with_message(
                            RpcStatusCode::from(code),
                            format!("{name} says no"),
                        );
                        let _ = sink.fail(status).await;
                        return;
                    }
                    if let Some(ms) = p.strip_prefix("slow:") {
                        let ms = ms.split('-').next().unwrap_or("");
                        let ms: u64 = ms.parse().unwrap_or(0);
                        // The handler runs on grpcio's own thread; a blocking
                        // wait there is this test server's way to be slow.
                        std::thread::sleep(Duration::from_millis(ms));
                    }
                    let _ = sink.success(msg(&format!("{name}:{p}"))).await;
                });
            })
            .add_server_streaming_handler(&MANY, move |ctx, req: Msg, mut sink| {
                c2.fetch_add(1, Ordering::SeqCst);
                let name = n2.clone();
                ctx.spawn(async move {
                    let n: usize = req.path.parse().unwrap_or(0);
                    for i in 0..n {
                        let m = (msg(&format!("{name}:{i}")), WriteFlags::default());
                        if sink.send(m).await.is_err() {
                            return;
                        }
                    }
                    let _ = sink.close().await;
                });
            })
            .add_client_streaming_handler(&SUM, move |ctx, stream, sink| {
                c3.fetch_add(1, Ordering::SeqCst);
                let name = n3.clone();
                ctx.spawn(async move {
                    let parts: Result<Vec<Msg>, _> = stream.try_collect().await;
                    if let Ok(parts) = parts {
                        let joined: Vec<String> = parts.into_iter().map(|m| m.path).collect();
                        let reply = msg(&format!("{name}:{}", joined.join("+")));
                        let _ = sink.success(reply).await;
                    }
                });
            })
            .add_duplex_streaming_handler(&CHAT, move |ctx, mut stream, mut sink| {
                c4.fetch_add(1, Ordering::SeqCst);
                let name = n4.clone();
                ctx.spawn(async move {
                    while let Some(Ok(m)) = stream.next().await {
                        let reply = (msg(&format!("{name}:{}", m.path)), WriteFlags::default());
                        if sink.send(reply).await.is_err() {
                            return;
                        }
                    }
                    let _ = sink.close().await;
                });
            })
            .add_server_streaming_handler(&BIG, move |ctx, req: Msg, mut sink| {
                c5.fetch_add(1, Ordering::SeqCst);
                ctx.spawn(async move {
                    let n: usize = req.path.parse().unwrap_or(0);
                    let payload = "x".repeat(32 * 1024);
                    for _ in 0..n {
                        if sink
                            .send((msg(&payload), WriteFlags::default()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    let _ = sink.close().await;
                });
            })
            .build();
        let mut server = ServerBuilder::new(env)
            .register_service(service)
            .build()
            .expect("echo server builds");
        let port = server
            .add_listening_port("127.0.0.1:0", grpcio::ServerCredentials::insecure())
            .expect("echo server binds");
        server.start();
        EchoServer {
            server,
            addr: format!("127.0.0.1:{port}").parse().expect("addr"),
            calls,
        }
    }

    /// Shuts down gracefully: GOAWAY to every connection, calls in flight
    /// complete, new ones are refused.
    pub fn shutdown(&mut self) {
        let _ = futures::executor::block_on(self.server.shutdown());
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A gRPC client that connects to `proxy` (plaintext HTTP/2 with prior
/// knowledge) and names `authority` in every call.
pub fn client_via(proxy: std::net::SocketAddr, authority: &str) -> grpcio::Client {
    let env: Arc<Environment> = Arc::new(
        EnvBuilder::new()
            .cq_count(1)
            .name_prefix("echo-client")
            .build(),
    );
    let ch = ChannelBuilder::new(env)
        .default_authority(authority.to_string())
        .connect(&proxy.to_string());
    grpcio::Client::new(ch)
}

/// The proxy in front of `server` as the only endpoint of `authority`
/// (an empty profile), and a gRPC client of its outbound side.
pub fn proxied(
    server: &EchoServer,
    authority: &str,
) -> (super::MockController, spoke::app::App, grpcio::Client) {
    let ctl = super::MockController::start();
    ctl.endpoints(authority, &[server.addr]);
    ctl.profile(authority, &super::profile(vec![]));
    let app = super::proxy(&super::config(ctl.addr()));
    let client = client_via(app.outbound_addr(), authority);
    (ctl, app, client)
}
