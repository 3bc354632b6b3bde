//! `familiar demo`: the README's first command. Builds the index of the embedded fixture corpus and
//! runs example queries, checking the counts against the planted ground truth.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use familiar::index::Index;
use familiar::table::{Column, Format, Table};
use familiar_index_builder::build::{build_with_progress, BuildOptions};
use familiar_index_builder::fixtures::GroundTruth;
use familiar_query::concepts::count::{CountOptions, Counter, Method};
use familiar_query::concepts::lexicon::{read_pairs, Lexicon};
use familiar_query::concepts::tables;
use familiar_query::ngram::{self, Cnf, CnfOptions};

/// The fixture corpus and tokenizer, compiled into the binary (regenerate with `familiar fixtures`).
const EMBEDDED: &[(&str, &[u8])] = &[
    (
        "corpus/part-0000.jsonl.zst",
        include_bytes!("../../../../fixtures/corpus/part-0000.jsonl.zst"),
    ),
    (
        "corpus/part-0001.jsonl.gz",
        include_bytes!("../../../../fixtures/corpus/part-0001.jsonl.gz"),
    ),
    (
        "corpus/planted.json",
        include_bytes!("../../../../fixtures/corpus/planted.json"),
    ),
    (
        "concepts/planted.csv",
        include_bytes!("../../../../fixtures/concepts/planted.csv"),
    ),
    (
        "concepts/pairs.csv",
        include_bytes!("../../../../fixtures/concepts/pairs.csv"),
    ),
    (
        "tokenizer.json",
        include_bytes!("../../../../fixtures/tokenizer.json"),
    ),
    (
        "attribution/queries.jsonl",
        include_bytes!("../../../../fixtures/attribution/queries.jsonl"),
    ),
    (
        "priming/samples.jsonl",
        include_bytes!("../../../../fixtures/priming/samples.jsonl"),
    ),
    (
        "priming/themes.jsonl",
        include_bytes!("../../../../fixtures/priming/themes.jsonl"),
    ),
    (
        "model/config.json",
        include_bytes!("../../../../fixtures/models/fixture-gpt2/config.json"),
    ),
    (
        "model/model.safetensors",
        include_bytes!("../../../../fixtures/models/fixture-gpt2/model.safetensors"),
    ),
    (
        "model/tokenizer.json",
        include_bytes!("../../../../fixtures/models/fixture-gpt2/tokenizer.json"),
    ),
];

/// Runs a `familiar` command line (the same code as the binary), failing on a non-zero exit.
fn familiar(args: &[&std::ffi::OsStr]) -> Result<()> {
    use clap::Parser;
    let argv = std::iter::once(std::ffi::OsStr::new("familiar")).chain(args.iter().copied());
    let cli = super::Cli::try_parse_from(argv).context("the demo's own command line")?;
    match super::run(cli)? {
        0 => Ok(()),
        code => anyhow::bail!("`familiar {:?}` exited with {code}", args),
    }
}

/// Influence correlation by query kind (Ruis et al. 2024): the README's example.
const RUIS_SQL: &str = "WITH pairs AS (
  SELECT a.query_id AS qa, b.query_id AS qb,
         corr(a.score, b.score) AS pearson, spearman(a.score, b.score) AS spearman
  FROM influence a JOIN influence b ON a.doc_id = b.doc_id AND a.query_id < b.query_id
  GROUP BY 1, 2)
SELECT x.kind,
       CASE WHEN x.task = y.task THEN 'same task' ELSE 'other task' END AS pairs_of,
       count(*) AS pairs, round(avg(pearson), 3) AS pearson, round(avg(spearman), 3) AS spearman
FROM pairs JOIN queries x ON qa = x.query_id JOIN queries y ON qb = y.query_id
WHERE x.kind = y.kind
GROUP BY 1, 2 ORDER BY 1, 2";

/// Activation density at a concept's last token against its log frequency, per layer.
const DENSITY_SQL: &str = "SELECT a.layer, count(*) AS probes,
       round(corr(a.top10_energy_last, log10(c.occurrences)), 3) AS r_top10_energy,
       round(corr(a.hoyer_last, log10(c.occurrences)), 3) AS r_hoyer
FROM activation_stats a
JOIN concept_frequency c ON c.concept = json_str(a.labels, 'concept')
WHERE c.method = 'sa_exact' AND c.level = 'concept' AND c.occurrences > 0
GROUP BY 1 ORDER BY 1";

/// Log-probability of a concept against its log frequency, fitted in SQL.
const FIT_SQL: &str = "SELECT count(*) AS concepts,
       round(regr_slope(z.logprob / z.n_tokens, log10(c.occurrences)), 3) AS slope_per_decade,
       round(corr(z.logprob / z.n_tokens, log10(c.occurrences)), 3) AS pearson,
       round(spearman(z.logprob / z.n_tokens, c.occurrences), 3) AS spearman
FROM (SELECT unnest(concepts) AS concept, logprob, n_tokens FROM zero_shot) z
JOIN concept_frequency c ON c.concept = z.concept
WHERE c.method = 'sa_exact' AND c.level = 'concept' AND c.occurrences > 0";

/// Priming against the keyword's probability before learning (Sun et al. 2025).
const PRIMING_SQL: &str = "SELECT CASE WHEN p_before < 1e-3 THEN 'p_before < 1e-3' ELSE 'p_before >= 1e-3' END AS keyword,
       count(*) AS samples, round(avg(log10(s_prime)), 2) AS mean_log10_s_prime,
       round(avg(log10(s_mem)), 2) AS mean_log10_s_mem
FROM priming GROUP BY 1 ORDER BY 1";

/// The neutral context the concepts are recalled after.
const CONTEXT: &str = "An rohi an ve tian";

/// Arguments of `familiar demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directory (the corpus, the index and the results go here).
    #[arg(long, default_value = "familiar-demo")]
    out: PathBuf,
    /// Train the tiny model on the fixture index (a progress bar on stderr; resumable) instead of
    /// loading the checked-in one, with the checked-in model's options.
    #[arg(long)]
    train: bool,
    /// Optimizer steps with --train (the checked-in model had 2,000).
    #[arg(long, default_value_t = 2000, requires = "train")]
    train_steps: u64,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn write_fixtures(out: &Path) -> Result<()> {
    for (name, bytes) in EMBEDDED {
        let path = out.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        if std::fs::read(&path).ok().as_deref() != Some(*bytes) {
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

pub fn run(a: Args) -> Result<i32> {
    let out = &a.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let _lock = familiar::lock::DirLock::acquire(out, "demo")?;
    write_fixtures(out)?;
    let truth: GroundTruth =
        serde_json::from_slice(&std::fs::read(out.join("corpus/planted.json"))?)?;
    let index_dir = out.join("index");
    println!(
        "== 1. build the index of the fixture corpus ({} documents in {} files)",
        truth.documents,
        truth.files.len()
    );
    let mut options = BuildOptions::new(
        out.join("tokenizer.json"),
        &index_dir,
        truth
            .files
            .iter()
            .map(|f| out.join("corpus").join(f).display().to_string())
            .collect(),
    );
    // Several shards even for a small corpus, so the demo exercises the cross-shard paths.
    options.shard_tokens = Some(200_000);
    let r = build_with_progress(&options, &crate::progress::build_bar(!a.quiet)?)?;
    let index = Index::open(&index_dir)?;
    println!(
        "   {}: {} documents, {} tokens, {} shards ({:.2}s{})",
        index_dir.display(),
        index.documents(),
        index.manifest().tokens,
        index.shards().len(),
        r.total_time.as_secs_f64(),
        if r.already_complete {
            ", already built"
        } else {
            ""
        }
    );

    println!("\n== 2. exact counts of the planted concepts and n-grams (count = suffix-array range; documents = CNF)");
    let tok = index.tokenizer()?;
    let mut rows: Vec<(String, u64, u64, u64, u64)> = Vec::new();
    let mut all_exact = true;
    for p in &truth.planted {
        let ids = tok.encode(&format!(" {}", p.text))?;
        let count = ngram::count(&index, &ids)?;
        let docs = ngram::cnf(
            &index,
            &Cnf {
                clauses: vec![vec![ids]],
            },
            &CnfOptions::default(),
        )?
        .documents;
        all_exact &= count == p.occurrences && docs == p.documents;
        rows.push((
            format!(" {}", p.text),
            p.occurrences,
            count,
            p.documents,
            docs,
        ));
    }
    Table::new()
        .column(
            "phrase",
            Column::Str(rows.iter().map(|r| Some(r.0.clone())).collect()),
        )
        .column(
            "planted",
            Column::U64(rows.iter().map(|r| Some(r.1)).collect()),
        )
        .column(
            "count",
            Column::U64(rows.iter().map(|r| Some(r.2)).collect()),
        )
        .column(
            "planted_docs",
            Column::U64(rows.iter().map(|r| Some(r.3)).collect()),
        )
        .column(
            "documents",
            Column::U64(rows.iter().map(|r| Some(r.4)).collect()),
        )
        .write(Format::Table, None)?;
    println!(
        "   {}",
        if all_exact {
            "every count equals the planted ground truth"
        } else {
            "MISMATCH against the planted ground truth"
        }
    );

    let unigrams = ngram::next_tokens(&index, &[])?;
    let top = unigrams.next.first().map(|p| p.0).context("empty index")?;
    let top_str = tok.decode(&[top])?;
    println!("\n== 3. next-token distribution after {top_str:?}, the most frequent token");
    let d = ngram::next_tokens(&index, &[top])?;
    for (id, n) in d.next.iter().take(5) {
        let shown = format!("{:?}", tok.decode(&[*id])?);
        println!(
            "   {shown:>12}  {n:>6}  p = {:.4}",
            *n as f64 / d.prefix_count as f64
        );
    }

    let (a_text, b_text) = (
        &truth.planted[truth.planted.len() - 5].text,
        &truth.planted[truth.planted.len() - 6].text,
    );
    println!("\n== 4. documents containing \" {a_text}\" AND \" {b_text}\"");
    let q = Cnf {
        clauses: vec![
            vec![tok.encode(&format!(" {a_text}"))?],
            vec![tok.encode(&format!(" {b_text}"))?],
        ],
    };
    let c = ngram::cnf(&index, &q, &CnfOptions::default())?;
    println!(
        "   {} documents, {} occurrences in them; first: {:?}",
        c.documents, c.occurrences, c.doc_ids
    );

    let ids = tok.encode(&format!(" {a_text}"))?;
    println!(
        "\n== 5. where \" {a_text}\" occurs (first 3 of {})",
        ngram::count(&index, &ids)?
    );
    let page = ngram::locate(&index, &ids, 0, 3)?;
    for h in &page.hits {
        let (l, m, r) = familiar_query::docs::window(
            &index,
            h.doc_id,
            h.offset_in_doc,
            ids.len() as u64,
            6,
            6,
        )?;
        println!(
            "   doc {:>5} @ {:>4}: …{l}[{m}]{r}…",
            h.doc_id, h.offset_in_doc
        );
    }

    println!(
        "\n== 6. concept frequencies: the planted concepts as a lexicon (lowercase names, first word as alias)"
    );
    let lexicon = Lexicon::read(&out.join("concepts/planted.csv"))?;
    let pairs = read_pairs(&out.join("concepts/pairs.csv"), &lexicon)?;
    let counts =
        Counter::new(&index, &Method::ALL)?.run(&lexicon, &pairs, &CountOptions::default())?;
    let tables_dir = out.join("tables");
    tables::write_all(&tables_dir, &lexicon, &counts)?;
    let level = |id: u64, m: Method| {
        counts
            .frequencies
            .iter()
            .find(|r| r.concept_id == id && r.method == m && r.level == "concept")
            .cloned()
    };
    let (mut names, mut planted_occ, mut sa_occ, mut sa_docs, mut phrase, mut words) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (c, p) in lexicon.concepts.iter().zip(&truth.planted).take(8) {
        let sa = level(c.id, Method::SaExact).context("sa_exact row")?;
        all_exact &= sa.occurrences == Some(p.occurrences) && sa.documents == p.documents;
        names.push(Some(c.name.clone()));
        planted_occ.push(Some(p.occurrences));
        sa_occ.push(sa.occurrences);
        sa_docs.push(Some(sa.documents));
        phrase.push(level(c.id, Method::TextPhrase).map(|r| r.documents));
        words.push(level(c.id, Method::TextAllWords).map(|r| r.documents));
    }
    Table::new()
        .column("concept", Column::Str(names))
        .column("planted", Column::U64(planted_occ))
        .column("sa_exact", Column::U64(sa_occ))
        .column("sa_docs", Column::U64(sa_docs))
        .column("phrase_docs", Column::U64(phrase))
        .column("all_words_docs", Column::U64(words))
        .write(Format::Table, None)?;
    let both = counts
        .cooccurrences
        .iter()
        .find(|r| r.method == Method::TextPhrase && r.documents_both > 0);
    if let Some(r) = both {
        println!(
            "   co-occurrence: {:?} and {:?} share {} documents ({} and {} alone)",
            lexicon.concepts[r.concept_a as usize].name,
            lexicon.concepts[r.concept_b as usize].name,
            r.documents_both,
            r.documents_a,
            r.documents_b
        );
    }
    println!(
        "   {} rows of concept_frequency, {} of cooccurrence in {}",
        counts.frequencies.len(),
        counts.cooccurrences.len(),
        tables_dir.display()
    );

    let model = if a.train {
        let dir = out.join("model-trained");
        println!(
            "\n== 7. frequency vs behaviour: a tiny model trained now on this corpus ({} steps)",
            a.train_steps
        );
        let options = familiar_models::train::TrainOptions {
            steps: a.train_steps,
            ..Default::default()
        };
        let bar = crate::progress::training_bar(!a.quiet)?;
        let r = familiar_models::train::train_until(
            &index,
            &dir,
            &options,
            None,
            &|p| crate::progress::show_step(&bar, p),
            &candle_core::Device::Cpu,
        )
        .with_context(|| format!("training into {}", dir.display()))?;
        bar.finish_and_clear();
        println!(
            "   {} parameters, {} steps: loss {:.4} → {:.4} ({})",
            r.parameters,
            r.steps,
            r.first_loss,
            r.last_loss,
            dir.display()
        );
        dir
    } else {
        println!(
            "\n== 7. frequency vs behaviour: the tiny model trained on this corpus (fixtures/models/fixture-gpt2)"
        );
        out.join("model")
    };
    // Results that are locked to a model (the gradient store, the priming run) are made again
    // when the demo directory last used another one (`--train` after a plain run, or back).
    let hash = familiar_models::grads::store::model_hash(&model)?;
    let marker = out.join("model.hash");
    if std::fs::read_to_string(&marker).is_ok_and(|h| h != hash) {
        for stale in ["store", "tables/attribution", "tables/priming"] {
            let dir = out.join(stale);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
        }
    }
    familiar::manifest::write_atomic(&marker, hash.as_bytes())?;
    let lm = familiar_models::measure::score::LanguageModel::load(&model)?;
    let (mut names, mut counts, mut per_token) = (Vec::new(), Vec::new(), Vec::new());
    let mut items = Vec::new();
    let concepts_of = lexicon.concepts.iter().zip(&truth.planted);
    for (c, p) in concepts_of.filter(|(_, p)| p.kind == "concept") {
        // log P(concept | a neutral filler context), per token.
        let s = lm.score(CONTEXT, &format!(" {}", p.text))?;
        names.push(Some(p.text.clone()));
        counts.push(Some(p.occurrences));
        per_token.push(Some(s.logprob / s.n_tokens as f64));
        items.push(familiar::items::Item {
            id: format!("recall-{}", c.id),
            task: "concept recall".into(),
            prompt: CONTEXT.into(),
            ask: familiar::items::Ask::Completion(format!(" {}", p.text)),
            concepts: vec![c.name.clone()],
        });
    }
    Table::new()
        .column("concept", Column::Str(names))
        .column("occurrences", Column::U64(counts))
        .column("logprob_per_token", Column::F64(per_token))
        .write(Format::Table, None)?;
    let model_name = model.display().to_string();
    let (rows, _) = familiar_models::measure::score::zero_shot(
        &lm,
        &items,
        &model_name,
        "the demo's concept-recall items",
        &|| {},
    )?;
    let zero_shot = tables_dir.join("zero_shot.parquet");
    familiar::table::from_rows(&rows)?.write(Format::Parquet, Some(&zero_shot))?;
    println!(
        "   {} items scored into {}",
        items.len(),
        zero_shot.display()
    );
    // Activation density at each concept, as probes labelled with the concept.
    let probes = out.join("probes/concepts.jsonl");
    std::fs::create_dir_all(out.join("probes"))?;
    let lines: Vec<String> = items
        .iter()
        .map(|i| {
            let text = match &i.ask {
                familiar::items::Ask::Completion(c) => format!("{}{c}", i.prompt),
                familiar::items::Ask::Choice { .. } => i.prompt.clone(),
            };
            serde_json::json!({"id": i.id, "text": text, "labels": {"concept": i.concepts[0]}})
                .to_string()
        })
        .collect();
    std::fs::write(&probes, lines.join("\n") + "\n")
        .with_context(|| format!("writing {}", probes.display()))?;
    let density = tables_dir.join("activation_stats.parquet");
    familiar(&[
        "density".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--probes".as_ref(),
        probes.as_os_str(),
        "--out".as_ref(),
        density.as_os_str(),
        "-q".as_ref(),
    ])?;

    println!("\n== 8. SQL over the tables: the log-linear fit of concept recall on frequency");
    let mut sql = familiar_sql::Sql::new()?;
    sql.register_dir(&tables_dir)?;
    for r in sql.run(FIT_SQL)? {
        print!("{}", familiar_sql::output::render_table(&r.batches)?);
    }
    println!("   activation density at the concept against its frequency, per layer:");
    for r in sql.run(DENSITY_SQL)? {
        print!("{}", familiar_sql::output::render_table(&r.batches)?);
    }
    let reports = out.join("reports");
    let freq = reports.join("frequency");
    familiar(&[
        "report".as_ref(),
        "frequency".as_ref(),
        "--tables".as_ref(),
        tables_dir.as_os_str(),
        "--out".as_ref(),
        freq.as_os_str(),
        "--metric".as_ref(),
        "logprob_per_token".as_ref(),
    ])?;

    familiar(&[
        "report".as_ref(),
        "density".as_ref(),
        "--tables".as_ref(),
        tables_dir.as_os_str(),
        "--out".as_ref(),
        reports.join("density").as_os_str(),
    ])?;

    println!(
        "\n== 9. attribution: which documents drive the model's answers (gradient store, ekfac)"
    );
    let store = out.join("store");
    let attribution = tables_dir.join("attribution");
    let queries = out.join("attribution/queries.jsonl");
    let quiet: &[&std::ffi::OsStr] = if a.quiet { &["-q".as_ref()] } else { &[] };
    let mut store_args: Vec<&std::ffi::OsStr> = vec![
        "attribute".as_ref(),
        "store".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--index".as_ref(),
        index_dir.as_os_str(),
        "--out".as_ref(),
        store.as_os_str(),
        "--rank".as_ref(),
        "8".as_ref(),
    ];
    store_args.extend_from_slice(quiet);
    familiar(&store_args)?;
    familiar(&[
        "attribute".as_ref(),
        "score".as_ref(),
        "--store".as_ref(),
        store.as_os_str(),
        "--model".as_ref(),
        model.as_os_str(),
        "--queries".as_ref(),
        queries.as_os_str(),
        "--all".as_ref(),
        "--precondition".as_ref(),
        "ekfac".as_ref(),
        "--out".as_ref(),
        attribution.as_os_str(),
    ])?;
    let mut sql = familiar_sql::Sql::new()?;
    sql.register_dir(&attribution)?;
    println!("   influence correlation by query kind (Ruis et al. 2024):");
    for r in sql.run(RUIS_SQL)? {
        print!("{}", familiar_sql::output::render_table(&r.batches)?);
    }
    familiar(&[
        "attribute".as_ref(),
        "report".as_ref(),
        attribution.as_os_str(),
        "--index".as_ref(),
        index_dir.as_os_str(),
        "--out".as_ref(),
        reports.join("attribution").as_os_str(),
    ])?;

    println!(
        "\n== 10. priming (Sun et al. 2025): copies of the model learn new statements; does the keyword spill into its theme?"
    );
    let priming = tables_dir.join("priming");
    let (samples, themes) = (
        out.join("priming/samples.jsonl"),
        out.join("priming/themes.jsonl"),
    );
    let mut prime_args: Vec<&std::ffi::OsStr> = vec![
        "prime".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--samples".as_ref(),
        samples.as_os_str(),
        "--themes".as_ref(),
        themes.as_os_str(),
        "--out".as_ref(),
        priming.as_os_str(),
        "--replay".as_ref(),
        index_dir.as_os_str(),
        "--steps".as_ref(),
        "10".as_ref(),
        "--batch".as_ref(),
        "4".as_ref(),
        "--lr".as_ref(),
        "1e-3".as_ref(),
        "--replay-window".as_ref(),
        "64".as_ref(),
    ];
    prime_args.extend_from_slice(quiet);
    familiar(&prime_args)?;
    let mut sql = familiar_sql::Sql::new()?;
    sql.register_dir(&priming)?;
    for r in sql.run(PRIMING_SQL)? {
        print!("{}", familiar_sql::output::render_table(&r.batches)?);
    }
    familiar(&[
        "report".as_ref(),
        "priming".as_ref(),
        "--tables".as_ref(),
        priming.as_os_str(),
        "--out".as_ref(),
        reports.join("priming").as_os_str(),
    ])?;

    println!("\n== 11. verify");
    let v = familiar_query::verify::verify(
        &index_dir,
        familiar_query::verify::VerifyOptions {
            full: true,
            samples: 0,
        },
    );
    if v.problems.is_empty() {
        println!(
            "   ok: checksums match, {} suffix pairs in order, the suffix arrays are permutations",
            v.pairs_checked
        );
    } else {
        for p in &v.problems {
            println!("   problem: {p}");
        }
    }
    let reports_of = ["frequency", "density", "attribution", "priming"]
        .map(|r| reports.join(r).join("report.html").display().to_string());
    println!(
        "\nindex:   {}\nmodel:   {}\nstore:   {}\ntables:  {} (concepts, concept_frequency, cooccurrence, \
         zero_shot, activation_stats; attribution/: influence, queries; priming/: priming, \
         priming_probe)\nreports: {}\ntry:     familiar count {} \" {a_text}\"\n         \
         familiar concepts lookup {} {:?} --fuzzy 1\n         familiar sql --tables {}",
        index_dir.display(),
        model.display(),
        store.display(),
        tables_dir.display(),
        reports_of.join("\n         "),
        index_dir.display(),
        index_dir.display(),
        a_text.split(' ').next().unwrap_or_default().to_lowercase(),
        tables_dir.display()
    );
    Ok(if all_exact && v.problems.is_empty() {
        0
    } else {
        1
    })
}
