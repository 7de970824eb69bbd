"""``python -m core`` / ``commitforge``: the Hydra app, plus ``plugins`` to list plugins."""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from core.config import conf_dir, register_schema
from core.errors import CommitforgeError


def in_multirun() -> bool:
    from core.sweep import in_multirun as sweeping

    return sweeping()


def _handled(fn, *args):
    try:
        return fn(*args)
    except CommitforgeError as exc:
        if os.environ.get("COMMITFORGE_TRACEBACK") or in_multirun():
            raise  # a sweep records the failed job and goes on with the others
        print(f"commitforge: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def list_plugins() -> None:
    from core.registry import PluginRegistry

    rows = [(p.kind, p.name, p.package, p.version) for p in PluginRegistry().all()]
    widths = [max(len(r[i]) for r in rows + [("kind", "name", "package", "version")]) for i in range(4)]
    for row in [("kind", "name", "package", "version")] + rows:
        print("  ".join(col.ljust(w) for col, w in zip(row, widths)).rstrip())


def _task(cfg: DictConfig) -> None:
    from core.pipeline import run

    _handled(run, cfg)


def main() -> None:
    if sys.argv[1:2] == ["plugins"]:
        _handled(list_plugins)
        return
    register_schema()
    app = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_task)
    app()
