"""kgnum next to a peer's result: same settings, same wall-clock budget, ratios.

    .venv/bin/python bench/peers/compare.py                      # reads bench/out/pykeen.json
    .venv/bin/python bench/peers/compare.py --peer other.json

Reads the JSON written by ``bench/peers/pykeen_peer.py`` (run in its own venv), trains
kgnum's TransE_l2 on FB15k-237 with the peer's dim, negatives, batch, lr, gamma,
adversarial temperature and seed, ``workers`` = the peer's torch threads and
``time_budget`` = the peer's budget, evaluates filtered MRR on the same test triples
(all of test, or the peer's ``--test-limit`` subset, with all of train + valid + test
as the filter) and prints both and the ratios kgnum / peer. kgnum's negatives are
shared by chunks of ``--neg-chunk`` positives (its preset: 200).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

import kgnum

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PEER = os.path.join(HERE, "..", "out", "pykeen.json")


def check_same_test_order(kg: kgnum.KnowledgeGraph, folder: str, indices: np.ndarray) -> None:
    """kgnum's test rows must be test.txt's lines in file order, else the subset differs."""
    with open(os.path.join(folder, "test.txt"), encoding="utf-8-sig") as f:
        lines = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    for i in indices[:50]:
        h, r, t = kg.test[i]
        mine = [kg.entity_names[h], kg.relation_names[r], kg.entity_names[t]]
        if mine != [s.strip() for s in lines[i]]:
            raise SystemExit(f"test triple {i}: kgnum has {mine}, test.txt line {i + 1} has {lines[i]}; "
                             f"cannot evaluate the same subset")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", default=DEFAULT_PEER, help="JSON written by a peer script")
    p.add_argument("--neg-chunk", type=int, default=200, help="kgnum: positives sharing one negative set")
    p.add_argument("--budget", type=float, default=None, help="override the peer's budget (seconds)")
    p.add_argument("--workers", type=int, default=None, help="override: default the peer's thread count")
    p.add_argument("--out", default=None, help="write the comparison here (default: next to --peer)")
    args = p.parse_args()

    with open(args.peer, encoding="utf-8") as f:
        peer = json.load(f)
    s = peer["settings"]
    budget = args.budget if args.budget is not None else s["budget"]
    workers = args.workers if args.workers is not None else s["threads"]
    kg = kgnum.load_dataset(peer.get("dataset", "FB15k-237"))
    if (kg.n_entities, kg.n_relations) != (peer["n_entities"], peer["n_relations"]):
        print(f"warning: kgnum has {kg.n_entities} entities / {kg.n_relations} relations, the peer "
              f"{peer['n_entities']} / {peer['n_relations']}")
    options = dict(dim=s["dim"], neg=s["neg"], neg_chunk=args.neg_chunk, batch=s["batch"], lr=s["lr"],
                   gamma=s["gamma"], adv=True, adv_temp=s["adv_temp"], workers=workers, seed=s["seed"],
                   progress=False)
    # compile first: kgnum's budget clock starts before its kernel is compiled
    kgnum.train(kg, "TransE_l2", max_steps=workers, **options)
    emb = kgnum.train(kg, "TransE_l2", time_budget=budget, **options)
    st = emb.train_stats

    eval_kg = kg
    if peer.get("test_indices") is not None:
        idx = np.asarray(peer["test_indices"], dtype=np.int64)
        check_same_test_order(kg, peer["data_folder"], idx)
        # the subset is the test split; the rest of test joins valid so the filter keeps all of it
        eval_kg = kgnum.KnowledgeGraph(kg.name, kg.train, np.concatenate([kg.valid, kg.test]), kg.test[idx],
                                       kg.entity_names, kg.relation_names)
    t0 = time.perf_counter()
    metrics = kgnum.evaluate(emb, eval_kg)
    eval_seconds = time.perf_counter() - t0

    mine = {"tool": "kgnum", "version": kgnum.__version__, "triples_per_second": st["triples_per_second"],
            "positives": st["positives"], "train_seconds": st["train_seconds"],
            "epochs": st["positives"] / len(kg.train), "mrr": metrics["mrr"],
            "hits@10": metrics.get("hits@10"), "eval_seconds": eval_seconds,
            "n_test": int(len(eval_kg.test)), "workers": workers, "neg_chunk": args.neg_chunk}
    ratios = {"triples_per_second": mine["triples_per_second"] / max(peer["triples_per_second"], 1e-12),
              "mrr": mine["mrr"] / max(peer["mrr"], 1e-12)}

    peer_name = f"{peer['tool']} {peer.get('pykeen_version', '')} (torch {peer.get('torch_version', '?')}, " \
                f"{s['threads']} threads)"
    print(f"FB15k-237, TransE L2, dim {s['dim']}, {s['neg']} negatives, batch {s['batch']}, lr {s['lr']}, "
          f"gamma {s['gamma']}, self-adversarial (temp {s['adv_temp']}); budget {budget:g} s of training; "
          f"filtered MRR on {mine['n_test']:,} test triples (both sides, mean of optimistic and "
          f"pessimistic rank)")
    print(f"{'':44s} {'triples/s':>11s} {'train s':>8s} {'epochs':>7s} {'MRR':>7s} {'Hits@10':>8s} {'eval s':>7s}")
    for name, r in ((peer_name, peer), (f"kgnum {kgnum.__version__} ({workers} workers)", mine)):
        hits = r.get("hits@10")
        print(f"{name[:44]:44s} {r['triples_per_second']:11,.0f} {r['train_seconds']:8.1f} {r['epochs']:7.2f} "
              f"{r['mrr']:7.4f} {hits if hits is not None else float('nan'):8.4f} {r['eval_seconds']:7.1f}")
    print(f"ratio kgnum/{peer['tool']}: triples/s {ratios['triples_per_second']:.1f}x, "
          f"MRR {ratios['mrr']:.2f}x")

    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.peer)), f"compare-{peer['tool']}.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"peer": {k: v for k, v in peer.items() if k != "test_indices"}, "kgnum": mine,
                   "ratio_kgnum_over_peer": ratios, "budget": budget}, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
