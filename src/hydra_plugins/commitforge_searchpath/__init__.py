"""Hydra search-path plugin: config files of third-party commitforge plugins.

Hydra imports every module of the ``hydra_plugins`` namespace package and asks each
``SearchPathPlugin`` to edit the config search path before composing. This one appends
``pkg://<package>`` for every installed distribution that declares a config package in
the ``commitforge.conf`` entry-point group::

    [project.entry-points."commitforge.conf"]
    my_plugin = "my_package.conf"   # a package (with __init__.py) holding chunker/NAME.yaml...

so that ``python -m core chunker=NAME`` finds ``my_package/conf/chunker/NAME.yaml``.

- Entries are appended after commitforge's own ``conf/``: a third-party file never
  shadows a built-in config of the same group and name, it can only add options.
- ``COMMITFORGE_PLUGINS`` applies as it does to the code plugins (``core.registry``):
  unset loads every distribution, ``pkg-a,pkg-b`` only those, empty none.
- Only search paths that hold commitforge's own config directory are touched: other
  Hydra applications installed alongside are left alone.
- A declared package that cannot be found is skipped with one warning line naming the
  distribution and the package (the run goes on; a config it alone provides is then
  reported missing by Hydra).

This module is imported by every Hydra application in the environment: it imports
nothing but Hydra and the standard library, and acts only when commitforge composes.
It never imports a plugin's hook module; looking up a config package's spec imports the
package's parents (``my_package`` for ``my_package.conf``), as Hydra does when it reads it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

CONF_GROUP = "commitforge.conf"
ALLOW_ENV = "COMMITFORGE_PLUGINS"


def allowed_distributions() -> set[str] | None:
    """Distribution names ``COMMITFORGE_PLUGINS`` allows; None when it is unset (all)."""
    allowed = os.environ.get(ALLOW_ENV)
    return None if allowed is None else {a.strip() for a in allowed.split(",") if a.strip()}


def config_packages() -> list[tuple[str, str]]:
    """(distribution, config package) of every allowed ``commitforge.conf`` entry point,
    sorted by distribution then entry-point name, each package once."""
    allow = allowed_distributions()
    found: list[tuple[str, str, str]] = []
    for ep in importlib.metadata.entry_points(group=CONF_GROUP):
        dist = ep.dist.name if ep.dist else "unknown"
        if allow is not None and dist not in allow:
            continue
        found.append((dist, ep.name, ep.value.strip()))
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for dist, _, package in sorted(found):
        if package not in seen:  # the same distribution on sys.path twice
            seen.add(package)
            out.append((dist, package))
    return out


def _problem(package: str) -> str | None:
    """Why ``package`` cannot serve as a Hydra config package, or None."""
    if ":" in package or not all(part.isidentifier() for part in package.split(".")):
        return "is not a package name (use the dotted name of a package, no ':attribute')"
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError as exc:
        if exc.name and (package == exc.name or package.startswith(exc.name + ".")):  # a parent is missing
            return "is not installed"
        return f"could not be looked up ({type(exc).__name__}: {exc})"
    except Exception as exc:  # noqa: BLE001 - a parent package failing to import
        return f"could not be looked up ({type(exc).__name__}: {exc})"
    if spec is None:
        return "is not installed"
    locations = list(spec.submodule_search_locations or [])
    if not locations:
        return "is a module, not a package"
    if not any((Path(loc) / "__init__.py").is_file() for loc in locations):
        return "has no __init__.py (Hydra reads pkg:// config packages only with one)"
    return None


def _commitforge_conf() -> Path | None:
    """commitforge's config directory, if commitforge is the application composing.

    commitforge imports ``core.config`` before it composes (for ``conf_dir`` and the root
    schema); nothing is imported here, so another application's ``core`` package, if it
    has one, never runs on our account."""
    config = sys.modules.get("core.config")
    conf_dir = getattr(config, "conf_dir", None)
    if conf_dir is None or not hasattr(config, "register_schema"):
        return None
    try:
        return Path(conf_dir()).resolve()
    except Exception:  # noqa: BLE001 - not commitforge's, or no conf/ at all
        return None


def is_commitforge_search_path(search_path: ConfigSearchPath) -> bool:
    """Whether commitforge's own ``conf/`` is on ``search_path``."""
    ours = _commitforge_conf()
    if ours is None:
        return False
    for element in search_path.get_path():
        path = (element.path or "").removeprefix("file://")
        if not path or "://" in path:
            continue
        try:
            if Path(path).resolve() == ours:
                return True
        except OSError:
            continue
    return False


_WARNED: set[tuple[str, str]] = set()  # the search path is built more than once per process


class CommitforgeSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not is_commitforge_search_path(search_path):
            return
        for dist, package in config_packages():
            problem = _problem(package)
            if problem is not None:
                if (dist, package) in _WARNED:
                    continue
                _WARNED.add((dist, package))
                print(f"commitforge: warning: config package {package!r} of plugin package {dist!r} {problem}; "
                      f"its configs are skipped (fix or uninstall {dist}, or exclude it with {ALLOW_ENV})",
                      file=sys.stderr)
                continue
            search_path.append(provider=f"commitforge:{dist}", path=f"pkg://{package}")
