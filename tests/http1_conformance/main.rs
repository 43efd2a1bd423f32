//! HTTP/1.1 conformance of the real proxy on the wire (RFC 9112 framing, RFC 9110 hop-by-hop
//! headers, DESIGN.md error table): raw bytes go in on a client socket, and each test checks
//! the status line, `l5d-proxy-error`, whether the connection closed, and the exact bytes the
//! backend received (nothing after a rejected request may reach it).
//!
//! Test threads plus the proxy's own (`support::proxy`); backends are `raw::RawBackend`,
//! which records every byte of every connection and answers with crafted bytes, so
//! malformed responses and connection reuse can be checked too. Loopback only; every wait
//! is bounded by `support::patience`.
//!
//! Layout: this file holds the fixture and the assertions the cases share;
//! `requests.rs` has malformed and adversarial requests and the forwarding rules,
//! `responses.rs` malformed backend responses and response forwarding, `chunked.rs` the
//! canonical chunked framing both ways, `raw.rs` the byte-level backend and client.

#[path = "../support/mod.rs"]
mod support;

mod chunked;
mod raw;
mod requests;
mod responses;

use std::net::SocketAddr;

use raw::{RawBackend, RawClient, Reply};
use spoke::app::App;
use spoke::http1::status_reason;
use support::*;

const WEB: &str = "web.ns.svc.cluster.local:8080";
const API: &str = "api.ns.svc.cluster.local:9090";

/// The proxy and its controller; the proxy stops first.
struct Mesh {
    app: App,
    _ctl: MockController,
}

impl Mesh {
    /// A proxy whose controller knows each `(authority, backend)`, with an empty profile.
    fn start(dsts: &[(&str, SocketAddr)]) -> Mesh {
        let ctl = MockController::start();
        for (authority, addr) in dsts {
            ctl.endpoints(authority, &[*addr]);
            ctl.profile(authority, &profile(vec![]));
        }
        let app = proxy(&config(ctl.addr()));
        Mesh { app, _ctl: ctl }
    }

    fn client(&self) -> RawClient {
        RawClient::connect(self.app.outbound_addr())
    }
}

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// `GET <path>` to WEB, as the client sends it.
fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {WEB}\r\n\r\n")
}

/// `GET <path>` to WEB, as the backend must receive it.
fn fwd_get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: {WEB}\r\n\r\n")
}

#[track_caller]
fn assert_status(r: &Reply, status: u16) {
    assert_eq!(
        r.status_line,
        format!("HTTP/1.1 {status} {}", status_reason(status)),
        "{}",
        r.text()
    );
}

#[track_caller]
fn assert_proxy_error(r: &Reply, status: u16, reason: &str) {
    assert_status(r, status);
    assert_eq!(r.header("l5d-proxy-error"), Some(reason), "{}", r.text());
}

#[track_caller]
fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(
        String::from_utf8_lossy(got),
        String::from_utf8_lossy(want),
        "{what}"
    );
}

/// One valid request on a fresh connection; afterwards the backend must have received
/// exactly this request and nothing else, ever.
#[track_caller]
fn probe_is_all_the_backend_saw(mesh: &Mesh, be: &RawBackend) {
    let mut c = mesh.client();
    c.send(get("/probe").as_bytes());
    let r = c.reply(false);
    assert_status(&r, 200);
    assert_eq!(r.body, b"/probe");
    assert_bytes(
        "everything the backend received",
        &be.all_bytes(),
        fwd_get("/probe").as_bytes(),
    );
}

/// A request the proxy must refuse by itself: answer, then close.
struct Refused {
    case: &'static str,
    request: Vec<u8>,
    status: u16,
    reason: &'static str,
}

fn refused(case: &'static str, request: String, status: u16, reason: &'static str) -> Refused {
    Refused {
        case,
        request: request.into_bytes(),
        status,
        reason,
    }
}

/// Each case on a fresh connection: the status line, `l5d-proxy-error`, a closed
/// connection; then nothing of any of them reached the backend.
#[track_caller]
fn assert_refused(cases: Vec<Refused>) {
    let be = RawBackend::echo_path("web");
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    for case in &cases {
        let mut c = mesh.client();
        c.send(&case.request);
        let r = c.reply(false);
        assert_eq!(
            (r.status, r.header("l5d-proxy-error")),
            (case.status, Some(case.reason)),
            "{}: {}",
            case.case,
            r.text()
        );
        assert_status(&r, case.status);
        assert_eq!(r.header("connection"), Some("close"), "{}", case.case);
        c.assert_closed();
    }
    assert_eq!(be.accepted(), 0, "no connection to the backend was opened");
    probe_is_all_the_backend_saw(&mesh, &be);
}

/// `POST /` to WEB with `headers` and `body`.
fn post(headers: &str, body: &str) -> String {
    format!("POST / HTTP/1.1\r\nHost: {WEB}\r\n{headers}\r\n{body}")
}
