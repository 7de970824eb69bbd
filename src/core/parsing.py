"""Helpers tree-sitter based language plugins share: byte/str offsets and incremental edits."""

from __future__ import annotations

import bisect
import re
import time

import numpy as np
import tree_sitter


class ByteOffsets:
    """Byte offset -> str offset for one blob (identity for ASCII)."""

    def __init__(self, data: bytes, text: str):
        self.ascii = len(data) == len(text)
        if not self.ascii:
            self.byte_pos: list[int] = []
            self.extra: list[int] = []
            extra = 0
            for m in re.finditer(r"[^\x00-\x7f]", text):
                extra += len(m.group().encode("utf-8")) - 1
                # the character starts at char offset m.start(), i.e. byte offset m.start()+extra_before
                self.byte_pos.append(m.start() + extra)  # byte offset just past the character
                self.extra.append(extra)

    def char(self, b: int) -> int:
        if self.ascii:
            return b
        i = bisect.bisect_right(self.byte_pos, b) - 1
        return b - (self.extra[i] if i >= 0 else 0)



def common_prefix(a: bytes, b: bytes) -> int:
    """Length of the common prefix, by binary search over slice comparisons (memcmp speed)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


Edit = tuple[int, int, int, int]  # byte spans: old start, old end, new start, new end


def hunk_edits(old: bytes, new: bytes, hunks: list[tuple[int, int, int, int]]) -> list[Edit] | None:
    """git's line hunks (old start, old count, new start, new count; ``-U0``) as byte
    spans, or None unless the bytes outside them are the same in both versions."""
    so, sn = _line_starts(old), _line_starts(new)
    edits: list[Edit] = []
    po = pn = 0
    try:
        for a, b, c, d in hunks:
            # a zero count names the line after which the change lies
            os_ = so[a - 1 if b else a]
            oe = so[a - 1 + b] if b else os_
            ns = sn[c - 1 if d else c]
            ne = sn[c - 1 + d] if d else ns
            if os_ < po or ns < pn or old[po:os_] != new[pn:ns]:
                return None
            edits.append((os_, oe, ns, ne))
            po, pn = oe, ne
    except IndexError:
        return None
    if old[po:] != new[pn:] or not edits:
        return None
    return edits


_RECENT_STARTS: list[tuple[bytes, _LineStarts]] = []  # the last two blobs' line starts


def _line_starts(data: bytes) -> _LineStarts:
    """``_LineStarts`` of a blob, kept for the last two: the versions of a file are
    reparsed in order, so a version's line starts serve again as the next one's old."""
    for seen, starts in _RECENT_STARTS:
        if seen is data:
            return starts
    starts = _LineStarts(data)
    _RECENT_STARTS.insert(0, (data, starts))
    del _RECENT_STARTS[2:]
    return starts


class _LineStarts:
    """Start of line k (0-based) of a blob, capped at its end; IndexError past the last."""

    def __init__(self, data: bytes):
        self.newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)  # C speed
        self.size = len(data)

    def __getitem__(self, k: int) -> int:
        n = len(self.newlines)
        if k < 0 or k > n + 1:
            raise IndexError(k)
        if k == 0:
            return 0
        return int(self.newlines[k - 1]) + 1 if k <= n else self.size


def single_edit(old: bytes, new: bytes) -> Edit:
    """The one span outside which two versions agree (common prefix and suffix)."""
    start = common_prefix(old, new)
    limit = min(len(old), len(new)) - start
    suffix = min(common_prefix(old[::-1], new[::-1]), limit)
    return start, len(old) - suffix, start, len(new) - suffix


def edited(old: bytes, old_tree: tree_sitter.Tree, new: bytes,
           edits: list[Edit] | None = None) -> tuple[tree_sitter.Tree, list[Edit]]:
    """A copy of the old tree edited to the new version, and the edits applied.

    ``edits`` (in order, not overlapping) are the spans outside which the versions agree,
    e.g. from ``hunk_edits``; by default the one span between their common prefix and
    suffix. Several small edits let tree-sitter reuse more of the old tree than the one
    span from the first change to the last."""
    if not edits:
        edits = [single_edit(old, new)]
    tree = old_tree.copy()
    # applied from the last: each edit's old coordinates are still those of the document
    row, at = 0, 0
    points = []
    for os_, oe, ns, ne in edits:
        row += old.count(b"\n", at, os_)
        start_row = row
        row += old.count(b"\n", os_, oe)
        at = oe
        points.append((start_row, row))
    for (os_, oe, ns, ne), (start_row, end_row) in zip(reversed(edits), reversed(points)):
        start_col = os_ - (old.rfind(b"\n", 0, os_) + 1)
        end_col = oe - (old.rfind(b"\n", 0, oe) + 1)
        inserted = new[ns:ne]
        lines = inserted.count(b"\n")
        new_col = len(inserted) - (inserted.rfind(b"\n") + 1) if lines else start_col + len(inserted)
        tree.edit(start_byte=os_, old_end_byte=oe, new_end_byte=os_ + len(inserted),
                  start_point=(start_row, start_col), old_end_point=(end_row, end_col),
                  new_end_point=(start_row + lines, new_col))
    return tree, edits


def node_text(node, source: bytes) -> str:
    """A node's source text ("" for None), sliced from the blob. ``node.text`` on a tree
    parsed through a read callback (as ``parse_with_deadline`` parses) reads the source
    again through the callback: about 60 us a call instead of a fraction of one."""
    return source[node.start_byte:node.end_byte].decode("utf-8", "replace") if node is not None else ""


class ParseTimeout(Exception):
    """Parsing one blob took longer than its language's limit."""


def parse_with_deadline(parser: tree_sitter.Parser, source: bytes, old_tree: tree_sitter.Tree | None,
                        seconds: float) -> tree_sitter.Tree:
    """Parse with a deadline: the parser reads the source through a callback that ends the
    input once ``seconds`` have passed, and ParseTimeout is raised (the chunk stage counts
    the blob as a ``parse_timeout`` skip)."""
    deadline = time.perf_counter() + seconds
    expired = False

    def read(offset: int, _point) -> bytes:
        nonlocal expired
        if time.perf_counter() > deadline:
            expired = True
            return b""
        return source[offset:offset + 65536]

    tree = parser.parse(read, old_tree) if old_tree is not None else parser.parse(read)
    if expired:
        raise ParseTimeout(f"parsing took more than {seconds} s")
    return tree
