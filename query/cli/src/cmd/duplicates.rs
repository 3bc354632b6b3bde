//! `familiar duplicates`: exact duplicate substrings (Lee et al. 2022's ExactSubstr), and a
//! deduplicated copy of the corpus.

use std::path::PathBuf;

use anyhow::{Context, Result};
use familiar::table::Format;
use familiar_query::duplicates::{
    check_copy_target, duplicates, remove_duplicates, DuplicateOptions,
};

use super::OutputArgs;

/// Arguments of `familiar duplicates`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The index directory.
    index: PathBuf,
    /// The shortest duplicated substring, in tokens: a token is duplicated when it lies in a
    /// substring of at least this many tokens that occurs twice or more (Lee et al. use 50).
    #[arg(long, default_value_t = 50)]
    min_len: usize,
    /// Document ids listed per cluster (`documents` counts them all).
    #[arg(long, default_value_t = 10)]
    docs_per_cluster: usize,
    /// Write the clusters (the duplicate_clusters table) to this Parquet file.
    #[arg(long)]
    clusters: Option<PathBuf>,
    /// Write a copy of the corpus without the duplicated spans into this new directory (one
    /// .jsonl.zst per input of the build, and dedup.json, what was removed). The build's inputs
    /// are read again, from the current directory when their paths are relative.
    #[arg(long)]
    remove: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(a: Args) -> Result<i32> {
    if a.out.format == Format::Parquet && a.out.output.is_none() {
        anyhow::bail!("--format parquet needs --output FILE");
    }
    // Before the long part: a copy that could not be written is refused now.
    if let Some(dir) = &a.remove {
        check_copy_target(dir)?;
    }
    let index = super::open_index(&a.index, None)?;
    let positions: u64 = index.shards().iter().map(|s| s.manifest.tokens).sum();
    let bar = crate::progress::progress_bar(!a.quiet, positions, "suffixes")?;
    let options = DuplicateOptions {
        min_len: a.min_len,
        docs_per_cluster: a.docs_per_cluster,
    };
    let found = duplicates(&index, &options, &|n| bar.inc(n))
        .with_context(|| format!("finding the duplicates of {}", a.index.display()))?;
    bar.finish_and_clear();
    let s = found.summary;
    eprintln!(
        "{} of {} documents hold duplicated tokens: {} of {} tokens ({:.2}%) in {} segments, {} \
         clusters (substrings of at least {} tokens that occur twice or more)",
        s.duplicated_documents,
        s.documents,
        s.duplicated_tokens,
        s.tokens,
        100.0 * s.duplicated_tokens as f64 / s.tokens.max(1) as f64,
        s.segments,
        s.clusters,
        s.min_len
    );
    if let Some(path) = &a.clusters {
        familiar::table::from_rows(&found.clusters)?.write(Format::Parquet, Some(path))?;
    }
    if let Some(dir) = &a.remove {
        let bytes: u64 = familiar::manifest::read::<familiar::manifest::BuildPlan>(
            &index.dir().join(familiar::manifest::BUILD_PLAN_FILE),
            familiar::manifest::BuildPlan::FORMAT,
        )?
        .inputs
        .iter()
        .map(|i| i.bytes)
        .sum();
        let bar = crate::progress::progress_bar(!a.quiet, bytes, "input bytes")?;
        let removed = remove_duplicates(&index, &found, dir, &|n| bar.inc(n))
            .with_context(|| format!("writing the deduplicated copy into {}", dir.display()))?;
        bar.finish_and_clear();
        eprintln!(
            "wrote {} ({} files): {} tokens and {} bytes cut from {} documents ({} left empty)",
            dir.display(),
            removed.files.len(),
            removed.removed_tokens,
            removed.removed_bytes,
            removed.changed_documents,
            removed.emptied_documents
        );
    }
    let table = familiar::table::from_rows(&found.documents)?;
    super::write_table(&table, a.out.format, a.out.output.as_deref())?;
    Ok(0)
}
