//! Concept frequencies on the fixture corpus against its planted ground truth and against brute
//! force over the analyzed text; the `familiar concepts` commands end to end.

#![allow(clippy::unwrap_used)]

mod util;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use familiar::index::Index;
use familiar_query::concepts::count::{CountOptions, Counter, Counts, FrequencyRow, Method};
use familiar_query::concepts::lexicon::{read_pairs, Lexicon};
use familiar_query::concepts::lookup::{lookup, Mode};
use util::*;

fn lexicon() -> Lexicon {
    Lexicon::read(&fixtures().join("concepts").join("planted.csv")).unwrap()
}

fn count(idx: &Path, lex: &Lexicon) -> Counts {
    let index = Index::open(idx).unwrap();
    let pairs = read_pairs(&fixtures().join("concepts").join("pairs.csv"), lex).unwrap();
    assert!(pairs.len() >= 10);
    Counter::new(&index, &Method::ALL)
        .unwrap()
        .run(lex, &pairs, &CountOptions::default())
        .unwrap()
}

fn rows<'a>(
    counts: &'a Counts,
    concept: u64,
    method: Method,
    level: &str,
) -> Vec<&'a FrequencyRow> {
    counts
        .frequencies
        .iter()
        .filter(|r| r.concept_id == concept && r.method == method && r.level == level)
        .collect()
}

#[test]
fn sa_exact_recovers_the_planted_counts_on_one_and_many_shards() {
    let (_, planted) = planted();
    let lex = lexicon();
    for idx in [fixture_index(), fixture_index_sharded()] {
        let counts = count(idx, &lex);
        for p in &planted {
            let c = lex
                .concepts
                .iter()
                .find(|c| c.name == p.text.to_lowercase())
                .unwrap();
            let total = rows(&counts, c.id, Method::SaExact, "concept");
            assert_eq!(total.len(), 1);
            assert_eq!(
                (total[0].occurrences, total[0].documents),
                (Some(p.occurrences), p.documents),
                "{} in {}",
                p.text,
                idx.display()
            );
            // Every form finds all of them: the name (by its capitalized variants) and, for
            // concepts, the first word alone, which occurs nowhere else.
            let forms = rows(&counts, c.id, Method::SaExact, "form");
            assert_eq!(forms.len(), c.forms.len());
            for f in forms {
                assert_eq!(
                    (f.occurrences, f.documents),
                    (Some(p.occurrences), p.documents)
                );
            }
            // Exactly one variant (the one written in the corpus) has them; the rest have none.
            let variants = rows(&counts, c.id, Method::SaExact, "variant");
            let with: Vec<_> = variants
                .iter()
                .filter(|v| v.form.as_deref() == Some(c.name.as_str()))
                .filter(|v| v.occurrences != Some(0))
                .collect();
            assert_eq!(with.len(), 1, "{:?}", variants);
            assert_eq!(
                with[0].variant_text.as_deref(),
                Some(format!(" {}", p.text).as_str())
            );
            assert_eq!(with[0].documents, p.documents);
            assert!(variants.len() >= 3, "{variants:?}");
        }
        assert_eq!(counts.corpus_documents, 1200);
    }
}

/// Per document: the analyzed terms with positions.
fn analyzed_docs() -> Vec<Vec<(String, u32)>> {
    fixture_records()
        .iter()
        .map(|r| familiar_text::analyze(r["text"].as_str().unwrap()))
        .collect()
}

/// Brute force: (documents with all words, documents with the phrase, phrase start positions by
/// document) of one analyzed form.
fn brute(
    docs: &[Vec<(String, u32)>],
    form: &[(String, u32)],
) -> (BTreeSet<usize>, BTreeSet<usize>, BTreeSet<(usize, u32)>) {
    let base = form[0].1;
    let (mut all, mut phrase, mut starts) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for (d, terms) in docs.iter().enumerate() {
        let set: HashSet<&str> = terms.iter().map(|t| t.0.as_str()).collect();
        if form.iter().all(|t| set.contains(t.0.as_str())) {
            all.insert(d);
        }
        let at: HashSet<(&str, u32)> = terms.iter().map(|t| (t.0.as_str(), t.1)).collect();
        for (_, p) in terms.iter().filter(|t| t.0 == form[0].0) {
            if form
                .iter()
                .all(|(t, q)| at.contains(&(t.as_str(), p + (q - base))))
            {
                phrase.insert(d);
                starts.insert((d, *p));
            }
        }
    }
    (all, phrase, starts)
}

#[test]
fn text_methods_and_cooccurrence_equal_a_brute_force_scan() {
    let docs = analyzed_docs();
    let records = fixture_records();
    let mut lex_text = String::from("concept,aliases,group\n");
    // The planted concepts, plus frequent filler words and phrases that make the text methods
    // differ from each other (and from sa_exact).
    for c in lexicon().concepts.iter() {
        lex_text.push_str(&format!("{},{},\n", c.name, c.forms[1..].join("|")));
    }
    let mut words: Vec<String> = Vec::new();
    for w in records[3]["text"].as_str().unwrap().split_whitespace() {
        let w = w
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        if !w.is_empty() && !words.contains(&w) {
            words.push(w);
        }
    }
    assert!(words.len() >= 6, "{words:?}");
    lex_text.push_str(&format!(
        "{} {},{} {}|{},filler\n",
        words[0], words[1], words[2], words[3], words[4]
    ));
    lex_text.push_str(&format!(
        "{},{} {} {},filler\n",
        words[5], words[1], words[0], words[5]
    ));
    let t = TestDir::new();
    let path = t.write("lexicon.csv", lex_text);
    let lex = Lexicon::read(&path).unwrap();
    let pairs_text: String = std::iter::once("concept_a,concept_b\n".to_string())
        .chain(
            lex.concepts
                .windows(2)
                .map(|w| format!("{},{}\n", w[0].name, w[1].name)),
        )
        .collect();
    let pairs_path = t.write("pairs.csv", pairs_text);
    let pairs = read_pairs(&pairs_path, &lex).unwrap();
    for idx in [fixture_index(), fixture_index_sharded()] {
        let index = Index::open(idx).unwrap();
        let counts = Counter::new(&index, &Method::ALL)
            .unwrap()
            .run(&lex, &pairs, &CountOptions::default())
            .unwrap();
        let mut concept_docs: HashMap<(u64, Method), BTreeSet<usize>> = HashMap::new();
        for c in &lex.concepts {
            let (mut all_u, mut phrase_u, mut starts_u) =
                (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
            for form in &c.forms {
                let analyzed = familiar_text::analyze(form);
                let (all, phrase, starts) = brute(&docs, &analyzed);
                let find = |m: Method| {
                    rows(&counts, c.id, m, "form")
                        .into_iter()
                        .find(|r| r.form.as_deref() == Some(form.as_str()))
                        .unwrap()
                        .clone()
                };
                let r = find(Method::TextAllWords);
                assert_eq!(
                    (r.documents, r.occurrences),
                    (all.len() as u64, None),
                    "{form}"
                );
                let r = find(Method::TextPhrase);
                assert_eq!(
                    (r.documents, r.occurrences),
                    (phrase.len() as u64, Some(starts.len() as u64)),
                    "{form}"
                );
                all_u.extend(all);
                phrase_u.extend(phrase);
                starts_u.extend(starts);
            }
            let r = rows(&counts, c.id, Method::TextAllWords, "concept")[0];
            assert_eq!(r.documents, all_u.len() as u64, "{}", c.name);
            let r = rows(&counts, c.id, Method::TextPhrase, "concept")[0];
            assert_eq!(
                (r.documents, r.occurrences),
                (phrase_u.len() as u64, Some(starts_u.len() as u64)),
                "{}",
                c.name
            );
            // The methods agree where they must.
            let sa = rows(&counts, c.id, Method::SaExact, "concept")[0];
            assert!(
                sa.documents <= r.documents,
                "{}: sa_exact {} > text_phrase {}",
                c.name,
                sa.documents,
                r.documents
            );
            assert!(phrase_u.is_subset(&all_u));
            // sa_exact documents by brute force over the raw text: whole-word, any case variant.
            let sa_docs: BTreeSet<usize> = records
                .iter()
                .enumerate()
                .filter(|(_, rec)| {
                    let text = rec["text"].as_str().unwrap();
                    c.forms.iter().any(|f| whole_word_any_case(text, f))
                })
                .map(|(d, _)| d)
                .collect();
            if c.name.split(' ').all(|w| w.len() > 4) {
                // Planted names: tokenization is unambiguous, so text search is an exact oracle.
                assert_eq!(sa.documents, sa_docs.len() as u64, "{}", c.name);
                concept_docs.insert((c.id, Method::SaExact), sa_docs);
            }
            concept_docs.insert((c.id, Method::TextAllWords), all_u);
            concept_docs.insert((c.id, Method::TextPhrase), phrase_u);
        }
        let mut checked = 0;
        for r in &counts.cooccurrences {
            let (Some(a), Some(b)) = (
                concept_docs.get(&(r.concept_a, r.method)),
                concept_docs.get(&(r.concept_b, r.method)),
            ) else {
                continue;
            };
            assert_eq!(
                (r.documents_a, r.documents_b, r.documents_both),
                (
                    a.len() as u64,
                    b.len() as u64,
                    a.intersection(b).count() as u64
                ),
                "{r:?}"
            );
            checked += 1;
        }
        assert!(checked >= 3 * (pairs.len() - 2), "{checked}");
        assert!(counts.cooccurrences.iter().any(|r| r.documents_both > 0));
    }
}

/// Whether `form` occurs in `text` as whole words in one of the case variants sa_exact tries.
fn whole_word_any_case(text: &str, form: &str) -> bool {
    let upper_first = |w: &str| {
        let mut c = w.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect::<String>())
            .unwrap_or_default()
    };
    let title: String = form
        .split(' ')
        .map(upper_first)
        .collect::<Vec<_>>()
        .join(" ");
    [
        form.to_string(),
        form.to_lowercase(),
        upper_first(form),
        title,
    ]
    .iter()
    .any(|v| {
        text.match_indices(v.as_str()).any(|(i, m)| {
            let before = text[..i].chars().next_back();
            let after = text[i + m.len()..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        })
    })
}

#[test]
fn lookup_finds_exact_prefix_and_fuzzy_forms() {
    let (_, planted) = planted();
    let p = planted
        .iter()
        .find(|p| p.text.starts_with("Zelxir"))
        .unwrap();
    let index = Index::open(fixture_index_sharded()).unwrap();
    let lex = lexicon();
    let found = lookup(&index, "Zelxir", Mode::Exact, Some(&lex), 10).unwrap();
    let row = found.iter().find(|f| f.source == "index").unwrap();
    assert_eq!(row.form, "zelxir");
    assert_eq!(row.word_documents, Some(p.documents));
    assert_eq!(row.phrase_occurrences, p.occurrences);
    assert_eq!(row.concept.as_deref(), Some("zelxir exoexo"));
    assert!(found
        .iter()
        .any(|f| f.source == "lexicon" && f.form == "zelxir"));
    let found = lookup(&index, "zelx", Mode::Prefix, None, 10).unwrap();
    assert!(found.iter().any(|f| f.form == "zelxir"), "{found:?}");
    assert!(found.iter().all(|f| f.form.starts_with("zelx")));
    let found = lookup(&index, "zelxor", Mode::Fuzzy(1), None, 10).unwrap();
    assert!(found.iter().any(|f| f.form == "zelxir"), "{found:?}");
    let found = lookup(&index, "zelxir exo", Mode::Prefix, None, 10).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].form.as_str(), found[0].phrase_occurrences),
        ("zelxir exoexo", p.occurrences)
    );
    assert!(lookup(&index, "!!", Mode::Exact, None, 10).is_err());
}

#[test]
fn concepts_count_writes_the_three_tables_with_their_schemas() {
    let t = TestDir::new();
    let out = t.join("concepts");
    let lex = fixtures().join("concepts").join("planted.csv");
    let pairs = fixtures().join("concepts").join("pairs.csv");
    let o = familiar([
        "concepts".as_ref(),
        "count".as_ref(),
        fixture_index().as_os_str(),
        lex.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--pairs".as_ref(),
        pairs.as_os_str(),
        "--quiet".as_ref(),
    ]);
    o.success().stdout_has(&["counted 22 concepts", "17 pairs"]);
    for (file, table, rows) in [
        ("concepts.parquet", "concepts", 22),
        ("concept_frequency.parquet", "concept_frequency", 0),
        ("cooccurrence.parquet", "cooccurrence", 17 * 3),
    ] {
        let f = std::fs::File::open(out.join(file)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap();
        let expected = familiar::schema::table(table).unwrap();
        let mut n = 0;
        for batch in reader {
            let batch = batch.unwrap();
            assert_eq!(batch.schema().fields(), expected.fields(), "{file}");
            n += batch.num_rows();
        }
        if rows > 0 {
            assert_eq!(n, rows, "{file}");
        } else {
            assert!(n > 22 * 5, "{file}: {n}");
        }
    }
    let fst = fst::Map::new(std::fs::read(out.join("lexicon.fst")).unwrap()).unwrap();
    assert_eq!(
        fst.get("zelxir exoexo"),
        Some(lexicon().resolve("Zelxir Exoexo").unwrap().id)
    );
    assert!(entries(&out).iter().all(|n| !n.starts_with(".tmp")));

    // Lookup from the command line.
    let o = familiar([
        "concepts".as_ref(),
        "lookup".as_ref(),
        fixture_index().as_os_str(),
        "zelxor".as_ref(),
        "--fuzzy".as_ref(),
        "1".as_ref(),
        "--format".as_ref(),
        "jsonl".as_ref(),
    ]);
    let lines = o.success().json_lines();
    assert!(lines.iter().any(|l| l["form"] == "zelxir"), "{o}");

    // Only n-grams: concept counts say how to get a text index.
    let plain = t.join("plain");
    build(&plain, &fixture_inputs(), &["--no-text-index"]);
    familiar([
        "concepts".as_ref(),
        "count".as_ref(),
        plain.as_os_str(),
        lex.as_os_str(),
        "--out".as_ref(),
        t.join("x").as_os_str(),
    ])
    .failure()
    .stderr_has(&["no text index", "--no-text-index"]);
    familiar([
        "concepts".as_ref(),
        "count".as_ref(),
        plain.as_os_str(),
        lex.as_os_str(),
        "--out".as_ref(),
        t.join("y").as_os_str(),
        "--method".as_ref(),
        "sa_exact".as_ref(),
        "-q".as_ref(),
    ])
    .success();
}

#[test]
fn bad_lexicons_fail_with_the_file_and_line() {
    let t = TestDir::new();
    let idx = fixture_index();
    let cases: &[(&str, &[u8], &[&str])] = &[
        (
            "dup.csv",
            b"concept,aliases\nParis,\nLondon,\nparis,\n",
            &["dup.csv:4", "already defined on line 2"],
        ),
        (
            "empty-alias.csv",
            b"concept,aliases\nParis,City of Light||Lutetia\n",
            &["empty-alias.csv:2", "empty alias"],
        ),
        (
            "latin1.csv",
            b"concept\nParis\nCaf\xe9\n",
            &["latin1.csv:3", "not UTF-8"],
        ),
        (
            "columns.csv",
            b"concept,synonyms\nParis,Lutetia\n",
            &["columns.csv:1", "unknown column \"synonyms\""],
        ),
        (
            "keys.jsonl",
            b"{\"concept\": \"Paris\", \"alias\": [\"x\"]}\n",
            &["keys.jsonl:1", "unknown key \"alias\""],
        ),
        (
            "clash.tsv",
            b"concept\taliases\nParis\tCapital\nLondon\tcapital\n",
            &["clash.tsv:3", "\"capital\"", "line 2"],
        ),
    ];
    for (name, bytes, needles) in cases {
        let path = t.write(name, *bytes);
        familiar([
            "concepts".as_ref(),
            "count".as_ref(),
            idx.as_os_str(),
            path.as_os_str(),
            "--out".as_ref(),
            t.join("out").as_os_str(),
        ])
        .failure()
        .stderr_has(needles);
    }
    assert!(
        !t.join("out").exists(),
        "nothing is written for a bad lexicon"
    );
}

#[test]
fn a_damaged_text_index_fails_cleanly() {
    let t = TestDir::new();
    let lex = fixtures().join("concepts").join("planted.csv");
    for (file, cut) in [
        ("text/meta.json", true),
        ("words.fst", true),
        ("text/00000000000000000000000000000001.pos", false),
    ] {
        let idx = t.copy_tree(fixture_index(), format!("idx-{}", file.replace('/', "-")));
        let path = idx.join("shard-00000").join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        if cut {
            bytes.truncate(bytes.len() / 2);
        } else {
            let n = bytes.len();
            for b in &mut bytes[n / 4..n / 2] {
                *b ^= 0x5a;
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        familiar(["index".as_ref(), "verify".as_ref(), idx.as_os_str()])
            .failure()
            .stdout_has(&[file.rsplit('/').next().unwrap()]);
        let o = familiar([
            "concepts".as_ref(),
            "count".as_ref(),
            idx.as_os_str(),
            lex.as_os_str(),
            "--out".as_ref(),
            t.join("out").as_os_str(),
            "-q".as_ref(),
        ]);
        if cut {
            o.failure()
                .stderr_has(&[file.rsplit('/').next().unwrap(), "bytes on disk"]);
        } else {
            // Same size, other bytes: opening cannot tell; counting either fails cleanly or
            // answers — never a crash.
            assert!(o.code().is_some(), "{o}");
        }
    }
}
