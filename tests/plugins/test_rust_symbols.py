"""The Rust symbol index: use trees, Cargo manifests, module mapping, incremental updates."""

from __future__ import annotations

import random

import pytest

from core.context import UnitQuery
from plugins.rust import RustLanguage, rust_module_path
from plugins.rust_symbols import (
    RustIndex,
    _without_docs,
    field_types,
    parse_cargo,
    parse_use,
    render,
    select_members,
    split_members,
    summarize,
)


@pytest.mark.parametrize("text, expected", [
    ("use a::b::C;", [(("a", "b", "C"), "C")]),
    ("pub use crate::{x, y::z as w, q::*};", [(("crate", "x"), "x"), (("crate", "y", "z"), "w"), (("crate", "q"), "*")]),
    ("use a::{self, b::{c, d::{e as f}}};", [(("a",), "a"), (("a", "b", "c"), "c"), (("a", "b", "d", "e"), "f")]),
    ("use super::super::M as _;", []),  # binds no name
    ("#[cfg(test)]\n/// doc\npub(crate) use ::std::fmt;", [(("std", "fmt"), "fmt")]),
    ("extern crate serde as sd;", [(("serde",), "sd")]),
    ("use r#type::Thing;", [(("type", "Thing"), "Thing")]),
])
def test_use_trees_flatten_to_bindings(text, expected):
    assert parse_use(text) == expected


def test_cargo_manifest_packages_lib_names_and_renamed_dependencies():
    pkg = parse_cargo("crates/net/Cargo.toml", b'''[package]
name = "net-core"
[lib]
name = "netc"
[dependencies]
wire = { path = "../wire", package = "wire-format" }
shared = { workspace = true }
serde = "1"
[target.'cfg(unix)'.dependencies]
unix-io = { path = "../unix-io" }
''', {"shared": "shared-types"})
    assert pkg is not None and pkg.dir == "crates/net" and pkg.lib_name == "netc"
    assert dict(pkg.deps) == {"wire": "wire-format", "shared": "shared-types", "serde": "serde", "unix_io": "unix-io"}
    assert parse_cargo("Cargo.toml", b"[workspace]\nmembers = []\n", {}) is None  # virtual manifest
    assert parse_cargo("Cargo.toml", b"[package\nname=", {}) is None  # broken TOML is no package


def _index(files: dict[str, str], manifests: dict[str, bytes]) -> RustIndex:
    lang = RustLanguage()
    idx = RustIndex(rust_module_path)
    idx.update({p: summarize(lang.parse(t.encode()), 1200, 0) for p, t in files.items()}, manifests)
    return idx


def test_module_mapping_follows_cargo_targets_and_conventions():
    idx = _index({"a/src/lib.rs": "", "a/src/main.rs": "", "a/src/x/mod.rs": "", "a/src/x/y.rs": "",
                  "a/src/bin/tool.rs": "", "a/tests/it.rs": "", "b/src/main.rs": "", "b/src/util.rs": "",
                  "loose/thing.rs": ""},
                 {"a/Cargo.toml": b'[package]\nname = "a-lib"\n', "b/Cargo.toml": b'[package]\nname = "b"\n'})
    assert idx.module_of("a/src/lib.rs") == ("a#lib",)
    assert idx.module_of("a/src/main.rs") == ("a#bin",)
    assert idx.module_of("a/src/x/mod.rs") == ("a#lib", "x")
    assert idx.module_of("a/src/x/y.rs") == ("a#lib", "x", "y")
    assert idx.module_of("a/src/bin/tool.rs") == ("a#bin:tool",)
    assert idx.module_of("a/tests/it.rs") == ("a#tests:it",)
    assert idx.module_of("b/src/util.rs") == ("b#bin", "util")  # a binary-only package
    assert idx.module_of("loose/thing.rs") == ("?loose", "thing")  # outside any package
    assert idx.lib_crates["a_lib"] == "a#lib"


def test_modules_of_a_binary_with_its_own_path_belong_to_that_binary():
    files = {"crates/core/main.rs": "mod flags;\nuse crate::flags::lowargs::LowArgs;\nfn main() { let _a: LowArgs; }\n",
             "crates/core/flags/mod.rs": "pub(crate) mod lowargs;\n",
             "crates/core/flags/lowargs.rs": "pub(crate) struct LowArgs { pub quiet: bool }\n"}
    idx = _index(files, {"Cargo.toml": b'[package]\nname = "ripgrep"\n[[bin]]\nname = "rg"\npath = "crates/core/main.rs"\n'})
    assert idx.module_of("crates/core/main.rs") == ("#bin:rg",)
    assert idx.module_of("crates/core/flags/lowargs.rs") == ("#bin:rg", "flags", "lowargs")
    refs = {qual: found for _, qual, found in _references(idx, RustLanguage(), files)}
    assert [(r[0], r[2]) for r in refs["main"]] == [("crates/core/flags/lowargs.rs", "direct")]


def _state(idx: RustIndex):
    """Everything lookups read, order-insensitive."""
    norm = lambda table: {k: sorted(v) for k, v in table.items() if v}  # noqa: E731
    items = {(m, n): sorted(v) for m, names in idx.items.items() for n, v in names.items() if v}
    uses = {(m, n): sorted(v) for m, names in idx.uses.items() for n, v in names.items() if v}
    return (items, uses, norm(idx.assoc), norm(idx.macros), norm(idx.modules), dict(idx.file_mod))


@pytest.mark.parametrize("seed", [7, 11, 23, 42])
def test_incremental_updates_equal_a_fresh_index(seed):
    """Resolution caches kept across updates (dropped by what each update touches) give
    what a fresh index gives, cycles of glob imports included."""
    lang = RustLanguage()
    rng = random.Random(seed)
    versions = [
        "pub struct S{i};\npub fn f{i}() {{}}\nimpl S{i} {{ pub fn m(&self) {{}} }}\nuse crate::m{j}::*;\n",
        "mod inner {{ pub enum E{i} {{ A }} use super::S{j}; }}\n#[macro_export]\nmacro_rules! mac{i} {{ () => {{}} }}\n",
        '#[path = "other{i}.rs"]\nmod p{i};\npub use self::p{i}::*;\npub trait T{i} {{ fn t(&self); }}\n',
        "",
        # the same shape for every j (the names a lookup reads), a different related type
        "pub enum E1 {{ A }}\npub enum E2 {{ B }}\npub struct S{i} {{ pub a: E{j} }}\n"
        "pub fn f{i}() {{ let x = S{i}::default(); }}\nimpl S{i} {{ pub fn m(&self) {{}} }}\n",
    ]
    manifests = {"Cargo.toml": b'[package]\nname = "demo"\n'}
    idx = RustIndex(rust_module_path)
    idx.update({}, manifests)
    tree: dict[str, str] = {}
    for step in range(60):
        changes: dict[str, str | None] = {}
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(["src/lib.rs", "src/m1.rs", "src/m2.rs", "src/m1/deep.rs", "src/other1.rs", "src/main.rs"])
            if path in tree and rng.random() < 0.25:
                changes[path] = None
            else:
                changes[path] = rng.choice(versions).format(i=rng.randint(1, 3), j=rng.randint(1, 2))
        update_manifests = {}
        if rng.random() < 0.1:
            update_manifests = {"Cargo.toml": b'[package]\nname = "demo"\n[lib]\nname = "demo%d"\n' % step}
            manifests.update(update_manifests)
        for p, t in changes.items():
            if t is None:
                tree.pop(p, None)
            else:
                tree[p] = t
        idx.update({p: summarize(lang.parse(t.encode()), 1200, 0) if t is not None else None
                    for p, t in changes.items()}, update_manifests)
        fresh = _index(tree, manifests)
        assert _state(idx) == _state(fresh), f"step {step}: {changes}"
        # lookups cached across updates that keep every file's shape give what a fresh index gives
        for path, text in tree.items():
            parsed = lang.parse(text.encode())
            for u in parsed.units:
                q = UnitQuery(path=path, lang="rust", code=u.text, header=u.header, qualname=u.local_qualname,
                              local_qualname=u.local_qualname, parsed=parsed, lines=(u.start_line, u.end_line))
                got = [(r.path, r.qualname, r.tier, r.count, r.text) for r in idx.references(q)]
                assert got == [(r.path, r.qualname, r.tier, r.count, r.text) for r in fresh.references(q)]


def test_an_edit_that_keeps_every_name_still_refreshes_what_it_changed():
    """Lookups survive edits inside bodies, but a field's new type must show."""
    lang = RustLanguage()
    text = "pub enum E1 { A }\npub enum E2 { B }\npub struct S { pub a: E1 }\npub fn f() { let x = S::default(); }\n"
    idx = RustIndex(rust_module_path)
    for version in (text, text.replace("pub a: E1", "pub a: E2")):
        parsed = lang.parse(version.encode())
        idx.update({"src/lib.rs": summarize(parsed, 1200, 0)}, {})
        f = next(u for u in parsed.units if u.name == "f")
        q = UnitQuery(path="src/lib.rs", lang="rust", code=f.text, header=None, qualname="f", local_qualname="f",
                      parsed=parsed, lines=(f.start_line, f.end_line))
        refs = {(r.name, r.tier) for r in idx.references(q)}
        assert ("S", "direct") in refs
        assert ("E2" if "a: E2" in version else "E1", "related") in refs
        assert ("E1" if "a: E2" in version else "E2", "related") not in refs


def _references(idx: RustIndex, lang: RustLanguage, tree: dict[str, str]) -> list:
    out = []
    for path, text in sorted(tree.items()):
        parsed = lang.parse(text.encode())
        for u in parsed.units:
            q = UnitQuery(path=path, lang="rust", code=u.text, header=u.header, qualname=u.local_qualname,
                          local_qualname=u.local_qualname, parsed=parsed, lines=(u.start_line, u.end_line))
            out.append((path, u.local_qualname, [(r.path, r.qualname, r.tier, r.count, r.why) for r in idx.references(q)]))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_cached_resolution_is_dropped_exactly_where_an_update_reaches(seed):
    """Every step keeps the caches and drops only the entries that read what changed: a
    module that appears under a cached parent, a type that gains or loses methods, a
    re-export or glob that changes along a chain, a dependency on another workspace crate
    added, renamed or removed, a crate's lib name changed, its edition changed (where `use`
    paths start)."""
    lang = RustLanguage()
    rng = random.Random(seed)
    versions = [
        "pub struct S{i};\npub fn f{i}() {{ crate::m{j}::g{j}(); }}\nimpl S{i} {{ pub fn m(&self) {{}} }}\nuse crate::m{j}::*;\n",
        "pub fn g{i}() {{ let s = S{j}::new(); s.other(); }}\npub use crate::m{j}::S{i};\nuse super::*;\n",
        "pub enum E{i} {{ A }}\nimpl S{j} {{ pub fn new() -> Self {{ S{j} }} pub fn other(&self) {{}} }}\n"
        "pub mod inner{i} {{ pub struct T{j}; }}\n",
        "pub use self::inner::*;\nmod inner {{ pub fn h{i}() {{ super::f{j}(); crate::m{i}::deep::d(); }} }}\n",
        "pub fn d() {{ super::S{i}::new().m(); }}\npub struct S{j} {{ pub e: E{i} }}\n",
        # 2015: `top` and `m{j}` from the crate root, `deep` (found nowhere there) from the module
        "use top;\nuse m{j}::g{j};\nuse deep::d as dd;\npub fn k{i}() {{ top(); g{j}(); dd(); }}\n",
        "",
    ]
    lib = ("pub mod m1;\npub mod m2;\npub use m{j}::S{i};\npub fn top() {{ m{i}::g{j}(); crate::m{j}::inner{i}::T{j}; "
           "deep::d(); UtilU::new(); U2::new(); }}\nuse util::U as UtilU;\nuse u2::U as U2;\n")
    demo = [b'[package]\nname = "demo"\n', b'[package]\nname = "demo"\n[dependencies]\nutil = { path = "util" }\n',
            b'[package]\nname = "demo"\n[dependencies]\nu2 = { path = "util", package = "util" }\n']
    manifests = {"Cargo.toml": demo[0], "util/Cargo.toml": b'[package]\nname = "util"\n'}
    tree = {"src/lib.rs": lib.format(i=1, j=2), "util/src/lib.rs": "pub struct U;\nimpl U { pub fn new() -> U { U } }\n"}
    idx = RustIndex(rust_module_path)
    idx.update({p: summarize(lang.parse(t.encode()), 1200, 0) for p, t in tree.items()}, manifests)
    paths = ["src/lib.rs", "src/m1.rs", "src/m2.rs", "src/m3.rs", "src/m1/deep.rs", "src/m2/deep.rs"]
    for step in range(40):
        changes: dict[str, str | None] = {}
        for _ in range(rng.randint(1, 2)):
            path = rng.choice(paths)
            i, j = rng.randint(1, 3), rng.randint(1, 2)
            if path == "src/lib.rs":
                changes[path] = lib.format(i=i, j=j)
            elif path in tree and rng.random() < 0.3:
                changes[path] = None
            else:
                changes[path] = rng.choice(versions).format(i=i, j=j)
        for p, t in changes.items():
            if t is None:
                tree.pop(p, None)
            else:
                tree[p] = t
        update_manifests = {}
        if rng.random() < 0.3:
            edition = rng.choice([b"", b'edition = "2018"\n'])  # none: 2015
            update_manifests = {"Cargo.toml": rng.choice(demo).replace(b'"demo"\n', b'"demo"\n' + edition)}
        if rng.random() < 0.15:  # the crate name `util` comes and goes (a lib name is no dependency)
            update_manifests["util/Cargo.toml"] = rng.choice([b'[package]\nname = "util"\n',
                                                              b'[package]\nname = "util"\n[lib]\nname = "utl"\n'])
        manifests.update(update_manifests)
        _references(idx, lang, tree)  # fill the caches from the state before the update
        idx.update({p: summarize(lang.parse(t.encode()), 1200, 0) if t is not None else None
                    for p, t in changes.items()}, update_manifests)
        assert _references(idx, lang, tree) == _references(_index(tree, manifests), lang, tree), f"step {step}"


def test_a_definition_that_changes_kind_drops_what_its_kind_decided():
    """``use crate::a::S::*`` brings variants only while ``S`` is an enum: a cached lookup
    must not outlive ``S`` turning from a struct into an enum (same name, same file)."""
    lang = RustLanguage()
    lib = "pub mod a;\npub mod m;\nuse crate::a::S::*;\npub fn f() { let x = A; }\n"
    versions = {"struct": "pub struct S;\n", "enum": "pub enum S { A, B }\n"}
    manifests = {"Cargo.toml": b'[package]\nname = "demo"\n'}
    tree = {"src/lib.rs": lib, "src/a.rs": versions["struct"], "src/m.rs": "pub fn A() {}\n"}
    idx = _index(tree, manifests)
    for kind in ("enum", "struct", "enum"):
        _references(idx, lang, tree)
        tree["src/a.rs"] = versions[kind]
        idx.update({"src/a.rs": summarize(lang.parse(tree["src/a.rs"].encode()), 1200, 0)}, {})
        refs = _references(idx, lang, tree)
        assert refs == _references(_index(tree, manifests), lang, tree)
        f = next(r for path, local, r in refs if local == "f")
        assert any(q.endswith("a::S") for _, q, *_ in f) == (kind == "enum")


@pytest.mark.parametrize("a, b", [
    # globs: `a` globs `b`, `b` globs `a` and `d`
    ("pub use crate::b::*;\n", "pub use crate::a::*;\npub use crate::d::*;\n"),
    # re-exports: `a` re-exports `b::X`, `b` re-exports `a::X` and globs `d`
    ("pub use crate::b::X;\n", "pub use crate::a::X;\npub use crate::d::*;\n"),
])
def test_a_cycle_of_imports_resolves_the_same_in_any_order(a, b):
    """What ``a::X`` means must not depend on whether ``b::X`` was asked first (that lookup
    sees ``a`` half-computed, and the half answer must not be kept for ``a::X``)."""
    files = {"src/lib.rs": "pub mod a;\npub mod b;\npub mod d;\n", "src/a.rs": a, "src/b.rs": b,
             "src/d.rs": "pub struct X;\n"}
    manifests = {"Cargo.toml": b'[package]\nname = "demo"\n'}
    first_b = _index(files, manifests)
    root = first_b.module_of("src/lib.rs")
    assert first_b.resolve(root, ("crate", "b", "X"))
    got = first_b.resolve(root, ("crate", "a", "X"))
    assert got and got == _index(files, manifests).resolve(root, ("crate", "a", "X"))


def test_a_stored_summary_leaves_its_caches_behind():
    """Summaries are pickled into the summary store: the cache an index filled in
    (definitions by local name) is not stored, and comes back equal when asked."""
    import pickle

    parsed = RustLanguage().parse(b"pub struct S { a: u8 }\nimpl S { pub fn f(&self) {} }\nuse a::b;\n")
    syms = summarize(parsed, 1200, 0)
    by_local = syms.by_local()
    back = pickle.loads(pickle.dumps(syms, protocol=5))
    assert back._by_local is None
    assert back.by_local() == by_local and back.defs == syms.defs and back.uses == syms.uses


GLOBS = {
    "src/lib.rs": "mod token;\nmod printer;\nmod util;\n",
    "src/token.rs": "pub enum Token {\n    /// one character\n    Literal(char),\n    Any,\n}\n",
    "src/util.rs": "pub fn test() {}\npub fn Write() {}\n",
    "src/printer.rs": (
        "use crate::token::Token::{self, *};\nuse std::io::{self, Write};\nuse self::Writer::*;\n\n"
        "pub enum Writer { Plain, Colored }\n\n"
        "fn scan(t: Token) -> bool {\n    match t { Literal(c) => c.is_ascii(), _ => false }\n}\n\n"
        "#[test]\nfn checks() {\n    assert!(true);\n}\n\n"
        "fn emit(out: &mut dyn io::Write) {\n    let _ = Plain;\n}\n\n"
        "pub struct Thing;\n\nimpl Thing {\n    pub fn walk(&self, n: u32) {\n        if n > 0 { self.walk(n - 1) }\n    }\n}\n"
    ),
}


def test_glob_imports_of_enums_bring_variants_only_and_named_imports_shadow_globs():
    lang = RustLanguage()
    idx = _index(GLOBS, {"Cargo.toml": b'[package]\nname = "g"\n'})
    refs = {qual: found for path, qual, found in _references(idx, lang, GLOBS) if path == "src/printer.rs"}
    targets = lambda qual: {(r[1], r[4]) for r in refs[qual]}  # noqa: E731
    # `Token` and its variant `Literal` (through the glob) both name the enum
    assert [(r[1], r[3]) for r in refs["scan"]] == [("g::token::Token", 2)]
    assert targets("checks") == set()  # `test` is neither a variant nor imported: no Token, no Writer
    # `io::Write`: `io` is imported (from std), so the globs are not searched for it
    assert targets("emit") == {("g::printer::Writer", "Plain")}
    assert idx.definition(("src/token.rs", "Token")).members == ("Literal", "Any")


def test_a_name_a_glob_reached_module_imports_from_std_shadows_that_modules_globs():
    """`use crate::prelude::*` where the prelude imports `Result` from std and glob-imports
    a module defining another `Result`: rustc takes std's (a named import shadows a glob),
    so the repository's `Result` is not context; a name the prelude lacks still is."""
    files = {
        "src/lib.rs": "mod prelude;\nmod errors;\nmod app;\n",
        "src/errors.rs": "pub enum Result { Ok, Err }\npub struct Report;\n",
        "src/prelude.rs": "pub use std::fmt::Result;\npub use crate::errors::*;\n",
        "src/app.rs": "use crate::prelude::*;\n\npub fn run() -> Result { let _r: Report; Ok(()) }\n",
    }
    lang = RustLanguage()
    idx = _index(files, {"Cargo.toml": b'[package]\nname = "p"\n'})
    refs = {qual: found for path, qual, found in _references(idx, lang, files) if path == "src/app.rs"}
    assert [(r[1], r[2]) for r in refs["run"]] == [("p::errors::Report", "direct")]


def test_a_method_never_gets_its_own_impl_as_context():
    lang = RustLanguage()
    idx = _index(GLOBS, {"Cargo.toml": b'[package]\nname = "g"\n'})
    refs = {qual: found for path, qual, found in _references(idx, lang, GLOBS) if path == "src/printer.rs"}
    # the recursive call matches no other method: the impls of Thing are candidates, but not
    # its own; the struct Thing (named by the header) is not the method's container
    assert [(r[1], r[2]) for r in refs["Thing::walk"]] == [("g::printer::Thing", "direct")]
    assert idx.definition(("src/printer.rs", "Thing#2")).kind == "impl"


def test_enum_variants_skip_attributes_comments_fields_and_discriminants():
    from plugins.rust_symbols import enum_variants

    text = ('/// doc {x}\n#[derive(Debug)] // {\npub enum T<U: Into<u8>> where U: Copy {\n'
            '    /// a { brace\n    #[serde(rename = "lit")]\n    Literal(char, Vec<U>),\n    Any,\n'
            '    Class { negated: bool, ranges: Vec<(char, char)> },\n    Value = 1 << 2,\n'
            '    r#Type = B as isize,\n    Last\n}')
    assert enum_variants(text) == ("Literal", "Any", "Class", "Value", "Type", "Last")
    assert enum_variants("enum Never {}") == ()


MACROS = {
    "crates/util/src/lib.rs": "#[macro_use]\nmod macros;\npub mod checks;\n",
    "crates/util/src/macros.rs": ("macro_rules! debug {\n    ($($t:tt)*) => {};\n}\n\n"
                                  "#[macro_export]\nmacro_rules! ensure {\n    ($e:expr) => {};\n}\n"),
    "crates/util/src/checks.rs": ("#[cfg(test)]\nmod tests {\n    macro_rules! matches {\n        () => {};\n    }\n\n"
                                  "    fn inner() {\n        matches!();\n    }\n}\n\npub fn outer() {\n    debug!(1);\n"
                                  "    matches!(a, b);\n}\n"),
    "crates/app/src/main.rs": ("fn main() {\n    ensure!(true);\n    util::ensure!(true);\n    debug!(x);\n"
                               "    matches!(a, b);\n    writeln!(out);\n}\n"),
    "crates/other/src/lib.rs": "pub fn g() {\n    ensure!(1);\n}\n",
}
MACRO_MANIFESTS = {
    "crates/util/Cargo.toml": b'[package]\nname = "util"\n',
    "crates/app/Cargo.toml": b'[package]\nname = "app"\n[dependencies]\nutil = { path = "../util" }\n',
    "crates/other/Cargo.toml": b'[package]\nname = "other"\n',
}


def test_macros_resolve_within_their_textual_scope_or_exported_to_dependents():
    lang = RustLanguage()
    idx = _index(MACROS, MACRO_MANIFESTS)
    refs = {(path.split("/")[1], qual): sorted({(r[0], r[1], r[4]) for r in found})
            for path, qual, found in _references(idx, lang, MACROS)}
    debug = ("crates/util/src/macros.rs", "util::macros::debug", "debug!")
    ensure = ("crates/util/src/macros.rs", "util::macros::ensure", "ensure!")
    # `#[macro_use] mod macros` widens its macros to the crate; the test module's own macro
    # stays inside it
    assert refs[("util", "outer")] == [debug]
    assert refs[("util", "tests::inner")] == [("crates/util/src/checks.rs", "util::checks::tests::matches", "matches!")]
    # another crate: only exported macros of its dependencies (std's macros are not guessed)
    assert refs[("app", "main")] == [ensure]
    assert refs[("other", "g")] == []  # util is not its dependency
    main = {path: found for path, qual, found in _references(idx, lang, MACROS) if qual == "main"}
    assert [r[3] for r in main["crates/app/src/main.rs"]] == [2]  # `ensure!` and `util::ensure!`


def test_long_trait_skeletons_drop_their_docs_and_signatures_read_on_one_line():
    lang = RustLanguage()
    required = "".join(f"    /// Returns part {i} of the capture, a long explanation follows here.\n"
                       f"    fn part_{i}(&self, index: usize) -> Option<&str>;\n" for i in range(12))
    provided = "    fn interpolate<F>(\n        &self,\n        x: u32,\n    ) -> u32 {\n        x\n    }\n"
    parsed = lang.parse(f"pub trait Captures {{\n{required}{provided}}}\n".encode())
    (trait,) = [d for d in summarize(parsed, 1200, 0).defs if d.kind == "trait"]
    assert "///" not in trait.text and trait.text.count("fn part_") == 12  # the interface stays whole
    assert "    fn interpolate<F>(&self, x: u32) -> u32;" in trait.text.splitlines()
    (short,) = [d for d in summarize(parsed, 100_000, 0).defs if d.kind == "trait"]
    assert "/// Returns part 0" in short.text  # under the limit docs stay


def test_self_items_in_an_impl_are_that_impls_own():
    lang = RustLanguage()
    src = ("pub struct BytesMut;\npub trait IntoBuf {\n    type Buf;\n    fn into_buf(self) -> Self::Buf;\n}\n"
           "pub struct Cursor;\n"
           "impl IntoBuf for BytesMut {\n    type Buf = Cursor;\n    fn into_buf(self) -> Self::Buf {\n        Cursor\n    }\n}\n"
           "impl<'a> IntoBuf for &'a BytesMut {\n    type Buf = Cursor;\n    fn into_buf(self) -> Self::Buf {\n"
           "        Cursor\n    }\n}\n")
    files = {"src/lib.rs": src}
    idx = _index(files, {"Cargo.toml": b'[package]\nname = "b"\n'})
    refs = {qual: found for _, qual, found in _references(idx, lang, files)}
    own = [r[1] for r in refs["<BytesMut as IntoBuf>::into_buf"] if r[1].endswith("::Buf")]
    assert own == ["b::<BytesMut as IntoBuf>::Buf"]


def test_an_impl_block_never_gets_its_own_members_as_context():
    lang = RustLanguage()
    src = ("pub struct S;\nimpl S {\n    pub fn a(&self) {}\n}\n"
           "impl S {\n    pub fn final_check(&self) {}\n    pub fn run(&self) {\n        self.final_check();\n"
           "        self.a();\n    }\n}\n")
    files = {"src/lib.rs": src}
    idx = _index(files, {"Cargo.toml": b'[package]\nname = "s"\n'})
    refs = {qual: found for _, qual, found in _references(idx, lang, files)}
    assert "S#3" in refs
    # its own final_check is out; S::a, a method of the other impl block, is context
    assert [r[1] for r in refs["S#3"] if r[2] == "method"] == ["s::S::a"]


def test_definitions_are_renamed_when_a_package_gains_its_library():
    lang = RustLanguage()
    idx = _index({"src/main.rs": "mod util;\nfn main() {}\n", "src/util.rs": "pub fn make() {}\n"},
                 {"Cargo.toml": b'[package]\nname = "app"\n[[bin]]\nname = "app-cli"\npath = "src/main.rs"\n'})
    name = lambda: idx.definitions("src/util.rs")[0].qualname  # noqa: E731
    assert name() == "app_cli::util::make"  # src/ belongs to the binary while there is no library
    idx.update({"src/util.rs": summarize(lang.parse(b"pub fn make() -> u8 { 1 }\n"), 1200, 0)}, {})
    assert name() == "app_cli::util::make"
    idx.update({"src/lib.rs": summarize(lang.parse(b"pub mod util;\n"), 1200, 0)}, {})
    assert name() == "app::util::make"


def test_a_skeleton_without_docs_drops_attributes_over_several_lines_whole():
    text = (
        "/// Docs\n"
        "#[cfg_attr(\n"
        "    not(no_diagnostic_namespace),\n"
        '    diagnostic::on_unimplemented(note = "a ] b [", label = "x")\n'
        ")]\n"
        "pub trait Deserialize<'de>: Sized {\n"
        "    /** block\n"
        "     * doc */\n"
        "    #[inline] fn a();\n"
        "    fn deserialize<D>(d: D) -> Result<Self, D::Error>;\n"
        "}"
    )
    got = render("trait", text, "pub trait Deserialize<'de>: Sized", None, [], max_item_chars=50, bodies=0)
    assert got == ("pub trait Deserialize<'de>: Sized {\n"
                   "    fn a();\n"
                   "    fn deserialize<D>(d: D) -> Result<Self, D::Error>;\n"
                   "}")


def test_a_data_type_too_long_keeps_its_leading_fields_or_variants_whole():
    fields = "\n".join(f"    /// field {i}\n    #[serde(default)]\n    pub f{i}: HashMap<u32,\n        Vec<u8>>," for i in range(30))
    text = f"/// Docs\n#[derive(Debug)]\npub struct Big<T>\nwhere\n    T: Clone,\n{{\n{fields}\n    last: T, // no {{ here\n}}"
    field = "    pub f{}: HashMap<u32,\n        Vec<u8>>,"
    got = render("struct", text, "pub struct Big<T>", None, [], max_item_chars=200, bodies=0)
    assert got == "\n".join(["pub struct Big<T>\nwhere\n    T: Clone,\n{", *(field.format(i) for i in range(3)),
                             "    // … 28 more fields\n}"])
    assert len(got) <= 200 and len(got.replace(field.format(2), field.format(2) + field.format(3))) > 200
    variants = "\n".join(f"    V{i} {{\n        a: u8,\n        b: (u8, u16),\n    }}," for i in range(20))
    got = render("enum", f"pub enum E {{\n{variants}\n    Last = 3\n}}", "pub enum E", None, [], max_item_chars=150, bodies=0)
    assert got == ("pub enum E {\n    V0 {\n        a: u8,\n        b: (u8, u16),\n    },\n    V1 {\n        a: u8,\n"
                   "        b: (u8, u16),\n    },\n    // … 19 more variants\n}")
    small = split_members("pub struct S {\n    a: u8,\n    pub(crate) b: u8,\n    c: HashMap<String, Vec<u64>>,\n"
                          "    r#d: u8,\n}")
    assert small is not None and small.names == ["a", "b", "c", "d"]
    assert select_members(small, "fields", 84, wanted=[3]) == (  # the named field first, then what fits
        "pub struct S {\n    a: u8,\n    pub(crate) b: u8,\n    // … 1 more field\n    r#d: u8,\n}")
    assert select_members(small, "fields", 82, wanted=[3]) == "pub struct S {\n    a: u8,\n    // … 2 more fields\n    r#d: u8,\n}"
    # no body of its own lines, or not even one member fits: the signature alone
    assert render("struct", "pub struct H([u8; 32], [u8; 64]);", "pub struct H", None, [], 20, 0) == "pub struct H { … }"
    assert render("struct", text, "pub struct Big<T>", None, [], 60, 0) == "pub struct Big<T> { … }"


def test_a_long_data_type_shows_the_fields_and_variants_a_unit_names():
    lang = RustLanguage()
    fields = "\n".join(f"    pub field_{i}: Vec<u8>," for i in range(40))
    variants = "\n".join(f"    Mode{i}(u32)," for i in range(40))
    lib = f"pub mod run;\npub struct Engine {{\n{fields}\n}}\npub enum Mode {{\n{variants}\n}}\n"
    run = ("use crate::{Engine, Mode};\nimpl Engine {\n    pub fn step(&self) -> usize { self.field_30.len() + self.field_1.len() }\n"
           "    pub fn first(&self) -> usize { self.field_0.len() }\n"
           "    pub fn pick(&self) -> Mode { Mode::Mode33(self.field_39.len() as u32) }\n}\n")
    idx = RustIndex(rust_module_path)
    idx.update({"src/lib.rs": summarize(lang.parse(lib.encode()), 300, 0),
                "src/run.rs": summarize(lang.parse(run.encode()), 300, 0)}, {})
    parsed = lang.parse(run.encode())

    def context(name: str) -> dict[str, str]:
        u = next(u for u in parsed.units if u.name == name)
        q = UnitQuery(path="src/run.rs", lang="rust", code=u.text, header=u.header, qualname=u.local_qualname,
                      local_qualname=u.local_qualname, parsed=parsed, lines=(u.start_line, u.end_line))
        return {r.name: r.text for r in idx.references(q, related=False)}

    leading = context("first")["Engine"]  # field_0 leads anyway: the cut as summarized
    assert leading.startswith("pub struct Engine {\n    pub field_0: Vec<u8>,\n") and len(leading) <= 300
    assert leading.endswith(" more fields\n}") and "field_30" not in leading
    step = context("step")["Engine"]
    assert step.startswith("pub struct Engine {\n    pub field_0: Vec<u8>,\n    pub field_1: Vec<u8>,\n")
    assert step.endswith("\n    pub field_6: Vec<u8>,\n    // … 23 more fields\n    pub field_30: Vec<u8>,\n"
                         "    // … 9 more fields\n}")  # the leading fields fill the room the named ones leave
    assert len(step) <= len(leading)
    pick = context("pick")
    assert "    Mode33(u32),\n    // … 6 more variants\n}" in pick["Mode"] and "pub field_39: Vec<u8>,\n}" in pick["Engine"]


def test_related_types_include_those_named_by_qualified_paths():
    lang = RustLanguage()
    tree = {"src/lib.rs": "pub mod ids;\npub type Id = crate::ids::Hash;\npub type Res<T> = std::result::Result<T, ids::Oops>;\n"
                          "pub fn find(x: Id) -> Res<u8> { todo!() }\n",
            "src/ids.rs": "pub struct Hash([u8; 32]);\npub struct Oops;\n"}
    idx = RustIndex(rust_module_path)
    idx.update({p: summarize(lang.parse(t.encode()), 1200, 0) for p, t in tree.items()}, {})
    parsed = lang.parse(tree["src/lib.rs"].encode())
    u = next(u for u in parsed.units if u.name == "find")
    q = UnitQuery(path="src/lib.rs", lang="rust", code=u.text, header=None, qualname="find", local_qualname="find",
                  parsed=parsed, lines=(u.start_line, u.end_line))
    assert sorted((r.qualname, r.tier, r.why) for r in idx.references(q)) == [
        ("Id", "direct", "Id"), ("Res", "direct", "Res"), ("ids::Hash", "related", "in Id"),
        ("ids::Oops", "related", "in Res")]


def test_members_are_split_at_their_commas_whatever_their_names_types_and_discriminants():
    fields = split_members("pub struct K {\n    pubkey: Key,\n    pub public_key: [u8; 1 << 4],\n"
                           "    pub(crate) publisher: HashMap<K,\n        Vec<Vec<u8>>>,\n    r#type: T,\n\n}")
    assert fields is not None and fields.names == ["pubkey", "public_key", "publisher", "type"]
    flags = split_members("pub enum F {\n    Empty = 0,\n    A = 1 << 0,\n    B = 1<<1,\n    C = (1 < 2) as isize,\n"
                          "    D { x: u8 },\n    E(Vec<u8>),\n}")
    assert flags is not None and flags.names == ["Empty", "A", "B", "C", "D", "E"]
    declared = field_types(split_members(_without_docs("pub struct S {\n    #[serde(default)]\n    cache: Arc<db::Store>,\n"
                                                       "    /// docs\n    pubkey: PubKey,\n    n: u8,\n}")))
    assert declared == {"cache": (("Arc",), ("db", "Store")), "pubkey": (("PubKey",),), "n": ()}


def test_methods_called_on_fields_of_self_are_found_through_the_fields_declared_types():
    lang = RustLanguage()
    tree = {
        "src/lib.rs": "pub mod store;\npub mod engine;\n",
        "src/store.rs": ("pub struct Store;\nimpl Store {\n    pub fn get(&self, k: u8) -> u8 { k }\n"
                         "    pub fn len(&self) -> usize { 0 }\n}\n"
                         "pub struct Log;\nimpl Log {\n    pub fn get(&self) -> u8 { 0 }\n}\n"),
        "src/engine.rs": ("use std::sync::Arc;\nuse crate::store::{self, Log};\n"
                          "pub struct Engine {\n    #[allow(dead_code)]\n    pub(crate) cache: Arc<store::Store>,\n    log: Log,\n"
                          "    n: u8,\n}\n"
                          "impl Engine {\n    pub fn step(&self) -> u8 { self.cache.get(self.n) }\n"
                          "    pub fn size(&self) -> usize { self.n.len() }\n}\n"),
    }
    idx = RustIndex(rust_module_path)
    idx.update({p: summarize(lang.parse(t.encode()), 1200, 0) for p, t in tree.items()}, {})
    parsed = lang.parse(tree["src/engine.rs"].encode())

    def refs(name: str) -> list:
        u = next(u for u in parsed.units if u.name == name)
        q = UnitQuery(path="src/engine.rs", lang="rust", code=u.text, header=u.header, qualname=u.local_qualname,
                      local_qualname=u.local_qualname, parsed=parsed, lines=(u.start_line, u.end_line))
        return idx.references(q)

    def methods(name: str) -> list[tuple[str, str]]:
        return [(r.qualname, r.why) for r in refs(name) if r.tier == "method"]

    def related(name: str) -> list[tuple[str, str, int]]:
        return [(r.qualname, r.why, r.count) for r in refs(name) if r.tier == "related"]

    # `self.cache` is an Arc<store::Store>: Store::get, not Log::get (a field the unit does not use)
    assert methods("step") == [("store::Store::get", ".get()")]
    assert methods("size") == []  # `self.n` is a u8: its `len` is nobody's in the repository
    # the field's type itself, and (as for any unit of the impl) the types Engine's fields name
    assert related("step") == [("store::Store", "type of self.cache", 1), ("store::Log", "in Engine", 1)]
    assert related("size") == [("store::Store", "in Engine", 1), ("store::Log", "in Engine", 1)]


TWINS = """#[cfg(feature = "std")]
fn seq_impl(n: u8) -> u8 {
    helper(n) + seq_impl(n - 1)
}

#[cfg(not(feature = "std"))]
fn seq_impl(n: u8) -> u8 {
    helper(n)
}

fn helper(n: u8) -> u8 { n }

#[cfg(feature = "std")]
macro_rules! forward { () => { helper(1) }; }
#[cfg(not(feature = "std"))]
macro_rules! forward { () => { forward!() }; }

pub struct Thing;

impl Thing {
    #[cfg(feature = "std")]
    pub fn make() -> Thing { Thing::make() }
    #[cfg(not(feature = "std"))]
    pub fn make() -> Thing { Thing }
}

impl Thing {
    pub fn other(&self) {}
}

const _: () = {
    let _ = 1;
    match 0 { _ => {} }
};

const _: () = {
    let _x = Thing;
};
"""


def test_cfg_twins_and_underscore_consts_are_no_context_of_each_other():
    """The other branch of a `#[cfg]` pair (`seq_impl` / `seq_impl#2`, a macro defined twice,
    a method twice in one impl) is near the answer's code, not context; `_` names nothing."""
    lang = RustLanguage()
    files = {"src/lib.rs": TWINS}
    idx = _index(files, {"Cargo.toml": b'[package]\nname = "t"\n'})
    refs = {qual: [(r[1], r[2]) for r in found] for _, qual, found in _references(idx, lang, files)}
    assert refs["seq_impl"] == refs["seq_impl#2"] == [("t::helper", "direct")]
    assert refs["forward"] == [("t::helper", "direct")] and refs["forward#2"] == []
    assert refs["Thing::make"] == refs["Thing::make#2"] == [("t::Thing", "direct")]
    assert ("t::Thing", "direct") in refs["Thing#3"]  # an impl is no twin of its type (nor of other impls)
    assert refs["_"] == [] and refs["_#2"] == [("t::Thing", "direct")]


ASSOCIATED = """pub struct Error;
pub struct E;
pub struct S;
pub const LIMIT: usize = 3;

pub trait Source {
    type Error;
    const LIMIT: usize;
    fn get(&self) -> Result<u8, Self::Error>;
}

impl Source for S {
    type Error = E;
    const LIMIT: usize = 1;
    fn get(&self) -> Result<u8, E> { Err(E) }
}

pub fn pick(s: &dyn Source) -> u8 { 0 }

pub fn raw(p: *const Error) {}
"""


def test_an_associated_type_or_const_declaration_names_no_other_definition():
    lang = RustLanguage()
    files = {"src/lib.rs": ASSOCIATED}
    idx = _index(files, {"Cargo.toml": b'[package]\nname = "t"\n'})
    refs = {qual: {r[1] for r in found} for _, qual, found in _references(idx, lang, files)}
    assert refs["<S as Source>"] == {"t::S", "t::Source", "t::E"}  # not the crate's Error nor LIMIT
    assert refs["<S as Source>::Error"] == {"t::S", "t::Source", "t::E"}
    assert refs["Source"] == set()
    assert refs["pick"] == {"t::Source"}  # the trait's `type Error;` brings no related Error
    assert refs["raw"] == {"t::Error"}  # a pointer's `*const Error` does name it


OWN_NAMES = """pub struct Parser;

impl Parser {
    pub fn parse(&self) -> u8 { 0 }
    pub fn twice(&self) -> u8 { parse(&[]) + parse(&[]) }
}

pub fn parse(args: &[u8]) -> u8 { Parser.parse() }

pub mod other {
    pub fn run() {}
}

pub fn run() { other::run() }
"""


def test_a_unit_s_own_name_refers_to_nothing_else():
    """``fn parse`` of ``Parser::parse`` names no other ``parse``; a call of it does."""
    lang = RustLanguage()
    files = {"src/lib.rs": OWN_NAMES}
    idx = _index(files, {"Cargo.toml": b'[package]\nname = "t"\n'})
    refs = {qual: {r[1] for r in found} for _, qual, found in _references(idx, lang, files)}
    assert refs["Parser::parse"] == {"t::Parser"}  # its impl's type, not the free fn parse
    assert refs["Parser::twice"] == {"t::Parser", "t::parse"}
    assert refs["parse"] == {"t::Parser", "t::Parser::parse"}  # the method it calls
    assert refs["run"] == {"t::other::run"}  # its own name is not itself; the path names the other


def test_files_of_tests_reach_each_other_as_modules_of_a_test_crate():
    """``tests/misc.rs`` naming ``crate::util::Dir`` (one ``[[test]]`` root declaring both) and
    ``mod common; use common::setup;`` (each file its own test crate) find their definitions."""
    lang = RustLanguage()
    files = {"tests/misc.rs": "use crate::util::Dir;\n\nfn sorts() { let d = Dir::new(); }\n",
             "tests/util.rs": "pub struct Dir;\n\nimpl Dir {\n    pub fn new() -> Dir { Dir }\n}\n",
             "tests/api.rs": "mod common;\nuse common::setup;\n\nfn works() { setup(); }\n",
             "tests/common/mod.rs": "pub fn setup() {}\n",
             "src/lib.rs": "pub fn setup() {}\n"}
    manifests = {"Cargo.toml": b'[package]\nname = "t"\n'}
    idx = _index(files, manifests)
    refs = {qual: {r[1] for r in found} for _, qual, found in _references(idx, lang, files)}
    assert {"t_tests::util::Dir", "t_tests::util::Dir::new"} <= refs["sorts"]
    assert refs["works"] == {"t_tests::common::setup"}  # not the library's setup
    # the dependency is tracked: the sibling file gone, the cached answer goes with it
    idx.update({"tests/util.rs": None}, manifests)
    refs = {qual: {r[1] for r in found} for _, qual, found in _references(idx, lang, files) if qual == "sorts"}
    assert refs["sorts"] == set()


def test_editions_come_from_the_package_or_its_workspace():
    pkg = parse_cargo("Cargo.toml", b'[package]\nname = "a"\n', {})
    assert pkg is not None and pkg.edition == "2015"  # no `edition` key: 2015
    assert parse_cargo("Cargo.toml", b'[package]\nname = "a"\nedition = "2021"\n', {}).edition == "2021"
    idx = _index({}, {
        "Cargo.toml": b'[workspace]\nmembers = ["crates/*"]\n[workspace.package]\nedition = "2015"\n',
        "crates/x/Cargo.toml": b'[package]\nname = "x"\nedition.workspace = true\n',
        "crates/y/Cargo.toml": b'[package]\nname = "y"\nedition = "2018"\n',
        "crates/z/Cargo.toml": b'[package]\nname = "z"\nedition.workspace = true\n[workspace]\n',
    })
    assert {d: p.edition for d, p in idx.packages.items()} == {"crates/x": "2015", "crates/y": "2018", "crates/z": None}



def test_packages_follow_changes_of_what_they_inherit_from_their_workspace():
    """Packages are kept across updates by what they read of their workspace: a change of
    an inherited dependency or of the workspace edition reaches them, others do not."""
    root = '[workspace]\nmembers = ["crates/*"]\n[workspace.package]\nedition = "{ed}"\n[workspace.dependencies]\n' \
           'geo = {{ path = "crates/{geo}", package = "{geo}" }}\nother = "1"\n'
    app = b'[package]\nname = "app"\nedition.workspace = true\n[dependencies]\ngeo = { workspace = true }\n'
    manifests = {"Cargo.toml": root.format(ed="2018", geo="geo-core").encode(), "crates/app/Cargo.toml": app,
                 "crates/geo-core/Cargo.toml": b'[package]\nname = "geo-core"\n',
                 "crates/geo-alt/Cargo.toml": b'[package]\nname = "geo-alt"\n'}
    idx = _index({}, manifests)
    before = idx.packages["crates/app"]
    assert idx.crate_deps["crates/app#lib"]["geo"] == "crates/geo-core#lib" and before.edition == "2018"
    idx.update({}, {"Cargo.toml": root.format(ed="2018", geo="geo-core").encode().replace(b'"1"', b'"2"')})
    assert idx.packages["crates/app"] is before  # nothing it inherits changed: the same package
    idx.update({}, {"Cargo.toml": root.format(ed="2018", geo="geo-alt").encode()})
    assert idx.crate_deps["crates/app#lib"]["geo"] == "crates/geo-alt#lib"
    idx.update({}, {"Cargo.toml": root.format(ed="2015", geo="geo-alt").encode()})
    assert idx.packages["crates/app"].edition == "2015"
    assert idx.packages["crates/app"] == parse_cargo("crates/app/Cargo.toml", app, {"geo": "geo-alt", "other": "other"}, "2015")

EDITIONS = {
    "src/lib.rs": "pub mod fragment;\npub mod de;\n",
    "src/fragment.rs": "pub enum Fragment { Expr, Block }\npub struct Bar;\n",
    "src/de/mod.rs": ("mod fragment;\nmod inner;\nuse fragment::Fragment;\nuse ::fragment::Bar as B;\n"
                      "use crate::fragment::Fragment as Root;\nuse inner::Near;\n\n"
                      "pub fn body(f: Fragment, b: B, r: Root, n: Near) {}\n\n"
                      "pub fn local() {\n    use fragment::Bar;\n    let b = Bar;\n}\n"),
    "src/de/fragment.rs": "pub struct Fragment;\n",
    "src/de/inner.rs": "pub struct Near;\n",
}


def _edition(edition: str | None) -> dict[str, bytes]:
    line = f'edition = "{edition}"\n' if edition else ""
    return {"Cargo.toml": f'[package]\nname = "old"\n{line}'.encode()}


@pytest.mark.parametrize("edition", [None, "2015", "2018", "2021"])
def test_use_paths_of_the_2015_edition_start_at_the_crate_root(edition):
    """2015: `use fragment::Fragment` in `de` is `crate::fragment::Fragment` (`::fragment` too),
    and a path found nowhere from the root falls back to the module (`inner::Near`); 2018 and
    later: `use` paths start in the module, as other paths do."""
    lang = RustLanguage()
    idx = _index(EDITIONS, _edition(edition))
    refs = {qual: {r[1] for r in found} for _, qual, found in _references(idx, lang, EDITIONS)}
    if edition in (None, "2015"):
        assert refs["body"] == {"old::fragment::Fragment", "old::fragment::Bar", "old::de::inner::Near"}
        assert refs["local"] == {"old::fragment::Bar"}
    else:
        assert refs["body"] == {"old::de::fragment::Fragment", "old::fragment::Fragment", "old::de::inner::Near"}
        assert refs["local"] == set()


def test_an_edition_change_drops_what_use_paths_resolved_to():
    lang = RustLanguage()
    idx = _index(EDITIONS, _edition("2018"))
    for edition in ("2015", "2021", None, "2018"):
        _references(idx, lang, EDITIONS)  # the caches hold what the edition before decided
        idx.update({}, _edition(edition))
        refs = _references(idx, lang, EDITIONS)
        assert refs == _references(_index(EDITIONS, _edition(edition)), lang, EDITIONS), edition
        body = {r[1] for _, qual, found in refs if qual == "body" for r in found}
        assert ("old::de::fragment::Fragment" in body) == (edition not in (None, "2015"))


def test_context_items_are_named_as_the_crate_roots_declare_their_modules():
    files = {"src/lib.rs": '#[doc(hidden)]\n#[path = "private/mod.rs"]\npub mod __private;\n'
                           "pub fn user() { __private::helper(); }\n",
             "src/private/mod.rs": "pub mod de;\npub fn helper() {}\n",
             "src/private/de.rs": "pub struct Content;\n"}
    idx = _index(files, {"Cargo.toml": b'[package]\nname = "serde"\n'})
    refs = {qual: found for _, qual, found in _references(idx, RustLanguage(), files)}
    assert [r[1] for r in refs["user"]] == ["serde::__private::helper"]  # not serde::private::helper
    # the declaration goes: the display names follow
    plain = {"src/lib.rs": "pub mod private;\npub fn user() { private::helper(); }\n"}
    idx.update({"src/lib.rs": summarize(RustLanguage().parse(plain["src/lib.rs"].encode()), 1200, 0)}, {})
    refs = {qual: found for _, qual, found in _references(idx, RustLanguage(), plain)}
    assert [r[1] for r in refs["user"]] == ["serde::private::helper"]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_root_declarations_read_the_attribute_and_comment_lines_above_each_mod(newline):
    from plugins.rust_symbols import root_declarations
    doc = [f"//! line {i} of a long crate doc, mod fake{i};" for i in range(300)]
    lines = doc + [
        "#![forbid(unsafe_code)]",
        "mod plain;",
        "#[path = \"sys/unix.rs\"]",
        "// a comment between the attribute and its module",
        "#[cfg(unix)] ",
        "pub(crate) mod sys;",
        "mod after_sys;",  # the path above belongs to `sys` only
        "",
        "#[path = \"far.rs\"]",
        "",
        "mod past_a_blank_line;",  # a blank line ends the lines that lead into a module
        "    mod indented;",  # not at the top level
        "mod inline { mod inner; }",
        "pub mod r#type;",
        "fn f() {} mod same_line;",
        "// mod commented_out;",
        "mod first; mod second_on_its_line;",
        "pub(in crate::a) mod scoped;",
    ]
    source = newline.join(lines).encode()
    assert root_declarations(source) == (("plain", None), ("sys", "sys/unix.rs"), ("after_sys", None),
                                         ("past_a_blank_line", None), ("type", None), ("first", None),
                                         ("scoped", None))


def test_summaries_of_a_files_next_version_reuse_its_unit_forms_and_keep_no_huge_unit():
    from plugins import rust_symbols

    lang = RustLanguage()
    huge = "pub struct Huge {\n" + "".join(f"    pub field_{i}: u64,\n" for i in range(900)) + "}\n"
    small = "/// A point.\npub struct Point {\n    pub x: i32,\n    pub y: i32,\n}\n"
    assert len(huge) > rust_symbols._FORMS_KEPT_CHARS
    rust_symbols._forms.cache_clear()
    first = summarize(lang.parse((small + huge).encode()), 1200, 0)
    assert rust_symbols._forms.cache_info().currsize == 1  # the small unit's forms only
    # the next version moves both units down: the same forms, from the cache, at the new lines
    second = summarize(lang.parse(("fn added() {}\n" + small + huge).encode()), 1200, 0)
    assert rust_symbols._forms.cache_info().hits >= 1
    by_name = {d.name: d for d in second.defs}
    assert by_name["Point"].text == next(d for d in first.defs if d.name == "Point").text
    assert by_name["Point"].lines[0] == next(d for d in first.defs if d.name == "Point").lines[0] + 1
    assert by_name["Huge"].short and by_name["Huge"].full.startswith("pub struct Huge {")
