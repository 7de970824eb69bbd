"""An output that starts with a copy of a kept file's first bytes resumes that file's
sha256 from a saved state: its digest is still the sha256 of its bytes, and a state is
only used for the file it was saved for, unchanged."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import shutil
import sqlite3

import pytest

from core import files, hash_points
from core.hash_points import HASH_POINTS_FILE, HashPoints, Sha256, best_point

from ..conftest import ScriptedRepo, manifest, run_pipeline
from .test_build_memo import commit_round

pytestmark = pytest.mark.skipif(not hash_points.resumable(), reason="no OpenSSL SHA256_CTX here: nothing resumes")


def test_a_state_saved_anywhere_resumes_to_hashlibs_digest():
    rng = random.Random(7)
    data = rng.randbytes(5000)
    for cut in [0, 1, 63, 64, 65, 127, 128, 1000, 4999, 5000, *rng.sample(range(5000), 20)]:
        first = Sha256()
        first.update(data[:cut])
        state = first.state()
        assert hash_points._hashed(state) == cut
        resumed = Sha256(state)
        resumed.update(data[cut:])
        assert resumed.hexdigest() == hashlib.sha256(data).hexdigest(), cut
        assert first.hexdigest() == hashlib.sha256(data[:cut]).hexdigest()  # a digest does not end the hash


def test_what_is_not_a_state_is_refused():
    good = Sha256()
    good.update(b"x" * 70)
    state = bytearray(good.state())
    assert hash_points._hashed(bytes(state[:-1])) is None
    state[32] ^= 1  # the byte count no longer matches the bytes buffered
    assert hash_points._hashed(bytes(state)) is None
    with pytest.raises(ValueError):
        Sha256(bytes(state))


def test_the_best_point_is_the_last_one_a_copy_covers():
    points = [(10, b"a"), (30, b"b"), (20, b"c")]
    assert best_point(points, 25) == (20, b"c")
    assert best_point(points, 30) == (30, b"b")
    assert best_point(points, 9) is None
    assert best_point(None, 100) is None


def _write(path, parts, copy=None):
    with files.atomic_write(path, background=True) as fh:
        if copy is not None:
            fh.copy_range(*copy)
        for p in parts:
            fh.write(p)
    return fh


def test_background_writes_save_points_that_resume_to_the_files_digest(tmp_path, monkeypatch):
    monkeypatch.setattr(files._BackgroundWrites, "BLOCK", 1000)
    monkeypatch.setattr(files._BackgroundWrites, "POINT_BYTES", 5000)
    path = tmp_path / "kept.jsonl"
    fh = _write(path, [f"{i:05d} line\n".encode() for i in range(3000)])
    data = path.read_bytes()
    points = fh.points
    offsets = [at for at, _ in points]
    assert offsets == sorted(offsets) and offsets[-1] == len(data) and len(points) >= len(data) // 6000
    assert all(b - a >= 5000 for a, b in itertools.pairwise(offsets[:-1]))
    for at, state in points:
        h = Sha256(state)
        h.update(data[at:])
        assert h.hexdigest() == hashlib.sha256(data).hexdigest(), at
    assert files.hash_points(path) == points
    os.utime(path, ns=(1, 1))  # changed since it was written: its points are no longer its own
    assert files.hash_points(path) is None


def test_a_file_that_starts_with_a_kept_files_bytes_resumes_its_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(files._BackgroundWrites, "BLOCK", 1000)
    monkeypatch.setattr(files._BackgroundWrites, "POINT_BYTES", 4000)
    kept = tmp_path / "kept.jsonl"
    points = _write(kept, [f"{i:05d} kept\n".encode() for i in range(3000)]).points
    data = kept.read_bytes()
    for size in (len(data), 20_000, 4_100, 3_000):
        out = tmp_path / f"out{size}.jsonl"
        with open(kept, "rb") as src:
            fh = _write(out, [b"new line\n"] * 500, copy=(src.fileno(), 0, size, points))
        want = data[:size] + b"new line\n" * 500
        assert out.read_bytes() == want
        assert files.output_digest(out) == (hashlib.sha256(want).hexdigest(), len(want))
        assert fh.resumed == (best_point(points, size) or (0,))[0]
        # the points it took over and the ones it saved resume to its own digest
        for at, state in fh.points:
            h = Sha256(state)
            h.update(want[at:])
            assert h.hexdigest() == hashlib.sha256(want).hexdigest()


def test_points_are_not_used_for_a_copy_that_does_not_start_the_file(tmp_path):
    kept = tmp_path / "kept.jsonl"
    points = _write(kept, [b"kept\n"] * 1000).points
    with open(kept, "rb") as src, files.atomic_write(tmp_path / "out.jsonl", background=True) as fh:
        fh.write(b"first\n")
        fh.copy_range(src.fileno(), 0, 5000, points)
        fh.copy_range(src.fileno(), 0, 5000, points)
    assert fh.resumed == 0
    assert files.output_digest(tmp_path / "out.jsonl")[0] == \
        hashlib.sha256(b"first\n" + b"kept\n" * 2000).hexdigest()


def test_the_store_gives_points_to_the_kept_link_only_while_it_is_unchanged(tmp_path):
    out = tmp_path / "run" / "chunks.jsonl"
    out.parent.mkdir()
    points = _write(out, [b"row\n"] * 100).points
    link = tmp_path / "cache" / "kept.jsonl"
    link.parent.mkdir()
    os.link(out, link)
    store = HashPoints(tmp_path / "cache")
    store.remember(out, link)
    with open(link, "rb") as fh:
        assert store.find(fh.fileno()) == points
    copy = tmp_path / "copy.jsonl"
    shutil.copy2(out, copy)  # the same bytes and times, another inode
    with open(copy, "rb") as fh:
        assert store.find(fh.fileno()) is None
    os.utime(link, ns=(5, 5))
    with open(link, "rb") as fh:
        assert store.find(fh.fileno()) is None
    store.close()


def test_the_store_keeps_the_points_of_the_files_used_last(tmp_path, monkeypatch):
    monkeypatch.setattr(hash_points, "KEPT_POINTS", 3)
    store = HashPoints(tmp_path / "cache")
    links = []
    for k in range(5):
        out = tmp_path / f"out{k}.jsonl"
        _write(out, [f"{k}\n".encode()] * 10)
        links.append(tmp_path / f"link{k}.jsonl")
        os.link(out, links[-1])
        store.remember(out, links[-1])
    found = []
    for link in links:
        with open(link, "rb") as fh:
            found.append(store.find(fh.fileno()) is not None)
    assert found == [False, False, True, True, True]
    store.close()


def test_a_damaged_store_is_done_without(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / HASH_POINTS_FILE).write_bytes(b"not a database" * 100)
    out = tmp_path / "out.jsonl"
    _write(out, [b"row\n"] * 10)
    store = HashPoints(tmp_path / "cache")
    store.remember(out, out)
    with open(out, "rb") as fh:
        assert store.find(fh.fileno()) is None
    store.close()


def test_an_update_resumes_the_hash_of_chunks_and_train_from_the_earlier_run(scripted_repo: ScriptedRepo, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(files._BackgroundWrites, "POINT_BYTES", 2000)
    for k in range(8):
        commit_round(scripted_repo, k)
    shared = [f"repo={scripted_repo.path}", f"cache_dir={tmp_path / 'cache'}", "tokenizer.max_training_chars=20000"]
    before = run_pipeline(tmp_path / "a", *shared)
    commit_round(scripted_repo, 99)
    resumed: list[int] = []
    resume = files._BackgroundWrites._resume

    def spy(self, point, *args):
        resumed.append(point[0])
        return resume(self, point, *args)

    monkeypatch.setattr(files._BackgroundWrites, "_resume", spy)
    after = run_pipeline(tmp_path / "b", *shared)
    # the chunk shard starts with the whole earlier one, train's shard with the earlier train
    # (one shard: the split moved its boundaries forward)
    assert (before / "chunks" / "00000.jsonl").stat().st_size in resumed
    assert (before / "data" / "train" / "00000.jsonl").stat().st_size in resumed
    for stage in manifest(after)["stages"].values():
        for name, entry in stage.get("outputs", {}).items():
            if name.endswith(".jsonl"):
                assert entry["sha256"] == hashlib.sha256((after / name).read_bytes()).hexdigest(), name
    with sqlite3.connect(tmp_path / "cache" / HASH_POINTS_FILE) as conn:
        assert conn.execute("SELECT count(*) FROM points").fetchone()[0] >= 4  # chunks and three splits
