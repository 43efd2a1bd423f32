//! The one place that names the crypto provider (pure; used by whichever
//! thread builds TLS settings or checks a certificate: the event loop, the
//! identity thread, the control-plane relays, the embedded controller).
//!
//! Cargo's `ring` feature (the default) or `aws-lc-rs` chooses it, exactly one
//! of the two. The same choice reaches rcgen (the workload's key and CSR, the
//! embedded CA's key and signatures) through Cargo.toml, so a build links one
//! provider. Whichever it is, [`provider`] reduces it to the same parameters,
//! those that interoperate with Linkerd's proxies: AES-128-GCM, AES-256-GCM
//! and CHACHA20-POLY1305; key exchange X25519, P-256, P-384.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

#[cfg(all(feature = "ring", feature = "aws-lc-rs"))]
compile_error!(
    "spoke's crypto provider: the `ring` and `aws-lc-rs` features exclude each other; \
     for aws-lc-rs build with `--no-default-features --features aws-lc-rs`"
);

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!("spoke's crypto provider: enable the `ring` feature (the default) or `aws-lc-rs`");

#[cfg(feature = "ring")]
use rustls::crypto::ring as backend;
#[cfg(feature = "ring")]
use webpki::ring as verify;

#[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
use rustls::crypto::aws_lc_rs as backend;
#[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
use webpki::aws_lc_rs as verify;

/// The provider's name as Cargo's feature spells it (for logs).
#[cfg(feature = "ring")]
pub const NAME: &str = "ring";
#[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
pub const NAME: &str = "aws-lc-rs";

/// The provider reduced to Linkerd's suites and groups.
pub fn provider() -> Arc<CryptoProvider> {
    use backend::{cipher_suite, kx_group};
    let mut p = backend::default_provider();
    p.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    p.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    Arc::new(p)
}

/// The provider with all its own defaults: for TLS that is not the mesh's
/// (the tests' applications speaking TLS of their own).
pub fn default_provider() -> Arc<CryptoProvider> {
    Arc::new(backend::default_provider())
}

/// The signature algorithms an identity chain may use (Linkerd's CA signs
/// with ECDSA P-256 SHA-256; P-384 issuers are accepted too).
pub static CHAIN_SIG_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    verify::ECDSA_P256_SHA256,
    verify::ECDSA_P256_SHA384,
    verify::ECDSA_P384_SHA256,
    verify::ECDSA_P384_SHA384,
];

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{CipherSuite, NamedGroup};

    #[test]
    fn the_provider_offers_exactly_linkerds_suites_and_groups() {
        let p = provider();
        let suites: Vec<CipherSuite> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites,
            [
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            ]
        );
        let groups: Vec<NamedGroup> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups,
            [
                NamedGroup::X25519,
                NamedGroup::secp256r1,
                NamedGroup::secp384r1
            ]
        );
    }
}
