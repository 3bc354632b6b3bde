//! `familiar sql` end to end: tables found under a directory, output formats, several statements,
//! familiar's functions against hand-computed values, and errors that name what is wrong.

#![allow(clippy::unwrap_used)]

mod util;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use util::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// A Parquet file of `columns`, with a table-level `doc` as familiar's own tables have.
fn write_batch(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let doc = [("doc".to_string(), format!("test table {}", path.display()))];
    let schema = Arc::new(batch.schema().as_ref().clone().with_metadata(doc.into()));
    let batch = batch.with_schema(schema).unwrap();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn strs(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

fn f64s(v: &[f64]) -> ArrayRef {
    Arc::new(Float64Array::from(v.to_vec()))
}

fn opt_f64s(v: &[Option<f64>]) -> ArrayRef {
    Arc::new(Float64Array::from(v.to_vec()))
}

fn u64s(v: &[u64]) -> ArrayRef {
    Arc::new(UInt64Array::from(v.to_vec()))
}

/// A tables directory: `scores` (task, x, y with a tie and a NULL), `counts` (concept, count) and
/// two runs' `hits` tables (same file name in two directories) and a partitioned `parts/` table.
fn tables(t: &TestDir) -> PathBuf {
    let dir = t.mkdir("tables");
    write_batch(
        &dir.join("scores.parquet"),
        vec![
            ("task", strs(&["a", "a", "a", "a", "b", "b", "b", "b", "b"])),
            ("x", f64s(&[1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 2.0, 3.0, 9.0])),
            (
                "y",
                opt_f64s(&[
                    Some(10.0),
                    Some(30.0),
                    Some(20.0),
                    Some(40.0),
                    Some(1.0),
                    Some(2.0),
                    Some(3.0),
                    Some(4.0),
                    None,
                ]),
            ),
        ],
    );
    write_batch(
        &dir.join("counts.parquet"),
        vec![
            ("concept", strs(&["c1", "c10", "c100", "c1000", "c5"])),
            ("count", u64s(&[1, 10, 100, 1000, 5])),
        ],
    );
    write_batch(
        &dir.join("run1/hits.parquet"),
        vec![("n", Arc::new(Int64Array::from(vec![1i64, 2])) as ArrayRef)],
    );
    write_batch(
        &dir.join("run2/hits.parquet"),
        vec![("n", Arc::new(Int64Array::from(vec![3i64])) as ArrayRef)],
    );
    for (i, v) in [[1.0, 2.0], [3.0, 4.0]].iter().enumerate() {
        write_batch(
            &dir.join(format!("parts/part-{i}.parquet")),
            vec![("v", f64s(v))],
        );
    }
    dir
}

fn sql(dir: &Path, format: &str, query: &str) -> Out {
    familiar([
        "sql".as_ref(),
        "--tables".as_ref(),
        dir.as_os_str(),
        "--format".as_ref(),
        format.as_ref(),
        query.as_ref(),
    ])
}

/// Table-driven: each query's CSV output, exactly.
#[test]
fn queries_give_their_expected_rows() {
    let t = TestDir::new();
    let dir = tables(&t);
    let cases: &[(&str, &str)] = &[
        ("SELECT count(*) AS n FROM scores", "n\n9\n"),
        // Names: file stems; the same stem twice gets its directory; part files their directory.
        (
            "SELECT (SELECT sum(n) FROM run1_hits) AS one, (SELECT sum(n) FROM run2_hits) AS two, \
             (SELECT sum(v) FROM parts) AS parts",
            "one,two,parts\n3,3,10.0\n",
        ),
        // Spearman, by task: a: x ranks 1 2 3 4, y ranks 1 3 2 4 → 0.8; b: the NULL row is left
        // out, x = 1 2 2 3 (ties: 1 2.5 2.5 4) against 1 2 3 4 → 4.5/√22.5 = 0.9486832980505138.
        (
            "SELECT task, round(spearman(x, y), 12) AS rho FROM scores GROUP BY task ORDER BY task",
            "task,rho\na,0.8\nb,0.948683298051\n",
        ),
        // Integer arguments are coerced.
        (
            "SELECT spearman(count, count * count) AS rho FROM counts",
            "rho\n1.0\n",
        ),
        // Fewer than two pairs, or a constant side: NULL.
        (
            "SELECT spearman(x, y) AS rho FROM scores WHERE x > 5",
            "rho\n\"\"\n",
        ),
        // log_bin over [1, 1000] in 3 bins: edges 10 and 100 open the next bin.
        (
            "SELECT concept, log_bin(count, 1, 1000, 3) AS bin FROM counts ORDER BY count",
            "concept,bin\nc1,0\nc5,0\nc10,1\nc100,2\nc1000,2\n",
        ),
        // Bounds from the data, bin centers (geometric).
        (
            "SELECT log_bin(count, (SELECT min(count) FROM counts), (SELECT max(count) FROM counts), 3) \
             AS bin, count(*) AS n, round(log_bin_center(log_bin(count, 1, 1000, 3), 1, 1000, 3), 6) \
             AS center FROM counts GROUP BY 1, 3 ORDER BY 1",
            "bin,n,center\n0,2,3.162278\n1,1,31.622777\n2,2,316.227766\n",
        ),
        // Outside the range: NULL.
        (
            "SELECT log_bin(5000, 1, 1000, 3) AS b, log_bin(0, 1, 1000, 3) AS z",
            "b,z\n,\n",
        ),
        // The log-linear fit with built-in aggregates: y = 2 + 3·log10(count) exactly.
        (
            "SELECT round(regr_slope(2 + 3 * log10(count), log10(count)), 9) AS per_decade, \
             round(regr_intercept(2 + 3 * log10(count), log10(count)), 9) AS intercept FROM counts",
            "per_decade,intercept\n3.0,2.0\n",
        ),
    ];
    for (query, want) in cases {
        let out = sql(&dir, "csv", query);
        out.success();
        assert_eq!(&out.stdout, want, "{query}");
    }
}

#[test]
fn formats_files_and_several_statements() {
    let t = TestDir::new();
    let dir = tables(&t);
    let q = "SELECT task, count(*) AS n FROM scores GROUP BY task ORDER BY task";
    let table = sql(&dir, "table", q);
    table
        .success()
        .stdout_has(&["| task | n |", "| a    | 4 |", "| b    | 5 |"]);
    let json = sql(&dir, "json", q);
    json.success();
    assert_eq!(
        json.json(),
        serde_json::json!([{"task": "a", "n": 4}, {"task": "b", "n": 5}])
    );
    // Parquet to a file, read back as a table.
    let out = t.join("out/result.parquet");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    familiar([
        "sql".as_ref(),
        "--tables".as_ref(),
        dir.as_os_str(),
        "--format".as_ref(),
        "parquet".as_ref(),
        "--output".as_ref(),
        out.as_os_str(),
        q.as_ref(),
    ])
    .success();
    let back = sql(
        &t.join("out"),
        "csv",
        "SELECT task, n FROM result ORDER BY task",
    );
    back.success();
    assert_eq!(back.stdout, "task,n\na,4\nb,5\n");
    // Parquet needs a file.
    sql(&dir, "parquet", q).failure().stderr_has(&["--output"]);
    // A file of statements: a view, then two queries, each printed.
    let file = t.write(
        "q.sql",
        "CREATE VIEW big AS SELECT * FROM counts WHERE count >= 100;\n\
         SELECT count(*) AS n FROM big;\n\
         -- a comment\n\
         SELECT max(count) AS m FROM big;\n",
    );
    let out = familiar([
        "sql".as_ref(),
        "--tables".as_ref(),
        dir.as_os_str(),
        "--format".as_ref(),
        "csv".as_ref(),
        "--file".as_ref(),
        file.as_os_str(),
    ]);
    out.success();
    assert_eq!(out.stdout, "n\n2\n\nm\n1000\n");
    // Statements on standard input.
    let out = familiar_with_stdin(
        [
            "sql".as_ref(),
            "--tables".as_ref(),
            dir.as_os_str(),
            "--format".as_ref(),
            "csv".as_ref(),
        ],
        "SELECT 1 AS one; SELECT 2 AS two;",
    );
    out.success();
    assert_eq!(out.stdout, "one\n1\n\ntwo\n2\n");
    // An empty file is an error naming it.
    let empty = t.write("empty.sql", "  \n");
    familiar(["sql".as_ref(), "--file".as_ref(), empty.as_os_str()])
        .failure()
        .stderr_has(&["no SQL statements", "empty.sql"]);
}

#[test]
fn index_documents_attach_as_a_table() {
    let t = TestDir::new();
    let dir = tables(&t);
    let golden = fixtures().join("golden-v1");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden.join("manifest.json")).unwrap()).unwrap();
    let docs = manifest["documents"].as_u64().unwrap();
    let index = golden.to_str().unwrap().to_string();
    let out = familiar([
        "sql",
        "--index",
        &index,
        "--format",
        "csv",
        "SELECT count(*) AS n, count(DISTINCT doc_id) AS d FROM documents",
    ]);
    out.success();
    assert_eq!(out.stdout, format!("n,d\n{docs},{docs}\n"));
    // Named, beside a tables directory.
    let named = format!("corpus={index}");
    let out = familiar([
        "sql",
        "--tables",
        dir.to_str().unwrap(),
        "--index",
        &named,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM corpus",
    ]);
    out.success();
    assert_eq!(out.stdout, format!("n\n{docs}\n"));
    // Joined with a table of other (or no) schema metadata: DataFusion 55 refused joins of
    // inputs whose table-level metadata differ.
    let out = familiar([
        "sql",
        "--tables",
        dir.to_str().unwrap(),
        "--index",
        &named,
        "--format",
        "csv",
        "SELECT c.\"count\" AS n, d.docs FROM counts c, (SELECT count(*) AS docs FROM corpus) d \
         ORDER BY n",
    ]);
    out.success();
    let rows: String = [1, 5, 10, 100, 1000]
        .iter()
        .map(|n| format!("{n},{docs}\n"))
        .collect();
    assert_eq!(out.stdout, format!("n,docs\n{rows}"));
    // Not an index.
    familiar(["sql", "--index", dir.to_str().unwrap(), "SELECT 1"])
        .failure()
        .stderr_has(&["not an index"]);
}

#[test]
fn errors_name_the_problem_and_the_tables() {
    let t = TestDir::new();
    let dir = tables(&t);
    // Malformed SQL, an unknown table, a type mismatch: DataFusion's message, the registered
    // tables, exit code 1 (no panic).
    for (query, needle) in [
        ("SELEC 1", "SELEC"),
        ("SELECT * FROM nowhere", "nowhere"),
        ("SELECT x + task FROM scores", "Cannot coerce"),
        ("SELECT log_bin(count, 10, 1, 3) FROM counts", "lo <= hi"),
        ("SELECT spearman(task, x) FROM scores", "spearman"),
    ] {
        let out = sql(&dir, "table", query);
        out.failure().stderr_has(&[
            needle,
            "registered tables: counts, parts, run1_hits, run2_hits, scores",
        ]);
        assert_eq!(out.code(), Some(1), "{query}");
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    // A file named like one of familiar's tables must have its columns.
    let bad = t.mkdir("bad");
    write_batch(
        &bad.join("zero_shot.parquet"),
        vec![("model", strs(&["m"]))],
    );
    sql(&bad, "table", "SELECT 1").failure().stderr_has(&[
        "zero_shot.parquet",
        "zero_shot",
        "no column",
    ]);
    // Not a Parquet file; not a directory.
    let junk = t.mkdir("junk");
    std::fs::write(junk.join("t.parquet"), b"not parquet").unwrap();
    sql(&junk, "table", "SELECT 1")
        .failure()
        .stderr_has(&["t.parquet", "not a readable Parquet file"]);
    let file = t.write("f.txt", "x");
    sql(&file, "table", "SELECT 1")
        .failure()
        .stderr_has(&["f.txt", "not a directory"]);
    // Ballista without the feature says how to build with it.
    if !cfg!(feature = "ballista") {
        familiar(["sql", "--ballista", "standalone", "SELECT 1"])
            .failure()
            .stderr_has(&["--features ballista"]);
    }
}

/// The index of the whole fixture corpus (no text index), in `t`.
fn fixture_index(t: &TestDir) -> PathBuf {
    let corpus = fixtures().join("corpus");
    let idx = t.join("idx");
    familiar([
        "index".as_ref(),
        "build".as_ref(),
        "--tokenizer".as_ref(),
        fixtures().join("tokenizer.json").as_os_str(),
        "--out".as_ref(),
        idx.as_os_str(),
        "--no-text-index".as_ref(),
        "-q".as_ref(),
        corpus.join("part-0000.jsonl.zst").as_os_str(),
        corpus.join("part-0001.jsonl.gz").as_os_str(),
    ])
    .success();
    idx
}

/// The fixture lexicon's planted concepts counted in `idx` (suffix array only) into `out`.
fn count_concepts(idx: &Path, out: &Path) {
    familiar([
        "concepts".as_ref(),
        "count".as_ref(),
        idx.as_os_str(),
        fixtures().join("concepts/planted.csv").as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--method".as_ref(),
        "sa_exact".as_ref(),
    ])
    .success();
}

/// `familiar demo --out OUT --quiet` with `extra` arguments.
fn run_demo(out: &Path, extra: &[&str]) -> Out {
    let mut args = vec!["demo", "--out", out.to_str().unwrap(), "--quiet"];
    args.extend_from_slice(extra);
    familiar(args)
}

/// Splits a shell command line into words: double quotes group (no escapes inside), spaces
/// separate.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            _ => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

/// The commands of the code blocks of README.md's `### SQL` section: `(command line, output
/// lines)`, continuation lines (indented by four spaces) joined to their command.
fn readme_sql_commands() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let start = readme
        .find("\n### SQL\n")
        .expect("README has a ### SQL section");
    let rest = &readme[start + 1..];
    let end = rest[4..].find("\n#").map_or(rest.len(), |e| e + 4);
    let section = &rest[..end];
    let mut commands: Vec<(String, String)> = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            commands.push((cmd.to_string(), String::new()));
        } else if let Some((cmd, out)) = commands.last_mut() {
            if out.is_empty() && line.starts_with("    ") {
                cmd.push(' ');
                cmd.push_str(line.trim());
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    commands
}

/// Every `familiar sql` example of the README, run on the tables `familiar demo` writes (the
/// fixture world's index, concept counts, zero-shot and density tables, and the fixture model's
/// attribution), prints exactly what the README shows.
#[test]
fn readme_sql_examples_print_what_the_readme_shows() {
    let t = TestDir::new();
    let demo = t.join("familiar-demo");
    run_demo(&demo, &[]).success();
    let (idx, tables) = (demo.join("index"), demo.join("tables"));
    let attribution = tables.join("attribution");
    let priming = tables.join("priming");
    let paths: std::collections::HashMap<&str, &Path> = [
        ("idx", idx.as_path()),
        ("familiar-demo/tables", tables.as_path()),
        ("attribution", attribution.as_path()),
        ("familiar-demo/tables/priming", priming.as_path()),
    ]
    .into();
    let mut files: std::collections::HashMap<String, PathBuf> = Default::default();
    let mut ran = 0;
    for (cmd, want) in readme_sql_commands() {
        let words = shell_words(&cmd);
        match words.first().map(String::as_str) {
            Some("cat") => {
                files.insert(words[1].clone(), t.write(&words[1], &want));
            }
            Some("familiar") => {
                let args: Vec<std::ffi::OsString> = words[1..]
                    .iter()
                    .map(|w| {
                        if let Some(p) = paths.get(w.as_str()) {
                            p.as_os_str().to_owned()
                        } else if let Some(p) = files.get(w) {
                            p.as_os_str().to_owned()
                        } else {
                            w.into()
                        }
                    })
                    .collect();
                let out = familiar(&args);
                out.success();
                assert_eq!(out.stdout, want, "README: $ {cmd}");
                ran += 1;
            }
            other => panic!("README's SQL section runs {other:?}: teach this test about it"),
        }
    }
    assert!(ran >= 3, "only {ran} examples found");
    // The demo's density report: per layer, Pearson's r over concepts equals SQL's corr().
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(demo.join("reports/density/summary.json")).unwrap())
            .unwrap();
    let q = sql(
        &tables,
        "csv",
        "SELECT a.layer, corr(a.top10_energy_last, log10(c.occurrences)) AS r \
         FROM activation_stats a JOIN concept_frequency c \
         ON c.concept = json_str(a.labels, 'concept') \
         WHERE c.method = 'sa_exact' AND c.level = 'concept' AND c.occurrences > 0 \
         GROUP BY 1 ORDER BY 1",
    );
    q.success();
    let models = summary["models"].as_array().unwrap();
    let rows: Vec<&str> = q.stdout.lines().skip(1).collect();
    assert_eq!(models.len(), rows.len(), "{}", q.stdout);
    for (m, row) in models.iter().zip(rows) {
        let (layer, r) = row.split_once(',').unwrap();
        assert!(m["model"]
            .as_str()
            .unwrap()
            .ends_with(&format!(", layer {layer}")));
        let want: f64 = r.parse().unwrap();
        let got = m["pearson"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "layer {layer}: {got} vs {want}");
    }
}

#[test]
fn imported_zero_shot_results_join_in_sql() {
    let t = TestDir::new();
    let tables = t.mkdir("tables");
    // Generic CSV: an extra column (reported), lists separated by |, empty values NULL.
    let csv = t.write(
        "scores.csv",
        "item_id,task,acc,logprob,concepts,question\n\
         q1,capitals,1,-1.5,paris|france,what?\n\
         q2,capitals,0,,rome,why?\n\
         q3,rivers,true,-0.25,,how?\n",
    );
    let out = tables.join("zero_shot.parquet");
    familiar([
        "import".as_ref(),
        "zero-shot".as_ref(),
        csv.as_os_str(),
        "--model".as_ref(),
        "m1".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ])
    .success()
    .stdout_has(&["imported 3 results (2 tasks, accuracy 0.6667)"])
    .stderr_has(&["ignored columns not in the zero_shot table: question"]);
    let q = sql(
        &tables,
        "csv",
        "SELECT item_id, task, kind, model, acc, logprob, prompt_tokens IS NULL AS no_tokens, \
         array_length(concepts) AS n_concepts FROM zero_shot ORDER BY item_id",
    );
    q.success();
    assert_eq!(
        q.stdout,
        "item_id,task,kind,model,acc,logprob,no_tokens,n_concepts\n\
         q1,capitals,completion,m1,true,-1.5,true,2\n\
         q2,capitals,completion,m1,false,,true,1\n\
         q3,rivers,completion,m1,true,-0.25,true,0\n"
    );
    // Accuracy by concept, joined with concept counts (the shape of the frequency analyses).
    write_batch(
        &tables.join("counts.parquet"),
        vec![
            ("concept", strs(&["paris", "france", "rome"])),
            ("count", u64s(&[1000, 5000, 10])),
        ],
    );
    let q = sql(
        &tables,
        "csv",
        "SELECT c.concept, c.count, avg(CAST(z.acc AS DOUBLE)) AS accuracy \
         FROM (SELECT unnest(concepts) AS concept, acc FROM zero_shot) z \
         JOIN counts c ON c.concept = z.concept GROUP BY 1, 2 ORDER BY 2",
    );
    q.success();
    assert_eq!(
        q.stdout,
        "concept,count,accuracy\nrome,10,0.0\nparis,1000,1.0\nfrance,5000,1.0\n"
    );

    // lm-evaluation-harness per-sample logs: multiple choice (pairs, integer target, acc and
    // acc_norm), a log-likelihood task, a generation task; the task from the file name.
    let lm = t.write(
        "samples_arc_easy_2024-05-13T10-42-54.123456.jsonl",
        "{\"doc_id\": 0, \"doc\": {\"meta\": {\"entity\": [\"paris\"]}}, \"target\": 1, \
          \"filtered_resps\": [[\"-3.5\", \"False\"], [\"-1.25\", \"True\"], [\"-2.0\", \"False\"]], \
          \"acc\": 1.0, \"acc_norm\": 0.0}\n\
         {\"doc_id\": 1, \"doc\": {\"meta\": {\"entity\": \"rome\"}}, \"target\": 2, \
          \"filtered_resps\": [[-0.5, true], [-4.0, false], [-3.0, false]], \"acc\": 0.0, \"acc_norm\": 0.0}\n",
    );
    let out2 = t.join("lm/zero_shot.parquet");
    std::fs::create_dir_all(out2.parent().unwrap()).unwrap();
    familiar([
        "import".as_ref(),
        "zero-shot".as_ref(),
        lm.as_os_str(),
        "--model".as_ref(),
        "pythia".as_ref(),
        "--concepts-key".as_ref(),
        "meta.entity".as_ref(),
        "--out".as_ref(),
        out2.as_os_str(),
    ])
    .success();
    let q = sql(
        &t.join("lm"),
        "csv",
        "SELECT item_id, task, kind, answer, predicted, logprob, greedy_match, acc, acc_norm, \
         concepts[1] AS concept FROM zero_shot ORDER BY item_id",
    );
    q.success();
    assert_eq!(
        q.stdout,
        "item_id,task,kind,answer,predicted,logprob,greedy_match,acc,acc_norm,concept\n\
         0,arc_easy,multiple_choice,1,1,-1.25,true,true,false,paris\n\
         1,arc_easy,multiple_choice,2,0,-3.0,false,false,false,rome\n"
    );
    let other = t.write(
        "samples_lambada_2024-05-13T10-42-54.jsonl",
        "{\"doc_id\": 7, \"target\": \" word\", \"filtered_resps\": [[-2.5, true]], \"acc\": 1.0}\n\
         {\"doc_id\": 8, \"target\": \"42\", \"filtered_resps\": [\"41\"], \"exact_match\": 0.0}\n",
    );
    let out3 = t.join("lm2/zero_shot.parquet");
    std::fs::create_dir_all(out3.parent().unwrap()).unwrap();
    familiar([
        "import".as_ref(),
        "zero-shot".as_ref(),
        other.as_os_str(),
        "--model".as_ref(),
        "pythia".as_ref(),
        "--out".as_ref(),
        out3.as_os_str(),
    ])
    .success();
    let q = sql(
        &t.join("lm2"),
        "csv",
        "SELECT item_id, task, kind, logprob, acc FROM zero_shot ORDER BY item_id",
    );
    q.success();
    assert_eq!(
        q.stdout,
        "item_id,task,kind,logprob,acc\n7,lambada,completion,-2.5,true\n8,lambada,generation,,false\n"
    );

    // Bad input: the file, the line and what was expected.
    let bad = t.write("bad.csv", "item_id,task,acc\nq1,t,maybe\n");
    familiar([
        "import".as_ref(),
        "zero-shot".as_ref(),
        bad.as_os_str(),
        "--model".as_ref(),
        "m".as_ref(),
        "--out".as_ref(),
        t.join("x.parquet").as_os_str(),
    ])
    .failure()
    .stderr_has(&["bad.csv:2", "`acc`", "true or false"]);
    assert!(!t.join("x.parquet").exists());
    let no_acc = t.write("noacc.csv", "item_id,task\nq1,t\n");
    familiar([
        "import".as_ref(),
        "zero-shot".as_ref(),
        no_acc.as_os_str(),
        "--model".as_ref(),
        "m".as_ref(),
        "--out".as_ref(),
        t.join("x.parquet").as_os_str(),
    ])
    .failure()
    .stderr_has(&["noacc.csv:1", "no `acc` column"]);
    let dup = t.write("dup.jsonl", "{\"item_id\": \"a\", \"task\": \"t\", \"acc\": true}\n{\"item_id\": \"a\", \"task\": \"t\", \"acc\": false}\n");
    familiar([
        "import".as_ref(),
        "zero-shot".as_ref(),
        dup.as_os_str(),
        "--model".as_ref(),
        "m".as_ref(),
        "--out".as_ref(),
        t.join("x.parquet").as_os_str(),
    ])
    .failure()
    .stderr_has(&["item a of task t", "twice"]);
    let out_of_range = t.write(
        "samples_mc_2024-01-01T00-00-00.jsonl",
        "{\"doc_id\": 0, \"target\": 5, \"filtered_resps\": [[-1.0, true], [-2.0, false]]}\n",
    );
    familiar([
        "import".as_ref(),
        "zero-shot".as_ref(),
        out_of_range.as_os_str(),
        "--model".as_ref(),
        "m".as_ref(),
        "--out".as_ref(),
        t.join("x.parquet").as_os_str(),
    ])
    .failure()
    .stderr_has(&["samples_mc_2024-01-01T00-00-00.jsonl:1", "target 5"]);
    // No model anywhere.
    familiar([
        "import".as_ref(),
        "zero-shot".as_ref(),
        csv.as_os_str(),
        "--out".as_ref(),
        t.join("x.parquet").as_os_str(),
    ])
    .failure()
    .stderr_has(&["--model"]);
}

/// `familiar report frequency` on the fixture world: the planted concepts counted in the fixture
/// index, and zero-shot results imported with accuracy planted to rise with log10(count) — the
/// report recovers the rising law.
#[test]
fn frequency_report_recovers_a_planted_rise() {
    let t = TestDir::new();
    let idx = fixture_index(&t);
    let tables = t.join("tables");
    count_concepts(&idx, &tables);
    let counts = sql(
        &tables,
        "csv",
        "SELECT concept, occurrences FROM concept_frequency \
         WHERE method = 'sa_exact' AND level = 'concept' ORDER BY concept",
    );
    counts.success();
    // familiar's tables join each other and the index's documents (DataFusion 55 refused to
    // join inputs whose table-level metadata differ: "Schema metadata mismatch").
    let joined = familiar([
        "sql".as_ref(),
        "--tables".as_ref(),
        tables.as_os_str(),
        "--index".as_ref(),
        idx.as_os_str(),
        "--format".as_ref(),
        "csv".as_ref(),
        "SELECT c.concept_id, d.n FROM concepts c, (SELECT count(*) AS n FROM documents) d \
         ORDER BY 1"
            .as_ref(),
    ]);
    joined.success();
    let rows: Vec<&str> = joined.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 22, "{}", joined.stdout);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(*row, format!("{i},1200"));
    }
    let mut lines = String::new();
    let mut seen = 0;
    for row in counts.stdout.lines().skip(1) {
        let (concept, n) = row.rsplit_once(',').unwrap();
        let n: u64 = n.parse().unwrap();
        seen += usize::from(n > 0);
        // Of 6 items per concept, round(2 · log10(count)) are right (capped at 6).
        let right = if n == 0 {
            0
        } else {
            ((2.0 * (n as f64).log10()).round() as usize).min(6)
        };
        for i in 0..6 {
            lines += &format!(
                "{{\"item_id\": \"{concept}-{i}\", \"task\": \"t\", \"acc\": {}, \"concepts\": [\"{concept}\"]}}\n",
                i < right
            );
        }
    }
    assert!(seen >= 10, "{}", counts.stdout);
    let results = t.write("results.jsonl", &lines);
    familiar([
        "import".as_ref(),
        "zero-shot".as_ref(),
        results.as_os_str(),
        "--model".as_ref(),
        "planted".as_ref(),
        "--out".as_ref(),
        tables.join("zero_shot.parquet").as_os_str(),
    ])
    .success();
    let rep = t.join("report");
    familiar([
        "report".as_ref(),
        "frequency".as_ref(),
        "--tables".as_ref(),
        tables.as_os_str(),
        "--out".as_ref(),
        rep.as_os_str(),
    ])
    .success()
    .stdout_has(&["planted:", "report.html", "scatter-0.svg"]);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rep.join("summary.json")).unwrap()).unwrap();
    let m = &summary["models"][0];
    assert_eq!(m["model"], "planted");
    assert_eq!(m["concepts"].as_u64().unwrap() as usize, seen);
    // About a third of the items per decade (2 of 6), rounded.
    let slope = m["slope_per_decade"].as_f64().unwrap();
    assert!((0.25..0.42).contains(&slope), "{slope}");
    assert!(m["pearson"].as_f64().unwrap() > 0.9, "{m}");
    assert!(m["binned_pearson"].as_f64().unwrap() > 0.9, "{m}");
    let bins = m["bins"].as_array().unwrap();
    assert!(!bins.is_empty() && bins.len() <= 12);
    let html = std::fs::read_to_string(rep.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("log-linear fit"));
    // Without the results table: a clear error naming what is missing.
    std::fs::remove_file(tables.join("zero_shot.parquet")).unwrap();
    familiar([
        "report".as_ref(),
        "frequency".as_ref(),
        "--tables".as_ref(),
        tables.as_os_str(),
        "--out".as_ref(),
        rep.as_os_str(),
    ])
    .failure()
    .stderr_has(&["no zero_shot table", "concept_frequency"]);
}

#[test]
fn concept_lists_and_model_metadata_import_as_tables() {
    let t = TestDir::new();
    let tables = t.mkdir("tables");
    familiar([
        "import".as_ref(),
        "concepts".as_ref(),
        fixtures().join("concepts/planted.csv").as_os_str(),
        "--out".as_ref(),
        tables.join("concepts.parquet").as_os_str(),
    ])
    .success()
    .stdout_has(&["imported 22 concepts"]);
    let fixture = fixtures().join("models/fixture-gpt2");
    let pythia = fixtures().join("models/reference/pythia");
    familiar([
        "import".as_ref(),
        "model".as_ref(),
        fixture.as_os_str(),
        pythia.as_os_str(),
        "--out".as_ref(),
        tables.join("models.parquet").as_os_str(),
    ])
    .success()
    .stdout_has(&["imported 2 models"]);
    let q = sql(
        &tables,
        "csv",
        "SELECT family, parameters, layers, hidden, vocab_size, context, tied_embeddings, \
         trained_steps, tokenizer_hash IS NOT NULL AS has_tokenizer FROM models ORDER BY family",
    );
    q.success();
    // GPT-2, vocabulary 2049, width 64, 64 positions, 2 blocks: embeddings 2049·64 + 64·64, per
    // block 2·64 + (64·192 + 192) + (64·64 + 64) + 2·64 + (64·256 + 256) + (256·64 + 64), final
    // norm 2·64 = 235,328 (the head is tied).
    let gpt2 = 2049 * 64
        + 64 * 64
        + 2 * (128 + 12288 + 192 + 4096 + 64 + 128 + 16384 + 256 + 16384 + 64)
        + 128;
    assert_eq!(gpt2, 235_328);
    let lines: Vec<&str> = q.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "family,parameters,layers,hidden,vocab_size,context,tied_embeddings,trained_steps,has_tokenizer"
    );
    assert_eq!(lines[1], format!("gpt2,{gpt2},2,64,2049,64,true,2000,true"));
    assert!(
        lines[2].starts_with("gpt_neox,") && lines[2].ends_with(",false,,false"),
        "{}",
        lines[2]
    );
    let q = sql(&tables, "csv", "SELECT count(*) AS n FROM concepts");
    q.success();
    assert_eq!(q.stdout, "n\n22\n");
    // A directory without config.json: the file named.
    familiar([
        "import".as_ref(),
        "model".as_ref(),
        tables.as_os_str(),
        "--out".as_ref(),
        t.join("x.parquet").as_os_str(),
    ])
    .failure()
    .stderr_has(&["config.json"]);
}

/// `familiar demo --train`: the model is trained now (resumable, with the checked-in model's
/// options) and every later step uses it, also in a directory where the demo ran before.
#[test]
fn the_demo_trains_its_model_when_asked() {
    let t = TestDir::new();
    let demo = t.join("familiar-demo");
    // After a run with the checked-in model, in the same directory: results locked to that model
    // (gradient store, priming run) are made again for the new one.
    run_demo(&demo, &[]).success();
    run_demo(&demo, &["--train", "--train-steps", "30"])
        .success()
        .stdout_has(&[
            "a tiny model trained now on this corpus (30 steps)",
            "30 steps: loss",
        ]);
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(demo.join("model-trained/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], 30);
    assert_eq!(state["options"]["hidden"], 64);
    let q = sql(
        &demo.join("tables"),
        "csv",
        "SELECT DISTINCT model FROM zero_shot UNION ALL SELECT DISTINCT model FROM priming",
    );
    q.success();
    let models: Vec<&str> = q.stdout.lines().skip(1).collect();
    assert_eq!(models.len(), 2, "{}", q.stdout);
    assert!(
        models.iter().all(|m| m.ends_with("model-trained")),
        "{}",
        q.stdout
    );
}

/// The accuracy report with a contamination table: items whose prompts are copied from the corpus
/// against made-up ones, with accuracies planted per group — the report's split recovers them.
#[test]
fn frequency_report_sets_contaminated_against_clean_items() {
    let t = TestDir::new();
    let idx = fixture_index(&t);
    let tables = t.join("tables");
    count_concepts(&idx, &tables);
    let concept = sql(
        &tables,
        "csv",
        "SELECT concept FROM concept_frequency WHERE method = 'sa_exact' AND level = 'concept' \
         AND occurrences > 0 ORDER BY concept LIMIT 1",
    );
    concept.success();
    let concept = concept.stdout.lines().nth(1).unwrap().to_string();
    let records = fixture_records();
    let mut items = String::new();
    let mut results = String::new();
    for i in 0..10 {
        let prompt: String = if i < 5 {
            let text = records[10 + i * 7]["text"].as_str().unwrap();
            text.split_whitespace()
                .take(30)
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            format!("Qqzx vvq{i} xxzq zzqv qvxz wwqz zqqx vvzq qxqx zzvv wqzx qqvv zxzq")
        };
        items += &serde_json::to_string(&serde_json::json!({
            "id": format!("item-{i}"), "task": "t", "prompt": prompt, "completion": " ok"
        }))
        .unwrap();
        items += "\n";
        // Contaminated items: 4 of 5 right; clean ones: 1 of 5.
        let right = if i < 5 { i != 0 } else { i == 9 };
        results += &format!(
            "{{\"item_id\": \"item-{i}\", \"task\": \"t\", \"acc\": {right}, \"concepts\": [\"{concept}\"]}}\n"
        );
    }
    let items = t.write("items.jsonl", &items);
    familiar([
        "contamination".as_ref(),
        idx.as_os_str(),
        "--items".as_ref(),
        items.as_os_str(),
        "--out".as_ref(),
        tables.join("contamination.parquet").as_os_str(),
        "-q".as_ref(),
    ])
    .success();
    let results = t.write("results.jsonl", &results);
    familiar([
        "import".as_ref(),
        "zero-shot".as_ref(),
        results.as_os_str(),
        "--model".as_ref(),
        "planted".as_ref(),
        "--out".as_ref(),
        tables.join("zero_shot.parquet").as_os_str(),
    ])
    .success();
    let rep = t.join("report");
    let run = |extra: &[&str]| {
        let mut a: Vec<std::ffi::OsString> = vec![
            "report".into(),
            "frequency".into(),
            "--tables".into(),
            tables.clone().into(),
            "--out".into(),
            rep.clone().into(),
        ];
        a.extend(extra.iter().map(Into::into));
        familiar(a)
    };
    run(&[])
        .success()
        .stdout_has(&["planted: 5 contaminated items (mean 0.8000), 5 clean (mean 0.2000)"]);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rep.join("summary.json")).unwrap()).unwrap();
    let c = &summary["contamination"];
    assert_eq!(c["n"], 8);
    assert_eq!(c["models"][0]["contaminated_items"], 5);
    assert_eq!(c["models"][0]["clean_items"], 5);
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    assert!(md.contains("## Contaminated and clean items"), "{md}");
    assert!(
        md.contains("| planted | 5 | 0.8000 | 5 | 0.2000 | 0.6000 |"),
        "{md}"
    );
    // A size the table did not measure, and a threshold that is no fraction.
    run(&["--contamination-n", "5"])
        .failure()
        .stderr_has(&["did not measure 5-grams", "--contamination-n"]);
    run(&["--contamination-threshold", "1.5"])
        .failure()
        .stderr_has(&["--contamination-threshold 1.5", "from 0 to 1"]);
}
