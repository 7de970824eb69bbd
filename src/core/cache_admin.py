"""What a cache directory holds, and removing what no run reads any more.

Every store commitforge keeps under ``cache_dir`` names its format in its file name
(``stages-f5.sqlite``, ``units-f8-m4.sqlite``, ``lines-f3/``…). A release that changes a
format starts a new file and never reads the old one again, so old files stay on disk
until removed. ``python -m core cache`` lists the entries of the cache directory as

- ``current``: read by this version;
- ``stale``: a store of an older format, or the demo repository of an older version;
- ``newer``: a store of a newer format (a newer commitforge shares the directory);
- ``unfinished``: what an interrupted build of the demo repository left (``building``
  while under an hour old: a build may be running);
- ``other``: anything else, such as another Python's unit cache (its marshal version is
  in the name) or what commitforge did not make.

``python -m core cache prune`` removes the stale and unfinished entries; ``--all``
removes the current ones too (refused while a run holds one of the cache's locks, or
when the directory holds no commitforge store). Newer and other entries are never
removed. Kept outputs (``stages-f*-outputs/``, ``lines-f*/``) are hard links to
files of run directories: removing them frees their space only when those runs' files
are gone too, so sizes count such files apart, as ``linked``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import CommitforgeError

TOKENIZERS_DIR = "tokenizers"  # trained tokenizers (the bpe plugin), by corpus and settings
# the ids of the line pieces a tokenizer encoded, one file per tokenizer (plugins.tokenizers)
PIECES_FORMAT = 1
PIECES_DIR = f"pieces-f{PIECES_FORMAT}"
# the stores and folders of any version: family, format (or demo version), the rest of the name
_VERSIONED = re.compile(r"(units|summaries|stages|build|examples|lines|sha256-points|pieces)-f(\d+)([-.].*)?|(demo)-v(\d+)")
_UNFINISHED = re.compile(r"\.demo-v\d+\.tmp-.*")  # see core.demo.demo_repo_path
_SQLITE_SIDE = ("-wal", "-shm", "-journal")  # files SQLite keeps next to a database
UNFINISHED_AGE_S = 3600  # a demo build younger than this may still be running


@dataclass
class Entry:
    name: str  # the database, folder or file (a database's -wal and -shm files with it)
    status: str  # current | stale | newer | unfinished | building | other
    paths: list[Path]
    size: int  # bytes on disk of files only this entry holds
    linked: int  # bytes of files also linked from elsewhere (a run directory's output)


def current_names() -> set[str]:
    """The entries this version reads and writes."""
    from core.blob_cache import SUMMARIES_FILE, UNITS_FILE
    from core.build_memo import BUILD_MEMO_FILE, MEMO_FILES_DIR
    from core.demo import DEMO_DIR
    from core.hash_points import HASH_POINTS_FILE
    from core.kept_lines import KEPT_LINES_DIR, KEPT_LINES_FILE
    from core.stage_cache import LOCKS_DIR, STAGE_OUTPUTS_DIR, STAGES_FILE

    return {UNITS_FILE, SUMMARIES_FILE, STAGES_FILE, STAGE_OUTPUTS_DIR, LOCKS_DIR, BUILD_MEMO_FILE, MEMO_FILES_DIR,
            KEPT_LINES_FILE, KEPT_LINES_DIR, DEMO_DIR, TOKENIZERS_DIR, HASH_POINTS_FILE, PIECES_DIR}


def scan(root: Path, sized: bool = True) -> list[Entry]:
    """The entries of cache directory ``root``, by name (``sized``: with their sizes on
    disk, else sizes of 0)."""
    current = current_names()
    formats = {}  # family -> its current format
    for name in current:
        m = _VERSIONED.fullmatch(name)
        if m is not None:
            formats[m.group(1) or m.group(4)] = int(m.group(2) or m.group(5))
    groups: dict[str, list[Path]] = {}
    with os.scandir(root) as it:
        for item in it:
            name = item.name
            for side in _SQLITE_SIDE:
                if name.endswith(".sqlite" + side):
                    name = name[:-len(side)]
            groups.setdefault(name, []).append(Path(item.path))
    now = time.time()
    out = []
    for name, paths in sorted(groups.items()):
        versioned = _VERSIONED.fullmatch(name)
        if name in current:
            status = "current"
        elif versioned is not None:
            family, number = versioned.group(1) or versioned.group(4), int(versioned.group(2) or versioned.group(5))
            now_at = formats.get(family, number + 1)  # a store no version reads any more: older
            status = "stale" if number < now_at else "newer" if number > now_at else "other"
        elif _UNFINISHED.fullmatch(name):
            status = "unfinished" if all(now - _mtime(p) > UNFINISHED_AGE_S for p in paths) else "building"
        else:
            status = "other"
        size, linked = _disk_usage(paths) if sized else (0, 0)
        out.append(Entry(name, status, sorted(paths), size, linked))
    return out


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


def _disk_usage(paths: list[Path]) -> tuple[int, int]:
    """(bytes of files linked only here, bytes of files with other links), from blocks on disk."""
    own = linked = 0
    stack = list(paths)
    while stack:
        path = stack.pop()
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # removed meanwhile (a run replaced a kept output)
        if stat.S_ISDIR(st.st_mode):  # lstat: a symlink is counted as itself, never followed
            try:
                stack.extend(path.iterdir())
            except FileNotFoundError:
                pass
            continue
        used = st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
        if st.st_nlink > 1:
            linked += used
        else:
            own += used
    return own, linked


def remove(entry: Entry) -> list[str]:
    """Remove an entry's files; what could not be removed, with why."""
    failed: list[str] = []

    def note(_fn, path, exc) -> None:
        failed.append(f"{path}: {exc[1].strerror if isinstance(exc[1], OSError) else exc[1]}")

    for path in entry.paths:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, onerror=note)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            failed.append(f"{path}: {exc.strerror or exc}")
    return failed


def prune(root: Path, everything: bool = False) -> tuple[list[Entry], list[str]]:
    """Remove the stale and unfinished entries of ``root`` (``everything``: the current ones
    too); the entries removed, and what could not be removed, with why."""
    entries = scan(root)
    if everything:
        if not any(e.status in ("current", "stale") and _VERSIONED.fullmatch(e.name) for e in entries):
            raise CommitforgeError(f"cache_dir={root} holds no commitforge store; prune --all removes only a "
                                   "commitforge cache: check the directory")
        from core.stage_cache import StageCache

        busy = StageCache(root).held_lock()
        if busy is not None:
            raise CommitforgeError(f"a run is using the cache (it holds {busy}); run prune --all when no run is going")
    statuses = {"stale", "unfinished"} | ({"current"} if everything else set())
    gone, failed = [], []
    for entry in entries:
        if entry.status in statuses:
            errors = remove(entry)
            (failed.extend(errors) if errors else gone.append(entry))
    return gone, failed


def stale_hint(root: Path) -> str | None:
    """One line for the end of a run when the cache holds entries no run reads, else None."""
    try:
        stale = [e for e in scan(root, sized=False) if e.status in ("stale", "unfinished")]
        size = sum(_disk_usage(e.paths)[0] for e in stale)  # only these: it runs after every run
    except OSError:
        return None
    if not stale:
        return None
    names = ", ".join(e.name for e in stale[:3]) + (", …" if len(stale) > 3 else "")
    return (f"  cache: {human(size)} in {entries(len(stale))} of older formats ({names}); "
            f"`python -m core cache prune cache_dir={shlex.quote(str(root))}` removes them")


def entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


def human(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KB"
    for bigger in ("MB", "GB", "TB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


USAGE = """usage: python -m core cache [prune [--all]] [cache_dir=DIR]

  (no action)   list the entries of the cache directory: current, stale (an older format,
                never read again), newer, unfinished, building, other
  prune         remove the stale and unfinished entries
  prune --all   remove the current entries too (refused while a run holds a lock of the
                cache, or in a directory without a commitforge store)
  cache_dir=DIR the cache directory; default: the runs' (cache_dir in conf/config.yaml:
                $COMMITFORGE_CACHE, else ~/.cache/commitforge)"""


def _default_cache_dir() -> str:
    """``cache_dir`` as a run resolves it from the config."""
    from hydra import compose, initialize_config_dir

    from core.config import conf_dir, register_schema

    register_schema()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return str(compose("config").cache_dir)


def main(args: list[str]) -> int:
    """``python -m core cache …``; the exit status."""
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    action, everything, cache_dir = "list", False, None
    for arg in args:
        if arg == "prune" and action == "list":
            action = "prune"
        elif arg == "--all" and action == "prune":
            everything = True
        elif arg.startswith("cache_dir=") and cache_dir is None:
            cache_dir = arg.split("=", 1)[1]
        else:
            raise CommitforgeError(f"cache: unexpected argument {arg!r}; see python -m core cache --help")
    root = Path(os.path.expanduser(cache_dir if cache_dir else _default_cache_dir()))
    if cache_dir is None and not root.exists():
        print(f"cache directory: {root} does not exist yet: no run has cached anything")
        return 0
    if not root.is_dir():
        raise CommitforgeError(f"cache_dir={root} is not a directory; give the cache directory of your runs "
                               "(cache_dir=DIR or COMMITFORGE_CACHE)")
    if action == "prune":
        gone, failed = prune(root, everything)
        for e in gone:
            print(f"removed {e.name} ({human(e.size)}" + (f", {human(e.linked)} still linked from run directories"
                                                          if e.linked else "") + ")")
        print(f"commitforge: removed {entries(len(gone))}, {human(sum(e.size for e in gone))} freed, from {root}")
        for why in failed:
            print(f"commitforge: error: could not remove {why}", file=sys.stderr)
        return 1 if failed else 0
    listed = scan(root)
    print(f"cache directory: {root}")
    width = max([len(e.name) for e in listed] + [5])
    print(f"  {'entry'.ljust(width)}  {'status':10}  {'size':>9}  linked")
    for e in listed:
        print(f"  {e.name.ljust(width)}  {e.status:10}  {human(e.size):>9}  {human(e.linked) if e.linked else ''}".rstrip())
    stale = [e for e in listed if e.status in ("stale", "unfinished")]
    total = sum(e.size for e in listed)
    line = f"{entries(len(listed))}, {human(total)}"
    if stale:
        line += (f"; {len(stale)} stale or unfinished ({human(sum(e.size for e in stale))}): "
                 f"python -m core cache prune cache_dir={shlex.quote(str(root))} removes them")
    print(line)
    return 0
