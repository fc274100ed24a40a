"""The debiasing KL term (../shared/docs/BIAS.md, section 2): an extra loss term of the step.

For every person p among a chunk's heads and tails and each sensitive relation j it
has training triples of, q_pj = softmax over j's top-M values m of g(e_p, r_j, e_m)
(the person on the side the data puts it); the term adds w_j * KL(G_j || q_pj) (G_j uniform 1/M), scaled
like the chunk's loss (1 / positives in the batch). Only person rows receive its
gradient, d/dS KL(G || softmax(S)) = softmax(S) - G, back through the model's
metric and query form (or its pair kernel for TransR): relation rows and value
entities are frozen for this term and keep training through the ordinary loss.
Model-agnostic: it uses the registry's query / metric functions.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from .losses import exp_nonpositive
from .memory import gather_rows, no_rows
from .metrics import CANDIDATE_FORMS, _row_sq_norms
from .score import pair_block_kernel

TWO_VALUED_WEIGHT = 1.0  # BIAS.md: gender 1,
MANY_VALUED_WEIGHT = 100.0  # ... the others 100


class KLParams(NamedTuple):
    relations: np.ndarray  # (J,) int64 sensitive relation ids
    person_tail: np.ndarray  # (J,) uint8: 1 when the person is the tail of relation j
    values: np.ndarray  # (J, M) int64 top values, padded
    n_values: np.ndarray  # (J,) int64
    target: np.ndarray  # (J, M) float32 target distribution G_j (uniform over the first n_values)
    weights: np.ndarray  # (J,) float32
    person_mask: np.ndarray  # (J, n_entities) uint8: entity is a person of relation j
    gamma: np.float32


@numba.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
def _target_entropy(target, m):
    """sum_i G_i log G_i over the G_i > 0 (the constant part of KL(G || q))."""
    out = 0.0
    for i in range(m):
        if target[i] > 0:
            out += target[i] * math.log(target[i])
    return out


@numba.njit(cache=True, nogil=True)
def _persons_of(ids, mask_row):
    n = 0
    for i in range(ids.shape[0]):
        n += mask_row[ids[i]]
    sel = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(ids.shape[0]):
        if mask_row[ids[i]]:
            sel[k] = i
            k += 1
    return sel


def make_kl_kernel(sf):
    """The term's Numba kernel for score function ``sf``."""
    if sf.metric == "pair":
        return _make_pair_kl(sf)
    query = sf.query
    split, scores, grad, norms = CANDIDATE_FORMS[sf.metric]

    @numba.njit(fastmath=True, nogil=True)
    def kl(p, tables, scale, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN):
        entity, relation = tables.entity, tables.relation
        ent_rows, ent_grads = no_rows(H.shape[1])
        rel_rows, rel_grads = no_rows(R.shape[1])
        # every place a person of any sensitive relation takes in the chunk, heads then tails, and
        # per relation which of those places are its persons; a person is scored on the side the
        # data puts it, whichever side of the chunk it is on
        pos, members, counts = _person_places(heads, tails, p.person_mask)
        n, d, c, width = pos.shape[0], entity.shape[1], heads.shape[0], p.values.shape[1]
        if n == 0:
            return 0.0, ent_rows, ent_grads, rel_rows, rel_grads
        ids = np.empty(n, dtype=np.int64)
        for k in range(n):
            ids[k] = heads[pos[k]] if pos[k] < c else tails[pos[k] - c]
        # the persons' own rows (chunk rows may carry attribute vectors) and their squared norms,
        # read once for every relation; their gradients are summed before one scatter
        persons = gather_rows(entity, ids)
        pp_all = _row_sq_norms(persons) if norms else np.empty(0, dtype=np.float32)
        g_persons = np.zeros((n, d), dtype=np.float32)
        # every relation's blocks are views of these: persons, their gradients, scores, the form's
        # keep, its split queries; then the softmax's per-person vectors
        block = np.empty((4, max(width, d) * n), dtype=np.float32)
        split_rows = np.empty((width, d), dtype=np.float32)
        vec = np.empty((6, max(width, n)), dtype=np.float32)
        scratch = np.empty(n, dtype=np.int32)
        penalty = 0.0
        # per relation, its values as query rows against its own persons as candidates: the
        # form's candidate gradient is the persons' gradient (about half the persons of a chunk
        # lack a given sensitive relation, so one block over all of them would waste half its work)
        for j in range(p.relations.shape[0]):
            nj, m = counts[j], p.n_values[j]
            if nj == 0:
                continue
            V = gather_rows(entity, p.values[j, :m])
            Rm = np.empty((m, relation.shape[1]), dtype=np.float32)
            for i in range(m):
                Rm[i] = relation[p.relations[j]]
            a = vec[5, :m]
            Qd = split(query(V, Rm, V, p.person_tail[j] == 0), d, split_rows[:m], a)
            P, gP = block[0, :nj * d].reshape(nj, d), block[1, :nj * d].reshape(nj, d)
            S, keep = block[2, :m * nj].reshape(m, nj), block[3, :m * nj].reshape(m, nj)
            pp = vec[4, :nj]
            for k in range(nj):
                src, dst = persons[members[j, k]], P[k]
                for t in range(d):
                    dst[t] = src[t]
                if norms:
                    pp[k] = pp_all[members[j, k]]
            scores(Qd, a, P, pp, p.gamma, S, keep)
            # S becomes dS in place: weight * (softmax - G) down every column
            penalty += _kl_softmax_grad(S, S, p.target[j], p.weights[j] * scale, vec[0, :nj], vec[1, :nj],
                                        vec[2, :nj], vec[3, :nj], scratch[:nj])
            grad(Qd, P, keep, S, p.gamma, gP)  # relations and values are frozen for this term
            for k in range(nj):
                row, g = g_persons[members[j, k]], gP[k]
                for t in range(d):
                    row[t] += g[t]
        for k in range(n):
            at = pos[k]
            row, g = gH[at] if at < c else gT[at - c], g_persons[k]
            for t in range(d):
                row[t] += g[t]
        return penalty, ent_rows, ent_grads, rel_rows, rel_grads

    return kl


@numba.njit(cache=True, nogil=True)
def _person_places(heads, tails, masks):
    """``(pos, members, counts)``: the positions (i for heads[i], c + i for tails[i]) whose entity is
    a person of any relation, and for relation j, ``members[j, :counts[j]]`` the indices into
    ``pos`` of its own persons. One pass over the chunk."""
    c, J = heads.shape[0], masks.shape[0]
    pos = np.empty(2 * c, dtype=np.int64)
    members = np.empty((J, 2 * c), dtype=np.int64)
    counts = np.zeros(J, dtype=np.int64)
    n = 0
    for k in range(2 * c):
        e = heads[k] if k < c else tails[k - c]
        found = False
        for j in range(J):
            if masks[j, e]:
                if not found:
                    pos[n] = k
                    n += 1
                    found = True
                members[j, counts[j]] = n - 1
                counts[j] += 1
    return pos[:n], members, counts


@numba.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
def _kl_grad_columns(S, dS, target, weight):
    """``_kl_softmax_grad`` with its own vectors."""
    n = S.shape[1]
    return _kl_softmax_grad(S, dS, target, weight, np.empty(n, dtype=np.float32), np.empty(n, dtype=np.float32),
                            np.empty(n, dtype=np.float32), np.empty(n, dtype=np.float32),
                            np.empty(n, dtype=np.int32))


@numba.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
def _kl_softmax_grad(S, dS, target, weight, top, z, g_s, x, scratch):
    """dS = weight * (softmax - G) down every column of S (m values x persons); returns weight *
    the sum of the columns' KL(G || softmax), as KL(G || q) = sum G log G - sum G s + log Z * sum G:
    one exp per score, one log per column. Row by row, in float32 with the loss's vectorizable
    exp: the block is read along its rows, and every loop runs across the persons. dS may be S
    (each row is read before it is written); top, z, g_s, x (n,) float32 and scratch (n,) int32
    are the caller's work vectors."""
    m, n = S.shape
    g_log_g = _target_entropy(target, m)
    g_sum = 0.0
    for i in range(m):
        g_sum += target[i]
    top[:] = S[0]
    for i in range(1, m):
        row = S[i]
        for k in range(n):
            top[k] = max(top[k], row[k])
    z[:] = 0.0
    g_s[:] = 0.0
    for i in range(m):
        row, drow, g = S[i], dS[i], target[i]
        for k in range(n):
            x[k] = row[k] - top[k]
            g_s[k] += g * row[k]
        exp_nonpositive(x, drow, scratch)
        for k in range(n):
            z[k] += drow[k]
    total = 0.0
    for k in range(n):
        total += g_log_g - g_s[k] + (math.log(z[k]) + top[k]) * g_sum
        z[k] = np.float32(weight) / z[k]
    w = np.float32(weight)
    for i in range(m):
        drow, g = dS[i], target[i] * w
        for k in range(n):
            drow[k] = drow[k] * z[k] - g
    return weight * total


def _make_pair_kl(sf):
    block = pair_block_kernel(sf)

    @numba.njit(fastmath=True, nogil=True)
    def kl(p, tables, scale, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN):
        entity, relation = tables.entity, tables.relation
        penalty = 0.0
        none = np.empty(0, dtype=np.float32)
        for j in range(p.relations.shape[0]):
            m = p.n_values[j]
            V = gather_rows(entity, p.values[j, :m])
            rj = relation[p.relations[j]]
            tail = p.person_tail[j] == 1  # values are the heads: score the person's heads
            g_rel = np.zeros_like(rj)  # relation and values are frozen for this term: dropped
            g_val = np.zeros_like(V)
            g_other = np.zeros(V.shape[1], dtype=np.float32)
            s = np.empty(m, dtype=np.float32)
            for side in range(2):
                ids, gX = (heads, gH) if side == 0 else (tails, gT)
                sel = _persons_of(ids, p.person_mask[j])
                n = sel.shape[0]
                if n == 0:
                    continue
                S = np.empty((m, n), dtype=np.float32)  # values x persons, as the query-form kernel
                P = gather_rows(entity, ids[sel])  # the persons' own rows (see the query-form kernel)
                for k in range(n):  # the person against every value: one block of candidates
                    block(P[k], rj, P[k], V, tail, p.gamma, none, g_other, g_rel, g_other, g_val, s)
                    S[:, k] = s
                dS = np.empty_like(S)
                penalty += _kl_grad_columns(S, dS, p.target[j], p.weights[j] * scale)
                for k in range(n):
                    ds = np.ascontiguousarray(dS[:, k])
                    g = gX[sel[k]]
                    block(P[k], rj, P[k], V, tail, p.gamma, ds, g, g_rel, g, g_val, s)
        ent_rows, ent_grads = no_rows(H.shape[1])
        rel_rows, rel_grads = no_rows(R.shape[1])
        return penalty, ent_rows, ent_grads, rel_rows, rel_grads

    return kl


def make_kl_reference(sf):
    """NumPy twin of the kernel: scores and person gradients from the model's reference."""
    def kl(p, tables, scale, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN):
        entity, relation = tables.entity.astype(np.float64), tables.relation.astype(np.float64)
        penalty = 0.0
        for j in range(len(p.relations)):
            m = int(p.n_values[j])
            V = entity[p.values[j, :m]][None, :, :]
            r = relation[p.relations[j]][None, None, :]
            G = p.target[j, :m].astype(np.float64)
            tail = bool(p.person_tail[j])
            for ids, gX in ((heads, gH), (tails, gT)):
                sel = np.flatnonzero(p.person_mask[j][ids])
                if sel.size == 0:
                    continue
                P = entity[ids[sel]][:, None, :]  # the persons' own rows, not the chunk's (attributes)
                S = sf.score(V, r, P, float(p.gamma)) if tail else sf.score(P, r, V, float(p.gamma))
                S = np.broadcast_to(S, (sel.size, m))
                log_q = S - S.max(1, keepdims=True)
                log_q = log_q - np.log(np.exp(log_q).sum(1, keepdims=True))
                w = float(p.weights[j]) * scale
                penalty += w * float((G * (np.log(np.where(G > 0, G, 1.0)) - log_q))[:, G > 0].sum())
                dS = w * (np.exp(log_q) - G)
                grads = sf.grad(V, r, P, float(p.gamma)) if tail else sf.grad(P, r, V, float(p.gamma))
                g_person = np.broadcast_to(grads[2] if tail else grads[0], (sel.size, m, P.shape[-1]))
                np.add.at(gX, sel, (dS[:, :, None] * g_person).sum(1).astype(gX.dtype))
        e = np.empty(0, dtype=np.int64)
        return penalty, e, np.empty((0, H.shape[1]), H.dtype), e, np.empty((0, R.shape[1]), R.dtype)

    return kl


def parse_weights(spec: str | None, relations: list[str]) -> dict[str, float]:
    """``REL=W,...`` (``--debias-weight``) into {relation: weight}; errors name the flag."""
    out = {}
    for part in [s for s in (spec or "").split(",") if s]:
        rel, sep, w = part.rpartition("=")
        try:
            weight = float(w)
        except ValueError:
            weight = math.nan
        if not sep or not rel or not weight >= 0:
            raise ValueError(f"--debias-weight {part}: expected REL=WEIGHT with a weight >= 0")
        if rel not in relations:
            raise ValueError(f"--debias-weight {part}: {rel!r} is not one of --debias {','.join(relations)}")
        out[rel] = weight
    return out


def sensitive_triples(kg, name: str, flag: str, person_side: str | None = None, top_m: int = 30):
    """``(relation id, person side, persons, values, top values)`` of sensitive relation ``name``.

    persons / values (n,) int64: the two ends of each of its training triples; the person side is
    the one with more distinct entities unless given; top values: the ``top_m`` most frequent
    values, most frequent first, ties by entity name (so the choice does not depend on how the
    graph's files number the entities). Errors name ``flag``.
    """
    try:
        rel = kg.relation_id(name)
    except ValueError:
        raise ValueError(f"{flag} {name}: no such relation in graph {kg.name!r}") from None
    triples = kg.train[kg.train[:, 1] == rel]
    if triples.shape[0] == 0:
        raise ValueError(f"{flag} {name}: the relation has no training triples")
    heads, tails = triples[:, 0].astype(np.int64), triples[:, 2].astype(np.int64)
    if person_side is None:  # persons are the many, values the few
        person_side = "head" if np.unique(heads).size >= np.unique(tails).size else "tail"
    if person_side not in ("head", "tail"):
        raise ValueError(f"--person-side {name}={person_side}: expected head or tail")
    persons, values = (heads, tails) if person_side == "head" else (tails, heads)
    ids, counts = np.unique(values, return_counts=True)
    if ids.size < 2:
        raise ValueError(f"{flag} {name}: needs at least two values, the graph has {ids.size}")
    names = np.asarray(kg.entity_names)[ids].astype(str)
    top = ids[np.lexsort((names, -counts))[:top_m]].astype(np.int64)
    return rel, person_side, persons, values, top


def person_labels(persons: np.ndarray, values: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, labels)``: every person with a value among ``top``, sorted by id, and one label each:
    the position in ``top`` of its most frequent value (the first of its values in ``top``).
    Independent of the triples' order and of the values' ids."""
    rank = np.full(int(max(values.max(), top.max())) + 1, -1, dtype=np.int64)
    rank[top] = np.arange(top.size)
    r = rank[values]
    keep = r >= 0
    p, r = persons[keep], r[keep]
    order = np.lexsort((r, p))
    p, r = p[order], r[order]
    first = np.ones(p.size, dtype=bool)
    first[1:] = p[1:] != p[:-1]
    return p[first], r[first]


def kl_params(config, kg) -> KLParams | None:
    """The term's parameters from ``--debias``, ``--debias-top-m``, ``--debias-weight`` and the graph."""
    if not getattr(config, "debias", None) or getattr(config, "debias_method", "kl") != "kl" or kg is None:
        return None
    relations = config.debias_relations()
    weights = parse_weights(config.debias_weight, relations)
    top_m = int(config.debias_top_m)
    rel_ids, tail, values, masks, w = [], [], [], [], []
    for name in relations:
        rel, side, persons, all_values, top = sensitive_triples(kg, name, "--debias", top_m=top_m)
        person_tail = side == "tail"
        n_values = np.unique(all_values).size
        mask = np.zeros(kg.n_entities, dtype=np.uint8)
        mask[persons] = 1
        rel_ids.append(rel)
        tail.append(person_tail)
        values.append(top)
        masks.append(mask)
        w.append(weights.get(name, TWO_VALUED_WEIGHT if n_values == 2 else MANY_VALUED_WEIGHT))
    width = max(v.size for v in values)
    padded = np.zeros((len(values), width), dtype=np.int64)
    target = np.zeros((len(values), width), dtype=np.float32)
    for j, v in enumerate(values):
        padded[j, :v.size] = v
        target[j, :v.size] = 1.0 / v.size
    return KLParams(np.array(rel_ids, dtype=np.int64), np.array(tail, dtype=np.uint8), padded,
                    np.array([v.size for v in values], dtype=np.int64), target, np.array(w, dtype=np.float32),
                    np.stack(masks), np.float32(config.gamma))


def kl_needs(p: KLParams) -> np.ndarray:
    """The value entities every chunk reads (the persons come with the chunk's own rows)."""
    return np.concatenate([p.values[j, :p.n_values[j]] for j in range(p.values.shape[0])])


def kl_localize(p: KLParams, gids: np.ndarray, local_of) -> KLParams:
    """``p`` over a table whose row i is entity ``gids[i]``: values renumbered, person masks cut."""
    values = p.values.copy()
    for j in range(values.shape[0]):
        values[j, :p.n_values[j]] = local_of(p.values[j, :p.n_values[j]])
    return p._replace(values=values, person_mask=np.ascontiguousarray(p.person_mask[:, gids]))
