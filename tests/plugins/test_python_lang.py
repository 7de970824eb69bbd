"""The Python language plugin: units, spans, cuts, the symbol index, and a pipeline run
on a scripted package history with context=imports."""

from __future__ import annotations

import pickle
import random

import pytest

from core.chunk import unpack_cuts
from core.context import UnitQuery
from core.records import ParsedBlob
from plugins.chunkers import AstChunker, AstChunkerConfig
from plugins.python_lang import CUT_UNIT, PythonLanguage, python_module_path
from plugins.python_symbols import PythonIndex, parse_import, summarize

from ..conftest import ScriptedRepo, manifest, read_chunks, run_pipeline

SOURCE = '''"""Ledger module — «centimes» 💶 before any unit."""
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Store

# the largest amount
LIMIT: int = 10_000
low, high = 0, LIMIT
__all__ = ["Ledger", "total"]
os.environ["X"] = "1"
LIMIT += 1


@cached  # trailing comment stays on its line
def total(entries: list[int],
          start: int = 0) -> int:
    """Sum of entries.

    More words."""
    def helper(x):
        return x
    return sum(helper(e) for e in entries) + start


class Ledger(Base, metaclass=Meta):
    """A ledger of «entries»."""
    currency: str = "EUR"

    def __init__(self) -> None:
        from .store import Memory
        self.store = Memory()

    # the balance, cached
    @property
    def balance(self) -> int:
        return total(self.store.all())

    @balance.setter
    def balance(self, value: int) -> None:
        raise AttributeError

    class Entry:
        def amount(self) -> int:
            return 1


try:
    from fast import speedup
except ImportError:
    def speedup(f):
        return f


async def fetch(url: str) -> bytes:
    return b""

type Amount = int
'''


@pytest.fixture(scope="module")
def parsed() -> ParsedBlob:
    return PythonLanguage().parse(SOURCE.encode())


def unit(parsed: ParsedBlob, local: str):
    return next(u for u in parsed.units if u.local_qualname == local)


def test_units_kinds_and_qualified_names(parsed):
    assert [(u.kind, u.local_qualname) for u in parsed.units] == [
        ("assign", "LIMIT"),
        ("assign", "low"),
        ("assign", "__all__"),
        ("fn", "total"),
        ("class", "Ledger"),
        ("method", "Ledger.__init__"),
        ("method", "Ledger.balance"),
        ("method", "Ledger.balance#2"),
        ("class", "Ledger.Entry"),
        ("method", "Ledger.Entry.amount"),
        ("fn", "speedup"),  # a conditional definition (in an except block)
        ("fn", "fetch"),
        ("type", "Amount"),
    ]
    assert not parsed.has_error


def test_spans_slice_back_to_the_text_after_non_ascii(parsed):
    data = SOURCE.encode()
    assert len(data) > len(SOURCE)  # non-ASCII before every unit: byte and char offsets differ
    for u in parsed.units:
        assert data[u.start_byte:u.end_byte].decode() == u.text
        assert SOURCE[u.char_start:u.char_end] == u.text
        assert SOURCE.splitlines()[u.start_line - 1].strip().startswith(u.text.splitlines()[0].strip())
        assert SOURCE.splitlines()[u.end_line - 1].rstrip().endswith(u.text.splitlines()[-1].rstrip())


def test_signatures_headers_decorators_comments_and_nested_functions(parsed):
    total = unit(parsed, "total")
    assert total.signature == "def total(entries: list[int], start: int = 0) -> int:"
    assert total.text.startswith("@cached  # trailing comment")  # decorators belong to the definition
    assert "def helper(x)" in total.text  # a nested function is part of its function
    assert not any(u.name == "helper" for u in parsed.units)
    assert total.header is None and total.parent is None
    assert total.text[:total.body_open].endswith("-> int:")

    limit = unit(parsed, "LIMIT")
    assert limit.text == "# the largest amount\nLIMIT: int = 10_000"  # a comment right above belongs to it
    assert limit.signature == "LIMIT: int"
    assert unit(parsed, "low").signature == "low, high"

    balance = unit(parsed, "Ledger.balance")
    assert balance.kind == "method" and balance.header == "class Ledger(Base, metaclass=Meta):"
    assert balance.text.startswith("# the balance, cached\n    @property\n    def balance(self)")
    assert unit(parsed, "Ledger.balance#2").text.startswith("@balance.setter")
    assert parsed.units[balance.parent].local_qualname == "Ledger"
    amount = unit(parsed, "Ledger.Entry.amount")
    assert amount.header == "class Entry:" and parsed.units[amount.parent].local_qualname == "Ledger.Entry"
    assert unit(parsed, "fetch").signature == "async def fetch(url: str) -> bytes:"


def test_class_skeleton_elides_members_and_whitespace(parsed):
    ledger = unit(parsed, "Ledger")
    assert ledger.skeleton == 'classLedger(Base,metaclass=Meta):"""Aledgerof«entries»."""currency:str="EUR"'
    assert unit(parsed, "total").skeleton is None


def test_imports_are_declarations_with_their_enclosing_unit(parsed):
    init = parsed.units.index(unit(parsed, "Ledger.__init__"))
    assert parsed.decls == [
        ["import", None, "import os", 2],
        ["import", None, "from typing import TYPE_CHECKING", 3],
        ["import", None, "from .store import Store", 6],
        ["import", init, "from .store import Memory", 32],
        ["import", None, "from fast import speedup", 50],
    ]


def test_syntax_error_is_flagged_on_the_unit_only():
    src = b"def good():\n    return 1\n\ndef bad(:\n    return 2\n\nclass Fine:\n    x = 1\n"
    parsed = PythonLanguage().parse(src)
    assert parsed.has_error
    flags = {u.name: u.has_error for u in parsed.units}
    assert flags == {"good": False, "bad": True, "Fine": False}


def test_stored_blob_and_pickled_language_give_the_same_units(parsed):
    assert ParsedBlob.from_dict(parsed.to_dict()).to_dict() == parsed.to_dict()
    lang = pickle.loads(pickle.dumps(PythonLanguage()))
    assert lang.parse(SOURCE.encode()).to_dict() == parsed.to_dict()
    assert lang.cache_key.startswith("python-x") and "tree-sitter-python" in lang.versions()


INCREMENTAL_EDITS = [
    ("return 1", "return 2"),
    ("type Amount = int\n", ""),  # deletion at the end
    ("# the largest amount\n", "# «the» largest amount ✓\n"),  # non-ASCII inserted before units
    ("# the balance, cached\n    @property", "# the balance, cached\n\n    @property"),  # the comment detaches
    ("    @property\n", ""),  # a decorator removed
    ("class Entry:", "class Entry(Base):"),
    ("    def amount(self) -> int:\n            return 1", "    def amount(self) -> int:\n        return 1"),  # dedent
    ("def total(entries", "def total(entries, *more"),
    ("async def fetch(url: str) -> bytes:", "async def fetch(url: str -> bytes:"),  # syntax error
    ("try:\n    from fast", "if True:\n    from fast"),
    ('"""A ledger', '"""A «ledger»'),
]


@pytest.mark.parametrize("old,new", INCREMENTAL_EDITS)
def test_incremental_parse_gives_the_units_of_a_fresh_parse(old, new):
    lang = PythonLanguage()
    v1 = SOURCE.encode()
    base = lang.parse(v1)
    assert old in SOURCE
    v2 = SOURCE.replace(old, new, 1).encode()
    incremental = lang.parse(v2, previous=(v1, base))
    assert incremental.to_dict() == PythonLanguage().parse(v2).to_dict()
    assert lang.parse(v1, previous=(v2, incremental)).to_dict() == base.to_dict()  # and back again


@pytest.mark.parametrize("path,module", [
    ("pkg/sub/mod.py", "pkg.sub.mod"),
    ("pkg/__init__.py", "pkg"),
    ("src/pkg/mod.py", "pkg.mod"),
    ("libs/core/src/core_lib/__init__.py", "core_lib"),
    ("setup.py", "setup"),
    ("tests/test_x.py", "tests.test_x"),
    (".github/scripts/bump.py", "_github.scripts.bump"),  # no identifier: still a dotted name
    ("my-tools/2020/gen-docs.py", "my_tools._2020.gen_docs"),
])
def test_module_path_from_file_path(path, module):
    assert python_module_path(path) == module


def test_module_paths_strip_the_source_roots_pyproject_files_declare():
    name = PythonLanguage().module_paths({
        "pyproject.toml": b'[tool.maturin]\npython-source = "python"\n',
        "tools/pyproject.toml": b'[tool.poetry]\npackages = [{include = "kit", from = "lib"}]\n',
        "legacy/pyproject.toml": b'[tool.setuptools.package-dir]\n"" = "code"\n',
        "broken/pyproject.toml": b"[tool.maturin\n",  # not TOML: names nothing
    })
    assert name("python/pydantic_core/core_schema.py") == "pydantic_core.core_schema"
    assert name("python/pydantic_core/__init__.py") == "pydantic_core"
    assert name("tools/lib/kit/run.py") == "kit.run"
    assert name("legacy/code/old/x.py") == "old.x"
    assert name("tests/test_x.py") == "tests.test_x"  # outside every root: from its path
    assert name("src/pkg/a.py") == "pkg.a"
    assert PythonLanguage().module_paths({"pyproject.toml": b"[project]\nname = 'x'\n"}) is python_module_path


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_cut_points_equal_their_definition_by_rows_and_columns(newline):
    """The cut collector reads byte offsets; its cuts are those rows and columns define: at
    a line's start before a node that starts one, else at the node ranked CUT_MID_LINE
    deeper, and none before a comment on the line where the statement before it ends."""
    from core.chunk import CUT_MID_LINE, CUT_MIN
    from plugins.python_lang import ATOMIC, _collect_cuts

    def by_points(node, depth, out):
        prev = None
        for child in node.children:
            if prev is not None and not (child.type == "comment" and child.start_point.row == prev.end_point.row):
                if child.start_point.row > prev.end_point.row:
                    out.append((child.start_byte - child.start_point.column, depth))
                else:
                    out.append((child.start_byte, depth + CUT_MID_LINE))
            prev = child
            if child.end_byte - child.start_byte > CUT_MIN and child.child_count and child.type not in ATOMIC:
                by_points(child, depth + 1, out)

    lines = ["def big(a, b):"]
    for i in range(40):
        lines += [f"    x{i} = f({i}, a, [b, {i}])  # note {i}", f"    # about y{i}",
                  f"    y{i} = g(x{i}); z{i} = h(y{i}, \\", f"        {i})", ""]
    lines += ["    return " + " + ".join(f"t{i}(a)" for i in range(60)), ""]
    source = newline.join(lines).encode()
    tree = PythonLanguage()._ensure()[0].parse(source)
    fn = tree.root_node.named_children[0]
    fast: list = []
    slow: list = []
    _collect_cuts(fn, source, 0, 0, fast)
    by_points(fn, 0, slow)
    assert fast == slow and len(fast) > 200
    assert any(d >= CUT_MID_LINE for _, d in fast)


def test_oversize_function_is_cut_at_statement_boundaries_by_the_ast_chunker():
    body = "\n".join(f"    value_{i} = compute({i}, 'café {i}')  # «{i}»" for i in range(120))
    src = f"# «header» ✓\n@trace\ndef big(a: int,\n        b: int) -> int:\n    \"\"\"{'x' * 700}\"\"\"\n{body}\n    return a\n\n\ndef small():\n    return 1\n"
    parsed = PythonLanguage().parse(src.encode())
    big, small = parsed.units
    assert len(big.text) > CUT_UNIT and big.cuts and small.cuts == b""
    cuts = unpack_cuts(big.cuts)
    assert [off for off, _ in cuts] == sorted(off for off, _ in cuts)
    for off, _ in cuts:
        assert not (big.text[off - 1].isalnum() and big.text[off].isalnum())  # never inside a word
        assert big.text[:off].count('"""') % 2 == 0  # never inside the docstring
    chunks = AstChunker(AstChunkerConfig(max_chars=CUT_UNIT)).chunk(parsed, PythonLanguage(), "pkg/calc.py")
    chunk = next(c for c in chunks if c.name == "big")
    assert chunk.qualname == "pkg.calc::big"
    pieces = chunk.pieces
    assert len(pieces) > 3 and all(len(p) <= CUT_UNIT for p in pieces)
    header = "@trace\ndef big(a: int,\n        b: int) -> int:\n"
    for piece in pieces[1:]:
        # later pieces repeat the definition's opening and hold whole statements
        assert piece.startswith(("# «header» ✓\n" + header + "    value_", "# «header» ✓\n" + header + "    return"))
        assert piece.rstrip("\n").endswith(("»", "return a"))
    assert pieces[0].count('"""') == 2  # the docstring is one token: never split
    assert "".join(p.split(header, 1)[1] if i else p for i, p in enumerate(pieces)).count("value_") == 120


# -- the symbol index ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("import os", [(0, "os", None, "os")]),
    ("import a.b.c", [(0, "a", None, "a")]),
    ("import a.b as c, d", [(0, "a.b", None, "c"), (0, "d", None, "d")]),
    ("from . import x", [(1, "", "x", "x")]),
    ("from ..pkg.mod import A as B, C", [(2, "pkg.mod", "A", "B"), (2, "pkg.mod", "C", "C")]),
    ("from m import (\n    a,  # first\n    b as c,\n)", [(0, "m", "a", "a"), (0, "m", "b", "c")]),
    ("from m import *", [(0, "m", "*", "*")]),
    ("from __future__ import annotations", []),
])
def test_import_statements_flatten_to_bindings(text, expected):
    assert parse_import(text) == expected


PACKAGE = {
    "src/shop/__init__.py": '"""A shop."""\nfrom .models import Item, Cart as Basket\nfrom .pricing import *\n',
    "src/shop/models.py": '''from dataclasses import dataclass


@dataclass
class Item:
    """An item for sale.

    Longer text."""
    name: str
    price: int

    def discounted(self, pct: int) -> int:
        return self.price * (100 - pct) // 100


class Cart:
    def __init__(self) -> None:
        self.items: list[Item] = []

    def add(self, item: Item) -> None:
        self.items.append(item)

    def size(self) -> int:
        return len(self.items)


class BigCart(Cart):
    def add(self, item: Item) -> None:
        super().add(item)
        self.size()
''',
    "src/shop/pricing.py": '''from . import models

TAX = 20
__all__ = ["total", "TAX"]


def total(cart: models.Cart) -> int:
    return sum(i.price for i in cart.items) * (100 + TAX) // 100


def hidden() -> int:
    return 0
''',
    "src/shop/cli/__init__.py": "",
    "src/shop/cli/main.py": '''import shop.pricing as pr
from shop import Basket, Item, total, hidden
from ..models import BigCart


def run() -> int:
    cart = Basket()
    cart.add(Item("pen", 3))
    big = BigCart()
    return pr.total(cart) + total(big)
''',
    "src/plugins/tools/hammer.py": "def hit(): ...\n",  # a namespace package
    "tests/helpers.py": "from shop import Item\n\n\ndef make():\n    return Item('x', 1)\n",
    "tests/test_shop.py": '''from helpers import make
from plugins.tools import hammer


def test_item():
    import shop.models as m
    assert make().discounted(0) == m.Item("a", 1).price
    hammer.hit()
''',
}


def _index(files: dict[str, str]) -> tuple[PythonIndex, dict[str, ParsedBlob]]:
    lang = PythonLanguage()
    parsed = {p: lang.parse(t.encode()) for p, t in files.items()}
    idx = PythonIndex(python_module_path)
    idx.update({p: summarize(x, 1200, 0) for p, x in parsed.items()}, {})
    return idx, parsed


def _query(parsed: dict[str, ParsedBlob], path: str, local: str) -> UnitQuery:
    blob = parsed[path]
    u = unit(blob, local)
    return UnitQuery(path=path, lang="python", code=u.text, header=u.header,
                     qualname=f"{python_module_path(path)}::{local}", local_qualname=local, parsed=blob,
                     lines=(u.start_line, u.end_line))


def _refs(idx: PythonIndex, parsed, path: str, local: str) -> dict[str, tuple[str, str]]:
    return {r.qualname: (r.tier, r.why) for r in idx.references(_query(parsed, path, local))}


def test_references_through_reexports_aliases_stars_and_relative_imports():
    idx, parsed = _index(PACKAGE)
    run = _refs(idx, parsed, "src/shop/cli/main.py", "run")
    assert run["shop.models::Cart"] == ("direct", "Basket")  # `Cart as Basket` re-exported by __init__
    assert run["shop.models::Item"] == ("direct", "Item")
    assert run["shop.pricing::total"][0] == "direct"  # `import shop.pricing as pr` and the star re-export
    assert run["shop.models::BigCart"] == ("direct", "BigCart")  # `from ..models import`
    assert run["shop.models::BigCart.add"] == ("method", ".add()")  # obj.method() on the classes it names
    assert run["shop.models::Cart.add"] == ("method", ".add()")
    assert "shop.pricing::hidden" not in run  # not in pricing's __all__: the star import does not bind it


def test_references_through_self_super_bases_and_local_imports():
    idx, parsed = _index(PACKAGE)
    add = _refs(idx, parsed, "src/shop/models.py", "BigCart.add")
    assert add["shop.models::Cart.add"] == ("direct", "super().add")
    assert add["shop.models::Cart.size"] == ("direct", "self.size")  # inherited from the base class
    assert add["shop.models::Cart"][0] == "direct"  # the base in the class header
    assert "shop.models::BigCart.add" not in add and "shop.models::BigCart" not in add  # never itself
    total = _refs(idx, parsed, "src/shop/pricing.py", "total")
    assert total["shop.models::Cart"] == ("direct", "models.Cart")  # `from . import models`
    assert total["shop.pricing::TAX"] == ("direct", "TAX")  # same-file definition
    assert total["shop.models::Item"] == ("related", "in Cart")  # a class in the signatures of Cart
    test = _refs(idx, parsed, "tests/test_shop.py", "test_item")
    assert test["tests.helpers::make"][0] == "direct"  # a test's own directory is an import root
    assert test["shop.models::Item"] == ("direct", "m.Item")  # a function-local `import ... as`
    assert test["plugins.tools.hammer::hit"] == ("direct", "hammer.hit")  # namespace package


def test_rendered_skeletons():
    idx, _ = _index(PACKAGE)
    defs = {r.qualname: r.text for r in idx.definitions("src/shop/models.py")}
    assert defs["shop.models::Item"] == ('@dataclass\nclass Item:\n    """An item for sale.\n\n    Longer text."""\n'
                                         '    name: str\n    price: int\n\n'
                                         '    def discounted(self, pct: int) -> int: ...')
    assert defs["shop.models::Cart.add"] == "class Cart:\n    def add(self, item: Item) -> None: ..."
    assert {r.kind for r in idx.definitions("src/shop/models.py")} == {"class", "method"}
    pricing = {r.qualname: r.text for r in idx.definitions("src/shop/pricing.py")}
    assert pricing["shop.pricing::total"] == "def total(cart: models.Cart) -> int: ..."
    assert pricing["shop.pricing::TAX"] == "TAX = 20"
    assert idx.definitions("missing.py") == []


def test_incremental_updates_equal_a_fresh_index():
    lang = PythonLanguage()
    rng = random.Random(11)
    versions = [
        "from .b import *\nfrom . import c\n\ndef f{i}():\n    return c.K{j}\n",
        "__all__ = ['K{i}']\nK{i} = 1\nK{j} = 2\n\nclass C{i}:\n    def m(self):\n        return K{j}\n",
        "from pkg.a import f{j} as g\n\nclass D(C{i}):\n    def run(self):\n        self.m()\n        return g()\n",
        "",
        "import pkg.b as b\n\ndef f{i}(x: 'b.C{j}'):\n    return b.C{j}().m()\n",
    ]
    paths = ["pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/sub/d.py", "tools/e.py"]
    idx = PythonIndex(python_module_path)
    tree: dict[str, str] = {}
    for step in range(40):
        changes: dict[str, str | None] = {}
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(paths)
            if path in tree and rng.random() < 0.25:
                changes[path] = None
            else:
                changes[path] = rng.choice(versions).format(i=rng.randint(1, 2), j=rng.randint(1, 2))
        for p, t in changes.items():
            if t is None:
                tree.pop(p, None)
            else:
                tree[p] = t
        idx.update({p: summarize(lang.parse(t.encode()), 1200, 0) if t is not None else None
                    for p, t in changes.items()}, {})
        fresh, parsed = _index(tree)
        for path, blob in parsed.items():
            for u in blob.units:
                q = _query(parsed, path, u.local_qualname)
                got = [(r.path, r.qualname, r.tier, r.count, r.text) for r in idx.references(q)]
                assert got == [(r.path, r.qualname, r.tier, r.count, r.text) for r in fresh.references(q)], step


# -- a pipeline run on a scripted history ---------------------------------------------------------

SHOP = {
    "src/shop/__init__.py": PACKAGE["src/shop/__init__.py"],
    "src/shop/models.py": PACKAGE["src/shop/models.py"],
    "src/shop/pricing.py": '''from . import models

TAX = 20
__all__ = ["total", "TAX"]


def total(cart: models.Cart) -> int:
    return sum(i.price for i in cart.items) * (100 + TAX) // 100


def _helper(cart):
    count = len(cart.items)
    return count * 2 + 1
''',
    "src/shop/cli/__init__.py": "",
    "src/shop/cli/main.py": '''import shop.pricing as pr
from shop import Basket, Item


def run() -> int:
    cart = Basket()
    cart.add(Item("pen", 3))
    return pr.total(cart)
''',
}


def _context(rows: list[dict], qualname: str, commit: str) -> dict[str, dict]:
    hits = [r for r in rows if r["qualname"] == qualname and r["commit"] == commit]
    assert len(hits) == 1, f"{qualname} at {commit}: {len(hits)} unit changes"
    return {c["qualname"]: c for c in hits[0]["context"]}


def test_pipeline_pairs_units_and_follows_definitions_through_history(scripted_repo: ScriptedRepo, tmp_path):
    first = scripted_repo.commit("shop package", SHOP)
    pricing = (SHOP["src/shop/pricing.py"]
               .replace("def total(cart: models.Cart) -> int:", "def total(cart: models.Cart, tax: int = TAX) -> int:")
               .replace("(100 + TAX)", "(100 + tax)")
               .replace("def _helper(cart):", "def subtotal(cart: models.Cart) -> int:\n"
                        "    return sum(i.price for i in cart.items)\n\n\ndef _count_twice(cart):"))
    second = scripted_repo.commit("tax becomes a parameter", {
        "src/shop/pricing.py": pricing,
        "src/shop/cli/main.py": SHOP["src/shop/cli/main.py"].replace("pr.total(cart)", "pr.total(cart, tax=pr.TAX // 2)"),
    })
    run_dir = run_pipeline(tmp_path, f"repo={scripted_repo.path}", "language=python", "context=imports",
                           "stages=[mine,chunk]")
    rows = read_chunks(run_dir)
    changes = {(r["commit"], r["change"], r["kind"], r["qualname"], r["old_qualname"]) for r in rows}
    assert {(first, "added", "fn", "shop.cli.main::run", None),
            (first, "added", "method", "shop.models::Cart.add", None),
            (first, "added", "assign", "shop.pricing::TAX", None),
            (second, "modified", "fn", "shop.pricing::total", None),
            (second, "modified", "fn", "shop.cli.main::run", None),
            (second, "added", "fn", "shop.pricing::subtotal", None),
            (second, "renamed", "fn", "shop.pricing::_count_twice", "shop.pricing::_helper")} <= changes
    assert not any(r["commit"] == second and r["path"] == "src/shop/models.py" for r in rows)  # unchanged file

    before, after = _context(rows, "shop.cli.main::run", first), _context(rows, "shop.cli.main::run", second)
    for ctx in (before, after):
        assert ctx["shop.models::Cart"]["why"] == "direct: Basket"  # re-exported under an alias
        assert ctx["shop.models::Item"]["why"] == "direct: Item"
        assert ctx["shop.models::Cart.add"]["why"] == "method: .add()"
        assert ctx["shop.models::Cart"]["path"] == "src/shop/models.py"
    # the definition as it is at each commit
    assert before["shop.pricing::total"]["text"] == "def total(cart: models.Cart) -> int: ..."
    assert after["shop.pricing::total"]["text"] == "def total(cart: models.Cart, tax: int = TAX) -> int: ..."
    assert "shop.pricing::TAX" not in before and after["shop.pricing::TAX"]["text"] == "TAX = 20"
    total = _context(rows, "shop.pricing::total", second)
    assert {"shop.models::Cart", "shop.pricing::TAX"} <= set(total)

    ctx = manifest(run_dir)["context"]
    assert ctx["strategy"] == "imports" and ctx["refs"] >= 10
    assert ctx["recall"] == 1.0


def test_python_parts_keep_decorators_whole_and_tables_repeat_their_opening():
    lang = PythonLanguage()
    chunker = AstChunker(AstChunkerConfig(max_chars=1000))
    cases = "".join(f"        ({i}, 'case number {i}'),\n" for i in range(25))
    body = "".join(f"    assert check({i}) == {i}\n" for i in range(40))
    src = f"@pytest.mark.parametrize(\n    'n, label',\n    [\n{cases}    ],\n)\ndef test_cases(\n    n,\n    label,\n):\n{body}"
    (fn,) = [c for c in chunker.chunk(lang.parse(src.encode()), lang, "tests/t.py") if c.kind != "class"]
    assert len(fn.pieces) >= 2
    # no part begins mid-decorator; later parts repeat the def (laid out over lines)
    assert all(p.startswith("def test_cases(\n    n,\n    label,\n):\n") for p in fn.pieces[1:])
    table = "SCHEMA = [\n" + "".join(f"    {{'name': 'field_{i}', 'type': 'int'}},\n" for i in range(60)) + "]\n"
    (t,) = chunker.chunk(lang.parse(table.encode()), lang, "s.py")
    assert len(t.pieces) >= 3 and all(p.startswith("SCHEMA = [\n") for p in t.pieces[1:])


def test_a_comment_after_a_unit_on_its_last_line_is_part_of_its_code():
    src = b"TIMEOUT = 30  # seconds\n\nclass A:\n    def f(self):\n        return 1\n"
    lang = PythonLanguage()
    chunks = {c.name: c for c in AstChunker(AstChunkerConfig()).chunk(lang.parse(src), lang, "pkg/m.py")}
    assert chunks["TIMEOUT"].pieces == ["TIMEOUT = 30  # seconds"]  # whole lines
    edited = {c.name: c for c in AstChunker(AstChunkerConfig()).chunk(
        lang.parse(src.replace(b"# seconds", b"# minutes")), lang, "pkg/m.py")}
    assert edited["TIMEOUT"].compare != chunks["TIMEOUT"].compare  # the comment's edit is a change
    assert edited["A"].compare == chunks["A"].compare


def test_a_new_class_brings_its_decorators_docstring_and_attributes_without_its_methods():
    from core.pairing import pair_chunks

    src = (b"@dataclass\nclass Added(Base):\n    \"\"\"doc\"\"\"\n    field_a: int = 0\n\n    def method(self):\n"
           b"        return 1\n\nclass Plain:\n    def f(self):\n        return 2\n")
    lang = PythonLanguage()
    new = AstChunker(AstChunkerConfig()).chunk(lang.parse(src), lang, "pkg/m.py")
    rows = [(ch, n.qualname, n.pieces) for ch, _, n in pair_chunks([], new, renames=True, rename_similarity=0.6)]
    assert rows == [("added", "pkg.m::Added", ['@dataclass\nclass Added(Base):\n    """doc"""\n    field_a: int = 0']),
                    ("added", "pkg.m::Added.method", ["    def method(self):\n        return 1"]),
                    ("added", "pkg.m::Plain.f", ["    def f(self):\n        return 2"])]
