"""Property-based tests: generated and mutated Rust, and random bytes, through parsing,
chunking, pairing and context building.

Properties: nothing crashes; every unit's spans slice back to its text (bytes and
characters); every item of a generated valid file is found, with its name; cut parts
of oversize units put back together give the unit; an index fed any sequence of
versions resolves references without error and never returns the unit itself.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.context import CharCounter, Reference, UnitQuery, pack, pack_references, to_item
from core.parsing import hunk_edits
from core.pairing import pair_chunks, part_changes
from plugins.chunkers import AstChunker, AstChunkerConfig
from plugins.rust import RustLanguage, rust_module_path
from plugins.rust_symbols import RustIndex, summarize

from ..conftest import line_hunks_of

LANG = RustLanguage()
IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda s: s not in {"fn", "if", "in", "as", "do", "let", "mod", "pub", "use", "ref", "mut", "for", "try", "box",
                        "dyn", "gen", "yield", "match", "loop", "move", "impl", "type", "enum", "self", "true", "else",
                        "while", "break", "const", "crate", "super", "trait", "where", "async", "await", "false",
                        "macro", "final", "priv", "union", "static", "struct", "unsafe", "become", "extern",
                        "return", "typeof", "virtual", "abstract", "override", "continue", "unsized"})
TYPE = IDENT.map(lambda s: s[0].upper() + s[1:] + "T")
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\"\\"), max_size=12)


@st.composite
def item(draw) -> tuple[str, str, str]:
    """(kind, name, source) of one valid item."""
    kind = draw(st.sampled_from(["fn", "struct", "enum", "const", "trait", "impl", "mod", "macro"]))
    name = draw(TYPE if kind in ("struct", "enum", "trait", "impl") else IDENT)
    doc = f"/// {draw(TEXT)}\n" if draw(st.booleans()) else ""
    body = "\n".join(f"    let {draw(IDENT)} = \"{draw(TEXT)}\";" for _ in range(draw(st.integers(0, 4))))
    if kind == "fn":
        src = f"pub fn {name}(x: u32) -> u32 {{\n{body}\n    x\n}}"
    elif kind == "struct":
        src = f"#[derive(Debug)]\npub struct {name} {{ pub a: u32, b: String }}"
    elif kind == "enum":
        src = f"enum {name} {{ A, B(u8) }}"
    elif kind == "const":
        src = f"const {name.upper()}_C: &str = \"{draw(TEXT)}\";"
        name = f"{name.upper()}_C"
    elif kind == "trait":
        src = f"pub trait {name} {{ fn run(&self) -> u8; fn go(&self) {{}} }}"
    elif kind == "impl":
        src = f"impl {name} {{\n    pub fn new() -> Self {{\n{body}\n        todo!()\n    }}\n}}"
    elif kind == "mod":
        src = f"mod {name} {{ fn inner() {{}} }}"
    else:
        src = f"macro_rules! {name} {{ () => {{}}; }}"
    return kind, name, doc + src


FILES = st.lists(item(), min_size=1, max_size=8)


def _check_spans(source: bytes) -> None:
    parsed = LANG.parse(source)
    text = source.decode("utf-8")
    for u in parsed.units:
        assert source[u.start_byte:u.end_byte].decode("utf-8") == u.text == text[u.char_start:u.char_end]
        assert 1 <= u.start_line <= u.end_line


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FILES, TEXT)
def test_every_item_of_a_valid_file_is_found_with_exact_spans(items, prefix):
    lead = "// " + prefix.replace("\n", " ").replace("\r", " ") + "\n"
    source = (lead + "\n\n".join(src for _, _, src in items) + "\n").encode("utf-8", "surrogatepass")
    try:
        source.decode("utf-8")
    except UnicodeDecodeError:
        return
    parsed = LANG.parse(source)
    assert not parsed.has_error
    top = [(u.kind, u.name) for u in parsed.units if u.parent is None]
    assert top == [(kind, name) for kind, name, _ in items]
    _check_spans(source)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FILES, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 40), st.binary(max_size=12)), max_size=4))
def test_mutated_sources_never_crash_and_spans_hold(items, edits):
    data = bytearray("\n\n".join(src for _, _, src in items).encode())
    for at, cut, insert in edits:
        at %= len(data) + 1
        data[at:at + cut] = insert
    source = bytes(data)
    try:
        source.decode("utf-8")
    except UnicodeDecodeError:
        return  # not UTF-8: the chunk stage skips such blobs before parsing (counted as not_utf8)
    _check_spans(source)
    # the incremental path from the unmutated version gives the same units as a fresh parse
    first = "\n\n".join(src for _, _, src in items).encode()
    previous = LANG.parse(first)
    again = LANG.parse(source, (first, previous))
    assert again.to_dict() == LANG.parse(source).to_dict()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FILES, FILES, st.lists(st.integers(0, 7), max_size=3))
def test_parsing_from_line_hunks_equals_a_fresh_parse(items, others, replaced):
    # a new version that replaces, drops or adds whole items here and there
    new_items = [src for _, _, src in items]
    for i, at in enumerate(replaced):
        pick = others[i % len(others)][2]
        if at < len(new_items):
            new_items[at] = pick if i % 2 == 0 else ""
        else:
            new_items.append(pick)
    old = ("\n\n".join(src for _, _, src in items) + "\n").encode()
    new = ("\n\n".join(new_items) + "\n").encode()
    edits = hunk_edits(old, new, line_hunks_of(old, new))
    if edits is None:
        assert old == new
        return
    previous = LANG.parse(old)
    fresh = LANG.parse(new)
    assert LANG.parse(new, (old, previous), edits=edits).to_dict() == fresh.to_dict()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_through_parse_chunk_pair_and_context(raw):
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return
    chunker = AstChunker(AstChunkerConfig(max_chars=1000))
    parsed = LANG.parse(raw)
    chunks = chunker.chunk(parsed, LANG, "src/lib.rs")
    for change, old, new in pair_chunks([], chunks, renames=True, rename_similarity=0.6):
        for pc in part_changes(change, old, new):
            assert pc.change == "added" and pc.old_code == ""
    idx = RustIndex(rust_module_path)
    idx.update({"src/lib.rs": summarize(parsed, 1200, 0)}, {"Cargo.toml": raw})  # garbage manifest too
    for u in parsed.units:
        q = UnitQuery(path="src/lib.rs", lang="rust", code=u.text, header=u.header, qualname=u.local_qualname,
                      local_qualname=u.local_qualname, parsed=parsed, lines=(u.start_line, u.end_line))
        for ref in idx.references(q):
            assert not (ref.path == "src/lib.rs" and ref.qualname.endswith(u.local_qualname))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FILES, min_size=2, max_size=3), st.integers(1000, 3000))
def test_cut_parts_of_oversize_units_rebuild_the_unit_across_versions(versions, max_chars):
    chunker = AstChunker(AstChunkerConfig(max_chars=max_chars))
    for items in versions:
        body = "\n".join(f"    let v{i} = {i} + x;" for i in range(200))
        source = ("\n\n".join(src for _, _, src in items) + f"\n\nfn big(x: u32) {{\n{body}\n}}\n").encode()
        parsed = LANG.parse(source)
        big = next(c for c in chunker.chunk(parsed, LANG, "src/lib.rs") if c.name == "big")
        pieces = big.pieces
        assert len(pieces) > 1 and all(len(p) <= max_chars for p in pieces)
        assert all(line in big.text for p in pieces for line in p.splitlines() if line.strip())


REFERENCES = st.lists(st.builds(
    Reference, path=st.sampled_from(["a.rs", "b.rs"]), qualname=st.sampled_from(["x", "y", "z", "m::x"]),
    kind=st.just("struct"), text=st.sampled_from(["s", "struct S;", "t" * 40, "u" * 90]),
    count=st.integers(0, 25), distance=st.integers(0, 12),
    tier=st.sampled_from(["direct", "method", "impl", "related", "file"]), why=st.just("w")), max_size=12)


@settings(max_examples=200, deadline=None)
@given(REFERENCES, st.integers(0, 80))
def test_packing_references_equals_packing_their_items(refs, budget):
    """pack_references makes items of the packed references only: same choice, same order."""
    # characters (counted from lengths), and a tokenizer's count of the joined text
    for count in (CharCounter(3.2), lambda text: len(text.split()) + text.count("\n")):
        assert pack_references(refs, budget, count) == pack([to_item(r) for r in refs], budget, count)
