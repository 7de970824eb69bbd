"""Context strategies ``none`` and ``same_file``.

``same_file`` is the baseline that cross-file strategies are measured against: the
definitions in the unit's own file that its code names (types, traits, functions,
macros, consts), rendered as skeletons and ranked by how often they are named, packed
to ``context.max_chars``. A strategy's ``items`` returns the ContextItems of one unit
change, given the parsed file the change belongs to.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from core.errors import CommitforgeError
from core.hookspecs import hookimpl
from core.records import ContextItem, ParsedBlob, Unit

_IDENT = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
_SKELETON_KINDS = {"struct", "enum", "union", "type", "const", "static", "macro", "trait"}


@dataclass
class NoContextConfig:
    name: str = "none"


class NoContext:
    """No context: the ablation baseline."""

    def __init__(self, cfg: NoContextConfig):
        self.cfg = cfg

    def items(self, code: str, qualname: str, path: str, parsed: ParsedBlob | None,
              lines: tuple[int, int] | None = None) -> list[ContextItem]:
        return []


@dataclass
class SameFileContextConfig:
    name: str = "same_file"
    max_chars: int = 6000  # context budget in characters (about 1,500-2,000 tokens of code)
    max_item_chars: int = 1200  # longer definitions are shown by their signature only


def render(unit: Unit, max_item_chars: int) -> str:
    """A definition as a skeleton: data types and short items whole, functions as signatures."""
    if unit.kind in _SKELETON_KINDS and len(unit.text) <= max_item_chars:
        return unit.text
    if unit.kind == "method" and unit.header:
        return f"{unit.header} {{ {unit.signature}; }}"
    return unit.signature + (";" if unit.kind in ("fn", "method") else " { … }")


class SameFileContext:
    def __init__(self, cfg: SameFileContextConfig):
        if cfg.max_chars < 0 or cfg.max_item_chars < 1:
            raise CommitforgeError(f"context.max_chars={cfg.max_chars} and context.max_item_chars={cfg.max_item_chars} "
                                   "must be positive")
        self.cfg = cfg

    def items(self, code: str, qualname: str, path: str, parsed: ParsedBlob | None,
              lines: tuple[int, int] | None = None) -> list[ContextItem]:
        """``lines`` is the unit's line span in ``parsed``: units overlapping it (the unit
        itself, its container, its members) are never context."""
        if parsed is None or not code:
            return []
        names = Counter(_IDENT.findall(code))
        own = qualname.rsplit("::", 1)[-1]
        scored: list[tuple[float, int, Unit]] = []
        for i, u in enumerate(parsed.units):
            if u.kind in ("impl", "mod") or u.name == own or u.name not in names:
                continue
            if lines is not None and u.start_line <= lines[1] and lines[0] <= u.end_line:
                continue  # the unit itself, or one that contains it or is part of it
            direct = 2.0 if u.kind in _SKELETON_KINDS or u.kind == "fn" else 1.0
            scored.append((direct * names[u.name], -i, u))
        scored.sort(key=lambda t: (-t[0], -t[1]))
        out: list[ContextItem] = []
        seen: set[str] = set()
        budget = self.cfg.max_chars
        for score, _, u in scored:
            text = render(u, self.cfg.max_item_chars)
            if text in seen or len(text) > budget:
                continue
            seen.add(text)
            budget -= len(text)
            out.append(ContextItem(path=path, qualname=u.local_qualname, kind=u.kind, text=text,
                                   score=float(score), why="same_file"))
        return out


@hookimpl
def register_context(register):
    register("none", NoContext, NoContextConfig)
    register("same_file", SameFileContext, SameFileContextConfig)
