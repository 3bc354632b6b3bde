//! The ∞-gram language model of Liu et al. 2024 ("Infini-gram: Scaling Unbounded n-gram Language
//! Models to a Trillion Tokens"): the next token is predicted from the longest suffix of the prompt
//! that occurs in the corpus, with exact counts.
//!
//! `P∞(w | prompt) = count(s w) / count(s)`, where `s` is the longest suffix of the prompt with
//! `count(s) > 0`. The empty suffix always qualifies: it occurs at every token position of the
//! index (separators included, as in [`crate::ngram::next_tokens`], where the outcome after it is
//! the end of a document), so every prompt has a suffix and, on a non-empty index, a probability.
//! The same definitions and field meanings as infini-gram's `infgram_prob` / `infgram_ntd`
//! (`suffix_len`, `prompt_cnt`, `cont_cnt`), but the next-token distribution is exact, never
//! sampled.

use familiar::index::Index;
use familiar::Result;

use crate::ngram::{self, NextTokens, Probability};

/// The length of the longest suffix of `prompt` that occurs in the index (0 when not even its
/// last token does). A suffix of an occurring sequence occurs too, so the lengths that occur are
/// `0..=L` and `L` is found by bisection: about log2(prompt length) counts.
pub fn longest_suffix(index: &Index, prompt: &[u32]) -> Result<usize> {
    index.check_ids(prompt)?;
    let occurs = |len: usize| -> Result<bool> {
        Ok(len == 0 || ngram::count(index, &prompt[prompt.len() - len..])? > 0)
    };
    // Invariant: occurs(lo), and every length above hi does not occur.
    let (mut lo, mut hi) = (0usize, prompt.len());
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if occurs(mid)? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// P∞(`next` | `prompt`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InfgramProbability {
    /// The length of the suffix of the prompt used (the longest that occurs).
    pub suffix_len: usize,
    /// Counts of that suffix and of the suffix followed by `next`, and their ratio (`None` only
    /// on an index without tokens).
    pub probability: Probability,
}

/// P∞(`next` | `prompt`): [`ngram::probability`] of `next` after the longest suffix of `prompt`
/// that occurs.
pub fn infgram_prob(index: &Index, prompt: &[u32], next: u32) -> Result<InfgramProbability> {
    let suffix_len = longest_suffix(index, prompt)?;
    let probability = ngram::probability(index, &prompt[prompt.len() - suffix_len..], next)?;
    Ok(InfgramProbability {
        suffix_len,
        probability,
    })
}

/// The ∞-gram next-token distribution after `prompt`.
#[derive(Debug, Clone, PartialEq)]
pub struct InfgramNext {
    /// The length of the suffix of the prompt used (the longest that occurs).
    pub suffix_len: usize,
    /// The exact distribution of the token after that suffix.
    pub next: NextTokens,
}

/// The exact distribution of the token that follows the longest suffix of `prompt` that occurs
/// ([`ngram::next_tokens`] of that suffix).
pub fn infgram_ntd(index: &Index, prompt: &[u32]) -> Result<InfgramNext> {
    let suffix_len = longest_suffix(index, prompt)?;
    let next = ngram::next_tokens(index, &prompt[prompt.len() - suffix_len..])?;
    Ok(InfgramNext { suffix_len, next })
}
