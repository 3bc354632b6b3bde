//! `familiar serve` over real HTTP on 127.0.0.1 (an ephemeral port): every endpoint against the
//! library's answers (and, on an index of generated tokens, against a brute-force scan of its
//! documents), bad requests, overload, the time limit, metrics, logs, CORS and SIGTERM.

#![allow(clippy::unwrap_used)]

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use familiar::index::Index;
use familiar::with_view;
use familiar_query::{docs, infgram, ngram, trace};
use serde_json::{json, Value};
use util::tokens;

/// A running `familiar serve`; killed when dropped.
struct Server {
    child: Child,
    addr: String,
    /// Where it serves Flight SQL (`--flight-sql`).
    flight: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(indexes: &[(&str, &Path)], extra: &[&str]) -> Server {
        let mut c = util::command();
        c.arg("serve").args(["--addr", "127.0.0.1:0"]);
        for (name, dir) in indexes {
            c.arg("--index").arg(format!("{name}={}", dir.display()));
        }
        c.args(extra).stdout(Stdio::null()).stderr(Stdio::piped());
        // The server dies with the test process (the shared one is never dropped): the kernel
        // kills it when the thread that started it ends, so start it from a thread that lives
        // as long as the process.
        let mut child = spawn_tied_to_process(c);
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut flight = None;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("familiar serve: Flight SQL on grpc://") {
                    flight = Some(rest.trim().to_string());
                }
                if let Some(rest) = line.strip_prefix("familiar serve: listening on http://") {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send((addr, flight.take()));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (addr, flight) = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server did not start: {:?}", log.lock().unwrap()));
        Server {
            child,
            addr,
            flight,
            log,
        }
    }

    fn get(&self, path: &str) -> Reply {
        http(&self.addr, "GET", path, &[], b"")
    }

    fn post(&self, path: &str, body: &Value) -> Reply {
        http(
            &self.addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// `POST /` (infini-gram) that must succeed.
    fn ig(&self, body: Value) -> Value {
        let r = self.post("/", &body);
        assert_eq!(r.status, 200, "{body}: {}", r.text());
        r.json()
    }

    /// A `/v1/` operation that must succeed.
    fn v1(&self, index: &str, op: &str, body: Value) -> Value {
        let r = self.post(&format!("/v1/{index}/{op}"), &body);
        assert_eq!(r.status, 200, "{op} {body}: {}", r.text());
        r.json()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `c` from a thread that never ends, with PR_SET_PDEATHSIG: the child gets SIGKILL when
/// the test process exits, whatever happens to it.
fn spawn_tied_to_process(mut c: std::process::Command) -> Child {
    use std::os::unix::process::CommandExt;
    type Job = (
        std::process::Command,
        std::sync::mpsc::Sender<std::io::Result<Child>>,
    );
    static SPAWNER: OnceLock<Mutex<std::sync::mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut c, reply) in rx {
                let _ = reply.send(c.spawn());
            }
            // The senders live in a static: this thread never gets here.
            loop {
                std::thread::park();
            }
        });
        Mutex::new(tx)
    });
    // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    spawner.lock().unwrap().send((c, tx)).unwrap();
    rx.recv().unwrap().unwrap()
}

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// An error answer: the status, and a problem document with a message in words.
    fn assert_error(&self, status: u16, what: &str) -> String {
        assert_eq!(self.status, status, "{what}: {}", self.text());
        let v = self.json();
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error: {v}"));
        assert!(msg.len() > 10, "{what}: a message in words: {msg}");
        assert_eq!(v["detail"], v["error"]);
        assert_eq!(v["status"], json!(status));
        assert!(v["type"].is_string());
        msg.to_string()
    }
}

/// One HTTP/1.1 exchange over a fresh connection (`Connection: close`).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer (413) before reading all of a large body and close: fine.
    let _ = s.write_all(body);
    // Read until the head and then the body's Content-Length are in (a server may keep the
    // connection open), or to the end.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| raw.len() >= end + 4 + n) {
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 4 + n..];
        }
        body = out;
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// Documents of generated tokens (vocabulary 40, so n-grams repeat), and their index.
fn generated() -> &'static (PathBuf, tokens::Model) {
    static G: OnceLock<(PathBuf, tokens::Model)> = OnceLock::new();
    G.get_or_init(|| {
        let dir = util::process_scratch().join("serve-generated");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tok = tokens::write_tokenizer(&dir, 40);
        let mut rng = familiar::rng::SplitMix64::new(7);
        let docs: Vec<Vec<u32>> = (0..300)
            .map(|_| {
                let len = 5 + (rng.next_u64() % 60) as usize;
                // Skewed: low ids much more frequent (frequent prefixes exist).
                (0..len)
                    .map(|_| {
                        let a = (rng.next_u64() % 40) as u32;
                        let b = (rng.next_u64() % 40) as u32;
                        a.min(b)
                    })
                    .collect()
            })
            .collect();
        let out = dir.join("index");
        tokens::build(&tok, &out, &docs, 4000);
        (out, tokens::Model::new(&docs, 40, 4000))
    })
}

/// One server for the tests that do not need their own: the fixture corpus in several shards
/// (`fx`) and the generated index (`gen`).
fn shared() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        Server::start(
            &[
                ("fx", util::fixture_index_sharded()),
                ("gen", &generated().0),
            ],
            &[],
        )
    })
}

fn fx() -> Index {
    Index::open(util::fixture_index_sharded()).unwrap()
}

/// JSON values equal but for floats, which may differ in the last place after a text round trip.
fn assert_close(got: &Value, want: &Value) {
    fn close(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0)
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
            }
            _ => a == b,
        }
    }
    assert!(close(got, want), "got {got}\nwant {want}");
}

/// The first document of at least `n` tokens.
fn doc_of_at_least(index: &Index, n: u64) -> u64 {
    (0..index.documents())
        .find(|&d| docs::record(index, d).unwrap().token_count >= n)
        .unwrap()
}

fn as_u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

const TEXTS: [&str; 4] = [" ve", " tian ve", " the", " nisi tian ve tiriwe"];

#[test]
fn infinigram_count_prob_ntd_and_infgram_answer_as_the_library() {
    let s = shared();
    let index = fx();
    let t = index.tokenizer().unwrap();
    for text in TEXTS {
        let ids = t.encode(text).unwrap();
        // count, from the text and from the ids.
        let by_text = s.ig(json!({"index": "fx", "query_type": "count", "query": text}));
        let by_ids = s.ig(json!({"corpus": "fx", "query_type": "count", "query_ids": ids}));
        let want = ngram::count(&index, &ids).unwrap();
        assert_eq!(by_text["count"], json!(want), "{text}");
        assert_eq!(by_ids["count"], json!(want), "{text}");
        assert_eq!(by_text["approx"], json!(false));
        assert_eq!(by_text["token_ids"], json!(ids));
        let tokens: Vec<String> = ids.iter().map(|&i| t.id_to_token(i).unwrap()).collect();
        assert_eq!(by_text["tokens"], json!(tokens));
        assert!(by_text["latency"].as_f64().unwrap() >= 0.0);
        // prob of the last token.
        let p = s.ig(json!({"index": "fx", "query_type": "prob", "query": text}));
        let lib = ngram::probability(&index, &ids[..ids.len() - 1], ids[ids.len() - 1]).unwrap();
        assert_eq!(p["prompt_cnt"], json!(lib.prefix_count));
        assert_eq!(p["cont_cnt"], json!(lib.count));
        assert_close(&p["prob"], &json!(lib.probability.unwrap_or(-1.0)));
        // ntd: exact, the most frequent max_support tokens.
        let n = s.ig(json!({"index": "fx", "query_type": "ntd", "query": text, "max_support": 5}));
        let lib = ngram::next_tokens(&index, &ids).unwrap();
        assert_eq!(n["prompt_cnt"], json!(lib.prefix_count));
        assert_eq!(n["support"], json!(lib.next.len()));
        let got = n["result_by_token_id"].as_object().unwrap();
        assert_eq!(got.len(), lib.next.len().min(5));
        for (id, c) in lib.next.iter().take(5) {
            let e = &got[&id.to_string()];
            assert_eq!(e["cont_cnt"], json!(c));
            assert_eq!(e["token"], json!(t.id_to_token(*id).unwrap()));
            let prob = *c as f64 / lib.prefix_count as f64;
            assert!((e["prob"].as_f64().unwrap() - prob).abs() < 1e-12);
        }
        // ∞-gram, with an unseen start so the suffix is shorter than the prompt.
        let mut prompt = [t.encode(" zzqx").unwrap(), ids.clone()].concat();
        let ip = s.ig(json!({"index": "fx", "query_type": "infgram_prob", "query_ids": prompt}));
        let cont = prompt.pop().unwrap();
        let lib = infgram::infgram_prob(&index, &prompt, cont).unwrap();
        assert_eq!(ip["suffix_len"], json!(lib.suffix_len));
        assert_eq!(ip["prompt_cnt"], json!(lib.probability.prefix_count));
        assert_eq!(ip["cont_cnt"], json!(lib.probability.count));
        assert_eq!(
            ip["longest_suffix"],
            json!(t.decode(&prompt[prompt.len() - lib.suffix_len..]).unwrap())
        );
        let inn = s.ig(json!({"index": "fx", "query_type": "infgram_ntd", "query_ids": prompt}));
        let lib = infgram::infgram_ntd(&index, &prompt).unwrap();
        assert_eq!(inn["suffix_len"], json!(lib.suffix_len));
        assert_eq!(inn["prompt_cnt"], json!(lib.next.prefix_count));
        let got = inn["result_by_token_id"].as_object().unwrap();
        assert_eq!(got.len(), lib.next.next.len().min(1000));
        for (id, c) in &lib.next.next {
            assert_eq!(got[&id.to_string()]["cont_cnt"], json!(c));
        }
    }
}

#[test]
fn infinigram_find_search_docs_and_documents_answer_as_the_library() {
    let s = shared();
    let index = fx();
    let t = index.tokenizer().unwrap();
    assert!(
        index.shards().len() > 1,
        "the sharded fixture has several shards"
    );
    // find: each shard's suffix-array range.
    let ids = t.encode(" tian ve").unwrap();
    let f = s.ig(json!({"index": "fx", "query_type": "find", "query_ids": ids}));
    let mut total = 0;
    for (k, shard) in index.shards().iter().enumerate() {
        let (lo, hi) = with_view!(shard, |v| v.range(&ngram::convert(&ids).unwrap())).unwrap();
        assert_eq!(f["segment_by_shard"][k], json!([lo, hi]));
        total += hi - lo;
        // get_doc_by_rank of each rank in the range shows the n-gram at its needle.
        if hi > lo {
            let d = s.ig(
                json!({"index": "fx", "query_type": "get_doc_by_rank", "s": k,
                                "rank": lo, "max_disp_len": 12, "query_ids": ids}),
            );
            let pos = with_view!(shard, |v| v.suffix(lo)).unwrap() as u64;
            let (doc, start) = with_view!(shard, |v| {
                let d = v.doc_of(pos).unwrap();
                (v.first_doc + d, v.doc_span(d).unwrap().0 as u64)
            });
            assert_eq!(d["doc_ix"], json!(doc));
            assert_eq!(d["needle_offset"], json!(pos - start));
            let off = (pos - start - d["disp_offset"].as_u64().unwrap()) as usize;
            let shown = as_u64s(&d["token_ids"]);
            let want: Vec<u64> = ids.iter().map(|&i| i as u64).collect();
            assert_eq!(shown[off..off + ids.len()], want[..]);
            // The pieces put together are the window's text, and the needle is labeled.
            let pieces = d["spans"].as_array().unwrap();
            let joined: String = pieces.iter().map(|p| p[0].as_str().unwrap()).collect();
            let window: Vec<u32> = shown.iter().map(|&x| x as u32).collect();
            assert_eq!(joined, t.decode(&window).unwrap());
            assert!(pieces
                .iter()
                .any(|p| p[1] == json!("0") && p[0].as_str().unwrap() == t.decode(&ids).unwrap()));
            // get_doc_by_ptr of that position shows the same document.
            let byptr = s.ig(
                json!({"index": "fx", "query_type": "get_doc_by_ptr", "s": k,
                                    "ptr": pos, "max_disp_len": 12}),
            );
            assert_eq!(byptr["doc_ix"], json!(doc));
            assert_eq!(byptr["token_ids"], d["token_ids"]);
            let rec = docs::record(&index, doc).unwrap();
            assert_eq!(byptr["doc_len"], json!(rec.token_count));
            assert_eq!(byptr["metadata"]["id"], json!(rec.external_id));
        }
    }
    assert_eq!(f["cnt"], json!(total));
    assert!(total > 0);
    // CNF: OR binds tighter than AND, as in infini-gram.
    let a = t.encode(" tian").unwrap();
    let b = t.encode(" ve").unwrap();
    let c = t.encode(" nisi").unwrap();
    let clauses = vec![vec![a.clone(), c.clone()], vec![b.clone()]];
    let lib = ngram::cnf(
        &index,
        &ngram::Cnf {
            clauses: clauses.clone(),
        },
        &ngram::CnfOptions {
            max_occurrences: None,
            list_documents: 3,
            seed: 0,
        },
    )
    .unwrap();
    let cnt = s.ig(json!({"index": "fx", "query_type": "count", "query": " tian OR nisi AND ve"}));
    assert_eq!(cnt["count"], json!(lib.documents));
    assert_eq!(cnt["token_ids"], json!(clauses));
    let one = s.ig(json!({"index": "fx", "query_type": "count", "query": " tian OR nisi"}));
    assert_eq!(
        one["count"],
        json!(ngram::count(&index, &a).unwrap() + ngram::count(&index, &c).unwrap())
    );
    let sd = s.ig(
        json!({"index": "fx", "query_type": "search_docs", "query_ids": clauses,
                         "maxnum": 3, "max_disp_len": 30}),
    );
    assert_eq!(sd["cnt"], json!(lib.documents));
    assert_eq!(sd["idxs"], json!(lib.doc_ids));
    let shown = sd["documents"].as_array().unwrap();
    assert_eq!(shown.len(), lib.doc_ids.len());
    for d in shown {
        // Each shown document holds a term of every clause, and a labeled piece shows a term.
        let doc = d["doc_ix"].as_u64().unwrap();
        let len = docs::record(&index, doc).unwrap().token_count;
        let all = index.doc_tokens(doc, 0, len).unwrap();
        for clause in &clauses {
            assert!(clause
                .iter()
                .any(|term| all.windows(term.len()).any(|w| w == &term[..])));
        }
        let labeled: Vec<&Value> = d["spans"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| !p[1].is_null())
            .collect();
        assert!(!labeled.is_empty(), "{d}");
        assert!(d["disp_len"].as_u64().unwrap() <= 30);
    }
    let fc = s.ig(
        json!({"index": "fx", "query_type": "find_cnf", "query_ids": clauses,
                         "maxnum": 3}),
    );
    assert_eq!(fc["cnt"], json!(lib.documents));
    // Every pointer is an occurrence of a first-clause term.
    let mut n = 0;
    for (k, ptrs) in fc["ptrs_by_shard"].as_array().unwrap().iter().enumerate() {
        for p in as_u64s(ptrs) {
            let shard = &index.shards()[k];
            let (doc, start) = with_view!(shard, |v| {
                let d = v.doc_of(p).unwrap();
                (v.first_doc + d, v.doc_span(d).unwrap().0 as u64)
            });
            let ok = clauses[0].iter().any(|term| {
                let at = p - start;
                index.doc_tokens(doc, at, at + term.len() as u64).unwrap() == *term
            });
            assert!(ok, "pointer {p} of shard {k}");
            n += 1;
        }
    }
    assert!(n > 0);
}

#[test]
fn infinigram_answers_match_a_brute_force_scan_of_generated_documents() {
    let s = shared();
    let (_, model) = generated();
    let mut rng = familiar::rng::SplitMix64::new(99);
    for _ in 0..40 {
        let d = &model.docs[(rng.next_u64() % model.docs.len() as u64) as usize];
        let len = 1 + (rng.next_u64() % 3) as usize;
        let start = (rng.next_u64() % (d.len() - len + 1) as u64) as usize;
        let q = d[start..start + len].to_vec();
        let c = s.ig(json!({"index": "gen", "query_type": "count", "query_ids": q}));
        assert_eq!(c["count"], json!(model.count(&q)), "{q:?}");
        let n = s.ig(json!({"index": "gen", "query_type": "ntd", "query_ids": q}));
        let (total, _end, next) = model.next_tokens(&q);
        assert_eq!(n["prompt_cnt"], json!(total));
        let got = n["result_by_token_id"].as_object().unwrap();
        assert_eq!(got.len(), next.len());
        for (id, c) in &next {
            assert_eq!(got[&id.to_string()]["cont_cnt"], json!(c));
        }
        // Text queries: the word-level tokenizer's words are `t{id}`.
        let text: Vec<String> = q.iter().map(|i| format!("t{i}")).collect();
        let ct = s.ig(json!({"index": "gen", "query_type": "count", "query": text.join(" ")}));
        assert_eq!(ct["count"], c["count"]);
    }
    // The most frequent prefix of all: the empty one (every position). Its distribution needs
    // more reads than a request may make on the runtime's thread (the 3-token prefixes above fit
    // there): the hand-off answers the same.
    let n = s.ig(json!({"index": "gen", "query_type": "ntd", "query_ids": []}));
    assert_eq!(n["prompt_cnt"], json!(model.positions()));
    let (_, _, next) = model.next_tokens(&[]);
    let got = n["result_by_token_id"].as_object().unwrap();
    assert_eq!(got.len(), next.len());
    for (id, c) in &next {
        assert_eq!(got[&id.to_string()]["cont_cnt"], json!(c));
    }
    // CNF documents.
    let clauses = vec![vec![vec![0, 1]], vec![vec![2], vec![3, 3]]];
    let c = s.ig(json!({"index": "gen", "query_type": "count", "query_ids": clauses}));
    assert_eq!(c["count"], json!(model.cnf(&clauses).documents));
}

#[test]
fn olmotrace_indexes_documents_and_attribution() {
    let s = shared();
    let index = fx();
    let names = s.get("/indexes").json();
    assert_eq!(names, json!(["fx", "gen"]));
    let doc = doc_of_at_least(&index, 40);
    let d = s
        .get(&format!(
            "/fx/documents/{doc}?maximum_document_display_length=20"
        ))
        .json();
    let rec = docs::record(&index, doc).unwrap();
    assert_eq!(d["documentIndex"], json!(doc));
    assert_eq!(d["documentLength"], json!(rec.token_count));
    assert_eq!(d["displayLength"], json!(20));
    let first = index.doc_tokens(doc, 0, 20).unwrap();
    assert_eq!(d["tokenIds"], json!(first));
    assert_eq!(
        d["text"],
        json!(index.tokenizer().unwrap().decode(&first).unwrap())
    );
    assert_eq!(d["metadata"]["source"], json!(rec.source));
    // A response made of a document's sentences and words of no document.
    let text = docs::text(&index, doc_of_at_least(&index, 200)).unwrap();
    let response = format!(
        "Zq xv. {}. Wk zz.",
        text.chars().take(300).collect::<String>()
    );
    for ranking in ["length", "unigram_logprob_sum"] {
        let body = json!({
            "response": response,
            "delimiters": ["."],
            "allowSpansWithPartialWords": false,
            "minimumSpanLength": 2,
            "maximumFrequency": 10,
            "maximumSpanDensity": 0.1,
            "spanRankingMethod": ranking,
            "maximumDocumentsPerSpan": 3,
            "maximumContextLength": 10,
            "maximumContextLengthSnippet": 4,
        });
        let r = s.post("/fx/attribution", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        let a = r.json();
        let options = trace::TraceOptions {
            min_len: 2,
            max_count: Some(10),
            max_span_density: Some(0.1),
            docs_per_span: 3,
            whole_words: true,
            bm25: true,
            ranking: if ranking == "length" {
                trace::SpanRanking::Length
            } else {
                trace::SpanRanking::UnigramLogprob
            },
            delimiters: vec![".".into()],
            ..trace::TraceOptions::default()
        };
        let lib = trace::trace_text(&index, &response, &options).unwrap();
        let spans = a["spans"].as_array().unwrap();
        assert_eq!(spans.len(), lib.spans.len(), "{ranking}");
        assert!(!spans.is_empty());
        let t = index.tokenizer().unwrap();
        for (i, (got, want)) in spans.iter().zip(&lib.spans).enumerate() {
            assert_eq!(got["left"], json!(want.start));
            assert_eq!(got["right"], json!(want.end));
            assert_eq!(got["count"], json!(want.count));
            assert_eq!(got["text"], json!(want.text));
            // No span crosses a delimiter token except at its end.
            let ids = &lib.tokens[want.start..want.end - 1];
            assert!(
                ids.iter().all(|&x| !t.decode(&[x]).unwrap().contains('.')),
                "{got}"
            );
            let want_docs: Vec<u64> = lib
                .documents
                .iter()
                .filter(|d| d.span == i)
                .map(|d| d.doc_id)
                .collect();
            let got_docs: Vec<u64> = got["documents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["documentIndex"].as_u64().unwrap())
                .collect();
            assert_eq!(got_docs, want_docs);
            // Each document's display holds the span at its needle.
            for d in got["documents"].as_array().unwrap() {
                let off = (d["needleOffset"].as_u64().unwrap()
                    - d["displayOffset"].as_u64().unwrap()) as usize;
                let shown = as_u64s(&d["tokenIds"]);
                let span: Vec<u64> = as_u64s(&got["tokenIds"]);
                assert_eq!(shown[off..off + span.len()], span[..]);
                assert!(
                    d["textSnippet"].as_str().unwrap().len() <= d["text"].as_str().unwrap().len()
                );
            }
        }
        let keep = (0.1 * lib.tokens.len() as f64).ceil() as usize;
        assert!(spans.len() <= keep);
    }
}

#[test]
fn v1_endpoints_answer_as_the_library() {
    let s = shared();
    let index = fx();
    let t = index.tokenizer().unwrap();
    let list = s.get("/v1/indexes").json();
    assert_eq!(list[0]["name"], json!("fx"));
    assert_eq!(list[0]["documents"], json!(index.documents()));
    assert_eq!(list[0]["shards"], json!(index.shards().len()));
    let ids = t.encode(" tian ve").unwrap();
    let tok = s.v1("fx", "tokenize", json!({"text": " tian ve"}));
    assert_eq!(tok["token_ids"], json!(ids));
    assert_eq!(
        s.v1("fx", "decode", json!({"token_ids": ids}))["text"],
        json!(" tian ve")
    );
    let want = ngram::count(&index, &ids).unwrap();
    assert_eq!(
        s.v1("fx", "count", json!({"text": " tian ve"}))["count"],
        json!(want)
    );
    // Batch counts, as JSON and as an Arrow IPC stream.
    let queries = json!([" tian ve", ids, " ve", [5, 6, 7]]);
    let wants: Vec<u64> = [
        ids.clone(),
        ids.clone(),
        t.encode(" ve").unwrap(),
        vec![5, 6, 7],
    ]
    .iter()
    .map(|q| ngram::count(&index, q).unwrap())
    .collect();
    let b = s.v1("fx", "count_batch", json!({"queries": queries}));
    assert_eq!(b["counts"], json!(wants));
    let r = http(
        &s.addr,
        "POST",
        "/v1/fx/count_batch",
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/vnd.apache.arrow.stream"),
        ],
        json!({"queries": queries}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apache.arrow.stream")
    );
    let batches: Vec<_> = arrow_ipc::reader::StreamReader::try_new(&r.body[..], None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    let counts: Vec<u64> = batches
        .iter()
        .flat_map(|b| {
            util::col::<arrow_array::UInt64Array>(b, "count")
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(counts, wants);
    // locate in pages = locate at once.
    let all = ngram::locate(&index, &ids, 0, u64::MAX).unwrap();
    let mut paged = Vec::new();
    let mut offset = 0;
    loop {
        let p = s.v1(
            "fx",
            "locate",
            json!({"token_ids": ids, "offset": offset, "limit": 7}),
        );
        assert_eq!(p["total"], json!(all.total));
        let hits = p["hits"].as_array().unwrap().clone();
        if hits.is_empty() {
            break;
        }
        offset += hits.len();
        paged.extend(hits);
    }
    assert_eq!(json!(paged), json!(all.hits));
    // ntd, prob, ∞-gram.
    let n = s.v1("fx", "ntd", json!({"text": " tian", "limit": 3}));
    let lib = ngram::next_tokens(&index, &t.encode(" tian").unwrap()).unwrap();
    assert_eq!(n["prefix_count"], json!(lib.prefix_count));
    assert_eq!(n["end_of_document"], json!(lib.end_of_document));
    let got: Vec<(u64, u64)> = n["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["token_id"].as_u64().unwrap(),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let wantn: Vec<(u64, u64)> = lib
        .next
        .iter()
        .take(3)
        .map(|&(a, b)| (a as u64, b))
        .collect();
    assert_eq!(got, wantn);
    let p = s.v1("fx", "prob", json!({"text": " tian", "next_text": " ve"}));
    let lib = ngram::probability(
        &index,
        &t.encode(" tian").unwrap(),
        t.encode(" ve").unwrap()[0],
    )
    .unwrap();
    assert_eq!(p["count"], json!(lib.count));
    assert_eq!(p["prefix_count"], json!(lib.prefix_count));
    let ig = s.v1("fx", "infgram", json!({"text": " zzqx tian"}));
    let lib = infgram::infgram_ntd(&index, &t.encode(" zzqx tian").unwrap()).unwrap();
    assert_eq!(ig["suffix_len"], json!(lib.suffix_len));
    // CNF with the library's fields.
    let c = s.v1(
        "fx",
        "cnf",
        json!({"clauses": [[" tian"], [" ve", " nisi"]], "list_documents": 4}),
    );
    let lib = ngram::cnf(
        &index,
        &ngram::Cnf {
            clauses: vec![
                vec![t.encode(" tian").unwrap()],
                vec![t.encode(" ve").unwrap(), t.encode(" nisi").unwrap()],
            ],
        },
        &ngram::CnfOptions {
            list_documents: 4,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(c["documents"], json!(lib.documents));
    assert_eq!(c["doc_ids"], json!(lib.doc_ids));
    assert_eq!(c["clause_totals"], json!(lib.clause_totals));
    // Documents and windows.
    let doc = doc_of_at_least(&index, 20);
    let d = s.get(&format!("/v1/fx/docs/{doc}")).json();
    let rec = docs::record(&index, doc).unwrap();
    assert_eq!(d["external_id"], json!(rec.external_id));
    assert_eq!(d["text"], json!(docs::text(&index, doc).unwrap()));
    assert!(s
        .get(&format!("/v1/fx/docs/{doc}?text=false"))
        .json()
        .get("text")
        .is_none());
    let w = s.v1(
        "fx",
        "window",
        json!({"doc_id": doc, "offset": 3, "len": 2, "before": 2, "after": 2}),
    );
    let (l, m, r) = docs::window(&index, doc, 3, 2, 2, 2).unwrap();
    assert_eq!(
        (w["left"].clone(), w["match"].clone(), w["right"].clone()),
        (json!(l), json!(m), json!(r))
    );
    // Trace, as the library traces.
    let text = docs::text(&index, doc_of_at_least(&index, 200)).unwrap();
    let piece: &str = &text.chars().take(200).collect::<String>();
    let tr = s.v1(
        "fx",
        "trace",
        json!({"text": piece, "min_len": 3, "max_count": null,
                                         "max_span_density": null, "docs_per_span": 2}),
    );
    let lib = trace::trace_text(
        &index,
        piece,
        &trace::TraceOptions {
            docs_per_span: 2,
            ..trace::TraceOptions::all_spans(3)
        },
    )
    .unwrap();
    assert_close(&tr["spans"], &json!(lib.spans));
    assert_eq!(tr["documents"], json!(lib.documents));
    // Contamination of posted items, as the library measures it.
    let items = json!([
        {"id": "a", "prompt": piece, "completion": " ve"},
        {"id": "b", "prompt": "Zq xv wk", "choices": [" tian", " zz"], "answer": 0},
    ]);
    let cont = s.v1(
        "fx",
        "contamination",
        json!({"items": items, "ngram_sizes": [2, 4]}),
    );
    let parsed = familiar::items::parse_items_jsonl(
        Path::new("items"),
        &items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| format!("{i}\n"))
            .collect::<String>(),
        "item",
    )
    .unwrap();
    let lib = familiar_query::contamination::contamination(
        &index,
        &parsed,
        &familiar_query::contamination::ContaminationOptions {
            ngram_sizes: vec![2, 4],
            documents: 5,
        },
        &|_| {},
    )
    .unwrap();
    assert_close(&cont["rows"], &json!(lib));
    // The OpenAPI file names every operation.
    let api = s.get("/v1/openapi.json").json();
    assert!(api["openapi"].as_str().unwrap().starts_with("3."));
    for op in [
        "tokenize",
        "decode",
        "count",
        "count_batch",
        "locate",
        "ntd",
        "prob",
        "infgram",
        "cnf",
        "window",
        "trace",
        "contamination",
    ] {
        assert!(
            api["paths"].get(format!("/v1/{{index}}/{op}")).is_some(),
            "openapi.json lacks {op}"
        );
    }
    for path in [
        "/",
        "/indexes",
        "/{index}/documents/{id}",
        "/{index}/attribution",
        "/v1/indexes",
        "/v1/{index}/docs/{id}",
        "/v1/sql",
        "/healthz",
        "/metrics",
    ] {
        assert!(
            api["paths"].get(path).is_some(),
            "openapi.json lacks {path}"
        );
    }
}

#[test]
fn bad_requests_get_4xx_with_a_message_and_the_server_lives_on() {
    let s = shared();
    let post_raw = |path: &str, ct: &str, body: &[u8]| {
        http(&s.addr, "POST", path, &[("Content-Type", ct)], body)
    };
    post_raw("/", "application/json", b"{\"index\": \"fx\", ").assert_error(400, "malformed JSON");
    post_raw("/", "application/json", b"[1, 2]").assert_error(400, "not an object");
    post_raw("/", "text/plain", b"{}").assert_error(415, "no JSON content type");
    let cases = [
        (json!({"query_type": "count", "query": "a"}), "no index"),
        (json!({"index": "fx", "query": "a"}), "no query type"),
        (
            json!({"index": "nope", "query_type": "count", "query": "a"}),
            "unknown index",
        ),
        (
            json!({"index": "../fx", "query_type": "count", "query": "a"}),
            "path-like index",
        ),
        (
            json!({"index": "/etc", "query_type": "count", "query": "a"}),
            "absolute path",
        ),
        (
            json!({"index": "fx", "query_type": "drop", "query": "a"}),
            "unknown query type",
        ),
        (json!({"index": "fx", "query_type": "count"}), "no query"),
        (
            json!({"index": "fx", "query_type": "count", "query": "a", "query_ids": [1]}),
            "both",
        ),
        (
            json!({"index": "fx", "query_type": "count", "query_ids": [99999999]}),
            "id out of range",
        ),
        (
            json!({"index": "fx", "query_type": "count", "query_ids": [-1]}),
            "negative id",
        ),
        (
            json!({"index": "fx", "query_type": "count", "query_ids": "1 2"}),
            "ids as text",
        ),
        (
            json!({"index": "fx", "query_type": "count", "query": 5}),
            "number query",
        ),
        (
            json!({"index": "fx", "query_type": "prob", "query_ids": []}),
            "empty prob",
        ),
        (
            json!({"index": "fx", "query_type": "ntd", "query": "a", "max_support": 5000}),
            "support",
        ),
        (
            json!({"index": "fx", "query_type": "search_docs", "query": "a", "maxnum": 11}),
            "maxnum",
        ),
        (
            json!({"index": "fx", "query_type": "get_doc_by_rank", "s": 0}),
            "no rank",
        ),
        (
            json!({"index": "fx", "query_type": "get_doc_by_rank", "s": 99, "rank": 0}),
            "shard",
        ),
        (
            json!({"index": "fx", "query_type": "get_doc_by_rank", "s": 0, "rank": 1u64 << 60}),
            "rank",
        ),
        (
            json!({"index": "fx", "query_type": "get_doc_by_ptr", "s": 0, "ptr": 1u64 << 60}),
            "ptr",
        ),
        (
            json!({"index": "fx", "query_type": "count", "query": "a AND b AND c AND d AND e"}),
            "clauses",
        ),
        (
            json!({"index": "fx", "query_type": "prob", "query_ids": [[[1]], [[2]]]}),
            "cnf prob",
        ),
    ];
    for (body, what) in cases {
        let r = s.post("/", &body);
        let msg = r.assert_error(400, what);
        if what == "path-like index" {
            assert!(msg.contains("unknown index"), "{msg}");
        }
    }
    // OLMoTrace and /v1/ errors.
    s.get("/nope/documents/1")
        .assert_error(404, "unknown index in a path");
    s.get("/..%2Ffx/documents/1")
        .assert_error(404, "encoded path in a path");
    s.get("/fx/documents/abc")
        .assert_error(404, "document id not a number");
    s.get("/fx/documents/999999999")
        .assert_error(404, "document out of range");
    s.get("/fx/documents/1?maximum_document_display_length=-3")
        .assert_error(400, "display");
    s.post("/fx/attribution", &json!({}))
        .assert_error(400, "no response");
    s.post(
        "/fx/attribution",
        &json!({"response": "a", "spanRankingMethod": "x"}),
    )
    .assert_error(400, "ranking");
    s.post(
        "/fx/attribution",
        &json!({"response": "a", "maximumSpanDensity": 2}),
    )
    .assert_error(400, "density");
    s.post("/v1/fx/explode", &json!({}))
        .assert_error(404, "unknown operation");
    s.post("/v1/fx/count", &json!({}))
        .assert_error(400, "no query");
    s.post("/v1/fx/count_batch", &json!({"queries": [" a", {"x": 1}]}))
        .assert_error(400, "batch");
    s.post("/v1/fx/locate", &json!({"text": "a", "limit": 0}))
        .assert_error(400, "limit");
    s.post(
        "/v1/fx/contamination",
        &json!({"items": [{"id": "a", "prompt": "x", "colour": 1}]}),
    )
    .assert_error(400, "unknown item key");
    s.get("/v1/fx/docs/-1")
        .assert_error(404, "negative document");
    s.get("/v1/fx/docs/1?text=maybe")
        .assert_error(400, "text flag");
    s.get("/static/../../etc/passwd")
        .assert_error(404, "static path");
    s.get("/static/secret.txt").assert_error(404, "static file");
    s.get("/no/such/thing").assert_error(404, "no endpoint");
    http(&s.addr, "DELETE", "/indexes", &[], b"").assert_error(405, "method");
    // Too large: the request body, the query.
    let huge = vec![b'a'; 3 << 20];
    let mut body = b"{\"index\": \"fx\", \"query_type\": \"count\", \"query\": \"".to_vec();
    body.extend_from_slice(&huge);
    body.extend_from_slice(b"\"}");
    post_raw("/", "application/json", &body).assert_error(413, "huge payload");
    let long: Vec<u32> = vec![5; 20_000];
    s.post(
        "/",
        &json!({"index": "fx", "query_type": "count", "query_ids": long}),
    )
    .assert_error(413, "query too long");
    // Still alive and answering.
    assert_eq!(s.get("/healthz").json()["status"], json!("ok"));
}

#[test]
fn metrics_logs_cors_and_the_page() {
    let s = shared();
    s.ig(json!({"index": "fx", "query_type": "count", "query": " ve"}));
    let _ = s.post("/", &json!({"index": "fx", "query_type": "count"}));
    let m = s.get("/metrics");
    assert_eq!(m.status, 200);
    let text = m.text();
    for want in [
        "familiar_requests_total{query_type=\"count\",status=\"200\"}",
        "familiar_requests_total{query_type=\"count\",status=\"400\"}",
        "familiar_request_duration_seconds_bucket{query_type=\"count\",le=\"+Inf\"}",
        "familiar_request_duration_seconds_count{query_type=\"count\"}",
        "familiar_errors_total{type=\"bad-request\"}",
        "familiar_queries_running ",
    ] {
        assert!(text.contains(want), "metrics lack {want}:\n{text}");
    }
    // One JSON line per request on stderr.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = s.log.lock().unwrap().iter().any(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                v["path"] == json!("/")
                    && v["query_type"] == json!("count")
                    && v["status"] == json!(400)
            })
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no request log line: {:?}",
            s.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // CORS is off by default.
    let r = http(
        &s.addr,
        "GET",
        "/indexes",
        &[("Origin", "http://elsewhere.example")],
        b"",
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    // The page and its files, from the binary.
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().contains("/static/app.js"));
    assert_eq!(s.get("/static/app.js").status, 200);
    assert_eq!(s.get("/static/style.css").status, 200);
}

#[test]
fn cors_when_asked_for_one_origin() {
    let s = Server::start(
        &[("fx", util::fixture_index())],
        &["--cors-origin", "http://notebook.example", "--quiet"],
    );
    let r = http(
        &s.addr,
        "GET",
        "/indexes",
        &[("Origin", "http://notebook.example")],
        b"",
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://notebook.example")
    );
    let r = http(
        &s.addr,
        "OPTIONS",
        "/",
        &[("Origin", "http://notebook.example")],
        b"",
    );
    assert_eq!(r.status, 204);
    let r = http(
        &s.addr,
        "GET",
        "/indexes",
        &[("Origin", "http://other.example")],
        b"",
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert!(
        s.log.lock().unwrap().iter().all(|l| !l.starts_with('{')),
        "--quiet logs nothing"
    );
}

/// A request that keeps a thread busy for a while: the trace of a long text with every span.
fn slow_body() -> Value {
    let index = fx();
    let mut text = String::new();
    for d in 0..40 {
        text.push_str(&docs::text(&index, d).unwrap());
    }
    let text: String = text.chars().take(30_000).collect();
    json!({"text": text, "min_len": 1, "max_count": null, "max_span_density": null,
           "docs_per_span": 20, "bm25": false})
}

#[test]
fn overload_answers_503_with_a_typed_error() {
    let s = Server::start(
        &[("fx", util::fixture_index())],
        &[
            "--concurrency",
            "1",
            "--queue",
            "0",
            "--max-query-tokens",
            "100000",
            "--quiet",
        ],
    );
    let body = slow_body().to_string();
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (addr, body, barrier) = (s.addr.clone(), body.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                http(
                    &addr,
                    "POST",
                    "/v1/fx/trace",
                    &[("Content-Type", "application/json")],
                    body.as_bytes(),
                )
            })
        })
        .collect();
    let replies: Vec<Reply> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let busy: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(
        ok >= 1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        !busy.is_empty(),
        "one thread, no queue, {n} at once: some must be refused"
    );
    assert_eq!(ok + busy.len(), n);
    for r in busy {
        assert_eq!(r.json()["type"], json!("server-overloaded"));
        assert_eq!(r.header("retry-after"), Some("1"));
        r.assert_error(503, "overloaded");
    }
    // Once the work is done, it answers again.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.get("/healthz").status, 200);
    assert!(s
        .get("/metrics")
        .text()
        .contains("familiar_errors_total{type=\"server-overloaded\"}"));
}

#[test]
fn a_request_past_the_time_limit_answers_503_timeout() {
    let s = Server::start(
        &[("fx", util::fixture_index())],
        &[
            "--time-limit",
            "0.001",
            "--max-query-tokens",
            "100000",
            "--quiet",
        ],
    );
    let r = s.post("/v1/fx/trace", &slow_body());
    r.assert_error(503, "timeout");
    assert_eq!(r.json()["type"], json!("timeout"));
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut s = Server::start(&[("fx", util::fixture_index())], &[]);
    assert_eq!(s.get("/healthz").status, 200);
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(s.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(s
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l == "familiar serve: stopped"));
}

#[test]
fn bad_command_lines_are_refused() {
    let dir = util::fixture_index().display().to_string();
    // A port already taken, for Flight SQL: refused before the HTTP server starts.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    // `familiar serve --index a=DIR` and `extra`.
    let serve_a = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["serve".to_string(), "--index".into(), format!("a={dir}")];
        v.extend(extra.iter().map(|e| e.to_string()));
        v
    };
    for (args, want) in [
        (
            vec!["serve".to_string(), "--index".into(), dir.clone()],
            "NAME=DIR",
        ),
        (
            vec!["serve".into(), "--index".into(), format!("../x={dir}")],
            "index name",
        ),
        (
            vec!["serve".into(), "--index".into(), "a=/no/such/index".into()],
            "/no/such/index",
        ),
        (serve_a(&["--index", &format!("a={dir}")]), "twice"),
        (serve_a(&["--time-limit", "0"]), "time-limit"),
        (serve_a(&["--addr", "nonsense"]), "nonsense"),
        (
            serve_a(&["--addr", "127.0.0.1:0", "--flight-sql", "flightless"]),
            "flightless",
        ),
        (
            serve_a(&["--addr", "127.0.0.1:0", "--flight-sql", &taken]),
            &taken,
        ),
    ] {
        let out = util::familiar(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
    }
}

// ---- the web page, in a real browser --------------------------------------------------------

/// A WebDriver session of headless Chromium through chromedriver.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

impl Browser {
    /// Chromium through chromedriver, or `None` (with a message) where they are not installed —
    /// unless FAMILIAR_REQUIRE_BROWSER is set (CI sets it), where their absence fails the test.
    fn start() -> Option<Browser> {
        let find = |names: &[&str]| {
            names
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .or_else(|| {
                    names.iter().find_map(|n| {
                        std::env::var_os("PATH").and_then(|paths| {
                            std::env::split_paths(&paths)
                                .map(|d| d.join(n))
                                .find(|p| p.exists())
                        })
                    })
                })
        };
        let chromium = find(&["/usr/bin/chromium", "chromium", "chromium-browser"]);
        let driver = find(&["/usr/bin/chromedriver", "chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            assert!(
                std::env::var_os("FAMILIAR_REQUIRE_BROWSER").is_none(),
                "FAMILIAR_REQUIRE_BROWSER is set but chromium or chromedriver is missing"
            );
            eprintln!("skipped: the browser test needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut c = std::process::Command::new(driver);
        c.arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied_to_process(c);
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut b = Browser {
            driver: child,
            addr,
            session: String::new(),
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1600"]
            }
        }}});
        let v = b.call("POST", "/session", &caps);
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Some(b)
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let bytes = if method == "GET" {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let r = http(
            &self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            &bytes,
        );
        let v = r.json();
        assert_eq!(r.status, 200, "webdriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), &json!({"url": url}));
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            &json!({"script": script, "args": []}),
        )
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            &json!({"using": "css selector", "value": css}),
        );
        v.as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{e}/clear")), &json!({}));
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            &json!({"text": text}),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{e}/click")), &json!({}));
    }

    /// Waits until `script` returns something truthy, and returns it.
    fn wait_for(&self, script: &str, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script);
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}; error box: {}",
                self.js("return document.getElementById('error').textContent")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                &self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                b"",
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_page_counts_shows_next_tokens_documents_and_traces_in_a_browser() {
    let Some(b) = Browser::start() else { return };
    let s = shared();
    let index = fx();
    let t = index.tokenizer().unwrap();
    b.goto(&format!("http://{}/", s.addr));
    b.wait_for("return document.body.dataset.ready", "the index list");
    let options =
        b.js("return Array.from(document.querySelectorAll('#index option')).map(o => o.value)");
    assert_eq!(options, json!(["fx", "gen"]));
    // Keyboard: type and press Enter in the text field.
    b.type_into("#query", " tian ve\u{E007}");
    let shown = b.wait_for(
        "const r = document.getElementById('docs-box'); return !r.hidden && document.getElementById('count').textContent",
        "the count",
    );
    let ids = t.encode(" tian ve").unwrap();
    let want = ngram::count(&index, &ids).unwrap();
    assert_eq!(shown.as_str().unwrap().replace(',', ""), want.to_string());
    let tokens = b.js(
        "return Array.from(document.querySelectorAll('#tokens .token')).map(e => e.textContent)",
    );
    let want_tokens: Vec<String> = ids.iter().map(|&i| t.id_to_token(i).unwrap()).collect();
    assert_eq!(tokens, json!(want_tokens));
    // The next-token bars: the most frequent first, with their counts.
    let lib = ngram::next_tokens(&index, &ids).unwrap();
    let bars = b.js("return Array.from(document.querySelectorAll('#ntd li')).map(li => [li.querySelector('.label').textContent, li.querySelector('.value').textContent])");
    let bars = bars.as_array().unwrap();
    assert_eq!(bars.len(), lib.next.len().min(15));
    let (top, top_count) = lib.next[0];
    assert_eq!(bars[0][0], json!(t.id_to_token(top).unwrap()));
    assert!(bars[0][1]
        .as_str()
        .unwrap()
        .replace(',', "")
        .starts_with(&top_count.to_string()));
    // Occurrences: ten per page, the hit marked, pages that turn.
    let marks = b.js(
        "return Array.from(document.querySelectorAll('#docs li mark')).map(m => m.textContent)",
    );
    assert_eq!(marks.as_array().unwrap().len() as u64, want.min(10));
    for m in marks.as_array().unwrap() {
        assert_eq!(m, &json!(" tian ve"));
    }
    let info = b.js("return document.getElementById('page-info').textContent");
    assert_eq!(
        info.as_str().unwrap().replace(',', ""),
        format!("1–10 of {want}")
    );
    b.click("#next");
    b.wait_for(
        "return document.getElementById('page-info').textContent.startsWith('11')",
        "the second page",
    );
    let first = ngram::locate(&index, &ids, 10, 1).unwrap().hits[0].doc_id;
    let shown_first = b.js("return document.querySelector('#docs li button').textContent");
    assert_eq!(shown_first, json!(format!("document {first}")));
    // The document view with its metadata.
    b.click("#docs li button");
    b.wait_for(
        "return !document.getElementById('doc-view').hidden",
        "the document",
    );
    let rec = docs::record(&index, first).unwrap();
    let meta = b.js("return document.getElementById('doc-meta').textContent");
    assert!(meta.as_str().unwrap().contains(&rec.external_id), "{meta}");
    let text = b.js("return document.getElementById('doc-text').textContent");
    assert_eq!(text, json!(docs::text(&index, first).unwrap()));
    // Errors in words: an empty query, and the server's own message for a bad setting.
    b.type_into("#query", "\u{E007}");
    let err = b.wait_for(
        "const e = document.getElementById('error'); return !e.hidden && e.textContent",
        "an error",
    );
    assert_eq!(err, json!("Type a text to count."));
    // The trace panel: the spans the attribution endpoint finds, highlighted; a span's documents.
    let doc_text = docs::text(&index, doc_of_at_least(&index, 200)).unwrap();
    let response: String = format!(
        "Zq xv wk. {}",
        doc_text.chars().take(240).collect::<String>()
    );
    b.js(&format!(
        "document.getElementById('trace-input').value = {}; return true",
        json!(response)
    ));
    b.click("#trace-btn");
    b.wait_for(
        "return document.querySelectorAll('#trace-output button.span').length",
        "the spans",
    );
    let want = s
        .post(
            "/fx/attribution",
            &json!({"response": response, "minimumSpanLength": 2,
        "maximumFrequency": 10, "maximumSpanDensity": 0.2, "maximumDocumentsPerSpan": 10,
        "maximumContextLength": 40}),
        )
        .json();
    let spans = want["spans"].as_array().unwrap();
    assert!(!spans.is_empty());
    let marked = b.js("return Array.from(new Set(Array.from(document.querySelectorAll('#trace-output button.span')).map(e => e.dataset.span))).length");
    assert_eq!(marked, json!(spans.len()));
    // The whole output is still there, in order.
    let all = b.js("return document.getElementById('trace-output').textContent");
    assert_eq!(all, json!(response));
    b.click("#trace-output button.span");
    b.wait_for(
        "return !document.getElementById('span-docs-box').hidden",
        "a span's documents",
    );
    let first_span =
        b.js("return Number(document.querySelector('#trace-output button.span').dataset.span)");
    let span = &spans[first_span.as_u64().unwrap() as usize];
    let listed = b.js("return document.querySelectorAll('#span-docs li').length");
    assert_eq!(listed, json!(span["documents"].as_array().unwrap().len()));
    let marks = b.js("return Array.from(document.querySelectorAll('#span-docs li mark')).map(m => m.textContent)");
    assert!(!marks.as_array().unwrap().is_empty());
    for m in marks.as_array().unwrap() {
        assert_eq!(m, &span["text"]);
    }
    b.js("document.getElementById('density').value = '5'; return true");
    b.click("#trace-btn");
    let err = b.wait_for(
        "const e = document.getElementById('error'); return !e.hidden && e.textContent",
        "an error",
    );
    assert!(
        err.as_str().unwrap().contains("maximumSpanDensity"),
        "{err}"
    );
}

// ---- report charts, in the same browser -------------------------------------------------------

/// The reports' SVG charts (`familiar_reports::svg`) laid out with estimated text widths: in
/// Chromium, with its real fonts, every text — long titles and axis labels, long, unbreakable
/// and CJK legend entries, many long category names — lies inside the chart, the legend right of
/// the plot, and no two category names overlap.
#[test]
fn report_charts_hold_their_text_in_a_real_browser() {
    use familiar_reports::svg::{BarChart, LineChart, Series};
    let Some(b) = Browser::start() else { return };
    let dir = util::process_scratch().join("charts");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let series = |name: &str, k: f64| Series {
        name: name.to_string(),
        points: (1..40).map(|i| (i as f64, k / i as f64)).collect(),
        dashed: k > 1.0,
        markers: false,
    };
    let line = LineChart {
        title: "Ranked influence of the top 10 % of documents, factual against reasoning \
                queries, with the power-law fits"
            .into(),
        x_label: "rank of the document among all training documents (1 = the most influential)"
            .into(),
        y_label: "influence relative to the most influential document of the query (s_r / s_1)"
            .into(),
        log_x: true,
        log_y: true,
        series: vec![
            series("factual: mean relative influence of the top documents", 1.0),
            series("reasoning: power-law fit, α = 0.53", 2.0),
            series(
                "Unbreakablelegendentrythatnolinebreakcansplitatallinanywayever",
                0.5,
            ),
            series("事实问题：平均相对影响（前十名文档）", 0.7),
            series("s", 0.3),
        ],
    };
    let bars = BarChart {
        title: "Mean Spearman correlation of the influence of queries of one task".into(),
        y_label: "mean Spearman correlation".into(),
        categories: [
            "arithmetic word problems",
            "capital cities of countries",
            "slopes of linear functions",
            "x",
            "chemical symbols of elements",
            "first names of authors",
            "mathematical constants",
            "rivers",
            "Extraordinarilylongcategorynamewithoutspaces",
            "units",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect(),
        series: vec![
            ("factual queries of this task".into(), vec![0.5; 10]),
            (
                "reasoning queries of this task, intermediate answers included".into(),
                vec![-0.2; 10],
            ),
        ],
    };
    for (name, svg) in [("line.svg", line.to_svg()), ("bars.svg", bars.to_svg())] {
        let path = dir.join(name);
        std::fs::write(&path, &svg).unwrap();
        b.goto(&format!("file://{}", path.display()));
        let v = b.js("const svg = document.documentElement; \
             const box = svg.getBoundingClientRect(); \
             const plot = svg.querySelector('rect[stroke]').getBoundingClientRect(); \
             const bad = []; const cats = []; \
             for (const t of svg.querySelectorAll('text')) { \
               const r = t.getBoundingClientRect(); \
               if (r.width === 0) continue; \
               if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || \
                   r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5) \
                 bad.push('outside: ' + t.textContent); \
               if (t.querySelector('tspan') && r.top < plot.bottom) { \
                 if (r.left < plot.right) bad.push('legend over the plot: ' + t.textContent); \
               } \
               if (t.querySelector('tspan') && r.top >= plot.bottom) cats.push(r); \
             } \
             cats.sort((a, b) => a.left - b.left); \
             for (let i = 1; i < cats.length; i++) \
               if (cats[i].left < cats[i - 1].right - 0.5) bad.push('categories overlap'); \
             return {bad: bad, texts: svg.querySelectorAll('text').length, \
                     width: box.width, cats: cats.length};");
        assert_eq!(v["bad"], json!([]), "{name}: {v}\n{svg}");
        assert!(v["texts"].as_u64().unwrap() > 5, "{name}: {v}");
        if name == "bars.svg" {
            assert_eq!(v["cats"], json!(10), "{v}");
        }
    }
}

/// A report page's quoted corpus text in Chromium: shown as text (markup in it is not
/// interpreted), the answer, intermediate answers and influential tokens marked (a token inside
/// the answer within its mark), nothing else.
#[test]
fn report_excerpts_show_corpus_text_with_the_answers_marked_in_a_real_browser() {
    use familiar_reports::attribution::Piece;
    let Some(b) = Browser::start() else { return };
    let piece = |text: &str, mark: Option<&'static str>, influential: bool| Piece {
        text: text.into(),
        mark,
        influential,
    };
    let pieces = vec![
        piece("…", None, false),
        piece("a <b>bold</b> & `odd` ⟦text⟧ ⦃x⦄ before ", None, false),
        piece("Zel", Some("answer"), true),
        piece("xir", Some("answer"), false),
        piece(" then\n", None, false),
        piece("Exoexo", Some("intermediate"), false),
        piece(" and ", None, false),
        piece("tian", None, true),
    ];
    let md = format!(
        "# Attribution report\n\n### `q1` (reasoning, sum)\n\n1. document 7\n\n> {}\n",
        familiar_reports::attribution::quote(&pieces)
    );
    let html = familiar_reports::html::page("Attribution report", &md, &[]);
    let dir = util::process_scratch().join("report-page");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.html");
    std::fs::write(&path, &html).unwrap();
    b.goto(&format!("file://{}", path.display()));
    let v = b.js(
        "const q = document.querySelector('blockquote'); \
         return {text: q.textContent, bold: q.querySelectorAll('b').length, \
                 marks: Array.from(q.querySelectorAll('mark')).map(m => [m.className, m.textContent]), \
                 h3: document.querySelector('h3').textContent};",
    );
    assert_eq!(
        v["text"],
        json!("…a <b>bold</b> & `odd` [text] {x} before Zelxir then Exoexo and tian"),
        "{v}\n{html}"
    );
    assert_eq!(v["bold"], json!(0));
    assert_eq!(
        v["marks"],
        json!([
            ["answer", "Zel"],
            ["influence", "Zel"],
            ["answer", "xir"],
            ["intermediate", "Exoexo"],
            ["influence", "tian"]
        ])
    );
    assert_eq!(v["h3"], json!("q1 (reasoning, sum)"));
}

// ---- SQL --------------------------------------------------------------------------------------

/// A directory with one Parquet table, `scores(concept, accuracy)`.
fn tables_dir(name: &str) -> PathBuf {
    use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
    let dir = util::process_scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let batch = RecordBatch::try_from_iter([
        (
            "concept",
            Arc::new(StringArray::from(vec!["tian", "ve", "nisi"])) as ArrayRef,
        ),
        (
            "accuracy",
            Arc::new(Float64Array::from(vec![0.25, 0.75, 0.5])) as ArrayRef,
        ),
    ])
    .unwrap();
    let file = std::fs::File::create(dir.join("scores.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    dir
}

/// Statements that write or read outside the tables (a file `outside`, a table copied into
/// `tables`, the session's settings): every SQL front end refuses them.
fn writes(outside: &Path, tables: &Path) -> Vec<String> {
    vec![
        format!("COPY (SELECT 1) TO '{}'", outside.display()),
        format!("COPY scores TO '{}'", tables.join("copy.parquet").display()),
        "INSERT INTO scores VALUES ('x', 1.0)".to_string(),
        "CREATE EXTERNAL TABLE pw STORED AS CSV LOCATION '/etc/passwd'".to_string(),
        "DROP TABLE scores".to_string(),
        "SET datafusion.runtime.memory_limit = '100G'".to_string(),
    ]
}

/// A server of the sharded fixture index and the tables of `tables_dir(name)`, five rows per
/// statement, with `extra` options.
fn sql_server(name: &str, extra: &[&str]) -> (PathBuf, Server) {
    let tables = tables_dir(name);
    let t = tables.display().to_string();
    let mut args = vec!["--tables", t.as_str(), "--sql-rows", "5", "--quiet"];
    args.extend_from_slice(extra);
    let s = Server::start(&[("fx", util::fixture_index_sharded())], &args);
    (tables, s)
}

#[test]
fn sql_reads_the_documents_and_the_tables_within_limits_and_refuses_writes() {
    let (tables, s) = sql_server("serve-tables", &[]);
    let index = fx();
    let sql = |q: &str| s.post("/v1/sql", &json!({ "query": q }));
    let r = sql("SELECT count(*) AS n FROM fx_documents");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["statements"][0]["rows"][0]["n"],
        json!(index.documents())
    );
    let by_source =
        sql("SELECT source, count(*) AS n FROM fx_documents GROUP BY source ORDER BY source")
            .json();
    let mut want = std::collections::BTreeMap::new();
    for d in 0..index.documents() {
        *want
            .entry(docs::record(&index, d).unwrap().source)
            .or_insert(0u64) += 1;
    }
    let got: Vec<(Value, u64)> = by_source["statements"][0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["source"].clone(), r["n"].as_u64().unwrap()))
        .collect();
    let want: Vec<(Value, u64)> = want.into_iter().map(|(k, v)| (json!(k), v)).collect();
    assert_eq!(got, want);
    let scores = sql("SELECT concept, accuracy FROM scores ORDER BY accuracy DESC").json();
    let st = &scores["statements"][0];
    assert_eq!(
        st["rows"],
        json!([
            {"concept": "ve", "accuracy": 0.75},
            {"concept": "nisi", "accuracy": 0.5},
            {"concept": "tian", "accuracy": 0.25}
        ])
    );
    assert_eq!(st["columns"][0]["name"], json!("concept"));
    assert_eq!(st["truncated"], json!(false));
    // The row limit: five rows of an endless result, and the answer says so.
    let many = sql("SELECT v FROM range(100000000000) r(v)").json();
    assert_eq!(many["statements"][0]["rows"].as_array().unwrap().len(), 5);
    assert_eq!(many["statements"][0]["truncated"], json!(true));
    // Arrow IPC of the last statement.
    let r = http(
        &s.addr,
        "POST",
        "/v1/sql",
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/vnd.apache.arrow.stream"),
        ],
        json!({"query": "SELECT accuracy FROM scores ORDER BY accuracy"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let batches: Vec<_> = arrow_ipc::reader::StreamReader::try_new(&r.body[..], None)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    let acc: Vec<f64> = batches
        .iter()
        .flat_map(|b| {
            util::col::<arrow_array::Float64Array>(b, "accuracy")
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(acc, vec![0.25, 0.5, 0.75]);
    // Writes and files outside the tables are refused, and nothing is written.
    let outside = util::process_scratch().join("serve-sql-outside.csv");
    let _ = std::fs::remove_file(&outside);
    for q in writes(&outside, &tables) {
        sql(&q).assert_error(403, &q);
    }
    assert!(!outside.exists());
    assert_eq!(util::entries(&tables), vec!["scores.parquet".to_string()]);
    for q in [
        "SELECT * FROM '/etc/passwd'",
        "SELEKT 1",
        "SELECT * FROM no_such_table",
    ] {
        let r = sql(q);
        assert!((400..500).contains(&r.status), "{q}: {}", r.text());
        r.assert_error(r.status, q);
    }
    s.post("/v1/sql", &json!({})).assert_error(400, "no query");
    // Still answering.
    assert_eq!(
        sql("SELECT 1 AS one").json()["statements"][0]["rows"][0]["one"],
        json!(1)
    );
}

/// Arrow Flight SQL (`--flight-sql`): the same read-only session as `POST /v1/sql` for Flight
/// SQL clients — the same rows, the same row limit (said in the `FlightInfo`), refusals as
/// `PERMISSION_DENIED` with nothing written, bad SQL as `INVALID_ARGUMENT`, a result fetched
/// once, the catalog listed, unimplemented commands refused in words.
#[test]
fn flight_sql_answers_as_the_http_endpoint_and_refuses_writes() {
    use arrow_array::{Array, RecordBatch, StringArray};
    use arrow_flight::flight_service_client::FlightServiceClient;
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use arrow_flight::sql::{
        CommandGetTables, CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
    };
    use arrow_flight::{FlightDescriptor, FlightInfo, Ticket};
    use futures::TryStreamExt;
    use prost::Message;

    let (tables, s) = sql_server("serve-flight-tables", &["--flight-sql", "127.0.0.1:0"]);
    let flight = s
        .flight
        .clone()
        .expect("the server printed its Flight SQL address");
    let index = fx();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{flight}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = FlightSqlServiceClient::new(channel.clone());
        let mut raw = FlightServiceClient::new(channel);
        // A string column of all batches.
        fn strings(batches: &[RecordBatch], name: &str) -> Vec<String> {
            batches
                .iter()
                .flat_map(|b| {
                    let c = util::col::<StringArray>(b, name);
                    (0..c.len())
                        .map(|i| c.value(i).to_string())
                        .collect::<Vec<_>>()
                })
                .collect()
        }
        async fn fetch(
            client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
            info: &FlightInfo,
        ) -> Vec<RecordBatch> {
            let mut out = Vec::new();
            for e in &info.endpoint {
                let ticket = e.ticket.clone().unwrap();
                let stream = client.do_get(ticket).await.unwrap();
                out.extend(stream.try_collect::<Vec<_>>().await.unwrap());
            }
            out
        }
        let mut run = async |q: &str| -> (FlightInfo, Vec<RecordBatch>) {
            let info = client
                .execute(q.to_string(), None)
                .await
                .unwrap_or_else(|e| panic!("{q}: {e}"));
            let batches = fetch(&mut client, &info).await;
            (info, batches)
        };
        // The documents table: as many rows as documents, as over HTTP.
        let (info, b) = run("SELECT count(*) AS n FROM fx_documents").await;
        assert_eq!(info.total_records, 1);
        let n = b[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(n as u64, index.documents());
        // A table under --tables, its schema in the FlightInfo and the rows in order.
        let (info, b) = run("SELECT concept, accuracy FROM scores ORDER BY accuracy DESC").await;
        let schema = info.clone().try_decode_schema().unwrap();
        assert_eq!(
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>(),
            ["concept", "accuracy"]
        );
        assert_eq!(info.total_records, 3);
        assert!(info.app_metadata.is_empty());
        let concepts = strings(&b, "concept");
        assert_eq!(concepts, ["ve", "nisi", "tian"]);
        let http = s
            .post(
                "/v1/sql",
                &json!({"query": "SELECT concept, accuracy FROM scores ORDER BY accuracy DESC"}),
            )
            .json();
        let http_concepts: Vec<&str> = http["statements"][0]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["concept"].as_str().unwrap())
            .collect();
        assert_eq!(concepts, http_concepts);
        // The row limit: five rows of an endless result, and the FlightInfo says so.
        let (info, b) = run("SELECT v FROM range(100000000000) r(v)").await;
        assert_eq!(b.iter().map(RecordBatch::num_rows).sum::<usize>(), 5);
        assert_eq!(info.total_records, 5);
        assert_eq!(&info.app_metadata[..], br#"{"truncated":true}"#);

        // Errors, with the gRPC code and the session's message.
        let descriptor = |q: &str| {
            FlightDescriptor::new_cmd(
                CommandStatementQuery {
                    query: q.to_string(),
                    transaction_id: None,
                }
                .as_any()
                .encode_to_vec(),
            )
        };
        let outside = util::process_scratch().join("serve-flight-outside.csv");
        let _ = std::fs::remove_file(&outside);
        for q in writes(&outside, &tables) {
            let e = raw.get_flight_info(descriptor(&q)).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{q}: {e:?}");
            assert!(!e.message().is_empty(), "{q}");
        }
        assert!(!outside.exists());
        assert_eq!(util::entries(&tables), vec!["scores.parquet".to_string()]);
        for q in ["SELEKT 1", "SELECT * FROM no_such_table", ""] {
            let e = raw.get_flight_info(descriptor(q)).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{q:?}: {e:?}");
            assert!(!e.message().is_empty(), "{q:?}");
        }
        // A result is fetched once; a ticket that is no handle is refused.
        let info = client
            .execute("SELECT 1 AS one".into(), None)
            .await
            .unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        assert_eq!(fetch(&mut client, &info).await[0].num_rows(), 1);
        let e = raw.do_get(ticket).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        let bad = TicketStatementQuery {
            statement_handle: vec![1, 2, 3].into(),
        };
        let e = raw
            .do_get(Ticket::new(bad.as_any().encode_to_vec()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let e = raw
            .do_get(Ticket::new(b"not a command".to_vec()))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e.code(),
                tonic::Code::InvalidArgument | tonic::Code::Unimplemented
            ),
            "{e:?}"
        );
        // Updates and prepared statements are not offered.
        let e = client
            .execute_update("INSERT INTO scores VALUES ('x', 1.0)".into(), None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
        assert_eq!(util::entries(&tables), vec!["scores.parquet".to_string()]);
        let e = client.prepare("SELECT 1".into(), None).await.unwrap_err();
        assert!(e.to_string().contains("prepared statements"), "{e}");

        // What is there: the tables (with their schemas), the catalog, the server.
        let info = client
            .get_tables(CommandGetTables {
                include_schema: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let b = fetch(&mut client, &info).await;
        let mut names = strings(&b, "table_name");
        names.sort();
        assert_eq!(names, ["fx_documents", "scores"]);
        let info = client.get_catalogs().await.unwrap();
        let b = fetch(&mut client, &info).await;
        assert_eq!(
            util::col::<StringArray>(&b[0], "catalog_name").value(0),
            "datafusion"
        );
        let info = client
            .get_sql_info(vec![
                SqlInfo::FlightSqlServerName,
                SqlInfo::FlightSqlServerReadOnly,
            ])
            .await
            .unwrap();
        let b = fetch(&mut client, &info).await;
        let ids = b[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::UInt32Array>()
            .unwrap();
        let mut ids: Vec<u32> = ids.values().to_vec();
        ids.sort();
        assert_eq!(
            ids,
            [
                SqlInfo::FlightSqlServerName as u32,
                SqlInfo::FlightSqlServerReadOnly as u32
            ]
        );
    });
    // The HTTP side still answers.
    assert_eq!(s.get("/healthz").status, 200);
}
