//! `familiar attribute store`, `score`, `report` and `eval`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use familiar::table::Format;
use familiar_models::attribute::{attribute, read_queries, Precondition, TokenOptions};
use familiar_models::grads::build::{build_store, StoreOptions, StoreProgress};
use familiar_models::grads::store::{GradientStore, StoreDtype};
use familiar_models::measure::score::LanguageModel;

/// `attribute store --rank` by default: of the ranks measured (8, 16, 32, 64), 32 ranked the
/// stating document of a planted fact first most often, on the fixture world and on generated
/// worlds unlike it (benches/README.md, "Attribution defaults", and
/// query/tests/unseen_world.rs); 64 found no more.
const DEFAULT_RANK: usize = 32;
/// `--damping` of `ekfac`, `fisher` and `trackstar` by default (`attribute score` and `attribute
/// eval`): best or within one fact of the best of 0.01, 0.1 and 1 on every world measured.
const DEFAULT_DAMPING: f64 = 0.1;

/// Gradient-similarity attribution.
#[derive(Debug, clap::Subcommand)]
pub enum AttributeCommand {
    /// Build (or finish) a gradient store: the projected gradient of every document of an index.
    Store(StoreArgs),
    /// Rank the store's documents for each query; writes influence.parquet and queries.parquet.
    Score(ScoreArgs),
    /// Report how the top documents of reasoning and factual queries differ (Markdown, HTML, SVG,
    /// summary.json) from the tables of `attribute score`.
    Report(ReportArgs),
    /// Linear datamodeling score of each preconditioner: retrain the model on random subsets of
    /// the documents and correlate the measured query log-probabilities with the summed scores.
    /// Resumable: rerun the same command to continue.
    Eval(EvalArgs),
}

/// Arguments of `familiar attribute eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The gradient store (of the model trained on every document).
    #[arg(long)]
    store: PathBuf,
    /// The model the store was built with; trained by `familiar train` (its trainer_state.json
    /// gives the options every subset model is trained with).
    #[arg(long)]
    model: PathBuf,
    /// The index the store and the model were built from.
    #[arg(long)]
    index: PathBuf,
    /// Queries, JSONL (as for `attribute score`).
    #[arg(long)]
    queries: PathBuf,
    /// Run directory (new, or a run to continue).
    #[arg(long)]
    out: PathBuf,
    /// Models retrained, each on its own random subset.
    #[arg(long, default_value_t = 32)]
    subsets: usize,
    /// Fraction of the documents in each subset.
    #[arg(long, default_value_t = 0.5)]
    fraction: f64,
    /// Seed of the subsets.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training steps of each subset model (default: the model's own).
    #[arg(long)]
    steps: Option<u64>,
    /// Train at most this many subsets now; run again to continue.
    #[arg(long)]
    stop_after: Option<usize>,
    /// ekfac, fisher and trackstar damping (as for `attribute score`, and the same default).
    #[arg(long, default_value_t = DEFAULT_DAMPING)]
    damping: f64,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Arguments of `familiar attribute report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The output directory of `familiar attribute score` (influence.parquet, queries.parquet);
    /// more than one: the report is on the first, with a section comparing them all (say,
    /// one run per preconditioner on the same queries).
    #[arg(required = true, num_args = 1..)]
    dirs: Vec<PathBuf>,
    /// The lds.json of an `attribute eval` run of the same store: its linear datamodeling scores
    /// in the report.
    #[arg(long)]
    lds: Option<PathBuf>,
    /// The index the gradient store was built from (answers and sources of documents).
    #[arg(long)]
    index: PathBuf,
    /// Report directory.
    #[arg(long)]
    out: PathBuf,
    /// Top documents per query examined for answers and sources.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Top documents per query shown with their text (around the answer, marked).
    #[arg(long, default_value_t = 3)]
    docs: usize,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Layers {
    /// Every linear layer of the blocks and the output head.
    All,
    /// Every linear layer of the blocks.
    Blocks,
    /// The MLPs' linear layers.
    Mlp,
    /// The attention's linear layers.
    Attention,
    /// The output head (the unembedding), whitened over the vocabulary.
    Output,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Dtype {
    F16,
    F32,
}

/// Arguments of `familiar attribute store`.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Hugging Face model directory (config.json, *.safetensors, and the index's tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// The index whose documents to store.
    #[arg(long)]
    index: PathBuf,
    /// The store directory (new, or a store to finish).
    #[arg(long)]
    out: PathBuf,
    /// Which linear layers.
    #[arg(long, value_enum, default_value = "all")]
    layers: Layers,
    /// Projection rank of each layer's input and output (a layer's row block is rank × rank).
    ///
    /// 32, the default, ranked the document that states a planted fact first most often of the
    /// ranks measured (8, 16, 32, 64; with fisher, then named kfac): the fixture world 31 of 32 facts (rank 16: 30,
    /// rank 8: 27), three generated English-like worlds 26, 32 and 34 of 60 (rank 16: 16, 30,
    /// 26; rank 8: 7, 24, 18), 420 documents of real text with the GPT-2 tokenizer 17 of 20;
    /// rank 64 found no more (benches/README.md).
    ///
    /// Cost, for a model with L projected layers (4 per block and the output head: 9 for
    /// `familiar train`'s 2 layers), with the default `--head-rank`: each document's row holds
    /// (L − 1) × rank² values and rank × head-rank for the head (f32: 3 KB at rank 8, 12 KB at
    /// 16, 49 KB at 32, 147 KB at 64; half with `--dtype f16`), and each index shard adds the
    /// second moments fisher and trackstar read, the square of each layer's block in f64 (0.8 MB,
    /// 13 MB, 201 MB, 1.2 GB; none for a block above 4,096 values, where fisher and trackstar are
    /// refused). Time: the model's forward and backward passes dominate up to rank 32 (1–2.5×
    /// the time of rank 8), the moments above it (rank 64: 6× rank 32); `attribute score` reads
    /// every row, so its scan grows with the row size.
    #[arg(long, default_value_t = DEFAULT_RANK)]
    rank: usize,
    /// Projection rank of the output head's vocabulary side (its hidden side keeps `--rank`).
    /// At most the vocabulary's size; the vocabulary itself keeps the whole gradient of the
    /// head's vocabulary side.
    ///
    /// Default: 4 × `--rank`, narrowed so that the head's block stays within 4,096 values (and
    /// so keeps second moments), never below `--rank`: 128 at the default rank 32. That raised
    /// the LDS on generated worlds from 0.35 to 0.51 and from 0.33 to 0.45 (ekfac), and with
    /// ekfac found 56, 55 and 53 of 60 planted facts' documents first on worlds whose models
    /// know them (56, 53 and 51 with the head at 32); `--head-rank 32` gives the former store.
    /// Wider heads predict retraining better still (`--layers output --rank 16 --head-rank 384`:
    /// LDS 0.633, above Kronfluence's EK-FAC) but keep no second moments.
    ///
    /// The head's block is then rank × head-rank values of each row. Blocks above 4,096 values
    /// keep no second moments (fisher and trackstar are refused on such a store; ekfac,
    /// identity and cosine score it).
    #[arg(long, value_name = "RANK")]
    head_rank: Option<usize>,
    /// Seed of the random projections.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Storage type of the rows.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
    /// Correct every gradient by the optimizer's second moment (Adam's exp_avg_sq, factored as
    /// Adafactor does) before projecting it, as TrackStar does (Chang et al. 2024); needs the
    /// optimizer state `familiar train` saves beside the model (optimizer.safetensors).
    ///
    /// Every preconditioner then scores the corrected gradients, and the output head is not
    /// whitened by its own factor (the optimizer's moment corrects it). Without it, trackstar
    /// corrects by the store's own second moment of each projected coordinate.
    #[arg(long)]
    optimizer_correction: bool,
    /// Compute device: cpu (the autograd-free backward pass, documents in parallel), cuda or
    /// cuda:N (candle's autograd on the GPU, one document at a time; needs a build with
    /// `--features cuda`). The same rows and factors to f32 rounding, so a store may be resumed
    /// on either.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Arguments of `familiar attribute score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// The gradient store.
    #[arg(long)]
    store: PathBuf,
    /// The model the store was built with.
    #[arg(long)]
    model: PathBuf,
    /// Queries, JSONL: {"id", "prompt", "completion", "kind": "factual"|"reasoning", "task",
    /// "answer"?, "intermediate"?: [...], "metadata"?: {...}}; other keys are kept as metadata
    /// (the `queries` table's `metadata` column), a likely misspelling of a known key refused.
    #[arg(long)]
    queries: PathBuf,
    /// Documents kept per query.
    #[arg(long, default_value_t = 100)]
    top_k: usize,
    /// Write every document's score instead of the top k.
    #[arg(long)]
    all: bool,
    /// Output directory (influence.parquet, queries.parquet; influence_tokens.parquet with
    /// --token-influence).
    #[arg(long)]
    out: PathBuf,
    /// Split the scores of each query's N best documents by token (influence_tokens.parquet):
    /// which tokens of a document carry its influence. Needs --index.
    ///
    /// Each document's gradient is recomputed (as `attribute store` did), about a store build's
    /// time per document; a document's token scores add up to its score.
    #[arg(long, value_name = "N", requires = "index")]
    token_influence: Option<usize>,
    /// With --token-influence, split the query's side too: which of the query's tokens (prompt
    /// and completion) carry its match with each of those documents.
    #[arg(long, requires = "token_influence")]
    query_tokens: bool,
    /// The index the store was built on (for --token-influence: the documents' tokens).
    #[arg(long)]
    index: Option<PathBuf>,
    /// How rows are compared with the query gradient.
    ///
    /// ekfac, the default (EK-FAC fitted with the store: each layer's eigenvalue-corrected
    /// Kronecker-factored Fisher, damped and inverted), ranked the document that states a planted
    /// fact first most often on every generated world whose model knows its facts: on the
    /// default store 56, 55 and 53 of 60 on three worlds trained 3,000 steps, against 40–48 for
    /// fisher and 41–47 for trackstar (on the former store, the head at rank 32: 56, 53 and 51,
    /// against 39–44 for identity and cosine). It had the best LDS of the five (on a generated
    /// world's default store 0.508, against 0.371 for fisher and 0.326 trackstar; on the former
    /// store 0.331, against 0.249 fisher, 0.246 cosine, 0.226 identity and 0.210 trackstar), and
    /// of them only it, identity and cosine score a wide `--head-rank` store; it finds all 32 of
    /// the fixture world's facts (fisher 31) (benches/README.md). Its cost: the store's ekfac.bin is read once
    /// (fitted when the store was built); the scan costs what identity's does.
    ///
    /// fisher (the damped inverse of each layer's empirical Fisher in projected space, one full
    /// block per layer; `kfac` is its former name, still accepted) factorizes each layer's
    /// rank² × rank² second moment once before the scan (about 2 s for 56 queries at rank 32,
    /// minutes at rank 64).
    #[arg(long, value_enum, default_value = "ekfac")]
    precondition: PreconditionArg,
    /// fisher, ekfac and trackstar: damping λ as a fraction of each layer's mean eigenvalue
    /// (ekfac: of its corrected eigenvalues, Kronfluence's heuristic damping).
    ///
    /// 0.1, the default, was the best or within one fact of the best of 0.01, 0.1 and 1 at rank
    /// 32 on every world measured (with ekfac on the three worlds trained 3,000 steps: 56, 53 and
    /// 51 of 60 at 0.01 and 0.1, 56, 51 and 51 at 1); the value costs nothing.
    #[arg(long, default_value_t = DEFAULT_DAMPING)]
    damping: f64,
    /// ekfac, fisher and trackstar: score each document under the curvature without its own
    /// term (exactly: fisher's and trackstar's second moments less the row's outer product, by
    /// Sherman–Morrison from its leverage; ekfac's corrected eigenvalues less the row's squares
    /// in the same eigenbasis). The tables name the run ekfac-loo, fisher-loo or trackstar-loo.
    ///
    /// A store of few documents has a curvature dominated by each document's own term, so the
    /// plain preconditioners whiten a document that states a fact no other states against
    /// itself and rank it low. With it, on worlds whose models know their facts (120 documents,
    /// 600 steps, seeds 7, 11 and 12), the stating document came first for 56, 56 and 53 of 60
    /// facts with fisher (without: 45, 54, 39), 56, 55 and 53 with trackstar (45, 53, 41) and
    /// 56, 58 and 54 with ekfac (56, 57, 54); on the fixture world fisher 32 of 32 (31),
    /// trackstar 31 (31), ekfac 32 (32). On two generated worlds it raised fisher's LDS from
    /// 0.351 and 0.266 to 0.439 and 0.408, trackstar's from 0.324 and 0.208 to 0.425 and 0.344
    /// (ekfac 0.507 and 0.443 → 0.508 and 0.441) (benches/README.md).
    /// Cost: fisher's and trackstar's rows' triangular solves (trackstar's norms need them
    /// anyway), a rotation of each row into ekfac's eigenbasis.
    #[arg(long)]
    leave_one_out: bool,
    /// trackstar: the queries' share α of the curvature, Chang et al.'s task-specific Hessian —
    /// each layer's R is α R_queries + (1 − α) R_store, R_queries the corrected second moment of
    /// the gradients of this run's queries, which whitens away the directions the queries share
    /// (a relation's template) — in [0, 1); 0: the store's alone. A query's scores then depend on
    /// the other queries of the file: give the task's queries together. The tables name the run
    /// trackstar-mix (trackstar-mix-loo).
    ///
    /// Not the default: on the worlds whose models know their facts it found fewer stating
    /// documents (120 documents, 600 steps, seeds 7 and 11: trackstar 45 and 53 of 60, with α
    /// 0.9 37 and 42, 0.99 42 and 44; with --leave-one-out 56 and 55, with α 0.9 50 and 51); on
    /// the 3,000-step worlds, whose models know few of theirs, it helped with --leave-one-out
    /// (seeds 7, 8 and 9: 49, 46 and 49, with α 0.9 56, 52 and 52); on the fixture world
    /// trackstar found 31 of 32, with α 0.9 23 (benches/README.md).
    #[arg(long, default_value_t = 0.0)]
    query_mix: f64,
    /// Where the store's rows are multiplied with the queries' vectors: cpu, cuda or cuda:N
    /// (CUDA needs a build with `--features cuda`). The query gradients, the preconditioners'
    /// fits, the rows' norms and --leave-one-out (refused with a GPU) stay on the CPU.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PreconditionArg {
    /// The dot product of the row and the query gradient.
    Identity,
    /// The cosine of the angle between them (LESS).
    Cosine,
    /// The dot product after the damped inverse of each layer's second moment of the rows (the
    /// empirical Fisher of the layer's block; `kfac` is its former name).
    #[value(alias = "kfac")]
    Fisher,
    /// The dot product after EK-FAC, fitted with the store: each layer's eigenvalue-corrected
    /// Kronecker-factored Fisher of the projected gradients (George et al. 2018), damped and
    /// inverted.
    Ekfac,
    /// TrackStar (Chang et al. 2024): both gradients corrected by the optimizer's second moment
    /// (a store built with --optimizer-correction) or else by the store's second moment of each
    /// projected coordinate, whitened by each layer's damped second moment and unit-normalised
    /// (a cosine under the inverse Fisher).
    Trackstar,
}

pub fn run(c: AttributeCommand) -> Result<i32> {
    familiar_models::measure::prepare_cpu();
    match c {
        AttributeCommand::Store(a) => store(a),
        AttributeCommand::Score(a) => score(a),
        AttributeCommand::Report(a) => report(a),
        AttributeCommand::Eval(a) => eval(a),
    }
}

/// [`familiar_models::attribute::open_store_and_model`], naming what was being opened.
fn open_store_and_model(
    store_dir: &std::path::Path,
    model: &std::path::Path,
) -> Result<(GradientStore, LanguageModel)> {
    familiar_models::attribute::open_store_and_model(store_dir, model).with_context(|| {
        format!(
            "opening the gradient store {} with the model {}",
            store_dir.display(),
            model.display()
        )
    })
}

fn eval(a: EvalArgs) -> Result<i32> {
    use familiar_models::attribute::eval::{evaluate, EvalOptions, Event};
    let index = super::open_index(&a.index, None)?;
    let (store, lm) = open_store_and_model(&a.store, &a.model)?;
    let queries = read_queries(&a.queries)?;
    let state = familiar_models::train::TrainerState::read(&a.model).with_context(|| {
        format!(
            "the subset models are trained with the options of {}'s own training by `familiar train`",
            a.model.display()
        )
    })?;
    let mut train = state.options;
    if let Some(s) = a.steps {
        train.steps = s;
        train.warmup = train.warmup.min(s / 10);
    }
    let options = EvalOptions {
        out: a.out.clone(),
        subsets: a.subsets,
        fraction: a.fraction,
        seed: a.seed,
        train,
        preconditioners: {
            let mut p = vec![Precondition::Identity, Precondition::Cosine];
            if familiar_models::grads::store::keeps_moments(&store.manifest.settings.projection) {
                for leave_one_out in [false, true] {
                    p.push(Precondition::Fisher {
                        damping: a.damping,
                        leave_one_out,
                    });
                    p.push(Precondition::Trackstar {
                        damping: a.damping,
                        leave_one_out,
                        query_mix: 0.0,
                    });
                }
            } else if !a.quiet {
                eprintln!(
                    "note: {} keeps no second moments (a layer's block is above {} values): \
                     fisher and trackstar are left out",
                    a.store.display(),
                    familiar_models::grads::store::MAX_DENSE_BLOCK
                );
            }
            if store.manifest.ekfac.is_some() {
                for leave_one_out in [false, true] {
                    p.push(Precondition::Ekfac {
                        damping: a.damping,
                        leave_one_out,
                    });
                }
            } else if !a.quiet {
                eprintln!(
                    "note: {} was built before EK-FAC was fitted with stores: ekfac is left out \
                     (build the store again to include it)",
                    a.store.display()
                );
            }
            p
        },
        stop_after: a.stop_after,
    };
    let bar = crate::progress::progress_bar(!a.quiet, a.subsets as u64, "subsets")?;
    let started = Instant::now();
    let r = evaluate(&index, &store, &lm, &queries, &options, &|e| match e {
        Event::Training { m, total } => {
            bar.set_message(format!("training subset {}/{total}", m + 1))
        }
        Event::Done { .. } => bar.inc(1),
    })
    .with_context(|| format!("evaluating into {}", a.out.display()))?;
    bar.finish_and_clear();
    println!(
        "{} of {} subsets measured ({:.1} s now); {}",
        r.done,
        r.subsets,
        started.elapsed().as_secs_f64(),
        a.out.join("lds.json").display()
    );
    if r.lds.is_empty() {
        println!("LDS needs at least 3 measured subsets; run the same command again to continue");
    }
    for l in &r.lds {
        println!(
            "LDS {:<13} mean {:.4}  factual {:.4}  reasoning {:.4}",
            l.precondition, l.mean, l.factual, l.reasoning
        );
    }
    Ok(0)
}

fn report(a: ReportArgs) -> Result<i32> {
    if a.top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let index = super::open_index(&a.index, None)?;
    use familiar_reports::attribution::{analyse, compare, read_lds, write, Run};
    let runs = a
        .dirs
        .iter()
        .map(|d| Run::read(d).with_context(|| format!("reading the run {}", d.display())))
        .collect::<Result<Vec<_>>>()?;
    let (dir, run) = (&a.dirs[0], &runs[0]);
    let mut r = analyse(run, dir, &index, a.top_k, a.docs)
        .with_context(|| format!("reporting on {}", dir.display()))?;
    if runs.len() > 1 {
        let name = |run: &Run| -> String {
            run.queries
                .first()
                .map_or("(no queries)".into(), |q| q.precondition.clone())
        };
        let labels: Vec<String> = runs
            .iter()
            .zip(&a.dirs)
            .map(|(run, d)| {
                let n = name(run);
                if runs.iter().filter(|o| name(o) == n).count() > 1 {
                    format!("{n} ({})", d.display())
                } else {
                    n
                }
            })
            .collect();
        let labelled: Vec<(String, &Run)> = labels.into_iter().zip(&runs).collect();
        r.comparison = compare(&labelled, a.top_k);
    }
    if let Some(path) = &a.lds {
        r.lds = read_lds(path)?;
    }
    let written = write(&r, run, &a.out)?;
    if !r.complete {
        eprintln!(
            "note: {} holds only the top documents of each query; run `familiar attribute score --all` for correlations, concentration and the power-law fit",
            dir.display()
        );
    }
    println!(
        "report on {} queries ({}) against {} documents:",
        r.queries.len(),
        r.precondition,
        r.documents
    );
    for p in written {
        println!("  {}", p.display());
    }
    Ok(0)
}

fn store(a: StoreArgs) -> Result<i32> {
    let started = Instant::now();
    let index = super::open_index(&a.index, None)?;
    let bar = crate::progress::progress_bar(!a.quiet, index.documents(), "documents")?;
    let options = StoreOptions {
        model: a.model.clone(),
        out: a.out.clone(),
        layers: match a.layers {
            Layers::All => familiar_models::model::LinearGroup::All,
            Layers::Blocks => familiar_models::model::LinearGroup::Blocks,
            Layers::Mlp => familiar_models::model::LinearGroup::Mlp,
            Layers::Attention => familiar_models::model::LinearGroup::Attention,
            Layers::Output => familiar_models::model::LinearGroup::Output,
        },
        rank: a.rank,
        head_rank: a.head_rank,
        seed: a.seed,
        dtype: match a.dtype {
            Dtype::F16 => StoreDtype::F16,
            Dtype::F32 => StoreDtype::F32,
        },
        optimizer_correction: a.optimizer_correction,
        device: StoreOptions::device_named(&a.device)?,
        cancel: None,
    };
    let factor_bar = crate::progress::progress_bar(!a.quiet, 0, "documents (output-head factor)")?;
    let ekfac_bar = crate::progress::progress_bar(!a.quiet, 0, "documents (EK-FAC eigenvalues)")?;
    let r = build_store(&index, &options, &|p| match p {
        StoreProgress::FactorStart(n) => factor_bar.set_length(n),
        StoreProgress::Factor(n) => factor_bar.inc(n),
        StoreProgress::Rows(n) => {
            if !factor_bar.is_finished() {
                factor_bar.finish_and_clear();
            }
            bar.inc(n)
        }
        StoreProgress::EkfacStart(n) => {
            bar.finish_and_clear();
            ekfac_bar.set_length(n)
        }
        StoreProgress::Ekfac(n) => ekfac_bar.inc(n),
    })
    .with_context(|| format!("building the gradient store {}", a.out.display()))?;
    bar.finish_and_clear();
    ekfac_bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "stored {} documents × {} values in {} ({} shard(s) computed, {} resumed{}{}{}) in {secs:.1} s",
        r.documents,
        r.dim,
        a.out.display(),
        r.computed_shards,
        r.resumed_shards,
        if a.optimizer_correction {
            "; gradients corrected by the optimizer's second moment"
        } else {
            ""
        },
        match r.factor {
            Some((t, secs)) => format!("; output-head factor fitted on {t} tokens in {secs:.1} s"),
            None => String::new(),
        },
        match r.ekfac {
            Some((d, secs)) => format!("; EK-FAC fitted over {d} documents in {secs:.1} s"),
            None => String::new(),
        }
    );
    Ok(0)
}

fn score(a: ScoreArgs) -> Result<i32> {
    if a.top_k == 0 && !a.all {
        bail!("--top-k must be at least 1");
    }
    let device = familiar_models::model::device(&a.device)?;
    let (store, lm) = open_store_and_model(&a.store, &a.model)?;
    let queries = read_queries(&a.queries)?;
    let precondition = match a.precondition {
        PreconditionArg::Identity => Precondition::Identity,
        PreconditionArg::Cosine => Precondition::Cosine,
        PreconditionArg::Fisher => Precondition::Fisher {
            damping: a.damping,
            leave_one_out: a.leave_one_out,
        },
        PreconditionArg::Ekfac => Precondition::Ekfac {
            damping: a.damping,
            leave_one_out: a.leave_one_out,
        },
        PreconditionArg::Trackstar => Precondition::Trackstar {
            damping: a.damping,
            leave_one_out: a.leave_one_out,
            query_mix: a.query_mix,
        },
    };
    if a.query_mix != 0.0 && !matches!(precondition, Precondition::Trackstar { .. }) {
        bail!(
            "--query-mix applies to trackstar (its task-specific curvature), not to {}",
            precondition.name()
        );
    }
    if a.leave_one_out && !precondition.leave_one_out() {
        bail!(
            "--leave-one-out applies to ekfac, fisher and trackstar (their curvature is a mean \
             over the store's rows), not to {}",
            precondition.name()
        );
    }
    let top = if a.all { None } else { Some(a.top_k) };
    if a.token_influence == Some(0) {
        bail!("--token-influence must be at least 1");
    }
    let index = match &a.index {
        Some(dir) => Some(super::open_index(dir, None)?),
        None => None,
    };
    let tokens = match (a.token_influence, &index) {
        (Some(documents), Some(index)) => Some(TokenOptions {
            index,
            documents,
            query_side: a.query_tokens,
        }),
        _ => None,
    };
    let run = attribute(
        &store,
        &lm,
        &queries,
        precondition,
        top,
        tokens,
        &a.model.display().to_string(),
        &a.store.display().to_string(),
        &device,
    )?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    familiar::table::from_rows(&run.influence)?
        .write(Format::Parquet, Some(&a.out.join("influence.parquet")))?;
    familiar::table::from_rows(&run.queries)?
        .write(Format::Parquet, Some(&a.out.join("queries.parquet")))?;
    if tokens.is_some() {
        familiar::table::from_rows(&run.tokens)?.write(
            Format::Parquet,
            Some(&a.out.join("influence_tokens.parquet")),
        )?;
        println!(
            "wrote {} token scores to {}",
            run.tokens.len(),
            a.out.join("influence_tokens.parquet").display()
        );
    }
    println!(
        "scored {} queries against {} documents ({}{}{}) in {:.3} s; wrote {} rows to {}",
        queries.len(),
        store.rows(),
        precondition.name(),
        run.correction
            .as_ref()
            .map_or(String::new(), |c| format!(", {c}")),
        if a.query_mix > 0.0 {
            format!(
                ", the curvature {} the queries' second moment and {} the store's",
                a.query_mix,
                1.0 - a.query_mix
            )
        } else {
            String::new()
        },
        run.scoring_seconds,
        run.influence.len(),
        a.out.join("influence.parquet").display()
    );
    Ok(0)
}
