//! `spoke controller` stops gracefully on SIGTERM: the real binary, real
//! grpcio clients on `Get` and `GetProfile`, and a hand-built HTTP/2 client
//! that sees the frames themselves (GOAWAY's error code, the trailers).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use grpcio::{CallOption, ChannelBuilder, Client, EnvBuilder, RpcStatusCode};
use protobuf::Message;

use spoke::proto::destination::GetDestination;
use spoke::proto::{METHOD_GET, METHOD_GET_PROFILE};
use support::frames::*;
use support::*;

const BOOKS: &str = "books.default.svc.cluster.local:7000";

const MESH: &str = "apiVersion: linkerd.io/v1alpha2
kind: ServiceProfile
metadata:
  name: books.default.svc.cluster.local
  namespace: default
spec:
  routes:
  - name: one
    condition:
      method: GET
      pathRegex: /books/[^/]+
---
apiVersion: spoke.dev/v1alpha1
kind: Endpoints
metadata:
  name: books.default.svc.cluster.local
spec:
  ports:
  - port: 7000
    addresses:
    - 127.0.0.1:9
";

/// The controller process; killed on drop if the test did not stop it.
struct Ctl {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Ctl {
    fn start(tag: &str) -> Ctl {
        let dir = std::env::temp_dir().join(format!("spoke-ctl-stop-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mesh.yaml");
        std::fs::write(&path, MESH).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_spoke"))
            .args(["controller", "--config"])
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn spoke controller");
        // "spoke controller serving FILE on ADDR"
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Ctl { child, addr, dir }
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM");
    }

    /// Waits (bounded) for the process to exit; true if it exited 0.
    fn exited_ok(&mut self) -> bool {
        eventually_some("the controller exits", || self.child.try_wait().unwrap()).success()
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn request() -> GetDestination {
    let mut req = GetDestination::new();
    req.scheme = "k8s".into();
    req.path = BOOKS.into();
    req
}

#[test]
fn sigterm_ends_every_stream_with_status_ok() {
    let mut ctl = Ctl::start("grpcio");
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let client = Client::new(ChannelBuilder::new(env).connect(&ctl.addr.to_string()));
    // A deadline far above the controller's grace, so a stream the stop
    // forgot fails the test instead of hanging it.
    let opt = || CallOption::default().timeout(Duration::from_secs(60));
    let mut gets: Vec<_> = (0..3)
        .map(|_| {
            client
                .server_streaming(&METHOD_GET, &request(), opt())
                .unwrap()
        })
        .collect();
    let mut profiles: Vec<_> = (0..3)
        .map(|_| {
            client
                .server_streaming(&METHOD_GET_PROFILE, &request(), opt())
                .unwrap()
        })
        .collect();
    // Each stream is open: its first message has arrived.
    for s in &mut gets {
        let first = futures::executor::block_on(s.next());
        assert!(matches!(first, Some(Ok(_))), "{first:?}");
    }
    for s in &mut profiles {
        let first = futures::executor::block_on(s.next());
        assert!(matches!(first, Some(Ok(_))), "{first:?}");
    }

    let asked = Instant::now();
    ctl.sigterm();
    for s in &mut gets {
        let end = futures::executor::block_on(s.next());
        assert!(end.is_none(), "Get ended with {end:?}, not status OK");
    }
    for s in &mut profiles {
        let end = futures::executor::block_on(s.next());
        assert!(
            end.is_none(),
            "GetProfile ended with {end:?}, not status OK"
        );
    }
    // Ended by the stop itself, not by the grace period running out.
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    assert!(ctl.exited_ok());

    // And it is gone: a new call fails to connect rather than hanging.
    let late = client.server_streaming(
        &METHOD_GET,
        &request(),
        opt().timeout(Duration::from_secs(2)),
    );
    let outcome = late.map(|mut s| futures::executor::block_on(s.next()));
    match outcome {
        Ok(Some(Err(grpcio::Error::RpcFailure(st)))) => assert!(
            matches!(
                st.code(),
                RpcStatusCode::UNAVAILABLE | RpcStatusCode::DEADLINE_EXCEEDED
            ),
            "{st:?}"
        ),
        other => panic!("a call after the stop got {other:?}"),
    }
}

// --- a minimal HTTP/2 client, enough to see the frames ---

/// Opens one `Get` stream on a raw connection; a thread records every frame
/// the server sends (answering its SETTINGS and PINGs) until it closes.
fn raw_get(addr: SocketAddr) -> (Arc<Mutex<Vec<Frame>>>, std::thread::JoinHandle<()>) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    let authority = addr.to_string();
    let block = hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", METHOD_GET.name),
        (":authority", &authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]);
    out.extend(frame(HEADERS, END_HEADERS, 1, &block));
    let msg = request().write_to_bytes().unwrap();
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    out.extend(frame(DATA, END_STREAM, 1, &body));
    conn.write_all(&out).unwrap();

    let frames = Arc::new(Mutex::new(Vec::new()));
    let seen = frames.clone();
    let reader = std::thread::spawn(move || {
        let mut w = conn.try_clone().unwrap();
        while let Some(f) = read_frame(&mut conn) {
            // Write errors are ignored: the server may be gone already.
            if f.ty == SETTINGS && f.flags & ACK == 0 {
                let _ = w.write_all(&frame(SETTINGS, ACK, 0, &[]));
            }
            if f.ty == PING && f.flags & ACK == 0 {
                let _ = w.write_all(&frame(PING, ACK, 0, &f.payload));
            }
            seen.lock().unwrap().push(f);
        }
    });
    (frames, reader)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn sigterm_sends_goaway_no_error_and_trailers_with_status_ok() {
    let mut ctl = Ctl::start("raw");
    let (frames, reader) = raw_get(ctl.addr);
    eventually("the first Update arrives on the raw stream", || {
        frames
            .lock()
            .unwrap()
            .iter()
            .any(|f| f.ty == DATA && f.stream == 1)
    });
    ctl.sigterm();
    assert!(ctl.exited_ok());
    // The server closes the connection once it has stopped: the reader ends.
    reader.join().unwrap();

    let frames = frames.lock().unwrap().clone();
    let goaways: Vec<u32> = frames
        .iter()
        .filter(|f| f.ty == GOAWAY)
        .map(|f| u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]))
        .collect();
    assert!(!goaways.is_empty(), "no GOAWAY in {frames:?}");
    assert!(
        goaways.iter().all(|&code| code == 0),
        "GOAWAY codes {goaways:?} (0 is NO_ERROR)"
    );
    assert!(
        !frames.iter().any(|f| f.ty == RST_STREAM),
        "a stream was reset: {frames:?}"
    );
    // Trailers: a HEADERS frame ending stream 1. grpc core writes
    // `grpc-status` as a plain (not Huffman-coded) literal, so its value can
    // be read off the header block.
    let trailers = frames
        .iter()
        .find(|f| f.ty == HEADERS && f.stream == 1 && f.flags & END_STREAM != 0)
        .unwrap_or_else(|| panic!("stream 1 did not end with trailers: {frames:?}"));
    assert!(
        contains(&trailers.payload, b"grpc-status\x010"),
        "trailers are not grpc-status 0: {:?}",
        String::from_utf8_lossy(&trailers.payload)
    );
}
