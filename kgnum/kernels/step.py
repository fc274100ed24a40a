"""The training step every engine runs, built once per score function.

    sample a chunk of positives -> share negatives across the chunk
    gather rows (h, r, t, negs) -> score + loss + gradients (score function)
    scatter: sparse row-Adagrad update of exactly the touched rows

``chunk_gradient_kernel(model)`` is the middle line (pure: tables in,
gradients out); ``train_kernel(model)`` runs the whole loop over a range of
an edge order, many steps per call, updating the tables in place without
locks, so the same compiled function serves one process or N Hogwild
workers attached to shared memory. The kernels are assembled from the
model's query/metric functions at first use in a process and then reused.
"""
from __future__ import annotations

import functools

import numba
import numpy as np

from .losses import add_regularization, chunk_loss
from .memory import gather_rows
from .metrics import METRIC_KERNELS
from .optim import adagrad_accumulate, adagrad_apply
from .registry import ScoreFunction, get_model
from .sampling import sample_negatives


@numba.njit(cache=True, fastmath=True, nogil=True)
def _gather(entity, relation, heads, rels, tails, negs):
    """The chunk's rows as contiguous float32 copies: H, R, T (c, .), N (k, d)."""
    return (gather_rows(entity, heads), gather_rows(relation, rels), gather_rows(entity, tails),
            gather_rows(entity, negs))


@numba.njit(cache=True, fastmath=True, nogil=True)
def _regularize(H, R, T, gH, gR, gT, reg_coef, reg_norm):
    if reg_coef > 0.0:
        add_regularization(H, reg_coef, reg_norm, gH)
        add_regularization(T, reg_coef, reg_norm, gT)
        add_regularization(R, reg_coef, reg_norm, gR)


def _make_query_chunk(sf: ScoreFunction):
    query, query_backward = sf.query, sf.query_backward
    scores, backward, pos_scores, pos_backward = METRIC_KERNELS[sf.metric]

    @numba.njit(fastmath=True, nogil=True)
    def chunk_gradients(entity, relation, heads, rels, tails, negs, predict_head,
                        gamma, adv_temp, scale, reg_coef, reg_norm):
        H, R, T, N = _gather(entity, relation, heads, rels, tails, negs)
        Q = query(H, R, T, predict_head)
        S = np.empty((Q.shape[0], N.shape[0]), dtype=np.float32)
        sp = np.empty(Q.shape[0], dtype=np.float32)
        scores(Q, N, gamma, S)
        X = H if predict_head else T
        pos_scores(Q, X, gamma, sp)
        dS = np.empty_like(S)
        dsp = np.empty_like(sp)
        loss = chunk_loss(S, sp, adv_temp, scale, dS, dsp)
        gQ = np.empty_like(Q)
        gN = np.empty_like(N)
        backward(Q, N, S, dS, gamma, gQ, gN)
        gH = np.zeros_like(H)
        gR = np.zeros_like(R)
        gT = np.zeros_like(T)
        gX = gH if predict_head else gT
        pos_backward(Q, X, sp, dsp, gamma, gQ, gX)
        query_backward(gQ, H, R, T, predict_head, gH, gR, gT)
        _regularize(H, R, T, gH, gR, gT, reg_coef, reg_norm)
        return loss, gH, gR, gT, gN

    return chunk_gradients


def _make_pair_chunk(sf: ScoreFunction):
    pair = sf.pair_score_grad

    @numba.njit(fastmath=True, nogil=True)
    def chunk_gradients(entity, relation, heads, rels, tails, negs, predict_head,
                        gamma, adv_temp, scale, reg_coef, reg_norm):
        H, R, T, N = _gather(entity, relation, heads, rels, tails, negs)
        c, k = H.shape[0], N.shape[0]
        gH = np.zeros_like(H)
        gR = np.zeros_like(R)
        gT = np.zeros_like(T)
        gN = np.zeros_like(N)
        S = np.empty((c, k), dtype=np.float32)
        sp = np.empty(c, dtype=np.float32)
        for i in range(c):
            sp[i] = pair(H[i], R[i], T[i], gamma, 0.0, gH[i], gR[i], gT[i])
            for j in range(k):
                if predict_head:
                    S[i, j] = pair(N[j], R[i], T[i], gamma, 0.0, gN[j], gR[i], gT[i])
                else:
                    S[i, j] = pair(H[i], R[i], N[j], gamma, 0.0, gH[i], gR[i], gN[j])
        dS = np.empty_like(S)
        dsp = np.empty_like(sp)
        loss = chunk_loss(S, sp, adv_temp, scale, dS, dsp)
        for i in range(c):
            pair(H[i], R[i], T[i], gamma, dsp[i], gH[i], gR[i], gT[i])
            for j in range(k):
                if predict_head:
                    pair(N[j], R[i], T[i], gamma, dS[i, j], gN[j], gR[i], gT[i])
                else:
                    pair(H[i], R[i], N[j], gamma, dS[i, j], gH[i], gR[i], gN[j])
        _regularize(H, R, T, gH, gR, gT, reg_coef, reg_norm)
        return loss, gH, gR, gT, gN

    return chunk_gradients


@functools.lru_cache(maxsize=None)
def chunk_gradient_kernel(model: str):
    """Numba function ``(entity, relation, heads, rels, tails, negs, predict_head,
    gamma, adv_temp, scale, reg_coef, reg_norm) -> (loss_sum, gH, gR, gT, gN)``.

    entity (n_e, d) / relation (n_r, d_r) float32 tables; heads/rels/tails (c,)
    and negs (k,) integer ids. Gradients are of ``scale * sum of the chunk's
    losses`` (+ regularization) with respect to the gathered rows, in the
    order of the ids (duplicates not merged).
    """
    sf = get_model(model)
    return _make_pair_chunk(sf) if sf.metric == "pair" else _make_query_chunk(sf)


@functools.lru_cache(maxsize=None)
def train_kernel(model: str):
    """Numba function running training steps over ``order[start:stop]``.

    Signature ``(entity, relation, entity_state, relation_state, edges, order,
    start, stop, batch_size, chunk_size, n_neg, neg_cdf, gamma, lr, adv_temp,
    reg_coef, reg_norm, chunk_index) -> (loss_sum, chunk_index)``:
    edges (n, 3) int32; order (m,) int64 positions into edges; every batch of
    ``batch_size`` positions is split into chunks of ``chunk_size`` positives
    sharing ``n_neg`` negatives, corrupting heads and tails alternately
    (by ``chunk_index``); each chunk's gradient of the batch-mean loss is
    applied at once with row-wise Adagrad (state (n_rows,) float32).
    Tables are updated in place, without locks.
    """
    chunk_gradients = chunk_gradient_kernel(model)

    @numba.njit(fastmath=True, nogil=True)
    def train_range(entity, relation, entity_state, relation_state, edges, order,
                    start, stop, batch_size, chunk_size, n_neg, neg_cdf, gamma, lr,
                    adv_temp, reg_coef, reg_norm, chunk_index):
        n_entities = entity.shape[0]
        loss_total = 0.0
        for b0 in range(start, stop, batch_size):
            b1 = min(b0 + batch_size, stop)
            scale = 1.0 / (b1 - b0)
            for c0 in range(b0, b1, chunk_size):
                c1 = min(c0 + chunk_size, b1)
                c = c1 - c0
                heads = np.empty(c, dtype=np.int64)
                rels = np.empty(c, dtype=np.int64)
                tails = np.empty(c, dtype=np.int64)
                for i in range(c):
                    e = order[c0 + i]
                    heads[i] = edges[e, 0]
                    rels[i] = edges[e, 1]
                    tails[i] = edges[e, 2]
                negs = sample_negatives(n_entities, n_neg, neg_cdf)
                loss, gH, gR, gT, gN = chunk_gradients(
                    entity, relation, heads, rels, tails, negs, chunk_index % 2 == 1,
                    gamma, adv_temp, scale, reg_coef, reg_norm)
                loss_total += loss
                adagrad_accumulate(entity_state, heads, gH)
                adagrad_accumulate(entity_state, tails, gT)
                adagrad_accumulate(entity_state, negs, gN)
                adagrad_accumulate(relation_state, rels, gR)
                adagrad_apply(entity, entity_state, heads, gH, lr)
                adagrad_apply(entity, entity_state, tails, gT, lr)
                adagrad_apply(entity, entity_state, negs, gN, lr)
                adagrad_apply(relation, relation_state, rels, gR, lr)
                chunk_index += 1
        return loss_total, chunk_index

    return train_range
