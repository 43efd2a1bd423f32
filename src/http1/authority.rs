//! `uri-host [":" port]` parsing for the three places a routing target comes from: the
//! `Host` header, an absolute-form request-target, and `l5d-dst-override`.
//!
//! Event-loop thread, pure. Used by `request.rs`, which turns the result into the routing
//! authority (lowercased `name`, `port`) that `router.rs` and discovery look up.

/// `uri-host [":" port]` as used in Host, absolute URIs and `l5d-dst-override`. Returns the
/// host's byte range (for a DNS name: without one trailing dot) and the port (80 if absent
/// or empty). Accepted hosts: `[IPv6]`, and names/IPv4 made of letters, digits, `-`, `_`,
/// `.` with no empty label. Percent-encoding and other reg-name characters are refused:
/// the name is looked up as-is.
pub(super) fn parse_authority(value: &[u8]) -> Option<(usize, usize, u16)> {
    let (host_end, port_part) = if value.first() == Some(&b'[') {
        let close = value.iter().position(|b| *b == b']')?;
        let inner = &value[1..close];
        let ipv6_ok = inner.contains(&b':')
            && inner
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.');
        if !ipv6_ok {
            return None;
        }
        (close + 1, &value[close + 1..])
    } else {
        // One pass (this runs for every request): find the end of the name, checking its
        // characters and that no label is empty; one trailing dot is allowed and dropped.
        let mut end = value.len();
        let mut after_dot = true;
        for (i, b) in value.iter().enumerate() {
            match b {
                b':' => {
                    end = i;
                    break;
                }
                b'.' if after_dot => return None,
                b'.' => after_dot = true,
                _ if b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_' => after_dot = false,
                _ => return None,
            }
        }
        let name_end = if value.get(..end)?.last() == Some(&b'.') {
            end - 1
        } else {
            end
        };
        if name_end == 0 {
            return None;
        }
        return Some((0, name_end, parse_port(&value[end..])?));
    };
    Some((0, host_end, parse_port(port_part)?))
}

/// `""` or `":" port`; an empty port means the default (RFC 3986 section 3.2.3).
fn parse_port(part: &[u8]) -> Option<u16> {
    let digits = match part {
        [] => return Some(80),
        [b':', digits @ ..] => digits,
        _ => return None,
    };
    if digits.is_empty() {
        return Some(80);
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Leading zeros are allowed (`port = *DIGIT`); the value must still fit.
    let n = digits.iter().try_fold(0u32, |n, d| {
        n.checked_mul(10)?
            .checked_add(u32::from(d - b'0'))
            .filter(|n| *n <= 0xffff)
    })?;
    u16::try_from(n).ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_and_port(value: &[u8]) -> Option<(&[u8], u16)> {
        parse_authority(value).map(|(start, end, port)| (&value[start..end], port))
    }

    #[test]
    fn accepted() {
        let cases: [(&[u8], &[u8], u16); 11] = [
            (b"web", b"web", 80),
            (b"web:8080", b"web", 8080),
            (
                b"Web.NS.svc.cluster.local.",
                b"Web.NS.svc.cluster.local",
                80,
            ),
            (b"web.example.com.:81", b"web.example.com", 81),
            (b"[::1]:8080", b"[::1]", 8080),
            (b"[2001:db8::1]", b"[2001:db8::1]", 80),
            (b"[::ffff:10.0.0.1]:", b"[::ffff:10.0.0.1]", 80),
            (b"10.0.0.1:9090", b"10.0.0.1", 9090),
            (b"localhost:", b"localhost", 80),
            (b"my_svc-1:065535", b"my_svc-1", 65535),
            (b"a:00000000000000000001", b"a", 1),
        ];
        for (value, host, port) in cases {
            assert_eq!(
                host_and_port(value),
                Some((host, port)),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn refused() {
        for bad in [
            &b""[..],
            b":80",
            b"a b",
            b"a:b",
            b"a:70000",
            b"a:65536",
            b"a:0",
            b"a:-1",
            b"a:+1",
            b"a: 1",
            b"user@a",
            b"a/b",
            b".",
            b"..",
            b"a..b",
            b".a",
            b"[::1",
            b"[::1]x",
            b"[::1]:x",
            b"[zz::1]",
            b"[1.2.3.4]",
            b"[]",
            b"[fe80::1%25eth0]",
            b"a%2eb",
            b"a:80:80",
            b"\xc3\xa9",
        ] {
            assert_eq!(
                host_and_port(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
