"""Loading FB15k-237: the first load (parsing the text files into a fresh cache) against a load
from the cache, in the same run.

    KGNUM_DATA_DIR=../shared/datasets python bench/bench_load.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time

from kgnum.data import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="FB15k-237")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    firsts, seconds = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            kg = load_dataset(args.dataset, unseen="keep", cache_dir=cache)
            firsts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            load_dataset(args.dataset, unseen="keep", cache_dir=cache)
            seconds.append(time.perf_counter() - t0)
    first, second = min(firsts), min(seconds)
    print(f"{args.dataset}: {kg.train.shape[0]:,} train triples, {kg.n_entities:,} entities; "
          f"best of {args.repeats}")
    print(f"  first load (parse + write the cache) {first:.2f} s")
    print(f"  load from the cache                  {second:.3f} s")
    print(f"  parse / cache                        {first / second:.1f}x")


if __name__ == "__main__":
    main()
