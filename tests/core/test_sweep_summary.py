"""Sweep summaries: rows per job, failed jobs, links, the Hydra callback, a real multirun."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from core.pipeline import Run
from core.report import REPORT_FILE
from core.sweep import STATUS_FILE, SweepSummary, find_jobs, job_status, summarize_sweep

from ..conftest import make_cfg


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    return Run(make_cfg(tmp, f"cache_dir={cache_dir}")).run()


def _job(sweep: Path, name: str, overrides: list[str], run: Path | None = None) -> Path:
    job = sweep / name
    if run is not None:
        shutil.copytree(run, job)
    (job / ".hydra").mkdir(parents=True, exist_ok=True)
    (job / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    return job


@pytest.fixture
def sweep(tmp_path, finished_run) -> Path:
    """Jobs 0 and 1 finished; 2 raised after mining; 3 died before writing anything;
    10 sorts after 3 (numeric order). Only job 0 has its report yet."""
    sweep = tmp_path / "sweep"
    _job(sweep, "0", ["dedup.near=true"], finished_run)
    (sweep / "0" / REPORT_FILE).write_text("<html>job 0</html>")
    _job(sweep, "1", ["dedup.near=false"], finished_run)
    failed = _job(sweep, "2", ["dedup.threshold=7"], finished_run)
    manifest = json.loads((failed / "MANIFEST.json").read_text())
    del manifest["stages"]["chunk"], manifest["stages"]["build"]  # the manifest as it was after mining
    (failed / "MANIFEST.json").write_text(json.dumps(manifest))
    (failed / STATUS_FILE).write_text(json.dumps({"status": "failed", "error_type": "ValueError",
                                                  "error": "threshold must be in (0, 1]"}))
    crashed = _job(sweep, "3", ["executor.workers=64"])
    (crashed / STATUS_FILE).write_text(json.dumps({"status": "running"}))
    _job(sweep, "10", ["stages=[mine]"], finished_run)  # a finished run whose manifest lacks nothing it asked for
    m10 = json.loads((sweep / "10" / "MANIFEST.json").read_text())
    m10["config"]["stages"] = ["mine"]
    del m10["stages"]["chunk"], m10["stages"]["build"]
    (sweep / "10" / "MANIFEST.json").write_text(json.dumps(m10))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return sweep


def _rows(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_summary_rows_statuses_and_links(sweep, finished_run):
    assert [p.name for p in find_jobs(sweep)] == ["0", "1", "2", "3", "10"]
    assert summarize_sweep(sweep) == sweep / "summary.csv"
    rows = _rows(sweep)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "10"]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "failed", "ok"]
    assert [r["overrides"] for r in rows] == ["dedup.near=true", "dedup.near=false", "dedup.threshold=7",
                                             "executor.workers=64", "stages=[mine]"]
    stats = json.loads((finished_run / "stats.json").read_text())
    for r in rows[:2]:
        for split in ("train", "val", "test"):
            assert int(r[f"examples_{split}"]) == stats["splits"][split]["examples"]
        assert int(r["tokens"]) == sum(s["tokens"] for s in stats["splits"].values())
        assert 0 < float(r["trained_token_share"]) < 1 and float(r["seconds"]) > 0
        assert int(r["leakage_removed"]) == stats["skips"].get("leak_exact", 0) + stats["skips"].get("leak_near", 0)
    assert rows[2]["reason"] == "ValueError: threshold must be in (0, 1]"
    assert rows[3]["reason"] == "no MANIFEST.json (the job did not finish)"
    assert rows[4]["examples_train"] == "" and rows[4]["commits"] != ""  # stopped after mining, as asked
    # links: relative to the sweep directory; missing reports were written, job 0's kept
    assert [r["report"] for r in rows] == ["0/report.html", "1/report.html", "2/report.html", "", "10/report.html"]
    assert (sweep / "0" / REPORT_FILE).read_text() == "<html>job 0</html>"
    assert "commitforge run report" in (sweep / "1" / REPORT_FILE).read_text()
    assert not (sweep / "3" / REPORT_FILE).exists()

    md = (sweep / "summary.md").read_text()
    assert "5 jobs: 3 ok, 2 failed." in md
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(lines) == 1 + 5  # header and one row per job
    assert lines[1].startswith("| 0 | ok | `dedup.near=true` |") and "[report](<0/report.html>)" in lines[1]
    assert lines[3].startswith("| 2 | **failed** |") and "threshold must be in (0, 1]" in lines[3]
    assert lines[4].startswith("| 3 | **failed** |") and "[report]" not in lines[4]

    page = (sweep / "summary.html").read_text()
    assert '<a href="1/report.html">report</a>' in page and page.count("<svg") >= 3
    assert "http://" not in page and "https://" not in page and "<script" not in page
    first = [(sweep / f).read_bytes() for f in ("summary.csv", "summary.md", "summary.html")]
    summarize_sweep(sweep)
    assert [(sweep / f).read_bytes() for f in ("summary.csv", "summary.md", "summary.html")] == first


def test_job_status_rules(sweep):
    assert job_status(sweep / "0")[:2] == ("ok", "")
    assert job_status(sweep / "2")[0] == "failed"
    # without the status file, the partial manifest alone marks the job failed
    (sweep / "2" / STATUS_FILE).unlink()
    assert job_status(sweep / "2")[:2] == ("failed", "stages not finished: chunk, build")


def test_callback_records_job_status_and_refreshes_the_summary(sweep):
    cb = SweepSummary()
    job_dir = sweep / "4"
    job_dir.mkdir()
    (job_dir / ".hydra").mkdir()
    (job_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(["chunker=window"]))
    config = OmegaConf.create({"hydra": {"mode": "MULTIRUN", "runtime": {"output_dir": str(job_dir), "cwd": "/"},
                                         "sweep": {"dir": str(sweep), "subdir": "4"}, "job": {"num": 4}}})
    cb.on_job_start(config=config, task_function=lambda cfg: None)
    assert json.loads((job_dir / STATUS_FILE).read_text())["status"] == "running"
    ret = JobReturn()
    ret.status = JobStatus.FAILED
    ret.return_value = RuntimeError("boom")
    cb.on_job_end(config=config, job_return=ret)
    status = json.loads((job_dir / STATUS_FILE).read_text())
    assert status["status"] == "failed" and status["error"] == "boom" and status["job"] == 4
    rows = {r["job"]: r for r in _rows(sweep)}  # written after each job
    assert rows["4"]["status"] == "failed" and rows["4"]["reason"] == "RuntimeError: boom"
    (sweep / "summary.csv").unlink()
    cb.on_multirun_end(config=config)
    assert (sweep / "summary.csv").is_file()
    # single runs are left alone
    run_cfg = OmegaConf.create({"hydra": {"mode": "RUN", "runtime": {"output_dir": str(job_dir)}}})
    (job_dir / STATUS_FILE).unlink()
    cb.on_job_start(config=run_cfg, task_function=lambda cfg: None)
    assert not (job_dir / STATUS_FILE).exists()


def test_real_multirun_writes_the_summary(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "COMMITFORGE_CACHE": str(cache_dir)}
    # ++ adds the callback, or overrides it once conf/config.yaml configures it
    proc = subprocess.run([sys.executable, "-m", "core", "-m", f"hydra.sweep.dir={sweep}", "context=none,same_file",
                           "stages=[mine,chunk]", "executor.workers=1",
                           "++hydra.callbacks.summary._target_=core.sweep.SweepSummary"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(sweep)
    assert [(r["job"], r["status"], r["overrides"]) for r in rows] == [
        ("0", "ok", "context=none stages=[mine,chunk] executor.workers=1"),
        ("1", "ok", "context=same_file stages=[mine,chunk] executor.workers=1")]
    assert rows[0]["unit_changes"] == rows[1]["unit_changes"] != ""
    assert float(rows[1]["context_items_per_unit"]) > 0 == float(rows[0]["context_items_per_unit"] or 0)
    assert all((sweep / r["report"]).is_file() for r in rows)
    assert json.loads((sweep / "1" / STATUS_FILE).read_text())["status"] == "completed"
    assert (sweep / "summary.md").is_file() and (sweep / "summary.html").is_file()


def test_a_sweep_over_max_tokens_fits_the_layouts_its_first_job_kept(tmp_path):
    env = {**os.environ, "COMMITFORGE_CACHE": str(tmp_path / "cache")}

    def sweep(name: str, *overrides: str) -> list[dict]:
        proc = subprocess.run([sys.executable, "-m", "core", "-m", f"hydra.sweep.dir={tmp_path / name}",
                               "executor.workers=1", "dedup.near=false", *overrides],
                              cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        return [json.loads((tmp_path / name / job / "MANIFEST.json").read_text())["stages"]["build"]["counts"]
                for job in ("0", "1")]

    # a sweep that sets no builder setting (over the context strategy: each job lays its rows
    # out otherwise) keeps no layouts
    sweep("contexts", "context=none,same_file")
    single = subprocess.run([sys.executable, "-m", "core", f"out_dir={tmp_path / 'single'}", "executor.workers=1",
                             "dedup.near=false", "context=same_file", "builder.max_tokens=200"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert single.returncode == 0, single.stderr
    assert "layouts_reused" not in json.loads((tmp_path / "single" / "MANIFEST.json").read_text())["stages"]["build"]["counts"]
    first, second = sweep("tokens", "builder.max_tokens=256,128")
    assert "layouts_reused" not in first and second["layouts_reused"] == second["rows_encoded"] > 0


def test_joblib_launcher_runs_jobs_in_parallel_and_a_failed_job_fails_the_sweep(tmp_path, cache_dir):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    env = {**os.environ, "COMMITFORGE_CACHE": str(cache_dir)}
    # job 1 asks for an impossible file-size cap: it fails, job 0 and job 2 still run
    proc = subprocess.run([sys.executable, "-m", "core", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                           f"hydra.sweep.dir={sweep}", "max_file_bytes=1000000,0,2000000", "stages=[mine,chunk]",
                           "executor.workers=1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    rows = {r["job"]: r for r in _rows(sweep)}
    assert (rows["0"]["status"], rows["1"]["status"], rows["2"]["status"]) == ("ok", "failed", "ok")
    assert "max_file_bytes=0" in rows["1"]["reason"]
    assert rows["0"]["unit_changes"] == rows["2"]["unit_changes"] != ""


def test_a_sweep_over_vocab_size_trains_once_and_each_job_has_the_tokenizer_its_own_training_makes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "COMMITFORGE_BPE_TRAIN_VOCAB"}
    common = ["executor.workers=1", "dedup.near=false", "context=none", "progress=false"]

    def run(cache: str, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "core", *args, *common], cwd=tmp_path,
                              env={**env, "COMMITFORGE_CACHE": str(tmp_path / cache)},
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc

    run("cache", "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "tokenizer.vocab_size=300,420,360")
    tokenizers = tmp_path / "cache" / "tokenizers"
    trainings = [json.loads(p.read_text()) for p in tokenizers.glob("trainings-*.json")]
    assert [[e["vocab_size"] for e in entries] for entries in trainings] == [[420]]  # one training, to the largest
    assert len(list(tokenizers.glob("bpe-*"))) == 3
    for job, size in (("0", 300), ("1", 420), ("2", 360)):
        run(f"alone-{size}", f"out_dir={tmp_path / f'alone-{size}'}", f"tokenizer.vocab_size={size}")
        swept = tmp_path / "sweep" / job
        assert (swept / "tokenizer" / "tokenizer.json").read_bytes() == \
            (tmp_path / f"alone-{size}" / "tokenizer" / "tokenizer.json").read_bytes()
        data = sorted((swept / "data").rglob("*.*"))
        assert data and [f.read_bytes() for f in data] == \
            [(tmp_path / f"alone-{size}" / f.relative_to(swept)).read_bytes() for f in data]


def test_a_sweep_job_takes_the_config_the_sweepers_check_composed(tmp_path, monkeypatch):
    """Hydra's sweeper composes each job's config to check it before launching; the job
    (here: a pickled copy of the config loader, as a joblib worker gets it) takes that
    config instead of composing it again, with its own working directory."""
    import pickle

    from hydra import initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    import core.cli  # noqa: F401 - keeps what the check composes
    from core.config import conf_dir, register_schema

    register_schema()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["tokenizer.vocab_size=300,400"], RunMode.MULTIRUN)
        checked = loader.load_sweep_config(master, ["tokenizer.vocab_size=300"])
        fresh = OmegaConf.to_yaml(checked)
        checked.hydra.job.num = 7  # the caller's copy: the kept config is not changed with it
        worker = pickle.loads(pickle.dumps(loader))
        monkeypatch.chdir(tmp_path)

        def no_composing(*args, **kwargs):
            raise AssertionError("composed again")

        with monkeypatch.context() as m:
            m.setattr(ConfigLoaderImpl, "load_configuration", no_composing)
            job = worker.load_sweep_config(master, ["tokenizer.vocab_size=300"])
        assert job.tokenizer.vocab_size == 300 and OmegaConf.is_missing(job.hydra.job, "num")
        assert job.hydra.runtime.cwd == str(tmp_path) != checked.hydra.runtime.cwd
        job.hydra.runtime.cwd = checked.hydra.runtime.cwd
        assert OmegaConf.to_yaml(job) == fresh
        # taken once; another job's overrides are composed as before
        again = worker.load_sweep_config(master, ["tokenizer.vocab_size=300"])
        other = worker.load_sweep_config(master, ["tokenizer.vocab_size=400"])
        assert again.hydra.runtime.cwd == str(tmp_path) and other.tokenizer.vocab_size == 400


def test_a_summary_while_the_sweep_runs_shows_running_jobs_as_running_and_writes_no_report_for_them(sweep):
    """A job that ends refreshes the summary while others still run: one recorded as running
    (its manifest half written) is shown running, without figures, and its report is left to
    it; once the sweep is over, such a job did not finish."""
    running = sweep / "1"
    (running / STATUS_FILE).write_text(json.dumps({"status": "running"}))
    manifest = json.loads((running / "MANIFEST.json").read_text())
    del manifest["stages"]["build"]  # as it is while the build stage runs
    (running / "MANIFEST.json").write_text(json.dumps(manifest))
    summarize_sweep(sweep, live=True)
    rows = {r["job"]: r for r in _rows(sweep)}
    assert (rows["1"]["status"], rows["1"]["reason"], rows["1"]["unit_changes"], rows["1"]["report"]) == \
        ("running", "", "", "")
    assert not (running / REPORT_FILE).exists() and rows["2"]["report"] == "2/report.html"
    assert (rows["0"]["status"], rows["2"]["status"], rows["3"]["status"]) == ("ok", "failed", "running")
    md = (sweep / "summary.md").read_text()
    assert "5 jobs: 2 ok, 1 failed, 2 running." in md and "| 1 | running |" in md
    summarize_sweep(sweep)  # the sweep is over: the job did not finish
    rows = {r["job"]: r for r in _rows(sweep)}
    assert rows["1"]["status"] == "failed" and rows["1"]["reason"] == "stage not finished: build"
    assert rows["3"]["reason"] == "no MANIFEST.json (the job did not finish)"
