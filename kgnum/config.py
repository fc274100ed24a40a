"""Training configuration shared by every engine and the CLI."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainConfig:
    """Hyperparameters of one run; names follow DGL-KE's flags.

    ``dim`` counts real floats per entity row for every model (ComplEx and
    RotatE with dim 400 hold 200 complex numbers). A *step* is one batch of
    ``batch`` positives, split into chunks of ``neg_chunk`` positives that
    share ``neg`` negative entities; each chunk's gradient (of the batch-mean
    loss) is applied as soon as it is computed.
    """
    model: str = "TransE_l2"
    dim: int = 400
    neg: int = 200
    neg_chunk: int = 200
    batch: int = 1000
    lr: float = 0.25
    gamma: float = 12.0
    adv: bool = False
    adv_temp: float = 1.0
    reg_coef: float = 0.0
    reg_norm: int = 3
    neg_sampling: str = "uniform"  # or "degree"
    max_steps: int | None = None
    epochs: float | None = None
    time_budget: float | None = None  # seconds of training
    valid_every: int | None = None  # steps between validations (early stopping on valid MRR)
    patience: int = 3  # validations without improvement before stopping
    valid_sample: int | None = None  # validate on at most this many valid triples
    workers: int = 1
    seed: int = 0

    def validate(self) -> "TrainConfig":
        from .kernels.registry import get_model

        def bad(flag, why):
            raise ValueError(f"--{flag.replace('_', '-')} {getattr(self, flag)!r}: {why}")

        get_model(self.model).check_dim(self.dim)
        for name in ("neg", "neg_chunk", "batch", "workers"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be a positive integer")
        if not self.lr > 0:
            bad("lr", "must be > 0")
        if self.reg_norm not in (2, 3):
            bad("reg_norm", "must be 2 or 3")
        if self.reg_coef < 0:
            bad("reg_coef", "must be >= 0")
        if self.adv_temp <= 0:
            bad("adv_temp", "must be > 0")
        if self.neg_sampling not in ("uniform", "degree"):
            bad("neg_sampling", "must be 'uniform' or 'degree'")
        for name in ("max_steps", "epochs", "time_budget", "valid_every", "valid_sample"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                bad(name, "must be > 0")
        if self.max_steps is None and self.epochs is None and self.time_budget is None:
            raise ValueError("give a stopping rule: --max-steps, --epochs or --time-budget")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
