"""The rows of the chunk stage's output (``chunks/``, core.chunk_shards) as the build stage reads them."""

from __future__ import annotations

import bisect
import copy
import hashlib
import marshal
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

try:
    import orjson
except ImportError:  # a core dependency; json reads the same rows, slower
    orjson = None

from core.chunk_shards import shards_key
from core.errors import CommitforgeError
from core.files import read_line, shard_paths, stat_key

# texts that repeat across the rows of chunks/: one string object each
_SHARED_FIELDS = ("subject", "message", "old_code", "new_code", "header", "signature")


class _ChangesFile:
    """The chunk stage's output open while its rows are read: one file, or a folder of
    shards (core.chunk_shards) read as the one file they make in order (a row's offset
    is from the first shard's start; no row spans two shards). Each row is read whole
    when it is needed, each distinct text kept once (see :func:`read_changes`)."""

    def __init__(self, path: Path):
        self.path = path
        self.folder = path.is_dir()
        self.fds: list[int] = []
        for p in shard_paths(path) if self.folder else [path]:
            self.fds.append(os.open(p, os.O_RDONLY))
        self.starts = [0]  # where each file starts in the whole
        for fd in self.fds:
            self.starts.append(self.starts[-1] + os.fstat(fd).st_size)
        self._key: str | None = None
        self.forget_shared()

    def key(self) -> str:
        """The ``stat_key`` of the open file, or ``core.chunk_shards.shards_key`` of the open
        shards: what tells these rows' files from others."""
        if self._key is None:
            self._key = shards_key(self.fds) if self.folder else stat_key(self.fds[0])
        return self._key

    def lines_of(self, k: int, at: int) -> Iterator[bytes]:
        """The lines of file ``k`` from its offset ``at`` (a line's start) to its end."""
        with open(self.fds[k], "rb", closefd=False) as fh:
            fh.seek(at)
            yield from fh

    def forget_shared(self) -> None:
        shared: dict[str, str] = {}
        self.one = shared.setdefault

    def line(self, at: int, size: int) -> bytes:
        k = bisect.bisect_right(self.starts, at) - 1
        if not 0 <= k < len(self.fds):
            raise self.changed()
        line = os.pread(self.fds[k], size, at - self.starts[k])
        if len(line) != size:
            raise self.changed()
        return line

    def changed(self) -> CommitforgeError:
        return CommitforgeError(f"{self.path} changed while the build stage read it; run again")

    def share(self, row: dict[str, Any], keys: tuple[str, ...] = _SHARED_FIELDS) -> None:
        """Replace the texts of ``row`` under ``keys`` by the one object kept for each."""
        one = self.one
        for key in keys:
            value = row.get(key)
            if type(value) is str and value:
                row[key] = one(value, value)

    def row(self, line: bytes) -> dict[str, Any]:
        row = read_line(line)
        self.share(row)
        one = self.one
        for item in row.get("context") or ():
            for key in ("path", "text"):
                value = item.get(key)
                if type(value) is str:
                    item[key] = one(value, value)
        return row

    def __del__(self) -> None:
        fds, self.fds = getattr(self, "fds", []), []
        for fd in fds:
            os.close(fd)


# a row of ``chunks/`` starts with the fields a split and the stats read; each key is written
# bare once (a quote inside a string is escaped), so what comes before this is a whole
# JSON object of the first fields once closed
_HEAD_END = b',"old_qualname":'


class Change(Mapping):
    """A read-only row of ``chunks/`` read in two steps: the fields before
    ``old_qualname`` (id, repo, commit, time, subject, message, path, change, kind,
    qualname, ...) when the file is read, the whole row when another field is first read.
    A build that copies most of its examples' lines (core.kept_lines) never reads their
    code and context. ``dict(change)`` is a plain dict of the whole row."""

    __slots__ = ("_at", "_file", "_head", "_row", "_size")

    def __init__(self, file: _ChangesFile, at: int, line: bytes):
        self._file, self._at, self._size = file, at, len(line)
        self._row: dict[str, Any] | None = None
        self._head: dict[str, Any] | None = None
        self._read_head(line)

    @classmethod
    def known(cls, file: _ChangesFile, at: int, size: int, head: dict[str, Any] | None) -> Change:
        """The row at ``at`` whose head an earlier read of the same bytes gave (see
        :class:`RowIndex`); a row read whole then (no head) is read whole now."""
        change = cls.__new__(cls)
        change._file, change._at, change._size = file, at, size
        change._row = None
        change._head = head
        if head is None:
            change._read_head(file.line(at, size))
        return change

    def _read_head(self, line: bytes) -> None:
        head = _fields_before(line, _HEAD_END)
        if head is not None:
            self._file.share(head, ("subject", "message"))
            self._head = head
        else:  # read whole with json
            self._row = self._file.row(line)

    def _whole(self) -> dict[str, Any]:
        row = self._row
        if row is None:
            row = self._row = self._file.row(self._file.line(self._at, self._size))
            self._head = None
        return row

    def __getitem__(self, key: str) -> Any:
        # the head is read once: another thread (the build stage's tokenizer, reading train
        # rows while deduplication reads them all) may read the row whole and drop it
        head = self._head
        if head is not None:
            try:
                return head[key]
            except KeyError:
                pass
        return self._whole()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._whole())

    def __len__(self) -> int:
        return len(self._whole())

    def whole(self) -> dict[str, Any]:
        """The whole row as a plain dict (read now if it was not): the object the rows read
        share, not a copy."""
        return self._whole()

    def release(self) -> None:
        """Drop the whole row read so far (it is read again from the file if asked for):
        the build stage releases each row once its example is made, so that a history's
        rows and its examples are not all in memory at once."""
        self._row = None

    def __repr__(self) -> str:
        return f"Change({self._whole()!r})"

    # a copy or a pickle is a plain dict of the whole row: it shares no open file
    def __copy__(self) -> dict[str, Any]:
        return dict(self._whole())

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(self._whole(), memo)

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (self._whole(),)


def line_of(change: Mapping[str, Any]) -> tuple[Path, str, int, int] | None:
    """Where the line of a :class:`Change` is: (its ``chunks/`` or file, their key as
    they were read (see ``_ChangesFile.key``), offset, size); None for any other row."""
    if type(change) is not Change:
        return None
    return change._file.path, change._file.key(), change._at, change._size


def lines_at(path: str | Path, key: str, spans: list[tuple[int, int]]) -> Iterator[bytes]:
    """The lines at ``spans`` ((offset, size), as :func:`line_of` gives them) of the
    ``chunks/`` (or file) at ``path``, in another process than the one that read its
    rows: it must still be the one whose key is ``key``."""
    file = _ChangesFile(Path(path))
    if file.key() != key:
        raise file.changed()
    for at, size in spans:
        yield file.line(at, size)


# the last field of a row of chunks/, most of its bytes; what comes before it is a whole
# JSON object of the other fields once closed (as with _HEAD_END)
_CONTEXT_START = b',"context":'


def without_context(line: bytes) -> dict[str, Any]:
    """A chunks/ line's row without its ``context``, read (what deduplication
    compares): a third of the time of reading it whole on rusty-kaspa's rows. A line with
    no such field, or that orjson refuses, is read whole."""
    row = _fields_before(line, _CONTEXT_START)
    return row if row is not None else read_line(line)


def _fields_before(line: bytes, key: bytes) -> dict[str, Any] | None:
    """The fields of a chunks/ line that come before ``key`` (``b',"name":'``),
    read with orjson; None when the line has no such field or orjson refuses it (lone
    surrogate escapes of non-UTF-8 paths)."""
    end = line.find(key)
    if end <= 0 or orjson is None:
        return None
    try:
        fields = orjson.loads(line[:end] + b"}")
    except ValueError:
        return None
    return fields if type(fields) is dict else None


def whole(change: Mapping[str, Any]) -> dict[str, Any]:
    """A unit change as a plain dict: the whole row of a :class:`Change`, any other as is."""
    return change.whole() if type(change) is Change else change  # type: ignore[return-value]


def release(change: Mapping[str, Any]) -> None:
    """Drop what a :class:`Change` read of its row (any other mapping: nothing)."""
    if type(change) is Change:
        change.release()


def forget_shared_texts(changes: list[Any]) -> None:
    """Stop sharing texts with rows read from now on: the texts of rows read so far stay
    alive only as long as those rows do (the build stage calls it once deduplication has
    dropped what it drops)."""
    files = {id(c._file): c._file for c in changes if type(c) is Change}
    for file in files.values():
        file.forget_shared()


def read_changes(path: Path, digests: list[bytes] | None = None,
                 known: list[tuple[RowIndex | None, int]] | None = None) -> list[Change]:
    """The rows of ``chunks/`` (or of one such file) (:class:`Change`, read whole when
    first needed), and into ``digests`` the sha1 of each line. A context item's text
    repeats in every unit that uses it, a commit's message in each of its units, a unit's
    new code as the next change's old code: each distinct text is kept once (the rows hold
    a fraction of the memory). Lines orjson refuses (lone surrogate escapes of non-UTF-8
    paths) are read by json.

    ``known``: for each shard (the file), ``(index, bytes)``: an index of a file whose
    first ``bytes`` bytes the shard starts with (linked or copied by the chunk stage; ``(None,
    0)``: none). Those rows are taken from it, and only the bytes after them are read."""
    file = _ChangesFile(path)
    if known is not None and len(known) != len(file.fds):
        raise file.changed()
    changes: list[Change] = []
    sha1 = hashlib.sha1
    for k, (index, known_bytes) in enumerate(known or [(None, 0)] * len(file.fds)):
        start = at = file.starts[k]
        if index is not None and (n := index.rows_in(known_bytes)):
            ends = index.ends
            for j in range(n):
                begin = ends[j - 1] if j else 0
                changes.append(Change.known(file, start + begin, ends[j] - begin, index.heads[j]))
            at = start + ends[n - 1]
            if digests is not None:
                digests.extend(index.digests[:n])
        for line in file.lines_of(k, at - start):  # the file the rows are read back from
            if digests is not None:
                digests.append(sha1(line).digest())
            changes.append(Change(file, at, line))
            at += len(line)
    return changes


ROW_INDEX_FORMAT = 1  # with _HEAD_END and what Change reads of a head


class RowIndex:
    """What :func:`read_changes` read of each row of a ``chunks/``: the sha1 of its
    line, where the line ends (from the first shard's start), and its head (None for a
    row it read whole). Kept by the build cache for the shards the stage cache keeps
    (core.build_memo.RowIndexes), so that the next build, whose ``chunks/`` starts with
    those shards' rows, does not read, hash and parse those rows again."""

    def __init__(self, digests: list[bytes], ends: list[int], heads: list[dict[str, Any] | None]):
        self.digests, self.ends, self.heads = digests, ends, heads

    @classmethod
    def of(cls, changes: list[Change], digests: list[bytes], start: int = 0) -> RowIndex | None:
        """The index of rows just read (before any was read whole), or None when
        ``changes`` are not one file's rows in order (from ``start``, a shard's, with
        offsets from there)."""
        if len(changes) != len(digests) or any(type(c) is not Change for c in changes):
            return None
        at, ends, heads = 0, [], []
        for c in changes:
            if c._at != at + start:
                return None
            at += c._size
            ends.append(at)
            heads.append(c._head)
        return cls(digests, ends, heads)

    def rows_in(self, size: int) -> int:
        """How many rows the first ``size`` bytes hold, when they end at a row's end (0
        otherwise: the index does not describe that prefix)."""
        k = bisect.bisect_left(self.ends, size)
        return k + 1 if k < len(self.ends) and self.ends[k] == size else 0

    def pack(self) -> bytes:
        # marshal writes a text the heads share (a commit's message) once
        return marshal.dumps((ROW_INDEX_FORMAT, b"".join(self.digests), self.ends, self.heads))

    @classmethod
    def unpack(cls, data: bytes) -> RowIndex | None:
        try:
            version, digests, ends, heads = marshal.loads(data)
        except (ValueError, EOFError, TypeError):
            return None
        if version != ROW_INDEX_FORMAT or type(digests) is not bytes or len(digests) != 20 * len(ends) \
                or len(heads) != len(ends):
            return None
        return cls([digests[k:k + 20] for k in range(0, len(digests), 20)], ends, heads)


