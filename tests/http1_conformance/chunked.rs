//! Chunked framing on the wire, both ways: whatever valid chunk lines a client or a backend
//! writes (leading zeros, upper-case hex, extensions, whitespace where RFC 9112 allows it),
//! the other side gets `<hex size>\r\n` lines without extensions, and only the trailer
//! fields that may be trailers; a retried request replays exactly those bytes.
//!
//! Test thread; the fixture and shared assertions are in `main.rs`. Chunk lines that break
//! the grammar are in the refusal tests of `requests.rs` and `responses.rs`.

use std::sync::Arc;
use std::time::Duration;

use protobuf::well_known_types::duration::Duration as PbDuration;

use crate::raw::{ok_response, BackendConn, RawBackend};
use crate::responses::staged;
use crate::support::{config, eventually, pb, profile, proxy, route, MockController};
use crate::*;

/// A chunked body as an odd but valid sender writes it: 21 digits for a size of 5, an
/// upper-case size, extensions with quoted strings and BWS, a last chunk with leading zeros
/// and an extension, and trailer fields of every kind that must not be a trailer.
const ODD_BODY: &str = "00000000000000000005;name=\"a \\\"q\\\" b\" ; flag\r\nhello\r\n\
    000000000000000000000B\t;\tx = y\r\nhello world\r\n\
    000;last=1\r\n\
    X-Sum: 16\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nHost: evil\r\n\
    l5d-dst-override: api.ns.svc.cluster.local:9090\r\nAuthorization: Basic eA==\r\n\
    Set-Cookie: a=b\r\nIf-Match: *\r\nConnection: close\r\nTE: trailers\r\n\
    grpc-status:   0\r\nx-empty:\r\n\r\n";

/// `ODD_BODY` as the recipient gets it.
const CANONICAL_BODY: &str =
    "5\r\nhello\r\nb\r\nhello world\r\n0\r\nX-Sum: 16\r\ngrpc-status: 0\r\nx-empty:\r\n\r\n";

fn chunked_post(path: &str, body: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: {WEB}\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
}

fn fwd_chunked(path: &str, body: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nhost: {WEB}\r\ntransfer-encoding: chunked\r\n\r\n{body}")
}

#[test]
fn chunked_requests_reach_the_backend_in_canonical_framing() {
    let be = RawBackend::echo_path("web");
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    // Pipelined behind it: the backend must see the next request right where the body
    // ended, and nothing of the dropped trailers may act on it.
    c.send(format!("{}{}", chunked_post("/odd", ODD_BODY), get("/next")).as_bytes());
    for path in ["/odd", "/next"] {
        let r = c.reply(false);
        assert_status(&r, 200);
        assert_eq!(r.body, path.as_bytes());
    }
    // A body that is already canonical goes on unchanged.
    c.send(chunked_post("/plain", CANONICAL_BODY).as_bytes());
    assert_eq!(c.reply(false).body, b"/plain");
    assert_bytes(
        "what the backend received",
        &be.conn_bytes(0),
        format!(
            "{}{}{}",
            fwd_chunked("/odd", CANONICAL_BODY),
            fwd_get("/next"),
            fwd_chunked("/plain", CANONICAL_BODY)
        )
        .as_bytes(),
    );
    assert_eq!(be.accepted(), 1);
}

#[test]
fn chunk_lines_split_across_reads_reach_the_backend_whole() {
    let be = RawBackend::echo_path("web");
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    // The head and part of a size line, then the rest once the head went upstream.
    c.send(chunked_post("/split", "000").as_bytes());
    let head = fwd_chunked("/split", "");
    eventually("the head reaches the backend", || {
        be.conn_bytes(0) == head.as_bytes()
    });
    c.send(b"3;a=\"b\"\r\nabc\r\n0\r\nHost: x\r\nx-t: 1\r\n\r\n");
    assert_eq!(c.reply(false).body, b"/split");
    assert_bytes(
        "what the backend received",
        &be.conn_bytes(0),
        format!("{head}3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n").as_bytes(),
    );
}

fn pb_duration(d: Duration) -> PbDuration {
    let mut p = PbDuration::new();
    p.seconds = d.as_secs() as i64;
    p
}

#[test]
fn a_retried_chunked_request_replays_the_canonical_bytes() {
    // The first connection fails the request; the retry goes to a second one.
    let be = RawBackend::start(
        "retry",
        Arc::new(|conn: &mut BackendConn| {
            while let Some(req) = conn.next_request() {
                if conn.index() == 0 {
                    conn.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
                } else {
                    conn.write(&ok_response(req.path.as_bytes()));
                }
            }
        }),
    );
    let ctl = MockController::start();
    ctl.endpoints(WEB, &[be.addr()]);
    let mut route = route("all", None, "/.*");
    route.is_retryable = true;
    let mut p = profile(vec![route]);
    let mut budget = pb::RetryBudget::new();
    budget.retry_ratio = 0.2;
    budget.min_retries_per_second = 100;
    budget.ttl = Some(pb_duration(Duration::from_secs(10))).into();
    p.retry_budget = Some(budget).into();
    ctl.profile(WEB, &p);
    let app = proxy(&config(ctl.addr()));

    let mut c = RawClient::connect(app.outbound_addr());
    c.send(chunked_post("/retry", ODD_BODY).as_bytes());
    let r = c.reply(false);
    assert_status(&r, 200);
    assert_eq!(r.body, b"/retry");
    assert_eq!(be.accepted(), 2, "one retry");
    let want = fwd_chunked("/retry", CANONICAL_BODY);
    assert_bytes("first attempt", &be.conn_bytes(0), want.as_bytes());
    assert_bytes("the retry", &be.conn_bytes(1), want.as_bytes());
}

#[test]
fn chunked_responses_reach_the_client_in_canonical_framing() {
    let odd = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{ODD_BODY}");
    let be = RawBackend::serving("odd", move |_, _| odd.clone().into_bytes());
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    let want = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{CANONICAL_BODY}");
    // Twice on one connection each side: the body ended exactly where it should.
    for path in ["/a", "/b"] {
        c.send(get(path).as_bytes());
        assert_bytes(path, &c.read_exact(want.len()), want.as_bytes());
    }
    assert_eq!(be.accepted(), 1);
    assert_bytes(
        "both requests on one backend connection",
        &be.conn_bytes(0),
        format!("{}{}", fwd_get("/a"), fwd_get("/b")).as_bytes(),
    );
}

#[test]
fn a_response_chunk_line_split_across_reads_reaches_the_client_whole() {
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (be, go) = staged(
        bytes(&format!("{head}0000")),
        bytes("5 ; a=\"b\"\r\nhello\r\n0;z\r\nDate: x\r\nx-t: 1\r\n\r\n"),
    );
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    c.send(get("/split").as_bytes());
    let fwd_head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    // The head goes out while the size line is still incomplete, and nothing of it.
    assert_bytes(
        "the head",
        &c.read_exact(fwd_head.len()),
        fwd_head.as_bytes(),
    );
    go.send(()).expect("backend waits");
    let rest = "5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n";
    assert_bytes("the body", &c.read_exact(rest.len()), rest.as_bytes());
}
