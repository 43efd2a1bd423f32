//! The one connection to the control plane that every discovery stream shares.
//!
//! spoke dials the control plane itself and hands the connected socket to gRPC
//! as a *direct* channel (`connect_from_fd`): one HTTP/2 transport with a
//! minimal filter stack under it. gRPC's full client channel (resolver, load
//! balancer, subchannel, per-call retry and message-size filters) costs about
//! 5 KiB more for every open stream, and a proxy with 1,000 live destinations
//! holds 2,000 of them; none of that machinery is used for one address.
//!
//! A direct channel cannot reconnect, so the `control` thread owns the
//! connection's life. An eager connection (a remote control plane, which
//! `/ready` reports on) is dialed at start; a lazy one (the embedded
//! controller) when the first stream asks for it.
//!
//! ```text
//!   dial ok (TCP connect, then one gRPC
//!   call answered): install (generation + 1)  a stream on the current
//!   +-------------------------------+         generation fails UNAVAILABLE
//!   |                               v         (or cannot start)
//! Dialing                        Connected --------------------------+
//!   ^  | dial failed                                                 |
//!   |  v                                                             v
//!   +- Backoff (sleep, exponential with jitter) <--------------- Broken
//! ```
//!
//! Discovery threads take a [`Lease`] (the client and its generation) to open a
//! stream, report `unavailable(generation)` when a stream on it fails at the
//! transport, and `healthy(generation)` when one delivers a message, which
//! resets the dial backoff. Streams still open on a replaced connection keep
//! it alive until they end. The message-size limit gRPC's filter would apply
//! is applied by the marshallers in `proto` instead.
//!
//! With a server identity configured (`LINKERD2_PROXY_DESTINATION_SVC_NAME`,
//! or the identity service's `_SVC_NAME`; [`ControlTls`]), the dial also runs
//! the TLS handshake, verifying that identity against the trust anchors, and
//! gRPC gets one end of a socket pair whose other end a relay thread carries
//! over TLS (`tls::relay`). A failed handshake is a failed dial; streams that
//! find no connection because of it count `code="tls"`.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use grpcio::{CallOption, ChannelBuilder, Client, Environment};

use super::backoff::Backoff;
use crate::config::BackoffConfig;
use crate::identity::creds::Anchors;
use crate::identity::CurrentCreds;
use crate::proto::METHOD_HEALTH_CHECK;
use crate::tls::{self, Relays};

/// How long a discovery thread waits for a dial already in progress before it
/// backs off on its own. Short, so an evicted destination's thread still
/// returns promptly.
const LEASE_WAIT: Duration = Duration::from_millis(250);

/// A connected client and the generation of the connection it runs on.
pub struct Lease<C> {
    pub generation: u64,
    pub client: C,
}

/// The connection slot (pure: the `control` thread and the discovery threads
/// drive it under one lock).
#[derive(Debug)]
struct Slot<C> {
    current: Option<(u64, C)>,
    generation: u64,
    broken: bool,
    dialing: bool,
    /// The connection has been asked for: at start when dialing eagerly,
    /// else by the first lease. Until then the `control` thread waits.
    wanted: bool,
    /// A stream on the current connection delivered a message since the last
    /// look: the dial backoff may reset.
    healthy: bool,
    stopping: bool,
    /// Why the last dial failed, for the streams that could not get a lease.
    last_error: Option<DialFailure>,
}

/// Why a dial failed: the message, and whether TLS (rather than the
/// network or gRPC) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DialFailure {
    tls: bool,
    message: String,
}

/// Why a stream got no connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoLease {
    /// How discovery counts it: `tls` when the last dial failed its TLS
    /// handshake, else `unavailable`.
    pub code: &'static str,
    pub why: String,
}

impl std::fmt::Display for NoLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl<C: Clone> Slot<C> {
    fn new() -> Self {
        Slot {
            current: None,
            generation: 0,
            broken: false,
            dialing: false,
            wanted: false,
            healthy: false,
            stopping: false,
            last_error: None,
        }
    }

    /// A connection is installed and no stream has reported it broken.
    fn is_up(&self) -> bool {
        self.current.is_some() && !self.broken
    }

    fn lease(&self) -> Option<Lease<C>> {
        match &self.current {
            Some((generation, client)) if !self.broken => Some(Lease {
                generation: *generation,
                client: client.clone(),
            }),
            _ => None,
        }
    }

    fn needs_dial(&self) -> bool {
        !self.stopping && !self.dialing && (self.current.is_none() || self.broken)
    }

    /// Returns true when this report broke the current connection.
    fn unavailable(&mut self, generation: u64) -> bool {
        match self.current {
            Some((g, _)) if g == generation && !self.broken => {
                self.broken = true;
                true
            }
            _ => false,
        }
    }

    fn healthy(&mut self, generation: u64) {
        if matches!(self.current, Some((g, _)) if g == generation) {
            self.healthy = true;
        }
    }

    /// A dial starts: a broken connection is let go (its open streams keep
    /// the transport alive until they end).
    fn start_dial(&mut self) {
        self.dialing = true;
        if self.broken {
            self.current = None;
            self.broken = false;
        }
    }

    fn dialed(&mut self, result: Result<C, DialFailure>) -> bool {
        self.dialing = false;
        match result {
            Ok(client) => {
                self.generation += 1;
                self.current = Some((self.generation, client));
                self.broken = false;
                self.healthy = false;
                self.last_error = None;
                true
            }
            Err(e) => {
                self.last_error = Some(e);
                false
            }
        }
    }
}

struct Shared<C> {
    slot: Mutex<Slot<C>>,
    changed: Condvar,
}

impl<C> Shared<C> {
    fn lock(&self) -> MutexGuard<'_, Slot<C>> {
        // A panic under this lock leaves plain data behind; keep serving.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The shared handle: cheap to clone; the `control` thread keeps it connected.
pub struct ControlConn<C = Client> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for ControlConn<C> {
    fn clone(&self) -> Self {
        ControlConn {
            shared: self.shared.clone(),
        }
    }
}

impl<C: Clone + Send + 'static> ControlConn<C> {
    /// Starts the `control` thread, which dials with `dial` (at once when
    /// `eager`, else on the first lease) and again, after a backoff,
    /// whenever the connection breaks. A remote control plane is dialed
    /// eagerly, since readiness reports on it; the embedded one in the same
    /// process only once a destination needs it.
    pub fn start(
        backoff: BackoffConfig,
        eager: bool,
        dial: impl FnMut() -> io::Result<C> + Send + 'static,
    ) -> io::Result<(Self, ControlThread<C>)> {
        // An eager connection counts as dialing from the start, so streams
        // that ask before the first dial ends wait for it rather than back off.
        let mut slot = Slot::new();
        slot.wanted = eager;
        slot.dialing = eager;
        let shared = Arc::new(Shared {
            slot: Mutex::new(slot),
            changed: Condvar::new(),
        });
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || run(&thread_shared, dial, Backoff::new(backoff)))?;
        let conn = ControlConn { shared };
        let thread = ControlThread {
            conn: conn.clone(),
            handle: Some(handle),
        };
        Ok((conn, thread))
    }

    /// The current connection, waiting briefly if a dial is in progress.
    /// `Err` says why there is none.
    pub fn lease(&self) -> Result<Lease<C>, NoLease> {
        let deadline = Instant::now() + LEASE_WAIT;
        let mut slot = self.shared.lock();
        if !slot.wanted {
            slot.wanted = true;
            slot.dialing = true;
            self.shared.changed.notify_all();
        }
        loop {
            if let Some(lease) = slot.lease() {
                return Ok(lease);
            }
            let now = Instant::now();
            if slot.stopping || !slot.dialing || now >= deadline {
                return Err(match &slot.last_error {
                    Some(e) => NoLease {
                        code: if e.tls { "tls" } else { "unavailable" },
                        why: format!("no connection to the control plane: {}", e.message),
                    },
                    None => NoLease {
                        code: "unavailable",
                        why: "no connection to the control plane yet".to_owned(),
                    },
                });
            }
            slot = self
                .shared
                .changed
                .wait_timeout(slot, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A stream on `generation` failed at the transport: redial (once per
    /// generation, however many streams report it).
    pub fn unavailable(&self, generation: u64) {
        if self.shared.lock().unavailable(generation) {
            log::warn!("control plane connection lost; reconnecting");
            self.shared.changed.notify_all();
        }
    }

    /// A stream on `generation` delivered a message.
    pub fn healthy(&self, generation: u64) {
        self.shared.lock().healthy(generation);
    }

    /// True while a connection is up and no stream has seen it fail.
    pub fn connected(&self) -> bool {
        self.shared.lock().is_up()
    }

    /// Makes the `control` thread return (at once, or after the dial in
    /// progress: its connects and probe are bounded by their timeout).
    pub fn stop(&self) {
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all();
    }
}

/// Owns the `control` thread: dropping it stops the thread and joins it.
pub struct ControlThread<C: Clone + Send + 'static = Client> {
    conn: ControlConn<C>,
    handle: Option<JoinHandle<()>>,
}

impl<C: Clone + Send + 'static> Drop for ControlThread<C> {
    fn drop(&mut self) {
        self.conn.stop();
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                log::error!("the control thread panicked");
            }
        }
    }
}

/// The `control` thread's loop. Once the connection is wanted (see
/// `start`), the first dial goes at once; later ones wait out a backoff.
fn run<C: Clone>(
    shared: &Shared<C>,
    mut dial: impl FnMut() -> io::Result<C>,
    mut backoff: Backoff,
) {
    {
        let mut slot = shared.lock();
        while !slot.wanted {
            if slot.stopping {
                return;
            }
            slot = shared.changed.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }
    let mut not_before: Option<Instant>;
    loop {
        let result = dial().map_err(|e| DialFailure {
            tls: tls::is_tls_error(&e),
            message: e.to_string(),
        });
        {
            let mut slot = shared.lock();
            match &result {
                Err(DialFailure { message: e, .. }) => {
                    let delay = backoff.next_delay();
                    log::warn!("cannot connect to the control plane: {e}; retrying in {delay:?}");
                    not_before = Some(Instant::now() + delay);
                }
                Ok(_) => {
                    log::info!("connected to the control plane");
                    not_before = None;
                }
            }
            slot.dialed(result);
        }
        shared.changed.notify_all();

        let mut slot = shared.lock();
        loop {
            if slot.stopping {
                return;
            }
            if std::mem::take(&mut slot.healthy) {
                backoff.reset();
            }
            if let Some(t) = not_before {
                let now = Instant::now();
                if now < t {
                    slot = shared
                        .changed
                        .wait_timeout(slot, t - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    continue;
                }
            }
            if slot.needs_dial() {
                // A connection that broke waits a backoff before the redial;
                // after a failed dial, that wait is already behind us.
                if slot.broken && not_before.is_none() {
                    not_before = Some(Instant::now() + backoff.next_delay());
                    continue;
                }
                break;
            }
            slot = shared.changed.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
        slot.start_dial();
    }
}

/// TLS to a control-plane service: the identity its server must prove (also
/// the SNI), the anchors that verify it, and the workload's credentials, whose
/// newest certificate each new connection offers (none before the first).
#[derive(Clone, Debug)]
pub struct ControlTls {
    pub name: String,
    pub anchors: Anchors,
    pub creds: CurrentCreds,
    /// Where the relay threads are kept (joined on shutdown).
    pub relays: Relays,
    /// The relay threads' name.
    pub thread: &'static str,
}

/// Dials `addr` (`host:port`; every resolved address in turn), with TLS when
/// `tls` says so, runs gRPC over the connection as a direct channel, and
/// checks that gRPC answers on it (see [`probe`]). `timeout` bounds the
/// connect, the handshake and the probe.
pub fn dial(
    env: &Arc<Environment>,
    addr: &str,
    timeout: Duration,
    tls: Option<&ControlTls>,
) -> io::Result<Client> {
    let stream = connect(addr, timeout)?;
    stream.set_nodelay(true)?;
    if let Err(e) = watch_liveness(&stream) {
        // Still usable; only a silently vanished peer goes unnoticed.
        log::warn!("control-plane connection without TCP keepalive: {e}");
    }
    let builder = ChannelBuilder::new(env.clone())
        // Only the transport and the HTTP client filter: no deadline or
        // message-size filters (spoke sets no deadlines on its streams, and
        // `proto`'s marshallers bound message sizes).
        .raw_cfg_int(c"grpc.minimal_stack".into(), 1);
    let channel = match tls {
        None => over_socket(builder, addr, stream),
        Some(t) => {
            let creds = t.creds.get();
            let config = tls::config::control_client(&t.anchors, creds.as_deref())
                .map_err(io::Error::other)?;
            let grpc = tls::relay::client(stream, config, &t.name, timeout, t.thread, &t.relays)?;
            over_socket(builder, addr, grpc)
        }
    };
    let client = Client::new(channel);
    probe(&client, timeout)?;
    Ok(client)
}

/// A TCP connection proves little (a load balancer, or the wrong port), and
/// readiness follows this connection: ask one unary call and accept any
/// answer that comes from a gRPC server, which also means the HTTP/2
/// handshake went through.
fn probe(client: &Client, timeout: Duration) -> io::Result<()> {
    let request = protobuf::well_known_types::empty::Empty::new();
    let mut call = client
        .unary_call_async(&METHOD_HEALTH_CHECK, &request, CallOption::default())
        .map_err(|e| io::Error::other(format!("cannot start the gRPC probe: {e}")))?;
    // Dropping the call on a timeout cancels it.
    match super::wait::block_on_timeout(&mut call, Some(timeout)) {
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no gRPC answer within {timeout:?}"),
        )),
        Some(result) => probe_verdict(result),
    }
}

/// Whether the probe's outcome shows a gRPC server at the other end.
fn probe_verdict<T>(result: grpcio::Result<T>) -> io::Result<()> {
    use grpcio::RpcStatusCode as C;
    match result {
        Ok(_) => Ok(()),
        // A status the server chose: it speaks gRPC (UNIMPLEMENTED when it
        // has no health service).
        Err(grpcio::Error::RpcFailure(s))
            if !matches!(
                s.code(),
                C::UNAVAILABLE | C::INTERNAL | C::UNKNOWN | C::CANCELLED
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(io::Error::other(format!(
            "no gRPC server answers there: {e}"
        ))),
    }
}

/// TCP keepalive: the first probe after this much silence on the connection,
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// then one every `KEEPALIVE_INTERVAL`, at most `KEEPALIVE_PROBES` unanswered.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_PROBES: u32 = 3;
/// Probes or data unacknowledged for this long fail the connection (on Linux
/// this also decides when keepalive gives up).
const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// A watch can be silent for hours, so a control plane whose host vanished
/// (no FIN, no RST) would leave every stream waiting on a dead connection.
/// Kernel keepalive probes and the user timeout find that out within about
/// 35 s; the transport then fails, the streams end `UNAVAILABLE` and the
/// connection is re-dialed. TCP probes rather than HTTP/2 pings: servers may
/// answer frequent pings with `GOAWAY` (gRPC-Go allows one every 5 minutes by
/// default), while TCP probes never reach the application.
fn watch_liveness(stream: &TcpStream) -> io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let socket = socket2::SockRef::from(stream);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(USER_TIMEOUT))
}

fn connect(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for sa in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(io::Error::new(e.kind(), format!("{sa}: {e}"))),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolves to no address"),
        )
    }))
}

#[allow(unsafe_code)]
fn over_socket(
    builder: ChannelBuilder,
    target: &str,
    stream: impl std::os::fd::IntoRawFd,
) -> grpcio::Channel {
    // SAFETY: `connect_from_fd` requires a connected stream socket that no
    // other code touches afterwards. `stream` is a connected TCP socket or
    // gRPC's end of a Unix socket pair (the relay keeps the other end), and
    // `into_raw_fd` gives up Rust's ownership of it: nothing else in spoke has
    // a copy of the descriptor, and gRPC closes it with the connection.
    unsafe { builder.connect_from_fd(target, stream.into_raw_fd()) }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Polls `cond` for up to ten seconds.
    #[track_caller]
    fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn backoff() -> BackoffConfig {
        BackoffConfig {
            min: Duration::from_millis(5),
            max: Duration::from_millis(20),
            jitter: 0.0,
        }
    }

    #[test]
    fn slot_leases_only_a_live_connection() {
        let mut s = Slot::<u32>::new();
        assert!(s.lease().is_none());
        assert!(s.needs_dial());
        s.start_dial();
        assert!(!s.needs_dial(), "one dial at a time");
        assert!(s.dialed(Ok(7)));
        let l = s.lease().unwrap();
        assert_eq!((l.generation, l.client), (1, 7));
        assert!(!s.needs_dial());
        assert!(s.unavailable(1));
        assert!(!s.unavailable(1), "reported once per generation");
        assert!(s.lease().is_none());
        assert!(s.needs_dial());
        s.start_dial();
        let refused = DialFailure {
            tls: false,
            message: "refused".into(),
        };
        assert!(!s.dialed(Err(refused.clone())));
        assert_eq!(s.last_error, Some(refused));
        s.start_dial();
        assert!(s.dialed(Ok(8)));
        assert!(!s.unavailable(1), "a stale generation breaks nothing");
        assert_eq!(s.lease().unwrap().generation, 2);
        s.healthy(1);
        assert!(!s.healthy, "only the current generation counts");
        s.healthy(2);
        assert!(s.healthy);
    }

    #[test]
    fn redials_after_failures_and_after_a_break() {
        let attempts = Arc::new(AtomicU32::new(0));
        let a = attempts.clone();
        let (conn, thread) = ControlConn::start(backoff(), true, move || {
            // Two refusals, then connections numbered by attempt.
            match a.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused")),
                n => Ok(n),
            }
        })
        .unwrap();
        eventually("a connection", || conn.connected());
        let first = conn.lease().unwrap();
        assert_eq!((first.generation, first.client), (1, 2));
        conn.unavailable(first.generation);
        eventually("the redial", || {
            conn.lease().map(|l| l.generation).ok() == Some(2)
        });
        assert_eq!(conn.lease().unwrap().client, 3);
        // A late report about the old connection changes nothing.
        conn.unavailable(first.generation);
        assert!(conn.connected());
        drop(thread);
        assert_eq!(attempts.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn lease_says_why_there_is_no_connection_and_stop_is_prompt() {
        let (conn, thread) = ControlConn::<u32>::start(
            BackoffConfig {
                min: Duration::from_secs(60),
                max: Duration::from_secs(60),
                jitter: 0.0,
            },
            true,
            || Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused")),
        )
        .unwrap();
        eventually("the dial error", || {
            conn.lease()
                .err()
                .is_some_and(|e| e.why.contains("refused") && e.code == "unavailable")
        });
        assert!(!conn.connected());
        // The thread sleeps out a 60 s backoff; dropping its owner wakes it
        // and joins it.
        let t = Instant::now();
        drop(thread);
        assert!(t.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_failed_tls_handshake_is_told_to_the_streams() {
        let (conn, thread) = ControlConn::<u32>::start(backoff(), true, || {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                tls::relay::HandshakeError("TLS handshake with dst failed".into()),
            ))
        })
        .unwrap();
        let e = eventually_some(|| conn.lease().err().filter(|e| e.code == "tls"));
        assert!(e.why.contains("TLS handshake with dst failed"), "{e}");
        drop(thread);
    }

    /// Polls `f` for up to ten seconds.
    fn eventually_some<T>(mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_lazy_connection_is_dialed_by_the_first_lease() {
        let attempts = Arc::new(AtomicU32::new(0));
        let a = attempts.clone();
        let (conn, thread) = ControlConn::start(backoff(), false, move || {
            Ok(a.fetch_add(1, Ordering::SeqCst))
        })
        .unwrap();
        assert!(!conn.connected(), "asking for readiness does not dial");
        assert!(!conn.shared.lock().wanted);
        assert_eq!(attempts.load(Ordering::SeqCst), 0, "no dial before a lease");
        // The lease waits for the dial it triggers.
        assert_eq!(conn.lease().unwrap().client, 0);
        drop(thread);
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn only_an_answer_from_a_grpc_server_passes_the_probe() {
        use grpcio::{Error, RpcStatus, RpcStatusCode as C};
        let status = |code| Err::<(), _>(Error::RpcFailure(RpcStatus::new(code)));
        assert!(probe_verdict(Ok(())).is_ok());
        assert!(probe_verdict(status(C::UNIMPLEMENTED)).is_ok());
        assert!(probe_verdict(status(C::NOT_FOUND)).is_ok());
        // What a transport that fails (or an HTTP/1 server) turns into.
        assert!(probe_verdict(status(C::UNAVAILABLE)).is_err());
        assert!(probe_verdict(status(C::INTERNAL)).is_err());
        assert!(probe_verdict(Err::<(), _>(Error::RemoteStopped)).is_err());
    }

    #[test]
    fn control_sockets_probe_a_silent_peer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        watch_liveness(&stream).unwrap();
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(USER_TIMEOUT));
    }

    #[test]
    fn connect_reports_every_address_tried() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(connect(&addr.to_string(), Duration::from_secs(1)).is_ok());
        // A name: every address it resolves to is tried (`localhost` may
        // resolve to ::1 before 127.0.0.1).
        let by_name = format!("localhost:{}", addr.port());
        assert!(connect(&by_name, Duration::from_secs(1)).is_ok());
        drop(l);
        let e = connect(&addr.to_string(), Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        assert!(connect("no-port", Duration::from_secs(1)).is_err());
    }
}
