"""What a score function is (``ScoreFunction``) and ``register``; ``kernels.registry`` looks them up.

A score function g(h, r, t) (higher = more plausible) is described by:

* a plain NumPy reference: ``score(h, r, t)`` and ``grad(h, r, t)`` over
  broadcastable float arrays; the ground truth in tests, itself checked
  against finite differences;
* a *query form* used by the fast kernels: for a chunk of positives that
  share negative entities, each positive i becomes one query row q_i built
  from its anchor side, and the score against any candidate entity row x is
  ``metric(q_i, x)``.  With ``metric`` one of

    - ``"dot"``:  q . x                         (DistMult, ComplEx, RESCAL, SimplE)
    - ``"dot_offset"``: q . x + o               (TransE_dot)
    - ``"l2"``:   gamma - ||q - x||_2           (TransE_l2)
    - ``"l1"``:   gamma - ||q - x||_1           (TransE_l1)
    - ``"cmod"``: gamma - sum_k |q_k - x_k|     over complex pairs (RotatE)

  scoring a chunk against shared negatives is then a dense
  (chunk x dim) @ (dim x neg) product or a tiled kernel of the same shape.
  ``dot_offset`` is for a score that is a dot product against the candidate
  plus a term of the query alone (TransE_dot's head side: <n, t> + <r, t>):
  its query rows are one column wider than the entity rows, [q | o], and the
  offset o is added to every candidate's score (the loss and the
  self-adversarial weights see it); its gradient reaches the query's last
  column. Only models registered with this metric pay for the column.
  ``query(H, R, T, predict_head) -> Q`` and
  ``query_backward(gQ, H, R, T, predict_head, gH, gR, gT)``, which adds the
  gradient reaching H, R and T through Q into gH, gR and gT, are Numba
  functions. Each model also gives the same two as array code over an
  array module ``xp`` (NumPy or CuPy) and any leading batch dimensions:
  ``array_query(xp, H, R, T, predict_head) -> Q`` and
  ``array_query_backward(xp, gQ, H, R, T, predict_head) -> (gH, gR, gT)``
  (None for a side the query does not read); the NumPy reference step and
  the GPU engine's step (``kernels.array_step``) run these;
* or, for models with no query form (TransR projects every candidate by its
  relation), ``metric = "pair"`` and a Numba ``pair_score_grad`` evaluated
  for every (positive, negative) pair, or, when the model gives them,
  ``pair_block`` for one positive against all negatives and
  ``pair_project`` / ``pair_query`` for evaluation (an l2 distance after a
  per-relation projection of the candidates).

Entity rows hold ``dim`` real floats for every model (complex models store
``dim // 2`` complex numbers as [real half | imaginary half]).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numba
import numpy as np

METRICS = ("dot", "dot_offset", "l2", "l1", "cmod", "pair")
PRODUCT_METRICS = ("dot", "dot_offset")  # no margin in the score: gamma only sets the initial scale


@dataclass(frozen=True)
class ScoreFunction:
    name: str
    metric: str
    score: Callable  # NumPy reference: score(h, r, t) -> (...,)
    grad: Callable  # NumPy reference: grad(h, r, t) -> (dg/dh, dg/dr, dg/dt)
    relation_dim: Callable[[int], int]  # entity dim -> floats per relation row
    query: Callable | None = None
    query_backward: Callable | None = None
    pair_score_grad: Callable | None = None
    # optional, pair models: pair_block(h, r, t, N, predict_head, gamma, ds, gh, gr, gt, gN, s) scores
    # (and with ds, differentiates) one positive against all candidate rows N at once;
    # pair_project(X, r, out) and pair_query(a, r, predict_head) -> q give candidate x the score
    # gamma - ||q - project(x)||, so queries of one relation share the projected entity table
    pair_block: Callable | None = None
    pair_project: Callable | None = None
    pair_query: Callable | None = None
    array_query: Callable | None = None  # (xp, H, R, T, predict_head) -> Q, any leading dims
    array_query_backward: Callable | None = None  # (xp, gQ, H, R, T, predict_head) -> (gH|None, gR, gT|None)
    init_relation: Callable | None = None  # (rng, n_relations, dim, bound) -> float32 array
    even_dim: bool = False  # complex / split models need an even dim
    # the model's own defaults for TrainConfig's model-dependent fields (lr, gamma, adv_temp,
    # reg_coef, reg_norm, patience); chosen from sweeps on several graphs (bench/RESULTS.md)
    defaults: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"metric {self.metric!r} not in {METRICS}")
        if self.metric != "pair" and (self.array_query is None or self.array_query_backward is None):
            raise ValueError(f"{self.name}: a query-form model needs array_query and array_query_backward")

    def check_dim(self, dim: int) -> None:
        if dim < 2 or (self.even_dim and dim % 2):
            raise ValueError(
                f"--dim {dim}: {self.name} needs an even dim >= 2 "
                "(dim counts real floats; complex numbers take two)" if self.even_dim
                else f"--dim {dim}: must be >= 2")

    def init_tables(self, n_entities: int, n_relations: int, dim: int, gamma: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Fresh (entity (n_e, dim), relation (n_r, relation_dim)) float32 tables.

        Uniform in +-(gamma + 2) / dim like DGL-KE, so distance scores start
        near the margin.
        """
        self.check_dim(dim)
        rng = np.random.default_rng(seed)
        bound = (gamma + 2.0) / dim
        # drawn in float32: a float64 draw of a 5M-row table would double its peak memory
        entity = (rng.random((n_entities, dim), dtype=np.float32) * np.float32(2 * bound)
                  - np.float32(bound))
        if self.init_relation is not None:
            relation = self.init_relation(rng, n_relations, dim, bound)
        else:
            relation = rng.uniform(-bound, bound, (n_relations, self.relation_dim(dim)))
        return entity, np.ascontiguousarray(relation, dtype=np.float32)


def pair_block_kernel(sf: ScoreFunction):
    """``sf.pair_block``, or for a pair model without one the same function over its
    ``pair_score_grad``, one pair at a time: ``(h, r, t, N, predict_head, gamma, ds, gh, gr,
    gt, gN, s)`` writes s (k,), the scores of one positive's corruptions by every row of N (tails
    when not predict_head), and with a non-empty ds (k,) adds the gradient of sum_j ds_j s_j."""
    if sf.pair_block is not None:
        return sf.pair_block
    pair = sf.pair_score_grad

    @numba.njit(fastmath=True, nogil=True)
    def block(h, r, t, N, predict_head, gamma, ds, gh, gr, gt, gN, s):
        backward = ds.shape[0] > 0
        for j in range(N.shape[0]):
            w = ds[j] if backward else 0.0
            if predict_head:
                s[j] = pair(N[j], r, t, gamma, w, gN[j], gr, gt)
            else:
                s[j] = pair(h, r, N[j], gamma, w, gh, gr, gN[j])

    return block


# Defaults by family (bench/RESULTS.md, "Defaults"): distance models take a large Adagrad step
# and a margin; bilinear models a smaller step, a large initial scale ((gamma + 2) / dim) and
# L3 regularization; RotatE's phases want a much smaller step and margin than TransE.
DISTANCE_DEFAULTS = dict(lr=0.25, gamma=9.0, adv_temp=1.0, reg_coef=0.0, reg_norm=3, patience=5)
BILINEAR_DEFAULTS = dict(lr=0.1, gamma=143.0, adv_temp=2.0, reg_coef=1e-5, reg_norm=3, patience=5)
ROTATION_DEFAULTS = dict(lr=0.02, gamma=6.0, adv_temp=1.0, reg_coef=0.0, reg_norm=3, patience=5)

MODELS: dict[str, ScoreFunction] = {}  # lower-case name -> entry, filled by the model modules


def register(sf: ScoreFunction) -> ScoreFunction:
    MODELS[sf.name.lower()] = sf
    return sf
