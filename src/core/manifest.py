"""MANIFEST.json: everything needed to know what a run did and to reproduce it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from core import __version__
from core.errors import CommitforgeError
from core.files import ATOMIC_TEMPORARIES, atomic_write, output_digest
from core.stats import Counter


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_version() -> str | None:
    """The version ``git --version`` reports; None when git cannot be run or fails."""
    try:
        proc = subprocess.run(["git", "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip().removeprefix("git version ") or None


def environment_versions(extra: dict[str, str]) -> dict[str, str | None]:
    git = _git_version()
    versions = {
        "commitforge": __version__,
        "python": platform.python_version(),
        "git": git,
        **{d: _version(d) for d in ("GitPython", "hydra-core", "omegaconf", "pluggy", "tokenizers", "numpy")},
    }
    versions.update(extra)
    return dict(sorted(versions.items()))


class Manifest:
    def __init__(self, run_dir: Path, config: dict[str, Any]):
        self.run_dir = run_dir
        self.data: dict[str, Any] = {"format": 1, "config": config, "stages": {}}

    def resume(self, stages: list[str]) -> None:
        """Carry over the entries of stages an earlier run in this directory completed."""
        old = _read(self.run_dir)
        self.data["stages"] = {name: old["stages"][name] for name in stages}
        self.data["resumed"] = stages
        for key in _STAGE_KEYS:
            if key in old and _STAGE_KEYS[key] in stages:
                self.data[key] = old[key]

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def stage(self, name: str, stats: Counter, seconds: float, outputs: dict[str, int]) -> None:
        """Record a finished stage: its counters, wall time, and each output's sha256 and row count."""
        files = {}
        for fname, rows in outputs.items():
            path = self.run_dir / fname
            digest, size = output_digest(path)
            files[fname] = {"sha256": digest, "bytes": size, "rows": rows}
        self.data["stages"][name] = {**stats.to_dict(), "seconds": round(seconds, 3), "outputs": files}
        self.write()

    def write(self) -> None:
        self.data["written"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with atomic_write(self.run_dir / "MANIFEST.json") as fh:
            fh.write(json.dumps(self.data, indent=2, ensure_ascii=False, default=str).encode("utf-8", "backslashreplace"))


# manifest keys written by a stage, carried over with it when the stage is not redone
_STAGE_KEYS = {"commit_range": "mine", "context": "chunk", "tokenizer": "build"}


def _read(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / "MANIFEST.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def completed_stages(run_dir: Path, resume_key: str, stages: list[str]) -> list[str]:
    """The leading stages an earlier run in ``run_dir`` finished with the same resume key
    (config, code, repository head) and whose outputs still have their recorded sha256
    and size. A stage after one that must be redone is redone too."""
    old = _read(run_dir)
    if old.get("resume_key") != resume_key:
        return []
    done: list[str] = []
    for name in stages:
        entry = old.get("stages", {}).get(name)
        if not isinstance(entry, dict) or not _outputs_intact(run_dir, entry.get("outputs") or {}):
            break
        done.append(name)
    return done


def _outputs_intact(run_dir: Path, outputs: dict[str, Any]) -> bool:
    if not outputs:
        return False
    for fname, meta in outputs.items():
        path = run_dir / fname
        try:
            if path.is_file() and path.stat().st_size != meta["bytes"]:
                return False  # a file whose size differs needs no hashing
            if output_digest(path) != (meta["sha256"], meta["bytes"]):
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def remove_stale_outputs(run_dir: Path, kept: list[str]) -> list[str]:
    """Remove the outputs an earlier run in ``run_dir`` recorded for stages other than
    ``kept`` (those this run carries over): a rerun with another writer, or with fewer
    stages, must not leave files behind that its manifest does not list. Returns the
    removed paths (relative)."""
    old = _read(run_dir)
    removed = []
    root = run_dir.resolve()
    for name, entry in (old.get("stages") or {}).items():
        if name in kept or not isinstance(entry, dict):
            continue
        for fname in entry.get("outputs") or {}:
            path = (run_dir / fname).resolve()
            if not path.is_relative_to(root) or path == root or not (path.exists() or path.is_symlink()):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(fname)
            parent = path.parent
            while parent != root and parent.is_relative_to(root) and not any(parent.iterdir()):
                parent.rmdir()  # a directory that held only stale outputs
                parent = parent.parent
    return removed


SPOOL = ".spool"  # where the chunk stage's workers leave their rows for the main process


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files a killed run left behind (``atomic_write``'s), and the chunk
    stage's spool directory."""
    for path in run_dir.rglob(ATOMIC_TEMPORARIES):
        if path.is_file():
            path.unlink(missing_ok=True)
    shutil.rmtree(run_dir / SPOOL, ignore_errors=True)


class RunLock:
    """One run per run directory at a time: a second one fails at once with a clear message."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".commitforge.lock"
        self.fh: Any = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "another process"
            self.fh.close()
            raise CommitforgeError(f"run directory {str(self.path.parent)!r} is in use by {holder}; wait for it "
                                   "to finish or choose another out_dir=DIR") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()}")
        self.fh.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()  # closing releases the lock; the file stays (it is empty of meaning)
