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
//! Two pods over mTLS: pods A (web) and B (books), each with the rules and
//! spoke, on a bridge in a third namespace where `spoke controller` (the
//! embedded controller alone, with a CA the test makes) certifies both and
//! says that `books` is pod B's address with B's identity. App A asks for
//! books at its service address; spoke A reaches B over mTLS, B's rules send
//! it to spoke B, which terminates it and hands app B the request with
//! `l5d-client-id` = web. A sniffer on B's side of the bridge shows what
//! crossed: a ClientHello naming B and no plaintext, while a client outside
//! the mesh, asking B directly, is seen in the clear (and gets no identity).
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
    namespaces: Vec<String>,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Lab {
    /// A lab with its own scratch directory (named after `what`), empty.
    fn new(what: &str) -> Lab {
        let dir = std::env::temp_dir().join(format!("spoke-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Lab {
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
        }
    }

    /// Creates the network namespace `name` (removed on drop), loopback up.
    fn netns(&mut self, name: String) -> String {
        ok(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        ok(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// Runs `python3 -c code` in `ns` in the background until the end.
    fn python(&mut self, ns: &str, code: &str) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", code])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3");
        self.children.push(child);
    }

    /// Runs spoke in `ns` as the proxy uid with these variables (on top of
    /// the listener addresses Linkerd uses), its log in `log` in the lab's
    /// directory.
    fn spoke(&mut self, ns: &str, args: &[&str], env: &[(&str, &str)], log: &str) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "setpriv", "--reuid", PROXY_UID])
            .args(["--regid", PROXY_UID, "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_spoke"))
            .args(args)
            .current_dir("/")
            .env("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:4140")
            .env("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "0.0.0.0:4143")
            .env("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:4191")
            .env("LINKERD2_PROXY_LOG", "warn,spoke=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.join(log)).expect("log"),
            ))
            .spawn()
            .expect("spoke");
        self.children.push(child);
    }

    /// The log `name` in the lab's directory, as far as it was written.
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// Makes the lab's directory readable by the proxy uid.
    fn share_dir(&self) {
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&self.dir)
            .output();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
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
    // One name per call: the tests of this file probe at the same time.
    static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("spoke-probe-{}-{n}", std::process::id());
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
    let mut lab = Lab::new("netns");
    let dir = lab.dir.clone();
    let pod = lab.netns(format!("spoke-pod-{id}"));
    let peer = lab.netns(format!("spoke-peer-{id}"));
    let (va, vb) = (
        format!("spa{}", id % 100_000),
        format!("spb{}", id % 100_000),
    );
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
    lab.python(&peer, &backend);
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
    lab.python(&peer, &banner);

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
    lab.python(&pod, &app);

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
    lab.share_dir();
    let mesh = mesh.display().to_string();
    lab.spoke(
        &pod,
        &[],
        &[
            ("SPOKE_CONTROLLER_CONFIG", &mesh),
            ("LINKERD2_PROXY_INBOUND_IPS", POD_IP),
        ],
        "spoke.log",
    );
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
    let log = lab.log("spoke.log");
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

// === Two pods over mTLS ===

const WEB_ID: &str = "web.default.serviceaccount.identity.linkerd.cluster.local";
const BOOKS_ID: &str = "books.default.serviceaccount.identity.linkerd.cluster.local";
const BOOKS: &str = "books.default.svc.cluster.local";
/// Pod A (web), pod B (books) and the controller's namespace, one subnet
/// on a bridge in the controller's namespace.
const A_IP: &str = "10.201.8.1";
const B_IP: &str = "10.201.8.2";
const CTL_IP: &str = "10.201.8.3";
/// `books`' service address: no one has it; A's OUTPUT rules take the
/// connection to spoke before it would have to go anywhere.
const BOOKS_SVC_IP: &str = "10.201.8.100";
const BOOKS_PORT: u16 = 7000;
const CTL_PORT: u16 = 8086;

/// A CA made by the test (certificate and key, PEM) for the controller.
fn test_ca() -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "netns test CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("CA");
    (cert.pem(), key.serialize_pem())
}

/// The controller's file: both workloads' tokens, and `books` at pod B's
/// address with B's identity.
fn two_pod_mesh() -> String {
    let mut y = String::new();
    for name in [WEB_ID, BOOKS_ID] {
        let short = name.split('.').next().expect("name");
        y.push_str(&format!(
            "---\napiVersion: spoke.dev/v1alpha1\nkind: Identity\nmetadata:\n  name: {name}\n\
             spec:\n  token: token-of-{short}\n"
        ));
    }
    y.push_str(&format!(
        "---\napiVersion: spoke.dev/v1alpha1\nkind: Endpoints\nmetadata:\n  name: {BOOKS}\n\
         spec:\n  ports:\n  - port: {BOOKS_PORT}\n    identity: {BOOKS_ID}\n    addresses:\n    \
         - {B_IP}:{BOOKS_PORT}\n"
    ));
    y
}

/// A TCP payload the sniffer saw: source and destination `ip:port`, bytes.
struct Segment {
    src: String,
    dst: String,
    payload: Vec<u8>,
}

/// What the sniffer wrote: one line per TCP segment with a payload.
fn capture(path: &std::path::Path) -> Vec<Segment> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (src, dst, hex) = (f.next()?, f.next()?, f.next()?);
            let payload = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .ok()?;
            Some(Segment {
                src: src.into(),
                dst: dst.into(),
                payload,
            })
        })
        .collect()
}

/// Like `support::eventually`, but says whether `cond` came to hold, so
/// that the caller can show the logs when it did not.
fn within_patience(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + support::patience();
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn two_pods_speak_mtls_through_iptables_certified_by_the_controller() {
    if let Some(why) = missing() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the network-namespace test cannot run under CI: {why}");
        }
        eprintln!("skipping the two-pod mTLS test: {why}");
        return;
    }
    let id = std::process::id();
    let n = id % 100_000;
    let mut lab = Lab::new("netns-mtls");
    let dir = lab.dir.clone();
    let a = lab.netns(format!("spoke-a-{id}"));
    let b = lab.netns(format!("spoke-b-{id}"));
    let ctl = lab.netns(format!("spoke-ctl-{id}"));
    // The wire: a bridge in the controller's namespace, each pod's veth
    // plugged into it. Every device is made inside a namespace of the lab.
    let bridge = format!("spkbr{n}");
    ok(&["ip", "-n", &ctl, "link", "add", &bridge, "type", "bridge"]);
    ok(&[
        "ip",
        "-n",
        &ctl,
        "addr",
        "add",
        &format!("{CTL_IP}/24"),
        "dev",
        &bridge,
    ]);
    ok(&["ip", "-n", &ctl, "link", "set", &bridge, "up"]);
    let b_port = format!("spky{n}");
    for (pod, ip, inside, outside) in [
        (&a, A_IP, format!("spka{n}"), format!("spkx{n}")),
        (&b, B_IP, format!("spkb{n}"), b_port.clone()),
    ] {
        ok(&[
            "ip", "-n", &ctl, "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            "netns", pod,
        ]);
        ok(&["ip", "-n", &ctl, "link", "set", &outside, "master", &bridge]);
        ok(&["ip", "-n", &ctl, "link", "set", &outside, "up"]);
        ok(&[
            "ip",
            "-n",
            pod,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            &inside,
        ]);
        ok(&["ip", "-n", pod, "link", "set", &inside, "up"]);
    }

    // A sniffer on pod B's side of the bridge: every TCP payload to or
    // from port 7000, as `src dst hex` lines, flushed one by one.
    let wire = dir.join("wire.txt");
    let sniffing = dir.join("sniffing");
    let sniffer = format!(
        "import socket,struct\n\
         s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))\n\
         s.bind(('{b_port}', 0))\n\
         out = open('{wire}', 'w')\n\
         open('{sniffing}', 'w').close()\n\
         while True:\n\
         \x20   f = s.recv(262144)\n\
         \x20   if len(f) < 34 or f[12:14] != b'\\x08\\x00': continue\n\
         \x20   ip = f[14:]\n\
         \x20   ihl = (ip[0] & 15) * 4\n\
         \x20   if ip[9] != 6: continue\n\
         \x20   total = struct.unpack('!H', ip[2:4])[0]\n\
         \x20   tcp = ip[ihl:total]\n\
         \x20   sport, dport = struct.unpack('!HH', tcp[:4])\n\
         \x20   body = tcp[(tcp[12] >> 4) * 4:]\n\
         \x20   if body and {BOOKS_PORT} in (sport, dport):\n\
         \x20       src = '%s:%d' % (socket.inet_ntoa(ip[12:16]), sport)\n\
         \x20       dst = '%s:%d' % (socket.inet_ntoa(ip[16:20]), dport)\n\
         \x20       out.write('%s %s %s\\n' % (src, dst, body.hex())); out.flush()",
        wire = wire.display(),
        sniffing = sniffing.display(),
    );
    lab.python(&ctl, &sniffer);

    // App B: says what it was asked and which client identity it was told.
    let app_b = format!(
        "import http.server\n\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       cid = self.headers.get('l5d-client-id', 'none')\n\
         \x20       b = ('books saw %s, client id %s' % (self.path, cid)).encode()\n\
         \x20       self.send_response(200); self.send_header('content-length', str(len(b)))\n\
         \x20       self.end_headers(); self.wfile.write(b)\n\
         \x20   def log_message(self, *a): pass\n\
         http.server.HTTPServer(('{B_IP}', {BOOKS_PORT}), H).serve_forever()"
    );
    lab.python(&b, &app_b);

    // The controller, with the test's CA, on the bridge's address.
    let mesh = dir.join("mesh.yaml");
    std::fs::write(&mesh, two_pod_mesh()).expect("mesh");
    let (ca_cert, ca_key) = test_ca();
    for short in ["web", "books"] {
        std::fs::write(
            dir.join(format!("{short}.token")),
            format!("token-of-{short}"),
        )
        .expect("token");
    }
    lab.share_dir();
    let ctl_addr = format!("{CTL_IP}:{CTL_PORT}");
    let ctl_log = std::fs::File::create(dir.join("controller.log")).expect("log");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ctl,
            env!("CARGO_BIN_EXE_spoke"),
            "controller",
        ])
        .arg("--config")
        .arg(&mesh)
        .args(["--listen", &ctl_addr])
        .env("SPOKE_CONTROLLER_IDENTITY_ISSUER_CERT", &ca_cert)
        .env("SPOKE_CONTROLLER_IDENTITY_ISSUER_KEY", &ca_key)
        .env("LINKERD2_PROXY_LOG", "warn,spoke=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(ctl_log))
        .spawn()
        .expect("controller");
    lab.children.push(child);

    // Each pod: the rules, then spoke as the proxy uid, certified by the
    // controller (its tokens proving web and books).
    let spoke = env!("CARGO_BIN_EXE_spoke");
    for (pod, ip, name, short) in [(&a, A_IP, WEB_ID, "web"), (&b, B_IP, BOOKS_ID, "books")] {
        let init = ok(&[
            "ip",
            "netns",
            "exec",
            pod,
            spoke,
            "init",
            "--proxy-uid",
            PROXY_UID,
        ]);
        assert!(init.contains("installed"), "{init}");
        let token = dir.join(format!("{short}.token")).display().to_string();
        lab.spoke(
            pod,
            &[],
            &[
                ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", &ctl_addr),
                ("LINKERD2_PROXY_IDENTITY_SVC_ADDR", &ctl_addr),
                ("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", name),
                ("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", &ca_cert),
                ("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", &token),
                ("LINKERD2_PROXY_INBOUND_IPS", ip),
            ],
            &format!("spoke-{short}.log"),
        );
    }
    let logs = |lab: &Lab| {
        format!(
            "controller:\n{}\nspoke A:\n{}\nspoke B:\n{}",
            lab.log("controller.log"),
            lab.log("spoke-web.log"),
            lab.log("spoke-books.log")
        )
    };
    for pod in [&a, &b] {
        let ready = within_patience(|| {
            http_get(pod, "http://127.0.0.1:4191/ready").is_some_and(|b| b == "ready\n")
        });
        assert!(
            ready,
            "spoke in {pod} not ready (certified)\n{}",
            logs(&lab)
        );
    }
    eventually_some("the sniffer listening", || sniffing.exists().then_some(()));

    // App A (root, so redirected) asks for books at its service address,
    // claiming an identity of its own; the marker is in the path and so in
    // app B's answer.
    let marker = "/meshed-marker-6b1f";
    let url = format!("http://{BOOKS_SVC_IP}:{BOOKS_PORT}{marker}");
    let host = format!("{BOOKS}:{BOOKS_PORT}");
    let headers = [
        ("Host", host.as_str()),
        ("l5d-client-id", "admin.default.serviceaccount.identity"),
    ];
    let body = eventually_some("books' answer through both spokes", || {
        http_get_with(&a, &url, &headers)
    });
    assert_eq!(body, format!("books saw {marker}, client id {WEB_ID}"));

    // A client outside the mesh reaches pod B in plaintext: served, with no
    // client identity; its marker crosses the same wire in the clear.
    let plain = "/plaintext-marker-9c2e";
    let url = format!("http://{B_IP}:{BOOKS_PORT}{plain}");
    let body = eventually_some("books' answer in plaintext", || http_get(&ctl, &url));
    assert_eq!(body, format!("books saw {plain}, client id none"));

    // The wire: the plaintext exchange shows the sniffer sees what crosses
    // (its marker, both ways); A's connection to B carried a ClientHello
    // naming B's identity, and the marker never, either way.
    let to_b = format!("{B_IP}:{BOOKS_PORT}");
    let segments = eventually_some("the plaintext exchange on the wire", || {
        let s = capture(&wire);
        let seen = |from: &str, what: &str| {
            s.iter()
                .any(|g| g.src.starts_with(from) && contains(&g.payload, what))
        };
        (seen(CTL_IP, plain) && seen(&to_b, &format!("books saw {plain}"))).then_some(s)
    });
    let meshed: Vec<&Segment> = segments
        .iter()
        .filter(|g| {
            (g.src.starts_with(&format!("{A_IP}:")) && g.dst == to_b)
                || (g.src == to_b && g.dst.starts_with(&format!("{A_IP}:")))
        })
        .collect();
    let hello = meshed
        .iter()
        .find(|g| g.dst == to_b)
        .expect("A's first segment to B");
    assert_eq!(&hello.payload[..2], b"\x16\x03", "a TLS handshake record");
    assert!(contains(&hello.payload, BOOKS_ID), "SNI is B's identity");
    assert!(
        meshed
            .iter()
            .any(|g| g.src == to_b && g.payload.starts_with(b"\x16\x03")),
        "B answered with a TLS handshake"
    );
    let all: Vec<u8> = meshed.iter().flat_map(|g| g.payload.clone()).collect();
    for text in [marker, WEB_ID, "HTTP/1.1"] {
        assert!(!contains(&all, text), "{text:?} crossed in the clear");
    }

    // The spokes say the same: B terminated TLS for its own name, A reached
    // the endpoint over mTLS expecting B's identity.
    let metrics = http_get(&b, "http://127.0.0.1:4191/metrics").expect("B's metrics");
    let terminated: f64 = spoke::metrics::parse_text(&metrics)
        .iter()
        .filter(|s| {
            s.name == "spoke_detect_total"
                && s.label("direction") == Some("inbound")
                && s.label("protocol") == Some("tls")
                && s.label("reason") == Some("terminated")
        })
        .map(|s| s.value)
        .sum();
    assert!(terminated >= 1.0, "{metrics}\n{}", logs(&lab));
    // The controller hints H2 for B, so A carried the HTTP/1 request as
    // HTTP/2 under the TLS (Linkerd's `l5d-orig-proto` upgrade).
    let h2: f64 = spoke::metrics::parse_text(&metrics)
        .iter()
        .filter(|s| {
            s.name == "spoke_detect_total"
                && s.label("direction") == Some("inbound")
                && s.label("protocol") == Some("h2")
        })
        .map(|s| s.value)
        .sum();
    assert!(h2 >= 1.0, "{metrics}\n{}", logs(&lab));
    let doc = http_get(&a, "http://127.0.0.1:4191/destinations").expect("A's destinations");
    let endpoint = format!(
        "{{\"addr\": \"{B_IP}:{BOOKS_PORT}\", \"protocol_hint\": \"h2\", \"mtls\": true, \
         \"server_id\": \"{BOOKS_ID}\", \"server_name\": \"{BOOKS_ID}\"}}"
    );
    assert!(doc.contains(&endpoint), "{doc}");
}
