"""Filtered evaluation speed: kgnum vs a plain NumPy ranking, in one run.

    python bench/bench_eval.py                 # FB15k-237 test, TransE_l2 dim 400, both sides
    python bench/bench_eval.py --tiled-models  # TransE_l2 only

Then the models whose metric has no BLAS product (RotatE, TransE_l1): their
scoring splits query rows over threads; timed on one thread and on all
threads in the same run.

kgnum: ``kgnum.evaluate`` (BLAS scoring of each distinct (anchor, relation)
once, Numba filtered ranking). Reference: NumPy scoring per batch of queries
and ranking with the filter applied by boolean masks, timed on a sample of
queries and extrapolated per query. Both see the same (random) embeddings,
so the ranks must agree; the script checks it on the sample.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import kgnum
from kgnum.eval import FilterIndex


def numpy_ranks(emb, triples, known, predict_head: bool) -> np.ndarray:
    """Tie-averaged filtered ranks with NumPy only (one query at a time for the filter)."""
    filt = FilterIndex.from_triples(known, emb.n_entities, emb.relation.shape[0])
    anchor = triples[:, 2] if predict_head else triples[:, 0]
    truth = triples[:, 0] if predict_head else triples[:, 2]
    ent = emb.entity
    rel = emb.relation[triples[:, 1]]
    query = (ent[anchor] - rel) if predict_head else (ent[anchor] + rel)
    sq = (query * query).sum(1)[:, None] + (ent * ent).sum(1)[None, :] - 2 * query @ ent.T
    scores = emb.gamma - np.sqrt(np.maximum(sq, 0))
    ranks = np.empty(len(triples))
    for i in range(len(triples)):
        row = scores[i]
        true = row[truth[i]]
        mask = np.ones(row.shape[0], bool)
        mask[filt.answers(anchor[i], triples[i, 1], predict_head)] = False
        mask[truth[i]] = True
        cand = row[mask]
        ranks[i] = 1 + (cand > true).sum() + ((cand == true).sum() - 1) / 2
    return ranks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="FB15k-237")
    parser.add_argument("--dim", type=int, default=400)
    parser.add_argument("--sample", type=int, default=2000, help="queries per side for the NumPy reference")
    parser.add_argument("--tiled-models", nargs="*", default=["RotatE", "TransE_l1"])
    args = parser.parse_args()
    kg = kgnum.load_dataset(args.dataset)
    emb = kgnum.train(kg, "TransE_l2", dim=args.dim, max_steps=1, progress=False)
    metrics = kgnum.evaluate(emb, kg)  # warm-up: compile the ranking kernel
    start = time.perf_counter()
    metrics = kgnum.evaluate(emb, kg)
    ours = time.perf_counter() - start
    n = metrics["n_queries"]
    sample = kg.test[np.random.default_rng(0).choice(len(kg.test), args.sample, replace=False)]
    known = kg.all_triples()
    start = time.perf_counter()
    ref = [numpy_ranks(emb, sample, known, side) for side in (True, False)]
    per_query = (time.perf_counter() - start) / (2 * args.sample)
    from kgnum.eval import evaluate_ranks

    check = evaluate_ranks(emb.score_candidates, sample, FilterIndex.from_triples(known, kg.n_entities, kg.n_relations),
                           kg.n_entities)
    agree = np.mean(np.abs(np.concatenate([check["head"], check["tail"]]) - np.concatenate(ref)) <= 0.5)
    print(f"{kg}: {n:,} queries (both sides), TransE_l2 dim {args.dim}")
    print(f"kgnum.evaluate: {ours:6.2f} s   ({n / ours:,.0f} queries/s)")
    print(f"NumPy reference: {per_query * n:6.2f} s   (extrapolated from {2 * args.sample:,} queries)")
    print(f"speed-up: {per_query * n / ours:.1f}x   ranks agreeing (within 0.5): {100 * agree:.2f}%")
    for model in args.tiled_models:
        emb = kgnum.train(kg, model, dim=args.dim, max_steps=1, progress=False)
        kgnum.evaluate(emb, kg, "valid")  # compile
        with threadpool_limits(1):
            one = kgnum.evaluate(emb, kg)
        every = kgnum.evaluate(emb, kg)
        same = "same" if one["mrr"] == every["mrr"] else "DIFFERENT"
        print(f"{model} dim {args.dim}: {one['eval_seconds']:.1f} s on 1 thread, {every['eval_seconds']:.1f} s "
              f"on all ({one['eval_seconds'] / every['eval_seconds']:.2f}x; {same} MRR)")


if __name__ == "__main__":
    main()
