"""Training configuration shared by every engine and the CLI.

Each field carries its command-line help (``metadata["help"]``); the CLI builds
``kgnum train``'s flags from these fields, so a new hyperparameter is added here once.
"""
from __future__ import annotations

import logging
import math
import numbers
import os
from dataclasses import asdict, dataclass, field, fields

import numpy as np

log = logging.getLogger("kgnum")

BACKENDS = ("cpu", "gpu", "dask")
# where a dask run's cluster and files are: not carried over when a saved model is resumed
CLUSTER_FIELDS = ("scheduler", "local_cluster", "partition", "parts", "checkpoint_dir", "part_checkpoint_every",
                  "gpus")
VALIDATIONS_PER_RUN = 20  # automatic --valid-every aims at this many validations in a run
MIN_VALID_SECONDS = 2.0  # ... never closer together than this much training
# no stopping rule given: train until early stopping ends it, but never longer than this
CAP_EPOCHS = 200
CAP_SECONDS = 3600.0


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else physical pages free, else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _opt(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


SEED_LIMIT = 2 ** 63  # seeds (and every integer setting) reach Numba as int64


def check_types(values: dict, where) -> dict:
    """``values`` (TrainConfig field -> value, e.g. a --config file's) with each value of its field's
    type: integral floats become ints (JSON may write 400.0), ints become floats where a float is
    expected; anything else (a string "0.1", "false", a float NaN or inf, a bool for a number)
    raises ValueError naming ``where(name)``. Unknown names are left to the caller."""
    kinds = {f.name: f.type for f in fields(TrainConfig)}
    out = dict(values)
    for name, value in values.items():
        kind = kinds.get(name)
        if kind is None:
            continue
        optional = "None" in kind
        base = kind.split("|")[0].strip()
        if value is None:
            if not optional:
                raise ValueError(f"{where(name)}: must be given (not null)")
            continue
        if name == "workers" and value == "auto":  # as --workers auto: every core this process may use
            out[name] = None
            continue
        if base in ("int", "float"):
            number = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            if not number or not math.isfinite(value):
                raise ValueError(f"{where(name)} {value!r}: must be a finite number")
            if base == "int":
                if not isinstance(value, numbers.Integral) and not float(value).is_integer():
                    raise ValueError(f"{where(name)} {value!r}: must be an integer")
                if not -SEED_LIMIT <= int(value) < SEED_LIMIT:  # the kernels take int64
                    raise ValueError(f"{where(name)} {value!r}: must be an integer below 2**63")
                out[name] = int(value)
            else:
                out[name] = float(value)
        elif base == "bool" and not isinstance(value, bool):
            raise ValueError(f"{where(name)} {value!r}: must be true or false")
        elif base == "str" and not isinstance(value, str):
            raise ValueError(f"{where(name)} {value!r}: must be a string")
    return out


@dataclass
class TrainConfig:
    """Hyperparameters of one run; names follow DGL-KE's flags.

    ``dim`` counts real floats per entity row for every model (ComplEx and
    RotatE with dim 400 hold 200 complex numbers). A *step* is one batch of
    ``batch`` positives, split into chunks of ``neg_chunk`` positives that
    share ``neg`` negative entities; each chunk's gradient (of the batch-mean
    loss) is applied as soon as it is computed.
    """
    model: str = _opt("TransE_l2", "score function")
    dim: int | None = _opt(None, "real floats per entity row for every model: ComplEx and RotatE with "
                                 "--dim 400 hold 200 complex numbers", per_model=True)
    neg: int = _opt(200, "negatives shared by each chunk")
    neg_chunk: int = _opt(200, "positives per chunk sharing negatives")
    batch: int = _opt(1000, "positives per step")
    lr: float | None = _opt(None, "Adagrad learning rate", per_model=True)
    gamma: float | None = _opt(None, "margin of distance models; also sets the init scale (gamma + 2) / dim "
                                     "(bilinear models: the default keeps the scale of the model's default "
                                     "dim at any --dim)",
                               per_model=True)
    adv: bool = _opt(True, "self-adversarial negative weighting (--no-adv: uniform weights)")
    adv_temp: float | None = _opt(None, "temperature of --adv", per_model=True)
    reg_coef: float | None = _opt(None, "L3 (or L2) regularization coefficient", per_model=True)
    reg_norm: int | None = _opt(None, "regularization norm", choices=(2, 3), per_model=True)
    neg_sampling: str = _opt("uniform", "negative distribution", choices=("uniform", "degree"))
    max_steps: int | None = _opt(None, "steps (batches) in total over all workers", group="stop")
    epochs: float | None = _opt(None, "passes over the training triples", group="stop")
    time_budget: float | None = _opt(None, "seconds of training, validation included", group="stop")
    valid_every: int | None = _opt(None, "evaluate on valid every N steps, stop early when valid MRR "
                                         "stops improving and keep the best tables; default: about "
                                         f"{VALIDATIONS_PER_RUN} validations per run, at least "
                                         f"{MIN_VALID_SECONDS:g} s of training apart, whenever a valid "
                                         "split exists; 0: off", group="stop")
    patience: int | None = _opt(None, "validations without improvement before stopping", group="stop",
                                per_model=True)
    valid_sample: int | None = _opt(5000, "validate on at most this many valid triples", group="stop")
    debias: str | None = _opt(None, "sensitive relation(s), comma-separated: train embeddings that do not "
                                    "encode them (the KL term on every person in a chunk)", group="bias")
    debias_top_m: int = _opt(30, "candidate values per --debias relation", group="bias")
    debias_weight: str | None = _opt(None, "REL=W,... weights of the KL term (default: 1 for a two-valued "
                                           "relation, 100 otherwise)", group="bias")
    debias_method: str = _opt("kl", "how --debias removes the relations: kl (the KL term inside the step) or "
                                     "adversarial (the adversarial-filters baseline, PyTorch: pip install "
                                     "'kgnum[adversarial]')", choices=("kl", "adversarial"), group="bias")
    attribute_vectors: bool = _opt(False, "with --debias: one learned vector per sensitive value, trained through "
                                          "twin REL[ATTR] relations and added to the person where "
                                          "--attribute-whitelist allows; dropped from the saved model",
                                   group="bias")
    attribute_whitelist: str | None = _opt(None, "file of lines REL or REL<TAB>TAIL: triples where a person's "
                                                 "attribute vectors may be used (implies --attribute-vectors)",
                                           group="bias")
    adversarial_weight: float = _opt(1.0, "--debias-method adversarial: weight of the discriminators' loss "
                                          "against the link loss", group="bias")
    eval_exclude_relations: str | None = _opt(None, "relations whose triples are left out of valid/test for "
                                                    "link prediction (the --debias relations always are)",
                                              group="bias")
    backend: str = _opt("cpu", "engine: cpu (in process with --workers 1, shared-memory processes "
                               "with more), gpu, dask", choices=BACKENDS)
    workers: int | None = _opt(None, "worker processes (Hogwild on shared memory); default: the cores this "
                                     "process may use; 1 is deterministic for a given --seed")
    seed: int = _opt(0, "random seed; single-process runs are deterministic")
    scheduler: str | None = _opt(None, "address of a running Dask scheduler (tcp://HOST:PORT)", group="cluster")
    local_cluster: int | None = _opt(None, "start a Dask LocalCluster of N worker processes, one thread each "
                                           "(default with --backend dask and no --scheduler: --workers)",
                                     group="cluster")
    partition: str | None = _opt(None, "a partition saved by kgnum partition (default: METIS into --parts)",
                                 group="cluster")
    parts: int | None = _opt(None, "METIS parts, each held by one Dask worker (default: one per worker)",
                             group="cluster")
    checkpoint_dir: str | None = _opt(None, "directory every Dask worker can reach, for the parts' checkpoints "
                                            "(default: a temporary directory, removed after a run that "
                                            "finished)", group="cluster")
    part_checkpoint_every: float = _opt(30.0, "seconds between checkpoints of every part", group="cluster")
    gpus: str | None = _opt(None, "devices, e.g. 0,1 (default: every visible one); numpy:K runs the engine on K "
                                  "emulated devices with NumPy standing in for CuPy", group="gpu")
    gpu_placement: str = _opt("auto", "device: every table on the device, the whole step there; host: entities "
                                      "on the host, relations on the devices; auto: device when it fits",
                              choices=("auto", "device", "host"), group="gpu")
    gpu_overlap: bool = _opt(True, "host placement: apply a batch's entity updates on the host while the device "
                                   "computes the next (--no-gpu-overlap: one after the other)", group="gpu")

    def validate(self) -> "TrainConfig":
        """Fill what was left to the model (its registry defaults), the machine (workers) or the
        cap (no stopping rule), then check every field; errors name the flag."""
        from .kernels.registry import get_model

        def bad(flag, why):
            raise ValueError(f"--{flag.replace('_', '-')} {getattr(self, flag)!r}: {why}")

        checked = check_types(asdict(self), lambda name: f"--{name.replace('_', '-')}")
        for name, value in checked.items():
            setattr(self, name, value)
        if not 0 <= self.seed < SEED_LIMIT:
            bad("seed", "must be an integer from 0 to 2**63 - 1")
        sf = get_model(self.model)
        self.model = sf.name
        gamma_given = self.gamma is not None
        for f in fields(self):
            if f.metadata.get("per_model") and getattr(self, f.name) is None:
                setattr(self, f.name, sf.defaults.get(f.name, _FALLBACK[f.name]))
        if not gamma_given:
            self.gamma = default_gamma(sf, self.dim)
        if self.workers is None:
            self.workers = available_cores()
        if not self.has_stopping_rule():
            self.epochs, self.time_budget = CAP_EPOCHS, CAP_SECONDS
            log.info("no stopping rule given: training until early stopping ends it, at most %d epochs "
                     "or %d s (--max-steps, --epochs or --time-budget to choose)", CAP_EPOCHS, CAP_SECONDS)
        sf.check_dim(self.dim)
        for name in ("neg", "neg_chunk", "batch", "workers", "patience", "debias_top_m"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be a positive integer")
        if not self.lr > 0:
            bad("lr", "must be > 0")
        if not self.gamma > -2:  # a bilinear model's default at a small dim may be below 0
            bad("gamma", "must be > -2: the tables start at the scale (gamma + 2) / dim")
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                bad(f.name, f"must be one of {', '.join(map(str, choices))}")
        if self.reg_coef < 0:
            bad("reg_coef", "must be >= 0")
        if self.adv_temp <= 0:
            bad("adv_temp", "must be > 0")
        for name in ("max_steps", "epochs", "time_budget", "valid_sample"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                bad(name, "must be > 0")
        if self.valid_every is not None and self.valid_every < 0:
            bad("valid_every", "must be >= 0 (0: no validation)")
        for name in CLUSTER_FIELDS:
            if name == "gpus":
                if self.gpus is not None and self.backend != "gpu":
                    bad(name, "only with --backend gpu")
            elif getattr(self, name) is not None and self.backend != "dask" and name != "part_checkpoint_every":
                bad(name, "only with --backend dask")
        if self.partition and self.parts is not None:
            bad("parts", "not with --partition: the saved partition has its own parts")
        if self.scheduler and self.local_cluster:
            bad("local_cluster", "either --scheduler or --local-cluster, not both")
        for name in ("local_cluster", "parts"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                bad(name, "must be a positive integer")
        if self.attribute_whitelist:
            self.attribute_vectors = True
        for name in ("debias_weight", "attribute_vectors"):
            if getattr(self, name) and not self.debias:
                bad(name, "only with --debias")
        if self.debias_method != "kl" and not self.debias:
            bad("debias_method", "only with --debias")
        if self.debias_method == "adversarial" and self.attribute_vectors:
            bad("attribute_vectors", "only with --debias-method kl")
        if not self.adversarial_weight >= 0:
            bad("adversarial_weight", "must be >= 0")
        if not self.part_checkpoint_every > 0:
            bad("part_checkpoint_every", "must be > 0")
        return self

    def debias_relations(self) -> list[str]:
        """The --debias relations, each once, in the order given."""
        return list(dict.fromkeys(r for r in (self.debias or "").split(",") if r))

    def excluded_relations(self) -> list[str]:
        """Relations left out of validation and test metrics: --eval-exclude-relations and --debias."""
        names = [r for r in (self.eval_exclude_relations or "").split(",") if r]
        return list(dict.fromkeys(names + self.debias_relations()))

    def has_stopping_rule(self) -> bool:
        return any(getattr(self, k) is not None for k in ("max_steps", "epochs", "time_budget"))

    def to_dict(self) -> dict:
        return asdict(self)


# per-model fields a registry entry leaves out
_FALLBACK = dict(dim=400, lr=0.1, gamma=12.0, adv_temp=1.0, reg_coef=0.0, reg_norm=3, patience=5)
DEFAULT_DIM = _FALLBACK["dim"]


def model_default(model: str, name: str):
    """What a plain ``kgnum train --model MODEL`` uses for the per-model field ``name``."""
    from .kernels.registry import get_model

    return get_model(model).defaults.get(name, _FALLBACK[name])


def default_gamma(sf, dim: int) -> float:
    """Model ``sf``'s default gamma at ``dim``: its registry value, set for its default dim, at
    ``dim`` (``gamma_at_dim``)."""
    return gamma_at_dim(sf, float(sf.defaults.get("gamma", _FALLBACK["gamma"])),
                        sf.defaults.get("dim", _FALLBACK["dim"]), dim)


def gamma_at_dim(sf, gamma: float, from_dim: int, dim: int) -> float:
    """``gamma``, chosen for ``from_dim``, at ``dim``. A product score has no margin: gamma only sets
    the initial scale (gamma + 2) / dim, which is kept (143 at dim 400 would saturate the scores at
    dim 100: bench/RESULTS.md, "The initial scale of bilinear models at other dims"); a distance
    model's margin stays as it is."""
    from .kernels.score import PRODUCT_METRICS

    if sf.metric not in PRODUCT_METRICS:
        return gamma
    return (gamma + 2.0) * dim / from_dim - 2.0


def model_defaults_table() -> str:
    """Each model's defaults, one line per model (for --help and the README)."""
    from .kernels.registry import get_model, model_names

    keys = [f.name for f in fields(TrainConfig) if f.metadata.get("per_model")]
    lines = []
    for name in model_names():
        d = {**_FALLBACK, **get_model(name).defaults}
        lines.append(f"  {name:10s} " + ", ".join(f"--{k.replace('_', '-')} {d[k]:g}" for k in keys))
    return "\n".join(lines)
