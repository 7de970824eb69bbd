"""Chunkers ``ast`` (semantic units) and ``window`` (the naive fixed-size baseline)."""

from __future__ import annotations

from dataclasses import dataclass

from core.chunk import Chunk
from core.errors import CommitforgeError
from core.hookspecs import hookimpl
from core.language import Language
from core.records import ParsedBlob
from core.chunk import CUT_UNIT


@dataclass
class AstChunkerConfig:
    name: str = "ast"
    max_chars: int = 4000  # the naive pipeline's windows were 2000


class AstChunker:
    """One chunk per unit; a unit over ``max_chars`` is cut at AST boundaries into parts.

    Containers (impl, trait, inline mod) are chunks too, but they count as changed only
    when their own text changes (header, associated items, required trait methods), not
    when one of their member units does: members are chunks of their own.
    """

    pairs_renames = True

    def __init__(self, cfg: AstChunkerConfig):
        if cfg.max_chars < CUT_UNIT:
            raise CommitforgeError(f"chunker.max_chars={cfg.max_chars} is too small for the ast chunker; use at least {CUT_UNIT}")
        self.cfg = cfg

    def chunk(self, parsed: ParsedBlob, language: Language, path: str, module: str | None = None) -> list[Chunk]:
        if module is None:
            module = language.module_path(path)
        text = parsed.text
        comments = tuple(getattr(language, "comment_prefixes", ()))
        prefix = f"{module}::" if module else ""
        max_chars = self.cfg.max_chars
        units = parsed.units
        out: list[Chunk] = []
        members: dict[int, list[tuple[int, int]]] = {}
        for u in units:
            # whole lines: a comment after a unit on its last line is its code (`X = 30  # seconds`)
            code = u.text + _trailing_comment(text, u.char_end, comments)
            if u.parent is not None:  # a member: its container comes first
                start = units[u.parent].char_start
                members.setdefault(u.parent, []).append((u.char_start - start, u.char_start + len(code) - start))
            lead = text[text.rfind("\n", 0, u.char_start) + 1:u.char_start]
            # positional, in Chunk's field order (this runs for every unit of every file version
            # a commit touches, and a call by keywords costs three times as much)
            out.append(Chunk(u.local_qualname, u.kind, u.name, u.local_qualname, prefix + u.local_qualname,
                             u.header, u.signature, code, u.skeleton if u.skeleton is not None else code,
                             (u.start_line, u.end_line), u.has_error, False, u.body_open, max_chars, u.cuts, (),
                             lead if not lead.strip(" \t") else ""))
        for i, spans in members.items():
            out[i].members = True
            out[i].member_spans = tuple(spans)
        return out


def _trailing_comment(text: str, end: int, prefixes: tuple[str, ...]) -> str:
    """The rest of the line after offset ``end`` when it is a comment (spaces first), else ""."""
    if not prefixes:
        return ""
    stop = text.find("\n", end)
    rest = text[end:stop if stop >= 0 else len(text)].rstrip("\r")
    comment = rest.lstrip(" \t")
    if not comment.startswith(prefixes) or (comment.startswith("/*") and "*/" not in comment):
        return ""  # a block comment that goes on to later lines is not the unit's
    return rest


@dataclass
class WindowChunkerConfig:
    name: str = "window"
    max_chars: int = 2000
    overlap: int = 0  # characters shared by consecutive windows


class WindowChunker:
    """Fixed character windows over the whole file, paired by window index.

    This reproduces the naive pipeline for ablations: it knows nothing of syntax, so an
    insertion near the top of a file shifts (and "changes") every later window.
    """

    pairs_renames = False

    def __init__(self, cfg: WindowChunkerConfig):
        if cfg.max_chars < 1:
            raise CommitforgeError(f"chunker.max_chars={cfg.max_chars} must be positive")
        if not 0 <= cfg.overlap < cfg.max_chars:
            raise CommitforgeError(f"chunker.overlap={cfg.overlap} must be >= 0 and below max_chars={cfg.max_chars}")
        self.cfg = cfg

    def chunk(self, parsed: ParsedBlob, language: Language, path: str) -> list[Chunk]:
        text = parsed.text  # windows are named by path: no module names (none are looked up)
        size, step = self.cfg.max_chars, self.cfg.max_chars - self.cfg.overlap
        out = []
        line = 1
        pos = 0
        for i, start in enumerate(range(0, max(len(text), 1), step)):
            window = text[start:start + size]
            line += text.count("\n", pos, start)
            pos = start
            end_line = line + window.count("\n")
            name = f"window{i}"
            out.append(Chunk(
                key=name, kind="window", name=name, local_qualname=name,
                qualname=f"{path}#{name}", header=None, signature=None, text=window, compare=window,
                lines=(line, end_line), has_error=parsed.has_error,
            ))
            if start + size >= len(text):
                break
        return out


@hookimpl
def register_chunker(register):
    register("ast", AstChunker, AstChunkerConfig)
    register("window", WindowChunker, WindowChunkerConfig)
