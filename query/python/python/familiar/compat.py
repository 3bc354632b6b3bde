"""infini-gram's engine interface on a familiar index: scripts written for
``infini_gram.engine.InfiniGramEngine`` run on a familiar index by changing one import::

    from familiar.compat import InfiniGramEngine
    engine = InfiniGramEngine(index_dir="my-index", eos_token_id=50256)
    engine.count(input_ids=[464, 3797])          # {'count': ..., 'approx': False}

Arguments and answers keep infini-gram's names and shapes (``input_ids``, ``prompt_ids``,
``cont_id``, ``cnf``; ``count``, ``approx``, ``prompt_cnt``, ``cont_cnt``, ``prob``,
``result_by_token_id``, ``suffix_len``, ``segment_by_shard``, ``doc_ix``, ``doc_len``,
``disp_len``, ``token_ids``, ``metadata``, …), and bad arguments give ``{'error': ...}`` as
infini-gram's do. Differences (answers checked against infini-gram's own in
``query/python/tests/test_compat.py``):

- Exact where infini-gram samples: ``ntd`` / ``infgram_ntd`` count every continuation
  (``approx`` False whatever ``max_support``); ``count_cnf`` / ``find_cnf`` apply infini-gram's
  proximity rule (clauses within ``max_diff_tokens`` of the rarest clause's occurrence, inside one
  document) to every occurrence, never a sample (``max_clause_freq`` is accepted and ignored).
  familiar's own ``Index.cnf`` is the document-level CNF (every clause anywhere in the document).
- Document boundaries: as infini-gram does, a prompt at the end of a document is followed by
  ``eos_token_id`` in ``ntd``, and the empty prompt's distribution counts one ``eos_token_id`` per
  document.
- Positions: ``segment_by_shard`` are ranges of familiar's suffix arrays, ``ptr`` a token position
  in a shard (not a byte offset in infini-gram's files); they are valid for this engine's
  ``get_doc_by_rank`` / ``get_doc_by_ptr`` and the same across runs, but differ from infini-gram's
  numbers for the same corpus.
- ``search_docs`` lists the first ``maxnum`` occurrences (shards in order, suffix-array order)
  instead of a random sample; ``metadata`` is the documents table's row as JSON.
- ``attribute`` gives familiar's maximal spans of at least ``min_len`` tokens occurring at most
  ``max_cnt`` times (the same spans as infini-gram's when ``delim_ids`` is empty and
  ``enforce_bow`` False; with ``enforce_bow``, spans are trimmed to whole words by the tokenizer's
  decoding, which may differ from infini-gram's token lists); ``unigram_logprob_sum`` from
  familiar's unigram counts.
"""

from __future__ import annotations

import json

import numpy as np
from typing import Any, Dict, Iterable, List, Optional

from . import FamiliarError, Index, QueryError

__all__ = ["InfiniGramEngine"]


class InfiniGramEngine:
    """infini-gram's ``InfiniGramEngine`` over a familiar index (see the module's notes)."""

    def __init__(
        self,
        index_dir: Any,
        eos_token_id: int,
        vocab_size: int = 65535,
        version: int = 4,
        token_dtype: str = "u16",
        max_support: int = 1000,
        max_clause_freq: int = 50000,
        max_diff_tokens: int = 100,
        maxnum: int = 1,
        max_disp_len: int = 1000,
        **ignored: Any,
    ) -> None:
        if isinstance(index_dir, (list, tuple)):
            if len(index_dir) != 1:
                raise ValueError("a familiar index is one directory (its shards are inside it)")
            index_dir = index_dir[0]
        self.index = Index(index_dir)
        self.eos_token_id = eos_token_id
        self.token_id_max = self.index.vocab_size - 1
        self.max_support = max_support
        self.max_clause_freq = max_clause_freq
        self.max_diff_tokens = max_diff_tokens
        self.maxnum = maxnum
        self.max_disp_len = max_disp_len

    # --- argument checks, as infini-gram words them

    def _ids_ok(self, ids: Any, allow_empty: bool = True) -> bool:
        if not (type(ids) == list and (allow_empty or len(ids) > 0)):
            return False
        return all(type(q) == int and 0 <= q <= self.token_id_max for q in ids)

    def _ids_error(self, name: str = "input_ids") -> Dict[str, str]:
        return {"error": f"{name} must be a list of integers in range [0, {self.token_id_max}]"}

    def _cnf_ok(self, cnf: Any) -> bool:
        if not (type(cnf) == list and len(cnf) > 0):
            return False
        return all(
            type(c) == list and len(c) > 0 and all(self._ids_ok(q, allow_empty=False) for q in c)
            for c in cnf
        )

    # --- counts and probabilities

    def count(self, input_ids: List[int]) -> Dict[str, Any]:
        if not self._ids_ok(input_ids):
            return self._ids_error()
        if not input_ids:
            return {"count": self.index.num_positions, "approx": False}
        return {"count": self.index.count(tokens=input_ids), "approx": False}

    def _prompt_cnt(self, prompt_ids: List[int]) -> int:
        return self.index.num_positions if not prompt_ids else self.index.count(tokens=prompt_ids)

    def prob(self, prompt_ids: List[int], cont_id: int) -> Dict[str, Any]:
        if not self._ids_ok(prompt_ids):
            return self._ids_error("prompt_ids")
        if not (type(cont_id) == int and 0 <= cont_id <= self.token_id_max):
            return {"error": f"cont_id must be an integer in range [0, {self.token_id_max}]"}
        prompt_cnt = self._prompt_cnt(prompt_ids)
        cont_cnt = self.index.count(tokens=prompt_ids + [cont_id])
        return {
            "prompt_cnt": prompt_cnt,
            "cont_cnt": cont_cnt,
            "prob": cont_cnt / prompt_cnt if prompt_cnt else -1.0,
        }

    def _distribution(self, prompt_ids: List[int]) -> Dict[str, Any]:
        d = self.index.ntd(tokens=prompt_ids) if prompt_ids else self.index.ntd()
        prompt_cnt = self._prompt_cnt(prompt_ids)
        counts = {e["token_id"]: e["count"] for e in d["next"]}
        # infini-gram reports the separator (and the end of its data) as the end-of-document
        # token: a prompt at a document's end is followed by it; with an empty prompt, every
        # separator counts.
        ends = d["end_of_document"]
        if ends:
            counts[self.eos_token_id] = counts.get(self.eos_token_id, 0) + ends
        return {
            "prompt_cnt": prompt_cnt,
            "result_by_token_id": {
                t: {"cont_cnt": c, "prob": c / prompt_cnt}
                for t, c in sorted(counts.items(), key=lambda tc: (-tc[1], tc[0]))
            },
            "approx": False,
        }


    def ntd(self, prompt_ids: List[int], max_support: Optional[int] = None) -> Dict[str, Any]:
        if max_support is not None and not (type(max_support) == int and max_support > 0):
            return {"error": "max_support must be a positive integer"}
        if not self._ids_ok(prompt_ids):
            return self._ids_error("prompt_ids")
        return self._distribution(prompt_ids)

    def _suffix(self, prompt_ids: List[int]) -> int:
        if not prompt_ids:
            return 0
        return self.index.infgram_ntd(tokens=prompt_ids)["suffix_len"]

    def infgram_prob(self, prompt_ids: List[int], cont_id: int) -> Dict[str, Any]:
        if not self._ids_ok(prompt_ids):
            return self._ids_error("prompt_ids")
        if not (type(cont_id) == int and 0 <= cont_id <= self.token_id_max):
            return {"error": f"cont_id must be an integer in range [0, {self.token_id_max}]"}
        k = self._suffix(prompt_ids)
        r = self.prob(prompt_ids[len(prompt_ids) - k:], cont_id)
        r["suffix_len"] = k
        return r

    def infgram_ntd(self, prompt_ids: List[int], max_support: Optional[int] = None) -> Dict[str, Any]:
        if max_support is not None and not (type(max_support) == int and max_support > 0):
            return {"error": "max_support must be a positive integer"}
        if not self._ids_ok(prompt_ids):
            return self._ids_error("prompt_ids")
        k = self._suffix(prompt_ids)
        r = self._distribution(prompt_ids[len(prompt_ids) - k:])
        r["suffix_len"] = k
        return r

    # --- CNF

    def _cnf_matches(self, cnf: List[List[List[int]]], max_diff_tokens: int) -> List[List[int]]:
        """Per shard, the positions of the surviving anchor occurrences, by infini-gram's rule
        (exact: no clause is sampled): the clause with the fewest occurrences is the anchor;
        each other clause, fewest first, must have an occurrence starting within
        ``max_diff_tokens`` of the range built so far (the nearest one before its end and at or
        after its start, either or both extending it); a range that holds a document boundary is
        dropped. The shards are taken as one sequence of documents, as in an infini-gram index
        of one shard (its shards would each be searched on their own)."""
        native = self.index._native
        totals = [sum(self.index.count(tokens=q) for q in clause) for clause in cnf]
        order = sorted(range(len(cnf)), key=lambda i: totals[i])
        # Positions of every shard, shifted past the shards before it.
        base, bases, starts = 0, [], []
        for shard in range(self.index.shards):
            bounds = np.frombuffer(native.doc_starts(shard), dtype="<u8").astype(np.int64)
            bases.append(base)
            starts.append(bounds[:-1] + base)
            base += int(bounds[-1])
        starts = np.concatenate(starts)
        clauses = []
        for clause in cnf:
            ptrs = [
                np.frombuffer(native.positions(shard, q), dtype="<u8").astype(np.int64) + bases[shard]
                for q in clause
                for shard in range(self.index.shards)
            ]
            clauses.append(np.sort(np.concatenate(ptrs)))
        if len(cnf) == 1 or any(t == 0 for t in totals):
            kept = clauses[0].tolist() if len(cnf) == 1 else []
        else:
            d = max_diff_tokens
            kept = []
            for p in clauses[order[0]].tolist():
                l = r = p
                alive = True
                for i in order[1:]:
                    ptrs = clauses[i]
                    lo = int(np.searchsorted(ptrs, r, side="left")) - 1
                    hi = int(np.searchsorted(ptrs, l, side="left"))
                    nl = min(l, int(ptrs[lo])) if lo >= 0 else l
                    nr = max(r, int(ptrs[hi])) if hi < len(ptrs) else r
                    left = lo >= 0 and nl + d >= l
                    right = hi < len(ptrs) and nr <= r + d
                    if left and right:
                        l, r = nl, nr
                    elif left:
                        l = nl
                    elif right:
                        r = nr
                    else:
                        alive = False
                        break
                # The range must lie within one document.
                if alive and np.searchsorted(starts, l, side="right") == np.searchsorted(starts, r, side="right"):
                    kept.append(l)
        by_shard: List[List[int]] = [[] for _ in range(self.index.shards)]
        for p in kept:
            shard = int(np.searchsorted(bases, p, side="right")) - 1
            by_shard[shard].append(p - bases[shard])
        return by_shard

    def count_cnf(self, cnf: Any, max_clause_freq: Optional[int] = None,
                  max_diff_tokens: Optional[int] = None) -> Dict[str, Any]:
        err = self._cnf_args(cnf, max_clause_freq, max_diff_tokens)
        if err:
            return err
        d = self.max_diff_tokens if max_diff_tokens is None else max_diff_tokens
        return {"count": sum(len(k) for k in self._cnf_matches(cnf, d)), "approx": False}

    def find_cnf(self, cnf: Any, max_clause_freq: Optional[int] = None,
                 max_diff_tokens: Optional[int] = None) -> Dict[str, Any]:
        err = self._cnf_args(cnf, max_clause_freq, max_diff_tokens)
        if err:
            return err
        d = self.max_diff_tokens if max_diff_tokens is None else max_diff_tokens
        ptrs = self._cnf_matches(cnf, d)
        return {"cnt": sum(len(k) for k in ptrs), "approx": False, "ptrs_by_shard": ptrs}

    def _cnf_args(self, cnf: Any, max_clause_freq: Any, max_diff_tokens: Any) -> Optional[Dict[str, str]]:
        if max_clause_freq is not None and not (type(max_clause_freq) == int and max_clause_freq > 0):
            return {"error": "max_clause_freq must be a positive integer"}
        if max_diff_tokens is not None and not (type(max_diff_tokens) == int and max_diff_tokens > 0):
            return {"error": "max_diff_tokens must be a positive integer"}
        if not self._cnf_ok(cnf):
            return {"error": f"cnf must be a non-empty, triply-nested list of integers in range [0, {self.token_id_max}]"}
        return None

    # --- occurrences and documents

    def find(self, input_ids: List[int]) -> Dict[str, Any]:
        if not self._ids_ok(input_ids, allow_empty=False):
            return self._ids_error()
        segments = self.index._native.find(input_ids)
        return {"cnt": sum(b - a for a, b in segments), "segment_by_shard": segments}

    def _doc(self, doc_ix: int, needle_offset: int, needle_len: int, max_disp_len: int) -> Dict[str, Any]:
        d = self.index.doc(doc_ix)
        tokens = self.index.doc_tokens(doc_ix)
        start = max(0, min(needle_offset, len(tokens)))
        shown = tokens[start:start + max_disp_len] if needle_len else tokens[:max_disp_len]
        meta = {k: d[k] for k in ("external_id", "source", "input_file", "metadata")}
        return {
            "doc_ix": doc_ix,
            "doc_len": len(tokens),
            "disp_len": len(shown),
            "needle_offset": 0 if needle_len else needle_offset,
            "metadata": json.dumps(meta),
            "token_ids": shown,
            "blocked": False,
        }

    def get_doc_by_rank(self, s: int, rank: int, max_disp_len: Optional[int] = None) -> Dict[str, Any]:
        try:
            doc_ix, offset = self.index._native.doc_at_rank(int(s), int(rank))
        except FamiliarError as e:
            return {"error": str(e)}
        return self._doc(doc_ix, offset, 1, max_disp_len or self.max_disp_len)

    def get_doc_by_ptr(self, s: int, ptr: int, max_disp_len: Optional[int] = None) -> Dict[str, Any]:
        try:
            doc_ix, offset = self.index._native.doc_at_position(int(s), int(ptr))
        except FamiliarError as e:
            return {"error": str(e)}
        return self._doc(doc_ix, offset, 1, max_disp_len or self.max_disp_len)

    def get_doc_by_ix(self, doc_ix: int, max_disp_len: Optional[int] = None) -> Dict[str, Any]:
        if not (type(doc_ix) == int and 0 <= doc_ix < self.index.num_documents):
            return {"error": f"doc_ix must be an integer in range [0, {self.index.num_documents})"}
        return self._doc(doc_ix, 0, 0, max_disp_len or self.max_disp_len)

    def get_total_doc_cnt(self) -> int:
        return self.index.num_documents

    def search_docs(self, input_ids: List[int], maxnum: Optional[int] = None,
                    max_disp_len: Optional[int] = None) -> Dict[str, Any]:
        maxnum = self.maxnum if maxnum is None else maxnum
        max_disp_len = self.max_disp_len if max_disp_len is None else max_disp_len
        if not (type(maxnum) == int and maxnum > 0):
            return {"error": "maxnum must be a positive integer"}
        if not (type(max_disp_len) == int and max_disp_len > 0):
            return {"error": "max_disp_len must be a positive integer"}
        if not self._ids_ok(input_ids, allow_empty=False):
            return self._ids_error()
        page = self.index.locate(tokens=input_ids, limit=maxnum)
        documents = [
            self._doc(h["doc_id"], h["offset_in_doc"], len(input_ids), max_disp_len)
            for h in page["hits"]
        ]
        return {"cnt": page["total"], "approx": False,
                "idxs": list(range(len(documents))), "documents": documents}

    # --- spans

    def attribute(self, input_ids: List[int], delim_ids: Iterable[int], min_len: int,
                  max_cnt: int, enforce_bow: bool) -> Dict[str, Any]:
        if not self._ids_ok(input_ids):
            return self._ids_error()
        if not (type(min_len) == int and min_len >= 0):
            return {"error": "min_len must be a non-negative integer"}
        if not (type(max_cnt) == int and max_cnt > 0):
            return {"error": "max_cnt must be a positive integer"}
        if list(delim_ids):
            return {"error": "delim_ids are not supported by familiar's attribute (pass [])"}
        if not input_ids:
            return {"spans": []}
        spans, docs = self.index.trace(
            tokens=input_ids, min_len=max(1, min_len), all_spans=True, docs_per_span=10,
            whole_words=bool(enforce_bow), bm25=False, max_tokens=max(10_000, len(input_ids)))
        by_span: Dict[int, List[Dict[str, int]]] = {}
        for d in docs.to_pylist():
            shard, start, _ = self.index._native.doc_span(d["doc_id"])
            by_span.setdefault(d["span"], []).append({"s": shard, "ptr": start + d["position"]})
        out = []
        for s in spans.to_pylist():
            if s["count"] > max_cnt:
                continue
            out.append({
                "l": s["start"], "r": s["end"], "length": s["end"] - s["start"],
                "count": s["count"], "unigram_logprob_sum": s["unigram_logprob"],
                "docs": by_span.get(s["span"], []),
            })
        return {"spans": out}
