"""Safe, fast access to a git repository.

Every git process runs with the user's and the system's git config ignored for the
dangerous parts: hooks, fsmonitor and lazy fetching of missing objects are disabled,
and no command that runs filters, textconv or a pager is used, so nothing from the
mined repository is ever executed. Changes come from one streaming ``git log --raw -z``
pass and blobs from one long-lived ``git cat-file --batch`` per process.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import git  # GitPython: opening and validating repositories, resolving revisions

from core.errors import CommitforgeError
from core.records import CommitRecord, FileChange

SAFE_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "core.pager=cat",
    "core.askPass=true",
    "credential.helper=",
    "protocol.allow=never",
    "fetch.negotiationAlgorithm=noop",
)


def git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        GIT_NO_LAZY_FETCH="1",  # partial clones: report missing objects, never fetch them
        GIT_OPTIONAL_LOCKS="0",
        GIT_ATTR_NOSYSTEM="1",
        GIT_PAGER="cat",
        LC_ALL="C",
    )
    return env


@functools.cache
def git_version() -> str:
    """``git --version`` of the git this process runs."""
    return subprocess.run(["git", "--version"], env=git_env(), capture_output=True, text=True, check=False).stdout.strip()


def git_argv(git_dir: Path, *args: str) -> list[str]:
    argv = ["git", "--no-pager", f"--git-dir={git_dir}"]
    for item in SAFE_CONFIG:
        argv += ["-c", item]
    return argv + list(args)


class Repository:
    """A git repository opened for mining (work tree or bare)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise CommitforgeError(f"repository path {str(self.path)!r} does not exist; pass repo=PATH of a git repository")
        try:
            # GitPython with our hardened environment; it only reads config and refs here
            self._repo = git.Repo(self.path, search_parent_directories=False)
        except git.InvalidGitRepositoryError:
            raise CommitforgeError(
                f"{str(self.path)!r} is not a git repository; pass repo=PATH of a directory with a .git (or a bare repository)"
            ) from None
        except git.NoSuchPathError:
            raise CommitforgeError(f"repository path {str(self.path)!r} does not exist") from None
        self._repo.git.update_environment(**git_env())
        self.git_dir = Path(self._repo.git_dir).resolve()
        self.name = (self.path.resolve().name or "repo").removesuffix(".git")

    def run(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(git_argv(self.git_dir, *args), env=git_env(), stdin=subprocess.DEVNULL,
                              capture_output=True, check=False)
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, args, proc.stdout, proc.stderr)
        return proc.stdout.decode("utf-8", "surrogateescape")

    def is_empty(self) -> bool:
        return self.run("rev-parse", "--verify", "-q", "HEAD^{commit}", check=False).strip() == ""

    def head(self) -> str | None:
        out = self.run("rev-parse", "--verify", "-q", "HEAD^{commit}", check=False).strip()
        return out or None

    def resolve_range(self, rev: str) -> list[str]:
        """Check that every end of a revision range exists; return the rev-list arguments."""
        if self.is_empty():
            raise CommitforgeError(f"repository {str(self.path)!r} has no commits yet; nothing to mine")
        if rev.startswith("-"):
            raise CommitforgeError(f"revision {rev!r} looks like an option; give a revision or range such as HEAD or v1.0..HEAD")
        for part, commit in self.range_ends(rev):
            if not commit:
                raise CommitforgeError(
                    f"unknown revision {part!r} in source.rev={rev!r}; use a branch, tag or commit id of {str(self.path)!r}"
                )
        return [rev]

    def range_ends(self, rev: str) -> list[tuple[str, str]]:
        """Each end of a revision or range (``a..b``, ``a...b``) with the commit id it names
        now ("" for none)."""
        parts = [p for p in re.split(r"\.\.\.?", rev) if p] if ".." in rev else [rev]
        return [(part, self.run("rev-parse", "--verify", "-q", "--end-of-options", f"{part}^{{commit}}",
                                check=False).strip()) for part in parts]

    def record_state(self) -> str:
        """A digest of what shapes the records git gives of a commit besides the commit
        and the options asked for: git's version, the repository's own config (system and
        user config are ignored, see git_env), its replace refs and grafts."""
        h = hashlib.sha256(git_version().encode())
        common = Path(getattr(self._repo, "common_dir", None) or self.git_dir).resolve()
        for folder in dict.fromkeys([self.git_dir, common]):
            for rel in ("config", "config.worktree", "info/grafts"):
                try:
                    h.update(f"\0{rel}\0".encode() + (folder / rel).read_bytes())
                except OSError:
                    pass
        h.update(self.run("for-each-ref", "--format=%(refname) %(objectname)", "refs/replace/").encode())
        return h.hexdigest()

    def shallow_commits(self) -> set[str]:
        shallow = self.git_dir / "shallow"
        if not shallow.exists():
            return set()
        return {line.strip() for line in shallow.read_text().splitlines() if line.strip()}

    def close(self) -> None:
        self._repo.close()


_RECORD_START = re.compile(rb"\x1e(?=[0-9a-f]{40,64}\x1f)")
LOG_FORMAT = "%x1e%H%x1f%P%x1f%aI%x1f%at%x1f%cI%x1f%ct%x1f%B%x1f"


def iter_log(repo: Repository, log_args: list[str], ids: list[str] | None = None) -> Iterator[CommitRecord]:
    """Stream CommitRecords from one ``git log --raw -z`` process; ``ids``: commit ids
    written to its standard input (``log_args`` with ``--stdin``)."""
    argv = git_argv(repo.git_dir, "log", "-z", "--raw", "--no-abbrev", "--no-color", "--no-ext-diff",
                    "--no-textconv", f"--format={LOG_FORMAT}", *log_args)
    proc = subprocess.Popen(argv, env=git_env(), stdin=subprocess.DEVNULL if ids is None else subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr_chunks: list[bytes] = []
    drain = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    drain.start()
    if ids is not None:  # written by a thread: git may fill its output before it read them all
        threading.Thread(target=_write_ids, args=(proc.stdin, ids), daemon=True).start()
    assert proc.stdout is not None
    buf = b""
    try:
        while True:
            chunk = proc.stdout.read(1 << 20)
            if not chunk:
                break
            buf += chunk
            starts = [m.start() for m in _RECORD_START.finditer(buf)]
            if len(starts) < 2:
                continue
            for a, b in zip(starts, starts[1:]):
                yield _parse_record(buf[a + 1:b])
            buf = buf[starts[-1]:]
        if buf.startswith(b"\x1e"):
            yield _parse_record(buf[1:])
    finally:
        proc.stdout.close()
        rc = proc.wait()
        drain.join()
    if rc != 0:
        err = b"".join(stderr_chunks).decode("utf-8", "replace").strip().splitlines()
        raise CommitforgeError(f"git log failed in {str(repo.path)!r}: {err[-1] if err else rc}")


def _write_ids(stdin: Any, ids: list[str]) -> None:
    try:
        stdin.write("".join(f"{i}\n" for i in ids).encode())
    except OSError:
        pass  # git ended first: its exit status says why
    finally:
        try:
            stdin.close()
        except OSError:
            pass


def _parse_record(raw: bytes) -> CommitRecord:
    commit, parents, a_iso, a_epoch, c_iso, c_epoch, body, rest = raw.split(b"\x1f", 7)
    message = body.decode("utf-8", "replace").strip("\n")
    subject = message.split("\n", 1)[0].strip()
    tokens = rest.split(b"\0")
    files: list[FileChange] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i].lstrip(b"\n")
        i += 1
        if not tok.startswith(b":"):
            continue
        old_mode, new_mode, old_sha, new_sha, status = tok[1:].decode().split(" ")
        kind = status[0]
        path1 = os.fsdecode(tokens[i])
        i += 1
        path2 = None
        if kind in "RC":
            path2 = os.fsdecode(tokens[i])
            i += 1
        zero = set("0")
        old_blob = None if set(old_sha) == zero else old_sha
        new_blob = None if set(new_sha) == zero else new_sha
        if kind == "A":
            files.append(FileChange("A", None, path1, None, new_blob, None, None, None, new_mode))
        elif kind == "D":
            files.append(FileChange("D", path1, None, old_blob, None, None, None, old_mode, None))
        elif kind in "RC":
            sim = int(status[1:]) if status[1:].isdigit() else None
            # a copy leaves the source in place: for the new path it is an addition based on the source
            files.append(FileChange("R" if kind == "R" else "A", path1 if kind == "R" else None, path2,
                                    old_blob if kind == "R" else None, new_blob, sim, None, old_mode, new_mode))
        else:  # M, T (type change), U
            files.append(FileChange("M", path1, path1, old_blob, new_blob, None, None, old_mode, new_mode))
    return CommitRecord(
        commit=commit.decode(),
        parents=parents.decode().split(),
        author_time=a_iso.decode(),
        author_epoch=int(a_epoch),
        committer_time=c_iso.decode(),
        committer_epoch=int(c_epoch),
        subject=subject,
        message=message,
        files=files,
    )


# the lines of a -U0 patch that matter: a file's blob ids, a hunk's ranges, a new file's header
_PATCH_LINE = re.compile(rb"^(?:index ([0-9a-f]+)\.\.([0-9a-f]+)|@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@|diff )",
                         re.MULTILINE)

Hunk = tuple[int, int, int, int]  # git's old start line, old line count, new start line, new line count


def line_hunks(git_dir: Path, diffs: list[tuple[str, str]], pathspecs: list[str],
               processes: int = 2) -> dict[tuple[str, str], list[Hunk]]:
    """git's changed line ranges of the files matching ``pathspecs`` in each (commit,
    parent) diff, by (old blob, new blob): ``git diff-tree --stdin -p -U0``, the diffs
    split over ``processes`` concurrent gits.

    A hint for incremental parsing, never a source of truth: callers check the ranges
    against the blobs (``core.parsing.hunk_edits``). A failing git gives no hints."""
    if not diffs:
        return {}
    parts = [diffs[i::processes] for i in range(processes) if diffs[i::processes]]
    out: dict[tuple[str, str], list[Hunk]] = {}
    if len(parts) == 1:
        results = [_diff_tree_hunks(git_dir, parts[0], pathspecs)]
    else:
        with ThreadPoolExecutor(len(parts)) as pool:  # the gits run in parallel; parsing is light
            results = list(pool.map(lambda part: _diff_tree_hunks(git_dir, part, pathspecs), parts))
    for result in results:
        if result is None:
            return {}
        out.update(result)
    return out


def _diff_tree_hunks(git_dir: Path, diffs: list[tuple[str, str]], pathspecs: list[str]
                     ) -> dict[tuple[str, str], list[Hunk]] | None:
    # modified files only: an added or deleted file has no earlier version to reparse from
    argv = git_argv(git_dir, "diff-tree", "--stdin", "-r", "-p", "-U0", "--full-index", "--no-renames",
                    "--diff-filter=M", "--no-color", "--no-ext-diff", "--no-textconv", "--", *pathspecs)
    proc = subprocess.Popen(argv, env=git_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    request = "".join(f"{commit} {parent}\n" for commit, parent in diffs).encode()

    def feed() -> None:
        try:
            proc.stdin.write(request)  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass  # git ended early: its exit code says so

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out: dict[tuple[str, str], list[Hunk]] = {}
    current: list[Hunk] | None = None
    tail = b""
    try:
        while True:
            chunk = proc.stdout.read(1 << 22)
            if chunk:
                buf = tail + chunk
                cut = buf.rfind(b"\n") + 1  # whole lines only; the rest waits for the next read
                text, tail = buf[:cut], buf[cut:]
            else:
                text, tail = tail, b""
            for m in _PATCH_LINE.finditer(text):
                old, new, a, b, c, d = m.groups()
                if old is not None:
                    current = out.setdefault((old.decode(), new.decode()), [])
                elif a is not None:
                    if current is not None:
                        current.append((int(a), 1 if b is None else int(b), int(c), 1 if d is None else int(d)))
                else:
                    current = None  # "diff --git": a new file, whose index line follows
            if not chunk:
                break
    finally:
        proc.stdout.close()
        rc = proc.wait()
        writer.join()
    if rc != 0:
        return None
    return {pair: hunks for pair, hunks in out.items() if hunks}


class BlobReader:
    """One long-lived ``git cat-file --batch`` process; read blobs by id."""

    def __init__(self, git_dir: Path):
        self._proc = subprocess.Popen(git_argv(git_dir, "cat-file", "--batch"), env=git_env(),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def read(self, blob: str) -> bytes | None:
        """The blob's bytes, or None when the object is missing (e.g. a partial clone)."""
        proc = self._proc
        assert proc.stdin is not None
        proc.stdin.write(blob.encode() + b"\n")
        proc.stdin.flush()
        return self._answer(blob)

    def read_many(self, blobs: Iterable[str], ahead: int = 64) -> Iterator[bytes | None]:
        """Each blob's bytes (None when missing), in order, with up to ``ahead`` requests
        sent before their answers are read: git looks up and inflates the next objects
        while the caller works on one (three times the throughput of ``read`` in turn).
        Requests are a few KB, so they never fill the pipe while git waits to write. An
        iteration left early reads the answers still due, so the reader stays in step."""
        proc = self._proc
        assert proc.stdin is not None
        todo = iter(blobs)
        sent: deque[str] = deque()

        def send() -> None:
            for blob in todo:
                proc.stdin.write(blob.encode() + b"\n")  # type: ignore[union-attr]
                sent.append(blob)
                if len(sent) >= ahead:
                    break
            proc.stdin.flush()  # type: ignore[union-attr]

        try:
            send()
            while sent:
                data = self._answer(sent[0])
                sent.popleft()
                if len(sent) <= ahead // 2:
                    send()
                yield data
        finally:
            try:
                while sent:  # left early: the answers already asked for
                    self._answer(sent.popleft())
            except CommitforgeError:
                pass  # git is gone: the next read says so

    def _answer(self, blob: str) -> bytes | None:
        stdout = self._proc.stdout
        assert stdout is not None
        header = stdout.readline()
        if not header:
            raise CommitforgeError(f"git cat-file ended unexpectedly while reading {blob}")
        parts = header.split()
        if len(parts) < 3 or parts[1] in (b"missing", b"ambiguous"):
            return None
        size = int(parts[2])
        data = stdout.read(size)
        stdout.read(1)  # trailing newline
        return data

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
