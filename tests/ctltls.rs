//! TLS to the control plane: a standalone embedded controller (plaintext
//! gRPC, with a test CA) behind two TLS terminators, one presenting the
//! destination service's identity and one the identity service's, both
//! leaves of the test CA. A spoke configured with both `*_SVC_NAME`s
//! certifies over TLS (anchors only), learns endpoints over TLS and proxies a
//! request to a backend; a terminator presenting the wrong name is refused
//! and counted, and the same spoke recovers once the right certificate is
//! served.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use spoke::config::{MapEnv, DESTINATION_SVC_NAME};
use spoke::controller::embedded::{Controller, STOP_GRACE};
use spoke::devtools::Backend;
use spoke::identity::config as id;
use spoke::identity::issuer::Issuer;
use spoke::tls::terminator::Terminator;
use support::mesh::server_as;
use support::*;

const WEB: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const DST_ID: &str = "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local";
const IDENTITY_ID: &str = "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local";
const WRONG_ID: &str = "linkerd-impostor.linkerd.serviceaccount.identity.linkerd.cluster.local";
const BOOKS: &str = "books.default.svc.cluster.local:7000";

/// The control plane of one test: the directory (removed at the end), the
/// CA, the controller, and its two terminators.
struct ControlPlane {
    dir: PathBuf,
    ca: Issuer,
    anchors: String,
    ctl: Option<Controller>,
    dst: Terminator,
    identity: Terminator,
    backend: Backend,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(ctl) = self.ctl.take() {
            ctl.shutdown(STOP_GRACE);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the controller (serving `web`'s identity and `books` at a backend)
/// and its terminators, presenting `dst_name` and `identity_name`.
fn control_plane(test: &str, dst_name: &str, identity_name: &str) -> ControlPlane {
    let dir = std::env::temp_dir().join(format!("spoke-ctltls-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let backend = backend("books");
    let yaml = format!(
        "---\napiVersion: spoke.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: {WEB}\n\
         spec:\n  token: token-of-web\n\
         ---\napiVersion: spoke.dev/v1alpha1\nkind: Endpoints\nmetadata:\n  \
         name: books.default.svc.cluster.local\nspec:\n  ports:\n  - port: 7000\n    \
         addresses:\n    - {}\n",
        backend.addr()
    );
    let file = dir.join("mesh.yaml");
    std::fs::write(&file, yaml).unwrap();
    std::fs::write(dir.join("web.token"), "token-of-web").unwrap();
    let (ctl, ca, cert) = ca_controller(&file, "ctltls test CA", Duration::from_secs(3600));
    let dst = Terminator::start(ctl.addr(), server_as(&ca, &cert, dst_name)).unwrap();
    let identity = Terminator::start(ctl.addr(), server_as(&ca, &cert, identity_name)).unwrap();
    ControlPlane {
        dir,
        ca,
        anchors: cert,
        ctl: Some(ctl),
        dst,
        identity,
        backend,
    }
}

impl ControlPlane {
    /// A spoke reaching both services through their terminators by name.
    fn spoke_env(&self) -> MapEnv {
        config(self.dst.addr())
            .set(DESTINATION_SVC_NAME, DST_ID)
            .set(id::LOCAL_NAME, WEB)
            .set(id::TRUST_ANCHORS, self.anchors.clone())
            .set(
                id::TOKEN_FILE,
                self.dir.join("web.token").display().to_string(),
            )
            .set(id::SVC_ADDR, self.identity.addr().to_string())
            .set(id::SVC_NAME, IDENTITY_ID)
    }
}

fn ready(app: &spoke::app::App) -> bool {
    spoke::devtools::get(app.admin_addr(), "localhost", "/ready").is_ok_and(|r| r.status == 200)
}

/// A request through the proxy reaches the backend, at endpoints learned
/// over TLS.
fn reaches_books(app: &spoke::app::App, backend: &Backend) {
    let before = backend.hits();
    let r = eventually_some("a request to books", || {
        let r = get(app, BOOKS, "/");
        (r.status == 200).then_some(r)
    });
    assert_eq!(r.status, 200);
    assert!(backend.hits() > before);
}

#[test]
fn certify_and_discovery_run_over_tls() {
    let cp = control_plane("works", DST_ID, IDENTITY_ID);
    let app = proxy(&cp.spoke_env());
    eventually("certified over TLS and connected", || ready(&app));
    reaches_books(&app, &cp.backend);
    assert!(
        cp.dst.accepted() >= 1,
        "discovery went through the terminator"
    );
    // The first Certify, before any certificate, offers none.
    assert_eq!(cp.identity.handshakes().first(), Some(&Ok(None)));
    // A new destination connection offers the certificate now in force.
    cp.dst.drop_connections();
    eventually(
        "a destination connection with the workload's certificate",
        || cp.dst.handshakes().contains(&Ok(Some(WEB.to_owned()))),
    );
    eventually("connected again", || ready(&app));
    reaches_books(&app, &cp.backend);
    let text = metrics(&app);
    assert!(
        metric(&app, "identity_cert_refresh_count", &[]) >= 1.0,
        "{text}"
    );
    assert!(
        !has_series(&text, "spoke_identity_errors_total", &[("reason", "tls")]),
        "{text}"
    );
    app.shutdown().unwrap();
}

#[test]
fn servers_presenting_the_wrong_name_are_refused_until_fixed() {
    let cp = control_plane("wrong", WRONG_ID, WRONG_ID);
    let app = proxy(&cp.spoke_env());
    eventually("Certify refused over TLS, counted", || {
        metric(&app, "spoke_identity_errors_total", &[("reason", "tls")]) >= 1.0
    });
    // A destination asked for meanwhile finds no connection, and says why.
    let r = get(&app, BOOKS, "/");
    assert_ne!(r.status, 200);
    assert!(cp
        .dst
        .handshakes()
        .iter()
        .all(|h| h.as_ref().is_err_and(|e| e.contains("TLS handshake"))));
    eventually("discovery refused over TLS, counted", || {
        metric(
            &app,
            "spoke_discovery_errors_total",
            &[("kind", "endpoints"), ("code", "tls")],
        ) >= 1.0
            || metric(
                &app,
                "spoke_discovery_errors_total",
                &[("kind", "profile"), ("code", "tls")],
            ) >= 1.0
    });
    assert!(!ready(&app), "neither certified nor connected");
    assert!(metric(&app, "identity_cert_refresh_count", &[]) < 1.0);
    assert!(cp.backend.hits() == 0);
    // The right certificates: the backoff's next dials get through.
    cp.identity
        .set_config(server_as(&cp.ca, &cp.anchors, IDENTITY_ID));
    cp.dst.set_config(server_as(&cp.ca, &cp.anchors, DST_ID));
    eventually("certified and connected once fixed", || ready(&app));
    reaches_books(&app, &cp.backend);
    app.shutdown().unwrap();
}

#[test]
fn without_names_loopback_control_planes_stay_plaintext() {
    let cp = control_plane("plain", DST_ID, IDENTITY_ID);
    let ctl = cp.ctl.as_ref().unwrap().addr();
    let env = config(ctl)
        .set(id::LOCAL_NAME, WEB)
        .set(id::TRUST_ANCHORS, cp.anchors.clone())
        .set(
            id::TOKEN_FILE,
            cp.dir.join("web.token").display().to_string(),
        )
        .set(id::SVC_ADDR, ctl.to_string());
    let app = proxy(&env);
    eventually("certified and connected in plaintext", || ready(&app));
    reaches_books(&app, &cp.backend);
    assert_eq!(cp.dst.accepted() + cp.identity.accepted(), 0);
    app.shutdown().unwrap();
}
