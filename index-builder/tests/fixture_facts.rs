//! The planted facts of the fixture world keep their promise: each is stated in exactly one
//! document, whose answer is spelled with a last token no other document has; the queries ask for
//! every fact and for sums the corpus never states.

#![allow(clippy::unwrap_used)]

use familiar_index_builder::fixtures::{
    attribution_queries, count_phrase, generate_with_tokenizer, FixtureSpec,
};

#[test]
fn facts_are_stated_once_with_answer_tokens_of_their_own() {
    let spec = FixtureSpec::default();
    let (g, json) = generate_with_tokenizer(&spec).unwrap();
    let tok: tokenizers::Tokenizer = json.parse().unwrap();
    let texts: Vec<&str> = g
        .values
        .iter()
        .map(|v| v["text"].as_str().unwrap())
        .collect();
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tok.encode(*t, false).unwrap().get_ids().to_vec())
        .collect();
    assert_eq!(g.facts.len(), 32);
    let mut docs = std::collections::HashSet::new();
    for f in &g.facts {
        assert!(docs.insert(f.document), "one fact per document");
        let d = f.document as usize;
        for (i, t) in texts.iter().enumerate() {
            let sentences = t.matches(f.sentence.as_str()).count();
            let objects = count_phrase(t, &f.object);
            if i == d {
                assert_eq!((sentences, objects), (1, 1), "{}", f.sentence);
            } else {
                assert_eq!((sentences, objects), (0, 0), "{} in document {i}", f.object);
            }
        }
        let spelled = tok.encode(format!(" {}", f.object), false).unwrap();
        let last = *spelled.get_ids().last().unwrap();
        assert_eq!(spelled.get_ids().len(), 2);
        let holders: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].contains(&last)).collect();
        assert_eq!(holders, vec![d], "last token of {}", f.object);
    }
    // Planted phrases keep their exact counts.
    for p in &g.planted {
        let n: u64 = texts.iter().map(|t| count_phrase(t, &p.text)).sum();
        assert_eq!(n, p.occurrences, "{}", p.text);
    }
    // Queries: one per fact with its object as the answer; reasoning sums never stated.
    let q = attribution_queries(&spec, &g.facts, &texts);
    let lines: Vec<serde_json::Value> = q
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 32 + 2 * spec.reasoning_queries);
    for (f, l) in g.facts.iter().zip(&lines) {
        assert_eq!(l["answer"], f.object.as_str());
        assert!(f.sentence.starts_with(l["prompt"].as_str().unwrap()));
    }
    for l in lines.iter().filter(|l| l["kind"] == "reasoning") {
        let prompt = l["prompt"].as_str().unwrap();
        let first: Vec<&str> = prompt.split(' ').take(4).collect();
        let (a, b): (u64, u64) = (first[0].parse().unwrap(), first[2].parse().unwrap());
        assert!(!texts
            .iter()
            .any(|t| t.contains(&format!("{a} plus {b} is"))));
        let want = if l["task"] == "addition" {
            a + b
        } else {
            let d: u64 = prompt
                .split(' ')
                .nth(4)
                .unwrap()
                .trim_end_matches(':')
                .parse()
                .unwrap();
            assert_eq!(l["intermediate"][0], (a + b).to_string());
            a + b + d
        };
        assert_eq!(l["answer"], want.to_string());
    }
}

#[test]
fn priming_samples_state_new_subjects_with_keywords_of_every_frequency() {
    use familiar_index_builder::fixtures::{priming_inputs, PRIMING_KEYWORD_RANKS, RELATIONS};
    let spec = FixtureSpec::default();
    let (g, _) = generate_with_tokenizer(&spec).unwrap();
    let texts: Vec<&str> = g
        .values
        .iter()
        .map(|v| v["text"].as_str().unwrap())
        .collect();
    let (samples, themes) = priming_inputs(&spec, &g.facts, &texts);
    let themes: Vec<serde_json::Value> = themes
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(themes.len(), RELATIONS.len());
    for t in &themes {
        let prefixes = t["prefixes"].as_array().unwrap();
        assert_eq!(prefixes.len(), spec.facts_per_relation);
        // Every prefix is the start of its fact's sentence.
        for p in prefixes {
            let p = p.as_str().unwrap();
            assert!(g
                .facts
                .iter()
                .any(|f| f.relation == t["theme"] && f.sentence.starts_with(p)));
        }
    }
    let samples: Vec<serde_json::Value> = samples
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), RELATIONS.len() * PRIMING_KEYWORD_RANKS.len());
    // Keyword counts in the corpus fall with their rank: the commonest word first.
    let count = |w: &str| -> u64 { texts.iter().map(|t| count_phrase(t, w)).sum() };
    let per_relation = &samples[..PRIMING_KEYWORD_RANKS.len()];
    let counts: Vec<u64> = per_relation
        .iter()
        .map(|s| count(s["keyword"].as_str().unwrap()))
        .collect();
    assert!(counts.windows(2).all(|w| w[0] > w[1]), "{counts:?}");
    assert!(
        counts[0] > 10_000 && *counts.last().unwrap() < 20,
        "{counts:?}"
    );
    for s in &samples {
        let text = s["text"].as_str().unwrap();
        let keyword = s["keyword"].as_str().unwrap();
        assert!(text.ends_with(&format!(" {keyword}.")), "{text}");
        // Stated once: its own prefix is the whole statement before it.
        assert_eq!(count_phrase(text, keyword), 1, "{text}");
        assert!(
            !text.to_lowercase().starts_with(&format!("{keyword} ")),
            "{text}"
        );
        // The subject is new: nowhere in the corpus.
        let subject = text
            .split_whitespace()
            .find(|w| w.contains(['c', 'j', 'y']) && w.chars().next().unwrap().is_uppercase())
            .unwrap();
        assert!(texts.iter().all(|t| !t.contains(subject)), "{subject}");
    }
}
