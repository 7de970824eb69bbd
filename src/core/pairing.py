"""Before/after pairing of one file's chunks across a commit.

Chunks whose text is unchanged are matched first, by key (the local qualified name, so
units of a renamed file still pair) or by identical text under another key (a unit moved
or renumbered); then chunks by key (modified); then unmatched chunks of the same kind
by the similarity of their lines with the unit's own name masked (renamed units). Pairs whose compared text is equal are
unchanged and produce nothing. Across the files of a commit, a unit deleted from one
file and added to another under the same name is a move (``pair_moves``). An oversize
unit's parts are aligned with a sequence match so that only parts that changed are
emitted.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from core.chunk import Chunk, pack_cuts

try:  # difflib's algorithms compiled: the same matches and ratios, ten times faster on unit texts
    from cydifflib import SequenceMatcher
except ImportError:  # pragma: no cover - a platform without its wheel
    from difflib import SequenceMatcher


@dataclass(slots=True)
class PartChange:
    change: str  # added, modified, deleted, renamed
    old: Chunk | None
    new: Chunk | None
    old_code: str
    new_code: str
    part: int
    parts: int


@functools.lru_cache(maxsize=8192)
def _name_pattern(name: str) -> re.Pattern[str]:
    """A unit's name as a whole word (compiled once: a history names more units than re's
    own cache of 512 patterns holds)."""
    return re.compile(rf"\b{re.escape(name)}\b")


def _line_bag(chunk: Chunk) -> collections.Counter[str]:
    """The chunk's non-blank lines, stripped, with the unit's own name masked."""
    text = chunk.text
    if chunk.name:
        text = _name_pattern(chunk.name).sub("\0", text)
    return collections.Counter(line.strip() for line in text.splitlines() if line.strip())


def _similarity(a: collections.Counter[str], b: collections.Counter[str]) -> float:
    """Dice coefficient of two line multisets: linear time, unlike a character diff."""
    total = sum(a.values()) + sum(b.values())
    return 2 * sum((a & b).values()) / total if total else 1.0


def pair_chunks(old: list[Chunk], new: list[Chunk], *, renames: bool, rename_similarity: float,
                max_rename_candidates: int = 64) -> Iterator[tuple[str, Chunk | None, Chunk | None]]:
    """Yield (change, old, new) for every chunk that differs between the two versions, in new-file order."""
    old_by_key = {c.key: c for c in old}
    matched_old: set[str] = set()
    result: list[tuple[int, str, Chunk | None, Chunk | None]] = []
    # 1. unchanged: same key and text, or the same text under another key (a unit moved
    # within the file, or renumbered because an earlier namesake such as a #[cfg] variant
    # went away)
    by_compare: dict[tuple[str, str], list[Chunk]] = {}
    for o in old:
        by_compare.setdefault((o.kind, o.compare), []).append(o)
    new_keys = {(n.key, n.kind) for n in new}
    pending: list[tuple[int, Chunk]] = []
    for i, n in enumerate(new):
        o = old_by_key.get(n.key)
        if o is not None and o.compare == n.compare and o.kind == n.kind:
            matched_old.add(o.key)
        else:
            pending.append((i, n))
    unmatched_new: list[tuple[int, Chunk]] = []
    for i, n in pending:
        # a twin must be free: not matched yet, and not still present under its own key
        twin = next((o for o in by_compare.get((n.kind, n.compare), ())
                     if o.key not in matched_old and (o.key == n.key or (o.key, o.kind) not in new_keys)), None)
        if twin is not None:
            matched_old.add(twin.key)
        else:
            unmatched_new.append((i, n))
    # 2. modified: same key and kind, other text (an inherent impl shares its type's name:
    # when a namesake comes or goes, `Inner#2` may be the struct in one version and the
    # impl in the other)
    still_new: list[tuple[int, Chunk]] = []
    for i, n in unmatched_new:
        o = old_by_key.get(n.key)
        if o is not None and o.key not in matched_old and o.kind == n.kind:
            matched_old.add(o.key)
            result.append((i, "modified", o, n))
        else:
            still_new.append((i, n))
    unmatched_new = still_new
    unmatched_old = [o for o in old if o.key not in matched_old]
    if renames and unmatched_old and unmatched_new and len(unmatched_old) * len(unmatched_new) <= max_rename_candidates ** 2:
        scored = []
        new_bags = [_line_bag(n) for _, n in unmatched_new]
        for oi, o in enumerate(unmatched_old):
            old_bag = _line_bag(o)
            for ni, (_, n) in enumerate(unmatched_new):
                if o.kind == n.kind:
                    s = _similarity(old_bag, new_bags[ni])
                    if s >= rename_similarity:
                        scored.append((-s, oi, ni))
        chosen = _best_first(scored)
        for oi, ni in chosen:
            idx, n = unmatched_new[ni]
            o = unmatched_old[oi]
            # renumbered (`Inner#2` -> `Inner#3`) is not renamed
            same_name = o.key.split("#", 1)[0] == n.key.split("#", 1)[0] or (
                o.kind in CONTENT_NAMED and o.name.split("!", 1)[0] == n.name.split("!", 1)[0])
            result.append((idx, "modified" if same_name else "renamed", o, n))
        used_o, used_n = {oi for oi, _ in chosen}, {ni for _, ni in chosen}
        unmatched_old = [o for k, o in enumerate(unmatched_old) if k not in used_o]
        unmatched_new = [x for k, x in enumerate(unmatched_new) if k not in used_n]
    if renames and unmatched_old and unmatched_new and any(n.kind in CONTENT_NAMED for _, n in unmatched_new):
        unmatched_old, unmatched_new = _pair_content_named(unmatched_old, unmatched_new, result, max_rename_candidates)
    # a container with member units that appears or disappears as a whole is covered by its
    # members, and by its own code without them when that is more than its header
    for i, n in unmatched_new:
        own = own_code(n) if n.members else n
        if own is not None:
            result.append((i, "added", None, own))
    result.sort(key=lambda r: r[0])
    for _, change, o, n in result:
        yield change, o, n
    for o in unmatched_old:
        own = own_code(o) if o.members else o
        if own is not None:
            yield "deleted", own, None


# what a container's own code may hold without being worth a row of its own: comments and
# attributes, `use` declarations, brackets and blanks (what is left after its header)
_NOT_OWN_CODE = re.compile(r"//[^\n]*|/\*.*?\*/|#[^\n]*|\b(?:pub(?:\([^)]*\))?\s+)?use\s[^;]*;|[\s{}()\[\];,:]+", re.S)


def own_code(c: Chunk) -> Chunk | None:
    """A container's code without the lines of its member units (a class's decorators,
    docstring and attributes; a trait's required methods), as a chunk of its own, or None
    when nothing but its header, ``use`` lines, comments and closing brackets is left."""
    text = c.text
    kept, pos = [], 0
    for s, e in sorted(c.member_spans):
        line_start = text.rfind("\n", 0, s) + 1
        a = line_start if not text[line_start:s].strip() else s  # the member's whole lines
        floor = max(pos, c.body_open or 0)
        while a > floor and text[a - 1] == "\n":  # and the blank lines before it
            prev = text.rfind("\n", 0, a - 1) + 1
            if prev < floor or text[prev:a].strip():
                break
            a = prev
        stop = text.find("\n", e)
        b = (len(text) if stop < 0 else stop + 1) if not text[e:stop if stop >= 0 else len(text)].strip() else e
        if a > pos:
            kept.append(text[pos:a])
        pos = max(pos, b)
    kept.append(text[pos:])
    own = "".join(kept).rstrip("\n")
    head = c.body_open if c.body_open is not None else own.find("\n") + 1
    if not _NOT_OWN_CODE.sub("", own[head:]):
        return None
    # cut, when it is long, at its line starts after the header
    cuts = pack_cuts([(m.end(), 0) for m in re.finditer("\n", own) if m.end() > head])
    return dataclasses.replace(c, text=own, compare=own, members=False, member_spans=(), cuts=cuts,
                               _pieces=None, _spans=None, _opening="")



# kinds named after their content (a macro call, by what it is given on its first line): an
# edit there renames the unit, so the same macro's calls are paired by their text
CONTENT_NAMED = frozenset({"macro_call"})
CONTENT_SIMILARITY = 0.7


def _pair_content_named(old: list[Chunk], new: list[tuple[int, Chunk]], result: list, max_candidates: int
                        ) -> tuple[list[Chunk], list[tuple[int, Chunk]]]:
    """Pair what is left of the content-named kinds: calls of the same macro whose texts are
    at least CONTENT_SIMILARITY alike (difflib ratio), the most alike first, as modified."""
    macro = lambda c: c.name.split("!", 1)[0]  # noqa: E731
    scored = []
    for oi, o in enumerate(old):
        if o.kind not in CONTENT_NAMED:
            continue
        candidates = [(ni, n) for ni, (_, n) in enumerate(new) if n.kind == o.kind and macro(n) == macro(o)]
        if len(candidates) > max_candidates:
            continue
        for ni, n in candidates:
            sm = SequenceMatcher(None, o.text, n.text, autojunk=False)
            if sm.real_quick_ratio() >= CONTENT_SIMILARITY and sm.quick_ratio() >= CONTENT_SIMILARITY:
                s = sm.ratio()
                if s >= CONTENT_SIMILARITY:
                    scored.append((-s, oi, ni))
    chosen = _best_first(scored)
    for oi, ni in chosen:
        result.append((new[ni][0], "modified", old[oi], new[ni][1]))
    used_o, used_n = {oi for oi, _ in chosen}, {ni for _, ni in chosen}
    return ([o for k, o in enumerate(old) if k not in used_o], [x for k, x in enumerate(new) if k not in used_n])


def _best_first(scored: list[tuple[float, int, int]]) -> list[tuple[int, int]]:
    """(old, new) index pairs from (-score, old, new) candidates: the best first, each index once."""
    used_o: set[int] = set()
    used_n: set[int] = set()
    out = []
    for _, oi, ni in sorted(scored):
        if oi not in used_o and ni not in used_n:
            used_o.add(oi)
            used_n.add(ni)
            out.append((oi, ni))
    return out


def pair_moves(deleted: list[tuple[int, Chunk]], added: list[tuple[int, Chunk]], *, similarity: float,
               max_candidates: int = 64) -> list[tuple[int, int, bool]]:
    """Units a commit moved to another file: each deleted chunk (with the index of its file)
    paired with an added chunk of another file that has the same kind and local qualified
    name (``Store::open`` stays ``Store::open`` when its impl moves) and whose lines are at
    least ``similarity`` alike. Returns (index in ``deleted``, index in ``added``, whether
    the compared texts are equal), best pairs first, each chunk in one pair at most. A
    name shared by more than ``max_candidates`` squared pairs (``main`` of many files in
    one reorganisation) pairs identical texts only."""
    groups: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    for di, (_, o) in enumerate(deleted):
        groups.setdefault((o.kind, _move_key(o.key)), ([], []))[0].append(di)
    for ai, (_, n) in enumerate(added):
        group = groups.get((n.kind, _move_key(n.key)))
        if group is not None:
            group[1].append(ai)
    scored = []
    for dis, ais in groups.values():
        if not ais:
            continue
        by_text: dict[str, list[int]] = {}
        for di in dis:
            by_text.setdefault(deleted[di][1].compare, []).append(di)
        for ai in ais:  # an identical text: the first one left in another file
            free = by_text.get(added[ai][1].compare)
            for k, di in enumerate(free or ()):
                if deleted[di][0] != added[ai][0]:
                    scored.append((-1.0, di, ai))
                    del free[k]  # type: ignore[union-attr]
                    break
        if len(dis) * len(ais) > max_candidates ** 2:
            continue
        bags = {di: _line_bag(deleted[di][1]) for di in dis}
        for ai in ais:
            a_file, n = added[ai]
            bag = _line_bag(n)
            for di in dis:
                d_file, o = deleted[di]
                if d_file != a_file and o.compare != n.compare:
                    s = _similarity(bags[di], bag)
                    if ("::" in n.key and sum(bag.values()) <= _SHORT_LINES
                            and sum(bags[di].values()) <= _SHORT_LINES):
                        # an item of a type (its owner names it apart from other files' items)
                        # of a line or two: any edit changes every line, so compare characters
                        s = SequenceMatcher(None, o.text, n.text, autojunk=False).ratio()
                    if s >= similarity:
                        scored.append((-s, di, ai))
    scored.sort()
    out = []
    used_d: set[int] = set()
    used_a: set[int] = set()
    for _, di, ai in scored:
        if di not in used_d and ai not in used_a:
            used_d.add(di)
            used_a.add(ai)
            out.append((di, ai, deleted[di][1].compare == added[ai][1].compare))
    return out


_SHORT_LINES = 2  # items of a type this short are compared by characters when moved (not top-level
# ones: a `const STORE_PREFIX` of one module is no move of another module's)


_PATH_PREFIX = re.compile(r"(?<![\w:])(?:\w+::)+(?=\w)")


def _move_key(key: str) -> str:
    """A chunk's key as files name it alike: without its ``#n`` number, and with the paths
    inside a trait impl's name cut to their last segment (``<Buf as term::Terminal>::fg``
    and ``<Buf as Terminal>::fg`` are one unit imported two ways)."""
    key = key.split("#", 1)[0]
    if not key.startswith("<"):
        return key
    depth = 0
    for i, ch in enumerate(key):  # the impl's name is the bracketed head
        depth += (ch == "<") - (ch == ">")
        if depth == 0:
            return _PATH_PREFIX.sub("", key[:i + 1]) + key[i + 1:]
    return key


def part_changes(change: str, old: Chunk | None, new: Chunk | None) -> Iterator[PartChange]:
    """Split a chunk pair into per-part changes, dropping parts that are equal on both sides.

    Parts are numbered on the new side (on the old side for a deleted unit), one change per
    part at most. When the unit still exists, old parts without a new counterpart are not
    changes of their own (their new code would be empty): they join the old code of the
    nearest new part, which then shows what was removed around it."""
    old_pieces = old.pieces if old is not None else []
    new_pieces = new.pieces if new is not None else []
    if len(old_pieces) <= 1 and len(new_pieces) <= 1:
        yield PartChange(change, old, new, old_pieces[0] if old_pieces else "", new_pieces[0] if new_pieces else "", 1, 1)
        return
    if new is None:  # every part deleted
        for k, piece in enumerate(old_pieces):
            yield PartChange(change, old, new, piece, "", k + 1, len(old_pieces))
        return
    if old is None:  # every part added
        for k, piece in enumerate(new_pieces):
            yield PartChange(change, old, new, "", piece, k + 1, len(new_pieces))
        return
    # new part index -> the first and last old piece it replaces (a run of the old text)
    olds: dict[int, tuple[int, int]] = {}
    aligned: dict[int, str] = {}  # new part index -> its old code, cut from a run of old parts by lines
    # a container's parts change by their own text only: a part whose members alone changed
    # repeats what the members' own changes show
    container = bool(old.member_spans or new.member_spans)
    old_seq, new_seq = (old.own_pieces(), new.own_pieces()) if container else (old_pieces, new_pieces)
    sm = SequenceMatcher(None, old_seq, new_seq, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            continue
        if j1 == j2:  # removed parts: joined to the unchanged part after them (old piece i2), or before
            if container and not any(old_seq[i1:i2]):
                continue  # they held member units only
            j, run = (j1, (i1, i2)) if j1 < len(new_pieces) else (j1 - 1, (i1 - 1, i2 - 1))
            here = olds.get(j)
            olds[j] = run if here is None else (min(here[0], run[0]), max(here[1], run[1]))
            continue
        n_old, n_new = i2 - i1, j2 - j1
        if not container and n_old and n_new > 1:
            # the old text of the run, cut where a line diff puts the new parts' boundaries:
            # a new part shows the old lines it replaces, wherever the old cuts fell
            for k, text in enumerate(_aligned_old(old, new, i1, i2, j1, j2)):
                aligned[j1 + k] = text
            continue
        for k in range(n_new):
            if k >= n_old:
                if container and not new_seq[j1 + k]:
                    continue  # a part of member units only
                olds[j1 + k] = (-1, -1)  # an added part: no old code
            elif k == n_new - 1 and n_old > n_new:
                olds[j1 + k] = (i1 + k, i2 - 1)  # the surplus old parts go with the last one
            else:
                olds[j1 + k] = (i1 + k, i1 + k)
    for j in sorted({*olds, *aligned}):
        if j in aligned:
            old_code = aligned[j]
            if old_code == new_pieces[j]:
                continue  # the lines moved to another part, unchanged
        else:
            first, last = olds[j]
            old_code = "" if first < 0 else old.joined(first, last)
        if j > 0 and _same_after_opening(old, new, old_code, new_pieces[j]):
            continue  # only the signature every later part repeats changed: part 1 shows it
        yield PartChange(change, old, new, old_code, new_pieces[j], j + 1, len(new_pieces))


def _same_after_opening(old: Chunk, new: Chunk, old_code: str, new_code: str) -> bool:
    """Whether a later part's old and new code differ only in the opening they repeat."""
    old_open, new_open = old.repeated_opening(), new.repeated_opening()
    return (bool(old_code) and old_open != new_open and old_code.startswith(old_open) and new_code.startswith(new_open)
            and old_code[len(old_open):] == new_code[len(new_open):])


def _lines(text: str) -> list[str]:
    """Lines with their ``\n`` (only ``\n`` breaks a line), joining back to ``text``."""
    parts = text.split("\n")
    out = [line + "\n" for line in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def _aligned_old(old: Chunk, new: Chunk, i1: int, i2: int, j1: int, j2: int) -> list[str]:
    """The old code of each new part ``j1..j2-1`` that replaces old pieces ``i1..i2-1``:
    the old pieces' text cut at lines where a line diff of the two runs maps the new parts'
    first lines. In order, every old line once; a part that is new gets none ("").
    Like the parts themselves, a text that does not start the unit starts with its opening
    (the unit's start, its indentation first)."""
    ospans, nspans = old._cut(), new._cut()
    old_lines = _lines(old.text[ospans[i1][0]:ospans[i2 - 1][1]])
    start = nspans[j1][0]
    new_text = new.text[start:nspans[j2 - 1][1]]
    ops = SequenceMatcher(None, old_lines, _lines(new_text), autojunk=False).get_opcodes()

    def to_old(n: int) -> int:
        for tag, a1, a2, b1, b2 in ops:
            if b1 <= n < b2:
                if tag == "equal":
                    return a1 + (n - b1)
                return a1 + (n - b1) * (a2 - a1) // (b2 - b1)  # replaced lines: in proportion
        return len(old_lines)

    bounds = [0]
    for k in range(j1 + 1, j2):
        bounds.append(max(bounds[-1], to_old(new_text.count("\n", 0, nspans[k][0] - start))))
    bounds.append(len(old_lines))
    out = []
    for a, b in zip(bounds, bounds[1:]):
        text = "".join(old_lines[a:b])
        out.append("" if not text else old.indent + text if (i1 == 0 and a == 0) else old.repeated_opening() + text)
    return out
