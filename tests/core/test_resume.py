"""Interrupted runs: SIGKILL at many points, then the same command again.

The rerun must give byte-identical outputs to a run that was never interrupted, and at
no moment may a file under a final name hold partial content.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import CommitforgeError
from core.manifest import RunLock

FINAL = ("commits.jsonl", "chunks/00000.jsonl", "stats.json", "data/train/00000.jsonl", "data/val/00000.jsonl",
         "data/test/00000.jsonl")


def _start(run_dir: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "COMMITFORGE_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "core", f"out_dir={run_dir}", "context=imports",
                             "executor.workers=2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _outputs(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in FINAL if (run_dir / name).exists()}


def _check_no_partial_files(run_dir: Path, reference: dict[str, bytes]) -> None:
    for name, data in _outputs(run_dir).items():
        assert data == reference[name], f"{name} exists under its final name with partial content"
    if (run_dir / "MANIFEST.json").exists():
        json.loads((run_dir / "MANIFEST.json").read_text())  # complete JSON, never half a file


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict[str, bytes], float, Path]:
    root = tmp_path_factory.mktemp("resume")
    cache = root / "cache"
    _start(root / "warm", cache).communicate()  # builds the demo repository and warms the caches
    t0 = time.perf_counter()
    proc = _start(root / "ref", cache)
    proc.communicate()
    assert proc.returncode == 0
    return _outputs(root / "ref"), time.perf_counter() - t0, cache


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9] + [pytest.param(f, marks=pytest.mark.slow)
                                                       for f in (0.1, 0.2, 0.4, 0.5, 0.7, 0.8, 0.95, 0.99)])
def test_a_run_killed_at_any_point_reruns_to_identical_outputs(reference, fraction, tmp_path):
    outputs, duration, cache = reference
    assert set(outputs) == set(FINAL)
    run_dir = tmp_path / "run"
    # kill twice in the same directory (the second run resumes the first's work), then finish
    for point in (fraction, fraction / 2):
        proc = _start(run_dir, cache)
        time.sleep(duration * point)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _check_no_partial_files(run_dir, outputs)
    proc = _start(run_dir, cache)
    out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert _outputs(run_dir) == outputs
    assert not list(run_dir.rglob("*.tmp")), "temporary files of the killed runs are cleaned up"


def test_a_finished_run_is_not_redone_and_a_changed_input_is(reference, tmp_path):
    outputs, _, cache = reference
    run_dir = tmp_path / "run"
    for _ in range(2):
        proc = _start(run_dir, cache)
        proc.communicate()
        assert proc.returncode == 0
    manifest = json.loads((run_dir / "MANIFEST.json").read_text())
    assert manifest["resumed"] == ["mine", "chunk", "build"] and _outputs(run_dir) == outputs
    (run_dir / "chunks" / "00000.jsonl").write_bytes(b"tampered\n")  # a damaged output is redone, with what follows
    proc = _start(run_dir, cache)
    proc.communicate()
    manifest = json.loads((run_dir / "MANIFEST.json").read_text())
    assert manifest["resumed"] == ["mine"] and _outputs(run_dir) == outputs


def test_two_runs_in_one_directory_at_once_are_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(CommitforgeError, match=r"is in use by pid \d+; wait for it to finish or choose another out_dir"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released when the first run ends
        pass


def test_a_rerun_with_another_writer_or_fewer_stages_leaves_no_stale_outputs(tmp_path):
    from core.pipeline import Run

    from ..conftest import make_cfg

    out = tmp_path / "run"
    Run(make_cfg(tmp_path, f"out_dir={out}")).run()
    assert (out / "data" / "train" / "00000.jsonl").exists()
    Run(make_cfg(tmp_path, f"out_dir={out}", "writer=legacy")).run()
    assert not (out / "data").exists()  # the jsonl files went with the stage that wrote them
    assert (out / "training_data_enhanced_train.json").exists()
    Run(make_cfg(tmp_path, f"out_dir={out}", "stages=[mine]")).run()
    assert not (out / "chunks").exists() and not (out / "training_data_enhanced_train.json").exists()
    assert (out / "commits.jsonl").exists()
