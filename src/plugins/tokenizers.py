"""Tokenizers ``hf`` (a pretrained tokenizer via transformers) and ``bpe`` (a byte-level
BPE trained on the corpus and cached).

Both plugins implement the same interface::

    prepare(special_tokens, training_texts, cache_dir)   # load / train-or-load, then map special tokens
    identity: dict        # plugin, name_or_path, sha256, vocab_size (incl. added), base_vocab_size
    added_tokens: list    # special tokens that were not in the base vocabulary (resize embeddings)
    eos_token: str | None
    encode(texts) -> list[list[int]]   # ordinary text only: never yields a special/added token id
    encode_arrays(texts) -> list[np.ndarray]   # the same as int32 arrays (what the build stage uses)
    cut(texts) -> list[list[str]] | None   # the pieces encode_arrays encodes by, for encode_arrays(texts, pieces)
    clear_cache()         # forget what encoding kept to go faster (the build stage calls it when done)
    token_id(token) -> int
    decode(ids) -> str

Content is encoded with a copy of the Rust tokenizer whose added-tokens list is empty, so a
string literal ``"<|endoftext|><fim_prefix>"`` in source code is ordinary text. Special tokens
are mapped to ids here: a token already in the vocabulary keeps its id, the others get
``base_vocab_size + k`` in order. Plugin objects pickle as JSON strings and rebuild their
Rust tokenizers lazily, so they can be sent to worker processes.

``tokenizers`` (a core dependency) and ``transformers`` (optional, ``pip install
'commitforge[hf]'``, for the hf plugin) are imported only when a tokenizer is prepared or used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from core.cache_admin import PIECES_DIR, PIECES_FORMAT, TOKENIZERS_DIR
from core.errors import CommitforgeError
from core.files import ATOMIC_TEMPORARIES, atomic_write
from core.hookspecs import hookimpl
from core.stage_cache import Claim, claim_for

BPE_EOS = "<|endoftext|>"
# bump when the training recipe or the cached directory layout changes
_BPE_FORMAT = 1
# train the bpe tokenizer to this vocabulary size when it is larger than tokenizer.vocab_size,
# and keep the first vocab_size tokens: a sweep over tokenizer.vocab_size sets it to its
# largest value (core.cli), so that one training serves all its jobs (see derive_bpe)
BPE_TRAIN_VOCAB_ENV = "COMMITFORGE_BPE_TRAIN_VOCAB"
_HF_EXTRA = "pip install 'commitforge[hf]'"


class UnknownTokenError(CommitforgeError, KeyError):
    """``token_id`` of a token that is neither a prepared special token nor one of the tokenizer's own."""

    __str__ = BaseException.__str__  # KeyError would quote the message


def _import_tokenizers(plugin: str):
    try:
        import tokenizers
    except ImportError:
        raise CommitforgeError(f"the {plugin} tokenizer needs tokenizers: pip install tokenizers") from None
    return tokenizers


def _sha256(data: str | bytes) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# -- what a model can produce from ordinary text --------------------------------------------
def _producible(model: dict, token: str) -> bool:
    """Whether ``model`` (a tokenizers model as JSON) may emit ``token`` for ordinary text.

    Exact enough for BPE (the only way to a multi-character token is a merge, unless
    ``ignore_merges`` looks whole words up in the vocabulary); conservative (True) otherwise.
    """
    if model.get("type") != "BPE" or model.get("ignore_merges"):
        return True
    if token == model.get("unk_token"):
        return True
    if model.get("byte_fallback") and re.fullmatch(r"<0x[0-9A-F]{2}>", token):
        return True
    affix = len(model.get("continuing_subword_prefix") or "") + len(model.get("end_of_word_suffix") or "")
    if len(token) <= 1 + affix:
        return True
    for merge in model.get("merges", ()):
        a, b = _merge_pair(merge)
        if a + b == token:
            return True
    return False


def _merge_pair(merge: str | list[str]) -> tuple[str, str]:
    """A BPE merge of a tokenizer's JSON as its two tokens (``["a", "b"]``, or ``"a b"`` as
    older versions of tokenizers write them)."""
    a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
    return a, b


def _cut_lines(text: str) -> list[str]:
    r"""``text`` cut before each line break that follows a non-space character (what
    ``re.split(r"(?<=\S)(?=\n)", text)`` gives, about 3x faster)."""
    lines = text.split("\n")
    if len(lines) == 1:
        return lines
    out = []
    piece = lines[0]
    for line in lines[1:]:
        if piece and not piece[-1].isspace():  # what \S matches
            out.append(piece)
            piece = "\n" + line
        else:
            piece += "\n" + line
    out.append(piece)
    return out


def _line_pieces_exact(spec: dict) -> bool:
    """Whether a text's ids are the concatenated ids of its pieces cut by ``_cut_lines``.

    True for a BPE behind GPT-2's byte-level split alone (the ``bpe`` plugin's recipe): no
    normalizer, no prefix space, nothing added around the text. Each of that regex's
    alternatives either stays within non-space characters or begins with a space, so none
    crosses a cut, and it looks neither behind nor (past a space) ahead: cut pieces split
    into the same pre-tokens, and BPE works pre-token by pre-token.
    """
    pre = spec.get("pre_tokenizer") or {}
    model = spec.get("model") or {}
    post = spec.get("post_processor")
    return (spec.get("normalizer") is None and pre.get("type") == "ByteLevel"
            and pre.get("add_prefix_space") is False and pre.get("use_regex", True) is True
            and model.get("type") == "BPE" and not model.get("dropout")
            and (post is None or post.get("type") == "ByteLevel"))


class _PieceStore:
    """The ids of the line pieces one content tokenizer encoded, kept in the cache directory
    (``pieces-f1/<key>.lz4``; the key: the tokenizer's JSON without added tokens and the
    tokenizers library's version). A build whose examples change but whose tokenizer does
    not (a sweep over ``builder.*`` or ``format``, another experiment on the same history)
    loads the pieces an earlier build encoded instead of encoding them again: rusty-kaspa's
    175,000 distinct pieces take seconds of BPE and load in a tenth of one.

    It is an LZ4 frame with a checksum: a damaged or unreadable file is a miss (and is
    removed). Files are replaced whole (an atomic rename), so builds running at once each
    read a complete file; the last to save wins, and a build about to load them waits for
    one that is encoding them (:meth:`claim`). The ``FILES_KEPT`` files saved last are kept.
    """

    FILES_KEPT = 4
    # load when a call brings at least this many characters of pieces not encoded yet (an
    # update's few new rows encode faster than the file loads), and save when at least this
    # many were encoded since
    LOAD_CHARS = 1 << 20
    SAVE_CHARS = 1 << 20

    # the longest a build waits for another that is encoding this tokenizer's pieces (two
    # builds encoding side by side on the same cores take as long as one after the other)
    CLAIM_WAIT_S = 600.0
    LEFT_TMP_AGE_S = 3600.0  # a temporary file this old is not being written

    def __init__(self, root: str | Path, key: str):
        self.folder = Path(root) / PIECES_DIR
        self.path = self.folder / f"{key}.lz4"
        self.key = key
        self._claim: Claim | None = None  # the claim this build holds

    def claim(self) -> None:
        """Take the right to encode this tokenizer's pieces before loading them: a build
        that has many to encode while another does (two sweep jobs started together)
        waits until the other saved them, then loads them instead of encoding them too
        (see core.stage_cache.claim_for). Held until :meth:`release`."""
        self.release()
        self._claim = claim_for(self.folder.parent, f"pieces-{self.key}", self.CLAIM_WAIT_S)

    def release(self) -> None:
        claim, self._claim = self._claim, None
        if claim is not None:
            claim.release()

    # the frame's content: this header, the key (ASCII), the pieces as a marshalled list
    # padded to 8 bytes, the ids (int32) padded to 8 bytes, the id count of each piece (int64)
    _HEADER = struct.Struct("<8sIIQQQ")
    _MAGIC = b"CFPIECES"

    def load(self) -> tuple[list[str], np.ndarray, np.ndarray] | None:
        """(pieces, their ids concatenated, each piece's id count), or None."""
        import marshal

        import lz4.frame

        try:
            data = self.path.read_bytes()
        except OSError:
            return None
        try:
            data = lz4.frame.decompress(data)
            magic, version, key_size, text_size, n_ids, n_pieces = self._HEADER.unpack_from(data)
            at = self._HEADER.size
            key = data[at:at + key_size].decode("ascii")
            at += key_size
            pieces = marshal.loads(data[at:at + text_size])
            at += _padded(text_size)
            ids = np.frombuffer(data, dtype=np.int32, count=n_ids, offset=at)
            counts = np.frombuffer(data, dtype=np.int64, count=n_pieces, offset=at + _padded(4 * n_ids))
            if magic != self._MAGIC or version != PIECES_FORMAT or key != self.key or type(pieces) is not list \
                    or len(pieces) != n_pieces or int(counts.sum()) != n_ids:
                raise ValueError("not this tokenizer's pieces")
        except (RuntimeError, ValueError, EOFError, TypeError, struct.error, UnicodeDecodeError):
            self.path.unlink(missing_ok=True)  # damaged: never read again
            return None
        return pieces, ids, counts

    def save(self, pieces: list[str], ids: np.ndarray, counts: np.ndarray) -> None:
        """Replace the file with these pieces; drop all but the newest ``FILES_KEPT`` files.
        Compressed as it is written (the ids are not copied). A cache that cannot be
        written keeps nothing (an optimisation, not an output)."""
        import marshal

        import lz4.frame

        text = marshal.dumps(pieces)
        key = self.key.encode("ascii")
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        counts = np.ascontiguousarray(counts, dtype=np.int64)
        header = self._HEADER.pack(self._MAGIC, PIECES_FORMAT, len(key), len(text), len(ids), len(counts))
        pad = b"\0" * 8
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.path) as fh:
                frame = lz4.frame.LZ4FrameCompressor(content_checksum=True)
                fh.write(frame.begin())
                for part in (header + key, text, pad[:_padded(len(text)) - len(text)], memoryview(ids).cast("B"),
                             pad[:_padded(4 * len(ids)) - 4 * len(ids)], memoryview(counts).cast("B")):
                    fh.write(frame.compress(part))
                fh.write(frame.flush())
            kept = sorted(self.folder.glob("*.lz4"), key=lambda f: f.stat().st_mtime, reverse=True)
            for old in kept[self.FILES_KEPT:]:
                old.unlink(missing_ok=True)
            for left in self.folder.glob(ATOMIC_TEMPORARIES):  # what a killed save left, once no save can be writing it
                if time.time() - left.stat().st_mtime > self.LEFT_TMP_AGE_S:
                    left.unlink(missing_ok=True)
        except OSError:
            pass


def _padded(size: int) -> int:
    """``size`` rounded up to a multiple of 8."""
    return -(-size // 8) * 8


class _PieceIds:
    """The token ids of the line pieces (``_cut_lines``) one tokenizer has encoded: a
    number per distinct piece, each number's ids at ``start[k]:start[k] + count[k]`` of
    one growing buffer. Emptied once it holds more than ``MAX_IDS`` ids (a history's
    distinct lines hold far fewer: 3.1 million for rusty-kaspa's examples). With a
    ``store`` (see :class:`_PieceStore`), the pieces an earlier build kept are loaded the
    first time many pieces are new, and :meth:`save` keeps them all for the next."""

    MAX_IDS = 1 << 24  # 64 MB of ids (and the pieces they are the ids of): five rusty-kaspas

    def __init__(self, store: _PieceStore | None = None, coarser: _Coarser | None = None) -> None:
        self.number: dict[str, int] = {}
        self.ids = np.empty(1 << 16, dtype=np.int32)
        self.start = np.empty(1 << 12, dtype=np.int64)
        self.count = np.empty(1 << 12, dtype=np.int64)
        self.size = 0  # ids held
        self.store = store
        self.loaded = False  # whether the store was read
        self.encoded_chars = 0  # characters of pieces encoded here (not loaded)
        # with a coarser: the ids above are the larger tokenizer's (those the store keeps),
        # and each piece's ids in the smaller one are mapped once, into these
        self.coarser = coarser
        self.out = _PieceIds() if coarser is not None else None

    def encode(self, pieces: list[list[str]], batch: Callable[..., Any]) -> tuple[np.ndarray, np.ndarray]:
        """(the ids of all texts, concatenated; where each text's end), for texts cut into
        ``pieces``; ``batch`` encodes the pieces not seen before."""
        if self.size > self.MAX_IDS:
            self.number.clear()
            self.size = 0
            if self.out is not None:
                self.out.size = 0
        every = list(chain.from_iterable(pieces))
        number = self.number
        new = [p for p in dict.fromkeys(every) if p not in number]
        if new and self.store is not None and not self.loaded:
            chars = sum(map(len, new))
            if chars >= self.store.LOAD_CHARS:
                self.loaded = True
                self.store.claim()  # held until this memo is saved (save)
                kept = self.store.load()
                if kept is not None:
                    self._take(*kept)
                    new = [p for p in new if p not in number]
                    if sum(map(len, new)) < self.store.LOAD_CHARS:
                        # the file had them: this build encodes no more than another would
                        # wait for (the next sweep job loads the file at once)
                        self.store.release()
        if new:
            id_lists = [e.ids for e in batch(new, add_special_tokens=False)]
            lens = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
            total = int(lens.sum())
            n, size = len(number), self.size
            self.start = _room(self.start, n + len(new))
            self.count = _room(self.count, n + len(new))
            self.ids = _room(self.ids, size + total)
            self.ids[size:size + total] = np.fromiter(chain.from_iterable(id_lists), dtype=np.int32, count=total)
            self.start[n:n + len(new)] = size + np.cumsum(lens) - lens
            self.count[n:n + len(new)] = lens
            self.size = size + total
            number.update(zip(new, range(n, n + len(new))))
            self.encoded_chars += sum(map(len, new))
            self._map_from(n)
        if not every:
            return np.empty(0, dtype=np.int32), np.zeros(len(pieces), dtype=np.int64)
        seq = np.fromiter(map(number.__getitem__, every), dtype=np.int64, count=len(every))
        flat, piece_ends = (self if self.out is None else self.out)._gather(seq)
        last = np.cumsum(np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))) - 1
        return flat, piece_ends[last]

    def _gather(self, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids of the pieces numbered ``seq`` (at least one), one after another,
        gathered in one go, and where each piece's ids end."""
        piece_lens = self.count[seq]
        piece_ends = np.cumsum(piece_lens)
        flat = self.ids[np.repeat(self.start[seq] - (piece_ends - piece_lens), piece_lens) + np.arange(piece_ends[-1])]
        return flat, piece_ends

    def _take(self, pieces: list[str], ids: np.ndarray, counts: np.ndarray) -> None:
        """Add the pieces a store kept (those not known here already)."""
        number = self.number
        n, size = len(number), self.size
        add = [k for k, p in enumerate(pieces) if p not in number]
        picked = np.asarray(add, dtype=np.int64)
        self.ids = _room(self.ids, size + len(ids))
        self.ids[size:size + len(ids)] = ids
        self.start = _room(self.start, n + len(add))
        self.count = _room(self.count, n + len(add))
        self.start[n:n + len(add)] = size + (np.cumsum(counts) - counts)[picked]
        self.count[n:n + len(add)] = counts[picked]
        self.size = size + len(ids)
        number.update(zip([pieces[k] for k in add], range(n, n + len(add))))
        self._map_from(n)

    def _map_from(self, n: int) -> None:
        """With a coarser, map the ids of the pieces numbered from ``n`` on (those just
        added) to the smaller tokenizer's: into ``out``, under the same numbers."""
        out = self.out
        if out is None:
            return
        k = len(self.number) - n
        starts, counts = self.start[n:n + k], self.count[n:n + k]
        piece_ends = np.cumsum(counts)
        flat = self.ids[np.repeat(starts - (piece_ends - counts), counts) + np.arange(piece_ends[-1] if k else 0)]
        mapped, ends = self.coarser.map(flat, piece_ends)
        lens = np.diff(ends, prepend=0)
        at = out.size
        out.ids = _room(out.ids, at + len(mapped))
        out.ids[at:at + len(mapped)] = mapped
        out.start = _room(out.start, n + k)
        out.count = _room(out.count, n + k)
        out.start[n:n + k] = at + ends - lens
        out.count[n:n + k] = lens
        out.size = at + len(mapped)

    def save(self) -> None:
        """Keep every piece known here in the store (when this object encoded enough of
        them, and they fit in ``MAX_IDS``), then give up the store's claim."""
        if self.store is None:
            return
        try:
            n = len(self.number)
            if self.encoded_chars < self.store.SAVE_CHARS or self.size > self.MAX_IDS or not n:
                return
            count = self.count[:n]
            ends = np.cumsum(count)
            if int(ends[-1]) == self.size and np.array_equal(self.start[:n], ends - count):
                ids = self.ids[:self.size]  # each piece's ids follow the last's, as encoded: no copy
            else:  # pieces loaded over ones known already, or the memo emptied once
                ids = self._gather(np.arange(n, dtype=np.int64))[0]
            self.store.save(list(self.number), ids, count)
        finally:
            self.store.release()


def _room(array: np.ndarray, n: int) -> np.ndarray:
    """``array``, or a copy of it twice as long or more, with room for ``n`` items."""
    if n <= array.size:
        return array
    grown = np.empty(max(n, 2 * array.size), dtype=array.dtype)
    grown[:array.size] = array
    return grown


def _content_json(spec: dict[str, Any]) -> str:
    """A tokenizer's JSON (``spec``, parsed) as the copy that encodes content: no added
    tokens, no truncation or padding. ``spec`` is changed."""
    spec["added_tokens"] = []
    spec["truncation"] = None
    spec["padding"] = None
    return json.dumps(spec, ensure_ascii=False)


class _Coarser:
    """Encoding through a larger tokenizer of the same BPE training (``derive_bpe``): a
    word's tokens under the smaller one are its tokens under the larger one, each cut into
    its own smaller tokens. The smaller applies a prefix of the larger's merges, in the
    same order, so the larger only merges further what the smaller leaves, never across a
    boundary the smaller keeps; and a larger token, encoded alone, goes through the same
    merges as inside the word. So each larger id maps to a fixed run of smaller ids (the
    run of id ``i``: ``ids[start[i]:start[i] + lens[i]]``), and ids encoded once with the
    larger tokenizer serve every smaller size:
    a sweep over ``vocab_size`` encodes its line pieces once (they are kept by the larger
    tokenizer's key, see ``_PieceStore``). Checked against direct encoding in the tests."""

    def __init__(self, content_json: str, lens: np.ndarray, start: np.ndarray, ids: np.ndarray):
        self.content_json = content_json
        self.lens, self.start, self.ids = lens, start, ids
        self._tok = None

    @classmethod
    def between(cls, larger: str, smaller: str) -> _Coarser | None:
        """The mapping from tokenizer JSON ``larger`` to ``smaller``; None unless the smaller
        one's vocabulary and merges are the larger's first ones (one cut from the other)."""
        tokenizers = _import_tokenizers("bpe")
        big, small = json.loads(larger), json.loads(smaller)
        bm, sm = big.get("model") or {}, small.get("model") or {}
        if bm.get("type") != "BPE" or sm.get("type") != "BPE" or {**bm, "vocab": 0, "merges": 0} != {**sm, "vocab": 0, "merges": 0}:
            return None
        if small.get("normalizer") is not None or any(big.get(k) != small.get(k) for k in ("pre_tokenizer", "added_tokens")):
            return None  # a token's string is encoded as it is: no normalizer may change it
        size = len(sm["vocab"])
        strings: list[str | None] = [None] * len(bm["vocab"])
        for token, i in bm["vocab"].items():
            if not 0 <= i < len(strings) or strings[i] is not None:
                return None
            strings[i] = token
        if size > len(strings) or any(strings[i] != t for t, i in sm["vocab"].items()) \
                or sm["merges"] != bm["merges"][:len(sm["merges"])]:
            return None
        bare = dict(small, pre_tokenizer=None, decoder=None)  # a token alone: one word, as it is
        tok = tokenizers.Tokenizer.from_str(_content_json(bare))
        cut = [e.ids for e in tok.encode_batch_fast(strings[size:], add_special_tokens=False)]
        lens = np.ones(len(strings), dtype=np.int64)
        lens[size:] = np.fromiter(map(len, cut), dtype=np.int64, count=len(cut))
        ids = np.concatenate([np.arange(size, dtype=np.int32),
                              np.fromiter(chain.from_iterable(cut), dtype=np.int32, count=int(lens[size:].sum()))])
        start = np.cumsum(lens) - lens
        return cls(_content_json(big), lens, start, ids)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tok": None}

    @property
    def tok(self):
        if self._tok is None:
            self._tok = _import_tokenizers("bpe").Tokenizer.from_str(self.content_json)
        return self._tok

    def map(self, flat: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The smaller tokenizer's ids for the larger's ``flat`` (texts ending at ``ends``)."""
        if not len(flat):
            return flat.astype(np.int32), np.zeros(len(ends), dtype=np.int64)
        lens = self.lens[flat]
        run_ends = np.cumsum(lens)
        out = self.ids[np.repeat(self.start[flat] - (run_ends - lens), lens) + np.arange(run_ends[-1])]
        ends = np.asarray(ends, dtype=np.int64)
        return out, np.where(ends > 0, run_ends[np.maximum(ends, 1) - 1], 0)


class _RustTokenizer:
    """What both plugins share: a Rust tokenizer, its content copy and the special-token map."""

    plugin = ""

    def __init__(self) -> None:
        self.identity: dict = {}
        self.added_tokens: list[str] = []
        self.eos_token: str | None = None
        self._full_json: str | None = None     # the tokenizer as loaded (with its added tokens)
        self._content_json: str | None = None  # the same with no added tokens: encodes content
        self._special: dict[str, int] = {}     # token -> id, for token_id
        self._appended: dict[int, str] = {}    # ids >= base_vocab_size -> token, for decode
        self._guard: frozenset[int] = frozenset()  # in-vocabulary special ids a non-BPE model might emit
        self._by_line = False  # encode text by line pieces (see _line_pieces_exact)
        self._pieces: _PieceIds | None = None  # the line pieces encoded so far, when _by_line
        self._piece_root: Path | None = None  # the cache directory that keeps them (keep_pieces_in)
        self._saving: threading.Thread | None = None  # the last save of the pieces, while it runs
        self._pieces_lock = threading.Lock()  # a tokenizer may encode in several threads
        self._full = None
        self._content = None
        self._coarser: _Coarser | None = None  # encode through a larger tokenizer (bpe)

    # -- pickling: JSON strings travel, Rust objects are rebuilt on first use ---------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_full"] = None
        state["_content"] = None
        state["_pieces"] = None
        state["_piece_root"] = None  # only the process that keeps them loads and saves them
        state["_saving"] = None
        state.pop("_pieces_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pieces_lock = threading.Lock()

    def _rust(self, attr: str, json_attr: str):
        tok = getattr(self, attr)
        if tok is None:
            text = getattr(self, json_attr)
            if text is None:
                raise CommitforgeError(f"the {self.plugin} tokenizer is used before prepare(); call prepare() first")
            tok = _import_tokenizers(self.plugin).Tokenizer.from_str(text)
            setattr(self, attr, tok)
        return tok

    @property
    def _content_tok(self):
        return self._rust("_content", "_content_json")

    @property
    def _full_tok(self):
        return self._rust("_full", "_full_json")

    # -- set-up shared by hf and bpe ----------------------------------------------------------
    def _install(self, tok: Any, special_tokens: list[str], *, name_or_path: str, sha256: str,
                 eos_token: str | None) -> None:
        """Take a loaded Rust tokenizer; build the content copy and the special-token ids."""
        full_json = tok.to_str()
        spec = json.loads(full_json)
        own_added = {t["content"]: t["id"] for t in spec.get("added_tokens") or ()}
        model = spec.get("model") or {}
        content_json = _content_json(spec)
        content = _import_tokenizers(self.plugin).Tokenizer.from_str(content_json)

        vocab = tok.get_vocab(with_added_tokens=True)
        base = max(len(vocab), max(vocab.values(), default=-1) + 1)
        special: dict[str, int] = dict(own_added)
        if eos_token is not None and eos_token in vocab:
            special[eos_token] = vocab[eos_token]
        added: list[str] = []
        appended: dict[int, str] = {}
        guard: set[int] = set()
        for token in dict.fromkeys(special_tokens):  # de-duplicated, order kept
            if not isinstance(token, str) or not token:
                raise CommitforgeError(f"special token {token!r} is not a non-empty string; fix the format's special tokens")
            if token in vocab:
                tid = vocab[token]
                # only a token of the model's own vocabulary can come out of ordinary text
                if content.token_to_id(token) == tid and _producible(model, token):
                    if token not in own_added and (
                            model.get("type") == "BPE" or content.encode(token, add_special_tokens=False).ids == [tid]):
                        raise CommitforgeError(
                            f"special token {token!r} is an ordinary token of tokenizer {name_or_path!r} "
                            f"(id {tid}): source text could produce it; choose a special token outside its vocabulary"
                        )
                    guard.add(tid)
            else:
                tid = base + len(added)
                added.append(token)
                appended[tid] = token
            special[token] = tid

        self._full_json, self._content_json = full_json, content_json
        self._full, self._content = tok, content
        self._special, self._appended, self._guard = special, appended, frozenset(guard)
        self._by_line = _line_pieces_exact(spec)
        self.added_tokens = added
        self.eos_token = eos_token
        self.identity = {
            "plugin": self.plugin,
            "name_or_path": name_or_path,
            "sha256": sha256,
            "vocab_size": base + len(added),
            "base_vocab_size": base,
        }

    # -- the interface -------------------------------------------------------------------------
    def encode(self, texts: list[str]) -> list[list[int]]:
        return [ids.tolist() for ids in self.encode_arrays(texts)]

    def cut(self, texts: list[str]) -> list[list[str]] | None:
        """The pieces :meth:`encode_arrays` encodes ``texts`` by (None: it encodes them
        whole). A caller with time to spare cuts them itself and passes them on."""
        return [_cut_lines(t) for t in texts] if getattr(self, "_by_line", False) else None

    def keep_pieces_in(self, cache_dir: str | Path | None) -> None:
        """Keep the ids of the line pieces this tokenizer encodes in ``cache_dir`` (see
        :class:`_PieceStore`; None: keep none): a later build with the same tokenizer
        loads them instead of encoding them again. The build stage sets it unless
        ``reuse=false``."""
        self._piece_root = None if cache_dir is None else Path(cache_dir)
        with self._pieces_lock:
            memo, self._pieces = self._pieces, None  # the next encoding starts with the store
        if memo is not None and memo.store is not None:
            memo.store.release()

    def clear_cache(self) -> None:
        """Forget the ids of the line pieces encoded so far (3.1 million ids and 175,000
        pieces for rusty-kaspa's history): the build stage calls it once its examples
        are encoded. With :meth:`keep_pieces_in`, they are saved first, by a thread the
        interpreter waits for at exit (:meth:`wait_saved` waits for it now)."""
        with self._pieces_lock:
            memo, self._pieces = self._pieces, None
        if memo is not None and memo.store is not None:
            self._saving = threading.Thread(target=memo.save, name="commitforge-pieces")
            self._saving.start()

    def wait_saved(self) -> None:
        """Wait until the pieces :meth:`clear_cache` saves are saved."""
        saving = self._saving
        if saving is not None:
            saving.join()

    def _piece_key(self) -> str:
        """What a piece's ids depend on: the content tokenizer and the library that runs it."""
        version = getattr(_import_tokenizers(self.plugin), "__version__", "?")
        coarser = getattr(self, "_coarser", None)
        return _sha256(f"{version}\0{self._content_json if coarser is None else coarser.content_json}")[:24]

    def encode_arrays(self, texts: list[str], pieces: list[list[str]] | None = None) -> list[np.ndarray]:
        """:meth:`encode` as int32 arrays (read-only views into one array per call).
        ``pieces``: what :meth:`cut` gave for ``texts``, if the caller cut them."""
        coarser = getattr(self, "_coarser", None)
        tok = self._content_tok if coarser is None else coarser.tok
        batch = tok.encode_batch_fast if hasattr(tok, "encode_batch_fast") else tok.encode_batch
        if getattr(self, "_by_line", False):
            # code repeats line by line far more than text by text: each distinct piece is
            # encoded once per tokenizer object, whichever call it comes in
            if pieces is None:
                pieces = self.cut(texts)
            with self._pieces_lock:
                if self._pieces is None:
                    root = self._piece_root
                    self._pieces = _PieceIds(_PieceStore(root, self._piece_key()) if root is not None else None,
                                             coarser)
                flat, ends = self._pieces.encode(pieces, batch)
                coarser = None  # mapped piece by piece
        else:
            id_lists = [e.ids for e in batch(texts, add_special_tokens=False)]
            lens = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
            flat = np.fromiter(chain.from_iterable(id_lists), dtype=np.int32, count=int(lens.sum()))
            ends = np.cumsum(lens)
        if coarser is not None:
            flat, ends = coarser.map(flat, ends)
        flat.flags.writeable = False
        ends_list = ends.tolist()
        out = [flat[a:b] for a, b in zip([0] + ends_list[:-1], ends_list)]
        if self._guard:
            hit = np.isin(flat, np.fromiter(self._guard, dtype=np.int32))
            if hit.any():
                i = int(np.searchsorted(ends, int(hit.argmax()), side="right"))
                found = sorted(self._guard.intersection(out[i].tolist()))
                raise CommitforgeError(
                    f"text #{i} encoded to special token id(s) {found} with tokenizer "
                    f"{self.identity.get('name_or_path')!r}; choose special tokens this tokenizer cannot produce from text"
                )
        return out

    def save(self, directory: Path) -> list[str]:
        """Write ``tokenizer.json`` to ``directory``: the tokenizer as loaded with the special
        tokens it lacked appended at the ids the examples use, so they decode, and a model's
        embeddings are resized to its vocabulary. Returns the names written."""
        tokenizers = _import_tokenizers(self.plugin)
        tok = tokenizers.Tokenizer.from_str(self._full_json)
        appended = sorted(self._appended.items())
        if appended:
            tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for _, t in appended])
            wrong = [(t, tid, tok.token_to_id(t)) for tid, t in appended if tok.token_to_id(t) != tid]
            if wrong:
                raise CommitforgeError(f"special tokens would not keep their ids in the saved tokenizer: {wrong[:3]}; "
                                       "use a tokenizer whose vocabulary ids are contiguous")
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(directory / "tokenizer.json") as fh:
            fh.write(tok.to_str().encode("utf-8"))
        return ["tokenizer.json"]

    def token_id(self, token: str) -> int:
        try:
            return self._special[token]
        except KeyError:
            known = ", ".join(sorted(self._special)) or "none (call prepare() first)"
            raise UnknownTokenError(f"unknown special token {token!r}; known: {known}") from None

    def decode(self, ids: list[int]) -> str:
        full = self._full_tok
        if not self._appended or not any(i in self._appended for i in ids):
            return full.decode(list(ids), skip_special_tokens=False)
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            token = self._appended.get(i)
            if token is None:
                run.append(i)
                continue
            if run:
                out.append(full.decode(run, skip_special_tokens=False))
                run = []
            out.append(token)
        if run:
            out.append(full.decode(run, skip_special_tokens=False))
        return "".join(out)


class TokenCounter:
    """``len(encode(text))`` with a tokenizer given as JSON (picklable; rebuilt in workers)."""

    def __init__(self, tokenizer_json: str):
        self.tokenizer_json = tokenizer_json
        self._tok = None

    def __getstate__(self) -> dict:
        return {"tokenizer_json": self.tokenizer_json}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["tokenizer_json"])

    def __call__(self, text: str) -> int:
        if self._tok is None:
            self._tok = _import_tokenizers("hf").Tokenizer.from_str(self.tokenizer_json)
        return len(self._tok.encode(text, add_special_tokens=False).ids)


# -- hf ---------------------------------------------------------------------------------------
@dataclass
class HfTokenizerConfig:
    name: str = "hf"
    name_or_path: str = "???"  # a local directory (or a hub id already in the Hugging Face cache)
    revision: str | None = None
    local_files_only: bool = True
    trust_remote_code: bool = False  # True is refused: repository code is never executed


def _looks_like_path(value: str) -> bool:
    return (os.path.isabs(value) or value.startswith((".", "~")) or "\\" in value
            or value.count("/") > 1 or value.endswith("/"))


class HfTokenizer(_RustTokenizer):
    """A pretrained tokenizer loaded with ``transformers.AutoTokenizer`` (its Rust backend is used)."""

    plugin = "hf"

    def __init__(self, cfg: HfTokenizerConfig):
        super().__init__()
        if cfg.trust_remote_code:
            raise CommitforgeError(
                "tokenizer.trust_remote_code=true is refused: commitforge never executes code from a "
                "tokenizer repository; use a tokenizer that loads without it (a directory with tokenizer.json)"
            )
        if not cfg.name_or_path or cfg.name_or_path == "???":
            raise CommitforgeError("tokenizer.name_or_path is not set; pass tokenizer.name_or_path=DIR (a local tokenizer directory)")
        self.cfg = cfg

    def prepare(self, special_tokens: list[str], training_texts: Callable[[], Iterable[str]], cache_dir: Path) -> None:
        tok, eos = self._load()
        self._install(tok, special_tokens, name_or_path=self.cfg.name_or_path,
                      sha256=_sha256(tok.to_str()), eos_token=eos)

    def token_counter(self) -> TokenCounter:
        """Counts content tokens before the build stage (for context budgets): the loaded
        tokenizer without added special tokens, the way content is encoded."""
        tok, _ = self._load()
        return TokenCounter(tok.to_str())

    def _load(self):
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise CommitforgeError(f"the hf tokenizer needs transformers: {_HF_EXTRA}") from None
        value = self.cfg.name_or_path
        path = Path(value).expanduser()
        is_dir = path.is_dir()
        if path.exists() and not is_dir:
            raise CommitforgeError(f"tokenizer.name_or_path={value!r} is a file; pass the directory that contains tokenizer.json")
        if not is_dir and _looks_like_path(value):
            raise CommitforgeError(f"tokenizer.name_or_path={value!r}: no such directory; pass a local directory containing tokenizer.json")
        try:
            hf = AutoTokenizer.from_pretrained(
                str(path) if is_dir else value,
                revision=self.cfg.revision,
                local_files_only=self.cfg.local_files_only,
                trust_remote_code=False,
            )
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, hub errors: all one message
            if is_dir:
                raise CommitforgeError(
                    f"could not load a tokenizer from directory tokenizer.name_or_path={value!r} ({_one_line(exc)}); "
                    f"it must contain tokenizer.json or files AutoTokenizer loads without remote code"
                ) from exc
            raise CommitforgeError(
                f"tokenizer.name_or_path={value!r} is not a local directory and could not be loaded from the "
                f"Hugging Face hub or its cache (the hub is not reachable offline); pass a local directory containing tokenizer.json"
            ) from exc
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise CommitforgeError(
                f"tokenizer.name_or_path={value!r} loaded a tokenizer without a fast (tokenizers) backend "
                f"({type(hf).__name__}); provide a directory with tokenizer.json"
            )
        eos = hf.eos_token if isinstance(getattr(hf, "eos_token", None), str) else None
        return backend, eos


# -- bpe --------------------------------------------------------------------------------------
@dataclass
class BpeTokenizerConfig:
    name: str = "bpe"
    vocab_size: int = 8192
    min_frequency: int = 2
    max_training_chars: int = 10_000_000


class BpeTokenizer(_RustTokenizer):
    """A byte-level BPE trained on the corpus, cached under ``cache_dir/tokenizers/bpe-<hash>``.

    The hash covers the training settings and the sha256 of the training text actually used
    (the first ``max_training_chars`` characters, in order). The cached directory loads with
    ``transformers.AutoTokenizer.from_pretrained`` and with the ``hf`` plugin. A training to
    a larger vocabulary on the same corpus serves every smaller ``vocab_size``: its tokenizer
    is cut from the larger one's (``derive_bpe``), the same file training would write. A sweep
    over ``vocab_size`` has its first training go to the largest size (``BPE_TRAIN_VOCAB_ENV``).
    """

    plugin = "bpe"

    def __init__(self, cfg: BpeTokenizerConfig):
        super().__init__()
        if cfg.vocab_size < 257:
            raise CommitforgeError(f"tokenizer.vocab_size={cfg.vocab_size} is too small for a byte-level BPE "
                                   f"(256 bytes + {BPE_EOS}); use at least 257")
        if cfg.min_frequency < 1:
            raise CommitforgeError(f"tokenizer.min_frequency={cfg.min_frequency} must be at least 1")
        if cfg.max_training_chars < 1:
            raise CommitforgeError(f"tokenizer.max_training_chars={cfg.max_training_chars} must be positive")
        self.cfg = cfg
        self.trained = False  # whether the last prepare() trained (False: loaded from the cache)
        self.derived = False  # whether it cut its tokenizer from a larger training's (derive_bpe)
        self.path: Path | None = None

    def _training_corpus(self, training_texts: Callable[[], Iterable[str]]) -> tuple[list[str], str, bool]:
        """The capped training texts, in order, the sha256 of exactly those texts, and
        whether the cap was reached (False: every text is in). A change to what it takes
        from the texts bumps ``_CORPUS_FORMAT``."""
        budget = self.cfg.max_training_chars
        texts: list[str] = []
        h = hashlib.sha256()
        for text in training_texts():
            if budget <= 0:
                break
            if len(text) > budget:
                text = text[:budget]
            budget -= len(text)
            data = text.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
            texts.append(text)
        return texts, h.hexdigest(), budget <= 0

    def _known_corpus(self, rows: list[bytes], corpora: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The entry (of ``corpora``) of the corpus an earlier build read from the same
        leading train rows (``rows``: their digests, two texts each), if one did: the same
        rows are the same texts. A corpus that took every train row is known only for
        exactly those rows."""
        for entry in reversed(corpora):  # the newest first
            k = entry["rows"]
            if entry["max_training_chars"] != self.cfg.max_training_chars or len(rows) < k:
                continue
            if (entry["capped"] or len(rows) == k) and hashlib.sha1(b"".join(rows[:k])).hexdigest() == entry["prefix"]:
                return entry
        return None

    def _remember_corpus(self, root: Path, entry: dict[str, Any]) -> None:
        """Keep ``entry`` as the newest (it replaces one of the same rows and settings). The
        file is read again just before it is written: another build may have added to it
        (training takes a while)."""
        same = tuple(entry[k] for k in _CORPUS_KEY)
        entries = [e for e in _corpora(root) if tuple(e[k] for k in _CORPUS_KEY) != same] + [entry]
        _keep_entries(root / CORPORA_FILE, entries, _CORPORA_KEPT)

    def _corpus_entry(self, rows: list[bytes], texts: int, capped: bool, text_sha: str) -> dict[str, Any]:
        k = min(len(rows), (texts + 1) // 2)  # the rows the texts came from
        return {"corpus": _CORPUS_FORMAT, "max_training_chars": self.cfg.max_training_chars, "rows": k,
                "capped": capped, "prefix": hashlib.sha1(b"".join(rows[:k])).hexdigest(), "text_sha256": text_sha}

    def cache_key(self, text_sha256: str, vocab_size: int | None = None) -> str:
        """The cached tokenizer's key: its settings, the library's version and the corpus."""
        key = {**self._lineage_fields(text_sha256), "vocab_size": vocab_size or self.cfg.vocab_size}
        return _sha256(json.dumps(key, sort_keys=True))[:20]

    def _lineage_fields(self, text_sha256: str) -> dict[str, Any]:
        import tokenizers

        return {"format": _BPE_FORMAT, "min_frequency": self.cfg.min_frequency, "special_tokens": [BPE_EOS],
                "tokenizers": tokenizers.__version__, "text_sha256": text_sha256}

    def _lineage(self, text_sha256: str) -> str:
        """What every vocabulary size trained on this corpus with these settings shares:
        the trainings of one lineage serve each other's smaller sizes (``derive_bpe``)."""
        return _sha256(json.dumps(self._lineage_fields(text_sha256), sort_keys=True))[:20]

    def claim_name(self, text_sha256: str) -> str:
        """The claim (``core.stage_cache.claim_for``) a training on this corpus holds."""
        return f"bpe-lineage-{self._lineage(text_sha256)}"

    def _train_vocab(self) -> int:
        """The vocabulary size to train to: ``vocab_size``, or the larger one a sweep asks
        for (``BPE_TRAIN_VOCAB_ENV``)."""
        raw = os.environ.get(BPE_TRAIN_VOCAB_ENV, "").strip()
        if not raw:
            return self.cfg.vocab_size
        try:
            hint = int(raw)
        except ValueError:
            raise CommitforgeError(f"{BPE_TRAIN_VOCAB_ENV}={raw!r} is not a whole number; set it to the largest "
                                   f"tokenizer.vocab_size of a sweep, or unset it") from None
        return max(self.cfg.vocab_size, hint)

    def prepare(self, special_tokens: list[str], training_texts: Callable[[], Iterable[str]], cache_dir: Path) -> None:
        tokenizers = _import_tokenizers(self.plugin)
        root = Path(cache_dir) / TOKENIZERS_DIR
        self.trained = False
        # a build whose train rows start as an earlier one's finds its tokenizer without
        # reading them (core.build.TrainingTexts.rows)
        rows = getattr(training_texts, "rows", None)
        corpora = _corpora(root) if rows is not None else []
        known = self._known_corpus(rows, corpora) if rows is not None else None
        self.derived = False
        text_sha = known["text_sha256"] if known is not None else None
        final = self._cached(root, text_sha) if text_sha is not None else None
        if final is None:
            texts, text_sha, capped = self._training_corpus(training_texts)
            final = self._cached(root, text_sha)
            if final is None:
                # a build training on the same corpus (a sweep job started with this one) is
                # waited for: its tokenizer is this one's, or a larger one this one's is cut from
                with claim_for(cache_dir, self.claim_name(text_sha)):
                    final = self._cached(root, text_sha) or self._train_into(texts, root, text_sha)
            if rows is not None:
                self._remember_corpus(root, self._corpus_entry(rows, len(texts), capped, text_sha))
            del texts
        elif known not in corpora[-_CORPORA_FRESH:]:  # a hit about to be pushed out: kept
            self._remember_corpus(root, known)
        data = (final / "tokenizer.json").read_bytes()
        self._coarser = None
        try:
            tok = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
        except Exception as exc:  # noqa: BLE001
            raise CommitforgeError(f"cached tokenizer {final} is unreadable ({_one_line(exc)}); delete that directory to retrain") from exc
        self.path = final
        self._install(tok, special_tokens, name_or_path=str(final), sha256=_sha256(data), eos_token=BPE_EOS)
        self._coarser = self._through(root, text_sha, data.decode("utf-8"))

    def train(self, texts: list[str], vocab_size: int | None = None):
        """Train the byte-level BPE on ``texts`` (deterministic) to ``vocab_size`` tokens (the
        configured size by default) and return the Rust tokenizer."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size or self.cfg.vocab_size,
            min_frequency=self.cfg.min_frequency,
            special_tokens=[BPE_EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
        return tok

    def _cached(self, root: Path, text_sha256: str) -> Path | None:
        """The cached tokenizer of these settings for the corpus ``text_sha256``: as cached,
        or cut now from a cached training of its lineage to a larger vocabulary (or one
        that ran out of merges before its size); None when neither is there."""
        final = root / f"bpe-{self.cache_key(text_sha256)}"
        if (final / "tokenizer.json").is_file():
            return final
        size = self.cfg.vocab_size
        for entry in sorted(_trainings(root, self._lineage(text_sha256)), key=lambda e: e["vocab_size"]):
            if entry["vocab_size"] < size and entry["reached"] >= entry["vocab_size"]:
                continue  # smaller, and it stopped at its size: it may lack merges this size makes
            try:
                data = (root / entry["dir"] / "tokenizer.json").read_text(encoding="utf-8")
            except OSError:
                continue  # removed since (cache pruning): another entry, or a training
            derived = derive_bpe(data, size, [BPE_EOS])
            if derived is not None:
                self._write_entry(root, final, derived, size, entry["training_texts"], entry["training_chars"])
                self.derived = True
                return final
        return None

    def _through(self, root: Path, text_sha256: str, data: str) -> _Coarser | None:
        """How to encode through the largest cached training of this tokenizer's lineage
        that has more tokens than it (``_Coarser``), if there is one."""
        for entry in sorted(_trainings(root, self._lineage(text_sha256)), key=lambda e: -e["reached"]):
            if entry["reached"] <= self.cfg.vocab_size:
                return None
            try:
                larger = (root / entry["dir"] / "tokenizer.json").read_text(encoding="utf-8")
            except OSError:
                continue
            coarser = _Coarser.between(larger, data)
            if coarser is not None:
                return coarser
        return None

    def _train_into(self, texts: list[str], root: Path, text_sha256: str) -> Path:
        """Train on ``texts`` (the corpus ``text_sha256``) to ``_train_vocab()`` tokens and
        cache the result; a larger training is cached as its own entry too, and the one of
        these settings is cut from it. Returns this size's cached directory."""
        size = self._train_vocab()
        tok = self.train(texts, size)
        self.trained = True
        n_texts, n_chars = len(texts), sum(map(len, texts))
        data = tok.to_str()
        trained = root / f"bpe-{self.cache_key(text_sha256, size)}"
        self._write_entry(root, trained, data, size, n_texts, n_chars)
        lineage = self._lineage(text_sha256)
        entries = [e for e in _trainings(root, lineage) if e["vocab_size"] != size]
        entries.append({"dir": trained.name, "vocab_size": size, "reached": tok.get_vocab_size(with_added_tokens=False),
                        "training_texts": n_texts, "training_chars": n_chars})
        _keep_entries(root / f"{TRAININGS_PREFIX}{lineage}.json", entries, _TRAININGS_KEPT)
        if size == self.cfg.vocab_size:
            return trained
        final = root / f"bpe-{self.cache_key(text_sha256)}"
        derived = derive_bpe(data, self.cfg.vocab_size, [BPE_EOS])
        if derived is None:  # a vocabulary that is not laid out the way training lays it out
            raise CommitforgeError(f"the bpe tokenizer trained to {size} tokens ({trained}) cannot be cut to "
                                   f"tokenizer.vocab_size={self.cfg.vocab_size}; unset {BPE_TRAIN_VOCAB_ENV}")
        self._write_entry(root, final, derived, self.cfg.vocab_size, n_texts, n_chars)
        return final

    def _write_entry(self, root: Path, final: Path, data: str, vocab_size: int, n_texts: int, n_chars: int) -> None:
        """Cache ``data`` (a tokenizer.json) as directory ``final``, with the files
        ``transformers.AutoTokenizer`` loads it by, in one rename."""
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            (tmp / "tokenizer.json").write_text(data, encoding="utf-8")
            eos_entry = {"content": BPE_EOS, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": True}
            eos_id = json.loads(data)["model"]["vocab"][BPE_EOS]
            settings = {k: v for k, v in asdict(self.cfg).items() if k != "name"}
            config = {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": BPE_EOS,
                "bos_token": None,
                "unk_token": None,
                "pad_token": None,
                "add_prefix_space": False,
                "clean_up_tokenization_spaces": False,
                "added_tokens_decoder": {str(eos_id): eos_entry},
                "commitforge": {"plugin": "bpe", **settings, "vocab_size": vocab_size,
                                "training_texts": n_texts, "training_chars": n_chars},
            }
            (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            (tmp / "special_tokens_map.json").write_text(json.dumps({"eos_token": BPE_EOS}, indent=2) + "\n",
                                                         encoding="utf-8")
            try:
                os.rename(tmp, final)
            except OSError as exc:
                # another process won the race: its copy is identical (training is deterministic)
                if not (final / "tokenizer.json").is_file():
                    raise CommitforgeError(f"cannot create the cached tokenizer {final} ({_one_line(exc)}); "
                                           f"delete that directory or choose another cache_dir") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


CORPORA_FILE = "corpora.json"  # in the tokenizers directory: corpora known by the train rows they came from
_CORPORA_KEPT = 64
_CORPORA_FRESH = 16  # a corpus found among the older entries moves up to the newest
# how a corpus is taken from the training texts (core.build.TrainingTexts, _training_corpus):
# bumped with them, so that a known corpus is never the one an older way took
_CORPUS_FORMAT = 1
_CORPUS_KEY = ("corpus", "max_training_chars", "rows", "capped", "prefix")


def _entries(path: Path, types: dict[str, type]) -> list[dict[str, Any]]:
    """The entries of a JSON list the tokenizers directory keeps (a cache of a cache) that
    have each field of ``types`` with its type; none when the file is missing or unreadable."""
    try:
        entries = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return []
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and all(type(e.get(k)) is t for k, t in types.items())]


def _keep_entries(path: Path, entries: list[dict[str, Any]], kept: int) -> None:
    """Write the last ``kept`` of ``entries`` to ``path`` whole; a cache that cannot be
    written keeps nothing (the next build reads, or trains, again)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as fh:
            fh.write(json.dumps(entries[-kept:], indent=1).encode() + b"\n")
    except OSError:
        pass


def _corpora(root: Path) -> list[dict[str, Any]]:
    """The corpora earlier builds read (see ``BpeTokenizer._known_corpus``); none when the
    file is missing or unreadable."""
    types = {"corpus": int, "max_training_chars": int, "rows": int, "capped": bool, "prefix": str, "text_sha256": str}
    return [e for e in _entries(root / CORPORA_FILE, types)
            if e["corpus"] == _CORPUS_FORMAT and e["rows"] >= (1 if e["capped"] else 0)
            and _HEX40.fullmatch(e["prefix"]) and _HEX64.fullmatch(e["text_sha256"])]


TRAININGS_PREFIX = "trainings-"  # in the tokenizers directory: trainings-<lineage>.json, one per lineage
_TRAININGS_KEPT = 16


def _trainings(root: Path, lineage: str) -> list[dict[str, Any]]:
    """The trainings of ``lineage`` (``BpeTokenizer._lineage``) cached under ``root``: each
    one's directory, the vocabulary size it trained to and the size it reached, and its
    corpus's texts and characters; none when the file is missing or unreadable."""
    types = {"dir": str, "vocab_size": int, "reached": int, "training_texts": int, "training_chars": int}
    return [e for e in _entries(root / f"{TRAININGS_PREFIX}{lineage}.json", types)
            if re.fullmatch(r"bpe-[0-9a-f]{20}", e["dir"])]


def derive_bpe(data: str, vocab_size: int, special_tokens: list[str]) -> str | None:
    """The ``tokenizer.json`` that training a byte-level BPE to ``vocab_size`` tokens would
    write, cut from ``data``: one trained on the same corpus with the same settings to a
    larger size, or one that ran out of merges (``min_frequency``) before its size.

    The trainer adds the special tokens, then the alphabet (single characters), then one
    token per merge, most frequent pair first, and stops before a merge once the vocabulary
    holds ``vocab_size`` tokens; the size does not change which pair comes next. So a
    smaller training's merges are the larger one's first ones, up to the merge that makes
    its last token (a merge whose token exists already adds none), and its vocabulary the
    tokens numbered below its size. Checked against training in the tests. None when
    ``data`` is not laid out that way (not this trainer's work)."""
    import tokenizers

    doc = json.loads(data)
    model = doc.get("model") or {}
    vocab, merges = model.get("vocab"), model.get("merges")
    if model.get("type") != "BPE" or not isinstance(vocab, dict) or not isinstance(merges, list):
        return None
    specials = set(special_tokens)
    first = sorted(i for t, i in vocab.items() if len(t) == 1 or t in specials)
    if first != list(range(len(first))):
        return None
    size = len(first)
    kept = 0
    for merge in merges:
        if size >= vocab_size:
            break
        a, b = _merge_pair(merge)
        made = vocab.get(a + b)
        if made is None or made > size:
            return None
        size += made == size  # a new token; an older one again adds none
        kept += 1
    model["vocab"] = {t: i for t, i in vocab.items() if i < size}
    model["merges"] = merges[:kept]
    return tokenizers.Tokenizer.from_str(json.dumps(doc)).to_str()


_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@hookimpl
def register_tokenizer(register):
    register("hf", HfTokenizer, HfTokenizerConfig)
    register("bpe", BpeTokenizer, BpeTokenizerConfig)
