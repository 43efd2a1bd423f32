//! The `Get` messages that take a stream from one endpoint view to the next (pure; called
//! by the embedded controller's threads, `controller::embedded`, when a stream opens and when
//! the file changes).
//!
//! An address with a TLS identity (`spec.ports[].identity`) is sent with
//! `tls_identity{dns_like_identity{name}, server_name{name}}`, the identity also being the
//! SNI, as Linkerd's destination controller fills it for a meshed pod, and with the `H2`
//! protocol hint Linkerd sends for meshed pods: the client's proxy carries HTTP/1 to them
//! upgraded to HTTP/2 (`l5d-orig-proto`), which spoke's inbound side takes back to HTTP/1.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use protobuf::MessageField;

use super::{tcp_address, EndpointsView, ENDPOINT_WEIGHT};
use crate::proto::destination::{
    protocol_hint, tls_identity, AddrSet, NoEndpoints, ProtocolHint, TlsIdentity, Update,
    WeightedAddr, WeightedAddrSet,
};

/// The messages to push on a `Get` stream that last reflected `old` (`None`: nothing sent yet)
/// so that it reflects `new`. Empty when nothing changed.
///
/// Additions go before removals so a client that applies each message on its own never sees
/// an empty set while addresses are only being replaced. When the identity changes, every
/// address is added again with the new one (an `add` replaces what a client knows of an
/// address).
pub fn endpoint_updates(old: Option<&EndpointsView>, new: &EndpointsView) -> Vec<Update> {
    let (old_addrs, old_identity): (&[SocketAddr], Option<&str>) = match old {
        Some(old) if old == new => return Vec::new(),
        Some(EndpointsView::Addrs(addrs, identity)) => (addrs, identity.as_deref()),
        Some(EndpointsView::Unknown) | None => (&[], None),
    };
    match new {
        EndpointsView::Unknown => vec![no_endpoints(false)],
        EndpointsView::Addrs(addrs, _) if addrs.is_empty() => vec![no_endpoints(true)],
        EndpointsView::Addrs(addrs, identity) => {
            let identity = identity.as_deref();
            let old_set: BTreeSet<&SocketAddr> = if identity == old_identity {
                old_addrs.iter().collect()
            } else {
                BTreeSet::new()
            };
            let new_set: BTreeSet<&SocketAddr> = addrs.iter().collect();
            let added: Vec<SocketAddr> = new_set.difference(&old_set).map(|a| **a).collect();
            let removed: Vec<SocketAddr> = old_addrs
                .iter()
                .filter(|a| !new_set.contains(a))
                .copied()
                .collect();
            let mut updates = Vec::new();
            if !added.is_empty() {
                updates.push(add(&added, identity));
            }
            if !removed.is_empty() {
                updates.push(remove(&removed));
            }
            updates
        }
    }
}

fn add(addrs: &[SocketAddr], identity: Option<&str>) -> Update {
    let mut set = WeightedAddrSet::new();
    set.addrs = addrs.iter().map(|a| weighted_addr(*a, identity)).collect();
    let mut update = Update::new();
    update.set_add(set);
    update
}

/// One address as `Get` answers (and `GetProfile`'s `endpoint` for a pod
/// IP) carry it: with its TLS identity and the `H2` hint when it is meshed.
pub(super) fn weighted_addr(a: SocketAddr, identity: Option<&str>) -> WeightedAddr {
    let mut wa = WeightedAddr::new();
    wa.addr = MessageField::some(tcp_address(a));
    wa.weight = ENDPOINT_WEIGHT;
    if let Some(id) = identity {
        wa.tls_identity = MessageField::some(tls(id));
        let mut hint = ProtocolHint::new();
        hint.set_h2(protocol_hint::H2::new());
        wa.protocol_hint = MessageField::some(hint);
    }
    wa
}

fn tls(identity: &str) -> TlsIdentity {
    let name = || {
        let mut n = tls_identity::DnsLikeIdentity::new();
        n.name = identity.to_owned();
        n
    };
    let mut tls = TlsIdentity::new();
    tls.set_dns_like_identity(name());
    tls.server_name = MessageField::some(name());
    tls
}

fn remove(addrs: &[SocketAddr]) -> Update {
    let mut set = AddrSet::new();
    set.addrs = addrs.iter().map(|a| tcp_address(*a)).collect();
    let mut update = Update::new();
    update.set_remove(set);
    update
}

fn no_endpoints(exists: bool) -> Update {
    let mut ne = NoEndpoints::new();
    ne.exists = exists;
    let mut update = Update::new();
    update.set_no_endpoints(ne);
    update
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;
    use crate::proto::destination::update;

    const ID: &str = "books.default.serviceaccount.identity.linkerd.cluster.local";

    fn view(addrs: &[&str], identity: Option<&str>) -> EndpointsView {
        EndpointsView::Addrs(
            addrs.iter().map(|a| a.parse().unwrap()).collect(),
            identity.map(str::to_owned),
        )
    }

    /// `add ADDR[=IDENTITY] ...` / `remove ADDR ...`.
    fn describe(updates: &[Update]) -> Vec<String> {
        updates
            .iter()
            .map(|u| match &u.update {
                Some(update::Update::Add(set)) => {
                    let mut out = "add".to_owned();
                    for w in &set.addrs {
                        let port = w.addr.port;
                        out.push_str(&format!(" {port}"));
                        // A meshed address carries its identity and the H2
                        // hint; a plain one neither.
                        let h2 = w.protocol_hint.as_ref().is_some_and(|h| h.has_h2());
                        assert_eq!(h2, w.tls_identity.is_some(), "{w:?}");
                        if let Some(tls) = w.tls_identity.as_ref() {
                            assert_eq!(tls.dns_like_identity().name, tls.server_name.name);
                            out.push_str(&format!("={}", tls.server_name.name));
                        }
                    }
                    out
                }
                Some(update::Update::Remove(set)) => {
                    let ports: Vec<String> = set.addrs.iter().map(|a| a.port.to_string()).collect();
                    format!("remove {}", ports.join(" "))
                }
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn addresses_carry_their_port_identity_and_a_change_re_adds_them() {
        let plain = view(&["10.0.0.1:1", "10.0.0.2:2"], None);
        let meshed = view(&["10.0.0.1:1", "10.0.0.2:2"], Some(ID));
        let moved = view(&["10.0.0.2:2", "10.0.0.3:3"], Some(ID));
        let first = describe(&endpoint_updates(None, &meshed));
        assert_eq!(first, [format!("add 1={ID} 2={ID}")]);
        assert_eq!(describe(&endpoint_updates(Some(&plain), &meshed)), first);
        assert_eq!(
            describe(&endpoint_updates(Some(&meshed), &plain)),
            ["add 1 2"]
        );
        assert_eq!(
            describe(&endpoint_updates(Some(&meshed), &moved)),
            [format!("add 3={ID}"), "remove 1".to_owned()]
        );
        let other = view(&["10.0.0.2:2", "10.0.0.3:3"], Some("db.x"));
        assert_eq!(
            describe(&endpoint_updates(Some(&meshed), &other)),
            ["add 2=db.x 3=db.x", "remove 1"]
        );
    }

    #[test]
    fn the_identity_is_read_per_port() {
        let doc = |id: &str| {
            format!(
                "apiVersion: spoke.dev/v1alpha1\nkind: Endpoints\nmetadata: {{name: books.s}}\n\
                 spec:\n  ports:\n  - port: 80\n    identity: {id}\n    addresses: [10.0.0.1:80]\n\
                 \x20 - port: 81\n    addresses: [10.0.0.1:81]\n"
            )
        };
        let mesh = parse(&doc(&ID.to_ascii_uppercase())).unwrap();
        assert_eq!(
            mesh.endpoints("books.s:80").unwrap(),
            view(&["10.0.0.1:80"], Some(ID))
        );
        assert_eq!(
            mesh.endpoints("books.s:81").unwrap(),
            view(&["10.0.0.1:81"], None)
        );
        let e = parse(&doc("\"not a name\"")).unwrap_err().to_string();
        assert!(e.contains("spec.ports[0].identity"), "{e}");
    }
}
