//! Shared pieces of familiar's benchmarks (`benches/build.rs`, `benches/query.rs`).
//!
//! Each bench is a custom-harness binary. With `--bench` in its arguments (what `cargo bench`
//! passes) it measures at full scale; without it (what `cargo test --benches` runs) it does a small
//! smoke run that still checks every answer against its baseline, so the benches cannot rot.
//!
//! Performance is always reported next to a baseline measured in the same run (a naive scan, a
//! naive comparison sort), as a ratio. CPU time comes from `getrusage`, peak memory from `VmHWM` in
//! `/proc/self/status`, or from `wait4` for a phase run in a child process (see [`run_child`]).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use familiar_index_builder::fixtures::SplitMix64;

/// Errors of a bench: anything, reported and fatal.
pub type BenchResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Vocabulary of generated corpora (GPT-2-sized).
pub const GEN_VOCAB: u32 = 50_000;
/// Zipf exponent of generated corpora.
pub const GEN_ZIPF: f64 = 1.0;
/// Seed of generated corpora.
pub const GEN_SEED: u64 = 0x5EED_F00D;
/// Shortest and longest generated document, in tokens (log-uniform between).
pub const GEN_DOC_LEN: (u64, u64) = (16, 4096);

// ---------------------------------------------------------------------------------------------
// Mode, options, environment

/// Smoke (a few seconds, `cargo test --benches`) or full (`cargo bench`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Tiny inputs; checks results, measures nothing meaningful.
    Smoke,
    /// Full-scale measurement.
    Full,
}

impl Mode {
    /// `Full` when `--bench` is among the arguments.
    pub fn from_args() -> Mode {
        if std::env::args().any(|a| a == "--bench") {
            Mode::Full
        } else {
            Mode::Smoke
        }
    }

    /// Whether this is the full measurement.
    pub fn is_full(self) -> bool {
        self == Mode::Full
    }

    /// `smoke` or `full`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Smoke => "smoke",
            Mode::Full => "full",
        }
    }

    /// `smoke` in smoke mode, `full` in full mode.
    pub fn pick<T>(self, smoke: T, full: T) -> T {
        match self {
            Mode::Smoke => smoke,
            Mode::Full => full,
        }
    }
}

/// Sets `OMP_WAIT_POLICY=PASSIVE` unless it is set: libsais's OpenMP threads otherwise spin while
/// idle. Must run before any thread starts (first thing in `main`).
pub fn set_omp_passive() {
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        std::env::set_var("OMP_WAIT_POLICY", "PASSIVE");
    }
}

/// Parses `1000000`, `1_000_000`, `100k`, `10M`, `1G` (decimal multipliers).
pub fn parse_count(s: &str) -> Option<u64> {
    let s: String = s.trim().chars().filter(|&c| c != '_').collect();
    let (digits, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1_000),
        'm' | 'M' => (&s[..s.len() - 1], 1_000_000),
        'g' | 'G' | 'b' | 'B' => (&s[..s.len() - 1], 1_000_000_000),
        _ => (&s[..], 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// A count from the environment variable `name`, or `default`. Panics on an unparsable value.
pub fn env_count(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => parse_count(&v).unwrap_or_else(|| panic!("{name}={v:?} is not a count")),
        Err(_) => default,
    }
}

/// The real data directory (`../shared/data` beside the workspace, or `FAMILIAR_BENCH_DATA`), if
/// present.
pub fn shared_data() -> Option<PathBuf> {
    let dir = match std::env::var_os("FAMILIAR_BENCH_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")),
    };
    dir.join("corpus").is_dir().then_some(dir)
}

/// The repository's `fixtures/` directory.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// The index a bench measures: in full mode with the real data, the whole real corpus with the
/// GPT-2 tokenizer (`concepts-real-gpt2`, shared by the concepts, trace and serve benches, built
/// if absent); otherwise the fixture corpus (`smoke-{smoke_name}-{pid}`). Also whether it is the
/// real corpus, and the real data directory.
pub fn real_corpus_index(
    mode: Mode,
    target_tmpdir: &str,
    smoke_name: &str,
) -> BenchResult<(PathBuf, bool, Option<PathBuf>)> {
    use familiar_index_builder::build::{build, BuildOptions};
    let base = bench_dir(target_tmpdir);
    let data = shared_data();
    let full = mode.is_full() && data.is_some();
    if mode.is_full() && data.is_none() {
        println!(
            "real corpus: SKIPPED — ../shared/data not found; measuring on the fixture corpus"
        );
    }
    let (dir, tokenizer, inputs) = match (&data, full) {
        (Some(data), true) => (
            base.join("concepts-real-gpt2"),
            data.join("tokenizers/gpt2.json"),
            vec![data.join("corpus").display().to_string()],
        ),
        _ => (
            base.join(format!("smoke-{smoke_name}-{}", std::process::id())),
            fixtures_dir().join("tokenizer.json"),
            ["part-0000.jsonl.zst", "part-0001.jsonl.gz"]
                .iter()
                .map(|p| fixtures_dir().join("corpus").join(p).display().to_string())
                .collect(),
        ),
    };
    if !dir.join("manifest.json").exists() {
        remove_dir(&dir)?;
        println!("building {} ...", dir.display());
        let mut options = BuildOptions::new(&tokenizer, &dir, inputs);
        options.threads = Some(threads());
        let (r, wall, _) = measure(|| build(&options));
        let r = r?;
        println!(
            "  {} documents, {} tokens in {:.1} s",
            r.documents,
            r.tokens,
            wall.as_secs_f64()
        );
    }
    Ok((dir, full, data))
}

/// Where benches keep their data: `FAMILIAR_BENCH_DIR`, else `<target>/bench-data`. Bench binaries
/// pass `env!("CARGO_TARGET_TMPDIR")` (`<target>/tmp`, known only when compiling them).
pub fn bench_dir(target_tmpdir: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("FAMILIAR_BENCH_DIR") {
        return PathBuf::from(d);
    }
    let tmp = Path::new(target_tmpdir);
    tmp.parent().unwrap_or(tmp).join("bench-data")
}

/// Worker threads for builds: `FAMILIAR_BENCH_THREADS`, else every core.
pub fn threads() -> usize {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    env_count("FAMILIAR_BENCH_THREADS", all).max(1) as usize
}

// ---------------------------------------------------------------------------------------------
// The machine, CPU time, memory

/// One line describing the machine: CPU model, cores, memory.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |s| s.trim().to_string());
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = meminfo_kb("MemTotal:").map_or("? GiB".into(), |kb| {
        format!("{:.1} GiB", kb as f64 / (1 << 20) as f64)
    });
    let avail = meminfo_kb("MemAvailable:").map_or("?".into(), |kb| {
        format!("{:.1} GiB", kb as f64 / (1 << 20) as f64)
    });
    format!("{model}, nproc {nproc}, MemTotal {mem} (available {avail})")
}

fn meminfo_kb(key: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn timeval_secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 * 1e-6
}

/// User + system seconds of a `rusage`.
pub fn rusage_cpu(ru: &libc::rusage) -> f64 {
    timeval_secs(ru.ru_utime) + timeval_secs(ru.ru_stime)
}

/// CPU seconds (user + system, every thread) this process has used.
pub fn cpu_time() -> f64 {
    // SAFETY: getrusage writes a rusage struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    rusage_cpu(&ru)
}

/// Peak resident memory of this process (`VmHWM`), in bytes.
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Wall and CPU time of `f`.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Duration, f64) {
    let c0 = cpu_time();
    let t0 = Instant::now();
    let r = f();
    let wall = t0.elapsed();
    (r, wall, cpu_time() - c0)
}

/// Samples the process's CPU time every few milliseconds in a background thread, and notes when
/// threads with given names first appear, so that the CPU used during any wall-clock window of a
/// library call can be recovered afterwards.
#[derive(Debug)]
pub struct CpuTimeline {
    start: Instant,
    stop: Arc<AtomicBool>,
    data: Arc<Mutex<Timeline>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// What a [`CpuTimeline`] recorded.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// `(seconds since start, process CPU seconds)`.
    pub samples: Vec<(f64, f64)>,
    /// Thread name → seconds since start when first seen.
    pub first_seen: BTreeMap<String, f64>,
}

fn thread_names() -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            if let Ok(n) = std::fs::read_to_string(e.path().join("comm")) {
                names.push(n.trim().to_string());
            }
        }
    }
    names
}

impl CpuTimeline {
    /// Starts sampling every `period`, watching for threads named in `watch` (names as the kernel
    /// keeps them: at most 15 bytes).
    pub fn start(period: Duration, watch: &[&str]) -> CpuTimeline {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let data = Arc::new(Mutex::new(Timeline::default()));
        let watch: Vec<String> = watch.iter().map(|s| s.to_string()).collect();
        let handle = {
            let (stop, data) = (Arc::clone(&stop), Arc::clone(&data));
            std::thread::Builder::new()
                .name("bench-cpu-sampler".into())
                .spawn(move || loop {
                    let t = start.elapsed().as_secs_f64();
                    let cpu = cpu_time();
                    let unseen: Vec<&String> = {
                        let d = data.lock().unwrap_or_else(|e| e.into_inner());
                        watch
                            .iter()
                            .filter(|w| !d.first_seen.contains_key(*w))
                            .collect()
                    };
                    let seen: Vec<String> = if unseen.is_empty() {
                        Vec::new()
                    } else {
                        let names = thread_names();
                        unseen
                            .into_iter()
                            .filter(|w| names.iter().any(|n| n == *w))
                            .cloned()
                            .collect()
                    };
                    {
                        let mut d = data.lock().unwrap_or_else(|e| e.into_inner());
                        d.samples.push((t, cpu));
                        for s in seen {
                            d.first_seen.insert(s, t);
                        }
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(period);
                })
                .expect("cannot start the sampler thread")
        };
        CpuTimeline {
            start,
            stop,
            data,
            handle: Some(handle),
        }
    }

    /// When the timeline started (its time zero).
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Seconds since the timeline started.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Stops sampling (taking a last sample) and returns the record.
    pub fn finish(mut self) -> Timeline {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        d.clone()
    }
}

impl Timeline {
    /// Process CPU seconds at `t` (linear between samples).
    pub fn cpu_at(&self, t: f64) -> f64 {
        let s = &self.samples;
        if s.is_empty() {
            return 0.0;
        }
        let i = s.partition_point(|&(ts, _)| ts <= t);
        if i == 0 {
            return s[0].1;
        }
        if i == s.len() {
            return s[s.len() - 1].1;
        }
        let (t0, c0) = s[i - 1];
        let (t1, c1) = s[i];
        if t1 <= t0 {
            return c1;
        }
        c0 + (c1 - c0) * (t - t0) / (t1 - t0)
    }

    /// CPU seconds used between `a` and `b`.
    pub fn cpu_between(&self, a: f64, b: f64) -> f64 {
        (self.cpu_at(b) - self.cpu_at(a)).max(0.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes: one phase each, for its own peak memory

const CHILD_ENV: &str = "FAMILIAR_BENCH_CHILD";
const RESULT_PREFIX: &str = "@@ ";

/// The phase this process should run, when it is a child started by [`run_child`].
pub fn child_phase() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Reports a result from a child process to its parent.
pub fn report(key: &str, value: impl Display) {
    println!("{RESULT_PREFIX}{key} {value}");
}

/// What a child phase reported, with its resource use from `wait4`.
#[derive(Debug, Clone)]
pub struct ChildRun {
    /// Values passed to [`report`].
    pub values: BTreeMap<String, String>,
    /// Peak resident memory of the child, in bytes (`ru_maxrss`).
    pub max_rss: u64,
    /// CPU seconds of the child (user + system, every thread).
    pub cpu: f64,
    /// Wall time of the child.
    pub wall: Duration,
}

impl ChildRun {
    /// A reported value, parsed.
    pub fn get<T: std::str::FromStr>(&self, key: &str) -> BenchResult<T> {
        let v = self
            .values
            .get(key)
            .ok_or_else(|| format!("the child did not report {key}"))?;
        v.parse::<T>()
            .map_err(|_| format!("the child reported {key} = {v:?}, not a number").into())
    }
}

/// Runs `phase` in a child process (this same binary, same arguments, with `envs` added), passes
/// its other output through, and returns what it reported with its peak memory and CPU time.
pub fn run_child(phase: &str, envs: &[(&str, String)]) -> BenchResult<ChildRun> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(CHILD_ENV, phase)
        .stdout(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let t0 = Instant::now();
    // Reaped with wait4 below, which std's Child does not know about.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let mut values = BTreeMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match line.strip_prefix(RESULT_PREFIX) {
            Some(kv) => {
                let (k, v) = kv.split_once(' ').unwrap_or((kv, ""));
                values.insert(k.to_string(), v.to_string());
            }
            None => println!("{line}"),
        }
    }
    let mut status: libc::c_int = 0;
    // SAFETY: wait4 fills a rusage struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a pid of our own child, valid pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = t0.elapsed();
    if rc != pid {
        return Err(format!("wait4 failed: {}", std::io::Error::last_os_error()).into());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("bench phase {phase:?} failed (wait status {status})").into());
    }
    Ok(ChildRun {
        values,
        max_rss: ru.ru_maxrss as u64 * 1024,
        cpu: rusage_cpu(&ru),
        wall,
    })
}

// ---------------------------------------------------------------------------------------------
// Generated corpora

/// Zipf-distributed token ids: rank `r` (0-based) has probability ∝ 1/(r+1)^s, and ranks map to
/// ids through a fixed random permutation (frequent tokens are not simply the small ids).
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
    guide: Vec<u32>,
    ids: Vec<u32>,
}

impl Zipf {
    /// Over `n` ids with exponent `s`; `seed` picks the rank → id permutation.
    pub fn new(n: u32, s: f64, seed: u64) -> Zipf {
        assert!(n > 0);
        let mut cdf = Vec::with_capacity(n as usize);
        let mut acc = 0.0;
        for r in 0..n {
            acc += 1.0 / f64::from(r + 1).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        // Guide table: guide[g] = first rank whose cdf exceeds g / G.
        let g_len = (4 * n as usize).next_power_of_two();
        let mut guide = Vec::with_capacity(g_len);
        let mut r = 0usize;
        for g in 0..g_len {
            let u = g as f64 / g_len as f64;
            while cdf[r] <= u {
                r += 1;
            }
            guide.push(r as u32);
        }
        let mut ids: Vec<u32> = (0..n).collect();
        let mut rng = SplitMix64::new(seed ^ 0x0001_D50F_5EED);
        for i in (1..ids.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            ids.swap(i, j);
        }
        Zipf { cdf, guide, ids }
    }

    /// A random rank (0 = most frequent).
    #[inline]
    pub fn rank(&self, rng: &mut SplitMix64) -> u32 {
        let u = rng.unit();
        let mut r = self.guide[(u * self.guide.len() as f64) as usize] as usize;
        while self.cdf[r] <= u {
            r += 1;
        }
        r as u32
    }

    /// A random id.
    #[inline]
    pub fn sample(&self, rng: &mut SplitMix64) -> u32 {
        self.ids[self.rank(rng) as usize]
    }

    /// The id of rank `r`.
    pub fn id_of_rank(&self, r: u32) -> u32 {
        self.ids[r as usize]
    }
}

/// `n` Zipf tokens (vocabulary [`GEN_VOCAB`]) as `u16`.
pub fn zipf_u16(n: usize, seed: u64) -> Vec<u16> {
    let z = Zipf::new(GEN_VOCAB, GEN_ZIPF, seed);
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| u16::try_from(z.sample(&mut rng)).expect("GEN_VOCAB fits u16"))
        .collect()
}

/// A stream of generated documents (token ids), never materialized: Zipf tokens, lengths
/// log-uniform in [`GEN_DOC_LEN`], until `positions` token positions (tokens plus one separator per
/// document) are used. Deterministic in the seed, and a prefix of a longer stream is the same
/// documents (only the last one may be cut short).
#[derive(Debug, Clone)]
pub struct GeneratedDocs {
    zipf: Arc<Zipf>,
    rng: SplitMix64,
    remaining: u64,
}

impl GeneratedDocs {
    /// Documents filling `positions` positions.
    pub fn new(positions: u64, seed: u64) -> GeneratedDocs {
        GeneratedDocs {
            zipf: Arc::new(Zipf::new(GEN_VOCAB, GEN_ZIPF, seed)),
            rng: SplitMix64::new(seed),
            remaining: positions,
        }
    }
}

impl Iterator for GeneratedDocs {
    type Item = Vec<u32>;

    fn next(&mut self) -> Option<Vec<u32>> {
        if self.remaining < 2 {
            return None;
        }
        let (lo, hi) = GEN_DOC_LEN;
        let span = (hi as f64 / lo as f64).ln();
        let len = ((lo as f64) * (self.rng.unit() * span).exp()) as u64;
        let len = len.clamp(1, self.remaining - 1);
        self.remaining -= len + 1;
        let z = &*self.zipf;
        let rng = &mut self.rng;
        Some((0..len).map(|_| z.sample(rng)).collect())
    }
}

/// Writes the word-level tokenizer of generated indexes (ids `t0 … t{GEN_VOCAB-1}`) into `dir` and
/// returns its path.
pub fn generated_tokenizer(dir: &Path) -> BenchResult<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("word-level-{GEN_VOCAB}.json"));
    let json = familiar_index_builder::fixtures::word_level_tokenizer(GEN_VOCAB);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(json.as_str()) {
        let tmp = dir.join(format!(".word-level-{}.tmp", std::process::id()));
        std::fs::write(&tmp, &json)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// Directory of the generated index of `positions` positions under `base`.
pub fn generated_index_dir(base: &Path, positions: u64) -> PathBuf {
    base.join(format!(
        "gen-{positions}-v{GEN_VOCAB}-z{GEN_ZIPF}-s{GEN_SEED:x}"
    ))
}

// ---------------------------------------------------------------------------------------------
// Naive baselines

/// Suffix array by comparison sort of the suffixes (`sort_by` on slices): the baseline.
pub fn naive_suffix_array<T: Ord>(text: &[T]) -> Vec<i32> {
    let mut sa: Vec<i32> = (0..text.len() as i32).collect();
    sa.sort_by(|&a, &b| text[a as usize..].cmp(&text[b as usize..]));
    sa
}

/// Occurrences of `pattern` in `text` by linear scan, overlapping ones included.
pub fn naive_count<T: PartialEq>(text: &[T], pattern: &[T]) -> u64 {
    if pattern.is_empty() || pattern.len() > text.len() {
        return 0;
    }
    text.windows(pattern.len())
        .filter(|w| *w == pattern)
        .count() as u64
}

// ---------------------------------------------------------------------------------------------
// Files

/// Total bytes of the files under `path`, by file name (recursively).
pub fn file_sizes(path: &Path) -> BenchResult<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    fn walk(p: &Path, out: &mut BTreeMap<String, u64>) -> std::io::Result<()> {
        for e in std::fs::read_dir(p)? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                walk(&e.path(), out)?;
            } else {
                *out.entry(e.file_name().to_string_lossy().into_owned())
                    .or_default() += m.len();
            }
        }
        Ok(())
    }
    walk(path, &mut out)?;
    Ok(out)
}

/// Bytes of every file inside the `shard-*` directories of an index, by file name.
pub fn shard_file_sizes(index: &Path) -> BenchResult<BTreeMap<String, u64>> {
    let mut total = BTreeMap::new();
    for e in std::fs::read_dir(index)? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with("shard-") && e.path().is_dir() {
            for (k, v) in file_sizes(&e.path())? {
                *total.entry(k).or_default() += v;
            }
        }
    }
    Ok(total)
}

/// Removes a directory tree if it exists.
pub fn remove_dir(path: &Path) -> BenchResult<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display()).into()),
    }
}

/// Reads every page of `bytes` (to pull a mapped file into memory); returns a checksum so the reads
/// are not optimized away.
pub fn touch_pages(bytes: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut i = 0;
    while i < bytes.len() {
        acc = acc.wrapping_add(u64::from(bytes[i]));
        i += 4096;
    }
    std::hint::black_box(acc)
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

/// The `p`-quantile (0..=1) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sorts a copy and returns it.
pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

/// The number on line `key:` of `/proc/self/status` (a unit such as `kB` left out), if it can
/// be read.
pub fn proc_status(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// `RssAnon` of this process (its heap, not the mapped index files), in bytes; 0 where
/// `/proc/self/status` cannot be read.
pub fn rss_anon() -> u64 {
    proc_status("RssAnon").map_or(0, |kb| kb * 1024)
}

/// Median.
pub fn median(v: &[f64]) -> f64 {
    percentile(&sorted(v), 0.5)
}

/// Seconds as `812 ns`, `3.4 µs`, `12.1 ms`, `4.20 s`.
pub fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        return "-".into();
    }
    if s < 1e-6 {
        format!("{:.0} ns", s * 1e9)
    } else if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// A rate or count with a metric suffix: `15.3 M`, `820 k`.
pub fn fmt_si(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    if x >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Bytes as `1.23 GiB`, `45.6 MiB`.
pub fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

/// A ratio as `123×`.
pub fn fmt_ratio(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}×")
    } else if x >= 10.0 {
        format!("{x:.1}×")
    } else {
        format!("{x:.2}×")
    }
}

/// `meets` or `MISSES` (full mode), or `(smoke)` when the figures mean nothing.
pub fn verdict(mode: Mode, ok: bool) -> &'static str {
    match (mode, ok) {
        (Mode::Smoke, _) => "(smoke: not judged)",
        (Mode::Full, true) => "meets",
        (Mode::Full, false) => "MISSES",
    }
}

/// A text table: first column left-aligned, the others right-aligned.
#[derive(Debug, Clone)]
pub struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a title and column names.
    pub fn new(title: impl Into<String>, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        let n = self.header.len();
        let mut w: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, width) in w.iter().enumerate() {
                let c = cells.get(i).map_or("", |c| c.as_str());
                let pad = width - c.chars().count();
                if i == 0 {
                    s.push_str(c);
                    s.push_str(&" ".repeat(pad));
                } else {
                    s.push_str(" | ");
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                }
            }
            s
        };
        println!();
        println!("{}", self.title);
        println!("{}", line(&self.header));
        let total: usize = w.iter().sum::<usize>() + 3 * (n - 1);
        println!("{}", "-".repeat(total));
        for r in &self.rows {
            println!("{}", line(r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse() {
        assert_eq!(parse_count("1_000_000"), Some(1_000_000));
        assert_eq!(parse_count("10M"), Some(10_000_000));
        assert_eq!(parse_count("1G"), Some(1_000_000_000));
        assert_eq!(parse_count("x"), None);
    }

    #[test]
    fn generated_prefixes_agree() {
        let a: Vec<Vec<u32>> = GeneratedDocs::new(20_000, 7).collect();
        let b: Vec<Vec<u32>> = GeneratedDocs::new(50_000, 7).collect();
        assert_eq!(a.iter().map(|d| d.len() as u64 + 1).sum::<u64>(), 20_000);
        assert_eq!(a[..a.len() - 1], b[..a.len() - 1]);
        assert!(a.iter().flatten().all(|&t| t < GEN_VOCAB));
    }

    #[test]
    fn zipf_is_skewed() {
        let z = Zipf::new(1000, 1.0, 3);
        let mut rng = SplitMix64::new(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[z.rank(&mut rng) as usize] += 1;
        }
        // P(rank 0) = 1/H(1000) ≈ 0.134.
        assert!((12_000..15_000).contains(&counts[0]), "{}", counts[0]);
        assert!(counts[0] > counts[1] && counts[1] > counts[10]);
    }

    #[test]
    fn timeline_interpolates() {
        let t = Timeline {
            samples: vec![(0.0, 1.0), (1.0, 3.0)],
            first_seen: BTreeMap::new(),
        };
        assert!((t.cpu_between(0.25, 0.75) - 1.0).abs() < 1e-9);
    }
}
