"""Formats: how a UnitChange is laid out as special tokens and text.

- ``commitforge``: the project's own tokens (documented in docs/formats.md); the
  tokenizer appends those its vocabulary lacks, so embeddings must be resized.
- ``starcoder1``: OctoPack's commit format, ``<commit_before>{old}<commit_msg>`` as input
  and ``{subject}<commit_after>{new}<|endoftext|>`` as target.
- ``starcoder2``: ``<repo_name>``, ``<file_sep>`` context files, and the pull-request
  tokens ``<pr_file>``/``<pr_base_code>``/``<pr_diff>`` around the before/after code.
Formats that reuse a model's own tokens need no embedding resize with that model's
tokenizer; the build stats say whether a resize is needed.

Context items are ranked (best first): over budget, the lowest-ranked are dropped first,
then old code and long free text are cut from their end; the target is never cut.
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Any

from core.examples import Segment
from core.hookspecs import hookimpl

UNIT_KINDS = ("fn", "method", "struct", "enum", "union", "trait", "impl", "mod", "macro", "const", "static",
              "type", "window", "file", "class", "assign", "macro_call", "other")


_NUMBERED = re.compile(r"#\d+(?=::|$)")


def plain_qualname(qualname: str) -> str:
    """A qualified name as code would write it: without the ``#n`` that tells apart units of
    one name in a file (``#[cfg]`` variants, repeated impl blocks)."""
    return _NUMBERED.sub("", qualname) if "#" in qualname else qualname


def kind_of(kind: str) -> str:
    """A unit kind with a token of its own, or ``other`` (a plugin's new kind never breaks a build)."""
    return kind if kind in UNIT_KINDS else "other"
CHANGE_KINDS = ("added", "modified", "deleted", "renamed")


@dataclass
class CommitforgeFormatConfig:
    name: str = "commitforge"
    message: str = "subject"  # subject | message | none
    train_on_message: bool = False


class CommitforgeFormat:
    """``<|cf_repo|>repo<|cf_path|>path<|cf_msg|>subject<|cf_modified|><|cf_kind_fn|><|cf_qualname|>…
    <|cf_header|>impl…<|cf_ctx_start|><|cf_ctx_struct|>…<|cf_ctx_end|><|cf_old|>old<|cf_new|>new<|cf_end|>``"""

    def __init__(self, cfg: CommitforgeFormatConfig):
        self.cfg = cfg
        self.special_tokens = [
            "<|cf_repo|>", "<|cf_path|>", "<|cf_old_path|>", "<|cf_msg|>", "<|cf_qualname|>", "<|cf_header|>",
            "<|cf_ctx_start|>", "<|cf_ctx_end|>", "<|cf_old|>", "<|cf_new|>", "<|cf_end|>",
            *(f"<|cf_{c}|>" for c in CHANGE_KINDS),
            *(f"<|cf_kind_{k}|>" for k in UNIT_KINDS),
            *(f"<|cf_ctx_{k}|>" for k in UNIT_KINDS),
        ]

    def segments(self, c: dict[str, Any]) -> list[Segment]:
        tok = lambda t, name, target=False: Segment(name, t, special=True, target=target)  # noqa: E731
        segs = [tok("<|cf_repo|>", "repo_token"), Segment("repo", c["repo"], cuttable=True),
                tok("<|cf_path|>", "path_token"), Segment("path", c["path"])]
        if c.get("old_path"):
            segs += [tok("<|cf_old_path|>", "old_path_token"), Segment("old_path", c["old_path"])]
        message = {"subject": c["subject"], "message": c["message"], "none": ""}[self.cfg.message]
        if message:
            segs += [tok("<|cf_msg|>", "message_token"),
                     Segment("message", message, target=self.cfg.train_on_message, cuttable=not self.cfg.train_on_message)]
        segs += [tok(f"<|cf_{c['change']}|>", "change_token"), tok(f"<|cf_kind_{kind_of(c['kind'])}|>", "kind_token"),
                 tok("<|cf_qualname|>", "qualname_token"), Segment("qualname", plain_qualname(c["qualname"]))]
        if c.get("header"):
            segs += [tok("<|cf_header|>", "header_token"), Segment("header", c["header"], cuttable=True)]
        if c.get("context"):
            segs.append(Segment("context_token", "<|cf_ctx_start|>", special=True, bracket=True))
            for rank, item in enumerate(c["context"]):
                kind = kind_of(item["kind"])
                segs += [Segment("context_kind", f"<|cf_ctx_{kind}|>", special=True, drop_rank=rank),
                         Segment("context", f"{item['path']}\n{item['text']}", drop_rank=rank)]
            segs.append(Segment("context_token", "<|cf_ctx_end|>", special=True, bracket=True))
        segs += [tok("<|cf_old|>", "old_token"), Segment("old_code", c["old_code"], cuttable=True),
                 tok("<|cf_new|>", "new_token"), Segment("new_code", c["new_code"], target=True),
                 tok("<|cf_end|>", "end", target=True)]
        return segs


def _context_files(c: dict[str, Any], separator: str) -> list[Segment]:
    """Context items as files: ``{separator}{path}\n{text}\n``, droppable by rank."""
    segs: list[Segment] = []
    for rank, item in enumerate(c.get("context") or []):
        segs += [Segment("context_token", separator, special=True, drop_rank=rank),
                 Segment("context", f"{item['path']}\n{item['text']}\n", drop_rank=rank)]
    return segs


@dataclass
class StarCoder1FormatConfig:
    name: str = "starcoder1"


class StarCoder1Format:
    """OctoPack's commit format (StarCoder's own tokens): context files, if any, come first
    as ``<filename>path`` blocks."""

    special_tokens = ["<reponame>", "<filename>", "<commit_before>", "<commit_msg>", "<commit_after>", "<|endoftext|>"]

    def __init__(self, cfg: StarCoder1FormatConfig):
        self.cfg = cfg

    def segments(self, c: dict[str, Any]) -> list[Segment]:
        tok = lambda t, target=False: Segment(t.strip("<>|"), t, special=True, target=target)  # noqa: E731
        segs = [tok("<reponame>"), Segment("repo", c["repo"], cuttable=True), *_context_files(c, "<filename>")]
        segs += [tok("<filename>"), Segment("path", c["path"] + "\n"),
                 tok("<commit_before>"), Segment("old_code", c["old_code"], cuttable=True),
                 tok("<commit_msg>"), Segment("message", c["subject"], target=True),
                 tok("<commit_after>", target=True), Segment("new_code", c["new_code"], target=True),
                 tok("<|endoftext|>", target=True)]
        return segs


@dataclass
class StarCoder2FormatConfig:
    name: str = "starcoder2"


class StarCoder2Format:
    """StarCoder2's repository and pull-request tokens: ``<repo_name>repo``, context files as
    ``<file_sep>path\\ntext``, then ``<pr><pr_comment>subject<pr_file>path<pr_base_code>old<pr_diff>``
    as input and ``new<|endoftext|>`` as target."""

    special_tokens = ["<repo_name>", "<file_sep>", "<pr>", "<pr_comment>", "<pr_file>", "<pr_base_code>", "<pr_diff>",
                      "<|endoftext|>"]

    def __init__(self, cfg: StarCoder2FormatConfig):
        self.cfg = cfg

    def segments(self, c: dict[str, Any]) -> list[Segment]:
        tok = lambda t, target=False: Segment(t.strip("<>|"), t, special=True, target=target)  # noqa: E731
        segs = [tok("<repo_name>"), Segment("repo", c["repo"], cuttable=True), *_context_files(c, "<file_sep>")]
        segs += [tok("<pr>"), tok("<pr_comment>"), Segment("message", c["subject"], cuttable=True),
                 tok("<pr_file>"), Segment("path", c["path"]),
                 tok("<pr_base_code>"), Segment("old_code", c["old_code"], cuttable=True),
                 tok("<pr_diff>"), Segment("new_code", c["new_code"], target=True),
                 tok("<|endoftext|>", target=True)]
        return segs


@hookimpl
def register_format(register):
    register("commitforge", CommitforgeFormat, CommitforgeFormatConfig)
    register("starcoder1", StarCoder1Format, StarCoder1FormatConfig)
    register("starcoder2", StarCoder2Format, StarCoder2FormatConfig)
