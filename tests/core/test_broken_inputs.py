"""Broken inputs inside a run: each is a counted skip or handled, never a crashed run."""

from __future__ import annotations

from core.chunking import ChunkJob

from ..conftest import manifest, read_chunks, run_pipeline


def test_deeply_nested_and_single_line_files_are_chunked(scripted_repo, tmp_path):
    depth = 20_000
    nested = "pub fn deep() -> u32 { " + "(" * depth + "1" + ")" * depth + " }\n"
    one_line = "pub fn wide() -> u32 { " + " + ".join(["1"] * 120_000) + " }\n"  # ~480 KB on one line
    scripted_repo.commit("odd files", {"src/deep.rs": nested, "src/wide.rs": one_line, "src/ok.rs": "fn ok() {}\n"})
    run_dir = run_pipeline(tmp_path, f"repo={scripted_repo.path}", "stages=[mine,chunk]", "context=imports")
    rows = read_chunks(run_dir)
    parts = {}
    for row in rows:
        parts.setdefault(row["qualname"], []).append(row)
    assert set(parts) == {"deep::deep", "wide::wide", "ok::ok"}
    wide = parts["wide::wide"]
    # a 120,000-deep expression has no syntax boundaries a cut may use below its top levels: its
    # parts stay over the limit, and are counted as such
    assert "".join(r["new_code"] for r in wide).count("1") >= 120_000
    counts = manifest(run_dir)["stages"]["chunk"]["counts"]
    assert counts["oversize_parts"] >= 1 and manifest(run_dir)["stages"]["chunk"]["skips"] == {}


def test_a_parser_failure_or_timeout_is_a_counted_skip(scripted_repo, tmp_path, monkeypatch):
    scripted_repo.commit("three", {"src/a.rs": "fn a() {}\n", "src/b.rs": "fn b() {}\n", "src/c.rs": "fn c() {}\n"})
    real = ChunkJob.parse_blobs

    def failing_parse_blobs(self, batch):
        lang = self.languages["rust"]
        parse = lang.parse

        def parse_or_fail(data, previous=None):
            if data.startswith(b"fn b"):
                raise RuntimeError("grammar crashed")  # what a faulty parser extension does
            return parse(data, previous)

        lang.parse = parse_or_fail
        try:
            return real(self, batch)
        finally:
            lang.parse = parse

    monkeypatch.setattr(ChunkJob, "parse_blobs", failing_parse_blobs)
    run_dir = run_pipeline(tmp_path, f"repo={scripted_repo.path}", "stages=[mine,chunk]")
    chunk = manifest(run_dir)["stages"]["chunk"]
    assert chunk["skips"] == {"file_parse_failed": 1} and chunk["counts"]["blobs_parse_failed"] == 1
    assert [r["qualname"] for r in read_chunks(run_dir)] == ["a::a", "c::c"]
    monkeypatch.undo()
    # a parse that runs past the language's time limit is ended by the guard and skipped
    slow = run_pipeline(tmp_path / "slow", f"repo={scripted_repo.path}", "stages=[mine,chunk]",
                        "language.parse_timeout_s=0", "reuse=false", f"cache_dir={tmp_path / 'fresh'}")
    chunk = manifest(slow)["stages"]["chunk"]
    assert chunk["skips"] == {"file_parse_timeout": 3}
    again = run_pipeline(tmp_path / "again", f"repo={scripted_repo.path}", "stages=[mine,chunk]", "reuse=false",
                         f"cache_dir={tmp_path / 'fresh'}")
    assert manifest(again)["stages"]["chunk"]["skips"] == {}  # a timeout is not cached as the blob's fate


def test_the_parse_deadline_guards_every_language(scripted_repo, tmp_path):
    scripted_repo.commit("py", {"tool/a.py": "def a():\n    return 1\n", "src/lib.rs": "fn r() {}\n"})
    run_dir = run_pipeline(tmp_path, f"repo={scripted_repo.path}", "stages=[mine,chunk]", "language=python",
                           "language.parse_timeout_s=0")
    assert manifest(run_dir)["stages"]["chunk"]["skips"] == {"file_parse_timeout": 1}


def test_utf16_files_an_unusable_output_directory_and_a_foreign_cache(scripted_repo, tmp_path):
    import marshal
    import sqlite3

    import pytest

    from core.blob_cache import CACHE_FORMAT
    from core.errors import CommitforgeError

    scripted_repo.commit("utf-16", {"src/wide.rs": "fn wide() {}\n".encode("utf-16"), "src/ok.rs": "fn ok() {}\n"})
    run_dir = run_pipeline(tmp_path, f"repo={scripted_repo.path}", "stages=[mine,chunk]")
    assert manifest(run_dir)["stages"]["chunk"]["skips"] == {"file_binary": 1}  # UTF-16 text is full of NULs

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(CommitforgeError, match=r"cannot create run directory .*a-file/run.*choose another out_dir=DIR"):
        run_pipeline(tmp_path, f"repo={scripted_repo.path}", f"out_dir={blocker / 'run'}")

    # a cache left by another version: older formats live in other files and are ignored; a
    # file under this version's name that is not a cache is refused with what to do
    cache = tmp_path / "foreign-cache"
    cache.mkdir()
    sqlite3.connect(cache / f"units-f{CACHE_FORMAT - 1}-m{marshal.version}.sqlite").execute("CREATE TABLE x (y)")
    fine = run_pipeline(tmp_path / "old", f"repo={scripted_repo.path}", f"cache_dir={cache}", "stages=[mine,chunk]")
    assert manifest(fine)["stages"]["chunk"]["counts"]["blobs_parsed"] == 1
    (cache / f"units-f{CACHE_FORMAT}-m{marshal.version}.sqlite").unlink()
    (cache / f"units-f{CACHE_FORMAT}-m{marshal.version}.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(CommitforgeError, match=r"the unit cache .* cannot be used .*delete it or choose another cache_dir"):
        run_pipeline(tmp_path / "bad", f"repo={scripted_repo.path}", f"cache_dir={cache}", "stages=[mine,chunk]",
                     "reuse=false")
