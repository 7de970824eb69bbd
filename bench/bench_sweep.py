"""Benchmark: a sweep over build settings against one job of it (stage reuse, issue 5).

    python bench/bench_sweep.py REPO [--experiment ctx4000] [--max-commits 120]
        [--sweep builder.max_tokens=1024,1536,2048,3072] [--n-jobs 2] [--repeat 1]

Each round, with an empty cache each time:

1. one job: ``python -m core +experiment=E`` with the sweep's first value, with the
   default workers (one per core);
2. with ``--workers N``, the same job with ``executor.workers=N``, as the sweep runs it;
3. the sweep: ``python -m core -m +experiment=E SWEEP`` with Hydra's joblib launcher
   (``--n-jobs`` jobs at once), or one job after another with ``--n-jobs 1`` (Hydra's
   basic launcher); each job with ``--workers`` workers if given.

It prints each round's wall seconds and the sweep's ratio to each single job (the target:
a 4-job sweep over tokenizer or builder settings takes at most 1.5x one job's time,
because it mines and chunks once), then the medians. Per job of the sweep: its stage seconds and how many of
its commits the chunk stage computed rather than reused, read from the job's
MANIFEST.json; and the sweep summary's status of each job. A failed job fails the
benchmark.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(args: list[str], cache: Path, cwd: Path) -> float:
    env = {**os.environ, "COMMITFORGE_CACHE": str(cache)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "core", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"python -m core {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


def job_figures(job_dir: Path) -> dict:
    manifest = json.loads((job_dir / "MANIFEST.json").read_text())
    stages = manifest["stages"]
    chunk = stages.get("chunk", {}).get("counts", {})
    return {"job": job_dir.name, "stages_s": {name: s["seconds"] for name, s in stages.items()},
            "commits_computed": chunk.get("commits_computed"), "commits_reused": chunk.get("commits_reused"),
            "rows_encoded": stages.get("build", {}).get("counts", {}).get("rows_encoded")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo", type=Path)
    ap.add_argument("--experiment", default="ctx4000")
    ap.add_argument("--max-commits", type=int, default=120, help="source.max_commits (0: the whole history)")
    ap.add_argument("--sweep", default="builder.max_tokens=1024,1536,2048,3072",
                    help="the swept setting, KEY=V1,V2,...")
    ap.add_argument("--n-jobs", type=int, default=2, help="jobs at once (joblib launcher); 1: one after another")
    ap.add_argument("--workers", type=int, default=None,
                    help="executor.workers of each job of the sweep (default: one per core)")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    key, sep, values = args.sweep.partition("=")
    if not sep or not values or "," not in values:
        raise SystemExit(f"--sweep {args.sweep!r}: give a setting and two or more values, e.g. builder.max_tokens=1024,2048")
    if args.n_jobs < 1:
        raise SystemExit(f"--n-jobs {args.n_jobs}: give 1 or more")
    repo = args.repo.resolve()
    common = [f"repo={repo}", f"+experiment={args.experiment}", "progress=false"]
    if args.max_commits:
        common.append(f"source.max_commits={args.max_commits}")
    if args.workers is not None and args.workers < 1:
        raise SystemExit(f"--workers {args.workers}: give 1 or more")
    per_job = [] if args.workers is None else [f"executor.workers={args.workers}"]
    launcher = [] if args.n_jobs == 1 else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"]
    tmp = Path(tempfile.mkdtemp(prefix="cf-bench-sweep-"))
    singles, as_swept, sweeps = [], [], []
    try:
        for i in range(args.repeat):
            cache = tmp / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            first = f"{key}={values.split(',')[0]}"
            one = timed([*common, first, f"out_dir={tmp / f'one{i}'}"], cache, tmp)
            shutil.rmtree(cache, ignore_errors=True)
            if per_job:  # the same job as the sweep runs it
                as_swept.append(timed([*common, first, *per_job, f"out_dir={tmp / f'as_swept{i}'}"], cache, tmp))
                shutil.rmtree(cache, ignore_errors=True)
            sweep_dir = tmp / f"sweep{i}"
            many = timed(["-m", *common, args.sweep, *launcher, *per_job, f"hydra.sweep.dir={sweep_dir}"], cache, tmp)
            singles.append(one)
            sweeps.append(many)
            with open(sweep_dir / "summary.csv", newline="") as fh:
                statuses = [row.get("status") for row in csv.DictReader(fh)]
            jobs = [job_figures(d) for d in sorted(sweep_dir.iterdir(), key=lambda p: p.name)
                    if d.is_dir() and d.name.isdigit()]
            print(json.dumps({"round": i, "one_job_s": round(one, 2), "sweep_s": round(many, 2),
                              "ratio": round(many / one, 3),
                              **({"one_job_as_swept_s": round(as_swept[-1], 2),
                                  "ratio_as_swept": round(many / as_swept[-1], 3)} if as_swept else {}),
                              "jobs": len(jobs), "statuses": statuses, "per_job": jobs}), flush=True)
            if any(s != "ok" for s in statuses):
                raise SystemExit(f"a job of the sweep did not finish: statuses {statuses}")
        one_m, many_m = statistics.median(singles), statistics.median(sweeps)
        extra = {}
        if as_swept:
            swept_m = statistics.median(as_swept)
            extra = {"one_job_as_swept_s_median": round(swept_m, 2), "ratio_as_swept": round(many_m / swept_m, 3)}
        print(json.dumps({"one_job_s_median": round(one_m, 2), "sweep_s_median": round(many_m, 2),
                          "ratio": round(many_m / one_m, 3), **extra, "n_jobs": args.n_jobs,
                          "workers_per_job": args.workers, "sweep": args.sweep}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
