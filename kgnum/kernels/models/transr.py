"""TransR: g(h, r, t) = gamma - ||M_r h + r - M_r t||_2.

Relation rows are [r (dim) | M_r (dim x dim, row-major)]. Candidates are
projected by each positive's own relation, so there is no shared query form:
the fast kernel evaluates every (positive, negative) pair.
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


def init_relation(rng, n_relations, dim, bound):
    vec = rng.uniform(-bound, bound, (n_relations, dim))
    # start from identity projections so early training behaves like TransE
    eye = np.broadcast_to(np.eye(dim).reshape(1, dim * dim), (n_relations, dim * dim))
    return np.concatenate([vec, eye], axis=1)


register(ScoreFunction("TransR", "pair", score, grad, relation_dim=lambda d: d + d * d,
                       pair_score_grad=pair_score_grad, init_relation=init_relation,
                       # relation rows hold a dim x dim projection: dim 100 for the same reason as RESCAL
                       defaults={**DISTANCE_DEFAULTS, "dim": 100, "lr": 0.1}))
