//! The `GET /destinations` document (pure; built on the event-loop thread
//! when an admin client asks): every live destination of both directions,
//! its endpoints, and for each endpoint whether spoke reaches it over mTLS
//! and with which identity, or why not. It answers the question mesh users
//! keep asking ("why isn't this traffic mTLS'd?") without a packet capture.
//!
//! ```json
//! {"local_identity": "web.default.serviceaccount.identity.linkerd.cluster.local",
//!  "tls": "ready",
//!  "destinations": [
//!   {"direction": "outbound", "name": "books.default.svc.cluster.local:7000",
//!    "source": "controller", "endpoints": [
//!     {"addr": "10.1.0.7:7000", "protocol_hint": "h2", "mtls": true,
//!      "server_id": "books.default.serviceaccount.identity.linkerd.cluster.local",
//!      "server_name": "books.default.serviceaccount.identity.linkerd.cluster.local"},
//!     {"addr": "10.1.0.9:7000", "protocol_hint": "unknown", "mtls": false,
//!      "no_tls_reason": "not_provided_by_service_discovery"}]}]}
//! ```
//!
//! `tls` is `ready` (a certificate is in force), `awaiting_certificate` or
//! `disabled`. `endpoints` is `null` while discovery has not answered.
//! Reasons: `not_provided_by_service_discovery` (the control plane names no
//! identity for it), `local_identity_disabled`, `no_certificate_yet` (its
//! connections are refused until one arrives: never plaintext), `loopback`
//! (inbound: the local application, reached in plaintext).

use std::fmt::Write;

use crate::endpoints::{Endpoint, EndpointSet, ProtocolHint, Source};
use crate::metrics::Direction;
use crate::tls::MeshTls;

/// One destination as the document shows it.
pub struct DestinationView<'a> {
    pub direction: Direction,
    pub name: &'a str,
    pub endpoints: Option<&'a EndpointSet>,
}

/// The document for `dsts` (in any order: it is sorted here) under `tls`.
pub fn render(tls: &MeshTls, mut dsts: Vec<DestinationView<'_>>) -> String {
    dsts.sort_by(|a, b| (a.direction.as_str(), a.name).cmp(&(b.direction.as_str(), b.name)));
    let mut out = String::with_capacity(256 + dsts.len() * 256);
    out.push_str("{\"local_identity\": ");
    match tls.configs() {
        Some(c) => string(&mut out, &c.local_name),
        None => out.push_str("null"),
    }
    let state = match tls {
        MeshTls::Ready(_) => "ready",
        MeshTls::Awaiting => "awaiting_certificate",
        MeshTls::Disabled => "disabled",
    };
    let _ = write!(out, ", \"tls\": \"{state}\", \"destinations\": [");
    for (i, d) in dsts.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(
            out,
            "{{\"direction\": \"{}\", \"name\": ",
            d.direction.as_str()
        );
        string(&mut out, d.name);
        let Some(set) = d.endpoints else {
            out.push_str(", \"source\": null, \"endpoints\": null}");
            continue;
        };
        let source = match set.source {
            Source::Controller => "controller",
            Source::Dns => "dns",
            Source::Fixed => "fixed",
        };
        let _ = write!(out, ", \"source\": \"{source}\", \"endpoints\": [");
        for (j, e) in set.endpoints.iter().enumerate() {
            if j > 0 {
                out.push_str(", ");
            }
            endpoint(&mut out, e, d.direction, tls);
        }
        out.push_str("]}");
    }
    out.push_str("]}\n");
    out
}

fn endpoint(out: &mut String, e: &Endpoint, direction: Direction, tls: &MeshTls) {
    let hint = match e.protocol_hint {
        ProtocolHint::Unknown => "unknown",
        ProtocolHint::H2 => "h2",
        ProtocolHint::Opaque => "opaque",
    };
    let _ = write!(
        out,
        "{{\"addr\": \"{}\", \"protocol_hint\": \"{hint}\"",
        e.addr
    );
    if let Some(port) = e.opaque_port {
        let _ = write!(out, ", \"opaque_transport_port\": {port}");
    }
    let reason = match (&e.tls, tls) {
        _ if direction == Direction::Inbound => Some("loopback"),
        (None, _) => Some("not_provided_by_service_discovery"),
        (Some(_), MeshTls::Disabled) => Some("local_identity_disabled"),
        (Some(_), MeshTls::Awaiting) => Some("no_certificate_yet"),
        (Some(_), MeshTls::Ready(_)) => None,
    };
    match (reason, &e.tls) {
        (None, Some(t)) => {
            out.push_str(", \"mtls\": true, \"server_id\": ");
            string(out, &t.server_id);
            out.push_str(", \"server_name\": ");
            string(out, &t.server_name);
        }
        (reason, _) => {
            let _ = write!(
                out,
                ", \"mtls\": false, \"no_tls_reason\": \"{}\"",
                reason.unwrap_or("not_provided_by_service_discovery")
            );
        }
    }
    out.push('}');
}

/// `s` as a JSON string.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::ClientTls;
    use std::sync::Arc;

    fn set(endpoints: Vec<Endpoint>) -> EndpointSet {
        EndpointSet::new(endpoints, Source::Controller)
    }

    fn meshed(addr: &str, id: &str) -> Endpoint {
        let mut e = Endpoint::from_addr(addr.parse().unwrap());
        e.tls = Some(ClientTls {
            server_name: Arc::from(id),
            server_id: Arc::from(id),
        });
        e.protocol_hint = ProtocolHint::H2;
        e
    }

    #[test]
    fn each_endpoint_says_whether_it_is_reached_over_mtls_or_why_not() {
        let books = set(vec![
            meshed("10.1.0.7:7000", "books.ns"),
            Endpoint::from_addr("10.1.0.9:7000".parse().unwrap()),
        ]);
        let app = EndpointSet::new(
            vec![Endpoint::from_addr("10.1.0.1:8080".parse().unwrap())],
            Source::Fixed,
        );
        let views = || {
            vec![
                DestinationView {
                    direction: Direction::Outbound,
                    name: "pending.ns:80",
                    endpoints: None,
                },
                DestinationView {
                    direction: Direction::Outbound,
                    name: "books.ns:7000",
                    endpoints: Some(&books),
                },
                DestinationView {
                    direction: Direction::Inbound,
                    name: "10.1.0.1:8080",
                    endpoints: Some(&app),
                },
            ]
        };
        let doc = render(&MeshTls::Awaiting, views());
        assert_eq!(
            doc,
            "{\"local_identity\": null, \"tls\": \"awaiting_certificate\", \"destinations\": [\
             {\"direction\": \"inbound\", \"name\": \"10.1.0.1:8080\", \"source\": \"fixed\", \
             \"endpoints\": [{\"addr\": \"10.1.0.1:8080\", \"protocol_hint\": \"unknown\", \
             \"mtls\": false, \"no_tls_reason\": \"loopback\"}]}, \
             {\"direction\": \"outbound\", \"name\": \"books.ns:7000\", \"source\": \"controller\", \
             \"endpoints\": [{\"addr\": \"10.1.0.7:7000\", \"protocol_hint\": \"h2\", \
             \"mtls\": false, \"no_tls_reason\": \"no_certificate_yet\"}, \
             {\"addr\": \"10.1.0.9:7000\", \"protocol_hint\": \"unknown\", \"mtls\": false, \
             \"no_tls_reason\": \"not_provided_by_service_discovery\"}]}, \
             {\"direction\": \"outbound\", \"name\": \"pending.ns:80\", \"source\": null, \
             \"endpoints\": null}]}\n"
        );
        let off = render(&MeshTls::Disabled, views());
        assert!(off.contains("\"tls\": \"disabled\""));
        assert!(off.contains("local_identity_disabled"));
    }

    #[test]
    fn names_are_escaped() {
        let mut out = String::new();
        string(&mut out, "a\"b\\c\nd");
        assert_eq!(out, "\"a\\\"b\\\\c\\u000ad\"");
    }
}
