//! The `identity` thread: obtains the workload's certificate with
//! `Identity/Certify` and renews it, publishing each new one to the event loop.
//!
//! One named thread, started by `app` when identity is enabled and joined on
//! shutdown (dropping [`IdentityThread`] hangs up and joins). It blocks on
//! gRPC (its own direct channel to the identity service, dialed like the
//! destination connection in `discovery::control`) and on waits that the
//! hangup ends at once. Each round reads the token file (it may be rotated),
//! sends the same CSR, validates the answer (`creds::validate`) and only then
//! publishes it; the next round is at 70% of the lifetime (`creds::refresh_in`).
//! A failed round is counted by reason and retried after an exponential
//! backoff with jitter; the certificate in force stays until it expires.
//!
//! With the service's identity configured (`LINKERD2_PROXY_IDENTITY_SVC_NAME`
//! and a remote service), the connection is TLS (`discovery::control`'s
//! dial with [`ControlTls`]): the server must prove that identity against the
//! trust anchors; the first Certify offers no client certificate, later ones
//! the certificate in force. Otherwise it is plaintext gRPC. Each certificate
//! obtained is also set in [`CurrentCreds`] before it is published.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use futures::channel::oneshot;
use futures::future::{select, Either};
use grpcio::{CallOption, Client, Environment, RpcStatusCode};

use super::config::ProxyIdentity;
use super::creds::{self, refresh_in, Documents};
use super::{Credentials, CurrentCreds};
use crate::config::BackoffConfig;
use crate::discovery::backoff::Backoff;
use crate::discovery::control::{self, ControlTls};
use crate::discovery::wait::block_on_timeout;
use crate::metrics::{Counter, CounterFamily, Gauge, Labels, MetricsError, Registry};
use crate::proto::identity::{CertifyRequest, CertifyResponse};
use crate::proto::METHOD_CERTIFY;
use crate::updates::SnapshotTx;

/// Bounds the TCP connect and the gRPC probe of a dial (as for the
/// destination connection), and each `Certify` call.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The identity families, registered once.
#[derive(Clone)]
pub struct IdentityMetrics {
    expiration: Gauge,
    refreshes: Counter,
    errors: CounterFamily,
}

impl IdentityMetrics {
    pub fn new(registry: &Registry) -> Result<IdentityMetrics, MetricsError> {
        Ok(IdentityMetrics {
            expiration: registry
                .gauge_family(
                    "identity_cert_expiration_timestamp_seconds",
                    "When the certificate in force expires, in seconds since the epoch.",
                )?
                .series(Labels::new()),
            refreshes: registry
                .counter_family(
                    "identity_cert_refresh_count",
                    "Certificates obtained (the first one and every renewal).",
                )?
                .series(Labels::new()),
            errors: registry.counter_family(
                "spoke_identity_errors_total",
                "Certify rounds that failed, by reason.",
            )?,
        })
    }

    fn error(&self, reason: Reason) {
        self.errors
            .series(Labels::new().with("reason", reason.as_str()))
            .inc();
    }
}

/// Why a round failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The token file could not be read.
    Token,
    /// No answer: the service could not be reached or the call broke.
    Unavailable,
    /// The service refused the request (a bad token or CSR).
    Rejected,
    /// The TLS handshake with the service failed (its certificate does not
    /// verify or does not name the service's identity).
    Tls,
    /// The answer's certificate is not trusted, not for this name or key, or
    /// malformed.
    InvalidCertificate,
    /// The certificate in force expired before a renewal succeeded.
    Expired,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Token => "token",
            Reason::Unavailable => "unavailable",
            Reason::Rejected => "rejected",
            Reason::Tls => "tls",
            Reason::InvalidCertificate => "invalid_certificate",
            Reason::Expired => "expired",
        }
    }
}

/// Whether a status from the service means it refused this request (rather
/// than that it could not be reached).
pub fn refused(code: RpcStatusCode) -> bool {
    matches!(
        code,
        RpcStatusCode::INVALID_ARGUMENT
            | RpcStatusCode::FAILED_PRECONDITION
            | RpcStatusCode::PERMISSION_DENIED
            | RpcStatusCode::UNAUTHENTICATED
    )
}

/// Owns the `identity` thread: dropping it stops and joins the thread.
pub struct IdentityThread {
    hangup: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for IdentityThread {
    fn drop(&mut self) {
        drop(self.hangup.take());
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                log::error!("the identity thread panicked");
            }
        }
    }
}

/// Everything the thread needs.
pub struct Start {
    pub cfg: ProxyIdentity,
    pub docs: Documents,
    /// `host:port` of the identity service.
    pub addr: String,
    pub env: Arc<Environment>,
    pub backoff: BackoffConfig,
    pub tx: SnapshotTx<Arc<Credentials>>,
    /// Set with every new certificate, before it is published.
    pub current: CurrentCreds,
    /// TLS to the service, when its identity is configured.
    pub tls: Option<ControlTls>,
    /// Set once the first certificate is published (`/ready`).
    pub ready: Arc<AtomicBool>,
    pub metrics: IdentityMetrics,
}

/// Loads or generates the key and CSR (the only step that can fail at start).
pub fn documents(cfg: &ProxyIdentity) -> Result<Documents, String> {
    if let Some(dir) = &cfg.dir {
        if let Some(docs) = Documents::load(dir)? {
            log::info!("identity: using {}/key.p8 and csr.der", dir.display());
            return Ok(docs);
        }
        log::info!(
            "identity: no key.p8 in {}; generating a key and CSR in memory",
            dir.display()
        );
    }
    Documents::generate(&cfg.local_name)
}

/// Starts the `identity` thread.
pub fn start(s: Start) -> io::Result<IdentityThread> {
    let (hangup, mut hung) = oneshot::channel();
    let handle = std::thread::Builder::new()
        .name("identity".into())
        .spawn(move || run(s, &mut hung))?;
    Ok(IdentityThread {
        hangup: Some(hangup),
        handle: Some(handle),
    })
}

fn run(s: Start, hangup: &mut oneshot::Receiver<()>) {
    let mut backoff = Backoff::new(s.backoff);
    let mut client: Option<Client> = None;
    let mut current: Option<SystemTime> = None;
    let mut expired_counted = false;
    match &s.tls {
        Some(t) => log::info!(
            "identity: certifying {} with the identity service at {} over TLS (server {}; \
             crypto provider {})",
            s.cfg.local_name,
            s.addr,
            t.name,
            crate::tls::provider::NAME
        ),
        None => log::info!(
            "identity: certifying {} with the identity service at {} (plaintext gRPC; \
             crypto provider {})",
            s.cfg.local_name,
            s.addr,
            crate::tls::provider::NAME
        ),
    }
    loop {
        let wait = match round(&s, &mut client, hangup) {
            Ok(Some(creds)) => {
                let not_after = creds.not_after;
                s.metrics.expiration.set(creds::unix_seconds(not_after));
                s.metrics.refreshes.inc();
                let creds = Arc::new(creds);
                s.current.set(creds.clone());
                s.tx.publish(creds);
                s.ready.store(true, Ordering::Release);
                current = Some(not_after);
                expired_counted = false;
                backoff.reset();
                let now = SystemTime::now();
                let wait = refresh_in(now, not_after, s.cfg.min_refresh, s.cfg.max_refresh);
                log::info!(
                    "identity: certified {}; valid for {:?}, renewing in {wait:?}",
                    s.cfg.local_name,
                    not_after.duration_since(now).unwrap_or_default()
                );
                wait
            }
            Ok(None) => return,
            Err((reason, msg)) => {
                s.metrics.error(reason);
                let delay = backoff.next_delay();
                log::warn!("identity: {msg}; retrying in {delay:?}");
                if let Some(at) = current {
                    if SystemTime::now() >= at && !expired_counted {
                        expired_counted = true;
                        s.metrics.error(Reason::Expired);
                        log::error!("identity: the certificate in force has expired");
                    }
                }
                delay
            }
        };
        if block_on_timeout(&mut *hangup, Some(wait)).is_some() {
            return;
        }
    }
}

type Failure = (Reason, String);

/// One Certify round. `Ok(None)`: hung up during the call.
fn round(
    s: &Start,
    client: &mut Option<Client>,
    hangup: &mut oneshot::Receiver<()>,
) -> Result<Option<Credentials>, Failure> {
    let token = std::fs::read(&s.cfg.token_file).map_err(|e| {
        (
            Reason::Token,
            format!("cannot read {}: {e}", s.cfg.token_file.display()),
        )
    })?;
    // Kept across rounds; dropped (and dialed again next round) when a call
    // fails at the transport.
    let c = match client.take() {
        Some(c) => c,
        None => control::dial(&s.env, &s.addr, DIAL_TIMEOUT, s.tls.as_ref()).map_err(|e| {
            let reason = if crate::tls::is_tls_error(&e) {
                Reason::Tls
            } else {
                Reason::Unavailable
            };
            (
                reason,
                format!("cannot reach the identity service at {}: {e}", s.addr),
            )
        })?,
    };
    let mut req = CertifyRequest::new();
    req.identity = s.cfg.local_name.clone();
    req.token = token;
    req.certificate_signing_request = s.docs.csr.clone();
    let call = c
        .unary_call_async(
            &METHOD_CERTIFY,
            &req,
            CallOption::default().timeout(CALL_TIMEOUT),
        )
        .map_err(|e| (Reason::Unavailable, format!("cannot start Certify: {e}")))?;
    let mut both = select(call, &mut *hangup);
    let answer = match block_on_timeout(&mut both, None) {
        Some(Either::Left((answer, _))) => answer,
        _ => return Ok(None),
    };
    let resp: CertifyResponse = match answer {
        Ok(r) => {
            *client = Some(c);
            r
        }
        Err(grpcio::Error::RpcFailure(status)) if refused(status.code()) => {
            *client = Some(c);
            return Err((
                Reason::Rejected,
                format!(
                    "the identity service refused the request: {:?}: {}",
                    status.code(),
                    status.message()
                ),
            ));
        }
        Err(e) => {
            // The connection may be gone: `c` is dropped, dial again next round.
            return Err((Reason::Unavailable, format!("Certify failed: {e}")));
        }
    };
    let v = creds::validate(
        &resp.leaf_certificate,
        &resp.intermediate_certificates,
        &s.cfg.anchors,
        &s.cfg.local_name,
        &s.docs,
        SystemTime::now(),
    )
    .map_err(|e| {
        (
            Reason::InvalidCertificate,
            format!("the certificate received is not used: {e}"),
        )
    })?;
    Ok(Some(Credentials {
        name: s.cfg.local_name.clone(),
        key_pkcs8: s.docs.key_pkcs8.clone(),
        chain: v.chain,
        not_after: v.not_after,
        anchors: s.cfg.anchors.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_apart_from_outages() {
        assert!(refused(RpcStatusCode::INVALID_ARGUMENT));
        assert!(refused(RpcStatusCode::FAILED_PRECONDITION));
        assert!(!refused(RpcStatusCode::UNAVAILABLE));
        assert!(!refused(RpcStatusCode::DEADLINE_EXCEEDED));
        assert!(!refused(RpcStatusCode::UNIMPLEMENTED));
    }

    #[test]
    fn metrics_render_with_linkerd_names() {
        let r = Registry::new();
        let m = IdentityMetrics::new(&r).unwrap();
        m.expiration.set(1_700_000_000);
        m.refreshes.inc();
        m.error(Reason::Rejected);
        let text = r.render_to_string();
        assert!(
            text.contains("identity_cert_expiration_timestamp_seconds 1700000000"),
            "{text}"
        );
        assert!(text.contains("identity_cert_refresh_count 1"), "{text}");
        assert!(
            text.contains("spoke_identity_errors_total{reason=\"rejected\"} 1"),
            "{text}"
        );
    }
}
