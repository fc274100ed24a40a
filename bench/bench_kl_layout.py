"""The KL term's value x person products in two layouts (OpenBLAS through Numba, one core).

    python bench/bench_kl_layout.py
    python bench/bench_kl_layout.py --dim 400

The term scores each sensitive relation's value queries Q (m x d) against the
chunk's persons P (n x d) as S = Q P^T, the metric's (queries x candidates)
form. At these skinny shapes OpenBLAS is faster with the persons as rows and a
contiguous copy of Q^T: S^T = P Q^T. Prints both per call, their ratio, the
backward product C^T Q for reference, and the step's own 200 x 200 product
in both forms. Shapes: the mean persons per chunk of FB15k-237's religion,
ethnicity and nationality (30 values each) at 200 positives a chunk.
"""
from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from threadpoolctl import threadpool_limits


@numba.njit(fastmath=True)
def as_now(Q, P, S, reps):
    for _ in range(reps):
        np.dot(Q, P.T, S)


@numba.njit(fastmath=True)
def persons_as_rows(Q, P, St, reps):
    for _ in range(reps):
        Qt = np.ascontiguousarray(Q.T)  # the copy counts
        np.dot(P, Qt, St)


@numba.njit(fastmath=True)
def backward(C, Q, G, reps):
    for _ in range(reps):
        np.dot(C.T, Q, G)


def per_call(f, args, reps: int, repeats: int = 7) -> float:
    f(*args, 2)  # compile
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        f(*args, reps)
        best = min(best, (time.perf_counter() - t) / reps)
    return best * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=100)
    args = parser.parse_args()
    d, rng = args.dim, np.random.default_rng(0)
    print(f"dim {d}, one core, microseconds per call (best of 7)")
    print(f"{'values x persons':>18s} {'Q P^T (now)':>12s} {'P Q^T':>10s} {'now / P Q^T':>12s} {'C^T Q':>8s}")
    with threadpool_limits(1):
        for m, n in ((30, 28), (30, 54), (30, 109), (200, 200)):
            Q, P = rng.random((m, d), dtype=np.float32), rng.random((n, d), dtype=np.float32)
            C = rng.random((m, n), dtype=np.float32)
            reps = max(50, int(3e8 / (m * n * d)))
            now = per_call(as_now, (Q, P, np.empty((m, n), np.float32)), reps)
            rows = per_call(persons_as_rows, (Q, P, np.empty((n, m), np.float32)), reps)
            back = per_call(backward, (C, Q, np.empty((n, d), np.float32)), reps)
            label = f"{m} x {n}" + (" (step)" if m == 200 else "")
            print(f"{label:>18s} {now:12.2f} {rows:10.2f} {now / rows:11.2f}x {back:8.2f}")


if __name__ == "__main__":
    main()
