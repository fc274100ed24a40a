"""Multi-core engine: Hogwild worker processes training tables held in shared memory.

``SharedMemoryEngine`` is what ``kgnum.train(..., workers=N)`` runs for N > 1 (the
``cpu`` backend); ``SharedTables`` / ``attach`` are the shared-memory blocks it is built on.
"""
from ..loop import TrainingInterrupted
from .engine import SharedMemoryEngine
from .tables import BlockSpec, SharedTables, attach, block_names

__all__ = ["SharedMemoryEngine", "TrainingInterrupted", "SharedTables", "BlockSpec", "attach", "block_names"]
