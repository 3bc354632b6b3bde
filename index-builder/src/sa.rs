//! Suffix-array construction with libsais (SA-IS, linear time), one generic entry point for both
//! token widths.
//!
//! libsais sorts suffixes as if a unique smallest sentinel ended the text, and compares token ids
//! as unsigned integers: the order [`familiar::index::ShardView::compare`] searches in. Ties between
//! long repeated suffixes are resolved exactly by the algorithm (no prefix cut-off).
//!
//! Memory: the text plus one `i32` per token (6 bytes per token for `u16` ids, 8 for `u32`), plus
//! libsais's bucket arrays (alphabet-sized). Texts are limited to 2^31 - 1 tokens per shard.
//!
//! With the `openmp` feature libsais uses OpenMP threads; set `OMP_WAIT_POLICY=PASSIVE` (the
//! `familiar` binary does) or idle threads spin and steal the CPU from everything else.

use familiar::token::Token;
use familiar::{Error, Result};
use libsais::{suffix_array::AlphabetSize, SuffixArrayConstruction, ThreadCount};

/// Largest shard libsais's 32-bit output can sort.
pub const MAX_SHARD_TOKENS: u64 = i32::MAX as u64;

/// A token type libsais can sort.
pub trait SaInput: Token {
    /// The suffix array of `text`, whose ids are all below `alphabet`. `text` may be modified
    /// during construction and is restored before returning.
    fn suffix_array(text: &mut [Self], alphabet: u32, threads: usize) -> Result<Vec<i32>>;
}

fn thread_count(threads: usize) -> ThreadCount {
    ThreadCount::fixed(u16::try_from(threads.max(1)).unwrap_or(u16::MAX))
}

fn libsais_error(e: libsais::LibsaisError, n: usize) -> Error {
    match e {
        libsais::LibsaisError::OutOfMemory => Error::Config(format!(
            "out of memory sorting the suffixes of {n} tokens; use smaller shards (--shard-tokens)"
        )),
        other => Error::Bug(format!("libsais failed on {n} tokens: {other:?}")),
    }
}

impl SaInput for u16 {
    fn suffix_array(text: &mut [u16], _alphabet: u32, threads: usize) -> Result<Vec<i32>> {
        check_len(text.len())?;
        let construction = SuffixArrayConstruction::for_text(&*text).in_owned_buffer32();
        let result = if threads > 1 {
            construction
                .multi_threaded(thread_count(threads))
                .run()
                .map(|r| r.into_vec())
        } else {
            construction.single_threaded().run().map(|r| r.into_vec())
        };
        result.map_err(|e| libsais_error(e, text.len()))
    }
}

impl SaInput for u32 {
    fn suffix_array(text: &mut [u32], alphabet: u32, threads: usize) -> Result<Vec<i32>> {
        check_len(text.len())?;
        let n = text.len();
        if let Some(bad) = text.iter().find(|&&t| t >= alphabet) {
            return Err(Error::Bug(format!(
                "token {bad} is outside the alphabet of {alphabet}"
            )));
        }
        let alphabet =
            i32::try_from(alphabet).map_err(|_| Error::Bug("alphabet exceeds i32".into()))?;
        // Ids are below 2^31 (the tokenizer refuses larger vocabularies), so the reinterpretation
        // as non-negative i32 keeps their order.
        let as_i32: &mut [i32] = bytemuck::cast_slice_mut(text);
        let construction = SuffixArrayConstruction::for_text_mut(as_i32).in_owned_buffer32();
        let alphabet = AlphabetSize::new(alphabet);
        // SAFETY (both arms): every value is non-negative and below `alphabet` (checked above).
        let result = if threads > 1 {
            let c = construction.multi_threaded(thread_count(threads));
            unsafe { c.with_alphabet_size(alphabet) }
                .run()
                .map(|r| r.into_vec())
        } else {
            let c = construction.single_threaded();
            unsafe { c.with_alphabet_size(alphabet) }
                .run()
                .map(|r| r.into_vec())
        };
        result.map_err(|e| libsais_error(e, n))
    }
}

fn check_len(n: usize) -> Result<()> {
    if n as u64 > MAX_SHARD_TOKENS {
        return Err(Error::Config(format!(
            "a shard of {n} tokens exceeds the maximum of {MAX_SHARD_TOKENS}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive<T: Ord>(text: &[T]) -> Vec<i32> {
        let mut sa: Vec<i32> = (0..text.len() as i32).collect();
        sa.sort_by(|&a, &b| text[a as usize..].cmp(&text[b as usize..]));
        sa
    }

    proptest! {
        #[test]
        fn u16_matches_naive_sort(mut text in proptest::collection::vec(0u16..6, 1..300), threads in 1usize..3) {
            let expected = naive(&text);
            prop_assert_eq!(u16::suffix_array(&mut text, 65536, threads).unwrap(), expected);
        }

        #[test]
        fn u32_matches_naive_sort(text in proptest::collection::vec(prop_oneof![0u32..4, 70_000u32..70_003], 1..300)) {
            let mut t = text.clone();
            let expected = naive(&text);
            prop_assert_eq!(u32::suffix_array(&mut t, 70_003, 1).unwrap(), expected);
            prop_assert_eq!(t, text, "text restored");
        }
    }
}
