"""The ``gpu`` backend: the array step on CuPy devices, each relation pinned to one device.

    open:    devices (--gpus; numpy:K emulates K devices with NumPy standing in for CuPy)
             -> placement (--gpu-placement): device (every table on the one device, the whole
                step there, Adagrad included) or host (entities and their Adagrad state on the
                host, relations on the devices); auto picks device when it fits with headroom
             -> relations to devices, greedily (gpu.partition), redrawn every epoch (host)
             -> one thread per device, waiting for the clock
    device thread, per step (one batch of B chunks of c positives sharing k negatives):
             sample positives whose relation lives on the device, negatives from all entities
             -> gather entity rows into a (pinned) host buffer -> copy to the device
             -> kernels.array_step.chunk_gradients for the B chunks at once (+ regularizer,
                the debiasing KL term: its relations' rows read from their devices, its values'
                rows from the entity table)
             -> relation rows: Adagrad on the device
             -> entity gradients back to the host -> Adagrad on the host table, by the device's
                updater thread while the device computes the next batch (--gpu-overlap; without
                it the device thread updates before the next batch)
    advance / snapshot / stop / close: as the shared-memory engine: the device threads train on
             their own, steps come from one counter (max_steps and epochs exact), the snapshot
             copies the host table and every device's relations.

The host table is updated by every device's updater without locks (Hogwild,
as the multi-core engine); with overlap, a batch reads rows that the previous
batch's update has not reached yet (staleness of one batch per device).
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time

import numba
import numpy as np

from ..kernels import array_step
from ..kernels.optim import adagrad_accumulate, adagrad_apply
from ..kernels.step import Tables
from ..loop import CALL_SECONDS, Job, Report, TrainingDiverged
from .devices import Device, open_devices
from .partition import greedy_relation_partition

log = logging.getLogger("kgnum")

HEADROOM = 1.3  # auto placement: device when the tables and buffers times this fit
POLL_SECONDS = 0.05


def step_bytes(model: str, dim: int, relation_dim: int, batch: int, neg_chunk: int, neg: int) -> int:
    """Device memory of one step's arrays (rows, scores, gradients, temporaries)."""
    c = min(neg_chunk, batch)
    B = max(1, batch // c)
    rows = B * (2 * c * dim + c * relation_dim + neg * dim)
    scores = B * c * neg
    wide = B * c * neg * dim if model in ("RotatE", "TransE_l1", "TransR") else 0
    return 4 * (4 * rows + 6 * scores + 2 * wide)


def placement_bytes(model: str, n_entities: int, n_relations: int, dim: int, relation_dim: int, batch: int,
                    neg_chunk: int, neg: int) -> tuple[int, int]:
    """(placement ``device``: the tables, their Adagrad state and one step's buffers on the one
    device; placement ``host``: what each device holds, two steps' buffers and the relations)."""
    step = step_bytes(model, dim, relation_dim, batch, neg_chunk, neg)
    tables = 4 * (n_entities * (dim + 1) + n_relations * (relation_dim + 1))
    return tables + step, max(2 * step + 4 * (relation_dim + 1) * n_relations, 1)


def resolve_placement(requested: str, n_devices: int, device_need: int, free: int) -> str:
    """The placement ``auto`` stands for: ``device`` when one device holds everything with headroom."""
    if requested != "auto":
        return requested
    return "device" if n_devices == 1 and device_need * HEADROOM <= free else "host"


@numba.njit(nogil=True, cache=True)
def _host_adagrad(table, state, rows, grads, lr):
    """Row-wise Adagrad on the host table, without the GIL (updaters run beside device threads)."""
    adagrad_accumulate(state, rows, grads)
    adagrad_apply(table, state, rows, grads, lr)


def make_engine(cfg):
    if getattr(cfg, "attribute_vectors", False):
        raise ValueError("--attribute-vectors: not supported by --backend gpu; use --backend cpu")
    devices = open_devices(cfg.gpus)  # one-line errors for a missing CuPy or device, before training
    return GpuEngine(devices, cfg.gpu_placement, cfg.gpu_overlap)


class GpuEngine:
    backend = "gpu"

    def __init__(self, devices: list[Device], placement: str = "auto", overlap: bool = True, staleness: int = 1):
        self.devices = devices
        self.requested = placement
        self.overlap = overlap
        # with overlap: 1, a batch may read rows the previous batch's update has not reached; 0, the
        # device thread waits for that update before gathering (the pipeline's own check in tests)
        self.staleness = staleness
        self.workers = len(devices)
        self.worker_steps = [0] * len(devices)
        self.epoch_log: list = []
        self.threads: list = []
        self.closed = False

    # -- contract --------------------------------------------------------------------
    def open(self, job: Job) -> None:
        self.job = job
        p = job.params
        self.reg = self.kl = None
        for name, tp in zip(job.terms, p.terms):
            if name == "regularizer":
                self.reg = (float(tp.coef), int(tp.norm))
            elif name == "kl":
                self.kl = tp
            else:
                raise ValueError(f"the {name!r} loss term: not supported by --backend gpu; use --backend cpu")
        self.chunk = min(p.neg_chunk, p.batch)
        self.chunks = max(1, p.batch // self.chunk)  # B chunks of c positives: one step
        self.positives_per_step = self.chunks * self.chunk
        self.placement = self._choose_placement()
        t = job.tables
        self.entity, self.entity_state = t.entity, t.entity_state  # host placement: trained in place
        self.relation_host, self.relation_state_host = t.relation, t.relation_state
        counts = np.bincount(job.edges[:, 1], minlength=t.relation.shape[0])
        self.rel_counts = counts
        self.epoch = 0
        self._place_relations(greedy_relation_partition(counts, self._relation_bytes(),
                                                        [d.free_bytes() for d in self.devices]))
        if self.placement == "device":
            d = self.devices[0]
            self.entity_dev = d.to_device(t.entity)
            self.entity_state_dev = d.to_device(t.entity_state)
            if self.kl is not None:
                self.kl_values_dev = d.to_device(self.kl.values)
        self.lock = threading.Lock()
        self.reserved = 0
        self.stop_flag = threading.Event()
        self.go = threading.Event()
        self.pause = threading.Event()
        self.reports: queue.Queue = queue.Queue()
        self.errors: list = []
        self.paused = [threading.Event() for _ in self.devices]
        self.threads = [threading.Thread(target=self._device_main, args=(i,), name=f"kgnum-gpu-{i}", daemon=True)
                        for i in range(len(self.devices))]
        for th in self.threads:
            th.start()
        self.positives_done = 0
        self.host_seconds = [0.0] * len(self.devices)  # device thread waiting on the host (sample, gather, hand-off)
        self.busy_seconds = [0.0] * len(self.devices)
        self.go.set()

    def advance(self, max_steps: int) -> Report:
        deadline = time.perf_counter() + CALL_SECONDS
        steps = positives = 0
        loss = 0.0
        while time.perf_counter() < deadline:
            try:
                w, n, pos, ls = self.reports.get(timeout=POLL_SECONDS)
            except queue.Empty:
                self._raise_errors()
                if not any(th.is_alive() for th in self.threads):
                    break
                continue
            steps, positives, loss = steps + n, positives + pos, loss + ls
            self.worker_steps[w] += n
        self._raise_errors()
        self.positives_done += positives
        finished = not any(th.is_alive() for th in self.threads)
        if self.placement == "host" and not finished and \
                self.positives_done >= (self.epoch + 1) * self.job.edges.shape[0]:
            self._next_epoch()
        return Report(steps, positives, loss, finished=finished)

    def snapshot(self, with_state: bool) -> Tables:
        relation = self.relation_host.copy()
        relation_state = self.relation_state_host.copy()
        for i, d in enumerate(self.devices):
            rows = self.dev_rels[i]
            if rows.size:
                relation[rows] = d.to_host(self.rel_dev[i])
                relation_state[rows] = d.to_host(self.rel_state_dev[i])
        if self.placement == "device":
            d = self.devices[0]
            entity, entity_state = d.to_host(self.entity_dev).copy(), d.to_host(self.entity_state_dev).copy()
        else:
            entity, entity_state = self.entity.copy(), self.entity_state.copy()
        return Tables(entity, relation, entity_state if with_state else None,
                      relation_state if with_state else None)

    def stop(self) -> Report:
        self.stop_flag.set()
        for th in self.threads:
            th.join()
        steps = positives = 0
        loss = 0.0
        while not self.reports.empty():
            w, n, pos, ls = self.reports.get()
            steps, positives, loss = steps + n, positives + pos, loss + ls
            self.worker_steps[w] += n
        self._raise_errors()
        self.epoch_log.append({"placement": self.placement, "overlap": self.overlap, "devices": [
            {"device": d.name, "steps": self.worker_steps[i], "host_wait_fraction":
             self.host_seconds[i] / max(self.busy_seconds[i], 1e-9)} for i, d in enumerate(self.devices)]})
        return Report(steps, positives, loss, finished=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.threads:
            self.stop_flag.set()
            self.go.set()
            for th in self.threads:
                th.join(30)
        self.rel_dev = self.rel_state_dev = None
        self.entity_dev = self.entity_state_dev = self.kl_values_dev = None
        for d in self.devices:
            try:
                d.release()
            except Exception:  # noqa: BLE001 - a device in error keeps nothing of ours either
                pass

    # -- placement -------------------------------------------------------------------
    def _relation_bytes(self) -> int:
        return 4 * (self.job.tables.relation.shape[1] + 1)

    def _choose_placement(self) -> str:
        t, p = self.job.tables, self.job.params
        need, host_need = placement_bytes(self.job.model, t.entity.shape[0], t.relation.shape[0], t.entity.shape[1],
                                          t.relation.shape[1], p.batch, p.neg_chunk, p.neg)
        free = self.devices[0].free_bytes()
        if self.requested == "device":
            if len(self.devices) > 1:
                raise ValueError("--gpu-placement device keeps every table on one device: give one device "
                                 "(--gpus 0) or use --gpu-placement host")
            if need > free:
                raise ValueError(f"--gpu-placement device: the tables and one step's buffers need "
                                 f"{need / 2**30:.2f} GiB on {self.devices[0].name}, which has "
                                 f"{free / 2**30:.2f} GiB free; use --gpu-placement host")
            return "device"
        if resolve_placement(self.requested, len(self.devices), need, free) == "device":
            log.info("gpu placement device: tables and buffers (%.2f GiB) fit on %s (%.2f GiB free)",
                     need / 2**30, self.devices[0].name, free / 2**30)
            return "device"
        for d in self.devices:
            if host_need > d.free_bytes():
                raise ValueError(f"--gpu-placement host: a step's buffers and the relations need "
                                 f"{host_need / 2**30:.2f} GiB on {d.name}, which has "
                                 f"{d.free_bytes() / 2**30:.2f} GiB free; lower --batch or --neg")
        if self.requested == "auto":
            why = ("more than one device" if len(self.devices) > 1 else
                   f"the tables and buffers ({need / 2**30:.2f} GiB, x{HEADROOM} headroom) do not fit in "
                   f"{free / 2**30:.2f} GiB")
            log.info("gpu placement host: %s", why)
        return "host"

    def _place_relations(self, owner: np.ndarray) -> None:
        """Put each relation's row and state on its device (and only there)."""
        self.rel_owner = owner
        self.dev_rels = [np.flatnonzero(owner == i) for i in range(len(self.devices))]
        self.local_rel = np.empty(owner.size, dtype=np.int64)  # global relation -> row on its device
        for rows in self.dev_rels:
            self.local_rel[rows] = np.arange(rows.size)
        self.rel_dev = [d.to_device(self.relation_host[r]) for d, r in zip(self.devices, self.dev_rels)]
        self.rel_state_dev = [d.to_device(self.relation_state_host[r]) for d, r in zip(self.devices, self.dev_rels)]
        rel_of_edge = self.job.edges[:, 1]
        self.dev_edges = [np.flatnonzero(owner[rel_of_edge] == i) for i in range(len(self.devices))]

    def _next_epoch(self) -> None:
        """Between epochs (host placement): pause the devices, bring the relations home, redraw."""
        self.epoch += 1
        if len(self.devices) == 1:
            return
        self.pause.set()
        for ev, th in zip(self.paused, self.threads):
            while th.is_alive() and not ev.wait(POLL_SECONDS):
                self._raise_errors()
        for i, d in enumerate(self.devices):
            rows = self.dev_rels[i]
            if rows.size:
                self.relation_host[rows] = d.to_host(self.rel_dev[i])
                self.relation_state_host[rows] = d.to_host(self.rel_state_dev[i])
        rng = np.random.default_rng((self.job.seed, self.epoch))
        self._place_relations(greedy_relation_partition(self.rel_counts, self._relation_bytes(),
                                                        [d.free_bytes() for d in self.devices], rng))
        for ev in self.paused:
            ev.clear()
        self.pause.clear()

    def _raise_errors(self) -> None:
        if self.errors:
            w, e = self.errors[0]
            if isinstance(e, (ZeroDivisionError, FloatingPointError)):
                raise TrainingDiverged(f"device {self.devices[w].name}: {type(e).__name__}: {e}")
            raise RuntimeError(f"kgnum gpu device {self.devices[w].name} failed: {type(e).__name__}: {e}") from e

    # -- device threads --------------------------------------------------------------
    def _reserve(self) -> bool:
        with self.lock:
            if self.job.max_steps is not None and self.reserved >= self.job.max_steps:
                return False
            self.reserved += 1
            return True

    def _device_main(self, i: int) -> None:
        updates: queue.Queue = queue.Queue(maxsize=1)
        updater = None
        try:
            if self.placement == "host" and self.overlap:
                updater = threading.Thread(target=self._updater, args=(i, updates), daemon=True,
                                           name=f"kgnum-gpu-{i}-updates")
                updater.start()
            self._train_device(i, updates if updater else None)
        except BaseException as e:  # noqa: BLE001 - reported to the loop through advance
            self.errors.append((i, e))
        finally:
            if updater is not None:
                updates.put(None)
                updater.join()

    def _updater(self, i: int, updates: queue.Queue) -> None:
        lr = np.float32(self.job.params.lr)
        while True:
            item = updates.get()
            if item is None:
                return
            try:
                rows, grads = item
                _host_adagrad(self.entity, self.entity_state, rows, grads, lr)
            except BaseException as e:  # noqa: BLE001
                self.errors.append((i, e))
            finally:
                updates.task_done()

    def _train_device(self, i: int, updates: queue.Queue | None) -> None:
        d, job, p = self.devices[i], self.job, self.job.params
        xp = d.xp
        rng = np.random.default_rng((job.seed, i))
        B, c, k = self.chunks, self.chunk, p.neg
        n_ent = self.entity.shape[0]
        cdf = p.neg_cdf if p.neg_cdf.size else None
        while not self.go.wait(POLL_SECONDS):
            if self.stop_flag.is_set():
                return
        order, pos, step = np.empty(0, np.int64), 0, 0
        host_rows = d.host_buffer((B, 2 * c + k), np.int64)
        host_vals = d.host_buffer((B, 2 * c + k, self.entity.shape[1]), np.float32)
        lr = np.float32(p.lr)
        with d.use():
            while not self.stop_flag.is_set():
                if self.pause.is_set():
                    if updates is not None:
                        updates.join()  # the host table is complete before the relations move
                    self.paused[i].set()
                    while self.pause.is_set() and not self.stop_flag.is_set():
                        time.sleep(POLL_SECONDS / 5)
                    order, pos = np.empty(0, np.int64), 0  # this device's edges changed
                    continue
                mine = self.dev_edges[i]
                if mine.size == 0:
                    time.sleep(POLL_SECONDS)
                    continue
                if not self._reserve():
                    return
                t0 = time.perf_counter()
                need = B * c
                take = []
                while need:
                    if pos >= order.size:
                        order, pos = mine[rng.permutation(mine.size)], 0
                    n = min(need, order.size - pos)
                    take.append(order[pos:pos + n])
                    pos, need = pos + n, need - n
                batch = job.edges[np.concatenate(take)].reshape(B, c, 3)
                negs = (rng.integers(0, n_ent, (B, k)) if cdf is None else
                        np.minimum(np.searchsorted(cdf, rng.random((B, k)) * cdf[-1], side="right"), n_ent - 1))
                host_rows[:, :c], host_rows[:, c:2 * c], host_rows[:, 2 * c:] = batch[..., 0], batch[..., 2], negs
                predict_head = step % 2 == 1
                step += 1
                if updates is not None and self.staleness == 0:
                    updates.join()  # the previous batch's update lands before this batch reads rows
                host = time.perf_counter() - t0
                loss, handoff = self._step(i, d, xp, host_rows, host_vals, batch[..., 1], predict_head, updates, lr)
                self.host_seconds[i] += host + handoff
                self.busy_seconds[i] += time.perf_counter() - t0
                self.reports.put((i, 1, B * c, loss))
                if not math.isfinite(loss):
                    return  # the loop reports the divergence

    def _kl_rows(self, i: int, d: Device):
        """The KL term's sensitive relation rows (J, dr) and top values' rows (J, M, d) on device i, as
        they are now: a relation trained on another device is read from there (the term only reads them)."""
        rows = []
        for r in self.kl.relations:
            owner = int(self.rel_owner[r])
            row = self.rel_dev[owner][int(self.local_rel[r])]
            rows.append(row if owner == i else d.to_device(self.devices[owner].to_host(row)))
        relation_rows = d.xp.stack(rows)
        if self.placement == "device":
            return relation_rows, self.entity_dev[self.kl_values_dev]
        return relation_rows, d.to_device(np.take(self.entity, self.kl.values, axis=0))

    def _step(self, i, d, xp, host_rows, host_vals, rels, predict_head, updates, lr) -> float:
        p = self.job.params
        B, c = self.chunks, self.chunk
        scale = 1.0 / (B * c)
        local = d.to_device(self.local_rel[rels])
        R = self.rel_dev[i][local]
        if self.placement == "device":
            ids = d.to_device(host_rows)
            rows = self.entity_dev[ids]
        else:
            ids = None
            np.take(self.entity, host_rows, axis=0, out=host_vals)  # gathered into the pinned buffer
            rows = d.to_device(host_vals)  # ... and copied over at once
        H, T, N = rows[:, :c], rows[:, c:2 * c], rows[:, 2 * c:]
        loss, gH, gR, gT, gN = array_step.chunk_gradients(xp, self.job.model, H, R, T, N, predict_head,
                                                          float(p.gamma), float(p.adv_temp), scale)
        loss = float(loss)
        if self.reg is not None:
            penalty = array_step.regularize(xp, self.reg[0], self.reg[1], [(H, gH), (T, gT), (R, gR)])
            loss += penalty / scale  # as the Numba step: penalties in units of the batch mean
        if self.kl is not None:
            relation_rows, value_rows = self._kl_rows(i, d)
            penalty = array_step.kl_divergence(xp, self.job.model, self.kl, scale, relation_rows, value_rows,
                                               [(host_rows[:, :c], H, gH), (host_rows[:, c:2 * c], T, gT)])
            loss += penalty / scale
        array_step.adagrad(xp, self.rel_dev[i], self.rel_state_dev[i], local, gR, lr)
        grads = xp.concatenate([gH, gT, gN], axis=1)  # (B, 2c + k, d), rows in host_rows' order
        if self.placement == "device":
            array_step.adagrad(xp, self.entity_dev, self.entity_state_dev, ids, grads, lr)
            return loss, 0.0
        g = np.ascontiguousarray(d.to_host(grads).reshape(-1, grads.shape[-1]), dtype=np.float32)
        rows_flat = np.ascontiguousarray(host_rows.reshape(-1)).copy()
        t0 = time.perf_counter()
        if updates is None:
            _host_adagrad(self.entity, self.entity_state, rows_flat, g, lr)
        else:
            updates.put((rows_flat, g))  # the updater applies it while this thread goes on
        return loss, time.perf_counter() - t0
