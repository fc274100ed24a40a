"""A small generated graph with planted social bias, for tests and quick experiments.

Persons have a gender (``male`` / ``female``, 60 / 40), a profession and a city;
professions ``prof_m*`` are held mostly by men and ``prof_f*`` mostly by women,
``prof_n*`` by both equally; the ``member_of`` relation leaks gender (teams
``team_m*`` are men's, ``team_f*`` women's), the kind of correlation a debiasing
term has to remove from the person embeddings. The rest is learnable and carries
no gender: a person ``works_at`` one of its profession's two companies, ``knows``
people of its own city, and cities are ``located_in`` countries. Relation names:
``gender``, ``profession``, ``member_of``, ``lives_in``, ``knows``, ``works_at``,
``located_in``.
"""
from __future__ import annotations

import numpy as np

from ..data import KnowledgeGraph


def planted_bias_graph(n_persons: int = 600, n_prof: int = 4, skew: float = 0.9, seed: int = 0,
                       valid_fraction: float = 0.1) -> KnowledgeGraph:
    rng = np.random.default_rng(seed)
    persons = [f"person{i}" for i in range(n_persons)]
    male = rng.random(n_persons) < 0.6
    prof_m = [f"prof_m{i}" for i in range(n_prof)]
    prof_f = [f"prof_f{i}" for i in range(n_prof)]
    prof_n = [f"prof_n{i}" for i in range(n_prof)]
    cities = [f"city{i}" for i in range(12)]
    countries = [f"country{i}" for i in range(3)]
    teams_m = [f"team_m{i}" for i in range(3)]
    teams_f = [f"team_f{i}" for i in range(3)]
    city = rng.integers(0, len(cities), n_persons)
    triples = []
    for i, p in enumerate(persons):
        triples.append((p, "gender", "male" if male[i] else "female"))
        if rng.random() < 1 / 3:
            prof = rng.choice(prof_n)
        else:  # a skewed profession: of the person's own gender's group with probability `skew`
            own = rng.random() < skew
            prof = rng.choice(prof_m if own == bool(male[i]) else prof_f)
        triples.append((p, "profession", str(prof)))
        triples.append((p, "works_at", f"{prof}_company{rng.integers(2)}"))
        triples.append((p, "lives_in", cities[city[i]]))
        if rng.random() < 0.7:
            triples.append((p, "member_of", str(rng.choice(teams_m if male[i] else teams_f))))
        neighbours = np.flatnonzero(city == city[i])
        for other in rng.choice(neighbours, min(3, neighbours.size), replace=False):
            if other != i:
                triples.append((p, "knows", persons[other]))
    for c in cities:
        triples.append((c, "located_in", str(rng.choice(countries))))
    triples = list(dict.fromkeys(triples))  # no duplicates, order kept
    order = rng.permutation(len(triples))
    n_hold = int(valid_fraction * len(triples))
    # gender triples stay in train: the person side and the values are read from train
    held = [k for k in order if triples[k][1] not in ("gender", "located_in")][: 2 * n_hold]
    held_set = set(held)
    train = [triples[k] for k in range(len(triples)) if k not in held_set]
    names = {}
    for h, _, t in train:
        names.setdefault(h, len(names))
        names.setdefault(t, len(names))
    rels = {}
    for _, r, _ in triples:
        rels.setdefault(r, len(rels))
    seen = [triples[k] for k in held if triples[k][0] in names and triples[k][2] in names]

    def ids(rows):
        return np.array([(names[h], rels[r], names[t]) for h, r, t in rows], dtype=np.int32).reshape(-1, 3)

    half = len(seen) // 2
    return KnowledgeGraph("planted-bias", ids(train), ids(seen[:half]), ids(seen[half:]),
                          np.array(list(names), dtype=object), np.array(list(rels), dtype=object))
