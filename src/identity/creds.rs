//! The workload's key material and what makes a received certificate usable
//! (pure, apart from [`Documents::load`] reading two files; used by the
//! `identity` thread in `identity::client`).
//!
//! - [`Documents`]: the private key (PKCS#8 DER) and the CSR (DER), either
//!   loaded from `LINKERD2_PROXY_IDENTITY_DIR` (`key.p8` and `csr.der`, as
//!   linkerd2-proxy-identity writes them) or generated in memory: an ECDSA
//!   P-256 key and a CSR whose only DNS SAN and CN are the local name. The
//!   same key and CSR serve every renewal, as in Linkerd.
//! - [`validate`]: a leaf and its intermediates must chain to the trust
//!   anchors (for both serverAuth and clientAuth), name the local identity as
//!   a DNS SAN, carry this workload's public key, and be valid now.
//! - [`refresh_in`]: when to renew: 70% of the remaining lifetime, clamped to
//!   the configured minimum and maximum.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::FromDer;

/// The share of a certificate's remaining lifetime after which it is renewed.
pub const REFRESH_SHARE: f64 = 0.7;

/// The trust anchors, parsed once from `LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`.
#[derive(Clone)]
pub struct Anchors {
    anchors: Arc<[TrustAnchor<'static>]>,
}

impl fmt::Debug for Anchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Anchors({} certificates)", self.anchors.len())
    }
}

impl PartialEq for Anchors {
    fn eq(&self, other: &Self) -> bool {
        self.anchors.len() == other.anchors.len()
            && self.anchors.iter().zip(other.anchors.iter()).all(|(a, b)| {
                a.subject == b.subject && a.subject_public_key_info == b.subject_public_key_info
            })
    }
}

impl Anchors {
    /// Every certificate in `pem`; at least one, each a usable anchor.
    pub fn from_pem(pem: &str) -> Result<Anchors, String> {
        let mut anchors = Vec::new();
        for (i, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
            let cert = cert.map_err(|e| format!("PEM certificate {}: {e}", i + 1))?;
            let anchor = webpki::anchor_from_trusted_cert(&cert)
                .map_err(|e| format!("certificate {} is not a usable anchor: {e}", i + 1))?;
            anchors.push(anchor.to_owned());
        }
        if anchors.is_empty() {
            return Err("no PEM CERTIFICATE block".into());
        }
        Ok(Anchors {
            anchors: anchors.into(),
        })
    }

    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// The anchors themselves (for the data plane's TLS configurations).
    pub fn as_slice(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// The workload's private key and certificate signing request.
pub struct Documents {
    /// PKCS#8 DER.
    pub key_pkcs8: Arc<[u8]>,
    /// PKCS#10 DER.
    pub csr: Vec<u8>,
    /// The key's public point, as the CSR and every leaf must carry it.
    public_key: Vec<u8>,
}

impl fmt::Debug for Documents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Documents(csr: {} bytes)", self.csr.len())
    }
}

pub const KEY_FILE: &str = "key.p8";
pub const CSR_FILE: &str = "csr.der";

impl Documents {
    /// A new ECDSA P-256 key and a CSR for `local_name`, in memory.
    pub fn generate(local_name: &str) -> Result<Documents, String> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot generate a key: {e}"))?;
        let mut params = rcgen::CertificateParams::new(vec![local_name.to_owned()])
            .map_err(|e| format!("{local_name:?} cannot be a DNS SAN: {e}"))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, local_name);
        let csr = params
            .serialize_request(&key)
            .map_err(|e| format!("cannot build the CSR: {e}"))?;
        Documents::new(key.serialize_der(), csr.der().to_vec())
    }

    /// `key.p8` and `csr.der` from `dir` when `key.p8` is there (then both
    /// must be, and match); `Ok(None)` when it is not.
    pub fn load(dir: &Path) -> Result<Option<Documents>, String> {
        let key_path = dir.join(KEY_FILE);
        let key = match std::fs::read(&key_path) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", key_path.display())),
        };
        let csr_path = dir.join(CSR_FILE);
        let csr = std::fs::read(&csr_path)
            .map_err(|e| format!("cannot read {}: {e}", csr_path.display()))?;
        Documents::new(key, csr)
            .map(Some)
            .map_err(|e| format!("{}: {e}", dir.display()))
    }

    /// Checks that `key` is a P-256 PKCS#8 key and that `csr` is a CSR for it.
    pub fn new(key: Vec<u8>, csr: Vec<u8>) -> Result<Documents, String> {
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(key.as_slice());
        let pair =
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| format!("{KEY_FILE} is not a PKCS#8 ECDSA P-256 key: {e}"))?;
        let public_key = rcgen::PublicKeyData::der_bytes(&pair).to_vec();
        let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&csr)
            .map_err(|e| format!("{CSR_FILE} is not a DER CSR: {e}"))?;
        if req
            .certification_request_info
            .subject_pki
            .subject_public_key
            .data
            != public_key
        {
            return Err(format!("{CSR_FILE} is not for the key in {KEY_FILE}"));
        }
        Ok(Documents {
            key_pkcs8: key.into(),
            csr,
            public_key,
        })
    }
}

/// A certificate ready to use: the leaf first, then its intermediates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    pub chain: Vec<CertificateDer<'static>>,
    pub not_after: SystemTime,
}

/// Why a received certificate was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a `Certify` answer before it is used (see the module docs).
pub fn validate(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    anchors: &Anchors,
    local_name: &str,
    docs: &Documents,
    now: SystemTime,
) -> Result<Validated, Invalid> {
    let bad = |what: &str, e: &dyn fmt::Display| Invalid(format!("{what}: {e}"));
    let leaf_der = CertificateDer::from(leaf.to_vec());
    let inter: Vec<CertificateDer<'static>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let ee = EndEntityCert::try_from(&leaf_der).map_err(|e| bad("the leaf is not X.509", &e))?;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let time = UnixTime::since_unix_epoch(since_epoch);
    for (usage, what) in [
        (KeyUsage::server_auth(), "serverAuth"),
        (KeyUsage::client_auth(), "clientAuth"),
    ] {
        ee.verify_for_usage(
            crate::tls::provider::CHAIN_SIG_ALGS,
            &anchors.anchors,
            &inter,
            time,
            usage,
            None,
            None,
        )
        .map_err(|e| bad(&format!("not trusted for {what}"), &e))?;
    }
    let name = ServerName::try_from(local_name)
        .map_err(|e| bad("the local name is not a DNS name", &e))?;
    ee.verify_is_valid_for_subject_name(&name)
        .map_err(|e| bad(&format!("not valid for {local_name}"), &e))?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| bad("the leaf is not X.509", &e))?;
    if parsed.public_key().subject_public_key.data != docs.public_key.as_slice() {
        return Err(Invalid("the leaf is not for this workload's key".into()));
    }
    let not_after = parsed.validity().not_after.timestamp();
    let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after).unwrap_or(0));
    let mut chain = vec![leaf_der];
    chain.extend(inter);
    Ok(Validated { chain, not_after })
}

/// How long after `now` a certificate valid until `not_after` is renewed.
pub fn refresh_in(
    now: SystemTime,
    not_after: SystemTime,
    min: Duration,
    max: Duration,
) -> Duration {
    let left = not_after.duration_since(now).unwrap_or_default();
    left.mul_f64(REFRESH_SHARE).clamp(min, max.max(min))
}

/// Seconds since the epoch, for the expiry gauge.
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::issuer::{Issuer, DEFAULT_LIFETIME};

    const NAME: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";

    fn anchors_of(issuer: &Issuer) -> Anchors {
        Anchors::from_pem(&issuer.cert_pem()).unwrap()
    }

    #[test]
    fn refresh_is_seventy_percent_clamped() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s| now + Duration::from_secs(s);
        let (min, max) = (Duration::from_secs(10), Duration::from_secs(86_400));
        assert_eq!(refresh_in(now, at(100), min, max), Duration::from_secs(70));
        assert_eq!(refresh_in(now, at(10), min, max), min, "clamped up");
        assert_eq!(
            refresh_in(now, at(1_000_000), min, max),
            max,
            "clamped down"
        );
        assert_eq!(refresh_in(now, now - Duration::from_secs(5), min, max), min);
        // A maximum below the minimum does not panic: the minimum wins.
        assert_eq!(refresh_in(now, at(100), min, Duration::from_secs(1)), min);
    }

    #[test]
    fn generated_documents_reload_and_a_mismatched_csr_is_refused() {
        let a = Documents::generate(NAME).unwrap();
        let b = Documents::generate(NAME).unwrap();
        assert!(Documents::new(a.key_pkcs8.to_vec(), a.csr.clone()).is_ok());
        let e = Documents::new(a.key_pkcs8.to_vec(), b.csr.clone()).unwrap_err();
        assert!(e.contains("not for the key"), "{e}");
        let e = Documents::new(vec![1, 2, 3], a.csr.clone()).unwrap_err();
        assert!(e.contains("key.p8"), "{e}");

        let dir = std::env::temp_dir().join(format!("spoke-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(
            Documents::load(&dir).unwrap().is_none(),
            "no key.p8: generate"
        );
        std::fs::write(dir.join(KEY_FILE), &a.key_pkcs8[..]).unwrap();
        let e = Documents::load(&dir).unwrap_err();
        assert!(e.contains("csr.der"), "{e}");
        std::fs::write(dir.join(CSR_FILE), &a.csr).unwrap();
        let loaded = Documents::load(&dir).unwrap().unwrap();
        assert_eq!(loaded.csr, a.csr);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_leaf_from_the_anchor_for_our_key_and_name_validates() {
        let issuer = Issuer::generate().unwrap();
        let docs = Documents::generate(NAME).unwrap();
        let now = SystemTime::now();
        let leaf = issuer
            .issue(NAME, &docs.csr, DEFAULT_LIFETIME, now)
            .unwrap();
        let v = validate(&leaf.der, &[], &anchors_of(&issuer), NAME, &docs, now).unwrap();
        assert_eq!(v.chain.len(), 1);
        assert_eq!(unix_seconds(v.not_after), unix_seconds(leaf.not_after));
        let left = v.not_after.duration_since(now).unwrap();
        assert!(left > DEFAULT_LIFETIME - Duration::from_secs(2), "{left:?}");
    }

    #[test]
    fn untrusted_misnamed_foreign_key_and_expired_leaves_are_refused() {
        let issuer = Issuer::generate().unwrap();
        let other = Issuer::generate().unwrap();
        let docs = Documents::generate(NAME).unwrap();
        let now = SystemTime::now();
        let leaf = issuer
            .issue(NAME, &docs.csr, DEFAULT_LIFETIME, now)
            .unwrap();
        let check = |anchors: &Anchors, name: &str, docs: &Documents, at: SystemTime| {
            validate(&leaf.der, &[], anchors, name, docs, at)
                .unwrap_err()
                .0
        };
        let e = check(&anchors_of(&other), NAME, &docs, now);
        assert!(e.contains("not trusted"), "{e}");
        let e = check(
            &anchors_of(&issuer),
            "db.default.serviceaccount.identity.x",
            &docs,
            now,
        );
        assert!(e.contains("not valid for"), "{e}");
        let foreign = Documents::generate(NAME).unwrap();
        let e = check(&anchors_of(&issuer), NAME, &foreign, now);
        assert!(e.contains("key"), "{e}");
        let e = check(
            &anchors_of(&issuer),
            NAME,
            &docs,
            now + DEFAULT_LIFETIME * 2,
        );
        assert!(e.contains("not trusted"), "{e}");
        let e = validate(b"junk", &[], &anchors_of(&issuer), NAME, &docs, now).unwrap_err();
        assert!(e.0.contains("X.509"), "{e}");
    }

    #[test]
    fn anchors_need_at_least_one_certificate() {
        assert!(Anchors::from_pem("").is_err());
        assert!(Anchors::from_pem("not pem").is_err());
        let issuer = Issuer::generate().unwrap();
        let two = format!(
            "{}{}",
            issuer.cert_pem(),
            Issuer::generate().unwrap().cert_pem()
        );
        assert_eq!(Anchors::from_pem(&two).unwrap().len(), 2);
    }
}
