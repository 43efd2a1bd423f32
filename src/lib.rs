//! spoke: a service-mesh sidecar proxy that needs no async runtime.
//!
//! ```text
//!  control plane (Linkerd Destination API over gRPC, or the embedded controller)
//!     ^ GetProfile(name:port)             ^ Get(name:port)
//!  [profile:<dst>] thread              [endpoints:<dst>] thread     one pair per live destination
//!     blocking stream loop, backoff       blocking stream loop or DNS
//!     proto -> Profile (convert)          proto -> EndpointSet (convert)
//!     +--> bounded(1) crossbeam channel, newest wins, + mio::Waker --+
//!                                                                    v
//!  [event-loop] thread: mio Poll over listeners, sockets, waker, timers
//!     destination table: name:port -> Rc<Router>, Arc<EndpointSet>, waiters
//!     accept -> original destination -> detect -> HTTP/1 | opaque tunnel
//!     HTTP/1.1 head -> target -> route -> endpoint -> upstream pool
//!     admin endpoints: /metrics /ready /live
//! ```
//!
//! Lexicon: a *destination* is a `name:port` the application talks to; its
//! *profile* holds the *routes* (request matchers with metrics labels, response
//! classes, timeout, retry policy) and the traffic split; its *endpoint set* is
//! the addresses that serve it. A *session* is one client connection; an
//! *exchange* is one request/response on it.
//!
//! Module map: `config` (environment), `discovery` (threads, conversion,
//! backoff), `updates` (snapshot channels), `profile`/`router`/`endpoints`
//! (domain types, pure), `detect` (what first bytes say, pure), `ports` and
//! `networks` (port and CIDR sets), `http1` (sans-IO HTTP/1.1), `proxy` (event loop),
//! `metrics`, `controller` (embedded Destination and Identity server),
//! `identity` (the workload's certificate: key and CSR, validation, renewal
//! thread, the embedded CA), `app` (wiring), `alloc` (the binary's allocator),
//! `devtools` (backends and a client for the demo and tests), `demo`.

// Two modules may use `unsafe`, with a proof beside each block:
// `discovery::stack` (releasing idle thread stacks) and `alloc` (the
// binary's allocator and the event loop's block cache).
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod alloc;
pub mod app;
pub mod balance;
pub mod client_hello;
pub mod config;
pub mod conn_failure;
pub mod controller;
pub mod demo;
pub mod demo_mesh;
pub mod detect;
pub mod devtools;
pub mod discovery;
pub mod duration;
pub mod endpoints;
pub mod http1;
pub mod identity;
pub mod init;
pub mod metrics;
pub mod networks;
pub mod ports;
pub mod profile;
pub mod proto;
pub mod proxy;
pub mod retry_budget;
pub mod router;
pub mod split;
pub mod tls;
pub mod transport_header;
pub mod updates;

/// The hash map of the event loop's per-request lookups (destinations, the
/// connection pool, balancer slots). Keys are authorities and socket
/// addresses: SipHash cost about 2,400 instructions per request there, a
/// seventh of the loop's work; foldhash is several times cheaper and still
/// seeded at random per process, which is the DoS resistance keys chosen by the
/// local application and the control plane need.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
