"""Chunker ``blocks``: consecutive top-level units merged greedily into blocks.

The ``ast`` chunker emits one chunk per unit, so a commit that touches one small function
yields a training example that shows that function alone. ``blocks`` keeps neighbours
together: the top-level units of a file (those with no enclosing container: functions,
types, whole impl/trait/mod blocks…), in file order, are packed into blocks while the
stretch of text from the block's first unit to its last stays within ``max_chars``. A
changed unit then comes with the units around it, and a block is the unit of pairing.

It uses only commitforge's plugin interfaces: the ParsedBlob a Language returned (its
``units`` with their character spans), ``Language.module_path`` for qualified names, and
``core.chunk.Chunk`` for the result, so it works with any language plugin.

Pairing across a commit: a block's key is the local name of its first unit, so edits
inside a block pair it with its old self (``modified``). When an edit moves a boundary
(a unit grows past ``max_chars``, or the first unit is removed), the block's key changes;
``pairs_renames`` lets the pairing match such blocks by the similarity of their lines
(change ``renamed``, ``old_qualname`` the old block's name) instead of emitting a
deletion and an addition.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.chunk import Chunk
from core.errors import CommitforgeError
from core.language import Language
from core.records import ParsedBlob, Unit


@dataclass
class BlocksChunkerConfig:
    """The ``chunker`` group's keys when ``chunker=blocks`` (checked by commitforge)."""

    name: str = "blocks"
    max_chars: int = 3000  # a block spans at most this many characters (a longer unit is cut)
    # kind of a block of several units; a block of one unit keeps its unit's kind. The
    # commitforge format has a token for each kind it knows, "window" (a stretch of a
    # file) among them, and none for a kind it does not.
    merged_kind: str = "window"


class BlocksChunker:
    """Blocks of consecutive top-level units, each at most ``max_chars`` characters long."""

    pairs_renames = True

    def __init__(self, cfg: BlocksChunkerConfig):
        if cfg.max_chars < 1:
            raise CommitforgeError(f"chunker.max_chars={cfg.max_chars} must be positive for the blocks chunker")
        if not cfg.merged_kind:
            raise CommitforgeError("chunker.merged_kind must not be empty; use e.g. window")
        # the chunk stage reads ``cfg.max_chars`` (when present) to count oversize parts
        self.cfg = cfg

    def blocks(self, parsed: ParsedBlob) -> list[list[Unit]]:
        """The file's top-level units, grouped into blocks in file order."""
        top = sorted((u for u in parsed.units if u.parent is None), key=lambda u: (u.char_start, u.char_end))
        out: list[list[Unit]] = []
        current: list[Unit] = []
        for unit in top:
            if current and unit.char_end - current[0].char_start > self.cfg.max_chars:
                out.append(current)
                current = []
            current.append(unit)
        if current:
            out.append(current)
        return out

    def chunk(self, parsed: ParsedBlob, language: Language, path: str) -> list[Chunk]:
        module = language.module_path(path)
        chunks: list[Chunk] = []
        keys: set[str] = set()
        for block in self.blocks(parsed):
            first, last = block[0], block[-1]
            single = len(block) == 1
            local = first.local_qualname if single else f"{first.local_qualname}..{last.local_qualname}"
            key = first.local_qualname
            n = 2
            while key in keys:  # first units' names are unique per file; be safe anyway
                key = f"{first.local_qualname}#{n}"
                n += 1
            keys.add(key)
            text = first.text if single else parsed.text[first.char_start:last.char_end]
            chunks.append(Chunk(
                key=key,
                kind=first.kind if single else self.cfg.merged_kind,
                name=first.name if single else "",
                local_qualname=local,
                qualname=f"{module}::{local}" if module else local,
                header=first.header if single else None,
                signature=first.signature if single else None,
                text=text,
                compare=text,
                lines=(first.start_line, last.end_line),
                has_error=any(u.has_error for u in block),
                # a block of one oversize unit is cut at the unit's syntax-tree boundaries
                body_open=first.body_open if single else None,
                max_chars=self.cfg.max_chars,
                cuts=first.cuts if single else b"",
            ))
        return chunks
