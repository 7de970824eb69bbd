"""Benchmark: context strategies over a repository's full history (mine + chunk).

    python bench/bench_context.py REPO [--repeat 3] [--cold-repeat 1] [--strategies none,same_file,imports,repomap]
                                       [--max-tokens 2048] [--workers N]

Each strategy runs the mine and chunk stages with a warm unit cache (every blob was
parsed by the cold runs, or by an untimed run with ``--cold-repeat 0``), in rotation,
``--repeat`` times; the figures are medians of wall seconds, the overhead against
``none`` measured in the same run, and the context figures from the manifest (recall,
units with references, empty share, items per unit). Cold runs (empty cache) of
``none`` and ``imports``, alternated ``--cold-repeat`` times, show the overhead against
the whole stage including parsing, in wall time and in CPU time of the run's processes
(main and workers: steadier than wall time on a shared machine, but blind to how well
the workers share the cores), from the medians and, as a range, from each round's pair.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench_mine_chunk import cpu_seconds
from hydra import compose, initialize_config_dir

from core.config import conf_dir, register_schema
from core.pipeline import Run


def run(repo: str, out: Path, cache: Path, strategy: str, max_tokens: int, workers: int | None
        ) -> tuple[float, dict, float]:
    register_schema()
    overrides = [f"repo={repo}", f"out_dir={out}", f"cache_dir={cache}", "stages=[mine,chunk]", "reuse=false"]
    if strategy != "none":
        overrides += [f"context={strategy}", f"context.max_tokens={max_tokens}"]
    if workers:
        overrides.append(f"executor.workers={workers}")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    t0, c0 = time.perf_counter(), cpu_seconds()
    Run(cfg).run()
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    manifest = json.loads((out / "MANIFEST.json").read_text())
    shutil.rmtree(out)
    return wall, manifest.get("context") or {}, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cold-repeat", type=int, default=1)
    ap.add_argument("--strategies", default="none,same_file,imports")
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    strategies = args.strategies.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="cf-bench-ctx-"))
    try:
        cold: dict[str, list[float]] = {"none": [], "imports": []}
        cold_cpu: dict[str, list[float]] = {"none": [], "imports": []}
        for _ in range(args.cold_repeat):  # alternated, so that both see the same spells of the machine
            for s in cold:
                shutil.rmtree(tmp / "cache", ignore_errors=True)
                wall, _, cpu = run(args.repo, tmp / "out", tmp / "cache", s, args.max_tokens, args.workers)
                cold[s].append(round(wall, 2))
                cold_cpu[s].append(round(cpu, 2))
        if args.cold_repeat:
            med = {s: statistics.median(w) for s, w in cold.items()}
            med_cpu = {s: statistics.median(c) for s, c in cold_cpu.items()}
            # each round's own overhead (its two runs were back to back): the spread of the figure
            rounds = [round(i / n - 1, 3) for i, n in zip(cold["imports"], cold["none"])]
            rounds_cpu = [round(i / n - 1, 3) for i, n in zip(cold_cpu["imports"], cold_cpu["none"])]
            print(json.dumps({"cold_wall_s_median": med, "cold_runs": cold,
                              "cold_overhead": round(med["imports"] / med["none"] - 1, 3),
                              "cold_overhead_range": [min(rounds), max(rounds)],
                              "cold_cpu_s_median": med_cpu, "cold_cpu_runs": cold_cpu,
                              "cold_cpu_overhead": round(med_cpu["imports"] / med_cpu["none"] - 1, 3),
                              "cold_cpu_overhead_range": [min(rounds_cpu), max(rounds_cpu)]}))
        else:  # --cold-repeat 0: one untimed run parses every blob (and summarises it for the index)
            warm = "imports" if any(s in ("imports", "repomap") for s in strategies) else "none"
            run(args.repo, tmp / "out", tmp / "cache", warm, args.max_tokens, args.workers)
        walls: dict[str, list[float]] = {s: [] for s in strategies}
        figures: dict[str, dict] = {}
        for _ in range(args.repeat):
            for s in strategies:
                wall, ctx, _ = run(args.repo, tmp / "out", tmp / "cache", s, args.max_tokens, args.workers)
                walls[s].append(wall)
                figures[s] = ctx
        base = statistics.median(walls["none"]) if "none" in walls and args.repeat else None
        for s in strategies if args.repeat else ():  # --repeat 0: the cold runs only
            med = statistics.median(walls[s])
            ctx = figures[s]
            print(json.dumps({
                "strategy": s, "warm_wall_s_median": round(med, 2), "runs": [round(w, 2) for w in walls[s]],
                "overhead_vs_none": round(med / base - 1, 3) if base else None,
                "recall": ctx.get("recall"), "units_with_refs": ctx.get("units_with_refs"),
                "refs": ctx.get("refs"), "empty_share": ctx.get("empty_share"),
                "items_per_unit": ctx.get("items_per_unit"), "chars_per_unit": ctx.get("chars_per_unit"),
            }))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
