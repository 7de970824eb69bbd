"""The root config schema and where the config directory lives.

Group configs (``source``, ``chunker``...) are validated against the schema of the plugin
they select (see ``PluginRegistry.validate``), so a third-party plugin's keys are
checked exactly like a built-in's. The root schema below catches mistyped top-level
keys, including ones that come from experiment files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore

from core.redact import RedactConfig
from omegaconf import OmegaConf

STAGES = ("mine", "chunk", "build")


@dataclass
class PairingConfig:
    rename_similarity: float = 0.6  # text similarity (name masked) to pair a renamed unit


@dataclass
class DedupConfig:
    exact: bool = True
    near: bool = True  # MinHash LSH near-duplicates
    threshold: float = 0.85  # estimated Jaccard similarity of token 5-grams
    num_perm: int = 128
    compare: str | None = None  # edit | code; null: the builder's choice (commit: edit, fim and file: code), code under split=random


@dataclass
class RootConfig:
    repo: str | None = None  # a git repository; null runs on the built-in demo repository
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    out_dir: str | None = None
    cache_dir: str = "???"
    max_file_bytes: int = 1_000_000  # larger blobs are skipped (counted as too_large)
    progress: bool | None = None  # progress bars on standard error; null: when it is a terminal
    languages: list[str] = field(default_factory=list)  # more languages besides `language`, with defaults
    redact: RedactConfig = field(default_factory=RedactConfig)
    reuse: bool = True  # reuse finished chunk-stage batches from the cache (see core.stage_cache)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    source: Any = None
    language: Any = None
    chunker: Any = None
    context: Any = None
    tokenizer: Any = None
    format: Any = None
    builder: Any = None
    split: Any = None
    writer: Any = None
    executor: Any = None


def register_schema() -> None:
    """Store the root schema and the ``cf.either`` resolver; call before composing."""
    ConfigStore.instance().store(name="commitforge_schema", node=RootConfig)
    # ${cf.either:a,b}: a unless it is null (oc.select only falls back for missing keys)
    OmegaConf.register_new_resolver("cf.either", lambda a, b: b if a is None else a, replace=True)


def conf_dir() -> Path:
    """conf/ ships inside the wheel as core/conf; an editable install uses the repository's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"commitforge's config directory is missing (looked in {here / 'conf'}); reinstall commitforge")
