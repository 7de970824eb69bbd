"""Split strategies: which of train / val / test each UnitChange goes to.

``temporal`` (default) and ``random`` keep all examples of one commit in one split;
``path`` keeps all examples of one file path together instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.errors import CommitforgeError
from core.examples import stable_bucket
from core.hookspecs import hookimpl

SPLITS = ("train", "val", "test")


def _check_fractions(fractions: list[float], kind: str) -> list[float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise CommitforgeError(f"split.fractions={list(fractions)} for split {kind!r} must be three non-negative numbers "
                               "(train, val, test) that sum to 1, e.g. [0.8,0.1,0.1]")
    return list(fractions)


def _by_fraction(x: float, fractions: list[float]) -> str:
    acc = 0.0
    for name, f in zip(SPLITS, fractions):
        acc += f
        if x < acc:
            return name
    return SPLITS[-1]


@dataclass
class TemporalSplitConfig:
    name: str = "temporal"
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    gap_commits: int = 0  # commits left out just before val and before test, so neighbours don't leak


class TemporalSplit:
    """Oldest commits train, newer ones validate, the newest test (by committer time)."""

    def __init__(self, cfg: TemporalSplitConfig):
        self.fractions = _check_fractions(cfg.fractions, "temporal")
        if cfg.gap_commits < 0:
            raise CommitforgeError(f"split.gap_commits={cfg.gap_commits} must be >= 0")
        self.cfg = cfg

    def assign(self, changes: list[dict[str, Any]]) -> list[str | None]:
        first: dict[str, tuple[float, int]] = {}
        for i, c in enumerate(changes):
            if c["commit"] not in first:
                first[c["commit"]] = (datetime.fromisoformat(c["time"]).timestamp(), i)
        order = sorted(first, key=lambda k: first[k])
        n = len(order)
        bounds = [round(n * self.fractions[0]), round(n * (self.fractions[0] + self.fractions[1]))]
        split_of: dict[str, str | None] = {}
        for i, commit in enumerate(order):
            name = "train" if i < bounds[0] else "val" if i < bounds[1] else "test"
            if name != "train" and self.cfg.gap_commits:
                start = bounds[0] if name == "val" else bounds[1]
                if i < start + self.cfg.gap_commits:
                    split_of[commit] = None  # in the gap
                    continue
            split_of[commit] = name
        return [split_of[c["commit"]] for c in changes]


@dataclass
class RandomSplitConfig:
    name: str = "random"
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 0


@dataclass
class PathSplitConfig(RandomSplitConfig):
    name: str = "path"


class RandomSplit:
    """Commits spread at random (seeded, stable across processes) over the splits."""

    def __init__(self, cfg: RandomSplitConfig):
        self.fractions = _check_fractions(cfg.fractions, cfg.name)
        self.cfg = cfg

    def keys(self, changes: list[dict[str, Any]]) -> list[str]:
        return [c["commit"] for c in changes]

    def assign(self, changes: list[dict[str, Any]]) -> list[str | None]:
        return [_by_fraction(stable_bucket(key, self.cfg.seed), self.fractions) for key in self.keys(changes)]


class PathSplit(RandomSplit):
    """Files spread over the splits by a hash of their path: a file's history stays in one
    split, across renames (changes come in commit order; a file keeps its first path). A
    path is keyed when it first appears: by the path it came from when that row has an
    ``old_path`` (a renamed file, or a new file a unit moved into), else by itself; a unit
    moved into a file seen before leaves that file's key alone."""

    def keys(self, changes: list[dict[str, Any]]) -> list[str]:
        key_of: dict[str, str] = {}
        out = []
        for c in changes:
            path = c["path"]
            if path not in key_of:
                old = c.get("old_path")
                key_of[path] = key_of.get(old, old) if old else path
            out.append(key_of[path])
        return out


@hookimpl
def register_split(register):
    register("temporal", TemporalSplit, TemporalSplitConfig)
    register("random", RandomSplit, RandomSplitConfig)
    register("path", PathSplit, PathSplitConfig)
