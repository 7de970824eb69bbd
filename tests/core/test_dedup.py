"""core.dedup: exact / near (MinHash LSH) dedup within splits and split leakage removal."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import pytest

from core.dedup import REASONS, deduplicate, features, lsh_params, normalize

# --- realistic Rust snippets, generated -------------------------------------------------------

_TEMPLATES = [
    """pub fn {name}(blocks: &[Block], limit: usize) -> Result<Vec<Hash>, StoreError> {{
    let mut out = Vec::with_capacity(blocks.len().min(limit));
    for (index, block) in blocks.iter().enumerate() {{
        if index >= limit {{
            break;
        }}
        let header = block.header().ok_or(StoreError::MissingHeader(index))?;
        if header.timestamp < {lit} {{
            log::warn!("skipping stale block {{}} at {{}}", header.hash, index);
            continue;
        }}
        out.push(header.hash);
    }}
    Ok(out)
}}
""",
    """impl fmt::Display for {name} {{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {{
        match self {{
            {name}::Pending => write!(f, "pending"),
            {name}::Accepted {{ height }} => write!(f, "accepted at {{}}", height),
            {name}::Rejected(reason) => write!(f, "rejected: {{:?}}", reason),
            {name}::Timeout(ms) if *ms > {lit} => write!(f, "timed out after {{}}ms", ms),
            _ => f.write_str("unknown"),
        }}
    }}
}}
""",
    """fn {name}<T: Ord + Copy>(sorted: &[T], needle: T) -> Option<usize> {{
    let (mut lo, mut hi) = (0usize, sorted.len());
    while lo < hi {{
        let mid = lo + (hi - lo) / 2;
        match sorted[mid].cmp(&needle) {{
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(mid),
        }}
    }}
    debug_assert!(lo <= {lit});
    None
}}
""",
    """pub async fn {name}(client: &RpcClient, addr: &str) -> anyhow::Result<ServerInfo> {{
    let url = format!("grpc://{{}}:{lit}", addr);
    let conn = client.connect(&url).await.context("connecting to node")?;
    let info = conn.get_server_info().await?;
    if !info.is_synced {{
        anyhow::bail!("node {{}} is not synced (virtual daa score {{}})", addr, info.virtual_daa_score);
    }}
    tracing::info!(network = %info.network_id, "connected");
    Ok(info)
}}
""",
    """#[cfg(test)]
mod {name} {{
    use super::*;

    #[test]
    fn roundtrip_encodes_and_decodes() {{
        let original = Transaction::new(vec![], vec![TxOut::new({lit}, script())], 0);
        let bytes = bincode::serialize(&original).unwrap();
        let decoded: Transaction = bincode::deserialize(&bytes).unwrap();
        assert_eq!(original, decoded);
        assert_eq!(decoded.outputs.len(), 1);
    }}
}}
""",
    """struct {name} {{
    entries: HashMap<String, u64>,
    capacity: usize,
}}

impl {name} {{
    fn insert(&mut self, key: &str, value: u64) -> bool {{
        if self.entries.len() >= self.capacity && !self.entries.contains_key(key) {{
            return false;
        }}
        *self.entries.entry(key.to_owned()).or_insert(0) += value.saturating_mul({lit});
        true
    }}
}}
""",
]


def rust(template: int, name: str, lit: int = 42) -> str:
    return _TEMPLATES[template].format(name=name, lit=lit)


def rename_once(code: str, old: str, new: str) -> str:
    """A near duplicate: one identifier occurrence renamed."""
    assert old in code
    return code.replace(old, new, 1)


def reformat(code: str) -> str:
    """Same code, different whitespace only (indent, blank lines, trailing spaces, tabs)."""
    lines = [("\t" + ln.strip() + "   ") for ln in code.splitlines()]
    return "\n\n".join(lines).replace(" = ", "  =\t")


def true_jaccard(a: str, b: str, n: int = 5) -> float:
    def shingles(t: str) -> set[tuple[str, ...]]:
        toks = re.findall(r"\w+|[^\w\s]", t)
        return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


BASE = rust(0, "collect_block_hashes")
NEAR = rename_once(BASE, "collect_block_hashes", "gather_block_hashes")
OTHERS = [rust(t, f"Widget{t}", lit=100 + t) for t in range(1, len(_TEMPLATES))]


def test_fixture_similarities_are_what_the_tests_claim():
    assert 0.9 <= true_jaccard(BASE, NEAR) < 1.0
    pool = [BASE, *OTHERS]
    for i, a in enumerate(pool):
        for b in pool[i + 1 :]:
            assert true_jaccard(a, b) < 0.5


# --- behaviour ---------------------------------------------------------------------------------


def test_normalize_collapses_whitespace_runs_and_strips():
    assert normalize("  fn  main()\n\t{ }\r\n") == "fn main() { }"
    assert normalize(BASE) == normalize(reformat(BASE))
    assert normalize("a+b") != normalize("a + b")  # only whitespace runs are normalised


def test_exact_duplicates_differing_in_whitespace_keep_first():
    texts = [OTHERS[0], BASE, reformat(BASE), OTHERS[1], BASE]
    r = deduplicate(texts, ["train"] * 5, near=False)
    assert r.keep == [True, True, False, True, False]
    assert r.reasons == [None, None, "exact_duplicate", None, "exact_duplicate"]
    assert r.report["exact_duplicate"] == 2 and r.report["clusters"] == 1


def test_exact_duplicates_only_within_a_split():
    r = deduplicate([BASE, BASE], ["train", "other"], precedence=("train", "other"), near=False)
    assert r.reasons == [None, "leak_exact"]  # cross-split match is leakage, not a within-split dup


def test_near_duplicate_dropped_and_different_functions_kept():
    texts = [BASE, *OTHERS, NEAR]
    r = deduplicate(texts, ["train"] * len(texts), threshold=0.85)
    assert r.keep == [True] * (len(OTHERS) + 1) + [False]
    assert r.reasons[-1] == "near_duplicate"
    # the first in input order is the one kept
    r2 = deduplicate([NEAR, BASE], ["train", "train"])
    assert r2.keep == [True, False] and r2.reasons == [None, "near_duplicate"]


def test_many_generated_variants_collapse_to_first():
    # the same function renamed once in 20 different ways: every pair ~95% similar
    variants = [rename_once(BASE, "collect_block_hashes", f"collect_{i}") for i in range(20)]
    distinct = [rust(t, f"Thing{i}", lit=i) for i, t in enumerate([1, 2, 3, 4, 5])]
    texts = variants[:10] + distinct + variants[10:]
    r = deduplicate(texts, ["train"] * len(texts))
    assert [i for i, k in enumerate(r.keep) if k] == [0, *range(10, 15)]
    assert r.report["near_duplicate"] == 19 and r.report["clusters"] == 1


def test_near_false_keeps_near_duplicates_but_still_drops_exact():
    texts = [BASE, NEAR, reformat(BASE)]
    r = deduplicate(texts, ["train"] * 3, near=False)
    assert r.keep == [True, True, False]
    assert r.reasons[2] == "exact_duplicate"


def test_exact_false_still_catches_whitespace_variants_as_near():
    r = deduplicate([BASE, reformat(BASE)], ["train", "train"], exact=False)
    assert r.reasons == [None, "near_duplicate"]


def test_short_texts_dedup_exactly_and_nearly_on_whole_token_sequence():
    texts = ["x+1", "x + 1", " x+1\n", "y+1", "Ok(())"]
    r = deduplicate(texts, ["train"] * 5)
    assert r.reasons == [None, "near_duplicate", "exact_duplicate", None, None]
    assert deduplicate(texts[:2], ["train"] * 2, near=False).keep == [True, True]


def test_train_equal_to_test_is_leak_exact_and_test_kept():
    # train comes first in input order: precedence, not order, decides who loses
    texts = [BASE, OTHERS[0], reformat(BASE)]
    r = deduplicate(texts, ["train", "train", "test"])
    assert r.keep == [False, True, True]
    assert r.reasons == ["leak_exact", None, None]
    assert r.report["train.leak_exact"] == 1 and r.report["test.kept"] == 1


def test_val_near_duplicating_test_is_leak_near():
    texts = [NEAR, OTHERS[1], BASE, OTHERS[2]]
    r = deduplicate(texts, ["val", "val", "test", "train"])
    assert r.reasons == ["leak_near", None, None, None]
    assert r.report["val.leak_near"] == 1 and r.report["leak_near"] == 1


def test_test_items_are_never_dropped_for_leakage():
    texts = [BASE, NEAR, BASE, NEAR]
    r = deduplicate(texts, ["train", "val", "test", "test"])
    # within test, NEAR is a near duplicate of BASE; train and val both leak from test
    assert r.reasons == ["leak_exact", "leak_near", None, "near_duplicate"]


def test_unknown_split_is_an_error():
    with pytest.raises(ValueError, match="validation"):
        deduplicate([BASE], ["validation"])


def test_lsh_params():
    assert lsh_params(0.85, 128) == (8, 16)
    for thr, perm in [(0.5, 128), (0.7, 64), (0.9, 256), (0.85, 100)]:
        b, r = lsh_params(thr, perm)
        assert b * r == perm


def _mixed_corpus() -> tuple[list[str], list[str]]:
    """Per template: a held-out original, its whitespace copy and renamed copy in lower splits,
    and a train-only function present three times (twice exactly, once renamed)."""
    texts, splits = [], []
    for t in range(len(_TEMPLATES)):
        name = f"Name{t}"
        base = rust(t, name, lit=t)
        held = "test" if t % 2 == 0 else "val"
        own = base + rust((t + 1) % len(_TEMPLATES), f"Own{t}", lit=500 + t)
        items = [
            (own, "train"),
            (reformat(base), "train"),  # leak_exact
            (base, held),
            (rename_once(base, name, f"Alt{t}"), "val" if held == "test" else "train"),  # leak_near
            (reformat(own), "train"),  # exact_duplicate
            (rename_once(own, f"Own{t}", f"Mine{t}"), "train"),  # near_duplicate
        ]
        for text, split in items:
            texts.append(text)
            splits.append(split)
    return texts, splits


def test_report_counts_add_up():
    texts, splits = _mixed_corpus()
    r = deduplicate(texts, splits)
    rep = r.report
    assert rep["items"] == len(texts) and rep["kept"] == sum(r.keep)
    assert rep["kept"] + sum(rep[w] for w in REASONS) == rep["items"]
    for w in REASONS:
        assert rep[w] == r.reasons.count(w)
    for s in set(splits):
        assert rep[f"{s}.kept"] + sum(rep[f"{s}.{w}"] for w in REASONS) == rep[f"{s}.items"]
    assert all((k is True) == (why is None) for k, why in zip(r.keep, r.reasons))
    assert min(rep[w] for w in REASONS) > 0  # the corpus exercises every reason


def test_deterministic_across_calls_and_hash_seeds():
    texts, splits = _mixed_corpus()
    # plus borderline pairs (true Jaccard ~0.8-0.9): their fate hinges on the exact hash values,
    # so any process-salted hashing (str hash()) would flip some of them between processes
    border = [rust(t, f"Fn{k}", lit=k) for t in range(len(_TEMPLATES)) for k in range(6)]
    texts += border
    splits += ["train"] * len(border)
    a = deduplicate(texts, splits, seed=7)
    b = deduplicate(texts, splits, seed=7)
    assert (a.keep, a.reasons) == (b.keep, b.reasons)
    strip = lambda rep: {k: v for k, v in rep.items() if k != "seconds"}  # noqa: E731
    assert strip(a.report) == strip(b.report)
    assert 0 < sum(a.keep[-len(border) :]) < len(border) - len(_TEMPLATES)  # really borderline

    code = (
        "import json, sys\n"
        "from core.dedup import deduplicate\n"
        "d = json.load(sys.stdin)\n"
        "r = deduplicate(d['texts'], d['splits'], seed=7)\n"
        "print(json.dumps([r.keep, r.reasons]))\n"
    )
    payload = json.dumps({"texts": texts, "splits": splits})
    for hash_seed in ("123", "0"):  # two different salts, whatever the parent's is
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=payload,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            check=True,
        )
        assert json.loads(out.stdout) == [a.keep, a.reasons]


def test_threads_give_the_same_signatures_and_result(monkeypatch):
    import numpy as np

    import core.dedup as dedup

    monkeypatch.setattr(dedup, "_BATCH_CHARS", 2000)  # many batches: every thread gets several
    texts, splits = _mixed_corpus()
    texts += ["", "é ü 日本", "x"]  # no shingles, non-ASCII classes, a one-token text
    splits += ["train"] * 3
    items = list(range(len(texts)))
    one = dedup._signatures(texts, items, 64, 5, 3)
    three = dedup._signatures(texts, items, 64, 5, 3, threads=3)
    assert np.array_equal(one[0], three[0]) and np.array_equal(one[1], three[1])
    assert one[1].sum() == len(texts) - 1  # only the empty text has no shingles
    a, b = deduplicate(texts, splits, seed=3), deduplicate(texts, splits, seed=3, threads=2)
    assert (a.keep, a.reasons) == (b.keep, b.reasons) and not all(a.keep)


def test_empty_input():
    r = deduplicate([], [])
    assert r.keep == [] and r.reasons == []
    assert r.report["items"] == 0 and r.report["kept"] == 0


def test_empty_and_whitespace_texts():
    r = deduplicate(["", "  \n", BASE, ""], ["train"] * 4)
    assert r.reasons == [None, "exact_duplicate", None, "exact_duplicate"]
    assert deduplicate(["", " "], ["train"] * 2, exact=False).keep == [True, True]


def test_mismatched_lengths_rejected():
    with pytest.raises(ValueError):
        deduplicate([BASE, NEAR], ["train"])


def test_given_features_deduplicate_as_the_texts_do():
    rng = random.Random(7)
    words = [f"w{k}" for k in range(40)]
    base = [" ".join(rng.choice(words) for _ in range(60)) for _ in range(30)]
    texts = base + [t + " extra" for t in base[:10]] + base[:5] + ["", "   ", "x"]
    splits = [rng.choice(["train", "val", "test"]) for _ in texts]
    for exact, near in ((True, True), (True, False), (False, True)):
        want = deduplicate(texts, splits, exact=exact, near=near, threshold=0.7, num_perm=64)
        given = features(texts, exact=exact, near=near, num_perm=64, threads=2)
        got = deduplicate(None, splits, exact=exact, near=near, threshold=0.7, num_perm=64, given=given)
        assert got.keep == want.keep and got.reasons == want.reasons
        assert {k: v for k, v in got.report.items() if k != "seconds"} == \
            {k: v for k, v in want.report.items() if k != "seconds"}
    assert sum(r is not None for r in want.reasons) > 5
    with pytest.raises(ValueError, match="features are not those of"):
        deduplicate(None, splits, num_perm=128, given=features(texts, num_perm=64))
