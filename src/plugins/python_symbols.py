"""Python symbol index: what each module of a tree defines and imports.

One ``PythonIndex`` follows a tree through history; ``update`` replaces the files a
commit changed. It knows:

- **modules** from file paths: packages (directories with ``__init__.py``), namespace
  packages (directories of modules without one), and the directories imports start
  from (import roots): the repository root, every ``src`` directory, the directory
  holding each top-level package, and for a file outside any package its own directory
  (as for a script or a test module run by pytest);
- per module, its **definitions** (functions, classes with their methods and nested
  classes, module-level assignments) and its **imports**: ``import a.b``,
  ``import a.b as c``, ``from . import x``, ``from ..pkg.mod import A as B`` and
  ``from m import *`` (the names of a literal ``__all__``, else every public name),
  so ``__init__.py`` re-exports resolve to the module that defines the name.

``references`` resolves the names and dotted attribute paths a unit's code uses
(``mod.func``, ``Class.method``, ``pkg.mod.Class``, ``self.method``/``cls.attr`` in a
class, ``super().method``) as Python would through modules, imports and class bases,
and falls back to the unit's own module for names defined there. There is no type
inference: ``obj.method()`` is matched by name against the methods of the classes the
unit names (tier ``method``). Names from the standard library or installed packages
resolve to nothing.
"""

from __future__ import annotations

import ast
import functools
import keyword
import posixpath
import re
import textwrap
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import tomllib

from core.context import MemoReferences, Reference, UnitQuery
from core.records import ParsedBlob, Unit
from core.snapshot import apply_delta

DefRef = tuple[str, int]  # (path, index into FileSymbols.defs)
Target = tuple[str, Any]  # ("def", DefRef) or ("mod", module id: a file path, or a package's directory)
Binding = tuple[str, int, str, "str | None", str]  # (scope, level, module, imported name or None, bound name)

KEYWORDS = frozenset(keyword.kwlist)
_STRIP = re.compile(r'#[^\n]*|[rRbBuUfF]{0,2}(?:"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:\\.|[^"\\\n])*"'
                    r"|'(?:\\.|[^'\\\n])*')")
_PATH = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)")
_METHOD_CALL = re.compile(r"\.\s*([A-Za-z_]\w*)\s*\(")
_SUPER = re.compile(r"super(?<!\wsuper)\s*\(\s*(?:[\w.]+\s*,\s*\w+\s*)?\)")  # `super` first: searched for
_IMPORT_STMT = re.compile(r"(?m)^[ \t]*((?:from[ \t]+[.\w]+[ \t]+)?import[ \t]+(?:\([^)]*\)|[^\n;]*))")
_FROM = re.compile(r"from\s*(\.*)\s*([\w.]*)\s+import\s+(.*)$", re.DOTALL)
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+\n")
_DOCSTRING = re.compile(r'\A(?:\s*#[^\n]*)*\s*[rRuU]?("""|\'\'\'|"|\')\s*(.*?)(?:\1|\n|$)', re.DOTALL)
_TRIPLE = re.compile(r'("""|\'\'\')(\s*)([^\n]*?)(?:\n[\s\S]*?)?\1')
_SUPER_NAME = "__super__"


def _strip(code: str) -> str:
    """Comments and strings blanked out (line breaks kept)."""
    return _STRIP.sub(lambda m: "\n" * m.group().count("\n") or " ", code)


# -- import statements -------------------------------------------------------------------

def parse_import(text: str) -> list[tuple[int, str, str | None, str]]:
    """Bindings of one import statement: (level, module, imported name, bound name).

    ``import a.b`` binds ``a`` to package ``a`` (``(0, "a", None, "a")``);
    ``import a.b as c`` gives ``(0, "a.b", None, "c")``; ``from ..m import x as y``
    gives ``(2, "m", "x", "y")``; ``from m import *`` gives ``(0, "m", "*", "*")``."""
    t = " ".join(re.sub(r"#[^\n]*", "", text).replace("\\\n", " ").split())
    out: list[tuple[int, str, str | None, str]] = []
    m = _FROM.match(t)
    if m:
        level, module = len(m.group(1)), m.group(2)
        if not level and (not module or module == "__future__"):
            return []
        for item in m.group(3).strip().strip("()").split(","):
            parts = item.split(" as ")
            name = parts[0].strip()
            if not name.isidentifier() and name != "*":
                continue
            bound = parts[1].strip() if len(parts) > 1 else name
            out.append((level, module, name, bound))
        return out
    if not t.startswith("import "):
        return []
    for item in t[len("import "):].split(","):
        parts = item.split(" as ")
        module = parts[0].strip()
        if not module or not all(s.isidentifier() for s in module.split(".")):
            continue
        if len(parts) > 1:
            out.append((0, module, None, parts[1].strip()))
        else:
            first = module.split(".", 1)[0]
            out.append((0, first, None, first))
    return out


# -- per-file summaries ------------------------------------------------------------------

@dataclass(slots=True)
class Def:
    name: str
    kind: str  # fn, method, class, assign, type
    local: str  # local qualified name in the file
    owner: int | None  # members: index of their class's Def
    text: str  # rendered skeleton
    lines: tuple[int, int]
    names: tuple[str, ...] = ()  # every name it binds (``a, b = ...`` binds two)
    bases: tuple[str, ...] = ()  # classes: the dotted names of their base classes


@dataclass(slots=True)
class FileSymbols:
    defs: list[Def]
    imports: list[Binding]
    all_names: tuple[str, ...] | None  # a literal ``__all__``
    top: dict[str, list[int]] = field(default_factory=dict)  # module-scope name -> defs binding it
    members: dict[int, dict[str, list[int]]] = field(default_factory=dict)  # class -> member name -> defs
    by_local: dict[str, int] = field(default_factory=dict)
    _shape: tuple | None = None

    def shape(self) -> tuple:
        """Everything name resolution reads (not texts or line numbers): a change that
        keeps the shape (most edits are inside bodies) keeps every lookup."""
        if self._shape is None:
            self._shape = (tuple((d.name, d.kind, d.owner, d.names, d.bases) for d in self.defs),
                           tuple(self.imports), self.all_names)
        return self._shape


def _assign_names(signature: str) -> tuple[str, ...]:
    """``X: int`` -> (X,); ``a, b`` -> (a, b); ``c = d`` -> (c, d)."""
    if ":" in signature:
        return (signature.split(":", 1)[0].strip(),)
    return tuple(n for n in re.findall(r"[A-Za-z_]\w*", signature) if n not in KEYWORDS)


def _bases(signature: str) -> tuple[str, ...]:
    """Dotted names of the base classes in ``class A(B, m.C[T], metaclass=M):``."""
    open_at = signature.find("(")
    if open_at < 0:
        return ()
    inner = signature[open_at + 1:signature.rfind(")")]
    out, depth, cur = [], 0, []
    for ch in inner + ",":
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            item = "".join(cur).strip()
            cur = []
            if "=" not in item:
                m = re.match(r"([A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)", item)
                if m:
                    out.append(re.sub(r"\s+", "", m.group(1)))
        else:
            cur.append(ch)
    return tuple(out)


def _literal_all(text: str) -> tuple[str, ...] | None:
    try:
        tree = ast.parse(textwrap.dedent(text))
        node = tree.body[0]
        value = ast.literal_eval(node.value)  # type: ignore[attr-defined]
    except (SyntaxError, ValueError, TypeError, AttributeError, IndexError, MemoryError, RecursionError):
        return None
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _lead(text: str, char_start: int) -> str:
    """The indentation before a unit's first line in its file."""
    line_start = text.rfind("\n", 0, char_start) + 1
    before = text[line_start:char_start]
    return before if not before.strip() else " " * len(before)


def _head(u: Unit) -> str:
    """Decorators, comments and the ``def``/``class`` line(s) as written (the signature
    alone for a unit whose colon is missing)."""
    return u.text[:u.body_open] if u.body_open is not None else u.signature


def _doc_line(body: str) -> str | None:
    m = _DOCSTRING.match(body)
    if not m or not m.group(2).strip():
        return None
    line = m.group(2).strip()
    return line + " " if line.endswith('"') else line


def _without_comment_lines(text: str) -> str:
    return "\n".join(ln for ln in text.split("\n") if not ln.lstrip().startswith("#"))


def render(parsed: ParsedBlob, index: int, kids: dict[int, list[int]], max_item_chars: int, bodies: int) -> str:
    """A definition as a skeleton: functions as their signature with ``...`` (and their
    docstring's first line), classes with their methods' signatures, short assignments whole."""
    units = parsed.units
    u = units[index]
    lead = _lead(parsed.text, u.char_start)
    if u.kind in ("fn", "method"):
        if bodies and len(u.text) <= bodies:
            out = textwrap.dedent(lead + u.text)
        else:
            head = textwrap.dedent(_without_comment_lines(lead + _head(u))).strip("\n")
            doc = _doc_line(u.text[u.body_open:]) if u.body_open is not None else None
            out = f'{head}\n    """{doc}"""\n    ...' if doc else f"{head} ..."
        if u.kind == "method" and u.header:
            return f"{u.header}\n{textwrap.indent(out, '    ')}"
        return out
    if u.kind == "class":
        members: list[Unit] = []
        stack = list(kids.get(index, ()))
        while stack:
            k = stack.pop()
            if units[k].kind in ("fn", "method"):
                members.append(units[k])
            else:
                stack.extend(kids.get(k, ()))
        base = u.char_start - len(lead)
        text = lead + u.text
        for m in sorted(members, key=lambda x: x.char_start, reverse=True):
            a, b = m.char_start - base, m.char_end - base
            text = text[:a] + _head(m) + " ..." + text[b:]
        text = _BLANK_LINES.sub("\n\n", textwrap.dedent(_without_comment_lines(text))).strip()
        if len(text) > max_item_chars:  # docstrings keep their first line
            text = _TRIPLE.sub(lambda mm: f"{mm.group(1)}{mm.group(3).strip()}{mm.group(1)}", text)
        return text
    if len(u.text) <= max_item_chars:
        return textwrap.dedent(lead + u.text).strip()
    return f"{u.signature} = ..."


def summarize(parsed: ParsedBlob, max_item_chars: int, bodies: int) -> FileSymbols:
    units = parsed.units
    kids: dict[int, list[int]] = {}
    for i, u in enumerate(units):
        if u.parent is not None:
            kids.setdefault(u.parent, []).append(i)
    defs: list[Def] = []
    top: dict[str, list[int]] = {}
    members: dict[int, dict[str, list[int]]] = {}
    by_local: dict[str, int] = {}
    all_names = None
    for i, u in enumerate(units):
        names = (_assign_names(u.signature) or (u.name,)) if u.kind == "assign" else (u.name,)
        bases = _bases(u.signature) if u.kind == "class" else ()
        defs.append(Def(u.name, u.kind, u.local_qualname, u.parent, render(parsed, i, kids, max_item_chars, bodies),
                        (u.start_line, u.end_line), names, bases))
        by_local.setdefault(u.local_qualname, i)
        if u.parent is None:
            for n in names:
                top.setdefault(n, []).append(i)
            if u.kind == "assign" and "__all__" in names:
                all_names = _literal_all(u.text)
        else:
            members.setdefault(u.parent, {}).setdefault(u.name, []).append(i)
    imports: list[Binding] = []
    for kind, parent, text, _line in parsed.decls:
        if kind != "import":
            continue
        scope = units[parent].local_qualname if parent is not None else ""
        for level, module, name, bound in parse_import(text):
            imports.append((scope, level, module, name, bound))
    return FileSymbols(defs, imports, all_names, top, members, by_local)


# -- the index ---------------------------------------------------------------------------

@dataclass
class _Layout:
    """Where modules are, from the paths of the tree's Python files."""

    modules: dict[str, dict[str, str]]  # directory -> module name -> file
    subdirs: dict[str, set[str]]  # directory -> child directories holding Python files
    inits: dict[str, str]  # package directory -> its __init__ file
    roots: set[str]  # directories absolute imports start from
    top: dict[str, list[str]]  # top-level name -> module ids under the roots


def _parent(d: str) -> str:
    return d.rpartition("/")[0]


def _join(d: str, name: str) -> str:
    return f"{d}/{name}" if d else name


def _common(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a.split("/"), b.split("/")):
        if x != y:
            break
        n += 1
    return n


def python_source_roots(projects: Mapping[str, bytes | None]) -> tuple[str, ...]:
    """The source directories the ``pyproject.toml`` files of a tree declare, deepest first:
    maturin's ``python-source``, setuptools' ``package-dir`` for ``""``, poetry's
    ``packages`` ``from``. A root at the project's own directory names nothing new."""
    roots = set()
    for path in sorted(projects):
        if posixpath.basename(path) == "pyproject.toml":
            data = projects[path]
            if data is not None:
                roots.update(_source_roots(path, data))
    return tuple(sorted(roots, key=lambda r: (-r.count("/"), r)))


@functools.lru_cache(maxsize=1024)
def _source_roots(path: str, data: bytes) -> tuple[str, ...]:
    """The source roots one ``pyproject.toml`` declares (parsed once per version)."""
    try:
        tool = tomllib.loads(data.decode("utf-8")).get("tool")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ()  # a broken project file names nothing
    if not isinstance(tool, dict):
        return ()
    found = []
    maturin, setuptools, poetry = (tool.get(k) if isinstance(tool.get(k), dict) else {}
                                   for k in ("maturin", "setuptools", "poetry"))
    found.append(maturin.get("python-source"))
    package_dir = setuptools.get("package-dir")
    if isinstance(package_dir, dict):
        found.append(package_dir.get(""))
    for pkg in poetry.get("packages") or () if isinstance(poetry.get("packages"), list) else ():
        if isinstance(pkg, dict):
            found.append(pkg.get("from"))
    base = posixpath.dirname(path)
    roots = []
    for rel in found:
        if isinstance(rel, str) and rel:
            root = posixpath.normpath(posixpath.join(base, rel))
            if root not in (".", base) and not root.startswith("../"):
                roots.append(root)
    return tuple(roots)


class PythonIndex(MemoReferences):
    """Modules, definitions and imports of a Python tree, updated file by file."""

    def __init__(self, module_path) -> None:
        # (path, source roots) -> dotted module path (the unit qualname prefix), named from the
        # tree's pyproject.toml files as the chunk stage names them
        self.module_path = module_path
        self._projects: dict[str, bytes] = {}
        self._roots: tuple[str, ...] = ()
        self.naming = 0  # changes with the source roots (see SymbolIndex.definitions)
        self.files: dict[str, FileSymbols] = {}
        self._layout: _Layout | None = None
        self._cache: dict[tuple[str, str], list[Target]] = {}
        self._members_cache: dict[DefRef, dict[str, list[DefRef]]] = {}
        self._resolved: dict[tuple[str, tuple[str, ...]], tuple[list[DefRef], list[DefRef]]] = {}
        self._related_of: dict[str, dict[int, list[tuple[DefRef, int, str]]]] = {}

    # -- maintenance ---------------------------------------------------------------------
    def update(self, files: dict[str, FileSymbols | None], projects: dict[str, bytes | None]) -> None:
        self.forget_references()
        if projects:
            apply_delta(self._projects, projects)
            roots = python_source_roots(self._projects)
            if roots != self._roots:
                self.naming += 1  # module paths, so the qualified names of definitions, follow the roots
            self._roots = roots
        paths_changed = any((syms is None) == (path in self.files) for path, syms in files.items())
        same_shape = not paths_changed and all(
            syms is None or self.files[path].shape() == syms.shape() for path, syms in files.items())
        if not same_shape:
            self._cache.clear()
            self._members_cache.clear()
            self._resolved.clear()
            self._related_of.clear()
        for path, syms in files.items():
            self._related_of.pop(path, None)  # a definition's text may change with its shape kept
            if syms is None:
                self.files.pop(path, None)
            else:
                self.files[path] = syms
        if paths_changed:
            self._layout = None

    @property
    def layout(self) -> _Layout:
        if self._layout is None:
            self._layout = self._build_layout()
        return self._layout

    def _build_layout(self) -> _Layout:
        modules: dict[str, dict[str, str]] = {}
        subdirs: dict[str, set[str]] = {}
        inits: dict[str, str] = {}
        for path in sorted(self.files):
            d, _, base = path.rpartition("/")
            stem = base.rsplit(".", 1)[0]
            if stem == "__init__":
                if d not in inits or path.endswith(".py"):
                    inits[d] = path
            else:
                names = modules.setdefault(d, {})
                if stem not in names or path.endswith(".py"):  # a module before its stub
                    names[stem] = path
            while d:
                parent, _, name = d.rpartition("/")
                siblings = subdirs.setdefault(parent, set())
                if name in siblings:
                    break
                siblings.add(name)
                d = parent
        roots = {""}
        for parent, names in subdirs.items():
            if "src" in names:
                roots.add(_join(parent, "src"))
        for d in inits:
            if d and _parent(d) not in inits:
                roots.add(_parent(d))
        top: dict[str, list[str]] = {}
        for r in sorted(roots):
            for stem, path in modules.get(r, {}).items():
                top.setdefault(stem, []).append(path)
            for name in sorted(subdirs.get(r, ())):
                top.setdefault(name, []).append(_join(r, name))
        return _Layout(modules, subdirs, inits, roots, top)

    # -- modules -------------------------------------------------------------------------
    def _init(self, mid: str) -> str | None:
        """The file holding a module's namespace (a package's ``__init__``)."""
        if mid in self.files:
            return mid
        return self.layout.inits.get(mid)

    def module_of(self, path: str) -> str:
        """The module id of a file: its path, or its package's directory for ``__init__``."""
        d, _, base = path.rpartition("/")
        return d if base.rsplit(".", 1)[0] == "__init__" else path

    def _submodule(self, mid: str, name: str) -> list[str]:
        if mid in self.files:
            return []  # a plain module has no submodules
        layout = self.layout
        sub = _join(mid, name)
        if sub in layout.inits:
            return [sub]
        found = layout.modules.get(mid, {}).get(name)
        if found is not None:
            return [found]
        if name in layout.subdirs.get(mid, ()):
            return [sub]  # a namespace package
        return []

    def _top(self, from_path: str, name: str) -> list[str]:
        """Top-level module ``name`` as seen from a file: the candidates nearest to it."""
        layout = self.layout
        cands = list(layout.top.get(name, ()))
        d = _parent(from_path)
        if d not in layout.inits and d not in layout.roots:  # a script's or test's own directory
            cands += [c for c in self._submodule(d, name) if c not in cands]
        if len(cands) > 1:
            best = max(_common(c, from_path) for c in cands)
            cands = [c for c in cands if _common(c, from_path) == best]
        return cands

    def _modules(self, from_path: str, level: int, dotted: str) -> list[str]:
        """The modules ``from <level dots><dotted>`` or ``import <dotted>`` names in a file."""
        segs = dotted.split(".") if dotted else []
        if level:
            base = _parent(from_path)
            for _ in range(level - 1):
                if not base:
                    return []
                base = _parent(base)
            cur = [base]
        else:
            if not segs:
                return []
            cur = self._top(from_path, segs[0])
            segs = segs[1:]
        for seg in segs:
            cur = [s for m in cur for s in self._submodule(m, seg)]
            if not cur:
                break
        return cur

    def _exports(self, mid: str, name: str) -> bool:
        """Whether ``from mid import *`` binds ``name``."""
        init = self._init(mid)
        syms = self.files.get(init) if init else None
        if syms is None:
            return False
        return name in syms.all_names if syms.all_names is not None else not name.startswith("_")

    # -- resolution ----------------------------------------------------------------------
    def definition(self, ref: DefRef) -> Def:
        return self.files[ref[0]].defs[ref[1]]

    def lookup(self, mid: str, name: str, depth: int = 0) -> list[Target]:
        """What ``name`` means in module ``mid``'s namespace: its definitions, else its
        imports, else (a package) its submodule, else its star imports."""
        key = (mid, name)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        self._cache[key] = []  # a cycle of imports resolves to nothing
        init = self._init(mid)
        syms = self.files.get(init) if init else None
        out: list[Target] = []
        if syms is not None:
            out = [("def", (init, i)) for i in syms.top.get(name, ())]
            if not out and depth < 8:
                for scope, level, module, imported, bound in syms.imports:
                    if bound == name and not scope:
                        out += self._import_targets(init, level, module, imported, depth + 1)  # type: ignore[arg-type]
        if not out and mid not in self.files:
            out = [("mod", m) for m in self._submodule(mid, name)]
        if not out and syms is not None and depth < 8:
            for scope, level, module, imported, _ in syms.imports:
                if imported == "*" and not scope:
                    for base in self._modules(init, level, module):  # type: ignore[arg-type]
                        if self._exports(base, name):
                            out += self.lookup(base, name, depth + 1)
        out = list(dict.fromkeys(out))
        self._cache[key] = out
        return out

    def _import_targets(self, path: str, level: int, module: str, imported: str | None, depth: int) -> list[Target]:
        if imported is None:
            return [("mod", m) for m in self._modules(path, level, module)]
        out: list[Target] = []
        for base in self._modules(path, level, module):
            out += self.lookup(base, imported, depth)
        return out

    def members(self, ref: DefRef, depth: int = 0) -> dict[str, list[DefRef]]:
        """A class's members by name, its own before those inherited from its bases."""
        hit = self._members_cache.get(ref)
        if hit is not None:
            return hit
        self._members_cache[ref] = {}
        path, i = ref
        syms = self.files[path]
        out = {name: [(path, j) for j in js] for name, js in syms.members.get(i, {}).items()}
        if depth < 8:
            for base in self._bases(ref):
                for name, refs in self.members(base, depth + 1).items():
                    out.setdefault(name, refs)
        self._members_cache[ref] = out
        return out

    def _bases(self, ref: DefRef) -> list[DefRef]:
        d = self.definition(ref)
        out = []
        for base in d.bases:
            final, _ = self.resolve(self.module_of(ref[0]), tuple(base.split(".")))
            out += [r for r in final if r != ref and self.definition(r).kind == "class"]
        return out

    def resolve(self, mid: str, segs: tuple[str, ...]) -> tuple[list[DefRef], list[DefRef]]:
        """What a dotted path means at module scope: (definitions it ends at, classes passed on the way)."""
        key = (mid, segs)
        hit = self._resolved.get(key)
        if hit is None:
            hit = self._resolved[key] = self._walk(self.lookup(mid, segs[0]), segs[1:])
        return hit

    def _walk(self, cur: list[Target], rest: tuple[str, ...]) -> tuple[list[DefRef], list[DefRef]]:
        """Follow attributes from ``cur``; stop at the last step that resolves (``logger.info``
        is ``logger``, ``Config.DEFAULT`` is ``Config``)."""
        trail: list[DefRef] = []
        for seg in rest:
            nxt: list[Target] = []
            for kind, target in cur:
                if kind == "mod":
                    nxt += self.lookup(target, seg)
                elif self.definition(target).kind == "class":
                    nxt += [("def", r) for r in self.members(target).get(seg, ())]
            if not nxt:
                break
            trail += [t for k, t in cur if k == "def"]
            cur = nxt
        return [t for k, t in cur if k == "def"], trail

    def _enclosing_class(self, q: UnitQuery) -> DefRef | None:
        syms = self.files.get(q.path)
        if syms is None:
            return None
        parts = q.local_qualname.split(".")
        for k in range(len(parts), 0, -1):
            i = syms.by_local.get(".".join(parts[:k]))
            if i is not None and syms.defs[i].kind == "class":
                return (q.path, i)
        return None

    def _references(self, q: UnitQuery, related: bool) -> list[Reference]:
        mid = self.module_of(q.path)
        code = _strip(q.code)
        local_imports: dict[str, tuple[int, str, str | None]] = {}
        for m in _IMPORT_STMT.finditer(code):
            for level, module, imported, bound in parse_import(m.group(1)):
                if bound != "*":
                    local_imports[bound] = (level, module, imported)
        cls = self._enclosing_class(q)
        code = _SUPER.sub(_SUPER_NAME, code)
        scan = code if not q.header else q.header + "\n" + code
        found: Counter[str] = Counter(_PATH.findall(scan))
        direct: dict[DefRef, list] = {}
        for text, count in found.items():
            segs = tuple(s.strip() for s in text.split("."))
            first = segs[0]
            if first in KEYWORDS:
                continue
            if first in ("self", "cls") and cls is not None:
                if len(segs) == 1:
                    continue
                final, trail = self._walk([("def", cls)], segs[1:])
            elif first == _SUPER_NAME:
                if cls is None:
                    continue
                final, trail = self._walk([("def", b) for b in self._bases(cls)], segs[1:])
                segs = ("super()",) + segs[1:]
            elif first in local_imports:
                level, module, imported = local_imports[first]
                final, trail = self._walk(self._import_targets(q.path, level, module, imported, 1), segs[1:])
            else:
                final, trail = self.resolve(mid, segs)
            why = ".".join(segs)
            for ref in final + trail:
                if not self._is_self(ref, q):
                    entry = direct.setdefault(ref, [0, why])
                    entry[0] += count
        out = [self._reference(ref, count, "direct", why, q.path) for ref, (count, why) in direct.items()]
        if not related:
            return out
        # methods called on the classes the unit names (`obj.method()`, matched by name)
        calls = set(_METHOD_CALL.findall(code))
        seen = set(direct)
        if calls:
            for ref in list(direct):
                if self.definition(ref).kind != "class":
                    continue
                members = self.members(ref)
                for call in sorted(calls):
                    for member in members.get(call, ()):
                        if member not in seen and not self._is_self(member, q) and \
                                self.definition(member).kind in ("method", "fn"):
                            seen.add(member)
                            out.append(self._reference(member, 1, "method", f".{call}()", q.path))
        # classes in the signatures, bases and class attributes of what the unit names
        for ref in list(direct)[:16]:
            for r2, count, why in self._related(ref):
                if r2 not in seen and not self._is_self(r2, q):
                    seen.add(r2)
                    out.append(self._reference(r2, count, "related", why, q.path))
        return out

    def _related(self, ref: DefRef) -> list[tuple[DefRef, int, str]]:
        """Definitions of the classes named in one definition's skeleton (cached per file)."""
        per_file = self._related_of.setdefault(ref[0], {})
        hit = per_file.get(ref[1])
        if hit is None:
            d = self.definition(ref)
            mid = self.module_of(ref[0])
            names = Counter(m.group(1) for m in _PATH.finditer(_strip(d.text)))
            hit = []
            for name, count in names.items():
                segs = tuple(s.strip() for s in name.split("."))
                if not segs[-1][:1].isupper() or segs[-1] == d.name or segs[0] in KEYWORDS:
                    continue
                for r2 in self.resolve(mid, segs)[0]:
                    if r2 != ref:
                        hit.append((r2, count, f"in {d.name}"))
            per_file[ref[1]] = hit
        return hit

    def _is_self(self, ref: DefRef, q: UnitQuery) -> bool:
        """The unit itself, a unit it contains, or one containing it."""
        if ref[0] != q.path:
            return False
        local = self.definition(ref).local
        own = q.local_qualname
        base = own.split("#", 1)[0]
        return local == own or local.startswith(base + ".") or own.startswith(local.split("#", 1)[0] + ".")

    def _reference(self, ref: DefRef, count: int, tier: str, why: str, from_path: str) -> Reference:
        d = self.definition(ref)
        a = [p for p in _parent(from_path).split("/") if p]
        b = [p for p in _parent(ref[0]).split("/") if p]
        common = 0
        for x, y in zip(a, b):
            if x != y:
                break
            common += 1
        prefix = self.module_path(ref[0], self._roots)
        return Reference(path=ref[0], qualname=f"{prefix}::{d.local}" if prefix else d.local, kind=d.kind,
                         text=d.text, count=count, distance=(len(a) - common) + (len(b) - common), tier=tier,
                         why=why, name=d.name)

    def definitions(self, path: str) -> list[Reference]:
        """Every definition of one file (for strategies that rank whole files)."""
        syms = self.files.get(path)
        if syms is None:
            return []
        return [self._reference((path, i), 0, "file", "defined", path) for i in range(len(syms.defs))]
