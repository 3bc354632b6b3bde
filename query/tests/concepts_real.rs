//! Extended test on real text: PARAREL/T-REx subject and object names counted in Wikipedia
//! articles from `../shared/data` by every method, checking that the methods agree where they must.
//! Skips (with a message) when `../shared/data` is absent, as in a user's clone.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use familiar::index::Index;
use familiar_index_builder::build::{build, BuildOptions};
use familiar_query::concepts::count::{CountOptions, Counter, Method};
use familiar_query::concepts::lexicon::{normalize, read_pairs, Lexicon};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data");
const ARTICLES: usize = 1500;
const FACTS_PER_RELATION: usize = 60;

fn data() -> Option<PathBuf> {
    let d = Path::new(DATA);
    if d.join("corpus").join("enwiki-0000.jsonl.zst").exists()
        && d.join("eval/pararel/facts").exists()
    {
        Some(d.to_path_buf())
    } else {
        eprintln!("skipping: {DATA} is absent (the real-data tests need ../shared/data)");
        None
    }
}

#[test]
fn pararel_entities_in_wikipedia_methods_agree() {
    let Some(data) = data() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // The first articles of one Wikipedia shard.
    let raw =
        zstd::decode_all(std::fs::File::open(data.join("corpus/enwiki-0000.jsonl.zst")).unwrap())
            .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let corpus = tmp.path().join("enwiki.jsonl");
    let mut f = std::fs::File::create(&corpus).unwrap();
    for line in text.lines().take(ARTICLES) {
        writeln!(f, "{line}").unwrap();
    }
    drop(f);
    let idx = tmp.path().join("index");
    let options = BuildOptions::new(
        data.join("tokenizers/gpt2.json"),
        &idx,
        vec![corpus.display().to_string()],
    );
    build(&options).unwrap();
    let index = Index::open(&idx).unwrap();

    // Subjects and objects of the first facts of every relation: concepts; the facts: pairs.
    let mut facts_dir: Vec<PathBuf> = std::fs::read_dir(data.join("eval/pararel/facts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    facts_dir.sort();
    let (mut names, mut seen, mut pairs) = (Vec::new(), HashSet::new(), Vec::new());
    for file in &facts_dir {
        let body = std::fs::read_to_string(file).unwrap();
        for line in body.lines().take(FACTS_PER_RELATION) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let (s, o) = (
                v["sub_label"].as_str().unwrap(),
                v["obj_label"].as_str().unwrap(),
            );
            for label in [s, o] {
                let n = normalize(label);
                if !n.is_empty() && seen.insert(n) {
                    names.push(label.to_string());
                }
            }
            pairs.push((s.to_string(), o.to_string()));
        }
    }
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let lexicon_text: String = std::iter::once("concept\n".to_string())
        .chain(names.iter().map(|n| format!("{}\n", q(n))))
        .collect();
    let lexicon_path = tmp.path().join("pararel.csv");
    std::fs::write(&lexicon_path, lexicon_text).unwrap();
    let pairs_text: String = std::iter::once("concept_a,concept_b\n".to_string())
        .chain(
            pairs
                .iter()
                .filter(|(s, o)| !normalize(s).is_empty() && !normalize(o).is_empty())
                .map(|(s, o)| format!("{},{}\n", q(s), q(o))),
        )
        .collect();
    let pairs_path = tmp.path().join("pairs.csv");
    std::fs::write(&pairs_path, pairs_text).unwrap();
    let lexicon = Lexicon::read(&lexicon_path).unwrap();
    let pairs = read_pairs(&pairs_path, &lexicon).unwrap();
    assert!(lexicon.concepts.len() > 1000, "{}", lexicon.concepts.len());

    let counts = Counter::new(&index, &Method::ALL)
        .unwrap()
        .run(&lexicon, &pairs, &CountOptions::default())
        .unwrap();
    let get = |id: u64, m: Method, level: &str| {
        counts
            .frequencies
            .iter()
            .find(|r| r.concept_id == id && r.method == m && r.level == level)
            .unwrap()
    };
    let (mut found, mut equal) = (0, 0);
    for c in &lexicon.concepts {
        let sa = get(c.id, Method::SaExact, "concept");
        let phrase = get(c.id, Method::TextPhrase, "concept");
        let words = get(c.id, Method::TextAllWords, "concept");
        // A phrase's documents contain all its words.
        assert!(
            phrase.documents <= words.documents,
            "{}: {phrase:?} {words:?}",
            c.name
        );
        // Whole-word token matches are phrase matches once case and inflection are ignored.
        assert!(
            sa.documents <= phrase.documents,
            "{}: {sa:?} {phrase:?}",
            c.name
        );
        assert!(
            sa.occurrences.unwrap() <= phrase.occurrences.unwrap(),
            "{}",
            c.name
        );
        assert!(sa.documents <= sa.occurrences.unwrap());
        if sa.documents > 0 {
            found += 1;
        }
        if sa.documents == phrase.documents {
            equal += 1;
        }
    }
    eprintln!(
        "{} concepts: {found} found by sa_exact; sa_exact and text_phrase agree on documents for {equal}",
        lexicon.concepts.len()
    );
    assert!(found > lexicon.concepts.len() / 4, "{found}");
    for r in &counts.cooccurrences {
        assert!(
            r.documents_both <= r.documents_a.min(r.documents_b),
            "{r:?}"
        );
    }
    assert!(counts.cooccurrences.iter().any(|r| r.documents_both > 0));
}
