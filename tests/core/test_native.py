"""Compiled modules (core.native): which build is imported, and that both give the same output."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import native


def _package(root: Path) -> dict:
    """A package ``pkgx`` with a module ``pkgx.fast`` that imports ``pkgx.types``, and the
    record an install that compiled it would have written."""
    (root / "pkgx").mkdir()
    (root / "pkgx" / "__init__.py").write_text("")
    (root / "pkgx" / "types.py").write_text("KIND = 'type'\n")
    (root / "pkgx" / "fast.py").write_text("from pkgx.types import KIND\nWHERE = 'source'\n")
    sha = lambda rel: hashlib.sha256((root / rel).read_bytes()).hexdigest()  # noqa: E731
    return {"modules": {"pkgx.fast": {rel: sha(rel) for rel in ("pkgx/fast.py", "pkgx/types.py")}}}


def test_the_compiled_build_is_used_only_while_its_sources_are_unchanged(tmp_path):
    record = _package(tmp_path)
    fresh = native.NativeModules(record, tmp_path, enabled=True)
    assert fresh.state("pkgx.fast") == "compiled"
    assert fresh.find_spec("pkgx.fast") is None  # the default finders load the extension
    assert fresh.find_spec("pkgx.types") is None  # not compiled: not this finder's business

    off = native.NativeModules(record, tmp_path, enabled=False)
    spec = off.find_spec("pkgx.fast")
    assert off.state("pkgx.fast") == "disabled" and spec.origin == str(tmp_path / "pkgx" / "fast.py")

    # a module it imports changed: the compiled code was checked against the old one
    (tmp_path / "pkgx" / "types.py").write_text("KIND = 'changed'\n")
    stale = native.NativeModules(record, tmp_path, enabled=True)
    with pytest.warns(UserWarning, match=r"pkgx\.fast changed since it was compiled.*pip install -e \."):
        spec = stale.find_spec("pkgx.fast")
    assert stale.state("pkgx.fast") == "stale" and spec.origin == str(tmp_path / "pkgx" / "fast.py")

    (tmp_path / "pkgx" / "types.py").unlink()  # a source gone counts as changed
    assert native.NativeModules(record, tmp_path, enabled=True).state("pkgx.fast") == "stale"


def _installed_compiled() -> dict[str, str]:
    return json.loads(native.RECORD.read_text())["modules"] if native.RECORD.is_file() else {}


def _run(tmp_path: Path, name: str, env_native: str) -> tuple[bytes, dict]:
    out = tmp_path / name
    env = {**os.environ, native.ENV: env_native}
    subprocess.run([sys.executable, "-m", "core", f"out_dir={out}", f"cache_dir={tmp_path / ('cache-' + name)}",
                    "stages=[mine,chunk]", "context=imports", "executor.workers=1", "progress=false"],
                   env=env, check=True, capture_output=True, cwd=tmp_path)
    return (out / "chunks.jsonl").read_bytes(), json.loads((out / "MANIFEST.json").read_text())


def test_compiled_and_source_modules_write_the_same_rows(tmp_path):
    """The demo repository's history with cross-file context, once with the compiled
    symbol index and once from its source: byte-identical rows."""
    if not _installed_compiled():
        pytest.skip("this install compiled no module (COMMITFORGE_NATIVE=0 or no C compiler at install)")
    compiled, m_compiled = _run(tmp_path, "compiled", "1")
    source, m_source = _run(tmp_path, "source", "0")
    assert m_compiled["compiled"] == {name: "compiled" for name in _installed_compiled()}
    assert m_source["compiled"] == {name: "disabled" for name in _installed_compiled()}
    assert m_compiled["context"]["refs"] > 0 and compiled.count(b"\n") > 50
    assert compiled == source
