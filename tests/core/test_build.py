"""The build stage end to end: examples, masks, truncation, formats, writers, determinism."""

from __future__ import annotations

import json

import pytest

from core.pipeline import Run

from ..conftest import (
    ScriptedRepo,
    chunk_bytes,
    make_cfg,
    manifest,
    read_split,
    run_pipeline,
    split_bytes,
)

INJECTED = 'pub const BANNER: &str = "<|endoftext|><|cf_new|><commit_after>";\n'


def body(name: str, n: int, k: int) -> str:
    lines = "\n".join(f"    let v{i} = {name}_step({i}, {k});" for i in range(n))
    return f"pub fn {name}(x: u32) -> u32 {{\n{lines}\n    x\n}}\n"


@pytest.fixture
def repo(scripted_repo: ScriptedRepo) -> ScriptedRepo:
    r = scripted_repo
    for k in range(10):  # ten commits, each changing every function a little
        src = INJECTED + "".join(body(f"f{j}", 4 + j, k) for j in range(6))
        r.commit(f"tune step {k}", {"crates/app/src/lib.rs": src})
    return r


def examples(run_dir, split=None):
    out = []
    for name in ("train", "val", "test"):
        if split in (None, name):
            out += read_split(run_dir, name)
    return out


def vocab_ids(run_dir) -> dict[str, int]:
    return json.loads((run_dir / "stats.json").read_text())["special_token_ids"]


def test_examples_have_masks_segments_and_temporal_splits(repo, tmp_path):
    run_dir = run_pipeline(tmp_path, f"repo={repo.path}", "dedup.near=false")
    exs = examples(run_dir)
    assert exs
    for ex in exs:
        n = ex["n_tokens"]
        assert len(ex["input_ids"]) == len(ex["labels"]) == len(ex["attention_mask"]) == n
        names = [s[0] for s in ex["segments"]]
        new = ex["segments"][names.index("new_code")] if "new_code" in names else None
        end = ex["segments"][names.index("end")]
        trained = [i for i, lab in enumerate(ex["labels"]) if lab != -100]
        expected = list(range(new[1], new[2])) if new else []
        assert trained == expected + list(range(end[1], end[2]))
        assert all(ex["labels"][i] == ex["input_ids"][i] for i in trained)
        assert ex["n_target_tokens"] == len(trained)
    times = {split: [e["time"] for e in examples(run_dir, split)] for split in ("train", "val", "test")}
    assert max(times["train"]) < min(times["val"]) <= max(times["val"]) < min(times["test"])
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["splits"]["train"]["examples"] == len(examples(run_dir, "train"))
    assert 0 < stats["splits"]["train"]["trained_token_share"] < 1
    assert stats["resize_embeddings"] is True and stats["special_tokens_added"] == 51
    build = manifest(run_dir)["stages"]["build"]
    assert build["outputs"]["data/train/00000.jsonl"]["rows"] == len(examples(run_dir, "train"))


def test_source_text_never_becomes_a_special_token(repo, tmp_path):
    run_dir = run_pipeline(tmp_path, f"repo={repo.path}")
    specials = vocab_ids(run_dir)
    first = next(e for e in examples(run_dir) if e["qualname"] == "app::BANNER")
    content = [i for name, a, b in first["segments"] if name == "new_code" for i in first["input_ids"][a:b]]
    assert content and not set(content) & set(specials.values())
    assert sum(1 for i in first["input_ids"] if i == specials["<|cf_new|>"]) == 1


def test_truncation_cuts_old_code_never_the_target_and_skips_what_cannot_fit(repo, tmp_path):
    full = run_pipeline(tmp_path / "full", f"repo={repo.path}", "dedup.near=false", "dedup.exact=false")
    small = run_pipeline(tmp_path / "small", f"repo={repo.path}", "dedup.near=false", "dedup.exact=false",
                         "builder.max_tokens=120")
    by_id = {e["id"]: e for e in examples(full)}
    cut = [e for e in examples(small) if e["n_tokens"] < by_id[e["id"]]["n_tokens"]]
    assert cut
    for e in cut:
        assert e["n_tokens"] <= 120
        f = by_id[e["id"]]
        seg = lambda ex, n: [ex["input_ids"][a:b] for name, a, b in ex["segments"] if name == n]  # noqa: E731
        assert seg(e, "new_code") == seg(f, "new_code")  # the target is whole
        old_small, old_full = seg(e, "old_code"), seg(f, "old_code")
        assert old_small == [] or old_full[0][: len(old_small[0])] == old_small[0]
    skips = manifest(small)["stages"]["build"]["skips"]
    assert skips["target_too_long"] > 0
    assert skips["target_too_long"] + skips.get("fixed_segments_too_long", 0) == len(by_id) - len(examples(small))
    # every skipped example's target really is over the limit
    kept = {e["id"] for e in examples(small)}
    for e in by_id.values():
        if e["id"] not in kept:
            assert sum(1 for lab in e["labels"] if lab != -100) > 120 or e["n_tokens"] > 120


def test_dedup_removes_repeated_targets_and_leaks(scripted_repo, tmp_path):
    r = scripted_repo
    same = body("same", 8, 0)
    for k in range(10):
        r.commit(f"c{k}", {f"crates/app/src/m{k}.rs": same})  # the same function added in ten files
    run_dir = run_pipeline(tmp_path, f"repo={r.path}")
    stats = json.loads((run_dir / "stats.json").read_text())
    kept = sum(s["examples"] for s in stats["splits"].values())
    assert kept == 1  # only the test copy survives: the train and val copies duplicate it
    assert stats["dedup"]["exact_duplicate"] + stats["dedup"]["leak_exact"] == 9


def test_successive_small_edits_of_one_function_are_different_examples(scripted_repo, tmp_path):
    r = scripted_repo
    lines = [f"    let v{i} = step({i});" for i in range(40)]
    for k in range(12):  # each commit edits one line of a long function: the code stays 97% alike
        lines[k] = f"    let v{k} = step({k}) + {k + 1};"
        r.commit(f"tune {k}", {"crates/app/src/lib.rs": "pub fn tuned(x: u32) -> u32 {\n" + "\n".join(lines) + "\n    x\n}\n"})
    by_edit = json.loads((run_pipeline(tmp_path / "edit", f"repo={r.path}") / "stats.json").read_text())
    assert by_edit["dedup"]["compare"] == "edit"
    assert by_edit["dedup"]["near_duplicate"] == by_edit["dedup"]["exact_duplicate"] == 0
    assert sum(s["examples"] for s in by_edit["splits"].values()) == 12
    # compared by the code they end with, the edits after the first of each split are near duplicates
    by_code = json.loads((run_pipeline(tmp_path / "code", f"repo={r.path}", "dedup.compare=code")
                          / "stats.json").read_text())
    assert by_code["dedup"]["near_duplicate"] + by_code["dedup"]["leak_near"] >= 8
    # a random split compares code: a later edit in train would show a test example's answer
    random = json.loads((run_pipeline(tmp_path / "random", f"repo={r.path}", "split=random") / "stats.json").read_text())
    assert random["dedup"]["compare"] == "code"


def test_the_same_edit_twice_is_a_duplicate():
    from core.build import dedup_text

    edit = {"old_code": "fn f() {\n    a();\n    b();\n}", "new_code": "fn f() {\n    a();\n    c();\n}",
            "signature": "fn f()"}
    assert dedup_text(edit, "edit") == "fn f()\n-    b();\n+    c();"
    assert dedup_text({**edit, "old_code": edit["old_code"].replace("a()", "z()")}, "edit") != dedup_text(edit, "edit")
    assert dedup_text(edit, "code") == edit["new_code"]
    assert dedup_text({**edit, "old_code": ""}, "edit") == edit["new_code"]  # an added unit: its code


def test_an_unknown_dedup_comparison_is_one_clear_error(scripted_repo, tmp_path):
    import subprocess
    import sys

    scripted_repo.commit("one", {"crates/app/src/lib.rs": "pub fn one() -> u32 { 1 }\n"})
    proc = subprocess.run([sys.executable, "-m", "core", f"repo={scripted_repo.path}", f"out_dir={tmp_path / 'o'}",
                           "dedup.compare=lines", "progress=false"], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "dedup.compare='lines' must be one of edit, code" in proc.stderr


@pytest.mark.parametrize("fmt,first_token,target_tokens", [
    ("starcoder1", "<reponame>", ["<commit_after>", "<|endoftext|>"]),
    ("starcoder2", "<repo_name>", ["<|endoftext|>"]),
])
def test_starcoder_formats(repo, tmp_path, fmt, first_token, target_tokens):
    run_dir = run_pipeline(tmp_path, f"repo={repo.path}", f"format={fmt}")
    specials = vocab_ids(run_dir)
    ex = examples(run_dir)[0]
    assert ex["input_ids"][0] == specials[first_token]
    trained = {i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100}
    assert {specials[t] for t in target_tokens} <= trained
    stats = json.loads((run_dir / "stats.json").read_text())
    # the bpe tokenizer knows <|endoftext|>; the format's other tokens are added
    assert stats["special_tokens_added"] == len(specials) - 1


def test_build_is_byte_identical_for_any_worker_count(repo, tmp_path):
    a = run_pipeline(tmp_path / "a", f"repo={repo.path}", "executor.workers=1")
    b = run_pipeline(tmp_path / "b", f"repo={repo.path}", "executor.workers=2")
    for name in ("train", "val", "test"):
        assert split_bytes(a, name) == split_bytes(b, name)
    # separate caches, so the same tokenizer was trained twice: identical apart from its cache path
    assert (a / "stats.json").read_text().replace(str(tmp_path / "a"), "") == \
        (b / "stats.json").read_text().replace(str(tmp_path / "b"), "")
    assert (a / "tokenizer" / "tokenizer.json").read_bytes() == (b / "tokenizer" / "tokenizer.json").read_bytes()


def test_the_builder_runs_with_the_cycle_collector_paused_and_gets_it_back_however_it_ends(repo, tmp_path,
                                                                                             monkeypatch):
    import gc

    from plugins.builders import CommitBuilder

    seen = []
    real = CommitBuilder.build

    def build(self, *args, **kwargs):
        seen.append(gc.isenabled())
        if fail:
            raise RuntimeError("a builder that fails")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CommitBuilder, "build", build)
    fail = False
    for reuse in ("true", "false"):  # with the build cache (a memo) and without
        run_pipeline(tmp_path / reuse, f"repo={repo.path}", f"reuse={reuse}")
    assert seen == [False, False] and gc.isenabled()
    fail = True
    with pytest.raises(RuntimeError, match="a builder that fails"):
        run_pipeline(tmp_path / "failing", f"repo={repo.path}")
    assert gc.isenabled()
    # a program that runs without the collector keeps it off
    fail = False
    gc.disable()
    try:
        run_pipeline(tmp_path / "off", f"repo={repo.path}")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_tokenizer_learns_from_the_train_split_before_deduplication(scripted_repo, tmp_path):
    """Dedup settings that drop train rows leave the bpe tokenizer (and so the token ids)
    as they are: it learns from the train split as split."""
    for k in range(10):  # each commit adds one new function, and a copy of a helper
        scripted_repo.commit(f"module {k}", {f"src/m{k}.rs": body(f"work{k}", 3 + k, k) + body("helper", 5, 0)})
    cache = f"cache_dir={tmp_path / 'cache'}"
    runs = {name: run_pipeline(tmp_path / name, f"repo={scripted_repo.path}", cache, *overrides)
            for name, overrides in (("dedup", ()), ("no_dedup", ("dedup.exact=false", "dedup.near=false")))}
    stats = {name: json.loads((run_dir / "stats.json").read_text()) for name, run_dir in runs.items()}
    dropped = stats["no_dedup"]["splits"]["train"]["examples"] - stats["dedup"]["splits"]["train"]["examples"]
    assert dropped > 0  # deduplication drops train rows here
    assert stats["dedup"]["tokenizer"]["sha256"] == stats["no_dedup"]["tokenizer"]["sha256"]
    # the second run takes the examples of the rows both keep from the build cache
    kept_by_both = sum(stats["dedup"]["splits"][split]["examples"] for split in ("train", "val", "test"))
    assert manifest(runs["no_dedup"])["stages"]["build"]["counts"]["rows_reused"] == kept_by_both


def test_the_tokenizer_is_prepared_while_deduplication_runs_and_either_failure_ends_the_build(repo, tmp_path,
                                                                                              monkeypatch):
    import threading
    import time

    import core.build
    from core.errors import CommitforgeError
    from plugins.tokenizers import BpeTokenizer

    preparing, deduplicating, released = threading.Event(), threading.Event(), threading.Event()
    seen: list[tuple[bool, bool, bool]] = []
    fail = {"prepare": False, "dedup": False}
    prepare, deduplicate = BpeTokenizer.prepare, core.build.deduplicate

    def prepare_alongside(self, *args):
        preparing.set()
        met = deduplicating.wait(10)
        if fail["prepare"]:
            raise CommitforgeError("a tokenizer that fails")
        if fail["dedup"]:
            released.wait(30)  # a tokenizer still training when deduplication fails
            return None
        seen.append((threading.current_thread() is not threading.main_thread(), met, deduplicating.is_set()))
        return prepare(self, *args)

    def deduplicate_alongside(*args, **kwargs):
        deduplicating.set()
        assert preparing.wait(10)  # the tokenizer was started first
        if fail["dedup"]:
            raise CommitforgeError("a deduplication that fails")
        return deduplicate(*args, **kwargs)

    monkeypatch.setattr(BpeTokenizer, "prepare", prepare_alongside)
    monkeypatch.setattr(core.build, "deduplicate", deduplicate_alongside)
    run_pipeline(tmp_path / "a", f"repo={repo.path}")
    assert seen == [(True, True, True)]  # in another thread, while deduplication ran
    for what in ("prepare", "dedup"):
        fail[what] = True
        preparing.clear()
        deduplicating.clear()
        started = time.monotonic()
        with pytest.raises(CommitforgeError, match=f"a {'tokenizer' if what == 'prepare' else 'deduplication'}"):
            run_pipeline(tmp_path / what, f"repo={repo.path}")
        assert time.monotonic() - started < 20  # a failed deduplication does not wait for training
        fail[what] = False
    released.set()


def test_training_texts_are_the_train_rows_code_with_those_rows_digests():
    from core.build import TrainingTexts

    changes = [{"old_code": f"o{i}", "new_code": f"n{i}"} for i in range(5)]
    splits = ["train", "val", "train", "test", "train"]
    texts = TrainingTexts(changes, splits, [b"d0", b"d1", b"d2", b"d3", b"d4"])
    assert texts.rows == [b"d0", b"d2", b"d4"]
    assert list(texts()) == ["o0", "n0", "o2", "n2", "o4", "n4"] and list(texts()) == list(texts())
    assert TrainingTexts(changes, splits, None).rows is None


@pytest.mark.parametrize("max_chars", [300, 10_000_000])
def test_a_build_whose_train_rows_start_as_before_finds_its_tokenizer_without_reading_them(repo, tmp_path,
                                                                                           monkeypatch, max_chars):
    """The bpe tokenizer learns from the first ``max_training_chars`` of the train code: a
    later build whose train rows start with the same rows (their digests) has the same
    corpus and need not read it. A corpus that took every train row (the cap not reached)
    is the same only for exactly those rows: a commit that moves rows into train changes
    it. Either way the tokenizer is the one a build from an empty cache trains."""
    from core import build

    reads = []
    texts = build.TrainingTexts.__call__
    monkeypatch.setattr(build.TrainingTexts, "__call__", lambda self: reads.append(1) or texts(self))
    settings = ("dedup.near=false", f"tokenizer.max_training_chars={max_chars}")
    first = run_pipeline(tmp_path, f"repo={repo.path}", *settings)
    assert reads and (tmp_path / "cache" / "tokenizers" / "corpora.json").is_file()
    src = (repo.path / "crates/app/src/lib.rs").read_text()
    repo.commit("one more", {"crates/app/src/lib.rs": src.replace("x\n}", "x + 1\n}")})
    reads.clear()
    later = run_pipeline(tmp_path, f"repo={repo.path}", f"out_dir={tmp_path / 'later'}", *settings)
    capped = max_chars == 300
    assert bool(reads) is not capped  # uncapped: the train rows changed, the corpus is read again
    fresh = run_pipeline(tmp_path / "fresh", f"repo={repo.path}", *settings)
    assert manifest(later)["tokenizer"]["sha256"] == manifest(fresh)["tokenizer"]["sha256"]
    assert (manifest(later)["tokenizer"]["sha256"] == manifest(first)["tokenizer"]["sha256"]) is capped


def test_the_run_saves_the_tokenizer_its_ids_belong_to(repo, tmp_path):
    from tokenizers import Tokenizer

    run_dir = run_pipeline(tmp_path, f"repo={repo.path}")
    tok = Tokenizer.from_file(str(run_dir / "tokenizer" / "tokenizer.json"))
    stats = json.loads((run_dir / "stats.json").read_text())
    for token, tid in stats["special_token_ids"].items():
        assert tok.token_to_id(token) == tid
    assert tok.get_vocab_size(with_added_tokens=True) == stats["tokenizer"]["vocab_size"]
    ex = examples(run_dir)[0]
    text = tok.decode(ex["input_ids"], skip_special_tokens=False)
    assert text.startswith("<|cf_repo|>") and "<|cf_new|>" in text and text.endswith("<|cf_end|>")
    assert "tokenizer/tokenizer.json" in manifest(run_dir)["stages"]["build"]["outputs"]


def test_parquet_writer_output_loads_with_datasets(repo, tmp_path):
    datasets = pytest.importorskip("datasets")
    run_dir = run_pipeline(tmp_path, f"repo={repo.path}", "writer=parquet")
    ds = datasets.load_dataset("parquet", data_files={"train": str(run_dir / "data" / "train.parquet")})
    rows = ds["train"]
    assert len(rows) == json.loads((run_dir / "stats.json").read_text())["splits"]["train"]["examples"]
    assert rows[0]["labels"][0] == -100 and len(rows[0]["input_ids"]) == rows[0]["n_tokens"]


def test_jsonl_shards_load_with_datasets_in_order(repo, tmp_path):
    datasets = pytest.importorskip("datasets")
    run_dir = run_pipeline(tmp_path, f"repo={repo.path}", "writer.shard_mb=0.01")
    assert len(list((run_dir / "data" / "train").glob("*.jsonl"))) > 2
    ds = datasets.load_dataset("json", data_files={"train": f"{run_dir}/data/train/*.jsonl"},
                               cache_dir=str(tmp_path / "hf"))
    assert ds["train"]["id"] == [e["id"] for e in read_split(run_dir, "train")]


def test_hf_writer_runs_in_the_pipeline_and_its_dataset_directories_are_in_the_manifest(repo, tmp_path):
    datasets = pytest.importorskip("datasets")
    from core.files import output_digest

    run_dir = run_pipeline(tmp_path, f"repo={repo.path}", "writer=hf")
    outputs = manifest(run_dir)["stages"]["build"]["outputs"]
    train = datasets.load_from_disk(str(run_dir / "hf" / "train"))
    assert outputs["hf/train"]["rows"] == len(train) > 0
    assert (outputs["hf/train"]["sha256"], outputs["hf/train"]["bytes"]) == output_digest(run_dir / "hf" / "train")
    # a rerun finds the directories intact and redoes nothing
    again = Run(make_cfg(tmp_path, f"repo={repo.path}", "writer=hf"))
    assert again.run() == run_dir and manifest(run_dir)["resumed"] == ["mine", "chunk", "build"]


def test_fim_builder_makes_psm_spm_and_plain_examples_whose_middle_is_the_target(repo, tmp_path):
    run_dir = run_pipeline(tmp_path, f"repo={repo.path}", "builder=fim", "builder.fim_rate=0.8")
    ids = vocab_ids(run_dir)
    counts = manifest(run_dir)["stages"]["build"]["counts"]
    assert counts["fim_psm"] > 0 and counts["fim_spm"] > 0 and counts["fim_plain"] > 0
    for ex in examples(run_dir):
        names = [s[0] for s in ex["segments"]]
        trained = [i for i, lab in enumerate(ex["labels"]) if lab != -100]
        target = "middle" if "middle" in names else "code"
        a, b = ex["segments"][names.index(target)][1:]
        assert trained == list(range(a, b)) + [len(ex["input_ids"]) - 1]
        assert ex["input_ids"][-1] == ids["<|endoftext|>"]
        if target == "middle":
            first = ex["input_ids"][0]
            assert first == ids["<fim_prefix>"]
            # SPM puts the suffix right after <fim_prefix><fim_suffix>
            assert names[:2] in (["fim_prefix", "prefix"], ["fim_prefix", "fim_suffix"])
    again = run_pipeline(tmp_path / "again", f"repo={repo.path}", "builder=fim", "builder.fim_rate=0.8")
    assert split_bytes(again, "train") == split_bytes(run_dir, "train")


@pytest.mark.parametrize("unit", ["unit", "file"])
def test_file_builder_uses_the_snapshot_at_the_newest_commit(repo, tmp_path, unit):
    run_dir = run_pipeline(tmp_path, f"repo={repo.path}", "builder=file", f"builder.unit={unit}", "split=path",
                           "dedup.near=false")
    exs = examples(run_dir)
    head = repo.git("rev-parse", "HEAD")
    assert exs and {e["commit"] for e in exs} == {head}
    assert all(e["change"] == "added" for e in exs)
    assert not any(seg[0].startswith("message") for e in exs for seg in e["segments"])  # no commit subject
    if unit == "file":
        assert [e["qualname"] for e in exs] == ["app"]
    else:
        assert {e["qualname"] for e in exs} == {"app::BANNER", *(f"app::f{j}" for j in range(6))}
    assert manifest(run_dir)["stages"]["build"]["counts"]["snapshot_files"] == 1


def test_train_on_naming_no_segment_is_refused(repo, tmp_path):
    from core.errors import CommitforgeError

    with pytest.raises(CommitforgeError, match=r"builder.train_on=\['new'\] names no segment.*new_code"):
        run_pipeline(tmp_path, f"repo={repo.path}", "builder.train_on=[new]")


def test_file_builder_honours_the_source_path_filters(repo, tmp_path):
    repo.commit("vendored", {"vendor/dep.rs": "pub fn vendored() {}\n"})
    run_dir = run_pipeline(tmp_path, f"repo={repo.path}", "builder=file", "split=path", "source.exclude=[vendor/*]")
    assert not [e for e in examples(run_dir) if e["path"].startswith("vendor/")]


@pytest.mark.parametrize("fmt,separator", [("starcoder1", "<filename>"), ("starcoder2", "<file_sep>"),
                                           ("commitforge", "<|cf_ctx_struct|>")])
def test_context_items_are_rendered_by_every_format(scripted_repo, tmp_path, fmt, separator):
    r = scripted_repo
    for k in range(6):
        r.commit(f"c{k}", {"src/lib.rs": "pub struct Point { x: i64, y: i64 }\n\n"
                           f"pub fn norm(p: &Point) -> i64 {{ p.x.abs() + p.y.abs() + {k} }}\n"})
    run_dir = run_pipeline(tmp_path, f"repo={r.path}", f"format={fmt}", "context=same_file", "dedup.near=false",
                           "dedup.exact=false")
    ids = vocab_ids(run_dir)
    with_context = [e for e in examples(run_dir) if any(s[0] == "context" for s in e["segments"])]
    assert with_context and all(e["qualname"] == "norm" for e in with_context)
    ex = with_context[0]
    a = next(s for s in ex["segments"] if s[0] == "context")[1]
    assert ex["input_ids"][a - 1] == ids[separator]
    assert all(lab == -100 for s in ex["segments"] if s[0] == "context" for lab in ex["labels"][s[1]:s[2]])


def test_file_builder_keeps_memberless_containers_and_drops_containers_of_members(repo, tmp_path):
    repo.commit("impls", {"crates/app/src/marker.rs": "impl Marker for App {}\n\nimpl App {\n    fn go(&self) {}\n}\n"})
    run_dir = run_pipeline(tmp_path, f"repo={repo.path}", "builder=file", "split=path", "dedup.near=false")
    names = {e["qualname"] for e in examples(run_dir) if e["path"].endswith("marker.rs")}
    assert names == {"app::marker::<App as Marker>", "app::marker::App::go"}


def test_read_changes_gives_the_rows_json_gives_with_repeated_texts_shared(tmp_path, monkeypatch):
    from core import changes as build
    from core.files import json_line

    odd = b"src/caf\xe9.rs".decode("utf-8", "surrogateescape")
    ctx = {"path": "src/a.rs", "qualname": "a::S", "kind": "struct", "text": "pub struct S { x: u64 }", "score": 0.1,
           "why": ["import"]}
    rows = [{"id": str(i), "path": odd if i == 1 else "src/b.rs", "subject": "Fix it", "message": "Fix it\n\nbody",
             "old_code": f"fn f() {{ {i - 1} }}" if i else "", "new_code": f"fn f() {{ {i} }}", "time": 1700000000 + i,
             "context": [dict(ctx)], "header": None, "score": 1e16} for i in range(4)]
    path = tmp_path / "chunks.jsonl"
    path.write_bytes(b"".join(json_line(r) for r in rows))
    got = build.read_changes(path)
    assert got == rows == [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert got[1]["path"] == odd
    assert got[0]["context"][0]["text"] is got[3]["context"][0]["text"]
    assert got[0]["new_code"] is got[1]["old_code"] and got[0]["subject"] is got[2]["subject"]
    from core import files

    monkeypatch.setattr(build, "orjson", None)  # the leading fields, then whole rows, read by json
    monkeypatch.setattr(files, "_orjson", None)
    assert build.read_changes(path) == rows


def test_read_changes_reads_a_row_whole_only_when_a_later_field_is_read(tmp_path):
    from core import changes as build
    from core.files import record_line

    # the bytes the head ends at, inside a subject and after a message ending in a backslash
    rows = [{"id": str(i), "repo": "r", "commit": f"c{i}", "time": "2024-01-01T00:00:00+00:00",
             "subject": 'say ,"old_qualname":"x"', "message": "ends with \\", "path": "a.rs", "change": "added",
             "kind": "fn", "qualname": f"a::f{i}", "old_qualname": None, "old_code": "", "new_code": f"fn f{i}() {{}}",
             "context": [{"path": "b.rs", "text": "struct B;"}]} for i in range(3)]
    path = tmp_path / "chunks.jsonl"
    path.write_bytes(b"".join(record_line(r) for r in rows))
    got = build.read_changes(path)
    assert [(c["commit"], c["qualname"], c["subject"], c["message"]) for c in got] == \
        [(r["commit"], r["qualname"], r["subject"], r["message"]) for r in rows]
    assert all(c._row is None for c in got)  # the code and context were not read
    assert got[1].get("new_code") == "fn f1() {}" and got[1]._row is not None and got[0]._row is None
    assert "old_qualname" in got[2] and got[2].get("nope") is None
    assert got == rows and dict(got[0]) == rows[0] and got[0]["context"][0]["text"] is got[2]["context"][0]["text"]


def test_a_row_read_without_its_context_is_the_row_less_its_context(monkeypatch):
    from core import changes
    from core.files import record_line

    odd = b"src/caf\xe9.rs".decode("utf-8", "surrogateescape")
    context = [{"path": "b.rs", "text": 'say ,"context":[1]}', "why": ["import"]}]
    rows = [
        # the bytes the context starts with, inside a message and a signature, then the context itself
        {"id": "1", "message": 'a ,"context":[] here', "signature": "fn f(x: &str) -> \\", "old_code": "",
         "new_code": "fn f() {}", "new_lines": [1, 3], "context": context},
        {"id": "2", "path": odd, "new_code": "fn g() {}", "context": []},  # read whole by json
        {"id": "3", "new_code": "fn h() {}"},  # no context at all
    ]
    for row in rows:
        line = record_line(row)
        less = {k: v for k, v in row.items() if k != "context"}
        got = changes.without_context(line)
        assert got == (row if row["id"] == "2" else less)
    monkeypatch.setattr(changes, "orjson", None)
    assert changes.without_context(record_line(rows[0])) == rows[0]


def test_a_copied_or_pickled_change_is_a_plain_dict_that_shares_no_open_file(tmp_path):
    import copy
    import gc
    import pickle

    from core.changes import read_changes, whole
    from core.files import record_line

    rows = [{"id": str(i), "commit": "c", "old_qualname": None, "new_code": f"fn f{i}() {{}}"} for i in range(3)]
    path = tmp_path / "chunks.jsonl"
    path.write_bytes(b"".join(record_line(r) for r in rows))
    got = read_changes(path)
    for c in (copy.deepcopy(got[0]), copy.copy(got[0]), pickle.loads(pickle.dumps(got[0]))):
        assert type(c) is dict and c == rows[0]
    del c
    gc.collect()  # copies gone: the rows still read from the file
    assert got[2]["new_code"] == "fn f2() {}" and type(whole(got[1])) is dict and whole(got[1]) == rows[1]
    assert whole(rows[0]) is rows[0]


def test_a_released_change_reads_its_row_again_and_the_builder_releases_each_row_it_is_done_with(repo, tmp_path,
                                                                                                    monkeypatch):
    """The build stage holds a history's rows and its examples: each row read whole is
    dropped once its example is made, and a row asked for again is read again, the same."""
    from core.changes import read_changes, release
    from core.files import record_line
    from plugins import builders

    rows = [{"id": str(i), "commit": "c", "old_qualname": None, "new_code": f"fn f{i}() {{}}"} for i in range(2)]
    path = tmp_path / "chunks.jsonl"
    path.write_bytes(b"".join(record_line(r) for r in rows))
    got = read_changes(path)
    first = got[1].whole()
    release(got[1])
    release(rows[0])  # a plain dict: nothing to drop
    assert got[1]._row is None and got[1]["new_code"] == "fn f1() {}" and got[1].whole() == first == rows[1]

    seen: list = []
    assemble_all = builders.assemble_all

    def spy(changes, *args, **kwargs):
        out = assemble_all(changes, *args, **kwargs)
        seen.extend(changes)
        return out

    monkeypatch.setattr(builders, "assemble_all", spy)
    run_pipeline(tmp_path / "run", f"repo={repo.path}", "dedup.near=false", "reuse=false")
    assert len(seen) > 10
    assert all(c._row is None for c in seen[:-1])  # every row but the last, dropped as the loop went


def test_the_commitforge_format_writes_qualnames_as_code_would_and_has_a_token_per_kind():
    from plugins.formats import CommitforgeFormat, CommitforgeFormatConfig

    fmt = CommitforgeFormat(CommitforgeFormatConfig())
    row = {"repo": "r", "path": "src/lib.rs", "subject": "s", "message": "s", "change": "modified",
           "kind": "macro_call", "qualname": "app::Path#2::from_path#3", "header": None, "context": [],
           "old_code": "a", "new_code": "b"}
    segs = {s.name: s.text for s in fmt.segments(row)}
    assert segs["qualname"] == "app::Path::from_path"  # the #n of cfg variants is for chunks.jsonl only
    assert segs["kind_token"] == "<|cf_kind_macro_call|>" and segs["kind_token"] in fmt.special_tokens
    row["qualname"] = "app::<T as From<[u8; 2]>>"
    assert {s.name: s.text for s in fmt.segments(row)}["qualname"] == row["qualname"]


def _rows(n: int, start: int = 0) -> list[dict]:
    odd = b"src/caf\xe9.rs".decode("utf-8", "surrogateescape")  # a row whose head orjson refuses
    return [{"id": str(i), "repo": "r", "commit": f"c{i // 3}", "time": "2024-01-01T00:00:00+00:00",
             "subject": "Fix", "message": "Fix\n\nmany words " * 20, "path": odd if i % 7 == 5 else f"src/m{i}.rs",
             "change": "modified", "kind": "fn", "qualname": f"m::f{i}", "old_qualname": f"m::f{i}",
             "old_code": f"fn f{i}() {{}}", "new_code": f"fn f{i}() {{ {i} }}", "context": []}
            for i in range(start, start + n)]


def test_rows_an_earlier_read_indexed_are_taken_from_its_index_and_the_rest_read(tmp_path, monkeypatch):
    from core.changes import Change, RowIndex, read_changes
    from core.files import json_line

    first, more = _rows(20), _rows(9, start=20)
    kept = tmp_path / "kept.jsonl"
    kept.write_bytes(b"".join(json_line(r) for r in first))
    digests: list[bytes] = []
    index = RowIndex.of(read_changes(kept, digests), digests)
    index = RowIndex.unpack(index.pack())
    assert index is not None and index.heads[5] is None and index.heads[4]["commit"] == "c1"
    path = tmp_path / "chunks.jsonl"
    path.write_bytes(kept.read_bytes() + b"".join(json_line(r) for r in more))
    plain: list[bytes] = []
    want = read_changes(path, plain)
    made = []
    known = Change.known

    def spy(cls, *args):
        made.append(args[1])
        return known(*args)

    monkeypatch.setattr(Change, "known", classmethod(spy))
    got_digests: list[bytes] = []
    got = read_changes(path, got_digests, [(index, kept.stat().st_size)])
    assert made == [c._at for c in want[:20]]  # the kept file's rows, from the index
    assert got == want == first + more and got_digests == plain
    assert [c._at for c in got] == [c._at for c in want] and got[25]["path"] == more[5]["path"]
    # a prefix that ends inside a row, or an index of other rows: everything is read
    assert read_changes(path, [], [(index, kept.stat().st_size - 1)]) == want
    assert index.rows_in(kept.stat().st_size + 1) == 0 and index.rows_in(0) == 0


def test_a_row_index_of_another_format_or_damaged_is_not_used(tmp_path):
    from core.build_memo import MEMO_FILES_DIR, RowIndexes
    from core.changes import RowIndex

    index = RowIndex([b"a" * 20, b"b" * 20], [10, 25], [{"id": "1"}, None])
    assert RowIndex.unpack(index.pack()).ends == [10, 25]
    assert RowIndex.unpack(marshal_dumps((99, b"a" * 40, [10, 25], [None, None]))) is None
    assert RowIndex.unpack(marshal_dumps((1, b"a" * 39, [10, 25], [None, None]))) is None
    assert RowIndex.unpack(b"\x00garbage") is None
    store = RowIndexes(tmp_path)
    store.keep("1:2:3", "v1", index)
    assert store.find("1:2:3", "v1").digests == index.digests and store.find("4:5:6", "v1") is None
    assert store.find("1:2:3", "v2") is None  # made by other code: its heads may differ
    (name,) = store._conn().execute("SELECT name FROM index_files WHERE stat = ?", ("1:2:3 v1",)).fetchone()
    path = tmp_path / MEMO_FILES_DIR / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # changed on disk: its checksum disagrees
    path.write_bytes(bytes(data))
    assert store.find("1:2:3", "v1") is None
    path.unlink()  # removed by another run meanwhile: a miss too
    assert store.find("1:2:3", "v1") is None
    store.close()


def marshal_dumps(value) -> bytes:
    import marshal

    return marshal.dumps(value)


@pytest.mark.parametrize("shard_bytes", [None, 200])
def test_an_update_reads_only_the_new_commits_rows_and_builds_what_a_fresh_build_builds(repo, tmp_path, monkeypatch,
                                                                                        shard_bytes):
    from core import build, changes, pipeline

    if shard_bytes is not None:  # the chunk output in shards: the update links all but the last
        monkeypatch.setattr(pipeline, "CHUNK_SHARD_BYTES", shard_bytes)
    shared = [f"repo={repo.path}", f"cache_dir={tmp_path / 'cache'}", "tokenizer.max_training_chars=20000"]
    before = run_pipeline(tmp_path / "a", *shared)
    repo.commit("one more", {"crates/app/src/late.rs": "pub fn late() -> u32 {\n    7\n}\n"})
    read: list[int] = []
    init = changes.Change.__init__

    def spy(self, file, at, line):
        read.append(at)
        init(self, file, at, line)

    monkeypatch.setattr(changes.Change, "__init__", spy)
    kept: list[str] = []
    keep = build.RowIndexes.keep
    monkeypatch.setattr(build.RowIndexes, "keep", lambda self, stat, *a: (kept.append(stat), keep(self, stat, *a)))
    after = run_pipeline(tmp_path / "b", *shared)
    monkeypatch.setattr(changes.Change, "__init__", init)
    monkeypatch.setattr(build.RowIndexes, "keep", keep)
    # every row before the new commit's came from the earlier build's index
    assert read and min(read) >= len(chunk_bytes(before))
    if shard_bytes is not None:
        counts = manifest(after)["stages"]["chunk"]["counts"]
        assert counts["chunk_shards_linked"] == counts["chunk_shards"] - 1 > 1
    # an index is kept for each shard read (the last, which the new rows continue), not the linked ones
    from core.chunk_shards import shard_paths
    from core.files import stat_key

    assert kept == [stat_key(shard_paths(after / "chunks")[-1])]
    assert chunk_bytes(after).startswith(chunk_bytes(before))
    fresh = run_pipeline(tmp_path / "c", f"repo={repo.path}", "reuse=false", "tokenizer.max_training_chars=20000")
    for name in ("train", "val", "test"):
        assert split_bytes(after, name) == split_bytes(fresh, name)
