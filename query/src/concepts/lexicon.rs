//! Concept lexicons: concepts with their aliases (and an optional group), read from CSV, TSV or
//! JSONL, checked, normalized with the text index's analysis, and stored as an fst map.
//!
//! Formats (chosen by the file extension):
//! - `.csv` / `.tsv`: a header row, then one concept per row. Columns: `concept` (required),
//!   `aliases` (optional; several aliases separated by `|`), `group` (optional, e.g. the benchmark
//!   the concept comes from).
//! - `.jsonl` / `.ndjson`: one object per line, `{"concept": "…", "aliases": ["…"], "group": "…"}`.
//!
//! Every concept's surface forms are its name and its aliases, as written (they are tokenized as
//! written for `sa_exact`). Forms are normalized with the analysis of the index's `words` field
//! (lowercase, ASCII folding, words joined by one space); the fst maps each normalized form to its
//! concept. Rejected, with file and line: non-UTF-8 text, unknown columns or keys, a missing or empty
//! concept, an empty alias, a form without letters or digits, the same concept twice, the same
//! alias twice in a concept, and one normalized form claimed by two concepts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use familiar::error::IoContext;
use familiar::{Error, Result};

/// One concept of a lexicon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concept {
    /// Its number: its row in the lexicon, from 0.
    pub id: u64,
    /// Its name (the first surface form).
    pub name: String,
    /// Its group, if the lexicon has one.
    pub group: Option<String>,
    /// Surface forms as written: the name, then the aliases.
    pub forms: Vec<String>,
    /// Normalized forms, one per surface form.
    pub normalized: Vec<String>,
    /// Line of the lexicon it came from (1-based).
    pub line: u64,
}

/// A checked lexicon.
#[derive(Debug)]
pub struct Lexicon {
    /// The file it was read from.
    pub path: PathBuf,
    /// Its concepts, in file order (`concepts[i].id == i`).
    pub concepts: Vec<Concept>,
    fst: fst::Map<Vec<u8>>,
}

/// The normalized form of a surface form: its words as the `words` field indexes them (lowercased,
/// ASCII-folded), joined by single spaces. Empty if it has no letters or digits.
pub fn normalize(form: &str) -> String {
    familiar::text::analyze_words(form)
        .into_iter()
        .map(|(w, _)| w)
        .collect::<Vec<_>>()
        .join(" ")
}

struct Row {
    line: u64,
    concept: Option<String>,
    aliases: Vec<String>,
    group: Option<String>,
}

fn bad(path: &Path, line: u64, reason: impl Into<String>) -> Error {
    Error::input(path, line, reason.into())
}

/// Byte offset → 1-based line.
fn line_of(bytes: &[u8], offset: usize) -> u64 {
    1 + bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
}

impl Lexicon {
    /// Reads and checks a lexicon file.
    pub fn read(path: &Path) -> Result<Lexicon> {
        let bytes = std::fs::read(path).at(path)?;
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => {
                return Err(bad(
                    path,
                    line_of(&bytes, e.valid_up_to()),
                    format!("not UTF-8 (invalid byte at offset {})", e.valid_up_to()),
                ))
            }
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let rows = if name.ends_with(".csv") {
            read_delimited(path, text, b',')?
        } else if name.ends_with(".tsv") || name.ends_with(".tab") {
            read_delimited(path, text, b'\t')?
        } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
            read_jsonl(path, text)?
        } else {
            return Err(Error::Config(format!(
                "{}: unknown lexicon format; expected a .csv, .tsv or .jsonl file",
                path.display()
            )));
        };
        Lexicon::from_rows(path, rows)
    }

    fn from_rows(path: &Path, rows: Vec<Row>) -> Result<Lexicon> {
        let mut concepts: Vec<Concept> = Vec::with_capacity(rows.len());
        // Normalized form → (concept, line, form as written).
        let mut owner: HashMap<String, (u64, u64, String)> = HashMap::new();
        for row in rows {
            let line = row.line;
            let name = match row.concept.as_deref().map(str::trim) {
                Some(n) if !n.is_empty() => n.to_string(),
                Some(_) => return Err(bad(path, line, "empty `concept`")),
                None => return Err(bad(path, line, "no `concept`")),
            };
            let id = concepts.len() as u64;
            let mut forms = vec![name.clone()];
            for a in &row.aliases {
                let a = a.trim();
                if a.is_empty() {
                    return Err(bad(path, line, format!("empty alias for concept {name:?}")));
                }
                if forms.iter().any(|f| f == a) {
                    return Err(bad(
                        path,
                        line,
                        format!("alias {a:?} of concept {name:?} is listed twice (or repeats the concept)"),
                    ));
                }
                forms.push(a.to_string());
            }
            let mut normalized = Vec::with_capacity(forms.len());
            for f in &forms {
                let n = normalize(f);
                if n.is_empty() {
                    return Err(bad(
                        path,
                        line,
                        format!("form {f:?} of concept {name:?} has no letters or digits, so text cannot match it"),
                    ));
                }
                match owner.get(&n) {
                    Some((other, other_line, other_form)) if *other != id => {
                        let what = if forms[0] == *f
                            && concepts[*other as usize].name == *other_form
                        {
                            format!("concept {name:?} is already defined on line {other_line}")
                        } else {
                            format!(
                                "form {f:?} of concept {name:?} normalizes to {n:?}, like {other_form:?} of concept {:?} on line {other_line}; a form must identify one concept",
                                concepts[*other as usize].name
                            )
                        };
                        return Err(bad(path, line, what));
                    }
                    Some(_) => {}
                    None => {
                        owner.insert(n.clone(), (id, line, f.clone()));
                    }
                }
                normalized.push(n);
            }
            let group = row
                .group
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty());
            concepts.push(Concept {
                id,
                name,
                group,
                forms,
                normalized,
                line,
            });
        }
        if concepts.is_empty() {
            return Err(Error::Config(format!(
                "{}: the lexicon has no concepts",
                path.display()
            )));
        }
        let mut keys: Vec<(&String, u64)> = owner.iter().map(|(k, v)| (k, v.0)).collect();
        keys.sort();
        let mut b = fst::MapBuilder::memory();
        for (k, v) in keys {
            b.insert(k, v)
                .map_err(|e| Error::Bug(format!("lexicon fst: {e}")))?;
        }
        let fst = b.into_map();
        Ok(Lexicon {
            path: path.to_path_buf(),
            concepts,
            fst,
        })
    }

    /// The fst map: normalized form → concept id.
    pub fn fst(&self) -> &fst::Map<Vec<u8>> {
        &self.fst
    }

    /// The concept a form (as written, or normalized) or a concept name denotes.
    pub fn resolve(&self, form: &str) -> Option<&Concept> {
        let n = normalize(form);
        self.fst
            .get(n.as_bytes())
            .and_then(|id| self.concepts.get(id as usize))
    }

    /// Writes the fst map to `path` (atomically).
    pub fn write_fst(&self, path: &Path) -> Result<()> {
        familiar::manifest::write_atomic(path, self.fst.as_fst().as_bytes())
    }
}

fn read_delimited(path: &Path, text: &str, delimiter: u8) -> Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| bad(path, 1, format!("cannot read the header row: {e}")))?
        .clone();
    let (mut concept, mut aliases, mut group) = (None, None, None);
    for (i, h) in headers.iter().enumerate() {
        let slot = match h.trim() {
            "concept" => &mut concept,
            "aliases" => &mut aliases,
            "group" => &mut group,
            other => {
                return Err(bad(
                    path,
                    1,
                    format!("unknown column {other:?}; expected `concept`, and optionally `aliases` (separated by |) and `group`"),
                ))
            }
        };
        if slot.replace(i).is_some() {
            return Err(bad(path, 1, format!("column {h:?} appears twice")));
        }
    }
    let concept = concept.ok_or_else(|| bad(path, 1, "no `concept` column in the header"))?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            bad(path, line, format!("malformed row: {e}"))
        })?;
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let aliases = match aliases.and_then(|i| record.get(i)) {
            Some(a) if !a.trim().is_empty() => a.split('|').map(str::to_string).collect(),
            _ => Vec::new(),
        };
        rows.push(Row {
            line,
            concept: record.get(concept).map(str::to_string),
            aliases,
            group: group.and_then(|i| record.get(i)).map(str::to_string),
        });
    }
    Ok(rows)
}

fn read_jsonl(path: &Path, text: &str) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| bad(path, line_no, format!("invalid JSON: {e}")))?;
        let serde_json::Value::Object(obj) = v else {
            return Err(bad(path, line_no, "expected a JSON object"));
        };
        let mut row = Row {
            line: line_no,
            concept: None,
            aliases: Vec::new(),
            group: None,
        };
        for (k, v) in obj {
            match (k.as_str(), v) {
                ("concept", serde_json::Value::String(s)) => row.concept = Some(s),
                ("group", serde_json::Value::String(s)) => row.group = Some(s),
                ("group", serde_json::Value::Null) => {}
                ("aliases", serde_json::Value::Array(a)) => {
                    for x in a {
                        match x {
                            serde_json::Value::String(s) => row.aliases.push(s),
                            other => {
                                return Err(bad(
                                    path,
                                    line_no,
                                    format!("`aliases` must hold strings, found {other}"),
                                ))
                            }
                        }
                    }
                }
                ("concept" | "group" | "aliases", other) => {
                    return Err(bad(
                        path,
                        line_no,
                        format!("`{k}` has the wrong type ({other}); expected a string (an array of strings for `aliases`)"),
                    ))
                }
                (other, _) => {
                    return Err(bad(
                        path,
                        line_no,
                        format!("unknown key {other:?}; expected `concept`, and optionally `aliases` and `group`"),
                    ))
                }
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Reads concept pairs (`concept_a`, `concept_b`) from CSV, TSV or JSONL and resolves each side
/// to a concept of `lexicon` (by any of its forms). Returns (line, a, b).
pub fn read_pairs(path: &Path, lexicon: &Lexicon) -> Result<Vec<(u64, u64, u64)>> {
    let bytes = std::fs::read(path).at(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        bad(
            path,
            line_of(&bytes, e.valid_up_to()),
            format!("not UTF-8 (invalid byte at offset {})", e.valid_up_to()),
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut raw: Vec<(u64, String, String)> = Vec::new();
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        for (i, line) in text.lines().enumerate() {
            let line_no = i as u64 + 1;
            if line.trim().is_empty() {
                continue;
            }
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Pair {
                concept_a: String,
                concept_b: String,
            }
            let p: Pair = serde_json::from_str(line).map_err(|e| {
                bad(
                    path,
                    line_no,
                    format!("expected {{\"concept_a\": \"…\", \"concept_b\": \"…\"}}: {e}"),
                )
            })?;
            raw.push((line_no, p.concept_a, p.concept_b));
        }
    } else if name.ends_with(".csv") || name.ends_with(".tsv") {
        let delimiter = if name.ends_with(".csv") { b',' } else { b'\t' };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| bad(path, 1, format!("cannot read the header row: {e}")))?
            .clone();
        let col = |n: &str| headers.iter().position(|h| h.trim() == n);
        if let Some(h) = headers
            .iter()
            .find(|h| !matches!(h.trim(), "concept_a" | "concept_b"))
        {
            return Err(bad(
                path,
                1,
                format!("unknown column {h:?}; expected `concept_a` and `concept_b`"),
            ));
        }
        let (Some(a), Some(b)) = (col("concept_a"), col("concept_b")) else {
            return Err(bad(path, 1, "expected columns `concept_a` and `concept_b`"));
        };
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                bad(path, line, format!("malformed row: {e}"))
            })?;
            let line = record.position().map_or(0, |p| p.line());
            raw.push((
                line,
                record.get(a).unwrap_or_default().to_string(),
                record.get(b).unwrap_or_default().to_string(),
            ));
        }
    } else {
        return Err(Error::Config(format!(
            "{}: unknown pairs format; expected a .csv, .tsv or .jsonl file",
            path.display()
        )));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (line, a, b) in raw {
        let find = |s: &str| {
            lexicon.resolve(s).map(|c| c.id).ok_or_else(|| {
                bad(
                    path,
                    line,
                    format!(
                        "{s:?} is not a concept or alias of {}",
                        lexicon.path.display()
                    ),
                )
            })
        };
        out.push((line, find(&a)?, find(&b)?));
    }
    Ok(out)
}
