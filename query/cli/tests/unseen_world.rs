//! Attribution with the defaults on a world that is not the fixture world.
//!
//! The fixture world (`index-builder/src/fixtures.rs`) is pseudo-words from syllables, facts
//! stated as "The capital of X is Y." whose answers are spelled with tokens of their own, a BPE
//! tokenizer of 2,048 entries trained before the facts were added, and a model trained 2,000
//! steps. Settings tuned there can fail elsewhere (issue 14: on 420 documents of real text with
//! the GPT-2 tokenizer the old defaults, rank 8 and `identity`, ranked the stating document first
//! for 1 fact of 20). So this world differs in every part:
//!
//! - text: English sentences from a small grammar (determiners, adjectives, nouns of a
//!   document's topic, verbs, prepositions, clauses joined by conjunctions, dialogue), topics per
//!   document, Zipf-distributed word choice — real words, not syllable strings;
//! - facts: three other templates ("X grew up in the village of Y.", "X is married to Y.", "X
//!   works as a Y."), invented two-word names as subjects, and answers that are new words
//!   spelled with pieces other words use (invented places; given names made of the same pieces
//!   as every subject's) or common words the rest of the corpus uses too (occupations), each fact
//!   stated in exactly one document;
//! - tokenizer: byte-level BPE of another size (1,000 entries) trained on the corpus *with* the
//!   facts, so answers are spelled with shared pieces, as a real tokenizer spells new names;
//! - model: `familiar train` with its defaults but fewer steps.
//!
//! The tests run the CLI with no attribution option at all, and check that the old defaults do
//! much worse on the same world (so that they can fail), on two worlds of this kind: 420
//! documents and a model trained 150 steps, which knows almost none of its facts (so the answer's
//! tokens decide), and 120 shorter documents and a model trained 600 steps (about 50 passes),
//! which knows 40–60 % of them (seeds 7, 11, 12): there the stating document is found because
//! it taught the model. `sweep` (ignored) measures every configuration on such a world or on the
//! fixture world; its numbers are in benches/README.md.

#![allow(clippy::unwrap_used)]

mod util;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::{StringArray, UInt64Array};
use familiar::rng::SplitMix64;
use util::*;

// ---------------------------------------------------------------------------------------------
// The generator.

const DETERMINERS: &[&str] = &[
    "the", "a", "his", "her", "their", "that", "this", "every", "one", "our", "some", "each",
];
const ADJECTIVES: &[&str] = &[
    "old", "small", "young", "large", "quiet", "dark", "bright", "cold", "long", "warm", "heavy",
    "narrow", "green", "white", "red", "empty", "tired", "strange", "wide", "black", "broken",
    "gentle", "proud", "poor", "clean", "wet", "dry", "early", "happy", "hidden", "distant",
    "golden", "silent", "bitter", "sudden", "steep", "crooked", "simple", "patient", "careful",
];
const GENERAL_NOUNS: &[&str] = &[
    "man", "woman", "child", "house", "door", "road", "day", "night", "friend", "window", "table",
    "letter", "hand", "voice", "year", "morning", "stranger", "family", "story", "room", "light",
    "bag", "coat", "wall", "fire", "dog", "cart", "basket", "key", "chair",
];
/// Topics: their nouns, most frequent first.
const TOPICS: &[&[&str]] = &[
    &[
        "farmer", "field", "barn", "horse", "cow", "sheep", "harvest", "wheat", "fence", "orchard",
        "goat", "hay", "mill", "plough", "shepherd", "meadow", "calf", "pig", "gardener", "seed",
    ],
    &[
        "sailor",
        "ship",
        "harbour",
        "wave",
        "net",
        "boat",
        "storm",
        "captain",
        "island",
        "shore",
        "anchor",
        "sail",
        "tide",
        "fisherman",
        "deck",
        "rope",
        "gull",
        "lighthouse",
        "oar",
        "dock",
    ],
    &[
        "market", "street", "baker", "merchant", "shop", "bread", "square", "church", "inn",
        "clerk", "tailor", "bridge", "butcher", "coin", "lantern", "porter", "banker", "stall",
        "cook", "cart",
    ],
    &[
        "song", "band", "violin", "drum", "flute", "harp", "singer", "hall", "concert", "tune",
        "dance", "piano", "choir", "trumpet", "cello", "guitar", "organ", "painter", "stage",
        "fiddle",
    ],
    &[
        "soldier",
        "king",
        "castle",
        "army",
        "sword",
        "battle",
        "tower",
        "queen",
        "knight",
        "gate",
        "banner",
        "horn",
        "siege",
        "judge",
        "prisoner",
        "guard",
        "crown",
        "shield",
        "messenger",
        "blacksmith",
    ],
    &[
        "doctor", "nurse", "patient", "fever", "medicine", "book", "lamp", "teacher", "school",
        "lesson", "student", "map", "desk", "clock", "potter", "weaver", "bottle", "chalk",
        "library", "miner",
    ],
    &[
        "tree",
        "river",
        "hill",
        "forest",
        "bird",
        "wolf",
        "stream",
        "stone",
        "path",
        "hunter",
        "deer",
        "fox",
        "valley",
        "owl",
        "cave",
        "lake",
        "snow",
        "moss",
        "bear",
        "carpenter",
    ],
];
const TRANSITIVE: &[&str] = &[
    "saw",
    "carried",
    "found",
    "watched",
    "built",
    "sold",
    "opened",
    "lost",
    "followed",
    "called",
    "brought",
    "left",
    "held",
    "pulled",
    "visited",
    "crossed",
    "guarded",
    "fed",
    "bought",
    "painted",
    "mended",
    "feared",
    "remembered",
    "cleaned",
    "counted",
    "heard",
    "chased",
    "hid",
    "loved",
    "praised",
];
const INTRANSITIVE: &[&str] = &[
    "waited", "slept", "laughed", "sang", "walked", "ran", "rested", "worked", "fell", "stayed",
    "returned", "arrived", "smiled", "listened", "wandered", "prayed", "shouted", "wept",
];
const ADVERBS: &[&str] = &[
    "slowly",
    "quickly",
    "often",
    "again",
    "quietly",
    "together",
    "carefully",
    "alone",
    "gladly",
    "never",
    "always",
    "softly",
];
const PREPOSITIONS: &[&str] = &[
    "near", "under", "behind", "across", "beside", "through", "over", "into", "along", "past",
    "toward", "around",
];
const CONJUNCTIONS: &[&str] = &["and", "but", "while", "because", "so", "until", "when"];
const TIMES: &[&str] = &[
    "In the morning",
    "At night",
    "Later",
    "That winter",
    "Every spring",
    "After the storm",
    "Before dawn",
    "On the third day",
    "Years ago",
    "In the evening",
];
const PRONOUNS: &[&str] = &["he", "she", "they", "we", "it"];
const SAYINGS: &[&str] = &[
    "Come here",
    "Wait for me",
    "It is late",
    "Look at that",
    "We must go",
    "Not again",
    "Listen",
    "Where is it",
    "Tell me more",
    "Go home",
];

/// Occupations (answers of `occupation`): all of them nouns of the topics above too.
const OCCUPATIONS: &[&str] = &[
    "baker",
    "farmer",
    "sailor",
    "teacher",
    "doctor",
    "nurse",
    "tailor",
    "soldier",
    "merchant",
    "potter",
    "weaver",
    "miner",
    "carpenter",
    "fisherman",
    "hunter",
    "clerk",
    "painter",
    "butcher",
    "blacksmith",
    "shepherd",
    "gardener",
    "judge",
    "banker",
    "cook",
    "porter",
];
/// Invented names: given names, family names and places from pieces of their own.
const GIVEN: &[&str] = &[
    "ar", "bel", "dar", "el", "fen", "gar", "hal", "ir", "jor", "kal", "lor", "mar", "nel", "or",
    "per", "ros", "sel", "tam", "ul", "vin", "wen", "ys",
];
const FAMILY_HEAD: &[&str] = &[
    "ash", "black", "bright", "corn", "dun", "fair", "green", "hart", "iron", "kings", "long",
    "mor", "north", "oak", "red", "stan", "thorn", "west", "whit", "wood",
];
const FAMILY_TAIL: &[&str] = &[
    "brook", "dale", "field", "gate", "hill", "ley", "ridge", "stone", "well", "wick", "more",
];
const PLACE_HEAD: &[&str] = &[
    "bram", "cal", "dove", "elm", "fal", "glen", "hol", "kes", "lin", "nor", "pen", "rav", "tarn",
    "wyn", "yar", "quen", "mal", "sor",
];
const PLACE_TAIL: &[&str] = &[
    "by", "bury", "combe", "den", "ham", "mouth", "stead", "thorpe", "worth", "haven", "mere",
];

/// A relation: name, template before the subject, between subject and object, after the object.
const RELATIONS: &[(&str, &str, &str, &str)] = &[
    ("hometown", "", " grew up in the village of", "."),
    ("occupation", "", " works as a", "."),
    ("spouse", "", " is married to", "."),
];

/// What to generate.
#[derive(Debug, Clone)]
struct WorldSpec {
    seed: u64,
    documents: usize,
    facts_per_relation: usize,
    /// Sentences per document: log-uniform between these.
    sentences: (usize, usize),
    tokenizer_vocab: usize,
}

impl Default for WorldSpec {
    fn default() -> Self {
        WorldSpec {
            seed: 7,
            documents: 420,
            facts_per_relation: 20,
            sentences: (3, 60),
            tokenizer_vocab: 1000,
        }
    }
}

#[derive(Debug, Clone)]
struct Fact {
    relation: &'static str,
    subject: String,
    object: String,
    document: u64,
}

#[derive(Debug)]
struct World {
    texts: Vec<String>,
    facts: Vec<Fact>,
}

/// A Zipf draw (exponent 1) among the first `n` ranks.
fn zipf(rng: &mut SplitMix64, n: usize) -> usize {
    let total: f64 = (1..=n).map(|r| 1.0 / r as f64).sum();
    let mut u = rng.unit() * total;
    for r in 1..=n {
        u -= 1.0 / r as f64;
        if u <= 0.0 {
            return r - 1;
        }
    }
    n - 1
}

fn pick<'a>(rng: &mut SplitMix64, words: &[&'a str]) -> &'a str {
    words[zipf(rng, words.len())]
}

fn uniform<'a>(rng: &mut SplitMix64, words: &[&'a str]) -> &'a str {
    words[rng.below(words.len() as u64) as usize]
}

fn capitalize(w: &str) -> String {
    let mut c = w.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn noun_phrase(rng: &mut SplitMix64, topic: &[&str]) -> String {
    let noun = if rng.below(10) < 7 {
        pick(rng, topic)
    } else if rng.below(2) == 0 {
        pick(rng, GENERAL_NOUNS)
    } else {
        let other = TOPICS[rng.below(TOPICS.len() as u64) as usize];
        pick(rng, other)
    };
    let det = pick(rng, DETERMINERS);
    let np = if rng.below(3) == 0 {
        format!("{} {noun}", pick(rng, ADJECTIVES))
    } else {
        noun.to_string()
    };
    if det == "a" && np.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {np}")
    } else {
        format!("{det} {np}")
    }
}

fn subject(rng: &mut SplitMix64, topic: &[&str]) -> String {
    if rng.below(4) == 0 {
        uniform(rng, PRONOUNS).to_string()
    } else {
        noun_phrase(rng, topic)
    }
}

fn clause(rng: &mut SplitMix64, topic: &[&str]) -> String {
    let s = subject(rng, topic);
    let mut c = if rng.below(5) < 3 {
        format!("{s} {} {}", pick(rng, TRANSITIVE), noun_phrase(rng, topic))
    } else {
        let mut c = format!("{s} {}", pick(rng, INTRANSITIVE));
        if rng.below(3) == 0 {
            c = format!("{c} {}", pick(rng, ADVERBS));
        }
        c
    };
    if rng.below(2) == 0 {
        c = format!(
            "{c} {} {}",
            pick(rng, PREPOSITIONS),
            noun_phrase(rng, topic)
        );
    }
    c
}

fn sentence(rng: &mut SplitMix64, topic: &[&str]) -> String {
    match rng.below(10) {
        0..=4 => format!("{}.", capitalize(&clause(rng, topic))),
        5 => format!("{}, {}.", pick(rng, TIMES), clause(rng, topic)),
        6 | 7 => format!(
            "{}, {} {}.",
            capitalize(&clause(rng, topic)),
            pick(rng, CONJUNCTIONS),
            clause(rng, topic)
        ),
        8 => format!(
            "There was {} {} {}.",
            noun_phrase(rng, topic),
            pick(rng, PREPOSITIONS),
            noun_phrase(rng, topic)
        ),
        _ => format!(
            "\"{},\" said {}.",
            uniform(rng, SAYINGS),
            noun_phrase(rng, topic)
        ),
    }
}

/// `n` distinct capitalized words `head + tail`, none in `taken` (which they join).
fn names(
    rng: &mut SplitMix64,
    n: usize,
    heads: &[&str],
    tails: &[&str],
    taken: &mut HashSet<String>,
) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let w = capitalize(&format!("{}{}", uniform(rng, heads), uniform(rng, tails)));
        if taken.insert(w.to_lowercase()) {
            out.push(w);
        }
    }
    out
}

/// `n` distinct entries of `words` in random order.
fn distinct<'a>(rng: &mut SplitMix64, n: usize, words: &[&'a str]) -> Vec<&'a str> {
    let mut w = words.to_vec();
    for i in 0..w.len() {
        let j = i + rng.below((w.len() - i) as u64) as usize;
        w.swap(i, j);
    }
    w.truncate(n);
    w
}

fn generate(spec: &WorldSpec) -> World {
    let mut rng = SplitMix64::new(spec.seed);
    let (lo, hi) = (spec.sentences.0 as f64, spec.sentences.1 as f64);
    let mut docs: Vec<Vec<String>> = (0..spec.documents)
        .map(|_| {
            let topic = TOPICS[zipf(&mut rng, TOPICS.len())];
            let n = (lo * (hi / lo).powf(rng.unit())).round() as usize;
            (0..n.max(1)).map(|_| sentence(&mut rng, topic)).collect()
        })
        .collect();
    // Every word of the filler is taken: invented names must be new words.
    let mut taken: HashSet<String> = docs
        .iter()
        .flatten()
        .flat_map(|s| {
            s.split(|c: char| !c.is_alphanumeric())
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .collect();
    let n = spec.facts_per_relation;
    let mut facts = Vec::new();
    let mut free: Vec<usize> = (0..docs.len()).collect();
    for (relation, before, between, after) in RELATIONS {
        let given = names(&mut rng, n, GIVEN, GIVEN, &mut taken);
        let family = names(&mut rng, n, FAMILY_HEAD, FAMILY_TAIL, &mut taken);
        let objects: Vec<String> = match *relation {
            "hometown" => names(&mut rng, n, PLACE_HEAD, PLACE_TAIL, &mut taken),
            "occupation" => distinct(&mut rng, n, OCCUPATIONS)
                .into_iter()
                .map(String::from)
                .collect(),
            // Given names, spelled with the pieces of every subject's given name.
            _ => names(&mut rng, n, GIVEN, GIVEN, &mut taken),
        };
        assert_eq!(objects.len(), n, "{relation}: not enough distinct answers");
        for ((g, f), object) in given.iter().zip(&family).zip(objects) {
            let subject = format!("{g} {f}");
            let d = free.swap_remove(rng.below(free.len() as u64) as usize);
            let at = rng.below(docs[d].len() as u64 + 1) as usize;
            docs[d].insert(at, format!("{before}{subject}{between} {object}{after}"));
            facts.push(Fact {
                relation,
                subject,
                object,
                document: d as u64,
            });
        }
    }
    World {
        texts: docs.into_iter().map(|s| s.join(" ")).collect(),
        facts,
    }
}

impl World {
    /// The factual queries, JSONL: one per fact, ids `{relation}-{nn}` in the order of `facts`.
    fn queries(&self) -> String {
        let mut out = String::new();
        for (i, f) in self.facts.iter().enumerate() {
            let (_, before, between, _) = RELATIONS.iter().find(|r| r.0 == f.relation).unwrap();
            let k = self.facts[..i]
                .iter()
                .filter(|g| g.relation == f.relation)
                .count()
                + 1;
            out.push_str(
                &serde_json::json!({
                    "id": format!("{}-{k:02}", f.relation),
                    "prompt": format!("{before}{}{between}", f.subject),
                    "completion": format!(" {}", f.object),
                    "kind": "factual",
                    "task": f.relation,
                    "answer": f.object,
                })
                .to_string(),
            );
            out.push('\n');
        }
        out
    }

    /// Query id → the document stating its fact.
    fn truth(&self) -> Vec<(String, u64)> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        self.facts
            .iter()
            .map(|f| {
                let k = seen.entry(f.relation).or_insert(0);
                *k += 1;
                (format!("{}-{k:02}", f.relation), f.document)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Running the CLI.

/// A built world: its index, model, queries and truth.
struct Built {
    index: PathBuf,
    model: PathBuf,
    queries: PathBuf,
    truth: Vec<(String, u64)>,
}

/// Writes the world's corpus, tokenizer and queries under `dir`, builds the index and trains a
/// model with `familiar train`'s defaults and `train_extra`.
fn build_world(dir: &Path, spec: &WorldSpec, train_extra: &[&str]) -> Built {
    let started = Instant::now();
    let world = generate(spec);
    let tokenizer = familiar_index_builder::fixtures::train_tokenizer(
        world.texts.iter().map(String::as_str),
        spec.tokenizer_vocab,
    )
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let tok = dir.join("tokenizer.json");
    std::fs::write(&tok, tokenizer).unwrap();
    let records: Vec<serde_json::Value> = world
        .texts
        .iter()
        .enumerate()
        .map(|(i, t)| doc(&format!("uw-{i:05}"), t))
        .collect();
    let corpus = dir.join("corpus.jsonl");
    std::fs::write(&corpus, jsonl_bytes(&records)).unwrap();
    let queries = dir.join("queries.jsonl");
    std::fs::write(&queries, world.queries()).unwrap();
    let index = dir.join("idx");
    familiar(os(&[
        &"index",
        &"build",
        &"--tokenizer",
        &tok,
        &"--out",
        &index,
        &"--no-text-index",
        &"-q",
        &corpus,
    ]))
    .success();
    eprintln!(
        "world generated and indexed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let model = dir.join("model");
    let mut args = os(&[&"train", &"--index", &index, &"--out", &model, &"-q"]);
    args.extend(train_extra.iter().map(Into::into));
    let out = familiar(args);
    out.success();
    eprintln!(
        "{} in {:.1} s",
        out.stdout.lines().next().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    Built {
        index,
        model,
        queries,
        truth: world.truth(),
    }
}

/// `attribute store` with `extra` options; returns the seconds it took.
fn store(b: &Built, out: &Path, extra: &[&str]) -> f64 {
    let started = Instant::now();
    let mut args = os(&[
        &"attribute",
        &"store",
        &"--model",
        &b.model,
        &"--index",
        &b.index,
        &"--out",
        &out,
        &"-q",
    ]);
    args.extend(extra.iter().map(Into::into));
    familiar(args).success();
    started.elapsed().as_secs_f64()
}

/// `attribute score` (top 100) with `extra` options; the rank of each fact's stating document
/// (`u64::MAX` when not in the top 100) and the seconds it took.
fn ranks(b: &Built, store: &Path, out: &Path, extra: &[&str]) -> (Vec<u64>, f64) {
    let started = Instant::now();
    let mut args = os(&[
        &"attribute",
        &"score",
        &"--store",
        &store,
        &"--model",
        &b.model,
        &"--queries",
        &b.queries,
        &"--out",
        &out,
    ]);
    args.extend(extra.iter().map(Into::into));
    familiar(args).success();
    let secs = started.elapsed().as_secs_f64();
    let t = read_parquet(&out.join("influence.parquet"), "influence");
    let (ids, docs, rank) = (
        col::<StringArray>(&t, "query_id"),
        col::<UInt64Array>(&t, "doc_id"),
        col::<UInt64Array>(&t, "rank"),
    );
    let found: HashMap<(&str, u64), u64> = (0..t.num_rows())
        .map(|i| ((ids.value(i), docs.value(i)), rank.value(i)))
        .collect();
    let ranks = b
        .truth
        .iter()
        .map(|(q, d)| found.get(&(q.as_str(), *d)).copied().unwrap_or(u64::MAX))
        .collect();
    (ranks, secs)
}

fn firsts(ranks: &[u64]) -> usize {
    ranks.iter().filter(|&&r| r == 1).count()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn generated_world_states_each_fact_once() {
    let spec = WorldSpec::default();
    let w = generate(&spec);
    assert_eq!(w.texts.len(), spec.documents);
    assert_eq!(w.facts.len(), 3 * spec.facts_per_relation);
    let docs: HashSet<u64> = w.facts.iter().map(|f| f.document).collect();
    assert_eq!(docs.len(), w.facts.len(), "one fact per document");
    for f in &w.facts {
        // The subject occurs in its document only, once; the answer follows it there.
        let holders: Vec<usize> = (0..w.texts.len())
            .filter(|&d| w.texts[d].contains(&f.subject))
            .collect();
        assert_eq!(holders, vec![f.document as usize], "{f:?}");
        assert_eq!(w.texts[f.document as usize].matches(&f.subject).count(), 1);
    }
    // Answers of a relation are distinct; occupations are words of other documents too,
    // invented places and names are not.
    for (relation, ..) in RELATIONS {
        let objects: HashSet<&str> = w
            .facts
            .iter()
            .filter(|f| f.relation == *relation)
            .map(|f| f.object.as_str())
            .collect();
        assert_eq!(objects.len(), spec.facts_per_relation);
    }
    let elsewhere = |f: &Fact| {
        (0..w.texts.len()).any(|d| {
            d as u64 != f.document
                && w.texts[d]
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|x| x == f.object)
        })
    };
    let common = w
        .facts
        .iter()
        .filter(|f| f.relation == "occupation" && elsewhere(f))
        .count();
    assert!(common * 10 >= spec.facts_per_relation * 9, "{common}");
    assert!(w
        .facts
        .iter()
        .filter(|f| f.relation != "occupation")
        .all(|f| !elsewhere(f)));
    // Deterministic.
    assert_eq!(generate(&spec).texts, w.texts);
}

/// Training steps of the test's model: `familiar train`'s defaults otherwise (fewer steps than
/// its 300, so that the whole test takes about 80 s in a debug build on 2 cores; the sweep
/// measured 150 and 300, benches/README.md).
const STEPS: &str = "150";

/// Facts whose stating document ranks first, per relation (in the order of [`RELATIONS`]).
fn firsts_per_relation(b: &Built, ranks: &[u64]) -> Vec<usize> {
    RELATIONS
        .iter()
        .map(|(relation, ..)| {
            b.truth
                .iter()
                .zip(ranks)
                .filter(|((q, _), &r)| q.starts_with(&format!("{relation}-")) && r == 1)
                .count()
        })
        .collect()
}

/// `attribute store` and `attribute score` with no attribution option rank the stating document
/// first, among 420, for most facts whose answer is a new word (an invented place or name,
/// spelled with pieces of other words), on a world that shares nothing with the fixture world;
/// the old defaults (rank 8 with the head at 8, `identity`) find far fewer. Facts whose answer is
/// a common word of the corpus (occupations) are hard for every configuration measured on this
/// model, which does not know its facts (0–4 of 20): they are only reported.
#[test]
fn defaults_find_the_stating_document_on_an_unseen_world() {
    let started = Instant::now();
    let t = TestDir::new();
    let b = build_world(&t.join("world"), &WorldSpec::default(), &["--steps", STEPS]);
    let s = t.join("store");
    let store_secs = store(&b, &s, &[]);
    let (new, score_secs) = ranks(&b, &s, &t.join("att"), &[]);
    let old = old_default_ranks(&b, &t);
    let (new_by, old_by) = (firsts_per_relation(&b, &new), firsts_per_relation(&b, &old));
    eprintln!(
        "defaults: first for {} of {} {new_by:?} (store {store_secs:.1} s, score {score_secs:.1} s); rank 8 + identity: {} {old_by:?}; {:.1} s in all",
        firsts(&new),
        new.len(),
        firsts(&old),
        started.elapsed().as_secs_f64()
    );
    // Facts whose answer is a new word: hometown and spouse (RELATIONS: hometown, occupation,
    // spouse), 40. Measured (seed 7, 150 steps): first for 34 (19 + 15) with the defaults (ekfac,
    // head rank 128; with fisher and the head at 32 it was 25); rank 8 + identity (head 8) first
    // for 8 (6 + 2).
    let new_word = |q: &str| !q.starts_with("occupation-");
    let (new_words, old_words) = (new_by[0] + new_by[2], old_by[0] + old_by[2]);
    let n = b.truth.iter().filter(|(q, _)| new_word(q)).count();
    assert_eq!(n, 40);
    assert!(
        new_words * 2 >= n,
        "defaults: first for {new_words} of {n} new-word facts ({new:?})"
    );
    assert!(
        new_words >= old_words + n / 4,
        "defaults {new_words} against rank 8 + identity {old_words} of {n}"
    );
    let top5 = b
        .truth
        .iter()
        .zip(&new)
        .filter(|((q, _), &r)| new_word(q) && r <= 5)
        .count();
    assert!(top5 * 10 >= n * 8, "{top5} of {n} in the top 5: {new:?}");
}

/// The planted documents' ranks under the old defaults: a store at rank 8 with the head at 8,
/// scored with `identity`.
fn old_default_ranks(b: &Built, t: &TestDir) -> Vec<u64> {
    let old_store = t.join("store-old");
    store(b, &old_store, &["--rank", "8", "--head-rank", "8"]);
    ranks(
        b,
        &old_store,
        &t.join("att-old"),
        &["--precondition", "identity"],
    )
    .0
}

/// Training steps of the world whose model learns its facts (about 50 passes over its corpus).
const LEARNED_STEPS: &str = "600";

/// The world of [`defaults_find_the_documents_of_facts_the_model_knows`]: 120 documents of 2–8
/// sentences (about 12,000 tokens), seed 11 — a seed no default was chosen on.
fn learned_spec() -> WorldSpec {
    WorldSpec {
        seed: 11,
        documents: 120,
        sentences: (2, 8),
        ..WorldSpec::default()
    }
}

/// The 150-step model above knows almost none of its facts (2 of 60 at 300 steps), so the test
/// above measures how much the answer's tokens overlap. Here the corpus is small enough for
/// `familiar train` to learn the facts in 600 steps: the model must know at least a quarter of
/// them (its answer likelier after its own prompt than after every other prompt of the
/// relation), and then `attribute store` and `attribute score` with no attribution option rank
/// the stating document first, among 120, for at least 90 % of all the facts and 85 % of the
/// facts the model knows; the old defaults (rank 8 with the head at 8, `identity`) find fewer.
/// Measured (seed 11): 25 known; the defaults first for 57 of 60 (20 / 17 / 20 per relation) and
/// for 24 of the 25 known, the old defaults for 16 and 6. ekfac, fisher and trackstar with
/// `--leave-one-out` must find 90 % too, and no fewer than without it (measured: 58, 56 and 55;
/// without, 57, 54 and 53).
#[test]
fn defaults_find_the_documents_of_facts_the_model_knows() {
    let t = TestDir::new();
    let b = build_world(
        &t.join("world"),
        &learned_spec(),
        &["--steps", LEARNED_STEPS],
    );
    let known = known_facts(&b);
    let n = b.truth.len();
    let n_known = known.iter().filter(|&&k| k).count();
    assert!(
        n_known * 4 >= n,
        "the model knows only {n_known} of {n} facts"
    );
    let s = t.join("store");
    store(&b, &s, &[]);
    let (new, _) = ranks(&b, &s, &t.join("att"), &[]);
    let old = old_default_ranks(&b, &t);
    let of_known = |r: &[u64]| r.iter().zip(&known).filter(|(&x, &k)| k && x == 1).count();
    let (first, first_known) = (firsts(&new), of_known(&new));
    eprintln!(
        "the model knows {n_known} of {n} facts; defaults first for {first} ({:?}), {first_known} \
         of the known; rank 8 + identity {} ({:?}), {} of the known",
        firsts_per_relation(&b, &new),
        firsts(&old),
        firsts_per_relation(&b, &old),
        of_known(&old)
    );
    assert!(
        first * 10 >= n * 9,
        "defaults: first for {first} of {n}: {new:?}"
    );
    assert!(
        first_known * 20 >= n_known * 17,
        "defaults: first for {first_known} of the {n_known} known facts"
    );
    assert!(
        first > firsts(&old) + n / 20,
        "defaults {first} against rank 8 + identity {}",
        firsts(&old)
    );
    for p in ["ekfac", "fisher", "trackstar"] {
        let (plain, _) = ranks(&b, &s, &t.join(p), &["--precondition", p]);
        let (loo, _) = ranks(
            &b,
            &s,
            &t.join(format!("{p}-loo")),
            &["--precondition", p, "--leave-one-out"],
        );
        let (plain, loo) = (firsts(&plain), firsts(&loo));
        eprintln!("{p}: first for {plain}; with --leave-one-out {loo}");
        assert!(
            loo * 10 >= n * 9 && loo >= plain,
            "{p} --leave-one-out: first for {loo} of {n} (without: {plain})"
        );
    }
}

/// A setting of the sweep from the environment.
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The fixture world: an index of the fixture corpus, the checked-in model and the planted
/// facts' queries.
fn fixture_world(dir: &Path) -> Built {
    let index = dir.join("idx");
    if !index.exists() {
        let mut args = os(&[
            &"index",
            &"build",
            &"--tokenizer",
            &fixtures().join("tokenizer.json"),
            &"--out",
            &index,
            &"--no-text-index",
            &"-q",
        ]);
        args.extend(fixture_inputs().into_iter().map(Into::into));
        familiar(args).success();
    }
    let planted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("corpus/planted.json")).unwrap())
            .unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let truth = planted["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let relation = f["relation"].as_str().unwrap().to_string();
            let k = seen.entry(relation.clone()).or_insert(0);
            *k += 1;
            (
                format!("{relation}-{k:02}"),
                f["document"].as_u64().unwrap(),
            )
        })
        .collect();
    Built {
        index,
        model: fixtures().join("models/fixture-gpt2"),
        queries: fixtures().join("attribution/queries.jsonl"),
        truth,
    }
}

/// Prints how many of the planted facts the model itself knows: its answer is likelier after its
/// own prompt than after the prompt of any other fact of the same task (the same answer tokens
/// compared, so their length and frequency do not count; chance is 1 in the task's facts), and
/// the mean fraction of the other prompts it beats (chance 0.5). A document can only have taught
/// the model a fact it knows; for one it does not, "the stating document first" measures the
/// overlap of the answer's tokens, not influence.
fn known_facts(b: &Built) -> Vec<bool> {
    let lm = familiar_models::measure::score::LanguageModel::load(&b.model).unwrap();
    let queries: Vec<serde_json::Value> = std::fs::read_to_string(&b.queries)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let field = |q: &serde_json::Value, k: &str| q[k].as_str().unwrap_or("").to_string();
    // Per task: facts known, facts, summed fraction of other prompts beaten.
    let mut tasks: Vec<(String, usize, usize, f64)> = Vec::new();
    let mut each = Vec::with_capacity(queries.len());
    for q in &queries {
        let task = field(q, "task");
        let answer = field(q, "completion");
        let lp = |prompt: &str| lm.score(prompt, &answer).unwrap().logprob;
        let own = lp(&field(q, "prompt"));
        let others: Vec<f64> = queries
            .iter()
            .filter(|o| field(o, "task") == task && field(o, "prompt") != field(q, "prompt"))
            .map(|o| lp(&field(o, "prompt")))
            .collect();
        let known = others.iter().all(|&x| x < own);
        each.push(known);
        let beaten =
            others.iter().filter(|&&x| x < own).count() as f64 / others.len().max(1) as f64;
        match tasks.iter_mut().find(|t| t.0 == task) {
            Some(t) => {
                t.1 += usize::from(known);
                t.2 += 1;
                t.3 += beaten;
            }
            None => tasks.push((task, usize::from(known), 1, beaten)),
        }
    }
    let per_task: Vec<String> = tasks
        .iter()
        .map(|(t, k, n, b)| format!("{t} {k}/{n}, {:.2}", b / *n as f64))
        .collect();
    println!(
        "facts the model knows (its answer likelier after its own prompt than after every other \
         prompt of the task): {} of {}; per task known/facts, mean fraction of prompts beaten: \
         {}\n",
        tasks.iter().map(|t| t.1).sum::<usize>(),
        queries.len(),
        per_task.join("; ")
    );
    each
}

/// Measures every configuration: `FAMILIAR_SWEEP_WORLD` = `unseen` (default) or `fixture`,
/// `FAMILIAR_SWEEP_DIR` (kept, reused when run again; default a temporary directory),
/// `FAMILIAR_SWEEP_SEED`, `FAMILIAR_SWEEP_STEPS` (training steps of the unseen world's model),
/// `FAMILIAR_SWEEP_DOCUMENTS`, `FAMILIAR_SWEEP_SENTENCES` (`LO,HI` per document),
/// `FAMILIAR_SWEEP_VOCAB`, `FAMILIAR_SWEEP_RANKS` and `FAMILIAR_SWEEP_DAMPINGS` (comma-separated),
/// `FAMILIAR_SWEEP_HEAD_RANKS` (comma-separated; each adds a store of the output head alone, its
/// vocabulary side at that rank, scored with ekfac). Prints how many facts the model itself
/// knows, then a Markdown table: facts whose stating document ranks first, in the top 5, store
/// size and the seconds of each command.
#[test]
#[ignore = "measurement: minutes per rank"]
fn sweep() {
    let t = TestDir::new();
    let dir = std::env::var("FAMILIAR_SWEEP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| t.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let world = env_or("FAMILIAR_SWEEP_WORLD", "unseen");
    let b = if world == "fixture" {
        fixture_world(&dir)
    } else {
        let d = WorldSpec::default();
        let sentences = env_or(
            "FAMILIAR_SWEEP_SENTENCES",
            &format!("{},{}", d.sentences.0, d.sentences.1),
        );
        let (lo, hi) = sentences
            .split_once(',')
            .expect("FAMILIAR_SWEEP_SENTENCES: LO,HI");
        let spec = WorldSpec {
            seed: env_or("FAMILIAR_SWEEP_SEED", "7").parse().unwrap(),
            tokenizer_vocab: env_or("FAMILIAR_SWEEP_VOCAB", "1000").parse().unwrap(),
            documents: env_or("FAMILIAR_SWEEP_DOCUMENTS", &d.documents.to_string())
                .parse()
                .unwrap(),
            sentences: (lo.parse().unwrap(), hi.parse().unwrap()),
            ..d
        };
        let steps = env_or("FAMILIAR_SWEEP_STEPS", "300");
        let w = dir.join("world");
        if w.join("model/trainer_state.json").exists() {
            let world = generate(&spec);
            Built {
                index: w.join("idx"),
                model: w.join("model"),
                queries: w.join("queries.jsonl"),
                truth: world.truth(),
            }
        } else {
            build_world(&w, &spec, &["--steps", &steps])
        }
    };
    let ranks_list = env_or("FAMILIAR_SWEEP_RANKS", "8,16,32");
    let dampings = env_or("FAMILIAR_SWEEP_DAMPINGS", "0.001,0.01,0.1,1");
    let head_ranks = env_or("FAMILIAR_SWEEP_HEAD_RANKS", "");
    let known = known_facts(&b);
    println!(
        "| rank | preconditioner | first (of {}) | first of the {} known | top 5 | store | store s | score s |",
        b.truth.len(),
        known.iter().filter(|&&k| k).count()
    );
    println!("|---|---|---|---|---|---|---|---|");
    for rank in ranks_list.split(',') {
        let s = dir.join(format!("store-{rank}"));
        let store_secs = if s.join("store.json").exists() {
            f64::NAN
        } else {
            store(&b, &s, &["--rank", rank])
        };
        // With the optimizer's state beside the model (a model `familiar train` trained), a
        // second store whose rows are corrected by it (TrackStar's correction).
        let corrected = b.model.join("optimizer.safetensors").exists().then(|| {
            let c = dir.join(format!("store-{rank}-optimizer"));
            let secs = if c.join("store.json").exists() {
                f64::NAN
            } else {
                store(&b, &c, &["--rank", rank, "--optimizer-correction"])
            };
            (c, secs)
        });
        if corrected.is_none() {
            eprintln!(
                "{}: no optimizer state, so no optimizer-corrected store",
                b.model.display()
            );
        }
        let mut configs: Vec<(String, PathBuf, Vec<String>)> = vec![
            (
                "identity".into(),
                s.clone(),
                vec!["--precondition".into(), "identity".into()],
            ),
            (
                "cosine".into(),
                s.clone(),
                vec!["--precondition".into(), "cosine".into()],
            ),
        ];
        for d in dampings.split(',') {
            for p in ["fisher", "ekfac", "trackstar"] {
                let args = vec![
                    "--precondition".into(),
                    p.into(),
                    "--damping".into(),
                    d.into(),
                ];
                // Each also under the curvature without each document's term.
                let loo = {
                    let mut a = args.clone();
                    a.push("--leave-one-out".into());
                    Some((format!("{p}-loo λ {d}"), a))
                };
                configs.push((format!("{p} λ {d}"), s.clone(), args.clone()));
                configs.extend(loo.iter().map(|(n, a)| (n.clone(), s.clone(), a.clone())));
                if let Some((c, _)) = &corrected {
                    configs.push((
                        format!("{p} λ {d}, optimizer-corrected rows"),
                        c.clone(),
                        args,
                    ));
                    configs.extend(
                        loo.map(|(n, a)| (format!("{n}, optimizer-corrected rows"), c.clone(), a)),
                    );
                }
            }
        }
        for hr in head_ranks.split(',').filter(|h| !h.is_empty()) {
            let h = dir.join(format!("store-{rank}-head-{hr}"));
            if !h.join("store.json").exists() {
                store(
                    &b,
                    &h,
                    &["--rank", rank, "--layers", "output", "--head-rank", hr],
                );
            }
            for d in dampings.split(',') {
                configs.push((
                    format!("output head only, head rank {hr}: ekfac λ {d}"),
                    h.clone(),
                    vec![
                        "--precondition".into(),
                        "ekfac".into(),
                        "--damping".into(),
                        d.into(),
                    ],
                ));
            }
        }
        for (name, s, args) in configs {
            // Each configuration's own store: its size, and the build's seconds for the main one.
            let size = dir_bytes(&s);
            let rows = std::fs::metadata(s.join("grads-00000.bin")).unwrap().len();
            let store_secs = match &corrected {
                Some((c, secs)) if *c == s => *secs,
                _ => store_secs,
            };
            // A store found from an earlier run was not timed.
            let store_secs = if store_secs.is_nan() {
                "–".to_string()
            } else {
                format!("{store_secs:.1}")
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = dir.join(format!("att-{rank}-{}", name.replace([' ', ','], "_")));
            let (r, secs) = ranks(&b, &s, &out, &args);
            // Per task (the query id's prefix), in order of first appearance.
            let mut tasks: Vec<(&str, usize)> = Vec::new();
            for ((q, _), &x) in b.truth.iter().zip(&r) {
                let task = q.rsplit_once('-').map_or(q.as_str(), |p| p.0);
                match tasks.iter_mut().find(|t| t.0 == task) {
                    Some(t) => t.1 += usize::from(x == 1),
                    None => tasks.push((task, usize::from(x == 1))),
                }
            }
            let per_task: Vec<String> = tasks.iter().map(|t| t.1.to_string()).collect();
            println!(
                "| {rank} | {name} | {} ({}) | {} | {} | {:.1} MB (rows {:.1} MB) | {store_secs} | {secs:.1} |",
                firsts(&r),
                per_task.join(" / "),
                r.iter().zip(&known).filter(|(&x, &k)| k && x == 1).count(),
                r.iter().filter(|&&x| x <= 5).count(),
                size as f64 / 1e6,
                rows as f64 / 1e6,
            );
        }
    }
}
