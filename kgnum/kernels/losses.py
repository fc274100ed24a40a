"""Logistic loss with shared negatives and self-adversarial weighting (DGL-KE's).

Compiled with NumPy's error model: under Numba's default (Python's) every
float division checks for a zero divisor and raises, and that branch keeps
the per-element sigmoid loop scalar (one divide per element); here a
division by zero gives inf, as in NumPy, and the loop vectorizes.
"""
import math

import numba
import numpy as np


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def logsigmoid(x):
    # stable for large |x|
    return min(x, 0.0) - math.log1p(math.exp(-abs(x)))


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def exp_nonpositive(x, out, scratch):
    """out = exp(x) for x <= 0 (float32 arrays of equal length), vectorizable.

    libm's exp is a scalar call the compiler cannot vectorize, and the loss
    needs two per (positive, negative) pair, so: exp(x) = 2^n * 2^f with
    n = floor(x log2 e), 2^f by a degree-6 polynomial around f = 1/2 (relative
    error ~2e-7) and 2^n assembled from its exponent bits. scratch: int32 array
    of the same length. Values below exp(-87) flush to ~1e-38.
    """
    bits = scratch.view(np.float32)
    for j in range(x.shape[0]):
        t = max(x[j] * np.float32(1.4426950408889634), np.float32(-126.0))
        n = np.floor(t)
        u = (t - n - np.float32(0.5)) * np.float32(0.6931471805599453)
        p = np.float32(1.0) + u * (np.float32(1.0) + u * (np.float32(0.5) + u * (
            np.float32(1.0 / 6) + u * (np.float32(1.0 / 24) + u * (
                np.float32(1.0 / 120) + u * np.float32(1.0 / 720))))))
        out[j] = p * np.float32(1.4142135623730951)
        scratch[j] = (np.int32(n) + np.int32(127)) << np.int32(23)
    for j in range(x.shape[0]):
        out[j] *= bits[j]


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def log1p_unit(e):
    """log(1 + e) for e in [0, 1]: a degree-8 fit on Chebyshev nodes (max error 3.4e-8 in
    exact arithmetic), no division, vectorizable."""
    return np.float32(3.3869653637e-08) + e * (np.float32(9.9999427248e-01) + e * (
        np.float32(-4.9983856183e-01) + e * (np.float32(3.3154861652e-01) + e * (
            np.float32(-2.3982616049e-01) + e * (np.float32(1.6582275266e-01) + e * (
                np.float32(-9.3252038950e-02) + e * (np.float32(3.4849712458e-02) + e * np.float32(
                    -6.1514709568e-03))))))))


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def chunk_loss(S, sp, adv_temp, scale, dS, dsp):
    """Loss of a chunk and its gradients with respect to the scores.

    S (c, k) float32: negative scores; sp (c,) float32: positive scores.
    Per positive i: loss_i = -(logsig(sp_i) + sum_j w_ij logsig(-S_ij)) / 2 with
    w_i = softmax(adv_temp * S_i) treated as a constant (self-adversarial) when
    adv_temp > 0, else uniform 1/k. Writes dS, dsp = scale * dloss/dscore and
    returns sum_i loss_i. scale = 1 / (positives in the batch) gives the
    gradient of the batch-mean loss.
    """
    c, k = S.shape
    half = np.float32(0.5) * np.float32(scale)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    temp = np.float32(adv_temp)
    arg = np.empty(max(c, k), dtype=np.float32)
    e = np.empty(max(c, k), dtype=np.float32)
    w = np.ones(k, dtype=np.float32)
    scratch = np.empty(max(c, k), dtype=np.int32)
    total = 0.0
    # positives: e = exp(-|s|) gives both sigmoid and log-sigmoid
    for i in range(c):
        arg[i] = -abs(sp[i])
    exp_nonpositive(arg[:c], e[:c], scratch[:c])
    for i in range(c):
        s = sp[i]
        dsp[i] = -half * (e[i] / (one + e[i]) if s >= zero else one / (one + e[i]))
        total -= 0.5 * (min(s, zero) - log1p_unit(e[i]))
    for i in range(c):
        row = S[i]
        for j in range(k):
            arg[j] = -abs(row[j])
        exp_nonpositive(arg[:k], e[:k], scratch[:k])
        if temp > zero:
            top = row[0]
            for j in range(1, k):
                top = max(top, row[j])
            for j in range(k):
                arg[j] = temp * (row[j] - top)
            exp_nonpositive(arg[:k], w, scratch[:k])
        # reductions and the gradient row in separate loops: each vectorizes,
        # the fused loop ran scalar
        norm = zero
        neg = zero
        for j in range(k):
            neg += w[j] * (min(-row[j], zero) - log1p_unit(e[j]))
            norm += w[j]
        factor = half / norm
        grad = dS[i]
        for j in range(k):
            inv = one / (one + e[j])
            sig = inv if row[j] >= zero else e[j] * inv
            grad[j] = factor * w[j] * sig
        total -= 0.5 * neg / norm
    return total


@numba.njit(cache=True, fastmath=True, error_model="numpy")
def add_regularization(rows, coef, norm, grads):
    """Add the gradient of coef * sum |x|^norm (norm 2 or 3) over the rows into grads; returns the penalty."""
    penalty = 0.0
    c = np.float32(coef)
    for i in range(rows.shape[0]):
        x, g = rows[i], grads[i]
        acc = np.float32(0.0)
        if norm == 3:
            for k in range(x.shape[0]):
                a = abs(x[k])
                acc += a * a * a
                g[k] += np.float32(3.0) * c * x[k] * a
        else:
            for k in range(x.shape[0]):
                acc += x[k] * x[k]
                g[k] += np.float32(2.0) * c * x[k]
        penalty += coef * acc
    return penalty
