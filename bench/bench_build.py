"""Benchmark: the ``build`` stage alone on an already-chunked run directory.

    python bench/bench_build.py RUN_DIR [--cache-dir DIR] [--repeat 3] [--keep] [-- OVERRIDE ...]

RUN_DIR holds ``chunks/`` (and ``MANIFEST.json``) of a finished chunk stage; it is
only read. Each repeat runs ``core.build.build_stage`` in a fresh Python process on a
scratch run directory (``chunks/`` linked in), so peak RSS is that run's own. The
config is composed like ``python -m core`` with ``repo`` taken from RUN_DIR's manifest,
``+experiment=ctx4000`` unless overrides are given (Hydra overrides after ``--``), and
``--cache-dir`` as ``cache_dir`` (the cached tokenizer lives there; the default cache
otherwise). Prints, per run and as medians over ``--repeat``: wall seconds of
``build_stage``, peak RSS of the process (``getrusage(RUSAGE_SELF).ru_maxrss``),
examples/s, and a digest of the files written (equal digests: byte-identical outputs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
from hydra import compose, initialize_config_dir
from core.build import build_stage
from core.config import conf_dir, register_schema
from core.files import sha256_file
from core.pipeline import Run
from core.stats import Counter

out_dir, overrides = sys.argv[1], json.loads(sys.argv[2])
register_schema()
with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
    cfg = compose("config", overrides=overrides + [f"out_dir={out_dir}", "progress=false"])
run = Run(cfg)
t0 = time.perf_counter()
outputs, summary = build_stage(run, Counter())
wall = time.perf_counter() - t0
digest = {rel: sha256_file(run.run_dir / rel) for rel in sorted(outputs)}
print("RESULT", json.dumps({"wall_s": wall, "examples": sum(summary["examples"].values()),
                            "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                            "outputs": digest}))
"""


def one_run(run_dir: Path, overrides: list[str], scratch: Path) -> dict:
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    os.symlink(run_dir.resolve() / "chunks", scratch / "chunks")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(scratch), json.dumps(overrides)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    result = json.loads(proc.stdout.rsplit("RESULT", 1)[1])
    outputs = result.pop("outputs")
    result["outputs_sha256"] = hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()[:16]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the scratch run directory and print its path")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (after --); default +experiment=ctx4000")
    args = ap.parse_args()
    if not (args.run_dir / "chunks").is_dir():
        raise SystemExit(f"{args.run_dir}/chunks/ not found: run the chunk stage first (with this version)")
    overrides = list(args.overrides) or ["+experiment=ctx4000"]
    manifest = args.run_dir / "MANIFEST.json"
    if not any(o.startswith("repo=") for o in overrides) and manifest.is_file():
        repo = json.loads(manifest.read_text())["config"].get("repo")
        if repo:
            overrides.insert(0, f"repo={repo}")
    if args.cache_dir is not None:
        overrides.append(f"cache_dir={args.cache_dir}")
    scratch = Path(tempfile.mkdtemp(prefix="cf-bench-build-"))
    runs = []
    try:
        for i in range(args.repeat):
            r = one_run(args.run_dir, overrides, scratch / "run")
            r["examples_per_s"] = r["examples"] / r["wall_s"]
            runs.append(r)
            print(json.dumps({"run": i, "wall_s": round(r["wall_s"], 2), "peak_rss_mb": round(r["peak_rss_kb"] / 1024),
                              "examples": r["examples"], "examples_per_s": round(r["examples_per_s"]),
                              "outputs_sha256": r["outputs_sha256"]}), flush=True)
    finally:
        if args.keep:
            print(f"scratch run directory: {scratch / 'run'}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"median": {
        "wall_s": round(statistics.median(r["wall_s"] for r in runs), 2),
        "peak_rss_mb": round(statistics.median(r["peak_rss_kb"] for r in runs) / 1024),
        "examples_per_s": round(statistics.median(r["examples_per_s"] for r in runs)),
        "repeats": len(runs),
        "deterministic": len({r["outputs_sha256"] for r in runs}) == 1,
    }}))


if __name__ == "__main__":
    main()
