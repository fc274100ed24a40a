"""Trained embeddings: scoring, prediction, neighbours, atomic save and load."""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_info

from .files import atomic_directory, write_names
from .kernels.metrics import METRIC_KERNELS, TILED
from .kernels.ranking import topk_rows
from .kernels.registry import get_model

log = logging.getLogger("kgnum")

FORMAT_VERSION = 1
_TABLES = ("entity", "relation", "entity_state", "relation_state")


def _scoring_threads(n_rows: int) -> int:
    """Threads for a tiled metric's scoring: as many as BLAS may use now (so
    ``threadpool_limits`` governs both kinds of model), at most one per 16 rows."""
    if n_rows < 32:  # one thread anyway: skip the (about 1 ms) look-up of the BLAS limit
        return 1
    limits = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(min(limits, default=cores), cores, n_rows // 16))


class Embeddings:
    """Entity and relation tables of a trained model.

    entity (n_entities, dim) float32, relation (n_relations, relation_dim)
    float32; entity_state / relation_state (n_rows,) float32 are the Adagrad
    accumulators kept for resuming. ``config`` is the TrainConfig as a dict.
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
            return self._score_candidates_pairwise(anchors, rels, predict_head)
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

    def _score_candidates_pairwise(self, anchors, rels, predict_head):
        sf = self.score_function
        out = np.empty((anchors.shape[0], self.n_entities), dtype=np.float32)
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
        a, r = self.ids(anchors), self.ids(relations, "relation")
        if a.size != r.size:
            a, r = np.broadcast_arrays(a, r)
        if exclude not in (None, "none", "train", "all"):
            raise ValueError(f"exclude {exclude!r}: expected None, 'train' or 'all'")
        splits = {"train": ("train",), "all": ("train", "valid", "test")}.get(exclude or "none", ())
        if not 1 <= k:
            raise ValueError(f"k {k}: must be >= 1")
        k = min(k, self.n_entities)
        out = []
        for b0 in range(0, a.size, 512):  # bounded memory: 512 x n_entities scores at a time
            rows = self.score_candidates(a[b0:b0 + 512], r[b0:b0 + 512], predict_head)
            if splits:
                for i, known in enumerate(self.known_answers(a[b0:b0 + 512], r[b0:b0 + 512], predict_head,
                                                             splits)):
                    rows[i, known] = -np.inf
            top, picked = topk_rows(rows, k)  # one Numba pass per row (argpartition was 4x the scoring)
            names = self.entity_names
            for ids, vals in zip(top.tolist(), picked.tolist()):
                out.append([(str(names[i]), v) for i, v in zip(ids, vals) if i >= 0])
        return out[0] if single else out

    def similar(self, entity, k: int = 10) -> list[tuple[str, float]]:
        """The k entities with the highest cosine similarity to ``entity`` (itself excluded)."""
        idx = self.entity_id(entity)
        norms = np.linalg.norm(self.entity, axis=1) + 1e-12
        sims = (self.entity @ self.entity[idx]) / (norms * norms[idx])
        sims[idx] = -np.inf
        return self._top(sims, k)

    def _top(self, row: np.ndarray, k: int):
        k = min(k, row.shape[0])
        top = np.argpartition(-row, k - 1)[:k]
        top = top[np.argsort(-row[top], kind="stable")]
        return [(str(self.entity_names[i]), float(row[i])) for i in top]

    # -- persistence ---------------------------------------------------------
    def save(self, path: str) -> str:
        """Write the model to directory ``path`` atomically.

        Everything goes to a temporary sibling directory first, which then
        replaces ``path`` by rename, so a crash never leaves a half-written
        model and the previous one stays loadable until the switch.
        """
        path = os.path.abspath(path)
        with atomic_directory(path) as tmp:
            for name in _TABLES:
                np.save(os.path.join(tmp, f"{name}.npy"), getattr(self, name))
            if self.known_triples is not None:
                np.savez(os.path.join(tmp, "known_triples.npz"), **self.known_triples)
            write_names(os.path.join(tmp, "entities.tsv"), self.entity_names)
            write_names(os.path.join(tmp, "relations.tsv"), self.relation_names)
            meta = {"format_version": FORMAT_VERSION, "model": self.model, "dim": self.dim,
                    "n_entities": self.n_entities, "n_relations": int(self.relation.shape[0]),
                    "config": self.config, "train_stats": self.train_stats}
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
    names = {}
    for kind in ("entities", "relations"):
        with open(os.path.join(path, f"{kind}.tsv"), encoding="utf-8") as f:
            names[kind] = [line.rstrip("\n").split("\t", 1)[1] for line in f if line.strip()]
    emb = Embeddings(meta["model"], tables["entity"], tables["relation"], meta["config"],
                     names["entities"], names["relations"], tables["entity_state"],
                     tables["relation_state"], meta.get("train_stats"))
    known = os.path.join(path, "known_triples.npz")
    if os.path.exists(known):
        with np.load(known) as f:
            emb.known_triples = {k: f[k] for k in f.files}
    return emb
