//! Concept frequencies: how often each concept of a lexicon occurs, by several methods, and how
//! often pairs of concepts share a document.
//!
//! Methods (each result row names its method):
//! - `sa_exact`: exact whole-word occurrences of each surface form's token sequences, from the
//!   suffix array. The forms are tokenized in the variants a reader of the corpus would expect —
//!   as written, lowercase, capitalized and title case, each with and without a leading space —
//!   and every distinct token sequence is counted and reported. An occurrence counts when it is a
//!   whole word (or words): a form that begins (ends) with a letter or digit must not be preceded
//!   (followed) by a token that continues the word, so " Paris" inside " Parisian" is not counted.
//!   This keeps `sa_exact` comparable with the text methods.
//! - `text_all_words`: documents whose analyzed text (see [`familiar_text`]) contains every word
//!   of the form, anywhere — the bag-of-words AND of Udandarao et al. 2024.
//! - `text_phrase`: documents containing the analyzed form as a phrase, and its occurrences.
//!
//! Rows come at three levels: `variant` (one token sequence, `sa_exact` only), `form` (one surface
//! form: the union of its variants) and `concept` (the union of all its forms). A union's
//! occurrences are the distinct start positions where any member matches, and its documents the
//! distinct documents; so nothing is counted twice, and no total hides its parts.
//!
//! Co-occurrence (Kandpal et al. 2023): for a pair of concepts, the documents that contain both,
//! each by any of its forms, by each method.

use std::collections::HashMap;
use std::sync::Mutex;

use familiar::index::{Index, ShardView};
use familiar::token::Token;
use familiar::{with_view, Error, Result};
use familiar_text::TextIndex;
use rayon::prelude::*;

use super::lexicon::{Concept, Lexicon};

/// A counting method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Method {
    /// Whole-word token sequences in the suffix array.
    #[cfg_attr(feature = "clap", value(name = "sa_exact"))]
    SaExact,
    /// Documents with every word of the form (analyzed text).
    #[cfg_attr(feature = "clap", value(name = "text_all_words"))]
    TextAllWords,
    /// Documents with the form as a phrase (analyzed text).
    #[cfg_attr(feature = "clap", value(name = "text_phrase"))]
    TextPhrase,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 3] = [Method::SaExact, Method::TextAllWords, Method::TextPhrase];

    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Method::SaExact => "sa_exact",
            Method::TextAllWords => "text_all_words",
            Method::TextPhrase => "text_phrase",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// One row of `concept_frequency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrequencyRow {
    /// The concept.
    pub concept_id: u64,
    /// The method.
    pub method: Method,
    /// `concept`, `form` or `variant`.
    pub level: &'static str,
    /// The surface form (as written) for `form` and `variant` rows.
    pub form: Option<String>,
    /// The variant (`sa_exact` only), e.g. `leading_space+capitalized`.
    pub variant: Option<String>,
    /// The variant's text as tokenized.
    pub variant_text: Option<String>,
    /// The variant's token ids.
    pub tokens: Option<Vec<u32>>,
    /// Occurrences (none for `text_all_words`, which matches documents).
    pub occurrences: Option<u64>,
    /// Documents.
    pub documents: u64,
}

/// One row of `cooccurrence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CooccurrenceRow {
    /// Line of the pairs file.
    pub line: u64,
    /// First concept.
    pub concept_a: u64,
    /// Second concept.
    pub concept_b: u64,
    /// The method both concepts were matched with.
    pub method: Method,
    /// Documents containing the first concept.
    pub documents_a: u64,
    /// Documents containing the second.
    pub documents_b: u64,
    /// Documents containing both.
    pub documents_both: u64,
}

/// Sorted, distinct local document numbers per shard, per method (the union over a concept's forms).
#[derive(Debug, Clone, Default)]
pub struct ConceptDocs {
    docs: [Vec<Vec<u32>>; 3],
}

impl ConceptDocs {
    fn bytes(&self) -> usize {
        self.docs
            .iter()
            .flat_map(|m| m.iter().map(|d| d.len() * 4 + 24))
            .sum()
    }

    /// Documents by `method`.
    pub fn documents(&self, method: Method) -> u64 {
        self.docs[method.slot()]
            .iter()
            .map(|d| d.len() as u64)
            .sum()
    }
}

/// The whole-word test needs to know, for every token, whether its text starts or ends with a
/// letter or digit (the separator does neither).
const STARTS_WORD: u8 = 1;
const ENDS_WORD: u8 = 2;

fn is_word_char(c: char) -> bool {
    // The text index's tokenizer splits on exactly this.
    c.is_alphanumeric()
}

/// Word-edge flags of every token id. A token whose text is not valid UTF-8 on its own (a piece of
/// a multi-byte character) counts as a letter at that edge: such matches are not whole words.
fn token_edges(index: &Index) -> Result<Vec<u8>> {
    let tokenizer = index.tokenizer()?;
    let n = index.vocab_size();
    // Decode after a context token so that decoders that strip a leading space (Metaspace) keep it.
    let context = tokenizer.encode("a")?;
    let prefix = tokenizer.decode(&context)?;
    (0..n)
        .into_par_iter()
        .map(|id| {
            let mut ids = context.clone();
            ids.push(id);
            let both = tokenizer.decode(&ids)?;
            let text = match both.strip_prefix(prefix.as_str()) {
                Some(rest) if !context.is_empty() => rest.to_string(),
                _ => tokenizer.decode(&[id])?,
            };
            let first = text.chars().next();
            let last = text.chars().next_back();
            let mut f = 0;
            if first.is_some_and(|c| is_word_char(c) || c == '\u{fffd}') {
                f |= STARTS_WORD;
            }
            if last.is_some_and(|c| is_word_char(c) || c == '\u{fffd}') {
                f |= ENDS_WORD;
            }
            Ok(f)
        })
        .collect()
}

/// The case variants of a form, deduplicated, in a fixed order.
fn case_variants(form: &str) -> Vec<(&'static str, String)> {
    fn upper_first(w: &str) -> String {
        let mut c = w.chars();
        match c.next() {
            Some(f) => f.to_uppercase().chain(c).collect(),
            None => String::new(),
        }
    }
    let lower = form.to_lowercase();
    let capitalized = upper_first(form);
    let title = form
        .split(' ')
        .map(upper_first)
        .collect::<Vec<_>>()
        .join(" ");
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for (label, s) in [
        ("as_written", form.to_string()),
        ("lowercase", lower),
        ("capitalized", capitalized),
        ("title", title),
    ] {
        if !out.iter().any(|(_, t)| *t == s) {
            out.push((label, s));
        }
    }
    out
}

/// A token sequence to count, with what the whole-word test needs.
#[derive(Debug, Clone)]
struct Sequence {
    form: usize,
    label: String,
    text: String,
    ids: Vec<u32>,
    check_before: bool,
    check_after: bool,
}

fn sequences(index: &Index, edges: &[u8], concept: &Concept) -> Result<Vec<Sequence>> {
    let tokenizer = index.tokenizer()?;
    let mut out: Vec<Sequence> = Vec::new();
    for (f, form) in concept.forms.iter().enumerate() {
        for (case, s) in case_variants(form) {
            // Spaced first: tokenizers that add a prefix space give both the same tokens, and the
            // spaced text is then what the tokens say.
            for space in [true, false] {
                let text = if space { format!(" {s}") } else { s.clone() };
                let ids = tokenizer.encode(&text)?;
                if ids.is_empty() || out.iter().any(|q| q.ids == ids) {
                    continue;
                }
                index.check_ids(&ids)?;
                let label = if space {
                    format!("leading_space+{case}")
                } else {
                    case.to_string()
                };
                out.push(Sequence {
                    form: f,
                    label,
                    // From the tokens, not the text: a tokenizer may add a prefix space.
                    check_before: ids.first().is_some_and(|&t| {
                        edges.get(t as usize).copied().unwrap_or(0) & STARTS_WORD != 0
                    }),
                    check_after: ids.last().is_some_and(|&t| {
                        edges.get(t as usize).copied().unwrap_or(0) & ENDS_WORD != 0
                    }),
                    text,
                    ids,
                });
            }
        }
    }
    Ok(out)
}

/// Sorted whole-word start positions of `seq` in one shard.
fn positions<T: Token>(view: &ShardView<'_, T>, edges: &[u8], seq: &Sequence) -> Result<Vec<u64>> {
    let pattern: Vec<T> = crate::ngram::convert(&seq.ids)?;
    let (lo, hi) = view.range(&pattern)?;
    let n = view.tokens.len();
    let len = pattern.len();
    let flag = |t: T| edges.get(t.to_u32() as usize).copied().unwrap_or(0);
    let mut out = Vec::with_capacity((hi - lo) as usize);
    for i in lo..hi {
        let p = view.suffix(i)?;
        if seq.check_after && p + len < n && flag(view.tokens[p + len]) & STARTS_WORD != 0 {
            continue;
        }
        if seq.check_before && p > 0 && flag(view.tokens[p - 1]) & ENDS_WORD != 0 {
            continue;
        }
        out.push(p as u64);
    }
    out.sort_unstable();
    Ok(out)
}

/// `sa_exact` in one shard.
struct ShardSa {
    /// Occurrences of each sequence.
    seq_occurrences: Vec<u64>,
    /// Documents of each sequence.
    seq_docs: Vec<u64>,
    /// (occurrences, documents) of each form.
    forms: Vec<(u64, u64)>,
    /// Occurrences of the concept.
    occurrences: u64,
    /// Documents of the concept.
    docs: Vec<u32>,
}

fn sa_shard<T: Token>(
    view: &ShardView<'_, T>,
    edges: &[u8],
    seqs: &[Sequence],
    forms: usize,
) -> Result<ShardSa> {
    let positions = seqs
        .iter()
        .map(|s| positions(view, edges, s))
        .collect::<Result<Vec<_>>>()?;
    let seq_docs = positions
        .iter()
        .map(|p| documents_of(view, p).map(|d| d.len() as u64))
        .collect::<Result<Vec<_>>>()?;
    let forms = (0..forms)
        .map(|f| {
            let members: Vec<&Vec<u64>> = seqs
                .iter()
                .zip(&positions)
                .filter(|(s, _)| s.form == f)
                .map(|(_, p)| p)
                .collect();
            let u = union_sorted(&members);
            Ok((u.len() as u64, documents_of(view, &u)?.len() as u64))
        })
        .collect::<Result<Vec<_>>>()?;
    let all: Vec<&Vec<u64>> = positions.iter().collect();
    let u = union_sorted(&all);
    let docs = documents_of(view, &u)?;
    Ok(ShardSa {
        occurrences: u.len() as u64,
        seq_occurrences: positions.iter().map(|p| p.len() as u64).collect(),
        seq_docs,
        forms,
        docs,
    })
}

/// Distinct local documents of sorted positions.
fn documents_of<T: Token>(view: &ShardView<'_, T>, sorted: &[u64]) -> Result<Vec<u32>> {
    let mut docs = Vec::new();
    let mut end = 0u64;
    for &p in sorted {
        if p >= end || docs.is_empty() {
            let d = view.doc_of(p)?;
            docs.push(d as u32);
            end = view
                .doc_offsets
                .get(d + 1)
                .ok_or_else(|| Error::Bug("document end".into()))?;
        }
    }
    Ok(docs)
}

fn union_sorted<T: Ord + Copy>(lists: &[&Vec<T>]) -> Vec<T> {
    match lists {
        [] => Vec::new(),
        [one] => (*one).clone(),
        _ => {
            let mut all: Vec<T> = lists.iter().flat_map(|l| l.iter().copied()).collect();
            all.sort_unstable();
            all.dedup();
            all
        }
    }
}

fn intersect_count(a: &[u32], b: &[u32]) -> u64 {
    let (mut i, mut j, mut n) = (0, 0, 0u64);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// What to count.
#[derive(Debug, Clone)]
pub struct CountOptions {
    /// Methods to run.
    pub methods: Vec<Method>,
    /// Memory (bytes) for keeping the document sets of paired concepts between the counting pass
    /// and the co-occurrence pass; sets that do not fit are computed again.
    pub pair_cache_bytes: usize,
    /// Set from elsewhere (another thread, a progress callback) to stop the count with
    /// [`Error::Interrupted`] before its next concept or pair (nothing is written).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl CountOptions {
    fn check_cancel(&self) -> Result<()> {
        match &self.cancel {
            Some(c) if c.load(std::sync::atomic::Ordering::Relaxed) => {
                Err(Error::Interrupted("the concept count was stopped".into()))
            }
            _ => Ok(()),
        }
    }
}

/// Progress of [`Counter::run_with_progress`]: each stage (`"concepts"`, then `"pairs"`) starts
/// with its total, reports each item done (from any worker thread), and finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountEvent {
    /// A stage starts with `total` items.
    Start {
        /// `"concepts"` or `"pairs"`.
        stage: &'static str,
        /// Items in the stage.
        total: u64,
    },
    /// One item of the current stage is done.
    Done,
    /// The current stage is over.
    Finish,
}

impl Default for CountOptions {
    fn default() -> Self {
        CountOptions {
            methods: Method::ALL.to_vec(),
            pair_cache_bytes: 2 << 30,
            cancel: None,
        }
    }
}

/// Counts concepts of one index.
pub struct Counter<'a> {
    index: &'a Index,
    texts: Vec<TextIndex>,
    edges: Vec<u8>,
    methods: Vec<Method>,
}

impl std::fmt::Debug for Counter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter")
            .field("index", &self.index.dir())
            .field("methods", &self.methods)
            .finish()
    }
}

/// The results of a run.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// `concept_frequency` rows, concept by concept.
    pub frequencies: Vec<FrequencyRow>,
    /// `cooccurrence` rows, pair by pair (in file order), method by method.
    pub cooccurrences: Vec<CooccurrenceRow>,
    /// Documents in the index.
    pub corpus_documents: u64,
    /// Tokens in the index (separators excluded).
    pub corpus_tokens: u64,
}

impl<'a> Counter<'a> {
    /// Prepares to count with `methods` (text methods need every shard's text index).
    pub fn new(index: &'a Index, methods: &[Method]) -> Result<Counter<'a>> {
        Counter::new_with(index, methods, false)
    }

    /// Lexicons at least this large make the counter read the index into the page cache first.
    pub const PRELOAD_CONCEPTS: usize = 1000;

    /// Prepares to count `lexicon`: as [`Counter::new`], and for lexicons of
    /// [`Counter::PRELOAD_CONCEPTS`] or more the index files are read into the page cache up front
    /// (sequential reads instead of one page fault per random page).
    pub fn for_lexicon(
        index: &'a Index,
        methods: &[Method],
        lexicon: &Lexicon,
    ) -> Result<Counter<'a>> {
        Counter::new_with(
            index,
            methods,
            lexicon.concepts.len() >= Counter::PRELOAD_CONCEPTS,
        )
    }

    /// [`Counter::new`], optionally preloading the index files.
    pub fn new_with(index: &'a Index, methods: &[Method], preload: bool) -> Result<Counter<'a>> {
        let mut methods = methods.to_vec();
        methods.sort();
        methods.dedup();
        if methods.is_empty() {
            return Err(Error::Query("no counting method chosen".into()));
        }
        let texts = if methods.iter().any(|m| *m != Method::SaExact) {
            index
                .shards()
                .iter()
                .map(|s| TextIndex::open_with(&s.dir, &s.manifest, preload))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        if preload && methods.contains(&Method::SaExact) {
            for s in index.shards() {
                s.preload();
            }
        }
        let edges = if methods.contains(&Method::SaExact) {
            token_edges(index)?
        } else {
            Vec::new()
        };
        Ok(Counter {
            index,
            texts,
            edges,
            methods,
        })
    }

    /// Counts one concept: its rows and its document sets.
    pub fn concept(&self, concept: &Concept) -> Result<(Vec<FrequencyRow>, ConceptDocs)> {
        let mut rows = Vec::new();
        let mut docs = ConceptDocs::default();
        let row = |method, level, form: Option<&String>, occ, documents| FrequencyRow {
            concept_id: concept.id,
            method,
            level,
            form: form.cloned(),
            variant: None,
            variant_text: None,
            tokens: None,
            occurrences: occ,
            documents,
        };
        if self.methods.contains(&Method::SaExact) {
            let seqs = sequences(self.index, &self.edges, concept)?;
            let mut seq_occ = vec![0u64; seqs.len()];
            let mut seq_docs = vec![0u64; seqs.len()];
            let mut form_rows = vec![(0u64, 0u64); concept.forms.len()];
            let (mut total_occ, mut total_docs) = (0u64, 0u64);
            let mut shard_docs = Vec::new();
            for shard in self.index.shards() {
                let r = with_view!(shard, |v| sa_shard(
                    &v,
                    &self.edges,
                    &seqs,
                    concept.forms.len()
                ))?;
                for (i, (o, d)) in r.seq_occurrences.iter().zip(&r.seq_docs).enumerate() {
                    seq_occ[i] += o;
                    seq_docs[i] += d;
                }
                for (f, fr) in form_rows.iter_mut().enumerate() {
                    fr.0 += r.forms[f].0;
                    fr.1 += r.forms[f].1;
                }
                total_occ += r.occurrences;
                total_docs += r.docs.len() as u64;
                shard_docs.push(r.docs);
            }
            docs.docs[Method::SaExact.slot()] = shard_docs;
            rows.push(row(
                Method::SaExact,
                "concept",
                None,
                Some(total_occ),
                total_docs,
            ));
            for (f, form) in concept.forms.iter().enumerate() {
                rows.push(row(
                    Method::SaExact,
                    "form",
                    Some(form),
                    Some(form_rows[f].0),
                    form_rows[f].1,
                ));
            }
            for (i, s) in seqs.iter().enumerate() {
                let occ = seq_occ[i];
                let mut r = row(
                    Method::SaExact,
                    "variant",
                    Some(&concept.forms[s.form]),
                    Some(occ),
                    seq_docs[i],
                );
                r.variant = Some(s.label.clone());
                r.variant_text = Some(s.text.clone());
                r.tokens = Some(s.ids.clone());
                rows.push(r);
            }
        }
        // Each form analyzed once, each distinct analysis queried once per method.
        let analyzed: Vec<Vec<(String, u32)>> = if self.texts.is_empty() {
            Vec::new()
        } else {
            concept
                .forms
                .iter()
                .map(|f| familiar_text::analyze(f))
                .collect()
        };
        let mut distinct: Vec<&Vec<(String, u32)>> = Vec::new();
        for a in &analyzed {
            if !distinct.contains(&a) {
                distinct.push(a);
            }
        }
        for method in [Method::TextAllWords, Method::TextPhrase] {
            if !self.methods.contains(&method) {
                continue;
            }
            let relative = |a: &Vec<(String, u32)>| -> Vec<(String, u32)> {
                let base = a.first().map_or(0, |t| t.1);
                a.iter().map(|(t, p)| (t.clone(), p - base)).collect()
            };
            let mut form_counts = vec![(0u64, 0u64); distinct.len()];
            let (mut total_docs, mut shard_docs) = (0u64, Vec::new());
            for text in &self.texts {
                let mut lists = Vec::with_capacity(distinct.len());
                for (k, a) in distinct.iter().enumerate() {
                    let m = match method {
                        Method::TextPhrase => text.phrase(a)?,
                        _ => text.all_terms(&a.iter().map(|t| t.0.clone()).collect::<Vec<_>>())?,
                    };
                    form_counts[k].0 += m.occurrences.unwrap_or(0);
                    form_counts[k].1 += m.docs.len() as u64;
                    lists.push(m.docs);
                }
                let refs: Vec<&Vec<u32>> = lists.iter().collect();
                let u = union_sorted(&refs);
                total_docs += u.len() as u64;
                shard_docs.push(u);
            }
            docs.docs[method.slot()] = shard_docs;
            let occurrences = |k: usize| (method == Method::TextPhrase).then_some(form_counts[k].0);
            // Distinct start positions: a phrase's occurrences are contained in those of any
            // other phrase that is its prefix (same start); no other two phrases share a start.
            let total_occ = (method == Method::TextPhrase).then(|| {
                let rel: Vec<Vec<(String, u32)>> = distinct.iter().map(|a| relative(a)).collect();
                (0..rel.len())
                    .filter(|&k| {
                        !(0..rel.len()).any(|j| {
                            j != k && rel[j].len() < rel[k].len() && rel[k].starts_with(&rel[j])
                        })
                    })
                    .map(|k| form_counts[k].0)
                    .sum()
            });
            rows.push(row(method, "concept", None, total_occ, total_docs));
            for (f, form) in concept.forms.iter().enumerate() {
                let k = distinct
                    .iter()
                    .position(|a| **a == analyzed[f])
                    .ok_or_else(|| Error::Bug("analysis".into()))?;
                rows.push(row(
                    method,
                    "form",
                    Some(form),
                    occurrences(k),
                    form_counts[k].1,
                ));
            }
        }
        Ok((rows, docs))
    }

    /// Counts every concept of `lexicon` and, for `pairs` (line, a, b), their co-occurrence.
    pub fn run(
        &self,
        lexicon: &Lexicon,
        pairs: &[(u64, u64, u64)],
        options: &CountOptions,
    ) -> Result<Counts> {
        self.run_with_progress(lexicon, pairs, options, &|_| {})
    }

    /// [`Counter::run`], telling `on_progress` of each concept and pair counted.
    pub fn run_with_progress(
        &self,
        lexicon: &Lexicon,
        pairs: &[(u64, u64, u64)],
        options: &CountOptions,
        on_progress: &(dyn Fn(CountEvent) + Sync),
    ) -> Result<Counts> {
        let paired: std::collections::HashSet<u64> =
            pairs.iter().flat_map(|&(_, a, b)| [a, b]).collect();
        let cache: Mutex<(usize, HashMap<u64, ConceptDocs>)> = Mutex::new((0, HashMap::new()));
        on_progress(CountEvent::Start {
            stage: "concepts",
            total: lexicon.concepts.len() as u64,
        });
        let results: Vec<Vec<FrequencyRow>> = lexicon
            .concepts
            .par_iter()
            .map(|c| {
                options.check_cancel()?;
                let (rows, docs) = self.concept(c)?;
                if paired.contains(&c.id) {
                    let mut g = cache
                        .lock()
                        .map_err(|_| Error::Bug("pair cache poisoned".into()))?;
                    let bytes = docs.bytes();
                    if g.0 + bytes <= options.pair_cache_bytes {
                        g.0 += bytes;
                        g.1.insert(c.id, docs);
                    }
                }
                on_progress(CountEvent::Done);
                Ok(rows)
            })
            .collect::<Result<_>>()?;
        on_progress(CountEvent::Finish);
        let cache = cache
            .into_inner()
            .map_err(|_| Error::Bug("pair cache poisoned".into()))?
            .1;
        on_progress(CountEvent::Start {
            stage: "pairs",
            total: pairs.len() as u64,
        });
        let methods: Vec<Method> = self.methods.clone();
        let cooccurrences: Vec<Vec<CooccurrenceRow>> = pairs
            .par_iter()
            .map(|&(line, a, b)| {
                options.check_cancel()?;
                let get = |id: u64| -> Result<std::borrow::Cow<'_, ConceptDocs>> {
                    match cache.get(&id) {
                        Some(d) => Ok(std::borrow::Cow::Borrowed(d)),
                        None => {
                            let c = lexicon
                                .concepts
                                .get(id as usize)
                                .ok_or_else(|| Error::Bug(format!("no concept {id}")))?;
                            Ok(std::borrow::Cow::Owned(self.concept(c)?.1))
                        }
                    }
                };
                let (da, db) = (get(a)?, get(b)?);
                let rows = methods
                    .iter()
                    .map(|&m| {
                        let (sa, sb) = (&da.docs[m.slot()], &db.docs[m.slot()]);
                        CooccurrenceRow {
                            line,
                            concept_a: a,
                            concept_b: b,
                            method: m,
                            documents_a: da.documents(m),
                            documents_b: db.documents(m),
                            documents_both: sa
                                .iter()
                                .zip(sb)
                                .map(|(x, y)| intersect_count(x, y))
                                .sum(),
                        }
                    })
                    .collect();
                on_progress(CountEvent::Done);
                Ok(rows)
            })
            .collect::<Result<_>>()?;
        on_progress(CountEvent::Finish);
        let documents = self.index.documents();
        Ok(Counts {
            frequencies: results.into_iter().flatten().collect(),
            cooccurrences: cooccurrences.into_iter().flatten().collect(),
            corpus_documents: documents,
            corpus_tokens: self.index.manifest().tokens - documents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_variants_are_distinct_and_ordered() {
        let v = case_variants("new york");
        let labels: Vec<&str> = v.iter().map(|x| x.0).collect();
        assert_eq!(labels, ["as_written", "capitalized", "title"]);
        assert_eq!(v[2].1, "New York");
        let v = case_variants("NASA");
        assert_eq!(
            v.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(),
            ["NASA", "nasa"]
        );
    }

    #[test]
    fn unions_and_intersections() {
        assert_eq!(
            union_sorted(&[&vec![1u64, 3, 5], &vec![2, 3, 6]]),
            vec![1, 2, 3, 5, 6]
        );
        assert_eq!(intersect_count(&[1, 3, 5, 7], &[3, 4, 5, 8]), 2);
        assert_eq!(intersect_count(&[], &[1]), 0);
    }
}
