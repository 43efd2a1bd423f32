//! Protocol detection (pure; run by the event-loop thread on a session's
//! read buffer): what a connection speaks, told from its first bytes.
//!
//! The bytes are the session's own `inbuf`, so whichever stage comes next
//! parses or forwards them where they are: nothing is peeked, copied or
//! replayed. [`classify`] looks only at a prefix and answers as soon as the
//! answer cannot change:
//!
//! - the HTTP/2 connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`);
//! - a TLS ClientHello: a handshake record (`0x16`), a 3.x record version and
//!   a first handshake message of type 1;
//! - an HTTP/1 request line: a method token, a space, a request target of
//!   visible bytes, a space, `HTTP/1.` and a digit, then the line end (empty
//!   lines before it are skipped, as RFC 9112 §2.2 lets servers do);
//! - anything else is opaque, once a byte rules the others out.
//!
//! A prefix that could still become one of them is [`Detected::NeedMore`];
//! the session then reads on, until the detect timeout or EOF decides
//! ([`on_timeout`]).

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// Not enough bytes to tell yet.
    NeedMore,
    Http1,
    /// The HTTP/2 connection preface.
    H2,
    /// A TLS ClientHello.
    Tls,
    /// Some other protocol.
    Opaque,
}

impl Detected {
    /// The `protocol` label of `spoke_detect_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Detected::NeedMore | Detected::Opaque => "opaque",
            Detected::Http1 => "http1",
            Detected::H2 => "h2",
            Detected::Tls => "tls",
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A method longer than this is not one (the longest registered method is
/// 17 bytes, `UPDATEREDIRECTREF`); a stream of letters is then opaque
/// rather than waited on.
const MAX_METHOD: usize = 32;

/// Empty lines skipped before a request line.
const MAX_LEADING_EMPTY_LINES: usize = 4;

/// Classifies the first bytes of a connection.
/// Whether `bytes` begin as the HTTP/2 preface does (as much of it as
/// there is): a client that sent it to a port expecting HTTP/1.
pub fn starts_h2(bytes: &[u8]) -> bool {
    let n = bytes.len().min(H2_PREFACE.len());
    n >= 14 && bytes[..n] == H2_PREFACE[..n]
}

pub fn classify(bytes: &[u8]) -> Detected {
    let Some(&first) = bytes.first() else {
        return Detected::NeedMore;
    };
    if first == 0x16 {
        return client_hello(bytes);
    }
    if first == b'P' {
        let n = bytes.len().min(H2_PREFACE.len());
        if bytes[..n] == H2_PREFACE[..n] {
            return if n == H2_PREFACE.len() {
                Detected::H2
            } else {
                Detected::NeedMore
            };
        }
        // `PRI` with anything else, or `POST`, `PUT`, `PATCH`: HTTP/1's to
        // decide.
    }
    request_line(bytes)
}

/// What a detection that ran out of time (or hit EOF) settles on: HTTP/1 when
/// the bytes so far begin a request line that the HTTP/1 stage can answer
/// (with 408 or 414 as it sees fit), else opaque, as Linkerd does without a
/// policy hint.
pub fn on_timeout(bytes: &[u8]) -> Detected {
    match classify(bytes) {
        Detected::NeedMore if begins_request_target(bytes) => Detected::Http1,
        Detected::NeedMore => Detected::Opaque,
        d => d,
    }
}

fn client_hello(bytes: &[u8]) -> Detected {
    // Record: type (1), version (2), length (2); then the handshake
    // message's type.
    match bytes.get(1) {
        None => return Detected::NeedMore,
        Some(3) => {}
        Some(_) => return Detected::Opaque,
    }
    match bytes.get(5) {
        None => Detected::NeedMore,
        Some(1) => Detected::Tls,
        Some(_) => Detected::Opaque,
    }
}

/// Where a request line starts (after skipped empty lines), or `None` while
/// only line ends have arrived; `Err` when they are too many.
fn line_start(bytes: &[u8]) -> Result<Option<usize>, ()> {
    let mut i = 0;
    let mut lines = 0;
    loop {
        match bytes.get(i) {
            None => return Ok(None),
            Some(b'\r') if bytes.get(i + 1).is_none_or(|b| *b == b'\n') => {
                if bytes.get(i + 1).is_none() {
                    return Ok(None);
                }
                i += 2;
            }
            Some(b'\n') => i += 1,
            Some(_) => return Ok(Some(i)),
        }
        lines += 1;
        if lines > MAX_LEADING_EMPTY_LINES {
            return Err(());
        }
    }
}

fn request_line(bytes: &[u8]) -> Detected {
    let start = match line_start(bytes) {
        Ok(Some(i)) => i,
        Ok(None) => return Detected::NeedMore,
        Err(()) => return Detected::Opaque,
    };
    let line = &bytes[start..];
    // Method: one or more token bytes, then a space.
    let method = line.iter().take_while(|b| is_tchar(**b)).count();
    if method > MAX_METHOD {
        return Detected::Opaque;
    }
    match line.get(method) {
        None => return Detected::NeedMore,
        Some(b' ') if method > 0 => {}
        Some(_) => return Detected::Opaque,
    }
    // Request target: visible bytes, then a space.
    let rest = &line[method + 1..];
    let target = rest.iter().take_while(|b| is_target_byte(**b)).count();
    match rest.get(target) {
        None => return Detected::NeedMore,
        Some(b' ') if target > 0 => {}
        Some(_) => return Detected::Opaque,
    }
    // Version, then the line end.
    let version = &rest[target + 1..];
    const VERSION: &[u8] = b"HTTP/1.";
    let n = version.len().min(VERSION.len());
    if version[..n] != VERSION[..n] {
        return Detected::Opaque;
    }
    match version.get(VERSION.len()) {
        None => return Detected::NeedMore,
        Some(d) if d.is_ascii_digit() => {}
        Some(_) => return Detected::Opaque,
    }
    match version.get(VERSION.len() + 1) {
        None => Detected::NeedMore,
        Some(b'\n') => Detected::Http1,
        Some(b'\r') => match version.get(VERSION.len() + 2) {
            None => Detected::NeedMore,
            Some(b'\n') => Detected::Http1,
            Some(_) => Detected::Opaque,
        },
        Some(_) => Detected::Opaque,
    }
}

/// The bytes so far are a method and a space, and the start of a target:
/// an HTTP/1 request whose line has not finished.
fn begins_request_target(bytes: &[u8]) -> bool {
    let Ok(Some(start)) = line_start(bytes) else {
        return false;
    };
    let line = &bytes[start..];
    let method = line.iter().take_while(|b| is_tchar(**b)).count();
    method > 0 && line.get(method) == Some(&b' ') && line.len() > method + 1
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte a request target may hold (visible ASCII; obs-text is let
/// through for the HTTP/1 stage to judge).
fn is_target_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f
}

#[cfg(test)]
mod tests {
    use super::{classify, on_timeout, Detected, H2_PREFACE};

    /// Every prefix of `bytes` shorter than it needs more; the whole is `want`.
    fn prefixes_then(bytes: &[u8], want: Detected) {
        for n in 0..bytes.len() {
            assert_eq!(
                classify(&bytes[..n]),
                Detected::NeedMore,
                "prefix {:?}",
                String::from_utf8_lossy(&bytes[..n])
            );
        }
        assert_eq!(
            classify(bytes),
            want,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }

    #[test]
    fn request_lines_are_http1_once_the_line_ends() {
        prefixes_then(b"GET / HTTP/1.1\r\n", Detected::Http1);
        prefixes_then(b"POST /a?b=c HTTP/1.0\n", Detected::Http1);
        prefixes_then(b"\r\nGET http://x/ HTTP/1.1\r\n", Detected::Http1);
        prefixes_then(b"CONNECT books:443 HTTP/1.1\r\n", Detected::Http1);
        prefixes_then(b"M-SEARCH * HTTP/1.1\r\n", Detected::Http1);
        // Whatever follows the line.
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Detected::Http1
        );
    }

    #[test]
    fn the_h2_preface_and_client_hellos() {
        prefixes_then(H2_PREFACE, Detected::H2);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nXX"), Detected::Opaque);
        // `P...` methods are HTTP/1's.
        assert_eq!(classify(b"PUT / HTTP/1.1\r\n"), Detected::Http1);
        assert_eq!(classify(b"PATCH /x HTTP/1.1\r\n"), Detected::Http1);
        prefixes_then(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01], Detected::Tls);
        assert_eq!(classify(&[0x16, 0x03, 0x03, 0, 5, 0x02]), Detected::Opaque);
        assert_eq!(classify(&[0x16, 0x02]), Detected::Opaque);
    }

    #[test]
    fn other_protocols_are_opaque_at_the_first_byte_that_tells() {
        // A Redis command, a MySQL client packet, an SSH banner, binary.
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Detected::Opaque);
        assert_eq!(classify(&[0x20, 0, 0, 1, 0x85]), Detected::Opaque);
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.2\r\n"), Detected::Opaque);
        assert_eq!(classify(&[0, 1, 2]), Detected::Opaque);
        // A line that is not a request line.
        assert_eq!(classify(b"HELLO\r\n"), Detected::Opaque);
        assert_eq!(classify(b"GET /\r\n"), Detected::Opaque);
        assert_eq!(classify(b"GET / HTTP/2.0\r\n"), Detected::Opaque);
        assert_eq!(classify(b"GET / HTTP/1.1 x\r\n"), Detected::Opaque);
        assert_eq!(classify(b" GET / HTTP/1.1\r\n"), Detected::Opaque);
        assert_eq!(classify(b"GET  / HTTP/1.1\r\n"), Detected::Opaque);
        // No end of letters: not a method past 32 bytes.
        assert_eq!(classify(&[b'A'; 32]), Detected::NeedMore);
        assert_eq!(classify(&[b'A'; 33]), Detected::Opaque);
        // Too many empty lines first.
        assert_eq!(classify(b"\r\n\r\n\r\n\r\n\r\nGET"), Detected::Opaque);
        assert_eq!(classify(b"\r\n\r\n"), Detected::NeedMore);
    }

    /// Once a prefix decides, every longer input decides the same way, and
    /// a timeout never contradicts a decision: detection may stop reading at
    /// the first answer without changing it.
    #[test]
    fn an_answer_never_changes_as_bytes_arrive() {
        let seeds: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            H2_PREFACE,
            &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x03, 0x03],
            b"\r\nPOST /x HTTP/1.0\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"PRI * HTTP/1.1\r\n",
        ];
        let mut rng = fastrand::Rng::with_seed(12);
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..rng.usize(0..3) {
                let i = rng.usize(0..input.len());
                match rng.u8(0..3) {
                    0 => input[i] = rng.u8(..),
                    1 => input.insert(i, b" \r\n/H1.P"[rng.usize(0..8)]),
                    _ => {
                        input.remove(i);
                    }
                }
                if input.is_empty() {
                    input.push(b'G');
                }
            }
            let mut decided = None;
            for n in 0..=input.len() {
                let d = classify(&input[..n]);
                match decided {
                    None if d != Detected::NeedMore => decided = Some(d),
                    None => {}
                    Some(first) => assert_eq!(d, first, "{:?} at {n}", input),
                }
                if let Some(first) = decided {
                    assert_eq!(on_timeout(&input[..n]), first, "{:?} at {n}", input);
                }
            }
        }
    }

    #[test]
    fn a_timeout_settles_partial_requests_as_http1_and_the_rest_as_opaque() {
        assert_eq!(on_timeout(b"GET /very-long-pa"), Detected::Http1);
        assert_eq!(on_timeout(b"GET / HTTP/1.1\r"), Detected::Http1);
        assert_eq!(on_timeout(b"GET "), Detected::Opaque);
        assert_eq!(on_timeout(b"GE"), Detected::Opaque);
        assert_eq!(on_timeout(b""), Detected::Opaque);
        assert_eq!(on_timeout(b"PRI * HTTP"), Detected::Http1);
        assert_eq!(on_timeout(&[0x16, 0x03]), Detected::Opaque);
        assert_eq!(on_timeout(b"*1\r\n"), Detected::Opaque);
    }
}
