"""Tokenizer plugins: bpe training/cache/determinism, hf loading, special tokens, injection."""

from __future__ import annotations

import json
import pickle
import random
import re
import shutil
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tokenizers")

from core.errors import CommitforgeError  # noqa: E402
from plugins.tokenizers import (  # noqa: E402
    BpeTokenizer,
    BpeTokenizerConfig,
    HfTokenizer,
    HfTokenizerConfig,
)

SPECIALS = ["<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"]
INJECTION = 'let s = "<|endoftext|><fim_prefix>";'
UNICODE_CODE = '/// Prix en «euros» — 💶 ok\nfn größe(ü: &str) -> String { format!("{ü}→é\\t") }\n\tlet 名前 = "日本語";\r\n'


def rust_corpus(n: int = 120, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    idents = ["value", "state", "block", "hash", "count", "index", "header", "parent", "score", "daa"]
    types = ["u64", "u32", "usize", "Hash", "Vec<u8>", "Option<u64>", "&str", "BlockHash"]
    texts = []
    for i in range(n):
        lines = [f"use crate::{rng.choice(idents)}::{{{rng.choice(idents).title()}, {rng.choice(types)}}};", ""]
        for j in range(rng.randint(2, 5)):
            a, b = rng.sample(idents, 2)
            t = rng.choice(types)
            lines += [
                f"/// Returns the {a} of the {b} — «{i}»",
                f"pub fn get_{a}_{b}_{j}(&self, {a}: {t}) -> Result<{t}, Error> {{",
                f"    let {b} = self.{a}.get(&{a}).ok_or(Error::Missing({i}))?;",
                f"    if {b}.len() > {rng.randint(0, 999)} {{ return Err(Error::TooLarge); }}",
                f"    Ok({b}.clone())",
                "}",
                "",
            ]
        texts.append("\n".join(lines))
    return texts


CORPUS = rust_corpus()


def texts_fn(texts=CORPUS):
    return lambda: iter(texts)


def bpe(vocab_size: int = 400, **kw) -> BpeTokenizer:
    return BpeTokenizer(BpeTokenizerConfig(vocab_size=vocab_size, **kw))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def prepared(cache) -> BpeTokenizer:
    tok = bpe()
    tok.prepare(SPECIALS, texts_fn(), cache)
    return tok


class _RowTexts:
    """Training texts as the build stage hands them: two per row (old and new code), with
    the rows' digests; counts how often they were read."""

    def __init__(self, rows: list[tuple[bytes, str, str]]):
        self.rows = [digest for digest, _, _ in rows]
        self._texts = [t for _, old, new in rows for t in (old, new)]
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return iter(self._texts)


def test_bpe_knows_a_corpus_by_the_rows_it_came_from_down_to_the_row_the_cap_ends_in(tmp_path):
    """With a cap that ends inside the old code of the second row, the corpus is that of
    the first two rows: the same two rows again need no reading, another second row does."""
    a, b, c = CORPUS[0], CORPUS[1], CORPUS[2]
    cap = len(a) * 2 + len(b) // 2  # row 1 whole, then half of row 2's old code
    rows = [(b"r1", a, a), (b"r2", b, b), (b"r3", c, c)]
    first = _RowTexts(rows)
    bpe(max_training_chars=cap).prepare(SPECIALS, first, tmp_path)
    same_start = _RowTexts(rows[:2] + [(b"r9", c, b)])
    again = bpe(max_training_chars=cap)
    again.prepare(SPECIALS, same_start, tmp_path)
    assert first.reads == 1 and same_start.reads == 0 and not again.trained
    other_second = _RowTexts([rows[0], (b"r2x", c, b), rows[2]])
    other = bpe(max_training_chars=cap)
    other.prepare(SPECIALS, other_second, tmp_path)
    assert other_second.reads == 1 and other.trained and other.identity != again.identity
    (tmp_path / "tokenizers" / "corpora.json").write_text("{not json")  # unreadable: read the rows again
    unread = _RowTexts(rows)
    bpe(max_training_chars=cap).prepare(SPECIALS, unread, tmp_path)
    assert unread.reads == 1


def test_bpe_known_corpora_are_kept_apart_by_cap_version_and_whether_every_row_was_taken(tmp_path):
    import json

    rows = [(b"r1", CORPUS[0], CORPUS[1]), (b"r2", CORPUS[2], CORPUS[3])]
    everything = sum(len(t) for _, old, new in rows for t in (old, new)) + 10  # no cap reached

    def prepare(tok, texts):
        tok.prepare(SPECIALS, texts, tmp_path)
        return texts.reads, tok

    assert prepare(bpe(max_training_chars=everything), _RowTexts(rows))[0] == 1
    assert prepare(bpe(max_training_chars=everything), _RowTexts(rows))[0] == 0  # exactly the same rows
    assert prepare(bpe(max_training_chars=everything), _RowTexts(rows + [(b"r3", "x", "y")]))[0] == 1
    assert prepare(bpe(max_training_chars=everything - 20), _RowTexts(rows))[0] == 1  # another cap
    reads, tok = prepare(bpe(vocab_size=420, max_training_chars=everything), _RowTexts(rows))
    assert reads == 1 and tok.trained  # the corpus was known, not a tokenizer of these settings: read to train
    reads, tok = prepare(bpe(vocab_size=420, max_training_chars=everything), _RowTexts(rows))
    assert reads == 0 and not tok.trained
    corpora = tmp_path / "tokenizers" / "corpora.json"
    entries = json.loads(corpora.read_text())
    corpora.write_text(json.dumps([dict(e, corpus=e["corpus"] + 1) for e in entries]))  # another way of taking texts
    assert prepare(bpe(max_training_chars=everything), _RowTexts(rows))[0] == 1


def test_bpe_trains_caches_and_reloads(tmp_path):
    first = bpe()
    first.prepare(SPECIALS, texts_fn(), tmp_path)
    assert first.trained
    assert first.path.parent == tmp_path / "tokenizers" and first.path.name.startswith("bpe-")
    assert sorted(p.name for p in first.path.iterdir()) == ["special_tokens_map.json", "tokenizer.json",
                                                            "tokenizer_config.json"]
    assert not [p for p in first.path.parent.iterdir() if p.name.startswith(".")]  # no temp dir left
    mtime = (first.path / "tokenizer.json").stat().st_mtime_ns

    second = bpe()
    t0 = time.perf_counter()
    second.prepare(SPECIALS, texts_fn(), tmp_path)
    assert time.perf_counter() - t0 < 5
    assert not second.trained
    assert second.path == first.path
    assert (second.path / "tokenizer.json").stat().st_mtime_ns == mtime
    assert second.identity == first.identity
    assert second.encode(CORPUS[:5]) == first.encode(CORPUS[:5])

    # other text or other settings: another cache entry
    third = bpe()
    third.prepare(SPECIALS, texts_fn(CORPUS[:-1]), tmp_path)
    fourth = bpe(vocab_size=450)
    fourth.prepare(SPECIALS, texts_fn(), tmp_path)
    assert third.trained and fourth.trained
    assert len({first.path, third.path, fourth.path}) == 3


def test_bpe_identity(prepared):
    ident = prepared.identity
    assert set(ident) == {"plugin", "name_or_path", "sha256", "vocab_size", "base_vocab_size"}
    assert ident["plugin"] == "bpe"
    assert ident["name_or_path"] == str(prepared.path)
    data = (prepared.path / "tokenizer.json").read_bytes()
    import hashlib
    assert ident["sha256"] == hashlib.sha256(data).hexdigest()
    assert ident["base_vocab_size"] == 400
    assert ident["vocab_size"] == 400 + 3
    assert prepared.eos_token == "<|endoftext|>"


def test_training_is_deterministic(tmp_path):
    corpus = rust_corpus(200, seed=7)
    a, b = bpe(450), bpe(450)
    a.prepare([], texts_fn(corpus), tmp_path / "a")
    b.prepare([], texts_fn(corpus), tmp_path / "b")
    assert a.trained and b.trained
    ja, jb = (a.path / "tokenizer.json").read_bytes(), (b.path / "tokenizer.json").read_bytes()
    assert ja == jb
    assert a.path.name == b.path.name
    # and in another process (other hash seeds, other thread scheduling)
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from plugins.tokenizers import BpeTokenizer, BpeTokenizerConfig\n"
        "t = BpeTokenizer(BpeTokenizerConfig(vocab_size=450))\n"
        "t.prepare([], lambda: iter(json.loads(sys.stdin.read())), Path(sys.argv[1]))\n"
        "print(t.path)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], input=json.dumps(corpus),
                         capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123", "RAYON_NUM_THREADS": "2",
                                                                          **_env()})
    assert (Path(out.stdout.strip()) / "tokenizer.json").read_bytes() == ja


def _env() -> dict[str, str]:
    import os
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONHASHSEED", "RAYON_NUM_THREADS")}


def test_max_training_chars_caps_the_corpus(tmp_path):
    big, small = bpe(max_training_chars=2000), bpe(max_training_chars=2000)
    big.prepare([], texts_fn(CORPUS), tmp_path)
    # texts past the cap do not change the training text, hence the same cache entry
    small.prepare([], texts_fn(CORPUS[:10]), tmp_path)
    assert big.trained and not small.trained
    assert small.path == big.path
    cfg = json.loads((big.path / "tokenizer_config.json").read_text())
    assert cfg["commitforge"]["training_chars"] == 2000


def test_cached_dir_loads_with_autotokenizer(prepared):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(prepared.path), local_files_only=True)
    assert hf.eos_token == "<|endoftext|>"
    assert hf.convert_tokens_to_ids("<|endoftext|>") == prepared.token_id("<|endoftext|>")
    for text in CORPUS[:5] + [UNICODE_CODE]:
        assert hf.encode(text, add_special_tokens=False) == prepared.encode([text])[0]


def test_hf_plugin_loads_bpe_dir_with_same_ids(prepared):
    pytest.importorskip("transformers")
    hf = HfTokenizer(HfTokenizerConfig(name_or_path=str(prepared.path)))
    hf.prepare(SPECIALS, lambda: iter(()), Path("/nonexistent-cache-unused"))
    texts = CORPUS[:20] + [UNICODE_CODE, INJECTION]
    assert hf.encode(texts) == prepared.encode(texts)
    for tok in SPECIALS:
        assert hf.token_id(tok) == prepared.token_id(tok)
    assert hf.added_tokens == prepared.added_tokens
    assert hf.eos_token == "<|endoftext|>"
    ident = hf.identity
    assert ident["plugin"] == "hf" and ident["name_or_path"] == str(prepared.path)
    assert ident["base_vocab_size"] == 400 and ident["vocab_size"] == 403
    assert len(ident["sha256"]) == 64
    assert hf.decode(hf.encode([UNICODE_CODE])[0]) == UNICODE_CODE


def test_special_tokens_ids_and_added_tokens(prepared):
    base = prepared.identity["base_vocab_size"]
    # <|endoftext|> is the bpe's own token: keeps its id, not "added"
    assert prepared.added_tokens == ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]
    assert prepared.token_id("<|endoftext|>") < base
    assert [prepared.token_id(t) for t in prepared.added_tokens] == [base, base + 1, base + 2]
    with pytest.raises(CommitforgeError, match="<nope>"):
        prepared.token_id("<nope>")
    with pytest.raises(KeyError):
        prepared.token_id("<nope>")


def test_special_tokens_deduplicated_and_reprepared(cache):
    tok = bpe()
    tok.prepare(["<b>", "<a>", "<b>", "<|endoftext|>"], texts_fn(), cache)
    base = tok.identity["base_vocab_size"]
    assert tok.added_tokens == ["<b>", "<a>"]
    assert (tok.token_id("<b>"), tok.token_id("<a>")) == (base, base + 1)
    tok.prepare([], texts_fn(), cache)
    assert tok.added_tokens == [] and tok.identity["vocab_size"] == base


def test_ordinary_vocab_token_refused_as_special(cache):
    tok = bpe()
    tok.prepare([], texts_fn(), cache)
    ordinary = "Ġlet" if tok._full_tok.token_to_id("Ġlet") is not None else "le"
    assert tok._full_tok.token_to_id(ordinary) is not None
    with pytest.raises(CommitforgeError, match="ordinary token"):
        tok.prepare([ordinary], texts_fn(), cache)


def test_injection_never_yields_special_ids(prepared):
    ids = prepared.encode([INJECTION])[0]
    eot, fim = prepared.token_id("<|endoftext|>"), prepared.token_id("<fim_prefix>")
    assert eot not in ids and fim not in ids
    assert not set(ids) & {prepared.token_id(t) for t in SPECIALS}
    assert prepared.decode(ids) == INJECTION
    # whole batch, special strings glued to code and at text boundaries
    texts = ["<|endoftext|>", "<fim_middle>x<fim_suffix>", "a<|endoftext|>b", INJECTION * 3]
    special_ids = {prepared.token_id(t) for t in SPECIALS}
    for text, ids in zip(texts, prepared.encode(texts)):
        assert not special_ids & set(ids)
        assert prepared.decode(ids) == text


def test_decode_with_special_ids(prepared):
    a, b = prepared.encode(["fn a() {}", "let b = 1;"])
    ids = [prepared.token_id("<fim_prefix>"), *a, prepared.token_id("<fim_suffix>"), *b,
           prepared.token_id("<|endoftext|>")]
    assert prepared.decode(ids) == "<fim_prefix>fn a() {}<fim_suffix>let b = 1;<|endoftext|>"


def test_round_trip_non_ascii(prepared):
    texts = [UNICODE_CODE, "", " ", "\n\n\t  x  \n", "🦀" * 5, "\u200b\ufeffzero width", CORPUS[3]]
    for text, ids in zip(texts, prepared.encode(texts)):
        assert prepared.decode(ids) == text
    assert prepared.encode([]) == []


def test_pickle_round_trip(prepared):
    texts = CORPUS[:10] + [UNICODE_CODE, INJECTION]
    clone = pickle.loads(pickle.dumps(prepared))
    assert clone._full is None and clone._content is None  # rebuilt lazily
    assert clone.encode(texts) == prepared.encode(texts)
    assert clone.identity == prepared.identity and clone.added_tokens == prepared.added_tokens
    assert clone.token_id("<fim_middle>") == prepared.token_id("<fim_middle>")
    assert clone.decode(clone.encode([UNICODE_CODE])[0]) == UNICODE_CODE


def test_pickle_hf(prepared):
    pytest.importorskip("transformers")
    hf = HfTokenizer(HfTokenizerConfig(name_or_path=str(prepared.path)))
    hf.prepare(SPECIALS, lambda: iter(()), Path("."))
    clone = pickle.loads(pickle.dumps(hf))
    assert clone.encode(CORPUS[:5]) == hf.encode(CORPUS[:5])


def test_use_before_prepare_is_an_error():
    with pytest.raises(CommitforgeError, match="prepare"):
        bpe().encode(["x"])


def test_hf_missing_path_fails_naming_it(tmp_path):
    pytest.importorskip("transformers")
    missing = str(tmp_path / "no-such-tokenizer")
    with pytest.raises(CommitforgeError, match="no-such-tokenizer") as err:
        HfTokenizer(HfTokenizerConfig(name_or_path=missing)).prepare([], lambda: iter(()), tmp_path)
    assert "local directory" in str(err.value) and "\n" not in str(err.value)


def test_hf_unreachable_hub_id_fails_naming_it(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(CommitforgeError, match="some-org/some-model") as err:
        HfTokenizer(HfTokenizerConfig(name_or_path="some-org/some-model")).prepare([], lambda: iter(()), tmp_path)
    assert "local directory" in str(err.value) and "\n" not in str(err.value)


def test_hf_dir_without_tokenizer_fails(tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CommitforgeError, match="empty"):
        HfTokenizer(HfTokenizerConfig(name_or_path=str(tmp_path / "empty"))).prepare([], lambda: iter(()), tmp_path)


def test_hf_trust_remote_code_refused():
    with pytest.raises(CommitforgeError, match="trust_remote_code"):
        HfTokenizer(HfTokenizerConfig(name_or_path="/tmp", trust_remote_code=True))
    assert HfTokenizerConfig().trust_remote_code is False


@pytest.mark.parametrize("key, value", [("vocab_size", 100), ("min_frequency", 0), ("max_training_chars", 0)])
def test_bpe_bad_config(key, value):
    with pytest.raises(CommitforgeError, match=f"tokenizer.{key}={value}"):
        BpeTokenizer(BpeTokenizerConfig(**{key: value}))


def test_registered_through_pluggy():
    from core.registry import PluginRegistry
    import plugins.tokenizers as module

    reg = PluginRegistry(load_entry_points=False, builtins=(module,))
    assert reg.names("tokenizer") == ["bpe", "hf"]
    tok = reg.create("tokenizer", {"name": "bpe", "vocab_size": 300})
    assert isinstance(tok, BpeTokenizer) and tok.cfg.vocab_size == 300
    with pytest.raises(CommitforgeError, match="name_or_path"):
        reg.create("tokenizer", {"name": "hf"})


def test_lost_rename_race_uses_the_winners_copy(tmp_path, monkeypatch):
    winner = bpe()
    winner.prepare([], texts_fn(), tmp_path / "elsewhere")
    real_train = BpeTokenizer.train

    def train_while_another_process_finishes(self, texts, vocab_size=None):
        tok = real_train(self, texts, vocab_size)
        target = tmp_path / "cache" / "tokenizers" / winner.path.name
        target.mkdir(parents=True)
        for p in winner.path.iterdir():
            (target / p.name).write_bytes(p.read_bytes())
        (target / "winner").write_text("")
        return tok

    monkeypatch.setattr(BpeTokenizer, "train", train_while_another_process_finishes)
    loser = bpe()
    loser.prepare([], texts_fn(), tmp_path / "cache")
    assert (loser.path / "winner").exists()
    assert loser.identity["sha256"] == winner.identity["sha256"]
    assert [p.name for p in loser.path.parent.iterdir() if p.is_dir()] == [winner.path.name]  # temp dir removed


def _hf_tokenizer(d: Path, tok, unk_token: str) -> HfTokenizer:
    """The ``hf`` plugin on a directory holding ``tok`` (a ``tokenizers.Tokenizer``), with
    ``<s>`` as its bos token."""
    d.mkdir()
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                         "bos_token": "<s>", "unk_token": unk_token}))
    return HfTokenizer(HfTokenizerConfig(name_or_path=str(d)))


def test_guard_for_models_that_can_emit_special_tokens(tmp_path):
    """A word-level model whose vocabulary holds "<s>": text could produce its id, so encode refuses."""
    pytest.importorskip("transformers")
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"<s>": 0, "[UNK]": 1, "a": 2, "b": 3}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken("<s>", special=True, normalized=False)])
    hf = _hf_tokenizer(tmp_path / "wordlevel", tok, unk_token="[UNK]")
    with pytest.raises(CommitforgeError, match="'a' is an ordinary token"):
        hf.prepare(["a"], lambda: iter(()), tmp_path)
    hf.prepare(["<s>", "<x>"], lambda: iter(()), tmp_path)
    assert hf.token_id("<s>") == 0 and hf.token_id("<x>") == 4 and hf.added_tokens == ["<x>"]
    assert hf.eos_token is None
    assert hf.encode(["a b", "b <x>"]) == [[2, 3], [3, 1]]
    with pytest.raises(CommitforgeError, match="special token id"):
        hf.encode(["a <s> b"])


def test_byte_fallback_bpe_models_emit_their_byte_tokens_and_nothing_else(tmp_path):
    """A Llama-style BPE with byte fallback: a character outside the vocabulary comes out as
    a byte token such as ``<0x41>``, so that token is refused as a special token; ``<s>``,
    which no merge makes, is taken (and needs no guard)."""
    pytest.importorskip("transformers")
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "<0x41>": 2, "a": 3, "b": 4, "ab": 5}
    tok = Tokenizer(models.BPE(vocab, [("a", "b")], unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken("<s>", special=True, normalized=False)])
    assert tok.encode("A ab").ids == [2, 5]  # "A" is not in the vocabulary: its byte token
    hf = _hf_tokenizer(tmp_path / "byte-fallback", tok, unk_token="<unk>")
    with pytest.raises(CommitforgeError, match="'<0x41>' is an ordinary token"):
        hf.prepare(["<0x41>"], lambda: iter(()), tmp_path)
    hf.prepare(["<s>", "<x>"], lambda: iter(()), tmp_path)
    assert hf.token_id("<s>") == 1 and hf.token_id("<x>") == 6
    assert hf.encode(["A ab", "b"]) == [[2, 5], [4]]


# -- encoding by line pieces ----------------------------------------------------------------
LINE_TEXT = st.lists(st.sampled_from(list("ab1_ (){};:'\"\n\r\t\x0b\x0c\x85\u2028\u3000é日💶sxd")
                                     + ["'s", "'ll", "  ", "\n\n", " \n", "fn", "let"]), max_size=40).map("".join)


@pytest.fixture(scope="module")
def spacy(cache) -> BpeTokenizer:
    """Trained on blank lines and indentation: merges across line breaks and spaces exist."""
    tok = bpe(500, min_frequency=1)
    tok.prepare(SPECIALS, texts_fn([t.replace("\n", "\n\n    ") + " \n\t\n" for t in CORPUS]), cache)
    return tok


def test_bpe_encodes_line_pieces_exactly(spacy):
    prepared = spacy
    assert prepared._by_line
    # the tokenizer is one where a careless cut (before every line break) would change ids
    text = "let a = 1;\n\n    let b  \n\n    c"
    careless = [i for piece in re.split(r"(?=\n)", text) for i in prepared.encode([piece])[0]]
    plain = pickle.loads(pickle.dumps(prepared))
    plain._by_line = False
    assert careless != plain.encode([text])[0]
    plain._by_line = False
    texts = CORPUS[:20] + [UNICODE_CODE, INJECTION + "\n", "a\n\nb \n c\r\n\td", "x  \n\n  y", "\n", "", "'s\n's"]
    assert prepared.encode(texts) == plain.encode(texts)
    assert prepared.encode(texts[:1]) == plain.encode(texts[:1])

    @settings(max_examples=300, deadline=None)
    @given(st.lists(LINE_TEXT, min_size=1, max_size=6))
    def same(batch):
        assert prepared.encode(batch) == plain.encode(batch)

    same()


@settings(max_examples=500, deadline=None)
@given(LINE_TEXT)
def test_fast_line_cut_is_the_regex_split(text):
    from plugins.tokenizers import _cut_lines

    assert _cut_lines(text) == re.split(r"(?<=\S)(?=\n)", text)


def test_encode_arrays_are_the_ids_of_encode(spacy):
    texts = ["fn a() {}\n", "", "let b = 1;\n    c\n", "fn a() {}\n"]
    arrays = spacy.encode_arrays(texts)
    assert [a.dtype for a in arrays] == ["int32"] * 4 and not arrays[0].flags.writeable
    assert [a.tolist() for a in arrays] == spacy.encode(texts) and arrays[1].size == 0
    assert spacy.encode_arrays([]) == []


def test_line_pieces_only_for_a_plain_byte_level_bpe():
    from plugins.tokenizers import _line_pieces_exact

    spec = {"normalizer": None, "post_processor": None, "model": {"type": "BPE", "dropout": None},
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}}
    assert _line_pieces_exact(spec)
    assert not _line_pieces_exact({**spec, "pre_tokenizer": {**spec["pre_tokenizer"], "add_prefix_space": True}})
    assert not _line_pieces_exact({**spec, "normalizer": {"type": "NFC"}})
    assert not _line_pieces_exact({**spec, "model": {"type": "BPE", "dropout": 0.1}})
    assert not _line_pieces_exact({**spec, "model": {"type": "WordPiece"}})
    assert not _line_pieces_exact({**spec, "pre_tokenizer": {"type": "Sequence", "pretokenizers": []}})
    assert not _line_pieces_exact({**spec, "post_processor": {"type": "TemplateProcessing"}})


def test_line_pieces_are_encoded_once_across_calls(spacy, monkeypatch):
    from plugins.tokenizers import _cut_lines, _PieceIds

    plain = pickle.loads(pickle.dumps(spacy))
    plain._by_line = False
    content = spacy._content_tok
    asked: list[str] = []

    def batch(texts, add_special_tokens):
        asked.extend(texts)
        return content.encode_batch(texts, add_special_tokens=add_special_tokens)

    store = _PieceIds()
    first = ["fn a() {\n    let x = 1;\n}", "fn b() {\n    let x = 1;\n}"]
    second = ["fn a() {\n    let x = 2;\n}", "", "fn b() {\n    let x = 1;\n}\n"]
    for texts in (first, second):
        flat, ends = store.encode([_cut_lines(t) for t in texts], batch)
        cuts = [0, *ends.tolist()]
        assert [flat[a:b].tolist() for a, b in pairwise(cuts)] == plain.encode(texts)
    # every distinct piece was encoded once, in the call it first came in
    assert sorted(asked) == sorted({p for t in first + second for p in _cut_lines(t)})
    assert "\n}" in asked and asked.count("\n}") == 1

    # a store past its size empties itself, and goes on giving the right ids
    monkeypatch.setattr(_PieceIds, "MAX_IDS", 4)
    asked.clear()
    for texts in (first, second, first):
        flat, ends = store.encode([_cut_lines(t) for t in texts], batch)
        cuts = [0, *ends.tolist()]
        assert [flat[a:b].tolist() for a, b in pairwise(cuts)] == plain.encode(texts)
    assert asked.count("\n}") == 3


def test_texts_cut_by_the_caller_encode_as_texts_cut_here(spacy):
    texts = ["fn a() {\n    x\n}", "", "let b  \n\n  c\n"]
    pieces = spacy.cut(texts)
    assert pieces == [["fn a() {", "\n    x", "\n}"], [""], ["let b  \n\n  c", "\n"]]
    assert [a.tolist() for a in spacy.encode_arrays(texts, pieces)] == spacy.encode(texts)
    plain = pickle.loads(pickle.dumps(spacy))
    plain._by_line = False
    assert plain.cut(texts) is None  # a tokenizer that encodes texts whole takes no pieces


def test_a_cleared_cache_forgets_the_pieces_and_encodes_the_same(spacy):
    texts = ["fn a() {\n    x\n}", "let b  \n\n  c\n"]
    before = spacy.encode(texts)
    assert spacy._pieces is not None and spacy._pieces.number
    spacy.clear_cache()
    assert spacy._pieces is None
    assert spacy.encode(texts) == before


@pytest.fixture
def small_store(monkeypatch):
    """Pieces are loaded and saved from the first character (the defaults wait for 1 MB)."""
    from plugins.tokenizers import _PieceStore

    monkeypatch.setattr(_PieceStore, "LOAD_CHARS", 1)
    monkeypatch.setattr(_PieceStore, "SAVE_CHARS", 1)
    return _PieceStore


def _fresh(tok: BpeTokenizer) -> BpeTokenizer:
    """Another object of the same tokenizer (as a later run loads it): no pieces, no store."""
    other = pickle.loads(pickle.dumps(tok))
    assert other._pieces is None and other._piece_root is None
    return other


def test_kept_pieces_serve_a_later_tokenizer_and_give_the_same_ids(spacy, small_store, tmp_path):
    texts = CORPUS[:30] + [UNICODE_CODE, INJECTION + "\n", "x  \n\n  y", ""]
    plain = _fresh(spacy)
    plain._by_line = False
    expected = plain.encode(texts)
    first = _fresh(spacy)
    first.keep_pieces_in(tmp_path)
    assert first.encode(texts) == expected
    first.clear_cache()
    first.wait_saved()
    files = list((tmp_path / "pieces-f1").glob("*.lz4"))
    assert len(files) == 1

    later = _fresh(spacy)
    later.keep_pieces_in(tmp_path)
    assert later.encode(texts) == expected
    memo = later._pieces
    assert memo.loaded and memo.encoded_chars == 0  # every piece came from the store
    assert memo.store._claim is None  # given up once loaded: no other build need wait for this one
    # a text with new lines encodes those alone, and the right ids come out
    more = ["fn never_seen_before() {\n    let q = 7;\n}"]
    assert later.encode(more) == plain.encode(more)
    assert 0 < memo.encoded_chars <= len(more[0])


def test_a_damaged_piece_file_is_a_miss_and_is_removed(spacy, small_store, tmp_path):
    texts = CORPUS[:10]
    first = _fresh(spacy)
    first.keep_pieces_in(tmp_path)
    expected = first.encode(texts)
    first.clear_cache()
    first.wait_saved()
    (path,) = (tmp_path / "pieces-f1").glob("*.lz4")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    later = _fresh(spacy)
    later.keep_pieces_in(tmp_path)
    assert later.encode(texts) == expected
    assert later._pieces.loaded and later._pieces.encoded_chars > 0
    assert not path.exists()


def test_another_tokenizer_never_reads_the_pieces_of_one(spacy, prepared, small_store, tmp_path):
    texts = CORPUS[:10]
    first = _fresh(spacy)
    first.keep_pieces_in(tmp_path)
    first.encode(texts)
    first.clear_cache()
    first.wait_saved()
    other = _fresh(prepared)  # another vocabulary: its own key, its own file
    other.keep_pieces_in(tmp_path)
    plain = _fresh(prepared)
    plain._by_line = False
    assert other.encode(texts) == plain.encode(texts)
    assert other._pieces.encoded_chars > 0
    other.clear_cache()
    other.wait_saved()
    assert len(list((tmp_path / "pieces-f1").glob("*.lz4"))) == 2


def test_pieces_are_loaded_only_when_many_are_new_and_saved_only_when_many_were_encoded(spacy, tmp_path,
                                                                                          monkeypatch):
    from plugins.tokenizers import _PieceStore

    monkeypatch.setattr(_PieceStore, "SAVE_CHARS", 1)
    first = _fresh(spacy)
    first.keep_pieces_in(tmp_path)
    first.encode(CORPUS[:10])
    first.clear_cache()
    first.wait_saved()
    assert list((tmp_path / "pieces-f1").glob("*.lz4"))
    # an update's few new rows: fewer new characters than loading pays for
    monkeypatch.setattr(_PieceStore, "LOAD_CHARS", 10 ** 9)
    monkeypatch.setattr(_PieceStore, "SAVE_CHARS", 10 ** 9)
    later = _fresh(spacy)
    later.keep_pieces_in(tmp_path)
    later.encode(CORPUS[:10])
    assert not later._pieces.loaded and later._pieces.encoded_chars > 0
    stamp = next((tmp_path / "pieces-f1").glob("*.lz4")).stat().st_mtime_ns
    later.clear_cache()
    later.wait_saved()
    assert next((tmp_path / "pieces-f1").glob("*.lz4")).stat().st_mtime_ns == stamp  # not written again


def test_only_the_piece_files_saved_last_are_kept(spacy, small_store, tmp_path, monkeypatch):
    monkeypatch.setattr(small_store, "FILES_KEPT", 2)
    for k in range(4):
        tok = _fresh(spacy)
        monkeypatch.setattr(type(tok), "_piece_key", lambda self, k=k: f"key{k}")
        tok.keep_pieces_in(tmp_path)
        tok.encode([f"fn f{k}() {{}}\n"])
        tok.clear_cache()
        tok.wait_saved()
        time.sleep(0.01)  # distinct modification times
    assert sorted(p.name for p in (tmp_path / "pieces-f1").glob("*.lz4")) == ["key2.lz4", "key3.lz4"]


def test_pieces_loaded_over_ones_known_already_are_saved_with_the_right_ids(spacy, small_store, tmp_path,
                                                                          monkeypatch):
    a, b, c = CORPUS[:8], CORPUS[4:12], CORPUS[12:16] + [UNICODE_CODE]
    plain = _fresh(spacy)
    plain._by_line = False
    first = _fresh(spacy)
    first.keep_pieces_in(tmp_path)
    first.encode(a)
    first.clear_cache()
    first.wait_saved()
    second = _fresh(spacy)
    second.keep_pieces_in(tmp_path)
    monkeypatch.setattr(small_store, "LOAD_CHARS", 10 ** 9)
    assert second.encode(b) == plain.encode(b)  # pieces of a and b known before the store is read
    monkeypatch.setattr(small_store, "LOAD_CHARS", 1)
    assert second.encode(c) == plain.encode(c)
    assert second._pieces.loaded
    second.clear_cache()
    second.wait_saved()
    third = _fresh(spacy)
    third.keep_pieces_in(tmp_path)
    assert third.encode(a + b + c) == plain.encode(a + b + c)
    assert third._pieces.encoded_chars == 0


def test_a_build_encoding_the_pieces_another_is_encoding_waits_and_loads_them(spacy, small_store, tmp_path,
                                                                              monkeypatch):
    import threading

    texts = CORPUS[:20]
    plain = _fresh(spacy)
    plain._by_line = False
    first = _fresh(spacy)
    first.keep_pieces_in(tmp_path)
    first.encode(texts)  # holds the claim until its pieces are saved
    second = _fresh(spacy)
    second.keep_pieces_in(tmp_path)
    got: list = []
    waiting = threading.Thread(target=lambda: got.append(second.encode(texts)))
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive() and not got  # it waits for the first build's pieces
    first.clear_cache()
    first.wait_saved()
    waiting.join(10)
    assert got == [plain.encode(texts)]
    assert second._pieces.encoded_chars == 0  # all loaded, none encoded twice
    # the second build, which loaded them all, encodes no more: a third does not wait for it
    monkeypatch.setattr(small_store, "CLAIM_WAIT_S", 3.0)
    third = _fresh(spacy)
    third.keep_pieces_in(tmp_path)
    started = time.monotonic()
    assert third.encode(texts) == got[0]
    assert time.monotonic() - started < 2 and third._pieces.encoded_chars == 0


def test_a_claim_held_too_long_is_given_up(spacy, small_store, tmp_path, monkeypatch):
    monkeypatch.setattr(small_store, "CLAIM_WAIT_S", 0.2)
    texts = CORPUS[:5]
    first = _fresh(spacy)
    first.keep_pieces_in(tmp_path)
    first.encode(texts)  # never saved: its claim stays
    second = _fresh(spacy)
    second.keep_pieces_in(tmp_path)
    started = time.monotonic()
    assert second.encode(texts) == first.encode(texts)
    assert 0.2 <= time.monotonic() - started < 5 and second._pieces.encoded_chars > 0
    first.clear_cache()
    second.clear_cache()
    first.wait_saved()
    second.wait_saved()


def test_a_save_removes_what_a_killed_save_left_once_it_is_old(spacy, small_store, tmp_path):
    import os

    folder = tmp_path / "pieces-f1"
    folder.mkdir()
    old, recent = folder / ".k.lz4.abc.tmp", folder / ".k.lz4.def.tmp"
    for f in (old, recent):
        f.write_bytes(b"half a file")
    os.utime(old, (time.time() - 2 * small_store.LEFT_TMP_AGE_S,) * 2)
    tok = _fresh(spacy)
    tok.keep_pieces_in(tmp_path)
    tok.encode(CORPUS[:3])
    tok.clear_cache()
    tok.wait_saved()
    assert not old.exists() and recent.exists()  # a save may be writing the recent one
    assert len(list(folder.glob("*.lz4"))) == 1


def test_a_build_training_the_tokenizer_another_is_training_waits_and_loads_it(tmp_path):
    import shutil
    import threading

    from core.stage_cache import claim_for

    done = bpe()
    done.prepare(SPECIALS, texts_fn(), tmp_path / "elsewhere")
    assert done.trained
    name = done.path.name
    waiting = bpe()
    finished = threading.Event()
    claim_name = done.claim_name(done._training_corpus(texts_fn())[1])
    with claim_for(tmp_path / "cache", claim_name) as claim:  # another build, training on that corpus
        assert claim.held
        thread = threading.Thread(target=lambda: (waiting.prepare(SPECIALS, texts_fn(), tmp_path / "cache"),
                                                  finished.set()))
        thread.start()
        assert not finished.wait(0.5)  # it waits for the other build
        (tmp_path / "cache" / "tokenizers").mkdir(parents=True, exist_ok=True)
        shutil.copytree(done.path, tmp_path / "cache" / "tokenizers" / name)  # what the other build trained
    thread.join(30)
    assert finished.is_set() and not waiting.trained  # loaded, not trained again
    assert waiting.encode(CORPUS[:3]) == done.encode(CORPUS[:3])


# -- one training for many vocabulary sizes ----------------------------------------------------
def test_derive_bpe_cuts_exactly_the_tokenizer_training_to_the_smaller_size_makes():
    from plugins.tokenizers import derive_bpe

    corpus = rust_corpus(80, seed=3)
    large = bpe(700, min_frequency=1).train(corpus).to_str()
    for size in (257, 258, 300, 512, 699, 700):
        assert derive_bpe(large, size, [SPECIALS[0]]) == bpe(size, min_frequency=1).train(corpus).to_str(), size
    # a training that ran out of merges (min_frequency) before its size serves every size
    short = bpe(5000, min_frequency=40).train(corpus)
    reached = short.get_vocab_size(with_added_tokens=False)
    assert 300 < reached < 5000
    for size in (300, reached, reached + 1, 9000):
        assert derive_bpe(short.to_str(), size, [SPECIALS[0]]) == bpe(size, min_frequency=40).train(corpus).to_str()
    # not the trainer's layout: nothing is cut
    doc = json.loads(large)
    doc["model"]["vocab"] = {t: i + 1 for t, i in doc["model"]["vocab"].items()}
    assert derive_bpe(json.dumps(doc), 300, [SPECIALS[0]]) is None
    assert derive_bpe(json.dumps({"model": {"type": "WordLevel", "vocab": {}}}), 300, [SPECIALS[0]]) is None


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_a_smaller_vocab_is_cut_from_a_larger_training_on_the_same_corpus(tmp_path):
    large = bpe(600)
    large.prepare(SPECIALS, texts_fn(), tmp_path / "cache")
    assert large.trained and not large.derived
    small = bpe(450)
    small.prepare(SPECIALS, texts_fn(), tmp_path / "cache")
    assert not small.trained and small.derived
    fresh = bpe(450)
    fresh.prepare(SPECIALS, texts_fn(), tmp_path / "fresh")
    assert fresh.trained
    # the same cached entry as training makes: directory name, tokenizer and its config
    assert small.path.name == fresh.path.name and _files(small.path) == _files(fresh.path)
    assert small.identity["sha256"] == fresh.identity["sha256"]
    assert small.encode(CORPUS[:4]) == fresh.encode(CORPUS[:4])
    again = bpe(450)
    again.prepare(SPECIALS, texts_fn(), tmp_path / "cache")
    assert not again.trained and not again.derived  # cached now
    # a larger size than any training reached is trained; so is another corpus or min_frequency
    for tok, texts in ((bpe(800), texts_fn()), (bpe(400), texts_fn(CORPUS[:-1])), (bpe(400, min_frequency=3), texts_fn())):
        tok.prepare(SPECIALS, texts, tmp_path / "cache")
        assert tok.trained and not tok.derived
    # a training whose directory is gone (the cache pruned) is not used
    for d in (tmp_path / "cache" / "tokenizers").glob("bpe-*"):
        shutil.rmtree(d)
    gone = bpe(500)
    gone.prepare(SPECIALS, texts_fn(), tmp_path / "cache")
    assert gone.trained


def test_a_sweep_trains_to_its_largest_size_once_and_cuts_the_others(tmp_path, monkeypatch):
    from plugins.tokenizers import BPE_TRAIN_VOCAB_ENV

    monkeypatch.setenv(BPE_TRAIN_VOCAB_ENV, "600")
    first = bpe(400)
    first.prepare(SPECIALS, texts_fn(), tmp_path / "cache")
    assert first.trained
    names = sorted(p.name for p in (tmp_path / "cache" / "tokenizers").glob("bpe-*"))
    assert len(names) == 2  # the training to 600 and the 400 cut from it
    others = [bpe(size) for size in (500, 600)]
    for tok in others:
        tok.prepare(SPECIALS, texts_fn(), tmp_path / "cache")
    assert not any(tok.trained for tok in others) and others[0].derived and not others[1].derived
    monkeypatch.delenv(BPE_TRAIN_VOCAB_ENV)
    for tok in (first, *others):  # each as its own training makes it
        alone = bpe(tok.cfg.vocab_size)
        alone.prepare(SPECIALS, texts_fn(), tmp_path / f"alone-{tok.cfg.vocab_size}")
        assert _files(alone.path) == _files(tok.path) and alone.trained
    # a size above the hint trains to its own size
    monkeypatch.setenv(BPE_TRAIN_VOCAB_ENV, "300")
    big = bpe(700)
    big.prepare(SPECIALS, texts_fn(), tmp_path / "cache")
    assert big.trained and json.loads((big.path / "tokenizer_config.json").read_text())["commitforge"]["vocab_size"] == 700
    monkeypatch.setenv(BPE_TRAIN_VOCAB_ENV, "lots")
    with pytest.raises(CommitforgeError, match=f"{BPE_TRAIN_VOCAB_ENV}='lots' is not a whole number"):
        bpe(450).prepare(SPECIALS, texts_fn(CORPUS[:-2]), tmp_path / "cache")


def test_a_cut_tokenizer_encodes_through_the_larger_training_and_gives_its_own_ids(small_store, tmp_path, monkeypatch):
    from plugins.tokenizers import BPE_TRAIN_VOCAB_ENV

    corpus = rust_corpus(150, seed=11)
    texts = corpus[:40] + [UNICODE_CODE, INJECTION + "\n", "x  \n\n  y\r\n\tz", "", "ééé 💶💶 \u0085 \u00a0", "a" * 300]
    monkeypatch.setenv(BPE_TRAIN_VOCAB_ENV, "900")
    cut = [bpe(size, min_frequency=1) for size in (300, 520, 900)]
    for tok in cut:
        tok.prepare(SPECIALS, texts_fn(corpus), tmp_path / "cache")
    monkeypatch.delenv(BPE_TRAIN_VOCAB_ENV)
    assert cut[0]._coarser is not None and cut[1]._coarser is not None and cut[2]._coarser is None
    expected_by_size = {}
    for tok in cut:
        alone = bpe(tok.cfg.vocab_size, min_frequency=1)
        alone.prepare(SPECIALS, texts_fn(corpus), tmp_path / f"alone-{tok.cfg.vocab_size}")
        assert alone._coarser is None and _files(alone.path) == _files(tok.path)
        expected = expected_by_size[tok.cfg.vocab_size] = alone.encode(texts)
        assert tok.encode(texts) == expected  # by line pieces
        whole = _fresh(tok)
        whole._by_line = False
        assert whole.encode(texts) == expected  # whole texts
        assert _fresh(tok).encode(texts[::-1]) == expected[::-1]  # pickled (a worker), other order
    # the pieces are kept by the larger tokenizer's key: the first size encodes them, the
    # next only maps them
    first = _fresh(cut[0])
    first.keep_pieces_in(tmp_path / "cache")
    assert first.encode(texts) == expected_by_size[300]
    first.clear_cache()
    first.wait_saved()
    assert len(list((tmp_path / "cache" / "pieces-f1").glob("*.lz4"))) == 1
    later = _fresh(cut[1])
    later.keep_pieces_in(tmp_path / "cache")
    assert later.encode(texts) == expected_by_size[520]
    assert later._pieces.loaded and later._pieces.encoded_chars == 0

