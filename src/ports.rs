//! Sets of TCP ports as Linkerd writes them: `25,587,3306,4000-4010` (pure;
//! parsed by `config`, read by the event loop when it accepts a connection,
//! e.g. for `LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`).

use std::fmt;

/// Inclusive port ranges, sorted and merged, so a lookup is a short scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
}

impl PortSet {
    /// Comma-separated ports and `low-high` ranges; spaces are ignored, an
    /// empty string is the empty set. Port 0 is not a port.
    pub fn parse(s: &str) -> Result<PortSet, String> {
        let mut ranges = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (low, high) = match item.split_once('-') {
                Some((l, h)) => (port(l.trim(), item)?, port(h.trim(), item)?),
                None => {
                    let p = port(item, item)?;
                    (p, p)
                }
            };
            if low > high {
                return Err(format!("{item:?}: the range is backwards"));
            }
            ranges.push((low, high));
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (low, high) in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(low) <= u32::from(last.1) + 1 => last.1 = last.1.max(high),
                _ => merged.push((low, high)),
            }
        }
        Ok(PortSet { ranges: merged })
    }

    pub fn contains(&self, port: u16) -> bool {
        self.ranges.iter().any(|(l, h)| (*l..=*h).contains(&port))
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

fn port(s: &str, item: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!(
            "{item:?} is not a port or a range of ports (1-65535)"
        )),
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (l, h)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if l == h {
                write!(f, "{l}")?;
            } else {
                write!(f, "{l}-{h}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::PortSet;

    #[test]
    fn ports_and_ranges() {
        let s = PortSet::parse("25, 587,3306,4000-4010,4005-4020,4021").unwrap();
        assert_eq!(s.to_string(), "25,587,3306,4000-4021");
        for p in [25, 587, 3306, 4000, 4015, 4021] {
            assert!(s.contains(p), "{p}");
        }
        for p in [1, 24, 26, 3999, 4022, 65535] {
            assert!(!s.contains(p), "{p}");
        }
        assert!(PortSet::parse("").unwrap().is_empty());
        assert!(PortSet::parse(" , ").unwrap().is_empty());
        assert!(PortSet::parse("1-65535").unwrap().contains(65535));
    }

    #[test]
    fn bad_items_are_named() {
        for bad in ["0", "70000", "http", "10-", "-10", "20-10", "1,,x"] {
            let e = PortSet::parse(bad).unwrap_err();
            assert!(e.contains("port") || e.contains("backwards"), "{bad}: {e}");
        }
        assert!(PortSet::parse("20-10").unwrap_err().contains("\"20-10\""));
    }
}
