#![no_main]
//! Fuzz target: `familiar::manifest::parse` of `ShardManifest`, `IndexManifest` and `BuildPlan`, and the
//! `to_bytes` round trip of what it accepts.
//!
//! The checks live in `familiar_fuzz::manifest` (fuzz/src/lib.rs), shared with tests/fuzz_smoke.rs.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| familiar_fuzz::manifest(data));
