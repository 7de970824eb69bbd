"""Language ``rust``: units of Rust source with tree-sitter-rust.

Items are found with one query run with its cursor limited to depth 1: on the file,
then on the body of each ``mod``/``impl``/``trait`` found (up to ``max_nesting``
levels), so neither the query nor Python ever walks function bodies. Units of a container (impl, trait,
inline mod) point at it through ``parent``; functions inside function bodies are part
of their enclosing function, not units of their own.
"""

from __future__ import annotations

import bisect
import functools
import importlib.metadata
import operator
import posixpath
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import tree_sitter
import tree_sitter_rust

from core.hookspecs import hookimpl
from core.chunk import CUT_MID_LINE, CUT_MIN, CUT_UNIT, pack_flat_cuts
from core.parsing import ByteOffsets as _Offsets
from core.parsing import Edit
from core.parsing import edited as _edited
from core.parsing import node_text, parse_with_deadline
from core.records import ParsedBlob, Unit
from plugins.rust_symbols import (KEYWORDS, CrateNames, CrateRoots, FileSymbols, RootModules, RustIndex,
                                  _mod_names, cargo_crates, crates_from_targets, manifest_targets,
                                  root_declarations, summarize)

EXTRACTOR_VERSION = "14"

ITEM_KINDS = {
    "function_item": "fn",
    "struct_item": "struct",
    "enum_item": "enum",
    "union_item": "union",
    "trait_item": "trait",
    "impl_item": "impl",
    "mod_item": "mod",
    "macro_definition": "macro",
    "const_item": "const",
    "static_item": "static",
    "type_item": "type",
    # a macro called where items go (`lazy_static! { … }`, `rgtest!(name, |dir| { … });`): the
    # code it is given changes as an item's does; at a file's top level with a `;` the call
    # is an expression statement
    "macro_invocation": "macro_call",
    "expression_statement": "macro_call",
}
CONTAINERS = {"impl_item", "trait_item", "mod_item"}
# declarations that are not units but that context resolution reads (ParsedBlob.decls)
DECL_KINDS = {"use_declaration": "use", "extern_crate_declaration": "extern_crate"}


@dataclass
class RustConfig:
    name: str = "rust"
    extensions: list[str] = field(default_factory=lambda: [".rs"])
    max_nesting: int = 6  # levels of mod/impl/trait bodies searched for items
    parse_timeout_s: float = 20.0  # a blob whose parsing takes longer is skipped (counted as parse_timeout)


@functools.cache
def _grammar() -> tuple[tree_sitter.Language, tree_sitter.Query]:
    """The grammar and the item query, compiled once per process: compiling the query takes
    ~4 ms, and a worker unpickles a fresh RustLanguage with every task it is sent."""
    lang = tree_sitter.Language(tree_sitter_rust.language())
    kinds = [k for k in (*ITEM_KINDS, *DECL_KINDS) if k != "expression_statement"]
    patterns = " ".join(f"({k})" for k in kinds) + " (expression_statement (macro_invocation))"
    return lang, tree_sitter.Query(lang, f"[{patterns}] @item")


def _norm(text: str) -> str:
    return " ".join(text.split())  # str.split() splits at what re's \s matches


_PAREN_SPACE = re.compile(r"\( | ?,? \)")


def _signature(text: str) -> str:
    """An item's text up to its body on one line: a parameter list laid out one per line
    reads ``(&self, x: u32)``, not ``( &self, x: u32, )``."""
    one_line = _norm(text).rstrip("=").rstrip()
    if "( " not in one_line and " )" not in one_line:  # what _PAREN_SPACE matches starts or ends so
        return one_line
    return _PAREN_SPACE.sub(lambda m: "(" if m.group() == "( " else ")", one_line)


class RustLanguage:
    name = "rust"
    # Cargo.toml names crates; the crate roots' `mod` declarations say which modules belong to
    # a binary beside a library, and where `#[path]` puts a module
    project_files = ("Cargo.toml", "lib.rs", "main.rs")
    module_files = ("lib.rs",)  # whether a package has its library decides what src/ files belong to
    comment_prefixes = ("//", "/*")  # a comment after a unit on its last line belongs to its code

    def __init__(self, cfg: RustConfig | None = None):
        cfg = cfg or RustConfig()
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
        return f"rust-x{EXTRACTOR_VERSION}-g{v['tree-sitter-rust']}-n{self.cfg.max_nesting}"

    def versions(self) -> dict[str, str]:
        return _versions()

    def module_path(self, path: str) -> str:
        return rust_module_path(path)

    def module_paths(self, projects: Mapping[str, bytes], present: frozenset[str] = frozenset()) -> Callable[[str], str]:
        """``module_path`` in a tree whose ``Cargo.toml`` files are ``projects`` and whose
        ``lib.rs`` files are ``present``: crates are named after their packages' targets."""
        if not any(path.rsplit("/", 1)[-1] == "Cargo.toml" for path in projects):
            return rust_module_path
        read = _naming_inputs(projects, present)
        if read is not None:
            key, values = read
            hit = _NAMERS.get(key)
            if hit is not None:
                _NAMERS.move_to_end(key)
                return hit
            # made from what the key holds: the function reads no file later (nor keeps the tree)
            crates, roots = _crates_from(values(), present)
        else:
            crates = cargo_crates(projects, present)
            roots = CrateRoots(lambda path: _declarations(projects.get(path)))
        known: dict[str, str] = {}  # the chunk stage asks for a file's old and new path at each change

        def module_path(path: str) -> str:
            hit = known.get(path)
            if hit is None:
                hit = known[path] = rust_module_path(path, crates=crates, roots=roots)
            return hit

        if read is not None:
            _NAMERS[key] = module_path
            if len(_NAMERS) > 16:
                _NAMERS.popitem(last=False)
        return module_path

    def summarize(self, parsed: ParsedBlob, options: dict) -> FileSymbols:
        return summarize(parsed, int(options.get("max_item_chars", 1200)), int(options.get("bodies", 0)))

    def symbol_index(self, options: dict) -> RustIndex:
        return RustIndex(rust_module_path)

    def parse(self, source: bytes, previous: tuple[bytes, ParsedBlob] | None = None,
              edits: list[Edit] | None = None) -> ParsedBlob:
        """Units of one blob.

        ``previous`` is an earlier version of the same file and its ParsedBlob (with its
        tree). tree-sitter then reparses incrementally, and units that lie wholly outside
        the edits and the ranges whose syntax changed are carried over (shifted) instead
        of being extracted again. ``edits`` are the byte spans outside which the versions
        agree (git's hunks); without them, the one span from the first difference to the
        last. The result equals a fresh parse.
        """
        parser, query = self._ensure()
        text = source.decode("utf-8")
        reuse = None
        tree = None
        # error recovery can differ between an incremental and a fresh parse: files with
        # syntax errors (either version) are always parsed from scratch
        if previous is not None and previous[1].tree is not None and not previous[1].tree.root_node.has_error:
            old_source, old_parsed = previous
            edited, applied = _edited(old_source, old_parsed.tree, source, edits)
            tree = self._parse(parser, source, edited)
            if tree.root_node.has_error:
                tree = None
            else:
                reuse = _Reuse(old_source, old_parsed, source, text, applied, edited.changed_ranges(tree))
        if tree is None:
            tree = self._parse(parser, source)
        root = tree.root_node
        offsets = _Offsets(source, text)
        units: list[Unit] = []
        decls: list[list] = []
        seen_names: dict[str, int] = {}
        # One depth-1 query per body (the file, then each container's body): the cursor
        # never descends into function bodies, which hold most of a tree's nodes.
        cursor = tree_sitter.QueryCursor(query)
        cursor.set_max_start_depth(1)

        def visit(body, parent_idx: int | None, container, level: int) -> None:
            nodes = cursor.captures(body).get("item", [])
            nodes.sort(key=lambda n: n.start_byte)
            for node in nodes:
                decl = DECL_KINDS.get(node.type)
                if decl is None and node.type == "mod_item" and node.child_by_field_name("body") is None:
                    decl = "mod"  # `mod foo;` declares a file module; it is not a unit
                if decl is not None:
                    start = _leading_trivia_start(node, source)[0]
                    decls.append([decl, parent_idx, text[offsets.char(start):offsets.char(node.end_byte)],
                                  node.start_point.row + 1])
                    continue
                if reuse is not None and reuse.carry(node, units, parent_idx, seen_names, decls):
                    continue
                is_container = node.type in CONTAINERS
                body_node = node.child_by_field_name("body") if is_container else None
                idx = len(units)
                units.append(self._unit(node, source, text, offsets, units, parent_idx, container, seen_names, reuse))
                if body_node is not None and level < self.cfg.max_nesting:
                    visit(body_node, idx, node, level + 1)

        visit(root, None, None, 0)
        self._skeletons(units, [u.char_start for u in units])
        return ParsedBlob(lang=self.name, text=text, units=units, has_error=_syntax_error(root, source), decls=decls,
                          tree=tree)

    def _parse(self, parser: tree_sitter.Parser, source: bytes, old_tree: tree_sitter.Tree | None = None):
        return parse_with_deadline(parser, source, old_tree, self.cfg.parse_timeout_s)

    def _unit(self, node, source: bytes, text: str, offsets: _Offsets, units: list[Unit],
              parent_idx: int | None, container, seen_names: dict[str, int],
              reuse: _Reuse | None = None) -> Unit:
        ntype = node.type
        kind = ITEM_KINDS[ntype]
        if ntype == "function_item" and container is not None and container.type in ("impl_item", "trait_item"):
            kind = "method"
        start, start_row = _leading_trivia_start(node, source)
        end_byte, end_row = node.end_byte, node.end_point.row
        if kind == "macro_call":
            # in a body, the `;` after a call is a node of its own: the unit ends with it
            after = node.next_sibling
            if after is not None and after.type == "empty_statement" and after.start_byte == end_byte:
                end_byte, end_row = after.end_byte, after.end_point.row
        c_start = offsets.char(start)
        c_end = offsets.char(end_byte)
        unit_text = text[c_start:c_end]
        parent = units[parent_idx] if parent_idx is not None else None
        # the same text in the previous version (a unit moved by an edit elsewhere in the
        # file) has the same name, signature, body and cut points: only place it anew
        same = reuse.same_text(unit_text) if reuse is not None and not node.has_error else None
        if same is not None:
            name, signature, body_open, cuts = same.name, same.signature, same.body_open, same.cuts
            local, header = _naming(name, parent, seen_names)
        else:
            parts = _macro_parts(node, source) if kind == "macro_call" else None
            name = _macro_call_name(node, source, parts) if parts else _item_name(node, source)
            local, header = _naming(name, parent, seen_names)
            body = node.child_by_field_name("body")
            sig_end = body.start_byte if body is not None else node.end_byte
            opener = body.start_byte if body is not None and source[body.start_byte:body.start_byte + 1] == b"{" else None
            if ntype in ("const_item", "static_item"):
                value = node.child_by_field_name("value")
                if value is not None:
                    sig_end = value.start_byte
                    # a table: `[`, `&[`, `{` or `(` opens it
                    head = source[sig_end:sig_end + 2]
                    k = 1 if head[:1] == b"&" else 0
                    opener = sig_end + k if head[k:k + 1] in (b"[", b"{", b"(") else None
            if ntype == "macro_definition":
                signature = f"macro_rules! {name}"
                brace = next((c for c in node.children if c.type in ("{", "(", "[")), None)
                sig_end = brace.start_byte if brace is not None else node.end_byte
                opener = sig_end if brace is not None else None
            elif kind == "macro_call":
                signature = name
                _, args, block = parts  # type: ignore[misc]
                # later pieces repeat the call up to its block (`rgtest!(name, |dir, cmd| {`)
                opened = block if block is not None else args
                sig_end = opener = opened.start_byte if opened is not None else None  # type: ignore[assignment]
                sig_end = sig_end if sig_end is not None else end_byte
            else:
                signature = _signature(source[node.start_byte:sig_end].decode("utf-8", "replace"))
            body_open = None if opener is None else offsets.char(opener + 1) - c_start
            cuts = b""
            if len(unit_text) > CUT_UNIT:
                found: list[int] = []
                base = start if offsets.ascii else 0
                _collect_cuts(node, source, 0, base, found)
                # nothing is cut out of the item's header (its docs and attributes, up to its
                # body or value): every later piece repeats it
                del found[:2 * bisect.bisect_left(found[::2], sig_end - base + 1)]  # in offset order
                if not offsets.ascii:
                    char = offsets.char
                    found[::2] = [char(b) - c_start for b in found[::2]]
                cuts = pack_flat_cuts(found)
        return Unit(
            kind=kind,
            name=name,
            local_qualname=local,
            header=header,
            signature=signature,
            start_byte=start,
            end_byte=end_byte,
            start_line=start_row + 1,
            end_line=end_row + 1,
            has_error=_syntax_error(node, source),
            text=unit_text,
            char_start=c_start,
            char_end=c_end,
            parent=parent_idx,
            body_open=body_open,
            cuts=cuts,
        )

    @staticmethod
    def _skeletons(units: list[Unit], char_starts: list[int]) -> None:
        """A container's text with its child units cut out and all whitespace removed."""
        children: dict[int, list[int]] = {}
        for i, u in enumerate(units):
            if u.parent is not None:
                children.setdefault(u.parent, []).append(i)
        for p, parent in enumerate(units):
            if parent.kind not in ("impl", "trait", "mod"):
                continue
            # every container is compared by its skeleton, so gaining its first member or
            # losing its last one does not count as a change of the container itself
            kids = children.get(p, [])
            pieces, pos = [], 0
            for k in kids:
                at = char_starts[k] - char_starts[p]
                pieces.append(parent.text[pos:at])
                pos = at + len(units[k].text)
            pieces.append(parent.text[pos:])
            parent.skeleton = "".join("".join(pieces).split())  # whitespace never makes a change


def _naming(name: str, parent: Unit | None, seen_names: dict[str, int]) -> tuple[str, str | None]:
    """A unit's local qualified name (``#n`` for repeated names) and its impl/trait header."""
    # children of the second `impl Foo` block are still Foo's items: drop the #n
    local = f"{parent.local_qualname.split('#', 1)[0]}::{name}" if parent else name
    n = seen_names.get(local, 0) + 1
    seen_names[local] = n
    if n > 1:  # cfg variants and multiple inherent impls share a name
        local = f"{local}#{n}"
    if parent is None:
        return local, None
    return local, parent.signature if parent.kind in ("impl", "trait") else parent.header


class _Reuse:
    """Carries units of a file's previous version over to the new one.

    A unit is carried when no edit lies inside it, no range whose syntax changed
    overlaps its new place, and its docs and attributes still start where they did (an
    edit nearby can attach or detach one). Its text, signature and cut points are
    unchanged; its spans shift by the edits before it. Only units that are new or
    changed are extracted, and cut for chunking.
    """

    def __init__(self, old: bytes, old_parsed: ParsedBlob, new: bytes, new_text: str,
                 edits: list[Edit], changed: list) -> None:
        self.old = old_units = old_parsed.units
        self.source = new
        # pre-order: a unit's subtree is the run of following units whose parent chain reaches it
        self.subtree_end = list(range(1, len(old_units) + 1))
        for i in range(len(old_units) - 1, -1, -1):
            p = old_units[i].parent
            if p is not None:
                self.subtree_end[p] = max(self.subtree_end[p], self.subtree_end[i])
        self._by_text: dict[str, Unit] | None = None
        # declarations inside each container, with their place in the old (source) order
        self.decls_in: dict[int, list[tuple[int, list]]] = {}
        for n, d in enumerate(old_parsed.decls):
            if d[1] is not None:
                self.decls_in.setdefault(d[1], []).append((n, d))
        ascii_ = len(old) == len(old_parsed.text) and len(new) == len(new_text)
        shifts = [(0, 0, 0)]  # (byte, char, line) deltas of the first k edits
        db = dc = dl = 0
        for os_, oe, ns, ne in edits:
            db += (ne - ns) - (oe - os_)
            if ascii_:
                dc = db
            elif len(edits) == 1:
                dc = len(new_text) - len(old_parsed.text)  # the one span may split a character
            else:  # hunks start and end at line starts: whole characters
                dc += len(new[ns:ne].decode("utf-8")) - len(old[os_:oe].decode("utf-8"))
            dl += new.count(b"\n", ns, ne) - old.count(b"\n", os_, oe)
            shifts.append((db, dc, dl))
        ranges = sorted((r.start_byte, r.end_byte) for r in changed)
        range_starts = [a for a, _ in ranges]
        reach = [-1]  # reach[k]: the furthest end of the first k ranges
        for _, b in ranges:
            reach.append(max(reach[-1], b))
        # carriable units by the end byte of their new place: (index, byte, char, line delta)
        self.at: dict[int, tuple[int, int, int, int]] = {}
        j = 0  # edits[:j] end at or before the unit's start (pre-order: starts never decrease)
        for i, u in enumerate(old_units):
            s, e = u.start_byte, u.end_byte
            while j < len(edits) and edits[j][1] <= s:
                j += 1
            if j < len(edits) and edits[j][0] < e:
                continue  # the next edit starts inside the unit (edits are sorted and disjoint)
            shift = shifts[j]
            new_s, new_e = s + shift[0], e + shift[0]
            if reach[bisect.bisect_left(range_starts, new_e)] > new_s:
                continue  # a range that starts before its end ends after its start: its syntax changed
            self.at[new_e] = (i, *shift)

    def same_text(self, text: str) -> Unit | None:
        """A unit of the previous version with exactly this text (and no syntax error)."""
        if self._by_text is None:
            self._by_text = {u.text: u for u in self.old if not u.has_error}
        return self._by_text.get(text)

    def carry(self, node, units: list[Unit], parent_idx: int | None, seen_names: dict[str, int],
              decls: list[list]) -> bool:
        """Append the carried-over subtree for ``node`` (and the declarations in it) if there is one."""
        hit = self.at.get(node.end_byte)
        if hit is None:
            return False
        i, db, dc, dl = hit
        first = self.old[i]
        if ITEM_KINDS[node.type] != first.kind and not (node.type == "function_item" and first.kind == "method"):
            return False
        if _leading_trivia_start(node, self.source)[0] != first.start_byte + db:
            return False  # its docs and attributes changed (an edit attached or detached one)
        new_index: dict[int, int] = {}
        inside: list[tuple[int, list]] = []
        for k in range(i, self.subtree_end[i]):
            u = self.old[k]
            parent = parent_idx if k == i else new_index[u.parent]  # type: ignore[index]
            parent_unit = units[parent] if parent is not None else None
            local, header = _naming(u.name, parent_unit, seen_names)
            kind = u.kind
            if kind in ("fn", "method"):
                kind = "method" if parent_unit is not None and parent_unit.kind in ("impl", "trait") else "fn"
            new_index[k] = len(units)
            units.append(Unit(kind, u.name, local, header, u.signature, u.start_byte + db, u.end_byte + db,
                              u.start_line + dl, u.end_line + dl, u.has_error, u.text, u.char_start + dc,
                              u.char_end + dc, parent, u.body_open, u.cuts))
            inside += self.decls_in.get(k, ())
        # in source order, as a fresh parse finds them: a nested module's `use` comes before
        # those that follow it in its parent
        for _, (kind, owner, text, line) in sorted(inside, key=lambda nd: nd[0]):
            decls.append([kind, new_index[owner], text, line + dl])
        return True


@functools.cache
def _versions() -> dict[str, str]:
    return {d: importlib.metadata.version(d) for d in ("tree-sitter", "tree-sitter-rust")}


_INNER_GENERICS = re.compile(r"<[^<>]*>")


def _strip_generics(type_text: str) -> str:
    """``Vec<Option<T>>`` -> ``Vec``; ``&'a mut Store<K, V>`` -> ``&'a mut Store``."""
    prev = None
    while prev != type_text and "<" in type_text:
        prev, type_text = type_text, _INNER_GENERICS.sub("", type_text)
    return _norm(type_text)


_LIFETIME_ARG = re.compile(r"'[A-Za-z_]\w*\s*(?:,\s*)?")


def _without_lifetimes(text: str) -> str:
    """``IntoPy<'py>`` -> ``IntoPy``; ``From<&'a str>`` -> ``From<&str>``."""
    if "'" not in text:
        return text
    text = _LIFETIME_ARG.sub("", text).replace(", >", ">").replace(",>", ">")
    return text.replace("<>", "")


def _macro_call(node):
    """The ``macro_invocation`` of a macro-call unit (the node itself, or in its statement)."""
    if node.type == "macro_invocation":
        return node
    return next((c for c in node.children if c.type == "macro_invocation"), None)


_PATH_PREFIXES = re.compile(r"(?:[A-Za-z_]\w*\s*)?::\s*")
MACRO_CALL_NAME_CHARS = 80


def _macro_parts(node, source: bytes) -> tuple[str, Any, Any]:
    """(macro name, its arguments' token tree, the first block in braces within them) of a
    macro call: ``("rgtest", (sorts, |dir, cmd| {…}), {…})``; a part it lacks is None."""
    call = _macro_call(node)
    if call is None:
        return "macro", None, None
    macro = call.child_by_field_name("macro")
    name = node_text(macro, source).rsplit("::", 1)[-1].strip() if macro is not None else "macro"
    args = next((c for c in call.children if c.type == "token_tree"), None)
    block = None
    if args is not None:
        # its children are every token of the call (a table may hold thousands): walked up
        # to the first block, between the delimiters
        cursor = args.walk()
        if cursor.goto_first_child():
            while cursor.goto_next_sibling():
                c = cursor.node
                if c.kind_id in _TOKEN_TREE_IDS and source[c.start_byte:c.start_byte + 1] == b"{":
                    if cursor.goto_next_sibling():  # not the last child (the closing delimiter's place)
                        block = c
                    break
    return name, args, block


def _macro_call_name(node, source: bytes, parts: tuple[str, Any, Any] | None = None) -> str:
    """A macro call's name: the first line of what it is given, up to the first block in
    braces, on one line without path prefixes (``try_from!(item: &Msg, Request)`` for
    ``try_from!(item: &proto::Msg, core::Request, { … })``, ``rgtest!(sorts, |dir, cmd|)``,
    ``lazy_static!(static ref RE: Regex = new("x").unwrap();)``), so that the calls of one
    macro in a file keep apart; else the first identifier it is given that is no keyword,
    or the macro's name alone (``name!``)."""
    name, args, block = parts or _macro_parts(node, source)
    if args is None or args.child_count < 2:
        return f"{name}!"
    end = block.start_byte if block is not None else args.child(args.child_count - 1).start_byte
    head, pos = "", args.child(0).end_byte
    while pos < end:  # the first line that is no comment (a huge table is not decoded whole)
        stop = source.find(b"\n", pos, end)
        stop = end if stop < 0 else stop
        line = source[pos:stop].strip()
        if line and not line.startswith((b"//", b"/*", b"*")):
            head = line.decode("utf-8", "replace")
            break
        pos = stop + 1
    if "::" in head:
        head = _PATH_PREFIXES.sub("", head)
    head = " ".join(head.split()).rstrip(",").strip()  # str.split splits where \s matches
    head = head.replace("#", "").replace("::", "")
    if head:
        if len(head) > MACRO_CALL_NAME_CHARS:
            head = head[:MACRO_CALL_NAME_CHARS].rstrip() + "…"
        return f"{name}!({head})"
    for child in args.children:
        if child.type == "identifier":
            ident = node_text(child, source)
            if ident not in KEYWORDS:
                return f"{name}!({ident})"
    return f"{name}!"


def _item_name(node, source: bytes) -> str:
    if node.type in ("macro_invocation", "expression_statement"):
        return _macro_call_name(node, source)
    if node.type == "impl_item":
        ty = _strip_generics(node_text(node.child_by_field_name("type"), source))
        trait = node.child_by_field_name("trait")
        if trait is not None:
            neg = "!" if any(c.type == "!" for c in node.children) else ""
            # the trait's arguments tell impls apart (From<io::Error>, From<fmt::Error>); its
            # lifetimes do not, and renaming one is no change of the impl
            return f"<{ty} as {neg}{_without_lifetimes(_norm(node_text(trait, source)))}>"
        return ty or "impl"
    name = node.child_by_field_name("name")
    return node_text(name, source) if name is not None else node.type


def _syntax_error(node, source: bytes) -> bool:
    """Whether a node holds a syntax error. The grammar knows ``try`` only as the keyword
    of later editions: the 2015 edition's ``try!(expr)`` macro parses as an ``ERROR``
    node ``try!`` before a parenthesized expression, which is no error of the code."""
    if not node.has_error:
        return False
    stack = [node]
    while stack:
        n = stack.pop()
        if n.is_missing:
            return True
        if n.type == "ERROR":
            if source[n.start_byte:n.end_byte] != b"try!" or source[n.end_byte:n.end_byte + 1] != b"(":
                return True
            continue
        stack.extend(c for c in n.children if c.has_error or c.is_missing)
    return False


_ATOMIC = frozenset({"string_literal", "raw_string_literal", "line_comment", "block_comment"})  # never cut inside
_TRIVIA = frozenset({"line_comment", "block_comment", "attribute_item"})  # may lead into the next node
MAX_CUT_DEPTH = 200  # deeper syntax (machine-made nesting) gets no finer cut points, and no deep recursion


def _kind_ids(names: frozenset[str]) -> frozenset[int]:
    """Every node kind id the grammar names with one of ``names`` (aliases share a name,
    such as the two ``token_tree`` kinds). Hot loops compare ids: ``node.type`` makes a
    new string on every access."""
    lang = tree_sitter.Language(tree_sitter_rust.language())
    return frozenset(i for i in range(lang.node_kind_count) if lang.node_kind_for_id(i) in names)


_ATOMIC_IDS, _TRIVIA_IDS = _kind_ids(_ATOMIC), _kind_ids(_TRIVIA)
_COMMENT_IDS, _ATTRIBUTE_IDS = _kind_ids(frozenset({"line_comment", "block_comment"})), _kind_ids(frozenset({"attribute_item"}))
_TOKEN_TREE_IDS = _kind_ids(frozenset({"token_tree"}))


def _is_outer_doc(node, source: bytes) -> bool:
    kind = node.kind_id
    if kind in _ATTRIBUTE_IDS:
        return True
    if kind in _COMMENT_IDS:
        t = source[node.start_byte:node.start_byte + 4]
        return (t.startswith(b"///") and not t.startswith(b"////")) or (t.startswith(b"/**") and not t.startswith(b"/***"))
    return False


def _leading_trivia_start(node, source: bytes) -> tuple[int, int]:
    """Start (byte, row) of the doc comments and attributes attached to an item."""
    start, row = node.start_byte, node.start_point.row
    prev = node.prev_sibling
    # as in rustc, outer doc comments and attributes belong to the next item even across
    # blank lines; any other node (a plain comment, another item) ends the run
    while prev is not None and _is_outer_doc(prev, source):
        start, row = prev.start_byte, prev.start_point.row
        node = prev
        prev = node.prev_sibling
    return start, row


def _leads_into(node, next_row: int, source: bytes) -> bool:
    """Whether ``node`` is a comment or attribute that belongs with a sibling starting on ``next_row``."""
    if node.kind_id not in _TRIVIA_IDS:
        return False
    if _is_outer_doc(node, source):
        return True
    end = node.end_point
    last_row = end.row - 1 if end.column == 0 else end.row  # a line comment may end with its newline
    return next_row <= last_row + 1


def _collect_cuts(node, source: bytes, depth: int, base: int, out: list[int]) -> None:
    """Cut points between the children of large nodes, in increasing order, appended to
    ``out`` flat: offset - base, depth, offset - base, depth, ... (see ``pack_flat_cuts``).

    A cut before a child that starts a line moves back to the start of that line (only
    indentation lies between the previous sibling and it), so a piece starts with
    whole lines; a cut inside a line ranks below every line-start cut (see
    ``core.chunk.cut_before``); cuts never fall inside a token. Nothing is cut from the comments
    and attributes that lead into it: outer doc comments and attributes stay with the
    next node (as rustc attaches them), other comments when no blank line separates them.

    It visits every child of every large node, so it reads byte offsets and kind ids only
    (a node's type name and points are objects made anew on each access).
    """
    trivia, atomic = _TRIVIA_IDS, _ATOMIC_IDS
    prev = None
    prev_end = 0
    for child in node.children:
        start, end = child.start_byte, child.end_byte
        if prev is not None and (prev.kind_id not in trivia or not _leads_into(prev, child.start_point.row, source)):
            newline = source.rfind(b"\n", prev_end, start)  # core.chunk.cut_before, inlined: it runs per child
            if newline >= 0:
                out += (newline + 1 - base, depth)
            else:
                out += (start - base, depth + CUT_MID_LINE)
        prev, prev_end = child, end
        if end - start > CUT_MIN and depth < MAX_CUT_DEPTH and child.child_count and child.kind_id not in atomic:
            _collect_cuts(child, source, depth + 1, base, out)


def _declarations(source: bytes | None) -> tuple[tuple[str, str | None], ...] | None:
    return None if source is None else root_declarations(source)


# module path functions by what they read of their trees (``_naming_inputs``): most commits
# that edit a manifest or a crate root change neither its targets nor its `mod` lines
_NAMERS: OrderedDict[tuple, Callable[[str], str]] = OrderedDict()
# (path, blob id) of a project file -> (a small number for what naming reads of it, that value)
_NAMING_IDS: dict[tuple[str, str], tuple[int, Any]] = {}
_NAMING_VALUES: dict[Any, int] = {}
_NAMING_MAX = 65536


def _naming_inputs(projects: Mapping[str, bytes | None], present: frozenset[str]) -> tuple[tuple, Callable] | None:
    """What ``module_paths`` reads of a tree, when the mapping names its files' contents
    (``content_keys``, see core.chunking.LazyFiles): the package of each manifest (from its
    ``[package]``, ``[lib]`` and ``[[bin]]`` tables), the top-level `mod` declarations of
    each ``lib.rs`` and ``main.rs``, and the ``lib.rs`` files present. Returns a key (two
    trees with the same key name every file alike) and a function giving the values,
    (path, value) in path order; a file's value is computed once per version. None: the
    mapping does not name contents. It runs whenever a commit changes a naming file, over
    all of them: the loops over the tree's files are in C."""
    content_keys = getattr(projects, "content_keys", None)
    blobs = content_keys() if content_keys is not None else None
    if blobs is None or None in blobs:
        return None
    if len(_NAMING_IDS) + len(blobs) > _NAMING_MAX:  # the numbers start again: so do the functions
        _NAMING_IDS.clear()
        _NAMING_VALUES.clear()
        _NAMERS.clear()
    paths = list(projects)
    files = list(zip(paths, blobs))
    hits = list(map(_NAMING_IDS.get, files))
    prefetch = getattr(projects, "prefetch", None)
    if prefetch is not None:  # the versions not seen yet, read together
        prefetch([paths[k] for k, hit in enumerate(hits) if hit is None])
    for k, hit in enumerate(hits):
        if hit is None:
            path = paths[k]
            data = projects.get(path)
            try:
                if path.rsplit("/", 1)[-1] == "Cargo.toml":
                    value: Any = manifest_targets(path, data)
                else:  # lib.rs, main.rs: naming reads their `mod` lines (when they are crate roots)
                    value = _declarations(data)
            except Exception:  # noqa: BLE001 - read when asked for instead, where it fails as it always did
                return None
            hits[k] = _NAMING_IDS[files[k]] = (_NAMING_VALUES.setdefault(value, len(_NAMING_VALUES)), value)
    key = (tuple(paths), tuple(map(operator.itemgetter(0), hits)), present)
    return key, lambda: list(zip(paths, map(operator.itemgetter(1), hits)))


def _crates_from(values: list[tuple[str, Any]], present: frozenset[str]) -> tuple[Mapping[str, CrateNames], CrateRoots]:
    """``cargo_crates`` and the CrateRoots of a tree from its ``_naming_inputs`` values."""
    manifests = {path: value for path, value in values if path.rsplit("/", 1)[-1] == "Cargo.toml"}
    declared = {path: value for path, value in values if path not in manifests}
    return crates_from_targets(manifests, present), CrateRoots(declared.get)


def _with_roots(roots: RootModules, names: CrateNames, rel: str, crate: str,
                mods: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """(crate, modules) of a file at ``rel`` under a package's src/ after its crate roots'
    declarations: a module at a ``#[path]`` file (and the modules in its directory when
    it is a mod.rs) takes its declared name; a module only src/main.rs declares belongs
    to the binary."""
    for target, name, in_main in roots.paths:
        if rel == target:
            inner: tuple[str, ...] = ()
        elif target.endswith("/mod.rs") and rel.startswith(target[:-len("mod.rs")]):
            inner = _mod_names(rel[len(target) - len("mod.rs"):].split("/"))
        else:
            continue
        return (_main_bin(names) if in_main and names.has_lib else crate), (name, *inner)
    if mods and mods[0] in roots.bin_only:
        return _main_bin(names), mods
    return crate, mods


def _main_bin(names: CrateNames) -> str:
    """The crate of a package's src/main.rs: its ``[[bin]]`` name, else the package's."""
    return next((name for name, bin_path in names.bins if bin_path == "src/main.rs"), names.package)


def rust_module_path(path: str, crates: Mapping[str, CrateNames] | None = None, roots: CrateRoots | None = None) -> str:
    """Module path of a file from its path (Cargo conventions) and, when given, how the
    packages of its tree name their crates (``crates``: package directory ->
    ``CrateNames``, see ``cargo_crates``).

    With ``crates``: ``crates/store/src/log/mod.rs`` of package ``ledger-store`` is
    ``ledger_store::log`` (the library's name, ``[lib] name`` if set); ``src/main.rs`` and,
    in a package without a library, the rest of ``src/`` belong to the binary (its
    ``[[bin]] name``, else the package name); ``src/bin/x.rs`` is binary ``x`` unless a
    ``[[bin]]`` with that path names it; a ``[[bin]] path`` outside these places roots a
    binary whose modules are the files beside it (``crates/core/main.rs`` -> ``rg``,
    ``crates/core/app.rs`` -> ``rg::app``). Without ``crates`` (or outside any package),
    the directory holding ``src`` names the crate (dashes become underscores) and the
    root package's files have no crate name. Tests, examples and benches are crates
    ``<crate>_tests`` and so on, and with ``crates`` a package's ``build.rs`` is
    ``<crate>_build``; a file outside all of these keeps its directory path.
    """
    if crates is not None and path.rpartition("/")[2] == "build.rs":
        names = crates.get(path.rpartition("/")[0])
        if names is not None:  # a package's build script is a crate of its own
            return _ident(_crate_name(names, "build.rs", "build") + "_build")
    package, crate, suffix, mods = _module_parts(path)
    if crates is not None:
        if package is not None:
            names = crates.get(package)
            if names is not None:
                rel = path[len(package) + 1:] if package else path
                crate = _crate_name(names, rel, suffix)
                found = roots.get(package) if roots is not None and not suffix else None
                if found is not None:
                    crate, mods = _with_roots(found, names, rel, crate, mods)
        elif crate:  # src/bin/<x>: a [[bin]] may name it otherwise
            crate = _declared_bin(path, crates) or crate
        else:  # outside src/, tests/…: beside a [[bin]] path?
            hit = _custom_bin(path, crates)
            if hit is not None:
                crate, mods = hit
    if suffix:
        crate = f"{crate}/{suffix}" if crate else suffix
    head = [_ident(crate)] if crate else []
    return "::".join(head + list(mods))


def _crate_name(names: CrateNames, rel: str, suffix: str) -> str:
    """The crate of a file at ``rel`` in a package, from src/ (or tests/… with ``suffix``)."""
    if suffix:
        return names.lib if names.has_lib else names.package
    if rel == "src/main.rs" or not names.has_lib:
        return _main_bin(names)
    return names.lib


def _declared_bin(path: str, crates: Mapping[str, CrateNames]) -> str | None:
    """The ``[[bin]] name`` of a file under some package's src/bin/, if one declares its path."""
    head, sep, rest = path.rpartition("src/bin/")
    package = head.rstrip("/")
    names = crates.get(package)
    if not sep or names is None:
        return None
    first = rest.split("/", 1)[0]
    for name, bin_path in names.bins:
        if bin_path == "src/bin/" + rest or (bin_path.startswith(f"src/bin/{first}/") and "/" in rest):
            return name
    return None


def _custom_bin(path: str, crates: Mapping[str, CrateNames]) -> tuple[str, tuple[str, ...]] | None:
    """(binary name, modules) of a file beside a ``[[bin]] path`` outside src/."""
    best = None
    with_bins = getattr(crates, "with_bins", None)  # a lazy mapping parses only manifests with [[bin]]
    for package, names in (with_bins() if with_bins is not None else crates.items()):
        for name, bin_path in names.bins:
            main = f"{package}/{bin_path}" if package else bin_path
            root = posixpath.dirname(main)
            if path == main:
                return name, ()
            if root and path.startswith(root + "/") and (best is None or len(root) > len(best[1])):
                best = (name, root)
    if best is None:
        return None
    parts = path[len(best[1]) + 1:].split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    return best[0], tuple(_ident(m) for m in parts[:-1] + ([] if stem in ("lib", "main", "mod") else [stem]))


@functools.lru_cache(maxsize=65536)
def _module_parts(path: str) -> tuple[str | None, str, str, tuple[str, ...]]:
    """(package directory or None when the crate is not the package's, crate name from the
    path, crate suffix, module segments) of ``rust_module_path``."""
    parts = path.split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    dirs = parts[:-1]
    for marker in ("src", "tests", "examples", "benches"):
        if marker in dirs:
            i = len(dirs) - 1 - dirs[::-1].index(marker)
            package: str | None = "/".join(dirs[:i])
            crate = dirs[i - 1] if i > 0 else ""
            inner = dirs[i + 1:]
            suffix = ""
            if marker == "src" and inner[:1] == ["bin"]:
                # src/bin/x.rs and src/bin/x/main.rs are the root of binary crate x
                package = None
                if len(inner) == 1:
                    crate, inner, stem = stem, [], "main"
                else:
                    crate, inner = inner[1], inner[2:]
            elif marker != "src":
                suffix = marker
            mods = inner + ([] if stem in ("lib", "main", "mod") else [stem])
            return package, crate, suffix, tuple(_ident(m) for m in mods)
    mods = dirs + ([] if stem in ("lib", "main", "mod") else [stem])
    return None, "", "", tuple(_ident(m) for m in mods)


def _ident(segment: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", segment)


@hookimpl
def register_language(register):
    register("rust", RustLanguage, RustConfig)
