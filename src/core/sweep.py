"""Sweep summaries: one row per job of a Hydra multirun (``python -m core -m ...``).

:func:`summarize_sweep` scans a sweep directory (``hydra.sweep.dir``: one sub-directory
per job, each with ``.hydra/overrides.yaml``) and writes

* ``summary.csv`` and ``summary.md``: one row per job — job number, status (ok/failed)
  and why, overrides, examples per split, tokens, trained-token share, context figures,
  truncations, dedup and leakage removals, skips, wall time, and a relative link to the
  job's ``report.html``;
* ``summary.html``: the same table and inline SVG bar charts comparing jobs (no scripts,
  nothing fetched).

A job is **failed** when its ``job_status.json`` says so, or when its run directory has no
``MANIFEST.json`` with an entry for every stage its config lists in ``stages`` (the
manifest is rewritten after each stage, so a job that died mid-run has a partial one).
A job's run directory is its job directory, or the ``out_dir`` its config names.
Jobs whose run has a manifest but no ``report.html`` get one written (``write_reports``).

:class:`SweepSummary` is the Hydra callback (configure it under ``hydra.callbacks``):
``on_job_start``/``on_job_end`` record each job's status in ``job_status.json`` in its
job directory (Hydra catches the task's exceptions, so a job that raised is known even
if it wrote no manifest) and refresh the summary; ``on_multirun_end`` writes the final
one. Refreshing after each job matters: Hydra's basic sweeper raises once a batch with a
failed job returns, and then ``on_multirun_end`` is never called.

``python -m core.sweep SWEEP_DIR`` (re)writes the summary of a sweep by hand.
"""

from __future__ import annotations

import csv
import io
import json
import os
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from core.files import atomic_write
from core.report import (
    BAR,
    BAR2,
    MUTED,
    REPORT_FILE,
    SPLIT_COLORS,
    Raw,
    RunInfo,
    bar_chart,
    esc,
    fmt,
    load_json,
    no_data,
    page,
    summary_row,
    table,
    write_report,
)

STATUS_FILE = "job_status.json"
SUMMARY_FILES = ("summary.csv", "summary.md", "summary.html")

# (column, heading, display kind: "" number/text, "share", "s" seconds)
COLUMNS: list[tuple[str, str, str]] = [
    ("job", "job", ""),
    ("status", "status", ""),
    ("overrides", "overrides", ""),
    ("commits", "commits", ""),
    ("unit_changes", "unit changes", ""),
    ("examples_train", "train", ""),
    ("examples_val", "val", ""),
    ("examples_test", "test", ""),
    ("tokens", "tokens", ""),
    ("trained_token_share", "trained share", "share"),
    ("context_items_per_unit", "context items / unit", ""),
    ("context_recall", "context recall", "share"),
    ("truncated", "truncated", ""),
    ("dedup_removed", "dedup removed", ""),
    ("leakage_removed", "leakage removed", ""),
    ("skips", "skips", ""),
    ("seconds", "wall time", "s"),
    ("report", "report", ""),
    ("reason", "reason", ""),
]
_TEXT_COLUMNS = ("status", "overrides", "report", "reason")
_MAX_DEPTH = 3  # job directories are at most this deep under the sweep directory


# -- finding and judging jobs ----------------------------------------------------------------


def find_jobs(sweep_dir: Path) -> list[Path]:
    """Job directories (holding ``.hydra/overrides.yaml``) under ``sweep_dir``, by job number."""
    sweep_dir = Path(sweep_dir)
    jobs = []
    for root, dirs, _files in os.walk(sweep_dir):
        here = Path(root)
        depth = len(here.relative_to(sweep_dir).parts)
        if here != sweep_dir and (here / ".hydra" / "overrides.yaml").is_file():
            jobs.append(here)
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < _MAX_DEPTH else []
    return sorted(jobs, key=lambda p: _job_sort_key(p, sweep_dir))


def _job_sort_key(job_dir: Path, sweep_dir: Path) -> tuple[int, str]:
    num = _job_number(job_dir)
    return (num if num is not None else 1 << 60, job_dir.relative_to(sweep_dir).as_posix())


def _load_yaml(path: Path) -> Any:
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 - a summary shows what it can read
        return None


def _job_number(job_dir: Path) -> int | None:
    if job_dir.name.isdigit():
        return int(job_dir.name)
    status = load_json(job_dir / STATUS_FILE) or {}
    if isinstance(status.get("job"), int):
        return status["job"]
    hydra_cfg = _load_yaml(job_dir / ".hydra" / "hydra.yaml")
    try:
        return int(hydra_cfg["hydra"]["job"]["num"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None


def job_overrides(job_dir: Path) -> list[str]:
    data = _load_yaml(Path(job_dir) / ".hydra" / "overrides.yaml")
    return [str(o) for o in data] if isinstance(data, list) else []


def _run_dir(job_dir: Path) -> Path:
    """The job's run directory: the job directory, or an absolute ``out_dir`` its config names."""
    if (job_dir / "MANIFEST.json").is_file():
        return job_dir
    cfg = _load_yaml(job_dir / ".hydra" / "config.yaml")
    out = cfg.get("out_dir") if isinstance(cfg, dict) else None
    if isinstance(out, str) and "${" not in out and Path(out).expanduser().is_absolute():
        return Path(out).expanduser()
    return job_dir


def _expected_stages(job_dir: Path, info: RunInfo) -> list[str]:
    if isinstance(info.config().get("stages"), list):
        return info.expected_stages()
    cfg = _load_yaml(job_dir / ".hydra" / "config.yaml")
    stages = cfg.get("stages") if isinstance(cfg, dict) else None
    return [str(s) for s in stages] if isinstance(stages, list) else info.expected_stages()


def job_status(job_dir: Path) -> tuple[str, str, Path]:
    """("ok" | "failed", the reason it failed or "", the job's run directory)."""
    job_dir = Path(job_dir)
    run_dir = _run_dir(job_dir)
    recorded = load_json(job_dir / STATUS_FILE) or {}
    if recorded.get("status") == "failed":
        err = " ".join(str(recorded.get("error") or "").split())
        kind = recorded.get("error_type")
        reason = f"{kind}: {err}" if kind and err else (err or str(kind or "the job failed"))
        return "failed", reason[:300], run_dir
    info = RunInfo.load(run_dir)
    if not info.manifest:
        reason = "no MANIFEST.json"
        if recorded.get("status") == "running":
            reason += " (the job did not finish)"
        return "failed", reason, run_dir
    missing = [s for s in _expected_stages(job_dir, info) if s not in info.stages]
    if missing:
        return "failed", f"stage{'s' if len(missing) > 1 else ''} not finished: {', '.join(missing)}", run_dir
    return "ok", "", run_dir


def job_row(job_dir: Path, sweep_dir: Path, *, write_reports: bool = True, live: bool = False) -> dict[str, Any]:
    """One summary row: the job's number, status, overrides and :func:`core.report.summary_row` figures.
    ``live``: the sweep is still running, so a job recorded as running is shown as such (no
    figures yet, no report written for it); afterwards such a job did not finish."""
    job_dir, sweep_dir = Path(job_dir), Path(sweep_dir)
    status, reason, run_dir = job_status(job_dir)
    if live and (load_json(job_dir / STATUS_FILE) or {}).get("status") == "running":
        status, reason = "running", ""
    num = _job_number(job_dir)
    row: dict[str, Any] = {"job": num if num is not None else job_dir.relative_to(sweep_dir).as_posix(),
                           "status": status, "reason": reason, "overrides": " ".join(job_overrides(job_dir)),
                           "job_dir": job_dir.relative_to(sweep_dir).as_posix()}
    has_manifest = status != "running" and (run_dir / "MANIFEST.json").is_file()
    if has_manifest:
        row.update({k: v for k, v in summary_row(run_dir).items() if k not in row})
    report = run_dir / REPORT_FILE
    if has_manifest and write_reports and not report.is_file():
        try:
            write_report(run_dir)
        except Exception as exc:  # noqa: BLE001 - one unreadable run must not stop the summary
            row["reason"] = (row["reason"] + "; " if row["reason"] else "") + f"report not written: {type(exc).__name__}"
    row["report"] = Path(os.path.relpath(report, sweep_dir)).as_posix() if report.is_file() else None
    return row


# -- writing the summary ---------------------------------------------------------------------


def _csv_value(v: Any) -> str:
    return "" if v is None else str(v)


def render_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c for c, _, _ in COLUMNS])
    for r in rows:
        w.writerow([_csv_value(r.get(c)) for c, _, _ in COLUMNS])
    return buf.getvalue()


def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("\\", "\\\\").replace("|", "\\|")


def _md_code(text: str) -> str:
    if not text:
        return ""
    text = " ".join(text.split()).replace("|", "\\|")
    ticks = "``" if "`" in text else "`"
    return f"{ticks} {text} {ticks}" if ticks == "``" else f"`{text}`"


def _counts_line(rows: list[dict[str, Any]]) -> str:
    ok = sum(1 for r in rows if r["status"] == "ok")
    running = sum(1 for r in rows if r["status"] == "running")
    line = f"{len(rows)} job{'' if len(rows) == 1 else 's'}: {ok} ok, {len(rows) - ok - running} failed"
    return line + (f", {running} running." if running else ".")


def render_md(rows: list[dict[str, Any]], title: str) -> str:
    lines = [f"# {_md_cell(title)}", ""]
    lines += [_counts_line(rows), ""]
    lines.append("| " + " | ".join(h for _, h, _ in COLUMNS) + " |")
    lines.append("|" + "|".join("---" if c in _TEXT_COLUMNS else "---:" for c, _, _ in COLUMNS) + "|")
    for r in rows:
        cells = []
        for c, _, kind in COLUMNS:
            v = r.get(c)
            if c == "overrides":
                cells.append(_md_code(v or ""))
            elif c == "report":
                cells.append(f"[report](<{v}>)" if v else "–")
            elif c == "status":
                cells.append("**failed**" if v == "failed" else v)
            else:
                cells.append(_md_cell(fmt(v, kind) if v is not None or c != "reason" else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _varying_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """Each job's overrides less those every job shares (what tells the jobs apart)."""
    split = [str(r.get("overrides") or "").split() for r in rows]
    common = set.intersection(*(set(s) for s in split)) if split else set()
    return [" ".join(o for o in s if o not in common) for s in split]


def _charts(rows: list[dict[str, Any]]) -> str:
    varying = _varying_overrides(rows)
    labels = [f"#{r['job']}" + (" ✗" if r["status"] == "failed" else " …" if r["status"] == "running" else "")
              + (f" {v}" if v else "")
              for r, v in zip(rows, varying)]
    tips = [f"job {r['job']} ({r['status']}): {r.get('overrides') or 'no overrides'}" for r in rows]

    def vals(key: str) -> list[float | None]:
        return [float(r[key]) if isinstance(r.get(key), (int, float)) else None for r in rows]

    figs = []
    if any(r.get("examples") is not None for r in rows):
        figs.append(bar_chart("Examples per split", labels, [(s, vals(f"examples_{s}"), SPLIT_COLORS[s])
                                                               for s in ("train", "val", "test")],
                              tooltips=tips, width=520))
    elif any(r.get("unit_changes") is not None for r in rows):
        figs.append(bar_chart("Unit changes", labels, [("", vals("unit_changes"), BAR)], tooltips=tips, width=520))
    for key, title, color, share in (("tokens", "Tokens", BAR, False),
                                     ("trained_token_share", "Trained-token share", BAR2, True),
                                     ("context_items_per_unit", "Context items per unit change", BAR, False),
                                     ("context_recall", "Context recall", BAR2, True),
                                     ("seconds", "Wall time (s)", MUTED, False)):
        v = vals(key)
        if any(x is not None for x in v):
            figs.append(bar_chart(title, labels, [("", v, color)], tooltips=tips, width=520, share=share))
        elif key == "context_recall":
            figs.append(no_data(title, "no job has context recall figures"))
    return '<div class="charts">' + "".join(figs) + "</div>"


def render_html(rows: list[dict[str, Any]], title: str) -> str:
    cells = []
    for r in rows:
        line: list[Any] = []
        for c, _, kind in COLUMNS:
            v = r.get(c)
            if c == "report":
                line.append(Raw(f'<a href="{esc(v)}">report</a>') if v else "–")
            elif c == "status":
                line.append(Raw(f'<span class="{"bad" if v == "failed" else "ok"}">{esc(v)}</span>'))
            elif c == "overrides":
                line.append(Raw(f'<span class="mono">{esc(v or "")}</span>'))
            elif c == "reason":
                line.append(v or "")
            else:
                line.append(fmt(v, kind))
        cells.append(line)
    numeric = [i for i, (c, _, _) in enumerate(COLUMNS) if c not in _TEXT_COLUMNS]
    body = [f"<h1>{esc(title)}</h1>",
            f"<p>{esc(_counts_line(rows))}</p>",
            table([h for _, h, _ in COLUMNS], cells, numeric=numeric)]
    if rows:
        body.append("<h2>Comparison</h2>" + _charts(rows))
    return page(title, "\n".join(body))


def summarize_sweep(sweep_dir: Path, *, write_reports: bool = True, live: bool = False) -> Path:
    """Write summary.csv, summary.md and summary.html into ``sweep_dir``; return the CSV's
    path. ``live``: while the sweep runs (see :func:`job_row`)."""
    sweep_dir = Path(sweep_dir)
    rows = [job_row(j, sweep_dir, write_reports=write_reports, live=live) for j in find_jobs(sweep_dir)]
    title = f"commitforge sweep — {sweep_dir.name}"
    texts = {"summary.csv": render_csv(rows), "summary.md": render_md(rows, title),
             "summary.html": render_html(rows, title)}
    for name, text in texts.items():
        with atomic_write(sweep_dir / name) as fh:
            fh.write(text.encode("utf-8", "backslashreplace"))
    return sweep_dir / "summary.csv"


# -- the Hydra callback ----------------------------------------------------------------------


def _is_multirun(config: DictConfig) -> bool:
    return str(OmegaConf.select(config, "hydra.mode", default="")).upper().endswith("MULTIRUN")


def in_multirun() -> bool:
    """Whether the current Hydra job is part of a multirun (False outside Hydra).

    The CLI should let a job's exception propagate in a multirun (Hydra records it as a
    failed job and runs the other jobs) instead of exiting the process."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _job_dir(config: DictConfig) -> Path | None:
    out = OmegaConf.select(config, "hydra.runtime.output_dir", default=None)
    return Path(str(out)) if out else None


def _sweep_dir_of_job(config: DictConfig, job_dir: Path) -> Path:
    """The sweep directory a job directory is in: the job directory less ``hydra.sweep.subdir``."""
    subdir = OmegaConf.select(config, "hydra.sweep.subdir", default=None)
    parts = Path(str(subdir)).parts if subdir is not None else ()
    if parts and job_dir.parts[-len(parts):] == parts:
        return job_dir.parents[len(parts) - 1]
    return _sweep_dir(config)


def _sweep_dir(config: DictConfig) -> Path:
    d = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
    if not d.is_absolute():
        cwd = OmegaConf.select(config, "hydra.runtime.cwd", default=None)
        d = Path(str(cwd) if cwd else os.getcwd()) / d
    return d


def record_status(job_dir: Path, status: str, *, job: int | None = None, error: BaseException | None = None) -> Path:
    """Write ``job_dir/job_status.json``: {"status", "job", "error_type", "error", "traceback"}."""
    data: dict[str, Any] = {"status": status, "job": job, "error_type": None, "error": None, "traceback": None}
    if error is not None:
        data["error_type"] = type(error).__name__
        data["error"] = str(error)
        data["traceback"] = "".join(traceback.format_exception(error))[-4000:]
    path = Path(job_dir) / STATUS_FILE
    with atomic_write(path) as fh:
        fh.write(json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n")
    return path


class SweepSummary(Callback):
    """Hydra callback: job status files and a summary of a multirun (see the module docstring).

    ``write_reports``: write a missing report.html for each finished job when summarising.
    ``every_job``: refresh the summary after each job, not only when the multirun ends.
    """

    def __init__(self, write_reports: bool = True, every_job: bool = True) -> None:
        self.write_reports = write_reports
        self.every_job = every_job
        self._sweep_dirs: list[Path] = []

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        job_dir = _job_dir(config)
        if _is_multirun(config) and job_dir is not None:
            record_status(job_dir, "running", job=OmegaConf.select(config, "hydra.job.num", default=None))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        job_dir = _job_dir(config)
        if not _is_multirun(config) or job_dir is None:
            return
        status = getattr(getattr(job_return, "status", None), "name", "UNKNOWN").lower()
        error = getattr(job_return, "_return_value", None) if status == "failed" else None
        record_status(job_dir, status, job=OmegaConf.select(config, "hydra.job.num", default=None),
                      error=error if isinstance(error, BaseException) else None)
        sweep_dir = _sweep_dir_of_job(config, job_dir)
        if sweep_dir not in self._sweep_dirs:
            self._sweep_dirs.append(sweep_dir)
        if self.every_job:  # the other jobs may still run: not a report of a half-done run
            summarize_sweep(sweep_dir, write_reports=self.write_reports, live=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for sweep_dir in self._sweep_dirs or [_sweep_dir(config)]:
            if sweep_dir.is_dir():
                summarize_sweep(sweep_dir, write_reports=self.write_reports)


def main(argv: list[str] | None = None) -> int:
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m core.sweep SWEEP_DIR", file=sys.stderr)
        return 2
    print(summarize_sweep(Path(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
