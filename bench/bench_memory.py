"""Peak memory of a training run: sum of PSS over all its processes, 1 worker vs N.

    python bench/bench_memory.py --workers 1 2 --seconds 30

Each run is a fresh ``kgnum train`` process (FB15k-237, TransE_l2, dim 400);
a sampler reads the proportional set size (shared pages split between the
processes that map them) of the process and all its children every 0.1 s.
With the tables in shared memory, N workers should cost about one copy of
the tables plus per-process interpreter overhead, not N copies. Each run
ends with the test evaluation (as a user's run does); next to the measured
peak, the memory plan's figure for the same run (``kgnum plan``) and the
ratio planned / measured (target: within 20%).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import psutil


def tree_pss(proc: psutil.Process) -> tuple[int, int, int]:
    """(sum of PSS, sum of USS, number of processes) over proc and its children."""
    pss = uss = n = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        pss += info.pss
        uss += info.uss
        n += 1
    return pss, uss, n


def measure(workers: int, seconds: float, dataset: str, dim: int) -> dict:
    cmd = [sys.executable, "-m", "kgnum", "train", "--dataset", dataset, "--model", "TransE_l2",
           "--dim", str(dim), "--neg", "200", "--neg-chunk", "200", "--batch", "1000", "--lr", "0.25",
           "--gamma", "9", "--adv", "--time-budget", str(seconds), "--workers", str(workers),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak = (0, 0, 0)
    while proc.poll() is None:
        sample = tree_pss(root)
        if sample[0] > peak[0]:
            peak = sample
        time.sleep(0.1)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out}")
    rate = next((line for line in out.splitlines() if line.startswith("trained")), "")
    import kgnum
    from kgnum.config import TrainConfig
    from kgnum.plan import plan_for

    kg = kgnum.load_dataset(dataset)
    planned = plan_for(kg, TrainConfig(model="TransE_l2", dim=dim, workers=workers, max_steps=1).validate()).peak
    return {"workers": workers, "peak_pss": peak[0], "peak_uss": peak[1], "processes": peak[2], "line": rate,
            "planned": planned}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--dataset", default="FB15k-237")
    parser.add_argument("--dim", type=int, default=400)
    args = parser.parse_args()
    results = [measure(w, args.seconds, args.dataset, args.dim) for w in args.workers]
    base = results[0]["peak_pss"]
    print(f"{'workers':>7s} {'processes':>9s} {'peak PSS sum':>13s} {'USS sum':>9s} {'vs first':>8s} "
          f"{'planned':>10s} {'plan/PSS':>8s}")
    for r in results:
        print(f"{r['workers']:7d} {r['processes']:9d} {r['peak_pss'] / 2**20:10.0f} MiB "
              f"{r['peak_uss'] / 2**20:6.0f} MiB {r['peak_pss'] / base:7.2f}x {r['planned'] / 2**20:6.0f} MiB "
              f"{r['planned'] / r['peak_pss']:8.2f}   {r['line']}")


if __name__ == "__main__":
    main()
