"""Multi-core engine: Hogwild worker processes training tables held in shared memory.

``train_shared`` is what ``kgnum.train(..., workers=N)`` runs for N > 1;
``SharedTables`` / ``attach`` are the shared-memory blocks it is built on.
"""
from .engine import TrainingInterrupted, train_shared
from .tables import BlockSpec, SharedTables, attach, block_names

__all__ = ["train_shared", "TrainingInterrupted", "SharedTables", "BlockSpec", "attach", "block_names"]
