//! Malformed responses from a backend (502 while nothing went to the client, a closed
//! connection once something did; the backend connection never reused), bodiless
//! responses, interim responses and response hop-by-hop headers.
//!
//! Test thread; the fixture and shared assertions are in `main.rs`, the crafted backends
//! are `raw::RawBackend` scripts.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::raw::{ok_response, BackendConn, RawBackend};
use crate::support::patience;
use crate::*;

// === responses: malformed heads and bodies from the backend ===

/// A backend whose connection `i` answers its first request with `replies[i]` (and then
/// waits for the proxy to hang up); connections past the list serve `echo_path`.
fn crafted(replies: Vec<Vec<u8>>) -> RawBackend {
    RawBackend::start(
        "crafted",
        Arc::new(move |conn: &mut BackendConn| {
            let reply = replies.get(conn.index()).cloned();
            while let Some(req) = conn.next_request() {
                match &reply {
                    Some(bytes) => {
                        conn.write(bytes);
                        return;
                    }
                    None => conn.write(&ok_response(req.path.as_bytes())),
                }
            }
        }),
    )
}

#[test]
fn malformed_response_heads_get_502_and_the_connection_is_not_reused() {
    let big = "a".repeat(70 * 1024);
    let mut many = "HTTP/1.1 200 OK\r\n".to_string();
    for i in 0..101 {
        many.push_str(&format!("x-{i}: v\r\n"));
    }
    many.push_str("Content-Length: 0\r\n\r\n");
    let cases: Vec<(&str, String)> = vec![
        (
            "CL with TE",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into(),
        ),
        (
            "TE with CL",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello".into(),
        ),
        (
            "conflicting CL",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".into(),
        ),
        ("CL +5", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello".into()),
        (
            "chunked twice",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n".into(),
        ),
        (
            "TE in HTTP/1.0",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
        ),
        ("status not a number", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n".into()),
        ("status 600", "HTTP/1.1 600 Nope\r\nContent-Length: 0\r\n\r\n".into()),
        ("status 099", "HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n".into()),
        ("not HTTP", "ICY 200 OK\r\nContent-Length: 0\r\n\r\n".into()),
        ("HTTP/2", "HTTP/2 200\r\ncontent-length: 0\r\n\r\n".into()),
        ("garbage", "\0\x01\x02 garbage\r\n\r\n".into()),
        (
            "101 to a request that asked for no upgrade",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".into(),
        ),
        ("obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n".into()),
        ("space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n".into()),
        ("head over 64 KiB", format!("HTTP/1.1 200 OK\r\nX-Big: {big}\r\nContent-Length: 0\r\n\r\n")),
        ("101 header lines", many),
    ];
    let be = crafted(cases.iter().map(|(_, r)| r.as_bytes().to_vec()).collect());
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    for (i, (case, _)) in cases.iter().enumerate() {
        let path = format!("/case-{i}");
        let mut c = mesh.client();
        c.send(get(&path).as_bytes());
        let r = c.reply(false);
        assert_eq!(r.status, 502, "{case}: {}", r.text());
        assert_proxy_error(&r, 502, "invalid response from upstream");
        be.wait_closed(i);
        assert_eq!(be.accepted(), i + 1, "{case}: one upstream connection each");
        assert_bytes(case, &be.conn_bytes(i), fwd_get(&path).as_bytes());
    }
    // A well-formed response's connection is reused: the count above is not an accident.
    let n = cases.len();
    let mut c = mesh.client();
    for path in ["/ok-1", "/ok-2"] {
        c.send(get(path).as_bytes());
        assert_eq!(c.reply(false).body, path.as_bytes());
    }
    assert_eq!(be.accepted(), n + 1);
    assert_bytes(
        "the good connection",
        &be.conn_bytes(n),
        format!("{}{}", fwd_get("/ok-1"), fwd_get("/ok-2")).as_bytes(),
    );
}

#[test]
// The head and the broken body arrive in one read, so the decoder fails before the head
// is written: nothing reached the client yet, and it gets a 502 rather than a bare close.
fn a_bad_chunked_response_body_before_anything_was_sent_gets_502() {
    let cases: Vec<Vec<u8>> = vec![
        bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
        // Chunk lines outside the RFC 9112 grammar: no extension name, a name that is not
        // a token, whitespace after the size.
        bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n"),
        bytes(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;bad[=x\r\nhello\r\n0\r\n\r\n",
        ),
        bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"),
    ];
    let n = cases.len();
    let be = crafted(cases);
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    for i in 0..n {
        let mut c = mesh.client();
        c.send(get(&format!("/case-{i}")).as_bytes());
        let r = c.reply(false);
        assert_proxy_error(&r, 502, "invalid response from upstream");
        be.wait_closed(i);
    }
    assert_eq!(be.accepted(), n);
}

/// A backend whose first connection sends `first`, waits for the test's go, then sends
/// `then`; later connections serve `echo_path`.
pub(crate) fn staged(first: Vec<u8>, then: Vec<u8>) -> (RawBackend, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let be = RawBackend::start(
        "staged",
        Arc::new(move |conn: &mut BackendConn| {
            while let Some(req) = conn.next_request() {
                if conn.index() > 0 {
                    conn.write(&ok_response(req.path.as_bytes()));
                    continue;
                }
                conn.write(&first);
                let go = rx
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .recv_timeout(patience());
                if go.is_ok() {
                    conn.write(&then);
                }
                return;
            }
        }),
    );
    (be, tx)
}

#[test]
fn a_response_body_that_breaks_after_the_head_went_out_closes_the_client_connection() {
    let first = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    let (be, go) = staged(bytes(first), bytes("zz\r\n0\r\n\r\n"));
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    c.send(get("/a").as_bytes());
    let want = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
    let got = c.read_exact(want.len());
    assert_bytes("the part that went out", &got, want.as_bytes());
    go.send(()).expect("backend waits");
    c.assert_closed();
    be.wait_closed(0);
    // The next request gets a fresh upstream connection.
    let mut c = mesh.client();
    c.send(get("/b").as_bytes());
    assert_eq!(c.reply(false).body, b"/b");
    assert_eq!(be.accepted(), 2);
    assert_bytes(
        "first connection",
        &be.conn_bytes(0),
        fwd_get("/a").as_bytes(),
    );
}

#[test]
fn a_response_cut_short_by_the_backend_closes_the_client_connection() {
    // Content-Length 10, five bytes, then EOF.
    let be = RawBackend::start(
        "short",
        Arc::new(|conn: &mut BackendConn| {
            if conn.next_request().is_some() {
                // The second connection closes without answering at all.
                if conn.index() == 0 {
                    conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
                }
                conn.close_write();
            }
        }),
    );
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    c.send(get("/a").as_bytes());
    let got = c.read_to_close();
    assert_bytes(
        "what the client saw",
        &got,
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello",
    );
    // And a backend that closes before any response: 502.
    let mut c = mesh.client();
    c.send(get("/b").as_bytes());
    assert_proxy_error(&c.reply(false), 502, "connection closed before response");
}

// === responses: bodiless statuses and forwarding rules ===

#[test]
fn bodies_of_head_204_and_304_responses_are_never_forwarded() {
    // Each bodiless response comes with five stray bytes in the same write.
    let be = RawBackend::serving("bodiless", |_, req| match req.path.as_str() {
        "/head" => bytes("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        "/204" => bytes("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello"),
        "/304" => {
            bytes("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 5\r\n\r\nhello")
        }
        path => ok_response(path.as_bytes()),
    });
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    let steps: [(String, bool, &str); 6] = [
        (
            format!("HEAD /head HTTP/1.1\r\nHost: {WEB}\r\n\r\n"),
            true,
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
        ),
        (
            get("/a"),
            false,
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n/a",
        ),
        (get("/204"), false, "HTTP/1.1 204 No Content\r\n\r\n"),
        (
            get("/b"),
            false,
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n/b",
        ),
        (
            get("/304"),
            false,
            "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\ncontent-length: 5\r\n\r\n",
        ),
        (
            get("/c"),
            false,
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n/c",
        ),
    ];
    for (request, head, want) in &steps {
        c.send(request.as_bytes());
        let r = c.reply(*head);
        assert_bytes(request, &r.raw, want.as_bytes());
    }
    // A connection that sent stray bytes is closed, never reused; a clean one is.
    let conns = [
        format!("HEAD /head HTTP/1.1\r\nhost: {WEB}\r\n\r\n"),
        format!("{}{}", fwd_get("/a"), fwd_get("/204")),
        format!("{}{}", fwd_get("/b"), fwd_get("/304")),
        fwd_get("/c"),
    ];
    for (i, want) in conns.iter().enumerate() {
        assert_bytes(
            &format!("connection {i}"),
            &be.conn_bytes(i),
            want.as_bytes(),
        );
    }
    for i in 0..3 {
        be.wait_closed(i);
    }
    assert_eq!(be.accepted(), 4);
    assert!(!be.conn_closed(3));
}

#[test]
fn interim_responses_reach_http11_clients_only() {
    let be = RawBackend::serving("interim", |_, req| {
        let mut out =
            bytes("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n");
        out.extend(ok_response(req.path.as_bytes()));
        out
    });
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    c.send(get("/a").as_bytes());
    assert_bytes("100", &c.reply(false).raw, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_bytes(
        "103",
        &c.reply(false).raw,
        b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n",
    );
    assert_eq!(c.reply(false).body, b"/a");

    let mut c = mesh.client();
    c.send(format!("GET /b HTTP/1.0\r\nHost: {WEB}\r\n\r\n").as_bytes());
    let got = c.read_to_close();
    assert_bytes(
        "an HTTP/1.0 client gets the final response only",
        &got,
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n/b",
    );
}

#[test]
fn an_http10_client_gets_a_chunked_body_as_plain_bytes_ended_by_the_close() {
    let (be, go) = staged(
        bytes(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\nX-A: 1\r\n\r\n\
             5;ext=\"a b\"\r\nhel",
        ),
        bytes("lo\r\n0000A ; q\r\n0123456789\r\n0\r\nX-Sum: 15\r\n\r\n"),
    );
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    c.send(format!("GET /old HTTP/1.0\r\nHost: {WEB}\r\n\r\n").as_bytes());
    go.send(()).expect("backend waits");
    assert_bytes(
        "no transfer-encoding, no framing, no trailers; the close ends the body",
        &c.read_to_close(),
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nconnection: close\r\n\r\nhello0123456789",
    );

    // A coding other than chunked cannot be taken off: 502, not bytes the client
    // would misread.
    let be = crafted(vec![bytes(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    )]);
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    c.send(format!("GET /gz HTTP/1.0\r\nHost: {WEB}\r\n\r\n").as_bytes());
    assert_proxy_error(&c.reply(false), 502, "invalid response from upstream");
}

#[test]
fn hop_by_hop_response_headers_are_removed() {
    let be = RawBackend::serving("hop", |_, _| {
        bytes(
            "HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
             Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: x-sum\r\nUpgrade: h2c\r\n\
             X-End: 2\r\nContent-Length: 2, 2\r\n\r\nok",
        )
    });
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    c.send(get("/a").as_bytes());
    assert_bytes(
        "forwarded response",
        &c.reply(false).raw,
        b"HTTP/1.1 200 OK\r\nX-End: 2\r\ncontent-length: 2\r\n\r\nok",
    );
    // The backend connection stays in use.
    c.send(get("/b").as_bytes());
    assert_status(&c.reply(false), 200);
    assert_eq!(be.accepted(), 1);
}

#[test]
fn a_backend_connection_close_is_honoured_and_not_passed_on() {
    let be = RawBackend::serving("closing", |_, req| {
        let body = req.path.as_bytes();
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    });
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    for path in ["/a", "/b"] {
        c.send(get(path).as_bytes());
        assert_bytes(
            path,
            &c.reply(false).raw,
            format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{path}").as_bytes(),
        );
    }
    assert_eq!(
        be.accepted(),
        2,
        "a connection the backend closed is not reused"
    );
}
