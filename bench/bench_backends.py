"""The same training workload on every backend this machine has, with ratios to the shm engine.

    python bench/bench_backends.py                                  # FB15k-237, TransE_l2 + ComplEx, 10 epochs
    python bench/bench_backends.py --dataset umls --models ComplEx --epochs 40
    python bench/bench_backends.py --json bench/out/backends.json

Backends, each at the same epochs and hyperparameters (the model's defaults, no validation, so the
work is identical): ``cpu`` with --workers W (the shared-memory engine: the reference of every
ratio), ``dask`` on a LocalCluster of W processes with a METIS partition and with a random one
(edge cut and bytes moved differ; the negatives are the same), and ``gpu`` where its engine and a
device exist. Printed per run: seconds, positive triples/s, the ratio to shm in this run, filtered
test MRR and its difference to shm, and for dask the bytes pulled + pushed per epoch and the
seconds parts waited on remote rows. The last lines estimate a Freebase-sized run from the measured
per-worker rate (the run's triples/s over its workers, waiting included) and bytes per positive
(which depend on the graph's cut and on how many rows a round touches: read them as an order of
magnitude).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

import kgnum
from kgnum.cluster.partition import partition, save_partition

FREEBASE = dict(entities=86_054_151, edges=338_586_276, dim=400, cores=48)
DGLKE_FREEBASE_POSITIVES_PER_S = 1.2e6  # examples/freebase/dist_train.sh, 4 machines


def _gpu_available() -> str | None:
    """Why the gpu backend is skipped, or None when it runs."""
    try:
        import kgnum.gpu.engine  # noqa: F401
    except ModuleNotFoundError:
        return "the gpu engine is not in this version"
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device"
    except Exception as e:  # noqa: BLE001 - any failure means: not here
        return f"cupy unavailable ({type(e).__name__})"
    return None


def run(kg, model, backend, epochs, workers, **extra) -> dict:
    opts = dict(epochs=epochs, valid_every=0, progress=False, seed=0)
    started = time.perf_counter()
    emb = kgnum.train(kg, model, backend=backend, workers=workers, **opts, **extra)
    wall = time.perf_counter() - started
    stats = emb.train_stats
    out = {"model": model, "backend": backend, "extra": {k: str(v) for k, v in extra.items()},
           "train_seconds": stats["train_seconds"], "wall_seconds": wall, "steps": stats["steps"],
           "positives": stats["positives"], "triples_per_second": stats["triples_per_second"],
           "test_mrr": kgnum.evaluate(emb, kg)["mrr"]}
    log = stats.get("engine_log") or []
    if log:
        per_epoch = []
        last_epoch = 0
        for entry in log:
            span = max(1, entry["epoch"] - last_epoch)
            last_epoch = entry["epoch"]
            per_epoch.append(sum(p["bytes_pulled"] + p["bytes_pushed"] for p in entry["parts"]) / span)
        out["bytes_per_epoch"] = float(np.mean(per_epoch))
        out["wait_seconds"] = float(sum(p["wait_seconds"] for e in log for p in e["parts"]))
        rates = [p["triples_per_second"] for p in log[-1]["parts"]]
        out["per_worker_triples_per_second"] = float(np.mean(rates))
        out["bytes_per_positive"] = out["bytes_per_epoch"] / max(1, kg.train.shape[0])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="FB15k-237")
    ap.add_argument("--models", default="TransE_l2,ComplEx")
    ap.add_argument("--epochs", type=float, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    kg = kgnum.load_dataset(args.dataset)
    print(f"{kg}; {args.epochs:g} epochs, {args.workers} workers, each model's defaults, no validation")
    gpu_skip = _gpu_available()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        parts = {}
        for method in ("metis", "random"):
            p = partition(kg, args.workers, method, seed=0)
            parts[method] = save_partition(p, kg, os.path.join(tmp, method))
            print(f"partition {method}: edge cut {p.report['edge_cut_fraction']:.3f}, "
                  f"sizes {p.report['part_sizes']}, {p.report['seconds']:.2f} s")
        for model in args.models.split(","):
            shm = run(kg, model, "cpu", args.epochs, args.workers)
            results.append(shm)
            for method in ("metis", "random"):
                results.append(run(kg, model, "dask", args.epochs, args.workers, local_cluster=args.workers,
                                   partition=parts[method]))
            if gpu_skip is None:
                results.append(run(kg, model, "gpu", args.epochs, args.workers))
    if gpu_skip:
        print(f"gpu: skipped ({gpu_skip})")
    print(f"\n{'model':10s} {'backend':14s} {'seconds':>8s} {'triples/s':>10s} {'x shm':>6s} {'MRR':>7s} "
          f"{'dMRR':>7s} {'MB/epoch':>9s} {'waited s':>9s}")
    for r in results:
        ref = next(x for x in results if x["model"] == r["model"] and x["backend"] == "cpu")
        name = r["backend"] + (f" ({os.path.basename(r['extra']['partition'])})" if "partition" in r["extra"] else "")
        mb = f"{r['bytes_per_epoch'] / 1e6:9.1f}" if "bytes_per_epoch" in r else f"{'':9s}"
        wait = f"{r['wait_seconds']:9.1f}" if "wait_seconds" in r else f"{'':9s}"
        r["ratio_to_shm"] = r["triples_per_second"] / ref["triples_per_second"]
        r["mrr_minus_shm"] = r["test_mrr"] - ref["test_mrr"]
        print(f"{r['model']:10s} {name:14s} {r['train_seconds']:8.1f} {r['triples_per_second']:10,.0f} "
              f"{r['ratio_to_shm']:6.2f} {r['test_mrr']:7.4f} {r['mrr_minus_shm']:+7.4f} {mb} {wait}")
    for r in results:
        if r["backend"] == "dask" and r["extra"].get("partition", "").endswith("metis"):
            fb = FREEBASE
            row = 4 * fb["dim"]
            for machines in (1, 4, 8):
                workers = machines * fb["cores"]
                rate = workers * r["triples_per_second"] / args.workers  # waiting included
                own_gb = fb["entities"] / machines * (row + 4) / 1e9
                print(f"estimate {r['model']} Freebase dim {fb['dim']} on {machines} x {fb['cores']} cores: "
                      f"{fb['edges'] / rate / 60:.1f} min/epoch at {rate / 1e6:.1f}M positives/s "
                      f"({rate / DGLKE_FREEBASE_POSITIVES_PER_S:.1f}x DGL-KE's 1.2M/s on 4 machines), "
                      f"own rows {own_gb:.0f} GB per machine, network "
                      f"{fb['edges'] * r['bytes_per_positive'] * fb['dim'] / kg_dim(r) / 1e12:.2f} TB per epoch")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dataset": kg.name, "epochs": args.epochs, "workers": args.workers, "gpu_skipped": gpu_skip,
                       "results": results}, f, indent=2)
    return 0


def kg_dim(r) -> int:
    """The dim the run used (the model's default): bytes scale with it."""
    from kgnum.config import model_default

    return int(model_default(r["model"], "dim"))


if __name__ == "__main__":
    sys.exit(main())
