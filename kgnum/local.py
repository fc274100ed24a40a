"""The in-process engine: one worker, the step called on ordinary arrays in this process.

What ``kgnum.train`` runs for ``backend="cpu"`` with one worker: deterministic for
a given seed (one edge permutation per epoch from ``seed``, negatives from the
kernel's random state seeded with ``seed``). The tables of the ``Job`` are
trained in place.
"""
from __future__ import annotations

import math

import numpy as np
from threadpoolctl import threadpool_limits

from .kernels.sampling import seed_kernel_rng
from .kernels.step import Tables, empty_range, train_kernel
from .loop import Job, Report, TrainingDiverged


class InProcessEngine:
    backend = "cpu"
    workers = 1

    def __init__(self):
        self.worker_steps = [0]
        self._limits = None

    def open(self, job: Job) -> None:
        # one BLAS thread: the step's small products lose time to thread hand-offs (the multi-core
        # engine gets its parallelism from processes instead); validation runs under it too
        self._limits = threadpool_limits(1)
        self.job = job
        self.kernel = train_kernel(job.model, job.terms)
        self.tables = job.tables
        self.rng = np.random.default_rng(job.seed)
        seed_kernel_rng(job.seed)
        self.kernel(self.tables, job.edges, *empty_range(), job.params, 0)  # compile; touches nothing
        self.order = None
        self.pos = job.edges.shape[0]  # a new epoch (permutation) on the first call
        self.chunk_index = 0

    def advance(self, max_steps: int) -> Report:
        job, n_train = self.job, self.job.edges.shape[0]
        if self.pos >= n_train:
            self.order = self.rng.permutation(n_train)  # reshuffle every epoch
            self.pos = 0
        n_steps = int(min(max_steps, math.ceil((n_train - self.pos) / job.params.batch)))
        if n_steps <= 0:
            return Report(0, 0, 0.0)
        end = min(n_train, self.pos + n_steps * job.params.batch)
        try:
            loss, self.chunk_index = self.kernel(self.tables, job.edges, self.order, self.pos, end,
                                                 job.params, self.chunk_index)
        except ZeroDivisionError:
            raise TrainingDiverged("division by zero in the training step") from None
        positives, self.pos = end - self.pos, end
        self.worker_steps[0] += n_steps
        return Report(n_steps, positives, float(loss))

    def snapshot(self, with_state: bool) -> Tables:
        t = self.tables
        return Tables(t.entity.copy(), t.relation.copy(), t.entity_state.copy() if with_state else None,
                      t.relation_state.copy() if with_state else None)

    def stop(self) -> Report:
        return Report(0, 0, 0.0)

    def close(self) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None
