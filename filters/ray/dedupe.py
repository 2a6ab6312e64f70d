"""The dedupe stage's ``exact`` and ``minhash`` methods as a distributed algorithm on Ray tasks
that keeps the same rows as the local stage.

1. Keys, per block on the workers, by the local stage's own code: ``exact``, the BLAKE2 hash of
   the normalized text (its first half is the bucket key); ``minhash``, the MinHash signature,
   one bucket key per LSH band (the band's index and values hashed as the local stage hashes
   band values) and a 64-bit hash of the whole signature.
2. Buckets, grouped across workers: rows are hash-partitioned by bucket key, so each partition
   holds whole buckets; only keys that occur more than once are looked at further. ``exact``:
   rows with the same full hash are a cluster. ``minhash``: rows with one signature join the
   first of them (its representative; they share every band bucket, so the band-0 bucket sees
   them all), and the representatives that share a bucket are candidate pairs.
3. Confirmation (``minhash``): the shingle sets of the candidates are gathered from the
   workers and each pair joins when its exact Jaccard reaches the threshold, as locally.
4. Components, on the driver over the edge list (rows with a duplicate only): union-find; each
   cluster keeps its first row, or the one with the best ``keep`` value.

Rows are identified by ``_pos``, their position in the input (see ``blocks``).
"""

from __future__ import annotations

import hashlib
import pickle
from functools import cache
from itertools import combinations

import numpy as np
import pyarrow as pa

from distill.cluster import shuffle
from distill.filters.dedupe import (
    Clusters,
    Dedupe,
    band_count,
    band_keys,
    is_better,
    shingles,
    signatures,
    similar,
)
from distill.filters.ray.blocks import alive, rows_of


def duplicates(ray, blocks: list, stage: Dedupe, parts: int) -> dict[int, tuple[str, dict]]:
    """The dedupe stage's distributed plan: {position of each row to drop: (its reason,
    ``duplicate_of``: the id of the row its cluster keeps)}, for the rows still kept in
    ``blocks`` (refs to the blocks of ``distill.filters.ray.blocks``), with buckets grouped in ``parts``
    partitions; sets ``stage.clusters``."""
    edges = _columns(ray.get(shuffle(ray, blocks, _keys, (stage,), ["key"], parts,
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
    shingle_bytes = dict(zip(facts["pos"].tolist(), facts["shingles"]))

    @cache
    def shingle_set(p: int) -> set:
        return set(np.frombuffer(shingle_bytes[p], np.uint64).tolist())

    clusters = Clusters(len(nodes))
    for a, b in np.searchsorted(nodes, np.stack([edges["a"][same], edges["b"][same]], 1)):
        clusters.union(int(a), int(b))
    for (a, b), (i, j) in zip(candidates.tolist(), np.searchsorted(nodes, candidates).tolist()):
        if clusters.find(i) != clusters.find(j) and similar(shingle_set(a), shingle_set(b),
                                                            stage.threshold):
            clusters.union(i, j)
    return _drops(stage, nodes, clusters, facts)


def _keys(block: pa.Table, stage: Dedupe) -> pa.Table:
    """One bucket ``key`` per kept row of the block (exact: the first half of the text's
    digest), or per row and band (minhash: the band's values hashed, with the band's index);
    ``sig``: the rest of the digest (exact) or a hash of the whole signature (minhash)."""
    table = alive(block)
    texts = [stage.text(r) for r in _needed(table, stage)]
    pos = table.column("_pos").to_numpy()
    if stage.method == "exact":
        digests = [hashlib.blake2b(" ".join(t.lower().split()).encode(), digest_size=16).digest()
                   for t in texts]
        d = np.frombuffer(b"".join(digests), np.uint64).reshape(-1, 2)
        return pa.table({"key": d[:, 0], "sig": d[:, 1], "pos": pos,
                         "band": np.zeros(len(pos), np.uint8)})
    bands = band_count(stage.threshold, stage.num_perm)
    sig = np.zeros((len(texts), stage.num_perm), np.uint64)
    if texts:
        sig[:] = signatures(*shingles(texts, stage.ngram), stage.num_perm).to_rows()
    key = band_keys(sig, bands)
    whole = band_keys(key, 1)[:, 0]
    return pa.table({"key": key.T.ravel(), "sig": np.tile(whole, bands),
                     "pos": np.tile(pos, bands),
                     "band": np.repeat(np.arange(bands, dtype=np.uint8), len(texts))})


def _needed(table: pa.Table, stage: Dedupe, *extra: str) -> list[dict]:
    """The rows with the columns the stage reads (and ``extra``); a row that lacks one of them
    stops the run with the stage's own error, which lists the columns the row has."""
    rows = rows_of(table, [*stage.needs, *extra])
    for i, row in enumerate(rows):
        if any(c not in row for c in stage.needs):
            stage.require(rows_of(table.slice(i, 1))[0])
    return rows


def _bucket_edges(table: pa.Table, method: str) -> pa.Table:
    """The edges of one partition: (row, first row of its bucket) for exact duplicates and
    equal signatures (kind 0); (representative, representative) candidate pairs (kind 1).
    Only the entries whose key occurs twice or more are sorted in full."""
    empty = pa.table({"a": pa.array([], pa.int64()), "b": pa.array([], pa.int64()),
                      "kind": pa.array([], pa.int8())})
    if not table.num_rows:
        return empty
    key = table.column("key").to_numpy()
    order = np.argsort(key)
    twin = key[order][1:] == key[order][:-1]
    shared = order[np.r_[twin, False] | np.r_[False, twin]]
    if not len(shared):
        return empty
    part = {c: table.column(c).to_numpy()[shared] for c in ("key", "sig", "pos", "band")}
    order = np.lexsort([part["pos"], part["sig"], part["key"]])
    key, sig, pos, band = (part[k][order] for k in ("key", "sig", "pos", "band"))
    new_bucket = np.r_[True, key[1:] != key[:-1]]
    new_sig = new_bucket | np.r_[True, sig[1:] != sig[:-1]]
    rep = pos[np.flatnonzero(new_sig)[np.cumsum(new_sig) - 1]]  # first row of its signature
    same = ~new_sig & (band == 0)  # equal signatures share every band: count them in band 0
    a, b, kind = [pos[same]], [rep[same]], [np.zeros(same.sum(), np.int8)]
    if method == "minhash":
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
    table = alive(block)
    pos = table.column("_pos").to_numpy()
    mine = np.flatnonzero(np.isin(pos, nodes))
    rows = _needed(table.take(mine), stage, "id")
    check = np.isin(pos[mine], candidates)
    shingle_bytes: list[bytes | None] = [None] * len(mine)
    if check.any():
        flat, offsets = shingles([stage.text(r) for r, c in zip(rows, check) if c], stage.ngram)
        for n, i in enumerate(np.flatnonzero(check)):
            shingle_bytes[i] = flat[offsets[n]:offsets[n + 1]].tobytes()
    keep = [pickle.dumps(r.get(stage.keep) if stage.keep else None) for r in rows]
    ids = [pickle.dumps(r.get("id")) for r in rows]
    return pa.table({"pos": pos[mine], "id": pa.array(ids, pa.binary()),
                     "keep": pa.array(keep, pa.binary()),
                     "shingles": pa.array(shingle_bytes, pa.binary())})


def _drops(stage: Dedupe, nodes: np.ndarray, clusters: Clusters,
           facts: dict) -> dict[int, tuple[str, dict]]:
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
    reason = stage.drop_reason
    return {p: (reason, {"duplicate_of": pickle.loads(facts["id"][where[keeper[root]]])})
            for root, ps in members.items() for p in ps if p != keeper[root]}


def _columns(tables: list[pa.Table]) -> dict[str, np.ndarray | list]:
    """The columns of tables of one schema (integers as numpy, the rest as lists)."""
    table = pa.concat_tables(tables)
    return {c: (table.column(c).to_numpy() if pa.types.is_integer(table.column(c).type)
                else table.column(c).to_pylist()) for c in table.column_names}
