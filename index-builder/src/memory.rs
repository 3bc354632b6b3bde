//! Sizing shards to the machine.
//!
//! Building a shard holds its token ids and then the 32-bit suffix array in memory: 6 bytes per
//! token for `u16` ids and 8 for `u32` ids, plus a few MB of libsais buckets and the tokenizer. The
//! automatic shard size takes half of the machine's memory (`MemTotal`, not the momentary
//! `MemAvailable`, so that the same build on the same machine always cuts the same shards), rounded
//! down to a power of two and capped at libsais's 32-bit limit.

use familiar::token::TokenWidth;

use crate::sa::MAX_SHARD_TOKENS;

/// Peak bytes per token of a shard build, by token width.
pub fn build_bytes_per_token(width: TokenWidth) -> u64 {
    u64::from(width.bytes()) + 4
}

/// Memory available to new allocations, from `/proc/meminfo` (`MemAvailable`), if readable.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Shard size (token positions) for this machine: half the available memory, capped at what
/// libsais's 32-bit output can sort. Falls back to 2^28 tokens when memory cannot be read.
pub fn auto_shard_tokens(width: TokenWidth) -> u64 {
    let budget = available_memory()
        .map(|m| m / 2 / build_bytes_per_token(width))
        .unwrap_or(1 << 28);
    budget.clamp(1 << 20, MAX_SHARD_TOKENS)
}
