"""Exact and near-duplicate (MinHash LSH) removal of training examples, plus split leakage.

Pipeline (all deterministic, no salted ``hash()``):

1. Within each split, in input order, an item whose ``normalize(text)`` equals an earlier
   item's is dropped as ``"exact_duplicate"`` (the first one is kept).
2. Within each split, in input order, a surviving item whose estimated Jaccard similarity
   (token n-gram shingles, MinHash) with an earlier *kept* item is ``>= threshold`` is dropped
   as ``"near_duplicate"``.  Greedy: every dropped item has a kept near-duplicate in its split,
   so chains A~B~C never drop C merely for resembling the dropped B.
3. Leakage: for splits in ``precedence`` order, an item that exactly / nearly duplicates a
   still-kept item of a higher-precedence split is dropped as ``"leak_exact"`` /
   ``"leak_near"``.  Items of the highest-precedence split present are never dropped for
   leakage.  A split missing from ``precedence`` is an error (a silent leak otherwise).

``exact`` / ``near`` switch the matching kind off both within splits and for leakage.

MinHash: tokens are ``\\w+|[^\\w\\s]``; a shingle is ``ngram`` consecutive tokens (the whole
token sequence when a text has fewer tokens; texts with no tokens take no part in near
matching).  Token hashes are blake2b, shingle hashes a polynomial over them finished with
splitmix64 and cut to 32 bits; permutation ``i`` is ``(a_i*x + b_i) mod p`` with
``p = 2**32 - 5`` (exact in uint64) and ``a, b`` drawn from ``numpy.random.default_rng(seed)``.
LSH uses ``bands * rows == num_perm`` with ``(1/bands)**(1/rows)`` closest to ``threshold``;
every bucket-sharing candidate is verified by the fraction of equal signature entries.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

__all__ = ["DedupResult", "Features", "REASONS", "deduplicate", "features", "lsh_params", "normalize"]

REASONS = ("exact_duplicate", "near_duplicate", "leak_exact", "leak_near")

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_PRIME = (1 << 32) - 5  # prime; a < p, b < p, x < 2**32  =>  a*x + b < 2**64 (no overflow)
_U64 = np.uint64
_EMPTY = _U64(np.iinfo(np.uint64).max)  # signature entry of items without shingles
_MUL = _U64(0x9E3779B97F4A7C15)  # odd multiplier for polynomial combination (mod 2**64)
# texts per signature batch, by characters: a batch's arrays stay in the CPU's caches (on
# 8,971 texts of rusty-kaspa, 1 << 18 signs in 0.34 s what 1 << 20 signs in 0.50 s)
_BATCH_CHARS = 1 << 18


def normalize(text: str) -> str:
    """Collapse every whitespace run to one space and strip; exact dedup compares this."""
    return " ".join(text.split())


@dataclass
class DedupResult:
    keep: list[bool]  # per input item
    reasons: list[str | None]  # None if kept, else one of REASONS
    # items, kept, one count per reason, the same per split ("train.kept", ...), clusters
    # (within-split duplicate groups: kept items that had >= 1 duplicate dropped),
    # lsh_bands, lsh_rows, seconds.
    report: dict[str, int | float]


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands*rows == num_perm and (1/bands)**(1/rows) closest to threshold.

    Ties go to more bands (higher recall; candidates are verified anyway).
    """
    best: tuple[float, int, int] | None = None
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        err = abs((1.0 / bands) ** (1.0 / rows) - threshold)
        if best is None or err < best[0]:
            best = (err, bands, rows)
    assert best is not None
    return best[1], best[2]


def _exact_key(text: str) -> bytes:
    return hashlib.blake2b(normalize(text).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, in place on a uint64 array."""
    z ^= z >> _U64(30)
    z *= _U64(0xBF58476D1CE4E5B9)
    z ^= z >> _U64(27)
    z *= _U64(0x94D049BB133111EB)
    z ^= z >> _U64(31)
    return z


_WORD_RE = re.compile(r"\w")
_SPACE_RE = re.compile(r"\s")
_SPACE, _WORD, _PUNCT = 0, 1, 2


def _char_class(c: str) -> int:
    """Class of one character exactly as ``_TOKEN_RE`` sees it."""
    if _WORD_RE.match(c):
        return _WORD
    return _SPACE if _SPACE_RE.match(c) else _PUNCT


_ASCII_CLASS = np.array([_char_class(chr(c)) for c in range(128)] + [_PUNCT], dtype=np.uint8)


class _Tokenizer:
    """Vectorised ``_TOKEN_RE.findall`` + stable 64-bit hash per token, over many texts at once.

    A token's hash is a polynomial over its code points mod 2**64 (from prefix sums, via the
    multiplier's inverse), plus its length, finished with splitmix64 - equal tokens hash
    equally in every process.
    """

    def __init__(self) -> None:
        self._nonascii: dict[int, int] = {}
        self._pow = np.ones(1, dtype=np.uint64)  # _MUL**k
        self._ipow = np.ones(1, dtype=np.uint64)  # _MUL**-k

    def _powers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self._pow.size < n:
            n = max(n, 2 * self._pow.size)
            inv = pow(int(_MUL), -1, 1 << 64)
            self._pow = np.concatenate([[_U64(1)], np.cumprod(np.full(n - 1, _MUL, dtype=np.uint64))])
            self._ipow = np.concatenate(
                [[_U64(1)], np.cumprod(np.full(n - 1, _U64(inv), dtype=np.uint64))]
            )
        return self._pow, self._ipow

    def _classes(self, cp: np.ndarray) -> np.ndarray:
        cls = _ASCII_CLASS[np.minimum(cp, 128)]
        high = np.flatnonzero(cp >= 128)
        if high.size:
            u, inv = np.unique(cp[high], return_inverse=True)
            table = self._nonascii
            for c in u.tolist():
                if c not in table:
                    table[c] = _char_class(chr(c))
            cls[high] = np.fromiter((table[c] for c in u.tolist()), dtype=np.uint8, count=u.size)[inv]
        return cls

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(token hashes of all texts, concatenated; token count per text)."""
        joined = "\n".join(texts)  # whitespace separator: no token spans two texts
        cp = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        n = cp.size
        cls = self._classes(cp)
        word = cls == _WORD
        punct = cls == _PUNCT
        first = punct.copy()
        first[:1] |= word[:1]
        first[1:] |= word[1:] & ~word[:-1]
        last = punct.copy()
        last[:-1] |= word[:-1] & ~word[1:]
        last[-1:] |= word[-1:]
        starts = np.flatnonzero(first)
        ends = np.flatnonzero(last) + 1
        pw, ipw = self._powers(n + 1)
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(cp.astype(np.uint64) * ipw[:n], out=prefix[1:])
        h = (prefix[ends] - prefix[starts]) * pw[ends - 1]  # sum cp[k] * M**(end-1-k)
        h += (ends - starts).astype(np.uint64) * _U64(0xD6E8FEB86659FD93)
        _mix64(h)
        text_len = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        text_start = np.cumsum(text_len + 1) - (text_len + 1)
        bounds = np.searchsorted(starts, np.append(text_start, n))
        return h, np.diff(bounds)


def _shingle_hashes(texts: list[str], ngram: int, tokenize: _Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated 32-bit shingle hashes of ``texts`` (grouped by text) and per-text counts."""
    H, lens = tokenize(texts)
    T = H.size
    offs = np.cumsum(lens) - lens
    counts = np.where(lens >= ngram, lens - ngram + 1, np.minimum(lens, 1))
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.uint64), counts
    # n-gram polynomial hash at every token position (positions crossing a text end are unused)
    Hp = np.concatenate([H, np.zeros(ngram - 1, np.uint64)])
    S = Hp[:T].copy()
    for k in range(1, ngram):
        S *= _MUL
        S += Hp[k : k + T]
    starts = np.cumsum(counts) - counts
    rep = np.repeat(np.arange(len(texts)), counts)
    src = np.arange(total) - starts[rep] + offs[rep]
    X = S[src]
    # texts shorter than ngram: one shingle over the whole token sequence
    short = (lens > 0) & (lens < ngram)
    if short.any():
        for L in np.unique(lens[short]).tolist():
            docs = np.flatnonzero(lens == L)
            block = H[offs[docs][:, None] + np.arange(L)]
            h = block[:, 0].copy()
            for k in range(1, L):
                h *= _MUL
                h += block[:, k]
            h += _U64(L)  # keep apart from n-gram shingles
            X[starts[docs]] = h
    return _mix64(X) >> _U64(32), counts


def _signatures(
    texts: list[str], items: list[int], num_perm: int, ngram: int, seed: int, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures, shape (len(texts), num_perm) uint64, for ``items`` (other rows and
    rows of token-less texts hold the sentinel); plus a bool mask of rows that have shingles.
    Batches of texts go to ``threads`` threads (numpy releases the GIL in the loops that
    take the time); the result does not depend on their number."""
    n = len(texts)
    sig = np.full((n, num_perm), _EMPTY, dtype=np.uint64)
    has = np.zeros(n, dtype=bool)
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, _PRIME, size=num_perm, dtype=np.uint64)
    p = _U64(_PRIME)
    batches = []
    pos = 0
    while pos < len(items):
        chars = 0
        end = pos
        while end < len(items) and (end == pos or chars < _BATCH_CHARS):
            chars += len(texts[items[end]])
            end += 1
        batches.append(items[pos:end])
        pos = end

    def run(group: list[list[int]]) -> None:
        tokenize = _Tokenizer()  # one per thread: it grows its tables
        for batch in group:
            X, counts = _shingle_hashes([texts[i] for i in batch], ngram, tokenize)
            nz = counts > 0
            if not nz.any():
                continue
            rows = np.asarray(batch, dtype=np.int64)[nz]
            starts = (np.cumsum(counts) - counts)[nz]
            out = np.empty((num_perm, rows.size), dtype=np.uint64)
            Y = np.empty_like(X)
            Q = np.empty_like(X)
            for i in range(num_perm):
                np.multiply(X, a[i], out=Y)
                np.add(Y, b[i], out=Y)
                # Y mod p as Y - (Y // p) * p: numpy divides by a scalar much faster than it takes %
                np.floor_divide(Y, p, out=Q)
                np.multiply(Q, p, out=Q)
                np.subtract(Y, Q, out=Y)
                np.minimum.reduceat(Y, starts, out=out[i])
            sig[rows] = out.T  # rows of different batches are disjoint
            has[rows] = True

    threads = max(1, min(threads, len(batches)))
    if threads == 1:
        run(batches)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, [batches[k::threads] for k in range(threads)]))
    return sig, has


def _band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    keys = np.empty((sig.shape[0], bands), dtype=np.uint64)
    for bd in range(bands):
        h = sig[:, bd * rows].astype(np.uint64)  # merged signatures come in uint32s (build_memo)
        for c in range(bd * rows + 1, (bd + 1) * rows):
            h *= _MUL
            h += sig[:, c]
        keys[:, bd] = _mix64(h)
    return keys


def _in_shared_bucket(bk: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Members of ``idx`` (ascending) sharing some band bucket with another member."""
    mask = np.zeros(idx.size, dtype=bool)
    for bd in range(bk.shape[1]):
        k = bk[idx, bd]
        order = np.argsort(k, kind="stable")
        ks = k[order]
        same = ks[1:] == ks[:-1]
        m = np.zeros(idx.size, dtype=bool)
        m[1:] |= same
        m[:-1] |= same
        mask[order[m]] = True
    return idx[mask]


def _first_match(j: int, pool: set[int], sig: np.ndarray, threshold: float) -> int | None:
    """Smallest index in ``pool`` whose estimated Jaccard with ``j`` is >= threshold."""
    cand = np.fromiter(sorted(pool), dtype=np.int64, count=len(pool))
    est = np.count_nonzero(sig[cand] == sig[j], axis=1) / sig.shape[1]
    hit = np.flatnonzero(est >= threshold)
    return int(cand[hit[0]]) if hit.size else None


def _pool(buckets: dict[tuple[int, int], list[int]], keys: list[int]) -> set[int]:
    pool: set[int] = set()
    for bd, key in enumerate(keys):
        lst = buckets.get((bd, key))
        if lst:
            pool.update(lst)
    return pool


@dataclass
class Features:
    """What deduplication compares of each item: the digest of its normalized text
    (``keys``, None when exact matching is off) and its MinHash signature (``sig``, one
    row per item, and ``has``: whether it has shingles; empty when near matching is off).
    Signatures are uint64 as computed and uint32 as merged from kept ones
    (core.build_memo.merge_features): the same values, all below ``2**32 - 5``; rows
    without shingles hold the dtype's largest value and are never compared.
    An item's features depend on its text and (``num_perm``, ``ngram``, ``seed``) only, so
    they can be kept and reused per item."""

    keys: list[bytes] | None
    sig: np.ndarray
    has: np.ndarray


def features(texts: list[str], *, exact: bool = True, near: bool = True, num_perm: int = 128, ngram: int = 5,
             seed: int = 0, threads: int = 1) -> Features:
    n = len(texts)
    keys = [_exact_key(t) for t in texts] if exact else None
    if near:
        sig, has = _signatures(texts, list(range(n)), num_perm, ngram, seed, threads)
    else:
        sig, has = np.zeros((n, 0), dtype=np.uint64), np.zeros(n, dtype=bool)
    return Features(keys, sig, has)


def deduplicate(
    texts: list[str] | None,
    splits: list[str],
    *,
    exact: bool = True,
    near: bool = True,
    threshold: float = 0.85,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 0,
    precedence: tuple[str, ...] = ("test", "val", "train"),
    threads: int = 1,
    given: Features | None = None,
) -> DedupResult:
    """Drop exact / near duplicates within splits and leaks across splits (see module doc).
    ``threads`` compute MinHash signatures in parallel; the result is the same for any number.
    ``given``: the items' features (see :func:`features`, with the same switches and
    parameters) instead of their ``texts``."""
    t0 = time.perf_counter()
    if given is None and texts is None:
        raise ValueError("deduplicate needs the texts or their features")
    n = len(texts) if given is None else len(splits)
    if len(splits) != n:
        raise ValueError(f"texts and splits differ in length: {n} != {len(splits)}")
    if given is not None and ((exact and (given.keys is None or len(given.keys) != n))
                              or (near and (given.sig.shape != (n, num_perm) or len(given.has) != n))):
        raise ValueError(f"the given features are not those of {n} items with exact={exact}, near={near}, "
                         f"num_perm={num_perm}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 1 or ngram < 1:
        raise ValueError("num_perm and ngram must be >= 1")
    if len(set(precedence)) != len(precedence):
        raise ValueError(f"precedence has repeated splits: {precedence}")
    rank = {s: r for r, s in enumerate(precedence)}
    unknown = sorted(set(splits) - rank.keys())
    if unknown:
        raise ValueError(f"splits {unknown} not in precedence {precedence}")
    present = sorted(set(splits), key=rank.__getitem__)
    members: dict[str, list[int]] = {s: [] for s in present}
    for i, s in enumerate(splits):
        members[s].append(i)

    keep = [True] * n
    reasons: list[str | None] = [None] * n
    reps: set[int] = set()  # kept items that absorbed a within-split duplicate

    def drop(i: int, why: str) -> None:
        keep[i] = False
        reasons[i] = why

    # 1. exact, within split
    keys: list[bytes | None] = [None] * n
    if exact:
        known = given.keys if given is not None else None
        for s in present:
            first: dict[bytes, int] = {}
            for i in members[s]:
                k = keys[i] = known[i] if known is not None else _exact_key(texts[i])  # type: ignore[index]
                r = first.setdefault(k, i)
                if r != i:
                    drop(i, "exact_duplicate")
                    reps.add(r)

    # 2. near, within split (greedy in input order against kept items)
    bands, rows = lsh_params(threshold, num_perm)
    if near:
        if given is not None:
            sig, has = given.sig, given.has
        else:
            todo = [i for i in range(n) if keep[i]]
            sig, has = _signatures(texts, todo, num_perm, ngram, seed, threads)  # type: ignore[arg-type]
        bk = _band_keys(sig, bands, rows)
        for s in present:
            idx = np.asarray([i for i in members[s] if keep[i] and has[i]], dtype=np.int64)
            buckets: dict[tuple[int, int], list[int]] = {}
            for j in _in_shared_bucket(bk, idx).tolist():
                row = bk[j].tolist()
                pool = _pool(buckets, row)
                r = _first_match(j, pool, sig, threshold) if pool else None
                if r is not None:
                    drop(j, "near_duplicate")
                    reps.add(r)
                    continue
                for bd, key in enumerate(row):
                    buckets.setdefault((bd, key), []).append(j)

    # 3. leakage, in precedence order, against still-kept items of higher-precedence splits
    ref_keys: set[bytes] = set()
    ref_near: list[int] = []
    for level, s in enumerate(present):
        if level > 0:
            if exact:
                for i in members[s]:
                    if keep[i] and keys[i] in ref_keys:
                        drop(i, "leak_exact")
            if near and ref_near:
                q = np.asarray([i for i in members[s] if keep[i] and has[i]], dtype=np.int64)
                r_arr = np.asarray(ref_near, dtype=np.int64)
                if q.size:
                    cand = np.zeros(q.size, dtype=bool)
                    for bd in range(bands):
                        cand |= np.isin(bk[q, bd], bk[r_arr, bd])
                    qc = q[cand]
                    buckets = {}
                    for bd in range(bands):
                        rk = bk[r_arr, bd]
                        hit = np.isin(rk, bk[qc, bd])
                        for i, key in zip(r_arr[hit].tolist(), rk[hit].tolist()):
                            buckets.setdefault((bd, key), []).append(i)
                    for j in qc.tolist():
                        pool = _pool(buckets, bk[j].tolist())
                        if pool and _first_match(j, pool, sig, threshold) is not None:
                            drop(j, "leak_near")
        kept_here = [i for i in members[s] if keep[i]]
        if exact:
            ref_keys.update(keys[i] for i in kept_here)  # type: ignore[misc]
        if near:
            ref_near.extend(i for i in kept_here if has[i])

    report: dict[str, int | float] = {"items": n, "kept": sum(keep)}
    by_split = Counter(zip(splits, reasons))  # (split, reason or None: kept) -> items
    for why in REASONS:
        report[why] = sum(by_split[s, why] for s in present)
    for s in present:
        report[f"{s}.items"] = len(members[s])
        report[f"{s}.kept"] = by_split[s, None]
        for why in REASONS:
            report[f"{s}.{why}"] = by_split[s, why]
    report["clusters"] = len(reps)
    report["lsh_bands"] = bands
    report["lsh_rows"] = rows
    report["seconds"] = time.perf_counter() - t0
    return DedupResult(keep=keep, reasons=reasons, report=report)
