//! Corpus readers: every format, every error names file and line, cursors resume exactly.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use familiar::corpus::{expand_inputs, CorpusReader, Document, Fields, InputFormat, ReadOptions};
use familiar::manifest::InputCursor;
use familiar::Error;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn zst(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn read_all(
    paths: &[PathBuf],
    options: ReadOptions,
    cursor: InputCursor,
) -> (Vec<Document>, Option<Error>, CorpusReader) {
    let specs: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let files = expand_inputs(&specs).unwrap().files;
    let mut reader = CorpusReader::new(files, options, cursor);
    let mut docs = Vec::new();
    let mut err = None;
    for d in reader.by_ref() {
        match d {
            Ok(d) => docs.push(d),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    (docs, err, reader)
}

const LINES: &str = concat!(
    r#"{"id": "a", "text": "alpha", "source": "s1", "metadata": {"title": "T", "n": 3}}"#,
    "\n\n",
    r#"{"id": 7, "text": "beta"}"#,
    "\n",
    r#"{"text": "gamma", "source": null}"#,
    "\n"
);

#[test]
fn jsonl_plain_zstd_gzip_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write(dir.path(), "a.jsonl", LINES.as_bytes());
    let z = write(dir.path(), "b.jsonl.zst", &zst(LINES.as_bytes()));
    let g = write(dir.path(), "c.json.gz", &gz(LINES.as_bytes()));
    for p in [plain, z, g] {
        let (docs, err, _) = read_all(
            std::slice::from_ref(&p),
            ReadOptions::default(),
            InputCursor::default(),
        );
        assert!(err.is_none(), "{err:?}");
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, ["alpha", "beta", "gamma"]);
        assert_eq!(docs[0].external_id, "a");
        assert_eq!(docs[0].source.as_deref(), Some("s1"));
        assert_eq!(
            docs[0].metadata,
            vec![
                ("n".to_string(), "3".to_string()),
                ("title".into(), "T".into())
            ]
        );
        assert_eq!(docs[1].external_id, "7");
        // Blank line 2 is not a record, but lines keep their physical numbers.
        assert_eq!(docs.iter().map(|d| d.record).collect::<Vec<_>>(), [1, 3, 4]);
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(docs[2].external_id, format!("{name}:4"));
        assert_eq!(docs[2].source, None);
    }
}

#[test]
fn errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[u8], u64, &str)] = &[
        (
            "bad-json.jsonl",
            b"{\"text\": \"ok\"}\n{\"text\": oops}\n",
            2,
            "invalid JSON",
        ),
        (
            "no-text.jsonl",
            b"{\"text\": \"ok\"}\n\n{\"body\": \"x\", \"id\": 1}\n",
            3,
            "no `text` field (the record has: body, id)",
        ),
        (
            "not-string.jsonl",
            b"{\"text\": 5}\n",
            1,
            "field `text` is a number, expected a string",
        ),
        ("not-object.jsonl", b"[1, 2]\n", 1, "expected a JSON object"),
        (
            "utf8.jsonl",
            b"{\"text\": \"ok\"}\n{\"text\": \"caf\xe9\"}\n",
            2,
            "invalid UTF-8 at byte offset 13",
        ),
    ];
    for (name, bytes, line, what) in cases {
        let p = write(dir.path(), name, bytes);
        let (_, err, _) = read_all(
            std::slice::from_ref(&p),
            ReadOptions::default(),
            InputCursor::default(),
        );
        let err = err.expect("an error");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("{}:{line}: ", p.display())),
            "{name}: {msg}"
        );
        assert!(msg.contains(what), "{name}: {msg}");
    }
}

#[test]
fn skip_invalid_counts_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "mixed.jsonl",
        b"{\"text\": \"a\"}\nnot json\n{\"x\": 1}\n{\"text\": \"b\"}\n",
    );
    let options = ReadOptions {
        skip_invalid: true,
        ..Default::default()
    };
    let (docs, err, reader) = read_all(&[p], options, InputCursor::default());
    assert!(err.is_none());
    assert_eq!(docs.len(), 2);
    assert_eq!(reader.skipped(), 2);
}

#[test]
fn corrupt_zstd_is_a_stream_error_even_when_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = zst(LINES.repeat(200).as_bytes());
    let n = bytes.len();
    for b in &mut bytes[n / 2..n / 2 + 16] {
        *b ^= 0x5a;
    }
    let p = write(dir.path(), "broken.jsonl.zst", &bytes);
    let options = ReadOptions {
        skip_invalid: true,
        ..Default::default()
    };
    let (docs, err, _) = read_all(std::slice::from_ref(&p), options, InputCursor::default());
    let msg = err.expect("corrupt zstd must fail").to_string();
    assert!(
        msg.contains(&p.display().to_string())
            && msg.contains("corrupt or truncated compressed data"),
        "{msg}"
    );
    assert!(docs.len() < 600);
    // Truncated, too.
    let full = zst(LINES.as_bytes());
    let t = write(dir.path(), "short.jsonl.zst", &full[..full.len() - 5]);
    let (_, err, _) = read_all(&[t], ReadOptions::default(), InputCursor::default());
    assert!(err.is_some());
}

#[test]
fn empty_inputs_fail_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let e = write(dir.path(), "empty.jsonl", b"\n\n");
    let ok = write(dir.path(), "ok.jsonl", b"{\"text\": \"a\"}\n");
    let (_, err, _) = read_all(
        &[e.clone(), ok.clone()],
        ReadOptions::default(),
        InputCursor::default(),
    );
    assert!(err.unwrap().to_string().contains("`allow_empty`"));
    let options = ReadOptions {
        allow_empty: true,
        ..Default::default()
    };
    let (docs, err, reader) = read_all(&[e.clone(), ok], options, InputCursor::default());
    assert!(err.is_none());
    assert_eq!(docs.len(), 1);
    assert_eq!(reader.empty_inputs(), [e]);
}

#[test]
fn cursor_resumes_after_any_record() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.jsonl.zst", &zst(LINES.as_bytes()));
    let b = write(dir.path(), "b.txt", b"plain text document");
    let c = write(dir.path(), "c.jsonl.gz", &gz(LINES.as_bytes()));
    let paths = [a, b, c];
    let (all, err, _) = read_all(&paths, ReadOptions::default(), InputCursor::default());
    assert!(err.is_none());
    assert_eq!(all.len(), 7);
    for k in 0..all.len() {
        let cursor = InputCursor {
            file: all[k].file,
            record: all[k].record,
        };
        let (rest, err, _) = read_all(&paths, ReadOptions::default(), cursor);
        assert!(err.is_none());
        assert_eq!(rest, all[k + 1..], "resuming after document {k}");
    }
}

#[test]
fn text_files_and_bad_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let t = write(dir.path(), "doc.txt", "héllo\nworld".as_bytes());
    let (docs, _, _) = read_all(
        std::slice::from_ref(&t),
        ReadOptions::default(),
        InputCursor::default(),
    );
    assert_eq!(docs[0].text, "héllo\nworld");
    assert_eq!(docs[0].external_id, t.display().to_string());
    let bad = write(dir.path(), "bad.txt", b"ok \xff\xfe");
    let (_, err, _) = read_all(&[bad], ReadOptions::default(), InputCursor::default());
    assert!(err
        .unwrap()
        .to_string()
        .contains("invalid UTF-8 at byte offset 3"));
}

#[test]
fn parquet_rows_with_renamed_columns() {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("docs.parquet");
    let body: ArrayRef = Arc::new(StringArray::from(vec![
        Some("one"),
        Some("two"),
        None,
        Some("four"),
    ]));
    let ids: ArrayRef = Arc::new(Int64Array::from(vec![10, 11, 12, 13]));
    let meta: ArrayRef = Arc::new(StringArray::from(vec![
        Some(r#"{"k": "v"}"#),
        None,
        None,
        None,
    ]));
    let batch =
        RecordBatch::try_from_iter([("body", body), ("doc", ids), ("metadata", meta)]).unwrap();
    let f = std::fs::File::create(&p).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let fields = Fields {
        text: "body".into(),
        id: "doc".into(),
        ..Default::default()
    };
    let options = ReadOptions {
        fields: fields.clone(),
        skip_invalid: true,
        ..Default::default()
    };
    let (docs, err, reader) = read_all(std::slice::from_ref(&p), options, InputCursor::default());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
        ["one", "two", "four"]
    );
    assert_eq!(
        docs.iter()
            .map(|d| d.external_id.as_str())
            .collect::<Vec<_>>(),
        ["10", "11", "13"]
    );
    assert_eq!(docs[0].metadata, vec![("k".to_string(), "v".to_string())]);
    assert_eq!(reader.skipped(), 1, "the null text row");
    // Resume after row 2.
    let options = ReadOptions {
        fields,
        skip_invalid: true,
        ..Default::default()
    };
    let (rest, _, _) = read_all(
        std::slice::from_ref(&p),
        options,
        InputCursor { file: 0, record: 2 },
    );
    assert_eq!(
        rest.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
        ["four"]
    );
    // The default text column does not exist: the error lists the columns.
    let (_, err, _) = read_all(&[p], ReadOptions::default(), InputCursor::default());
    let msg = err.unwrap().to_string();
    assert!(
        msg.contains("no `text` column (columns: body, doc, metadata)"),
        "{msg}"
    );
}

#[test]
fn input_expansion() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    write(dir.path(), "b.jsonl", b"");
    write(dir.path(), "sub/a.jsonl.zst", b"");
    write(dir.path(), "notes.md", b"");
    write(dir.path(), "config.json", b"{}");
    let e = expand_inputs(&[dir.path().display().to_string()]).unwrap();
    let names: Vec<String> = e
        .files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["b.jsonl", "a.jsonl.zst"]);
    assert_eq!(e.files[1].format, InputFormat::JsonlZst);
    assert_eq!(e.ignored.len(), 2);
    let glob = format!("{}/**/*.jsonl*", dir.path().display());
    assert_eq!(expand_inputs(&[glob]).unwrap().files.len(), 2);
    let twice = dir.path().join("b.jsonl").display().to_string();
    assert!(expand_inputs(&[twice.clone(), twice])
        .unwrap_err()
        .to_string()
        .contains("more than once"));
    assert!(expand_inputs(&[dir.path().join("notes.md").display().to_string()]).is_err());
    assert!(expand_inputs(&[dir.path().join("missing.jsonl").display().to_string()]).is_err());
    assert!(expand_inputs(&[format!("{}/*.nothing", dir.path().display())]).is_err());
}
