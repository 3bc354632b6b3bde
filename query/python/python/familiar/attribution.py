"""Gradient-similarity attribution: which training documents are behind a model's answer.

    >>> from familiar import attribution
    >>> attribution.store("my-model", index, "my-store")           # once per model and index
    >>> influence, queries = attribution.score("my-store", "my-model", queries_file)

``store`` computes every document's projected gradient (``familiar attribute store``);
``score`` ranks the store's documents for each query (``familiar attribute score``) and returns
the ``influence`` and ``queries`` tables as pyarrow tables.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, NamedTuple, Optional, Union

from . import _familiar
from ._records import Records, named, records, reporter

__all__ = ["store", "score", "Attribution", "TokenAttribution"]


class Attribution(NamedTuple):
    """The two tables of an attribution run (``pyarrow.Table``)."""

    influence: Any
    """Documents ranked per query: query_id, doc_id, score, rank."""
    queries: Any
    """The queries and their gradients' statistics."""


class TokenAttribution(NamedTuple):
    """The tables of an attribution run with token-level influence (``pyarrow.Table``)."""

    influence: Any
    """Documents ranked per query: query_id, doc_id, score, rank."""
    queries: Any
    """The queries and their gradients' statistics."""
    tokens: Any
    """Each token's share of a top document's score (``influence_tokens``): query_id, doc_id,
    side, position, token_id, token, completion, score."""


def store(
    model: Union[str, os.PathLike],
    index: Any,
    out: Union[str, os.PathLike],
    *,
    layers: str = "all",
    rank: int = 32,
    head_rank: Optional[int] = None,
    seed: int = 0,
    dtype: str = "f32",
    optimizer_correction: bool = False,
    device: str = "cpu",
    progress: Any = True,
) -> Dict[str, Any]:
    """Builds (or finishes) the gradient store ``out``: the projected gradient of every document
    of ``index`` (a :class:`familiar.Index` or its path) under ``model`` (whose tokenizer must be
    the index's). ``layers``: ``all``, ``blocks``, ``mlp``, ``attention`` or ``output``;
    ``rank``: projection rank of each layer's input and output (see ``familiar attribute store
    --help`` for costs); ``head_rank``: the output head's vocabulary-side rank (default: 4 × ``rank``,
    narrowed so that the head's block stays within 4,096 values, never below ``rank``: 128 at
    rank 32; blocks above 4,096 values keep no second moments, so ``fisher`` and ``trackstar``
    refuse such a store); ``dtype``: ``f32`` or ``f16``; ``optimizer_correction=True`` corrects
    every gradient by the optimizer's second moment before projecting it (TrackStar; needs the
    ``optimizer.safetensors`` ``familiar train`` saves beside the model); ``device``: ``"cpu"``,
    ``"cuda"`` or ``"cuda:N"`` (candle's autograd on the GPU; a build with CUDA). Resumable: Ctrl-C keeps the shards
    finished so far and calling it again goes on. Returns what was done."""
    from . import Index

    if not isinstance(index, Index):
        index = Index(index)
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise _familiar.ConfigError(f"rank={rank!r}: expected a positive integer")
    if head_rank is not None and (
        not isinstance(head_rank, int) or isinstance(head_rank, bool) or head_rank < 1
    ):
        raise _familiar.ConfigError(f"head_rank={head_rank!r}: expected a positive integer or None")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise _familiar.ConfigError(f"seed={seed!r}: expected a non-negative integer")
    on_event, bars = reporter(progress, "gradient store")
    try:
        return _familiar.attribution_store(
            os.fspath(model), index._native, os.fspath(out), str(layers), rank, head_rank, seed,
            str(dtype), bool(optimizer_correction), str(device), on_event,
        )
    finally:
        if bars is not None:
            bars.close()


def score(
    store: Union[str, os.PathLike],
    model: Union[str, os.PathLike],
    queries: Records,
    *,
    top_k: Optional[int] = 100,
    precondition: str = "ekfac",
    damping: float = 0.1,
    leave_one_out: bool = False,
    query_mix: float = 0.0,
    device: str = "cpu",
    token_influence: Optional[int] = None,
    query_tokens: bool = False,
    index: Any = None,
) -> Union[Attribution, TokenAttribution]:
    """Ranks the documents of ``store`` for each query (``{"id", "prompt", "completion", "kind":
    "factual"|"reasoning", "task", "answer"?, "intermediate"?, "metadata"?}``, a file or a list
    of dicts; other keys are kept as the query's ``metadata``, except a likely misspelling of a
    known key, which is an error),
    keeping the ``top_k`` per query (``None``: every document). ``precondition``: ``ekfac``,
    the default (EK-FAC fitted with the store: each layer's eigenvalue-corrected
    Kronecker-factored Fisher, damped by ``damping`` × its mean corrected eigenvalue; it found
    planted facts' documents most often and had the best LDS, ``familiar attribute score
    --help``), ``fisher`` (damped inverse of each layer's gradient second moment, ``damping`` ×
    its mean eigenvalue), ``trackstar`` (TrackStar:
    gradients corrected by the optimizer's second moment when the store was built with
    ``optimizer_correction=True``, else by the store's own, with a warning; whitened and
    unit-normalised),
    ``identity`` (dot product) or ``cosine``. ``leave_one_out=True`` (ekfac, fisher and
    trackstar) scores each document under the curvature without its own term, exactly (the
    tables name the run ``ekfac-loo``, ``fisher-loo`` or ``trackstar-loo``): on stores of few documents it
    finds the documents that state planted facts far more often (``familiar attribute score
    --help``). ``query_mix=α`` (trackstar, in [0, 1)) whitens by TrackStar's task-specific
    curvature, α × the second moment of these queries' gradients + (1 − α) × the store's (Chang
    et al. 2024): a query's scores then depend on the others scored with it (the tables name the
    run ``trackstar-mix``; not the default: measured in ``familiar attribute score --help``).
    ``device="cuda"`` (or ``"cuda:N"``; a build with CUDA) multiplies the store's rows with the
    queries' vectors on that GPU (everything else, and ``leave_one_out``, stays on the CPU).
    ``model`` must be the one the store was built with. ``token_influence=N`` also splits each query's N best documents' scores by token
    (which tokens carry the influence; ``query_tokens=True``: the query's tokens too), reading
    the documents from ``index`` (the store's :class:`familiar.Index` or its path), and returns a
    :class:`TokenAttribution` with the ``tokens`` table. Ctrl-C returns at once (the computation
    is dropped; nothing is written)."""
    from . import Index

    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise _familiar.ConfigError(f"top_k={top_k!r}: expected a positive integer or None")
    if token_influence is not None:
        if (
            not isinstance(token_influence, int)
            or isinstance(token_influence, bool)
            or token_influence < 1
        ):
            raise _familiar.ConfigError(
                f"token_influence={token_influence!r}: expected a positive integer or None"
            )
        if index is None:
            raise _familiar.ConfigError(
                "token_influence needs index= (the index the store was built on)"
            )
    elif query_tokens:
        raise _familiar.ConfigError("query_tokens=True needs token_influence=N")
    if not isinstance(leave_one_out, bool):
        raise _familiar.ConfigError(f"leave_one_out={leave_one_out!r}: expected True or False")
    if isinstance(query_mix, bool) or not isinstance(query_mix, (int, float)):
        raise _familiar.ConfigError(f"query_mix={query_mix!r}: expected a number in [0, 1)")
    native = None
    if index is not None:
        if not isinstance(index, Index):
            index = Index(index)
        native = index._native
    path, text = records(queries, "queries")
    with named("queries", text):
        influence, table, tokens, fallback = _familiar.attribution_score(
            os.fspath(store), os.fspath(model), path, text, str(precondition), float(damping),
            leave_one_out, float(query_mix), top_k, native, token_influence, bool(query_tokens),
            str(device),
        )
    if fallback is not None:
        warnings.warn(fallback, stacklevel=2)
    if token_influence is not None:
        return TokenAttribution(influence, table, tokens)
    return Attribution(influence, table)
