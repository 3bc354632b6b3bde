//! Contamination of evaluation items: how much of each item's text occurs verbatim in the index.
//!
//! Per item (read by [`familiar::items`], with the ids `familiar score` gives them) and field —
//! the prompt, the completion, each choice — the field is tokenized as `score` scores it (a
//! completion or choice as it follows the prompt, [`familiar::items::completion_tokens`]), and:
//! the longest span of it that occurs; for each n-gram size (8 and 13 by default, as in the
//! contamination studies of GPT-3 and PaLM), the fraction of its n-grams that occur (a field
//! shorter than n counts as one n-gram, itself); how often and in how many documents the whole
//! field occurs, and the first of those documents. One exact scan per field: with `L(i)` the
//! longest match from each token ([`crate::trace::longest_matches`]), the n-gram at `i` occurs if
//! and only if `L(i) ≥ n`, so no n-gram is counted on its own.

use std::collections::HashMap;

use familiar::index::Index;
use familiar::items::{Ask, Item};
use familiar::{Error, Result};
use rayon::prelude::*;

use crate::ngram::{self, Cnf, CnfOptions};
use crate::trace::longest_matches;

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContaminationOptions {
    /// The n-gram sizes whose presence is measured.
    pub ngram_sizes: Vec<usize>,
    /// How many documents holding the whole field to list.
    pub documents: usize,
}

impl Default for ContaminationOptions {
    fn default() -> Self {
        ContaminationOptions {
            ngram_sizes: vec![8, 13],
            documents: 5,
        }
    }
}

/// A row of the `contamination` table: one field of one item.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/contamination.json
pub struct ContaminationRow {
    pub item_id: String,
    pub task: String,
    pub field: String,
    pub answer: bool,
    pub field_tokens: u64,
    pub longest_match: u64,
    pub ngram_sizes: Vec<u64>,
    pub ngram_fractions: Vec<f64>,
    pub occurrences: u64,
    pub documents: u64,
    pub first_documents: Vec<u64>,
}

impl familiar::table::TableRow for ContaminationRow {
    const TABLE: &'static str = "contamination";
}

/// The fields of an item: (name, text, whether it is the answer).
fn fields(item: &Item) -> Vec<(String, &str, bool)> {
    let mut out = vec![("prompt".to_string(), item.prompt.as_str(), false)];
    match &item.ask {
        Ask::Completion(c) => out.push(("completion".into(), c.as_str(), true)),
        Ask::Choice { choices, answer } => {
            for (k, c) in choices.iter().enumerate() {
                out.push((format!("choice_{k}"), c.as_str(), k == *answer));
            }
        }
    }
    out
}

/// Progress of [`contamination`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContaminationEvent {
    /// The fields are tokenized: this many distinct token sequences will be measured.
    Distinct(u64),
    /// One distinct token sequence was measured.
    Measured,
}

/// What one distinct token sequence measures to.
struct Measure {
    longest_match: u64,
    fractions: Vec<f64>,
    occurrences: u64,
    documents: u64,
    first_documents: Vec<u64>,
}

/// Measures every field of every item; rows in item order, then field order. Fields are
/// tokenized in parallel, and each distinct token sequence is measured once (in parallel): the
/// choices of a benchmark repeat ("True", "4"), and a frequent one is the costliest to count
/// documents for.
pub fn contamination(
    index: &Index,
    items: &[Item],
    options: &ContaminationOptions,
    progress: &(dyn Fn(ContaminationEvent) + Sync),
) -> Result<Vec<ContaminationRow>> {
    if options.ngram_sizes.is_empty() || options.ngram_sizes.contains(&0) {
        return Err(Error::Query(
            "n-gram sizes must be at least 1 (and at least one given)".into(),
        ));
    }
    let tokenizer = index.tokenizer()?;
    // The prompt alone (tokenized once); a completion or choice as it follows it.
    let tokenized = items
        .par_iter()
        .map(|item| -> Result<Vec<(String, bool, Vec<u32>)>> {
            let prompt = tokenizer.encode(&item.prompt)?;
            fields(item)
                .into_iter()
                .map(|(field, text, answer)| {
                    let tokens = if field == "prompt" {
                        prompt.clone()
                    } else {
                        familiar::items::completion_tokens(tokenizer, &item.prompt, &prompt, text)?
                    };
                    Ok((field, answer, tokens))
                })
                .collect()
        })
        .collect::<Result<Vec<_>>>()?;
    let mut distinct: HashMap<&[u32], usize> = HashMap::new();
    let mut sequences: Vec<&[u32]> = Vec::new();
    for fields in &tokenized {
        for (_, _, tokens) in fields {
            distinct.entry(tokens.as_slice()).or_insert_with(|| {
                sequences.push(tokens);
                sequences.len() - 1
            });
        }
    }
    progress(ContaminationEvent::Distinct(sequences.len() as u64));
    let measured = sequences
        .par_iter()
        .map(|tokens| {
            let m = measure(index, tokens, options);
            progress(ContaminationEvent::Measured);
            m
        })
        .collect::<Result<Vec<Measure>>>()?;
    let mut rows = Vec::new();
    for (item, fields) in items.iter().zip(tokenized.iter()) {
        for (field, answer, tokens) in fields {
            let m = &measured[distinct[tokens.as_slice()]];
            rows.push(ContaminationRow {
                item_id: item.id.clone(),
                task: item.task.clone(),
                field: field.clone(),
                answer: *answer,
                field_tokens: tokens.len() as u64,
                longest_match: m.longest_match,
                ngram_sizes: options.ngram_sizes.iter().map(|&n| n as u64).collect(),
                ngram_fractions: m.fractions.clone(),
                occurrences: m.occurrences,
                documents: m.documents,
                first_documents: m.first_documents.clone(),
            });
        }
    }
    Ok(rows)
}

fn measure(index: &Index, tokens: &[u32], options: &ContaminationOptions) -> Result<Measure> {
    let m = tokens.len();
    let l = longest_matches(index, tokens)?;
    let fractions = options
        .ngram_sizes
        .iter()
        .map(|&n| {
            if m == 0 {
                0.0
            } else if m < n {
                f64::from(u8::from(l[0] == m))
            } else {
                let windows = m - n + 1;
                (0..windows).filter(|&i| l[i] >= n).count() as f64 / windows as f64
            }
        })
        .collect();
    let whole = m > 0 && l[0] == m;
    let (occurrences, documents, first_documents) = if whole {
        let r = ngram::cnf(
            index,
            &Cnf {
                clauses: vec![vec![tokens.to_vec()]],
            },
            &CnfOptions {
                list_documents: options.documents,
                ..CnfOptions::default()
            },
        )?;
        (r.occurrences, r.documents, r.doc_ids)
    } else {
        (0, 0, Vec::new())
    };
    Ok(Measure {
        longest_match: l.iter().copied().max().unwrap_or(0) as u64,
        fractions,
        occurrences,
        documents,
        first_documents,
    })
}
