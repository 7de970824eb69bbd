"""Example lines an earlier build wrote are copied by a later build that puts the same
rows in the same splits: its outputs are byte for byte those of a build that computes
everything, and a kept file changed since is never used."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from core import files
from core.examples import ExampleRows
from core.files import fast_json_line
from core.kept_lines import KEPT_LINES_DIR, KEPT_LINES_FILE, KeptExample, KeptLines

from ..conftest import ScriptedRepo, manifest, read_split, run_pipeline
from .test_build_memo import commit_round, counts, same_outputs

SHARED = "tokenizer.max_training_chars=20000"  # the bpe tokenizer learns from commits every split keeps in train


@pytest.fixture
def repo(scripted_repo: ScriptedRepo) -> ScriptedRepo:
    for k in range(8):
        commit_round(scripted_repo, k)
    return scripted_repo


def examples(run_dir) -> dict[str, int]:
    return {s: counts(run_dir)[f"examples_{s}"] for s in ("train", "val", "test")}


def written(run_dir) -> set[tuple[str, str, str]]:
    return {(e["id"], e["split"], e["commit"]) for s in ("train", "val", "test")
            for e in read_split(run_dir, s)}


@pytest.mark.parametrize("builder", ["commit", "fim"])
def test_a_new_commit_copies_the_lines_of_every_row_built_before(repo, tmp_path, builder, monkeypatch):
    for k in range(8, 12):  # val and test of several commits each
        commit_round(repo, k)
    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}", SHARED, f"builder={builder}",
              "split.fractions=[0.5,0.25,0.25]"]
    before = run_pipeline(tmp_path / "a", *shared)
    assert "example_lines_copied" not in counts(before)
    commit_round(repo, 99)
    taken = {}  # split -> (bytes taken, bytes the copy ahead had) of each file that took one over
    take = files._BackgroundWrites._take_ahead
    monkeypatch.setattr(files._BackgroundWrites, "_take_ahead", lambda self, ahead, size: taken.update(
        {Path(ahead.tmp).parent.name: (size, ahead.wait())}) or take(self, ahead, size))
    after = run_pipeline(tmp_path / "b", *shared)
    # each file's first lines were copied while the examples were built: all of train before
    # (a guess, made once the tokenizer was ready), and the lines val and test start with
    # (known once the splits were)
    train_before = (before / "data" / "train" / "00000.jsonl").stat().st_size  # one shard of each split
    assert taken["train"] == (train_before, train_before)
    for split in ("val", "test"):
        size, copied = taken[split]
        assert 0 < size == copied < (after / "data" / split / "00000.jsonl").stat().st_size
    c = counts(after)
    # every example written before in the same split is copied: all but the new commit's
    # and those of the commits whose split moved (the first of val, the first of test)
    assert c["rows_encoded"] > 0 and c["example_lines_copied"] == len(written(after) & written(before))
    assert c["example_lines_copied"] > sum(examples(after).values()) // 2
    fresh = run_pipeline(tmp_path / "c", f"repo={repo.path}", "reuse=false", SHARED, f"builder={builder}",
                         "split.fractions=[0.5,0.25,0.25]")
    same_outputs(after, fresh, tmp_path / "shared", tmp_path / "c" / "cache")
    # the manifest's digests are those of the files as written, copied lines included
    for name, entry in manifest(after)["stages"]["build"]["outputs"].items():
        if name.startswith("data/"):
            assert entry["sha256"] == hashlib.sha256((after / name).read_bytes()).hexdigest(), name


def test_an_update_links_the_full_shards_it_would_write_again(repo, tmp_path, monkeypatch):
    import os
    import sqlite3

    from core.files import split_shards

    for k in range(8, 12):
        commit_round(repo, k)
    small = "writer.shard_mb=0.04"  # 40 KB: train spans several shards
    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}", SHARED, small, "split.fractions=[0.5,0.25,0.25]"]
    before = run_pipeline(tmp_path / "a", *shared)
    commit_round(repo, 99)
    taken = {}  # shard taking a copy ahead over -> (bytes it took, bytes the copy had)
    take = files._BackgroundWrites._take_ahead
    monkeypatch.setattr(files._BackgroundWrites, "_take_ahead", lambda self, ahead, size: taken.update(
        {Path(ahead.tmp).parent.name + "/" + Path(ahead.tmp).name.split(".")[1]: (size, ahead.wait())})
        or take(self, ahead, size))
    after = run_pipeline(tmp_path / "b", *shared)
    fresh = run_pipeline(tmp_path / "c", f"repo={repo.path}", "reuse=false", SHARED, small,
                         "split.fractions=[0.5,0.25,0.25]")
    for split in ("train", "val", "test"):  # the shards a fresh build writes, byte for byte
        mine, theirs = split_shards(after, split), split_shards(fresh, split)
        assert [p.name for p in mine] == [p.name for p in theirs], split
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(mine, theirs)), split
    # train grew at its end: its full shards are the earlier run's files, its last one was
    # copied and grown
    was, now = split_shards(before, "train"), split_shards(after, "train")
    assert len(was) >= 3 and all(os.path.samefile(a, b) for a, b in zip(was[:-1], now))
    assert not os.path.samefile(was[-1], now[len(was) - 1])
    # the earlier last shard was copied into the shard of its number while the examples were built
    tail = was[-1].stat().st_size
    assert taken[f"train/{was[-1].stem}"] == (tail, tail)
    olds = {p.stat().st_ino for split in ("train", "val", "test") for p in split_shards(before, split)}
    linked = [p for split in ("train", "val", "test") for p in split_shards(after, split) if p.stat().st_ino in olds]
    assert counts(after)["example_shards_linked"] == len(linked)
    assert "example_shards_linked" not in counts(before)
    for name, entry in manifest(after)["stages"]["build"]["outputs"].items():
        if name.startswith("data/"):  # linked shards' digests come from the cache: still right
            assert entry["sha256"] == hashlib.sha256((after / name).read_bytes()).hexdigest(), name
    # a third build keeps its own shards and the second's, and forgets the first's
    commit_round(repo, 100)
    third = run_pipeline(tmp_path / "d", *shared)
    assert counts(third)["example_shards_linked"] >= len(was) - 1
    folder = tmp_path / "shared" / KEPT_LINES_DIR
    with sqlite3.connect(tmp_path / "shared" / KEPT_LINES_FILE) as conn:
        named = {n for (n,) in conn.execute("SELECT name FROM kept_lines")}
        assert conn.execute("SELECT count(DISTINCT build) FROM kept_lines").fetchone() == (2,)
    assert {p.name for p in folder.iterdir()} == named
    ino = {os.stat(folder / n).st_ino for n in named}
    last_two = {p.stat().st_ino for run in (after, third) for split in ("train", "val", "test")
                for p in split_shards(run, split)}
    assert ino == last_two
    gone = olds - last_two  # the first build's shards neither later build linked: forgotten
    assert gone and not gone & ino


def test_a_shard_that_cannot_be_linked_is_written(repo, tmp_path, monkeypatch):
    from plugins import writers

    small = "writer.shard_mb=0.01"
    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}", SHARED, small]
    run_pipeline(tmp_path / "a", *shared)
    commit_round(repo, 99)
    monkeypatch.setattr(writers._Outputs, "link", lambda self, *args, **kwargs: False)  # another file system
    after = run_pipeline(tmp_path / "b", *shared)
    assert "example_shards_linked" not in counts(after) and counts(after)["example_lines_copied"] > 0
    fresh = run_pipeline(tmp_path / "c", f"repo={repo.path}", "reuse=false", SHARED, small)
    same_outputs(after, fresh, tmp_path / "shared", tmp_path / "c" / "cache")


def test_a_row_is_copied_only_into_the_split_it_was_written_in(repo, tmp_path):
    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}", SHARED]
    run_pipeline(tmp_path / "a", *shared, "split.fractions=[0.8,0.1,0.1]")
    moved = run_pipeline(tmp_path / "b", *shared, "split.fractions=[0.5,0.25,0.25]")
    c = counts(moved)
    # the rows of commits that left train are built again (from the build cache), the rest copied
    assert 0 < c["example_lines_copied"] < sum(examples(moved).values())
    assert c["rows_encoded"] == 0
    fresh = run_pipeline(tmp_path / "c", f"repo={repo.path}", "reuse=false", SHARED, "split.fractions=[0.5,0.25,0.25]")
    same_outputs(moved, fresh, tmp_path / "shared", tmp_path / "c" / "cache")


def test_an_output_changed_after_it_was_kept_is_not_copied(repo, tmp_path):
    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}", SHARED]
    first = run_pipeline(tmp_path / "a", *shared)
    with open(first / "data" / "train" / "00000.jsonl", "ab") as fh:  # the kept file is the same file
        fh.write(b'{"edited": true}\n')
    again = run_pipeline(tmp_path / "b", *shared)
    n = examples(again)
    assert n["train"] > 0 and counts(again)["example_lines_copied"] == n["val"] + n["test"]
    # the first run kept three files: the changed one is forgotten, the second run keeps three
    assert len(list((tmp_path / "shared" / KEPT_LINES_DIR).iterdir())) == 5
    fresh = run_pipeline(tmp_path / "c", f"repo={repo.path}", "reuse=false", SHARED)
    same_outputs(again, fresh, tmp_path / "shared", tmp_path / "c" / "cache")


def test_writers_without_line_files_keep_no_lines(repo, tmp_path):
    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}", SHARED, "writer=parquet"]
    run_pipeline(tmp_path / "a", *shared)
    again = run_pipeline(tmp_path / "b", *shared)
    assert "example_lines_copied" not in counts(again) and counts(again)["rows_encoded"] == 0
    assert not (tmp_path / "shared" / KEPT_LINES_DIR).exists()


def test_kept_examples_are_written_as_their_lines_and_read_back_whole(tmp_path):
    rows = [{"id": f"x{i}", "split": "train", "input_ids": [i, i + 1], "n_tokens": 2, "n_target_tokens": 1,
             "commit": "c", "change": "added"} for i in range(4)]
    lines = [fast_json_line(r) for r in rows]
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(lines))
    keys = [bytes([i]) * 20 for i in range(4)]
    keeper = KeptLines(tmp_path / "cache", "base", 1 << 20)
    for r, k in zip(rows, keys):
        keeper.note(r, k, truncated=(k == keys[2]))
    ends = [sum(map(len, lines[:i + 1])) for i in range(4)]
    assert keeper.keep(path, "train", 0, rows, ends)
    keeper.close()

    later = KeptLines(tmp_path / "cache", "base", 1 << 20)
    assert later.find(keys[0], "val", rows[0]) is None  # kept for train only
    assert KeptLines(tmp_path / "cache", "other", 1 << 20).find(keys[0], "train", rows[0]) is None
    hits = [later.find(k, "train", r) for k, r in zip(keys, rows)]
    assert [truncated for _, truncated in hits] == [False, False, True, False]
    kept = [example for example, _ in hits]
    assert all(type(e) is KeptExample for e in kept) and kept[1]["n_tokens"] == 2
    fresh = {"id": "new", "split": "train", "input_ids": [9], "n_tokens": 1, "n_target_tokens": 1,
             "commit": "d", "change": "modified"}
    # lines 0-1 are one run, then a new example, then lines 3 and 2 (out of their order)
    seq = ExampleRows([kept[0], kept[1], fresh, kept[3], kept[2]])
    out = io.BytesIO()
    ends = seq.write_lines(out, fast_json_line)
    written = [lines[0], lines[1], fast_json_line(fresh), lines[3], lines[2]]
    assert out.getvalue() == b"".join(written)
    assert ends == [sum(map(len, written[:i + 1])) for i in range(5)]
    # a writer that reads rows gets each kept example whole
    assert list(seq)[3] == json.loads(lines[3]) and seq[0] == rows[0]
    later.close()


def test_find_all_finds_rows_read_from_chunks_jsonl_and_plain_rows_alike(tmp_path):
    from core.changes import read_changes

    fields = [{"id": f"u{i}", "repo": "r", "commit": f"c{i % 2}", "time": "2024-01-01T00:00:00+00:00",
               "change": "modified" if i % 2 else "added", "old_qualname": None, "new_code": "x" * i}
              for i in range(4)]
    chunks = tmp_path / "chunks.jsonl"
    chunks.write_bytes(b"".join(fast_json_line(f) for f in fields))
    changes: list = read_changes(chunks)
    changes[3] = dict(fields[3])  # a builder's own row, not read from a file
    examples = [{"id": f["id"], "split": "train", "input_ids": [1], "n_tokens": 10 + i, "n_target_tokens": i,
                 "commit": f["commit"], "change": f["change"]} for i, f in enumerate(fields)]
    lines = [fast_json_line(e) for e in examples]
    out = tmp_path / "train.jsonl"
    out.write_bytes(b"".join(lines))
    keys = [bytes([65 + i]) * 20 for i in range(4)]
    keeper = KeptLines(tmp_path / "cache", "base", 1 << 20)
    for e, k in zip(examples, keys):
        keeper.note(e, k, truncated=k == keys[1])
    assert keeper.keep(out, "train", 0, examples, [sum(map(len, lines[:i + 1])) for i in range(4)])
    keeper.close()

    later = KeptLines(tmp_path / "cache", "base", 1 << 20)
    rows = [keys[0], keys[1], b"z" * 20, keys[3], keys[2]]
    splits = ["train", "train", "train", "train", "val"]  # the last is kept for train only
    found = later.find_all(rows, splits, [changes[0], changes[1], changes[2], changes[3], changes[2]])
    assert sorted(found) == [0, 1, 3]
    for i, k in ((0, 0), (1, 1), (3, 3)):
        example, truncated = found[i]
        assert dict(example) == {"id": f"u{k}", "split": "train", "n_tokens": 10 + k, "n_target_tokens": k,
                                 "commit": fields[k]["commit"], "change": fields[k]["change"]}
        assert truncated == (k == 1) and example.load() == json.loads(lines[k])
    assert later.find(keys[1], "train", changes[1])[0] == found[1][0]
    later.close()


def test_a_builder_that_changes_the_examples_it_assembled_gets_no_kept_lines(repo, tmp_path, monkeypatch):
    from plugins.builders import CommitBuilder

    assembled = CommitBuilder.build

    def stamped(self, changes, splits, fmt, tokenizer, stats, memo=None):
        examples = assembled(self, changes, splits, fmt, tokenizer, stats, memo)
        return [{**ex, "kind": f"{ex['kind']}/{len(examples)}"} for ex in examples]  # depends on every row

    monkeypatch.setattr(CommitBuilder, "build", stamped)
    monkeypatch.setattr(CommitBuilder, "examples_as_assembled", False)
    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}", SHARED]
    run_pipeline(tmp_path / "a", *shared)
    commit_round(repo, 99)
    after = run_pipeline(tmp_path / "b", *shared)
    assert "example_lines_copied" not in counts(after) and counts(after)["rows_reused"] > 0
    fresh = run_pipeline(tmp_path / "c", f"repo={repo.path}", "reuse=false", SHARED)
    same_outputs(after, fresh, tmp_path / "shared", tmp_path / "c" / "cache")


def test_a_file_holding_more_than_its_lines_is_not_kept(tmp_path):
    rows = [{"id": "a", "n_tokens": 1, "n_target_tokens": 1}, {"id": "b", "n_tokens": 2, "n_target_tokens": 1}]
    lines = [fast_json_line(r) for r in rows]
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"# header\n" + b"".join(lines))
    keeper = KeptLines(tmp_path / "cache", "base", 1 << 20)
    for i, r in enumerate(rows):
        keeper.note(r, bytes([i]) * 20, truncated=False)
    assert not keeper.keep(path, "train", 0, rows, [len(lines[0]), len(lines[0]) + len(lines[1])])
    path.write_bytes(b"".join(lines))
    assert keeper.keep(path, "train", 0, rows, [len(lines[0]), len(lines[0]) + len(lines[1])])
    keeper.close()


def test_a_kept_example_of_a_path_that_is_not_utf8_reads_back(tmp_path):
    from core.files import json_line

    odd = b"src/caf\xe9.rs".decode("utf-8", "surrogateescape")
    row = {"id": "a", "path": odd, "n_tokens": 1, "n_target_tokens": 1, "commit": "c", "change": "added"}
    line = json_line(row)
    path = tmp_path / "train.jsonl"
    path.write_bytes(line)
    keeper = KeptLines(tmp_path / "cache", "base", 1 << 20)
    keeper.note(row, b"k" * 20, truncated=False)
    assert keeper.keep(path, "train", 0, [row], [len(line)])
    keeper.close()
    later = KeptLines(tmp_path / "cache", "base", 1 << 20)
    kept, _ = later.find(b"k" * 20, "train", row)
    assert kept.load()["path"] == odd and ExampleRows([kept])[0] == row
    later.close()


def test_a_failed_build_leaves_no_copy_ahead_even_one_its_tokenizer_thread_starts_later(repo, tmp_path, monkeypatch):
    import threading
    import time

    from core import build

    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}", SHARED]
    run_pipeline(tmp_path / "a", *shared)
    commit_round(repo, 99)
    prepare = build._prepare
    started = threading.Event()

    def slow(*args):  # the train copy is asked for after the stage failed
        started.set()
        time.sleep(1.0)
        prepare(*args)

    def failing(*args, **kwargs):
        started.wait(5)
        raise RuntimeError("dedup failed")

    monkeypatch.setattr(build, "_prepare", slow)
    monkeypatch.setattr(build, "deduplicate", failing)
    with pytest.raises(RuntimeError, match="dedup failed"):
        run_pipeline(tmp_path / "b", *shared)
    for thread in threading.enumerate():  # the tokenizer's thread outlives the stage
        if thread.name == "commitforge-tokenizer":
            thread.join(10)
    assert not files._AHEAD
    assert not list((tmp_path / "b" / "run" / "data").glob(".*.tmp"))
