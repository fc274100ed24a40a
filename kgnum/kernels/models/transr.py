"""TransR: g(h, r, t) = gamma - ||M_r h + r - M_r t||_2.

Relation rows are [r (dim) | M_r (dim x dim, row-major)]. Candidates are
projected by each positive's own relation, so there is no shared query form.
The fast kernels project the candidates with one product instead:
``pair_block`` scores one positive against all the chunk's negatives (the
training step), and ``project`` / ``anchor_query`` score queries of one
relation against every entity (evaluation), both as an l2 distance in r's
space.
"""
import numba
import numpy as np

from ..score import DISTANCE_DEFAULTS, ScoreFunction, register


def _parts(r, d):
    return r[..., :d], r[..., d:].reshape(r.shape[:-1] + (d, d))


def score(h, r, t, gamma):
    d = h.shape[-1]
    vec, M = _parts(r, d)
    v = np.einsum("...ab,...b->...a", M, h - t) + vec
    return gamma - np.linalg.norm(v, axis=-1)


def grad(h, r, t, gamma):
    d = h.shape[-1]
    vec, M = _parts(r, d)
    diff = h - t
    v = np.einsum("...ab,...b->...a", M, diff) + vec
    u = -v / np.linalg.norm(v, axis=-1, keepdims=True)  # dg/dv
    gh = np.einsum("...ab,...a->...b", M, u)
    gM = u[..., :, None] * diff[..., None, :]
    shape = np.broadcast_shapes(h.shape[:-1], r.shape[:-1], t.shape[:-1])
    gr = np.concatenate([np.broadcast_to(u, shape + (d,)),
                         np.broadcast_to(gM, shape + (d, d)).reshape(shape + (d * d,))], axis=-1)
    return gh, gr, -gh


@numba.njit(cache=True, fastmath=True)
def pair_score_grad(h, r, t, gamma, weight, gh, gr, gt):
    """Score of one triple; when weight != 0 also add weight * dg/d(h, r, t) into gh, gr, gt."""
    d = h.shape[0]
    M = r[d:].reshape((d, d))
    v = np.dot(M, h - t) + r[:d]
    dist = np.sqrt(np.sum(v * v))
    if weight != 0.0 and dist > 0.0:
        u = np.float32(-weight / dist) * v
        g = np.dot(u, M)
        gh += g
        gt -= g
        gr[:d] += u
        gr[d:].reshape((d, d))[:, :] += np.outer(u, h - t)
    return gamma - dist


@numba.njit(cache=True, fastmath=True)
def project(X, r, out):
    """out (n, d) = X (n, d) @ M_r^T: rows of X in relation r's space (one BLAS product)."""
    d = X.shape[1]
    np.dot(X, r[d:].reshape((d, d)).T, out)


@numba.njit(cache=True, fastmath=True)
def anchor_query(a, r, predict_head):
    """The known side in r's space, q, so that a candidate x scores gamma - ||q - M_r x||:
    M_r h + r for (h, r, ?), M_r t - r for (?, r, t)."""
    d = a.shape[0]
    q = np.dot(r[d:].reshape((d, d)), a)
    if predict_head:
        q -= r[:d]
    else:
        q += r[:d]
    return q


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def pair_block(h, r, t, N, predict_head, gamma, ds, gh, gr, gt, gN, s):
    """One positive against every candidate row of N (k, d): s (k,) = g(h, r, n_j) when tails
    are corrupted, g(n_j, r, t) when heads are; when ds (k,) is non-empty also add the
    gradient of sum_j ds_j s_j into gh or gt (the known side), gr and gN. The same numbers as
    pair_score_grad over the k pairs, with the candidates projected by one product."""
    d = h.shape[0]
    k = N.shape[0]
    a = t if predict_head else h
    q = anchor_query(a, r, predict_head)
    PN = np.empty((k, d), dtype=np.float32)
    project(N, r, PN)
    dist = np.empty(k, dtype=np.float32)
    for j in range(k):
        pn = PN[j]
        acc = np.float32(0.0)
        for x in range(d):
            e = q[x] - pn[x]
            acc += e * e
        dist[j] = np.sqrt(acc)
        s[j] = gamma - dist[j]
    if ds.shape[0] == 0:
        return
    # s_j = gamma - ||q - p_j||: ds/dq = -(q - p_j) / dist_j, ds/dp_j = +(q - p_j) / dist_j
    w = np.empty(k, dtype=np.float32)
    total = np.float32(0.0)
    for j in range(k):
        w[j] = ds[j] / dist[j] if dist[j] > 0.0 else np.float32(0.0)
        total += w[j]
    gq = np.dot(w, PN)  # -(sum_j w_j) q + sum_j w_j p_j
    for x in range(d):
        gq[x] -= total * q[x]
    G = np.empty((k, d), dtype=np.float32)  # dL/dp_j = w_j (q - p_j)
    for j in range(k):
        pn, g, wj = PN[j], G[j], w[j]
        for x in range(d):
            g[x] = wj * (q[x] - pn[x])
    M = r[d:].reshape((d, d))
    gN += np.dot(G, M)  # p_j = M n_j
    gM = gr[d:].reshape((d, d))
    gM += np.dot(G.T, N)
    # q = M a +- v
    ga = gt if predict_head else gh
    ga += np.dot(gq, M)
    for x in range(d):
        gr[x] += -gq[x] if predict_head else gq[x]
    for x in range(d):
        row, gx = gM[x], gq[x]
        for y in range(d):
            row[y] += gx * a[y]


def init_relation(rng, n_relations, dim, bound):
    vec = rng.uniform(-bound, bound, (n_relations, dim))
    # start from identity projections so early training behaves like TransE
    eye = np.broadcast_to(np.eye(dim).reshape(1, dim * dim), (n_relations, dim * dim))
    return np.concatenate([vec, eye], axis=1)


register(ScoreFunction("TransR", "pair", score, grad, relation_dim=lambda d: d + d * d,
                       pair_score_grad=pair_score_grad, pair_block=pair_block, pair_project=project,
                       pair_query=anchor_query, init_relation=init_relation,
                       # relation rows hold a dim x dim projection: dim 100 for the same reason as RESCAL
                       defaults={**DISTANCE_DEFAULTS, "dim": 100, "lr": 0.1}))
