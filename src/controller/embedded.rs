//! The embedded controller: serves a ServiceProfile/Endpoints YAML file over the
//! Destination API (`controller::server`), re-reading it when it changes, and,
//! given a CA, Linkerd's Identity API (`controller::identity`), allowing the
//! identities the file's `kind: Identity` documents name.
//!
//! Threads: grpcio's completion-queue threads serve the calls; one named
//! `controller-watch` thread polls the file's metadata and, on a change,
//! re-parses it and pushes the difference to every open stream under the hub
//! lock. A file that fails to parse is reported and the last good one stays in
//! force. Started by `main` when no control-plane address is configured, and by
//! `spoke controller`.

use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{RecvTimeoutError, Sender};
use grpcio::Environment;
use protobuf::Message;

use super::identity::{self as certify, Certifier};
use super::mesh::{self, LookupError, Mesh};
use super::server::{
    invalid_argument, DestinationServer, Hub, Kind, Opening, Source, Stopped, Streams,
};
use crate::identity::issuer::{Issuer, IssuerSource};
use crate::proto::destination::GetDestination;

/// How often the file's metadata is checked for a change.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// How long a graceful stop waits for clients to take the end of their
/// streams. Ending a stream is one trailers frame, so only a client that has
/// stopped reading (its flow-control window full) is still open after this.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub enum ControllerError {
    Read(PathBuf, std::io::Error),
    Parse(PathBuf, mesh::MeshError),
    Serve(grpcio::Error),
    Thread(std::io::Error),
    Identity(String),
}

impl fmt::Display for ControllerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControllerError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            ControllerError::Parse(p, e) => write!(f, "{}: {e}", p.display()),
            ControllerError::Serve(e) => write!(f, "cannot start the destination server: {e}"),
            ControllerError::Thread(e) => write!(f, "cannot start the file watcher: {e}"),
            ControllerError::Identity(e) => write!(f, "identity issuer: {e}"),
        }
    }
}

impl std::error::Error for ControllerError {}

/// The mesh in force; read by new streams and swapped by the watcher, both
/// under the hub lock.
struct FileSource {
    mesh: Mutex<Arc<Mesh>>,
}

impl FileSource {
    fn current(&self) -> Arc<Mesh> {
        self.mesh.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Source for FileSource {
    fn open(&self, kind: Kind, req: &GetDestination) -> Opening {
        opening(&self.current(), kind, &req.path)
    }
}

fn opening(mesh: &Mesh, kind: Kind, path: &str) -> Opening {
    let encoded = match kind {
        Kind::Profile => mesh.profile(path).map(|p| vec![encode(&p)]),
        Kind::Endpoints => mesh.endpoints(path).map(|view| {
            mesh::endpoint_updates(None, &view)
                .iter()
                .map(encode)
                .collect()
        }),
    };
    match encoded {
        Ok(msgs) => Opening::Send(msgs),
        Err(LookupError::InvalidArgument(msg)) => Opening::Fail(invalid_argument(msg)),
    }
}

fn encode(m: &impl Message) -> Vec<u8> {
    // Encoding a message we built ourselves cannot fail short of running out
    // of memory; an empty message is the safe fallback.
    m.write_to_bytes().unwrap_or_default()
}

/// Pushes what changed between `old` and `new` to every open stream.
fn push_changes(streams: &mut Streams, old: &Mesh, new: &Mesh) {
    for (kind, path) in streams.paths() {
        match kind {
            Kind::Profile => match (old.profile(&path), new.profile(&path)) {
                (Ok(a), Ok(b)) if a == b => {}
                (_, Ok(b)) => {
                    streams.send(kind, &path, &encode(&b));
                }
                (_, Err(LookupError::InvalidArgument(msg))) => {
                    streams.fail(kind, &path, &invalid_argument(msg));
                }
            },
            Kind::Endpoints => match (old.endpoints(&path), new.endpoints(&path)) {
                (old_view, Ok(new_view)) => {
                    for u in mesh::endpoint_updates(old_view.ok().as_ref(), &new_view) {
                        streams.send(kind, &path, &encode(&u));
                    }
                }
                (_, Err(LookupError::InvalidArgument(msg))) => {
                    streams.fail(kind, &path, &invalid_argument(msg));
                }
            },
        }
    }
}

/// A running embedded controller.
pub struct Controller {
    server: DestinationServer,
    stop: Sender<()>,
    watcher: JoinHandle<()>,
}

impl Controller {
    /// Loads `path` (which must parse), binds `listen`, and starts serving and
    /// watching the file; with `issuer` (a CA source and the leaf lifetime),
    /// it serves `Identity/Certify` too.
    pub fn start(
        env: Arc<Environment>,
        path: &Path,
        listen: SocketAddr,
        issuer: Option<(&IssuerSource, Duration)>,
    ) -> Result<Controller, ControllerError> {
        let (mesh, stamp) = load(path)?;
        let source = Arc::new(FileSource {
            mesh: Mutex::new(Arc::new(mesh)),
        });
        let identity = match issuer {
            None => None,
            Some((from, lifetime)) => {
                let issuer = Issuer::from_config(from).map_err(ControllerError::Identity)?;
                let tokens = source.clone();
                Some(certify::service(Arc::new(Certifier {
                    issuer,
                    lifetime,
                    tokens: Arc::new(move |id| tokens.current().identity_token(id).cloned()),
                })))
            }
        };
        let serves_identity = identity.is_some();
        let hub = Arc::new(Hub::default());
        let server =
            DestinationServer::start_with(env, listen, hub.clone(), source.clone(), identity)
                .map_err(ControllerError::Serve)?;
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let path = path.to_path_buf();
        let shown = path.display().to_string();
        let watcher = std::thread::Builder::new()
            .name("controller-watch".into())
            .spawn(move || {
                let mut stamp = stamp;
                loop {
                    match stopped.recv_timeout(POLL_EVERY) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let now = file_stamp(&path);
                    if now == stamp {
                        continue;
                    }
                    stamp = now;
                    reload(&path, &source, &hub);
                }
            })
            .map_err(ControllerError::Thread)?;
        log::info!(
            "embedded controller serving {shown} on {}{}",
            server.addr(),
            if serves_identity {
                " (with Identity)"
            } else {
                ""
            }
        );
        Ok(Controller {
            server,
            stop,
            watcher,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops the watcher and joins it, then stops the server gracefully: open
    /// streams end with status OK, and those still open after `grace` (a
    /// client that stopped reading) are cancelled.
    pub fn shutdown(self, grace: Duration) -> Stopped {
        drop(self.stop);
        if self.watcher.join().is_err() {
            log::error!("controller-watch thread panicked");
        }
        let stopped = self.server.shutdown(grace);
        if stopped.cancelled_late {
            log::warn!(
                "controller: streams still open after {grace:?} were cancelled ({} were open)",
                stopped.finished
            );
        } else {
            log::info!("controller: {} open streams finished", stopped.finished);
        }
        stopped
    }
}

/// A cheap change detector: modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn file_stamp(path: &Path) -> Stamp {
    let md = fs::metadata(path).ok()?;
    Some((md.modified().ok()?, md.len()))
}

fn load(path: &Path) -> Result<(Mesh, Stamp), ControllerError> {
    let stamp = file_stamp(path);
    let text =
        fs::read_to_string(path).map_err(|e| ControllerError::Read(path.to_path_buf(), e))?;
    let mesh = mesh::parse(&text).map_err(|e| ControllerError::Parse(path.to_path_buf(), e))?;
    Ok((mesh, stamp))
}

fn reload(path: &Path, source: &FileSource, hub: &Hub) {
    let new = match load(path) {
        Ok((mesh, _)) => Arc::new(mesh),
        Err(e) => {
            log::warn!("{e}; still serving the last good version");
            return;
        }
    };
    let mut streams = hub.lock();
    let old = {
        let mut cur = source.mesh.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *cur, new.clone())
    };
    push_changes(&mut streams, &old, &new);
    log::info!("reloaded {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOKS: &str = "books.default.svc.cluster.local:7000";

    /// A one-profile file: route `route` with `condition`, one class and one override.
    fn file(route: &str, condition: &str, status: &str, authority: &str) -> String {
        format!(
            "apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: books.default.svc.cluster.local
spec:
  routes:
  - name: {route}
    condition: {condition}
    responseClasses:
    - condition: {{status: {status}}}
      isFailure: true
  dstOverrides:
  - {{authority: {authority}, weight: 1}}
"
        )
    }

    fn good(route: &str) -> String {
        file(
            route,
            "{method: GET, pathRegex: \"/books/[^/]+\"}",
            "{min: 500, max: 599}",
            "books-v2.default.svc.cluster.local:7000",
        )
    }

    fn served_route(source: &FileSource) -> String {
        let profile = source.current().profile(BOOKS).expect("valid path");
        profile.routes[0].metrics_labels["route"].clone()
    }

    #[test]
    fn an_edit_no_proxy_could_apply_is_refused_and_the_last_good_file_stays() {
        let dir = std::env::temp_dir().join(format!("spoke-reload-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mesh.yaml");
        fs::write(&path, good("first")).unwrap();
        let (mesh, _) = load(&path).expect("good file");
        let source = FileSource {
            mesh: Mutex::new(Arc::new(mesh)),
        };
        let hub = Hub::default();

        let bad_regex = good("bad").replace("/books/[^/]+", "/books/([");
        let one_bound = good("bad").replace("{min: 500, max: 599}", "{min: 500}");
        let no_port = good("bad").replace(":7000,", ",");
        let bad_method = good("bad").replace("method: GET", "method: \"G T\"");
        for (bad, field) in [
            (bad_regex, "spec.routes[0].condition.pathRegex"),
            (
                one_bound,
                "spec.routes[0].responseClasses[0].condition.status",
            ),
            (no_port, "spec.dstOverrides[0].authority"),
            (bad_method, "spec.routes[0].condition.method"),
        ] {
            fs::write(&path, &bad).unwrap();
            let message = load(&path).map(drop).expect_err(&bad).to_string();
            let at = format!(
                "{}: doc 1 (ServiceProfile books.default.svc.cluster.local): {field}: ",
                path.display()
            );
            assert!(message.starts_with(&at), "{message}");
            reload(&path, &source, &hub);
            assert_eq!(served_route(&source), "first", "{field}");
        }

        fs::write(
            &path,
            "apiVersion: linkerd.io/v1alpha2\nkind: ServiceProfile\nspec: [",
        )
        .unwrap();
        reload(&path, &source, &hub);
        assert_eq!(served_route(&source), "first", "not YAML");

        fs::write(&path, good("second")).unwrap();
        reload(&path, &source, &hub);
        assert_eq!(served_route(&source), "second");
        let _ = fs::remove_dir_all(&dir);
    }
}
