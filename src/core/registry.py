"""The plugin registry: pluggy underneath, one typed surface on top.

Built-in plugins and third-party packages (entry-point group ``commitforge``) register
through the same hooks. ``COMMITFORGE_PLUGINS`` narrows which third-party
distributions load (comma-separated distribution names; empty string loads none).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from core import __version__, hookspecs
from core.errors import CommitforgeError

ENTRY_POINT_GROUP = hookspecs.PROJECT


@dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    factory: Callable[[Any], Any]
    schema: type
    package: str
    version: str


class PluginRegistry:
    """Collects the plugins every hook registers, refusing duplicate names."""

    def __init__(self, *, load_entry_points: bool = True, builtins: tuple[str | object, ...] | None = None):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._plugins: dict[str, dict[str, PluginInfo]] = {k: {} for k in hookspecs.KINDS}
        if builtins is None:
            from plugins import BUILTIN_PLUGINS

            builtins = BUILTIN_PLUGINS
        for plugin in builtins:
            # names of built-in modules, or plugin objects (tests pass their own)
            module = importlib.import_module(plugin) if isinstance(plugin, str) else plugin
            self.pm.register(module, name=plugin if isinstance(plugin, str) else None)
        self._dists: dict[int, tuple[str, str]] = {}
        if load_entry_points:
            self._load_entry_points()
        # a misspelled hook in a plugin fails loudly instead of never being called
        self.pm.check_pending()
        for kind in hookspecs.KINDS:
            self._collect(kind)

    def _load_entry_points(self) -> None:
        allowed = os.environ.get("COMMITFORGE_PLUGINS")
        allow = None if allowed is None else {a.strip() for a in allowed.split(",") if a.strip()}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "unknown"
            version = ep.dist.version if ep.dist else "?"
            if allow is not None and dist not in allow:
                continue
            if self.pm.get_plugin(ep.name) is not None:
                continue
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - re-raised with the plugin named
                raise CommitforgeError(
                    f"plugin {ep.name!r} from package {dist!r} failed to load: {type(exc).__name__}: {exc}; "
                    f"fix or uninstall {dist}, or exclude it with COMMITFORGE_PLUGINS"
                ) from exc
            self.pm.register(module, name=ep.name)
            self._dists[id(module)] = (dist, version)

    def _provider(self, module: object) -> tuple[str, str]:
        return self._dists.get(id(module), ("commitforge", __version__))

    def _collect(self, kind: str) -> None:
        hook = getattr(self.pm.hook, f"register_{kind}")
        for impl in hook.get_hookimpls():
            package, version = self._provider(impl.plugin)

            def register(name: str, factory: Callable[[Any], Any], schema: type, *,
                         _package=package, _version=version, _plugin=impl.plugin_name) -> None:
                if not dataclasses.is_dataclass(schema):
                    raise CommitforgeError(
                        f"{kind} plugin {name!r} from {_package} ({_plugin}) must pass a dataclass schema"
                    )
                existing = self._plugins[kind].get(name)
                if existing is not None:
                    raise CommitforgeError(
                        f"duplicate {kind} plugin name {name!r}: provided by {existing.package} "
                        f"and by {_package} ({_plugin}); uninstall one of them"
                    )
                self._plugins[kind][name] = PluginInfo(kind, name, factory, schema, _package, _version)

            try:
                impl.function(register=register)
            except CommitforgeError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise CommitforgeError(
                    f"plugin {impl.plugin_name!r} from package {package!r} failed in register_{kind}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc

    # -- queries -----------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._plugins[kind])

    def all(self) -> list[PluginInfo]:
        return [info for kind in hookspecs.KINDS for _, info in sorted(self._plugins[kind].items())]

    def get(self, kind: str, name: str) -> PluginInfo:
        if kind not in self._plugins:
            raise CommitforgeError(f"unknown plugin kind {kind!r}; kinds are: {', '.join(hookspecs.KINDS)}")
        try:
            return self._plugins[kind][name]
        except KeyError:
            available = ", ".join(self.names(kind)) or "none installed"
            raise CommitforgeError(f"unknown {kind} {name!r}; available: {available}") from None

    def validate(self, kind: str, cfg: Mapping[str, Any] | DictConfig) -> Any:
        """Check a group config against the selected plugin's schema; return the typed config."""
        name = cfg.get("name") if cfg is not None else None
        if not name:
            raise CommitforgeError(f"the {kind} config has no 'name'; choose one with {kind}=NAME "
                                   f"(available: {', '.join(self.names(kind)) or 'none installed'})")
        info = self.get(kind, str(name))
        schema = OmegaConf.structured(info.schema)
        try:
            merged = OmegaConf.merge(schema, cfg)
            return OmegaConf.to_object(merged)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
            known = ", ".join(f.name for f in dataclasses.fields(info.schema))
            reason = str(getattr(exc, "msg", exc)).splitlines()[0]
            raise CommitforgeError(
                f"bad config {kind}.{key} for {kind} {name!r}: {reason}; known keys: {known}"
            ) from None

    def create(self, kind: str, cfg: Mapping[str, Any] | DictConfig) -> Any:
        typed = self.validate(kind, cfg)
        return self.get(kind, typed.name).factory(typed)
