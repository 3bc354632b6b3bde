//! `familiar serve` under load, over loopback, on the whole real corpus (the concepts bench's
//! index): the server runs in this process; clients keep one HTTP/1.1 connection each.
//!
//! 1. The next-token cache: the most frequent prefixes' distributions computed ahead (time and
//!    memory), against the same distributions computed without it (the library call, measured
//!    here: the baseline of "today about 230 ms").
//! 2. Overhead: one client, each query sent over HTTP and called on the library directly; the
//!    server's overhead is the difference of the medians, per query type. Also the handler's own
//!    time (infini-gram's `latency`) and the overhead beyond the floor (a `GET /healthz` after
//!    each request: loopback and HTTP at the same moment).
//! 3. Load: 32 concurrent clients, a mix of count, prob, ntd (with the most frequent prefixes),
//!    infgram_ntd and search_docs, bounded in count and time: p50/p99 per type, errors (none
//!    allowed), and the resident memory before and after (flat).
//!
//! Every HTTP answer is checked against the library's. `cargo bench -p familiar-benches --bench
//! serve` measures at full scale; `cargo test -p familiar-benches --benches` runs a smoke version
//! on the fixture corpus. See `benches/README.md`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use familiar::index::Index;
use familiar::rng::SplitMix64;
use familiar::with_view;
use familiar_benches::*;
use familiar_query::{infgram, ngram};
use serde_json::{json, Value};

/// Targets (issue 18).
const OVERHEAD_TARGET_US: f64 = 100.0;
const COUNT_P99_TARGET_MS: f64 = 2.0;
const NTD_P99_TARGET_MS: f64 = 20.0;
const CLIENTS: usize = 32;
const KINDS: [&str; 5] = ["count", "prob", "ntd", "infgram_ntd", "search_docs"];

fn main() {
    set_omp_passive();
    let mode = Mode::from_args();
    let result = match child_phase().as_deref() {
        Some("load") => load_child(),
        Some(other) => Err(format!("unknown phase {other}").into()),
        None => run(mode),
    };
    if let Err(e) = result {
        eprintln!("serve bench failed: {e}");
        std::process::exit(1);
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: &str) -> BenchResult<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    /// POSTs `body` as JSON; (status, body).
    fn post(&mut self, path: &str, body: &str) -> BenchResult<(u16, Vec<u8>)> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.exchange(&req)
    }

    /// GETs `path`; (status, body).
    fn get(&mut self, path: &str) -> BenchResult<(u16, Vec<u8>)> {
        self.exchange(&format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n"))
    }

    fn exchange(&mut self, req: &str) -> BenchResult<(u16, Vec<u8>)> {
        self.stream.write_all(req.as_bytes())?;
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or("no status")?;
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or("no content-length")?;
                if self.buf.len() >= end + 4 + len {
                    let body = self.buf[end + 4..end + 4 + len].to_vec();
                    self.buf.drain(..end + 4 + len);
                    return Ok((status, body));
                }
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A request of the mix and the library's answer to compare with.
#[derive(Clone)]
struct Request {
    kind: &'static str,
    body: String,
    /// The field compared, and its value from the library.
    check: (&'static str, Value),
}

/// Random n-grams of the corpus (a random position of a random shard, lengths 1..=max).
fn ngrams(index: &Index, rng: &mut SplitMix64, n: usize, max: u64) -> BenchResult<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let shard = &index.shards()[rng.below(index.shards().len() as u64) as usize];
        let len = 1 + rng.below(max) as usize;
        let q: Vec<u32> = with_view!(shard, |v| {
            let at = rng.below(v.tokens.len().saturating_sub(len).max(1) as u64) as usize;
            v.tokens[at..at + len]
                .iter()
                .map(|t| familiar::token::Token::to_u32(*t))
                .collect()
        });
        if !q.contains(&index.vocab_size()) {
            out.push(q);
        }
    }
    Ok(out)
}

fn run(mode: Mode) -> BenchResult<()> {
    println!("familiar serve bench ({}) on {}", mode.name(), machine());
    let (dir, full, _) = real_corpus_index(mode, env!("CARGO_TARGET_TMPDIR"), "serve")?;
    let app = familiar_serve::App::open(
        &[("bench".to_string(), dir.clone())],
        familiar_serve::Limits {
            queue: 1024,
            log_requests: false,
            // Warmed below, measured.
            ntd_warm: 0,
            ..familiar_serve::Limits::default()
        },
    )?;
    let served = &app.indexes()["bench"];
    let index = Arc::clone(&served.index);
    let cache = Arc::clone(&served.ntd);
    let positions: u64 = index.shards().iter().map(|s| s.manifest.tokens).sum();
    println!(
        "index: {} ({} documents, {positions} positions, {} shards){}",
        dir.display(),
        index.documents(),
        index.shards().len(),
        if full { "" } else { " — the fixture corpus" }
    );

    // 1. The frequent prefixes, without the cache and with it.
    let min_count = familiar_serve::Limits::default().ntd_cache_min_count;
    let warm_n = mode.pick(50, 1000) as usize;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (warmed, warm_time, _) = measure(|| cache.warm(&index, warm_n, &stop));
    let warmed = warmed?;
    let top = ngram::next_tokens(&index, &[])?;
    let mut frequent: Vec<Vec<u32>> = vec![vec![]];
    frequent.extend(top.next.iter().take(10).map(|&(t, _)| vec![t]));
    println!(
        "next-token cache: {warmed} prefixes occurring ≥ {min_count} times, {:.1} MB in memory \
         (nothing on disk), computed in {:.1} s at start",
        cache.bytes() as f64 / 1e6,
        warm_time.as_secs_f64()
    );
    println!("  the most frequent prefixes, library without the cache vs with it:");
    for p in frequent.iter().take(4) {
        let (n, t_plain, _) = measure(|| ngram::next_tokens(&index, p));
        let n = n?;
        let (c, t_cached, _) = measure(|| cache.next_tokens(&index, p));
        if *c? != n {
            return Err(format!("cached distribution of {p:?} differs").into());
        }
        println!(
            "  {:>12}: prefix count {:>11}, {:>8.2} ms → {:.3} ms",
            format!("{:?}", index.tokenizer()?.decode(p)?),
            n.prefix_count,
            t_plain.as_secs_f64() * 1e3,
            t_cached.as_secs_f64() * 1e3
        );
    }

    // The request mix, with the library's answers.
    let mut rng = SplitMix64::new(18);
    let n_each = mode.pick(40, 400) as usize;
    let mut mix: Vec<Request> = Vec::new();
    for q in ngrams(&index, &mut rng, n_each, 5)? {
        let want = ngram::count(&index, &q)?;
        mix.push(Request {
            kind: "count",
            body: json!({"index": "bench", "query_type": "count", "query_ids": q}).to_string(),
            check: ("count", json!(want)),
        });
    }
    for q in ngrams(&index, &mut rng, n_each, 4)? {
        let (last, prompt) = q.split_last().ok_or("empty")?;
        let want = ngram::probability(&index, prompt, *last)?;
        mix.push(Request {
            kind: "prob",
            body: json!({"index": "bench", "query_type": "prob", "query_ids": q}).to_string(),
            check: ("cont_cnt", json!(want.count)),
        });
    }
    // ntd: prefixes of the corpus (1–3 tokens), and every tenth one of the most frequent.
    let mut prefixes = ngrams(&index, &mut rng, n_each, 3)?;
    for (i, p) in prefixes.iter_mut().enumerate() {
        if i % 10 == 0 {
            *p = frequent[(i / 10) % frequent.len()].clone();
        }
    }
    // The answers from the library without the cache (which the server's requests alone fill),
    // each distinct prefix computed once, timed: what a first request for it costs.
    let mut uncached: std::collections::HashMap<Vec<u32>, (u64, f64)> = Default::default();
    for p in &prefixes {
        if !uncached.contains_key(p) {
            let (n, t, _) = measure(|| ngram::next_tokens(&index, p));
            uncached.insert(p.clone(), (n?.prefix_count, t.as_secs_f64()));
        }
    }
    let (mut below, mut above) = (Vec::new(), Vec::new());
    for &(count, t) in uncached.values() {
        if count >= min_count {
            above.push(t);
        } else {
            below.push(t);
        }
    }
    println!(
        "ntd requests: {} distinct prefixes; uncached, the library call takes p50 {} / p99 {} / \
         max {} for the {} occurring < {min_count} times (never kept), max {} for the {} kept once \
         computed",
        uncached.len(),
        fmt_secs(median(&below)),
        fmt_secs(percentile(&sorted(&below), 0.99)),
        fmt_secs(below.iter().copied().fold(0.0, f64::max)),
        below.len(),
        fmt_secs(above.iter().copied().fold(0.0, f64::max)),
        above.len()
    );
    for p in &prefixes {
        mix.push(Request {
            kind: "ntd",
            body: json!({"index": "bench", "query_type": "ntd", "query_ids": p, "max_support": 10})
                .to_string(),
            check: ("prompt_cnt", json!(uncached[p].0)),
        });
    }
    for q in ngrams(&index, &mut rng, n_each / 4, 8)? {
        let want = infgram::longest_suffix(&index, &q)?;
        mix.push(Request {
            kind: "infgram_ntd",
            body: json!({"index": "bench", "query_type": "infgram_ntd", "query_ids": q,
                         "max_support": 10})
            .to_string(),
            check: ("suffix_len", json!(want)),
        });
    }
    for q in ngrams(&index, &mut rng, n_each / 8, 3)? {
        let want = ngram::cnf(
            &index,
            &ngram::Cnf {
                clauses: vec![vec![q.clone()]],
            },
            &ngram::CnfOptions {
                list_documents: 0,
                ..Default::default()
            },
        )?;
        mix.push(Request {
            kind: "search_docs",
            body: json!({"index": "bench", "query_type": "search_docs", "query_ids": q,
                         "maxnum": 1, "max_disp_len": 100})
            .to_string(),
            check: ("cnt", json!(want.documents)),
        });
    }

    // The server, in this process.
    let runtime = familiar_serve::runtime(app.limits())?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(familiar_serve::serve(listener, Arc::clone(&app), async {
        let _ = stop_rx.await;
    }));

    // 2. Overhead: one client; HTTP vs the library call, per type.
    println!(
        "\noverhead (one client, keep-alive): median HTTP − median library call, same queries"
    );
    println!(
        "  {:<12} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "type", "library", "HTTP", "overhead", "handler", "over floor"
    );
    let mut client = Client::connect(&addr)?;
    let mut worst_overhead: f64 = 0.0;
    for kind in ["count", "prob", "ntd"] {
        let reqs: Vec<&Request> = mix.iter().filter(|r| r.kind == kind).collect();
        let (mut lib, mut web, mut handler) = (Vec::new(), Vec::new(), Vec::new());
        // `GET /healthz` right after each request: the loopback and HTTP floor of the same
        // moment (it drifts by tens of µs on a VM between runs).
        let mut floor_here = Vec::new();
        for round in 0..3 {
            for r in &reqs {
                let body: Value = serde_json::from_str(&r.body)?;
                let ids: Vec<u32> = serde_json::from_value(body["query_ids"].clone())?;
                let t = Instant::now();
                match kind {
                    "count" => {
                        ngram::count(&index, &ids)?;
                    }
                    "prob" => {
                        let (last, prompt) = ids.split_last().ok_or("empty")?;
                        ngram::probability(&index, prompt, *last)?;
                    }
                    _ => {
                        cache.next_tokens(&index, &ids)?;
                    }
                }
                let l = t.elapsed().as_secs_f64();
                let t = Instant::now();
                let (status, bytes) = client.post("/", &r.body)?;
                let w = t.elapsed().as_secs_f64();
                if status != 200 {
                    return Err(format!(
                        "{kind}: HTTP {status}: {}",
                        String::from_utf8_lossy(&bytes)
                    )
                    .into());
                }
                let v: Value = serde_json::from_slice(&bytes)?;
                if v[r.check.0] != r.check.1 {
                    return Err(format!(
                        "{kind}: {} is {} over HTTP, {} from the library",
                        r.check.0, v[r.check.0], r.check.1
                    )
                    .into());
                }
                // The first round warms the pages both read.
                if round > 0 {
                    lib.push(l);
                    web.push(w);
                    // The handler's own time (infini-gram's `latency`, ms): the request parsed,
                    // answered and its JSON value built, before it is written out.
                    handler.push(v["latency"].as_f64().unwrap_or(f64::NAN) / 1e3);
                    let t = Instant::now();
                    let (status, _) = client.get("/healthz")?;
                    floor_here.push(t.elapsed().as_secs_f64());
                    if status != 200 {
                        return Err(format!("/healthz: HTTP {status}").into());
                    }
                }
            }
        }
        let (ml, mw) = (median(&lib), median(&web));
        let over = (mw - ml) * 1e6;
        worst_overhead = worst_overhead.max(over);
        println!(
            "  {kind:<12} {:>8.1} µs {:>8.1} µs {:>8.1} µs {:>8.1} µs {:>10.1} µs",
            ml * 1e6,
            mw * 1e6,
            over,
            median(&handler) * 1e6,
            (mw - median(&floor_here) - ml) * 1e6
        );
    }
    // The floor: an answer that calls no library and runs on no blocking thread.
    let mut floor = Vec::new();
    for _ in 0..mode.pick(200, 2000) {
        let t = Instant::now();
        let (status, _) = client.get("/healthz")?;
        floor.push(t.elapsed().as_secs_f64());
        if status != 200 {
            return Err(format!("/healthz: HTTP {status}").into());
        }
    }
    println!(
        "  {:<12} {:>10} {:>8.1} µs   (GET /healthz: loopback, HTTP, JSON; no library call)",
        "floor",
        "",
        median(&floor) * 1e6
    );
    println!(
        "  overhead p50 ≤ {OVERHEAD_TARGET_US} µs: {}",
        if worst_overhead <= OVERHEAD_TARGET_US {
            "PASS"
        } else {
            "MISS"
        }
    );

    // 3. Load: 32 clients, one query type at a time (each client through the type's requests
    // in its own order, again and again, for a bounded time), then all types mixed, twice (the
    // resident memory after each: flat when the second adds nothing).
    let rss_before = rss_anon();
    let limit = Duration::from_secs(mode.pick(1, 8));
    println!(
        "\nload: {CLIENTS} clients, one query type at a time, {} s each",
        limit.as_secs()
    );
    println!(
        "  {:<12} {:>8} {:>9} {:>10} {:>10}",
        "type", "requests", "per s", "p50", "p99"
    );
    let mut p99s = std::collections::BTreeMap::new();
    let mut errors = 0;
    let mix_file = dir.with_extension("serve-bench-mix.jsonl");
    let mut lines = String::new();
    for r in &mix {
        lines.push_str(
            &json!({"kind": r.kind, "body": r.body, "field": r.check.0, "value": r.check.1})
                .to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(&mix_file, lines)?;
    let child = |kind: &str, limit: Duration| {
        run_child(
            "load",
            &[
                ("FAMILIAR_BENCH_SERVE_ADDR", addr.clone()),
                ("FAMILIAR_BENCH_SERVE_MIX", mix_file.display().to_string()),
                ("FAMILIAR_BENCH_SERVE_KIND", kind.to_string()),
                ("FAMILIAR_BENCH_SERVE_MS", limit.as_millis().to_string()),
            ],
        )
    };
    for kind in KINDS {
        let r = child(kind, limit)?;
        errors += r.get::<usize>("errors")?;
        let (n, p50, p99): (usize, f64, f64) = (
            r.get(&format!("{kind}.n"))?,
            r.get(&format!("{kind}.p50"))?,
            r.get(&format!("{kind}.p99"))?,
        );
        p99s.insert(kind, p99);
        println!(
            "  {kind:<12} {n:>8} {:>9.0} {p50:>7.2} ms {p99:>7.2} ms",
            n as f64 / r.get::<f64>("wall")?,
        );
    }
    println!(
        "  count p99 ≤ {COUNT_P99_TARGET_MS} ms: {}; ntd p99 ≤ {NTD_P99_TARGET_MS} ms: {}",
        if p99s["count"] <= COUNT_P99_TARGET_MS {
            "PASS"
        } else {
            "MISS"
        },
        if p99s["ntd"] <= NTD_P99_TARGET_MS {
            "PASS"
        } else {
            "MISS"
        },
    );
    let mixed_limit = Duration::from_secs(mode.pick(1, 15));
    let first = child("all", mixed_limit)?;
    errors += first.get::<usize>("errors")?;
    let rss_first = rss_anon();
    let live_first = trimmed_rss();
    let second = child("all", mixed_limit)?;
    errors += second.get::<usize>("errors")?;
    let rss_after = rss_anon();
    let live_after = trimmed_rss();
    println!(
        "\nmixed ({} requests of five types, {CLIENTS} clients, {} s, run twice; the second): \
         {} requests ({:.0}/s)",
        mix.len(),
        mixed_limit.as_secs(),
        second.get::<usize>("n")?,
        second.get::<f64>("n")? / second.get::<f64>("wall")?
    );
    for kind in KINDS {
        println!(
            "  {kind:<12} {:>8} {:>9} {:>7.2} ms {:>7.2} ms",
            second.get::<usize>(&format!("{kind}.n"))?,
            "",
            second.get::<f64>(&format!("{kind}.p50"))?,
            second.get::<f64>(&format!("{kind}.p99"))?
        );
    }
    println!("  errors: {errors}");
    println!(
        "  the server's resident heap (RssAnon; the clients run in child processes): before the \
         load {:.1} MB, after the first mixed run {:.1} MB, after the second {:.1} MB",
        rss_before as f64 / 1e6,
        rss_first as f64 / 1e6,
        rss_after as f64 / 1e6
    );
    println!(
        "  threads of the server process: {}",
        proc_status("Threads").unwrap_or(0)
    );
    println!(
        "  next-token cache after the runs: {} prefixes, {:.1} MB (at start: {warmed})",
        cache.len(),
        cache.bytes() as f64 / 1e6
    );
    println!(
        "  the same after malloc_trim (the heap in use, without what the allocator keeps of freed \
         memory): after the first mixed run {:.1} MB, after the second {:.1} MB",
        live_first as f64 / 1e6,
        live_after as f64 / 1e6
    );
    let _ = stop_tx.send(());
    runtime.block_on(server)??;
    if errors > 0 {
        return Err(format!("{errors} clients failed").into());
    }
    let _ = std::fs::remove_file(&mix_file);
    if !full {
        remove_dir(&dir)?;
    }
    Ok(())
}

/// One load run: `CLIENTS` clients, each through the mix in its own order up to `rounds` times,
/// until `limit`; every answer checked. The latencies by type, the failed clients, the wall time.
#[allow(clippy::type_complexity)]
fn load(
    addr: &str,
    mix: &Arc<Vec<Request>>,
    rounds: usize,
    limit: Duration,
) -> (Vec<(&'static str, f64)>, usize, f64) {
    let start = Instant::now();
    let results: Vec<BenchResult<Vec<(&'static str, f64)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (mix, addr) = (Arc::clone(mix), addr.to_string());
                scope.spawn(move || -> BenchResult<Vec<(&'static str, f64)>> {
                    let mut client = Client::connect(&addr)?;
                    let mut rng = SplitMix64::new(c as u64 + 1);
                    let mut order: Vec<usize> = (0..mix.len()).collect();
                    let mut out = Vec::new();
                    'outer: for _ in 0..rounds {
                        for i in (1..order.len()).rev() {
                            order.swap(i, rng.below(i as u64 + 1) as usize);
                        }
                        for &i in &order {
                            if start.elapsed() > limit {
                                break 'outer;
                            }
                            let r = &mix[i];
                            let t = Instant::now();
                            let (status, bytes) = client.post("/", &r.body)?;
                            out.push((r.kind, t.elapsed().as_secs_f64()));
                            if status != 200 {
                                return Err(format!(
                                    "HTTP {status}: {}",
                                    String::from_utf8_lossy(&bytes)
                                )
                                .into());
                            }
                            let v: Value = serde_json::from_slice(&bytes)?;
                            if v[r.check.0] != r.check.1 {
                                return Err(format!("{}: wrong answer under load", r.kind).into());
                            }
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a client panicked".into())))
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut all: Vec<(&'static str, f64)> = Vec::new();
    let mut errors = 0;
    for r in results {
        match r {
            Ok(v) => all.extend(v),
            Err(e) => {
                errors += 1;
                eprintln!("client error: {e}");
            }
        }
    }
    (all, errors, wall)
}

/// The clients of one load run, in a child process (so the parent's memory is the server's):
/// reads the mix the parent wrote, runs [`load`] on the requests of one kind (or `all`), and
/// reports per kind the requests, p50 and p99 in ms, then the wall time and the failed clients.
fn load_child() -> BenchResult<()> {
    let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
    let addr = var("FAMILIAR_BENCH_SERVE_ADDR")?;
    let kind = var("FAMILIAR_BENCH_SERVE_KIND")?;
    let ms: u64 = var("FAMILIAR_BENCH_SERVE_MS")?.parse()?;
    let mut mix = Vec::new();
    for line in std::fs::read_to_string(var("FAMILIAR_BENCH_SERVE_MIX")?)?.lines() {
        let v: Value = serde_json::from_str(line)?;
        let k = KINDS
            .iter()
            .copied()
            .find(|k| v["kind"] == json!(k))
            .ok_or("unknown kind in the mix")?;
        let field = match v["field"].as_str() {
            Some("count") => "count",
            Some("cont_cnt") => "cont_cnt",
            Some("prompt_cnt") => "prompt_cnt",
            Some("suffix_len") => "suffix_len",
            Some("cnt") => "cnt",
            _ => return Err("unknown field in the mix".into()),
        };
        if kind == "all" || kind == k {
            mix.push(Request {
                kind: k,
                body: v["body"].as_str().ok_or("no body")?.to_string(),
                check: (field, v["value"].clone()),
            });
        }
    }
    let (lat, failed, wall) = load(&addr, &Arc::new(mix), usize::MAX, Duration::from_millis(ms));
    for k in KINDS {
        let l = sorted(
            &lat.iter()
                .filter(|(x, _)| *x == k)
                .map(|(_, t)| *t)
                .collect::<Vec<_>>(),
        );
        report(&format!("{k}.n"), l.len());
        report(&format!("{k}.p50"), percentile(&l, 0.5) * 1e3);
        report(&format!("{k}.p99"), percentile(&l, 0.99) * 1e3);
    }
    report("n", lat.len());
    report("wall", wall);
    report("errors", failed);
    Ok(())
}

/// `RssAnon` once the allocator has returned the freed memory it keeps to the system
/// (`malloc_trim`, glibc): the heap the server really holds.
fn trimmed_rss() -> u64 {
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
    rss_anon()
}
