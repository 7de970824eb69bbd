"""Benchmark: following a repository's history with the symbol index of a context strategy.

    python bench/bench_index.py REPO [--experiment ctx4000] [--cache DIR] [--repeat 3]

Each worker of the chunk stage moves its index from commit to commit (files replaced,
packages and modules remapped, cached lookups invalidated); this times that alone,
without resolving any unit's references. With no ``--cache``, a temporary cache is
filled first by one mine + chunk run. Prints the median over repeats and the number of
``module_of`` calls (files whose module was recomputed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from core.config import conf_dir, register_schema
from core.language import file_extension
from core.pipeline import Run
from core.snapshot import plan_trees, tree_steps
from core.stats import Counter
from plugins import rust_symbols
from plugins.sources import GitSource, GitSourceConfig


def config(repo: str, experiment: str, cache: Path, out: Path, *extra: str):
    register_schema()
    overrides = [f"repo={repo}", f"out_dir={out}", f"cache_dir={cache}", f"+experiment={experiment}", "progress=false",
                 *extra]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def replay(run: Run) -> tuple[float, int, int]:
    """Seconds to follow every commit's tree, module_of calls, commits."""
    job = run.chunk_job()
    exts = run.extensions()
    projects = {name for lang in run.languages.values() for name in getattr(lang, "project_files", ())}
    keep = lambda p: file_extension(p) in exts or p.rsplit("/", 1)[-1] in projects  # noqa: E731
    commits = list(GitSource(GitSourceConfig()).commits(run.repo, exts, Counter()))
    steps = next(tree_steps(plan_trees(run.repo, commits, keep, run.context.snapshot), [len(commits)]))
    calls = [0]
    real = rust_symbols.RustIndex.module_of

    def counted(self, path):
        calls[0] += 1
        return real(self, path)

    rust_symbols.RustIndex.module_of = counted
    try:
        snapshot = job._snapshot()
        t0 = time.perf_counter()
        snapshot.advance(steps.start)
        for lang in run.languages:
            snapshot.index(lang)
        for delta in steps.deltas:
            snapshot.apply(delta)
        seconds = time.perf_counter() - t0
    finally:
        rust_symbols.RustIndex.module_of = real
    return seconds, calls[0], len(commits)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("--experiment", default="ctx4000")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # one replay, in this process
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.one:
            seconds, calls, commits = replay(Run(config(args.repo, args.experiment, args.cache, Path(tmp) / "r")))
            print(json.dumps({"seconds": seconds, "module_of_calls": calls, "commits": commits}))
            return
        cache = args.cache or Path(tmp) / "cache"
        if args.cache is None:
            t0 = time.perf_counter()
            Run(config(args.repo, args.experiment, cache, Path(tmp) / "fill", "stages=[mine,chunk]")).run()
            print(f"cache filled by mine + chunk in {time.perf_counter() - t0:.1f} s")
        times = []
        for i in range(args.repeat):
            # each replay in a fresh process: module-level memos (manifests, use trees) start empty
            out = subprocess.run([sys.executable, __file__, args.repo, "--experiment", args.experiment,
                                  "--cache", str(cache), "--one"], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            times.append(result["seconds"])
            print(f"replay #{i + 1}: {result['seconds']:.2f} s over {result['commits']} commits, "
                  f"module_of calls {result['module_of_calls']}")
        print(f"median {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
