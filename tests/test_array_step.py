"""The array step (kernels.array_step, what the GPU engine runs with CuPy) against the Numba step.

Run here with NumPy as the array module: every model's chunk gradients equal the Numba
kernel's on random inputs, one chunk at a time and several chunks batched; the
regularizer, the debiasing KL term (every model, persons on either side) and row-wise
Adagrad (duplicates included) equal the Numba step's.
"""
from __future__ import annotations

import numpy as np
import pytest

from kgnum.kernels import array_step
from kgnum.kernels.optim import adagrad_accumulate, adagrad_apply
from kgnum.kernels.kl import KLParams, make_kl_kernel
from kgnum.kernels.registry import get_model, model_names
from kgnum.kernels.step import Tables, chunk_gradient_kernel
from kgnum.kernels.terms import regularizer_reference, RegParams


def _tables(model, n_e=60, n_r=5, dim=8, seed=0):
    sf = get_model(model)
    entity, relation = sf.init_tables(n_e, n_r, dim, 6.0, seed)
    rng = np.random.default_rng(seed)
    entity += rng.normal(scale=0.3, size=entity.shape).astype(np.float32)
    relation += rng.normal(scale=0.3, size=relation.shape).astype(np.float32)
    return entity, relation


@pytest.mark.parametrize("model", model_names())
@pytest.mark.parametrize("predict_head", [False, True])
def test_array_chunks_equal_the_numba_step(model, predict_head):
    entity, relation = _tables(model)
    rng = np.random.default_rng(1)
    B, c, k = 3, 7, 5
    heads, tails = rng.integers(0, 60, (B, c)), rng.integers(0, 60, (B, c))
    rels, negs = rng.integers(0, 5, (B, c)), rng.integers(0, 60, (B, k))
    gamma, adv, scale = 6.0, 1.5, 1.0 / 21
    kernel = chunk_gradient_kernel(model)
    loss, gH, gR, gT, gN = array_step.chunk_gradients(
        np, model, entity[heads], relation[rels], entity[tails], entity[negs], predict_head, gamma, adv, scale)
    total = 0.0
    for b in range(B):
        want = kernel(entity, relation, heads[b], rels[b], tails[b], negs[b], predict_head, np.float32(gamma),
                      np.float32(adv), np.float32(scale))
        total += want[0]
        for got, expect in zip((gH[b], gR[b], gT[b], gN[b]), want[1:]):
            np.testing.assert_allclose(got, expect, rtol=2e-3, atol=2e-5)
    assert loss == pytest.approx(total, rel=1e-4)


@pytest.mark.parametrize("model", model_names())
@pytest.mark.parametrize("predict_head", [False, True])
def test_chunk_gradients_are_separate_arrays(model, predict_head):
    """The extra terms add into gH, gR and gT in place: no two of them may share memory."""
    entity, relation = _tables(model)
    rng = np.random.default_rng(5)
    ids = [rng.integers(0, 60, (2, 4)), rng.integers(0, 5, (2, 4)), rng.integers(0, 60, (2, 4)), rng.integers(0, 60, (2, 3))]
    _, *grads = array_step.chunk_gradients(np, model, entity[ids[0]], relation[ids[1]], entity[ids[2]],
                                           entity[ids[3]], predict_head, 6.0, 1.0, 0.1)
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.shares_memory(grads[a], grads[b]), ("gH", "gR", "gT", "gN")[a] + ("gH", "gR", "gT", "gN")[b]


def test_regularizer_matches_the_term_reference():
    rng = np.random.default_rng(2)
    H, R, T = (rng.normal(size=(4, 6)).astype(np.float32) for _ in range(3))
    for norm in (2, 3):
        got = [np.zeros_like(H), np.zeros_like(R), np.zeros_like(T)]
        penalty = array_step.regularize(np, 1e-3, norm, [(H, got[0]), (T, got[2]), (R, got[1])])
        want = [np.zeros_like(H), np.zeros_like(R), np.zeros_like(T)]
        ref = regularizer_reference(RegParams(np.float32(1e-3), norm), None, 1.0, None, None, None, None,
                                    H, R, T, None, want[0], want[1], want[2], None)
        assert penalty == pytest.approx(ref[0], rel=1e-5)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5)


def test_adagrad_with_duplicate_rows_equals_the_numba_update():
    rng = np.random.default_rng(3)
    table = rng.normal(size=(10, 4)).astype(np.float32)
    state = rng.uniform(0, 1, 10).astype(np.float32)
    rows = np.array([1, 3, 3, 7, 1, 1])
    grads = rng.normal(size=(6, 4)).astype(np.float32)
    t1, s1 = table.copy(), state.copy()
    array_step.adagrad(np, t1, s1, rows, grads, 0.1)
    t2, s2 = table.copy(), state.copy()
    adagrad_accumulate(s2, rows, grads)
    adagrad_apply(t2, s2, rows, grads, np.float32(0.1))
    np.testing.assert_allclose(s1, s2, rtol=1e-6)
    np.testing.assert_allclose(t1, t2, rtol=1e-5, atol=1e-7)


def _kl_params(n_e=60, n_r=5, seed=0):
    """Random KL parameters: a relation with persons as heads (5 values) and one with persons as tails
    (3 values, padded), random persons, the weights kl_params would give."""
    rng = np.random.default_rng(seed)
    values = np.zeros((2, 5), dtype=np.int64)
    values[0] = rng.choice(n_e, 5, replace=False)
    values[1, :3] = rng.choice(n_e, 3, replace=False)
    target = np.zeros((2, 5), dtype=np.float32)
    target[0], target[1, :3] = 1 / 5, 1 / 3
    mask = (rng.random((2, n_e)) < 0.4).astype(np.uint8)
    return KLParams(np.array([1, 3], dtype=np.int64), np.array([0, 1], dtype=np.uint8), values,
                    np.array([5, 3], dtype=np.int64), target, np.array([100.0, 1.0], dtype=np.float32), mask,
                    np.float32(6.0))


@pytest.mark.parametrize("model", model_names())
def test_kl_term_equals_the_numba_kl_kernel(model):
    entity, relation = _tables(model)
    p = _kl_params()
    rng = np.random.default_rng(4)
    B, c, k = 3, 8, 4
    heads, tails = rng.integers(0, 60, (B, c)), rng.integers(0, 60, (B, c))
    rels, negs = rng.integers(0, 5, (B, c)), rng.integers(0, 60, (B, k))
    scale = 1.0 / (B * c)
    gH, gT = np.zeros((B, c, entity.shape[1]), np.float32), np.zeros((B, c, entity.shape[1]), np.float32)
    penalty = array_step.kl_divergence(np, model, p, scale, relation[p.relations], entity[p.values],
                                       [(heads, entity[heads], gH), (tails, entity[tails], gT)])
    kernel = make_kl_kernel(get_model(model))
    tables = Tables(entity, relation, np.zeros(60, np.float32), np.zeros(5, np.float32))
    total = 0.0
    for b in range(B):
        H, R, T, N = entity[heads[b]], relation[rels[b]], entity[tails[b]], entity[negs[b]]
        want = [np.zeros_like(X) for X in (H, R, T, N)]
        total += kernel(p, tables, scale, heads[b], rels[b], tails[b], negs[b], H, R, T, N, *want)[0]
        top = max(np.abs(want[0]).max(), np.abs(want[2]).max())
        np.testing.assert_allclose(gH[b], want[0], rtol=2e-3, atol=1e-5 * top)
        np.testing.assert_allclose(gT[b], want[2], rtol=2e-3, atol=1e-5 * top)
        assert not want[1].any() and not want[3].any()
    assert total > 0 and penalty == pytest.approx(total, rel=1e-4)
    persons = p.person_mask.any(axis=0)
    assert not gH[~persons[heads]].any() and not gT[~persons[tails]].any(), "only persons move"
