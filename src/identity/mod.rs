//! The workload's identity: obtaining and renewing its certificate with
//! Linkerd's `io.linkerd.proxy.identity.Identity/Certify`, and the embedded
//! controller's certificate authority.
//!
//! ```text
//!  [identity] thread (client)              embedded controller (grpcio threads)
//!    key + CSR (creds::Documents)            controller::identity: token check
//!    token file -> Certify ---------------->   issuer::Issuer: CSR check, sign leaf
//!    validate (creds::validate) <-----------   leaf + intermediates + valid_until
//!    publish Arc<Credentials>, newest wins, + mio::Waker
//!       v
//!  [event-loop] keeps the newest credentials (data-plane TLS uses them later)
//! ```
//!
//! Pure cores: `creds` (documents, validation, refresh schedule), `issuer`
//! (CSR checks, leaf signing), `config` (variables). The one thread is in
//! `client`. Identity is off unless `LINKERD2_PROXY_IDENTITY_LOCAL_NAME` and
//! `_TRUST_ANCHORS` are set; then `/ready` waits for the first certificate.
//! The certificate in force is also kept in a [`CurrentCreds`] for TLS to
//! the control plane.

pub mod client;
pub mod config;
pub mod creds;
pub mod issuer;

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crossbeam_channel::Receiver;
use rustls_pki_types::CertificateDer;

use crate::updates::Stamped;

/// A certificate in force and its key, as the event loop receives them.
#[derive(Clone)]
pub struct Credentials {
    /// The local identity the certificate names.
    pub name: String,
    /// PKCS#8 DER.
    pub key_pkcs8: Arc<[u8]>,
    /// The leaf first, then its intermediates (DER).
    pub chain: Vec<CertificateDer<'static>>,
    pub not_after: SystemTime,
    /// The trust anchors peers' certificates must chain to.
    pub anchors: creds::Anchors,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .field("chain", &self.chain.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Whether the certificate may still be presented at `now`.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        now < self.not_after
    }
}

/// The event loop's end of the identity channel.
pub type CredentialsRx = Receiver<Stamped<Arc<Credentials>>>;

/// The certificate in force, for the threads that dial the control plane
/// (`control`, `identity`): the identity thread sets it before it publishes
/// to the loop; a new connection takes the newest, one already open keeps
/// the one it was made with. Cheap to clone; all clones share the value.
#[derive(Clone, Default)]
pub struct CurrentCreds(Arc<RwLock<Option<Arc<Credentials>>>>);

impl std::fmt::Debug for CurrentCreds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CurrentCreds").field(&self.get()).finish()
    }
}

impl CurrentCreds {
    /// The newest credentials, if any were obtained yet.
    pub fn get(&self) -> Option<Arc<Credentials>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, creds: Arc<Credentials>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(creds);
    }
}
