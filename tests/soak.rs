//! The short soak: `bench/soak.sh --duration 60` against the release binary this
//! build made (steady load through spoke while profiles change every 100 ms,
//! endpoints move, the controller and backends are killed and restarted, slow
//! clients trickle and destinations are evicted and re-created), which must exit
//! 0: flat memory, fds and threads, and no failed request outside the
//! unavoidable class. bench/README.md describes the scenario and the verdict.
//!
//! Needs python3 (stdlib only). Without it the test is skipped with a message,
//! except under `CI=true`, where it fails: CI must run it.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/python.rs"]
mod python;

/// The soak's own duration; the whole test takes a few seconds more.
const SOAK_SECONDS: u32 = 60;
/// Past this the soak is stopped (SIGTERM: its trap kills what it started).
const LIMIT: Duration = Duration::from_secs(100);

#[test]
fn short_soak_keeps_memory_flat_and_fails_no_avoidable_request() {
    if !python::python3_or_skip("the short soak") {
        return;
    }
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
    let selftest = Command::new("python3")
        .arg(bench.join("soak.py"))
        .arg("selftest")
        .output()
        .expect("run soak.py selftest");
    assert!(
        selftest.status.success(),
        "soak.py selftest: {}",
        String::from_utf8_lossy(&selftest.stderr)
    );

    let mut child = Command::new("bash")
        .arg(bench.join("soak.sh"))
        .args(["--duration", &SOAK_SECONDS.to_string()])
        .env("SPOKE_BIN", env!("CARGO_BIN_EXE_spoke"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bench/soak.sh");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            break None;
        }
        // Polling a child process for exit: the wait is bounded by LIMIT.
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    // Shown by the harness when the test fails (or with --nocapture).
    println!("{stdout}\n--- stderr ---\n{stderr}");
    let status = status.unwrap_or_else(|| panic!("the soak ran past {LIMIT:?}"));
    assert!(
        status.success(),
        "bench/soak.sh failed ({status}); its verdict:\n{}",
        stdout
            .split("## spoke soak")
            .nth(1)
            .unwrap_or("(no summary; see the output above)")
    );
    assert!(stdout.contains("RESULT: PASS"), "{stdout}");
}
