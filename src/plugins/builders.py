"""Builder ``commit``: one example per UnitChange (a unit before and after a commit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import CommitforgeError
from core.examples import Format, Tokenizer, assemble, encode_all
from core.hookspecs import hookimpl
from core.stats import Counter


@dataclass
class CommitBuilderConfig:
    name: str = "commit"
    max_tokens: int = 2048  # the naive pipeline used 1024
    train_on: list[str] | None = None  # segment names whose tokens are trained; null: the format's targets


class CommitBuilder:
    def __init__(self, cfg: CommitBuilderConfig):
        if cfg.max_tokens < 16:
            raise CommitforgeError(f"builder.max_tokens={cfg.max_tokens} is too small; use e.g. 1024, 2048 or 4096")
        self.cfg = cfg

    def build(self, changes: list[dict[str, Any]], splits: list[str], fmt: Format, tokenizer: Tokenizer,
              stats: Counter) -> list[dict[str, Any]]:
        layouts = [fmt.segments(c) for c in changes]
        if self.cfg.train_on is not None:
            wanted = set(self.cfg.train_on)
            for layout in layouts:
                for seg in layout:
                    seg.target = seg.name in wanted
        out = []
        for change, split, layout, encoded in zip(changes, splits, layouts, encode_all(tokenizer, layouts)):
            built = assemble(change, layout, encoded, tokenizer, self.cfg.max_tokens, split)
            if built.example is None:
                stats.skip(built.skip or "unknown")
                continue
            if built.truncated:
                stats.add(f"truncated_{split}")
            out.append(built.example)
        return out


@hookimpl
def register_builder(register):
    register("commit", CommitBuilder, CommitBuilderConfig)
