//! Input fingerprints of the corpus reader (what a resumed build checks), and inputs that are not
//! regular files.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

use familiar::corpus::{expand_inputs, CorpusReader, ReadOptions};
use familiar::manifest::{fingerprint, InputCursor};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn parquet(path: &Path, texts: &[&str]) {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    let texts: ArrayRef = Arc::new(StringArray::from(texts.to_vec()));
    let batch = RecordBatch::try_from_iter([("text", texts)]).unwrap();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn reader(paths: &[PathBuf], cursor: InputCursor) -> CorpusReader {
    let specs: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let files = expand_inputs(&specs).unwrap().files;
    CorpusReader::new(files, ReadOptions::default(), cursor)
}

/// Every document's cursor and the reader's fingerprint of the records consumed up to it.
fn read_with_fingerprints(r: &mut CorpusReader) -> Vec<(InputCursor, u64)> {
    let mut out = Vec::new();
    while let Some(d) = r.next() {
        let d = d.unwrap();
        out.push((
            InputCursor {
                file: d.file,
                record: d.record,
            },
            r.consumed_fingerprint().unwrap(),
        ));
    }
    out
}

fn lines(prefix: &str, n: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("{{\"text\": \"{prefix} document number {i}\"}}\n"));
        if i % 3 == 1 {
            s.push('\n'); // blank lines are not records but are consumed
        }
    }
    s.into_bytes()
}

#[test]
fn whole_file_fingerprints_are_the_xxh3_of_the_bytes_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let paths = vec![
        write(dir.path(), "a.jsonl", &lines("plain", 20)),
        write(
            dir.path(),
            "b.jsonl.zst",
            &zstd::encode_all(&lines("zstd", 50)[..], 3).unwrap(),
        ),
        write(dir.path(), "c.jsonl.gz", &gz(&lines("gzip", 30))),
        write(dir.path(), "d.txt", b"a text document"),
        {
            let p = dir.path().join("e.parquet");
            parquet(&p, &["one", "two", "three"]);
            p
        },
    ];
    let mut r = reader(&paths, InputCursor::default());
    let docs = read_with_fingerprints(&mut r);
    assert_eq!(docs.len(), 20 + 50 + 30 + 1 + 3);
    let fp = r.fingerprints();
    for (i, p) in paths.iter().enumerate() {
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(
            fp.get(i),
            Some(xxhash_rust::xxh3::xxh3_64(&bytes)),
            "{}",
            p.display()
        );
    }
    // An uncompressed JSONL file's records so far are its first bytes, up to the record's line.
    let plain = std::fs::read(&paths[0]).unwrap();
    for &(cursor, h) in &docs[..20] {
        let end = plain
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(cursor.record as usize - 1)
            .unwrap()
            .0;
        assert_eq!(h, xxhash_rust::xxh3::xxh3_64(&plain[..=end]));
    }
}

#[test]
fn a_resume_checks_the_records_before_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let paths = vec![
        write(dir.path(), "a.jsonl", &lines("plain", 10)),
        write(
            dir.path(),
            "b.jsonl.zst",
            &zstd::encode_all(&lines("zstd", 10)[..], 3).unwrap(),
        ),
        write(dir.path(), "c.txt", b"text"),
        {
            let p = dir.path().join("d.parquet");
            parquet(&p, &["one", "two", "three"]);
            p
        },
    ];
    let all = read_with_fingerprints(&mut reader(&paths, InputCursor::default()));
    for (k, &(cursor, h)) in all.iter().enumerate() {
        // The recorded fingerprint: the rest reads as before.
        let mut r = reader(&paths, cursor).expect_at_cursor(fingerprint(h));
        let rest = read_with_fingerprints(&mut r);
        assert_eq!(rest, all[k + 1..], "resuming after document {k}");
        // Another fingerprint: an error naming the file, before any document.
        let mut r = reader(&paths, cursor).expect_at_cursor(fingerprint(h ^ 1));
        let e = r.next().unwrap().unwrap_err().to_string();
        let name = paths[cursor.file].display().to_string();
        assert!(
            e.contains(&format!("input {name} changed since the interrupted build"))
                && e.contains("`restart`")
                && e.contains(&fingerprint(h ^ 1)),
            "{e}"
        );
    }
}

#[test]
fn an_edit_of_the_same_size_before_the_cursor_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.jsonl", &lines("plain", 10));
    let all = read_with_fingerprints(&mut reader(
        std::slice::from_ref(&a),
        InputCursor::default(),
    ));
    let (cursor, h) = all[6];
    // Same size, other text in the second record.
    let edited = String::from_utf8(std::fs::read(&a).unwrap())
        .unwrap()
        .replacen("number 1\"", "NUMBER 1\"", 1);
    std::fs::write(&a, &edited).unwrap();
    let mut r = reader(std::slice::from_ref(&a), cursor).expect_at_cursor(fingerprint(h));
    let e = r.next().unwrap().unwrap_err().to_string();
    assert!(e.contains("changed since the interrupted build"), "{e}");
    // An edit after the cursor is not the resume's concern: those records are read anew.
    std::fs::write(&a, lines("plain", 10)).unwrap();
    let edited = String::from_utf8(std::fs::read(&a).unwrap())
        .unwrap()
        .replacen("number 9\"", "NUMBER 9\"", 1);
    std::fs::write(&a, &edited).unwrap();
    let mut r = reader(std::slice::from_ref(&a), cursor).expect_at_cursor(fingerprint(h));
    assert_eq!(read_with_fingerprints(&mut r).len(), 3);
}

#[test]
fn a_jsonl_file_shorter_than_the_cursor_says_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.jsonl", &lines("plain", 3));
    let mut r = reader(
        std::slice::from_ref(&a),
        InputCursor {
            file: 0,
            record: 40,
        },
    );
    let e = r.next().unwrap().unwrap_err().to_string();
    assert!(
        e.contains("changed since the interrupted build") && e.contains("after line 40"),
        "{e}"
    );
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

#[cfg(unix)]
#[test]
fn inputs_that_are_not_regular_files_are_refused_without_opening_them() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stream.jsonl");
    mkfifo(&fifo);
    // Opening a FIFO for reading blocks until a writer comes: this must return at once.
    let e = expand_inputs(&[fifo.display().to_string()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("stream.jsonl") && e.contains("FIFO"), "{e}");
    // Inside a directory too.
    let d = dir.path().join("corpus");
    std::fs::create_dir(&d).unwrap();
    write(&d, "a.jsonl", b"{\"text\": \"x\"}\n");
    mkfifo(&d.join("b.jsonl"));
    let e = expand_inputs(&[d.display().to_string()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("b.jsonl") && e.contains("FIFO"), "{e}");
    // A symbolic link to a device.
    let zero = dir.path().join("zero.jsonl");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let e = expand_inputs(&[zero.display().to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("zero.jsonl") && e.contains("character device"),
        "{e}"
    );
    // A symbolic link to a regular file is fine.
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(d.join("a.jsonl"), &link).unwrap();
    assert_eq!(
        expand_inputs(&[link.display().to_string()])
            .unwrap()
            .files
            .len(),
        1
    );
}

#[cfg(unix)]
#[test]
fn manifests_and_tokenizers_must_be_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("manifest.json");
    mkfifo(&fifo);
    let e = familiar::manifest::read::<familiar::manifest::IndexManifest>(&fifo, "familiar-index")
        .unwrap_err()
        .to_string();
    assert!(e.contains("manifest.json") && e.contains("FIFO"), "{e}");
    let zero = dir.path().join("tokenizer.json");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let e = familiar::tokenizer::Tokenizer::from_file(&zero)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("character device"),
        "{e}"
    );
    // A regular file larger than the limit is refused by its size, not read.
    let big = dir.path().join("big.json");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(familiar::manifest::MAX_MANIFEST_BYTES + 1)
        .unwrap();
    let e = familiar::manifest::read::<familiar::manifest::IndexManifest>(&big, "familiar-index")
        .unwrap_err()
        .to_string();
    assert!(e.contains("big.json") && e.contains("more than"), "{e}");
}
