//! Where a pass-through message body ends, and how its framing goes on: `BodyDecoder` is
//! fed the bytes that follow a head and says how many of them belong to the body, so the
//! connection can forward exactly those and keep the rest for the next pipelined message.
//!
//! Event-loop thread, pure; no allocation (framing written out goes into the caller's
//! buffer). The framing comes from the parsed head (`request.rs` / `response.rs`).
//!
//! Three ways to walk a body, all with the same validation:
//! - [`BodyDecoder::feed`]: how many bytes belong to the body, to forward verbatim. The
//!   pipe uses it for Content-Length and close-delimited bodies, which have no framing;
//!   tests and devtools use it to delimit chunked bodies too.
//! - [`BodyDecoder::feed_canonical`]: for a chunked body, tells framing from chunk data and
//!   writes the framing again in canonical form, so the recipient never sees chunk lines
//!   as the sender wrote them (a lenient parser behind spoke might read odd ones
//!   differently); chunk data itself is passed on from the read buffer, uncopied.
//! - [`BodyDecoder::feed_payload`]: the same, dropping the framing altogether (for an
//!   HTTP/1.0 client, which knows no transfer coding).
//!
//! Chunked bodies (RFC 9112 section 7.1) run through a byte-level state machine, except for
//! chunk data, which is skipped in bulk:
//!
//! ```text
//!  Line --hex / BWS ";" ext--> Line --CR--> SizeLf --LF--> Data(n) --n bytes--> DataCr
//!  DataCr --CR--> DataLf --LF--> Line          (size 0: SizeLf --LF--> TrailerStart)
//!  TrailerStart --CR--> FinalLf --LF--> Done
//!  TrailerStart --tchar--> TrailerName --':'--> TrailerValue --CR--> TrailerLf --LF--> (again)
//! ```
//!
//! The grammar accepted, the canonical form written and the trailer fields dropped are in
//! `body/chunked.rs`. Bounds: 16 significant hex digits (leading zeros are fine),
//! [`MAX_CHUNK_LINE_BYTES`] per size line with its extensions, [`MAX_TRAILER_BYTES`] for
//! the whole trailer section; a bare LF anywhere in the framing is an error, as is anything
//! but CRLF after chunk data.

mod chunked;

use std::fmt;

use self::chunked::{Chunk, Discard, FrameOut, HeldName};
use super::BodyFraming;

pub use self::chunked::{MAX_CHUNK_LINE_BYTES, MAX_TRAILER_BYTES};

/// Result of one [`BodyDecoder::feed_payload`] or [`BodyDecoder::feed_canonical`]: the
/// input starts with `framing` bytes to drop, then `payload` bytes of content to pass on.
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
/// response body error means 502, or the response is cut short (the client connection
/// closes) once part of it went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// A chunk-size line that does not start with a hex digit, or has junk after it.
    InvalidChunkSize,
    /// More than 16 significant hex digits in a chunk size: it does not fit in 64 bits.
    ChunkSizeTooLong,
    /// A chunk-size line longer than [`MAX_CHUNK_LINE_BYTES`].
    ChunkLineTooLong,
    /// A chunk extension that breaks the grammar: no name, a name or value that is not a
    /// token or quoted string, whitespace where none may be, a control byte.
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
    /// A trailer name being read (chunked bodies only).
    held: HeldName,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Length { remaining: u64 },
    UntilEof,
    Chunked(Chunk),
    Done,
    Failed(BodyError),
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing` (`None` and `ContentLength(0)` are complete
    /// at once).
    pub fn new(framing: BodyFraming) -> BodyDecoder {
        let state = match framing {
            BodyFraming::None | BodyFraming::ContentLength(0) => State::Done,
            BodyFraming::ContentLength(n) => State::Length { remaining: n },
            BodyFraming::Chunked => State::Chunked(Chunk::START),
            BodyFraming::CloseDelimited => State::UntilEof,
        };
        BodyDecoder {
            state,
            held: HeldName::default(),
        }
    }

    /// Whether the body is chunked and not finished yet: it has framing for
    /// [`BodyDecoder::feed_canonical`] to rewrite.
    pub fn is_chunked(&self) -> bool {
        matches!(self.state, State::Chunked(_))
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
            State::Chunked(chunk) => {
                match chunked::feed(chunk, input, &mut Discard, &mut self.held) {
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
                    Err(e) => self.fail(e),
                }
            }
        }
    }

    /// Like [`BodyDecoder::feed`], but tells framing from content, for a recipient that
    /// cannot take chunked framing (an HTTP/1.0 client): chunk-size lines, chunk CRLFs
    /// and the trailer section are framing; chunk data is payload. Stops at the end of
    /// the first run of payload, so the caller can pass it on before dropping the framing
    /// after it. A body that is not chunked is all payload.
    pub fn feed_payload(&mut self, input: &[u8]) -> Result<Payload, BodyError> {
        self.payload_into(input, &mut Discard)
    }

    /// [`BodyDecoder::feed_payload`] for a recipient that gets the body chunked: the
    /// framing dropped from the input is replaced by its canonical form, appended to `out`
    /// (the caller writes `out`, then the payload). Everything appended is final, even if
    /// the body breaks later. A body that is not chunked is all payload, and `out` stays
    /// as it is.
    pub fn feed_canonical(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Payload, BodyError> {
        self.payload_into(input, out)
    }

    fn payload_into(
        &mut self,
        input: &[u8],
        out: &mut impl FrameOut,
    ) -> Result<Payload, BodyError> {
        let State::Chunked(chunk) = self.state else {
            let p = self.feed(input)?;
            return Ok(Payload {
                framing: 0,
                payload: p.consumed,
                done: p.done,
            });
        };
        let framing = match chunked::skip_framing(chunk, input, out, &mut self.held) {
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
            Err(e) => return self.fail(e),
        };
        let mut payload = 0;
        if let State::Chunked(Chunk::Data { remaining }) = self.state {
            let (taken, after) = chunked::take_data(remaining, input.len() - framing);
            payload = taken;
            self.state = State::Chunked(after);
        }
        Ok(Payload {
            framing,
            payload,
            done: false,
        })
    }

    fn fail<T>(&mut self, e: BodyError) -> Result<T, BodyError> {
        self.state = State::Failed(e);
        Err(e)
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
            State::Length { .. } | State::Chunked(_) => self.fail(BodyError::Truncated),
        }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
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
        // Leading zeros do not count against the 16 digits, only against the line.
        let mut dec = chunked();
        assert_eq!(
            dec.feed(b"00000000000000005\r\nhello\r\n0000\r\n\r\n"),
            Ok(Progress {
                consumed: 34,
                done: true
            })
        );
        let mut zeros = vec![b'0'; MAX_CHUNK_LINE_BYTES - 16];
        zeros.extend_from_slice(b"ffffffffffffffff\r\n");
        assert_eq!(chunked().feed(&zeros).map(|p| p.consumed), Ok(zeros.len()));
        rejects(
            b"00000000000000001ffffffffffffffff\r\n",
            BodyError::ChunkSizeTooLong,
        );
        let mut zeros = vec![b'0'; MAX_CHUNK_LINE_BYTES];
        zeros.extend_from_slice(b"5\r\n");
        rejects(&zeros, BodyError::ChunkLineTooLong);
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
        rejects(b"5\x00\r\n", BodyError::InvalidChunkSize);
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

    #[test]
    fn chunk_extensions_follow_the_grammar() {
        // BWS around `;` and `=`, token and quoted-string values, several extensions.
        for line in [
            &b"5;a"[..],
            b"5;a=b",
            b"5 ;a",
            b"5\t; a = b ;c",
            b"5;a=\"\"",
            b"5;a=\"q \\\" \\\\ \t\x80\";b=1",
            b"5;a=\"x\" ;b",
            b"5;!#$%&'*+-.^_`|~09AZaz=!#$%&'*+-.^_`|~",
        ] {
            let body = [line, b"\r\nhello\r\n0\r\n\r\n"].concat();
            assert_eq!(
                chunked().feed(&body),
                Ok(Progress {
                    consumed: body.len(),
                    done: true
                }),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        for line in [
            // Whitespace with nothing after it.
            &b"5 "[..],
            b"5\t",
            b"5;a ",
            b"5;a=b ",
            b"5;a=\"b\" ",
            // No name, or no value.
            b"5;",
            b"5; ",
            b"5;;a",
            b"5;=b",
            b"5;a=",
            b"5;a= ",
            b"5;a=;b",
            // Not a token, or junk after one.
            b"5;bad[=x",
            b"5;a=b[",
            b"5;a b",
            b"5;a=b c",
            b"5;a=b\"c\"",
            b"5;a=\"b\"c",
            b"5 5",
            // Quoted strings: unterminated, control bytes, a quoted CR.
            b"5;a=\"b",
            b"5;a=\"\x01\"",
            b"5;a=\"\x7f\"",
            b"5;a=\"\\\x01\"",
            b"5;a=\"\\",
        ] {
            let body = [line, b"\r\nhello\r\n0\r\n\r\n"].concat();
            assert_eq!(
                chunked().feed(&body),
                Err(BodyError::InvalidChunkExtension),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        // The same bytes broken by a bare LF are that error.
        rejects(b"5;a=\"b\nc\"\r\n", BodyError::BareLf);
    }

    /// Walks `input` the way the pipe does, the bytes arriving in pieces cut at `cuts`:
    /// the canonical framing and the payload in the order they go out, where the body
    /// ended, and whether it did.
    fn canonical_of(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize, bool), BodyError> {
        let mut dec = chunked();
        let mut ends = cuts.iter().copied().chain(std::iter::once(input.len()));
        let (mut out, mut pos, mut avail) = (Vec::new(), 0, ends.next().unwrap_or(0));
        loop {
            let p = dec.feed_canonical(&input[pos..avail], &mut out)?;
            pos += p.framing;
            out.extend_from_slice(&input[pos..pos + p.payload]);
            pos += p.payload;
            if p.done {
                return Ok((out, pos, true));
            }
            if pos == avail {
                match ends.next() {
                    Some(end) => avail = end.max(avail),
                    None => return Ok((out, pos, false)),
                }
            }
        }
    }

    /// BODY as it goes on: sizes in lowercase hex, no extensions, trailers `name: value`.
    const CANONICAL: &[u8] = b"5\r\nhello\r\na\r\n0123456789\r\n0\r\nx-sum: 12\r\nY:\r\n\r\n";

    #[test]
    fn canonical_framing_whatever_the_cuts() {
        let mut input = BODY.to_vec();
        input.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        let want = Ok((CANONICAL.to_vec(), BODY.len(), true));
        assert_eq!(canonical_of(&input, &[]), want);
        for a in 0..=input.len() {
            assert_eq!(canonical_of(&input, &[a]), want, "cut at {a}");
            for b in a..=input.len() {
                assert_eq!(canonical_of(&input, &[a, b]), want, "cuts {a},{b}");
            }
        }
        // Already canonical: unchanged.
        assert_eq!(
            canonical_of(CANONICAL, &[]),
            Ok((CANONICAL.to_vec(), CANONICAL.len(), true))
        );
        // A body that is not chunked is all payload, with nothing written for it.
        let mut dec = BodyDecoder::new(BodyFraming::ContentLength(3));
        let mut out = Vec::new();
        let p = dec.feed_canonical(b"abcdef", &mut out).expect("valid");
        assert_eq!((p.framing, p.payload, p.done, out.len()), (0, 3, true, 0));
    }

    #[test]
    fn canonical_size_lines() {
        for (line, want) in [
            (&b"00000000000000000000005"[..], &b"5"[..]),
            (b"0A", b"a"),
            (b"FfFf;x=\"y\"", b"ffff"),
            (b"0001000 ; a = b", b"1000"),
        ] {
            let size = usize::from_str_radix(std::str::from_utf8(want).unwrap(), 16).unwrap();
            let body = [line, b"\r\n", &vec![b'd'; size], b"\r\n0000\r\n\r\n"].concat();
            let (out, end, done) = canonical_of(&body, &[]).expect("valid");
            let canonical = [want, b"\r\n", &vec![b'd'; size], b"\r\n0\r\n\r\n"].concat();
            assert_eq!((end, done), (body.len(), true));
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&canonical)
            );
        }
        // The largest size there is: its line comes out whole before any data.
        let mut out = Vec::new();
        let p = chunked()
            .feed_canonical(b"0000ffffffffffffffff;a\r\nxyz", &mut out)
            .expect("valid");
        assert_eq!((p.framing, p.payload), (24, 3));
        assert_eq!(out, b"ffffffffffffffff\r\n");
    }

    #[test]
    fn trailers_that_must_not_be_trailers_are_dropped() {
        let trailers = "Content-Length: 5\r\nTRANSFER-ENCODING: chunked\r\ntrailer: x\r\n\
            Host: evil\r\nl5d-dst-override: evil:80\r\nL5D-Anything: 1\r\n\
            cache-control: no-cache\r\nexpect: 100-continue\r\nmax-forwards: 1\r\npragma: x\r\n\
            range: bytes=0-1\r\nte: trailers\r\nIf-None-Match: *\r\nif-whatever-comes-later: 1\r\n\
            Authorization: Basic x\r\nproxy-authorization: x\r\nwww-authenticate: x\r\n\
            proxy-authenticate: x\r\ncookie: a=b\r\nset-cookie: a=b\r\nage: 1\r\ndate: x\r\n\
            expires: x\r\nlocation: /\r\nretry-after: 1\r\nvary: *\r\nwarning: x\r\n\
            content-encoding: gzip\r\ncontent-type: text/plain\r\ncontent-range: x\r\n\
            connection: close\r\nkeep-alive: 1\r\nproxy-connection: x\r\nupgrade: h2c\r\n\
            l5d-a-name-longer-than-twenty-bytes: 1\r\n";
        let kept = "grpc-status: 0\r\nX-Checksum:\t abc \r\nhosts: 1\r\ncontent-lengths: 2\r\n\
            a-name-of-twenty-b-x: 20\r\na-name-of-twenty-one: 21\r\n\
            a-name-longer-than-twenty-bytes: 1\r\nte-x: 1\r\nx-if-: 1\r\nempty:\r\nspaces:   \r\n";
        let want = "grpc-status: 0\r\nX-Checksum: abc \r\nhosts: 1\r\ncontent-lengths: 2\r\n\
            a-name-of-twenty-b-x: 20\r\na-name-of-twenty-one: 21\r\n\
            a-name-longer-than-twenty-bytes: 1\r\nte-x: 1\r\nx-if-: 1\r\nempty:\r\nspaces:\r\n";
        // Denied fields between kept ones, too.
        let body = format!("1\r\nz\r\n0\r\n{trailers}{kept}{trailers}\r\n");
        let canonical = format!("1\r\nz\r\n0\r\n{want}\r\n");
        for cut in 0..=body.len() {
            let (out, end, done) = canonical_of(body.as_bytes(), &[cut]).expect("valid");
            assert_eq!((end, done), (body.len(), true), "cut at {cut}");
            assert_eq!(String::from_utf8_lossy(&out), canonical, "cut at {cut}");
        }
    }

    #[test]
    fn a_body_that_breaks_keeps_what_was_written() {
        // Framing written out is final: the error comes after it, and sticks. A trailer
        // name is held back until its colon, so only a whole name is ever written.
        let mut dec = chunked();
        let mut out = Vec::new();
        let p = dec.feed_canonical(b"3\r\nabc", &mut out).expect("valid");
        assert_eq!((p.framing, p.payload), (3, 3));
        let p = dec
            .feed_canonical(b"\r\n0\r\nx-a: 1\r\nx-b", &mut out)
            .expect("valid so far");
        assert_eq!((p.framing, p.payload, p.done), (16, 0, false));
        assert_eq!(out, b"3\r\n\r\n0\r\nx-a: 1\r\n");
        assert_eq!(
            dec.feed_canonical(b": 2\n", &mut out),
            Err(BodyError::BareLf)
        );
        assert_eq!(
            dec.feed_canonical(b"\r\n", &mut out),
            Err(BodyError::BareLf)
        );
        assert_eq!(out, b"3\r\n\r\n0\r\nx-a: 1\r\nx-b: 2");
    }

    #[test]
    fn random_bodies_come_out_canonical() {
        // Random valid bodies (odd sizes, extensions, trailers) cut at random: the
        // output is the same for every cut, a valid body, and its own canonical form.
        let mut rng = fastrand::Rng::with_seed(0xc4a7);
        for _ in 0..300 {
            let mut body = Vec::new();
            let mut payload = Vec::new();
            for _ in 0..rng.usize(0..4) {
                let data: Vec<u8> = (0..rng.usize(1..40)).map(|_| rng.u8(..)).collect();
                let zeros = "0".repeat(rng.usize(0..20));
                let ext = [";", " ; a", ";a=b", ";a=\"x;y\"", ""][rng.usize(0..5)];
                body.extend_from_slice(format!("{zeros}{:X}{ext}\r\n", data.len()).as_bytes());
                body.extend_from_slice(&data);
                body.extend_from_slice(b"\r\n");
                payload.extend_from_slice(&data);
            }
            body.extend_from_slice(b"000\r\n");
            for _ in 0..rng.usize(0..3) {
                let name = ["x-a", "Host", "grpc-message", "l5d-x"][rng.usize(0..4)];
                body.extend_from_slice(format!("{name}: v{}\r\n", rng.u8(..)).as_bytes());
            }
            body.extend_from_slice(b"\r\n");
            let Ok((whole, end, done)) = canonical_of(&body, &[]) else {
                // `;` alone is not an extension: those bodies are refused.
                assert!(body.windows(3).any(|w| w == b";\r\n"));
                continue;
            };
            assert_eq!((end, done), (body.len(), true));
            let mut cuts: Vec<usize> = (0..rng.usize(1..6))
                .map(|_| rng.usize(0..=body.len()))
                .collect();
            cuts.sort_unstable();
            assert_eq!(canonical_of(&body, &cuts), Ok((whole.clone(), end, true)));
            assert_eq!(
                canonical_of(&whole, &[]),
                Ok((whole.clone(), whole.len(), true)),
                "canonical is a fixed point"
            );
            let mut dec = chunked();
            let (mut content, mut rest) = (Vec::new(), &whole[..]);
            while !dec.is_done() {
                let p = dec.feed_payload(rest).expect("valid");
                content.extend_from_slice(&rest[p.framing..p.framing + p.payload]);
                rest = &rest[p.framing + p.payload..];
            }
            assert_eq!(content, payload, "the same content");
        }
    }
}
