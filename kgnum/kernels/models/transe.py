"""TransE: g(h, r, t) = gamma - ||h + r - t||_p with p = 1 or 2."""
import numba
import numpy as np

from ..score import DISTANCE_DEFAULTS, ScoreFunction, register


def array_query(xp, H, R, T, predict_head):
    # |h + r - t| = |q - x| with q = h + r (tail side) or q = t - r (head side)
    return T - R if predict_head else H + R


def array_query_backward(xp, gQ, H, R, T, predict_head):
    return (None, -gQ, gQ) if predict_head else (gQ, gQ, None)


@numba.njit(cache=True, fastmath=True)
def query(H, R, T, predict_head):
    Q = np.empty_like(H)
    q, r = Q.reshape(-1), R.reshape(-1)
    x = T.reshape(-1) if predict_head else H.reshape(-1)
    sign = np.float32(-1.0) if predict_head else np.float32(1.0)
    for m in range(q.shape[0]):
        q[m] = x[m] + sign * r[m]
    return Q


@numba.njit(cache=True, fastmath=True)
def query_backward(gQ, H, R, T, predict_head, gH, gR, gT):
    # one flat 1-D loop over the (contiguous) buffers for either side: the
    # in-place array expressions (h += q) ran 5x slower on the tail side
    q, gr = gQ.reshape(-1), gR.reshape(-1)
    gx = gT.reshape(-1) if predict_head else gH.reshape(-1)
    sign = np.float32(-1.0) if predict_head else np.float32(1.0)
    for m in range(q.shape[0]):
        gx[m] += q[m]
        gr[m] += sign * q[m]


def score_l2(h, r, t, gamma):
    return gamma - np.linalg.norm(h + r - t, axis=-1)


def grad_l2(h, r, t, gamma):
    diff = h + r - t
    unit = diff / np.linalg.norm(diff, axis=-1, keepdims=True)
    return -unit, -unit, unit


def score_l1(h, r, t, gamma):
    return gamma - np.abs(h + r - t).sum(axis=-1)


def grad_l1(h, r, t, gamma):
    sign = np.sign(h + r - t)
    return -sign, -sign, sign


register(ScoreFunction("TransE_l2", "l2", score_l2, grad_l2, relation_dim=lambda d: d,
                       query=query, query_backward=query_backward,
                       array_query=array_query, array_query_backward=array_query_backward,
                       defaults=DISTANCE_DEFAULTS))
register(ScoreFunction("TransE_l1", "l1", score_l1, grad_l1, relation_dim=lambda d: d,
                       query=query, query_backward=query_backward,
                       array_query=array_query, array_query_backward=array_query_backward,
                       defaults={**DISTANCE_DEFAULTS, "lr": 0.05, "gamma": 12.0}))  # the l1 sweep: UMLS, Nations, synthetic
