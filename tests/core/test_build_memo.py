"""What the build stage keeps per row: a rebuild encodes and deduplicates only rows it has
not seen, and its outputs are byte for byte those of a build that computes everything."""

from __future__ import annotations

import json
import marshal
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from core import build_memo, kept_lines
from core.build import _row_features
from core.build_memo import BuildMemo, decode, encode
from core.errors import CommitforgeError
from core.examples import Built, TrainedRuns

from ..conftest import (
    ScriptedRepo,
    manifest,
    read_chunks,
    read_split,
    run_pipeline,
    split_bytes,
)


def body(name: str, n: int, k: int) -> str:
    lines = "\n".join(f"    let v{i} = {name}_step({i}, {k});" for i in range(n))
    return f"pub fn {name}(x: u32) -> u32 {{\n{lines}\n    x\n}}\n"


def commit_round(r: ScriptedRepo, k: int) -> str:
    return r.commit(f"tune step {k}", {"crates/app/src/lib.rs": "".join(body(f"f{j}", 3 + j, k) for j in range(5)),
                                "crates/app/src/big.rs": body("big", 400 + k, k)})  # over 256 tokens


@pytest.fixture
def repo(scripted_repo: ScriptedRepo) -> ScriptedRepo:
    for k in range(8):
        commit_round(scripted_repo, k)
    return scripted_repo


def counts(run_dir) -> dict:
    return manifest(run_dir)["stages"]["build"]["counts"]


def same_outputs(a, b, cache_a, cache_b) -> None:
    for name in ("train", "val", "test"):
        assert split_bytes(a, name) == split_bytes(b, name), name
    # the tokenizer's cache path aside, the stats (truncations, skips, lengths) are the same
    assert (a / "stats.json").read_text().replace(str(cache_a), "") == \
        (b / "stats.json").read_text().replace(str(cache_b), "")


@pytest.mark.parametrize("builder", ["commit", "fim"])
def test_a_rebuild_reuses_every_example_and_writes_what_a_fresh_build_writes(repo, tmp_path, builder):
    # the tokenizer learns from the first commits only, so it stays the same when the split moves
    settings = [f"repo={repo.path}", f"builder={builder}", "builder.max_tokens=256", "dedup.near=false",
                "tokenizer.max_training_chars=20000"]
    first = run_pipeline(tmp_path / "a", *settings, f"cache_dir={tmp_path / 'shared'}")
    c = counts(first)
    assert c["rows_encoded"] > 0 and c["rows_reused"] == 0
    skips = manifest(first)["stages"]["build"]["skips"]
    assert c.get("truncated_train", 0) + skips.get("target_too_long", 0) > 0  # big.rs does not fit
    # other split fractions move rows between splits: the kept examples take their new split
    moved = [*settings, "split.fractions=[0.5,0.25,0.25]"]
    again = run_pipeline(tmp_path / "b", *moved, f"cache_dir={tmp_path / 'shared'}")
    c = counts(again)
    assert c["rows_encoded"] == 0 and c["rows_reused"] > 0
    fresh = run_pipeline(tmp_path / "c", *moved, "reuse=false")
    assert "rows_reused" not in counts(fresh)
    same_outputs(again, fresh, tmp_path / "shared", tmp_path / "c" / "cache")
    assert json.loads((again / "stats.json").read_text())["splits"]["test"]["examples"] > 0


@pytest.mark.parametrize("wide", [False, True])
def test_an_encoded_layout_comes_back_as_assemble_takes_it(wide):
    from core.build_memo import decode_layout, encode_layout
    from core.examples import Segment

    segments = [Segment("<fim>", "<|cf_ctx|>", special=True), Segment("context", "fn a()", drop_rank=2),
                Segment("old_code", "", cuttable=True), Segment("close", "<|cf_end|>", special=True, bracket=True),
                Segment("new_code", "fn b()", target=True)]
    big = 70_000 if wide else 7
    encoded = [np.array([1, 2, big], dtype=np.int32), np.empty(0, dtype=np.int32), np.array([4], dtype=np.int32)]
    meta, ids = encode_layout(segments, encoded)
    assert len(ids) == 4 * (4 if wide else 2)  # 16-bit ids when they fit
    back, ids_back = decode_layout((meta, ids))
    assert [(s.name, s.special, s.target, s.drop_rank, s.cuttable, s.bracket) for s in back] == \
        [(s.name, s.special, s.target, s.drop_rank, s.cuttable, s.bracket) for s in segments]
    assert [s.text for s in back if s.special] == ["<|cf_ctx|>", "<|cf_end|>"]  # content texts are not kept
    assert [a.tolist() for a in ids_back] == [a.tolist() for a in encoded]
    assert all(a.dtype == np.int32 for a in ids_back)
    with pytest.raises(ValueError):
        decode_layout((meta, ids[:-2]))  # ids cut short: not taken


def test_a_sweep_job_keeps_layouts_that_another_max_tokens_only_fits(repo, tmp_path, monkeypatch):
    import core.build

    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}", "dedup.near=false",
              "tokenizer.max_training_chars=20000"]
    monkeypatch.setattr(core.build, "_keeps_layouts", lambda: True)  # a job of a sweep over builder settings
    first = run_pipeline(tmp_path / "a", *shared, "builder.max_tokens=256")
    assert "layouts_reused" not in counts(first)
    monkeypatch.undo()
    other = run_pipeline(tmp_path / "b", *shared, "builder.max_tokens=200")
    c = counts(other)
    assert c["rows_reused"] == 0 and c["layouts_reused"] == c["rows_encoded"] > 0
    fresh = run_pipeline(tmp_path / "c", *shared[:1], *shared[2:], "builder.max_tokens=200", "reuse=false")
    same_outputs(other, fresh, tmp_path / "shared", tmp_path / "c" / "cache")
    # a format lays rows out otherwise: none of the kept layouts serve it
    starcoder = run_pipeline(tmp_path / "d", *shared, "builder.max_tokens=200", "format=starcoder2")
    assert "layouts_reused" not in counts(starcoder)
    # a single run keeps none: another max_tokens after it lays its rows out again
    alone = [shared[0], f"cache_dir={tmp_path / 'alone'}", *shared[2:]]
    run_pipeline(tmp_path / "e", *alone, "builder.max_tokens=256")
    assert "layouts_reused" not in counts(run_pipeline(tmp_path / "f", *alone, "builder.max_tokens=200"))


@pytest.mark.parametrize("change", ["builder.max_tokens=512", "format=starcoder2", "tokenizer.vocab_size=400"])
def test_examples_are_not_reused_across_settings_that_change_them(repo, tmp_path, change):
    shared = f"cache_dir={tmp_path / 'shared'}"
    run_pipeline(tmp_path / "a", f"repo={repo.path}", "builder.max_tokens=256", shared)
    other = run_pipeline(tmp_path / "b", f"repo={repo.path}", "builder.max_tokens=256", change, shared)
    assert counts(other)["rows_reused"] == 0
    fresh = run_pipeline(tmp_path / "c", f"repo={repo.path}", "builder.max_tokens=256", change)
    same_outputs(other, fresh, tmp_path / "shared", tmp_path / "c" / "cache")


def test_a_build_with_other_builder_settings_takes_the_pieces_an_earlier_build_encoded(repo, tmp_path, monkeypatch):
    from plugins.tokenizers import _PieceStore

    monkeypatch.setattr(_PieceStore, "LOAD_CHARS", 1)
    monkeypatch.setattr(_PieceStore, "SAVE_CHARS", 1)
    loads = []
    load = _PieceStore.load
    monkeypatch.setattr(_PieceStore, "load", lambda self: loads.append(load(self)) or loads[-1])
    shared = f"cache_dir={tmp_path / 'shared'}"
    run_pipeline(tmp_path / "a", f"repo={repo.path}", "builder.max_tokens=256", shared)
    assert list((tmp_path / "shared" / "pieces-f1").glob("*.lz4"))
    assert loads == [None]  # nothing kept yet
    other = run_pipeline(tmp_path / "b", f"repo={repo.path}", "builder.max_tokens=320", shared)
    assert counts(other)["rows_encoded"] > 0  # other examples, from the pieces the first build encoded
    assert len(loads) == 2 and loads[1] is not None and len(loads[1][0]) > 0
    fresh = run_pipeline(tmp_path / "c", f"repo={repo.path}", "builder.max_tokens=320", "reuse=false")
    same_outputs(other, fresh, tmp_path / "shared", tmp_path / "c" / "cache")
    assert (tmp_path / "c" / "cache").is_dir() and not (tmp_path / "c" / "cache" / "pieces-f1").exists()  # reuse=false


def test_a_new_commit_encodes_only_its_own_rows(repo, tmp_path):
    # a tokenizer trained on the train split's first characters, which the new commit leaves alone
    shared = [f"cache_dir={tmp_path / 'shared'}", "tokenizer.max_training_chars=20000"]
    before = run_pipeline(tmp_path / "a", f"repo={repo.path}", *shared)
    head = commit_round(repo, 99)
    after = run_pipeline(tmp_path / "b", f"repo={repo.path}", *shared)
    new = [r for r in read_chunks(after) if r["commit"] == head]
    c = counts(after)
    assert 0 < c["rows_encoded"] <= len(new)
    assert c["rows_reused"] > counts(before)["rows_encoded"] // 2
    fresh = run_pipeline(tmp_path / "c", f"repo={repo.path}", "reuse=false", shared[1])
    same_outputs(after, fresh, tmp_path / "shared", tmp_path / "c" / "cache")


def test_kept_results_round_trip_examples_and_skips():
    change = {"id": "x1", "repo": "r", "commit": "c", "time": 5, "path": "a.rs", "qualname": "a::f",
              "change": "modified", "kind": "fn"}
    for ids in (np.array([3, 70000, 5], dtype=np.int32), np.array([1, 2, 65535], dtype=np.int32),
                np.empty(0, dtype=np.int32)):
        example = {"input_ids": ids, "labels": TrainedRuns(((1, 3),)), "segments": [["new_code", 0, 3]],
                   "n_tokens": len(ids), "n_target_tokens": 2}
        back = decode(encode(Built(example, None, True)), change, "val")
        assert back.truncated and back.skip is None
        ex = back.example
        assert ex["input_ids"].dtype == np.int32 and ex["input_ids"].tolist() == ids.tolist()
        assert ex["labels"] == ((1, 3),) and isinstance(ex["labels"], TrainedRuns)
        assert ex["segments"] == [["new_code", 0, 3]] and ex["split"] == "val" and ex["qualname"] == "a::f"
    skipped = decode(encode(Built(None, "target_too_long")), change, "train")
    assert skipped.example is None and skipped.skip == "target_too_long" and not skipped.truncated


def test_only_the_examples_of_the_settings_used_last_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(build_memo, "BASES_KEPT", 2)
    change = {"id": "x", "repo": "r", "commit": "c", "time": 1, "path": "p", "qualname": "q", "change": "added",
              "kind": "fn"}
    built = Built({"input_ids": np.array([1, 2], dtype=np.int32), "labels": TrainedRuns(((0, 2),)),
                   "segments": [["code", 0, 2]], "n_tokens": 2, "n_target_tokens": 2})
    stale = BuildMemo(tmp_path, "one")  # a run that started first and stores last
    stale.get_many([b"row"])
    for base in ("one", "two", "three"):
        memo = BuildMemo(tmp_path, base)
        memo.put_many([(b"row", *encode(built))])
        memo.close()
    stale.put_many([(b"late", *encode(built))])  # for a base dropped meanwhile
    stale.close()
    memo = BuildMemo(tmp_path, "three")
    assert memo.get_many([b"late"]) == {}  # its id is never given to another base
    memo.close()
    with sqlite3.connect(tmp_path / f"build-f{build_memo.BUILD_MEMO_FORMAT}.sqlite") as conn:
        held = dict(conn.execute("SELECT bases.base, count(*) FROM entries JOIN bases ON bases.id = entries.base "
                                 "GROUP BY bases.base"))
    assert held == {"two": 1, "three": 1}  # "one" went when "three" was first used
    BuildMemo(tmp_path, "four").get_many([])  # drops "two", and what was stored late for "one"
    with sqlite3.connect(tmp_path / f"build-f{build_memo.BUILD_MEMO_FORMAT}.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM entries WHERE base NOT IN (SELECT id FROM bases)").fetchone() == (0,)
        assert [b for (b,) in conn.execute("SELECT base FROM bases ORDER BY id")] == ["three", "four"]
    kept = BuildMemo(tmp_path, "three").get_many([b"row", b"other"])
    assert list(kept) == [b"row"]
    assert decode(kept[b"row"], change, "test").example["input_ids"].tolist() == [1, 2]


def test_dedup_features_are_reused_across_thresholds_and_give_the_fresh_result(repo, tmp_path):
    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}", "tokenizer.max_training_chars=20000"]
    first = run_pipeline(tmp_path / "a", *shared, "dedup.threshold=0.9")
    assert counts(first)["dedup_rows_computed"] == counts(first)["unit_changes"]
    again = run_pipeline(tmp_path / "b", *shared, "dedup.threshold=0.5")
    assert counts(again)["dedup_rows_computed"] == 0
    skips = manifest(again)["stages"]["build"]["skips"]
    assert skips.get("near_duplicate", 0) > manifest(first)["stages"]["build"]["skips"].get("near_duplicate", 0)
    fresh = run_pipeline(tmp_path / "c", f"repo={repo.path}", "reuse=false", "tokenizer.max_training_chars=20000",
                         "dedup.threshold=0.5")
    assert "dedup_rows_computed" not in counts(fresh)
    same_outputs(again, fresh, tmp_path / "shared", tmp_path / "c" / "cache")
    # another comparison is other features
    other = run_pipeline(tmp_path / "d", *shared, "dedup.compare=code")
    assert counts(other)["dedup_rows_computed"] == counts(other)["unit_changes"]


def test_a_failed_background_store_is_raised_when_the_memo_closes(tmp_path):
    memo = BuildMemo(tmp_path, "settings")
    memo.get_many([b"row"])  # creates the tables
    conn = sqlite3.connect(memo.path)
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON entries BEGIN SELECT RAISE(ABORT, 'store refused'); END")
    conn.commit()
    conn.close()
    memo.put_many([(b"row", b"a", b"b")])
    with pytest.raises(CommitforgeError, match=r"the build cache .* cannot be used \(store refused\).*reuse=false"):
        memo.close()


def test_a_corrupt_build_cache_is_one_clear_error(repo, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"build-f{build_memo.BUILD_MEMO_FORMAT}.sqlite").write_bytes(b"not a database, " * 1000)
    with pytest.raises(CommitforgeError, match=r"the build cache .* cannot be used .*delete it"):
        run_pipeline(tmp_path, f"repo={repo.path}", f"cache_dir={cache}")
    assert run_pipeline(tmp_path / "off", f"repo={repo.path}", f"cache_dir={cache}", "reuse=false").is_dir()


def test_train_on_a_segment_only_some_rows_have_is_checked_over_every_row(scripted_repo, tmp_path):
    r = scripted_repo
    r.commit("add", {"crates/app/src/lib.rs": "pub mod a;\n", "crates/app/src/a.rs": body("f", 3, 0)})
    for k in range(1, 6):
        r.commit(f"tune {k}", {"crates/app/src/a.rs": body("f", 3, k)})
    r.commit("move a to b", {"crates/app/src/lib.rs": "pub mod b;\n",
                             "crates/app/src/b.rs": body("f", 3, 5) + "pub fn g() -> u8 {\n    1\n}\n"},
             renames={"crates/app/src/a.rs": "crates/app/src/b.rs"})
    shared = [f"repo={r.path}", f"cache_dir={tmp_path / 'shared'}", "split.fractions=[0.9,0,0.1]"]
    for name in ("a", "b"):  # computed, then every example from the build cache
        run_dir = run_pipeline(tmp_path / name, *shared, "builder.train_on=[old_path]")
    assert counts(run_dir)["rows_encoded"] == 0
    # only the rows of the moved file have an old path: the other rows train on nothing
    test = read_split(run_dir, "test")
    assert any(e["path"] == "crates/app/src/b.rs" and e["n_target_tokens"] for e in test)
    for name in ("c", "d"):
        with pytest.raises(CommitforgeError, match=r"builder.train_on=\['nope'\] names no segment"):
            run_pipeline(tmp_path / name, *shared, "builder.train_on=[nope]")


def test_an_entry_damaged_on_disk_is_made_again_not_used(repo, tmp_path, monkeypatch):
    from core import build

    # the dedup features kept entry by entry, not in one block (which holds them after a cold build)
    monkeypatch.setattr(build, "FEATURES_STALE", 1.0)
    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}"]
    first = run_pipeline(tmp_path / "a", *shared)
    path = tmp_path / "shared" / f"build-f{build_memo.BUILD_MEMO_FORMAT}.sqlite"
    with sqlite3.connect(path) as conn:  # one byte of one example's token ids, one dedup key
        rowid, ids = conn.execute("SELECT rowid, b FROM entries WHERE length(b) > 8 AND length(a) > 40 "
                                  "ORDER BY rowid LIMIT 1").fetchone()
        conn.execute("UPDATE entries SET b = ? WHERE rowid = ?", (bytes([ids[0] ^ 1]) + ids[1:], rowid))
        (rowid,) = conn.execute("SELECT rowid FROM entries WHERE length(a) = 16 ORDER BY rowid LIMIT 1").fetchone()
        conn.execute("UPDATE entries SET a = ? WHERE rowid = ?", (bytes(16), rowid))
        assert conn.execute("SELECT count(*) FROM block_files").fetchone() == (0,)
    # without the example lines kept from the first run, which would be copied unread
    with sqlite3.connect(tmp_path / "shared" / f"lines-f{kept_lines.KEPT_LINES_FORMAT}.sqlite") as conn:
        conn.execute("DELETE FROM kept_lines")
    again = run_pipeline(tmp_path / "b", *shared)
    assert counts(again)["build_cache_damaged"] == 2
    assert counts(again)["rows_encoded"] == 1 and counts(again)["dedup_rows_computed"] == 1
    same_outputs(again, first, tmp_path / "shared", tmp_path / "shared")


def test_a_cache_named_another_way_or_moved_still_gives_its_examples(repo, tmp_path):
    run_pipeline(tmp_path / "a", f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "shared").rename(tmp_path / "elsewhere" / "cache")
    spelled = tmp_path / "elsewhere" / ".." / "elsewhere" / "cache"
    moved = run_pipeline(tmp_path / "b", f"repo={repo.path}", f"cache_dir={spelled}")
    assert counts(moved)["rows_encoded"] == 0 and counts(moved)["rows_reused"] > 0


@pytest.mark.parametrize("unit", ["unit", "file"])
def test_the_file_builder_reuses_the_examples_of_its_snapshot_rows(repo, tmp_path, unit):
    settings = [f"repo={repo.path}", "builder=file", f"builder.unit={unit}", "split=path"]
    run_pipeline(tmp_path / "a", *settings, f"cache_dir={tmp_path / 'shared'}")
    again = run_pipeline(tmp_path / "b", *settings, f"cache_dir={tmp_path / 'shared'}")
    assert counts(again)["rows_encoded"] == 0 and counts(again)["rows_reused"] > 0
    fresh = run_pipeline(tmp_path / "c", *settings, "reuse=false")
    same_outputs(again, fresh, tmp_path / "shared", tmp_path / "c" / "cache")


def _spy_on_store_reads(monkeypatch) -> tuple[list[tuple[BuildMemo, int]], list[BuildMemo]]:
    """(store, rows) of every ``BuildMemo.get_many`` from now on, and the stores asked for
    a block of dedup features. The stores themselves are kept, not their id(): a store
    freed mid-run may leave its id to the next one."""
    asked: list[tuple[BuildMemo, int]] = []
    dedup_stores: list[BuildMemo] = []
    get_many, last_features = build_memo.BuildMemo.get_many, build_memo.BuildMemo.last_features

    def spy(self, rows, base=None):
        if base is None:  # the store's own entries (not the rows' encoded layouts)
            asked.append((self, len(rows)))
        return get_many(self, rows, base)

    def spy_last(self, scope, **settings):
        dedup_stores.append(self)
        return last_features(self, scope, **settings)

    monkeypatch.setattr(build_memo.BuildMemo, "get_many", spy)
    monkeypatch.setattr(build_memo.BuildMemo, "last_features", spy_last)
    return asked, dedup_stores


def test_an_update_takes_the_dedup_features_of_the_last_builds_rows_in_one_block(repo, tmp_path, monkeypatch):
    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}", "tokenizer.max_training_chars=20000"]
    run_pipeline(tmp_path / "a", *shared)
    commit_round(repo, 99)
    asked, dedup_stores = _spy_on_store_reads(monkeypatch)
    after = run_pipeline(tmp_path / "b", *shared)
    c = counts(after)
    # the dedup store is asked for the new commit's rows only, entry by entry
    assert c["dedup_rows_computed"] > 0 and len(dedup_stores) == 1
    assert [n for store, n in asked if store is dedup_stores[0]] == [c["dedup_rows_computed"]]
    monkeypatch.undo()
    fresh = run_pipeline(tmp_path / "c", f"repo={repo.path}", "reuse=false", "tokenizer.max_training_chars=20000")
    same_outputs(after, fresh, tmp_path / "shared", tmp_path / "c" / "cache")
    (path,) = block_files(tmp_path / "shared", ".blk")  # one byte of the block changed on disk
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    again = run_pipeline(tmp_path / "d", *shared)
    # the block held its rows' features alone (not kept entry by entry too): they are computed again
    assert counts(again)["build_cache_damaged"] == 1
    assert counts(again)["dedup_rows_computed"] == counts(again)["unit_changes"]
    same_outputs(again, fresh, tmp_path / "shared", tmp_path / "c" / "cache")


def _noted_row_features(task):
    """build._row_features, noting each share (its first row's offset, its row count) in a
    file named after the process that computed it (a task is pickled by name)."""
    if task is not None:
        shares = Path(os.environ["CF_TEST_SHARES"])
        (shares / f"{os.getpid()}-{task[2][0][0]}").write_text(str(len(task[2])))
    return _row_features(task)


@pytest.mark.parametrize(("setting", "workers"), [(None, 2), ("dedup.near=false", 3), ("dedup.exact=false", 3)])
def test_dedup_features_computed_by_the_executors_workers_are_those_computed_here(repo, tmp_path, monkeypatch,
                                                                                  setting, workers):
    from core import build

    shared = [f"repo={repo.path}", "tokenizer.max_training_chars=20000", *([setting] if setting else [])]
    here = run_pipeline(tmp_path / "a", *shared, f"cache_dir={tmp_path / 'a-cache'}", "executor.workers=1")
    shares = tmp_path / "shares"
    shares.mkdir()
    monkeypatch.setattr(build, "_row_features", _noted_row_features)
    monkeypatch.setenv("CF_TEST_SHARES", str(shares))  # the forked workers inherit it
    monkeypatch.setattr(build, "PARALLEL_FEATURE_ROWS", 1)
    there = run_pipeline(tmp_path / "b", *shared, f"cache_dir={tmp_path / 'b-cache'}", f"executor.workers={workers}")
    noted = {p.name: int(p.read_text()) for p in shares.iterdir()}
    # one share of contiguous rows per worker, computed outside this process, together every row
    assert len(noted) == workers and str(os.getpid()) not in {name.split("-")[0] for name in noted}
    assert sum(noted.values()) == counts(there)["dedup_rows_computed"] == counts(here)["dedup_rows_computed"]
    same_outputs(there, here, tmp_path / "b-cache", tmp_path / "a-cache")
    # each row's own features, in the block the next build reads
    blocks = [[marshal.loads(p.read_bytes()) for p in block_files(tmp_path / cache, ".blk")] for cache in ("a-cache", "b-cache")]
    assert len(blocks[0]) == 1 and blocks[0] == blocks[1]


def block_files(cache: Path, suffix: str = "") -> list[Path]:
    """The files of the build cache (``suffix``: ``.blk`` for blocks of dedup features)."""
    folder = cache / build_memo.MEMO_FILES_DIR
    return sorted(p for p in folder.iterdir() if p.name.endswith(suffix)) if folder.is_dir() else []


def test_a_worker_refuses_a_chunks_file_other_than_the_one_the_build_read(tmp_path):
    from core.files import stat_key

    path = tmp_path / "chunks.jsonl"
    path.write_bytes(b'{"old_code": "a", "new_code": "b"}\n')
    task = (str(path), stat_key(path), [(0, path.stat().st_size)], "code", {"exact": True, "near": False, "num_perm": 2})
    assert len(_row_features(task).keys) == 1
    path.write_bytes(b'{"old_code": "c", "new_code": "d"}\n')  # the same size, written again
    os.utime(path, ns=(1, 1))
    with pytest.raises(CommitforgeError, match="changed while the build stage read it"):
        _row_features(task)


def test_features_merged_from_a_block_entries_and_computed_rows_are_each_rows_own():
    from core.dedup import features

    texts = [f"fn f{i}() {{ let x = {i % 5}; x + {i} }}" if i % 6 else "" for i in range(40)]
    settings = {"exact": True, "near": True, "num_perm": 16}
    whole = features(texts, **settings)
    rows = [bytes([i]) * 20 for i in range(40)]
    block_rows = list(range(0, 40, 3))  # every third row from a block (in another order there)
    src = np.array(block_rows[::-1], dtype=np.int64)
    block = build_memo.Features([whole.keys[i] for i in src.tolist()], whole.sig[src], whole.has[src])
    at = np.array(block_rows, dtype=np.int64)
    pos = {i: j for j, i in enumerate(src.tolist())}
    last = (at, np.array([pos[i] for i in block_rows], dtype=np.int64), block)
    todo = [i for i in range(40) if i % 3 and i % 2]
    computed = features([texts[i] for i in todo], **settings)
    entries = dict(zip([rows[i] for i in range(40)],
                       [(e[1], e[2]) for e in build_memo.dedup_entries(rows, whole)]))
    kept = {rows[i]: entries[rows[i]] for i in range(40) if i % 3 and not i % 2}
    merged = build_memo.merge_features(rows, kept, todo, computed, **settings, last=last)
    assert merged.keys == whole.keys
    assert (merged.has == whole.has).all()
    assert (merged.sig[whole.has] == whole.sig[whole.has]).all()


def test_the_block_of_features_is_written_again_only_when_many_rows_are_not_in_it(repo, tmp_path, monkeypatch):
    from core import build

    monkeypatch.setattr(build, "FEATURES_STALE", 0.5)
    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}", "tokenizer.max_training_chars=20000"]
    path = tmp_path / "shared" / f"build-f{build_memo.BUILD_MEMO_FORMAT}.sqlite"

    def block() -> bytes:
        (only,) = block_files(tmp_path / "shared", ".blk")
        return only.read_bytes()

    run_pipeline(tmp_path / "a", *shared)
    first = block()
    for k in (98, 99):  # each adds fewer rows than half: the first build's block stays
        commit_round(repo, k)
        if k == 99:  # an entry of a row the block does not have, damaged on disk: made again
            import marshal

            in_block = marshal.loads(first)[1]
            with sqlite3.connect(path) as conn:
                for rowid, row in conn.execute("SELECT rowid, row FROM entries WHERE length(a) = 16"):
                    if not any(in_block[j:j + 20] == row for j in range(0, len(in_block), 20)):
                        conn.execute("UPDATE entries SET a = ? WHERE rowid = ?", (bytes(16), rowid))
                        break
        after = run_pipeline(tmp_path / f"b{k}", *shared)
        assert block() == first
        computed = counts(after)["dedup_rows_computed"]
    assert computed > 0 and counts(after)["build_cache_damaged"] == 1
    fresh = run_pipeline(tmp_path / "c", f"repo={repo.path}", "reuse=false", "tokenizer.max_training_chars=20000")
    same_outputs(after, fresh, tmp_path / "shared", tmp_path / "c" / "cache")
    monkeypatch.setattr(build, "FEATURES_STALE", 0.0)
    run_pipeline(tmp_path / "d", *shared)
    assert block() != first


def test_builds_of_another_repository_in_the_same_cache_keep_their_own_block(repo, tmp_path, monkeypatch):
    other = ScriptedRepo(tmp_path / "other")
    for k in range(6):
        commit_round(other, 50 + k)
    settings = [f"cache_dir={tmp_path / 'shared'}", "tokenizer.max_training_chars=20000"]
    run_pipeline(tmp_path / "a", f"repo={repo.path}", *settings)
    run_pipeline(tmp_path / "o", f"repo={other.path}", *settings)
    commit_round(repo, 99)
    asked, dedup_stores = _spy_on_store_reads(monkeypatch)
    after = run_pipeline(tmp_path / "b", f"repo={repo.path}", *settings)
    # the repository's own block: only the new commit's rows are read entry by entry
    assert [n for store, n in asked if store is dedup_stores[0]] == [counts(after)["dedup_rows_computed"]]


def test_a_block_kept_with_other_dedup_switches_is_not_taken(tmp_path):
    from core.dedup import features

    rows = [bytes([i]) * 20 for i in range(4)]
    exact_only = features(["fn a() {}", "fn b() {}", "", "fn d() {}"], exact=True, near=False, num_perm=8)
    store = BuildMemo(tmp_path, "base")
    store.keep_features("scope", rows, exact_only)
    got = store.last_features("scope", exact=True, near=False, num_perm=8)
    assert got is not None and got[0] == rows and got[1].keys == exact_only.keys
    assert store.last_features("scope", exact=True, near=True, num_perm=8) is None
    assert store.last_features("scope", exact=False, near=False, num_perm=8) is None
    assert store.last_features("elsewhere", exact=True, near=False, num_perm=8) is None
    none = features([], exact=True, near=True, num_perm=8)  # a build whose rows all fell in a split gap
    store.keep_features("empty", [], none)
    got = store.last_features("empty", exact=True, near=True, num_perm=8)
    assert got is not None and got[0] == [] and got[1].sig.shape == (0, 8)
    store.close()


def test_a_build_that_waited_for_anothers_features_reads_the_block_it_kept(repo, tmp_path, monkeypatch):
    """Two builds of the same rows at once: the one that waits on the other's claim finds
    the features the other kept, and computes none."""
    import subprocess
    import sys

    from core import build
    from core.stage_cache import Claim

    settings = [f"repo={repo.path}", f"cache_dir={tmp_path / 'shared'}", "executor.workers=1", "progress=false"]
    monkeypatch.setattr(build, "PARALLEL_FEATURE_ROWS", 1)  # a small history's rows are worth a claim
    names = []

    def another_build_holds_it(root, name, *args, **kwargs):
        names.append(name)
        # the other build: a process of its own that computes the features and keeps them
        proc = subprocess.run([sys.executable, "-m", "core", *settings, f"out_dir={tmp_path / 'other'}"],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return Claim(waited=True)

    monkeypatch.setattr(build, "claim_for", another_build_holds_it)
    waited = run_pipeline(tmp_path / "b", *settings)
    assert len(names) == 1 and names[0].startswith("features-")
    assert counts(waited)["dedup_rows_computed"] == 0
    other = tmp_path / "other"
    assert counts(other)["dedup_rows_computed"] > 0
    same_outputs(waited, other, tmp_path / "shared", tmp_path / "shared")


def test_the_blocks_and_row_indexes_used_last_are_kept_and_reading_one_does_not_rewrite_it(tmp_path, monkeypatch):
    from core.build_memo import BLOCKS_KEPT, ROW_INDEXES_KEPT, RowIndexes
    from core.changes import RowIndex
    from core.dedup import Features

    clock = iter(range(1000, 2000))
    monkeypatch.setattr(build_memo.time, "time", lambda: float(next(clock)))
    feats = Features([b"k" * 16], np.zeros((1, 4), dtype=np.uint64), np.ones(1, dtype=bool))
    store = BuildMemo(tmp_path, "base")
    for k in range(BLOCKS_KEPT):
        store.keep_features(f"scope{k}", [bytes([k]) * 20], feats)
    store._wait()
    files = {p.name: p.stat().st_mtime_ns for p in block_files(tmp_path)}
    assert len(files) == BLOCKS_KEPT
    assert store.last_features("scope0", exact=True, near=True, num_perm=4)[0] == [b"\0" * 20]  # used again
    store.keep_features("scope1", [b"o" * 20], feats)  # replaced: its old file goes
    store.keep_features("scope_new", [b"n" * 20], feats)
    store._wait()
    kept = {scope for (scope,) in store._conn().execute("SELECT scope FROM block_files")}
    # scope2: used least lately; scope0 was read, which wrote none of the files again
    assert kept == {"scope0", "scope1", "scope_new", *(f"scope{k}" for k in range(3, BLOCKS_KEPT))}
    names = {n for (n,) in store._conn().execute("SELECT name FROM block_files")}
    assert {p.name for p in block_files(tmp_path)} == names and len(names) == BLOCKS_KEPT
    unchanged = {n for n in files if n in names}
    assert len(unchanged) == BLOCKS_KEPT - 2 and all((tmp_path / build_memo.MEMO_FILES_DIR / n).stat().st_mtime_ns
                                                     == files[n] for n in unchanged)
    assert store.last_features("scope1", exact=True, near=True, num_perm=4)[0] == [b"o" * 20]
    # files no entry names: a killed run's, removed once an hour old (a running one's are younger)
    strays = [tmp_path / build_memo.MEMO_FILES_DIR / f"stray{k}.blk" for k in range(2)]
    for stray in strays:
        stray.write_bytes(b"x")
    os.utime(strays[0], (0, 0))
    monkeypatch.undo()  # the clock again
    store.keep_features("scope1", [b"o" * 20], feats)
    store._wait()
    assert [p.exists() for p in strays] == [False, True]
    strays[1].unlink()
    # a block file another run removed meanwhile is a miss, not an error
    removed = next(iter(unchanged))
    (tmp_path / build_memo.MEMO_FILES_DIR / removed).unlink()
    assert sum(store.last_features(f"scope{k}", exact=True, near=True, num_perm=4) is None
               for k in (0, *range(3, BLOCKS_KEPT))) == 1
    store.close()

    indexes = RowIndexes(tmp_path)
    index = RowIndex([b"a" * 20], [10], [None])
    for k in range(ROW_INDEXES_KEPT):
        indexes.keep(f"{k}:1:1", "v", index)
    assert indexes.find("0:1:1", "v") is not None
    indexes.keep("new:1:1", "v", index)
    stats = {s.split()[0] for (s,) in indexes._conn().execute("SELECT stat FROM index_files")}
    assert stats == {"0:1:1", "new:1:1", *(f"{k}:1:1" for k in range(2, ROW_INDEXES_KEPT))}
    # each index's file and each block's, and no other
    named = {n for (n,) in indexes._conn().execute("SELECT name FROM index_files UNION SELECT name FROM block_files")}
    assert {p.name for p in block_files(tmp_path)} == named - {removed}
    assert len(named) == ROW_INDEXES_KEPT + BLOCKS_KEPT
    indexes.close()
