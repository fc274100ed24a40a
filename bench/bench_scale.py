"""Scale benchmark: a 5M-entity, 50M-triple synthetic graph against the small-graph rate.

    python bench/bench_scale.py                                     # the issue's sizes (~4 min)
    python bench/bench_scale.py --entities 200000 --triples 2000000 --seconds 10   # smoke test

Target (issue): 5 million entities, 50 million training triples, dim 100, 2 workers
train within 16 GiB peak memory and keep >= 60% of the small-graph throughput;
loading and sharding need at most one extra copy of the edge array.

One run measures, with the same settings (TransE_l2, dim 100, 200 negatives shared
by chunks of 200, batch 1000, self-adversarial, 2 workers, --seconds of training):
  small  FB15k-237 (or, without $KGNUM_DATA_DIR, a graph of FB15k-237's sizes from
         the generator below): positive triples per second
  big    the synthetic graph: triples per second, ratio big/small
  memory a thread in this process samples every 0.2 s the sum of PSS over this
         process and all its children (shared pages are split between the processes
         that map them, so the sum counts the shared-memory tables once), the sum of
         RSS (counts shared pages once per process: an over-estimate), the kgnum
         shared-memory blocks in /dev/shm, and reports the peak of each per phase.

The graph generator is NumPy only, vectorised in chunks written straight into one
preallocated (n, 3) int32 array. Heads and tails: a mix of a power law over entity
ranks (rank frequency ~ rank^-2/3) and uniform draws, ranks mapped to ids through a
random permutation so the hubs are spread over the table; relations: a power law over
--relations ids. Every entity is the head of at least one triple (when triples >=
entities). Duplicate triples and self-loops are not removed: this measures training
speed and memory, not model quality. Valid/test are 1000 triples each from the same
distribution (only there because KnowledgeGraph has the splits; nothing evaluates).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time

import numpy as np
import psutil

import kgnum
from kgnum.shm.tables import SHM_DIR, block_names

GiB = 1024 ** 3
LIMIT_GIB = 16.0
TARGET_RATIO = 0.60
# FB15k-237's sizes, for the small graph when the real one is not available
SMALL_SIZES = dict(entities=14541, relations=237, triples=272115)


# --------------------------------------------------------------------------- memory


class MemorySampler(threading.Thread):
    """Samples this process + its children every ``interval`` s; keeps peaks per phase.

    Set ``phase`` to attribute the following samples to a new label; ``peaks[label]``
    holds the maxima of pss (sum over processes), rss (sum), shm (bytes of this
    process's kgnum blocks in /dev/shm) and procs (process count).
    """

    def __init__(self, interval: float = 0.2):
        super().__init__(name="memory-sampler", daemon=True)
        self.interval = interval
        self.me = psutil.Process()
        self.phase = "start"
        self.peaks: dict[str, dict] = {}
        self.shm_blocks: dict[str, int] = {}  # largest size seen per block-name suffix
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def sample(self) -> None:
        pss = rss = n = 0
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                m = p.memory_full_info()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue  # a worker that exited between the listing and the read
            pss += m.pss
            rss += m.rss
            n += 1
        shm = 0
        prefix_len = len(f"kgnum_{os.getpid()}_")
        for name in block_names(os.getpid()):
            try:
                size = os.stat(os.path.join(SHM_DIR, name)).st_size
            except FileNotFoundError:
                continue
            shm += size
            key = name[prefix_len:].split("_", 1)[-1]  # kgnum_<pid>_<run>_<key> -> key
            self.shm_blocks[key] = max(self.shm_blocks.get(key, 0), size)
        with self._lock:
            peak = self.peaks.setdefault(self.phase, dict(pss=0, rss=0, shm=0, procs=0))
            peak["pss"] = max(peak["pss"], pss)
            peak["rss"] = max(peak["rss"], rss)
            peak["shm"] = max(peak["shm"], shm)
            peak["procs"] = max(peak["procs"], n)

    def set_phase(self, label: str) -> None:
        self.sample()  # close the previous phase with a fresh sample
        with self._lock:
            self.phase = label
        self.sample()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()

    def overall(self, key: str) -> int:
        return max((p[key] for p in self.peaks.values()), default=0)


# --------------------------------------------------------------------------- graph


def _power_law_ranks(rng: np.random.Generator, n: int, size: int, exponent: int,
                     uniform_frac: float) -> np.ndarray:
    """``size`` int32 ranks in [0, n): floor(n * u**exponent) (rank frequency ~
    rank^(1/exponent - 1)), a ``uniform_frac`` share of them uniform instead."""
    u = rng.random(size)
    v = u.copy()
    for _ in range(exponent - 1):
        np.multiply(u, v, out=u)
    u *= n
    ranks = u.astype(np.int32)
    np.minimum(ranks, n - 1, out=ranks)
    if uniform_frac > 0:
        flat = rng.random(size) < uniform_frac
        ranks[flat] = rng.integers(0, n, size=int(flat.sum()), dtype=np.int32)
    return ranks


def generate_triples(n_entities: int, n_relations: int, n_triples: int, seed: int,
                     chunk: int = 1 << 22, uniform_frac: float = 0.3,
                     ent_perm: np.ndarray | None = None, cover: bool = True) -> np.ndarray:
    """``(n_triples, 3)`` int32 (head, relation, tail), written chunk by chunk in place;
    ``cover``: the first rows get heads 0, 1, ... so every entity occurs."""
    rng = np.random.default_rng(seed)
    if ent_perm is None:
        ent_perm = rng.permutation(n_entities).astype(np.int32)
    out = np.empty((n_triples, 3), dtype=np.int32)
    for start in range(0, n_triples, chunk):
        end = min(n_triples, start + chunk)
        m = end - start
        out[start:end, 0] = ent_perm[_power_law_ranks(rng, n_entities, m, 3, uniform_frac)]
        out[start:end, 1] = _power_law_ranks(rng, n_relations, m, 2, 0.0)
        out[start:end, 2] = ent_perm[_power_law_ranks(rng, n_entities, m, 3, uniform_frac)]
    if cover:  # every entity a head at least once (the engine shuffles: order is irrelevant)
        k = min(n_entities, n_triples)
        out[:k, 0] = np.arange(k, dtype=np.int32)
    return out


def entity_names(n: int, prefix: str) -> np.ndarray:
    """``(n,)`` object array of ``prefix<i>`` strings.

    KnowledgeGraph stores names as an object array (``np.asarray(names, dtype=object)``),
    so a NumPy string array or a lazy sequence would be turned into n Python str
    anyway; building the object array directly skips the intermediate list.
    """
    return np.fromiter((f"{prefix}{i}" for i in range(n)), dtype=object, count=n)


def synthetic_graph(name: str, n_entities: int, n_relations: int, n_triples: int,
                    n_held: int, seed: int) -> tuple[kgnum.KnowledgeGraph, dict]:
    """The graph plus the seconds spent on triples, names and KnowledgeGraph's checks."""
    times = {}
    t0 = time.perf_counter()
    perm = np.random.default_rng(seed).permutation(n_entities).astype(np.int32)
    train = generate_triples(n_entities, n_relations, n_triples, seed + 1, ent_perm=perm)
    held = generate_triples(n_entities, n_relations, 2 * n_held, seed + 2, ent_perm=perm, cover=False)
    times["triples"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ent = entity_names(n_entities, "e")
    rel = entity_names(n_relations, "r")
    times["names"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    kg = kgnum.KnowledgeGraph(name, train, held[:n_held], held[n_held:], ent, rel)
    times["graph"] = time.perf_counter() - t0
    assert kg.train is train, "KnowledgeGraph copied the train array"
    return kg, times


# --------------------------------------------------------------------------- training


def warm_up(kg: kgnum.KnowledgeGraph, args) -> float:
    """Compile the kernel before any timed run; returns the seconds it took.

    kgnum's time budget starts counting before the parent compiles and the workers are
    ready (the clock is reset at "go" only if the budget is not spent by then), so a
    budget shorter than the compile time would train nothing.
    """
    t0 = time.perf_counter()
    kgnum.train(kg, args.model, dim=args.dim, neg=args.neg, neg_chunk=args.neg_chunk, batch=args.batch,
                lr=args.lr, gamma=args.gamma, adv=True, max_steps=args.workers, workers=args.workers,
                seed=args.seed, progress=False)
    return time.perf_counter() - t0


def train_rate(kg: kgnum.KnowledgeGraph, args) -> dict:
    """Train with the benchmark settings; counts kg.all_triples() calls made inside train."""
    calls = []
    original = kg.all_triples

    def counting_all_triples():
        arr = original()
        calls.append(arr.nbytes)
        return arr

    kg.all_triples = counting_all_triples  # instance attribute: only this graph, only this call
    t0 = time.perf_counter()
    try:
        emb = kgnum.train(kg, args.model, dim=args.dim, neg=args.neg, neg_chunk=args.neg_chunk,
                          batch=args.batch, lr=args.lr, gamma=args.gamma, adv=True,
                          time_budget=args.seconds, workers=args.workers, seed=args.seed,
                          progress=False)
    finally:
        del kg.all_triples
    wall = time.perf_counter() - t0
    stats = dict(emb.train_stats)
    if not stats["positives"]:
        raise RuntimeError(f"{kg.name}: no triple trained in {wall:.1f} s (train_stats {stats}); "
                           f"the start-up outlasted --seconds {args.seconds:g}? Give more seconds")
    stats.pop("valid_history", None)
    table_bytes = (emb.entity.nbytes + emb.relation.nbytes + emb.entity_state.nbytes
                   + emb.relation_state.nbytes)
    return {"triples_per_second": stats["triples_per_second"], "train_seconds": stats["train_seconds"],
            "steps": stats["steps"], "positives": stats["positives"], "wall_seconds": wall,
            "table_bytes": table_bytes, "edge_copies_via_all_triples": len(calls),
            "all_triples_bytes": sum(calls), "worker_steps": stats.get("worker_steps")}


def small_graph(args) -> kgnum.KnowledgeGraph:
    if args.small != "synthetic" and (os.environ.get("KGNUM_DATA_DIR") or os.path.isdir(args.small)):
        return kgnum.load_dataset(args.small)
    s = SMALL_SIZES
    kg, _ = synthetic_graph("synthetic-small", s["entities"], s["relations"], s["triples"], 1000,
                            args.seed + 100)
    return kg


# --------------------------------------------------------------------------- main


def short_label(kg: kgnum.KnowledgeGraph) -> str:
    return f"{kg.name} ({kg.n_entities:,} entities, {len(kg.train):,} train)"


def gib(n: float) -> str:
    return f"{n / GiB:6.2f} GiB"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entities", type=int, default=5_000_000)
    p.add_argument("--triples", type=int, default=50_000_000)
    p.add_argument("--relations", type=int, default=1000)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--neg", type=int, default=200)
    p.add_argument("--neg-chunk", type=int, default=200)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--gamma", type=float, default=12.0)
    p.add_argument("--model", default="TransE_l2")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=60.0, help="training seconds per graph")
    p.add_argument("--small", default="FB15k-237",
                   help="small graph: a dataset name/folder, or 'synthetic' (FB15k-237's sizes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()

    sampler = MemorySampler()
    sampler.start()
    t_start = time.perf_counter()
    results = {"settings": {k: v for k, v in vars(args).items() if k != "json"}}

    # (a) small graph, same settings
    sampler.set_phase("small: load+jit")
    small = small_graph(args)
    results["compile_seconds"] = warm_up(small, args)
    sampler.set_phase("small: train")
    results["small"] = dict(train_rate(small, args), graph=repr(small), label=short_label(small))
    print(f"small  {small}: {results['small']['triples_per_second']:,.0f} triples/s "
          f"({results['small']['train_seconds']:.1f} s)", flush=True)
    del small

    # (b) the big graph
    sampler.set_phase("big: generate")
    kg, gen_times = synthetic_graph("synthetic-big", args.entities, args.relations, args.triples,
                                    1000, args.seed)
    results["generate_seconds"] = gen_times
    print(f"big    {kg}: generated in {sum(gen_times.values()):.1f} s "
          f"(triples {gen_times['triples']:.1f} s, names {gen_times['names']:.1f} s, "
          f"KnowledgeGraph checks {gen_times['graph']:.1f} s)", flush=True)
    sampler.set_phase("big: train")
    big = train_rate(kg, args)
    results["big"] = dict(big, graph=repr(kg), label=short_label(kg))
    sampler.set_phase("end")
    sampler.stop()

    ratio = big["triples_per_second"] / results["small"]["triples_per_second"]
    edges = kg.train.nbytes
    sample = kg.entity_names[-1000:]  # the longest names; str objects are 8-byte aligned
    names = kg.entity_names.nbytes + sum(-(-sys.getsizeof(x) // 8) * 8 for x in sample) / len(sample) * kg.n_entities
    shm_edges = sampler.shm_blocks.get("edges", 0)
    peak_pss = sampler.overall("pss")
    results.update(ratio=ratio, edge_bytes=edges, shm_edge_bytes=shm_edges,
                   shm_blocks=sampler.shm_blocks, names_bytes_est=names,
                   peaks=sampler.peaks, peak_pss=peak_pss,
                   maxrss_self=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                   maxrss_children=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
                   total_seconds=time.perf_counter() - t_start)

    s = results["small"]
    print()
    print(f"settings: {args.model} dim {args.dim}, neg {args.neg}, neg_chunk {args.neg_chunk}, "
          f"batch {args.batch}, adv, lr {args.lr}, gamma {args.gamma}, {args.workers} workers, "
          f"{args.seconds:g} s budget")
    print(f"{'graph':52s} {'triples/s':>12s} {'train s':>8s} {'wall s':>7s} {'positives':>12s}")
    for r in (s, results["big"]):
        print(f"{r['label']:52s} {r['triples_per_second']:12,.0f} {r['train_seconds']:8.1f} "
              f"{r['wall_seconds']:7.1f} {r['positives']:12,}")
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"ratio big/small: {ratio:.3f}  ({verdict} the >= {TARGET_RATIO:.0%} target)")
    print()
    print("memory (peaks of samples every 0.2 s; PSS summed over this process and its children)")
    print(f"{'phase':16s} {'PSS sum':>11s} {'RSS sum':>11s} {'/dev/shm':>11s} {'procs':>5s}")
    for phase, pk in sampler.peaks.items():
        print(f"{phase:16s} {gib(pk['pss']):>11s} {gib(pk['rss']):>11s} {gib(pk['shm']):>11s} "
              f"{pk['procs']:5d}")
    verdict = "within" if peak_pss <= LIMIT_GIB * GiB else "OVER"
    print(f"peak PSS sum: {peak_pss / GiB:.2f} GiB ({verdict} the {LIMIT_GIB:g} GiB limit); "
          f"max RSS: this process {gib(results['maxrss_self']).strip()}, "
          f"largest child {gib(results['maxrss_children']).strip()}")
    from kgnum.config import TrainConfig
    from kgnum.plan import plan_for

    planned = plan_for(kg, TrainConfig(model=args.model, dim=args.dim, workers=args.workers, max_steps=1,
                                       neg=args.neg, neg_chunk=args.neg_chunk, batch=args.batch).validate()).peak
    measured = sampler.peaks["big: train"]["pss"]
    results.update(planned_peak=planned, measured_big_train_pss=measured)
    print(f"memory plan (kgnum plan) of the big run: {planned / GiB:.2f} GiB planned, {measured / GiB:.2f} GiB "
          f"measured (peak PSS while it trained): planned/measured {planned / measured:.2f} (target 0.8-1.2)")
    print()
    copies = big["edge_copies_via_all_triples"]
    shared_tables = sum(v for k, v in sampler.shm_blocks.items() if k != "edges")
    rows = [
        (f"edge array kg.train ({len(kg.train):,} x 3 int32)", edges),
        ("shared copy of the edges (/dev/shm block)", shm_edges),
        (f"kg.all_triples() copies made inside kgnum.train ({copies})", big["all_triples_bytes"]),
        (f"tables in this process (entity {kg.n_entities:,} x {args.dim} f32, relation, Adagrad)",
         big["table_bytes"]),
        ("tables' shared copies (/dev/shm blocks)", shared_tables),
        (f"entity names ({kg.n_entities:,} Python str in an object array, est.)", names),
    ]
    print("sizes")
    for label, nbytes in rows:
        print(f"  {label:72s} {gib(nbytes)}")
    extra = (1 if shm_edges else 0) + copies
    verdict = "meets" if extra <= 1 else "MISSES"
    print(f"extra copies of the edge array during training: {extra} "
          f"({'1 shared block' if shm_edges else 'no shared block'}"
          f"{f' + {copies} from kg.all_triples()' if copies else ''}; {verdict} the <= 1 requirement)")
    print(f"total {results['total_seconds']:.0f} s")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, default=str)


if __name__ == "__main__":
    main()
