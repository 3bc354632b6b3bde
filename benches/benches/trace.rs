//! Tracing text to the corpus, on the whole real corpus in `../shared/data/corpus` (the index of
//! the concepts bench, with its text index): span tracing of 400-token texts (warm), the
//! contamination of all of MMLU's test items, the top-10 n-grams for n = 1..=5, and exact
//! duplicates of 50 tokens — each against a naive scan of a sample of the corpus's tokens,
//! extrapolated per token, and each answer checked by a naive count over the whole token stream.
//! Top n-grams and duplicates run in child processes, for their own peak memory.
//!
//! `cargo bench -p familiar-benches --bench trace` measures at full scale; `cargo test -p
//! familiar-benches --benches` runs a smoke version on the fixture corpus. See `benches/README.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use familiar::index::Index;
use familiar::items::{read_items, Ask, Item, ItemFormat};
use familiar::token::Token;
use familiar::with_view;
use familiar_benches::*;
use familiar_query::contamination::{contamination, ContaminationOptions};
use familiar_query::duplicates::{duplicates, DuplicateOptions};
use familiar_query::top::{top_ngrams, TopOptions};
use familiar_query::trace::{trace_text, TraceOptions};

/// Targets (issue 16), in seconds.
const TRACE_TARGET: f64 = 0.050;
const CONTAMINATION_TARGET: f64 = 60.0;
const SCAN_TARGET: f64 = 120.0;

fn main() {
    set_omp_passive();
    let mode = Mode::from_args();
    let result = match child_phase() {
        Some(phase) => child(&phase),
        None => run(mode),
    };
    if let Err(e) = result {
        eprintln!("trace bench failed: {e}");
        std::process::exit(1);
    }
}

/// Where a child phase finds the parent's index.
const INDEX_ENV: &str = "FAMILIAR_BENCH_TRACE_INDEX";

/// The index to measure (the concepts bench's real-corpus index, built if absent), whether it
/// is the real corpus, and the real data directory.
fn index_dir(mode: Mode) -> BenchResult<(PathBuf, bool, Option<PathBuf>)> {
    real_corpus_index(mode, env!("CARGO_TARGET_TMPDIR"), "trace")
}

/// The whole token stream, shard by shard (no pattern crosses a shard: shards end with a
/// document).
fn streams(index: &Index) -> Vec<Vec<u32>> {
    index
        .shards()
        .iter()
        .map(|s| with_view!(s, |v| v.tokens.iter().map(|t| t.to_u32()).collect()))
        .collect()
}

/// Occurrences in the whole stream, by linear scan.
fn naive_total(streams: &[Vec<u32>], pattern: &[u32]) -> u64 {
    streams.iter().map(|s| naive_count(s, pattern)).sum()
}

/// Occurrences in the whole index by linear scans of the mapped token files (no copy).
fn naive_in_index(index: &Index, pattern: &[u32]) -> u64 {
    index
        .shards()
        .iter()
        .map(|s| {
            with_view!(s, |v| {
                let p: Option<Vec<_>> = pattern.iter().map(|&t| Token::from_u32(t)).collect();
                p.map_or(0, |p| naive_count(v.tokens, &p))
            })
        })
        .sum()
}

/// The largest anonymous resident memory (`RssAnon` of `/proc/self/status`: the heap, not the
/// mapped index files) seen while `f` runs, sampled every 20 ms.
fn peak_anon<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let read = rss_anon;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = read();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(read());
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            peak.max(read())
        });
        let r = f();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().unwrap_or(0);
        (r, peak)
    })
}

/// The first `n` tokens of the stream: the baselines' sample.
fn sample(streams: &[Vec<u32>], n: usize) -> &[u32] {
    let s = &streams[0];
    &s[..n.min(s.len())]
}

fn run(mode: Mode) -> BenchResult<()> {
    println!("familiar trace bench ({}) on {}", mode.name(), machine());
    let (dir, full, data) = index_dir(mode)?;
    let index = Index::open(&dir)?;
    for s in index.shards() {
        s.preload();
    }
    let positions: u64 = index.shards().iter().map(|s| s.manifest.tokens).sum();
    println!(
        "index {}: {} positions, {} documents, {} shards",
        dir.display(),
        fmt_si(positions as f64),
        index.documents(),
        index.shards().len()
    );
    let all = streams(&index);
    let sample_tokens =
        env_count("FAMILIAR_BENCH_SAMPLE_TOKENS", mode.pick(60_000, 2_000_000)) as usize;
    let sample = sample(&all, sample_tokens);
    let extrapolate = positions as f64 / sample.len() as f64;

    // --- trace
    let texts = trace_texts(&index, &all, data.as_deref(), mode.pick(4, 20))?;
    let options = TraceOptions::default();
    let mut warm = Vec::new();
    let mut first = None;
    for pass in 0..2 {
        for t in &texts {
            let t0 = Instant::now();
            let tr = trace_text(&index, t, &options)?;
            let dt = t0.elapsed().as_secs_f64();
            if pass == 1 {
                warm.push(dt);
            }
            first.get_or_insert(tr);
        }
    }
    let tr = first.ok_or("no texts")?;
    for s in &tr.spans {
        let want = naive_total(&all, &tr.tokens[s.start..s.end]);
        if want != s.count {
            return Err(format!("span {:?}: index {} naive {want}", s.text, s.count).into());
        }
    }
    // The baseline: each position's longest match by linear scans of the sample.
    let t0 = Instant::now();
    let text_tokens = &tr.tokens;
    let mut naive_spans = 0;
    for i in 0..text_tokens.len() {
        let mut l = 0;
        while i + l < text_tokens.len() && naive_count(sample, &text_tokens[i..=i + l]) > 0 {
            l += 1;
        }
        naive_spans += usize::from(l >= options.min_len);
    }
    let naive = t0.elapsed().as_secs_f64() * extrapolate;
    let sorted_warm = sorted(&warm);
    let p50 = percentile(&sorted_warm, 0.5);
    let p90 = percentile(&sorted_warm, 0.9);
    let mut table = Table::new(
        format!(
            "trace: {} texts of about 400 tokens, OLMoTrace filters, BM25 over the whole index (warm)",
            texts.len()
        ),
        &["measure", "familiar", "naive scan (extrapolated)", "ratio", "target"],
    );
    table.row(vec![
        "median latency".into(),
        fmt_secs(p50),
        fmt_secs(naive),
        fmt_ratio(naive / p50),
        format!("≤ 50 ms: {}", verdict(mode, p50 <= TRACE_TARGET)),
    ]);
    table.row(vec!["p90 latency".into(), fmt_secs(p90)]);
    table.print();
    println!(
        "  spans of the first text checked against naive counts over all {} positions ({} kept; \
         {naive_spans} positions of the sample start a match of ≥ {} tokens)",
        fmt_si(positions as f64),
        tr.spans.len(),
        options.min_len
    );

    if full {
        let tokens: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| index.tokenizer().and_then(|k| k.encode(t)))
            .collect::<familiar::Result<_>>()?;
        // A baseline that fails is reported, and the rest still measured.
        if let Err(e) = infini_gram(&index, &dir, &tokens) {
            println!("infini-gram: FAILED — {e}");
        }
    }

    // --- contamination
    let items = contamination_items(&index, data.as_deref(), full)?;
    let c_options = ContaminationOptions {
        ngram_sizes: vec![8, 13],
        documents: 5,
    };
    let t0 = Instant::now();
    let rows = contamination(&index, &items, &c_options, &|_| {})?;
    let c_wall = t0.elapsed().as_secs_f64();
    let tokenizer = index.tokenizer()?;
    let mut checked = 0;
    let hits: Vec<_> = rows.iter().filter(|r| r.occurrences > 0).collect();
    for r in hits.iter().step_by((hits.len() / 8).max(1)).take(8) {
        let item = items
            .iter()
            .find(|i| i.id == r.item_id && i.task == r.task)
            .ok_or("row of no item")?;
        let prompt = tokenizer.encode(&item.prompt)?;
        let text = match (&item.ask, r.field.strip_prefix("choice_")) {
            _ if r.field == "prompt" => None,
            (Ask::Completion(c), _) => Some(c.as_str()),
            (Ask::Choice { choices, .. }, Some(k)) => Some(choices[k.parse::<usize>()?].as_str()),
            _ => return Err(format!("field {} of {}", r.field, r.item_id).into()),
        };
        let tokens = match text {
            None => prompt,
            Some(t) => familiar::items::completion_tokens(tokenizer, &item.prompt, &prompt, t)?,
        };
        let want = naive_total(&all, &tokens);
        if want != r.occurrences {
            return Err(format!(
                "{} {}: index {} naive {want}",
                r.item_id, r.field, r.occurrences
            )
            .into());
        }
        checked += 1;
    }
    // Baseline: a few items' fields, every 13-gram looked up by a scan of the sample.
    let naive_items = mode.pick(2, 3).min(items.len());
    let t0 = Instant::now();
    for item in &items[..naive_items] {
        for field in fields(item) {
            let ids = tokenizer.encode(&field)?;
            for w in ids.windows(13) {
                std::hint::black_box(naive_count(sample, w));
            }
        }
    }
    let naive_c =
        t0.elapsed().as_secs_f64() / naive_items.max(1) as f64 * items.len() as f64 * extrapolate;
    let dirty = rows
        .iter()
        .filter(|r| r.ngram_fractions.get(1).is_some_and(|f| *f > 0.0))
        .count();
    let mut table = Table::new(
        format!(
            "contamination: {} items ({} fields), 8- and 13-grams",
            items.len(),
            rows.len()
        ),
        &[
            "measure",
            "familiar",
            "naive 13-gram scans (extrapolated)",
            "ratio",
            "target",
        ],
    );
    table.row(vec![
        "wall".into(),
        fmt_secs(c_wall),
        fmt_secs(naive_c),
        fmt_ratio(naive_c / c_wall),
        format!("≤ 60 s: {}", verdict(mode, c_wall <= CONTAMINATION_TARGET)),
    ]);
    table.print();
    println!(
        "  {dirty} fields have a 13-gram in the corpus (or occur whole, if shorter); {checked} \
         fields' counts checked against naive counts over the whole stream"
    );

    // --- top n-grams and duplicates, each in a child for its peak memory
    let env = [(INDEX_ENV, dir.display().to_string())];
    let top = run_child("top", &env)?;
    let naive_top = {
        let t0 = Instant::now();
        for n in 1..=5usize {
            let mut counts: HashMap<&[u32], u64> = HashMap::new();
            for w in sample.windows(n) {
                *counts.entry(w).or_default() += 1;
            }
            std::hint::black_box(counts.len());
        }
        t0.elapsed().as_secs_f64() * extrapolate
    };
    let dup = run_child("duplicates", &env)?;
    let naive_dup = {
        let t0 = Instant::now();
        let mut counts: HashMap<&[u32], u32> = HashMap::new();
        for w in sample.windows(50) {
            *counts.entry(w).or_default() += 1;
        }
        std::hint::black_box(counts.len());
        t0.elapsed().as_secs_f64() * extrapolate
    };
    let mut table = Table::new(
        format!(
            "whole-index scans over {} positions",
            fmt_si(positions as f64)
        ),
        &[
            "measure",
            "wall",
            "CPU",
            "peak heap",
            "peak RSS (with mapped index)",
            "naive hash of n-grams (extrapolated)",
            "ratio",
            "target",
        ],
    );
    for (name, r, naive) in [
        ("top 10 n-grams, n = 1..=5", &top, naive_top),
        ("exact duplicates, L = 50", &dup, naive_dup),
    ] {
        let wall = r.wall.as_secs_f64();
        table.row(vec![
            name.into(),
            fmt_secs(wall),
            fmt_secs(r.cpu),
            fmt_bytes(r.get::<u64>("anon").unwrap_or(0)),
            fmt_bytes(r.max_rss),
            fmt_secs(naive),
            fmt_ratio(naive / wall),
            format!("≤ 2 min: {}", verdict(mode, wall <= SCAN_TARGET)),
        ]);
    }
    table.print();
    println!(
        "  duplicates: {} of {} tokens ({:.2}%) in {} clusters; top 5-gram: {}",
        top_or(&dup, "duplicated_tokens"),
        top_or(&dup, "tokens"),
        100.0 * dup.get::<f64>("duplicated_tokens").unwrap_or(0.0)
            / dup.get::<f64>("tokens").unwrap_or(1.0),
        top_or(&dup, "clusters"),
        top_or(&top, "top5"),
    );
    if !full {
        remove_dir(&dir)?;
    }
    Ok(())
}

/// infini-gram's `attribute` on the same tokens and texts (`benches/infini_gram_baseline.py`),
/// its spans compared with familiar's maximal spans under the same filters.
fn infini_gram(index: &Index, dir: &Path, texts: &[Vec<u32>]) -> BenchResult<()> {
    let python = std::env::var("FAMILIAR_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let importable = std::process::Command::new(&python)
        .args(["-c", "import infini_gram, numpy"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !importable {
        println!(
            "infini-gram: SKIPPED — {python} cannot import infini_gram (pip install infini-gram \
             numpy; FAMILIAR_BENCH_PYTHON names the interpreter)"
        );
        return Ok(());
    }
    if index.vocab_size() > 65535 {
        println!("infini-gram: SKIPPED — the vocabulary does not fit its u16 tokens");
        return Ok(());
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ig = dir.with_file_name(format!("infini-gram-{name}"));
    if !ig.join("tokenized.0").exists() {
        // infini-gram's layout: each document opens with 0xFFFF; offset.0 holds the byte offsets
        // of the documents.
        std::fs::create_dir_all(&ig)?;
        let mut data: Vec<u8> = Vec::new();
        let mut offsets: Vec<u8> = Vec::new();
        for shard in index.shards() {
            with_view!(shard, |v| {
                let mut open = true;
                for t in v.tokens {
                    let t = t.to_u32();
                    if open {
                        offsets.extend_from_slice(&(data.len() as u64).to_le_bytes());
                        data.extend_from_slice(&[0xff, 0xff]);
                        open = false;
                    }
                    if t == v.separator {
                        open = true;
                    } else {
                        data.extend_from_slice(&(t as u16).to_le_bytes());
                    }
                }
            });
        }
        std::fs::write(ig.join("offset.0"), &offsets)?;
        std::fs::write(ig.join("tokenized.0"), &data)?;
    }
    let queries = ig.join("queries.json");
    std::fs::write(&queries, serde_json::to_vec(texts)?)?;
    let out = ig.join("results.json");
    let min_len = 8;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/infini_gram_baseline.py");
    let status = std::process::Command::new(&python)
        .arg(script)
        .arg(&ig)
        .arg(&queries)
        .arg(&out)
        .arg(min_len.to_string())
        .arg("8")
        .arg((index.vocab_size() - 1).to_string())
        .status()?;
    if !status.success() {
        return Err(format!("{script} failed ({status})").into());
    }
    let results: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    if let Some(b) = results["build_seconds"].as_f64() {
        println!("infini-gram: its suffix array built in {b:.1} s");
    }
    let mut table = Table::new(
        format!(
            "trace against infini-gram's attribute ({} texts, min_len {min_len}, no BM25, warm)",
            texts.len()
        ),
        &[
            "max count",
            "familiar median",
            "infini-gram median",
            "ratio",
            "texts with equal spans",
        ],
    );
    for max_cnt in [10u64, 1 << 40] {
        let options = TraceOptions {
            min_len,
            max_count: Some(max_cnt),
            max_span_density: None,
            docs_per_span: 10,
            bm25: false,
            ..TraceOptions::default()
        };
        let (mut ours, mut theirs, mut equal) = (Vec::new(), Vec::new(), 0);
        for (k, t) in texts.iter().enumerate() {
            let r = &results["attribute"][k][max_cnt.to_string()];
            theirs.push(r["seconds"].as_f64().ok_or("no seconds")?);
            familiar_query::trace::trace_tokens(index, t, &options)?;
            let t0 = Instant::now();
            let tr = familiar_query::trace::trace_tokens(index, t, &options)?;
            ours.push(t0.elapsed().as_secs_f64());
            let mine: Vec<(u64, u64, u64)> = tr
                .spans
                .iter()
                .map(|s| (s.start as u64, s.end as u64, s.count))
                .collect();
            let other: Vec<(u64, u64, u64)> = r["spans"]
                .as_array()
                .ok_or("no spans")?
                .iter()
                .map(|s| {
                    (
                        s[0].as_u64().unwrap_or(0),
                        s[1].as_u64().unwrap_or(0),
                        s[2].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            if mine == other {
                equal += 1;
            } else if k == 0 {
                println!(
                    "  max count {max_cnt}, text 0: familiar {mine:?}\n    infini-gram {other:?}"
                );
            }
        }
        let (a, b) = (median(&ours), median(&theirs));
        table.row(vec![
            if max_cnt == 10 {
                "10".into()
            } else {
                "any".into()
            },
            fmt_secs(a),
            fmt_secs(b),
            fmt_ratio(b / a),
            format!("{equal} of {}", texts.len()),
        ]);
    }
    table.print();
    Ok(())
}

fn top_or(r: &ChildRun, key: &str) -> String {
    r.values.get(key).cloned().unwrap_or_else(|| "-".into())
}

/// A child phase: runs one scan, checks a few answers by naive counts, reports.
fn child(phase: &str) -> BenchResult<()> {
    let dir = std::env::var(INDEX_ENV).map_err(|_| format!("{INDEX_ENV} is not set"))?;
    let index = Index::open(&dir)?;
    match phase {
        "top" => {
            let (rows, anon) = peak_anon(|| {
                top_ngrams(
                    &index,
                    &TopOptions {
                        lengths: 1..=5,
                        k: 10,
                        source: None,
                    },
                )
            });
            let rows = rows?;
            report("anon", anon);
            let best = rows
                .iter()
                .find(|r| r.n == 5 && r.rank == 1)
                .ok_or("no 5-gram")?;
            let want = naive_in_index(&index, &best.tokens);
            if want != best.count {
                return Err(format!(
                    "top 5-gram {:?}: index {} naive {want}",
                    best.text, best.count
                )
                .into());
            }
            report("top5", format!("{:?} × {}", best.text, best.count));
        }
        "duplicates" => {
            let (found, anon) = peak_anon(|| {
                duplicates(
                    &index,
                    &DuplicateOptions {
                        min_len: 50,
                        docs_per_cluster: 10,
                    },
                    &|_| {},
                )
            });
            let found = found?;
            report("anon", anon);
            for s in found
                .segments
                .iter()
                .step_by((found.segments.len() / 3).max(1))
                .take(3)
            {
                let key = index.doc_tokens(s.doc_id, s.start, s.start + 50)?;
                let want = naive_in_index(&index, &key);
                let got = found.clusters[s.cluster as usize].occurrences;
                if want != got || want < 2 {
                    return Err(format!("cluster {}: index {got} naive {want}", s.cluster).into());
                }
            }
            report("duplicated_tokens", found.summary.duplicated_tokens);
            report("tokens", found.summary.tokens);
            report("clusters", found.summary.clusters);
        }
        other => return Err(format!("unknown phase {other}").into()),
    }
    Ok(())
}

/// Texts of about 400 tokens: half copied from corpus documents with a novel sentence between
/// two pieces, half made of GSM8K questions (mostly novel text with common phrases).
fn trace_texts(
    index: &Index,
    all: &[Vec<u32>],
    data: Option<&Path>,
    n: usize,
) -> BenchResult<Vec<String>> {
    let tokenizer = index.tokenizer()?;
    let mut rng = familiar::rng::SplitMix64::new(16);
    let stream = &all[0];
    let mut texts = Vec::new();
    for _ in 0..n.div_ceil(2) {
        let at = (rng.next_u64() % (stream.len().saturating_sub(500).max(1)) as u64) as usize;
        let piece: Vec<u32> = stream[at..(at + 190).min(stream.len())]
            .iter()
            .copied()
            .filter(|&t| t != index.vocab_size())
            .collect();
        let half = tokenizer.decode(&piece)?;
        texts.push(format!(
            "{half} The quiet heron counted seventeen lanterns. {half}"
        ));
    }
    let questions: Vec<String> = match data.map(|d| d.join("eval/gsm8k/test.jsonl")) {
        Some(p) if p.exists() => read_items(&p, ItemFormat::Gsm8k, Some(400))?
            .into_iter()
            .map(|i| i.prompt)
            .collect(),
        _ => texts.clone(),
    };
    let mut q = questions.iter().cycle();
    for _ in 0..n / 2 {
        let mut t = String::new();
        while tokenizer.encode(&t)?.len() < 400 {
            t.push_str(q.next().ok_or("no questions")?);
            t.push(' ');
        }
        texts.push(t);
    }
    Ok(texts)
}

/// MMLU's test items (real corpus), or items cut from the corpus (smoke).
fn contamination_items(index: &Index, data: Option<&Path>, full: bool) -> BenchResult<Vec<Item>> {
    if let (true, Some(d)) = (full, data) {
        let dir = d.join("eval/mmlu/test");
        if dir.exists() {
            return Ok(read_items(&dir, ItemFormat::Mmlu, None)?);
        }
        println!(
            "MMLU: SKIPPED — {} not found; items cut from the corpus",
            dir.display()
        );
    }
    let mut items = Vec::new();
    for doc in (0..index.documents()).step_by(37).take(40) {
        let tokens = index.doc_tokens(doc, 0, 40)?;
        let text = index.tokenizer()?.decode(&tokens)?;
        items.push(Item {
            id: format!("doc-{doc}"),
            task: "corpus".into(),
            prompt: text,
            ask: Ask::Completion(" yes".into()),
            concepts: Vec::new(),
        });
    }
    Ok(items)
}

/// The texts of an item's fields.
fn fields(item: &Item) -> Vec<String> {
    let mut f = vec![item.prompt.clone()];
    match &item.ask {
        Ask::Completion(c) => f.push(c.clone()),
        Ask::Choice { choices, .. } => f.extend(choices.iter().cloned()),
    }
    f
}
