"""core.files: the orjson JSON line is json's, byte for byte, fallbacks included."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import files
from core.files import fast_json_line, json_line

# every code point, lone surrogates and control characters included
TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=30)
SCALAR = st.one_of(TEXT, st.integers(-(2**70), 2**70), st.booleans(), st.none())
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                     st.dictionaries(TEXT, inner, max_size=4)), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(TEXT, VALUE, max_size=8))
def test_fast_json_line_is_json_line(obj):
    assert fast_json_line(obj) == json_line(obj)


def test_examples_of_every_kind():
    rows = [
        {"id": "a", "input_ids": list(range(300)), "labels": [-100] * 3 + [5, 6], "segments": [["path", 0, 1]]},
        {"path": b"caf\xe9.rs".decode("utf-8", "surrogateescape"), "n": 1},  # lone surrogate: json
        {"share": 0.1, "huge": 1e16, "nan": float("nan")},  # floats: json's form
        {"big": 2**64, "neg": -(2**63) - 1},  # beyond 64 bits: json
        {"ctl": "\x00\x1f\x7f\u2028\ufeff\"\\/\t\n\r\b\f", "emoji": "💶 日本語"},
    ]
    for row in rows:
        assert fast_json_line(row) == json_line(row)
    assert json.loads(fast_json_line(rows[1]))["path"] == rows[1]["path"]


def test_without_orjson_it_is_json_line(monkeypatch):
    monkeypatch.setattr(files, "_orjson", None)
    row = {"a": [1, 2], "b": "ü"}
    assert fast_json_line(row) == json_line(row)


RECORD_SCALAR = st.one_of(TEXT, st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none(),
                          st.floats(allow_nan=False, allow_infinity=False))
RECORD = st.recursive(RECORD_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                             st.dictionaries(TEXT, inner, max_size=4)), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(TEXT, RECORD, max_size=8))
def test_record_line_reads_back_as_the_record(obj):
    """chunks.jsonl rows (context scores are floats) and commits.jsonl: json reads each line
    back equal, lone surrogates included (as \\udcXX escapes, like json_line)."""
    line = files.record_line(obj)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == json.loads(json_line(obj))


def test_outputs_are_readable_as_the_umask_allows_not_private_to_their_owner(tmp_path, monkeypatch):
    import stat

    from core import files

    monkeypatch.setattr(files, "_UMASK", 0o022)
    with files.atomic_write(tmp_path / "out.jsonl") as fh:
        fh.write(b"{}\n")
    assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o644


def test_background_writes_put_every_byte_in_order_and_give_the_files_sha256(tmp_path, monkeypatch):
    monkeypatch.setattr(files._BackgroundWrites, "BLOCK", 1000)  # many blocks in flight
    path = tmp_path / "out" / "data.jsonl"
    parts = [f"{i:05d} ".encode() * (i % 37) + b"\n" for i in range(3000)]
    with files.atomic_write(path, background=True) as fh:
        for p in parts:
            fh.write(p)
    assert path.read_bytes() == b"".join(parts)
    assert files.output_digest(path) == (files.sha256_file(path), path.stat().st_size)
    assert files._DIGESTS[str(path)][1] == files.sha256_file(path)
    path.write_bytes(b"changed since\n")  # a file changed after it was written is hashed again
    assert files.output_digest(path) == (files.sha256_file(path), 14)


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_copied_ranges_go_between_the_writes_around_them_and_into_the_digest(tmp_path, monkeypatch, kernel_copy):
    monkeypatch.setattr(files._BackgroundWrites, "BLOCK", 1000)  # the copy is hashed in many blocks
    if not kernel_copy:
        monkeypatch.delattr(files.os, "copy_file_range")
    source = tmp_path / "kept.jsonl"
    source.write_bytes(b"".join(f"{i:06d} kept\n".encode() for i in range(5000)))
    path = tmp_path / "out.jsonl"
    with open(source, "rb") as src, files.atomic_write(path, background=True) as fh:
        fh.write(b"before\n" * 300)
        fh.copy_range(src.fileno(), 0, 12_345)
        fh.write(b"middle\n")
        fh.copy_range(src.fileno(), 20_000, 7_001)
        for i in range(200):
            fh.write(f"after {i}\n".encode())
    kept = source.read_bytes()
    want = (b"before\n" * 300 + kept[:12_345] + b"middle\n" + kept[20_000:27_001]
            + b"".join(f"after {i}\n".encode() for i in range(200)))
    assert path.read_bytes() == want
    assert files.output_digest(path) == (hashlib.sha256(want).hexdigest(), len(want))


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def test_copied_files_are_opened_by_the_threads_and_removed_after_their_last_range(tmp_path, monkeypatch):
    monkeypatch.setattr(files._BackgroundWrites, "BLOCK", 1000)
    source = tmp_path / "rows.jsonl"
    rows = b"".join(f"{i:06d} row\n".encode() for i in range(3000))
    source.write_bytes(rows)
    copies: list[int] = []
    copy_range = files.copy_range

    def counting(fd, start, size, dst):
        copies.append(size)
        return copy_range(fd, start, size, dst)

    monkeypatch.setattr(files, "copy_range", counting)
    descriptors, threads = _open_descriptors(), threading.active_count()
    path = tmp_path / "out.jsonl"
    with files.atomic_write(path, background=True) as fh:
        fh.copy_file(str(source), 0, 5000)
        fh.write(b"cached\n")
        fh.copy_file(str(source), 5000, 100)
        fh.copy_file(str(source), 5100, len(rows) - 5100, remove=True)
    want = rows[:5000] + b"cached\n" + rows[5000:]
    assert path.read_bytes() == want and not source.exists()
    assert copies == [5000, len(rows) - 5000]  # the two ranges that go on from each other: one copy
    assert files.output_digest(path) == (hashlib.sha256(want).hexdigest(), len(want))
    assert _open_descriptors() == descriptors and threading.active_count() == threads


@pytest.mark.parametrize("broken", ["missing", "short"])
def test_a_copied_file_that_cannot_be_read_fails_the_write(tmp_path, broken):
    source = tmp_path / "rows.jsonl"
    source.write_bytes(b"x\n" * 10)
    descriptors = _open_descriptors()
    path = tmp_path / "out.jsonl"
    with pytest.raises(OSError), files.atomic_write(path, background=True) as fh:
        fh.copy_file(str(tmp_path / "gone.jsonl") if broken == "missing" else str(source), 0, 40, remove=True)
    assert not path.exists() and not list(tmp_path.glob(".*.tmp"))
    assert _open_descriptors() == descriptors


def test_a_buffer_changed_after_it_was_written_does_not_change_the_file_or_its_digest(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(files._BackgroundWrites, "BLOCK", 10)
    changed = threading.Event()  # the threads hash and write only once the caller changed its buffer
    put, sha256 = files._BackgroundWrites._put, hashlib.sha256

    class LateHash:
        def __init__(self):
            self.h = sha256()

        def update(self, data):
            changed.wait(5)
            self.h.update(data)

        def hexdigest(self):
            return self.h.hexdigest()

    monkeypatch.setattr(files._BackgroundWrites, "_put", lambda self, block: (changed.wait(5), put(self, block)))
    monkeypatch.setattr(files.hashlib, "sha256", LateHash)
    path = tmp_path / "out.jsonl"
    buf = bytearray(b"0123456789abcdef\n")
    with files.atomic_write(path, background=True) as fh:
        fh.write(buf)  # a whole block in one buffer
        buf[:] = b"X" * len(buf)
        changed.set()
    monkeypatch.setattr(files.hashlib, "sha256", sha256)
    assert path.read_bytes() == b"0123456789abcdef\n"
    assert files.output_digest(path)[0] == hashlib.sha256(b"0123456789abcdef\n").hexdigest()


def test_a_failed_background_write_raises_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(files._BackgroundWrites, "BLOCK", 10)

    def full_disk(self, block):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files._BackgroundWrites, "_put", full_disk)
    path = tmp_path / "data.jsonl"
    with pytest.raises(OSError, match="No space left"), files.atomic_write(path, background=True) as fh:
        for _ in range(100):
            fh.write(b"0123456789\n")
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_the_callers_error_is_not_hidden_by_a_failed_background_write(tmp_path, monkeypatch):
    monkeypatch.setattr(files._BackgroundWrites, "BLOCK", 10)

    def full_disk(self, block):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files._BackgroundWrites, "_put", full_disk)
    with pytest.raises(KeyError, match="bad row"), files.atomic_write(tmp_path / "data.jsonl", background=True) as fh:
        fh.write(b"0123456789\n" * 3)
        raise KeyError("bad row")
    assert list(tmp_path.iterdir()) == []


def test_the_writing_thread_syncs_each_sync_bytes_it_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(files._BackgroundWrites, "SYNC_BYTES", 4000)
    monkeypatch.setattr(files._BackgroundWrites, "BLOCK", 1000)
    source = tmp_path / "kept.jsonl"
    source.write_bytes(b"".join(f"{i:06d} kept\n".encode() for i in range(2000)))
    synced: list[str] = []
    sync = getattr(os, "fdatasync", os.fsync)
    name = "fdatasync" if hasattr(os, "fdatasync") else "fsync"
    monkeypatch.setattr(files.os, name, lambda fd: synced.append(threading.current_thread().name) or sync(fd))
    path = tmp_path / "out.jsonl"
    with open(source, "rb") as src, files.atomic_write(path, background=True) as fh:
        fh.copy_range(src.fileno(), 0, 3000)  # small: no sync of its own
        fh.write(b"new\n")
        fh.copy_range(src.fileno(), 100, 10_000)
        for i in range(500):  # 5,000 bytes more, written in blocks of about 1,000
            fh.write(b"%09d\n" % i)
    written = b"".join(b"%09d\n" % i for i in range(500))
    want = source.read_bytes()[:3000] + b"new\n" + source.read_bytes()[100:10_100] + written
    assert path.read_bytes() == want
    assert files.output_digest(path) == (hashlib.sha256(want).hexdigest(), len(want))
    # the writing thread synced after the large copy (13,004 bytes) and once the blocks
    # written after it reached 4,000 bytes (atomic_write's own fsync is another call)
    assert sum(n.startswith("commitforge-write") for n in synced) == 2


def _kept(tmp_path, rows: int = 5000):
    source = tmp_path / "kept.jsonl"
    source.write_bytes(b"".join(f"{i:06d} kept\n".encode() for i in range(rows)))
    return source


def _counting_copies(monkeypatch) -> list[int]:
    """The sizes of the ranges the writing thread copies itself."""
    copies: list[int] = []
    copy_range = files.copy_range
    monkeypatch.setattr(files, "copy_range", lambda fd, start, size, dst: copies.append(size) or copy_range(fd, start, size, dst))
    return copies


@pytest.mark.parametrize("kernel_copy", [True, False])
@pytest.mark.parametrize("wanted", ["fewer", "all", "more"])
def test_a_copy_ahead_is_taken_over_by_a_write_that_starts_with_the_same_bytes(tmp_path, monkeypatch, kernel_copy,
                                                                                wanted):
    monkeypatch.setattr(files._BackgroundWrites, "BLOCK", 1000)
    monkeypatch.setattr(files._BackgroundWrites, "SYNC_BYTES", 4096)  # the thread copies in many steps
    if not kernel_copy:
        monkeypatch.delattr(files.os, "copy_file_range")
    source = _kept(tmp_path)
    kept = source.read_bytes()
    ahead = 30_000  # copied ahead; the write then wants fewer, all of them, or more
    size = {"fewer": 12_345, "all": ahead, "more": 45_678}[wanted]
    path = tmp_path / "out" / "train.jsonl"
    descriptors, threads = _open_descriptors(), threading.active_count()
    with open(source, "rb") as src:
        files.copy_ahead(path, [(src.fileno(), 0, ahead)])
        copies = _counting_copies(monkeypatch)
        with files.atomic_write(path, background=True) as fh:
            fh.copy_range(src.fileno(), 0, size)
            fh.write(b"new\n")
            fh.copy_range(src.fileno(), 100, 50)
    want = kept[:size] + b"new\n" + kept[100:150]
    assert path.read_bytes() == want
    assert files.output_digest(path) == (hashlib.sha256(want).hexdigest(), len(want))
    # the bytes copied ahead are not copied again: only what goes beyond them, and the later range
    assert copies == ([size - ahead] if wanted == "more" else []) + [50]
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.jsonl"] and not files._AHEAD
    assert _open_descriptors() == descriptors and threading.active_count() == threads


@pytest.mark.parametrize("first", ["write", "another_range", "another_file", "nothing"])
def test_a_copy_ahead_is_thrown_away_when_the_write_starts_otherwise(tmp_path, first):
    source = _kept(tmp_path)
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"other\n" * 2000)
    kept = source.read_bytes()
    path = tmp_path / "out" / "train.jsonl"
    with open(source, "rb") as src, open(other, "rb") as oth:
        files.copy_ahead(path, [(src.fileno(), 0, 30_000)])
        with files.atomic_write(path, background=True) as fh:
            if first == "write":
                fh.write(b"new\n")
            elif first == "another_range":  # the same file, not from its start
                fh.copy_range(src.fileno(), 10, 100)
            elif first == "another_file":
                fh.copy_range(oth.fileno(), 0, 100)
    want = {"write": b"new\n", "another_range": kept[10:110], "another_file": b"other\n" * 16 + b"othe",
            "nothing": b""}[first]
    assert path.read_bytes() == want
    assert files.output_digest(path) == (hashlib.sha256(want).hexdigest(), len(want))
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.jsonl"]


def test_a_copy_ahead_no_write_took_over_is_removed(tmp_path):
    source = _kept(tmp_path)
    path = tmp_path / "out" / "train.jsonl"
    aheads = files.AheadCopies()
    with open(source, "rb") as src:
        aheads.copy(path, [(src.fileno(), 0, 30_000)])
        aheads.copy(tmp_path / "out" / "val.jsonl", [(src.fileno(), 0, 10)])
    # a plain write of the path does not take it over (only a background one can)
    with files.atomic_write(path) as fh:
        fh.write(b"plain\n")
    aheads.close()
    assert not files._AHEAD
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.jsonl"] and path.read_bytes() == b"plain\n"


def test_a_failed_write_removes_the_bytes_copied_ahead(tmp_path):
    source = _kept(tmp_path)
    path = tmp_path / "out" / "train.jsonl"
    with open(source, "rb") as src:
        files.copy_ahead(path, [(src.fileno(), 0, 30_000)])
        with pytest.raises(KeyError), files.atomic_write(path, background=True) as fh:
            fh.copy_range(src.fileno(), 0, 20_000)
            raise KeyError("bad row")
    assert list(path.parent.iterdir()) == [] and not files._AHEAD


@pytest.mark.parametrize("then", ["all", "cut_after_two", "other_start", "write_first"])
def test_a_copy_ahead_of_several_ranges_is_taken_as_far_as_the_writes_ask_for_the_same_bytes(tmp_path, monkeypatch,
                                                                                                then):
    monkeypatch.setattr(files._BackgroundWrites, "SYNC_BYTES", 1000)  # the thread copies in many steps
    a, b = _kept(tmp_path), tmp_path / "b.jsonl"
    b.write_bytes(b"".join(f"{i:05d} bee\n".encode() for i in range(900)))
    ka, kb = a.read_bytes(), b.read_bytes()
    path = tmp_path / "out" / "val.jsonl"
    with open(a, "rb") as fa, open(b, "rb") as fb:
        files.copy_ahead(path, [(fa.fileno(), 100, 5000), (fb.fileno(), 0, 3000), (fa.fileno(), 9000, 100)])
        copies = _counting_copies(monkeypatch)
        with files.atomic_write(path, background=True) as fh:
            if then == "write_first":
                fh.write(b"new\n")
            fh.copy_range(fa.fileno(), 100, 2000)  # the first range asked for in two parts
            fh.copy_range(fa.fileno(), 2100, 3000)
            if then == "other_start":
                fh.copy_range(fb.fileno(), 10, 500)
            else:
                fh.copy_range(fb.fileno(), 0, 3000)
            if then == "all":
                fh.copy_range(fa.fileno(), 9000, 100)
            fh.write(b"end\n")
    head = b"new\n" if then == "write_first" else b""
    middle = kb[10:510] if then == "other_start" else kb[:3000]
    want = head + ka[100:5100] + middle + (ka[9000:9100] if then == "all" else b"") + b"end\n"
    assert path.read_bytes() == want
    assert files.output_digest(path) == (hashlib.sha256(want).hexdigest(), len(want))
    # what the thread copied is not copied again; the rest is
    assert copies == {"all": [], "cut_after_two": [], "other_start": [500], "write_first": [2000, 3000, 3000]}[then]
    assert sorted(p.name for p in path.parent.iterdir()) == ["val.jsonl"] and not files._AHEAD


@pytest.mark.parametrize("then", ["all", "cut", "write_first"])
def test_a_hashed_copy_ahead_gives_the_writing_its_sha256_states(tmp_path, monkeypatch, then):
    monkeypatch.setattr(files._BackgroundWrites, "SYNC_BYTES", 1000)  # a state every 1,000 bytes copied
    monkeypatch.setattr(files._BackgroundWrites, "POINT_BYTES", 1500)
    a, b = _kept(tmp_path), tmp_path / "b.jsonl"
    b.write_bytes(b"".join(f"{i:05d} bee\n".encode() for i in range(900)))
    ka, kb = a.read_bytes(), b.read_bytes()
    path = tmp_path / "out" / "test.jsonl"
    hashed: list[int] = []
    hash_range = files._BackgroundWrites._hash_range
    monkeypatch.setattr(files._BackgroundWrites, "_hash_range",
                        lambda self, fd, start, size: hashed.append(size) or hash_range(self, fd, start, size))
    with open(a, "rb") as fa, open(b, "rb") as fb:
        files.copy_ahead(path, [(fa.fileno(), 100, 5000), (fb.fileno(), 7, 3000)], hashed=True)
        with files.atomic_write(path, background=True) as fh:
            if then == "write_first":
                fh.write(b"new\n")
            fh.copy_range(fa.fileno(), 100, 5000)
            fh.copy_range(fb.fileno(), 7, 2500 if then == "cut" else 3000)
            fh.write(b"end\n" * 500)
        points = files._DIGESTS[str(path)][3]
    want = (b"new\n" if then == "write_first" else b"") + ka[100:5100] + kb[7:2507 if then == "cut" else 3007] \
        + b"end\n" * 500
    assert path.read_bytes() == want
    assert files.output_digest(path) == (hashlib.sha256(want).hexdigest(), len(want))
    if then == "write_first":  # nothing taken: every byte hashed
        assert sum(hashed) == len(want) - 4 - 2000
    else:  # hashed from the copy's last state in each taken range: a step's bytes at most
        assert hashed[:2] == [0, 500 if then == "cut" else 0]
    # the file's own states (for a later copy of its first bytes) are states of its prefixes
    from core.hash_points import Sha256

    for at, state in points or ():
        assert Sha256(state).hexdigest() == hashlib.sha256(want[:at]).hexdigest()
    assert points and points[-1][0] == len(want)


def test_a_copy_ahead_of_many_small_ranges_syncs_and_keeps_a_state_each_sync_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(files._BackgroundWrites, "SYNC_BYTES", 4000)
    source = _kept(tmp_path)  # 60,000 bytes
    synced = []
    sync = getattr(os, "fdatasync", os.fsync)
    name = "fdatasync" if hasattr(os, "fdatasync") else "fsync"
    monkeypatch.setattr(files.os, name, lambda fd: synced.append(fd) or sync(fd))
    ranges = [(k * 20, 10) for k in range(1000)]  # 10,000 bytes in 1,000 ranges
    path = tmp_path / "out" / "val.jsonl"
    with open(source, "rb") as src:
        files.copy_ahead(path, [(src.fileno(), a, n) for a, n in ranges], hashed=True)
        ahead = files._AHEAD[str(path)]
        assert ahead.wait() == 10_000
        assert len(synced) == 3 and [p[0] for p in ahead.points] == [4000, 8000, 10_000]
        with files.atomic_write(path, background=True) as fh:
            for a, n in ranges:
                fh.copy_range(src.fileno(), a, n)
    kept = source.read_bytes()
    want = b"".join(kept[a:a + n] for a, n in ranges)
    assert path.read_bytes() == want
    assert files.output_digest(path) == (hashlib.sha256(want).hexdigest(), len(want))


def test_copies_ahead_asked_for_after_their_stage_ended_are_refused(tmp_path):
    source = _kept(tmp_path)
    aheads = files.AheadCopies()
    with open(source, "rb") as src:
        aheads.copy(tmp_path / "out" / "train.jsonl", [(src.fileno(), 0, 30_000)])
        aheads.close()  # the stage ended (failed) before the writing took it over
        aheads.copy(tmp_path / "out" / "val.jsonl", [(src.fileno(), 0, 30_000)])  # a late thread's
    assert not files._AHEAD and list((tmp_path / "out").iterdir()) == []
