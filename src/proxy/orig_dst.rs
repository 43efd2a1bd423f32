//! Where an accepted connection was going before iptables redirected it to a
//! spoke listener (event-loop thread, once per accepted connection, never per
//! request), and the loop guard that uses it.
//!
//! The kernel keeps the original destination of a NAT-redirected connection
//! (`SO_ORIGINAL_DST`, or `IP6T_SO_ORIGINAL_DST` for IPv6, chosen by the
//! client's address family). "Not redirected" is normal: the application
//! connected to the listener itself. The lookup is a trait so tests can say
//! what the kernel would (as Linkerd's own integration tests inject it),
//! without iptables or root.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpStream;

/// The original destination of accepted connections.
pub trait OrigDst: Send {
    /// `Ok(None)` when the connection was not redirected.
    fn lookup(&self, stream: &TcpStream, peer: SocketAddr) -> io::Result<Option<SocketAddr>>;
}

/// The kernel's answer (Linux netfilter).
pub struct Kernel;

impl OrigDst for Kernel {
    fn lookup(&self, stream: &TcpStream, peer: SocketAddr) -> io::Result<Option<SocketAddr>> {
        let sock = socket2::SockRef::from(stream);
        let found = match peer {
            SocketAddr::V4(_) => sock.original_dst_v4(),
            SocketAddr::V6(_) => sock.original_dst_v6(),
        };
        match found {
            Ok(addr) => {
                let orig = addr.as_socket();
                // With conntrack loaded, an un-NATed connection reports its own
                // destination: that is "not redirected" too.
                Ok(orig.filter(|o| stream.local_addr().map_or(true, |l| l != *o)))
            }
            // ENOENT: no NAT entry; ENOPROTOOPT: netfilter is not loaded.
            Err(e) if matches!(e.raw_os_error(), Some(2 | 92)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Whether a connection redirected to `orig` would come back to spoke itself:
/// its original destination is one of spoke's own listeners (same port, and
/// the same IP or a listener bound to every address). Forwarding it would
/// connect spoke to itself until descriptors run out; Linkerd calls it a loop.
pub fn is_loop(orig: SocketAddr, own: &[SocketAddr]) -> bool {
    own.iter()
        .any(|l| l.port() == orig.port() && (l.ip().is_unspecified() || l.ip() == orig.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn loops_are_spokes_own_listeners() {
        let own = [
            sa("127.0.0.1:4140"),
            sa("0.0.0.0:4143"),
            sa("127.0.0.1:4191"),
        ];
        assert!(is_loop(sa("127.0.0.1:4140"), &own));
        assert!(
            is_loop(sa("10.1.2.3:4143"), &own),
            "inbound listens everywhere"
        );
        assert!(is_loop(sa("127.0.0.1:4191"), &own));
        assert!(
            !is_loop(sa("10.1.2.3:4140"), &own),
            "another host's port 4140"
        );
        assert!(!is_loop(sa("127.0.0.1:8080"), &own));
        assert!(is_loop(sa("[::1]:4143"), &[sa("[::]:4143")]));
        assert!(!is_loop(sa("[::1]:4143"), &[sa("[::2]:4143")]));
    }

    #[test]
    fn a_connection_made_to_the_listener_itself_was_not_redirected() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (accepted, peer) = l.accept().expect("accept");
        drop(client);
        let stream = TcpStream::from_std(accepted);
        assert_eq!(Kernel.lookup(&stream, peer).expect("lookup"), None);
    }
}
