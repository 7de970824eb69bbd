"""Units of Rust source: kinds, qualified names, headers, spans, docs, errors."""

from __future__ import annotations

import pytest

from core.chunk import CUT_MID_LINE, unpack_cuts
from plugins.rust import CUT_UNIT, RustLanguage, rust_module_path
from plugins.rust_symbols import cargo_crates

SOURCE = '''//! crate docs are not attached to any unit
use std::fmt;

/// Amounts are in minor units — «centimes» 💶
#[derive(Debug, Clone)]
pub struct Money { minor: i64 }

pub const MAX: usize = 10;

pub mod ledger {
    pub trait Store {
        fn get(&self, key: u32) -> Option<u32>;
        fn has(&self, key: u32) -> bool { self.get(key).is_some() }
    }

    impl<T> Store for Mem<T> where T: Clone {
        /// fetch one entry
        fn get(&self, key: u32) -> Option<u32> {
            fn helper() -> u32 { 1 }
            Some(key + helper())
        }
    }

    impl<T> Mem<T> {
        pub fn new() -> Self { Mem(Vec::new()) }
    }

    impl<T> Mem<T> {
        pub fn len(&self) -> usize { self.0.len() }
    }

    impl<'a, K: Ord> Iterator for &'a mut Cursor<Vec<Option<K>>> { type Item = K; }
}

macro_rules! square { ($x:expr) => { $x * $x }; }
pub type Id = u64;
static GREETING: &str = "héllo";
union Bits { i: u32, f: f32 }
enum Side { Debit, Credit(u32) }
fn total(a: i64, b: i64) -> i64 { a + b }
'''


@pytest.fixture(scope="module")
def parsed():
    return RustLanguage().parse(SOURCE.encode())


def test_units_kinds_and_qualified_names(parsed):
    got = [(u.kind, u.local_qualname) for u in parsed.units]
    assert got == [
        ("struct", "Money"),
        ("const", "MAX"),
        ("mod", "ledger"),
        ("trait", "ledger::Store"),
        ("method", "ledger::Store::has"),
        ("impl", "ledger::<Mem as Store>"),
        ("method", "ledger::<Mem as Store>::get"),
        ("impl", "ledger::Mem"),
        ("method", "ledger::Mem::new"),
        ("impl", "ledger::Mem#2"),
        ("method", "ledger::Mem::len"),
        ("impl", "ledger::<&'a mut Cursor as Iterator>"),
        ("type", "ledger::<&'a mut Cursor as Iterator>::Item"),
        ("macro", "square"),
        ("type", "Id"),
        ("static", "GREETING"),
        ("union", "Bits"),
        ("enum", "Side"),
        ("fn", "total"),
    ]


def test_method_header_and_signature(parsed):
    get = next(u for u in parsed.units if u.local_qualname == "ledger::<Mem as Store>::get")
    assert get.header == "impl<T> Store for Mem<T> where T: Clone"
    assert get.signature == "fn get(&self, key: u32) -> Option<u32>"
    # the nested fn is part of its enclosing method, not a unit
    assert "fn helper" in get.text
    assert not any(u.name == "helper" for u in parsed.units)
    has = next(u for u in parsed.units if u.local_qualname == "ledger::Store::has")
    assert has.header == "pub trait Store"
    assert has.parent is not None and parsed.units[has.parent].kind == "trait"


def test_docs_and_attributes_attached_and_byte_spans_exact(parsed):
    data = SOURCE.encode()
    money = parsed.units[0]
    assert money.text.startswith("/// Amounts are in minor units")
    assert "#[derive(Debug, Clone)]" in money.text
    assert (money.start_line, money.end_line) == (4, 6)
    for u in parsed.units:
        # spans are bytes; non-ASCII text before a unit must not shift its text
        assert data[u.start_byte:u.end_byte].decode() == u.text
        assert SOURCE[u.char_start:u.char_end] == u.text
    greeting = next(u for u in parsed.units if u.name == "GREETING")
    assert greeting.text == 'static GREETING: &str = "héllo";'
    assert greeting.signature == "static GREETING: &str"


def test_trait_skeleton_keeps_required_items_only(parsed):
    trait = next(u for u in parsed.units if u.kind == "trait")
    assert "fnget(&self,key:u32)->Option<u32>;" in trait.skeleton
    assert "is_some" not in trait.skeleton  # the default method is a unit of its own


def test_syntax_error_is_flagged_on_the_unit_only():
    src = b"fn good() -> u32 { 1 }\nfn bad( { let x = ; }\nstruct Fine { a: u8 }\n"
    parsed = RustLanguage().parse(src)
    assert parsed.has_error
    flags = {u.name: u.has_error for u in parsed.units}
    assert flags["good"] is False and flags["Fine"] is False
    assert any(flags.values())


def test_the_2015_try_macro_is_no_syntax_error():
    """The grammar parses edition-2015 ``try!(…)`` as an ERROR node; the code is valid."""
    src = (b"fn read(p: &str) -> io::Result<u32> {\n    let n = try!(open(p)).len();\n    Ok(try!(parse(n)))\n}\n"
           b"fn broken() { let x = try!{g()}; }\nfn missing() -> u32 { let y = ; 1 }\n")
    parsed = RustLanguage().parse(src)
    flags = {u.name: u.has_error for u in parsed.units}
    assert flags == {"read": False, "broken": True, "missing": True} and parsed.has_error
    assert not RustLanguage().parse(src[:src.index(b"fn broken")]).has_error


def test_cut_points_lie_between_tokens_at_line_starts():
    body = "\n".join(f"    let v{i} = compute({i}, \"s{i}\");" for i in range(80))
    src = f"/// doc «ü»\n#[inline]\nfn big() {{\n{body}\n}}\n".encode()
    big, small = RustLanguage().parse(src + b"fn small() {}\n").units
    cuts = unpack_cuts(big.cuts)
    assert len(big.text) > CUT_UNIT and cuts
    assert small.cuts == b""  # short units are never cut: nothing is computed or stored
    offsets = [off for off, _ in cuts]
    assert offsets == sorted(offsets)  # the chunker relies on the order
    assert offsets[0] > big.text.index("fn big")  # docs and attributes stay with the item
    statement_cuts = [off for off, depth in cuts if depth == 1]
    assert len(statement_cuts) >= 80
    # statement-level cuts move back to the start of the statement's line
    assert all(big.text[off - 1] == "\n" for off in statement_cuts[1:-1])
    for off, _ in cuts:
        # no cut splits an identifier, number or string literal
        assert not (big.text[off - 1].isalnum() and big.text[off].isalnum())
        assert big.text[:off].count('"') % 2 == 0


def _cuts_by_points(node, source: bytes, depth: int, base: int, out: list) -> None:
    """The definition of cut points read from node rows and columns (slow: every access
    makes objects): what ``_collect_cuts`` must find from byte offsets."""
    from core.chunk import CUT_MIN
    from plugins.rust import _ATOMIC, _leads_into

    prev = None
    for child in node.children:
        if prev is not None and not _leads_into(prev, child.start_point.row, source):
            if child.start_point.row > prev.end_point.row:
                out.append((child.start_byte - child.start_point.column - base, depth))
            else:
                out.append((child.start_byte - base, depth + CUT_MID_LINE))
        prev = child
        if (child.end_byte - child.start_byte > CUT_MIN and child.child_count and child.type not in _ATOMIC):
            _cuts_by_points(child, source, depth + 1, base, out)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_cut_points_equal_their_definition_by_rows_and_columns(newline):
    from core.chunk import pack_cuts, pack_flat_cuts
    from plugins.rust import _collect_cuts
    lines = ["/// «doc»", "#[test]", "fn big() {"]
    for i in range(40):
        lines += [f"    // step {i} ✓", f"    let v{i} = f({i}, \"s{i}\"); let w{i} = g(v{i}, [1, 2, 3, {i}]); /* x */",
                  "", f"    #[allow(unused)] let z{i} = h(|a| {{ a + {i} }},", f"        {i});"]
    lines += ["    " + " + ".join(f"term_{i}(x)" for i in range(60)) + ";", "}", ""]
    source = newline.join(lines).encode()
    lang = RustLanguage()
    tree = lang._ensure()[0].parse(source)
    fn = tree.root_node.named_children[-1]
    assert fn.type == "function_item"
    for base in (0, fn.start_byte):
        fast: list = []
        slow: list = []
        _collect_cuts(fn, source, 0, base, fast)
        _cuts_by_points(fn, source, 0, base, slow)
        pairs = list(zip(fast[::2], fast[1::2]))
        assert pairs == slow and len(pairs) > 200 and len(fast) == 2 * len(pairs)
        assert pack_flat_cuts(fast) == pack_cuts(slow)
    assert any(d >= CUT_MID_LINE for _, d in pairs)  # the long last line has cuts inside it


def test_leading_docs_and_attributes_are_found_whatever_precedes_the_item():
    source = "\n".join([
        "const A: [u8; 2] = [1, 2];", "fn after_a_bracket() {}",
        "#[inline] fn same_line() {}",
        "#[cfg(test)] // why", "fn attribute_then_comment() {}",
        "/** block doc */", "fn block_doc() {}",
        "/* plain */ fn plain_block_comment() {}",
        "/// " + "long doc " * 80, "fn long_line_doc() {}",
        "// " + "x" * 600, "fn long_plain_comment() {}",
        "static S: &str = \"//\"; fn comment_marks_in_a_string() {}",
        "#[a]", "", "", "/// spaced", "", "fn across_blank_lines() {}",
        "mod m {", "    #[test]", "    fn nested() {}", "}", "",
    ])
    units = {u.name: u for u in RustLanguage().parse(source.encode()).units}
    starts = {
        "after_a_bracket": "fn after_a_bracket", "same_line": "#[inline] fn same_line",
        # a plain comment between an attribute and its item ends the run, as in rustc
        "attribute_then_comment": "fn attribute_then_comment", "block_doc": "/** block doc */",
        "plain_block_comment": "fn plain_block_comment", "long_line_doc": "/// long doc",
        "long_plain_comment": "fn long_plain_comment", "comment_marks_in_a_string": "fn comment_marks",
        "across_blank_lines": "#[a]", "nested": "#[test]",
    }
    for name, head in starts.items():
        assert units[name].text.startswith(head), name


@pytest.mark.parametrize("path,module", [
    ("src/lib.rs", ""),
    ("src/main.rs", ""),
    ("crates/ledger-core/src/lib.rs", "ledger_core"),
    ("crates/ledger-core/src/store/mod.rs", "ledger_core::store"),
    ("crates/ledger-core/src/store/mem.rs", "ledger_core::store::mem"),
    ("src/bin/tool.rs", "tool"),
    ("src/bin/tool/main.rs", "tool"),
    ("src/bin/tool/args.rs", "tool::args"),
    ("tests/it.rs", "tests::it"),
    ("build.rs", "build"),
])
def test_module_path_from_file_path(path, module):
    assert rust_module_path(path) == module


CRATES = cargo_crates({
    "Cargo.toml": b'[package]\nname = "demo"\n[[bin]]\nname = "dm"\npath = "tools/dm/main.rs"\n',
    "crates/store/Cargo.toml": b'[package]\nname = "ledger-store"\n',
    "tools/cli/Cargo.toml": b'[package]\nname = "ledger-cli"\n',  # a binary only: no src/lib.rs
    "crates/kit/Cargo.toml": (b'[package]\nname = "kit-rs"\n[lib]\nname = "kit"\n[[bin]]\nname = "kt"\n'
                              b'path = "src/main.rs"\n[[bin]]\nname = "kit-gen"\npath = "src/bin/gen.rs"\n'),
}, present=["src/lib.rs", "crates/store/src/lib.rs"])


@pytest.mark.parametrize("path,module", [
    ("src/lib.rs", "demo"),
    ("src/net/mod.rs", "demo::net"),
    ("crates/store/src/lib.rs", "ledger_store"),
    ("crates/store/src/log/mod.rs", "ledger_store::log"),
    ("crates/store/tests/it.rs", "ledger_store_tests::it"),
    ("tools/cli/src/main.rs", "ledger_cli"),
    ("tools/cli/src/args.rs", "ledger_cli::args"),  # no library: src/ is the binary's
    ("crates/kit/src/lib.rs", "kit"),  # [lib] name
    ("crates/kit/src/main.rs", "kt"),  # [[bin]] name of src/main.rs
    ("crates/kit/src/bin/gen.rs", "kit_gen"),  # [[bin]] name of its path
    ("crates/kit/src/bin/other.rs", "other"),  # an undeclared binary: its file names it
    ("tools/dm/main.rs", "dm"),  # a [[bin]] path outside src/ roots the binary...
    ("tools/dm/cmd/run.rs", "dm::cmd::run"),  # ...and the files beside it are its modules
    ("crates/other-one/src/lib.rs", "other_one"),  # no package there: the directory names it
    ("build.rs", "demo_build"),  # a package's build script is a crate of its own
    ("crates/store/build.rs", "ledger_store_build"),
    ("tools/cli/build.rs", "ledger_cli_build"),
    ("crates/other-one/build.rs", "crates::other_one::build"),  # no package there
])
def test_module_path_names_crates_after_their_packages(path, module):
    assert rust_module_path(path, CRATES) == module


def test_module_paths_follow_what_crate_roots_declare():
    name = RustLanguage().module_paths({
        "serde/Cargo.toml": b'[package]\nname = "serde"\n',
        "serde/src/lib.rs": b'//! doc\n#[doc(hidden)]\n#[path = "private/mod.rs"]\npub mod __private;\npub mod de;\n',
        "bridge/Cargo.toml": b'[package]\nname = "kaspa-bridge"\n[[bin]]\nname = "bridge"\npath = "src/main.rs"\n',
        "bridge/src/lib.rs": b"pub mod errors;\n",
        "bridge/src/main.rs": b"mod cli;\nuse kaspa_bridge::errors;\n#[cfg(test)]\nmod tests;\n",
    }, frozenset({"serde/src/lib.rs", "bridge/src/lib.rs"}))
    assert name("serde/src/private/mod.rs") == "serde::__private"  # the #[path] file is the declared module
    assert name("serde/src/private/de.rs") == "serde::__private::de"  # and so are the modules beside it
    assert name("serde/src/de/mod.rs") == "serde::de"
    assert name("bridge/src/cli.rs") == "bridge::cli"  # declared by main.rs only: the binary's module
    assert name("bridge/src/tests.rs") == "bridge::tests"
    assert name("bridge/src/errors.rs") == "kaspa_bridge::errors"  # the library's


def test_module_paths_read_package_and_lib_names_from_cargo_manifests():
    lang = RustLanguage()
    name = lang.module_paths({
        "Cargo.toml": b'[workspace]\nmembers = ["crates/*"]\n',  # virtual: names nothing
        "crates/store/Cargo.toml": b'[package]\nname = "ledger-store"\n',
        "crates/codec/Cargo.toml": b'[package]\nname = "ledger-codec"\n[lib]\nname = "codec2"\n',
        "crates/broken/Cargo.toml": b'[package\nname = ',  # not TOML: the path names it
    })
    assert name("crates/store/src/log.rs") == "ledger_store::log"
    assert name("crates/codec/src/lib.rs") == "codec2"
    assert name("crates/broken/src/lib.rs") == "broken"
    assert name("src/lib.rs") == ""
    assert lang.module_paths({}) is rust_module_path


def test_module_paths_are_shared_by_trees_that_name_files_alike():
    """Module path functions are kept by what they read of a tree (manifest targets, crate
    roots' `mod` lines, lib.rs presence), given the files' blob ids: an edit that changes
    neither (a dependency bump, a new function in lib.rs) reuses them; one that does, not."""
    import gc
    import hashlib
    import weakref

    from core.chunking import LazyFiles

    def tree(files):
        blobs = {path: hashlib.sha1(data).hexdigest() for path, data in files.items()}
        return LazyFiles(files, files.get, blobs)

    libs = frozenset({"store/src/lib.rs"})
    base = {"Cargo.toml": b'[workspace]\nmembers = ["store"]\n',
            "store/Cargo.toml": b'[package]\nname = "ledger-store"\n',
            "store/src/lib.rs": b"pub mod log;\n",
            "store/src/main.rs": b"mod cli;\nfn main() {}\n"}
    lang = RustLanguage()
    files = tree(base)
    first = lang.module_paths(files, libs)
    gone = weakref.ref(files)
    del files
    gc.collect()
    assert gone() is None  # a kept function holds what it read, not the tree (nor the repository's reader)
    assert first("store/src/log.rs") == "ledger_store::log"
    assert first("store/src/cli.rs") == "ledger_store::cli"  # declared by main.rs only
    same = {**base, "store/Cargo.toml": base["store/Cargo.toml"] + b'[dependencies]\nserde = "1"\n',
            "store/src/lib.rs": b"pub mod log;\npub fn open() {}\n"}
    assert lang.module_paths(tree(same), libs) is first
    moved = {**same, "store/src/lib.rs": b'pub mod log;\n#[path = "v2/log.rs"]\npub mod log2;\n'}
    named = lang.module_paths(tree(moved), libs)
    assert named is not first and named("store/src/v2/log.rs") == "ledger_store::log2"
    renamed = {**same, "store/Cargo.toml": b'[package]\nname = "ledger-store"\n[lib]\nname = "store"\n'}
    assert lang.module_paths(tree(renamed), libs)("store/src/log.rs") == "store::log"
    no_lib = lang.module_paths(tree({k: v for k, v in same.items() if k != "store/src/lib.rs"}), frozenset())
    assert no_lib("store/src/log.rs") == "ledger_store::log" and no_lib is not first
    # the same answers as functions made from the bytes alone
    for files, present in ((same, libs), (moved, libs), (renamed, libs)):
        plain = lang.module_paths(dict(files), present)
        keyed = lang.module_paths(tree(files), present)
        for path in ("store/src/log.rs", "store/src/cli.rs", "store/src/v2/log.rs", "store/tests/it.rs"):
            assert keyed(path) == plain(path), (path, files)


def test_module_paths_given_blob_ids_name_files_as_the_bytes_alone_do():
    """The kept functions (made from what naming reads of each file) agree with the ones
    made from the bytes: a ``[[bin]]`` table spelled with spaces, and a manifest that
    tomllib cannot read at all (it fails only for its own package's files, as before)."""
    import hashlib

    from core.chunking import LazyFiles

    def keyed(files, present=frozenset()):
        blobs = {path: hashlib.sha1(data).hexdigest() for path, data in files.items()}
        return RustLanguage().module_paths(LazyFiles(files, files.get, blobs), present)

    spaced = {"Cargo.toml": b'[package]\nname = "tool"\n\n[[ bin ]]\nname = "rg"\npath = "crates/core/main.rs"\n',
              "crates/core/main.rs": b"mod app;\n"}
    plain = RustLanguage().module_paths(dict(spaced), frozenset())
    for path in ("crates/core/main.rs", "crates/core/app.rs", "src/lib.rs"):
        assert keyed(spaced)(path) == plain(path), path
    deep = {"Cargo.toml": b'[package]\nname = "ok"\n',
            "weird/Cargo.toml": b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n"}
    assert keyed(deep)("src/a.rs") == "ok::a"


INCREMENTAL_EDITS = [
    ("a + b", "a.saturating_add(b)"),
    ("pub type Id = u64;\n", ""),  # deletion
    ("pub mod ledger {", "// header ✓\npub mod ledger {"),  # non-ASCII inserted before units
    ("fn get(&self, key: u32) -> Option<u32>;", "fn get(&self, key: u64) -> Option<u64>;"),
    ("pub type Id = u64;", "/* pub type Id = u64;"),  # an unclosed comment swallows the rest
    ("pub type Id = u64;\n", "pub type Id = u64;\n#[inline]\n"),  # attribute attaches to the next item
    ("\npub type Id = u64;", "\n// see Id\npub type Id = u64;"),
    ("macro_rules! square", "/// squares\nmacro_rules! square"),  # doc comment attaches across the edit
    ("    impl<T> Mem<T> {\n        pub fn new", "    impl<T> Mem<T> {\n        pub fn fresh() {}\n        pub fn new"),
    ("pub fn len(&self)", "pub fn new(&self)"),  # a second `new`: the #n numbering must follow
    ("union Bits { i: u32, f: f32 }", "union Bits { i: u32, f: f32"),  # syntax error
    ("}\n\nmacro_rules!", "}\nmacro_rules!"),  # blank line removed between items
    ("\npub type Id", "\n#[cfg(test)]\n\npub type Id"),  # an attribute across a blank line attaches
]


def test_doc_comments_and_attributes_attach_across_blank_lines_as_in_rustc():
    src = b"/// doc\n\nfn a() {}\n#[test]\n\nfn b() {}\n// plain comment\nfn c() {}\n"
    a, b, c = RustLanguage().parse(src).units
    assert a.text.startswith("/// doc") and b.text.startswith("#[test]") and c.text == "fn c() {}"


def test_incremental_parse_of_a_file_with_syntax_errors_equals_a_fresh_parse():
    # impl S lacks its closing brace: it ends where its last member ends
    old = b"fn x() {}\n\nimpl S {\n    fn a() {}\n\n    impl A {\n    }\n"
    new = old.replace(b"fn x", b"fn y")
    lang = RustLanguage()
    got = lang.parse(new, (old, lang.parse(old)))
    assert got.to_dict() == RustLanguage().parse(new).to_dict()
    fixed = new + b"}\n"  # and back to a clean file
    assert lang.parse(fixed, (new, got)).to_dict() == RustLanguage().parse(fixed).to_dict()


def test_a_carried_module_keeps_its_declarations_in_source_order():
    # the nested module's `use` comes first in the source, though its unit comes second
    old = b"fn x() {}\n\nmod rpc {\n    mod messages {\n        pub use a::B;\n    }\n    pub use c::D;\n}\n"
    new = old.replace(b"fn x() {}", b"fn x() { 1; }")
    lang = RustLanguage()
    got = lang.parse(new, (old, lang.parse(old)))
    assert [d[2] for d in got.decls] == ["pub use a::B;", "pub use c::D;"]
    assert got.to_dict() == RustLanguage().parse(new).to_dict()


@pytest.mark.parametrize("old,new", INCREMENTAL_EDITS)
def test_incremental_parse_gives_the_units_of_a_fresh_parse(old, new):
    lang = RustLanguage()
    v1 = SOURCE.encode()
    base = lang.parse(v1)
    assert old in SOURCE
    v2 = SOURCE.replace(old, new, 1).encode()
    fresh = RustLanguage().parse(v2)
    incremental = lang.parse(v2, previous=(v1, base))
    assert incremental.to_dict() == fresh.to_dict()
    # and back again, from the incremental result
    assert lang.parse(v1, previous=(v2, incremental)).to_dict() == base.to_dict()
