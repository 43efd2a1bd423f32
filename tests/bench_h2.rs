//! The pure parts of the HTTP/2 benchmark (bench/h2.sh): `h2idle.py selftest`
//! (its frame parser and HPACK request encoder) and `report_h2.py selftest`
//! (the per-run arithmetic, the idle-memory division and the haproxy targets
//! table), and `cg_crates.py selftest` (which crate cost_h2.sh charges a
//! function's instructions to), run from the test thread. The benchmark itself needs h2load,
//! haproxy and nginx and is run by hand (bench/README.md).
//!
//! Needs python3 (stdlib only). Without it the test is skipped with a message,
//! except under `CI=true`, where it fails: CI must run it.

use std::path::Path;
use std::process::Command;

#[path = "support/python.rs"]
mod python;

#[test]
fn h2_bench_tools_pass_their_selftests() {
    if !python::python3_or_skip("the h2 bench selftests") {
        return;
    }
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
    for script in ["h2idle.py", "report_h2.py", "cg_crates.py"] {
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
