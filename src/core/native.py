"""Which modules run compiled: the install compiles a few hot modules with mypyc
(``hatch_build.py``) and records, in ``native_build.json``, the sha256 of the sources each
was built from (its own and the project modules it imports).

A compiled module is imported only while those sources are unchanged; otherwise its
Python source is, with one warning: in an editable install, an edited module runs as
written until ``pip install -e .`` rebuilds it. ``COMMITFORGE_NATIVE=0`` imports every one
of them from source (tracebacks with source lines, or comparing the two). Both give the
same output; only the speed differs, so stage fingerprints do not depend on it.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import json
import os
import sys
import warnings
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

ENV = "COMMITFORGE_NATIVE"
ROOT = Path(__file__).resolve().parents[1]  # holds core/ and plugins/ (src/, or site-packages)
RECORD = ROOT / "core" / "native_build.json"


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


class NativeModules(importlib.abc.MetaPathFinder):
    """A finder ahead of the default ones: for a module the install compiled, it hands
    out the Python source when the compiled build must not be used (the default finders
    would load the extension module, which they try before the source)."""

    def __init__(self, record: dict[str, Any], root: Path, enabled: bool):
        self.modules: dict[str, dict[str, str]] = record.get("modules", {})
        self.root = root
        self.enabled = enabled
        self._states: dict[str, str] = {}

    def state(self, name: str) -> str:
        """``compiled``, ``disabled`` (COMMITFORGE_NATIVE=0) or ``stale`` (a source it was
        built from changed since)."""
        hit = self._states.get(name)
        if hit is None:
            if not self.enabled:
                hit = "disabled"
            elif any(_sha256(self.root / rel) != digest for rel, digest in self.modules[name].items()):
                hit = "stale"
            else:
                hit = "compiled"
            self._states[name] = hit
        return hit

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name not in self.modules or self.state(name) == "compiled":
            return None
        if self.state(name) == "stale":
            warnings.warn(f"{name} changed since it was compiled; running its Python source (slower). "
                          f"Run `pip install -e .` again to rebuild it", stacklevel=2)
        return importlib.util.spec_from_file_location(name, self.root / (name.replace(".", "/") + ".py"))


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def install() -> NativeModules:
    """Put the finder first on ``sys.meta_path`` (once per process)."""
    for finder in sys.meta_path:
        if isinstance(finder, NativeModules):
            return finder
    finder = NativeModules(_read_record(RECORD), ROOT, os.environ.get(ENV, "1") != "0")
    sys.meta_path.insert(0, finder)
    return finder


def status() -> dict[str, str]:
    """Each module the install compiled -> how it runs in this process: ``compiled``,
    ``disabled``, ``stale``, or ``source`` when it was imported from source anyway (an
    extension that would not load). Empty when the install compiled nothing."""
    finder = install()
    out = {}
    for name in sorted(finder.modules):
        state = finder.state(name)
        module = sys.modules.get(name)
        if state == "compiled" and module is not None and str(getattr(module, "__file__", "")).endswith(".py"):
            state = "source"
        out[name] = state
    return out
