"""``kgnum plan``: the memory a run will need, before it starts, against what the machine has.

    counts (a loaded graph, or --entities/--relations/--edges) + model, dim, workers, backend
      -> bytes of: the process (Python, NumPy, Numba and the compiled step), the graph (edges,
         names), the tables and Adagrad state, the engine's copies (shared-memory blocks, the
         workers' shards; a Dask part's own + cached rows), evaluation's buffers
      -> the peak, summed as proportional set size (shared pages counted once)
      -> against MemAvailable (and, for dask, per worker; for gpu, per device against its free memory)

The constants below come from measurements on this code (bench/RESULTS.md, "Memory plan"):
the planned peak is checked against the measured peak PSS on FB15k-237 and on a 5M-entity
graph. ``kgnum train`` runs the same check and refuses a run that does not fit unless
``--force``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import available_bytes
from .kernels.registry import get_model

MiB = 1024 ** 2
GiB = 1024 ** 3
PROCESS_BYTES = 190 * MiB  # Python + NumPy + Numba + the compiled step and evaluation kernels
WORKER_BYTES = 30 * MiB  # a forked shared-memory worker's own pages besides its shard
DASK_WORKER_BYTES = 260 * MiB  # a Dask worker process (distributed + kgnum + the compiled step)
NAME_BYTES = 72  # a vocabulary name held as a Python str in an object array (average)
HEADROOM = 0.9  # a run is planned to fit when its peak is under this share of what is free
TORCH_BYTES = 215 * MiB  # PyTorch and the adversarial baseline's module, imported (measured PSS)


@dataclass
class Plan:
    backend: str
    workers: int
    items: list = field(default_factory=list)  # (what, bytes, where, phase): phase "run", "train" or "eval"
    free: int | None = None  # bytes available on this machine
    per_worker: int | None = None  # dask: bytes on each worker process
    devices: list = field(default_factory=list)  # gpu: (device, placement, bytes needed, bytes free) per device

    def add(self, what: str, n: float, where: str = "this process", phase: str = "run") -> None:
        self.items.append((what, int(n), where, phase))

    def during(self, phase: str) -> int:
        """Bytes held while training (``"train"``) or evaluating (``"eval"``)."""
        return sum(n for _, n, _, ph in self.items if ph in ("run", phase))

    @property
    def peak(self) -> int:
        """The larger of training and evaluation (training's copies and workers are gone by then)."""
        return max(self.during("train"), self.during("eval"))

    @property
    def fits(self) -> bool:
        return self.free is None or self.peak <= HEADROOM * self.free

    def table(self) -> str:
        lines = [f"{'':54s}{'bytes':>12s}  where"]
        for what, n, where, phase in self.items:
            when = {"train": ", while training", "eval": ", while evaluating"}.get(phase, "")
            lines.append(f"{what:54s}{format_bytes(n):>12s}  {where}{when}")
        lines.append(f"{'planned peak (PSS, shared pages once)':54s}{format_bytes(self.peak):>12s}")
        if self.per_worker is not None:
            lines.append(f"{'of which on each Dask worker':54s}{format_bytes(self.per_worker):>12s}")
        for name, placement, need, free in self.devices:
            lines.append(f"{f'on device {name} (placement {placement})':54s}{format_bytes(need):>12s}  "
                         f"{format_bytes(free)} free there: " + ("fits" if need <= free else "DOES NOT FIT"))
        if self.free is not None:
            lines.append(f"{'available on this machine (MemAvailable)':54s}{format_bytes(self.free):>12s}  "
                         + ("fits" if self.fits else f"DOES NOT FIT (more than {HEADROOM:.0%} of it)"))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"backend": self.backend, "workers": self.workers, "peak_bytes": self.peak,
                "free_bytes": self.free, "fits": self.fits, "per_worker_bytes": self.per_worker,
                "per_device": [{"device": n, "placement": pl, "bytes": b, "free_bytes": f}
                               for n, pl, b, f in self.devices],
                "items": [{"what": w, "bytes": n, "where": where, "phase": ph} for w, n, where, ph in self.items]}


def format_bytes(n: int) -> str:
    """``n`` bytes as MiB or GiB."""
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB"


def plan(n_entities: int, n_relations: int, n_edges: int, model: str, dim: int, workers: int = 1,
         backend: str = "cpu", n_eval: int = 0, parts: int | None = None, names: bool = True,
         adversarial: int = 0, gpus: str | None = None, gpu_placement: str = "auto", batch: int = 1000,
         neg_chunk: int = 200, neg: int = 200) -> Plan:
    """The memory plan of one training run (then evaluation) with these sizes. ``adversarial``: the
    number of sensitive relations of a ``--debias-method adversarial`` run (0: none). For
    ``backend="gpu"``, ``gpus`` (``--gpus``) names the devices, each planned against its free memory
    under ``gpu_placement`` with the step's ``batch``, ``neg_chunk`` and ``neg``."""
    sf = get_model(model)
    if adversarial:
        workers = 1  # the adversarial baseline trains in this process (kgnum.train ignores --workers)
    p = Plan(backend, workers)
    row = 4 * dim
    rel_row = 4 * sf.relation_dim(dim)
    tables = n_entities * (row + 4) + n_relations * (rel_row + 4)  # rows + row-wise Adagrad state
    edges = 12 * n_edges
    p.add("Python, NumPy, Numba, compiled step", PROCESS_BYTES)
    p.add(f"graph: {n_edges + n_eval:,} triples (int32)", 12 * (n_edges + n_eval))
    if names:
        p.add(f"graph: {n_entities + n_relations:,} names", NAME_BYTES * (n_entities + n_relations))
    p.add(f"tables: {n_entities:,} x {dim} entity, {n_relations:,} x {sf.relation_dim(dim)} relation, "
          f"Adagrad state", tables)
    if backend == "cpu" and workers > 1:
        p.add("shared-memory copies of the tables", tables, "/dev/shm", "train")
        p.add("shared-memory copy of the edges", edges, "/dev/shm", "train")
        p.add(f"{workers} workers: shard + epoch order (int64) and own pages",
              workers * WORKER_BYTES + 16 * n_edges, "worker processes", "train")
    elif backend == "dask":
        P = int(parts or workers)
        own = math.ceil(n_entities / P)
        cached = min(n_entities - own, own + 50_000)  # boundary rows (about a part) + the negative pool
        per = DASK_WORKER_BYTES + (own + cached) * (row + 4) * 2 + n_relations * (rel_row + 4) * 2 \
            + 12 * math.ceil(n_edges / P) * 2
        p.per_worker = per
        p.add(f"{workers} Dask workers: own + cached rows, round copies, edges", per * workers,
              "worker processes", "train")
        p.add("snapshot gathered for validation and the final model", tables, "this process", "train")
    elif backend == "gpu":
        from .gpu.devices import open_devices
        from .gpu.engine import placement_bytes, resolve_placement

        devices = open_devices(gpus)  # the engine's one-line error without CuPy or a device
        device_need, host_need = placement_bytes(model, n_entities, n_relations, dim, sf.relation_dim(dim),
                                                 batch, neg_chunk, neg)
        placement = resolve_placement(gpu_placement, len(devices), device_need, devices[0].free_bytes())
        for d in devices:
            p.devices.append((d.name, placement, device_need if placement == "device" else host_need,
                              d.free_bytes()))
    if adversarial:  # the model is the [a] view; each snapshot also holds one [s] view per relation and
        # the raw table (the engine state a resume continues from)
        p.add("adversarial baseline: PyTorch", TORCH_BYTES, "this process", "train")
        p.add(f"adversarial: the [a] view, {adversarial} [s] views and the raw table kept to resume",
              (adversarial + 2) * n_entities * row)
    # validation (on by default) scores a snapshot: a copy of the entity and relation tables
    p.add("validation: a snapshot of the tables", n_entities * row + n_relations * rel_row, "this process", "train")
    # evaluation (validation during training, the test split after): score blocks of the
    # default size and the filter's sorted copies of the known triples
    from .eval import block_rows

    score_block = 4 * block_rows(n_entities) * n_entities
    p.add("evaluation: score blocks, their temporaries, the filter index", 4 * score_block + 24 * (n_edges + n_eval),
          "this process", "eval")
    if sf.pair_project is not None:  # pair models score against the entity table projected by each relation
        p.add("evaluation: the entity table projected by a relation", n_entities * row, "this process", "eval")
    p.free = available_bytes()
    return p


def plan_for(kg, cfg) -> Plan:
    """The plan of training ``cfg`` (a validated TrainConfig) on graph ``kg``."""
    n_eval = kg.valid.shape[0] + kg.test.shape[0]
    adversarial = len(cfg.debias_relations()) if cfg.debias_method == "adversarial" else 0
    # a LocalCluster of --local-cluster processes when given (the cluster engine starts that many)
    workers = int(cfg.local_cluster) if cfg.backend == "dask" and cfg.local_cluster else cfg.workers
    return plan(kg.n_entities, kg.n_relations, kg.train.shape[0], cfg.model, cfg.dim, workers, cfg.backend,
                n_eval, cfg.parts, adversarial=adversarial, **gpu_options(cfg))


def gpu_options(cfg) -> dict:
    """The ``plan`` arguments a ``--backend gpu`` run's devices are planned with."""
    return dict(gpus=cfg.gpus, gpu_placement=cfg.gpu_placement, batch=cfg.batch, neg_chunk=cfg.neg_chunk,
                neg=cfg.neg)
