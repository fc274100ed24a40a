"""Bias report: basic training against the KL debiasing term, over seeds, in one table.

    python bench/bench_bias.py                                   # FB15k-237, TransE_l2, 3 seeds
    python bench/bench_bias.py --model ComplEx --epochs 30 --seeds 0 1 2
    python bench/bench_bias.py --dataset planted --model TransE_l2 --dim 64 --epochs 100 \\
        --sensitive gender,member_of --weights gender=2,member_of=5 --values male,female --target profession

Conditions: ``basic`` (no debiasing) and ``kl`` (``--debias`` on every sensitive
relation). Attribute vectors and the adversarial baseline are not built yet and
are not in the table. Every run trains the same model, dim and number of epochs
(no early stopping, so the epochs are equal), then is measured like
``kgnum bias measure``: filtered test MRR with the sensitive triples left out,
the difference in scores D per sensitive relation, the probe's accuracy minus
the majority rate, and seconds per epoch with its ratio to basic (same run of
this script). Mean over seeds, and the per-target B_p chart of basic and kl
side by side (``--plot``).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import kgnum
from kgnum.bias.measure import difference_in_scores, probe, sensitive_relation, target_bias

FB_SENSITIVE = ["/people/person/gender", "/people/person/religion", "/people/person/nationality",
                "/people/ethnicity/people"]


def load(name: str):
    if name == "planted":
        from kgnum.bias.planted import planted_bias_graph

        return planted_bias_graph()
    return kgnum.load_dataset(name)


def measure(emb, kg, relations, values, target):
    out = {"mrr": kgnum.evaluate(emb, kg, exclude_relations=relations)["mrr"], "D": {}, "probe": {}}
    for rel in relations:
        s = sensitive_relation(kg, rel)
        out["D"][rel] = difference_in_scores(emb, s)
        pr = probe(emb, s)
        out["probe"][rel] = pr["accuracy"] - pr["majority"]
    if values and target:
        s = sensitive_relation(kg, relations[0])
        out["targets"] = target_bias(emb, kg, s, values[0], values[1], target)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="FB15k-237")
    parser.add_argument("--model", default="TransE_l2")
    parser.add_argument("--dim", type=int, default=400)
    parser.add_argument("--epochs", type=float, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--sensitive", default=",".join(FB_SENSITIVE))
    parser.add_argument("--weights", default=None, help="--debias-weight of the kl condition")
    parser.add_argument("--values", default="/m/05zppz,/m/02zsn")
    parser.add_argument("--target", default="/people/person/profession")
    parser.add_argument("--json", help="write every run's figures here")
    parser.add_argument("--plot", help="B_p of basic and kl side by side (PNG)")
    args = parser.parse_args()

    kg = load(args.dataset)
    relations = [r for r in args.sensitive.split(",") if r]
    values = args.values.split(",") if args.values else None
    runs = []
    for seed in args.seeds:
        for condition in ("basic", "kl"):
            extra = dict(debias=args.sensitive, debias_weight=args.weights) if condition == "kl" else {}
            emb = kgnum.train(kg, args.model, dim=args.dim, epochs=args.epochs, valid_every=0, seed=seed,
                              workers=args.workers, progress=False, **extra)
            s = emb.train_stats
            m = measure(emb, kg, relations, values, args.target)
            runs.append({"seed": seed, "condition": condition, "seconds_per_epoch": s["train_seconds"] / args.epochs,
                         **m})
            print(f"seed {seed} {condition:5s}: MRR {m['mrr']:.4f}, "
                  + ", ".join(f"D {r.split('/')[-1]} {d:.3f}" for r, d in m["D"].items())
                  + f", {s['train_seconds'] / args.epochs:.2f} s/epoch", flush=True)

    def mean(condition, key, rel=None):
        vals = [r[key][rel] if rel else r[key] for r in runs if r["condition"] == condition]
        return float(np.mean(vals))

    print(f"\n{kg.name}, {args.model} dim {args.dim}, {args.epochs:g} epochs, seeds {args.seeds} (means)")
    head = f"{'condition':10s} {'MRR':>7s}" + "".join(f" {'D ' + r.split('/')[-1][:10]:>14s}" for r in relations)
    head += "".join(f" {'probe-maj ' + r.split('/')[-1][:6]:>17s}" for r in relations) + f" {'s/epoch':>8s} {'ratio':>6s}"
    print(head)
    base_time = mean("basic", "seconds_per_epoch")
    for condition in ("basic", "kl"):
        line = f"{condition:10s} {mean(condition, 'mrr'):7.4f}"
        line += "".join(f" {mean(condition, 'D', r):14.3f}" for r in relations)
        line += "".join(f" {mean(condition, 'probe', r):17.3f}" for r in relations)
        t = mean(condition, "seconds_per_epoch")
        print(line + f" {t:8.3f} {t / base_time:5.2f}x")
    print("ratios kl/basic: MRR {:.3f}; ".format(mean("kl", "mrr") / mean("basic", "mrr"))
          + ", ".join(f"D {r.split('/')[-1]} {mean('kl', 'D', r) / mean('basic', 'D', r):.3f}" for r in relations))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1, default=float)
    if args.plot and values:
        _plot(runs, args.plot)


def _plot(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = {r["condition"]: r["targets"] for r in runs if "targets" in r and r["seed"] == runs[0]["seed"]}
    fig, axes = plt.subplots(1, 2, figsize=(12, 6), sharex=True)
    for ax, condition in zip(axes, ("basic", "kl")):
        rows = first[condition]["targets"]
        shown = rows[:10] + rows[-10:]
        ax.barh(range(len(shown))[::-1], [r["bias"] for r in shown],
                color=["tab:blue" if r["bias"] > 0 else "tab:red" for r in shown])
        ax.set_yticks(range(len(shown))[::-1], [r["entity"] for r in shown], fontsize=7)
        ax.set_title(f"{condition}: B_p")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
