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
            ahead.close()  # its thread is done with the file before it goes
        Path(tmp).unlink(missing_ok=True)
        raise


class _CopyAhead:
    """Ranges of open files, copied one after the other by a thread into a new temporary
    file beside ``path`` (named as ``atomic_write`` names its own) until
    ``atomic_write(path, background=True)`` takes it over (see :func:`copy_ahead`)."""

    def __init__(self, path: Path, ranges: list[tuple[int, int, int]], hashed: bool = False):
        # (source's stat key, its own descriptor, start, size): the caller may close its own
        self.ranges: list[tuple[str, int, int, int]] = []
        # with ``hashed``, the states of the sha256 of the bytes copied, each SYNC_BYTES and at
        # the end (see core.hash_points): a writing that takes them hashes at most a step
        self.points: list[tuple[int, bytes]] | None = [] if hashed and Sha256().state() is not None else None
        self.copied = 0  # bytes copied so far, synced each SYNC_BYTES: the thread's own until it ends
        self._limit = sum(size for _, _, size in ranges)  # bytes still wanted: fewer once the writing says
        self.fd = self._dst = -1
        try:
            for src, start, size in ranges:
                self.ranges.append((stat_key(src), os.dup(src), start, size))
            self.fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            default_mode(self.tmp)
            # the thread's own descriptor: the writing closes ``fd`` when it ends, however it ends
            self._dst = os.dup(self.fd)
        except BaseException:
            self._close_sources()
            if self.fd >= 0:
                os.close(self.fd)
                Path(self.tmp).unlink(missing_ok=True)
            raise
        self._thread = threading.Thread(target=self._copy, name="commitforge-ahead", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        step = _BackgroundWrites.SYNC_BYTES
        sha = Sha256() if self.points is not None else None
        unsynced = 0
        try:
            for _, src, start, size in self.ranges:
                at, end = start, start + size
                while at < end:
                    if self.copied >= self._limit:
                        break
                    try:
                        n = os.copy_file_range(src, self._dst, min(step - unsynced, end - at), at, self.copied)
                    except (AttributeError, OSError):  # not here (or not across these file systems)
                        block = os.pread(src, min(step - unsynced, end - at), at)
                        n = os.pwrite(self._dst, block, self.copied) if block else 0
                    if n <= 0:
                        return
                    if sha is not None:  # the same bytes, from the source (the kernel copied them)
                        for k in range(at, at + n, _BackgroundWrites.BLOCK):
                            sha.update(os.pread(src, min(_BackgroundWrites.BLOCK, at + n - k), k))
                    at += n
                    unsynced += n
                    if unsynced >= step:  # on disk as it goes, as a background writer's bytes are
                        self._step(n, sha)
                        unsynced = 0
                    else:
                        self.copied += n
                if self.copied >= self._limit:
                    break
            if unsynced:
                self.copied -= unsynced
                self._step(unsynced, sha)
        except OSError:
            pass  # what was copied stands; the rest is copied when the file is written
        finally:
            os.close(self._dst)

    def _step(self, n: int, sha: Sha256 | None) -> None:
        """The thread's last ``n`` bytes copied, synced (and their sha256's state kept)."""
        getattr(os, "fdatasync", os.fsync)(self._dst)
        self.copied += n
        if sha is not None:
            self.points.append((self.copied, sha.state()))  # type: ignore[union-attr, arg-type]

    def wait(self) -> int:
        """The bytes copied, once the thread is done."""
        self._thread.join()
        return self.copied

    def complete(self, size: int, fh: IO[bytes]) -> None:
        """Make the file hold the first ``size`` bytes of the ranges, cutting what the
        thread copied beyond them or copying what it did not get to, and leave ``fh`` (the
        file, open) at its end."""
        self._limit = min(self._limit, size)  # the thread stops once it has these (at its next step)
        have = min(self.wait(), size)
        os.ftruncate(fh.fileno(), have)
        fh.seek(have)
        at = 0  # where each range starts in the file
        for _, src, start, n in self.ranges:
            lo, hi = max(at, have), min(at + n, size)
            if lo < hi:
                copy_range(src, start + lo - at, hi - lo, fh)
            at += n

    def _close_sources(self) -> None:
        for _, src, _, _ in self.ranges:
            os.close(src)
        self.ranges = []

    def close(self) -> None:
        self.wait()
        self._close_sources()

    def drop(self) -> None:
        """Not taken over: the thread stopped, the file removed."""
        self._limit = 0
        self.close()
        os.close(self.fd)
        Path(self.tmp).unlink(missing_ok=True)


# files whose first bytes a thread copies ahead of their writing, by absolute path
_AHEAD: dict[str, _CopyAhead] = {}


def copy_ahead(path: Path, ranges: list[tuple[int, int, int]], hashed: bool = False) -> None:
    """Start copying ranges ``(descriptor, start, size)`` of open files, one after the
    other, to the output at ``path``, which ``atomic_write(path, background=True)``
    writes later in this process: a guess that it starts with those bytes. A thread
    copies them meanwhile (in the kernel where the platform allows). The writing's first
    ``copy_range`` calls that ask for the same bytes in the same order (each a range or
    the start of what is left of one) find them written; at its first other write, any
    bytes copied beyond them are cut. With ``hashed``, the thread also hashes what it
    copies, so that the writing need not (a copy of a kept file's first bytes has the
    kept file's own saved states instead; see core.hash_points). A copy not taken over is
    removed by the :class:`AheadCopies` that started it."""
    key = os.path.abspath(path)
    old = _AHEAD.pop(key, None)
    if old is not None:
        old.drop()
    if ranges:
        path.parent.mkdir(parents=True, exist_ok=True)
        _AHEAD[key] = _CopyAhead(path, ranges, hashed)


def copying_ahead(path: Path) -> bool:
    """Whether a copy ahead of the output at ``path`` waits to be taken over."""
    return os.path.abspath(path) in _AHEAD


class AheadCopies:
    """The copies ahead one stage starts (see :func:`copy_ahead`), from any of its
    threads: :meth:`close` removes those no writing took over, and refuses any asked
    for later (by a thread that outlived a stage that failed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: list[str] = []
        self._closed = False

    def copy(self, path: Path, ranges: list[tuple[int, int, int]], hashed: bool = False) -> None:
        with self._lock:
            if not self._closed:
                copy_ahead(path, ranges, hashed)
                self._paths.append(os.path.abspath(path))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for key in self._paths:
                ahead = _AHEAD.pop(key, None)
                if ahead is not None:
                    ahead.drop()


# sha256 and size of outputs this process wrote in the background, by absolute path, with
# the inode, size and mtime they had (a file changed since is hashed again), and the states
# of its sha256 that a later output starting with its bytes can resume (core.hash_points)
_DIGESTS: dict[str, tuple[str, str, int, list[tuple[int, bytes]] | None]] = {}


def remember_digest(path: Path | str, sha256: str, size: int) -> None:
    """Record the sha256 and size of ``path``, an output put in place by other means than
    a background write (a hard link to a kept file) whose digest is known: :func:`output_digest`
    does not read it."""
    _DIGESTS[os.path.abspath(path)] = (stat_key(path), sha256, size, None)


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
        self._ahead_at = (0, 0)  # the range copied ahead the next bytes must come from, and how far
        self._taken = 0  # bytes copied ahead that the file starts with
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

    def _jump(self, point: tuple[int, bytes], points: list[tuple[int, bytes]]) -> None:
        """Go on from ``point``, a saved state of this file's own first bytes, skipping the
        bytes between where the hash was and there: ``points`` (states of the same bytes)
        up to it are this file's too."""
        at, state = point
        self._hash = Sha256(state)
        self.resumed += at - self._hashed
        self._hashed = at
        self.points = [p for p in points if p[0] <= at]
        self._next_point = at + self.POINT_BYTES

    def _resume(self, point: tuple[int, bytes], points: list[tuple[int, bytes]], fd: int, size: int) -> None:
        """Hash the copy of a file's first ``size`` bytes from its saved ``point``."""
        self._jump(point, points)
        self._hash_range(fd, point[0], size - point[0])

    def _queue(self, hash_job: Callable[[], None], write_job: Callable[[], None]) -> None:
        """One job for each thread (each runs its jobs in order), at most two blocks behind."""
        self._pending.append(self._hasher.submit(hash_job))
        self._pending.append(self._writer.submit(write_job))
        while len(self._pending) > 4:
            self._pending.pop(0).result()

    def _match_ahead(self, fd: int, start: int, size: int) -> int:
        """How many of ``size`` bytes of ``fd`` from ``start``, the next ones the file
        gets, are the next ones copied ahead (see copy_ahead); those are counted taken."""
        ahead = self._ahead
        if ahead is None or self._total != self._taken or self._parts or self._range is not None:
            return 0
        k, done = self._ahead_at
        if k >= len(ahead.ranges):
            return 0
        key, _, first, n = ahead.ranges[k]
        if start != first + done or stat_key(fd) != key:
            return 0
        taken = min(size, n - done)
        self._ahead_at = (k + 1, 0) if done + taken == n else (k, done + taken)
        self._taken += taken
        return taken

    def _hash_ahead(self, ahead: _CopyAhead, fd: int, start: int, size: int, taken: int) -> None:
        """Hash ``size`` bytes of ``fd`` from ``start``, which the file holds from where the
        hash has got to, the first ``taken`` of them copied ahead (as all the file's bytes
        before them): from the last state the copy's thread saved within those."""
        at = self._hashed  # where these bytes are in the file (ops are hashed in order)
        ahead.wait()
        point = None
        for p in ahead.points or ():
            if at < p[0] <= at + taken:
                point = p
        if point is not None and self.points is not None:
            self._jump(point, ahead.points)  # type: ignore[arg-type]  # all the file up to there was copied ahead
        done = self._hashed - at
        self._hash_range(fd, start + done, size - done)

    def _settle_ahead(self) -> None:
        """Before any write that is not the next bytes copied ahead: the writing thread
        makes the file hold just the bytes taken (see _match_ahead)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            self._pending.append(self._writer.submit(self._take_ahead, ahead, self._taken))

    def _take_ahead(self, ahead: _CopyAhead, size: int) -> None:
        try:
            ahead.complete(size, self._fh)
        finally:
            ahead.close()

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
        ahead = self._ahead
        taken = self._match_ahead(fd, start, size)
        if taken and point is None and ahead.points is not None:  # type: ignore[union-attr]
            hash_job = functools.partial(self._hash_ahead, ahead, fd, start, size, taken)
        if taken == size:
            write_job: Callable[[], None] = _nothing  # copied ahead (see _take_ahead)
        else:
            if self._ahead is not None:
                self._settle_ahead()
            write_job = functools.partial(self._copy_and_sync, fd, start + taken, size - taken)
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
    """A JSON line of a record (chunks/ rows, commits.jsonl): orjson, with floats in
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


def shard_paths(folder: Path) -> list[Path]:
    """The numbered line shards of ``folder`` (``00000.jsonl``, ``00001.jsonl``…), in
    order; [] when there are none or it is not a directory."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".jsonl" and p.stem.isdigit())


def split_shards(run_dir: Path | str, split: str) -> list[Path]:
    """The line shards of ``split`` a ``jsonl`` writer put in ``run_dir``
    (``data/{split}/00000.jsonl``, ``00001.jsonl``…), in order; [] when there are none."""
    return shard_paths(Path(run_dir) / "data" / split)


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
