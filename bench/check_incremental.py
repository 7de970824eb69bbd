"""Check incremental extraction against fresh parses on a real repository's history.

    python bench/check_incremental.py REPO [--limit 2000]

Walks every file version chain of the history (as the chunk stage does), parses each
version both incrementally from its predecessor and from scratch, and reports any
difference in the extracted units, plus the time of both ways.
"""

from __future__ import annotations

import argparse
import time

from core.chunking import unique_blobs
from core.gitio import BlobReader, Repository
from core.stats import Counter
from plugins.rust import RustLanguage
from plugins.sources import GitSource, GitSourceConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("--limit", type=int, default=2000)
    args = ap.parse_args()
    repo = Repository(args.repo)
    commits = list(GitSource(GitSourceConfig()).commits(repo, {".rs": "rust"}, Counter()))
    blobs = unique_blobs(commits)[: args.limit]
    incremental, fresh = RustLanguage(), RustLanguage()
    done: dict[str, tuple[bytes, object]] = {}
    t_inc = t_fresh = 0.0
    mismatches = checked = 0
    with BlobReader(repo.git_dir) as reader:
        for blob, _, prev in blobs:
            data = reader.read(blob)
            if data is None or b"\0" in data[:8000]:
                continue
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            t0 = time.perf_counter()
            got = incremental.parse(data, done.get(prev) if prev else None)
            t1 = time.perf_counter()
            want = fresh.parse(data)
            t2 = time.perf_counter()
            t_inc += t1 - t0
            t_fresh += t2 - t1
            done[blob] = (data, got)
            checked += 1
            if got.to_dict() != want.to_dict():
                mismatches += 1
                print(f"MISMATCH {blob} (previous {prev})")
    print(f"checked {checked} versions: {mismatches} mismatches; incremental {t_inc:.2f} s, fresh {t_fresh:.2f} s")
    raise SystemExit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
