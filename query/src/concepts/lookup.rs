//! Lookups of the forms that occur in an index (and in a lexicon): exact, by prefix, or within a
//! Levenshtein distance, with fst automata over each shard's word dictionary (`words.fst`).
//!
//! The query is analyzed like the `words` field (lowercased, ASCII-folded words). The automaton
//! runs on its last word; earlier words are kept as they are, so "new yor" with `--prefix` finds
//! "new york", "new yorker", … Each candidate form is reported with the documents containing its
//! last word unstemmed (single words only) and the documents and occurrences of the whole form as a
//! stemmed phrase (the `text_phrase` method). With a lexicon, the same automaton also runs over the
//! lexicon's normalized forms (whole forms) and names the concept each match belongs to.

use std::collections::BTreeMap;

use familiar::index::Index;
use familiar::{Error, Result};
use familiar_text::TextIndex;
use fst::{Automaton, IntoStreamer, Streamer};

use super::lexicon::{normalize, Lexicon};

/// How the last word of the query is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The word itself.
    Exact,
    /// Words starting with it.
    Prefix,
    /// Words within this Levenshtein distance (insertions, deletions, substitutions).
    Fuzzy(u32),
}

/// One match.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Found {
    /// Where it was found: `index` or `lexicon`.
    pub source: &'static str,
    /// The form (normalized).
    pub form: String,
    /// Documents containing the (single) word as written, unstemmed; `None` for several words.
    pub word_documents: Option<u64>,
    /// Documents containing the form as a stemmed phrase.
    pub phrase_documents: u64,
    /// Occurrences of the stemmed phrase.
    pub phrase_occurrences: u64,
    /// The lexicon concept the form belongs to, if any.
    pub concept: Option<String>,
}

impl familiar::table::TableRow for Found {
    const TABLE: &'static str = "concept_lookup";
}

fn search<A: Automaton>(
    map: &fst::Map<impl AsRef<[u8]>>,
    aut: A,
    into: &mut BTreeMap<String, u64>,
) {
    let mut stream = map.search(aut).into_stream();
    while let Some((k, v)) = stream.next() {
        *into
            .entry(String::from_utf8_lossy(k).into_owned())
            .or_default() += v;
    }
}

fn run_mode(
    map: &fst::Map<impl AsRef<[u8]>>,
    word: &str,
    mode: Mode,
    into: &mut BTreeMap<String, u64>,
) -> Result<()> {
    match mode {
        Mode::Exact => {
            if let Some(v) = map.get(word) {
                *into.entry(word.to_string()).or_default() += v;
            }
        }
        Mode::Prefix => search(map, fst::automaton::Str::new(word).starts_with(), into),
        Mode::Fuzzy(d) => {
            let aut = fst::automaton::Levenshtein::new(word, d).map_err(|e| {
                Error::Query(format!(
                    "cannot build a Levenshtein automaton for {word:?} at distance {d}: {e}"
                ))
            })?;
            search(map, aut, into)
        }
    }
    Ok(())
}

/// Finds the forms matching `query` in the index (and `lexicon`), most frequent first, at most
/// `limit` from each source.
pub fn lookup(
    index: &Index,
    query: &str,
    mode: Mode,
    lexicon: Option<&Lexicon>,
    limit: usize,
) -> Result<Vec<Found>> {
    let words: Vec<String> = familiar_text::analyze_words(query)
        .into_iter()
        .map(|w| w.0)
        .collect();
    let Some((last, head)) = words.split_last() else {
        return Err(Error::Query(format!(
            "{query:?} has no letters or digits to look up"
        )));
    };
    let texts: Vec<TextIndex> = index
        .shards()
        .iter()
        .map(|s| TextIndex::open(&s.dir, &s.manifest))
        .collect::<Result<_>>()?;
    let mut candidates = BTreeMap::new();
    for t in &texts {
        run_mode(t.words(), last, mode, &mut candidates)?;
    }
    let phrase_counts = |form: &str| -> Result<(u64, u64)> {
        let terms = familiar_text::analyze(form);
        let (mut d, mut o) = (0, 0);
        for t in &texts {
            let m = t.phrase(&terms)?;
            d += m.docs.len() as u64;
            o += m.occurrences.unwrap_or(0);
        }
        Ok((d, o))
    };
    let mut by_freq: Vec<(String, u64)> = candidates.into_iter().collect();
    by_freq.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = Vec::new();
    for (word, docs) in by_freq.into_iter().take(limit) {
        let form = head
            .iter()
            .cloned()
            .chain([word])
            .collect::<Vec<_>>()
            .join(" ");
        let (phrase_documents, phrase_occurrences) = phrase_counts(&form)?;
        if phrase_documents == 0 {
            continue;
        }
        out.push(Found {
            source: "index",
            concept: lexicon
                .and_then(|l| l.resolve(&form))
                .map(|c| c.name.clone()),
            word_documents: head.is_empty().then_some(docs),
            form,
            phrase_documents,
            phrase_occurrences,
        });
    }
    if let Some(lexicon) = lexicon {
        let mut forms = BTreeMap::new();
        run_mode(lexicon.fst(), &normalize(query), mode, &mut forms)?;
        let mut found = Vec::new();
        for (form, id) in forms {
            let (phrase_documents, phrase_occurrences) = phrase_counts(&form)?;
            found.push(Found {
                source: "lexicon",
                word_documents: None,
                concept: lexicon.concepts.get(id as usize).map(|c| c.name.clone()),
                form,
                phrase_documents,
                phrase_occurrences,
            });
        }
        found.sort_by(|a, b| {
            b.phrase_documents
                .cmp(&a.phrase_documents)
                .then_with(|| a.form.cmp(&b.form))
        });
        out.extend(found.into_iter().take(limit));
    }
    Ok(out)
}
