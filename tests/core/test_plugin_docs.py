"""docs/plugins.md against the code: hooks and their signatures, what the pipeline uses on
each kind's objects, the records plugins fill in, and the entry points to copy; and every
plugin kind exercised by some test."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

from hydra_plugins.commitforge_searchpath import CONF_GROUP

from core import hookspecs
from core.chunk import Chunk, Chunker
from core.context import Reference, UnitQuery
from core.examples import Format, Segment, Tokenizer
from core.language import Language, SymbolIndex
from core.records import CommitRecord, ContextItem, FileChange, ParsedBlob, Unit
from core.registry import ENTRY_POINT_GROUP, PluginRegistry

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
EXAMPLE = ROOT / "examples" / "commitforge-example"


def hookspec_functions() -> dict[str, object]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {name: fn for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, marker)}


def kind_sections() -> dict[str, str]:
    """The text of each ``### `kind``` section of the docs."""
    parts = re.split(r"^### `([a-z_]+)`\s*$", DOC, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1].split("\n## ")[0] for i in range(1, len(parts), 2)}


def mentions(section: str, member: str) -> bool:
    return re.search(rf"`{re.escape(member)}[`(.\[]", section) is not None


# -- hooks ---------------------------------------------------------------------------------
def test_one_hook_per_kind_each_documented_with_its_signature():
    hooks = hookspec_functions()
    assert sorted(hooks) == sorted(f"register_{k}" for k in hookspecs.KINDS)
    sections = kind_sections()
    assert list(sections) == list(hookspecs.KINDS), "one '### `kind`' section per kind, in pipeline order"
    for kind in hookspecs.KINDS:
        name = f"register_{kind}"
        line = f"def {name}{inspect.signature(hooks[name])}:"
        assert line in sections[kind], f"docs/plugins.md: the {kind} section lacks the signature line {line!r}"
    documented = set(re.findall(r"\bdef (register_\w+)\(", DOC))
    assert documented <= set(hooks), f"docs/plugins.md documents hooks that do not exist: {documented - set(hooks)}"


# -- what the pipeline uses on each kind's objects ---------------------------------------------
_OWNERS = {"self", "run", "r"}  # Run attributes are named after the kinds: self.chunker, run.builder
_TYPED = {"Language": "language", "Chunker": "chunker", "Tokenizer": "tokenizer", "Format": "format"}


def _kind_of(node: ast.AST, alias: dict[str, str]) -> str | None:
    """The kind of plugin object ``node`` evaluates to, if it is one."""
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in _OWNERS and node.attr in hookspecs.KINDS):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "languages":
        return "language"
    return alias.get(node.id) if isinstance(node, ast.Name) else None


def used_members(paths: list[Path]) -> dict[str, dict[str, set[str]]]:
    """kind -> member -> files, for every attribute read (or getattr/hasattr) on a plugin
    object in ``paths``: ``run.builder.rows``, ``lang.parse`` after ``lang =
    self.languages[...]``, ``fmt.segments`` for a parameter typed ``Format``..."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            alias: dict[str, str] = {}
            for arg in fn.args.args + fn.args.kwonlyargs:
                ann = arg.annotation
                typed = ann.id if isinstance(ann, ast.Name) else ann.value if isinstance(ann, ast.Constant) else None
                if typed in _TYPED:
                    alias[arg.arg] = _TYPED[typed]
                elif arg.arg == "executor":
                    alias[arg.arg] = "executor"

            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    kind = _kind_of(node.value, alias)
                    if kind:
                        alias[node.targets[0].id] = kind
                elif isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.target, ast.Name):
                    it = node.iter
                    if (isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) and it.func.attr == "values"
                            and isinstance(it.func.value, ast.Attribute) and it.func.value.attr == "languages"):
                        alias[node.target.id] = "language"
            for node in ast.walk(fn):
                if isinstance(node, ast.Attribute):
                    kind, member = _kind_of(node.value, alias), node.attr
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                      and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
                    kind, member = _kind_of(node.args[0], alias), node.args[1].value
                else:
                    continue
                if kind:
                    found[kind][member].add(path.name)
    return found


def test_every_member_the_pipeline_uses_is_documented_for_its_kind():
    paths = sorted((ROOT / "src" / "core").glob("*.py")) + sorted((ROOT / "src" / "plugins").glob("*.py"))
    used = used_members(paths)
    # the scan must see the calls each stage is known to make, or it has gone blind
    assert {"parse", "cache_key", "extensions"} <= set(used["language"]) and "chunk" in used["chunker"]
    assert "items" in used["context"] and "build" in used["builder"] and "map" in used["executor"]
    sections = kind_sections()
    missing = [f"{kind}.{member} (used in {', '.join(sorted(files))})"
               for kind, members in used.items() for member, files in sorted(members.items())
               if not mentions(sections.get(kind, ""), member)]
    assert not missing, "docs/plugins.md does not document: " + "; ".join(missing)


PROTOCOLS = {
    "source": [CommitRecord, FileChange],
    "language": [Language, SymbolIndex, ParsedBlob, Unit, Reference],
    "chunker": [Chunker, Chunk],
    "context": [UnitQuery, ContextItem],
    "tokenizer": [Tokenizer],
    "format": [Format, Segment],
}


def members(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]
    own = [n for n in vars(cls) if not n.startswith("_")]
    return list(dict.fromkeys([*getattr(cls, "__annotations__", {}), *own]))


@pytest.mark.parametrize("kind", sorted(PROTOCOLS))
def test_protocols_and_records_are_documented_in_their_kinds_section(kind):
    section = kind_sections()[kind]
    missing = [f"{cls.__name__}.{m}" for cls in PROTOCOLS[kind] for m in members(cls) if not mentions(section, m)]
    assert not missing, f"the {kind} section of docs/plugins.md does not mention: {', '.join(missing)}"


# -- entry points ------------------------------------------------------------------------------
def test_entry_point_snippet_matches_the_example_package():
    blocks = re.findall(r"```toml\n(.*?)```", DOC, flags=re.DOTALL)
    snippets = [tomllib.loads(b) for b in blocks if "[project.entry-points." in b]
    assert len(snippets) == 1, "docs/plugins.md should hold one TOML block with the entry points"
    documented = snippets[0]["project"]["entry-points"]
    example = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))["project"]["entry-points"]
    assert documented == example
    assert set(example) == {ENTRY_POINT_GROUP, CONF_GROUP}
    # the values name what is in the example's source tree
    src = EXAMPLE / "src"
    for value in example[ENTRY_POINT_GROUP].values():
        assert (src / (value.replace(".", "/") + ".py")).is_file(), value
    for value in example[CONF_GROUP].values():
        assert (src / value.replace(".", "/") / "__init__.py").is_file(), value


# -- every kind exercised by a test ------------------------------------------------------------
def exercised_kinds(paths: list[Path]) -> dict[str, set[str]]:
    """kind -> how tests exercise a plugin of that kind (``file: evidence``). Evidence is one of:
    a hook implementation ``register_<kind>`` (a plugin a test registers); a config override
    selecting or configuring the group (``"chunker=window"``, ``f"format={fmt}"``,
    ``"executor.workers=2"``; no whitespace, so error messages do not count); a registry call ``create/validate/get("<kind>", ...)``; or an
    import of a built-in plugin's factory (``from plugins.sources import GitSource``)."""
    factories: dict[tuple[str, str], str] = {}
    for info in PluginRegistry(load_entry_points=False).all():
        factories[(info.factory.__module__, info.factory.__qualname__)] = info.kind
    override = re.compile(rf"^\+{{0,2}}({'|'.join(hookspecs.KINDS)})(\.[A-Za-z_][\w.]*)?=")
    found: dict[str, set[str]] = defaultdict(set)
    for path in paths:
        rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("register_"):
                kind = node.name.removeprefix("register_")
                if kind in hookspecs.KINDS:
                    found[kind].add(f"{rel}: registers a {kind} plugin ({node.name})")
            text = None
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                text = str(node.values[0].value)
            if text is not None and not re.search(r"\s", text) and (m := override.match(text)):
                found[m.group(1)].add(f"{rel}: config override {text!r}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("create", "validate", "get") and node.args
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value in hookspecs.KINDS):
                found[node.args[0].value].add(f"{rel}: registry.{node.func.attr}({node.args[0].value!r})")
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    kind = factories.get((node.module, alias.name))
                    if kind:
                        found[kind].add(f"{rel}: uses the {kind} plugin {alias.name}")
    return found


def test_every_kind_has_a_test_exercising_a_plugin_of_that_kind():
    tests = sorted(p for p in (ROOT / "tests").rglob("*.py") if p.resolve() != Path(__file__).resolve())
    found = exercised_kinds(tests)
    missing = [k for k in hookspecs.KINDS if not found.get(k)]
    assert not missing, (f"no test exercises a plugin of kind {missing}: register one (a register_<kind> hook), "
                         "select or configure it (\"<kind>=NAME\"), create it through the registry, or use a "
                         "built-in one's class")


def test_the_kind_coverage_scan_recognises_each_form_of_evidence(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "from plugins.sources import GitSource\n"
        "def register_writer(register): ...\n"
        "def test_x(fmt, reg):\n"
        "    run(f'format={fmt}', 'executor.workers=2', '+chunker=window', 'chunk=no', 'builder_x=1',\n"
        "        'tokenizer=hf is not installed')\n"
        "    reg.create('split', {})\n")
    assert sorted(exercised_kinds([sample])) == ["chunker", "executor", "format", "source", "split", "writer"]
