"""Example lines written by earlier builds, kept so that a later build copies them.

A writer with ``line_files`` (``jsonl``: ``data/{split}.jsonl``) writes each example of a
split as one line, in order. After it wrote them, the build stage keeps each split's file
(a hard link in the cache, no copy) with, per line, the row it was built from (the sha1
of the row's line in ``chunks.jsonl``), where the line ends, and what the stats need of it
(token counts, whether it was truncated). A later build with the same settings (the
build cache's example settings, the writer's code and settings: ``base``) that puts the
same row in the same split (the split is part of the line) copies those bytes instead of
reading the example back from the build cache, unpacking its arrays and serialising them
again. A repository brought up to date after a new commit builds the new commit's rows
only; the rest of each file is copied.

Train only grows at its end when a commit is added, so the copy of its file starts
before the examples are built: as soon as the build's tokenizer is ready, a thread copies
the train file kept last into this run's (core.files.copy_ahead), while deduplication
and the builder run. The writer then finds those bytes written (rusty-kaspa: 256 MB, a
0.2 s copy, off an update's critical path); a train file that starts otherwise throws
the copy away.

A kept file changed since (its inode, size or modification time differ) is never used
and is forgotten; as with the chunk stage's kept outputs, an edit in place that keeps the
file's size and modification time is not seen. The ``KEPT_FILES`` files used last are
kept; ``reuse=false`` keeps none.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.blob_cache import connection, forget_connection, unusable
from core.files import AheadCopies, copy_range, copying_ahead, read_line, stat_key
from core.hash_points import HashPoints

KEPT_LINES_FORMAT = 1
KEPT_LINES_FILE = f"lines-f{KEPT_LINES_FORMAT}.sqlite"  # in the cache directory: the index
KEPT_LINES_DIR = f"lines-f{KEPT_LINES_FORMAT}"  # the kept files
KEPT_FILES = 6  # two runs' three splits
_ROW = 20  # bytes of a row's key (sha1)


class KeptExample(dict):
    """An example whose line an earlier build wrote: the fields the build stage's stats
    read (``split``, ``commit``, ``change``, token counts), and ``line``, where its bytes
    are (see :meth:`KeptLines.read`)."""

    __slots__ = ("keeper", "line")
    keeper: KeptLines
    line: tuple[int, int, int]  # (kept file, start, end)

    def load(self) -> dict[str, Any]:
        """The whole example, read back from its line (lists of ints)."""
        return read_line(self.keeper.read(*self.line))


class KeptLines:
    """The kept lines of one ``base`` (see the module's docstring), found by row and split;
    :meth:`note` records what a build made, :meth:`keep` keeps a written file."""

    def __init__(self, root: str | Path, base: str):
        self.path = Path(root) / KEPT_LINES_FILE
        self.folder = Path(root) / KEPT_LINES_DIR
        self.base = base
        self._files: list[int] = []  # open descriptors of the kept files in use
        self._index: dict[str, dict[bytes, tuple[int, int, int, int, int, bool]]] | None = None
        self._made: dict[int, tuple[bytes, bool]] = {}  # id(example) -> (row, truncated)

    def _conn(self) -> sqlite3.Connection:
        try:
            return connection(self.path, [
                ("CREATE TABLE IF NOT EXISTS kept_lines (name TEXT PRIMARY KEY, base TEXT NOT NULL, "
                 "split TEXT NOT NULL, rows BLOB NOT NULL, ends BLOB NOT NULL, meta BLOB NOT NULL, "
                 "stat TEXT NOT NULL, used REAL NOT NULL)")])
        except (sqlite3.DatabaseError, OSError) as exc:
            raise unusable("build cache", self.path, exc) from None

    def _load(self) -> dict[str, dict[bytes, tuple[int, int, int, int, int, bool]]]:
        """split -> row -> (file, start, end, n_tokens, n_target_tokens, truncated), from
        every usable kept file of this base (the most recently used wins)."""
        if self._index is not None:
            return self._index
        index: dict[str, dict[bytes, tuple[int, int, int, int, int, bool]]] = {}
        try:
            conn = self._conn()
            found = conn.execute("SELECT name, split, rows, ends, meta, stat FROM kept_lines WHERE base = ? "
                                 "ORDER BY used", (self.base,)).fetchall()
            for name, split, rows, ends, meta, stat in found:
                try:
                    fd = os.open(self.folder / name, os.O_RDONLY)
                except OSError:
                    conn.execute("DELETE FROM kept_lines WHERE name = ?", (name,))
                    continue
                n = len(rows) // _ROW
                stops = np.frombuffer(ends, dtype=np.int64)
                counts = np.frombuffer(meta, dtype=np.int32)
                if stat_key(fd) != stat or len(stops) != n or len(counts) != 3 * n:
                    os.close(fd)  # changed since it was kept: never used again
                    conn.execute("DELETE FROM kept_lines WHERE name = ?", (name,))
                    (self.folder / name).unlink(missing_ok=True)
                    continue
                conn.execute("UPDATE kept_lines SET used = ? WHERE name = ?", (time.time(), name))
                f = len(self._files)
                self._files.append(fd)
                starts = [0, *stops[:-1].tolist()]
                stops_l, counts_l = stops.tolist(), counts.tolist()
                into = index.setdefault(split, {})
                for i in range(n):
                    into[rows[i * _ROW:(i + 1) * _ROW]] = (f, starts[i], stops_l[i], counts_l[3 * i],
                                                           counts_l[3 * i + 1], bool(counts_l[3 * i + 2]))
        except sqlite3.DatabaseError as exc:
            raise unusable("build cache", self.path, exc) from None
        self._index = index
        return index

    def find(self, row: bytes, split: str, change: Mapping[str, Any]) -> tuple[KeptExample, bool] | None:
        """The kept example of ``row`` in ``split`` (``change``: the row) and whether it
        was truncated, or None."""
        return self.find_all([row], [split], [change]).get(0)

    def find_all(self, rows: Sequence[bytes], splits: Sequence[str],
                 changes: Sequence[Mapping[str, Any]]) -> dict[int, tuple[KeptExample, bool]]:
        """:meth:`find` of each (row, split, change), in one go: the position of each found
        -> (its kept example, whether it was truncated). An update of a history finds tens
        of thousands, most of its rows."""
        index = self._load()
        look = {split: index.get(split, {}).get for split in set(splits)}
        made, out, fields = self._made, {}, itemgetter("id", "commit", "change")
        for i, (row, split) in enumerate(zip(rows, splits)):
            hit = look[split](row)
            if hit is None:
                continue
            f, start, end, n_tokens, n_target, truncated = hit
            uid, commit, change = fields(changes[i])
            example = KeptExample({"id": uid, "split": split, "n_tokens": n_tokens, "n_target_tokens": n_target,
                                   "commit": commit, "change": change})
            example.keeper, example.line = self, (f, start, end)
            made[id(example)] = (row, truncated)
            out[i] = (example, truncated)
        return out

    def copy_ahead(self, split: str, path: Path, aheads: AheadCopies) -> None:
        """Start copying the ``split`` file this base kept last to ``path``, the output
        the writer will write it to (see core.files.copy_ahead): a build whose rows of
        that split start with the same rows as the last build's (a repository brought up
        to date after a new commit: train only grows at its end) starts the file with
        those lines. The copy runs while the examples are built; if the file turns out
        to start otherwise, it is thrown away."""
        try:
            found = self._conn().execute("SELECT name, stat FROM kept_lines WHERE base = ? AND split = ? "
                                         "ORDER BY used DESC LIMIT 1", (self.base, split)).fetchone()
        except sqlite3.DatabaseError:
            return  # an optimisation only: the build reads the index itself, and says so
        if found is None:
            return
        try:
            fd = os.open(self.folder / found[0], os.O_RDONLY)
        except OSError:
            return
        try:
            if stat_key(fd) == found[1]:
                aheads.copy(path, [(fd, 0, os.fstat(fd).st_size)])
        except OSError:
            pass
        finally:
            os.close(fd)

    def copy_ahead_leading(self, rows: list[bytes], splits: list[str], path_of: Callable[[str], Path],
                           aheads: AheadCopies) -> None:
        """Start copying each split's leading kept lines to its file (``path_of(split)``,
        unless a copy ahead of it runs already; see core.files.copy_ahead): the lines of
        the split's first rows, in order, up to its first row without a kept line in that
        split. A builder whose examples are assembled rows (``examples_as_assembled``)
        makes those rows its split's first examples, copied from these lines, while the
        copy runs."""
        index = self._load()
        runs: dict[str, list[list[int]]] = {}
        stopped: set[str] = set()
        for row, split in zip(rows, splits):
            if split in stopped:
                continue
            hit = index.get(split, {}).get(row)
            if hit is None:
                stopped.add(split)
                continue
            f, start, end = hit[0], hit[1], hit[2]
            mine = runs.setdefault(split, [])
            if mine and mine[-1][0] == f and mine[-1][2] == start:
                mine[-1][2] = end  # the next line of the same file, as ExampleRows.write_lines joins them
            else:
                mine.append([f, start, end])
        for split, mine in runs.items():
            path = path_of(split)
            if not copying_ahead(path):
                # hashed as copied, unless the file starts with a kept file's first bytes,
                # whose own saved states the writing resumes from (core.hash_points)
                aheads.copy(path, [(self._files[f], a, b - a) for f, a, b in mine], hashed=mine[0][1] > 0)

    def note(self, example: dict[str, Any], row: bytes, truncated: bool) -> None:
        """Record that ``example`` (an object the build keeps until it is written) was
        made from ``row``."""
        self._made[id(example)] = (row, truncated)

    def read(self, f: int, start: int, end: int) -> bytes:
        return os.pread(self._files[f], end - start, start)

    def copy(self, runs: list[tuple[int, int, int]], out: IO[bytes]) -> None:
        """Write the kept bytes of each (file, start, end) to ``out``: by ``out``'s own
        ``copy_range`` when it has one (a background writer, see core.files.atomic_write),
        else by core.files.copy_range. The kept files stay open until :meth:`close`."""
        own = getattr(out, "copy_range", None)
        for f, start, end in runs:
            if own is not None:
                # a copy of a kept file's first bytes may resume its sha256 (core.hash_points)
                points = HashPoints(self.path.parent).find(self._files[f]) if start == 0 else None
                own(self._files[f], start, end - start, points)
            else:
                copy_range(self._files[f], start, end - start, out)

    def keep(self, path: Path, split: str, examples: list[dict[str, Any]], ends: list[int]) -> bool:
        """Keep ``path`` (a finished output, ``examples``' lines ending at ``ends``) for
        later builds; False when it cannot be (an example this build did not note, another
        file system, no hard links)."""
        made = self._made
        if len(ends) != len(examples) or any(id(ex) not in made for ex in examples):
            return False
        if any(b < a for a, b in zip([0, *ends], ends)):
            return False
        try:
            if path.stat().st_size != (ends[-1] if ends else 0):
                return False  # the file holds more than the lines (a header): nothing to copy from
        except OSError:
            return False
        rows = b"".join(made[id(ex)][0] for ex in examples)
        if len(rows) != _ROW * len(examples):
            return False
        meta = np.array([(ex["n_tokens"], ex["n_target_tokens"], made[id(ex)][1]) for ex in examples],
                        dtype=np.int32).reshape(-1)
        name = hashlib.sha256(f"{self.base}:{split}:{os.getpid()}:{time.time_ns()}".encode()).hexdigest()[:24] + ".jsonl"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            os.link(path, self.folder / name)
            fd = os.open(self.folder / name, os.O_RDONLY)
            try:
                stat = stat_key(fd)
            finally:
                os.close(fd)
        except OSError:
            return False
        HashPoints(self.path.parent).remember(path, self.folder / name)
        try:
            conn = self._conn()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO kept_lines (name, base, split, rows, ends, meta, stat, used) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (name, self.base, split, rows, np.asarray(ends, dtype=np.int64).tobytes(),
                              meta.tobytes(), stat, time.time()))
                old = [n for (n,) in conn.execute("SELECT name FROM kept_lines ORDER BY used DESC LIMIT -1 OFFSET ?",
                                                  (KEPT_FILES,))]
                for n in old:
                    conn.execute("DELETE FROM kept_lines WHERE name = ?", (n,))
        except sqlite3.DatabaseError as exc:
            (self.folder / name).unlink(missing_ok=True)
            raise unusable("build cache", self.path, exc) from None
        for n in old:
            (self.folder / n).unlink(missing_ok=True)
        self._forget_strays()
        return True

    def _forget_strays(self) -> None:
        """Remove files of the folder the index does not name (a run killed between linking
        a file and recording it) once they are an hour old: a run may be between the two now."""
        try:
            named = {n for (n,) in self._conn().execute("SELECT name FROM kept_lines")}
            now = time.time()
            for path in self.folder.iterdir():
                if path.name not in named and now - path.lstat().st_ctime > 3600:
                    path.unlink(missing_ok=True)
        except (OSError, sqlite3.DatabaseError):
            pass

    def close(self) -> None:
        for fd in self._files:
            os.close(fd)
        self._files = []
        self._index = None
        forget_connection(self.path)
