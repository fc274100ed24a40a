"""Score-function registry: one entry per model, every engine reads from here.

``kernels.score`` says what an entry holds; each module of ``kernels.models``
registers one or two entries when imported, which this module does once.
"""
from __future__ import annotations

from . import models  # noqa: F401  (registers every model module)
from .score import MODELS, ScoreFunction, register

__all__ = ["ScoreFunction", "register", "get_model", "model_names", "MODELS"]


def get_model(name: str) -> ScoreFunction:
    """Look a model up by name, case-insensitively (``TransE_l2``, ``rotate`` ...)."""
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"--model {name!r}: unknown model; choose one of "
                         f"{', '.join(model_names())}") from None


def model_names() -> list[str]:
    return [sf.name for sf in MODELS.values()]
