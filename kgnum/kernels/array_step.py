"""The training step as array code over an array module ``xp`` (NumPy, or CuPy on a GPU).

    H, R, T (B, c, .) and N (B, k, d): B chunks of c positives, each chunk with its k shared
    negatives, all corrupting the same side
      -> Q = model.array_query (B, c, d) -> scores S (B, c, k) by the metric (batched matrix
         products for dot / dot_offset / l2, broadcast differences for l1 / cmod), positive
         scores (B, c)
      -> the logistic loss with self-adversarial weights, its score gradients
      -> metric backward, model.array_query_backward -> gH, gR, gT, gN
      -> the extra loss terms on the same rows: the regularizer, the debiasing KL term (persons
         gathered from the chunks' heads and tails, scored against their sensitive relations' top
         values with the same query / metric code)
    row-wise Adagrad with duplicates summed (xp scatter-add), the same update as the Numba step

One call handles B chunks at once (what fills a GPU); the Numba step applies
each chunk before the next, this applies the B chunks' updates together. The
same functions run on NumPy arrays (tests, emulated devices) and CuPy arrays.
TransR has no query form: its pair score is written here as broadcast array
code over (B, c, k, d).
"""
from __future__ import annotations

import numpy as np

from .registry import get_model

EPS = 1e-12


def _logsigmoid(xp, x):
    return xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x)))


def _sigmoid(xp, x):
    return 0.5 * (1 + xp.tanh(0.5 * x))


def loss_grads(xp, S, sp, adv_temp, scale):
    """(loss_sum, dS, dsp) of the chunk loss over the last axis of S (..., k) and sp (...)."""
    k = S.shape[-1]
    if adv_temp > 0:
        w = xp.exp(adv_temp * (S - S.max(axis=-1, keepdims=True)))
        w /= w.sum(axis=-1, keepdims=True)
    else:
        w = xp.full(S.shape, 1.0 / k, dtype=S.dtype)
    loss = -0.5 * (_logsigmoid(xp, sp) + (w * _logsigmoid(xp, -S)).sum(axis=-1))
    dS = (0.5 * scale) * w * _sigmoid(xp, S)
    dsp = (-0.5 * scale) * _sigmoid(xp, -sp)
    return loss.sum(), dS.astype(S.dtype), dsp.astype(S.dtype)


def _swap(x):
    return x.swapaxes(-1, -2)


def _distance(xp, metric, diff):
    """For diff (..., d): distance (...) and d distance / d diff (..., d)."""
    if metric == "l2":
        dist = xp.sqrt((diff * diff).sum(-1))
        return dist, diff / xp.maximum(dist, EPS)[..., None]
    if metric == "l1":
        return xp.abs(diff).sum(-1), xp.sign(diff)
    half = diff.shape[-1] // 2  # cmod: sum of complex moduli
    mod = xp.sqrt(diff[..., :half] ** 2 + diff[..., half:] ** 2)
    unit = diff / xp.maximum(xp.concatenate([mod, mod], axis=-1), EPS)
    return mod.sum(-1), unit


def _scores(xp, metric, Q, N, gamma):
    if metric == "dot":
        return xp.matmul(Q, _swap(N))
    if metric == "dot_offset":  # Q = [q | o]: q . n + o
        return xp.matmul(Q[..., :-1], _swap(N)) + Q[..., -1:]
    if metric == "l2":
        sq = (Q * Q).sum(-1)[..., :, None] + (N * N).sum(-1)[..., None, :] - 2 * xp.matmul(Q, _swap(N))
        return gamma - xp.sqrt(xp.maximum(sq, 0))
    return gamma - _distance(xp, metric, Q[..., :, None, :] - N[..., None, :, :])[0]


def _scores_backward(xp, metric, Q, N, S, dS, gamma):
    """(gQ, gN) from dS (B, c, k)."""
    if metric == "dot":
        return xp.matmul(dS, N), xp.matmul(_swap(dS), Q)
    if metric == "dot_offset":
        gQ = xp.concatenate([xp.matmul(dS, N), dS.sum(-1)[..., None]], axis=-1)
        return gQ, xp.matmul(_swap(dS), Q[..., :-1])
    if metric == "l2":
        dist = gamma - S
        C = xp.where(dist > EPS, dS / xp.maximum(dist, EPS), 0).astype(Q.dtype)
        gQ = xp.matmul(C, N) - C.sum(-1)[..., None] * Q
        gN = xp.matmul(_swap(C), Q) - C.sum(-2)[..., None] * N
        return gQ, gN
    g = dS[..., None] * _distance(xp, metric, Q[..., :, None, :] - N[..., None, :, :])[1]
    return -g.sum(-2), g.sum(-3)


def _positive(xp, metric, Q, X, gamma):
    """Positive scores (B, c) and their gradients with respect to Q and X."""
    if metric == "dot":
        return (Q * X).sum(-1), X, Q
    if metric == "dot_offset":
        q = Q[..., :-1]
        return (q * X).sum(-1) + Q[..., -1], xp.concatenate([X, xp.ones_like(X[..., :1])], axis=-1), q
    dist, unit = _distance(xp, metric, Q - X)
    return gamma - dist, -unit, unit


def _add(a, b):
    return b if a is None else (a if b is None else a + b)


def query_chunk_gradients(xp, sf, H, R, T, N, predict_head, gamma, adv_temp, scale):
    Q = sf.array_query(xp, H, R, T, predict_head)
    X = H if predict_head else T
    S = _scores(xp, sf.metric, Q, N, gamma)
    sp, dsp_dQ, dsp_dX = _positive(xp, sf.metric, Q, X, gamma)
    loss, dS, dsp = loss_grads(xp, S, sp, adv_temp, scale)
    gQ, gN = _scores_backward(xp, sf.metric, Q, N, S, dS, gamma)
    gQ = gQ + dsp[..., None] * dsp_dQ
    gH, gR, gT = sf.array_query_backward(xp, gQ, H, R, T, predict_head)
    gX = dsp[..., None] * dsp_dX
    if predict_head:
        gH = _add(gH, gX)
    else:
        gT = _add(gT, gX)
    gH = xp.zeros_like(H) if gH is None else gH
    gT = xp.zeros_like(T) if gT is None else gT
    if gR is gH or gR is gT:  # one array for two sides (TransE's h + r): terms add to each in place
        gR = gR.copy()
    return loss, gH, gR, gT, gN


def transr_chunk_gradients(xp, sf, H, R, T, N, predict_head, gamma, adv_temp, scale):
    """TransR: g = gamma - ||M_r (h - t) + r||, every (positive, negative) pair as one broadcast."""
    d = H.shape[-1]
    vec, M = R[..., :d], R[..., d:].reshape(R.shape[:-1] + (d, d))  # (B, c, d), (B, c, d, d)

    def project(x):  # M_r x for x (B, c, d) -> (B, c, d)
        return xp.matmul(M, x[..., :, None])[..., 0]

    MN = xp.matmul(N[..., None, :, :], _swap(M))  # MN[b, i, j] = M_{r_i} n_j: (B, c, k, d)
    MH, MT = project(H), project(T)
    v_pos = MH - MT + vec
    if predict_head:
        v_neg = MN - MT[..., None, :] + vec[..., None, :]
    else:
        v_neg = MH[..., None, :] - MN + vec[..., None, :]
    dist_pos = xp.sqrt((v_pos * v_pos).sum(-1))
    dist_neg = xp.sqrt((v_neg * v_neg).sum(-1))
    S, sp = gamma - dist_neg, gamma - dist_pos
    loss, dS, dsp = loss_grads(xp, S, sp, adv_temp, scale)
    # d(-dist)/dv = -v / dist, scaled by the score gradients
    u_pos = -(dsp / xp.maximum(dist_pos, EPS))[..., None] * v_pos  # (B, c, d)
    u_neg = -(dS / xp.maximum(dist_neg, EPS))[..., None] * v_neg  # (B, c, k, d)
    u_neg_sum = u_neg.sum(-2)
    gvec = u_pos + u_neg_sum
    diff_pos = H - T
    # gradient of M: outer(u, h - t) for the positive, outer(u_ij, x_ij) for each negative pair
    gM = u_pos[..., :, None] * diff_pos[..., None, :]
    MtU_pos = xp.matmul(_swap(M), u_pos[..., :, None])[..., 0]  # M^T u
    MtU_neg = xp.matmul(u_neg, M)  # (B, c, k, d): u_ij^T M_i
    if predict_head:  # v = M n - M t + r
        gM = gM + xp.matmul(_swap(u_neg), N[..., None, :, :]) - u_neg_sum[..., :, None] * T[..., None, :]
        gH = MtU_pos
        gT = -MtU_pos - MtU_neg.sum(-2)
        gN = MtU_neg.sum(-3)
    else:  # v = M h - M n + r
        gM = gM + u_neg_sum[..., :, None] * H[..., None, :] - xp.matmul(_swap(u_neg), N[..., None, :, :])
        gH = MtU_pos + MtU_neg.sum(-2)
        gT = -MtU_pos
        gN = -MtU_neg.sum(-3)
    gR = xp.concatenate([gvec, gM.reshape(gM.shape[:-2] + (d * d,))], axis=-1)
    return loss, gH, gR, gT, gN


def chunk_gradients(xp, model: str, H, R, T, N, predict_head, gamma, adv_temp, scale):
    """Loss sum and the gradients (gH, gR, gT, gN) of ``scale * sum of losses`` for B chunks:
    H, R, T (B, c, .), N (B, k, d). The Numba step's ``chunk_gradient_kernel`` per chunk."""
    sf = get_model(model)
    step = transr_chunk_gradients if sf.metric == "pair" else query_chunk_gradients
    return step(xp, sf, H, R, T, N, predict_head, gamma, adv_temp, scale)


def regularize(xp, coef: float, norm: int, rows_and_grads) -> float:
    """Add coef * d(sum |x|^norm) / dx to each grads array (in place); return the penalty."""
    penalty = 0.0
    for X, gX in rows_and_grads:
        a = xp.abs(X)
        penalty += float(coef * ((a * a * a) if norm == 3 else X * X).sum())
        gX += (3.0 * coef) * X * a if norm == 3 else (2.0 * coef) * X
    return penalty


# -- the debiasing KL term (kernels/kl.py) -------------------------------------------------
def _value_scores(xp, sf, P, rj, V, gamma, tail):
    """Scores S (n, m) of persons P (n, d) against values V (m, d) through relation row rj (the persons
    as tails when ``tail``), and the function taking dS (n, m) to the persons' gradient (n, d)."""
    if sf.metric == "pair":  # TransR: gamma - ||M (h - t) + vec||
        d = P.shape[-1]
        vec, M = rj[:d], rj[d:].reshape(d, d)
        MP, MV = xp.matmul(P, M.T), xp.matmul(V, M.T)
        diff = (MV[None, :, :] - MP[:, None, :] if tail else MP[:, None, :] - MV[None, :, :]) + vec
        dist = xp.sqrt((diff * diff).sum(-1))

        def pair_backward(dS):
            u = (-(dS / xp.maximum(dist, EPS))[..., None] * diff).sum(1)  # dS-weighted d score / d diff
            g = xp.matmul(u, M)
            return -g if tail else g

        return gamma - dist, pair_backward
    R = xp.broadcast_to(rj, P.shape[:-1] + rj.shape)
    Q = sf.array_query(xp, P, R, P, tail)  # a tail person is scored against candidate heads
    S = _scores(xp, sf.metric, Q, V, gamma)

    def query_backward(dS):
        gQ, _ = _scores_backward(xp, sf.metric, Q, V, S, dS, gamma)  # values are frozen: gV dropped
        gH, _, gT = sf.array_query_backward(xp, gQ, P, R, P, tail)
        return gT if tail else gH

    return S, query_backward


def kl_divergence(xp, model: str, p, scale: float, relation_rows, value_rows, sides) -> float:
    """The debiasing KL term (``kernels.kl``) on the chunks' rows: add its gradient, return the penalty.

    Each person occurrence among the rows of ``sides`` and each sensitive relation j adds
    w_j * scale * KL(G_j || softmax of g(person, r_j, value) over j's top values), the person on
    the side ``p.person_tail`` gives; only the persons' gradients receive it. ``p``: the term's
    ``KLParams`` (NumPy; its person masks are read on the host, so only persons are gathered);
    relation_rows (J, dr) and value_rows (J, M, d): each sensitive relation's row and its top
    values' rows (the padding beyond ``n_values[j]`` is not read); sides: (ids, X, gX) for the
    heads and for the tails, ids (...,) NumPy entity ids of the rows X (..., d), whose gradients
    gX are added to in place.
    """
    sf = get_model(model)
    penalty = 0.0
    for j in range(len(p.relations)):
        picks = [np.nonzero(p.person_mask[j][ids]) for ids, _, _ in sides]
        if not any(pick[0].size for pick in picks):
            continue
        picks = [tuple(xp.asarray(a) for a in pick) for pick in picks]
        P = xp.concatenate([X[pick] for (_, X, _), pick in zip(sides, picks)])
        m = int(p.n_values[j])
        G = xp.asarray(p.target[j, :m])
        S, backward = _value_scores(xp, sf, P, relation_rows[j], value_rows[j, :m], float(p.gamma),
                                    bool(p.person_tail[j]))
        log_q = S - S.max(-1, keepdims=True)
        log_q = log_q - xp.log(xp.exp(log_q).sum(-1, keepdims=True))
        w = float(p.weights[j]) * scale
        penalty = penalty + w * xp.where(G > 0, G * (xp.log(xp.where(G > 0, G, 1)) - log_q), 0).sum()
        gP = backward((w * (xp.exp(log_q) - G)).astype(S.dtype))
        start = 0
        for (_, _, gX), pick in zip(sides, picks):
            n = pick[0].shape[0]
            gX[pick] += gP[start:start + n]
            start += n
    return float(penalty)


def scatter_add(xp):
    """``add(table, rows, values)``: table[rows] += values with duplicate rows summed."""
    if xp is np:
        return np.add.at
    import cupyx

    return cupyx.scatter_add


def adagrad(xp, table, state, rows, grads, lr) -> None:
    """Row-wise Adagrad as the Numba step does it: every row's mean squared gradient is
    accumulated first, then each occurrence applies lr * g / (sqrt(state) + 1e-10)."""
    add = scatter_add(xp)
    rows = rows.reshape(-1)
    grads = grads.reshape(rows.shape[0], -1)
    add(state, rows, (grads * grads).mean(axis=1))
    add(table, rows, (-lr) * grads / (xp.sqrt(state[rows])[:, None] + 1e-10))
