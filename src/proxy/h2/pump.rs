//! Moving one direction of an HTTP/2 stream to another stream (event-loop
//! thread): DATA frames as the receiving leg gets them, sent as the other
//! leg's flow-control window allows, then the trailers (or an empty
//! END_STREAM). A peer's window is released only once the other leg took
//! the bytes, so a slow reader slows only its own writer: buffering is one
//! received frame per direction, never more.
//!
//! The rule from `shared/reference/http2-in-mio.md` that matters here:
//! `poll_capacity` reports *increases*, so capacity is checked first and
//! polled only when it is zero; `Pending` is returned only after an h2
//! `poll_*` did (which armed the task's waker).

use std::task::{Context, Poll};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http::HeaderMap;

/// How a leg ended.
#[derive(Debug)]
pub enum End {
    /// END_STREAM with trailers (already sent on), or without (`None`).
    Done(Option<HeaderMap>),
    /// The receiving leg failed (reset, connection lost, protocol error).
    Recv(h2::Error),
    /// The sending leg failed (the other peer reset or went away).
    Send(h2::Error),
}

/// One direction's state between polls: a received chunk the other leg has
/// had no window for yet, and how much of it to release once sent.
#[derive(Default)]
pub struct Half {
    pending: Option<Bytes>,
    /// The pending bytes came from `from` (not a replay): release them on
    /// `from`'s window once sent.
    release: bool,
    done: bool,
}

impl Half {
    /// Queues `chunk` (a replayed body part: nothing to release for it).
    pub fn queue_replay(&mut self, chunk: Bytes) {
        self.pending = Some(chunk);
        self.release = false;
    }

    /// Sends the pending chunk as far as `to`'s window allows. `Ready(Ok)`
    /// once it is all out; `Pending` while the window is closed.
    pub fn flush(
        &mut self,
        from: Option<&mut RecvStream>,
        to: &mut SendStream<Bytes>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), h2::Error>> {
        let mut from = from;
        while let Some(chunk) = self.pending.as_mut() {
            if chunk.is_empty() {
                self.pending = None;
                break;
            }
            to.reserve_capacity(chunk.len());
            let mut cap = to.capacity();
            if cap == 0 {
                match to.poll_capacity(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => return Poll::Ready(Err(closed())),
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                    Poll::Ready(Some(Ok(_))) => {
                        cap = to.capacity();
                        if cap == 0 {
                            continue;
                        }
                    }
                }
            }
            let n = cap.min(chunk.len());
            let part = chunk.split_to(n);
            to.send_data(part, false)?;
            if self.release {
                if let Some(f) = from.as_deref_mut() {
                    // The window is ours to give back; an error means the
                    // stream is gone, which the next poll reports.
                    let _ = f.flow_control().release_capacity(n);
                }
            }
            if chunk.is_empty() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Moves everything `from` has to `to`, until `from` ends (`Ready`) or
    /// either side has to wait (`Pending`). Trailers are passed to `seen`
    /// before they are sent on.
    pub fn pump(
        &mut self,
        from: &mut RecvStream,
        to: &mut SendStream<Bytes>,
        cx: &mut Context<'_>,
        mut seen: impl FnMut(&Bytes),
    ) -> Poll<End> {
        loop {
            if self.done {
                return Poll::Ready(End::Done(None));
            }
            match self.flush(Some(from), to, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(End::Send(e)),
                Poll::Ready(Ok(())) => {}
            }
            match from.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    seen(&chunk);
                    self.pending = Some(chunk);
                    self.release = true;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(End::Recv(e)),
                Poll::Ready(None) => {
                    return match from.poll_trailers(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Err(e)) => Poll::Ready(End::Recv(e)),
                        Poll::Ready(Ok(trailers)) => {
                            self.done = true;
                            let sent = match &trailers {
                                Some(t) => to.send_trailers(t.clone()),
                                None => to.send_data(Bytes::new(), true),
                            };
                            match sent {
                                Ok(()) => Poll::Ready(End::Done(trailers)),
                                Err(e) => Poll::Ready(End::Send(e)),
                            }
                        }
                    };
                }
            }
        }
    }
}

fn closed() -> h2::Error {
    h2::Error::from(h2::Reason::CANCEL)
}
