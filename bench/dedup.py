"""Near-duplicate detection: our MinHash stage (rensa) vs datasketch, on planted pairs.

The rows are synthetic chain-of-thought-like texts: Zipf-distributed pseudo-words, with shared
template phrases. A number of rows get a planted near-copy, made by replacing, inserting and
deleting words until a target Jaccard is reached. The target is drawn from 0.5..1.0, and 5% are
case/whitespace-only copies. The TRUE Jaccard of every planted pair is computed on the word
5-gram shingle sets (lowercased, whitespace-split: the stage's own normalization).

* recall: the share of planted pairs with true Jaccard >= threshold whose two rows end up in
  one cluster.
* precision: the share of found pairs (each dropped row with the row its cluster kept) whose
  true Jaccard is >= threshold - tol. It is printed for tol = 0.05 and for tol = 0 (strict).

datasketch runs the same pipeline: the same shingles, MinHash + MinHashLSH with the same
num_perm and threshold, its default band choice, candidates confirmed by estimated Jaccard, and
union-find; it picks its own bands (9 x 13 for 0.8 and 128). Being slow, it may run on the
first --datasketch-rows rows only; its rows/s comes from those rows.

    python bench/dedup.py                # 50k rows, datasketch on all of them
    python bench/dedup.py --rows 200000 --datasketch-rows 20000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from distill.filters import dedupe
from distill.filters.dedupe import Dedupe

NGRAM = 5
TEMPLATES = ["let's think step by step.", "first, we find", "so the answer is", "we know that",
             "therefore", "next, we compute", "this means that"]


def shingles(text: str) -> set[tuple[str, ...]]:
    words = text.lower().split()
    if len(words) < NGRAM:
        return {tuple(words)} if words else set()
    return set(zip(*(words[i:] for i in range(NGRAM))))


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def make_rows(n: int, planted: int, seed: int) -> tuple[list[dict], list[tuple[int, int, float]]]:
    """n rows, ``planted`` of which are near-copies of others; returns the rows and the planted
    pairs as (row index, row index, true Jaccard)."""
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    vocab = np.array(sorted({"".join(rng.choice(syllables, rng.integers(1, 4)))
                             for _ in range(30_000)}))
    p = 1 / np.arange(1, len(vocab) + 1) ** 1.05
    p /= p.sum()

    def doc() -> list[str]:
        words = list(vocab[rng.choice(len(vocab), rng.integers(40, 250), p=p)])
        for _ in range(3):
            pos = rng.integers(0, len(words))
            words[pos:pos] = TEMPLATES[rng.integers(len(TEMPLATES))].split()
        return words

    base = [doc() for _ in range(n - planted)]
    texts = [" ".join(w) for w in base]
    pairs = []
    for src in rng.choice(len(base), planted, replace=False):
        target = 1.0 if rng.random() < 0.05 else rng.uniform(0.5, 1.0)
        words = list(base[src])
        if target == 1.0:
            text = "  ".join(w.upper() if rng.random() < 0.3 else w for w in words)
        else:
            size = len(shingles(texts[src]))
            broken = size * (1 - target) / (1 + target)  # J = (s - x) / (s + x)
            for _ in range(max(1, round(broken / NGRAM))):
                pos, op = rng.integers(0, len(words)), rng.integers(3)
                if op == 0:
                    words[pos] = str(vocab[rng.integers(len(vocab))])
                elif op == 1:
                    words.insert(pos, str(vocab[rng.integers(len(vocab))]))
                elif len(words) > NGRAM + 1:
                    del words[pos]
            text = " ".join(words)
        texts.append(text)
        pairs.append((int(src), len(texts) - 1, jaccard(texts[src], text)))
    order = rng.permutation(len(texts))  # shuffle; remap the pairs
    where = np.empty(len(texts), dtype=np.int64)
    where[order] = np.arange(len(texts))
    rows = [{"id": f"r{i}", "question": "q", "completion": texts[j]} for i, j in enumerate(order)]
    return rows, [(int(where[a]), int(where[b]), j) for a, b, j in pairs]


def datasketch_keepers(texts: list[str], threshold: float, num_perm: int) -> list[int]:
    """For each text, the index of the text its cluster keeps (the first one)."""
    from datasketch import MinHash, MinHashLSH

    mhs = MinHash.bulk(([" ".join(s).encode() for s in shingles(t)] for t in texts),
                       num_perm=num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for i, m in enumerate(mhs):
            session.insert(i, m)
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, m in enumerate(mhs):
        for j in lsh.query(m):
            if j > i and find(i) != find(j) and m.jaccard(mhs[j]) >= threshold:
                a, b = sorted((find(i), find(j)))
                parent[b] = a
    return [find(i) for i in range(len(texts))]


def ours_keepers(rows: list[dict], threshold: float, num_perm: int) -> tuple[list[int], float]:
    stage = Dedupe(method="minhash", threshold=threshold, num_perm=num_perm, ngram=NGRAM)
    start = time.perf_counter()
    _, dropped = stage.apply(rows)
    seconds = time.perf_counter() - start
    index = {r["id"]: i for i, r in enumerate(rows)}
    keepers = list(range(len(rows)))
    for r in dropped:
        keepers[index[r["id"]]] = index[r["duplicate_of"]]
    return keepers, seconds


def score(name: str, keepers: list[int], texts: list[str], pairs, threshold: float, tol: float):
    n = len(keepers)
    pairs = [(a, b, j) for a, b, j in pairs if a < n and b < n]
    wanted = [(a, b) for a, b, j in pairs if j >= threshold]
    recall = np.mean([keepers[a] == keepers[b] for a, b in wanted]) if wanted else float("nan")
    found = [jaccard(texts[i], texts[k]) for i, k in enumerate(keepers) if i != k]
    loose = np.mean([j >= threshold - tol for j in found]) if found else float("nan")
    strict = np.mean([j >= threshold for j in found]) if found else float("nan")
    buckets = []
    for lo in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0):
        hi = lo + (0.05 if lo >= 0.75 else 0.1) if lo < 1 else 1.01
        hits = [keepers[a] == keepers[b] for a, b, j in pairs if lo <= j < hi]
        buckets.append(f"{lo:.2f}:{np.mean(hits):.2f}({len(hits)})" if hits else f"{lo:.2f}:-")
    print(f"  {name:10s} recall(J>={threshold}) {recall:.3f} over {len(wanted)} pairs | "
          f"precision (J>={threshold - tol:.2f}) {loose:.3f}, strict (J>={threshold}) "
          f"{strict:.3f} over {len(found)} found pairs")
    print(f"  {'':10s} found rate by true-J bucket: {' '.join(buckets)}")
    return recall, loose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--planted", type=int, default=5_000)
    parser.add_argument("--datasketch-rows", type=int, default=None, help="default: all rows")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--tol", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows, pairs = make_rows(args.rows, args.planted, args.seed)
    texts = [r["completion"] for r in rows]
    words = sum(len(t.split()) for t in texts) / len(texts)
    js = np.array([j for _, _, j in pairs])
    print(f"{len(rows)} rows, {words:.0f} words each on average; {len(pairs)} planted pairs, true "
          f"Jaccard {js.min():.2f}..{js.max():.2f}, {np.sum(js >= args.threshold)} at or above "
          f"{args.threshold}; num_perm {args.num_perm}, {NGRAM}-word shingles")

    Dedupe(method="minhash").apply(rows[:1000])  # warm up imports
    keepers, ours_s = ours_keepers(rows, args.threshold, args.num_perm)
    workers, dedupe.WORKERS = dedupe.WORKERS, 1
    _, ours_1_s = ours_keepers(rows, args.threshold, args.num_perm)
    start = time.perf_counter()
    kept, _ = Dedupe(method="exact").apply(rows)
    exact_s = time.perf_counter() - start
    m = args.datasketch_rows or len(rows)
    start = time.perf_counter()
    ds_keepers = datasketch_keepers(texts[:m], args.threshold, args.num_perm)
    ds_s = time.perf_counter() - start

    ours_rate, ds_rate, exact_rate = len(rows) / ours_s, m / ds_s, len(rows) / exact_s
    print(f"\nthroughput (wall clock, {len(rows)} rows; datasketch on {m})")
    print(f"  ours minhash  {ours_rate:10,.0f} rows/s  ({ours_s:.2f} s, {workers} threads)")
    print(f"  ours, 1 thread{len(rows) / ours_1_s:10,.0f} rows/s  ({ours_1_s:.2f} s)")
    print(f"  datasketch    {ds_rate:10,.0f} rows/s  ({ds_s:.2f} s, 1 thread; pure Python)")
    print(f"  ratio         {ours_rate / ds_rate:10.1f}x   (goal >= 10x); 1 thread: "
          f"{len(rows) / ours_1_s / ds_rate:.1f}x")
    print(f"  ours exact    {exact_rate:10,.0f} rows/s  ({exact_s:.2f} s, kept {len(kept)}) "
          f"(goal >= 30,000)")
    print(f"\nquality (a found pair is correct if its true Jaccard >= threshold - tol, "
          f"tol = {args.tol}; goals: recall >= 0.95, precision >= 0.95)")
    score("ours", keepers, texts, pairs, args.threshold, args.tol)
    score("datasketch", ds_keepers, texts, pairs, args.threshold, args.tol)


if __name__ == "__main__":
    main()
