//! The TCP calls under a plain transport (event-loop thread): whether a
//! non-blocking connect finished, the options a new upstream connection gets,
//! and the idle check of a pooled one. None of them blocks.

use std::io;
use std::time::Duration;

use mio::net::TcpStream;

/// How a non-blocking connect stands.
pub enum Connect {
    Pending,
    Done,
    Failed(io::Error),
}

/// Whether a non-blocking connect has finished (checked on a writable event).
pub(super) fn status(stream: &TcpStream) -> Connect {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return Connect::Failed(e),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Connect::Done,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Connect::Pending,
        Err(e) => Connect::Failed(e),
    }
}

/// No Nagle delay, and kernel keepalive on an upstream connection, probing
/// after `every` of silence and then every `every`: a backend whose host
/// vanished (no FIN, no RST) is found out, and the exchange fails, even while
/// spoke waits for a response on a route without a timeout, or holds the
/// connection idle in the pool. Linkerd sets the same on its outbound
/// connections (10 s).
pub(super) fn tune(stream: &TcpStream, keepalive: Option<Duration>) {
    let _ = stream.set_nodelay(true);
    if let Some(every) = keepalive {
        let probes = socket2::TcpKeepalive::new()
            .with_time(every)
            .with_interval(every);
        if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&probes) {
            let peer = stream.peer_addr().ok();
            log::debug!("no TCP keepalive to {peer:?}: {e}");
        }
    }
}

/// Open, with nothing unread: a peek that would block.
pub(super) fn idle_and_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
