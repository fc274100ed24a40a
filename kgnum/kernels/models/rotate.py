"""RotatE: g(h, r, t) = gamma - sum_k |h_k e^{i theta_k} - t_k|.

Entity rows are [real | imaginary] (dim // 2 complex numbers); relation rows
hold the dim // 2 phases theta directly.
"""
import numba
import numpy as np

from ..score import ROTATION_DEFAULTS, ScoreFunction, register


def _c(x):
    half = x.shape[-1] // 2
    return x[..., :half] + 1j * x[..., half:]


def score(h, r, t, gamma):
    return gamma - np.abs(_c(h) * np.exp(1j * r) - _c(t)).sum(axis=-1)


def grad(h, r, t, gamma):
    rot = np.exp(1j * r)
    hr = _c(h) * rot
    diff = hr - _c(t)
    unit = diff / np.abs(diff)  # d|z|/d(z_re, z_im) = (z_re, z_im) / |z|
    # dz = rot * dh  ->  d/dh of -|z| is -conj(rot) * unit (as a real pair)
    gh = -np.conj(rot) * unit
    gt = unit
    # dz/dtheta = i * hr  ->  -Re(conj(unit) * i * hr)
    gr = -np.real(np.conj(unit) * 1j * hr)
    return (np.concatenate([gh.real, gh.imag], axis=-1), gr,
            np.concatenate([gt.real, gt.imag], axis=-1))


@numba.njit(cache=True, fastmath=True)
def cos_sin(x, c, s):
    """c, s = cos(x), sin(x) for float32 1-D arrays (abs error < 1e-7).

    libm's cos and sin are scalar calls; this vectorizes: reduce by
    n * pi/2 in float64 to |y| <= pi/4, Taylor polynomials there, then
    pick and negate by the quadrant n mod 4.
    """
    for k in range(x.shape[0]):
        xd = np.float64(x[k])
        n = np.floor(xd * 0.6366197723675814 + 0.5)
        y = np.float32(xd - n * 1.5707963267948966)
        y2 = y * y
        sy = y + y * y2 * (np.float32(-1.0 / 6) + y2 * (np.float32(1.0 / 120) + y2 * (
            np.float32(-1.0 / 5040) + y2 * np.float32(1.0 / 362880))))
        cy = np.float32(1.0) + y2 * (np.float32(-0.5) + y2 * (np.float32(1.0 / 24) + y2 * (
            np.float32(-1.0 / 720) + y2 * (np.float32(1.0 / 40320)
                                           + y2 * np.float32(-1.0 / 3628800)))))
        quadrant = np.int64(n) & 3
        sx = cy if quadrant & 1 else sy
        cx = sy if quadrant & 1 else cy
        s[k] = -sx if quadrant & 2 else sx
        c[k] = -cx if (quadrant + 1) & 2 else cx


# Row loops over 1-D [re | im] views (vectorized), one cos/sin pass per row.
@numba.njit(cache=True, fastmath=True)
def query(H, R, T, predict_head):
    half = H.shape[1] // 2
    Q = np.empty_like(H)
    c = np.empty(half, dtype=np.float32)
    s = np.empty(half, dtype=np.float32)
    X = T if predict_head else H
    for i in range(H.shape[0]):
        cos_sin(R[i], c, s)
        x_re, x_im = X[i, :half], X[i, half:]
        q_re, q_im = Q[i, :half], Q[i, half:]
        if predict_head:
            # |h rot - t| = |h - t conj(rot)|
            for k in range(half):
                q_re[k] = x_re[k] * c[k] + x_im[k] * s[k]
                q_im[k] = x_im[k] * c[k] - x_re[k] * s[k]
        else:
            for k in range(half):
                q_re[k] = x_re[k] * c[k] - x_im[k] * s[k]
                q_im[k] = x_re[k] * s[k] + x_im[k] * c[k]
    return Q


@numba.njit(cache=True, fastmath=True)
def query_backward(gQ, H, R, T, predict_head, gH, gR, gT):
    half = H.shape[1] // 2
    c = np.empty(half, dtype=np.float32)
    s = np.empty(half, dtype=np.float32)
    X, gX = (T, gT) if predict_head else (H, gH)
    for i in range(H.shape[0]):
        cos_sin(R[i], c, s)
        g_re, g_im = gQ[i, :half], gQ[i, half:]
        x_re, x_im = X[i, :half], X[i, half:]
        gx_re, gx_im = gX[i, :half], gX[i, half:]
        gr = gR[i]
        if predict_head:
            for k in range(half):
                gx_re[k] += g_re[k] * c[k] - g_im[k] * s[k]
                gx_im[k] += g_re[k] * s[k] + g_im[k] * c[k]
            for k in range(half):
                q_re = x_re[k] * c[k] + x_im[k] * s[k]
                q_im = x_im[k] * c[k] - x_re[k] * s[k]
                gr[k] += g_re[k] * q_im - g_im[k] * q_re
        else:
            for k in range(half):
                gx_re[k] += g_re[k] * c[k] + g_im[k] * s[k]
                gx_im[k] += g_im[k] * c[k] - g_re[k] * s[k]
            for k in range(half):
                q_re = x_re[k] * c[k] - x_im[k] * s[k]
                q_im = x_re[k] * s[k] + x_im[k] * c[k]
                gr[k] += g_im[k] * q_re - g_re[k] * q_im


# Array forms of the same query step (NumPy or CuPy as xp; any leading batch dims)
def array_query(xp, H, R, T, predict_head):
    half = H.shape[-1] // 2
    c, s = xp.cos(R), xp.sin(R)
    if predict_head:  # |h rot - t| = |h - t conj(rot)|
        t_re, t_im = T[..., :half], T[..., half:]
        return xp.concatenate([t_re * c + t_im * s, t_im * c - t_re * s], axis=-1)
    h_re, h_im = H[..., :half], H[..., half:]
    return xp.concatenate([h_re * c - h_im * s, h_re * s + h_im * c], axis=-1)


def array_query_backward(xp, gQ, H, R, T, predict_head):
    half = H.shape[-1] // 2
    g_re, g_im = gQ[..., :half], gQ[..., half:]
    c, s = xp.cos(R), xp.sin(R)
    if predict_head:
        t_re, t_im = T[..., :half], T[..., half:]
        gT = xp.concatenate([g_re * c - g_im * s, g_re * s + g_im * c], axis=-1)
        q_re, q_im = t_re * c + t_im * s, t_im * c - t_re * s
        return None, g_re * q_im - g_im * q_re, gT
    h_re, h_im = H[..., :half], H[..., half:]
    gH = xp.concatenate([g_re * c + g_im * s, g_im * c - g_re * s], axis=-1)
    q_re, q_im = h_re * c - h_im * s, h_re * s + h_im * c
    return gH, g_im * q_re - g_re * q_im, None


def init_relation(rng, n_relations, dim, bound):
    return rng.uniform(-np.pi, np.pi, (n_relations, dim // 2))


register(ScoreFunction("RotatE", "cmod", score, grad, relation_dim=lambda d: d // 2,
                       query=query, query_backward=query_backward,
                       array_query=array_query, array_query_backward=array_query_backward,
                       init_relation=init_relation, even_dim=True,
                       defaults=ROTATION_DEFAULTS))
