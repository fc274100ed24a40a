"""DistMult: g(h, r, t) = sum_k h_k r_k t_k."""
import numba
import numpy as np

from ..registry import ScoreFunction, register


@numba.njit(cache=True, fastmath=True)
def query(H, R, T, predict_head):
    if predict_head:
        return R * T
    return H * R


@numba.njit(cache=True, fastmath=True)
def query_backward(gQ, H, R, T, predict_head, gH, gR, gT):
    if predict_head:
        gR += gQ * T
        gT += gQ * R
    else:
        gH += gQ * R
        gR += gQ * H


def score(h, r, t, gamma):
    return (h * r * t).sum(axis=-1)


def grad(h, r, t, gamma):
    return r * t, h * t, h * r


register(ScoreFunction("DistMult", "dot", score, grad, relation_dim=lambda d: d,
                       query=query, query_backward=query_backward))
