"""Metrics between query rows and candidate entity rows, with their gradients.

Each metric provides four Numba functions with the same signatures:

* ``scores(Q, N, gamma, S)``: S[i, j] = metric(Q[i], N[j]) for a chunk of
  queries Q (c, d) against shared candidates N (k, d); S is (c, k) float32.
* ``backward(Q, N, S, dS, gamma, gQ, gN)``: *writes* gQ (c, d) and gN (k, d)
  with the gradient of sum(dS * S).
* ``pos_scores(Q, X, gamma, s)``: s[i] = metric(Q[i], X[i]) (row-wise pairs).
* ``pos_backward(Q, X, s, ds, gamma, gQ, gX)``: *adds* the gradient of
  sum(ds * s) into gQ and gX.

``dot`` and ``l2`` run their (c x d) @ (d x k) products through BLAS; ``l1``
and ``cmod`` have no product form and use loops the compiler vectorizes.
"""
import numba
import numpy as np

_EPS = 1e-12


# -- dot: q . x -----------------------------------------------------------
@numba.njit(cache=True, fastmath=True)
def dot_scores(Q, N, gamma, S):
    np.dot(Q, N.T, S)


@numba.njit(cache=True, fastmath=True)
def dot_backward(Q, N, S, dS, gamma, gQ, gN):
    np.dot(dS, N, gQ)
    np.dot(dS.T, Q, gN)


@numba.njit(cache=True, fastmath=True)
def dot_pos_scores(Q, X, gamma, s):
    for i in range(Q.shape[0]):
        acc = 0.0
        for k in range(Q.shape[1]):
            acc += Q[i, k] * X[i, k]
        s[i] = acc


@numba.njit(cache=True, fastmath=True)
def dot_pos_backward(Q, X, s, ds, gamma, gQ, gX):
    for i in range(Q.shape[0]):
        w = ds[i]
        for k in range(Q.shape[1]):
            gQ[i, k] += w * X[i, k]
            gX[i, k] += w * Q[i, k]


# -- l2: gamma - ||q - x||_2 --------------------------------------------------
@numba.njit(cache=True, fastmath=True)
def _row_sq_norms(A):
    out = np.empty(A.shape[0], dtype=np.float32)
    for i in range(A.shape[0]):
        acc = np.float32(0.0)
        for k in range(A.shape[1]):
            acc += A[i, k] * A[i, k]
        out[i] = acc
    return out


@numba.njit(cache=True, fastmath=True)
def l2_scores(Q, N, gamma, S):
    # ||q - n||^2 = ||q||^2 + ||n||^2 - 2 q.n : one product plus norms
    np.dot(Q, N.T, S)
    qq = _row_sq_norms(Q)
    nn = _row_sq_norms(N)
    for i in range(S.shape[0]):
        for j in range(S.shape[1]):
            S[i, j] = gamma - np.sqrt(max(qq[i] + nn[j] - 2.0 * S[i, j], 0.0))


@numba.njit(cache=True, fastmath=True)
def l2_backward(Q, N, S, dS, gamma, gQ, gN):
    # dS/dq = -(q - n)/dist; with C = dS / dist: gQ = C @ N - rowsum(C) q,
    # gN = C^T @ Q - colsum(C) n
    c, k = S.shape
    C = np.empty_like(dS)
    row = np.zeros(c, dtype=np.float32)
    col = np.zeros(k, dtype=np.float32)
    g = np.float32(gamma)
    eps = np.float32(_EPS)
    for i in range(c):
        acc = np.float32(0.0)
        for j in range(k):
            dist = g - S[i, j]
            w = dS[i, j] / dist if dist > eps else np.float32(0.0)
            C[i, j] = w
            acc += w
            col[j] += w
        row[i] = acc
    np.dot(C, N, gQ)
    np.dot(C.T, Q, gN)
    for i in range(c):
        gQ[i] -= row[i] * Q[i]
    for j in range(k):
        gN[j] -= col[j] * N[j]


@numba.njit(cache=True, fastmath=True)
def l2_pos_scores(Q, X, gamma, s):
    for i in range(Q.shape[0]):
        acc = 0.0
        for k in range(Q.shape[1]):
            diff = Q[i, k] - X[i, k]
            acc += diff * diff
        s[i] = gamma - np.sqrt(acc)


@numba.njit(cache=True, fastmath=True)
def l2_pos_backward(Q, X, s, ds, gamma, gQ, gX):
    for i in range(Q.shape[0]):
        dist = gamma - s[i]
        if dist <= _EPS:
            continue
        w = ds[i] / dist
        for k in range(Q.shape[1]):
            g = w * (Q[i, k] - X[i, k])
            gQ[i, k] -= g
            gX[i, k] += g


# -- l1: gamma - ||q - x||_1 --------------------------------------------------
@numba.njit(cache=True, fastmath=True)
def l1_scores(Q, N, gamma, S):
    for i in range(Q.shape[0]):
        for j in range(N.shape[0]):
            acc = np.float32(0.0)
            for k in range(Q.shape[1]):
                acc += abs(Q[i, k] - N[j, k])
            S[i, j] = gamma - acc


@numba.njit(cache=True, fastmath=True)
def l1_backward(Q, N, S, dS, gamma, gQ, gN):
    gQ[:] = 0.0
    gN[:] = 0.0
    for i in range(Q.shape[0]):
        for j in range(N.shape[0]):
            w = dS[i, j]
            if w == 0.0:
                continue
            for k in range(Q.shape[1]):
                diff = Q[i, k] - N[j, k]
                g = w if diff > 0 else (-w if diff < 0 else np.float32(0.0))
                gQ[i, k] -= g
                gN[j, k] += g


@numba.njit(cache=True, fastmath=True)
def l1_pos_scores(Q, X, gamma, s):
    for i in range(Q.shape[0]):
        acc = 0.0
        for k in range(Q.shape[1]):
            acc += abs(Q[i, k] - X[i, k])
        s[i] = gamma - acc


@numba.njit(cache=True, fastmath=True)
def l1_pos_backward(Q, X, s, ds, gamma, gQ, gX):
    for i in range(Q.shape[0]):
        w = ds[i]
        for k in range(Q.shape[1]):
            diff = Q[i, k] - X[i, k]
            g = w if diff > 0 else (-w if diff < 0 else 0.0)
            gQ[i, k] -= g
            gX[i, k] += g


# -- cmod: gamma - sum_k |q_k - x_k| over complex pairs [re | im] --------------
@numba.njit(cache=True, fastmath=True)
def cmod_scores(Q, N, gamma, S):
    half = Q.shape[1] // 2
    for i in range(Q.shape[0]):
        for j in range(N.shape[0]):
            acc = np.float32(0.0)
            for k in range(half):
                dr = Q[i, k] - N[j, k]
                di = Q[i, half + k] - N[j, half + k]
                acc += np.sqrt(dr * dr + di * di)
            S[i, j] = gamma - acc


@numba.njit(cache=True, fastmath=True)
def cmod_backward(Q, N, S, dS, gamma, gQ, gN):
    half = Q.shape[1] // 2
    gQ[:] = 0.0
    gN[:] = 0.0
    for i in range(Q.shape[0]):
        for j in range(N.shape[0]):
            w = dS[i, j]
            if w == 0.0:
                continue
            for k in range(half):
                dr = Q[i, k] - N[j, k]
                di = Q[i, half + k] - N[j, half + k]
                m2 = dr * dr + di * di
                inv = w / np.sqrt(m2) if m2 > 1e-24 else np.float32(0.0)
                gQ[i, k] -= inv * dr
                gQ[i, half + k] -= inv * di
                gN[j, k] += inv * dr
                gN[j, half + k] += inv * di


@numba.njit(cache=True, fastmath=True)
def cmod_pos_scores(Q, X, gamma, s):
    half = Q.shape[1] // 2
    for i in range(Q.shape[0]):
        acc = 0.0
        for k in range(half):
            dr = Q[i, k] - X[i, k]
            di = Q[i, half + k] - X[i, half + k]
            acc += np.sqrt(dr * dr + di * di)
        s[i] = gamma - acc


@numba.njit(cache=True, fastmath=True)
def cmod_pos_backward(Q, X, s, ds, gamma, gQ, gX):
    half = Q.shape[1] // 2
    for i in range(Q.shape[0]):
        w = ds[i]
        for k in range(half):
            dr = Q[i, k] - X[i, k]
            di = Q[i, half + k] - X[i, half + k]
            m2 = dr * dr + di * di
            inv = w / np.sqrt(m2) if m2 > 1e-24 else 0.0
            gQ[i, k] -= inv * dr
            gQ[i, half + k] -= inv * di
            gX[i, k] += inv * dr
            gX[i, half + k] += inv * di


METRIC_KERNELS = {
    "dot": (dot_scores, dot_backward, dot_pos_scores, dot_pos_backward),
    "l2": (l2_scores, l2_backward, l2_pos_scores, l2_pos_backward),
    "l1": (l1_scores, l1_backward, l1_pos_scores, l1_pos_backward),
    "cmod": (cmod_scores, cmod_backward, cmod_pos_scores, cmod_pos_backward),
}
