"""Build hook: compile commitforge's hottest pure-Python modules with mypyc.

The modules in ``COMPILED`` keep their Python source, which stays the reference: the
compiled extension sits next to it, and ``core.native`` imports it only while the
sources it was built from are unchanged. A wheel ships the extensions; an editable
install (``pip install -e .``) builds them into ``src/`` (ignored by git), so running
``pip install -e .`` again after editing a compiled module rebuilds it.

``COMMITFORGE_NATIVE=0`` at install time skips the compilation. A failed compilation (no
C compiler, say) does not fail the install: it prints why, and the modules run as
Python, as ``python -m core plugins`` and every run's manifest show.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# relative to src/; what a module must satisfy to be listed: it type-checks under mypy
# (mypyc enforces its annotations at run time) and is covered by the test suite
COMPILED = ("plugins/rust_symbols.py",)
RECORD = "core/native_build.json"  # read by core.native
PACKAGES = ("core", "plugins")
MYPY_ARGS = ("--ignore-missing-imports", "--follow-imports=silent")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def project_imports(src: Path, rel: str) -> list[str]:
    """The module's own source and those of the project modules it imports (relative to
    ``src``): the compiled code was checked against their types."""
    tree = ast.parse((src / rel).read_text(encoding="utf-8"))
    out = {rel}
    for node in ast.walk(tree):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            if name.split(".", 1)[0] in PACKAGES:
                path = name.replace(".", "/") + ".py"
                if (src / path).is_file():
                    out.add(path)
    return sorted(out)


def compile_modules(src: Path, work: Path) -> list[Path]:
    """Run mypyc over ``COMPILED`` in a copy of the packages (its build files stay out of
    the source tree); the extension files it made, relative to ``work``."""
    for package in PACKAGES:
        shutil.copytree(src / package, work / package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "mypyc", *MYPY_ARGS, *COMPILED], cwd=work,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"mypyc exited with {proc.returncode}:\n{tail}")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return sorted(p.relative_to(work) for p in work.rglob(f"*{suffix}") if "build" not in p.relative_to(work).parts)


class NativeBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        src = Path(self.root) / "src"
        record = src / RECORD
        if version == "editable":  # an earlier in-place build is replaced (or removed) here
            record.unlink(missing_ok=True)
            self._remove_in_place(src)
        if os.environ.get("COMMITFORGE_NATIVE", "1") == "0":
            self.app.display_info("commitforge: COMMITFORGE_NATIVE=0, modules stay pure Python")
            return
        work = Path(tempfile.mkdtemp(prefix="commitforge-mypyc-"))
        try:
            try:
                built = compile_modules(src, work)
            except Exception as e:  # noqa: BLE001 - any failure leaves a working pure-Python install
                self.app.display_warning(f"commitforge: compiling {', '.join(COMPILED)} with mypyc failed, "
                                         f"they run as (slower) Python: {e}")
                return
            import mypy.version

            data = {
                "mypy": mypy.version.__version__,
                "files": [p.as_posix() for p in built],
                "modules": {rel[:-3].replace("/", "."): {dep: sha256(src / dep) for dep in project_imports(src, rel)}
                            for rel in COMPILED},
            }
            if version == "editable":
                for rel in built:
                    shutil.copy2(work / rel, src / rel)
                record.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            else:
                staged = work / "record"
                staged.mkdir()
                (staged / "native_build.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
                build_data["force_include"][str(staged / "native_build.json")] = RECORD
                for rel in built:
                    build_data["force_include"][str(work / rel)] = rel.as_posix()
                build_data["pure_python"] = False
                build_data["infer_tag"] = True
            self.app.display_info(f"commitforge: compiled {', '.join(COMPILED)} with mypyc")
            self._work = work  # the wheel is written after initialize: removed in finalize
            work = None  # type: ignore[assignment]
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _remove_in_place(src: Path) -> None:
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        for package in PACKAGES:
            for so in (src / package).rglob(f"*{suffix}"):
                so.unlink()
        for so in src.glob(f"*__mypyc{suffix}"):  # a group of several modules has its library on top
            so.unlink()
