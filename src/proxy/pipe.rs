//! One direction of an HTTP/1.1 exchange: a serialized head followed by the
//! body, written to the sink until it would block (event-loop thread; the
//! framing itself is `http1::BodyDecoder`).
//!
//! Body bytes are never copied between buffers: the head and the body bytes
//! that the decoder has vouched for go out together in one vectored write,
//! straight from the read buffer. A Content-Length or close-delimited body goes
//! out exactly as read. A chunked body is re-framed: the decoder splits what
//! was read into [`Run`]s, each the sender's framing (dropped from the read
//! buffer), the canonical framing written for it (`\r\n` ending the last
//! chunk, the next size line, the trailers; kept in a small buffer of the
//! pipe's own) and a stretch of chunk data (left in the read buffer). Up to
//! [`MAX_RUNS`] of them go out in one vectored write, so a read holding many
//! small chunks still costs one write. For an HTTP/1.0 client (`dechunk`) no
//! framing is written at all. What follows the body in the buffer (a pipelined
//! request) is left there.

use std::io::{self, IoSlice, Write};

use super::buffer::Buffer;
use crate::http1::{BodyDecoder, BodyError};

#[derive(Debug)]
pub enum PipeError {
    /// The body's framing is broken.
    Body(BodyError),
    /// Writing to the sink failed.
    Write(io::Error),
}

/// The framing buffer kept between messages is at most this big.
const MAX_SPARE_FRAME: usize = 1024;
/// Runs of a chunked body queued for one write (two slices each).
const MAX_RUNS: usize = 8;

/// A stretch of a chunked body as the pipe sends it: `skip` bytes of the
/// sender's framing to drop from the source, then `frame` bytes of canonical
/// framing from `Pipe::frame`, then `data` bytes of chunk data from the source.
/// Each count is what is left: the front run's `skip` is dropped as soon as it
/// is the front, and `frame` and `data` shrink as they are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Run {
    skip: usize,
    frame: usize,
    data: usize,
}

/// The runs decoded and not yet written, in source order.
#[derive(Debug, Default)]
struct Runs {
    queue: [Run; MAX_RUNS],
    len: usize,
}

impl Runs {
    fn queued(&self) -> &[Run] {
        &self.queue[..self.len]
    }

    fn is_full(&self) -> bool {
        self.len == MAX_RUNS
    }

    /// Source bytes the queued runs span (their skips and data).
    fn covered(&self) -> usize {
        self.queued().iter().map(|r| r.skip + r.data).sum()
    }

    /// Queues `run`; data that continues the last run's (no framing between)
    /// joins it.
    fn push(&mut self, run: Run) {
        match self.queue[..self.len].last_mut() {
            Some(last) if run.skip == 0 && run.frame == 0 => last.data += run.data,
            _ => {
                self.queue[self.len] = run;
                self.len += 1;
            }
        }
    }

    fn pop_front(&mut self) {
        self.queue.copy_within(1..self.len, 0);
        self.len -= 1;
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// How the body's bytes reach the sink.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    /// As read: no body, or one without framing (Content-Length, close-delimited).
    #[default]
    Verbatim,
    /// Chunked, with the framing written again in canonical form.
    Rechunk,
    /// Chunk data only, the framing dropped (for an HTTP/1.0 client).
    Dechunk,
}

/// A chunked body on its way through the pipe.
#[derive(Default)]
struct Rechunk {
    /// Canonical framing of the queued `runs`, from `frame_off` on; its
    /// capacity outlives each message.
    frame: Vec<u8>,
    frame_off: usize,
    runs: Runs,
}

impl Rechunk {
    fn idle(&self) -> bool {
        self.runs.len == 0
    }
}

#[derive(Default)]
pub struct Pipe {
    head: Vec<u8>,
    head_off: usize,
    body: Option<BodyDecoder>,
    mode: Mode,
    /// The state of a chunked body's re-framing: boxed, and made on the
    /// first chunked body only, so a pipe that never sees one (most of them)
    /// stays small; then kept with its buffer for the pipe's next messages.
    chunked: Option<Box<Rechunk>>,
    /// Bytes at the front of the source that belong to a body forwarded as
    /// read.
    ready: usize,
    /// The decoder has seen the end of the body.
    decoded: bool,
    /// Something has been written since `start` (or `rewind`).
    wrote: bool,
    /// Length of the head `start` was given: bytes of `head` past it are body
    /// bytes queued again by `rewind`.
    head_len: usize,
    /// Some body byte has been written since `start` (or `rewind`).
    body_sent: bool,
    active: bool,
    /// A copy of the body bytes written (framing as written, for a chunked
    /// body), kept so the message can be sent again (a retry, or a reused
    /// connection found dead); dropped once it would pass `tap_limit`. The head
    /// needs no copy: `head` keeps it whole.
    tap: Option<Vec<u8>>,
    tap_limit: usize,
}

impl Pipe {
    /// Starts a message: `head` then the body framed by `body` (`None`: no body).
    pub fn start(&mut self, head: Vec<u8>, body: Option<BodyDecoder>) {
        self.head_len = head.len();
        self.body_sent = false;
        self.head = head;
        self.head_off = 0;
        self.clear_frame();
        self.set_framing(body);
        self.ready = 0;
        self.wrote = false;
        self.active = true;
        self.tap = None;
    }

    /// Keeps a copy of the body bytes written, up to `limit` bytes.
    pub fn tap(&mut self, limit: usize) {
        self.tap = Some(Vec::new());
        self.tap_limit = limit;
    }

    /// Starts over on a new connection: what was written is queued again as
    /// head bytes (so it must have been tapped), and the body, if any, goes on
    /// from where the source is. Returns false when the copy is missing.
    pub fn rewind(&mut self) -> bool {
        let Some(body) = self.tap.take() else {
            return false;
        };
        // Body bytes (and chunk framing) go out only after the whole head, so
        // what was written is the head (or a part of it, with no body yet)
        // followed by `body`. Framing not yet written stays queued after it.
        self.head.extend_from_slice(&body);
        self.head_off = 0;
        self.wrote = false;
        self.body_sent = false;
        // What is queued now counts as written again once it goes out.
        self.tap = Some(Vec::new());
        true
    }

    /// Whether a copy of everything written so far is still kept.
    pub fn is_tapped(&self) -> bool {
        self.tap.is_some()
    }

    /// Queues more head bytes (an interim 1xx response before the final one).
    pub fn push_head(&mut self, bytes: &[u8]) {
        if !self.active {
            self.start(Vec::new(), None);
            self.decoded = false;
        }
        self.head.extend_from_slice(bytes);
    }

    /// Sets the body framing after interim heads were queued.
    pub fn set_body(&mut self, head: &[u8], body: Option<BodyDecoder>) {
        self.head.extend_from_slice(head);
        self.set_framing(body);
    }

    /// The buffer the head goes out from, to write a head straight into
    /// before [`Pipe::set_framing`]: its capacity outlives each message.
    pub fn head_buf(&mut self) -> &mut Vec<u8> {
        &mut self.head
    }

    /// [`Pipe::set_body`] for a head already written into [`Pipe::head_buf`].
    pub fn set_framing(&mut self, body: Option<BodyDecoder>) {
        self.decoded = body.is_none();
        self.mode = match &body {
            Some(d) if d.is_chunked() => Mode::Rechunk,
            _ => Mode::Verbatim,
        };
        self.body = body;
        self.active = true;
    }

    /// Gives up the head buffer, emptied, for the next message to reuse
    /// (`None` when it grew past `keep` bytes, which then go back to the
    /// allocator).
    pub fn take_head(&mut self, keep: usize) -> Option<Vec<u8>> {
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        (head.capacity() <= keep).then_some(head)
    }

    /// From here on, the body's chunked framing (size lines, CRLFs, trailers) is dropped
    /// and only the chunk data goes to the sink: the recipient is an HTTP/1.0 client,
    /// whose body ends when the connection closes.
    pub fn dechunk(&mut self) {
        if self.mode == Mode::Rechunk {
            self.mode = Mode::Dechunk;
        }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Everything, head and body, has been written.
    pub fn is_complete(&self) -> bool {
        self.active
            && self.decoded
            && self.ready == 0
            && self.chunked.as_ref().is_none_or(|c| c.idle())
            && self.head_off >= self.head.len()
    }

    /// The whole body has been read from the source (it may not all be
    /// written yet).
    pub fn body_read(&self) -> bool {
        self.decoded
    }

    /// Any byte of this message has reached the sink.
    pub fn wrote_any(&self) -> bool {
        self.wrote
    }

    /// Any byte of this message's body has reached the sink.
    pub fn body_sent(&self) -> bool {
        self.body_sent
    }

    pub fn reset(&mut self) {
        self.head.clear();
        self.head_off = 0;
        self.body = None;
        self.mode = Mode::Verbatim;
        self.clear_frame();
        self.ready = 0;
        self.decoded = false;
        self.wrote = false;
        self.body_sent = false;
        self.active = false;
        self.tap = None;
    }

    fn clear_frame(&mut self) {
        let Some(c) = self.chunked.as_mut() else {
            return;
        };
        // A large trailer section grew it: that memory goes back rather than
        // staying with an idle connection.
        if c.frame.capacity() > MAX_SPARE_FRAME {
            c.frame = Vec::new();
        }
        c.frame.clear();
        c.frame_off = 0;
        c.runs.clear();
    }

    /// The source hit EOF: a close-delimited body ends cleanly, any other
    /// framing was cut short.
    pub fn source_eof(&mut self) -> Result<(), BodyError> {
        match &mut self.body {
            Some(d) if !self.decoded => {
                d.finish_eof()?;
                self.decoded = true;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Moves what it can from `src` to `sink`; `Ok(true)` if anything moved.
    pub fn pump(&mut self, src: &mut Buffer, sink: &mut impl Write) -> Result<bool, PipeError> {
        if !self.active {
            return Ok(false);
        }
        if self.mode != Mode::Verbatim {
            return self.pump_chunked(src, sink);
        }
        let mut progress = false;
        loop {
            match &mut self.body {
                Some(d) if !self.decoded => {
                    let fresh = &src.bytes()[self.ready..];
                    let p = d.feed(fresh).map_err(PipeError::Body)?;
                    self.ready += p.consumed;
                    self.decoded = p.done;
                }
                _ => {}
            }
            let head = &self.head[self.head_off..];
            let body = &src.bytes()[..self.ready];
            if head.is_empty() && body.is_empty() {
                return Ok(progress);
            }
            let n = match written(sink.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]))? {
                Written::Bytes(n) => n,
                Written::Blocked => return Ok(progress),
                Written::Again => continue,
            };
            progress = true;
            self.wrote = true;
            let from_head = n.min(head.len());
            let from_body = n - from_head;
            if let Some(tap) = &mut self.tap {
                if tap.len() + from_body > self.tap_limit {
                    self.tap = None;
                } else {
                    tap.extend_from_slice(&body[..from_body]);
                }
            }
            self.head_off += from_head;
            self.body_sent |= from_body > 0 || self.head_off > self.head_len;
            src.consume(from_body);
            self.ready -= from_body;
        }
    }

    /// [`Pipe::pump`] for a chunked body: decode runs, write them with the
    /// head, account for what went out.
    fn pump_chunked(&mut self, src: &mut Buffer, sink: &mut impl Write) -> Result<bool, PipeError> {
        // Out of the pipe while it works (a pointer move), back at the end.
        let mut ck = self.chunked.take().unwrap_or_default();
        let r = self.pump_runs(&mut ck, src, sink);
        self.chunked = Some(ck);
        r
    }

    fn pump_runs(
        &mut self,
        ck: &mut Rechunk,
        src: &mut Buffer,
        sink: &mut impl Write,
    ) -> Result<bool, PipeError> {
        let mut progress = false;
        loop {
            progress |= self.decode_runs(ck, src)?;
            let result = {
                let mut slices = [IoSlice::new(&[]); 1 + 2 * MAX_RUNS];
                slices[0] = IoSlice::new(&self.head[self.head_off..]);
                let (mut count, mut total) = (1, slices[0].len());
                let (mut f, mut d) = (ck.frame_off, 0);
                for run in ck.runs.queued() {
                    d += run.skip;
                    slices[count] = IoSlice::new(&ck.frame[f..f + run.frame]);
                    slices[count + 1] = IoSlice::new(&src.bytes()[d..d + run.data]);
                    count += 2;
                    total += run.frame + run.data;
                    f += run.frame;
                    d += run.data;
                }
                if total == 0 {
                    return Ok(progress);
                }
                sink.write_vectored(&slices[..count])
            };
            let n = match written(result)? {
                Written::Bytes(n) => n,
                Written::Blocked => return Ok(progress),
                Written::Again => continue,
            };
            progress = true;
            self.wrote = true;
            self.written_runs(ck, n, src);
        }
    }

    /// Decodes what the source holds past the queued runs into more runs, up
    /// to [`MAX_RUNS`]. True if source bytes were dropped (room for more).
    fn decode_runs(&mut self, ck: &mut Rechunk, src: &mut Buffer) -> Result<bool, PipeError> {
        if ck.runs.len == 0 && ck.frame_off == ck.frame.len() {
            ck.frame.clear();
            ck.frame_off = 0;
        }
        let mut progress = false;
        while !self.decoded && !ck.runs.is_full() {
            let Some(d) = &mut self.body else { break };
            let input = &src.bytes()[ck.runs.covered()..];
            if input.is_empty() {
                break;
            }
            let before = ck.frame.len();
            let p = match self.mode {
                Mode::Rechunk => d.feed_canonical(input, &mut ck.frame),
                _ => d.feed_payload(input),
            }
            .map_err(PipeError::Body)?;
            self.decoded = p.done;
            let run = Run {
                skip: p.framing,
                frame: ck.frame.len() - before,
                data: p.payload,
            };
            if run == Run::default() {
                break;
            }
            ck.runs.push(run);
            progress |= settle(ck, src);
        }
        // The tap takes a chunked body a run at a time: room for what has
        // been read, once, rather than a regrowth per chunk.
        if let Some(tap) = self.tap.as_mut().filter(|t| t.capacity() == 0) {
            tap.reserve((ck.frame.len() + src.len()).min(self.tap_limit));
        }
        Ok(progress)
    }

    /// Accounts for `n` bytes written from the head and the queued runs.
    fn written_runs(&mut self, ck: &mut Rechunk, n: usize, src: &mut Buffer) {
        let from_head = n.min(self.head.len() - self.head_off);
        self.head_off += from_head;
        let mut n = n - from_head;
        // Chunk framing is body too: it only ever follows the whole head.
        self.body_sent |= n > 0 || self.head_off > self.head_len;
        if self
            .tap
            .as_ref()
            .is_some_and(|t| t.len() + n > self.tap_limit)
        {
            self.tap = None;
        }
        while n > 0 {
            let front = &mut ck.runs.queue[0];
            let f = n.min(front.frame);
            let d = (n - f).min(front.data);
            front.frame -= f;
            front.data -= d;
            n -= f + d;
            if let Some(tap) = &mut self.tap {
                tap.extend_from_slice(&ck.frame[ck.frame_off..ck.frame_off + f]);
                tap.extend_from_slice(&src.bytes()[..d]);
            }
            ck.frame_off += f;
            src.consume(d);
            settle(ck, src);
        }
    }
}

/// What one write to the sink did.
enum Written {
    Bytes(usize),
    /// The sink would block: wait for its next writable event.
    Blocked,
    /// Interrupted: try again at once.
    Again,
}

fn written(r: io::Result<usize>) -> Result<Written, PipeError> {
    match r {
        Ok(0) => Err(PipeError::Write(io::ErrorKind::WriteZero.into())),
        Ok(n) => Ok(Written::Bytes(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Written::Blocked),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Written::Again),
        Err(e) => Err(PipeError::Write(e)),
    }
}

/// Drops the front run's skip from the source and the runs that are done;
/// true if source bytes were dropped.
fn settle(ck: &mut Rechunk, src: &mut Buffer) -> bool {
    let mut dropped = false;
    while let Some(front) = ck.runs.queue[..ck.runs.len].first_mut() {
        if front.skip > 0 {
            src.consume(front.skip);
            front.skip = 0;
            dropped = true;
        }
        if front.frame > 0 || front.data > 0 {
            break;
        }
        ck.runs.pop_front();
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::BodyFraming;
    use std::io::Cursor;

    /// A sink that takes at most `max` bytes per call, across slices like `writev`.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let before = self.out.len();
            for b in bufs {
                let room = self.max - (self.out.len() - before);
                self.out.extend_from_slice(&b[..b.len().min(room)]);
            }
            Ok(self.out.len() - before)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Sends `input` through a pipe for `HEAD\r\n\r\n` and a chunked body (dechunked
    /// when asked), the input arriving in reads of `piece` bytes and the sink taking
    /// `max` bytes a call: what the sink got, and how much of the input the pipe took
    /// (the rest stays in the source as it was read).
    fn through(input: &[u8], dechunk: bool, piece: usize, max: usize) -> (Vec<u8>, usize) {
        let mut pipe = Pipe::default();
        pipe.set_body(
            b"HEAD\r\n\r\n",
            Some(BodyDecoder::new(BodyFraming::Chunked)),
        );
        if dechunk {
            pipe.dechunk();
        }
        let mut src = Buffer::new(1024);
        let mut sink = Trickle {
            out: Vec::new(),
            max,
        };
        let mut fed = 0;
        while !pipe.is_complete() {
            if fed < input.len() {
                let end = (fed + piece).min(input.len());
                src.fill_from(&mut Cursor::new(&input[fed..end]))
                    .expect("in memory");
                fed = end;
            } else {
                assert!(pipe.pump(&mut src, &mut sink).expect("valid"), "stuck");
                continue;
            }
            pipe.pump(&mut src, &mut sink).expect("valid body");
        }
        let taken = fed - src.len();
        assert_eq!(src.bytes(), &input[taken..fed]);
        (sink.out, taken)
    }

    const BODY: &[u8] =
        b"05;ext=1\r\nhello\r\nA ; b=\"c\"\r\n0123456789\r\n000\r\nX-Sum: 15\r\nHost: x\r\n\r\n";
    const NEXT: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";

    #[test]
    fn dechunked_bodies_lose_their_framing_whatever_the_reads_and_writes() {
        let input = [BODY, NEXT].concat();
        for piece in 1..=input.len() {
            for max in [1, 3, 64] {
                let (out, taken) = through(&input, true, piece, max);
                let what = format!("reads of {piece}, writes of {max}");
                assert_eq!(out, b"HEAD\r\n\r\nhello0123456789", "{what}");
                assert_eq!(taken, BODY.len(), "the next message stays ({what})");
            }
        }
    }

    #[test]
    fn chunked_bodies_go_out_canonical_whatever_the_reads_and_writes() {
        let want: &[u8] = b"HEAD\r\n\r\n5\r\nhello\r\na\r\n0123456789\r\n0\r\nX-Sum: 15\r\n\r\n";
        let input = [BODY, NEXT].concat();
        for piece in 1..=input.len() {
            for max in [1, 2, 3, 7, 64] {
                let (out, taken) = through(&input, false, piece, max);
                let what = format!("reads of {piece}, writes of {max}");
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(want),
                    "{what}"
                );
                assert_eq!(taken, BODY.len(), "the next message stays ({what})");
            }
        }
    }

    #[test]
    fn many_chunks_in_one_read_go_out_in_few_writes() {
        let mut body = Vec::new();
        let mut want = b"H\r\n\r\n".to_vec();
        for i in 0..20u8 {
            body.extend_from_slice(format!("00{:X};i={i}\r\n", i + 1).as_bytes());
            body.extend(std::iter::repeat_n(b'a' + i, usize::from(i) + 1));
            body.extend_from_slice(b"\r\n");
            want.extend_from_slice(format!("{:x}\r\n", i + 1).as_bytes());
            want.extend(std::iter::repeat_n(b'a' + i, usize::from(i) + 1));
            want.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        want.extend_from_slice(b"0\r\n\r\n");
        struct Counting(Vec<u8>, usize);
        impl Write for Counting {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.write_vectored(&[IoSlice::new(buf)])
            }
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                self.1 += 1;
                let before = self.0.len();
                bufs.iter().for_each(|b| self.0.extend_from_slice(b));
                Ok(self.0.len() - before)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut pipe = Pipe::default();
        pipe.set_body(b"H\r\n\r\n", Some(BodyDecoder::new(BodyFraming::Chunked)));
        let mut src = Buffer::new(4096);
        src.fill_from(&mut Cursor::new(&body[..]))
            .expect("in memory");
        let mut sink = Counting(Vec::new(), 0);
        while pipe.pump(&mut src, &mut sink).expect("valid") {}
        assert!(pipe.is_complete() && src.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&sink.0),
            String::from_utf8_lossy(&want)
        );
        // 21 runs (20 chunks, then the last chunk), eight to a write.
        assert_eq!(sink.1, 3);
    }

    /// A random valid chunked body (many small chunks, odd lines, trailers) and its
    /// canonical form, as the decoder gives it in one go.
    fn random_body(rng: &mut fastrand::Rng) -> (Vec<u8>, Vec<u8>) {
        let mut body = Vec::new();
        for _ in 0..rng.usize(0..24) {
            let n = rng.usize(1..12);
            let ext = ["", ";a", " ; a=\"b;c\"", ";x=1;y"][rng.usize(0..4)];
            let zeros = "0".repeat(rng.usize(0..3));
            body.extend_from_slice(format!("{zeros}{n:X}{ext}\r\n").as_bytes());
            body.extend((0..n).map(|_| rng.u8(..)));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n");
        for _ in 0..rng.usize(0..3) {
            let name = ["x-a", "Content-Length", "grpc-status"][rng.usize(0..3)];
            body.extend_from_slice(format!("{name}: {}\r\n", rng.u8(..)).as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        let mut canonical = Vec::new();
        let mut dec = BodyDecoder::new(BodyFraming::Chunked);
        let mut rest = &body[..];
        while !dec.is_done() {
            let p = dec.feed_canonical(rest, &mut canonical).expect("valid");
            canonical.extend_from_slice(&rest[p.framing..p.framing + p.payload]);
            rest = &rest[p.framing + p.payload..];
        }
        (body, canonical)
    }

    #[test]
    fn random_chunked_bodies_through_random_reads_and_writes() {
        let mut rng = fastrand::Rng::with_seed(0x9e7a);
        for _ in 0..400 {
            let (body, canonical) = random_body(&mut rng);
            let input = [&body[..], NEXT].concat();
            let (piece, max) = (rng.usize(1..64), rng.usize(1..96));
            let (out, taken) = through(&input, false, piece, max);
            assert_eq!(out, [&b"HEAD\r\n\r\n"[..], &canonical].concat());
            assert_eq!(taken, body.len());
            let (out, _) = through(&input, true, piece, max);
            let mut content = Vec::new();
            let mut dec = BodyDecoder::new(BodyFraming::Chunked);
            let mut rest = &canonical[..];
            while !dec.is_done() {
                let p = dec.feed_payload(rest).expect("valid");
                content.extend_from_slice(&rest[p.framing..p.framing + p.payload]);
                rest = &rest[p.framing + p.payload..];
            }
            assert_eq!(out, [&b"HEAD\r\n\r\n"[..], &content].concat());

            // Cut off anywhere, rewound, sent again whole.
            let head = b"POST / HTTP/1.1\r\n\r\n";
            let whole = [&head[..], &canonical].concat();
            let cut = rng.usize(0..=whole.len());
            let mut pipe = Pipe::default();
            pipe.start(head.to_vec(), Some(BodyDecoder::new(BodyFraming::Chunked)));
            pipe.tap(4096);
            let mut src = Buffer::new(4096);
            src.fill_from(&mut Cursor::new(&body[..]))
                .expect("in memory");
            assert_eq!(send(&mut pipe, &mut src, cut), &whole[..cut]);
            assert!(pipe.rewind(), "tapped");
            assert_eq!(send(&mut pipe, &mut src, usize::MAX), whole, "cut at {cut}");
            assert!(pipe.is_complete());
        }
    }

    #[test]
    fn content_length_bodies_go_out_as_read() {
        // Chunk-like bytes in a Content-Length body are content.
        let body = b"5;x\r\nhello\r\n0\r\nHost: x\r\n\r\n";
        let mut pipe = Pipe::default();
        pipe.set_body(
            b"H\r\n\r\n",
            Some(BodyDecoder::new(BodyFraming::ContentLength(
                body.len() as u64
            ))),
        );
        let mut src = Buffer::new(1024);
        src.fill_from(&mut Cursor::new(&body[..]))
            .expect("in memory");
        let mut sink = Trickle {
            out: Vec::new(),
            max: 5,
        };
        while pipe.pump(&mut src, &mut sink).expect("valid") {}
        assert!(pipe.is_complete());
        assert_eq!(sink.out, [&b"H\r\n\r\n"[..], body].concat());
    }

    /// What `pipe` writes into a sink that takes `cap` bytes in all (3 per
    /// call), then would block: a connection that dies after `cap` bytes.
    fn send(pipe: &mut Pipe, src: &mut Buffer, cap: usize) -> Vec<u8> {
        struct Capped(Trickle, usize);
        impl Write for Capped {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.write_vectored(&[IoSlice::new(buf)])
            }
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                let left = self.1 - self.0.out.len();
                if left == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                self.0.max = left.min(3);
                self.0.write_vectored(bufs)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sink = Capped(
            Trickle {
                out: Vec::new(),
                max: 3,
            },
            cap,
        );
        while pipe.pump(src, &mut sink).expect("valid") {}
        sink.0.out
    }

    /// A tapped pipe sending `head` and the 6-byte body `abcdef`, which its
    /// source buffer holds.
    fn tapped_post(head: &[u8]) -> (Pipe, Buffer) {
        let mut pipe = Pipe::default();
        let body = BodyDecoder::new(BodyFraming::ContentLength(6));
        pipe.start(head.to_vec(), Some(body));
        pipe.tap(64);
        let mut src = Buffer::new(64);
        src.fill_from(&mut Cursor::new(&b"abcdef"[..]))
            .expect("in memory");
        (pipe, src)
    }

    #[test]
    fn rewind_queues_again_exactly_what_was_written() {
        let head = b"POST / HTTP/1.1\r\ncontent-length: 6\r\n\r\n";
        let whole = [&head[..], b"abcdef"].concat();
        // Cut after part of the head, after the head, and inside the body.
        for cut in [5, head.len(), head.len() + 2] {
            let (mut pipe, mut src) = tapped_post(head);
            let first = send(&mut pipe, &mut src, cut);
            assert_eq!(first, &whole[..cut]);
            // The connection died: everything goes again, twice over.
            for _ in 0..2 {
                assert!(pipe.rewind(), "tapped");
                assert_eq!(send(&mut pipe, &mut src, usize::MAX), whole, "cut at {cut}");
            }
        }
    }

    #[test]
    fn body_sent_says_whether_a_body_byte_went_out_before_and_after_a_rewind() {
        let head = b"POST / HTTP/1.1\r\ncontent-length: 6\r\n\r\n";
        for (cut, sent) in [
            (0, false),
            (5, false),
            (head.len(), false),
            (head.len() + 1, true),
        ] {
            let (mut pipe, mut src) = tapped_post(head);
            send(&mut pipe, &mut src, cut);
            assert_eq!(pipe.wrote_any(), cut > 0, "cut at {cut}");
            assert_eq!(pipe.body_sent(), sent, "cut at {cut}");
            // Rewound, the body bytes written go out again inside the head
            // buffer; writing the head proper alone sends no body byte.
            assert!(pipe.rewind());
            assert!(!pipe.body_sent());
            send(&mut pipe, &mut src, head.len());
            assert!(!pipe.body_sent(), "cut at {cut}");
            send(&mut pipe, &mut src, 1);
            assert!(pipe.body_sent(), "cut at {cut}");
        }
    }

    #[test]
    fn rewind_replays_the_canonical_chunked_bytes_that_were_written() {
        let head = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n";
        let body = b"003;x=y\r\nabc\r\n0\r\nx-t: 1\r\nhost: h\r\n\r\n";
        let whole = [&head[..], b"3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n"].concat();
        // Cut anywhere: in the head, in the size line, the data, the trailers.
        for cut in 0..=whole.len() {
            let mut pipe = Pipe::default();
            pipe.start(head.to_vec(), Some(BodyDecoder::new(BodyFraming::Chunked)));
            pipe.tap(64);
            let mut src = Buffer::new(64);
            src.fill_from(&mut Cursor::new(&body[..]))
                .expect("in memory");
            let first = send(&mut pipe, &mut src, cut);
            assert_eq!(first, &whole[..cut]);
            // A size line is body: written, it counts as a body byte sent.
            assert_eq!(pipe.body_sent(), cut > head.len(), "cut at {cut}");
            for _ in 0..2 {
                assert!(pipe.rewind(), "tapped");
                let again = send(&mut pipe, &mut src, usize::MAX);
                assert_eq!(
                    String::from_utf8_lossy(&again),
                    String::from_utf8_lossy(&whole),
                    "cut at {cut}"
                );
                assert!(pipe.is_complete());
            }
        }
    }

    #[test]
    fn a_body_past_the_tap_limit_cannot_be_rewound() {
        let mut pipe = Pipe::default();
        pipe.start(
            b"H\r\n\r\n".to_vec(),
            Some(BodyDecoder::new(BodyFraming::ContentLength(8))),
        );
        pipe.tap(4);
        let mut src = Buffer::new(64);
        src.fill_from(&mut Cursor::new(&b"12345678"[..]))
            .expect("in memory");
        assert_eq!(send(&mut pipe, &mut src, usize::MAX), b"H\r\n\r\n12345678");
        assert!(!pipe.is_tapped() && !pipe.rewind());
    }

    /// Run with `cargo test --release --lib -- --ignored --nocapture bench_pipe`.
    ///
    /// One message per iteration, the way an exchange sends it: a reused head
    /// buffer, a tapped body (as every request is), a 4 KiB body that arrived in
    /// one read, a sink that takes everything. Content-Length bodies are the
    /// plain path, which chunked framing must not slow down.
    #[test]
    #[ignore]
    fn bench_pipe_pump() {
        use std::time::Instant;
        /// Counts bytes and write calls (each a syscall on a socket).
        struct Sink(usize, u32);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.write_vectored(&[IoSlice::new(buf)])
            }
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                let n = bufs.iter().map(|b| b.len()).sum();
                self.0 += n;
                self.1 += 1;
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let head = b"POST /api/v1/items HTTP/1.1\r\nhost: web.ns.svc.cluster.local:8080\r\n\r\n";
        let plain = vec![b'x'; 4096];
        let mut chunked = Vec::new();
        for piece in plain.chunks(1024) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        const N: u32 = 1_000_000;
        for (name, framing, body) in [
            ("content-length", BodyFraming::ContentLength(4096), &plain),
            ("chunked", BodyFraming::Chunked, &chunked),
        ] {
            let mut pipe = Pipe::default();
            let mut src = Buffer::new(64 * 1024);
            let mut sink = Sink(0, 0);
            let mut spare = Vec::new();
            let t = Instant::now();
            for _ in 0..N {
                let mut h = std::mem::take(&mut spare);
                h.extend_from_slice(head);
                pipe.start(h, Some(BodyDecoder::new(framing)));
                pipe.tap(4096);
                src.fill_from(&mut Cursor::new(&body[..]))
                    .expect("in memory");
                while !pipe.is_complete() {
                    pipe.pump(&mut src, &mut sink).expect("valid");
                }
                spare = pipe.take_head(4096).unwrap_or_default();
            }
            let per = t.elapsed() / N;
            assert_eq!(sink.0, N as usize * (head.len() + body.len()));
            // Benchmark output is the point of this ignored test.
            eprintln!("{name}: {per:?} per message, {} write(s)", sink.1 / N);
        }
    }
}
