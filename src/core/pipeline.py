"""Run the configured stages into a run directory and write its manifest."""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import functools
import hashlib
import importlib
import inspect
import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.cache_admin import stale_hint
from core.chunk_shards import SHARD_BYTES as CHUNK_SHARD_BYTES
from core.chunk_shards import ChunkShards
from core.chunking import (ChunkJob, SpooledRows, close_readers, commit_batch, context_runs, naming_files,
                            project_file_names, redact_counted, reset_memory, takes, unique_blobs)
from core.collector import fewer_collections
from core.config import STAGES, DedupConfig, PairingConfig, RootConfig
from core.context import summary as context_summary
from core.errors import CommitforgeError
from core.files import atomic_write, read_line, record_line, stat_key
from core.gitio import Repository, line_hunks
from core.hash_points import HashPoints
from core.hookspecs import KINDS
from core.language import file_extension
from core.manifest import (SPOOL, Manifest, RunLock, completed_stages, environment_versions, remove_stale_outputs,
                           remove_stale_temporaries)
from core.records import CommitRecord
from core.redact import RedactConfig
from core.progress import configure as configure_progress
from core.progress import progress
from core.registry import PluginRegistry
from core.report import ChunkScan, scan_lines, write_report
from core.snapshot import TreeSteps, plan_trees, snapshot_trees, tree_steps
from core.stage_cache import STAGE_CACHE_FORMAT, KeptOutput, StageCache, commit_key, fingerprint
from core.stats import Counter


@functools.cache
def code_version() -> str:
    """A hash of commitforge's own source: cached stage outputs never outlive a code change."""
    h = hashlib.sha256()
    for package in ("core", "plugins"):
        root = Path(importlib.import_module(package).__file__).parent  # type: ignore[arg-type]
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def plugin_code(info: Any) -> tuple[str, str, str | None]:
    """A plugin's package, version and a hash of the module its factory lives in: work a
    third-party plugin did is never reused after its code changes."""
    try:
        source = inspect.getsourcefile(info.factory)
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16] if source else None
    except (TypeError, OSError):
        digest = None
    return info.package, info.version, digest


def check_stages(stages: list[str]) -> list[str]:
    stages = list(stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise CommitforgeError(f"unknown stage {unknown[0]!r} in stages={stages}; stages are, in order: {', '.join(STAGES)}")
    if not stages or stages != list(STAGES[: len(stages)]):
        raise CommitforgeError(f"stages={stages} must be a prefix of the pipeline: {', '.join(STAGES)} (e.g. stages=[mine])")
    return stages


def _hydra_output_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        raise CommitforgeError("out_dir is not set; pass out_dir=DIR (outside the command line Hydra sets it)")
    return HydraConfig.get().runtime.output_dir


def check_root(cfg: DictConfig) -> None:
    """Keys outside the plugin groups that no schema knows (``+max_file_byte=5`` adds one
    that Hydra accepts) and dedup settings the build stage would refuse only after
    mining and chunking."""
    from core.build import DEDUP_COMPARE

    for where, schema in (("", RootConfig), ("dedup.", DedupConfig), ("pairing.", PairingConfig),
                          ("redact.", RedactConfig)):
        node = cfg if not where else cfg.get(where[:-1])
        if node is None:
            continue
        known = [f.name for f in dataclasses.fields(schema)]
        for key in node:
            if key not in known:
                near = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {where}{near[0]}? " if near else ""
                raise CommitforgeError(f"unknown config key {where}{key}; {hint}known keys: {', '.join(known)}")
    d = cfg.get("dedup")
    if d is not None:
        if not 0 < float(d.threshold) <= 1:
            raise CommitforgeError(f"dedup.threshold={d.threshold} must lie in (0, 1], e.g. 0.85")
        if int(d.num_perm) < 2:
            raise CommitforgeError(f"dedup.num_perm={d.num_perm} must be at least 2, e.g. 128")
        if d.compare is not None and d.compare not in DEDUP_COMPARE:
            raise CommitforgeError(f"dedup.compare={d.compare!r} must be one of {', '.join(DEDUP_COMPARE)} "
                                   "(or null: the builder's choice)")


_POOL_SIZED: str | None = None  # the RAYON_NUM_THREADS this process set (size_native_pool)


def size_native_pool(workers: Any) -> None:
    """Let the tokenizers library's thread pool (BPE training, batch encoding) use as many
    threads as ``executor.workers`` allows cores: ``RAYON_NUM_THREADS``, unless the user
    set it. The pool is made when first used, so the first run of a process sizes it."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        return  # null: one worker per core, as the pool has by default
    global _POOL_SIZED
    current = os.environ.get("RAYON_NUM_THREADS")
    if current is None or current == _POOL_SIZED:
        os.environ["RAYON_NUM_THREADS"] = _POOL_SIZED = str(workers)


class Run:
    """One pipeline run: resolved plugins, a repository, a run directory."""

    def __init__(self, cfg: DictConfig, registry: PluginRegistry | None = None):
        self.cfg = cfg
        check_root(cfg)
        # the code is hashed before the plugins are imported: a source file saved while a run
        # starts must not have its cached work filed under the new code's hash
        code_version()
        self.registry = registry or PluginRegistry()
        self.stages = check_stages(cfg.stages)
        self.run_dir = Path(cfg.out_dir or _hydra_output_dir()).expanduser().resolve()
        self.cache_dir = Path(cfg.cache_dir).expanduser()
        reg = self.registry
        self.source = reg.create("source", cfg.source)
        self.language = reg.create("language", cfg.language)
        self.languages = {self.language.name: self.language}
        for name in cfg.get("languages") or []:  # more languages, each with its default settings
            if name in self.languages:
                continue
            self.languages[name] = reg.create("language", {"name": name})
        claimed: dict[str, str] = {}
        for lang in self.languages.values():
            for ext in lang.extensions:
                if ext in claimed:
                    raise CommitforgeError(f"extension {ext!r} is claimed by languages {claimed[ext]!r} and "
                                           f"{lang.name!r}; change one of them with language.extensions=[...]")
                claimed[ext] = lang.name
        self.chunker = reg.create("chunker", cfg.chunker)
        self.executor = reg.create("executor", cfg.executor)
        size_native_pool(cfg.executor.get("workers"))
        self.context = reg.create("context", cfg.context) if cfg.get("context") is not None else None
        if "build" in self.stages:
            for kind in ("tokenizer", "format", "builder", "split", "writer"):
                if cfg.get(kind) is None:
                    raise CommitforgeError(f"the build stage needs a {kind}: choose one with {kind}=NAME "
                                           f"(available: {', '.join(reg.names(kind)) or 'none installed'}) "
                                           "or stop after chunking with stages=[mine,chunk]")
            self.tokenizer = reg.create("tokenizer", cfg.tokenizer)
            self.format = reg.create("format", cfg.format)
            self.builder = reg.create("builder", cfg.builder)
            self.split = reg.create("split", cfg.split)
            self.writer = reg.create("writer", cfg.writer)
            counter = getattr(self.tokenizer, "token_counter", None)
            if counter is not None and hasattr(self.context, "use_token_counter"):
                # context budgets are counted with the run's tokenizer when it exists before building
                count = counter()
                digest = hashlib.sha256(count.tokenizer_json.encode()).hexdigest()[:16]
                self.context.use_token_counter(count, f"tokenizer:{cfg.tokenizer.name}:{digest}")
        self.redactor = RedactConfig(**OmegaConf.to_container(cfg.redact, resolve=True)).redactor()  # type: ignore[arg-type]
        if cfg.max_file_bytes < 1:
            raise CommitforgeError(f"max_file_bytes={cfg.max_file_bytes} must be positive")
        if cfg.repo:
            repo_path = Path(str(cfg.repo)).expanduser()
        else:
            from core.demo import demo_repo_path

            repo_path = demo_repo_path(self.cache_dir)
        self.repo = Repository(repo_path)
        configure_progress(cfg.get("progress"))
        self.summary: dict[str, Any] = {}
        self.last_commit: CommitRecord | None = None
        self.chunk_scan: ChunkScan | None = None  # the report's scan of chunks/, when this run wrote it
        # (stat key, bytes, position) of the kept shard whose first bytes this run's chunk stage
        # copied into its shard at that position (the shards before it were linked)
        self.chunks_copied: tuple[str, int, int] | None = None
        # examples per commit per split, when this run built them (the report's, without reading them back)
        self.example_commits: dict[str, dict[str, int]] | None = None

    def extensions(self) -> dict[str, str]:
        ext: dict[str, str] = {}
        for lang in self.languages.values():
            for e in lang.extensions:
                ext[e] = lang.name
        return ext

    def run(self) -> Path:
        self._prepare_run_dir()
        with RunLock(self.run_dir), fewer_collections():
            return self._run()

    def _run(self) -> Path:
        remove_stale_temporaries(self.run_dir)
        config = OmegaConf.to_container(self.cfg, resolve=True)
        manifest = Manifest(self.run_dir, config)  # type: ignore[arg-type]
        versions: dict[str, str] = {}
        for lang in self.languages.values():
            versions.update(lang.versions())
        manifest.set("versions", environment_versions(versions))
        plugins = {k: self.cfg[k].name for k in KINDS if self.cfg.get(k) is not None}
        if len(self.languages) > 1:  # `languages=[rust,python]`: every language the run chunks
            plugins["language"] = ",".join(self.languages)
        manifest.set("plugins", plugins)
        head = self.repo.head()
        manifest.set("repository", {"path": str(self.repo.path.resolve()), "name": self.repo.name,
                                    "head": head, "rev": self.source.cfg.rev,
                                    "shallow": bool(self.repo.shallow_commits())})
        # a run interrupted (or finished) before in this directory with the same config, code and
        # commits (the source's revision: its range's ends as they resolve now; HEAD for a
        # source that does not say): the stages whose outputs still match the manifest are not redone
        revision = self.source.revision(self.repo) if hasattr(self.source, "revision") else head
        resume_key = fingerprint(config, revision, code_version(), manifest.data["versions"])
        manifest.set("resume_key", resume_key)
        done = completed_stages(self.run_dir, resume_key, self.stages)
        remove_stale_outputs(self.run_dir, done)
        if done:
            manifest.resume(done)
        try:
            if "mine" in done:
                lines = (self.run_dir / "commits.jsonl").read_bytes().splitlines(keepends=True)
                commits = [CommitRecord.from_dict(json.loads(line)) for line in lines]
                self.last_commit = commits[-1] if commits else None
                self.summary["commits"] = len(commits)
            else:
                commits, lines = self._mine(manifest)
            if "chunk" in done:
                self.summary["unit_changes"] = sum(o["rows"] for o in manifest.data["stages"]["chunk"]["outputs"].values())
                if manifest.data.get("context") and manifest.data["context"].get("recall") is not None:
                    self.summary["context_recall"] = manifest.data["context"]["recall"]
            elif "chunk" in self.stages:
                self._chunk(manifest, commits, lines)
            if "build" in done:
                counts = manifest.data["stages"]["build"]["counts"]
                self.summary["examples"] = {k[len("examples_"):]: v for k, v in counts.items()
                                            if k.startswith("examples_")}
            elif "build" in self.stages:
                self._build(manifest)
            if done:
                manifest.write()
        finally:
            close_readers()
            self.repo.close()
        return self.run_dir

    def _prepare_run_dir(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CommitforgeError(f"cannot create run directory {str(self.run_dir)!r}: {exc.strerror}; choose another out_dir=DIR") from None

    def _mine(self, manifest: Manifest) -> tuple[list[CommitRecord], list[bytes]]:
        """The commits and their lines in commits.jsonl."""
        t0 = time.perf_counter()
        stats = Counter()
        commits = []
        lines = []
        with atomic_write(self.run_dir / "commits.jsonl") as fh:
            for rec, line in progress(self._mined(stats), desc="mine", unit="commit"):
                commits.append(rec)
                lines.append(line)
                fh.write(line)
        if commits:
            manifest.set("commit_range", {"first": commits[0].commit, "last": commits[-1].commit,
                                          "first_time": commits[0].committer_time,
                                          "last_time": commits[-1].committer_time, "commits": len(commits)})
        else:
            manifest.set("commit_range", None)
        self.last_commit = commits[-1] if commits else None
        manifest.stage("mine", stats, time.perf_counter() - t0, {"commits.jsonl": len(commits)})
        self.summary["commits"] = len(commits)
        return commits, lines

    def _commit_line(self, rec: CommitRecord, stats: Counter) -> bytes:
        """The line of ``rec`` in commits.jsonl (its texts redacted, counted in ``stats``)."""
        if self.redactor is not None:  # secrets never reach commits.jsonl (nor the rows built from it)
            rec.subject = redact_counted(self.redactor, rec.subject, stats)
            rec.message = redact_counted(self.redactor, rec.message, stats)
        return record_line(rec.to_dict())

    def _mined(self, stats: Counter) -> Iterator[tuple[CommitRecord, bytes]]:
        """The commits to chunk, oldest first, with their lines in commits.jsonl. With a
        source that lists its commits first (``commit_ids``), a commit mined before with
        the same settings comes from the stage cache, and git reads only the records of
        the others (an update after a commit: one, instead of walking the history)."""
        source, ext = self.source, self.extensions()
        if not self.cfg.reuse or not hasattr(source, "commit_ids"):
            for rec in source.commits(self.repo, ext, stats):
                yield rec, self._commit_line(rec, stats)
            return
        ids = source.commit_ids(self.repo)
        # a commit's record depends on the source's settings and code, the languages, the
        # redaction, and what git makes of the commit (its version, the repository's config,
        # replace refs and grafts)
        base = fingerprint("mine", STAGE_CACHE_FORMAT, code_version(),
                           plugin_code(self.registry.get("source", self.cfg.source.name)), source.record_settings(),
                           sorted(ext.items()), OmegaConf.to_container(self.cfg.redact, resolve=True),
                           self.repo.record_state())
        keys = [hashlib.sha256(f"{base}:{commit}".encode()).hexdigest() for commit in ids]
        cache = StageCache(self.cache_dir)
        # a shallow clone's boundary commit is one only in that clone: never stored
        shallow = self.repo.shallow_commits()
        found: dict[str, tuple[CommitRecord | None, bytes | None, dict[str, Any]]] = {}
        for key, (line, counts) in cache.get_mined(keys).items():
            try:
                found[key] = (CommitRecord.from_dict(read_line(line)) if line is not None else None, line, counts)
            except (ValueError, TypeError, KeyError):
                pass  # damaged: mined again and stored again
        todo = [commit for commit, key in zip(ids, keys) if key not in found or commit in shallow]
        fresh: dict[str, tuple[CommitRecord | None, bytes | None, dict[str, Any]]] = {}
        if todo:  # git reads the records of these commits only (the ones rev-list listed)
            for commit, rec, counts in source.mined(self.repo, ext, only=todo):
                line = self._commit_line(rec, counts) if rec is not None else None
                fresh[commit] = (rec, line, counts.to_dict())
            if len(fresh) != len(todo) or not fresh.keys() >= set(todo):
                raise CommitforgeError(f"the history of {str(self.repo.path)!r} changed while it was mined; run again")
            cache.put_mined([(key, *fresh[commit][1:]) for commit, key in zip(ids, keys)
                             if commit in fresh and commit not in shallow])
        for commit, key in zip(ids, keys):
            rec, line, counts = fresh[commit] if commit in fresh else found[key]
            stats.update(counts)
            if rec is not None:
                yield rec, line  # type: ignore[misc]

    def chunk_job(self) -> ChunkJob:
        """Parsing and pairing work for the executor's workers (shares the unit cache)."""
        return ChunkJob(
            git_dir=str(self.repo.git_dir),
            repo_name=self.repo.name,
            cache_root=str(self.cache_dir),
            languages=self.languages,
            chunker=self.chunker,
            max_file_bytes=int(self.cfg.max_file_bytes),
            rename_similarity=float(self.cfg.pairing.rename_similarity),
            context=self.context,
            redactor=self.redactor,
            # a stored summary stands for a blob the run may read: one over max_file_bytes has none
            summary_key=fingerprint("summary", code_version(), getattr(self.context, "options", None),
                                    int(self.cfg.max_file_bytes))[:32],
        )

    def _chunk(self, manifest: Manifest, commits: list[CommitRecord], lines: list[bytes]) -> None:
        """``lines`` are the commits' lines in commits.jsonl (part of each commit's cache key)."""
        with ExitStack() as claim:  # released however the stage ends
            self._chunk_claiming(manifest, commits, lines, claim)

    def _chunk_claiming(self, manifest: Manifest, commits: list[CommitRecord], lines: list[bytes],
                        claim: ExitStack) -> None:
        t0 = time.perf_counter()
        reset_memory()
        stats = Counter()
        self.chunks_copied = None
        job = self.chunk_job()
        at = getattr(self.context, "snapshot", None)
        ext = self.extensions()
        cache = StageCache(self.cache_dir) if self.cfg.reuse else None
        # per commit: (rows as bytes, row count, counters, report scan); bytes None for the
        # commits whose rows are copied from a kept output (base_output)
        done: dict[int, tuple[bytes | None, int, dict[str, Any], Any]] = {}
        keys: list[str] = []
        base_output, copied_ends = None, []
        # the kept output's totals when it is copied whole: its commits' rows, counters and
        # scan added at once (an update of a long history would otherwise read and add
        # each commit's entry); None: each copied commit's entry is added as it comes
        copied_totals = None
        if cache is not None:
            # a commit's rows depend on the settings, its record and (for a context strategy that
            # reads the repository) the tree its context is read from, which a git tree id names
            t_keys = time.perf_counter()
            trees: list[str | None] = snapshot_trees(self.repo, commits, at) if at is not None else [None] * len(commits)
            base = self._chunk_fingerprint()
            keys = [commit_key(base, line, tree) for line, tree in zip(lines, trees)]
            kept = cache.open_output(f"{base}:{CHUNK_SHARD_BYTES}", keys)  # outputs cut alike
            if kept is not None and kept.totals is not None:  # an earlier output is these commits' start, whole
                base_output, copied_ends, copied_totals = kept, kept.ends, kept.totals
                done = dict.fromkeys(range(len(copied_ends)), _COPIED)
            elif kept is not None:  # an earlier output starts with these commits: link and copy its bytes
                meta = cache.get_meta(keys[:len(kept.ends)])
                if len(meta) == len(kept.ends) and all(m[2] is not None for m in meta.values()):
                    base_output, copied_ends = kept, kept.ends
                    done = {i: (None, *meta[keys[i]]) for i in range(len(copied_ends))}
            hits = cache.get_many(keys[len(copied_ends):])
            done.update({i: hits[key] for i, key in enumerate(keys) if i >= len(copied_ends) and key in hits})
            stats.add("cache_lookup_ms", int(1000 * (time.perf_counter() - t_keys)))
        if cache is not None and len(done) < len(commits):
            # one run at a time computes rows for these settings: a sweep job started next to
            # another waits for it, then finds the commits it needs in the cache
            t_wait = time.perf_counter()
            claim.enter_context(cache.claim(base))
            hits = cache.get_many([keys[i] for i in range(len(commits)) if i not in done])
            done.update({i: hits[keys[i]] for i in range(len(commits)) if i not in done and keys[i] in hits})
            stats.add("claim_wait_ms", int(1000 * (time.perf_counter() - t_wait)))
        todo = [i for i in range(len(commits)) if i not in done]
        stats.add("commits_reused", len(done))
        stats.add("commits_computed", len(todo))
        workers = getattr(self.executor, "workers", 1) or 1
        hunking: Future | None = None
        if todo:
            # git's hunks (for reparsing by the changed lines) come from a thread while the
            # trees are planned here: both wait for gits, on the cores the workers will take
            blobs = unique_blobs([commits[i] for i in todo])
            diffs, pathspecs = self._hunk_diffs(job, [commits[i] for i in todo], blobs)
            pool = ThreadPoolExecutor(1, thread_name_prefix="commitforge-hunks")
            hunking = pool.submit(_timed, line_hunks, self.repo.git_dir, diffs, pathspecs)
            pool.shutdown(wait=False)  # the thread ends with its task
        steps: list[TreeSteps | None]
        if at is not None and todo:
            # the context strategy reads the whole tree at each commit; the commits to compute are
            # cut into runs of about equal work (context_runs)
            t_trees = time.perf_counter()
            projects = project_file_names(self.languages)
            keep = lambda p: file_extension(p) in ext or p.rsplit("/", 1)[-1] in projects  # noqa: E731
            deltas = plan_trees(self.repo, [commits[i] for i in todo], keep, at)
            tree_sizes: list[int] = []
            present: set[str] = set()
            for delta in deltas:
                present.update(path for path, blob in delta.items() if blob)
                present.difference_update(path for path, blob in delta.items() if not blob)
                tree_sizes.append(len(present))
            changed = [sum(1 for fc in commits[i].files if fc.lang) for i in todo]
            sizes = context_runs(changed, tree_sizes, workers)
            work = [todo[s:s + n] for s, n in zip(itertools.accumulate([0] + sizes), sizes)]
            steps = list(tree_steps(deltas, sizes))
            stats.add("context_trees_ms", int(1000 * (time.perf_counter() - t_trees)))
        else:
            # the unit of work is a run of commits by position (see commit_batch); a run computes
            # only its commits that are not in the cache
            size = commit_batch(len(commits), workers, False)
            work = [group for group in ([i for i in range(s, min(s + size, len(commits))) if i not in done]
                                        for s in range(0, len(commits), size)) if group]
            steps = [None] * len(work)
        named: list[tuple[TreeSteps, TreeSteps] | None] = [None] * len(work)
        names = naming_files(self.languages) if takes(self.chunker.chunk, "module") else set()
        if names and todo:
            # units are named by the project files of their tree (crate names): new code by its
            # commit's, old code by its parent's
            t_named = time.perf_counter()
            order = [commits[i] for group in work for i in group]
            sizes = [len(group) for group in work]
            is_named = lambda p: p.rsplit("/", 1)[-1] in names  # noqa: E731
            named = list(zip(tree_steps(plan_trees(self.repo, order, is_named, "commit"), sizes),
                             tree_steps(plan_trees(self.repo, order, is_named, "parent"), sizes)))
            stats.add("project_trees_ms", int(1000 * (time.perf_counter() - t_named)))
        if todo:
            stats.add("unique_blobs", len(blobs))
            if at is not None:  # files of the trees the batches read are parsed too
                needed = {(b, lang) for b, lang, _ in blobs}
                tree_only: dict[str, list[str]] = {}
                for st in steps:
                    for delta in (st.start, *st.deltas):  # type: ignore[union-attr]
                        for path, blob in delta.items():
                            lang = ext.get(file_extension(path))
                            if blob and lang and (blob, lang) not in needed:
                                needed.add((blob, lang))
                                tree_only.setdefault(lang, []).append(blob)
                stats.add("context_tree_blobs", len(needed))
                for lang, tree_blobs in tree_only.items():
                    # only the index reads these: a blob whose summary is stored needs no parsing
                    summarized = job.summaries(lang).have(tree_blobs)
                    blobs += [(b, lang, None) for b in tree_blobs if b not in summarized]
            hunks, hunk_seconds = hunking.result()  # type: ignore[union-attr]
            stats.add("hunks_ms", int(1000 * hunk_seconds))
            job.parse_all(self.executor, blobs, stats, hunks)
        parse_seconds = time.perf_counter() - t0
        rows = 0
        spool = self.run_dir / SPOOL  # a killed run's was removed when this run started
        if len(work) > 1 and workers > 1 and getattr(self.executor, "same_machine", False):
            # workers write their rows to files here (core.chunking.SpooledRows), compressed
            # for the cache too: the main process copies them into its shards in the kernel
            spool.mkdir(exist_ok=True)
            job.spool_dir, job.spool_packed = str(spool), cache is not None
        results = self.executor.map(job.pair_commits, [([commits[i] for i in group], st, ns)
                                                        for group, st, ns in zip(work, steps, named)])
        spool_left: dict[str, int] = {}  # spooled commits of each file not taken yet
        pending: list[tuple[Any, int, dict[str, Any], Any]] = []  # rows: bytes or SpooledRows
        groups = iter(work)
        scan = ChunkScan()  # what the report reads from chunks/, kept per commit too
        commit_counts = Counter()  # the commits' own counters, for the kept output's totals
        # where each commit's rows end in the output (bytes, and rows): the copied commits' as in
        # the output kept
        ends: list[int] = list(copied_ends)
        row_ends: list[int] = list(base_output.row_ends) if base_output is not None else []
        size = copied_ends[-1] if copied_ends else 0
        # written and hashed by threads while the workers pair commits (the manifest does not
        # read it back); a kept output's shards are linked first, and the first bytes of the one
        # the new commits continue copied, in the kernel where it can be
        # on an error the executor's tasks are cancelled (and the running ones end) before the
        # spool directory they write to is removed
        with (_removing(spool), _closing(results), ExitStack() as sources,
              ChunkShards(self.run_dir, CHUNK_SHARD_BYTES) as out):
            if base_output is not None:
                self._take_kept(base_output, size, out, sources, stats)
            if copied_totals is not None:
                copied_rows, copied_counts, copied_scan = copied_totals
                rows += copied_rows
                stats.update(copied_counts)
                commit_counts.update(copied_counts)
                scan.merge(ChunkScan.from_plain(copied_scan))
            for i in progress(range(len(commits)), total=len(commits), desc="chunk", unit="commit"):
                hit = done.get(i)
                if hit is _COPIED:
                    continue  # in the totals added above
                if hit is None:
                    if not pending:
                        group = next(groups)
                        pending = next(results)
                        if cache is not None:  # a rerun after a crash resumes here
                            cache.put_many([(keys[j], *r) for j, r in zip(group, pending)])
                        for r in pending:
                            if type(r[0]) is SpooledRows:
                                spool_left[r[0].path] = spool_left.get(r[0].path, 0) + 1
                        pending.reverse()
                    hit = pending.pop()
                data, count, commit_stats, commit_scan = hit
                stats.update(commit_stats)
                commit_counts.update(commit_stats)
                rows += count
                if i < len(copied_ends):  # its rows came with the kept output
                    scan.merge(ChunkScan.from_plain(commit_scan))
                    continue
                if type(data) is SpooledRows:
                    spool_left[data.path] -= 1
                    # the file's last commit taken: it is removed once copied
                    out.copy_file(data.path, data.start, data.size, last=not spool_left[data.path])
                    out.wrote(data.size, count)
                    size += data.size
                    data = None  # its lines are scanned in the worker (commit_scan)
                elif data:
                    out.fh.write(data)
                    out.wrote(len(data), count)
                    size += len(data)
                ends.append(size)
                row_ends.append(rows)
                out.end_commit()
                scan.merge(scan_lines(data.split(b"\n")) if commit_scan is None else ChunkScan.from_plain(commit_scan))
            t_rows = time.perf_counter()
        # what the stage waited for its threads to finish copying and hashing the last shard: an
        # update's kept bytes copied from disk when they left the page cache
        stats.add("output_wait_ms", int(1000 * (time.perf_counter() - t_rows)))
        stats.add("chunk_shards", len(out.shards))
        self.chunk_scan = scan
        if cache is not None and commits:
            cache.keep_output(self.run_dir, out.shards, f"{base}:{CHUNK_SHARD_BYTES}", keys, ends, row_ends,
                              (rows, commit_counts.to_dict(), scan.to_plain()))
        if cache is not None:
            cache.close()
        stats.add("parse_ms", int(parse_seconds * 1000))
        if self.context is not None:
            block = context_summary(stats.counts)
            manifest.set("context", {"strategy": self.cfg.context.name, "snapshot": at,
                                     "counted_with": getattr(self.context, "counted_with", None),
                                     **(block or {})})
            if block is not None:
                self.summary["context_recall"] = block["recall"]
        manifest.stage("chunk", stats, time.perf_counter() - t0, {shard.rel: shard.rows for shard in out.shards})
        self.summary["unit_changes"] = rows
        self.summary["chunk_skips"] = dict(stats.skips)

    def _take_kept(self, kept: KeptOutput, size: int, out: ChunkShards, sources: ExitStack, stats: Counter) -> None:
        """Start the output with the first ``size`` bytes of the kept output ``kept`` (its
        commits this run has too): the shards they fill are linked, and the first bytes of
        the next shard, which this run's commits continue, are copied (its sha256 resumes
        where the kept shard's saved state stops; core.hash_points). A shard that cannot be
        linked (another file system) is copied whole."""
        at = linked = copied = rows = 0
        points = HashPoints(self.cache_dir)
        for shard in kept.shards:
            if at >= size:
                break
            end = at + shard.size
            if end <= size and shard.size >= out.shard_bytes and not out.open \
                    and out.link(shard.path, shard.rows, shard.size, shard.sha256):
                linked += shard.size
            else:
                take = min(end, size) - at
                fh = sources.enter_context(open(shard.path, "rb"))  # open until the copy is written
                out.fh.copy_range(fh.fileno(), 0, take, points.find(fh.fileno()))
                # the build stage takes what an earlier build read of these rows (core.build._read_rows)
                self.chunks_copied = (stat_key(fh.fileno()), take, len(out.shards))
                if take == shard.size:
                    shard_rows = shard.rows
                else:  # the rows up to the last copied commit's end, less those of the shards before
                    shard_rows = kept.row_ends[bisect.bisect_left(kept.ends, size)] - rows
                out.wrote(take, shard_rows)
                out.end_commit()
                copied += take
            rows += shard.rows
            at = end
        stats.add("chunk_bytes_linked", linked)
        stats.add("chunk_bytes_copied", copied)
        stats.add("chunk_shards_linked", out.linked)

    def _hunk_diffs(self, job: ChunkJob, commits: list[CommitRecord], blobs: list[tuple[str, str, str | None]]
                    ) -> tuple[list[tuple[str, str]], list[str]]:
        """What ``line_hunks`` reads git's line hunks from, between the versions of a file
        that phase 1 will parse (so a version is reparsed from its predecessor's tree by
        its changed lines only): the (commit, parent) diffs and the pathspecs."""
        prev_of = {(blob, lang): prev for blob, lang, prev in blobs if prev}
        todo: set[tuple[str, str]] = set()
        for lang in {lang for _, lang in prev_of}:
            wanted = [blob for blob, bl in prev_of if bl == lang]
            cached = job.cached(lang, wanted)
            todo.update((blob, lang) for blob in wanted if blob not in cached)
        diffs: dict[tuple[str, str], None] = {}
        for rec in commits:
            if rec.parents and any(fc.change == "M" and (fc.new_blob, fc.lang) in todo for fc in rec.files):
                diffs[(rec.commit, rec.parents[0])] = None
        return list(diffs), sorted({f"*{ext}" for ext in self.extensions()})

    def _chunk_fingerprint(self) -> str:
        """Everything a commit's chunk-stage rows depend on besides its record and tree."""
        plain = lambda key: OmegaConf.to_container(self.cfg[key], resolve=True) if self.cfg.get(key) is not None else None  # noqa: E731
        selected = [("language", name) for name in sorted(self.languages)] + [("chunker", self.cfg.chunker.name)]
        if self.cfg.get("context") is not None:
            selected.append(("context", self.cfg.context.name))
        plugins = [plugin_code(self.registry.get(kind, name)) for kind, name in selected]
        return fingerprint("chunk", STAGE_CACHE_FORMAT, code_version(), plugins,
                           {name: lang.cache_key for name, lang in sorted(self.languages.items())},
                           plain("language"), plain("chunker"), plain("context"),
                           getattr(self.context, "counted_with", None), int(self.cfg.max_file_bytes),
                           plain("pairing"), plain("redact"), self.repo.name)

    def _build(self, manifest: Manifest) -> None:
        from core.build import build_stage  # tokenizer and dedup stacks load only when building

        t0 = time.perf_counter()
        stats = Counter()
        outputs, summary = build_stage(self, stats)
        manifest.set("tokenizer", summary["tokenizer"])
        manifest.stage("build", stats, time.perf_counter() - t0, outputs)
        self.summary.update({k: v for k, v in summary.items() if k != "tokenizer"})


_COPIED = (None, 0, {}, None)  # a commit of a kept output copied whole (see copied_totals)


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    """``fn(*args)`` and the seconds it took."""
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0


@contextmanager
def _removing(directory: Path) -> Iterator[None]:
    """Remove ``directory`` (the chunk stage's spool) when the block ends, however it ends."""
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _closing(results: Iterator[Any]) -> Iterator[None]:
    """Close an executor's result iterator when the block ends: a generator such as the
    ``local`` executor's cancels the tasks not started and waits for the running ones."""
    try:
        yield
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def run(cfg: DictConfig, registry: PluginRegistry | None = None) -> Path:
    r = Run(cfg, registry)
    run_dir = r.run()
    report = write_report(run_dir, r.chunk_scan, r.example_commits)
    print(screen_summary(r.summary, run_dir, report))
    hint = stale_hint(r.cache_dir)
    if hint is not None:
        print(hint)
    print(f"run directory: {run_dir}")
    return run_dir


def screen_summary(summary: dict[str, Any], run_dir: Path, report: Path) -> str:
    """What a run did, on one screen: counts through the stages, context, skips, time."""
    manifest = json.loads((run_dir / "MANIFEST.json").read_text())
    stages = manifest.get("stages", {})
    lines = []
    flow = [f"{summary.get('commits', 0):,} commits"]
    if "unit_changes" in summary:
        flow.append(f"{summary['unit_changes']:,} unit changes")
    examples = summary.get("examples")
    if examples:
        flow.append(f"{sum(examples.values()):,} examples (" +
                    " · ".join(f"{k} {v:,}" for k, v in examples.items()) + ")")
    lines.append("commitforge: " + " → ".join(flow))
    ctx = manifest.get("context")
    if ctx:
        recall = ctx.get("recall")
        lines.append(f"  context {ctx['strategy']}: recall {recall if recall is not None else 'n/a'}, "
                     f"{ctx.get('items_per_unit', 0)} items per unit, {ctx.get('empty_share', 0):.0%} empty")
    skips: dict[str, int] = {}
    for stage in stages.values():
        for reason, n in stage.get("skips", {}).items():
            skips[reason] = skips.get(reason, 0) + n
    if skips:
        top = sorted(skips.items(), key=lambda kv: -kv[1])[:6]
        lines.append("  skipped: " + ", ".join(f"{reason} {n:,}" for reason, n in top))
    reused = stages.get("chunk", {}).get("counts", {}).get("commits_reused")
    times = ", ".join(f"{name} {stage.get('seconds', 0):.1f} s" for name, stage in stages.items())
    lines.append(f"  time: {times}" + (f" ({reused} commits' chunks reused)" if reused else ""))
    if manifest.get("resumed"):
        done = manifest["resumed"]
        lines.append(f"  resumed: {', '.join(done)} {'was' if len(done) == 1 else 'were'} complete in this run directory")
    lines += _warnings(manifest, summary, skips)
    lines.append(f"  report: {report}")
    return "\n".join(lines)


TOO_LONG = ("target_too_long", "fixed_segments_too_long")


def _warnings(manifest: dict[str, Any], summary: dict[str, Any], skips: dict[str, int]) -> list[str]:
    """What a user should hear about before training on the output."""
    out = []
    cfg = manifest.get("config") or {}
    if "mine" in manifest.get("stages", {}) and not summary.get("commits"):
        langs = [cfg.get("language") or {}] + [{"name": n} for n in cfg.get("languages") or []]
        names = ", ".join(f"{lang.get('name')} ({' '.join(lang.get('extensions') or [])})".replace(" ()", "")
                          for lang in langs)
        out.append(f"  warning: no commit in the range changes a file of {names}; for other code choose "
                   "the language, e.g. language=python or languages=[python], or check source.rev and the filters")
    examples = summary.get("examples")
    too_long = sum(skips.get(k, 0) for k in TOO_LONG)
    if examples is not None and too_long:
        total = sum(examples.values()) + too_long
        if too_long >= 0.1 * total:
            max_tokens = (cfg.get("builder") or {}).get("max_tokens")
            out.append(f"  warning: {too_long:,} of {total:,} examples ({too_long / total:.0%}) did not fit "
                       f"builder.max_tokens={max_tokens} and were dropped; raise builder.max_tokens or lower "
                       "chunker.max_chars")
    return out
