"""GPU engine throughput on a real device: placements, overlap, the host's share of the time.

    python bench/bench_gpu.py                         # needs CuPy and a CUDA device
    python bench/bench_gpu.py --seconds 20 --mrr-seconds 300
    python bench/bench_gpu.py --scaling               # also the shm engine at 1, 2, 4, 8, 16 workers
    python bench/bench_gpu.py --emulate --steps 3000  # no GPU needed: the engine on emulated devices

For TransE_l2, ComplEx and RotatE at dim 400 with 200 negatives shared by chunks of 200 (batch
1000) on FB15k-237: positive triples/s for placement device and host, host with and without
overlap (the ratio), and the fraction of the device threads' time spent waiting on the host
(sampling, gathering rows into pinned memory, handing gradients to the updater). Then the
FB15k-237 test MRR TransE_l2 reaches in --mrr-seconds on the best placement. ``--scaling`` adds the
multi-core engine's throughput at 1..16 workers (the reference workload, TransE_l2 dim 400),
where the machine has the cores. Without a device it says so and measures nothing.
``--emulate``: the GPU engine with NumPy standing in for CuPy on 1 and 2 emulated devices against the
CPU engine, TransE_l2 at the same steps: test MRR (the engine's accuracy, not its speed).
"""
from __future__ import annotations

import argparse
import os
import sys

import kgnum

MODELS = ("TransE_l2", "ComplEx", "RotatE")
WORKLOAD = dict(dim=400, neg=200, neg_chunk=200, batch=1000, valid_every=0, progress=False, seed=0)


def device_count() -> int:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001
        return 0


def run(kg, model, seconds, **opts) -> dict:
    emb = kgnum.train(kg, model, time_budget=seconds, **WORKLOAD, **opts)
    s = emb.train_stats
    log = s.get("engine_log") or [{}]
    waits = [d["host_wait_fraction"] for d in log[-1].get("devices", [])]
    return {"triples_per_second": s["triples_per_second"], "steps": s["steps"],
            "host_wait_fraction": sum(waits) / len(waits) if waits else float("nan"), "emb": emb}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="FB15k-237")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--mrr-seconds", type=float, default=300)
    ap.add_argument("--gpus", default="0")
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--emulate", action="store_true")
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args(argv)
    if args.emulate:
        import time

        kg = kgnum.load_dataset(args.dataset)
        print(f"{kg}; TransE_l2 dim 400, {args.steps} steps each, test MRR")
        ref = None
        for name, opts in (("cpu, 1 worker", dict(workers=1)), ("gpu numpy:1 (host)", dict(backend="gpu", gpus="numpy:1",
                           gpu_placement="host")), ("gpu numpy:2 (host)", dict(backend="gpu", gpus="numpy:2"))):
            t0 = time.perf_counter()
            emb = kgnum.train(kg, "TransE_l2", max_steps=args.steps, **{**WORKLOAD, "dim": 400}, **opts)
            mrr = kgnum.evaluate(emb, kg)["mrr"]
            ref = mrr if ref is None else ref
            print(f"{name:22s} test MRR {mrr:.4f} ({mrr - ref:+.4f} vs cpu)  {time.perf_counter() - t0:.0f} s", flush=True)
        return 0
    n = device_count()
    if n == 0:
        print("no CUDA device visible (or CuPy missing): GPU figures not measured")
        return 0
    kg = kgnum.load_dataset(args.dataset)
    print(f"{kg}; {n} device(s); {args.seconds:g} s per run")
    print(f"{'model':10s} {'placement':24s} {'triples/s':>12s} {'host wait':>9s}")
    best = {}
    for model in MODELS:
        rows = {}
        for name, opts in (("device", dict(gpu_placement="device")),
                           ("host, overlap", dict(gpu_placement="host", gpu_overlap=True)),
                           ("host, no overlap", dict(gpu_placement="host", gpu_overlap=False))):
            r = run(kg, model, args.seconds, backend="gpu", gpus=args.gpus, **opts)
            rows[name] = r
            print(f"{model:10s} {name:24s} {r['triples_per_second']:12,.0f} {r['host_wait_fraction']:9.2f}",
                  flush=True)
        ratio = rows["host, overlap"]["triples_per_second"] / rows["host, no overlap"]["triples_per_second"]
        print(f"{model:10s} overlap / no overlap (host): {ratio:.2f}x; device / host: "
              f"{rows['device']['triples_per_second'] / rows['host, overlap']['triples_per_second']:.2f}x")
        best[model] = max(rows, key=lambda k: rows[k]["triples_per_second"])
    placement = "device" if best["TransE_l2"] == "device" else "host"
    emb = kgnum.train(kg, "TransE_l2", time_budget=args.mrr_seconds, backend="gpu", gpus=args.gpus,
                      gpu_placement=placement, **{**WORKLOAD, "valid_every": None})
    print(f"TransE_l2 {args.mrr_seconds:g} s on placement {placement}: test MRR {kgnum.evaluate(emb, kg)['mrr']:.4f}, "
          f"{emb.train_stats['triples_per_second']:,.0f} triples/s")
    if args.scaling:
        cores = len(os.sched_getaffinity(0))
        base = None
        for w in (1, 2, 4, 8, 16):
            if w > cores:
                break
            r = run(kg, "TransE_l2", args.seconds, workers=w)
            base = base or r["triples_per_second"]
            print(f"shm engine {w:2d} workers: {r['triples_per_second']:12,.0f} triples/s "
                  f"({r['triples_per_second'] / base:.2f}x one worker)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
