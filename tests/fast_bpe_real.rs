//! The fast byte-level BPE encoder against `tokenizers` on real tokenizers (GPT-2, Pythia) and
//! real documents (Wikipedia, Gutenberg, code, StackExchange, ...), from `../shared/data`.
//! Skips with a message when that directory is absent.
//!
//! Scale with `FAMILIAR_FAST_BPE_TEXTS` (texts per shard, default 300) and
//! `FAMILIAR_FAST_BPE_WINDOW` (bytes per text, default 2000; 0 = whole documents). The speed
//! measurement is `#[ignore]`d: `cargo test --release --test fast_bpe_real -- --ignored --nocapture`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use familiar::fast_bpe::FastBpe;
use rayon::prelude::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data");

const SHARDS: &[&str] = &[
    "enwiki-0000",
    "enwiki-0006",
    "enwiki-2018-0000",
    "gutenberg-0000",
    "code-0000",
    "stackexchange-0000",
    "speeches-0000",
    "tinystories-0000",
];

fn data_dir() -> Option<PathBuf> {
    let dir = Path::new(DATA);
    if dir.join("corpus").is_dir() && dir.join("tokenizers").is_dir() {
        Some(dir.to_path_buf())
    } else {
        println!("skipping: {DATA} is absent");
        None
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Documents `(id, text)` of a shard, reading at most `max_docs` lines.
fn read_docs(dir: &Path, shard: &str, max_docs: usize) -> Vec<(String, String)> {
    let path = dir.join("corpus").join(format!("{shard}.jsonl.zst"));
    let file = std::fs::File::open(&path).expect("open shard");
    let reader = std::io::BufReader::new(zstd::Decoder::new(file).expect("zstd"));
    let mut docs = Vec::new();
    for line in reader.lines().take(max_docs) {
        let line = line.expect("read line");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json line");
        let id = v["id"].as_str().unwrap_or("?").to_string();
        let text = v["text"].as_str().expect("text").to_string();
        docs.push((id, text));
    }
    docs
}

/// Up to `budget` texts of at most `window` bytes (cut at char boundaries), spread over the
/// documents and over each long document.
fn sample_texts(dir: &Path, shard: &str, budget: usize, window: usize) -> Vec<(String, String)> {
    let docs = read_docs(dir, shard, budget);
    let per_doc = budget.div_ceil(docs.len().max(1)).max(1);
    let mut out = Vec::new();
    for (id, text) in docs {
        if window == 0 || text.len() <= window {
            out.push((id, text));
            continue;
        }
        let pieces = per_doc.min(text.len() / window).max(1);
        for k in 0..pieces {
            let mut a = (text.len() - window) * k / (pieces - 1).max(1);
            while !text.is_char_boundary(a) {
                a -= 1;
            }
            let mut b = (a + window).min(text.len());
            while !text.is_char_boundary(b) {
                b -= 1;
            }
            out.push((format!("{id}@{a}"), text[a..b].to_string()));
        }
        if out.len() >= budget {
            break;
        }
    }
    out.truncate(budget);
    out
}

fn load(dir: &Path, name: &str) -> (Vec<u8>, tokenizers::Tokenizer, FastBpe) {
    let json = std::fs::read(dir.join("tokenizers").join(name)).expect("read tokenizer");
    let hf = tokenizers::Tokenizer::from_bytes(&json).expect("tokenizers loads it");
    let fast = FastBpe::try_from_json(&json).unwrap_or_else(|e| panic!("{name}: unsupported: {e}"));
    assert!(
        fast.agrees_with(&hf),
        "{name}: the fast encoder disagrees with tokenizers"
    );
    (json, hf, fast)
}

fn report_mismatch(hf: &tokenizers::Tokenizer, id: &str, text: &str, got: &[u32]) -> String {
    let enc = hf.encode_fast(text, false).expect("hf encodes");
    let want = enc.get_ids();
    let k = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let byte = enc.get_offsets().get(k).map_or(text.len(), |o| o.0);
    let mut a = byte.saturating_sub(60);
    while !text.is_char_boundary(a) {
        a -= 1;
    }
    let mut b = (byte + 60).min(text.len());
    while !text.is_char_boundary(b) {
        b += 1;
    }
    let lo = k.saturating_sub(3);
    format!(
        "document {id}: first difference at token {k} (byte {byte}), context {:?}\n  tokenizers: {:?}\n  fast:       {:?}",
        &text[a..b],
        &want[lo..(k + 4).min(want.len())],
        &got[lo.min(got.len())..(k + 4).min(got.len())],
    )
}

#[test]
fn fast_bpe_matches_tokenizers_on_real_documents() {
    let Some(dir) = data_dir() else { return };
    let budget = env_usize("FAMILIAR_FAST_BPE_TEXTS", 300);
    let window = env_usize("FAMILIAR_FAST_BPE_WINDOW", 2000);
    let mut texts = Vec::new();
    for shard in SHARDS {
        if dir
            .join("corpus")
            .join(format!("{shard}.jsonl.zst"))
            .is_file()
        {
            texts.extend(sample_texts(&dir, shard, budget, window));
        }
    }
    assert!(!texts.is_empty(), "no documents read");
    for name in [
        "gpt2.json",
        "pythia-gpt-neox-20b.json",
        "bpe-minipile-4096.json",
    ] {
        let started = Instant::now();
        let (json, hf, fast) = load(&dir, name);
        let wrapper =
            familiar::tokenizer::Tokenizer::from_bytes(&json, Path::new(name)).expect("wrapper");
        assert!(
            wrapper.uses_fast_path(),
            "{name}: the wrapper does not use the fast path"
        );
        // Each text: (tokens, whether the fast path refused it); panics on the first difference.
        let results: Vec<(usize, bool)> = texts
            .par_iter()
            .map(|(id, text)| {
                let want = hf.encode_fast(text.as_str(), false).expect("hf encodes");
                let mut got = Vec::new();
                let refused = !fast.encode(text, &mut got);
                if refused {
                    assert!(got.is_empty(), "{name}: a refused text left ids behind");
                } else if got != want.get_ids() {
                    panic!("{name}: {}", report_mismatch(&hf, id, text, &got));
                }
                // The wrapper, fast or falling back, gives the same ids.
                assert_eq!(
                    wrapper.encode(text).expect("wrapper encodes"),
                    want.get_ids(),
                    "{name}: wrapper, document {id}"
                );
                (want.len(), refused)
            })
            .collect();
        let tokens: usize = results.iter().map(|r| r.0).sum();
        let fallbacks = results.iter().filter(|r| r.1).count();
        println!(
            "{name}: {} texts, {tokens} tokens identical; {fallbacks} texts fell back ({:.1} s)",
            texts.len(),
            started.elapsed().as_secs_f64()
        );
        assert!(
            fallbacks * 20 <= texts.len(),
            "{name}: {fallbacks} of {} texts fell back",
            texts.len()
        );
    }
}

/// Single-threaded speed of `tokenizers` and of the fast encoder on one Wikipedia shard.
#[test]
#[ignore = "speed measurement; run with --release --ignored --nocapture"]
fn fast_bpe_throughput() {
    let Some(dir) = data_dir() else { return };
    let shard = std::env::var("FAMILIAR_FAST_BPE_SHARD").unwrap_or("enwiki-0006".into());
    let docs = read_docs(&dir, &shard, usize::MAX);
    let bytes: usize = docs.iter().map(|d| d.1.len()).sum();
    for name in ["gpt2.json", "pythia-gpt-neox-20b.json"] {
        let (json, hf, fast) = load(&dir, name);
        let t = Instant::now();
        let mut hf_tokens = 0usize;
        for (_, text) in &docs {
            hf_tokens += hf.encode_fast(text.as_str(), false).expect("hf").len();
        }
        let hf_s = t.elapsed().as_secs_f64();
        // The fast encoder on a fresh thread, so that its word cache starts cold.
        let (fast_tokens, fast_s, fallbacks, warm_s) = std::thread::scope(|s| {
            s.spawn(|| {
                let t = Instant::now();
                let (mut n, mut fallbacks) = (0usize, 0usize);
                let mut out = Vec::new();
                for (_, text) in &docs {
                    out.clear();
                    if !fast.encode(text, &mut out) {
                        fallbacks += 1;
                        out = hf
                            .encode_fast(text.as_str(), false)
                            .expect("hf")
                            .get_ids()
                            .to_vec();
                    }
                    n += out.len();
                }
                let cold = t.elapsed().as_secs_f64();
                let t = Instant::now();
                for (_, text) in &docs {
                    out.clear();
                    fast.encode(text, &mut out);
                }
                (n, cold, fallbacks, t.elapsed().as_secs_f64())
            })
            .join()
            .expect("thread")
        });
        assert_eq!(fast_tokens, hf_tokens, "{name}: token counts differ");
        let wrapper =
            familiar::tokenizer::Tokenizer::from_bytes(&json, Path::new(name)).expect("wrapper");
        let (wrap_s, wrap_tokens) = std::thread::scope(|s| {
            s.spawn(|| {
                let t = Instant::now();
                let n: usize = docs
                    .iter()
                    .map(|(_, text)| wrapper.encode(text).expect("encode").len())
                    .sum();
                (t.elapsed().as_secs_f64(), n)
            })
            .join()
            .expect("thread")
        });
        assert_eq!(wrap_tokens, hf_tokens);
        let m = |tokens: usize, s: f64| tokens as f64 / s / 1e6;
        println!(
            "{name} on {shard}: {} docs, {:.1} MB, {hf_tokens} tokens, {fallbacks} fell back\n  \
             tokenizers {:.2} M tokens/s | fast cold cache {:.2} M tokens/s, warm {:.2} M tokens/s | \
             Tokenizer::encode {:.2} M tokens/s",
            docs.len(),
            bytes as f64 / 1e6,
            m(hf_tokens, hf_s),
            m(fast_tokens, fast_s),
            m(fast_tokens, warm_s),
            m(wrap_tokens, wrap_s),
        );
    }
}
