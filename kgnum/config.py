"""Training configuration shared by every engine and the CLI.

Each field carries its command-line help (``metadata["help"]``); the CLI builds
``kgnum train``'s flags from these fields, so a new hyperparameter is added here once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

BACKENDS = ("cpu", "gpu", "dask")


def _opt(default, help: str, **extra):
    return field(default=default, metadata={"help": help, **extra})


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
    dim: int = _opt(400, "real floats per entity row for every model: ComplEx and RotatE with "
                         "--dim 400 hold 200 complex numbers")
    neg: int = _opt(200, "negatives shared by each chunk")
    neg_chunk: int = _opt(200, "positives per chunk sharing negatives")
    batch: int = _opt(1000, "positives per step")
    lr: float = _opt(0.25, "Adagrad learning rate")
    gamma: float = _opt(12.0, "margin of distance models; also sets the init scale (gamma + 2) / dim")
    adv: bool = _opt(False, "self-adversarial negative weighting")
    adv_temp: float = _opt(1.0, "temperature of --adv")
    reg_coef: float = _opt(0.0, "L2/L3 regularization coefficient")
    reg_norm: int = _opt(3, "regularization norm", choices=(2, 3))
    neg_sampling: str = _opt("uniform", "negative distribution", choices=("uniform", "degree"))
    max_steps: int | None = _opt(None, "steps (batches) in total over all workers", group="stop")
    epochs: float | None = _opt(None, "passes over the training triples", group="stop")
    time_budget: float | None = _opt(None, "seconds of training, validation included", group="stop")
    valid_every: int | None = _opt(None, "evaluate on valid every N steps; stop early when valid MRR "
                                         "stops improving and keep the best tables", group="stop")
    patience: int = _opt(3, "validations without improvement before stopping", group="stop")
    valid_sample: int | None = _opt(None, "validate on at most this many valid triples", group="stop")
    backend: str = _opt("cpu", "engine: cpu (in process with --workers 1, shared-memory processes "
                               "with more), gpu, dask", choices=BACKENDS)
    workers: int = _opt(1, "worker processes (Hogwild on shared memory)")
    seed: int = _opt(0, "random seed; single-process runs are deterministic")

    def validate(self) -> "TrainConfig":
        from .kernels.registry import get_model

        def bad(flag, why):
            raise ValueError(f"--{flag.replace('_', '-')} {getattr(self, flag)!r}: {why}")

        get_model(self.model).check_dim(self.dim)
        for name in ("neg", "neg_chunk", "batch", "workers", "patience"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be a positive integer")
        if not self.lr > 0:
            bad("lr", "must be > 0")
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                bad(f.name, f"must be one of {', '.join(map(str, choices))}")
        if self.reg_coef < 0:
            bad("reg_coef", "must be >= 0")
        if self.adv_temp <= 0:
            bad("adv_temp", "must be > 0")
        for name in ("max_steps", "epochs", "time_budget", "valid_every", "valid_sample"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                bad(name, "must be > 0")
        if not self.has_stopping_rule():
            raise ValueError("give a stopping rule: --max-steps, --epochs or --time-budget")
        return self

    def has_stopping_rule(self) -> bool:
        return any(getattr(self, k) is not None for k in ("max_steps", "epochs", "time_budget"))

    def to_dict(self) -> dict:
        return asdict(self)
