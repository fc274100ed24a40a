"""The bias probe's label of a person with several values: its first value in the triples' order (before
2026-12-02) against its most frequent value (now), on one FB15k-237 TransE_l2 model (dim 100, 20 epochs).

    KGNUM_DATA_DIR=../shared/datasets python bench/bench_probe_labels.py
"""
import numpy as np, kgnum, time
import kgnum.kernels.kl as kl
from kgnum.bias.measure import sensitive_relation, probe
kg = kgnum.load_dataset("FB15k-237")
t = time.time()
emb = kgnum.train(kg, "TransE_l2", dim=100, epochs=20, valid_every=0, seed=0, workers=2, progress=False)
print(f"trained in {time.time()-t:.0f} s")
new = kl.person_labels
def old(persons, values, top):  # the label before: a person's first value in the triples' order
    rank = np.full(int(max(values.max(), top.max())) + 1, -1, dtype=np.int64); rank[top] = np.arange(top.size)
    r = rank[values]; keep = r >= 0
    ids, first = np.unique(persons[keep], return_index=True)
    return ids, r[keep][first]
rels = ["/people/person/gender", "/people/person/religion", "/people/person/nationality", "/people/ethnicity/people"]
for name in rels:
    s = sensitive_relation(kg, name)
    ids, lab_new = new(s.persons, s.values, s.top_values); _, lab_old = old(s.persons, s.values, s.top_values)
    multi = np.unique(s.persons[np.isin(s.values, s.top_values)], return_counts=True)[1]
    res = {}
    for tag, f in (("first value", old), ("most frequent", new)):
        kl.person_labels = f
        res[tag] = probe(emb, s)
    kl.person_labels = new
    print(f"{name}: persons {ids.size}, with several top values {(multi > 1).sum()}, labels changed {(lab_new != lab_old).sum()}")
    for tag, r in res.items():
        print(f"   {tag:14s} accuracy {r['accuracy']:.3f} majority {r['majority']:.3f} probe-maj {r['accuracy']-r['majority']:+.3f}")
