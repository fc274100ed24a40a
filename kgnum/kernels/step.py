"""The training step every engine runs, built once per score function and set of loss terms.

    sample a chunk of positives -> share negatives across the chunk
    gather rows (h, r, t, negs) -> terms' prepare (attribute vectors added to rows)
                                -> score + loss + gradients (score function)
                                -> extra loss terms on the same rows (kernels.terms)
    scatter: sparse row-Adagrad update of exactly the touched rows

The kernels take their arguments in two groups: ``Tables`` (the four arrays
training updates) and ``StepParams`` (sizes, hyperparameters, the negative
distribution and the extra terms' parameters). ``chunk_gradient_kernel(model)``
is the middle line (pure: tables in, gradients out); ``train_kernel(model,
terms)`` runs the whole loop over a range of an edge order, many steps per
call, updating the tables in place without locks, so the same compiled
function serves one process or N Hogwild workers attached to shared memory.
The kernels are assembled from the model's query/metric functions at first
use in a process and then reused.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np

from .losses import chunk_loss
from .memory import gather_rows
from .metrics import METRIC_KERNELS
from .optim import adagrad_accumulate, adagrad_apply
from .registry import ScoreFunction, get_model
from .score import pair_block_kernel
from .sampling import sample_negatives
from .terms import compose, compose_prepare


class Tables(NamedTuple):
    """The arrays training updates in place (float32, C order)."""
    entity: np.ndarray  # (n_entities, dim)
    relation: np.ndarray  # (n_relations, relation_dim)
    entity_state: np.ndarray  # (n_entities,) row-wise Adagrad accumulators
    relation_state: np.ndarray  # (n_relations,)


class StepParams(NamedTuple):
    """Everything else a step reads; build it with ``step_params`` (fixed dtypes: one compile)."""
    batch: int  # positives per step
    neg_chunk: int  # positives per chunk sharing negatives
    neg: int  # negatives per chunk
    neg_cdf: np.ndarray  # (n_entities,) float64 cumulative degree, or empty: uniform negatives
    gamma: np.float32
    lr: np.float32
    adv_temp: np.float32  # 0: no self-adversarial weighting
    terms: tuple  # parameters of the extra loss terms, in the order of the kernel's terms


def step_params(batch, neg_chunk, neg, neg_cdf, gamma, lr, adv_temp, terms=()) -> StepParams:
    cdf = np.empty(0, dtype=np.float64) if neg_cdf is None else np.ascontiguousarray(neg_cdf, np.float64)
    return StepParams(int(batch), int(neg_chunk), int(neg), cdf, np.float32(gamma), np.float32(lr),
                      np.float32(adv_temp), tuple(terms))


def empty_range() -> tuple[np.ndarray, int, int]:
    """``(order, start, stop)`` of a call that runs no step: compiles without touching the tables."""
    return np.zeros(1, dtype=np.int64), 0, 0


def _make_query_chunk(sf: ScoreFunction):
    query, query_backward = sf.query, sf.query_backward
    scores, backward, pos_scores, pos_backward = METRIC_KERNELS[sf.metric]

    @numba.njit(fastmath=True, nogil=True)
    def chunk_gradients(H, R, T, N, predict_head, gamma, adv_temp, scale):
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
        return loss, gH, gR, gT, gN

    return chunk_gradients


def _make_pair_chunk(sf: ScoreFunction):
    block, pair = pair_block_kernel(sf), sf.pair_score_grad

    @numba.njit(fastmath=True, nogil=True)
    def chunk_gradients(H, R, T, N, predict_head, gamma, adv_temp, scale):
        c, k = H.shape[0], N.shape[0]
        gH = np.zeros_like(H)
        gR = np.zeros_like(R)
        gT = np.zeros_like(T)
        gN = np.zeros_like(N)
        S = np.empty((c, k), dtype=np.float32)
        sp = np.empty(c, dtype=np.float32)
        none = np.empty(0, dtype=np.float32)
        for i in range(c):
            sp[i] = pair(H[i], R[i], T[i], gamma, 0.0, gH[i], gR[i], gT[i])
            block(H[i], R[i], T[i], N, predict_head, gamma, none, gH[i], gR[i], gT[i], gN, S[i])
        dS = np.empty_like(S)
        dsp = np.empty_like(sp)
        loss = chunk_loss(S, sp, adv_temp, scale, dS, dsp)
        for i in range(c):
            pair(H[i], R[i], T[i], gamma, dsp[i], gH[i], gR[i], gT[i])
            block(H[i], R[i], T[i], N, predict_head, gamma, dS[i], gH[i], gR[i], gT[i], gN, S[i])
        return loss, gH, gR, gT, gN

    return chunk_gradients


@functools.lru_cache(maxsize=None)
def _rows_kernel(model: str):
    """The model's chunk step on gathered rows: ``(H, R, T, N, predict_head, gamma, adv_temp,
    scale) -> (loss_sum, gH, gR, gT, gN)``."""
    sf = get_model(model)
    return _make_pair_chunk(sf) if sf.metric == "pair" else _make_query_chunk(sf)


@functools.lru_cache(maxsize=None)
def chunk_gradient_kernel(model: str):
    """Numba function ``(entity, relation, heads, rels, tails, negs, predict_head,
    gamma, adv_temp, scale) -> (loss_sum, gH, gR, gT, gN)``.

    entity (n_e, d) / relation (n_r, d_r) float32 tables; heads/rels/tails (c,)
    and negs (k,) integer ids. Gradients are of ``scale * sum of the chunk's
    losses`` with respect to the gathered rows, in the order of the ids
    (duplicates not merged). Extra loss terms are not included (see kernels.terms).
    """
    rows_kernel = _rows_kernel(model)

    @numba.njit(fastmath=True, nogil=True)
    def chunk_gradients(entity, relation, heads, rels, tails, negs, predict_head, gamma, adv_temp, scale):
        H, R = gather_rows(entity, heads), gather_rows(relation, rels)
        T, N = gather_rows(entity, tails), gather_rows(entity, negs)
        return rows_kernel(H, R, T, N, predict_head, gamma, adv_temp, scale)

    return chunk_gradients


@functools.lru_cache(maxsize=None)
def train_kernel(model: str, terms: tuple[str, ...] = ()):
    """Numba function running training steps over ``order[start:stop]``.

    Signature ``(tables, edges, order, start, stop, params, chunk_index) ->
    (loss_sum, chunk_index)``: ``tables`` a ``Tables``, ``params`` a
    ``StepParams`` whose ``terms`` hold the parameters of the extra loss
    terms ``terms`` (names in ``kernels.terms``, same order); edges (n, 3)
    int32; order (m,) int64 positions into edges. Every batch of
    ``params.batch`` positions is split into chunks of ``params.neg_chunk``
    positives sharing ``params.neg`` negatives, corrupting heads and tails
    alternately (by ``chunk_index``); each chunk's gradient of the batch-mean
    loss plus the terms' penalties is applied at once with row-wise Adagrad.
    ``loss_sum`` is the sum of the positives' losses plus the penalties scaled
    by their batch's size, so ``loss_sum / positives`` is the mean objective.
    Tables are updated in place, without locks.
    """
    rows_kernel = _rows_kernel(model)
    extra = compose(get_model(model).name, tuple(terms))
    prepare = compose_prepare(tuple(terms))

    @numba.njit(fastmath=True, nogil=True)
    def train_range(tables, edges, order, start, stop, params, chunk_index):
        entity, relation = tables.entity, tables.relation
        entity_state, relation_state = tables.entity_state, tables.relation_state
        batch_size, chunk_size, n_neg, lr = params.batch, params.neg_chunk, params.neg, params.lr
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
                negs = sample_negatives(n_entities, n_neg, params.neg_cdf)
                H, R = gather_rows(entity, heads), gather_rows(relation, rels)
                T, N = gather_rows(entity, tails), gather_rows(entity, negs)
                prepare(params.terms, tables, heads, rels, tails, H, T)
                loss, gH, gR, gT, gN = rows_kernel(H, R, T, N, chunk_index % 2 == 1, params.gamma,
                                                   params.adv_temp, scale)
                penalty, ent_rows, ent_grads, rel_rows, rel_grads = extra(
                    params.terms, tables, scale, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN)
                loss_total += loss + penalty / scale
                adagrad_accumulate(entity_state, heads, gH)
                adagrad_accumulate(entity_state, tails, gT)
                adagrad_accumulate(entity_state, negs, gN)
                adagrad_accumulate(entity_state, ent_rows, ent_grads)
                adagrad_accumulate(relation_state, rels, gR)
                adagrad_accumulate(relation_state, rel_rows, rel_grads)
                adagrad_apply(entity, entity_state, heads, gH, lr)
                adagrad_apply(entity, entity_state, tails, gT, lr)
                adagrad_apply(entity, entity_state, negs, gN, lr)
                adagrad_apply(entity, entity_state, ent_rows, ent_grads, lr)
                adagrad_apply(relation, relation_state, rels, gR, lr)
                adagrad_apply(relation, relation_state, rel_rows, rel_grads, lr)
                chunk_index += 1
        return loss_total, chunk_index

    return train_range
