"""Language ``python``: units of Python source with tree-sitter-python.

Units are the definitions of the module body and of class bodies (up to ``max_nesting``
levels, counting the blocks of ``if``/``try``/``with`` statements, so conditional
definitions such as ``try: ... except ImportError: def f(): ...`` are found):

- ``fn``: a function of the module (``async def`` too);
- ``method``: a function of a class body (``header`` is the class line, ``class X(Base):``);
- ``class``: a class; a container whose methods and nested classes are units of their
  own, compared by its ``skeleton`` (its text without them);
- ``assign``: a module-level assignment to names (``X = 1``, ``X: int = 1``, ``a, b = ...``,
  ``__all__ = [...]``); assignments to attributes or items are not definitions;
- ``type``: a ``type X = ...`` alias statement (Python 3.12).

A unit's span starts at its decorators and at the comment lines right above it (no blank
line between). Functions and classes inside function bodies are part of their function.
``import`` statements (at any depth) are recorded as declarations (``ParsedBlob.decls``)
for the symbol index. Other module-level statements (calls, ``if __name__ == "__main__":``
bodies) belong to no unit. Qualified names come from the file's path: ``pkg/sub/mod.py`` is
``pkg.sub.mod``, ``pkg/__init__.py`` is ``pkg``, and a ``src/`` layout drops ``src``.
A new version of a file is reparsed incrementally from the previous one's tree.
"""

from __future__ import annotations

import bisect
import functools
import importlib.metadata
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import tree_sitter
import tree_sitter_python

from core.chunk import CUT_MIN, CUT_UNIT, cut_before, pack_cuts
from core.hookspecs import hookimpl
from core.parsing import ByteOffsets as _Offsets
from core.parsing import Edit, node_text, parse_with_deadline
from core.parsing import edited as _edited
from core.records import ParsedBlob, Unit
from plugins.python_symbols import (
    FileSymbols,
    PythonIndex,
    python_source_roots,
    summarize,
)

EXTRACTOR_VERSION = "3"

DEFINITIONS = {"function_definition", "class_definition"}
# compound statements whose blocks are searched for definitions (conditional definitions)
COMPOUND = {"if_statement", "elif_clause", "else_clause", "try_statement", "except_clause",
            "except_group_clause", "finally_clause", "with_statement"}
IMPORTS = ("import_statement", "import_from_statement", "future_import_statement")
# cut points never split these (a cut between a string's quotes and its content would
# fall inside one token)
ATOMIC = {"string", "concatenated_string"}
_WS = re.compile(r"\s+")


@dataclass
class PythonConfig:
    name: str = "python"
    extensions: list[str] = field(default_factory=lambda: [".py"])
    max_nesting: int = 6  # levels of class bodies and if/try/with blocks searched for definitions
    parse_timeout_s: float = 20.0  # a blob whose parsing takes longer is skipped (counted as parse_timeout)


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _signature(raw: str) -> str:
    """One line: whitespace collapsed; a signature written over several lines loses the
    spaces its line breaks left inside the brackets."""
    sig = _norm(raw)
    if "\n" in raw:
        sig = re.sub(r"([(\[]) ", r"\1", sig)
        sig = re.sub(r" ([)\]])", r"\1", sig)
    return sig


@functools.cache
def _grammar() -> tuple[tree_sitter.Language, tree_sitter.Query]:
    """The grammar and the import query, compiled once per process (workers unpickle a
    fresh PythonLanguage with every task)."""
    lang = tree_sitter.Language(tree_sitter_python.language())
    return lang, tree_sitter.Query(lang, "[" + " ".join(f"({k})" for k in IMPORTS) + "] @import")


class PythonLanguage:
    name = "python"
    project_files: tuple[str, ...] = ("pyproject.toml",)
    comment_prefixes = ("#",)  # a comment after a unit on its last line belongs to its code

    def __init__(self, cfg: PythonConfig | None = None):
        cfg = cfg or PythonConfig()
        self.cfg = cfg
        self.extensions = tuple(cfg.extensions)
        self._parser: tree_sitter.Parser | None = None
        self._query: tree_sitter.Query | None = None

    # parser objects do not pickle: workers rebuild them on first use
    def __getstate__(self) -> dict:
        return {"cfg": self.cfg, "extensions": self.extensions}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["cfg"])  # type: ignore[misc]

    def _ensure(self) -> tuple[tree_sitter.Parser, tree_sitter.Query]:
        if self._parser is None:
            lang, self._query = _grammar()
            self._parser = tree_sitter.Parser(lang)
        return self._parser, self._query  # type: ignore[return-value]

    @property
    def cache_key(self) -> str:
        v = self.versions()
        return f"python-x{EXTRACTOR_VERSION}-g{v['tree-sitter-python']}-n{self.cfg.max_nesting}"

    def versions(self) -> dict[str, str]:
        return _versions()

    def module_path(self, path: str) -> str:
        return python_module_path(path)

    def module_paths(self, projects: Mapping[str, bytes], present: frozenset[str] = frozenset()) -> Callable[[str], str]:
        """``module_path`` in a tree whose ``pyproject.toml`` files are ``projects``: modules
        are named from the source roots they declare."""
        roots = python_source_roots(projects)
        return functools.partial(python_module_path, roots=roots) if roots else python_module_path

    def summarize(self, parsed: ParsedBlob, options: dict) -> FileSymbols:
        return summarize(parsed, int(options.get("max_item_chars", 1200)), int(options.get("bodies", 0)))

    def symbol_index(self, options: dict) -> PythonIndex:
        return PythonIndex(python_module_path)

    def parse(self, source: bytes, previous: tuple[bytes, ParsedBlob] | None = None,
              edits: list[Edit] | None = None) -> ParsedBlob:
        """Units of one blob.

        With ``previous`` (an earlier version of the file and its ParsedBlob, with its
        tree), tree-sitter reparses incrementally (from ``edits``, git's hunks as byte
        spans, when given): most of the time goes to parsing, not to extracting units. Files with syntax errors (either version) are parsed from
        scratch, since error recovery can differ; the result equals a fresh parse.
        """
        parser, query = self._ensure()
        text = source.decode("utf-8")
        tree = None
        if previous is not None and previous[1].tree is not None and not previous[1].has_error:
            edited, _ = _edited(previous[0], previous[1].tree, source, edits)
            tree = parse_with_deadline(parser, source, edited, self.cfg.parse_timeout_s)
            if tree.root_node.has_error:
                tree = None
        if tree is None:
            tree = parse_with_deadline(parser, source, None, self.cfg.parse_timeout_s)
        root = tree.root_node
        offsets = _Offsets(source, text)
        units: list[Unit] = []
        seen: dict[str, int] = {}

        def visit(body, parent_idx: int | None, level: int) -> None:
            for node in _statements(body, level, self.cfg.max_nesting):
                definition = node
                if node.type == "decorated_definition":
                    definition = node.child_by_field_name("definition")
                    if definition is None:
                        continue
                if definition.type in DEFINITIONS:
                    idx = len(units)
                    units.append(self._definition(node, definition, source, text, offsets, units, parent_idx, seen))
                    if definition.type == "class_definition" and level < self.cfg.max_nesting:
                        body_node = definition.child_by_field_name("body")
                        if body_node is not None:
                            visit(body_node, idx, level + 1)
                elif parent_idx is None and node.type in ("expression_statement", "type_alias_statement"):
                    unit = self._assignment(node, source, text, offsets, seen)
                    if unit is not None:
                        units.append(unit)

        visit(root, None, 0)
        _skeletons(units)
        decls = self._imports(root, query, text, offsets, units)
        return ParsedBlob(lang=self.name, text=text, units=units, has_error=root.has_error, decls=decls, tree=tree)

    def _definition(self, node, definition, source: bytes, text: str, offsets: _Offsets, units: list[Unit],
                    parent_idx: int | None, seen: dict[str, int]) -> Unit:
        parent = units[parent_idx] if parent_idx is not None else None
        if definition.type == "class_definition":
            kind = "class"
        else:
            kind = "method" if parent is not None and parent.kind == "class" else "fn"
        name_node = definition.child_by_field_name("name")
        name = node_text(name_node, source) if name_node is not None else "_"
        start, start_row = _leading_comments_start(node)
        c_start, c_end = offsets.char(start), offsets.char(node.end_byte)
        body = definition.child_by_field_name("body")
        colon = None
        for child in definition.children:
            if body is not None and child.start_byte >= body.start_byte:
                break
            if child.type == ":":
                colon = child
        sig_end = colon.end_byte if colon is not None else (body.start_byte if body is not None else node.end_byte)
        signature = _signature(source[definition.start_byte:sig_end].decode("utf-8", "replace"))
        body_open = offsets.char(colon.end_byte) - c_start if colon is not None else None
        unit_text = text[c_start:c_end]
        cuts = _cuts(node, source, start, c_start, offsets, sig_end) if len(unit_text) > CUT_UNIT else b""
        local = _local(name, parent, seen)
        return Unit(kind=kind, name=name, local_qualname=local,
                    header=parent.signature if parent is not None else None, signature=signature,
                    start_byte=start, end_byte=node.end_byte, start_line=start_row + 1,
                    end_line=node.end_point.row + 1, has_error=node.has_error, text=unit_text,
                    char_start=c_start, char_end=c_end, parent=parent_idx, body_open=body_open, cuts=cuts)

    def _assignment(self, node, source: bytes, text: str, offsets: _Offsets, seen: dict[str, int]) -> Unit | None:
        """A module-level assignment to names (or a ``type`` alias), else None."""
        if node.type == "type_alias_statement":
            kind = "type"
            left = node.child_by_field_name("left")
            value = node.child_by_field_name("right")
            name = _first_identifier(left, source)
        else:
            if node.named_child_count != 1 or node.named_children[0].type != "assignment":
                return None  # a call, a docstring, `a = b = ...; c()`...
            kind = "assign"
            assignment = node.named_children[0]
            left = assignment.child_by_field_name("left")
            if left is None or left.type not in ("identifier", "pattern_list", "tuple_pattern", "list_pattern"):
                return None  # `obj.attr = ...`, `table[k] = ...` define nothing
            name = _first_identifier(left, source)
            value = assignment.child_by_field_name("right")
            while value is not None and value.type == "assignment":  # a = b = 1
                value = value.child_by_field_name("right")
        if not name:
            return None
        start, start_row = _leading_comments_start(node)
        c_start, c_end = offsets.char(start), offsets.char(node.end_byte)
        sig_end = value.start_byte if value is not None else node.end_byte
        signature = _signature(text[offsets.char(node.start_byte):offsets.char(sig_end)]).rstrip("=").rstrip()
        unit_text = text[c_start:c_end]
        cuts = _cuts(node, source, start, c_start, offsets, sig_end) if len(unit_text) > CUT_UNIT else b""  # a large table
        body_open = None  # a table (`[`, `{`, `(`) repeats its opening in every later part
        if value is not None and source[value.start_byte:value.start_byte + 1] in (b"[", b"{", b"("):
            body_open = offsets.char(value.start_byte + 1) - c_start
        return Unit(kind=kind, name=name, local_qualname=_local(name, None, seen), header=None,
                    signature=signature, start_byte=start, end_byte=node.end_byte, start_line=start_row + 1,
                    end_line=node.end_point.row + 1, has_error=node.has_error, text=unit_text,
                    char_start=c_start, char_end=c_end, parent=None, body_open=body_open, cuts=cuts)

    @staticmethod
    def _imports(root, query: tree_sitter.Query, text: str, offsets: _Offsets, units: list[Unit]) -> list[list]:
        """``["import", enclosing unit or None, text, line]`` for every import statement."""
        nodes = tree_sitter.QueryCursor(query).captures(root).get("import", [])
        nodes.sort(key=lambda n: n.start_byte)
        starts = [u.start_byte for u in units]  # units are in pre-order: sorted by start
        decls: list[list] = []
        for node in nodes:
            pos = node.start_byte
            i = bisect.bisect_right(starts, pos) - 1
            while i is not None and i >= 0 and not (units[i].start_byte <= pos < units[i].end_byte):
                i = units[i].parent
            parent = i if i is not None and i >= 0 else None
            decls.append(["import", parent, text[offsets.char(node.start_byte):offsets.char(node.end_byte)],
                          node.start_point.row + 1])
        return decls


def _statements(body, level: int, max_nesting: int):
    """The statements of a module or block, with those of the if/try/with blocks in it."""
    for child in body.children:
        if child.type in COMPOUND:
            if level < max_nesting:
                yield from _compound(child, level + 1, max_nesting)
        else:
            yield child


def _compound(node, level: int, max_nesting: int):
    for part in node.children:
        if part.type == "block":
            yield from _statements(part, level, max_nesting)
        elif part.type in COMPOUND:  # elif, else, except, finally clauses
            yield from _compound(part, level, max_nesting)


def _local(name: str, parent: Unit | None, seen: dict[str, int]) -> str:
    """``Class.method``; a repeated name (a property setter, a conditional variant) gets ``#n``."""
    local = f"{parent.local_qualname.split('#', 1)[0]}.{name}" if parent is not None else name
    n = seen.get(local, 0) + 1
    seen[local] = n
    return f"{local}#{n}" if n > 1 else local


def _leading_comments_start(node) -> tuple[int, int]:
    """Start (byte, row) of the comment lines right above a statement (no blank line between,
    not a comment that ends the line of the statement before)."""
    start, row = node.start_byte, node.start_point.row
    prev = node.prev_sibling
    while prev is not None and prev.type == "comment" and prev.end_point.row == row - 1:
        before = prev.prev_sibling
        if before is not None and before.end_point.row == prev.start_point.row:
            break  # a trailing comment of the statement before
        start, row = prev.start_byte, prev.start_point.row
        prev = before
    return start, row


def _first_identifier(node, source: bytes) -> str:
    if node is None:
        return ""
    if node.type == "identifier":
        return node_text(node, source)
    for child in node.named_children:
        found = _first_identifier(child, source)
        if found:
            return found
    return ""


def _skeletons(units: list[Unit]) -> None:
    """A class's text with its member units cut out and all whitespace removed."""
    children: dict[int, list[int]] = {}
    for i, u in enumerate(units):
        if u.parent is not None:
            children.setdefault(u.parent, []).append(i)
    for p, parent in enumerate(units):
        if parent.kind != "class":
            continue
        pieces, pos = [], 0
        for k in children.get(p, []):
            at = units[k].char_start - parent.char_start
            pieces.append(parent.text[pos:at])
            pos = at + len(units[k].text)
        pieces.append(parent.text[pos:])
        parent.skeleton = _WS.sub("", "".join(pieces))


def _cuts(node, source: bytes, start: int, c_start: int, offsets: _Offsets, header_end: int) -> bytes:
    """Packed cut points of a unit (char offsets in its text), for units over CUT_UNIT; none
    before byte ``header_end`` (decorators and the ``def`` line, or an assignment's target)."""
    found: list[tuple[int, int]] = []
    base = start if offsets.ascii else 0
    _collect_cuts(node, source, 0, base, found)
    found = [(b, d) for b, d in found if b > header_end - base]
    if not offsets.ascii:
        found = [(offsets.char(b) - c_start, d) for b, d in found]
    return pack_cuts(found)


def _collect_cuts(node, source: bytes, depth: int, base: int, out: list[tuple[int, int]]) -> None:
    """(byte offset - base, depth) between the children of large nodes, in increasing order
    (:func:`core.chunk.cut_before`), so pieces hold whole lines and statements with their
    trailing comments; strings are never entered.
    """
    prev_end = -1
    for child in node.children:
        start, end = child.start_byte, child.end_byte
        # (a comment that ends the line of the statement before stays with it)
        if prev_end >= 0 and not (child.type == "comment" and source.rfind(b"\n", prev_end, start) < 0):
            out.append(cut_before(source, prev_end, start, base, depth))
        prev_end = end
        if end - start > CUT_MIN and child.child_count and child.type not in ATOMIC:
            _collect_cuts(child, source, depth + 1, base, out)


@functools.cache
def _versions() -> dict[str, str]:
    return {d: importlib.metadata.version(d) for d in ("tree-sitter", "tree-sitter-python")}


def python_module_path(path: str, roots: tuple[str, ...] = ()) -> str:
    """Dotted module name of a file from its path and, when given, the source roots of the
    projects in its tree (``roots``, see ``python_source_roots``).

    ``pkg/sub/mod.py`` -> ``pkg.sub.mod``; ``pkg/__init__.py`` -> ``pkg``; under a source
    root, the part after it (``python/pkg/a.py`` -> ``pkg.a`` when a ``pyproject.toml``
    says ``python-source = "python"``); else in a ``src/`` layout the part after the last
    ``src`` directory (``src/pkg/a.py`` -> ``pkg.a``).
    """
    for root in roots:
        if path.startswith(root + "/"):
            return _dotted(path[len(root) + 1:].split("/"))
    return _path_module(path)


@functools.lru_cache(maxsize=65536)
def _path_module(path: str) -> str:
    parts = path.split("/")
    dirs = parts[:-1]
    if "src" in dirs:
        parts = parts[len(dirs) - dirs[::-1].index("src"):]
    return _dotted(parts)


def _dotted(parts: list[str]) -> str:
    """Module name of path segments; a segment that is no identifier (``.github``,
    ``my-scripts``, ``2020``) has its other characters replaced by ``_``, so the name
    stays a dotted name of identifiers."""
    stem = parts[-1].rsplit(".", 1)[0]
    return ".".join(_identifier(p) for p in parts[:-1] + ([] if stem == "__init__" else [stem]))


def _identifier(segment: str) -> str:
    if segment.isidentifier():
        return segment
    name = re.sub(r"\W", "_", segment)
    return name if name[:1].isalpha() or name[:1] == "_" else "_" + name


@hookimpl
def register_language(register):
    register("python", PythonLanguage, PythonConfig)
