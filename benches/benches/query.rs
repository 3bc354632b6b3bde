//! Query benchmark: `ngram::count`, `ngram::next_tokens` and two-clause `ngram::cnf` latencies on
//! the generated billion-token index (warm page cache), each against a naive scan of a sample of
//! the same corpus, whose answers must agree with the index's.
//!
//! `cargo bench -p familiar-benches --bench query` measures at full scale (building the index under
//! `target/bench-data/` first if the build bench has not left it there); `cargo test -p
//! familiar-benches --benches` runs a smoke version. See `benches/README.md`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use familiar::index::{Index, OpenOptions, Shard, ShardTokens};
use familiar::token::{Token, TokenWidth};
use familiar_benches::*;
use familiar_index_builder::build::build_from_tokens;
use familiar_index_builder::fixtures::SplitMix64;
use familiar_index_builder::memory::auto_shard_tokens;
use familiar_index_builder::sa::MAX_SHARD_TOKENS;
use familiar_query::ngram::{self, Cnf, CnfOptions, CnfResult, NextTokens};

const TARGET_COUNT_P50: f64 = 10e-6;
const TARGET_COUNT_P99: f64 = 100e-6;
const TARGET_NTD_P50: f64 = 1e-3;
const TARGET_CNF_P50: f64 = 2e-3;

fn main() {
    set_omp_passive();
    let mode = Mode::from_args();
    if let Err(e) = run(mode) {
        eprintln!("query bench failed: {e}");
        std::process::exit(1);
    }
}

/// Sizes of one run.
struct Plan {
    count_per_len: usize,
    absent: usize,
    ntd_per_len: usize,
    cnf: usize,
    naive_count: usize,
    naive_ntd: usize,
    naive_cnf: usize,
}

fn run(mode: Mode) -> BenchResult<()> {
    let started = Instant::now();
    println!("familiar query bench — {} mode", mode.name());
    println!("machine: {}", machine());
    let base = bench_dir(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base)?;
    let positions = env_count("FAMILIAR_BENCH_TOKENS", mode.pick(300_000, 1_000_000_000));
    let sample_positions = env_count(
        "FAMILIAR_BENCH_SAMPLE_TOKENS",
        mode.pick(60_000, 10_000_000),
    )
    .min(positions);
    let scale = env_count("FAMILIAR_BENCH_QUERIES", 1).max(1) as usize;
    let plan = match mode {
        Mode::Smoke => Plan {
            count_per_len: 30,
            absent: 10,
            ntd_per_len: 3,
            cnf: 8,
            naive_count: 12,
            naive_ntd: 4,
            naive_cnf: 4,
        },
        Mode::Full => Plan {
            count_per_len: 4000 * scale,
            absent: 1000 * scale,
            ntd_per_len: 50 * scale,
            cnf: 200 * scale,
            naive_count: 60,
            naive_ntd: 20,
            naive_cnf: 20,
        },
    };
    let tokenizer = generated_tokenizer(&base)?;
    let (dir, sample_dir, scratch) = match mode {
        Mode::Full => (
            generated_index_dir(&base, positions),
            base.join(format!(
                "gen-sample-{sample_positions}-of-{}",
                generated_index_dir(&base, positions)
                    .file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
            )),
            None,
        ),
        Mode::Smoke => {
            let s = base.join(format!("smoke-query-{}", std::process::id()));
            (s.join("index"), s.join("sample"), Some(s))
        }
    };
    let shard_tokens = env_count(
        "FAMILIAR_BENCH_SHARD_TOKENS",
        auto_shard_tokens(TokenWidth::U16),
    );
    ensure_index(&dir, &tokenizer, positions, u64::MAX, shard_tokens)?;
    ensure_index(
        &sample_dir,
        &tokenizer,
        positions,
        sample_positions,
        MAX_SHARD_TOKENS,
    )?;

    let index = Index::open_with(&dir, OpenOptions { preload: true })?;
    let sample = Index::open(&sample_dir)?;
    let (_, warm_wall, _) = measure(|| {
        for s in index.shards().iter().chain(sample.shards()) {
            warm(s);
        }
    });
    let n_index = index.manifest().tokens;
    let text = u16_tokens(&sample.shards()[0])?;
    let sep = u16::try_from(sample.manifest().separator).map_err(|_| "separator exceeds u16")?;
    check_prefix(&index, text)?;
    println!(
        "index: {} positions, {} documents, {} shard(s) at {}\nsample: the first {} positions \
         ({} documents), indexed separately at {}\npage cache warmed in {:.1} s",
        fmt_si(n_index as f64),
        index.documents(),
        index.shards().len(),
        dir.display(),
        fmt_si(text.len() as f64),
        sample.documents(),
        sample_dir.display(),
        warm_wall.as_secs_f64()
    );
    // Queries are drawn from the sample (= the start of the index), so they occur in both.
    let mut rng = SplitMix64::new(0xBEEF);
    let extrapolate = n_index as f64 / text.len() as f64;
    let mut summary = Table::new(
        format!(
            "query latency on {} positions vs naive scan of {} (extrapolated ×{:.0})",
            fmt_si(n_index as f64),
            fmt_si(text.len() as f64),
            extrapolate
        ),
        &[
            "query",
            "n",
            "p50",
            "p99",
            "naive on sample",
            "naive extrapolated",
            "speed-up at p50",
            "target",
            "verdict",
        ],
    );

    // ---- count
    let mut queries: Vec<(String, Vec<u32>)> = Vec::new();
    for len in 1..=5 {
        for _ in 0..plan.count_per_len {
            queries.push((
                format!("{len}-gram"),
                sample_ngram(&mut rng, text, sep, len),
            ));
        }
    }
    for _ in 0..plan.absent {
        let len = 3 + rng.below(3) as usize;
        let q: Vec<u32> = (0..len)
            .map(|_| rng.below(u64::from(GEN_VOCAB)) as u32)
            .collect();
        queries.push(("random ids".into(), q));
    }
    shuffle(&mut rng, &mut queries);
    for (_, q) in queries.iter().take(200) {
        std::hint::black_box(ngram::count(&index, q)?);
    }
    let mut by_class: HashMap<String, (Vec<f64>, Vec<u64>)> = HashMap::new();
    let mut all = Vec::with_capacity(queries.len());
    for (class, q) in &queries {
        let t = Instant::now();
        let c = ngram::count(&index, q)?;
        let d = t.elapsed().as_secs_f64();
        all.push(d);
        let e = by_class.entry(class.clone()).or_default();
        e.0.push(d);
        e.1.push(c);
    }
    let mut t = Table::new(
        "ngram::count by query kind",
        &[
            "kind",
            "n",
            "median occurrences",
            "found",
            "p50",
            "p99",
            "max",
        ],
    );
    let mut classes: Vec<&String> = by_class.keys().collect();
    classes.sort();
    for class in classes {
        let (d, c) = &by_class[class];
        let s = sorted(d);
        let mut cs = c.clone();
        cs.sort_unstable();
        t.row(vec![
            class.clone(),
            d.len().to_string(),
            cs[cs.len() / 2].to_string(),
            format!("{}", c.iter().filter(|&&x| x > 0).count()),
            fmt_secs(percentile(&s, 0.5)),
            fmt_secs(percentile(&s, 0.99)),
            fmt_secs(percentile(&s, 1.0)),
        ]);
    }
    let all_s = sorted(&all);
    t.row(vec![
        "all".into(),
        all.len().to_string(),
        String::new(),
        String::new(),
        fmt_secs(percentile(&all_s, 0.5)),
        fmt_secs(percentile(&all_s, 0.99)),
        fmt_secs(percentile(&all_s, 1.0)),
    ]);
    t.print();
    // Naive baseline on the sample, answers checked against the sample index.
    let mut naive_times = Vec::new();
    let step = (queries.len() / plan.naive_count.max(1)).max(1);
    for (_, q) in queries.iter().step_by(step).take(plan.naive_count) {
        let pat: Vec<u16> = q.iter().map(|&i| i as u16).collect();
        let t0 = Instant::now();
        let expected = naive_count(text, &pat);
        naive_times.push(t0.elapsed().as_secs_f64());
        let got = ngram::count(&sample, q)?;
        if got != expected {
            return Err(
                format!("count of {q:?} on the sample: index {got}, naive {expected}").into(),
            );
        }
    }
    let (c50, c99) = (percentile(&all_s, 0.5), percentile(&all_s, 0.99));
    let naive = median(&naive_times);
    summary.row(vec![
        "count (1–5-grams + random ids)".into(),
        all.len().to_string(),
        fmt_secs(c50),
        fmt_secs(c99),
        naive_cell(naive, text.len()),
        fmt_secs(naive * extrapolate),
        fmt_ratio(naive * extrapolate / c50),
        "p50 ≤ 10 µs, p99 ≤ 100 µs".into(),
        verdict(mode, c50 <= TARGET_COUNT_P50 && c99 <= TARGET_COUNT_P99).into(),
    ]);
    println!(
        "count: {} naive scans on the sample agree with the index",
        naive_times.len()
    );

    // ---- next-token distributions
    let mut prefixes: Vec<Vec<u32>> = Vec::new();
    for len in 1..=4 {
        for _ in 0..plan.ntd_per_len {
            prefixes.push(sample_ngram(&mut rng, text, sep, len));
        }
    }
    shuffle(&mut rng, &mut prefixes);
    let mut ntd: Vec<(usize, u64, usize, f64)> = Vec::new(); // (len, prefix count, distinct, s)
    for p in &prefixes {
        let t0 = Instant::now();
        let r = ngram::next_tokens(&index, p)?;
        let d = t0.elapsed().as_secs_f64();
        ntd.push((p.len(), r.prefix_count, r.next.len(), d));
    }
    let mut t = Table::new(
        "ngram::next_tokens (exact) by prefix frequency",
        &[
            "prefix occurrences",
            "n",
            "prefix lengths",
            "median distinct next",
            "p50",
            "max",
        ],
    );
    let buckets: [(&str, u64, u64); 4] = [
        ("1–100", 1, 100),
        ("101–10k", 101, 10_000),
        ("10k–1M", 10_001, 1_000_000),
        ("> 1M", 1_000_001, u64::MAX),
    ];
    for (name, lo, hi) in buckets {
        let rows: Vec<&(usize, u64, usize, f64)> =
            ntd.iter().filter(|r| r.1 >= lo && r.1 <= hi).collect();
        if rows.is_empty() {
            continue;
        }
        let d = sorted(&rows.iter().map(|r| r.3).collect::<Vec<_>>());
        let mut lens: Vec<usize> = rows.iter().map(|r| r.0).collect();
        lens.sort_unstable();
        lens.dedup();
        let mut distinct: Vec<usize> = rows.iter().map(|r| r.2).collect();
        distinct.sort_unstable();
        t.row(vec![
            name.into(),
            rows.len().to_string(),
            lens.iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(","),
            distinct[distinct.len() / 2].to_string(),
            fmt_secs(percentile(&d, 0.5)),
            fmt_secs(percentile(&d, 1.0)),
        ]);
    }
    let nd = sorted(&ntd.iter().map(|r| r.3).collect::<Vec<_>>());
    t.row(vec![
        "all (prefix lengths 1–4)".into(),
        nd.len().to_string(),
        String::new(),
        String::new(),
        fmt_secs(percentile(&nd, 0.5)),
        fmt_secs(percentile(&nd, 1.0)),
    ]);
    t.print();
    let mut naive_times = Vec::new();
    let step = (prefixes.len() / plan.naive_ntd.max(1)).max(1);
    for p in prefixes.iter().step_by(step).take(plan.naive_ntd) {
        let pat: Vec<u16> = p.iter().map(|&i| i as u16).collect();
        let t0 = Instant::now();
        let expected = naive_next_tokens(text, &pat, sep);
        naive_times.push(t0.elapsed().as_secs_f64());
        let got = ngram::next_tokens(&sample, p)?;
        if got != expected {
            return Err(
                format!("next tokens of {p:?} on the sample: index and naive differ").into(),
            );
        }
    }
    let n50 = percentile(&nd, 0.5);
    let naive = median(&naive_times);
    summary.row(vec![
        "next_tokens (exact; prefixes 1–4 tokens)".into(),
        nd.len().to_string(),
        fmt_secs(n50),
        fmt_secs(percentile(&nd, 0.99)),
        naive_cell(naive, text.len()),
        fmt_secs(naive * extrapolate),
        fmt_ratio(naive * extrapolate / n50),
        "p50 ≤ 1 ms".into(),
        verdict(mode, n50 <= TARGET_NTD_P50).into(),
    ]);
    println!(
        "next_tokens: {} naive scans on the sample agree with the index",
        naive_times.len()
    );

    // ---- CNF: two clauses, each an n-gram of 1–3 tokens from the same document
    let mut cnfs: Vec<Cnf> = Vec::new();
    for _ in 0..plan.cnf {
        cnfs.push(sample_cnf(&mut rng, text, sep));
    }
    let options = CnfOptions::default();
    // (rarest clause total, documents, seconds, query index)
    let mut cnf_rows: Vec<(u64, u64, f64, usize)> = Vec::new();
    let mut cnf_totals: Vec<Vec<u64>> = Vec::new();
    for (i, q) in cnfs.iter().enumerate() {
        let t0 = Instant::now();
        let r = ngram::cnf(&index, q, &options)?;
        let d = t0.elapsed().as_secs_f64();
        let rarest = r.clause_totals.iter().copied().min().unwrap_or(0);
        cnf_rows.push((rarest, r.documents, d, i));
        cnf_totals.push(r.clause_totals);
    }
    let mut t = Table::new(
        "ngram::cnf (two clauses, exact) by occurrences of the rarer clause",
        &[
            "rarer clause occurrences",
            "n",
            "median matching docs",
            "p50",
            "max",
        ],
    );
    for (name, lo, hi) in buckets {
        let rows: Vec<&(u64, u64, f64, usize)> =
            cnf_rows.iter().filter(|r| r.0 >= lo && r.0 <= hi).collect();
        if rows.is_empty() {
            continue;
        }
        let d = sorted(&rows.iter().map(|r| r.2).collect::<Vec<_>>());
        let mut docs: Vec<u64> = rows.iter().map(|r| r.1).collect();
        docs.sort_unstable();
        t.row(vec![
            name.into(),
            rows.len().to_string(),
            docs[docs.len() / 2].to_string(),
            fmt_secs(percentile(&d, 0.5)),
            fmt_secs(percentile(&d, 1.0)),
        ]);
    }
    let cd = sorted(&cnf_rows.iter().map(|r| r.2).collect::<Vec<_>>());
    t.row(vec![
        "all".into(),
        cd.len().to_string(),
        String::new(),
        fmt_secs(percentile(&cd, 0.5)),
        fmt_secs(percentile(&cd, 1.0)),
    ]);
    t.print();
    let mut slowest: Vec<&(u64, u64, f64, usize)> = cnf_rows.iter().collect();
    slowest.sort_by(|a, b| b.2.total_cmp(&a.2));
    for r in slowest.iter().take(3) {
        let q = &cnfs[r.3];
        let lens: Vec<usize> = q.clauses.iter().map(|c| c[0].len()).collect();
        println!(
            "  slow: {} — clause lengths {lens:?}, occurrences {:?}, {} matching documents",
            fmt_secs(r.2),
            cnf_totals[r.3],
            r.1
        );
    }
    let mut naive_times = Vec::new();
    let step = (cnfs.len() / plan.naive_cnf.max(1)).max(1);
    for q in cnfs.iter().step_by(step).take(plan.naive_cnf) {
        let t0 = Instant::now();
        let expected = naive_cnf(text, q, sep, options.list_documents);
        naive_times.push(t0.elapsed().as_secs_f64());
        let got = ngram::cnf(&sample, q, &options)?;
        if got != expected {
            return Err(format!(
                "CNF {:?} on the sample: index {got:?}, naive {expected:?}",
                q.clauses
            )
            .into());
        }
    }
    let k50 = percentile(&cd, 0.5);
    let naive = median(&naive_times);
    summary.row(vec![
        "cnf (2 clauses of 1–3-grams)".into(),
        cd.len().to_string(),
        fmt_secs(k50),
        fmt_secs(percentile(&cd, 0.99)),
        naive_cell(naive, text.len()),
        fmt_secs(naive * extrapolate),
        fmt_ratio(naive * extrapolate / k50),
        "p50 ≤ 2 ms".into(),
        verdict(mode, k50 <= TARGET_CNF_P50).into(),
    ]);
    println!(
        "cnf: {} naive scans on the sample agree with the index",
        naive_times.len()
    );

    summary.print();
    drop((index, sample));
    if let Some(s) = scratch {
        remove_dir(&s)?;
    }
    println!(
        "\nquery bench ({} mode) finished in {:.1} s",
        mode.name(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds the generated index of `positions` positions into `dir` unless its manifest exists;
/// with `limit`, only the whole documents that fit in the first `limit` positions.
fn ensure_index(
    dir: &Path,
    tokenizer: &Path,
    positions: u64,
    limit: u64,
    shard_tokens: u64,
) -> BenchResult<()> {
    if dir.join("manifest.json").exists() {
        return Ok(());
    }
    remove_dir(dir)?;
    if let Some(p) = dir.parent() {
        std::fs::create_dir_all(p)?;
    }
    println!("building {} (not found) ...", dir.display());
    let mut used = 0u64;
    let docs = GeneratedDocs::new(positions, GEN_SEED).take_while(move |d| {
        used += d.len() as u64 + 1;
        used <= limit
    });
    let (r, wall, _) = measure(|| build_from_tokens(tokenizer, dir, docs, shard_tokens, threads()));
    let r = r?;
    println!(
        "  built {} positions in {} shard(s) in {:.1} s",
        r.tokens,
        r.shards_built,
        wall.as_secs_f64()
    );
    Ok(())
}

/// A naive scan's time per query, and per token scanned.
fn naive_cell(secs: f64, tokens: usize) -> String {
    format!(
        "{} ({:.2} ns/token)",
        fmt_secs(secs),
        secs * 1e9 / tokens as f64
    )
}

fn u16_tokens(shard: &Shard) -> BenchResult<&[u16]> {
    match &shard.tokens {
        ShardTokens::U16(t) => Ok(t.tokens()),
        ShardTokens::U32(_) => Err("generated indexes store u16 tokens".into()),
    }
}

/// Reads every page of a shard's files.
fn warm(shard: &Shard) {
    let mut acc = 0u64;
    familiar::with_view!(shard, |v| {
        let mut i = 0;
        while i < v.tokens.len() {
            acc = acc.wrapping_add(u64::from(v.tokens[i].to_u32()));
            i += 1024;
        }
    });
    acc = acc.wrapping_add(touch_pages(shard.suffix_array.bytes()));
    acc = acc.wrapping_add(touch_pages(shard.doc_offsets.bytes()));
    std::hint::black_box(acc);
}

/// Checks that the sample's text is the start of the index's.
fn check_prefix(index: &Index, text: &[u16]) -> BenchResult<()> {
    let first = &index.shards()[0];
    let full = u16_tokens(first)?;
    if full.len() >= text.len() && full[..text.len()] != *text {
        return Err("the sample index is not a prefix of the full index".into());
    }
    Ok(())
}

fn shuffle<T>(rng: &mut SplitMix64, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// An n-gram of `len` tokens at a random position of `text`, inside one document.
fn sample_ngram(rng: &mut SplitMix64, text: &[u16], sep: u16, len: usize) -> Vec<u32> {
    loop {
        let p = rng.below((text.len() - len) as u64) as usize;
        let w = &text[p..p + len];
        if !w.contains(&sep) {
            return w.iter().map(|&t| u32::from(t)).collect();
        }
    }
}

/// Two clauses, each one n-gram (1–3 tokens) from the same random document.
fn sample_cnf(rng: &mut SplitMix64, text: &[u16], sep: u16) -> Cnf {
    loop {
        let p = rng.below(text.len() as u64) as usize;
        if text[p] == sep {
            continue;
        }
        let start = text[..p]
            .iter()
            .rposition(|&t| t == sep)
            .map_or(0, |i| i + 1);
        let end = p + text[p..]
            .iter()
            .position(|&t| t == sep)
            .unwrap_or(text.len() - p);
        let doc = &text[start..end];
        let (la, lb) = (1 + rng.below(3) as usize, 1 + rng.below(3) as usize);
        if doc.len() < la.max(lb) {
            continue;
        }
        let a = rng.below((doc.len() - la + 1) as u64) as usize;
        let b = rng.below((doc.len() - lb + 1) as u64) as usize;
        let to_ids = |w: &[u16]| w.iter().map(|&t| u32::from(t)).collect::<Vec<u32>>();
        return Cnf {
            clauses: vec![vec![to_ids(&doc[a..a + la])], vec![to_ids(&doc[b..b + lb])]],
        };
    }
}

/// The next-token distribution of `prefix` by linear scan.
fn naive_next_tokens(text: &[u16], prefix: &[u16], sep: u16) -> NextTokens {
    let m = prefix.len();
    let mut next: HashMap<u32, u64> = HashMap::new();
    let (mut prefix_count, mut end_of_document) = (0, 0);
    for (i, w) in text.windows(m).enumerate() {
        if w == prefix {
            prefix_count += 1;
            match text.get(i + m) {
                Some(&t) if t != sep => *next.entry(u32::from(t)).or_default() += 1,
                _ => end_of_document += 1,
            }
        }
    }
    let mut next: Vec<(u32, u64)> = next.into_iter().collect();
    next.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    NextTokens {
        prefix_count,
        end_of_document,
        next,
    }
}

/// A CNF query by linear scan of every document.
fn naive_cnf(text: &[u16], q: &Cnf, sep: u16, list: usize) -> CnfResult {
    let k = q.clauses.len();
    let clauses: Vec<Vec<Vec<u16>>> = q
        .clauses
        .iter()
        .map(|c| {
            c.iter()
                .map(|t| t.iter().map(|&i| i as u16).collect())
                .collect()
        })
        .collect();
    let mut r = CnfResult {
        documents: 0,
        clause_occurrences: vec![0; k],
        occurrences: 0,
        clause_totals: vec![0; k],
        approximate: false,
        estimate: None,
        doc_ids: Vec::new(),
    };
    let mut occ = vec![0u64; k];
    // The text ends with a separator: the last piece is empty and matches nothing.
    for (doc_id, doc) in text.split(|&t| t == sep).enumerate() {
        for (c, clause) in clauses.iter().enumerate() {
            occ[c] = clause.iter().map(|p| naive_count(doc, p)).sum();
            r.clause_totals[c] += occ[c];
        }
        if occ.iter().all(|&o| o > 0) {
            r.documents += 1;
            for (total, o) in r.clause_occurrences.iter_mut().zip(&occ) {
                *total += o;
            }
            if r.doc_ids.len() < list {
                r.doc_ids.push(doc_id as u64);
            }
        }
    }
    r.occurrences = r.clause_occurrences.iter().sum();
    r
}
