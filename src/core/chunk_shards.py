"""The chunk stage's output in shards: ``chunks/00000.jsonl``, ``00001.jsonl``…

The unit changes of a history are one sequence of JSON lines, commit after commit, cut
into files of about ``SHARD_BYTES``: a shard ends after the first commit that brings it
to ``SHARD_BYTES`` or more (a commit's rows are never split), so where shards end depends
on the rows before them only. A history only grows at its end: a run after new commits
has the same first shards as the run before, and the stage cache keeps each run's shards
(hard links, see core.stage_cache) for the next one to link into its own run directory
instead of copying them. Only the last shard, which the new commits' rows continue, is
copied (its first bytes) and written on. Read together in order, the shards are the
stage's output as one file would hold it.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

from core.files import atomic_write, remember_digest, shard_paths, stat_key

CHUNKS_DIR = "chunks"
SHARD_BYTES = 16 << 20


def shard_name(k: int) -> str:
    return f"{k:05d}.jsonl"


def shards_key(files: list[Any]) -> str:
    """What tells one sequence of shards (paths or open descriptors) from another without
    reading them: a digest of each one's ``stat_key``. Hard links of the shards (a kept
    output) have the same key."""
    return hashlib.sha1("\n".join(stat_key(f) for f in files).encode()).hexdigest()


class WrittenShard(NamedTuple):
    rel: str  # its path in the run directory (``chunks/00000.jsonl``)
    rows: int
    size: int


class ChunkShards:
    """Writes a run's ``chunks/``: rows go to the open shard, which ends at a commit's end
    once it holds ``shard_bytes`` or more (:meth:`end_commit`); :meth:`link` puts a kept
    shard in place whole. Each shard is written as :func:`core.files.atomic_write` writes
    (in the background, hashed as it goes). Used as a context manager: on an error the
    open shard is dropped; otherwise the last one is finished, a run without rows gets
    one empty shard, and shards of an earlier run in the same directory beyond this run's
    are removed."""

    def __init__(self, run_dir: Path, shard_bytes: int = SHARD_BYTES):
        self.run_dir = run_dir
        self.folder = run_dir / CHUNKS_DIR
        self.shard_bytes = shard_bytes
        self.shards: list[WrittenShard] = []
        self.linked = 0  # shards linked whole
        self._stack: ExitStack | None = None
        self._fh: Any = None
        self._size = self._rows = 0
        # a full shard is finished (its writes awaited, synced, renamed) by a thread while the
        # next one is written: on a slow disk, a cold run's main process would otherwise wait
        # for each shard's sync (1-1.6 s of rusty-kaspa's chunk stage)
        self._finishing: ThreadPoolExecutor | None = None
        self._finished: list[Future] = []
        self._spent: list[str] = []  # files copied from, removed once the open shard is finished

    def __enter__(self) -> Self:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if kind is not None:
                if self._stack is not None:
                    self._stack.__exit__(kind, value, tb)  # the open shard's temporary file goes
                    self._stack = self._fh = None
                return
            if self._stack is not None or not self.shards:
                self._close()
        finally:
            for future in self._finished:
                future.exception() if kind is not None else future.result()  # the first error raised
            if self._finishing is not None:
                self._finishing.shutdown()
        written = {Path(s.rel).name for s in self.shards}
        for path in shard_paths(self.folder):
            if path.name not in written:  # an earlier run's in this directory
                path.unlink(missing_ok=True)

    def _rel(self) -> str:
        return f"{CHUNKS_DIR}/{shard_name(len(self.shards))}"

    @property
    def fh(self) -> Any:
        """The open shard's writer (``write``, ``copy_range``, ``copy_file``), opened when first asked."""
        if self._fh is None:
            self._stack = ExitStack()
            self._fh = self._stack.enter_context(atomic_write(self.run_dir / self._rel(), background=True))
        return self._fh

    def _close(self) -> None:
        self.fh  # noqa: B018 - an empty shard is still a file
        stack, self._stack, self._fh = self._stack, None, None
        spent, self._spent = self._spent, []
        if self._finishing is None:
            self._finishing = ThreadPoolExecutor(1, thread_name_prefix="commitforge-shards")
        # one thread finishes the shards in order: a file an earlier shard copies from is
        # removed only after that shard's copy too
        self._finished.append(self._finishing.submit(_finish, stack, spent))
        self.shards.append(WrittenShard(self._rel(), self._rows, self._size))
        self._size = self._rows = 0

    @property
    def open(self) -> bool:
        """Whether a shard is being written (one is linked only between shards)."""
        return self._fh is not None

    def copy_file(self, path: str, start: int, size: int, last: bool = False) -> None:
        """Append ``size`` bytes of the file at ``path`` from ``start`` to the open shard;
        ``last``: no later range of that file follows, so it is removed once the shards
        that copy from it are finished."""
        self.fh.copy_file(path, start, size)
        if last:
            self._spent.append(path)

    def link(self, source: Path, rows: int, size: int, sha256: str) -> bool:
        """Put ``source`` (a kept shard of ``size`` bytes and ``rows`` rows, whose sha256 is
        known) in place as the next shard; False when it cannot be linked (another file
        system): the caller copies it instead."""
        if self._fh is not None:
            raise RuntimeError("a shard is linked only between shards")
        path = self.run_dir / self._rel()
        tmp = path.with_name(f".{path.name}.link.tmp")
        try:
            tmp.unlink(missing_ok=True)
            os.link(source, tmp)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return False
        remember_digest(path, sha256, size)
        self.shards.append(WrittenShard(self._rel(), rows, size))
        self.linked += 1
        return True

    def wrote(self, size: int, rows: int = 0) -> None:
        """Count ``size`` bytes and ``rows`` rows just given to :attr:`fh`."""
        self._size += size
        self._rows += rows

    def end_commit(self) -> None:
        """A commit's rows are all written: the shard ends here once it is big enough."""
        if self._fh is not None and self._size >= self.shard_bytes:
            self._close()


def _finish(stack: ExitStack, spent: list[str]) -> None:
    stack.close()  # the shard's writes awaited, synced, and renamed into place
    for path in spent:
        Path(path).unlink(missing_ok=True)
