"""The bias probe's label of a person with several values: its first value in the triples' order (before
2026-12-02) against its most frequent value (now), on one FB15k-237 TransE_l2 model (dim 100, 20 epochs,
2 workers, seed 0). Both use the present split of the persons (in the order of their names).

    KGNUM_DATA_DIR=../shared/datasets python bench/bench_probe_labels.py
"""
from __future__ import annotations

import time

import numpy as np

import kgnum
import kgnum.kernels.kl as kl
from kgnum.bias.measure import probe, sensitive_relation

RELATIONS = ["/people/person/gender", "/people/person/religion", "/people/person/nationality",
             "/people/ethnicity/people"]


def first_value_labels(persons, values, top):
    """The label before: of a person's values among ``top``, the first in the triples' order."""
    rank = np.full(int(max(values.max(), top.max())) + 1, -1, dtype=np.int64)
    rank[top] = np.arange(top.size)
    r = rank[values]
    keep = r >= 0
    ids, first = np.unique(persons[keep], return_index=True)
    return ids, r[keep][first]


def main() -> None:
    kg = kgnum.load_dataset("FB15k-237")
    t = time.time()
    emb = kgnum.train(kg, "TransE_l2", dim=100, epochs=20, valid_every=0, seed=0, workers=2, progress=False)
    print(f"trained in {time.time() - t:.0f} s")
    most_frequent = kl.person_labels
    for name in RELATIONS:
        s = sensitive_relation(kg, name)
        ids, new = most_frequent(s.persons, s.values, s.top_values)
        _, old = first_value_labels(s.persons, s.values, s.top_values)
        per_person = np.unique(s.persons[np.isin(s.values, s.top_values)], return_counts=True)[1]
        print(f"{name}: persons {ids.size}, with several top values {(per_person > 1).sum()}, "
              f"labels changed {(new != old).sum()}")
        for tag, labels in (("first value", first_value_labels), ("most frequent", most_frequent)):
            kl.person_labels = labels
            try:
                r = probe(emb, s)
            finally:
                kl.person_labels = most_frequent
            print(f"   {tag:14s} accuracy {r['accuracy']:.3f} majority {r['majority']:.3f} "
                  f"probe-maj {r['accuracy'] - r['majority']:+.3f}")


if __name__ == "__main__":
    main()
