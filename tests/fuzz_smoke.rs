//! Smoke run of the fuzz entry points (`spoke::http1::fuzzing`) on stable, so CI exercises
//! them without nightly or cargo-fuzz: every seed in `fuzz/corpus/<target>/`, then a few
//! thousand seeded random mutations of those seeds per target. A panic is a finding, as it
//! would be under libFuzzer; the failing input is printed so it can be added to the corpus.
//!
//! Test thread only, no I/O besides reading the corpus. The coverage-guided targets are in
//! `fuzz/fuzz_targets/` (`cargo +nightly fuzz run <target>` from `fuzz/`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use spoke::http1::fuzzing;

/// Mutated inputs per target; `SPOKE_FUZZ_SMOKE_MUTATIONS` asks for more (or fewer).
fn mutations() -> usize {
    std::env::var("SPOKE_FUZZ_SMOKE_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

/// Byte strings that matter to HTTP/1.1 framing, spliced in by the mutator.
const TOKENS: [&[u8]; 24] = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b":",
    b" ",
    b"\t",
    b",",
    b";",
    b"\0",
    b"\r\n ",
    b"chunked",
    b"gzip",
    b"Transfer-Encoding: ",
    b"Content-Length: ",
    b"Host: ",
    b"Connection: ",
    b"l5d-dst-override: ",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"18446744073709551616",
    b"ffffffffffffffff",
    b"0\r\n\r\n",
    b"http://",
];

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "fuzz", "corpus", target]
        .iter()
        .collect();
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            (path.display().to_string(), data)
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 10, "{target}: only {} seeds", seeds.len());
    seeds
}

/// Runs `entry` on `data`; on a panic, fails with the input spelled out.
#[track_caller]
fn run(target: &str, what: &str, entry: fn(&[u8]), data: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| entry(data))).is_err() {
        panic!(
            "{target} panicked on {what}: {:?}",
            String::from_utf8_lossy(data)
        );
    }
}

/// A few random edits of `seed`: byte changes, inserted tokens, deletions, duplicated or
/// spliced slices, truncation.
fn mutate(rng: &mut fastrand::Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..rng.usize(1..=8) {
        let at = rng.usize(0..=out.len());
        match rng.u8(0..7) {
            0 if at < out.len() => out[at] = rng.u8(..),
            1 => {
                let token = TOKENS[rng.usize(0..TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
            2 if at < out.len() => {
                let end = (at + rng.usize(1..=8)).min(out.len());
                out.drain(at..end);
            }
            3 if at < out.len() => {
                let end = (at + rng.usize(1..=16)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            4 if !other.is_empty() => {
                let from = rng.usize(0..other.len());
                let end = (from + rng.usize(1..=32)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            5 => out.truncate(at),
            _ => out.insert(at.min(out.len()), b"0123456789abcdef"[rng.usize(0..16)]),
        }
    }
    out
}

fn smoke(target: &str, entry: fn(&[u8]), seed: u64) {
    let seeds = corpus(target);
    for (name, data) in &seeds {
        run(target, name, entry, data);
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    for i in 0..mutations() {
        let (_, a) = &seeds[rng.usize(0..seeds.len())];
        let (_, b) = &seeds[rng.usize(0..seeds.len())];
        let data = mutate(&mut rng, a, b);
        run(
            target,
            &format!("mutation {i} (seed {seed:#x})"),
            entry,
            &data,
        );
    }
}

#[test]
fn request_head_survives_its_corpus_and_mutations() {
    smoke("request_head", fuzzing::request_head, 0x5eed_0001);
}

#[test]
fn response_head_survives_its_corpus_and_mutations() {
    smoke("response_head", fuzzing::response_head, 0x5eed_0002);
}

#[test]
fn body_chunked_survives_its_corpus_and_mutations() {
    smoke("body_chunked", fuzzing::body_chunked, 0x5eed_0003);
}
