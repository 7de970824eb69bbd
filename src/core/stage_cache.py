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
import sqlite3
import zlib
from pathlib import Path
from typing import Any

from core.blob_cache import _enable_wal
from core.errors import CommitforgeError

STAGE_CACHE_FORMAT = 3
_CONNECTIONS: dict[tuple[int, str], sqlite3.Connection] = {}


def fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


def commit_key(base: str, record_line: bytes, tree: str | None) -> str:
    """The key of one commit's chunk-stage rows: ``base`` (a fingerprint of the settings
    and code), the commit's line in commits.jsonl and the tree id its context reads."""
    h = hashlib.sha256(base.encode())
    h.update(b"\0")
    h.update(record_line)
    h.update(b"\0")
    h.update((tree if tree is not None else "-").encode())
    return h.hexdigest()


class StageCache:
    def __init__(self, root: str | Path):
        self.path = Path(root) / f"stages-f{STAGE_CACHE_FORMAT}.sqlite"

    def _conn(self) -> sqlite3.Connection:
        key = (os.getpid(), str(self.path))
        conn = _CONNECTIONS.get(key)
        if conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=120, isolation_level=None, check_same_thread=False)
                _enable_wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("CREATE TABLE IF NOT EXISTS commits (key TEXT PRIMARY KEY, rows INTEGER NOT NULL, "
                             "stats TEXT NOT NULL, data BLOB NOT NULL, scan BLOB) WITHOUT ROWID")
            except (sqlite3.DatabaseError, OSError) as exc:
                raise CommitforgeError(f"the stage cache {str(self.path)!r} cannot be used ({exc}); delete it, "
                                       "choose another cache_dir=DIR or run with reuse=false") from None
            _CONNECTIONS[key] = conn
        return conn

    def get_many(self, keys: list[str]) -> dict[str, tuple[bytes, int, dict[str, Any], Any]]:
        """The stored (data, rows, stats, scan) of each key that has a usable entry; ``scan`` is
        the plain form of the report's scan of the rows (``None`` when there is none)."""
        conn = self._conn()
        out: dict[str, tuple[bytes, int, dict[str, Any], Any]] = {}
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            marks = ",".join("?" * len(part))
            for key, rows, stats, data, scan in conn.execute(
                    f"SELECT key, rows, stats, data, scan FROM commits WHERE key IN ({marks})", part):
                try:
                    out[key] = (zlib.decompress(data), int(rows), json.loads(stats),
                                None if scan is None else marshal.loads(scan))
                except (zlib.error, ValueError, EOFError, TypeError):
                    pass  # damaged: computed again and overwritten
        return out

    def get(self, key: str) -> tuple[bytes, int, dict[str, Any], Any] | None:
        return self.get_many([key]).get(key)

    def put_many(self, entries: list[tuple[str, bytes, int, dict[str, Any], Any]]) -> None:
        """Store entries (key, data, rows, stats, scan) in one transaction."""
        if not entries:
            return
        conn = self._conn()
        values = [(key, rows, json.dumps(stats, sort_keys=True), zlib.compress(data, 1),
                   None if scan is None else marshal.dumps(scan))
                  for key, data, rows, stats, scan in entries]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR REPLACE INTO commits (key, rows, stats, data, scan) VALUES (?, ?, ?, ?, ?)",
                             values)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def put(self, key: str, data: bytes, rows: int, stats: dict[str, Any], scan: Any = None) -> None:
        self.put_many([(key, data, rows, stats, scan)])

    def close(self) -> None:
        conn = _CONNECTIONS.pop((os.getpid(), str(self.path)), None)
        if conn is not None:
            conn.close()
