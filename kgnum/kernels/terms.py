"""Extra loss terms of the training step: the step's extension point.

The step's loss is the model's logistic loss over a chunk; an *extra term*
adds a penalty computed from the chunk's gathered rows. The L2/L3
regularizer is the first; the bias issue's KL term goes here too. A term is
one ``LossTerm`` entry:

* ``kernel(sf)``: builds, for score function ``sf``, a Numba function
  ``(p, tables, scale, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN)
  -> (penalty, ent_rows, ent_grads, rel_rows, rel_grads)``.
  ``p`` is the term's own parameter NamedTuple, ``scale`` 1 / (positives in
  the batch), ``tables`` the step's
  ``Tables`` (read only: other rows a term needs, e.g. a sensitive relation's
  row, are read from there), H/R/T (c, .) and N (k, d) the chunk's gathered
  rows. The term *adds* its gradient for the gathered rows into gH/gR/gT/gN
  and returns extra (rows, grads) pairs for rows it touches outside the
  chunk (0 rows when none), which go through the same row-wise Adagrad.
  ``penalty`` is in objective units: the step minimises the batch-mean
  logistic loss plus every chunk's penalties.
* ``reference(sf)``: the same function in NumPy (any float dtype), the ground
  truth in tests (itself checked against finite differences of the penalty).
* ``params``: ``(config, kg) -> NamedTuple | None``, the term's parameters for
  a run's configuration (a ``TrainConfig``) and graph, None when the term is off.
* ``needs`` / ``localize`` (only for terms whose parameters name entities):
  an engine that trains on a table holding some of the graph's rows (the
  cluster engine's parts) asks ``needs(p)`` for the global entity ids every
  such table must hold, and ``localize(p, gids, local_of)`` for the
  parameters over a table whose row i is entity ``gids[i]`` (``local_of``
  maps global ids of needed rows to row numbers).

* ``prepare`` / ``prepare_reference`` (optional): a Numba function ``(p, tables,
  heads, rels, tails, H, T)`` the step calls on the gathered rows *before*
  the model's step, which may edit those copies in place (attribute vectors
  add a person's attribute rows there); the term's own kernel then sees the
  gradients with respect to the edited rows. Terms run in registry order, so
  a term that forwards the link gradient (attributes) comes first.

``active_terms(config, kg)`` picks the terms a run uses; ``compose(model,
names)`` fuses them into one Numba function the step calls once per chunk,
``compose_prepare(names)`` their prepare kernels.
Adding a term touches neither a model module nor an engine.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numba
import numpy as np

from .losses import add_regularization
from .memory import no_rows


@dataclass(frozen=True)
class LossTerm:
    name: str
    kernel: Callable
    reference: Callable
    params: Callable
    needs: Callable | None = None
    localize: Callable | None = None
    prepare: Callable | None = None  # Numba (p, tables, heads, rels, tails, H, T): edits H / T before the step
    prepare_reference: Callable | None = None


TERMS: dict[str, LossTerm] = {}


def register_term(term: LossTerm) -> LossTerm:
    TERMS[term.name] = term
    return term


def active_terms(config, kg=None) -> tuple[tuple[str, ...], tuple]:
    """``(names, params)`` of the terms ``config`` switches on for graph ``kg``, in registry order."""
    names, params = [], []
    for term in TERMS.values():
        p = term.params(config, kg)
        if p is not None:
            names.append(term.name)
            params.append(p)
    return tuple(names), tuple(params)


# -- attribute vectors (kernels/attributes.py): first, so that its gradient is the link loss's -----
from .attributes import (attribute_localize, attribute_needs, attribute_params, attributes_kernel,  # noqa: E402
                         attributes_reference, prepare, prepare_reference)

register_term(LossTerm("attributes", lambda sf: attributes_kernel, lambda sf: attributes_reference,
                       attribute_params, attribute_needs, attribute_localize, prepare, prepare_reference))


# -- the regularizer: coef * sum |x|^norm over the chunk's h, r, t rows ----------
class RegParams(NamedTuple):
    coef: np.float32
    norm: int  # 2 or 3


@numba.njit(cache=True, fastmath=True, nogil=True)
def regularizer_kernel(p, tables, scale, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN):
    penalty = add_regularization(H, p.coef, p.norm, gH)
    penalty += add_regularization(T, p.coef, p.norm, gT)
    penalty += add_regularization(R, p.coef, p.norm, gR)
    ent_rows, ent_grads = no_rows(H.shape[1])
    rel_rows, rel_grads = no_rows(R.shape[1])
    return penalty, ent_rows, ent_grads, rel_rows, rel_grads


def regularizer_reference(p, tables, scale, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN):
    coef, norm = float(p.coef), int(p.norm)
    penalty = 0.0
    for X, gX in ((H, gH), (T, gT), (R, gR)):
        penalty += coef * float((np.abs(X.astype(np.float64)) ** norm).sum())
        gX += (3.0 * coef * X * np.abs(X) if norm == 3 else 2.0 * coef * X).astype(gX.dtype)
    empty = np.empty(0, dtype=np.int64)
    return (penalty, empty, np.empty((0, H.shape[1]), H.dtype), empty,
            np.empty((0, R.shape[1]), R.dtype))


def _regularizer_params(config, kg):
    if not config.reg_coef > 0:
        return None
    return RegParams(np.float32(config.reg_coef), int(config.reg_norm))


register_term(LossTerm("regularizer", lambda sf: regularizer_kernel, lambda sf: regularizer_reference,
                       _regularizer_params))


# -- the debiasing KL term (kernels/kl.py) ------------------------------------------
from .kl import kl_localize, kl_needs, kl_params, make_kl_kernel, make_kl_reference  # noqa: E402

register_term(LossTerm("kl", make_kl_kernel, make_kl_reference, kl_params, kl_needs, kl_localize))


def localize_terms(names: tuple, params: tuple, gids: np.ndarray, local_of) -> tuple:
    """The terms' parameters over a table whose row i is entity ``gids[i]`` (see LossTerm)."""
    return tuple(TERMS[n].localize(p, gids, local_of) if TERMS[n].localize else p for n, p in zip(names, params))


def needed_entities(names: tuple, params: tuple) -> np.ndarray:
    """Global ids of the entities the terms read in every chunk (sorted, unique)."""
    ids = [np.asarray(TERMS[n].needs(p), dtype=np.int64) for n, p in zip(names, params) if TERMS[n].needs]
    return np.unique(np.concatenate(ids)) if ids else np.zeros(0, dtype=np.int64)


# -- composition ---------------------------------------------------------------
@numba.njit(cache=True, fastmath=True, nogil=True)
def _concat_rows(a_rows, a_grads, b_rows, b_grads):
    if b_rows.shape[0] == 0:
        return a_rows, a_grads
    if a_rows.shape[0] == 0:
        return b_rows, b_grads
    return np.concatenate((a_rows, b_rows)), np.concatenate((a_grads, b_grads))


@functools.lru_cache(maxsize=None)
def compose(model: str, names: tuple[str, ...]):
    """One Numba function running the terms ``names`` for ``model`` in order: same signature as a
    term's kernel, with ``p`` the tuple of their parameters (``active_terms``' second value)."""
    if not names:
        @numba.njit(fastmath=True, nogil=True)
        def no_terms(p, tables, scale, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN):
            ent_rows, ent_grads = no_rows(H.shape[1])
            rel_rows, rel_grads = no_rows(R.shape[1])
            return 0.0, ent_rows, ent_grads, rel_rows, rel_grads

        return no_terms
    from .registry import get_model

    first, rest = TERMS[names[0]].kernel(get_model(model)), compose(model, names[1:])

    @numba.njit(fastmath=True, nogil=True)
    def terms(p, tables, scale, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN):
        pen_a, er_a, eg_a, rr_a, rg_a = first(p[0], tables, scale, heads, rels, tails, negs, H, R, T, N,
                                              gH, gR, gT, gN)
        pen_b, er_b, eg_b, rr_b, rg_b = rest(p[1:], tables, scale, heads, rels, tails, negs, H, R, T, N,
                                             gH, gR, gT, gN)
        ent_rows, ent_grads = _concat_rows(er_a, eg_a, er_b, eg_b)
        rel_rows, rel_grads = _concat_rows(rr_a, rg_a, rr_b, rg_b)
        return pen_a + pen_b, ent_rows, ent_grads, rel_rows, rel_grads

    return terms


@functools.lru_cache(maxsize=None)
def compose_prepare(names: tuple[str, ...]):
    """One Numba function ``(p, tables, heads, rels, tails, H, T)`` running the ``prepare``
    kernels of the terms ``names`` (``p``: their parameters, as for ``compose``) in order."""
    if not names:
        @numba.njit(nogil=True)
        def nothing(p, tables, heads, rels, tails, H, T):
            pass

        return nothing
    first, rest = TERMS[names[0]].prepare, compose_prepare(names[1:])
    if first is None:
        @numba.njit(nogil=True)
        def skip_first(p, tables, heads, rels, tails, H, T):
            rest(p[1:], tables, heads, rels, tails, H, T)

        return skip_first

    @numba.njit(nogil=True)
    def both(p, tables, heads, rels, tails, H, T):
        first(p[0], tables, heads, rels, tails, H, T)
        rest(p[1:], tables, heads, rels, tails, H, T)

    return both


def compose_reference(model: str, names: tuple[str, ...]):
    """NumPy twin of ``compose``."""
    from .registry import get_model

    sf = get_model(model)

    def terms(p, tables, scale, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN):
        penalty = 0.0
        ent, rel = [], []
        for name, q in zip(names, p):
            pen, er, eg, rr, rg = TERMS[name].reference(sf)(q, tables, scale, heads, rels, tails, negs,
                                                            H, R, T, N, gH, gR, gT, gN)
            penalty += pen
            ent.append((er, eg))
            rel.append((rr, rg))
        return penalty, ent, rel

    return terms
