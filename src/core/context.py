"""What context strategies share: the unit they are asked about, the references a
language's symbol index finds, ranking, packing to a token budget, and recall.

A context strategy (plugin kind ``context``) has

- ``snapshot``: ``None`` when it needs only the unit's own file, else ``"commit"`` or
  ``"parent"`` (see core.snapshot): the tree the chunk stage keeps up to date for it;
- ``recall``: whether the run measures context recall (needs a snapshot);
- ``items(query, snapshot) -> list[ContextItem]``: the context of one unit, best first.

**Recall** is measured the same way whatever the strategy: the definitions in the
repository that a unit's ``new_code`` names directly (resolved by the language's index
at the snapshot, the unit itself excluded) are its references; recall is the share of
them whose definition (same path and qualified name) is among the unit's context items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.records import ContextItem, ParsedBlob
from core.stats import Counter


@dataclass(slots=True)
class UnitQuery:
    """One unit change, as a context strategy sees it."""

    path: str
    lang: str
    code: str  # new code, or old code for a deletion
    header: str | None  # enclosing impl/trait header
    qualname: str
    local_qualname: str
    parsed: ParsedBlob | None  # the version of the file the code comes from
    lines: tuple[int, int] | None  # the unit's line span in ``parsed``


@dataclass(slots=True)
class Reference:
    """A definition a unit refers to, as a language's symbol index finds it."""

    path: str
    qualname: str
    kind: str
    text: str  # rendered skeleton
    count: int  # how often the unit names it
    distance: int  # module distance from the unit
    tier: str  # direct | method | impl | related | file
    why: str
    name: str = ""
    short: str = ""  # a shorter form of ``text`` packing falls back to ("": none)


class MemoReferences:
    """For symbol indexes: ``references`` remembers its last answer, so the context
    strategy and the recall measurement asking about the same unit resolve it once.
    Subclasses implement ``_references`` and call ``forget_references`` on every update."""

    _last: tuple[Any, bool, list[Reference]] | None = None

    def references(self, q: UnitQuery, related: bool = True) -> list[Reference]:
        """The definitions a unit's code refers to, with how (``tier``) and how often."""
        key = (q.path, q.local_qualname, q.header, q.code)
        last = self._last
        if last is not None and last[0] == key and (last[1] or not related):
            return last[2] if related else [r for r in last[2] if r.tier == "direct"]
        refs = self._references(q, related)
        self._last = (key, related, refs)
        return refs

    def forget_references(self) -> None:
        self._last = None

    def _references(self, q: UnitQuery, related: bool) -> list[Reference]:
        raise NotImplementedError


TIER_SCORE = {"direct": 100.0, "method": 60.0, "impl": 40.0, "related": 20.0, "file": 0.0}


def score(ref: Reference) -> float:
    """Direct references first, then by how often they are named and module distance."""
    return TIER_SCORE.get(ref.tier, 0.0) + 2.0 * min(ref.count, 20) - 0.5 * min(ref.distance, 10)


class CharCounter:
    """Token counts estimated from characters (when no tokenizer is loaded yet)."""

    def __init__(self, chars_per_token: float):
        self.chars_per_token = chars_per_token

    def __call__(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)


def pack(candidates: Iterable[ContextItem], max_tokens: int, count: Callable[[str], int],
         longer: Mapping[int, str] | None = None) -> list[ContextItem]:
    """Best-scored items that fit ``max_tokens`` whole (an item that does not fit is
    skipped, a smaller one after it may still fit); no path+qualname or text twice.

    ``longer``: by ``id`` of a candidate, a longer text for it (its ``text`` is then its
    short form: a long data type's signature); once packing is done, best first, a packed
    item takes its longer text where the room left holds the difference."""
    ranked = sorted(candidates, key=lambda c: (-c.score, c.path, c.qualname))
    if not longer:
        return [ranked[k] for k in _fit(ranked, max_tokens, count)]
    packing = _Packing(max_tokens, count)
    chosen = [ranked[k] for k in packing.fit(ranked, range(len(ranked)))]
    for item in chosen:
        text = longer.get(id(item))
        if text is not None and packing.widen(item.path, item.text, text):
            item.text = text
    return chosen


def pack_references(refs: Iterable[Reference], max_tokens: int, count: Callable[[str], int]) -> list[ContextItem]:
    """``pack`` of the references' items (``to_item``), making items of the packed ones only
    (it runs for every unit change: each score is computed once).

    A reference with a ``short`` form (a long data type cut to its leading fields) is
    packed by that form, so that it takes no more room than its signature from the
    references ranked after it: the references packed are those their short forms alone
    give (distinct definitions with the same short form are both kept). Then its full
    text replaces the short form where the room left holds the difference: direct
    references first, best first, then the others.
    """
    ranked = sorted([(-round(score(r), 3), r.path, r.qualname, i, r) for i, r in enumerate(refs)])
    order = [x[-1] for x in ranked]
    if not any(r.short for r in order):
        return [to_item(ranked[k][-1], -ranked[k][0]) for k in _fit(order, max_tokens, count)]
    packing = _Packing(max_tokens, count)
    chosen = packing.fit([_Short(r.path, r.qualname, r.short, r.text) if r.short else r for r in order],
                         range(len(order)))
    wide = [k for k in chosen if order[k].short and order[k].tier == "direct"]
    wide += [k for k in chosen if order[k].short and order[k].tier != "direct"]
    full = {k for k in wide if packing.widen(order[k].path, order[k].short, order[k].text)}
    out = []
    for k in chosen:
        item = to_item(order[k], -ranked[k][0])
        if order[k].short and k not in full:
            item.text = order[k].short
        out.append(item)
    return out


@dataclass(slots=True)
class _Short:
    """A reference by its short form, as packing reads it (``same``: its full text, what
    tells it from another definition's)."""

    path: str
    qualname: str
    text: str
    same: str


class _Packing:
    """The room left in a budget, and what was packed, as items are packed and widened."""

    def __init__(self, max_tokens: int, count: Callable[[str], int]):
        self.left = max_tokens
        self.count = count
        self.per_token = count.chars_per_token if type(count) is CharCounter else None
        self.seen: set[tuple[str, str]] = set()
        self.texts: set[str] = set()

    def cost(self, path: str, text: str) -> int:
        """An item's tokens: its path line and text (from lengths for a ``CharCounter``)."""
        if self.per_token:
            return math.ceil((len(path) + 1 + len(text)) / self.per_token)
        return self.count(f"{path}\n{text}")

    def fit(self, ranked: list, positions: Iterable[int]) -> list[int]:
        """Of ``positions`` in ``ranked`` (items or references: path, qualname, text), those
        that fit, best first: whole, each path+qualname and text once (an item that does not
        fit is skipped, a smaller one after it may still fit). It runs for every unit change:
        a ``CharCounter`` counts from lengths, without joining path and text."""
        out: list[int] = []
        seen, texts, count, per_token = self.seen, self.texts, self.count, self.per_token
        left = self.left
        for k in positions:
            if left <= 0:
                break
            item = ranked[k]
            path, text = item.path, item.text
            key, same = (path, item.qualname), item.same if type(item) is _Short else text
            if key in seen or same in texts:
                continue
            # self.cost, inline: this loop runs for every candidate of every unit change
            cost = math.ceil((len(path) + 1 + len(text)) / per_token) if per_token else count(f"{path}\n{text}")
            if cost > left:
                continue
            seen.add(key)
            texts.add(same)
            left -= cost
            out.append(k)
        self.left = left
        return out

    def widen(self, path: str, short: str, text: str) -> bool:
        """Whether a packed item's ``short`` form can give way to ``text`` in the room left
        (which it then takes)."""
        extra = self.cost(path, text) - self.cost(path, short)
        if extra > self.left:
            return False
        self.left -= extra
        return True


def _fit(ranked: list, max_tokens: int, count: Callable[[str], int]) -> list[int]:
    """The positions in ``ranked`` (items or references: path, qualname, text) of the first
    that fit (see ``_Packing.fit``)."""
    return _Packing(max_tokens, count).fit(ranked, range(len(ranked)))


def to_item(ref: Reference, value: float | None = None) -> ContextItem:
    """A reference as a context item; ``value``: its score (rounded) when already known."""
    return ContextItem(ref.path, ref.qualname, ref.kind, ref.text,
                       round(score(ref), 3) if value is None else value, f"{ref.tier}: {ref.why}")


RECALL_BUCKETS = 10


def measure(stats: Counter, query: UnitQuery | None, items: list[ContextItem], snapshot: Any,
            count: Callable[[str], int] | None = None) -> None:
    """Add one unit's context figures to the chunk stage's counters.

    ``query`` is None for a unit without new code (a deletion): only sizes are counted.
    """
    stats.add("context_units")
    stats.add("context_items", len(items))
    stats.add("context_chars", sum(len(c.text) for c in items))
    stats.add(f"context_items_hist_{_items_bucket(len(items))}")
    if not items:
        stats.add("context_units_empty")
    if query is None or snapshot is None:
        return
    index = snapshot.index(query.lang)
    refs = {(r.path, r.qualname) for r in index.references(query, related=False)}
    if not refs:
        return
    have = {(c.path, c.qualname) for c in items}
    found = len(refs & have)
    stats.add("context_units_with_refs")
    stats.add("context_refs", len(refs))
    stats.add("context_refs_found", found)
    stats.add(f"context_recall_hist_{min(RECALL_BUCKETS - 1, int(RECALL_BUCKETS * found / len(refs)))}")


def _items_bucket(n: int) -> str:
    for edge in (0, 1, 2, 4, 8, 16):
        if n <= edge:
            return f"le{edge}"
    return "gt16"


def summary(counts: dict[str, int]) -> dict[str, Any] | None:
    """The context block of the manifest and the run summary, from chunk-stage counts."""
    units = counts.get("context_units", 0)
    if not units:
        return None
    refs = counts.get("context_refs", 0)
    with_refs = counts.get("context_units_with_refs", 0)
    return {
        "units": units,
        "items_per_unit": round(counts.get("context_items", 0) / units, 3),
        "chars_per_unit": round(counts.get("context_chars", 0) / units, 1),
        "empty_share": round(counts.get("context_units_empty", 0) / units, 4),
        "units_with_refs": with_refs,
        "refs": refs,
        "refs_found": counts.get("context_refs_found", 0),
        "recall": round(counts.get("context_refs_found", 0) / refs, 4) if refs else None,
        "recall_histogram": [counts.get(f"context_recall_hist_{i}", 0) for i in range(RECALL_BUCKETS)],
        "items_histogram": {k[len("context_items_hist_"):]: v for k, v in sorted(counts.items())
                            if k.startswith("context_items_hist_")},
    }
