//! Mutual TLS with Linkerd's identities, over rustls: the one module that
//! names rustls's types. `config` builds the client and server settings for
//! the certificate in force (pure; the event-loop thread rebuilds them when
//! the identity thread sends new credentials); `stream` pumps one connection
//! by hand over a non-blocking socket (event-loop thread); `relay` carries
//! gRPC's control-plane connections over TLS (one relay thread each);
//! `terminator` is a TLS front for a plaintext server, for the tests;
//! `provider` is the crypto provider Cargo's features choose (*ring* or
//! aws-lc-rs), the only place that names it.

pub mod config;
pub mod provider;
pub mod relay;
pub mod stream;
pub mod terminator;

pub use config::TlsConfigs;
pub use relay::Relays;
pub use rustls::{ClientConfig, ServerConfig};
pub use stream::{is_tls_error, HalfClose, TlsStream};

/// The ALPN protocol of Linkerd's opaque transport.
pub const TRANSPORT_ALPN: &[u8] = b"transport.l5d.io/v1";

/// The data plane's TLS as the event loop holds it.
#[derive(Debug, Default)]
pub enum MeshTls {
    /// Identity is off: meshed endpoints are reached in plaintext, and
    /// nothing inbound is terminated.
    #[default]
    Disabled,
    /// Identity is on, and no certificate is in force yet: TLS can be
    /// neither offered nor served.
    Awaiting,
    /// The certificate in force.
    Ready(Box<TlsConfigs>),
}

impl MeshTls {
    pub fn configs(&self) -> Option<&TlsConfigs> {
        match self {
            MeshTls::Ready(c) => Some(c),
            _ => None,
        }
    }
}
