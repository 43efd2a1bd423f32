//! The embedded controller serving a ServiceProfile file to the real proxy,
//! and pushing an edit of it.

mod support;

use std::time::Duration;

use spoke::config;
use spoke::config::MapEnv;
use support::*;

const BOOKS: &str = "books.default.svc.cluster.local:7000";

fn file(route: &str, path_regex: &str, backend: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: books.default.svc.cluster.local
  namespace: default
  resourceVersion: \"12345\"
  managedFields:
  - manager: kubectl
spec:
  routes:
  - name: {route}
    condition:
      method: GET
      pathRegex: {path_regex}
---
apiVersion: spoke.dev/v1alpha1
kind: Endpoints
metadata:
  name: books.default.svc.cluster.local
spec:
  ports:
  - port: 7000
    addresses:
    - {backend}
"
    )
}

#[test]
fn serves_a_service_profile_file_and_pushes_edits() {
    let be = backend("books");
    let dir = std::env::temp_dir().join(format!("spoke-embedded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mesh.yaml");
    std::fs::write(&path, file("first", "/books/[^/]+", be.addr())).unwrap();

    let env = MapEnv::new()
        .set(config::CONTROLLER_CONFIG, path.display().to_string())
        .set(config::OUTBOUND_LISTEN_ADDR, "127.0.0.1:0")
        .set(config::INBOUND_LISTEN_ADDR, "127.0.0.1:0")
        .set(config::ADMIN_LISTEN_ADDR, "127.0.0.1:0");
    let app = proxy(&env);
    assert_eq!(
        spoke::devtools::get(app.admin_addr(), "localhost", "/ready")
            .unwrap()
            .status,
        200
    );
    assert_eq!(get(&app, BOOKS, "/books/1").status, 200);
    assert_eq!(
        metric(&app, "route_request_total", &[("rt_route", "first")]),
        1.0
    );

    // An edit with a typo in a regex is refused as a whole (no proxy could
    // apply that route); the last good file keeps being served. (Were it
    // served, the proxy would drop route `typo` and count on the default one.)
    std::fs::write(&path, file("typo", "/books/([^/]+", be.addr())).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(get(&app, BOOKS, "/books/2").status, 200);
    assert_eq!(
        metric(&app, "route_request_total", &[("rt_route", "first")]),
        2.0
    );

    std::fs::write(&path, file("second", "/books/[^/]+", be.addr())).unwrap();
    eventually("the edit reaches the proxy", || {
        assert_eq!(get(&app, BOOKS, "/books/3").status, 200);
        metric(&app, "route_request_total", &[("rt_route", "second")]) >= 1.0
    });
    drop(app);
    let _ = std::fs::remove_dir_all(&dir);
}
