"""TransE: g(h, r, t) = gamma - ||h + r - t||_p with p = 1 or 2."""
import numba
import numpy as np

from ..registry import ScoreFunction, register


@numba.njit(cache=True, fastmath=True)
def query(H, R, T, predict_head):
    # |h + r - t| = |q - x| with q = h + r (tail side) or q = t - r (head side)
    if predict_head:
        return T - R
    return H + R


@numba.njit(cache=True, fastmath=True)
def query_backward(gQ, H, R, T, predict_head, gH, gR, gT):
    # flat views of the (contiguous) buffers: 1-D in-place passes vectorize, 2-D ones less so
    q = gQ.reshape(-1)
    r = gR.reshape(-1)
    if predict_head:
        t = gT.reshape(-1)
        t += q
        r -= q
    else:
        h = gH.reshape(-1)
        h += q
        r += q


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
                       query=query, query_backward=query_backward))
register(ScoreFunction("TransE_l1", "l1", score_l1, grad_l1, relation_dim=lambda d: d,
                       query=query, query_backward=query_backward))
