"""From UnitChanges to tokenized training examples: segments, truncation, masks.

A format plugin lays a UnitChange out as segments (special tokens and content text);
this module encodes them with the run's tokenizer and assembles input ids, attention
mask and labels. Content is encoded with special-token matching off, so text from
source code can never become a special token; special segments map to one id each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from core.files import fast_json_line
from core.kept_lines import KeptExample, ends_shard, line_mark

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; json serves without it
    orjson = None

IGNORE_INDEX = -100


@dataclass(slots=True)
class Segment:
    name: str  # what the segment is: "path", "message", "old_code", "new_code", "context", a token's role…
    text: str  # content text, or the special token itself when special is True
    special: bool = False
    target: bool = False  # trained: its labels are kept
    drop_rank: int | None = None  # context items: dropped whole when over budget, highest rank first
    cuttable: bool = False  # may be cut (from its end) when over budget after all drops
    bracket: bool = False  # opens or closes the droppable items (context start/end): gone when they all are


class Format(Protocol):
    special_tokens: list[str]

    def segments(self, change: dict[str, Any]) -> list[Segment]:
        """The segment layout of one UnitChange (a row of chunks/)."""


class Tokenizer(Protocol):
    identity: dict[str, Any]
    added_tokens: list[str]
    eos_token: str | None

    def prepare(self, special_tokens: list[str], training_texts, cache_dir) -> None: ...
    def encode(self, texts: list[str]) -> list[list[int]]: ...
    # optional: def encode_arrays(self, texts) -> list[np.ndarray], the same ids as int32 arrays
    def token_id(self, token: str) -> int: ...


@dataclass(slots=True)
class Built:
    example: dict[str, Any] | None
    skip: str | None = None
    truncated: bool = False


def assemble(change: dict[str, Any], segments: list[Segment], encoded: list[Sequence[int]], tokenizer: Tokenizer,
             max_tokens: int, split: str, *, packed: bool = False) -> Built:
    """Fit segments into ``max_tokens``: drop context items (lowest-ranked first; their
    brackets too once none is left), then cut cuttable segments from their end; the
    target is never cut. Segments without tokens get no span. ``encoded`` holds the
    token ids of every non-special segment, in order (lists of ints or int arrays).

    The example's ``input_ids``, ``attention_mask`` and ``labels`` are lists of ints, or
    with ``packed=True`` a fraction of the memory: the ids as an int32 array, the trained
    ranges instead of the labels and no mask; :func:`materialize` makes the arrays,
    :func:`unpack` lists."""
    ids_per: list[Any] = []  # a special segment's token id (int), or a content segment's ids
    lengths: list[int] = []
    it = iter(encoded)
    for seg in segments:
        if seg.special:
            ids_per.append(tokenizer.token_id(seg.text))
            lengths.append(1)
        else:
            ids = next(it)
            ids_per.append(ids)
            lengths.append(len(ids))
    total = sum(lengths)
    target_len = sum(n for seg, n in zip(segments, lengths) if seg.target)
    fixed = sum(n for seg, n in zip(segments, lengths) if seg.drop_rank is None and not seg.cuttable)
    if target_len > max_tokens:
        return Built(None, "target_too_long")
    if fixed > max_tokens:
        return Built(None, "fixed_segments_too_long")
    truncated = False
    if total > max_tokens:
        truncated = True
        for i in sorted((i for i, s in enumerate(segments) if s.drop_rank is not None),
                        key=lambda i: -segments[i].drop_rank):  # type: ignore[operator]
            if total <= max_tokens:
                break
            total -= lengths[i]
            lengths[i] = 0
        if all(not lengths[i] for i, s in enumerate(segments) if s.drop_rank is not None):
            for i, seg in enumerate(segments):  # nothing left between the brackets
                if seg.bracket:
                    total -= lengths[i]
                    lengths[i] = 0
        for i, seg in enumerate(segments):
            if total <= max_tokens:
                break
            if seg.cuttable and lengths[i]:
                cut = min(lengths[i], total - max_tokens)
                lengths[i] -= cut
                total -= cut
    parts: list[Any] = []  # the kept ids of each segment, in order
    runs: list[list[int]] = []  # the trained token ranges, adjacent target segments merged
    spans: list[list[Any]] = []
    pos = n_target = 0
    for seg, ids, n in zip(segments, ids_per, lengths):
        if not n:
            continue  # dropped, or empty text: no span
        spans.append([seg.name, pos, pos + n])
        parts.append(_one_id(ids) if seg.special else ids[:n] if n < len(ids) else ids)
        if seg.target:
            n_target += n
            if runs and runs[-1][1] == pos:
                runs[-1][1] = pos + n
            else:
                runs.append([pos, pos + n])
        pos += n
    input_ids = np.concatenate(parts).astype(np.int32, copy=False) if parts else np.empty(0, dtype=np.int32)
    example = packed_example(change, split, input_ids, TrainedRuns(tuple((a, b) for a, b in runs)), spans, total,
                             n_target)
    return Built(example if packed else unpack(example), None, truncated)


def packed_example(change: dict[str, Any], split: str, input_ids: np.ndarray, runs: TrainedRuns,
                   spans: list[list[Any]], n_tokens: int, n_target: int) -> dict[str, Any]:
    """A packed example (see :func:`assemble`) of ``change``: its tokens and where it comes from."""
    return {
        "id": change["id"],
        "split": split,
        "input_ids": input_ids,
        # made when the example is read (``materialize``): a packed example keeps its token ids only
        "attention_mask": None,
        "labels": runs,
        "segments": spans,
        "n_tokens": n_tokens,
        "n_target_tokens": n_target,
        "repo": change["repo"],
        "commit": change["commit"],
        "time": change["time"],
        "path": change["path"],
        "qualname": change["qualname"],
        "change": change["change"],
        "kind": change["kind"],
    }


class TrainedRuns(tuple):
    """The token ranges of a packed example whose labels are its ids (-100 elsewhere)."""

    __slots__ = ()

    def labels(self, input_ids: np.ndarray) -> np.ndarray:
        if len(self) == 1 and self[0] == (0, len(input_ids)):
            return input_ids.copy()
        labels = np.full(len(input_ids), IGNORE_INDEX, dtype=np.int32)
        for a, b in self:
            labels[a:b] = input_ids[a:b]
        return labels


def materialize(example: dict[str, Any]) -> dict[str, Any]:
    """A packed example (see :func:`assemble`) with its ``attention_mask`` and ``labels``
    arrays made (a copy; the stored example keeps its token ids only); any other as is."""
    if type(example) is KeptExample:  # an earlier build's line, read back (lists, not arrays)
        return example.load()
    runs = example.get("labels")
    if not isinstance(runs, TrainedRuns):
        return example
    out = dict(example)
    ids = np.asarray(out["input_ids"])
    out["attention_mask"] = np.ones(len(ids), dtype=np.int8)
    out["labels"] = runs.labels(ids)
    return out


_SEQUENCES = ["input_ids", "attention_mask", "labels"]
_INT32 = np.dtype(np.int32)


def packed_json_line(example: dict[str, Any]) -> bytes:
    """``fast_json_line(materialize(example))`` of a packed example, byte for byte, in two
    thirds of the time: the mask and labels arrays are not made. The ids are written once; the
    mask's JSON is ``1`` repeated, and the labels' JSON is ``-100`` for the untrained
    tokens and the JSON of the trained ranges of the ids. An example of another kind or
    shape (no packed labels, sequence fields in another order, a float field, what orjson
    refuses) takes the plain way."""
    line = _packed_line(example)
    return line if line is not None else fast_json_line(materialize(example))


def _packed_line(example: dict[str, Any]) -> bytes | None:
    """:func:`packed_json_line`'s own way, or None for an example it does not take."""
    runs = example.get("labels")
    ids = example.get("input_ids")
    if (orjson is None or not isinstance(runs, TrainedRuns) or type(ids) is not np.ndarray
            or ids.dtype != _INT32 or float in map(type, example.values())):
        return None
    keys = list(example)
    at = keys.index("input_ids")
    if keys[at:at + 3] != _SEQUENCES:
        return None
    n = len(ids)
    ranges = [(a, b) for a, b in runs if a < b]
    if len(ranges) == 1 and 0 <= ranges[0][0] and ranges[0][1] <= n:
        pass  # the usual: one trained range (the new code and the end)
    elif any(not pos <= a <= b <= n for pos, (a, b) in zip((0, *(b for _, b in ranges)), ranges)):
        return None  # ranges out of order
    try:
        head = orjson.dumps({k: example[k] for k in keys[:at]})
        tail = orjson.dumps({k: example[k] for k in keys[at + 3:]}, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # orjson.JSONEncodeError: lone surrogates of a non-UTF-8 path
        return None
    # the ids cut where the trained ranges start and end: each piece's JSON goes into the
    # ids, and into the labels too when trained (the others are -100 there)
    ids_parts, label_parts, pos = [], [], 0
    for a, b in [*ranges, (n, n)]:
        if a > pos:
            ids_parts.append(orjson.dumps(ids[pos:a], option=orjson.OPT_SERIALIZE_NUMPY)[1:-1])
            label_parts.append(b"-100," * (a - pos - 1) + b"-100")
        if b > a:
            ids_parts.append(orjson.dumps(ids[a:b], option=orjson.OPT_SERIALIZE_NUMPY)[1:-1])
            label_parts.append(ids_parts[-1])
        pos = b
    ids_json = b"[" + b",".join(ids_parts) + b"]"
    labels = b"[" + b",".join(label_parts) + b"]"
    mask = b"[" + b"1," * (n - 1) + b"1]" if n else b"[]"
    return b"".join((head[:-1], b"," if at else b"", b'"input_ids":', ids_json, b',"attention_mask":', mask,
                     b',"labels":', labels, b"," if len(tail) > 3 else b"", tail[1:]))


_ONE_ID: dict[int, np.ndarray] = {}


def _one_id(token_id: int) -> np.ndarray:
    """A special token's id as a one-element int32 array (shared, read-only)."""
    arr = _ONE_ID.get(token_id)
    if arr is None:
        arr = _ONE_ID[token_id] = np.array([token_id], dtype=np.int32)
        arr.flags.writeable = False
    return arr


SEQUENCE_FIELDS = ("input_ids", "attention_mask", "labels")


def unpack(example: dict[str, Any]) -> dict[str, Any]:
    """An example whose token sequences are lists of ints (what writers receive): a packed
    one (numpy arrays, see :func:`assemble`) is copied with lists, a kept one (see
    core.kept_lines) read back, any other returned as is."""
    if type(example) is KeptExample:
        return example.load()
    if isinstance(example.get("labels"), TrainedRuns):
        example = materialize(example)
    elif not any(isinstance(example.get(f), np.ndarray) for f in SEQUENCE_FIELDS):
        return example
    out = dict(example)
    for f in SEQUENCE_FIELDS:
        value = out.get(f)
        if isinstance(value, np.ndarray):
            out[f] = value.tolist()
    return out


class WrittenShard(NamedTuple):
    """One file of a split's line shards (see core.kept_lines): its path in the run
    directory, its number, the examples it holds (``lo:hi``), and where their lines end,
    or, for a shard linked from kept file ``linked``, None."""

    rel: str
    shard: int
    lo: int
    hi: int
    ends: list[int] | None
    linked: int | None


class ExampleRows(Sequence):
    """A split's examples as writers read them, built on access: a read-only sequence
    (``len``, iteration, indexing, slicing) of example dicts whose token sequences are
    lists of ints, over examples kept packed (see :func:`assemble`). A writer that goes
    through the rows one at a time never holds more than one example as Python ints."""

    def __init__(self, rows: list[dict[str, Any]]):
        self._rows = rows
        self.shards: list[WrittenShard] | None = None  # set by a writer of line shards

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [unpack(r) for r in self._rows[index]]
        return unpack(self._rows[index])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for r in self._rows:
            yield unpack(r)

    def packed(self) -> Iterator[dict[str, Any]]:
        """The examples with their token sequences as numpy arrays (the ids not copied;
        mask and labels made per row, see :func:`materialize`): for a writer that
        serialises arrays itself. The ids are shared: do not modify them."""
        return map(materialize, self._rows)

    def kept_lines(self) -> tuple[Any, list[tuple[int, int, int] | None]]:
        """The :class:`core.kept_lines.KeptLines` the kept examples come from (None: there
        are none) and, per example, where its kept line is (None: built, not kept)."""
        keeper = next((r.keeper for r in self._rows if type(r) is KeptExample), None)
        return keeper, [r.line if type(r) is KeptExample and r.keeper is keeper else None for r in self._rows]

    def write_lines(self, out: Any, line: Callable[[dict[str, Any]], bytes],
                    packed_line: Callable[[dict[str, Any]], bytes] | None = None,
                    start: int = 0, shard_bytes: int | None = None) -> list[int]:
        """Write the examples from ``start`` to ``out``, each as one line, ``line(example)``
        of the packed example (see :meth:`packed`), or the same line ``packed_line``
        makes of the stored example itself (see :func:`packed_json_line`), except that the
        line an earlier build wrote of a kept example (:class:`core.kept_lines.KeptExample`)
        is copied; with ``shard_bytes``, up to the line that ends a shard of about that
        size (:func:`core.kept_lines.ends_shard`). Returns where each line written ends in
        ``out``."""
        half = shard_bytes // 2 if shard_bytes is not None else None
        ends: list[int] = []
        pos = 0
        runs: list[tuple[int, int, int]] = []  # kept lines to copy, contiguous ones merged
        keeper = None
        for r in self._rows[start:] if start else self._rows:
            if type(r) is KeptExample:
                f, begin, end = r.line
                if runs and r.keeper is keeper and runs[-1][0] == f and runs[-1][2] == begin:
                    runs[-1] = (f, runs[-1][1], end)  # the next line of the same file
                else:
                    if runs and r.keeper is not keeper:
                        keeper.copy(runs, out)  # type: ignore[union-attr]
                        runs = []
                    runs.append((f, begin, end))
                    keeper = r.keeper
                size = end - begin
            else:
                if runs:
                    keeper.copy(runs, out)  # type: ignore[union-attr]
                    runs = []
                data = line(materialize(r)) if packed_line is None else packed_line(r)
                out.write(data)
                size = len(data)
            pos += size
            ends.append(pos)
            if half is not None and pos >= half and ends_shard(pos, size, line_mark(r["id"]), shard_bytes):
                break
        if runs:
            keeper.copy(runs, out)  # type: ignore[union-attr]
        return ends

    def __repr__(self) -> str:
        return f"ExampleRows({len(self._rows)} examples)"


def packed_rows(rows: Sequence[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """A split's examples in order, as stored when ``rows`` is an :class:`ExampleRows`
    (numpy arrays), as given otherwise; for writers that serialise arrays as lists."""
    return rows.packed() if isinstance(rows, ExampleRows) else rows


def encode_all(tokenizer: Tokenizer, layouts: Iterable[list[Segment]],
               batch_chars: int = 4_000_000) -> Iterator[list[Sequence[int]]]:
    """Token ids of every non-special segment, one list per layout, encoded in large batches."""
    for _, encoded in encode_layouts(tokenizer, layouts, batch_chars):
        yield encoded


def encode_layouts(tokenizer: Tokenizer, layouts: Iterable[list[Segment]], batch_chars: int = 4_000_000,
                   memo: dict[str, np.ndarray] | None = None) -> Iterator[tuple[list[Segment], list[np.ndarray]]]:
    """Each layout (consumed lazily) with the token ids of its non-special segments, in order,
    as read-only int32 arrays.

    Content is encoded with special-token matching off, so a text's ids do not depend on
    what surrounds it: each distinct text is encoded once (``memo``, text -> ids, shared by
    every layout; context items and old code repeat across thousands of unit changes), in
    batches of about ``batch_chars`` characters of text not seen before. A thread encodes
    the next batch (the tokenizer's own code, which releases the GIL) while the caller
    goes through the layouts of the one before and the next layouts are made."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    memo = {} if memo is None else memo
    encode = getattr(tokenizer, "encode_arrays", None) or (
        lambda texts: [np.array(ids, dtype=np.int32) for ids in tokenizer.encode(texts)])
    # a tokenizer that encodes texts by pieces has them cut here, where the thread that
    # makes the layouts has time to spare while the encoding thread waits for its turn
    cut = getattr(tokenizer, "cut", None) if hasattr(tokenizer, "encode_arrays") else None

    def submit(texts: list[str]) -> Future:
        ready = [_tokenizable(t) for t in texts]
        pieces = cut(ready) if cut is not None else None
        return pool.submit(encode, ready, pieces) if pieces is not None else pool.submit(encode, ready)

    # batches submitted, oldest first: (their layouts, their new texts, the encoding of those)
    batches: deque[tuple[list[list[Segment]], list[str], Future | None]] = deque()
    submitted: set[str] = set()  # texts of batches not settled yet

    def settle() -> Iterator[tuple[list[Segment], list[np.ndarray]]]:
        pending, texts, done = batches.popleft()
        if done is not None:
            for text, arr in zip(texts, done.result()):
                arr.flags.writeable = False  # shared by every layout with this text
                memo[text] = arr
            submitted.difference_update(texts)
        for layout in pending:
            yield layout, [memo[s.text] for s in layout if not s.special]

    pool = ThreadPoolExecutor(1, thread_name_prefix="commitforge-encode")
    try:
        pending: list[list[Segment]] = []
        new: dict[str, None] = {}  # texts of the pending layouts not in the memo, in order
        size = 0
        for layout in layouts:
            pending.append(layout)
            for s in layout:
                if not s.special and s.text not in memo and s.text not in submitted and s.text not in new:
                    new[s.text] = None
                    size += len(s.text)
            if size >= batch_chars:
                texts = list(new)
                submitted.update(texts)
                batches.append((pending, texts, submit(texts)))
                pending, new, size = [], {}, 0
                while len(batches) > 1:  # the newest batch encodes while the one before is read
                    yield from settle()
        if pending:
            texts = list(new)
            submitted.update(texts)
            batches.append((pending, texts, submit(texts) if texts else None))
        while batches:
            yield from settle()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        clear = getattr(tokenizer, "clear_cache", None)
        if clear is not None:  # what the tokenizer kept to encode these layouts
            clear()


def _tokenizable(text: str) -> str:
    """Text a tokenizer accepts: the bytes of a non-UTF-8 path (kept as lone surrogates in
    the records) become U+FFFD here; the example's provenance keeps the exact path."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def stable_bucket(key: str, seed: int) -> float:
    """A number in [0, 1) from a string, the same in every process and Python version."""
    digest = hashlib.blake2b(f"{seed}\0{key}".encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
