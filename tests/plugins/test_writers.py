"""Dataset writers: round trips through each format's own reader, row counts, atomicity, determinism."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from core.errors import CommitforgeError
from core.files import json_line
from core.registry import PluginRegistry
from plugins import writers
from plugins.writers import (FIELDS, HfWriter, JsonlWriter, LegacyWriter, ParquetWriter, ParquetWriterConfig,
                             TorchWriter)


def example(i: int, split: str, n: int, path: str = "src/lib.rs") -> dict:
    ids = [(7 * i + 3 * k) % 50_000 + 1 for k in range(n)]
    prompt = n // 2
    labels = [-100] * prompt + ids[prompt:]
    return {
        "id": f"ex{i}",
        "split": split,
        "input_ids": ids,
        "attention_mask": [1] * n,
        "labels": labels,
        "segments": [["path", 0, 1], ["old_code", 1, prompt], ["new_code", prompt, n]],
        "n_tokens": n,
        "n_target_tokens": n - prompt,
        "repo": "demo",
        "commit": f"{i:040x}",
        "time": f"2024-01-0{i + 1}T10:00:00+00:00",
        "path": path,
        "qualname": f"lib::f{i}",
        "change": "modified" if i % 2 else "added",
        "kind": "function_item",
    }


SPLITS = {
    "train": [example(0, "train", 5), example(1, "train", 40, "src/ünïcode/日本語.rs"), example(2, "train", 2)],
    "val": [example(3, "val", 17)],
    "test": [],
}
STATS = {"splits": {"train": {"examples": 3}, "val": {"examples": 1}, "test": {"examples": 0}},
         "max_tokens": 2048, "tokenizer": {"name": "bytes", "é": "ü"}}


def files(out_dir: Path) -> list[str]:
    return sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())


def assert_no_temp(out_dir: Path) -> None:
    leftovers = [p for p in out_dir.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []


def assert_stats(out_dir: Path, name: str = "stats.json") -> None:
    raw = (out_dir / name).read_text(encoding="utf-8")
    assert json.loads(raw) == STATS
    assert raw == json.dumps(STATS, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def normalize(row: dict) -> dict:
    """A row read back: segments as [name, start, end], every example key in order."""
    row = dict(row)
    row["segments"] = [[s["name"], s["start"], s["end"]] if isinstance(s, dict) else list(s) for s in row["segments"]]
    return {f: row[f] for f in FIELDS}


# -- jsonl ---------------------------------------------------------------------------------
def test_jsonl_round_trip_and_rows(tmp_path):
    rows = JsonlWriter().write(tmp_path, SPLITS, STATS)
    assert rows == {"data/train/00000.jsonl": 3, "data/val/00000.jsonl": 1, "data/test/00000.jsonl": 0, "stats.json": 1}
    assert files(tmp_path) == sorted(rows)
    for split, examples in SPLITS.items():
        text = (tmp_path / f"data/{split}/00000.jsonl").read_text(encoding="utf-8")
        assert [json.loads(line) for line in text.splitlines()] == examples
    assert "日本語" in (tmp_path / "data/train/00000.jsonl").read_text(encoding="utf-8")  # not \u-escaped
    assert_stats(tmp_path)
    assert_no_temp(tmp_path)


def shard_bytes_of(out_dir: Path, split: str = "train") -> list[bytes]:
    return [p.read_bytes() for p in sorted((out_dir / "data" / split).glob("*.jsonl"))]


@pytest.mark.parametrize("lazy", [False, True], ids=["lists", "packed"])
def test_jsonl_shards_end_where_their_own_lines_say(tmp_path, lazy):
    from core.kept_lines import ends_shard, line_mark
    from plugins.writers import JsonlWriterConfig

    rows = [example(i, "train", 5 + (i * 37) % 200) for i in range(400)]
    size = sum(len(json_line(r)) for r in rows) // 12  # about a dozen shards
    writer = JsonlWriter(JsonlWriterConfig(shard_mb=size / (1 << 20)))

    def write(out_dir: Path, train: list[dict]) -> list[bytes]:
        splits = {"train": train, "val": [], "test": []}
        out = writer.write(out_dir, packed(splits) if lazy else splits, STATS)
        assert out["data/val/00000.jsonl"] == 0 and out["data/test/00000.jsonl"] == 0  # one empty shard
        return shard_bytes_of(out_dir)

    shards = write(tmp_path / "a", rows)
    assert b"".join(shards) == b"".join(json_line(r) for r in rows)
    assert 6 <= len(shards) <= 24
    for k, shard in enumerate(shards):  # each ends after its first line the rule ends a shard at
        lines = shard.splitlines(keepends=True)
        pos, cut = 0, None
        for n, line in enumerate(lines):
            pos += len(line)
            if ends_shard(pos, len(line), line_mark(json.loads(line)["id"]), writer.shard_bytes):
                cut = n
                break
        assert cut == len(lines) - 1 or (k == len(shards) - 1 and cut is None), k
        assert len(shard) >= writer.shard_bytes // 2 or k == len(shards) - 1
    # a row dropped in the middle changes the shard it was in, not those before or after it
    changed = write(tmp_path / "b", rows[:200] + rows[201:])
    assert len(set(changed) - set(shards)) <= 2 and len(set(shards) - set(changed)) <= 2
    assert changed[:3] == shards[:3] and changed[-3:] == shards[-3:]


def test_jsonl_removes_shards_it_did_not_write(tmp_path):
    rows = [example(i, "train", 30) for i in range(9)]
    (tmp_path / "data/train").mkdir(parents=True)
    (tmp_path / "data/train/00007.jsonl").write_bytes(json_line(rows[0]))  # a run in the same directory
    (tmp_path / "data/train/notes.jsonl").write_bytes(b"kept\n")  # not a shard: left alone
    out = JsonlWriter().write(tmp_path, {"train": rows, "val": [], "test": []}, STATS)
    assert [k for k in out if "train" in k] == ["data/train/00000.jsonl"]
    assert sorted(p.name for p in (tmp_path / "data/train").iterdir()) == ["00000.jsonl", "notes.jsonl"]
    assert_no_temp(tmp_path / "data")


@pytest.mark.parametrize("bad", [0, -1, "big", float("nan"), float("inf")])
def test_jsonl_shard_size_must_be_positive(bad):
    from plugins.writers import JsonlWriterConfig

    with pytest.raises(CommitforgeError, match=rf"writer.shard_mb={bad!r} must be a positive number"):
        JsonlWriter(JsonlWriterConfig(shard_mb=bad))


# -- legacy --------------------------------------------------------------------------------
def test_legacy_file_names_and_round_trip(tmp_path):
    rows = LegacyWriter().write(tmp_path, SPLITS, STATS)
    assert rows == {"training_data_enhanced_train.json": 3, "training_data_enhanced_val.json": 1,
                    "training_data_enhanced_test.json": 0, "dataset_stats_enhanced.json": 1}
    assert files(tmp_path) == sorted(rows)  # no stats.json, no data/
    for split, examples in SPLITS.items():
        loaded = json.loads((tmp_path / f"training_data_enhanced_{split}.json").read_text(encoding="utf-8"))
        assert loaded == examples
        assert all({"input_ids", "attention_mask", "labels"} <= ex.keys() for ex in loaded)
    assert_stats(tmp_path, "dataset_stats_enhanced.json")
    assert_no_temp(tmp_path)


# -- parquet -------------------------------------------------------------------------------
def test_parquet_schema_and_load_dataset(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    rows = ParquetWriter(ParquetWriterConfig(row_group_size=2)).write(out, SPLITS, STATS)
    assert rows == {"data/train.parquet": 3, "data/val.parquet": 1, "data/test.parquet": 0, "stats.json": 1}
    assert files(out) == sorted(rows)
    assert_stats(out)
    assert_no_temp(out)

    meta = pq.ParquetFile(out / "data/train.parquet").metadata
    assert meta.num_row_groups == 2 and meta.num_rows == 3
    assert meta.row_group(0).column(0).compression == "ZSTD"
    schema = pq.read_schema(out / "data/test.parquet")
    assert schema == writers.arrow_schema(__import__("pyarrow"))
    assert str(schema.field("segments").type) == "list<element: struct<name: string, start: int32, end: int32>>"

    data_files = {s: str(out / f"data/{s}.parquet") for s in SPLITS}
    cache = str(tmp_path / "hf_cache")
    nonempty = {s: f for s, f in data_files.items() if SPLITS[s]}
    dd = datasets.load_dataset("parquet", data_files=nonempty, cache_dir=cache)
    assert {s: dd[s].num_rows for s in dd} == {"train": 3, "val": 1}
    for split in nonempty:
        assert [normalize(r) for r in dd[split]] == SPLITS[split]
    features = dd["train"].features
    assert features == writers.hf_features(datasets)  # parquet and hf agree on types

    # the empty split: a file with the schema and no row group
    assert pq.ParquetFile(out / "data/test.parquet").metadata.num_row_groups == 0
    streamed = datasets.load_dataset("parquet", data_files=data_files, streaming=True)
    assert {s: sum(1 for _ in streamed[s]) for s in SPLITS} == {"train": 3, "val": 1, "test": 0}
    assert streamed["test"].features == features
    try:
        empty = datasets.load_dataset("parquet", data_files=data_files, cache_dir=cache)["test"]
    except ValueError as exc:
        # datasets refuses any split with no rows when materializing, whatever the file
        # ("Instruction "test" corresponds to no data!", huggingface/datasets PR #8401)
        assert "corresponds to no data" in str(exc)
    else:
        assert empty.num_rows == 0 and empty.features == features


def test_parquet_config_errors(tmp_path):
    pytest.importorskip("pyarrow")
    with pytest.raises(CommitforgeError, match=r"writer.compression='zip'.*use one of"):
        ParquetWriter(ParquetWriterConfig(compression="zip"))
    with pytest.raises(CommitforgeError, match=r"writer.row_group_size=0"):
        ParquetWriter(ParquetWriterConfig(row_group_size=0))


# -- hf ------------------------------------------------------------------------------------
def test_hf_save_to_disk_round_trip(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = HfWriter().write(tmp_path, SPLITS, STATS)
    assert rows == {"hf/train": 3, "hf/val": 1, "hf/test": 0, "stats.json": 1}
    assert_stats(tmp_path)
    assert_no_temp(tmp_path)
    dd = datasets.load_from_disk(str(tmp_path / "hf"))
    assert list(dd) == ["train", "val", "test"]
    assert dd["train"].features == writers.hf_features(datasets)
    assert dd["test"].features == writers.hf_features(datasets)
    for split, examples in SPLITS.items():
        assert [normalize(r) for r in dd[split]] == examples

    # writing again replaces the directory as a whole
    HfWriter().write(tmp_path, {"train": SPLITS["val"], "val": [], "test": []}, STATS)
    dd = datasets.load_from_disk(str(tmp_path / "hf"))
    assert [r["id"] for r in dd["train"]] == ["ex3"] and dd["val"].num_rows == 0
    assert_no_temp(tmp_path)


# -- torch ---------------------------------------------------------------------------------
def test_torch_weights_only_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    rows = TorchWriter().write(tmp_path, SPLITS, STATS)
    assert rows == {"data/train.pt": 3, "data/val.pt": 1, "data/test.pt": 0, "stats.json": 1}
    assert files(tmp_path) == sorted(rows)
    assert_stats(tmp_path)
    assert_no_temp(tmp_path)
    for split, examples in SPLITS.items():
        data = torch.load(tmp_path / f"data/{split}.pt", weights_only=True)
        assert list(data) == list(FIELDS)
        for t in data["input_ids"] + data["attention_mask"] + data["labels"]:
            assert isinstance(t, torch.Tensor) and t.dtype == torch.int64 and t.dim() == 1
        back = [{f: (data[f][i].tolist() if f in writers.SEQUENCE_FIELDS else data[f][i]) for f in FIELDS}
                for i in range(len(examples))]
        assert back == examples
        assert all(len(v) == len(examples) for v in data.values())


# -- surrogates (non-UTF-8 file names, decoded with surrogateescape) ------------------------
ODD = b"src/caf\xe9.rs".decode("utf-8", "surrogateescape")
ODD_SPLITS = {"train": [example(0, "train", 4, ODD)], "val": [], "test": []}


def test_lone_surrogates_round_trip_in_json(tmp_path):
    JsonlWriter().write(tmp_path / "j", ODD_SPLITS, STATS)
    assert json.loads((tmp_path / "j/data/train/00000.jsonl").read_text(encoding="utf-8"))["path"] == ODD
    LegacyWriter().write(tmp_path / "l", ODD_SPLITS, STATS)
    assert json.loads((tmp_path / "l/training_data_enhanced_train.json").read_text("utf-8"))[0]["path"] == ODD


def test_a_lone_surrogate_row_is_written_by_json_with_its_escape(tmp_path):
    # orjson refuses lone surrogates: that row falls back to json, the others do not need to
    splits = {"train": [example(0, "train", 4), example(1, "train", 3, ODD), example(2, "train", 5)],
              "val": [], "test": []}
    JsonlWriter().write(tmp_path, splits, STATS)
    raw = (tmp_path / "data/train/00000.jsonl").read_bytes()
    assert b'"src/caf\\udce9.rs"' in raw
    assert raw == b"".join(json_line(r) for r in splits["train"])
    assert [json.loads(line)["path"] for line in raw.splitlines()] == ["src/lib.rs", ODD, "src/lib.rs"]
    # packed (numpy arrays): the json fallback writes the arrays as the same lists
    JsonlWriter().write(tmp_path / "packed", packed(splits), STATS)
    assert (tmp_path / "packed/data/train/00000.jsonl").read_bytes() == raw


def test_lone_surrogates_escaped_in_arrow(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    ParquetWriter().write(tmp_path, ODD_SPLITS, STATS)
    assert pq.read_table(tmp_path / "data/train.parquet")["path"].to_pylist() == ["src/caf\\udce9.rs"]


def test_lone_surrogates_round_trip_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    TorchWriter().write(tmp_path, ODD_SPLITS, STATS)
    assert torch.load(tmp_path / "data/train.pt", weights_only=True)["path"] == [ODD]


# -- determinism ---------------------------------------------------------------------------
@pytest.mark.parametrize("make", [JsonlWriter, LegacyWriter, ParquetWriter, TorchWriter],
                         ids=["jsonl", "legacy", "parquet", "torch"])
def test_byte_identical_twice(tmp_path, make):
    if make is ParquetWriter:
        pytest.importorskip("pyarrow")
    if make is TorchWriter:
        pytest.importorskip("torch")
    a = make().write(tmp_path / "a", copy.deepcopy(SPLITS), STATS)
    b = make().write(tmp_path / "b", copy.deepcopy(SPLITS), STATS)
    assert a == b
    for rel in a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_hf_byte_identical_twice(tmp_path):
    datasets = pytest.importorskip("datasets")
    HfWriter().write(tmp_path / "a", copy.deepcopy(SPLITS), STATS)
    HfWriter().write(tmp_path / "b", copy.deepcopy(SPLITS), STATS)
    fa, fb = files(tmp_path / "a"), files(tmp_path / "b")
    assert fa == fb and "hf/test/data-00000-of-00001.arrow" in fa
    # state.json holds a fingerprint that datasets derives from the content (from_dict), so
    # every file is identical; should datasets ever randomize it, content equality still holds
    for rel in fa:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    a, b = (datasets.load_from_disk(str(tmp_path / d / "hf")) for d in "ab")
    assert all(a[s].to_list() == b[s].to_list() for s in SPLITS)


# -- atomicity: a failure midway leaves nothing under a final name ----------------------------
def failing_after(n: int, real):
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("make", [JsonlWriter, LegacyWriter], ids=["jsonl", "legacy"])
def test_json_writers_fail_midway(tmp_path, monkeypatch, make):
    # the 4th line is the val example: train is already in place when it fails
    monkeypatch.setattr(writers, "fast_json_line", failing_after(3, writers.fast_json_line))
    with pytest.raises(RuntimeError, match="disk on fire"):
        make().write(tmp_path, SPLITS, STATS)
    assert files(tmp_path) == []


def test_parquet_fails_midway(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    # train takes two row groups (size 2); the third write_table is val's
    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing_after(2, pq.ParquetWriter.write_table))
    with pytest.raises(RuntimeError, match="disk on fire"):
        ParquetWriter(ParquetWriterConfig(row_group_size=2)).write(tmp_path, SPLITS, STATS)
    assert files(tmp_path) == []


def test_torch_fails_midway(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    real = torch.save

    def half_save(obj, fh, *args, **kwargs):
        if obj["split"] == ["val"]:
            fh.write(b"PK partial")
            raise RuntimeError("disk on fire")
        return real(obj, fh, *args, **kwargs)

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(RuntimeError, match="disk on fire"):
        TorchWriter().write(tmp_path, SPLITS, STATS)
    assert files(tmp_path) == []


def test_hf_fails_midway(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    real = datasets.DatasetDict.save_to_disk

    def save_then_fail(self, path, *args, **kwargs):
        real(self, path, *args, **kwargs)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", save_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        HfWriter().write(tmp_path, SPLITS, STATS)
    assert list(tmp_path.iterdir()) == []


def test_hf_failure_after_rename_removes_new_directory(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    HfWriter().write(tmp_path, SPLITS, STATS)
    # the stats file fails after the new hf/ is in place: the new hf/ is removed too
    monkeypatch.setattr(writers, "_json_document", failing_after(0, writers._json_document))
    with pytest.raises(RuntimeError, match="disk on fire"):
        HfWriter().write(tmp_path, SPLITS, STATS)
    assert not (tmp_path / "hf").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]  # the previous run's, untouched


# -- registration and missing dependencies --------------------------------------------------
def test_registered_with_schemas(tmp_path):
    reg = PluginRegistry(load_entry_points=False, builtins=("plugins.writers",))
    assert reg.names("writer") == ["hf", "jsonl", "legacy", "parquet", "torch"]
    assert isinstance(reg.create("writer", {"name": "jsonl"}), JsonlWriter)
    pytest.importorskip("pyarrow")
    w = reg.create("writer", {"name": "parquet", "compression": "snappy", "row_group_size": 10})
    assert (w.cfg.compression, w.cfg.row_group_size) == ("snappy", 10)
    with pytest.raises(CommitforgeError, match="writer.level"):
        reg.create("writer", {"name": "parquet", "level": 3})


@pytest.mark.parametrize(("make", "module", "extra"), [
    (ParquetWriter, "pyarrow", "data"), (HfWriter, "datasets", "data"), (TorchWriter, "torch", "torch"),
])
def test_missing_dependency_names_the_extra(monkeypatch, make, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails
    with pytest.raises(CommitforgeError, match=rf"needs {module}: pip install 'commitforge\[{extra}\]'"):
        make()


def test_bad_split_name(tmp_path):
    with pytest.raises(CommitforgeError, match=r"split name '\.\./x'"):
        JsonlWriter().write(tmp_path, {"../x": []}, STATS)


# -- packed examples, read as ExampleRows ------------------------------------------------------
def packed(splits: dict) -> dict:
    """The splits as the build stage keeps them (token sequences as numpy arrays), wrapped the
    way a writer with ``lazy_rows`` receives them."""
    import numpy as np

    from core.examples import ExampleRows

    out = {}
    for name, rows in splits.items():
        out[name] = ExampleRows([{**r, "input_ids": np.array(r["input_ids"], dtype=np.int32),
                                  "labels": np.array(r["labels"], dtype=np.int32),
                                  "attention_mask": np.array(r["attention_mask"], dtype=np.int8)} for r in rows])
    return out


@pytest.mark.parametrize("make", [JsonlWriter, LegacyWriter, ParquetWriter, TorchWriter, HfWriter],
                         ids=["jsonl", "legacy", "parquet", "torch", "hf"])
def test_lazy_rows_of_packed_examples_give_the_files_of_lists(tmp_path, make):
    for module, cls in (("pyarrow", ParquetWriter), ("torch", TorchWriter), ("datasets", HfWriter)):
        if make is cls:
            pytest.importorskip(module)
    assert make.lazy_rows is True
    kw = {"cfg": ParquetWriterConfig(row_group_size=2)} if make is ParquetWriter else {}
    a = make(**kw).write(tmp_path / "a", copy.deepcopy(SPLITS), STATS)
    lazy = packed(SPLITS)
    assert lazy["train"][1] == SPLITS["train"][1] and lazy["train"][0:2] == SPLITS["train"][0:2]
    assert type(lazy["train"][1]["input_ids"]) is list and list(lazy["val"]) == SPLITS["val"]
    b = make(**kw).write(tmp_path / "b", lazy, STATS)
    assert a == b
    for rel in files(tmp_path / "a"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_a_writer_without_lazy_rows_gets_lists_of_plain_examples():
    from core.build import _writer_splits

    class ListWriter:  # a third-party writer written for lists
        def write(self, out_dir, splits, stats):
            return {}

    lazy = packed(SPLITS)
    by_split = {name: list(rows._rows) for name, rows in lazy.items()}
    got = _writer_splits(ListWriter(), by_split)
    assert all(type(rows) is list for rows in got.values())
    assert got == SPLITS
    assert type(_writer_splits(JsonlWriter(), {n: list(r._rows) for n, r in lazy.items()})["train"]).__name__ == "ExampleRows"
