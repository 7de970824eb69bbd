"""On-disk cache of parsed blobs, keyed by language cache key and blob id.

One SQLite database per cache format, shared by runs and sweep jobs: WAL mode lets
workers and concurrent runs read while one writes, each batch of parsed blobs is one
transaction (a reader never sees half of it), and a single file avoids the cost of
creating thousands of small files. Entries are ``marshal`` data: plain containers only,
several times faster than JSON, and unlike pickle, loading them can never run code.
The format and marshal versions are part of the file name. Keep the cache on a local
disk: SQLite's locking is unreliable on network filesystems.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from core.errors import CommitforgeError

CACHE_FORMAT = 8  # 8: a rowid table (reads of ~20 KB entries were 5x slower WITHOUT ROWID)
UNITS_FILE = f"units-f{CACHE_FORMAT}-m{marshal.version}.sqlite"  # in the cache directory

# one connection per (process, database): a connection must never cross a fork
_CONNECTIONS: dict[tuple[int, str], sqlite3.Connection] = {}


def _connect(path: Path) -> sqlite3.Connection:
    try:
        # a rowid table: entries are large (tens of KB), and SQLite stores a WITHOUT ROWID
        # table's rows in the key's B-tree, where they make reads about 5x slower
        return connection(path, ["CREATE TABLE IF NOT EXISTS units (key TEXT PRIMARY KEY, entry BLOB NOT NULL)"])
    except (sqlite3.DatabaseError, OSError) as exc:
        raise unusable("unit cache", path, exc, reuse=False) from None


def unusable(name: str, path: Path, exc: BaseException, reuse: bool = True) -> CommitforgeError:
    """The one-line error for a cache database that cannot be opened, read or written
    (``reuse``: whether ``reuse=false`` does without it)."""
    fix = "delete it, choose another cache_dir=DIR or run with reuse=false" if reuse else \
        "delete it or choose another cache_dir=DIR"
    return CommitforgeError(f"the {name} {str(path)!r} cannot be used ({exc}); {fix}")


def connection(path: Path, schema: list[str],
               on_open: Callable[[sqlite3.Connection], None] | None = None) -> sqlite3.Connection:
    """This process's connection to the cache database at ``path``, opened on first use
    (``open_database``, then ``on_open``). Raises ``sqlite3.DatabaseError`` or ``OSError``
    for callers to name their cache."""
    key = (os.getpid(), str(path))
    conn = _CONNECTIONS.get(key)
    if conn is None:
        conn = open_database(path, schema)
        if on_open is not None:
            on_open(conn)
        _CONNECTIONS[key] = conn
    return conn


def forget_connection(path: Path) -> None:
    """Close this process's connection to the database at ``path``, if it has one."""
    conn = _CONNECTIONS.pop((os.getpid(), str(path)), None)
    if conn is not None:
        conn.close()


def open_database(path: Path, schema: list[str]) -> sqlite3.Connection:
    """A new connection to the cache database at ``path`` (made with its directory when
    missing) in WAL mode, its tables made by the ``schema`` statements. Connections must
    not cross a fork: callers keep one per process. Raises ``sqlite3.DatabaseError`` or
    ``OSError`` for callers to name their cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=120, isolation_level=None, check_same_thread=False)
    _enable_wal(conn)
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in schema:
        conn.execute(statement)
    return conn


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch a new database to WAL (a persistent setting). The switch needs the database
    to itself and SQLite does not wait for that, so processes opening a fresh cache at
    the same moment retry instead of failing."""
    for attempt in range(200):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        time.sleep(0.01 + 0.002 * attempt)
    raise sqlite3.OperationalError("could not switch the cache to WAL mode: the database stayed locked")


class BlobCache:
    def __init__(self, root: Path, lang_key: str):
        self.path = Path(root) / UNITS_FILE
        self.prefix = f"{lang_key}:"

    def open(self) -> None:
        """Create the database now (the run does this once before starting workers)."""
        _connect(self.path)

    def get(self, blob: str) -> dict[str, Any] | None:
        row = _connect(self.path).execute("SELECT entry FROM units WHERE key = ?", (self.prefix + blob,)).fetchone()
        if row is None:
            return None
        try:
            entry = marshal.loads(row[0])
        except (ValueError, EOFError, TypeError):
            return None  # a damaged entry is recomputed and overwritten
        return entry if isinstance(entry, dict) else None

    def missing(self, blobs: list[str]) -> set[str]:
        """The blobs of ``blobs`` that have no usable entry (absent or damaged)."""
        have: set[str] = set()
        for blob, entry in _rows(self.path, self.prefix, blobs, "entry"):
            try:
                if isinstance(marshal.loads(entry), dict):
                    have.add(blob)
            except (ValueError, EOFError, TypeError):
                pass  # damaged: parsed again and overwritten
        return {b for b in blobs if b not in have}

    def have(self, blobs: list[str]) -> set[str]:
        """The blobs of ``blobs`` with an entry (keys only: a damaged entry counts)."""
        return _have(self.path, self.prefix, blobs)

    def put_many(self, entries: list[tuple[str, dict[str, Any]]]) -> None:
        if not entries:
            return
        _put_rows(self.path, [(self.prefix + blob, marshal.dumps(entry)) for blob, entry in entries])


def _rows(path: Path, prefix: str, blobs: list[str], column: str | None = None) -> Iterator[tuple]:
    """(blob, value of ``column``) -- or (blob,) -- of each of ``blobs`` whose key
    (``prefix`` + blob) has a row, queried 500 keys at a time."""
    conn = _connect(path)
    n = len(prefix)
    select = f"key, {column}" if column else "key"
    for i in range(0, len(blobs), 500):
        keys = [prefix + b for b in blobs[i:i + 500]]
        marks = ",".join("?" * len(keys))
        for row in conn.execute(f"SELECT {select} FROM units WHERE key IN ({marks})", keys):
            yield (row[0][n:], *row[1:])


def _have(path: Path, prefix: str, blobs: list[str]) -> set[str]:
    """The blobs of ``blobs`` whose key (``prefix`` + blob) has a row."""
    return {blob for (blob,) in _rows(path, prefix, blobs)}


def _put_rows(path: Path, rows: list[tuple[str, bytes]]) -> None:
    """Insert or replace (key, entry) rows in one write transaction."""
    conn = _connect(path)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("INSERT OR REPLACE INTO units (key, entry) VALUES (?, ?)", rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


SUMMARY_FORMAT = 2
_PICKLE_PROTOCOL = 5
SUMMARIES_FILE = f"summaries-f{SUMMARY_FORMAT}-p{_PICKLE_PROTOCOL}.sqlite"


class SummaryCache:
    """What a language's symbol index keeps of each parsed file (``Language.summarize``),
    by blob, so that building an index at a tree loads summaries instead of making them.

    Summaries are arbitrary objects of the language plugin, stored with ``pickle``
    (protocol 5) in their own database next to the unit cache: ``prefix`` must name
    everything a summary depends on besides the blob (the language's cache key, the
    context strategy's options and the code version). Like the unit cache, it is
    commitforge's own cache directory: loading runs code only as trusted as that."""

    def __init__(self, root: str | Path, prefix: str):
        self.path = Path(root) / SUMMARIES_FILE
        self.prefix = f"{prefix}:"

    def get_many(self, blobs: list[str]) -> dict[str, Any]:
        import pickle

        out: dict[str, Any] = {}
        for blob, entry in _rows(self.path, self.prefix, blobs, "entry"):
            try:
                out[blob] = pickle.loads(entry)
            except Exception:  # noqa: BLE001 - damaged or from an incompatible version: made again
                pass
        return out

    def have(self, blobs: list[str]) -> set[str]:
        """The blobs of ``blobs`` that have a stored summary."""
        return _have(self.path, self.prefix, blobs)

    def put_many(self, summaries: dict[str, Any]) -> None:
        import pickle

        if not summaries:
            return
        _put_rows(self.path, [(self.prefix + blob, pickle.dumps(value, protocol=_PICKLE_PROTOCOL))
                              for blob, value in summaries.items()])


def close_connections() -> None:
    """Close this process's cache connections."""
    pid = os.getpid()
    for key in [k for k in _CONNECTIONS if k[0] == pid]:
        _CONNECTIONS.pop(key).close()
