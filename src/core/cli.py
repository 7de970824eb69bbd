"""``python -m core`` / ``commitforge``: the Hydra app, plus ``plugins`` to list plugins and
``cache`` to list or prune the cache directory (core.cache_admin)."""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import os
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from core.config import RootConfig, conf_dir, register_schema
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
    except KeyboardInterrupt:
        if os.environ.get("COMMITFORGE_TRACEBACK"):
            raise
        print("commitforge: interrupted; run the same command again to resume (finished stages "
              "and chunk batches are kept)", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:  # a run directory or cache that cannot be written, a full disk
        if os.environ.get("COMMITFORGE_TRACEBACK") or in_multirun() or exc.filename is None:
            raise
        print(f"commitforge: error: {exc.strerror or exc}: {exc.filename}; check that the path is a directory "
              "you can write (out_dir=…, cache_dir=… or COMMITFORGE_CACHE)", file=sys.stderr)
        sys.exit(1)


def _writable(value: str) -> str | None:
    """Why directory ``value`` (which may not exist yet) cannot be written, or None."""
    path = os.path.abspath(os.path.expanduser(value))
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def _check_dirs(args: list[str]) -> None:
    """out_dir= and cache_dir= given on the command line are checked before Hydra starts
    (it would fail with a traceback configuring its log file in an unwritable out_dir)."""
    for arg in args:
        key, sep, value = arg.lstrip("+").partition("=")
        if sep and key in ("out_dir", "cache_dir") and value and value != "null" and "," not in value:
            why = _writable(value)
            if why is not None:
                print(f"commitforge: error: {key}={value} cannot be used: {why}; choose a directory you can write",
                      file=sys.stderr)
                sys.exit(2)


_NOT_PLAIN = set("()[]{}'\"$*\\")  # sweep functions, lists, quoting, interpolation: Hydra reads these


def _choices(args: list[str]) -> list[tuple[str, str, list[str]]]:
    """(argument, group, options) of each ``group=option`` override (``+group=``, sweeps
    ``group=a,b``): a key without dots, which may name a config group."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+")
        if not sep or not key or key.startswith("~") or "." in key or "@" in key or not value:
            continue
        if value == "null" or _NOT_PLAIN & set(value):
            continue
        out.append((arg, key, value.split(",")))
    return out


_SETTINGS = {f.name for f in dataclasses.fields(RootConfig)}  # its groups have a folder in conf/


def _known_here(key: str, values: list[str]) -> bool:
    """Whether ``key=values`` needs no look at Hydra's search path: options that commitforge's
    own conf/ has (``+experiment=ctx4000``) or a plain setting (``repo=PATH``). Only the
    others (a plugin's config package, a typo) are checked by Hydra, which takes a few
    hundredths of a second."""
    folder = conf_dir() / key
    if folder.is_dir():
        return all((folder / f"{value}.yaml").is_file() for value in values)
    return key in _SETTINGS


def _check_choices(args: list[str]) -> None:
    """A config group option that does not exist (``+experiment=ctx400``) ends with one
    line naming it and the group's options; Hydra would print a page with its search path."""
    wanted = [choice for choice in _choices(args) if not _known_here(choice[1], choice[2])]
    if not wanted or any(arg.lstrip("+").startswith("hydra.searchpath=") for arg in args):
        return  # options in directories the command line adds: Hydra looks them up
    import difflib

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()  # the search path plugins' configs included
        for arg, group, values in wanted:
            options = loader.get_group_options(group)
            if not options:
                continue  # not a group: a plain setting, checked with the config
            for value in values:
                if value not in options:
                    near = difflib.get_close_matches(value, options, n=1)
                    hint = f"did you mean {group}={near[0]}? " if near else ""
                    print(f"commitforge: error: {arg}: {group} has no option {value!r}; {hint}"
                          f"choose one of {', '.join(options)}", file=sys.stderr)
                    sys.exit(2)


def _sweep_train_vocab(args: list[str]) -> None:
    """A multirun over ``tokenizer.vocab_size`` has the ``bpe`` tokenizer trained once, to its
    largest size: the jobs' trainings on one corpus wait for each other (a claim), and each
    smaller size is cut from the largest (``plugins.tokenizers.derive_bpe``: the same
    tokenizer its own training would make). Told to the jobs, in this process or the
    launcher's, by ``BPE_TRAIN_VOCAB_ENV``, unless it is set already."""
    from plugins.tokenizers import BPE_TRAIN_VOCAB_ENV

    if not {"-m", "--multirun"} & set(args) or BPE_TRAIN_VOCAB_ENV in os.environ:
        return
    sizes = []
    for arg in args:
        if arg.partition("=")[0].lstrip("+") != "tokenizer.vocab_size":
            continue
        from hydra.core.override_parser.overrides_parser import OverridesParser

        try:
            override = OverridesParser.create().parse_override(arg)
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except Exception:  # noqa: BLE001 - Hydra reports a malformed override itself
            return
        sizes += [v for v in values if type(v) is int]
    if len(sizes) > 1:
        os.environ[BPE_TRAIN_VOCAB_ENV] = str(max(sizes))


def list_plugins() -> None:
    from core.registry import PluginRegistry

    rows = [(p.kind, p.name, p.package, p.version) for p in PluginRegistry().all()]
    widths = [max(len(r[i]) for r in rows + [("kind", "name", "package", "version")]) for i in range(4)]
    for row in [("kind", "name", "package", "version")] + rows:
        print("  ".join(col.ljust(w) for col, w in zip(row, widths)).rstrip())


# a YAML key that could set Hydra's run mode (``hydra: {mode: MULTIRUN}``) or add to the
# search path (``hydra: {searchpath: [...]}``), at any depth
_MODE_KEYS = re.compile(rb"^[ \t]*(?:mode|searchpath)[ \t]*:", re.MULTILINE)


def _source_dir(source) -> Path | None:
    """The directory a Hydra config source reads, or None when it is not one."""
    if source.scheme() == "file":
        return Path(source.path)
    if source.scheme() == "pkg":
        try:
            spec = importlib.util.find_spec(source.path)
        except Exception:  # noqa: BLE001 - Hydra reports a broken config package itself
            return None
        locations = list(spec.submodule_search_locations or []) if spec else []
        return Path(locations[0]) if len(locations) == 1 else None
    return None


def _sets_mode(node, group: str) -> bool:
    """Whether a structured config stored in ``group`` (``hydra/launcher/``) could set
    ``hydra.mode``: a launcher's or sweeper's node fills its own package only."""
    from omegaconf import OmegaConf

    package = (node.package or group.rstrip("/").replace("/", ".")).replace("_global_", "").strip(".")
    config = node.node if OmegaConf.is_config(node.node) else OmegaConf.structured(node.node)
    key = {"": "hydra.mode", "hydra": "mode"}.get(package)
    return key is not None and OmegaConf.select(config, key, default=None) is not None


def _mode_may_be_configured(loader, overrides: list[str]) -> bool:
    """Whether a config file or override could set ``hydra.mode``.

    Hydra composes the whole configuration twice for every run: once only to read
    ``hydra.mode`` (a config may ask for a multirun without ``-m``), then for the run.
    When no config on the search path has such a key, the first composition can only
    answer "not set" (0.17 s of every run on a 2-core machine); this tells the two
    cases apart by reading the files' text. Any doubt (a source it cannot read, a
    structured config outside commitforge, an override under ``hydra``) says "may"."""
    from hydra.core.config_store import ConfigStore

    for arg in overrides:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key.startswith(("hydra.mode", "hydra.searchpath", "hydra/")):
            return True
    for source in loader.repository.get_sources():
        if source.provider == "hydra":  # Hydra's own configs leave the mode unset
            continue
        if source.scheme() == "structured":
            stack = [("", ConfigStore.instance().repo)]
            while stack:
                group, items = stack.pop()
                for name, item in items.items():
                    if isinstance(item, dict):
                        stack.append((f"{group}{name}/", item))
                    elif item.provider != "hydra" and _sets_mode(item, group):
                        return True
            continue
        root = _source_dir(source)
        if root is None or not root.is_dir():
            return True
        for path in root.rglob("*.yaml"):
            try:
                if _MODE_KEYS.search(path.read_bytes()):
                    return True
            except OSError:
                return True
    return False


def _compose_once() -> None:
    """Skip Hydra's look-ahead composition for ``hydra.mode`` where no config can set it
    (see ``_mode_may_be_configured``); where one may, Hydra composes as it always does."""
    from hydra._internal.hydra import Hydra

    look_ahead = Hydra.get_mode
    if getattr(look_ahead, "commitforge", False):
        return

    def get_mode(self, config_name, overrides):
        if _mode_may_be_configured(self.config_loader, overrides):
            return look_ahead(self, config_name, overrides)
        return None  # what Hydra's look-ahead returns when no config sets the mode

    get_mode.commitforge = True
    Hydra.get_mode = get_mode


_COMPOSED_KEPT = 32  # configs kept for a batch's jobs (each job's launch carries them all)


def _reuse_validated_configs() -> None:
    """Hydra composes each job of a sweep twice: its sweeper composes the jobs of a batch
    to check them before any is launched, then each job composes its config again where
    it runs (0.2-0.35 s in a fresh joblib worker, about a tenth of a job over 120 commits
    of rusty-kaspa). The configs the check composed are kept on Hydra's config loader,
    which goes to the jobs with the launcher's context (pickled for a worker), and a job
    takes its config from there: the same config, with what depends on the process the
    job runs in (its working directory, the environment variables ``hydra.job.env_copy``
    names) set again there. A job whose config is not kept composes it as before."""
    import copy

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from omegaconf import OmegaConf, open_dict

    compose = ConfigLoaderImpl.load_sweep_config
    if getattr(compose, "commitforge", False):
        return

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = (str(master_config.hydra.job.config_name),
               tuple(OmegaConf.to_container(master_config.hydra.overrides.hydra)), tuple(sweep_overrides))
        kept = self.__dict__.setdefault("_commitforge_composed", {})
        config = kept.pop(key, None)
        if config is None:
            config = compose(self, master_config, sweep_overrides)
            if len(kept) < _COMPOSED_KEPT:
                kept[key] = copy.deepcopy(config)  # as composed: the caller may change its copy
            return config
        with open_dict(config):
            config.hydra.runtime.cwd = os.getcwd()
            for name in config.hydra.job.env_copy:
                config.hydra.job.env_set[name] = os.environ[name]
        return config

    load_sweep_config.commitforge = True
    ConfigLoaderImpl.load_sweep_config = load_sweep_config


def _task(cfg: DictConfig) -> None:
    from core.pipeline import run

    _handled(run, cfg)


# here, not in main(): a joblib worker imports this module (unpickling _task) but runs no main()
_reuse_validated_configs()


def main() -> None:
    if sys.argv[1:2] == ["plugins"]:
        _handled(list_plugins)
        return
    if sys.argv[1:2] == ["cache"]:
        from core import cache_admin

        sys.exit(_handled(cache_admin.main, sys.argv[2:]))
    _check_dirs(sys.argv[1:])
    register_schema()
    _check_choices(sys.argv[1:])
    _sweep_train_vocab(sys.argv[1:])
    _compose_once()
    app = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_task)
    app()
    # what the run built goes with the process: the interpreter's collections at shutdown
    # would walk all of it first (0.17 s of an update of rusty-kaspa, its 3.2 s)
    gc.freeze()
