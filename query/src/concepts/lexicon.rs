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

use familiar::input::bad;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    familiar_text::analyze_words(form)
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

/// Byte offset → 1-based line.
fn line_of(bytes: &[u8], offset: usize) -> u64 {
    1 + bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
}

/// The formats of lexicon and pairs files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Delimited text with a header row, by delimiter.
    Delimited(u8),
    /// One JSON object per line.
    Jsonl,
}

/// Reads a lexicon or pairs file as UTF-8 text (a byte-order mark dropped) and tells its format
/// from the extension; `what` names the file in the error for an unknown extension.
fn read_text(path: &Path, what: &str) -> Result<(String, Format)> {
    let text = familiar::input::read_utf8(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let format = if name.ends_with(".csv") {
        Format::Delimited(b',')
    } else if name.ends_with(".tsv") || name.ends_with(".tab") {
        Format::Delimited(b'\t')
    } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        Format::Jsonl
    } else {
        return Err(Error::Config(format!(
            "{}: unknown {what} format; expected a .csv, .tsv or .jsonl file",
            path.display()
        )));
    };
    Ok((text, format))
}

/// The records of a delimited file with their lines, and the index of each of `columns` in its
/// header (`None` when absent). Unknown or repeated columns are errors; `expected` describes the
/// columns for the message.
#[allow(clippy::type_complexity)]
fn delimited(
    path: &Path,
    text: &str,
    delimiter: u8,
    columns: &[&str],
    expected: &str,
) -> Result<(Vec<Option<usize>>, Vec<(u64, csv::StringRecord)>)> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| bad(path, 1, format!("cannot read the header row: {e}")))?
        .clone();
    let mut index = vec![None; columns.len()];
    for (i, h) in headers.iter().enumerate() {
        let Some(k) = columns.iter().position(|c| *c == h.trim()) else {
            return Err(bad(
                path,
                1,
                format!("unknown column {:?}; expected {expected}", h.trim()),
            ));
        };
        if index[k].replace(i).is_some() {
            return Err(bad(path, 1, format!("column {h:?} appears twice")));
        }
    }
    // Lines from byte offsets (the csv crate's own line numbers skip blank lines, and a record's
    // offset is where the blank lines before it start).
    let bytes = text.as_bytes();
    let line = |p: Option<&csv::Position>| {
        p.map_or(0, |p| {
            let mut b = p.byte() as usize;
            while b < bytes.len() && matches!(bytes[b], b'\n' | b'\r') {
                b += 1;
            }
            line_of(bytes, b)
        })
    };
    let mut records = Vec::new();
    for record in reader.records() {
        let record =
            record.map_err(|e| bad(path, line(e.position()), format!("malformed row: {e}")))?;
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        records.push((line(record.position()), record));
    }
    Ok((index, records))
}

impl Lexicon {
    /// Reads and checks a lexicon file.
    pub fn read(path: &Path) -> Result<Lexicon> {
        let (text, format) = read_text(path, "lexicon")?;
        let rows = match format {
            Format::Delimited(d) => read_delimited(path, &text, d)?,
            Format::Jsonl => read_jsonl(path, &text)?,
        };
        Lexicon::from_rows(path, rows)
    }

    /// A lexicon from JSONL `text` (`{"concept", "aliases"?, "group"?}` per line), checked as
    /// [`Lexicon::read`] checks a file; `path` names the source in errors (a front end's list).
    pub fn parse_jsonl(path: &Path, text: &str) -> Result<Lexicon> {
        Lexicon::from_rows(path, read_jsonl(path, text)?)
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
    let (columns, records) = delimited(
        path,
        text,
        delimiter,
        &["concept", "aliases", "group"],
        "`concept`, and optionally `aliases` (separated by |) and `group`",
    )?;
    let [Some(concept), aliases, group] = columns[..] else {
        return Err(bad(path, 1, "no `concept` column in the header"));
    };
    Ok(records
        .into_iter()
        .map(|(line, record)| Row {
            line,
            concept: record.get(concept).map(str::to_string),
            aliases: match aliases.and_then(|i| record.get(i)) {
                Some(a) if !a.trim().is_empty() => a.split('|').map(str::to_string).collect(),
                _ => Vec::new(),
            },
            group: group.and_then(|i| record.get(i)).map(str::to_string),
        })
        .collect())
}

fn read_jsonl(path: &Path, text: &str) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (line_no, obj) in familiar::input::parse_jsonl_objects(path, text)? {
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
    let (text, format) = read_text(path, "pairs")?;
    pairs_of(path, &text, format, lexicon)
}

/// Concept pairs from JSONL `text` (`{"concept_a", "concept_b"}` per line), resolved as
/// [`read_pairs`] resolves a file's; `path` names the source in errors (a front end's list).
pub fn parse_pairs_jsonl(
    path: &Path,
    text: &str,
    lexicon: &Lexicon,
) -> Result<Vec<(u64, u64, u64)>> {
    pairs_of(path, text, Format::Jsonl, lexicon)
}

fn pairs_of(
    path: &Path,
    text: &str,
    format: Format,
    lexicon: &Lexicon,
) -> Result<Vec<(u64, u64, u64)>> {
    let mut raw: Vec<(u64, String, String)> = Vec::new();
    match format {
        Format::Jsonl => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Pair {
                concept_a: String,
                concept_b: String,
            }
            let pairs: Vec<(u64, Pair)> = familiar::input::parse_jsonl_records(
                path,
                text,
                "{\"concept_a\": \"…\", \"concept_b\": \"…\"}",
            )?;
            raw.extend(
                pairs
                    .into_iter()
                    .map(|(n, p)| (n, p.concept_a, p.concept_b)),
            );
        }
        Format::Delimited(d) => {
            let (columns, records) = delimited(
                path,
                text,
                d,
                &["concept_a", "concept_b"],
                "`concept_a` and `concept_b`",
            )?;
            let [Some(a), Some(b)] = columns[..] else {
                return Err(bad(path, 1, "expected columns `concept_a` and `concept_b`"));
            };
            for (line, record) in records {
                raw.push((
                    line,
                    record.get(a).unwrap_or_default().to_string(),
                    record.get(b).unwrap_or_default().to_string(),
                ));
            }
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn csv_tsv_and_jsonl_read_the_same_lexicon() {
        let t = tempfile::tempdir().unwrap();
        let csv = write(
            t.path(),
            "l.csv",
            "\u{feff}group,concept,aliases\nplaces,Paris,\"Paris, France|Lutetia\"\n,Café Society,\n"
                .as_bytes(),
        );
        let tsv = write(
            t.path(),
            "l.tsv",
            "concept\taliases\tgroup\nParis\tParis, France|Lutetia\tplaces\nCafé Society\t\t\n"
                .as_bytes(),
        );
        let jsonl = write(
            t.path(),
            "l.jsonl",
            "{\"concept\": \"Paris\", \"aliases\": [\"Paris, France\", \"Lutetia\"], \"group\": \"places\"}\n\n{\"concept\": \"Café Society\"}\n"
                .as_bytes(),
        );
        let read: Vec<Lexicon> = [csv, tsv, jsonl]
            .iter()
            .map(|p| Lexicon::read(p).unwrap())
            .collect();
        for l in &read {
            let c: Vec<(&str, Option<&str>, &[String])> = l
                .concepts
                .iter()
                .map(|c| (c.name.as_str(), c.group.as_deref(), &c.forms[..]))
                .collect();
            assert_eq!(c[0].0, "Paris");
            assert_eq!(c[0].1, Some("places"));
            assert_eq!(c[0].2, ["Paris", "Paris, France", "Lutetia"]);
            assert_eq!((c[1].0, c[1].1), ("Café Society", None));
            assert_eq!(
                l.concepts[0].normalized,
                ["paris", "paris france", "lutetia"]
            );
            assert_eq!(l.concepts[1].normalized, ["cafe society"]);
            assert_eq!(l.resolve("LUTETIA").unwrap().name, "Paris");
            assert_eq!(l.resolve("cafe   society").unwrap().id, 1);
            assert!(l.resolve("London").is_none());
            assert_eq!(l.fst().len(), 4);
        }
    }

    #[test]
    fn bad_input_names_the_line() {
        let t = tempfile::tempdir().unwrap();
        let cases: &[(&str, &[u8], &str)] = &[
            (
                "a.csv",
                b"concept\nParis\n\nParis\n",
                ":4: concept \"Paris\" is already defined on line 2",
            ),
            (
                "b.csv",
                b"concept,aliases\nParis,Lutetia|Lutetia\n",
                ":2: alias \"Lutetia\"",
            ),
            ("c.csv", b"concept,aliases\nParis,|\n", ":2: empty alias"),
            ("d.csv", b"concept\n  \n!!!\n", ":3: form \"!!!\""),
            ("e.csv", b"aliases\nParis\n", ":1: no `concept` column"),
            (
                "f.csv",
                b"concept,concept\nParis,x\n",
                ":1: column \"concept\" appears twice",
            ),
            (
                "g.jsonl",
                b"{\"concept\": 3}\n",
                ":1: `concept` has the wrong type",
            ),
            ("h.jsonl", b"[\"Paris\"]\n", ":1: expected a JSON object"),
            (
                "i.jsonl",
                b"{\"concept\": \"Paris\"}\n{\"concept\": \"P\xc3\"}\n",
                ":2: not UTF-8",
            ),
            ("j.csv", b"concept,group\nParis,a,b\n", ":2: malformed row"),
        ];
        for (name, body, needle) in cases {
            let p = write(t.path(), name, body);
            let e = Lexicon::read(&p).unwrap_err().to_string();
            assert!(e.contains(needle), "{name}: {e}");
            assert!(e.contains(name), "{name}: {e}");
        }
        let p = write(t.path(), "k.txt", b"concept\nParis\n");
        assert!(Lexicon::read(&p)
            .unwrap_err()
            .to_string()
            .contains("unknown lexicon format"));
        let p = write(t.path(), "l.csv", b"concept\n");
        assert!(Lexicon::read(&p)
            .unwrap_err()
            .to_string()
            .contains("no concepts"));
    }

    #[test]
    fn pairs_resolve_names_and_aliases() {
        let t = tempfile::tempdir().unwrap();
        let lex = write(
            t.path(),
            "l.csv",
            b"concept,aliases\nParis,Lutetia\nFrance,French Republic\n",
        );
        let lex = Lexicon::read(&lex).unwrap();
        let p = write(
            t.path(),
            "p.tsv",
            b"concept_a\tconcept_b\nlutetia\tFrench Republic\nFrance\tParis\n",
        );
        assert_eq!(read_pairs(&p, &lex).unwrap(), [(2, 0, 1), (3, 1, 0)]);
        let p = write(
            t.path(),
            "p.jsonl",
            b"{\"concept_a\": \"Paris\", \"concept_b\": \"Berlin\"}\n",
        );
        let e = read_pairs(&p, &lex).unwrap_err().to_string();
        assert!(
            e.contains("p.jsonl:1") && e.contains("\"Berlin\" is not a concept"),
            "{e}"
        );
        let p = write(t.path(), "q.csv", b"a,b\nParis,France\n");
        assert!(read_pairs(&p, &lex)
            .unwrap_err()
            .to_string()
            .contains("unknown column \"a\""));
    }
}
