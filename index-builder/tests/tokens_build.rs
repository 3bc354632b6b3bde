//! Building from token ids, for both widths.

use familiar_index_builder::build::build_from_tokens;
use familiar_index_builder::fixtures::word_level_tokenizer;

#[test]
fn token_builds_open_and_count() {
    for vocab in [50u32, 70_000] {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("tok.json");
        std::fs::write(&tok, word_level_tokenizer(vocab)).unwrap();
        let docs = vec![
            vec![1, 2, 3, 1, 2],
            vec![],
            vec![2, 3, vocab - 1],
            vec![1, 2],
        ];
        let out = dir.path().join("idx");
        let r = build_from_tokens(&tok, &out, docs, 7, 1).unwrap();
        assert_eq!(r.documents, 4);
        assert_eq!(r.tokens, 14);
        let index = familiar::index::Index::open(&out).unwrap();
        assert!(index.shards().len() >= 2);
        assert_eq!(index.tokenizer().unwrap().decode(&[1, 2]).unwrap(), "t1 t2");
    }
}
