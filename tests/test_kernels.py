"""Tests of the math kernels in kgnum.kernels.

Layers, each checked against the one below it:

* every model's NumPy reference ``grad`` against central finite differences
  of its ``score`` (float64), and its broadcasting over leading dims;
* the Numba chunk kernel (``step.chunk_gradient_kernel``) against the
  pairwise NumPy reference (``reference.pairwise_chunk_gradients``) and the
  query-form NumPy step, and against finite differences of the chunk loss;
* the loss (``losses.chunk_loss``), Adagrad (``optim``), negative sampling
  (``sampling``) and the whole training loop (``step.train_kernel``) against
  their NumPy twins and their documented behaviour.

Every model in the registry is covered automatically (``model_names()``).
Numba kernels are compiled once per model per process (``lru_cache`` in
``step``); dims are kept small so the file runs in well under a minute or two.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from kgnum.kernels.losses import chunk_loss
from kgnum.kernels.memory import gather_rows
from kgnum.kernels.metrics import CANDIDATE_FORMS, METRIC_KERNELS
from kgnum.kernels.optim import adagrad_accumulate, adagrad_apply
from kgnum.kernels.reference import (
    loss_and_score_grads,
    numpy_adagrad,
    numpy_chunk_gradients,
    numpy_train_range,
    pairwise_chunk_gradients,
)
from kgnum.kernels.registry import get_model, model_names
from kgnum.kernels.sampling import degree_cdf, sample_negatives, seed_kernel_rng
from kgnum.kernels.step import Tables, chunk_gradient_kernel, step_params, train_kernel
from kgnum.kernels.terms import TERMS, RegParams

MODELS = model_names()
GAMMA = 6.0
EMPTY_CDF = np.empty(0, dtype=np.float64)


# -- helpers ------------------------------------------------------------------
def dim_for(sf) -> int:
    """Small entity dim: 4 for models with a matrix per relation, else 8 (both even)."""
    return 4 if sf.relation_dim(8) > 2 * 8 else 8


def draw_relations(sf, rng, shape, dim):
    """Relation rows: phases in (-pi, pi) for rotation models, normal values otherwise."""
    if sf.metric == "cmod":
        return rng.uniform(-np.pi, np.pi, shape + (sf.relation_dim(dim),))
    return rng.normal(size=shape + (sf.relation_dim(dim),))


def kink_margin(sf, h, r, t):
    """Distance of (h, r, t) to the score's non-differentiable set (inf for smooth scores)."""
    d = h.shape[-1]
    if sf.metric == "l1":
        return np.abs(h + r - t).min()
    if sf.metric == "l2":
        return np.linalg.norm(h + r - t, axis=-1).min()
    if sf.metric == "cmod":
        half = d // 2
        z = (h[..., :half] + 1j * h[..., half:]) * np.exp(1j * r) - (t[..., :half] + 1j * t[..., half:])
        return np.abs(z).min()
    if sf.metric == "pair":  # TransR: ||M_r (h - t) + r||
        vec, M = r[..., :d], r[..., d:].reshape(r.shape[:-1] + (d, d))
        v = np.einsum("...ab,...b->...a", M, h - t) + vec
        return np.linalg.norm(v, axis=-1).min()
    return np.inf


def draw_triples(sf, rng, batch, dim, margin=0.05):
    """float64 (h, r, t) of leading shape (batch,), resampled until away from kinks."""
    for _ in range(1000):
        h = rng.normal(size=(batch, dim))
        r = draw_relations(sf, rng, (batch,), dim)
        t = rng.normal(size=(batch, dim))
        if kink_margin(sf, h, r, t) > margin:
            return h, r, t
    raise AssertionError(f"could not draw {sf.name} inputs away from its kinks")


def assert_close_scaled(got, want, rtol, what=""):
    """|got - want| <= rtol * max(|want|) elementwise (float32-friendly relative check)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    scale = max(np.abs(want).max(initial=0.0), 1e-12)
    err = np.abs(got - want).max(initial=0.0)
    assert err <= rtol * scale, f"{what}: max abs err {err:.3g} > {rtol:g} * {scale:.3g}"


def chunk_setup(sf, seed=0, n_entities=14, n_relations=3):
    """Float32 tables and a chunk with duplicates: a repeated head, a head that is
    also a negative, a tail that is also a negative, and a repeated negative."""
    rng = np.random.default_rng(seed)
    dim = dim_for(sf)
    entity = rng.normal(size=(n_entities, dim)).astype(np.float32)
    relation = np.ascontiguousarray(draw_relations(sf, rng, (n_relations,), dim), dtype=np.float32)
    heads = np.array([0, 1, 2, 0, 3], dtype=np.int64)
    rels = np.array([0, 1, 2, 1, 0], dtype=np.int64)
    tails = np.array([4, 5, 6, 7, 8], dtype=np.int64)
    negs = np.array([1, 9, 10, 10, 5, 11], dtype=np.int64)  # 1 is a head, 5 a tail, 10 twice
    return entity, relation, heads, rels, tails, negs


# -- 1. NumPy reference gradients ---------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_reference_grad_matches_finite_differences(name):
    sf = get_model(name)
    dim = dim_for(sf)
    rng = np.random.default_rng(1)
    h, r, t = draw_triples(sf, rng, 3, dim)
    gh, gr, gt = sf.grad(h, r, t, GAMMA)
    eps = 1e-6
    args = [h, r, t]
    for which, analytic in enumerate((gh, gr, gt)):
        assert analytic.shape == args[which].shape, f"grad {which} shape {analytic.shape}"
        numeric = np.empty_like(args[which])
        for idx in np.ndindex(args[which].shape):
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[which][idx] += eps
            minus[which][idx] -= eps
            row = idx[0]
            numeric[idx] = (sf.score(*plus, GAMMA)[row] - sf.score(*minus, GAMMA)[row]) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-5 * np.abs(numeric).max(),
                                   err_msg=f"{name}: d score / d {'hrt'[which]}")


@pytest.mark.parametrize("name", MODELS)
def test_reference_score_and_grad_broadcast(name):
    """score/grad on (c, 1, d) x (1, k, d) inputs equal the per-pair values (what the
    pairwise reference relies on), also with the relation broadcast."""
    sf = get_model(name)
    dim = dim_for(sf)
    rng = np.random.default_rng(2)
    h, r, _ = draw_triples(sf, rng, 3, dim)
    _, _, t = draw_triples(sf, rng, 4, dim)
    hb, rb, tb = h[:, None, :], r[:, None, :], t[None, :, :]
    S = sf.score(hb, rb, tb, GAMMA)
    assert S.shape == (3, 4)
    grads = [np.broadcast_to(g, (3, 4, g.shape[-1])) for g in sf.grad(hb, rb, tb, GAMMA)]
    for i in range(3):
        for j in range(4):
            np.testing.assert_allclose(S[i, j], sf.score(h[i], r[i], t[j], GAMMA), rtol=1e-12, atol=1e-12)
            for g, g1 in zip(grads, sf.grad(h[i], r[i], t[j], GAMMA)):
                np.testing.assert_allclose(g[i, j], g1, rtol=1e-12, atol=1e-12)


# -- 2. Numba chunk kernel vs the pairwise NumPy reference ----------------------
@pytest.mark.parametrize("adv_temp", [0.0, 1.0, 0.5], ids=["uniform", "adv1", "adv0.5"])
@pytest.mark.parametrize("predict_head", [False, True], ids=["tail", "head"])
@pytest.mark.parametrize("name", MODELS)
def test_chunk_kernel_matches_pairwise_reference(name, predict_head, adv_temp):
    sf = get_model(name)
    entity, relation, heads, rels, tails, negs = chunk_setup(sf)
    scale = 1.0 / 8
    kernel = chunk_gradient_kernel(name)
    e0, r0 = entity.copy(), relation.copy()
    got = kernel(entity, relation, heads, rels, tails, negs, predict_head, GAMMA, adv_temp, scale)
    want = pairwise_chunk_gradients(sf, entity, relation, heads, rels, tails, negs, predict_head,
                                    GAMMA, adv_temp, scale)
    # the kernel is pure: tables untouched
    assert np.array_equal(entity, e0) and np.array_equal(relation, r0)
    loss, gH, gR, gT, gN = got
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, want[0], rtol=1e-5)
    expected_shapes = [heads.shape + entity.shape[1:], rels.shape + relation.shape[1:],
                       tails.shape + entity.shape[1:], negs.shape + entity.shape[1:]]
    for label, g, w, shape in zip(("gH", "gR", "gT", "gN"), got[1:], want[1:], expected_shapes):
        assert g.shape == shape, f"{label} shape {g.shape} != {shape}"
        assert g.dtype == np.float32, f"{label} dtype {g.dtype}"
        assert_close_scaled(g, w, 1e-4, f"{name} {label}")
    # the repeated negative gets the same gradient in both slots (duplicates not merged)
    np.testing.assert_allclose(gN[2], gN[3], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("metric", sorted(CANDIDATE_FORMS))
def test_candidate_forms_match_the_metric_kernels(metric):
    """The KL term's candidate form of each metric: the same scores as the metric's chunk
    kernel, and the candidates' half of its backward, from arrays the caller made (a candidate
    equal to a query row included: l2's zero distance gets no gradient in either)."""
    rng = np.random.default_rng(3)
    m, n, d = 5, 7, 6
    Q = rng.normal(size=(m, d + 1 if metric == "dot_offset" else d)).astype(np.float32)
    P = rng.normal(size=(n, d)).astype(np.float32)
    P[2] = Q[1, :d]
    dS = rng.normal(size=(m, n)).astype(np.float32)
    scores, backward = METRIC_KERNELS[metric][:2]
    S_want, gQ, gP_want = np.empty((m, n), np.float32), np.empty_like(Q), np.empty_like(P)
    scores(Q, P, GAMMA, S_want)
    backward(Q, P, S_want, dS, GAMMA, gQ, gP_want)
    form = CANDIDATE_FORMS[metric]
    a, split_rows = np.full(m, np.nan, np.float32), np.full((m, d), np.nan, np.float32)
    Qd = form.split(Q, d, split_rows, a)
    pp = (P.astype(np.float64) ** 2).sum(1).astype(np.float32)
    S, keep, gP = (np.full(shape, np.nan, np.float32) for shape in ((m, n), (m, n), (n, d)))
    form.scores(Qd, a, P, pp, GAMMA, S, keep)
    np.testing.assert_allclose(S, S_want, rtol=1e-5, atol=1e-5)
    form.grad(Qd, P, keep, dS.copy(), GAMMA, gP)
    np.testing.assert_allclose(gP, gP_want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("predict_head", [False, True], ids=["tail", "head"])
@pytest.mark.parametrize("name", MODELS)
def test_numpy_chunk_step_matches_pairwise_reference(name, predict_head):
    """The query-form NumPy step (used by numpy_train_range) agrees with the pairwise reference."""
    sf = get_model(name)
    entity, relation, heads, rels, tails, negs = chunk_setup(sf, seed=3)
    args = (sf, entity, relation, heads, rels, tails, negs, predict_head, GAMMA, 0.5, 0.2)
    got, want = numpy_chunk_gradients(*args), pairwise_chunk_gradients(*args)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for label, g, w in zip(("gH", "gR", "gT", "gN"), got[1:], want[1:]):
        assert_close_scaled(g, w, 1e-4, f"{name} {label}")


# -- 3. chunk gradients vs finite differences of the chunk loss -----------------
def _fd_models():
    """One model per metric kind present in the registry (TransE_l2, DistMult, RotatE, TransE_l1, TransR,
    TransE_dot)."""
    wanted = ["TransE_l2", "DistMult", "RotatE", "TransE_l1", "TransR", "TransE_dot"]
    present = {n.lower() for n in MODELS}
    return [n for n in wanted if n.lower() in present]


@pytest.mark.parametrize("predict_head", [False, True], ids=["tail", "head"])
@pytest.mark.parametrize("name", _fd_models())
def test_chunk_gradients_match_finite_differences_of_chunk_loss(name, predict_head):
    sf = get_model(name)
    entity32, relation32, heads, rels, tails, negs = chunk_setup(sf, seed=4)
    entity, relation = entity32.astype(np.float64), relation32.astype(np.float64)  # same point
    scale = 1.0 / 5
    # inputs must be away from the score's kinks for every positive and negative pair
    H, R, T, N = entity[heads], relation[rels], entity[tails], entity[negs]
    margins = [kink_margin(sf, H, R, T)]
    if predict_head:
        margins.append(kink_margin(sf, N[None, :, :], R[:, None, :], T[:, None, :]))
    else:
        margins.append(kink_margin(sf, H[:, None, :], R[:, None, :], N[None, :, :]))
    assert min(margins) > 1e-3, "test data too close to a kink; change the seed"

    loss, gH, gR, gT, gN = chunk_gradient_kernel(name)(
        entity32, relation32, heads, rels, tails, negs, predict_head, GAMMA, 0.0, scale)
    # scatter per-occurrence gradients onto the table rows
    g_entity = np.zeros_like(entity)
    g_relation = np.zeros_like(relation)
    np.add.at(g_entity, heads, gH)
    np.add.at(g_entity, tails, gT)
    np.add.at(g_entity, negs, gN)
    np.add.at(g_relation, rels, gR)

    def chunk_loss_of(ent, rel):
        return scale * pairwise_chunk_gradients(sf, ent, rel, heads, rels, tails, negs, predict_head,
                                                GAMMA, 0.0, scale)[0]

    np.testing.assert_allclose(scale * loss, chunk_loss_of(entity, relation), rtol=1e-5)
    eps = 1e-6
    used = np.unique(np.concatenate([heads, tails, negs]))
    fd_entity = np.zeros_like(entity)
    for row in used:
        for k in range(entity.shape[1]):
            plus, minus = entity.copy(), entity.copy()
            plus[row, k] += eps
            minus[row, k] -= eps
            fd_entity[row, k] = (chunk_loss_of(plus, relation) - chunk_loss_of(minus, relation)) / (2 * eps)
    fd_relation = np.zeros_like(relation)
    for row in np.unique(rels):
        for k in range(relation.shape[1]):
            plus, minus = relation.copy(), relation.copy()
            plus[row, k] += eps
            minus[row, k] -= eps
            fd_relation[row, k] = (chunk_loss_of(entity, plus) - chunk_loss_of(entity, minus)) / (2 * eps)
    assert_close_scaled(g_entity, fd_entity, 2e-4, f"{name} entity grads vs FD")
    assert_close_scaled(g_relation, fd_relation, 2e-4, f"{name} relation grads vs FD")
    # rows outside the chunk get nothing
    unused = np.setdiff1d(np.arange(entity.shape[0]), used)
    assert np.all(g_entity[unused] == 0)


# -- 4. Adagrad and the training loop ------------------------------------------
def test_adagrad_kernels_match_numpy_with_duplicate_rows():
    rng = np.random.default_rng(5)
    n_rows, dim = 9, 6
    table = rng.normal(size=(n_rows, dim)).astype(np.float32)
    state = rng.uniform(0.0, 0.5, n_rows).astype(np.float32)
    state[[0, 2]] = 0.0  # fresh rows
    groups = [
        (np.array([0, 2, 2, 5], dtype=np.int64), rng.normal(size=(4, dim)).astype(np.float32)),
        (np.array([2, 7], dtype=np.int64), rng.normal(size=(2, dim)).astype(np.float32)),
        (np.array([5, 5, 0, 3], dtype=np.int64), rng.normal(size=(4, dim)).astype(np.float32)),
    ]
    lr = 0.1
    t_ref, s_ref = table.copy(), state.copy()
    numpy_adagrad(t_ref, s_ref, groups, lr)
    t_nb, s_nb = table.copy(), state.copy()
    for rows, grads in groups:
        adagrad_accumulate(s_nb, rows, grads)
    for rows, grads in groups:
        adagrad_apply(t_nb, s_nb, rows, grads, lr)
    np.testing.assert_allclose(s_nb, s_ref, rtol=1e-6)
    np.testing.assert_allclose(t_nb, t_ref, rtol=1e-6, atol=1e-6)

    # spelled out for row 2 (fresh, used 3 times): accumulate all, then apply all
    occurrences = [g[i] for rows, g in groups for i in range(len(rows)) if rows[i] == 2]
    assert len(occurrences) == 3
    s2 = sum(float((g.astype(np.float64) ** 2).mean()) for g in occurrences)
    np.testing.assert_allclose(s_nb[2], s2, rtol=1e-6)
    np.testing.assert_allclose(t_nb[2], table[2] - lr * sum(occurrences) / np.sqrt(s2), rtol=1e-5, atol=1e-6)
    # untouched rows bit-identical
    for row in (1, 4, 6, 8):
        assert s_nb[row] == state[row] and np.array_equal(t_nb[row], table[row])


@pytest.mark.parametrize("dim", [1, 7, 16, 33])
def test_gather_and_adagrad_over_many_rows_match_numpy(dim):
    # long enough that rows are prefetched ahead of the one being copied/updated
    rng = np.random.default_rng(dim)
    table = rng.normal(size=(30, dim)).astype(np.float32)
    for n in (0, 1, 3, 50):
        rows = rng.integers(0, 30, n)
        np.testing.assert_array_equal(gather_rows(table, rows), table[rows])
    rows = rng.integers(0, 30, 50)  # duplicates certain
    grads = rng.normal(size=(50, dim)).astype(np.float32)
    state = rng.uniform(0.0, 0.5, 30).astype(np.float32)
    t_ref, s_ref = table.copy(), state.copy()
    numpy_adagrad(t_ref, s_ref, [(rows, grads)], 0.1)
    adagrad_accumulate(state, rows, grads)
    adagrad_apply(table, state, rows, grads, 0.1)
    np.testing.assert_allclose(state, s_ref, rtol=1e-6)
    np.testing.assert_allclose(table, t_ref, rtol=1e-5, atol=1e-6)


def random_graph(rng, n_entities, n_relations, n_edges):
    return np.stack([rng.integers(0, n_entities, n_edges), rng.integers(0, n_relations, n_edges),
                     rng.integers(0, n_entities, n_edges)], axis=1).astype(np.int32)


class _KernelRngStub:
    """Stands in for numpy_train_range's ``rng``: draws negatives from the same Numba
    random stream (``sample_negatives``, uniform) the kernel consumes."""

    def __init__(self):
        self.calls = 0

    def integers(self, low, high, size):
        assert low == 0
        self.calls += 1
        return sample_negatives(high, size, EMPTY_CDF)


def _n_chunks(start, stop, batch_size, chunk_size):
    return sum(len(range(b0, min(b0 + batch_size, stop), chunk_size))
               for b0 in range(start, stop, batch_size))


TRAIN_MODELS = [n for n in ("TransE_l2", "DistMult", "RotatE", "TransE_dot")
                if n.lower() in {m.lower() for m in MODELS}]


@pytest.mark.parametrize("terms", [(), ("regularizer",)], ids=["noterms", "reg"])
@pytest.mark.parametrize("name", TRAIN_MODELS)
def test_train_kernel_matches_numpy_train_range(name, terms):
    """Same negatives on both sides (one Numba random stream, reseeded), several batches,
    partial chunks and batches, head/tail alternation starting from an odd chunk index, with
    and without an extra loss term."""
    sf = get_model(name)
    rng = np.random.default_rng(6)
    n_entities, n_relations, dim = 15, 3, 8
    edges = random_graph(rng, n_entities, n_relations, 40)
    order = rng.permutation(len(edges)).astype(np.int64)
    entity, relation = sf.init_tables(n_entities, n_relations, dim, GAMMA, seed=7)
    e_state = np.zeros(n_entities, dtype=np.float32)
    r_state = np.zeros(n_relations, dtype=np.float32)
    start, stop, chunk_index = 3, 37, 1
    term_params = tuple(RegParams(np.float32(1e-3), 3) for _ in terms)
    params = step_params(16, 6, 5, None, GAMMA, 0.05, 0.5, term_params)

    ref = Tables(entity.copy(), relation.copy(), e_state.copy(), r_state.copy())
    stub = _KernelRngStub()
    seed_kernel_rng(11)
    ref_loss, ref_ci = numpy_train_range(sf, ref, edges, order, start, stop, params, stub, chunk_index, terms)
    n_chunks = _n_chunks(start, stop, 16, 6)
    assert stub.calls == n_chunks == 7

    got = Tables(entity.copy(), relation.copy(), e_state.copy(), r_state.copy())
    seed_kernel_rng(11)
    loss, ci = train_kernel(name, terms)(got, edges, order, start, stop, params, chunk_index)
    assert ci == ref_ci == chunk_index + n_chunks
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-4)
    for label, g, w in zip(("entity", "relation", "entity_state", "relation_state"), got, ref):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4, err_msg=f"{name} {label}")
    assert not np.array_equal(got[0], entity), "training changed nothing"


@pytest.mark.parametrize("norm", [2, 3])
def test_regularizer_term_matches_reference_and_finite_differences(norm):
    """The first extra loss term: its Numba kernel against its NumPy reference, the reference's
    gradient against finite differences of its penalty, and only gathered rows touched."""
    rng = np.random.default_rng(norm)
    H, R, T, N = (rng.normal(size=(n, 6)).astype(np.float32) for n in (4, 4, 4, 3))
    p = RegParams(np.float32(0.02), norm)
    ids = np.arange(4, dtype=np.int64)
    tables = Tables(np.zeros((5, 6), np.float32), np.zeros((2, 6), np.float32), np.zeros(5, np.float32),
                    np.zeros(2, np.float32))

    def run(fn, dtype):
        g = [np.zeros_like(X, dtype=dtype) for X in (H, R, T, N)]
        out = fn(p, tables, 0.25, ids, ids, ids, ids[:3], H.astype(dtype), R.astype(dtype), T.astype(dtype),
                 N.astype(dtype), *g)
        return out, g

    sf = get_model("DistMult")
    (pen, er, eg, rr, rg), grads = run(TERMS["regularizer"].kernel(sf), np.float32)
    (pen_ref, *_), grads_ref = run(TERMS["regularizer"].reference(sf), np.float64)
    np.testing.assert_allclose(pen, pen_ref, rtol=1e-5)
    for g, w in zip(grads, grads_ref):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)
    assert er.shape == (0,) and eg.shape == (0, 6) and rr.shape == (0,) and rg.shape == (0, 6)
    assert not grads[3].any(), "negatives are not regularized"
    eps = 1e-6
    X = H.astype(np.float64)
    for i, k in [(0, 0), (2, 5), (3, 1)]:
        plus, minus = X.copy(), X.copy()
        plus[i, k] += eps
        minus[i, k] -= eps
        fd = (0.02 * (np.abs(plus) ** norm).sum() - 0.02 * (np.abs(minus) ** norm).sum()) / (2 * eps)
        np.testing.assert_allclose(grads_ref[0][i, k], fd, rtol=1e-5)


def test_regularizer_penalty_is_in_the_reported_loss():
    """With a large coefficient the reported loss grows by the penalty, scaled to loss units."""
    sf = get_model("DistMult")
    edges = planted_graph()
    order = np.arange(len(edges), dtype=np.int64)
    losses = {}
    for coef in (0.0, 0.5):
        entity, relation = sf.init_tables(24, 3, 8, GAMMA, seed=0)
        tables = Tables(entity, relation, np.zeros(24, np.float32), np.zeros(3, np.float32))
        terms, term_params = ((), ()) if coef == 0 else (("regularizer",), (RegParams(np.float32(coef), 2),))
        params = step_params(len(edges), len(edges), 8, None, GAMMA, 1e-9, 0.0, term_params)
        rows = (entity[edges[:, 0]], relation[edges[:, 1]], entity[edges[:, 2]])
        penalty = coef * sum(float((x.astype(np.float64) ** 2).sum()) for x in rows)
        seed_kernel_rng(0)
        losses[coef] = (train_kernel("DistMult", terms)(tables, edges, order, 0, len(edges), params, 0)[0],
                        penalty)
    assert losses[0.5][0] == pytest.approx(losses[0.0][0] + len(edges) * losses[0.5][1], rel=1e-4)


def planted_graph(n_entities=24, n_relations=3):
    """t = h + 2r + 1 (mod n) for every head: a learnable pattern."""
    h = np.arange(n_entities)
    return np.concatenate([np.stack([h, np.full_like(h, r), (h + 2 * r + 1) % n_entities], axis=1)
                           for r in range(n_relations)]).astype(np.int32)


def run_epochs(name, edges, n_entities, n_relations, epochs, seed, neg_cdf=EMPTY_CDF, dim=8, lr=0.1,
               tables=None):
    sf = get_model(name)
    if tables is None:
        tables = sf.init_tables(n_entities, n_relations, dim, GAMMA, seed=0)
    entity, relation = (t.copy() for t in tables)
    e_state = np.zeros(n_entities, dtype=np.float32)
    r_state = np.zeros(n_relations, dtype=np.float32)
    kernel = train_kernel(name)
    rng = np.random.default_rng(seed)
    seed_kernel_rng(seed)
    losses, chunk_index = [], 0
    params = step_params(16, 8, 8, neg_cdf, GAMMA, lr, 1.0)
    for _ in range(epochs):
        order = rng.permutation(len(edges)).astype(np.int64)
        loss, chunk_index = kernel(Tables(entity, relation, e_state, r_state), edges, order, 0, len(edges),
                                   params, chunk_index)
        assert np.isfinite(loss)
        losses.append(loss / len(edges))
    return losses, entity, relation, e_state, r_state


@pytest.mark.parametrize("name", TRAIN_MODELS)
def test_train_kernel_lowers_loss_on_planted_graph(name):
    edges = planted_graph()
    losses, *_ = run_epochs(name, edges, 24, 3, epochs=30, seed=0, lr=0.3)
    msg = f"{name}: mean loss per epoch {np.round(losses, 3)}"
    assert losses[-1] < 0.85 * losses[0], msg
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), msg


@pytest.mark.parametrize("name", TRAIN_MODELS)
def test_train_kernel_touches_only_used_rows(name):
    """With degree-proportional negatives, entities of degree 0 are never head, tail or
    negative, and relations absent from the edges are never used: their rows and
    Adagrad states must stay bit-identical."""
    sf = get_model(name)
    n_entities, n_relations = 30, 5
    edges = planted_graph(24, 3)  # entities 24..29 and relations 3, 4 unused
    tables = sf.init_tables(n_entities, n_relations, 8, GAMMA, seed=1)
    cdf = degree_cdf(edges, n_entities)
    _, entity, relation, e_state, r_state = run_epochs(name, edges, n_entities, n_relations, epochs=2,
                                                       seed=3, neg_cdf=cdf, tables=tables)
    assert np.array_equal(entity[24:], tables[0][24:])
    assert np.all(e_state[24:] == 0)
    assert np.array_equal(relation[3:], tables[1][3:])
    assert np.all(r_state[3:] == 0)
    # and the used rows did move
    assert np.all(np.any(entity[:24] != tables[0][:24], axis=1))
    assert np.all(np.any(relation[:3] != tables[1][:3], axis=1))
    assert np.all(e_state[:24] > 0) and np.all(r_state[:3] > 0)


@pytest.mark.parametrize("name", TRAIN_MODELS)
def test_train_kernel_is_deterministic_per_seed(name):
    edges = planted_graph()
    a = run_epochs(name, edges, 24, 3, epochs=2, seed=5)
    b = run_epochs(name, edges, 24, 3, epochs=2, seed=5)
    c = run_epochs(name, edges, 24, 3, epochs=2, seed=6)
    assert a[0] == b[0]
    for x, y in zip(a[1:], b[1:]):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[1], c[1])

    # same edge order, only the kernel seed differs -> different negatives -> different tables
    sf = get_model(name)
    order = np.arange(len(edges), dtype=np.int64)
    results = []
    for seed in (1, 1, 2):
        entity, relation = sf.init_tables(24, 3, 8, GAMMA, seed=0)
        es, rs = np.zeros(24, np.float32), np.zeros(3, np.float32)
        seed_kernel_rng(seed)
        loss, _ = train_kernel(name)(Tables(entity, relation, es, rs), edges, order, 0, len(edges),
                                     step_params(16, 8, 8, None, GAMMA, 0.1, 0.0), 0)
        results.append((loss, entity))
    assert results[0][0] == results[1][0] and np.array_equal(results[0][1], results[1][1])
    assert not np.array_equal(results[0][1], results[2][1])


# -- 5. negative sampling -------------------------------------------------------
def test_sample_negatives_uniform():
    n, draws = 13, 26000
    seed_kernel_rng(0)
    out = sample_negatives(n, draws, EMPTY_CDF)
    assert out.dtype == np.int64 and out.shape == (draws,)
    assert out.min() >= 0 and out.max() < n
    counts = np.bincount(out, minlength=n)
    assert np.all(counts > 0)
    expected = np.full(n, draws / n)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < scipy.stats.chi2.ppf(1 - 1e-6, n - 1), f"chi2 {chi2:.1f}, counts {counts}"
    seed_kernel_rng(0)
    assert np.array_equal(sample_negatives(n, draws, EMPTY_CDF), out)  # reproducible


def test_sample_negatives_degree_proportional():
    n = 9
    # entities 0, 4 and 7 have degree 0 (first, middle, next to last); the last one has
    # degree 1 (the top of the cdf must be reachable); degrees of the others differ
    triples = np.array([[1, 0, 2], [1, 0, 3], [2, 1, 3], [3, 0, 5], [5, 1, 6], [6, 0, 1], [1, 1, 1],
                        [8, 0, 3]], dtype=np.int32)
    cdf = degree_cdf(triples, n)
    deg = np.bincount(triples[:, 0], minlength=n) + np.bincount(triples[:, 2], minlength=n)
    assert cdf.dtype == np.float64 and cdf.shape == (n,)
    np.testing.assert_array_equal(cdf, np.cumsum(deg))
    assert deg[0] == deg[4] == deg[7] == 0 and deg[8] == 1 and deg[1] == 5  # the self-loop counts twice

    draws = 40000
    seed_kernel_rng(1)
    out = sample_negatives(n, draws, cdf)
    assert out.min() >= 0 and out.max() < n
    counts = np.bincount(out, minlength=n)
    assert counts[0] == counts[4] == counts[7] == 0, counts
    nz = deg > 0
    expected = draws * deg[nz] / deg.sum()
    chi2 = ((counts[nz] - expected) ** 2 / expected).sum()
    assert chi2 < scipy.stats.chi2.ppf(1 - 1e-6, nz.sum() - 1), f"chi2 {chi2:.1f}, counts {counts}"


def test_sample_negatives_single_supported_entity():
    """A cdf with all mass on one entity (first, middle, last) always draws it."""
    n = 6
    for e in (0, 3, n - 1):
        cdf = np.cumsum(np.eye(n)[e] * 2.5)
        seed_kernel_rng(e)
        assert np.all(sample_negatives(n, 500, cdf) == e)


# -- 6. the loss ------------------------------------------------------------------
@pytest.mark.parametrize("extreme", [0.0, 80.0, 500.0, 1000.0], ids=["moderate", "s80", "s500", "s1000"])
@pytest.mark.parametrize("adv_temp", [0.0, 1.0, 0.5, 2.0], ids=["uniform", "adv1", "adv0.5", "adv2"])
def test_chunk_loss_matches_numpy(adv_temp, extreme):
    rng = np.random.default_rng(8)
    c, k, scale = 5, 7, 0.125
    S = rng.normal(scale=3.0, size=(c, k)).astype(np.float32)
    sp = rng.normal(scale=3.0, size=c).astype(np.float32)
    if extreme:
        S[0, :] = extreme  # every negative very wrong, softmax of equal large scores
        S[1, 2] = -extreme
        S[2, 3] = extreme  # one dominating negative
        sp[0] = -extreme
        sp[3] = extreme
    dS = np.full_like(S, np.nan)
    dsp = np.full_like(sp, np.nan)
    loss = chunk_loss(S, sp, adv_temp, scale, dS, dsp)
    ref_loss, ref_dS, ref_dsp = loss_and_score_grads(S.astype(np.float64), sp.astype(np.float64), adv_temp, scale)
    assert np.isfinite(loss) and np.all(np.isfinite(dS)) and np.all(np.isfinite(dsp))
    assert np.isfinite(ref_loss)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(dS, ref_dS, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(dsp, ref_dsp, rtol=1e-5, atol=1e-9)
    assert np.all(dS >= 0) and np.all(dsp <= 0)
    if extreme:
        # per-positive loss ~ (|sp| + extreme) / 2 for a row with all negatives at +extreme
        assert loss > extreme / 2


def test_loss_score_grads_match_finite_differences():
    """dS, dsp of the NumPy loss are scale * d(loss sum)/dscore (adv weights uniform)."""
    rng = np.random.default_rng(9)
    S, sp, scale = rng.normal(size=(3, 4)) * 2, rng.normal(size=3) * 2, 0.3
    _, dS, dsp = loss_and_score_grads(S, sp, 0.0, scale)
    eps = 1e-6
    for idx in np.ndindex(S.shape):
        Sp, Sm = S.copy(), S.copy()
        Sp[idx] += eps
        Sm[idx] -= eps
        fd = (loss_and_score_grads(Sp, sp, 0.0, scale)[0] - loss_and_score_grads(Sm, sp, 0.0, scale)[0]) / (2 * eps)
        np.testing.assert_allclose(dS[idx], scale * fd, rtol=1e-6)
    for i in range(3):
        pp, pm = sp.copy(), sp.copy()
        pp[i] += eps
        pm[i] -= eps
        fd = (loss_and_score_grads(S, pp, 0.0, scale)[0] - loss_and_score_grads(S, pm, 0.0, scale)[0]) / (2 * eps)
        np.testing.assert_allclose(dsp[i], scale * fd, rtol=1e-6)


def test_rotate_cos_sin_matches_libm_for_wandering_phases():
    """RotatE's vectorized cos/sin stays accurate for phases Adagrad moved far from [-pi, pi]."""
    from kgnum.kernels.models.rotate import cos_sin

    rng = np.random.default_rng(10)
    x = np.concatenate([rng.uniform(-4, 4, 5000), rng.uniform(-300, 300, 5000),
                        np.arange(-8, 9) * np.pi / 4]).astype(np.float32)
    c, s = np.empty_like(x), np.empty_like(x)
    cos_sin(x, c, s)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(c, np.cos(x64), rtol=0, atol=3e-7)
    np.testing.assert_allclose(s, np.sin(x64), rtol=0, atol=3e-7)


# -- 7. tables and dims ---------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_init_tables_shapes_and_dtypes(name):
    sf = get_model(name)
    dim = dim_for(sf)
    entity, relation = sf.init_tables(11, 4, dim, GAMMA, seed=3)
    assert entity.shape == (11, dim) and entity.dtype == np.float32 and entity.flags.c_contiguous
    assert relation.shape == (4, sf.relation_dim(dim)) and relation.dtype == np.float32
    assert relation.flags.c_contiguous
    assert np.all(np.isfinite(entity)) and np.all(np.isfinite(relation))
    bound = (GAMMA + 2.0) / dim
    assert np.abs(entity).max() <= bound
    e2, r2 = sf.init_tables(11, 4, dim, GAMMA, seed=3)
    assert np.array_equal(entity, e2) and np.array_equal(relation, r2)
    assert get_model(name.lower()) is sf and get_model(name.upper()) is sf


@pytest.mark.parametrize("name", MODELS)
def test_check_dim(name):
    sf = get_model(name)
    for bad in (0, 1):
        with pytest.raises(ValueError, match="--dim"):
            sf.check_dim(bad)
    sf.check_dim(4)
    sf.check_dim(6)
    if sf.even_dim:
        for odd in (3, 7):
            with pytest.raises(ValueError, match="--dim"):
                sf.check_dim(odd)
            with pytest.raises(ValueError, match="--dim"):
                sf.init_tables(5, 2, odd, GAMMA, seed=0)
    else:
        sf.check_dim(7)


def test_even_dim_models():
    expected = {"complex", "rotate", "simple"}
    present = {n.lower() for n in MODELS}
    for n in expected & present:
        assert get_model(n).even_dim, n


def test_unknown_model_is_rejected():
    with pytest.raises(ValueError, match="--model"):
        get_model("NoSuchModel")
