"""What a model does with the items whose frequencies the index counts: zero-shot scores,
keyword probabilities and activation density, each a ``pyarrow.Table`` with the columns of the
command line's Parquet output (``schemas/``).

    >>> from familiar import models
    >>> lm = models.Model("my-model")                 # a Hugging Face checkpoint directory
    >>> models.score(lm, [{"prompt": "The capital of France is", "completion": " Paris"}])

Items are a file (as for ``familiar score``) or a list of dicts (or a pandas DataFrame); a record
without an ``id`` is named by its position in the list, and errors name it (``items[2]: ...``).
Calls release the GIL, show a progress bar (``progress=False`` for none, or a function called
with ``(kind, stage, n)``), and stop between two items on Ctrl-C (nothing is returned).
"""

from __future__ import annotations

import os
from typing import Any, Union

from . import _familiar
from ._records import Records, named, records, reporter

__all__ = ["Model", "score", "keyword_prob", "density"]


class Model:
    """A model loaded once for many calls: a Hugging Face directory (``config.json``,
    ``*.safetensors``, ``tokenizer.json``) of a family familiar runs (GPT-2, GPT-NeoX/Pythia,
    Llama). ``device`` is ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (CUDA needs a build with the
    ``cuda`` feature)."""

    def __init__(self, path: Union[str, os.PathLike], *, device: str = "cpu") -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a string or a path, not {type(path).__name__}")
        self._native = _familiar.NativeModel(os.fspath(path), str(device))

    def __repr__(self) -> str:
        return f"familiar.models.Model({self.path!r}: {self.layers} layers, context {self.context})"

    @property
    def path(self) -> str:
        """The model directory."""
        return str(self._native.path)

    @property
    def context(self) -> int:
        """Context length in tokens."""
        return self._native.context

    @property
    def layers(self) -> int:
        """Transformer blocks."""
        return self._native.layers

    @property
    def vocab_size(self) -> int:
        """Vocabulary size."""
        return self._native.vocab_size


def _model(model: Union[Model, str, os.PathLike]) -> Any:
    if isinstance(model, Model):
        return model._native
    if isinstance(model, (str, os.PathLike)):
        return Model(model)._native
    raise TypeError(f"model must be a familiar.models.Model or a path, not {type(model).__name__}")


def score(
    model: Union[Model, str, os.PathLike],
    items: Records,
    *,
    format: str = "jsonl",
    limit: Union[int, None] = None,
    progress: Any = True,
):
    """Zero-shot scores (the ``zero_shot`` table; ``familiar score``): for a completion item
    (``{"id", "prompt", "completion"}``) its log-probability and whether greedy decoding
    reproduces it; for a multiple-choice item (``{"id", "prompt", "choices", "answer"}``) each
    choice's log-probability and the prediction (``acc``, and ``acc_norm`` by bytes, as
    lm-evaluation-harness). A file may be in another ``format``: ``mmlu``, ``pararel``,
    ``nq_open``, ``lambada``, ``gsm8k``; a list is generic JSONL records. ``limit``: the first N."""
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise _familiar.ConfigError(f"limit={limit!r}: expected a positive integer")
    path, text = records(items, "items")
    if text is not None and format != "jsonl":
        raise _familiar.ConfigError(f"format={format!r} reads files; a list of items is jsonl records")
    on_event, bars = reporter(progress, "scoring")
    try:
        with named("items", text):
            return _familiar.score(_model(model), path, text, format, limit, on_event)
    finally:
        if bars is not None:
            bars.close()


def keyword_prob(
    model: Union[Model, str, os.PathLike], items: Records, *, progress: Any = True
):
    """Keyword probabilities (the ``keyword_probe`` table; ``familiar keyword-prob``): for each
    ``{"id", "context", "keyword"}`` the probability of the keyword's tokens after the context,
    the keyword scored as given (a leading space is part of it)."""
    path, text = records(items, "items")
    on_event, bars = reporter(progress, "keyword probabilities")
    try:
        with named("items", text):
            return _familiar.keyword_prob(_model(model), path, text, on_event)
    finally:
        if bars is not None:
            bars.close()


def density(
    model: Union[Model, str, os.PathLike],
    probes: Records,
    *,
    overflow: str = "error",
    threshold: float = 0.0,
    progress: Any = True,
):
    """Activation density (the ``activation_stats`` table; ``familiar density``): per probe
    (``{"id", "text", "labels"?}``) and layer, the fraction of MLP units active (above
    ``threshold``), the hidden states' norms and effective rank. A probe longer than the
    context: ``overflow="error"`` refuses it, ``"truncate"`` keeps its first tokens, ``"stride"``
    runs it in consecutive windows."""
    path, text = records(probes, "probes")
    on_event, bars = reporter(progress, "density")
    try:
        with named("probes", text):
            return _familiar.density(
                _model(model), path, text, str(overflow), float(threshold), on_event
            )
    finally:
        if bars is not None:
            bars.close()
