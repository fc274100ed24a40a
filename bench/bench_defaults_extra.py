"""Targeted sweep for the models whose family defaults lose on small graphs (RESCAL, TransE_l1, TransR).

    python bench/bench_defaults_extra.py --seconds 8

Same protocol as bench_defaults.py (one worker, the same time budget for every run,
automatic early stopping, filtered test MRR), over learning rate x gamma grids.
"""
from __future__ import annotations

import argparse

import kgnum

from bench_defaults import GRAPHS

GRIDS = {
    "RESCAL": [dict(lr=lr, gamma=g) for lr in (0.03, 0.1) for g in (2.0, 12.0, 24.0, 143.0)],
    "TransE_l1": [dict(lr=lr, gamma=g) for lr in (0.05, 0.1, 0.25) for g in (6.0, 9.0, 12.0)],
    "TransR": [dict(lr=lr, gamma=g) for lr in (0.02, 0.1, 0.25) for g in (6.0, 9.0)],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", nargs="+", default=["umls", "nations", "synthetic-2k"])
    parser.add_argument("--models", nargs="+", default=list(GRIDS))
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    for gname in args.graphs:
        kg = GRAPHS[gname]()
        print(f"\n{kg}, {args.seconds:g} s per run, 1 worker; filtered test MRR", flush=True)
        for model in args.models:
            cells = []
            for over in GRIDS[model]:
                emb = kgnum.train(kg, model, time_budget=args.seconds, workers=1, progress=False, **over)
                cells.append((kgnum.evaluate(emb, kg)["mrr"], over))
            best = max(cells, key=lambda c: c[0])
            print(f"{model:10s} " + "  ".join(f"lr {o['lr']:g} g {o['gamma']:g}: {m:.4f}" for m, o in cells)
                  + f"  | best lr {best[1]['lr']:g} gamma {best[1]['gamma']:g}", flush=True)


if __name__ == "__main__":
    main()
