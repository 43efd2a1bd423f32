//! Discovery through the real proxy and a real grpcio controller: restarts
//! and backoff, "no profile", eviction, hostile profiles, DNS fallback.

mod support;

use std::time::{Duration, Instant};

use grpcio::RpcStatusCode;
use protobuf::Message;
use spoke::config;
use spoke::controller::server::Kind;
use support::*;

const BOOKS: &str = "books.default.svc.cluster.local:7000";
const AUTHORS: &str = "authors.default.svc.cluster.local:7000";

#[test]
fn the_first_request_waits_for_discovery_and_succeeds() {
    let ctl = MockController::start();
    let be = backend("books");
    let app = proxy(&config(ctl.addr()));
    let out = app.outbound_addr();
    let first =
        std::thread::spawn(move || spoke::devtools::get(out, BOOKS, "/first").map(|r| r.status));
    eventually("the proxy asks for the profile", || {
        ctl.open_streams(Kind::Profile, BOOKS) == 1 && ctl.open_streams(Kind::Endpoints, BOOKS) == 1
    });
    ctl.profile(BOOKS, &profile(vec![route("first", None, "/first")]));
    ctl.endpoints(BOOKS, &[be.addr()]);
    assert_eq!(first.join().unwrap().unwrap(), 200);
    assert_eq!(route_requests(&app, "first"), 1.0);
    let reqs = ctl.requests();
    assert!(reqs
        .iter()
        .all(|(_, r)| r.path == BOOKS && r.scheme.is_empty()));
}

#[test]
fn no_discovery_answer_fails_fast_with_503() {
    let ctl = MockController::start();
    let app = proxy(&config(ctl.addr()).set(config::FAILFAST_TIMEOUT, "300ms"));
    let started = Instant::now();
    let r = get(&app, BOOKS, "/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_control_plane_address_without_grpc_is_not_ready() {
    // An HTTP/1 server where the control plane should be: TCP connects, gRPC
    // never answers.
    let not_grpc = backend("not-grpc");
    let app = proxy(&config(not_grpc.addr()).set(config::FAILFAST_TIMEOUT, "300ms"));
    let r = get(&app, BOOKS, "/");
    assert_eq!(r.status, 503, "{}", r.text());
    eventually("discovery finds no connection to use", || {
        metric(
            &app,
            "spoke_discovery_errors_total",
            &[("kind", "endpoints"), ("code", "unavailable")],
        ) >= 1.0
    });
    let ready = spoke::devtools::get(app.admin_addr(), "localhost", "/ready").unwrap();
    assert_eq!(ready.status, 503);
}

#[test]
fn controller_restart_keeps_stale_routes_and_the_stream_comes_back() {
    let mut ctl = MockController::start();
    let be = backend("books");
    ctl.endpoints(BOOKS, &[be.addr()]);
    ctl.profile(BOOKS, &profile(vec![route("before", None, "/.*")]));
    let app = proxy(&config(ctl.addr()));
    assert_eq!(get(&app, BOOKS, "/").status, 200);

    ctl.kill();
    // Requests keep working on the last routes and endpoints.
    for _ in 0..5 {
        assert_eq!(get(&app, BOOKS, "/").status, 200);
    }
    assert_eq!(route_requests(&app, "before"), 6.0);
    eventually("the proxy notices and backs off", || {
        metric(&app, "spoke_discovery_errors_total", &[("kind", "profile")]) >= 1.0
    });

    ctl.restart();
    eventually("both streams come back", || {
        ctl.open_streams(Kind::Profile, BOOKS) == 1 && ctl.open_streams(Kind::Endpoints, BOOKS) == 1
    });
    assert!(
        metric(
            &app,
            "spoke_discovery_reconnects_total",
            &[("kind", "profile")]
        ) >= 1.0
    );
    ctl.profile(BOOKS, &profile(vec![route("after", None, "/.*")]));
    eventually("the new profile applies", || {
        get(&app, BOOKS, "/");
        route_requests(&app, "after") >= 1.0
    });
}

#[test]
fn invalid_argument_means_the_default_route() {
    let ctl = MockController::start();
    let be = backend("books");
    ctl.endpoints(BOOKS, &[be.addr()]);
    ctl.fail(Kind::Profile, BOOKS, RpcStatusCode::INVALID_ARGUMENT);
    let app = proxy(&config(ctl.addr()));
    let r = get(&app, BOOKS, "/x");
    assert_eq!(r.status, 200);
    let text = metrics(&app);
    assert!(
        has_series(
            &text,
            "route_request_total",
            &[("direction", "outbound"), ("dst", BOOKS)]
        ),
        "{text}"
    );
    // The thread gave up on the profile: no more lookups are made.
    let lookups = || {
        ctl.requests()
            .iter()
            .filter(|(k, _)| *k == Kind::Profile)
            .count()
    };
    let n = lookups();
    for _ in 0..3 {
        assert_eq!(get(&app, BOOKS, "/x").status, 200);
    }
    assert_eq!(lookups(), n);
}

#[test]
fn an_idle_destination_is_evicted_and_its_streams_cancelled() {
    let ctl = MockController::start();
    let be = backend("books");
    ctl.endpoints(BOOKS, &[be.addr()]);
    ctl.profile(BOOKS, &profile(vec![]));
    let app = proxy(&config(ctl.addr()).set(config::DISCOVERY_IDLE_TIMEOUT, "300ms"));
    assert_eq!(get(&app, BOOKS, "/").status, 200);
    assert_eq!(ctl.open_streams(Kind::Profile, BOOKS), 1);
    assert_eq!(ctl.open_streams(Kind::Endpoints, BOOKS), 1);
    let idle_since = Instant::now();
    eventually("both streams are cancelled at the controller", || {
        ctl.open_streams(Kind::Profile, BOOKS) == 0 && ctl.open_streams(Kind::Endpoints, BOOKS) == 0
    });
    // Idle timeout plus at most a second for the threads to notice.
    assert!(idle_since.elapsed() < Duration::from_millis(300 + 1_000 + 500));
    // The next request starts discovery again.
    assert_eq!(get(&app, BOOKS, "/").status, 200);
    assert_eq!(ctl.open_streams(Kind::Profile, BOOKS), 1);
}

#[test]
fn hostile_profiles_are_contained() {
    let (ctl, _books, _authors) = books_and_authors();

    // A bad regex drops that route only; a garbage duration drops only the
    // timeout.
    let mut timed = route("timed", None, "/timed");
    let mut bad = protobuf::well_known_types::duration::Duration::new();
    bad.seconds = -5;
    bad.nanos = -7;
    timed.timeout = Some(bad).into();
    ctl.profile(
        BOOKS,
        &profile(vec![
            route("broken", None, "/(unclosed"),
            timed,
            route("ok", None, "/ok"),
        ]),
    );
    ctl.profile(AUTHORS, &profile(vec![route("a1", None, "/.*")]));
    let app = proxy(&config(ctl.addr()));
    assert_eq!(get(&app, BOOKS, "/ok").status, 200);
    assert_eq!(get(&app, BOOKS, "/timed").status, 200);
    assert_eq!(get(&app, BOOKS, "/(unclosed").status, 200);
    assert_eq!(route_requests(&app, "ok"), 1.0);
    assert_eq!(route_requests(&app, "timed"), 1.0);
    assert_eq!(route_requests(&app, "broken"), 0.0);
    assert_eq!(get(&app, AUTHORS, "/").status, 200);

    // 10,000 nested `not`s, as bytes (no encoder would recurse that deep).
    ctl.profile_raw(BOOKS, deeply_nested_profile(10_000));
    eventually("the proxy rejects the hostile message", || {
        metric(
            &app,
            "spoke_discovery_errors_total",
            &[("kind", "profile"), ("code", "decode")],
        ) >= 1.0
    });
    // books keeps its last good profile, and authors keeps updating.
    assert_eq!(get(&app, BOOKS, "/ok").status, 200);
    assert_eq!(route_requests(&app, "ok"), 2.0);
    ctl.profile(AUTHORS, &profile(vec![route("a2", None, "/.*")]));
    eventually("authors still gets updates", || {
        get(&app, AUTHORS, "/");
        route_requests(&app, "a2") >= 1.0
    });
}

#[test]
fn oversized_control_plane_messages_are_refused() {
    let (ctl, _books, _authors) = books_and_authors();
    ctl.profile(BOOKS, &profile(vec![route("ok", None, "/ok")]));
    let app = proxy(&config(ctl.addr()));
    assert_eq!(get(&app, BOOKS, "/ok").status, 200);

    // Well-formed, but over the 4 MiB limit gRPC clients apply by default.
    let mut huge = profile(vec![route("huge", None, "/huge")]);
    huge.fully_qualified_name = "x".repeat(spoke::proto::MAX_MESSAGE_BYTES);
    ctl.profile(BOOKS, &huge);
    eventually("the proxy refuses the oversized message", || {
        metric(
            &app,
            "spoke_discovery_errors_total",
            &[("kind", "profile"), ("code", "decode")],
        ) >= 1.0
    });
    // The last good profile stays in force, and the connection still
    // carries the other destinations.
    get(&app, BOOKS, "/huge");
    assert_eq!(get(&app, BOOKS, "/ok").status, 200);
    assert_eq!(route_requests(&app, "ok"), 2.0);
    assert_eq!(route_requests(&app, "huge"), 0.0);
    ctl.profile(AUTHORS, &profile(vec![route("a1", None, "/.*")]));
    eventually("authors gets its profile", || {
        get(&app, AUTHORS, "/");
        route_requests(&app, "a1") >= 1.0
    });
}

/// A controller that knows books and authors, each with its own backend.
fn books_and_authors() -> (
    MockController,
    spoke::devtools::Backend,
    spoke::devtools::Backend,
) {
    let ctl = MockController::start();
    let books = backend("books");
    let authors = backend("authors");
    ctl.endpoints(BOOKS, &[books.addr()]);
    ctl.endpoints(AUTHORS, &[authors.addr()]);
    (ctl, books, authors)
}

/// `route_request_total` of the route named `route`.
fn route_requests(app: &spoke::app::App, route: &str) -> f64 {
    metric(app, "route_request_total", &[("rt_route", route)])
}

/// A `DestinationProfile` with one route whose condition is `depth` nested
/// `not` matches, encoded from the inside out.
fn deeply_nested_profile(depth: usize) -> Vec<u8> {
    let mut inner = pb::RequestMatch::new();
    let mut pm = pb::PathMatch::new();
    pm.regex = "/deep".into();
    inner.set_path(pm);
    let mut bytes = inner.write_to_bytes().unwrap();
    for _ in 0..depth {
        // RequestMatch.not = field 3, length-delimited.
        let mut outer = vec![3 << 3 | 2];
        push_varint(&mut outer, bytes.len() as u64);
        outer.extend_from_slice(&bytes);
        bytes = outer;
    }
    // Route.condition = field 1; DestinationProfile.routes = field 1.
    let mut route = vec![1 << 3 | 2];
    push_varint(&mut route, bytes.len() as u64);
    route.extend_from_slice(&bytes);
    let mut profile = vec![1 << 3 | 2];
    push_varint(&mut profile, route.len() as u64);
    profile.extend_from_slice(&route);
    profile
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[test]
fn names_outside_the_get_suffixes_resolve_by_dns() {
    let ctl = MockController::start();
    let be = backend("local");
    let app = proxy(&config(ctl.addr()));
    let host = format!("localhost:{}", be.addr().port());
    let r = get(&app, &host, "/");
    // localhost may resolve to ::1 first; the backend listens on 127.0.0.1,
    // so round robin can land on a refused address: accept either outcome
    // from that, but never a discovery failure.
    assert!(
        r.status == 200 || r.status == 502,
        "{} {}",
        r.status,
        r.text()
    );
    assert!(
        ctl.requests().is_empty(),
        "no lookups for names outside the suffixes"
    );
    let ip = format!("127.0.0.1:{}", be.addr().port());
    assert_eq!(get(&app, &ip, "/").status, 200);
}

#[test]
fn unknown_names_fall_back_to_dns() {
    let ctl = MockController::start();
    let be = backend("local");
    // A name the controller does not know, which DNS can still resolve:
    // widen the Get suffixes to everything and use localhost. (An IP literal
    // is no name: it goes to that address without discovery.) localhost may
    // resolve to ::1 as well, where nothing listens: the refused connect
    // moves the request to 127.0.0.1.
    let env = config(ctl.addr())
        .set(config::GET_SUFFIXES, ".")
        .set(config::PROFILE_SUFFIXES, "");
    let dst = format!("localhost:{}", be.addr().port());
    ctl.no_endpoints(&dst, false);
    let app = proxy(&env);
    assert_eq!(get(&app, &dst, "/").status, 200);
    assert!(ctl
        .requests()
        .iter()
        .any(|(k, r)| *k == Kind::Endpoints && r.path == dst));
}

#[test]
fn ready_follows_the_control_plane() {
    let mut ctl = MockController::start();
    ctl.kill();
    let app = proxy(&config(ctl.addr()));
    let ready = || {
        spoke::devtools::get(app.admin_addr(), "localhost", "/ready")
            .unwrap()
            .status
    };
    let live = spoke::devtools::get(app.admin_addr(), "localhost", "/live").unwrap();
    assert_eq!((live.status, live.text().as_str()), (200, "live\n"));
    assert_eq!(ready(), 503, "no control plane yet");
    ctl.restart();
    eventually("ready once the controller answers", || ready() == 200);
}
