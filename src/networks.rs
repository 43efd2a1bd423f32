//! IP networks in CIDR notation (`10.0.0.0/8`, `fd00::/8`), as in
//! `LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS` (pure; parsed by `config`,
//! read by the event loop when a request names an IP address).

use std::fmt;
use std::net::IpAddr;

/// One network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// `addr/prefix`; a bare address is a network of one.
    pub fn parse(s: &str) -> Result<Network, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network (expected e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 address is the IPv4 address it maps.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` of `bits` bits of `a` and `b` are equal.
fn prefix_eq(a: u128, b: u128, bits: u32, prefix: u8) -> bool {
    let shift = bits - u32::from(prefix);
    shift >= bits || (a >> shift) == (b >> shift)
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A list of networks, empty by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Networks(Vec<Network>);

impl Networks {
    /// Networks separated by commas or whitespace; empty means none.
    pub fn parse(s: &str) -> Result<Networks, String> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(Network::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn membership_by_prefix() {
        let n = Networks::parse("10.0.0.0/8, 192.168.1.0/24 fd00::/8").expect("valid");
        assert!(n.contains(ip("10.255.1.2")));
        assert!(n.contains(ip("192.168.1.77")));
        assert!(!n.contains(ip("192.168.2.1")));
        assert!(n.contains(ip("fd12::1")));
        assert!(!n.contains(ip("fe80::1")));
        assert!(n.contains(ip("::ffff:10.1.1.1")), "IPv4-mapped");
        assert!(!n.contains(ip("11.0.0.1")));
        let all = Networks::parse("0.0.0.0/0,::/0").expect("valid");
        assert!(all.contains(ip("8.8.8.8")) && all.contains(ip("2001:db8::1")));
        let one = Networks::parse("127.0.0.1").expect("valid");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert_eq!(Networks::parse("").expect("valid"), Networks::default());
    }

    #[test]
    fn bad_networks_say_why() {
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "ten/8",
            "10.0.0.0/x",
        ] {
            let e = Networks::parse(bad).expect_err(bad);
            assert!(e.contains(bad), "{e}");
        }
    }
}
