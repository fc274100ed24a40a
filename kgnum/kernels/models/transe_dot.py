"""TransE_dot: g(h, r, t) = <h + r, t>, TransE's translation scored by a dot product.

Tail side: q = h + r against candidate tails, a plain dot. Head side:
<n, t> + <r, t>, a dot against candidate heads plus <r, t>, which depends on
the query alone; the query row carries it as the ``dot_offset`` metric's
extra column, q = [t | <r, t>] (the tail side's offset column is 0). The
loss and the self-adversarial weights see the offset like any score.
"""
import numba
import numpy as np

from ..score import BILINEAR_DEFAULTS, ScoreFunction, register


@numba.njit(cache=True, fastmath=True)
def query(H, R, T, predict_head):
    c, d = H.shape
    Q = np.empty((c, d + 1), dtype=H.dtype)
    for i in range(c):
        q, r = Q[i], R[i]
        if predict_head:
            t = T[i]
            acc = np.float32(0.0)
            for k in range(d):
                q[k] = t[k]
                acc += r[k] * t[k]
            q[d] = acc
        else:
            h = H[i]
            for k in range(d):
                q[k] = h[k] + r[k]
            q[d] = 0.0
    return Q


@numba.njit(cache=True, fastmath=True)
def query_backward(gQ, H, R, T, predict_head, gH, gR, gT):
    d = H.shape[1]
    for i in range(gQ.shape[0]):
        gq, gr = gQ[i], gR[i]
        if predict_head:  # q = [t | <r, t>]
            go, r, t, gt = gq[d], R[i], T[i], gT[i]
            for k in range(d):
                gt[k] += gq[k] + go * r[k]
                gr[k] += go * t[k]
        else:  # q = [h + r | 0]
            gh = gH[i]
            for k in range(d):
                gh[k] += gq[k]
                gr[k] += gq[k]


def array_query(xp, H, R, T, predict_head):
    if predict_head:
        return xp.concatenate([T, (R * T).sum(-1, keepdims=True)], axis=-1)
    Q = H + R
    return xp.concatenate([Q, xp.zeros_like(Q[..., :1])], axis=-1)


def array_query_backward(xp, gQ, H, R, T, predict_head):
    g, go = gQ[..., :-1], gQ[..., -1:]
    return (None, go * T, g + go * R) if predict_head else (g, g, None)


def score(h, r, t, gamma):
    return ((h + r) * t).sum(axis=-1)


def grad(h, r, t, gamma):
    return t, t.copy(), h + r


register(ScoreFunction("TransE_dot", "dot_offset", score, grad, relation_dim=lambda d: d,
                       query=query, query_backward=query_backward,
                       array_query=array_query, array_query_backward=array_query_backward,
                       defaults=BILINEAR_DEFAULTS))
