//! The chunked transfer coding (RFC 9112 section 7.1), byte by byte: what is accepted, and
//! the canonical framing written in its place. `BodyDecoder` (the parent module) drives it
//! and skips chunk data in bulk; every state here keeps what it needs, so input may be split
//! at any byte.
//!
//! Event-loop thread, pure; never allocates itself (canonical framing is appended to the
//! caller's buffer, which the pipe reuses).
//!
//! # Accepted
//!
//! ```text
//! chunk-line  = 1*HEXDIG *( BWS ";" BWS ext-name [ BWS "=" BWS ext-value ] ) CRLF
//! ext-name    = token
//! ext-value   = token / quoted-string
//! trailer     = *( field-name ":" field-value CRLF ) CRLF
//! ```
//!
//! - The size may have any number of leading zeros; its significant digits must fit in 64
//!   bits (at most 16). The whole line, digits and extensions, is at most
//!   [`MAX_CHUNK_LINE_BYTES`] without its CRLF.
//! - Whitespace is allowed only where the grammar has BWS: `5 ;a=1` is fine, `5 ` (trailing
//!   whitespace), `5;` (no extension name), `5;a=` (no value), `5;bad[=x` (not a token)
//!   and an unterminated or control-byte quoted string are refused.
//! - Trailer fields are `token ":" value` with no control byte but HTAB in the value and no
//!   obs-fold (a line starting with whitespace); [`MAX_TRAILER_BYTES`] for the section.
//! - Every line ends with CRLF: a bare LF or a lone CR is refused, and so is anything but
//!   CRLF after chunk data.
//!
//! # Written instead (the canonical form)
//!
//! - Each chunk line as `<size in lowercase hex, no leading zeros>\r\n`; extensions are
//!   validated and dropped (nothing spoke talks to relies on them, and a re-serialised
//!   extension is one more thing a lenient parser could read differently).
//! - `\r\n` after each chunk's data, `0\r\n` for the last chunk, `\r\n` ending the trailers.
//! - Each trailer field that may be a trailer as `<name as sent>: <value>\r\n` (`name:`
//!   for an empty value), the value without its leading whitespace (trailing whitespace,
//!   which a recipient strips, stays as sent). Dropped are the fields RFC 9110 section
//!   6.5.1 says must not be trailers, or that spoke acts on itself (see
//!   [`trailer_allowed`]):
//!   - message framing: `Content-Length`, `Transfer-Encoding`, `Trailer`;
//!   - routing: `Host`, and every `l5d-*` field (`l5d-dst-override` routes a request);
//!   - request modifiers: `Cache-Control`, `Expect`, `Max-Forwards`, `Pragma`, `Range`,
//!     `TE`, and every `If-*` conditional;
//!   - authentication: `Authorization`, `Proxy-Authorization`, `WWW-Authenticate`,
//!     `Proxy-Authenticate`, `Cookie`, `Set-Cookie`;
//!   - response control data: `Age`, `Date`, `Expires`, `Location`, `Retry-After`, `Vary`,
//!     `Warning`;
//!   - payload processing: `Content-Encoding`, `Content-Type`, `Content-Range`;
//!   - connection-specific: `Connection`, `Keep-Alive`, `Proxy-Connection`, `Upgrade`.
//!
//! A trailer name is held back (at most [`NAME_CAP`] bytes, in a [`HeldName`] beside the
//! state) until its colon decides whether the field goes on; a longer name cannot be one
//! of the above, so it is kept unless its first bytes are `if-` or `l5d-`. Nothing of a
//! chunk-size line is written before its LF, and everything written is final: a body that
//! breaks later leaves written only framing that was valid.

use super::BodyError;

/// Longest chunk-size line (size digits plus extensions, without CRLF).
pub const MAX_CHUNK_LINE_BYTES: usize = 4096;
/// Longest trailer section (all trailer lines and the final CRLF).
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Significant hex digits of a chunk size that fit in 64 bits.
const MAX_SIZE_DIGITS: u8 = 16;
/// A trailer name is held until its colon up to this many bytes: longer than any name in
/// [`DENIED_TRAILERS`].
const NAME_CAP: usize = 20;

// Line and trailer byte counts are kept in `u16`, which keeps `Chunk` within 16 bytes: the
// state is passed by value for every framing byte, and a larger one goes through memory.
const _: () = assert!(MAX_CHUNK_LINE_BYTES < u16::MAX as usize);
const _: () = assert!(MAX_TRAILER_BYTES < u16::MAX as usize);

/// Where a trailer name is held until its colon (beside the state, not in it, for the
/// size reason above).
pub(super) type HeldName = [u8; NAME_CAP];

/// Trailer fields never forwarded (lowercase; compared case-insensitively).
const DENIED_TRAILERS: [&[u8]; 30] = [
    b"content-length",
    b"transfer-encoding",
    b"trailer",
    b"host",
    b"cache-control",
    b"expect",
    b"max-forwards",
    b"pragma",
    b"range",
    b"te",
    b"authorization",
    b"proxy-authorization",
    b"www-authenticate",
    b"proxy-authenticate",
    b"cookie",
    b"set-cookie",
    b"age",
    b"date",
    b"expires",
    b"location",
    b"retry-after",
    b"vary",
    b"warning",
    b"content-encoding",
    b"content-type",
    b"content-range",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"upgrade",
];
/// Families of trailer fields never forwarded: conditionals and spoke's own.
const DENIED_PREFIXES: [&[u8]; 2] = [b"if-", b"l5d-"];

/// Where canonical framing goes: the pipe's buffer, or nowhere (a decoder that only
/// delimits, or one that drops the framing for an HTTP/1.0 client).
pub(super) trait FrameOut {
    fn put(&mut self, bytes: &[u8]);
}

impl FrameOut for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Drops the framing.
pub(super) struct Discard;

impl FrameOut for Discard {
    fn put(&mut self, _: &[u8]) {}
}

/// State of the chunked decoder between bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chunk {
    /// In a chunk-size line, `line` bytes into it, at `at` in its grammar.
    Line {
        size: u64,
        /// Significant digits of `size` so far (leading zeros do not count).
        digits: u8,
        line: u16,
        at: At,
    },
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    TrailerStart {
        total: u16,
    },
    TrailerName {
        total: u16,
        name: Name,
    },
    TrailerValue {
        total: u16,
        keep: bool,
        /// A byte other than whitespace has been seen.
        started: bool,
    },
    TrailerLf {
        total: u16,
        keep: bool,
    },
    FinalLf {
        total: u16,
    },
}

impl Chunk {
    /// Before the first chunk-size line, and after each chunk's CRLF.
    pub(super) const START: Chunk = Chunk::Line {
        size: 0,
        digits: 0,
        line: 0,
        at: At::Digits,
    };
}

/// Position within a chunk-size line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum At {
    /// In the size (`line == 0`: nothing yet).
    Digits,
    /// After whitespace following the size or a value: only `;` (or more BWS) may follow.
    Bws,
    /// After `;`: BWS, then an extension name.
    NameStart,
    Name,
    /// After whitespace following a name: `=` or `;`.
    AfterName,
    /// After `=`: BWS, then a token or a quoted string.
    ValueStart,
    Token,
    Quoted,
    /// After a backslash in a quoted string.
    QuotedPair,
    /// After the closing quote.
    Closed,
}

/// A trailer field name being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Name {
    /// Held back (in a [`HeldName`]) until the colon decides.
    Held { len: u8 },
    /// Too long to be denied by name: already passed on.
    Keep,
    /// Too long, but denied by its first bytes.
    Drop,
}

/// Runs the chunked state machine over `input`, skipping chunk data in bulk: the bytes
/// consumed and the next state, or `None` once the final CRLF is consumed. Framing goes to
/// `out` in canonical form; chunk data does not (a caller forwarding verbatim passes
/// [`Discard`]).
pub(super) fn feed(
    mut chunk: Chunk,
    input: &[u8],
    out: &mut impl FrameOut,
    held: &mut HeldName,
) -> Result<(usize, Option<Chunk>), BodyError> {
    let mut i = 0;
    loop {
        let (framing, next) = skip_framing(chunk, &input[i..], out, held)?;
        i += framing;
        match next {
            Some(Chunk::Data { remaining }) if i < input.len() => {
                let (taken, after) = take_data(remaining, input.len() - i);
                i += taken;
                chunk = after;
            }
            next => return Ok((i, next)),
        }
    }
}

/// Up to `available` bytes of a chunk with `remaining` bytes of data left: how many, and
/// the state after them.
pub(super) fn take_data(remaining: u64, available: usize) -> (usize, Chunk) {
    let take = remaining.min(available as u64);
    let after = match remaining - take {
        0 => Chunk::DataCr,
        remaining => Chunk::Data { remaining },
    };
    (take as usize, after)
}

/// Runs the state machine over framing bytes only: stops where chunk data starts (or at
/// the end of the input, or of the body: `None`), with the canonical framing for the bytes
/// consumed appended to `out`.
pub(super) fn skip_framing(
    mut chunk: Chunk,
    input: &[u8],
    out: &mut impl FrameOut,
    held: &mut HeldName,
) -> Result<(usize, Option<Chunk>), BodyError> {
    let mut i = 0;
    while i < input.len() && !matches!(chunk, Chunk::Data { .. }) {
        let b = input[i];
        i += 1;
        match step(chunk, b, out, held)? {
            Some(next) => chunk = next,
            None => return Ok((i, None)),
        }
    }
    Ok((i, Some(chunk)))
}

/// One framing byte (never called in `Data`). `None` means the body just ended.
///
/// Inlined into the byte loop so the state stays in registers: called, it went through
/// memory for every byte, and the bench in `proxy/pipe.rs` ran chunked bodies 8x slower.
#[inline(always)]
fn step(
    chunk: Chunk,
    b: u8,
    out: &mut impl FrameOut,
    held: &mut HeldName,
) -> Result<Option<Chunk>, BodyError> {
    let next = match chunk {
        Chunk::Line {
            size,
            digits,
            line,
            at,
        } => return line_byte(size, digits, line, at, b).map(Some),
        Chunk::SizeLf { size } => match b {
            b'\n' => {
                push_size_line(out, size);
                if size == 0 {
                    Chunk::TrailerStart { total: 0 }
                } else {
                    Chunk::Data { remaining: size }
                }
            }
            _ => return Err(BodyError::MissingCrlf),
        },
        Chunk::Data { .. } => chunk,
        Chunk::DataCr => match b {
            b'\r' => Chunk::DataLf,
            b'\n' => return Err(BodyError::BareLf),
            _ => return Err(BodyError::MissingCrlf),
        },
        Chunk::DataLf => match b {
            b'\n' => {
                out.put(b"\r\n");
                Chunk::START
            }
            _ => return Err(BodyError::MissingCrlf),
        },
        Chunk::TrailerStart { total } => {
            let total = trailer_byte(total)?;
            match b {
                b'\r' => Chunk::FinalLf { total },
                b'\n' => return Err(BodyError::BareLf),
                _ if super::super::is_tchar(b) => {
                    held[0] = b;
                    Chunk::TrailerName {
                        total,
                        name: Name::Held { len: 1 },
                    }
                }
                _ => return Err(BodyError::InvalidTrailer),
            }
        }
        Chunk::TrailerName { total, name } => {
            let total = trailer_byte(total)?;
            match b {
                b':' => {
                    let keep = match name {
                        Name::Held { len } => {
                            let name = &held[..usize::from(len)];
                            let keep = trailer_allowed(name);
                            if keep {
                                out.put(name);
                            }
                            keep
                        }
                        Name::Keep => true,
                        Name::Drop => false,
                    };
                    if keep {
                        // The space comes with the value's first byte: an empty value
                        // is written `name:`.
                        out.put(b":");
                    }
                    Chunk::TrailerValue {
                        total,
                        keep,
                        started: false,
                    }
                }
                _ if super::super::is_tchar(b) => Chunk::TrailerName {
                    total,
                    name: name_byte(name, b, out, held),
                },
                b'\n' => return Err(BodyError::BareLf),
                _ => return Err(BodyError::InvalidTrailer),
            }
        }
        Chunk::TrailerValue {
            total,
            keep,
            started,
        } => {
            let total = trailer_byte(total)?;
            match b {
                b'\r' => Chunk::TrailerLf { total, keep },
                b'\n' => return Err(BodyError::BareLf),
                b' ' | b'\t' if !started => chunk_value(total, keep, false),
                _ if b == b'\t' || !is_ctl(b) => {
                    if keep && !started {
                        out.put(&[b' ', b]);
                    } else if keep {
                        out.put(&[b]);
                    }
                    chunk_value(total, keep, true)
                }
                _ => return Err(BodyError::InvalidTrailer),
            }
        }
        Chunk::TrailerLf { total, keep } => match b {
            b'\n' => {
                if keep {
                    out.put(b"\r\n");
                }
                Chunk::TrailerStart {
                    total: trailer_byte(total)?,
                }
            }
            _ => return Err(BodyError::MissingCrlf),
        },
        Chunk::FinalLf { total } => match b {
            b'\n' => {
                trailer_byte(total)?;
                out.put(b"\r\n");
                return Ok(None);
            }
            _ => return Err(BodyError::MissingCrlf),
        },
    };
    Ok(Some(next))
}

fn chunk_value(total: u16, keep: bool, started: bool) -> Chunk {
    Chunk::TrailerValue {
        total,
        keep,
        started,
    }
}

/// One byte of a chunk-size line (see the grammar in the module header).
#[inline(always)]
fn line_byte(size: u64, digits: u8, line: u16, at: At, b: u8) -> Result<Chunk, BodyError> {
    if b == b'\n' {
        return Err(BodyError::BareLf);
    }
    if b == b'\r' {
        return match at {
            At::Digits if line > 0 => Ok(Chunk::SizeLf { size }),
            At::Name | At::Token | At::Closed => Ok(Chunk::SizeLf { size }),
            At::Digits => Err(BodyError::InvalidChunkSize),
            _ => Err(BodyError::InvalidChunkExtension),
        };
    }
    if usize::from(line) >= MAX_CHUNK_LINE_BYTES {
        return Err(BodyError::ChunkLineTooLong);
    }
    let (mut size, mut digits) = (size, digits);
    let ws = b == b' ' || b == b'\t';
    let tchar = super::super::is_tchar(b);
    let at = match at {
        At::Digits => match hex_value(b) {
            Some(d) => {
                if size != 0 || d != 0 {
                    if digits >= MAX_SIZE_DIGITS {
                        return Err(BodyError::ChunkSizeTooLong);
                    }
                    digits += 1;
                    size = (size << 4) | u64::from(d);
                }
                At::Digits
            }
            None if line == 0 => return Err(BodyError::InvalidChunkSize),
            None if ws => At::Bws,
            None if b == b';' => At::NameStart,
            None => return Err(BodyError::InvalidChunkSize),
        },
        At::Bws if ws => At::Bws,
        At::Bws | At::AfterName if b == b';' => At::NameStart,
        At::NameStart | At::ValueStart if ws => at,
        At::NameStart | At::Name if tchar => At::Name,
        At::Name | At::Token | At::Closed if b == b';' => At::NameStart,
        At::Name | At::AfterName if b == b'=' => At::ValueStart,
        At::Name | At::AfterName if ws => At::AfterName,
        At::ValueStart if b == b'"' => At::Quoted,
        At::ValueStart | At::Token if tchar => At::Token,
        At::Token | At::Closed if ws => At::Bws,
        At::Quoted => match b {
            b'"' => At::Closed,
            b'\\' => At::QuotedPair,
            _ if b == b'\t' || !is_ctl(b) => At::Quoted,
            _ => return Err(BodyError::InvalidChunkExtension),
        },
        At::QuotedPair if b == b'\t' || !is_ctl(b) => At::Quoted,
        _ => return Err(BodyError::InvalidChunkExtension),
    };
    // Nothing is written until the line is whole: the canonical line comes at its LF.
    Ok(Chunk::Line {
        size,
        digits,
        line: line + 1,
        at,
    })
}

/// One more byte of a trailer name: held, passed on, or dropped.
fn name_byte(name: Name, b: u8, out: &mut impl FrameOut, held: &mut HeldName) -> Name {
    match name {
        Name::Held { len } if usize::from(len) < NAME_CAP => {
            held[usize::from(len)] = b;
            Name::Held { len: len + 1 }
        }
        // Longer than any denied name: only a denied family can still drop it.
        Name::Held { .. } => {
            if DENIED_PREFIXES
                .iter()
                .any(|p| starts_with_ignore_case(held, p))
            {
                Name::Drop
            } else {
                out.put(held);
                out.put(&[b]);
                Name::Keep
            }
        }
        Name::Keep => {
            out.put(&[b]);
            Name::Keep
        }
        Name::Drop => Name::Drop,
    }
}

/// Whether a trailer field called `name` is passed on (the module header has the list).
pub(super) fn trailer_allowed(name: &[u8]) -> bool {
    !DENIED_TRAILERS
        .iter()
        .any(|denied| denied.eq_ignore_ascii_case(name))
        && !DENIED_PREFIXES
            .iter()
            .any(|p| starts_with_ignore_case(name, p))
}

fn starts_with_ignore_case(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Appends `<size in hex>\r\n`.
fn push_size_line(out: &mut impl FrameOut, mut size: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 18];
    buf[16] = b'\r';
    buf[17] = b'\n';
    let mut i = 16;
    loop {
        i -= 1;
        buf[i] = HEX[(size & 0xf) as usize];
        size >>= 4;
        if size == 0 {
            break;
        }
    }
    out.put(&buf[i..]);
}

/// Counts one more trailer byte against [`MAX_TRAILER_BYTES`].
fn trailer_byte(total: u16) -> Result<u16, BodyError> {
    if usize::from(total) >= MAX_TRAILER_BYTES {
        Err(BodyError::TrailersTooLarge)
    } else {
        Ok(total + 1)
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_ctl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_lines_are_lowercase_hex_without_leading_zeros() {
        for (size, want) in [
            (0, &b"0\r\n"[..]),
            (5, b"5\r\n"),
            (0xab, b"ab\r\n"),
            (0x1000, b"1000\r\n"),
            (u64::MAX, b"ffffffffffffffff\r\n"),
        ] {
            let mut out = Vec::new();
            push_size_line(&mut out, size);
            assert_eq!(out, want, "{size:x}");
        }
    }

    #[test]
    fn the_trailer_deny_list() {
        for name in DENIED_TRAILERS {
            assert!(name.len() < NAME_CAP, "{:?} fits the held name", name);
            assert!(!trailer_allowed(name));
            assert!(!trailer_allowed(&name.to_ascii_uppercase()));
        }
        for name in [&b"if-match"[..], b"If-Range", b"l5d-dst-override", b"L5D-x"] {
            assert!(
                !trailer_allowed(name),
                "{:?}",
                String::from_utf8_lossy(name)
            );
        }
        for name in [
            &b"grpc-status"[..],
            b"grpc-message",
            b"x-checksum",
            b"hosts",
            b"te-x",
            b"x-if-",
            b"l5d",
            b"if",
            b"content-md",
        ] {
            assert!(trailer_allowed(name), "{:?}", String::from_utf8_lossy(name));
        }
    }

    #[test]
    fn nothing_of_a_size_line_is_written_before_its_lf() {
        let mut out = Vec::new();
        let mut held = HeldName::default();
        let mut chunk = Chunk::START;
        for &b in b"0005 ; a = \"b\" ;c\r" {
            chunk = step(chunk, b, &mut out, &mut held)
                .expect("valid")
                .expect("not done");
            assert!(out.is_empty());
        }
        assert_eq!(chunk, Chunk::SizeLf { size: 5 });
        let chunk = step(chunk, b'\n', &mut out, &mut held).expect("valid");
        assert_eq!(chunk, Some(Chunk::Data { remaining: 5 }));
        assert_eq!(out, b"5\r\n");
    }
}
