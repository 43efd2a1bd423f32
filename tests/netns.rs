//! Transparent interception both ways with the kernel doing the redirect: two
//! network namespaces this test creates (a pod and a peer, joined by a veth
//! pair), `spoke init` installing the iptables rules in the pod, the real
//! spoke binary running there as the proxy uid, and an application in the
//! pod. Outbound: the application connects to the peer's address by IP; the
//! connection must go through spoke (its original destination read from the
//! kernel) and reach the peer, over HTTP and to a peer service that speaks
//! first (a banner, carried as opaque TCP after the quiet period). Inbound:
//! the peer connects to the
//! application's address; PREROUTING sends it to spoke's inbound listener,
//! which forwards it to that original destination. Both are counted.
//!
//! Needs root, `ip` (iproute2), `iptables`, `setpriv` and python3. Without
//! them it says so and passes, except under `CI=true`, where it fails. Every
//! address is inside the namespaces it creates; every process it starts is
//! killed by PID, and the namespaces are deleted, when it ends.

mod support;

use std::process::{Child, Command, Output, Stdio};

use support::eventually_some;

const PROXY_UID: &str = "2102";
const POD_IP: &str = "10.201.7.1";
const PEER_IP: &str = "10.201.7.2";
const PEER_PORT: u16 = 8080;
/// A peer service that speaks first (a banner, as SMTP does), then echoes.
const BANNER_PORT: u16 = 2525;
/// The application's port in the pod.
const APP_PORT: u16 = 9090;

/// The namespaces and processes of one run, removed on drop.
struct Lab {
    pod: String,
    peer: String,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.pod, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(cmd: &[&str]) -> Output {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

#[track_caller]
fn ok(cmd: &[&str]) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Why this machine cannot run the test, if it cannot.
fn missing() -> Option<String> {
    // The effective uid, from the second field of /proc/self/status's Uid line.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
    if !root {
        return Some("not root".into());
    }
    for tool in ["ip", "iptables", "iptables-save", "setpriv", "python3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    let probe = format!("spoke-probe-{}", std::process::id());
    if !sh(&["ip", "netns", "add", &probe]).status.success() {
        return Some("cannot create network namespaces".into());
    }
    let _ = sh(&["ip", "netns", "del", &probe]);
    None
}

/// Runs `python3 -c code` in namespace `ns` and returns its stdout.
fn py(ns: &str, code: &str) -> Output {
    sh(&["ip", "netns", "exec", ns, "python3", "-c", code])
}

fn http_get(ns: &str, url: &str) -> Option<String> {
    http_get_as(ns, url, None)
}

/// A GET of `url` from namespace `ns`, with `host` as the Host header if given.
fn http_get_as(ns: &str, url: &str, host: Option<&str>) -> Option<String> {
    let headers: Vec<(&str, &str)> = host.map(|h| ("Host", h)).into_iter().collect();
    http_get_with(ns, url, &headers)
}

/// A GET of `url` from namespace `ns` with these extra headers.
fn http_get_with(ns: &str, url: &str, headers: &[(&str, &str)]) -> Option<String> {
    let headers: Vec<String> = headers
        .iter()
        .map(|(n, v)| format!("'{n}': '{v}'"))
        .collect();
    let headers = headers.join(", ");
    let code = format!(
        "import urllib.request,sys\n\
         r = urllib.request.Request('{url}', headers={{{headers}}})\n\
         sys.stdout.write(urllib.request.urlopen(r, timeout=3).read().decode())"
    );
    let out = py(ns, &code);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn traffic_both_ways_goes_through_spoke_in_a_pod_set_up_by_spoke_init() {
    if let Some(why) = missing() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the network-namespace test cannot run under CI: {why}");
        }
        eprintln!("skipping the network-namespace test: {why}");
        return;
    }
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("spoke-netns-{id}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut lab = Lab {
        pod: format!("spoke-pod-{id}"),
        peer: format!("spoke-peer-{id}"),
        children: Vec::new(),
        dir: dir.clone(),
    };
    let (pod, peer) = (lab.pod.clone(), lab.peer.clone());
    let (va, vb) = (
        format!("spa{}", id % 100_000),
        format!("spb{}", id % 100_000),
    );
    ok(&["ip", "netns", "add", &pod]);
    ok(&["ip", "netns", "add", &peer]);
    ok(&[
        "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
    ]);
    ok(&["ip", "link", "set", &va, "netns", &pod]);
    ok(&["ip", "link", "set", &vb, "netns", &peer]);
    ok(&[
        "ip",
        "-n",
        &pod,
        "addr",
        "add",
        &format!("{POD_IP}/24"),
        "dev",
        &va,
    ]);
    ok(&[
        "ip",
        "-n",
        &peer,
        "addr",
        "add",
        &format!("{PEER_IP}/24"),
        "dev",
        &vb,
    ]);
    for (ns, dev) in [(&pod, &va), (&peer, &vb)] {
        ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        ok(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }

    // The peer: a backend on its own address.
    let backend = format!(
        "import http.server\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       b = b'peer saw ' + self.path.encode()\n\
         \x20       self.send_response(200); self.send_header('content-length', str(len(b)))\n\
         \x20       self.end_headers(); self.wfile.write(b)\n\
         \x20   def log_message(self, *a): pass\n\
         http.server.HTTPServer(('{PEER_IP}', {PEER_PORT}), H).serve_forever()"
    );
    let child = Command::new("ip")
        .args(["netns", "exec", &peer, "python3", "-c", &backend])
        .stdout(Stdio::null())
        .spawn()
        .expect("backend");
    lab.children.push(child);
    let banner = format!(
        "import socketserver\n\
         class H(socketserver.BaseRequestHandler):\n\
         \x20   def handle(self):\n\
         \x20       self.request.sendall(b'220 peer ready\\r\\n')\n\
         \x20       while True:\n\
         \x20           b = self.request.recv(4096)\n\
         \x20           if not b: break\n\
         \x20           self.request.sendall(b)\n\
         socketserver.TCPServer.allow_reuse_address = True\n\
         socketserver.ThreadingTCPServer(('{PEER_IP}', {BANNER_PORT}), H).serve_forever()"
    );
    let child = Command::new("ip")
        .args(["netns", "exec", &peer, "python3", "-c", &banner])
        .stdout(Stdio::null())
        .spawn()
        .expect("banner server");
    lab.children.push(child);

    // The application in the pod: says where its connection arrived and
    // what client identity it was told.
    let app = format!(
        "import http.server\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       me = '%s:%d' % self.connection.getsockname()[:2]\n\
         \x20       cid = self.headers.get('l5d-client-id', 'none')\n\
         \x20       b = ('app saw %s on %s, client id %s' % (self.path, me, cid)).encode()\n\
         \x20       self.send_response(200); self.send_header('content-length', str(len(b)))\n\
         \x20       self.end_headers(); self.wfile.write(b)\n\
         \x20   def log_message(self, *a): pass\n\
         http.server.HTTPServer(('{POD_IP}', {APP_PORT}), H).serve_forever()"
    );
    let child = Command::new("ip")
        .args(["netns", "exec", &pod, "python3", "-c", &app])
        .stdout(Stdio::null())
        .spawn()
        .expect("application");
    lab.children.push(child);

    // The pod: the rules, twice (the second run changes nothing), then spoke
    // as the proxy uid.
    let spoke = env!("CARGO_BIN_EXE_spoke");
    let init = [
        "ip",
        "netns",
        "exec",
        &pod,
        spoke,
        "init",
        "--proxy-uid",
        PROXY_UID,
    ];
    let first = ok(&init);
    assert!(first.contains("installed"), "{first}");
    let second = ok(&init);
    assert!(second.contains("nothing changed"), "{second}");
    let rules = ok(&["ip", "netns", "exec", &pod, "iptables-save", "-t", "nat"]);
    assert_eq!(rules.matches("-A PROXY_INIT_OUTPUT").count(), 3, "{rules}");
    assert_eq!(
        rules.matches("-A PROXY_INIT_REDIRECT").count(),
        1,
        "{rules}"
    );

    // The embedded controller's file, readable by the proxy uid.
    let mesh = dir.join("mesh.yaml");
    std::fs::write(&mesh, "# no documents: IP targets need no discovery\n").expect("mesh");
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&dir)
        .output();
    let child = Command::new("ip")
        .args(["netns", "exec", &pod, "setpriv", "--reuid", PROXY_UID])
        .args(["--regid", PROXY_UID, "--clear-groups", spoke])
        .current_dir("/")
        .env("SPOKE_CONTROLLER_CONFIG", &mesh)
        .env("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:4140")
        .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "0.0.0.0:4143")
        .env("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:4191")
        .env("LINKERD2_PROXY_INBOUND_IPS", POD_IP)
        .env("LINKERD2_PROXY_LOG", "warn,spoke=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("spoke.log")).expect("log"),
        ))
        .spawn()
        .expect("spoke");
    lab.children.push(child);
    eventually_some("spoke ready", || {
        http_get(&pod, "http://127.0.0.1:4191/ready").filter(|b| b.contains("ready"))
    });

    // The application (root, so redirected) connects to the peer by IP.
    let url = format!("http://{PEER_IP}:{PEER_PORT}/through-spoke");
    let body = eventually_some("the peer's answer", || http_get(&pod, &url));
    assert_eq!(body, "peer saw /through-spoke");
    // The kernel's original destination decides, whatever IP the request
    // names: only the redirect knows where this one was going.
    let url = format!("http://{PEER_IP}:{PEER_PORT}/orig-dst");
    let body = http_get_as(&pod, &url, Some("10.201.7.99:8080")).expect("answer");
    assert_eq!(body, "peer saw /orig-dst");

    // Opaque, server first: the application connects to a peer service
    // that sends a banner before reading anything. spoke hears it after the
    // quiet period, and carries the rest as bytes.
    let smtp = format!(
        "import socket,sys\n\
         s = socket.create_connection(('{PEER_IP}', {BANNER_PORT}), timeout=5)\n\
         b = b''\n\
         while not b.endswith(b'\\n'): b += s.recv(100)\n\
         s.sendall(b'QUIT\\r\\n')\n\
         e = b''\n\
         while len(e) < 6: e += s.recv(100)\n\
         sys.stdout.write((b + e).decode())"
    );
    let body = eventually_some("the banner and the echo", || {
        let out = py(&pod, &smtp);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(body, "220 peer ready\r\nQUIT\r\n");

    // Inbound: the peer connects to the application's address; the
    // application gets the connection on that address (the original
    // destination), through spoke, without the identity the peer claimed.
    // Up first (asked from the pod itself, which `-o lo` keeps direct).
    let up = format!("http://{POD_IP}:{APP_PORT}/up");
    eventually_some("the application up", || http_get(&pod, &up));
    let url = format!("http://{POD_IP}:{APP_PORT}/inbound");
    let claim = [("l5d-client-id", "admin.default.serviceaccount.identity")];
    let body = eventually_some("the application's answer", || {
        http_get_with(&peer, &url, &claim)
    });
    assert_eq!(
        body,
        format!("app saw /inbound on {POD_IP}:{APP_PORT}, client id none")
    );

    // Both went through spoke: counted under the address each went to,
    // outbound and inbound.
    let metrics = http_get(&pod, "http://127.0.0.1:4191/metrics").expect("metrics");
    let counted = |family: &str, labels: &[String], value: &str| {
        metrics.lines().any(|l| {
            l.starts_with(&format!("{family}{{"))
                && labels.iter().all(|want| l.contains(want.as_str()))
                && l.ends_with(&format!(" {value}"))
        })
    };
    let log = std::fs::read_to_string(dir.join("spoke.log")).unwrap_or_default();
    let dir_is = |d: &str| format!("direction=\"{d}\"");
    let outbound = [
        dir_is("outbound"),
        format!("authority=\"{PEER_IP}:{PEER_PORT}\""),
    ];
    let inbound = [
        dir_is("inbound"),
        format!("authority=\"{POD_IP}:{APP_PORT}\""),
    ];
    for (family, labels, value) in [
        ("request_total", &outbound, "2"),
        ("request_total", &inbound, "1"),
        (
            "spoke_detect_total",
            &[
                dir_is("outbound"),
                "reason=\"quiet_server_first\"".to_string(),
            ],
            "1",
        ),
        (
            "tcp_open_total",
            &[dir_is("inbound"), "peer=\"src\"".to_string()],
            "1",
        ),
        (
            "tcp_open_total",
            &[dir_is("inbound"), "peer=\"dst\"".to_string()],
            "1",
        ),
    ] {
        assert!(
            counted(family, labels, value),
            "{family} {labels:?} is not {value}:\n{metrics}\nspoke's log:\n{log}"
        );
    }
}
