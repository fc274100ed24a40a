"""Filtered link-prediction evaluation over all entities.

A model is seen only through a scoring callback::

    score_fn(anchor_ids, relation_ids, predict_head) -> scores

``anchor_ids`` and ``relation_ids`` are int32 (B,); ``scores`` must be a
float32 NumPy array (B, n_entities), higher = more plausible.  For tail
prediction (``predict_head=False``) the anchor is the head and row ``i`` holds
the score of ``(anchor_ids[i], relation_ids[i], e)`` for every entity ``e``;
for head prediction the anchor is the tail and the row holds ``(e, r, t)``.

Ranks are filtered ("filtered setting" of Bordes et al.) and realistic: the
mean of the optimistic and pessimistic rank, see
:mod:`kgnum.kernels.ranking` for the exact definition and NaN handling.

Queries that share an (anchor, relation) pair are scored once: the callback
receives each distinct pair of a side exactly once, in batches of at most
``batch_size`` rows, so the score memory is bounded by
``batch_size x n_entities`` float32 (by default at most 512 rows and
SCORE_BLOCK_BYTES: 13 rows of a 5M-entity graph, not 10 GB).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from kgnum.kernels.ranking import filtered_ranks

if TYPE_CHECKING:
    from kgnum.data import KnowledgeGraph
    # Embeddings (kgnum.embeddings) is named in annotations only: that module imports this one

__all__ = [
    "FilterIndex",
    "evaluate_ranks",
    "metrics_from_ranks",
    "link_prediction_metrics",
]

_SIDES = ("head", "tail")


def _check_count(value, name: str) -> int:
    """Validate a positive integer argument (entity / relation counts)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_triples(triples, name: str, n_entities: int, n_relations: int | None) -> np.ndarray:
    """Validate an (n, 3) integer (head, relation, tail) array; return it as int64.

    int64 so that the key arithmetic ``anchor * n_relations + relation`` can
    not overflow.
    """
    arr = np.asarray(triples)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3) (head, relation, tail), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.shape[0] == 0:
        return arr
    ents = arr[:, [0, 2]]
    if ents.min() < 0 or ents.max() >= n_entities:
        raise ValueError(
            f"{name} has entity ids outside [0, n_entities={n_entities}): "
            f"min {ents.min()}, max {ents.max()}"
        )
    if n_relations is not None:
        rels = arr[:, 1]
        if rels.min() < 0 or rels.max() >= n_relations:
            raise ValueError(
                f"{name} has relation ids outside [0, n_relations={n_relations}): "
                f"min {rels.min()}, max {rels.max()}"
            )
    return arr


def _build_csr(anchor: np.ndarray, rel: np.ndarray, answer: np.ndarray, n_relations: int):
    """Group ``answer`` by the key ``anchor * n_relations + rel``.

    Inputs are int64 (n,).  Returns ``keys`` int64 (K,) sorted unique,
    ``indptr`` int64 (K + 1,) and ``ids`` int32 (nnz,) where
    ``ids[indptr[k]:indptr[k + 1]]`` are the sorted, duplicate-free answers of
    ``keys[k]``.
    """
    key = anchor * n_relations + rel
    order = np.lexsort((answer, key))  # by key, then by answer
    key = key[order]
    answer = answer[order]
    if key.size:
        # drop duplicate triples: the ranking kernel subtracts each filtered id once
        keep = np.empty(key.size, dtype=bool)
        keep[0] = True
        np.logical_or(key[1:] != key[:-1], answer[1:] != answer[:-1], out=keep[1:])
        key = key[keep]
        answer = answer[keep]
    new = np.empty(key.size, dtype=bool)
    if key.size:
        new[0] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    keys = key[starts]
    indptr = np.empty(keys.size + 1, dtype=np.int64)
    indptr[:-1] = starts
    indptr[-1] = key.size
    return keys, indptr, answer.astype(np.int32)


class FilterIndex:
    """Known true answers of every (anchor, relation) pair, as two CSR maps.

    * tail map: ``(head, relation) -> sorted tails`` (used when predicting tails)
    * head map: ``(tail, relation) -> sorted heads`` (used when predicting heads)

    Each map is stored compressed by key ``anchor * n_relations + relation``:
    ``keys`` int64 (K,) sorted, ``indptr`` int64 (K + 1,), ``ids`` int32
    (nnz,), so memory is O(#known triples) whatever ``n_entities *
    n_relations`` is.  Build from train + valid + test triples.
    """

    def __init__(self, n_entities: int, n_relations: int, tail_csr, head_csr):
        self.n_entities = _check_count(n_entities, "n_entities")
        self.n_relations = _check_count(n_relations, "n_relations")
        self._csr = {False: tuple(tail_csr), True: tuple(head_csr)}  # keyed by predict_head

    @classmethod
    def from_triples(cls, triples: np.ndarray, n_entities: int, n_relations: int) -> "FilterIndex":
        """Build both maps from known triples, int (n, 3) (head, relation, tail).

        Vectorized (lexsort); duplicate triples are allowed and collapsed.
        """
        n_entities = _check_count(n_entities, "n_entities")
        n_relations = _check_count(n_relations, "n_relations")
        arr = _check_triples(triples, "triples", n_entities, n_relations)
        h, r, t = arr[:, 0], arr[:, 1], arr[:, 2]
        return cls(
            n_entities,
            n_relations,
            tail_csr=_build_csr(h, r, t, n_relations),
            head_csr=_build_csr(t, r, h, n_relations),
        )

    @property
    def n_known(self) -> int:
        """Number of distinct known triples."""
        return int(self._csr[False][2].size)

    def csr(self, predict_head: bool):
        """``(keys int64 (K,), indptr int64 (K+1,), ids int32 (nnz,))`` of one side."""
        return self._csr[bool(predict_head)]

    def keys_of(self, anchor_ids, relation_ids) -> np.ndarray:
        """int64 keys ``anchor * n_relations + relation`` for arrays of ids."""
        return np.asarray(anchor_ids, dtype=np.int64) * self.n_relations + np.asarray(relation_ids, dtype=np.int64)

    def slices_for_keys(self, keys: np.ndarray, predict_head: bool):
        """CSR slices for int64 keys (from :meth:`keys_of`).

        Returns ``(starts, ends)``, int64 arrays shaped like ``keys``; the
        answers of key ``i`` are ``csr(predict_head)[2][starts[i]:ends[i]]``
        (empty slice for an unknown pair).
        """
        fkeys, indptr, _ = self._csr[bool(predict_head)]
        keys = np.asarray(keys, dtype=np.int64)
        if fkeys.size == 0:
            zeros = np.zeros(keys.shape, dtype=np.int64)
            return zeros, zeros.copy()
        pos = np.minimum(np.searchsorted(fkeys, keys), fkeys.size - 1)
        found = fkeys[pos] == keys
        starts = np.where(found, indptr[pos], 0)
        ends = np.where(found, indptr[pos + 1], 0)
        return starts, ends

    def slices(self, anchor_ids, relation_ids, predict_head: bool):
        """``(starts, ends)`` int64 (B,) CSR slices for (anchor, relation) arrays."""
        return self.slices_for_keys(self.keys_of(anchor_ids, relation_ids), predict_head)

    def answers(self, anchor: int, relation: int, predict_head: bool) -> np.ndarray:
        """Sorted int32 known answers of one query (heads if ``predict_head``)."""
        s, e = self.slices([anchor], [relation], predict_head)
        return self._csr[bool(predict_head)][2][s[0]:e[0]].copy()


def _check_sides(sides) -> tuple:
    if isinstance(sides, str):
        sides = (sides,)
    try:
        sides = tuple(sides)
    except TypeError:
        raise ValueError(f"sides must be a sequence of 'head'/'tail', got {sides!r}") from None
    if not sides or any(s not in _SIDES for s in sides) or len(set(sides)) != len(sides):
        raise ValueError(f"sides must be a non-empty sequence of distinct 'head'/'tail', got {sides!r}")
    return sides


def _check_scores(scores, n_rows: int, n_entities: int) -> np.ndarray:
    """Validate one score_fn result; returns it C-contiguous (copy only if needed)."""
    if not isinstance(scores, np.ndarray):
        raise ValueError(f"score_fn must return a numpy.ndarray, got {type(scores).__name__}")
    if scores.dtype != np.float32:
        raise ValueError(f"score_fn must return float32 scores, got dtype {scores.dtype}")
    if scores.shape != (n_rows, n_entities):
        raise ValueError(
            f"score_fn must return shape (batch, n_entities) = ({n_rows}, {n_entities}), got {scores.shape}"
        )
    return np.ascontiguousarray(scores)


SCORE_BLOCK_BYTES = 256 * 1024 ** 2  # default bound on one block of scores
MAX_BLOCK_ROWS = 512


def block_rows(n_entities: int) -> int:
    """Default query rows per score block: 512, fewer when that would exceed SCORE_BLOCK_BYTES."""
    return max(1, min(MAX_BLOCK_ROWS, SCORE_BLOCK_BYTES // (4 * max(1, int(n_entities)))))


def evaluate_ranks(
    score_fn: Callable[[np.ndarray, np.ndarray, bool], np.ndarray],
    triples: np.ndarray,
    filter_index: FilterIndex,
    n_entities: int,
    *,
    batch_size: int = 512,
    sides: Iterable[str] = ("head", "tail"),
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Filtered realistic ranks of every triple, for each requested side.

    Parameters
    ----------
    score_fn : callable(anchor_ids int32 (B,), relation_ids int32 (B,),
        predict_head bool) -> float32 (B, n_entities); see the module doc.
    triples : int (n, 3) (head, relation, tail), the queries.
    filter_index : :class:`FilterIndex` of all known triples (train + valid +
        test); its ``n_entities`` must equal ``n_entities``.
    n_entities : number of entities = columns of each score row.
    batch_size : max rows per score_fn call; memory is bounded by
        ``batch_size x n_entities`` float32.  Each call gets distinct
        (anchor, relation) pairs, so queries sharing a pair are scored once.
    sides : subset of ("head", "tail"); "head" ranks the true head of
        (?, r, t), "tail" the true tail of (h, r, ?).
    progress : optional callable(n_done), called after every batch with the
        cumulative number of ranked queries (over all sides).

    Returns
    -------
    dict side -> float64 (n,) ranks in the order of ``triples``; rank =
    1 + #better + #tied / 2 over candidates with the other known answers
    removed (mean of optimistic and pessimistic rank); ``n_entities`` if the
    true score is NaN.
    """
    n_entities = _check_count(n_entities, "n_entities")
    if not isinstance(filter_index, FilterIndex):
        raise ValueError(f"filter_index must be a FilterIndex, got {type(filter_index).__name__}")
    if filter_index.n_entities != n_entities:
        raise ValueError(
            f"filter_index was built for n_entities={filter_index.n_entities}, but n_entities={n_entities}"
        )
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not callable(score_fn):
        raise ValueError("score_fn must be callable")
    if progress is not None and not callable(progress):
        raise ValueError("progress must be callable or None")
    sides = _check_sides(sides)
    arr = _check_triples(triples, "triples", n_entities, filter_index.n_relations)
    n = arr.shape[0]

    out = {}
    n_done = 0
    for side in sides:
        predict_head = side == "head"
        anchor = arr[:, 2] if predict_head else arr[:, 0]
        truth = arr[:, 0] if predict_head else arr[:, 2]
        rel = arr[:, 1]
        ranks = np.empty(n, dtype=np.float64)

        # one score row per distinct (anchor, relation), relation-major (a model that projects the
        # entity table per relation, TransR, projects it once per relation of a batch)
        keys = filter_index.keys_of(anchor, rel)
        uniq, inverse = np.unique(keys, return_inverse=True)
        by_relation = np.lexsort((uniq // filter_index.n_relations, uniq % filter_index.n_relations))
        uniq = uniq[by_relation]
        position = np.empty_like(by_relation)
        position[by_relation] = np.arange(by_relation.size)
        inverse = position[inverse.reshape(-1)]
        order = np.argsort(inverse, kind="stable")
        row_of_query = inverse[order]  # non-decreasing
        truth_sorted = truth[order].astype(np.int32)
        q_starts, q_ends = filter_index.slices_for_keys(keys[order], predict_head)
        filter_ids = filter_index.csr(predict_head)[2]
        u_anchor = (uniq // filter_index.n_relations).astype(np.int32)
        u_rel = (uniq % filter_index.n_relations).astype(np.int32)
        # query range of each block of batch_size unique rows
        bounds = np.searchsorted(row_of_query, np.arange(0, uniq.size + batch_size, batch_size))

        for b, u0 in enumerate(range(0, uniq.size, batch_size)):
            u1 = min(u0 + batch_size, uniq.size)
            scores = score_fn(u_anchor[u0:u1], u_rel[u0:u1], predict_head)
            scores = _check_scores(scores, u1 - u0, n_entities)
            q0, q1 = int(bounds[b]), int(bounds[b + 1])
            ranks[order[q0:q1]] = filtered_ranks(
                scores,
                row_of_query[q0:q1] - u0,
                truth_sorted[q0:q1],
                q_starts[q0:q1],
                q_ends[q0:q1],
                filter_ids,
            )
            n_done += q1 - q0
            if progress is not None:
                progress(n_done)
        out[side] = ranks
    return out


def metrics_from_ranks(ranks: np.ndarray) -> dict:
    """Standard metrics of a 1-D array of ranks (float, >= 1).

    Returns ``{"mrr", "mr", "hits@1", "hits@3", "hits@10"}`` as Python floats:
    mean reciprocal rank, mean rank, and the fraction of ranks <= k.  Hits use
    the realistic (tie-averaged) rank as is, so a true answer tied with one
    other candidate at the top (rank 1.5) is not a hit@1.
    """
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {r.shape}")
    if not np.all(np.isfinite(r)) or r.min() < 1:
        raise ValueError("ranks must be finite and >= 1")
    r = np.sort(r)  # the same ranks in another order (a shuffled test file) give the same floats
    return {
        "mrr": float(np.mean(1.0 / r)),
        "mr": float(np.mean(r)),
        "hits@1": float(np.mean(r <= 1)),
        "hits@3": float(np.mean(r <= 3)),
        "hits@10": float(np.mean(r <= 10)),
    }


def link_prediction_metrics(
    score_fn: Callable[[np.ndarray, np.ndarray, bool], np.ndarray],
    triples: np.ndarray,
    known_triples: np.ndarray,
    n_entities: int,
    n_relations: int,
    *,
    batch_size: int | None = None,
    sides: Iterable[str] = ("head", "tail"),
    per_relation: bool = False,
    index: "FilterIndex | None" = None,
) -> dict:
    """Filtered link-prediction metrics of ``triples`` (the usual headline numbers).

    ``known_triples`` int (m, 3) are all true triples used for filtering
    (train + valid + test).  Returns the metrics of
    :func:`metrics_from_ranks` over the ranks of all requested sides pooled
    (for both sides: the mean over 2n queries), plus one metrics dict per
    requested side under ``"head"`` / ``"tail"``, and ``"n_queries"`` (int,
    number of pooled ranks). ``per_relation``: also ``"per_relation"``, one
    entry per relation present (``relation`` id, ``triples``, ``mrr``,
    ``hits@10`` over both sides, and per side), most frequent relation first.
    """
    n_entities = _check_count(n_entities, "n_entities")
    n_relations = _check_count(n_relations, "n_relations")
    if _check_triples(triples, "triples", n_entities, n_relations).shape[0] == 0:
        raise ValueError("triples is empty: nothing to evaluate")
    if index is None:  # ``index``: the filter built once from known_triples (repeated validations)
        known = _check_triples(known_triples, "known_triples", n_entities, n_relations)
        index = FilterIndex.from_triples(known, n_entities, n_relations)
    batch_size = block_rows(n_entities) if batch_size is None else batch_size
    ranks = evaluate_ranks(score_fn, triples, index, n_entities, batch_size=batch_size, sides=sides)
    pooled = np.concatenate([ranks[s] for s in ranks])
    result = metrics_from_ranks(pooled)
    for side, r in ranks.items():
        result[side] = metrics_from_ranks(r)
    result["n_queries"] = int(pooled.size)
    if per_relation:
        rel = np.asarray(triples)[:, 1]
        rows = []
        for r_id, count in zip(*np.unique(rel, return_counts=True)):
            mask = rel == r_id
            row = {"relation": int(r_id), "triples": int(count)}
            both = np.concatenate([ranks[s][mask] for s in ranks])
            row.update({k: v for k, v in metrics_from_ranks(both).items() if k in ("mrr", "hits@10")})
            for side in ranks:
                m = metrics_from_ranks(ranks[side][mask])
                row[side] = {"mrr": m["mrr"], "hits@10": m["hits@10"]}
            rows.append(row)
        rows.sort(key=lambda r: (-r["triples"], r["relation"]))
        result["per_relation"] = rows
    return result


def evaluate(emb: "Embeddings", kg: "KnowledgeGraph", split: str = "test", *, batch_size: int | None = None,
             exclude_relations=None, per_relation: bool = False) -> dict:
    """Filtered MRR, MR, Hits@1/3/10 over all entities, head and tail side.

    The filter removes every other true answer from train + valid + test.
    Ties count as the mean of the optimistic and pessimistic rank. Returns
    the pooled metrics plus per-side ones under "head"/"tail", "n_queries"
    and "eval_seconds".

    ``kg`` is matched to the model's rows by entity / relation name (see
    :meth:`KnowledgeGraph.aligned_to`), so its id order (train.txt line order,
    .dict numbering) does not matter; it may use a subset of the model's
    names, and a name the model lacks is a KGDataError.

    ``exclude_relations``: relation names whose triples are left out of the
    evaluated split (e.g. the sensitive relations of a debiased model, so a
    basic and a debiased run are scored on the same triples); they still
    filter the candidates.
    """
    if len(emb.entity_names) != emb.n_entities or len(emb.relation_names) != emb.relation.shape[0]:
        raise ValueError(f"the model has {emb.n_entities} entity / {emb.relation.shape[0]} relation rows "
                         f"but {len(emb.entity_names)} / {len(emb.relation_names)} names")
    # Positional matching silently scores the wrong rows when the dataset numbers names differently.
    kg = kg.aligned_to(emb.entity_names, emb.relation_names)
    triples = without_relations(kg, kg.split(split), exclude_relations)
    if triples.shape[0] == 0:
        left_out = f" once those of {', '.join(exclude_relations)} are left out" if len(kg.split(split)) else ""
        raise ValueError(f"no {split} triples to evaluate{left_out}")
    start = time.perf_counter()
    metrics = link_prediction_metrics(emb.score_candidates, triples, kg.all_triples(),
                                      kg.n_entities, kg.n_relations, batch_size=batch_size,
                                      per_relation=per_relation)
    for row in metrics.get("per_relation", []):
        row["name"] = str(kg.relation_names[row["relation"]])
    if per_relation:  # equal counts by name, not by row: the same order whatever numbered the rows
        metrics["per_relation"].sort(key=lambda r: (-r["triples"], r["name"]))
    metrics["eval_seconds"] = time.perf_counter() - start
    return metrics


def without_relations(kg: "KnowledgeGraph", triples: np.ndarray, relations) -> np.ndarray:
    """``triples`` less those of the named relations (each must exist in ``kg``)."""
    if not relations:
        return triples
    ids = [kg.relation_id(r) for r in relations]
    return triples[~np.isin(triples[:, 1], ids)]
