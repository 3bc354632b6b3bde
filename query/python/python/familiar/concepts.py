"""Concept frequencies: how often each concept of a lexicon (a name and its aliases) occurs in
an index, by several counting methods, and how often pairs of concepts occur in one document
(``familiar concepts count``).

    >>> from familiar import concepts
    >>> c = concepts.count(index, [{"concept": "dog", "aliases": ["dogs", "puppy"]}])
    >>> c.frequency.to_pandas()
"""

from __future__ import annotations

import os
from typing import Any, Dict, NamedTuple, Optional, Sequence, Union

from . import _familiar
from ._records import Records, named, records, reporter

__all__ = ["count", "ConceptCounts", "METHODS"]

METHODS = ("sa_exact", "text_phrase", "text_all_words")


class ConceptCounts(NamedTuple):
    """The tables of a count (``pyarrow.Table``, the columns of ``schemas/``)."""

    concepts: Any
    """The lexicon: concept_id, concept, group, aliases, normalized_forms, ..."""
    frequency: Any
    """Per concept, method and form: occurrences and documents (``concept_frequency``; rows with
    ``level == "concept"`` total each concept)."""
    cooccurrence: Any
    """One row per pair and method: documents with each and with both (``cooccurrence``)."""


def count(
    index: Any,
    lexicon: Records,
    pairs: Optional[Union[str, os.PathLike, Sequence[Any]]] = None,
    *,
    methods: Optional[Sequence[str]] = None,
    out: Optional[Union[str, os.PathLike]] = None,
    threads: Optional[int] = None,
    pair_cache_mib: int = 2048,
    progress: Any = True,
) -> ConceptCounts:
    """Counts every concept of ``lexicon`` in ``index`` (a :class:`familiar.Index` or its path).

    ``lexicon``: a .csv/.tsv/.jsonl file, or a list of dicts ``{"concept", "aliases": [...],
    "group"?}``. ``pairs``: a file, or a list of ``(concept_a, concept_b)`` pairs (or dicts with
    those keys), each side any form of a lexicon concept. ``methods``: some of
    :data:`METHODS` (default all). ``out``: also write the tables there as the command line does.
    Ctrl-C stops it (nothing written)."""
    from . import Index

    if not isinstance(index, Index):
        index = Index(index)
    lex_path, lex_text = records(lexicon, "lexicon", ids=False)
    pairs_path: Optional[str] = None
    pairs_text: Optional[str] = None
    if pairs is not None:
        if not isinstance(pairs, (str, os.PathLike)):
            rows = []
            for i, p in enumerate(pairs):
                if isinstance(p, dict):
                    rows.append(p)
                elif isinstance(p, (tuple, list)) and len(p) == 2:
                    rows.append({"concept_a": p[0], "concept_b": p[1]})
                else:
                    raise TypeError(
                        f"pairs[{i}] must be a (concept_a, concept_b) pair or a dict, "
                        f"not {type(p).__name__}"
                    )
            pairs = rows
        pairs_path, pairs_text = records(pairs, "pairs", ids=False)
    if methods is not None:
        if isinstance(methods, str):
            methods = [methods]
        methods = [str(m) for m in methods]
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise _familiar.ConfigError(f"threads={threads!r}: expected a positive integer")
    on_event, bars = reporter(progress, "counting")
    try:
        with named("lexicon", lex_text), named("pairs", pairs_text):
            t = _familiar.concepts_count(
                index._native, lex_path, lex_text, pairs_path, pairs_text, list(methods or []),
                int(pair_cache_mib), threads, None if out is None else os.fspath(out), on_event,
            )
    finally:
        if bars is not None:
            bars.close()
    return ConceptCounts(*t)
