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

use familiar::option::name;
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
            "out of memory sorting the suffixes of {n} tokens; use smaller shards ({})",
            name("shard_tokens")
        )),
        other => Error::Bug(format!("libsais failed on {n} tokens: {other:?}")),
    }
}

/// Extra suffix-array entries handed to libsais as workspace (it sorts faster with room for its
/// bucket arrays; 4 MB, measured 5% faster on 100 M tokens).
const EXTRA_SPACE: usize = 1 << 20;

/// A zeroed `i32` buffer for the suffix array plus workspace, backed by huge pages where the kernel
/// allows (its fresh pages are untouched until libsais writes them).
fn sa_buffer(n: usize) -> Result<Vec<i32>> {
    let len = n
        .checked_add(EXTRA_SPACE)
        .ok_or_else(|| Error::Config(format!("a shard of {n} tokens is too large")))?;
    let mut sa = vec![0i32; len];
    advise_huge_pages(&mut sa);
    Ok(sa)
}

/// Asks the kernel to back a large buffer with transparent huge pages. libsais reads the text and
/// the suffix array at random; with 4 KiB pages most of those reads also miss the TLB. Measured on
/// 100 M Zipf tokens: 5.4 → 6.9 M tokens per second. A hint: failure changes nothing.
pub fn advise_huge_pages<T>(buf: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let (a, b) = (start.div_ceil(HUGE) * HUGE, end / HUGE * HUGE);
        if b > a {
            // SAFETY: [a, b) lies inside `buf`, memory this process owns; MADV_HUGEPAGE only changes
            // how the kernel backs the pages, never their contents.
            unsafe {
                libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

impl SaInput for u16 {
    fn suffix_array(text: &mut [u16], _alphabet: u32, threads: usize) -> Result<Vec<i32>> {
        check_len(text.len())?;
        let n = text.len();
        let mut sa = sa_buffer(n)?;
        let construction = SuffixArrayConstruction::for_text(&*text).in_borrowed_buffer(&mut sa);
        let result = if threads > 1 {
            construction
                .multi_threaded(thread_count(threads))
                .run()
                .map(|_| ())
        } else {
            construction.single_threaded().run().map(|_| ())
        };
        result.map_err(|e| libsais_error(e, n))?;
        sa.truncate(n);
        Ok(sa)
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
        let mut sa = sa_buffer(n)?;
        // Ids are below 2^31 (the tokenizer refuses larger vocabularies), so the reinterpretation
        // as non-negative i32 keeps their order.
        let as_i32: &mut [i32] = bytemuck::cast_slice_mut(text);
        let construction =
            SuffixArrayConstruction::for_text_mut(as_i32).in_borrowed_buffer(&mut sa);
        let alphabet = AlphabetSize::new(alphabet);
        // SAFETY (both arms): every value is non-negative and below `alphabet` (checked above).
        let result = if threads > 1 {
            let c = construction.multi_threaded(thread_count(threads));
            unsafe { c.with_alphabet_size(alphabet) }.run().map(|_| ())
        } else {
            let c = construction.single_threaded();
            unsafe { c.with_alphabet_size(alphabet) }.run().map(|_| ())
        };
        result.map_err(|e| libsais_error(e, n))?;
        sa.truncate(n);
        Ok(sa)
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
