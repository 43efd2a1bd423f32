//! The pure parts of the HTTP/2 benchmark (bench/h2.sh): `h2idle.py selftest`
//! (its frame parser and HPACK request encoder) and `report_h2.py selftest`
//! (the per-run arithmetic, the idle-memory division and the haproxy targets
//! table), run from the test thread. The benchmark itself needs h2load,
//! haproxy and nginx and is run by hand (bench/README.md).
//!
//! Needs python3 (stdlib only). Without it the test is skipped with a message,
//! except under `CI=true`, where it fails: CI must run it.

use std::path::Path;
use std::process::{Command, Stdio};

fn python3() -> bool {
    Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn h2_bench_tools_pass_their_selftests() {
    if !python3() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "python3 is required for the bench selftests under CI=true"
        );
        eprintln!("SKIPPED: python3 not found; the h2 bench selftests did not run");
        return;
    }
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
    for script in ["h2idle.py", "report_h2.py"] {
        let out = Command::new("python3")
            .arg(bench.join(script))
            .arg("selftest")
            .current_dir(&bench)
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "{script} selftest failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("selftest: ok"),
            "{script} selftest printed no verdict"
        );
    }
}
