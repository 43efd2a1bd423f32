//! Endpoint domain types, and the pure state machine that turns a stream of
//! `Destination.Get` updates into full endpoint-set snapshots.
//!
//! An `endpoints:<name:port>` discovery thread owns one [`EndpointState`]: it
//! calls [`EndpointState::reconnected`] whenever a new stream begins, feeds every
//! converted update to [`EndpointState::apply`], and sends each
//! [`Applied::Changed`] snapshot to the event loop, which balances over it. The
//! protobuf conversion lives in `discovery/convert.rs`; profiles in `profile.rs`.
//!
//! Transitions (Linkerd's, see the behaviour reference §6):
//!
//! ```text
//!   reconnected() ──> awaiting first message (the previous set stays in force)
//!     Add(non-empty)           replaces the whole set; no longer awaiting
//!     Remove(..)               ignored (no baseline on a new stream); still awaiting
//!     Add([])                  ignored everywhere; still awaiting
//!     NoEndpoints{exists:true} empties the set (known, no endpoints); no longer awaiting
//!     NoEndpoints{exists:false} DoesNotExist: set cleared, caller falls back to DNS
//!   streaming:
//!     Add(..)                  inserts or replaces by address
//!     Remove(..)               removes by address
//! ```
//!
//! `apply` reports `Changed` only when the snapshot differs from the last one it
//! reported, so the caller can publish every `Changed` without comparing.

use std::net::SocketAddr;
use std::sync::Arc;

/// One backend address and what the control plane says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Relative weight as sent by the controller (Linkerd does not use it for
    /// balancing either).
    pub weight: u32,
    /// Endpoint metric labels (set-level labels merged under them), sorted by key.
    pub labels: Arc<[(String, String)]>,
    /// Authority to send instead of the request's (e.g. a gateway in front).
    pub authority_override: Option<String>,
    /// The identity the endpoint must prove and the name to ask it for,
    /// when the control plane says it is meshed.
    pub tls: Option<ClientTls>,
    pub protocol_hint: ProtocolHint,
    /// The port of the endpoint's proxy that takes Linkerd's opaque transport
    /// (`transport.l5d.io/v1`), when the hint names one.
    pub opaque_port: Option<u16>,
}

/// How to reach a meshed endpoint over mutual TLS: the SNI to send
/// (`server_name`) and the identity its certificate must carry (`server_id`),
/// kept apart as Linkerd keeps them. Reference-counted: an endpoint set is
/// shared by every request to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientTls {
    pub server_name: Arc<str>,
    pub server_id: Arc<str>,
}

impl Endpoint {
    /// An endpoint with nothing known but its address, as DNS fallback yields.
    pub fn from_addr(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            weight: 1,
            labels: Arc::from(Vec::new()),
            authority_override: None,
            tls: None,
            protocol_hint: ProtocolHint::Unknown,
            opaque_port: None,
        }
    }
}

/// The endpoint a request goes to, with what connecting to it takes: what
/// the balancer's pick hands to the connect (copies of reference counts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRef {
    pub addr: SocketAddr,
    pub tls: Option<ClientTls>,
    pub hint: ProtocolHint,
    pub opaque_port: Option<u16>,
}

impl EndpointRef {
    pub fn of(e: &Endpoint) -> EndpointRef {
        EndpointRef {
            addr: e.addr,
            tls: e.tls.clone(),
            hint: e.protocol_hint,
            opaque_port: e.opaque_port,
        }
    }

    /// An address nothing is known about: plaintext, no hint.
    pub fn plain(addr: SocketAddr) -> EndpointRef {
        EndpointRef {
            addr,
            tls: None,
            hint: ProtocolHint::Unknown,
            opaque_port: None,
        }
    }
}

impl EndpointSet {
    /// The endpoint at `addr`, if the set has it (binary search: the set is
    /// sorted by address).
    pub fn get(&self, addr: SocketAddr) -> Option<&Endpoint> {
        let i = self
            .endpoints
            .binary_search_by_key(&addr, |e| e.addr)
            .ok()?;
        self.endpoints.get(i)
    }
}

/// How the endpoint prefers to be spoken to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolHint {
    Unknown,
    /// Speaks HTTP/2 (Linkerd upgrades HTTP/1 to it).
    H2,
    /// Opaque TCP.
    Opaque,
}

/// Where an endpoint set came from, so the data plane can tell a name the
/// controller knows to have no endpoints (503, no fallback) from a set built by
/// resolving the name in DNS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// From `Destination.Get`. An empty controller set means the name is known
    /// and has no endpoints right now (`no_endpoints{exists:true}` or everything
    /// removed): requests fail fast with 503 and there is no DNS fallback.
    Controller,
    /// Built by the endpoints thread from DNS, after the controller said the
    /// name does not exist (or for names outside the Get suffixes).
    Dns,
    /// One address, with no discovery: a request named an IP, or the
    /// connection was redirected to one.
    Fixed,
}

/// A full snapshot of the endpoints of one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSet {
    /// Sorted by address, one entry per address.
    pub endpoints: Arc<[Endpoint]>,
    pub source: Source,
}

impl EndpointSet {
    /// Builds a set from endpoints in any order; for a repeated address the
    /// last one given wins.
    pub fn new(endpoints: Vec<Endpoint>, source: Source) -> EndpointSet {
        EndpointSet {
            endpoints: sorted_unique(endpoints).into(),
            source,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }
}

/// One `Destination.Get` message, converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointUpdate {
    Add(Vec<Endpoint>),
    Remove(Vec<SocketAddr>),
    /// `exists: true`: known name, no endpoints. `false`: unknown name.
    NoEndpoints {
        exists: bool,
    },
}

/// What [`EndpointState::apply`] did, for the owning thread to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The set differs from the last one reported: publish it.
    Changed(EndpointSet),
    /// Nothing to publish.
    Unchanged,
    /// The controller does not know the name (`no_endpoints{exists:false}`):
    /// the caller falls back to DNS. Returned every time the controller says
    /// so; the caller treats repeats as a no-op.
    DoesNotExist,
}

/// What `apply` last reported, so it can tell a real change from a repeat.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reported {
    Nothing,
    Set(EndpointSet),
    DoesNotExist,
}

/// Sorts by address, keeping the last endpoint given for each address.
fn sorted_unique(mut endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    // Reversed, the last one given comes first among equal addresses; the
    // stable sort keeps it there, and `dedup` keeps the first of each run.
    endpoints.reverse();
    endpoints.sort_by_key(|e| e.addr);
    endpoints.dedup_by_key(|e| e.addr);
    endpoints.shrink_to_fit();
    endpoints
}

/// The endpoint set as the controller's stream has built it so far.
#[derive(Clone, Debug)]
pub struct EndpointState {
    /// Sorted by address, one entry per address. A sorted `Vec` rather than a
    /// map: most destinations have a handful of endpoints, and a map node
    /// costs about 1.5 KiB however few it holds.
    endpoints: Vec<Endpoint>,
    /// A stream (re)started and has not yet sent a message that counts as its
    /// first; the next `Add` replaces rather than extends the set.
    awaiting_first: bool,
    reported: Reported,
}

impl Default for EndpointState {
    fn default() -> Self {
        EndpointState::new()
    }
}

impl EndpointState {
    /// No endpoints, nothing reported, awaiting the first message.
    pub fn new() -> EndpointState {
        EndpointState {
            endpoints: Vec::new(),
            awaiting_first: true,
            reported: Reported::Nothing,
        }
    }

    /// A new stream began. The current set stays in force until its first
    /// message, and the first non-empty `Add` then replaces it, so endpoints
    /// removed while disconnected do not linger.
    pub fn reconnected(&mut self) {
        self.awaiting_first = true;
    }

    /// Applies one update.
    ///
    /// An empty `Add` is ignored and does not count as the first message of a
    /// stream: Linkerd's resolver drops empty adds before its reconnect logic
    /// sees them, and treating one as "first" would let the stale set survive
    /// the real first `Add`. An initial `Remove` is likewise ignored: it names
    /// addresses relative to a set the new stream never sent.
    pub fn apply(&mut self, update: EndpointUpdate) -> Applied {
        let modified = match update {
            EndpointUpdate::Add(eps) if eps.is_empty() => false,
            EndpointUpdate::Add(eps) if self.awaiting_first => {
                self.awaiting_first = false;
                self.replace(sorted_unique(eps))
            }
            EndpointUpdate::Add(eps) => {
                // The new ones come last, so they win over what they update.
                let mut merged = Vec::with_capacity(self.endpoints.len() + eps.len());
                merged.extend_from_slice(&self.endpoints);
                merged.extend(eps);
                self.replace(sorted_unique(merged))
            }
            EndpointUpdate::Remove(_) if self.awaiting_first => false,
            EndpointUpdate::Remove(mut addrs) => {
                addrs.sort_unstable();
                let before = self.endpoints.len();
                self.endpoints
                    .retain(|e| addrs.binary_search(&e.addr).is_err());
                self.endpoints.shrink_to_fit();
                self.endpoints.len() != before
            }
            EndpointUpdate::NoEndpoints { exists: true } => {
                self.endpoints.clear();
                self.awaiting_first = false;
                // Always a candidate: the set may be empty already, yet the last
                // report was DoesNotExist or nothing at all.
                true
            }
            EndpointUpdate::NoEndpoints { exists: false } => {
                self.endpoints.clear();
                self.awaiting_first = false;
                self.reported = Reported::DoesNotExist;
                return Applied::DoesNotExist;
            }
        };
        if modified {
            self.report()
        } else {
            Applied::Unchanged
        }
    }

    /// Puts `fresh` (sorted and unique) in force; true if it differs.
    fn replace(&mut self, fresh: Vec<Endpoint>) -> bool {
        let modified = fresh != self.endpoints;
        self.endpoints = fresh;
        modified
    }

    /// Reports the current set if it differs from the last report.
    fn report(&mut self) -> Applied {
        let set = EndpointSet {
            endpoints: self.endpoints.as_slice().into(),
            source: Source::Controller,
        };
        if let Reported::Set(last) = &self.reported {
            if *last == set {
                return Applied::Unchanged;
            }
        }
        self.reported = Reported::Set(set.clone());
        Applied::Changed(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn ep(s: &str) -> Endpoint {
        Endpoint::from_addr(addr(s))
    }

    fn add(list: &[&str]) -> EndpointUpdate {
        EndpointUpdate::Add(list.iter().map(|s| ep(s)).collect())
    }

    fn remove(list: &[&str]) -> EndpointUpdate {
        EndpointUpdate::Remove(list.iter().map(|s| addr(s)).collect())
    }

    /// The addresses of a `Changed` snapshot, panicking on anything else.
    #[track_caller]
    fn changed(applied: Applied) -> Vec<SocketAddr> {
        match applied {
            Applied::Changed(set) => {
                assert_eq!(set.source, Source::Controller);
                set.endpoints.iter().map(|e| e.addr).collect()
            }
            other => panic!("expected Changed, got {other:?}"),
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| addr(s)).collect()
    }

    #[test]
    fn set_is_sorted_and_deduplicated_last_wins() {
        let mut second = ep("10.0.0.1:80");
        second.weight = 7;
        let set = EndpointSet::new(
            vec![ep("10.0.0.2:80"), ep("10.0.0.1:80"), second],
            Source::Dns,
        );
        assert_eq!(set.len(), 2);
        assert_eq!(set.endpoints[0].addr, addr("10.0.0.1:80"));
        assert_eq!(set.endpoints[0].weight, 7);
        assert_eq!(set.source, Source::Dns);
        assert!(!set.is_empty());
        assert!(EndpointSet::new(vec![], Source::Controller).is_empty());
    }

    #[test]
    fn first_add_sets_then_adds_accumulate() {
        let mut s = EndpointState::new();
        assert_eq!(
            changed(s.apply(add(&["10.0.0.2:80"]))),
            addrs(&["10.0.0.2:80"])
        );
        assert_eq!(
            changed(s.apply(add(&["10.0.0.1:80"]))),
            addrs(&["10.0.0.1:80", "10.0.0.2:80"])
        );
        // Re-adding the same endpoint changes nothing.
        assert_eq!(s.apply(add(&["10.0.0.1:80"])), Applied::Unchanged);
    }

    #[test]
    fn add_replaces_an_endpoint_with_new_metadata() {
        let mut s = EndpointState::new();
        changed(s.apply(add(&["10.0.0.1:80"])));
        let mut updated = ep("10.0.0.1:80");
        updated.protocol_hint = ProtocolHint::H2;
        match s.apply(EndpointUpdate::Add(vec![updated])) {
            Applied::Changed(set) => assert_eq!(set.endpoints[0].protocol_hint, ProtocolHint::H2),
            other => panic!("expected Changed, got {other:?}"),
        }
    }

    #[test]
    fn remove_while_streaming() {
        let mut s = EndpointState::new();
        changed(s.apply(add(&["10.0.0.1:80", "10.0.0.2:80"])));
        assert_eq!(
            changed(s.apply(remove(&["10.0.0.1:80"]))),
            addrs(&["10.0.0.2:80"])
        );
        // Removing an unknown address is a no-op.
        assert_eq!(s.apply(remove(&["10.0.0.9:80"])), Applied::Unchanged);
        // Removing the last one leaves a known-empty controller set.
        assert_eq!(changed(s.apply(remove(&["10.0.0.2:80"]))), addrs(&[]));
    }

    #[test]
    fn initial_remove_is_ignored() {
        let mut s = EndpointState::new();
        assert_eq!(s.apply(remove(&["10.0.0.1:80"])), Applied::Unchanged);
        // Still awaiting the first message: the add that follows sets the set.
        assert_eq!(
            changed(s.apply(add(&["10.0.0.1:80"]))),
            addrs(&["10.0.0.1:80"])
        );
    }

    #[test]
    fn empty_add_is_ignored_and_not_a_first_message() {
        let mut s = EndpointState::new();
        assert_eq!(s.apply(add(&[])), Applied::Unchanged);
        changed(s.apply(add(&["10.0.0.1:80"])));
        s.reconnected();
        assert_eq!(s.apply(add(&[])), Applied::Unchanged);
        // The first non-empty add after the reconnect still replaces.
        assert_eq!(
            changed(s.apply(add(&["10.0.0.2:80"]))),
            addrs(&["10.0.0.2:80"])
        );
    }

    #[test]
    fn reconnect_keeps_stale_set_until_first_add_replaces_it() {
        let mut s = EndpointState::new();
        changed(s.apply(add(&["10.0.0.1:80", "10.0.0.2:80"])));
        s.reconnected();
        // Nothing is published at reconnect time: the stale set stays in force.
        // The initial remove of the new stream is ignored too.
        assert_eq!(s.apply(remove(&["10.0.0.1:80"])), Applied::Unchanged);
        assert_eq!(
            changed(s.apply(add(&["10.0.0.3:80"]))),
            addrs(&["10.0.0.3:80"])
        );
        // After the first message, adds extend again.
        assert_eq!(
            changed(s.apply(add(&["10.0.0.4:80"]))),
            addrs(&["10.0.0.3:80", "10.0.0.4:80"])
        );
    }

    #[test]
    fn reconnect_with_identical_first_add_is_unchanged() {
        let mut s = EndpointState::new();
        changed(s.apply(add(&["10.0.0.1:80"])));
        s.reconnected();
        assert_eq!(s.apply(add(&["10.0.0.1:80"])), Applied::Unchanged);
    }

    #[test]
    fn no_endpoints_exists_true_empties() {
        let mut s = EndpointState::new();
        changed(s.apply(add(&["10.0.0.1:80"])));
        let applied = s.apply(EndpointUpdate::NoEndpoints { exists: true });
        match applied {
            Applied::Changed(set) => {
                assert!(set.is_empty());
                assert_eq!(set.source, Source::Controller);
            }
            other => panic!("expected Changed, got {other:?}"),
        }
        assert_eq!(
            s.apply(EndpointUpdate::NoEndpoints { exists: true }),
            Applied::Unchanged
        );
    }

    #[test]
    fn no_endpoints_exists_true_as_first_message_is_published() {
        // The data plane must learn "known, empty" (503) rather than wait.
        let mut s = EndpointState::new();
        assert_eq!(
            changed(s.apply(EndpointUpdate::NoEndpoints { exists: true })),
            addrs(&[])
        );
    }

    #[test]
    fn no_endpoints_exists_true_counts_as_first_message() {
        let mut s = EndpointState::new();
        changed(s.apply(add(&["10.0.0.1:80"])));
        s.reconnected();
        changed(s.apply(EndpointUpdate::NoEndpoints { exists: true }));
        changed(s.apply(add(&["10.0.0.2:80"])));
        // Streaming now: a later add extends.
        assert_eq!(
            changed(s.apply(add(&["10.0.0.3:80"]))),
            addrs(&["10.0.0.2:80", "10.0.0.3:80"])
        );
    }

    #[test]
    fn does_not_exist_then_back() {
        let mut s = EndpointState::new();
        changed(s.apply(add(&["10.0.0.1:80"])));
        let gone = EndpointUpdate::NoEndpoints { exists: false };
        assert_eq!(s.apply(gone.clone()), Applied::DoesNotExist);
        assert_eq!(s.apply(gone), Applied::DoesNotExist);
        // A remove after that has nothing to remove.
        assert_eq!(s.apply(remove(&["10.0.0.1:80"])), Applied::Unchanged);
        // The name appears: a set is published again, even if it equals the
        // one published before DoesNotExist (the caller is on DNS now).
        assert_eq!(
            changed(s.apply(add(&["10.0.0.1:80"]))),
            addrs(&["10.0.0.1:80"])
        );
    }

    #[test]
    fn does_not_exist_then_known_empty_is_published() {
        let mut s = EndpointState::new();
        assert_eq!(
            s.apply(EndpointUpdate::NoEndpoints { exists: false }),
            Applied::DoesNotExist
        );
        assert_eq!(
            changed(s.apply(EndpointUpdate::NoEndpoints { exists: true })),
            addrs(&[])
        );
    }

    #[test]
    fn default_is_new() {
        let mut s = EndpointState::default();
        assert_eq!(s.apply(remove(&["10.0.0.1:80"])), Applied::Unchanged);
    }
}
