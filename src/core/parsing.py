"""Helpers tree-sitter based language plugins share: byte/str offsets and incremental edits."""

from __future__ import annotations

import bisect
import re
import time

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



def point(data: bytes, offset: int) -> tuple[int, int]:
    row = data.count(b"\n", 0, offset)
    return row, offset - (data.rfind(b"\n", 0, offset) + 1)


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


def edited(old: bytes, old_tree: tree_sitter.Tree, new: bytes) -> tuple[tree_sitter.Tree, tuple[int, int, int]]:
    """A copy of the old tree edited to the one changed span, and that span
    (start, old end, new end) in bytes."""
    start = common_prefix(old, new)
    limit = min(len(old), len(new)) - start
    suffix = min(common_prefix(old[::-1], new[::-1]), limit)
    old_end, new_end = len(old) - suffix, len(new) - suffix
    tree = old_tree.copy()
    tree.edit(start_byte=start, old_end_byte=old_end, new_end_byte=new_end, start_point=point(old, start),
              old_end_point=point(old, old_end), new_end_point=point(new, new_end))
    return tree, (start, old_end, new_end)


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
