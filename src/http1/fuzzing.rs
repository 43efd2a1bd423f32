//! Fuzzing entry points for the HTTP/1.1 core: each takes arbitrary bytes, runs them through
//! the parsers and the body decoder, and checks the invariants the event loop relies on.
//! Returning normally means "fine"; a panic is a finding (a crash, or an invariant below that
//! did not hold).
//!
//! Never called by the proxy. Two callers share these functions so they run the same checks:
//! the cargo-fuzz targets in `fuzz/fuzz_targets/` (nightly, coverage-guided, seeded from
//! `fuzz/corpus/<target>/`) and `tests/fuzz_smoke.rs` (stable, in CI: the same corpus plus
//! seeded random mutations). Parsing lives in `request.rs` / `response.rs`, framing in
//! `body.rs`, serialization in `forward.rs`.
//!
//! Input formats (the corpus files follow them):
//! - [`request_head`]: the bytes a client sends (heads, bodies, pipelined requests);
//! - [`response_head`]: one flag byte, then the bytes an upstream sends;
//! - [`body_chunked`]: one byte choosing how the input is cut, then a chunked body.

use super::{
    error_response, parse_request, parse_response, BodyDecoder, BodyFraming, HeadError, Limits,
    Parsed, Progress, RequestHead,
};

/// The proxy's limits and tight ones, so both the common path and the limit checks run.
const LIMITS: [Limits; 2] = [
    Limits {
        max_head_bytes: 64 * 1024,
        max_headers: 100,
    },
    Limits {
        max_head_bytes: 256,
        max_headers: 8,
    },
];

/// Room enough to re-parse anything a forwarded head grew into.
const ROOMY: Limits = Limits {
    max_head_bytes: 1 << 20,
    max_headers: 1024,
};

/// At most this many pipelined messages are followed per input.
const MAX_MESSAGES: usize = 4;

/// Headers a forwarded head must never carry.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "l5d-dst-override",
];

/// Client bytes: parses up to [`MAX_MESSAGES`] pipelined requests (head, then body) under
/// each of two limits.
///
/// Checks: a partial head is below the size limit; an error maps to a status the proxy
/// answers with, whose `error_response` parses back; a complete head consumed at most the
/// limit, its upstream serialization re-parses as one head with the same method, path and
/// framing and without hop-by-hop headers; the body decoder never claims more than it was
/// given.
pub fn request_head(data: &[u8]) {
    for limits in &LIMITS {
        let mut rest = data;
        for _ in 0..MAX_MESSAGES {
            let (head, consumed) = match parse_request(rest, limits) {
                Ok(Parsed::Complete { head, consumed }) => (head, consumed),
                Ok(Parsed::Partial) => {
                    assert!(rest.len() < limits.max_head_bytes, "Partial past the limit");
                    break;
                }
                Err(e) => {
                    check_request_error(e);
                    break;
                }
            };
            assert!(
                consumed > 0 && consumed <= rest.len(),
                "consumed {consumed}"
            );
            assert!(consumed <= limits.max_head_bytes, "head over the limit");
            check_request_head(&head, limits);
            let body = &rest[consumed..];
            let (taken, done) = decode(head.framing(), body);
            if !done {
                break;
            }
            rest = &body[taken..];
        }
    }
}

fn check_request_error(e: HeadError) {
    let status = e.status();
    assert!(matches!(status, 400 | 431 | 501 | 505), "{e:?} -> {status}");
    assert!(!e.reason().is_empty());
    let out = error_response(status, e.reason(), true);
    match parse_response(&out, &LIMITS[0], false) {
        Ok(Parsed::Complete { head, consumed }) => {
            assert_eq!(head.status(), status);
            assert_eq!(
                head.framing(),
                BodyFraming::ContentLength((out.len() - consumed) as u64)
            );
        }
        other => panic!("error_response does not parse back: {other:?}"),
    }
}

fn check_request_head(head: &RequestHead, limits: &Limits) {
    assert!(!head.method().is_empty());
    assert!(!head.path().is_empty());
    assert!(head.minor_version() <= 1);
    assert!(head.headers().count() <= limits.max_headers);
    assert_ne!(head.framing(), BodyFraming::CloseDelimited);
    let authority = head.authority();
    if let Some((name, port)) = &authority {
        assert!(!name.is_empty() && *port != 0, "authority {name}:{port}");
        assert!(!name.ends_with('.'), "trailing dot kept: {name}");
    }

    // The head as the upstream gets it. An HTTP/1.0 request with neither Host nor an
    // absolute URI has no Host to send on; the session names the routing authority then.
    let host = match (head.upstream_host(), &authority) {
        ("", Some((name, port))) => format!("{name}:{port}"),
        ("", None) => return,
        (host, _) => host.to_string(),
    };
    let mut out = Vec::new();
    head.write_upstream(&mut out, &host);
    let again = match parse_request(&out, &ROOMY) {
        Ok(Parsed::Complete { head, consumed }) => {
            assert_eq!(consumed, out.len(), "one head, nothing after it");
            head
        }
        other => panic!(
            "forwarded head does not parse back ({other:?}): {:?}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(again.method(), head.method());
    assert_eq!(again.path(), head.path());
    assert_eq!(again.framing(), head.framing());
    assert_eq!(again.minor_version(), 1);
    for (name, value) in again.headers() {
        // An upgrade request passes exactly `upgrade` and `connection: upgrade` on.
        let upgrade_pair = head.upgrade()
            && (name.eq_ignore_ascii_case("upgrade")
                || (name.eq_ignore_ascii_case("connection") && value == b"upgrade"));
        assert!(
            upgrade_pair || !HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)),
            "{name} forwarded: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    assert_eq!(again.upgrade(), head.upgrade());
}

/// Upstream bytes after one flag byte: bit 0 says the request was HEAD, bit 1 that the
/// client connection is closing, bit 2 that the client spoke HTTP/1.0. Parses up to
/// [`MAX_MESSAGES`] responses (interim ones included) under each of two limits.
///
/// Checks: statuses stay in 100..=599 (a 101 ends the messages: a tunnel follows); bodiless responses (HEAD, 1xx, 204, 304)
/// have no body framing; a close-delimited body is never kept alive; the head written for
/// the client ends the head, re-parses with the same status and framing (a chunked body
/// becomes close-delimited for an HTTP/1.0 client, which gets it de-chunked), and says
/// `Close` whenever it must.
pub fn response_head(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 != 0;
    let close = flags & 2 != 0;
    let client_minor = if flags & 4 != 0 { 0 } else { 1 };
    for limits in &LIMITS {
        for _ in 0..MAX_MESSAGES {
            let (head, consumed) = match parse_response(rest, limits, head_request) {
                Ok(Parsed::Complete { head, consumed }) => (head, consumed),
                Ok(Parsed::Partial) => {
                    assert!(rest.len() < limits.max_head_bytes, "Partial past the limit");
                    break;
                }
                // Any error is a 502 for the client; there is nothing more to check.
                Err(_) => break,
            };
            assert!(consumed > 0 && consumed <= rest.len().min(limits.max_head_bytes));
            let status = head.status();
            assert!((100..=599).contains(&status), "{status}");
            let bodiless = head_request || status < 200 || status == 204 || status == 304;
            if bodiless {
                assert_eq!(head.framing(), BodyFraming::None, "{status}");
            }
            if head.framing() == BodyFraming::CloseDelimited {
                assert!(!head.keep_alive());
            }

            let mut out = Vec::new();
            let after = head.write_downstream(&mut out, close, client_minor);
            match parse_response(&out, &ROOMY, head_request) {
                Ok(Parsed::Complete {
                    head: again,
                    consumed,
                }) => {
                    assert_eq!(consumed, out.len(), "one head, nothing after it");
                    assert_eq!(again.status(), status);
                    let dechunked = client_minor == 0 && head.framing() == BodyFraming::Chunked;
                    let want = if dechunked {
                        BodyFraming::CloseDelimited
                    } else {
                        head.framing()
                    };
                    assert_eq!(again.framing(), want, "{:?}", lossy(&out));
                }
                other => panic!(
                    "head for the client does not parse back ({other:?}): {:?}",
                    lossy(&out)
                ),
            }
            let must_close = close
                || head.framing() == BodyFraming::CloseDelimited
                || head.is_switching()
                || (client_minor == 0 && head.framing() == BodyFraming::Chunked);
            if !head.is_interim() && must_close {
                assert_eq!(after, super::AfterResponse::Close);
            }
            if head.is_switching() {
                // What follows is tunnel data, not HTTP.
                break;
            }

            let body = &rest[consumed..];
            let (taken, done) = decode(head.framing(), body);
            if !done {
                break;
            }
            rest = &body[taken..];
        }
    }
}

/// A chunked body after one byte whose low four bits, plus one, are the size of the pieces
/// it is fed in. Checks that feeding it whole and in pieces gives the same outcome (the
/// decoder keeps all state between calls), that it never claims bytes it was not given, and
/// that it stays finished or failed once it is; and that walking it payload by payload (as
/// a de-chunking pipe does) ends at the same byte with the same outcome, the payload never
/// more than the body. Re-framing it (as a pipe does towards a chunked recipient) ends at
/// the same byte with the same outcome, writes the same bytes whole and in pieces, and what
/// it writes for a complete body is a complete chunked body with the same content that
/// re-frames to itself. The same input also runs through the Content-Length and
/// close-delimited decoders.
pub fn body_chunked(data: &[u8]) {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let piece = usize::from(cut & 0x0f) + 1;
    for framing in [
        BodyFraming::Chunked,
        BodyFraming::ContentLength(body.len() as u64 / 2),
        BodyFraming::CloseDelimited,
    ] {
        let mut whole = BodyDecoder::new(framing);
        let at_once = whole.feed(body);
        let in_pieces = feed_in_pieces(framing, body, piece);
        match (at_once, in_pieces) {
            (Ok(p), Ok(q)) => {
                assert!(p.consumed <= body.len());
                assert_eq!((p.consumed, p.done), q, "{framing:?}, pieces of {piece}");
                let (end, done, payload) = payload_walk(framing, body).expect("same outcome");
                assert_eq!(
                    (end, done),
                    (p.consumed, p.done),
                    "{framing:?} payload walk"
                );
                if framing == BodyFraming::Chunked {
                    assert!(payload <= end);
                    check_canonical(body, piece, (p.consumed, p.done));
                } else {
                    assert_eq!(payload, end, "only chunked bodies have framing");
                }
                if p.done {
                    assert!(whole.is_done());
                    let again = whole.feed(body);
                    assert_eq!(
                        again,
                        Ok(Progress {
                            consumed: 0,
                            done: true
                        })
                    );
                    assert_eq!(whole.finish_eof(), Ok(()));
                } else if framing == BodyFraming::CloseDelimited {
                    assert_eq!(whole.finish_eof(), Ok(()));
                } else {
                    assert!(whole.finish_eof().is_err(), "EOF inside a body is an error");
                }
            }
            (Err(e), Err(f)) => {
                assert_eq!(e, f, "{framing:?}, pieces of {piece}");
                assert_eq!(payload_walk(framing, body), Err(e), "payload walk");
                if framing == BodyFraming::Chunked {
                    assert_eq!(canonical_walk(body, body.len().max(1)).err(), Some(e));
                }
                assert_eq!(whole.feed(b"0\r\n\r\n"), Err(e), "errors stick");
            }
            (p, q) => panic!("{framing:?}: whole {p:?}, in pieces of {piece} {q:?}"),
        }
    }
}

/// The canonical form of a valid chunked `body` (which `feed` found to end as `outcome`).
fn check_canonical(body: &[u8], piece: usize, outcome: (usize, bool)) {
    let (out, end, done) = canonical_walk(body, body.len().max(1)).expect("same outcome");
    assert_eq!((end, done), outcome, "canonical walk");
    let in_pieces = canonical_walk(body, piece).expect("same outcome");
    assert_eq!(in_pieces, (out.clone(), end, done), "pieces of {piece}");
    if !done {
        return;
    }
    let mut again = BodyDecoder::new(BodyFraming::Chunked);
    assert_eq!(
        again.feed(&out),
        Ok(Progress {
            consumed: out.len(),
            done: true
        }),
        "canonical output is one whole body: {:?}",
        lossy(&out)
    );
    let twice = canonical_walk(&out, out.len()).expect("valid");
    assert_eq!(twice, (out.clone(), out.len(), true), "a fixed point");
    let content = |bytes: &[u8]| {
        let mut dec = BodyDecoder::new(BodyFraming::Chunked);
        let (mut content, mut rest) = (Vec::new(), bytes);
        while let Ok(p) = dec.feed_payload(rest) {
            content.extend_from_slice(&rest[p.framing..p.framing + p.payload]);
            rest = &rest[p.framing + p.payload..];
            if p.done || p.framing + p.payload == 0 {
                break;
            }
        }
        content
    };
    assert_eq!(content(&out), content(&body[..end]), "the same content");
}

/// Walks a chunked `body` with `feed_canonical` the way a re-framing pipe does, the bytes
/// arriving `piece` at a time: what it writes (framing and payload, in order), where the
/// body ends and whether it does.
fn canonical_walk(body: &[u8], piece: usize) -> Result<(Vec<u8>, usize, bool), super::BodyError> {
    let mut dec = BodyDecoder::new(BodyFraming::Chunked);
    let (mut out, mut pos, mut avail) = (Vec::new(), 0, piece.min(body.len()));
    loop {
        let p = dec.feed_canonical(&body[pos..avail], &mut out)?;
        pos += p.framing;
        out.extend_from_slice(&body[pos..pos + p.payload]);
        pos += p.payload;
        if p.done {
            return Ok((out, pos, true));
        }
        if pos == avail {
            if avail == body.len() {
                return Ok((out, pos, false));
            }
            avail = (avail + piece).min(body.len());
        }
    }
}

/// Walks `body` with `feed_payload` the way the response pipe does: where it ends, whether
/// the body is done, and how many payload bytes it found.
fn payload_walk(
    framing: BodyFraming,
    body: &[u8],
) -> Result<(usize, bool, usize), super::BodyError> {
    let mut dec = BodyDecoder::new(framing);
    let (mut end, mut payload) = (0, 0);
    loop {
        let p = dec.feed_payload(&body[end..])?;
        end += p.framing + p.payload;
        payload += p.payload;
        if p.done || p.framing + p.payload == 0 {
            return Ok((end, p.done, payload));
        }
    }
}

/// Feeds `body` in pieces of `piece` bytes: the total consumed and whether it finished.
fn feed_in_pieces(
    framing: BodyFraming,
    body: &[u8],
    piece: usize,
) -> Result<(usize, bool), super::BodyError> {
    let mut dec = BodyDecoder::new(framing);
    let mut total = 0;
    let mut start = 0;
    while start < body.len() || start == 0 {
        let end = (start + piece).min(body.len());
        let p = dec.feed(&body[start..end])?;
        assert!(p.consumed <= end - start);
        total += p.consumed;
        if p.done {
            return Ok((total, true));
        }
        assert_eq!(
            p.consumed,
            end - start,
            "an unfinished body takes all input"
        );
        if end == body.len() {
            break;
        }
        start = end;
    }
    Ok((total, false))
}

/// Runs a decoder for `framing` over `body`: bytes taken and whether the body ended there.
fn decode(framing: BodyFraming, body: &[u8]) -> (usize, bool) {
    let mut dec = BodyDecoder::new(framing);
    match dec.feed(body) {
        Ok(p) => {
            assert!(p.consumed <= body.len());
            (p.consumed, p.done)
        }
        Err(_) => (0, false),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_accept_empty_and_tiny_inputs() {
        for data in [&b""[..], b"\0", b"\r\n", b"G", b"\x07"] {
            request_head(data);
            response_head(data);
            body_chunked(data);
        }
    }

    #[test]
    fn entry_points_accept_their_documented_formats() {
        request_head(
            b"POST /a HTTP/1.1\r\nHost: web:80\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\nGET http://web/b HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        response_head(b"\x01HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        response_head(b"\x06HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
        body_chunked(b"\x025;x=y\r\nhello\r\n0\r\nt: 1\r\n\r\nrest");
    }

    #[test]
    fn a_split_sensitive_decoder_would_be_caught() {
        // The piece feeder itself: equal to a whole feed on a valid body.
        let body = b"5\r\nhello\r\n0\r\n\r\nnext";
        for piece in 1..=16 {
            assert_eq!(
                feed_in_pieces(BodyFraming::Chunked, body, piece),
                Ok((body.len() - 4, true))
            );
        }
        assert_eq!(
            feed_in_pieces(BodyFraming::ContentLength(3), b"", 1),
            Ok((0, false))
        );
    }
}
