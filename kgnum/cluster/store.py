"""One part of the graph on a Dask worker: its rows, a cache of the rows it reads, the shared step.

    local table rows: [ own entities | boundary (other parts' entities its edges or terms read)
                        | pool (other parts' entities drawn each round as negative candidates) ]
    round:  serve   apply the deltas other parts pushed to its own rows -> send each part the
                    rows it asked for (and the relations this part owns); checkpoint if asked
            train   install the rows received -> the shared Numba step (kernels.step.train_kernel)
                    on its edges, negatives drawn over the local table with weights that make them
                    uniform (or degree-proportional) over *all* entities -> deltas of the rows it
                    does not own, summed per global id, to their owners; next round's requests

A part owns its entities (METIS partition) and the relations whose edges it
trains most; every other row it uses is a copy refreshed at the start of each
round. Rounds are pipelined: round r's training installs the rows served in
round r - 1, so the exchange of one round runs while the next trains, and a
remote row is at most two rounds stale (the deltas are exact whatever the
staleness: each part sends what it changed, and the owner adds it). The pool makes negatives come from
all entities while a part holds only its own, boundary and pool rows:
pool slots are drawn from the entities outside own + boundary in proportion
to the negative distribution, and each slot is sampled with weight
(weight of those entities) / (pool size), so every entity's chance to be a
negative is the same as in a single-process run.

The stores live in a module-level dict of the worker process, keyed by run id
and part; the driver (``engine.DaskEngine``) reaches them with tasks pinned
to the worker holding them. Nothing here imports Dask.
"""
from __future__ import annotations

import collections
import os
import signal
import time
from typing import NamedTuple

import numpy as np

from ..kernels.step import StepParams, Tables, empty_range, train_kernel
from ..kernels.sampling import seed_kernel_rng
from ..kernels.terms import localize_terms
from .checkpoint import read_part, write_part

_STORES: dict = {}  # (run_id, part) -> PartStore, in this worker process
POOL_ROWS = 50_000  # most negative-candidate rows a part pulls per round


_MALLOC_SET = False


def _keep_freed_memory() -> None:
    """Undo the Dask nanny's MALLOC_TRIM_THRESHOLD_=65536 for this worker process.

    The step allocates its chunk buffers (a few hundred KB each) for every chunk; with glibc
    returning freed memory to the system past 64 KB, every allocation faults its pages in again,
    and the step ran 2.4x slower in a Dask worker than in a plain process (56k against 137k
    positives/s, FB15k-237 TransE_l2 dim 400, one thread). glibc only; elsewhere nothing."""
    global _MALLOC_SET
    if _MALLOC_SET:
        return
    _MALLOC_SET = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 256 * 1024 * 1024)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 64 * 1024 * 1024)  # M_MMAP_THRESHOLD: chunk buffers from the heap, reused
    except (OSError, AttributeError):
        pass


class PartLost(RuntimeError):
    """A task reached a worker that does not hold its part (the worker was restarted)."""


class PartSpec(NamedTuple):
    """What a part's store needs besides its rows (sent once)."""
    run_id: str
    part: int
    parts: int
    model: str
    terms: tuple
    params: StepParams  # neg_cdf unused here: see neg_weight
    seed: int
    own: np.ndarray  # sorted global ids of the entities this part owns
    boundary: np.ndarray  # sorted global ids of other parts' entities its edges / terms read
    entity_owner: np.ndarray  # (n_entities,) int32
    relation_owner: np.ndarray  # (n_relations,) int32
    edges: np.ndarray  # (n, 3) int32, global ids: the training edges whose head it owns
    neg_weight: np.ndarray | None  # (n_entities,) float64 negative distribution; None: uniform
    checkpoint_dir: str
    fault: tuple | None  # (part, round) -> that part's worker kills itself (tests)


class Message(NamedTuple):
    """From part p to the owner q, after p's round: deltas of q's rows and what p wants next."""
    ids: np.ndarray  # global entity ids (unique) owned by q
    rows: np.ndarray  # their deltas
    state: np.ndarray  # their Adagrad-state deltas
    rel_ids: np.ndarray
    rel_rows: np.ndarray
    rel_state: np.ndarray
    want: np.ndarray  # global ids owned by q whose rows p reads next round

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self)


class Response(NamedTuple):
    """From owner q to part p: the rows p asked for and the relations q owns."""
    rows: np.ndarray
    state: np.ndarray
    rel_rows: np.ndarray
    rel_state: np.ndarray

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self)


class PartStore:
    def __init__(self, spec: PartSpec, own_rows, own_state, relation, relation_state, part_steps: int = 0):
        _keep_freed_memory()
        self.spec = spec
        p = spec.part
        self.own = spec.own
        self.n_own = spec.own.size
        n_entities = spec.entity_owner.shape[0]
        fixed = np.concatenate([spec.own, spec.boundary])
        outside = np.setdiff1d(np.arange(n_entities, dtype=np.int64), fixed, assume_unique=True)
        weight = spec.neg_weight
        w_fixed = np.ones(fixed.size) if weight is None else weight[fixed]
        self.pool_rng = np.random.default_rng((spec.seed, p, 1))
        self.outside = outside
        if outside.size <= POOL_ROWS:  # every entity fits: the pool is all of them, drawn once
            self.pool_fixed = True
            pool = outside
            w_pool = np.ones(outside.size) if weight is None else weight[outside]
            self.pool_p = None
        else:
            self.pool_fixed = False
            w_out = np.ones(outside.size) if weight is None else weight[outside]
            self.pool_p = w_out / w_out.sum()
            pool = self._draw_pool()
            w_pool = np.full(POOL_ROWS, w_out.sum() / POOL_ROWS)
        self.gids = np.concatenate([fixed, pool]).astype(np.int64)
        self.fixed_sorted = np.argsort(fixed, kind="stable")
        self.fixed = fixed
        weights = np.concatenate([w_fixed, w_pool])
        uniform = weight is None and self.pool_fixed
        cdf = None if uniform else np.cumsum(weights)
        dim = own_rows.shape[1]
        self.entity = np.zeros((self.gids.size, dim), dtype=np.float32)
        self.entity_state = np.zeros(self.gids.size, dtype=np.float32)
        self.entity[:self.n_own] = own_rows
        self.entity_state[:self.n_own] = own_state
        self.relation = np.ascontiguousarray(relation, dtype=np.float32)
        self.relation_state = np.ascontiguousarray(relation_state, dtype=np.float32)
        self.own_rel = np.flatnonzero(spec.relation_owner == p)
        self.other_rel = np.flatnonzero(spec.relation_owner != p)
        self.rel_of = [np.flatnonzero(spec.relation_owner == q) for q in range(spec.parts)]
        e = spec.edges
        self.edges = np.ascontiguousarray(np.stack([self.local_of(e[:, 0]), e[:, 1].astype(np.int64),
                                                    self.local_of(e[:, 2])], axis=1).astype(np.int32))
        base = spec.params
        self.params = base._replace(neg_cdf=np.empty(0, np.float64) if cdf is None else cdf)
        self.params = self.params._replace(terms=localize_terms(spec.terms, base.terms, self.gids, self.local_of))
        self.kernel = train_kernel(spec.model, spec.terms)
        seed_kernel_rng(spec.seed + 7919 * (p + 1))
        self.kernel(self.tables(), self.edges, *empty_range(), self.params, 0)  # compile now, not in round 1
        self.order_rng = np.random.default_rng((spec.seed, p))
        self.order = None
        self.pos = self.edges.shape[0]
        self.chunk_index = 0
        self.rounds = 0
        self.part_steps = part_steps  # steps this part has trained in this leg (its rows hold them)
        self.trained_until = None
        self.wants = collections.deque()  # (pool ids, local rows per part) of each install asked for
        self.wants_drawn = False

    # -- ids -----------------------------------------------------------------------
    def local_of(self, gids: np.ndarray) -> np.ndarray:
        """Local rows of own or boundary entities (global ids)."""
        gids = np.asarray(gids, dtype=np.int64)
        sorted_fixed = self.fixed[self.fixed_sorted]
        at = np.searchsorted(sorted_fixed, gids)
        at = np.minimum(at, max(sorted_fixed.size - 1, 0))
        if gids.size and not np.array_equal(sorted_fixed[at], gids):
            raise ValueError("an edge or a loss term reads an entity outside the part's own and boundary rows")
        return self.fixed_sorted[at].astype(np.int64)

    def _draw_pool(self) -> np.ndarray:
        return self.outside[self.pool_rng.choice(self.outside.size, POOL_ROWS, p=self.pool_p)]

    def tables(self) -> Tables:
        return Tables(self.entity, self.relation, self.entity_state, self.relation_state)

    # -- the round -----------------------------------------------------------------
    def requests(self) -> list:
        """Messages without deltas, asking every other part for the rows of a later round's install
        (this part's boundary, and a new pool when the pool is drawn); the installs take them in
        order (``self.wants``: the ones asked for and not installed yet)."""
        pool = self.gids[self.fixed.size:] if self.pool_fixed or not self.wants_drawn else self._draw_pool()
        self.wants_drawn = True
        gids = np.concatenate([self.gids[self.n_own:self.fixed.size], pool])
        owner = self.spec.entity_owner[gids]
        wants, out = [], []
        empty_f = np.zeros((0, self.entity.shape[1]), np.float32)
        empty_r = np.zeros((0, self.relation.shape[1]), np.float32)
        for q in range(self.spec.parts):
            at = np.flatnonzero(owner == q)
            wants.append(self.n_own + at)
            out.append(None if q == self.spec.part else Message(
                np.zeros(0, np.int64), empty_f, np.zeros(0, np.float32), np.zeros(0, np.int64), empty_r,
                np.zeros(0, np.float32), gids[at]))
        self.wants.append((pool, wants))
        return out

    def serve(self, messages: list, checkpoint_step: int | None) -> list:
        """Apply the deltas of ``messages`` (one per other part, in part order) to the own rows;
        return per part the rows it wants (None for this part); checkpoint when asked."""
        responses = []
        for msg in messages:
            if msg.ids.size:
                at = np.searchsorted(self.own, msg.ids)
                self.entity[at] += msg.rows
                self.entity_state[at] += msg.state
            if msg.rel_ids.size:
                self.relation[msg.rel_ids] += msg.rel_rows
                self.relation_state[msg.rel_ids] += msg.rel_state
        others = [q for q in range(self.spec.parts) if q != self.spec.part]
        for q in range(self.spec.parts):
            if q == self.spec.part:
                responses.append(None)
                continue
            want = messages[others.index(q)].want
            at = np.searchsorted(self.own, want)
            responses.append(Response(self.entity[at], self.entity_state[at], self.relation[self.own_rel],
                                      self.relation_state[self.own_rel]))
        if checkpoint_step is not None:
            self.checkpoint(checkpoint_step)
        return responses

    def train(self, n_steps: int, responses: list) -> tuple:
        """Install ``responses`` (one per other part, in part order), train ``n_steps`` steps of this
        part's edges, return ``(report, message to part 0, message to part 1, ...)``."""
        started = time.perf_counter()
        waited = 0.0 if self.trained_until is None else started - self.trained_until
        others = [q for q in range(self.spec.parts) if q != self.spec.part]
        pulled = 0
        pool, wants = self.wants.popleft()
        self.gids[self.fixed.size:] = pool  # the pool these rows were asked for
        for q, resp in zip(others, responses):
            rows = wants[q]
            self.entity[rows] = resp.rows
            self.entity_state[rows] = resp.state
            self.relation[self.rel_of[q]] = resp.rel_rows
            self.relation_state[self.rel_of[q]] = resp.rel_state
            pulled += resp.nbytes()
        base = self.entity[self.n_own:].copy()
        base_state = self.entity_state[self.n_own:].copy()
        base_rel = self.relation[self.other_rel].copy()
        base_rel_state = self.relation_state[self.other_rel].copy()
        steps, positives, loss = self._run(n_steps)
        self.part_steps += steps
        trained = time.perf_counter()
        messages = self._deltas(base, base_state, base_rel, base_rel_state)
        pushed = sum(m.nbytes() for m in messages if m is not None)
        self.rounds += 1
        fault = self.spec.fault
        if fault is not None and fault[0] == self.spec.part and fault[1] == self.rounds:
            os.kill(os.getpid(), signal.SIGKILL)
        self.trained_until = time.perf_counter()
        report = {"part": self.spec.part, "steps": steps, "positives": positives, "loss_sum": loss,
                  "train_seconds": trained - started, "wait_seconds": waited, "bytes_pulled": pulled,
                  "bytes_pushed": pushed, "pid": os.getpid()}
        return (report, *messages)

    def _run(self, n_steps: int) -> tuple:
        batch, n = self.params.batch, self.edges.shape[0]
        steps = positives = 0
        loss = 0.0
        while steps < n_steps and n:
            if self.pos >= n:
                self.order = self.order_rng.permutation(n)
                self.pos = 0
            take = int(min(n_steps - steps, -(-(n - self.pos) // batch)))
            end = min(n, self.pos + take * batch)
            part_loss, self.chunk_index = self.kernel(self.tables(), self.edges, self.order, self.pos, end,
                                                      self.params, self.chunk_index)
            loss += float(part_loss)
            positives += end - self.pos
            steps += take
            self.pos = end
        return steps, positives, loss

    def _deltas(self, base, base_state, base_rel, base_rel_state) -> list:
        d = self.entity[self.n_own:] - base
        d_state = self.entity_state[self.n_own:] - base_state
        touched = np.flatnonzero(np.any(d != 0, axis=1) | (d_state != 0))
        ids, rows, state = _sum_by_id(self.gids[self.n_own + touched], d[touched], d_state[touched])
        owner = self.spec.entity_owner[ids]
        d_rel = self.relation[self.other_rel] - base_rel
        d_rel_state = self.relation_state[self.other_rel] - base_rel_state
        rel_owner = self.spec.relation_owner[self.other_rel]
        requests = self.requests()
        out = []
        for q in range(self.spec.parts):
            if q == self.spec.part:
                out.append(None)
                continue
            sel, rsel = owner == q, rel_owner == q
            out.append(requests[q]._replace(ids=ids[sel], rows=rows[sel], state=state[sel],
                                            rel_ids=self.other_rel[rsel], rel_rows=d_rel[rsel],
                                            rel_state=d_rel_state[rsel]))
        return out

    # -- whole part ----------------------------------------------------------------
    def rows(self) -> tuple:
        """(own ids, rows, state, owned relation ids, rows, state): copies."""
        return (self.own, self.entity[:self.n_own].copy(), self.entity_state[:self.n_own].copy(), self.own_rel,
                self.relation[self.own_rel].copy(), self.relation_state[self.own_rel].copy())

    def checkpoint(self, step: int) -> None:
        write_part(self.spec.checkpoint_dir, self.spec.part, step, *self.rows(), part_steps=self.part_steps)


def _sum_by_id(gids, rows, state):
    """Unique ids (sorted) with the rows and states of equal ids summed (a pool may hold an
    entity twice); one sort and a reduceat, not np.add.at (which cost 0.2 s a round)."""
    order = np.argsort(gids, kind="stable")
    g = gids[order]
    if g.size == 0:
        return g, rows[:0], state[:0]
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    if starts.size == g.size:  # no duplicates: a permutation
        return g, rows[order], state[order]
    return g[starts], np.add.reduceat(rows[order], starts, axis=0), np.add.reduceat(state[order], starts)


# -- the tasks the driver submits (module level: pickled by reference) -------------

def _store(run_id: str, part: int) -> PartStore:
    try:
        return _STORES[(run_id, part)]
    except KeyError:
        raise PartLost(f"part {part} of run {run_id} is not on worker pid {os.getpid()}") from None


def create(spec: PartSpec, own_rows, own_state, relation, relation_state) -> list:
    """Install part ``spec.part`` on this worker (compiling the step; its first checkpoint is the
    driver's); return its requests for the first two installs."""
    store = PartStore(spec, own_rows, own_state, relation, relation_state)
    _STORES[(spec.run_id, spec.part)] = store
    return [store.requests(), store.requests()]


def restore(spec: PartSpec) -> list:
    """Re-create part ``spec.part`` here from its last checkpoint; return its first requests."""
    saved = read_part(spec.checkpoint_dir, spec.part)
    if not np.array_equal(saved["ids"], spec.own):
        raise ValueError(f"the checkpoint of part {spec.part} in {spec.checkpoint_dir} holds other entities")
    relation = np.zeros((spec.relation_owner.shape[0], saved["rel_rows"].shape[1]), np.float32)
    relation_state = np.zeros(spec.relation_owner.shape[0], np.float32)
    relation[saved["rel_ids"]] = saved["rel_rows"]
    relation_state[saved["rel_ids"]] = saved["rel_state"]
    store = PartStore(spec, saved["rows"], saved["state"], relation, relation_state,
                      int(saved.get("part_steps", 0)))
    _STORES[(spec.run_id, spec.part)] = store
    return [store.requests(), store.requests()]


def resync(run_id: str, part: int) -> list:
    """After another part was lost: fresh requests for the next two installs (this part's
    undelivered deltas are dropped)."""
    store = _store(run_id, part)
    store.trained_until = None
    store.wants.clear()
    return [store.requests(), store.requests()]


def serve(run_id: str, part: int, checkpoint_step, *messages) -> list:
    return _store(run_id, part).serve(messages, checkpoint_step)


def train(run_id: str, part: int, n_steps: int, previous, *responses) -> tuple:
    """``previous``: this part's previous round's report (keeps its rounds in order)."""
    return _store(run_id, part).train(n_steps, responses)


def rows(run_id: str, part: int) -> tuple:
    return _store(run_id, part).rows()


def pick(result, index: int):
    return result[index]


def drop(run_id: str) -> int:
    """Forget every part of ``run_id`` on this worker (run on every worker at the end)."""
    keys = [k for k in _STORES if k[0] == run_id]
    for k in keys:
        del _STORES[k]
    return len(keys)


def worker_info() -> dict:
    from .. import __version__

    return {"kgnum": __version__, "pid": os.getpid()}
