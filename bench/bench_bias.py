"""Bias report: basic training against the KL debiasing term, over seeds, in one table.

    python bench/bench_bias.py                                   # FB15k-237, TransE_l2, 3 seeds
    python bench/bench_bias.py --model ComplEx --epochs 30 --seeds 0 1 2
    python bench/bench_bias.py --sweep-weights 1 10 50 100 --workers 1        # the KL weight sweep
    python bench/bench_bias.py --cost --dim 400                                # the step's cost per condition
    perf record -D 60000 -o kl.data -- python bench/bench_bias.py --cost-loop kl 40 --dim 100  # where it goes
        # (add --jit-symbols kl.sym, then bench/perf_jit.py kl.data kl.sym SECONDS names the compiled functions)
    python bench/bench_bias.py --dim 100 --seeds 0 --conditions basic kl --breakdown  # where the MRR goes
    python bench/bench_bias.py --dataset planted --model TransE_l2 --dim 64 --epochs 100 \\
        --sensitive gender,member_of --weights gender=2,member_of=5 --values male,female --target profession

Conditions (``--conditions``, all by default): ``basic`` (no debiasing), ``kl``
(``--debias`` on every sensitive relation), ``kl+attr`` (the same with attribute
vectors and an attribute whitelist: ``--whitelist FILE``, or on FB15k-237 by default
the award categories named for one gender (actor, actress, male, female, ...)
whose persons are >= 95% one value of the first sensitive relation, written to
bench/out/), and ``adversarial`` (``--debias-method
adversarial``, measured twice: "[a]" with every filter, "[s]" with only the measured
relation's filter). Every run trains the same model, dim and number of epochs
(no early stopping, so the epochs are equal), then is measured like
``kgnum bias measure``: filtered test MRR with the sensitive triples left out,
the difference in scores D per sensitive relation, the probe's accuracy minus
the majority rate, and seconds per epoch with its ratio to basic (same run of
this script). Mean over seeds, and the per-target B_p chart of basic and
kl+attr side by side (``--plot``).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import kgnum
from kgnum.bias.measure import difference_in_scores, probe, read_display_names, sensitive_relation, target_bias

FB_SENSITIVE = ["/people/person/gender", "/people/person/religion", "/people/person/nationality",
                "/people/ethnicity/people"]


def load(name: str):
    if name == "planted":
        from kgnum.bias.planted import planted_bias_graph

        return planted_bias_graph()
    return kgnum.load_dataset(name)


def measure(emb, kg, relations, values, target, view=None):
    """``view``: "[s]" measures each relation on the model's view with only its own filter."""
    out = {"mrr": kgnum.evaluate(emb, kg, exclude_relations=relations)["mrr"], "D": {}, "probe": {}}
    for rel in relations:
        s = sensitive_relation(kg, rel)
        e = emb.view(f"[s] {rel}") if view == "[s]" else emb
        out["D"][rel] = difference_in_scores(e, s)
        pr = probe(e, s)
        out["probe"][rel] = pr["accuracy"] - pr["majority"]
    if values and target:
        s = sensitive_relation(kg, relations[0])
        out["targets"] = target_bias(emb, kg, s, values[0], values[1], target)
    return out


def query_groups(emb, kg, relations):
    """Where the link prediction is: filtered MRR (sensitive triples left out) of the test queries
    whose given entity is a person of any sensitive relation, whose answer is one, and of those
    with no person, each side counted once; and the median row norm of persons over that of the
    other entities."""
    from kgnum.eval import FilterIndex, evaluate_ranks, metrics_from_ranks, without_relations

    kg = kg.aligned_to(emb.entity_names, emb.relation_names)
    person = np.zeros(kg.n_entities, dtype=bool)
    for rel in relations:
        person[sensitive_relation(kg, rel).persons] = True
    test = without_relations(kg, kg.test, relations)
    ranks = evaluate_ranks(emb.score_candidates, test, FilterIndex.from_triples(
        kg.all_triples(), kg.n_entities, kg.n_relations), kg.n_entities)
    given = np.concatenate([person[test[:, 2]], person[test[:, 0]]])  # head side: the tail is given
    answer = np.concatenate([person[test[:, 0]], person[test[:, 2]]])
    both = np.concatenate([ranks["head"], ranks["tail"]])
    out = {name: metrics_from_ranks(both[sel])["mrr"] for name, sel in (
        ("person given", given), ("person answer", answer), ("no person", ~given & ~answer))}
    norms = np.linalg.norm(emb.entity, axis=1)
    out["person norm / other norm"] = float(np.median(norms[person]) / np.median(norms[~person]))
    return out


def gendered_tails(kg, sensitive: str, containing: str, names: dict, words: str, purity: float = 0.95,
                   min_persons: int = 10):
    """(relation, tail) pairs where the attribute is part of the fact (an award for actresses):
    relations whose name contains ``containing``, tails whose display name has one of ``words``
    (a regular expression) and whose persons (of ``sensitive``) are >= ``purity`` one value. Both
    tests: a category named for one gender that the data confirms. Written as an
    --attribute-whitelist."""
    import re

    s = sensitive_relation(kg, sensitive)
    value_of = dict(zip(s.persons.tolist(), s.values.tolist()))
    pattern = re.compile(words)
    pairs = []
    for rel in [r for r in range(kg.n_relations) if containing in str(kg.relation_names[r])]:
        by_tail: dict[int, list] = {}
        for h, _, t in kg.train[kg.train[:, 1] == rel].tolist():
            if h in value_of:
                by_tail.setdefault(t, []).append(value_of[h])
        for tail, vals in by_tail.items():
            name = names.get(str(kg.entity_names[tail]), "")
            if (len(vals) >= min_persons and np.bincount(vals).max() >= purity * len(vals)
                    and pattern.search(name)):
                pairs.append((str(kg.relation_names[rel]), str(kg.entity_names[tail])))
    return sorted(set(pairs))


GENDERED_WORDS = r"(?i)(^|[_\s-])(actor|actress|male|female|women'?s|men'?s)([_\s-]|$)"  # names use _ for spaces


CONDITIONS = ("basic", "kl", "kl+attr", "adversarial")


def attribute_whitelist(args, kg) -> str:
    """``--whitelist``, or the award categories named for one gender that the data confirms
    (``gendered_tails``), written to bench/out/whitelist_<graph>.tsv."""
    if args.whitelist:
        return args.whitelist
    relations = [r for r in args.sensitive.split(",") if r]
    names_file = os.path.join(kg.source or "", "entity_names.tsv")
    # a graph without display names (the planted one, most users' own) has no award categories
    # to find: kl+attr then runs with an empty whitelist instead of stopping
    names = read_display_names(names_file) if os.path.isfile(names_file) else {}
    pairs = gendered_tails(kg, relations[0], "award", names, GENDERED_WORDS)
    path = "bench/out/whitelist_%s.tsv" % kg.name.replace("/", "_")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(f"{r}\t{t}\n" for r, t in pairs)
    print(f"attribute whitelist: {len(pairs)} (relation, tail) pairs -> {path}")
    return path


def _cost_runs(args, conditions=("basic", "kl", "kl+attr")):
    """Per condition: (its train_kernel, job, order), compiled and warmed on 2,000 positives."""
    from kgnum.bias.attributes import augment
    from kgnum.config import TrainConfig
    from kgnum.kernels.step import train_kernel
    from kgnum.train import initial_embeddings, make_job

    kg = load(args.dataset)
    whitelist = attribute_whitelist(args, kg) if "kl+attr" in conditions else None
    extras = {"basic": {}, "kl": dict(debias=args.sensitive, debias_weight=args.weights),
              "kl+attr": dict(debias=args.sensitive, debias_weight=args.weights, attribute_whitelist=whitelist)}
    runs = {}
    for condition in conditions:
        cfg = TrainConfig(model=args.model, dim=args.dim, gamma=args.gamma, epochs=1, workers=1, valid_every=0,
                          **extras[condition]).validate()
        graph = augment(kg, cfg) if cfg.attribute_vectors else kg
        job = make_job(graph, cfg, initial_embeddings(graph, cfg, None))
        kernel, order = train_kernel(job.model, job.terms), np.random.default_rng(0).permutation(job.edges.shape[0])
        kernel(job.tables, job.edges, order, 0, 2000, job.params, 0)  # compile, warm the tables
        runs[condition] = (kernel, job, order)
    return kg, runs


def step_cost(args, positives: int = 20_000, bursts: int = 7):
    """Median CPU seconds of ``positives`` training positives per condition, bursts interleaved."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        kg, runs = _cost_runs(args)
        seconds = {c: [] for c in runs}
        for b in range(bursts):
            for c, (kernel, job, order) in runs.items():
                start = (b * positives) % (order.size - positives)
                t = time.process_time()
                kernel(job.tables, job.edges, order, start, start + positives, job.params, 0)
                seconds[c].append(time.process_time() - t)
    base = float(np.median(seconds["basic"]))
    print(f"{kg.name}, {args.model} dim {args.dim}: CPU seconds per {positives:,} positives (median of {bursts} "
          f"interleaved bursts, one core)")
    for c in runs:
        t = float(np.median(seconds[c]))
        print(f"  {c:8s} {t:.3f} s  {t / base:.2f}x basic")


def write_jit_symbols(dispatcher, path: str) -> None:
    """Where each function of ``dispatcher``'s compiled code starts ("address name" lines), for
    bench/perf_jit.py: every function its library holds, the Numba functions it calls included."""
    rows = []
    for result in dispatcher.overloads.values():
        engine = result.library._codegen._engine
        for fn in result.library._final_module.functions:
            if not fn.is_declaration and (address := engine.get_function_address(fn.name)):
                rows.append((address, fn.name))
    with open(path, "w") as out:
        out.writelines(f"{a:x} {name}\n" for a, name in sorted(rows))


def cost_loop(args, positives: int = 20_000):
    """One condition's training step alone for ``seconds`` of CPU time after it is compiled, for a
    profiler attached from outside (perf record -D): prints "ready" when the loop starts."""
    from threadpoolctl import threadpool_limits

    condition, seconds = args.cost_loop[0], float(args.cost_loop[1])
    with threadpool_limits(1):
        kg, runs = _cost_runs(args, (condition,))
        kernel, job, order = runs[condition]
        if args.jit_symbols:
            write_jit_symbols(kernel, args.jit_symbols)
        print("ready", flush=True)
        t0, done, b = time.process_time(), 0, 0
        while time.process_time() - t0 < seconds:
            start = (b * positives) % (order.size - positives)
            kernel(job.tables, job.edges, order, start, start + positives, job.params, 0)
            done, b = done + positives, b + 1
    took = time.process_time() - t0
    print(f"{kg.name}, {args.model} dim {args.dim}, {condition}: {took / done * positives:.3f} CPU s per "
          f"{positives:,} positives ({done:,} positives)")


def sweep_weights(args):
    kg = load(args.dataset)
    relations = [r for r in args.sensitive.split(",") if r]
    base = None
    for w in [None, *args.sweep_weights]:
        extra = {} if w is None else dict(debias=args.sensitive, debias_weight=",".join(
            f"{r}={1.0 if i == 0 else w:g}" for i, r in enumerate(relations)))
        emb = kgnum.train(kg, args.model, dim=args.dim, gamma=args.gamma, epochs=args.epochs, valid_every=0,
                          seed=args.seeds[0], workers=args.workers, progress=False, **extra)
        m = measure(emb, kg, relations, None, None)
        base = base or m
        print(f"weight {'basic' if w is None else f'{w:g}':>6s}: MRR {m['mrr']:.4f} ({m['mrr'] / base['mrr']:.2f}x) "
              + " ".join(f"D {r.split('/')[-1]} {d:.3f} ({d / base['D'][r]:.2f}x)" for r, d in m["D"].items())
              + " " + " ".join(f"probe-maj {r.split('/')[-1]} {d:+.3f}" for r, d in m["probe"].items())
              + f" {emb.train_stats['train_seconds']:.0f} s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="FB15k-237")
    parser.add_argument("--model", default="TransE_l2")
    parser.add_argument("--dim", type=int, default=400)
    parser.add_argument("--gamma", type=float, default=None, help="the model's gamma (bilinear models: it sets "
                        "the initial scale (gamma + 2) / dim; their default keeps the dim-400 scale: 34.25 at dim 100)")
    parser.add_argument("--epochs", type=float, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--sensitive", default=",".join(FB_SENSITIVE))
    parser.add_argument("--weights", default=None, help="--debias-weight of the kl conditions")
    parser.add_argument("--adversarial-weight", type=float, default=None)
    parser.add_argument("--whitelist", help="--attribute-whitelist of kl+attr (default on FB15k-237: award categories "
                                            "named for one gender whose persons are >= 95%% one gender)")
    parser.add_argument("--values", default="/m/05zppz,/m/02zsn")
    parser.add_argument("--target", default="/people/person/profession")
    parser.add_argument("--json", help="write every run's figures here")
    parser.add_argument("--plot", help="B_p of basic and kl+attr side by side (PNG)")
    parser.add_argument("--sweep-weights", type=float, nargs="+", metavar="W",
                        help="instead of the conditions: basic and kl with weight W on every sensitive relation "
                             "but the first (which keeps 1), for each W, first seed only (BIAS.md's weight sweep)")
    parser.add_argument("--cost", action="store_true",
                        help="instead of the conditions: the training step's CPU time per positive for basic, kl "
                             "and kl+attr, interleaved bursts on one core (steadier than the table's s/epoch)")
    parser.add_argument("--cost-loop", nargs=2, metavar=("CONDITION", "SECONDS"),
                        help="instead of the conditions: CONDITION's training step alone for SECONDS of CPU time "
                             "once compiled (prints 'ready' first), for a profiler: perf record -D")
    parser.add_argument("--jit-symbols", metavar="FILE",
                        help="with --cost-loop: write where each compiled function of the step starts, "
                             "for bench/perf_jit.py")
    parser.add_argument("--breakdown", action="store_true",
                        help="also the MRR of the test queries that give a person, that ask for one, and of "
                             "the rest, and the persons' median row norm against the other entities'")
    args = parser.parse_args()
    if args.sweep_weights:
        return sweep_weights(args)
    if args.cost:
        return step_cost(args)
    if args.cost_loop:
        return cost_loop(args)

    kg = load(args.dataset)
    relations = [r for r in args.sensitive.split(",") if r]
    values = args.values.split(",") if args.values else None
    whitelist = attribute_whitelist(args, kg) if "kl+attr" in args.conditions else None
    runs = []
    for seed in args.seeds:
        for condition in args.conditions:
            extra = {}
            if condition != "basic":
                extra = dict(debias=args.sensitive)
            if condition in ("kl", "kl+attr"):
                extra["debias_weight"] = args.weights
            if condition == "kl+attr":
                extra["attribute_whitelist"] = whitelist
            if condition == "adversarial":
                extra["debias_method"] = "adversarial"
                if args.adversarial_weight is not None:
                    extra["adversarial_weight"] = args.adversarial_weight
            emb = kgnum.train(kg, args.model, dim=args.dim, gamma=args.gamma, epochs=args.epochs, valid_every=0,
                              seed=seed, workers=args.workers, progress=False, **extra)
            s = emb.train_stats
            for name, view in ((condition, None),) + ((("adversarial [s]", "[s]"),) if condition == "adversarial"
                                                       else ()):
                name = "adversarial [a]" if name == "adversarial" else name
                m = measure(emb, kg, relations, values if view is None else None, args.target, view)
                if args.breakdown and view is None:
                    m["groups"] = query_groups(emb, kg, relations)
                runs.append({"seed": seed, "condition": name,
                             "seconds_per_epoch": s["train_seconds"] / args.epochs, **m})
                print(f"seed {seed} {name:15s}: MRR {m['mrr']:.4f}, "
                      + ", ".join(f"D {r.split('/')[-1]} {d:.3f}" for r, d in m["D"].items())
                      + ", " + ", ".join(f"probe-maj {r.split('/')[-1]} {d:+.3f}" for r, d in m["probe"].items())
                      + f", {s['train_seconds'] / args.epochs:.2f} s/epoch", flush=True)

    def mean(condition, key, rel=None):
        vals = [r[key][rel] if rel else r[key] for r in runs if r["condition"] == condition]
        return float(np.mean(vals))

    shown = list(dict.fromkeys(r["condition"] for r in runs))
    print(f"\n{kg.name}, {args.model} dim {args.dim}, {args.epochs:g} epochs, seeds {args.seeds} (means)")
    head = f"{'condition':16s} {'MRR':>7s}" + "".join(f" {'D ' + r.split('/')[-1][:10]:>14s}" for r in relations)
    head += "".join(f" {'probe-maj ' + r.split('/')[-1][:6]:>17s}" for r in relations) + f" {'s/epoch':>8s} {'ratio':>6s}"
    print(head)
    base_time = mean("basic", "seconds_per_epoch") if "basic" in shown else float("nan")
    for condition in shown:
        line = f"{condition:16s} {mean(condition, 'mrr'):7.4f}"
        line += "".join(f" {mean(condition, 'D', r):14.3f}" for r in relations)
        line += "".join(f" {mean(condition, 'probe', r):17.3f}" for r in relations)
        t = mean(condition, "seconds_per_epoch")
        print(line + f" {t:8.3f} {t / base_time:5.2f}x")
    if "basic" in shown:
        for condition in shown[1:]:
            print(f"ratios {condition}/basic: MRR {mean(condition, 'mrr') / mean('basic', 'mrr'):.3f}; "
                  + ", ".join(f"D {r.split('/')[-1]} {mean(condition, 'D', r) / mean('basic', 'D', r):.3f}"
                              for r in relations))
    if args.breakdown:
        groups = list(runs[0]["groups"])
        print("\nMRR by test query (sensitive triples left out) and the persons' row norm (means):")
        print(f"{'condition':16s}" + "".join(f" {g:>24s}" for g in groups))
        for condition in [c for c in shown if any("groups" in r for r in runs if r["condition"] == c)]:
            rows = [r["groups"] for r in runs if r["condition"] == condition and "groups" in r]
            line = f"{condition:16s}"
            for g in groups:
                v = float(np.mean([r[g] for r in rows]))
                b = float(np.mean([r["groups"][g] for r in runs if r["condition"] == "basic"])) \
                    if "basic" in shown else float("nan")
                line += f" {v:15.4f} ({v / b:4.2f}x)"
            print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1, default=float)
    if args.plot and values:
        names_file = os.path.join(kg.source or "", "entity_names.tsv")
        names = read_display_names(names_file) if kg.source and os.path.exists(names_file) else {}
        _plot(runs, args.plot, [c for c in ("basic", "kl+attr" if "kl+attr" in shown else "kl") if c in shown], names,
              [names.get(v, v) for v in values])


def _plot(runs, path, conditions, names, value_names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = {r["condition"]: r["targets"] for r in runs if "targets" in r and r["seed"] == runs[0]["seed"]}
    fig, axes = plt.subplots(1, len(conditions), figsize=(6 * len(conditions), 6), sharex=True, squeeze=False)
    for ax, condition in zip(axes[0], conditions):
        rows = first[condition]["targets"]
        shown = rows[:10] + rows[-10:]
        ax.barh(range(len(shown))[::-1], [r["bias"] for r in shown],
                color=["tab:blue" if r["bias"] > 0 else "tab:red" for r in shown])
        ax.set_yticks(range(len(shown))[::-1], [names.get(r["entity"], r["entity"]) for r in shown], fontsize=7)
        ax.set_title(f"{condition}: B_p, most toward {value_names[0]} (top) and {value_names[1]} (bottom)",
                     fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
