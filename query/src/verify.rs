//! `verify`: checksums, headers, document table, token range and suffix order of an index.

use std::cmp::Ordering;
use std::path::Path;

use familiar::index::{Index, ShardView};
use familiar::token::Token;
use familiar::{with_view, Result};

/// How thoroughly to check the suffix order.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// Check every adjacent pair of suffixes and that the array is a permutation (O(n) memory bits
    /// and time proportional to the total common-prefix length); otherwise sample `samples` pairs.
    pub full: bool,
    /// Adjacent pairs sampled per shard when not `full`.
    pub samples: u64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            full: false,
            samples: 100_000,
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Shards checked.
    pub shards: usize,
    /// Suffix pairs compared.
    pub pairs_checked: u64,
    /// Problems, each naming the file and what is wrong. Empty means the index is sound.
    pub problems: Vec<String>,
}

/// Verifies the index in `dir`. Errors that stop the check (an unreadable manifest) are returned
/// as problems too, so the caller always gets a report.
pub fn verify(dir: &Path, options: VerifyOptions) -> VerifyReport {
    let mut report = VerifyReport::default();
    // 1. Files against the shard manifests (sizes and checksums).
    let manifest_path = dir.join(familiar::manifest::MANIFEST_FILE);
    let manifest: familiar::manifest::IndexManifest =
        match familiar::manifest::read(&manifest_path, familiar::manifest::IndexManifest::FORMAT) {
            Ok(m) => m,
            Err(e) => {
                report.problems.push(e.to_string());
                return report;
            }
        };
    for entry in &manifest.shards {
        let sdir = dir.join(&entry.dir);
        // The shard manifest first: if it was edited, blame it rather than the files it describes.
        let mpath = sdir.join(familiar::manifest::MANIFEST_FILE);
        // Regular files of bounded size only: a FIFO or `/dev/zero` in its place is a problem
        // reported, not a hang.
        match familiar::manifest::read_regular(&mpath, familiar::manifest::MAX_MANIFEST_BYTES) {
            Ok(bytes) if familiar::checksum::of_bytes(&bytes) != entry.manifest_checksum => {
                report.problems.push(format!(
                    "{}: does not match the checksum recorded for it in the index manifest",
                    mpath.display()
                ));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                report.problems.push(e.to_string());
                continue;
            }
        }
        if let Err(e) = familiar::manifest::verify_shard_files(&sdir) {
            report.problems.push(e.to_string());
        }
    }
    let tok_path = dir.join(&manifest.tokenizer.file);
    match familiar::manifest::checksum_regular(&tok_path, None) {
        Ok((h, _)) if h != manifest.tokenizer.hash => report.problems.push(format!(
            "{}: hash {h} differs from {} in the manifest",
            tok_path.display(),
            manifest.tokenizer.hash
        )),
        Ok(_) => {}
        Err(e) => report.problems.push(e.to_string()),
    }
    if !report.problems.is_empty() {
        return report;
    }
    // 2. Structure: headers, sizes, offsets, separators (what opening checks).
    let index = match Index::open(dir) {
        Ok(i) => i,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    for shard in index.shards() {
        report.shards += 1;
        let result = with_view!(shard, |v| check_shard(
            &v,
            shard.manifest.separator,
            options,
            &mut report
        ));
        if let Err(e) = result {
            report.problems.push(e.to_string());
        }
        if let Err(e) = check_documents(shard) {
            report.problems.push(e);
        }
        if shard.manifest.text_index.is_some() {
            let checked = familiar_text::TextIndex::open(&shard.dir, &shard.manifest)
                .and_then(|t| t.check(shard.manifest.first_doc));
            if let Err(e) = checked {
                report.problems.push(e.to_string());
            }
        }
    }
    report
}

fn check_shard<T: Token>(
    v: &ShardView<'_, T>,
    separator: u32,
    options: VerifyOptions,
    report: &mut VerifyReport,
) -> Result<()> {
    let sa_path = v.dir.join(familiar::manifest::SUFFIX_ARRAY_FILE);
    let tok_path = v.dir.join(familiar::manifest::TOKENS_FILE);
    if let Some((i, t)) = v
        .tokens
        .iter()
        .enumerate()
        .find(|(_, t)| t.to_u32() > separator)
    {
        report.problems.push(format!(
            "{}: token {} at position {i} is outside the vocabulary",
            tok_path.display(),
            t.to_u32()
        ));
    }
    let n = v.len();
    if n < 2 {
        return Ok(());
    }
    let pairs: Box<dyn Iterator<Item = u64>> = if options.full || options.samples >= n - 1 {
        Box::new(0..n - 1)
    } else {
        // Evenly spread pairs, plus the ends.
        let k = options.samples.max(2);
        Box::new((0..k).map(move |j| j * (n - 2) / (k - 1)))
    };
    let mut seen = if options.full {
        vec![0u64; (n as usize).div_ceil(64)]
    } else {
        Vec::new()
    };
    let mut bad = 0u64;
    for i in pairs {
        let a = v.suffix(i)?;
        let b = v.suffix(i + 1)?;
        report.pairs_checked += 1;
        if v.tokens[a..].cmp(&v.tokens[b..]) != Ordering::Less {
            bad += 1;
            if bad <= 5 {
                report.problems.push(format!(
                    "{}: suffixes at entries {i} and {} are out of order",
                    sa_path.display(),
                    i + 1
                ));
            }
        }
        if options.full {
            let mut mark = |p: usize| {
                let (w, bit) = (p / 64, p % 64);
                if seen[w] >> bit & 1 == 1 {
                    report
                        .problems
                        .push(format!("{}: position {p} appears twice", sa_path.display()));
                }
                seen[w] |= 1 << bit;
            };
            if i == 0 {
                mark(a);
            }
            mark(b);
        }
    }
    if bad > 5 {
        report.problems.push(format!(
            "{}: {bad} adjacent pairs out of order in all",
            sa_path.display()
        ));
    }
    Ok(())
}

fn check_documents(shard: &familiar::index::Shard) -> std::result::Result<(), String> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::UInt64Type;
    let path = shard.dir.join(familiar::manifest::DOCUMENTS_FILE);
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = std::fs::File::open(&path).map_err(|e| err(&e))?;
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| err(&e))?;
    let mask = parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), ["doc_id"]);
    let reader = builder.with_projection(mask).build().map_err(|e| err(&e))?;
    let mut expected = shard.manifest.first_doc;
    for batch in reader {
        let batch = batch.map_err(|e| err(&e))?;
        let ids = batch
            .column(0)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| err(&"doc_id is not uint64"))?;
        for id in ids.iter() {
            if id != Some(expected) {
                return Err(err(&format!(
                    "row for document {expected} has doc_id {id:?}"
                )));
            }
            expected += 1;
        }
    }
    let rows = expected - shard.manifest.first_doc;
    if rows != shard.manifest.documents {
        return Err(err(&format!(
            "{rows} rows, but the shard has {} documents",
            shard.manifest.documents
        )));
    }
    Ok(())
}
