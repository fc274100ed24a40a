"""DistMult: g(h, r, t) = sum_k h_k r_k t_k."""
import numba
import numpy as np

from ..score import BILINEAR_DEFAULTS, ScoreFunction, register


@numba.njit(cache=True, fastmath=True)
def query(H, R, T, predict_head):
    if predict_head:
        return R * T
    return H * R


def array_query(xp, H, R, T, predict_head):
    return R * T if predict_head else H * R


def array_query_backward(xp, gQ, H, R, T, predict_head):
    return (None, gQ * T, gQ * R) if predict_head else (gQ * R, gQ * H, None)


@numba.njit(cache=True, fastmath=True)
def query_backward(gQ, H, R, T, predict_head, gH, gR, gT):
    # flat 1-D passes over the (contiguous) buffers, one output each: these
    # vectorize, the 2-D in-place expressions ran about 6x slower
    q, r = gQ.reshape(-1), R.reshape(-1)
    x, gx = (T.reshape(-1), gT.reshape(-1)) if predict_head else (H.reshape(-1), gH.reshape(-1))
    gr = gR.reshape(-1)
    for m in range(q.shape[0]):
        gx[m] += q[m] * r[m]
    for m in range(q.shape[0]):
        gr[m] += q[m] * x[m]


def score(h, r, t, gamma):
    return (h * r * t).sum(axis=-1)


def grad(h, r, t, gamma):
    return r * t, h * t, h * r


register(ScoreFunction("DistMult", "dot", score, grad, relation_dim=lambda d: d,
                       query=query, query_backward=query_backward,
                       array_query=array_query, array_query_backward=array_query_backward,
                       defaults=BILINEAR_DEFAULTS))
