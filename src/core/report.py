"""``report.html``: one self-contained page that shows what a run directory holds.

:func:`write_report` reads a finished (or partial: ``stages=[mine]``, ``[mine,chunk]``)
run directory and writes ``run_dir/report.html``: a headline table, a table per split,
and inline SVG charts drawn here in plain Python (token lengths per split, context
items and context recall per unit change, unit changes and examples per commit over
time, skips by reason), then the stage counters, outputs, versions and the resolved
config. Nothing is fetched when the page is opened: no scripts, no stylesheets, no
fonts, no links off the page.

* Every string taken from the data (paths, subjects, skip reasons, config values) is
  HTML-escaped; lone surrogates (non-UTF-8 paths) are written as ``\\udcXX``.
* The page is deterministic: the same run directory gives the same bytes (the
  manifest's ``written`` timestamp is not shown, numbers are formatted with fixed
  precision, every table is sorted).
* ``chunks/`` (possibly hundreds of MB) is streamed line by line, and only the
  fields the charts need are decoded (``commit``, ``time``, ``context``,
  ``context_recall``); the examples files are scanned for their ``commit`` field only.

:func:`summary_row` returns the flat headline figures of a run (from ``MANIFEST.json``
and ``stats.json`` only, so it is cheap); the sweep summary (:mod:`core.sweep`) has one
such row per job. The SVG helpers (:func:`bar_chart`, :func:`page`) are shared with it.
"""

from __future__ import annotations

import bisect
import html
import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.chunk_shards import CHUNKS_DIR
from core.files import atomic_write, shard_paths, split_shards

REPORT_FILE = "report.html"
STAGE_NAMES = ("mine", "chunk", "build")
SPLITS = ("train", "val", "test")

SPLIT_COLORS = {"train": "#4c78a8", "val": "#f58518", "test": "#54a24b"}
BAR = "#4c78a8"
BAR2 = "#e45756"
MUTED = "#9aa5b1"


# -- reading a run directory ---------------------------------------------------------------


def load_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _int(x: Any) -> int | None:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def recall_value(block: Any) -> float | None:
    """One number in [0, 1] from a context-recall figure: a number, or a block such as
    ``{"recall": r}``, ``{"mean": r, ...}`` or ``{"refs_found": h, "refs": t}``."""
    v = _num(block)
    if v is not None:
        return v
    if not isinstance(block, dict):
        return None
    for key in ("recall", "mean", "micro", "value", "macro", "avg", "average"):
        v = _num(block.get(key))
        if v is not None:
            return v
    for hit, total in (("refs_found", "refs"), ("hits", "total"), ("found", "total"), ("found", "needed"),
                       ("recalled", "total"), ("covered", "total")):
        h, t = _num(block.get(hit)), _num(block.get(total))
        if h is not None and t:
            return h / t
    return None


def context_block(manifest: dict[str, Any], stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's context figures (recall, its histogram, items per unit...) wherever they are:
    the manifest's ``context`` block, a ``context_recall`` block (chunk stage, its counts,
    stats.json), or the chunk stage's ``context_*`` counts."""
    block = manifest.get("context")
    if isinstance(block, dict) and block:
        return block
    chunk = _dict(_dict(manifest.get("stages")).get("chunk"))
    counts = _dict(chunk.get("counts"))
    for candidate in (chunk.get("context_recall"), counts.get("context_recall"),
                      _dict(stats).get("context_recall"), manifest.get("context_recall")):
        if isinstance(candidate, dict):
            return candidate
        if _num(candidate) is not None:
            return {"recall": candidate}
    refs = _int(counts.get("context_refs"))
    hist = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in counts.items()
                  if re.fullmatch(r"context_recall_hist_\d+", k) and _int(v) is not None)
    if refs is None and not hist:
        return None
    out: dict[str, Any] = {}
    if refs is not None:
        found = _int(counts.get("context_refs_found")) or 0
        out.update(refs=refs, refs_found=found, recall=round(found / refs, 4) if refs else None)
    if hist:
        buckets = [0] * max(10, hist[-1][0] + 1)
        for i, v in hist:
            buckets[i] = int(v)
        out["recall_histogram"] = buckets
    return out


@dataclass
class RunInfo:
    """MANIFEST.json and stats.json of a run directory, and the figures derived from them."""

    run_dir: Path
    manifest: dict[str, Any]
    stats: dict[str, Any] | None

    @classmethod
    def load(cls, run_dir: Path) -> RunInfo:
        run_dir = Path(run_dir)
        info = cls(run_dir, load_json(run_dir / "MANIFEST.json") or {}, None)
        if info.ran("build"):
            info.stats = load_json(run_dir / "stats.json")
        return info

    def ran(self, stage: str) -> bool:
        """Whether the stage finished: the manifest says so (outputs of an earlier run in the
        same directory are not this run's); without a manifest, whether its output exists."""
        if self.manifest:
            return stage in self.stages
        output = {"mine": "commits.jsonl", "chunk": CHUNKS_DIR, "build": "stats.json"}.get(stage)
        return output is not None and (self.run_dir / output).exists()

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return {k: _dict(v) for k, v in _dict(self.manifest.get("stages")).items()}

    def counts(self, stage: str) -> dict[str, Any]:
        return _dict(self.stages.get(stage, {}).get("counts"))

    def skips_by_stage(self) -> dict[str, dict[str, int]]:
        out = {}
        for name, st in self.stages.items():
            skips = {str(k): int(v) for k, v in _dict(st.get("skips")).items() if _int(v) is not None}
            out[name] = skips
        if "build" not in out and self.stats and isinstance(self.stats.get("skips"), dict):
            out["build"] = {str(k): int(v) for k, v in self.stats["skips"].items() if _int(v) is not None}
        return out

    def splits(self) -> dict[str, dict[str, Any]]:
        return {k: _dict(v) for k, v in _dict(_dict(self.stats).get("splits")).items()}

    def split_names(self) -> list[str]:
        names = list(self.splits())
        return [s for s in SPLITS if s in names] + sorted(s for s in names if s not in SPLITS)

    def examples(self, split: str) -> int | None:
        n = _int(self.splits().get(split, {}).get("examples"))
        return n if n is not None else _int(self.counts("build").get(f"examples_{split}"))

    def config(self) -> dict[str, Any]:
        return _dict(self.manifest.get("config"))

    def expected_stages(self) -> list[str]:
        stages = self.config().get("stages")
        return [str(s) for s in stages] if isinstance(stages, list) else list(STAGE_NAMES)

    def missing_stages(self) -> list[str]:
        done = self.stages
        return [s for s in self.expected_stages() if s not in done]

    def context_name(self) -> str | None:
        ctx = self.config().get("context")
        if isinstance(ctx, dict):
            return str(ctx.get("name")) if ctx.get("name") is not None else None
        plugins = _dict(self.manifest.get("plugins"))
        return str(plugins["context"]) if plugins.get("context") is not None else None


def summary_row(run_dir: Path) -> dict[str, Any]:
    """The flat headline figures of one run (None where a run does not have them).

    Reads MANIFEST.json and stats.json only. Keys: repo, commits, unit_changes,
    examples_<split>, examples, tokens, tokens_<split>, trained_token_share (target tokens
    over all tokens), truncated, dedup_removed, leakage_removed, skips, context,
    context_items, context_items_per_unit, unit_changes_with_context, context_recall,
    seconds_<stage>, seconds, stages_done, stages_missing.
    """
    info = RunInfo.load(Path(run_dir))
    m = info.manifest
    repo = _dict(m.get("repository"))
    mine, chunk = info.counts("mine"), info.counts("chunk")
    row: dict[str, Any] = {"repo": repo.get("name"), "head": repo.get("head")}
    commit_range = _dict(m.get("commit_range"))
    row["commits"] = _int(commit_range.get("commits")) if commit_range else _int(mine.get("commits"))
    if row["commits"] is None and "mine" in info.stages:
        row["commits"] = _int(mine.get("commits")) or 0
    row["unit_changes"] = _int(chunk.get("unit_changes")) if "chunk" in info.stages else None
    splits = info.splits()
    built = "build" in info.stages or bool(splits)
    total_examples = tokens = target = truncated = 0
    for s in SPLITS:
        n = info.examples(s) if built else None
        row[f"examples_{s}"] = n
        total_examples += n or 0
        sp = splits.get(s, {})
        row[f"tokens_{s}"] = _int(sp.get("tokens"))
        tokens += _int(sp.get("tokens")) or 0
        target += _int(sp.get("target_tokens")) or 0
        truncated += _int(sp.get("truncated")) or 0
    for s in splits:  # any splits beyond train/val/test count towards the totals
        if s not in SPLITS:
            sp = splits[s]
            total_examples += _int(sp.get("examples")) or 0
            tokens += _int(sp.get("tokens")) or 0
            target += _int(sp.get("target_tokens")) or 0
            truncated += _int(sp.get("truncated")) or 0
    row["examples"] = total_examples if built else None
    row["tokens"] = tokens if splits else None
    row["trained_token_share"] = round(target / tokens, 4) if tokens else None
    row["truncated"] = truncated if splits else None
    skips = info.skips_by_stage()
    build_skips = skips.get("build", {})
    if built:
        row["dedup_removed"] = sum(v for k, v in build_skips.items() if k.endswith("duplicate"))
        row["leakage_removed"] = sum(v for k, v in build_skips.items() if k.startswith("leak"))
    else:
        row["dedup_removed"] = row["leakage_removed"] = None
    row["skips"] = sum(sum(v.values()) for v in skips.values()) if info.stages else None
    row["context"] = info.context_name()
    items = _int(chunk.get("context_items"))
    row["context_items"] = items
    units = row["unit_changes"]
    row["context_items_per_unit"] = round(items / units, 3) if items is not None and units else None
    without = _int(chunk.get("unit_changes_without_context"))
    if without is None:
        without = _int(chunk.get("context_units_empty"))
    row["unit_changes_with_context"] = units - without if units is not None and without is not None else None
    recall = recall_value(context_block(m, info.stats))
    row["context_recall"] = round(recall, 4) if recall is not None else None
    total_seconds = 0.0
    for s in STAGE_NAMES:
        sec = _num(info.stages.get(s, {}).get("seconds"))
        row[f"seconds_{s}"] = round(sec, 3) if sec is not None else None
        total_seconds += sec or 0.0
    row["seconds"] = round(total_seconds, 3) if info.stages else None
    row["stages_done"] = " ".join(s for s in info.stages)
    row["stages_missing"] = " ".join(info.missing_stages()) if m else None
    return row


# -- streaming the large files ---------------------------------------------------------------

_DECODER = json.JSONDecoder()
_COMMIT = re.compile(rb'"commit"\s*:\s*"([^"\\]*)"')
_TIME = re.compile(rb'"time"\s*:\s*"([^"\\]*)"')
_CONTEXT_KEY = b'"context":'
_RECALL_KEY = b'"context_recall":'
_WS = re.compile(r"\s*")


def _value_at(line: bytes, key: bytes, last: bool = False) -> tuple[bool, Any]:
    """Decode the JSON value after ``key`` (``b'"name":'``) in ``line`` without decoding the rest.

    An unescaped ``"name":`` can only be an object key (inside a JSON string the quotes are
    escaped); ``last`` takes the last one, which is the top-level key when it is the last
    key of the record (``context``). (False, None) when there is no such key or value."""
    idx = line.rfind(key) if last else line.find(key)
    if idx < 0:
        return False, None
    text = line[idx + len(key):].decode("utf-8", "surrogateescape")
    try:
        value, _ = _DECODER.raw_decode(text, _WS.match(text).end())  # type: ignore[union-attr]
    except ValueError:
        return False, None
    return True, value


@dataclass
class ChunkScan:
    """What the report needs from chunks/: per-commit counts and context figures."""

    rows: int = 0
    per_commit: dict[str, int] = field(default_factory=dict)  # commit -> unit changes, in file order
    commit_time: dict[str, str] = field(default_factory=dict)
    context_counts: Counter[int] = field(default_factory=Counter)  # items per unit change -> unit changes
    context_items: int = 0
    context_chars: int = 0
    context_why: Counter[str] = field(default_factory=Counter)
    recall: list[float] = field(default_factory=list)  # per unit change, where rows carry a figure
    malformed: int = 0

    def merge(self, other: ChunkScan) -> None:
        """Add the scan of the lines that follow this one's (the same result as one scan of both)."""
        self.rows += other.rows
        for commit, n in other.per_commit.items():
            if commit in self.per_commit:
                self.per_commit[commit] += n
            else:
                self.per_commit[commit] = n
                self.commit_time[commit] = other.commit_time[commit]
        self.context_counts.update(other.context_counts)
        self.context_items += other.context_items
        self.context_chars += other.context_chars
        self.context_why.update(other.context_why)
        self.recall += other.recall
        self.malformed += other.malformed

    def to_plain(self) -> tuple:
        """Plain containers (for ``marshal``); ``from_plain`` is the inverse."""
        return (self.rows, self.per_commit, self.commit_time, dict(self.context_counts), self.context_items,
                self.context_chars, dict(self.context_why), self.recall, self.malformed)

    @classmethod
    def from_plain(cls, plain: tuple) -> ChunkScan:
        rows, per_commit, commit_time, counts, items, chars, why, recall, malformed = plain
        return cls(rows, per_commit, commit_time, Counter(counts), items, chars, Counter(why), recall, malformed)


def _slow_fields(line: bytes) -> tuple[str, str, Any, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    if not isinstance(row, dict):
        return None
    return str(row.get("commit", "")), str(row.get("time", "")), row.get("context"), row.get("context_recall")


def scan_chunks(path: Path) -> ChunkScan:
    """Stream the chunk stage's output (``chunks/``, its shards in order, or one file); a
    line is decoded whole only when the fast path cannot read it."""
    scan = ChunkScan()
    for shard in shard_paths(path) if path.is_dir() else [path]:
        with open(shard, "rb") as fh:
            scan_lines(fh, scan)
    return scan


def scan_lines(lines: Iterable[bytes], scan: ChunkScan | None = None) -> ChunkScan:
    """Add lines of ``chunks/`` to ``scan`` (a new one by default) and return it."""
    scan = ChunkScan() if scan is None else scan
    for line in lines:
        if not line.strip():
            continue
        mc, mt = _COMMIT.search(line), _TIME.search(line)
        found, ctx = _value_at(line, _CONTEXT_KEY, last=True)
        recall: Any = None
        if mc is None or mt is None or not found or not isinstance(ctx, list):
            slow = _slow_fields(line)
            if slow is None:
                scan.rows += 1
                scan.malformed += 1
                continue
            commit, time, ctx, recall = slow
        else:
            commit = mc.group(1).decode("ascii", "replace")
            time = mt.group(1).decode("utf-8", "replace")
            if _RECALL_KEY in line:
                recall = _value_at(line, _RECALL_KEY)[1]
        _add_row(scan, commit, time, ctx, recall)
    return scan


def scan_rows(rows: Iterable[dict[str, Any]], scan: ChunkScan | None = None) -> ChunkScan:
    """``scan_lines`` of rows not yet written: the same scan, read from the dicts."""
    scan = ChunkScan() if scan is None else scan
    for row in rows:
        _add_row(scan, str(row.get("commit", "")), str(row.get("time", "")), row.get("context"),
                 row.get("context_recall"))
    return scan


def _add_row(scan: ChunkScan, commit: str, time: str, ctx: Any, recall: Any) -> None:
    scan.rows += 1
    if commit in scan.per_commit:
        scan.per_commit[commit] += 1
    else:
        scan.per_commit[commit] = 1
        scan.commit_time[commit] = time
    items = ctx if isinstance(ctx, list) else []
    scan.context_counts[len(items)] += 1
    if items:
        scan.context_items += len(items)
        for it in items:
            if isinstance(it, dict):
                # "tier: detail" (e.g. "direct: Amount"): count by tier
                scan.context_why[str(it.get("why") or "?").split(":", 1)[0]] += 1
                text = it.get("text")
                if isinstance(text, str):
                    scan.context_chars += len(text)
    r = recall_value(recall)
    if r is not None:
        scan.recall.append(r)


def scan_examples(run_dir: Path, split_names: Iterable[str]) -> tuple[dict[str, Counter[str]], list[str]]:
    """Examples per commit per split from ``data/{split}/*.jsonl`` (or ``data/{split}.parquet``),
    reading only the ``commit`` field; the notes say what could not be read."""
    out: dict[str, Counter[str]] = {}
    notes: list[str] = []
    for split in split_names:
        shards, parquet = split_shards(run_dir, split), run_dir / "data" / f"{split}.parquet"
        counts: Counter[str] = Counter()
        if shards:
            for shard in shards:
                with open(shard, "rb") as fh:
                    for line in fh:
                        m = _COMMIT.search(line)
                        if m is not None:
                            counts[m.group(1).decode("ascii", "replace")] += 1
                        elif line.strip():
                            slow = _slow_fields(line)
                            if slow is not None:
                                counts[slow[0]] += 1
        elif parquet.is_file():
            try:
                import pyarrow.parquet as pq
            except ImportError:
                notes.append(f"data/{split}.parquet not read (pyarrow is not installed)")
                continue
            try:
                col = pq.read_table(parquet, columns=["commit"]).column("commit").to_pylist()
            except Exception as exc:  # noqa: BLE001 - a report shows what it can
                notes.append(f"data/{split}.parquet not read ({type(exc).__name__})")
                continue
            counts.update(str(c) for c in col)
        else:
            continue
        out[split] = counts
    return out, notes


@dataclass
class CommitInfo:
    commit: str
    epoch: float
    time: str
    subject: str = ""
    files: int = 0


def _epoch(iso: str) -> float:
    try:
        dt = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return math.nan
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def scan_commits(path: Path) -> list[CommitInfo]:
    commits = []
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict):
                continue
            t = str(row.get("committer_time") or row.get("time") or "")
            epoch = _num(row.get("committer_epoch"))
            files = row.get("files")
            commits.append(CommitInfo(str(row.get("commit", "")), epoch if epoch is not None else _epoch(t), t,
                                      str(row.get("subject") or ""), len(files) if isinstance(files, list) else 0))
    return commits


# -- formatting ------------------------------------------------------------------------------


def esc(x: Any) -> str:
    """HTML-escape text from the data (quotes too: it may end up in an attribute)."""
    return html.escape(x if isinstance(x, str) else str(x), quote=True)


def fmt(x: Any, kind: str = "") -> str:
    """A figure for display: ints with thousands separators, shares as percentages, seconds."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if kind == "share" and isinstance(x, (int, float)):
        return f"{100 * x:.2f}%"
    if kind == "s" and isinstance(x, (int, float)):
        return f"{x:.3f} s"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x == int(x) and abs(x) < 1e15:
            return f"{int(x):,}"
        return f"{x:,.4g}" if abs(x) < 1e4 else f"{x:,.0f}"
    return str(x)


def _f(x: float) -> str:
    """An SVG coordinate."""
    s = f"{x:.1f}"
    return s.removesuffix(".0")


def _nice_max(v: float) -> tuple[float, float]:
    """An axis maximum >= v and a tick step (1, 2 or 5 times a power of ten)."""
    if v <= 0:
        return 1.0, 0.25
    raw = v / 4
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        step = m * mag
        if step >= raw:
            break
    top = step * math.ceil(v / step - 1e-9)
    return top, step


def _tick(x: float, share: bool) -> str:
    if share:
        return f"{100 * x:.0f}%" if abs(100 * x - round(100 * x)) < 1e-6 else f"{100 * x:.1f}%"
    if x == int(x):
        x = int(x)
        if abs(x) >= 1_000_000:
            return f"{x / 1e6:g}M"
        if abs(x) >= 10_000:
            return f"{x / 1e3:g}k"
        return str(x)
    return f"{x:g}"


def _short(label: str, n: int) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def no_data(title: str, message: str) -> str:
    return f'<figure class="chart"><figcaption>{esc(title)}</figcaption><p class="none">{esc(message)}</p></figure>'


def bar_chart(title: str, labels: list[str], series: list[tuple[str, list[float | None], str]], *,
              width: int = 560, height: int = 220, share: bool = False, y_label: str = "",
              tooltips: list[str] | None = None, note: str = "", label_chars: int = 4) -> str:
    """Vertical (grouped) bars: one group per label, one bar per series (name, values, colour).
    None values draw no bar; x labels are thinned out and shortened (to no fewer than
    ``label_chars`` characters) when they do not fit. Returns a <figure> holding an <svg>."""
    if not labels:
        return no_data(title, "no data")
    left, right, top, bottom = 52, 10, 14, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    vmax = max((v for _, vals, _ in series for v in vals if v is not None), default=0.0)
    if share:
        ymax, step = (1.0, 0.25) if vmax > 0.5 or vmax <= 0 else _nice_max(vmax)
    else:
        ymax, step = _nice_max(vmax)
    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    n_ticks = round(ymax / step)
    for i in range(n_ticks + 1):
        v = step * i
        y = top + plot_h - plot_h * v / ymax
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{_f(y)}" y2="{_f(y)}" class="grid"/>')
        parts.append(f'<text x="{left - 4}" y="{_f(y + 3.5)}" class="tick" text-anchor="end">{esc(_tick(v, share))}</text>')
    n, k = len(labels), max(1, len(series))
    group = plot_w / n
    bar_w = max(1.0, min(40.0, group * 0.8 / k))
    def room(chars: float) -> float:
        return 6.2 * chars + 10

    slot = max(40.0, min(room(max(len(lab) for lab in labels)), max(plot_w / n, room(label_chars))))
    every = max(1, math.ceil(n / max(1, int(plot_w // slot))))
    for i, label in enumerate(labels):
        x0 = left + group * i + (group - bar_w * k) / 2
        for j, (name, vals, color) in enumerate(series):
            v = vals[i] if i < len(vals) else None
            if v is None:
                continue
            h = plot_h * min(v, ymax) / ymax if ymax else 0
            tip = tooltips[i] if tooltips else label
            tip += f" — {name}: {fmt(v, 'share' if share else '')}" if name else f": {fmt(v, 'share' if share else '')}"
            parts.append(f'<rect x="{_f(x0 + j * bar_w)}" y="{_f(top + plot_h - h)}" width="{_f(bar_w)}" '
                         f'height="{_f(h)}" fill="{color}"><title>{esc(tip)}</title></rect>')
        if i % every == 0:
            cx = left + group * i + group / 2
            parts.append(f'<text x="{_f(cx)}" y="{top + plot_h + 14}" class="tick" text-anchor="middle">'
                         f'{esc(_short(label, max(4, int(group * every / 6.5))))}</text>')
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" class="axis"/>')
    if y_label:
        parts.append(f'<text x="12" y="{_f(top + plot_h / 2)}" class="tick" text-anchor="middle" '
                     f'transform="rotate(-90 12 {_f(top + plot_h / 2)})">{esc(y_label)}</text>')
    legend_x = left
    if len(series) > 1 or any(name for name, _, _ in series):
        for name, _, color in series:
            if not name:
                continue
            parts.append(f'<rect x="{_f(legend_x)}" y="{height - 14}" width="10" height="10" fill="{color}"/>'
                         f'<text x="{_f(legend_x + 14)}" y="{height - 5}" class="tick">{esc(name)}</text>')
            legend_x += 24 + 7 * len(name)
    parts.append("</svg>")
    cap = esc(title) + (f' <span class="note">{esc(note)}</span>' if note else "")
    return f'<figure class="chart"><figcaption>{cap}</figcaption>{"".join(parts)}</figure>'


def hbar_chart(title: str, labels: list[str], values: list[float], *, color: str = BAR, width: int = 560,
               note: str = "") -> str:
    """Horizontal bars with their labels on the left (long category names: skip reasons)."""
    if not labels:
        return no_data(title, "no data")
    label_w = min(260, 12 + 6.6 * max(len(_short(lab, 40)) for lab in labels))
    row_h, top = 18, 6
    height = top + row_h * len(labels) + 22
    plot_w = width - label_w - 60
    vmax, step = _nice_max(max(values) if values else 0)
    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for i, (label, v) in enumerate(zip(labels, values)):
        y = top + row_h * i
        w = plot_w * v / vmax if vmax else 0
        parts.append(f'<text x="{_f(label_w - 6)}" y="{_f(y + 12)}" class="tick" text-anchor="end">'
                     f'{esc(_short(label, 40))}</text>')
        parts.append(f'<rect x="{_f(label_w)}" y="{_f(y + 2)}" width="{_f(w)}" height="{row_h - 5}" fill="{color}">'
                     f'<title>{esc(label)}: {esc(fmt(v))}</title></rect>')
        parts.append(f'<text x="{_f(label_w + w + 4)}" y="{_f(y + 12)}" class="tick">{esc(fmt(v))}</text>')
    axis_y = top + row_h * len(labels) + 2
    parts.append(f'<line x1="{_f(label_w)}" x2="{_f(label_w + plot_w)}" y1="{axis_y}" y2="{axis_y}" class="axis"/>')
    for i in range(round(vmax / step) + 1):
        x = label_w + plot_w * step * i / vmax
        parts.append(f'<text x="{_f(x)}" y="{axis_y + 13}" class="tick" text-anchor="middle">{esc(_tick(step * i, False))}</text>')
    parts.append("</svg>")
    cap = esc(title) + (f' <span class="note">{esc(note)}</span>' if note else "")
    return f'<figure class="chart"><figcaption>{cap}</figcaption>{"".join(parts)}</figure>'


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;margin:24px auto;max-width:1200px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d9e2ec;padding-bottom:4px}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 10px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f5f7fa;font-weight:600}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.charts{display:flex;flex-wrap:wrap;gap:12px 28px}figure.chart{margin:6px 0}figcaption{font-weight:600;margin-bottom:4px}
svg text.tick{font-size:11px;fill:#52606d}svg line.grid{stroke:#e4e7eb}svg line.axis{stroke:#7b8794}
.none{color:#7b8794;font-style:italic;margin:4px 0 12px}.note{color:#7b8794;font-weight:400;font-size:12px}
.bad{color:#b42318;font-weight:600}.ok{color:#067647;font-weight:600}details{margin:8px 0}summary{cursor:pointer;font-weight:600}
"""


def page(title: str, body: str) -> str:
    """A complete HTML document: inline CSS, no scripts, nothing loaded from elsewhere."""
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def table(header: list[str], rows: list[list[Any]], numeric: Iterable[int] = ()) -> str:
    """A table of already-formatted cells; cells are escaped unless wrapped in :class:`Raw`."""
    num = set(numeric)

    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="n"' if i in num else ""
        return f"<{tag}{cls}>{v.html if isinstance(v, Raw) else esc(v)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True)
class Raw:
    """Markup a table cell holds as is (built from escaped parts)."""

    html: str


# -- the report ------------------------------------------------------------------------------


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(d, dict) and d:
        out = []
        for k in d:
            out.extend(_flatten(d[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return [(prefix, json.dumps(d, ensure_ascii=False, sort_keys=True) if not isinstance(d, str) else d)]


def _hist_label(lo: Any, hi: Any, first: bool, last: bool) -> str:
    """Bins are (lo, hi] (the first includes 0; the last also holds anything longer)."""
    if last and not first:
        return f">{fmt(lo)}"
    return f"≤{fmt(hi)}"


def _length_histograms(info: RunInfo) -> str:
    splits = info.splits()
    if not splits:
        return no_data("Token length per example", "no stats.json (the build stage did not run)")
    figs = []
    for s in info.split_names():
        hist = _dict(splits[s].get("length_histogram"))
        edges, counts = hist.get("edges"), hist.get("counts")
        title = f"Token length per example — {s}"
        if not isinstance(edges, list) or not isinstance(counts, list) or len(edges) != len(counts) + 1:
            figs.append(no_data(title, "no length histogram"))
            continue
        labels = [_hist_label(edges[i], edges[i + 1], i == 0, i == len(counts) - 1) for i in range(len(counts))]
        vals = [float(_num(c) or 0) for c in counts]
        n = _int(splits[s].get("examples"))
        figs.append(bar_chart(title, labels, [("", vals, SPLIT_COLORS.get(s, BAR))], width=380, height=200,
                              y_label="examples", note=f"{fmt(n)} examples" if n is not None else "",
                              tooltips=[f"{lab} tokens" for lab in labels]))
    return '<div class="charts">' + "".join(figs) + "</div>"


def _context_section(info: RunInfo, scan: ChunkScan | None) -> str:
    strategy = info.context_name()
    out = []
    if scan is None:
        return no_data("Context", "no chunks/ (the chunk stage did not run)")
    if scan.context_items == 0:
        msg = "no context" + (f" (context={strategy}: no unit change got a context item)"
                              if strategy and strategy != "none" else f" (context={strategy or 'null'})")
        out.append(no_data("Context items per unit change", msg))
    else:
        counts = scan.context_counts
        top = max(counts)
        cap = 20
        labels, vals = [], []
        for k in range(min(top, cap) + 1):
            labels.append(str(k))
            vals.append(float(counts.get(k, 0)))
        if top > cap:
            labels.append(f"{cap + 1}+")
            vals.append(float(sum(v for k, v in counts.items() if k > cap)))
        with_ctx = scan.rows - counts.get(0, 0)
        note = (f"{fmt(scan.context_items)} items; {fmt(with_ctx)} of {fmt(scan.rows)} unit changes have context; "
                f"mean {scan.context_items / scan.rows:.2f} per unit change")
        out.append(bar_chart(f"Context items per unit change (context={strategy or '?'})", labels,
                             [("", vals, BAR)], y_label="unit changes", note=note,
                             tooltips=[f"{lab} context items" for lab in labels]))
        if scan.context_why:
            why = sorted(scan.context_why.items(), key=lambda kv: (-kv[1], kv[0]))
            out.append(hbar_chart("Context items by kind of reason (why)", [k for k, _ in why], [float(v) for _, v in why],
                                  width=420))
    # recall: per unit change figures if the rows carry them, else the run's histogram
    block = context_block(info.manifest, info.stats)
    overall = recall_value(block)
    rhist = _recall_histogram(block)
    title = "Context recall per unit change"
    if scan.recall:
        bins = [0] * 10
        for r in scan.recall:
            bins[min(9, max(0, int(r * 10)))] += 1
        mean = sum(scan.recall) / len(scan.recall)
        note = f"{fmt(len(scan.recall))} unit changes; mean {mean:.3f}"
        if overall is not None:
            note += f"; run recall {overall:.4f}"
        out.append(bar_chart(title, _share_bins(10),
                             [("", [float(b) for b in bins], BAR2)], y_label="unit changes", note=note))
    elif rhist is not None and sum(rhist[1]) > 0:
        labels, vals = rhist
        note = f"{fmt(int(sum(vals)))} unit changes that name definitions"
        if overall is not None:
            note += f"; run recall {overall:.4f} (share of all references found)"
        out.append(bar_chart(title, labels, [("", vals, BAR2)], y_label="unit changes", note=note))
    elif overall is not None:
        out.append(no_data(title, f"recall {overall:.4f} (no per-unit-change figures to plot)"))
    elif block is not None and "recall" in block:
        out.append(no_data(title, "no unit change names a definition the language index resolves: no recall figure"))
    else:
        out.append(no_data(title, "no context recall figures in this run" if scan.context_items else "no context"))
    return '<div class="charts">' + "".join(out) + "</div>" + (_context_table(block) if block else "")


def _recall_histogram(block: dict[str, Any] | None) -> tuple[list[str], list[float]] | None:
    """Labels and counts of a recall histogram: ``recall_histogram`` (equal buckets over
    [0, 1], the last one closed) or ``histogram`` {edges, counts}."""
    if not block:
        return None
    rh = block.get("recall_histogram")
    if isinstance(rh, list) and rh and all(_num(x) is not None for x in rh):
        n = len(rh)
        return _share_bins(n), [float(x) for x in rh]
    h = _dict(block.get("histogram"))
    e, c = h.get("edges"), h.get("counts")
    if isinstance(e, list) and isinstance(c, list) and len(e) == len(c) + 1 and c:
        return [f"{fmt(e[i])}–{fmt(e[i + 1])}" for i in range(len(c))], [float(_num(x) or 0) for x in c]
    return None


def _share_bins(n: int) -> list[str]:
    """Labels of n equal bins over [0, 1]: "0–.1", ".1–.2", ..., ".9–1"."""
    def edge(x: float) -> str:
        return f"{x:.2f}".rstrip("0").rstrip(".").removeprefix("0") or "0"
    return [f"{edge(i / n)}–{edge((i + 1) / n)}" for i in range(n)]


def _context_table(block: dict[str, Any]) -> str:
    rows = [[k, v] for k, v in _flatten(block)]
    return "<details><summary>Context figures</summary>" + table(["figure", "value"], rows) + "</details>"


def _time_chart(commits: list[CommitInfo], scan: ChunkScan | None,
                examples: dict[str, Counter[str]]) -> str:
    title = "Unit changes and examples per commit over time"
    if not commits:
        return no_data(title, "no commits")
    commits = sorted(commits, key=lambda c: (c.epoch if not math.isnan(c.epoch) else math.inf,))
    per_commit = scan.per_commit if scan else {}
    ex_total: Counter[str] = Counter()
    for cnt in examples.values():
        ex_total.update(cnt)
    series_names = []
    if scan is not None:
        series_names.append(("unit changes", BAR))
    if examples:
        series_names.append(("examples", BAR2))
    if not series_names:
        return no_data(title, "no chunks/ (the chunk stage did not run)")
    max_bars = 100
    if len(commits) <= max_bars:
        labels = [c.time[:10] for c in commits]
        tips = [f"{c.commit[:12]} {c.time} {c.subject}" for c in commits]
        uc = [float(per_commit.get(c.commit, 0)) for c in commits]
        ex = [float(ex_total.get(c.commit, 0)) for c in commits]
        note = f"one bar per commit, {len(commits)} commits in time order"
    else:
        valid = [c for c in commits if not math.isnan(c.epoch)]
        t0, t1 = (valid[0].epoch, valid[-1].epoch) if valid else (0.0, 1.0)
        span = (t1 - t0) or 1.0
        n_bins = max_bars
        edges = [t0 + span * i / n_bins for i in range(n_bins + 1)]
        n_c, s_uc, s_ex = [0] * n_bins, [0] * n_bins, [0] * n_bins
        for c in valid:
            b = min(n_bins - 1, max(0, bisect.bisect_right(edges, c.epoch) - 1))
            n_c[b] += 1
            s_uc[b] += per_commit.get(c.commit, 0)
            s_ex[b] += ex_total.get(c.commit, 0)
        labels, tips, uc, ex = [], [], [], []
        for b in range(n_bins):
            d0 = datetime.fromtimestamp(edges[b], timezone.utc).strftime("%Y-%m-%d")
            d1 = datetime.fromtimestamp(edges[b + 1], timezone.utc).strftime("%Y-%m-%d")
            labels.append(d0)
            tips.append(f"{d0} to {d1}: {n_c[b]} commits")
            uc.append(s_uc[b] / n_c[b] if n_c[b] else None)  # type: ignore[arg-type]
            ex.append(s_ex[b] / n_c[b] if n_c[b] else None)  # type: ignore[arg-type]
        note = f"mean per commit in {n_bins} equal time bins, {len(commits)} commits"
    series = []
    if scan is not None:
        series.append(("unit changes", uc, BAR))
    if examples:
        series.append(("examples", ex, BAR2))
    return bar_chart(title, labels, series, width=1100, height=260, y_label="per commit", tooltips=tips, note=note,
                     label_chars=10)


def _busiest_commits(commits: list[CommitInfo], scan: ChunkScan | None, examples: dict[str, Counter[str]]) -> str:
    if not commits or scan is None:
        return ""
    ex_total: Counter[str] = Counter()
    for cnt in examples.values():
        ex_total.update(cnt)
    ranked = sorted(commits, key=lambda c: (-scan.per_commit.get(c.commit, 0), c.epoch, c.commit))[:10]
    rows = [[c.commit[:12], c.time, scan.per_commit.get(c.commit, 0), ex_total.get(c.commit, 0) if examples else "–",
             c.files, c.subject] for c in ranked]
    return ("<details><summary>Commits with the most unit changes</summary>"
            + table(["commit", "time", "unit changes", "examples", "files", "subject"], rows, numeric=(2, 3, 4))
            + "</details>")


def _skips_chart(info: RunInfo) -> str:
    pairs = []
    for stage, skips in info.skips_by_stage().items():
        for reason, n in skips.items():
            if n:
                pairs.append((f"{stage}: {reason}", n))
    pairs.sort(key=lambda kv: (-kv[1], kv[0]))
    if not pairs:
        return no_data("Skips by reason", "nothing was skipped")
    total = sum(n for _, n in pairs)
    return hbar_chart("Skips by reason", [k for k, _ in pairs], [float(v) for _, v in pairs], color=BAR2,
                      note=f"{fmt(total)} in all", width=720)


def _headline(info: RunInfo, row: dict[str, Any], scan: ChunkScan | None) -> str:
    m = info.manifest
    repo = _dict(m.get("repository"))
    cr = _dict(m.get("commit_range"))
    plugins = _dict(m.get("plugins"))
    splits = info.split_names()
    rows: list[list[Any]] = []
    rows.append(["Repository", Raw(f'{esc(repo.get("name", "–"))} <span class="mono">{esc(repo.get("path", ""))}</span>')])
    rows.append(["Revision", Raw(f'{esc(repo.get("rev", "–"))} at <span class="mono">{esc(str(repo.get("head") or "–")[:12])}</span>'
                                 + (" (shallow clone)" if repo.get("shallow") else ""))])
    if cr:
        rows.append(["Commit range", f'{cr.get("first_time", "–")} → {cr.get("last_time", "–")}'])
    rows.append(["Commits", fmt(row["commits"])])
    rows.append(["Unit changes", fmt(row["unit_changes"])])

    def per_split(key: str, kind: str = "") -> str:
        parts = [f"{s} {fmt(info.splits().get(s, {}).get(key), kind)}" for s in splits]
        return " · ".join(parts)

    if row["examples"] is not None:
        ex = " · ".join(f"{s} {fmt(row.get(f'examples_{s}', info.examples(s)))}" for s in (splits or SPLITS))
        rows.append(["Examples", f"{fmt(row['examples'])} ({ex})"])
    if row["tokens"] is not None:
        rows.append(["Tokens", f"{fmt(row['tokens'])} ({per_split('tokens')})"])
        rows.append(["Trained-token share", f"{fmt(row['trained_token_share'], 'share')} ({per_split('trained_token_share', 'share')})"])
        rows.append(["Truncated examples", f"{fmt(row['truncated'])} ({per_split('truncated')})"])
    build_skips = info.skips_by_stage().get("build", {})
    if row["dedup_removed"] is not None:
        detail = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(build_skips.items()) if k.endswith("duplicate"))
        rows.append(["Dedup removals", f"{fmt(row['dedup_removed'])}" + (f" ({detail})" if detail else "")])
        detail = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(build_skips.items()) if k.startswith("leak"))
        rows.append(["Leakage removals", f"{fmt(row['leakage_removed'])}" + (f" ({detail})" if detail else "")])
    by_stage = ", ".join(f"{s} {fmt(sum(v.values()))}" for s, v in info.skips_by_stage().items())
    rows.append(["Skips", f"{fmt(row['skips'])}" + (f" ({by_stage})" if by_stage else "")])
    if scan is not None:
        ctx = info.context_name() or "none"
        if scan.context_items:
            with_ctx = scan.rows - scan.context_counts.get(0, 0)
            text = (f"{ctx}: {fmt(scan.context_items)} items, {fmt(with_ctx)} of {fmt(scan.rows)} unit changes "
                    f"with context, {fmt(scan.context_chars)} characters")
        else:
            text = f"{ctx}: no context"
        if row["context_recall"] is not None:
            text += f"; recall {row['context_recall']:.4f}"
        rows.append(["Context", text])
    wall = " · ".join(f"{s} {fmt(row.get(f'seconds_{s}'), 's')}" for s in STAGE_NAMES if row.get(f"seconds_{s}") is not None)
    rows.append(["Wall time", f"{fmt(row['seconds'], 's')}" + (f" ({wall})" if wall else "")])
    missing = info.missing_stages() if m else []
    done = esc(" → ".join(info.stages) or "none")
    if not m:
        status = '<span class="bad">no MANIFEST.json</span>'
    elif missing:
        status = f'<span class="bad">incomplete: {esc(", ".join(missing))} not finished</span>'
    else:
        status = '<span class="ok">complete</span>'
    rows.append(["Stages", Raw(f"{done} — {status}")])
    if plugins:
        rows.append(["Plugins", ", ".join(f"{k}={v}" for k, v in plugins.items())])
    tok = _dict(m.get("tokenizer"))
    if tok:
        rows.append(["Tokenizer", f"{tok.get('plugin', '–')} (vocabulary {fmt(tok.get('vocab_size'))})"])
    return table(["figure", "value"], rows)


def _split_table(info: RunInfo) -> str:
    splits = info.splits()
    if not splits:
        return ""
    rows = []
    for s in info.split_names():
        sp = splits[s]
        changes = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(_dict(sp.get("changes")).items()))
        rows.append([s, fmt(sp.get("examples")), fmt(sp.get("commits")), fmt(sp.get("tokens")),
                     fmt(sp.get("target_tokens")), fmt(sp.get("trained_token_share"), "share"),
                     fmt(sp.get("truncated")), changes])
    return table(["split", "examples", "commits", "tokens", "target tokens", "trained share", "truncated", "changes"],
                 rows, numeric=range(1, 7))


def _stage_tables(info: RunInfo) -> str:
    out = []
    for name, st in info.stages.items():
        counts = _dict(st.get("counts"))
        rows = [[k, fmt(v) if not isinstance(v, (dict, list)) else json.dumps(v, sort_keys=True)]
                for k, v in sorted(counts.items())]
        rows += [[f"skipped: {k}", fmt(v)] for k, v in sorted(_dict(st.get("skips")).items())]
        rows.append(["seconds", fmt(_num(st.get("seconds")), "s")])
        extra = {k: v for k, v in st.items() if k not in ("counts", "skips", "seconds", "outputs")}
        rows += [[k, v] for k, v in _flatten(extra)] if extra else []
        outs = [[f, fmt(_dict(o).get("rows")), fmt(_dict(o).get("bytes")), Raw(f'<span class="mono">{esc(str(_dict(o).get("sha256", ""))[:16])}</span>')]
                for f, o in _dict(st.get("outputs")).items()]
        out.append(f"<details><summary>Stage {esc(name)}</summary>" + table(["counter", "value"], rows, numeric=(1,))
                   + (table(["output", "rows", "bytes", "sha256"], outs, numeric=(1, 2)) if outs else "") + "</details>")
    if info.stats and info.stats.get("dedup"):
        rows = [[k, fmt(v)] for k, v in sorted(_dict(info.stats.get("dedup")).items())]
        out.append("<details><summary>Deduplication</summary>" + table(["figure", "value"], rows, numeric=(1,)) + "</details>")
    return "".join(out)


def render_report(run_dir: Path, scan: ChunkScan | None = None,
                  examples: dict[str, Counter[str]] | None = None) -> str:
    """The report's HTML text (see :func:`write_report`); ``scan`` is the scan of the run's
    chunks/ and ``examples`` the examples per commit per split when the caller has them
    already (the chunk and build stages do)."""
    run_dir = Path(run_dir)
    info = RunInfo.load(run_dir)
    row = summary_row(run_dir)
    notes: list[str] = []
    chunks = run_dir / CHUNKS_DIR
    if scan is None or not info.ran("chunk"):
        scan = scan_chunks(chunks) if chunks.is_dir() and info.ran("chunk") else None
    if scan is not None and scan.malformed:
        notes.append(f"chunks/: {scan.malformed} lines could not be read")
    commits_path = run_dir / "commits.jsonl"
    commits = scan_commits(commits_path) if commits_path.is_file() and info.ran("mine") else []
    if scan is not None:  # unit changes of commits commits.jsonl does not list (or there is none)
        known = {c.commit for c in commits}
        commits += [CommitInfo(c, _epoch(t), t) for c, t in scan.commit_time.items() if c not in known]
    if not info.ran("build"):
        examples = {}
    elif examples is None:
        examples, ex_notes = scan_examples(run_dir, info.split_names() or SPLITS)
        notes += ex_notes
    name = _dict(info.manifest.get("repository")).get("name") or run_dir.name
    body = [f"<h1>commitforge run report — {esc(name)}</h1>",
            f'<p class="note mono">{esc(str(run_dir))}</p>']
    if not info.manifest:
        body.append('<p class="bad">This directory has no readable MANIFEST.json: the run did not finish a stage.</p>')
    body.append("<h2>Headline</h2>" + _headline(info, row, scan))
    body.append(_split_table(info))
    body.append("<h2>Token lengths</h2>" + _length_histograms(info))
    body.append("<h2>Context</h2>" + _context_section(info, scan))
    body.append("<h2>Commits over time</h2>" + _time_chart(commits, scan, examples) + _busiest_commits(commits, scan, examples))
    body.append("<h2>Skips</h2>" + _skips_chart(info))
    body.append("<h2>Details</h2>" + _stage_tables(info))
    versions = _dict(info.manifest.get("versions"))
    if versions:
        body.append("<details><summary>Versions</summary>" + table(["package", "version"], sorted(
            [k, "–" if v is None else v] for k, v in versions.items())) + "</details>")
    cfg = info.config()
    if cfg:
        body.append("<details><summary>Resolved config</summary>" + table(["key", "value"], [list(kv) for kv in _flatten(cfg)])
                    + "</details>")
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    return page(f"commitforge report — {name}", "\n".join(b for b in body if b))


def write_report(run_dir: Path, scan: ChunkScan | None = None,
                 examples: dict[str, Counter[str]] | None = None) -> Path:
    """Write ``run_dir/report.html`` (atomically) and return its path (``scan``,
    ``examples``: see :func:`render_report`)."""
    run_dir = Path(run_dir)
    text = render_report(run_dir, scan, examples)
    path = run_dir / REPORT_FILE
    with atomic_write(path) as fh:
        fh.write(text.encode("utf-8", "backslashreplace"))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m core.report RUN_DIR...``: (re)write the reports of finished runs."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m core.report RUN_DIR [RUN_DIR...]", file=sys.stderr)
        return 2
    for a in args:
        print(write_report(Path(a)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
