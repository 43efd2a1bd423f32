//! cargo-fuzz target: `http1::fuzzing::response_head` (input format and checks documented there).
//! Seeds: `corpus/response_head/`. Run: `cargo +nightly fuzz run response_head corpus/response_head` from `fuzz/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| spoke_fuzz::http1::fuzzing::response_head(data));
