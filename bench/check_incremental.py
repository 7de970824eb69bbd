"""Check incremental extraction against fresh parses on a real repository's history.

    python bench/check_incremental.py REPO [--limit N]

Walks every file version chain of the history (as the chunk stage does) and parses
each version three ways, interleaved so that machine noise hits all alike: from
scratch; incrementally from its predecessor with the one span from the first changed
byte to the last; and incrementally from git's line hunks (``core.gitio.line_hunks``).
Reports any difference in the extracted units and the time of each way (parse and
unit extraction, in this process).
"""

from __future__ import annotations

import argparse
import time
from collections import OrderedDict

from core.chunking import unique_blobs
from core.gitio import BlobReader, Repository, line_hunks
from core.parsing import hunk_edits
from core.stats import Counter
from plugins.rust import RustLanguage
from plugins.sources import GitSource, GitSourceConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo")
    ap.add_argument("--limit", type=int, default=None, help="versions to check (default: all)")
    args = ap.parse_args()
    repo = Repository(args.repo)
    commits = list(GitSource(GitSourceConfig()).commits(repo, {".rs": "rust"}, Counter()))
    blobs = unique_blobs(commits)[: args.limit]
    t0 = time.perf_counter()
    hunks = line_hunks(repo.git_dir, [(c.commit, c.parents[0]) for c in commits if c.parents], ["*.rs"])
    t_git = time.perf_counter() - t0
    ways = {"fresh": RustLanguage(), "one span": RustLanguage(), "hunks": RustLanguage()}
    done: dict[str, OrderedDict] = {way: OrderedDict() for way in ways}
    seconds = dict.fromkeys(ways, 0.0)
    mismatches = checked = from_hunks = 0
    with BlobReader(repo.git_dir) as reader:
        for blob, _, prev in blobs:
            data = reader.read(blob)
            if data is None or b"\0" in data[:8000]:
                continue
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            results = {}
            for way, lang in ways.items():
                previous = done[way].get(prev) if prev and way != "fresh" else None
                edits = None
                if way == "hunks" and previous is not None and (prev, blob) in hunks:
                    edits = hunk_edits(previous[0], data, hunks[(prev, blob)])
                    from_hunks += edits is not None
                t1 = time.perf_counter()
                results[way] = lang.parse(data, previous, edits=edits) if edits else lang.parse(data, previous)
                seconds[way] += time.perf_counter() - t1
                done[way][blob] = (data, results[way])
                if len(done[way]) > 64:
                    done[way].popitem(last=False)
            checked += 1
            want = results["fresh"].to_dict()
            for way in ("one span", "hunks"):
                if results[way].to_dict() != want:
                    mismatches += 1
                    print(f"MISMATCH ({way}) {blob} (previous {prev})")
    times = ", ".join(f"{way} {s:.2f} s" for way, s in seconds.items())
    print(f"checked {checked} versions ({from_hunks} from hunks; git diff-tree {t_git:.2f} s): "
          f"{mismatches} mismatches; {times}")
    raise SystemExit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
