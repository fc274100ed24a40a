"""The sweep behind each model's defaults: the defaults against their neighbours on several graphs.

    python bench/bench_defaults.py                       # every model, every graph below
    python bench/bench_defaults.py --models ComplEx --graphs umls nations --seconds 10

For every graph and model, trains the model's registry defaults (kgnum's
defaults: dim 400, 200 negatives, batch 1000, self-adversarial weighting,
automatic early stopping) and variants that move one setting: the learning
rate x0.4 and x2.5, gamma (the margin, or the initial scale of bilinear
models) x0.5 and x2, the other adversarial temperature, no self-adversarial
weighting, and for bilinear models no regularization. Each run gets the same
time budget on one worker; the table is filtered test MRR, the defaults'
column first, and for each graph the ratio of the defaults to the best
variant (in the same run of this script). A default is good when it is at or
near the best on every graph, not when it wins one.
"""
from __future__ import annotations

import argparse
import json
import time

import kgnum
from kgnum.config import TrainConfig
from kgnum.kernels.registry import get_model
from kgnum.kernels.score import PRODUCT_METRICS

GRAPHS = {
    "umls": lambda: kgnum.load_dataset("umls"),
    "nations": lambda: kgnum.load_dataset("nations"),
    "synthetic-2k": lambda: kgnum.synthetic(n_entities=2000, n_relations=20, n_train=40000, seed=0),
    "synthetic-20k": lambda: kgnum.synthetic(n_entities=20000, n_relations=50, n_train=300000, n_valid=5000,
                                             n_test=5000, seed=0),
}
HEADLINE = ("TransE_l2", "DistMult", "ComplEx", "RotatE")


def variants(model: str) -> dict[str, dict]:
    d = get_model(model).defaults
    bilinear = get_model(model).metric in PRODUCT_METRICS
    out = {"default": {}, "lr x0.4": {"lr": d["lr"] * 0.4}, "lr x2.5": {"lr": d["lr"] * 2.5}}
    if model not in HEADLINE:
        return out
    out["gamma x0.5"] = {"gamma": d["gamma"] * 0.5}
    out["gamma x2"] = {"gamma": d["gamma"] * 2}
    out["adv-temp " + ("1" if d["adv_temp"] != 1 else "2")] = {"adv_temp": 1.0 if d["adv_temp"] != 1 else 2.0}
    out["no adv"] = {"adv": False}
    if bilinear:
        out["no reg"] = {"reg_coef": 0.0}
        out["reg x0.1"] = {"reg_coef": d["reg_coef"] * 0.1}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(HEADLINE) + ["TransE_l1", "RESCAL", "SimplE", "TransR"])
    parser.add_argument("--graphs", nargs="+", default=list(GRAPHS))
    parser.add_argument("--seconds", type=float, default=10.0, help="training budget of each run")
    parser.add_argument("--variants", nargs="+", help="only these variants (names as in the table; default: all)")
    parser.add_argument("--json", help="write every run's figures here")
    args = parser.parse_args()

    rows = []
    for gname in args.graphs:
        kg = GRAPHS[gname]()
        print(f"\n{kg}, {args.seconds:g} s per run, 1 worker; filtered test MRR", flush=True)
        for model in args.models:
            results = {}
            for vname, over in variants(model).items():
                if args.variants and vname != "default" and vname not in args.variants:
                    continue
                t0 = time.perf_counter()
                emb = kgnum.train(kg, model, time_budget=args.seconds, workers=1, progress=False, **over)
                test = kgnum.evaluate(emb, kg)["mrr"]
                s = emb.train_stats
                results[vname] = test
                rows.append({"graph": gname, "model": model, "variant": vname, "test_mrr": test,
                             "best_valid_mrr": s["best_valid_mrr"], "steps": s["steps"],
                             "seconds": time.perf_counter() - t0, "config": emb.config})
            best = max(results, key=results.get)
            line = f"{model:10s} " + "  ".join(f"{v}: {m:.4f}" for v, m in results.items())
            print(f"{line}  | default/best {results['default'] / max(results[best], 1e-9):.3f} ({best})",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=float)


if __name__ == "__main__":
    assert TrainConfig().lr is None  # the defaults come from the registry
    main()
