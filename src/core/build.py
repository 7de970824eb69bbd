"""The ``build`` stage: split, deduplicate, tokenize and write the training examples.

Deduplication runs before tokenizing (tokenizing is the expensive part, and much of a
history repeats), on what each example's change does (``dedup_text``), within each
split and then across splits so nothing in train duplicates val or test. What an earlier
build computed for the same rows with the same settings (dedup features, assembled
examples) comes from the build cache (core.build_memo) instead.

The tokenizer is prepared (a ``bpe`` one trained) from the train split's code as split,
before deduplication, in a thread while deduplication runs: past reading its texts,
training runs outside the interpreter (the tokenizers library's own threads) and
deduplication mostly in it, so they share the cores. A sweep over dedup settings then
also keeps one tokenizer, and with it the examples the build cache holds.
"""

from __future__ import annotations

import bisect
import hashlib
import threading
import time
from collections import Counter as _Counter
from collections.abc import Callable, Iterator
from importlib import metadata
from itertools import accumulate, pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import OmegaConf

from core.build_memo import (
    BUILD_MEMO_FORMAT,
    BuildMemo,
    Memo,
    RowIndexes,
    dedup_entries,
    merge_features,
)
from core.changes import (
    RowIndex,
    forget_shared_texts,
    line_of,
    lines_at,
    read_changes,
    whole,
    without_context,
)
from core.chunk_shards import CHUNKS_DIR
from core.chunking import takes
from core.collector import paused
from core.dedup import Features, deduplicate, features
from core.errors import CommitforgeError
from core.examples import ExampleRows, unpack
from core.files import AheadCopies, record_line, shard_paths, stat_key
from core.kept_lines import KEPT_LINES_FORMAT, KeptLines
from core.stage_cache import Claim, claim_for, fingerprint
from core.stats import Counter
from core.sweep import in_multirun

if TYPE_CHECKING:
    from core.pipeline import Run

SPLITS = ("train", "val", "test")


DEDUP_COMPARE = ("edit", "code")


def dedup_text(change: dict[str, Any], on: str) -> str:
    """What deduplication compares of a unit change.

    ``code``: the code the example ends with (a deletion: the removal of its old code).
    ``edit``: what the change does: the unit's signature and the lines it removes and
    adds, in order (an added unit: its new code). Two successive small edits of one
    function end in nearly the same code, but are different edits: compared by their
    code, the second would be dropped as a near duplicate of the first."""
    old, new = change["old_code"], change["new_code"]
    if not new:
        return "\0deleted\0" + old
    if on == "code" or not old:
        return new
    a, b = old.splitlines(), new.splitlines()
    out = [change.get("signature") or ""]
    count_a, count_b = _Counter(a), _Counter(b)
    for lines, mine, other, sign in ((a, count_a, count_b, "-"), (b, count_b, count_a, "+")):
        # how many of each line this side has beyond the other's: the first ones are listed
        left = {line: n - other[line] for line, n in mine.items() if n > other[line]}
        if left:
            for line in lines:
                k = left.get(line)
                if k:
                    left[line] = k - 1
                    out.append(sign + line)
    return "\n".join(out) if len(out) > 1 else new  # the same lines in another order


def _histogram(lengths: list[int], max_tokens: int) -> dict[str, list[int]]:
    edges = [0]
    while edges[-1] < max_tokens:
        edges.append(max(64, edges[-1] * 2))
    # bin i holds the lengths in (edges[i], edges[i + 1]], the first also those below, the
    # last also those above
    at = np.searchsorted(np.asarray(edges[1:-1]), np.asarray(lengths, dtype=np.int64), side="left")
    counts = np.bincount(at, minlength=len(edges) - 1).tolist()
    return {"edges": edges, "counts": counts}


def _default_compare(run: Run) -> str:
    """The builder's choice, except under a random split: a later edit of a unit may then
    be in train while its old code is a val or test target, which only comparing code
    catches as a leak (a temporal split keeps later edits out of train, a path split keeps
    all of a file's edits in one split)."""
    if str(getattr(run.cfg.split, "name", "")) == "random":
        return "code"
    return getattr(run.builder, "dedup_compare", "code")


def build_stage(run: Run, stats: Counter) -> tuple[dict[str, int], dict[str, Any]]:
    aheads = AheadCopies()  # the copies of kept lines started ahead of the writing (core.kept_lines)
    try:
        return _build_stage(run, stats, aheads)
    finally:
        aheads.close()  # those the writing did not take over, and any the tokenizer's thread starts later


def _build_stage(run: Run, stats: Counter, aheads: AheadCopies) -> tuple[dict[str, int], dict[str, Any]]:
    digests: list[bytes] | None = None
    if hasattr(run.builder, "rows"):  # builders of code at a snapshot bring their own rows
        changes = run.builder.rows(run, stats)
        if run.cfg.reuse:  # known again by the digests of their JSON lines
            digests = [hashlib.sha1(record_line(row)).digest() for row in changes]
    else:
        digests = [] if run.cfg.reuse else None  # rows are known again by their lines' digests
        changes = _read_rows(run, digests)
    stats.add("unit_changes", len(changes))
    splits = run.split.assign(changes)
    kept_changes, kept_splits, kept_digests = [], [], []
    for k, (c, sp) in enumerate(zip(changes, splits)):
        if sp is None:
            stats.skip("split_gap")
        else:
            kept_changes.append(c)
            kept_splits.append(sp)
            if digests is not None:
                kept_digests.append(digests[k])
    dcfg = run.cfg.dedup
    on = dcfg.compare or _default_compare(run)  # dedup.compare itself is checked with the config (check_root)
    if on not in DEDUP_COMPARE:
        raise CommitforgeError(f"builder {run.cfg.builder.name!r} asks dedup to compare {on!r}; its dedup_compare "
                               f"must be one of {', '.join(DEDUP_COMPARE)}")

    training_texts = TrainingTexts(kept_changes, kept_splits, kept_digests if digests is not None else None)
    # the builder may bring tokens of its own (fim); the format's come first
    special = list(dict.fromkeys(run.format.special_tokens + list(getattr(run.builder, "special_tokens", []))))
    threads = int(getattr(run.executor, "workers", 1) or 1)
    # the tokenizer is prepared while deduplication runs (see the module's docstring)
    preparing = _Alongside(_prepare, run, special, training_texts, aheads)
    t0 = time.perf_counter()
    dedup_features = (_DedupFeatures(run, kept_changes, kept_digests, on, threads)
                      if digests is not None and (dcfg.exact or dcfg.near) else None)
    try:
        if dedup_features is not None:
            given = dedup_features.result(stats)
            features_seconds = time.perf_counter() - t0
            result = deduplicate(None, kept_splits, exact=dcfg.exact, near=dcfg.near, threshold=dcfg.threshold,
                                 num_perm=dcfg.num_perm, given=given)
            result.report["seconds"] += features_seconds
            del given
        else:
            result = deduplicate([dedup_text(c, on) for c in kept_changes], kept_splits, exact=dcfg.exact,
                                 near=dcfg.near, threshold=dcfg.threshold, num_perm=dcfg.num_perm, threads=threads)
    finally:
        if dedup_features is not None:
            dedup_features.close()
    preparing.result()
    keep_pieces = getattr(run.tokenizer, "keep_pieces_in", None)
    if keep_pieces is not None and run.cfg.reuse:  # what it encodes serves later builds (another builder or format)
        keep_pieces(run.cache_dir)
    for reason in result.reasons:
        if reason:
            stats.skip(reason)
    dedup_report = {"compare": on, **result.report}
    # stats.json must be byte-identical across reruns: timings go to the manifest only
    stats.add("dedup_ms", int(1000 * dedup_report.pop("seconds", 0)))
    changes = [c for c, keep in zip(kept_changes, result.keep) if keep]
    splits = [sp for sp, keep in zip(kept_splits, result.keep) if keep]
    # the digests of the rows kept, by which the build cache knows them (None: no cache)
    rows = [d for d, keep in zip(kept_digests, result.keep) if keep] if digests is not None else None
    del digests, kept_digests, training_texts
    # the rows dropped here, and the texts only they hold, are freed before tokenizing
    forget_shared_texts(kept_changes)
    del kept_changes, kept_splits, result
    lines = None  # the example lines earlier builds wrote (core.kept_lines), open while in use
    try:
        if rows is not None and changes and takes(run.builder.build, "memo"):
            base = _examples_base(run, special)
            store = BuildMemo(run.cache_dir, base)
            if getattr(run.builder, "examples_as_assembled", False):
                lines = _kept_lines(run, base)
                if lines is not None:  # the lines each split's shards start with: copied while the builder works
                    lines.copy_ahead_leading(rows, splits, _shard_path(run), aheads)
            try:
                # a job of a sweep over builder settings keeps each row's encoded layout for
                # the jobs that fit them into another max_tokens; any build reads those kept
                layouts = _examples_base(run, special, fitted=False)
                with paused():  # its examples form no cycles (core.collector)
                    examples = run.builder.build(changes, splits, run.format, run.tokenizer, stats,
                                                 memo=Memo(store, rows, lines, layouts, _keeps_layouts()))
            finally:
                store.close()
        else:
            with paused():
                examples = run.builder.build(changes, splits, run.format, run.tokenizer, stats)
        # the unit changes are done with: free them before the examples are written
        changes.clear()
        splits.clear()
        del rows
        by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        for ex in examples:
            by_split[ex["split"]].append(ex)
        del examples
        run.example_commits = {name: _Counter(r["commit"] for r in rows) for name, rows in by_split.items()}
        max_tokens = int(getattr(run.builder.cfg, "max_tokens", 2048))
        split_stats = {}
        for name, rows in by_split.items():
            tokens = sum(r["n_tokens"] for r in rows)
            target = sum(r["n_target_tokens"] for r in rows)
            split_stats[name] = {
                "examples": len(rows),
                "commits": len({r["commit"] for r in rows}),
                "tokens": tokens,
                "target_tokens": target,
                "trained_token_share": round(target / tokens, 4) if tokens else 0.0,
                "truncated": stats.counts.get(f"truncated_{name}", 0),
                "changes": dict(sorted(_Counter(r["change"] for r in rows).items())),
                "length_histogram": _histogram([r["n_tokens"] for r in rows], max_tokens),
            }
            stats.add(f"examples_{name}", len(rows))
        tok = run.tokenizer
        report = {
            "splits": split_stats,
            "skips": dict(sorted(stats.skips.items())),
            "dedup": dedup_report,
            "tokenizer": tok.identity,
            "format": run.cfg.format.name,
            "builder": run.cfg.builder.name,
            "special_tokens_added": len(tok.added_tokens),
            "special_token_ids": {t: tok.token_id(t) for t in special},
            "resize_embeddings": bool(tok.added_tokens),
            "max_tokens": max_tokens,
        }
        summary = {"examples": {k: len(v) for k, v in by_split.items()}, "tokenizer": tok.identity,
                   "resize_embeddings": bool(tok.added_tokens)}
        given = _writer_splits(run.writer, by_split)
        t_write = time.perf_counter()
        outputs = run.writer.write(run.run_dir, given, report)
        stats.add("write_ms", int(1000 * (time.perf_counter() - t_write)))  # copies of kept lines included
        if lines is not None:  # each split's shards, for the next build to link or copy
            for name, rows in given.items():
                for shard in getattr(rows, "shards", None) or ():
                    if shard.linked is not None:
                        stats.add("example_shards_linked", 1)
                        lines.linked(shard.linked, name, shard.shard)
                    else:
                        lines.keep(run.run_dir / shard.rel, name, shard.shard, by_split[name][shard.lo:shard.hi],
                                   shard.ends)
            lines.forget_old()
    finally:
        if lines is not None:
            lines.close()
    save = getattr(tok, "save", None)
    if save is not None:  # the tokenizer the ids belong to, special tokens included
        outputs.update({f"tokenizer/{name}": 1 for name in save(run.run_dir / "tokenizer")})
    saved = getattr(tok, "wait_saved", None)
    if saved is not None:  # its pieces were saved while the examples were written
        saved()
    return outputs, summary


def _prepare(run: Run, special: list[str], texts: TrainingTexts, aheads: AheadCopies) -> None:
    """Prepare the tokenizer; then, when the examples' lines an earlier build wrote are
    copied (core.kept_lines), start copying its train file to this run's: train starts
    with the same lines when the repository was brought up to date after a commit, and
    the copy is done by the time the new examples are (core.files.copy_ahead)."""
    run.tokenizer.prepare(special, texts, run.cache_dir)
    if texts.rows is None or not getattr(run.builder, "examples_as_assembled", False) \
            or not takes(run.builder.build, "memo"):
        return
    lines = _kept_lines(run, _examples_base(run, special))
    if lines is not None:
        try:
            lines.copy_ahead("train", _shard_path(run), aheads)
        finally:
            lines.close()


class _Alongside:
    """``fn(*args)`` run in a daemon thread; ``result()`` waits for it and raises what it
    raised. A stage that fails or is interrupted before asking does not wait: training a
    tokenizer cannot be interrupted, and the process may end without it (the ``bpe``
    tokenizer is cached by an atomic rename, so nothing half-written is ever used)."""

    def __init__(self, fn: Callable[..., Any], *args: Any):
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), name="commitforge-tokenizer",
                                        daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that asks for the result
            self._error = exc

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


class TrainingTexts:
    """What a tokenizer that learns from the data learns from: called, the code of the
    train split's unit changes, old then new, in order. ``rows``: the digest of each train
    row's line in chunks/, in the same order (each gives two texts), or None. Two
    builds whose train rows start with the same digests start with the same texts, so a
    tokenizer that learns from the first N characters can know its corpus without reading
    the rows (see ``BpeTokenizer``, whose ``_CORPUS_FORMAT`` a change to these texts bumps)."""

    def __init__(self, changes: list[Any], splits: list[str], digests: list[bytes] | None):
        self._changes, self._splits = changes, splits
        self.rows = None if digests is None else [d for d, sp in zip(digests, splits) if sp == "train"]

    def __call__(self) -> Iterator[str]:
        for c, sp in zip(self._changes, self._splits):
            if sp == "train":
                yield c["old_code"]
                yield c["new_code"]


def _read_rows(run: Run, digests: list[bytes] | None) -> list[Any]:
    """The rows of the run's ``chunks/``. Each shard an earlier build read (a shard the
    chunk stage linked from a kept output is the same file) has its rows from that
    build's index of it (core.build_memo.RowIndexes), and the shard whose first bytes the
    chunk stage copied from a kept one (``Run.chunks_copied``) has those rows from the
    kept one's index; the others are read, and their indexes kept for the next build."""
    path = run.run_dir / CHUNKS_DIR
    if digests is None:
        return read_changes(path)
    from core.pipeline import code_version

    indexes, version = RowIndexes(run.cache_dir), code_version()
    # the rows, and the indexes they come from, live through the stage and form no cycles
    with paused():  # (core.collector)
        try:
            shards = shard_paths(path)
            sizes = [p.stat().st_size for p in shards]
            keys = [stat_key(p) for p in shards]
            known: list[tuple[RowIndex | None, int]] = []
            copied = run.chunks_copied
            for k, (key, size) in enumerate(zip(keys, sizes)):
                index = indexes.find(key, version)
                if index is not None and index.ends and index.ends[-1] == size:
                    known.append((index, size))
                elif copied is not None and copied[2] == k:  # its first bytes are a kept shard's
                    index = indexes.find(copied[0], version)
                    known.append((index, copied[1] if index is not None else 0))
                else:
                    known.append((None, 0))
            changes = read_changes(path, digests, known)
            if changes and [stat_key(fd) for fd in changes[0]._file.fds] == keys:  # the shards read are those
                at = 0
                for k, (key, (index, size)) in enumerate(zip(keys, known)):
                    n = bisect.bisect_left(changes, changes[0]._file.starts[k + 1], lo=at, key=_offset)
                    if not (index is not None and size == sizes[k]):
                        made = RowIndex.of(changes[at:n], digests[at:n], changes[0]._file.starts[k])
                        if made is not None:
                            indexes.keep(key, version, made)
                    at = n
        finally:
            indexes.close()
    return changes


def _offset(change: Any) -> int:
    return change._at


def _rows_scope(run: Run) -> str:
    """Where a build's rows come from (the repository, the chunk settings, or a builder of
    its own rows): an earlier build's block of dedup features serves builds of the same."""
    own = run.cfg.builder.name if hasattr(run.builder, "rows") else None
    return fingerprint("rows", str(run.repo.path.resolve()), run._chunk_fingerprint(), own)


FEATURES_STALE = 0.1  # the share of rows not in the block of dedup features that has it written again


# computing the dedup features of this many rows or more is shared by the executor's
# workers; fewer are computed here (forking costs more than it saves)
PARALLEL_FEATURE_ROWS = 4096


class _DedupFeatures:
    """What dedup compares of each row: kept by an earlier build, or computed (and kept).

    Rows of chunks/ to compute, when there are ``PARALLEL_FEATURE_ROWS`` or more, go
    to the executor's workers in contiguous shares of about equal bytes; each worker
    reads, parses and compares its own rows. This process meanwhile reads those rows
    whole, as the builder will. (In one process, the interpreter lock keeps reading rows,
    making their texts and the signature threads from overlapping.) The features do not
    depend on where they were computed.

    The workers are forked right after the tokenizer's preparation started (it goes on
    meanwhile: an update finds its tokenizer while the kept features are read). A ``bpe``
    tokenizer that trains reads its corpus in Python for a few tenths of a second before
    its library starts threads, long after the fork; a process forked after those threads
    ran would get a warning from the tokenizers library, and nothing else."""

    def __init__(self, run: Run, changes: list[dict[str, Any]], rows: list[bytes], on: str, threads: int):
        from core.pipeline import code_version

        dcfg = run.cfg.dedup
        self._changes, self._rows, self._on, self._threads = changes, rows, on, threads
        self._settings = {"exact": bool(dcfg.exact), "near": bool(dcfg.near), "num_perm": int(dcfg.num_perm)}
        self._store = BuildMemo(run.cache_dir, fingerprint("dedup", BUILD_MEMO_FORMAT, code_version(), on,
                                                           self._settings))
        self._results: Iterator[Features | None] | None = None
        self._claim: Claim | None = None
        try:
            self._scope = _rows_scope(run)
            self._look_up()
            if len(self._todo) >= PARALLEL_FEATURE_ROWS:
                # a build computing the same rows' features (a sweep job started with this
                # one) is waited for, and its block read: it holds the claim until it kept it
                self._claim = claim_for(run.cache_dir, "features-" + fingerprint(self._store.base, self._scope)[:32])
                if self._claim.waited:
                    self._look_up()
            self._start(run)
        except BaseException:
            self.close()
            raise

    def _look_up(self) -> None:
        """The features kept: the rows the last build of these rows compared come in one
        block, the others entry by entry; ``_todo``: the rows to compute."""
        rows = self._rows
        self._last = self._store.last_features(self._scope, **self._settings)
        position = {row: j for j, row in enumerate(self._last[0])} if self._last is not None else {}
        found = [position.get(row, -1) for row in rows]  # -1: not in the block
        self._found = np.array(found, dtype=np.int64)
        self._rest = [row for row, j in zip(rows, found) if j < 0]
        self._kept = self._store.get_many(self._rest)
        self._todo = [i for i, (row, j) in enumerate(zip(rows, found)) if j < 0 and row not in self._kept]

    def _start(self, run: Run) -> None:
        workers = int(getattr(run.executor, "workers", 1) or 1)
        if (len(self._todo) < PARALLEL_FEATURE_ROWS or workers < 2
                or not getattr(run.executor, "same_machine", False)):
            return
        lines = [line_of(self._changes[i]) for i in self._todo]
        if any(line is None for line in lines) or len({line[:2] for line in lines}) != 1:  # type: ignore[index]
            return  # rows of a builder of its own, or of several files
        path, key = str(lines[0][0]), lines[0][1]  # type: ignore[index]
        ends = list(accumulate(line[3] for line in lines))  # type: ignore[index]
        cuts = sorted({0, len(lines), *(bisect.bisect_left(ends, ends[-1] * k / workers) + 1 for k in range(1, workers))})
        tasks = [(path, key, [line[2:] for line in lines[a:b]], self._on, self._settings)  # type: ignore[index]
                 for a, b in pairwise(cuts) if a < b]
        self._results = iter(run.executor.map(_row_features, [None, *tasks]))
        next(self._results)  # the first task does nothing: the workers are forked once it is done

    def result(self, stats: Counter) -> Features:
        store = self._store
        if store is None:
            raise RuntimeError("the dedup features were taken already, or closed")
        todo, changes = self._todo, self._changes
        if self._results is not None:
            for i in todo:  # while the workers compute
                whole(changes[i])
            computed = self._gather(len(todo))
        else:
            computed = features([dedup_text(changes[i], self._on) for i in todo], threads=self._threads,
                                **self._settings)
        rows, found, last = self._rows, self._found, self._last
        at = np.flatnonzero(found >= 0)
        given = (at, found[at], last[1]) if last is not None else None
        merged = merge_features(rows, self._kept, todo, computed, **self._settings, last=given)
        if len(self._rest) > len(rows) * FEATURES_STALE:
            # written again only once that many rows are not in it: writing it (18 MB for
            # rusty-kaspa's history) takes longer than reading a few rows' entries. The rows
            # computed are then not kept entry by entry too (1.5 s of SQLite for a cold
            # build of that history): the block has them, and a block found damaged has
            # its rows computed again
            store.keep_features(self._scope, rows, merged)
        else:
            store.put_many(dedup_entries([rows[i] for i in todo], computed))
        self.close()
        stats.add("dedup_rows_computed", len(todo))
        if store.damaged:
            stats.add("build_cache_damaged", store.damaged)
        return merged

    def _gather(self, n: int) -> Features:
        """The workers' shares, in order, copied into one set of arrays as they come (each
        freed once copied: a history's signatures are in memory once)."""
        keys: list[bytes] | None = [] if self._settings["exact"] else None
        sig = has = None
        at = 0
        for part in self._results:  # type: ignore[union-attr]
            if part is None:
                continue
            k = len(part.has)
            if at + k > n:
                at += k
                break
            if sig is None:
                sig = np.empty((n, part.sig.shape[1]), dtype=part.sig.dtype)
                has = np.empty(n, dtype=bool)
            sig[at:at + k] = part.sig
            has[at:at + k] = part.has  # type: ignore[index]
            if keys is not None:
                keys += part.keys
            at += k
        if at != n:
            raise CommitforgeError(f"the executor's workers gave the dedup features of {at} rows, not {n}; "
                                   "run again, or with executor.workers=1")
        return Features(keys, sig, has)  # type: ignore[arg-type]

    def close(self) -> None:
        """Stop the workers (waiting for the shares they started), close the store and give
        up the claim."""
        results, self._results = self._results, None
        store, self._store = self._store, None
        claim, self._claim = self._claim, None
        try:
            close = getattr(results, "close", None)
            if close is not None:  # a generator's cancels the shares not started
                close()
        finally:
            if store is not None:
                store.close()
            if claim is not None:
                claim.release()


def _row_features(task: tuple[str, str, list[tuple[int, int]], str, dict[str, Any]] | None) -> Features | None:
    """An executor's task: the dedup features of rows of a chunks/, given as (path,
    the file's ``stat_key`` as the build stage read it, [(offset, size)], what to compare,
    feature settings). None does nothing."""
    if task is None:
        return None
    path, key, lines, on, settings = task
    return features([dedup_text(without_context(line), on) for line in lines_at(path, key, lines)], **settings)


def _keeps_layouts() -> bool:
    """Whether this build keeps its rows' encoded layouts: a job of a multirun whose
    overrides set builder settings (``builder.max_tokens=1024,2048`` gives each job one).
    The jobs of a sweep over chunker, format, tokenizer settings or builders
    (``builder=commit,fim``) lay their rows out differently: their layouts would serve no
    other job."""
    if not in_multirun():
        return False
    from hydra.core.hydra_config import HydraConfig

    return any(o.lstrip("+~").startswith("builder.") for o in HydraConfig.get().overrides.task)


def _examples_base(run: Run, special: list[str], fitted: bool = True) -> str:
    """What a kept example depends on besides its row (see core.build_memo); with
    ``fitted=False``, what its encoded layout depends on: the same but ``builder.max_tokens``,
    which only fits the layout (core.examples.assemble)."""
    from core.pipeline import code_version, plugin_code

    def plain(group: str) -> Any:
        value = OmegaConf.to_container(run.cfg[group], resolve=True)
        if not fitted and group == "builder" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "max_tokens"}
        return value

    versions = {}
    for dist in ("tokenizers", "transformers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    tok = run.tokenizer
    identity = dict(tok.identity)
    if identity.get("sha256"):  # the tokenizer's content names it: not where it lies (a cache path)
        identity.pop("name_or_path", None)
    plugins = [plugin_code(run.registry.get(kind, run.cfg[kind].name)) for kind in ("format", "builder", "tokenizer")]
    return fingerprint("examples" if fitted else "layouts", BUILD_MEMO_FORMAT, code_version(), plugins,
                       plain("format"), plain("builder"), identity, list(tok.added_tokens), special, versions)


def _kept_lines(run: Run, examples_base: str) -> KeptLines | None:
    """The example lines earlier builds wrote with these settings and this writer, when
    the writer writes lines (see core.kept_lines)."""
    from core.pipeline import plugin_code

    writer = run.writer
    if not getattr(writer, "line_shards", None) or not getattr(writer, "lazy_rows", False):
        return None
    base = fingerprint("lines", KEPT_LINES_FORMAT, examples_base, plugin_code(run.registry.get("writer", run.cfg.writer.name)),
                       OmegaConf.to_container(run.cfg.writer, resolve=True), writer.line_shards, writer.shard_bytes)
    return KeptLines(run.cache_dir, base, writer.shard_bytes)


def _shard_path(run: Run) -> Callable[[str, int], Path]:
    """Where the writer puts a split's shard of a number (its ``line_shards``)."""
    return lambda split, shard: run.run_dir / run.writer.line_shards.format(split=split, shard=shard)


def _writer_splits(writer: Any, by_split: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What the writer gets: each split's examples with lists of ints. A writer with
    ``lazy_rows = True`` reads them as :class:`ExampleRows`, built one at a time from the
    packed examples; any other gets plain lists (converted split by split, in place)."""
    if getattr(writer, "lazy_rows", False):
        return {name: ExampleRows(rows) for name, rows in by_split.items()}
    for name in by_split:
        by_split[name] = [unpack(r) for r in by_split[name]]
    return by_split
