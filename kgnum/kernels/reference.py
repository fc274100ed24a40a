"""Plain NumPy implementations of the training step: the ground truth in tests
and the baseline in benchmarks.

* ``pairwise_chunk_gradients`` scores every (positive, negative) pair with
  the model's NumPy reference ``score``/``grad`` (float64, broadcast over a
  (chunk, neg, dim) tensor): slow, obviously right.
* ``numpy_train_range`` is the same step as ``step.train_kernel`` (extra loss
  terms through their NumPy references) written
  with NumPy only (query form through BLAS matrix products, ``np.add.at``
  scatters): what a careful NumPy implementation costs, for benchmark ratios.
"""
from __future__ import annotations

import numpy as np

from .score import ScoreFunction
from .terms import compose_reference


def _logsigmoid(x):
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))


def loss_and_score_grads(S, sp, adv_temp, scale):
    """NumPy twin of ``losses.chunk_loss``: returns (loss_sum, dS, dsp)."""
    k = S.shape[1]
    if adv_temp > 0:
        z = adv_temp * (S - S.max(axis=1, keepdims=True))
        w = np.exp(z)
        w /= w.sum(axis=1, keepdims=True)
    else:
        w = np.full_like(S, 1.0 / k)
    loss = -0.5 * (_logsigmoid(sp) + (w * _logsigmoid(-S)).sum(axis=1))
    dS = 0.5 * scale * w * _sigmoid(S)
    dsp = -0.5 * scale * _sigmoid(-sp)
    return loss.sum(), dS, dsp


def pairwise_chunk_gradients(sf: ScoreFunction, entity, relation, heads, rels, tails, negs,
                             predict_head, gamma, adv_temp, scale):
    """Same contract as ``step.chunk_gradient_kernel(model)``, computed in float64
    from the model's pairwise NumPy reference."""
    H = entity[heads].astype(np.float64)
    R = relation[rels].astype(np.float64)
    T = entity[tails].astype(np.float64)
    N = entity[negs].astype(np.float64)
    sp = sf.score(H, R, T, gamma)
    if predict_head:
        h_b, r_b, t_b = N[None, :, :], R[:, None, :], T[:, None, :]
    else:
        h_b, r_b, t_b = H[:, None, :], R[:, None, :], N[None, :, :]
    S = sf.score(h_b, r_b, t_b, gamma)
    loss, dS, dsp = loss_and_score_grads(S, sp, adv_temp, scale)
    gh_p, gr_p, gt_p = sf.grad(H, R, T, gamma)
    gh_n, gr_n, gt_n = (np.broadcast_to(g, S.shape + g.shape[-1:]) for g in sf.grad(h_b, r_b, t_b, gamma))
    w = dS[:, :, None]
    gH = dsp[:, None] * gh_p
    gR = dsp[:, None] * gr_p + (w * gr_n).sum(axis=1)
    gT = dsp[:, None] * gt_p
    if predict_head:
        gN = (w * gh_n).sum(axis=0)
        gT = gT + (w * gt_n).sum(axis=1)
    else:
        gN = (w * gt_n).sum(axis=0)
        gH = gH + (w * gh_n).sum(axis=1)
    return loss, gH, gR, gT, gN


# -- the NumPy-only step ------------------------------------------------------
def _distance_and_unit(metric, diff):
    """For diff = q - x (..., d): the distance and its gradient wrt diff."""
    if metric == "l2":
        dist = np.sqrt((diff * diff).sum(-1))
        return dist, diff / np.maximum(dist, 1e-12)[..., None]
    if metric == "l1":
        return np.abs(diff).sum(-1), np.sign(diff)
    half = diff.shape[-1] // 2
    mod = np.sqrt(diff[..., :half] ** 2 + diff[..., half:] ** 2)
    return mod.sum(-1), diff / np.maximum(np.concatenate([mod, mod], -1), 1e-12)


def _metric_scores(metric, Q, N, gamma):
    if metric == "dot":
        return Q @ N.T
    if metric == "dot_offset":  # Q = [q | o]
        return Q[:, :-1] @ N.T + Q[:, -1:]
    if metric == "l2":
        sq = (Q * Q).sum(1)[:, None] + (N * N).sum(1)[None, :] - 2 * (Q @ N.T)
        return gamma - np.sqrt(np.maximum(sq, 0))
    return gamma - _distance_and_unit(metric, Q[:, None, :] - N[None, :, :])[0]


def _metric_backward(metric, Q, N, S, dS, gamma):
    if metric == "dot":
        return dS @ N, dS.T @ Q
    if metric == "dot_offset":
        return np.concatenate([dS @ N, dS.sum(1)[:, None]], axis=1), dS.T @ Q[:, :-1]
    if metric == "l2":
        dist = gamma - S
        C = np.where(dist > 1e-12, dS / np.maximum(dist, 1e-12), 0).astype(Q.dtype)
        return C @ N - C.sum(1)[:, None] * Q, C.T @ Q - C.sum(0)[:, None] * N
    g = dS[:, :, None] * _distance_and_unit(metric, Q[:, None, :] - N[None, :, :])[1]
    return -g.sum(1), g.sum(0)


def _positive_scores_and_grads(metric, Q, X, gamma):
    """Row-wise scores s_i = metric(Q_i, X_i) and ds/dQ (ds/dX = -ds/dQ for distances)."""
    if metric == "dot":
        return (Q * X).sum(1), X, Q
    if metric == "dot_offset":
        q = Q[:, :-1]
        return (q * X).sum(1) + Q[:, -1], np.concatenate([X, np.ones_like(X[:, :1])], axis=1), q
    dist, unit = _distance_and_unit(metric, Q - X)
    return gamma - dist, -unit, unit


def numpy_chunk_gradients(sf: ScoreFunction, entity, relation, heads, rels, tails, negs,
                          predict_head, gamma, adv_temp, scale):
    """The query-form chunk step in NumPy (float32, BLAS products)."""
    if sf.metric == "pair":
        out = pairwise_chunk_gradients(sf, entity, relation, heads, rels, tails, negs,
                                       predict_head, gamma, adv_temp, scale)
        return (out[0],) + tuple(g.astype(np.float32) for g in out[1:])
    H, R, T, N = entity[heads], relation[rels], entity[tails], entity[negs]
    Q = sf.array_query(np, H, R, T, predict_head)
    X = H if predict_head else T
    S = _metric_scores(sf.metric, Q, N, gamma)
    sp, dsp_dQ, dsp_dX = _positive_scores_and_grads(sf.metric, Q, X, gamma)
    loss, dS, dsp = loss_and_score_grads(S, sp, adv_temp, scale)
    gQ, gN = _metric_backward(sf.metric, Q, N, S, dS.astype(np.float32), gamma)
    gQ = (gQ + dsp[:, None] * dsp_dQ).astype(np.float32)
    gH, gR, gT = np.zeros_like(H), np.zeros_like(R), np.zeros_like(T)
    (gH if predict_head else gT)[:] += dsp[:, None] * dsp_dX
    for g, reached in zip((gH, gR, gT), sf.array_query_backward(np, gQ, H, R, T, predict_head)):
        if reached is not None:
            g += reached
    return loss, gH, gR, gT, gN.astype(np.float32)


def numpy_adagrad(table, state, rows_and_grads, lr):
    """Row-wise Adagrad over several (rows, grads) pairs, accumulate-then-apply."""
    for rows, grads in rows_and_grads:
        np.add.at(state, rows, (grads * grads).mean(axis=1))
    for rows, grads in rows_and_grads:
        np.add.at(table, rows, -lr * grads / (np.sqrt(state[rows])[:, None] + 1e-10))


def numpy_train_range(sf: ScoreFunction, tables, edges, order, start, stop, params, rng,
                      chunk_index=0, terms=()):
    """NumPy twin of ``step.train_kernel(model, terms)``: same ``Tables`` / ``StepParams``
    arguments, updated in place; negatives come from ``rng`` (uniform)."""
    entity, relation, entity_state, relation_state = tables
    extra = compose_reference(sf.name, tuple(terms))
    batch_size, chunk_size = params.batch, params.neg_chunk
    loss_total = 0.0
    for b0 in range(start, stop, batch_size):
        b1 = min(b0 + batch_size, stop)
        for c0 in range(b0, b1, chunk_size):
            pos = edges[order[c0:min(c0 + chunk_size, b1)]]
            negs = rng.integers(0, entity.shape[0], params.neg)
            heads, rels, tails = pos[:, 0], pos[:, 1], pos[:, 2]
            loss, gH, gR, gT, gN = numpy_chunk_gradients(
                sf, entity, relation, heads, rels, tails, negs, chunk_index % 2 == 1,
                params.gamma, params.adv_temp, 1.0 / (b1 - b0))
            penalty, ent_extra, rel_extra = extra(params.terms, tables, 1.0 / (b1 - b0), heads, rels, tails, negs,
                                                  entity[heads], relation[rels], entity[tails],
                                                  entity[negs], gH, gR, gT, gN)
            loss_total += loss + penalty * (b1 - b0)
            numpy_adagrad(entity, entity_state, [(heads, gH), (tails, gT), (negs, gN), *ent_extra],
                          params.lr)
            numpy_adagrad(relation, relation_state, [(rels, gR), *rel_extra], params.lr)
            chunk_index += 1
    return loss_total, chunk_index
