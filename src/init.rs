//! `spoke init`: the iptables NAT rules that send a pod's TCP traffic through
//! spoke, in the shape linkerd-proxy-init gives them (main thread of the
//! `spoke init` command; the proxy itself never runs this).
//!
//! ```text
//! PREROUTING -> PROXY_INIT_REDIRECT: RETURN for ignored inbound ports and subnets,
//!                                    then REDIRECT to the inbound port
//! OUTPUT     -> PROXY_INIT_OUTPUT:   RETURN for the proxy's uid and for -o lo,
//!                                    RETURN for ignored outbound ports,
//!                                    then REDIRECT to the outbound port
//! ```
//!
//! The rules are planned by a pure function ([`plan`]) from the options, so
//! `--dry-run` prints exactly what a real run executes. A real run first
//! lists the nat table; when spoke's chains are already there it changes
//! nothing, so running it twice is safe. It runs the `iptables` binary found
//! on the PATH (legacy or nft, whichever answers), and says plainly when
//! there is none or it is not permitted.

use std::fmt;
use std::process::Command;

use crate::networks::Network;

const OUTPUT_CHAIN: &str = "PROXY_INIT_OUTPUT";
const REDIRECT_CHAIN: &str = "PROXY_INIT_REDIRECT";
/// Ports one `multiport` match takes (a range counts twice).
const MULTIPORT_LIMIT: usize = 15;

/// What `spoke init` was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitOptions {
    /// The uid the proxy runs as: its own traffic is not redirected.
    pub proxy_uid: Option<u32>,
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub inbound_ports_to_ignore: Vec<PortRange>,
    pub outbound_ports_to_ignore: Vec<PortRange>,
    pub subnets_to_ignore: Vec<String>,
    pub dry_run: bool,
}

/// One port or an inclusive range of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

impl PortRange {
    /// `8080` or `7000-7999`.
    pub fn parse(s: &str) -> Result<PortRange, String> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{s:?} is not a port or a port range (1-65535)"))
        };
        let (low, high) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if low > high {
            return Err(format!("{s:?}: the range runs backwards"));
        }
        Ok(PortRange { low, high })
    }

    fn weight(self) -> usize {
        if self.low == self.high {
            1
        } else {
            2
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}:{}", self.low, self.high)
        }
    }
}

const USAGE: &str =
    "usage: spoke init [--proxy-uid UID] [--inbound-port PORT] [--outbound-port PORT]
                  [--inbound-ports-to-ignore P,P-P] [--outbound-ports-to-ignore P,P-P]
                  [--subnets-to-ignore CIDR,CIDR] [--dry-run]";

/// Parses `spoke init`'s arguments (Linkerd's proxy-init flag names).
pub fn parse_args(args: &[String]) -> Result<InitOptions, String> {
    let mut o = InitOptions {
        proxy_uid: None,
        inbound_port: 4143,
        outbound_port: 4140,
        inbound_ports_to_ignore: Vec::new(),
        outbound_ports_to_ignore: Vec::new(),
        subnets_to_ignore: Vec::new(),
        dry_run: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--dry-run" {
            o.dry_run = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let port = |v: &str| {
            v.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{flag} takes a port (1-65535), got {v:?}"))
        };
        let ports = |v: &str| {
            v.split(',')
                .filter(|p| !p.trim().is_empty())
                .map(PortRange::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--proxy-uid" => {
                o.proxy_uid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--proxy-uid takes a uid, got {value:?}"))?,
                )
            }
            "--inbound-port" => o.inbound_port = port(value)?,
            "--outbound-port" => o.outbound_port = port(value)?,
            "--inbound-ports-to-ignore" => o.inbound_ports_to_ignore = ports(value)?,
            "--outbound-ports-to-ignore" => o.outbound_ports_to_ignore = ports(value)?,
            "--subnets-to-ignore" => {
                for s in value.split(',').filter(|s| !s.trim().is_empty()) {
                    let s = s.trim();
                    Network::parse(s).map_err(|e| format!("--subnets-to-ignore: {e}"))?;
                    o.subnets_to_ignore.push(s.to_string());
                }
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(o)
}

/// The iptables commands (arguments after the binary), in order.
pub fn plan(o: &InitOptions) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    let rule = |chain: &str, rest: &[&str], comment: &str| -> Vec<String> {
        let mut v: Vec<String> = ["-t", "nat", "-A", chain].map(String::from).to_vec();
        v.extend(rest.iter().map(|s| s.to_string()));
        v.extend(["-m", "comment", "--comment"].map(String::from));
        v.push(format!("spoke-init/{comment}"));
        v
    };
    let ignore_ports = |cmds: &mut Vec<Vec<String>>, chain: &str, ports: &[PortRange]| {
        for group in multiport_groups(ports) {
            let list = group
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",");
            let args = [
                "-p",
                "tcp",
                "--match",
                "multiport",
                "--dports",
                &list,
                "-j",
                "RETURN",
            ];
            cmds.push(rule(chain, &args, &format!("ignore-port-{list}")));
        }
    };

    let new_chain = |name: &str| ["-t", "nat", "-N", name].map(String::from).to_vec();
    let redirect = |chain: &str, port: u16, comment: &str| {
        let port = port.to_string();
        rule(
            chain,
            &["-p", "tcp", "-j", "REDIRECT", "--to-port", &port],
            comment,
        )
    };

    // Inbound: from PREROUTING.
    cmds.push(new_chain(REDIRECT_CHAIN));
    ignore_ports(&mut cmds, REDIRECT_CHAIN, &o.inbound_ports_to_ignore);
    for subnet in &o.subnets_to_ignore {
        let args = ["-p", "all", "-s", subnet.as_str(), "-j", "RETURN"];
        let comment = format!("ignore-subnet-{subnet}");
        cmds.push(rule(REDIRECT_CHAIN, &args, &comment));
    }
    let comment = "redirect-all-incoming-to-proxy-port";
    cmds.push(redirect(REDIRECT_CHAIN, o.inbound_port, comment));
    let comment = "install-proxy-init-prerouting";
    cmds.push(rule("PREROUTING", &["-j", REDIRECT_CHAIN], comment));

    // Outbound: from OUTPUT.
    cmds.push(new_chain(OUTPUT_CHAIN));
    if let Some(uid) = o.proxy_uid {
        let uid = uid.to_string();
        let args = ["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"];
        cmds.push(rule(OUTPUT_CHAIN, &args, "ignore-proxy-user-id"));
    }
    // Loopback, which carries the pod's traffic to its own addresses too.
    let args = ["-o", "lo", "-j", "RETURN"];
    cmds.push(rule(OUTPUT_CHAIN, &args, "ignore-loopback"));
    ignore_ports(&mut cmds, OUTPUT_CHAIN, &o.outbound_ports_to_ignore);
    let comment = "redirect-all-outgoing-to-proxy-port";
    cmds.push(redirect(OUTPUT_CHAIN, o.outbound_port, comment));
    let comment = "install-proxy-init-output";
    cmds.push(rule("OUTPUT", &["-j", OUTPUT_CHAIN], comment));
    cmds
}

/// Port lists cut so no `multiport` match names more than 15 ports.
fn multiport_groups(ports: &[PortRange]) -> Vec<Vec<PortRange>> {
    let mut groups: Vec<Vec<PortRange>> = Vec::new();
    let mut weight = 0;
    for p in ports {
        if groups.is_empty() || weight + p.weight() > MULTIPORT_LIMIT {
            groups.push(Vec::new());
            weight = 0;
        }
        weight += p.weight();
        if let Some(g) = groups.last_mut() {
            g.push(*p);
        }
    }
    groups
}

/// Whether a listing of the nat table (`iptables-save -t nat`) already has
/// spoke's rules.
pub fn installed(listing: &str) -> bool {
    listing.lines().any(|l| {
        l.starts_with(&format!("-A {OUTPUT_CHAIN} "))
            || l.starts_with(&format!("-A {REDIRECT_CHAIN} "))
    })
}

/// Prints the plan (`--dry-run`) or applies it; the message says what
/// happened, or what went wrong and how to fix it.
pub fn run(o: &InitOptions) -> Result<String, String> {
    let cmds = plan(o);
    if o.dry_run {
        let text: Vec<String> = cmds
            .iter()
            .map(|c| format!("iptables {}", c.join(" ")))
            .collect();
        return Ok(text.join("\n"));
    }
    let (bin, listing) = find_iptables()?;
    if installed(&listing) {
        return Ok(format!(
            "{bin}: spoke's chains are already installed; nothing changed"
        ));
    }
    for (i, args) in cmds.iter().enumerate() {
        let out = Command::new(&bin)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {bin}: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "{bin} {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                err.trim(),
                if i > 0 {
                    " (the rules before it are installed; remove them with `iptables -t nat -F` and the chains' -X, or fix and run again)"
                } else {
                    ""
                }
            ));
        }
    }
    Ok(format!("{bin}: installed {} rules", cmds.len()))
}

/// The first iptables flavour that can list the nat table, with its listing.
fn find_iptables() -> Result<(String, String), String> {
    let mut errors = Vec::new();
    for (bin, save) in [
        ("iptables", "iptables-save"),
        ("iptables-nft", "iptables-nft-save"),
        ("iptables-legacy", "iptables-legacy-save"),
    ] {
        match Command::new(save).args(["-t", "nat"]).output() {
            Ok(out) if out.status.success() => {
                return Ok((bin.to_string(), String::from_utf8_lossy(&out.stdout).into()));
            }
            Ok(out) => errors.push(format!(
                "{save}: {} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            )),
            Err(e) => errors.push(format!("{save}: {e}")),
        }
    }
    Err(format!(
        "no usable iptables: {} (install the iptables package; spoke init needs root or CAP_NET_ADMIN)",
        errors.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_plan_has_proxy_inits_shape() {
        let o = parse_args(&args(
            "--proxy-uid 2102 --inbound-ports-to-ignore 4190,4191 \
             --outbound-ports-to-ignore 443,7000-7010 --subnets-to-ignore 10.0.0.0/8",
        ))
        .expect("valid");
        let lines: Vec<String> = plan(&o).iter().map(|c| c.join(" ")).collect();
        let want = [
            "-t nat -N PROXY_INIT_REDIRECT",
            "-t nat -A PROXY_INIT_REDIRECT -p tcp --match multiport --dports 4190,4191 -j RETURN -m comment --comment spoke-init/ignore-port-4190,4191",
            "-t nat -A PROXY_INIT_REDIRECT -p all -s 10.0.0.0/8 -j RETURN -m comment --comment spoke-init/ignore-subnet-10.0.0.0/8",
            "-t nat -A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-port 4143 -m comment --comment spoke-init/redirect-all-incoming-to-proxy-port",
            "-t nat -A PREROUTING -j PROXY_INIT_REDIRECT -m comment --comment spoke-init/install-proxy-init-prerouting",
            "-t nat -N PROXY_INIT_OUTPUT",
            "-t nat -A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -j RETURN -m comment --comment spoke-init/ignore-proxy-user-id",
            "-t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN -m comment --comment spoke-init/ignore-loopback",
            "-t nat -A PROXY_INIT_OUTPUT -p tcp --match multiport --dports 443,7000:7010 -j RETURN -m comment --comment spoke-init/ignore-port-443,7000:7010",
            "-t nat -A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-port 4140 -m comment --comment spoke-init/redirect-all-outgoing-to-proxy-port",
            "-t nat -A OUTPUT -j PROXY_INIT_OUTPUT -m comment --comment spoke-init/install-proxy-init-output",
        ];
        assert_eq!(lines, want);
    }

    #[test]
    fn long_port_lists_are_cut_at_fifteen_ports() {
        let ports: Vec<PortRange> = (1..=20).map(|p| PortRange { low: p, high: p }).collect();
        let groups = multiport_groups(&ports);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), vec![15, 5]);
        let ranges: Vec<PortRange> = (0..8)
            .map(|i| PortRange {
                low: 100 * i + 1,
                high: 100 * i + 50,
            })
            .collect();
        let groups = multiport_groups(&ranges);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), vec![7, 1]);
    }

    #[test]
    fn bad_arguments_say_which_and_why() {
        for (bad, says) in [
            ("--inbound-port 0", "--inbound-port"),
            ("--outbound-port http", "--outbound-port"),
            ("--proxy-uid -1", "--proxy-uid"),
            ("--inbound-ports-to-ignore 80,9-1", "backwards"),
            ("--outbound-ports-to-ignore 70000", "70000"),
            ("--subnets-to-ignore 10.0.0.0/40", "10.0.0.0/40"),
            ("--proxy-uid", "needs a value"),
            ("--frobnicate 1", "unknown argument"),
        ] {
            let e = parse_args(&args(bad)).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_second_run_changes_nothing() {
        let listing = "*nat\n:PREROUTING ACCEPT [0:0]\n:PROXY_INIT_OUTPUT - [0:0]\n\
                       -A PROXY_INIT_OUTPUT -o lo -j RETURN\nCOMMIT\n";
        assert!(installed(listing));
        assert!(!installed("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"));
        assert!(!installed("-A PROXY_INIT_OUTPUTX -j RETURN\n"));
    }

    #[test]
    fn dry_run_prints_every_command() {
        let o = parse_args(&args("--dry-run")).expect("valid");
        let text = run(&o).expect("dry run");
        assert_eq!(text.lines().count(), plan(&o).len());
        assert!(text.lines().all(|l| l.starts_with("iptables -t nat ")));
        assert!(text.contains("--to-port 4143") && text.contains("--to-port 4140"));
    }
}
