//! Every numeric option of every command at the extremes of its type: 0, 1, 2^32, the largest
//! u64 for integers; 0, −1, NaN, ±inf, 1e308 for reals. Whatever the value, `familiar` must
//! answer or refuse with a message (exit 0, 1 or 2) in bounded time: never a panic (exit 101,
//! "panicked"), an abort or a signal, never a hang. The option list is checked against the
//! sources (`query/cli/src/cmd/*.rs`), so a new numeric option without a case here fails the test.

#![allow(clippy::unwrap_used)]

mod util;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use util::*;

const INTS: [&str; 5] = ["0", "1", "4294967296", "18446744073709551615", "-1"];
const REALS: [&str; 7] = ["0", "-1", "NaN", "inf", "-inf", "1e308", "1e-320"];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Int,
    Real,
}

/// One option of one command: the command's arguments before it (a working invocation with
/// small settings), the option, its kind.
struct Case {
    base: Vec<OsString>,
    option: &'static str,
    kind: Kind,
}

struct World {
    idx: PathBuf,
    model: PathBuf,
    store: PathBuf,
    /// An `attribute score` run on the store.
    run: PathBuf,
    tables: PathBuf,
    scratch: TestDir,
}

fn world() -> World {
    let scratch = TestDir::new();
    let idx = fixture_index().to_path_buf();
    let model = fixtures().join("models/fixture-gpt2");
    let store = scratch.join("store");
    familiar(os(&[
        &"attribute",
        &"store",
        &"--model",
        &model,
        &"--index",
        &idx,
        &"--out",
        &store,
        &"--rank",
        &"4",
        &"--layers",
        &"blocks",
        &"-q",
    ]))
    .success();
    let run = scratch.join("run");
    familiar(os(&[
        &"attribute",
        &"score",
        &"--store",
        &store,
        &"--model",
        &model,
        &"--queries",
        &fixtures().join("attribution/queries.jsonl"),
        &"--out",
        &run,
    ]))
    .success();
    let tables = scratch.mkdir("tables");
    World {
        idx,
        model,
        store,
        run,
        tables,
        scratch,
    }
}

fn cases(w: &World) -> Vec<Case> {
    let t = &w.scratch;
    let out = |name: &str| t.join(format!("out-{name}"));
    let queries = fixtures().join("attribution/queries.jsonl");
    let samples = fixtures().join("priming/samples.jsonl");
    let themes = fixtures().join("priming/themes.jsonl");
    let lexicon = fixtures().join("concepts/planted.csv");
    let items = t.write(
        "items.jsonl",
        "{\"id\": \"a\", \"prompt\": \"The capital of\", \"completion\": \" Jocyl\"}\n",
    );
    let probes = t.write(
        "probes.jsonl",
        "{\"id\": \"p\", \"text\": \"The capital of Jocyl\"}\n",
    );
    let corpus = t.write(
        "corpus.jsonl",
        "{\"id\": \"d\", \"text\": \"Zelxir Exoexo Zelxir\"}\n",
    );
    let idx = &w.idx;
    let train = |o: &str| {
        os(&[
            &"train",
            &"--index",
            idx,
            &"--out",
            &out(o),
            &"--layers",
            &"1",
            &"--hidden",
            &"8",
            &"--heads",
            &"2",
            &"--context",
            &"8",
            &"--batch",
            &"1",
            &"--steps",
            &"2",
            &"-q",
        ])
    };
    let prime = |o: &str| {
        os(&[
            &"prime",
            &"--model",
            &w.model,
            &"--samples",
            &samples,
            &"--themes",
            &themes,
            &"--out",
            &out(o),
            &"--steps",
            &"1",
            &"--batch",
            &"1",
            &"--stop-after",
            &"1",
            &"-q",
        ])
    };
    let eval = |o: &str| {
        os(&[
            &"attribute",
            &"eval",
            &"--store",
            &w.store,
            &"--model",
            &w.model,
            &"--index",
            idx,
            &"--queries",
            &queries,
            &"--out",
            &out(o),
            &"--subsets",
            &"2",
            &"--steps",
            &"1",
            &"--stop-after",
            &"1",
            &"-q",
        ])
    };
    let c = |base: Vec<OsString>, option: &'static str, kind: Kind| Case { base, option, kind };
    use Kind::*;
    let mut v = vec![
        c(os(&[&"locate", idx, &" Zelxir"]), "--limit", Int),
        c(os(&[&"locate", idx, &" Zelxir"]), "--offset", Int),
        c(
            os(&[&"locate", idx, &" Zelxir", &"--limit", &"2"]),
            "--context",
            Int,
        ),
        c(os(&[&"ntd", idx, &" Zelxir"]), "--top", Int),
        c(
            os(&[
                &"cnf",
                idx,
                &"--clause",
                &" Zelxir",
                &"--clause",
                &" Exoexo",
            ]),
            "--max-occurrences",
            Int,
        ),
        c(os(&[&"cnf", idx, &"--clause", &" Zelxir"]), "--list", Int),
        c(
            os(&[
                &"cnf",
                idx,
                &"--clause",
                &" Zelxir",
                &"--max-occurrences",
                &"3",
            ]),
            "--seed",
            Int,
        ),
        c(os(&[&"docs", idx, &"0", &"--window", &"0"]), "", Int),
        c(os(&[&"docs", idx]), "", Int),
        c(os(&[&"prob", idx, &" Zelxir"]), "--next-id", Int),
        c(
            os(&[&"concepts", &"lookup", idx, &"zelxir", &"--fuzzy", &"1"]),
            "--limit",
            Int,
        ),
        c(
            os(&[&"concepts", &"lookup", idx, &"zelxir"]),
            "--fuzzy",
            Int,
        ),
        c(
            os(&[
                &"concepts",
                &"count",
                idx,
                &lexicon,
                &"--out",
                &out("cc"),
                &"-q",
            ]),
            "--threads",
            Int,
        ),
        c(
            os(&[
                &"concepts",
                &"count",
                idx,
                &lexicon,
                &"--out",
                &out("cc2"),
                &"-q",
            ]),
            "--pair-cache-mib",
            Int,
        ),
        c(os(&[&"index", &"verify", idx]), "--samples", Int),
        c(
            os(&[
                &"index",
                &"build",
                &"--tokenizer",
                &tokenizer(),
                &"--out",
                &out("b1"),
                &"-q",
                &corpus,
            ]),
            "--shard-tokens",
            Int,
        ),
        c(
            os(&[
                &"index",
                &"build",
                &"--tokenizer",
                &tokenizer(),
                &"--out",
                &out("b2"),
                &"-q",
                &corpus,
            ]),
            "--threads",
            Int,
        ),
        c(
            os(&[
                &"index",
                &"build",
                &"--tokenizer",
                &tokenizer(),
                &"--out",
                &out("b3"),
                &"-q",
                &corpus,
            ]),
            "--stop-after-shards",
            Int,
        ),
        c(
            os(&[
                &"score",
                &"--model",
                &w.model,
                &"--items",
                &items,
                &"--out",
                &out("s.parquet"),
                &"-q",
            ]),
            "--limit",
            Int,
        ),
        c(
            os(&[
                &"density",
                &"--model",
                &w.model,
                &"--probes",
                &probes,
                &"--out",
                &out("d.parquet"),
                &"-q",
            ]),
            "--threshold",
            Real,
        ),
        c(
            os(&[
                &"report",
                &"frequency",
                &"--tables",
                &w.tables,
                &"--out",
                &out("rf"),
            ]),
            "--bins",
            Int,
        ),
        c(
            os(&[
                &"report",
                &"frequency",
                &"--tables",
                &w.tables,
                &"--out",
                &out("rf2"),
            ]),
            "--contamination-n",
            Int,
        ),
        c(
            os(&[
                &"report",
                &"frequency",
                &"--tables",
                &w.tables,
                &"--out",
                &out("rf3"),
            ]),
            "--contamination-threshold",
            Real,
        ),
        c(
            os(&[
                &"report",
                &"density",
                &"--tables",
                &w.tables,
                &"--out",
                &out("rd"),
            ]),
            "--bins",
            Int,
        ),
        c(
            os(&[
                &"report",
                &"priming",
                &"--tables",
                &w.tables,
                &"--out",
                &out("rp"),
            ]),
            "--threshold",
            Real,
        ),
        c(
            os(&[
                &"attribute",
                &"store",
                &"--model",
                &w.model,
                &"--index",
                idx,
                &"--out",
                &out("st"),
                &"--layers",
                &"blocks",
                &"-q",
            ]),
            "--rank",
            Int,
        ),
        c(
            os(&[
                &"attribute",
                &"store",
                &"--model",
                &w.model,
                &"--index",
                idx,
                &"--out",
                &out("st2"),
                &"--layers",
                &"blocks",
                &"--rank",
                &"2",
                &"-q",
            ]),
            "--seed",
            Int,
        ),
        c(
            os(&[
                &"attribute",
                &"store",
                &"--model",
                &w.model,
                &"--index",
                idx,
                &"--out",
                &out("st3"),
                &"--layers",
                &"output",
                &"--rank",
                &"2",
                &"-q",
            ]),
            "--head-rank",
            Int,
        ),
        c(
            os(&[
                &"attribute",
                &"report",
                &w.run,
                &"--index",
                idx,
                &"--out",
                &out("ar"),
            ]),
            "--docs",
            Int,
        ),
        c(
            os(&[
                &"attribute",
                &"score",
                &"--store",
                &w.store,
                &"--model",
                &w.model,
                &"--queries",
                &queries,
                &"--out",
                &out("sc"),
            ]),
            "--top-k",
            Int,
        ),
        c(
            os(&[
                &"attribute",
                &"score",
                &"--store",
                &w.store,
                &"--model",
                &w.model,
                &"--queries",
                &queries,
                &"--out",
                &out("sc2"),
                &"--precondition",
                &"fisher",
            ]),
            "--damping",
            Real,
        ),
        c(
            os(&[
                &"attribute",
                &"score",
                &"--store",
                &w.store,
                &"--model",
                &w.model,
                &"--queries",
                &queries,
                &"--out",
                &out("sc4"),
                &"--precondition",
                &"trackstar",
            ]),
            "--query-mix",
            Real,
        ),
        c(
            os(&[
                &"attribute",
                &"score",
                &"--store",
                &w.store,
                &"--model",
                &w.model,
                &"--queries",
                &queries,
                &"--out",
                &out("sc3"),
                &"--top-k",
                &"2",
                &"--index",
                &w.idx,
            ]),
            "--token-influence",
            Int,
        ),
        c(eval("e1"), "--subsets", Int),
        c(eval("e2"), "--fraction", Real),
        c(eval("e3"), "--seed", Int),
        c(eval("e4"), "--steps", Int),
        c(eval("e5"), "--stop-after", Int),
        c(eval("e6"), "--damping", Real),
        c(
            os(&[&"sql", &"--tables", &w.tables, &"SELECT 1"]),
            "--memory-limit",
            Int,
        ),
        c(
            os(&[&"sql", &"--tables", &w.tables, &"SELECT 1"]),
            "--time-limit",
            Real,
        ),
        c(
            os(&[&"demo", &"--out", &out("demo"), &"-q", &"--train"]),
            "--train-steps",
            Int,
        ),
    ];
    let text = "An rohi an ve tian Zelxir Exoexo ve, lo vana ve nisi ve kokaon.";
    for (o, kind) in [
        ("--min-len", Int),
        ("--max-count", Int),
        ("--max-span-density", Real),
        ("--docs-per-span", Int),
        ("--max-tokens", Int),
    ] {
        v.push(c(os(&[&"trace", idx, &"--text", &text]), o, kind));
    }
    v.push(c(os(&[&"ngrams", &"top", idx, &"--n", &"2"]), "--k", Int));
    // A server that starts runs until stopped: it must refuse a value with a message or start
    // (and be stopped by the test), never crash.
    let spec = format!("fx={}", w.idx.display());
    for (o, kind) in [
        ("--concurrency", Int),
        ("--queue", Int),
        ("--time-limit", Real),
        ("--max-request-bytes", Int),
        ("--max-response-bytes", Int),
        ("--max-query-tokens", Int),
        ("--sql-rows", Int),
        ("--ntd-cache-min-count", Int),
        ("--ntd-cache-mb", Int),
        ("--ntd-warm", Int),
    ] {
        v.push(c(
            os(&[
                &"serve",
                &"--index",
                &spec,
                &"--addr",
                &"127.0.0.1:0",
                &"--quiet",
            ]),
            o,
            kind,
        ));
    }
    for o in ["--min-len", "--docs-per-cluster"] {
        v.push(c(os(&[&"duplicates", idx, &"-q"]), o, Int));
    }
    v.push(c(
        os(&[
            &"contamination",
            idx,
            &"--items",
            &items,
            &"--out",
            &out("contamination"),
            &"-q",
        ]),
        "--documents",
        Int,
    ));
    for (o, kind) in [
        ("--layers", Int),
        ("--hidden", Int),
        ("--heads", Int),
        ("--context", Int),
        ("--batch", Int),
        ("--steps", Int),
        ("--lr", Real),
        ("--warmup", Int),
        ("--weight-decay", Real),
        ("--clip", Real),
        ("--seed", Int),
        ("--checkpoint-every", Int),
        ("--stop-after", Int),
    ] {
        v.push(c(train(&format!("train{o}")), o, kind));
    }
    for (o, kind) in [
        ("--steps", Int),
        ("--batch", Int),
        ("--lr", Real),
        ("--weight-decay", Real),
        ("--clip", Real),
        ("--replay-window", Int),
        ("--seed", Int),
        ("--stop-after", Int),
    ] {
        v.push(c(prime(&format!("prime{o}")), o, kind));
    }
    v
}

/// Options that set how much work a run does: a huge value is a long run the user asked for,
/// so these runs may still be working (without a crash so far) when the test stops them.
fn long_run_allowed(case: &Case, value: &str) -> bool {
    let base: Vec<String> = case
        .base
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let huge = value != "0" && value != "-1";
    base[0] == "serve"
        || huge
            && (base[0] == "demo"
                || matches!(case.option, "--steps" | "--subsets" | "--stop-after"))
}

/// Numeric options declared in `query/cli/src/cmd/*.rs` (fields of integer or real type, as
/// `--kebab-case`), by file.
fn declared_numeric_options() -> BTreeSet<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cmd");
    let numeric = [
        "u8", "u16", "u32", "u64", "usize", "i32", "i64", "f32", "f64", "Duration",
    ];
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let file = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut in_args = false;
        for line in text.lines() {
            if line.starts_with("pub struct") || line.starts_with("struct") {
                in_args = line.contains("Args");
            }
            if line == "}" {
                in_args = false;
            }
            let Some(field) = line.strip_prefix("    ") else {
                continue;
            };
            if !in_args || field.starts_with(' ') || field.starts_with("//") {
                continue;
            }
            let field = field.trim_start_matches("pub ");
            let Some((name, ty)) = field.split_once(':') else {
                continue;
            };
            let ty = ty.trim().trim_end_matches(',');
            let inner = ty
                .strip_prefix("Option<")
                .and_then(|t| t.strip_suffix('>'))
                .unwrap_or(ty);
            let inner = inner.rsplit("::").next().unwrap_or(inner);
            if numeric.contains(&inner) {
                out.insert((file.clone(), format!("--{}", name.trim().replace('_', "-"))));
            }
        }
    }
    out
}

#[test]
fn numeric_options_at_their_extremes_never_crash_or_hang() {
    let w = world();
    let cases = cases(&w);
    // Every declared numeric option has a case (by option name; positional ids are covered by
    // the `docs` cases).
    let covered: BTreeSet<&str> = cases.iter().map(|c| c.option).collect();
    let missing: Vec<String> = declared_numeric_options()
        .into_iter()
        .filter(|(_, o)| !covered.contains(o.as_str()) && o != "--doc-ids")
        .filter(|(f, _)| f != "import") // import's numeric fields are file columns, not options
        .map(|(f, o)| format!("{f}: {o}"))
        .collect();
    assert!(
        missing.is_empty(),
        "numeric options without an extremes case: {missing:?}"
    );

    let limit = Duration::from_secs(120);
    let mut failures = Vec::new();
    let mut runs = 0;
    for case in &cases {
        let values: &[&str] = match case.kind {
            Kind::Int => &INTS,
            Kind::Real => &REALS,
        };
        for value in values {
            let mut args = case.base.clone();
            // The base's own setting of the option under test gives way (clap refuses an option
            // given twice, which would test nothing).
            if let Some(i) = args.iter().position(|a| *a == case.option) {
                args.drain(i..i + 2);
            }
            if !case.option.is_empty() {
                args.push(case.option.into());
            }
            // `--opt=-1` so that clap reads a negative number as the value.
            if case.option.is_empty() {
                args.push(value.into());
            } else {
                let last = args.pop().unwrap();
                args.push(format!("{}={value}", last.to_string_lossy()).into());
            }
            // Each run starts from a fresh output.
            let fresh_output = || {
                if let Some(o) = args.iter().skip_while(|a| *a != "--out").nth(1) {
                    let p = PathBuf::from(o);
                    let _ = std::fs::remove_dir_all(&p);
                    let _ = std::fs::remove_file(&p);
                }
            };
            fresh_output();
            runs += 1;
            let long_ok = long_run_allowed(case, value);
            let wait = if case.base[0] == "serve" {
                // Time to refuse the value or to start (and crash, if it would).
                Duration::from_secs(3)
            } else if long_ok {
                Duration::from_secs(10)
            } else {
                limit
            };
            let (mut out, mut timed_out) = familiar_killed_after(&args, wait);
            if timed_out && !long_ok {
                // Once in a few hundred runs a `prime` run of ordinary values (`--replay-window=1`,
                // 0.4 s normally) has stalled until killed; that is not what this test is about,
                // so a stalled run is run again, said on stderr, and only a second stall fails.
                eprintln!(
                    "warning: familiar {} stalled for {} s; running it again",
                    args.iter()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(" "),
                    wait.as_secs()
                );
                fresh_output();
                (out, timed_out) = familiar_killed_after(&args, wait);
            }
            let (code, stderr) = (out.code(), out.stderr);
            let shown: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let bad = (timed_out && !long_ok)
                || (!timed_out && !matches!(code, Some(0..=2)))
                || stderr.contains("panicked")
                || (!timed_out && code != Some(0) && stderr.trim().is_empty());
            if bad {
                failures.push(format!(
                    "familiar {}: {}; stderr: {}",
                    shown.join(" "),
                    if timed_out {
                        "still running when stopped".to_string()
                    } else {
                        format!("exit {code:?}")
                    },
                    stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} runs crashed, hung or failed without a message:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
