//! spoke's HTTP/1.1 core on its own, for the fuzz targets in `fuzz_targets/`.
//!
//! `src/http1/` of the main crate is compiled here as this crate's `http1` module: the same
//! files, not a copy. It is pure and needs only httparse, so a fuzz build skips the rest of
//! spoke, above all grpcio's C core, which would otherwise be rebuilt (about 12 minutes)
//! for the nightly toolchain and the sanitizer flags. The targets call
//! `http1::fuzzing`, the entry points `tests/fuzz_smoke.rs` runs on stable.

#[path = "../../src/http1/mod.rs"]
pub mod http1;
