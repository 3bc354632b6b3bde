"""familiar: exact n-gram counts, spans and documents of tokenized training corpora.

    >>> import familiar
    >>> index = familiar.Index("my-index")
    >>> index.count(" the cat")
    >>> index.count_many([" the cat", [464, 3797]])      # a numpy array of counts

An index is built by ``familiar index build`` (the command line). Every answer is exact; queries
take a text (tokenized with the index's tokenizer, as given: ``" cat"`` and ``"cat"`` differ) or
``tokens=[ids]``. Errors are :class:`FamiliarError` subclasses carrying the library's messages.
"""

from __future__ import annotations

import numbers
import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where an array is taken or returned (it costs more to import than opening an
# index does).
from . import _familiar
from ._familiar import (
    ConfigError,
    ConflictError,
    CorruptIndex,
    FamiliarBug,
    FamiliarError,
    IndexIOError,
    InputError,
    ModelError,
    QueryError,
    SqlError,
    TokenizerError,
)

__all__ = [
    "Index",
    "build_index",
    "sql",
    "concepts",
    "models",
    "attribution",
    "FamiliarError",
    "InputError",
    "CorruptIndex",
    "QueryError",
    "ConfigError",
    "ConflictError",
    "TokenizerError",
    "IndexIOError",
    "FamiliarBug",
    "ModelError",
    "SqlError",
]

Query = Union[str, Sequence[int]]

COUNT_CHUNK = 1 << 18
"""Queries :meth:`Index.count_many` hands the library at a time (a quarter-second or so of
work): the bound on its memory beyond the input and answer, and on how long Ctrl-C waits."""


def _is_array(x: Any) -> bool:
    return type(x).__module__ == "numpy" and hasattr(x, "ndim")


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_ids(ids: Any, vocab_size: int, what: str = "tokens") -> List[int]:
    """A list of token ids, checked: integers from 0 to below the vocabulary size."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of token ids, not {type(ids).__name__}")
    if _is_array(ids):
        import numpy as np

        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"{what} must be a 1-D integer array (got {ids.dtype}, {ids.ndim}-D)")
        ids = ids.tolist()
    try:
        out = list(ids)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of token ids, not {type(ids).__name__}") from None
    for i, t in enumerate(out):
        if not _is_int(t):
            raise TypeError(f"{what}[{i}] is {type(t).__name__}, expected an integer token id")
        if t < 0 or t >= vocab_size:
            raise QueryError(
                f"{what}[{i}] = {t} is not a token id of this index (0 to {vocab_size - 1})"
            )
    return [int(t) for t in out]


class Index:
    """An index built by ``familiar index build``, memory-mapped (opening reads only manifests).

    ``preload=True`` asks the kernel to read the token and suffix-array files now (for many
    queries on a cold index). :meth:`close` (or leaving a ``with`` block) releases the memory
    maps; later calls raise :class:`IndexIOError`.
    """

    def __init__(self, path: Union[str, os.PathLike], *, preload: bool = False) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a string or a path, not {type(path).__name__}")
        self._where = os.fspath(path)
        self._handle: Optional[Any] = _familiar.NativeIndex(self._where, bool(preload))

    @property
    def _native(self) -> Any:
        if self._handle is None:
            raise IndexIOError(f"{self._where}: the index was closed")
        return self._handle

    def close(self) -> None:
        """Releases the index (its memory maps go once no call in progress holds them)."""
        self._handle = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._handle is None

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._handle is None:
            return f"familiar.Index({self._where!r}: closed)"
        return (
            f"familiar.Index({str(self.path)!r}: {self.num_tokens} tokens, "
            f"{self.num_documents} documents, {self.shards} shards)"
        )

    # --- properties

    @property
    def path(self) -> str:
        """The index directory."""
        return str(self._native.path)

    @property
    def num_tokens(self) -> int:
        """Tokens in the index (document separators excluded)."""
        return self._native.num_tokens

    @property
    def num_positions(self) -> int:
        """Token positions: tokens plus one separator per document."""
        return self._native.num_positions

    @property
    def num_documents(self) -> int:
        """Documents in the index."""
        return self._native.num_documents

    @property
    def shards(self) -> int:
        """Shards of the index."""
        return self._native.shards

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary size (ids are below it; it is also the separator id)."""
        return self._native.vocab_size

    @property
    def tokenizer_hash(self) -> str:
        """The hash of the index's ``tokenizer.json``."""
        return self._native.tokenizer_hash

    # --- tokens

    def tokenize(self, text: str) -> List[int]:
        """The token ids of ``text`` with the index's tokenizer (no special tokens)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, not {type(text).__name__}")
        return self._native.tokenize(text)

    def decode(self, tokens: Sequence[int]) -> str:
        """The text of token ids."""
        return self._native.decode(_check_ids(tokens, self.vocab_size))

    def _ids(
        self,
        text: Optional[Query],
        tokens: Optional[Sequence[int]],
        what: str = "query",
        allow_empty: bool = False,
    ) -> List[int]:
        """The query's token ids; with ``allow_empty``, none given is the empty prefix."""
        if text is not None and tokens is not None:
            raise TypeError(f"give the {what} as a text or as tokens=, not both")
        if tokens is not None:
            return _check_ids(tokens, self.vocab_size)
        if text is None:
            if allow_empty:
                return []
            raise TypeError(f"give the {what} as a text or as tokens=[ids]")
        if isinstance(text, str):
            return self.tokenize(text)
        return _check_ids(text, self.vocab_size)

    # --- counts

    def count(self, text: Optional[Query] = None, *, tokens: Optional[Sequence[int]] = None) -> int:
        """Exact occurrences of an n-gram (overlapping ones count; none crosses a document)."""
        return self._native.count(self._ids(text, tokens))

    def count_many(self, queries: Union[Iterable[Query], "np.ndarray"]) -> "np.ndarray":
        """Counts of many n-grams, computed in parallel: a numpy ``uint64`` array.

        ``queries`` is a list whose items are texts or lists of token ids, or a 2-D integer array
        (one n-gram per row). They are counted in chunks of :data:`COUNT_CHUNK` queries, so the
        memory used beyond the input and the answer stays bounded however many there are, and
        Ctrl-C stops the call between two chunks.
        """
        import numpy as np

        chunk = max(1, int(COUNT_CHUNK))
        if isinstance(queries, np.ndarray):
            if queries.ndim != 2 or not np.issubdtype(queries.dtype, np.integer):
                raise TypeError(
                    f"an array of queries must be 2-D integers (got {queries.dtype}, {queries.ndim}-D)"
                )
            if queries.shape[1] == 0:
                raise QueryError("queries of no tokens have no count")
            if queries.size and (queries.min() < 0 or queries.max() >= self.vocab_size):
                raise QueryError(
                    f"the array holds ids outside 0 to {self.vocab_size - 1} "
                    f"(from {queries.min()} to {queries.max()})"
                )
            out = np.empty(queries.shape[0], dtype=np.uint64)
            for start in range(0, queries.shape[0], chunk):
                part = queries[start:start + chunk]
                data = np.ascontiguousarray(part, dtype="<u4").tobytes()
                raw = self._native.count_many_flat(data, int(queries.shape[1]))
                out[start:start + len(part)] = np.frombuffer(raw, dtype="<u8")
            return out
        if isinstance(queries, (str, bytes)):
            raise TypeError("queries must be a list of texts or token lists, not one text")
        counts: List["np.ndarray"] = []
        ids: List[List[int]] = []
        for i, q in enumerate(queries):
            ids.append(self.tokenize(q) if isinstance(q, str) else _check_ids(q, self.vocab_size, f"queries[{i}]"))
            if len(ids) == chunk:
                counts.append(np.frombuffer(self._native.count_many(ids), dtype="<u8"))
                ids = []
        if ids or not counts:
            counts.append(np.frombuffer(self._native.count_many(ids), dtype="<u8"))
        return np.concatenate(counts).astype(np.uint64)

    def locate(
        self,
        text: Optional[Query] = None,
        *,
        tokens: Optional[Sequence[int]] = None,
        offset: int = 0,
        limit: int = 10,
    ) -> Dict[str, Any]:
        """Occurrences, paged: ``{"total", "hits": [{"doc_id", "shard", "position", "offset_in_doc"}]}``
        (shards in order, suffix-array order within a shard)."""
        if offset < 0 or limit < 0:
            raise QueryError("offset and limit must be at least 0")
        total, hits = self._native.locate(self._ids(text, tokens), int(offset), int(limit))
        return {
            "total": total,
            "hits": [
                {"doc_id": d, "shard": s, "position": p, "offset_in_doc": o} for d, s, p, o in hits
            ],
        }

    def ntd(self, text: Optional[Query] = None, *, tokens: Optional[Sequence[int]] = None) -> Dict[str, Any]:
        """The exact next-token distribution after a prefix: ``{"prefix_count", "end_of_document",
        "next": [{"token_id", "count", "probability"}]}``, most frequent first."""
        prefix_count, eod, nxt = self._native.ntd(self._ids(text, tokens, "prefix", allow_empty=True))
        return _distribution(prefix_count, eod, nxt)

    def prob(
        self,
        prefix: Optional[Query] = None,
        next: Optional[str] = None,
        *,
        tokens: Optional[Sequence[int]] = None,
        next_id: Optional[int] = None,
    ) -> Dict[str, Any]:
        """P(next | prefix) from exact counts: ``{"prefix_count", "count", "probability"}``
        (``probability`` None when the prefix never occurs)."""
        ids = self._ids(prefix, tokens, "prefix", allow_empty=True)
        nid = self._next_id(next, next_id)
        prefix_count, count, p = self._native.prob(ids, nid)
        return {"prefix_count": prefix_count, "count": count, "probability": p}

    def _next_id(self, next: Optional[str], next_id: Optional[int]) -> int:
        if (next is None) == (next_id is None):
            raise TypeError("give the next token as next= (a text of one token) or next_id=")
        if next_id is not None:
            return _check_ids([next_id], self.vocab_size, "next_id")[0]
        ids = self.tokenize(next)
        if len(ids) != 1:
            raise QueryError(f"next={next!r} is {len(ids)} tokens, expected exactly one")
        return ids[0]

    def cnf(
        self,
        clauses: Sequence[Sequence[Query]],
        *,
        max_occurrences: Optional[int] = None,
        list_documents: int = 10,
        seed: int = 0,
    ) -> Dict[str, Any]:
        """Documents matching every clause, a clause matching when one of its n-grams occurs:
        ``[[a, b], [c]]`` is (a OR b) AND c. Exact unless ``max_occurrences`` caps the work on very
        frequent clauses (then ``approximate`` and an ``estimate`` with its 95% interval)."""
        if isinstance(clauses, (str, bytes)):
            raise TypeError("clauses must be a list of lists of n-grams")
        native = []
        for i, clause in enumerate(clauses):
            if isinstance(clause, (str, bytes)):
                raise TypeError(f"clauses[{i}] must be a list of n-grams, not one text")
            native.append([self._ids(q, None, f"clauses[{i}]") for q in clause])
        if list_documents < 0 or seed < 0 or (max_occurrences is not None and max_occurrences < 0):
            raise QueryError("max_occurrences, list_documents and seed must be at least 0")
        return self._native.cnf(native, max_occurrences, int(list_documents), int(seed))

    # --- the ∞-gram

    def infgram_prob(
        self,
        prompt: Optional[Query] = None,
        next: Optional[str] = None,
        *,
        tokens: Optional[Sequence[int]] = None,
        next_id: Optional[int] = None,
    ) -> Dict[str, Any]:
        """P(next | the longest suffix of the prompt that occurs) (Liu et al. 2024), with
        infini-gram's keys: ``{"prob", "suffix_len", "prompt_cnt", "cont_cnt"}``."""
        ids = self._ids(prompt, tokens, "prompt", allow_empty=True)
        suffix_len, prompt_cnt, cont_cnt, p = self._native.infgram_prob(ids, self._next_id(next, next_id))
        return {"prob": p, "suffix_len": suffix_len, "prompt_cnt": prompt_cnt, "cont_cnt": cont_cnt}

    def infgram_ntd(
        self, prompt: Optional[Query] = None, *, tokens: Optional[Sequence[int]] = None
    ) -> Dict[str, Any]:
        """The exact next-token distribution after the longest suffix of the prompt that occurs:
        ``{"suffix_len", "prefix_count", "end_of_document", "next": [...]}``."""
        ids = self._ids(prompt, tokens, "prompt", allow_empty=True)
        suffix_len, prefix_count, eod, nxt = self._native.infgram_ntd(ids)
        d = _distribution(prefix_count, eod, nxt)
        d["suffix_len"] = suffix_len
        return d

    # --- documents

    def doc(self, doc_id: int) -> Dict[str, Any]:
        """A document: its row of the documents table and its text (decoded from its tokens)."""
        if not _is_int(doc_id):
            raise TypeError(f"doc_id must be an integer, not {type(doc_id).__name__}")
        if doc_id < 0 or doc_id >= self.num_documents:
            raise QueryError(f"no document {doc_id} (the index has {self.num_documents})")
        return self._native.doc(int(doc_id))

    def docs(self, doc_ids: Iterable[int]) -> List[Dict[str, Any]]:
        """Several documents, in the order asked."""
        return [self.doc(d) for d in doc_ids]

    def doc_tokens(self, doc_id: int, start: int = 0, end: Optional[int] = None) -> List[int]:
        """The token ids of a document from ``start`` to ``end`` (clipped to the document)."""
        if doc_id < 0 or doc_id >= self.num_documents:
            raise QueryError(f"no document {doc_id} (the index has {self.num_documents})")
        if start < 0 or (end is not None and end < 0):
            raise QueryError("start and end must be at least 0")
        return self._native.doc_tokens(int(doc_id), int(start), (1 << 64) - 1 if end is None else int(end))

    def documents(self):
        """The documents table (one row per document: ids, source, input file, lengths, metadata)
        as a ``pyarrow.Table``."""
        return self._native.documents()

    # --- tracing

    def trace(
        self,
        text: Optional[str] = None,
        *,
        tokens: Optional[Sequence[int]] = None,
        item_id: str = "text",
        min_len: int = 8,
        max_count: int = 10,
        max_span_density: float = 0.05,
        all_spans: bool = False,
        docs_per_span: int = 10,
        whole_words: bool = False,
        bm25: bool = True,
        max_tokens: int = 10_000,
        chunk: bool = False,
        ranking: str = "unigram-logprob",
        delimiters: Sequence[str] = (),
    ):
        """The maximal spans of a text that occur verbatim in the corpus (OLMoTrace's filters
        unless ``all_spans``), and up to ``docs_per_span`` documents per span ranked by BM25
        against the whole text: a pair of ``pyarrow.Table`` (``trace_spans``, ``trace_documents``).

        ``ranking`` ("unigram-logprob": the rarest first, or "length": the longest first) says
        which spans ``max_span_density`` keeps; no span crosses a token whose text contains one
        of ``delimiters`` (such a token ends a span), as OLMoTrace's ``delimiters``."""
        if (text is None) == (tokens is None):
            raise TypeError("give the text to trace, or tokens=[ids]")
        if text is not None and not isinstance(text, str):
            raise TypeError(f"text must be a string, not {type(text).__name__}")
        ids = None if tokens is None else _check_ids(tokens, self.vocab_size)
        if isinstance(delimiters, str) or not all(isinstance(d, str) for d in delimiters):
            raise TypeError("delimiters must be a list of strings")
        for name, v in [("min_len", min_len), ("max_count", max_count), ("docs_per_span", docs_per_span), ("max_tokens", max_tokens)]:
            if not _is_int(v) or v < 0:
                raise QueryError(f"{name}={v!r}: expected an integer of at least 0")
        return self._native.trace(
            text,
            ids,
            str(item_id),
            int(min_len),
            None if all_spans else int(max_count),
            None if all_spans else float(max_span_density),
            int(docs_per_span),
            bool(whole_words),
            bool(bm25),
            int(max_tokens),
            bool(chunk),
            str(ranking),
            list(delimiters),
        )


def _distribution(prefix_count: int, eod: int, nxt: List[Tuple[int, int]]) -> Dict[str, Any]:
    return {
        "prefix_count": prefix_count,
        "end_of_document": eod,
        "next": [
            {"token_id": t, "count": c, "probability": c / prefix_count if prefix_count else None}
            for t, c in nxt
        ],
    }


def build_index(
    inputs: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
    *,
    tokenizer: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    shard_tokens: Optional[int] = None,
    text_index: bool = True,
    skip_invalid: bool = False,
    allow_empty: bool = False,
    threads: Optional[int] = None,
    restart: bool = False,
    text_field: str = "text",
    id_field: str = "id",
    source_field: str = "source",
    metadata_field: str = "metadata",
    progress: Union[bool, Any] = True,
) -> Dict[str, Any]:
    """Builds (or resumes) the index of corpus files, directories or glob patterns, as
    ``familiar index build`` does, and returns what was done (documents, positions, shards
    built and reused, ...). Open the result with :class:`Index`.

    A progress bar (tqdm's, in notebooks and terminals, when tqdm is installed; else lines on
    stderr) follows the input bytes read; ``progress`` may instead be a function, called with
    ``(kind, bytes_read, total_bytes, shard, tokens)`` for each event (``"read"``, ``"sorting"``,
    ``"oversized"``, ``"done"``); an exception it raises stops the build as Ctrl-C does. Ctrl-C (KeyboardInterrupt) stops the build cleanly: the
    shards published so far are kept, nothing half-written is published, and calling
    ``build_index`` again resumes.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [os.fspath(i) for i in inputs]
    if not inputs:
        raise ConfigError("no inputs given")
    for name, v in [("shard_tokens", shard_tokens), ("threads", threads)]:
        if v is not None and (not _is_int(v) or v < 1):
            raise ConfigError(f"{name}={v!r}: expected a positive integer")
    reporter = _progress_reporter() if progress is True else None
    on_event = progress if callable(progress) else reporter
    try:
        return _familiar.build_index(
            os.fspath(tokenizer), os.fspath(out), inputs, shard_tokens, bool(text_index),
            bool(skip_invalid), bool(allow_empty), threads, bool(restart),
            (text_field, id_field, source_field, metadata_field), on_event,
        )
    finally:
        if reporter is not None:
            reporter.close()


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
               "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
               "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def _size(value: Union[int, str]) -> int:
    """Bytes: an integer, or a number with a unit (``"512MiB"``, ``"8GiB"``)."""
    if _is_int(value):
        if value < 0:
            raise ConfigError(f"memory_limit={value!r}: expected a size of 0 or more bytes")
        return int(value)
    if isinstance(value, str):
        import re

        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ConfigError(
        f"memory_limit={value!r}: expected bytes or a size with a unit (B, KiB, MiB, GiB, TiB)"
    )


def _frame(name: str, value: Any) -> Any:
    """A table held in Python as something with ``__arrow_c_stream__``."""
    if hasattr(value, "to_dict") and hasattr(value, "columns") and not hasattr(
        value, "__arrow_c_stream__"
    ):  # pandas
        import pyarrow as pa

        return pa.Table.from_pandas(value, preserve_index=False)
    if type(value).__name__ == "RecordBatch" and type(value).__module__.startswith("pyarrow"):
        import pyarrow as pa

        return pa.Table.from_batches([value])
    if hasattr(value, "__arrow_c_stream__"):
        return value
    if hasattr(value, "to_arrow"):
        return value.to_arrow()
    raise TypeError(
        f"table {name!r} is {type(value).__name__}: expected a directory, a pyarrow table, or a "
        f"pandas or polars data frame"
    )


def sql(
    query: str,
    tables: Any = None,
    index: Any = None,
    *,
    allow_writes: bool = False,
    memory_limit: Optional[Union[int, str]] = None,
    time_limit: Optional[float] = None,
    all_results: bool = False,
):
    """Runs SQL (DataFusion's dialect, with familiar's functions: ``spearman``, ``log_bin``, ...)
    and returns the last statement's result as a ``pyarrow.Table`` (``all_results=True``: a list
    of ``(statement, table)``), as ``familiar sql`` does.

    ``tables``: a directory (every Parquet table under it, named after its file), a list of
    directories, or a dict ``{name: table}`` of pyarrow tables or pandas or polars data frames
    (queried in place, without copying).
    ``index``: an :class:`Index` or index path attached as ``documents``, or ``{name: index}``.
    The session is read-only unless ``allow_writes``; ``memory_limit`` (bytes or ``"8GiB"``; 0:
    none; default half the machine's memory) and ``time_limit`` (seconds) bound each statement.
    Errors are :class:`SqlError` naming the registered tables."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, not {type(query).__name__}")
    dirs: List[str] = []
    frames: List[Tuple[str, Any]] = []
    if isinstance(tables, dict):
        for name, value in tables.items():
            if not isinstance(name, str):
                raise TypeError(f"table names must be strings, not {type(name).__name__}")
            if isinstance(value, (str, os.PathLike)):
                raise TypeError(
                    f"table {name!r}: a directory holds tables of its own names; pass it in "
                    f"tables=[...] instead"
                )
            frames.append((name, _frame(name, value)))
    elif isinstance(tables, (str, os.PathLike)):
        dirs.append(os.fspath(tables))
    elif tables is not None:
        for t in tables:
            if not isinstance(t, (str, os.PathLike)):
                raise TypeError(f"tables: expected directories, got {type(t).__name__}")
            dirs.append(os.fspath(t))
    indexes: List[Tuple[str, str]] = []
    if isinstance(index, dict):
        items = list(index.items())
    elif index is None:
        items = []
    else:
        items = [("documents", index)]
    for name, ix in items:
        if isinstance(ix, Index):
            ix = ix.path
        if not isinstance(ix, (str, os.PathLike)):
            raise TypeError(f"index {name!r}: expected a familiar.Index or a path")
        indexes.append((str(name), os.fspath(ix)))
    limit = None if memory_limit is None else _size(memory_limit)
    if time_limit is not None and not isinstance(time_limit, (int, float)):
        raise TypeError(f"time_limit must be seconds, not {type(time_limit).__name__}")
    results = _familiar.sql(
        query, dirs, indexes, frames, bool(allow_writes), limit,
        None if time_limit is None else float(time_limit),
    )
    if all_results:
        return results
    if not results:
        raise ConfigError("no SQL statement given")
    return results[-1][1]


class _progress_reporter:
    """Draws a build's progress: a tqdm bar over the input bytes when tqdm is installed (its
    notebook widget in Jupyter), else a line on stderr every few seconds."""

    def __init__(self) -> None:
        self.bar = None
        self.last = 0.0
        try:
            from tqdm.auto import tqdm

            self.tqdm = tqdm
        except ImportError:
            self.tqdm = None

    def __call__(self, kind: str, read: int, total: int, shard: int, tokens: int) -> None:
        import sys
        import time

        if kind == "read":
            if self.tqdm is not None:
                if self.bar is None:
                    self.bar = self.tqdm(total=total, unit="B", unit_scale=True, desc="indexing")
                self.bar.update(read - self.bar.n)
                self.bar.set_postfix(shard=shard, tokens=tokens)
            elif time.monotonic() - self.last > 2.0:
                self.last = time.monotonic()
                print(f"indexing: {read / max(total, 1):.0%} of {total:,} bytes, shard {shard}, "
                      f"{tokens:,} tokens", file=sys.stderr)
        elif kind == "sorting" and self.tqdm is None:
            print(f"indexing: sorting shard {shard} ({tokens:,} positions)", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


from . import attribution, concepts, models  # noqa: E402  (they use Index and the errors above)
