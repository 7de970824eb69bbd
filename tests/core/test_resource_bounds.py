"""Many repositories mined one after another in one process: file descriptors and child
git processes stay bounded (each run closes its cat-file process and its handles)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from core.pipeline import Run

from ..conftest import ScriptedRepo, make_cfg


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _children() -> int:
    me = str(os.getpid())
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me and fields[0] != "Z":
                n += 1
    return n


@pytest.mark.parametrize("count", [40, pytest.param(1000, marks=pytest.mark.slow)])
def test_mining_many_repositories_in_one_process_stays_bounded(tmp_path, count):
    template = ScriptedRepo(tmp_path / "template")
    template.commit("one", {"src/lib.rs": "pub fn a() -> u8 { 1 }\n"})
    template.commit("two", {"src/lib.rs": "pub fn a() -> u8 { 2 }\n", "src/b.rs": "pub struct B;\n"})
    cfg = make_cfg(tmp_path, "stages=[mine,chunk]", "context=imports", "progress=false")
    seen: list[tuple[int, int]] = []
    for i in range(count):
        repo = tmp_path / f"r{i}"
        shutil.copytree(template.path, repo)
        cfg.repo = str(repo)
        cfg.out_dir = str(tmp_path / "runs" / str(i))
        Run(cfg).run()
        shutil.rmtree(repo)
        shutil.rmtree(Path(cfg.out_dir))
        if i in (9, count - 1):
            seen.append((_open_fds(), _children()))
    (fds_early, kids_early), (fds_late, kids_late) = seen
    assert fds_late <= fds_early + 2, f"file descriptors grew from {fds_early} to {fds_late}"
    assert kids_late == kids_early == 0, "git processes outlived their runs"
