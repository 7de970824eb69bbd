"""The repository's files at each commit, for context strategies.

Context is resolved against the whole tree a unit lived in, not only the files its
commit changed. The main process lists the tree of the first snapshot once
(``git ls-tree``) and the difference from each snapshot to the next with one
``git diff-tree --stdin`` process; workers replay those differences on a ``Snapshot``
that keeps one symbol index per language up to date, so a commit that changes three
files updates three files' worth of index.

Which tree a commit's units see is the strategy's ``snapshot`` setting:

- ``commit``: the tree after the commit. New code sees the definitions it compiles
  against, including ones the same commit added or changed in other files (the
  context can reveal part of a multi-file change: mild leakage, best recall).
- ``parent``: the tree before the commit (its first parent). Context is what the
  author saw before writing the change; definitions added by the same commit are
  missing (no leakage, lower recall for new code).
"""

from __future__ import annotations

import subprocess
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from core.collector import paused
from core.errors import CommitforgeError
from core.gitio import Repository, git_argv, git_env
from core.language import file_extension
from core.records import CommitRecord, ParsedBlob

SNAPSHOTS = ("commit", "parent")


@dataclass(slots=True)
class TreeSteps:
    """The snapshots of a run of commits: the first one whole, then changes."""

    start: dict[str, str]  # path -> blob of the first commit's snapshot
    deltas: list[dict[str, str | None]]  # per following commit: path -> blob, None when removed


def check_snapshot(value: str | None) -> None:
    if value is not None and value not in SNAPSHOTS:
        raise CommitforgeError(f"context.snapshot={value!r} is not one of {', '.join(SNAPSHOTS)}")


def plan_trees(repo: Repository, commits: list[CommitRecord], keep: Callable[[str], bool],
               at: str) -> list[dict[str, str | None]]:
    """For each commit, the kept files of its snapshot as a change from the previous
    commit's (the first one's as a change from an empty tree)."""
    check_snapshot(at)
    trees: list[str | None] = []
    for rec in commits:
        trees.append(rec.commit if at == "commit" else (rec.parents[0] if rec.parents else None))
    out: list[dict[str, str | None]] = []
    if not commits:
        return out
    first = trees[0]
    out.append(_ls_tree(repo, first, keep) if first else {})
    pairs = []
    for i in range(1, len(trees)):
        a, b = trees[i - 1], trees[i]
        pairs.append((a, b))
    diffs = _diff_trees(repo, [(a, b) for a, b in pairs if a and b and a != b], keep)
    for a, b in pairs:
        if a == b:
            out.append({})
        elif a and b:
            out.append(diffs[(a, b)])
        elif b:  # from an empty tree (a root commit's parent) to a tree
            out.append(_ls_tree(repo, b, keep))
        else:  # to an empty tree: everything kept so far is removed
            current: dict[str, str] = {}
            for d in out:
                apply_delta(current, d)
            out.append({p: None for p in current})
    return out


def tree_steps(deltas: list[dict[str, str | None]], sizes: int | list[int]) -> Iterator[TreeSteps]:
    """The TreeSteps of consecutive runs of commits, in order: runs of ``sizes`` commits
    each, or of the given lengths."""
    if isinstance(sizes, int):
        sizes = [min(sizes, len(deltas) - s) for s in range(0, len(deltas), sizes)]
    tree: dict[str, str] = {}
    applied = 0
    start = 0
    for size in sizes:
        while applied <= start:
            apply_delta(tree, deltas[applied])
            applied += 1
        yield TreeSteps(start=dict(tree), deltas=deltas[start + 1:start + size])
        start += size


def snapshot_trees(repo: Repository, commits: list[CommitRecord], at: str) -> list[str]:
    """The git tree id of each commit's snapshot (empty for a root commit's parent): it
    names every file a context strategy can read there, so it keys the work done at it."""
    check_snapshot(at)
    revs = [rec.commit if at == "commit" else (rec.parents[0] if rec.parents else "") for rec in commits]
    wanted = [r for r in dict.fromkeys(revs) if r]
    if not wanted:
        return ["" for _ in revs]
    proc = subprocess.run(git_argv(repo.git_dir, "cat-file", "--batch-check=%(objectname) %(objecttype)"),
                          input="".join(f"{r}^{{tree}}\n" for r in wanted).encode(), capture_output=True,
                          env=git_env(), check=False)
    if proc.returncode != 0:
        raise CommitforgeError(f"git cat-file failed: {proc.stderr.decode(errors='replace').strip()}")
    answers = proc.stdout.decode().splitlines()
    tree_of: dict[str, str] = {}
    for rev, answer in zip(wanted, answers):
        oid, _, kind = answer.partition(" ")
        tree_of[rev] = oid if kind == "tree" else f"missing:{rev}"  # never equal to a real tree id
    return [tree_of.get(r, f"missing:{r}") if r else "" for r in revs]


def apply_delta(tree: dict[str, Any], delta: dict[str, Any | None]) -> None:
    """Set ``tree``'s paths to ``delta``'s values; a None value removes the path."""
    for path, blob in delta.items():
        if blob is None:
            tree.pop(path, None)
        else:
            tree[path] = blob


def _ls_tree(repo: Repository, rev: str, keep: Callable[[str], bool]) -> dict[str, str]:
    raw = subprocess.run(git_argv(repo.git_dir, "ls-tree", "-r", "-z", "--full-tree", rev),
                         capture_output=True, env=git_env(), check=False)
    if raw.returncode != 0:
        raise CommitforgeError(f"git ls-tree {rev} failed: {raw.stderr.decode(errors='replace').strip()}")
    out: dict[str, str] = {}
    for entry in raw.stdout.split(b"\0"):
        if not entry:
            continue
        meta, _, path_b = entry.partition(b"\t")
        mode, kind, blob = meta.split(b" ")
        path = path_b.decode("utf-8", "surrogateescape")
        if kind == b"blob" and mode != b"120000" and keep(path):
            out[path] = blob.decode()
    return out


def _diff_trees(repo: Repository, pairs: list[tuple[str, str]], keep: Callable[[str], bool]
                ) -> dict[tuple[str, str], dict[str, str | None]]:
    """Changes from ``a`` to ``b`` for every pair, from one ``git diff-tree --stdin``."""
    if not pairs:
        return {}
    stdin = "".join(f"{b} {a}\n" for a, b in pairs).encode()
    proc = subprocess.run(git_argv(repo.git_dir, "diff-tree", "--stdin", "--always", "-r", "-z", "--no-renames"),
                          input=stdin, capture_output=True, env=git_env(), check=False)
    if proc.returncode != 0:
        raise CommitforgeError(f"git diff-tree failed: {proc.stderr.decode(errors='replace').strip()}")
    fields = proc.stdout.split(b"\0")
    out: dict[tuple[str, str], dict[str, str | None]] = {}
    it = iter(pairs)
    current: dict[str, str | None] | None = None
    i = 0
    while i < len(fields):
        f = fields[i]
        if not f:
            i += 1
            continue
        if f[:1] != b":":  # the header of the next pair: the commit id
            a, b = next(it)
            current = out[(a, b)] = {}
            i += 1
            continue
        _, new_mode, _, new_blob, status = f[1:].split(b" ")
        path = fields[i + 1].decode("utf-8", "surrogateescape")
        i += 2
        if not keep(path) or current is None:
            continue
        if status[:1] == b"D" or new_mode in (b"120000", b"160000"):
            current[path] = None
        else:
            current[path] = new_blob.decode()
    return out


class Snapshot:
    """The repository's files at one commit, in a worker, with a symbol index per language.

    ``advance``/``apply`` move it to another commit's tree; the indexes built so far are
    updated with the files that differ. Per-file summaries (what the language's index
    keeps of a parsed file) are cached by blob, so a file version is summarised once.
    """

    def __init__(self, languages: dict[str, Any], load: Callable[[str, str], ParsedBlob | None],
                 read: Callable[[str], bytes | None], options: dict[str, Any] | None = None,
                 summaries: int = 16384, stores: dict[str, Any] | None = None,
                 read_many: Callable[[list[str]], Iterable[bytes | None]] | None = None) -> None:
        self.languages = languages  # name -> Language
        self.ext_lang = {e: name for name, lang in languages.items() for e in lang.extensions}
        self.load = load  # (blob, lang) -> ParsedBlob, None when the blob was skipped
        self.read = read  # blob -> bytes (project files such as Cargo.toml)
        # blobs -> their bytes in order, asked for ahead (the project files of a whole tree)
        self.read_many = read_many or (lambda blobs: map(read, blobs))
        self.options = options or {}
        self.files: dict[str, str] = {}  # path -> blob
        self.version = 0
        self._indexes: dict[str, Any] = {}
        self._summaries = LRU(summaries)
        # lang -> a persistent summary store (core.blob_cache.SummaryCache), when there is one
        self.stores = stores or {}
        # what context strategies derive from the files and keep up to date themselves (by
        # ``version``), under keys of their choosing: it lives as long as the snapshot,
        # whereas a worker gets a new strategy object with every task
        self.derived: dict[Any, Any] = {}

    def lang_of(self, path: str) -> str | None:
        return self.ext_lang.get(file_extension(path))

    def summary(self, blob: str | None, lang: str) -> Any:
        if blob is None:
            return None

        def make() -> Any:
            parsed = self.load(blob, lang)
            return None if parsed is None else self.languages[lang].summarize(parsed, self.options)

        return self._summaries.get_or((blob, lang), make)

    def index(self, lang: str) -> Any:
        idx = self._indexes.get(lang)
        if idx is None:
            idx = self._indexes[lang] = self.languages[lang].symbol_index(self.options)
            # the whole tree's summaries and entries live as long as the index (core.collector):
            # an update of rusty-kaspa walked them twice for nothing (0.08 s)
            with paused():
                self._update(idx, lang, self.files.items())
        return idx

    def advance(self, tree: dict[str, str]) -> None:
        """Move to ``tree`` (path -> blob)."""
        changed: dict[str, str | None] = {p: b for p, b in tree.items() if self.files.get(p) != b}
        changed.update({p: None for p in self.files if p not in tree})
        self.apply(changed)

    def apply(self, delta: dict[str, str | None]) -> None:
        if not delta:
            return
        self.version += 1
        apply_delta(self.files, delta)
        for lang, idx in self._indexes.items():
            self._update(idx, lang, delta.items())

    def _update(self, idx: Any, lang: str, items: Iterable[tuple[str, str | None]]) -> None:
        project_names = self.languages[lang].project_files
        sources: dict[str, Any] = {}
        project_blobs: dict[str, str | None] = {}
        paths: list[tuple[str, str | None]] = []
        for path, blob in items:
            if self.lang_of(path) == lang:
                paths.append((path, blob))
            elif path.rsplit("/", 1)[-1] in project_names:
                project_blobs[path] = blob
        to_read = [(path, blob) for path, blob in project_blobs.items() if blob]
        read = dict(zip([path for path, _ in to_read], self.read_many([blob for _, blob in to_read])))
        projects: dict[str, bytes | None] = {path: read.get(path) for path in project_blobs}
        store = self.stores.get(lang)
        if store is not None and paths:
            # summaries neither in memory nor in the store are made and stored, in one go
            lru = self._summaries
            wanted = list(dict.fromkeys(b for _, b in paths if b is not None and (b, lang) not in lru))
            if wanted:
                stored = store.get_many(wanted)
                made: dict[str, Any] = {}
                for blob in wanted:
                    value = stored.get(blob)
                    if value is None:
                        value = self.summary(blob, lang)
                        if value is not None:  # a blob without a summary (skipped) is not stored
                            made[blob] = value
                    else:
                        lru.get_or((blob, lang), lambda v=value: v)
                store.put_many(made)
        for path, blob in paths:
            sources[path] = self.summary(blob, lang)
        if sources or projects:
            idx.update(sources, projects)


class LRU(OrderedDict):
    """A small bounded mapping (most recently used last)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key: Any, make: Callable[[], Any]) -> Any:
        try:
            value = self[key]
            self.move_to_end(key)
            return value
        except KeyError:
            value = self[key] = make()
            if len(self) > self.size:
                self.popitem(last=False)
            return value
