"""Source ``git``: CommitRecords from a repository's history, oldest first.

Merge policy (``source.merges``):

- ``first_parent`` (default): walk the first-parent chain of the revision; a merge
  commit is one change against its first parent (the whole merged branch lands as one
  commit, as it did on the mainline), and side-branch commits are not visited.
- ``all``: visit every commit reachable from the revision in commit-time order
  (parents before children); merge commits contribute no file changes, since their
  branch commits already carry them.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import CommitforgeError
from core.gitio import Repository, iter_log
from core.hookspecs import hookimpl
from core.language import file_extension
from core.records import CommitRecord, FileChange
from core.stats import Counter

SUBMODULE_MODE = "160000"
SYMLINK_MODE = "120000"


@dataclass
class GitSourceConfig:
    name: str = "git"
    rev: str = "HEAD"  # a revision or range, e.g. HEAD, main, v1.0..HEAD
    merges: str = "first_parent"  # first_parent | all
    since: str | None = None  # passed to git log --since (committer date)
    until: str | None = None
    max_commits: int | None = None  # keep the newest N commits of the range
    include: list[str] = field(default_factory=list)  # path globs; empty keeps every path
    exclude: list[str] = field(default_factory=list)
    rename_threshold: int = 50  # git -M similarity in percent; 0 turns rename detection off
    max_message_chars: int = 4000  # longer commit messages are cut at a line end (counted)


class GitSource:
    def __init__(self, cfg: GitSourceConfig):
        if cfg.merges not in ("first_parent", "all"):
            raise CommitforgeError(f"unknown source.merges={cfg.merges!r}; use first_parent or all")
        if cfg.max_commits is not None and cfg.max_commits < 1:
            raise CommitforgeError(f"source.max_commits={cfg.max_commits} must be at least 1 (or null for all)")
        if not 0 <= cfg.rename_threshold <= 100:
            raise CommitforgeError(f"source.rename_threshold={cfg.rename_threshold} must be between 0 and 100")
        self.cfg = cfg

    # the settings that only choose which commits are mined; the others shape each commit's
    # record (``merges`` does both)
    SELECTION = ("rev", "since", "until", "max_commits")

    def walk_args(self, repo: Repository) -> list[str]:
        """The ``git log`` / ``git rev-list`` options that choose the commits and their order."""
        cfg = self.cfg
        args = ["--date-order", "--reverse"]
        if cfg.merges == "first_parent":
            args.append("--first-parent")
        for key in ("since", "until"):
            value = getattr(cfg, key)
            if value:
                _check_date(repo, key, str(value))
                args.append(f"--{key}={value}")
        if cfg.max_commits:
            args.append(f"--max-count={cfg.max_commits}")
        return args + repo.resolve_range(cfg.rev) + ["--"]

    def diff_args(self) -> list[str]:
        """The ``git log`` options that make a commit's changed files (its diff against its
        first parent, renames)."""
        cfg = self.cfg
        args = ["--root", "--diff-merges=first-parent" if cfg.merges == "first_parent" else "--diff-merges=off"]
        return args + ([f"-M{cfg.rename_threshold}%"] if cfg.rename_threshold else ["--no-renames"])

    def log_args(self, repo: Repository) -> list[str]:
        return self.diff_args() + self.walk_args(repo)

    def commit_ids(self, repo: Repository) -> list[str]:
        """The commits :meth:`commits` visits, in its order, from one ``git rev-list``."""
        return repo.run("rev-list", *self.walk_args(repo)).split()

    def record_settings(self) -> dict[str, Any]:
        """What a commit's record depends on besides the commit: every setting but those
        that choose the commits (``SELECTION``)."""
        return {k: v for k, v in dataclasses.asdict(self.cfg).items() if k not in self.SELECTION}

    def revision(self, repo: Repository) -> list[str]:
        """What the configured commits resolve to now: the commit id of each end of
        ``rev`` and git's timestamps for ``since``/``until`` (a relative date such as
        "2 weeks ago" moves with the clock). A run resumes finished stages only when this
        is what it was."""
        cfg = self.cfg
        out = [f"{end}={commit}" for end, commit in repo.range_ends(cfg.rev)]
        for key in ("since", "until"):
            value = getattr(cfg, key)
            if value:
                out.append(repo.run("rev-parse", f"--{key}={value}", check=False).strip())
        return out

    def keeps_path(self, path: str) -> bool:
        """Whether the include/exclude globs keep ``path``."""
        if self.cfg.include and not any(fnmatch.fnmatchcase(path, g) for g in self.cfg.include):
            return False
        return not any(fnmatch.fnmatchcase(path, g) for g in self.cfg.exclude)

    def commits(self, repo: Repository, extensions: Mapping[str, str], stats: Counter) -> Iterator[CommitRecord]:
        """Commits oldest first, their files filtered to paths of the configured languages."""
        for _, rec, counts in self.mined(repo, extensions):
            stats.update(counts)
            if rec is not None:
                yield rec

    def mined(self, repo: Repository, extensions: Mapping[str, str], only: list[str] | None = None
              ) -> Iterator[tuple[str, CommitRecord | None, Counter]]:
        """Each commit, oldest first, with its record (None for a commit skipped) and its
        own counts. ``only``: just these commits (ids from :meth:`commit_ids`), in the
        order given: git reads their records without walking the history."""
        shallow = repo.shallow_commits()
        if only is None:
            records = iter_log(repo, self.log_args(repo))
        else:
            records = iter_log(repo, [*self.diff_args(), "--no-walk=unsorted", "--stdin"], ids=only)
        for rec in records:
            stats = Counter()
            yield rec.commit, self._record(rec, extensions, shallow, stats), stats

    def _record(self, rec: CommitRecord, extensions: Mapping[str, str], shallow: set[str], stats: Counter
                ) -> CommitRecord | None:
        """``rec`` as mined (its files filtered, its message cut), or None, counted in ``stats``."""
        stats.add("commits_seen")
        if rec.commit in shallow:
            # the parent is not in the clone: its "all files added" diff is not a real change
            stats.skip("shallow_boundary_commit")
            return None
        kept = []
        for fc in rec.files:
            path = fc.path
            lang = extensions.get(file_extension(path))
            old_lang = extensions.get(file_extension(fc.old_path)) if fc.old_path else None
            if lang is None and old_lang is not None and fc.change in ("M", "R"):
                # renamed away from the language (src/c.rs -> src/c.txt): its units are deleted
                fc = FileChange("D", fc.old_path, None, fc.old_blob, None, None, None, fc.old_mode, None)
                path, lang = fc.old_path, old_lang  # type: ignore[assignment]
            elif lang is not None and fc.change == "R" and old_lang is None:
                # renamed into the language (notes.txt -> notes.rs): an addition
                fc = FileChange("A", None, fc.new_path, None, fc.new_blob, None, None, None, fc.new_mode)
            if lang is None:
                stats.add("files_other_language")
                continue
            if not (self.keeps_path(path) or (fc.old_path and self.keeps_path(fc.old_path))):
                stats.add("files_excluded_by_glob")
                continue
            modes = {fc.old_mode, fc.new_mode}
            if SUBMODULE_MODE in modes:
                stats.skip("submodule")
                continue
            if SYMLINK_MODE in modes:
                stats.skip("symlink")
                continue
            fc.lang = lang
            kept.append(fc)
        if not kept:
            stats.add("commits_without_matching_files")
            return None
        rec.files = kept
        if len(rec.message) > self.cfg.max_message_chars:
            cut = rec.message.rfind("\n", 0, self.cfg.max_message_chars)
            rec.message = rec.message[: cut if cut > 0 else self.cfg.max_message_chars]
            stats.add("messages_truncated")
        stats.add("commits")
        stats.add("file_changes", len(kept))
        return rec


def _check_date(repo: Repository, key: str, value: str) -> None:
    """git reads any text it cannot parse as a date as "now": refuse that instead of
    silently mining nothing."""
    out = repo.run("rev-parse", f"--{key}={value}", check=False).strip()
    epoch = out.rsplit("=", 1)[-1]
    if value.strip().lower() != "now" and (not epoch.isdigit() or abs(int(epoch) - time.time()) < 5):
        raise CommitforgeError(f"source.{key}={value!r} is not a date git understands; "
                               "use e.g. 2024-01-31, '2024-01-31 12:00' or '2 weeks ago'")


@hookimpl
def register_source(register):
    register("git", GitSource, GitSourceConfig)
