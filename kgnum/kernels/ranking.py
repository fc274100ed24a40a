"""Numba kernels for filtered link-prediction ranking.

Rank convention ("realistic" rank, the mean of the optimistic and the
pessimistic rank)::

    rank = 1 + #{c : score[c] > s} + #{c : score[c] == s, c != true} / 2

where ``s`` is the score of the true entity and ``c`` runs over the candidate
set: all entities except the *other* known true answers of the query (the
filter), i.e. the query's own answer is never filtered out.  The optimistic
rank counts only strictly better candidates, the pessimistic one also counts
every tie, so the mean puts a tied true answer in the middle of its tie group
(a constant row with ``n`` candidates gives ``(1 + n) / 2``).

NaN handling: a NaN true score gives the worst rank, ``n_entities``; a NaN
candidate score is counted as *better* than the true score (pessimistic), so a
model emitting NaN can never look better than it is.

The kernels count over the whole row once (a streaming, vectorizable pass) and
then subtract the contributions of the few filtered entities by looking up
their scores, which is exact and costs O(n_entities + n_filtered) per query.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _rank_row(row, true_id, start, end, filter_ids):
    """Filtered rank of one query.

    row: float32 (n_entities,) scores; true_id: int; filter_ids[start:end]:
    sorted int32 ids of the known true answers of the query (may include
    ``true_id``, which is skipped).  Returns float64 rank.
    """
    n = row.shape[0]
    s = row[true_id]
    if s != s:  # NaN true score: worst possible rank
        return np.float64(n)
    gt = 0
    eq = 0
    for j in range(n):
        v = row[j]
        # `not (v <= s)` is true for v > s and for NaN v (pessimistic)
        gt += not (v <= s)
        eq += v == s
    eq -= 1  # the true entity ties with itself
    for k in range(start, end):
        e = filter_ids[k]
        if e == true_id:  # the query's own answer is never filtered
            continue
        v = row[e]
        gt -= not (v <= s)
        eq -= v == s
    return 1.0 + gt + 0.5 * eq


@numba.njit(cache=True, nogil=True)
def filtered_ranks(scores, rows, true_ids, starts, ends, filter_ids):
    """Filtered realistic ranks for a block of queries.

    Serial on purpose: the pass is memory-bound and costs ~1 ms per
    512 x 14,541 block, far below the BLAS scoring it follows, so a
    ``prange`` version would only compete with BLAS for the cores.

    Parameters
    ----------
    scores : float32 (R, n_entities), C-contiguous; higher = more plausible.
    rows : int64 (Q,), query ``i`` is ranked on ``scores[rows[i]]`` (queries
        sharing an (anchor, relation) pair share one score row).
    true_ids : int32/int64 (Q,), the answer entity of each query.
    starts, ends : int64 (Q,), query ``i``'s filter is
        ``filter_ids[starts[i]:ends[i]]``.
    filter_ids : int32 (nnz,), CSR column ids; each slice is sorted, duplicate
        free and holds the known true answers of the query (the query's own
        answer may be present; it is ignored).

    Returns
    -------
    float64 (Q,) ranks, ``1 + #greater + #ties / 2`` over the filtered
    candidates (mean of optimistic and pessimistic rank); ``n_entities`` when
    the true score is NaN.
    """
    q = rows.shape[0]
    out = np.empty(q, dtype=np.float64)
    for i in range(q):
        out[i] = _rank_row(scores[rows[i]], true_ids[i], starts[i], ends[i], filter_ids)
    return out



@numba.njit(cache=True, nogil=True)
def topk_rows(scores, k):
    """The k highest scores of each row, best first: (indices (B, k) int64, values (B, k) float32).

    One pass per row keeping the current best k in order (insertion): each candidate costs one
    comparison against the k-th best unless it enters; -inf and NaN never enter (their slots
    keep index -1).
    """
    n_rows, n = scores.shape
    idx = np.full((n_rows, k), -1, dtype=np.int64)
    val = np.full((n_rows, k), -np.inf, dtype=np.float32)
    for i in range(n_rows):
        row, vi, ii = scores[i], val[i], idx[i]
        for j in range(n):
            s = row[j]
            if not s > vi[k - 1]:  # also rejects NaN
                continue
            pos = k - 1
            while pos > 0 and s > vi[pos - 1]:
                vi[pos] = vi[pos - 1]
                ii[pos] = ii[pos - 1]
                pos -= 1
            vi[pos] = s
            ii[pos] = j
    return idx, val
