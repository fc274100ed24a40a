"""What OpenBLAS's choice of kernels is worth: the same training run under two OPENBLAS_CORETYPE values.

    python bench/bench_blas.py                               # Haswell against OpenBLAS's own choice
    python bench/bench_blas.py --cores Haswell SkylakeX --rounds 3 --seconds 20

NumPy's and SciPy's OpenBLAS (the Numba step calls SciPy's) pick their kernels when they
load, from the CPU or from OPENBLAS_CORETYPE. An environment that sets it (some machine
images do, for identical results across hosts) can hold an AVX-512 CPU to the AVX2
"Haswell" kernels. Each round runs ``kgnum train`` on FB15k-237 once per setting, in
alternation, and reads the training rate and the evaluation time it prints; the ratios
are to the first setting of the same round. "auto" means the variable unset.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

RATE = re.compile(r"([\d,]+) positive triples/s")
EVAL = re.compile(r"evaluated in ([\d.]+) s")
TEST = re.compile(r"^both\s+([\d.]+)", re.M)


def run_once(core: str, args) -> tuple[float, float, float, str]:
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    if core != "auto":
        env["OPENBLAS_CORETYPE"] = core
    probe = subprocess.run([sys.executable, "-c", "import numpy, scipy.linalg, threadpoolctl; print(','.join("
                            "sorted({i.get('architecture', '?') for i in threadpoolctl.threadpool_info()})))"],
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    cmd = [sys.executable, "-m", "kgnum.cli", "train", "--dataset", args.dataset, "--model", args.model,
           "--time-budget", str(args.seconds), "--valid-every", "0", "--workers", str(args.workers),
           "--eval-split", "test", "--seed", "0"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed under OPENBLAS_CORETYPE={core}:\n{text[-2000:]}")
    return (float(RATE.search(text).group(1).replace(",", "")), float(EVAL.search(text).group(1)),
            float(TEST.search(text).group(1)), probe)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", nargs="+", default=["Haswell", "auto"],
                        help="OPENBLAS_CORETYPE values ('auto': unset); ratios are to the first")
    parser.add_argument("--dataset", default="FB15k-237")
    parser.add_argument("--model", default="TransE_l2")
    parser.add_argument("--seconds", type=float, default=20.0, help="training budget of each run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    rows = {core: [] for core in args.cores}
    for r in range(args.rounds):
        for core in args.cores:
            rate, evaluated, mrr, kernels = run_once(core, args)
            rows[core].append((rate, evaluated, mrr))
            print(f"round {r + 1}  OPENBLAS_CORETYPE={core:9s} (OpenBLAS: {kernels:9s})  {rate:>10,.0f} "
                  f"positives/s  eval {evaluated:.1f} s  test MRR {mrr:.4f}  "
                  f"({rate / rows[args.cores[0]][r][0]:.2f}x the rate of {args.cores[0]})", flush=True)
    first = rows[args.cores[0]]
    print(f"\n{args.dataset} {args.model}, {args.workers} worker(s), {args.seconds:g} s a run, "
          f"{args.rounds} rounds (medians; ratios within a round, to {args.cores[0]})")
    for core in args.cores:
        rate = statistics.median(x[0] for x in rows[core])
        ev = statistics.median(x[1] for x in rows[core])
        ratio = statistics.median(x[0] / f[0] for x, f in zip(rows[core], first))
        eratio = statistics.median(f[1] / x[1] for x, f in zip(rows[core], first))
        print(f"  {core:9s} {rate:>10,.0f} positives/s ({ratio:.2f}x)   eval {ev:.1f} s ({eratio:.2f}x as fast)")


if __name__ == "__main__":
    main()
