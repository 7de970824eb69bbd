"""git's line hunks as edits for incremental parsing: read from a real repository,
checked against the bytes, and giving the units of a fresh parse."""

from __future__ import annotations

import json

import pytest

import core.pipeline
from core.gitio import Repository, line_hunks
from core.parsing import hunk_edits
from plugins.rust import RustLanguage

from ..conftest import chunk_bytes, line_hunks_of, manifest, run_pipeline

FNS = "".join(f"/// number {i}\npub fn f{i}(x: u32) -> u32 {{\n    x + {i}\n}}\n\n" for i in range(12))


def apply(old: bytes, new: bytes, edits) -> bytes:
    """The new version rebuilt from the old one and the edits (what the edits claim)."""
    out, at = [], 0
    for os_, oe, ns, ne in edits:
        out += [old[at:os_], new[ns:ne]]
        at = oe
    return b"".join(out + [old[at:]])


def test_hunks_of_a_commit_are_the_changed_lines_by_blob(scripted_repo):
    r = scripted_repo
    r.commit("one", {"src/lib.rs": FNS, "notes.txt": "a\n"})
    new_text = FNS.replace("x + 1\n", "x * 1\n").replace("x + 10\n", "x - 10\n// tail\n").replace(
        "/// number 5\n", "")
    head = r.commit("two", {"src/lib.rs": new_text, "notes.txt": "b\n"})
    parent = r.git("rev-parse", "HEAD~1")
    old_blob, new_blob = r.git("rev-parse", f"{parent}:src/lib.rs"), r.git("rev-parse", "HEAD:src/lib.rs")
    hunks = line_hunks(Repository(r.path).git_dir, [(head, parent)], ["*.rs"])
    assert list(hunks) == [(old_blob, new_blob)]  # notes.txt is outside the pathspec
    # (old start, old count, new start, new count): a changed line, a deleted one, a line and an insertion
    assert hunks[(old_blob, new_blob)] == [(8, 1, 8, 1), (26, 1, 25, 0), (53, 1, 52, 2)]
    old, new = FNS.encode(), new_text.encode()
    edits = hunk_edits(old, new, hunks[(old_blob, new_blob)])
    assert edits is not None and len(edits) == 3 and apply(old, new, edits) == new


@pytest.mark.parametrize("old,new,hunks", [
    (b"a\nb\nc\n", b"a\nB\nc\n", [(2, 1, 2, 1)]),
    (b"a\nb\nc\n", b"x\na\nb\nc\n", [(0, 0, 1, 1)]),  # inserted before the first line
    (b"a\nb\nc\n", b"a\nb\n", [(3, 1, 2, 0)]),  # last line deleted
    (b"a\nb\nc", b"a\nb\nC", [(3, 1, 3, 1)]),  # no newline at the end of either version
    (b"a\nb\nc\nd\ne\n", b"A\nb\nc\nd\nE\n", [(1, 1, 1, 1), (5, 1, 5, 1)]),
])
def test_hunk_edits_rebuild_the_new_version(old, new, hunks):
    edits = hunk_edits(old, new, hunks)
    assert edits is not None and apply(old, new, edits) == new


@pytest.mark.parametrize("hunks", [
    [(2, 1, 2, 1)],  # misses the change on line 5
    [(5, 1, 5, 1), (1, 1, 1, 1)],  # out of order
    [(9, 1, 9, 1)],  # past the end
    [],
])
def test_hunks_that_do_not_hold_every_difference_are_refused(hunks):
    old, new = b"A\nb\nc\nd\ne\n", b"a\nb\nc\nd\nE\n"
    assert hunk_edits(old, new, hunks) is None


def test_parsing_from_hunks_extracts_only_the_changed_units(monkeypatch):
    old = FNS.encode()
    # edits that change lengths and line counts: what follows each shifts
    new = FNS.replace("x + 1\n", "x * 100\n").replace("/// number 5\n", "").replace(
        "x + 10\n", "x - 10\n        + 1\n").encode()
    hunks = [(8, 1, 8, 1), (26, 1, 25, 0), (53, 1, 52, 2)]
    lang = RustLanguage()
    base, fresh = lang.parse(old), RustLanguage().parse(new)
    extracted: list[str] = []
    real = RustLanguage._unit

    def counting(self, node, *args, **kwargs):
        unit = real(self, node, *args, **kwargs)
        extracted.append(unit.name)
        return unit

    monkeypatch.setattr(RustLanguage, "_unit", counting)
    got = lang.parse(new, (old, base), edits=hunk_edits(old, new, hunks))
    assert got.to_dict() == fresh.to_dict()
    assert extracted == ["f1", "f5", "f10"]  # the nine functions between and around the edits are carried
    extracted.clear()
    lang.parse(new, (old, base))  # one span from the first change to the last
    assert extracted == [f"f{i}" for i in range(1, 11)]


@pytest.mark.parametrize("seed", range(6))
def test_parsing_from_hunks_equals_a_fresh_parse_for_scattered_edits(seed):
    import random

    rng = random.Random(seed)
    lines = FNS.replace("pub fn f3", "impl S {\n    pub fn f3").replace("x + 4\n}\n", "x + 4\n}\n}\n").splitlines(True)
    edits_made = 0
    new_lines = list(lines)
    for _ in range(rng.randint(2, 5)):
        i = rng.randrange(len(new_lines))
        choice = rng.random()
        if choice < 0.3:
            new_lines[i:i + 1] = []
        elif choice < 0.6:
            new_lines.insert(i, rng.choice(["/// added doc\n", "#[inline]\n", "// note ✓\n", "\n",
                                            "pub const K: u8 = 1;\n"]))
        else:
            new_lines[i] = new_lines[i].replace("x", "y")
        edits_made += 1
    old, new = "".join(lines).encode(), "".join(new_lines).encode()
    hunks = line_hunks_of(old, new)
    edits = hunk_edits(old, new, hunks)
    lang = RustLanguage()
    base = lang.parse(old)
    fresh = RustLanguage().parse(new)
    if edits is None:
        assert old == new
        return
    got = lang.parse(new, (old, base), edits=edits)
    assert got.to_dict() == fresh.to_dict(), json.dumps(hunks)
    assert lang.parse(old, (new, got), edits=hunk_edits(new, old, [(c, d, a, b) for a, b, c, d in hunks])
                      ).to_dict() == base.to_dict()


def test_a_run_parsing_from_hunks_writes_what_a_run_without_them_writes(scripted_repo, tmp_path, monkeypatch):
    r = scripted_repo
    r.commit("one", {"src/lib.rs": FNS, "src/b.rs": "pub struct B;\n"})
    r.commit("two", {"src/lib.rs": FNS.replace("x + 2\n", "x + 20\n").replace("x + 9\n", "x / 9\n")})
    r.commit("three", {"src/lib.rs": FNS.replace("x + 2\n", "x + 21\n").replace("/// number 7\n", "")})
    with_hunks = run_pipeline(tmp_path / "a", f"repo={r.path}", "stages=[mine,chunk]", "context=imports")
    counts = manifest(with_hunks)["stages"]["chunk"]["counts"]
    assert counts["blobs_reparsed_by_hunks"] == 2 and "blobs_hunks_rejected" not in counts
    monkeypatch.setattr(core.pipeline, "line_hunks", lambda *args: {})
    without = run_pipeline(tmp_path / "b", f"repo={r.path}", "stages=[mine,chunk]", "context=imports")
    assert "blobs_reparsed_by_hunks" not in manifest(without)["stages"]["chunk"]["counts"]
    assert chunk_bytes(with_hunks) == chunk_bytes(without)


def test_hunks_split_over_several_gits_are_those_of_one(scripted_repo):
    r = scripted_repo
    r.commit("one", {"src/lib.rs": FNS})
    for i in range(1, 5):
        r.commit(f"edit {i}", {"src/lib.rs": FNS.replace(f"x + {i}\n", f"x * {i}\n"), f"src/m{i}.rs": "fn m() {}\n"})
    revs = r.git("rev-list", "--parents", "HEAD").splitlines()
    diffs = [tuple(line.split()[:2]) for line in revs if len(line.split()) == 2]
    git_dir = Repository(r.path).git_dir
    one = line_hunks(git_dir, diffs, ["*.rs"], processes=1)
    # one hunk, then two per commit (a line changed back, the next changed); new files are not diffed
    assert len(one) == 4 and sorted(len(h) for h in one.values()) == [1, 2, 2, 2]
    assert line_hunks(git_dir, diffs, ["*.rs"], processes=3) == one
