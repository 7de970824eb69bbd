"""Mining commits from real, scripted git repositories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from core.errors import CommitforgeError
from core.gitio import BlobReader, Repository
from core.stage_cache import STAGES_FILE
from core.stats import Counter
from plugins.sources import GitSource, GitSourceConfig

from ..conftest import ScriptedRepo, git_env

EXT = {".rs": "rust"}


def mine(path: Path, **cfg) -> tuple[list, Counter]:
    stats = Counter()
    return list(GitSource(GitSourceConfig(**cfg)).commits(Repository(path), EXT, stats)), stats


@pytest.fixture
def history(scripted_repo: ScriptedRepo) -> ScriptedRepo:
    r = scripted_repo
    r.commit("add lib", {"src/lib.rs": "pub fn a() {}\n", "README.md": "hi\n", "src/util.rs": "pub fn u() -> u8 { 1 }\n" * 20})
    r.commit("edit lib\n\nwith a body", {"src/lib.rs": "pub fn a() -> u8 { 2 }\n"})
    r.commit("rename util", renames={"src/util.rs": "src/helpers.rs"})
    r.git("checkout", "-q", "-b", "side")
    r.commit("side work", {"src/side.rs": "fn s() {}\n"})
    r.git("checkout", "-q", "main")
    r.commit("main work", {"src/main_only.rs": "fn m() {}\n"})
    r.merge("side", "merge side")
    r.commit("drop lib", {"src/lib.rs": None})
    return r


def test_commits_oldest_first_with_fields_and_changes(history):
    commits, stats = mine(history.path)
    subjects = [c.subject for c in commits]
    assert subjects == ["add lib", "edit lib", "rename util", "main work", "merge side", "drop lib"]
    first, edit, rename, _, merge, drop = commits
    assert first.parents == [] and edit.parents == [first.commit]
    assert edit.message == "edit lib\n\nwith a body"
    assert edit.committer_time == "2024-01-01T12:00:00+00:00" and edit.committer_epoch == 1704110400
    assert sorted((f.change, f.path) for f in first.files) == [("A", "src/lib.rs"), ("A", "src/util.rs")]
    (m,) = edit.files
    assert (m.change, m.old_path, m.new_path, m.lang) == ("M", "src/lib.rs", "src/lib.rs", "rust")
    assert m.old_blob == first.files[0].new_blob and m.new_blob != m.old_blob
    (r,) = rename.files
    assert (r.change, r.old_path, r.new_path, r.similarity) == ("R", "src/util.rs", "src/helpers.rs", 100)
    # first-parent: the merge is one change against main, carrying the side branch's file
    assert [(f.change, f.path) for f in merge.files] == [("A", "src/side.rs")]
    assert len(merge.parents) == 2
    assert [(f.change, f.old_path, f.new_blob) for f in drop.files] == [("D", "src/lib.rs", None)]
    assert stats.counts["files_other_language"] == 1  # README.md


def test_merge_policy_all_visits_branch_commits_and_empties_merges(history):
    commits, _ = mine(history.path, merges="all")
    subjects = [c.subject for c in commits]
    assert "side work" in subjects and "merge side" not in subjects  # the merge has no own changes
    assert subjects.index("rename util") < subjects.index("side work")


def test_filters_globs_max_commits_since(history):
    commits, stats = mine(history.path, exclude=["src/side.rs", "src/main_only.rs"])
    assert all(f.path not in ("src/side.rs", "src/main_only.rs") for c in commits for f in c.files)
    assert stats.counts["files_excluded_by_glob"] == 2
    newest, _ = mine(history.path, max_commits=2)
    assert [c.subject for c in newest] == ["merge side", "drop lib"]
    only, _ = mine(history.path, include=["src/helpers.rs"])
    assert [c.subject for c in only] == ["rename util"]  # matched by its new path
    late, _ = mine(history.path, since="2024-01-01T14:30:00Z")
    assert [c.subject for c in late][0] == "main work"
    with pytest.raises(CommitforgeError, match="source.since='garbage' is not a date git understands"):
        mine(history.path, since="garbage")


def test_submodules_and_symlinks_are_skipped_and_counted(scripted_repo):
    r = scripted_repo
    r.commit("base", {"src/a.rs": "fn a() {}\n"})
    os.symlink("a.rs", r.path / "src/link.rs")
    r.git("add", "src/link.rs")
    sub = r.git("rev-parse", "HEAD")
    r.git("update-index", "--add", "--cacheinfo", f"160000,{sub},vendor/dep.rs")
    r.commit("link and submodule")
    commits, stats = mine(r.path)
    assert [c.subject for c in commits] == ["base"]
    assert stats.skips == {"symlink": 1, "submodule": 1}


def test_revision_range_and_bad_revisions(history):
    commits, _ = mine(history.path, rev="HEAD~2..HEAD")
    assert [c.subject for c in commits] == ["merge side", "drop lib"]
    with pytest.raises(CommitforgeError, match="unknown revision 'nope'"):
        mine(history.path, rev="nope")
    with pytest.raises(CommitforgeError, match="looks like an option"):
        mine(history.path, rev="--all")


def test_not_a_repository_and_empty_repository(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(CommitforgeError, match="is not a git repository"):
        Repository(tmp_path / "plain")
    with pytest.raises(CommitforgeError, match="does not exist"):
        Repository(tmp_path / "missing")
    empty = ScriptedRepo(tmp_path / "empty")
    with pytest.raises(CommitforgeError, match="has no commits yet"):
        mine(empty.path)


def test_shallow_clone_boundary_commit_is_skipped(history, tmp_path):
    clone = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "2", f"file://{history.path}", str(clone)],
                   env=git_env(tmp_path), check=True)
    commits, stats = mine(clone)
    assert stats.skips["shallow_boundary_commit"] == 1
    assert [c.subject for c in commits] == ["drop lib"]


def test_blob_reader_reads_and_reports_missing(history):
    commits, _ = mine(history.path)
    repo = Repository(history.path)
    with BlobReader(repo.git_dir) as reader:
        blob = commits[1].files[0].new_blob
        assert reader.read(blob) == b"pub fn a() -> u8 { 2 }\n"
        assert reader.read("0" * 39 + "1") is None
        assert reader.read(blob) == b"pub fn a() -> u8 { 2 }\n"  # the process is still usable


def test_blob_reader_reads_many_in_order_and_stays_in_step_when_left_early(scripted_repo):
    r = scripted_repo
    r.commit("many", {f"src/m{i}.rs": f"pub fn m{i}() -> u32 {{ {i} }}\n" * (i + 1) for i in range(150)})
    commits, _ = mine(r.path)
    blobs = {fc.path: fc.new_blob for fc in commits[0].files}
    order = [blobs[f"src/m{i}.rs"] for i in range(150)]
    missing = "0" * 39 + "1"
    with BlobReader(Repository(r.path).git_dir) as reader:
        # more blobs than requests in flight, a missing one among them
        got = list(reader.read_many([*order[:70], missing, *order[70:]], ahead=16))
        assert got[70] is None
        assert [g.decode() for g in got[:70] + got[71:]] == [f"pub fn m{i}() -> u32 {{ {i} }}\n" * (i + 1) for i in range(150)]
        many = reader.read_many(order, ahead=16)
        assert next(many) == b"pub fn m0() -> u32 { 0 }\n"
        many.close()  # left with answers still due: they are read, not taken for the next blob's
        assert reader.read(order[5]) == b"pub fn m5() -> u32 { 5 }\n" * 6


def test_repository_code_never_runs(scripted_repo, tmp_path):
    """fsmonitor, hooks and filter drivers configured in the mined repository stay inert."""
    r = scripted_repo
    canary = tmp_path / "canary"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {canary}\ncat\n")
    script.chmod(0o755)
    r.commit("base", {"src/a.rs": "fn a() {}\n", ".gitattributes": "*.rs filter=evil diff=evil\n"})
    for key, value in [("core.fsmonitor", str(script)), ("filter.evil.smudge", str(script)),
                       ("filter.evil.clean", str(script)), ("diff.evil.textconv", str(script)),
                       ("core.hooksPath", str(tmp_path))]:
        r.git("config", key, value)
    for hook in ("post-checkout", "pre-commit", "post-index-change"):
        (tmp_path / hook).write_text(f"#!/bin/sh\ntouch {canary}\n")
        (tmp_path / hook).chmod(0o755)
    commits, _ = mine(r.path)
    repo = Repository(r.path)
    with BlobReader(repo.git_dir) as reader:
        assert reader.read(commits[0].files[0].new_blob) == b"fn a() {}\n"
    assert not canary.exists()


def test_renaming_a_file_out_of_or_into_the_language_deletes_or_adds_it(scripted_repo):
    r = scripted_repo
    r.commit("base", {"src/c.rs": "fn c() {}\n" * 30, "notes.txt": "fn n() {}\n" * 30})
    r.commit("to text", renames={"src/c.rs": "src/c.txt"})
    r.commit("to rust", renames={"notes.txt": "src/notes.rs"})
    commits, _ = mine(r.path)
    _, out, into = commits
    assert [(f.change, f.old_path, f.new_path, f.lang) for f in out.files] == [("D", "src/c.rs", None, "rust")]
    assert [(f.change, f.old_path, f.new_path) for f in into.files] == [("A", None, "src/notes.rs")]


def test_commit_record_to_dict_is_dataclasses_asdict():
    import dataclasses

    from core.records import CommitRecord, FileChange

    rec = CommitRecord("c" * 40, ["p" * 40, "q" * 40], "2024-01-01T00:00:00+00:00", 1, "2024-01-01T00:00:00+00:00", 2,
                       "subject", "message", [FileChange("R", "a.rs", "b.rs", "1" * 40, "2" * 40, 90, "rust", "100644",
                                                         "100644"), FileChange("A", None, "c.rs", None, "3" * 40)])
    d = rec.to_dict()
    assert d == dataclasses.asdict(rec) and list(d) == list(dataclasses.asdict(rec))
    assert [list(f) for f in d["files"]] == [list(f) for f in dataclasses.asdict(rec)["files"]]
    assert d["parents"] is not rec.parents and CommitRecord.from_dict(d) == rec


@pytest.mark.parametrize("merges", ["first_parent", "all"])
def test_reading_chosen_commits_gives_the_records_of_the_walk(history, merges):
    source, repo = GitSource(GitSourceConfig(merges=merges)), Repository(history.path)
    walked = [(c, r.to_dict() if r else None, s.to_dict()) for c, r, s in source.mined(repo, EXT)]
    ids = source.commit_ids(repo)
    assert [c for c, _, _ in walked] == ids
    some = ids[::2][::-1]  # any subset, in the order asked
    assert [(c, r.to_dict() if r else None, s.to_dict()) for c, r, s in source.mined(repo, EXT, only=some)] \
        == [w for c in some for w in walked if w[0] == c]


def _mine_stage(history, tmp_path, name, *overrides):
    from ..conftest import manifest, run_pipeline

    run = run_pipeline(tmp_path / name, f"repo={history.path}", "stages=[mine]", f"cache_dir={tmp_path / 'cache'}",
                       *overrides)
    return (run / "commits.jsonl").read_bytes(), manifest(run)["stages"]["mine"]


@pytest.mark.parametrize("merges", ["first_parent", "all"])
def test_a_run_after_a_new_commit_reads_only_that_commits_record_from_git(history, tmp_path, monkeypatch, merges):
    import core.gitio
    import plugins.sources

    history.commit("secret in the message\n\nreach me at jane.doe@acme-corp.io", {"src/new.rs": "fn n() {}\n"})
    _mine_stage(history, tmp_path, "a", f"source.merges={merges}")
    history.commit("one more", {"src/lib2.rs": "fn l() {}\n", "notes.txt": "x\n"})
    asked: list[list[str] | None] = []
    iter_log = core.gitio.iter_log
    monkeypatch.setattr(plugins.sources, "iter_log",
                        lambda repo, args, ids=None: asked.append(ids) or iter_log(repo, args, ids))
    lines, stage = _mine_stage(history, tmp_path, "b", f"source.merges={merges}")
    assert asked == [[history.git("rev-parse", "HEAD").strip()]]
    # what a run without the cache mines, byte for byte, counts included
    monkeypatch.setattr(plugins.sources, "iter_log", iter_log)
    fresh, fresh_stage = _mine_stage(history, tmp_path, "c", f"source.merges={merges}", "reuse=false")
    assert lines == fresh and stage["counts"] == fresh_stage["counts"] and stage["skips"] == fresh_stage["skips"]
    assert b"jane.doe@acme-corp.io" not in lines and stage["counts"]["redacted_email"] == 1


def test_other_record_settings_mine_again(history, tmp_path, monkeypatch):
    import core.gitio
    import plugins.sources

    first, _ = _mine_stage(history, tmp_path, "a")
    asked: list[list[str] | None] = []
    iter_log = core.gitio.iter_log
    monkeypatch.setattr(plugins.sources, "iter_log",
                        lambda repo, args, ids=None: asked.append(ids) or iter_log(repo, args, ids))
    # the range only chooses commits: all are in the cache
    fewer, _ = _mine_stage(history, tmp_path, "b", "source.max_commits=2")
    assert asked == [] and fewer.splitlines() == first.splitlines()[-2:]
    # a setting that changes a record: git reads every commit's record again
    shorter, _ = _mine_stage(history, tmp_path, "c", "source.max_message_chars=4")
    assert asked == [GitSource(GitSourceConfig()).commit_ids(Repository(history.path))] and shorter != first


def test_a_shallow_clones_boundary_commit_is_never_taken_from_the_cache(history, tmp_path):
    clone = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "2", f"file://{history.path}", str(clone)],
                   env=git_env(tmp_path), check=True)
    shallow = ScriptedRepo.__new__(ScriptedRepo)
    shallow.path = clone
    _, stage = _mine_stage(shallow, tmp_path, "a")
    assert stage["skips"] == {"shallow_boundary_commit": 1}
    subprocess.run(["git", "-C", str(clone), "fetch", "-q", "--unshallow"], env=git_env(tmp_path), check=True)
    lines, stage = _mine_stage(shallow, tmp_path, "b")
    full, full_stage = _mine_stage(history, tmp_path, "c", "reuse=false")
    assert stage["skips"] == {} and lines == full and stage["counts"] == full_stage["counts"]


def test_what_git_makes_of_a_commit_is_part_of_its_key(history, tmp_path):
    first, _ = _mine_stage(history, tmp_path, "a")
    # a replace ref gives the last commit another message: what git reads of it changed
    head = history.git("rev-parse", "HEAD").strip()
    tree, parent = history.git("rev-parse", "HEAD^{tree}").strip(), history.git("rev-parse", "HEAD~1").strip()
    other = history.git("commit-tree", tree, "-p", parent, "-m", "another message").strip()
    history.git("replace", head, other)
    replaced, _ = _mine_stage(history, tmp_path, "b")
    fresh, _ = _mine_stage(history, tmp_path, "c", "reuse=false")
    assert replaced == fresh != first and b"another message" in replaced


def test_a_damaged_stored_line_is_mined_again(history, tmp_path):
    import sqlite3

    first, stage = _mine_stage(history, tmp_path, "a")
    with sqlite3.connect(tmp_path / "cache" / STAGES_FILE) as conn:
        conn.execute("UPDATE mined SET line = ? WHERE rowid = (SELECT min(rowid) FROM mined WHERE line IS NOT NULL)",
                      (b'{"commit": "trunc',))
    again, again_stage = _mine_stage(history, tmp_path, "b")
    assert again == first and again_stage["counts"] == stage["counts"]
