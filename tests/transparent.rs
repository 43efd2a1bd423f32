//! Transparent interception through the real proxy, with the original
//! destination of each accepted connection injected (no iptables, no root):
//! a connection redirected to one of spoke's own listeners is refused and
//! counted (a loop); one redirected anywhere else is served as before.

mod support;

use support::*;

const BOOKS: &str = "books.default.svc.cluster.local:7000";

/// What a raw GET on a fresh connection gets back before the proxy closes it
/// (or the wait runs out).
fn raw_get(app: &spoke::app::App) -> Vec<u8> {
    raw_get_at(app.outbound_addr(), BOOKS)
}

fn loops(app: &spoke::app::App) -> f64 {
    metric(
        app,
        "spoke_connections_refused_total",
        &[("direction", "outbound"), ("reason", "loop")],
    )
}

#[test]
fn a_connection_redirected_to_spokes_own_listener_is_refused_and_counted() {
    let ctl = MockController::start();
    let be = backend("books");
    ctl.endpoints(BOOKS, &[be.addr()]);
    ctl.profile(BOOKS, &profile(vec![]));
    let orig = Injected::default();
    let app = proxy_with_orig_dst(&config(ctl.addr()), Box::new(orig.clone()));

    // Not redirected (the application connected to the listener): served.
    assert!(raw_get(&app).starts_with(b"HTTP/1.1 200"));
    // Redirected to another address: served as before (routed by Host).
    orig.set(Some("127.0.0.3:9".parse().expect("addr")));
    assert!(raw_get(&app).starts_with(b"HTTP/1.1 200"));
    assert_eq!(loops(&app), 0.0);

    // Redirected to spoke's own outbound listener, then to its admin
    // listener: closed without an answer, and counted.
    for own in [app.outbound_addr(), app.admin_addr()] {
        orig.set(Some(own));
        assert_eq!(raw_get(&app), b"", "answered a loop to {own}");
    }
    orig.set(None);
    assert_eq!(loops(&app), 2.0);
    assert_eq!(be.hits(), 2, "a loop never reaches the backend");
    // Everything else is still served.
    assert_eq!(get(&app, BOOKS, "/").status, 200);
}

#[test]
fn an_ip_authority_goes_to_that_address_or_where_the_connection_was_redirected() {
    let ctl = MockController::start();
    let be = backend("direct");
    let orig = Injected::default();
    let app = proxy_with_orig_dst(&config(ctl.addr()), Box::new(orig.clone()));

    // Not redirected: the IP and port the request names, with no discovery.
    let host = be.addr().to_string();
    let r = get(&app, &host, "/ip");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(be.hits(), 1);
    // Redirected: the original destination, whatever the IP in the request.
    orig.set(Some(be.addr()));
    let r = get(&app, "127.0.0.2:9", "/redirected");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(be.hits(), 2);
    assert!(
        ctl.requests().is_empty(),
        "no lookups for IP targets outside the profile networks: {:?}",
        ctl.requests()
    );
    assert_eq!(
        metric(
            &app,
            "request_total",
            &[("direction", "outbound"), ("authority", &host)]
        ),
        2.0,
        "both counted under the address they went to"
    );
}

#[test]
fn an_ip_in_the_profile_networks_gets_its_profile() {
    let ctl = MockController::start();
    let be = backend("profiled");
    let target = be.addr().to_string();
    ctl.profile(&target, &profile(vec![route("by-ip", None, "/by-ip")]));
    let env = config(ctl.addr()).set(spoke::config::PROFILE_NETWORKS, "127.0.0.0/8");
    let app = proxy_with_orig_dst(&env, Box::new(Injected::default()));
    let r = get(&app, &target, "/by-ip");
    assert_eq!(r.status, 200, "{}", r.text());
    let profiled = metric(
        &app,
        "route_request_total",
        &[("dst", &target), ("rt_route", "by-ip")],
    );
    assert_eq!(profiled, 1.0, "{}", metrics(&app));
    let kinds: Vec<_> = ctl
        .requests()
        .into_iter()
        .map(|(k, g)| (k, g.path))
        .collect();
    assert_eq!(kinds.len(), 1, "one GetProfile, no Get: {kinds:?}");
}
