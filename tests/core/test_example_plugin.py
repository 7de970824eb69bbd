"""The example third-party package (examples/commitforge-example) installed with pip, as
a user would: its entry points, its config files on Hydra's search path, the CLI run with
its chunker, COMMITFORGE_PLUGINS and a broken package; and the search-path plugin itself.

The package is installed into a temporary directory put on the subprocesses' PYTHONPATH
(unless it is installed already), so the test environment's own set of plugins, which
other tests list, stays as it was.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomllib
from hydra import compose, initialize_config_dir
from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from core.config import conf_dir, register_schema
from core.errors import CommitforgeError
from core.registry import PluginRegistry
from hydra_plugins.commitforge_searchpath import CONF_GROUP, CommitforgeSearchPathPlugin
from plugins import BUILTIN_PLUGINS

from ..conftest import ScriptedRepo, manifest, read_chunks

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "commitforge-example"
EXAMPLE_PROJECT = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))["project"]


@pytest.fixture(scope="module")
def example_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a process that has commitforge-example installed."""
    env = {k: v for k, v in os.environ.items() if k not in ("COMMITFORGE_PLUGINS", "COMMITFORGE_TRACEBACK")}
    try:
        importlib.metadata.distribution(EXAMPLE_PROJECT["name"])
        return env  # installed in this environment already
    except importlib.metadata.PackageNotFoundError:
        pass
    root = tmp_path_factory.mktemp("example")
    src = root / "src"  # a copy: setuptools builds in the source tree
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
           "--disable-pip-version-check", "--root-user-action=ignore", "--target", str(target)]
    proc = subprocess.run(pip + ["--no-build-isolation", "--no-index", str(src)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:  # no usable setuptools here: let pip bring the build backend
        proc = subprocess.run(pip + [str(src)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), env.get("PYTHONPATH")) if p)
    return env


def cli(*args: str, env: dict[str, str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    full = {**env, "COMMITFORGE_CACHE": str(cwd / "cache"), **extra}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=cwd, env=full, capture_output=True, text=True,
                          check=False)


SMALL = """pub fn add(a: u32, b: u32) -> u32 {
    a + b
}

// subtraction never wraps below zero
pub fn sub(a: u32, b: u32) -> u32 {
    a.saturating_sub(b)
}

pub fn mul(a: u32, b: u32) -> u32 {
    a * b
}
"""
BIG = "pub fn table() -> u64 {\n    let mut t = 0u64;\n" + "".join(
    f"    t = t.wrapping_mul(31).wrapping_add({i}u64 * 7919);\n" for i in range(40)) + "    t\n}\n"
MAX_CHARS = 400


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> ScriptedRepo:
    r = ScriptedRepo(tmp_path_factory.mktemp("blocks") / "repo")
    r.commit("add arithmetic", {"crates/geo/src/lib.rs": SMALL + "\n" + BIG})
    r.commit("sub: wrap instead", {"crates/geo/src/lib.rs": SMALL.replace("saturating_sub", "wrapping_sub") + "\n" + BIG})
    r.commit("drop add", {"crates/geo/src/lib.rs": SMALL[SMALL.index("// subtraction"):].replace(
        "saturating_sub", "wrapping_sub") + "\n" + BIG})
    return r


@pytest.fixture
def example_source(monkeypatch):
    """commitforge_example importable from its source tree, for this test only."""
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0] == "commitforge_example":
            del sys.modules[name]


def test_example_config_files_restate_its_schemas(example_source):
    plugin = importlib.import_module("commitforge_example.plugin")
    reg = PluginRegistry(load_entry_points=False, builtins=BUILTIN_PLUGINS + (plugin,))
    ours = [p for p in reg.all() if p.factory.__module__.startswith("commitforge_example.")]
    assert [(p.kind, p.name) for p in ours] == [("chunker", "blocks")]
    conf = EXAMPLE / "src" / "commitforge_example" / "conf"
    for info in ours:
        cfg = OmegaConf.load(conf / info.kind / f"{info.name}.yaml")
        assert dataclasses.asdict(reg.validate(info.kind, cfg)) == dataclasses.asdict(info.schema())
    with pytest.raises(CommitforgeError, match="chunker.max_chars=0 must be positive"):
        reg.create("chunker", {"name": "blocks", "max_chars": 0})
    with pytest.raises(CommitforgeError, match=r"bad config chunker.width for chunker 'blocks'.*known keys: name, max_chars, merged_kind"):
        reg.validate("chunker", {"name": "blocks", "width": 3})


def test_plugins_lists_the_example_with_its_package_and_version(example_env, tmp_path):
    proc = cli("plugins", env=example_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert ["chunker", "blocks", EXAMPLE_PROJECT["name"], EXAMPLE_PROJECT["version"]] in rows
    assert ["chunker", "ast", "commitforge", "0.1.0"] in rows


def test_chunker_blocks_runs_end_to_end(example_env, repo, tmp_path):
    out = tmp_path / "run"
    proc = cli("chunker=blocks", f"chunker.max_chars={MAX_CHARS}", f"repo={repo.path}", "stages=[mine,chunk]",
               f"out_dir={out}", "executor.workers=1", env=example_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = read_chunks(out)
    by_commit: dict[str, list[dict]] = {}
    for r in rows:
        by_commit.setdefault(r["subject"], []).append(r)
    # the three small functions are one block (the comment between them included); the
    # big one is a block of its own, cut at statement boundaries into parts
    first = by_commit["add arithmetic"]
    block = next(r for r in first if r["kind"] == "window")
    assert block["qualname"] == "geo::add..mul" and block["change"] == "added"
    assert block["new_code"] == SMALL.rstrip("\n") and block["new_lines"] == [1, 12]
    table = [r for r in first if r["qualname"] == "geo::table"]
    assert table and all(r["kind"] == "fn" and r["parts"] == len(table) > 1 for r in table)
    assert all(len(r["new_code"]) <= MAX_CHARS for r in table)
    # editing one function emits its whole block, neighbours included (ast: sub alone)
    [edit] = by_commit["sub: wrap instead"]
    assert (edit["change"], edit["qualname"]) == ("modified", "geo::add..mul")
    assert "saturating_sub" in edit["old_code"] and "wrapping_sub" in edit["new_code"]
    assert "pub fn add" in edit["new_code"] and "pub fn mul" in edit["new_code"]
    # removing the block's first unit renames the block; it still pairs with its old self
    [drop] = by_commit["drop add"]
    assert (drop["change"], drop["old_qualname"], drop["qualname"]) == ("renamed", "geo::add..mul", "geo::sub..mul")
    m = manifest(out)
    assert m["plugins"]["chunker"] == "blocks"
    assert m["config"]["chunker"] == {"name": "blocks", "max_chars": MAX_CHARS, "merged_kind": "window"}


def test_the_packages_experiment_preset_composes(example_env, tmp_path):
    proc = cli("+experiment=blocks", "--cfg", "job", env=example_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "chunker:\n  name: blocks\n  max_chars: 3000\n  merged_kind: window\n" in text
    assert "context:\n  name: same_file\n" in text


def test_commitforge_plugins_selects_distributions(example_env, repo, tmp_path):
    listed = cli("plugins", env=example_env, cwd=tmp_path, COMMITFORGE_PLUGINS="")
    assert listed.returncode == 0 and " blocks " not in listed.stdout
    only = cli("plugins", env=example_env, cwd=tmp_path, COMMITFORGE_PLUGINS=f"other-pkg,{EXAMPLE_PROJECT['name']}")
    assert " blocks " in only.stdout
    # excluded: its config file is not on the search path...
    hidden = cli("chunker=blocks", f"repo={repo.path}", "stages=[mine]", f"out_dir={tmp_path / 'a'}",
                 env=example_env, cwd=tmp_path, COMMITFORGE_PLUGINS="")
    assert hidden.returncode == 2
    assert hidden.stderr.splitlines() == ["commitforge: error: chunker=blocks: chunker has no option 'blocks'; "
                                          "choose one of ast, window"]
    # ...and its plugin is not registered
    named = cli("chunker=window", "chunker.name=blocks", f"repo={repo.path}", "stages=[mine]",
                f"out_dir={tmp_path / 'b'}", env=example_env, cwd=tmp_path, COMMITFORGE_PLUGINS="")
    assert named.returncode == 2
    assert named.stderr.splitlines() == ["commitforge: error: unknown chunker 'blocks'; available: ast, window"]


def broken_distribution(where: Path) -> Path:
    """A distribution laid out by hand: its plugin raises on import, its config package is missing."""
    (where / "commitforge_broken").mkdir(parents=True)
    (where / "commitforge_broken" / "__init__.py").write_text('raise RuntimeError("libfoo.so: cannot open shared object")\n')
    info = where / "commitforge_broken-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: commitforge-broken\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text("[commitforge]\nbroken = commitforge_broken\n\n"
                                           "[commitforge.conf]\nbroken = commitforge_broken_conf\n")
    return where


def test_a_broken_plugin_is_named_with_its_package(example_env, repo, tmp_path):
    broken = broken_distribution(tmp_path / "broken")
    env = {**example_env, "PYTHONPATH": os.pathsep.join(p for p in (str(broken), example_env.get("PYTHONPATH")) if p)}
    listed = cli("plugins", env=env, cwd=tmp_path)
    assert listed.returncode == 2
    assert listed.stderr.splitlines() == [(
        "commitforge: error: plugin 'broken' from package 'commitforge-broken' failed to load: RuntimeError: "
        "libfoo.so: cannot open shared object; fix or uninstall commitforge-broken, or exclude it with COMMITFORGE_PLUGINS")]
    run = cli("chunker=blocks", f"repo={repo.path}", "stages=[mine]", f"out_dir={tmp_path / 'a'}", env=env, cwd=tmp_path)
    assert run.returncode == 2
    warning, error = run.stderr.splitlines()
    assert warning == ("commitforge: warning: config package 'commitforge_broken_conf' of plugin package "
                       "'commitforge-broken' is not installed; its configs are skipped (fix or uninstall "
                       "commitforge-broken, or exclude it with COMMITFORGE_PLUGINS)")
    assert error.startswith("commitforge: error: plugin 'broken' from package 'commitforge-broken' failed to load")
    # leaving the broken package out is the way around it
    ok = cli("chunker=blocks", f"repo={repo.path}", "stages=[mine]", f"out_dir={tmp_path / 'b'}", env=env, cwd=tmp_path,
             COMMITFORGE_PLUGINS=EXAMPLE_PROJECT["name"])
    assert ok.returncode == 0, ok.stderr
    assert "commitforge-broken" not in ok.stderr  # neither its plugin nor its config package is looked at


# -- the search-path plugin, in process (no installation needed) ----------------------------
def fake_conf_entry_points(monkeypatch, *entries: tuple[str, str, str]) -> None:
    """``commitforge.conf`` entry points (distribution, name, value) instead of the installed ones."""
    eps = [SimpleNamespace(name=name, value=value, dist=SimpleNamespace(name=dist, version="1.0"))
           for dist, name, value in entries]
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: list(eps) if group == CONF_GROUP else real(group=group, **kw))


def searched(main: str) -> list[tuple[str, str]]:
    path = ConfigSearchPathImpl()
    path.append("hydra", "pkg://hydra.conf")
    path.append("main", main)
    CommitforgeSearchPathPlugin().manipulate_search_path(path)
    return [(e.provider, e.path) for e in path.get_path()][2:]


def test_search_path_plugin_is_discovered_by_hydra():
    # Hydra's scan re-executes modules already imported: compare classes by name
    found = {f"{c.__module__}.{c.__qualname__}" for c in Plugins.instance().discover(SearchPathPlugin)}
    assert "hydra_plugins.commitforge_searchpath.CommitforgeSearchPathPlugin" in found


def test_search_path_adds_allowed_config_packages_after_commitforges(monkeypatch, tmp_path, capsys):
    fake_conf_entry_points(monkeypatch, ("zeta-pkg", "z", "hydra.conf"), ("alpha-pkg", "a", "plugins"),
                           ("alpha-pkg", "a2", "plugins"), ("gone-pkg", "g", "gone_pkg.conf"), ("mod-pkg", "m", "shutil"))
    monkeypatch.delenv("COMMITFORGE_PLUGINS", raising=False)
    ours = f"file://{conf_dir()}"
    assert searched(ours) == [("commitforge:alpha-pkg", "pkg://plugins"), ("commitforge:zeta-pkg", "pkg://hydra.conf")]
    warnings = capsys.readouterr().err.splitlines()
    assert [w.split(" of plugin package ")[1].split(";")[0] for w in warnings] == [
        "'gone-pkg' is not installed", "'mod-pkg' is a module, not a package"]
    monkeypatch.setenv("COMMITFORGE_PLUGINS", "zeta-pkg")
    assert searched(ours) == [("commitforge:zeta-pkg", "pkg://hydra.conf")]
    monkeypatch.setenv("COMMITFORGE_PLUGINS", "")
    assert searched(ours) == []
    # another Hydra application's search path is left alone
    monkeypatch.delenv("COMMITFORGE_PLUGINS")
    assert searched(str(tmp_path)) == []


def test_configs_of_a_declared_package_compose(monkeypatch, tmp_path):
    pkg = tmp_path / "cf_tiles_conf"
    (pkg / "chunker").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "chunker" / "tiles.yaml").write_text("name: tiles\nwidth: 8\n")
    (pkg / "chunker" / "ast.yaml").write_text("name: ast\nmax_chars: 1\n")  # never shadows the built-in
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_conf_entry_points(monkeypatch, ("cf-tiles", "tiles", "cf_tiles_conf"))
    monkeypatch.delenv("COMMITFORGE_PLUGINS", raising=False)
    register_schema()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        assert dict(compose("config", overrides=["chunker=tiles"]).chunker) == {"name": "tiles", "width": 8}
        assert compose("config", overrides=["chunker=ast"]).chunker.max_chars == 4000
