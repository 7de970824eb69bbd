"""Context strategies: ``none``, ``same_file``, ``imports`` and ``repomap``.

- ``none``: no context (the naive baseline).
- ``same_file``: definitions from the unit's own file that its code names, by name.
- ``imports``: the unit's ``use`` paths and the names it references, resolved by the
  language's symbol index against the whole tree at the commit (other files, other
  crates of the workspace, re-exports, globs, aliases), plus the methods it calls on
  those types, their impl blocks and the types in their signatures.
- ``repomap``: no import resolution; files are ranked by a reference graph (a file
  points at the files that define the names it uses) with PageRank personalised to
  the unit's file, and the definitions of the top files are ranked by that rank and by
  whether the unit names them.

All render definitions as skeletons (fields, variants, signatures; no function bodies
unless ``bodies`` allows short ones) and pack them whole, best first, into
``max_tokens`` (counted with the run's tokenizer when it can be loaded before the build
stage, else estimated as ``chars_per_token`` characters per token).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.context import CharCounter, Reference, UnitQuery, pack, score, to_item
from core.errors import CommitforgeError
from core.hookspecs import hookimpl
from core.records import ContextItem, Unit
from core.snapshot import LRU, check_snapshot

_IDENT = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
_SKELETON_KINDS = {"struct", "enum", "union", "type", "const", "static", "macro", "trait"}


class _Budgeted:
    """Shared settings: token budget, how tokens are counted, snapshot and recall."""

    def __init__(self, cfg: Any):
        if cfg.max_tokens < 0 or cfg.chars_per_token <= 0 or cfg.max_item_chars < 1:
            raise CommitforgeError(
                f"context.max_tokens={cfg.max_tokens}, context.chars_per_token={cfg.chars_per_token} and "
                f"context.max_item_chars={cfg.max_item_chars} must be positive")
        check_snapshot(cfg.snapshot)
        if cfg.recall and cfg.snapshot is None:
            raise CommitforgeError("context.recall=true needs a snapshot: set context.snapshot=commit or parent")
        self.cfg = cfg
        self.snapshot = cfg.snapshot
        self.recall = cfg.recall
        self.count = _Memo(CharCounter(cfg.chars_per_token))
        self.counted_with = f"chars/{cfg.chars_per_token}"

    @property
    def options(self) -> dict[str, Any]:
        return {"max_item_chars": self.cfg.max_item_chars, "bodies": self.cfg.bodies}

    def use_token_counter(self, counter: Any, name: str) -> None:
        """Count the budget with the run's tokenizer."""
        self.count = _Memo(counter)
        self.counted_with = name


class _Memo:
    """Token counts of recently seen texts (context items repeat across units)."""

    def __init__(self, fn: Any):
        self.fn = fn
        self.cache = LRU(65536)

    def __call__(self, text: str) -> int:
        return self.cache.get_or(text, lambda: self.fn(text))

    def __getstate__(self) -> dict:
        return {"fn": self.fn}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["fn"])


@dataclass
class NoContextConfig:
    name: str = "none"
    snapshot: str | None = None
    recall: bool = False


class NoContext:
    """No context: the ablation baseline. With ``recall`` and a snapshot it still measures
    how many references go without context (recall 0)."""

    def __init__(self, cfg: NoContextConfig):
        check_snapshot(cfg.snapshot)
        self.cfg = cfg
        self.snapshot = cfg.snapshot
        self.recall = cfg.recall and cfg.snapshot is not None
        self.options: dict[str, Any] = {}

    def items(self, query: UnitQuery, snapshot: Any) -> list[ContextItem]:
        return []


@dataclass
class SameFileContextConfig:
    name: str = "same_file"
    max_tokens: int = 2048
    chars_per_token: float = 3.2
    max_item_chars: int = 1200  # longer definitions are shown by their signature only
    bodies: int = 0
    snapshot: str | None = "commit"  # only for measuring recall
    recall: bool = True


def render(unit: Unit, max_item_chars: int) -> str:
    """A definition as a skeleton: data types and short items whole, functions as signatures."""
    if unit.kind in _SKELETON_KINDS and len(unit.text) <= max_item_chars:
        return unit.text
    if unit.kind == "method" and unit.header:
        return f"{unit.header} {{ {unit.signature}; }}"
    return unit.signature + (";" if unit.kind in ("fn", "method") else " { … }")


class SameFileContext(_Budgeted):
    """Definitions of the unit's own file that its code names, ranked by how often."""

    def __init__(self, cfg: SameFileContextConfig):
        super().__init__(cfg)
        self._module_path: Any = None

    def items(self, query: UnitQuery, snapshot: Any) -> list[ContextItem]:
        parsed = query.parsed
        if parsed is None or not query.code:
            return []
        names = Counter(_IDENT.findall(query.code))
        own = query.qualname.rsplit("::", 1)[-1]
        prefix = query.qualname[:len(query.qualname) - len(query.local_qualname)]  # "crate::module::"
        lines = query.lines
        candidates = []
        for u in parsed.units:
            if u.kind in ("impl", "mod") or u.name == own or u.name not in names:
                continue
            if lines is not None and u.start_line <= lines[1] and lines[0] <= u.end_line:
                continue  # the unit itself, or one that contains it or is part of it
            direct = 2.0 if u.kind in _SKELETON_KINDS or u.kind == "fn" else 1.0
            candidates.append(ContextItem(path=query.path, qualname=prefix + u.local_qualname, kind=u.kind,
                                          text=render(u, self.cfg.max_item_chars),
                                          score=float(direct * names[u.name]), why="same_file"))
        return pack(candidates, self.cfg.max_tokens, self.count)


@dataclass
class ImportsContextConfig:
    name: str = "imports"
    max_tokens: int = 2048
    chars_per_token: float = 3.2
    max_item_chars: int = 1200  # longer data types lose doc comments, then show their signature only
    bodies: int = 0  # keep function bodies up to this many characters (0: signatures only)
    related: bool = True  # also methods called on named types, their impls, types in their signatures
    snapshot: str = "commit"  # commit | parent: the tree definitions are taken from
    recall: bool = True


class ImportsContext(_Budgeted):
    """Definitions the unit's imports and references resolve to, across the repository."""

    def __init__(self, cfg: ImportsContextConfig):
        if cfg.snapshot is None:
            raise CommitforgeError("context=imports needs context.snapshot=commit or parent")
        super().__init__(cfg)

    def items(self, query: UnitQuery, snapshot: Any) -> list[ContextItem]:
        if not query.code:
            return []
        refs = snapshot.index(query.lang).references(query, related=self.cfg.related)
        return pack((to_item(r) for r in refs), self.cfg.max_tokens, self.count)


@dataclass
class RepoMapContextConfig:
    name: str = "repomap"
    max_tokens: int = 2048
    chars_per_token: float = 3.2
    max_item_chars: int = 1200
    bodies: int = 0
    top_files: int = 24  # definitions are taken from this many best-ranked files
    damping: float = 0.85
    iterations: int = 30
    snapshot: str = "commit"
    recall: bool = True


class RepoMapContext(_Budgeted):
    """Definitions of the files a reference graph ranks highest from the unit's file."""

    def __init__(self, cfg: RepoMapContextConfig):
        if cfg.snapshot is None:
            raise CommitforgeError("context=repomap needs context.snapshot=commit or parent")
        if not 0 < cfg.damping < 1 or cfg.top_files < 1 or cfg.iterations < 1:
            raise CommitforgeError(f"context.damping={cfg.damping} must lie in (0, 1) and context.top_files="
                                   f"{cfg.top_files}, context.iterations={cfg.iterations} must be positive")
        super().__init__(cfg)
        self._graphs: dict[str, _Graph] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_graphs": {}}

    def items(self, query: UnitQuery, snapshot: Any) -> list[ContextItem]:
        if not query.code:
            return []
        graph = self._graphs.get(query.lang)
        if graph is None:
            graph = self._graphs[query.lang] = _Graph(query.lang)
        ranks = graph.ranks(snapshot, query.path, self.cfg)
        index = snapshot.index(query.lang)
        named = Counter(_IDENT.findall(query.code))
        candidates = []
        for path, rank in ranks:
            for ref in index.definitions(path):
                # methods are shown by their impl or trait skeletons
                if ref.kind in ("mod", "method") or (path == query.path and _overlaps(ref, query)):
                    continue
                mentions = named.get(ref.name, 0)
                ref.count = mentions
                item = to_item(ref)
                item.score = round(1000.0 * rank * (1.0 + 4.0 * min(mentions, 5)), 4)
                item.why = f"repomap: rank {rank:.4f}" + (f", named {mentions}x" if mentions else "")
                candidates.append(item)
        return pack(candidates, self.cfg.max_tokens, self.count)


def _overlaps(ref: Reference, query: UnitQuery) -> bool:
    own = query.qualname
    return ref.qualname == own or ref.qualname.startswith(own + "::") or own.startswith(ref.qualname + "::")


class _Graph:
    """The file reference graph of one snapshot version, and personalised PageRank on it."""

    def __init__(self, lang: str):
        self.lang = lang
        self.version = -1
        self.paths: list[str] = []
        self.src = self.dst = self.weight = np.zeros(0)
        self._idents = LRU(16384)  # blob -> identifier counts
        self._ranks: dict[str, list[tuple[str, float]]] = {}

    def _file_idents(self, snapshot: Any, blob: str) -> Counter:
        def make() -> Counter:
            parsed = snapshot.load(blob, self.lang)
            return Counter(_IDENT.findall(parsed.text)) if parsed is not None else Counter()
        return self._idents.get_or(blob, make)

    def _build(self, snapshot: Any) -> None:
        index = snapshot.index(self.lang)
        self.paths = sorted(p for p in snapshot.files if snapshot.lang_of(p) == self.lang)
        at = {p: i for i, p in enumerate(self.paths)}
        definers: dict[str, list[int]] = {}
        for i, p in enumerate(self.paths):
            for name in {r.name for r in index.definitions(p) if r.kind not in ("impl", "mod")}:
                definers.setdefault(name, []).append(i)
        edges: dict[tuple[int, int], float] = {}
        for p in self.paths:
            a = at[p]
            for name, n in self._file_idents(snapshot, snapshot.files[p]).items():
                for b in definers.get(name, ()):
                    if b != a:
                        edges[(a, b)] = edges.get((a, b), 0.0) + n ** 0.5
        self.src = np.fromiter((k[0] for k in edges), dtype=np.int64, count=len(edges))
        self.dst = np.fromiter((k[1] for k in edges), dtype=np.int64, count=len(edges))
        w = np.fromiter(edges.values(), dtype=np.float64, count=len(edges))
        out = np.bincount(self.src, weights=w, minlength=len(self.paths)) if len(edges) else np.zeros(len(self.paths))
        self.weight = w / np.where(out[self.src] > 0, out[self.src], 1.0) if len(edges) else w
        self.version = snapshot.version
        self._ranks.clear()

    def ranks(self, snapshot: Any, path: str, cfg: RepoMapContextConfig) -> list[tuple[str, float]]:
        if self.version != snapshot.version:
            self._build(snapshot)
        hit = self._ranks.get(path)
        if hit is not None:
            return hit
        n = len(self.paths)
        if n == 0:
            return []
        start = np.zeros(n)
        if path in self.paths:
            start[self.paths.index(path)] = 1.0
        else:
            start[:] = 1.0 / n
        rank = start.copy()
        out_deg = np.bincount(self.src, minlength=n) if len(self.src) else np.zeros(n)
        dangling = out_deg == 0
        for _ in range(cfg.iterations):
            spread = np.bincount(self.dst, weights=rank[self.src] * self.weight, minlength=n) if len(self.src) else 0.0
            rank = (1 - cfg.damping) * start + cfg.damping * (spread + rank[dangling].sum() * start)
        order = np.argsort(-rank, kind="stable")[:cfg.top_files]
        hit = self._ranks[path] = [(self.paths[i], float(rank[i])) for i in order if rank[i] > 0]
        return hit


@hookimpl
def register_context(register):
    register("none", NoContext, NoContextConfig)
    register("same_file", SameFileContext, SameFileContextConfig)
    register("imports", ImportsContext, ImportsContextConfig)
    register("repomap", RepoMapContext, RepoMapContextConfig)
