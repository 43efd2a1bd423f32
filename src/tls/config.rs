//! The data plane's TLS settings (pure; built on the event-loop thread each
//! time the identity thread sends new credentials): one rustls client and one
//! server configuration for the certificate in force, with the parameters
//! that interoperate with Linkerd's proxies.
//!
//! - TLS 1.3 only; AES-128-GCM, AES-256-GCM and CHACHA20-POLY1305; key
//!   exchange X25519, P-256, P-384; the provider Cargo's features choose
//!   (`tls::provider`: *ring* by default, or aws-lc-rs).
//! - No session resumption either way: no tickets sent, none stored, no
//!   session cache (as Linkerd).
//! - Client: SNI is the endpoint's `server_name`, the chain is verified
//!   against the trust anchors and the leaf must name that server as a DNS
//!   SAN; the workload's certificate is offered as the client certificate.
//! - Server: the workload's certificate; a client certificate is requested
//!   and verified against the anchors when offered, and a client without one
//!   is still served (Linkerd's default); the client's identity is the first
//!   DNS SAN of its leaf ([`peer_identity`]).
//! - Linkerd's opaque transport is negotiated with ALPN `transport.l5d.io/v1`:
//!   a client and a server configuration offering it are built beside the
//!   plain ones ([`TlsConfigs::client_transport`], [`TlsConfigs::server_direct`]).
//! - The server of application ports agrees on ALPN `h2` or `http/1.1` with
//!   a client that offers them ([`SERVER_ALPN`]); the client offers none
//!   (as Linkerd's, whose inbound side takes none).

use std::sync::Arc;
use std::time::SystemTime;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::provider::provider;
use crate::identity::creds::Anchors;
use crate::identity::Credentials;

/// What the inbound server agrees on with a client that offers ALPN on an
/// application port, in order of preference.
pub const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The configurations for one certificate.
pub struct TlsConfigs {
    /// The local identity: a ClientHello naming it is spoke's to terminate.
    pub local_name: Arc<str>,
    pub not_after: SystemTime,
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    client_transport: Arc<ClientConfig>,
    server_direct: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfigs")
            .field("local_name", &self.local_name)
            .finish_non_exhaustive()
    }
}

fn roots(creds: &Credentials) -> RootCertStore {
    anchor_roots(&creds.anchors)
}

fn anchor_roots(anchors: &Anchors) -> RootCertStore {
    RootCertStore {
        roots: anchors.as_slice().to_vec(),
    }
}

/// The client configuration for a connection to the control plane: the
/// server is verified against `anchors`; the workload's certificate is
/// offered when one is in force (`creds`), else none (the first `Certify`).
/// The same parameters as the data plane's.
pub fn control_client(
    anchors: &Anchors,
    creds: Option<&Credentials>,
) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("client TLS settings: {e}"))?
        .with_root_certificates(anchor_roots(anchors));
    let mut client = match creds {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), key(c))
            .map_err(|e| format!("client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    client.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(client))
}

fn key(creds: &Credentials) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(creds.key_pkcs8.to_vec()))
}

impl TlsConfigs {
    /// Both configurations for `creds`.
    pub fn new(creds: &Credentials) -> Result<TlsConfigs, String> {
        let provider = provider();
        let roots = Arc::new(roots(creds));
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("client TLS settings: {e}"))?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(creds.chain.clone(), key(creds))
            .map_err(|e| format!("client certificate: {e}"))?;
        client.resumption = rustls::client::Resumption::disabled();

        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| format!("client certificate verifier: {e}"))?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("server TLS settings: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(creds.chain.clone(), key(creds))
            .map_err(|e| format!("server certificate: {e}"))?;
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;

        let mut client_transport = client.clone();
        client_transport.alpn_protocols = vec![super::TRANSPORT_ALPN.to_vec()];
        let mut server_direct = server.clone();
        server_direct.alpn_protocols = vec![super::TRANSPORT_ALPN.to_vec()];
        // The application ports: HTTP/2 or HTTP/1.1 for a client that asks
        // (what it then speaks is detected as on any connection); Linkerd's
        // proxies offer no ALPN there, and are served as before.
        server.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(TlsConfigs {
            local_name: Arc::from(creds.name.as_str()),
            not_after: creds.not_after,
            client: Arc::new(client),
            server: Arc::new(server),
            client_transport: Arc::new(client_transport),
            server_direct: Arc::new(server_direct),
        })
    }

    pub fn client(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    pub fn server(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The client configuration offering the opaque transport's ALPN.
    pub fn client_transport(&self) -> Arc<ClientConfig> {
        self.client_transport.clone()
    }

    /// The server configuration of the direct port, agreeing on the opaque
    /// transport's ALPN when the client offers it.
    pub fn server_direct(&self) -> Arc<ServerConfig> {
        self.server_direct.clone()
    }
}

/// The name a connection asks its server for (SNI) and verifies it by.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned()).map_err(|e| format!("{name:?} is not a DNS name: {e}"))
}

/// The identity a verified peer certificate carries: its first DNS SAN, as
/// Linkerd reads it.
pub fn peer_identity(leaf: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
        _ => None,
    })
}

/// Whether `leaf` names `id` among its DNS SANs (an endpoint whose expected
/// identity differs from the name it was asked for still has to prove it).
pub fn names(leaf: &CertificateDer<'_>, id: &str) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(leaf.as_ref()) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value
        .general_names
        .iter()
        .any(|n| matches!(n, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(id)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::creds::{Anchors, Documents};
    use crate::identity::issuer::Issuer;
    use std::time::Duration;

    /// Credentials for `name`, issued by `issuer`.
    pub(crate) fn creds_for(issuer: &Issuer, name: &str, lifetime: Duration) -> Credentials {
        let docs = Documents::generate(name).unwrap();
        let issued = issuer
            .issue(name, &docs.csr, lifetime, SystemTime::now())
            .unwrap();
        Credentials {
            name: name.to_owned(),
            key_pkcs8: docs.key_pkcs8.clone(),
            chain: vec![CertificateDer::from(issued.der)],
            not_after: issued.not_after,
            anchors: Anchors::from_pem(&issuer.cert_pem()).unwrap(),
        }
    }

    #[test]
    fn configurations_build_for_an_issued_certificate() {
        let issuer = Issuer::generate().unwrap();
        let c = creds_for(
            &issuer,
            "a.ns.serviceaccount.identity.linkerd.cluster.local",
            Duration::from_secs(60),
        );
        let cfg = TlsConfigs::new(&c).unwrap();
        assert_eq!(&*cfg.local_name, c.name);
        assert_eq!(cfg.server().send_tls13_tickets, 0);
        let alpn = vec![b"transport.l5d.io/v1".to_vec()];
        assert_eq!(cfg.client_transport().alpn_protocols, alpn);
        assert_eq!(cfg.server_direct().alpn_protocols, alpn);
        assert!(cfg.client().alpn_protocols.is_empty());
        let offered: Vec<Vec<u8>> = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        assert_eq!(cfg.server().alpn_protocols, offered);
        assert_eq!(peer_identity(&c.chain[0]).as_deref(), Some(c.name.as_str()));
        assert!(names(&c.chain[0], &c.name.to_uppercase()));
        assert!(!names(
            &c.chain[0],
            "b.ns.serviceaccount.identity.linkerd.cluster.local"
        ));
        let anchors_only = control_client(&c.anchors, None).unwrap();
        assert!(!anchors_only.client_auth_cert_resolver.has_certs());
        let with_cert = control_client(&c.anchors, Some(&c)).unwrap();
        assert!(with_cert.client_auth_cert_resolver.has_certs());
    }
}
