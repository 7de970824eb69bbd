"""Benchmark: the whole pipeline (``+experiment=ctx4000``) over a repository's full history,
and bringing an already-processed repository up to date after one new commit.

    python bench/bench_pipeline.py REPO [--experiment ctx4000] [--repeat 1] [--against CHECKOUT] [--update-repeat 1] [--compiled]

1. Cold runs (empty cache) of the whole pipeline: wall seconds per stage and peak RSS
   of the run's processes (main process and workers, from ``getrusage``). With
   ``--against``, each round also runs another checkout of commitforge (for example
   ``git worktree add /tmp/before REV``; its ``src`` goes first on ``PYTHONPATH``), each
   code first in turn: the medians of both and their ratio, measured in the same rounds,
   compare the code where a shared machine's speed drifts from one hour to the next.
2. Update: a clone of REPO at ``HEAD~1`` is processed, then advanced to ``HEAD`` and
   processed again with the same cache, both for the whole pipeline and for
   ``stages=[mine,chunk]``: wall seconds of the second run, and how much of its chunk
   and build stages came from the caches. ``--update-repeat N`` times the update N
   times, each from a copy of the cache as the first run left it, and prints the median;
   with ``--against``, each update of this code is followed by one of the other's (from
   its own first run) and the ratio of their medians is printed.
   Then ``stages=[mine]`` alone on that clone: what a run costs besides its stages
   (starting Python, composing the config, exiting).

Each run is a separate ``python -m core`` process, so peak RSS is per run.

Python caches the bytecode of the modules it compiles, unless ``PYTHONDONTWRITEBYTECODE``
is set: then every run compiles commitforge's modules again (0.13 s of each run on this
machine, whose environment sets it). ``--compiled`` compiles them first, as installing
a package does (``python -m compileall`` on the ``src`` directories, the ``--against``
checkout's too), so that the runs read the bytecode as they do by default.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(repo: Path, out: Path, cache: Path, *overrides: str, src: Path | None = None) -> dict:
    env = {**os.environ, "COMMITFORGE_CACHE": str(cache)}
    if src is not None:  # another checkout's code (and its conf/) instead of the installed one
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])
    # a fresh wrapper process reports the peak RSS of this run's processes only
    wrapper = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
               "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
               "sys.exit(rc)")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "core", f"repo={repo}",
                           f"out_dir={out}", "progress=false", *overrides], env=env, capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    peak_kb = int(proc.stderr.rsplit("PEAK_KB", 1)[1].split()[0])
    manifest = json.loads((out / "MANIFEST.json").read_text())
    stages = {name: s["seconds"] for name, s in manifest["stages"].items()}
    return {"wall_s": round(wall, 2), "stages_s": stages,
            "peak_rss_mb": round(peak_kb / 1024),
            "commits": manifest["stages"]["mine"]["counts"].get("commits"),
            "unit_changes": sum(o.get("rows", 0) for o in manifest["stages"].get("chunk", {}).get("outputs", {}).values()),
            "examples": sum(v for k, v in manifest["stages"].get("build", {}).get("counts", {}).items()
                            if k.startswith("examples_")),
            "context_recall": (manifest.get("context") or {}).get("recall"),
            # how much of the chunk stage came from the stage cache (commits, bytes and shards of a
            # kept output linked or copied)
            "chunk_reuse": {k: v for k, v in manifest["stages"].get("chunk", {}).get("counts", {}).items()
                            if k in ("commits_reused", "commits_computed", "chunk_bytes_linked", "chunk_bytes_copied",
                                     "chunk_shards_linked", "chunk_shards")},
            # and how much of the build stage came from the build cache (examples, dedup features)
            "build_reuse": {k: v for k, v in manifest["stages"].get("build", {}).get("counts", {}).items()
                            if k in ("rows_reused", "rows_encoded", "dedup_rows_computed")},
            # what the chunk stage waited for its last shard's copy and writing, and the build's writing of
            # data/ (copies of kept lines included): an update's share that follows the disk
            "writes_ms": {"chunk_output_wait": manifest["stages"].get("chunk", {}).get("counts", {}).get("output_wait_ms"),
                          "build_write": manifest["stages"].get("build", {}).get("counts", {}).get("write_ms")}}


def copy_cache(src: Path, dst: Path) -> None:
    """A copy of a cache directory as a run left it: files written once and replaced whole
    (kept outputs, blocks) as hard links, the SQLite databases (changed in place) copied."""
    def link_or_copy(a: str, b: str) -> None:
        if ".sqlite" in Path(a).name:
            shutil.copy2(a, b)
        else:
            os.link(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo", type=Path)
    ap.add_argument("--experiment", default="ctx4000")
    ap.add_argument("--repeat", type=int, default=1, help="cold runs (0: only the update)")
    ap.add_argument("--against", type=Path, default=None,
                    help="another commitforge checkout whose cold runs alternate with these")
    ap.add_argument("--update-repeat", type=int, default=1, help="updates timed, each from the same cache")
    ap.add_argument("--compiled", action="store_true",
                    help="compile commitforge's modules to bytecode first (see the module's docstring)")
    args = ap.parse_args()
    against = None
    if args.against is not None:
        against = args.against.resolve() / "src"
        if not (against / "core" / "__init__.py").is_file():
            raise SystemExit(f"--against {args.against}: no src/core in it; give a commitforge checkout")
    if args.compiled:
        import core

        for src in filter(None, [Path(core.__file__).resolve().parent.parent, against]):
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True, stdout=subprocess.DEVNULL)
    print(json.dumps({"bytecode": "compiled first" if args.compiled else
                      "not cached (PYTHONDONTWRITEBYTECODE)" if os.environ.get("PYTHONDONTWRITEBYTECODE") else
                      "cached by Python"}), flush=True)
    exp = f"+experiment={args.experiment}"
    tmp = Path(tempfile.mkdtemp(prefix="cf-bench-pipe-"))
    try:
        cold, other = [], []
        for i in range(args.repeat):
            # each code first in turn: in the same rounds, the run that went first was about 5%
            # slower whichever code it was (rusty-kaspa, three rounds each way)
            order = [("cold", None), *([("cold_against", against)] if against is not None else [])]
            for label, src in order if i % 2 == 0 else order[::-1]:
                shutil.rmtree(tmp / "cache", ignore_errors=True)
                result = run(args.repo, tmp / f"{label}{i}", tmp / "cache", exp, src=src)
                # each round's output goes (its files would fill the page cache round by round)
                shutil.rmtree(tmp / f"{label}{i}", ignore_errors=True)
                (cold if src is None else other).append(result)
                print(json.dumps({label: result}), flush=True)
        if cold:  # --repeat 0: the update only
            median = statistics.median(c["wall_s"] for c in cold)
            print(json.dumps({"cold_wall_s_median": median}), flush=True)
            if other:
                theirs = statistics.median(c["wall_s"] for c in other)
                # each stage's medians, this checkout's then the other's
                stages = {name: [statistics.median(c["stages_s"].get(name, 0.0) for c in runs) for runs in (cold, other)]
                          for name in ("mine", "chunk", "build")}
                print(json.dumps({"against_wall_s_median": theirs, "ratio": round(median / theirs, 3),
                                  "stage_s_medians": stages}), flush=True)

        # update after one new commit: a clone one commit behind, processed, then advanced
        clone = tmp / "clone"
        subprocess.run(["git", "clone", "-q", "--no-local", str(args.repo), str(clone)], check=True)
        head = git(clone, "rev-parse", "HEAD")
        git(clone, "reset", "-q", "--hard", "HEAD~1")
        for label, overrides in (("mine+chunk", ["stages=[mine,chunk]"]), ("pipeline", [])):
            # each checkout's own cache as its run at HEAD~1 left it (their code versions differ)
            codes = {"this": None, **({"against": against} if against is not None and label == "pipeline" else {})}
            firsts = {}
            for code, src in codes.items():
                firsts[code] = tmp / f"cache-{label}-{code}-before"
                git(clone, "reset", "-q", "--hard", f"{head}~1")
                run(clone, tmp / f"before-{label}-{code}", firsts[code], exp, *overrides, src=src)
            git(clone, "reset", "-q", "--hard", head)
            walls: dict[str, list[float]] = {code: [] for code in codes}
            for i in range(max(1, args.update_repeat)):
                # alternated, and in turn first (a shared machine's speed drifts, and the first
                # update after the other's finds the page cache as that one left it)
                order = list(codes.items())
                for code, src in order if i % 2 == 0 else order[::-1]:
                    cache = tmp / f"cache-{label}"
                    shutil.rmtree(cache, ignore_errors=True)
                    copy_cache(firsts[code], cache)
                    os.sync()  # the run before's writes reach the disk first, as they have long before a real update
                    after = run(clone, tmp / f"after-{label}-{code}-{i}", cache, exp, *overrides, src=src)
                    shutil.rmtree(tmp / f"after-{label}-{code}-{i}", ignore_errors=True)
                    walls[code].append(after["wall_s"])
                    print(json.dumps({"update_after_one_commit": label, **({"code": code} if src else {}), **after}),
                          flush=True)
            if len(walls["this"]) > 1 or len(codes) > 1:
                medians = {code: statistics.median(w) for code, w in walls.items()}
                print(json.dumps({"update_wall_s_median": label, **medians, "walls": walls,
                                  **({"ratio": round(medians["this"] / medians["against"], 3)} if len(codes) > 1 else {})}),
                      flush=True)
        # what any run of this command costs besides its stages' work (start, config, exit):
        # the mine stage alone, on the same clone
        shutil.rmtree(tmp / "cache-pipeline", ignore_errors=True)
        copy_cache(tmp / "cache-pipeline-this-before", tmp / "cache-pipeline")
        floor = run(clone, tmp / "floor", tmp / "cache-pipeline", exp, "stages=[mine]")
        print(json.dumps({"mine_only": {"wall_s": floor["wall_s"], "stages_s": floor["stages_s"]}}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
