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

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.context import CharCounter, Reference, UnitQuery, pack, pack_references
from core.errors import CommitforgeError
from core.hookspecs import hookimpl
from core.records import ContextItem, Unit
from core.snapshot import LRU, check_snapshot

# (the lookahead lets positions where no name starts fail at once: 30% faster)
_IDENT = re.compile(r"(?=[A-Za-z_])\b[A-Za-z_][A-Za-z0-9_]*\b")
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
        self.count = CharCounter(cfg.chars_per_token)  # a length: cheaper than any memo
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
class BudgetedConfig:
    """Settings every budgeted strategy shares (subclasses add their own after these)."""

    name: str = ""
    max_tokens: int = 2048  # context budget per unit; items are packed whole
    chars_per_token: float = 3.2  # token estimate when the run's tokenizer is not loaded before building
    max_item_chars: int = 1200  # longer items lose doc comments, then (imports, repomap) keep a data type's leading fields or show the signature
    bodies: int = 0  # keep function bodies up to this many characters (0: signatures only)
    snapshot: str | None = "commit"  # commit | parent: the tree definitions (and recall) are taken from
    recall: bool = True  # measure context recall (resolves every unit's references)


@dataclass
class SameFileContextConfig(BudgetedConfig):
    name: str = "same_file"


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
class ImportsContextConfig(BudgetedConfig):
    name: str = "imports"
    related: bool = True  # also methods called on named types, their impls, types in their signatures


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
        return pack_references(refs, self.cfg.max_tokens, self.count)


@dataclass
class RepoMapContextConfig(BudgetedConfig):
    name: str = "repomap"
    top_files: int = 24  # definitions are taken from this many best-ranked files
    damping: float = 0.85
    iterations: int = 30
    max_files: int = 8000  # files of one language a snapshot may hold: the graph takes 12 bytes per pair per worker


class RepoMapContext(_Budgeted):
    """Definitions of the files a reference graph ranks highest from the unit's file."""

    def __init__(self, cfg: RepoMapContextConfig):
        if cfg.snapshot is None:
            raise CommitforgeError("context=repomap needs context.snapshot=commit or parent")
        if not 0 < cfg.damping < 1 or cfg.top_files < 1 or cfg.iterations < 1 or cfg.max_files < 1:
            raise CommitforgeError(f"context.damping={cfg.damping} must lie in (0, 1) and context.top_files="
                                   f"{cfg.top_files}, context.iterations={cfg.iterations}, context.max_files="
                                   f"{cfg.max_files} must be positive")
        super().__init__(cfg)

    def items(self, query: UnitQuery, snapshot: Any) -> list[ContextItem]:
        if not query.code:
            return []
        # the graph is kept with the snapshot, which outlives this object in a worker
        key = ("repomap", query.lang, self.cfg.top_files, self.cfg.damping, self.cfg.iterations)
        graph = snapshot.derived.get(key)
        if graph is None:
            graph = snapshot.derived[key] = _Graph(query.lang, self.cfg.max_files)
        ranks = graph.ranks(snapshot, query.path, self.cfg)
        named = Counter(_IDENT.findall(query.code))
        # every definition the unit names, from any top file; other definitions of the top
        # files, best-ranked first, up to a few times what the budget can hold
        filler = 3 * self.cfg.max_tokens * self.cfg.chars_per_token
        candidates = []
        longer: dict[int, str] = {}  # a long data type is packed by its signature, widened if room is left
        for path, rank in ranks:
            for ref in graph.definitions(snapshot, path):
                mentions = named.get(ref.name, 0)
                if not mentions and filler <= 0:
                    continue
                # methods are shown by their impl or trait skeletons; never the unit itself
                if ref.kind in ("mod", "method") or (path == query.path and _overlaps(ref, query)):
                    continue
                text = ref.short or ref.text
                if not mentions:
                    filler -= len(text)
                item = ContextItem(path=ref.path, qualname=ref.qualname, kind=ref.kind, text=text,
                                   score=round(1000.0 * rank * (1.0 + 4.0 * min(mentions, 5)), 4),
                                   why=f"repomap: rank {rank:.4f}" + (f", named {mentions}x" if mentions else ""))
                if ref.short:
                    longer[id(item)] = ref.text
                candidates.append(item)
        return pack(candidates, self.cfg.max_tokens, self.count, longer)


def _overlaps(ref: Reference, query: UnitQuery) -> bool:
    own = query.qualname
    return ref.qualname == own or ref.qualname.startswith(own + "::") or own.startswith(ref.qualname + "::")


class _Graph:
    """The file reference graph of a snapshot, kept up to date file by file, and
    personalised PageRank on it.

    A file points at the files defining the names it uses; an edge weighs the square
    root of how often the file uses each name the target defines, summed. Weights are
    kept as integers (fixed point, ``_SCALE``) in a dense matrix, so that a sum does not
    depend on the order it was taken in, and the matrix is updated, not rebuilt: a file
    that changed gets its row anew; where a name's definitions moved, the files using it
    gain or lose that name's share of their edges. A worker that built its graph from
    nothing at some commit holds the same weights as one that followed the history to it.
    Only the rows that changed are normalised again for PageRank, until files come or go.

    Memory: 12 bytes per pair of files (the weights and their normalised copy), 16 while
    files come or go (the weights are copied into their new places).
    """

    def __init__(self, lang: str, max_files: int = RepoMapContextConfig.max_files):
        self.lang = lang
        self.max_files = max_files
        self.version = -1
        self.blobs: dict[str, str] = {}  # path -> blob in the graph
        self.idents: dict[str, Counter] = {}
        self.defined: dict[str, set[str]] = {}  # path -> names it defines
        self.definers: dict[str, set[str]] = {}  # name -> paths
        self.mentioners: dict[str, set[str]] = {}  # name -> paths using it
        self.paths: list[str] = []  # sorted: the matrix's order
        self.at: dict[str, int] = {}
        self.weights = np.zeros((0, 0), dtype=np.int64)  # [i, j]: edges from paths[i] to paths[j]
        self._wt: np.ndarray | None = None  # the weights normalised per row (see _matrix)
        self._dangling = np.zeros(0, dtype=bool)  # rows without edges
        self._touched: set[int] = set()  # rows whose weights changed since _wt was made
        self._ident_cache = LRU(1024)  # blob -> identifier counts
        self._defs_cache = LRU(4096)  # (path, blob, index naming) -> definitions
        self._ranks: dict[str, list[tuple[str, float]]] = {}
        self._arrays: tuple | None = None

    def definitions(self, snapshot: Any, path: str) -> list[Reference]:
        # a file's definitions are named by the crates of the tree too (a package renamed in
        # Cargo.toml renames them, blob unchanged): an index says when by its ``naming``
        index = snapshot.index(self.lang)
        key = (path, snapshot.files.get(path), getattr(index, "naming", 0))
        return self._defs_cache.get_or(key, lambda: index.definitions(path))

    def _file_idents(self, snapshot: Any, blob: str) -> Counter:
        def make() -> Counter:
            parsed = snapshot.load(blob, self.lang)
            return Counter(_IDENT.findall(parsed.text)) if parsed is not None else Counter()
        return self._ident_cache.get_or(blob, make)

    def _sync(self, snapshot: Any) -> None:
        files = {p: b for p, b in snapshot.files.items() if snapshot.lang_of(p) == self.lang}
        if len(files) > self.max_files:
            # the dense graph grows with the square of the files: refused before it is made
            from core.cache_admin import human

            raise CommitforgeError(
                f"context=repomap: a snapshot holds {len(files):,} {self.lang} files, over context.max_files="
                f"{self.max_files}; its file graph would take {human(12 * len(files) ** 2)} per worker. "
                f"Raise context.max_files if the memory is there, or use context=imports, which keeps no such graph")
        changed = [p for p in files if self.blobs.get(p) != files[p]] + [p for p in self.blobs if p not in files]
        moved: dict[str, tuple[set[str], set[str]]] = {}  # name -> (paths that define it now, no longer)
        for path in changed:
            for name in self.idents.pop(path, ()):
                self.mentioners[name].discard(path)
            old_names = self.defined.pop(path, set())
            blob = files.get(path)
            if blob is None:
                self.blobs.pop(path, None)
                new_names: set[str] = set()
            else:
                self.blobs[path] = blob
                idents = self.idents[path] = self._file_idents(snapshot, blob)
                for name in idents:
                    self.mentioners.setdefault(name, set()).add(path)
                new_names = self.defined[path] = {r.name for r in self.definitions(snapshot, path)
                                                  if r.kind not in ("impl", "mod")}
            for name in old_names - new_names:
                self.definers[name].discard(path)
                moved.setdefault(name, (set(), set()))[1].add(path)
            for name in new_names - old_names:
                self.definers.setdefault(name, set()).add(path)
                moved.setdefault(name, (set(), set()))[0].add(path)
        self._renumber(sorted(self.blobs))
        weights, at, renewed = self.weights, self.at, set(changed)
        for name, (gained, lost) in moved.items():
            users = [m for m in self.mentioners.get(name, ()) if m not in renewed]
            if not users:
                continue
            rows = np.array([at[m] for m in users], dtype=np.intp)
            share = np.array([_fixed(self.idents[m][name]) for m in users], dtype=np.int64)
            # (the files that gained or lost the name changed: none of them is among its users)
            for target in gained:
                weights[rows, at[target]] += share
            for target in lost:
                if target in at:  # a file gone took its column with it
                    weights[rows, at[target]] -= share
            self._touched.update(rows.tolist())
        for path in changed:
            i = at.get(path)
            if i is None:
                continue
            self._touched.add(i)
            row: dict[int, int] = {}
            for name, n in self.idents[path].items():
                targets = self.definers.get(name)
                if targets:
                    share = _fixed(n)
                    for target in targets:
                        if target != path:
                            j = at[target]
                            row[j] = row.get(j, 0) + share
            weights[i] = 0
            if row:
                weights[i, list(row)] = list(row.values())
        self.version = snapshot.version
        self._ranks.clear()
        self._arrays = None

    def _renumber(self, paths: list[str]) -> None:
        """Give the weight matrix the rows and columns of ``paths`` (those of files gone are
        dropped, new files start with none)."""
        if paths == self.paths:
            return
        self._wt = self._arrays = None  # normalised again from scratch; freed before the copy
        at = {p: i for i, p in enumerate(paths)}
        kept = [p for p in self.paths if p in at]
        old = np.array([self.at[p] for p in kept], dtype=np.intp)
        new = np.array([at[p] for p in kept], dtype=np.intp)
        weights = np.zeros((len(paths), len(paths)), dtype=np.int64)
        for a in range(0, len(kept), 256):  # by blocks of rows: no whole temporary copy
            weights[new[a:a + 256, None], new] = self.weights[old[a:a + 256, None], old]
        self.paths, self.at, self.weights = paths, at, weights

    def _matrix(self) -> tuple:
        """The graph as a row-stochastic matrix: ``wt[i, j]``, the share of file ``i``'s
        edge weight that points at file ``j`` (rows without edges: ``dangling``).

        Dense: a matrix-vector product of a repository's files (about a thousand) takes a
        fraction of a millisecond, where gathering and scattering the edges one by one (a
        third of all pairs: common names are defined in many files) took several. Single
        precision: it halves the time of a product, and its rounding (about 1e-7 of a rank)
        is far below the error of stopping PageRank after ``iterations`` (0.85 ** 30: under
        1%)."""
        if self._arrays is None:
            if self._wt is None:
                self._wt = np.empty(self.weights.shape, dtype=np.float32)
                self._dangling = _normalise(self.weights, self._wt)
            elif self._touched:
                rows = np.array(sorted(self._touched), dtype=np.intp)
                part = np.empty((len(rows), len(self.paths)), dtype=np.float32)
                self._dangling[rows] = _normalise(self.weights[rows], part)
                self._wt[rows] = part
            self._touched.clear()
            self._arrays = (self.paths, self.at, self._wt, self._dangling)
        return self._arrays

    def ranks(self, snapshot: Any, path: str, cfg: RepoMapContextConfig) -> list[tuple[str, float]]:
        if self.version != snapshot.version:
            self._sync(snapshot)
        hit = self._ranks.get(path)
        if hit is not None:
            return hit
        paths, at, wt, dangling = self._matrix()
        n = len(paths)
        if n == 0:
            return []
        start = np.zeros(n)
        if path in at:
            start[at[path]] = 1.0
        else:
            start[:] = 1.0 / n
        rank = personalized_pagerank(wt, dangling, start, cfg.damping, cfg.iterations)
        order = np.argsort(-rank, kind="stable")[:cfg.top_files]
        hit = self._ranks[path] = [(paths[i], float(rank[i])) for i in order if rank[i] > 0]
        return hit


_SCALE = 1 << 30  # fixed point of the graph's edge weights


def _fixed(count: int) -> int:
    """The weight of a name a file uses ``count`` times: its square root, in fixed point
    (integer arithmetic only: the same on every machine)."""
    return math.isqrt(count * _SCALE * _SCALE)


def _normalise(weights: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``weights`` divided by the sum of their row, into ``out`` (single precision); which
    rows have no weight (dangling)."""
    totals = weights.sum(axis=1)
    dangling = totals == 0
    np.divide(weights, np.where(dangling, 1, totals)[:, None], out=out, casting="unsafe")
    return dangling


def personalized_pagerank(wt: np.ndarray, dangling: np.ndarray, start: np.ndarray, damping: float,
                          iterations: int) -> np.ndarray:
    """PageRank personalised to ``start`` (a distribution over the nodes), by ``iterations``
    power iterations: ``wt[i, j]`` is the share of node ``i``'s rank that flows to ``j`` (each
    row sums to 1, or to 0 for a ``dangling`` node, whose rank goes back to ``start``).
    Computed in ``wt``'s precision, returned as float64."""
    damping = float(damping)  # a Python float: NumPy keeps the arrays' precision
    start = start.astype(wt.dtype)
    rank = start.copy()
    teleport = (1 - damping) * start
    for _ in range(iterations):
        # numpy's own loop, not BLAS: a BLAS product may start threads that each worker
        # process then runs on the cores the other workers use (twice the time here). It
        # sums each node's inflow over the nodes in order: two nodes with the same in-edges
        # get the same rank to the last bit, a tie that the caller orders by name
        spread = np.einsum("ij,i->j", wt, rank)
        rank = teleport + damping * (spread + rank[dangling].sum() * start)
    return rank.astype(np.float64)


@hookimpl
def register_context(register):
    register("none", NoContext, NoContextConfig)
    register("same_file", SameFileContext, SameFileContextConfig)
    register("imports", ImportsContext, ImportsContextConfig)
    register("repomap", RepoMapContext, RepoMapContextConfig)
