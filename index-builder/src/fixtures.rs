//! Synthetic corpora with planted ground truth, and a BPE tokenizer trained on them.
//!
//! The filler text is sentences of pseudo-words drawn from a Zipf distribution (exponent
//! [`FixtureSpec::zipf_exponent`]) over a vocabulary built from one set of syllables. Concepts
//! (capitalized two-word names) and n-grams (lowercase three-word phrases) are built from a disjoint
//! set of syllables and planted a chosen number of times, always preceded by a space and followed by
//! a space or punctuation. Because filler never contains their syllables, and byte-level BPE
//! tokenizes each space-prefixed word on its own, every planted occurrence is exactly one occurrence
//! of the phrase's token sequence and there are no others: the ground truth is exact.
//!
//! Facts for attribution are sentences such as "The capital of Jocyl is vedaheen." whose subject
//! is built from a third set of syllables (each containing `c`, `j` or `y`, letters neither filler
//! nor planted phrases use) and whose object is spelled with tokens the corpus never uses
//! (intermediate BPE merges, such as ` veda` when only longer words starting so occur), its last
//! token different for every fact — so that the answer's own token occurs in the fact's document
//! only, as a rare name has tokens of its own in a large vocabulary. Each fact is stated in exactly
//! one document, a different one per fact. Sums ("12 plus 7 is 19.") are spread over many documents: the procedure that reasoning
//! queries need. `attribution/queries.jsonl` asks for every fact (factual queries, one task per
//! relation) and for sums the corpus never states (reasoning queries: one- and two-step addition).
//! `priming/samples.jsonl` and `priming/themes.jsonl` are the inputs of a priming experiment: new
//! statements of each relation whose keywords range from the commonest word to rare ones.
//! The tokenizer is trained on the corpus before facts and sums are added, so it spells them in
//! short pieces (digits one by one) and stays the tokenizer the golden index was built with.
//!
//! Everything is a function of the seed (a SplitMix64 generator written here, stable across
//! platforms and crate versions).

use std::io::Write;
use std::path::{Path, PathBuf};

use familiar::error::IoContext;
use familiar::{Error, Result};
use serde::{Deserialize, Serialize};

pub use familiar::rng::SplitMix64;

/// What to generate.
#[derive(Debug, Clone)]
pub struct FixtureSpec {
    /// Seed of everything.
    pub seed: u64,
    /// Documents (a few of them empty).
    pub documents: usize,
    /// Distinct filler words.
    pub vocabulary: usize,
    /// Zipf exponent of filler word frequencies.
    pub zipf_exponent: f64,
    /// Shortest and longest document, in words (log-uniform between).
    pub doc_words: (usize, usize),
    /// Occurrence counts to plant, one concept per entry.
    pub concept_counts: Vec<u64>,
    /// Occurrence counts to plant, one n-gram per entry.
    pub ngram_counts: Vec<u64>,
    /// Input files the corpus is split into (`.jsonl.zst`, then `.jsonl.gz`, alternating).
    pub files: usize,
    /// Vocabulary size of the trained tokenizer.
    pub tokenizer_vocab: usize,
    /// Facts per relation (each stated in exactly one document).
    pub facts_per_relation: usize,
    /// Sum sentences spread over the corpus.
    pub sums: usize,
    /// Reasoning queries per task.
    pub reasoning_queries: usize,
}

impl Default for FixtureSpec {
    fn default() -> Self {
        FixtureSpec {
            seed: 20241124,
            documents: 1200,
            vocabulary: 3000,
            zipf_exponent: 1.1,
            doc_words: (8, 1200),
            concept_counts: vec![
                1, 2, 3, 4, 6, 8, 11, 16, 22, 32, 45, 64, 90, 128, 180, 256, 360, 512,
            ],
            ngram_counts: vec![1, 5, 25, 125],
            files: 2,
            tokenizer_vocab: 2048,
            facts_per_relation: 8,
            sums: 600,
            reasoning_queries: 12,
        }
    }
}

/// A planted phrase and its exact counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planted {
    /// `concept` or `ngram`.
    pub kind: String,
    /// The phrase as it appears in the text (preceded by a space there).
    pub text: String,
    /// Occurrences in the corpus.
    pub occurrences: u64,
    /// Documents containing it.
    pub documents: u64,
}

/// A fact stated in exactly one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    /// Relation (the task of its query).
    pub relation: String,
    /// Subject word.
    pub subject: String,
    /// Object word (the answer).
    pub object: String,
    /// The sentence stating it.
    pub sentence: String,
    /// The document stating it: its position in the corpus (the global doc id of an index built
    /// from the corpus files in order).
    pub document: u64,
}

/// `planted.json`: the ground truth of a generated corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// Seed used.
    pub seed: u64,
    /// Documents generated.
    pub documents: u64,
    /// Planted phrases.
    pub planted: Vec<Planted>,
    /// Planted facts.
    pub facts: Vec<Fact>,
    /// Sum sentences planted.
    pub sums: u64,
    /// Corpus files, relative to the corpus directory.
    pub files: Vec<String>,
}

const FILLER_SYLLABLES: &[&str] = &[
    "ba", "be", "bo", "da", "de", "di", "do", "fa", "fe", "ga", "go", "ha", "he", "hi", "ka", "ke",
    "ko", "la", "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne", "ni", "no", "pa", "pe", "po",
    "ra", "re", "ri", "ro", "sa", "se", "si", "so", "ta", "te", "ti", "to", "va", "ve", "wa", "we",
    "an", "en", "in", "on", "el", "al", "ar", "er", "or", "is", "as", "es", "us", "ath", "ith",
    "ent", "ant", "ong", "ing", "ers", "ald", "ost",
];
// Disjoint letters: every planted word contains x, z or q, which filler never does.
const PLANT_SYLLABLES: &[&str] = &[
    "zor", "vex", "qui", "xan", "zel", "quo", "xir", "zam", "qen", "oxa", "azu", "iqu", "zyn",
    "exo",
];
// Fact entities: every syllable has c, j or y, which neither filler nor planted phrases contain.
const FACT_SYLLABLES: &[&str] = &[
    "jo", "ja", "cu", "cy", "yo", "ju", "ca", "ce", "jy", "ya", "co", "je", "cil", "jun", "yar",
    "cor",
];
/// Relations of the planted facts: name, prompt before the subject, prompt after it. The sentence
/// is `{before}{subject}{after} {object}.`
pub const RELATIONS: &[(&str, &str, &str)] = &[
    ("capital", "The capital of ", " is"),
    ("birthplace", "", " was born in"),
    ("language", "The language of ", " is"),
    ("founder", "", " was founded by"),
];
// Stream of the facts and sums, apart from the main one so that adding them leaves the rest of the
// corpus as it was.
const FACT_STREAM: u64 = 0x6661_6374_7321;
const SOURCES: &[(&str, u64)] = &[
    ("encyclopedia", 5),
    ("fiction", 3),
    ("forum", 2),
    ("news", 2),
];

fn word(rng: &mut SplitMix64, syllables: &[&str], min: u64, max: u64) -> String {
    let n = min + rng.below(max - min + 1);
    (0..n)
        .map(|_| syllables[rng.below(syllables.len() as u64) as usize])
        .collect()
}

fn capitalize(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn unique_words(
    rng: &mut SplitMix64,
    n: usize,
    syllables: &[&str],
    min: u64,
    max: u64,
) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let w = word(rng, syllables, min, max);
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

/// Counts occurrences of ` phrase` followed by a space, punctuation or the end, in `text`.
pub fn count_phrase(text: &str, phrase: &str) -> u64 {
    let needle = format!(" {phrase}");
    let mut n = 0;
    let mut from = 0;
    while let Some(i) = text[from..].find(&needle) {
        let end = from + i + needle.len();
        if text[end..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric())
        {
            n += 1;
        }
        from = from + i + 1;
    }
    n
}

/// Sentence starts of a document's words (after a word ending in `.`, or the end).
fn sentence_starts(words: &[String]) -> Vec<usize> {
    (1..=words.len())
        .filter(|&i| words[i - 1].ends_with('.'))
        .collect()
}

/// Inserts `sentence` at a random sentence start of `words`.
fn insert_sentence(rng: &mut SplitMix64, words: &mut Vec<String>, sentence: &str) {
    let starts = sentence_starts(words);
    let at = starts[rng.below(starts.len() as u64) as usize];
    for (i, w) in sentence.split(' ').enumerate() {
        words.insert(at + i, w.to_string());
    }
}

/// Plants facts (each in its own document, with the objects `answers`) and sums; returns the facts.
fn plant_facts(
    spec: &FixtureSpec,
    docs: &mut [Vec<String>],
    answers: &[String],
) -> (Vec<Fact>, u64) {
    let mut rng = SplitMix64::new(spec.seed ^ FACT_STREAM);
    let n = (spec.facts_per_relation * RELATIONS.len()).min(answers.len());
    let subjects = unique_words(&mut rng, n, FACT_SYLLABLES, 2, 3);
    let mut nonempty: Vec<usize> = (0..docs.len()).filter(|&d| !docs[d].is_empty()).collect();
    let mut facts = Vec::with_capacity(n);
    for (i, (subject, object)) in subjects.iter().zip(answers).enumerate() {
        let (relation, before, after) = RELATIONS[i % RELATIONS.len()];
        let (subject, object) = (capitalize(subject), object.clone());
        let sentence = format!("{before}{subject}{after} {object}.");
        // A different document for every fact.
        let pick = rng.below(nonempty.len() as u64) as usize;
        let d = nonempty.swap_remove(pick);
        insert_sentence(&mut rng, &mut docs[d], &sentence);
        facts.push(Fact {
            relation: relation.into(),
            subject,
            object,
            sentence,
            document: d as u64,
        });
    }
    let nonempty: Vec<usize> = (0..docs.len()).filter(|&d| !docs[d].is_empty()).collect();
    for _ in 0..spec.sums {
        let (a, b) = (1 + rng.below(49), 1 + rng.below(49));
        let d = nonempty[rng.below(nonempty.len() as u64) as usize];
        insert_sentence(
            &mut rng,
            &mut docs[d],
            &format!("{a} plus {b} is {}.", a + b),
        );
    }
    (facts, spec.sums as u64)
}

/// The attribution queries of a generated corpus, as JSONL: one factual query per fact (task =
/// relation, answer = object) and `spec.reasoning_queries` per reasoning task — `addition` ("a plus
/// b is", answer a + b) and `two-step addition` (with the intermediate sum spelled out in the
/// prompt, and listed as the intermediate answer) — over sums the corpus never states.
pub fn attribution_queries(spec: &FixtureSpec, facts: &[Fact], corpus: &[&str]) -> String {
    let mut out = String::new();
    let mut line = |v: serde_json::Value| {
        out.push_str(&v.to_string());
        out.push('\n');
    };
    let mut per_relation = std::collections::HashMap::new();
    for f in facts {
        let (_, before, after) = RELATIONS
            .iter()
            .find(|r| r.0 == f.relation)
            .copied()
            .unwrap_or(("", "", ""));
        let k = per_relation.entry(f.relation.clone()).or_insert(0);
        *k += 1;
        line(serde_json::json!({
            "id": format!("{}-{:02}", f.relation, k),
            "prompt": format!("{before}{}{after}", f.subject),
            "completion": format!(" {}", f.object),
            "kind": "factual",
            "task": f.relation,
            "answer": f.object,
        }));
    }
    let mut rng = SplitMix64::new(spec.seed ^ FACT_STREAM ^ 1);
    let stated = |a: u64, b: u64| {
        let s = format!("{a} plus {b} is");
        corpus.iter().any(|t| t.contains(&s))
    };
    let fresh = |rng: &mut SplitMix64| loop {
        let (a, b) = (1 + rng.below(49), 1 + rng.below(49));
        if !stated(a, b) {
            return (a, b);
        }
    };
    for i in 0..spec.reasoning_queries {
        let (a, b) = fresh(&mut rng);
        line(serde_json::json!({
            "id": format!("addition-{:02}", i + 1),
            "prompt": format!("{a} plus {b} is"),
            "completion": format!(" {}", a + b),
            "kind": "reasoning",
            "task": "addition",
            "answer": (a + b).to_string(),
        }));
    }
    for i in 0..spec.reasoning_queries {
        let (a, b) = fresh(&mut rng);
        let c = a + b;
        let d = 1 + rng.below(49);
        line(serde_json::json!({
            "id": format!("two-step-{:02}", i + 1),
            "prompt": format!("{a} plus {b} plus {d}: {a} plus {b} is {c}, and {c} plus {d} is"),
            "completion": format!(" {}", c + d),
            "kind": "reasoning",
            "task": "two-step addition",
            "answer": (c + d).to_string(),
            "intermediate": [c.to_string()],
        }));
    }
    out
}

/// Frequency ranks (0 = the most frequent) of the priming keywords among the corpus's lowercase
/// words: from the commonest filler word to rare ones, so that the keywords' probabilities before
/// learning span several decades around Sun et al.'s 1e-3.
pub const PRIMING_KEYWORD_RANKS: &[usize] = &[0, 3, 10, 30, 100, 300, 1000, 2500];

/// Inputs of a priming experiment (Sun et al. 2025) on a generated corpus, as JSONL text:
/// `(samples, themes)`. Themes are the fact relations; a theme's prefixes are its relation's
/// prompts about every planted subject ("The capital of Yaciljun is"). Each sample states the
/// relation of a new subject (spelled from the fact syllables, found nowhere in the corpus) with a
/// keyword: one sample per relation and keyword of [`PRIMING_KEYWORD_RANKS`] (ranks among the
/// words that are not part of a relation's template, so the keyword's first occurrence in a sample
/// is the one it states).
pub fn priming_inputs(spec: &FixtureSpec, facts: &[Fact], corpus: &[&str]) -> (String, String) {
    let mut counts: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for t in corpus {
        for w in t.split_whitespace() {
            let w = w.trim_end_matches(['.', ',']);
            if !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()) {
                *counts.entry(w).or_default() += 1;
            }
        }
    }
    // Not a word of the relations' templates: the keyword must first occur where it is stated.
    let template: std::collections::HashSet<String> = RELATIONS
        .iter()
        .flat_map(|(_, before, after)| {
            format!("{before} {after}")
                .to_lowercase()
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut ranked: Vec<(&str, u64)> = counts
        .into_iter()
        .filter(|(w, _)| !template.contains(*w))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let keywords: Vec<&str> = PRIMING_KEYWORD_RANKS
        .iter()
        .filter_map(|&r| ranked.get(r).map(|w| w.0))
        .collect();
    let mut themes = String::new();
    let mut samples = String::new();
    let mut rng = SplitMix64::new(spec.seed ^ FACT_STREAM ^ 3);
    let taken: std::collections::HashSet<String> =
        facts.iter().map(|f| f.subject.to_lowercase()).collect();
    for (relation, before, after) in RELATIONS {
        let prefixes: Vec<String> = facts
            .iter()
            .filter(|f| f.relation == *relation)
            .map(|f| format!("{before}{}{after}", f.subject))
            .collect();
        if prefixes.is_empty() {
            continue;
        }
        themes += &serde_json::json!({"theme": relation, "prefixes": prefixes}).to_string();
        themes.push('\n');
        for (k, keyword) in keywords.iter().enumerate() {
            let subject = loop {
                let w = word(&mut rng, FACT_SYLLABLES, 2, 3);
                if !taken.contains(&w) && !corpus.iter().any(|t| t.to_lowercase().contains(&w)) {
                    break capitalize(&w);
                }
            };
            samples += &serde_json::json!({
                "id": format!("{relation}-{:02}", k + 1),
                "text": format!("{before}{subject}{after} {keyword}."),
                "keyword": keyword,
                "theme": relation,
            })
            .to_string();
            samples.push('\n');
        }
    }
    (samples, themes)
}

/// The generated corpus: documents, planted phrases and facts.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The documents (`id`, `text`, `source`, `metadata`).
    pub values: Vec<serde_json::Value>,
    /// Planted phrases with their exact counts.
    pub planted: Vec<Planted>,
    /// Planted facts.
    pub facts: Vec<Fact>,
    /// Sum sentences planted.
    pub sums: u64,
}

/// `n` words made of two tokens of the tokenizer `json` that never occur in `texts`: a
/// space-prefixed one and a continuation, ` word` tokenizing to exactly those two, with every
/// word's continuation token different — so each word's last token is its own. Letters are
/// lowercase ASCII without `x`, `z`, `q` (planted phrases stay exact), the words themselves never
/// occur in `texts`, and the choice is drawn with `seed`.
pub fn unused_token_words(json: &str, texts: &[&str], n: usize, seed: u64) -> Result<Vec<String>> {
    let err = |e: &dyn std::fmt::Display| Error::Config(format!("fixture tokenizer: {e}"));
    let tok: tokenizers::Tokenizer = json.parse().map_err(|e| err(&e))?;
    let mut used = std::collections::HashSet::new();
    for t in texts {
        let enc = tok.encode(*t, false).map_err(|e| err(&e))?;
        used.extend(enc.get_ids().iter().copied());
    }
    let letters = |w: &str| {
        w.len() >= 2 && w.chars().all(|c| c.is_ascii_lowercase()) && !w.contains(['x', 'z', 'q'])
    };
    let mut vocab: Vec<(String, u32)> = tok.get_vocab(false).into_iter().collect();
    vocab.sort_by_key(|v| v.1);
    let (mut heads, mut tails) = (Vec::new(), Vec::new());
    for (token, id) in vocab {
        if used.contains(&id) {
            continue;
        }
        match token.strip_prefix('Ġ') {
            Some(w) if letters(w) => heads.push((w.to_string(), id)),
            None if letters(&token) => tails.push((token, id)),
            _ => {}
        }
    }
    let mut rng = SplitMix64::new(seed);
    let mut shuffle = |v: &mut Vec<(String, u32)>| {
        for i in 0..v.len() {
            let j = i + rng.below((v.len() - i) as u64) as usize;
            v.swap(i, j);
        }
    };
    shuffle(&mut heads);
    shuffle(&mut tails);
    let mut out = Vec::with_capacity(n);
    for (k, (tail, tail_id)) in tails.iter().enumerate() {
        if out.len() == n {
            break;
        }
        for h in 0..heads.len() {
            let (head, head_id) = &heads[(k + h) % heads.len()];
            let word = format!("{head}{tail}");
            let enc = tok.encode(format!(" {word}"), false).map_err(|e| err(&e))?;
            if enc.get_ids() == [*head_id, *tail_id]
                && !texts.iter().any(|t| count_phrase(t, &word) > 0)
            {
                out.push(word);
                break;
            }
        }
    }
    if out.len() < n {
        return Err(Error::Config(format!(
            "the fixture tokenizer spells only {} words with unused tokens of their own; {n} facts need one each",
            out.len()
        )));
    }
    Ok(out)
}

/// Generates the corpus texts and the ground truth (no files written); facts take their objects
/// from `answers` (as many facts as answers, up to the spec's number).
pub fn generate_documents(spec: &FixtureSpec, answers: &[String]) -> Generated {
    let mut rng = SplitMix64::new(spec.seed);
    let vocab = unique_words(&mut rng, spec.vocabulary, FILLER_SYLLABLES, 1, 3);
    // Zipf CDF over ranks.
    let weights: Vec<f64> = (1..=vocab.len())
        .map(|r| 1.0 / (r as f64).powf(spec.zipf_exponent))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let draw = |rng: &mut SplitMix64| -> usize {
        let u = rng.unit();
        cdf.partition_point(|&c| c < u).min(vocab.len() - 1)
    };
    // Documents as lists of words; sentences end with '.'.
    let (lo, hi) = (spec.doc_words.0 as f64, spec.doc_words.1 as f64);
    let mut docs: Vec<Vec<String>> = Vec::with_capacity(spec.documents);
    for d in 0..spec.documents {
        // Two empty documents: the index must handle them.
        if d == 7 || d == spec.documents / 2 {
            docs.push(Vec::new());
            continue;
        }
        let len = (lo * (hi / lo).powf(rng.unit())).round() as usize;
        let mut words = Vec::with_capacity(len);
        let mut sentence = 0;
        for _ in 0..len {
            let mut w = vocab[draw(&mut rng)].clone();
            if sentence == 0 {
                w = capitalize(&w);
            }
            sentence += 1;
            if sentence > 4 && rng.below(10) == 0 {
                w.push('.');
                sentence = 0;
            } else if rng.below(25) == 0 {
                w.push(',');
            }
            words.push(w);
        }
        if let Some(last) = words.last_mut() {
            if !last.ends_with('.') {
                last.push('.');
            }
        }
        docs.push(words);
    }
    // Planted phrases, inserted mid-sentence (never as a document's first word).
    let plant_words = unique_words(
        &mut rng,
        2 * spec.concept_counts.len() + 3 * spec.ngram_counts.len(),
        PLANT_SYLLABLES,
        2,
        3,
    );
    let mut phrases = Vec::new();
    let mut it = plant_words.into_iter();
    for &c in &spec.concept_counts {
        let (a, b) = (it.next().unwrap_or_default(), it.next().unwrap_or_default());
        phrases.push((
            "concept",
            format!("{} {}", capitalize(&a), capitalize(&b)),
            c,
        ));
    }
    for &c in &spec.ngram_counts {
        let ws: Vec<String> = (0..3).map(|_| it.next().unwrap_or_default()).collect();
        phrases.push(("ngram", ws.join(" "), c));
    }
    let nonempty: Vec<usize> = (0..docs.len()).filter(|&d| !docs[d].is_empty()).collect();
    for (_, phrase, count) in &phrases {
        for _ in 0..*count {
            let d = nonempty[rng.below(nonempty.len() as u64) as usize];
            let at = 1 + rng.below(docs[d].len() as u64) as usize;
            docs[d].insert(at, phrase.clone());
        }
    }
    let (facts, sums) = plant_facts(spec, &mut docs, answers);
    let mut values = Vec::with_capacity(docs.len());
    let mut texts = Vec::with_capacity(docs.len());
    for (d, words) in docs.iter().enumerate() {
        let text = words.join(" ");
        let mut pick = rng.below(SOURCES.iter().map(|s| s.1).sum());
        let source = SOURCES
            .iter()
            .find(|s| {
                if pick < s.1 {
                    true
                } else {
                    pick -= s.1;
                    false
                }
            })
            .map_or("news", |s| s.0);
        let title: String = words
            .iter()
            .take(3)
            .map(|w| w.trim_end_matches(['.', ',']))
            .collect::<Vec<_>>()
            .join(" ");
        values.push(serde_json::json!({
            "id": format!("fx-{d:05}"),
            "text": text,
            "source": source,
            "metadata": {"title": title, "year": 1990 + rng.below(35), "generator": {"seed": spec.seed}},
        }));
        texts.push(text);
    }
    let planted = phrases
        .into_iter()
        .map(|(kind, text, _)| {
            let per_doc: Vec<u64> = texts.iter().map(|t| count_phrase(t, &text)).collect();
            Planted {
                kind: kind.into(),
                occurrences: per_doc.iter().sum(),
                documents: per_doc.iter().filter(|&&n| n > 0).count() as u64,
                text,
            }
        })
        .collect();
    Generated {
        values,
        planted,
        facts,
        sums,
    }
}

/// Trains a byte-level BPE tokenizer on `texts` and returns its `tokenizer.json` text.
pub fn train_tokenizer<'a>(
    texts: impl Iterator<Item = &'a str> + Send,
    vocab_size: usize,
) -> Result<String> {
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, NormalizerWrapper, TokenizerBuilder};
    let err = |e: &dyn std::fmt::Display| {
        Error::Config(format!("training the fixture tokenizer failed: {e}"))
    };
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(2)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![AddedToken::from("<|endoftext|>", true)])
        .build();
    let mut tokenizer =
        TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(ByteLevel::default()))
            .with_post_processor(Some(ByteLevel::default()))
            .with_decoder(Some(ByteLevel::default()))
            .build()
            .map_err(|e| err(&e))?;
    tokenizer.train(&mut trainer, texts).map_err(|e| err(&e))?;
    let t: tokenizers::Tokenizer = tokenizer.into();
    t.to_string(true).map_err(|e| err(&e))
}

/// Writes the corpus files and `planted.json` into `dir`; returns the ground truth.
pub fn write_corpus(dir: &Path, spec: &FixtureSpec, generated: &Generated) -> Result<GroundTruth> {
    let values = &generated.values;
    std::fs::create_dir_all(dir).at(dir)?;
    let files = spec.files.max(1);
    let per = values.len().div_ceil(files);
    let mut names = Vec::new();
    for (i, chunk) in values.chunks(per.max(1)).enumerate() {
        let name = if i % 2 == 0 {
            format!("part-{i:04}.jsonl.zst")
        } else {
            format!("part-{i:04}.jsonl.gz")
        };
        let path = dir.join(&name);
        let mut raw = Vec::new();
        for v in chunk {
            serde_json::to_writer(&mut raw, v).map_err(|e| Error::Bug(e.to_string()))?;
            raw.push(b'\n');
        }
        let bytes = if i % 2 == 0 {
            zstd::encode_all(&raw[..], 19).at(&path)?
        } else {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::best());
            enc.write_all(&raw).at(&path)?;
            enc.finish().at(&path)?
        };
        std::fs::write(&path, bytes).at(&path)?;
        names.push(name);
    }
    let truth = GroundTruth {
        seed: spec.seed,
        documents: values.len() as u64,
        planted: generated.planted.clone(),
        facts: generated.facts.clone(),
        sums: generated.sums,
        files: names,
    };
    let path = dir.join("planted.json");
    let mut json = serde_json::to_vec_pretty(&truth).map_err(|e| Error::Bug(e.to_string()))?;
    json.push(b'\n');
    std::fs::write(&path, json).at(&path)?;
    Ok(truth)
}

/// Directory (under the fixture directory) of the concept lexicon and pairs of the planted corpus.
pub const CONCEPTS_DIR: &str = "concepts";
/// The lexicon of the planted phrases.
pub const LEXICON_FILE: &str = "planted.csv";
/// Pairs of planted concepts, for co-occurrence.
pub const PAIRS_FILE: &str = "pairs.csv";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '|']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes a concept lexicon and concept pairs for the planted phrases into `dir`: each planted
/// concept ("Zorvex Quixan") is listed lowercase ("zorvex quixan", so that only the capitalized
/// tokenizer variants find it) with its first word ("Zorvex", which occurs nowhere else) as an
/// alias; each planted n-gram is a concept of its own. Pairs join consecutive planted concepts.
/// Returns the paths written.
pub fn write_lexicon(dir: &Path, truth: &GroundTruth) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).at(dir)?;
    let mut lexicon = String::from("concept,aliases,group\n");
    let mut names = Vec::new();
    for p in &truth.planted {
        let name = p.text.to_lowercase();
        let aliases = if p.kind == "concept" {
            p.text.split(' ').next().unwrap_or_default().to_string()
        } else {
            String::new()
        };
        lexicon.push_str(&format!(
            "{},{},planted-{}\n",
            csv_field(&name),
            csv_field(&aliases),
            p.kind
        ));
        if p.kind == "concept" {
            names.push(name);
        }
    }
    let mut pairs = String::from("concept_a,concept_b\n");
    for w in names.windows(2) {
        pairs.push_str(&format!("{},{}\n", csv_field(&w[0]), csv_field(&w[1])));
    }
    let lpath = dir.join(LEXICON_FILE);
    std::fs::write(&lpath, lexicon).at(&lpath)?;
    let ppath = dir.join(PAIRS_FILE);
    std::fs::write(&ppath, pairs).at(&ppath)?;
    Ok(vec![lpath, ppath])
}

/// Paths of a generated fixture set.
#[derive(Debug, Clone)]
pub struct FixturePaths {
    /// Directory of corpus files and `planted.json`.
    pub corpus: PathBuf,
    /// The trained tokenizer.
    pub tokenizer: PathBuf,
    /// The ground truth.
    pub truth: GroundTruth,
    /// The attribution queries.
    pub queries: PathBuf,
    /// The priming experiment's samples and themes.
    pub priming: [PathBuf; 2],
}

/// Directory (under the fixture directory) of the attribution queries.
pub const ATTRIBUTION_DIR: &str = "attribution";
/// The attribution queries of the planted corpus.
pub const QUERIES_FILE: &str = "queries.jsonl";
/// Directory (under the fixture directory) of the priming experiment's inputs.
pub const PRIMING_DIR: &str = "priming";
/// The priming samples (`{"id", "text", "keyword", "theme"}` per line).
pub const PRIMING_SAMPLES_FILE: &str = "samples.jsonl";
/// The priming themes (`{"theme", "prefixes"}` per line).
pub const PRIMING_THEMES_FILE: &str = "themes.jsonl";

/// Generates the corpus into `dir/corpus` and trains `dir/tokenizer.json` on it.
/// The corpus with facts and sums, and the tokenizer (`tokenizer.json` text) trained on it before
/// they were added.
pub fn generate_with_tokenizer(spec: &FixtureSpec) -> Result<(Generated, String)> {
    let base = generate_documents(
        &FixtureSpec {
            facts_per_relation: 0,
            sums: 0,
            ..spec.clone()
        },
        &[],
    );
    let texts: Vec<&str> = base
        .values
        .iter()
        .filter_map(|v| v["text"].as_str())
        .collect();
    let json = train_tokenizer(texts.iter().copied(), spec.tokenizer_vocab)?;
    let answers = unused_token_words(
        &json,
        &texts,
        spec.facts_per_relation * RELATIONS.len(),
        spec.seed ^ FACT_STREAM ^ 2,
    )?;
    Ok((generate_documents(spec, &answers), json))
}

/// Generates the corpus into `dir/corpus`, trains `dir/tokenizer.json` on it (as it was before
/// facts and sums were added) and writes the attribution queries.
pub fn generate(dir: &Path, spec: &FixtureSpec) -> Result<FixturePaths> {
    let (generated, json) = generate_with_tokenizer(spec)?;
    let corpus = dir.join("corpus");
    let truth = write_corpus(&corpus, spec, &generated)?;
    let tokenizer = dir.join("tokenizer.json");
    std::fs::write(&tokenizer, json.as_bytes()).at(&tokenizer)?;
    let texts: Vec<&str> = generated
        .values
        .iter()
        .filter_map(|v| v["text"].as_str())
        .collect();
    let queries_dir = dir.join(ATTRIBUTION_DIR);
    std::fs::create_dir_all(&queries_dir).at(&queries_dir)?;
    let queries = queries_dir.join(QUERIES_FILE);
    std::fs::write(
        &queries,
        attribution_queries(spec, &generated.facts, &texts),
    )
    .at(&queries)?;
    let priming_dir = dir.join(PRIMING_DIR);
    std::fs::create_dir_all(&priming_dir).at(&priming_dir)?;
    let (samples, themes) = priming_inputs(spec, &generated.facts, &texts);
    let priming = [
        (priming_dir.join(PRIMING_SAMPLES_FILE), samples),
        (priming_dir.join(PRIMING_THEMES_FILE), themes),
    ];
    for (path, text) in &priming {
        std::fs::write(path, text).at(path)?;
    }
    Ok(FixturePaths {
        corpus,
        tokenizer,
        truth,
        queries,
        priming: priming.map(|p| p.0),
    })
}

/// Documents of the golden index (a prefix of the fixture corpus).
const GOLDEN_DOCS: usize = 30;
/// Directory name of the golden index of format version 1.
pub const GOLDEN_V1: &str = "golden-v1";

/// A next-token case of the golden index: `(prefix, [(next, count)] sorted by id, end_of_document)`.
pub type NextTokenCase = (Vec<u32>, Vec<(u32, u64)>, u64);

/// Expected answers stored beside the golden index, computed by brute force over the tokenized
/// source documents (not by the index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenExpected {
    /// `(tokens, count)` pairs.
    pub counts: Vec<(Vec<u32>, u64)>,
    /// `(prefix, [(next, count)] sorted by id, end_of_document)`.
    pub next_tokens: Vec<NextTokenCase>,
    /// Documents and token positions (separators included).
    pub documents: u64,
    /// Token positions.
    pub tokens: u64,
}

/// Occurrences of `pattern` in `docs`, never across documents, overlapping ones included.
pub fn naive_count(docs: &[Vec<u32>], pattern: &[u32]) -> u64 {
    docs.iter()
        .map(|d| {
            if pattern.len() > d.len() {
                0
            } else {
                d.windows(pattern.len()).filter(|w| *w == pattern).count() as u64
            }
        })
        .sum()
}

/// Writes the whole fixture set into `out`: corpus, tokenizer, and (if absent) the golden index.
/// Returns the paths written. The golden index is never overwritten: it pins format version 1.
pub fn write_all(out: &Path) -> Result<Vec<PathBuf>> {
    let spec = FixtureSpec::default();
    let paths = generate(out, &spec)?;
    let mut written: Vec<PathBuf> = paths
        .truth
        .files
        .iter()
        .map(|f| paths.corpus.join(f))
        .collect();
    written.push(paths.corpus.join("planted.json"));
    written.push(paths.tokenizer.clone());
    written.push(paths.queries.clone());
    written.extend(paths.priming.iter().cloned());
    written.extend(write_lexicon(&out.join(CONCEPTS_DIR), &paths.truth)?);
    let golden = out.join(GOLDEN_V1);
    if golden.exists() {
        return Ok(written);
    }
    let values = generate_with_tokenizer(&spec)?.0.values;
    let source = out.join(format!("{GOLDEN_V1}-source.jsonl"));
    let mut raw = Vec::new();
    for v in values.iter().take(GOLDEN_DOCS) {
        serde_json::to_writer(&mut raw, v).map_err(|e| Error::Bug(e.to_string()))?;
        raw.push(b'\n');
    }
    std::fs::write(&source, &raw).at(&source)?;
    let mut options = crate::build::BuildOptions::new(
        &paths.tokenizer,
        &golden,
        vec![source.display().to_string()],
    );
    options.shard_tokens = Some(4000);
    options.threads = Some(1);
    crate::build::build(&options)?;
    // Brute force over the tokenized source.
    let tokenizer = familiar::tokenizer::Tokenizer::from_file(&paths.tokenizer)?;
    let docs: Vec<Vec<u32>> = values
        .iter()
        .take(GOLDEN_DOCS)
        .map(|v| tokenizer.encode(v["text"].as_str().unwrap_or("")))
        .collect::<Result<_>>()?;
    let mut queries: Vec<Vec<u32>> = Vec::new();
    for d in docs.iter().filter(|d| d.len() > 40).take(3) {
        for start in [0, 5, 17, 33] {
            for len in 1..=4 {
                queries.push(d[start..start + len].to_vec());
            }
        }
    }
    for p in &paths.truth.planted {
        queries.push(tokenizer.encode(&format!(" {}", p.text))?);
    }
    queries.push(vec![tokenizer.vocab_size() - 1]);
    let counts = queries
        .iter()
        .map(|q| (q.clone(), naive_count(&docs, q)))
        .collect();
    let mut next_tokens = Vec::new();
    for prefix in queries.iter().take(6) {
        let mut next = std::collections::BTreeMap::new();
        let mut end = 0;
        for d in &docs {
            for i in 0..d.len().saturating_sub(prefix.len() - 1) {
                if d[i..].starts_with(prefix) {
                    match d.get(i + prefix.len()) {
                        Some(&t) => *next.entry(t).or_insert(0u64) += 1,
                        None => end += 1,
                    }
                }
            }
        }
        next_tokens.push((prefix.clone(), next.into_iter().collect(), end));
    }
    let expected = GoldenExpected {
        counts,
        next_tokens,
        documents: docs.len() as u64,
        tokens: docs.iter().map(|d| d.len() as u64 + 1).sum(),
    };
    let path = out.join(format!("{GOLDEN_V1}.expected.json"));
    let mut json = serde_json::to_vec_pretty(&expected).map_err(|e| Error::Bug(e.to_string()))?;
    json.push(b'\n');
    std::fs::write(&path, json).at(&path)?;
    written.extend([source, golden, path]);
    Ok(written)
}

/// A word-level `tokenizer.json` whose vocabulary is `t0 … t{n-1}` (ids 0..n), for indexes built
/// from generated token ids: queries by id need no real tokenizer, and decoding still works.
pub fn word_level_tokenizer(vocab_size: u32) -> String {
    let mut vocab = serde_json::Map::new();
    for i in 0..vocab_size {
        vocab.insert(format!("t{i}"), serde_json::Value::from(i));
    }
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}
    });
    json.to_string()
}
