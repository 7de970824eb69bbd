from __future__ import annotations

import hashlib

import pytest

from core import chunk_shards, pipeline
from core.chunk_shards import ChunkShards, shard_paths, shards_key
from core.files import output_digest

from ..conftest import ScriptedRepo, chunk_bytes, manifest, run_pipeline


def _write(run_dir, commits: list[bytes], shard_bytes: int) -> ChunkShards:
    with ChunkShards(run_dir, shard_bytes) as out:
        for rows in commits:
            if rows:
                out.fh.write(rows)
                out.wrote(len(rows), rows.count(b"\n"))
            out.end_commit()
    return out


def test_a_shard_ends_after_the_commit_that_fills_it_and_the_shards_make_the_whole(tmp_path):
    commits = [b"a\n" * 3, b"bb\n", b"", b"c\n" * 5, b"d\n"]  # 6, 3, 0, 10 and 2 bytes
    out = _write(tmp_path, commits, 8)
    # 6 bytes, then 9 (ended), 10 (ended), and the last 2
    assert [(s.rel, s.size, s.rows) for s in out.shards] == [
        ("chunks/00000.jsonl", 9, 4), ("chunks/00001.jsonl", 10, 5), ("chunks/00002.jsonl", 2, 1)]
    assert b"".join(p.read_bytes() for p in shard_paths(tmp_path / "chunks")) == b"".join(commits)
    for shard in out.shards:  # digests from the background writing, as the manifest takes them
        path = tmp_path / shard.rel
        assert output_digest(path) == (hashlib.sha256(path.read_bytes()).hexdigest(), shard.size)


def test_no_rows_make_one_empty_shard_and_an_earlier_runs_extra_shards_go(tmp_path):
    _write(tmp_path, [b"a\n" * 4] * 5, 8)
    assert len(shard_paths(tmp_path / "chunks")) == 5
    (tmp_path / "chunks" / "notes.txt").write_text("mine")
    out = _write(tmp_path, [b""], 8)
    assert [s.rel for s in out.shards] == ["chunks/00000.jsonl"]
    assert [p.name for p in shard_paths(tmp_path / "chunks")] == ["00000.jsonl"]
    assert (tmp_path / "chunks" / "00000.jsonl").read_bytes() == b""
    assert (tmp_path / "chunks" / "notes.txt").exists()  # not a shard: not ours to remove


def test_a_failed_writing_leaves_no_partial_shard(tmp_path):
    with pytest.raises(RuntimeError), ChunkShards(tmp_path, 8) as out:
        out.fh.write(b"a\n" * 5)
        out.wrote(10, 5)
        out.end_commit()  # a whole shard
        out.fh.write(b"b\n")
        raise RuntimeError("the stage failed")
    assert [p.name for p in (tmp_path / "chunks").iterdir()] == ["00000.jsonl"]


def test_a_linked_shard_keeps_its_inode_and_digest_and_the_key_names_the_sequence(tmp_path):
    first = _write(tmp_path / "a", [b"a\n" * 5, b"b\n"], 8)
    source = tmp_path / "a" / first.shards[0].rel
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    with ChunkShards(tmp_path / "b", 8) as out:
        assert out.link(source, 5, 10, sha)
        out.fh.write(b"c\n")
        out.wrote(2, 1)
        out.end_commit()
    linked = tmp_path / "b" / "chunks" / "00000.jsonl"
    assert linked.stat().st_ino == source.stat().st_ino and out.linked == 1
    assert output_digest(linked) == (sha, 10)
    assert shards_key(shard_paths(tmp_path / "a" / "chunks")) != shards_key(shard_paths(tmp_path / "b" / "chunks"))
    assert shards_key([source]) == shards_key([linked])  # a hard link is the same file


def test_an_update_that_cannot_link_copies_and_writes_the_same_shards(scripted_repo: ScriptedRepo, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setattr(pipeline, "CHUNK_SHARD_BYTES", 300)
    for i in range(6):
        scripted_repo.commit(f"c{i}", {f"src/m{i}.rs": f"pub fn f{i}() -> u32 {{ {i} }}\n"})
    shared = (f"repo={scripted_repo.path}", f"cache_dir={tmp_path / 'cache'}", "stages=[mine,chunk]")
    run_pipeline(tmp_path / "a", *shared)
    scripted_repo.commit("c6", {"src/m6.rs": "pub fn f6() -> u32 { 6 }\n"})

    def no_links(*args, **kwargs):
        raise OSError("another file system")

    monkeypatch.setattr(chunk_shards.os, "link", no_links)
    copied = run_pipeline(tmp_path / "b", *shared)
    monkeypatch.undo()
    monkeypatch.setattr(pipeline, "CHUNK_SHARD_BYTES", 300)
    fresh = run_pipeline(tmp_path / "c", f"repo={scripted_repo.path}", "stages=[mine,chunk]", "reuse=false")
    counts = manifest(copied)["stages"]["chunk"]["counts"]
    assert counts["chunk_shards_linked"] == 0 and counts["chunk_bytes_copied"] > 0 and counts["chunk_shards"] > 2
    assert [p.read_bytes() for p in shard_paths(copied / "chunks")] == \
        [p.read_bytes() for p in shard_paths(fresh / "chunks")]
    assert chunk_bytes(copied) == chunk_bytes(fresh)


def test_a_file_copied_into_two_shards_is_removed_only_after_both(tmp_path, monkeypatch):
    """A worker's spool file whose commits fall into two shards: the later shard must not
    remove it while the earlier one (finished by another thread) has still to read it."""
    import time

    source = tmp_path / "spool.jsonl"
    source.write_bytes(b"a\n" * 3 + b"b\n")
    finish, delayed = chunk_shards._finish, []

    def slow_first(stack, spent):
        if not delayed:  # the earlier shard is finished late
            delayed.append(stack)
            time.sleep(0.3)
        return finish(stack, spent)

    monkeypatch.setattr(chunk_shards, "_finish", slow_first)
    with ChunkShards(tmp_path / "run", 6) as out:
        out.copy_file(str(source), 0, 6)
        out.wrote(6, 3)
        out.end_commit()  # a full shard, finished by the thread
        out.copy_file(str(source), 6, 2, last=True)
        out.wrote(2, 1)
        out.end_commit()  # the last shard, still open when the writing ends
    assert [p.read_bytes() for p in shard_paths(tmp_path / "run" / "chunks")] == [b"a\n" * 3, b"b\n"]
    assert delayed and not source.exists()
