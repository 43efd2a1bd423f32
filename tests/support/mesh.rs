//! Two spokes certified by one embedded controller with its own CA, for the
//! tests of what crosses between them (`mtls.rs`, `orig_proto.rs`): the
//! client app talks to spoke A's outbound side, A reaches spoke B's inbound
//! side over mTLS because discovery says B's address is `books`, and B hands
//! the request to app B.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use spoke::app::App;
use spoke::config::MapEnv;
use spoke::controller::embedded::{Controller, STOP_GRACE};
use spoke::devtools::Backend;
use spoke::identity::config as id;
use spoke::identity::creds::{Anchors, Documents};
use spoke::identity::issuer::Issuer;
use spoke::identity::Credentials;
use spoke::tls::{ServerConfig, TlsConfigs};

use super::*;

pub const WEB: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
pub const BOOKS_ID: &str = "books.default.serviceaccount.identity.linkerd.cluster.local";
pub const BOOKS: &str = "books.default.svc.cluster.local:7000";

/// The mesh for one test: its directory (removed at the end), its CA, the
/// controller and both spokes, and app B behind spoke B.
pub struct Mesh {
    pub dir: PathBuf,
    pub ca: Issuer,
    pub ctl: Option<Controller>,
    pub anchors: String,
    pub a: Option<App>,
    pub b: Option<App>,
    pub app_b: Backend,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for app in [self.a.take(), self.b.take()].into_iter().flatten() {
            let _ = app.shutdown();
        }
        if let Some(ctl) = self.ctl.take() {
            ctl.shutdown(STOP_GRACE);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The mesh's identities, and `books` at `books_at` proving `identity`
/// (no `books` endpoints when empty).
pub fn mesh_yaml(books_at: &[SocketAddr], identity: &str) -> String {
    let mut y = String::new();
    for name in [WEB, BOOKS_ID] {
        y.push_str(&format!(
            "---\napiVersion: spoke.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: {name}\n\
             spec:\n  token: token-of-{}\n",
            name.split('.').next().unwrap()
        ));
    }
    if !books_at.is_empty() {
        y.push_str(&format!(
            "---\napiVersion: spoke.dev/v1alpha1\nkind: Endpoints\nmetadata:\n  \
             name: books.default.svc.cluster.local\nspec:\n  ports:\n  - port: 7000\n    \
             identity: {identity}\n    addresses:\n"
        ));
        for addr in books_at {
            y.push_str(&format!("    - {addr}\n"));
        }
    }
    y
}

/// A server configuration presenting `name`, issued by `ca`, as spoke's
/// own (client certificates verified against `anchors`).
pub fn server_as(ca: &Issuer, anchors: &str, name: &str) -> Arc<ServerConfig> {
    let docs = Documents::generate(name).unwrap();
    let leaf = ca
        .issue(
            name,
            &docs.csr,
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .unwrap();
    let creds = Credentials {
        name: name.to_owned(),
        key_pkcs8: docs.key_pkcs8.clone(),
        chain: vec![leaf.der.into()],
        not_after: leaf.not_after,
        anchors: Anchors::from_pem(anchors).unwrap(),
    };
    TlsConfigs::new(&creds).unwrap().server()
}

/// A spoke certified as `name` by the mesh's controller.
pub fn spoke_env(dir: &Path, ctl: SocketAddr, anchors: &str, name: &str, lifetime: bool) -> MapEnv {
    let short = name.split('.').next().unwrap();
    let token = dir.join(format!("{short}.token"));
    std::fs::write(&token, format!("token-of-{short}")).unwrap();
    let env = config(ctl)
        .set(id::LOCAL_NAME, name)
        .set(id::TRUST_ANCHORS, anchors)
        .set(id::TOKEN_FILE, token.display().to_string())
        .set(id::SVC_ADDR, ctl.to_string());
    if lifetime {
        env.set(id::MIN_REFRESH, "100ms")
    } else {
        env
    }
}

pub fn ready(app: &App) -> bool {
    spoke::devtools::get(app.admin_addr(), "localhost", "/ready").is_ok_and(|r| r.status == 200)
}

pub fn mesh(
    test: &str,
    lifetime: Duration,
    identity: &str,
    handler: spoke::devtools::Handler,
) -> Mesh {
    mesh_with(test, lifetime, identity, handler, None, None)
}

/// [`mesh`], with spoke B's app port listed in the port variable `policy`,
/// and spoke B's application at `app` instead of app B when given.
pub fn mesh_with(
    test: &str,
    lifetime: Duration,
    identity: &str,
    handler: spoke::devtools::Handler,
    policy: Option<&str>,
    app: Option<SocketAddr>,
) -> Mesh {
    mesh_full(test, lifetime, identity, handler, policy, app, |env| env)
}

/// [`mesh_with`], with spoke A's configuration changed by `a_env`.
pub fn mesh_full(
    test: &str,
    lifetime: Duration,
    identity: &str,
    handler: spoke::devtools::Handler,
    policy: Option<&str>,
    app: Option<SocketAddr>,
    a_env: impl FnOnce(MapEnv) -> MapEnv,
) -> Mesh {
    let dir = std::env::temp_dir().join(format!("spoke-mtls-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mesh.yaml");
    std::fs::write(&file, mesh_yaml(&[], BOOKS_ID)).unwrap();
    let (ctl, ca, anchors) = ca_controller(&file, "mtls test CA", lifetime);
    let app_b = backend_with("app-b", handler);
    let short = lifetime < Duration::from_secs(60);
    let mut b_env = spoke_env(&dir, ctl.addr(), &anchors, BOOKS_ID, short);
    if let Some(var) = policy {
        b_env = b_env.set(var, app_b.addr().port().to_string());
    }
    let target = app.unwrap_or(app_b.addr());
    let b = proxy_with_orig_dst(&b_env, Box::new(Injected::to(target)));
    std::fs::write(&file, mesh_yaml(&[b.inbound_addr()], identity)).unwrap();
    let a = proxy(&a_env(spoke_env(&dir, ctl.addr(), &anchors, WEB, short)));
    eventually("both spokes certified", || ready(&a) && ready(&b));
    Mesh {
        dir,
        ca,
        ctl: Some(ctl),
        anchors,
        a: Some(a),
        b: Some(b),
        app_b,
    }
}

impl Mesh {
    pub fn a(&self) -> &App {
        self.a.as_ref().unwrap()
    }
    pub fn b(&self) -> &App {
        self.b.as_ref().unwrap()
    }
}
