"""Context strategy same_file: definitions the unit names, from its own file, at its commit."""

from __future__ import annotations

from plugins.contexts import SameFileContext, SameFileContextConfig
from plugins.rust import RustLanguage

from ..conftest import ScriptedRepo, read_jsonl, run_pipeline

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
    parsed = RustLanguage().parse(SRC.encode())
    total = next(u for u in parsed.units if u.name == "total")
    span = (total.start_line, total.end_line)
    items = SameFileContext(SameFileContextConfig()).items(total.text, "m::Ledger::total", "src/m.rs", parsed, span)
    assert [i.qualname for i in items] == ["Entry", "LIMIT"]  # Entry is named twice; Ledger is not named
    assert items[0].text == "pub struct Entry { amount: i64 }" and items[0].why == "same_file"
    assert not any("total" in i.text for i in items)  # never the unit itself
    small = SameFileContext(SameFileContextConfig(max_chars=40)).items(total.text, "m::Ledger::total", "src/m.rs",
                                                                       parsed, span)
    assert sum(len(i.text) for i in small) <= 40 and small


def test_context_shows_the_definition_as_of_the_commit(scripted_repo: ScriptedRepo, tmp_path):
    r = scripted_repo
    r.commit("v1", {"src/lib.rs": SRC})
    r.commit("entries get a memo", {"src/lib.rs": SRC.replace("{ amount: i64 }", "{ amount: i64, memo: String }")
                                    .replace(".min(LIMIT)", ".min(LIMIT) + 0")})
    run_dir = run_pipeline(tmp_path, f"repo={r.path}", "context=same_file", "stages=[mine,chunk]")
    rows = read_jsonl(run_dir / "chunks.jsonl")
    total = [row for row in rows if row["qualname"] == "Ledger::total"]
    assert [row["change"] for row in total] == ["added", "modified"]
    first, second = (next(c["text"] for c in row["context"] if c["qualname"] == "Entry") for row in total)
    assert "memo" not in first and "memo: String" in second
