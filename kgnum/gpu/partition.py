"""Relations to devices: the most frequent remaining relation goes to the device with the most free memory."""
from __future__ import annotations

import numpy as np


def greedy_relation_partition(counts, relation_bytes, free_bytes, rng: np.random.Generator | None = None,
                              jitter: float = 0.5) -> np.ndarray:
    """Device of each relation (int32 array).

    ``counts`` (n_relations,) training edges per relation; ``relation_bytes`` what one relation
    holds on its device (row and Adagrad state: a number, or one per relation); ``free_bytes``
    (n_devices,) what each device has free. Relations are taken most frequent first (ties: lower
    id) and each goes to the device with the most free memory left (ties: lower device), which
    then has ``relation_bytes`` less. With ``rng`` each count is first multiplied by a random
    factor in [1 - jitter, 1 + jitter]: the order, and so the grouping of relations on devices,
    changes (the engine draws one per epoch) while every device still gets a similar share.
    """
    counts = np.asarray(counts, dtype=np.float64)
    free = np.asarray(free_bytes, dtype=np.float64).copy()
    cost = np.broadcast_to(np.asarray(relation_bytes, dtype=np.float64), counts.shape)
    weight = counts if rng is None else counts * rng.uniform(1 - jitter, 1 + jitter, counts.size)
    order = np.lexsort((np.arange(counts.size), -weight))
    owner = np.empty(counts.size, dtype=np.int32)
    for r in order:
        d = int(np.argmax(free))  # the first maximum: the lower device on ties
        owner[r] = d
        free[d] -= cost[r]
    return owner
