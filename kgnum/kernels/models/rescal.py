"""RESCAL: g(h, r, t) = h^T M_r t with a dense dim x dim matrix per relation."""
import numba
import numpy as np

from ..score import BILINEAR_DEFAULTS, ScoreFunction, register


def _mat(r, d):
    return r.reshape(r.shape[:-1] + (d, d))


def score(h, r, t, gamma):
    d = h.shape[-1]
    return np.einsum("...a,...ab,...b->...", h, _mat(r, d), t)


def grad(h, r, t, gamma):
    d = h.shape[-1]
    M = _mat(r, d)
    gh = np.einsum("...ab,...b->...a", M, t)
    gt = np.einsum("...a,...ab->...b", h, M)
    gr = (h[..., :, None] * t[..., None, :]).reshape(np.broadcast_shapes(h.shape, t.shape)[:-1] + (d * d,))
    return gh, gr, gt


@numba.njit(cache=True, fastmath=True)
def query(H, R, T, predict_head):
    n, d = H.shape
    Q = np.empty_like(H)
    for i in range(n):
        M = R[i].reshape((d, d))
        if predict_head:
            Q[i] = np.dot(M, T[i])
        else:
            Q[i] = np.dot(H[i], M)
    return Q


@numba.njit(cache=True, fastmath=True)
def query_backward(gQ, H, R, T, predict_head, gH, gR, gT):
    n, d = H.shape
    for i in range(n):
        M = R[i].reshape((d, d))
        gM = gR[i].reshape((d, d))
        if predict_head:
            gT[i] += np.dot(gQ[i], M)
            gM += np.outer(gQ[i], T[i])
        else:
            gH[i] += np.dot(M, gQ[i])
            gM += np.outer(H[i], gQ[i])


def array_query(xp, H, R, T, predict_head):
    d = H.shape[-1]
    M = R.reshape(R.shape[:-1] + (d, d))
    if predict_head:  # q = M t, paired with h
        return xp.matmul(M, T[..., :, None])[..., 0]
    return xp.matmul(H[..., None, :], M)[..., 0, :]  # q = h^T M, paired with t


def array_query_backward(xp, gQ, H, R, T, predict_head):
    d = H.shape[-1]
    M = R.reshape(R.shape[:-1] + (d, d))
    if predict_head:
        gM = gQ[..., :, None] * T[..., None, :]
        return None, gM.reshape(R.shape), xp.matmul(gQ[..., None, :], M)[..., 0, :]
    gM = H[..., :, None] * gQ[..., None, :]
    return xp.matmul(M, gQ[..., :, None])[..., 0], gM.reshape(R.shape), None


register(ScoreFunction("RESCAL", "dot", score, grad, relation_dim=lambda d: d * d,
                       query=query, query_backward=query_backward,
                       array_query=array_query, array_query_backward=array_query_backward,
                       # a dim x dim matrix per relation: the gradient of a chunk's relation rows is
                       # chunk x dim^2 floats (128 MB at dim 400, 1,000 triples/s); dim 100 keeps it cache-sized
                       # and a much smaller initial scale than the other bilinear models: gamma 143 at
                       # dim 100 saturates h^T M t (UMLS 0.67 -> 0.88, bench/RESULTS.md "Defaults")
                       defaults={**BILINEAR_DEFAULTS, "dim": 100, "gamma": 12.0}))
