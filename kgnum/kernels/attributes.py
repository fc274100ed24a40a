"""Attribute vectors (../shared/docs/BIAS.md, section 2): the step's row-augmentation term.

With ``--attribute-vectors`` each value v of a ``--debias`` relation j gets one learned
vector A_v, held as an extra entity row after the graph's own (``[ATTR] j v``), and j
gets a twin relation ``j[ATTR]`` whose triples repeat j's training triples. In a chunk,
the person of a twin triple (p, j[ATTR], v) is scored as e_p + A_v, the triple's own value
(a person with several values trains each of theirs), and every person of a whitelisted
triple (``--attribute-whitelist``: a relation, or a relation and tail, where the attribute
may legitimately be used) as e_p + the sum of its attribute vectors, one per relation (its
most frequent value's). So the
attribute is learned by A where it belongs, while the KL term keeps it out of e_p.

Two kernels per chunk (both model-agnostic: they work on the chunk's gathered rows):

* ``prepare``, before the model's step: adds the attribute rows into the gathered H / T
  rows of those positions (the rows are copies; the tables are untouched);
* the term kernel, run first among the terms: the gradient reaching an augmented row
  reaches its attribute rows unchanged (d(e + A)/dA = 1); they are returned as extra
  (rows, grads) and go through the same row-wise Adagrad. On a whitelisted triple the
  person row keeps its gradient too; on a twin triple it gets none (the twin relations
  train the attribute vectors: a person row trained on them would learn the attribute
  the KL term removes). It then takes the attribute rows back out of H / T, so the
  terms after it see the persons' own rows: the regularizer penalizes e_p, not e_p + A
  (whose gradient, reaching e_p, would push it along -A and write the attribute in).

Negatives are never attribute rows (the run's negative distribution gives them weight
zero) and the KL term reads persons' own rows from the table, not the augmented copies.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .kl import sensitive_triples
from .memory import no_rows

ATTR_TAG = "[ATTR]"


def twin_name(relation: str) -> str:
    """The twin relation of sensitive relation ``relation``."""
    return f"{relation}{ATTR_TAG}"


def attribute_name(relation: str, value: str) -> str:
    """The entity row holding the attribute vector of ``value`` of ``relation``."""
    return f"{ATTR_TAG} {relation} {value}"


def attribute_rows(entity_names) -> np.ndarray:
    """(n_entities,) bool: the rows holding attribute vectors (named by ``attribute_name``)."""
    return np.array([str(n).startswith(ATTR_TAG + " ") for n in entity_names], dtype=bool)


class AttrParams(NamedTuple):
    twin_of: np.ndarray  # (n_relations,) int64: j for the twin of sensitive relation j, else -1
    person_tail: np.ndarray  # (J,) uint8: 1 when the person is the tail of relation j
    whitelisted: np.ndarray  # (n_relations,) uint8: every triple of the relation is whitelisted
    pairs: np.ndarray  # (K,) int64 sorted keys relation * n_entities + tail of whitelisted (rel, tail)
    attr_of: np.ndarray  # (J, n_entities) int64: attribute row of the entity's value of j, or -1
    n_entities: np.int64  # rows of the table (keys of ``pairs`` and ``value_keys``)
    value_keys: np.ndarray  # (V,) int64 sorted keys j * n_entities + value entity of relation j
    value_rows: np.ndarray  # (V,) int64 the attribute row of that value


@numba.njit(cache=True, nogil=True)
def _is_whitelisted(p, rel, tail):
    if p.whitelisted[rel]:
        return True
    if p.pairs.shape[0] == 0:
        return False
    key = rel * p.n_entities + tail
    i = np.searchsorted(p.pairs, key)
    return i < p.pairs.shape[0] and p.pairs[i] == key


@numba.njit(cache=True, nogil=True)
def _value_row(p, j, value):
    """The attribute row of ``value`` of relation j, or -1."""
    key = j * p.n_entities + value
    i = np.searchsorted(p.value_keys, key)
    return p.value_rows[i] if i < p.value_keys.shape[0] and p.value_keys[i] == key else -1


@numba.njit(cache=True, nogil=True)
def _augmentations(p, heads, rels, tails):
    """``(position, side, attribute row)`` of every attribute added to the chunk's rows
    (side 0: the head row, 1: the tail row)."""
    n = 0
    out = np.empty((8, 3), dtype=np.int64)
    J = p.attr_of.shape[0]
    for i in range(heads.shape[0]):
        j = p.twin_of[rels[i]]
        if j >= 0:
            side = 1 if p.person_tail[j] else 0
            a = _value_row(p, j, heads[i] if side else tails[i])  # the triple's own value
            if a >= 0:
                if n == out.shape[0]:
                    out = np.concatenate((out, np.empty_like(out)))
                out[n, 0], out[n, 1], out[n, 2] = i, side, a
                n += 1
        elif _is_whitelisted(p, rels[i], tails[i]):
            for side in range(2):
                e = tails[i] if side else heads[i]
                for jj in range(J):
                    a = p.attr_of[jj, e]
                    if a >= 0:
                        if n == out.shape[0]:
                            out = np.concatenate((out, np.empty_like(out)))
                        out[n, 0], out[n, 1], out[n, 2] = i, side, a
                        n += 1
    return out[:n]


@numba.njit(cache=True, fastmath=True, nogil=True)
def prepare(p, tables, heads, rels, tails, H, T):
    """Add the attribute rows into the chunk's gathered rows H / T (in place)."""
    aug = _augmentations(p, heads, rels, tails)
    for k in range(aug.shape[0]):
        row = T[aug[k, 0]] if aug[k, 1] else H[aug[k, 0]]
        a = tables.entity[aug[k, 2]]
        for c in range(row.shape[0]):
            row[c] += a[c]


@numba.njit(cache=True, fastmath=True, nogil=True)
def attributes_kernel(p, tables, scale, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN):
    aug = _augmentations(p, heads, rels, tails)
    rows = aug[:, 2].copy()
    grads = np.empty((aug.shape[0], H.shape[1]), dtype=np.float32)
    for k in range(aug.shape[0]):
        grads[k] = gT[aug[k, 0]] if aug[k, 1] else gH[aug[k, 0]]
    for k in range(aug.shape[0]):
        if p.twin_of[rels[aug[k, 0]]] >= 0:  # a twin triple trains the attribute vector, not the person
            g = gT[aug[k, 0]] if aug[k, 1] else gH[aug[k, 0]]
            g[:] = 0.0
        row = T[aug[k, 0]] if aug[k, 1] else H[aug[k, 0]]  # the later terms see the person's own row
        a = tables.entity[aug[k, 2]]
        for c in range(row.shape[0]):
            row[c] -= a[c]
    rel_rows, rel_grads = no_rows(R.shape[1])
    return 0.0, rows, grads, rel_rows, rel_grads


def prepare_reference(p, tables, heads, rels, tails, H, T):
    """NumPy twin of ``prepare``."""
    for i in range(len(heads)):
        for side, a in _reference_augmentations(p, int(heads[i]), int(rels[i]), int(tails[i])):
            (T if side else H)[i] += tables.entity[a]


def attributes_reference(p, tables, scale, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN):
    rows, grads = [], []
    for i in range(len(heads)):
        for side, a in _reference_augmentations(p, int(heads[i]), int(rels[i]), int(tails[i])):
            rows.append(a)
            grads.append((gT if side else gH)[i].copy())
    for i in range(len(heads)):
        for side, a in _reference_augmentations(p, int(heads[i]), int(rels[i]), int(tails[i])):
            if p.twin_of[rels[i]] >= 0:
                (gT if side else gH)[i] = 0.0
            (T if side else H)[i] -= tables.entity[a]
    d = H.shape[1]
    return (0.0, np.array(rows, dtype=np.int64), np.array(grads, dtype=H.dtype).reshape(-1, d),
            np.empty(0, np.int64), np.empty((0, R.shape[1]), R.dtype))


def _reference_augmentations(p, h, r, t):
    j = int(p.twin_of[r])
    if j >= 0:
        side = int(p.person_tail[j])
        key = j * int(p.n_entities) + (h if side else t)
        where = np.flatnonzero(p.value_keys == key)
        return [(side, int(p.value_rows[where[0]]))] if where.size else []
    if not (p.whitelisted[r] or np.isin(r * int(p.n_entities) + t, p.pairs)):
        return []
    return [(side, int(a)) for side, e in ((0, h), (1, t)) for a in p.attr_of[:, e] if a >= 0]


def read_whitelist(path: str, kg) -> tuple[np.ndarray, np.ndarray]:
    """``--attribute-whitelist FILE``: lines ``REL`` or ``REL<TAB>TAIL`` (names as in the graph;
    blank lines skipped) -> (whitelisted relation ids, (rel, tail) id pairs). Errors name the
    file and line."""
    rels, pairs = [], []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        raise ValueError(f"--attribute-whitelist {path}: {e.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        where = f"--attribute-whitelist {path}, line {number}"
        if len(parts) > 2:
            raise ValueError(f"{where}: expected REL or REL<TAB>TAIL, got {len(parts)} fields")
        try:
            rel = kg.relation_id(parts[0])
        except ValueError:
            raise ValueError(f"{where}: no relation {parts[0]!r} in graph {kg.name!r}") from None
        if len(parts) == 1:
            rels.append(rel)
            continue
        try:
            pairs.append((rel, kg.entity_id(parts[1])))
        except ValueError:
            raise ValueError(f"{where}: no entity {parts[1]!r} in graph {kg.name!r}") from None
    return np.array(rels, dtype=np.int64), np.array(pairs, dtype=np.int64).reshape(-1, 2)


def person_values(kg, name: str, top_m: int):
    """``(relation id, person side, {person: value})`` of sensitive relation ``name``: a person
    with several values keeps the most frequent one in the graph (ties: by name, so that the
    choice does not depend on how the graph's files number the entities)."""
    rel, side, persons, values, _ = sensitive_triples(kg, name, "--debias", top_m=top_m)
    return rel, side, _most_frequent_values(kg, persons, values)


def _most_frequent_values(kg, persons: np.ndarray, values: np.ndarray) -> dict[int, int]:
    """{person: its most frequent value in the graph} over the triples (persons[i], values[i])."""
    ids, counts = np.unique(values, return_counts=True)
    names = np.asarray(kg.entity_names)[ids].astype(str)
    rank = dict(zip(ids[np.lexsort((names, -counts))].tolist(), range(ids.size)))
    best: dict[int, int] = {}
    for person, value in zip(persons.tolist(), values.tolist()):
        if person not in best or rank[value] < rank[best[person]]:
            best[person] = value
    return best


def attribute_params(config, kg) -> AttrParams | None:
    """The term's parameters for a graph that ``kgnum.bias.attributes.augment`` extended: the
    twin relations and attribute rows are found by their names."""
    if not getattr(config, "attribute_vectors", False) or not config.debias or kg is None:
        return None
    names = config.debias_relations()
    n_e = kg.n_entities
    twin_of = np.full(kg.n_relations, -1, dtype=np.int64)
    attr_of = np.full((len(names), n_e), -1, dtype=np.int64)
    person_tail = np.zeros(len(names), dtype=np.uint8)
    value_keys, value_rows = [], []
    for j, name in enumerate(names):
        try:
            twin_of[kg.relation_id(twin_name(name))] = j
        except ValueError:
            raise ValueError(f"--attribute-vectors: the graph has no twin relation {twin_name(name)!r} "
                             f"(kgnum.bias.attributes.augment adds it)") from None
        rel, side, persons, values, _ = sensitive_triples(kg, name, "--debias", top_m=int(config.debias_top_m))
        person_tail[j] = side == "tail"
        row_of = {v: kg.entity_id(attribute_name(name, str(kg.entity_names[v]))) for v in np.unique(values).tolist()}
        for person, value in _most_frequent_values(kg, persons, values).items():
            attr_of[j, person] = row_of[value]
        value_keys += [j * n_e + v for v in row_of]
        value_rows += list(row_of.values())
    whitelisted = np.zeros(kg.n_relations, dtype=np.uint8)
    pairs = np.zeros(0, dtype=np.int64)
    if config.attribute_whitelist:
        rels, rel_tails = read_whitelist(config.attribute_whitelist, kg)
        whitelisted[rels] = 1
        pairs = np.unique(rel_tails[:, 0] * n_e + rel_tails[:, 1])
    order = np.argsort(np.array(value_keys, dtype=np.int64), kind="stable")
    return AttrParams(twin_of, person_tail, whitelisted, pairs, attr_of, np.int64(n_e),
                      np.array(value_keys, dtype=np.int64)[order], np.array(value_rows, dtype=np.int64)[order])


def attribute_needs(p: AttrParams) -> np.ndarray:
    """Every attribute row (each chunk may read any of them)."""
    return np.unique(np.concatenate([p.attr_of[p.attr_of >= 0], p.value_rows]))


def attribute_localize(p: AttrParams, gids: np.ndarray, local_of) -> AttrParams:
    """``p`` over a table whose row i is entity ``gids[i]`` (the cluster engine's parts)."""
    attr = p.attr_of[:, gids]
    local = attr.copy()
    local[attr >= 0] = local_of(attr[attr >= 0])
    n_local = np.int64(gids.shape[0])
    rel, tail = np.divmod(p.pairs, p.n_entities)
    where = {int(g): i for i, g in enumerate(gids.tolist())}
    keep = [k for k, t in enumerate(tail.tolist()) if t in where]
    pairs = np.sort(np.array([rel[k] * n_local + where[int(tail[k])] for k in keep], dtype=np.int64))
    j, value = np.divmod(p.value_keys, p.n_entities)
    held = [k for k, v in enumerate(value.tolist()) if v in where]  # values this table holds
    keys = np.array([j[k] * n_local + where[int(value[k])] for k in held], dtype=np.int64)
    rows = local_of(p.value_rows[held]) if held else np.zeros(0, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    return p._replace(attr_of=np.ascontiguousarray(local), pairs=pairs, n_entities=n_local,
                      value_keys=keys[order], value_rows=np.asarray(rows, dtype=np.int64)[order])
