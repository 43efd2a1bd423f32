//! The embedded controller's certificate authority (pure, apart from
//! [`Issuer::from_config`] reading or writing PEM files; the controller's
//! `Certify` handler in `controller::identity` calls [`Issuer::issue`] on
//! grpcio's threads).
//!
//! The CA is loaded from `SPOKE_CONTROLLER_IDENTITY_ISSUER_CERT` / `_KEY`
//! (PEM text, or paths to PEM files), or generated (ECDSA P-256, self-signed)
//! and its certificate written where others can take it as their trust
//! anchors. A request is checked as Linkerd's identity controller checks it:
//! the CSR's signature is valid, it has exactly one DNS SAN and it equals the
//! requested identity, its CN is empty or that identity, and it has no other
//! SAN (email, IP, URI). The leaf is new (it copies nothing from the CSR but the
//! public key): that name as its DNS SAN and CN, serverAuth + clientAuth,
//! valid from 20 s before now (Linkerd's clock-skew allowance) for the
//! configured lifetime.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateSigningRequestDer;

/// Linkerd's default `issuanceLifetime`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Linkerd's `clockSkewAllowance`: leaves are valid from this long ago.
pub const CLOCK_SKEW: Duration = Duration::from_secs(20);
/// How long a generated CA certificate is valid.
const CA_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// A CA certificate and its key.
pub struct Issuer {
    issuer: rcgen::Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Issuer")
    }
}

/// A signed leaf.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub der: Vec<u8>,
    pub not_after: SystemTime,
}

/// Why a request was refused: the message goes back as `InvalidArgument`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the CA comes from (see `identity::config::IssuerConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerSource {
    /// Certificate and key, each PEM text or a path to a PEM file.
    Load { cert: String, key: String },
    /// Generate one and write its certificate (PEM) to this path.
    Generate { anchors_out: std::path::PathBuf },
}

impl Issuer {
    /// A new self-signed ECDSA P-256 CA.
    pub fn generate() -> Result<Issuer, String> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot generate the CA key: {e}"))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "spoke embedded identity CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = (now + CA_LIFETIME).into();
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("cannot sign the CA certificate: {e}"))?;
        Ok(Issuer {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// A CA from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Issuer, String> {
        let key =
            KeyPair::from_pem(key_pem).map_err(|e| format!("the issuer key is not usable: {e}"))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| format!("the issuer certificate is not usable: {e}"))?;
        Ok(Issuer {
            issuer,
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// Loads or generates the CA (and writes a generated one's certificate out).
    pub fn from_config(source: &IssuerSource) -> Result<Issuer, String> {
        match source {
            IssuerSource::Load { cert, key } => Issuer::from_pem(
                &pem_or_file(cert, "certificate")?,
                &pem_or_file(key, "key")?,
            ),
            IssuerSource::Generate { anchors_out } => {
                let issuer = Issuer::generate()?;
                write_pem(anchors_out, issuer.cert_pem())?;
                log::warn!(
                    "identity: no issuer configured; generated a CA (its key is in memory \
                     only), its certificate (the trust anchors to give workloads) is in {}",
                    anchors_out.display()
                );
                Ok(issuer)
            }
        }
    }

    /// The CA certificate, PEM: what workloads trust.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// Checks `csr` (DER) against `identity` and signs a leaf for it.
    pub fn issue(
        &self,
        identity: &str,
        csr: &[u8],
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Leaf, BadRequest> {
        let public_key = check_csr(identity, csr)?;
        let mut params = CertificateParams::new(vec![identity.to_owned()])
            .map_err(|e| BadRequest(format!("identity {identity:?} is not a DNS name: {e}")))?;
        params.distinguished_name.push(DnType::CommonName, identity);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let mut serial = [0u8; 16];
        fastrand::fill(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let not_after = now + lifetime;
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = not_after.into();
        let request = CertificateSigningRequestParams { params, public_key };
        let cert = request
            .signed_by(&self.issuer)
            .map_err(|e| BadRequest(format!("cannot sign: {e}")))?;
        Ok(Leaf {
            der: cert.der().to_vec(),
            // The encoding keeps whole seconds.
            not_after: std::time::UNIX_EPOCH
                + Duration::from_secs(
                    not_after
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs(),
                ),
        })
    }
}

/// Linkerd's `checkCSR`: returns the CSR's public key when it may be signed.
fn check_csr(identity: &str, csr: &[u8]) -> Result<rcgen::PublicKey, BadRequest> {
    let der = CertificateSigningRequestDer::from(csr);
    let parsed = CertificateSigningRequestParams::from_der(&der)
        .map_err(|e| BadRequest(format!("the CSR cannot be used: {e}")))?;
    let mut dns = Vec::new();
    for san in &parsed.params.subject_alt_names {
        match san {
            SanType::DnsName(n) => dns.push(n.as_str().to_owned()),
            other => {
                return Err(BadRequest(format!(
                    "the CSR may only have DNS SANs, it has {other:?}"
                )))
            }
        }
    }
    match dns.as_slice() {
        [one] if one.eq_ignore_ascii_case(identity) => {}
        [one] => {
            return Err(BadRequest(format!(
                "the CSR's DNS SAN {one:?} is not the requested identity {identity:?}"
            )))
        }
        _ => {
            return Err(BadRequest(format!(
                "the CSR must have exactly one DNS SAN, it has {}",
                dns.len()
            )))
        }
    }
    if let Some(value) = parsed.params.distinguished_name.get(&DnType::CommonName) {
        let cn =
            dn_text(value).ok_or_else(|| BadRequest("the CSR's CN is not a text string".into()))?;
        if !cn.is_empty() && !cn.eq_ignore_ascii_case(identity) {
            return Err(BadRequest(format!(
                "the CSR's CN {cn:?} is neither empty nor the requested identity {identity:?}"
            )));
        }
    }
    Ok(parsed.public_key)
}

/// The text of a DN value.
fn dn_text(v: &rcgen::DnValue) -> Option<String> {
    use rcgen::DnValue as V;
    Some(match v {
        V::Utf8String(s) => s.clone(),
        V::PrintableString(s) => s.as_str().to_owned(),
        V::Ia5String(s) => s.as_str().to_owned(),
        V::TeletexString(s) => s.as_str().to_owned(),
        _ => return None,
    })
}

/// PEM text as given, or the contents of the file it names.
fn pem_or_file(value: &str, what: &str) -> Result<String, String> {
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(value.to_owned());
    }
    std::fs::read_to_string(value)
        .map_err(|e| format!("cannot read the issuer {what} {value}: {e}"))
}

fn write_pem(path: &Path, pem: String) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, pem).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";

    fn csr(sans: Vec<SanType>, cn: Option<&str>) -> Vec<u8> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    fn dns(n: &str) -> SanType {
        SanType::DnsName(n.try_into().unwrap())
    }

    #[test]
    fn a_good_request_gets_a_leaf_with_both_usages() {
        let ca = Issuer::generate().unwrap();
        let now = SystemTime::now();
        for cn in [None, Some(NAME)] {
            let leaf = ca
                .issue(
                    NAME,
                    &csr(vec![dns(NAME)], cn),
                    Duration::from_secs(60),
                    now,
                )
                .unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(&leaf.der).unwrap();
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && eku.client_auth);
            let life =
                cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
            assert_eq!(life, 80, "60 s plus the 20 s skew allowance");
            let san = cert.subject_alternative_name().unwrap().unwrap().value;
            assert_eq!(san.general_names.len(), 1);
        }
    }

    #[test]
    fn requests_are_checked_as_linkerd_checks_them() {
        let ca = Issuer::generate().unwrap();
        let now = SystemTime::now();
        let refuse = |csr: Vec<u8>| ca.issue(NAME, &csr, DEFAULT_LIFETIME, now).unwrap_err().0;
        assert!(refuse(csr(vec![], None)).contains("exactly one DNS SAN, it has 0"));
        assert!(refuse(csr(vec![dns(NAME), dns("x.y")], None)).contains("it has 2"));
        assert!(refuse(csr(vec![dns("db.default.x")], None)).contains("not the requested"));
        assert!(refuse(csr(vec![dns(NAME)], Some("other"))).contains("CN \"other\""));
        let ip = SanType::IpAddress("127.0.0.1".parse().unwrap());
        assert!(refuse(csr(vec![dns(NAME), ip], None)).contains("only have DNS SANs"));
        let email = SanType::Rfc822Name("a@b.c".try_into().unwrap());
        assert!(refuse(csr(vec![dns(NAME), email], None)).contains("only have DNS SANs"));
        let uri = SanType::URI("spiffe://x/y".try_into().unwrap());
        assert!(refuse(csr(vec![dns(NAME), uri], None)).contains("only have DNS SANs"));
        assert!(refuse(b"junk".to_vec()).contains("cannot be used"));
    }

    #[test]
    fn a_ca_round_trips_through_pem_and_files() {
        let ca = Issuer::generate().unwrap();
        let dir = std::env::temp_dir().join(format!("spoke-issuer-{}", std::process::id()));
        let out = dir.join("sub").join("anchors.pem");
        let generated = Issuer::from_config(&IssuerSource::Generate {
            anchors_out: out.clone(),
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), generated.cert_pem());
        let key_pem = ca.issuer.key().serialize_pem();
        let key_path = dir.join("key.pem");
        std::fs::write(&key_path, &key_pem).unwrap();
        let loaded = Issuer::from_config(&IssuerSource::Load {
            cert: ca.cert_pem(),
            key: key_path.display().to_string(),
        })
        .unwrap();
        assert!(loaded
            .issue(
                NAME,
                &csr(vec![dns(NAME)], None),
                DEFAULT_LIFETIME,
                SystemTime::now()
            )
            .is_ok());
        let e = Issuer::from_config(&IssuerSource::Load {
            cert: ca.cert_pem(),
            key: dir.join("absent.pem").display().to_string(),
        })
        .unwrap_err();
        assert!(e.contains("cannot read the issuer key"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
