"""Finished chunk-stage work, kept by fingerprint so that no run does it twice.

The chunk stage's output is the concatenation of its commits' outputs. Each commit's
rows are stored under a key of everything they depend on: the chunk stage's settings
(language extraction, chunker, context strategy and how it counts tokens, file-size cap,
pairing, redaction), the code and grammar versions, the repository name that rows carry,
the commit's record (its line in commits.jsonl), and for context strategies that read
the repository's tree, the git tree id of the snapshot the context is read from (the
commit's tree, or its first parent's): a tree id names every file exactly. So

- a sweep over build settings (tokenizer, format, builder, split, writer) chunks once;
- a run killed half-way resumes: commits already finished are not recomputed;
- a repository that gained a commit computes only that commit.

The store is one SQLite database (WAL) written by the main process of each run only;
parallel sweep jobs share it (a commit two jobs computed at once is stored by both with
the same bytes). ``reuse=false`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import lz4.frame

from core.blob_cache import connection, forget_connection, unusable
from core.files import output_digest, stat_key
from core.hash_points import HashPoints

STAGE_CACHE_FORMAT = 6
STAGES_FILE = f"stages-f{STAGE_CACHE_FORMAT}.sqlite"  # in the cache directory
STAGE_OUTPUTS_DIR = f"stages-f{STAGE_CACHE_FORMAT}-outputs"  # kept chunk outputs, a folder of shards each
LOCKS_DIR = "locks"


def pack(data: bytes) -> bytes:
    """A commit's rows as stored: an LZ4 frame with a checksum of its content. JSON lines
    shrink about eightfold, as with zlib at level 1, in less than a third of its time
    (rusty-kaspa's 253 MB of rows: 0.35 s against 1.21 s, unpacked in 0.16 s against
    0.57), and a damaged entry fails its checksum instead of yielding other rows."""
    return lz4.frame.compress(data, content_checksum=True, store_size=True)


_LZ4_MAX_RATIO = 255  # no LZ4 frame unpacks to more than about 255 times its size


def unpack(data: bytes) -> bytes:
    """The rows ``pack`` stored; ``RuntimeError`` for an entry that is not one whole such
    frame. A damaged header whose one-byte checksum still holds can state any size: a
    size LZ4 cannot have packed into ``data`` is refused before anything is allocated."""
    size = lz4.frame.get_frame_info(data).get("content_size") or 0
    if size > _LZ4_MAX_RATIO * len(data):
        raise RuntimeError(f"an LZ4 frame of {len(data)} bytes cannot hold {size}")
    rows, read = lz4.frame.decompress(data, return_bytes_read=True)
    if read != len(data):
        raise RuntimeError(f"{len(data) - read} bytes follow the LZ4 frame")
    return rows


class KeptShard(NamedTuple):
    path: Path
    size: int
    rows: int
    sha256: str


class KeptOutput(NamedTuple):
    """A kept chunk output (see StageCache.open_output): its shards, where the rows of
    the commits wanted end (bytes from the first shard's start, and rows), and its
    totals (None unless all its commits are wanted)."""

    shards: list[KeptShard]
    ends: list[int]
    row_ends: list[int]
    totals: Any


def fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


OUTPUTS_KEPT = 4
# a kept-output folder the table does not name, older than this, was left by a run that
# ended between linking its shards and recording them: removed by the next keep_output
ORPHAN_AGE_S = 3600


def commit_key(base: str, record_line: bytes, tree: str | None) -> str:
    """The key of one commit's chunk-stage rows: ``base`` (a fingerprint of the settings
    and code), the commit's line in commits.jsonl and the tree id its context reads."""
    h = hashlib.sha256(base.encode())
    h.update(b"\0")
    h.update(record_line)
    h.update(b"\0")
    h.update((tree if tree is not None else "-").encode())
    return h.hexdigest()


# the longest a build waits for another process computing what it needs (claim_for): long
# enough for a history many times rusty-kaspa's; a claim is freed as soon as its process ends
CLAIM_WAIT_S = 600.0


class Claim:
    """What :func:`claim_for` took: the lock file while this process holds it."""

    def __init__(self, fh: Any = None, waited: bool = False):
        self._fh = fh
        self.waited = waited  # another process held it first: look in the cache again

    @property
    def held(self) -> bool:
        return self._fh is not None

    def release(self) -> None:
        """Give the claim up (closing the lock file releases it)."""
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()

    def __enter__(self) -> Claim:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def claim_for(root: str | Path, name: str, wait_s: float = CLAIM_WAIT_S) -> Claim:
    """Take ``locks/<name>.lock`` under the cache directory ``root``: the right to compute
    something the cache keeps that another process may be computing at the same moment
    (sweep jobs started together). While another process holds it, wait for it, up to
    ``wait_s``; ``waited`` then says to look in the cache again before computing. A claim
    that cannot be taken (no advisory locks here, a cache that cannot be written, a wait
    that ran out) holds nothing: the processes compute side by side, as without it."""
    try:
        import fcntl
    except ImportError:
        return Claim()
    try:
        locks = Path(root) / LOCKS_DIR
        locks.mkdir(parents=True, exist_ok=True)
        fh = open(locks / f"{name}.lock", "a+b")  # noqa: SIM115 - held past this call
    except OSError:
        return Claim()
    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waited = True
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
        except OSError:
            pass
        else:
            return Claim(fh, waited)
        fh.close()
        return Claim(waited=waited)


class StageCache:
    def __init__(self, root: str | Path):
        self.path = Path(root) / STAGES_FILE

    @contextmanager
    def claim(self, base: str) -> Iterator[None]:
        """Hold the right to compute entries for the settings fingerprint ``base``: a run
        that needs entries another process is computing (two sweep jobs started together)
        waits for it, however long it takes, and then finds them in the cache, instead of
        computing them twice. The lock is released when the holder ends, however it ends."""
        with claim_for(self.path.parent, f"chunk-{base[:32]}", wait_s=float("inf")):
            yield

    def held_lock(self) -> Path | None:
        """A lock file of a claim (:func:`claim_for`) that a process holds now (a run
        computing entries, dedup features, a tokenizer or its pieces), or None (``python
        -m core cache prune --all`` asks before removing the cache)."""
        try:
            import fcntl
        except ImportError:  # no advisory locks here: nothing to check
            return None
        for path in sorted((self.path.parent / LOCKS_DIR).glob("*.lock")):
            try:
                with open(path, "a+b") as fh:
                    try:
                        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        return path
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            except OSError:
                continue
        return None

    def _conn(self) -> sqlite3.Connection:
        try:
            return connection(self.path, [
                ("CREATE TABLE IF NOT EXISTS commits (key TEXT PRIMARY KEY, rows INTEGER NOT NULL, "
                 "stats TEXT NOT NULL, data BLOB NOT NULL, scan BLOB)"),  # rowid: large rows
                # a kept output (a folder of shards): its commits' keys, where each commit's
                # rows end (bytes, and rows), its shards (name, bytes, rows, sha256, stat key)
                ("CREATE TABLE IF NOT EXISTS kept_outputs (name TEXT PRIMARY KEY, base TEXT NOT NULL, "
                 "keys BLOB NOT NULL, ends BLOB NOT NULL, row_ends BLOB NOT NULL, shards BLOB NOT NULL, "
                 "used REAL NOT NULL)"),
                # a kept output's totals over all its commits (see keep_output)
                "CREATE TABLE IF NOT EXISTS kept_totals (name TEXT PRIMARY KEY, totals BLOB NOT NULL)",
                # the mine stage's commits: a commit's line in commits.jsonl (NULL: skipped) and counts
                "CREATE TABLE IF NOT EXISTS mined (key TEXT PRIMARY KEY, line BLOB, stats TEXT NOT NULL)"],
                self._forget_old_outputs)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise unusable("stage cache", self.path, exc) from None

    def _select(self, columns: str, table: str, keys: list[str]) -> Iterator[tuple]:
        """(key, *columns) of each row of ``table`` whose key is in ``keys``, 500 at a time."""
        conn = self._conn()
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            yield from conn.execute(f"SELECT key, {columns} FROM {table} WHERE key IN ({','.join('?' * len(part))})",
                                    part)

    def _insert(self, statement: str, values: list[tuple]) -> None:
        """``statement`` for each of ``values``, in one write transaction."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(statement, values)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def get_many(self, keys: list[str]) -> dict[str, tuple[bytes, int, dict[str, Any], Any]]:
        """The stored (data, rows, stats, scan) of each key that has a usable entry; ``scan`` is
        the plain form of the report's scan of the rows (``None`` when there is none)."""
        out: dict[str, tuple[bytes, int, dict[str, Any], Any]] = {}
        for key, rows, stats, data, scan in self._select("rows, stats, data, scan", "commits", keys):
            try:
                out[key] = (unpack(data), int(rows), json.loads(stats),
                            None if scan is None else marshal.loads(scan))
            except (RuntimeError, ValueError, EOFError, TypeError):
                pass  # damaged: computed again and overwritten
        return out

    def get_mined(self, keys: list[str]) -> dict[str, tuple[bytes | None, dict[str, Any]]]:
        """The mine stage's (line in commits.jsonl or None, counts) of each key stored."""
        out: dict[str, tuple[bytes | None, dict[str, Any]]] = {}
        for key, line, stats in self._select("line, stats", "mined", keys):
            try:
                out[key] = (line, json.loads(stats))
            except ValueError:
                pass  # damaged: mined again and overwritten
        return out

    def put_mined(self, entries: list[tuple[str, bytes | None, dict[str, Any]]]) -> None:
        """Store the mine stage's entries (key, line or None, counts) in one transaction."""
        if entries:
            self._insert("INSERT OR REPLACE INTO mined (key, line, stats) VALUES (?, ?, ?)",
                         [(key, line, json.dumps(stats, sort_keys=True)) for key, line, stats in entries])

    def get(self, key: str) -> tuple[bytes, int, dict[str, Any], Any] | None:
        return self.get_many([key]).get(key)

    def put_many(self, entries: list[tuple[str, bytes, int, dict[str, Any], Any]]) -> None:
        """Store entries (key, data, rows, stats, scan) in one transaction."""
        if not entries:
            return
        # ``data``: the rows, or a core.chunking.SpooledRows whose ``packed`` holds them compressed
        self._insert("INSERT OR REPLACE INTO commits (key, rows, stats, data, scan) VALUES (?, ?, ?, ?, ?)",
                     [(key, rows, json.dumps(stats, sort_keys=True),
                       data.packed if hasattr(data, "packed") else pack(data),
                       None if scan is None else marshal.dumps(scan))
                      for key, data, rows, stats, scan in entries])

    def put(self, key: str, data: bytes, rows: int, stats: dict[str, Any], scan: Any = None) -> None:
        self.put_many([(key, data, rows, stats, scan)])

    def get_meta(self, keys: list[str]) -> dict[str, tuple[int, dict[str, Any], Any]]:
        """Like ``get_many`` without the rows themselves: (rows, stats, scan) of each key."""
        out: dict[str, tuple[int, dict[str, Any], Any]] = {}
        for key, rows, stats, scan in self._select("rows, stats, scan", "commits", keys):
            try:
                out[key] = int(rows), json.loads(stats), None if scan is None else marshal.loads(scan)
            except (ValueError, EOFError, TypeError):
                pass
        return out

    def _forget_old_outputs(self, conn: sqlite3.Connection) -> None:
        """Outputs kept in the table this one replaces (``outputs``) may record wrong row ends
        for the commits a run had copied: they are dropped with their files."""
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outputs'").fetchone() is None:
            return
        try:
            for (name,) in conn.execute("SELECT name FROM outputs").fetchall():
                (self._outputs_dir() / name).unlink(missing_ok=True)
            conn.execute("DROP TABLE IF EXISTS outputs")
        except sqlite3.OperationalError:
            pass  # another process dropped it first

    # -- whole outputs ---------------------------------------------------------------
    # The chunk stage's output of a run (its shards, core.chunk_shards) is kept as hard links,
    # no copy, with the keys of its commits: a later run whose commits start with the same
    # keys links the shards those commits fill and copies the first bytes of the next,
    # instead of decompressing and writing each commit.

    def _outputs_dir(self) -> Path:
        return self.path.parent / STAGE_OUTPUTS_DIR

    def keep_output(self, run_dir: Path, shards: list[Any], base: str, keys: list[str], ends: list[int],
                    row_ends: list[int], totals: Any = None) -> None:
        """Remember the shards ``shards`` (core.chunk_shards.WrittenShard, in ``run_dir``, a
        finished output) as made of ``keys``' rows ending at ``ends`` (bytes from the first
        shard's start) and ``row_ends`` (rows); only the OUTPUTS_KEPT most recently used
        outputs are kept. ``totals``: what the entries of all those commits add up to, as
        ``marshal`` takes it (the chunk stage's row count, counters and report scan), so
        that a run copying the whole output takes it at once instead of reading and
        adding each commit's."""
        folder = self._outputs_dir()
        name = hashlib.sha256(f"{base}:{os.getpid()}:{time.time_ns()}".encode()).hexdigest()[:24]
        kept = folder / name
        points = HashPoints(self.path.parent)
        info = []
        try:
            kept.mkdir(parents=True)
            for k, shard in enumerate(shards):
                path = run_dir / shard.rel
                sha256, _ = output_digest(path)  # written in the background, or linked: known
                os.link(path, kept / path.name)
                info.append((path.name, shard.size, shard.rows, sha256, stat_key(kept / path.name)))
                if k == len(shards) - 1:  # the shard a later run's new commits continue: a copy of its start
                    points.remember(path, kept / path.name)
        except OSError:
            shutil.rmtree(kept, ignore_errors=True)
            return  # another file system, or no hard links: nothing is kept
        conn = self._conn()
        with conn:  # one write transaction, rolled back on an error
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR REPLACE INTO kept_outputs (name, base, keys, ends, row_ends, shards, used) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (name, base, marshal.dumps(keys), marshal.dumps(ends), marshal.dumps(row_ends),
                          marshal.dumps(info), time.time()))
            if totals is not None:
                conn.execute("INSERT OR REPLACE INTO kept_totals (name, totals) VALUES (?, ?)",
                             (name, marshal.dumps(totals)))
        old = [n for (n,) in conn.execute("SELECT name FROM kept_outputs ORDER BY used DESC LIMIT -1 OFFSET ?",
                                          (OUTPUTS_KEPT,))]
        for n in old:
            self._forget_output(conn, n)
        self._sweep_orphans(conn)

    def _sweep_orphans(self, conn: sqlite3.Connection) -> None:
        """Remove the kept-output folders no row names that are older than ``ORPHAN_AGE_S``
        (a younger one may be another run's, about to be recorded): a run killed after
        linking its shards leaves one, which holds a whole output's disk space."""
        named = {n for (n,) in conn.execute("SELECT name FROM kept_outputs")}
        now = time.time()
        try:
            with os.scandir(self._outputs_dir()) as it:
                stale = [e.path for e in it if e.name not in named and e.is_dir(follow_symlinks=False)
                         and now - e.stat(follow_symlinks=False).st_mtime > ORPHAN_AGE_S]
        except OSError:
            return
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)

    def _forget_output(self, conn: sqlite3.Connection, name: str) -> None:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM kept_outputs WHERE name = ?", (name,))
            conn.execute("DELETE FROM kept_totals WHERE name = ?", (name,))
        shutil.rmtree(self._outputs_dir() / name, ignore_errors=True)

    def open_output(self, base: str, keys: list[str]) -> KeptOutput | None:
        """The kept output whose commits' keys are the longest prefix of ``keys`` (None
        when none fits), its totals only when all its commits are wanted."""
        conn = self._conn()
        candidates: list[tuple[int, float, str, list[int], list[int], list[tuple], bool]] = []
        for name, kept, ends, row_ends, shards, used in conn.execute(
                "SELECT name, keys, ends, row_ends, shards, used FROM kept_outputs WHERE base = ?", (base,)):
            try:
                kept, ends, row_ends, shards = (marshal.loads(kept), marshal.loads(ends), marshal.loads(row_ends),
                                                marshal.loads(shards))
            except (ValueError, EOFError, TypeError):
                continue
            n = 0
            for a, b in zip(kept, keys):
                if a != b:
                    break
                n += 1
            if n:
                candidates.append((n, used, name, ends, row_ends, shards, n == len(kept)))
        for n, _, name, ends, row_ends, shards, whole in sorted(candidates, reverse=True):
            folder = self._outputs_dir() / name
            try:  # a shard changed since (or copied elsewhere): the output is never used again
                fine = all(stat_key(folder / shard[0]) == shard[4] for shard in shards)
            except OSError:
                fine = False
            if not fine:
                self._forget_output(conn, name)
                continue
            conn.execute("UPDATE kept_outputs SET used = ? WHERE name = ?", (time.time(), name))
            totals = None
            if whole:
                found = conn.execute("SELECT totals FROM kept_totals WHERE name = ?", (name,)).fetchone()
                try:
                    totals = marshal.loads(found[0]) if found is not None else None
                except (ValueError, EOFError, TypeError):
                    totals = None  # damaged: each commit's entry is read instead
            return KeptOutput([KeptShard(folder / f, size, rows, sha256) for f, size, rows, sha256, _ in shards],
                              ends[:n], row_ends[:n], totals)
        return None

    def close(self) -> None:
        forget_connection(self.path)
