//! The file model of the embedded controller: a YAML file of Linkerd `ServiceProfile`s and
//! spoke `Endpoints` documents, parsed into the protobuf messages the Destination server sends.
//!
//! Pure: `parse` takes the file text and returns a [`Mesh`]; the lookups take a `name:port`
//! path and return `DestinationProfile`s and endpoint views; `endpoint_updates`
//! (`mesh/updates.rs`) turns two views into the `Update`s for an open `Get` stream. The
//! controller threads (`controller/` siblings: the grpcio server and the file watcher) own
//! the file I/O, keep the last good `Mesh` when a new file fails to parse, and push what
//! changed. The client-side conversion of the same messages lives in `discovery::convert`.
//!
//! # File format
//!
//! Any number of YAML documents separated by `---`. Empty documents and comments are fine.
//! Each document is one of:
//!
//! - `kind: ServiceProfile`, `apiVersion: linkerd.io/v1alpha2` (or `v1alpha1`), as users keep
//!   them or as `kubectl get sp NAME -o yaml` prints them. Everything under `metadata` except
//!   `name`, and `status`, is ignored (kubectl's `managedFields`, annotations and so on).
//! - `kind: List` with the objects under `items`, as `kubectl get sp -o yaml` prints them.
//! - `kind: Endpoints`, `apiVersion: spoke.dev/v1alpha1`, spoke's own endpoint document:
//!
//! ```yaml
//! apiVersion: spoke.dev/v1alpha1
//! kind: Endpoints
//! metadata:
//!   name: books.default.svc.cluster.local   # the service name, without port
//! spec:
//!   ports:
//!   - port: 7000                # the port clients ask for (name:7000), 1-65535
//!     identity: books.default.serviceaccount.identity.linkerd.cluster.local  # optional: TLS identity
//!     addresses:                # IP:port literals; IPv6 in brackets (quote them in YAML)
//!     - 127.0.0.1:7001
//!     - "[::1]:7002"
//! ```
//!
//!   A port with an empty (or absent) `addresses` list exists with no endpoints: clients get
//!   `no_endpoints{exists:true}` and answer 503. A `name:port` that no Endpoints document
//!   lists is unknown: clients get `no_endpoints{exists:false}` and may fall back to DNS.
//!
//! - `kind: Identity`, `apiVersion: spoke.dev/v1alpha1`: which token proves a workload
//!   identity to the `Certify` service (`controller/mesh/identities.rs`).
//!
//! Any other kind (including Kubernetes' own `v1` `Endpoints`) is skipped with a warning.
//! A document with a structural error (a missing required field, a value of the wrong type,
//! a bad duration, quantity, port or address) fails the whole parse with a [`MeshError`]
//! naming the document and the field path; the controller then keeps serving the last good
//! file. So does a value that no proxy could apply as written, which Linkerd's controller
//! would send on for the proxy to drop: a `pathRegex` that does not compile as a whole-path
//! regex, a method that is not an HTTP token, a `dstOverrides` authority that is not
//! `name:port`, a status range with only `min` or only `max`. Unknown fields inside `spec`
//! are ignored with a warning.
//!
//! # ServiceProfile conversion
//!
//! As Linkerd's controller does it; the rules are listed in `controller/mesh/profile.rs`.
//! Names are compared in lower case, and a trailing dot is ignored, in documents and paths.
//! `fully_qualified_name` is the profile's name (also in the default profile sent for a name
//! without one); it is left empty when the path names an IP address, since this file maps no
//! IPs to services. An `IP:port` path that an Endpoints document lists gets that address as
//! the profile's `endpoint`, with its identity, as Linkerd's controller answers for a pod IP,
//! so a client that connects to a meshed pod by IP knows to use mTLS.

mod identities;
mod profile;
mod updates;
mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use protobuf::MessageField;
use yaml_rust2::{Yaml, YamlLoader};

use crate::discovery::convert::to_tcp_address as tcp_address;
use crate::proto::destination::DestinationProfile;
pub use identities::TokenSource;
use profile::{default_retry_budget, profile_spec, Profile};
pub use updates::endpoint_updates;
use yaml::{
    fail, get, index_path, integer, key_path, kind_of, mapping, optional_seq, required, sequence,
    string, Ctx, Field, FieldError,
};

/// Weight of each endpoint in an `add`, as Linkerd's controller sends it (the proxy ignores it).
const ENDPOINT_WEIGHT: u32 = 10_000;

const PROFILE_API_VERSIONS: [&str; 2] = ["linkerd.io/v1alpha2", "linkerd.io/v1alpha1"];
const ENDPOINTS_API_VERSION: &str = "spoke.dev/v1alpha1";

// === Mesh ===

/// Everything one file says: profiles by service name and endpoint sets by `name:port`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mesh {
    profiles: BTreeMap<String, Profile>,
    endpoints: BTreeMap<String, (Vec<SocketAddr>, Option<String>)>,
    /// Identity -> the token that proves it (`identities`).
    identities: BTreeMap<String, TokenSource>,
}

/// What the file says about the endpoints of one `name:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointsView {
    /// No Endpoints document lists it: `no_endpoints{exists:false}` (clients may use DNS).
    Unknown,
    /// Sorted and without duplicates; empty means the port exists with no endpoints. The
    /// second field is the TLS identity of every address (`spec.ports[].identity`).
    Addrs(Vec<SocketAddr>, Option<String>),
}

impl Mesh {
    /// Number of ServiceProfiles in the file.
    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }

    /// Number of `name:port` entries listed by Endpoints documents.
    pub fn endpoints_count(&self) -> usize {
        self.endpoints.len()
    }

    /// The profile to send for `path` (`name:port`): the ServiceProfile of `name`, or Linkerd's
    /// default (no routes, default retry budget) when there is none.
    pub fn profile(&self, path: &str) -> Result<DestinationProfile, LookupError> {
        let (name, port) = split_path(path)?;
        match self.profiles.get(&name) {
            Some(profile) => {
                let mut proto = profile.proto.clone();
                proto.opaque_protocol = profile.opaque_ports.contains(&port);
                Ok(proto)
            }
            None => {
                let mut proto = DestinationProfile::new();
                if !is_ip_literal(&name) {
                    proto.fully_qualified_name = name;
                } else if let Some(ep) = self.listed_address(&name, port) {
                    proto.endpoint = MessageField::some(ep);
                }
                proto.retry_budget = MessageField::some(default_retry_budget());
                Ok(proto)
            }
        }
    }

    /// The address `ip:port` as some Endpoints document lists it, with its identity.
    fn listed_address(
        &self,
        ip: &str,
        port: u16,
    ) -> Option<crate::proto::destination::WeightedAddr> {
        let ip: IpAddr = ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        let addr = SocketAddr::new(ip, port);
        self.endpoints.values().find_map(|(addrs, identity)| {
            addrs
                .contains(&addr)
                .then(|| updates::weighted_addr(addr, identity.as_deref()))
        })
    }

    /// The endpoints the file lists for `path` (`name:port`).
    pub fn endpoints(&self, path: &str) -> Result<EndpointsView, LookupError> {
        let (name, port) = split_path(path)?;
        Ok(match self.endpoints.get(&format!("{name}:{port}")) {
            Some((addrs, identity)) => EndpointsView::Addrs(addrs.clone(), identity.clone()),
            None => EndpointsView::Unknown,
        })
    }
}

// === Lookup paths ===

/// Why a lookup path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The path is not `name:port` with a port in 1..=65535 (gRPC `InvalidArgument`).
    InvalidArgument(String),
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
        }
    }
}

impl std::error::Error for LookupError {}

/// `name:port` -> (normalised name, port).
fn split_path(path: &str) -> Result<(String, u16), LookupError> {
    let invalid = |why: &str| LookupError::InvalidArgument(format!("path {path:?}: {why}"));
    let (name, port) = path
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected name:port"))?;
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => p,
        _ => return Err(invalid("port must be a number in 1..=65535")),
    };
    let name = normalize_name(name);
    if name.is_empty() {
        return Err(invalid("empty name"));
    }
    Ok((name, port))
}

fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn is_ip_literal(name: &str) -> bool {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    bare.parse::<IpAddr>().is_ok()
}

// === Parse errors ===

/// Where in the file an object is: the 1-based document number and, for the objects of a
/// `kind: List`, the index in its `items`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based index of the `---` document.
    pub doc: usize,
    /// Index in the document's `items`, when the document is a `List`.
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "doc {}", self.doc)?;
        if let Some(i) = self.item {
            write!(f, ", items[{i}]")?;
        }
        Ok(())
    }
}

/// Why a file was rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshError {
    /// The text is not YAML (the scanner's message, with line and column).
    Syntax(String),
    /// An object has the wrong structure. `object` is e.g.
    /// `ServiceProfile books.default.svc.cluster.local` (just the kind when the name is
    /// unknown); `path` is the field path inside the object, e.g. `spec.routes[1].timeout`.
    Invalid {
        /// The object's place in the file.
        at: Location,
        /// Kind and name of the object, as far as known.
        object: String,
        /// Field path inside the object; empty for the object itself.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Two objects define the same ServiceProfile, or the same Endpoints `name:port`.
    Duplicate {
        /// The second definition.
        at: Location,
        /// E.g. `ServiceProfile books.default.svc.cluster.local` or
        /// `Endpoints books.default.svc.cluster.local:7000`.
        object: String,
        /// The first definition.
        first: Location,
    },
}

impl fmt::Display for MeshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeshError::Syntax(msg) => write!(f, "not valid YAML: {msg}"),
            MeshError::Invalid {
                at,
                object,
                path,
                message,
            } => {
                write!(f, "{at}")?;
                if !object.is_empty() {
                    write!(f, " ({object})")?;
                }
                if !path.is_empty() {
                    write!(f, ": {path}")?;
                }
                write!(f, ": {message}")
            }
            MeshError::Duplicate { at, object, first } => {
                write!(f, "{at}: duplicate {object} (first defined in {first})")
            }
        }
    }
}

impl std::error::Error for MeshError {}

// === Document walk ===

/// Parses a whole file. See the module documentation for the format.
pub fn parse(text: &str) -> Result<Mesh, MeshError> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| MeshError::Syntax(e.to_string()))?;
    let mut builder = Builder::default();
    for (i, doc) in docs.iter().enumerate() {
        let at = Location {
            doc: i + 1,
            item: None,
        };
        builder.object(at, doc, true)?;
    }
    Ok(builder.mesh)
}

/// The mesh being filled, plus where each entry came from (for duplicate errors).
#[derive(Default)]
struct Builder {
    mesh: Mesh,
    profile_origin: BTreeMap<String, Location>,
    endpoints_origin: BTreeMap<String, Location>,
    identity_origin: BTreeMap<String, Location>,
}

impl Builder {
    fn object(&mut self, at: Location, doc: &Yaml, top_level: bool) -> Result<(), MeshError> {
        let bare = |path: &str, message: String| MeshError::Invalid {
            at,
            object: String::new(),
            path: path.to_string(),
            message,
        };
        let map = match doc {
            // An empty document (`---` followed by nothing, or only comments).
            Yaml::BadValue | Yaml::Null => return Ok(()),
            Yaml::Hash(map) => map,
            other => {
                return Err(bare(
                    "",
                    format!(
                        "expected a mapping with apiVersion and kind, found {}",
                        kind_of(other)
                    ),
                ))
            }
        };
        let text = |key: &str| -> Result<&str, MeshError> {
            match get(map, key) {
                Some(Yaml::String(s)) => Ok(s),
                Some(other) => Err(bare(
                    key,
                    format!("expected a string, found {}", kind_of(other)),
                )),
                None => Err(bare(key, "missing".to_string())),
            }
        };
        let api_version = text("apiVersion")?;
        let kind = text("kind")?;
        let name = get(map, "metadata")
            .and_then(|m| m.as_hash())
            .and_then(|m| get(m, "name"))
            .and_then(Yaml::as_str)
            .map(normalize_name);
        let ctx = Ctx {
            at,
            object: match &name {
                Some(n) => format!("{kind} {n}"),
                None => kind.to_string(),
            },
        };

        if kind == "List" || kind == "ServiceProfileList" {
            if !top_level {
                return Err(ctx.invalid(FieldError {
                    path: String::new(),
                    message: "a List inside a List is not supported".into(),
                }));
            }
            let items = optional_seq(map, "items", "").map_err(|e| ctx.invalid(e))?;
            for (i, item) in items.iter().enumerate() {
                let at = Location {
                    doc: at.doc,
                    item: Some(i),
                };
                self.object(at, item, false)?;
            }
            return Ok(());
        }

        if kind == "ServiceProfile" && PROFILE_API_VERSIONS.contains(&api_version) {
            let name = required_name(name.as_deref()).map_err(|e| ctx.invalid(e))?;
            let spec = required(map, "spec", "").map_err(|e| ctx.invalid(e))?;
            let profile = profile_spec(&ctx, &name, spec, "spec").map_err(|e| ctx.invalid(e))?;
            if let Some(first) = self.profile_origin.get(&name) {
                return Err(MeshError::Duplicate {
                    at,
                    object: ctx.object,
                    first: *first,
                });
            }
            self.profile_origin.insert(name.clone(), at);
            self.mesh.profiles.insert(name, profile);
            return Ok(());
        }

        if kind == "Endpoints" && api_version == ENDPOINTS_API_VERSION {
            let name = required_name(name.as_deref()).map_err(|e| ctx.invalid(e))?;
            let spec = required(map, "spec", "").map_err(|e| ctx.invalid(e))?;
            let ports = endpoints_spec(&ctx, spec, "spec").map_err(|e| ctx.invalid(e))?;
            for (port, addrs, identity) in ports {
                let key = format!("{name}:{port}");
                if let Some(first) = self.endpoints_origin.get(&key) {
                    return Err(MeshError::Duplicate {
                        at,
                        object: format!("Endpoints {key}"),
                        first: *first,
                    });
                }
                self.endpoints_origin.insert(key.clone(), at);
                self.mesh.endpoints.insert(key, (addrs, identity));
            }
            return Ok(());
        }

        if kind == identities::KIND && api_version == ENDPOINTS_API_VERSION {
            let spec = required(map, "spec", "").map_err(|e| ctx.invalid(e))?;
            return self.identity(at, ctx, name.as_deref(), spec);
        }

        log::warn!(
            "{at}: skipping {api_version} {}: not a kind spoke reads \
             (ServiceProfile {}, or Endpoints {ENDPOINTS_API_VERSION})",
            ctx.object,
            PROFILE_API_VERSIONS[0],
        );
        Ok(())
    }
}

fn required_name(name: Option<&str>) -> Field<String> {
    match name {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => fail("metadata.name", "missing (expected a string)"),
    }
}

// === Endpoints ===

/// Each port's number, addresses and TLS identity.
type PortSpecs = Vec<(u16, Vec<SocketAddr>, Option<String>)>;

fn endpoints_spec(ctx: &Ctx, spec: &Yaml, path: &str) -> Field<PortSpecs> {
    let map = mapping(spec, path)?;
    ctx.warn_unknown(map, path, &["ports"]);
    let ports_path = key_path(path, "ports");
    let mut out: PortSpecs = Vec::new();
    for (i, item) in sequence(required(map, "ports", path)?, &ports_path)?
        .iter()
        .enumerate()
    {
        let item_path = index_path(&ports_path, i);
        let item = mapping(item, &item_path)?;
        ctx.warn_unknown(item, &item_path, &["port", "addresses", "identity"]);
        let port_path = key_path(&item_path, "port");
        let port = match integer(required(item, "port", &item_path)?, &port_path)? {
            n @ 1..=65535 => n as u16,
            n => return fail(&port_path, format!("port {n} is outside 1-65535")),
        };
        if out.iter().any(|(p, _, _)| *p == port) {
            return fail(&port_path, format!("port {port} is listed twice"));
        }
        let addrs_path = key_path(&item_path, "addresses");
        let mut addrs = Vec::new();
        for (j, addr) in optional_seq(item, "addresses", &item_path)?
            .iter()
            .enumerate()
        {
            let addr_path = index_path(&addrs_path, j);
            let text = string(addr, &addr_path)?;
            match text.parse::<SocketAddr>() {
                Ok(sa) if sa.port() != 0 => addrs.push(sa),
                _ => {
                    return fail(
                        &addr_path,
                        format!(
                            "invalid address {text:?} (expected IP:port, e.g. 127.0.0.1:7001 \
                             or \"[::1]:7001\", port 1-65535)"
                        ),
                    )
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        let identity = match get(item, "identity") {
            None => None,
            Some(v) => {
                let id_path = key_path(&item_path, "identity");
                let id = string(v, &id_path)?.to_ascii_lowercase();
                crate::identity::config::check_dns_name(&id).or_else(|m| fail(&id_path, m))?;
                Some(id)
            }
        };
        out.push((port, addrs, identity));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::destination::update;
    use crate::proto::net::TcpAddress;

    #[track_caller]
    pub(super) fn mesh(text: &str) -> Mesh {
        parse(text).unwrap_or_else(|e| panic!("should parse: {e}"))
    }

    #[track_caller]
    pub(super) fn error(text: &str) -> String {
        match parse(text) {
            Ok(m) => panic!("should fail, parsed {m:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[track_caller]
    pub(super) fn profile(m: &Mesh, path: &str) -> DestinationProfile {
        m.profile(path).expect("valid path")
    }

    /// A ServiceProfile document named `name` whose `spec` is `spec` (indented two spaces).
    pub(super) fn sp(name: &str, spec: &str) -> String {
        format!(
            "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\n\
             metadata:\n  name: {name}\nspec:\n{spec}"
        )
    }

    fn route_names(p: &DestinationProfile) -> Vec<&str> {
        p.routes
            .iter()
            .map(|r| r.metrics_labels["route"].as_str())
            .collect()
    }

    fn addrs(list: &[&str]) -> EndpointsView {
        EndpointsView::Addrs(
            list.iter()
                .map(|a| a.parse().expect("test address"))
                .collect(),
            None,
        )
    }

    fn default_budget() -> MessageField<crate::proto::destination::RetryBudget> {
        MessageField::some(default_retry_budget())
    }

    #[test]
    fn example_file_parses() {
        let m = mesh(include_str!("../../examples/mesh.yaml"));
        assert_eq!((m.profile_count(), m.endpoints_count()), (2, 2));
        let books = profile(&m, "books.default.svc.cluster.local:7000");
        assert_eq!(
            route_names(&books),
            ["GET /books", "GET /books/{id}", "POST /books", "GET /flaky"]
        );
        let flaky = &books.routes[3];
        assert!(flaky.is_retryable);
        assert_eq!(flaky.timeout.seconds, 2);
        assert!(flaky.response_classes[0].is_failure);
        assert!(!books.routes[2].is_retryable);
        assert_eq!(books.retry_budget.min_retries_per_second, 10);
        let authors = profile(&m, "authors.default.svc.cluster.local:7000");
        assert_eq!(route_names(&authors), ["GET /authors/{id}"]);
        assert_eq!(authors.retry_budget, default_budget());
        assert_eq!(
            m.endpoints("books.default.svc.cluster.local:7000"),
            Ok(addrs(&["127.0.0.1:7001"]))
        );
        assert_eq!(
            m.endpoints("authors.default.svc.cluster.local:7000"),
            Ok(addrs(&["127.0.0.1:7002"]))
        );
    }

    #[test]
    fn a_listed_pod_address_gets_its_identity_as_the_profiles_endpoint() {
        let m = mesh(
            "apiVersion: spoke.dev/v1alpha1\nkind: Endpoints\nmetadata:\n  name: books.ns.svc.cluster.local\n\
             spec:\n  ports:\n  - port: 7000\n    \
             identity: books.ns.serviceaccount.identity.linkerd.cluster.local\n    \
             addresses:\n    - 10.1.0.7:7000\n",
        );
        let p = profile(&m, "10.1.0.7:7000");
        assert_eq!(p.fully_qualified_name, "");
        let ep = p.endpoint.as_ref().expect("an endpoint");
        assert_eq!(
            ep.tls_identity.dns_like_identity().name,
            "books.ns.serviceaccount.identity.linkerd.cluster.local"
        );
        assert_eq!(ep.addr.port, 7000);
        // Another port of the same IP, or an address no document lists: none.
        assert!(profile(&m, "10.1.0.7:7001").endpoint.is_none());
        assert!(profile(&m, "10.1.0.8:7000").endpoint.is_none());
    }

    #[test]
    fn kubectl_list_output_with_metadata_noise() {
        let text = r#"apiVersion: v1
items:
- apiVersion: linkerd.io/v1alpha2
  kind: ServiceProfile
  metadata:
    annotations:
      kubectl.kubernetes.io/last-applied-configuration: |
        {"apiVersion":"linkerd.io/v1alpha2","kind":"ServiceProfile","metadata":{"annotations":{},"name":"books.default.svc.cluster.local","namespace":"default"},"spec":{"routes":[{"condition":{"method":"GET","pathRegex":"/books"},"name":"GET /books"}]}}
    creationTimestamp: "2024-05-01T10:00:00Z"
    generation: 3
    labels:
      app.kubernetes.io/part-of: books
    managedFields:
    - apiVersion: linkerd.io/v1alpha2
      fieldsType: FieldsV1
      fieldsV1:
        f:metadata:
          f:annotations:
            .: {}
            f:kubectl.kubernetes.io/last-applied-configuration: {}
        f:spec:
          .: {}
          f:routes: {}
      manager: kubectl-client-side-apply
      operation: Update
      time: "2024-05-01T10:00:00Z"
    name: books.default.svc.cluster.local
    namespace: default
    resourceVersion: "123456"
    uid: 0b3c8f3e-6c1e-4a55-9a7a-1d2b3c4d5e6f
  spec:
    opaquePorts:
    - "3306"
    routes:
    - condition:
        method: GET
        pathRegex: /books
      name: GET /books
  status: {}
- apiVersion: linkerd.io/v1alpha1
  kind: ServiceProfile
  metadata:
    annotations:
      kubectl.kubernetes.io/last-applied-configuration: '{"kind":"ServiceProfile"}'
    name: authors.default.svc.cluster.local
  spec:
    routes:
    - condition:
        pathRegex: /authors
      name: authors
kind: List
metadata:
  resourceVersion: ""
"#;
        let m = mesh(text);
        assert_eq!(m.profile_count(), 2);
        let books = profile(&m, "books.default.svc.cluster.local:80");
        assert_eq!(route_names(&books), ["GET /books"]);
        assert_eq!(books.retry_budget, default_budget());
        assert!(!books.opaque_protocol);
        assert!(profile(&m, "books.default.svc.cluster.local:3306").opaque_protocol);
        let authors = profile(&m, "authors.default.svc.cluster.local:80");
        assert_eq!(route_names(&authors), ["authors"]);
    }

    #[test]
    fn errors_inside_list_items_name_the_item() {
        let item = sp("a.b", "  routes: {}\n").replace('\n', "\n  ");
        let text = format!("apiVersion: v1\nkind: List\nitems:\n- {item}\n");
        assert_eq!(
            error(&text),
            "doc 1, items[0] (ServiceProfile a.b): spec.routes: expected a list, found a mapping"
        );
        let nested = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: List}\n";
        assert!(error(nested).contains("doc 1, items[0] (List): a List inside a List"));
        assert!(error("apiVersion: v1\nkind: List\nitems: 3\n")
            .contains("doc 1 (List): items: expected a list, found an integer"));
    }

    #[test]
    fn multiple_documents_empty_ones_and_comments() {
        let text = format!(
            "# leading comment\n---\n---\n{}\n---\n# only a comment\n---\n{}\n...\n",
            sp("a.ns.svc.cluster.local", "  routes: []\n"),
            sp(
                "b.ns.svc.cluster.local",
                "  routes:\n  - {name: r, condition: {method: GET}}\n"
            ),
        );
        let m = mesh(&text);
        assert_eq!(m.profile_count(), 2);
        assert_eq!(route_names(&profile(&m, "b.ns.svc.cluster.local:1")), ["r"]);
        assert_eq!(mesh("").profile_count(), 0);
        assert_eq!(mesh("# nothing here\n").profile_count(), 0);
        assert_eq!(mesh("---\n---\n").profile_count(), 0);
    }

    #[test]
    fn bad_duration_names_document_and_field_path() {
        let text = format!(
            "{}\n---\n{}",
            sp("authors.default.svc.cluster.local", "  routes: []\n"),
            sp(
                "books.default.svc.cluster.local",
                "  routes:\n  - {name: a, condition: {method: GET}}\n  \
                 - {name: b, condition: {method: GET}, timeout: 1x}\n"
            )
        );
        assert_eq!(
            error(&text),
            "doc 2 (ServiceProfile books.default.svc.cluster.local): spec.routes[1].timeout: \
             invalid duration \"1x\": unknown unit \"x\" (expected one of ns, us, ms, s, m, h)"
        );
    }

    #[test]
    fn structural_errors() {
        assert_eq!(
            error("apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nspec: {}\n"),
            "doc 1 (ServiceProfile): metadata.name: missing (expected a string)"
        );
        assert!(error(&sp("a.b", "")).contains("doc 1 (ServiceProfile a.b): spec: missing"));
        assert!(error(&sp("a.b", "  - 1\n")).contains("spec: expected a mapping, found a list"));
        assert!(error("- just\n- a list\n").starts_with("doc 1: expected a mapping"));
        assert_eq!(
            error("kind: ServiceProfile\n"),
            "doc 1: apiVersion: missing"
        );
        assert_eq!(
            error("apiVersion: v1\nkind: [x]\n"),
            "doc 1: kind: expected a string, found a list"
        );
        assert!(error("key: [unclosed\n").starts_with("not valid YAML: "));
        assert!(error("a: 1\na: 2\n").starts_with("not valid YAML: "));
    }

    #[test]
    fn unknown_kinds_are_skipped() {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: books\nspec:\n  ports: [{{port: 80}}]\n\
             ---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: books\nsubsets: []\n\
             ---\napiVersion: linkerd.io/v1beta9\nkind: ServiceProfile\nmetadata:\n  name: x.s\nspec: 7\n\
             ---\n{}",
            sp("books.default.svc.cluster.local", "  routes: []\n")
        );
        let m = mesh(&text);
        assert_eq!((m.profile_count(), m.endpoints_count()), (1, 0));
        assert_eq!(profile(&m, "x.s:80").routes.len(), 0);
    }

    #[test]
    fn duplicates_are_errors() {
        let twice = format!(
            "{}\n---\n{}",
            sp("d.s", "  routes: []\n"),
            sp("D.s.", "  routes: []\n")
        );
        assert_eq!(
            error(&twice),
            "doc 2: duplicate ServiceProfile d.s (first defined in doc 1)"
        );
        let endpoints = "apiVersion: spoke.dev/v1alpha1\nkind: Endpoints\nmetadata: {name: e.s}\n\
            spec: {ports: [{port: 80}]}\n---\napiVersion: spoke.dev/v1alpha1\nkind: Endpoints\n\
            metadata: {name: e.s}\nspec: {ports: [{port: 81}, {port: 80}]}\n";
        assert_eq!(
            error(endpoints),
            "doc 2: duplicate Endpoints e.s:80 (first defined in doc 1)"
        );
        let same_doc = "apiVersion: spoke.dev/v1alpha1\nkind: Endpoints\nmetadata: {name: e.s}\n\
            spec: {ports: [{port: 80}, {port: 80}]}\n";
        assert!(error(same_doc).contains("spec.ports[1].port: port 80 is listed twice"));
    }

    const ENDPOINTS: &str = r#"apiVersion: spoke.dev/v1alpha1
kind: Endpoints
metadata:
  name: books.default.svc.cluster.local
spec:
  ports:
  - port: 7000
    addresses:
    - 127.0.0.1:7002
    - "[::1]:7002"
    - 127.0.0.1:7001
    - 127.0.0.1:7002
  - port: 7001
    addresses: []
  - port: 7002
"#;

    #[test]
    fn endpoints_documents() {
        let m = mesh(ENDPOINTS);
        let get = |path: &str| m.endpoints(path).expect("valid path");
        assert_eq!(
            get("books.default.svc.cluster.local:7000"),
            addrs(&["127.0.0.1:7001", "127.0.0.1:7002", "[::1]:7002"])
        );
        assert_eq!(get("books.default.svc.cluster.local:7001"), addrs(&[]));
        assert_eq!(get("books.default.svc.cluster.local:7002"), addrs(&[]));
        assert_eq!(
            get("books.default.svc.cluster.local:7003"),
            EndpointsView::Unknown
        );
        assert_eq!(
            get("authors.default.svc.cluster.local:7000"),
            EndpointsView::Unknown
        );
    }

    #[test]
    fn bad_endpoint_address_names_the_field() {
        let bad = ENDPOINTS.replace("127.0.0.1:7001", "localhost:7001");
        assert_eq!(
            error(&bad),
            "doc 1 (Endpoints books.default.svc.cluster.local): spec.ports[0].addresses[2]: \
             invalid address \"localhost:7001\" (expected IP:port, e.g. 127.0.0.1:7001 or \
             \"[::1]:7001\", port 1-65535)"
        );
        for addr in [
            "127.0.0.1",
            "::1:80",
            "127.0.0.1:0",
            "127.0.0.1:70000",
            "'[::1]'",
        ] {
            let bad = ENDPOINTS.replace("127.0.0.1:7001", addr);
            let message = error(&bad);
            assert!(
                message.contains("spec.ports[0].addresses[2]: invalid address"),
                "{addr}: {message}"
            );
        }
        // Unquoted, `[::1]:7002` is not a string to YAML.
        let unquoted = ENDPOINTS.replace("\"[::1]:7002\"", "[::1]:7002");
        assert!(parse(&unquoted).is_err());
        let port = ENDPOINTS.replace("port: 7001", "port: 0");
        assert!(error(&port).contains("spec.ports[1].port: port 0 is outside 1-65535"));
        let no_ports = "apiVersion: spoke.dev/v1alpha1\nkind: Endpoints\nmetadata: {name: e.s}\n\
                        spec: {}\n";
        assert!(error(no_ports).contains("(Endpoints e.s): spec.ports: missing"));
    }

    #[test]
    fn lookups_ignore_trailing_dot_and_case() {
        let m = mesh(&format!(
            "{}\n---\n{ENDPOINTS}",
            sp(
                "books.default.svc.cluster.local.",
                "  routes: [{name: r, condition: {method: GET}}]\n"
            )
        ));
        let plain = profile(&m, "books.default.svc.cluster.local:7000");
        assert_eq!(route_names(&plain), ["r"]);
        assert_eq!(
            plain.fully_qualified_name,
            "books.default.svc.cluster.local"
        );
        assert_eq!(profile(&m, "books.default.svc.cluster.local.:7000"), plain);
        assert_eq!(profile(&m, "Books.Default.svc.cluster.local:7000"), plain);
        assert_eq!(
            m.endpoints("books.default.svc.cluster.local.:7001"),
            Ok(addrs(&[]))
        );
    }

    #[test]
    fn invalid_paths() {
        let m = Mesh::default();
        for path in [
            "books",
            "books:",
            "books:0",
            "books:65536",
            "books:http",
            ":80",
            ".:80",
        ] {
            let invalid =
                |r: Result<(), LookupError>| matches!(r, Err(LookupError::InvalidArgument(_)));
            assert!(invalid(m.profile(path).map(drop)), "{path}");
            assert!(invalid(m.endpoints(path).map(drop)), "{path}");
        }
        assert_eq!(
            m.profile("books").map(drop).unwrap_err().to_string(),
            "invalid argument: path \"books\": expected name:port"
        );
    }

    #[test]
    fn default_profile_when_none_exists() {
        let m = Mesh::default();
        let mut want = DestinationProfile::new();
        want.fully_qualified_name = "web.default.svc.cluster.local".into();
        want.retry_budget = default_budget();
        assert_eq!(profile(&m, "web.default.svc.cluster.local.:8080"), want);
        let budget = &want.retry_budget;
        assert_eq!(
            (
                budget.retry_ratio,
                budget.min_retries_per_second,
                budget.ttl.seconds
            ),
            (0.2, 10, 10)
        );
        let ip = profile(&m, "10.0.0.1:80");
        assert_eq!(ip.fully_qualified_name, "");
        assert_eq!(ip.retry_budget, default_budget());
        assert_eq!(profile(&m, "[::1]:80").fully_qualified_name, "");
        // A profile without retryBudget gets the same default budget.
        let bare = mesh(&sp("p.s", "  routes: []\n"));
        assert_eq!(profile(&bare, "p.s:1").retry_budget, default_budget());
    }

    /// A readable form of updates: `add a b`, `remove a`, `none exists=true`.
    fn describe(updates: &[crate::proto::destination::Update]) -> Vec<String> {
        let addr = |t: &TcpAddress| {
            let ip = std::net::Ipv4Addr::from(t.ip.ipv4());
            format!("{ip}:{}", t.port)
        };
        let join = |list: Vec<String>| list.join(" ");
        updates
            .iter()
            .map(|u| match &u.update {
                Some(update::Update::Add(set)) => {
                    assert!(set.addrs.iter().all(|w| w.weight == 10_000));
                    format!(
                        "add {}",
                        join(set.addrs.iter().map(|w| addr(&w.addr)).collect())
                    )
                }
                Some(update::Update::Remove(set)) => {
                    format!("remove {}", join(set.addrs.iter().map(addr).collect()))
                }
                Some(update::Update::NoEndpoints(ne)) => format!("none exists={}", ne.exists),
                None => "empty".to_string(),
            })
            .collect()
    }

    #[test]
    fn endpoint_updates_for_new_streams() {
        let some = addrs(&["10.0.0.1:80", "10.0.0.2:80"]);
        let first = |view: &EndpointsView| describe(&endpoint_updates(None, view));
        assert_eq!(first(&some), ["add 10.0.0.1:80 10.0.0.2:80"]);
        assert_eq!(first(&addrs(&[])), ["none exists=true"]);
        assert_eq!(first(&EndpointsView::Unknown), ["none exists=false"]);
    }

    #[test]
    fn endpoint_updates_for_changes() {
        let a = addrs(&["10.0.0.1:80", "10.0.0.2:80"]);
        let b = addrs(&["10.0.0.2:80", "10.0.0.3:80"]);
        let one = addrs(&["10.0.0.1:80"]);
        let three = addrs(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.9:80"]);
        let empty = addrs(&[]);
        let unknown = EndpointsView::Unknown;
        let cases: [(&EndpointsView, &EndpointsView, &[&str]); 13] = [
            (&a, &a, &[]),
            (&empty, &empty, &[]),
            (&unknown, &unknown, &[]),
            (&a, &b, &["add 10.0.0.3:80", "remove 10.0.0.1:80"]),
            (&b, &a, &["add 10.0.0.1:80", "remove 10.0.0.3:80"]),
            (&a, &one, &["remove 10.0.0.2:80"]),
            (&a, &three, &["add 10.0.0.9:80"]),
            (&a, &empty, &["none exists=true"]),
            (&a, &unknown, &["none exists=false"]),
            (&empty, &a, &["add 10.0.0.1:80 10.0.0.2:80"]),
            (&unknown, &a, &["add 10.0.0.1:80 10.0.0.2:80"]),
            (&empty, &unknown, &["none exists=false"]),
            (&unknown, &empty, &["none exists=true"]),
        ];
        for (old, new, want) in cases {
            let got = describe(&endpoint_updates(Some(old), new));
            assert_eq!(got, want, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn tcp_addresses_in_network_order() {
        let v4 = tcp_address(SocketAddr::from(([10, 1, 2, 3], 8080)));
        assert_eq!((v4.ip.ipv4(), v4.port), (0x0a01_0203, 8080));
        let v6 = tcp_address("[2001:db8::1:2]:443".parse().expect("literal"));
        assert_eq!(v6.ip.ipv6().first, 0x2001_0db8_0000_0000);
        assert_eq!(v6.ip.ipv6().last, 0x0000_0000_0001_0002);
        assert_eq!(v6.port, 443);
    }
}
