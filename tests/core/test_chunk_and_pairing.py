"""Cutting oversize units, window chunks, and before/after pairing."""

from __future__ import annotations

import pytest

from core.errors import CommitforgeError
from core.pairing import pair_chunks, pair_moves, part_changes
from plugins.chunkers import (
    AstChunker,
    AstChunkerConfig,
    WindowChunker,
    WindowChunkerConfig,
)
from plugins.rust import RustLanguage

from ..conftest import manifest, read_chunks, run_pipeline

RUST = RustLanguage()


def long_fn(name: str = "dispatch", arms: int = 120, tweak: int | None = None) -> str:
    lines = [f"        Op::Code{i} => run_step({i} + {100 if i == tweak else 1}, \"arm {i}\")," for i in range(arms)]
    return f"pub fn {name}(op: Op) -> u32 {{\n    match op {{\n" + "\n".join(lines) + "\n    }\n}\n"


def chunks(src: str, max_chars: int = 4000):
    return AstChunker(AstChunkerConfig(max_chars=max_chars)).chunk(RUST.parse(src.encode()), RUST, "src/m.rs")


def test_oversize_unit_is_cut_at_ast_boundaries_with_its_header():
    src = long_fn()
    (c,) = chunks(src, max_chars=1200)
    assert len(c.text) > 1200 and len(c.pieces) >= 5
    assert all(len(p) <= 1200 for p in c.pieces)
    header = "pub fn dispatch(op: Op) -> u32 {\n"
    assert c.pieces[0].startswith(header)
    for piece in c.pieces[1:]:
        assert piece.startswith(header)
        body = piece[len(header):]
        assert body.startswith("        Op::Code") or body.lstrip().startswith("}")
    # without the repeated headers the pieces are the unit's text, in order, nothing lost
    rebuilt = c.pieces[0] + "".join(p[len(header):] for p in c.pieces[1:])
    assert rebuilt == c.text


def test_unit_under_the_limit_is_one_piece():
    (c,) = chunks(long_fn(arms=10))
    assert c.pieces == [c.text]


def test_ast_chunker_refuses_tiny_limits():
    with pytest.raises(CommitforgeError, match="max_chars=100"):
        AstChunker(AstChunkerConfig(max_chars=100))


def test_window_chunker_reproduces_fixed_windows():
    text = "".join(f"fn f{i}() {{}}\n" for i in range(400))
    ws = WindowChunker(WindowChunkerConfig(max_chars=2000)).chunk(RUST.parse(text.encode()), RUST, "src/a.rs")
    assert [len(w.text) for w in ws[:-1]] == [2000] * (len(ws) - 1)
    assert "".join(w.text for w in ws) == text
    assert ws[1].lines[0] == text[:2000].count("\n") + 1
    overlapped = WindowChunker(WindowChunkerConfig(max_chars=2000, overlap=500)).chunk(RUST.parse(text.encode()), RUST, "a.rs")
    assert overlapped[1].text[:500] == overlapped[0].text[-500:]


def changes(old_src: str, new_src: str, **kw):
    return [(ch, o.qualname if o else None, n.qualname if n else None)
            for ch, o, n in pair_chunks(chunks(old_src, **kw), chunks(new_src, **kw), renames=True, rename_similarity=0.6)]


def test_pairing_modified_added_deleted_and_unchanged_dropped():
    old = "fn keep() -> u32 { 1 }\nfn edit() -> u32 { 1 }\nfn gone() {}\n"
    new = "fn keep() -> u32 { 1 }\nfn edit() -> u32 { 2 }\nfn fresh(x: u8) -> u8 { x * 3 }\n"
    assert changes(old, new) == [
        ("modified", "m::edit", "m::edit"),
        ("added", None, "m::fresh"),
        ("deleted", "m::gone", None),
    ]


def test_pairing_detects_a_renamed_function():
    body = "\n".join(f"    let a{i} = x + {i};" for i in range(12))
    old = f"fn sanitize(x: u32) -> u32 {{\n{body}\n    x\n}}\n"
    new = f"fn normalise(x: u32) -> u32 {{\n{body}\n    x\n}}\n"
    assert changes(old, new) == [("renamed", "m::sanitize", "m::normalise")]


def test_impl_counts_as_changed_only_for_its_own_text():
    old = "impl Foo {\n    fn a(&self) -> u32 { 1 }\n}\n"
    method_edit = "impl Foo {\n    fn a(&self) -> u32 { 2 }\n}\n"
    assert changes(old, method_edit) == [("modified", "m::Foo::a", "m::Foo::a")]
    header_edit = "impl<T> Foo<T> where T: Copy {\n    fn a(&self) -> u32 { 1 }\n}\n"
    assert changes(old, header_edit) == [("modified", "m::Foo", "m::Foo")]
    assoc_const = "impl Foo {\n    const N: u32 = 3;\n    fn a(&self) -> u32 { 1 }\n}\n"
    assert changes(old, assoc_const) == [("added", None, "m::Foo::N")]


def test_new_impl_block_is_carried_by_its_methods():
    # the added impl itself is not emitted: its methods (with the impl header) are
    assert changes("", "impl Foo {\n    fn a(&self) {}\n}\n") == [("added", None, "m::Foo::a")]


def test_only_changed_parts_of_an_oversize_unit_are_emitted():
    old, new = long_fn(), long_fn(tweak=100)
    o, n = chunks(old, max_chars=1200)[0], chunks(new, max_chars=1200)[0]
    parts = list(part_changes("modified", o, n))
    assert len(parts) == 1
    (p,) = parts
    assert "run_step(100 + 100" in p.new_code and "run_step(100 + 1," in p.old_code
    assert p.parts == len(n.pieces) and 1 < p.part <= p.parts
    assert n.pieces[p.part - 1] == p.new_code


def test_removing_the_first_cfg_variant_deletes_it_and_leaves_its_namesake_alone():
    unix = '#[cfg(unix)]\nfn path() -> &str { "/" }\n'
    windows = '#[cfg(windows)]\nfn path() -> &str { "\\\\" }\n'
    assert changes(unix + windows, windows) == [("deleted", "m::path", None)]


def test_a_container_gaining_its_first_member_is_not_itself_changed():
    assert changes("impl Error for E {}\n", "impl Error for E {\n    fn source(&self) {}\n}\n") == [
        ("added", None, "m::<E as Error>::source")]
    assert changes("mod a {\n    fn helper() {}\n}\n", "mod a {}\n") == [("deleted", "m::a::helper", None)]
    # a memberless container is a unit of its own
    assert changes("", "impl Marker for E {}\n") == [("added", None, "m::<E as Marker>")]


def test_a_container_that_appears_with_members_brings_its_own_code_without_them():
    """A new trait's required methods are its own code; an impl or a test module with only
    `use` lines besides its members has none."""
    src = ("pub trait Store {\n    fn get(&self, k: u32) -> Option<u32>;\n\n"
           "    fn has(&self, k: u32) -> bool { self.get(k).is_some() }\n}\n"
           "impl Foo {\n    fn a(&self) {}\n}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    fn t() {}\n}\n")
    assert changes("", src) == [("added", None, "m::Store"), ("added", None, "m::Store::has"),
                                ("added", None, "m::Foo::a"), ("added", None, "m::tests::t")]
    (store,) = [n for ch, o, n in pair_chunks([], chunks(src), renames=True, rename_similarity=0.6) if n.name == "Store"]
    assert store.pieces == ["pub trait Store {\n    fn get(&self, k: u32) -> Option<u32>;\n}"]
    assert changes(src, "")[0] == ("deleted", "m::Store", None)
    # `pub use` and multi-line `use` lines, comments and a comment after the closing brace are no own code
    only_uses = ("pub mod m {\n    pub use std::collections::HashMap;\n    pub(crate) use std::{\n        fmt,\n"
                 "        io,\n    };\n    /* fn old() {} */\n    // a note\n    pub fn h() {}\n} // end m\n")
    assert changes("", only_uses) == [("added", None, "m::m::h")]
    long = "pub trait Big {\n" + "".join(f"    fn f{i}(&self, x: u32) -> u32;\n" for i in range(60)) + "    fn d(&self) {}\n}\n"
    (big,) = [n for ch, o, n in pair_chunks([], chunks(long, max_chars=1000), renames=True, rename_similarity=0.6)
              if n.name == "Big"]
    assert len(big.pieces) > 1 and all(len(p) <= 1000 and p.startswith("pub trait Big {\n") for p in big.pieces)


def test_a_unit_moved_within_its_file_is_unchanged():
    a, b = "fn a() -> u8 { 1 }\n", "fn b() -> u8 { 2 }\n"
    assert changes(a + b, b + a) == []


def test_a_small_edit_to_an_oversize_unit_changes_few_parts():
    lines = [f"        Op::Code{i} => run_step({i}, \"arm {i}\")," for i in range(200)]
    old = "pub fn dispatch(op: Op) -> u32 {\n    match op {\n" + "\n".join(lines) + "\n    }\n}\n"
    new = old.replace("        Op::Code3 =>", "        Op::Extra => 0,\n        Op::Code3 =>")
    o, n = chunks(old, max_chars=1000)[0], chunks(new, max_chars=1000)[0]
    assert len(n.pieces) >= 6
    emitted = list(part_changes("modified", o, n))
    assert 1 <= len(emitted) <= 2  # boundaries resynchronise at the next content anchor
    assert any("Op::Extra" in p.new_code for p in emitted)


def test_parts_removed_from_a_unit_that_still_exists_join_a_new_part():
    # shrinking to one part: one change, its old code the whole old unit (each line once),
    # nothing with empty new code
    old, new = long_fn(arms=120), long_fn(arms=5)
    o, n = chunks(old, max_chars=1200)[0], chunks(new, max_chars=1200)[0]
    assert len(o.pieces) >= 3 and len(n.pieces) == 1
    (p,) = part_changes("modified", o, n)
    assert (p.part, p.parts, p.new_code) == (1, 1, n.pieces[0])
    assert p.old_code == o.text
    # a middle part removed: it shows up before the unchanged part that now follows it
    lines = [f"        Op::Code{i} => run_step({i}, \"arm {i}\")," for i in range(200)]
    body = lambda ls: "pub fn d(op: Op) -> u32 {\n    match op {\n" + "\n".join(ls) + "\n    }\n}\n"  # noqa: E731
    o = chunks(body(lines), max_chars=1000)[0]
    gone = o.pieces[2]
    n = chunks(body([ln for ln in lines if ln not in gone]), max_chars=1000)[0]
    emitted = list(part_changes("modified", o, n))
    assert emitted and all(p.new_code for p in emitted)
    assert len({p.part for p in emitted}) == len(emitted)  # one change per part
    assert any(gone.split("\n", 2)[-1][:200] in p.old_code for p in emitted)
    # joined old parts are a run of the old unit's text (after the opening of a later part)
    for p in emitted:
        assert p.old_code in o.text or p.old_code.split("\n", 1)[1] in o.text


def test_a_part_shows_the_old_lines_it_replaces_when_the_cuts_move():
    """An edit of every line moves the cut points: the new parts are paired with the old
    lines a line diff matches them to, not by position (where a third new part had no
    old partner and looked written from scratch)."""
    body = lambda field: "".join(f"    let v{i} = self.{field}.get({i}).unwrap_or(&{i});\n" for i in range(40))  # noqa: E731
    old_src, new_src = (f"pub fn sum(&self) -> u32 {{\n{body(f)}    0\n}}\n" for f in ("0", "inner_table_ref"))
    o, n = chunks(old_src, max_chars=1200)[0], chunks(new_src, max_chars=1200)[0]
    assert len(n.pieces) > len(o.pieces) >= 2
    emitted = list(part_changes("modified", o, n))
    assert [p.part for p in emitted] == list(range(1, len(n.pieces) + 1))
    seen = []
    for p in emitted:
        lets = [ln for ln in p.new_code.splitlines() if ln.startswith("    let")]
        olds = [ln for ln in p.old_code.splitlines() if ln.startswith("    let")]
        assert lets and [ln.replace("inner_table_ref", "0") for ln in lets] == olds
        seen += olds
    assert seen == [ln for ln in old_src.splitlines() if ln.startswith("    let")]  # every old line once


@pytest.mark.parametrize("doc", ["    /// Sums.\n", ""])
def test_a_nested_unit_s_code_is_whole_lines_of_its_file(doc):
    """A method's first line keeps its indentation, as its other lines do; so does every
    later part (its opening repeats the signature) and the old code of a change."""
    body = "".join(f"        let v{i} = self.table.get({i}).copied().unwrap_or_default();\n" for i in range(40))
    src = f"impl Store {{\n{doc}    pub fn sum(&self) -> u32 {{\n{body}        0\n    }}\n}}\n"
    (method,) = [c for c in chunks(src, max_chars=1200) if c.kind == "method"]
    assert len(method.pieces) >= 3
    lines = src.splitlines(keepends=True)
    assert method.pieces[0] == "".join(lines[1:1 + method.pieces[0].count("\n")]) + method.pieces[0].rsplit("\n", 1)[1]
    for piece in method.pieces[1:]:
        assert piece.startswith("    pub fn sum(&self) -> u32 {\n        let v")
    edited = chunks(src.replace("unwrap_or_default()", "unwrap_or(0)"), max_chars=1200)
    (new,) = [c for c in edited if c.kind == "method"]
    for p in part_changes("modified", method, new):
        assert p.old_code.startswith("    ") and p.new_code.startswith("    ")
        assert all(ln.startswith("    ") for ln in (p.old_code + p.new_code).splitlines())
    (top,) = [c for c in chunks("fn f() {}\n") if c.kind == "fn"]
    assert top.pieces == ["fn f() {}"]


MACRO_CALLS = """rgtest!(sorts, |dir: Dir, mut cmd: TestCommand| {
    dir.create("a", "b");
});

lazy_static! {
    static ref RE: Regex = Regex::new("x").unwrap();
}

include!("gen.rs");

impl Store {
    forward!(len, usize);

    fn get(&self) -> u8 { 0 }
}

fn body() { println!("x"); }
"""


def test_a_signature_change_is_one_part_not_every_part_that_repeats_the_signature():
    old = long_fn(arms=120)
    new = old.replace("pub fn dispatch(op: Op) -> u32 {", "pub fn dispatch(op: &Op) -> u64 {")
    o, n = chunks(old, max_chars=1200)[0], chunks(new, max_chars=1200)[0]
    assert len(n.pieces) >= 3
    (p,) = part_changes("modified", o, n)
    assert p.part == 1 and "op: &Op" in p.new_code
    # a later part that also changed is still emitted
    both = new.replace("run_step(100 + 1,", "run_step(100 + 2,")
    parts = [p.part for p in part_changes("modified", o, chunks(both, max_chars=1200)[0])]
    assert parts[0] == 1 and len(parts) == 2


def test_later_parts_of_a_unit_that_was_one_piece_repeat_its_opening_on_the_old_side():
    """The old version fits one piece, the new one is cut: a later new part's old code
    starts with the old unit's opening (indented), as the part itself does."""
    body = lambda n: "".join(f"        let v{i} = self.table.get({i}).copied().unwrap_or({i});\n" for i in range(n))  # noqa: E731
    src = lambda n: f"impl Store {{\n    pub fn sum(&self) -> u32 {{\n{body(n)}        0\n    }}\n}}\n"  # noqa: E731
    (o,) = [c for c in chunks(src(12), max_chars=1200) if c.kind == "method"]
    (n,) = [c for c in chunks(src(40), max_chars=1200) if c.kind == "method"]
    assert len(o.pieces) == 1 and len(n.pieces) >= 3
    for p in part_changes("modified", o, n):
        if p.part > 1 and p.old_code:
            assert p.old_code.startswith("    pub fn sum(&self) -> u32 {\n")


def test_a_comment_after_a_unit_on_its_last_line_is_part_of_its_code():
    src = "impl T for N {\n    type Input = u8; // never read\n}\nconst X: u8 = 1; /* bits */\nfn f() {}\n"
    pieces = {c.name: c.pieces for c in chunks(src + "const Y: u8 = 2; /* goes\n on */\n")}
    assert pieces["Input"] == ["    type Input = u8; // never read"] and pieces["X"] == ["const X: u8 = 1; /* bits */"]
    assert pieces["Y"] == ["const Y: u8 = 2;"]  # a block comment that goes on is not the unit's
    assert pieces["f"] == ["fn f() {}"]
    assert ("modified", "m::<N as T>::Input", "m::<N as T>::Input") in changes(src, src.replace("never read", "read once"))


def test_macros_called_where_items_go_are_units():
    """Integration tests written as ``rgtest!(name, …)`` and tables in ``lazy_static!`` change
    as items do; a call inside a function body is part of the function."""
    names = [(c.kind, c.qualname) for c in chunks(MACRO_CALLS)]
    test = "rgtest!(sorts, |dir: Dir, mut cmd: TestCommand|)"
    statics = 'lazy_static!(static ref RE: Regex = new("x").unwrap();)'
    assert names == [("macro_call", f"m::{test}"), ("macro_call", f"m::{statics}"),
                     ("macro_call", 'm::include!("gen.rs")'), ("impl", "m::Store"),
                     ("macro_call", "m::Store::forward!(len, usize)"), ("method", "m::Store::get"), ("fn", "m::body")]
    edited = MACRO_CALLS.replace('"a", "b"', '"a", "c"').replace("len, usize", "len, u64")
    assert changes(MACRO_CALLS, edited) == [("modified", f"m::{test}", f"m::{test}"),
                                            ("modified", "m::Store::forward!(len, usize)", "m::Store::forward!(len, u64)")]
    (call,) = [c for c in chunks(edited) if c.name == test]
    assert call.text.startswith("rgtest!(sorts,") and call.text.endswith("});")
    (fwd,) = [c for c in chunks(edited) if c.kind == "macro_call" and c.name.startswith("forward")]
    assert fwd.pieces == ["    forward!(len, u64);"]  # whole lines: in a body the `;` is a node of its own
    long_call = "rgtest!(sorts, |dir: Dir, mut cmd: TestCommand| {\n" + "".join(
        f"    dir.create(\"f{i}\", \"some contents for file {i}\");\n" for i in range(40)) + "});\n"
    (big,) = chunks(long_call, max_chars=1200)
    assert len(big.pieces) >= 2 and all(p.startswith("rgtest!(sorts, |dir: Dir, mut cmd: TestCommand| {\n    dir.")
                                        for p in big.pieces)
    # calls of one macro are told apart by what they are given on their first line, paths and comments aside
    assert [c.name for c in chunks("errors!(\n    // ---\n    NoSuchField { name: String },\n);\n")] == ["errors!(NoSuchField)"]
    calls = "".join(f"try_from!(item: &proto::{t}Message, core::{t}, {{\n    Self {{ a: 1 }}\n}});\n" for t in ("Get", "Set"))
    assert [c.name for c in chunks(calls)] == ["try_from!(item: &GetMessage, Get)", "try_from!(item: &SetMessage, Set)"]
    assert changes(calls, calls.replace("a: 1 }\n});\ntry", "a: 2 }\n});\ntry")) == [
        ("modified", "m::try_from!(item: &GetMessage, Get)", "m::try_from!(item: &GetMessage, Get)")]
    # an edit of its first line renames a call: the same macro's most alike call is its old version
    assert changes(calls, calls.replace("core::Set,", "core::Result<Set>,")) == [
        ("modified", "m::try_from!(item: &SetMessage, Set)", "m::try_from!(item: &SetMessage, Result<Set>)")]


def test_cuts_keep_comments_and_attributes_with_what_they_lead_into():
    items = []
    for i in range(40):
        items.append(f"    /// Returns value {i},\n    /// in two lines.\n    #[inline]\n"
                     f"    pub fn value_{i}(&self) -> u32 {{\n        // the constant\n        {i}\n    }}\n")
    src = "impl Table {\n" + "\n".join(items) + "}\n"
    (c,) = [c for c in chunks(src, max_chars=1000) if c.kind == "impl"]
    header = "impl Table {\n"
    assert len(c.pieces) >= 4
    for piece in c.pieces[1:]:
        body = piece[len(header):].lstrip("\n")
        assert body.startswith("    /// Returns value") or body == "}", body[:80]  # never a lone `fn`, never mid-comment


def test_trait_impls_with_different_arguments_have_different_names():
    src = ("impl From<io::Error> for Error {\n    fn from(e: io::Error) -> Self { Error::Io(e) }\n}\n"
           "impl From<fmt::Error> for Error {\n    fn from(e: fmt::Error) -> Self { Error::Fmt(e) }\n}\n")
    names = [u.local_qualname for u in RUST.parse(src.encode()).units]
    assert names == ["<Error as From<io::Error>>", "<Error as From<io::Error>>::from",
                     "<Error as From<fmt::Error>>", "<Error as From<fmt::Error>>::from"]
    # dropping one of them is the deletion of that one, not a change of the other
    assert changes(src, src.split("impl From<fmt")[0]) == [("deleted", "m::<Error as From<fmt::Error>>::from", None)]


def test_later_parts_repeat_the_signature_not_the_doc_comment():
    doc = "".join(f"/// Line {i} of a long explanation of what dispatch does.\n" for i in range(6))
    (c,) = chunks(doc + "#[inline]\n" + long_fn(), max_chars=1200)
    assert len(c.pieces) >= 3 and c.pieces[0].startswith("/// Line 0")
    for piece in c.pieces[1:]:
        assert piece.startswith("#[inline]\npub fn dispatch(op: Op) -> u32 {\n") and "///" not in piece


@pytest.mark.parametrize("src", [
    # a macro body is a flat token tree: every token is a possible cut
    "macro_rules! forward {\n    ($t:ty) => {\n" + "".join(
        f"        #[inline]\n        fn get_{i}(&mut self) -> i32 {{ (**self).get_{i}() + {i} }}\n" for i in range(60))
    + "    };\n}\n",
    # long conditions: the cut between a condition and its block is inside a line
    "fn check(x: u64) -> u64 {\n" + "".join(
        f"    if x & (1 << {i}) == {i} && x.count_ones() > {i} && x.leading_zeros() < {i} {{ return {i}; }}\n"
        for i in range(60)) + "    0\n}\n",
])
def test_parts_begin_at_line_starts_where_a_line_break_allows(src):
    (c,) = chunks(src, max_chars=1000)
    assert len(c.pieces) >= 4
    starts = [a for a, _ in c._spans[1:]]
    assert all(c.text[a - 1] == "\n" for a in starts), [c.text[a - 20:a + 20] for a in starts]


def test_a_struct_and_an_impl_sharing_a_numbered_name_are_never_paired():
    body = "".join(f"    pub fn f{i}(&self) -> u32 {{ {i} }}\n" for i in range(3))
    old = "struct Inner { a: u32 }\n\nimpl Inner {\n" + body + "}\n"
    # a second (cfg) definition of the struct arrives: the impl is now Inner#3, the new struct Inner#2
    new = "#[cfg(unix)]\nstruct Inner { a: u32 }\n\n#[cfg(not(unix))]\nstruct Inner { a: u64 }\n\nimpl Inner {\n" + body + "}\n"
    # the new struct is added, the old one modified (it gained an attribute), the impl unchanged
    assert changes(old, new) == [("modified", "m::Inner", "m::Inner"), ("added", None, "m::Inner#2")]


def test_string_literals_and_headers_are_never_cut_and_tables_repeat_their_opening():
    usage = "const USAGE: &str = \"\\\n" + "".join(f"    --flag-{i}    does thing {i}\\n\\\n" for i in range(80)) + "\";\n"
    (c,) = chunks(usage, max_chars=1000)
    assert c.pieces == [c.text]  # one string literal: whole, over the limit, rather than cut inside
    table = "pub const TABLE: &[(u32, &str)] = &[\n" + "".join(f"    ({i}, \"entry {i}\"),\n" for i in range(80)) + "];\n"
    (t,) = chunks(table, max_chars=1000)
    assert len(t.pieces) >= 3 and all(p.startswith("pub const TABLE: &[(u32, &str)] = &[\n") for p in t.pieces)
    macro = "macro_rules! forward {\n" + "".join(f"    (get_{i}) => {{ self.get_{i}() }};\n" for i in range(60)) + "}\n"
    (m,) = chunks(macro, max_chars=1000)
    assert len(m.pieces) >= 3 and all(p.startswith("macro_rules! forward {\n") for p in m.pieces)


def test_no_part_is_only_the_closing_brace_when_the_piece_before_has_room():
    for arms in range(100, 140):
        (c,) = chunks(long_fn(arms=arms), max_chars=1200)
        assert not any(p.rstrip().endswith("{\n}") or p.split("\n", 1)[1].strip() in ("}", "}\n}") for p in c.pieces[1:]
                       if len(c.pieces[-2]) + 2 <= 1200), arms


def test_renaming_a_lifetime_does_not_rename_a_trait_impl():
    old = "impl<'a> From<&'a str> for Name<'a> {\n    fn from(s: &'a str) -> Self { Name(s) }\n}\n"
    new = old.replace("'a", "'src")
    assert [u.local_qualname for u in RUST.parse(old.encode()).units][0] == "<Name as From<&str>>"
    impl, method = "m::<Name as From<&str>>", "m::<Name as From<&str>>::from"
    assert changes(old, new) == [("modified", impl, impl), ("modified", method, method)]  # not renamed


def test_units_moved_to_another_file_pair_by_kind_and_local_name():
    old = chunks("impl Store {\n    pub fn open(path: &str) -> Store {\n        let f = load(path);\n        Store { f }\n    }\n}\n"
                 "pub fn helper() -> u8 { 1 }\npub fn same_here() -> u8 { 2 }\n"
                 "pub fn elsewhere() -> u8 {\n    compute_one_thing();\n    compute_another();\n    3\n}\n")
    new = chunks("impl Store {\n    pub fn open(path: &str) -> Store {\n        let f = load(path);\n        check(&f);\n"
                 "        Store { f }\n    }\n}\n"
                 "pub fn helper() -> u8 { 1 }\npub fn same_here() -> u8 { 2 }\n"
                 "pub fn elsewhere() -> u8 {\n    a_rewrite();\n    from_scratch();\n    of_it_all();\n    9\n}\n")
    named = lambda cs, *names: [(0, c) for c in cs if c.key in names]  # noqa: E731
    deleted = named(old, "Store::open", "helper", "same_here", "elsewhere")
    added = [(1, c) for _, c in named(new, "Store::open", "helper", "elsewhere")]
    added += [(0, c) for _, c in named(new, "same_here")]  # in its own file: not a move
    moves = {(deleted[d][1].key, added[a][1].key, same) for d, a, same in pair_moves(deleted, added, similarity=0.5)}
    # edited but alike: a move with a change; identical: a move without one; rewritten: none
    assert moves == {("Store::open", "Store::open", False), ("helper", "helper", True)}
    # a trait imported another way in the new file names the same impl
    old_impl = chunks("impl term::Terminal for Buf {\n    fn fg(&mut self) -> u8 {\n        self.set(1)\n    }\n}\n")
    new_impl = chunks("impl Terminal for Buf {\n    fn fg(&mut self) -> u8 {\n        self.set(1)\n    }\n}\n")
    fg = lambda cs: [c for c in cs if c.kind == "method"]  # noqa: E731
    assert [(d, a, same) for d, a, same in pair_moves([(0, c) for c in fg(old_impl)], [(1, c) for c in fg(new_impl)],
                                                      similarity=0.5)] == [(0, 0, True)]
    # a one-line unit moved with an edit: alike by characters, though its one line changed
    item = lambda src: [c for c in chunks(src) if c.kind == "type"]  # noqa: E731
    old_item = item("impl Iterator for Walk {\n    type Item = io::Result<WalkEvent>;\n}\n")
    new_item = item("impl Iterator for Walk {\n    type Item = walkdir::Result<WalkEvent>;\n}\n")
    other = item("impl Iterator for Walk {\n    type Item = u8;\n}\n")
    assert pair_moves([(0, c) for c in old_item], [(1, c) for c in new_item], similarity=0.6) == [(0, 0, False)]
    assert pair_moves([(0, c) for c in old_item], [(1, c) for c in other], similarity=0.6) == []
    # top-level one-liners share names across modules: lines decide, and an edited line is no match
    const = lambda v: [(k, c) for k, c in enumerate(chunks(f'const STORE_PREFIX: &[u8] = b"{v}";\n'))]  # noqa: E731
    assert pair_moves(const("pruning"), [(1, c) for _, c in const("utxo-diffs")], similarity=0.6) == []


def test_a_unit_moved_to_another_file_is_one_pair_not_a_deletion_and_an_addition(scripted_repo, tmp_path):
    r = scripted_repo
    r.commit("store", {"Cargo.toml": '[package]\nname = "kv"\n', "src/lib.rs": "pub mod store;\npub mod open;\n",
                       "src/store.rs": ("pub struct Store { f: u8 }\n\nimpl Store {\n    pub fn open(path: &str) -> Store {\n"
                                        "        let f = path.len() as u8;\n        Store { f }\n    }\n}\n\n"
                                        "pub fn helper() -> u8 {\n    1\n}\n"),
                       "src/open.rs": "pub fn unrelated() {}\n"})
    r.commit("move opening out of store", {
        "src/store.rs": "pub struct Store { pub f: u8 }\n",
        "src/open.rs": ("use crate::store::Store;\n\npub fn unrelated() {}\n\nimpl Store {\n"
                        "    pub fn open(path: &str) -> Store {\n        let f = path.len() as u8;\n"
                        "        assert!(f > 0);\n        Store { f }\n    }\n}\n\npub fn helper() -> u8 {\n    1\n}\n")})
    run_dir = run_pipeline(tmp_path, f"repo={r.path}", "stages=[mine,chunk]")
    rows = [row for row in read_chunks(run_dir) if row["subject"] == "move opening out of store"]
    by_name = {row["qualname"]: row for row in rows}
    opened = by_name["kv::open::Store::open"]
    assert (opened["change"], opened["path"], opened["old_path"]) == ("modified", "src/open.rs", "src/store.rs")
    assert opened["old_qualname"] == "kv::store::Store::open"
    assert "assert!" not in opened["old_code"] and "assert!(f > 0);" in opened["new_code"]
    assert "kv::open::helper" not in by_name and "kv::store::helper" not in by_name  # moved as it was
    assert sorted(by_name) == ["kv::open::Store::open", "kv::store::Store"]
    counts = manifest(run_dir)["stages"]["chunk"]["counts"]
    assert (counts["units_moved_changed"], counts["units_moved_unchanged"]) == (1, 1)


def test_a_container_emits_only_the_parts_whose_own_text_changed():
    body = lambda name, k: f"    fn {name}() -> u32 {{\n" + "".join(  # noqa: E731
        f"        let v{i} = {k} + {i};\n" for i in range(60)) + "        0\n    }\n"
    old_src = "mod tests {\n    use super::a;\n\n" + body("one", 1) + "\n" + body("two", 1) + "\n" + body("three", 1) + "}\n"
    # `three` changes (its own row) and the module gains a `use` near its top
    new_src = old_src.replace("    use super::a;\n", "    use super::a;\n    use super::b;\n").replace(
        "fn three() -> u32 {\n        let v0 = 1", "fn three() -> u32 {\n        let v0 = 7")
    pairs = {o.key: (o, n) for ch, o, n in pair_chunks(chunks(old_src, 2000), chunks(new_src, 2000),
                                                       renames=True, rename_similarity=0.6)}
    assert set(pairs) == {"tests", "tests::three"}
    mod_parts = list(part_changes("modified", *pairs["tests"]))
    # the module's part with the new `use` only: not the part holding `three`, which its own row shows
    assert len(pairs["tests"][1].pieces) > 2 and len(mod_parts) == 1
    assert "use super::b;" in mod_parts[0].new_code and "let v0 = 7" not in mod_parts[0].new_code
    # a new member that makes a part of its own: that part holds members only, and is no change
    assert new_src.endswith("    }\n}\n")
    grown = new_src[:-2] + "\n" + body("four", 2) + "}\n"
    pairs = {o.key if o else n.key: (o, n) for ch, o, n in pair_chunks(
        chunks(old_src, 2000), chunks(grown, 2000), renames=True, rename_similarity=0.6)}
    assert len(pairs["tests"][1].pieces) > len(pairs["tests"][0].pieces)
    mod_parts = list(part_changes("modified", *pairs["tests"]))
    assert len(mod_parts) == 1 and mod_parts[0].old_code and "use super::b;" in mod_parts[0].new_code


def test_a_name_shared_by_very_many_moved_units_pairs_identical_texts_only():
    one = chunks("pub fn main() -> u8 {\n    setup();\n    1\n}\n")[0]
    other = [chunks(f"pub fn main() -> u8 {{\n    setup();\n    {i}\n}}\n")[0] for i in range(300)]
    deleted = [(i, one) for i in range(300)]
    # 300 x 300 candidates over the cap: the one identical text (`1`), no similar-text guesses
    moves = pair_moves(deleted, [(300 + i, c) for i, c in enumerate(other)], similarity=0.5, max_candidates=64)
    assert moves == [(0, 1, True)]
    few = pair_moves(deleted[:3], [(300 + i, c) for i, c in enumerate(other[:3])], similarity=0.5)
    assert sorted(a for _, a, _ in few) == [0, 1, 2]  # under the cap, similar texts pair too


def test_pairing_similarity_is_difflibs():
    """Pairing's SequenceMatcher (compiled when cydifflib is installed) decides renames and
    part alignments by difflib's figures: same ratios, same opcodes."""
    import difflib
    import random

    from core import pairing

    rnd = random.Random(7)
    words = ["fn", "let", "x", "y", "=", "(", ")", "{", "}", "é", "→", "\n", "    ", "Some", "None", ";"]
    for _ in range(60):
        a = "".join(rnd.choice(words) for _ in range(rnd.randrange(0, 300)))
        b = list(a)
        for _ in range(rnd.randrange(0, 20)):
            b.insert(rnd.randrange(0, len(b) + 1), rnd.choice(words))
        b = "".join(b)
        ours = pairing.SequenceMatcher(None, a, b, autojunk=False)
        ref = difflib.SequenceMatcher(None, a, b, autojunk=False)
        assert ours.ratio() == ref.ratio()
        lines_a, lines_b = a.splitlines(), b.splitlines()
        assert (pairing.SequenceMatcher(None, lines_a, lines_b, autojunk=False).get_opcodes()
                == difflib.SequenceMatcher(None, lines_a, lines_b, autojunk=False).get_opcodes())
