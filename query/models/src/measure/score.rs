//! Zero-shot scores and keyword probabilities: log-probabilities of completions given prompts.
//!
//! Tokenization follows lm-evaluation-harness: the completion's tokens are those that follow the
//! prompt's tokens in the tokenization of prompt + completion (when the prompt's tokens are a prefix
//! of it; otherwise the completion is tokenized on its own), so a merge across the boundary is
//! attributed to the completion. An empty prompt becomes the model's BOS token (else its EOS
//! token). A sequence longer than the model's context loses tokens from the start of the prompt,
//! and the number lost is reported with the item; a completion that alone exceeds the context is
//! an error naming the item.
//!
//! Metrics per item: `logprob` (natural log, summed over the completion's tokens), `n_tokens`,
//! `greedy_match` (every completion token is the model's argmax: LAMBADA's accuracy), and for
//! multiple choice `acc` (argmax of the summed log-probabilities) and `acc_norm` (argmax of the sum
//! divided by the choice's length in characters), as lm-evaluation-harness defines them.

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::finite;
use crate::model::transformer::{candle_error, log_softmax_last, LoadOptions};
use crate::model::{Capture, Transformer};
use candle_core::{DType, Device, IndexOp};
use familiar::tokenizer::Tokenizer;

use familiar::items::{Ask, Item};

/// A model directory: the model and its tokenizer.
#[derive(Debug)]
pub struct LanguageModel {
    /// The network.
    pub model: Transformer,
    /// Its tokenizer (`tokenizer.json` of the model directory).
    pub tokenizer: Tokenizer,
}

impl LanguageModel {
    /// Loads `config.json`, the safetensors and `tokenizer.json` of a model directory onto the CPU.
    pub fn load(dir: &Path) -> Result<LanguageModel> {
        LanguageModel::load_on(dir, &Device::Cpu)
    }

    /// [`LanguageModel::load`] onto `device`.
    pub fn load_on(dir: &Path, device: &Device) -> Result<LanguageModel> {
        let options = LoadOptions {
            device: device.clone(),
            ..LoadOptions::default()
        };
        let model = Transformer::load_with(dir, &options)?;
        let tpath = crate::model::tokenizer_file(dir)?;
        let tokenizer = Tokenizer::from_file(&tpath)?;
        if tokenizer.vocab_size() as usize > model.config.vocab_size {
            return Err(Error::config(format!(
                "{}: the tokenizer has {} ids but the model only {}",
                tpath.display(),
                tokenizer.vocab_size(),
                model.config.vocab_size
            )));
        }
        Ok(LanguageModel { model, tokenizer })
    }

    /// Token ids of `prompt` and of `completion` after it (see the module documentation).
    pub fn split(&self, prompt: &str, completion: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let ctx = self.tokenizer.encode(prompt)?;
        let cont = familiar::items::completion_tokens(&self.tokenizer, prompt, &ctx, completion)?;
        let ctx = if ctx.is_empty() {
            let start = self
                .model
                .config
                .bos_token_id
                .or(self.model.config.eos_token_id)
                .ok_or_else(|| {
                    Error::query(
                        "an empty prompt needs a BOS or EOS token, and config.json names neither",
                    )
                })?;
            vec![start]
        } else {
            ctx
        };
        Ok((ctx, cont))
    }

    /// Scores `completion` after `prompt`.
    pub fn score(&self, prompt: &str, completion: &str) -> Result<Scored> {
        let (ctx, cont) = self.split(prompt, completion)?;
        self.score_ids(&ctx, &cont)
    }

    /// Scores token ids `cont` after `ctx` (`ctx` non-empty).
    pub fn score_ids(&self, ctx: &[u32], cont: &[u32]) -> Result<Scored> {
        let mut v = self.score_batch(&[(ctx.to_vec(), cont.to_vec())])?;
        v.pop()
            .ok_or_else(|| Error::bug("one score for one sequence"))
    }

    /// `ctx` then `cont` in the model's context: the sequence, where `cont` starts in it, and how
    /// many tokens of `ctx` were dropped from the start to make it fit.
    pub fn fit(&self, ctx: &[u32], cont: &[u32]) -> Result<(Vec<u32>, usize, usize)> {
        let window = self.model.config.max_positions;
        if cont.is_empty() {
            return Err(Error::query("the completion has no tokens"));
        }
        if cont.len() >= window {
            return Err(Error::query(format!(
                "the completion has {} tokens; the model's context holds {window}",
                cont.len()
            )));
        }
        let keep = (window - cont.len()).min(ctx.len());
        let truncated = ctx.len() - keep;
        let mut ids = ctx[truncated..].to_vec();
        ids.extend_from_slice(cont);
        Ok((ids, keep, truncated))
    }

    /// Scores several `(ctx, cont)` pairs in one forward pass. Shorter sequences are padded at the
    /// end; causal attention keeps padding from touching the positions scored, so each score equals
    /// the one of its sequence alone (up to floating-point summation order).
    ///
    /// A non-finite log-probability is an error ([`Error::NonFinite`]) naming the sequence's place
    /// in the batch; [`LanguageModel::score_batch_unchecked`] leaves the check
    /// ([`Scored::check`]) to callers that can name the item.
    pub fn score_batch(&self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Vec<Scored>> {
        let scores = self.score_batch_unchecked(pairs)?;
        for (b, s) in scores.iter().enumerate() {
            s.check().map_err(|e| {
                if scores.len() > 1 {
                    finite::within(e, format!("sequence {b} of the batch"))
                } else {
                    e
                }
            })?;
        }
        Ok(scores)
    }

    /// [`LanguageModel::score_batch`] without the check for non-finite values: each [`Scored`]
    /// must go through [`Scored::check`] before it is used.
    pub fn score_batch_unchecked(&self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<Vec<Scored>> {
        let rows = pairs
            .iter()
            .map(|(ctx, cont)| self.fit(ctx, cont))
            .collect::<Result<Vec<_>>>()?;
        let len = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let batch: Vec<Vec<u32>> = rows
            .iter()
            .map(|(ids, _, _)| {
                let mut v = ids.clone();
                v.resize(len, 0);
                v
            })
            .collect();
        let out = self.model.forward(&batch, Capture::default())?;
        let mut scores = Vec::with_capacity(pairs.len());
        for (b, ((_, start, truncated), (ctx, cont))) in rows.iter().zip(pairs).enumerate() {
            let f = || -> candle_core::Result<(Vec<f64>, bool)> {
                let logits = out.logits.i(b)?.to_dtype(DType::F64)?;
                let lp = log_softmax_last(&logits.narrow(0, start - 1, cont.len())?)?;
                let rows: Vec<Vec<f64>> = lp.to_vec2()?;
                let mut greedy = true;
                let mut token_logprobs = Vec::with_capacity(cont.len());
                for (row, &tok) in rows.iter().zip(cont) {
                    token_logprobs.push(row[tok as usize]);
                    let best = (0..row.len())
                        .max_by(|&x, &y| row[x].total_cmp(&row[y]))
                        .unwrap_or(0);
                    greedy &= best == tok as usize;
                }
                Ok((token_logprobs, greedy))
            };
            let (token_logprobs, greedy) = f().map_err(candle_error("scoring"))?;
            scores.push(Scored {
                logprob: token_logprobs.iter().sum(),
                n_tokens: cont.len(),
                greedy,
                token_logprobs,
                prompt_tokens: ctx.len(),
                truncated: *truncated,
            });
        }
        Ok(scores)
    }
}

/// The score of one completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Σ log P(token | everything before it), natural log.
    pub logprob: f64,
    /// Tokens of the completion.
    pub n_tokens: usize,
    /// Whether every completion token is the argmax.
    pub greedy: bool,
    /// Per token.
    pub token_logprobs: Vec<f64>,
    /// Tokens of the prompt (before truncation).
    pub prompt_tokens: usize,
    /// Prompt tokens dropped from the start to fit the context.
    pub truncated: usize,
}

impl Scored {
    /// An error ([`Error::NonFinite`]) when a log-probability is not finite (the model's logits
    /// overflowed or its weights are damaged): NaN would rank as nothing, sum to NaN and count as
    /// a wrong answer.
    pub fn check(&self) -> Result<()> {
        match self.token_logprobs.iter().position(|x| !x.is_finite()) {
            None => Ok(()),
            Some(k) => Err(finite::value_error(
                format!(
                    "the log-probability of completion token {k} (of {})",
                    self.n_tokens
                ),
                self.token_logprobs[k],
            )),
        }
    }
}

/// Multiple-choice results.
#[derive(Debug, Clone, PartialEq)]
pub struct Choices {
    /// Each choice's score.
    pub scored: Vec<Scored>,
    /// Argmax of the summed log-probabilities.
    pub predicted: usize,
    /// Argmax of the sum divided by the choice's length in characters.
    pub predicted_norm: usize,
}

/// Scores every choice after `prompt`.
pub fn choose(lm: &LanguageModel, prompt: &str, choices: &[String]) -> Result<Choices> {
    if choices.is_empty() {
        return Err(Error::query("no choices"));
    }
    // Every choice in one forward pass.
    let pairs = choices
        .iter()
        .map(|c| lm.split(prompt, c))
        .collect::<Result<Vec<_>>>()?;
    let scored = lm.score_batch_unchecked(&pairs)?;
    for (s, c) in scored.iter().zip(choices) {
        s.check()
            .map_err(|e| finite::within(e, format!("choice {c:?}")))?;
    }
    let argmax = |v: Vec<f64>| {
        v.iter()
            .enumerate()
            .fold((0usize, f64::NEG_INFINITY), |b, (i, &x)| {
                if x > b.1 {
                    (i, x)
                } else {
                    b
                }
            })
            .0
    };
    let predicted = argmax(scored.iter().map(|s| s.logprob).collect());
    let predicted_norm = argmax(
        scored
            .iter()
            .zip(choices)
            .map(|(s, c)| s.logprob / c.chars().count().max(1) as f64)
            .collect(),
    );
    Ok(Choices {
        scored,
        predicted,
        predicted_norm,
    })
}

/// What [`zero_shot`] measured overall.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZeroShotSummary {
    /// Items right (`acc`).
    pub correct: usize,
    /// Items whose prompt was truncated to fit the context.
    pub truncated: usize,
    /// Mean log-probability of the (correct) completions.
    pub mean_logprob: f64,
}

/// A row of the `zero_shot` table: one item scored by one model (by familiar, or imported from
/// elsewhere, where some columns may be unknown).
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/zero_shot.json
pub struct ZeroShotRow {
    pub item_id: String,
    pub task: String,
    pub kind: String,
    pub model: String,
    pub prompt_tokens: Option<u64>,
    pub truncated_tokens: Option<u64>,
    pub logprob: Option<f64>,
    pub n_tokens: Option<u64>,
    pub greedy_match: Option<bool>,
    pub choice_logprobs: Option<Vec<f64>>,
    pub answer: Option<u64>,
    pub predicted: Option<u64>,
    pub predicted_norm: Option<u64>,
    pub acc: bool,
    pub acc_norm: Option<bool>,
    pub concepts: Vec<String>,
}

impl familiar::table::TableRow for ZeroShotRow {
    const TABLE: &'static str = "zero_shot";
}

/// Scores `items` with `lm` (completions: Σ log P and greedy match; multiple choice: acc and
/// acc_norm as lm-evaluation-harness) into the zero_shot table; `source` names the items in
/// errors, `on_item` is called after each item.
pub fn zero_shot(
    lm: &LanguageModel,
    items: &[Item],
    model_name: &str,
    source: &str,
    on_item: &dyn Fn(),
) -> Result<(Vec<ZeroShotRow>, ZeroShotSummary)> {
    let mut rows = Vec::with_capacity(items.len());
    for item in items {
        let ctx = |e: Error| match e {
            Error::NonFinite(_) | Error::Device(_) | Error::OutOfMemory(_) => {
                finite::within(e, format!("{source}: item {}", item.id))
            }
            e => Error::query(format!("{source}: item {}: {e}", item.id)),
        };
        let mut row = ZeroShotRow {
            item_id: item.id.clone(),
            task: item.task.clone(),
            model: model_name.to_string(),
            concepts: item.concepts.clone(),
            ..Default::default()
        };
        match &item.ask {
            Ask::Completion(c) => {
                let s = lm.score(&item.prompt, c).map_err(ctx)?;
                row.kind = "completion".into();
                row.prompt_tokens = Some(s.prompt_tokens as u64);
                row.truncated_tokens = Some(s.truncated as u64);
                row.logprob = Some(s.logprob);
                row.n_tokens = Some(s.n_tokens as u64);
                row.greedy_match = Some(s.greedy);
                row.acc = s.greedy;
            }
            Ask::Choice { choices, answer } => {
                let r = choose(lm, &item.prompt, choices).map_err(ctx)?;
                let right = &r.scored[*answer];
                row.kind = "multiple_choice".into();
                row.prompt_tokens = Some(right.prompt_tokens as u64);
                row.truncated_tokens =
                    Some(r.scored.iter().map(|s| s.truncated).max().unwrap_or(0) as u64);
                row.logprob = Some(right.logprob);
                row.n_tokens = Some(right.n_tokens as u64);
                row.greedy_match = Some(right.greedy);
                row.choice_logprobs = Some(r.scored.iter().map(|s| s.logprob).collect());
                row.answer = Some(*answer as u64);
                row.predicted = Some(r.predicted as u64);
                row.predicted_norm = Some(r.predicted_norm as u64);
                row.acc = r.predicted == *answer;
                row.acc_norm = Some(r.predicted_norm == *answer);
            }
        }
        rows.push(row);
        on_item();
    }
    let n = items.len().max(1);
    let summary = ZeroShotSummary {
        correct: rows.iter().filter(|r| r.acc).count(),
        truncated: rows
            .iter()
            .filter(|r| r.truncated_tokens.unwrap_or(0) > 0)
            .count(),
        mean_logprob: rows.iter().filter_map(|r| r.logprob).sum::<f64>() / n as f64,
    };
    Ok((rows, summary))
}

/// One item of a keyword-probability file: the keyword's probability after the context is
/// measured.
#[derive(Debug, Clone, PartialEq)]
pub struct KeywordItem {
    /// Line of the items file.
    pub line: u64,
    /// `id` (a string as is, another JSON value as JSON), or the line number.
    pub id: String,
    /// Text before the keyword.
    pub context: String,
    /// The keyword (not empty).
    pub keyword: String,
}

/// Reads a keyword items file (JSONL, `{"id"?, "context", "keyword"}` per line; see
/// [`familiar::input`]); an empty keyword or an empty file is an error.
pub fn read_keyword_items(path: &std::path::Path) -> familiar::Result<Vec<KeywordItem>> {
    parse_keyword_items(path, &familiar::input::read_utf8(path)?)
}

/// The keyword items of JSONL `text` read from `path` (see [`read_keyword_items`]).
pub fn parse_keyword_items(
    path: &std::path::Path,
    text: &str,
) -> familiar::Result<Vec<KeywordItem>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        id: Option<serde_json::Value>,
        context: String,
        keyword: String,
    }
    let raw: Vec<(u64, Raw)> =
        familiar::input::parse_jsonl_records(path, text, "{\"id\", \"context\", \"keyword\"}")?;
    if raw.is_empty() {
        return Err(familiar::Error::input(path, 0, "no items"));
    }
    raw.into_iter()
        .map(|(line, r)| {
            if r.keyword.is_empty() {
                return Err(familiar::Error::input(path, line, "empty keyword"));
            }
            Ok(KeywordItem {
                line,
                id: familiar::input::id_or_line(r.id, line),
                context: r.context,
                keyword: r.keyword,
            })
        })
        .collect()
}

/// A row of the `keyword_probe` table: one keyword's probability after its context.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[allow(missing_docs)] // the columns are documented in schemas/keyword_probe.json
pub struct KeywordProbeRow {
    pub item_id: String,
    pub model: String,
    pub keyword: String,
    pub context_tokens: u64,
    pub truncated_tokens: u64,
    pub logprob: f64,
    pub prob: f64,
    pub n_tokens: u64,
    pub token_logprobs: Vec<f64>,
    pub greedy_match: bool,
}

impl familiar::table::TableRow for KeywordProbeRow {
    const TABLE: &'static str = "keyword_probe";
}

/// Scores every keyword item (read from `path` by [`read_keyword_items`]) with `lm`, named
/// `model` in the rows; an error names the item's line. `on_item` hears of each item done.
pub fn keyword_probe(
    lm: &LanguageModel,
    model: &str,
    path: &std::path::Path,
    items: &[KeywordItem],
    on_item: &dyn Fn(),
) -> Result<Vec<KeywordProbeRow>> {
    items
        .iter()
        .map(|k| {
            let s = lm
                .score(&k.context, &k.keyword)
                .map_err(|e| Error::input(path, k.line, format!("item {}: {e}", k.id)))?;
            on_item();
            Ok(KeywordProbeRow {
                item_id: k.id.clone(),
                model: model.to_string(),
                keyword: k.keyword.clone(),
                context_tokens: s.prompt_tokens as u64,
                truncated_tokens: s.truncated as u64,
                logprob: s.logprob,
                prob: s.logprob.exp(),
                n_tokens: s.n_tokens as u64,
                token_logprobs: s.token_logprobs,
                greedy_match: s.greedy,
            })
        })
        .collect()
}
