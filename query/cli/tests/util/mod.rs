//! The one test-support module of the CLI crate's tests: run the real `familiar` binary in
//! temporary directories, write small corpora in every input format, compare index trees byte for
//! byte (with `copy_tree` of the query crate's test support, `query/tests/support`, shared by
//! path).

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

#[path = "../../../tests/support/mod.rs"]
mod support;
pub use support::copy_tree;
#[allow(unused_imports)] // used by some of the test binaries that include this module
pub use support::tokens;

/// The `familiar` binary cargo built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_familiar"))
}

/// A `Command` for the binary, with a predictable environment.
pub fn command() -> Command {
    let mut c = Command::new(bin());
    c.env_remove("RUST_BACKTRACE").env("RUST_BACKTRACE", "0");
    c
}

/// Arguments of mixed types (strings, paths) as one list: `os(&[&"count", &index, &" cat"])`.
pub fn os(args: &[&dyn AsRef<OsStr>]) -> Vec<std::ffi::OsString> {
    args.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// Runs `familiar ARGS…` in the current directory and captures everything.
pub fn familiar<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = command();
    c.args(args);
    run_command(c)
}

/// Runs `familiar ARGS…` in `dir`.
pub fn familiar_in<I, S>(dir: &Path, args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = command();
    c.current_dir(dir).args(args);
    run_command(c)
}

/// Runs `familiar ARGS…`, killing it once it has run for `limit`: what it printed and whether it
/// had to be killed. Output goes to files, not pipes, so a chatty process never blocks on a full
/// pipe and looks hung.
pub fn familiar_killed_after<I, S>(args: I, limit: std::time::Duration) -> (Out, bool)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut c = command();
    c.args(args)
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap());
    let described = format!("{c:?}");
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {described}: {e}"));
    let started = std::time::Instant::now();
    let (status, killed) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status, false);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            break (child.wait().unwrap(), true);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let read = |f: &tempfile::NamedTempFile| {
        String::from_utf8_lossy(&std::fs::read(f.path()).unwrap_or_default()).into_owned()
    };
    let o = Out {
        command: described,
        status,
        stdout: read(&out),
        stderr: read(&err),
    };
    (o, killed)
}

/// [`familiar_killed_after`], failing the test if the process had to be killed.
#[track_caller]
pub fn familiar_within<I, S>(args: I, limit: std::time::Duration) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let (o, killed) = familiar_killed_after(args, limit);
    assert!(!killed, "{} hung (killed after {limit:?})", o.command);
    o
}

/// Runs `familiar ARGS…` with `input` on its standard input.
pub fn familiar_with_stdin<I, S>(args: I, input: &str) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = command();
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let described = format!("{c:?}");
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {described}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    Out {
        command: described,
        status: o.status,
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn run_command(mut c: Command) -> Out {
    let described = format!("{c:?}");
    let o = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {described}: {e}"));
    Out {
        command: described,
        status: o.status,
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Out {
    /// The command line, for messages.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nstatus: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

impl Out {
    /// The exit code; `None` when a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts exit code 0 and no panic.
    #[track_caller]
    pub fn success(&self) -> &Self {
        assert_eq!(self.code(), Some(0), "expected success\n{self}");
        self.no_panic();
        self
    }

    /// Asserts a clean failure: the process exited (no signal) with code 1 and did not panic.
    #[track_caller]
    pub fn failure(&self) -> &Self {
        self.clean_exit();
        assert_eq!(self.code(), Some(1), "expected exit code 1\n{self}");
        self
    }

    /// Asserts the process exited by itself with a code (not killed by a signal, e.g. SIGSEGV
    /// or SIGBUS from a bad mmap) and did not panic.
    #[track_caller]
    pub fn clean_exit(&self) -> &Self {
        assert!(
            self.code().is_some(),
            "process was killed by a signal\n{self}"
        );
        self.no_panic();
        self
    }

    #[track_caller]
    fn no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked") && !self.stdout.contains("panicked"),
            "process panicked\n{self}"
        );
        // 101 is the exit code of a Rust panic.
        assert_ne!(self.code(), Some(101), "process panicked\n{self}");
    }

    /// Asserts stderr contains every one of `needles`.
    #[track_caller]
    pub fn stderr_has(&self, needles: &[impl AsRef<str>]) -> &Self {
        for n in needles.iter().map(AsRef::as_ref) {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}\n{self}");
        }
        self
    }

    /// Asserts stdout contains every one of `needles`.
    #[track_caller]
    pub fn stdout_has(&self, needles: &[impl AsRef<str>]) -> &Self {
        for n in needles.iter().map(AsRef::as_ref) {
            assert!(self.stdout.contains(n), "stdout lacks {n:?}\n{self}");
        }
        self
    }

    /// Stdout parsed as one JSON value.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{self}"))
    }

    /// Stdout parsed as JSON lines.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("line {l:?} is not JSON: {e}\n{self}"))
            })
            .collect()
    }

    /// Stdout parsed as a single unsigned integer (e.g. `familiar count`).
    #[track_caller]
    pub fn number(&self) -> u64 {
        self.stdout
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("stdout is not a number: {e}\n{self}"))
    }
}

/// A temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// A fresh, empty directory.
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("familiar-cli-")
                .tempdir()
                .unwrap(),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside it.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Creates a subdirectory (and its parents); returns its path.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Writes raw bytes to `rel` (creating parents); returns the path.
    pub fn write(&self, rel: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Writes records as JSON lines.
    pub fn write_jsonl(&self, rel: impl AsRef<Path>, records: &[Value]) -> PathBuf {
        self.write(rel, jsonl_bytes(records))
    }

    /// Writes records as zstd-compressed JSON lines.
    pub fn write_jsonl_zst(&self, rel: impl AsRef<Path>, records: &[Value]) -> PathBuf {
        self.write(rel, zst(&jsonl_bytes(records)))
    }

    /// Writes records as gzip-compressed JSON lines.
    pub fn write_jsonl_gz(&self, rel: impl AsRef<Path>, records: &[Value]) -> PathBuf {
        self.write(rel, gz(&jsonl_bytes(records)))
    }

    /// Writes a plain-text document.
    pub fn write_txt(&self, rel: impl AsRef<Path>, text: &str) -> PathBuf {
        self.write(rel, text.as_bytes())
    }

    /// Writes a Parquet file with a `text` and an `id` column.
    pub fn write_parquet(&self, rel: impl AsRef<Path>, rows: &[(&str, &str)]) -> PathBuf {
        use std::sync::Arc;

        use arrow_array::{ArrayRef, RecordBatch, StringArray};
        let ids: ArrayRef = Arc::new(StringArray::from(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        ));
        let texts: ArrayRef = Arc::new(StringArray::from(
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_from_iter([("id", ids), ("text", texts)]).unwrap();
        let p = self.join(rel);
        let f = std::fs::File::create(&p).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        p
    }

    /// Copies a directory tree into `rel`; returns the new path.
    pub fn copy_tree(&self, from: &Path, rel: impl AsRef<Path>) -> PathBuf {
        let to = self.join(rel);
        copy_tree(from, &to);
        to
    }
}

impl Default for TestDir {
    fn default() -> Self {
        TestDir::new()
    }
}

/// Records as JSONL bytes, one compact object per line.
pub fn jsonl_bytes(records: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).unwrap();
        out.push(b'\n');
    }
    out
}

/// zstd-compresses bytes.
pub fn zst(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

/// gzip-compresses bytes.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A simple document record.
pub fn doc(id: &str, text: &str) -> Value {
    serde_json::json!({"id": id, "text": text})
}

// ---------------------------------------------------------------------------------------------
// The fixture corpus.

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The fixture tokenizer.json.
pub fn tokenizer() -> PathBuf {
    fixtures().join("tokenizer.json")
}

/// The fixture corpus files, in order, as absolute paths.
pub fn fixture_inputs() -> Vec<PathBuf> {
    let dir = fixtures().join("corpus");
    vec![
        dir.join("part-0000.jsonl.zst"),
        dir.join("part-0001.jsonl.gz"),
    ]
}

/// One planted phrase of `planted.json`.
#[derive(Debug, Clone)]
pub struct Planted {
    /// The phrase (without the leading space).
    pub text: String,
    /// Exact occurrences.
    pub occurrences: u64,
    /// Documents containing it.
    pub documents: u64,
}

impl Planted {
    /// The phrase as queried: with its leading space.
    pub fn query(&self) -> String {
        format!(" {}", self.text)
    }
}

/// `planted.json`: the planted phrases and the total document count.
pub fn planted() -> (u64, Vec<Planted>) {
    let v: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("corpus").join("planted.json")).unwrap(),
    )
    .unwrap();
    let phrases = v["planted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Planted {
            text: p["text"].as_str().unwrap().to_string(),
            occurrences: p["occurrences"].as_u64().unwrap(),
            documents: p["documents"].as_u64().unwrap(),
        })
        .collect();
    (v["documents"].as_u64().unwrap(), phrases)
}

/// The fixture corpus decompressed: every record, in index order.
pub fn fixture_records() -> Vec<Value> {
    let mut out = Vec::new();
    for p in fixture_inputs() {
        let raw = std::fs::read(&p).unwrap();
        let text = if p.extension() == Some(OsStr::new("zst")) {
            zstd::decode_all(&raw[..]).unwrap()
        } else {
            let mut s = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&raw[..]), &mut s)
                .unwrap();
            s
        };
        for line in String::from_utf8(text).unwrap().lines() {
            if !line.trim().is_empty() {
                out.push(serde_json::from_str(line).unwrap());
            }
        }
    }
    out
}

/// Arguments of `familiar index build --quiet --tokenizer T --out OUT INPUTS… EXTRA…`.
pub fn build_args(out: &Path, inputs: &[PathBuf], extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec![
        "index".into(),
        "build".into(),
        "--quiet".into(),
        "--tokenizer".into(),
        tokenizer().into(),
        "--out".into(),
        out.into(),
    ];
    a.extend(extra.iter().map(Into::into));
    a.extend(inputs.iter().map(Into::into));
    a
}

/// Builds an index with the fixture tokenizer; asserts success.
#[track_caller]
pub fn build(out: &Path, inputs: &[PathBuf], extra: &[&str]) -> Out {
    let o = familiar(build_args(out, inputs, extra));
    o.success();
    o
}

/// A scratch directory under cargo's target tmp dir, one per test process; directories left by
/// earlier test processes that are gone are removed first.
pub fn process_scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("familiar-cli-tests");
        std::fs::create_dir_all(&root).unwrap();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("pid-") {
                    let alive =
                        Path::new("/proc").join(pid).exists() || !Path::new("/proc/self").exists();
                    if !alive {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = root.join(format!("pid-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// The index of the fixture corpus with the default shard size (one shard), built once per test
/// process. Tests must not modify it (copy it first).
pub fn fixture_index() -> &'static Path {
    static INDEX: OnceLock<PathBuf> = OnceLock::new();
    INDEX.get_or_init(|| {
        let out = process_scratch().join("fixture-index");
        build(&out, &fixture_inputs(), &[]);
        out
    })
}

/// Shard size of [`fixture_index_sharded`].
pub const SHARDED_TOKENS: &str = "40000";

/// The index of the fixture corpus cut into several shards, built once per test process.
pub fn fixture_index_sharded() -> &'static Path {
    static INDEX: OnceLock<PathBuf> = OnceLock::new();
    INDEX.get_or_init(|| {
        let out = process_scratch().join("fixture-index-sharded");
        build(&out, &fixture_inputs(), &["--shard-tokens", SHARDED_TOKENS]);
        out
    })
}

// ---------------------------------------------------------------------------------------------
// Trees.

/// Every file under `dir`, by relative path, with its contents.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if e.file_type().unwrap().is_dir() {
                // Directories are recorded too, so an empty leftover directory is a difference.
                out.insert(rel.join(""), Vec::new());
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Asserts two directory trees hold the same files with the same bytes.
#[track_caller]
pub fn assert_same_tree(a: &Path, b: &Path) {
    let ta = tree(a);
    let tb = tree(b);
    let names_a: Vec<_> = ta.keys().collect();
    let names_b: Vec<_> = tb.keys().collect();
    assert_eq!(
        names_a,
        names_b,
        "{} and {} hold different files",
        a.display(),
        b.display()
    );
    let differing: Vec<_> = ta
        .iter()
        .filter(|(k, v)| tb[*k] != **v)
        .map(|(k, v)| format!("{} ({} vs {} bytes)", k.display(), v.len(), tb[k].len()))
        .collect();
    assert!(
        differing.is_empty(),
        "{} and {} differ in: {}",
        a.display(),
        b.display(),
        differing.join(", ")
    );
}

/// The names of a directory's entries, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A tiny deterministic pseudo-random generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Tables.

/// A Parquet table written by familiar, read in one batch; its schema must be `table`'s.
pub fn read_parquet(path: &Path, table: &str) -> arrow_array::RecordBatch {
    let f = std::fs::File::open(path).unwrap();
    let batches: Vec<_> = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .with_batch_size(1 << 20)
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    let expected = familiar::schema::table(table).unwrap();
    assert_eq!(batches.len(), 1, "read in one batch");
    assert_eq!(batches[0].schema().fields(), expected.fields());
    batches[0].clone()
}

/// Column `name` of `b` as the array type `T`.
pub fn col<'a, T: 'static>(b: &'a arrow_array::RecordBatch, name: &str) -> &'a T {
    b.column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<T>()
        .unwrap()
}
