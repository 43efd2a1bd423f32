//! The embedded controller's `io.linkerd.proxy.identity.Identity/Certify`
//! service. Runs on grpcio's completion-queue threads; [`certify`] is the pure
//! decision (given the token the file allows and the CA), the service wiring
//! around it is [`service`].
//!
//! Checks, in Linkerd's order and with its status codes:
//! identity, token and CSR present (`InvalidArgument`); the identity is named
//! by a `kind: Identity` document and the token matches (`FailedPrecondition`;
//! a token file that cannot be read is `Unavailable`); the CSR passes
//! `identity::issuer`'s checks (`InvalidArgument`). The answer carries the
//! leaf (DER), no intermediates (the CA signs leaves itself), and the leaf's
//! expiry as `valid_until`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use grpcio::{RpcStatus, RpcStatusCode, Service, ServiceBuilder};
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::MessageField;

use super::mesh::TokenSource;
use crate::identity::issuer::Issuer;
use crate::proto::identity::{CertifyRequest, CertifyResponse};
use crate::proto::METHOD_CERTIFY;

/// Looks up what the file currently allows for an identity.
pub type TokenLookup = Arc<dyn Fn(&str) -> Option<TokenSource> + Send + Sync>;

/// The CA and the leaf lifetime.
pub struct Certifier {
    pub issuer: Issuer,
    pub lifetime: Duration,
    pub tokens: TokenLookup,
}

/// Decides one request.
pub fn certify(
    c: &Certifier,
    req: &CertifyRequest,
    now: SystemTime,
) -> Result<CertifyResponse, RpcStatus> {
    let status = |code, msg: String| Err(RpcStatus::with_message(code, msg));
    let id = req.identity.as_str();
    if id.is_empty() {
        return status(RpcStatusCode::INVALID_ARGUMENT, "missing identity".into());
    }
    if req.token.is_empty() {
        return status(RpcStatusCode::INVALID_ARGUMENT, "missing token".into());
    }
    if req.certificate_signing_request.is_empty() {
        return status(
            RpcStatusCode::INVALID_ARGUMENT,
            "missing certificate signing request".into(),
        );
    }
    let expected = match (c.tokens)(id) {
        Some(TokenSource::Value(v)) => v,
        Some(TokenSource::File(path)) => match std::fs::read(&path) {
            Ok(v) => v,
            Err(e) => {
                log::warn!(
                    "identity: cannot read the token file {}: {e}",
                    path.display()
                );
                return status(
                    RpcStatusCode::UNAVAILABLE,
                    format!("the token for {id} cannot be read"),
                );
            }
        },
        None => {
            return status(
                RpcStatusCode::FAILED_PRECONDITION,
                format!("identity {id} is not allowed by the controller's configuration"),
            )
        }
    };
    if !tokens_match(trim_newline(&expected), trim_newline(&req.token)) {
        return status(
            RpcStatusCode::FAILED_PRECONDITION,
            format!("the token does not authenticate {id}"),
        );
    }
    let leaf = c
        .issuer
        .issue(id, &req.certificate_signing_request, c.lifetime, now)
        .map_err(|e| RpcStatus::with_message(RpcStatusCode::INVALID_ARGUMENT, e.0))?;
    let mut resp = CertifyResponse::new();
    resp.leaf_certificate = leaf.der;
    let mut until = Timestamp::new();
    until.seconds = leaf
        .not_after
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    resp.valid_until = MessageField::some(until);
    Ok(resp)
}

fn trim_newline(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// Compares in time independent of where the bytes differ.
fn tokens_match(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The grpcio service answering `Certify` with `certifier`.
pub fn service(certifier: Arc<Certifier>) -> Service {
    ServiceBuilder::new()
        .add_unary_handler(&METHOD_CERTIFY, move |ctx, req: CertifyRequest, sink| {
            let answer = certify(&certifier, &req, SystemTime::now());
            let done = match answer {
                Ok(resp) => {
                    log::info!("identity: certified {}", req.identity);
                    sink.success(resp).boxed()
                }
                Err(status) => {
                    log::warn!(
                        "identity: refused {:?}: {:?}: {}",
                        req.identity,
                        status.code(),
                        status.message()
                    );
                    sink.fail(status).boxed()
                }
            };
            ctx.spawn(done.map(|r| {
                if let Err(e) = r {
                    log::debug!("identity: the answer was not delivered: {e}");
                }
            }));
        })
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::creds::Documents;

    const NAME: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";

    fn certifier(tokens: TokenLookup) -> Certifier {
        Certifier {
            issuer: Issuer::generate().unwrap(),
            lifetime: Duration::from_secs(60),
            tokens,
        }
    }

    fn request(identity: &str, token: &[u8], csr: Vec<u8>) -> CertifyRequest {
        let mut r = CertifyRequest::new();
        r.identity = identity.into();
        r.token = token.to_vec();
        r.certificate_signing_request = csr;
        r
    }

    #[test]
    fn tokens_and_csrs_decide_the_code() {
        let c = certifier(Arc::new(|id| {
            (id == NAME).then(|| TokenSource::Value(b"s3cret".to_vec()))
        }));
        let csr = Documents::generate(NAME).unwrap().csr;
        let now = SystemTime::now();
        let code = |r: &CertifyRequest| certify(&c, r, now).unwrap_err().code();
        let ok = certify(&c, &request(NAME, b"s3cret\n", csr.clone()), now).unwrap();
        assert!(!ok.leaf_certificate.is_empty());
        assert!(ok.valid_until.seconds > 0);
        assert_eq!(
            code(&request(NAME, b"wrong", csr.clone())),
            RpcStatusCode::FAILED_PRECONDITION
        );
        let other = "db.default.serviceaccount.identity.linkerd.cluster.local";
        let other_csr = Documents::generate(other).unwrap().csr;
        assert_eq!(
            code(&request(other, b"s3cret", other_csr)),
            RpcStatusCode::FAILED_PRECONDITION
        );
        let foreign_csr = Documents::generate(other).unwrap().csr;
        assert_eq!(
            code(&request(NAME, b"s3cret", foreign_csr)),
            RpcStatusCode::INVALID_ARGUMENT
        );
        assert_eq!(
            code(&request("", b"s3cret", csr.clone())),
            RpcStatusCode::INVALID_ARGUMENT
        );
        assert_eq!(
            code(&request(NAME, b"", csr)),
            RpcStatusCode::INVALID_ARGUMENT
        );
        assert_eq!(
            code(&request(NAME, b"s3cret", vec![])),
            RpcStatusCode::INVALID_ARGUMENT
        );
    }

    #[test]
    fn an_unreadable_token_file_is_unavailable() {
        let c = certifier(Arc::new(|_| {
            Some(TokenSource::File("/nonexistent/spoke-token".into()))
        }));
        let csr = Documents::generate(NAME).unwrap().csr;
        let e = certify(&c, &request(NAME, b"t", csr), SystemTime::now()).unwrap_err();
        assert_eq!(e.code(), RpcStatusCode::UNAVAILABLE);
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(tokens_match(b"abc", b"abc"));
        assert!(!tokens_match(b"abc", b"abd"));
        assert!(!tokens_match(b"abc", b"abcd"));
        assert_eq!(trim_newline(b"t\r\n"), b"t");
    }
}
