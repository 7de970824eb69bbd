"""The plugin registry: built-ins, third-party entry points, clashes and unknown names."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from core.errors import CommitforgeError
from core.hookspecs import KINDS, hookimpl
from core.registry import PluginRegistry
from plugins import BUILTIN_PLUGINS


@dataclass
class EchoConfig:
    name: str = "window"
    width: int = 3


class ThirdParty:
    @hookimpl
    def register_chunker(self, register):
        register("window", dict, EchoConfig)


def test_builtins_register_every_plugin_through_hooks():
    reg = PluginRegistry(load_entry_points=False)
    assert reg.names("chunker") == ["ast", "window"]
    assert reg.names("language") == ["python", "rust"] and reg.names("source") == ["git"]
    assert reg.names("tokenizer") == ["bpe", "hf"] and reg.names("format") == ["commitforge", "starcoder1", "starcoder2"]
    assert reg.names("split") == ["path", "random", "temporal"] and reg.names("builder") == ["commit", "file", "fim"]
    assert reg.names("writer") == ["hf", "jsonl", "legacy", "parquet", "torch"]
    assert all(p.package == "commitforge" for p in reg.all())
    assert set(KINDS) >= {p.kind for p in reg.all()}


def test_duplicate_name_names_both_providers():
    with pytest.raises(CommitforgeError, match=r"duplicate chunker plugin name 'window': provided by commitforge and by"):
        PluginRegistry(load_entry_points=False, builtins=BUILTIN_PLUGINS + (ThirdParty(),))


def test_unknown_name_lists_available_and_validate_types_config():
    reg = PluginRegistry(load_entry_points=False)
    with pytest.raises(CommitforgeError, match="unknown chunker 'semantic'; available: ast, window"):
        reg.get("chunker", "semantic")
    with pytest.raises(CommitforgeError, match="unknown context 'callgraph'; available: imports, none, repomap, same_file"):
        reg.get("context", "callgraph")
    typed = reg.validate("chunker", {"name": "ast", "max_chars": "8000"})
    assert typed.max_chars == 8000
    with pytest.raises(CommitforgeError, match=r"bad config chunker.max_chars for chunker 'ast'"):
        reg.validate("chunker", {"name": "ast", "max_chars": "lots"})


def test_misspelled_hook_fails_loudly():
    class Typo:
        @hookimpl
        def register_chunkers(self, register):  # plural: not a hook
            pass

    with pytest.raises(Exception, match="unknown hook 'register_chunkers'"):
        PluginRegistry(load_entry_points=False, builtins=BUILTIN_PLUGINS + (Typo(),))


def fake_entry_points(monkeypatch, module_or_error):
    def load():
        if isinstance(module_or_error, Exception):
            raise module_or_error
        return module_or_error

    ep = SimpleNamespace(name="acme", dist=SimpleNamespace(name="acme-commitforge", version="2.1"), load=load)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [ep] if group == "commitforge" else real(group=group, **kw))


def test_entry_point_plugins_load_with_their_distribution(monkeypatch):
    class Acme:
        @hookimpl
        def register_chunker(self, register):
            register("acme", dict, EchoConfig)

    fake_entry_points(monkeypatch, Acme())
    info = PluginRegistry().get("chunker", "acme")
    assert (info.package, info.version) == ("acme-commitforge", "2.1")
    monkeypatch.setenv("COMMITFORGE_PLUGINS", "")
    assert "acme" not in PluginRegistry().names("chunker")


def test_broken_plugin_is_named_with_its_package(monkeypatch):
    fake_entry_points(monkeypatch, ImportError("No module named 'acme_internal'"))
    with pytest.raises(CommitforgeError, match="plugin 'acme' from package 'acme-commitforge' failed to load"):
        PluginRegistry()
