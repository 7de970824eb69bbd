"""Tests for the built-in demo repository (core.demo)."""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from core import demo

EXPECTED_COMMITS = 14
EXPECTED_FIRST_PARENT = 12


def git(repo: pathlib.Path, *args: str) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(repo),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LANG": "C",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> pathlib.Path:
    return demo.build_demo_repo(tmp_path_factory.mktemp("demo") / "repo")


def test_build_is_deterministic(repo, tmp_path):
    other = demo.build_demo_repo(tmp_path / "again")
    assert other == tmp_path / "again"
    assert git(repo, "rev-parse", "HEAD") == git(other, "rev-parse", "HEAD")
    all_ids = ["log", "--all", "--format=%H %T %P"]
    assert git(repo, *all_ids) == git(other, *all_ids)


def test_history_shape(repo):
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == demo.DEMO_BRANCH
    assert git(repo, "status", "--porcelain") == ""
    first_parent = git(repo, "log", "--first-parent", "--format=%H").split()
    assert len(first_parent) == EXPECTED_FIRST_PARENT
    assert len(git(repo, "log", "--format=%H").split()) == EXPECTED_COMMITS
    merges = git(repo, "log", "--merges", "--format=%H %P").splitlines()
    assert len(merges) == 1
    merge, *parents = merges[0].split()
    assert len(parents) == 2
    # the side branch contributes exactly two commits
    assert len(git(repo, "rev-list", f"{parents[0]}..{parents[1]}").split()) == 2


def test_identity_and_dates(repo):
    rows = git(repo, "log", "--date-order", "--reverse", "--format=%an|%ae|%cn|%ce|%at|%ct")
    stamps = []
    for row in rows.splitlines():
        an, ae, cn, ce, at, ct = row.split("|")
        assert (an, ae, cn, ce) == (demo.DEMO_AUTHOR_NAME, demo.DEMO_AUTHOR_EMAIL) * 2
        assert at == ct
        stamps.append(int(at))
    assert stamps == sorted(set(stamps)), "dates must be strictly increasing"
    assert git(repo, "log", "--reverse", "--format=%aI").split()[0] == "2024-01-01T10:00:00+00:00"


def test_rename_delete_and_function_rename(repo):
    status = git(repo, "log", "-M", "--name-status", "--format=")
    lines = [line.split("\t") for line in status.splitlines() if line]
    renames = [l[1:] for l in lines if l[0].startswith("R")]
    assert renames == [["crates/ledger-store/src/memory.rs", "crates/ledger-store/src/in_memory.rs"]]
    deletes = [l[1] for l in lines if l[0] == "D"]
    assert deletes == ["crates/ledger-core/src/legacy.rs"]
    patch = git(repo, "log", "-p", "--format=", "--grep=sanitize_memo")
    assert "-pub fn normalise_memo(memo: &str) -> String {" in patch
    assert "+pub fn sanitize_memo(memo: &str) -> String {" in patch
    non_rust = git(repo, "log", "-1", "--name-only", "--format=")
    assert "README.md" in non_rust.split()


def _rust_blobs(repo):
    """Yield (commit subject, path, blob id) for every .rs file of every commit."""
    for line in git(repo, "log", "--all", "--format=%H %s").splitlines():
        commit, subject = line.split(" ", 1)
        for entry in git(repo, "ls-tree", "-r", commit).splitlines():
            meta, path = entry.split("\t")
            if path.endswith(".rs"):
                yield subject, path, meta.split()[2]


def test_rust_parses_except_the_intentional_error(repo):
    tree_sitter = pytest.importorskip("tree_sitter")
    tree_sitter_rust = pytest.importorskip("tree_sitter_rust")
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_rust.language()))
    parsed: dict[str, object] = {}
    broken = set()
    longest = 0
    for subject, path, blob in _rust_blobs(repo):
        if blob not in parsed:
            source = subprocess.run(
                ["git", "cat-file", "blob", blob], cwd=repo, capture_output=True, check=True
            ).stdout
            parsed[blob] = parser.parse(source).root_node
        root = parsed[blob]
        if root.has_error:
            broken.add((subject, path))
        stack = [root]
        while stack:
            node = stack.pop()
            if node.type == "function_item":
                longest = max(longest, node.end_byte - node.start_byte)
            stack.extend(node.children)
    assert broken == {(demo.DEMO_BROKEN_SUBJECT, demo.DEMO_BROKEN_FILE)}
    assert longest > 4000


def test_non_ascii_content(repo):
    text = (repo / "crates/ledger-cli/src/format.rs").read_text(encoding="utf-8")
    assert "日本語" in text
    assert "naïve café" in (repo / "crates/ledger-core/src/money.rs").read_text(encoding="utf-8")


def test_build_refuses_non_empty_destination(tmp_path):
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "file").write_text("x")
    with pytest.raises(FileExistsError):
        demo.build_demo_repo(tmp_path / "occupied")


def test_demo_repo_path_builds_once(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    path = demo.demo_repo_path(cache)
    assert path == cache / f"demo-v{demo.DEMO_VERSION}"
    head = git(path, "rev-parse", "HEAD")
    mtime = (path / ".git").stat().st_mtime_ns

    def fail(dest):
        raise AssertionError("rebuilt an existing demo repository")

    monkeypatch.setattr(demo, "build_demo_repo", fail)
    assert demo.demo_repo_path(cache) == path
    assert (path / ".git").stat().st_mtime_ns == mtime
    assert git(path, "rev-parse", "HEAD") == head
    assert sorted(p.name for p in cache.iterdir()) == [path.name]


def test_demo_repo_path_uses_the_winner_of_a_race(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    final = cache / f"demo-v{demo.DEMO_VERSION}"
    real_build = demo.build_demo_repo

    def build_while_another_process_wins(dest):
        real_build(final)  # the other process finishes first
        return real_build(dest)

    monkeypatch.setattr(demo, "build_demo_repo", build_while_another_process_wins)
    assert demo.demo_repo_path(cache) == final
    assert sorted(p.name for p in cache.iterdir()) == [final.name]
    assert git(final, "status", "--porcelain") == ""


def test_demo_repo_path_cleans_up_after_a_failed_build(tmp_path, monkeypatch):
    cache = tmp_path / "cache"

    def broken(dest):
        (pathlib.Path(dest) / "partial").write_text("half-built")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(demo, "build_demo_repo", broken)
    with pytest.raises(RuntimeError):
        demo.demo_repo_path(cache)
    assert list(cache.iterdir()) == []
