"""Example lines written by earlier builds, kept so that a later build links or copies them.

A writer with ``line_shards`` (``jsonl``: ``data/{split}/{shard:05d}.jsonl``) writes each
split's examples as lines, in order, into shards of about ``shard_bytes``. Where a shard
ends depends on its own lines only (:func:`ends_shard`: past half the size, after a line
whose example id hashes low enough for its size): a split that changes in one place
(a row dropped or added in the middle, as deduplication does when val's first commit
moves into train) makes other shards only where it changed, and the same shards again
after the next end they share. After writing them, the build stage keeps each shard (a
hard link in the cache, no copy) with, per line, the row it was built from (the sha1 of
the row's line in ``chunks/``), where the line ends, what the stats need of it
(token counts, whether it was truncated), and the shard's sha256. A later build with the
same settings (the build cache's example settings, the writer's code and settings:
``base``) that puts the same row in the same split (the split is part of the line)
copies those bytes instead of reading the example back from the build cache, unpacking
its arrays and serialising them again; and a shard
of the later build that is a whole shard kept here (one that ended by the rule, not with
its split), line for line, is that file: a hard link, neither copied nor hashed again. A
repository brought up to date after a new commit builds the new commit's rows only; train
links the shards that did not change and copies the kept lines of the others.

The copy of that last shard starts before the examples are built: as soon as the build's
tokenizer is ready, a thread copies the train shard kept last into this run's shard of
the same number (core.files.copy_ahead), while deduplication and the builder run; the
writer then finds those bytes written. A shard that starts otherwise throws the copy away.

A kept file changed since (its inode, size or modification time differ) is never used
and is forgotten; as with the chunk stage's kept outputs, an edit in place that keeps the
file's size and modification time is not seen (outputs linked from kept files share
them: never edit a run's outputs in place). Each base keeps the files of its last
``KEPT_BUILDS`` builds, and the cache at most ``KEPT_FILES`` files (the most recently used);
``reuse=false`` keeps none.
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
from core.files import (
    AheadCopies,
    copy_range,
    copying_ahead,
    output_digest,
    read_line,
    stat_key,
)
from core.hash_points import HashPoints

KEPT_LINES_FORMAT = 3
KEPT_LINES_FILE = f"lines-f{KEPT_LINES_FORMAT}.sqlite"  # in the cache directory: the index
KEPT_LINES_DIR = f"lines-f{KEPT_LINES_FORMAT}"  # the kept files
KEPT_BUILDS = 2  # a base keeps the shards its last two builds wrote or linked
KEPT_FILES = 96  # and the cache at most this many shards (rusty-kaspa: 24 a build at 16 MB)
_ROW = 20  # bytes of a row's key (sha1)
_META = 4  # int32 per kept line: tokens, target tokens, truncated, mark (line_mark)


def line_mark(uid: str) -> int:
    """A number in [0, 2**31) from an example's id, the same in every process."""
    digest = hashlib.blake2b(uid.encode("utf-8", "surrogateescape"), digest_size=4).digest()
    return int.from_bytes(digest, "big") >> 1


def ends_shard(pos: int, size: int, mark: int, shard_bytes: int) -> bool:
    """Whether a line shard of about ``shard_bytes`` ends after a line of ``size`` bytes
    that brings it to ``pos`` bytes, the line of an example whose :func:`line_mark` is
    ``mark``: never before half ``shard_bytes``, always from twice, and between them with
    a chance proportional to the line's size (shards of ``shard_bytes`` on average). It
    depends on the shard's own lines only, so two splits that differ in one place end
    their shards at the same lines after it."""
    half = max(1, shard_bytes // 2)
    if pos < half:
        return False
    return pos >= 2 * shard_bytes or mark * half < size << 31


def _ended(stops: list[int], meta: list[int], shard_bytes: int) -> bool:
    """Whether a kept shard whose lines end at ``stops`` (with ``meta``, ``_META`` ints a
    line, its mark last) ended by :func:`ends_shard` after its last line, not with its split."""
    if not stops:
        return False
    return ends_shard(stops[-1], stops[-1] - (stops[-2] if len(stops) > 1 else 0), meta[-1], shard_bytes)


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
    :meth:`note` records what a build made, :meth:`keep` keeps a written shard,
    :meth:`whole` says which kept files are shards a writer may link."""

    def __init__(self, root: str | Path, base: str, shard_bytes: int):
        self.path = Path(root) / KEPT_LINES_FILE
        self.folder = Path(root) / KEPT_LINES_DIR
        self.base = base
        self.shard_bytes = shard_bytes
        self.build = time.time_ns()  # this build's stamp on the files it keeps or links
        self._files: list[int] = []  # open descriptors of the kept files in use
        # per kept file in use: (name, size, sha256, its lines as (file, start, end), whether
        # it ended by the rule: ends_shard)
        self._kept: list[tuple[str, int, str, list[tuple[int, int, int]], bool]] = []
        self._index: dict[str, dict[bytes, tuple[int, int, int, int, int, bool, int]]] | None = None
        self._made: dict[int, tuple[bytes, bool]] = {}  # id(example) -> (row, truncated)

    def _conn(self) -> sqlite3.Connection:
        try:
            return connection(self.path, [
                ("CREATE TABLE IF NOT EXISTS kept_lines (name TEXT PRIMARY KEY, base TEXT NOT NULL, "
                 "split TEXT NOT NULL, shard INTEGER NOT NULL, rows BLOB NOT NULL, ends BLOB NOT NULL, "
                 "meta BLOB NOT NULL, stat TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, "
                 "build INTEGER NOT NULL, used REAL NOT NULL)")])
        except (sqlite3.DatabaseError, OSError) as exc:
            raise unusable("build cache", self.path, exc) from None

    def _load(self) -> dict[str, dict[bytes, tuple[int, int, int, int, int, bool, int]]]:
        """split -> row -> (file, start, end, n_tokens, n_target_tokens, truncated, mark),
        from every usable kept file of this base (the most recently used wins)."""
        if self._index is not None:
            return self._index
        index: dict[str, dict[bytes, tuple[int, int, int, int, int, bool, int]]] = {}
        try:
            conn = self._conn()
            found = conn.execute("SELECT name, split, rows, ends, meta, stat, sha256, size FROM kept_lines "
                                 "WHERE base = ? ORDER BY used", (self.base,)).fetchall()
            for name, split, rows, ends, meta, stat, sha256, size in found:
                try:
                    fd = os.open(self.folder / name, os.O_RDONLY)
                except OSError:
                    conn.execute("DELETE FROM kept_lines WHERE name = ?", (name,))
                    continue
                n = len(rows) // _ROW
                stops = np.frombuffer(ends, dtype=np.int64)
                counts = np.frombuffer(meta, dtype=np.int32)
                if stat_key(fd) != stat or len(stops) != n or len(counts) != _META * n:
                    os.close(fd)  # changed since it was kept: never used again
                    conn.execute("DELETE FROM kept_lines WHERE name = ?", (name,))
                    (self.folder / name).unlink(missing_ok=True)
                    continue
                conn.execute("UPDATE kept_lines SET used = ? WHERE name = ?", (time.time(), name))
                f = len(self._files)
                self._files.append(fd)
                starts = [0, *stops[:-1].tolist()]
                stops_l, counts_l = stops.tolist(), counts.tolist()
                ended = _ended(stops_l, counts_l, self.shard_bytes)
                self._kept.append((name, size, sha256, list(zip([f] * n, starts, stops_l)), ended))
                into = index.setdefault(split, {})
                for i in range(n):
                    m = _META * i
                    into[rows[i * _ROW:(i + 1) * _ROW]] = (f, starts[i], stops_l[i], counts_l[m], counts_l[m + 1],
                                                           bool(counts_l[m + 2]), counts_l[m + 3])
        except sqlite3.DatabaseError as exc:
            raise unusable("build cache", self.path, exc) from None
        self._index = index
        return index

    def whole(self, f: int) -> list[tuple[int, int, int]] | None:
        """The lines of kept file ``f`` as (file, start, end), when it is a shard that
        ended by the rule (:func:`ends_shard`), not with its split: a writer whose shard
        starts with those lines, in order, ends it after them, makes the same file, and
        may link this one (:meth:`link_source`). None otherwise."""
        _, _, _, lines, ended = self._kept[f]
        return lines if ended else None

    def link_source(self, f: int) -> tuple[Path, str, int]:
        """Kept file ``f``'s path, sha256 and size."""
        name, size, sha256, _, _ = self._kept[f]
        return self.folder / name, sha256, size

    def whole_at(self, lines: Sequence[tuple[int, int, int] | None], at: int) -> tuple[int, int] | None:
        """The kept file whose lines are ``lines[at:at + n]``, exactly and in order, when it
        ended by the rule (see :meth:`whole`), and ``n``; or None. ``lines``: where each
        example's kept line is (None: built, not kept)."""
        first = lines[at]
        if first is None or first[1] != 0:
            return None
        whole = self.whole(first[0])
        if whole is None or at + len(whole) > len(lines):
            return None
        for k, line in enumerate(whole):
            if lines[at + k] != line:
                return None
        return first[0], len(whole)

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
            f, start, end, n_tokens, n_target, truncated, _ = hit
            uid, commit, change = fields(changes[i])
            example = KeptExample({"id": uid, "split": split, "n_tokens": n_tokens, "n_target_tokens": n_target,
                                   "commit": commit, "change": change})
            example.keeper, example.line = self, (f, start, end)
            made[id(example)] = (row, truncated)
            out[i] = (example, truncated)
        return out

    def copy_ahead(self, split: str, path_of: Callable[[str, int], Path], aheads: AheadCopies) -> None:
        """Start copying the last ``split`` shard of this base's latest build, unless it
        ended by the rule (see :meth:`whole`), to this run's shard of the same number
        (``path_of(split, shard)``: the output the writer will write it to, see
        core.files.copy_ahead): a build whose rows of that split hold the last build's
        (a repository brought up to date after a new commit: train grows at its end)
        links the shards before it and starts that shard with those lines. The copy runs
        while the examples are built; if the shard turns out to start otherwise, it is
        thrown away."""
        try:
            found = self._conn().execute(
                "SELECT name, stat, shard, ends, meta FROM kept_lines WHERE base = ? AND split = ? "
                "ORDER BY build DESC, shard DESC LIMIT 1", (self.base, split)).fetchone()
        except sqlite3.DatabaseError:
            return  # an optimisation only: the build reads the index itself, and says so
        if found is None:
            return
        stops = np.frombuffer(found[3], dtype=np.int64).tolist()
        meta = np.frombuffer(found[4], dtype=np.int32).tolist()
        if not stops or len(meta) != _META * len(stops) or _ended(stops, meta, self.shard_bytes):
            return  # nothing to copy, or the next shard starts with new lines
        try:
            fd = os.open(self.folder / found[0], os.O_RDONLY)
        except OSError:
            return
        try:
            if stat_key(fd) == found[1]:
                aheads.copy(path_of(split, found[2]), [(fd, 0, os.fstat(fd).st_size)])
        except OSError:
            pass
        finally:
            os.close(fd)

    def copy_ahead_leading(self, rows: list[bytes], splits: list[str], path_of: Callable[[str, int], Path],
                           aheads: AheadCopies) -> None:
        """Start copying each split's leading kept lines to the shard they will start
        (``path_of(split, shard)``, unless a copy ahead of it runs already; see
        core.files.copy_ahead): past the split's leading shards kept whole (linked, see
        :meth:`whole_at`), the lines of its next rows, in order, up to its first row
        without a kept line in that split or the end of that shard. A builder whose
        examples are assembled rows (``examples_as_assembled``) makes those rows its
        split's first examples, copied from these lines, while the copy runs."""
        index = self._load()
        leading: dict[str, list[tuple[int, int, int] | None]] = {}
        marks: dict[str, list[int]] = {}
        stopped: set[str] = set()
        for row, split in zip(rows, splits):
            if split in stopped:
                continue
            hit = index.get(split, {}).get(row)
            if hit is None:
                stopped.add(split)
                continue
            leading.setdefault(split, []).append(hit[:3])
            marks.setdefault(split, []).append(hit[6])
        for split, lines in leading.items():
            at, shard = 0, 0
            while at < len(lines):
                linked = self.whole_at(lines, at)
                if linked is None:
                    break
                at += linked[1]
                shard += 1
            runs: list[list[int]] = []
            size = 0
            for (f, start, end), mark in zip(lines[at:], marks[split][at:]):
                if runs and runs[-1][0] == f and runs[-1][2] == start:
                    runs[-1][2] = end  # the next line of the same file, as ExampleRows.write_lines joins them
                else:
                    runs.append([f, start, end])
                size += end - start
                if ends_shard(size, end - start, mark, self.shard_bytes):
                    break  # the shard ends with this line
            path = path_of(split, shard)
            if runs and not copying_ahead(path):
                # hashed as copied, unless the file starts with a kept file's first bytes,
                # whose own saved states the writing resumes from (core.hash_points)
                aheads.copy(path, [(self._files[f], a, b - a) for f, a, b in runs], hashed=runs[0][1] > 0)

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

    def keep(self, path: Path, split: str, shard: int, examples: list[dict[str, Any]], ends: list[int]) -> bool:
        """Keep ``path`` (a finished shard, the ``shard``-th of ``split``: ``examples``'
        lines ending at ``ends``) for later builds; False when it cannot be (an example
        this build did not note, another file system, no hard links)."""
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
        meta = np.array([(ex["n_tokens"], ex["n_target_tokens"], made[id(ex)][1], line_mark(ex["id"]))
                         for ex in examples], dtype=np.int32).reshape(-1)
        name = hashlib.sha256(f"{self.base}:{split}:{shard}:{os.getpid()}:{time.time_ns()}".encode()).hexdigest()[:24]
        name += ".jsonl"
        try:
            sha256, size = output_digest(path)  # known to the writing: not read again
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
                conn.execute("INSERT INTO kept_lines (name, base, split, shard, rows, ends, meta, stat, sha256, size, "
                             "build, used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (name, self.base, split, shard, rows, np.asarray(ends, dtype=np.int64).tobytes(),
                              meta.tobytes(), stat, sha256, size, self.build, time.time()))
        except sqlite3.DatabaseError as exc:
            (self.folder / name).unlink(missing_ok=True)
            raise unusable("build cache", self.path, exc) from None
        return True

    def linked(self, f: int, split: str, shard: int) -> None:
        """Record that this build's ``shard``-th ``split`` shard is kept file ``f`` (a link):
        it stays kept with the files this build keeps."""
        try:
            conn = self._conn()
            with conn:
                conn.execute("UPDATE kept_lines SET build = ?, used = ?, split = ?, shard = ? WHERE name = ?",
                             (self.build, time.time(), split, shard, self._kept[f][0]))
        except sqlite3.DatabaseError as exc:
            raise unusable("build cache", self.path, exc) from None

    def forget_old(self) -> None:
        """After a build kept its shards: forget this base's files that none of its last
        ``KEPT_BUILDS`` builds kept or linked, and the cache's least recently used beyond
        ``KEPT_FILES``; remove strays a killed run left."""
        try:
            conn = self._conn()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                builds = [b for (b,) in conn.execute("SELECT DISTINCT build FROM kept_lines WHERE base = ? "
                                                     "ORDER BY build DESC LIMIT ?", (self.base, KEPT_BUILDS))]
                old = [n for (n,) in conn.execute(
                    f"SELECT name FROM kept_lines WHERE base = ? AND build NOT IN ({','.join('?' * len(builds))})",
                    (self.base, *builds))] if builds else []
                old += [n for (n,) in conn.execute("SELECT name FROM kept_lines ORDER BY used DESC LIMIT -1 OFFSET ?",
                                                   (KEPT_FILES,)) if n not in old]
                for n in old:
                    conn.execute("DELETE FROM kept_lines WHERE name = ?", (n,))
        except sqlite3.DatabaseError as exc:
            raise unusable("build cache", self.path, exc) from None
        for n in old:
            (self.folder / n).unlink(missing_ok=True)
        self._forget_strays()

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
        self._kept = []
        self._index = None
        forget_connection(self.path)
