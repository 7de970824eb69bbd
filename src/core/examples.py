"""From UnitChanges to tokenized training examples: segments, truncation, masks.

A format plugin lays a UnitChange out as segments (special tokens and content text);
this module encodes them with the run's tokenizer and assembles input ids, attention
mask and labels. Content is encoded with special-token matching off, so text from
source code can never become a special token; special segments map to one id each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

IGNORE_INDEX = -100


@dataclass(slots=True)
class Segment:
    name: str  # what the segment is: "path", "message", "old_code", "new_code", "context", a token's role…
    text: str  # content text, or the special token itself when special is True
    special: bool = False
    target: bool = False  # trained: its labels are kept
    drop_rank: int | None = None  # context items: dropped whole when over budget, highest rank first
    cuttable: bool = False  # may be cut (from its end) when over budget after all drops


class Format(Protocol):
    special_tokens: list[str]

    def segments(self, change: dict[str, Any]) -> list[Segment]:
        """The segment layout of one UnitChange (a chunks.jsonl row)."""


class Tokenizer(Protocol):
    identity: dict[str, Any]
    added_tokens: list[str]
    eos_token: str | None

    def prepare(self, special_tokens: list[str], training_texts, cache_dir) -> None: ...
    def encode(self, texts: list[str]) -> list[list[int]]: ...
    def token_id(self, token: str) -> int: ...


@dataclass(slots=True)
class Built:
    example: dict[str, Any] | None
    skip: str | None = None
    truncated: bool = False


def assemble(change: dict[str, Any], segments: list[Segment], encoded: list[list[int]], tokenizer: Tokenizer,
             max_tokens: int, split: str) -> Built:
    """Fit segments into ``max_tokens``: drop context items (lowest-ranked first), then cut
    cuttable segments from their end; the target is never cut. ``encoded`` holds the
    token ids of every non-special segment, in order."""
    ids_per: list[list[int]] = []
    it = iter(encoded)
    for seg in segments:
        ids_per.append([tokenizer.token_id(seg.text)] if seg.special else next(it))
    total = sum(map(len, ids_per))
    target_len = sum(len(ids) for seg, ids in zip(segments, ids_per) if seg.target)
    fixed = sum(len(ids) for seg, ids in zip(segments, ids_per) if seg.drop_rank is None and not seg.cuttable)
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
            total -= len(ids_per[i])
            ids_per[i] = []
        for i, seg in enumerate(segments):
            if total <= max_tokens:
                break
            if seg.cuttable and ids_per[i]:
                cut = min(len(ids_per[i]), total - max_tokens)
                ids_per[i] = ids_per[i][: len(ids_per[i]) - cut]
                total -= cut
    input_ids: list[int] = []
    labels: list[int] = []
    spans: list[list[Any]] = []
    for seg, ids in zip(segments, ids_per):
        if not ids and not seg.special:
            continue
        spans.append([seg.name, len(input_ids), len(input_ids) + len(ids)])
        input_ids.extend(ids)
        labels.extend(ids if seg.target else [IGNORE_INDEX] * len(ids))
    n_target = sum(1 for x in labels if x != IGNORE_INDEX)
    example = {
        "id": change["id"],
        "split": split,
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": labels,
        "segments": spans,
        "n_tokens": len(input_ids),
        "n_target_tokens": n_target,
        "repo": change["repo"],
        "commit": change["commit"],
        "time": change["time"],
        "path": change["path"],
        "qualname": change["qualname"],
        "change": change["change"],
        "kind": change["kind"],
    }
    return Built(example, None, truncated)


def encode_all(tokenizer: Tokenizer, layouts: list[list[Segment]], batch_chars: int = 4_000_000) -> Iterable[list[list[int]]]:
    """Token ids of every non-special segment, one list per layout, encoded in large batches."""
    pending: list[list[Segment]] = []
    size = 0

    def flush() -> Iterable[list[list[int]]]:
        texts = [_tokenizable(s.text) for layout in pending for s in layout if not s.special]
        ids = tokenizer.encode(texts)
        pos = 0
        for layout in pending:
            n = sum(1 for s in layout if not s.special)
            yield ids[pos:pos + n]
            pos += n

    for layout in layouts:
        pending.append(layout)
        size += sum(len(s.text) for s in layout if not s.special)
        if size >= batch_chars:
            yield from flush()
            pending, size = [], 0
    if pending:
        yield from flush()


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
