//! Whether python3 can run the bench scripts a test drives (`soak.rs`,
//! `bench_h2.rs`; they include this file alone, not the whole harness).
//! Without it such a test is skipped with a message, except under `CI=true`,
//! where it fails: CI must run it.

use std::process::{Command, Stdio};

/// True when python3 runs; false (after saying which test did not run) when
/// it does not and this is not CI; panics under `CI=true`.
pub fn python3_or_skip(what: &str) -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(!ci, "python3 is required for {what} under CI=true");
    eprintln!("SKIPPED: python3 not found; {what} did not run");
    false
}
