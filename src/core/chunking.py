"""The ``chunk`` stage: parse every needed blob once, then pair units commit by commit.

Phase 1 parses each unique (blob, language) that is not in the blob cache yet, spread
over the executor's workers; phase 2 walks commits in order, loads both sides of each
changed file from the cache, chunks and pairs them into UnitChange records. Both phases
return their results in input order, so the output is identical for any worker count.
"""

from __future__ import annotations

import bisect
import hashlib
import inspect
import itertools
import math
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from core.blob_cache import BlobCache, SummaryCache, close_connections
from core.chunk import Chunker
from core.collector import aging
from core.context import UnitQuery, measure
from core.files import record_line
from core.gitio import BlobReader, Hunk
from core.language import Language
from core.pairing import pair_chunks, pair_moves, part_changes
from core.parsing import ParseTimeout, hunk_edits
from core.progress import progress
from core.records import CommitRecord, FileChange, ParsedBlob, UnitChange
from core.report import scan_rows
from core.snapshot import Snapshot, TreeSteps, apply_delta
from core.stage_cache import pack
from core.stats import Counter

BLOB_BATCH = 24
COMMIT_BATCH = 24
# with a context strategy that reads the tree: this many commits per unit of work on
# average (context_runs cuts them by work, see commit_batch); a unit's rows wait in the
# main process until those before it are written
CONTEXT_BATCH = 256
INLINE_BLOBS = 96  # at most this many blobs to parse: no worker processes
LOADED_BLOBS = 256  # per worker: a file's new version is usually the next change's old one
_BINARY_SNIFF = 8000

# per-process state of workers: one cat-file per repository, a few recently used blobs
# (keyed by pid too: a forked worker must never write to its parent's cat-file pipes)
_READERS: dict[tuple[int, str], BlobReader] = {}


def _reader(git_dir: str) -> BlobReader:
    key = (os.getpid(), git_dir)
    reader = _READERS.get(key)
    if reader is None:
        reader = _READERS[key] = BlobReader(Path(git_dir))
    return reader


def reset_memory() -> None:
    """Forget blobs and chunks held from an earlier run in this process (they depend on
    that run's config); forked workers start from this state."""
    _LOADED.clear()
    _CHUNKED.clear()
    _TREES.clear()
    _CACHES.clear()
    _SNAPSHOTS.clear()
    _REDACTED.clear()


def close_readers() -> None:
    """Close this process's cat-file processes and cache connections (workers' end with them)."""
    pid = os.getpid()
    for key in [k for k in _READERS if k[0] == pid]:
        _READERS.pop(key).close()
    close_connections()


class SpooledRows(NamedTuple):
    """A commit's rows (JSON lines) that a worker wrote to a spool file instead of sending
    them back through the executor: ``size`` bytes at ``start`` of the file at ``path``,
    and with ``ChunkJob.spool_packed`` the same bytes as the stage cache stores them
    (``core.stage_cache.pack``), else None."""

    path: str
    start: int
    size: int
    packed: bytes | None


class _Spool:
    """One task's spool file. A run of commits (with context, a worker's whole share of the
    history) returned as one result went through the executor's pipe after the run ended,
    and was compressed for the stage cache in the main process: both idle the workers. The
    file is written as the rows are made, the compression is done here, and the pipe
    carries the compressed bytes only."""

    def __init__(self, directory: str, packed: bool):
        fd, self.path = tempfile.mkstemp(dir=directory, prefix="rows-", suffix=".jsonl")
        self.fh = os.fdopen(fd, "wb")
        self.packed = packed
        self.size = 0

    def add(self, data: bytes) -> SpooledRows:
        self.fh.write(data)
        start, self.size = self.size, self.size + len(data)
        return SpooledRows(self.path, start, len(data), pack(data) if self.packed else None)

    def __enter__(self) -> _Spool:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *_: object) -> None:
        self.fh.close()  # written before the result is returned: the main process reads it next


@dataclass
class ChunkJob:
    git_dir: str
    repo_name: str
    cache_root: str
    languages: dict[str, Language]
    chunker: Chunker
    max_file_bytes: int
    rename_similarity: float
    context: Any = None  # a context strategy, or None
    redactor: Any = None  # a core.redact.Redactor, or None
    summary_key: str | None = None  # code and context options: with the language's cache key, names summaries
    blob_skips: dict[str, str] = field(default_factory=dict)
    # a directory the main process reads (see SpooledRows): pair_commits writes its rows
    # there instead of returning them; and whether it also compresses them for the stage cache
    spool_dir: str | None = None
    spool_packed: bool = False

    def _cache(self, lang: str) -> BlobCache:
        key = (self.cache_root, self.languages[lang].cache_key)  # the key covers extraction settings
        cache = _CACHES.get(key)
        if cache is None:
            cache = _CACHES[key] = BlobCache(self.cache_root, key[1])
        return cache

    def cached(self, lang: str, blobs: list[str]) -> set[str]:
        """The blobs of ``blobs`` the unit cache has an entry for."""
        return self._cache(lang).have(blobs)

    def summaries(self, lang: str) -> SummaryCache:
        """The store of the symbol-index summaries of a language's files."""
        return SummaryCache(self.cache_root, f"{self.languages[lang].cache_key}:{self.summary_key}")

    # -- phase 1 ---------------------------------------------------------------------
    def parse_all(self, executor: Any, blobs: list[tuple[str, str, str | None]], stats: Counter,
                  hunks: dict[tuple[str, str], list[Hunk]] | None = None) -> None:
        """Parse every blob missing from the cache over the executor's workers; remember
        the blobs that could not be read (``blob_skips``) for loading later. ``hunks``
        (by previous and new blob, from ``core.gitio.line_hunks``) let a blob be reparsed
        from its previous version's tree by the changed lines only."""
        for lang in self.languages:
            self._cache(lang).open()  # created once here, before workers race to create it
        hunks = hunks or {}
        items = [(blob, lang, prev, hunks.get((prev, blob)) if prev else None) for blob, lang, prev in blobs]
        batches = batched(items, BLOB_BATCH)
        # a few blobs (a repository that gained a commit or two) are parsed here: starting
        # workers would take longer than the parsing
        results = map(self.parse_blobs, batches) if len(blobs) <= INLINE_BLOBS else executor.map(self.parse_blobs, batches)
        for result in progress(results, total=len(batches), desc="parse", unit="batch"):
            stats.update(result["stats"])
            self.blob_skips.update(result["skips"])
        for reason in self.blob_skips.values():
            stats.add(f"blobs_{reason}")  # the file changes that needed them are the skips
        close_readers()  # what follows reads the cache only

    def parse_blobs(self, batch: list[tuple[str, str, str | None, list[Hunk] | None]]) -> dict[str, Any]:
        """Parse blobs missing from the cache; report counts and per-blob skips.

        ``batch`` holds (blob, language, previous version's blob, git's hunks between
        them or None) with versions of a file in order, so each is reparsed incrementally
        from its predecessor's tree.
        """
        stats = Counter()
        skips: dict[str, str] = {}
        reader = _reader(self.git_dir)
        todo: dict[str, set[str]] = {}
        for lang in {item[1] for item in batch}:
            todo[lang] = self._cache(lang).missing([b for b, bl, _, _ in batch if bl == lang])
        done: dict[str, list[tuple[str, dict[str, Any]]]] = {lang: [] for lang in todo}
        # a context strategy that reads the tree needs every version's summary: made here, from
        # the parse in hand, once, rather than reloaded and made again by each worker's snapshot
        summarize = getattr(self.context, "snapshot", None) is not None and self.summary_key is not None
        options = getattr(self.context, "options", {})
        summaries: dict[str, dict[str, Any]] = {lang: {} for lang in todo}
        wanted = [item for item in batch if item[0] in todo[item[1]]]
        if len(wanted) < len(batch):  # the size cap is applied when entries are loaded
            stats.add("blobs_cached", len(batch) - len(wanted))
        for (blob, lang, prev, hunks), data in zip(wanted, reader.read_many([item[0] for item in wanted])):
            if data is None:
                skips[blob] = "missing_object"
                continue
            if len(data) > self.max_file_bytes:
                skips[blob] = "too_large"
                continue
            entry = {"size": len(data), "skip": None, "parsed": None}
            if b"\0" in data[:_BINARY_SNIFF]:
                entry["skip"] = "binary"
            else:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    entry["skip"] = "not_utf8"
            if entry["skip"] is None:
                previous = _TREES.get(prev) if prev else None
                edits = None
                if previous is not None and hunks:
                    edits = hunk_edits(previous[0], data, hunks)  # checked against the bytes
                    stats.add("blobs_reparsed_by_hunks" if edits else "blobs_hunks_rejected")
                try:
                    language = self.languages[lang]
                    if edits and takes(language.parse, "edits"):
                        parsed = language.parse(data, previous, edits=edits)
                    else:
                        parsed = language.parse(data, previous)
                except Exception as exc:  # noqa: BLE001 - one file's parser failure never ends the run
                    if isinstance(exc, ParseTimeout):
                        skips[blob] = "parse_timeout"  # not cached: a later run may allow more time
                    else:
                        done[lang].append((blob, {**entry, "skip": "parse_failed"}))
                        stats.add("blobs_parse_failed")
                    continue
                if previous is not None:
                    stats.add("blobs_parsed_incrementally")
                _TREES[blob] = (data, parsed)
                if len(_TREES) > 16:
                    _TREES.popitem(last=False)
                entry["parsed"] = parsed.to_dict()
                if summarize:
                    summaries[lang][blob] = self.languages[lang].summarize(parsed, options)
                stats.add("blobs_parsed")
                stats.add("bytes_parsed", len(data))
                stats.add("units_extracted", len(parsed.units))
            done[lang].append((blob, entry))
        for lang, entries in done.items():
            self._cache(lang).put_many(entries)
            if summaries[lang]:
                self.summaries(lang).put_many(summaries[lang])
        return {"stats": stats.to_dict(), "skips": skips}

    # -- phase 2 ---------------------------------------------------------------------
    def pair_commits(self, work: list[CommitRecord] | tuple[list[CommitRecord], TreeSteps | None]
                     | tuple[list[CommitRecord], TreeSteps | None, tuple[TreeSteps, TreeSteps] | None]
                     ) -> list[tuple[bytes, int, dict[str, Any], tuple]]:
        """Each commit's UnitChange records as JSON lines (encoded here, in the worker), their
        count, the commit's counters and what the report reads of its lines (scanned here
        too: the main process only writes). With TreeSteps (a context strategy that reads
        the repository's tree), the worker's snapshot follows the commits' trees; with the
        TreeSteps of the naming files (``naming_files``) at the commits and at their
        parents, units are named by the languages' ``module_paths``: new code as its
        commit names it, old code as the parent did."""
        batch, steps, named = (work, None, None) if not isinstance(work, tuple) else (
            (*work, None) if len(work) == 2 else work)
        snapshot = None
        if steps is not None:
            snapshot = self._snapshot()
            snapshot.advance(steps.start)
        trees: tuple[dict[str, str], dict[str, str]] = ({}, {})  # naming files at the commit, at its parent
        if named is not None:
            for tree, st in zip(trees, named):
                apply_delta(tree, st.start)
        modules: tuple[dict, dict] = ({}, {})
        out: list[tuple[Any, int, dict[str, Any], tuple]] = []
        with (_Spool(self.spool_dir, self.spool_packed) if self.spool_dir is not None else nullcontext() as spool,
              aging(snapshot is not None) as age):
            for i, rec in enumerate(batch):
                if snapshot is not None and i > 0:
                    age()
                    snapshot.apply(steps.deltas[i - 1])  # type: ignore[union-attr]
                if named is not None and (i == 0 or any(st.deltas[i - 1] for st in named)):
                    # naming files changed (they rarely do): the module path functions of the trees
                    for tree, st in zip(trees, named):
                        if i > 0:
                            apply_delta(tree, st.deltas[i - 1])
                    modules = (self._module_paths(trees[0]), self._module_paths(trees[1]))
                stats = Counter()
                rows = list(self._pair_commit(rec, stats, snapshot, *modules))
                lines = [record_line(row) for row in rows]
                data = b"".join(lines)
                out.append((data if spool is None else spool.add(data), len(lines), stats.to_dict(),
                            scan_rows(rows).to_plain()))
        return out

    def _module_paths(self, files: dict[str, str]) -> dict[str, Callable[[str], str]]:
        """Per language with ``module_paths``: its module path function in a tree whose
        naming files are ``files`` (path -> blob). Kept for the next commits: the parent's
        tree of a commit is usually the tree of the commit paired before it. Trees are
        compared as dicts (in C): this runs whenever a commit changes a naming file."""
        for k, (git_dir, tree, hit) in enumerate(_MODULES):
            if git_dir == self.git_dir and tree == files:
                if k:
                    _MODULES.insert(0, _MODULES.pop(k))
                return hit
        # a copy: the caller changes ``files`` in place as it walks the commits
        read = {path: files[path] for path in _named(files, project_file_names(self.languages))}
        hit = module_paths(self.languages, files, lambda path: self._project_bytes(read[path]), read,
                           lambda paths: self._project_bytes_many([read[path] for path in paths]))
        _MODULES.insert(0, (self.git_dir, dict(files), hit))
        del _MODULES[8:]
        return hit

    def _project_bytes(self, blob: str) -> bytes | None:
        return self._project_bytes_many([blob])[0]

    def _project_bytes_many(self, blobs: list[str]) -> list[bytes | None]:
        """Project files' bytes: each version is read once (they change a few at a time),
        those not read yet asked of git together."""
        got = {blob: _PROJECT_BYTES[blob] for blob in blobs if blob in _PROJECT_BYTES}
        todo = list(dict.fromkeys(blob for blob in blobs if blob not in got))
        if todo:
            got.update(zip(todo, _reader(self.git_dir).read_many(todo)))
        for blob in todo:
            _PROJECT_BYTES[blob] = got[blob]
        while len(_PROJECT_BYTES) > 4096:
            _PROJECT_BYTES.popitem(last=False)
        return [got[blob] for blob in blobs]

    def _snapshot(self) -> Snapshot:
        # a worker unpickles a new job, context object included, with every task: the snapshot
        # (and the indexes it keeps up to date) is keyed by what it depends on, so that it
        # outlives them (reset_memory forgets it when a run starts)
        key = (os.getpid(), self.git_dir, self.cache_root, self.summary_key,
               tuple(sorted((name, lang.cache_key) for name, lang in self.languages.items())),
               repr(getattr(self.context, "options", {})))
        snap = _SNAPSHOTS.get(key)
        if snap is None:
            stores = {} if self.summary_key is None else {name: self.summaries(name) for name in self.languages}
            reader = _reader(self.git_dir)
            snap = _SNAPSHOTS[key] = Snapshot(self.languages, self._load_quietly, reader.read,
                                              options=getattr(self.context, "options", {}), stores=stores,
                                              read_many=reader.read_many)
        return snap

    def _load_quietly(self, blob: str, lang: str) -> ParsedBlob | None:
        """A parsed blob for the snapshot's index, without evicting the pairing LRU's entries."""
        hit = _LOADED.get((blob, lang))
        return (hit if hit is not None else self._fetch(blob, lang))[0]

    def _fetch(self, blob: str, lang: str) -> tuple[ParsedBlob | None, str | None]:
        """A blob's parsed form from the unit cache, or why there is none."""
        if blob in self.blob_skips:
            return None, self.blob_skips[blob]
        entry = self._cache(lang).get(blob)
        if entry is None:
            return None, "missing_object"
        if entry["skip"]:
            return None, entry["skip"]
        if entry["size"] > self.max_file_bytes:
            return None, "too_large"
        return ParsedBlob.from_dict(entry["parsed"]), None

    def load(self, blob: str, lang: str) -> tuple[ParsedBlob | None, str | None]:
        key = (blob, lang)
        hit = _LOADED.get(key)
        if hit is not None:
            _LOADED.move_to_end(key)
            return hit
        result = self._fetch(blob, lang)
        _LOADED[key] = result
        if len(_LOADED) > LOADED_BLOBS:
            _LOADED.popitem(last=False)
        return result

    def _chunks(self, blob, parsed: ParsedBlob, lang: Language, path: str, module: str | None = None) -> list:
        # a file's new version is the next commit's old version: chunk it once
        key = (blob, lang.name, path, module)
        chunks = _CHUNKED.get(key)
        if chunks is None:
            chunks = chunk_file(self.chunker, parsed, lang, path, module)
            _CHUNKED[key] = chunks
            if len(_CHUNKED) > LOADED_BLOBS:
                _CHUNKED.popitem(last=False)
        else:
            _CHUNKED.move_to_end(key)
        return chunks

    def _pair_commit(self, rec: CommitRecord, stats: Counter, snapshot: Snapshot | None = None,
                     modules: dict[str, Callable[[str], str]] | None = None,
                     old_modules: dict[str, Callable[[str], str]] | None = None) -> Iterator[dict[str, Any]]:
        max_chars = getattr(getattr(self.chunker, "cfg", None), "max_chars", None)
        # per file: its pairs [change, old chunk, new chunk, index of the file the old chunk is from]
        files: list[tuple[FileChange, Language, ParsedBlob | None, ParsedBlob | None, list[list]]] = []
        for fc in rec.files:
            lang = self.languages[fc.lang]  # type: ignore[index]
            old = new = None
            reason = None
            if fc.old_blob:
                old, reason = self.load(fc.old_blob, lang.name)
            if reason is None and fc.new_blob:
                new, reason = self.load(fc.new_blob, lang.name)
            if reason is not None:
                stats.skip(f"file_{reason}")
                continue
            if new is not None and new.has_error:
                stats.add("files_with_syntax_errors")
            module_of = modules.get(lang.name) if modules else None
            old_module_of = old_modules.get(lang.name) if old_modules else module_of
            old_chunks = self._chunks(fc.old_blob, old, lang, fc.old_path,
                                      old_module_of(fc.old_path) if old_module_of else None) if old else []
            new_chunks = self._chunks(fc.new_blob, new, lang, fc.new_path,
                                      module_of(fc.new_path) if module_of else None) if new else []
            pairs = [[change, o, n, len(files)] for change, o, n in pair_chunks(
                old_chunks, new_chunks, renames=self.chunker.pairs_renames, rename_similarity=self.rename_similarity)]
            files.append((fc, lang, old, new, pairs))
        if self.chunker.pairs_renames and len(files) > 1:
            self._pair_moves(files, stats)
        for fc, lang, old, new, pairs in files:
            emitted = 0
            for change, o, n, source in pairs:
                if change is None:
                    continue  # a deletion that moved to another file
                src_fc, src_old = files[source][0], files[source][2]
                old_path = src_fc.old_path or src_fc.path
                for pc in part_changes(change, o, n):
                    emitted += 1
                    stats.add(f"unit_changes_{pc.change}")
                    if max_chars is not None and len(pc.new_code or pc.old_code) > max_chars:
                        stats.add("oversize_parts")
                    row = _unit_change(self.repo_name, rec, fc.path, old_path, lang.name, pc)
                    if self.context is not None:
                        parsed, lines = (new, row.new_lines) if pc.new_code else (src_old, row.old_lines)
                        unit = pc.new if pc.new is not None else pc.old
                        query = UnitQuery(path=fc.path, lang=lang.name, code=pc.new_code or pc.old_code,
                                          header=unit.header, qualname=row.qualname,
                                          local_qualname=unit.local_qualname, parsed=parsed, lines=lines)
                        row.context = self.context.items(query, snapshot)
                        recall = self.context.recall and pc.new_code
                        measure(stats, query if recall else None, row.context, snapshot)
                    out = row.to_dict()
                    redact_row(out, self.redactor, stats)
                    yield out
            stats.add("unit_changes", emitted)
            if emitted == 0:
                stats.add("files_without_unit_changes")

    def _pair_moves(self, files: list, stats: Counter) -> None:
        """Turn a unit deleted from one file and added to another (same language, kind and
        local name, similar lines) into one change: ``modified`` from the old file's path
        (``old_path``), or nothing when its text did not change."""
        by_lang: dict[str, tuple[list, list, list, list]] = {}  # deleted, added, and their pairs
        for fi, (_, lang, _, _, pairs) in enumerate(files):
            for pair in pairs:
                change, o, n, _ = pair
                if change in ("deleted", "added"):
                    deleted, added, at_d, at_a = by_lang.setdefault(lang.name, ([], [], [], []))
                    if change == "deleted":
                        deleted.append((fi, o))
                        at_d.append(pair)
                    else:
                        added.append((fi, n))
                        at_a.append(pair)
        for deleted, added, at_d, at_a in by_lang.values():
            if not deleted or not added:
                continue
            for di, ai, same in pair_moves(deleted, added, similarity=self.rename_similarity):
                gone, came = at_d[di], at_a[ai]
                gone[0] = None
                if same:
                    came[0] = None  # moved unchanged: no change, like the units of a renamed file
                    stats.add("units_moved_unchanged")
                else:
                    came[0], came[1], came[3] = "modified", gone[1], deleted[di][0]
                    stats.add("units_moved_changed")


_LOADED: OrderedDict[tuple[str, str], tuple[ParsedBlob | None, str | None]] = OrderedDict()
_CHUNKED: OrderedDict[tuple[str, str, str, str | None], list] = OrderedDict()
_MODULES: list[tuple[str, dict[str, str], dict[str, Callable[[str], str]]]] = []  # recent trees' module path functions
_PROJECT_BYTES: OrderedDict[str, bytes | None] = OrderedDict()  # project file blobs read, oldest first
_TREES: OrderedDict[str, tuple[bytes, ParsedBlob]] = OrderedDict()  # recent versions, for incremental parsing
_CACHES: dict[tuple[str, str], BlobCache] = {}
_SNAPSHOTS: dict[tuple, Snapshot] = {}


def _unit_change(repo: str, rec: CommitRecord, path: str, old_path: str | None, lang: str, pc) -> UnitChange:
    ref = pc.new if pc.new is not None else pc.old
    h = hashlib.blake2b(digest_size=12)
    for part in (repo, rec.commit, path, ref.qualname, str(pc.part), pc.old_code, pc.new_code):
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return UnitChange(
        id=h.hexdigest(),
        repo=repo,
        commit=rec.commit,
        parent=rec.parents[0] if rec.parents else None,
        time=rec.committer_time,
        subject=rec.subject,
        message=rec.message,
        path=path,
        old_path=old_path if old_path != path else None,
        lang=lang,
        change=pc.change,
        kind=ref.kind,
        qualname=ref.qualname,
        old_qualname=pc.old.qualname if pc.old is not None and pc.new is not None and pc.old.qualname != pc.new.qualname else None,
        header=ref.header,
        signature=ref.signature,
        old_code=pc.old_code,
        new_code=pc.new_code,
        part=pc.part,
        parts=pc.parts,
        old_lines=pc.old.lines if pc.old is not None else None,
        new_lines=pc.new.lines if pc.new is not None else None,
        has_error=ref.has_error,
    )


REDACTED_FIELDS = ("subject", "message", "header", "signature", "old_code", "new_code")


def redact_counted(redactor: Any, text: str, stats: Counter,
                   memo: OrderedDict[str, tuple[str, Any]] | None = None) -> str:
    """``text`` with its secrets replaced, counted by kind in ``stats``; ``memo`` keeps the
    results of texts seen before (counted again each time they occur), the oldest dropped
    past 32,768. (An OrderedDict: dropping a plain dict's first key with ``next(iter(d))``
    walks over the slots of the keys dropped before, 17 us a text here.)"""
    hit = memo.get(text) if memo is not None else None
    if hit is None:
        hit = redactor.redact(text)
        if memo is not None:
            memo[text] = hit
            if len(memo) > 32768:
                memo.popitem(last=False)
    for kind, n in hit[1].items():
        stats.add(f"redacted_{kind}", n)
    return hit[0]


def redact_row(row: dict[str, Any], redactor: Any, stats: Counter) -> None:
    """Replace secrets in every text of a row of chunks/ (context items included) and
    count them by kind. The same secret gets the same replacement in old and new code."""
    if redactor is None:
        return
    # texts repeat across rows (a unit's new code is its old code at its next change, headers
    # and signatures repeat, context items are the same definitions): redact each text once
    memo = _REDACTED.get(redactor)
    if memo is None:
        memo = _REDACTED[redactor] = OrderedDict()
    for name in REDACTED_FIELDS:
        if row.get(name):
            row[name] = redact_counted(redactor, row[name], stats, memo)
    for item in row.get("context") or ():
        item["text"] = redact_counted(redactor, item["text"], stats, memo)


# per process and redactor: text -> (redacted text, counts)
_REDACTED: dict[Any, OrderedDict[str, tuple[str, Any]]] = {}


def unique_blobs(commits: Iterable[CommitRecord]) -> list[tuple[str, str, str | None]]:
    """Every (blob, language) the commits need, with the blob it is a new version of.

    Versions of one file are grouped in history order (a chain from the first version
    seen), so a worker can parse each incrementally from the one before.
    """
    prev: dict[tuple[str, str], str | None] = {}
    for rec in commits:
        for fc in rec.files:
            if fc.old_blob:
                prev.setdefault((fc.old_blob, fc.lang), None)  # type: ignore[arg-type]
            if fc.new_blob:
                prev.setdefault((fc.new_blob, fc.lang), fc.old_blob)  # type: ignore[arg-type]
    chain_of: dict[tuple[str, str], int] = {}
    order: list[tuple[int, int, tuple[str, str]]] = []
    for i, key in enumerate(prev):
        p = prev[key]
        root = chain_of.get((p, key[1]), i) if p else i
        chain_of[key] = root
        order.append((root, i, key))
    order.sort()
    return [(blob, lang, prev[(blob, lang)]) for _, _, (blob, lang) in order]


_TAKES: dict[tuple[Any, str], bool] = {}


def takes(method: Any, parameter: str) -> bool:
    """Whether a plugin's method declares an optional parameter (checked once per function)."""
    key = (getattr(method, "__func__", method), parameter)
    known = _TAKES.get(key)
    if known is None:
        try:
            known = parameter in inspect.signature(method).parameters
        except (TypeError, ValueError):
            known = False
        _TAKES[key] = known
    return known


def chunk_file(chunker: Chunker, parsed: ParsedBlob, lang: Language, path: str, module: str | None) -> list:
    """``chunker.chunk``, given the file's module path when it has one and the chunker
    takes it (``module`` is an optional parameter of the protocol)."""
    if module is not None and takes(chunker.chunk, "module"):
        return chunker.chunk(parsed, lang, path, module=module)
    return chunker.chunk(parsed, lang, path)


def project_file_names(languages: dict[str, Language]) -> set[str]:
    """Names of the languages' project files (``project_files``: ``Cargo.toml``...)."""
    return {name for lang in languages.values() for name in getattr(lang, "project_files", ())}


def naming_files(languages: dict[str, Language]) -> set[str]:
    """Names of the files whose content or presence names modules (``module_paths``)."""
    naming = {name: lang for name, lang in languages.items() if hasattr(lang, "module_paths")}
    return project_file_names(naming) | {name for lang in naming.values() for name in getattr(lang, "module_files", ())}


class LazyFiles(Mapping):
    """Files by path, read when first looked at (``read``: path -> bytes, or None when
    unreadable). ``content_key(path)`` names a file's content without reading it (its
    blob id, from ``blobs``): a plugin may keep what it derives from a file's bytes by
    that key, across trees and commits."""

    def __init__(self, paths: Iterable[str], read: Callable[[str], bytes | None],
                 blobs: Mapping[str, str] | None = None,
                 read_many: Callable[[list[str]], list[bytes | None]] | None = None):
        self._paths = sorted(paths)
        self._keys = frozenset(self._paths)
        self._read = read
        self._read_many = read_many
        self._blobs = blobs or {}
        self._data: dict[str, bytes | None] = {}

    def prefetch(self, paths: Iterable[str]) -> None:
        """Read these files now, all in one go (``read_many``)."""
        todo = [p for p in paths if p in self._keys and p not in self._data]
        if self._read_many is not None and todo:
            self._data.update(zip(todo, self._read_many(todo)))

    def content_key(self, path: str) -> str | None:
        """The blob id of the file at ``path`` (equal ids: equal bytes), or None when unknown."""
        return self._blobs.get(path) if path in self._keys else None

    def content_keys(self) -> list[str | None]:
        """``content_key`` of every file, in path order (the order of iteration)."""
        return list(map(self._blobs.get, self._paths))

    def __getitem__(self, path: str) -> bytes | None:
        if path not in self._keys:
            raise KeyError(path)
        if path not in self._data:
            self._data[path] = self._read(path)
        return self._data[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def module_paths(languages: dict[str, Language], paths: Iterable[str], read: Callable[[str], bytes | None],
                 blobs: Mapping[str, str] | None = None,
                 read_many: Callable[[list[str]], list[bytes | None]] | None = None) -> dict[str, Callable[[str], str]]:
    """Per language with ``module_paths``: its module path function for a tree whose
    ``naming_files`` are at ``paths``; ``read`` gives a project file's bytes (None:
    unreadable), asked only for the files a language looks at; ``blobs`` (path -> blob
    id) names their contents (``LazyFiles.content_key``); ``read_many`` reads several
    files at once (``LazyFiles.prefetch``)."""
    paths = list(paths)
    out = {}
    for name, lang in languages.items():
        make = getattr(lang, "module_paths", None)
        wanted = set(getattr(lang, "project_files", ()))
        marks = set(getattr(lang, "module_files", ()))
        if make is not None and wanted:
            out[name] = make(LazyFiles(_named(paths, wanted), read, blobs, read_many), frozenset(_named(paths, marks)))
    return out


def _named(paths: Iterable[str], names: Iterable[str]) -> list[str]:
    """The paths, in order, whose file name is one of ``names`` (this runs over a tree's
    naming files whenever a commit changes one of them)."""
    names = tuple(names)
    ends = tuple("/" + name for name in names)
    return [p for p in paths if p.endswith(ends) or p in names]


def commit_batch(commits: int, workers: int, follows_trees: bool) -> int:
    """Commits per unit of work of the chunk stage: ``COMMIT_BATCH`` (small units keep both
    cores busy to the end), but with a context strategy that reads the tree
    (``follows_trees``) as few runs as the workers and ``CONTEXT_BATCH`` allow (see
    ``context_runs`` for where they are cut)."""
    if not follows_trees:
        return COMMIT_BATCH
    runs = max(1, workers, math.ceil(commits / CONTEXT_BATCH))
    return max(COMMIT_BATCH, math.ceil(commits / runs))


def context_runs(files: list[int], trees: list[int], workers: int) -> list[int]:
    """The lengths of the runs of commits the workers pair when a context strategy reads the
    tree: as many runs as ``commit_batch`` gives, cut so that each holds about the same
    work. ``files`` are the source files each commit changes, ``trees`` the files of the
    snapshot it is paired at.

    A worker's snapshot and symbol index follow the history through the commits it pairs,
    and the commits between two of its runs must be applied too: with 24-commit runs on
    two workers, each worker's index followed nearly the whole history (rusty-kaspa, 471
    commits: 7.3 s of snapshot upkeep in all, against 4.3 s with 118-commit runs). With
    one run per worker each index follows its own part only, but two runs of equal length
    left one worker idle for 3.4 s of 14: a commit's work grows with what it changes and
    with the tree it resolves names in, and a later run builds its index from scratch. A
    commit weighs ``(files + 1) * (1 + tree / largest tree)``, and each cut is the commit
    boundary nearest its share of the weight (so a heavy commit goes to the run it fits
    best, and uneven work gives runs far longer than CONTEXT_BATCH). On rusty-kaspa this
    cuts at commit 252 of 471; the workers ended 0.3 s apart, with 2.6 s less CPU in all, and
    the stage (warm unit cache) took 13.15 s against 14.27 s with four 118-commit runs
    (medians of 2 and 4 runs). Each worker's peak RSS grew from 641 to 723 MB. More runs
    than workers are rounded up to a multiple of them: on openvmm (720 commits, 2
    workers) four runs took 18.2 and 19.4 s where three took 23.1 and 21.5 s."""
    n = len(files)
    runs = min(n, math.ceil(n / commit_batch(n, workers, True))) if n else 0
    if runs > workers:  # a multiple of the workers: a last run alone would leave the others idle
        runs = min(n, workers * math.ceil(runs / workers))
    if runs <= 1:
        return [n] if n else []
    largest = max(trees) or 1
    ends = list(itertools.accumulate((f + 1) * (1 + t / largest) for f, t in zip(files, trees)))
    total = ends[-1]
    cuts = [0]
    for k in range(1, runs):
        # the commit boundary nearest to k/runs of the work, after the last cut and leaving
        # a commit for each run to come (a heavy commit goes to the run it fits best)
        target = total * k / runs
        i = bisect.bisect_left(ends, target)  # ends[i] is the first end at or past the target
        before = ends[i - 1] if i > 0 else 0.0
        cut = i if target - before <= ends[min(i, n - 1)] - target else i + 1
        cut = min(max(cut, cuts[-1] + 1), n - (runs - k))
        cuts.append(cut)
    cuts.append(n)
    return [b - a for a, b in itertools.pairwise(cuts)]


def batched(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]
