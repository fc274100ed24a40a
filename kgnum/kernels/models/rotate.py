"""RotatE: g(h, r, t) = gamma - sum_k |h_k e^{i theta_k} - t_k|.

Entity rows are [real | imaginary] (dim // 2 complex numbers); relation rows
hold the dim // 2 phases theta directly.
"""
import numba
import numpy as np

from ..registry import ScoreFunction, register


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
def query(H, R, T, predict_head):
    half = H.shape[1] // 2
    Q = np.empty_like(H)
    c, s = np.cos(R), np.sin(R)
    if predict_head:
        # |h rot - t| = |h - t conj(rot)|
        t_re, t_im = T[:, :half], T[:, half:]
        Q[:, :half] = t_re * c + t_im * s
        Q[:, half:] = t_im * c - t_re * s
    else:
        h_re, h_im = H[:, :half], H[:, half:]
        Q[:, :half] = h_re * c - h_im * s
        Q[:, half:] = h_re * s + h_im * c
    return Q


@numba.njit(cache=True, fastmath=True)
def query_backward(gQ, H, R, T, predict_head, gH, gR, gT):
    half = H.shape[1] // 2
    g_re, g_im = gQ[:, :half], gQ[:, half:]
    c, s = np.cos(R), np.sin(R)
    if predict_head:
        t_re, t_im = T[:, :half], T[:, half:]
        gT[:, :half] += g_re * c - g_im * s
        gT[:, half:] += g_re * s + g_im * c
        q_re = t_re * c + t_im * s
        q_im = t_im * c - t_re * s
        gR += g_re * q_im - g_im * q_re
    else:
        h_re, h_im = H[:, :half], H[:, half:]
        gH[:, :half] += g_re * c + g_im * s
        gH[:, half:] += g_im * c - g_re * s
        q_re = h_re * c - h_im * s
        q_im = h_re * s + h_im * c
        gR += g_im * q_re - g_re * q_im


def init_relation(rng, n_relations, dim, bound):
    return rng.uniform(-np.pi, np.pi, (n_relations, dim // 2))


register(ScoreFunction("RotatE", "cmod", score, grad, relation_dim=lambda d: d // 2,
                       query=query, query_backward=query_backward,
                       init_relation=init_relation, even_dim=True))
