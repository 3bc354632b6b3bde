//! Build benchmark: suffix-array construction, the end-to-end build of the real corpus, and a
//! generated billion-token index (kept on disk for the query bench).
//!
//! `cargo bench -p familiar-benches --bench build` measures at full scale; `cargo test -p
//! familiar-benches --benches` runs a smoke version that checks every result. See
//! `benches/README.md` for what is measured, the environment variables and the targets.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use familiar::corpus::{self, CorpusReader, ReadOptions};
use familiar::index::Index;
use familiar::manifest::InputCursor;
use familiar::token::{Token, TokenWidth};
use familiar::tokenizer::Tokenizer;
use familiar_benches::*;
use familiar_index_builder::build::{build, build_from_tokens, BuildOptions};
use familiar_index_builder::fixtures::SplitMix64;
use familiar_index_builder::memory::auto_shard_tokens;
use familiar_index_builder::sa::SaInput;
use familiar_query::ngram;

/// Real-data reference: infini-gram's indexing pipeline on this machine, tokens per CPU-second.
const INFINI_GRAM_TOKENS_PER_CPU_S: f64 = 0.45e6;
/// Targets.
const TARGET_SA_TOKENS_PER_CPU_S: f64 = 15e6;
const TARGET_BUILD_TOKENS_PER_CPU_S: f64 = 1.5e6;
const TARGET_BYTES_PER_TOKEN: f64 = 6.0;

fn main() {
    set_omp_passive();
    let mode = Mode::from_args();
    let result = match child_phase() {
        Some(phase) => child_main(&phase),
        None => parent_main(mode),
    };
    if let Err(e) = result {
        eprintln!("build bench failed: {e}");
        std::process::exit(1);
    }
}

fn parent_main(mode: Mode) -> BenchResult<()> {
    let started = Instant::now();
    println!("familiar build bench — {} mode", mode.name());
    println!("machine: {}", machine());
    println!(
        "build threads: {}   OMP_WAIT_POLICY={}",
        threads(),
        std::env::var("OMP_WAIT_POLICY").unwrap_or_default()
    );
    let base = bench_dir(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base)?;
    let naive_rate = suffix_array_bench(mode)?;
    real_corpus_bench(mode, &base)?;
    generated_bench(mode, &base, naive_rate)?;
    println!(
        "\nbuild bench ({} mode) finished in {:.1} s",
        mode.name(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn child_main(phase: &str) -> BenchResult<()> {
    match phase {
        "sa" => child_suffix_array(),
        "real" => child_real_build(),
        "gen" => child_generated_build(),
        other => Err(format!("unknown bench phase {other:?}").into()),
    }
}

fn env_path(name: &str) -> BenchResult<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{name} is not set").into())
}

// ---------------------------------------------------------------------------------------------
// (a) Suffix-array construction

/// Returns the naive sort's tokens per CPU-second (the baseline of the other sections).
fn suffix_array_bench(mode: Mode) -> BenchResult<f64> {
    let n = env_count(
        "FAMILIAR_BENCH_SA_TOKENS",
        mode.pick(1_000_000, 100_000_000),
    );
    let m = env_count("FAMILIAR_BENCH_NAIVE_TOKENS", mode.pick(50_000, 1_000_000));
    let reps = env_count("FAMILIAR_BENCH_REPS", mode.pick(1, 3)).max(1);
    println!(
        "\n(a) suffix arrays of u16 Zipf tokens (vocabulary {GEN_VOCAB}, exponent {GEN_ZIPF}): \
         libsais on {n} tokens ({reps} runs each, median), naive sort_by on {m}"
    );

    // Baseline: comparison sort of the suffixes of a sample, and libsais on the same sample.
    let sample = zipf_u16(m as usize, GEN_SEED);
    let (naive_sa, naive_wall, naive_cpu) = measure(|| naive_suffix_array(&sample));
    let mut text = sample.clone();
    let (fast, fast_wall, fast_cpu) = measure(|| u16::suffix_array(&mut text, GEN_VOCAB + 1, 1));
    if fast? != naive_sa {
        return Err("libsais and the naive sort disagree on the sample".into());
    }
    drop(naive_sa);

    let child = run_child(
        "sa",
        &[
            ("FAMILIAR_BENCH_SA_N", n.to_string()),
            ("FAMILIAR_BENCH_SA_REPS", reps.to_string()),
        ],
    )?;
    let naive_rate = m as f64 / naive_cpu;
    let mut t = Table::new(
        "(a) suffix-array construction",
        &[
            "method",
            "tokens",
            "wall",
            "CPU",
            "tokens/CPU-s",
            "tokens/wall-s",
            "vs naive",
        ],
    );
    let row = |name: &str, tokens: u64, wall: f64, cpu: f64| {
        vec![
            name.to_string(),
            fmt_si(tokens as f64),
            fmt_secs(wall),
            fmt_secs(cpu),
            fmt_si(tokens as f64 / cpu),
            fmt_si(tokens as f64 / wall),
            fmt_ratio(tokens as f64 / cpu / naive_rate),
        ]
    };
    t.row(row(
        "naive sort_by on suffixes (baseline)",
        m,
        naive_wall.as_secs_f64(),
        naive_cpu,
    ));
    t.row(row(
        "libsais, 1 thread, same sample",
        m,
        fast_wall.as_secs_f64(),
        fast_cpu,
    ));
    let mut one_thread_rate = 0.0;
    for th in child_thread_counts() {
        let wall: f64 = child.get(&format!("wall_{th}"))?;
        let cpu: f64 = child.get(&format!("cpu_{th}"))?;
        if th == 1 {
            one_thread_rate = n as f64 / cpu;
        }
        t.row(row(
            &format!("libsais, {th} thread{}", if th > 1 { "s" } else { "" }),
            n,
            wall,
            cpu,
        ));
    }
    t.print();
    println!(
        "peak memory of the libsais runs: {} ({:.2} bytes/token: text + suffix array)",
        fmt_bytes(child.max_rss),
        child.max_rss as f64 / n as f64
    );
    println!(
        "target ≥ {} tokens/CPU-s (1 thread): {} ({})",
        fmt_si(TARGET_SA_TOKENS_PER_CPU_S),
        fmt_si(one_thread_rate),
        verdict(mode, one_thread_rate >= TARGET_SA_TOKENS_PER_CPU_S)
    );
    Ok(naive_rate)
}

fn child_thread_counts() -> Vec<usize> {
    let mut v = vec![1, 2];
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    if all > 2 {
        v.push(all);
    }
    v
}

fn child_suffix_array() -> BenchResult<()> {
    let n = env_count("FAMILIAR_BENCH_SA_N", 1_000_000) as usize;
    let reps = env_count("FAMILIAR_BENCH_SA_REPS", 1).max(1);
    let mut text = zipf_u16(n, GEN_SEED + 1);
    for th in child_thread_counts() {
        let (mut walls, mut cpus) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let (sa, wall, cpu) = measure(|| u16::suffix_array(&mut text, GEN_VOCAB + 1, th));
            let sa = sa?;
            check_suffix_order(&text, &sa)?;
            walls.push(wall.as_secs_f64());
            cpus.push(cpu);
        }
        report(&format!("wall_{th}"), median(&walls));
        report(&format!("cpu_{th}"), median(&cpus));
    }
    Ok(())
}

/// Spot-checks that `sa` is sorted (a sample of adjacent pairs), without allocating: the child's
/// peak memory is the construction's. The whole array is compared with the naive sort on the
/// sample, in the parent.
fn check_suffix_order<T: Ord>(text: &[T], sa: &[i32]) -> BenchResult<()> {
    if sa.len() != text.len() {
        return Err("suffix array of the wrong length".into());
    }
    let mut rng = SplitMix64::new(99);
    for _ in 0..10_000.min(sa.len().saturating_sub(1)) {
        let i = rng.below(sa.len() as u64 - 1) as usize;
        let (a, b) = (sa[i] as usize, sa[i + 1] as usize);
        if a >= text.len() || b >= text.len() || text[a..] >= text[b..] {
            return Err(format!("suffixes out of order at entry {i}").into());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (b) The real corpus, end to end

fn real_corpus_bench(mode: Mode, base: &Path) -> BenchResult<()> {
    let Some(data) = shared_data() else {
        println!(
            "\n(b) real corpus: SKIPPED — {} not found (set FAMILIAR_BENCH_DATA to its location)",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")
        );
        return Ok(());
    };
    let corpus_dir = data.join("corpus");
    let inputs: Vec<String> = match std::env::var("FAMILIAR_BENCH_CORPUS") {
        Ok(v) => v.split(',').map(|s| s.to_string()).collect(),
        Err(_) => match mode {
            Mode::Smoke => vec![corpus_dir
                .join("tinystories-0000.jsonl.zst")
                .display()
                .to_string()],
            Mode::Full => vec![corpus_dir.display().to_string()],
        },
    };
    let tokenizer_path = data.join("tokenizers/gpt2.json");
    let out = base.join(format!("real-{}-{}", mode.name(), std::process::id()));
    remove_dir(&out)?;
    println!(
        "\n(b) real corpus, GPT-2 tokenizer, end to end: {}",
        inputs.join(", ")
    );

    // Baseline: a naive single-threaded pipeline on a sample (read, tokenize, comparison-sort the
    // suffixes, write tokens and suffix array), in this process.
    let naive_file = std::env::var("FAMILIAR_BENCH_NAIVE_CORPUS").unwrap_or_else(|_| {
        corpus_dir
            .join(mode.pick("tinystories-0000.jsonl.zst", "enwiki-0000.jsonl.zst"))
            .display()
            .to_string()
    });
    let naive_tokens = env_count("FAMILIAR_BENCH_NAIVE_TOKENS", mode.pick(50_000, 1_000_000));
    let tokenizer = Tokenizer::from_file(&tokenizer_path)?;
    let scratch = base.join(format!("naive-pipeline-{}.bin", std::process::id()));
    let (naive, naive_wall, naive_cpu) =
        measure(|| naive_pipeline(&tokenizer, &naive_file, naive_tokens, &scratch));
    let _ = std::fs::remove_file(&scratch);
    let (mut text, naive_sa, naive_count_tokens) = naive?;
    let fast = u16::suffix_array(&mut text, tokenizer.vocab_size() + 1, 1)?;
    if fast != naive_sa {
        return Err("libsais and the naive sort disagree on the real-text sample".into());
    }
    drop((text, naive_sa, fast));

    // familiar's build, in a child process (its own peak memory and CPU time).
    let child = run_child(
        "real",
        &[
            ("FAMILIAR_BENCH_OUT", out.display().to_string()),
            ("FAMILIAR_BENCH_INPUTS", inputs.join("\n")),
            (
                "FAMILIAR_BENCH_TOKENIZER",
                tokenizer_path.display().to_string(),
            ),
        ],
    )?;
    let tokens: u64 = child.get("tokens")?;
    let tokenized: u64 = child.get("tokens_tokenized")?;
    let documents: u64 = child.get("documents")?;
    let shards: u64 = child.get("shards")?;
    if tokens != tokenized + documents {
        return Err(format!(
            "index positions {tokens} != tokens {tokenized} + documents {documents}"
        )
        .into());
    }
    check_index_counts(&out, mode.pick(8, 5), 0)?;
    let sizes = shard_file_sizes(&out)?;
    let disk: u64 = sizes.values().sum();

    let naive_rate = naive_count_tokens as f64 / naive_cpu;
    let e2e_rate = tokenized as f64 / child.cpu;
    let tok_cpu: f64 = child.get("tokenize_cpu")?;
    let tok_wall: f64 = child.get("tokenize_s")?;
    let sa_wall: f64 = child.get("suffix_array_s")?;
    let write_wall: f64 = child.get("write_s")?;
    let mut t = Table::new(
        format!(
            "(b) real corpus: {} documents, {} tokens, {} shard(s), {} threads",
            documents,
            fmt_si(tokenized as f64),
            shards,
            child.get::<u64>("threads")?
        ),
        &["stage", "wall", "CPU", "tokens/CPU-s", "vs naive pipeline"],
    );
    t.row(vec![
        format!(
            "naive pipeline, 1 thread, {} tokens of {} (baseline)",
            fmt_si(naive_count_tokens as f64),
            Path::new(&naive_file)
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
        ),
        fmt_secs(naive_wall.as_secs_f64()),
        fmt_secs(naive_cpu),
        fmt_si(naive_rate),
        fmt_ratio(1.0),
    ]);
    t.row(vec![
        "familiar build, end to end".into(),
        fmt_secs(child.wall.as_secs_f64()),
        fmt_secs(child.cpu),
        fmt_si(e2e_rate),
        fmt_ratio(e2e_rate / naive_rate),
    ]);
    t.row(vec![
        "  of which read + tokenize".into(),
        fmt_secs(tok_wall),
        fmt_secs(tok_cpu),
        fmt_si(tokenized as f64 / tok_cpu),
        fmt_ratio(tokenized as f64 / tok_cpu / naive_rate),
    ]);
    t.row(vec![
        "  of which suffix sort (wall only)".into(),
        fmt_secs(sa_wall),
        String::new(),
        String::new(),
        String::new(),
    ]);
    t.row(vec![
        "  of which writing + syncing (wall only)".into(),
        fmt_secs(write_wall),
        String::new(),
        String::new(),
        String::new(),
    ]);
    t.row(vec![
        "infini-gram pipeline (reference, not measured here)".into(),
        String::new(),
        String::new(),
        fmt_si(INFINI_GRAM_TOKENS_PER_CPU_S),
        fmt_ratio(INFINI_GRAM_TOKENS_PER_CPU_S / naive_rate),
    ]);
    t.print();
    println!(
        "familiar / infini-gram reference: {}",
        fmt_ratio(e2e_rate / INFINI_GRAM_TOKENS_PER_CPU_S)
    );
    println!(
        "peak memory of the build: {} ({:.2} bytes/token)",
        fmt_bytes(child.max_rss),
        child.max_rss as f64 / tokens as f64
    );
    print_disk(&sizes, tokens);
    println!(
        "target ≥ {} tokens/CPU-s end to end: {} ({})",
        fmt_si(TARGET_BUILD_TOKENS_PER_CPU_S),
        fmt_si(e2e_rate),
        verdict(mode, e2e_rate >= TARGET_BUILD_TOKENS_PER_CPU_S)
    );
    let bpt = disk as f64 / tokens as f64;
    println!(
        "target ≤ {TARGET_BYTES_PER_TOKEN} bytes/token on disk: {bpt:.3} ({})",
        verdict(mode, bpt <= TARGET_BYTES_PER_TOKEN)
    );
    if std::env::var_os("FAMILIAR_BENCH_KEEP").is_none() {
        remove_dir(&out)?;
    } else {
        println!("index kept at {}", out.display());
    }
    Ok(())
}

/// Reads, tokenizes (one thread), sorts the suffixes by comparison and writes tokens and suffix
/// array of the first `limit` tokens of `file`. Returns the text (with separators), its suffix
/// array and the number of non-separator tokens.
fn naive_pipeline(
    tokenizer: &Tokenizer,
    file: &str,
    limit: u64,
    scratch: &Path,
) -> BenchResult<(Vec<u16>, Vec<i32>, u64)> {
    use std::io::Write;
    let files = corpus::expand_inputs(&[file])?.files;
    let reader = CorpusReader::new(files, ReadOptions::default(), InputCursor::default());
    let sep = u16::try_from(tokenizer.vocab_size()).map_err(|_| "vocabulary exceeds u16")?;
    let mut text: Vec<u16> = Vec::new();
    let mut tokens = 0u64;
    for doc in reader {
        let ids = tokenizer.encode(&doc?.text)?;
        let room = (limit - tokens) as usize;
        for &id in ids.iter().take(room) {
            text.push(u16::try_from(id).map_err(|_| "token id exceeds u16")?);
        }
        tokens += ids.len().min(room) as u64;
        text.push(sep);
        if tokens >= limit {
            break;
        }
    }
    let sa = naive_suffix_array(&text);
    let f = std::fs::File::create(scratch)?;
    let mut w = std::io::BufWriter::new(f);
    for &t in &text {
        w.write_all(&t.to_le_bytes())?;
    }
    for &p in &sa {
        w.write_all(&p.to_le_bytes())?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok((text, sa, tokens))
}

fn child_real_build() -> BenchResult<()> {
    let out = env_path("FAMILIAR_BENCH_OUT")?;
    let tokenizer = env_path("FAMILIAR_BENCH_TOKENIZER")?;
    let inputs: Vec<String> = std::env::var("FAMILIAR_BENCH_INPUTS")?
        .lines()
        .map(|s| s.to_string())
        .collect();
    let threads = threads();
    let timeline = CpuTimeline::start(Duration::from_millis(10), &["familiar-read"]);
    let mut options = BuildOptions::new(tokenizer, out, inputs);
    options.threads = Some(threads);
    // The n-gram index, comparable with infini-gram's; the text index is measured by the
    // concepts bench.
    options.text_index = false;
    let r = build(&options)?;
    let tl = timeline.finish();
    let read_start = *tl
        .first_seen
        .get("familiar-read")
        .ok_or("the reader thread was never seen")?;
    let tokenize_s = r.tokenize_time.as_secs_f64();
    report("tokens", r.tokens);
    report("tokens_tokenized", r.tokens_tokenized);
    report("documents", r.documents);
    report("shards", r.shards_built);
    report("threads", threads);
    report("tokenize_s", tokenize_s);
    report(
        "tokenize_cpu",
        tl.cpu_between(read_start, read_start + tokenize_s),
    );
    report("suffix_array_s", r.suffix_array_time.as_secs_f64());
    report("write_s", r.write_time.as_secs_f64());
    report("total_s", r.total_time.as_secs_f64());
    Ok(())
}

fn print_disk(sizes: &std::collections::BTreeMap<String, u64>, tokens: u64) {
    let disk: u64 = sizes.values().sum();
    let parts: Vec<String> = sizes
        .iter()
        .map(|(k, v)| format!("{k} {:.3}", *v as f64 / tokens as f64))
        .collect();
    println!(
        "on disk (shard files): {} = {:.3} bytes/token ({})",
        fmt_bytes(disk),
        disk as f64 / tokens as f64,
        parts.join(", ")
    );
}

/// Opens the index, compares `queries` n-gram counts (sampled from its text, and from position
/// `skip` on) with a naive scan of every shard's tokens.
fn check_index_counts(dir: &Path, queries: usize, seed: u64) -> BenchResult<()> {
    let index = Index::open(dir)?;
    let shards = index.shards();
    let mut rng = SplitMix64::new(seed ^ 0xC0FFEE);
    let mut checked = 0;
    let mut attempts = 0;
    while checked < queries && attempts < queries * 100 {
        attempts += 1;
        let shard = &shards[rng.below(shards.len() as u64) as usize];
        let len = 1 + rng.below(4) as usize;
        let q: Option<Vec<u32>> = familiar::with_view!(shard, |v| {
            let n = v.tokens.len();
            if n <= len {
                None
            } else {
                let p = rng.below((n - len) as u64) as usize;
                let q: Vec<u32> = v.tokens[p..p + len].iter().map(|t| t.to_u32()).collect();
                (!q.contains(&v.separator)).then_some(q)
            }
        });
        let Some(q) = q else { continue };
        let expected: u64 = shards
            .iter()
            .map(|s| {
                familiar::with_view!(s, |v| {
                    let pat: Option<Vec<_>> = q.iter().map(|&i| Token::from_u32(i)).collect();
                    pat.map_or(0, |p: Vec<_>| naive_count(v.tokens, &p))
                })
            })
            .sum();
        let got = ngram::count(&index, &q)?;
        if got != expected {
            return Err(format!(
                "{}: count of {q:?} is {got}, a naive scan finds {expected}",
                dir.display()
            )
            .into());
        }
        checked += 1;
    }
    if checked < queries {
        return Err(format!("could not sample {queries} n-grams from {}", dir.display()).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (c) A generated billion-token corpus

fn generated_bench(mode: Mode, base: &Path, naive_rate: f64) -> BenchResult<()> {
    let positions = env_count("FAMILIAR_BENCH_TOKENS", mode.pick(500_000, 1_000_000_000));
    let shard_tokens = env_count(
        "FAMILIAR_BENCH_SHARD_TOKENS",
        auto_shard_tokens(TokenWidth::U16),
    );
    let tokenizer = generated_tokenizer(base)?;
    let (out, scratch) = match mode {
        Mode::Full => (generated_index_dir(base, positions), None),
        Mode::Smoke => {
            let s = base.join(format!("smoke-build-{}", std::process::id()));
            (s.join("index"), Some(s))
        }
    };
    remove_dir(&out)?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    println!(
        "\n(c) generated corpus: {} positions, Zipf({GEN_ZIPF}) over {GEN_VOCAB} ids, documents of \
         {}–{} tokens (log-uniform), streamed into build_from_tokens; shard size {}",
        fmt_si(positions as f64),
        GEN_DOC_LEN.0,
        GEN_DOC_LEN.1,
        fmt_si(shard_tokens as f64)
    );
    let child = run_child(
        "gen",
        &[
            ("FAMILIAR_BENCH_OUT", out.display().to_string()),
            ("FAMILIAR_BENCH_TOKENIZER", tokenizer.display().to_string()),
            ("FAMILIAR_BENCH_GEN_POSITIONS", positions.to_string()),
            ("FAMILIAR_BENCH_GEN_SHARD", shard_tokens.to_string()),
        ],
    )?;
    let tokens: u64 = child.get("tokens")?;
    let documents: u64 = child.get("documents")?;
    if tokens != positions {
        return Err(format!("the index holds {tokens} positions, not {positions}").into());
    }
    let index = Index::open(&out)?;
    if index.manifest().tokens != tokens || index.documents() != documents {
        return Err("index manifest disagrees with the build report".into());
    }
    drop(index);
    check_index_counts(&out, mode.pick(8, 2), 1)?;
    let sizes = shard_file_sizes(&out)?;
    let disk: u64 = sizes.values().sum();

    let gen_cpu: f64 = child.get("gen_cpu")?;
    let gen_wall: f64 = child.get("gen_wall")?;
    let cut_cpu: f64 = child.get("cut_cpu")?;
    let cut_wall: f64 = child.get("cut_wall")?;
    let sa_wall: f64 = child.get("suffix_array_s")?;
    let write_wall: f64 = child.get("write_s")?;
    let shards: u64 = child.get("shards")?;
    let cut_rate = tokens as f64 / cut_cpu;
    let mut t = Table::new(
        format!(
            "(c) generated corpus: {} documents, {} positions, {} shard(s), {} threads",
            documents,
            fmt_si(tokens as f64),
            shards,
            child.get::<u64>("threads")?
        ),
        &[
            "stage",
            "wall",
            "CPU",
            "tokens/CPU-s",
            "vs naive sort_by (a)",
        ],
    );
    t.row(vec![
        "naive sort_by on suffixes (baseline, from (a))".into(),
        String::new(),
        String::new(),
        fmt_si(naive_rate),
        fmt_ratio(1.0),
    ]);
    t.row(vec![
        "generate + push documents (1 thread)".into(),
        fmt_secs(gen_wall),
        fmt_secs(gen_cpu),
        fmt_si(tokens as f64 / gen_cpu),
        String::new(),
    ]);
    t.row(vec![
        "shard cuts: suffix sort + write + sync + verify".into(),
        fmt_secs(cut_wall),
        fmt_secs(cut_cpu),
        fmt_si(cut_rate),
        fmt_ratio(cut_rate / naive_rate),
    ]);
    t.row(vec![
        "  of which suffix sort (wall only)".into(),
        fmt_secs(sa_wall),
        String::new(),
        format!("{} /wall-s", fmt_si(tokens as f64 / sa_wall)),
        String::new(),
    ]);
    t.row(vec![
        "  of which writing + syncing (wall only)".into(),
        fmt_secs(write_wall),
        String::new(),
        String::new(),
        String::new(),
    ]);
    t.row(vec![
        "whole child process (generation included)".into(),
        fmt_secs(child.wall.as_secs_f64()),
        fmt_secs(child.cpu),
        fmt_si(tokens as f64 / child.cpu),
        String::new(),
    ]);
    t.print();
    println!(
        "peak memory of the build: {} ({:.2} bytes/token)",
        fmt_bytes(child.max_rss),
        child.max_rss as f64 / tokens as f64
    );
    print_disk(&sizes, tokens);
    println!(
        "target ≥ {} tokens/CPU-s for suffix sorting (measured conservatively over whole shard \
         cuts): {} ({})",
        fmt_si(TARGET_SA_TOKENS_PER_CPU_S),
        fmt_si(cut_rate),
        verdict(mode, cut_rate >= TARGET_SA_TOKENS_PER_CPU_S)
    );
    let bpt = disk as f64 / tokens as f64;
    println!(
        "target ≤ {TARGET_BYTES_PER_TOKEN} bytes/token on disk: {bpt:.3} ({})",
        verdict(mode, bpt <= TARGET_BYTES_PER_TOKEN)
    );
    match scratch {
        Some(s) => remove_dir(&s)?,
        None => println!("index kept for the query bench at {}", out.display()),
    }
    Ok(())
}

/// Wraps the document stream and notes the wall-clock windows in which the builder cuts shards:
/// from handing over the document that overflows the current shard to the next request (and
/// from the end of the stream to the end of the build).
struct CutTracker {
    docs: GeneratedDocs,
    shard_tokens: u64,
    fill: u64,
    start: Instant,
    pending: Option<f64>,
    state: Arc<Mutex<CutState>>,
}

#[derive(Default)]
struct CutState {
    windows: Vec<(f64, f64)>,
    exhausted_at: Option<f64>,
}

impl Iterator for CutTracker {
    type Item = Vec<u32>;
    fn next(&mut self) -> Option<Vec<u32>> {
        let now = self.start.elapsed().as_secs_f64();
        if let Some(s) = self.pending.take() {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.windows.push((s, now));
        }
        match self.docs.next() {
            Some(d) => {
                let need = d.len() as u64 + 1;
                if self.fill > 0 && self.fill + need > self.shard_tokens {
                    self.pending = Some(self.start.elapsed().as_secs_f64());
                    self.fill = 0;
                }
                self.fill += need;
                Some(d)
            }
            None => {
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                st.exhausted_at = Some(self.start.elapsed().as_secs_f64());
                None
            }
        }
    }
}

fn child_generated_build() -> BenchResult<()> {
    let out = env_path("FAMILIAR_BENCH_OUT")?;
    let tokenizer = env_path("FAMILIAR_BENCH_TOKENIZER")?;
    let positions = env_count("FAMILIAR_BENCH_GEN_POSITIONS", 1_000_000);
    let shard_tokens = env_count("FAMILIAR_BENCH_GEN_SHARD", 1 << 30);
    let threads = threads();
    let timeline = CpuTimeline::start(Duration::from_millis(10), &[]);
    let state = Arc::new(Mutex::new(CutState::default()));
    let docs = CutTracker {
        docs: GeneratedDocs::new(positions, GEN_SEED),
        shard_tokens,
        fill: 0,
        start: timeline.started(),
        pending: None,
        state: Arc::clone(&state),
    };
    let t0 = timeline.now();
    let r = build_from_tokens(&tokenizer, &out, docs, shard_tokens, threads)?;
    let t1 = timeline.now();
    let tl = timeline.finish();
    let st = state.lock().unwrap_or_else(|e| e.into_inner());
    let exhausted = st
        .exhausted_at
        .ok_or("the document stream was not exhausted")?;
    let mut windows = st.windows.clone();
    windows.push((exhausted, t1));
    let cut_cpu: f64 = windows.iter().map(|&(a, b)| tl.cpu_between(a, b)).sum();
    let cut_wall: f64 = windows.iter().map(|&(a, b)| b - a).sum();
    report("tokens", r.tokens);
    report("documents", r.documents);
    report("shards", r.shards_built);
    report("threads", threads);
    report("cut_cpu", cut_cpu);
    report("cut_wall", cut_wall);
    report("gen_cpu", tl.cpu_between(t0, t1) - cut_cpu);
    report("gen_wall", (t1 - t0) - cut_wall);
    report("suffix_array_s", r.suffix_array_time.as_secs_f64());
    report("write_s", r.write_time.as_secs_f64());
    report("total_s", r.total_time.as_secs_f64());
    Ok(())
}
