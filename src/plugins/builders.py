"""Builders: ``commit`` (one example per unit change, before and after), ``file`` (code
at a snapshot, by unit or whole file) and ``fim`` (fill-in-the-middle on the code after
each change)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.blob_cache import unusable
from core.build_memo import Memo, decode, decode_layout, encode, encode_layout
from core.changes import release, whole
from core.chunking import (
    chunk_file,
    module_paths,
    naming_files,
    project_file_names,
    redact_row,
)
from core.errors import CommitforgeError
from core.examples import Format, Segment, Tokenizer, assemble, encode_layouts
from core.gitio import BlobReader
from core.hookspecs import hookimpl
from core.language import file_extension
from core.progress import progress
from core.stats import Counter


@dataclass
class CommitBuilderConfig:
    name: str = "commit"
    max_tokens: int = 2048  # the naive pipeline used 1024
    train_on: list[str] | None = None  # segment names whose tokens are trained; null: the format's targets


class CommitBuilder:
    dedup_compare = "edit"  # two edits are duplicates when they remove and add the same lines
    # its examples are assemble_all's, unchanged: a row whose line the writer wrote before
    # may come back as a kept example (see core.kept_lines); so are the fim and file builders'
    examples_as_assembled = True

    def __init__(self, cfg: CommitBuilderConfig):
        if cfg.max_tokens < 16:
            raise CommitforgeError(f"builder.max_tokens={cfg.max_tokens} is too small; use e.g. 1024, 2048 or 4096")
        self.cfg = cfg

    def build(self, changes: list[dict[str, Any]], splits: list[str], fmt: Format, tokenizer: Tokenizer,
              stats: Counter, memo: Memo | None = None) -> list[dict[str, Any]]:
        wanted = None if self.cfg.train_on is None else set(self.cfg.train_on)

        def layout(change: dict[str, Any]) -> list[Segment]:
            segments = fmt.segments(whole(change))  # formats get plain dicts
            if wanted is not None:
                for seg in segments:
                    seg.target = seg.name in wanted
            return segments

        names: set[str] = set()  # gathered only to check train_on
        examples = assemble_all(changes, splits, lambda i: layout(changes[i]), tokenizer, self.cfg.max_tokens, stats,
                                memo, names if wanted is not None else None)
        if wanted is not None and changes and not wanted & names:
            raise CommitforgeError(f"builder.train_on={sorted(wanted)} names no segment of this format; "
                                   f"segments are: {', '.join(sorted(names))}")
        return examples


def assemble_all(changes: list[dict[str, Any]], splits: list[str], layout: Callable[[int], list[Segment]],
                 tokenizer: Tokenizer, max_tokens: int, stats: Counter, memo: Memo | None = None,
                 names: set[str] | None = None) -> list[dict[str, Any]]:
    """Encode the layout of every change (``layout(i)``: that of ``changes[i]``) in large
    batches and fit each into ``max_tokens``; count what was skipped or truncated. The
    examples are packed (numpy token arrays).
    With a ``memo`` (see core.build_memo.Memo), rows assembled by an earlier build with
    the same settings are read from it, and the others are kept in it; a row whose line
    the writer wrote before in the same split is a kept example (copied when written,
    see core.kept_lines); a row whose encoded layout a build kept (``memo.layouts``, see
    core.build_memo.Memo) is only fitted into ``max_tokens``, and with ``keep_layouts``
    the layouts encoded here are kept. ``names`` gathers the names of the segments (of the layouts
    made, and the spans of the examples read from the memo). A row read from chunks/
    (:class:`core.changes.Change`) is released once its example is made."""
    store, keys = (memo[0], memo[1]) if memo is not None else (None, None)
    lines = memo[2] if memo is not None and len(memo) > 2 else None  # a (store, keys) pair has none
    layouts = memo[3] if memo is not None and len(memo) > 3 else None
    keep_layouts = layouts is not None and len(memo) > 4 and bool(memo[4])  # type: ignore[arg-type]
    if names is not None:
        lines = None  # segment names are read from each example
    copied: dict[int, tuple[dict[str, Any], bool]] = {}
    if lines is not None:
        copied = lines.find_all(keys, splits, changes)  # type: ignore[arg-type]
    kept = store.get_many([k for i, k in enumerate(keys) if i not in copied]) if store is not None else {}  # type: ignore[arg-type]
    todo = [i for i in range(len(changes)) if i not in copied and (keys is None or keys[i] not in kept)]
    # the rows' encoded layouts an earlier build kept (one that fitted them into another
    # max_tokens): only fitted here
    laid = store.get_many([keys[i] for i in todo], layouts) if layouts is not None and todo else {}  # type: ignore[union-attr,index]
    fresh = iter(encode_layouts(tokenizer, (layout(i) for i in todo if keys is None or keys[i] not in laid)))
    # a tokenizer of at most 65,536 ids gives ids that fit in 16 bits: not looked at again
    small = True if int((getattr(tokenizer, "identity", None) or {}).get("vocab_size", 1 << 32)) <= 1 << 16 else None
    made: list[tuple[bytes, bytes, bytes]] = []
    made_layouts: list[tuple[bytes, bytes, bytes]] = []
    layouts_reused = 0
    out = []
    for i in progress(range(len(changes)), total=len(changes), desc="examples", unit="ex"):
        change, split = changes[i], splits[i]
        if i:  # the row before is done with (its layout was made before its example)
            release(changes[i - 1])
        row = keys[i] if keys is not None else None
        if i in copied:
            example, truncated = copied[i]
            if truncated:
                stats.add(f"truncated_{split}")
            out.append(example)
            continue
        if row is not None and row in kept:
            built = decode(kept[row], change, split)
            if names is not None and built.example is not None:
                names.update(span[0] for span in built.example["segments"])
        else:
            if row is not None and row in laid:
                try:
                    segments, encoded = decode_layout(laid[row])
                except (ValueError, TypeError, EOFError) as exc:  # its checksum held: not encode_layout's
                    raise unusable("build cache", store.path, exc) from None  # type: ignore[union-attr]
                layouts_reused += 1
            else:
                segments, encoded = next(fresh)
                if keep_layouts and row is not None:
                    made_layouts.append((row, *encode_layout(segments, encoded, small)))
                    if len(made_layouts) >= 2000:
                        store.put_many(made_layouts, layouts)  # type: ignore[union-attr]
                        made_layouts = []
            if names is not None:
                names.update(seg.name for seg in segments)
            built = assemble(change, segments, encoded, tokenizer, max_tokens, split, packed=True)
            if row is not None:
                made.append((row, *encode(built, small)))
                if len(made) >= 2000:  # stored as they come: never all of a history's examples twice
                    store.put_many(made)  # type: ignore[union-attr]
                    made = []
        if built.example is None:
            stats.skip(built.skip or "unknown")
            continue
        if built.truncated:
            stats.add(f"truncated_{split}")
        if lines is not None:
            lines.note(built.example, row, built.truncated)  # type: ignore[arg-type]
        out.append(built.example)
    if copied:
        stats.add("example_lines_copied", len(copied))
    if store is not None:
        if store.damaged:
            stats.add("build_cache_damaged", store.damaged)
        stats.add("rows_encoded", len(todo))
        stats.add("rows_reused", len(changes) - len(todo))
        if layouts_reused:
            stats.add("layouts_reused", layouts_reused)
        store.put_many(made)
        store.put_many(made_layouts, layouts)
    return out


@dataclass
class FileBuilderConfig:
    name: str = "file"
    unit: str = "unit"  # unit: one example per chunk of each file; file: one per whole file
    max_tokens: int = 2048
    train_on: list[str] | None = None


class FileBuilder(CommitBuilder):
    """Examples of the code at a snapshot (the newest mined commit), without history: each
    file's chunks (``unit``) or whole files (``file``) laid out by the format as code that
    was added, with empty old code. All rows share one commit, so a temporal split puts
    them in one split: use ``split=path`` to hold out files."""

    dedup_compare = "code"

    def __init__(self, cfg: FileBuilderConfig):
        if cfg.unit not in ("unit", "file"):
            raise CommitforgeError(f"builder.unit={cfg.unit!r} must be unit or file")
        super().__init__(cfg)  # type: ignore[arg-type]

    def rows(self, run, stats: Counter) -> list[dict[str, Any]]:
        rec = run.last_commit
        if rec is None:
            raise CommitforgeError("the file builder found no mined commit to snapshot; check source.rev and the filters")
        ext = run.extensions()
        files = []
        names = naming_files(run.languages)
        projects: dict[str, str] = {}
        for entry in run.repo.run("ls-tree", "-r", "-z", "--full-tree", rec.commit).split("\0"):
            if not entry:
                continue
            meta, path = entry.split("\t", 1)
            mode, kind, blob = meta.split()
            lang = ext.get(file_extension(path))
            if kind == "blob" and mode != "120000" and lang and run.source.keeps_path(path):
                files.append((blob, lang, path))
            if kind == "blob" and path.rsplit("/", 1)[-1] in names:
                projects[path] = blob
        # units are named as the chunk stage names them at that commit (crate names)
        with BlobReader(run.repo.git_dir) as reader:  # one tree: its project files read up front
            project_names = project_file_names(run.languages)
            data = {path: reader.read(blob) for path, blob in projects.items()
                    if path.rsplit("/", 1)[-1] in project_names}
        modules = module_paths(run.languages, projects, data.get, projects)
        job = run.chunk_job()
        job.parse_all(run.executor, [(b, lang, None) for b, lang, _ in files], stats)
        rows = []
        for blob, lang_name, path in files:
            parsed, reason = job.load(blob, lang_name)
            if parsed is None:
                stats.skip(f"file_{reason}")
                continue
            lang = run.languages[lang_name]
            module = modules[lang_name](path) if lang_name in modules else lang.module_path(path)
            if self.cfg.unit == "file":
                rows.append(_snapshot_row(run, rec, path, lang_name, "file", module or path, None, parsed.text, 1, 1))
                continue
            for chunk in chunk_file(run.chunker, parsed, lang, path, module if lang_name in modules else None):
                if chunk.members:
                    continue  # containers are covered by their member units
                for k, piece in enumerate(chunk.pieces, 1):
                    rows.append(_snapshot_row(run, rec, path, lang_name, chunk.kind, chunk.qualname, chunk.header,
                                              piece, k, len(chunk.pieces)))
        for row in rows:  # code read from the blob cache is raw: redact it like chunks/
            redact_row(row, run.redactor, stats)
        stats.add("snapshot_files", len(files))
        return rows


def _snapshot_row(run, rec, path: str, lang: str, kind: str, qualname: str, header: str | None, code: str,
                  part: int, parts: int) -> dict[str, Any]:
    key = hashlib.blake2b(f"{rec.commit}\0{path}\0{qualname}\0{part}".encode("utf-8", "surrogateescape"),
                          digest_size=12).hexdigest()
    # no commit message: the newest commit's subject says nothing about code at a snapshot
    return {"id": key, "repo": run.repo.name, "commit": rec.commit, "parent": None, "time": rec.committer_time,
            "subject": "", "message": "", "path": path, "old_path": None, "lang": lang,
            "change": "added", "kind": kind, "qualname": qualname, "old_qualname": None, "header": header,
            "signature": None, "old_code": "", "new_code": code, "part": part, "parts": parts, "context": []}


@dataclass
class FimBuilderConfig:
    name: str = "fim"
    max_tokens: int = 2048
    fim_rate: float = 0.5  # share of examples turned into fill-in-the-middle
    spm_rate: float = 0.5  # share of those in suffix-prefix-middle order (the rest prefix-suffix-middle)
    seed: int = 0


class FimBuilder:
    """StarCoder-style fill-in-the-middle on each unit's code after its commit (deletions
    have none), for training on code without its history.

    PSM: ``<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>{middle}<|endoftext|>``;
    SPM: ``<fim_prefix><fim_suffix>{suffix}<fim_middle>{prefix}{middle}<|endoftext|>``;
    the rest are plain ``{code}<|endoftext|>``. The two cut points are drawn per example
    from a generator seeded by ``seed`` and the example id, so reruns give the same
    examples. The middle (or the whole code) and the end token are the target. The
    format plugin does not apply: these are the builder's own tokens.
    """

    examples_as_assembled = True  # assemble_all's, unchanged (see CommitBuilder)

    special_tokens = ["<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<|endoftext|>"]
    dedup_compare = "code"  # the examples hold the new code only

    def __init__(self, cfg: FimBuilderConfig):
        for key in ("fim_rate", "spm_rate"):
            if not 0 <= getattr(cfg, key) <= 1:
                raise CommitforgeError(f"builder.{key}={getattr(cfg, key)} must be between 0 and 1")
        if cfg.max_tokens < 16:
            raise CommitforgeError(f"builder.max_tokens={cfg.max_tokens} is too small; use e.g. 1024, 2048 or 4096")
        self.cfg = cfg

    def layout(self, change: dict[str, Any]) -> tuple[list[Segment], str]:
        code = change["new_code"]
        rng = random.Random(f"{self.cfg.seed}:{change['id']}")
        eos = Segment("end", "<|endoftext|>", special=True, target=True)
        if rng.random() >= self.cfg.fim_rate or len(code) < 3:
            return [Segment("code", code, target=True), eos], "plain"
        a, b = sorted(rng.sample(range(1, len(code)), 2))
        prefix, middle, suffix = code[:a], code[a:b], code[b:]
        tok = lambda t: Segment(t.strip("<>"), t, special=True)  # noqa: E731
        if rng.random() < self.cfg.spm_rate:
            return [tok("<fim_prefix>"), tok("<fim_suffix>"), Segment("suffix", suffix), tok("<fim_middle>"),
                    Segment("prefix", prefix), Segment("middle", middle, target=True), eos], "spm"
        return [tok("<fim_prefix>"), Segment("prefix", prefix), tok("<fim_suffix>"), Segment("suffix", suffix),
                tok("<fim_middle>"), Segment("middle", middle, target=True), eos], "psm"

    def build(self, changes: list[dict[str, Any]], splits: list[str], fmt: Format, tokenizer: Tokenizer,
              stats: Counter, memo: Memo | None = None) -> list[dict[str, Any]]:
        picked = [i for i, c in enumerate(changes) if c["new_code"]]
        stats.skip("no_code_after_commit", len(changes) - len(picked))
        layouts = []
        for i in picked:
            layout, mode = self.layout(changes[i])
            stats.add(f"fim_{mode}")
            layouts.append(layout)
        if memo is not None:
            memo = Memo(memo[0], [memo[1][i] for i in picked], *memo[2:])
        return assemble_all([changes[i] for i in picked], [splits[i] for i in picked], layouts.__getitem__,
                             tokenizer, self.cfg.max_tokens, stats, memo)


@hookimpl
def register_builder(register):
    register("commit", CommitBuilder, CommitBuilderConfig)
    register("fim", FimBuilder, FimBuilderConfig)
    register("file", FileBuilder, FileBuilderConfig)
