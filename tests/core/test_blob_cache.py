"""The shared unit cache: concurrent writers, damaged entries, unusable files."""

from __future__ import annotations

import multiprocessing

import pytest

from core.blob_cache import BlobCache, close_connections
from core.errors import CommitforgeError


def _writer(args):
    root, n = args
    cache = BlobCache(root, "rust-test")
    cache.put_many([(f"{n:02d}{i:038d}", {"size": i, "skip": None, "parsed": None}) for i in range(50)])
    return len(cache.missing([f"{k:02d}{i:038d}" for k in range(8) for i in range(50)]))


def test_processes_opening_a_fresh_cache_at_once_all_succeed(tmp_path):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(8) as pool:
        pool.map(_writer, [(tmp_path, n) for n in range(8)])
    cache = BlobCache(tmp_path, "rust-test")
    assert cache.missing([f"{k:02d}{i:038d}" for k in range(8) for i in range(50)]) == set()
    assert cache.get(f"03{7:038d}") == {"size": 7, "skip": None, "parsed": None}
    # languages (cache keys) do not see each other's entries
    assert BlobCache(tmp_path, "python-test").get(f"03{7:038d}") is None
    close_connections()


def test_unusable_cache_file_is_a_clear_error(tmp_path):
    cache = BlobCache(tmp_path, "rust-test")
    cache.path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CommitforgeError, match="cannot be used .*delete it or choose another cache_dir"):
        cache.get("0" * 40)


def _reader(root):
    return len(BlobCache(root, "rust-test").missing(["a" * 40, "b" * 40]))


def test_a_new_process_can_read_while_another_one_writes(tmp_path):
    from core.blob_cache import _connect

    cache = BlobCache(tmp_path, "rust-test")
    cache.put_many([("a" * 40, {"size": 1, "skip": None, "parsed": None})])
    conn = _connect(cache.path)
    conn.execute("BEGIN IMMEDIATE")  # a writer in the middle of its transaction
    conn.execute("INSERT INTO units VALUES (?, ?)", ("rust-test:" + "b" * 40, b"0"))
    try:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            assert pool.apply_async(_reader, (tmp_path,)).get(timeout=30) == 1
    finally:
        conn.execute("ROLLBACK")
        close_connections()


def test_a_damaged_entry_is_parsed_again(tmp_path):
    import sqlite3

    from ..conftest import ScriptedRepo, manifest, run_pipeline

    r = ScriptedRepo(tmp_path / "repo")
    r.commit("one", {"src/a.rs": "fn a() {}\n"})
    run_pipeline(tmp_path, f"repo={r.path}", "stages=[mine,chunk]")
    close_connections()
    (db,) = (tmp_path / "cache").glob("units-*.sqlite")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE units SET entry = x'00ff'")
    again = run_pipeline(tmp_path, f"repo={r.path}", "stages=[mine,chunk]", f"out_dir={tmp_path / 'again'}",
                         "reuse=false")  # the finished batch would be reused without parsing
    chunk = manifest(again)["stages"]["chunk"]
    assert chunk["skips"] == {} and chunk["counts"]["blobs_parsed"] == 1
