//! The one I/O adapter under h2 (event-loop thread): `tokio`'s
//! `AsyncRead`/`AsyncWrite` over a [`Transport`], plaintext or TLS alike.
//!
//! The transport keeps its socket's readiness bits (set by mio events,
//! cleared only by a real `WouldBlock` or a short read), so a read or write
//! it reports as `WouldBlock` means a new event will come, and that event
//! polls the socket's owner task: returning `Pending` there loses no wakeup.
//! The one other `Pending` is the read budget: a connection that read its
//! budget in one poll of its task ([`IoShared::new_poll`] renews it) wakes
//! its own task first, so the loop serves others and comes back to it.
//! Bytes read before h2 took over (detection's buffer) are served first.
//!
//! h2 owns its I/O object and gives no way back to it, so what the loop
//! learns about the socket (events) passes through a shared [`IoShared`]:
//! the loop records an event there, the adapter applies it on the next
//! poll, which the same event causes. The transport counts its own `tcp_*`
//! bytes, and its close when h2 drops the adapter. A client connection that
//! wants its socket back after h2 is done with it (a lingering close) asks
//! through [`IoShared::keep_transport`]: the adapter, dropped, leaves the
//! transport there instead of closing it.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::proxy::ready::Readiness;
use crate::proxy::transport::Transport;

/// Bytes one read takes from a socket at most (the largest HTTP/2 frame h2
/// accepts by default).
const SCRATCH_LEN: usize = 16 * 1024;

thread_local! {
    /// The event loop's buffer every adapter reads through (one read at a
    /// time, on this one thread).
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_LEN]);
}

/// What the loop and the adapter tell each other about one socket.
pub struct IoShared {
    events: Cell<Option<Readiness>>,
    /// Socket bytes a poll of the task may read, and what is left of them.
    budget: usize,
    left: Cell<usize>,
    /// Set: the adapter, dropped, leaves its transport in `kept`.
    keep: Cell<bool>,
    kept: RefCell<Option<Transport>>,
}

impl IoShared {
    fn new(budget: usize) -> IoShared {
        IoShared {
            events: Cell::new(None),
            budget,
            left: Cell::new(budget),
            keep: Cell::new(false),
            kept: RefCell::new(None),
        }
    }

    /// The task is being polled: the read budget starts again.
    pub fn new_poll(&self) {
        self.left.set(self.budget);
    }

    /// Records an event (merged with any not applied yet).
    pub fn ready(&self, r: Readiness) {
        let merged = match self.events.get() {
            None => r,
            Some(old) => Readiness {
                readable: old.readable | r.readable,
                writable: old.writable | r.writable,
                read_closed: old.read_closed | r.read_closed,
            },
        };
        self.events.set(Some(merged));
    }

    /// From now on, dropping the adapter hands its transport back here
    /// instead of closing it.
    pub fn keep_transport(&self) {
        self.keep.set(true);
    }

    /// The transport the dropped adapter left (see `keep_transport`),
    /// with the events it had not applied yet.
    pub fn take_transport(&self) -> Option<Transport> {
        let mut t = self.kept.borrow_mut().take()?;
        if let Some(r) = self.events.take() {
            t.ready(r);
        }
        Some(t)
    }
}

pub struct H2Io {
    /// Always `Some` until the adapter is dropped.
    transport: Option<Transport>,
    shared: Rc<IoShared>,
    /// Bytes already read from the socket (the preface detection saw).
    prefix: Vec<u8>,
    at: usize,
}

impl H2Io {
    /// The adapter over `transport`, reading at most `budget` socket bytes
    /// per poll of its task.
    pub fn new(transport: Transport, prefix: Vec<u8>, budget: usize) -> (H2Io, Rc<IoShared>) {
        let shared = Rc::new(IoShared::new(budget.max(1)));
        let io = H2Io {
            transport: Some(transport),
            shared: shared.clone(),
            prefix,
            at: 0,
        };
        (io, shared)
    }

    /// Applies the events recorded since the last call, and gives the
    /// transport to use.
    fn sync(&mut self) -> io::Result<&mut Transport> {
        let Some(t) = self.transport.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if let Some(r) = self.shared.events.take() {
            t.ready(r);
        }
        Ok(t)
    }

    fn count(&mut self) {
        if let Some(t) = self.transport.as_mut() {
            t.count_bytes();
        }
    }
}

impl Drop for H2Io {
    fn drop(&mut self) {
        if let Some(mut t) = self.transport.take() {
            if self.shared.keep.get() {
                t.count_bytes();
                *self.shared.kept.borrow_mut() = Some(t);
            } else {
                t.count_close();
            }
        }
    }
}

fn pending_if_blocked<T>(r: io::Result<T>) -> Poll<io::Result<T>> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
        other => Poll::Ready(other),
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let left = this.shared.left.get();
        if left == 0 {
            // The budget of this poll is spent: yield, awake.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // h2 hands over its buffer's spare room uninitialised, every time:
        // making it a `&mut [u8]` would clear it all (kilobytes) for the few
        // hundred bytes a read brings. The bytes go through the loop's
        // scratch buffer instead, and only those are copied.
        let room = buf.remaining().min(left).min(SCRATCH_LEN);
        let t = this.sync()?;
        let r = SCRATCH.with_borrow_mut(|scratch| {
            let n = t.read(&mut scratch[..room])?;
            buf.put_slice(&scratch[..n]);
            Ok(n)
        });
        this.count();
        match pending_if_blocked(r) {
            Poll::Ready(Ok(n)) => {
                this.shared.left.set(left - n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = this.sync()?.write(buf);
        this.count();
        pending_if_blocked(r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = this.sync()?.write_vectored(bufs);
        this.count();
        pending_if_blocked(r)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // TLS may hold encrypted output that a writable event sends
        // (`Transport::ready`); plaintext writes go straight to the socket.
        let this = self.get_mut();
        let t = this.sync()?;
        if t.wants_flush() {
            t.flush_tls();
            let still = t.wants_flush();
            this.count();
            if still {
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.sync()?.shutdown_write() {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            r => pending_if_blocked(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn detected_bytes_come_first_then_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut peer =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("nonblocking");
        let stream = mio::net::TcpStream::from_std(accepted);
        let (mut io, shared) = H2Io::new(Transport::accepted(stream), b"PRI".to_vec(), 1 << 16);
        let mut cx = Context::from_waker(Waker::noop());
        let mut space = [0u8; 16];
        let mut buf = ReadBuf::new(&mut space);
        assert!(matches!(
            Pin::new(&mut io).poll_read(&mut cx, &mut buf),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(buf.filled(), b"PRI");
        // Nothing on the socket: a real WouldBlock, so Pending.
        let mut buf = ReadBuf::new(&mut space);
        assert!(Pin::new(&mut io).poll_read(&mut cx, &mut buf).is_pending());
        peer.write_all(b" * HTTP/2.0").expect("write");
        // The readiness bit was cleared by the WouldBlock; an event sets it.
        let event = Readiness {
            readable: true,
            writable: true,
            read_closed: false,
        };
        let mut got = Vec::new();
        eventually(|| {
            shared.ready(event);
            let mut buf = ReadBuf::new(&mut space);
            if let Poll::Ready(Ok(())) = Pin::new(&mut io).poll_read(&mut cx, &mut buf) {
                got.extend_from_slice(buf.filled());
            }
            got == b" * HTTP/2.0"
        });
    }

    /// Retries `f` for up to two seconds.
    pub(crate) fn eventually(mut f: impl FnMut() -> bool) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !f() {
            assert!(
                std::time::Instant::now() < until,
                "condition not met in time"
            );
            std::thread::yield_now();
        }
    }
}
