"""The dedupe stage's ``exact`` and ``minhash`` methods as a distributed Ray Data algorithm that
keeps the same rows as the local stage.

1. Keys, per batch on the workers, by the local stage's own code: ``exact``, the BLAKE2 hash of
   the normalized text; ``minhash``, the MinHash signature, one bucket key per LSH band (the
   band's values hashed as the local stage hashes them) and a 128-bit digest of the signature.
2. Buckets, grouped across workers: rows are hash-partitioned by bucket key, so each partition
   holds whole buckets. ``exact``: a bucket is a cluster. ``minhash``: rows with one signature
   join the first of them (its representative; they share every band bucket, so the band-0
   bucket sees them all), and the representatives that share a bucket are candidate pairs.
3. Confirmation (``minhash``): the shingle sets of the candidates are gathered from the
   workers and each pair joins when its exact Jaccard reaches the threshold, as locally.
4. Components, on the driver over the edge list (rows with a duplicate only): union-find; each
   cluster keeps its first row, or the one with the best ``keep`` value.

Rows are identified by ``_pos``, their position in the input; rows travel pickled in ``_row``.
"""

from __future__ import annotations

import hashlib
import pickle
from itertools import combinations

import numpy as np
import pyarrow as pa

from distill.cluster import shuffle
from distill.filters.dedupe import (
    Clusters,
    Dedupe,
    band_count,
    is_better,
    shingles,
    signatures,
)

_BAND_MIX = np.uint64(0x9E3779B97F4A7C15)  # the local stage's band-key multiplier


def duplicates_on_ray(ray, blocks: list, stage: Dedupe, parts: int) -> dict[int, str]:
    """{position of each row to drop: the id of the row its cluster keeps}, for the rows still
    kept in ``blocks`` (refs to Arrow tables of ``_pos``, ``_row``, ``_drop``), with buckets
    grouped in ``parts`` partitions; sets ``stage.clusters``."""
    edges = _columns(ray.get(shuffle(ray, blocks, _keys, (stage,), ["b0", "b1"], parts,
                                     _bucket_edges, (stage.method,))))
    if not len(edges["a"]):
        stage.clusters = 0
        return {}
    same = edges["kind"] == 0
    candidates = np.unique(np.stack([edges["a"][~same], edges["b"][~same]], axis=1), axis=0)
    nodes = np.unique(np.concatenate([edges["a"], edges["b"]]))
    facts_of = ray.remote(_facts)
    facts = _columns(ray.get([facts_of.remote(b, stage, nodes, np.unique(candidates))
                              for b in blocks]))
    sets = {p: set(np.frombuffer(s, np.uint64).tolist())
            for p, s in zip(facts["pos"].tolist(), facts["shingles"]) if s is not None}
    clusters = Clusters(len(nodes))
    for a, b in np.searchsorted(nodes, np.stack([edges["a"][same], edges["b"][same]], 1)):
        clusters.union(int(a), int(b))
    for (a, b), (i, j) in zip(candidates.tolist(), np.searchsorted(nodes, candidates).tolist()):
        if clusters.find(i) != clusters.find(j) and _similar(sets[a], sets[b], stage.threshold):
            clusters.union(i, j)
    return _drops(stage, nodes, clusters, facts)


def drop_reason(stage: Dedupe) -> str:
    """The reason a dropped duplicate gives, as the local stage words it."""
    return ("duplicate" if stage.method == "exact" else "near-duplicate") + f" ({stage.method})"


def _keys(block: pa.Table, stage: Dedupe) -> pa.Table:
    """Bucket keys (b0, b1) of the block's rows still kept; minhash: one per band, with the
    signature's digest (s0, s1)."""
    table = _alive(block)
    rows = [pickle.loads(b) for b in table.column("_row").to_pylist()]
    for row in rows:
        stage._require(row)
    texts = [stage._text(r) for r in rows]
    pos = table.column("_pos").to_numpy()
    if stage.method == "exact":
        digests = [hashlib.blake2b(" ".join(t.lower().split()).encode(), digest_size=16).digest()
                   for t in texts]
        b = np.frombuffer(b"".join(digests), np.uint64).reshape(-1, 2)
        return pa.table({"b0": b[:, 0], "b1": b[:, 1], "pos": pos})
    bands = band_count(stage.threshold, stage.num_perm)
    if not texts:
        empty = np.zeros(0, np.uint64)
        return pa.table({"b0": empty, "b1": empty, "s0": empty, "s1": empty, "pos": pos})
    sig = np.array(signatures(*shingles(texts, stage.ngram), stage.num_perm).to_rows(),
                   dtype=np.uint64).reshape(len(texts), stage.num_perm)
    digest = np.frombuffer(b"".join(hashlib.blake2b(s.tobytes(), digest_size=16).digest()
                                    for s in sig), np.uint64).reshape(-1, 2)
    width = stage.num_perm // bands
    band_keys = []
    for band in range(bands):
        key = np.zeros(len(sig), np.uint64)
        for col in sig[:, band * width:(band + 1) * width].T:
            key = key * _BAND_MIX + col
        band_keys.append(key)
    return pa.table({"b0": np.repeat(np.arange(bands, dtype=np.uint64), len(sig)),
                     "b1": np.concatenate(band_keys), "s0": np.tile(digest[:, 0], bands),
                     "s1": np.tile(digest[:, 1], bands), "pos": np.tile(pos, bands)})


def _alive(block: pa.Table) -> pa.Table:
    """The rows of a block that no earlier stage dropped (an empty block may lack columns)."""
    if not block.num_rows:
        return pa.table({"_pos": pa.array([], pa.int64()), "_row": pa.array([], pa.binary())})
    return block.filter(pa.array(block.column("_drop").to_numpy() == -1))


def _bucket_edges(table: pa.Table, method: str) -> pa.Table:
    """The edges of one partition: (row, first row of its bucket) for exact duplicates and
    equal signatures (kind 0); (representative, representative) candidate pairs (kind 1)."""
    if not table.num_rows:
        return pa.table({"a": pa.array([], pa.int64()), "b": pa.array([], pa.int64()),
                         "kind": pa.array([], pa.int8())})
    part = {c: table.column(c).to_numpy() for c in table.column_names}
    if method == "exact":
        part = {**part, "s0": np.zeros_like(part["pos"]), "s1": np.zeros_like(part["pos"])}
    order = np.lexsort([part[k] for k in ("pos", "s1", "s0", "b1", "b0")])
    b0, b1, s0, s1, pos = (part[k][order] for k in ("b0", "b1", "s0", "s1", "pos"))
    new_bucket = np.r_[True, (b0[1:] != b0[:-1]) | (b1[1:] != b1[:-1])]
    new_sig = new_bucket | np.r_[True, (s0[1:] != s0[:-1]) | (s1[1:] != s1[:-1])]
    rep = pos[np.flatnonzero(new_sig)[np.cumsum(new_sig) - 1]]  # first row of its signature
    same = ~new_sig & ((b0 == 0) if method == "minhash" else True)
    a, b, kind = [pos[same]], [rep[same]], [np.zeros(same.sum(), np.int8)]
    at = np.flatnonzero(new_sig)  # the representatives, bucket by bucket
    bucket = (np.cumsum(new_bucket) - 1)[at]
    size = np.bincount(bucket)[bucket]  # representatives in its bucket
    pairs = [pos[at[size == 2]].reshape(-1, 2)]  # the common case, vectorized
    for k in np.unique(bucket[size > 2]).tolist():
        pairs.append(np.array(list(combinations(pos[at[bucket == k]].tolist(), 2))))
    for p in pairs:
        a.append(p[:, 0]), b.append(p[:, 1]), kind.append(np.ones(len(p), np.int8))
    return pa.table({"a": np.concatenate(a), "b": np.concatenate(b),
                     "kind": np.concatenate(kind)})


def _facts(block: pa.Table, stage: Dedupe, nodes: np.ndarray, candidates: np.ndarray) -> pa.Table:
    """id, keep value (pickled) and, for candidates, the shingle set of the rows in ``nodes``."""
    table = _alive(block)
    pos = table.column("_pos").to_numpy()
    mine = np.flatnonzero(np.isin(pos, nodes))
    rows = [pickle.loads(table.column("_row")[int(i)].as_py()) for i in mine]
    check = np.isin(pos[mine], candidates)
    shingle_bytes: list[bytes | None] = [None] * len(mine)
    if check.any():
        flat, offsets = shingles([stage._text(r) for r, c in zip(rows, check) if c], stage.ngram)
        for n, i in enumerate(np.flatnonzero(check)):
            shingle_bytes[i] = flat[offsets[n]:offsets[n + 1]].tobytes()
    keep = [pickle.dumps(r.get(stage.keep) if stage.keep else None) for r in rows]
    ids = [pickle.dumps(r.get("id")) for r in rows]
    return pa.table({"pos": pos[mine], "id": pa.array(ids, pa.binary()),
                     "keep": pa.array(keep, pa.binary()),
                     "shingles": pa.array(shingle_bytes, pa.binary())})


def _similar(a: set, b: set, threshold: float) -> bool:
    inter = len(a & b)
    return inter >= threshold * (len(a) + len(b) - inter)


def _drops(stage: Dedupe, nodes: np.ndarray, clusters: Clusters, facts: dict) -> dict[int, str]:
    """The rows each cluster drops, with the id of the row it keeps (the local stage's rule)."""
    where = dict(zip(facts["pos"].tolist(), range(len(facts["pos"]))))
    keep_value = [pickle.loads(k) for k in facts["keep"]]
    keeper: dict[int, int] = {}  # cluster root -> kept position
    members: dict[int, list[int]] = {}
    for i, p in enumerate(nodes.tolist()):  # in row order, as the local stage
        root = clusters.find(i)
        members.setdefault(root, []).append(p)
        best = keeper.setdefault(root, p)
        if stage.keep and is_better(keep_value[where[p]], keep_value[where[best]]):
            keeper[root] = p
    stage.clusters = sum(len(ps) > 1 for ps in members.values())
    return {p: pickle.loads(facts["id"][where[keeper[root]]])
            for root, ps in members.items() for p in ps if p != keeper[root]}


def _columns(tables: list[pa.Table]) -> dict[str, np.ndarray | list]:
    """The columns of tables of one schema (integers as numpy, the rest as lists)."""
    table = pa.concat_tables(tables)
    return {c: (table.column(c).to_numpy() if pa.types.is_integer(table.column(c).type)
                else table.column(c).to_pylist()) for c in table.column_names}
