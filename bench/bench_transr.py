"""TransR: the projected kernels against the per-pair ones, training and evaluation, in one run.

    python bench/bench_transr.py                       # FB15k-237, dim 100 (TransR's default)
    python bench/bench_transr.py --dim 50 --chunks 20

TransR has no query form: every candidate is projected by the positive's own
relation matrix. The per-pair kernel (``pair_score_grad``) evaluates each
(positive, negative) pair with its own matrix-vector product; the projected
kernels project all of a chunk's negatives with one product per positive
(training, ``pair_block``) and the whole entity table once per relation of a
batch of queries (evaluation, ``pair_project`` / ``pair_query``). Both give
the same numbers; this prints positives/s of the training kernel on one core
(chunks of 200 positives sharing 200 negatives, the step's defaults) and the
seconds of filtered ranking of the first 256 test triples, each with the
ratio, and the projected evaluation's seconds for the whole test split.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
from threadpoolctl import threadpool_limits

import kgnum
from kgnum.embeddings import Embeddings
from kgnum.eval import FilterIndex, evaluate_ranks
from kgnum.kernels.memory import gather_rows
from kgnum.kernels.registry import get_model
from kgnum.kernels.step import _make_pair_chunk


def train_rate(sf, entity, relation, edges, chunks: int, chunk: int = 200, neg: int = 200) -> float:
    kernel = _make_pair_chunk(sf)
    rng = np.random.default_rng(0)
    order = rng.permutation(edges.shape[0])
    negs = rng.integers(0, entity.shape[0], (chunks, neg))

    def run(n):
        start = time.process_time()
        for c in range(n):
            e = edges[order[c * chunk:(c + 1) * chunk]]
            H, R = gather_rows(entity, e[:, 0]), gather_rows(relation, e[:, 1])
            T, N = gather_rows(entity, e[:, 2]), gather_rows(entity, negs[c])
            kernel(H, R, T, N, c % 2 == 1, np.float32(9.0), np.float32(1.0), np.float32(1.0 / 1000))
        return time.process_time() - start

    run(1)  # compile
    return chunks * chunk / run(chunks)


def eval_seconds(emb, kg, index, n: int | None) -> float:
    """CPU seconds of filtered ranking (both sides) of the first ``n`` test triples (None: all),
    through evaluation's own batching (queries grouped by relation)."""
    test = kg.test if n is None else kg.test[:n]
    emb.score_candidates(test[:8, 0], test[:8, 1], False)  # compile
    start = time.process_time()
    evaluate_ranks(emb.score_candidates, test, index, kg.n_entities)
    return time.process_time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="FB15k-237")
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=10, help="chunks timed for the projected kernel "
                        "(the per-pair one gets a tenth of them, at least 1)")
    parser.add_argument("--queries", type=int, default=256, help="test triples ranked by both kernels")
    args = parser.parse_args()
    kg = kgnum.load_dataset(args.dataset)
    sf = get_model("TransR")
    entity, relation = sf.init_tables(kg.n_entities, kg.n_relations, args.dim, 9.0, 0)
    per_pair = dataclasses.replace(sf, pair_block=None, pair_project=None, pair_query=None)
    edges = kg.train.astype(np.int64)
    with threadpool_limits(1):
        fast = train_rate(sf, entity, relation, edges, args.chunks)
        slow = train_rate(per_pair, entity, relation, edges, max(1, args.chunks // 10))
        emb = Embeddings("TransR", entity, relation, {"gamma": 9.0})
        index = FilterIndex.from_triples(kg.all_triples(), kg.n_entities, kg.n_relations)
        full = eval_seconds(emb, kg, index, None)
        fast_eval = eval_seconds(emb, kg, index, args.queries)
        emb.score_function = per_pair
        slow_eval = eval_seconds(emb, kg, index, args.queries)
    print(f"{kg.name}, TransR dim {args.dim}, one core")
    print(f"training kernel: projected {fast:,.0f} positives/s, per pair {slow:,.0f} positives/s: "
          f"{fast / slow:.1f}x")
    print(f"evaluation of the first {args.queries} test triples (both sides): projected {fast_eval:.2f} s, "
          f"per pair {slow_eval:.1f} s: {slow_eval / fast_eval:.1f}x; the whole test split "
          f"({kg.test.shape[0]:,} triples), projected: {full:.1f} s")


if __name__ == "__main__":
    main()
