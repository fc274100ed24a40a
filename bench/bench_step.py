"""Training-step throughput: NumPy reference vs kgnum with 1 and N workers, in one run.

    python bench/bench_step.py                      # the four headline models, 1 and 2 workers
    python bench/bench_step.py --models TransE_l2 --workers 1

Workload (docs/PERFORMANCE.md): FB15k-237, dim 400, 200 negatives shared by
chunks of 200, batch 1000, self-adversarial weighting, row-wise Adagrad.
Unit: positive triples per second. Also measures this machine's
single-thread sgemm rate at the step's shapes and reports which fraction of
that arithmetic floor each engine reaches (FLOPs counted per positive).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

import kgnum
from kgnum.kernels.reference import numpy_train_range
from kgnum.kernels.registry import get_model
from kgnum.kernels.step import Tables, step_params

DIM, NEG, CHUNK, BATCH = 400, 200, 200, 1000


def flops_per_positive(model: str) -> float:
    """Arithmetic per positive: 3 (chunk x dim) @ (dim x neg) products for product-form
    models; for tiled models the elementwise work of forward + backward per pair."""
    metric = get_model(model).metric
    if metric in ("dot", "l2"):
        return 3 * 2 * DIM * NEG
    if metric == "l1":
        return NEG * DIM * (3 + 4)  # |q-n| sum; sign and two accumulations
    return NEG * (DIM // 2) * (7 + 16)  # complex modulus forward; unit vector and 4 updates backward


def sgemm_gflops(seconds: float = 1.0) -> tuple[float, float]:
    """Measured sgemm GFLOP/s at the step's (chunk x dim) @ (dim x neg) shape: 1 thread, and all threads
    on a large product."""
    rng = np.random.default_rng(0)
    a = rng.random((CHUNK, DIM), dtype=np.float32)
    b = rng.random((NEG, DIM), dtype=np.float32)
    with threadpool_limits(1):
        a @ b.T
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b.T
            n += 1
        one = 2 * CHUNK * DIM * NEG * n / (time.perf_counter() - t0) / 1e9
    big = rng.random((2000, 2000), dtype=np.float32)
    big @ big
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        big @ big
        n += 1
    every = 2 * 2000 ** 3 * n / (time.perf_counter() - t0) / 1e9
    return one, every


def numpy_rate(kg, model: str, seconds: float) -> float:
    sf = get_model(model)
    entity, relation = sf.init_tables(kg.n_entities, kg.n_relations, DIM, 12.0, 0)
    tables = Tables(entity, relation, np.zeros(kg.n_entities, np.float32), np.zeros(kg.n_relations, np.float32))
    params = step_params(BATCH, CHUNK, NEG, None, 12.0, 0.1, 1.0)
    order = np.random.default_rng(0).permutation(kg.train.shape[0])
    rng = np.random.default_rng(1)
    done, start = 0, time.perf_counter()
    with threadpool_limits(1):
        while time.perf_counter() - start < seconds:
            numpy_train_range(sf, tables, kg.train, order, done, done + BATCH, params, rng)
            done += BATCH
    return done / (time.perf_counter() - start)


def kgnum_rate(kg, model: str, workers: int, seconds: float) -> float:
    emb = kgnum.train(kg, model, dim=DIM, neg=NEG, neg_chunk=CHUNK, batch=BATCH, lr=0.1, gamma=12.0,
                      adv=True, time_budget=seconds, workers=workers, progress=False)
    return emb.train_stats["triples_per_second"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="FB15k-237")
    parser.add_argument("--models", nargs="+", default=["TransE_l2", "DistMult", "ComplEx", "RotatE"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seconds", type=float, default=20.0, help="training seconds per measurement")
    parser.add_argument("--numpy-seconds", type=float, default=10.0)
    args = parser.parse_args()

    kg = kgnum.load_dataset(args.dataset)
    one, every = sgemm_gflops()
    print(f"{kg}\nsgemm at ({CHUNK}x{DIM})@({DIM}x{NEG}): {one:.0f} GFLOP/s on 1 thread; "
          f"{every:.0f} GFLOP/s on {os.cpu_count()} threads (2000^3)")
    header = f"{'model':10s} {'numpy/s':>9s}" + "".join(f" {f'{w} worker/s':>13s}" for w in args.workers)
    header += f" {'1w/numpy':>9s}"
    if len(args.workers) > 1:
        header += f" {f'{args.workers[-1]}w/1w':>7s}"
    header += f" {'MFLOP/pos':>9s} {'floor%':>7s}"
    print(header)
    for model in args.models:
        base = numpy_rate(kg, model, args.numpy_seconds)
        rates = [kgnum_rate(kg, model, w, args.seconds) for w in args.workers]
        flop = flops_per_positive(model)
        # the floor: all cores at the single-thread sgemm rate of these shapes
        floor = max(args.workers) * one * 1e9 / flop
        line = f"{model:10s} {base:9,.0f}" + "".join(f" {r:13,.0f}" for r in rates)
        line += f" {rates[0] / base:8.1f}x"
        if len(rates) > 1:
            line += f" {rates[-1] / rates[0]:6.2f}x"
        line += f" {flop / 1e6:9.2f} {100 * rates[-1] / floor:6.1f}%"
        print(line, flush=True)


if __name__ == "__main__":
    main()
