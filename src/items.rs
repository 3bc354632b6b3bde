//! Evaluation items: a generic JSONL format and readers for the benchmark files in
//! `../shared/data/eval` (MMLU CSV, PARAREL facts with their patterns, NQ-open, LAMBADA, GSM8K).
//!
//! Generic JSONL, one item per line: `{"id", "prompt", "completion"}` for a completion, or
//! `{"id", "prompt", "choices": [...], "answer": k}` for multiple choice; optional `"task"` and
//! `"concepts"` (names to join with concept frequencies). Other keys are errors (a misspelt
//! `completion` must not pass as an item without one).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, IoContext, Result};
use crate::input::string;

/// What is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Score this completion.
    Completion(String),
    /// Pick one of these; `answer` is the correct index.
    Choice {
        /// The choices (each scored as a completion of the prompt).
        choices: Vec<String>,
        /// Index of the correct one.
        answer: usize,
    },
}

/// One evaluation item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its id.
    pub id: String,
    /// Task (benchmark, subject or relation).
    pub task: String,
    /// The prompt.
    pub prompt: String,
    /// The completion or choices.
    pub ask: Ask,
    /// Concept names the item is about.
    pub concepts: Vec<String>,
}

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ItemFormat {
    /// Generic JSONL (see the module documentation).
    Jsonl,
    /// MMLU CSV (question, choice0..3, answer), a file or a directory of them: letter choices.
    Mmlu,
    /// PARAREL/T-REx facts (`P*.jsonl`); the first pattern of `../patterns/` ending in `[Y]`.
    Pararel,
    /// NQ-open (`{question, answer: [...]}`): the first answer scored after "Q: …?\nA:".
    NqOpen,
    /// LAMBADA (`{text}`): the last word after the rest.
    Lambada,
    /// GSM8K (`{question, answer}`): the whole solution after "Question: …\nAnswer:".
    Gsm8k,
}

/// Reads items from `path` in `format`, at most `limit`.
pub fn read_items(path: &Path, format: ItemFormat, limit: Option<usize>) -> Result<Vec<Item>> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().trim_end_matches(".jsonl").to_string())
        .unwrap_or_default();
    let mut items = match format {
        ItemFormat::Jsonl => parse_items_jsonl(path, &crate::input::read_utf8(path)?, &stem)?,
        ItemFormat::Mmlu => read_mmlu(path)?,
        ItemFormat::Pararel => read_pararel(path, &stem)?,
        ItemFormat::NqOpen => crate::input::read_jsonl(path)?
            .into_iter()
            .map(|(line, v)| {
                let q = string(path, line, &v, "question")?;
                let a = v
                    .get("answer")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        Error::input(path, line, "`answer` must be a non-empty list of strings")
                    })?;
                Ok(Item {
                    id: format!("{stem}:{line}"),
                    task: "nq_open".into(),
                    prompt: format!("Q: {q}?\nA:"),
                    ask: Ask::Completion(format!(" {a}")),
                    concepts: Vec::new(),
                })
            })
            .collect::<Result<_>>()?,
        ItemFormat::Lambada => crate::input::read_jsonl(path)?
            .into_iter()
            .map(|(line, v)| {
                let text = string(path, line, &v, "text")?;
                let text = text.trim_end();
                let cut = text
                    .rfind(char::is_whitespace)
                    .ok_or_else(|| Error::input(path, line, "the text has a single word"))?;
                Ok(Item {
                    id: format!("{stem}:{line}"),
                    task: "lambada".into(),
                    prompt: text[..cut].to_string(),
                    ask: Ask::Completion(text[cut..].to_string()),
                    concepts: Vec::new(),
                })
            })
            .collect::<Result<_>>()?,
        ItemFormat::Gsm8k => crate::input::read_jsonl(path)?
            .into_iter()
            .map(|(line, v)| {
                Ok(Item {
                    id: format!("{stem}:{line}"),
                    task: "gsm8k".into(),
                    prompt: format!("Question: {}\nAnswer:", string(path, line, &v, "question")?),
                    ask: Ask::Completion(format!(" {}", string(path, line, &v, "answer")?)),
                    concepts: Vec::new(),
                })
            })
            .collect::<Result<_>>()?,
    };
    if let Some(n) = limit {
        items.truncate(n);
    }
    if items.is_empty() {
        return Err(Error::Config(format!("{}: no items", path.display())));
    }
    Ok(items)
}

/// The items of generic JSONL `text` read from `path` (see the module documentation); an item
/// without an `id` is named `{stem}:{line}`. For items that come from elsewhere than a file
/// (a front end's list), `path` names the source in errors.
pub fn parse_items_jsonl(path: &Path, text: &str, stem: &str) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    for (line, v) in crate::input::parse_jsonl(path, text)? {
        let Value::Object(obj) = &v else {
            return Err(Error::input(path, line, "expected a JSON object"));
        };
        for k in obj.keys() {
            if !matches!(
                k.as_str(),
                "id" | "prompt" | "completion" | "choices" | "answer" | "task" | "concepts"
            ) {
                return Err(Error::input(
                    path,
                    line,
                    format!("unknown key {k:?}; expected id, prompt, completion or choices + answer, task, concepts"),
                ));
            }
        }
        let id = match obj.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            None => format!("{stem}:{line}"),
            Some(_) => {
                return Err(Error::input(
                    path,
                    line,
                    "`id` must be a string or a number",
                ))
            }
        };
        let prompt = string(path, line, &v, "prompt")?;
        let ask =
            match (obj.get("completion"), obj.get("choices"), obj.get("answer")) {
                (Some(Value::String(c)), None, None) => Ask::Completion(c.clone()),
                (None, Some(Value::Array(cs)), Some(a)) => {
                    let choices: Vec<String> = cs
                        .iter()
                        .map(|c| c.as_str().map(str::to_string))
                        .collect::<Option<_>>()
                        .ok_or_else(|| {
                            Error::input(path, line, "`choices` must be a list of strings")
                        })?;
                    let answer = a
                        .as_u64()
                        .map(|a| a as usize)
                        .filter(|&a| a < choices.len())
                        .ok_or_else(|| {
                            Error::input(
                                path,
                                line,
                                format!(
                                    "`answer` must be an index into the {} choices",
                                    choices.len()
                                ),
                            )
                        })?;
                    Ask::Choice { choices, answer }
                }
                _ => return Err(Error::input(
                    path,
                    line,
                    "expected a string `completion`, or `choices` (strings) with an `answer` index",
                )),
            };
        let concepts = match obj.get("concepts") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|c| c.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| Error::input(path, line, "`concepts` must be a list of strings"))?,
            Some(_) => {
                return Err(Error::input(
                    path,
                    line,
                    "`concepts` must be a list of strings",
                ))
            }
        };
        out.push(Item {
            id,
            task: obj
                .get("task")
                .and_then(Value::as_str)
                .unwrap_or(stem)
                .to_string(),
            prompt,
            ask,
            concepts,
        });
    }
    Ok(out)
}

fn read_mmlu(path: &Path) -> Result<Vec<Item>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut f: Vec<PathBuf> = std::fs::read_dir(path)
            .at(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .collect();
        f.sort();
        f
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for file in files {
        let task = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&file).at(&file)?;
        let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| Error::input(&file, 1, format!("cannot read the header row: {e}")))?
            .clone();
        let col = |n: &str| headers.iter().position(|h| h == n);
        let (Some(q), Some(a)) = (col("question"), col("answer")) else {
            return Err(Error::input(
                &file,
                1,
                "expected columns question, choice0..choice3, answer",
            ));
        };
        let choice_cols: Vec<usize> = (0..).map_while(|k| col(&format!("choice{k}"))).collect();
        if choice_cols.len() < 2 {
            return Err(Error::input(
                &file,
                1,
                "expected columns choice0, choice1, …",
            ));
        }
        for (row, record) in reader.records().enumerate() {
            let line = row as u64 + 2;
            let record =
                record.map_err(|e| Error::input(&file, line, format!("malformed row: {e}")))?;
            let field = |i: usize| record.get(i).unwrap_or_default().to_string();
            let mut prompt = field(q).trim().to_string();
            let letters: Vec<char> = ('A'..='Z').take(choice_cols.len()).collect();
            for (l, &c) in letters.iter().zip(&choice_cols) {
                prompt.push_str(&format!("\n{l}. {}", field(c).trim()));
            }
            prompt.push_str("\nAnswer:");
            let answer: usize = field(a)
                .trim()
                .parse()
                .ok()
                .filter(|&k: &usize| k < choice_cols.len())
                .ok_or_else(|| Error::input(&file, line, "`answer` must be a choice index"))?;
            out.push(Item {
                id: format!("{task}:{}", row + 1),
                task: task.clone(),
                prompt,
                ask: Ask::Choice {
                    choices: letters.iter().map(|l| format!(" {l}")).collect(),
                    answer,
                },
                concepts: Vec::new(),
            });
        }
    }
    Ok(out)
}

fn read_pararel(path: &Path, relation: &str) -> Result<Vec<Item>> {
    let patterns = path
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("patterns").join(format!("{relation}.jsonl")))
        .ok_or_else(|| Error::Config(format!("{}: cannot find its patterns", path.display())))?;
    let mut template = None;
    for (line, v) in crate::input::read_jsonl(&patterns)? {
        let p = string(&patterns, line, &v, "pattern")?;
        let p = p.trim_end().trim_end_matches('.').trim_end().to_string();
        if p.ends_with("[Y]") && p.contains("[X]") {
            template = Some(p.trim_end_matches("[Y]").trim_end().to_string());
            break;
        }
    }
    let template = template.ok_or_else(|| {
        Error::Config(format!(
            "{}: no pattern ends with [Y], so none can be scored as a completion",
            patterns.display()
        ))
    })?;
    crate::input::read_jsonl(path)?
        .into_iter()
        .map(|(line, v)| {
            let sub = string(path, line, &v, "sub_label")?;
            let obj = string(path, line, &v, "obj_label")?;
            Ok(Item {
                id: v
                    .get("uuid")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("{relation}:{line}"), str::to_string),
                task: relation.to_string(),
                prompt: template.replace("[X]", &sub),
                ask: Ask::Completion(format!(" {obj}")),
                concepts: vec![sub, obj],
            })
        })
        .collect()
}

/// Token ids of `completion` after `prompt` (whose own tokens are `prompt_tokens`), as
/// lm-evaluation-harness splits them: the tokens the whole text has after the prompt's (so a
/// completion that merges with the prompt's last characters is tokenized as in the whole text),
/// or, where the whole text does not start with the prompt's tokens, the completion's own.
pub fn completion_tokens(
    tokenizer: &crate::tokenizer::Tokenizer,
    prompt: &str,
    prompt_tokens: &[u32],
    completion: &str,
) -> Result<Vec<u32>> {
    let whole = tokenizer.encode(&format!("{prompt}{completion}"))?;
    match whole.strip_prefix(prompt_tokens) {
        Some(cont) => Ok(cont.to_vec()),
        None => tokenizer.encode(completion),
    }
}
