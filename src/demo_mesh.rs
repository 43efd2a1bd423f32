//! `spoke demo --mesh`: the mesh in one process (the CLI's thread, with the
//! threads of what it starts). A standalone embedded controller with a CA it
//! generates certifies two workloads, `web` and `books`; web's spoke sends a
//! burst of requests to `books` (meshed: over mTLS to books' spoke, whose
//! application sees web's identity in `l5d-client-id`) and to `authors`
//! (not meshed: plaintext). The report is a table per destination with a TLS
//! column, read from web's own `/destinations` and `/metrics`.
//!
//! Books' spoke learns where each inbound connection was going from a fixed
//! original destination (the books application), standing in for the
//! iptables rules `spoke init` would install.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::App;
use crate::config::{Config, ControlPlane};
use crate::controller::embedded::{Controller, STOP_GRACE};
use crate::devtools::{self, Backend, Client, Response};
use crate::identity::config::{IdentityService, ProxyIdentity};
use crate::identity::creds::Anchors;
use crate::identity::issuer::IssuerSource;
use crate::metrics::{parse_text, Sample};

const WEB: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const BOOKS_ID: &str = "books.default.serviceaccount.identity.linkerd.cluster.local";
const BOOKS: &str = "books.default.svc.cluster.local:7000";
const AUTHORS: &str = "authors.default.svc.cluster.local:7000";

/// Every inbound connection was going to the books application.
struct ToApp(SocketAddr);

impl crate::proxy::orig_dst::OrigDst for ToApp {
    fn lookup(
        &self,
        _stream: &mio::net::TcpStream,
        _peer: SocketAddr,
    ) -> std::io::Result<Option<SocketAddr>> {
        Ok(Some(self.0))
    }
}

/// The demo's scratch directory, removed when it ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The controller's file: both identities, books behind its spoke (meshed),
/// authors as itself (not meshed).
fn mesh_file(dir: &Path, books_spoke: Option<SocketAddr>, authors: SocketAddr) -> String {
    let mut y = String::new();
    for (name, short) in [(WEB, "web"), (BOOKS_ID, "books")] {
        let token = dir.join(format!("{short}.token"));
        let _ = writeln!(
            y,
            "---\napiVersion: spoke.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: {name}\n\
             spec:\n  tokenFile: {}",
            token.display()
        );
    }
    if let Some(addr) = books_spoke {
        let _ = writeln!(
            y,
            "---\napiVersion: spoke.dev/v1alpha1\nkind: Endpoints\nmetadata:\n  \
             name: books.default.svc.cluster.local\nspec:\n  ports:\n  - port: 7000\n    \
             identity: {BOOKS_ID}\n    addresses:\n    - {addr}"
        );
    }
    let _ = writeln!(
        y,
        "---\napiVersion: spoke.dev/v1alpha1\nkind: Endpoints\nmetadata:\n  \
         name: authors.default.svc.cluster.local\nspec:\n  ports:\n  - port: 7000\n    \
         addresses:\n    - {authors}"
    );
    y
}

/// A spoke for workload `name`, using the controller at `ctl` for discovery
/// and identity.
fn workload(base: &Config, dir: &Path, ctl: SocketAddr, anchors: &Anchors, name: &str) -> Config {
    let short = name.split('.').next().unwrap_or(name);
    let mut cfg = base.clone();
    cfg.control_plane = ControlPlane::Remote(ctl.to_string());
    cfg.outbound_listen = "127.0.0.1:0".parse().expect("literal address");
    cfg.admin_listen = "127.0.0.1:0".parse().expect("literal address");
    cfg.inbound_listen = "127.0.0.1:0".parse().expect("literal address");
    cfg.identity.proxy = Some(ProxyIdentity {
        local_name: name.to_owned(),
        anchors: anchors.clone(),
        token_file: dir.join(format!("{short}.token")),
        dir: None,
        service: IdentityService::Remote(ctl.to_string()),
        service_name: None,
        min_refresh: Duration::from_secs(10),
        max_refresh: Duration::from_secs(24 * 3600),
    });
    cfg
}

/// Runs the mesh demo and returns the report to print.
pub fn run(base: &Config, requests: usize) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("spoke-demo-mesh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _scratch = Scratch(dir.clone());
    write(&dir.join("web.token"), "web-token")?;
    write(&dir.join("books.token"), "books-token")?;

    let seen = Arc::new(Mutex::new(None::<String>));
    let s = seen.clone();
    let books = Backend::start(
        "books",
        Arc::new(move |req| {
            let id = req.header("l5d-client-id").unwrap_or("(none)").to_owned();
            *s.lock().expect("lock") = Some(id);
            Response::new(200, "[{\"id\":1},{\"id\":2}]\n")
        }),
    )
    .map_err(|e| format!("cannot start the books backend: {e}"))?;
    let authors = Backend::start(
        "authors",
        Arc::new(|_| Response::new(200, "{\"name\":\"Frank Herbert\"}\n")),
    )
    .map_err(|e| format!("cannot start the authors backend: {e}"))?;

    let file = dir.join("mesh.yaml");
    write(&file, &mesh_file(&dir, None, authors.addr()))?;
    let anchors_out = dir.join("trust-anchors.pem");
    let issuer = IssuerSource::Generate {
        anchors_out: anchors_out.clone(),
    };
    let env = Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
    let listen = "127.0.0.1:0".parse().expect("literal address");
    let ctl = Controller::start(
        env,
        &file,
        listen,
        Some((&issuer, Duration::from_secs(3600))),
    )
    .map_err(|e| format!("cannot start the controller: {e}"))?;
    let pem = std::fs::read_to_string(&anchors_out)
        .map_err(|e| format!("cannot read {}: {e}", anchors_out.display()))?;
    let anchors = Anchors::from_pem(&pem)?;

    let b_cfg = workload(base, &dir, ctl.addr(), &anchors, BOOKS_ID);
    let b = App::start_with(&b_cfg, Box::new(ToApp(books.addr()))).map_err(|e| e.to_string())?;
    write(
        &file,
        &mesh_file(&dir, Some(b.inbound_addr()), authors.addr()),
    )?;
    let a_cfg = workload(base, &dir, ctl.addr(), &anchors, WEB);
    let a = App::start(&a_cfg).map_err(|e| e.to_string())?;
    wait_ready(&a, &b)?;
    // The waiting's own requests are not the burst's: counted from here.
    let before = scrape(&a)?;

    let started = Instant::now();
    let mut client = Client::connect(a.outbound_addr(), Duration::from_secs(10))
        .map_err(|e| format!("cannot connect to web's spoke: {e}"))?;
    let mut failures = 0;
    for i in 0..requests {
        let (host, path) = if i % 3 == 2 {
            (AUTHORS, "/authors/1")
        } else {
            (BOOKS, "/books")
        };
        match client.send("GET", host, path, &[], b"") {
            Ok(r) if r.status < 500 => {}
            Ok(_) => failures += 1,
            Err(e) => return Err(format!("request {i} failed: {e}")),
        }
    }
    let elapsed = started.elapsed();

    let destinations = devtools::get(a.admin_addr(), "localhost", "/destinations")
        .map_err(|e| format!("cannot read /destinations: {e}"))?
        .text();
    let after = scrape(&a)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "spoke demo --mesh: {requests} requests from web through two spokes in {:.2}s \
         ({failures} answered 5xx)",
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "the controller at {} issued web's and books' certificates; \
         books' application saw l5d-client-id: {}\n",
        ctl.addr(),
        seen.lock()
            .expect("lock")
            .as_deref()
            .unwrap_or("(no request)")
    );
    let _ = writeln!(
        out,
        "{:<40} {:>8} {:>9}  tls",
        "destination", "requests", "success"
    );
    for dst in [BOOKS, AUTHORS] {
        let count = |class: Option<&str>| -> f64 {
            responses(&after, dst, class) - responses(&before, dst, class)
        };
        let (all, ok) = (count(None), count(Some("success")));
        let success = if all > 0.0 {
            format!("{:.1}%", 100.0 * ok / all)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "{dst:<40} {all:>8} {success:>9}  {}",
            tls_column(&destinations, dst)
        );
    }
    for app in [a, b] {
        app.shutdown()?;
    }
    ctl.shutdown(STOP_GRACE);
    drop(books);
    drop(authors);
    Ok(out)
}

/// Until both spokes are certified and books answers through the mesh (the
/// controller has reloaded its file): at most 20 s.
fn scrape(app: &App) -> Result<Vec<Sample>, String> {
    let metrics = devtools::get(app.admin_addr(), "localhost", "/metrics")
        .and_then(|reply| reply.payload())
        .map_err(|e| format!("cannot read /metrics: {e}"))?;
    Ok(parse_text(&String::from_utf8_lossy(&metrics)))
}

/// `response_total` of authority `dst` (of `class`, when given).
fn responses(samples: &[Sample], dst: &str, class: Option<&str>) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == "response_total" && s.label("authority") == Some(dst))
        .filter(|s| class.is_none_or(|c| s.label("classification") == Some(c)))
        .map(|s| s.value)
        .sum()
}

fn wait_ready(a: &App, b: &App) -> Result<(), String> {
    let ready = |app: &App| {
        devtools::get(app.admin_addr(), "localhost", "/ready").is_ok_and(|r| r.status == 200)
    };
    let meshed =
        || devtools::get(a.outbound_addr(), BOOKS, "/books").is_ok_and(|r| r.status == 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(ready(a) && ready(b) && meshed()) {
        if Instant::now() > deadline {
            return Err("the mesh was not up within 20s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The TLS column for `dst` from a `/destinations` document: `mTLS <id>`
/// when its endpoints are reached over mTLS, else `plaintext (<reason>)`.
pub fn tls_column(doc: &str, dst: &str) -> String {
    let Some(at) = doc.find(&format!("\"name\": \"{dst}\"")) else {
        return "-".into();
    };
    let entry = &doc[at..];
    let entry = &entry[..entry.find("]}").map_or(entry.len(), |e| e + 2)];
    let field = |key: &str| {
        let k = format!("\"{key}\": \"");
        let start = entry.find(&k)? + k.len();
        let len = entry[start..].find('"')?;
        Some(entry[start..start + len].to_owned())
    };
    if entry.contains("\"mtls\": true") {
        format!("mTLS {}", field("server_id").unwrap_or_default())
    } else if let Some(reason) = field("no_tls_reason") {
        format!("plaintext ({reason})")
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_column_reads_the_destinations_document() {
        let doc = "{\"local_identity\": \"w\", \"tls\": \"ready\", \"destinations\": [\
                   {\"direction\": \"outbound\", \"name\": \"a:1\", \"source\": \"controller\", \
                   \"endpoints\": [{\"addr\": \"1.1.1.1:1\", \"protocol_hint\": \"unknown\", \
                   \"mtls\": false, \"no_tls_reason\": \"not_provided_by_service_discovery\"}]}, \
                   {\"direction\": \"outbound\", \"name\": \"b:1\", \"source\": \"controller\", \
                   \"endpoints\": [{\"addr\": \"1.1.1.2:1\", \"protocol_hint\": \"unknown\", \
                   \"mtls\": true, \"server_id\": \"b.id\", \"server_name\": \"b.id\"}]}]}";
        assert_eq!(
            tls_column(doc, "a:1"),
            "plaintext (not_provided_by_service_discovery)"
        );
        assert_eq!(tls_column(doc, "b:1"), "mTLS b.id");
        assert_eq!(tls_column(doc, "c:1"), "-");
    }
}
