#![no_main]
//! Fuzz target: `familiar::corpus::parse_record`: one JSONL corpus line, default field names.
//!
//! The checks live in `familiar_fuzz::corpus_line` (fuzz/src/lib.rs), shared with tests/fuzz_smoke.rs.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| familiar_fuzz::corpus_line(data));
