"""How a run uses Python's cycle collector.

A run keeps millions of small objects alive (parsed units, the symbol index and its
caches, the examples being built) that rarely form cycles, and the collector would walk
them again and again for nothing. Where a run uses what:

- ``GC_THRESHOLDS``: ``python -m core`` sets them before it imports anything (its modules
  and the composed config live as long as the run);
- :func:`fewer_collections`: the whole run (workers forked meanwhile inherit it);
- :func:`aging`: a worker following a tree through a run of commits (the chunk stage);
- :func:`paused`: the first symbol index of a tree (core.snapshot), the rows the build
  stage reads and the builder's examples (core.build).

None of them touches a process that froze objects itself (a program that forks), and
cycles are still collected: what the helpers take out of the collector's reach goes to
its oldest generation when they end.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# with the default thresholds the collector took about 6% of a ctx4000 run's CPU (and 19%
# of following the index through a history); memory stays bounded
GC_THRESHOLDS = (100_000, 50, 1000)


def to_oldest_generation() -> None:
    """Move every object the collector tracks to its oldest generation without walking
    them (``gc.freeze()`` then ``gc.unfreeze()``): what a long computation left alive
    would otherwise be walked by the next young collections; cycles among it are
    collected by the next full collection. A process that froze objects itself is left
    alone (unfreezing would thaw them too)."""
    if not gc.get_freeze_count():
        gc.freeze()
        gc.unfreeze()


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Collect cycles less often during a run (workers forked meanwhile inherit it)."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        # what the run left in the young generations (the whole symbol index, when it ran in
        # this process) goes to the oldest one unscanned: with the default thresholds back,
        # the next allocation would otherwise walk it all (a second on a kaspa history)
        to_oldest_generation()
        gc.set_threshold(*before)


@contextmanager
def aging(on: bool) -> Iterator[Callable[[], None]]:
    """While a worker follows a tree through a run of commits, what each commit leaves
    alive (the symbol index and its caches grow with every commit) is frozen before the
    next one (the function this yields, ``gc.freeze``): the collector's young generations
    then hold one commit's objects, instead of walking the index again and again (about a
    tenth of the context work's CPU on kaspa). The frozen objects go to the oldest
    generation when the run ends, however it ends: cycles among them are collected then."""
    if not on or gc.get_freeze_count():
        yield lambda: None
        return
    try:
        yield gc.freeze
    finally:
        gc.unfreeze()


@contextmanager
def paused() -> Iterator[None]:
    """The collector off for a block that makes many objects forming no cycles, which live
    past it (the builder's examples, their segments and spans: it would walk each of them
    once for nothing); what the block leaves alive then goes to the oldest generation
    unscanned. A program that runs with the collector off keeps it off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        to_oldest_generation()
        gc.enable()
