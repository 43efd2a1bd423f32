//! Where a pass-through message body ends: `BodyDecoder` is fed the bytes that follow a head
//! and says how many of them belong to the body, so the connection can forward exactly those
//! (verbatim, chunk framing included) and keep the rest for the next pipelined message.
//!
//! Event-loop thread, pure; no allocation. The framing comes from the parsed head
//! (`request.rs` / `response.rs`).
//!
//! Chunked bodies (RFC 9112 section 7.1) run through a byte-level state machine, except for
//! chunk data, which is skipped in bulk:
//!
//! ```text
//!  Size --hex--> Size --CR--> SizeLf --LF--> Data(n) --n bytes--> DataCr --CR--> DataLf
//!    \--';' SP HTAB--> Ext --CR--> SizeLf   (size 0: --LF--> TrailerStart)   DataLf --LF--> Size
//!  TrailerStart --CR--> FinalLf --LF--> Done
//!  TrailerStart --tchar--> TrailerName --':'--> TrailerValue --CR--> TrailerLf --LF--> (again)
//! ```
//!
//! Every state keeps what it needs, so input may be split at any byte. Bounds: at most 16
//! hex digits (so the size cannot overflow), [`MAX_CHUNK_LINE_BYTES`] per size line with its
//! extensions, [`MAX_TRAILER_BYTES`] for the whole trailer section; a bare LF anywhere in
//! the framing is an error, as is anything but CRLF after chunk data.

use std::fmt;

use super::BodyFraming;

/// Longest chunk-size line (size digits plus extensions, without CRLF).
pub const MAX_CHUNK_LINE_BYTES: usize = 4096;
/// Longest trailer section (all trailer lines and the final CRLF).
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
const MAX_SIZE_DIGITS: u8 = 16;

/// Result of one [`BodyDecoder::feed_payload`]: the input starts with `framing` bytes to
/// drop, then `payload` bytes of content to pass on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    pub framing: usize,
    pub payload: usize,
    /// The body is complete; the input after `framing + payload` is the next message.
    pub done: bool,
}

/// Result of one [`BodyDecoder::feed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// How many leading bytes of the input belong to the body: forward them.
    pub consumed: usize,
    /// The body is complete; the input after `consumed` is the next message.
    pub done: bool,
}

/// Why a body's framing was refused. A request body error means 400 to the client; a
/// response body error means the response is cut short (the client connection closes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// A chunk-size line that does not start with a hex digit, or has junk after it.
    InvalidChunkSize,
    /// More than 16 hex digits in a chunk size.
    ChunkSizeTooLong,
    /// A chunk-size line longer than [`MAX_CHUNK_LINE_BYTES`].
    ChunkLineTooLong,
    /// A control byte in a chunk extension, or text after the size without `;`.
    InvalidChunkExtension,
    /// Something other than CRLF where CRLF must be (after chunk data, or a CR alone).
    MissingCrlf,
    /// A line in the chunk framing ended with LF alone.
    BareLf,
    /// A trailer section longer than [`MAX_TRAILER_BYTES`].
    TrailersTooLarge,
    /// A trailer line that is not `name: value`.
    InvalidTrailer,
    /// EOF before the body was complete.
    Truncated,
}

impl BodyError {
    /// Short fixed text for `l5d-proxy-error` and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::InvalidChunkSize => "invalid chunk size",
            BodyError::ChunkSizeTooLong => "chunk size too long",
            BodyError::ChunkLineTooLong => "chunk size line too long",
            BodyError::InvalidChunkExtension => "invalid chunk extension",
            BodyError::MissingCrlf => "missing CRLF in chunked body",
            BodyError::BareLf => "bare LF in chunked body",
            BodyError::TrailersTooLarge => "trailer section too large",
            BodyError::InvalidTrailer => "invalid trailer field",
            BodyError::Truncated => "body truncated",
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for BodyError {}

/// Finds the end of one message body; create one per message from its head's framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Length { remaining: u64 },
    UntilEof,
    Chunked(Chunk),
    Done,
    Failed(BodyError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Size {
        digits: u8,
        size: u64,
    },
    Ext {
        size: u64,
        line: usize,
        semicolon: bool,
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
        total: usize,
    },
    TrailerName {
        total: usize,
    },
    TrailerValue {
        total: usize,
    },
    TrailerLf {
        total: usize,
    },
    FinalLf {
        total: usize,
    },
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing` (`None` and `ContentLength(0)` are complete
    /// at once).
    pub fn new(framing: BodyFraming) -> BodyDecoder {
        let state = match framing {
            BodyFraming::None | BodyFraming::ContentLength(0) => State::Done,
            BodyFraming::ContentLength(n) => State::Length { remaining: n },
            BodyFraming::Chunked => State::Chunked(Chunk::Size { digits: 0, size: 0 }),
            BodyFraming::CloseDelimited => State::UntilEof,
        };
        BodyDecoder { state }
    }

    /// Takes the next bytes after the head (or after what earlier calls consumed). Returns
    /// how many belong to the body and whether it is now complete. After completion every
    /// call returns `consumed: 0, done: true`; after an error, the same error.
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, BodyError> {
        match self.state {
            State::Done => Ok(Progress {
                consumed: 0,
                done: true,
            }),
            State::Failed(e) => Err(e),
            State::UntilEof => Ok(Progress {
                consumed: input.len(),
                done: false,
            }),
            State::Length { remaining } => {
                let take = remaining.min(input.len() as u64);
                let remaining = remaining - take;
                self.state = if remaining == 0 {
                    State::Done
                } else {
                    State::Length { remaining }
                };
                Ok(Progress {
                    consumed: take as usize,
                    done: remaining == 0,
                })
            }
            State::Chunked(chunk) => match feed_chunked(chunk, input) {
                Ok((consumed, Some(chunk))) => {
                    self.state = State::Chunked(chunk);
                    Ok(Progress {
                        consumed,
                        done: false,
                    })
                }
                Ok((consumed, None)) => {
                    self.state = State::Done;
                    Ok(Progress {
                        consumed,
                        done: true,
                    })
                }
                Err(e) => {
                    self.state = State::Failed(e);
                    Err(e)
                }
            },
        }
    }

    /// Like [`BodyDecoder::feed`], but tells framing from content, for a recipient that
    /// cannot take chunked framing (an HTTP/1.0 client): chunk-size lines, chunk CRLFs
    /// and the trailer section are framing; chunk data is payload. Stops at the end of
    /// the first run of payload, so the caller can pass it on before dropping the framing
    /// after it. A body that is not chunked is all payload.
    pub fn feed_payload(&mut self, input: &[u8]) -> Result<Payload, BodyError> {
        let State::Chunked(chunk) = self.state else {
            let p = self.feed(input)?;
            return Ok(Payload {
                framing: 0,
                payload: p.consumed,
                done: p.done,
            });
        };
        let framing = match skip_framing(chunk, input) {
            Ok((framing, Some(chunk))) => {
                self.state = State::Chunked(chunk);
                framing
            }
            Ok((framing, None)) => {
                self.state = State::Done;
                return Ok(Payload {
                    framing,
                    payload: 0,
                    done: true,
                });
            }
            Err(e) => {
                self.state = State::Failed(e);
                return Err(e);
            }
        };
        let mut payload = 0;
        if let State::Chunked(Chunk::Data { remaining }) = self.state {
            let (taken, after) = take_data(remaining, input.len() - framing);
            payload = taken;
            self.state = State::Chunked(after);
        }
        Ok(Payload {
            framing,
            payload,
            done: false,
        })
    }

    /// The peer closed its side. `Ok` if that ends the body cleanly (close-delimited, or
    /// already complete); `Err(Truncated)` if bytes were still owed.
    pub fn finish_eof(&mut self) -> Result<(), BodyError> {
        match self.state {
            State::Done => Ok(()),
            State::UntilEof => {
                self.state = State::Done;
                Ok(())
            }
            State::Failed(e) => Err(e),
            State::Length { .. } | State::Chunked(_) => {
                self.state = State::Failed(BodyError::Truncated);
                Err(BodyError::Truncated)
            }
        }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

/// Runs the chunked state machine over `input`: the bytes consumed and the next state, or
/// `None` once the final CRLF is consumed.
fn feed_chunked(mut chunk: Chunk, input: &[u8]) -> Result<(usize, Option<Chunk>), BodyError> {
    let mut i = 0;
    loop {
        let (framing, next) = skip_framing(chunk, &input[i..])?;
        i += framing;
        match next {
            // Chunk data is skipped in bulk.
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
fn take_data(remaining: u64, available: usize) -> (usize, Chunk) {
    let take = remaining.min(available as u64);
    let after = match remaining - take {
        0 => Chunk::DataCr,
        remaining => Chunk::Data { remaining },
    };
    (take as usize, after)
}

/// Runs the chunked state machine over framing bytes only: stops where chunk data starts
/// (or at the end of the input, or of the body: `None`).
fn skip_framing(mut chunk: Chunk, input: &[u8]) -> Result<(usize, Option<Chunk>), BodyError> {
    let mut i = 0;
    while i < input.len() && !matches!(chunk, Chunk::Data { .. }) {
        let b = input[i];
        i += 1;
        match step(chunk, b)? {
            Some(next) => chunk = next,
            None => return Ok((i, None)),
        }
    }
    Ok((i, Some(chunk)))
}

/// One framing byte (never called in `Data`). `None` means the body just ended.
fn step(chunk: Chunk, b: u8) -> Result<Option<Chunk>, BodyError> {
    let next = match chunk {
        Chunk::Size { digits, size } => match hex_value(b) {
            Some(_) if digits >= MAX_SIZE_DIGITS => return Err(BodyError::ChunkSizeTooLong),
            Some(d) => Chunk::Size {
                digits: digits + 1,
                size: (size << 4) | u64::from(d),
            },
            None if b == b'\n' => return Err(BodyError::BareLf),
            None if digits == 0 => return Err(BodyError::InvalidChunkSize),
            None => match b {
                b'\r' => Chunk::SizeLf { size },
                b';' | b' ' | b'\t' => Chunk::Ext {
                    size,
                    line: usize::from(digits) + 1,
                    semicolon: b == b';',
                },
                _ => return Err(BodyError::InvalidChunkSize),
            },
        },
        Chunk::Ext {
            size,
            line,
            semicolon,
        } => match b {
            b'\r' => Chunk::SizeLf { size },
            b'\n' => return Err(BodyError::BareLf),
            _ if line >= MAX_CHUNK_LINE_BYTES => return Err(BodyError::ChunkLineTooLong),
            b' ' | b'\t' => Chunk::Ext {
                size,
                line: line + 1,
                semicolon,
            },
            b';' => Chunk::Ext {
                size,
                line: line + 1,
                semicolon: true,
            },
            _ if semicolon && !is_ctl(b) => Chunk::Ext {
                size,
                line: line + 1,
                semicolon,
            },
            _ => return Err(BodyError::InvalidChunkExtension),
        },
        Chunk::SizeLf { size } => match b {
            b'\n' if size == 0 => Chunk::TrailerStart { total: 0 },
            b'\n' => Chunk::Data { remaining: size },
            _ => return Err(BodyError::MissingCrlf),
        },
        Chunk::Data { .. } => chunk,
        Chunk::DataCr => match b {
            b'\r' => Chunk::DataLf,
            b'\n' => return Err(BodyError::BareLf),
            _ => return Err(BodyError::MissingCrlf),
        },
        Chunk::DataLf => match b {
            b'\n' => Chunk::Size { digits: 0, size: 0 },
            _ => return Err(BodyError::MissingCrlf),
        },
        Chunk::TrailerStart { total } => {
            let total = trailer_byte(total)?;
            match b {
                b'\r' => Chunk::FinalLf { total },
                b'\n' => return Err(BodyError::BareLf),
                _ if super::is_tchar(b) => Chunk::TrailerName { total },
                _ => return Err(BodyError::InvalidTrailer),
            }
        }
        Chunk::TrailerName { total } => {
            let total = trailer_byte(total)?;
            match b {
                b':' => Chunk::TrailerValue { total },
                _ if super::is_tchar(b) => Chunk::TrailerName { total },
                b'\n' => return Err(BodyError::BareLf),
                _ => return Err(BodyError::InvalidTrailer),
            }
        }
        Chunk::TrailerValue { total } => {
            let total = trailer_byte(total)?;
            match b {
                b'\r' => Chunk::TrailerLf { total },
                b'\n' => return Err(BodyError::BareLf),
                _ if b == b'\t' || !is_ctl(b) => Chunk::TrailerValue { total },
                _ => return Err(BodyError::InvalidTrailer),
            }
        }
        Chunk::TrailerLf { total } => match b {
            b'\n' => Chunk::TrailerStart {
                total: trailer_byte(total)?,
            },
            _ => return Err(BodyError::MissingCrlf),
        },
        Chunk::FinalLf { total } => match b {
            b'\n' => {
                trailer_byte(total)?;
                return Ok(None);
            }
            _ => return Err(BodyError::MissingCrlf),
        },
    };
    Ok(Some(next))
}

/// Counts one more trailer byte against [`MAX_TRAILER_BYTES`].
fn trailer_byte(total: usize) -> Result<usize, BodyError> {
    if total >= MAX_TRAILER_BYTES {
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

    fn chunked() -> BodyDecoder {
        BodyDecoder::new(BodyFraming::Chunked)
    }

    /// Feeds `input` in pieces cut at `cuts`, asserting each piece is consumed whole until
    /// the end; returns the total consumed and whether the body completed.
    #[track_caller]
    fn feed_split(input: &[u8], cuts: &[usize]) -> (usize, bool) {
        let mut dec = chunked();
        let mut total = 0;
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            let piece = &input[start..end];
            let p = dec.feed(piece).expect("valid body");
            total += p.consumed;
            if p.done {
                return (total, true);
            }
            assert_eq!(
                p.consumed,
                piece.len(),
                "an unfinished body takes all input"
            );
            start = end;
        }
        (total, false)
    }

    const BODY: &[u8] =
        b"5;ext=1;q=\"a b\"\r\nhello\r\nA\r\n0123456789\r\n0\r\nx-sum: 12\r\nY:\r\n\r\n";

    /// Payload of `input` (plus what follows the body) fed through `feed_payload` in
    /// pieces of `piece` bytes, the way the response pipe uses it: drop the framing at
    /// the front, pass on the payload, come back with the rest.
    fn payload_of(input: &[u8], piece: usize) -> (Vec<u8>, usize) {
        let mut dec = chunked();
        let (mut out, mut pos, mut avail) = (Vec::new(), 0, 0);
        loop {
            avail = (avail + piece).min(input.len()).max(avail);
            let p = dec.feed_payload(&input[pos..avail]).expect("valid body");
            pos += p.framing;
            out.extend_from_slice(&input[pos..pos + p.payload]);
            pos += p.payload;
            if p.done {
                return (out, pos);
            }
            if p.framing + p.payload == 0 {
                assert!(avail < input.len(), "stuck with all input fed");
                avail += 1;
            }
        }
    }

    #[test]
    fn payload_is_the_chunk_data_whatever_the_cuts() {
        let mut input = BODY.to_vec();
        input.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        for piece in 1..=input.len() {
            let (payload, end) = payload_of(&input, piece);
            assert_eq!(payload, b"hello0123456789", "pieces of {piece}");
            assert_eq!(
                end,
                BODY.len(),
                "the next message is left (pieces of {piece})"
            );
        }
        // A body that is not chunked is all payload.
        let mut dec = BodyDecoder::new(BodyFraming::ContentLength(3));
        let p = dec.feed_payload(b"abcdef").expect("valid");
        assert_eq!((p.framing, p.payload, p.done), (0, 3, true));
        // Broken framing is the same error as `feed` gives.
        let mut dec = chunked();
        assert_eq!(dec.feed_payload(b"5\nhello"), Err(BodyError::BareLf));
        assert_eq!(dec.feed_payload(b""), Err(BodyError::BareLf));
    }

    #[test]
    fn none_and_empty_length_are_done_at_once() {
        for framing in [BodyFraming::None, BodyFraming::ContentLength(0)] {
            let mut dec = BodyDecoder::new(framing);
            assert!(dec.is_done());
            assert_eq!(
                dec.feed(b"GET / HTTP/1.1\r\n"),
                Ok(Progress {
                    consumed: 0,
                    done: true
                })
            );
            assert_eq!(dec.finish_eof(), Ok(()));
        }
    }

    #[test]
    fn content_length_takes_exactly_n() {
        let mut dec = BodyDecoder::new(BodyFraming::ContentLength(5));
        assert_eq!(
            dec.feed(b"he").map(|p| (p.consumed, p.done)),
            Ok((2, false))
        );
        assert_eq!(dec.feed(b"").map(|p| (p.consumed, p.done)), Ok((0, false)));
        assert_eq!(
            dec.feed(b"lloGET /").map(|p| (p.consumed, p.done)),
            Ok((3, true))
        );
        assert_eq!(dec.feed(b"more").map(|p| p.consumed), Ok(0));
    }

    #[test]
    fn content_length_truncated_at_eof() {
        let mut dec = BodyDecoder::new(BodyFraming::ContentLength(5));
        assert!(dec.feed(b"abc").is_ok());
        assert_eq!(dec.finish_eof(), Err(BodyError::Truncated));
        assert_eq!(dec.feed(b"de"), Err(BodyError::Truncated));
    }

    #[test]
    fn close_delimited_takes_all_and_ends_at_eof() {
        let mut dec = BodyDecoder::new(BodyFraming::CloseDelimited);
        assert_eq!(
            dec.feed(b"anything\r\n0\r\n\r\n"),
            Ok(Progress {
                consumed: 15,
                done: false
            })
        );
        assert_eq!(dec.finish_eof(), Ok(()));
        assert!(dec.is_done());
    }

    #[test]
    fn chunked_whole_with_pipelined_rest() {
        let mut input = BODY.to_vec();
        input.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let mut dec = chunked();
        assert_eq!(
            dec.feed(&input),
            Ok(Progress {
                consumed: BODY.len(),
                done: true
            })
        );
        assert_eq!(dec.finish_eof(), Ok(()));
    }

    #[test]
    fn chunked_one_byte_at_a_time() {
        let mut dec = chunked();
        for (i, b) in BODY.iter().enumerate() {
            let p = dec.feed(std::slice::from_ref(b)).expect("valid body");
            assert_eq!(p.consumed, 1, "byte {i}");
            assert_eq!(p.done, i == BODY.len() - 1, "byte {i}");
        }
        assert_eq!(dec.feed(b"x").map(|p| p.consumed), Ok(0));
    }

    #[test]
    fn chunked_split_at_every_boundary() {
        for cut in 0..=BODY.len() {
            assert_eq!(feed_split(BODY, &[cut]), (BODY.len(), true), "cut at {cut}");
        }
        for a in 0..=BODY.len() {
            for b in a..=BODY.len() {
                assert_eq!(
                    feed_split(BODY, &[a, b]),
                    (BODY.len(), true),
                    "cuts {a},{b}"
                );
            }
        }
    }

    #[test]
    fn chunked_random_splits_with_trailing_data() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut input = BODY.to_vec();
        input.extend_from_slice(b"0\r\n\r\n");
        for _ in 0..500 {
            let mut cuts: Vec<usize> = (0..rng.usize(0..8))
                .map(|_| rng.usize(0..=input.len()))
                .collect();
            cuts.sort_unstable();
            assert_eq!(
                feed_split(&input, &cuts),
                (BODY.len(), true),
                "cuts {cuts:?}"
            );
        }
    }

    #[test]
    fn chunked_minimal_and_large_sizes() {
        let mut dec = chunked();
        assert_eq!(
            dec.feed(b"0\r\n\r\n").map(|p| (p.consumed, p.done)),
            Ok((5, true))
        );
        let mut dec = chunked();
        assert_eq!(
            dec.feed(b"ffffffffffffffff\r\nabc").map(|p| p.consumed),
            Ok(21)
        );
        assert_eq!(dec.finish_eof(), Err(BodyError::Truncated));
        let mut dec = chunked();
        assert_eq!(
            dec.feed(b"00000000000000005\r\n"),
            Err(BodyError::ChunkSizeTooLong)
        );
    }

    #[track_caller]
    fn rejects(input: &[u8], expected: BodyError) {
        assert_eq!(
            chunked().feed(input),
            Err(expected),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn chunked_rejections() {
        rejects(b"\r\n", BodyError::InvalidChunkSize);
        rejects(b"g\r\n", BodyError::InvalidChunkSize);
        rejects(b"5x\r\n", BodyError::InvalidChunkSize);
        rejects(b"-5\r\n", BodyError::InvalidChunkSize);
        rejects(b"5\nhello\r\n", BodyError::BareLf);
        rejects(b"5;a\nhello\r\n", BodyError::BareLf);
        rejects(b"5\rhello", BodyError::MissingCrlf);
        rejects(b"5\r\nhelloX\r\n", BodyError::MissingCrlf);
        rejects(b"5\r\nhello\n0\r\n\r\n", BodyError::BareLf);
        rejects(b"5\r\nhello\rX", BodyError::MissingCrlf);
        rejects(b"5 x\r\n", BodyError::InvalidChunkExtension);
        rejects(b"5;a\x01\r\n", BodyError::InvalidChunkExtension);
        rejects(b"0\r\n\n", BodyError::BareLf);
        rejects(b"0\r\n\rX", BodyError::MissingCrlf);
        rejects(b"0\r\n x: 1\r\n\r\n", BodyError::InvalidTrailer);
        rejects(b"0\r\nno-colon\r\n\r\n", BodyError::InvalidTrailer);
        rejects(b"0\r\nx: a\x00b\r\n\r\n", BodyError::InvalidTrailer);
        rejects(b"0\r\nx: 1\n\r\n", BodyError::BareLf);
        rejects(b"0\r\nx: 1\rX", BodyError::MissingCrlf);
    }

    #[test]
    fn chunk_line_limit() {
        let mut line = b"5;".to_vec();
        line.resize(MAX_CHUNK_LINE_BYTES, b'a');
        line.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert_eq!(chunked().feed(&line).map(|p| p.done), Ok(true));
        let mut line = b"5;".to_vec();
        line.resize(MAX_CHUNK_LINE_BYTES + 1, b'a');
        line.extend_from_slice(b"\r\n");
        assert_eq!(chunked().feed(&line), Err(BodyError::ChunkLineTooLong));
    }

    #[test]
    fn trailer_limit() {
        // "x: " + value + CRLF, then the final CRLF: exactly the limit is fine.
        let mut body = b"0\r\nx: ".to_vec();
        let value_len = MAX_TRAILER_BYTES - 3 - 2 - 2;
        body.resize(body.len() + value_len, b'v');
        body.extend_from_slice(b"\r\n\r\n");
        assert_eq!(chunked().feed(&body).map(|p| p.done), Ok(true));
        let mut body = b"0\r\nx: ".to_vec();
        body.resize(body.len() + value_len + 1, b'v');
        body.extend_from_slice(b"\r\n\r\n");
        assert_eq!(chunked().feed(&body), Err(BodyError::TrailersTooLarge));
    }

    #[test]
    fn errors_stick() {
        let mut dec = chunked();
        assert_eq!(dec.feed(b"z"), Err(BodyError::InvalidChunkSize));
        assert_eq!(dec.feed(b"0\r\n\r\n"), Err(BodyError::InvalidChunkSize));
        assert_eq!(dec.finish_eof(), Err(BodyError::InvalidChunkSize));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let alphabet = b"0123456789abcdefABCDEFxyz;: =\"\t\r\n\x00\x7f\xff";
        for _ in 0..5_000 {
            let len = rng.usize(0..64);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.bool() {
                        alphabet[rng.usize(0..alphabet.len())]
                    } else {
                        rng.u8(..)
                    }
                })
                .collect();
            for framing in [
                BodyFraming::Chunked,
                BodyFraming::ContentLength(rng.u64(0..100)),
                BodyFraming::CloseDelimited,
            ] {
                let mut dec = BodyDecoder::new(framing);
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    let n = rng.usize(1..=rest.len());
                    match dec.feed(&rest[..n]) {
                        Ok(p) => {
                            assert!(p.consumed <= n);
                            if p.done {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                    rest = &rest[n..];
                }
                let _ = dec.finish_eof();
            }
        }
    }

    #[test]
    fn error_reasons() {
        assert_eq!(BodyError::BareLf.to_string(), "bare LF in chunked body");
        assert_eq!(BodyError::Truncated.reason(), "body truncated");
    }
}
