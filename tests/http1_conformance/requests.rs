//! Malformed and adversarial requests (each refused with the right status, the connection
//! closed, nothing of it upstream) and the rules for forwarding good ones: pipelining,
//! hop-by-hop headers, origin-form, Host, `l5d-dst-override`.
//!
//! Test thread; the fixture and shared assertions are in `main.rs`.

use spoke::http1::{MAX_CHUNK_LINE_BYTES, MAX_TRAILER_BYTES};

use crate::raw::RawBackend;
use crate::support::eventually;
use crate::*;

// === requests: body framing (RFC 9112 section 6) ===

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    let both = "content-length with transfer-encoding";
    assert_refused(vec![
        refused(
            "CL then TE",
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            400,
            both,
        ),
        refused(
            "TE then CL",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                "0\r\n\r\n",
            ),
            400,
            both,
        ),
        refused(
            "CL 0 with TE",
            post(
                "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            400,
            both,
        ),
    ]);
}

#[test]
fn malformed_or_conflicting_content_length_is_refused() {
    let invalid = "invalid content-length";
    let conflicting = "conflicting content-length";
    let cl = |v: &str| post(&format!("Content-Length: {v}\r\n"), "hello");
    assert_refused(vec![
        refused("plus sign", cl("+5"), 400, invalid),
        refused("negative", cl("-1"), 400, invalid),
        refused("list of different values", cl("1, 2"), 400, conflicting),
        refused(
            "two headers, different values",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            400,
            conflicting,
        ),
        refused("u64 overflow", cl("18446744073709551616"), 400, invalid),
        refused("huge", cl("99999999999999999999999999"), 400, invalid),
        refused("hex", cl("0x5"), 400, invalid),
        refused("empty", cl(""), 400, invalid),
        refused("trailing comma", cl("5,"), 400, invalid),
        refused("inner space", cl("5 5"), 400, invalid),
    ]);
}

#[test]
fn bad_transfer_encoding_is_refused_and_unknown_codings_get_501() {
    let te = |v: &str| post(&format!("Transfer-Encoding: {v}\r\n"), "0\r\n\r\n");
    let not_final = "final transfer coding is not chunked";
    let twice = "chunked applied more than once";
    assert_refused(vec![
        refused("final coding gzip", te("gzip"), 400, not_final),
        refused("chunked then gzip", te("chunked, gzip"), 400, not_final),
        refused(
            "chunked twice in one list",
            te("chunked, chunked"),
            400,
            twice,
        ),
        refused(
            "chunked twice in two headers",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            400,
            twice,
        ),
        refused("empty", te(""), 400, "empty transfer-encoding"),
        refused(
            "in an HTTP/1.0 request",
            format!(
                "POST / HTTP/1.0\r\nHost: {WEB}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            400,
            "transfer-encoding in HTTP/1.0 request",
        ),
        refused(
            "gzip, chunked",
            te("gzip, chunked"),
            501,
            "unsupported transfer coding",
        ),
        refused(
            "gzip then chunked in two headers",
            post(
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            501,
            "unsupported transfer coding",
        ),
    ]);
}

// === requests: header syntax, Host, limits ===

#[test]
fn header_syntax_errors_are_refused() {
    let line = "invalid header line";
    let value = "invalid header value";
    let with = |h: &str| format!("GET / HTTP/1.1\r\nHost: {WEB}\r\n{h}\r\n");
    assert_refused(vec![
        refused("obs-fold with SP", with("X-A: a\r\n b\r\n"), 400, line),
        refused("obs-fold with HTAB", with("X-A: a\r\n\tb\r\n"), 400, line),
        refused("space before colon", with("X-A : a\r\n"), 400, line),
        refused("tab before colon", with("X-A\t: a\r\n"), 400, line),
        refused(
            "space before colon in Host",
            format!("GET / HTTP/1.1\r\nHost : {WEB}\r\n\r\n"),
            400,
            line,
        ),
        refused("NUL in a value", with("X-A: a\0b\r\n"), 400, value),
        refused("CR in a value", with("X-A: a\rb\r\n"), 400, value),
        refused("empty name", with(": a\r\n"), 400, line),
        refused(
            "garbage request line",
            bytes_to_string(b"\x16\x03\x01\x02\x00\x01\r\n\r\n"),
            400,
            "invalid request line",
        ),
        // (The HTTP/2 preface itself is HTTP/2 with prior knowledge, served
        // as such: tests/h2.rs.)
        refused(
            "HTTP/2.0 in an HTTP/1 request line",
            format!("GET / HTTP/2.0\r\nHost: {WEB}\r\n\r\n"),
            505,
            "unsupported HTTP version",
        ),
        refused(
            "CONNECT without a port",
            "CONNECT web HTTP/1.1\r\nHost: web\r\n\r\n".to_string(),
            400,
            "CONNECT needs host:port",
        ),
    ]);
}

fn bytes_to_string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn missing_repeated_or_invalid_host_is_refused() {
    let host = |h: &str| format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n");
    let invalid = "invalid host header";
    assert_refused(vec![
        refused(
            "missing",
            "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n".to_string(),
            400,
            "missing host header",
        ),
        refused(
            "repeated, same value",
            format!("GET / HTTP/1.1\r\nHost: {WEB}\r\nhost: {WEB}\r\n\r\n"),
            400,
            "multiple host headers",
        ),
        refused(
            "repeated, different values",
            format!("GET / HTTP/1.1\r\nHost: {WEB}\r\nHost: {API}\r\n\r\n"),
            400,
            "multiple host headers",
        ),
        refused("empty", host(""), 400, invalid),
        refused("space inside", host("web ns"), 400, invalid),
        refused(
            "userinfo",
            host("user@web.ns.svc.cluster.local"),
            400,
            invalid,
        ),
        refused(
            "port out of range",
            host("web.ns.svc.cluster.local:65536"),
            400,
            invalid,
        ),
        refused("port zero", host("web:0"), 400, invalid),
        refused("empty label", host("web..ns"), 400, invalid),
        refused("unclosed IPv6 literal", host("[::1"), 400, invalid),
        refused(
            "absolute-form still needs Host in HTTP/1.1",
            format!("GET http://{WEB}/ HTTP/1.1\r\n\r\n"),
            400,
            "missing host header",
        ),
        refused(
            "HTTP/1.0 with no authority at all",
            "GET / HTTP/1.0\r\n\r\n".to_string(),
            400,
            "missing or invalid host",
        ),
    ]);
}

#[test]
fn heads_over_the_limits_get_431() {
    let big = "a".repeat(70 * 1024);
    let mut many = format!("GET / HTTP/1.1\r\nHost: {WEB}\r\n");
    for i in 0..100 {
        many.push_str(&format!("x-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_refused(vec![
        refused(
            "one 70 KiB header",
            format!("GET / HTTP/1.1\r\nHost: {WEB}\r\nX-Big: {big}\r\n\r\n"),
            431,
            "head too large",
        ),
        refused(
            "70 KiB head that never ends",
            format!("GET / HTTP/1.1\r\nHost: {WEB}\r\nX-Big: {big}"),
            431,
            "head too large",
        ),
        refused("101 header lines", many, 431, "too many headers"),
    ]);
}

#[test]
fn heads_just_within_the_limits_are_forwarded_exactly() {
    let be = RawBackend::echo_path("web");
    let mesh = Mesh::start(&[(WEB, be.addr())]);

    // 100 header lines, Host included.
    let mut many = format!("GET /many HTTP/1.1\r\nHost: {WEB}\r\n");
    let mut fwd = format!("GET /many HTTP/1.1\r\nhost: {WEB}\r\n");
    for i in 0..99 {
        many.push_str(&format!("x-{i}: v{i}\r\n"));
        fwd.push_str(&format!("x-{i}: v{i}\r\n"));
    }
    many.push_str("\r\n");
    fwd.push_str("\r\n");
    // A head of exactly 64 KiB.
    let prefix = format!("GET /big HTTP/1.1\r\nHost: {WEB}\r\nX-Big: ");
    let fill = 64 * 1024 - prefix.len() - 4;
    let big = format!("{prefix}{}\r\n\r\n", "b".repeat(fill));
    assert_eq!(big.len(), 64 * 1024);
    let fwd_big = format!(
        "GET /big HTTP/1.1\r\nhost: {WEB}\r\nX-Big: {}\r\n\r\n",
        "b".repeat(fill)
    );

    let mut c = mesh.client();
    c.send(many.as_bytes());
    assert_eq!(c.reply(false).body, b"/many");
    c.send(big.as_bytes());
    assert_eq!(c.reply(false).body, b"/big");
    assert_bytes(
        "forwarded heads",
        &be.all_bytes(),
        format!("{fwd}{fwd_big}").as_bytes(),
    );
}

// === requests: chunked body framing errors ===

/// Head of the chunked `POST /up` every body-error case sends, as the backend receives it.
fn fwd_chunked_post() -> String {
    format!("POST /up HTTP/1.1\r\nhost: {WEB}\r\ntransfer-encoding: chunked\r\n\r\n")
}

#[test]
fn bad_chunked_framing_in_a_request_gets_400_and_never_reaches_the_backend() {
    // (case, the body up to the byte that breaks the framing, the rest)
    let long_ext = format!("5;{}", "e".repeat(MAX_CHUNK_LINE_BYTES - 2));
    let long_trailers = format!("0\r\nx: {}", "t".repeat(MAX_TRAILER_BYTES - 3));
    let cases: [(&str, &str, &str); 16] = [
        ("size not hex", "", "zz\r\nhello\r\n0\r\n\r\n"),
        ("no extension name", "5;", "\r\nhello\r\n0\r\n\r\n"),
        (
            "extension name not a token",
            "5;bad",
            "[=x\r\nhello\r\n0\r\n\r\n",
        ),
        ("whitespace after the size", "5 ", "\r\nhello\r\n0\r\n\r\n"),
        (
            "17 significant digits after leading zeros",
            "0000000000000000000001000000000000000",
            "0\r\n",
        ),
        ("bare LF after the size", "5", "\nhello\r\n0\r\n\r\n"),
        ("bare LF after the data", "5\r\nhello", "\n0\r\n\r\n"),
        ("no CRLF after the data", "5\r\nhello", "XX\r\n0\r\n\r\n"),
        ("17 hex digits", "1000000000000000", "0\r\n"),
        ("size overflow", "ffffffffffffffff", "f\r\n"),
        ("negative size", "", "-1\r\n"),
        (
            "control byte in an extension",
            "5;a=",
            "\x01\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunk line over the limit",
            &long_ext,
            "e\r\nhello\r\n0\r\n\r\n",
        ),
        ("bad trailer name", "0\r\nx", " y: 1\r\n\r\n"),
        ("trailers over the limit", &long_trailers, "t\r\n\r\n"),
        ("bare LF ending the trailers", "5\r\nhello\r\n0\r\n", "\n"),
    ];
    for (case, good, bad) in cases {
        // A proxy of its own per case, so every upstream connection below is this case's.
        let be = RawBackend::echo_path("web");
        let mesh = Mesh::start(&[(WEB, be.addr())]);
        let mut c = mesh.client();
        c.send(
            format!(
                "POST /up HTTP/1.1\r\nHost: {WEB}\r\nTransfer-Encoding: chunked\r\n\r\n{good}{bad}"
            )
            .as_bytes(),
        );
        let r = c.reply(false);
        assert_eq!(r.status, 400, "{case}: {}", r.text());
        assert_proxy_error(&r, 400, "invalid request body");
        c.assert_closed();

        // The probe's connection is accepted after any the bad request opened.
        let mut c = mesh.client();
        c.send(get("/probe").as_bytes());
        assert_eq!(c.reply(false).body, b"/probe", "{case}");
        let n = be.accepted();
        assert!(n == 1 || n == 2, "{case}: {n} upstream connections");
        assert_bytes(case, &be.conn_bytes(n - 1), fwd_get("/probe").as_bytes());
        if n == 2 {
            // The head may have gone upstream before the framing broke, and so may the
            // valid part of the body; never the byte that broke it, and the connection
            // is given up.
            be.wait_closed(0);
            let got = be.conn_bytes(0);
            let allowed = format!("{}{good}", fwd_chunked_post());
            assert!(
                allowed.as_bytes().starts_with(&got),
                "{case}: the backend got {:?}",
                String::from_utf8_lossy(&got)
            );
        }
    }
}

#[test]
fn chunked_framing_that_breaks_after_the_head_went_upstream_gets_400_and_closes_both() {
    let be = RawBackend::echo_path("web");
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    c.send(
        format!(
            "POST /up HTTP/1.1\r\nHost: {WEB}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        .as_bytes(),
    );
    let sent = format!("{}5\r\nhello\r\n", fwd_chunked_post());
    eventually("the head and first chunk reach the backend", || {
        be.conn_bytes(0) == sent.as_bytes()
    });
    c.send(b"5\r\nworld\n0\r\n\r\n");
    let r = c.reply(false);
    assert_proxy_error(&r, 400, "invalid request body");
    c.assert_closed();
    be.wait_closed(0);
    // "world" was decoded as chunk data before the bare LF, so the proxy may have passed
    // it on; the broken framing itself never is.
    let got = be.conn_bytes(0);
    let allowed = format!("{sent}5\r\nworld");
    assert!(
        got.starts_with(sent.as_bytes()) && allowed.as_bytes().starts_with(&got),
        "the backend got {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(be.accepted(), 1);
}

// === requests: pipelining, forwarding rules ===

#[test]
fn pipelined_requests_are_answered_in_order_on_one_upstream_connection() {
    let be = RawBackend::echo_path("web");
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    let mut batch = get("/a");
    batch.push_str(&format!(
        "POST /b HTTP/1.1\r\nHost: {WEB}\r\nContent-Length: 5\r\n\r\nhello"
    ));
    batch.push_str(&format!(
        "POST /c HTTP/1.1\r\nHost: {WEB}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n"
    ));
    batch.push_str(&format!("HEAD /d HTTP/1.1\r\nHost: {WEB}\r\n\r\n"));
    batch.push_str(&get("/e"));
    c.send(batch.as_bytes());
    for (path, head) in [
        ("/a", false),
        ("/b", false),
        ("/c", false),
        ("/d", true),
        ("/e", false),
    ] {
        let r = c.reply(head);
        assert_status(&r, 200);
        if head {
            assert!(r.body.is_empty());
        } else {
            assert_eq!(String::from_utf8_lossy(&r.body), path);
        }
    }
    let want = format!(
        "{}POST /b HTTP/1.1\r\nhost: {WEB}\r\ncontent-length: 5\r\n\r\nhello\
         POST /c HTTP/1.1\r\nhost: {WEB}\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n\
         HEAD /d HTTP/1.1\r\nhost: {WEB}\r\n\r\n{}",
        fwd_get("/a"),
        fwd_get("/e")
    );
    assert_bytes(
        "pipelined requests upstream",
        &be.conn_bytes(0),
        want.as_bytes(),
    );
    assert_eq!(be.accepted(), 1);
}

#[test]
fn a_bad_request_after_good_pipelined_ones_is_refused_after_they_are_answered() {
    let be = RawBackend::echo_path("web");
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    let batch = format!(
        "{}{}POST /x HTTP/1.1\r\nHost: {WEB}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab{}",
        get("/a"),
        get("/b"),
        get("/never")
    );
    c.send(batch.as_bytes());
    assert_eq!(c.reply(false).body, b"/a");
    assert_eq!(c.reply(false).body, b"/b");
    let r = c.reply(false);
    assert_proxy_error(&r, 400, "conflicting content-length");
    c.assert_closed();
    assert_bytes(
        "the backend got the good requests only",
        &be.all_bytes(),
        format!("{}{}", fwd_get("/a"), fwd_get("/b")).as_bytes(),
    );
}

#[test]
fn connection_close_ends_a_pipeline() {
    let be = RawBackend::echo_path("web");
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    let batch = format!(
        "{}GET /b HTTP/1.1\r\nHost: {WEB}\r\nConnection: close\r\n\r\n{}",
        get("/a"),
        get("/never")
    );
    c.send(batch.as_bytes());
    assert_eq!(c.reply(false).body, b"/a");
    let r = c.reply(false);
    assert_eq!(r.body, b"/b");
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed();
    assert_bytes(
        "the request after Connection: close is not forwarded",
        &be.all_bytes(),
        format!("{}{}", fwd_get("/a"), fwd_get("/b")).as_bytes(),
    );
}

#[test]
fn hop_by_hop_request_headers_are_removed() {
    let be = RawBackend::echo_path("web");
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    c.send(
        format!(
            "GET /h HTTP/1.1\r\nHost: {WEB}\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
             Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
             Trailer: x-sum\r\nUpgrade: websocket\r\nconnection: Upgrade, x-other\r\n\
             X-Other: 2\r\nX-End: 3\r\nAccept: */*\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.reply(false);
    assert_eq!(r.body, b"/h");
    assert_bytes(
        "forwarded head",
        &be.all_bytes(),
        format!(
            "GET /h HTTP/1.1\r\nhost: {WEB}\r\nX-End: 3\r\nAccept: */*\r\n\
             upgrade: websocket\r\nconnection: upgrade\r\n\r\n"
        )
        .as_bytes(),
    );
    // The upstream declined the upgrade (200, not 101): HTTP carries on.
    c.send(get("/next").as_bytes());
    assert_eq!(c.reply(false).body, b"/next");
}

#[test]
fn upgrade_without_connection_upgrade_is_stripped() {
    let be = RawBackend::echo_path("web");
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    c.send(
        format!(
            "GET /h HTTP/1.1\r\nHost: {WEB}\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\
             TE: trailers\r\nUpgrade: websocket\r\nX-End: 3\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(c.reply(false).body, b"/h");
    assert_bytes(
        "forwarded head",
        &be.all_bytes(),
        format!("GET /h HTTP/1.1\r\nhost: {WEB}\r\nX-End: 3\r\n\r\n").as_bytes(),
    );
}

#[test]
fn requests_are_forwarded_in_normal_form() {
    let be = RawBackend::echo_path("web");
    let mesh = Mesh::start(&[(WEB, be.addr())]);
    let mut c = mesh.client();
    // (sent, forwarded)
    let cases: [(String, String); 5] = [
        (
            format!("GET http://{WEB}/p?q=1#frag HTTP/1.1\r\nHost: elsewhere.example:1\r\n\r\n"),
            format!("GET /p?q=1 HTTP/1.1\r\nhost: {WEB}\r\n\r\n"),
        ),
        (
            format!("GET http://{WEB}?q HTTP/1.1\r\nHost: {WEB}\r\n\r\n"),
            format!("GET /?q HTTP/1.1\r\nhost: {WEB}\r\n\r\n"),
        ),
        (
            format!("POST /l HTTP/1.1\nHost: {WEB}\nx-a:1\nContent-Length: 5, 5\ncontent-length: 5\n\nhello"),
            format!("POST /l HTTP/1.1\r\nhost: {WEB}\r\nx-a: 1\r\ncontent-length: 5\r\n\r\nhello"),
        ),
        (
            format!("\r\nGET /leading-crlf HTTP/1.1\r\nHost: {WEB}\r\n\r\n"),
            fwd_get("/leading-crlf"),
        ),
        (
            format!("GET /v10 HTTP/1.0\r\nHost: {WEB}\r\nConnection: keep-alive\r\n\r\n"),
            fwd_get("/v10"),
        ),
    ];
    let mut want = String::new();
    for (sent, fwd) in &cases {
        c.send(sent.as_bytes());
        let r = c.reply(false);
        assert_status(&r, 200);
        want.push_str(fwd);
        assert_bytes(sent, &be.conn_bytes(0), want.as_bytes());
    }
}

#[test]
fn dst_override_then_absolute_uri_then_host_pick_the_destination() {
    let web = RawBackend::echo_path("web");
    let api = RawBackend::echo_path("api");
    let mesh = Mesh::start(&[(WEB, web.addr()), (API, api.addr())]);
    // (request, the backend that must get it, the head it must get)
    let cases: [(String, &RawBackend, String); 5] = [
        (
            format!("GET /1 HTTP/1.1\r\nHost: {API}\r\nl5d-dst-override: {WEB}\r\n\r\n"),
            &web,
            format!("GET /1 HTTP/1.1\r\nhost: {API}\r\n\r\n"),
        ),
        (
            format!(
                "GET http://{API}/2 HTTP/1.1\r\nL5D-Dst-Override: {WEB}\r\nHost: {API}\r\n\r\n"
            ),
            &web,
            format!("GET /2 HTTP/1.1\r\nhost: {API}\r\n\r\n"),
        ),
        (
            format!("GET http://{WEB}/3 HTTP/1.1\r\nHost: {API}\r\n\r\n"),
            &web,
            format!("GET /3 HTTP/1.1\r\nhost: {WEB}\r\n\r\n"),
        ),
        (
            format!("GET /4 HTTP/1.1\r\nHost: {API}\r\n\r\n"),
            &api,
            format!("GET /4 HTTP/1.1\r\nhost: {API}\r\n\r\n"),
        ),
        (
            "GET /5 HTTP/1.1\r\nHost: WEB.NS.svc.cluster.local.:8080\r\n\r\n".to_string(),
            &web,
            "GET /5 HTTP/1.1\r\nhost: WEB.NS.svc.cluster.local.:8080\r\n\r\n".to_string(),
        ),
    ];
    for (request, be, fwd) in &cases {
        let before = be.all_bytes().len();
        let mut c = mesh.client();
        c.send(request.as_bytes());
        assert_status(&c.reply(false), 200);
        assert_bytes(request, &be.all_bytes()[before..], fwd.as_bytes());
    }
    assert_refused_on(
        &mesh,
        format!(
            "GET / HTTP/1.1\r\nHost: {WEB}\r\nl5d-dst-override: a\r\nl5d-dst-override: b\r\n\r\n"
        ),
        "multiple l5d-dst-override headers",
    );
    assert_refused_on(
        &mesh,
        format!("GET / HTTP/1.1\r\nHost: {WEB}\r\nl5d-dst-override: bad host\r\n\r\n"),
        "invalid l5d-dst-override",
    );
    // The refused requests sent nothing anywhere.
    let forwarded: usize = cases.iter().map(|(_, _, fwd)| fwd.len()).sum();
    assert_eq!(web.all_bytes().len() + api.all_bytes().len(), forwarded);
}

#[track_caller]
fn assert_refused_on(mesh: &Mesh, request: String, reason: &str) {
    let mut c = mesh.client();
    c.send(request.as_bytes());
    assert_proxy_error(&c.reply(false), 400, reason);
    c.assert_closed();
}
