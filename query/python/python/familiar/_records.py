"""Inputs given either as a file or as Python records (a list of dicts, a pandas DataFrame), and
the progress bars of long calls."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

Records = Union[str, os.PathLike, Sequence[Dict[str, Any]], Any]


def records(value: Records, what: str, *, ids: bool = True) -> Tuple[str, Optional[str]]:
    """(path, text): a file path as it is (text ``None``), or records as JSON lines named ``what``
    (the library reads them exactly as it reads a file's lines). A record without an ``id`` gets
    its position in the list when ``ids``."""
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value), None
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame
        value = value.to_dict("records")
    if isinstance(value, (bytes, dict)) or not hasattr(value, "__iter__"):
        raise TypeError(
            f"{what} must be a file path or a list of dicts, not {type(value).__name__}"
        )
    lines: List[str] = []
    for i, r in enumerate(value):
        if not isinstance(r, dict):
            raise TypeError(f"{what}[{i}] is {type(r).__name__}, expected a dict")
        if ids and "id" not in r:
            r = {"id": i, **r}
        try:
            lines.append(json.dumps(r, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as e:
            raise TypeError(f"{what}[{i}]: not JSON-serializable: {e}") from None
    if not lines:
        from ._familiar import ConfigError

        raise ConfigError(f"{what}: no records")
    return what, "\n".join(lines) + "\n"


@contextmanager
def named(what: str, text: Optional[str]) -> Iterator[None]:
    """Errors about line N of records given in Python name element N - 1: ``items[2]: ...``."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised as it was, renamed
        from ._familiar import FamiliarError

        if text is None or not isinstance(e, FamiliarError):
            raise
        m = re.match(rf"^{re.escape(what)}:(\d+): (.*)$", str(e), re.S)
        if m is None:
            raise
        raise type(e)(f"{what}[{int(m.group(1)) - 1}]: {m.group(2)}") from None


class Bars:
    """Draws the progress of a long call from its events ``(kind, stage, n)``: ``("start",
    stage, total)``, ``("step", stage, done)``, ``("finish", stage, 0)``. A tqdm bar per stage
    when tqdm is installed (its notebook widget in Jupyter), else a line on stderr every few
    seconds."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar = None
        self.stage = ""
        self.done = 0
        self.total = 0
        self.last = 0.0
        try:
            from tqdm.auto import tqdm

            self.tqdm = tqdm
        except ImportError:
            self.tqdm = None

    def __call__(self, kind: str, stage: str, n: int) -> None:
        if kind == "start":
            self.close()
            self.stage, self.done, self.total = stage, 0, n
            if self.tqdm is not None:
                self.bar = self.tqdm(total=n, desc=f"{self.desc}: {stage}", unit=" " + stage)
        elif kind == "step":
            self.done += n
            if self.bar is not None:
                self.bar.update(n)
            elif time.monotonic() - self.last > 2.0:
                self.last = time.monotonic()
                print(f"{self.desc}: {self.done:,} of {self.total:,} {self.stage}", file=sys.stderr)
        elif kind == "finish":
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def reporter(progress: Any, desc: str) -> Tuple[Any, Optional[Bars]]:
    """(callback for the native call, bars to close): ``True`` draws bars, a callable receives
    the events, anything false draws nothing."""
    if progress is True:
        bars = Bars(desc)
        return bars, bars
    if callable(progress):
        return progress, None
    return None, None
