#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seed inputs: the repository's fixtures and fuzz/seeds/<target>/.
# Safe to re-run: existing corpus files are kept, seeds are overwritten with the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=fuzz/corpus
mkdir -p "$corpus"/{header,token_file,manifest,corpus_line,tokenizer_json}

# Array files of the golden index (all three kinds, u16 tokens, small bit-packed arrays).
for f in fixtures/golden-v1/shard-*/*.bin; do
  cp "$f" "$corpus/header/$(echo "${f#fixtures/golden-v1/}" | tr / _)"
done
for f in fixtures/golden-v1/shard-*/tokens.bin; do
  cp "$f" "$corpus/token_file/$(echo "${f#fixtures/golden-v1/}" | tr / _)"
done

# Every manifest kind: index manifest, build plan, shard manifests.
for f in fixtures/golden-v1/manifest.json fixtures/golden-v1/build.json fixtures/golden-v1/shard-*/manifest.json; do
  cp "$f" "$corpus/manifest/$(echo "${f#fixtures/golden-v1/}" | tr / _)"
done

# One JSONL record per file, from the golden corpus.
n=0
while IFS= read -r line && [ "$n" -lt 16 ]; do
  printf '%s' "$line" > "$corpus/corpus_line/golden-$n.jsonl"
  n=$((n + 1))
done < fixtures/golden-v1-source.jsonl

# Hand-written seeds: small tokenizers of every model type, odd JSONL records.
for target in tokenizer_json corpus_line; do
  cp fuzz/seeds/"$target"/* "$corpus/$target/"
done
# fixtures/tokenizer.json (125 KB) is left out on purpose: libFuzzer sizes inputs after the
# largest seed, and mutating a byte-level BPE that large mostly exercises JSON syntax errors.
# Add it by hand for a run focused on real-world tokenizers:
#   cp fixtures/tokenizer.json fuzz/corpus/tokenizer_json/ && cargo fuzz run tokenizer_json -- -max_len=200000

echo "seeded: $(for d in "$corpus"/*/; do printf '%s=%s ' "$(basename "$d")" "$(ls "$d" | wc -l)"; done)"
