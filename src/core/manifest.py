"""MANIFEST.json: everything needed to know what a run did and to reproduce it."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from core import __version__
from core.files import atomic_write, sha256_file
from core.stats import Counter


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_versions(extra: dict[str, str]) -> dict[str, str | None]:
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip().removeprefix("git version ")
    versions = {
        "commitforge": __version__,
        "python": platform.python_version(),
        "git": git,
        **{d: _version(d) for d in ("GitPython", "hydra-core", "omegaconf", "pluggy")},
    }
    versions.update(extra)
    return dict(sorted(versions.items()))


class Manifest:
    def __init__(self, run_dir: Path, config: dict[str, Any]):
        self.run_dir = run_dir
        self.data: dict[str, Any] = {"format": 1, "config": config, "stages": {}}

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def stage(self, name: str, stats: Counter, seconds: float, outputs: dict[str, int]) -> None:
        """Record a finished stage: its counters, wall time, and each output's sha256 and row count."""
        files = {}
        for fname, rows in outputs.items():
            path = self.run_dir / fname
            files[fname] = {"sha256": sha256_file(path), "bytes": path.stat().st_size, "rows": rows}
        self.data["stages"][name] = {**stats.to_dict(), "seconds": round(seconds, 3), "outputs": files}
        self.write()

    def write(self) -> None:
        self.data["written"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        with atomic_write(self.run_dir / "MANIFEST.json") as fh:
            fh.write(json.dumps(self.data, indent=2, ensure_ascii=False, default=str).encode("utf-8", "backslashreplace"))
