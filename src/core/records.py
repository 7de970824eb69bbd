"""The records that flow between stages (see DESIGN.md, "Records").

Field names follow CommitPack / StarCoder2 habits. Records are plain dataclasses that
serialise to one JSON object per line; ``to_dict``/``from_dict`` are the only codecs.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class FileChange:
    change: str  # A, M, D, R
    old_path: str | None
    new_path: str | None
    old_blob: str | None
    new_blob: str | None
    similarity: int | None = None  # rename similarity in percent, R only
    lang: str | None = None
    old_mode: str | None = None
    new_mode: str | None = None

    @property
    def path(self) -> str:
        return self.new_path if self.new_path is not None else self.old_path  # type: ignore[return-value]


@dataclass(slots=True)
class CommitRecord:
    commit: str
    parents: list[str]
    author_time: str  # ISO 8601
    author_epoch: int
    committer_time: str
    committer_epoch: int
    subject: str
    message: str
    files: list[FileChange] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        # what dataclasses.asdict gives (same keys, same order), without its generic deep copy
        d = {name: getattr(self, name) for name in _COMMIT_FIELDS}
        d["parents"] = list(self.parents)
        d["files"] = [{name: getattr(fc, name) for name in _FILE_FIELDS} for fc in self.files]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CommitRecord:
        files = [FileChange(**f) for f in d["files"]]
        return cls(**{**d, "files": files})


_COMMIT_FIELDS = tuple(f.name for f in dataclasses.fields(CommitRecord))
_FILE_FIELDS = tuple(f.name for f in dataclasses.fields(FileChange))


@dataclass(slots=True)
class Unit:
    """A semantic unit of one parsed blob.

    Spans are byte offsets into the blob (docs and attributes included); ``text`` is the
    decoded slice. ``local_qualname`` is the name path inside the file (``mod`` nesting and
    impl target); the module path derived from the file path is prefixed at pairing time,
    so a blob's units can be cached by blob id whatever path it appears under.
    """

    kind: str
    name: str
    local_qualname: str
    header: str | None  # enclosing impl/trait header, e.g. "impl<T> Store for Mem<T> where T: Clone"
    signature: str
    start_byte: int
    end_byte: int
    start_line: int  # 1-based, inclusive
    end_line: int
    has_error: bool
    text: str
    char_start: int = 0  # str offsets of text in the blob's decoded text
    char_end: int = 0
    parent: int | None = None  # index of the enclosing container unit
    body_open: int | None = None  # char offset in text just after the body's opening brace
    # cut points of a unit longer than a chunker could keep whole: packed int32 pairs
    # (char offset in text, syntax depth), see core.chunk.unpack_cuts
    cuts: bytes = b""
    skeleton: str | None = None  # containers: text with child units elided


@dataclass(slots=True)
class ParsedBlob:
    """What a language plugin extracts from one blob (the unit cache stores this)."""

    lang: str
    text: str
    units: list[Unit]
    has_error: bool
    # declarations that are not units but that context resolution reads: [kind, index of
    # the enclosing container unit or None, text, line], e.g. ["use", None, "use a::B;", 3]
    decls: list[list[Any]] = field(default_factory=list)
    tree: Any = None  # the parser's tree while in memory (for incremental reparsing); never stored

    def to_dict(self) -> dict[str, Any]:
        # a unit's text is a slice of the blob's text: store its span, not a second copy
        return {
            "lang": self.lang,
            "text": self.text,
            "has_error": self.has_error,
            "decls": self.decls,
            "units": [_unit_row(u) for u in self.units],  # tuples of the fields, read in C
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParsedBlob:
        text = d["text"]
        units = []
        for row in d["units"]:
            # stored rows are the Unit fields in order, without text (rebuilt from char spans)
            units.append(Unit(*row[:_TEXT_AT], text[row[_CHAR_START]:row[_CHAR_END]], *row[_TEXT_AT:]))
        return cls(lang=d["lang"], text=text, units=units, has_error=d["has_error"], decls=d["decls"])


_UNIT_STORED = tuple(f.name for f in dataclasses.fields(Unit) if f.name != "text")
_unit_row = operator.attrgetter(*_UNIT_STORED)
_TEXT_AT = [f.name for f in dataclasses.fields(Unit)].index("text")
_CHAR_START, _CHAR_END = _UNIT_STORED.index("char_start"), _UNIT_STORED.index("char_end")


@dataclass(slots=True)
class ContextItem:
    path: str
    qualname: str
    kind: str
    text: str
    score: float
    why: str


@dataclass(slots=True)
class UnitChange:
    """One line of ``chunks/``: a unit (or one part of an oversize unit) before and after a commit."""

    id: str
    repo: str
    commit: str
    parent: str | None
    time: str
    subject: str
    message: str
    path: str
    old_path: str | None
    lang: str
    change: str  # added, modified, deleted, renamed
    kind: str
    qualname: str
    old_qualname: str | None
    header: str | None
    signature: str | None
    old_code: str
    new_code: str
    part: int
    parts: int
    old_lines: tuple[int, int] | None
    new_lines: tuple[int, int] | None
    has_error: bool
    context: list[ContextItem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in _UNIT_CHANGE_FIELDS}
        d["context"] = [{"path": c.path, "qualname": c.qualname, "kind": c.kind, "text": c.text, "score": c.score,
                         "why": c.why} for c in self.context]
        return d


_UNIT_CHANGE_FIELDS = tuple(f.name for f in dataclasses.fields(UnitChange))
