"""Sparse row-wise Adagrad (DGL-KE's): one accumulator per row, touching only used rows.

state[row] += mean(g_row ** 2) for every occurrence first, then each
occurrence moves its row by -lr * g / sqrt(state[row]). A row used twice in a
step therefore sees both gradients and the accumulated state of both, as with
an index-add of the whole step.
"""
import math

import numba

from .memory import AHEAD, prefetch_item_for_write, prefetch_row_for_write


@numba.njit(cache=True, fastmath=True)
def adagrad_accumulate(state, rows, grads):
    """state (n_rows,) float32 += mean over dim of grads**2 at rows (m,) int; grads (m, dim)."""
    dim = grads.shape[1]
    n = rows.shape[0]
    for i in range(n):
        if i + AHEAD < n:
            prefetch_item_for_write(state, rows[i + AHEAD])
        g = grads[i]  # 1-D row views vectorize; 2-D indexing in the inner loop does not
        acc = numba.float32(0.0)
        for k in range(dim):
            acc += g[k] * g[k]
        state[rows[i]] += acc / dim


@numba.njit(cache=True, fastmath=True)
def adagrad_apply(table, state, rows, grads, lr):
    """table (n_rows, dim) float32 -= lr * grads / (sqrt(state[rows]) + 1e-10), in place."""
    n = rows.shape[0]
    for i in range(n):
        if i + AHEAD < n:
            prefetch_row_for_write(table, rows[i + AHEAD])
        row = rows[i]
        step = numba.float32(lr / (math.sqrt(state[row]) + 1e-10))
        target, g = table[row], grads[i]
        for k in range(g.shape[0]):
            target[k] -= step * g[k]
