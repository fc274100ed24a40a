"""Trained embeddings: scoring, prediction, neighbours, atomic save and load."""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_info

from .files import atomic_directory, read_names, write_names
from .kernels.metrics import METRIC_KERNELS, TILED
from .kernels.ranking import topk_rows
from .kernels.registry import get_model

log = logging.getLogger("kgnum")

FORMAT_VERSION = 1
_TABLES = ("entity", "relation", "entity_state", "relation_state")
_NAMED_ARRAYS = ("views", "engine_state")  # dicts of arrays, each saved as <key>.npz


def _scoring_threads(n_rows: int) -> int:
    """Threads for a tiled metric's scoring: as many as BLAS may use now (so
    ``threadpool_limits`` governs both kinds of model), at most one per 16 rows."""
    if n_rows < 32:  # one thread anyway: skip the (about 1 ms) look-up of the BLAS limit
        return 1
    limits = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(min(limits, default=cores), cores, n_rows // 16))


SIMILARITY_METRICS = ("cosine", "dot", "l2", "l1")
_MAX_BATCH = 10**8  # queries or triples of one predict_batch: beyond, the output alone is gigabytes
_SCORE_BLOCK = 1 << 16  # triples scored at a time by _score_ids (rows of every side gathered)


def _exclude_splits(exclude) -> tuple:
    if exclude not in (None, "none", "train", "all"):
        raise ValueError(f"exclude {exclude!r}: expected None, 'train' or 'all'")
    return {"train": ("train",), "all": ("train", "valid", "test")}.get(exclude or "none", ())


def _pair(lists, exec_mode: str) -> list:
    """Id arrays paired as their cross product ("all", the last varying fastest) or element by
    element ("triplet_wise": equal lengths, or length 1 used with every element)."""
    if exec_mode == "all":
        return [g.ravel() for g in np.meshgrid(*lists, indexing="ij")]
    sizes = {x.size for x in lists} - {1}
    if len(sizes) > 1:
        raise ValueError(f"triplet_wise pairs the lists element by element: their lengths "
                         f"{', '.join(str(x.size) for x in lists)} differ")
    return [np.ascontiguousarray(x) for x in np.broadcast_arrays(*lists)]


def _metric_rows(kernel, query, table, out, tiled: bool) -> None:
    """out[i, j] = kernel's score of query row i against table row j (gamma 0: -distance for l1 /
    l2), the query rows split over threads for a tiled (non-BLAS) kernel."""
    gamma = np.float32(0.0)
    threads = _scoring_threads(query.shape[0]) if tiled else 1
    if threads == 1:
        kernel(query, table, gamma, out)
        return
    bounds = np.linspace(0, query.shape[0], threads + 1).astype(int)
    with ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(kernel, query[a:b], table, gamma, out[a:b])
                     for a, b in zip(bounds[:-1], bounds[1:])]:
            done.result()


class Embeddings:
    """Entity and relation tables of a trained model.

    entity (n_entities, dim) float32, relation (n_relations, relation_dim)
    float32; entity_state / relation_state (n_rows,) float32 are the Adagrad
    accumulators kept for resuming. ``config`` is the TrainConfig as a dict. ``views``: named
    other entity tables of the same shape that the training engine produced with these (the
    adversarial baseline's "[s] REL" views, ``kgnum.bias.adversarial``), saved with the model;
    ``view(name)`` is the model with one of them as its entity table. ``engine_state``: named
    arrays an engine needs to continue this run beyond the tables and their Adagrad state (the
    adversarial baseline's raw table, filters and optimizers), saved with the model and handed
    back to the engine when the run resumes.
    """

    def __init__(self, model: str, entity: np.ndarray, relation: np.ndarray, config: dict,
                 entity_names=None, relation_names=None, entity_state=None, relation_state=None,
                 train_stats: dict | None = None):
        self.score_function = get_model(model)
        self.model = self.score_function.name
        self.entity = np.ascontiguousarray(entity, dtype=np.float32)
        self.relation = np.ascontiguousarray(relation, dtype=np.float32)
        self.config = dict(config)
        n_e, n_r = self.entity.shape[0], self.relation.shape[0]
        self.entity_names = np.asarray(entity_names if entity_names is not None else [f"e{i}" for i in range(n_e)], dtype=object)
        self.relation_names = np.asarray(relation_names if relation_names is not None else [f"r{i}" for i in range(n_r)], dtype=object)
        self.entity_state = entity_state if entity_state is not None else np.zeros(n_e, np.float32)
        self.relation_state = relation_state if relation_state is not None else np.zeros(n_r, np.float32)
        self.train_stats = dict(train_stats or {})
        self.known_triples = None  # {"train", "valid", "test"}: (n, 3) int32 in this model's ids, if saved
        self.views: dict[str, np.ndarray] = {}
        self.engine_state: dict[str, np.ndarray] = {}
        self._filters = {}
        self._entity_index = None
        self._relation_index = None

    def with_tables(self, tables, train_stats: dict | None = None) -> "Embeddings":
        """The same model (config, vocabularies, known triples) holding ``tables`` (a
        ``kernels.step.Tables``; Adagrad state None: zeros), not copied."""
        emb = Embeddings(self.model, tables.entity, tables.relation, self.config, self.entity_names,
                         self.relation_names, tables.entity_state, tables.relation_state, train_stats)
        emb.known_triples = self.known_triples
        return emb

    def view(self, name: str) -> "Embeddings":
        """The same model with the entity table of view ``name`` (one of ``views``), not copied.
        ``"[a]"`` (every filter applied) is a model with views itself: it is returned as it is."""
        if name == "[a]" and self.views:
            return self
        if name not in self.views:
            known = ", ".join(self.views) or "none"
            raise ValueError(f"view {name!r}: this model has no such view (its views: {known})")
        emb = Embeddings(self.model, self.views[name], self.relation, self.config, self.entity_names,
                         self.relation_names, self.entity_state, self.relation_state, self.train_stats)
        emb.known_triples = self.known_triples
        return emb

    # -- basic facts ---------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.entity.shape[1]

    @property
    def gamma(self) -> float:
        return float(self.config.get("gamma", 12.0))

    @property
    def n_entities(self) -> int:
        return self.entity.shape[0]

    def __repr__(self):
        return (f"Embeddings({self.model}, dim={self.dim}, entities={self.n_entities}, "
                f"relations={self.relation.shape[0]})")

    # -- ids -----------------------------------------------------------------
    def entity_id(self, entity) -> int:
        return self._lookup(entity, "entity")

    def relation_id(self, relation) -> int:
        return self._lookup(relation, "relation")

    def _lookup(self, key, kind: str) -> int:
        names = self.entity_names if kind == "entity" else self.relation_names
        if isinstance(key, (int, np.integer)):
            if not 0 <= key < len(names):
                raise ValueError(f"{kind} id {key} out of range [0, {len(names)})")
            return int(key)
        attr = f"_{kind}_index"
        if getattr(self, attr) is None:
            setattr(self, attr, {str(n): i for i, n in enumerate(names)})
        try:
            return getattr(self, attr)[str(key)]
        except KeyError:
            raise ValueError(f"unknown {kind} {key!r}") from None

    # -- scoring -------------------------------------------------------------
    def ids(self, keys, kind: str = "entity") -> np.ndarray:
        """Row ids (int64 array) of names or ids, one or many."""
        if isinstance(keys, (str, int, np.integer)):
            keys = [keys]
        if isinstance(keys, np.ndarray) and keys.ndim == 1 and keys.dtype.kind in "iu":
            n = len(self.entity_names if kind == "entity" else self.relation_names)
            out = keys.astype(np.int64)
            bad = (out < 0) | (out >= n)
            if bad.any():  # the same message as one id's
                raise ValueError(f"{kind} id {int(out[bad][0])} out of range [0, {n})")
            return out
        return np.array([self._lookup(k if not isinstance(k, np.str_) else str(k), kind) for k in keys],
                        dtype=np.int64)

    def score(self, heads, relations, tails) -> np.ndarray:
        """Scores (n,) float32 of triples given as names or ids, one or arrays (higher = more plausible)."""
        h = self.entity[self.ids(heads)]
        r = self.relation[self.ids(relations, "relation")]
        t = self.entity[self.ids(tails)]
        return self.score_function.score(h.astype(np.float64), r.astype(np.float64),
                                         t.astype(np.float64), self.gamma).astype(np.float32)

    def score_candidates(self, anchor_ids, relation_ids, predict_head: bool) -> np.ndarray:
        """Scores (B, n_entities) float32 of every entity as the missing side.

        anchor_ids (B,) int: heads when predicting tails, tails when predicting heads.
        """
        sf = self.score_function
        anchors = self.entity[np.asarray(anchor_ids)]
        rels = self.relation[np.asarray(relation_ids)]
        if sf.metric == "pair":
            return self._score_candidates_pairwise(anchors, rels, np.asarray(relation_ids), predict_head)
        query = sf.query(anchors, rels, anchors, bool(predict_head))
        out = np.empty((query.shape[0], self.n_entities), dtype=np.float32)
        scores = METRIC_KERNELS[sf.metric][0]
        gamma = np.float32(self.gamma)
        threads = _scoring_threads(query.shape[0]) if sf.metric in TILED else 1
        if threads == 1:
            scores(query, self.entity, gamma, out)
            return out
        bounds = np.linspace(0, query.shape[0], threads + 1).astype(int)
        with ThreadPoolExecutor(threads) as pool:
            for done in [pool.submit(scores, query[a:b], self.entity, gamma, out[a:b])
                         for a, b in zip(bounds[:-1], bounds[1:])]:
                done.result()
        return out

    def _score_candidates_pairwise(self, anchors, rels, relation_ids, predict_head):
        sf = self.score_function
        out = np.empty((anchors.shape[0], self.n_entities), dtype=np.float32)
        if sf.pair_project is not None:  # the entity table projected once per relation of the batch
            l2_scores = METRIC_KERNELS["l2"][0]
            gamma = np.float32(self.gamma)
            projected = np.empty_like(self.entity)
            for rel in np.unique(relation_ids):
                rows = np.flatnonzero(relation_ids == rel)
                r = rels[rows[0]]
                sf.pair_project(self.entity, r, projected)
                queries = np.stack([sf.pair_query(anchors[i], r, bool(predict_head)) for i in rows])
                scores = np.empty((rows.size, self.n_entities), dtype=np.float32)
                l2_scores(queries.astype(np.float32), projected, gamma, scores)
                out[rows] = scores
            return out
        ent = self.entity[None, :, :]
        for i in range(anchors.shape[0]):
            a, r = anchors[i][None, None, :], rels[i][None, None, :]
            out[i] = sf.score(ent, r, a, self.gamma)[0] if predict_head else sf.score(a, r, ent, self.gamma)[0]
        return out

    def predict_tail(self, heads, relations, k: int = 10, exclude: str | None = None):
        """Top-k tails of (head, relation) as [(entity name, score)], best first; for arrays of
        heads and relations, one such list per query. ``exclude``: leave out tails already known
        ("train": in the training triples, "all": in train, valid or test; the triples saved with
        the model), as evaluation's filter does."""
        return self._predict(heads, relations, k, exclude, predict_head=False)

    def predict_head(self, relations, tails, k: int = 10, exclude: str | None = None):
        """Top-k heads of (relation, tail), as ``predict_tail``."""
        return self._predict(tails, relations, k, exclude, predict_head=True)

    def known_answers(self, anchors, relations, predict_head: bool, splits) -> list[np.ndarray]:
        """The known answers (entity ids) of each query, from the triples saved with the model."""
        if self.known_triples is None:
            raise ValueError("this model was saved without its graph's triples: give exclude=None "
                             "(kgnum predict --exclude-mode none)")
        from .eval import FilterIndex

        key = tuple(splits)
        if key not in self._filters:  # built once per model and set of splits
            known = np.concatenate([self.known_triples[s] for s in splits])
            self._filters[key] = FilterIndex.from_triples(known.astype(np.int64), self.n_entities,
                                                          self.relation.shape[0])
        index = self._filters[key]
        return [index.answers(int(a), int(r), predict_head) for a, r in zip(anchors, relations)]

    def _predict(self, anchors, relations, k, exclude, predict_head):
        single = isinstance(anchors, (str, int, np.integer)) and isinstance(relations, (str, int, np.integer))
        top, picked = self.top_candidates(anchors, relations, k, exclude, predict_head)
        names = self.entity_names
        out = [[(str(names[i]), v) for i, v in zip(ids, vals) if i >= 0]
               for ids, vals in zip(top.tolist(), picked.tolist())]
        return out[0] if single else out

    def top_candidates(self, anchors, relations, k: int = 10, exclude: str | None = None,
                       predict_head: bool = False):
        """The batched core of ``predict_tail`` / ``predict_head``: for each (anchor, relation) query
        (names or ids, one or arrays, broadcast), the ids (B, k) int64 and scores (B, k) float32 of
        the k best entities as the missing side, best first; slots left when fewer than k remain
        after ``exclude`` hold id -1 and score -inf."""
        a, r = self.ids(anchors), self.ids(relations, "relation")
        if a.size != r.size:
            a, r = np.broadcast_arrays(a, r)
        splits = _exclude_splits(exclude)
        if not 1 <= k:
            raise ValueError(f"k {k}: must be >= 1")
        k = min(k, self.n_entities)
        top = np.empty((a.size, k), dtype=np.int64)
        picked = np.empty((a.size, k), dtype=np.float32)
        for b0 in range(0, a.size, 512):  # bounded memory: 512 x n_entities scores at a time
            rows = self.score_candidates(a[b0:b0 + 512], r[b0:b0 + 512], predict_head)
            if splits:
                for i, known in enumerate(self.known_answers(a[b0:b0 + 512], r[b0:b0 + 512], predict_head,
                                                             splits)):
                    rows[i, known] = -np.inf
            # one Numba pass per row (argpartition was 4x the scoring)
            top[b0:b0 + 512], picked[b0:b0 + 512] = topk_rows(rows, k)
        return top, picked

    # -- batch inference (dglke_predict) -------------------------------------
    def predict_batch(self, heads=None, relations=None, tails=None, k: int | None = None,
                      exclude: str | None = None, exec_mode: str = "all") -> dict:
        """Batch prediction as ``dglke_predict``: the side left None is the ``*`` of its ``--format``.

        heads, relations, tails: names or ids, one or arrays; two or three of them given.
        exec_mode "all" pairs them as their cross product (in the order head, relation, tail, the
        last varying fastest), "triplet_wise" element by element (equal lengths, or length 1).

        * tails None (h_r_*), heads None (*_r_t), relations None (h_*_t): each pair is one query,
          answered by its k best entities (relations for h_*_t), best first (k default 10);
          ``exclude`` ("train", "all") leaves out the answers already known, as ``predict_tail``.
        * all three (h_r_t): every triple scored, in pairing order; with k, only the k best of them
          all, best first (DGL-KE's ranking); ``exclude`` drops nothing (the triples were asked for).

        Returns arrays of one row per result: "head", "relation", "tail" (int64 ids), "score"
        (float32, higher = more plausible) and "known" (bool: the triple is among those saved with
        the model, train, valid or test; None when the model was saved without them).
        """
        given = [x is not None for x in (heads, relations, tails)]
        if sum(given) < 2:
            raise ValueError("give at least two of heads, relations, tails (one of them may be '*')")
        if exec_mode not in ("all", "triplet_wise"):
            raise ValueError(f"exec_mode {exec_mode!r}: expected 'all' or 'triplet_wise'")
        splits = _exclude_splits(exclude)
        if k is not None and not 1 <= k:
            raise ValueError(f"k {k}: must be >= 1")
        lists = [self.ids(x, kind) for x, kind in zip((heads, relations, tails), ("entity", "relation", "entity"))
                 if x is not None]
        n = int(np.prod([x.size for x in lists])) if exec_mode == "all" else max(x.size for x in lists)
        per = 1 if all(given) else (self.relation.shape[0] if not given[1] else min(k or 10, self.n_entities))
        if n * per > _MAX_BATCH:  # checked before anything of that size is allocated
            raise ValueError(f"{n:,} {'triples' if all(given) else 'queries'} x {per:,}: more than "
                             f"{_MAX_BATCH:,} rows to score or return; use triplet_wise or shorter lists")
        lists = _pair(lists, exec_mode)
        if all(given):
            h, r, t = lists
            score = self._score_ids(h, r, t)
            if k is not None and k < score.size:
                best = np.argsort(-score, kind="stable")[:k]
                h, r, t, score = h[best], r[best], t[best], score[best]
        elif not given[1]:  # h_*_t: every relation between each (head, tail)
            h, t = lists
            n_rel = self.relation.shape[0]
            kk = min(k or 10, n_rel)
            rows = np.empty((h.size, n_rel), dtype=np.float32)
            rel = np.arange(n_rel, dtype=np.int64)
            step = max(1, _SCORE_BLOCK // n_rel)
            for b0 in range(0, h.size, step):
                hh, tt = h[b0:b0 + step], t[b0:b0 + step]
                rows[b0:b0 + step] = self._score_ids(np.repeat(hh, n_rel), np.tile(rel, hh.size),
                                                     np.repeat(tt, n_rel)).reshape(hh.size, n_rel)
            if splits:
                known = self._known_mask(np.repeat(h, n_rel), np.tile(rel, h.size), np.repeat(t, n_rel), splits)
                rows[known.reshape(h.size, n_rel)] = -np.inf
            top, picked = topk_rows(rows, kk)
            keep = top >= 0
            h, t = np.repeat(h, kk)[keep.ravel()], np.repeat(t, kk)[keep.ravel()]
            r, score = top[keep], picked[keep]
        else:  # h_r_* or *_r_t: the evaluation's scoring path
            predict_head = not given[0]
            anchors, r = (lists[1], lists[0]) if predict_head else lists
            kk = min(k or 10, self.n_entities)
            top, picked = self.top_candidates(anchors, r, kk, exclude, predict_head)
            keep = (top >= 0).ravel()
            anchors, r = np.repeat(anchors, kk)[keep], np.repeat(r, kk)[keep]
            answers, score = top.ravel()[keep], picked.ravel()[keep]
            h, t = (answers, anchors) if predict_head else (anchors, answers)
        known = self._known_mask(h, r, t, _exclude_splits("all")) if self.known_triples is not None else None
        return {"head": h, "relation": r, "tail": t, "score": score.astype(np.float32), "known": known}

    def _score_ids(self, h, r, t) -> np.ndarray:
        """Scores (n,) float32 of triples given as id arrays, in blocks of bounded memory: the
        kernels' query form (float32, as evaluation scores), or the NumPy reference for a model
        without one."""
        out = np.empty(h.size, dtype=np.float32)
        sf = self.score_function
        gamma = np.float32(self.gamma)
        for b0 in range(0, h.size, _SCORE_BLOCK):
            s = slice(b0, b0 + _SCORE_BLOCK)
            heads, rels, tails = self.entity[h[s]], self.relation[r[s]], self.entity[t[s]]
            if sf.metric == "pair":
                out[s] = sf.score(heads.astype(np.float64), rels.astype(np.float64), tails.astype(np.float64),
                                  self.gamma)
            else:  # q(h, r) against t, row by row
                METRIC_KERNELS[sf.metric][2](sf.query(heads, rels, heads, False), tails, gamma, out[s])
        return out

    def _known_mask(self, h, r, t, splits) -> np.ndarray:
        """Whether each triple (h[i], r[i], t[i]) is among the saved triples of ``splits``."""
        if self.known_triples is None:
            raise ValueError("this model was saved without its graph's triples: give exclude=None "
                             "(kgnum predict --exclude-mode none)")
        key = ("codes",) + tuple(splits)
        if key not in self._filters:
            known = np.concatenate([self.known_triples[s] for s in splits]).astype(np.int64)
            self._filters[key] = np.unique(self._triple_codes(known[:, 0], known[:, 1], known[:, 2]))
        codes = self._filters[key]
        query = self._triple_codes(np.asarray(h, np.int64), np.asarray(r, np.int64), np.asarray(t, np.int64))
        if codes.size == 0:
            return np.zeros(query.shape[0], dtype=bool)
        at = np.minimum(np.searchsorted(codes, query), codes.size - 1)
        return codes[at] == query

    def _triple_codes(self, h, r, t) -> np.ndarray:
        """One sortable key per triple: an int64 when the graph allows it, else 24 raw bytes."""
        n_e, n_r = self.n_entities, self.relation.shape[0]
        if n_e * n_e * n_r < 2**62:
            return (h * n_r + r) * n_e + t
        rows = np.ascontiguousarray(np.stack([h, r, t], axis=1).astype(">i8"))  # big-endian: bytes sort as ints
        return rows.view(np.dtype((np.void, 24))).ravel()

    # -- neighbours ------------------------------------------------------------
    def similar(self, keys, k: int = 10, metric: str = "cosine", kind: str = "entity"):
        """The k rows of the table of ``kind`` ("entity" or "relation") nearest to each of ``keys``
        (names or ids, one or an array; each query itself excluded), nearest first, as
        [(name, value)]: one list for one key, one list per key for an array.

        metric: "cosine" (cosine similarity), "dot" (dot product), both higher = closer; "l2" or
        "l1" (Euclidean or Manhattan distance), lower = closer. All queries are scored together,
        in blocks of rows, against the whole table.
        """
        single = isinstance(keys, (str, int, np.integer))
        top, values = self.similar_ids(keys, k, metric, kind)
        names = self.entity_names if kind == "entity" else self.relation_names
        out = [[(str(names[i]), v) for i, v in zip(ids, vals) if i >= 0]
               for ids, vals in zip(top.tolist(), values.tolist())]
        return out[0] if single else out

    def similar_ids(self, keys, k: int = 10, metric: str = "cosine", kind: str = "entity"):
        """``similar`` as arrays: ids (B, k) int64 and values (B, k) float32 (similarity for cosine
        and dot, distance for l2 and l1), nearest first; id -1 fills the slots of a table with
        fewer than k other rows."""
        if kind not in ("entity", "relation"):
            raise ValueError(f"kind {kind!r}: expected 'entity' or 'relation'")
        if metric not in SIMILARITY_METRICS:
            raise ValueError(f"metric {metric!r}: expected one of {', '.join(SIMILARITY_METRICS)}")
        if not 1 <= k:
            raise ValueError(f"k {k}: must be >= 1")
        ids = self.ids(keys, kind)
        table = self.entity if kind == "entity" else self.relation
        k = max(1, min(k, table.shape[0] - 1))  # the query itself is never among its neighbours
        if metric == "cosine":
            table = table / (np.linalg.norm(table, axis=1, keepdims=True) + np.float32(1e-12))
        kernel = METRIC_KERNELS["dot" if metric in ("cosine", "dot") else metric][0]
        tiled = metric in TILED
        top = np.empty((ids.size, k), dtype=np.int64)
        values = np.empty((ids.size, k), dtype=np.float32)
        for b0 in range(0, ids.size, 512):  # bounded memory: 512 x table rows at a time
            q = ids[b0:b0 + 512]
            rows = np.empty((q.size, table.shape[0]), dtype=np.float32)
            _metric_rows(kernel, np.ascontiguousarray(table[q]), table, rows, tiled)  # l1, l2: -distance
            rows[np.arange(q.size), q] = -np.inf
            got, vals = topk_rows(rows, k)
            if metric == "l2":  # exact distances of the picks (the product form rounds), re-sorted
                found = got >= 0
                diff = (table[np.where(found, got, 0)] - table[q][:, None, :]).astype(np.float64)
                vals = np.where(found, np.sqrt(np.einsum("bkd,bkd->bk", diff, diff)), np.inf)
                order = np.argsort(vals, axis=1, kind="stable")
                got, vals = np.take_along_axis(got, order, 1), np.take_along_axis(vals, order, 1)
            elif metric == "l1":
                vals = np.where(got >= 0, -vals, np.inf)
            top[b0:b0 + 512], values[b0:b0 + 512] = got, vals
        return top, values

    # -- persistence ---------------------------------------------------------
    def save(self, path: str) -> str:
        """Write the model to directory ``path`` atomically.

        Everything goes to a temporary sibling directory first, which then
        replaces ``path`` by rename, so a crash never leaves a half-written
        model and the previous one stays loadable until the switch.
        """
        path = os.path.abspath(path)
        with atomic_directory(path, "config.json") as tmp:
            for name in _TABLES:
                np.save(os.path.join(tmp, f"{name}.npy"), getattr(self, name))
            if self.known_triples is not None:
                np.savez(os.path.join(tmp, "known_triples.npz"), **self.known_triples)
            for key in _NAMED_ARRAYS:  # names in config.json, arrays by position (any string may name one)
                if getattr(self, key):
                    np.savez(os.path.join(tmp, f"{key}.npz"), *getattr(self, key).values())
            write_names(os.path.join(tmp, "entities.tsv"), self.entity_names)
            write_names(os.path.join(tmp, "relations.tsv"), self.relation_names)
            meta = {"format_version": FORMAT_VERSION, "model": self.model, "dim": self.dim,
                    "n_entities": self.n_entities, "n_relations": int(self.relation.shape[0]),
                    "config": self.config, "train_stats": self.train_stats}
            meta.update({key: list(getattr(self, key)) for key in _NAMED_ARRAYS if getattr(self, key)})
            with open(os.path.join(tmp, "config.json"), "w") as f:
                json.dump(meta, f, indent=2, default=_json_default)
                f.flush()
                os.fsync(f.fileno())
        return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def load(path: str) -> Embeddings:
    """Load a model saved by ``Embeddings.save`` (or by ``kgnum train --save``)."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        # a crash between the two renames of a save leaves only the previous copy
        parent, base = os.path.split(path)
        olds = sorted(n for n in os.listdir(parent) if n.startswith(base + ".old-")) if os.path.isdir(parent) else []
        if not olds:
            raise FileNotFoundError(f"no saved model at {path}")
        log.warning("%s missing; loading the previous copy %s", path, olds[-1])
        path = os.path.join(parent, olds[-1])
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{config_path}: missing; {path} is not a saved kgnum model") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path}: not valid JSON ({e})") from None
    tables = {}
    for name in _TABLES:
        file = os.path.join(path, f"{name}.npy")
        if not os.path.exists(file):
            raise FileNotFoundError(f"{file}: missing from saved model")
        tables[name] = np.load(file)
    names = {kind: read_names(os.path.join(path, f"{kind}.tsv")) for kind in ("entities", "relations")}
    emb = Embeddings(meta["model"], tables["entity"], tables["relation"], meta["config"],
                     names["entities"], names["relations"], tables["entity_state"],
                     tables["relation_state"], meta.get("train_stats"))
    known = os.path.join(path, "known_triples.npz")
    if os.path.exists(known):
        with np.load(known) as f:
            emb.known_triples = {k: f[k] for k in f.files}
    for key in _NAMED_ARRAYS:
        if meta.get(key):
            file = os.path.join(path, f"{key}.npz")
            if not os.path.exists(file):
                raise FileNotFoundError(f"{file}: missing from saved model (config.json names its {key})")
            with np.load(file) as f:
                setattr(emb, key, {name: f[f"arr_{i}"] for i, name in enumerate(meta[key])})
    return emb
