"""Benchmark: the bpe tokenizer plugin's ``encode`` against raw ``tokenizers`` ``encode_batch``.

    python bench/bench_tokenize.py [PATH] [--vocab-size 16384] [--repeat 5] [--cache-dir DIR] [--fresh]

PATH is a directory (every ``*.rs`` file under it, read from disk; ``.git``, ``target`` and
hidden directories skipped), a ``.jsonl`` file (its ``"text"`` fields) or any other file (one
text); without PATH a Rust-like corpus is generated. A byte-level BPE is trained on the texts
(or loaded from the cache), then, in the same run and interleaved, as medians of ``--repeat``:

* raw:    ``tokenizers.Tokenizer.from_file(tokenizer.json).encode_batch(texts, add_special_tokens=False)``
* raw+ids: the same plus reading ``.ids`` of every encoding (what a caller of raw needs)
* plugin: ``BpeTokenizer.encode(texts)`` (list of id lists, content-only tokenizer)

and prints tokens/s of each and plugin/raw (target: >= 0.80).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import tokenizers

from plugins.tokenizers import BpeTokenizer, BpeTokenizerConfig

SPECIALS = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<|file_sep|>"]


def read_corpus(path: Path | None, ext: str) -> list[str]:
    if path is None:
        return generated_corpus()
    if path.is_dir():
        texts = []
        for p in sorted(path.rglob(f"*{ext}")):
            rel = p.relative_to(path).parts
            if any(part.startswith(".") or part == "target" for part in rel[:-1]) or not p.is_file():
                continue
            texts.append(p.read_bytes().decode("utf-8", "replace"))
        return texts
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line)["text"] for line in fh if line.strip()]
    return [path.read_text(encoding="utf-8", errors="replace")]


def generated_corpus(n_files: int = 1500, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["block", "hash", "header", "parent", "score", "daa", "utxo", "mass", "state", "index", "tx", "fee"]
    types = ["u64", "u32", "usize", "Hash", "Vec<u8>", "Option<u64>", "&str", "Arc<Self>", "BlockHash"]
    texts = []
    for i in range(n_files):
        lines = [f"use crate::{rng.choice(words)}::{{{rng.choice(words).title()}, {rng.choice(types)}}};", ""]
        for j in range(rng.randint(20, 60)):
            a, b = rng.sample(words, 2)
            t = rng.choice(types)
            lines += [
                f"/// Returns the {a} of the {b} (#{rng.randint(0, 10**6)}) — «{a}»",
                f"pub fn {a}_{b}_{j}(&self, {a}: {t}) -> Result<{t}, Error> {{",
                f"    let {b} = self.{a}.get(&{a}).ok_or(Error::Missing({rng.randint(0, 999)}))?;",
                f"    if {b}.len() > {rng.randint(0, 99999)} {{ return Err(Error::TooLarge(\"{a}\")); }}",
                f"    Ok({b}.clone())",
                "}",
                "",
            ]
        texts.append("\n".join(lines))
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", type=Path, help="directory of source files, .jsonl or text file")
    ap.add_argument("--ext", default=".rs")
    ap.add_argument("--vocab-size", type=int, default=16384)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cache-dir", type=Path,
                    default=Path(os.environ.get("COMMITFORGE_CACHE", Path.home() / ".cache" / "commitforge")))
    ap.add_argument("--fresh", action="store_true", help="train into a temporary cache (always trains)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    texts = read_corpus(args.path, args.ext)
    read_s = time.perf_counter() - t0
    chars = sum(map(len, texts))
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    print(f"corpus: {args.path or 'generated'}: {len(texts)} texts, {chars:,} chars, {nbytes / 1e6:.2f} MB "
          f"(read in {read_s:.2f}s)")
    print(f"tokenizers {tokenizers.__version__}, {os.cpu_count()} CPUs, "
          f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')}")

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) if args.fresh else args.cache_dir
        tok = BpeTokenizer(BpeTokenizerConfig(vocab_size=args.vocab_size))
        t0 = time.perf_counter()
        tok.prepare(SPECIALS, lambda: iter(texts), cache)
        prep_s = time.perf_counter() - t0
        print(f"bpe vocab {args.vocab_size}: {'trained' if tok.trained else 'loaded from cache'} in {prep_s:.2f}s "
              f"-> {tok.path} (sha256 {tok.identity['sha256'][:12]}, added {tok.added_tokens})")
        raw = tokenizers.Tokenizer.from_file(str(tok.path / "tokenizer.json"))

        # warm-up (thread pool start, lazy state) and a correctness check
        raw_ids = [e.ids for e in raw.encode_batch(texts, add_special_tokens=False)]
        plugin_ids = tok.encode(texts)
        same = raw_ids == plugin_ids
        n_tokens = sum(map(len, plugin_ids))
        del raw_ids, plugin_ids

        times: dict[str, list[float]] = {"raw": [], "raw+ids": [], "plugin": []}
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            encs = raw.encode_batch(texts, add_special_tokens=False)
            times["raw"].append(time.perf_counter() - t0)
            del encs
            t0 = time.perf_counter()
            ids = [e.ids for e in raw.encode_batch(texts, add_special_tokens=False)]
            times["raw+ids"].append(time.perf_counter() - t0)
            del ids
            t0 = time.perf_counter()
            ids = tok.encode(texts)
            times["plugin"].append(time.perf_counter() - t0)
            del ids

    print(f"tokens: {n_tokens:,} ({chars / n_tokens:.2f} chars/token); plugin ids == raw ids: {same}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, s in med.items():
        print(f"  {k:8s} median {s * 1000:8.1f} ms  {n_tokens / s / 1e6:6.2f} M tokens/s  "
              f"{nbytes / s / 1e6:6.1f} MB/s   (runs: {', '.join(f'{t * 1000:.0f}' for t in times[k])} ms)")
    print(f"plugin / raw encode_batch = {med['raw'] / med['plugin']:.2f}   "
          f"plugin / raw+ids = {med['raw+ids'] / med['plugin']:.2f}   (target >= 0.80)")


if __name__ == "__main__":
    main()
