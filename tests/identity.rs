//! The workload's identity end to end: the embedded controller with a CA
//! certifies a proxy configured with Linkerd's identity variables; renewals,
//! refusals (wrong token, bad CSR) and an untrusted issuer.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grpcio::{ChannelBuilder, Client, EnvBuilder, RpcStatusCode};
use spoke::app::App;
use spoke::config::{self, Config, MapEnv};
use spoke::controller::embedded::{Controller, STOP_GRACE};
use spoke::identity::config as id;
use spoke::identity::creds::Documents;
use spoke::identity::issuer::IssuerSource;
use spoke::proto::identity::CertifyRequest;
use spoke::proto::METHOD_CERTIFY;
use support::*;

const WEB: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const TOKEN: &str = "web-token-1";

/// A scratch directory per test, removed with everything in it when the test
/// ends (pass or fail).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(test: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("spoke-identity-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// The controller's file: no services, one identity allowed with `TOKEN`.
fn mesh_file(dir: &Path) -> PathBuf {
    let path = dir.join("mesh.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: spoke.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: {WEB}\n\
             spec:\n  token: {TOKEN}\n"
        ),
    )
    .unwrap();
    path
}

/// A proxy with the embedded controller holding `ca` (cert, key PEM), and the
/// workload's identity trusting `anchors` and presenting `token`.
fn identity_env(dir: &Path, ca: &(String, String), anchors: &str, token: &str) -> MapEnv {
    let cert = dir.join("issuer.crt");
    let key = dir.join("issuer.key");
    std::fs::write(&cert, &ca.0).unwrap();
    std::fs::write(&key, &ca.1).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    MapEnv::new()
        .set(
            config::CONTROLLER_CONFIG,
            mesh_file(dir).display().to_string(),
        )
        .set(config::OUTBOUND_LISTEN_ADDR, "127.0.0.1:0")
        .set(config::ADMIN_LISTEN_ADDR, "127.0.0.1:0")
        .set(config::INBOUND_LISTEN_ADDR, "127.0.0.1:0")
        .set(config::BACKOFF_MIN, "10ms")
        .set(config::BACKOFF_MAX, "200ms")
        .set(id::ISSUER_CERT, cert.display().to_string())
        .set(id::ISSUER_KEY, key.display().to_string())
        .set(id::LOCAL_NAME, WEB)
        .set(id::TRUST_ANCHORS, anchors)
        .set(id::TOKEN_FILE, token_file.display().to_string())
}

fn ready(app: &App) -> u16 {
    spoke::devtools::get(app.admin_addr(), "localhost", "/ready")
        .unwrap()
        .status
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn certify_client(addr: &str) -> Client {
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    Client::new(ChannelBuilder::new(env).connect(addr))
}

fn certify(
    client: &Client,
    identity: &str,
    token: &str,
    csr: Vec<u8>,
) -> Result<(), RpcStatusCode> {
    let mut req = CertifyRequest::new();
    req.identity = identity.into();
    req.token = token.as_bytes().to_vec();
    req.certificate_signing_request = csr;
    match client.unary_call(
        &METHOD_CERTIFY,
        &req,
        grpcio::CallOption::default().timeout(Duration::from_secs(5)),
    ) {
        Ok(resp) => {
            assert!(!resp.leaf_certificate.is_empty());
            Ok(())
        }
        Err(grpcio::Error::RpcFailure(s)) => Err(s.code()),
        Err(e) => panic!("Certify failed at the transport: {e}"),
    }
}

#[test]
fn the_embedded_controller_certifies_the_proxy_and_ready_waits_for_it() {
    let dir = scratch("certify");
    let ca = test_ca("test identity CA");
    let app = proxy(&identity_env(&dir, &ca, &ca.0, TOKEN));
    eventually("/ready after the first certificate", || ready(&app) == 200);
    assert_eq!(metric(&app, "identity_cert_refresh_count", &[]), 1.0);
    let expiry = metric(&app, "identity_cert_expiration_timestamp_seconds", &[]);
    let day = 24.0 * 3600.0;
    assert!(
        (expiry - (now_secs() + day)).abs() < 60.0,
        "the default lifetime is 24h: expires at {expiry}, now {}",
        now_secs()
    );
    assert!(!metrics(&app).contains("spoke_identity_errors_total{"));
    app.shutdown().unwrap();
}

#[test]
fn short_lifetimes_are_renewed_again_and_again() {
    let dir = scratch("renew");
    let ca = test_ca("test identity CA");
    let env = identity_env(&dir, &ca, &ca.0, TOKEN)
        .set(id::ISSUANCE_LIFETIME, "2s")
        .set(id::MIN_REFRESH, "100ms");
    let app = proxy(&env);
    eventually("the first certificate", || ready(&app) == 200);
    let first = metric(&app, "identity_cert_expiration_timestamp_seconds", &[]);
    // 70% of 2 s: a renewal about every 1.4 s.
    eventually("three renewals", || {
        metric(&app, "identity_cert_refresh_count", &[]) >= 4.0
    });
    let later = metric(&app, "identity_cert_expiration_timestamp_seconds", &[]);
    assert!(
        later > first,
        "each renewal moves the expiry on: {first} -> {later}"
    );
    assert!(later - now_secs() < 3.0, "2 s leaves: {later}");
    assert_eq!(ready(&app), 200);
    app.shutdown().unwrap();
}

#[test]
fn a_wrong_token_is_refused_and_counted_and_the_proxy_stays_unready() {
    let dir = scratch("token");
    let ca = test_ca("test identity CA");
    let app = proxy(&identity_env(&dir, &ca, &ca.0, "not-the-token"));
    eventually("refusals counted", || {
        metric(
            &app,
            "spoke_identity_errors_total",
            &[("reason", "rejected")],
        ) >= 2.0
    });
    assert_eq!(ready(&app), 503);
    assert_eq!(metric(&app, "identity_cert_refresh_count", &[]), 0.0);

    // What the controller answers, asked directly.
    let client = certify_client(app.control_addr());
    let csr = Documents::generate(WEB).unwrap().csr;
    assert_eq!(
        certify(&client, WEB, "not-the-token", csr.clone()),
        Err(RpcStatusCode::FAILED_PRECONDITION)
    );
    let db = "db.default.serviceaccount.identity.linkerd.cluster.local";
    assert_eq!(
        certify(&client, db, TOKEN, Documents::generate(db).unwrap().csr),
        Err(RpcStatusCode::FAILED_PRECONDITION),
        "an identity the file does not allow"
    );
    assert_eq!(
        certify(&client, WEB, TOKEN, Documents::generate(db).unwrap().csr),
        Err(RpcStatusCode::INVALID_ARGUMENT),
        "a CSR naming another identity"
    );
    assert_eq!(
        certify(&client, WEB, TOKEN, b"junk".to_vec()),
        Err(RpcStatusCode::INVALID_ARGUMENT)
    );
    assert_eq!(certify(&client, WEB, TOKEN, csr), Ok(()));

    // Fixing the token file fixes the proxy: it is read at every attempt.
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    eventually("/ready once the token is right", || ready(&app) == 200);
    assert_eq!(metric(&app, "identity_cert_refresh_count", &[]), 1.0);
    app.shutdown().unwrap();
}

#[test]
fn a_certificate_from_an_untrusted_issuer_is_not_used() {
    let dir = scratch("untrusted");
    let (controller_ca, other) = (test_ca("test identity CA"), test_ca("test identity CA"));
    let app = proxy(&identity_env(&dir, &controller_ca, &other.0, TOKEN));
    eventually("untrusted certificates counted", || {
        metric(
            &app,
            "spoke_identity_errors_total",
            &[("reason", "invalid_certificate")],
        ) >= 2.0
    });
    assert_eq!(ready(&app), 503);
    assert_eq!(metric(&app, "identity_cert_refresh_count", &[]), 0.0);
    assert_eq!(
        metric(&app, "identity_cert_expiration_timestamp_seconds", &[]),
        0.0
    );
    app.shutdown().unwrap();
}

#[test]
fn a_standalone_controller_generates_its_ca_and_writes_the_anchors() {
    let dir = scratch("standalone");
    let anchors_out = dir.join("out").join("trust-anchors.pem");
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let source = IssuerSource::Generate {
        anchors_out: anchors_out.clone(),
    };
    let ctl = Controller::start(
        env,
        &mesh_file(&dir),
        "127.0.0.1:0".parse().unwrap(),
        Some((&source, Duration::from_secs(3600))),
    )
    .unwrap();
    let anchors = std::fs::read_to_string(&anchors_out).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let env = support::config(ctl.addr())
        .set(id::LOCAL_NAME, WEB)
        .set(id::TRUST_ANCHORS, anchors)
        .set(id::TOKEN_FILE, token_file.display().to_string())
        .set(id::SVC_ADDR, ctl.addr().to_string());
    let app = proxy(&env);
    eventually("/ready", || ready(&app) == 200);
    let expiry = metric(&app, "identity_cert_expiration_timestamp_seconds", &[]);
    assert!((expiry - (now_secs() + 3600.0)).abs() < 60.0, "{expiry}");
    app.shutdown().unwrap();
    ctl.shutdown(STOP_GRACE);
}

#[test]
fn identity_with_an_embedded_controller_that_has_no_ca_stops_start_up() {
    let dir = scratch("no-ca");
    let ca = test_ca("test identity CA");
    let mut env = identity_env(&dir, &ca, &ca.0, TOKEN);
    env.0.remove(id::ISSUER_CERT);
    env.0.remove(id::ISSUER_KEY);
    let cfg = Config::from_env(&env).unwrap();
    let e = App::start(&cfg)
        .err()
        .expect("start-up refused")
        .to_string();
    assert!(e.contains("SPOKE_CONTROLLER_IDENTITY_ISSUER_CERT"), "{e}");
}

#[test]
fn key_and_csr_are_taken_from_the_identity_dir() {
    let dir = scratch("dir");
    let ca = test_ca("test identity CA");
    let docs = Documents::generate(WEB).unwrap();
    let end_entity = dir.join("end-entity");
    std::fs::create_dir_all(&end_entity).unwrap();
    std::fs::write(end_entity.join("key.p8"), &docs.key_pkcs8[..]).unwrap();
    // A CSR for another key: the proxy refuses to start, naming the directory.
    let other = Documents::generate(WEB).unwrap();
    std::fs::write(end_entity.join("csr.der"), &other.csr).unwrap();
    let env = identity_env(&dir, &ca, &ca.0, TOKEN)
        .set(id::IDENTITY_DIR, end_entity.display().to_string());
    let cfg = Config::from_env(&env).unwrap();
    let e = App::start(&cfg)
        .err()
        .expect("mismatched documents refused")
        .to_string();
    assert!(
        e.contains(id::IDENTITY_DIR) && e.contains("not for the key"),
        "{e}"
    );
    // The directory's pair is what is sent: a CSR naming another identity
    // is refused by the controller, where a generated one would pass.
    let db =
        Documents::generate("db.default.serviceaccount.identity.linkerd.cluster.local").unwrap();
    std::fs::write(end_entity.join("key.p8"), &db.key_pkcs8[..]).unwrap();
    std::fs::write(end_entity.join("csr.der"), &db.csr).unwrap();
    let app = proxy(&env);
    eventually("the directory's CSR refused", || {
        metric(
            &app,
            "spoke_identity_errors_total",
            &[("reason", "rejected")],
        ) >= 1.0
    });
    assert_eq!(ready(&app), 503);
    app.shutdown().unwrap();
    std::fs::write(end_entity.join("key.p8"), &docs.key_pkcs8[..]).unwrap();
    std::fs::write(end_entity.join("csr.der"), &docs.csr).unwrap();
    let app = proxy(&env);
    eventually("/ready with the documents from the directory", || {
        ready(&app) == 200
    });
    app.shutdown().unwrap();
}

#[test]
fn an_unreachable_identity_service_is_retried_and_counted() {
    let dir = scratch("unreachable");
    let (ca, _) = test_ca("test identity CA");
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let ctl = MockController::start();
    let env = support::config(ctl.addr())
        .set(id::LOCAL_NAME, WEB)
        .set(id::TRUST_ANCHORS, ca)
        .set(id::TOKEN_FILE, token_file.display().to_string())
        .set(id::SVC_ADDR, dead_port().to_string());
    let app = proxy(&env);
    eventually("attempts counted as unavailable", || {
        metric(
            &app,
            "spoke_identity_errors_total",
            &[("reason", "unavailable")],
        ) >= 3.0
    });
    assert_eq!(
        ready(&app),
        503,
        "the control plane is up, the certificate is not"
    );
    // An unreadable token file is its own reason.
    std::fs::remove_file(&token_file).unwrap();
    eventually("attempts counted as token", || {
        metric(&app, "spoke_identity_errors_total", &[("reason", "token")]) >= 1.0
    });
    app.shutdown().unwrap();
}

#[test]
fn get_answers_carry_the_tls_identity_of_a_port() {
    use futures::StreamExt;
    let dir = scratch("tls-identity");
    let path = dir.join("mesh.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: spoke.dev/v1alpha1\nkind: Endpoints\nmetadata:\n  name: web.default.svc.cluster.local\n\
             spec:\n  ports:\n  - port: 80\n    identity: {WEB}\n    addresses: [127.0.0.1:8080]\n"
        ),
    )
    .unwrap();
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let ctl = Controller::start(env, &path, "127.0.0.1:0".parse().unwrap(), None).unwrap();
    let client = certify_client(&ctl.addr().to_string());
    let mut req = pb::GetDestination::new();
    req.path = "web.default.svc.cluster.local:80".into();
    let mut stream = client
        .server_streaming(
            &spoke::proto::METHOD_GET,
            &req,
            grpcio::CallOption::default(),
        )
        .unwrap();
    let first = futures::executor::block_on(stream.next())
        .expect("a first answer")
        .expect("an update");
    let added = first.add();
    assert_eq!(added.addrs.len(), 1);
    let tls = added.addrs[0].tls_identity.as_ref().expect("tls_identity");
    assert_eq!(tls.dns_like_identity().name, WEB);
    assert_eq!(tls.server_name.name, WEB);
    drop(stream);
    ctl.shutdown(STOP_GRACE);
}
