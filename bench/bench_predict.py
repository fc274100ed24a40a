"""Batch inference: top-k tails for many (head, relation) queries, kgnum against plain NumPy.

    python bench/bench_predict.py --load bench/out/fb_default_TransE_l2 --queries 10000 --k 10

The queries are (head, relation) pairs of the model's own training triples (the first
``--queries`` of a seeded permutation). kgnum: ``Embeddings.predict_tail`` on arrays, with
and without excluding the known triples (``exclude="all"``). NumPy: the same scores from
the model's NumPy reference ``score`` broadcast over all entities in blocks, then
``argpartition``; one thread each, and all threads, in the same run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import kgnum


def numpy_top(emb, heads, rels, k, block=64):
    sf, E = emb.score_function, emb.entity
    out = np.empty((heads.size, k), dtype=np.int64)
    for a in range(0, heads.size, block):
        h = E[heads[a:a + block]][:, None, :]
        r = emb.relation[rels[a:a + block]][:, None, :]
        s = sf.score(h, r, E[None, :, :], emb.gamma)
        out[a:a + block] = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", required=True)
    parser.add_argument("--queries", type=int, default=10000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--numpy-queries", type=int, default=1000, help="queries for the (slow) NumPy reference")
    parser.add_argument("--dataset", default="FB15k-237", help="the model's graph, when it was saved without "
                        "its triples")
    args = parser.parse_args()

    emb = kgnum.load(args.load)
    if emb.known_triples is None:  # saved by an earlier kgnum: take the triples from the dataset, by name
        kg = kgnum.load_dataset(args.dataset).aligned_to(emb.entity_names, emb.relation_names)
        emb.known_triples = {s: kg.split(s) for s in ("train", "valid", "test")}
    train = emb.known_triples["train"]
    pick = np.random.default_rng(0).permutation(train.shape[0])[:args.queries]
    heads, rels = train[pick, 0].astype(np.int64), train[pick, 1].astype(np.int64)
    emb.predict_tail(heads[:8], rels[:8], args.k)  # compile
    print(f"{emb}: top-{args.k} tails of {heads.size:,} (head, relation) queries")
    results = {}
    for threads in (1, None):
        label = "1 thread" if threads == 1 else "all threads"
        with threadpool_limits(threads):
            for exclude in (None, "all"):
                t0 = time.perf_counter()
                emb.predict_tail(heads, rels, args.k, exclude=exclude)
                results[(label, exclude)] = time.perf_counter() - t0
            n = min(args.numpy_queries, heads.size)
            t0 = time.perf_counter()
            numpy_top(emb, heads[:n], rels[:n], args.k)
            results[(label, "numpy")] = (time.perf_counter() - t0) * heads.size / n
    for label in ("1 thread", "all threads"):
        np_s = results[(label, "numpy")]
        print(f"{label:12s} kgnum {results[(label, None)]:6.2f} s ({heads.size / results[(label, None)]:,.0f} "
              f"queries/s), excluding known {results[(label, 'all')]:6.2f} s; NumPy reference "
              f"{np_s:7.2f} s (extrapolated from {min(args.numpy_queries, heads.size):,}); "
              f"kgnum/NumPy speed-up {np_s / results[(label, None)]:.1f}x")


if __name__ == "__main__":
    main()
