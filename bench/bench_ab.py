"""Interleaved A/B of the training loop: this working tree against a git revision.

    python bench/bench_ab.py HEAD~1                      # TransE_l2, 20 pairs
    python bench/bench_ab.py v0.1 --model RotatE --pairs 10
    python bench/bench_ab.py HEAD --dim 100 --debias /people/person/gender,/people/person/religion

On a shared machine two benchmark runs minutes apart differ by more than a
kernel change of a few percent. This script loads both versions of
``kgnum.kernels`` into one process (the revision is extracted with
``git archive`` into a temporary directory and imported under another
name), then times ``train_kernel`` on FB15k-237 (dim 400, 200 negatives
shared by chunks of 200, batch 1000) in short alternating bursts on one
core, by CPU time, and prints the per-pair ratio new/old. Each version
trains its own tables from the same initial state, so both see the same
data, the same kind of rows and comparable embedding norms. With
``--debias``, each version builds its run the way ``kgnum train --debias``
does (its own ``make_job``: the model's defaults at ``--dim``, the KL term's
parameters) and times that step, term included.
"""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import kgnum
from kgnum.kernels.registry import get_model

REPO = Path(__file__).resolve().parent.parent
DIM, NEG, CHUNK, BATCH = 400, 200, 200, 1000


def import_revision(rev: str, into: Path):
    """The kgnum package of git revision ``rev``, imported as kgnum_<sha> (its kernels.step loaded)."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", rev, "kgnum"], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    name = f"kgnum_{sha}"
    (into / "kgnum").rename(into / name)
    sys.path.insert(0, str(into))
    importlib.import_module(f"{name}.kernels.step")
    return sha, importlib.import_module(name)


def debias_call(pkg, kg, model: str, dim: int, debias: str, edges, order):
    """``(start, stop) -> loss`` of package ``pkg``'s step with the KL term on ``debias``, set up as
    ``kgnum train --debias`` sets it up (``make_job``); tables from seed 0."""
    train, config = importlib.import_module(f"{pkg.__name__}.train"), importlib.import_module(f"{pkg.__name__}.config")
    cfg = config.TrainConfig(model=model, dim=dim, epochs=1, workers=1, valid_every=0, seed=0,
                             debias=debias).validate()
    job = train.make_job(kg, cfg, train.initial_embeddings(kg, cfg, None))
    kernel = importlib.import_module(f"{pkg.__name__}.kernels.step").train_kernel(job.model, job.terms)
    return lambda a, b: kernel(job.tables, job.edges, order, a, b, job.params, 0)


def kernel_call(step, model: str, tables: tuple, edges, order, cdf):
    """``(start, stop) -> loss`` for either kernel signature: grouped Tables / StepParams
    (since the engine contract) or the earlier 18 positional arguments."""
    if hasattr(step, "StepParams"):
        kernel = step.train_kernel(model, ())
        t = step.Tables(*tables)
        params = step.step_params(BATCH, CHUNK, NEG, cdf, 9.0, 0.25, 1.0)
        return lambda a, b: kernel(t, edges, order, a, b, params, 0)
    kernel = step.train_kernel(model)
    return lambda a, b: kernel(*tables, edges, order, a, b, BATCH, CHUNK, NEG, cdf, 9.0, 0.25, 1.0, 0.0, 3, 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revision", help="git revision to compare against (e.g. HEAD~1)")
    parser.add_argument("--model", default="TransE_l2")
    parser.add_argument("--dataset", default="FB15k-237")
    parser.add_argument("--pairs", type=int, default=20, help="alternating (old, new) measurements")
    parser.add_argument("--positives", type=int, default=20_000, help="positives per measurement")
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--debias", help="sensitive relations: time the step with the KL term (kgnum train --debias)")
    args = parser.parse_args()

    threadpool_limits(1)
    import kgnum.kernels.step as new_step

    kg = kgnum.load_dataset(args.dataset)
    sf = get_model(args.model)
    edges = kg.train.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(edges)).astype(np.int64)
    cdf = np.empty(0, dtype=np.float64)
    with tempfile.TemporaryDirectory() as tmp:
        sha, old_pkg = import_revision(args.revision, Path(tmp))
        if args.debias:
            calls = {name: debias_call(pkg, kg, args.model, args.dim, args.debias, edges, order)
                     for name, pkg in (("old", old_pkg), ("new", kgnum))}
        else:
            kernels = {"old": old_pkg.kernels.step, "new": new_step}
            tables = {}
            for name in kernels:
                ent, rel = sf.init_tables(kg.n_entities, kg.n_relations, args.dim, 9.0, np.random.default_rng(0))[:2]
                tables[name] = (ent, rel, np.zeros(len(ent), np.float32), np.zeros(len(rel), np.float32))
            calls = {name: kernel_call(step, args.model, tables[name], edges, order, cdf)
                     for name, step in kernels.items()}

        def run(name, a, b):
            return calls[name](a, b)

        for name in calls:
            run(name, 0, BATCH)  # compile
        rates = {name: [] for name in calls}
        step = args.positives
        for i in range(args.pairs):
            a = (i * step) % (len(edges) - step)
            for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                t0 = time.process_time()
                run(name, a, a + step)
                rates[name].append(step / (time.process_time() - t0))

    term = f" with the KL term on {args.debias}" if args.debias else ""
    print(f"{args.model} dim {args.dim}{term} on {args.dataset}, one core, {args.pairs} pairs of {step:,} positives "
          f"(CPU time); old = {args.revision} ({sha}), new = working tree")
    for name, r in rates.items():
        r = np.array(r)
        print(f"{name}: median {np.median(r):,.0f}/s  min {r.min():,.0f}  max {r.max():,.0f}")
    ratio = np.array(rates["new"]) / np.array(rates["old"])
    print(f"new/old per pair: median {np.median(ratio):.3f} (min {ratio.min():.3f}, max {ratio.max():.3f}; "
          f"{(ratio > 1).sum()} of {len(ratio)} pairs faster)")


if __name__ == "__main__":
    main()
