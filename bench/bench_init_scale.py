"""The bilinear models' default gamma at dims other than 400: 143 against the scale-keeping value.

    python bench/bench_init_scale.py                          # UMLS, Nations (defaults), FB15k-237 (10 epochs)
    python bench/bench_init_scale.py --graphs umls --dims 50 100

A product score has no margin: gamma only sets the initial scale (gamma + 2) / dim.
For each graph, bilinear model and dim this trains once with gamma 143 (the dim-400
default) and once with (143 + 2) * dim / 400 - 2 (the default now: the dim-400 scale
kept), everything else the defaults (one worker, seed 0; on FB15k-237 10 epochs
without validation), and prints filtered test MRR of both and their ratio.
"""
from __future__ import annotations

import argparse
import time

import kgnum
from kgnum.config import default_gamma
from kgnum.kernels.registry import get_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", nargs="+", default=["umls", "nations", "FB15k-237"])
    parser.add_argument("--models", nargs="+", default=["ComplEx", "DistMult"])
    parser.add_argument("--dims", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--fb-dims", type=int, nargs="+", default=[100], help="dims run on FB15k-237")
    args = parser.parse_args()
    print(f"{'graph':10s} {'model':9s} {'dim':>4s} {'MRR g 143':>10s} {'MRR scaled':>11s} {'(gamma)':>9s} "
          f"{'ratio':>6s} {'seconds':>8s}", flush=True)
    for name in args.graphs:
        kg = kgnum.load_dataset(name)
        big = kg.n_entities > 10_000
        run = dict(epochs=10, valid_every=0) if big else {}
        for model in args.models:
            sf = get_model(model)
            for dim in args.fb_dims if big else args.dims:
                base, scaled = sf.defaults["gamma"], default_gamma(sf, dim)  # the default: the scale kept
                t = time.perf_counter()
                mrr = [kgnum.evaluate(kgnum.train(kg, model, dim=dim, gamma=g, workers=1, seed=0, progress=False,
                                                  **run), kg)["mrr"] for g in (base, scaled)]
                print(f"{kg.name:10s} {model:9s} {dim:4d} {mrr[0]:10.4f} {mrr[1]:11.4f} {scaled:9.3f} "
                      f"{mrr[1] / mrr[0]:5.2f}x {time.perf_counter() - t:8.1f}", flush=True)


if __name__ == "__main__":
    main()
