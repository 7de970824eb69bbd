"""core.examples: encoding each distinct text once and assembling from int arrays give the
examples of the plain way (every segment encoded on its own, lists of ints), truncation
rules included."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.examples import IGNORE_INDEX, Built, Segment, assemble, encode_all, encode_layouts, unpack

SPECIALS = ["<s>", "<ctx>", "<old>", "<new>", "</s>", "<ctx_start>", "<ctx_end>"]


class FakeTokenizer:
    """Deterministic, context-free: a text's ids are those of its 1-3 character pieces."""

    identity: dict = {}
    added_tokens: list = []
    eos_token = None

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def prepare(self, special_tokens, training_texts, cache_dir) -> None: ...

    def encode(self, texts: list[str]) -> list[list[int]]:
        self.encoded.extend(texts)
        out = []
        for text in texts:
            ids, i = [], 0
            while i < len(text):
                n = 1 + hashlib.blake2b(text[i:i + 3].encode("utf-8", "replace"), digest_size=1).digest()[0] % 3
                ids.append(300 + int.from_bytes(hashlib.blake2b(text[i:i + n].encode("utf-8", "replace"),
                                                                digest_size=2).digest(), "big") % 5000)
                i += n
            out.append(ids)
        return out

    def token_id(self, token: str) -> int:
        return SPECIALS.index(token) + 1


def reference_assemble(change, segments, encoded, tokenizer, max_tokens, split) -> Built:
    """The list-of-ints assembly the array version replaced (the truncation rules' definition)."""
    ids_per = []
    it = iter(encoded)
    for seg in segments:
        ids_per.append([tokenizer.token_id(seg.text)] if seg.special else list(next(it)))
    total = sum(map(len, ids_per))
    target_len = sum(len(ids) for seg, ids in zip(segments, ids_per) if seg.target)
    fixed = sum(len(ids) for seg, ids in zip(segments, ids_per) if seg.drop_rank is None and not seg.cuttable)
    if target_len > max_tokens:
        return Built(None, "target_too_long")
    if fixed > max_tokens:
        return Built(None, "fixed_segments_too_long")
    truncated = False
    if total > max_tokens:
        truncated = True
        for i in sorted((i for i, s in enumerate(segments) if s.drop_rank is not None),
                        key=lambda i: -segments[i].drop_rank):
            if total <= max_tokens:
                break
            total -= len(ids_per[i])
            ids_per[i] = []
        if not any(ids for seg, ids in zip(segments, ids_per) if seg.drop_rank is not None):
            for i, seg in enumerate(segments):
                if seg.bracket:
                    total -= len(ids_per[i])
                    ids_per[i] = []
        for i, seg in enumerate(segments):
            if total <= max_tokens:
                break
            if seg.cuttable and ids_per[i]:
                cut = min(len(ids_per[i]), total - max_tokens)
                ids_per[i] = ids_per[i][: len(ids_per[i]) - cut]
                total -= cut
    input_ids, labels, spans = [], [], []
    for seg, ids in zip(segments, ids_per):
        if not ids:
            continue
        spans.append([seg.name, len(input_ids), len(input_ids) + len(ids)])
        input_ids.extend(ids)
        labels.extend(ids if seg.target else [IGNORE_INDEX] * len(ids))
    example = {"id": change["id"], "split": split, "input_ids": input_ids, "attention_mask": [1] * len(input_ids),
               "labels": labels, "segments": spans, "n_tokens": len(input_ids),
               "n_target_tokens": sum(1 for x in labels if x != IGNORE_INDEX)}
    for key in ("repo", "commit", "time", "path", "qualname", "change", "kind"):
        example[key] = change[key]
    return Built(example, None, truncated)


CHANGE = {"id": "x", "repo": "r", "commit": "c", "time": 1, "path": "p.rs", "qualname": "f", "change": "modified",
          "kind": "fn"}
# few distinct texts, so layouts share them the way context items and old/new code do
TEXTS = st.sampled_from(["", "fn a() {}", "struct S;\n", "let x = 1;\n" * 7, "größe → ü", "z" * 40,
                         "impl T for S {\n    fn f(&self) {}\n}\n", "bad \udcff path"])


@st.composite
def layout(draw) -> list[Segment]:
    segs = [Segment("repo_token", "<s>", special=True), Segment("repo", draw(TEXTS), cuttable=True)]
    items = draw(st.integers(0, 4))
    if items:
        segs.append(Segment("context_token", "<ctx_start>", special=True, bracket=True))
    for rank in range(items):
        segs += [Segment("context_kind", "<ctx>", special=True, drop_rank=rank),
                 Segment("context", draw(TEXTS), drop_rank=rank)]
    if items:
        segs.append(Segment("context_token", "<ctx_end>", special=True, bracket=True))
    segs += [Segment("old_token", "<old>", special=True), Segment("old_code", draw(TEXTS), cuttable=True),
             Segment("new_token", "<new>", special=True), Segment("new_code", draw(TEXTS), target=True),
             Segment("end", "</s>", special=True, target=True)]
    return segs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts=st.lists(layout(), min_size=1, max_size=12), max_tokens=st.integers(4, 80),
       batch_chars=st.integers(1, 200))
def test_memoized_encoding_and_array_assembly_match_the_plain_way(layouts, max_tokens, batch_chars):
    plain_tok, memo_tok = FakeTokenizer(), FakeTokenizer()
    results = list(encode_layouts(memo_tok, iter(layouts), batch_chars=batch_chars))
    assert [lay for lay, _ in results] == layouts
    # every distinct text encoded exactly once
    content = [s.text for lay in layouts for s in lay if not s.special]
    assert sorted(memo_tok.encoded) == sorted(set(t.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                                                  for t in content))
    for lay, encoded in results:
        plain = plain_tok.encode([s.text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                                  for s in lay if not s.special])
        assert [e.tolist() for e in encoded] == plain
        want = reference_assemble(CHANGE, lay, plain, plain_tok, max_tokens, "train")
        got = assemble(CHANGE, lay, encoded, memo_tok, max_tokens, "train")
        assert (got.skip, got.truncated) == (want.skip, want.truncated)
        assert got.example == want.example
        packed = assemble(CHANGE, lay, encoded, memo_tok, max_tokens, "train", packed=True)
        if want.example is None:
            assert packed.example is None
            continue
        assert isinstance(packed.example["input_ids"], np.ndarray)
        assert unpack(packed.example) == want.example
        assert all(type(x) is int for f in ("input_ids", "labels", "attention_mask") for x in got.example[f])
        assert type(got.example["n_tokens"]) is int and type(got.example["n_target_tokens"]) is int
        # plain lists in, the same example out
        assert assemble(CHANGE, lay, plain, plain_tok, max_tokens, "train").example == want.example


def test_encode_all_keeps_its_shape():
    lays = [[Segment("a", "x"), Segment("t", "<s>", special=True), Segment("b", "yy")], [Segment("a", "x")]]
    tok = FakeTokenizer()
    out = list(encode_all(tok, lays))
    assert [[list(ids) for ids in enc] for enc in out] == [FakeTokenizer().encode(["x", "yy"]),
                                                          FakeTokenizer().encode(["x"])]
    assert tok.encoded == ["x", "yy"]


def test_memo_matches_the_bpe_tokenizer_text_by_text(tmp_path: Path):
    pytest.importorskip("tokenizers")
    from plugins.tokenizers import BpeTokenizer, BpeTokenizerConfig

    corpus = [f"pub fn f{i}(x: u{8 << (i % 4)}) -> bool {{ x > {i} }}\n" * (1 + i % 3) for i in range(60)]
    tok = BpeTokenizer(BpeTokenizerConfig(vocab_size=300, min_frequency=1))
    tok.prepare(SPECIALS, lambda: iter(corpus), tmp_path)
    layouts = [[Segment("c", corpus[(i * 7) % 60]), Segment("e", "</s>", special=True), Segment("n", corpus[i % 13])]
               for i in range(80)]
    for lay, encoded in encode_layouts(tok, layouts, batch_chars=500):
        assert [e.tolist() for e in encoded] == tok.encode([s.text for s in lay if not s.special])
    assert tok._pieces is None  # what it kept to encode them is forgotten once they are all encoded


_PATHS = st.sampled_from(["src/a.rs", "src/ü.rs", b"src/caf\xe9.rs".decode("utf-8", "surrogateescape")])


@st.composite
def _packed_examples(draw):
    from core.examples import TrainedRuns, packed_example

    n = draw(st.integers(0, 40))
    ids = np.array(draw(st.lists(st.sampled_from([0, 7, 9, 10, 99, 100, 12345, 2**31 - 1]), min_size=n, max_size=n)),
                   dtype=np.int32)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    runs = TrainedRuns(tuple(zip(cuts[::2], cuts[1::2])))  # some empty, some touching
    change = {"id": "x", "repo": "r", "commit": "c", "time": "t", "path": draw(_PATHS), "qualname": "q",
              "change": "modified", "kind": "fn"}
    example = packed_example(change, "train", ids, runs, [["new_code", 0, n]], n, 0)
    extra = draw(st.sampled_from([None, "first", "last", "float", "reordered", "ids_first", "ids_last"]))
    seqs = ["input_ids", "attention_mask", "labels"]
    others = [k for k in example if k not in seqs]
    if extra in ("ids_first", "ids_last"):  # nothing before the token sequences, or after them
        order = seqs + others if extra == "ids_first" else others + seqs
        example = {k: example[k] for k in order}
    if extra == "first":
        example = {"note": "x", **example}
    elif extra == "last":
        example["note"] = [1, "y"]
    elif extra == "float":
        example["score"] = 0.5
    elif extra == "reordered":
        example["attention_mask"] = example.pop("attention_mask")
    return example


@settings(max_examples=400, deadline=None)
@given(_packed_examples())
def test_a_packed_examples_line_is_the_line_of_its_arrays(example):
    from core.examples import materialize, packed_json_line
    from core.files import fast_json_line

    assert packed_json_line(example) == fast_json_line(materialize(example))


def test_a_packed_examples_line_without_orjson_is_the_plain_line(monkeypatch):
    from core import examples
    from core.examples import TrainedRuns, materialize, packed_example, packed_json_line
    from core.files import fast_json_line

    change = {"id": "x", "repo": "r", "commit": "c", "time": "t", "path": "p", "qualname": "q", "change": "added",
              "kind": "fn"}
    example = packed_example(change, "val", np.array([5, 6, 7], dtype=np.int32), TrainedRuns(((1, 3),)), [], 3, 2)
    line = packed_json_line(example)
    assert line == fast_json_line(materialize(example))
    assert b'"attention_mask":[1,1,1],"labels":[-100,6,7]' in line
    monkeypatch.setattr(examples, "orjson", None)
    assert packed_json_line(example) == line
