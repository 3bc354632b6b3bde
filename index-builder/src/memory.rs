//! Sizing shards to the machine.
//!
//! Building a shard holds its token ids and then the 32-bit suffix array in memory: 6 bytes per
//! token for `u16` ids and 8 for `u32` ids, plus a fixed few hundred MB (the tokenizer and its word
//! caches, read-ahead batches, libsais buckets; measured: 1.07 GiB peak for a 153.6 M-token GPT-2
//! shard, 6 bytes per token + 217 MiB). The
//! automatic shard size takes half of the machine's memory (`MemTotal`, not the momentary
//! `MemAvailable`, so that the same build on the same machine always cuts the same shards), rounded
//! down to a multiple of 2^20 tokens and capped at libsais's 32-bit limit. The text index's
//! in-memory segments take a sixteenth of `MemTotal` more (see `text.rs`), so a build stays within
//! about 0.6 of the machine's memory.

use familiar::token::TokenWidth;

use crate::sa::MAX_SHARD_TOKENS;

/// Peak bytes per token of a shard build, by token width.
pub fn build_bytes_per_token(width: TokenWidth) -> u64 {
    u64::from(width.bytes()) + 4
}

pub use familiar::memory::meminfo;

/// Shard size (token positions) for this machine: half its memory at the build's bytes per token,
/// rounded down to a multiple of 2^20, capped at what libsais's 32-bit output can sort. Falls back to
/// 2^28 tokens when memory cannot be read.
pub fn auto_shard_tokens(width: TokenWidth) -> u64 {
    let budget = meminfo("MemTotal")
        .map(|m| m / 2 / build_bytes_per_token(width))
        .unwrap_or(1 << 28);
    if budget > MAX_SHARD_TOKENS {
        return MAX_SHARD_TOKENS;
    }
    (budget >> 20 << 20).max(1 << 20)
}

#[cfg(test)]
mod tests {
    #[test]
    fn auto_size_is_stable_and_rounded() {
        for w in [
            familiar::token::TokenWidth::U16,
            familiar::token::TokenWidth::U32,
        ] {
            let n = super::auto_shard_tokens(w);
            assert!(
                n.is_multiple_of(1 << 20) || n == super::MAX_SHARD_TOKENS,
                "{n}"
            );
            assert_eq!(n, super::auto_shard_tokens(w));
        }
    }
}
