"""Atomic output files: written under a temporary name, renamed into place when complete."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from core.hash_points import POINT_BYTES, Sha256, best_point

try:
    import orjson as _orjson
except ImportError:  # a core dependency; json alone gives the same bytes, slower
    _orjson = None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def default_mode(path: Path | str, directory: bool = False) -> None:
    """Give ``path`` the permissions a plain ``open``/``mkdir`` would (``tempfile`` makes
    files 0600 and directories 0700: outputs must be readable as the user's umask allows,
    e.g. by the account that trains on them)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)


# what ``atomic_write`` names its temporary files (``.NAME.*.tmp``, beside the file): a
# process killed while writing leaves one behind
ATOMIC_TEMPORARIES = ".*.tmp"


@contextmanager
def atomic_write(path: Path, background: bool = False) -> Iterator[IO[bytes]]:
    """A binary file put at ``path`` when the block ends without error. ``background``:
    a file-like object with ``write`` only, whose bytes a thread hashes and writes while
    the caller makes the next ones; the sha256 is then remembered for :func:`output_digest`
    (the manifest does not read the file again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ahead = _AHEAD.pop(os.path.abspath(path), None) if background else None
    if ahead is not None:  # its temporary file is this one's: copy_ahead started it
        fd, tmp = ahead.fd, ahead.tmp
    else:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if ahead is None:
            default_mode(tmp)
        with os.fdopen(fd, "wb") as fh:
            points = None
            if background:
                with _BackgroundWrites(fh, ahead) as out:
                    yield out  # type: ignore[misc]
                digest, points = out.digest, out.points
            else:
                yield fh
                digest = None
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        if digest is not None:
            _DIGESTS[os.path.abspath(path)] = (stat_key(path), *digest, points)
    except BaseException:
        if ahead is not None:
            ahead.wait()  # its thread is done with the file before it goes
        Path(tmp).unlink(missing_ok=True)
        raise


class _CopyAhead:
    """The first ``size`` bytes of an open file, copied by a thread into a new temporary
    file beside ``path`` (named as ``atomic_write`` names its own) until
    ``atomic_write(path, background=True)`` takes it over (see :func:`copy_ahead`)."""

    def __init__(self, path: Path, src: int, size: int):
        self.src_key = stat_key(src)
        self.size = size
        self.copied = 0  # bytes copied (and synced) so far: the thread's own until it ends
        self._src = os.dup(src)  # the thread's own: the caller may close its descriptor
        try:
            self.fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except BaseException:
            os.close(self._src)
            raise
        default_mode(self.tmp)
        self._thread = threading.Thread(target=self._copy, name="commitforge-ahead", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        at, size, step = 0, self.size, _BackgroundWrites.SYNC_BYTES
        try:
            while at < size:
                try:
                    n = os.copy_file_range(self._src, self.fd, min(step, size - at), at, at)
                except (AttributeError, OSError):  # not here (or not across these file systems)
                    block = os.pread(self._src, min(step, size - at), at)
                    n = os.pwrite(self.fd, block, at) if block else 0
                if n <= 0:
                    break
                at += n
                # on disk as it goes, as a background writer's bytes are (its SYNC_BYTES)
                getattr(os, "fdatasync", os.fsync)(self.fd)
                self.copied = at
        except OSError:
            pass  # what was copied stands; the rest is copied when the file is written
        finally:
            os.close(self._src)

    def wait(self) -> int:
        """The bytes copied, once the thread is done."""
        self._thread.join()
        return self.copied

    def drop(self) -> None:
        """Not taken over: the thread's end awaited, the file removed."""
        self.wait()
        os.close(self.fd)
        Path(self.tmp).unlink(missing_ok=True)


# files whose first bytes a thread copies ahead of their writing, by absolute path
_AHEAD: dict[str, _CopyAhead] = {}


def copy_ahead(path: Path, src: int, size: int) -> None:
    """Start copying the first ``size`` bytes of the file open as ``src`` to the output at
    ``path``, which ``atomic_write(path, background=True)`` writes later in this process,
    as a guess that it starts with those bytes: a thread copies them meanwhile (in the
    kernel where the platform allows). If the writing does start with a ``copy_range``
    of that file's first bytes, up to ``size``, they are written already (and any bytes
    copied beyond them are cut); if it starts otherwise, what was copied is thrown away.
    A copy not taken over is removed by :func:`drop_ahead`."""
    key = os.path.abspath(path)
    old = _AHEAD.pop(key, None)
    if old is not None:
        old.drop()
    path.parent.mkdir(parents=True, exist_ok=True)
    _AHEAD[key] = _CopyAhead(path, src, size)


def drop_ahead() -> None:
    """Remove the copies :func:`copy_ahead` started that no writing took over."""
    while _AHEAD:
        _AHEAD.popitem()[1].drop()


# sha256 and size of outputs this process wrote in the background, by absolute path, with
# the inode, size and mtime they had (a file changed since is hashed again), and the states
# of its sha256 that a later output starting with its bytes can resume (core.hash_points)
_DIGESTS: dict[str, tuple[str, str, int, list[tuple[int, bytes]] | None]] = {}


def hash_points(path: Path | str) -> list[tuple[int, bytes]] | None:
    """The saved states of the sha256 of ``path``, an output this process wrote in the
    background and nobody changed since (see core.hash_points), or None."""
    known = _DIGESTS.get(os.path.abspath(path))
    try:
        if known is None or known[0] != stat_key(path):
            return None
    except OSError:
        return None
    return known[3]


def stat_key(file: Path | str | int) -> str:
    """What tells a file's versions apart without reading it (a path, or an open
    descriptor): its inode, size and modification time."""
    st = os.stat(file)
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def copy_range(fd: int, start: int, size: int, dst: Any) -> None:
    """Append ``size`` bytes of the file open as ``fd``, from offset ``start``, to ``dst``
    (an open binary file, written at its end), in the kernel where the platform allows."""
    dst.flush()
    left, at = size, start
    try:
        while left > 0:
            n = os.copy_file_range(fd, dst.fileno(), left, at)
            if n <= 0:
                break
            left -= n
            at += n
    except (AttributeError, OSError):
        pass  # not available here (or across these file systems): copied below
    dst.seek(0, os.SEEK_END)
    while left > 0:
        block = os.pread(fd, min(left, 1 << 20), at)
        if not block:
            raise OSError(f"a file being copied is shorter than {start + size} bytes")
        dst.write(block)
        left -= len(block)
        at += len(block)


class _BackgroundWrites:
    """Writes gathered into blocks of ``BLOCK`` bytes that one thread hashes while another
    writes them to ``fh`` (hashing and the kernel's copy release the GIL), at most two
    blocks behind. The hashing thread saves the sha256's state every ``POINT_BYTES`` and
    at the end (``points``, see core.hash_points); a file that starts with a copy of
    another's first bytes resumes from that file's points instead of hashing them."""

    BLOCK = 4 << 20
    POINT_BYTES = POINT_BYTES
    # the writing thread writes each this many bytes to disk as it goes (while the caller
    # makes the next ones): ``atomic_write``'s fsync at the end then waits for the last few
    # only (0.16 s for rusty-kaspa's 257 MB train split otherwise)
    SYNC_BYTES = 16 << 20

    def __init__(self, fh: IO[bytes], ahead: _CopyAhead | None = None):
        from concurrent.futures import ThreadPoolExecutor

        self._fh = fh
        self._ahead = ahead  # the file's first bytes, copied by another thread (see copy_ahead)
        self._hash = Sha256()
        self._hashed = 0  # bytes the hash has seen (the hashing thread's own)
        self._next_point = self.POINT_BYTES
        self.points: list[tuple[int, bytes]] | None = [] if self._hash.state() is not None else None
        self.resumed = 0  # bytes whose hash came from a saved state
        self._parts: list[bytes] = []
        self._size = self._total = 0
        # one thread each, so blocks are hashed in order and written in order
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="commitforge-hash")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="commitforge-write")
        self._pending: list[Any] = []
        self._range: list[Any] | None = None  # [path, start, size, remove] of a file range not handed over yet
        self._unsynced = 0  # bytes the writing thread wrote since it last synced
        self.digest: tuple[str, int] | None = None

    def _put(self, block: bytes) -> None:
        self._fh.write(block)
        self._written(len(block))

    def _copy_and_sync(self, fd: int, start: int, size: int) -> None:
        """Copy a range (of a worker's spooled rows, or the output kept from the run before)."""
        copy_range(fd, start, size, self._fh)
        self._written(size)

    def _written(self, size: int) -> None:
        """The writing thread's count of bytes not on disk yet: each ``SYNC_BYTES`` are synced."""
        self._unsynced += size
        if self._unsynced >= self.SYNC_BYTES:
            self._fh.flush()
            getattr(os, "fdatasync", os.fsync)(self._fh.fileno())
            self._unsynced = 0

    def _hash_block(self, block: bytes) -> None:
        self._hash.update(block)
        self._hashed += len(block)
        if self._hashed >= self._next_point and self.points is not None:
            self.points.append((self._hashed, self._hash.state()))  # type: ignore[arg-type]
            self._next_point = self._hashed + self.POINT_BYTES

    def _hash_range(self, fd: int, start: int, size: int) -> None:
        at, end = start, start + size
        while at < end:
            block = os.pread(fd, min(end - at, self.BLOCK), at)
            if not block:
                raise OSError(f"a file being copied is shorter than {end} bytes")
            self._hash_block(block)
            at += len(block)

    def _resume(self, point: tuple[int, bytes], points: list[tuple[int, bytes]], fd: int, size: int) -> None:
        """Hash the copy of a file's first ``size`` bytes from its saved ``point``: the
        file's points up to there are this file's too."""
        at, state = point
        self._hash = Sha256(state)
        self._hashed = self.resumed = at
        self.points = [p for p in points if p[0] <= at]
        self._next_point = at + self.POINT_BYTES
        self._hash_range(fd, at, size - at)

    def _queue(self, hash_job: Callable[[], None], write_job: Callable[[], None]) -> None:
        """One job for each thread (each runs its jobs in order), at most two blocks behind."""
        self._pending.append(self._hasher.submit(hash_job))
        self._pending.append(self._writer.submit(write_job))
        while len(self._pending) > 4:
            self._pending.pop(0).result()

    def _settle_ahead(self, fd: int | None = None, start: int = 0, size: int = 0) -> bool:
        """Before the first write: take over the bytes copied ahead when the file starts
        with a copy of the first ``size`` bytes of the file open as ``fd``, the file they
        were copied from (True: the writing thread then cuts or completes them), else have
        the writing thread throw them away."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return False
        if fd is not None and start == 0 and stat_key(fd) == ahead.src_key:
            self._pending.append(self._writer.submit(self._take_ahead, ahead, fd, size))
            return True
        self._pending.append(self._writer.submit(self._take_ahead, ahead, None, 0))
        return False

    def _take_ahead(self, ahead: _CopyAhead, fd: int | None, size: int) -> None:
        """The writing thread's first job: the file holds the first ``size`` bytes of
        ``fd``, of which ``ahead`` copied some (nothing when ``fd`` is None)."""
        have = min(ahead.wait(), size) if fd is not None else 0
        os.ftruncate(self._fh.fileno(), have)
        self._fh.seek(have)
        if have < size:
            copy_range(fd, have, size - have, self._fh)  # type: ignore[arg-type]
            self._written(size - have)

    def _flush(self) -> None:
        """Hand what waits to the threads: the writes gathered, or a range of a file."""
        if self._parts:
            self._submit()
        if self._range is not None:
            self._copy_file(*self._range)
            self._range = None

    def copy_range(self, fd: int, start: int, size: int, points: list[tuple[int, bytes]] | None = None) -> None:
        """Append ``size`` bytes of the file open as ``fd`` from offset ``start`` (keep it
        open until the writes end): the writing thread copies them, in the kernel where the
        platform allows, while the hashing thread reads them. ``points``: the saved states
        of that file's sha256 (core.hash_points); a copy of its first bytes that starts this
        file is hashed from the last of them it covers."""
        self._flush()
        point = best_point(points, size) if start == 0 and self._total == 0 and self.points is not None else None
        if point is None:
            hash_job = functools.partial(self._hash_range, fd, start, size)
        else:
            hash_job = functools.partial(self._resume, point, points, fd, size)
        if self._ahead is not None and self._settle_ahead(fd, start, size):
            write_job: Callable[[], None] = _nothing  # written ahead (see _take_ahead)
        else:
            write_job = functools.partial(self._copy_and_sync, fd, start, size)
        self._queue(hash_job, write_job)
        self._total += size

    def copy_file(self, path: str, start: int, size: int, remove: bool = False) -> None:
        """:meth:`copy_range` from the file at ``path``, which each thread opens for its
        read (the caller holds no descriptor); with ``remove``, the file is unlinked once
        both have read it (the last range taken from it). A range that goes on from the one
        before it in the same file joins it: one copy for a worker's run of commits."""
        if self._ahead is not None:
            self._settle_ahead()
        waiting = self._range
        if waiting is not None and waiting[0] == path and waiting[1] + waiting[2] == start:
            waiting[2] += size
            waiting[3] = remove
        else:
            self._flush()
            self._range = [path, start, size, remove]
        self._total += size

    def _copy_file(self, path: str, start: int, size: int, remove: bool) -> None:
        left = [2]
        lock = threading.Lock()

        def read(job: Callable[[int], None]) -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                job(fd)
            finally:
                os.close(fd)
                with lock:
                    left[0] -= 1
                    last = not left[0]
                if last and remove:  # each thread works in order: both are done with the file
                    os.unlink(path)

        self._queue(functools.partial(read, lambda fd: self._hash_range(fd, start, size)),
                    functools.partial(read, lambda fd: self._copy_and_sync(fd, start, size)))

    def _submit(self) -> None:
        parts = self._parts
        # a copy unless it is one immutable bytes object: both threads read the block later
        block = parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)
        self._parts, self._size = [], 0
        self._queue(functools.partial(self._hash_block, block), functools.partial(self._put, block))

    def write(self, data: bytes) -> int:
        if self._ahead is not None:
            self._settle_ahead()
        if self._range is not None:
            self._flush()
        self._parts.append(data)
        self._size += len(data)
        self._total += len(data)
        if self._size >= self.BLOCK:
            self._submit()
        return len(data)

    def __enter__(self) -> _BackgroundWrites:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if self._ahead is not None:  # nothing written: an empty file
                self._settle_ahead()
            if kind is None:
                self._flush()
            for pending in self._pending:
                error = pending.exception()  # what the thread met (a full disk)
                if error is not None and kind is None:  # the caller's own error goes first
                    raise error
        finally:
            self._hasher.shutdown(wait=True, cancel_futures=True)
            self._writer.shutdown(wait=True, cancel_futures=True)
        if kind is None:
            self.digest = (self._hash.hexdigest(), self._total)
            if self.points is not None:
                if self._hashed != self._total:  # never expected: no state of a wrong count is kept
                    self.points = None
                elif not self.points or self.points[-1][0] != self._hashed:
                    state = self._hash.state()
                    if state is not None and self._hashed:
                        self.points.append((self._hashed, state))


def _nothing() -> None:
    pass


def _as_list(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy arrays (packed examples)
    if tolist is None:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
    return tolist()


def json_line(obj: Any) -> bytes:
    """One JSON line; lone surrogates (non-UTF-8 paths) become \\udcXX escapes and round-trip.
    Numpy arrays are written as lists."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"),
                      default=_as_list).encode("utf-8", "backslashreplace") + b"\n"


def fast_json_line(obj: dict[str, Any]) -> bytes:
    """:func:`json_line` of a dict, byte for byte, with orjson (several times faster on
    long lists of ints). orjson refuses lone surrogates, ints beyond 64 bits and non-str
    keys, and writes floats its own way (NaN as null): those rows, and any with a float
    value, go through :func:`json_line`. Meant for rows of strings, ints and lists of
    them (training examples), or numpy int arrays in place of those lists (packed
    examples, written as the lists would be); a float nested in a list would be written
    in orjson's form."""
    if any(type(v) is float for v in obj.values()):
        return json_line(obj)
    return record_line(obj)


def record_line(obj: Any) -> bytes:
    """A JSON line of a record (chunks.jsonl rows, commits.jsonl): orjson, with floats in
    its shortest round-trip form (json.loads reads them back equal); a record orjson
    refuses (lone surrogates of non-UTF-8 paths) goes through :func:`json_line`. Numpy
    arrays are written as lists."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj, option=_orjson.OPT_APPEND_NEWLINE | _orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:  # orjson.JSONEncodeError
            pass
    return json_line(obj)


def read_line(line: bytes) -> Any:
    """A line written by :func:`record_line` or :func:`json_line`, read back: orjson, or
    json for what orjson refuses (lone surrogate escapes of non-UTF-8 paths)."""
    if _orjson is not None:
        try:
            return _orjson.loads(line)
        except ValueError:  # orjson.JSONDecodeError
            pass
    return json.loads(line.decode("utf-8"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def output_digest(path: Path) -> tuple[str, int]:
    """(sha256, bytes) of an output: a file's own, or for a directory (a dataset saved by
    ``datasets``) the sha256 of its files' relative paths and sha256 sums, one
    ``sha256  path`` line each in path order (what ``sha256sum`` prints), and their total size."""
    path = Path(path)
    if not path.is_dir():
        known = _DIGESTS.get(os.path.abspath(path))
        if known is not None and known[0] == stat_key(path):
            return known[1], known[2]
        return sha256_file(path), path.stat().st_size
    lines, size = [], 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        lines.append(f"{sha256_file(f)}  {f.relative_to(path).as_posix()}\n")
        size += f.stat().st_size
    return hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest(), size
