"""report.html: headline figures, charts, determinism, self-containment, escaping, streaming."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from core.pipeline import Run
from core.report import (
    REPORT_FILE,
    fmt,
    render_report,
    scan_chunks,
    scan_lines,
    scan_rows,
    summary_row,
    write_report,
)

from ..conftest import ScriptedRepo, chunk_bytes, make_cfg

HOSTILE_SUBJECT = '</td><script>alert("subject")</script> & co'
HOSTILE_DIR = "repo<b onmouseover=alert(1)>"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """A full run (mine, chunk, build) on the demo repository, with same-file context."""
    tmp = tmp_path_factory.mktemp("demo")
    return Run(make_cfg(tmp, "context=same_file")).run()


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Path:
    """A run stopped after chunking, on a repository whose path and subjects hold markup."""
    tmp = tmp_path_factory.mktemp("hostile")
    repo = ScriptedRepo(tmp / HOSTILE_DIR)
    repo.commit("add lib", {"src/lib.rs": "pub fn a() -> u32 { 1 }\n"})
    repo.commit(HOSTILE_SUBJECT, {"src/lib.rs": "pub fn a() -> u32 { 2 }\npub fn b() {}\n"})
    return Run(make_cfg(tmp, f"repo='{repo.path}'", "stages=[mine,chunk]")).run()  # quoted: <, > and spaces


def _visible(html: str) -> str:
    """The page's text outside SVG, without tags (to look for figures as a reader sees them)."""
    return re.sub(r"<[^>]+>", " ", re.sub(r"<svg.*?</svg>", " ", html, flags=re.DOTALL))


def test_report_is_written_and_deterministic(demo_run):
    path = write_report(demo_run)
    assert path == demo_run / REPORT_FILE and path.is_file()
    first = path.read_bytes()
    assert write_report(demo_run).read_bytes() == first  # same run directory, same bytes
    assert render_report(demo_run).encode() == first
    text = first.decode()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert text.count("<svg") >= 5  # length histograms per split, context, time, skips


def test_report_shows_the_headline_figures(demo_run):
    text = write_report(demo_run).read_text()
    visible = _visible(text)
    stats = json.loads((demo_run / "stats.json").read_text())
    manifest = json.loads((demo_run / "MANIFEST.json").read_text())
    row = summary_row(demo_run)
    splits = stats["splits"]
    assert row["examples"] == sum(s["examples"] for s in splits.values()) > 0
    for name in ("train", "val", "test"):
        assert row[f"examples_{name}"] == splits[name]["examples"]
        assert f"{name} {fmt(splits[name]['examples'])}" in visible
        assert f"Token length per example — {name}" in visible
    assert row["tokens"] == sum(s["tokens"] for s in splits.values())
    assert fmt(row["tokens"]) in visible
    assert row["trained_token_share"] == round(sum(s["target_tokens"] for s in splits.values()) / row["tokens"], 4)
    assert fmt(row["trained_token_share"], "share") in visible
    assert row["commits"] == manifest["commit_range"]["commits"] and row["unit_changes"] == manifest["stages"]["chunk"]["counts"]["unit_changes"]
    skips = manifest["stages"]["build"]["skips"]
    assert row["dedup_removed"] == skips.get("exact_duplicate", 0) + skips.get("near_duplicate", 0)
    assert row["leakage_removed"] == skips.get("leak_exact", 0) + skips.get("leak_near", 0)
    assert row["skips"] == sum(sum(s["skips"].values()) for s in manifest["stages"].values())
    for label in ("Commits", "Unit changes", "Examples", "Tokens", "Trained-token share", "Truncated examples",
                  "Dedup removals", "Leakage removals", "Skips", "Wall time"):
        assert f"<td>{label}</td>" in text
    for stage in ("mine", "chunk", "build"):
        seconds = manifest["stages"][stage]["seconds"]
        assert row[f"seconds_{stage}"] == seconds and f"{stage} {fmt(seconds, 's')}" in visible
    assert row["context"] == "same_file" and row["context_items"] and row["context_items"] > 0
    assert "Context items per unit change (context=same_file)" in visible
    assert "Skips by reason" in visible and "build: near_duplicate" in text
    assert "Unit changes and examples per commit over time" in visible


def test_report_is_self_contained(demo_run):
    text = write_report(demo_run).read_text()
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<(script|link|img|iframe|object|embed)\b", text, re.IGNORECASE)
    assert not re.search(r"\b(src|href)\s*=", text, re.IGNORECASE)
    assert "@import" not in text and "url(" not in text


def test_report_escapes_data(hostile_run):
    text = write_report(hostile_run).read_text()
    assert "<script" not in text and "<b onmouseover" not in text
    assert "&lt;/td&gt;&lt;script&gt;alert(&quot;subject&quot;)&lt;/script&gt; &amp; co" in text  # the subject
    assert "repo&lt;b onmouseover=alert(1)&gt;" in text  # the repository's name and path


def test_report_of_a_partial_run(hostile_run):
    text = write_report(hostile_run).read_text()
    assert "the build stage did not run" in text
    assert "no context" in text  # no context strategy configured
    row = summary_row(hostile_run)
    assert row["examples"] is None and row["tokens"] is None and row["unit_changes"] == 3
    assert row["stages_missing"] == "" and row["commits"] == 2


def test_report_without_manifest_or_chunks(tmp_path):
    # an empty directory (a job that crashed early): a page saying so, not an exception
    text = write_report(tmp_path).read_text()
    assert "no readable MANIFEST.json" in text
    assert summary_row(tmp_path)["commits"] is None


def test_report_reads_context_recall_figures(demo_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    manifest = json.loads((run / "MANIFEST.json").read_text())
    manifest["context"] = {"strategy": "same_file", "refs": 10, "refs_found": 4, "recall": 0.4,
                           "recall_histogram": [3, 0, 0, 0, 1, 0, 0, 0, 0, 2]}
    (run / "MANIFEST.json").write_text(json.dumps(manifest))
    assert summary_row(run)["context_recall"] == 0.4
    text = write_report(run).read_text()
    assert "Context recall per unit change" in text and "run recall 0.4000" in text
    # without the block, the flat chunk-stage counters give the same figure
    del manifest["context"]
    manifest["stages"]["chunk"]["counts"].update(context_refs=10, context_refs_found=4, context_recall_hist_9=2)
    (run / "MANIFEST.json").write_text(json.dumps(manifest))
    assert summary_row(run)["context_recall"] == 0.4


def test_scan_chunks_reads_only_what_it_needs_but_the_same_as_json(tmp_path):
    rows = [
        {"id": "1", "commit": "aa", "time": "2024-01-01T10:00:00+00:00", "new_code": 'let s = "\\"context\\": [";',
         "context": [{"path": "a.rs", "qualname": "A", "kind": "struct", "text": "struct A;", "score": 2.0,
                      "why": "direct: A"}]},
        {"id": "2", "commit": "aa", "time": "2024-01-01T10:00:00+00:00", "context": [], "context_recall": 0.5},
        {"context": [{"path": "b.rs", "qualname": "B", "kind": "fn", "text": "fn b();", "score": 1, "why": "same_file"}] * 3,
         "id": "3", "time": "2024-01-02T10:00:00+00:00", "commit": "bb"},  # other key order
        {"id": "4", "commit": "cc", "time": "2024-01-03T10:00:00+00:00"},  # no context key at all
    ]
    path = tmp_path / "chunks.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, separators=(",", ":") if i % 2 == 0 else (", ", ": ")) + "\n" for i, r in enumerate(rows))
    scan = scan_chunks(path)
    assert scan.rows == 4 and scan.malformed == 0
    assert scan.per_commit == {"aa": 2, "bb": 1, "cc": 1}
    assert dict(scan.context_counts) == {1: 1, 0: 2, 3: 1}
    assert scan.context_items == 4 and scan.context_chars == len("struct A;") + 3 * len("fn b();")
    assert dict(scan.context_why) == {"direct": 1, "same_file": 3}
    assert scan.recall == [0.5]
    # the chunk stage's workers scan their rows before writing them: the same scan
    assert scan_rows(rows).to_plain() == scan.to_plain()


def test_workers_scan_of_rows_equals_the_scan_of_the_written_lines(demo_run):
    lines = chunk_bytes(demo_run).splitlines(keepends=True)
    rows = [json.loads(line) for line in lines]
    assert any(r.get("context") for r in rows) and len({r["commit"] for r in rows}) > 3
    assert scan_rows(rows).to_plain() == scan_lines(lines).to_plain()
