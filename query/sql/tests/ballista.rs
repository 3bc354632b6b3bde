//! The same SQL on DataFusion Ballista as on the local session, familiar's functions included:
//! a standalone cluster (scheduler and executor in this process, sharing the client's functions)
//! and a "remote" one — the scheduler and executor that `familiar-ballista` runs, started on
//! their own ports and reached over gRPC at `df://localhost:PORT` through [`Sql::ballista`].
//! `cargo test -p familiar-sql --features ballista`.

#![cfg(feature = "ballista")]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use familiar_sql::Sql;

/// A Parquet table with ties, a JSON text column and positive counts.
fn write_table(dir: &Path) {
    let batch = RecordBatch::try_from_iter([
        (
            "task",
            Arc::new(StringArray::from(vec![
                "a", "a", "a", "a", "b", "b", "b", "b",
            ])) as ArrayRef,
        ),
        (
            "x",
            Arc::new(Float64Array::from(vec![
                1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 2.0, 3.0,
            ])),
        ),
        (
            "y",
            Arc::new(Float64Array::from(vec![
                10.0, 30.0, 20.0, 40.0, 1.0, 2.0, 3.0, 4.0,
            ])),
        ),
        (
            "labels",
            Arc::new(StringArray::from(vec![
                r#"{"concept": "p"}"#,
                r#"{"concept": "q"}"#,
                r#"{"concept": "p"}"#,
                "{}",
                r#"{"concept": "q"}"#,
                r#"{"concept": "q"}"#,
                "not json",
                r#"{"concept": 7}"#,
            ])),
        ),
    ])
    .unwrap();
    let f = std::fs::File::create(dir.join("scores.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// DataFusion's aggregates (the log-linear fit) and every function of familiar's.
const QUERIES: &[&str] = &[
    "SELECT task, count(*) AS n, round(corr(y, log10(x)), 9) AS r, \
     round(regr_slope(y, log10(x)), 9) AS per_decade, round(spearman(x, y), 9) AS rho \
     FROM scores GROUP BY task ORDER BY task",
    "SELECT log_bin(x, 1, 4, 3) AS bin, round(log_bin_center(log_bin(x, 1, 4, 3), 1, 4, 3), 9) \
     AS center, count(*) AS n FROM scores GROUP BY 1, 2 ORDER BY 1",
    "SELECT json_str(labels, 'concept') AS concept, count(*) AS n, round(spearman(x, y), 9) AS rho \
     FROM scores GROUP BY 1 ORDER BY 1",
];

fn answers(sql: &mut Sql, dir: &Path) -> Vec<String> {
    sql.register_dir(dir).unwrap();
    QUERIES
        .iter()
        .map(|q| {
            let r = sql.run(q).unwrap();
            familiar_sql::output::render_table(&r[0].batches).unwrap()
        })
        .collect()
}

#[test]
fn familiar_sql_runs_on_a_standalone_ballista_cluster() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path());
    let want = answers(&mut Sql::new().unwrap(), dir.path());
    assert!(want[0].contains("| a    | 4 |"), "{}", want[0]);
    assert!(want[2].contains("| q       | 3 |"), "{}", want[2]);
    let got = answers(&mut Sql::ballista("standalone").unwrap(), dir.path());
    assert_eq!(got, want);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn familiar_sql_runs_on_familiar_ballista_processes() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path());
    let want = answers(&mut Sql::new().unwrap(), dir.path());
    // The scheduler and executor of `familiar-ballista`, on a runtime of their own.
    let servers = tokio::runtime::Runtime::new().unwrap();
    let port = free_port();
    servers.spawn(familiar_sql::ballista::scheduler(
        format!("127.0.0.1:{port}").parse().unwrap(),
    ));
    std::fs::create_dir_all(dir.path().join("work")).unwrap();
    servers.spawn(familiar_sql::ballista::executor(
        familiar_sql::ballista::ExecutorOptions {
            bind_host: "127.0.0.1".into(),
            external_host: Some("127.0.0.1".into()),
            port: free_port(),
            grpc_port: free_port(),
            scheduler_host: "127.0.0.1".into(),
            scheduler_port: port,
            vcores: Some(2),
            work_dir: Some(dir.path().join("work").display().to_string()),
        },
    ));
    let url = format!("df://127.0.0.1:{port}");
    let mut sql = None;
    for _ in 0..100 {
        match Sql::ballista(&url) {
            Ok(s) => {
                sql = Some(s);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    let mut sql = sql.expect("the scheduler accepts a client within 10 s");
    assert_eq!(answers(&mut sql, dir.path()), want);
}
