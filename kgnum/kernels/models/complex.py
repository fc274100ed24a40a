"""ComplEx: g(h, r, t) = Re(sum_k h_k r_k conj(t_k)); rows are [real | imaginary]."""
import numba
import numpy as np

from ..score import BILINEAR_DEFAULTS, ScoreFunction, register


def _c(x):
    half = x.shape[-1] // 2
    return x[..., :half] + 1j * x[..., half:]


def _r(z):
    return np.concatenate([z.real, z.imag], axis=-1)


def score(h, r, t, gamma):
    return np.real((_c(h) * _c(r) * np.conj(_c(t))).sum(axis=-1))


def grad(h, r, t, gamma):
    # dRe(a*z)/d(a_re, a_im) = (z_re, -z_im)
    hc, rc, tc = _c(h), _c(r), _c(t)
    gh = rc * np.conj(tc)
    gr = hc * np.conj(tc)
    gt_conj = hc * rc  # score = Re(conj(t) * hr) -> d/dt_re = hr_re, d/dt_im = hr_im
    return _r(np.conj(gh)), _r(np.conj(gr)), _r(gt_conj)


# Row loops over 1-D [re | im] views: the compiler vectorizes these, the 2-D
# slice expressions they replace ran about 4x slower.
@numba.njit(cache=True, fastmath=True)
def query(H, R, T, predict_head):
    half = H.shape[1] // 2
    Q = np.empty_like(H)
    X = T if predict_head else H
    for i in range(H.shape[0]):
        r_re, r_im = R[i, :half], R[i, half:]
        x_re, x_im = X[i, :half], X[i, half:]
        q_re, q_im = Q[i, :half], Q[i, half:]
        if predict_head:  # q = r conj(t), paired with h
            for k in range(half):
                q_re[k] = r_re[k] * x_re[k] + r_im[k] * x_im[k]
                q_im[k] = r_re[k] * x_im[k] - r_im[k] * x_re[k]
        else:  # q = h r, paired with conj(t)
            for k in range(half):
                q_re[k] = x_re[k] * r_re[k] - x_im[k] * r_im[k]
                q_im[k] = x_re[k] * r_im[k] + x_im[k] * r_re[k]
    return Q


@numba.njit(cache=True, fastmath=True)
def query_backward(gQ, H, R, T, predict_head, gH, gR, gT):
    half = H.shape[1] // 2
    X, gX = (T, gT) if predict_head else (H, gH)
    for i in range(H.shape[0]):
        g_re, g_im = gQ[i, :half], gQ[i, half:]
        r_re, r_im = R[i, :half], R[i, half:]
        x_re, x_im = X[i, :half], X[i, half:]
        gr_re, gr_im = gR[i, :half], gR[i, half:]
        gx_re, gx_im = gX[i, :half], gX[i, half:]
        if predict_head:
            for k in range(half):
                gr_re[k] += g_re[k] * x_re[k] + g_im[k] * x_im[k]
                gr_im[k] += g_re[k] * x_im[k] - g_im[k] * x_re[k]
            for k in range(half):
                gx_re[k] += g_re[k] * r_re[k] - g_im[k] * r_im[k]
                gx_im[k] += g_re[k] * r_im[k] + g_im[k] * r_re[k]
        else:
            for k in range(half):
                gx_re[k] += g_re[k] * r_re[k] + g_im[k] * r_im[k]
                gx_im[k] += g_im[k] * r_re[k] - g_re[k] * r_im[k]
            for k in range(half):
                gr_re[k] += g_re[k] * x_re[k] + g_im[k] * x_im[k]
                gr_im[k] += g_im[k] * x_re[k] - g_re[k] * x_im[k]


# Array forms of the same query step (NumPy or CuPy as xp; any leading batch dims)
def array_query(xp, H, R, T, predict_head):
    half = H.shape[-1] // 2
    r_re, r_im = R[..., :half], R[..., half:]
    if predict_head:  # q = r conj(t), paired with h
        t_re, t_im = T[..., :half], T[..., half:]
        return xp.concatenate([r_re * t_re + r_im * t_im, r_re * t_im - r_im * t_re], axis=-1)
    h_re, h_im = H[..., :half], H[..., half:]
    return xp.concatenate([h_re * r_re - h_im * r_im, h_re * r_im + h_im * r_re], axis=-1)


def array_query_backward(xp, gQ, H, R, T, predict_head):
    half = H.shape[-1] // 2
    g_re, g_im = gQ[..., :half], gQ[..., half:]
    r_re, r_im = R[..., :half], R[..., half:]
    if predict_head:
        t_re, t_im = T[..., :half], T[..., half:]
        gR = xp.concatenate([g_re * t_re + g_im * t_im, g_re * t_im - g_im * t_re], axis=-1)
        gT = xp.concatenate([g_re * r_re - g_im * r_im, g_re * r_im + g_im * r_re], axis=-1)
        return None, gR, gT
    h_re, h_im = H[..., :half], H[..., half:]
    gH = xp.concatenate([g_re * r_re + g_im * r_im, g_im * r_re - g_re * r_im], axis=-1)
    gR = xp.concatenate([g_re * h_re + g_im * h_im, g_im * h_re - g_re * h_im], axis=-1)
    return gH, gR, None


register(ScoreFunction("ComplEx", "dot", score, grad, relation_dim=lambda d: d,
                       query=query, query_backward=query_backward,
                       array_query=array_query, array_query_backward=array_query_backward, even_dim=True,
                       defaults=BILINEAR_DEFAULTS))
