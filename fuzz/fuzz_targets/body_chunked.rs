//! cargo-fuzz target: `http1::fuzzing::body_chunked` (input format and checks documented there).
//! Seeds: `corpus/body_chunked/`. Run: `cargo +nightly fuzz run body_chunked corpus/body_chunked` from `fuzz/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| spoke_fuzz::http1::fuzzing::body_chunked(data));
