//! HTTP/2 attacks and deadlines through the real proxy (test threads; the
//! proxy, the controller and a grpcio echo backend run in this process).
//! Each case is a Python script in `tests/h2adv/` that builds its frames by
//! hand (Debian `python3-h2`: hyperframe, hpack; `scripts/setup.sh` installs
//! it) and exits 0 only when the proxy gave the answer RFC 9113 asks for.
//! After each, another client's gRPC call through the same proxy must still
//! work (no collateral damage), and the process's resident memory must not
//! have grown past a generous bound. Last, graceful shutdown with a gRPC
//! call in flight.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use grpcio::CallOption;
use spoke::app::App;
use spoke::config::MapEnv;

use support::echo::{self, client_via, msg, EchoServer};
use support::*;

const BOOKS: &str = "books.default.svc.cluster.local:7000";
/// The Debian interpreter, which has the `python3-h2` modules.
const PYTHON: &str = "/usr/bin/python3";
/// Growth of this process's RSS a case may cause (the attacks would cost
/// far more unbounded: the floods send up to 64 MiB).
const RSS_BOUND_KIB: u64 = 48 * 1024;

struct Mesh {
    _ctl: MockController,
    _server: EchoServer,
    app: App,
}

fn mesh(env: impl FnOnce(MapEnv) -> MapEnv) -> Mesh {
    let ctl = MockController::start();
    let server = EchoServer::start("a");
    ctl.endpoints(BOOKS, &[server.addr]);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy(&env(config(ctl.addr())));
    let m = Mesh {
        _ctl: ctl,
        _server: server,
        app,
    };
    m.still_serves("before");
    m
}

impl Mesh {
    /// A call on a connection of its own goes through.
    fn still_serves(&self, when: &str) {
        let client = client_via(self.app.outbound_addr(), BOOKS);
        let opt = CallOption::default().timeout(Duration::from_secs(10));
        let reply = client
            .unary_call(&echo::UNARY, &msg(when), opt)
            .unwrap_or_else(|e| panic!("a call {when} the attack failed: {e}"));
        assert_eq!(reply.path, format!("a:{when}"));
    }

    /// Runs `tests/h2adv/<case>.py` against the outbound listener; returns
    /// its report line.
    fn case(&self, case: &str, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/h2adv")
            .join(format!("{case}.py"));
        let addr = self.app.outbound_addr().to_string();
        let out = Command::new("timeout")
            .arg("60")
            .arg(PYTHON)
            .arg(&script)
            .arg(&addr)
            .arg(BOOKS)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{PYTHON} {case}.py: {e} (run scripts/setup.sh)"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{case} {args:?}: {}\n{stdout}{stderr}\n(needs python3-h2: scripts/setup.sh)",
            out.status
        );
        stdout.trim().to_string()
    }
}

/// This process's resident set, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// The cases that measure RSS run one at a time (it is the whole
/// process's).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs a case with default settings and checks what comes after it;
/// returns its report and the proxy's `spoke_http2_goaway_total` by reason.
fn attack(case: &str, args: &[&str]) -> (String, Goaways) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let m = mesh(|e| e);
    let before = rss_kib();
    let report = m.case(case, args);
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < RSS_BOUND_KIB,
        "{case}: RSS grew by {grown} KiB ({report})"
    );
    m.still_serves("after");
    eprintln!("{case} {args:?}: {report}; RSS +{grown} KiB");
    let goaways = Goaways(metrics(&m.app));
    (report, goaways)
}

/// The proxy's metrics, to read `spoke_http2_goaway_total` from.
struct Goaways(String);

impl Goaways {
    fn count(&self, reason: &str) -> f64 {
        spoke::metrics::parse_text(&self.0)
            .iter()
            .filter(|s| s.name == "spoke_http2_goaway_total" && s.label("reason") == Some(reason))
            .map(|s| s.value)
            .sum()
    }
}

#[test]
fn rapid_reset_gets_goaway_enhance_your_calm() {
    let (_, goaways) = attack("rapid_reset", &[]);
    assert_eq!(goaways.count("enhance_your_calm"), 1.0, "{}", goaways.0);
}

/// The streams go to a client-streaming method whose request never ends,
/// so the backend holds each open until the client resets it.
#[test]
fn streams_reset_after_they_were_accepted_trip_the_premature_reset_guard() {
    let (report, goaways) = attack("premature_reset", &[]);
    assert!(report.contains("ENHANCE_YOUR_CALM"), "{report}");
    assert_eq!(goaways.count("premature_reset"), 1.0, "{}", goaways.0);
    assert_eq!(goaways.count("enhance_your_calm"), 0.0, "{}", goaways.0);
}

#[test]
fn a_continuation_flood_is_a_bounded_connection_error() {
    let (report, goaways) = attack("continuation_flood", &[]);
    let counted = goaways.count("enhance_your_calm") + goaways.count("protocol_error");
    assert!(counted >= 1.0, "{report}: {}", goaways.0);
}

#[test]
fn a_settings_flood_is_held_back_by_backpressure() {
    attack("flood", &["settings"]);
}

#[test]
fn a_ping_flood_is_held_back_by_backpressure() {
    attack("flood", &["ping"]);
}

#[test]
fn an_oversized_header_list_is_a_stream_error_not_a_connection_error() {
    let (report, _) = attack("oversized_headers", &[]);
    assert!(
        report.contains("431") || report.contains("RST_STREAM"),
        "{report}"
    );
}

#[test]
fn a_window_past_2_31_minus_1_is_a_flow_control_error() {
    let (_, goaways) = attack("window_overflow", &[]);
    assert_eq!(goaways.count("flow_control_error"), 1.0, "{}", goaways.0);
}

#[test]
fn a_client_that_never_sends_settings_is_cut_off_by_the_handshake_timeout() {
    let m = mesh(|e| e.set(spoke::config::H2_HANDSHAKE_TIMEOUT, "300ms"));
    let started = Instant::now();
    let report = m.case("deadlines", &["silent"]);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before the timeout: {report}"
    );
    m.still_serves("after");
}

#[test]
fn a_connection_without_streams_gets_goaway_after_the_idle_timeout() {
    let m = mesh(|e| e.set(spoke::config::IDLE_TIMEOUT, "300ms"));
    m.case("deadlines", &["idle"]);
    m.still_serves("after");
}

#[test]
fn keepalive_pings_close_a_client_that_stops_answering_and_keep_one_that_answers() {
    let vars = &spoke::config::OUTBOUND_H2;
    let m = mesh(|e| {
        e.set(vars.keep_alive_interval, "100ms")
            .set(vars.keep_alive_timeout, "300ms")
    });
    m.case("deadlines", &["answered"]);
    m.case("deadlines", &["unanswered"]);
    m.still_serves("after");
}

#[test]
fn shutdown_lets_a_call_in_flight_finish_and_refuses_new_ones_with_goaway() {
    let server = EchoServer::start("a");
    let (_ctl, app, client) = echo::proxied(&server, BOOKS);
    let opt = || CallOption::default().timeout(Duration::from_secs(10));
    client
        .unary_call(&echo::UNARY, &msg("warm"), opt())
        .expect("a call before shutdown");

    let long = {
        let client = client.clone();
        std::thread::spawn(move || client.unary_call(&echo::UNARY, &msg("slow:1500"), opt()))
    };
    eventually("the long call reaches the backend", || server.calls() == 2);
    let shutdown = std::thread::spawn(move || app.shutdown());
    // The connection got GOAWAY and the listener is closed: a new call on
    // the same channel fails (calls that were on the wire before the GOAWAY
    // may still be served).
    eventually("a new call is refused", || {
        let short = CallOption::default().timeout(Duration::from_millis(500));
        match client.unary_call(&echo::UNARY, &msg("new"), short) {
            Ok(_) => false,
            Err(grpcio::Error::RpcFailure(s)) => s.code() == grpcio::RpcStatusCode::UNAVAILABLE,
            Err(e) => panic!("unexpected failure of a new call: {e}"),
        }
    });
    let reply = long
        .join()
        .expect("long call thread")
        .expect("the call in flight finished");
    assert_eq!(reply.path, "a:slow:1500");
    assert_eq!(shutdown.join().expect("shutdown thread"), Ok(()));
}
