//! Readiness kept beside an edge-triggered socket, so the loop only makes the
//! system calls that can move bytes.
//!
//! mio registers sockets edge-triggered: an event says a socket *became*
//! readable or writable, and the next one comes only after the state changes
//! again. Reading until `WouldBlock` after every event is always correct but
//! costs one failed `read` per event, which on a keep-alive proxy is two of
//! the six system calls a request takes. A [`Tracked`] socket remembers what
//! the events said and what its own calls found instead:
//!
//! - a read that returned fewer bytes than asked for emptied the receive queue
//!   at that moment, so the socket is not readable until the next event (any
//!   byte arriving later raises a new edge); likewise a short write filled the
//!   send buffer;
//! - unless the peer's FIN was already announced (`read_closed`): that edge is
//!   spent, so reads go on until they see EOF or `WouldBlock`;
//! - while not ready, `read`/`write` answer `WouldBlock` without a system call,
//!   which is what callers already handle.
//!
//! Events only ever set readiness; only I/O results clear it.

use std::io::{self, IoSlice, Read, Write};

use mio::event::Event;

/// A socket and what is known about its readiness.
#[derive(Debug)]
pub struct Tracked<S> {
    io: S,
    readable: bool,
    writable: bool,
    /// The peer's FIN has been announced by an event.
    read_closed: bool,
    /// Bytes read and written since [`Tracked::take_bytes`] last ran (for
    /// `tcp_read_bytes_total` / `tcp_write_bytes_total`).
    read_bytes: u64,
    written_bytes: u64,
}

/// What an event said about a socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    pub read_closed: bool,
}

impl Readiness {
    /// An error or hang-up makes both directions worth trying: the next call
    /// reports it.
    pub fn of(event: &Event) -> Readiness {
        let error = event.is_error();
        Readiness {
            readable: event.is_readable() || event.is_read_closed() || error,
            writable: event.is_writable() || event.is_write_closed() || error,
            read_closed: event.is_read_closed(),
        }
    }
}

impl<S> Tracked<S> {
    /// `readable`/`writable`: what may be tried before the first event. A
    /// socket fresh from `accept` may hold bytes already; a pooled connection
    /// whose events were all handled holds none, and has room to write.
    pub fn new(io: S, readable: bool, writable: bool) -> Tracked<S> {
        Tracked {
            io,
            readable,
            writable,
            read_closed: false,
            read_bytes: 0,
            written_bytes: 0,
        }
    }

    /// Bytes read and written since the last call.
    #[inline]
    pub fn take_bytes(&mut self) -> (u64, u64) {
        let counts = (self.read_bytes, self.written_bytes);
        self.read_bytes = 0;
        self.written_bytes = 0;
        counts
    }

    /// Forgets what events said: `readable`/`writable` as for [`Tracked::new`].
    pub fn reset(&mut self, readable: bool, writable: bool) {
        self.readable = readable;
        self.writable = writable;
        self.read_closed = false;
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    pub fn into_inner(self) -> S {
        self.io
    }

    /// Records an event for this socket.
    pub fn ready(&mut self, r: Readiness) {
        self.readable |= r.readable;
        self.writable |= r.writable;
        self.read_closed |= r.read_closed;
    }

    pub fn is_writable(&self) -> bool {
        self.writable
    }

    fn wrote(&mut self, asked: usize, r: io::Result<usize>) -> io::Result<usize> {
        match &r {
            Ok(n) => {
                self.written_bytes += *n as u64;
                if *n < asked {
                    self.writable = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
            _ => {}
        }
        r
    }
}

fn would_block<T>() -> io::Result<T> {
    Err(io::ErrorKind::WouldBlock.into())
}

impl<S: Read> Read for Tracked<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.readable {
            return would_block();
        }
        let r = self.io.read(buf);
        match &r {
            Ok(n) => {
                self.read_bytes += *n as u64;
                if *n > 0 && *n < buf.len() && !self.read_closed {
                    self.readable = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
            _ => {}
        }
        r
    }
}

impl<S: Write> Write for Tracked<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.writable {
            return would_block();
        }
        let r = self.io.write(buf);
        self.wrote(buf.len(), r)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.writable {
            return would_block();
        }
        let asked = bufs.iter().map(|b| b.len()).sum();
        let r = self.io.write_vectored(bufs);
        self.wrote(asked, r)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.io.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A socket stand-in: scripted read results, a send buffer with room
    /// for `room` bytes, and a count of the calls that reached it.
    #[derive(Default)]
    struct Script {
        reads: VecDeque<io::Result<Vec<u8>>>,
        room: usize,
        calls: usize,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            match self.reads.pop_front() {
                Some(Ok(bytes)) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len())
                }
                Some(Err(e)) => Err(e),
                None => would_block(),
            }
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.room == 0 {
                return would_block();
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        /// Like `writev(2)`: as much of all the slices as there is room for.
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            if self.room == 0 {
                return would_block();
            }
            let n = total.min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn script(reads: Vec<io::Result<Vec<u8>>>, room: usize) -> Tracked<Script> {
        let s = Script {
            reads: reads.into(),
            room,
            calls: 0,
        };
        Tracked::new(s, true, true)
    }

    const READABLE: Readiness = Readiness {
        readable: true,
        writable: false,
        read_closed: false,
    };

    #[test]
    fn a_short_read_waits_for_the_next_event() {
        let mut t = script(vec![Ok(b"GET".to_vec()), Ok(b" /".to_vec())], 0);
        let mut buf = [0u8; 16];
        assert_eq!(t.read(&mut buf).unwrap(), 3);
        // Queue drained: no system call until an event says otherwise.
        assert_eq!(
            t.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(t.get_ref().calls, 1);
        t.ready(READABLE);
        assert_eq!(t.read(&mut buf).unwrap(), 2);
        assert_eq!(t.get_ref().calls, 2);
    }

    #[test]
    fn a_full_read_keeps_reading_and_would_block_stops() {
        let mut t = script(vec![Ok(vec![b'x'; 4]), Ok(b"y".to_vec())], 0);
        let mut buf = [0u8; 4];
        assert_eq!(t.read(&mut buf).unwrap(), 4);
        assert_eq!(t.read(&mut buf).unwrap(), 1);
        let mut t = script(vec![], 0);
        assert!(t.read(&mut buf).is_err());
        assert!(t.read(&mut buf).is_err());
        assert_eq!(t.get_ref().calls, 1, "WouldBlock is remembered");
    }

    #[test]
    fn an_announced_fin_reads_on_to_eof() {
        let mut t = script(
            vec![Ok(b"last".to_vec()), Ok(Vec::new()), Ok(Vec::new())],
            0,
        );
        t.ready(Readiness {
            readable: true,
            writable: false,
            read_closed: true,
        });
        let mut buf = [0u8; 16];
        assert_eq!(t.read(&mut buf).unwrap(), 4);
        // The FIN's edge is spent: a short read must not stop here.
        assert_eq!(t.read(&mut buf).unwrap(), 0);
        assert_eq!(t.read(&mut buf).unwrap(), 0, "EOF stays readable");
        assert_eq!(t.get_ref().calls, 3);
    }

    #[test]
    fn errors_other_than_would_block_keep_the_socket_ready() {
        let refused = io::Error::from(io::ErrorKind::ConnectionReset);
        let mut t = script(vec![Err(refused)], 0);
        let mut buf = [0u8; 4];
        assert_eq!(
            t.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::ConnectionReset
        );
        // Reported again by the socket, not hidden behind WouldBlock.
        assert_eq!(
            t.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(t.get_ref().calls, 2);
    }

    #[test]
    fn a_short_write_waits_for_writable() {
        let mut t = script(vec![], 5);
        assert_eq!(t.write(b"abc").unwrap(), 3);
        assert!(t.is_writable());
        assert_eq!(t.write(b"defgh").unwrap(), 2);
        assert!(!t.is_writable());
        assert_eq!(
            t.write(b"gh").unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(t.get_ref().calls, 2);
        t.ready(Readiness {
            writable: true,
            ..Readiness::default()
        });
        assert_eq!(
            t.write(b"gh").unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(t.get_ref().calls, 3);
        let mut v = script(vec![], 6);
        let head_body = [IoSlice::new(b"ab"), IoSlice::new(b"cde")];
        assert_eq!(v.write_vectored(&head_body).unwrap(), 5);
        assert!(v.is_writable(), "all slices went out");
        assert_eq!(v.write_vectored(&head_body).unwrap(), 1);
        assert!(!v.is_writable(), "short across the slices: buffer full");
    }

    #[test]
    fn a_socket_not_yet_ready_makes_no_call() {
        let mut t = Tracked::new(Script::default(), false, false);
        assert!(t.read(&mut [0u8; 4]).is_err() && t.write(b"x").is_err());
        assert_eq!(t.get_ref().calls, 0);
    }
}
