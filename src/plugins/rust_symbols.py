"""Rust symbol index: what each module of a Cargo workspace defines and imports.

One ``RustIndex`` follows a tree through history; ``update`` replaces the files a
commit changed. It knows:

- **crates** from ``Cargo.toml``: package and ``[lib]`` names, ``[[bin]]`` targets,
  path, workspace and renamed dependencies (``foo = { package = "bar", ... }``);
- **modules** from file paths (``a.rs``, ``a/mod.rs``, ``src/bin``, ``tests``…), inline
  ``mod`` blocks and ``#[path]`` attributes;
- per module, its **items**, its ``use`` bindings (groups, aliases, ``self``, globs,
  ``pub use`` re-exports) and ``extern crate`` names; associated items (methods, impl
  blocks) by the type or trait they belong to; ``macro_rules!`` macros by name.

``references`` resolves the paths a unit's code names (``Store``, ``crate::a::B``,
``super::f``, ``Self::new``, ``Type::method``, ``m!``) as rustc would for modules and
imports (no type inference: ``x.method()`` is matched by name against the methods of
the types the unit names). Names from std or external crates resolve to nothing and
are counted as unresolved.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import posixpath
import re
import tomllib
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, NamedTuple

from core.context import MemoReferences, Reference, UnitQuery
from core.records import ParsedBlob
from core.snapshot import apply_delta

Mod = tuple[str, ...]  # (crate id, module names...)
DefRef = tuple[str, str]  # (path, local qualified name: unique in a file, kept across edits)

TYPE_KINDS = {"struct", "enum", "union", "trait", "type"}
MAX_DEPTH = 32  # nested lookups through imports: a longer chain resolves to nothing
_MAX_CACHED = 500_000  # resolution cache entries kept across commits before starting over
KEYWORDS = frozenset("""as async await break const continue crate dyn else enum extern false fn for if impl in let loop
match mod move mut pub ref return self static struct super trait true type unsafe use where while union macro_rules
bool char str u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize f32 f64 _""".split())
# comments, strings and char literals (the lookahead lets other positions fail at once: 3x faster)
_STRIP = re.compile(r'(?=[/b"\'])(?://[^\n]*|/\*.*?\*/|b?"[^"\\]*(?:\\.[^"\\]*)*"|b?\'(?:\\.|[^\'\\\n])\')', re.S)
# paths `a::b::C` and macro names `m!` (a name first, then `::name`s: no backtracking, 2x
# faster; the lookahead first fails fast where no name starts)
_PATH = re.compile(r"(?=[A-Za-z_])(?<![\w.'])([A-Za-z_]\w*(?:\s*::\s*[A-Za-z_]\w*)*)(\s*!)?")
_METHOD_CALL = re.compile(r"\.\s*([A-Za-z_]\w*)\s*(?:::\s*<[^()]*>)?\s*\(")
# a pattern that starts with a literal is searched for that literal first (much faster than
# trying every position): `use` then the word boundary before it (`\buse`), 20x faster
_LOCAL_USE = re.compile(r"use(?<!\wuse)\s+([^;{}]*(?:\{[^;]*\})?[^;{}]*);")
_USE_TOKENS = re.compile(r"r#\w+|::|[{},*]|[A-Za-z_]\w*")
_ATTRS = re.compile(r"^\s*(?:#!?\[[^\]]*\]\s*|//[^\n]*\n\s*|/\*.*?\*/\s*)*", re.S)
_PATH_ATTR = re.compile(r'#\[\s*path\s*=\s*"([^"]+)"\s*\]')
# the name an associated type, a type alias or a const declares (`type Error = E;`, `type
# Item: Clone;`, `const N: usize`), not a pointer's `*const T`: blanked before scanning
# (each branch starts with its keyword, the lookbehind after it: 3x faster)
_DECLARED = re.compile(r"(type(?<![\w*]type)\s+|const(?<![\w*]const)\s+(?=[A-Za-z_]\w*\s*:))[A-Za-z_]\w*")
_TYPE_NAME = re.compile(r"([A-Za-z_]\w*)\s*$")
# the name an item declares (`fn parse`, `struct Parser`): the first in a unit's code is its own
_DECL_NAME = re.compile(r"(?<![\w*])(?:fn|struct|enum|union|trait|mod|static(?:\s+mut)?|macro_rules\s*!)\s+([A-Za-z_]\w*)")
_WORD = re.compile(r"[A-Za-z_]\w*")
_ASSIGNED = re.compile(r"(?<![=!<>])=(?!=).*")  # from a lone `=` on (not `==`, `<=`, `>=`, `!=`)
_SPACED_OPS = re.compile(r"\s(?:<<|>>|<=|>=|<|>)\s")  # rustfmt spaces operators, never generics' brackets
# `self.store`, not `self.get(` (`self` first, as _LOCAL_USE: 10x faster)
_SELF_FIELD = re.compile(r"self(?<!\wself)\s*\.\s*(?:r#)?([A-Za-z_]\w*)\b(?!\s*[(!])")
_FIELD = re.compile(r"\s*(?:pub\b\s*(?:\([^)]*\)\s*)?)?(?:r#)?([A-Za-z_]\w*)\s*:(?!:)(.*)", re.DOTALL)
_PATH_STARTS = frozenset({"crate", "self", "super", "Self"})
_USE_STARTS = frozenset({"crate", "self", "super"})  # `use` paths that start alike in every edition
_STD_CRATES = frozenset({"std", "core", "alloc"})
_NO_USES: dict[str, list[tuple[str, ...]]] = {}  # a module without `use` declarations (never changed)
_CONTAINER_KINDS = frozenset({"impl", "trait", "mod", "fn", "method"})  # what can hold another unit


# -- use trees -----------------------------------------------------------------------

def parse_use(text: str) -> list[tuple[tuple[str, ...], str]]:
    """Bindings of one ``use`` (or ``extern crate``) declaration: (path, bound name),
    the bound name being ``*`` for a glob. ``a::{self, b::c as d, e::*}`` gives
    ``(a,) a``, ``(a, b, c) d`` and ``(a, e) *``; ``as _`` binds nothing."""
    return list(_bindings(text))


@functools.lru_cache(maxsize=65536)
def _bindings(text: str) -> tuple[tuple[tuple[str, ...], str], ...]:
    """:func:`parse_use`, remembered: the same declarations recur in every version of a file."""
    return tuple(_parse_use(text))


def _parse_use(text: str) -> list[tuple[tuple[str, ...], str]]:
    """The uncached :func:`parse_use`."""
    body = _ATTRS.sub("", text, count=1).strip().rstrip(";")
    body = re.sub(r"^pub\s*(\([^)]*\))?\s*", "", body)
    m = re.match(r"extern\s+crate\s+([A-Za-z_]\w*)(?:\s+as\s+([A-Za-z_]\w*))?", body)
    if m:
        return [((m.group(1),), m.group(2) or m.group(1))]
    if not body.startswith("use"):
        return []
    tokens = [t[2:] if t.startswith("r#") else t for t in _USE_TOKENS.findall(body[3:])]
    out: list[tuple[tuple[str, ...], str]] = []
    pos = 0

    def tree(prefix: tuple[str, ...]) -> None:
        nonlocal pos
        segs = list(prefix)
        while pos < len(tokens):
            t = tokens[pos]
            if t == "::":
                pos += 1
            elif t == "{":
                pos += 1
                while pos < len(tokens) and tokens[pos] != "}":
                    if tokens[pos] == ",":
                        pos += 1
                        continue
                    tree(tuple(segs))
                pos += 1
                return
            elif t == "*":
                pos += 1
                out.append((tuple(segs), "*"))
                return
            elif t in (",", "}"):
                break
            elif t == "as":
                alias = tokens[pos + 1] if pos + 1 < len(tokens) else "_"
                pos += 2
                if alias != "_" and segs:
                    out.append((tuple(segs), alias))
                return
            else:
                segs.append(t)
                pos += 1
        if segs and len(segs) > len(prefix):
            if segs[-1] == "self":
                segs.pop()
            if segs:
                out.append((tuple(segs), segs[-1]))

    while pos < len(tokens):
        if tokens[pos] == ",":
            pos += 1
            continue
        before = pos
        tree(())
        if pos == before:
            pos += 1
    return out


# -- per-file summaries ----------------------------------------------------------------

@dataclass(slots=True)
class Def:
    name: str
    kind: str
    local: str  # local qualified name in the file
    scope: tuple[str, ...]  # enclosing inline modules
    owner: str | None  # members and impls: the type (or trait) they belong to
    text: str  # rendered skeleton
    lines: tuple[int, int]
    members: tuple[str, ...] = ()  # impls and traits: their methods' names; enums: their variants
    exported: bool = False  # macros: #[macro_export]
    short: str = ""  # a data type cut to its leading members: its signature alone (see render_forms)
    full: str = ""  # such a data type's text without docs: the members a unit names are shown from it

    def __reduce__(self) -> tuple:  # a constructor call: summaries load twice as fast as slot by slot
        return Def, _def_fields(self)


_def_fields = operator.attrgetter(*(f.name for f in dataclasses.fields(Def)))


@dataclass(slots=True)
class FileSymbols:
    defs: list[Def]
    uses: list[tuple[tuple[str, ...], tuple[str, ...], str]]  # (scope, path, bound name or "*")
    mods: list[tuple[tuple[str, ...], str, str | None]]  # (scope, name, #[path] value)
    scopes: set[tuple[str, ...]] = field(default_factory=set)
    macro_use: set[tuple[str, ...]] = field(default_factory=set)  # scope + name of `#[macro_use] mod`s
    _by_local: dict[str, Def] | None = None

    def __reduce__(self) -> tuple:  # stored without the cache
        return FileSymbols, (self.defs, self.uses, self.mods, self.scopes, self.macro_use)

    def by_local(self) -> dict[str, Def]:
        if self._by_local is None:
            self._by_local = {d.local: d for d in self.defs}
        return self._by_local


@functools.lru_cache(maxsize=16384)
def _owner(impl_name: str) -> tuple[str, str | None]:
    """``<Mem as Store>`` -> ("Mem", "Store"); ``Mem`` -> ("Mem", None)."""
    if impl_name.startswith("<") and " as " in impl_name:
        ty, trait = impl_name[1:-1].split(" as ", 1)
        t = _TYPE_NAME.search(trait.lstrip("!").split("<", 1)[0])  # From<io::Error> -> From
        return _last(ty), t.group(1) if t else None
    return _last(impl_name), None


def _last(type_text: str) -> str:
    m = _TYPE_NAME.search(type_text.split("<", 1)[0])
    return m.group(1) if m else type_text


def render(kind: str, text: str, signature: str, header: str | None,
           members: list[tuple[int, int, str]], max_item_chars: int, bodies: int) -> str:
    """A definition as a skeleton (the first of :func:`render_forms`)."""
    return render_forms(kind, text, signature, header, members, max_item_chars, bodies)[0]


def render_forms(kind: str, text: str, signature: str, header: str | None,
                 members: list[tuple[int, int, str]], max_item_chars: int, bodies: int) -> tuple[str, str]:
    """A definition as a skeleton (fields, variants and signatures, no function bodies), and
    a shorter form of it, or "" when it has none.

    ``members`` are the (start, end, signature) spans in ``text`` of an impl's or a
    trait's methods: each becomes its signature (required trait items, associated
    types and consts stay as written). Over ``max_item_chars``, comment and attribute
    lines are left out; a trait's or impl's interface is kept whole even then; a struct,
    union or enum still over keeps its leading fields or variants that fit whole, and a
    comment counts the others (its signature alone is then its shorter form, which packing
    falls back to: see core.context.pack_references); other items become their signature."""
    if kind in ("fn", "method"):
        if bodies and len(text) <= bodies:
            return (text if kind == "fn" else f"{header} {{\n{_indent(text)}\n}}"), ""
        return (signature + ";" if kind == "fn" else f"{header} {{\n    {signature};\n}}"), ""
    if kind in ("trait", "impl"):
        pieces, pos = [], 0
        for start, end, sig in members:
            pieces.append(text[pos:start])
            pieces.append(sig + ";")
            pos = end
        pieces.append(text[pos:])
        skeleton = _BLANK_LINES.sub("\n", "".join(pieces))
        if len(skeleton) > max_item_chars:  # docs go first; the interface itself is kept whole
            skeleton = _without_docs(skeleton)
        return skeleton, ""
    if len(text) <= max_item_chars:
        return text, ""
    stripped = _without_docs(text)
    if len(stripped) <= max_item_chars:
        return stripped, ""
    alone = signature + (";" if kind in ("const", "static", "type") else " { … }")
    if kind in ("struct", "union", "enum"):
        leading = _leading_members(stripped, max_item_chars, "variants" if kind == "enum" else "fields")
        if leading is not None:
            return leading, alone
    return alone, ""


def _leading_members(text: str, max_chars: int, noun: str) -> str | None:
    """A data type's ``text`` (without docs) cut to at most ``max_chars``: its header, the
    fields or variants (``noun``) that fit whole, in order, and ``// … N more {noun}``;
    None when it has no braced body of its own lines or not even its first member fits."""
    parts = split_members(text)
    return select_members(parts, noun, max_chars) if parts is not None else None


class Members(NamedTuple):
    head: str  # the lines up to the body's `{`
    texts: list[str]  # each member's lines (a field or variant, its comma included)
    names: list[str]
    indent: str


_MEMBER_NAME = re.compile(r"(?:pub\b\s*(?:\([^)]*\)\s*)?)?(?:r#)?([A-Za-z_]\w*)")


def split_members(text: str) -> Members | None:
    """The members of a data type's ``text`` (without docs), or None when it has no braced
    body of its own lines. A member ends at a line ending in a comma outside brackets (a
    struct variant or a type broken over lines stays whole)."""
    lines = text.split("\n")
    code = [_STRIP.sub(" ", ln).rstrip() for ln in lines]  # trailing comments and strings out
    header = next((k for k, ln in enumerate(code) if ln.endswith("{")), None)
    if header is None or header > len(lines) - 3 or code[-1].strip() != "}":
        return None
    texts: list[str] = []
    start, depth = header + 1, 0
    for k in range(header + 1, len(lines) - 1):
        depth += _bracket_change(code[k])
        if depth <= 0 and code[k].endswith(","):
            texts.append("\n".join(lines[start:k + 1]))
            start, depth = k + 1, 0
    if start < len(lines) - 1 and any(code[start:-1]):
        texts.append("\n".join(lines[start:-1]))  # the last one, without its comma (blank lines: none)
    names = []
    for member in texts:
        m = _MEMBER_NAME.match(member.lstrip())
        names.append(m.group(1) if m else "")
    first = lines[header + 1]
    return Members("\n".join(lines[:header + 1]), texts, names, first[:len(first) - len(first.lstrip())] or "    ")


def select_members(parts: Members, noun: str, max_chars: int, wanted: Iterable[int] = ()) -> str | None:
    """The data type with the members ``wanted`` that fit (in order), then its leading
    others up to the first that does not fit, within ``max_chars``; each run of members
    left out is a ``// … N more {noun}`` line (``1 more field``). None when no member fits.
    Lengths are counted as members join, without rendering each try (it runs per unit)."""
    n = len(parts.texts)
    marks: dict[int, int] = {}

    def mark(run: int) -> int:  # the line of a run of members left out, with its newline
        if run not in marks:
            marks[run] = 1 + len(_left_out(parts.indent, run, noun))
        return marks[run]

    kept = [False] * n
    total = len(parts.head) + 2 + mark(n)  # the header, "\n}", and every member left out

    def grown(k: int) -> int:  # the length with member k kept too
        a = b = 0
        while k - a - 1 >= 0 and not kept[k - a - 1]:
            a += 1
        while k + b + 1 < n and not kept[k + b + 1]:
            b += 1
        return total + 1 + len(parts.texts[k]) - mark(a + b + 1) + (mark(a) if a else 0) + (mark(b) if b else 0)

    for k in wanted:
        if not kept[k]:
            length = grown(k)
            if length <= max_chars:
                total, kept[k] = length, True
    for k in range(n):
        if kept[k]:
            continue
        length = grown(k)
        if length > max_chars:
            break
        total, kept[k] = length, True
    if not any(kept):
        return None
    return _render_members(parts, noun, {k for k in range(n) if kept[k]})


def _render_members(parts: Members, noun: str, kept: set[int]) -> str:
    out, run = [parts.head], 0
    for k, member in enumerate(parts.texts):
        if k in kept:
            if run:
                out.append(_left_out(parts.indent, run, noun))
                run = 0
            out.append(member)
        else:
            run += 1
    if run:
        out.append(_left_out(parts.indent, run, noun))
    out.append("}")
    return "\n".join(out)


def _left_out(indent: str, n: int, noun: str) -> str:
    return f"{indent}// … {n} more {noun if n > 1 else noun[:-1]}"


def field_types(parts: Members | None) -> dict[str, tuple[tuple[str, ...], ...]]:
    """A struct's named fields (its ``split_members``) -> the paths of the types their
    declared types name (as segment tuples, capitalized last segment:
    ``Arc<RwLock<db::Store>>`` names ``Arc``, ``RwLock`` and ``db::Store``)."""
    out: dict[str, tuple[tuple[str, ...], ...]] = {}
    for member in parts.texts if parts is not None else ():
        m = _FIELD.match(_STRIP.sub(" ", member))
        if m is None:
            continue
        paths = (tuple(s.strip() for s in p.split("::")) for p, _bang in _PATH.findall(m.group(2)))
        out[m.group(1)] = tuple(dict.fromkeys(p for p in paths if p[-1][:1].isupper()))
    return out


_MISSING = object()


def _kept(table: dict, key: Any, make: Callable[[], Any], bound: int = 4096) -> Any:
    """``table[key]``, made by ``make`` the first time (None included); the table starts
    over past ``bound`` entries."""
    hit = table.get(key, _MISSING)
    if hit is _MISSING:
        if len(table) >= bound:
            table.clear()
        hit = table[key] = make()
    return hit


def _bracket_change(code: str) -> int:
    """Brackets a line of code opens minus those it closes (``<>`` of generics too, not the
    ``>`` of ``->`` or ``=>``, nor shifts and comparisons between spaces, ``[u8; 1 << 4]``,
    nor what follows a discriminant's or a default's ``=``: ``Flag = 1<<3``)."""
    code = _SPACED_OPS.sub(" ", _ASSIGNED.sub("", code.replace("->", "").replace("=>", "")))
    return (code.count("(") + code.count("[") + code.count("{") + code.count("<")
            - code.count(")") - code.count("]") - code.count("}") - code.count(">"))


_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+\n")


def _without_docs(text: str) -> str:
    """``text`` without its comments and attributes: a line comment, a block comment and an
    attribute over several lines (``#[cfg_attr(\n    …,\n)]``) go whole; code after an
    attribute on its line stays."""
    out: list[str] = []
    depth = 0  # open brackets of an attribute that goes on
    in_comment = False
    for ln in text.splitlines():
        body = ln.lstrip()
        if in_comment:
            in_comment = "*/" not in body
            continue
        if depth == 0:
            if body.startswith("//"):
                continue
            if body.startswith("/*"):
                in_comment = "*/" not in body[2:]
                continue
            if not body.startswith("#[") and not body.startswith("#!["):
                out.append(ln)
                continue
            body = body[1:]
        depth, rest = _attribute_rest(body, depth)
        if depth == 0 and rest.strip():
            out.append(ln[:len(ln) - len(ln.lstrip())] + rest.lstrip())
    return "\n".join(out)


def _attribute_rest(text: str, depth: int) -> tuple[int, str]:
    """(bracket depth after ``text``, the text after the attribute closes) for a line of an
    attribute that is ``depth`` brackets deep at its start (string literals skipped)."""
    quote = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quote = False
        elif ch == '"':
            quote = True
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return 0, text[i + 1:]
        i += 1
    return depth, ""


def _indent(text: str) -> str:
    return "\n".join("    " + ln if ln else ln for ln in text.splitlines())


_VARIANT_TOKENS = re.compile(r"r#[A-Za-z_]\w*|[A-Za-z_]\w*|[\[\](){},=]")


def enum_variants(text: str) -> tuple[str, ...]:
    """The variant names of an enum's source text (attributes, comments and discriminant
    expressions skipped)."""
    attrs = _ATTRS.match(text)  # outer attributes and doc comments may hold braces
    start = attrs.end() if attrs is not None else 0
    brace = text.find("{", start)
    if brace < 0:
        return ()
    out: list[str] = []
    depth = 0
    expect = True  # at the start of a variant
    for m in _VARIANT_TOKENS.finditer(_STRIP.sub(" ", text[brace + 1:])):
        tok = m.group()
        if tok in "([{":
            depth += 1
        elif tok in ")]}":
            if depth == 0:
                break  # the enum's closing brace
            depth -= 1
        elif depth == 0:
            if tok == ",":
                expect = True
            elif tok != "=" and expect:
                out.append(tok[2:] if tok.startswith("r#") else tok)
                expect = False
    return tuple(out)


def summarize(parsed: ParsedBlob, max_item_chars: int, bodies: int) -> FileSymbols:
    units = parsed.units
    scope_of: list[tuple[str, ...]] = []
    for u in units:
        p = u.parent
        if p is None:
            scope_of.append(())
        else:
            up = units[p]
            scope_of.append(scope_of[p] + (up.name,) if up.kind == "mod" else scope_of[p])
    members: dict[int, list[int]] = {}
    for i, u in enumerate(units):
        if u.parent is not None:
            members.setdefault(u.parent, []).append(i)
    defs: list[Def] = []
    scopes: set[tuple[str, ...]] = {()}
    macro_use: set[tuple[str, ...]] = set()
    for i, u in enumerate(units):
        scope = scope_of[i]
        if u.kind == "mod":
            scopes.add(scope + (u.name,))
            if _has_attribute(u.text, "macro_use"):
                macro_use.add(scope + (u.name,))
            continue
        if u.kind == "macro_call":
            continue  # a macro's call defines nothing the index can name
        owner = None
        parent = units[u.parent] if u.parent is not None else None
        if parent is not None and parent.kind == "impl":
            owner = _owner(parent.name)[0]
        elif parent is not None and parent.kind == "trait":
            owner = parent.name
        if u.kind == "impl":
            owner = _owner(u.name)[0]
        inner = members.get(i)
        if inner:  # most units hold none: no lists made for them
            kids = [units[k] for k in inner if units[k].kind in ("method", "fn")]
            start = u.char_start
            spans = tuple([(k.char_start - start, k.char_end - start, k.signature) for k in kids])
        else:
            kids, spans = [], ()
        forms = _forms if len(u.text) <= _FORMS_KEPT_CHARS else _forms.__wrapped__  # a huge unit: not kept
        text, short, full, variants = forms(u.kind, u.text, u.signature, u.header, spans, max_item_chars, bodies)
        names = variants if u.kind == "enum" else tuple([k.name for k in kids]) if kids else ()
        defs.append(Def(u.name, u.kind, u.local_qualname, scope, owner, text, (u.start_line, u.end_line), names,
                        u.kind == "macro" and _has_attribute(u.text, "macro_export"), short, full))
    uses: list[tuple[tuple[str, ...], tuple[str, ...], str]] = []
    mods: list[tuple[tuple[str, ...], str, str | None]] = []
    for kind, parent_idx, text, _line in parsed.decls:
        scope = ()
        if parent_idx is not None:
            container = units[parent_idx]
            if container.kind != "mod":
                continue  # a `use` inside an impl or trait body is not valid Rust
            scope = scope_of[parent_idx] + (container.name,)
        if kind in ("use", "extern_crate"):
            for path, bound in _bindings(text):
                uses.append((scope, path, bound))
        elif kind == "mod":
            m = re.search(r"\bmod\s+(?:r#)?([A-Za-z_]\w*)", text)
            if m:
                attr = _PATH_ATTR.search(text)
                mods.append((scope, m.group(1), attr.group(1) if attr else None))
                if _has_attribute(text, "macro_use"):
                    macro_use.add(scope + (m.group(1),))
    return FileSymbols(defs, uses, mods, scopes, macro_use)


_FORMS_KEPT_CHARS = 16384  # _forms keeps units up to this long: at most 4,096 of them, 64 MB of text


@functools.lru_cache(maxsize=4096)
def _forms(kind: str, text: str, signature: str, header: str | None, members: tuple[tuple[int, int, str], ...],
           max_item_chars: int, bodies: int) -> tuple[str, str, str, tuple[str, ...]]:
    """What a summary keeps of one unit's text (:func:`render_forms`, the text without docs
    of a data type cut short, an enum's variants), remembered: most units of a file's next
    version are the same text."""
    rendered, short = render_forms(kind, text, signature, header, list(members), max_item_chars, bodies)
    return rendered, short, _without_docs(text) if short else "", enum_variants(text) if kind == "enum" else ()


def _has_attribute(text: str, name: str) -> bool:
    """Whether the outer attributes at the start of an item's text include ``#[name…]``."""
    attrs = _ATTRS.match(text)
    head = attrs.group() if attrs is not None else ""
    return name in head and re.search(r"#\[\s*" + name + r"\b", head) is not None


# -- Cargo -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Package:
    dir: str  # "" for the repository root
    name: str
    lib_name: str
    lib_path: str | None  # [lib] path, relative to dir
    bins: tuple[tuple[str, str], ...]  # ([[bin]] name, path)
    deps: tuple[tuple[str, str], ...]  # (name used in code, package name)
    # `[package] edition` ("2015" when absent); None when inherited from a workspace whose
    # `[workspace.package] edition` is unknown (taken as 2018 or later)
    edition: str | None = "2015"


@functools.lru_cache(maxsize=4096)
def _toml(data: bytes) -> dict[str, Any] | None:
    """A manifest's TOML document (read only), parsed once per content: a history has
    few distinct versions of each Cargo.toml, and every package change re-reads them all."""
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


def parse_cargo(path: str, data: bytes, workspace_deps: dict[str, str],
                workspace_edition: str | None = None) -> Package | None:
    """The package a ``Cargo.toml`` declares (None for a virtual workspace manifest or a
    file that is not valid TOML). ``workspace_edition`` is its workspace's
    ``[workspace.package] edition``, for ``edition.workspace = true``."""
    doc = _toml(data)
    if doc is None:
        return None
    pkg = doc.get("package")
    if not isinstance(pkg, dict) or not isinstance(pkg.get("name"), str):
        return None
    name = pkg["name"]
    lib: dict[str, Any] = doc["lib"] if isinstance(doc.get("lib"), dict) else {}
    bins = []
    for b in doc.get("bin", []) if isinstance(doc.get("bin"), list) else []:
        if isinstance(b, dict) and isinstance(b.get("name"), str) and isinstance(b.get("path"), str):
            bins.append((b["name"], b["path"]))
    deps: dict[str, str] = {}
    for key, spec in _dependency_specs(doc):
        real = key
        if isinstance(spec, dict):
            if spec.get("workspace") is True:
                real = workspace_deps.get(key, key)
            elif isinstance(spec.get("package"), str):
                real = spec["package"]
        deps[key.replace("-", "_")] = real
    edition = pkg.get("edition", "2015")
    if isinstance(edition, dict):
        edition = workspace_edition if edition.get("workspace") is True else None
    elif isinstance(edition, int):
        edition = str(edition)
    return Package(dir=posixpath.dirname(path), name=name,
                   lib_name=(lib["name"] if isinstance(lib.get("name"), str) else name).replace("-", "_"),
                   lib_path=lib["path"] if isinstance(lib.get("path"), str) else None,
                   bins=tuple(bins), deps=tuple(sorted(deps.items())),
                   edition=edition if isinstance(edition, str) else None)


def _dependency_specs(doc: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(name, spec) of a manifest's dependencies of every kind, its per-target ones included."""
    tables = [doc.get(t) for t in ("dependencies", "dev-dependencies", "build-dependencies")]
    for target in (doc.get("target") or {}).values() if isinstance(doc.get("target"), dict) else ():
        if isinstance(target, dict):
            tables += [target.get(t) for t in ("dependencies", "dev-dependencies", "build-dependencies")]
    for table in tables:
        if isinstance(table, dict):
            yield from table.items()


def inherited_dependencies(data: bytes) -> tuple[str, ...]:
    """The dependencies a manifest takes from its workspace (``name.workspace = true``):
    all that ``parse_cargo`` reads of the workspace's dependencies."""
    doc = _toml(data)
    if doc is None:
        return ()
    return tuple(sorted({key for key, spec in _dependency_specs(doc)
                         if isinstance(spec, dict) and spec.get("workspace") is True}))


@dataclass(frozen=True)
class CrateNames:
    """How a package's crates are named in qualified names."""

    lib: str  # the library's crate name: `[lib] name`, else the package name, as an identifier
    package: str  # the package name as an identifier: the default binary's name
    has_lib: bool  # a `[lib]` section or a src/lib.rs; without one, src/ holds the binary
    bins: tuple[tuple[str, str], ...]  # `[[bin]]` (name as an identifier, normalised path in the package)


def cargo_crates(projects: Mapping[str, bytes | None], present: Iterable[str] | None = None) -> Mapping[str, CrateNames]:
    """Package directory -> how its crates are named, for each ``Cargo.toml`` in ``projects``
    (path -> bytes) that declares a package. ``present`` holds the paths of the tree's
    ``lib.rs`` files (None: every package is taken to have its library). A manifest is
    read and parsed when its package is first asked about: a commit names the files of
    a few packages, and a workspace holds many."""

    def package(path: str) -> Package | None:
        data = projects[path]
        return _package(path, data) if data is not None else None

    def has_bins(path: str) -> bool:
        data = projects[path]
        return data is not None and b"[[bin]]" in data

    return _Crates(projects, package, has_bins, None if present is None else frozenset(present))


def manifest_targets(path: str, data: bytes | None) -> tuple[Package | None, bool] | None:
    """All that ``cargo_crates`` reads of one manifest: its package (targets only) and
    whether it names a ``[[bin]]`` table; None when it cannot be read."""
    return None if data is None else (_package(path, data), b"[[bin]]" in data)


def crates_from_targets(targets: Mapping[str, tuple[Package | None, bool] | None],
                        present: Iterable[str]) -> Mapping[str, CrateNames]:
    """``cargo_crates`` of a tree from its manifests' ``manifest_targets`` (by path),
    without their bytes."""
    def value(path: str) -> tuple[Package | None, bool]:
        return targets[path] or (None, False)

    return _Crates(targets, lambda path: value(path)[0], lambda path: value(path)[1], frozenset(present))


class _Crates(Mapping):
    def __init__(self, paths: Iterable[str], package: Callable[[str], Package | None],
                 has_bins: Callable[[str], bool], libs: frozenset[str] | None):
        self._package = package  # manifest path -> its package (None: not a package)
        self._has_bins = has_bins  # manifest path -> whether it names a [[bin]] table
        self._libs = libs
        self._manifests = {posixpath.dirname(p): p for p in paths if posixpath.basename(p) == "Cargo.toml"}
        self._names: dict[str, CrateNames | None] = {}

    def __getitem__(self, directory: str) -> CrateNames:
        if directory not in self._names:
            pkg = self._package(self._manifests[directory])  # KeyError: no manifest there
            lib_rs = f"{directory}/src/lib.rs" if directory else "src/lib.rs"
            self._names[directory] = None if pkg is None else _names(pkg, self._libs is None or lib_rs in self._libs)
        names = self._names[directory]
        if names is None:
            raise KeyError(directory)  # not a package (a virtual manifest, not TOML)
        return names

    def __iter__(self) -> Iterator[str]:
        return (d for d in sorted(self._manifests) if self.get(d) is not None)

    def with_bins(self) -> Iterator[tuple[str, CrateNames]]:
        """The packages whose manifest has a ``[[bin]]`` table (the others are not parsed)."""
        for d in sorted(self._manifests):
            if self._has_bins(self._manifests[d]):
                names = self.get(d)
                if names is not None:
                    yield d, names

    def __len__(self) -> int:
        return sum(1 for _ in self)


@functools.lru_cache(maxsize=4096)
def _package(path: str, data: bytes) -> Package | None:
    """The package a manifest declares, as far as naming goes (its targets, not its
    dependencies): parsed from its [package], [lib] and [[bin]] tables only, so the many
    versions of a manifest that differ in dependencies alone are parsed once."""
    tables = _target_tables(data)
    if _toml(tables) is None:  # the tables alone do not parse (a string cut, say): the whole manifest
        return parse_cargo(path, data, {})
    return _targets(path, tables)


@functools.lru_cache(maxsize=4096)
def _targets(path: str, tables: bytes) -> Package | None:
    return parse_cargo(path, tables, {})


def _target_tables(data: bytes) -> bytes:
    """The lines of a manifest's [package], [lib] and [[bin]] tables."""
    keep, out = False, []
    for line in data.splitlines(keepends=True):
        head = line.lstrip()
        if head.startswith(b"["):
            keep = head.split(b"]", 1)[0].strip(b"[ \t") in (b"package", b"lib", b"bin")
        if keep:
            out.append(line)
    return b"".join(out)


@functools.lru_cache(maxsize=8192)
def _names(pkg: Package, lib_rs: bool) -> CrateNames:
    ident = lambda name: re.sub(r"[^0-9A-Za-z_]", "_", name)  # noqa: E731
    package = ident(pkg.name)
    declared = pkg.lib_path is not None or pkg.lib_name != package  # a [lib] path or name
    return CrateNames(lib=pkg.lib_name, package=package, has_lib=declared or lib_rs,
                      bins=tuple((ident(name), posixpath.normpath(path)) for name, path in pkg.bins))


def workspace_dependencies(data: bytes) -> dict[str, str]:
    """``[workspace.dependencies]`` renames: name -> package."""
    doc = _toml(data)
    if doc is None:
        return {}
    table = (doc.get("workspace") or {}).get("dependencies") if isinstance(doc.get("workspace"), dict) else None
    out = {}
    for key, spec in (table or {}).items():
        out[key] = spec["package"] if isinstance(spec, dict) and isinstance(spec.get("package"), str) else key
    return out


def workspace_root(data: bytes) -> tuple[bool, str | None]:
    """Whether a manifest is a workspace root (has a ``[workspace]`` table), and its
    ``[workspace.package] edition`` (what members' ``edition.workspace = true`` inherit)."""
    doc = _toml(data)
    ws = doc.get("workspace") if doc is not None else None
    if not isinstance(ws, dict):
        return False, None
    edition = ws["package"].get("edition") if isinstance(ws.get("package"), dict) else None
    return True, str(edition) if isinstance(edition, (str, int)) else None


# -- the index ---------------------------------------------------------------------------

def _edition(pkg: Package | None) -> str | None:
    """A package's edition as far as resolution goes: "2015", or None for 2018 and later
    (and for files outside any package)."""
    return "2015" if pkg is not None and pkg.edition == "2015" else None


_OWN_TARGETS = ("#tests:", "#examples:", "#benches:")


def _sibling_target(crate: str, name: str) -> str | None:
    """``tests/util.rs`` as module ``util`` of the test crate ``tests/misc.rs``. Each file
    of a package's tests/ (examples/, benches/) is a crate of its own here, yet it is also
    the module the crate root declares with ``mod util;``, as ``tests/common/mod.rs`` is
    for ``mod common;``, and one ``[[test]]`` root may hold all the others: its modules
    then reach each other as ``crate::util``."""
    for kind in _OWN_TARGETS:
        at = crate.find(kind)
        if at >= 0:
            return crate[:at + len(kind)] + name
    return None


def _read_by(table: str, key: Any, value: Any) -> tuple:
    """What a lookup reads when it reads one table entry (the deps of cached lookups):
    ("n", module, name) what a module defines or imports by name, its child modules
    and an enum's variants included; ("g", module) its glob imports; ("a", crate, type)
    a type's members. Besides the tables, lookups read ("l", lib name) and ("x", package
    dir, name) for crate names, and ("e", package dir) for its edition."""
    if table == "items":
        return ("n", key[0], key[1])
    if table == "modules":
        return ("n", key[:-1], key[-1])  # a lookup in the parent finds the child module
    if table == "uses":
        return ("g", key[0]) if key[1] == "*" else ("n", key[0], key[1])
    if table == "assoc":
        return ("a", key[0], key[1])
    if table == "variants":  # a glob import of the enum brings them: lookups read the enum
        return ("n", key[0], key[1])
    return ("macro", key)  # macros are looked up uncached


class RustIndex(MemoReferences):
    """Modules, items and imports of a Rust tree, updated file by file."""

    def __init__(self, module_path) -> None:
        # (path, crates) -> display module path (the unit qualname prefix), crates named
        # after their packages as the chunk stage names them
        self.module_path = module_path
        self._names: dict[str, CrateNames] | None = None  # package dir -> crate names (made on use)
        # changes whenever the module paths definitions are shown under (qualname prefixes)
        # may have changed: what is kept of ``definitions`` across updates must be keyed by it
        self.naming = 0
        self._prefixes: dict[str, str] = {}  # path -> its display module path, with _names
        self._static: dict[DefRef, tuple] = {}  # definition -> what references to it show (_static_of)
        self._roots: CrateRoots | None = None  # what crate roots declare, with _names
        self.files: dict[str, FileSymbols] = {}
        self.manifests: dict[str, bytes] = {}
        self.packages: dict[str, Package] = {}  # dir -> package
        self.overrides: dict[str, Mod] = {}  # #[path] targets
        self.file_mod: dict[str, Mod] = {}
        self.modules: dict[Mod, list[tuple[str, tuple[str, ...]]]] = {}
        self.items: dict[Mod, dict[str, list[DefRef]]] = {}
        self.uses: dict[Mod, dict[str, list[tuple[str, ...]]]] = {}  # module -> bound name or "*" -> paths
        self.assoc: dict[tuple[str, str], list[DefRef]] = {}
        self.macros: dict[str, list[DefRef]] = {}
        self.variants: dict[tuple[Mod, str, str], list[DefRef]] = {}  # (module, enum, variant) -> enums
        self.macro_use: dict[Mod, list[str]] = {}  # modules declared `#[macro_use]` -> declaring files
        self.lib_crates: dict[str, str] = {}  # lib name -> crate id
        self.crate_deps: dict[str, dict[str, str]] = {}  # crate id -> {name in code: crate id}
        # crate id -> (its package dir, _dependencies), made again with crate_deps (_crates)
        self._crate_info: dict[str, tuple[str, dict[str, str] | None]] = {}
        self.known: Counter[str] = Counter()  # every name a lookup can succeed on (a fast filter)
        self._crate_names: set[str] = set()
        self._manifest_cache: dict[tuple, Any] = {}
        # Resolution caches survive commits. Each entry records what it read (its deps, see
        # _read_by); an update drops the entries that read what it changed.
        self._resolved: dict[tuple[Mod, tuple[str, ...]], list[tuple[str, Any]]] = {}
        # path -> local qualname -> ((text, module) of the definition, related definitions)
        self._related_of: dict[str, dict[str, tuple[tuple, list[tuple[DefRef, int, str]]]]] = {}
        # (module, name) -> lookup targets; ((crate, "#members"), owner) -> _members
        self._cache: dict[tuple, Any] = {}
        self._deps: dict[tuple, frozenset] = {}  # entry -> what it read
        # what was read -> the distinct sets of reads that include it -> the entries with that set:
        # lookups of one scope read the same things, so an entry mostly joins an existing set
        self._dependents: defaultdict[tuple, set[frozenset]] = defaultdict(set)
        self._holders: dict[frozenset, set[tuple]] = {}
        # the entries being computed, innermost last: what each read, and the unfinished
        # lookups (of a cycle) it saw
        self._frames: list[tuple[set, set]] = []
        self._busy: set[tuple[Mod, str]] = set()  # lookups being computed (a cycle of imports)
        self._distances: dict[tuple[Mod, Mod], int] = {}  # module distance of two modules
        # by a data type's text (content: valid across commits), bounded by _kept
        self._members_of: dict[str, Members | None] = {}  # -> its members (_split)
        self._focus: dict[tuple[str, tuple[int, ...], int], str] = {}  # _focused's answers
        self._fields_of: dict[str, dict[str, tuple[tuple[str, ...], ...]]] = {}  # -> field_types
        # path -> (its summary, its module, _entries of the two): an update reads a file's old entries
        self._entry_sets: dict[str, tuple[FileSymbols, Mod, set[tuple]]] = {}

    # -- maintenance ---------------------------------------------------------------------
    def update(self, files: dict[str, FileSymbols | None], manifests: dict[str, bytes | None]) -> None:
        self.forget_references()
        self._static = {}
        dirty: set[tuple] = set()
        for path, syms in files.items():
            if syms is None:
                self._related_of.pop(path, None)
        packages_changed = False
        moved_dirs: set[str] = set()
        if manifests:
            apply_delta(self.manifests, manifests)
            packages = self._packages()
            if packages != self.packages:
                # files under a package that appeared, went or changed may be other modules now
                moved_dirs.update(d for d in packages.keys() | self.packages.keys()
                                  if packages.get(d) != self.packages.get(d))
                # a crate's edition decides where its `use` paths start (see _use_path)
                dirty.update(("e", d) for d in packages.keys() | self.packages.keys()
                             if _edition(packages.get(d)) != _edition(self.packages.get(d)))
                self.packages = packages
                packages_changed = True
        # what decides which module a file is: packages, crate roots, #[path] attributes
        for path, syms in files.items():
            if path.endswith(("src/lib.rs", "src/main.rs")) and (syms is None) != (path not in self.files):
                moved_dirs.add(posixpath.dirname(posixpath.dirname(path)))  # its package gains or loses a root
        remap = bool(moved_dirs)
        remap = remap or any(m[2] for p in files if p in self.files for m in self.files[p].mods)
        remap = remap or any(m[2] for syms in files.values() if syms for m in syms.mods)
        if packages_changed or any((syms is None) != (path not in self.files) for path, syms in files.items()):
            self._names = None  # a package or a file (a src/lib.rs) came or went
            self.naming += 1
        elif any(path.endswith(_ROOT_FILES) and _top_mods(syms) != _top_mods(self.files.get(path))
                 for path, syms in files.items()):
            self._names = None  # a crate root declares other file modules (RootModules)
            self.naming += 1
        before = {path: self._entries(path) for path in files if path in self.file_mod}
        for path, syms in files.items():
            if syms is None:
                self.files.pop(path, None)
                self.file_mod.pop(path, None)
                self._entry_sets.pop(path, None)
            else:
                self.files[path] = syms
        if packages_changed:
            old_libs, old_deps = self.lib_crates, self.crate_deps
            self._crates()
            for lib in set(old_libs) | set(self.lib_crates):
                if old_libs.get(lib) != self.lib_crates.get(lib):
                    dirty.add(("l", lib))  # a crate name now means another crate, or nothing
            for crate in set(old_deps) | set(self.crate_deps):
                was, now = old_deps.get(crate) or {}, self.crate_deps.get(crate) or {}
                if was != now:  # what a dependency's name means in the package changed
                    package = crate.split("#", 1)[0]
                    dirty.update(("x", package, name) for name in was.keys() | now.keys()
                                 if was.get(name) != now.get(name))
        if remap:
            overrides = self._overrides()
            moved = {t for t in overrides.keys() | self.overrides.keys() if overrides.get(t) != self.overrides.get(t)}
            self.overrides = overrides
            everywhere = "" in moved_dirs
            prefixes = tuple(d + "/" for d in moved_dirs if d)
            for path in self.files:
                if path in files or not (everywhere or path in moved or path.startswith(prefixes)):
                    continue  # module_of depends on the nearest package, its roots and #[path] targets
                if self.module_of(path) != self.file_mod.get(path):
                    old = self._entries(path)
                    self.file_mod[path] = self.module_of(path)
                    self._change(old, self._entries(path), dirty)
        for path, syms in files.items():
            if syms is not None:
                self.file_mod[path] = self.module_of(path)
            self._change(before.get(path, set()), self._entries(path) if syms is not None else set(), dirty)
        if len(self._deps) > _MAX_CACHED:
            self._clear_caches()
        else:
            self._invalidate(dirty)

    def _clear_caches(self) -> None:
        self._cache.clear()
        self._resolved.clear()
        self._related_of.clear()
        self._deps.clear()
        self._dependents.clear()
        self._holders.clear()

    def _invalidate(self, dirty: set[tuple]) -> None:
        dependents, deps, holders = self._dependents, self._deps, self._holders
        for token in dirty:
            entries = [entry for read in dependents.pop(token, ()) for entry in holders.pop(read, ())]
            for entry in entries:
                if deps.pop(entry, None) is None:
                    continue  # dropped already
                table = entry[0]
                if table == "L":
                    self._cache.pop(entry[1], None)
                elif table == "R":
                    self._resolved.pop(entry[1], None)
                else:
                    per_file = self._related_of.get(entry[1])
                    if per_file is not None:
                        per_file.pop(entry[2], None)

    # -- dependency tracking of cached entries ---------------------------------------------
    def _read(self, token: tuple) -> None:
        if self._frames:
            self._frames[-1][0].add(token)

    def _reuse(self, entry: tuple) -> None:
        """A cached entry is used while computing another: the other read what it read."""
        if self._frames:
            self._frames[-1][0].update(self._deps.get(entry, ()))

    def _store(self, entry: tuple, frame: set, unfinished: set) -> bool:
        """Record a computed entry's deps (and pass them to the enclosing computation);
        False when it is not cacheable: it saw an unfinished lookup of a cycle (other than
        itself) or the depth limit, so its value depends on how it was reached."""
        if self._frames:
            outer = self._frames[-1]
            outer[0].update(frame)
            outer[1].update(unfinished)
        if unfinished:
            return False
        deps = frozenset(frame)
        self._deps[entry] = deps
        holders = self._holders.get(deps)
        if holders is not None:
            holders.add(entry)
            return True
        self._holders[deps] = {entry}
        # each token it read gets the new set: in C (a set of ~20 tokens, 100,000 times a run)
        deque(map(set.add, map(self._dependents.__getitem__, deps), repeat(deps)), 0)
        return True

    def _packages(self) -> dict[str, Package]:
        """The packages of the tree's manifests. It runs again whenever a manifest changes,
        over all of them (a workspace of hundreds of crates): what it reads of each
        manifest is kept by content, and each package by its manifest, its workspace's
        edition and the entries of the workspace's dependencies it inherits."""
        memo = self._manifest_cache
        ws: dict[str, str] = {}
        roots: dict[str, str | None] = {}  # workspace root dir -> its [workspace.package] edition
        inherits: dict[str, tuple[str, ...]] = {}  # manifest path -> the dependencies it inherits
        for path, data in self.manifests.items():
            key = ("ws", data)
            hit = memo.get(key)
            if hit is None:
                hit = memo[key] = (workspace_dependencies(data), workspace_root(data), inherited_dependencies(data))
            inherits[path] = hit[2]
            ws.update(hit[0])
            is_root, edition = hit[1]
            if is_root:
                roots[posixpath.dirname(path)] = edition
        out = {}
        for path, data in sorted(self.manifests.items()):
            d = posixpath.dirname(path)
            while d not in roots and d:  # the nearest workspace root holding the package
                d = posixpath.dirname(d)
            pkey = (path, data, roots.get(d), tuple(ws.get(name) for name in inherits[path]))
            pkg = memo.get(pkey, memo)
            if pkg is memo:
                pkg = memo[pkey] = parse_cargo(path, data, ws, roots.get(d))
            if pkg is not None:
                out[pkg.dir] = pkg
        if len(memo) > 65536:
            memo.clear()
        return out

    def _overrides(self) -> dict[str, Mod]:
        """``#[path]`` targets -> their modules (declaring files mapped by convention)."""
        saved, self.overrides = self.overrides, {}
        try:
            out: dict[str, Mod] = {}
            for path, syms in self.files.items():
                for scope, name, attr in syms.mods:
                    if attr:
                        target = posixpath.normpath(posixpath.join(posixpath.dirname(path), *scope, attr))
                        out[target] = self.module_of(path) + scope + (name,)
            return out
        finally:
            self.overrides = saved

    def _crates(self) -> None:
        """Crate names and dependency renames from the packages."""
        self.lib_crates = {}
        self.crate_deps = {}
        self._crate_info = {}
        by_name = {p.name: p for p in self.packages.values()}
        for pkg in self.packages.values():
            self.lib_crates[pkg.lib_name] = f"{pkg.dir}#lib"
        for pkg in self.packages.values():
            deps = {}
            for code_name, package in pkg.deps:
                target = by_name.get(package)
                if target is not None:
                    deps[code_name] = f"{target.dir}#lib"
            deps[pkg.lib_name] = f"{pkg.dir}#lib"
            for target_id in (f"{pkg.dir}#lib", f"{pkg.dir}#bin"):
                self.crate_deps[target_id] = deps
        self._crate_names = set(self.lib_crates) | {n for d in self.crate_deps.values() for n in d}

    def module_of(self, path: str) -> Mod:
        """The module a file is, from Cargo targets and file-path conventions."""
        hit = self.overrides.get(path)
        if hit is not None:
            return hit
        d = posixpath.dirname(path)
        pkg = None
        while True:
            pkg = self.packages.get(d)
            if pkg is not None or not d:
                break
            d = posixpath.dirname(d)
        if pkg is None:  # no Cargo.toml: the directory holding `src` is the crate
            parts = path.split("/")
            if "src" in parts[:-1]:
                i = len(parts) - 2 - parts[:-1][::-1].index("src")
                crate, inner = f"?{'/'.join(parts[:i])}#lib", parts[i + 1:]
                return (crate,) if inner in (["lib.rs"], ["main.rs"]) else (crate, *_mod_names(inner))
            names = [p for p in self.module_path(path).split("::") if p]
            return (f"?{names[0]}" if names else "?", *names[1:])
        rel = path[len(pkg.dir) + 1:] if pkg.dir else path
        parts = rel.split("/")
        stem = parts[-1].rsplit(".", 1)[0]
        if pkg.lib_path and posixpath.normpath(pkg.lib_path) == rel:
            return (f"{pkg.dir}#lib",)
        for bname, bpath in pkg.bins:
            if posixpath.normpath(bpath) == rel:
                return (f"{pkg.dir}#bin:{bname}",)
        if parts[0] == "src" and len(parts) > 1:
            inner = parts[1:]
            if inner[0] == "bin" and len(inner) > 1:
                name = inner[1].rsplit(".", 1)[0]
                crate, inner = f"{pkg.dir}#bin:{name}", inner[2:]
                if inner and inner[-1] == "main.rs":
                    inner = inner[:-1]
                return (crate, *_mod_names(inner))
            has_lib = pkg.lib_path is not None or f"{pkg.dir + '/' if pkg.dir else ''}src/lib.rs" in self.files
            if inner == ["main.rs"] and has_lib:
                return (f"{pkg.dir}#bin",)
            crate = f"{pkg.dir}#lib" if has_lib else f"{pkg.dir}#bin"
            if inner in (["lib.rs"], ["main.rs"]):
                return (crate,)
            return (crate, *_mod_names(inner))
        if parts[0] in ("tests", "examples", "benches") and len(parts) > 1:
            return (f"{pkg.dir}#{parts[0]}:{parts[1].rsplit('.', 1)[0]}", *_mod_names(parts[2:]))
        # under the directory of a target with its own path (`[lib] path`, `[[bin]] path =
        # "crates/core/main.rs"`): a module of that target, the deepest directory first
        roots = [(posixpath.dirname(posixpath.normpath(bpath)), f"{pkg.dir}#bin:{bname}") for bname, bpath in pkg.bins]
        if pkg.lib_path:
            roots.append((posixpath.dirname(posixpath.normpath(pkg.lib_path)), f"{pkg.dir}#lib"))
        for base, crate in sorted(roots, key=lambda r: -len(r[0])):
            if base and rel.startswith(base + "/"):
                return (crate, *_mod_names(rel[len(base) + 1:].split("/")))
        return (f"{pkg.dir}#lib", *_mod_names(parts)) if stem not in ("build",) else (f"{pkg.dir}#build",)

    def _entries(self, path: str) -> set[tuple]:
        """What one file puts in the tables, as (table, key, value, name a lookup can now
        succeed on or None, what lookups read of the definition)."""
        syms, mod = self.files[path], self.file_mod[path]
        kept = self._entry_sets.get(path)
        if kept is not None and kept[0] is syms and kept[1] == mod:
            return kept[2]  # callers only compare entry sets, never change them
        crate = mod[0]
        out: set[tuple] = set()
        for scope in syms.scopes:
            key = mod + scope
            out.add(("modules", key, (path, scope), key[-1], None))
        for d in syms.defs:
            ref = (path, d.local)
            if d.owner is not None:
                out.add(("assoc", (crate, d.owner), ref, None, (d.kind, d.name)))
                if d.kind == "impl":
                    continue
            if d.kind == "macro":
                out.add(("macros", d.name, ref, d.name, None))
            if d.owner is None:
                out.add(("items", (mod + d.scope, d.name), ref, d.name, d.kind))
                if d.kind == "enum":  # what its glob imports bring (variant names can be looked up)
                    out.update(("variants", (mod + d.scope, d.name, v), ref, v, None) for v in d.members)
        for scope, segs, bound in syms.uses:
            out.add(("uses", (mod + scope, bound), segs, bound if bound != "*" else None, None))
        for scope in syms.macro_use:
            out.add(("macro_use", mod + scope, path, None, None))
        self._entry_sets[path] = (syms, mod, out)
        return out

    def _change(self, old: set[tuple], new: set[tuple], dirty: set[tuple]) -> None:
        """Replace one file's entries ``old`` by ``new``; what lookups read of the entries
        that differ goes to ``dirty``."""
        if old == new:
            return
        known = self.known
        for entry in old - new:
            table, key, value, name, _ = entry
            bucket = self._bucket(table, key, False)
            if bucket is not None and value in bucket:
                bucket.remove(value)
                if not bucket:  # an empty bucket must not look like a module or name that exists
                    self._drop_bucket(table, key)
            if name is not None:
                known[name] -= 1
                if known[name] <= 0:
                    del known[name]
            dirty.add(_read_by(table, key, value))
        for entry in new - old:
            table, key, value, name, _ = entry
            self._bucket(table, key, True).append(value)  # type: ignore[union-attr]
            if name is not None:
                known[name] += 1
            dirty.add(_read_by(table, key, value))

    def _bucket(self, table_name: str, key: Any, create: bool) -> list | None:
        table = getattr(self, table_name)
        if table_name in ("items", "uses"):  # keyed by module, then name
            names = table.setdefault(key[0], {}) if create else table.get(key[0], {})
            return names.setdefault(key[1], []) if create else names.get(key[1])
        return table.setdefault(key, []) if create else table.get(key)

    def _drop_bucket(self, table_name: str, key: Any) -> None:
        table = getattr(self, table_name)
        if table_name in ("items", "uses"):
            names = table.get(key[0])
            if names is not None:
                names.pop(key[1], None)
                if not names:
                    del table[key[0]]
        else:
            table.pop(key, None)

    # -- resolution ----------------------------------------------------------------------
    def definition(self, ref: DefRef) -> Def:
        return self.files[ref[0]].by_local()[ref[1]]

    def _dependencies(self, crate: str) -> dict[str, str] | None:
        """The dependencies of a crate (name in code -> crate id): its package's, for a
        binary, test or example crate without a table of its own."""
        deps = self.crate_deps.get(crate.split(":", 1)[0] if "#bin:" in crate else crate)
        if deps is None and "#" in crate:
            deps = self.crate_deps.get(crate.split("#", 1)[0] + "#lib")
        return deps

    def _extern(self, crate: str, name: str) -> str | None:
        known = self._crate_info.get(crate)
        if known is None:
            known = self._crate_info[crate] = (crate.split("#", 1)[0], self._dependencies(crate))
        package, deps = known
        self._read(("x", package, name))
        if deps is not None and name in deps:
            return deps[name]
        self._read(("l", name))
        return self.lib_crates.get(name)

    def lookup(self, mod: Mod, name: str, depth: int = 0) -> list[tuple[str, Any]]:
        """What ``name`` means in module ``mod``: ("def", DefRef) and ("mod", Mod) targets.

        What the module defines or imports by name comes first; only when that finds
        nothing do glob imports count: every module the globs reach (breadth first, each
        once, a cycle of globs included) adds what it defines or imports by name, and one
        that has nothing passes on its own globs, unless it imports the name from std."""
        key = (mod, name)
        hit = self._cache.get(key)
        if hit is not None:
            self._reuse(("L", key))
            return hit
        if key in self._busy or depth >= MAX_DEPTH:
            # a path that leads back to itself (or a chain too long) resolves to nothing
            # here; what is computed from that is not cached
            if self._frames:
                self._frames[-1][1].add(key if key in self._busy else "depth")
            return []
        frame: set[tuple] = set()
        unfinished: set = set()
        self._frames.append((frame, unfinished))
        self._busy.add(key)
        try:
            out = self._named(mod, name, depth)
            if not out and not self._binds_std(mod, name):  # a name imported from std shadows globs
                seen, queue = {mod}, [mod]
                while queue:
                    for kind, target in self._globs(queue.pop(0), depth):
                        if kind == "def":
                            if name in self.definition(target).members:
                                out.append((kind, target))  # `use Enum::*` brings its variants
                        elif target not in seen:
                            seen.add(target)
                            done = self._cache.get((target, name))
                            if done is not None:  # all it reaches is in there
                                self._reuse(("L", (target, name)))
                                out += done
                                continue
                            found = self._named(target, name, depth + 1)
                            if found:
                                out += found
                            elif not self._binds_std(target, name):
                                # it imports the name from std, which shadows what its globs bring
                                queue.append(target)
        finally:
            self._busy.discard(key)
            self._frames.pop()
        unfinished.discard(key)  # its own cycle closes here
        if len(out) > 1:  # one order whatever the tables' order; a definition reached twice once
            out = sorted(set(out))
        if self._store(("L", key), frame, unfinished):
            self._cache[key] = out
        return out

    def _named(self, mod: Mod, name: str, depth: int) -> list[tuple[str, Any]]:
        """What ``mod`` defines or imports as ``name`` (globs aside)."""
        self._read(("n", mod, name))
        out: list[tuple[str, Any]] = [("def", r) for r in self.items.get(mod, {}).get(name, ())]
        if mod + (name,) in self.modules:
            out.append(("mod", mod + (name,)))
        if not out:
            for segs in self.uses.get(mod, _NO_USES).get(name, ()):
                out += self._use_path(mod, segs, depth + 1)
        if not out:
            crate = self._extern(mod[0], name)
            if crate is not None:
                out.append(("mod", (crate,)))
        if not out and len(mod) == 1:
            sibling = _sibling_target(mod[0], name)
            if sibling is not None:
                self._read(("n", (), sibling))
                if (sibling,) in self.modules:
                    out.append(("mod", (sibling,)))
        return out

    def _binds_std(self, mod: Mod, name: str) -> bool:
        """Whether a ``use`` of ``mod`` binds ``name`` to something of the standard library
        (read with the name: see _named)."""
        return any(segs[0] in _STD_CRATES for segs in self.uses.get(mod, _NO_USES).get(name, ()))

    def _globs(self, mod: Mod, depth: int) -> list[tuple[str, Any]]:
        """Where the glob imports of ``mod`` lead: modules, and enums (their variants)."""
        key = (mod, "*")
        hit = self._cache.get(key)
        if hit is not None:
            self._reuse(("L", key))
            return hit
        if key in self._busy:
            if self._frames:
                self._frames[-1][1].add(key)
            return []
        frame: set[tuple] = {("g", mod)}
        unfinished: set = set()
        self._frames.append((frame, unfinished))
        self._busy.add(key)
        try:
            out = []
            for segs in self.uses.get(mod, _NO_USES).get("*", ()):
                for kind, target in self._use_path(mod, segs, depth + 1):
                    if kind == "mod" or self.definition(target).kind == "enum":
                        out.append((kind, target))
        finally:
            self._busy.discard(key)
            self._frames.pop()
        unfinished.discard(key)
        if self._store(("L", key), frame, unfinished):
            self._cache[key] = out
        return out

    def resolve(self, mod: Mod, segs: tuple[str, ...], depth: int = 0) -> list[tuple[str, Any]]:
        """What path ``segs`` means in module ``mod``."""
        if len(segs) == 1 and segs[0] not in _USE_STARTS:
            # a single name is its lookup, which is cached with its deps already: a path entry
            # of its own would repeat it (most paths a unit names are single names)
            return self.lookup(mod, segs[0], depth)
        if depth == 0:
            key = (mod, segs)
            hit = self._resolved.get(key)
            if hit is not None:
                self._reuse(("R", key))
                return hit
            frame: set[tuple] = set()
            unfinished: set = set()
            self._frames.append((frame, unfinished))
            try:
                hit = self._resolve(mod, segs, 0)
            finally:
                self._frames.pop()
            if self._store(("R", key), frame, unfinished):
                self._resolved[key] = hit
            return hit
        return self._resolve(mod, segs, depth)

    def _use_path(self, mod: Mod, segs: tuple[str, ...], depth: int) -> list[tuple[str, Any]]:
        """What the path of a ``use`` declaration in ``mod`` means. In a crate of the 2015
        edition it starts at the crate root (``use a::B`` is ``crate::a::B``, and so is
        ``use ::a::B``); when that finds nothing, and in later editions, it is resolved in
        ``mod`` as other paths are."""
        if len(mod) > 1 and segs[0] not in _USE_STARTS:
            package = mod[0].split("#", 1)[0]
            self._read(("e", package))
            if _edition(self.packages.get(package)) == "2015":
                hit = self.resolve(mod[:1], segs, depth)
                if hit:
                    return hit
        return self.resolve(mod, segs, depth)

    def _resolve(self, mod: Mod, segs: tuple[str, ...], depth: int) -> list[tuple[str, Any]]:
        first = segs[0]
        if first == "crate":
            cur: list[tuple[str, Any]] = [("mod", mod[:1])]
        elif first == "self":
            cur = [("mod", mod)]
        elif first == "super":
            cur = [("mod", mod[:-1] if len(mod) > 1 else mod)]
        else:
            cur = self.lookup(mod, first, depth)
        for seg in segs[1:]:
            nxt: list[tuple[str, Any]] = []
            for kind, target in cur:
                if kind == "mod":
                    if seg == "super":
                        nxt.append(("mod", target[:-1] if len(target) > 1 else target))
                    elif seg != "self":
                        nxt += self.lookup(target, seg, depth + 1)
                    else:
                        nxt.append((kind, target))
                else:
                    d = self.definition(target)
                    if d.kind in TYPE_KINDS:
                        crate = self.file_mod.get(target[0], ("",))[0]
                        self._read(("a", crate, d.name))
                        members = [r for r in sorted(self.assoc.get((crate, d.name), ()))
                                   if self.definition(r).name == seg]
                        nxt += [("def", r) for r in members] or [("def", target)]
            cur = nxt
            if not cur:
                break
        return cur

    def _scope_of(self, mod: Mod, local: str) -> Mod:
        parts = local.split("#", 1)[0].split("::")[:-1]
        best = mod
        for i in range(1, len(parts) + 1):
            if mod + tuple(parts[:i]) in self.modules:
                best = mod + tuple(parts[:i])
            else:
                break
        return best

    def _references(self, q: UnitQuery, related: bool) -> list[Reference]:
        base = self.file_mod.get(q.path) or self.module_of(q.path)
        mod = self._scope_of(base, q.local_qualname)
        code = _STRIP.sub(" ", q.code)
        own = _DECL_NAME.search(code)
        if own is not None and own.group(1) == q.local_qualname.split("#", 1)[0].rsplit("::", 1)[-1]:
            # the unit's own name (`fn parse` of `Parser::parse`) names nothing else, such as a
            # free `parse` of its module
            code = code[:own.start(1)] + " " * len(own.group(1)) + code[own.end(1):]
        scan = code if not q.header else q.header + "\n" + code
        if "type" in scan or "const" in scan:
            scan = _DECLARED.sub(r"\1", scan)  # `type Error = …;` declares Error, it names no other Error
        local_uses: dict[str, tuple[str, ...]] = {}
        for m in _LOCAL_USE.finditer(code) if "use" in code else ():
            for segs, bound in _bindings("use " + m.group(1) + ";"):
                if bound != "*":
                    local_uses[bound] = segs
        known, crates, starts = self.known, self._crate_names, _PATH_STARTS
        found: Counter[tuple[str, str]] = Counter(_PATH.findall(scan))
        paths: Counter[tuple[tuple[str, ...], bool]] = Counter()
        for (text, bang), count in found.items():
            if text == "_":
                continue  # `let _`, `_ =>`, `const _`: never a definition's name
            if "::" in text:
                segs = tuple(s.strip() for s in text.split("::"))
                first = segs[0]
                if first not in known and first not in starts and first not in crates and first not in local_uses:
                    continue
            else:
                if text not in known and text not in local_uses:
                    continue  # a local variable, a field, std: nothing in the repository has that name
                segs = (text,)
            paths[(segs, bool(bang))] += count
        self_type = _owner(q.header.split(" for ", 1)[-1].split(" where ", 1)[0])[0] if q.header else None
        impl_prefix = q.local_qualname.rsplit("::", 1)[0] + "::"  # a method's impl, as its items are named
        direct: dict[DefRef, list] = {}
        for (segs, is_macro), count in paths.items():
            if is_macro:
                targets: list[tuple[str, Any]] = [("def", r) for r in self._macro(mod, segs)]
                why = f"{segs[-1]}!"
            else:
                own_impl = segs[0] == "Self" and self_type and len(segs) > 1
                if segs[0] == "Self" and self_type:
                    segs = (self_type, *segs[1:])
                path_of: Callable[[Mod, tuple[str, ...], int], list[tuple[str, Any]]] = self.resolve
                if segs[0] in local_uses:  # a `use` in the unit's body: a `use` path
                    segs = local_uses[segs[0]] + segs[1:]
                    path_of = self._use_path
                targets = path_of(mod, segs, 0)
                if own_impl and len(targets) > 1:
                    # `Self::Item` in an impl is that impl's item, not the one of another impl of the type
                    mine = [t for t in targets if t[0] == "def" and t[1][0] == q.path
                            and t[1][1].startswith(impl_prefix)]
                    targets = mine or targets
                if len(segs) > 1 and targets:  # `Type::new` names Type too
                    targets = targets + [t for t in path_of(mod, segs[:-1], 0) if t[0] == "def"]
                why = "::".join(segs)
            for kind, ref in targets:
                if kind == "def" and not self._is_self(ref, q):
                    entry = direct.setdefault(ref, [0, why])
                    entry[0] += count
        out = [self._reference(ref, count, "direct", why, mod) for ref, (count, why) in direct.items()]
        words: set[str] | None = None
        for r, ref in zip(out, direct):
            if r.short:  # a data type cut to its leading members: show those the unit names
                if words is None:
                    words = set(_WORD.findall(code))
                r.text = self._focused(ref, r.text, words)
        if not related:
            return out
        # methods called on the types the unit names (as `impl Type { fn sig; }`), and on the
        # types of the fields of `Self` it uses (`self.store.get()`); impl blocks of those
        # types for calls that match no single method (a method of several impls)
        calls = set(_METHOD_CALL.findall(code))
        seen = set(direct)
        typed: list[tuple[DefRef, str]] = []  # the types declared by the fields of `Self` the unit uses
        fields: Counter[str] = Counter(_SELF_FIELD.findall(code)) if self_type and "self" in code else Counter()
        if fields:
            typed = [(r, name) for r, name in self._field_types(mod, self_type, fields) if r not in direct]
        if calls:
            for ref in dict.fromkeys([*direct, *(r for r, _ in typed)]):
                d = self.definition(ref)
                if d.kind not in TYPE_KINDS:
                    continue
                methods, impls = self._members(self.file_mod.get(ref[0], ("",))[0], d.name)
                # a member is one method's: the order of calls does not change what is found
                for call in calls & methods.keys() if methods else ():
                    for member in methods[call]:
                        if member not in seen and not self._is_self(member, q):
                            seen.add(member)
                            out.append(self._reference(member, 1, "method", f".{call}()", mod))
                for member in impls:
                    md = self.definition(member)
                    if member not in seen and not self._is_self(member, q) and calls.intersection(md.members) and not any(
                            m in seen for c in calls.intersection(md.members) for m in methods.get(c, ())):
                        seen.add(member)
                        out.append(self._reference(member, 1, "impl", f"impl of {d.name}", mod))
        # the types of the fields of `Self` it uses (`self.config.limit`: the Config), as often
        # as it uses them; types named in the signatures and fields of what the unit names
        for r2, name in typed:
            if r2 not in seen and not self._is_self(r2, q):
                seen.add(r2)
                out.append(self._reference(r2, fields[name], "related", f"type of self.{name}", mod))
        for ref in list(direct)[:16]:
            for r2, count, why in self._related(ref):
                if r2 not in seen and not self._is_self(r2, q):
                    seen.add(r2)
                    out.append(self._reference(r2, count, "related", why, mod))
        return out

    def _field_types(self, mod: Mod, type_name: str, fields: Iterable[str]) -> list[tuple[DefRef, str]]:
        """The definitions of the types named in the declared types of ``fields`` of the
        struct ``type_name`` means in ``mod`` (``Arc<RwLock<Store>>``: ``Store``, and
        ``Arc`` if the repository defines one), each with its field."""
        out: list[tuple[DefRef, str]] = []
        for kind, ref in self.resolve(mod, (type_name,)):
            if kind != "def":
                continue
            d = self.definition(ref)
            if d.kind not in ("struct", "union"):
                continue
            declared = _kept(self._fields_of, d.full or d.text, lambda d=d: field_types(self._split(d)))
            dmod = self.file_mod.get(ref[0], ("",)) + d.scope
            for name in fields:
                for segs in declared.get(name, ()):
                    out += [(r, name) for k, r in self.resolve(dmod, segs)
                            if k == "def" and self.definition(r).kind in TYPE_KINDS]
        return out

    def _focused(self, ref: DefRef, text: str, words: set[str]) -> str:
        """A long data type's ``text`` (its leading members) showing first the members named
        in ``words`` (a unit's code: `self.field`, `Enum::Variant`, a struct literal), in no
        more characters."""
        d = self.definition(ref)
        parts = self._split(d)
        if parts is None:
            return text
        wanted = tuple(k for k, name in enumerate(parts.names) if name in words)
        if not wanted:
            return text
        # methods of one type name the same fields, commit after commit
        return _kept(self._focus, (d.full, wanted, len(text)), lambda: select_members(
            parts, "variants" if d.kind == "enum" else "fields", len(text), wanted) or text)

    def _split(self, d: Def) -> Members | None:
        """``split_members`` of a data type's text without docs (``full`` when it was cut),
        kept by that text: ``_focused`` and ``_field_types`` read the same types."""
        return _kept(self._members_of, d.full or d.text, lambda: split_members(d.full or _without_docs(d.text)))

    def _related(self, ref: DefRef) -> list[tuple[DefRef, int, str]]:
        """Definitions of the types named in one definition's skeleton (cached with lookups)."""
        per_file = self._related_of.setdefault(ref[0], {})
        d = self.definition(ref)
        dmod = self.file_mod.get(ref[0], ("",)) + d.scope
        stamp = (d.text, dmod)  # a definition's text or module may change with its entries kept
        kept = per_file.get(ref[1])
        hit = kept[1] if kept is not None and kept[0] == stamp else None
        if hit is None:
            # a data type cut to its leading fields: from its signature, as before it showed any
            # (the types of the fields a unit uses come with their methods, see _field_types)
            names = Counter(m.group(1) for m in _PATH.finditer(_DECLARED.sub(r"\1", _STRIP.sub(" ", d.short or d.text)))
                            if m.group(1).rpartition(":")[2].strip()[:1].isupper() and m.group(1) != d.name)
            hit = []
            frame: set[tuple] = set()
            unfinished: set = set()
            self._frames.append((frame, unfinished))
            try:
                for name, count in names.items():
                    for kind, r2 in self.resolve(dmod, tuple(s.strip() for s in name.split("::"))):
                        if kind == "def" and r2 != ref:
                            hit.append((r2, count, f"in {d.name}"))
            finally:
                self._frames.pop()
            # what it resolved is in its deps; its own text and module are in the stamp
            if self._store(("X", ref[0], ref[1]), frame, unfinished):
                per_file[ref[1]] = (stamp, hit)
        return hit

    def _members(self, crate: str, owner: str) -> tuple[dict[str, list[DefRef]], list[DefRef]]:
        """Methods by name and impl blocks of a type (or trait), cached with lookups."""
        key = ((crate, "#members"), owner)
        hit: Any = self._cache.get(key)
        if hit is None:
            methods: dict[str, list[DefRef]] = {}
            impls: list[DefRef] = []
            for member in sorted(self.assoc.get((crate, owner), ())):
                md = self.definition(member)
                if md.kind == "method":
                    methods.setdefault(md.name, []).append(member)
                elif md.kind == "impl":
                    impls.append(member)
            hit = (methods, impls)
            if self._store(("L", key), {("a", crate, owner)}, set()):
                self._cache[key] = hit
        return hit

    def _macro(self, mod: Mod, segs: tuple[str, ...]) -> list[DefRef]:
        """The ``macro_rules!`` definitions ``segs!`` can mean in module ``mod``: of its own
        crate, those whose textual scope holds ``mod`` (the defining module and the modules
        in it, widened to the parent by ``#[macro_use] mod``), the innermost first, else its
        ``#[macro_export]`` ones; then exported ones of the crates it depends on. ``a::m!``
        names an exported macro of crate ``a`` (or ``crate``). Nothing else: std's macros
        and macros of crates outside the repository are not guessed."""
        refs = self.macros.get(segs[-1])
        if not refs:
            return []
        crate = mod[0]
        if len(segs) > 1:
            owner = crate if segs[0] in ("crate", "$crate") else self._extern(crate, segs[0])
            return sorted(r for r in refs if self.definition(r).exported
                          and self.file_mod.get(r[0], ("",))[0] == owner)
        scoped: list[tuple[int, DefRef]] = []
        exported: list[DefRef] = []
        from_deps: list[DefRef] = []
        deps = self._dep_crates(crate)
        for ref in sorted(refs):
            where = self.file_mod.get(ref[0])
            if where is None:
                continue
            d = self.definition(ref)
            if where[0] == crate:
                root = self._macro_scope(where + d.scope)
                if mod[:len(root)] == root:
                    scoped.append((len(root), ref))
                elif d.exported:
                    exported.append(ref)
            elif d.exported and where[0] in deps:
                from_deps.append(ref)
        if scoped:
            innermost = max(n for n, _ in scoped)
            return [ref for n, ref in scoped if n == innermost]
        return exported or from_deps

    def _macro_scope(self, module: Mod) -> Mod:
        """Where macros defined in ``module`` can be named: the module itself, or its parent
        (and further up) while the module is declared ``#[macro_use]``."""
        while len(module) > 1 and self.macro_use.get(module):
            module = module[:-1]
        return module

    def _dep_crates(self, crate: str) -> set[str]:
        out = set((self._dependencies(crate) or {}).values())
        if "#" in crate and not crate.endswith("#lib"):
            out.add(crate.split("#", 1)[0] + "#lib")  # a package's binaries, tests and examples use its library
        return out

    def _is_self(self, ref: DefRef, q: UnitQuery) -> bool:
        """The unit itself, a unit it contains, one containing it, or its twin: a
        definition of the same kind and local name but for the ``#n`` (the other branch of
        ``#[cfg(…)] fn f`` / ``#[cfg(not(…))] fn f``, a ``macro_rules!`` defined twice)."""
        if ref[0] != q.path:
            return False
        d = self.definition(ref)
        local, own = d.local, q.local_qualname
        if local == own or local.startswith(own + "::"):
            return True
        if (d.kind != "impl" and local.split("#", 1)[0] == own.split("#", 1)[0]
                and self._kind_of(q) in (d.kind, None)):
            return True  # a twin (impls of a type share its name, and each other's, without being twins)
        if "#" in own and local.startswith(own.split("#", 1)[0] + "::") and q.lines is not None:
            # a member of the unit, a numbered impl (`Thing#2` holds `Thing::walk`): by its lines
            return q.lines[0] <= d.lines[0] and d.lines[1] <= q.lines[1]
        if d.kind == "impl":
            # its methods are named after its target (`Thing::walk` in `Thing#2`): of a type's
            # impls in the file, the one whose lines hold the unit
            return own.startswith(local.split("#", 1)[0] + "::") and (
                q.lines is None or (d.lines[0] <= q.lines[1] and q.lines[0] <= d.lines[1]))
        # a type shares its name with its inherent impl, but only the impl holds the methods
        return d.kind in _CONTAINER_KINDS and own.startswith(local + "::")

    def _kind_of(self, q: UnitQuery) -> str | None:
        """The unit's kind: from the version of its file it comes from, else from the index."""
        if q.parsed is not None:
            for u in q.parsed.units:
                if u.local_qualname == q.local_qualname:
                    return u.kind
        syms = self.files.get(q.path)
        d = syms.by_local().get(q.local_qualname) if syms is not None else None
        return d.kind if d is not None else None

    def _reference(self, ref: DefRef, count: int, tier: str, why: str, mod: Mod) -> Reference:
        static = self._static.get(ref)
        if static is None:
            static = self._static[ref] = self._static_of(ref)
        path, qualname, kind, text, name, dmod, short = static
        distance = self._distances.get((mod, dmod))
        if distance is None:
            common = 0
            for a, b in zip(mod, dmod):
                if a != b:
                    break
                common += 1
            distance = (len(mod) - common) + (len(dmod) - common) + (4 if common == 0 else 0)
            if len(self._distances) > 65536:
                self._distances.clear()
            self._distances[(mod, dmod)] = distance
        return Reference(path, qualname, kind, text, count, distance, tier, why, name, short)

    def _static_of(self, ref: DefRef) -> tuple[str, str, str, str, str, Mod, str]:
        """What a reference to a definition shows whoever names it (kept until the next
        update: units of one commit name the same definitions)."""
        d = self.definition(ref)
        if self._names is None:
            self._names = {pkg.dir: _names(pkg, f"{pkg.dir + '/' if pkg.dir else ''}src/lib.rs" in self.files)
                           for pkg in self.packages.values()}
            self._roots = CrateRoots(lambda path: _top_mods(self.files.get(path)))
            self._prefixes = {}
        prefix = self._prefixes.get(ref[0])
        if prefix is None:
            prefix = self._prefixes[ref[0]] = self.module_path(ref[0], self._names, roots=self._roots)
        return (ref[0], f"{prefix}::{d.local}" if prefix else d.local, d.kind, d.text, d.name,
                self.file_mod.get(ref[0], ("",)), d.short)

    def definitions(self, path: str) -> list[Reference]:
        """Every definition of one file (for strategies that rank whole files)."""
        syms = self.files.get(path)
        if syms is None:
            return []
        mod = self.file_mod.get(path, ("",))
        return [self._reference((path, d.local), 0, "file", "defined", mod) for d in syms.defs]


# a `mod name;` declaration, what may come before it on its line for it to be a top-level
# one (searched from the literal "mod", which the regex engine finds fast, then checked
# from the line's start), and one of the attribute or comment lines that lead into it
_MOD_DECL = re.compile(rb"mod[ \t]+(?:r#)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*;")
_MOD_PREFIX = re.compile(rb"(?:pub(?:\([^)\n]*\))?[ \t]+)?")
_LEAD_LINE = re.compile(rb"(?:#!?\[[^\n]*\]|//[^\n]*)[ \t]*\r?")
_PATH_ATTR_BYTES = re.compile(rb'#\[\s*path\s*=\s*"([^"]+)"\s*\]')


@functools.lru_cache(maxsize=4096)
def root_declarations(source: bytes) -> tuple[tuple[str, str | None], ...]:
    """The file modules a crate root declares at its top level: (name, ``#[path]`` or None).

    The attribute and comment lines just above each ``mod`` line are read backwards from
    it, so a long run of comment lines (a crate's doc) is read once, not once per line."""
    out = []
    for m in _MOD_DECL.finditer(source):
        line = source.rfind(b"\n", 0, m.start()) + 1
        if line < m.start() and not _MOD_PREFIX.fullmatch(source, line, m.start()):
            continue  # not at the start of its line (`pub` aside): nested, or not a declaration
        lead = line
        while lead > 0:
            above = source.rfind(b"\n", 0, lead - 1) + 1
            if not _LEAD_LINE.fullmatch(source, above, lead - 1):
                break
            lead = above
        attr = _PATH_ATTR_BYTES.search(source, lead, line) if lead < line else None
        out.append((m.group(1).decode(), attr.group(1).decode("utf-8", "replace") if attr else None))
    return tuple(out)


@dataclass(frozen=True)
class RootModules:
    """What a package's crate roots (src/lib.rs, src/main.rs) say about its files' modules."""

    bin_only: frozenset[str]  # top-level modules only src/main.rs declares, beside a library
    paths: tuple[tuple[str, str, bool], ...]  # (`#[path]` file under src/, module name, declared by main.rs)


@functools.lru_cache(maxsize=4096)
def root_modules(lib: tuple[tuple[str, str | None], ...] | None,
                 main: tuple[tuple[str, str | None], ...] | None) -> RootModules | None:
    """RootModules from the top-level declarations of a package's src/lib.rs and
    src/main.rs (None: no such file); None when they change nothing."""
    bin_only = frozenset(n for n, _ in main or ()) - frozenset(n for n, _ in lib or ()) if lib is not None else frozenset()
    paths = []
    for decls, in_main in ((lib, False), (main, True)):
        for name, target in decls or ():
            if target is not None:
                rel = posixpath.normpath(posixpath.join("src", target))
                if rel.startswith("src/"):
                    paths.append((rel, _mod_names([name])[0], in_main))
    return RootModules(bin_only, tuple(paths)) if bin_only or paths else None


_ROOT_FILES = ("src/lib.rs", "src/main.rs")


def _top_mods(syms: FileSymbols | None) -> tuple | None:
    """A crate root's top-level file module declarations: (name, #[path] or None)."""
    return None if syms is None else tuple((name, attr) for scope, name, attr in syms.mods if not scope)


class CrateRoots:
    """Package directory -> its ``RootModules`` (or None), made when first asked for from
    the top-level declarations of its crate roots: ``declarations(path)`` gives those of
    the file at ``path`` (see ``root_declarations``), or None when there is no such file.
    The chunk stage reads them from the files' bytes, the index from their summaries."""

    def __init__(self, declarations: Callable[[str], tuple[tuple[str, str | None], ...] | None]):
        self._declarations = declarations
        self._done: dict[str, RootModules | None] = {}

    def get(self, package: str) -> RootModules | None:
        if package not in self._done:
            base = f"{package}/src/" if package else "src/"
            self._done[package] = root_modules(self._declarations(base + "lib.rs"),
                                               self._declarations(base + "main.rs"))
        return self._done[package]


def _mod_names(parts: list[str]) -> tuple[str, ...]:
    if not parts:
        return ()
    names = list(parts[:-1])
    stem = parts[-1].rsplit(".", 1)[0]
    if stem != "mod":
        names.append(stem)
    return tuple(re.sub(r"[^0-9A-Za-z_]", "_", n) for n in names)
