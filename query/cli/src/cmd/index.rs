//! `familiar index build | info | verify`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use familiar::corpus::Fields;
use familiar_index_builder::build::{build_with_progress, shard_dir_name, BuildOptions};

/// `familiar index` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum IndexCommand {
    /// Tokenize corpus files and build the suffix-array index (resumes an interrupted build).
    Build(BuildArgs),
    /// Describe an index.
    Info(InfoArgs),
    /// Check checksums, structure and suffix order; exit 1 if anything is wrong.
    Verify(VerifyArgs),
}

/// Arguments of `familiar index build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Hugging Face tokenizer.json.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Index directory to create (or to resume).
    #[arg(long)]
    out: PathBuf,
    /// Discard the build already in --out (finished or interrupted) and start over. Refused when
    /// --out holds anything that is not part of a familiar build.
    #[arg(long)]
    restart: bool,
    /// Testing aid: stop, as if interrupted, once this run has published N shards (running the
    /// same command again resumes).
    #[arg(long, value_name = "N", hide = true)]
    stop_after_shards: Option<usize>,
    /// Corpus files, directories or glob patterns: .jsonl/.json/.ndjson (optionally .zst or .gz),
    /// .parquet, .txt. Inside directories, familiar's own output (indexes, builds, gradient
    /// stores, --out itself) is skipped and reported.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Field (JSONL) or column (Parquet) holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Field holding the document id.
    #[arg(long, default_value = "id")]
    id_field: String,
    /// Field holding the source name.
    #[arg(long, default_value = "source")]
    source_field: String,
    /// Field holding a metadata object.
    #[arg(long, default_value = "metadata")]
    metadata_field: String,
    /// Token positions per shard (default: half the machine's memory at 6 (u16) or 8 (u32) bytes
    /// per token, at most 2^31 - 1). A longer document gets a shard of its own, larger than this:
    /// warned about and counted.
    #[arg(long)]
    shard_tokens: Option<u64>,
    /// Skip malformed records (counted and reported) instead of failing.
    #[arg(long)]
    skip_invalid: bool,
    /// Accept input files without documents (counted and reported) instead of failing.
    #[arg(long)]
    allow_empty: bool,
    /// Worker threads (default: all cores; at most 4096).
    #[arg(long, value_parser = super::parse_threads)]
    threads: Option<usize>,
    /// Build only the token and suffix-array files (n-gram queries), not the per-shard tantivy
    /// text index that concept counts need.
    #[arg(long)]
    no_text_index: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Arguments of `familiar index info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// The index directory.
    index: PathBuf,
    /// Print the index manifest as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `familiar index verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The index directory.
    index: PathBuf,
    /// Check every adjacent suffix pair and that the suffix array is a permutation.
    #[arg(long)]
    full: bool,
    /// Adjacent suffix pairs sampled per shard otherwise.
    #[arg(long, default_value_t = 100_000)]
    samples: u64,
}

pub fn run(c: IndexCommand) -> Result<i32> {
    match c {
        IndexCommand::Build(a) => run_build(a),
        IndexCommand::Info(a) => run_info(a),
        IndexCommand::Verify(a) => run_verify(a),
    }
}

fn run_build(a: BuildArgs) -> Result<i32> {
    let options = BuildOptions {
        fields: Fields {
            text: a.text_field,
            id: a.id_field,
            source: a.source_field,
            metadata: a.metadata_field,
        },
        shard_tokens: a.shard_tokens,
        skip_invalid: a.skip_invalid,
        allow_empty: a.allow_empty,
        threads: a.threads,
        text_index: !a.no_text_index,
        restart: a.restart,
        stop_after_shards: a.stop_after_shards,
        ..BuildOptions::new(a.tokenizer, a.out.clone(), a.inputs)
    };
    let r = build_with_progress(&options, &crate::progress::build_bar(!a.quiet)?)
        .with_context(|| format!("building {}", a.out.display()))?;
    let mut lines = Vec::new();
    match r.discarded_shards {
        Some(n) => lines.push(format!(
            "--restart: discarded the previous build in {} ({n} shard(s))",
            a.out.display()
        )),
        None if a.restart => lines.push(format!(
            "--restart: {} held no previous build",
            a.out.display()
        )),
        None => {}
    }
    if let Some(what) = &r.replaced_plan {
        lines.push(format!(
            "note: {} held the plan of an earlier attempt that published no shard, with {what}; \
             started over with this run's",
            a.out.display()
        ));
    }
    if !r.resized_inputs.is_empty() {
        lines.push(format!(
            "note: {} input(s) changed size since the build started, past what it had read \
             (checked unchanged): {}",
            r.resized_inputs.len(),
            first(r.resized_inputs.iter().map(|p| p.display()), 3)
        ));
    }
    if r.stopped {
        lines.push(format!(
            "stopped after {} shard(s) as asked (--stop-after-shards); {} is not complete: run \
             the same command again to resume",
            r.shards_built,
            a.out.display()
        ));
    } else if r.already_complete {
        lines.push(format!(
            "{} is already complete: {} shards verified, nothing to do",
            a.out.display(),
            r.shards_reused
        ));
    } else {
        lines.push(format!(
            "built {}: {} documents, {} tokens in {} shard(s) ({} built now, {} kept from an interrupted run)",
            a.out.display(),
            r.documents,
            r.tokens,
            r.shards_built + r.shards_reused,
            r.shards_built,
            r.shards_reused
        ));
        let secs = r.total_time.as_secs_f64();
        lines.push(format!(
            "time {:.2}s: tokenize and index text {:.2}s, suffix arrays {:.2}s, text index merges {:.2}s, write {:.2}s; {:.2} M tokens/s end to end",
            secs,
            r.tokenize_time.as_secs_f64(),
            r.suffix_array_time.as_secs_f64(),
            r.text_index_time.as_secs_f64(),
            r.write_time.as_secs_f64(),
            r.tokens_tokenized as f64 / secs.max(1e-9) / 1e6
        ));
    }
    if r.skipped_records > 0 {
        lines.push(format!(
            "skipped {} malformed records (--skip-invalid)",
            r.skipped_records
        ));
    }
    if !r.empty_inputs.is_empty() {
        lines.push(format!(
            "{} input files held no documents (--allow-empty)",
            r.empty_inputs.len()
        ));
    }
    if !r.ignored_files.is_empty() {
        lines.push(format!(
            "ignored {} file(s) with unrecognized names in input directories: {}",
            r.ignored_files.len(),
            first(r.ignored_files.iter().map(|p| p.display()), 5)
        ));
    }
    if !r.skipped_outputs.is_empty() {
        let files: u64 = r.skipped_outputs.iter().map(|d| d.files).sum();
        lines.push(format!(
            "skipped {files} file(s) in {} director{} of familiar's own output inside the inputs \
             (not corpus; name files explicitly to read them): {}",
            r.skipped_outputs.len(),
            if r.skipped_outputs.len() == 1 {
                "y"
            } else {
                "ies"
            },
            first(r.skipped_outputs.iter(), 5)
        ));
    }
    if r.oversized_documents > 0 {
        // The longest, unless it is among those listed below.
        let largest = match &r.largest_oversized {
            Some(d) if !r.oversized_examples.contains(d) => format!("; the longest: {d}"),
            _ => String::new(),
        };
        lines.push(format!(
            "{} document(s) longer than the shard size of {} tokens, each in a shard of its own \
             (larger than the shard size, which bounds a build's memory){largest}",
            r.oversized_documents, r.shard_tokens
        ));
        for d in &r.oversized_examples {
            lines.push(format!("  {d} ({})", shard_dir_name(d.shard)));
        }
        if r.oversized_documents > r.oversized_examples.len() as u64 {
            lines.push(format!(
                "  … and {} more",
                r.oversized_documents - r.oversized_examples.len() as u64
            ));
        }
    }
    for l in lines {
        eprintln!("{l}");
    }
    Ok(0)
}

fn run_info(a: InfoArgs) -> Result<i32> {
    let index = familiar::index::Index::open(&a.index)?;
    let m = index.manifest();
    if a.json {
        println!("{}", serde_json::to_string_pretty(m)?);
        return Ok(0);
    }
    let mut disk = 0u64;
    for s in index.shards() {
        disk += s.manifest.files.values().map(|f| f.bytes).sum::<u64>();
    }
    println!("index       {}", a.index.display());
    println!("format      version {}", m.format_version);
    println!(
        "tokenizer   {} ({} ids, {})",
        m.tokenizer.hash,
        m.tokenizer.vocab_size,
        match m.token_width {
            familiar::token::TokenWidth::U16 => "u16 tokens",
            familiar::token::TokenWidth::U32 => "u32 tokens",
        }
    );
    println!("documents   {}", m.documents);
    println!("tokens      {} (with one separator per document)", m.tokens);
    println!(
        "on disk     {} bytes, {:.2} bytes per token",
        disk,
        disk as f64 / m.tokens.max(1) as f64
    );
    let text: Vec<_> = index
        .shards()
        .iter()
        .filter_map(|s| s.manifest.text_index.as_ref())
        .collect();
    match text.first() {
        Some(t) if text.len() == index.shards().len() => {
            let bytes: u64 = index
                .shards()
                .iter()
                .flat_map(|s| s.manifest.files.iter())
                .filter(|(name, _)| {
                    name.starts_with("text/") || name.as_str() == familiar_text::WORDS_FILE
                })
                .map(|(_, f)| f.bytes)
                .sum();
            println!(
                "text index  every shard, {bytes} bytes, analysis {}",
                t.analyzer
            );
        }
        Some(_) => println!(
            "text index  {} of {} shards",
            text.len(),
            index.shards().len()
        ),
        None => println!("text index  none (built with --no-text-index)"),
    }
    println!("shards      {}", m.shards.len());
    for s in index.shards() {
        println!(
            "  {}  documents {}..{}  tokens {}  suffix-array entries of {} bits{}",
            s.dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            s.manifest.first_doc,
            s.manifest.first_doc + s.manifest.documents,
            s.manifest.tokens,
            s.manifest.suffix_array_bits,
            s.manifest
                .text_index
                .as_ref()
                .map_or(String::new(), |t| format!("  {} distinct words", t.words))
        );
    }
    Ok(0)
}

fn run_verify(a: VerifyArgs) -> Result<i32> {
    let r = familiar_query::verify::verify(
        &a.index,
        familiar_query::verify::VerifyOptions {
            full: a.full,
            samples: a.samples,
        },
    );
    if r.problems.is_empty() {
        println!(
            "ok: {} shard(s); checksums match; {} suffix pairs in order{}",
            r.shards,
            r.pairs_checked,
            if a.full {
                " (all of them; the suffix array is a permutation)"
            } else {
                " (sampled; --full checks all)"
            }
        );
        Ok(0)
    } else {
        for p in &r.problems {
            println!("problem: {p}");
        }
        println!(
            "{} problem{} found",
            r.problems.len(),
            if r.problems.len() == 1 { "" } else { "s" }
        );
        Ok(1)
    }
}

/// The first `n` items, comma-separated, with ", …" when there are more.
fn first<T: std::fmt::Display>(items: impl ExactSizeIterator<Item = T>, n: usize) -> String {
    let more = items.len() > n;
    let shown: Vec<String> = items.take(n).map(|x| x.to_string()).collect();
    format!("{}{}", shown.join(", "), if more { ", …" } else { "" })
}
