"""Dataset writers: ``jsonl``, ``parquet``, ``hf`` (datasets ``save_to_disk``), ``torch`` and ``legacy``.

Every writer has one method::

    write(out_dir, splits, stats) -> {path relative to out_dir: rows}

``splits`` maps a split name ("train", "val", "test") to its examples (dicts with the keys
of :data:`FIELDS`, sequences unpadded lists of ints); an empty split still gets its file, so
a run's file set does not depend on the data. The built-in writers set ``lazy_rows = True``:
the build stage then hands each split as a :class:`core.examples.ExampleRows`, a read-only
sequence that builds each example's lists when it is read, so a writer going through the
rows one at a time holds one example as Python ints, not all of them. Every writer except ``legacy`` also writes ``stats.json``
(rows: 1); ``legacy`` writes the file names the older naive pipeline's trainers read.

Files are written with :func:`core.files.atomic_write` (the ``hf`` directory through a
temporary sibling directory renamed into place). If a writer fails midway it removes the
files it already put in place during that call, so a failed write never leaves a partial
set of outputs under final names. ``stats.json`` is written last.

Strings: paths decoded with ``surrogateescape`` may hold lone surrogates. JSON outputs
(``jsonl``, ``legacy``, ``stats.json``) keep them as ``\\udcXX`` escapes, which round-trip;
``torch`` keeps them (pickle round-trips them); Arrow cannot store them, so ``parquet`` and
``hf`` store the same escape as literal text (``\\udcff``, six characters).

Determinism: the same input (and library versions) gives byte-identical files for every
writer: parquet files hold no timestamps (``created_by`` names the pyarrow version),
``torch.save`` archives neither, and ``hf``'s ``state.json`` fingerprint is one datasets
derives from the content of an in-memory dataset (for ``hf`` that is datasets' behaviour,
not a promise of its API).

Empty splits: ``parquet`` writes a file with the schema and no row group (``pyarrow``,
``load_dataset(..., streaming=True)`` read it; datasets' non-streaming ``load_dataset``
refuses any split with no rows, whatever the file); ``hf`` saves it as one empty shard so
``load_from_disk`` works.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import CommitforgeError
from core.examples import ExampleRows, WrittenShard, packed_json_line, packed_rows
from core.files import atomic_write, default_mode, fast_json_line, remember_digest
from core.hookspecs import hookimpl

# The keys of every example, in column order.
FIELDS = (
    "id", "split", "input_ids", "attention_mask", "labels", "segments", "n_tokens", "n_target_tokens",
    "repo", "commit", "time", "path", "qualname", "change", "kind",
)
SEQUENCE_FIELDS = ("input_ids", "attention_mask", "labels")
INT_FIELDS = ("n_tokens", "n_target_tokens")
STRING_FIELDS = tuple(f for f in FIELDS if f not in SEQUENCE_FIELDS + INT_FIELDS + ("segments",))

STATS_FILE = "stats.json"
LEGACY_DATA = "training_data_enhanced_{split}.json"
LEGACY_STATS = "dataset_stats_enhanced.json"

_SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")


# -- shared helpers ------------------------------------------------------------------------
def _need(module: str, writer: str, extra: str) -> Any:
    """Import a heavy optional dependency, or fail naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise CommitforgeError(
            f"the {writer} writer needs {module.split('.')[0]}: pip install 'commitforge[{extra}]' "
            f"(or choose another writer, e.g. writer=jsonl)"
        ) from exc


def _check_splits(splits: dict[str, list[dict]]) -> None:
    for name in splits:
        if not isinstance(name, str) or not _SPLIT_NAME.fullmatch(name):
            raise CommitforgeError(f"split name {name!r} cannot be a file name; use letters, digits and '_' only")


def _json_document(obj: Any) -> bytes:
    """A whole JSON document (indent=2, sorted keys), encoded like :func:`json_line`."""
    text = json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True)
    return text.encode("utf-8", "backslashreplace") + b"\n"


def _arrow_str(s: str) -> str:
    """Arrow strings must be valid UTF-8: lone surrogates become their ``\\udcXX`` escape."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _arrow_columns(rows: Iterable[dict]) -> dict[str, list]:
    """Column lists for Arrow: segments as structs, strings valid UTF-8 (one pass over the rows)."""
    cols: dict[str, list] = {f: [] for f in FIELDS}
    for r in rows:
        for f in FIELDS:
            if f in STRING_FIELDS:
                cols[f].append(_arrow_str(r[f]))
            elif f == "segments":
                cols[f].append([{"name": _arrow_str(n), "start": s, "end": e} for n, s, e in r[f]])
            else:
                cols[f].append(r[f])
    return cols


class _Outputs:
    """The files one ``write`` call put in place: rows per relative path, removed on failure."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.rows: dict[str, int] = {}
        self.placed: list[Path] = []

    @contextmanager
    def file(self, rel: str, rows: int, background: bool = False) -> Iterator[Any]:
        """An output file (see ``core.files.atomic_write``; ``background``: write-only)."""
        path = self.out_dir / rel
        with atomic_write(path, background) as fh:
            yield fh
        self.placed.append(path)
        self.rows[rel] = rows

    def link(self, rel: str, source: Path, sha256: str, size: int, rows: int) -> bool:
        """Put a hard link to ``source`` (a finished file nobody changes in place, whose
        sha256 and size are known) at ``rel``; False when it cannot be (another file
        system, no hard links): the caller writes the file instead."""
        path = self.out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.link.tmp"  # as atomic_write names its own
        try:
            tmp.unlink(missing_ok=True)
            os.link(source, tmp)
            if os.stat(tmp).st_size != size:
                raise OSError(f"{source} changed")
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return False
        remember_digest(path, sha256, size)
        self.placed.append(path)
        self.rows[rel] = rows
        return True

    def put(self, path: Path, rows: dict[str, int]) -> None:
        """Record an output put in place by other means (the ``hf`` directory)."""
        self.placed.append(path)
        self.rows.update(rows)

    def stats(self, stats: dict, rel: str = STATS_FILE) -> None:
        with self.file(rel, 1) as fh:
            fh.write(_json_document(stats))

    def rollback(self) -> None:
        for path in self.placed:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _writing(out_dir: Path, splits: dict[str, list[dict]], body: Callable[[_Outputs], None]) -> dict[str, int]:
    _check_splits(splits)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = _Outputs(out_dir)
    try:
        body(outputs)
    except BaseException:
        outputs.rollback()
        raise
    return outputs.rows


# -- jsonl ---------------------------------------------------------------------------------
@dataclass
class JsonlWriterConfig:
    name: str = "jsonl"
    shard_mb: float = 16.0  # shards of about this size (MiB; from half to twice it, see core.kept_lines)


class JsonlWriter:
    """``data/{split}/00000.jsonl``, ``00001.jsonl``…: each split's examples in order, one
    per line with every key, in shards of about ``shard_mb``. Where a shard ends depends
    on its own lines only (core.kept_lines.ends_shard): a run whose split holds the same
    examples as an earlier run's except in places makes the same shards elsewhere, and
    links them when the cache kept them."""

    lazy_rows = True  # each split may be an ExampleRows: read once, in order or by slices
    # the build stage keeps the shards, copies the line of an example built before and
    # links a whole shard written before (see core.kept_lines)
    line_shards = "data/{split}/{shard:05d}.jsonl"

    def __init__(self, cfg: JsonlWriterConfig | None = None):
        self.cfg = cfg or JsonlWriterConfig()
        try:
            mb = float(self.cfg.shard_mb)
        except (TypeError, ValueError):
            mb = 0.0
        if not 0 < mb < 1 << 20:  # nan and inf too
            raise CommitforgeError(f"writer.shard_mb={self.cfg.shard_mb!r} must be a positive number of MiB, "
                                   "below 1048576 (e.g. writer.shard_mb=16)")
        self.shard_bytes = max(1, int(mb * (1 << 20)))

    def write(self, out_dir: Path, splits: dict[str, list[dict]], stats: dict) -> dict[str, int]:
        def body(out: _Outputs) -> None:
            for split, rows in splits.items():
                if isinstance(rows, ExampleRows):  # orjson writes the arrays as lists
                    self._write_rows(out, split, rows, packed_json_line)
                else:  # plain rows: the same shards, each line fast_json_line's
                    self._write_rows(out, split, ExampleRows(rows), None)
            out.stats(stats)

        return _writing(out_dir, splits, body)

    def _write_rows(self, out: _Outputs, split: str, rows: ExampleRows,
                    packed_line: Callable[[dict[str, Any]], bytes] | None) -> None:
        keeper, lines = rows.kept_lines()
        shards: list[WrittenShard] = []
        at, n = 0, len(rows)
        while not shards or at < n:  # an empty split is one empty shard
            k = len(shards)
            rel = self.line_shards.format(split=split, shard=k)
            linked = keeper.whole_at(lines, at) if keeper is not None and at < n else None
            if linked is not None:
                f, count = linked
                if out.link(rel, *keeper.link_source(f), rows=count):
                    shards.append(WrittenShard(rel, k, at, at + count, None, f))
                    at += count
                    continue
            with out.file(rel, 0, background=True) as fh:
                ends = rows.write_lines(fh, fast_json_line, packed_line, at, self.shard_bytes)
            out.rows[rel] = len(ends)
            shards.append(WrittenShard(rel, k, at, at + len(ends), ends, None))
            at += len(ends)
        rows.shards = shards
        self._drop_others(out, split, len(shards))

    def _drop_others(self, out: _Outputs, split: str, count: int) -> None:
        """Remove shards of ``split`` beyond the ``count`` written (an earlier run in the
        same directory, killed before its manifest listed them, wrote more)."""
        folder = (out.out_dir / self.line_shards.format(split=split, shard=0)).parent
        mine = {Path(self.line_shards.format(split=split, shard=k)).name for k in range(count)}
        for path in folder.glob("*.jsonl"):
            if path.name not in mine and path.stem.isdigit():
                path.unlink(missing_ok=True)


# -- parquet -------------------------------------------------------------------------------
PARQUET_COMPRESSIONS = ("none", "snappy", "gzip", "brotli", "lz4", "zstd")


@dataclass
class ParquetWriterConfig:
    name: str = "parquet"
    compression: str = "zstd"  # none, snappy, gzip, brotli, lz4, zstd
    row_group_size: int = 1000  # rows per row group


def arrow_schema(pa: Any) -> Any:
    """The explicit Arrow schema of an example table (``parquet``; ``hf`` features match it)."""
    ints = pa.list_(pa.int32())
    segment = pa.struct([("name", pa.string()), ("start", pa.int32()), ("end", pa.int32())])
    types = {"input_ids": ints, "attention_mask": ints, "labels": ints, "segments": pa.list_(segment),
             "n_tokens": pa.int32(), "n_target_tokens": pa.int32()}
    return pa.schema([pa.field(f, types.get(f, pa.string()), nullable=False) for f in FIELDS])


class ParquetWriter:
    """``data/{split}.parquet`` with an explicit schema, loadable by ``datasets.load_dataset("parquet")``."""

    lazy_rows = True  # each split may be an ExampleRows: read once, in order or by slices

    def __init__(self, cfg: ParquetWriterConfig | None = None):
        self.cfg = cfg or ParquetWriterConfig()
        if self.cfg.compression.lower() not in PARQUET_COMPRESSIONS:
            raise CommitforgeError(f"writer.compression={self.cfg.compression!r} is not a parquet codec; "
                                   f"use one of: {', '.join(PARQUET_COMPRESSIONS)}")
        if self.cfg.row_group_size < 1:
            raise CommitforgeError(f"writer.row_group_size={self.cfg.row_group_size} must be at least 1")
        self.pa = _need("pyarrow", "parquet", "data")
        self.pq = _need("pyarrow.parquet", "parquet", "data")
        self.schema = arrow_schema(self.pa)

    def _write_split(self, fh: Any, rows: list[dict]) -> None:
        pa, pq, size = self.pa, self.pq, self.cfg.row_group_size
        # no timestamps go into a parquet file; created_by names the pyarrow version only
        with pq.ParquetWriter(fh, self.schema, compression=self.cfg.compression.lower(),
                              write_statistics=True, store_schema=True) as w:
            # an empty split is a file with the schema and no row group: datasets' parquet
            # reader takes its batch size from the first row group, and an empty one breaks it
            for start in range(0, len(rows), size):
                chunk = rows[start:start + size]
                w.write_table(pa.Table.from_pydict(_arrow_columns(chunk), schema=self.schema), row_group_size=size)

    def write(self, out_dir: Path, splits: dict[str, list[dict]], stats: dict) -> dict[str, int]:
        def body(out: _Outputs) -> None:
            for split, rows in splits.items():
                with out.file(f"data/{split}.parquet", len(rows)) as fh:
                    self._write_split(fh, rows)
            out.stats(stats)

        return _writing(out_dir, splits, body)


# -- hf ------------------------------------------------------------------------------------
@dataclass
class HfWriterConfig:
    name: str = "hf"


def hf_features(datasets: Any) -> Any:
    """``datasets.Features`` matching :func:`arrow_schema`."""
    Value = datasets.Value
    ints = datasets.Sequence(Value("int32"))
    # a Python list of a dict is a list of structs in every datasets version
    # (Sequence of a dict would become a struct of lists)
    segments = [{"name": Value("string"), "start": Value("int32"), "end": Value("int32")}]
    types = {"input_ids": ints, "attention_mask": ints, "labels": ints, "segments": segments,
             "n_tokens": Value("int32"), "n_target_tokens": Value("int32")}
    return datasets.Features({f: types.get(f, Value("string")) for f in FIELDS})


class HfWriter:
    """A ``datasets.DatasetDict`` saved with ``save_to_disk`` into ``hf/`` (``datasets.load_from_disk``)."""

    lazy_rows = True  # each split may be an ExampleRows: read once, in order or by slices

    def __init__(self, cfg: HfWriterConfig | None = None):
        self.cfg = cfg or HfWriterConfig()
        self.datasets = _need("datasets", "hf", "data")

    def write(self, out_dir: Path, splits: dict[str, list[dict]], stats: dict) -> dict[str, int]:
        ds = self.datasets
        features = hf_features(ds)

        def body(out: _Outputs) -> None:
            final = out.out_dir / "hf"
            dd = ds.DatasetDict({split: ds.Dataset.from_dict(_arrow_columns(rows), features=features, split=split)
                                 for split, rows in splits.items()})
            tmp = Path(tempfile.mkdtemp(dir=out.out_dir, prefix=".hf.", suffix=".tmp"))
            default_mode(tmp, directory=True)
            old = None
            try:
                # datasets picks min(rows, ...) shards, so an empty split would get no file at all
                # and load_from_disk would fail on it: give it one (empty, with the schema)
                dd.save_to_disk(str(tmp), num_shards={split: 1 for split, rows in splits.items() if not rows})
                if final.exists() or final.is_symlink():
                    # a directory cannot be replaced in one rename: move the previous one aside
                    old = Path(tempfile.mkdtemp(dir=out.out_dir, prefix=".hf.old.", suffix=".tmp"))
                    os.replace(final, old / "hf")
                os.replace(tmp, final)
            finally:
                if old is not None and not final.exists():
                    os.replace(old / "hf", final)  # the new one never made it: restore the previous one
                shutil.rmtree(tmp, ignore_errors=True)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            out.put(final, {f"hf/{split}": len(rows) for split, rows in splits.items()})
            out.stats(stats)

        return _writing(out_dir, splits, body)


# -- torch ---------------------------------------------------------------------------------
@dataclass
class TorchWriterConfig:
    name: str = "torch"


class TorchWriter:
    """``data/{split}.pt``: a dict of columns, loadable with ``torch.load(path, weights_only=True)``.

    ``input_ids``, ``attention_mask`` and ``labels`` are lists of 1-D int64 tensors (one per
    example, unpadded); every other key of an example is a plain list of str/int (``segments``:
    a list of ``[name, start, end]`` lists per example). Keys are the example keys.
    """

    lazy_rows = True  # each split may be an ExampleRows: read once, in order or by slices

    def __init__(self, cfg: TorchWriterConfig | None = None):
        self.cfg = cfg or TorchWriterConfig()
        self.torch = _need("torch", "torch", "torch")

    def payload(self, rows: Iterable[dict]) -> dict[str, list]:
        torch = self.torch
        out: dict[str, list] = {f: [] for f in FIELDS}
        for r in rows:  # one pass: a row's lists of ints become tensors at once
            for f in FIELDS:
                if f in SEQUENCE_FIELDS:
                    out[f].append(torch.tensor(r[f], dtype=torch.int64))
                elif f == "segments":
                    out[f].append([[str(n), int(s), int(e)] for n, s, e in r[f]])
                elif f in INT_FIELDS:
                    out[f].append(int(r[f]))
                else:
                    out[f].append(str(r[f]))
        return out

    def write(self, out_dir: Path, splits: dict[str, list[dict]], stats: dict) -> dict[str, int]:
        def body(out: _Outputs) -> None:
            for split, rows in splits.items():
                with out.file(f"data/{split}.pt", len(rows)) as fh:
                    self.torch.save(self.payload(rows), fh)
            out.stats(stats)

        return _writing(out_dir, splits, body)


# -- legacy --------------------------------------------------------------------------------
@dataclass
class LegacyWriterConfig:
    name: str = "legacy"


class LegacyWriter:
    """The naive pipeline's files: ``training_data_enhanced_{split}.json`` (a JSON array of
    examples, every key) and ``dataset_stats_enhanced.json`` (the stats); no ``stats.json``."""

    lazy_rows = True  # each split may be an ExampleRows: read once, in order or by slices

    def __init__(self, cfg: LegacyWriterConfig | None = None):
        self.cfg = cfg or LegacyWriterConfig()

    def write(self, out_dir: Path, splits: dict[str, list[dict]], stats: dict) -> dict[str, int]:
        def body(out: _Outputs) -> None:
            for split, rows in splits.items():
                with out.file(LEGACY_DATA.format(split=split), len(rows), background=True) as fh:
                    # streamed: one example per line inside the array
                    fh.write(b"[")
                    for i, row in enumerate(packed_rows(rows)):
                        fh.write(b",\n" if i else b"\n")
                        fh.write(fast_json_line(row)[:-1])
                    fh.write(b"\n]\n" if rows else b"]\n")
            out.stats(stats, LEGACY_STATS)

        return _writing(out_dir, splits, body)


@hookimpl
def register_writer(register):
    register("jsonl", JsonlWriter, JsonlWriterConfig)
    register("parquet", ParquetWriter, ParquetWriterConfig)
    register("hf", HfWriter, HfWriterConfig)
    register("torch", TorchWriter, TorchWriterConfig)
    register("legacy", LegacyWriter, LegacyWriterConfig)
