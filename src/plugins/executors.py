"""Executor ``local``: worker processes on this machine."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from core.errors import CommitforgeError
from core.hookspecs import hookimpl


@dataclass
class LocalExecutorConfig:
    name: str = "local"
    workers: int | None = None  # default: the number of cores


class LocalExecutor:
    """``map`` over a process pool; results come back in input order.

    With one worker (or one task) the work runs in this process, which keeps small runs
    and debugging free of process start-up.
    """

    same_machine = True  # workers read and write this machine's files

    def __init__(self, cfg: LocalExecutorConfig):
        if cfg.workers is not None and cfg.workers < 1:
            raise CommitforgeError(f"executor.workers={cfg.workers} must be at least 1 (or null for all cores)")
        self.workers = cfg.workers or os.cpu_count() or 1

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        items = list(items)
        if self.workers == 1 or len(items) <= 1:
            yield from map(fn, items)
            return
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=min(self.workers, len(items)), mp_context=ctx) as pool:
            yield from pool.map(fn, items)


@hookimpl
def register_executor(register):
    register("local", LocalExecutor, LocalExecutorConfig)
