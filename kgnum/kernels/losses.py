"""Logistic loss with shared negatives and self-adversarial weighting (DGL-KE's)."""
import math

import numba
import numpy as np


@numba.njit(cache=True, fastmath=True)
def logsigmoid(x):
    # stable for large |x|
    return min(x, 0.0) - math.log1p(math.exp(-abs(x)))


@numba.njit(cache=True, fastmath=True)
def sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@numba.njit(cache=True, fastmath=True)
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
    total = 0.0
    w = np.empty(k, dtype=np.float32)
    for i in range(c):
        pos = logsigmoid(sp[i])
        dsp[i] = -0.5 * scale * sigmoid(-sp[i])
        if adv_temp > 0.0:
            top = S[i, 0]
            for j in range(1, k):
                top = max(top, S[i, j])
            norm = 0.0
            for j in range(k):
                w[j] = math.exp(adv_temp * (S[i, j] - top))
                norm += w[j]
            for j in range(k):
                w[j] /= norm
        else:
            w[:] = 1.0 / k
        neg = 0.0
        for j in range(k):
            neg += w[j] * logsigmoid(-S[i, j])
            dS[i, j] = 0.5 * scale * w[j] * sigmoid(S[i, j])
        total -= 0.5 * (pos + neg)
    return total


@numba.njit(cache=True, fastmath=True)
def add_regularization(rows, coef, norm, grads):
    """Add the gradient of coef * sum |x|^norm (norm 2 or 3) over the rows into grads; returns the penalty."""
    penalty = 0.0
    for i in range(rows.shape[0]):
        for k in range(rows.shape[1]):
            x = rows[i, k]
            if norm == 3:
                penalty += coef * abs(x) ** 3
                grads[i, k] += 3.0 * coef * x * abs(x)
            else:
                penalty += coef * x * x
                grads[i, k] += 2.0 * coef * x
    return penalty
