"""Per-stage counters: totals, and skips by reason (nothing is dropped silently)."""

from __future__ import annotations

from collections import Counter as _Counter
from typing import Any


class Counter:
    def __init__(self) -> None:
        self.counts: _Counter[str] = _Counter()
        self.skips: _Counter[str] = _Counter()

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def skip(self, reason: str, n: int = 1) -> None:
        self.skips[reason] += n

    def update(self, other: Counter | dict[str, Any]) -> None:
        if isinstance(other, Counter):
            self.counts.update(other.counts)
            self.skips.update(other.skips)
        else:
            self.counts.update(other.get("counts", {}))
            self.skips.update(other.get("skips", {}))

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())), "skips": dict(sorted(self.skips.items()))}
