"""Shared fixtures: scripted git repositories, composed configs, pipeline runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from core.chunk_shards import CHUNKS_DIR, shard_paths
from core.config import conf_dir, register_schema
from core.files import split_shards
from core.pipeline import Run

T0 = 1_704_103_200  # 2024-01-01T10:00:00Z


def git_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
        "LC_ALL": "C",
    }


class ScriptedRepo:
    """A real git repository whose history a test writes commit by commit."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.n = 0
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        full = {**git_env(self.path), **(env or {})}
        out = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", *args], cwd=self.path, env=full,
                             capture_output=True, check=True)
        return out.stdout.decode("utf-8", "replace").strip()

    def write(self, files: dict[str, str | bytes | None]) -> None:
        for rel, content in files.items():
            p = self.path / rel
            if content is None:
                self.git("rm", "-q", "--", rel)
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content if isinstance(content, bytes) else content.encode())
            self.git("add", "--", rel)

    def commit(self, message: str, files: dict[str, str | bytes | None] | None = None, *,
               renames: dict[str, str] | None = None, allow_empty: bool = False) -> str:
        for old, new in (renames or {}).items():
            (self.path / new).parent.mkdir(parents=True, exist_ok=True)
            self.git("mv", old, new)
        self.write(files or {})
        self.n += 1
        date = f"{T0 + 3600 * self.n} +0000"
        args = ["commit", "-q", "-m", message] + (["--allow-empty"] if allow_empty else [])
        self.git(*args, env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
        return self.git("rev-parse", "HEAD")

    def merge(self, branch: str, message: str) -> str:
        self.n += 1
        date = f"{T0 + 3600 * self.n} +0000"
        self.git("merge", "-q", "--no-ff", "-m", message, branch,
                 env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def scripted_repo(tmp_path) -> ScriptedRepo:
    return ScriptedRepo(tmp_path / "repo")


def make_cfg(tmp_path: Path, *overrides: str):
    register_schema()
    base = [f"out_dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}", "executor.workers=1"]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=base + list(overrides))


def run_pipeline(tmp_path: Path, *overrides: str) -> Path:
    return Run(make_cfg(tmp_path, *overrides)).run()


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def read_split(run_dir: Path, split: str) -> list[dict]:
    """The examples of ``split`` a ``jsonl`` writer wrote in ``run_dir``, its shards in order."""
    return [e for shard in split_shards(run_dir, split) for e in read_jsonl(shard)]


def split_bytes(run_dir: Path, split: str) -> bytes:
    """The bytes of ``split``'s shards, one after another (a non-empty split has at least one)."""
    shards = split_shards(run_dir, split)
    assert shards, f"no shards of {split} in {run_dir}"
    return b"".join(shard.read_bytes() for shard in shards)


def chunk_bytes(run_dir: Path) -> bytes:
    """The chunk stage's output in ``run_dir`` as one file would hold it: its shards in order
    (there is at least one)."""
    shards = shard_paths(run_dir / CHUNKS_DIR)
    assert shards, f"no chunk shards in {run_dir}"
    return b"".join(shard.read_bytes() for shard in shards)


def read_chunks(run_dir: Path) -> list[dict]:
    """The rows of the chunk stage's output in ``run_dir``, its shards in order."""
    return [row for shard in shard_paths(run_dir / CHUNKS_DIR) for row in read_jsonl(shard)]


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "MANIFEST.json").read_text())


def line_hunks_of(old: bytes, new: bytes) -> list[tuple[int, int, int, int]]:
    """Line hunks between two versions numbered as ``git diff -U0`` numbers them (old
    start, old count, new start, new count; a zero count names the line before), from
    difflib: an oracle independent of git for tests of edits."""
    import difflib

    def lines(data: bytes) -> list[bytes]:
        parts = data.split(b"\n")
        return parts[:-1] if parts[-1] == b"" else parts  # git counts the last line once

    matcher = difflib.SequenceMatcher(None, lines(old), lines(new), autojunk=False)
    return [(i1 + 1 if i2 > i1 else i1, i2 - i1, j1 + 1 if j2 > j1 else j1, j2 - j1)
            for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]
