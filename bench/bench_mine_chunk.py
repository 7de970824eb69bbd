"""Benchmark: mining + chunking of a repository's full history, and HEAD-only chunking.

    python bench/bench_mine_chunk.py REPO [--workers N] [--repeat 3] [--head-repeat 5]

Prints, per repeat (cold cache each time): wall seconds, CPU seconds of the process and
its workers (steadier than wall on a shared machine), commits/s, MB/s of parsed source,
unit changes, and peak RSS of this process and its workers. Then HEAD-only chunking
(parse + extract units + cut every unit of every .rs blob at HEAD) on one worker and on
N workers, against tree-sitter parsing alone of the same bytes on one core, in the same
rounds, as medians of ``--head-repeat`` rounds and a ratio.

The speed of this shared machine drifts (tree-sitter alone has parsed the same bytes at 6
to 12 MB/s on one core here on different hours), so each full-history run is bracketed by
two rounds of parsing the HEAD blobs alone on one core, and its wall time is also given
scaled to a reference parse speed (``--reference-mb-s``, default 12 MB/s: the speed the
targets were set at): ``wall_at_reference_s = wall_s * parse_mb_s / reference``. A run
whose neighbouring parse rounds disagree by more than 15% was taken while the machine
changed speed; it is flagged (``steady: false``) and left out of the scaled median.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from hydra import compose, initialize_config_dir

from core.config import conf_dir, register_schema
from core.gitio import BlobReader, Repository
from core.pipeline import Run


def full_history(repo: str, workers: int | None, out: Path, cache: Path) -> dict:
    register_schema()
    overrides = [f"repo={repo}", f"out_dir={out}", f"cache_dir={cache}", "stages=[mine,chunk]", "reuse=false"]
    if workers:
        overrides.append(f"executor.workers={workers}")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    run = Run(cfg)
    run.run()
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    manifest = json.loads((out / "MANIFEST.json").read_text())
    chunk = manifest["stages"]["chunk"]["counts"]
    commits = manifest["stages"]["mine"]["counts"].get("commits", 0)
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),  # this process and its workers (user + system): steadier than wall here
        "mine_s": manifest["stages"]["mine"]["seconds"],
        "chunk_s": manifest["stages"]["chunk"]["seconds"],
        "parse_phase_s": chunk.get("parse_ms", 0) / 1000,
        "incremental": chunk.get("blobs_parsed_incrementally", 0),
        "by_hunks": chunk.get("blobs_reparsed_by_hunks", 0),
        "hunks_s": chunk.get("hunks_ms", 0) / 1000,
        "commits": commits,
        "commits_per_s": round(commits / wall, 1),
        "parsed_mb": round(chunk.get("bytes_parsed", 0) / 1e6, 1),
        "mb_per_s": round(chunk.get("bytes_parsed", 0) / 1e6 / wall, 1),
        "blobs": chunk.get("unique_blobs"),
        "unit_changes": chunk.get("unit_changes"),
        "skips": manifest["stages"]["chunk"]["skips"],
    }


def cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (the run's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


_HEAD_SOURCES: list[bytes] = []


def load_head(repo_path: str) -> float:
    """Read the .rs blobs at HEAD into ``_HEAD_SOURCES``; their size in MB."""
    repo = Repository(repo_path)
    listing = repo.run("ls-tree", "-r", "-z", "HEAD").split("\0")
    blobs = [e.split()[2] for e in listing if e.endswith(".rs") and e.split()[1] == "blob"]
    with BlobReader(repo.git_dir) as reader:
        _HEAD_SOURCES[:] = [d for d in (reader.read(b) for b in blobs) if d is not None]
    return sum(map(len, _HEAD_SOURCES)) / 1e6


def parse_seconds() -> float:
    """Seconds to parse every HEAD blob with tree-sitter alone, on this process's core."""
    from plugins.rust import RustLanguage

    parser, _ = RustLanguage()._ensure()
    t0 = time.perf_counter()
    for src in _HEAD_SOURCES:
        parser.parse(src)
    return time.perf_counter() - t0


def _chunk_batch(indices: list[int]) -> int:
    """Parse, extract and cut (materialising every piece) the HEAD blobs at ``indices``."""
    from plugins.chunkers import AstChunker, AstChunkerConfig
    from plugins.rust import RustLanguage

    lang, chunker, n = RustLanguage(), AstChunker(AstChunkerConfig()), 0
    for i in indices:
        for chunk in chunker.chunk(lang.parse(_HEAD_SOURCES[i]), lang, "src/lib.rs"):
            n += len(chunk.pieces)
    return n


def head_only(repo_path: str, workers: int, repeat: int = 5) -> dict:
    """HEAD-only chunking against parsing alone, in the same rounds. Chunking runs with the
    collector settings of a pipeline run (``core.collector.fewer_collections``, inherited
    by the forked workers), as the chunk stage does; the ratio is the median of each
    round's ratio."""
    from core.collector import fewer_collections
    from plugins.executors import LocalExecutor, LocalExecutorConfig

    total_mb = sum(map(len, _HEAD_SOURCES)) / 1e6 if _HEAD_SOURCES else load_head(repo_path)  # main read them
    # 32 batches per worker: handed out one at a time, the last ones end about together
    n = 32 * workers
    batches = [list(range(i, len(_HEAD_SOURCES), n)) for i in range(n)]
    parse_t, one_t, many_t = [], [], []
    pieces = 0
    with fewer_collections():
        for _ in range(repeat):
            parse_t.append(parse_seconds())
            # one worker is a forked process too, as the N workers are (and as the chunk
            # stage's are): chunking in this process would leave its heap grown by the
            # garbage the collector settings keep, which every later fork pays for
            t0 = time.perf_counter()
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
                pieces = sum(pool.map(_chunk_batch, batches))
            one_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert sum(LocalExecutor(LocalExecutorConfig(workers=workers)).map(_chunk_batch, batches)) == pieces
            many_t.append(time.perf_counter() - t0)
    p, one, many = (statistics.median(x) for x in (parse_t, one_t, many_t))
    return {"files": len(_HEAD_SOURCES), "mb": round(total_mb, 1), "parse_only_1_core_mb_s": round(total_mb / p, 1),
            "chunking_1_worker_mb_s": round(total_mb / one, 1),
            f"chunking_{workers}_workers_mb_s": round(total_mb / many, 1),
            "chunking_vs_parse_1_core": round(statistics.median(a / b for a, b in zip(parse_t, many_t)), 2),
            "pieces": pieces}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-head", action="store_true")
    ap.add_argument("--head-repeat", type=int, default=5, help="HEAD-only rounds (parse, 1 worker, N workers each)")
    ap.add_argument("--reference-mb-s", type=float, default=12.0,
                    help="parse speed (MB/s on one core) to scale full-history wall times to")
    args = ap.parse_args()
    head_mb = load_head(args.repo)
    runs = []
    before = parse_seconds()
    for i in range(args.repeat):
        tmp = Path(tempfile.mkdtemp(prefix="cf-bench-"))
        try:
            r = full_history(args.repo, args.workers, tmp / "run", tmp / "cache")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        after = parse_seconds()  # also the next run's "before"
        speed = head_mb / ((before + after) / 2)
        r["parse_mb_s"] = round(speed, 2)
        r["steady"] = max(before, after) / min(before, after) <= 1.15
        r["wall_at_reference_s"] = round(r["wall_s"] * speed / args.reference_mb_s, 2)
        before = after
        print(f"full history #{i + 1}: {json.dumps(r)}", flush=True)
        runs.append(r)
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if runs:
        print(f"full history median wall: {statistics.median(r['wall_s'] for r in runs):.2f} s, "
              f"CPU {statistics.median(r['cpu_s'] for r in runs):.2f} s; "
              f"peak RSS main {rss_self:.0f} MB, largest child {rss_children:.0f} MB")
        steady = [r["wall_at_reference_s"] for r in runs if r["steady"]]
        print(f"scaled to {args.reference_mb_s:g} MB/s parsing: median wall "
              + (f"{statistics.median(steady):.2f} s over {len(steady)} steady run(s)" if steady else "n/a (no steady run)"))
    if not args.skip_head:
        print(f"HEAD only: {json.dumps(head_only(args.repo, args.workers or os.cpu_count() or 1, args.head_repeat))}")
    git = subprocess.run(["git", "-C", args.repo, "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    print(f"repository: {args.repo} at {git}; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
