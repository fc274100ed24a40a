"""Metrics between query rows and candidate entity rows, with their gradients.

Each metric provides four Numba functions with the same signatures:

* ``scores(Q, N, gamma, S)``: S[i, j] = metric(Q[i], N[j]) for a chunk of
  queries Q (c, d) against shared candidates N (k, d); S is (c, k) float32.
* ``backward(Q, N, S, dS, gamma, gQ, gN)``: *writes* gQ (c, d) and gN (k, d)
  with the gradient of sum(dS * S).
* ``pos_scores(Q, X, gamma, s)``: s[i] = metric(Q[i], X[i]) (row-wise pairs).
* ``pos_backward(Q, X, s, ds, gamma, gQ, gX)``: *adds* the gradient of
  sum(ds * s) into gQ and gX.

and ``CANDIDATE_FORMS[metric]``: a few fixed query rows against candidates, with the
candidates' gradient alone and every array made by the caller (the debiasing term's blocks;
see there).

``dot_offset`` is ``dot`` with a per-query additive offset: its query rows
are one column wider than the candidates, [q | o] (c, d + 1), and score
q . x + o (a model whose score against candidates is a dot product plus a
term that depends on the query alone, such as TransE_dot's head side).
The offset's gradient is the row sum of dS, written into gQ's last column.

``dot``, ``dot_offset`` and ``l2`` run their (c x d) @ (d x k) products
through BLAS; ``l1`` and ``cmod`` have no product form and use loops the
compiler vectorizes.
``TILED`` names the latter: their ``scores`` release the GIL, so scoring
queries against every entity can split the query rows over threads
(``Embeddings.score_candidates``), as BLAS does for the others.
Inner loops run over 1-D row views (``q = Q[i]``): Numba vectorizes those
several times better than 2-D indexing ``Q[i, k]``.
"""
from typing import NamedTuple

import numba
import numpy as np

_EPS = 1e-12
# Tiled scoring loops take the candidates in blocks of _TILE rows (100 KB at
# dim 400) that stay in cache while every query passes over them: scoring
# against all entities in evaluation is then bound by arithmetic, not by
# streaming the entity table once per query.
_TILE = 64
TILED = ("l1", "cmod")


# -- dot: q . x -----------------------------------------------------------
@numba.njit(cache=True, fastmath=True)
def dot_scores(Q, N, gamma, S):
    np.dot(Q, N.T, S)


@numba.njit(cache=True, fastmath=True)
def dot_candidate_backward(Q, N, S, dS, gamma, gN):
    np.dot(dS.T, Q, gN)


@numba.njit(cache=True, fastmath=True)
def dot_backward(Q, N, S, dS, gamma, gQ, gN):
    np.dot(dS, N, gQ)
    dot_candidate_backward(Q, N, S, dS, gamma, gN)


@numba.njit(cache=True, fastmath=True)
def dot_pos_scores(Q, X, gamma, s):
    for i in range(Q.shape[0]):
        q, x = Q[i], X[i]
        acc = np.float32(0.0)
        for k in range(q.shape[0]):
            acc += q[k] * x[k]
        s[i] = acc


@numba.njit(cache=True, fastmath=True)
def dot_pos_backward(Q, X, s, ds, gamma, gQ, gX):
    for i in range(Q.shape[0]):
        w = ds[i]
        q, x, gq, gx = Q[i], X[i], gQ[i], gX[i]
        for k in range(q.shape[0]):
            gq[k] += w * x[k]
            gx[k] += w * q[k]


# -- dot_offset: q . x + o, query rows [q | o] of width d + 1 --------------------
@numba.njit(cache=True, fastmath=True)
def dot_offset_scores(Q, N, gamma, S):
    d = N.shape[1]
    np.dot(np.ascontiguousarray(Q[:, :d]), N.T, S)
    for i in range(S.shape[0]):
        o = Q[i, d]
        row = S[i]
        for j in range(row.shape[0]):
            row[j] += o


@numba.njit(cache=True, fastmath=True)
def dot_offset_backward(Q, N, S, dS, gamma, gQ, gN):
    c, d = Q.shape[0], N.shape[1]
    G = np.empty((c, d), dtype=gQ.dtype)
    np.dot(dS, N, G)
    for i in range(c):
        gq, g, ds = gQ[i], G[i], dS[i]
        acc = np.float32(0.0)
        for j in range(ds.shape[0]):
            acc += ds[j]
        for k in range(d):
            gq[k] = g[k]
        gq[d] = acc
    dot_offset_candidate_backward(Q, N, S, dS, gamma, gN)


@numba.njit(cache=True, fastmath=True)
def dot_offset_candidate_backward(Q, N, S, dS, gamma, gN):
    np.dot(dS.T, np.ascontiguousarray(Q[:, :N.shape[1]]), gN)  # the offset column does not reach the candidates


@numba.njit(cache=True, fastmath=True)
def dot_offset_pos_scores(Q, X, gamma, s):
    d = X.shape[1]
    for i in range(Q.shape[0]):
        q, x = Q[i], X[i]
        acc = np.float32(0.0)
        for k in range(d):
            acc += q[k] * x[k]
        s[i] = acc + q[d]


@numba.njit(cache=True, fastmath=True)
def dot_offset_pos_backward(Q, X, s, ds, gamma, gQ, gX):
    d = X.shape[1]
    for i in range(Q.shape[0]):
        w = ds[i]
        q, x, gq, gx = Q[i], X[i], gQ[i], gX[i]
        for k in range(d):
            gq[k] += w * x[k]
            gx[k] += w * q[k]
        gq[d] += w


# -- l2: gamma - ||q - x||_2 --------------------------------------------------
@numba.njit(cache=True, fastmath=True)
def _row_sq_norms(A):
    out = np.empty(A.shape[0], dtype=np.float32)
    for i in range(A.shape[0]):
        a = A[i]
        acc = np.float32(0.0)
        for k in range(a.shape[0]):
            acc += a[k] * a[k]
        out[i] = acc
    return out


@numba.njit(cache=True, fastmath=True)
def l2_scores(Q, N, gamma, S):
    # ||q - n||^2 = ||q||^2 + ||n||^2 - 2 q.n : one product plus norms
    np.dot(Q, N.T, S)
    qq = _row_sq_norms(Q)
    nn = _row_sq_norms(N)
    g = np.float32(gamma)
    zero = np.float32(0.0)
    for i in range(S.shape[0]):
        row = S[i]
        for j in range(row.shape[0]):
            row[j] = g - np.sqrt(max(qq[i] + nn[j] - np.float32(2.0) * row[j], zero))


@numba.njit(cache=True, fastmath=True)
def _l2_weights(S, dS, gamma):
    # dS/dq = -(q - n)/dist; with C = dS / dist: gQ = C @ N - rowsum(C) q,
    # gN = C^T @ Q - colsum(C) n
    c, k = S.shape
    C = np.empty_like(dS)
    row_sum = np.empty(c, dtype=np.float32)
    col_sum = np.zeros(k, dtype=np.float32)
    g = np.float32(gamma)
    eps = np.float32(_EPS)
    zero = np.float32(0.0)
    for i in range(c):
        s, ds, cw = S[i], dS[i], C[i]
        acc = zero
        for j in range(k):
            dist = g - s[j]
            w = ds[j] / max(dist, eps) if dist > eps else zero
            cw[j] = w
            acc += w
            col_sum[j] += w
        row_sum[i] = acc
    return C, row_sum, col_sum


@numba.njit(cache=True, fastmath=True)
def _l2_candidate_half(Q, N, C, col_sum, gN):
    np.dot(C.T, Q, gN)
    for j in range(N.shape[0]):
        gn, n, w = gN[j], N[j], col_sum[j]
        for d in range(gn.shape[0]):
            gn[d] -= w * n[d]


@numba.njit(cache=True, fastmath=True)
def l2_backward(Q, N, S, dS, gamma, gQ, gN):
    C, row_sum, col_sum = _l2_weights(S, dS, gamma)
    np.dot(C, N, gQ)
    for i in range(Q.shape[0]):
        gq, q, w = gQ[i], Q[i], row_sum[i]
        for d in range(gq.shape[0]):
            gq[d] -= w * q[d]
    _l2_candidate_half(Q, N, C, col_sum, gN)


@numba.njit(cache=True, fastmath=True)
def l2_pos_scores(Q, X, gamma, s):
    for i in range(Q.shape[0]):
        q, x = Q[i], X[i]
        acc = np.float32(0.0)
        for k in range(q.shape[0]):
            diff = q[k] - x[k]
            acc += diff * diff
        s[i] = gamma - np.sqrt(acc)


@numba.njit(cache=True, fastmath=True)
def l2_pos_backward(Q, X, s, ds, gamma, gQ, gX):
    for i in range(Q.shape[0]):
        dist = gamma - s[i]
        if dist <= _EPS:
            continue
        w = np.float32(ds[i] / dist)
        q, x, gq, gx = Q[i], X[i], gQ[i], gX[i]
        for k in range(q.shape[0]):
            g = w * (q[k] - x[k])
            gq[k] -= g
            gx[k] += g


# -- l1: gamma - ||q - x||_1 --------------------------------------------------
@numba.njit(cache=True, fastmath=True, nogil=True)
def l1_scores(Q, N, gamma, S):
    g = np.float32(gamma)
    for j0 in range(0, N.shape[0], _TILE):
        for i in range(Q.shape[0]):
            q = Q[i]
            for j in range(j0, min(j0 + _TILE, N.shape[0])):
                n = N[j]
                acc = np.float32(0.0)
                for k in range(q.shape[0]):
                    acc += abs(q[k] - n[k])
                S[i, j] = g - acc


@numba.njit(cache=True, fastmath=True)
def l1_backward(Q, N, S, dS, gamma, gQ, gN):
    gN[:] = 0.0
    zero = np.float32(0.0)
    for i in range(Q.shape[0]):
        q, gq = Q[i], gQ[i]
        gq[:] = 0.0
        for j in range(N.shape[0]):
            w = dS[i, j]
            n, gn = N[j], gN[j]
            for k in range(q.shape[0]):
                diff = q[k] - n[k]
                g = w if diff > zero else (-w if diff < zero else zero)
                gq[k] -= g
                gn[k] += g


@numba.njit(cache=True, fastmath=True)
def l1_pos_scores(Q, X, gamma, s):
    for i in range(Q.shape[0]):
        q, x = Q[i], X[i]
        acc = np.float32(0.0)
        for k in range(q.shape[0]):
            acc += abs(q[k] - x[k])
        s[i] = gamma - acc


@numba.njit(cache=True, fastmath=True)
def l1_pos_backward(Q, X, s, ds, gamma, gQ, gX):
    zero = np.float32(0.0)
    for i in range(Q.shape[0]):
        w = np.float32(ds[i])
        q, x, gq, gx = Q[i], X[i], gQ[i], gX[i]
        for k in range(q.shape[0]):
            diff = q[k] - x[k]
            g = w if diff > zero else (-w if diff < zero else zero)
            gq[k] -= g
            gx[k] += g


# -- cmod: gamma - sum_k |q_k - x_k| over complex pairs [re | im] --------------
@numba.njit(cache=True, fastmath=True, inline="always")
def _sqrt(x):
    # sqrt(x) as x * (1 / sqrt(x)): the compiler turns the reciprocal square root
    # into a hardware estimate plus one Newton step (relative error ~2e-7); the
    # training-shape scoring loop ran ~8% faster than with the exact vector sqrt
    x = max(x, np.float32(1e-30))
    return x * (np.float32(1.0) / np.sqrt(x))


@numba.njit(cache=True, fastmath=True, nogil=True)
def cmod_scores(Q, N, gamma, S):
    half = Q.shape[1] // 2
    g = np.float32(gamma)
    for j0 in range(0, N.shape[0], _TILE):
        for i in range(Q.shape[0]):
            q_re, q_im = Q[i, :half], Q[i, half:]
            for j in range(j0, min(j0 + _TILE, N.shape[0])):
                n_re, n_im = N[j, :half], N[j, half:]
                acc = np.float32(0.0)
                for k in range(half):
                    dr = q_re[k] - n_re[k]
                    di = q_im[k] - n_im[k]
                    acc += _sqrt(dr * dr + di * di)
                S[i, j] = g - acc


@numba.njit(cache=True, fastmath=True)
def cmod_backward(Q, N, S, dS, gamma, gQ, gN):
    # Per (query, negative) pair: the unit vectors w (q - n) / |q - n| into a
    # small buffer, then plain adds (each loop vectorizes; the fused loop did
    # not). Queries go two at a time, so each negative's row and gradient row
    # are loaded and stored once per two pairs.
    c, half = Q.shape[0], Q.shape[1] // 2
    tiny = np.float32(1e-30)
    u1 = np.empty(2 * half, dtype=np.float32)
    u2 = np.empty(2 * half, dtype=np.float32)
    gN[:] = 0.0
    gQ[:] = 0.0
    for i in range(0, c - 1, 2):
        a_re, a_im, ga = Q[i, :half], Q[i, half:], gQ[i]
        b_re, b_im, gb = Q[i + 1, :half], Q[i + 1, half:], gQ[i + 1]
        for j in range(N.shape[0]):
            w1, w2 = dS[i, j], dS[i + 1, j]
            n_re, n_im, gn = N[j, :half], N[j, half:], gN[j]
            for k in range(half):
                nr, ni = n_re[k], n_im[k]
                dr, di = a_re[k] - nr, a_im[k] - ni
                inv = w1 / np.sqrt(max(dr * dr + di * di, tiny))
                u1[k] = inv * dr
                u1[half + k] = inv * di
                dr, di = b_re[k] - nr, b_im[k] - ni
                inv = w2 / np.sqrt(max(dr * dr + di * di, tiny))
                u2[k] = inv * dr
                u2[half + k] = inv * di
            for k in range(2 * half):
                ga[k] -= u1[k]
                gb[k] -= u2[k]
                gn[k] += u1[k] + u2[k]
    if c % 2 == 1:
        i = c - 1
        q_re, q_im, gq = Q[i, :half], Q[i, half:], gQ[i]
        for j in range(N.shape[0]):
            w = dS[i, j]
            n_re, n_im, gn = N[j, :half], N[j, half:], gN[j]
            for k in range(half):
                dr, di = q_re[k] - n_re[k], q_im[k] - n_im[k]
                inv = w / np.sqrt(max(dr * dr + di * di, tiny))
                u1[k] = inv * dr
                u1[half + k] = inv * di
            for k in range(2 * half):
                gq[k] -= u1[k]
                gn[k] += u1[k]


@numba.njit(cache=True, fastmath=True)
def cmod_pos_scores(Q, X, gamma, s):
    half = Q.shape[1] // 2
    for i in range(Q.shape[0]):
        q_re, q_im, x_re, x_im = Q[i, :half], Q[i, half:], X[i, :half], X[i, half:]
        acc = np.float32(0.0)
        for k in range(half):
            dr = q_re[k] - x_re[k]
            di = q_im[k] - x_im[k]
            acc += _sqrt(dr * dr + di * di)
        s[i] = gamma - acc


@numba.njit(cache=True, fastmath=True)
def cmod_pos_backward(Q, X, s, ds, gamma, gQ, gX):
    half = Q.shape[1] // 2
    tiny = np.float32(1e-30)
    for i in range(Q.shape[0]):
        w = np.float32(ds[i])
        q, x, gq, gx = Q[i], X[i], gQ[i], gX[i]
        for k in range(half):
            dr = q[k] - x[k]
            di = q[half + k] - x[half + k]
            inv = w / np.sqrt(max(dr * dr + di * di, tiny))
            gq[k] -= inv * dr
            gq[half + k] -= inv * di
            gx[k] += inv * dr
            gx[half + k] += inv * di


METRIC_KERNELS = {
    "dot": (dot_scores, dot_backward, dot_pos_scores, dot_pos_backward),
    "dot_offset": (dot_offset_scores, dot_offset_backward, dot_offset_pos_scores, dot_offset_pos_backward),
    "l2": (l2_scores, l2_backward, l2_pos_scores, l2_pos_backward),
    "l1": (l1_scores, l1_backward, l1_pos_scores, l1_pos_backward),
    "cmod": (cmod_scores, cmod_backward, cmod_pos_scores, cmod_pos_backward),
}

# -- candidate forms: a few query rows against candidates, the candidates' gradient alone ----------
# For a caller that scores a handful of fixed query rows (m, d or d + 1) against candidates
# P (n, d) and wants only the candidates' gradient (the debiasing term: values and relations
# are frozen, the persons are the candidates), with every array made by the caller:
#
# * ``split(Q, d, Qd, a) -> Qd``: the query rows' candidate-facing part, (m, d) C-contiguous
#   (Q itself, or ``Qd`` filled), and per-row scalars written into ``a`` (m,): l2's squared
#   norms, dot_offset's offsets.
# * ``scores(Qd, a, P, pp, gamma, S, D)``: *writes* S (m, n) = metric(Q_i, P_k); ``pp`` (n,) the
#   candidates' squared norms when the form's ``norms`` is set (the caller computes them once
#   for candidates it scores against several query blocks); D (m, n) keeps what ``grad`` needs
#   (l2: the distances).
# * ``grad(Qd, P, D, dS, gamma, gP)``: *writes* gP (n, d), the gradient of sum(dS * S) with
#   respect to the candidates; may overwrite dS (so dS may be the buffer S was).
#
# dot, dot_offset and l2 take two BLAS products and pass over the block once or twice (l2 makes
# one (n,) array); l1 and cmod run their loops (their full backward, the query half discarded).
class CandidateForm(NamedTuple):
    split: object
    scores: object
    grad: object
    norms: bool


@numba.njit(cache=True, fastmath=True)
def _split_as_is(Q, d, Qd, a):
    return Q


@numba.njit(cache=True, fastmath=True)
def _dot_cand_scores(Qd, a, P, pp, gamma, S, D):
    dot_scores(Qd, P, gamma, S)


@numba.njit(cache=True, fastmath=True)
def _dot_cand_grad(Qd, P, D, dS, gamma, gP):
    dot_candidate_backward(Qd, P, dS, dS, gamma, gP)


@numba.njit(cache=True, fastmath=True)
def _dot_offset_split(Q, d, Qd, a):
    for i in range(Q.shape[0]):
        q, qd = Q[i], Qd[i]
        for k in range(d):
            qd[k] = q[k]
        a[i] = q[d]
    return Qd


@numba.njit(cache=True, fastmath=True)
def _dot_offset_cand_scores(Qd, a, P, pp, gamma, S, D):
    dot_scores(Qd, P, gamma, S)
    for i in range(S.shape[0]):
        row, o = S[i], a[i]
        for k in range(row.shape[0]):
            row[k] += o


@numba.njit(cache=True, fastmath=True)
def _l2_split(Q, d, Qd, a):
    a[:] = _row_sq_norms(Q)
    return Q


@numba.njit(cache=True, fastmath=True)
def _l2_cand_scores(Qd, a, P, pp, gamma, S, D):
    np.dot(Qd, P.T, S)
    g, zero, two = np.float32(gamma), np.float32(0.0), np.float32(2.0)
    for i in range(S.shape[0]):
        row, dist, qq = S[i], D[i], a[i]
        for k in range(row.shape[0]):
            dist[k] = np.sqrt(max(qq + pp[k] - two * row[k], zero))
            row[k] = g - dist[k]


@numba.njit(cache=True, fastmath=True)
def _l2_cand_grad(Qd, P, D, dS, gamma, gP):
    # d s / d p = (q - p) / dist: with C = dS / dist, gP = C^T Q - colsum(C) p
    m, n = dS.shape
    eps, zero = np.float32(_EPS), np.float32(0.0)
    col_sum = np.zeros(n, dtype=np.float32)
    for i in range(m):
        ds, dist = dS[i], D[i]
        for k in range(n):
            w = ds[k] / max(dist[k], eps) if dist[k] > eps else zero
            ds[k] = w
            col_sum[k] += w
    _l2_candidate_half(Qd, P, dS, col_sum, gP)


def _loop_form(scores, backward):
    @numba.njit(fastmath=True, nogil=True)
    def cand_scores(Qd, a, P, pp, gamma, S, D):
        scores(Qd, P, gamma, S)

    @numba.njit(fastmath=True, nogil=True)
    def cand_grad(Qd, P, D, dS, gamma, gP):
        gQ = np.empty_like(Qd)
        backward(Qd, P, dS, dS, gamma, gQ, gP)  # l1's and cmod's backward read dS alone

    return CandidateForm(_split_as_is, cand_scores, cand_grad, False)


CANDIDATE_FORMS = {
    "dot": CandidateForm(_split_as_is, _dot_cand_scores, _dot_cand_grad, False),
    "dot_offset": CandidateForm(_dot_offset_split, _dot_offset_cand_scores, _dot_cand_grad, False),
    "l2": CandidateForm(_l2_split, _l2_cand_scores, _l2_cand_grad, True),
    "l1": _loop_form(l1_scores, l1_backward),
    "cmod": _loop_form(cmod_scores, cmod_backward),
}
