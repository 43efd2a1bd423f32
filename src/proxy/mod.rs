//! The data plane: the mio event loop (`event_loop`) and what it drives —
//! client sessions (`conn`), upstream pools (`pool`), the destination table
//! (`destinations`), the inbound side's rules (`inbound`), the admin endpoints
//! (`admin`), timers and buffers.

pub mod admin;
pub mod buffer;
pub mod conn;
pub mod ctx;
pub mod destinations;
pub mod event_loop;
pub mod exchange;
pub mod h2;
pub mod inbound;
pub mod listen;
pub mod orig_dst;
pub mod pipe;
pub mod pool;
pub mod ready;
pub mod target;
pub mod timers;
pub mod token;
pub mod transport;

use std::net::SocketAddr;

/// `addr` as text, written into `buf` with no allocation (the longest
/// socket address is 47 bytes): a fixed destination's table key, or the
/// `Host` an inbound HTTP/1.0 request without one is given.
pub fn addr_text(addr: SocketAddr, buf: &mut [u8; 64]) -> &str {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{addr}");
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::addr_text;
    use std::net::SocketAddr;

    #[test]
    fn addresses_as_text_without_allocating() {
        let sa = |s: &str| s.parse::<SocketAddr>().expect("addr");
        let mut buf = [0u8; 64];
        let long = sa("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535");
        assert_eq!(addr_text(long, &mut buf), long.to_string());
        assert_eq!(addr_text(sa("127.0.0.1:80"), &mut buf), "127.0.0.1:80");
    }
}
