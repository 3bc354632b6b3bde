//! Several writers at once: outputs written by many processes to one path are each whole (the
//! last rename wins, no writer fails because of another), and directories one run owns refuse a
//! second run with "in use by process N".

#![allow(clippy::unwrap_used)]

mod util;

use std::path::Path;
use std::process::{Command, Stdio};

use util::*;

/// Runs `n` copies of `familiar ARGS(i)` at once and waits for all; returns their outputs.
fn at_once(n: usize, args: impl Fn(usize) -> Vec<std::ffi::OsString>) -> Vec<std::process::Output> {
    let children: Vec<_> = (0..n)
        .map(|i| {
            Command::new(bin())
                .args(args(i))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

fn parquet_rows(path: &Path) -> usize {
    let f = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap_or_else(|e| panic!("{} is not a whole Parquet file: {e}", path.display()))
        .build()
        .unwrap();
    reader.map(|b| b.unwrap().num_rows()).sum()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// Eight `familiar count --batch … --output race.parquet` (and `.jsonl`) at once, repeated: every
/// writer succeeds, and the published file is always exactly one writer's whole output (writer
/// i asks i + 1 queries, so its row count says whose it is).
#[test]
fn eight_writers_to_one_output_publish_one_whole_file() {
    let t = TestDir::new();
    let idx = fixture_index();
    let batches: Vec<_> = (0..8)
        .map(|i| {
            let lines: Vec<String> = (0..=i)
                .map(|k| format!("{{\"text\": \" Zelxir{}\"}}", " Exoexo".repeat(k % 3)))
                .collect();
            t.write(format!("batch-{i}.jsonl"), lines.join("\n") + "\n")
        })
        .collect();
    let out_dir = t.mkdir("out");
    for trial in 0..5 {
        for format in ["parquet", "jsonl"] {
            let out = out_dir.join(format!("race.{format}"));
            let outputs = at_once(8, |i| {
                vec![
                    "count".into(),
                    idx.into(),
                    "--batch".into(),
                    batches[i].clone().into(),
                    "--format".into(),
                    format.into(),
                    "--output".into(),
                    out.clone().into(),
                ]
            });
            for (i, o) in outputs.iter().enumerate() {
                assert!(
                    o.status.success(),
                    "trial {trial} {format} writer {i}: {:?}\n{}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            let rows = match format {
                "parquet" => parquet_rows(&out),
                _ => {
                    let text = std::fs::read_to_string(&out).unwrap();
                    for line in text.lines() {
                        serde_json::from_str::<serde_json::Value>(line)
                            .unwrap_or_else(|e| panic!("mixed output line {line:?}: {e}"));
                    }
                    text.lines().count()
                }
            };
            assert!(
                (1..=8).contains(&rows),
                "trial {trial} {format}: {rows} rows"
            );
            assert_eq!(leftovers(&out_dir), Vec::<String>::new(), "trial {trial}");
        }
    }
}

/// Directories one run owns refuse a second run while the first holds them, naming the
/// process: here the test process holds each lock (as a running `familiar` would), and the
/// command must fail at once without writing into the directory.
#[test]
fn directories_in_use_are_refused_naming_the_process() {
    let t = TestDir::new();
    let idx = fixture_index();
    let model = fixtures().join("models/fixture-gpt2");
    let pid = std::process::id().to_string();
    type Args = Box<dyn Fn(&Path) -> Vec<std::ffi::OsString>>;
    let cases: Vec<(&str, Args)> = vec![
        (
            "train",
            Box::new(|dir: &Path| {
                vec![
                    "train".into(),
                    "--index".into(),
                    idx.into(),
                    "--steps".into(),
                    "1".into(),
                    "--out".into(),
                    dir.into(),
                ]
            }),
        ),
        (
            "store",
            Box::new(move |dir: &Path| {
                vec![
                    "attribute".into(),
                    "store".into(),
                    "--model".into(),
                    model.clone().into(),
                    "--index".into(),
                    idx.into(),
                    "--out".into(),
                    dir.into(),
                ]
            }),
        ),
        (
            "demo",
            Box::new(|dir: &Path| {
                vec!["demo".into(), "--quiet".into(), "--out".into(), dir.into()]
            }),
        ),
        (
            "build",
            Box::new(|dir: &Path| build_args(dir, &fixture_inputs(), &[])),
        ),
    ];
    for (name, args) in cases {
        let dir = t.mkdir(format!("busy-{name}"));
        let lock = familiar::lock::DirLock::acquire(&dir, "test").unwrap();
        let o = familiar(args(&dir));
        o.failure().stderr_has(&[
            "in use by process",
            pid.as_str(),
            &dir.display().to_string(),
        ]);
        let entries: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            entries,
            [familiar::lock::LOCK_FILE],
            "{name} wrote into {}",
            dir.display()
        );
        drop(lock);
    }
}
