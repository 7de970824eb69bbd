"""``python -m core cache``: what the cache directory holds, and pruning what no run reads."""

from __future__ import annotations

import fcntl
import marshal
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import cache_admin
from core.blob_cache import CACHE_FORMAT, UNITS_FILE
from core.demo import DEMO_DIR
from core.errors import CommitforgeError
from core.stage_cache import STAGE_CACHE_FORMAT, STAGES_FILE

from ..conftest import ScriptedRepo, run_pipeline

LIB = """pub struct Point { pub x: i32, pub y: i32 }

pub fn norm(p: &Point) -> i32 { p.x.abs() + p.y.abs() }
"""
MAIN = """use geo::{norm, Point};

fn main() { let p = Point { x: 1, y: 2 }; println!("{}", norm(&p)); }
"""


def test_a_run_makes_only_entries_the_cache_command_knows_as_current(scripted_repo: ScriptedRepo, tmp_path,
                                                                      monkeypatch):
    from plugins.tokenizers import _PieceStore

    monkeypatch.setattr(_PieceStore, "SAVE_CHARS", 1)  # a small history's pieces are kept too
    r = scripted_repo
    r.commit("geo", {"geo/Cargo.toml": "[package]\nname = 'geo'\n", "geo/src/lib.rs": LIB})
    r.commit("app", {"app/Cargo.toml": "[package]\nname = 'app'\n[dependencies]\ngeo = { path = '../geo' }\n",
                     "app/src/main.rs": MAIN})
    r.commit("z", {"geo/src/lib.rs": LIB.replace("y: i32 }", "y: i32, pub z: i32 }")})
    run_pipeline(tmp_path, f"repo={r.path}", "context=imports")
    entries = cache_admin.scan(tmp_path / "cache")
    assert {e.name: e.status for e in entries} == {name: "current" for name in cache_admin.current_names() - {DEMO_DIR}}
    units = next(e for e in entries if e.name == UNITS_FILE)
    assert units.size > 0 and all(p.name.startswith(UNITS_FILE) for p in units.paths)


def _touch(path: Path, data: bytes = b"x" * 5000, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


@pytest.fixture
def cache(tmp_path) -> Path:
    root = tmp_path / "cache"
    _touch(root / UNITS_FILE)
    _touch(root / f"{UNITS_FILE}-wal")
    _touch(root / STAGES_FILE)
    _touch(root / "tokenizers" / "bpe-1" / "tokenizer.json")
    # older formats: another file layout, a kept output still linked from a run directory
    _touch(root / "stages-f1.sqlite")
    _touch(root / "stages-f1.sqlite-shm")
    (root / "stages-f1-outputs").mkdir()
    os.link(_touch(tmp_path / "run" / "chunks.jsonl", b"rows\n" * 2000), root / "stages-f1-outputs" / "k.jsonl")
    _touch(root / "units-f3" / "rust" / "ab")
    _touch(root / "examples-f1.sqlite")
    _touch(root / "demo-v0" / "HEAD")
    # a demo build interrupted long ago, one that may still be running; what is not ours
    old = _touch(root / ".demo-v1.tmp-old" / "HEAD", age_s=2 * cache_admin.UNFINISHED_AGE_S).parent
    t = time.time() - 2 * cache_admin.UNFINISHED_AGE_S
    os.utime(old, (t, t))
    _touch(root / ".demo-v1.tmp-new" / "HEAD")
    _touch(root / "notes.txt")
    _touch(root / "stagesf1.sqlite")  # not a name of any store
    # a newer commitforge's store, another Python's unit cache (another marshal version)
    _touch(root / f"stages-f{STAGE_CACHE_FORMAT + 1}.sqlite")
    _touch(root / OTHER_UNITS)
    return root


OTHER_UNITS = f"units-f{CACHE_FORMAT}-m{marshal.version + 1}.sqlite"


def test_entries_are_classified_by_name_with_sqlite_side_files_and_links_apart(cache):
    entries = {e.name: e for e in cache_admin.scan(cache)}
    assert {n: e.status for n, e in entries.items()} == {
        UNITS_FILE: "current", STAGES_FILE: "current", "tokenizers": "current",
        "stages-f1.sqlite": "stale", "stages-f1-outputs": "stale", "units-f3": "stale", "examples-f1.sqlite": "stale",
        "demo-v0": "stale", ".demo-v1.tmp-old": "unfinished", ".demo-v1.tmp-new": "building",
        "notes.txt": "other", "stagesf1.sqlite": "other",
        f"stages-f{STAGE_CACHE_FORMAT + 1}.sqlite": "newer", OTHER_UNITS: "other"}
    assert [p.name for p in entries[UNITS_FILE].paths] == [UNITS_FILE, f"{UNITS_FILE}-wal"]
    assert [p.name for p in entries["stages-f1.sqlite"].paths] == ["stages-f1.sqlite", "stages-f1.sqlite-shm"]
    assert entries[UNITS_FILE].size >= 2 * 5000 and entries[UNITS_FILE].linked == 0
    outputs = entries["stages-f1-outputs"]
    assert outputs.size == 0 and outputs.linked >= 10_000  # its file is a run directory's too


def test_prune_removes_stale_and_unfinished_entries_and_all_removes_ours_only(cache, tmp_path):
    gone, failed = cache_admin.prune(cache)
    assert failed == [] and sorted(e.name for e in gone) == [
        ".demo-v1.tmp-old", "demo-v0", "examples-f1.sqlite", "stages-f1-outputs", "stages-f1.sqlite", "units-f3"]
    kept = [".demo-v1.tmp-new", "notes.txt", "stagesf1.sqlite", f"stages-f{STAGE_CACHE_FORMAT + 1}.sqlite", OTHER_UNITS]
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [*kept, STAGES_FILE, "tokenizers", UNITS_FILE, f"{UNITS_FILE}-wal"])
    assert (tmp_path / "run" / "chunks.jsonl").read_bytes() == b"rows\n" * 2000  # the run's link is untouched
    assert cache_admin.prune(cache) == ([], [])
    with open(_touch(cache / "locks" / "chunk-1.lock"), "a+b") as held:  # a run computing chunks holds it
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(CommitforgeError, match=r"a run is using the cache \(it holds .*chunk-1.lock\)"):
            cache_admin.prune(cache, everything=True)
    cache_admin.prune(cache, everything=True)
    assert sorted(p.name for p in cache.iterdir()) == sorted(kept)


def test_prune_all_refuses_a_directory_without_a_commitforge_store(tmp_path):
    _touch(tmp_path / "tokenizers" / "mine.json")  # names commitforge also uses, in someone else's directory
    _touch(tmp_path / "locks" / "x.lock")
    with pytest.raises(CommitforgeError, match="holds no commitforge store"):
        cache_admin.prune(tmp_path, everything=True)
    assert (tmp_path / "tokenizers" / "mine.json").exists()


def test_the_cache_command_lists_prunes_and_refuses_bad_arguments(cache, tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "core", "cache", *args], capture_output=True, text=True,
                              check=False, env={**os.environ, "COMMITFORGE_CACHE": str(cache)})

    listing = cli()
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0] == f"cache directory: {cache}"
    assert any(line.split()[:2] == ["stages-f1.sqlite", "stale"] for line in lines)
    assert lines[-1].startswith("14 entries") and f"prune cache_dir={cache} removes them" in lines[-1]
    other = tmp_path / "other-cache"
    _touch(other / "build-f1.sqlite")
    pruned = cli("prune", f"cache_dir={other}")  # the argument wins over COMMITFORGE_CACHE
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.splitlines()[-1].startswith(f"commitforge: removed 1 entry, 8.0 KB freed, from {other}")
    assert list(other.iterdir()) == [] and (cache / "stages-f1.sqlite").exists()
    nope = tmp_path / "nope"
    for args, message in ((["prune", "--everything"], ("cache: unexpected argument '--everything'; see "
                                                        "python -m core cache --help")),
                          (["--all"], "cache: unexpected argument '--all'; see python -m core cache --help"),
                          ([f"cache_dir={nope}"], (f"cache_dir={nope} is not a directory; give the cache directory "
                                                   "of your runs (cache_dir=DIR or COMMITFORGE_CACHE)"))):
        proc = cli(*args)
        assert proc.returncode == 2 and proc.stderr.splitlines() == [f"commitforge: error: {message}"]


def test_a_run_says_when_its_cache_holds_entries_of_older_formats(scripted_repo: ScriptedRepo, tmp_path):
    scripted_repo.commit("lib", {"src/lib.rs": LIB})

    def run() -> list[str]:
        proc = subprocess.run([sys.executable, "-m", "core", f"repo={scripted_repo.path}", "stages=[mine,chunk]",
                               f"out_dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}"],
                              capture_output=True, text=True, check=False, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return [line for line in proc.stdout.splitlines() if line.startswith("  cache:")]

    assert run() == []
    _touch(tmp_path / "cache" / "stages-f1.sqlite", b"x" * 4096)
    assert run() == [(f"  cache: 4.0 KB in 1 entry of older formats (stages-f1.sqlite); `python -m core cache prune "
                      f"cache_dir={tmp_path / 'cache'}` removes them")]


def test_human_sizes():
    assert [cache_admin.human(n) for n in (0, 1023, 1024, 5 * 2**20 + 2**19, 3 * 2**40)] == [
        "0 B", "1023 B", "1.0 KB", "5.5 MB", "3.0 TB"]


def test_cache_main_raises_on_a_repeated_argument(tmp_path):
    with pytest.raises(CommitforgeError, match="unexpected argument 'prune'"):
        cache_admin.main(["prune", "prune", f"cache_dir={tmp_path}"])
