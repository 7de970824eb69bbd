"""sha256 digests that resume where a kept file's left off.

A repository brought up to date copies most of each output from a file an earlier run
wrote and the cache kept: the last shard of ``chunks/`` from the stage cache (the shards
before it are links, whose digests the cache kept), the last shard of each
``data/{split}/`` from core.kept_lines (the full shards before it are links, whose
digests the cache kept). The manifest needs each output's sha256, and hashing those
copied bytes again (rusty-kaspa: 500 of the 567 MB an update wrote before train was
sharded) took 0.45 s of an update's 2.9 s of chunk and build stages.

So a background writer (``core.files.atomic_write(background=True)``) saves the state of
its sha256 every ``POINT_BYTES`` and at the end: its *points*. A cache that keeps the file
(a hard link) keeps its points here, by the file's inode, size and modification time; an
output that starts with the first N bytes of a kept file resumes from its last point at
or before N and hashes only the bytes after it. A kept file changed since has another
modification time and is not found; as with the kept files themselves, an edit in place
that keeps both size and modification time is not seen.

Saving a state needs OpenSSL's ``SHA256_CTX`` (through ctypes, from the libcrypto Python's
own ``hashlib`` uses). Where it is missing, or fails its self-check, nothing is saved and
every byte is hashed, as before. This store is an optimisation only: when it cannot be
read or written, digests are computed in full.
"""

from __future__ import annotations

import sqlite3
import struct
import sys
import time
from pathlib import Path

from core.blob_cache import connection, forget_connection

HASH_POINTS_FORMAT = 1
HASH_POINTS_FILE = f"sha256-points-f{HASH_POINTS_FORMAT}.sqlite"  # in the cache directory
POINT_BYTES = 16 << 20  # a state at least this often: a resumed hash reads at most this much of the copy
KEPT_POINTS = 64  # files whose points are kept (the most recently used)

_CTX_SIZE = 112  # sizeof(SHA256_CTX): uint32 h[8], Nl, Nh, data[16], num, md_len
_CTX = struct.Struct("@8I2I16I2I")
# a state is only resumed by the same layout of the same byte order
_KIND = f"openssl-sha256-ctx-{_CTX_SIZE}-{sys.byteorder}"

Point = tuple[int, bytes]  # (bytes hashed, state after them)


class _OpenSSL:
    """SHA256_Init / SHA256_Update / SHA256_Final of libcrypto, or ``ok`` False."""

    def __init__(self) -> None:
        self.ok = False
        try:
            import ctypes
        except ImportError:
            return
        # the libcrypto Python's own hashlib links (its symbols resolve through the extension),
        # else a versioned name: macOS's unversioned libcrypto.dylib aborts the process when loaded
        for name in (_hashlib_path(), "libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.3.dylib"):
            if name is None:
                continue
            try:
                lib = ctypes.CDLL(name)
                self.init, self.update, self.final = lib.SHA256_Init, lib.SHA256_Update, lib.SHA256_Final
                break
            except (OSError, AttributeError):
                continue
        else:
            return
        self.ctypes = ctypes
        self.init.argtypes = [ctypes.c_char_p]
        self.update.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
        self.final.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        self.ok = self._self_check()

    def _self_check(self) -> bool:
        """A digest resumed from a saved state is hashlib's, and the state counts its bytes."""
        import hashlib

        ctypes = self.ctypes
        data = bytes(range(256)) * 3
        ctx = ctypes.create_string_buffer(_CTX_SIZE)
        self.init(ctx)
        self.update(ctx, data[:101], 101)
        if _hashed(ctx.raw) != 101:
            return False
        resumed = ctypes.create_string_buffer(ctx.raw, _CTX_SIZE)
        self.update(resumed, data[101:], len(data) - 101)
        out = ctypes.create_string_buffer(32)
        self.final(out, resumed)
        return out.raw == hashlib.sha256(data).digest()


def _hashlib_path() -> str | None:
    try:
        import _hashlib
    except ImportError:
        return None
    return getattr(_hashlib, "__file__", None)


_LIB: _OpenSSL | None = None


def _openssl() -> _OpenSSL:
    global _LIB
    if _LIB is None:
        _LIB = _OpenSSL()
    return _LIB


def resumable() -> bool:
    """Whether sha256 states can be saved and resumed here."""
    return _openssl().ok


def _hashed(state: bytes) -> int | None:
    """How many bytes a saved state has hashed, or None for what is not a state."""
    if len(state) != _CTX_SIZE:
        return None
    fields = _CTX.unpack(state)
    nl, nh, num, md_len = fields[8], fields[9], fields[26], fields[27]
    bits = (nh << 32) | nl
    if md_len != 32 or num >= 64 or bits % 8 or (bits // 8) % 64 != num:
        return None
    return bits // 8


class Sha256:
    """``hashlib.sha256``'s ``update`` and ``hexdigest``, plus :meth:`state`, from which
    another ``Sha256(state)`` goes on. Without OpenSSL's context, a plain hashlib sha256
    whose ``state()`` is None."""

    def __init__(self, state: bytes | None = None):
        lib = _openssl()
        self._lib = lib if lib.ok else None
        if self._lib is None:
            if state is not None:
                raise ValueError("sha256 states cannot be resumed here")
            import hashlib

            self._plain = hashlib.sha256()
            return
        ctypes = lib.ctypes
        if state is None:
            self._ctx = ctypes.create_string_buffer(_CTX_SIZE)
            lib.init(self._ctx)
        else:
            if _hashed(state) is None:
                raise ValueError("not a saved sha256 state")
            self._ctx = ctypes.create_string_buffer(state, _CTX_SIZE)

    def update(self, data: bytes) -> None:
        if self._lib is None:
            self._plain.update(data)
        else:  # ctypes lets other threads run meanwhile, as hashlib does
            self._lib.update(self._ctx, data, len(data))

    def state(self) -> bytes | None:
        return None if self._lib is None else self._ctx.raw

    def hexdigest(self) -> str:
        if self._lib is None:
            return self._plain.hexdigest()
        ctypes = self._lib.ctypes
        ctx = ctypes.create_string_buffer(self._ctx.raw, _CTX_SIZE)  # Final ends a context: on a copy
        out = ctypes.create_string_buffer(32)
        self._lib.final(out, ctx)
        return out.raw.hex()


def best_point(points: list[Point] | None, size: int) -> Point | None:
    """The point that hashed the most of the first ``size`` bytes (None: none did)."""
    best = None
    for point in points or ():
        if 0 < point[0] <= size and (best is None or point[0] > best[0]):
            best = point
    return best


def _pack(points: list[Point]) -> bytes:
    return b"".join(struct.pack("<Q", at) + state for at, state in points)


def _unpack(blob: bytes) -> list[Point] | None:
    step = 8 + _CTX_SIZE
    if not blob or len(blob) % step:
        return None
    points = []
    for k in range(0, len(blob), step):
        (at,) = struct.unpack_from("<Q", blob, k)
        state = bytes(blob[k + 8:k + step])
        if _hashed(state) != at:
            return None
        points.append((at, state))
    return points


class HashPoints:
    """The points of the files a cache keeps (see the module's docstring), under ``root``."""

    def __init__(self, root: str | Path):
        self.path = Path(root) / HASH_POINTS_FILE

    def _conn(self) -> sqlite3.Connection:
        return connection(self.path, [
            ("CREATE TABLE IF NOT EXISTS points (stat TEXT NOT NULL, kind TEXT NOT NULL, points BLOB NOT NULL, "
             "used REAL NOT NULL, PRIMARY KEY (stat, kind))")])

    def remember(self, output: Path, kept: Path) -> None:
        """Keep the points of ``output`` (a file this process wrote in the background) for
        ``kept``, a hard link to it that a cache keeps."""
        from core.files import hash_points, stat_key

        points = hash_points(output)
        if not points:
            return
        try:
            stat = stat_key(kept)
            if stat != stat_key(output):
                return  # not the same file (a copy)
            conn = self._conn()
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT OR REPLACE INTO points (stat, kind, points, used) VALUES (?, ?, ?, ?)",
                             (stat, _KIND, _pack(points), time.time()))
                conn.execute("DELETE FROM points WHERE rowid IN (SELECT rowid FROM points ORDER BY used DESC "
                             "LIMIT -1 OFFSET ?)", (KEPT_POINTS,))
        except (OSError, sqlite3.DatabaseError):
            pass

    def find(self, fd: int) -> list[Point] | None:
        """The points of the kept file open as ``fd``, or None."""
        if not resumable():
            return None
        from core.files import stat_key

        try:
            stat = stat_key(fd)
            conn = self._conn()
            found = conn.execute("SELECT points FROM points WHERE stat = ? AND kind = ?", (stat, _KIND)).fetchone()
            if found is None:
                return None
            conn.execute("UPDATE points SET used = ? WHERE stat = ? AND kind = ?", (time.time(), stat, _KIND))
        except (OSError, sqlite3.DatabaseError):
            return None
        return _unpack(found[0])

    def close(self) -> None:
        forget_connection(self.path)

