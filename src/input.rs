//! Line-oriented input files a user hands to familiar — queries, items, probes, prompts,
//! lexicons, imported results — read whole as UTF-8, with every error naming the file and line.
//!
//! One set of rules for all of them: the file must be a regular file; its bytes must be UTF-8
//! (the error names the line of the first bad byte); a leading byte-order mark is dropped;
//! blank lines are skipped; a line that is not JSON, or not what the caller expects, is an
//! [`Error::Input`] naming `path:line`. (Corpus shards are streamed by [`crate::corpus`]
//! instead: they are large.)

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// The largest input file read whole (queries and items files are megabytes at most).
pub const MAX_INPUT_BYTES: u64 = 1 << 32;

/// An [`Error::Input`] at `path:line`.
pub fn bad(path: &Path, line: u64, reason: impl Into<String>) -> Error {
    Error::input(path, line, reason.into())
}

/// The text of `path`: a regular file of UTF-8 (a byte-order mark dropped).
pub fn read_utf8(path: &Path) -> Result<String> {
    let bytes = crate::manifest::read_regular(path, MAX_INPUT_BYTES)?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() as u64;
            return Err(bad(
                path,
                line,
                format!("not UTF-8 (invalid byte at offset {at})"),
            ));
        }
    };
    Ok(match text.strip_prefix('\u{feff}') {
        Some(t) => t.to_string(),
        None => text,
    })
}

/// The non-blank lines of `text` with their 1-based line numbers.
pub fn lines(text: &str) -> impl Iterator<Item = (u64, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
}

/// The JSON values of the JSONL `text` read from `path`, with their line numbers.
pub fn parse_jsonl(path: &Path, text: &str) -> Result<Vec<(u64, Value)>> {
    lines(text)
        .map(|(n, l)| {
            serde_json::from_str(l)
                .map(|v| (n, v))
                .map_err(|e| bad(path, n, format!("invalid JSON: {e}")))
        })
        .collect()
}

/// The JSON values of the JSONL file `path`, with their line numbers.
pub fn read_jsonl(path: &Path) -> Result<Vec<(u64, Value)>> {
    parse_jsonl(path, &read_utf8(path)?)
}

/// The JSON objects of the JSONL `text` read from `path`; any other value is an error.
pub fn parse_jsonl_objects(path: &Path, text: &str) -> Result<Vec<(u64, Map<String, Value>)>> {
    parse_jsonl(path, text)?
        .into_iter()
        .map(|(n, v)| match v {
            Value::Object(o) => Ok((n, o)),
            _ => Err(bad(path, n, "expected a JSON object")),
        })
        .collect()
}

/// The records of the JSONL `text` read from `path`, each deserialized as a `T`; a line that is
/// not a `T` is an error saying `expected` (e.g. `{"id", "text"}`) and what serde found.
pub fn parse_jsonl_records<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    expected: &str,
) -> Result<Vec<(u64, T)>> {
    lines(text)
        .map(|(n, l)| {
            serde_json::from_str(l).map(|r| (n, r)).map_err(|e| {
                // A line that is not JSON at all says so, whatever serde met first; the
                // second parse happens on this error path only.
                match serde_json::from_str::<serde::de::IgnoredAny>(l) {
                    Err(syntax) => bad(path, n, format!("invalid JSON: {syntax}")),
                    Ok(_) => bad(path, n, format!("expected {expected}: {e}")),
                }
            })
        })
        .collect()
}

/// The records of the JSONL file `path` (see [`parse_jsonl_records`]).
pub fn read_jsonl_records<T: DeserializeOwned>(
    path: &Path,
    expected: &str,
) -> Result<Vec<(u64, T)>> {
    parse_jsonl_records(path, &read_utf8(path)?, expected)
}

/// The string `key` of the object `v` read at `path:line`.
pub fn string(path: &Path, line: u64, v: &Value, key: &str) -> Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| bad(path, line, format!("`{key}` must be a string")))
}

/// An optional `id` field as text (a string as is, any other JSON value as JSON); the line
/// number when absent.
pub fn id_or_line(id: Option<Value>, line: u64) -> String {
    match id {
        Some(Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => line.to_string(),
    }
}

/// The edit distance between `a` and `b` counting insertions, deletions, substitutions and
/// transpositions of adjacent characters as one edit each (optimal string alignment, the
/// distance of a typing slip), over Unicode scalar values.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: the distance between a[..i] and b[..j]; three rows kept.
    let width = b.len() + 1;
    let mut before: Vec<usize> = vec![0; width];
    let mut last: Vec<usize> = (0..width).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; width];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (last[j] + 1).min(row[j - 1] + 1).min(last[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            row[j] = d;
        }
        before = std::mem::replace(&mut last, row);
    }
    last[b.len()]
}

/// The name of `known` that `key` most resembles — within `max` edits ([`edit_distance`],
/// ignoring case), the closest first, ties in `known`'s order — if any: for an error that says
/// what a misspelled key was probably meant to be.
pub fn resembles<'a>(key: &str, known: &[&'a str], max: usize) -> Option<&'a str> {
    let key = key.to_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&key, &k.to_lowercase()), *k))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The distance by its definition, recursively (exponential: short strings only).
    fn distance_by_definition(a: &[char], b: &[char]) -> usize {
        if a.is_empty() || b.is_empty() {
            return a.len().max(b.len());
        }
        let (i, j) = (a.len(), b.len());
        let mut d = (distance_by_definition(&a[..i - 1], b) + 1)
            .min(distance_by_definition(a, &b[..j - 1]) + 1)
            .min(
                distance_by_definition(&a[..i - 1], &b[..j - 1])
                    + usize::from(a[i - 1] != b[j - 1]),
            );
        if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
            d = d.min(distance_by_definition(&a[..i - 2], &b[..j - 2]) + 1);
        }
        d
    }

    #[test]
    fn edit_distance_is_its_definition() {
        let mut rng = crate::rng::SplitMix64::new(3);
        let alphabet = ['a', 'b', 'c', 'é'];
        for _ in 0..3000 {
            let mut word = || -> String {
                let n = rng.below(7) as usize;
                (0..n).map(|_| alphabet[rng.below(4) as usize]).collect()
            };
            let (a, b) = (word(), word());
            let (ca, cb): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
            assert_eq!(
                edit_distance(&a, &b),
                distance_by_definition(&ca, &cb),
                "{a:?} {b:?}"
            );
            assert_eq!(edit_distance(&a, &b), edit_distance(&b, &a), "{a:?} {b:?}");
        }
        assert_eq!(edit_distance("prompt", "promtp"), 1);
        assert_eq!(edit_distance("completion", "complition"), 1);
        assert_eq!(edit_distance("", "kind"), 4);
        assert_eq!(resembles("Promt", &["id", "prompt"], 2), Some("prompt"));
        assert_eq!(resembles("difficulty", &["id", "prompt", "task"], 2), None);
        assert_eq!(resembles("ix", &["id", "kind"], 2), Some("id"));
    }

    fn file(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("in.jsonl");
        std::fs::write(&p, bytes).unwrap();
        (d, p)
    }

    #[test]
    fn errors_name_the_line_and_the_rules_hold() {
        let (_d, p) = file(b"\xef\xbb\xbf{\"a\": 1}\n\n  \n[2]\n{\"a\": \n");
        let e = read_jsonl(&p).unwrap_err().to_string();
        assert!(e.contains("in.jsonl:5: invalid JSON"), "{e}");
        let (_d, p) = file(b"{\"a\": 1}\n\n[2]\n");
        let v = read_jsonl(&p).unwrap();
        assert_eq!(v.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 3]);
        let text = read_utf8(&p).unwrap();
        let e = parse_jsonl_objects(&p, &text).unwrap_err().to_string();
        assert!(e.contains("in.jsonl:3: expected a JSON object"), "{e}");
        let (_d, p) = file(b"{\"a\": 1}\n{\"a\": \"\xff\"}\n");
        let e = read_utf8(&p).unwrap_err().to_string();
        assert!(
            e.contains("in.jsonl:2: not UTF-8 (invalid byte at offset 16)"),
            "{e}"
        );
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct R {
            a: u32,
        }
        let (_d, p) = file(b"{\"a\": 1}\n{\"a\": 1, \"b\": 2}\n");
        let e = read_jsonl_records::<R>(&p, "{\"a\"}")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("in.jsonl:2: expected {\"a\"}: unknown field `b`"),
            "{e}"
        );
        // A line that is not JSON is "invalid JSON" even where serde meets a wrong type first.
        let (_d, p) = file(b"{\"a\": \"x\", \n");
        let e = read_jsonl_records::<R>(&p, "{\"a\"}")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("in.jsonl:1: invalid JSON"), "{e}");
        let (_d, p) = file(b"{\"a\": 7}\n");
        let v = read_jsonl_records::<R>(&p, "{\"a\"}").unwrap();
        assert_eq!((v.len(), v[0].0, v[0].1.a), (1, 1, 7));
        assert_eq!(id_or_line(None, 7), "7");
        assert_eq!(id_or_line(Some(Value::from(3)), 7), "3");
        assert_eq!(id_or_line(Some(Value::from("x")), 7), "x");
    }
}
