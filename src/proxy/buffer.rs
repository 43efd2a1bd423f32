//! A byte buffer for one direction of a connection (event-loop thread).
//!
//! Bytes are read from a socket into the free tail and consumed from the front;
//! the live region is moved to the front only when the tail runs out. Reads go
//! until `WouldBlock` or until the buffer is full (which is the backpressure:
//! the loop stops reading a side whose bytes cannot be written on yet).

use std::io::{self, Read};

pub struct Buffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
    limit: usize,
}

/// What a read attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// Some bytes arrived (the socket may have more if the buffer filled up).
    Some(usize),
    /// No bytes now (`WouldBlock`), or no room.
    Nothing,
    /// The peer closed its side.
    Eof,
}

impl Buffer {
    /// A buffer that grows up to `limit` bytes. Memory is taken on first use.
    pub fn new(limit: usize) -> Self {
        Buffer {
            data: Vec::new(),
            start: 0,
            end: 0,
            limit,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn is_full(&self) -> bool {
        self.len() >= self.limit
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Releases the memory of an empty buffer (idle keep-alive connections).
    pub fn shrink_if_empty(&mut self) {
        if self.is_empty() && self.data.capacity() > 0 {
            self.data = Vec::new();
        }
    }

    /// Reads from `src` until it would block, hits EOF, or the buffer is full.
    pub fn fill_from(&mut self, src: &mut impl Read) -> io::Result<Filled> {
        let mut total = 0;
        loop {
            if self.is_full() {
                return Ok(if total > 0 {
                    Filled::Some(total)
                } else {
                    Filled::Nothing
                });
            }
            self.make_room();
            match src.read(&mut self.data[self.end..]) {
                Ok(0) => {
                    return Ok(if total > 0 {
                        Filled::Some(total)
                    } else {
                        Filled::Eof
                    })
                }
                Ok(n) => {
                    self.end += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(if total > 0 {
                        Filled::Some(total)
                    } else {
                        Filled::Nothing
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Ensures some free space at the tail, compacting or growing (up to the
    /// limit) as needed.
    fn make_room(&mut self) {
        if self.end < self.data.len() {
            return;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end < self.data.len() {
                return;
            }
        }
        let grown = (self.data.len() * 2).clamp(4096, self.limit.max(4096));
        self.data.resize(grown, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns its chunks one by one, then WouldBlock.
    struct Chunks(Vec<Vec<u8>>, bool);
    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return if self.1 {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let c = &mut self.0[0];
            let n = c.len().min(buf.len());
            buf[..n].copy_from_slice(&c[..n]);
            c.drain(..n);
            if c.is_empty() {
                self.0.remove(0);
            }
            Ok(n)
        }
    }

    #[test]
    fn reads_until_would_block_then_consumes_from_front() {
        let mut b = Buffer::new(1 << 16);
        let mut src = Chunks(vec![b"hello ".to_vec(), b"world".to_vec()], false);
        assert_eq!(b.fill_from(&mut src).unwrap(), Filled::Some(11));
        assert_eq!(b.bytes(), b"hello world");
        b.consume(6);
        assert_eq!(b.bytes(), b"world");
        assert_eq!(b.fill_from(&mut src).unwrap(), Filled::Nothing);
    }

    #[test]
    fn stops_at_the_limit_and_reports_eof() {
        let mut b = Buffer::new(4096);
        let mut src = Chunks(vec![vec![7; 10_000]], true);
        assert_eq!(b.fill_from(&mut src).unwrap(), Filled::Some(4096));
        assert!(b.is_full());
        assert_eq!(b.fill_from(&mut src).unwrap(), Filled::Nothing);
        b.consume(4096);
        assert_eq!(b.fill_from(&mut src).unwrap(), Filled::Some(4096));
        b.consume(4096);
        assert_eq!(b.fill_from(&mut src).unwrap(), Filled::Some(10_000 - 8192));
        assert_eq!(b.fill_from(&mut src).unwrap(), Filled::Eof);
    }

    #[test]
    fn compacts_instead_of_growing_past_the_limit() {
        let mut b = Buffer::new(4096);
        let mut src = Chunks(vec![vec![1; 4000]], false);
        b.fill_from(&mut src).unwrap();
        b.consume(3990);
        let mut more = Chunks(vec![vec![2; 100]], false);
        assert_eq!(b.fill_from(&mut more).unwrap(), Filled::Some(100));
        assert_eq!(b.len(), 110);
        assert_eq!(&b.bytes()[..10], &[1; 10]);
    }
}
