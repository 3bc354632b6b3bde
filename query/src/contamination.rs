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

/// Measures every field of every item (items in parallel); rows in item order, then field
/// order.
pub fn contamination(
    index: &Index,
    items: &[Item],
    options: &ContaminationOptions,
    on_item: &(dyn Fn() + Sync),
) -> Result<Vec<ContaminationRow>> {
    if options.ngram_sizes.is_empty() || options.ngram_sizes.contains(&0) {
        return Err(Error::Query(
            "n-gram sizes must be at least 1 (and at least one given)".into(),
        ));
    }
    let tokenizer = index.tokenizer()?;
    let per_item = items
        .par_iter()
        .map(|item| -> Result<Vec<ContaminationRow>> {
            let mut rows = Vec::new();
            // The prompt alone (tokenized once); a completion or choice as it follows it.
            let prompt = tokenizer.encode(&item.prompt)?;
            for (field, text, answer) in fields(item) {
                let tokens = if field == "prompt" {
                    prompt.clone()
                } else {
                    familiar::items::completion_tokens(tokenizer, &item.prompt, &prompt, text)?
                };
                rows.push(measure(index, item, field, answer, &tokens, options)?);
            }
            on_item();
            Ok(rows)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(per_item.into_iter().flatten().collect())
}

fn measure(
    index: &Index,
    item: &Item,
    field: String,
    answer: bool,
    tokens: &[u32],
    options: &ContaminationOptions,
) -> Result<ContaminationRow> {
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
    Ok(ContaminationRow {
        item_id: item.id.clone(),
        task: item.task.clone(),
        field,
        answer,
        field_tokens: m as u64,
        longest_match: l.iter().copied().max().unwrap_or(0) as u64,
        ngram_sizes: options.ngram_sizes.iter().map(|&n| n as u64).collect(),
        ngram_fractions: fractions,
        occurrences,
        documents,
        first_documents,
    })
}
