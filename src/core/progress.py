"""Progress bars for long stages, on standard error, only where someone watches.

``progress=null`` (the default) shows bars when standard error is a terminal;
``progress=false`` hides them, ``progress=true`` forces them (e.g. under a job scheduler
that keeps a terminal log). Bars never write to standard output, which carries the
run's summary.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_ENABLED: bool | None = None


def configure(enabled: bool | None) -> None:
    global _ENABLED
    _ENABLED = enabled


def shown() -> bool:
    if _ENABLED is not None:
        return _ENABLED
    return sys.stderr.isatty()


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it",
             **kw: Any) -> Iterator[T]:
    if not shown():
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                    mininterval=0.5, **kw)
