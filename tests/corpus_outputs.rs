//! Input expansion leaves familiar's own output alone; a byte-order mark opens a file without
//! becoming part of it.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use familiar::corpus::{expand_inputs, expand_inputs_excluding, CorpusReader, ReadOptions};
use familiar::manifest::InputCursor;

fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

fn names(files: &[familiar::corpus::InputFile], root: &Path) -> Vec<String> {
    files
        .iter()
        .map(|f| f.path.strip_prefix(root).unwrap().display().to_string())
        .collect()
}

#[test]
fn familiar_output_inside_input_directories_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("a.jsonl"), b"{\"text\": \"a\"}\n");
    // An index, a build in progress (plan only), a directory being written (lock only), a
    // gradient store, and a directory whose manifest is someone else's.
    write(
        &root.join("idx/manifest.json"),
        b"{\n  \"format\": \"familiar-index\",\n  \"format_version\": 1\n}",
    );
    write(&root.join("idx/shard-00000/documents.parquet"), b"PAR1");
    write(
        &root.join("partial/build.json"),
        b"{\"format\":\"familiar-build\"}",
    );
    write(&root.join("partial/x.jsonl"), b"{\"text\": \"no\"}\n");
    write(&root.join("busy/.familiar-lock"), b"123");
    write(&root.join("busy/y.jsonl"), b"{\"text\": \"no\"}\n");
    write(
        &root.join("grads/store.json"),
        b"{\"format\": \"familiar-gradient-store\"}",
    );
    write(&root.join("grads/z.txt"), b"no");
    write(
        &root.join("theirs/manifest.json"),
        b"{\"format\": \"something-else\"}",
    );
    write(&root.join("theirs/b.jsonl"), b"{\"text\": \"b\"}\n");
    let out = root.join("out");
    write(&out.join("c.jsonl"), b"{\"text\": \"no\"}\n");

    let spec = [root.display().to_string()];
    let e = expand_inputs_excluding(&spec, Some(&out)).unwrap();
    assert_eq!(names(&e.files, root), ["a.jsonl", "theirs/b.jsonl"]);
    let skipped: Vec<(String, u64)> = e
        .skipped
        .iter()
        .map(|s| {
            (
                s.path.strip_prefix(root).unwrap().display().to_string(),
                s.files,
            )
        })
        .collect();
    assert_eq!(
        skipped,
        [
            ("busy".to_string(), 2),
            ("grads".into(), 2),
            ("idx".into(), 2),
            ("out".into(), 1),
            ("partial".into(), 2),
        ]
    );
    let reasons: Vec<&str> = e.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert!(reasons[0].contains(".familiar-lock"), "{reasons:?}");
    assert!(reasons[1].contains("gradient store"), "{reasons:?}");
    assert!(reasons[2].contains("a familiar index"), "{reasons:?}");
    assert!(reasons[3].contains("`out`"), "{reasons:?}");
    assert!(reasons[4].contains("familiar-build"), "{reasons:?}");

    // Without an --out, the output directory is corpus like any other.
    let e = expand_inputs(&spec).unwrap();
    assert_eq!(
        names(&e.files, root),
        ["a.jsonl", "out/c.jsonl", "theirs/b.jsonl"]
    );

    // Glob patterns: files under a skipped directory are skipped too.
    let pattern = [format!("{}/**/*.jsonl", root.display())];
    let e = expand_inputs_excluding(&pattern, Some(&out)).unwrap();
    assert_eq!(names(&e.files, root), ["a.jsonl", "theirs/b.jsonl"]);
    assert_eq!(e.skipped.len(), 3, "{:?}", e.skipped);

    // Named explicitly: a file of an index is read; one inside --out is refused.
    let explicit = [root.join("partial/x.jsonl").display().to_string()];
    assert_eq!(
        expand_inputs_excluding(&explicit, Some(&out))
            .unwrap()
            .files
            .len(),
        1
    );
    let inside = [out.join("c.jsonl").display().to_string()];
    let err = expand_inputs_excluding(&inside, Some(&out)).unwrap_err();
    assert!(
        err.to_string().contains("inside the `out` directory"),
        "{err}"
    );
    // A familiar directory named as the input: nothing to read, and why.
    let err = expand_inputs(&[root.join("idx").display().to_string()]).unwrap_err();
    assert!(err.to_string().contains("a familiar index"), "{err}");
}

#[test]
fn a_byte_order_mark_opens_a_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let bom = b"\xEF\xBB\xBF";
    let jsonl = [
        &bom[..],
        b"{\"id\": \"1\", \"text\": \"first\"}\n{\"text\": \"second\"}\n",
    ]
    .concat();
    write(&root.join("a.jsonl"), &jsonl);
    write(&root.join("b.txt"), &[&bom[..], "text".as_bytes()].concat());
    // A blank first line after the mark: a blank line.
    write(
        &root.join("c.jsonl"),
        &[&bom[..], b"\n{\"text\": \"third\"}\n"].concat(),
    );
    let files = expand_inputs(&[root.display().to_string()]).unwrap().files;
    let docs: Vec<(String, u64)> =
        CorpusReader::new(files, ReadOptions::default(), InputCursor::default())
            .map(|d| d.unwrap())
            .map(|d| (d.text, d.record))
            .collect();
    assert_eq!(
        docs,
        [
            ("first".to_string(), 1),
            ("second".into(), 2),
            ("text".into(), 1),
            ("third".into(), 2)
        ]
    );
}
