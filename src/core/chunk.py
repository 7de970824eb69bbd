"""Chunks: what a chunker makes of one parsed file, and how oversize units are cut."""

from __future__ import annotations

import bisect
import struct
import zlib
from array import array
from itertools import chain
from dataclasses import dataclass
from typing import Protocol

from core.language import Language

from core.records import ParsedBlob


# Languages record cut points for units longer than CUT_UNIT (so chunkers refuse smaller
# limits), between the children of syntax nodes longer than CUT_MIN: enough to cut any
# such unit into pieces that hold at least max_chars // 2 after their repeated header.
CUT_UNIT = 1000
CUT_MIN = CUT_UNIT // 2
# Added to the depth of a cut that does not start a line: such a cut is taken only where a
# segment has no line-start cut at any depth (a piece then never begins mid-statement
# while a line break would do).
CUT_MID_LINE = 1 << 16


@dataclass(slots=True)
class Chunk:
    key: str  # pairing key inside one file (local qualname, or window index)
    kind: str
    name: str
    local_qualname: str
    qualname: str
    header: str | None
    signature: str | None
    text: str
    compare: str  # the text whose change makes the chunk "changed" (a container's skeleton)
    lines: tuple[int, int]
    has_error: bool
    members: bool = False  # a container whose member units are chunks of their own
    body_open: int | None = None
    max_chars: int | None = None  # None: the chunk is never cut
    cuts: bytes = b""  # packed cut points (see pack_cuts)
    member_spans: tuple[tuple[int, int], ...] = ()  # a container's member units, as spans of text
    indent: str = ""  # the whitespace before the unit on its first line: every piece starts with it
    _pieces: list[str] | None = None
    _spans: list[tuple[int, int]] | None = None  # each piece's span in text (its opening aside)
    _opening: str = ""  # what pieces after the first start with

    @property
    def pieces(self) -> list[str]:
        """The text cut to ``max_chars`` (usually one piece); computed only for chunks that
        changed, since pairing never asks for the pieces of an unchanged one."""
        if self._pieces is None:
            if self.max_chars is None or len(self.text) <= self.max_chars:
                self._pieces = [self.indent + self.text]  # one piece: what joined(0, 0) gives
            else:
                self._pieces = [self.joined(k, k) for k in range(len(self._cut()))]
        return self._pieces

    def joined(self, first: int, last: int) -> str:
        """Pieces ``first`` to ``last`` (0-based, inclusive) as one text: the unit's text
        they cover, with the opening of a later piece once, after the unit's indentation
        (a method's code is whole lines, as its later lines are)."""
        spans = self._cut()
        text = self.text[spans[first][0]:spans[last][1]]
        return self.indent + text if first == 0 else self._opening + text

    def repeated_opening(self) -> str:
        """What a piece after the first starts with, also for a chunk short enough to be one
        piece (its old version, say, when the new one is cut)."""
        spans = self._cut()
        if len(spans) > 1 or self.max_chars is None:
            return self._opening
        return self._indented(opening(self.text, self.body_open, self.max_chars, self.signature))

    def _indented(self, head: str) -> str:
        """``head`` after the unit's indentation when it starts at the unit's first line (the
        one line of the text without its indentation)."""
        if self.indent and head and self.text.startswith(head.split("\n", 1)[0]):
            return self.indent + head
        return head

    def own_pieces(self) -> list[str]:
        """Each piece's own text: without the member units it holds (chunks of their own)
        and without whitespace, as a container's ``compare`` is. Equal for two versions of
        a piece that differ only in their members."""
        out = []
        for a, b in self._cut():
            kept, pos = [], a
            for s, e in self.member_spans:
                if e <= pos or s >= b:
                    continue
                kept.append(self.text[pos:max(pos, s)])
                pos = max(pos, e)
            kept.append(self.text[pos:b] if pos < b else "")
            out.append("".join("".join(kept).split()))
        return out

    def _cut(self) -> list[tuple[int, int]]:
        if self._spans is None:
            if self.max_chars is None or len(self.text) <= self.max_chars:
                self._spans, self._opening = [(0, len(self.text))], ""
            else:
                self._spans, opening_ = piece_spans(self.text, self.cuts, self.max_chars,
                                                    self.body_open, self.signature)
                self._opening = self._indented(opening_)
        return self._spans


class Chunker(Protocol):
    #: whether unmatched chunks may be paired by signature similarity (renamed units)
    pairs_renames: bool

    def chunk(self, parsed: ParsedBlob, language: Language, path: str, module: str | None = None) -> list[Chunk]:
        """The chunks of one file at ``path``, parsed by ``language``. ``module`` is the
        file's module path in its tree (``Language.module_paths``; optional: core passes it
        only to a ``chunk`` that declares it), None when the language names modules from
        paths alone (``language.module_path(path)``)."""


def cut_before(source: bytes, prev_end: int, start: int, base: int, depth: int) -> tuple[int, int]:
    """The (offset - base, depth) cut before a syntax node that starts at byte ``start``,
    its previous sibling ending at ``prev_end``: at the start of the node's line when it
    starts one (a newline lies between the two), else at the node, ranked
    ``CUT_MID_LINE`` deeper. Byte offsets only: a node's points are objects made anew on
    every access, and cut points are collected for every child of every large node."""
    newline = source.rfind(b"\n", prev_end, start)
    return (newline + 1 - base, depth) if newline >= 0 else (start - base, depth + CUT_MID_LINE)


def pack_cuts(cuts: list[tuple[int, int]]) -> bytes:
    """(offset, depth) pairs as int32 bytes: one object per unit in the cache, not one per cut."""
    return array("i", chain.from_iterable(cuts)).tobytes()


def pack_flat_cuts(flat: list[int]) -> bytes:
    """``pack_cuts`` of pairs given flat (offset, depth, offset, depth, ...), as a collector
    that appends to one list makes them: the same bytes, a fifth of the time."""
    return struct.pack(f"{len(flat)}i", *flat)


def unpack_cuts(packed: bytes) -> list[tuple[int, int]]:
    flat = _unpack_flat(packed)
    return list(zip(flat[::2], flat[1::2]))


def _unpack_flat(packed: bytes) -> list[int]:
    flat = array("i")
    flat.frombytes(packed)
    return flat.tolist()


def opening(text: str, body_open: int | None, max_chars: int | None = None, signature: str | None = None) -> str:
    """What pieces after the first repeat: the unit's text up to its body's ``{``, without
    the comment lines it starts with (a long doc comment is not repeated in every piece).
    Over ``max_chars // 2`` (a long decorator, say), it starts at the line that holds the
    start of ``signature``; still over, there is none."""
    if not body_open:
        return ""
    head = text[:body_open].rstrip()
    lines = head.split("\n")
    k = 0
    while k < len(lines) - 1 and lines[k].lstrip().startswith(("//", "/*", "*")):
        k += 1
    out = "\n".join(lines[k:]) + "\n"
    if max_chars is None or len(out) <= max_chars // 2:
        return out
    key = signature.split("(", 1)[0].split("<", 1)[0][:40].rstrip() if signature else ""  # `def name`, `pub fn name`
    at = head.rfind(key) if key else -1
    if at >= 0:
        out = head[head.rfind("\n", 0, at) + 1:] + "\n"
    return out if len(out) <= max_chars // 2 else ""


def piece_spans(text: str, cuts: bytes, max_chars: int, body_open: int | None,
                signature: str | None = None) -> tuple[list[tuple[int, int]], str]:
    """Cut ``text`` into pieces of at most ``max_chars`` at syntax-tree boundaries: the
    pieces' spans in ``text`` (consecutive, covering it) and the opening that pieces after
    the first start with.

    ``cuts`` are (offset, depth) pairs between sibling nodes in increasing offset order,
    packed (``pack_cuts``); shallower cuts are tried first and a segment still too long
    is cut at the next depth. Pieces after the first repeat the unit's opening (:func:`opening`)
    so each piece keeps its header. A segment with no cut inside (one huge token
    or leaf) stays whole, over the limit, rather than being cut mid-token (the chunk
    stage counts such parts as oversize).

    Segments are packed into pieces greedily, but a piece also ends before a segment
    whose content hash marks it as an anchor once the piece is half full (content-
    defined chunking): an edit then moves piece boundaries only up to the next anchor,
    so the same unit before and after a small edit shares most of its pieces.
    """
    n = len(text)
    if n <= max_chars:
        return [(0, n)], ""
    prefix = opening(text, body_open, max_chars, signature)
    budget = max_chars - len(prefix)
    flat = _unpack_flat(cuts)
    offsets, depths = flat[::2], flat[1::2]

    def segments(a: int, b: int) -> list[tuple[int, int]]:
        lo, hi = bisect.bisect_right(offsets, a), bisect.bisect_left(offsets, b)
        if lo >= hi:
            return [(a, b)]
        depth = min(depths[lo:hi])
        bounds = [a, *(offsets[k] for k in range(lo, hi) if depths[k] == depth), b]
        out: list[tuple[int, int]] = []
        for x, y in zip(bounds, bounds[1:]):
            if x == y:
                continue
            out.extend(segments(x, y) if y - x > budget else [(x, y)])
        return out

    spans: list[tuple[int, int]] = []
    start = end = 0
    for a, b in segments(0, n):
        limit = max_chars if not spans else budget
        # a short tail (a closing brace, a `;`) is no anchor, and joins a piece already over
        # the limit (one huge segment) rather than make a piece of its own
        tail = n - a < limit // 8
        anchor = (end - start >= limit // 2 and not tail
                  and zlib.crc32(text[a:b].encode("utf-8", "surrogatepass")) % 4 == 0)
        if end > start and ((b - start > limit and not (tail and end - start > limit)) or anchor):
            spans.append((start, end))
            start = a
        end = b
    spans.append((start, n))
    return spans, prefix
