"""Context strategies on a multi-crate Cargo workspace with a scripted history.

The workspace has a library crate with nested modules, a re-export, a glob import,
an alias, a ``#[path]`` module, an exported macro and a trait implemented in another
file; an app crate depends on it under a renamed dependency. Tests check what each
strategy puts in a unit's context and that the context follows history.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from core.chunking import reset_memory
from core.context import CharCounter, Reference, UnitQuery, pack, pack_references
from core.errors import CommitforgeError
from core.pipeline import Run
from core.records import ContextItem
from core.snapshot import plan_trees
from core.stats import Counter
from plugins.contexts import (
    ImportsContext,
    ImportsContextConfig,
    RepoMapContext,
    RepoMapContextConfig,
    SameFileContext,
    SameFileContextConfig,
    _fixed,
    _Graph,
    personalized_pagerank,
)
from plugins.rust import RustLanguage

from ..conftest import (
    ScriptedRepo,
    make_cfg,
    manifest,
    read_chunks,
    run_pipeline,
)

WORKSPACE = {
    "Cargo.toml": '[workspace]\nmembers = ["crates/*"]\n\n[workspace.dependencies]\n'
                  'geo = { path = "crates/geo-core", package = "geo-core" }\n',
    "crates/geo-core/Cargo.toml": '[package]\nname = "geo-core"\nversion = "0.1.0"\n',
    "crates/geo-core/src/lib.rs": """//! Geometry.
pub mod shapes;
pub mod units;
#[path = "algo_impl.rs"]
pub mod algo;

pub use shapes::circle::Circle;
pub use units::*;

#[macro_export]
macro_rules! square {
    ($x:expr) => { $x * $x };
}

/// Anything with an area.
pub trait Area {
    fn area(&self) -> Meters;
    fn describe(&self) -> String { String::from("shape") }
}
""",
    "crates/geo-core/src/units.rs": """/// A length in meters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Meters(pub f64);

pub const ORIGIN: (f64, f64) = (0.0, 0.0);

impl Meters {
    pub fn new(v: f64) -> Self { Meters(v) }
    pub fn value(&self) -> f64 { self.0 }
}
""",
    "crates/geo-core/src/shapes/mod.rs": "pub mod circle;\npub mod polygon;\n",
    "crates/geo-core/src/shapes/circle.rs": """use crate::{Area, Meters as M};

/// A circle.
pub struct Circle {
    pub radius: M,
}

impl Area for Circle {
    fn area(&self) -> M {
        M(3.14159 * square!(self.radius.value()))
    }
}
""",
    "crates/geo-core/src/shapes/polygon.rs": """use super::super::units::Meters;

pub struct Polygon { pub sides: Vec<Meters> }

pub fn perimeter(p: &Polygon) -> Meters {
    Meters(p.sides.iter().map(|s| s.value()).sum())
}
""",
    "crates/geo-core/src/algo_impl.rs": """use crate::shapes::polygon::{self, Polygon};

pub fn longest(p: &Polygon) -> f64 {
    polygon::perimeter(p).value()
}
""",
    "crates/app/Cargo.toml": '[package]\nname = "app"\nversion = "0.1.0"\n\n[dependencies]\n'
                             'geo = { workspace = true }\n',
    "crates/app/src/main.rs": """use geo::{Area, Circle};
use geo::units::Meters;

fn main() {
    let c = Circle { radius: Meters::new(2.0) };
    println!("{}", c.area().value());
}
""",
}


def _context(rows: list[dict], qualname: str, commit: str | None = None) -> list[dict]:
    hits = [r for r in rows if r["qualname"] == qualname and (commit is None or r["commit"] == commit)]
    assert hits, f"no unit change for {qualname}"
    return hits[-1]["context"]


@pytest.fixture
def workspace(scripted_repo: ScriptedRepo) -> ScriptedRepo:
    scripted_repo.commit("geometry workspace", WORKSPACE)
    return scripted_repo


def test_imports_resolve_across_crates_modules_reexports_globs_aliases_and_path_modules(workspace, tmp_path):
    run_dir = run_pipeline(tmp_path, f"repo={workspace.path}", "context=imports", "stages=[mine,chunk]")
    rows = read_chunks(run_dir)
    main = {c["qualname"]: c for c in _context(rows, "app::main")}
    # `geo` is the workspace's renamed dependency on geo-core; Circle is re-exported at its root,
    # Meters is reached through `units::Meters` (and a `pub use units::*` glob)
    assert {"geo_core::shapes::circle::Circle", "geo_core::units::Meters"} <= set(main)
    assert main["geo_core::shapes::circle::Circle"]["text"].startswith("/// A circle.\npub struct Circle")
    assert main["geo_core::shapes::circle::Circle"]["why"].startswith("direct")
    # associated functions and the methods main calls on the types it names come with their impl
    # headers, trait methods included (`c.area()` is `<Circle as Area>::area`)
    assert main["geo_core::units::Meters::new"]["text"] == "impl Meters {\n    pub fn new(v: f64) -> Self;\n}"
    assert main["geo_core::shapes::circle::<Circle as Area>::area"]["why"] == "method: .area()"
    assert "geo_core::units::Meters::value" in main

    area = {c["qualname"]: c for c in _context(rows, "geo_core::shapes::circle::<Circle as Area>::area")}
    # `Meters as M` alias, `crate::Area`, the exported macro, the Self type from the impl header
    assert {"geo_core::units::Meters", "geo_core::Area", "geo_core::square",
            "geo_core::shapes::circle::Circle"} <= set(area)
    assert "geo_core::shapes::circle::<Circle as Area>::area" not in area  # never the unit itself
    # a trait is rendered as its item signatures, without default bodies
    assert area["geo_core::Area"]["text"] == ("/// Anything with an area.\npub trait Area {\n    fn area(&self) -> Meters;\n"
                                              "    fn describe(&self) -> String;\n}")

    # algo_impl.rs is the module `algo` (`#[path = "algo_impl.rs"] pub mod algo;`)
    longest = {c["qualname"] for c in _context(rows, "geo_core::algo::longest")}
    # `#[path]` module: `crate::shapes::polygon::{self, Polygon}` and `polygon::perimeter`
    assert {"geo_core::shapes::polygon::Polygon", "geo_core::shapes::polygon::perimeter"} <= longest
    perimeter = {c["qualname"] for c in _context(rows, "geo_core::shapes::polygon::perimeter")}
    assert "geo_core::units::Meters" in perimeter  # super::super::units::Meters

    ctx = manifest(run_dir)["context"]
    assert ctx["strategy"] == "imports" and ctx["snapshot"] == "commit"
    assert ctx["recall"] == 1.0 and ctx["refs"] >= 10  # nothing referenced was left out at 2048 tokens


def test_context_follows_history_and_snapshot_choice(workspace, tmp_path):
    grown = WORKSPACE["crates/geo-core/src/units.rs"].replace("pub struct Meters(pub f64);",
                                                              "pub struct Meters(pub f64, pub &'static str);")
    second = workspace.commit("meters carry a unit label", {
        "crates/geo-core/src/units.rs": grown,
        "crates/app/src/main.rs": WORKSPACE["crates/app/src/main.rs"].replace("2.0", "3.0"),
    })
    rows_commit = read_chunks(run_pipeline(tmp_path / "c", f"repo={workspace.path}", "context=imports",
                                          "stages=[mine,chunk]"))
    rows_parent = read_chunks(run_pipeline(tmp_path / "p", f"repo={workspace.path}", "context=imports",
                                          "context.snapshot=parent", "stages=[mine,chunk]"))

    def meters(rows, commit=None):
        return next(c["text"] for c in _context(rows, "app::main", commit) if c["qualname"] == "geo_core::units::Meters")

    first = next(r["commit"] for r in rows_commit if r["commit"] != second)
    assert "&'static str" not in meters(rows_commit, first)
    assert "pub struct Meters(pub f64, pub &'static str);" in meters(rows_commit, second)  # the tree after the commit
    assert "&'static str" not in meters(rows_parent, second)  # the tree before it
    assert not _context(rows_parent, "app::main", first)  # the first commit's parent is an empty tree


def test_same_file_and_none_measure_recall_against_the_same_references(workspace, tmp_path):
    figures = {}
    for strategy in ("imports", "same_file", "none"):
        extra = ["context.recall=true", "context.snapshot=commit"] if strategy == "none" else []
        run_dir = run_pipeline(tmp_path / strategy, f"repo={workspace.path}", f"context={strategy}",
                               "stages=[mine,chunk]", *extra)
        figures[strategy] = manifest(run_dir)["context"]
    assert figures["imports"]["refs"] == figures["same_file"]["refs"] == figures["none"]["refs"] > 0
    assert figures["none"]["recall"] == 0.0 and figures["none"]["empty_share"] == 1.0
    assert 0 < figures["same_file"]["recall"] < figures["imports"]["recall"] == 1.0


def test_budget_packs_whole_items_best_first(workspace, tmp_path):
    run_dir = run_pipeline(tmp_path, f"repo={workspace.path}", "context=imports", "context.max_tokens=40",
                           "stages=[mine,chunk]")
    rows = read_chunks(run_dir)
    for row in rows:
        cost = sum(-(-len(f"{c['path']}\n{c['text']}") // 3.2) for c in row["context"])
        assert cost <= 40
        scores = [c["score"] for c in row["context"]]
        assert scores == sorted(scores, reverse=True)
    main = _context(rows, "app::main")
    assert main and len(main) < 4  # fewer items than the full budget holds
    assert manifest(run_dir)["context"]["recall"] < 1.0


def test_a_long_data_type_shows_its_fields_only_in_the_room_the_references_after_it_leave():
    def ref(path: str, text: str, short: str = "", count: int = 1) -> Reference:
        return Reference(path, path[0] + "::X", "struct", text, count, 0, "direct", "X", "X", short)

    big = ref("a.rs", "pub struct A {\n    x: u8,\n    z: u16,\n    // … 9 more fields\n}", "pub struct A { … }", count=3)
    big2 = ref("b.rs", "pub struct B {\n    y: u8,\n    // … 4 more fields\n}", "pub struct B { … }", count=2)
    small = ref("c.rs", "pub struct C;")
    count = CharCounter(1.0)  # a token per character: costs are path + newline + text
    cost = {r.path: [len(r.path) + 1 + len(t) for t in (r.text, r.short) if t] for r in (big, big2, small)}

    def packed(budget: int) -> list[tuple[str, str]]:
        return [(i.path, i.text) for i in pack_references([small, big2, big], budget, count)]

    shorts = cost["a.rs"][1] + cost["b.rs"][1] + cost["c.rs"][0]
    # every reference fits by its short form before any shows fields; the best ranked first
    assert packed(shorts) == [("a.rs", big.short), ("b.rs", big2.short), ("c.rs", small.text)]
    assert packed(shorts + cost["a.rs"][0] - cost["a.rs"][1]) == [("a.rs", big.text), ("b.rs", big2.short),
                                                                  ("c.rs", small.text)]
    room_for_b_only = shorts + cost["b.rs"][0] - cost["b.rs"][1]
    assert room_for_b_only < shorts + cost["a.rs"][0] - cost["a.rs"][1]
    assert packed(room_for_b_only) == [("a.rs", big.short), ("b.rs", big2.text), ("c.rs", small.text)]
    # tiers interleave by score: a method reference ranked between two direct ones is packed
    # as it would be by short forms alone, and widening never pushes it out
    method = Reference("m.rs", "m::M::go", "method", "impl M {\n    fn go(&self);\n}", 20, 0, "method", ".go()", "go")
    low = ref("d.rs", "pub struct D {\n    x: u32,\n    y: u32,\n}")
    low.distance = 10
    room = cost["a.rs"][1] + len("m.rs") + 1 + len(method.text) + 1
    assert [(i.path, i.text) for i in pack_references([low, method, big], room, count)] == [
        ("a.rs", big.short), ("m.rs", method.text)]
    # two definitions whose short forms are the same are both kept
    twin = ref("z.rs", big.text.replace("z: u16", "w: u16"), big.short, count=3)
    assert [i.path for i in pack_references([big, twin], 1000, count)] == ["a.rs", "z.rs"]
    # without short forms, packing is greedy on the texts as before
    assert packed(cost["a.rs"][1]) == [("a.rs", big.short)]
    assert [i.text for i in pack_references([ref("a.rs", big.text), small], cost["c.rs"][0], count)] == [small.text]


def test_pack_gives_an_item_its_longer_text_only_in_the_room_left():
    def item(path: str, text: str, score: float) -> ContextItem:
        return ContextItem(path, path[0] + "::X", "struct", text, score, "repomap")

    fields = "pub struct A {\n    x: u8,\n    // … 9 more fields\n}"
    a, b = item("a.rs", "pub struct A { … }", 3.0), item("b.rs", "pub struct B;", 2.0)
    count = CharCounter(1.0)
    room = len("a.rs") + 1 + len(a.text) + len("b.rs") + 1 + len(b.text)
    assert [i.text for i in pack([a, b], room, count, {id(a): fields})] == [a.text, b.text]  # b is not pushed out
    a2, b2 = item("a.rs", "pub struct A { … }", 3.0), item("b.rs", "pub struct B;", 2.0)
    wide = room + len(fields) - len(a2.text)
    assert [i.text for i in pack([a2, b2], wide, count, {id(a2): fields})] == [fields, b2.text]


def _query(src: str, path: str, name: str) -> UnitQuery:
    lang = RustLanguage()
    parsed = lang.parse(src.encode())
    unit = next(u for u in parsed.units if u.name == name)
    module = lang.module_path(path)
    return UnitQuery(path=path, lang="rust", code=unit.text, header=unit.header,
                     qualname=f"{module}::{unit.local_qualname}" if module else unit.local_qualname,
                     local_qualname=unit.local_qualname, parsed=parsed, lines=(unit.start_line, unit.end_line))


SRC = """pub struct Ledger { entries: Vec<Entry> }

pub struct Entry { amount: i64 }

pub const LIMIT: i64 = 1_000;

fn unrelated() -> u8 { 7 }

impl Ledger {
    pub fn total(&self) -> i64 {
        self.entries.iter().map(|e: &Entry| e.amount).sum::<i64>().min(LIMIT)
    }
}
"""


def test_same_file_context_holds_the_named_definitions_ranked_and_budgeted():
    q = _query(SRC, "src/m.rs", "total")
    items = SameFileContext(SameFileContextConfig()).items(q, None)
    assert [i.qualname for i in items] == ["m::Entry", "m::LIMIT"]  # Entry is named twice; Ledger is not named
    assert items[0].text == "pub struct Entry { amount: i64 }" and items[0].why == "same_file"
    assert not any("total" in i.text for i in items)  # never the unit itself
    small = SameFileContext(SameFileContextConfig(max_tokens=12)).items(q, None)
    assert [i.qualname for i in small] == ["m::LIMIT"]  # Entry's 12 tokens do not fit next to its path


def test_strategy_settings_are_checked():
    with pytest.raises(CommitforgeError, match="context.snapshot='tip' is not one of commit, parent"):
        ImportsContext(ImportsContextConfig(snapshot="tip"))
    with pytest.raises(CommitforgeError, match="context.max_tokens=-1"):
        SameFileContext(SameFileContextConfig(max_tokens=-1))
    with pytest.raises(CommitforgeError, match="context.damping=1.5"):
        RepoMapContext(RepoMapContextConfig(damping=1.5))
    with pytest.raises(CommitforgeError, match="context.max_files=0"):
        RepoMapContext(RepoMapContextConfig(max_files=0))


def test_repomap_refuses_a_snapshot_with_more_files_than_its_graph_may_hold(workspace, tmp_path):
    rust_files = int(workspace.git("ls-files", "*.rs").count("\n")) + 1
    # the first snapshot over the limit stops the run, before its graph is made
    with pytest.raises(CommitforgeError, match=r"holds [4-9] rust files, over context.max_files=3; its file graph "
                                               r"would take \d+ B per worker\. Raise context.max_files .* use "
                                               r"context=imports"):
        run_pipeline(tmp_path / "a", f"repo={workspace.path}", "context=repomap", "context.max_files=3",
                     "stages=[mine,chunk]")
    run_dir = run_pipeline(tmp_path / "b", f"repo={workspace.path}", "context=repomap",
                           f"context.max_files={rust_files}", "stages=[mine,chunk]")
    assert manifest(run_dir)["context"]["strategy"] == "repomap"


def test_repomap_ranks_files_the_unit_file_points_at(workspace, tmp_path):
    run_dir = run_pipeline(tmp_path, f"repo={workspace.path}", "context=repomap", "stages=[mine,chunk]")
    rows = read_chunks(run_dir)
    main = _context(rows, "app::main")
    assert main and all(c["why"].startswith("repomap: rank") for c in main)
    named = [c["qualname"] for c in main if "named" in c["why"]]
    # the definitions main names come first (types and impl blocks; methods live in the impls),
    # then the rest of the files its references point at, by file rank
    assert main[:len(named)] == [c for c in main if "named" in c["why"]]
    assert {"geo_core::units::Meters", "geo_core::shapes::circle::Circle"} <= set(named)
    assert not any(c["kind"] == "method" for c in main)
    assert "geo_core::units::ORIGIN" in [c["qualname"] for c in main[len(named):]]
    assert manifest(run_dir)["context"]["strategy"] == "repomap"


def _pagerank_by_hand(edges: dict[int, dict[int, float]], n: int, source: int | None, damping: float,
                      iterations: int) -> list[float]:
    """Personalised PageRank the long way: each node hands its rank to its out-edges in
    proportion to their weights; a node without out-edges hands it back to the source."""
    start = [1.0 if source in (None, i) else 0.0 for i in range(n)]
    start = [x / sum(start) for x in start]
    rank = list(start)
    for _ in range(iterations):
        nxt = [(1 - damping) * s for s in start]
        for i in range(n):
            out = edges.get(i, {})
            total = sum(out.values())
            for j, w in out.items():
                nxt[j] += damping * rank[i] * w / total
            if not out:
                for j in range(n):
                    nxt[j] += damping * rank[i] * start[j]
        rank = nxt
    return rank


@pytest.mark.parametrize("seed", range(6))
def test_personalized_pagerank_matches_a_by_hand_computation(seed):
    """Rank flows along edges from file i to file j (not back), dangling files return theirs
    to the source: a transposed matrix or a lost dangling share gives other ranks."""
    rng = np.random.default_rng(seed)
    n = 7
    edges = {i: {int(j): float(rng.integers(1, 5)) for j in rng.choice(n, size=rng.integers(1, 4), replace=False)
                 if j != i} for i in range(n) if rng.random() < 0.7}
    edges = {i: out for i, out in edges.items() if out}
    wt = np.zeros((n, n))
    for i, out in edges.items():
        for j, w in out.items():
            wt[i, j] = w / sum(out.values())
    dangling = np.array([i not in edges for i in range(n)])
    source = None if seed == 0 else int(seed % n)
    start = np.full(n, 1.0 / n) if source is None else np.eye(n)[source]
    by_hand = _pagerank_by_hand(edges, n, source, 0.85, 30)
    got = personalized_pagerank(wt, dangling, start, 0.85, 30)
    assert got == pytest.approx(by_hand, abs=1e-11)
    assert got.sum() == pytest.approx(1.0)  # no rank is lost or made
    single = personalized_pagerank(wt.astype(np.float32), dangling, start, 0.85, 30)  # as repomap runs it
    assert single.dtype == np.float64 and single == pytest.approx(by_hand, abs=1e-6)
    # a NumPy damping must not turn the arithmetic into double precision
    assert np.array_equal(personalized_pagerank(wt.astype(np.float32), dangling, start, np.float64(0.85), 30), single)


def test_repomap_graph_kept_up_to_date_holds_the_weights_of_one_built_anew(scripted_repo, tmp_path):
    """Where a name's definitions move, the files using it gain or lose that name's share
    of their edges instead of being recomputed, and only the rows that changed are
    normalised again: after every commit, the graph that followed the history must hold
    exactly the weights and the normalised matrix of one built from that tree alone
    (workers start at other commits)."""
    a = "pub struct Store;\npub fn open() -> Store { Store }\n"
    b = "use crate::a::{open, Store};\npub fn get(s: &Store) -> Store { open() }\n"
    scripted_repo.commit("start", {
        "Cargo.toml": '[package]\nname = "g"\nversion = "0.1.0"\n',
        "src/lib.rs": "pub mod a;\npub mod b;\npub mod c;\n", "src/a.rs": a, "src/b.rs": b,
        "src/c.rs": "pub fn run() { let s = crate::a::open(); crate::b::get(&s); crate::b::get(&s); }\n"})
    scripted_repo.commit("b defines open too", {"src/b.rs": b + "pub fn open() {}\n"})
    scripted_repo.commit("a no longer does", {"src/a.rs": "pub struct Store;\n"})
    scripted_repo.commit("d comes, c goes", {"src/d.rs": "pub struct Store;\npub fn run() { get() }\n",
                                             "src/c.rs": None, "src/lib.rs": "pub mod a;\npub mod b;\npub mod d;\n"})
    scripted_repo.commit("d uses open", {"src/d.rs": "pub fn run() { let s: Store = open(); open() }\n"})
    # b, which defines open, goes while d (unchanged) still uses it
    scripted_repo.commit("b goes", {"src/b.rs": None, "src/lib.rs": "pub mod a;\npub mod d;\n"})
    run_pipeline(tmp_path, f"repo={scripted_repo.path}", "context=repomap", "stages=[mine,chunk]")  # parses every blob

    run = Run(make_cfg(tmp_path, f"repo={scripted_repo.path}", "context=repomap", "stages=[mine,chunk]"))
    commits = list(run.source.commits(run.repo, run.extensions(), Counter()))
    deltas = plan_trees(run.repo, commits, lambda path: path.endswith((".rs", ".toml")), "commit")
    reset_memory()
    snapshot = run.chunk_job()._snapshot()
    followed = _Graph("rust")
    weights = []
    for delta in deltas:
        snapshot.apply(delta)
        followed._sync(snapshot)
        anew = _Graph("rust")
        anew._sync(snapshot)
        assert followed.paths == anew.paths and np.array_equal(followed.weights, anew.weights)
        paths, _, wt, dangling = followed._matrix()
        assert np.array_equal(wt, anew._matrix()[2]) and np.array_equal(dangling, anew._matrix()[3])
        assert wt.sum(axis=1) == pytest.approx(np.where(dangling, 0.0, 1.0), abs=1e-6)
        assert dangling[paths.index("src/lib.rs")]  # `mod` declarations are no edges
        weights.append(dict(zip(paths, followed.weights.tolist())))
    d_uses = weights[4]["src/d.rs"]  # Store (defined by a) once, open (by b) twice
    assert d_uses == [_fixed(1), _fixed(2), 0, 0]
    assert weights[5]["src/d.rs"] == [_fixed(1), 0, 0] and _fixed(2) == math.isqrt(2 << 60)


@pytest.mark.parametrize("strategy", ["imports", "repomap"])
def test_a_worker_keeps_one_snapshot_and_its_derived_state_across_tasks(workspace, tmp_path, strategy):
    """A worker gets the chunk job (and the strategy in it) pickled anew with every task;
    the snapshot and what strategies derive from it must outlive those copies, or every
    task rebuilds the symbol index (and the repomap graph) from nothing."""
    run = Run(make_cfg(tmp_path, f"repo={workspace.path}", f"context={strategy}"))
    reset_memory()
    job = run.chunk_job()
    first = job._snapshot()
    first.advance({})
    first.derived["kept"] = True
    again = pickle.loads(pickle.dumps(job))
    assert again.context is not job.context
    assert again._snapshot() is first and again._snapshot().derived["kept"]
    other = pickle.loads(pickle.dumps(Run(make_cfg(tmp_path, f"repo={workspace.path}", f"context={strategy}",
                                                   "context.max_item_chars=500")).chunk_job()))
    assert other._snapshot() is not first  # other options, other summaries: another snapshot


def test_budget_is_counted_with_the_runs_tokenizer_when_it_loads_before_building(workspace, tmp_path):
    pytest.importorskip("transformers")
    from plugins.tokenizers import (
        BpeTokenizer,
        BpeTokenizerConfig,
        HfTokenizer,
        HfTokenizerConfig,
    )

    corpus = [text for text in WORKSPACE.values()] * 4
    bpe = BpeTokenizer(BpeTokenizerConfig(vocab_size=300))
    bpe.prepare(["<|endoftext|>"], lambda: iter(corpus), tmp_path / "tok-cache")
    run_dir = run_pipeline(tmp_path, f"repo={workspace.path}", "context=imports", "context.max_tokens=60",
                           "tokenizer=hf", f"tokenizer.name_or_path={bpe.path}", "dedup.near=false")
    assert manifest(run_dir)["context"]["counted_with"].startswith("tokenizer:hf:")
    count = HfTokenizer(HfTokenizerConfig(name_or_path=str(bpe.path))).token_counter()
    rows = read_chunks(run_dir)
    assert any(row["context"] for row in rows)
    for row in rows:  # every item whole, the sum within the budget in the tokenizer's own tokens
        assert sum(count(f"{c['path']}\n{c['text']}") for c in row["context"]) <= 60


LEGACY = {
    "Cargo.toml": '[package]\nname = "legacy"\nversion = "0.1.0"\n',  # no `edition`: 2015
    "src/lib.rs": "mod fragment;\npub mod de;\n",
    "src/fragment.rs": "pub enum Fragment {\n    Expr,\n    Block,\n}\n",
    "src/de/mod.rs": "mod fragment;\nuse fragment::Fragment;\n\npub fn body(f: Fragment) -> u8 {\n    1\n}\n",
    "src/de/fragment.rs": "pub struct Fragment;\n",
}


def test_use_paths_follow_the_crates_edition_through_history(scripted_repo, tmp_path):
    """In a 2015 crate `use fragment::Fragment` in `de` names the crate root's `fragment`;
    once the manifest says 2018, the same line names `de::fragment` (the index built on the
    first commit must not keep what it resolved then)."""
    first = scripted_repo.commit("a 2015 crate", LEGACY)
    second = scripted_repo.commit("edition 2018", {
        "Cargo.toml": LEGACY["Cargo.toml"] + 'edition = "2018"\n',
        "src/de/mod.rs": LEGACY["src/de/mod.rs"].replace("    1\n", "    2\n"),
    })
    rows = read_chunks(run_pipeline(tmp_path, f"repo={scripted_repo.path}", "context=imports",
                                   "stages=[mine,chunk]"))
    old, new = ([c["qualname"] for c in _context(rows, "legacy::de::body", commit)] for commit in (first, second))
    assert "legacy::fragment::Fragment" in old and "legacy::de::fragment::Fragment" not in old
    assert "legacy::de::fragment::Fragment" in new and "legacy::fragment::Fragment" not in new


@pytest.mark.parametrize("strategy", ["imports", "repomap"])
def test_context_names_definitions_as_their_commit_names_them(scripted_repo, tmp_path, strategy):
    """A package renamed in Cargo.toml renames the definitions of its files, blobs unchanged:
    a worker that saw them under the old name must not show that name at a later commit."""
    first = scripted_repo.commit("alpha", {
        "Cargo.toml": '[package]\nname = "alpha"\nversion = "0.1.0"\n',
        "src/lib.rs": "pub mod shapes;\npub mod make;\n",
        "src/shapes.rs": "pub struct Square { pub side: f64 }\n",
        "src/make.rs": "use crate::shapes::Square;\npub fn unit() -> Square { Square { side: 1.0 } }\n"})
    scripted_repo.commit("renamed to beta", {
        "Cargo.toml": '[package]\nname = "beta"\nversion = "0.1.0"\n',
        "src/make.rs": "use crate::shapes::Square;\npub fn twice() -> Square { Square { side: 2.0 } }\n"})
    run_dir = run_pipeline(tmp_path, f"repo={scripted_repo.path}", f"context={strategy}", "stages=[mine,chunk]",
                           "executor.workers=1")
    rows = read_chunks(run_dir)
    assert [c["qualname"] for c in _context(rows, "alpha::make::unit", first)
            if c["kind"] == "struct"] == ["alpha::shapes::Square"]
    assert [c["qualname"] for c in _context(rows, "beta::make::twice") if c["kind"] == "struct"] == ["beta::shapes::Square"]


@pytest.mark.parametrize("strategy", ["imports", "repomap"])
def test_python_context_follows_source_roots_that_rename_unchanged_files(scripted_repo, tmp_path, strategy):
    """A pyproject.toml that declares a source root renames modules whose blobs did not
    change: the context at that commit names them as the unit is named."""
    scripted_repo.commit("flat", {
        "pyproject.toml": '[project]\nname = "pkg"\n',
        "python/pkg/__init__.py": "",
        "python/pkg/shapes.py": "class Square:\n    side = 1.0\n",
        "python/pkg/make.py": "from pkg.shapes import Square\n\ndef unit():\n    return Square()\n"})
    scripted_repo.commit("src layout", {
        "pyproject.toml": '[project]\nname = "pkg"\n[tool.setuptools]\npackage-dir = {"" = "python"}\n',
        "python/pkg/make.py": "from pkg.shapes import Square\n\ndef twice():\n    return Square()\n"})
    run_dir = run_pipeline(tmp_path, f"repo={scripted_repo.path}", f"context={strategy}", "stages=[mine,chunk]",
                           "executor.workers=1", "language=python")
    twice = [r for r in read_chunks(run_dir) if r["qualname"].endswith("twice")][-1]
    squares = [c["qualname"] for c in twice["context"] if c["qualname"].endswith("Square")]
    assert twice["qualname"] == "pkg.make::twice" and squares == ["pkg.shapes::Square"]
