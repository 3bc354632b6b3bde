#![no_main]
//! Fuzz target: `familiar::tokenizer::Tokenizer::from_bytes`: a Hugging Face `tokenizer.json`.
//!
//! The checks live in `familiar_fuzz::tokenizer_json` (fuzz/src/lib.rs), shared with tests/fuzz_smoke.rs.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| familiar_fuzz::tokenizer_json(data));
