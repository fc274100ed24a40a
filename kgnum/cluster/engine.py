"""The ``dask`` backend: the graph's parts held by Dask workers, trained in rounds with the shared step.

    open:    client (given, --scheduler ADDRESS, or a LocalCluster of --local-cluster / --workers
             processes, one thread each) -> every worker imports this kgnum version, or a one-line
             error naming the worker -> partition (--partition DIR, or METIS into --parts P, default
             one part per worker) -> relations owned by the part training most of their edges
             -> one store per part on a worker (cluster.store), checkpointed to --checkpoint-dir
    advance: submit round r (~ROUND_SECONDS): every part serves the rows asked for in round r - 1
             and trains its share of the steps (edge-proportional, so the parts' epochs stay aligned)
             on the rows served in round r - 1; return round r - 1's reports. Tasks are pinned to
             the worker holding the part; rows and deltas go from worker to worker, not through here
    snapshot: every part's own rows gathered into the ordinary tables
    faults:  a part whose worker is gone is re-created on a live worker from its last checkpoint;
             the others drop the deltas of the round in flight; the log names worker, part and the
             steps lost. No worker left, or the scheduler lost: a clear error, checkpoints intact.

One worker process per core, one thread each: the step is single-threaded
Numba (as in the shared-memory engine's processes), and a thread per part
keeps a part's tasks in order on its worker. Staleness: a part reads other
parts' rows as they were served one round before it trains on them (at most
two rounds, about 2 x ROUND_SECONDS of training, old); relations likewise.
"""
from __future__ import annotations

import collections
import logging
import math
import os
import shutil
import tempfile
import time
import uuid

import numpy as np

from ..kernels.terms import needed_entities
from ..loop import Job, Report, TrainingDiverged
from . import store
from ..files import atomic_directory, check_output_dir
from .checkpoint import MANIFEST, read_part, write_manifest, write_part

log = logging.getLogger("kgnum")

ROUND_SECONDS = 0.5  # training per round; rows are at most two rounds stale (rounds are pipelined)
POLL_SECONDS = 0.5  # health checks while waiting on a round
START_TIMEOUT = 120.0  # seconds for stores to be created (includes compiling the step)
SCHEDULER_TIMEOUT = 30.0  # seconds to connect to --scheduler, and to reconnect to it before the run stops
FAULT_ENV = "KGNUM_TEST_DASK_FAULT"  # "<part>:<round>": that part's worker kills itself after that round


class ClusterLost(RuntimeError):
    """The scheduler or every worker is gone."""


def make_engine(cfg, kg, client=None):
    import distributed  # noqa: F401  (a missing extra is reported by kgnum.train)

    return DaskEngine(cfg, kg, client)


class DaskEngine:
    backend = "dask"
    call_seconds = ROUND_SECONDS

    def __init__(self, cfg, kg, client=None):
        self.cfg, self.kg = cfg, kg
        self.client, self.own_client = client, client is None
        self.cluster = None
        self.workers = 0
        self.steps_by_worker: dict = {}
        self.epoch_log: list = []
        self.run_id = uuid.uuid4().hex[:12]
        self.closed = False
        self.tmp_checkpoints = None
        self.failed = False
        self.previous_stats = None  # train_stats of a resumed model, kept in the manifest

    @property
    def worker_steps(self) -> list:
        """Steps trained on each Dask worker (by address), including workers lost since."""
        return [self.steps_by_worker[a] for a in sorted(self.steps_by_worker)]

    # -- contract --------------------------------------------------------------------
    def open(self, job: Job) -> None:
        self.job = job
        self._connect()
        addresses = self._check_workers()
        self.partition = self._partition(len(addresses))
        P = self.parts = self.partition.parts
        owner = self.partition.owner
        edges = job.edges
        rel_counts = np.zeros((P, self.kg.n_relations), np.int64)
        np.add.at(rel_counts, (owner[edges[:, 0]], edges[:, 1]), 1)
        self.relation_owner = rel_counts.argmax(axis=0).astype(np.int32)
        self.part_edges = [edges[e] for e in self.partition.part_edges]
        self.edge_share = np.array([e.shape[0] for e in self.part_edges], np.float64) / max(1, edges.shape[0])
        self.addr = [addresses[p % len(addresses)] for p in range(P)]
        self.workers = len(set(self.addr))
        self.steps_by_worker = {}
        self.part_steps = [0] * P
        self.steps_done = 0
        self.checkpoint_dir = self._checkpoint_dir()
        needs = needed_entities(job.terms, job.params.terms)
        weight = None
        if job.params.neg_cdf.size:
            weight = np.diff(job.params.neg_cdf, prepend=0.0)
        fault = os.environ.get(FAULT_ENV)
        fault = tuple(int(x) for x in fault.split(":")) if fault else None
        self.specs = []
        for p in range(P):
            own = np.flatnonzero(owner == p).astype(np.int64)
            e = self.part_edges[p]
            read = np.unique(np.concatenate([e[:, 0], e[:, 2], needs]).astype(np.int64))
            boundary = read[owner[read] != p]
            self.specs.append(store.PartSpec(self.run_id, p, P, job.model, tuple(job.terms), job.params,
                                             int(job.seed), own, boundary, owner, self.relation_owner, e,
                                             weight, self.checkpoint_dir, fault))
        t = job.tables
        # this run's first set of part checkpoints goes to a temporary sibling that replaces the
        # directory once every part is created: until then the set a resumed run started from stays
        with atomic_directory(self.checkpoint_dir, MANIFEST) as staging:
            write_manifest(staging, job.model, self.kg.entity_names, self.kg.relation_names, self.cfg.to_dict(),
                           owner, self.relation_owner, self.previous_stats)
            for p, spec in enumerate(self.specs):
                rel = np.flatnonzero(self.relation_owner == p)
                write_part(staging, p, 0, spec.own, t.entity[spec.own], t.entity_state[spec.own], rel,
                           t.relation[rel], t.relation_state[rel])
            futures = [self._on(p, store.create, self.specs[p], self.client.scatter(t.entity[self.specs[p].own],
                                                                                    workers=[self.addr[p]]),
                                t.entity_state[self.specs[p].own], t.relation, t.relation_state)
                       for p in range(P)]
            try:
                requests = self._wait(futures, timeout=START_TIMEOUT)
            except _PartsLost as lost:  # before any training: nothing to recover
                gone = ", ".join(f"part {p} on {addr}" for p, addr in sorted(lost.parts.items()))
                raise ClusterLost(f"lost Dask worker(s) while the parts were created ({gone}): nothing was "
                                  f"trained; run it again") from None
        self._install_requests(requests)
        cut = self.partition.report.get("edge_cut_fraction", float("nan"))
        log.info("dask: %d parts (%s, edge cut %.3f) on %d workers %s; part checkpoints in %s; remote rows "
                 "refreshed every round (~%.1f s of training)", P, self.partition.method, cut, self.workers,
                 ", ".join(sorted(set(self.addr))), self.checkpoint_dir, ROUND_SECONDS)
        self.last_ckpt = time.perf_counter()
        self.epoch_mark = self.positives_logged = 0
        self.totals = self._zero_totals()

    def advance(self, max_steps: int) -> Report:
        """Submit the next round (its steps counted against ``max_steps`` with the round still in
        flight) and return the report of the round before it: one round trains while the previous
        one's rows and deltas are exchanged."""
        allowed = int(max_steps) - self.in_flight
        if allowed > 0:
            self._submit_round(allowed)
            if len(self.pending) < 2:
                return Report(0, 0, 0.0)
        if not self.pending:
            return Report(0, 0, 0.0)
        return self._collect(self.pending.popleft())

    def _submit_round(self, total: int) -> None:
        steps = self._split(total)
        checkpoint = time.perf_counter() - self.last_ckpt >= self.cfg.part_checkpoint_every
        if checkpoint:
            self.last_ckpt = time.perf_counter()
        ck_step = self.steps_done if checkpoint else None
        run, P = self.run_id, self.parts
        serve = [self._on(p, store.serve, run, p, ck_step, *[self.msgs[q][p] for q in self._others(p)])
                 for p in range(P)]
        resp = [[self._on(p, store.pick, serve[p], q) if q != p else None for q in range(P)] for p in range(P)]
        train = [self._on(p, store.train, run, p, steps[p], self.prev[p], *[self.resp[q][p] for q in self._others(p)])
                 for p in range(P)]
        reports = [self._on(p, store.pick, train[p], 0) for p in range(P)]
        msgs = [[self._on(p, store.pick, train[p], 1 + q) if q != p else None for q in range(P)] for p in range(P)]
        self.msgs, self.resp, self.prev = msgs, resp, reports
        self.pending.append((reports, total, [serve, resp, train, reports, msgs]))
        self.in_flight += total

    def _collect(self, round_) -> Report:
        reports, total, futures = round_
        try:
            got = self._wait(reports)
        except _PartsLost as lost:
            self._recover(lost.parts, [futures] + [r[2] for r in self.pending])
            return Report(0, 0, 0.0)
        self.in_flight -= total
        out = Report(0, 0, 0.0)
        for r in got:
            if not math.isfinite(r["loss_sum"]):
                raise TrainingDiverged(f"part {r['part']}: loss became {r['loss_sum']}")
            p = r["part"]
            self.part_steps[p] += r["steps"]
            self.steps_by_worker[self.addr[p]] = self.steps_by_worker.get(self.addr[p], 0) + r["steps"]
            out = Report(out.steps + r["steps"], out.positives + r["positives"], out.loss_sum + r["loss_sum"])
            t = self.totals[p]
            for k in ("positives", "train_seconds", "wait_seconds", "bytes_pulled", "bytes_pushed"):
                t[k] += r[k]
        self.steps_done += out.steps
        self._log_epoch()
        return out

    def snapshot(self, with_state: bool):
        from ..kernels.step import Tables

        t = self.job.tables
        entity, relation = np.empty_like(t.entity), np.empty_like(t.relation)
        ent_st, rel_st = np.empty_like(t.entity_state), np.empty_like(t.relation_state)
        futures = [self._on(p, store.rows, self.run_id, p) for p in range(self.parts)]
        for ids, rows, state, rel_ids, rel_rows, rel_state in self._wait(futures):
            entity[ids], ent_st[ids] = rows, state
            relation[rel_ids], rel_st[rel_ids] = rel_rows, rel_state
        return Tables(entity, relation, ent_st if with_state else None, rel_st if with_state else None)

    def stop(self) -> Report:
        """Wait for the rounds still in flight; their work is reported."""
        out = Report(0, 0, 0.0)
        while self.pending:
            r = self._collect(self.pending.popleft())
            out = Report(out.steps + r.steps, out.positives + r.positives, out.loss_sum + r.loss_sum)
        return out

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.msgs = self.resp = self.prev = None
        self.pending = collections.deque()
        try:
            if self.client is not None and self.client.status == "running":
                self.client.run(store.drop, self.run_id, on_error="ignore")
        except Exception:  # the cluster may be gone: nothing of ours is left on it then
            pass
        if self.own_client:
            for thing in (self.client, self.cluster):
                try:
                    if thing is not None:
                        thing.close()
                except Exception:
                    pass
        if self.tmp_checkpoints and not self.failed:
            shutil.rmtree(self.tmp_checkpoints, ignore_errors=True)

    # -- set-up ----------------------------------------------------------------------
    def _connect(self) -> None:
        if self.client is not None:
            return
        from distributed import Client, LocalCluster

        if not log.isEnabledFor(logging.DEBUG):  # Dask's own start/stop chatter: only with --verbose
            for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.worker",
                         "distributed.core", "distributed.http.proxy"):
                logging.getLogger(name).setLevel(logging.WARNING)
        cfg = self.cfg
        if cfg.scheduler:
            try:
                self.client = Client(cfg.scheduler, timeout=SCHEDULER_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as e:  # ValueError: an address it cannot parse
                raise ClusterLost(f"--scheduler {cfg.scheduler}: cannot connect ({e})") from None
            return
        n = int(cfg.local_cluster or cfg.workers)
        self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        self.client = Client(self.cluster)

    def _check_workers(self) -> list:
        """Addresses of the workers, each checked to run this kgnum version."""
        from .. import __version__

        try:
            self.client.wait_for_workers(1, timeout=60)
        except (OSError, TimeoutError):
            raise ClusterLost("the Dask cluster has no worker (waited 60 s)") from None
        infos = self.client.run(store.worker_info, on_error="return")
        for address, info in sorted(infos.items()):
            if isinstance(info, BaseException):
                raise RuntimeError(f"Dask worker {address} cannot run kgnum: {type(info).__name__}: {info} "
                                   f"(install kgnum {__version__} in the workers' environment)")
            if info.get("kgnum") != __version__:
                raise RuntimeError(f"Dask worker {address} has kgnum {info.get('kgnum')}, this run needs "
                                   f"{__version__} (install the same version on every worker)")
        return sorted(infos)

    def _partition(self, n_workers: int):
        from .partition import load_partition, partition

        cfg = self.cfg
        if cfg.partition:
            return load_partition(cfg.partition, self.kg)
        return partition(self.kg, int(cfg.parts or n_workers), "metis", seed=int(cfg.seed),
                         dim=self.job.tables.entity.shape[1])

    def _checkpoint_dir(self) -> str:
        if self.cfg.checkpoint_dir:
            check_output_dir(self.cfg.checkpoint_dir, "--checkpoint-dir", MANIFEST)  # replaced as a whole
            return os.path.abspath(self.cfg.checkpoint_dir)
        self.tmp_checkpoints = tempfile.mkdtemp(prefix="kgnum-parts-")
        return self.tmp_checkpoints

    # -- rounds ----------------------------------------------------------------------
    def _others(self, p: int) -> list:
        return [q for q in range(self.parts) if q != p]

    def _on(self, p: int, fn, *args):
        """``fn(*args)`` on the worker holding part ``p`` (never elsewhere: the part's state is there)."""
        return self.client.submit(fn, *args, workers=[self.addr[p]], allow_other_workers=False, pure=False)

    def _split(self, total: int) -> list:
        """``total`` steps over the parts in proportion to their edges (largest remainder)."""
        raw = self.edge_share * total
        steps = np.floor(raw).astype(np.int64)
        rest = int(total - steps.sum())
        if rest:
            steps[np.argsort(-(raw - steps), kind="stable")[:rest]] += 1
        return [int(s) for s in steps]

    def _install_requests(self, requests: list) -> None:
        """``requests[p]``: part p's requests for its next two installs (one message per part, None for
        itself). The first are served now; the second go to the next round's serve."""
        P = self.parts

        def scattered(k):
            return [[None if q == p else self.client.scatter(requests[p][k][q], workers=[self.addr[q]])
                     for q in range(P)] for p in range(P)]

        first, self.msgs = scattered(0), scattered(1)
        serve = [self._on(p, store.serve, self.run_id, p, None, *[first[q][p] for q in self._others(p)])
                 for p in range(P)]
        self.resp = [[self._on(p, store.pick, serve[p], q) if q != p else None for q in range(P)] for p in range(P)]
        self.prev = [None] * P
        self.pending = collections.deque()
        self.in_flight = 0

    def _wait(self, futures: list, timeout: float | None = None) -> list:
        """Results of ``futures`` in order; _PartsLost when a part's worker is gone."""
        from concurrent.futures import CancelledError

        from distributed import wait

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                wait(futures, timeout=POLL_SECONDS)
                break
            except TimeoutError:
                pass
            except CancelledError:  # the scheduler dropped them: a worker holding inputs is gone
                raise _PartsLost(self._await_lost_parts()) from None
            except OSError as e:
                raise self._lost_cluster(f"lost the Dask scheduler ({e})") from None
            lost = self._lost_parts()
            if lost:
                raise _PartsLost(lost)
            if any(f.status == "error" for f in futures):
                break
            if deadline is not None and time.monotonic() > deadline:
                raise RuntimeError(f"the Dask workers did not answer within {timeout:.0f} s")
        out = []
        for p, f in enumerate(futures):
            try:
                out.append(f.result())
            except store.PartLost:
                raise _PartsLost(self._lost_parts() or {p: self.addr[p]}) from None
            except CancelledError:
                raise _PartsLost(self._await_lost_parts()) from None
            except (ZeroDivisionError, FloatingPointError) as e:
                raise TrainingDiverged(f"part {p}: {type(e).__name__}: {e}") from None
            except OSError as e:
                raise self._lost_cluster(f"lost the Dask scheduler ({e})") from None
            except Exception as e:
                lost = self._lost_parts()
                if lost:
                    raise _PartsLost(lost) from None
                raise RuntimeError(f"kgnum part {p} on Dask worker {self.addr[p]} failed: {type(e).__name__}: "
                                   f"{e}") from e
        return out

    def _live_workers(self) -> list:
        if self.client.status in ("closing", "closed"):
            raise self._lost_cluster("lost the Dask scheduler")
        try:
            return sorted(self.client.scheduler_info()["workers"])
        except (OSError, TimeoutError) as e:
            raise self._lost_cluster(f"lost the Dask scheduler ({e})") from None

    def _lost_parts(self) -> dict:
        live = set(self._live_workers())
        return {p: a for p, a in enumerate(self.addr) if a not in live}

    def _await_lost_parts(self) -> dict:
        """The parts whose worker is gone, once the scheduler has noticed (futures were cancelled)."""
        deadline = time.monotonic() + 60  # a client gives up reconnecting to its scheduler after 30 s
        while time.monotonic() < deadline:
            if self.client.status in ("closing", "closed"):
                raise self._lost_cluster("lost the Dask scheduler")
            if self.client.status == "running":
                lost = self._lost_parts()
                if lost:
                    return lost
            time.sleep(POLL_SECONDS)
        raise RuntimeError("the Dask scheduler cancelled kgnum's tasks while every part's worker is alive")

    def _lost_cluster(self, why: str) -> ClusterLost:
        self.failed = True
        return ClusterLost(f"{why}: training stopped at step {self.steps_done:,}; the part checkpoints in "
                           f"{self.checkpoint_dir} are intact: continue with kgnum train ... --backend dask "
                           f"--checkpoint-dir {self.checkpoint_dir} --resume")

    def _recover(self, lost: dict, in_flight: list) -> None:
        """Re-create the lost parts on live workers from their checkpoints; resync the others
        (again if a worker is lost meanwhile). ``in_flight``: the futures of every pending round."""
        flat = [f for rnd in in_flight for group in rnd for row in group
                for f in (row if isinstance(row, list) else [row]) if f is not None]
        self.client.cancel(flat)
        self.pending.clear()
        self.in_flight = 0
        self.msgs = self.resp = self.prev = None
        while True:
            try:
                return self._replace_parts(lost)
            except _PartsLost as again:
                lost = again.parts

    def _replace_parts(self, lost: dict) -> None:
        live = self._live_workers()
        if not live:
            raise self._lost_cluster("every Dask worker is gone")
        for p, dead in sorted(lost.items()):
            load = {a: sum(1 for q, b in enumerate(self.addr) if b == a and q not in lost) for a in live}
            target = min(live, key=lambda a: (load[a], a))
            self.addr[p] = target
            held = int(read_part(self.checkpoint_dir, p).get("part_steps", 0))  # what its file holds
            lost_steps = self.part_steps[p] - held
            log.warning("dask worker %s is gone: part %d re-created on %s from its checkpoint (%d of its steps "
                        "lost, and every part's remote-row updates of the round in flight)", dead, p, target,
                        lost_steps)
            self.part_steps[p] = held
        futures = []
        for p in range(self.parts):
            if p in lost:
                futures.append(self._on(p, store.restore, self.specs[p]))
            else:
                futures.append(self._on(p, store.resync, self.run_id, p))
        self._install_requests(self._wait(futures, timeout=START_TIMEOUT))
        self.workers = max(self.workers, len(set(self.addr)))

    # -- per-epoch log ---------------------------------------------------------------
    def _zero_totals(self) -> list:
        return [dict(positives=0, train_seconds=0.0, wait_seconds=0.0, bytes_pulled=0, bytes_pushed=0)
                for _ in range(self.parts)]

    def _log_epoch(self) -> None:
        n = max(1, self.job.edges.shape[0])
        done = sum(t["positives"] for t in self.totals)
        epoch = (self.positives_logged + done) // n  # epochs completed so far (a round may end two)
        if epoch <= self.epoch_mark:
            return
        self.epoch_mark = epoch
        self.positives_logged += done
        parts = []
        for p, t in enumerate(self.totals):
            parts.append({"part": p, "worker": self.addr[p],
                          "triples_per_second": t["positives"] / max(t["train_seconds"], 1e-9),
                          "bytes_pulled": t["bytes_pulled"], "bytes_pushed": t["bytes_pushed"],
                          "wait_seconds": t["wait_seconds"]})
        self.epoch_log.append({"epoch": self.epoch_mark, "positives": done, "parts": parts})
        log.info("epoch %d: %s", self.epoch_mark, "; ".join(
            f"part {q['part']} {q['triples_per_second']:,.0f} triples/s, pulled {q['bytes_pulled'] / 1e6:.1f} MB, "
            f"pushed {q['bytes_pushed'] / 1e6:.1f} MB, waited {q['wait_seconds']:.2f} s" for q in parts))
        self.totals = self._zero_totals()


class _PartsLost(Exception):
    def __init__(self, parts: dict):
        super().__init__(parts)
        self.parts = parts
