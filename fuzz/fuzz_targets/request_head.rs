//! cargo-fuzz target: `http1::fuzzing::request_head` (input format and checks documented there).
//! Seeds: `corpus/request_head/`. Run: `cargo +nightly fuzz run request_head corpus/request_head` from `fuzz/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| spoke_fuzz::http1::fuzzing::request_head(data));
