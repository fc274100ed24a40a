"""Relations to devices: the most frequent remaining relation goes to the device with the fewest
training edges so far, among those with room for it."""
from __future__ import annotations

import numpy as np


def greedy_relation_partition(counts, relation_bytes, free_bytes, rng: np.random.Generator | None = None,
                              jitter: float = 0.5) -> np.ndarray:
    """Device of each relation (int32 array).

    ``counts`` (n_relations,) training edges per relation; ``relation_bytes`` what one relation
    holds on its device (row and Adagrad state: a number, or one per relation); ``free_bytes``
    (n_devices,) what each device has free. Relations are taken most frequent first (ties: lower
    id) and each goes to the device that trains the fewest edges so far (ties: lower device)
    among those with ``relation_bytes`` still free, so every device gets a similar share of the
    work whatever memory each has (the balance is within the largest relation's count). With
    ``rng`` each count is first multiplied by a random factor in [1 - jitter, 1 + jitter] for the
    order only: the grouping of relations on devices changes (the engine draws one per epoch)
    while the shares stay balanced. ValueError when a relation fits on no device.
    """
    counts = np.asarray(counts, dtype=np.float64)
    free = np.asarray(free_bytes, dtype=np.float64).copy()
    load = np.zeros(free.size)
    cost = np.broadcast_to(np.asarray(relation_bytes, dtype=np.float64), counts.shape)
    weight = counts if rng is None else counts * rng.uniform(1 - jitter, 1 + jitter, counts.size)
    order = np.lexsort((np.arange(counts.size), -weight))
    owner = np.empty(counts.size, dtype=np.int32)
    for r in order:
        room = np.flatnonzero(free >= cost[r])
        if room.size == 0:
            raise ValueError(f"relation {int(r)} needs {cost[r]:.0f} bytes on a device; the devices have "
                             f"{', '.join(f'{f:.0f}' for f in free)} bytes left")
        d = int(room[np.argmin(load[room])])  # the first minimum: the lower device on ties
        owner[r] = d
        load[d] += counts[r]
        free[d] -= cost[r]
    return owner
