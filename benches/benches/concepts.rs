//! Concept-count benchmark: a lexicon of 10,000 concepts with 5 aliases each (PARAREL/T-REx entity
//! names, then words of the corpus) counted by every method over the whole real corpus in
//! `../shared/data/corpus`, against a naive scan of the analyzed text of a sample whose answers
//! must equal the index's.
//!
//! `cargo bench -p familiar-benches --bench concepts` measures at full scale (building the index,
//! with its text index, under `target/bench-data/` the first time); `cargo test -p familiar-benches
//! --benches` runs a smoke version on the fixture corpus. See `benches/README.md`.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use familiar::index::Index;
use familiar_benches::*;
use familiar_index_builder::build::{build, BuildOptions};
use familiar_query::concepts::count::{CountOptions, Counter, Method};
use familiar_query::concepts::lexicon::{normalize, Lexicon};
use fst::Streamer;

const TARGET_WALL: f64 = 10.0;
const CONCEPTS: u64 = 10_000;
const ALIASES: usize = 5;

fn main() {
    let mode = Mode::from_args();
    if let Err(e) = run(mode) {
        eprintln!("concepts bench failed: {e}");
        std::process::exit(1);
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Builds an index (with text index) of `inputs` into `dir` unless it is there.
fn ensure_index(dir: &Path, tokenizer: &Path, inputs: Vec<String>) -> BenchResult<()> {
    if dir.join("manifest.json").exists() {
        return Ok(());
    }
    remove_dir(dir)?;
    println!("building {} ...", dir.display());
    let mut options = BuildOptions::new(tokenizer, dir, inputs);
    options.threads = Some(threads());
    let (r, wall, cpu) = measure(|| build(&options));
    let r = r?;
    println!(
        "  {} documents, {} tokens in {:.1} s wall, {:.1} s CPU (text index merges {:.1} s)",
        r.documents,
        r.tokens,
        wall.as_secs_f64(),
        cpu,
        r.text_index_time.as_secs_f64()
    );
    Ok(())
}

/// Surface forms for the lexicon: entity names from PARAREL (if present), then words of the
/// index's dictionary at evenly spaced ranks (a spread of frequencies); unique after normalization.
fn form_pool(index: &Index, data: Option<&Path>, need: usize) -> BenchResult<Vec<String>> {
    let mut seen = HashSet::new();
    let mut pool = Vec::new();
    let mut push = |s: &str, pool: &mut Vec<String>| {
        let n = normalize(s);
        if !n.is_empty() && !s.contains(['"', ',', '|']) && seen.insert(n) {
            pool.push(s.trim().to_string());
        }
    };
    if let Some(data) = data {
        let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("eval/pararel/facts"))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        for f in files {
            for line in std::fs::read_to_string(&f)?.lines() {
                let v: serde_json::Value = serde_json::from_str(line)?;
                for k in ["sub_label", "obj_label"] {
                    if let Some(s) = v[k].as_str() {
                        push(s, &mut pool);
                    }
                }
            }
        }
    }
    let entities = pool.len();
    let shard = &index.shards()[0];
    let text = familiar_text::TextIndex::open(&shard.dir, &shard.manifest)?;
    let words = text.words();
    let total = words.len();
    let want = need.saturating_sub(pool.len());
    if want > 0 {
        let stride = (total / (2 * want)).max(1);
        let mut stream = words.stream();
        let mut i = 0usize;
        while let Some((k, _)) = stream.next() {
            if i.is_multiple_of(stride) {
                if let Ok(w) = std::str::from_utf8(k) {
                    push(w, &mut pool);
                }
            }
            i += 1;
            if pool.len() >= need {
                break;
            }
        }
    }
    println!(
        "lexicon forms: {} PARAREL entity names, {} corpus words",
        entities.min(pool.len()),
        pool.len().saturating_sub(entities)
    );
    if pool.len() < need {
        return Err(format!("only {} distinct forms for {need}", pool.len()).into());
    }
    pool.truncate(need);
    Ok(pool)
}

fn write_lexicon(path: &Path, pool: &[String], concepts: usize) -> BenchResult<()> {
    // Names first (the entity names), aliases after: concept i gets pool[i] and five more.
    let mut out = String::from("concept,aliases,group\n");
    for i in 0..concepts {
        let aliases: Vec<&str> = (0..ALIASES)
            .map(|k| pool[concepts + i * ALIASES + k].as_str())
            .collect();
        out.push_str(&format!("{},{},bench\n", pool[i], aliases.join("|")));
    }
    std::fs::write(path, out)?;
    Ok(())
}

fn run(mode: Mode) -> BenchResult<()> {
    let started = Instant::now();
    println!("familiar concepts bench — {} mode", mode.name());
    println!("machine: {}", machine());
    let base = bench_dir(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base)?;
    let data = shared_data();
    let full = mode.is_full() && data.is_some();
    if mode.is_full() && data.is_none() {
        println!(
            "real corpus: SKIPPED — ../shared/data not found; measuring on the fixture corpus"
        );
    }
    let (dir, tokenizer, inputs, sample_inputs, scratch) = if full {
        let data = data.clone().ok_or("no data")?;
        let corpus = data.join("corpus");
        (
            base.join("concepts-real-gpt2"),
            data.join("tokenizers/gpt2.json"),
            vec![corpus.display().to_string()],
            vec![corpus.join("enwiki-0000.jsonl.zst").display().to_string()],
            None,
        )
    } else {
        let s = base.join(format!("smoke-concepts-{}", std::process::id()));
        let parts: Vec<String> = ["part-0000.jsonl.zst", "part-0001.jsonl.gz"]
            .iter()
            .map(|p| fixtures().join("corpus").join(p).display().to_string())
            .collect();
        (
            s.join("index"),
            fixtures().join("tokenizer.json"),
            parts.clone(),
            parts[..1].to_vec(),
            Some(s),
        )
    };
    ensure_index(&dir, &tokenizer, inputs)?;
    let index = Index::open(&dir)?;
    let concepts = env_count("FAMILIAR_BENCH_CONCEPTS", mode.pick(100, CONCEPTS)) as usize;
    let pool = form_pool(&index, data.as_deref(), concepts * (1 + ALIASES))?;
    let lexicon_path = base.join(format!("concepts-lexicon-{concepts}.csv"));
    write_lexicon(&lexicon_path, &pool, concepts)?;
    let lexicon = Lexicon::read(&lexicon_path)?;
    println!(
        "index: {} documents, {} tokens, {} shard(s) at {}\nlexicon: {} concepts × {} forms ({} surface forms) at {}",
        index.documents(),
        index.manifest().tokens,
        index.shards().len(),
        dir.display(),
        lexicon.concepts.len(),
        1 + ALIASES,
        lexicon.concepts.iter().map(|c| c.forms.len()).sum::<usize>(),
        lexicon_path.display()
    );

    let mut table = Table::new(
        format!(
            "concept counts: {} concepts × {} forms over {} tokens ({} threads)",
            lexicon.concepts.len(),
            1 + ALIASES,
            fmt_si(index.manifest().tokens as f64),
            rayon::current_num_threads()
        ),
        &["methods", "page cache", "wall", "CPU", "concepts/s", "rows"],
    );
    // First all methods on a cold start (the page cache dropped when this process may, else as
    // the OS left it), then each method alone, then all methods again, warm.
    let cold = if mode.is_full() && drop_page_cache() {
        "dropped"
    } else {
        "as found"
    };
    let (mut cold_wall, mut warm_wall, mut text_wall) = (0.0, 0.0, 0.0);
    for (i, methods) in [
        Method::ALL.to_vec(),
        vec![Method::SaExact],
        vec![Method::TextAllWords],
        vec![Method::TextPhrase],
        Method::ALL.to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        let (counts, wall, cpu) = measure(|| -> BenchResult<_> {
            let c = Counter::for_lexicon(&index, &methods, &lexicon)?;
            Ok(c.run(&lexicon, &[], &CountOptions::default())?)
        });
        let counts = counts?;
        let wall = wall.as_secs_f64();
        match (i, methods.as_slice()) {
            (0, _) => cold_wall = wall,
            (_, [Method::TextAllWords] | [Method::TextPhrase]) => text_wall += wall,
            (4, _) => warm_wall = wall,
            _ => {}
        }
        table.row(vec![
            methods
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join("+"),
            if i == 0 { cold } else { "warm" }.to_string(),
            fmt_secs(wall),
            fmt_secs(cpu),
            fmt_si(lexicon.concepts.len() as f64 / wall),
            counts.frequencies.len().to_string(),
        ]);
    }
    table.print();
    println!(
        "target: all methods ≤ {TARGET_WALL} s wall for 10,000 concepts × 5 aliases on the real corpus: {:.2} s cold (page cache {cold}), {:.2} s warm — {}",
        cold_wall,
        warm_wall,
        verdict(
            mode,
            full && concepts as u64 >= CONCEPTS && cold_wall.max(warm_wall) <= TARGET_WALL
        )
    );

    // Baseline: a naive scan of the analyzed text of a sample, per concept, whose answers must
    // equal the index's on the same sample.
    let sample_dir = match &scratch {
        Some(s) => s.join("sample"),
        None => base.join("concepts-real-sample-enwiki-0000"),
    };
    ensure_index(&sample_dir, &tokenizer, sample_inputs.clone())?;
    let sample = Index::open(&sample_dir)?;
    let mut docs: Vec<Vec<(String, u32)>> = Vec::new();
    for input in &sample_inputs {
        let reader = familiar::corpus::CorpusReader::new(
            familiar::corpus::expand_inputs(std::slice::from_ref(input))?.files,
            familiar::corpus::ReadOptions::default(),
            Default::default(),
        );
        for d in reader {
            docs.push(familiar_text::analyze(&d?.text));
        }
    }
    let k = mode.pick(20, 40).min(lexicon.concepts.len());
    let step = (lexicon.concepts.len() / k).max(1);
    let picked: Vec<usize> = (0..k).map(|i| i * step).collect();
    let (naive, naive_wall, _) = measure(|| {
        picked
            .iter()
            .map(|&i| naive_concept(&docs, &lexicon.concepts[i].forms))
            .collect::<Vec<_>>()
    });
    let counter = Counter::new(&sample, &[Method::TextAllWords, Method::TextPhrase])?;
    let (ours, ours_wall, _) = measure(|| {
        picked
            .iter()
            .map(|&i| counter.concept(&lexicon.concepts[i]))
            .collect::<Result<Vec<_>, _>>()
    });
    let ours = ours?;
    for ((&i, (all, phrase)), (rows, _)) in picked.iter().zip(&naive).zip(&ours) {
        let get = |m: Method| {
            rows.iter()
                .find(|r| r.method == m && r.level == "concept")
                .map(|r| r.documents)
        };
        if get(Method::TextAllWords) != Some(*all) || get(Method::TextPhrase) != Some(*phrase) {
            return Err(format!(
                "concept {:?}: index says all-words {:?}, phrase {:?}; the naive scan {all}, {phrase}",
                lexicon.concepts[i].name,
                get(Method::TextAllWords),
                get(Method::TextPhrase)
            )
            .into());
        }
    }
    let sample_tokens = sample.manifest().tokens as f64;
    let per_concept_naive = naive_wall.as_secs_f64() / k as f64;
    let extrapolated = per_concept_naive * index.manifest().tokens as f64 / sample_tokens
        * lexicon.concepts.len() as f64;
    let mut t = Table::new(
        format!(
            "text methods vs a naive scan of the analyzed text ({} tokens sample, {} documents; answers equal)",
            fmt_si(sample_tokens),
            docs.len()
        ),
        &["", "per concept on sample", "whole lexicon on the index"],
    );
    t.row(vec![
        "naive scan (analysis not counted)".into(),
        fmt_secs(per_concept_naive),
        format!("{} (extrapolated)", fmt_secs(extrapolated)),
    ]);
    t.row(vec![
        "familiar (text methods)".into(),
        fmt_secs(ours_wall.as_secs_f64() / k as f64),
        format!("{} (measured, warm)", fmt_secs(text_wall)),
    ]);
    t.print();
    println!(
        "speed-up of the text methods over the naive scan, whole lexicon: {}",
        fmt_ratio(extrapolated / text_wall)
    );
    if let Some(s) = scratch {
        remove_dir(&s)?;
    }
    println!(
        "\nconcepts bench ({} mode) finished in {:.1} s",
        mode.name(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Empties the kernel's page cache (needs root); whether it did.
fn drop_page_cache() -> bool {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

/// Documents with all words of any form, and with any form as a phrase, by one linear scan of
/// every document's analyzed terms per form.
fn naive_concept(docs: &[Vec<(String, u32)>], forms: &[String]) -> (u64, u64) {
    let analyzed: Vec<Vec<(String, u32)>> =
        forms.iter().map(|f| familiar_text::analyze(f)).collect();
    let (mut all, mut phrase) = (BTreeSet::new(), BTreeSet::new());
    for (d, terms) in docs.iter().enumerate() {
        for form in &analyzed {
            let base = form[0].1;
            let mut present = vec![false; form.len()];
            let mut hit = false;
            for (i, (t, p)) in terms.iter().enumerate() {
                for (k, (ft, _)) in form.iter().enumerate() {
                    if t == ft {
                        present[k] = true;
                    }
                }
                if !hit && *t == form[0].0 {
                    hit = form.iter().enumerate().all(|(j, (ft, fp))| {
                        terms
                            .get(i + j)
                            .is_some_and(|(u, q)| u == ft && *q == p + (fp - base))
                    });
                }
            }
            if present.iter().all(|&x| x) {
                all.insert(d);
            }
            if hit {
                phrase.insert(d);
            }
        }
    }
    (all.len() as u64, phrase.len() as u64)
}
