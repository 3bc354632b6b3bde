#![no_main]
//! Fuzz target: `familiar::token::TokenText::<_, u16>` and `::<_, u32>`: a shard's `tokens.bin`.
//!
//! The checks live in `familiar_fuzz::token_file` (fuzz/src/lib.rs), shared with tests/fuzz_smoke.rs.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| familiar_fuzz::token_file(data));
