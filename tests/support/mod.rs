//! Thread-level integration harness: a real grpcio mock controller, real
//! backends and the real proxy, all threads of the test process on loopback
//! ports bound to port 0.
//!
//! - [`MockController`]: a Destination server whose test pushes profiles,
//!   endpoint updates and errors per path mid-test, sees which streams are
//!   open, and can be killed and restarted on the same port.
//! - [`proxy`]: the proxy (`spoke::app::App`) built from an injected config
//!   (never `set_var`); dropping it joins every thread and re-raises a panic of
//!   the event loop.
//! - [`eventually`]: a bounded wait whose patience comes from
//!   `RUST_TEST_PATIENCE_MS` (default 10s).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grpcio::{EnvBuilder, Environment, RpcStatus, RpcStatusCode};
use protobuf::Message;

use spoke::app::App;
use spoke::config::{self, Config, MapEnv};
use spoke::controller::server::{DestinationServer, Hub, Kind, Opening, Raw, Source};
use spoke::devtools::{self, Backend, Handler, Reply, Response};
use spoke::discovery::convert::to_tcp_address;
use spoke::proto::destination::{
    AddrSet, DestinationProfile, GetDestination, NoEndpoints, Update, WeightedAddr, WeightedAddrSet,
};

pub use spoke::proto::destination as pb;

/// The binary's allocator, so every test's event loop runs over its cache.
#[global_allocator]
static ALLOC: spoke::alloc::Allocator = spoke::alloc::Allocator;

pub mod echo;
pub mod frames;
pub mod mesh;

/// How long `eventually` waits.
pub fn patience() -> Duration {
    let ms = std::env::var("RUST_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    Duration::from_millis(ms)
}

/// Polls `cond` until it holds, panicking with `what` after the patience.
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience();
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {:?} waiting for: {what}", patience());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Like [`eventually`], returning the first `Some` value.
#[track_caller]
pub fn eventually_some<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let mut out = None;
    eventually(what, || {
        out = f();
        out.is_some()
    });
    out.expect("eventually returned")
}

/// What a new stream of one path gets.
#[derive(Clone)]
enum Answer {
    Messages(Vec<Raw>),
    Fail(RpcStatusCode, String),
}

#[derive(Default)]
struct MockState {
    answers: Mutex<HashMap<(Kind, String), Answer>>,
    /// The endpoint set each path currently has, for computing diffs.
    endpoints: Mutex<HashMap<String, Vec<SocketAddr>>>,
    requests: Mutex<Vec<(Kind, GetDestination)>>,
}

impl Source for MockState {
    fn open(&self, kind: Kind, req: &GetDestination) -> Opening {
        self.requests.lock().unwrap().push((kind, req.clone()));
        match self.answers.lock().unwrap().get(&(kind, req.path.clone())) {
            Some(Answer::Messages(m)) => Opening::Send(m.clone()),
            Some(Answer::Fail(code, msg)) => {
                Opening::Fail(RpcStatus::with_message(*code, msg.clone()))
            }
            None => Opening::Nothing,
        }
    }
}

/// A programmable Destination server on `127.0.0.1:0`.
pub struct MockController {
    env: Arc<Environment>,
    hub: Arc<Hub>,
    state: Arc<MockState>,
    server: Option<DestinationServer>,
    addr: SocketAddr,
}

impl MockController {
    pub fn start() -> MockController {
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(1)
                .name_prefix("mock-grpc")
                .build(),
        );
        let hub = Arc::new(Hub::default());
        let state = Arc::new(MockState::default());
        let server = DestinationServer::start(
            env.clone(),
            "127.0.0.1:0".parse().unwrap(),
            hub.clone(),
            state.clone(),
        )
        .expect("mock controller starts");
        let addr = server.addr();
        MockController {
            env,
            hub,
            state,
            server: Some(server),
            addr,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the profile of `path` and pushes it to open GetProfile streams.
    pub fn profile(&self, path: &str, profile: &DestinationProfile) {
        self.profile_raw(path, profile.write_to_bytes().unwrap());
    }

    /// Like [`Self::profile`] with bytes no encoder would produce.
    pub fn profile_raw(&self, path: &str, raw: Raw) {
        let mut streams = self.hub.lock();
        self.state.answers.lock().unwrap().insert(
            (Kind::Profile, path.to_string()),
            Answer::Messages(vec![raw.clone()]),
        );
        streams.send(Kind::Profile, path, &raw);
    }

    /// Sets the endpoint set of `path`: new streams get one `add`; open ones
    /// get a `remove` of what went away and an `add` of what is new.
    pub fn endpoints(&self, path: &str, addrs: &[SocketAddr]) {
        let mut streams = self.hub.lock();
        let mut current = self.state.endpoints.lock().unwrap();
        let old = current
            .insert(path.to_string(), addrs.to_vec())
            .unwrap_or_default();
        let opening = if addrs.is_empty() {
            no_endpoints(true)
        } else {
            add(addrs)
        };
        self.state.answers.lock().unwrap().insert(
            (Kind::Endpoints, path.to_string()),
            Answer::Messages(vec![opening.write_to_bytes().unwrap()]),
        );
        let gone: Vec<_> = old.iter().filter(|a| !addrs.contains(a)).copied().collect();
        let new: Vec<_> = addrs.iter().filter(|a| !old.contains(a)).copied().collect();
        if addrs.is_empty() {
            streams.send(
                Kind::Endpoints,
                path,
                &no_endpoints(true).write_to_bytes().unwrap(),
            );
            return;
        }
        if !gone.is_empty() {
            streams.send(
                Kind::Endpoints,
                path,
                &remove(&gone).write_to_bytes().unwrap(),
            );
        }
        if !new.is_empty() {
            streams.send(Kind::Endpoints, path, &add(&new).write_to_bytes().unwrap());
        }
    }

    /// Answers `path` with `update` (one message, e.g. an `add` whose
    /// addresses carry TLS identities and protocol hints) from now on.
    pub fn endpoints_update(&self, path: &str, update: &Update) {
        let mut streams = self.hub.lock();
        let raw = update.write_to_bytes().unwrap();
        self.state.answers.lock().unwrap().insert(
            (Kind::Endpoints, path.to_string()),
            Answer::Messages(vec![raw.clone()]),
        );
        streams.send(Kind::Endpoints, path, &raw);
    }

    /// Answers `path` with `no_endpoints{exists}` from now on.
    pub fn no_endpoints(&self, path: &str, exists: bool) {
        let mut streams = self.hub.lock();
        self.state.endpoints.lock().unwrap().remove(path);
        let raw = no_endpoints(exists).write_to_bytes().unwrap();
        self.state.answers.lock().unwrap().insert(
            (Kind::Endpoints, path.to_string()),
            Answer::Messages(vec![raw.clone()]),
        );
        streams.send(Kind::Endpoints, path, &raw);
    }

    /// Fails open streams of `path` with `code`, and every new one too.
    pub fn fail(&self, kind: Kind, path: &str, code: RpcStatusCode) {
        let mut streams = self.hub.lock();
        let msg = format!("mock says {code:?}");
        self.state
            .answers
            .lock()
            .unwrap()
            .insert((kind, path.to_string()), Answer::Fail(code, msg.clone()));
        streams.fail(kind, path, &RpcStatus::with_message(code, msg));
    }

    /// Open streams of `path` right now.
    pub fn open_streams(&self, kind: Kind, path: &str) -> usize {
        self.hub.open_streams(kind, path)
    }

    /// Every lookup received so far.
    pub fn requests(&self) -> Vec<(Kind, GetDestination)> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Stops the server as a crash would: open streams fail at the proxy
    /// (`UNAVAILABLE`), and the hub forgets them.
    pub fn kill(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }

    /// Starts the server again on the same port, with the same answers.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "kill it first");
        let mut last = None;
        let deadline = Instant::now() + patience();
        while Instant::now() < deadline {
            match DestinationServer::start(
                self.env.clone(),
                self.addr,
                self.hub.clone(),
                self.state.clone(),
            ) {
                Ok(s) => {
                    self.server = Some(s);
                    return;
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "cannot restart the mock controller on {}: {last:?}",
            self.addr
        );
    }
}

impl Drop for MockController {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn add(addrs: &[SocketAddr]) -> Update {
    let mut set = WeightedAddrSet::new();
    for a in addrs {
        let mut w = WeightedAddr::new();
        w.addr = Some(to_tcp_address(*a)).into();
        w.weight = 10_000;
        set.addrs.push(w);
    }
    let mut u = Update::new();
    u.set_add(set);
    u
}

pub fn remove(addrs: &[SocketAddr]) -> Update {
    let mut set = AddrSet::new();
    set.addrs = addrs.iter().map(|a| to_tcp_address(*a)).collect();
    let mut u = Update::new();
    u.set_remove(set);
    u
}

pub fn no_endpoints(exists: bool) -> Update {
    let mut n = NoEndpoints::new();
    n.exists = exists;
    let mut u = Update::new();
    u.set_no_endpoints(n);
    u
}

/// A route matching `path_regex` (and `method`, when given), labelled `name`.
pub fn route(name: &str, method: Option<&str>, path_regex: &str) -> pb::Route {
    let mut path = pb::RequestMatch::new();
    let mut pm = pb::PathMatch::new();
    pm.regex = path_regex.to_string();
    path.set_path(pm);
    let condition = match method {
        None => path,
        Some(m) => {
            let mut meth = pb::RequestMatch::new();
            let mut hm = spoke::proto::http_types::HttpMethod::new();
            hm.set_unregistered(m.to_string());
            meth.set_method(hm);
            let mut seq = pb::request_match::Seq::new();
            seq.matches = vec![meth, path];
            let mut all = pb::RequestMatch::new();
            all.set_all(seq);
            all
        }
    };
    let mut r = pb::Route::new();
    r.condition = Some(condition).into();
    r.metrics_labels.insert("route".into(), name.into());
    r
}

pub fn profile(routes: Vec<pb::Route>) -> DestinationProfile {
    let mut p = DestinationProfile::new();
    p.routes = routes;
    p
}

/// A config for a proxy on loopback port 0 talking to `control`, with short
/// timers so tests stay fast.
pub fn config(control: SocketAddr) -> MapEnv {
    MapEnv::new()
        .set(config::DESTINATION_SVC_ADDR, control.to_string())
        .set(config::OUTBOUND_LISTEN_ADDR, "127.0.0.1:0")
        .set(config::ADMIN_LISTEN_ADDR, "127.0.0.1:0")
        .set(config::INBOUND_LISTEN_ADDR, "127.0.0.1:0")
        .set(config::BACKOFF_MIN, "10ms")
        .set(config::BACKOFF_MAX, "200ms")
        .set(config::FAILFAST_TIMEOUT, "2s")
}

/// Starts the proxy from `env`.
#[track_caller]
pub fn proxy(env: &MapEnv) -> App {
    // Logs go to the test's captured output (RUST_LOG=spoke=debug to see them).
    let _ = env_logger::builder().is_test(true).try_init();
    let cfg = Config::from_env(env).expect("valid test config");
    App::start(&cfg).expect("proxy starts")
}

/// Starts the proxy from `env`, with `orig_dst` saying where accepted
/// connections were going (instead of the kernel).
#[track_caller]
pub fn proxy_with_orig_dst(
    env: &MapEnv,
    orig_dst: Box<dyn spoke::proxy::orig_dst::OrigDst>,
) -> App {
    let _ = env_logger::builder().is_test(true).try_init();
    let cfg = Config::from_env(env).expect("valid test config");
    App::start_with(&cfg, orig_dst).expect("proxy starts")
}

/// An injected original destination (the tests' stand-in for the kernel's
/// `SO_ORIGINAL_DST`): every accepted connection was going to what the test
/// last set (`None`: not redirected).
#[derive(Clone, Default)]
pub struct Injected(Arc<Mutex<Option<SocketAddr>>>);

impl spoke::proxy::orig_dst::OrigDst for Injected {
    fn lookup(
        &self,
        _stream: &mio::net::TcpStream,
        _peer: SocketAddr,
    ) -> std::io::Result<Option<SocketAddr>> {
        Ok(*self.0.lock().expect("lock"))
    }
}

impl Injected {
    pub fn to(orig: SocketAddr) -> Injected {
        let i = Injected::default();
        i.set(Some(orig));
        i
    }

    pub fn set(&self, orig: Option<SocketAddr>) {
        *self.0.lock().expect("lock") = orig;
    }
}

/// What a raw GET for `host` on a fresh connection to `addr` gets back before
/// the proxy closes it (or five seconds run out): the bytes as they came.
pub fn raw_get_at(addr: SocketAddr, host: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let req = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    // The proxy may already have closed it; the write can then fail.
    let _ = s.write_all(req.as_bytes());
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

/// A loopback port with nothing listening on it (bound, noted, closed).
pub fn dead_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
}

/// A listener whose accept queue is full and that never accepts: a connect to it gets
/// no answer (the kernel drops its SYNs). Returns the socket and the connections that
/// filled the queue; both must stay alive for the test.
pub fn never_accepting() -> (socket2::Socket, Vec<socket2::Socket>) {
    use socket2::{Domain, Socket, Type};
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    l.listen(0).expect("listen");
    let addr = l.local_addr().expect("addr");
    let mut fillers = Vec::new();
    // The queue takes backlog + 1 connections; the first that cannot complete shows
    // it is full.
    for _ in 0..8 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        match s.connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(()) => fillers.push(s),
            Err(_) => return (l, fillers),
        }
    }
    panic!("the accept queue never filled");
}

/// A backend answering 200 with its name as the body.
pub fn backend(name: &str) -> Backend {
    let body = format!("{name}\n");
    Backend::start(name, Arc::new(move |_| Response::new(200, body.clone()))).unwrap()
}

pub fn backend_with(name: &str, handler: Handler) -> Backend {
    Backend::start(name, handler).unwrap()
}

/// One GET through the proxy on a fresh connection.
#[track_caller]
pub fn get(app: &App, host: &str, path: &str) -> Reply {
    devtools::get(app.outbound_addr(), host, path).expect("request through the proxy")
}

/// The proxy's `/metrics` text.
pub fn metrics(app: &App) -> String {
    let body = devtools::get(app.admin_addr(), "localhost", "/metrics")
        .and_then(|reply| reply.payload())
        .expect("scrape /metrics");
    String::from_utf8(body).expect("metrics are UTF-8")
}

/// The value of the sample of `family` whose labels include all of `labels`
/// and, when `exact`, no others; summed over matches.
pub fn metric(app: &App, family: &str, labels: &[(&str, &str)]) -> f64 {
    spoke::metrics::parse_text(&metrics(app))
        .iter()
        .filter(|s| s.name == family && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

/// Whether some sample of `family` has exactly these labels.
pub fn has_series(text: &str, family: &str, labels: &[(&str, &str)]) -> bool {
    spoke::metrics::parse_text(text).iter().any(|s| {
        s.name == family
            && s.labels.len() == labels.len()
            && labels.iter().all(|(k, v)| s.label(k) == Some(*v))
    })
}

/// A CA made by the test, named `cn`: its certificate and key, PEM (for the
/// embedded controller's issuer, and to sign leaves of the test's own).
pub fn test_ca(cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("self-signed CA");
    (cert.pem(), key.serialize_pem())
}

/// A standalone embedded controller serving `file` on loopback, its CA a new
/// test CA named `cn` issuing leaves of `lifetime`: the controller, the CA
/// (to sign leaves of the test's own) and its certificate (the anchors, PEM).
pub fn ca_controller(
    file: &std::path::Path,
    cn: &str,
    lifetime: Duration,
) -> (
    spoke::controller::embedded::Controller,
    spoke::identity::issuer::Issuer,
    String,
) {
    let (cert, key) = test_ca(cn);
    let ca = spoke::identity::issuer::Issuer::from_pem(&cert, &key).expect("test CA");
    let source = spoke::identity::issuer::IssuerSource::Load {
        cert: cert.clone(),
        key,
    };
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let listen = "127.0.0.1:0".parse().expect("address");
    let ctl = spoke::controller::embedded::Controller::start(
        env,
        file,
        listen,
        Some((&source, lifetime)),
    )
    .expect("controller starts");
    (ctl, ca, cert)
}

/// The Debian interpreter, which has the `python3-h2` modules
/// (`scripts/setup.sh` installs them).
pub const PYTHON: &str = "/usr/bin/python3";

/// Runs the test client `tests/clients/<script>` with `args` (at most a
/// minute) and returns what it printed; panics, with its output, when it
/// fails.
pub fn python_client(script: &str, args: &[&str]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = std::process::Command::new("timeout")
        .arg("60")
        .arg(PYTHON)
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{PYTHON} {script}: {e} (run scripts/setup.sh)"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().to_owned()
}
