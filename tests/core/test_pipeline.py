"""End-to-end runs: outputs, manifest, cache reuse, determinism, bad input, the CLI."""

from __future__ import annotations

import contextlib
import hashlib
import json
import marshal
import math
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from core import pipeline
from core.chunk_shards import shard_paths
from core.errors import CommitforgeError
from core.pipeline import Run
from core.stage_cache import unpack

from ..conftest import (
    ScriptedRepo,
    chunk_bytes,
    make_cfg,
    manifest,
    read_chunks,
    read_jsonl,
    read_split,
    run_pipeline,
)

LIB_V1 = """/// Adds two numbers — «exactly».
pub fn add(a: u32, b: u32) -> u32 {
    a + b
}

pub struct Point { x: i32, y: i32 }

impl Point {
    pub fn norm(&self) -> i32 { self.x.abs() + self.y.abs() }
}
"""
LIB_V2 = LIB_V1.replace("a + b", "a.wrapping_add(b)").replace("pub struct Point { x: i32, y: i32 }",
                                                                 "pub struct Point { x: i32, y: i32, z: i32 }")


@pytest.fixture
def repo(scripted_repo: ScriptedRepo) -> ScriptedRepo:
    r = scripted_repo
    r.commit("add lib", {"crates/geo/src/lib.rs": LIB_V1, "crates/geo/Cargo.toml": "[package]\nname='geo'\n"})
    r.commit("widen point; wrapping add", {"crates/geo/src/lib.rs": LIB_V2})
    r.commit("odd files", {"crates/geo/src/blob.rs": b"fn a() {}\0\x01\x02", "crates/geo/src/latin1.rs": b"// caf\xe9\nfn b() {}\n",
                           "crates/geo/src/huge.rs": "// x\n" * 300_000})
    r.commit("broken", {"crates/geo/src/bad.rs": "fn ok() {}\nfn broken( {\n"})
    return r


def test_run_writes_unit_changes_and_manifest(repo, tmp_path):
    run_dir = run_pipeline(tmp_path, f"repo={repo.path}")
    rows = read_chunks(run_dir)
    commits = read_jsonl(run_dir / "commits.jsonl")
    assert [c["subject"] for c in commits] == ["add lib", "widen point; wrapping add", "odd files", "broken"]
    second = [(r["change"], r["kind"], r["qualname"]) for r in rows if r["subject"].startswith("widen")]
    assert second == [("modified", "fn", "geo::add"), ("modified", "struct", "geo::Point")]
    add = next(r for r in rows if r["qualname"] == "geo::add" and r["change"] == "modified")
    assert add["old_code"].endswith("a + b\n}") and "wrapping_add" in add["new_code"]
    assert add["old_code"].startswith("/// Adds two numbers — «exactly».")
    assert add["parent"] == commits[0]["commit"] and add["path"] == "crates/geo/src/lib.rs"
    assert add["new_lines"] == [1, 4] and add["part"] == add["parts"] == 1
    first = {(r["change"], r["qualname"]) for r in rows if r["subject"] == "add lib"}
    assert first == {("added", "geo::add"), ("added", "geo::Point"), ("added", "geo::Point::norm")}
    broken = [r for r in rows if r["subject"] == "broken"]
    assert {r["qualname"]: r["has_error"] for r in broken}["geo::bad::ok"] is False

    m = manifest(run_dir)
    chunk = m["stages"]["chunk"]
    assert chunk["skips"] == {"file_binary": 1, "file_not_utf8": 1, "file_too_large": 1}
    assert chunk["counts"]["files_with_syntax_errors"] == 1
    assert chunk["counts"]["unit_changes"] == len(rows)
    out = chunk["outputs"]["chunks/00000.jsonl"]
    assert list(chunk["outputs"]) == ["chunks/00000.jsonl"]  # a small output is one shard
    assert out["rows"] == len(rows)
    assert out["sha256"] == hashlib.sha256(chunk_bytes(run_dir)).hexdigest()
    assert m["repository"]["head"] == repo.git("rev-parse", "HEAD")
    assert m["commit_range"]["commits"] == 4
    assert m["versions"]["tree-sitter-rust"] and m["config"]["chunker"]["max_chars"] == 4000
    assert m["versions"]["git"] == repo.git("--version").removeprefix("git version ")


def test_the_manifest_records_no_git_version_when_git_fails_or_is_missing(tmp_path, monkeypatch):
    from core.manifest import environment_versions

    failing = tmp_path / "failing"
    failing.mkdir()
    (failing / "git").write_text("#!/bin/sh\necho 'git version 9.9'\nexit 3\n")
    (failing / "git").chmod(0o755)
    for path in (failing, tmp_path / "empty"):
        monkeypatch.setenv("PATH", str(path))
        assert environment_versions({})["git"] is None


def test_blobs_are_parsed_once_and_cached_across_runs(repo, tmp_path):
    first = manifest(run_pipeline(tmp_path, f"repo={repo.path}"))["stages"]["chunk"]["counts"]
    assert first["blobs_parsed"] == first["unique_blobs"] - 3  # binary, latin-1 and huge are not parsed
    second_dir = run_pipeline(tmp_path, f"repo={repo.path}", f"out_dir={tmp_path / 'run2'}", "reuse=false")
    second = manifest(second_dir)["stages"]["chunk"]["counts"]
    assert "blobs_parsed" not in second and second["blobs_cached"] == first["unique_blobs"] - 1
    assert chunk_bytes(tmp_path / "run") == chunk_bytes(second_dir)


@pytest.mark.parametrize("context", ["none", "imports", "repomap"])
def test_output_is_identical_for_any_worker_count(tmp_path, context, monkeypatch):
    import core.chunking

    monkeypatch.setattr(core.chunking, "COMMIT_BATCH", 3)
    monkeypatch.setattr(core.chunking, "CONTEXT_BATCH", 3)  # several batches: workers see different histories
    one = run_pipeline(tmp_path / "a", "executor.workers=1", f"context={context}", "reuse=false")
    two = run_pipeline(tmp_path / "b", "executor.workers=2", f"context={context}", "reuse=false")
    assert chunk_bytes(one) == chunk_bytes(two)
    assert manifest(one)["stages"]["chunk"]["counts"]["unit_changes"] > 100


def test_executor_workers_size_the_tokenizers_thread_pool_unless_the_user_did(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYON_NUM_THREADS", "unset")  # recorded, so that the end of the test restores it
    monkeypatch.delenv("RAYON_NUM_THREADS")
    monkeypatch.setattr(pipeline, "_POOL_SIZED", None)

    def pool_after(workers: str) -> str | None:
        Run(make_cfg(tmp_path, f"repo={repo.path}", f"executor.workers={workers}"))
        return os.environ.get("RAYON_NUM_THREADS")

    assert pool_after("null") is None  # one worker per core: the pool's own default
    assert pool_after("3") == "3"
    assert pool_after("1") == "1"  # the next job of a sweep in this process
    monkeypatch.setenv("RAYON_NUM_THREADS", "5")
    assert pool_after("2") == "5"


def _cache_db(cache: Path) -> sqlite3.Connection:
    return sqlite3.connect(next(cache.glob("stages-*.sqlite")))


def test_a_stage_cache_entry_damaged_on_disk_is_computed_again(tmp_path):
    """A stored commit whose packed rows lost a byte fails its checksum: it is not read
    as (other) rows, the commit is chunked again and the output is the same."""
    cache = tmp_path / "cache"
    overrides = (f"cache_dir={cache}", "stages=[mine,chunk]")
    ref = chunk_bytes(run_pipeline(tmp_path / "a", *overrides))
    with contextlib.closing(_cache_db(cache)) as db, db:
        (rowid, data), = db.execute("SELECT rowid, data FROM commits ORDER BY length(data) DESC LIMIT 1")
        # a byte of the commit's id where the frame holds it as a literal: without a checksum
        # the entry would still unpack, to rows naming another commit
        commit = json.loads(unpack(data).split(b"\n", 1)[0])["commit"].encode()
        at = data.index(commit) + 20
        db.execute("UPDATE commits SET data = ? WHERE rowid = ?",
                   (data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1:], rowid))
        db.execute("DELETE FROM kept_outputs")  # the rows are taken from the entries, not a kept copy
    again = run_pipeline(tmp_path / "b", *overrides)
    assert chunk_bytes(again) == ref
    assert manifest(again)["stages"]["chunk"]["counts"]["commits_computed"] == 1


def test_packed_rows_unpack_whole_or_not_at_all():
    """What ``unpack`` refuses (``RuntimeError``, read as a missing entry): a cut frame, bytes
    after it, and a header stating a size no LZ4 frame of its length holds, refused before
    anything is allocated (a damaged size passes the header's one-byte check 1 time in 256)."""
    import lz4.frame

    from core.stage_cache import pack

    rows = b"".join(b'{"id":"%d","new_code":"fn f%d() {}"}\n' % (i, i) for i in range(2000))
    data = pack(rows)
    assert unpack(data) == rows
    # the frame's header: magic (4), flags (2), content size (8), header checksum (1)
    assert lz4.frame.get_frame_info(data)["content_size"] == len(rows)
    forged = [data[:6] + (1 << 50).to_bytes(8, "little") + bytes([check]) + data[15:] for check in range(256)]
    passing = []
    for candidate in forged:
        try:
            lz4.frame.get_frame_info(candidate)
            passing.append(candidate)
        except RuntimeError:
            pass
    assert len(passing) == 1  # the one checksum byte that matches the forged size
    for damaged in (data[:-4], data + b"\0", passing[0]):
        with pytest.raises(RuntimeError):
            unpack(damaged)


@pytest.mark.parametrize(("context", "shard_bytes"), [("none", None), ("imports", None), ("imports", 64)])
def test_workers_hand_rows_back_through_spool_files(tmp_path, context, shard_bytes, monkeypatch):
    """Worker processes write their rows to spool files and send them compressed for the
    stage cache: the output's shards, the cache entries and the kept output's commit ends are what
    one in-process worker makes, also with cached commits between the spooled ones; no
    spool file is left."""
    import core.chunk_shards
    import core.chunking

    monkeypatch.setattr(core.chunking, "COMMIT_BATCH", 2)  # several tasks without context too
    if shard_bytes is not None:  # a worker's spool file copied into several shards, each finished by a thread
        monkeypatch.setattr(pipeline, "CHUNK_SHARD_BYTES", shard_bytes)
    copied: list[int] = []
    removes: list[tuple[str, bool]] = []
    copy_file = core.chunk_shards.ChunkShards.copy_file

    def counting(self, path, start, size, last=False):
        copied.append(size)
        removes.append((path, last))
        return copy_file(self, path, start, size, last)

    def each_file_removed_by_its_last_range() -> bool:
        last = dict(removes)
        return all(last.values()) and sum(remove for _, remove in removes) == len(last)

    monkeypatch.setattr(core.chunk_shards.ChunkShards, "copy_file", counting)
    overrides = (f"context={context}", "stages=[mine,chunk]")
    one = run_pipeline(tmp_path / "a", "executor.workers=1", *overrides)
    assert not copied  # one worker runs in this process: nothing is spooled
    two = run_pipeline(tmp_path / "b", "executor.workers=2", *overrides)
    rows = chunk_bytes(two)
    assert len(copied) >= 2 and sum(copied) == len(rows) and each_file_removed_by_its_last_range()
    assert rows == chunk_bytes(one)
    assert not (two / ".spool").exists()

    order = [json.loads(line)["commit"] for line in (two / "commits.jsonl").read_text().splitlines()]
    by_commit: dict[str, bytes] = dict.fromkeys(order, b"")
    for line in rows.splitlines(keepends=True):
        by_commit[json.loads(line)["commit"]] += line
    cache = tmp_path / "b" / "cache"
    with contextlib.closing(_cache_db(cache)) as db:
        entries = Counter(unpack(data) for (data,) in db.execute("SELECT data FROM commits"))
        (name, ends), = db.execute("SELECT name, ends FROM kept_outputs")
    assert entries == Counter(by_commit.values())  # each commit's rows, compressed by its worker
    kept = b"".join(p.read_bytes() for p in shard_paths(next(cache.glob(f"stages-*-outputs/{name}"))))
    starts = [0, *marshal.loads(ends)[:-1]]
    assert [kept[a:b] for a, b in zip(starts, marshal.loads(ends))] == [by_commit[c] for c in order]

    # every third commit forgotten, and the kept output: cached rows between spooled runs
    with contextlib.closing(_cache_db(cache)) as db, db:
        db.execute("DELETE FROM commits WHERE rowid % 3 = 0")
        db.execute("DELETE FROM kept_outputs")
    copied.clear()
    removes.clear()
    three = run_pipeline(tmp_path / "b", "executor.workers=2", *overrides, f"out_dir={tmp_path / 'c'}")
    counts = manifest(three)["stages"]["chunk"]["counts"]
    assert counts["commits_reused"] > 0 and counts["commits_computed"] > 0 and copied
    assert chunk_bytes(three) == rows and each_file_removed_by_its_last_range()


def test_a_spool_file_whose_last_commits_have_no_rows_is_copied_whole(tmp_path, monkeypatch):
    """A task's last commit without rows, after a cached commit, is a range of no bytes at
    the end of its spool file: the file is removed after that range, not before it."""
    import core.chunking

    monkeypatch.setattr(core.chunking, "COMMIT_BATCH", 3)
    mined = run_pipeline(tmp_path / "m", "stages=[mine]")
    order = [json.loads(line)["commit"] for line in (mined / "commits.jsonl").read_text().splitlines()]
    empty = {c for k, c in enumerate(order) if k % 3 == 2}  # the last commit of each task: no rows
    pair_commit = core.chunking.ChunkJob._pair_commit

    def some_empty(self, rec, *args):
        rows = list(pair_commit(self, rec, *args))
        return iter(()) if rec.commit in empty else iter(rows)

    monkeypatch.setattr(core.chunking.ChunkJob, "_pair_commit", some_empty)
    overrides = ("executor.workers=2", "context=none", "stages=[mine,chunk]")
    first = run_pipeline(tmp_path / "b", *overrides)
    with contextlib.closing(_cache_db(tmp_path / "b" / "cache")) as db, db:
        db.execute("DELETE FROM commits WHERE rowid % 3 != 2")  # each task's middle commit stays cached
        db.execute("DELETE FROM kept_outputs")
    again = run_pipeline(tmp_path / "b", *overrides, f"out_dir={tmp_path / 'c'}")
    counts = manifest(again)["stages"]["chunk"]["counts"]
    assert counts["commits_reused"] > 0 and counts["commits_computed"] > 0
    assert chunk_bytes(again) == chunk_bytes(first)


def test_a_killed_runs_spool_is_removed_when_the_next_run_starts(tmp_path):
    left = tmp_path / "run" / ".spool" / "rows-x.jsonl"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"{}\n")
    run_pipeline(tmp_path, "stages=[mine]")
    assert not left.parent.exists()


def test_a_failing_chunk_stage_stops_its_workers_and_leaves_no_spool(tmp_path, monkeypatch):
    """When the main process fails while workers still write, the tasks not started are
    cancelled and the running ones end before the error surfaces and the spool directory
    is removed: no task runs on into it."""
    import core.chunking
    import core.pipeline

    monkeypatch.setattr(core.chunking, "COMMIT_BATCH", 1)
    pair_commit = core.chunking.ChunkJob._pair_commit
    started = tmp_path / "started"

    def slow(self, *args):  # the forked workers run this: one line per commit started
        with open(started, "a") as fh:
            fh.write(f"{time.time()}\n")
        time.sleep(0.1)
        return pair_commit(self, *args)

    monkeypatch.setattr(core.chunking.ChunkJob, "_pair_commit", slow)
    calls = [0]
    from_plain = core.pipeline.ChunkScan.from_plain

    def failing(plain):
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("disk on fire")
        return from_plain(plain)

    monkeypatch.setattr(core.pipeline.ChunkScan, "from_plain", staticmethod(failing))
    removing, removed = core.pipeline._removing, []

    @contextlib.contextmanager
    def timed(directory):  # when the spool directory is removed
        with removing(directory):
            try:
                yield
            finally:
                removed.append(time.time())

    monkeypatch.setattr(core.pipeline, "_removing", timed)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_pipeline(tmp_path, "executor.workers=2", "stages=[mine,chunk]")
    failed = time.time()
    time.sleep(0.5)  # what an executor left running would start meanwhile
    starts = [float(t) for t in started.read_text().split()]
    commits = len(read_jsonl(tmp_path / "run" / "commits.jsonl"))
    assert 2 <= len(starts) < commits and max(starts) < failed
    assert removed and max(starts) + 0.1 < removed[0]  # every task started had ended (slept) first
    assert not (tmp_path / "run" / ".spool").exists()


def test_context_runs_give_each_worker_long_runs_of_commits():
    """A worker's snapshot follows every commit between two of its units of work: with a
    context strategy, as many runs as workers, as long as CONTEXT_BATCH allows."""
    from core.chunking import COMMIT_BATCH, CONTEXT_BATCH, commit_batch

    assert commit_batch(471, 2, follows_trees=False) == COMMIT_BATCH  # no snapshot: small units
    assert commit_batch(CONTEXT_BATCH, 2, follows_trees=True) == CONTEXT_BATCH // 2  # one run per worker
    assert commit_batch(10, 4, follows_trees=True) == COMMIT_BATCH  # never below COMMIT_BATCH
    for commits in (471, 5_000, 50_001):
        size = commit_batch(commits, 2, follows_trees=True)
        runs = math.ceil(commits / size)
        assert COMMIT_BATCH < size <= CONTEXT_BATCH and runs == max(2, math.ceil(commits / CONTEXT_BATCH))


def test_context_runs_hold_about_equal_work():
    """Runs are cut by work, not by commit count: a commit weighs more the more files it
    changes and the larger the tree it is paired at."""
    from core.chunking import CONTEXT_BATCH, context_runs

    flat = context_runs([3] * 100, [50] * 100, 2)
    assert flat == [50, 50]
    growing = context_runs([3] * 100, list(range(1, 101)), 2)  # later commits resolve in larger trees
    assert sum(growing) == 100 and len(growing) == 2 and growing[0] > 55
    busy_start = context_runs([40] * 10 + [1] * 90, [50] * 100, 2)  # the first commits change the most
    assert sum(busy_start) == 100 and busy_start[0] < 30
    many = context_runs([1] * (3 * CONTEXT_BATCH), [10] * (3 * CONTEXT_BATCH), 2)
    assert len(many) == 4 and all(n > 0 for n in many) and sum(many) == 3 * CONTEXT_BATCH  # a multiple of 2
    # one commit outweighs all others: it gets a run of its own, the other worker the rest
    assert context_runs([1] * 59 + [300], [500] * 60, 2) == [59, 1]
    assert context_runs([1] * 58 + [300, 1], [500] * 60, 2) == [58, 2]
    assert context_runs([2], [5], 2) == [1] and context_runs([], [], 2) == []


def test_demo_repository_history_is_mined_and_paired(tmp_path):
    run_dir = run_pipeline(tmp_path)
    rows = read_chunks(run_dir)
    kinds = {r["change"] for r in rows}
    assert kinds == {"added", "modified", "deleted", "renamed"}
    renamed = [r for r in rows if r["change"] == "renamed"]
    assert [(r["old_qualname"], r["qualname"]) for r in renamed] == [
        ("ledger_core::journal::normalise_memo", "ledger_core::journal::sanitize_memo")]
    commits = read_jsonl(run_dir / "commits.jsonl")
    rename = next(c for c in commits if c["subject"] == "store: rename memory module to in_memory")
    assert [(f["change"], f["old_path"], f["new_path"]) for f in rename["files"] if f["change"] == "R"] == [
        ("R", "crates/ledger-store/src/memory.rs", "crates/ledger-store/src/in_memory.rs")]
    # units of a renamed file pair with their old selves: no spurious added/deleted units
    assert not [r for r in rows if r["commit"] == rename["commit"] and r["change"] in ("added", "deleted")]
    split = [r for r in rows if r["qualname"] == "ledger::commands::run"]  # the binary, [[bin]] name = "ledger"
    assert split and all(r["parts"] > 1 and len(r["new_code"]) <= 4000 for r in split)


def test_stages_prefix_and_errors(repo, tmp_path):
    run_dir = run_pipeline(tmp_path, f"repo={repo.path}", "stages=[mine]")
    assert (run_dir / "commits.jsonl").exists() and not (run_dir / "chunks").exists()
    with pytest.raises(CommitforgeError, match="must be a prefix"):
        Run(make_cfg(tmp_path, f"repo={repo.path}", "stages=[chunk]"))
    with pytest.raises(CommitforgeError, match="unknown stage 'tokenise'"):
        Run(make_cfg(tmp_path, f"repo={repo.path}", "stages=[mine,tokenise]"))
    with pytest.raises(CommitforgeError, match=r"chunker\.max_char.*known keys: name, max_chars"):
        Run(make_cfg(tmp_path, "+chunker.max_char=10"))
    with pytest.raises(CommitforgeError, match="unknown chunker 'semantic'; available: ast, window"):
        Run(make_cfg(tmp_path, "chunker.name=semantic"))
    # keys outside the plugin groups that Hydra accepts with `+`
    with pytest.raises(CommitforgeError, match="unknown config key max_file_byte; did you mean max_file_bytes?"):
        Run(make_cfg(tmp_path, "+max_file_byte=5"))
    with pytest.raises(CommitforgeError, match="unknown config key dedup.treshold; did you mean dedup.threshold?"):
        Run(make_cfg(tmp_path, "+dedup.treshold=0.5"))
    # settings the build stage reads are checked before mining
    with pytest.raises(CommitforgeError, match=r"dedup.threshold=2.0 must lie in \(0, 1\]"):
        Run(make_cfg(tmp_path, "dedup.threshold=2"))
    with pytest.raises(CommitforgeError, match="dedup.num_perm=0 must be at least 2"):
        Run(make_cfg(tmp_path, "dedup.num_perm=0"))


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMMITFORGE_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          check=False)


def test_cli_runs_demo_and_prints_run_directory(tmp_path):
    proc = cli("stages=[mine]", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1].removeprefix("run directory: "))
    assert run_dir.is_relative_to(tmp_path / "runs") and (run_dir / "commits.jsonl").exists()


def test_cli_bad_input_is_one_line_and_non_zero(tmp_path):
    proc = cli(f"repo={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"commitforge: error: {str(tmp_path)!r} is not a git repository; "
                                                "pass repo=PATH of a directory with a .git (or a bare repository)"]
    typo = cli("chunker.max_char=5", cwd=tmp_path)
    assert typo.returncode != 0 and "max_char" in typo.stderr
    for args, line in ((["+experiment=ctx400"], "+experiment=ctx400: experiment has no option 'ctx400'; did you mean "
                        "experiment=ctx4000? choose one of baseline, ctx2000, ctx4000, ctx8000, fim, format_commitforge, "
                        "format_starcoder1, format_starcoder2"),
                       (["-m", "context=none,imprts"], "context=none,imprts: context has no option 'imprts'; did you "
                        "mean context=imports? choose one of imports, none, repomap, same_file")):
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"commitforge: error: {line}"]
    (tmp_path / "a-file").write_text("")
    for bad in (tmp_path / "a-file", tmp_path / "a-file" / "run"):
        proc = cli(f"out_dir={bad}", cwd=tmp_path)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [f"commitforge: error: out_dir={bad} cannot be used: "
                                                    f"{tmp_path / 'a-file'} is not a directory; "
                                                    "choose a directory you can write"]


def test_choices_in_commitforges_own_conf_skip_hydras_search_path():
    from core.cli import _known_here

    assert _known_here("experiment", ["ctx4000"]) and _known_here("context", ["none", "imports"])
    assert _known_here("repo", ["/some/where"]) and _known_here("progress", ["false"])  # plain settings
    assert not _known_here("experiment", ["ctx400"])  # a typo: Hydra lists the options
    assert not _known_here("context", ["imports", "imprts"])
    assert not _known_here("hydra/launcher", ["joblib"])  # another search path's group



def test_hydras_look_ahead_composition_is_skipped_only_where_no_config_can_set_the_mode(tmp_path, monkeypatch):
    import shutil

    from hydra import initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    from core.cli import _mode_may_be_configured
    from core.config import conf_dir, register_schema

    register_schema()

    def may(directory: Path, *overrides: str) -> bool:
        with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
            return _mode_may_be_configured(GlobalHydra.instance().config_loader(), list(overrides))

    assert not may(conf_dir())
    assert not may(conf_dir(), "+experiment=ctx4000", "builder.max_tokens=256")
    assert may(conf_dir(), "hydra.mode=MULTIRUN") and may(conf_dir(), "hydra.searchpath=[file:///x]")
    mine = tmp_path / "conf"
    shutil.copytree(conf_dir(), mine)
    (mine / "experiment" / "sweep.yaml").write_text("# @package _global_\nhydra:\n  mode: MULTIRUN\n")
    assert may(mine)
    (mine / "experiment" / "sweep.yaml").write_text("# @package _global_\nhydra:\n  searchpath: [pkg://x]\n")
    assert may(mine)
    (mine / "experiment" / "sweep.yaml").unlink()
    assert not may(mine)
    # a structured config that fills the root package (or hydra's) can set it; a launcher's cannot
    store = ConfigStore.instance()
    store.store(name="quiet_launcher", group="hydra/launcher", node={"mode": "x"}, provider="a_plugin")
    try:
        assert not may(mine)
        store.store(name="sweeping", node={"hydra": {"mode": "MULTIRUN"}}, provider="a_plugin")
        assert may(mine)
    finally:
        store.repo["hydra"]["launcher"].pop("quiet_launcher.yaml")
        store.repo.pop("sweeping.yaml")


def test_a_config_that_asks_for_a_multirun_still_gets_one(tmp_path):
    extra = tmp_path / "extra" / "experiment"
    extra.mkdir(parents=True)
    (extra / "two_jobs.yaml").write_text("# @package _global_\nhydra:\n  mode: MULTIRUN\n  sweeper:\n"
                                         "    params:\n      progress: true,false\n")
    proc = cli("stages=[mine]", f"hydra.searchpath=[file://{tmp_path / 'extra'}]", "+experiment=two_jobs",
               f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["0", "1"]
    assert all((tmp_path / "sweep" / job / "commits.jsonl").exists() for job in ("0", "1"))

def _long_history(path: Path, commits: int = 300) -> Path:
    """A repository whose mining and chunking take seconds (written by one git fast-import)."""
    path.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    stream = []
    for c in range(commits):
        body = "".join(f"pub fn f{j}(x: u32) -> u32 {{\n    x * {c + j} + {j}\n}}\n\n" for j in range(60))
        data = body.encode()
        stream.append(f"commit refs/heads/main\ncommitter A <a@example.com> {1_600_000_000 + c * 60} +0000\n"
                      f"data 6\nstep{c % 10}\nM 100644 inline src/m{c % 7}.rs\ndata {len(data)}\n")
        stream.append(body + "\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input="".join(stream).encode(), check=True)
    return path


def test_ctrl_c_ends_a_run_with_one_line_and_the_rerun_resumes(tmp_path):
    import signal
    import time

    env = {**os.environ, "COMMITFORGE_CACHE": str(tmp_path / "cache")}
    # a history long enough that the interrupt lands while the run works, however slow the machine
    repo = _long_history(tmp_path / "repo")
    args = [sys.executable, "-m", "core", f"repo={repo}", f"out_dir={tmp_path / 'run'}", "progress=false"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not (tmp_path / "run" / ".commitforge.lock").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # until the run holds its directory: past Hydra's start-up
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt")
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("commitforge: interrupted; run the same command again to resume")
    rerun = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr


def test_cli_lists_plugins_with_provider(tmp_path):
    proc = cli("plugins", cwd=tmp_path)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["kind", "name", "package", "version"]
    assert ["chunker", "window", "commitforge", "0.1.0"] in [line.split() for line in lines]


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parents[2] / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_validates(name, tmp_path):
    from core.registry import PluginRegistry

    cfg = make_cfg(tmp_path, f"+experiment={name}")
    reg = PluginRegistry(load_entry_points=False)
    for kind in ("source", "language", "chunker", "executor"):
        reg.validate(kind, cfg[kind])
    if name == "baseline":  # the naive pipeline: windows, 1024 tokens, no context, no history
        assert (cfg.chunker.name, cfg.chunker.max_chars) == ("window", 2000)
        assert (cfg.builder.name, cfg.builder.max_tokens, cfg.context.name) == ("file", 1024, "none")
    if name.startswith("ctx"):
        chars = int(name[3:])
        assert (cfg.chunker.name, cfg.chunker.max_chars, cfg.context.name) == ("ast", chars, "imports")
        assert cfg.builder.name == "commit" and cfg.builder.max_tokens >= 1024 * chars // 2000
    if name.startswith("format_"):
        assert cfg.format.name == name[len("format_"):] and cfg.context.name == "imports"
        assert cfg.chunker.max_chars == 4000


def test_missing_objects_of_a_partial_clone_are_skipped(scripted_repo, tmp_path):
    r = scripted_repo
    r.commit("one", {"src/a.rs": "fn a() {}\n", "src/b.rs": "fn b() {}\n"})
    blob = r.git("rev-parse", "HEAD:src/b.rs")
    (r.path / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    run_dir = run_pipeline(tmp_path, f"repo={r.path}")
    chunk = manifest(run_dir)["stages"]["chunk"]
    assert chunk["skips"] == {"file_missing_object": 1}
    assert [row["qualname"] for row in read_chunks(run_dir)] == ["a::a"]


def test_non_utf8_paths_are_kept_exactly(scripted_repo, tmp_path):
    r = scripted_repo
    raw = b"src/caf\xe9.rs"
    os.makedirs(os.path.join(os.fsencode(r.path), b"src"), exist_ok=True)
    with open(os.path.join(os.fsencode(r.path), raw), "wb") as fh:
        fh.write(b"fn latin() {}\n")
    r.git("add", "-A")
    r.commit("latin-1 file name")
    run_dir = run_pipeline(tmp_path, f"repo={r.path}")
    (row,) = read_chunks(run_dir)
    assert os.fsencode(row["path"]) == raw
    (commit,) = read_jsonl(run_dir / "commits.jsonl")
    assert os.fsencode(commit["files"][0]["new_path"]) == raw


@pytest.mark.parametrize("shard_bytes", [None, 1])
def test_finished_chunk_commits_are_reused_and_only_new_history_is_chunked(scripted_repo, tmp_path, monkeypatch,
                                                                           shard_bytes):
    import core.chunking

    monkeypatch.setattr(core.chunking, "COMMIT_BATCH", 2)
    monkeypatch.setattr(core.chunking, "CONTEXT_BATCH", 2)
    if shard_bytes is not None:  # every commit with rows ends a shard: an update links them
        monkeypatch.setattr(pipeline, "CHUNK_SHARD_BYTES", shard_bytes)
    r = scripted_repo
    for i in range(5):
        r.commit(f"c{i}", {f"src/m{i}.rs": f"pub fn f{i}() -> u32 {{ crate::N + {i} }}\n",
                           "src/lib.rs": f"pub const N: u32 = {i};\n"})

    digests = {}

    def chunk_counts(name: str, *overrides: str) -> tuple[dict, bytes]:
        run_dir = run_pipeline(tmp_path / name, f"repo={r.path}", f"cache_dir={tmp_path / 'cache'}",
                               "stages=[mine,chunk]", "context=imports", *overrides)
        outputs = manifest(run_dir)["stages"]["chunk"]["outputs"]
        digests[name] = [(outputs[rel]["sha256"], hashlib.sha256((run_dir / rel).read_bytes()).hexdigest())
                         for rel in outputs]
        assert list(outputs) == [f"chunks/{p.name}" for p in shard_paths(run_dir / "chunks")]
        return manifest(run_dir)["stages"]["chunk"]["counts"], chunk_bytes(run_dir)

    first, out1 = chunk_counts("a")
    assert (first["commits_reused"], first["commits_computed"]) == (0, 5)
    again, out2 = chunk_counts("b")
    assert (again["commits_reused"], again["commits_computed"]) == (5, 0) and out2 == out1
    assert "unique_blobs" not in again  # nothing was even parsed
    other, out3 = chunk_counts("c", "context.max_tokens=5")  # another setting: computed anew
    assert other["commits_computed"] == 5 and out3 != out1
    r.commit("c5", {"src/m5.rs": "pub fn f5() -> u32 { 5 }\n"})
    grown, out4 = chunk_counts("d")
    assert (grown["commits_reused"], grown["commits_computed"]) == (5, 1)  # only the new commit
    assert out4.startswith(out1) and len(out4) > len(out1)
    # the earlier output's bytes: its one shard copied, or its shards linked
    linked, copied = grown.get("chunk_bytes_linked", 0), grown.get("chunk_bytes_copied", 0)
    assert (linked, copied) == ((0, len(out1)) if shard_bytes is None else (len(out1), 0))
    assert grown["chunk_shards_linked"] == (0 if shard_bytes is None else first["chunk_shards"])
    # the manifest's digests are of the shards as written, copied bytes and new rows together
    assert all(recorded == actual for recorded, actual in digests["d"])
    fresh, out5 = chunk_counts("e", "reuse=false")
    assert "commits_reused" in fresh and fresh["commits_reused"] == 0 and out5 == out4
    assert fresh["unit_changes"] == grown["unit_changes"] and fresh["context_refs"] == grown["context_refs"]
    # an earlier part of the history: a prefix of the kept outputs, up to the end of its last commit
    older, out6 = chunk_counts("f", "source.rev='HEAD~3'")
    _, reference = chunk_counts("g", "source.rev='HEAD~3'", "reuse=false")
    assert older["chunk_bytes_copied"] + older["chunk_bytes_linked"] == len(reference) < len(out1)
    assert out6 == reference


@pytest.mark.parametrize("snapshot", ["commit", "parent"])
@pytest.mark.parametrize("workers", [1, 2])
def test_commits_missing_from_the_stage_cache_anywhere_give_the_same_bytes(tmp_path, monkeypatch, snapshot, workers):
    import sqlite3

    import core.chunking
    from core.stage_cache import StageCache

    monkeypatch.setattr(core.chunking, "COMMIT_BATCH", 4)
    monkeypatch.setattr(core.chunking, "CONTEXT_BATCH", 4)  # misses inside and across batches
    cache = tmp_path / "cache"

    def chunks(name: str, *overrides: str) -> tuple[dict, bytes]:
        run_dir = run_pipeline(tmp_path / name, f"cache_dir={cache}", "stages=[mine,chunk]", "context=imports",
                               f"context.snapshot={snapshot}", f"executor.workers={workers}", *overrides)
        return manifest(run_dir)["stages"]["chunk"], chunk_bytes(run_dir)

    cold, ref = chunks("cold", "reuse=false")
    chunks("warm")
    db = sqlite3.connect(StageCache(cache).path)
    keys = [k for (k,) in db.execute("SELECT key FROM commits ORDER BY key")]
    gone = keys[::3]  # scattered commits forgotten: their neighbours' trees are not replayed
    db.executemany("DELETE FROM commits WHERE key = ?", [(k,) for k in gone])
    db.commit()
    # counters of the work done (parsing, cache use, timings) differ; those of the rows do not
    skip = {"commits_computed", "commits_reused", "unique_blobs", "context_tree_blobs", "bytes_parsed",
            "units_extracted"}
    plain = lambda c: {k: v for k, v in c.items()  # noqa: E731
                       if k not in skip and not k.startswith(("blobs_", "chunk_bytes_", "chunk_shards_"))
                       and not k.endswith("_ms")}
    # the output the warm run kept holds every commit, with its totals: copied whole, nothing computed
    whole, out = chunks("whole")
    assert (whole["counts"]["commits_computed"], whole["counts"]["commits_reused"]) == (0, len(keys))
    assert out == ref and whole["counts"]["chunk_bytes_copied"] == len(ref)
    assert plain(whole["counts"]) == plain(cold["counts"]) and whole["skips"] == cold["skips"]
    db.execute("DELETE FROM kept_outputs")  # the commits' own entries only
    db.commit()
    db.close()
    again, out = chunks("again")
    assert (again["counts"]["commits_computed"], again["counts"]["commits_reused"]) == (len(gone), len(keys) - len(gone))
    assert out == ref
    assert plain(again["counts"]) == plain(cold["counts"]) and again["skips"] == cold["skips"]


def test_a_repository_with_two_languages_is_processed_with_languages(scripted_repo, tmp_path):
    r = scripted_repo
    r.commit("both", {"Cargo.toml": '[package]\nname = "mix"\n', "src/lib.rs": "pub struct Point { x: i32 }\n",
                      "src/geo.rs": "use crate::Point;\npub fn origin() -> Point { Point { x: 0 } }\n",
                      "tools/shapes.py": "class Point:\n    x = 0\n",
                      "tools/report.py": "from shapes import Point\n\ndef origin():\n    return Point()\n"})
    run_dir = run_pipeline(tmp_path, f"repo={r.path}", "languages=[python]", "context=imports", "dedup.near=false")
    rows = read_chunks(run_dir)
    assert {row["lang"] for row in rows} == {"rust", "python"}
    ctx = {row["qualname"]: [c["qualname"] for c in row["context"]] for row in rows}
    assert ctx["mix::geo::origin"] == ["mix::Point"]  # each language resolves within its own files
    assert ctx["tools.report::origin"] == ["tools.shapes::Point"]
    kinds = {e["kind"] for split in ("train", "val", "test") for e in read_split(run_dir, split)}
    assert {"class", "fn"} <= kinds  # the build stage has a kind token for Python's kinds too
    assert manifest(run_dir)["plugins"]["language"] == "rust,python"  # every language the run chunked
    with pytest.raises(CommitforgeError, match="extension '.py' is claimed by languages 'rust' and 'python'"):
        run_pipeline(tmp_path / "clash", f"repo={r.path}", "languages=[python]", "language.extensions=[.rs,.py]")


def test_units_and_context_are_named_after_the_cargo_package_at_their_commit(scripted_repo, tmp_path):
    # directories that are not crate names, as in many workspaces (`crates/searcher` is `grep-searcher`)
    r = scripted_repo
    r.commit("workspace", {
        "Cargo.toml": '[workspace]\nmembers = ["crates/*"]\n',
        "crates/store/Cargo.toml": '[package]\nname = "ledger-store"\n',
        "crates/store/src/lib.rs": "pub mod log;\n",
        "crates/store/src/log.rs": "pub struct Entry { pub id: u64 }\n",
        "crates/core/Cargo.toml": '[package]\nname = "ledger-core"\n[dependencies]\nledger-store = { path = "../store" }\n',
        "crates/core/src/lib.rs": "use ledger_store::log::Entry;\npub fn first() -> Entry { Entry { id: 0 } }\n",
        # a binary whose [[bin]] path lies outside src/: the files beside it are its modules
        "crates/cli/Cargo.toml": '[package]\nname = "ledger-cli"\n[[bin]]\nname = "ldg"\npath = "main.rs"\n',
        "crates/cli/main.rs": "mod cmd;\nfn main() { cmd::run() }\n",
        "crates/cli/cmd.rs": "pub fn run() {}\n"})
    r.commit("rename the store package", {
        "crates/store/Cargo.toml": '[package]\nname = "journal"\n',
        "crates/store/src/log.rs": "pub struct Entry { pub id: u64, pub at: u64 }\n",
        "crates/core/Cargo.toml": '[package]\nname = "ledger-core"\n[dependencies]\njournal = { path = "../store" }\n',
        "crates/core/src/lib.rs": "use journal::log::Entry;\npub fn first() -> Entry { Entry { id: 0, at: 0 } }\n"})
    for context in ("none", "imports"):
        run_dir = run_pipeline(tmp_path / context, f"repo={r.path}", "stages=[mine,chunk]", f"context={context}")
        rows = {(row["subject"], row["qualname"]): row for row in read_chunks(run_dir)}
        # the same qualnames whatever the context strategy: each commit's own Cargo.toml names them
        assert sorted(rows) == [("rename the store package", "journal::log::Entry"),
                                ("rename the store package", "ledger_core::first"),
                                ("workspace", "ldg::cmd::run"),
                                ("workspace", "ldg::main"),
                                ("workspace", "ledger_core::first"),
                                ("workspace", "ledger_store::log::Entry")]
        # the old code is named as its own commit named it
        assert rows[("rename the store package", "journal::log::Entry")]["old_qualname"] == "ledger_store::log::Entry"
        if context == "imports":
            assert [c["qualname"] for c in rows[("workspace", "ledger_core::first")]["context"]] == \
                ["ledger_store::log::Entry"]
            assert [c["qualname"] for c in rows[("rename the store package", "ledger_core::first")]["context"]] == \
                ["journal::log::Entry"]
    snapshot = run_pipeline(tmp_path / "file", f"repo={r.path}", "builder=file", "split=path", "dedup.near=false")
    exs = [e for split in ("train", "val", "test") for e in read_split(snapshot, split)]
    assert {e["qualname"] for e in exs} == {"journal::log::Entry", "ledger_core::first", "ldg::cmd::run", "ldg::main"}


def test_units_are_named_as_their_crate_roots_declare_them(scripted_repo, tmp_path):
    r = scripted_repo
    r.commit("serde-like", {
        "Cargo.toml": '[package]\nname = "serde"\n[[bin]]\nname = "sd"\npath = "src/main.rs"\n',
        "src/lib.rs": '#[doc(hidden)]\n#[path = "private/mod.rs"]\npub mod __private;\n',
        "src/private/mod.rs": "pub mod de;\npub fn helper() -> u32 { 1 }\n",
        "src/private/de.rs": "pub struct Content;\n",
        "src/main.rs": "mod cli;\nfn main() { cli::run() }\n",
        "src/cli.rs": "pub fn run() {}\n"})
    r.commit("edit", {"src/private/mod.rs": "pub mod de;\npub fn helper() -> u32 { 2 }\n",
                      "src/cli.rs": "pub fn run() { println!(); }\n"})
    for context in ("none", "imports"):
        run_dir = run_pipeline(tmp_path / context, f"repo={r.path}", "stages=[mine,chunk]", f"context={context}")
        rows = {(row["subject"], row["qualname"]) for row in read_chunks(run_dir)}
        assert rows == {("serde-like", "serde::__private::helper"), ("serde-like", "serde::__private::de::Content"),
                        ("serde-like", "sd::main"), ("serde-like", "sd::cli::run"),
                        ("edit", "serde::__private::helper"), ("edit", "sd::cli::run")}


def test_python_modules_are_named_from_the_source_root_of_pyproject(scripted_repo, tmp_path):
    r = scripted_repo
    r.commit("bindings", {"pyproject.toml": '[tool.maturin]\npython-source = "python"\n',
                          "python/ledger/__init__.py": "",
                          "python/ledger/schema.py": "class Entry:\n    id = 0\n",
                          "python/ledger/api.py": "from ledger.schema import Entry\n\ndef first():\n    return Entry()\n"})
    run_dir = run_pipeline(tmp_path, f"repo={r.path}", "languages=[python]", "stages=[mine,chunk]", "context=imports")
    ctx = {row["qualname"]: [c["qualname"] for c in row["context"]] for row in read_chunks(run_dir)}
    assert ctx["ledger.api::first"] == ["ledger.schema::Entry"]  # not python.ledger.api


def test_symbol_index_summaries_are_stored_and_reused(tmp_path, monkeypatch):
    import plugins.rust

    cache = tmp_path / "cache"
    made: list[int] = []
    summarize = plugins.rust.RustLanguage.summarize

    def counted(self, parsed, options):
        made.append(1)
        return summarize(self, parsed, options)

    monkeypatch.setattr(plugins.rust.RustLanguage, "summarize", counted)

    def chunks(name: str, *overrides: str) -> bytes:
        run_dir = run_pipeline(tmp_path / name, f"cache_dir={cache}", "stages=[mine,chunk]", "context=imports",
                               "executor.workers=1", "reuse=false", *overrides)
        return chunk_bytes(run_dir)

    first = chunks("a")
    assert made and list(cache.glob("summaries-*.sqlite"))
    parsed = json.loads((tmp_path / "a" / "run" / "MANIFEST.json").read_text())["stages"]["chunk"]["counts"]["blobs_parsed"]
    assert len(made) == parsed  # each version summarised once, from its parse
    made.clear()
    assert chunks("b") == first and not made  # every file's summary came from the store
    chunks("c", "context.max_item_chars=50")  # other rendering options: other summaries
    assert made


def test_the_report_scan_kept_per_commit_equals_a_scan_of_chunks_jsonl(tmp_path, monkeypatch):
    import core.chunking
    from core.report import render_report, scan_chunks

    monkeypatch.setattr(core.chunking, "COMMIT_BATCH", 3)
    monkeypatch.setattr(core.chunking, "CONTEXT_BATCH", 3)
    cache = tmp_path / "cache"
    for name in ("cold", "warm"):  # computed, then every commit's scan from the stage cache
        r = Run(make_cfg(tmp_path / name, f"cache_dir={cache}", "stages=[mine,chunk]", "context=imports"))
        run_dir = r.run()
        assert r.chunk_scan is not None and r.chunk_scan.rows > 100
        assert r.chunk_scan == scan_chunks(run_dir / "chunks")
    assert manifest(run_dir)["stages"]["chunk"]["counts"]["commits_computed"] == 0
    strip = lambda html: re.sub(r"\d+\.\d+ s\b", "", html)  # noqa: E731 - timings differ
    assert strip(render_report(run_dir, r.chunk_scan)) == strip(render_report(run_dir))


def test_the_examples_per_commit_the_build_keeps_are_those_the_report_reads_back(tmp_path):
    from core.report import render_report, scan_examples

    r = Run(make_cfg(tmp_path, "context=imports"))
    run_dir = r.run()
    assert r.example_commits is not None and sum(map(len, r.example_commits.values())) > 5
    assert r.example_commits == scan_examples(run_dir, ("train", "val", "test"))[0]
    assert render_report(run_dir, r.chunk_scan, r.example_commits) == render_report(run_dir)


def test_a_kept_output_changed_in_place_is_not_copied(scripted_repo, tmp_path):
    r = scripted_repo
    for i in range(3):
        r.commit(f"c{i}", {f"src/m{i}.rs": f"pub fn f{i}() -> u32 {{ {i} }}\n"})

    def chunks(name: str, *overrides: str) -> tuple[dict, Path]:
        run_dir = run_pipeline(tmp_path / name, f"repo={r.path}", f"cache_dir={tmp_path / 'cache'}",
                               "stages=[mine,chunk]", "context=imports", *overrides)
        return manifest(run_dir)["stages"]["chunk"]["counts"], run_dir / "chunks" / "00000.jsonl"

    _, first = chunks("a")
    reference = first.read_bytes()
    again, out = chunks("b")
    assert again["chunk_bytes_copied"] == len(reference) and out.read_bytes() == reference
    with open(first, "r+b") as fh:  # the run directory's shard is the kept one (a hard link)
        fh.write(b"X")
    with open(out, "r+b") as fh:
        fh.write(b"Y")
    third, out3 = chunks("c")
    assert "chunk_bytes_copied" not in third and out3.read_bytes() == reference


def test_a_file_over_max_file_bytes_gives_no_context_even_when_a_summary_of_it_is_stored(scripted_repo, tmp_path):
    r = scripted_repo
    big = "pub struct Big {\n" + "".join(f"    pub f{i}: u32,\n" for i in range(200)) + "}\n"
    r.commit("c0", {"src/lib.rs": "pub mod big;\npub fn size(b: &big::Big) -> u32 { b.f0 }\n", "src/big.rs": big})
    r.commit("c1", {"src/lib.rs": "pub mod big;\npub fn size(b: &big::Big) -> u32 { b.f1 }\n"})

    def context(name: str, cache: str, *overrides: str) -> list:
        run_dir = run_pipeline(tmp_path / name, f"repo={r.path}", f"cache_dir={tmp_path / cache}",
                               "stages=[mine,chunk]", "context=imports", *overrides)
        return [(row["qualname"], [c["qualname"] for c in row["context"]]) for row in read_chunks(run_dir)]

    assert ("size", ["big::Big"]) in context("large", "cache")
    capped = context("capped", "cache", f"max_file_bytes={len(big) - 1}")
    assert capped == context("fresh", "fresh-cache", f"max_file_bytes={len(big) - 1}", "reuse=false")
    assert ("size", []) in capped


def test_a_rerun_resumes_only_when_the_mined_range_resolves_as_before(scripted_repo, tmp_path):
    """A branch moved (HEAD unchanged): the rerun in the same out_dir mines it again."""
    r = scripted_repo
    first = r.commit("c0", {"src/lib.rs": "pub fn a() {}\n"})
    r.commit("c1", {"src/lib.rs": "pub fn a() {}\npub fn b() {}\n"})
    r.git("branch", "feat", first)

    def run() -> dict:
        run_dir = run_pipeline(tmp_path / "out", f"repo={r.path}", "source.rev=feat", "stages=[mine,chunk]")
        return manifest(run_dir)

    assert run()["stages"]["mine"]["counts"]["commits"] == 1
    assert run().get("resumed") == ["mine", "chunk"]
    r.git("branch", "-f", "feat", "HEAD")
    again = run()
    assert "resumed" not in again and again["stages"]["mine"]["counts"]["commits"] == 2


def test_outputs_kept_in_the_old_table_are_dropped_with_their_files(tmp_path):
    """The old table recorded every copied commit as ending where the copy ended, so a later
    run reading a shorter prefix of such an output would have copied other commits' rows."""
    import sqlite3

    from core.stage_cache import StageCache

    cache = StageCache(tmp_path)
    folder = cache._outputs_dir()
    folder.mkdir(parents=True)
    (folder / "old.jsonl").write_text("{}\n")
    conn = sqlite3.connect(cache.path)
    conn.execute("CREATE TABLE outputs (name TEXT PRIMARY KEY, base TEXT NOT NULL, keys BLOB NOT NULL, "
                 "ends BLOB NOT NULL, stat TEXT NOT NULL, used REAL NOT NULL)")
    conn.execute("INSERT INTO outputs VALUES ('old.jsonl', 'b', x'', x'', '', 0)")
    conn.commit()
    conn.close()
    assert cache.open_output("b", ["k"]) is None
    cache.close()
    tables = {n for (n,) in sqlite3.connect(cache.path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "outputs" not in tables and "kept_outputs" in tables and not (folder / "old.jsonl").exists()


def test_kept_output_folders_no_row_names_are_removed_once_old(tmp_path):
    """A run killed between linking its shards and recording them leaves a folder that
    holds a whole output's disk space: the next run that keeps an output removes it, unless
    it is young enough to be another run's about to be recorded."""
    import os

    from core.chunk_shards import WrittenShard
    from core.stage_cache import ORPHAN_AGE_S, StageCache

    run_dir = tmp_path / "run"
    (run_dir / "chunks").mkdir(parents=True)
    (run_dir / "chunks" / "00000.jsonl").write_text('{"a": 1}\n')
    cache = StageCache(tmp_path / "cache")
    folder = cache._outputs_dir()
    for name in ("orphan-old", "orphan-young"):
        (folder / name).mkdir(parents=True)
        (folder / name / "00000.jsonl").write_text("x\n")
    long_ago = time.time() - ORPHAN_AGE_S - 60
    os.utime(folder / "orphan-old", (long_ago, long_ago))
    cache.keep_output(run_dir, [WrittenShard("chunks/00000.jsonl", 1, 9)], "base", ["k"], [9], [1])
    kept = cache.open_output("base", ["k"])
    cache.close()
    assert kept is not None and all(shard.path.is_file() for shard in kept.shards)
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("orphan")) == ["orphan-young"]
    assert len(list(folder.iterdir())) == 2  # the young orphan and the output just kept


def test_a_claim_on_chunk_settings_makes_a_second_run_wait(tmp_path):
    """Two sweep jobs with the same chunk settings: while one holds the claim, the other
    waits (and then finds what the first computed in the cache)."""
    import threading

    from core.stage_cache import StageCache

    claims = StageCache(tmp_path / "cache")
    order: list[str] = []
    with claims.claim("settings-a"):
        waiter = threading.Thread(target=lambda: claims.claim("settings-a").__enter__() or order.append("second"))
        waiter.start()
        other = claims.claim("settings-b")  # other settings are not held up
        with other:
            order.append("other settings")
        waiter.join(0.5)
        order.append("first done")
    waiter.join(5)
    assert order == ["other settings", "first done", "second"]


def test_concurrent_runs_with_the_same_settings_compute_each_commit_once(tmp_path):
    from core.demo import demo_repo_path

    demo_repo = demo_repo_path(tmp_path / "cache")
    env = {**os.environ, "COMMITFORGE_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-m", "core", f"repo={demo_repo}", f"out_dir={tmp_path / name}",
                               "stages=[mine,chunk]", "context=imports", "progress=false"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for name in ("a", "b")]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    counts = [manifest(tmp_path / name)["stages"]["chunk"]["counts"] for name in ("a", "b")]
    commits = manifest(tmp_path / "a")["commit_range"]["commits"]
    assert sum(c["commits_computed"] for c in counts) == commits
    assert chunk_bytes(tmp_path / "a") == chunk_bytes(tmp_path / "b")


def test_a_run_collects_cycles_less_often_and_restores_the_setting_with_what_it_made_aged(scripted_repo, tmp_path, monkeypatch):
    import gc

    from core import collector, pipeline

    scripted_repo.commit("one", {"src/lib.rs": "pub fn a() {}\n"})
    seen = []
    real = pipeline.Run._chunk

    made = []  # what a run leaves alive, such as a symbol index kept by a worker in this process

    def chunk(self, *args):
        seen.append(gc.get_threshold())
        made.append([[] for _ in range(100)])
        return real(self, *args)

    monkeypatch.setattr(pipeline.Run, "_chunk", chunk)
    before = gc.get_threshold()
    run_pipeline(tmp_path, f"repo={scripted_repo.path}", "stages=[mine,chunk]")
    assert seen == [collector.GC_THRESHOLDS] and gc.get_threshold() == before
    # ...in the oldest generation: the default thresholds back, no young collection walks it
    young = {id(o) for generation in (0, 1) for o in gc.get_objects(generation)}
    assert id(made[0]) not in young and all(id(o) not in young for o in made[0])
    assert any(o is made[0] for o in gc.get_objects(2))


def test_a_context_run_freezes_what_each_commit_leaves_and_unfreezes_it_however_it_ends(scripted_repo, tmp_path,
                                                                                          monkeypatch):
    import gc

    from core import chunking

    for i in range(4):
        scripted_repo.commit(f"c{i}", {"src/lib.rs": f"pub struct S{i};\npub fn f() -> S{i} {{ S{i} }}\n"})
    frozen_during: list[int] = []  # objects frozen when each commit is paired
    real_pair = chunking.ChunkJob._pair_commit
    fail = False

    def pair(self, rec, *args):
        frozen_during.append(gc.get_freeze_count())
        if rec.subject == "c3" and fail:
            raise RuntimeError("a commit that fails")
        return real_pair(self, rec, *args)

    monkeypatch.setattr(chunking.ChunkJob, "_pair_commit", pair)
    run_pipeline(tmp_path / "a", f"repo={scripted_repo.path}", "stages=[mine,chunk]", "context=imports")
    # before every commit but the first, what the commits before left alive is frozen...
    assert len(frozen_during) == 4 and frozen_during[0] == 0 and all(n > 0 for n in frozen_during[1:])
    assert gc.get_freeze_count() == 0  # ...and in the oldest generation again after the run
    frozen_during.clear()
    run_pipeline(tmp_path / "b", f"repo={scripted_repo.path}", "stages=[mine,chunk]")
    assert frozen_during == [0] * 4  # without a context strategy nothing grows from commit to commit
    fail = True
    with pytest.raises(RuntimeError, match="a commit that fails"):
        run_pipeline(tmp_path / "c", f"repo={scripted_repo.path}", "stages=[mine,chunk]", "context=imports",
                     "reuse=false")
    assert gc.get_freeze_count() == 0

    # a program that froze objects itself (before forking, say) keeps them frozen, and no more
    fail = False
    frozen_during.clear()
    gc.freeze()
    try:
        mine = gc.get_freeze_count()
        run_pipeline(tmp_path / "d", f"repo={scripted_repo.path}", "stages=[mine,chunk]", "context=imports",
                     "reuse=false")
        # (its frozen objects can only be freed meanwhile: nothing was added, nothing thawed)
        assert len(frozen_during) == 4 and all(0 < n <= mine for n in frozen_during)
        assert 0 < gc.get_freeze_count() <= mine
    finally:
        gc.unfreeze()


def test_the_summary_warns_when_no_commit_has_code_of_the_language(scripted_repo, tmp_path, capsys):
    from core.pipeline import run

    scripted_repo.commit("python only", {"tool/a.py": "def f():\n    return 1\n"})
    run(make_cfg(tmp_path, f"repo={scripted_repo.path}"))
    out = capsys.readouterr().out
    assert "warning: no commit in the range changes a file of rust (.rs); for other code choose the language" in out


def test_the_summary_warns_when_many_examples_do_not_fit(scripted_repo, tmp_path, capsys):
    from core.pipeline import run

    long_fn = "pub fn long(x: u32) -> u32 {\n" + "".join(f"    let v{i} = x + {i};\n" for i in range(120)) + "    x\n}\n"
    scripted_repo.commit("long", {"crates/app/src/lib.rs": long_fn})
    run(make_cfg(tmp_path, f"repo={scripted_repo.path}", "builder.max_tokens=64"))
    out = capsys.readouterr().out
    assert re.search(r"warning: 1 of 1 examples \(100%\) did not fit builder.max_tokens=64 and were dropped", out)
