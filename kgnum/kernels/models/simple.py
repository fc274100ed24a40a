"""SimplE: g = (<h_head, r, t_tail> + <t_head, r_inv, h_tail>) / 2.

Entity rows are [head part | tail part], relation rows [r | r_inv].
"""
import numba
import numpy as np

from ..score import BILINEAR_DEFAULTS, ScoreFunction, register


def _split(x):
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]


def score(h, r, t, gamma):
    h_hd, h_tl = _split(h)
    t_hd, t_tl = _split(t)
    r_fw, r_inv = _split(r)
    return 0.5 * ((h_hd * r_fw * t_tl).sum(-1) + (t_hd * r_inv * h_tl).sum(-1))


def grad(h, r, t, gamma):
    h_hd, h_tl = _split(h)
    t_hd, t_tl = _split(t)
    r_fw, r_inv = _split(r)
    gh = 0.5 * np.concatenate([r_fw * t_tl, t_hd * r_inv], axis=-1)
    gr = 0.5 * np.concatenate([h_hd * t_tl, t_hd * h_tl], axis=-1)
    gt = 0.5 * np.concatenate([r_inv * h_tl, h_hd * r_fw], axis=-1)
    return gh, gr, gt


@numba.njit(cache=True, fastmath=True)
def query(H, R, T, predict_head):
    half = H.shape[1] // 2
    Q = np.empty_like(H)
    r_fw, r_inv = R[:, :half], R[:, half:]
    if predict_head:
        Q[:, :half] = 0.5 * r_fw * T[:, half:]
        Q[:, half:] = 0.5 * r_inv * T[:, :half]
    else:
        Q[:, :half] = 0.5 * H[:, half:] * r_inv
        Q[:, half:] = 0.5 * H[:, :half] * r_fw
    return Q


@numba.njit(cache=True, fastmath=True)
def query_backward(gQ, H, R, T, predict_head, gH, gR, gT):
    half = H.shape[1] // 2
    g_a, g_b = gQ[:, :half], gQ[:, half:]
    r_fw, r_inv = R[:, :half], R[:, half:]
    if predict_head:
        gR[:, :half] += 0.5 * g_a * T[:, half:]
        gT[:, half:] += 0.5 * g_a * r_fw
        gR[:, half:] += 0.5 * g_b * T[:, :half]
        gT[:, :half] += 0.5 * g_b * r_inv
    else:
        gH[:, half:] += 0.5 * g_a * r_inv
        gR[:, half:] += 0.5 * g_a * H[:, half:]
        gH[:, :half] += 0.5 * g_b * r_fw
        gR[:, :half] += 0.5 * g_b * H[:, :half]


def array_query(xp, H, R, T, predict_head):
    half = H.shape[-1] // 2
    r_fw, r_inv = R[..., :half], R[..., half:]
    if predict_head:
        return xp.concatenate([0.5 * r_fw * T[..., half:], 0.5 * r_inv * T[..., :half]], axis=-1)
    return xp.concatenate([0.5 * H[..., half:] * r_inv, 0.5 * H[..., :half] * r_fw], axis=-1)


def array_query_backward(xp, gQ, H, R, T, predict_head):
    half = H.shape[-1] // 2
    g_a, g_b = gQ[..., :half], gQ[..., half:]
    r_fw, r_inv = R[..., :half], R[..., half:]
    if predict_head:
        gR = xp.concatenate([0.5 * g_a * T[..., half:], 0.5 * g_b * T[..., :half]], axis=-1)
        gT = xp.concatenate([0.5 * g_b * r_inv, 0.5 * g_a * r_fw], axis=-1)
        return None, gR, gT
    gH = xp.concatenate([0.5 * g_b * r_fw, 0.5 * g_a * r_inv], axis=-1)
    gR = xp.concatenate([0.5 * g_b * H[..., :half], 0.5 * g_a * H[..., half:]], axis=-1)
    return gH, gR, None


register(ScoreFunction("SimplE", "dot", score, grad, relation_dim=lambda d: d,
                       query=query, query_backward=query_backward, even_dim=True,
                       array_query=array_query, array_query_backward=array_query_backward,
                       defaults=BILINEAR_DEFAULTS))
