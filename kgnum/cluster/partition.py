"""Graph partitions for the cluster engine: METIS (pymetis) or random, saved and reused.

    train triples -> undirected entity graph (multi-edges as weights, self-loops dropped)
      -> METIS: P parts balanced by entity count, few edges between them  (or random: equal shares)
      -> every training edge goes to the part that owns its head
      -> report: edge-cut fraction (edges whose two ends are owned by different parts),
                 part sizes, bytes a part pulls and pushes per epoch, seconds

Saved as ``owner.npy`` (entity -> part, int32), ``part_<i>.npy`` (that part's edges,
(n, 3) int32 as in the graph), ``entities.tsv`` / ``relations.tsv`` (the graph's
vocabularies) and ``partition.json`` (the report). Loading checks the vocabularies
against the graph by name: a partition is only reused on the graph it was made for.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np

from ..data import KGDataError
from ..files import atomic_directory, read_names, write_names

METHODS = ("metis", "random")


@dataclass
class Partition:
    parts: int
    method: str
    owner: np.ndarray  # (n_entities,) int32: the part owning each entity
    part_edges: list  # P arrays of training-edge positions (int64) into kg.train
    report: dict

    def edges_of(self, kg, part: int) -> np.ndarray:
        return kg.train[self.part_edges[part]]


def _undirected_csr(kg):
    """CSR adjacency of the undirected entity graph: (xadj, adjncy, eweights), int32/int64."""
    h, t = kg.train[:, 0].astype(np.int64), kg.train[:, 2].astype(np.int64)
    keep = h != t
    a = np.concatenate([h[keep], t[keep]])
    b = np.concatenate([t[keep], h[keep]])
    n = kg.n_entities
    key = a * n + b
    uniq, weight = np.unique(key, return_counts=True)  # multi-edges -> one edge with a weight
    src, dst = uniq // n, uniq % n
    xadj = np.zeros(n + 1, dtype=np.int64)
    np.add.at(xadj, src + 1, 1)
    np.cumsum(xadj, out=xadj)
    return xadj, dst.astype(np.int64), weight.astype(np.int64)


def _check_parts(kg, parts: int) -> int:
    if not isinstance(parts, (int, np.integer)) or isinstance(parts, bool) or parts < 1:
        raise KGDataError(f"--parts {parts}: must be a positive integer")
    if parts > kg.n_entities:
        raise KGDataError(f"--parts {parts}: more parts than the graph's {kg.n_entities} entities")
    return int(parts)


def partition(kg, parts: int, method: str = "metis", seed: int = 0, dim: int = 400) -> Partition:
    """Partition ``kg``'s entities into ``parts`` parts with METIS or at random.

    ``dim`` only sizes the traffic estimate in the report (float32 rows).
    """
    parts = _check_parts(kg, parts)
    if method not in METHODS:
        raise KGDataError(f"--method {method}: expected one of {', '.join(METHODS)}")
    started = time.perf_counter()
    n = kg.n_entities
    if parts == 1:
        owner = np.zeros(n, dtype=np.int32)
    elif method == "random":  # equal shares of a seeded permutation
        owner = np.empty(n, dtype=np.int32)
        owner[np.random.default_rng(seed).permutation(n)] = np.arange(n) * parts // n
    else:
        try:
            import pymetis
        except ImportError:
            raise KGDataError("--method metis needs pymetis: pip install 'kgnum[cluster]'") from None
        xadj, adjncy, weights = _undirected_csr(kg)
        options = pymetis.Options(seed=seed)
        if hasattr(pymetis, "CSRAdjacency"):  # pymetis >= 2025.2
            graph = dict(adjacency=pymetis.CSRAdjacency(adj_starts=xadj, adjacent=adjncy))
        else:
            graph = dict(xadj=xadj, adjncy=adjncy)
        _, membership = pymetis.part_graph(parts, **graph, eweights=weights, options=options)
        owner = np.asarray(membership, dtype=np.int32)
    head_part = owner[kg.train[:, 0]]
    part_edges = [np.flatnonzero(head_part == p) for p in range(parts)]
    seconds = time.perf_counter() - started
    return Partition(parts, method, owner, part_edges, _report(kg, owner, part_edges, parts, method, seconds, dim))


def _report(kg, owner, part_edges, parts, method, seconds, dim) -> dict:
    h, t = owner[kg.train[:, 0]], owner[kg.train[:, 2]]
    cut = float((h != t).mean()) if kg.train.shape[0] else 0.0
    sizes = np.bincount(owner, minlength=parts)
    # traffic of one epoch, per part: the remote tails of its edges (heads are its own) are pulled
    # as rows and pushed back as gradients; every remote row is counted once per edge that needs it
    remote_rows = int((h != t).sum())
    # negatives drawn from all entities (200 shared by each chunk of 200 positives): a share
    # (P - 1) / P of them live elsewhere, whatever the partition
    remote_negatives = int(round(kg.train.shape[0] * (parts - 1) / parts))
    row_bytes = 4 * dim
    return {"parts": parts, "method": method, "edge_cut_fraction": cut,
            "part_sizes": sizes.tolist(), "part_edges": [int(e.size) for e in part_edges],
            "largest_part_share": float(sizes.max() / max(1, sizes.sum())),
            "remote_rows_per_epoch": remote_rows, "remote_negative_rows_per_epoch": remote_negatives,
            "bytes_per_epoch": 2 * remote_rows * row_bytes,
            "bytes_per_epoch_with_negatives": 2 * (remote_rows + remote_negatives) * row_bytes, "bytes_dim": dim,
            "seconds": seconds, "n_entities": int(kg.n_entities), "n_edges": int(kg.train.shape[0])}


def save_partition(p: Partition, kg, path: str) -> str:
    """Write ``p`` to directory ``path`` atomically (a temporary sibling renamed into place)."""
    with atomic_directory(path, "partition.json") as tmp:
        np.save(os.path.join(tmp, "owner.npy"), p.owner)
        for i, e in enumerate(p.part_edges):
            np.save(os.path.join(tmp, f"part_{i}.npy"), kg.train[e])
        write_names(os.path.join(tmp, "entities.tsv"), kg.entity_names)
        write_names(os.path.join(tmp, "relations.tsv"), kg.relation_names)
        with open(os.path.join(tmp, "partition.json"), "w") as f:
            json.dump(p.report, f, indent=2)
    return path


def load_partition(path: str, kg) -> Partition:
    """A saved partition, checked against ``kg`` by entity and relation names."""
    meta_path = os.path.join(path, "partition.json")
    try:
        with open(meta_path) as f:
            report = json.load(f)
        owner = np.load(os.path.join(path, "owner.npy"))
        names = {}
        for kind in ("entities", "relations"):
            names[kind] = read_names(os.path.join(path, f"{kind}.tsv"))
        parts = int(report["parts"])
        edges = [np.load(os.path.join(path, f"part_{i}.npy")) for i in range(parts)]
    except FileNotFoundError as e:
        raise KGDataError(f"--partition {path}: not a saved partition ({os.path.basename(e.filename)} "
                          f"missing)") from None
    except (ValueError, KeyError, IndexError, OSError) as e:
        raise KGDataError(f"--partition {path}: unreadable ({e})") from None
    if names["entities"] != [str(x) for x in kg.entity_names] or \
            names["relations"] != [str(x) for x in kg.relation_names] or owner.shape != (kg.n_entities,):
        raise KGDataError(f"--partition {path}: made for another graph ({len(names['entities'])} entities, "
                          f"{len(names['relations'])} relations; this one has {kg.n_entities} and "
                          f"{kg.n_relations} or names them differently)")
    if owner.min(initial=0) < 0 or owner.max(initial=0) >= parts:
        raise KGDataError(f"--partition {path}: owner.npy names parts outside 0..{parts - 1}")
    head_part = owner[kg.train[:, 0]]
    part_edges = [np.flatnonzero(head_part == p) for p in range(parts)]
    if [e.shape[0] for e in edges] != [e.size for e in part_edges]:
        raise KGDataError(f"--partition {path}: its edge files do not match this graph's training triples")
    return Partition(parts, report["method"], owner.astype(np.int32), part_edges, report)
