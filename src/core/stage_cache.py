"""Finished chunk-stage work, kept by fingerprint so that no run does it twice.

The chunk stage's output is the concatenation of its commit batches' outputs. Each
batch is stored under a fingerprint of everything its rows depend on: the chunk
stage's settings (language extraction, chunker, context strategy and how it counts
tokens, file-size cap, pairing), the code and grammar versions, the repository name
that rows carry, the batch's commit records, and for context strategies the tree the
batch starts from and the changes it replays. So

- a sweep over build settings (tokenizer, format, builder, split, writer) chunks once;
- a run killed half-way resumes: finished batches are not recomputed;
- a repository that gained a commit recomputes only the last batch.

The store is one SQLite database (WAL) written by the main process of each run only;
parallel sweep jobs share it (a batch two jobs computed at once is stored by both with
the same bytes). ``reuse=false`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import zlib
from pathlib import Path
from typing import Any

from core.blob_cache import _enable_wal
from core.errors import CommitforgeError

STAGE_CACHE_FORMAT = 1
_CONNECTIONS: dict[tuple[int, str], sqlite3.Connection] = {}


def fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str, ensure_ascii=False).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
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
                conn.execute("CREATE TABLE IF NOT EXISTS batches (key TEXT PRIMARY KEY, rows INTEGER NOT NULL, "
                             "stats TEXT NOT NULL, data BLOB NOT NULL) WITHOUT ROWID")
            except (sqlite3.DatabaseError, OSError) as exc:
                raise CommitforgeError(f"the stage cache {str(self.path)!r} cannot be used ({exc}); delete it, "
                                       "choose another cache_dir=DIR or run with reuse=false") from None
            _CONNECTIONS[key] = conn
        return conn

    def get(self, key: str) -> tuple[bytes, int, dict[str, Any]] | None:
        row = self._conn().execute("SELECT rows, stats, data FROM batches WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return zlib.decompress(row[2]), int(row[0]), json.loads(row[1])
        except (zlib.error, ValueError):
            return None  # damaged: computed again and overwritten

    def put(self, key: str, data: bytes, rows: int, stats: dict[str, Any]) -> None:
        self._conn().execute("INSERT OR REPLACE INTO batches (key, rows, stats, data) VALUES (?, ?, ?, ?)",
                             (key, rows, json.dumps(stats, sort_keys=True), zlib.compress(data, 1)))

    def close(self) -> None:
        conn = _CONNECTIONS.pop((os.getpid(), str(self.path)), None)
        if conn is not None:
            conn.close()
