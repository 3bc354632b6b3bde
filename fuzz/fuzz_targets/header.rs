#![no_main]
//! Fuzz target: `familiar::format::Header::parse` and `PackedArray::new` + `get`, for every file kind.
//!
//! The checks live in `familiar_fuzz::header` (fuzz/src/lib.rs), shared with tests/fuzz_smoke.rs.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| familiar_fuzz::header(data));
