#[test]
fn dump() {
    let dir = std::path::Path::new(&std::env::var("RUN").unwrap()).to_path_buf();
    let run = familiar_query::attribute::report::Run::read(&dir).unwrap();
    let mut s = String::new();
    for (q, sc) in run.queries.iter().zip(&run.scores) {
        for (r, (d, v)) in sc.iter().enumerate() {
            s += &format!("{}\t{}\t{}\t{}\n", q.id, r + 1, d, v);
        }
    }
    std::fs::write(dir.join("dump.tsv"), s).unwrap();
}
