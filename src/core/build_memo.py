"""What the build stage computed per ``chunks/`` row, kept by what it depends on, so
that a build whose unit changes mostly repeat an earlier build's works only on the rows it
has not seen (a repository brought up to date after a new commit, a rerun with other
split or writer settings): each row's assembled example, and what deduplication compares
of it (the digest of its normalized text and its MinHash signature).

Entries are ``(row, a, b)``: the sha1 of the row's line in ``chunks/`` and two byte
strings, under a ``base``, a fingerprint of the settings they depend on, with a crc32 of
the three: an entry damaged on disk is taken as missing and made again.

An example depends on its ``chunks/`` row (the line's bytes), on the build
settings (format, builder, the tokenizer's identity and added tokens, the versions of the
code and of ``tokenizers``) and on its split only through the ``split`` field, which is
set when the example is read back. What is kept is the result of fitting the row into
``max_tokens``: the skip reason, or the token ids (uint16 when the vocabulary allows),
trained ranges, segment spans and token counts; the provenance fields come from the row.

Dedup features depend on the row's dedup text (what ``dedup.compare`` compares) and the
MinHash parameters.

The store is one SQLite database (WAL) beside the stage cache, shared by parallel runs;
the entries of the ``BASES_KEPT`` bases used last are kept. ``reuse=false`` turns it off.
It also holds the :class:`core.changes.RowIndex` of the ``chunks/`` outputs the last
builds read (:class:`RowIndexes`), whatever their settings.
"""

from __future__ import annotations

import marshal
import os
import sqlite3
import tempfile
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from core.blob_cache import connection, forget_connection, unusable
from core.changes import RowIndex
from core.dedup import Features
from core.errors import CommitforgeError
from core.examples import Built, Segment, TrainedRuns, packed_example
from core.kept_lines import KeptLines

BUILD_MEMO_FORMAT = 3  # 2: entries carry a checksum; 3: blocks and row indexes are files
BUILD_MEMO_FILE = f"build-f{BUILD_MEMO_FORMAT}.sqlite"  # in the cache directory
BASES_KEPT = 12
_BATCH = 900  # keys per query (SQLite allows 999 parameters in old builds)
_DTYPES = {1: np.uint16, 2: np.int32}


# AUTOINCREMENT: an id is never given again, so entries a run stores for a base that
# another run dropped meanwhile can never pass for another base's
_SCHEMA = [
    ("CREATE TABLE IF NOT EXISTS bases (id INTEGER PRIMARY KEY AUTOINCREMENT, "
     "base TEXT UNIQUE NOT NULL, used REAL NOT NULL)"),
    ("CREATE TABLE IF NOT EXISTS entries (base INTEGER NOT NULL, row BLOB NOT NULL, "
     "a BLOB NOT NULL, b BLOB NOT NULL, sum INTEGER NOT NULL, PRIMARY KEY (base, row))"),
    # blocks of dedup features and row indexes, each a file of MEMO_FILES_DIR named here with
    # its crc32: SQLite reads a large value page by page (rusty-kaspa's 18 MB block: 0.03 to
    # 0.09 s, against 0.005 s from a file) and rewrites a whole row to change one field
    ("CREATE TABLE IF NOT EXISTS block_files (base INTEGER NOT NULL, scope TEXT NOT NULL, name TEXT NOT NULL, "
     "sum INTEGER NOT NULL, used REAL NOT NULL, PRIMARY KEY (base, scope))"),
    ("CREATE TABLE IF NOT EXISTS index_files (stat TEXT PRIMARY KEY, name TEXT NOT NULL, sum INTEGER NOT NULL, "
     "used REAL NOT NULL)")]
MEMO_FILES_DIR = f"build-f{BUILD_MEMO_FORMAT}-files"  # in the cache directory
STRAY_AGE_S = 3600  # a file no entry names is removed once this old (a run may be between the two)


def _write_file(root: Path, data: bytes | memoryview, suffix: str) -> str:
    """Put ``data`` in a new file of MEMO_FILES_DIR; its name. A new name each time: a
    build reading the file it replaces reads it whole. No fsync: a file cut short by a
    crash fails its checksum, and is made again."""
    folder = root / MEMO_FILES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    name = Path(tmp).name[1:-len(".tmp")] + suffix
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, folder / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return name


def _read_file(root: Path, name: str, crc: int) -> bytes | None:
    """The file's bytes when they pass their checksum; None when it is gone (removed by
    another run meanwhile) or damaged."""
    try:
        data = (root / MEMO_FILES_DIR / name).read_bytes()
    except OSError:
        return None
    return data if zlib.crc32(data) == crc else None


def _evict(conn: sqlite3.Connection, table: str, kept: int) -> list[str]:
    """Delete the entries of ``table`` (block_files or index_files) beyond the ``kept``
    used last; the names of their files (removed by :func:`_remove_files`)."""
    old = f"FROM {table} WHERE rowid IN (SELECT rowid FROM {table} ORDER BY used DESC LIMIT -1 OFFSET ?)"
    names = [n for (n,) in conn.execute(f"SELECT name {old}", (kept,))]
    conn.execute(f"DELETE {old}", (kept,))
    return names


def _remove_files(root: Path, conn: sqlite3.Connection, names: list[str]) -> None:
    """Remove the files of entries gone, and those of runs killed between writing a file
    and naming it, once ``STRAY_AGE_S`` old."""
    folder = root / MEMO_FILES_DIR
    for name in names:
        (folder / name).unlink(missing_ok=True)
    try:
        named = {n for (n,) in conn.execute("SELECT name FROM block_files UNION SELECT name FROM index_files")}
        now = time.time()
        for path in folder.iterdir():
            if path.name not in named and now - path.lstat().st_mtime > STRAY_AGE_S:
                path.unlink(missing_ok=True)
    except (OSError, sqlite3.DatabaseError):
        pass
_BLOCK_FORMAT = 1
BLOCKS_KEPT = 4  # blocks of dedup features kept (the most recently used)
ROW_INDEXES_KEPT = 1024  # one per shard of chunks/ (16 MiB): the shards of a few outputs of a long history


class BuildMemo:
    def __init__(self, root: str | Path, base: str):
        self.path = Path(root) / BUILD_MEMO_FILE
        self.base = base
        self._ids: dict[str, int] = {}  # the ids of the bases used, this one's and others' (layouts)
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self.damaged = 0  # entries found damaged (their checksum disagrees), taken as missing

    def _conn(self) -> sqlite3.Connection:
        try:
            return connection(self.path, _SCHEMA)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise self._unusable(exc) from None

    def _id(self, base: str | None = None) -> int:
        """The id of ``base`` (this store's by default), marked as used now; the entries of
        bases used longest ago beyond ``BASES_KEPT`` are dropped."""
        base = self.base if base is None else base
        base_id = self._ids.get(base)
        if base_id is None:
            conn = self._conn()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO bases (base, used) VALUES (?, ?) ON CONFLICT(base) DO UPDATE SET "
                             "used = excluded.used", (base, time.time()))
                base_id = self._ids[base] = conn.execute("SELECT id FROM bases WHERE base = ?", (base,)).fetchone()[0]
                old = [r[0] for r in conn.execute("SELECT id FROM bases ORDER BY used DESC, id DESC LIMIT -1 OFFSET ?",
                                                  (BASES_KEPT,))]
                for gone_id in old:
                    conn.execute("DELETE FROM bases WHERE id = ?", (gone_id,))
                if old:  # with the entries of any base dropped earlier, stored late by another run
                    conn.execute("DELETE FROM entries WHERE base NOT IN (SELECT id FROM bases)")
                    gone = [n for (n,) in conn.execute("SELECT name FROM block_files WHERE base NOT IN "
                                                       "(SELECT id FROM bases)")]
                    conn.execute("DELETE FROM block_files WHERE base NOT IN (SELECT id FROM bases)")
            if old:
                _remove_files(self.path.parent, conn, gone)
        return base_id

    def get_many(self, rows: list[bytes], base: str | None = None) -> dict[bytes, tuple[bytes, bytes]]:
        """The kept (a, b) of the rows that have them (under ``base``: another kind of entry,
        such as a row's encoded layout, kept by the same writer)."""
        self._wait()
        out: dict[bytes, tuple[bytes, bytes]] = {}
        try:
            conn = self._conn()
            if base is not None and base not in self._ids and conn.execute(
                    "SELECT 1 FROM bases WHERE base = ?", (base,)).fetchone() is None:
                return out  # another kind of entry no build kept: not made a base (BASES_KEPT) for nothing
            base_id = self._id(base)
            wanted = list(dict.fromkeys(rows))
            for start in range(0, len(wanted), _BATCH):
                batch = wanted[start:start + _BATCH]
                marks = ",".join("?" * len(batch))
                for row, a, b, total in conn.execute(
                        f"SELECT row, a, b, sum FROM entries WHERE base = ? AND row IN ({marks})", (base_id, *batch)):
                    if _checksum(row, a, b) == total:
                        out[row] = (a, b)
                    else:  # damaged on disk: made again (and stored again)
                        self.damaged += 1
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None
        return out

    def put_many(self, entries: list[tuple[bytes, bytes, bytes]], base: str | None = None) -> None:
        """Keep ``(row, a, b)`` entries (under ``base``, as :meth:`get_many`). They are
        written by a thread while the caller goes on (SQLite releases the GIL); :meth:`close`
        waits for them and raises what failed."""
        if not entries:
            return
        if (self.base if base is None else base) not in self._ids:
            self._wait()  # making a base's id takes the connection: none of the thread's writes may run
        base_id, conn = self._id(base), self._conn()
        values = [(base_id, row, a, b, _checksum(row, a, b)) for row, a, b in entries]

        def put() -> None:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT OR REPLACE INTO entries (base, row, a, b, sum) VALUES (?, ?, ?, ?, ?)", values)

        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="commitforge-memo")
        self._pending.append(self._writer.submit(put))
        while len(self._pending) > 2:  # bounded: at most a few batches wait in memory
            self._pending.pop(0).result()

    def last_features(self, scope: str, *, exact: bool, near: bool, num_perm: int
                      ) -> tuple[list[bytes], Features] | None:
        """The rows whose dedup features a build of this base kept whole for ``scope``
        (what its rows came from: a repository and its chunk settings; see
        :meth:`keep_features`) and those features: one read instead of one entry per row
        (an update compares the rows of an earlier build, and a few more)."""
        self._wait()
        try:
            conn, base_id = self._conn(), self._id()
            found = conn.execute("SELECT name, sum FROM block_files WHERE base = ? AND scope = ?",
                                 (base_id, scope)).fetchone()
            if found is not None:
                conn.execute("UPDATE block_files SET used = ? WHERE base = ? AND scope = ?",
                              (time.time(), base_id, scope))
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None
        if found is None:
            return None
        data = _read_file(self.path.parent, *found)
        if data is None:
            self.damaged += (self.path.parent / MEMO_FILES_DIR / found[0]).exists()  # else removed meanwhile
            return None
        try:
            version, digests, keys, sig, has = marshal.loads(data)
            n = len(has)
            if version != _BLOCK_FORMAT or len(digests) != 20 * n or (keys is not None) != exact \
                    or (exact and len(keys) != n) or len(sig) != (4 * num_perm * n if near else 0):
                return None
        except (ValueError, EOFError, TypeError):
            return None
        rows = [digests[k:k + 20] for k in range(0, len(digests), 20)]
        matrix = np.frombuffer(sig, dtype=np.uint32).reshape(n, num_perm if near else 0)
        return rows, Features(keys, matrix, np.frombuffer(has, dtype=bool))

    def keep_features(self, scope: str, rows: list[bytes], feats: Features) -> None:
        """Keep ``rows``' dedup features whole for the next build of this base and
        ``scope`` (written by a thread, as :meth:`put_many`); rows are sha1 digests. The
        ``BLOCKS_KEPT`` blocks used last are kept."""
        if any(len(r) != 20 for r in rows):
            return
        # marshal takes the array's buffer as bytes: no copy besides the narrowing
        sig = memoryview(np.ascontiguousarray(feats.sig, dtype=np.uint32)).cast("B") if feats.sig.size else b""
        data = marshal.dumps((_BLOCK_FORMAT, b"".join(rows), feats.keys, sig, np.asarray(feats.has, bool).tobytes()))
        base_id, conn, root = self._id(), self._conn(), self.path.parent

        def put() -> None:
            name = _write_file(root, data, ".blk")
            try:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    gone = [n for (n,) in conn.execute("SELECT name FROM block_files WHERE base = ? AND scope = ?",
                                                       (base_id, scope))]
                    conn.execute("INSERT OR REPLACE INTO block_files (base, scope, name, sum, used) "
                                 "VALUES (?, ?, ?, ?, ?)", (base_id, scope, name, zlib.crc32(data), time.time()))
                    gone += _evict(conn, "block_files", BLOCKS_KEPT)
            except BaseException:
                (root / MEMO_FILES_DIR / name).unlink(missing_ok=True)
                raise
            _remove_files(root, conn, gone)

        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="commitforge-memo")
        self._pending.append(self._writer.submit(put))

    def _wait(self) -> None:
        pending, self._pending = self._pending, []
        try:
            for done in pending:
                done.result()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise self._unusable(exc) from None

    def _unusable(self, exc: Exception) -> CommitforgeError:
        return unusable("build cache", self.path, exc)

    def close(self) -> None:
        try:
            self._wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
            forget_connection(self.path)


class RowIndexes:
    """The :class:`core.changes.RowIndex` of each shard of ``chunks/`` the last builds read
    (the ``ROW_INDEXES_KEPT`` used last), by its inode, size and modification time: the
    stage cache keeps such shards (hard links, the same inodes), and the next run's chunk
    stage links them into its ``chunks/``. An entry is a file of MEMO_FILES_DIR
    with a checksum of its content: a damaged one is taken as missing, as is any this
    database cannot give or take (the rows are then read)."""

    def __init__(self, root: str | Path):
        self.path = Path(root) / BUILD_MEMO_FILE

    def _conn(self) -> sqlite3.Connection:
        return connection(self.path, _SCHEMA)  # its errors are misses (find, keep)

    def find(self, stat: str, made_by: str) -> RowIndex | None:
        """The index of the file whose stat key is ``stat``, made by code ``made_by`` (what
        a head holds is the code's), or None. An index is an optimisation: one that cannot
        be read (a busy or damaged database, a damaged file) is a miss."""
        key = f"{stat} {made_by}"
        try:
            conn = self._conn()
            found = conn.execute("SELECT name, sum FROM index_files WHERE stat = ?", (key,)).fetchone()
            if found is None:
                return None
            conn.execute("UPDATE index_files SET used = ? WHERE stat = ?", (time.time(), key))
        except (sqlite3.DatabaseError, OSError):
            return None
        data = _read_file(self.path.parent, *found)
        return RowIndex.unpack(data) if data is not None else None

    def keep(self, stat: str, made_by: str, index: RowIndex) -> None:
        """Keep ``index`` for the file whose stat key is ``stat`` (nothing when the database
        or the file cannot be written)."""
        root = self.path.parent
        try:
            data = index.pack()
            name = _write_file(root, data, ".idx")
        except OSError:
            return
        try:
            conn = self._conn()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                key = f"{stat} {made_by}"
                gone = [n for (n,) in conn.execute("SELECT name FROM index_files WHERE stat = ?", (key,))]
                conn.execute("INSERT OR REPLACE INTO index_files (stat, name, sum, used) VALUES (?, ?, ?, ?)",
                             (key, name, zlib.crc32(data), time.time()))
                gone += _evict(conn, "index_files", ROW_INDEXES_KEPT)
        except (sqlite3.DatabaseError, OSError):
            (root / MEMO_FILES_DIR / name).unlink(missing_ok=True)
            return
        _remove_files(root, conn, gone)

    def close(self) -> None:
        forget_connection(self.path)


class Memo(NamedTuple):
    """What the build stage hands a builder whose ``build`` takes ``memo``: the store of
    examples, each change's row key in it, and the example lines an earlier build wrote
    (None unless the writer writes lines; see core.kept_lines), copied instead of built.
    ``layouts``: the base under which the store keeps each row's encoded layout (what
    ``assemble`` fits into ``max_tokens``; see :func:`encode_layout`), read by a build
    that lays out rows as an earlier one did but fits them otherwise (a sweep over
    ``builder.max_tokens``), and kept too when ``keep_layouts``."""

    store: BuildMemo
    rows: list[bytes]
    lines: KeptLines | None = None
    layouts: str | None = None
    keep_layouts: bool = False


def _checksum(row: bytes, a: bytes, b: bytes) -> int:
    """crc32 of an entry, its row included (bytes changed on disk, or an entry moved to
    another row, are caught)."""
    return zlib.crc32(b, zlib.crc32(a, zlib.crc32(row)))


def encode(built: Built, small: bool | None = None) -> tuple[bytes, bytes]:
    """The entry (meta, ids) of a result of ``assemble(..., packed=True)``. ``small``: True
    when the ids are known to fit in 16 bits (a tokenizer of at most 65,536 ids), None to
    look at them."""
    ex = built.example
    if ex is None:
        return marshal.dumps((0, built.skip or "unknown")), b""
    code, ids = _pack_ids(ex["input_ids"], small)
    # the spans as the lists they are (decode takes lists or tuples), the runs as plain tuples
    meta = (code, bool(built.truncated), tuple(ex["labels"]), ex["segments"], int(ex["n_tokens"]),
            int(ex["n_target_tokens"]))
    return marshal.dumps(meta), ids


def _pack_ids(ids: np.ndarray, small: bool | None) -> tuple[int, bytes]:
    """(code, bytes) of token ids: 16 bits each when ``small`` (None: when they fit), else 32."""
    if small is None:
        small = len(ids) == 0 or (int(ids.min()) >= 0 and int(ids.max()) < 1 << 16)
    code = 1 if small else 2
    return code, ids.astype(_DTYPES[code], copy=False).tobytes()


def _unpack_ids(code: int, data: bytes) -> np.ndarray:
    """The int32 ids :func:`_pack_ids` packed (a read-only view when they are int32: ids
    are never modified)."""
    ids = np.frombuffer(data, dtype=_DTYPES[code])
    return ids.astype(np.int32) if code != 2 else ids


def encode_layout(segments: list[Segment], encoded: list[np.ndarray], small: bool | None = None
                  ) -> tuple[bytes, bytes]:
    """The entry (meta, ids) of a row's layout and the ids of its content segments (what
    ``encode_layouts`` yields). ``small`` as for :func:`encode`. A content segment's text
    is not kept: ``assemble`` reads only a special segment's."""
    code, ids = _pack_ids(np.concatenate(encoded) if encoded else np.empty(0, dtype=np.int32), small)
    segs = [(s.name, s.text if s.special else None, s.target, s.drop_rank, s.cuttable, s.bracket) for s in segments]
    return marshal.dumps((code, segs, [len(e) for e in encoded])), ids


def decode_layout(kept: tuple[bytes, bytes]) -> tuple[list[Segment], list[np.ndarray]]:
    """The segments and the content segments' ids (int32 arrays) of :func:`encode_layout`."""
    code, segs, lens = marshal.loads(kept[0])
    ids = _unpack_ids(code, kept[1])
    if sum(lens) != len(ids) or sum(text is None for _, text, *_ in segs) != len(lens):
        raise ValueError("a layout entry whose ids do not match its segments")
    segments = [Segment(name, "" if text is None else text, text is not None, target, rank, cut, bracket)
                for name, text, target, rank, cut, bracket in segs]
    return segments, np.split(ids, np.cumsum(lens)[:-1]) if lens else []


def decode(kept: tuple[bytes, bytes], change: dict[str, Any], split: str) -> Built:
    """The :class:`Built` that ``assemble`` made of ``change`` in ``split``, from what was kept."""
    meta = marshal.loads(kept[0])
    if meta[0] == 0:
        return Built(None, meta[1])
    code, truncated, runs, spans, n_tokens, n_target = meta
    ids = _unpack_ids(code, kept[1])
    example = packed_example(change, split, ids, TrainedRuns(runs), [list(s) for s in spans], n_tokens, n_target)
    return Built(example, None, truncated)


def dedup_entries(rows: list[bytes], computed: Features) -> list[tuple[bytes, bytes, bytes]]:
    """The entries of rows whose dedup features were computed (``computed``, in order):
    the digest of the normalized text and the signature as uint32s (empty without shingles
    or without near matching)."""
    keys, near = computed.keys, computed.sig.shape[1] > 0
    sig = computed.sig.astype(np.uint32) if near else None  # a signature's entries are below 2**32 - 5
    return [(row, keys[k] if keys is not None else b"", sig[k].tobytes() if sig is not None and computed.has[k] else b"")
            for k, row in enumerate(rows)]


def merge_features(rows: list[bytes], kept: dict[bytes, tuple[bytes, bytes]], todo: list[int], computed: Features,
                   *, exact: bool, near: bool, num_perm: int,
                   last: tuple[np.ndarray, np.ndarray, Features] | None = None) -> Features:
    """The dedup features of every row: ``computed`` for the rows ``todo`` (in order);
    with ``last`` (the positions of some rows, their positions in a whole block of
    features, and that block; see :meth:`BuildMemo.last_features`), the block's for those;
    the kept entries for the others."""
    n = len(rows)
    if len(todo) == n:  # nothing was kept (todo is every row, in order)
        return computed
    keys: list[bytes] | None = [b""] * n if exact else None
    # as kept, in uint32s: half the fresh memory of computed signatures (first touched here,
    # 18 MB for rusty-kaspa's history) and the block's copied without widening. Entries are
    # below 2**32 - 5; rows without shingles get the sentinel at the end (dedup compares
    # rows with shingles only), so filling it all first would be a pass for nothing
    sig = np.empty((n, num_perm if near else 0), dtype=np.uint32)
    has = np.zeros(n, dtype=bool)
    filled = np.zeros(n, dtype=bool)
    for k, i in enumerate(todo):
        if keys is not None:
            keys[i] = computed.keys[k]  # type: ignore[index]
    if todo:
        at = np.asarray(todo, dtype=np.int64)
        filled[at] = True
        if near:
            sig[at] = computed.sig
            has[at] = computed.has
    if last is not None:
        at, src, block = last
        if keys is not None:
            for i, j in zip(at.tolist(), src.tolist()):
                keys[i] = block.keys[j]  # type: ignore[index]
        if near:
            take = block.has[src]
            sig[at[take]] = block.sig[src[take]]
            has[at[take]] = True
        filled[at] = True
    for i in np.flatnonzero(~filled).tolist():
        key, packed = kept[rows[i]]
        if keys is not None:
            keys[i] = key
        if near and packed:
            sig[i] = np.frombuffer(packed, dtype=np.uint32)
            has[i] = True
    if near:
        sig[~has] = np.iinfo(np.uint32).max  # what rows without shingles hold, narrowed as when kept
    return Features(keys, sig, has)
