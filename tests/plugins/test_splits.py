"""Split strategies keep commits (or paths) together and follow time or a stable hash."""

from __future__ import annotations

import pytest

from core.errors import CommitforgeError
from plugins.splits import (PathSplit, PathSplitConfig, RandomSplit, RandomSplitConfig, TemporalSplit,
                            TemporalSplitConfig)


def changes(n_commits: int, per_commit: int = 3) -> list[dict]:
    rows = []
    # commits listed out of time order, with timezone offsets: the split must sort by instant
    for i in reversed(range(n_commits)):
        hour = i % 24
        day = 1 + i // 24
        for k in range(per_commit):
            rows.append({"commit": f"c{i:03d}", "time": f"2024-01-{day:02d}T{hour:02d}:00:00+02:00",
                         "path": f"src/f{k}.rs", "old_path": None})
    return rows


def test_temporal_split_orders_by_time_and_keeps_commits_together():
    rows = changes(20)
    got = TemporalSplit(TemporalSplitConfig()).assign(rows)
    by_commit: dict[str, set] = {}
    for row, split in zip(rows, got):
        by_commit.setdefault(row["commit"], set()).add(split)
    assert all(len(s) == 1 for s in by_commit.values())
    order = [by_commit[f"c{i:03d}"].pop() for i in range(20)]
    assert order == ["train"] * 16 + ["val"] * 2 + ["test"] * 2


def test_temporal_gap_leaves_out_commits_after_each_boundary():
    rows = changes(20, per_commit=1)
    got = TemporalSplit(TemporalSplitConfig(gap_commits=1)).assign(rows)
    order = dict(zip((r["commit"] for r in rows), got))
    assert [order[f"c{i:03d}"] for i in range(15, 20)] == ["train", None, "val", None, "test"]


def test_random_and_path_splits_are_stable_and_roughly_proportional():
    rows = changes(400, per_commit=1)
    a = RandomSplit(RandomSplitConfig(seed=3)).assign(rows)
    assert a == RandomSplit(RandomSplitConfig(seed=3)).assign(rows)
    assert a != RandomSplit(RandomSplitConfig(seed=4)).assign(rows)
    assert 0.7 < a.count("train") / len(a) < 0.9
    paths = [{"commit": f"c{i}", "time": "2024-01-01T00:00:00Z", "path": f"src/m{i % 50}.rs", "old_path": None}
             for i in range(500)]
    p = PathSplit(PathSplitConfig()).assign(paths)
    by_path: dict[str, set] = {}
    for row, split in zip(paths, p):
        by_path.setdefault(row["path"], set()).add(split)
    assert all(len(s) == 1 for s in by_path.values())


@pytest.mark.parametrize("fractions", [[0.5, 0.5], [0.8, 0.3, 0.1], [1.2, -0.1, -0.1]])
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(CommitforgeError, match="split.fractions"):
        TemporalSplit(TemporalSplitConfig(fractions=fractions))


def test_path_split_follows_renames():
    rows = [{"commit": f"c{i}", "time": "2024-01-01T00:00:00Z", "path": p, "old_path": o}
            for i, (p, o) in enumerate([("src/old.rs", None), ("src/new.rs", "src/old.rs"), ("src/new.rs", None),
                                        ("src/newer.rs", "src/new.rs"), ("src/newer.rs", None)])]
    for seed in range(20):
        got = PathSplit(PathSplitConfig(seed=seed)).assign(rows)
        assert len(set(got)) == 1


def test_a_unit_moved_into_a_known_file_leaves_that_files_key_alone():
    rows = [{"commit": f"c{i}", "time": "2024-01-01T00:00:00Z", "path": p, "old_path": o}
            for i, (p, o) in enumerate([("src/a.rs", None), ("src/b.rs", None),
                                        ("src/b.rs", "src/a.rs"),  # a unit moved from a.rs into b.rs
                                        ("src/b.rs", None), ("src/c.rs", "src/a.rs")])]  # c.rs: new, made from a.rs
    keys = PathSplit(PathSplitConfig(seed=0)).keys(rows)
    assert keys == ["src/a.rs", "src/b.rs", "src/b.rs", "src/b.rs", "src/a.rs"]
