"""Multi-core Hogwild training: N worker processes on tables in shared memory.

    parent: tables + edges -> shared blocks -> fork N workers -> watch / validate /
            checkpoint -> copy the final tables out -> unlink the blocks (always)
    worker: attach by name -> train_kernel over its shard of edge positions,
            ~0.2 s per call, lock-free on the shared tables -> report over a pipe

Stopping rules, progress bar, validation (early stopping) and checkpoints are the
single-process ones from ``kgnum.train`` (Budget, Progress, Validator), enforced
by the parent over all workers. Steps are reserved from a shared counter before
each kernel call, so ``max_steps`` / ``epochs`` are exact over all workers.

Failures: a worker exception (its traceback comes through its pipe), a worker
killed by a signal, KeyboardInterrupt or SIGTERM in the parent all stop every
worker and unlink every block before the error propagates; checkpoints are
written atomically, so the last one stays loadable.
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from ..config import TrainConfig
from ..data import KnowledgeGraph
from ..embeddings import Embeddings
from ..kernels.registry import get_model
from ..kernels.sampling import seed_kernel_rng
from ..kernels.step import train_kernel
from ..train import Budget, Progress, Validator, kernel_args, negative_cdf, next_call_steps
from .tables import SharedTables, attach, close_quietly

log = logging.getLogger("kgnum")

# Test hook (fault injection), read by the parent when training starts:
#   KGNUM_TEST_FAULT="raise:<worker>:<n>"  that worker raises RuntimeError after its n-th kernel call
#   KGNUM_TEST_FAULT="kill:<worker>:<n>"   that worker sends itself SIGKILL after its n-th call
FAULT_ENV = "KGNUM_TEST_FAULT"

CALL_SECONDS = 0.2  # target duration of one kernel call: responsive stop/progress, tiny overhead
POLL_SECONDS = 0.05  # parent's wake-up period for time budget, checkpoints and dead workers
STOP_GRACE_SECONDS = 5.0  # after setting the stop flag, how long workers get before SIGTERM


class TrainingInterrupted(KeyboardInterrupt):
    """Raised in the parent by SIGTERM (installed for the duration of ``train_shared``)."""


@dataclass(frozen=True)
class _Job:
    """What every worker needs besides the shared blocks (picklable for spawn)."""
    model: str
    n_workers: int
    batch: int
    neg_chunk: int
    neg: int
    scalars: tuple  # kernel_args(cfg)
    seed: int
    max_steps: int | None  # over all workers; None: until stopped
    fault: tuple | None  # (action, worker, n_calls) from KGNUM_TEST_FAULT
    parent_pid: int  # a worker whose parent is gone (SIGKILL) stops by itself


def train_shared(kg: KnowledgeGraph, cfg: TrainConfig, emb: Embeddings, save: str | None = None,
                 checkpoint_every: float | None = None, progress: bool = True) -> Embeddings:
    """Train ``emb`` in place with ``cfg.workers`` Hogwild processes and return it.

    kg.train (n, 3) int32 and emb's tables (entity (n_e, d), relation (n_r, d_r),
    entity_state (n_e,), relation_state (n_r,), float32) are copied into shared
    blocks ``/dev/shm/kgnum_<pid>_<run>_*``; the final tables are copied back into
    ``emb`` (best validated tables when early stopping), ``emb.train_stats`` gets
    train_seconds, steps, positives, triples_per_second, mean_loss, workers,
    worker_steps, valid_history. ``save``: write the result there (atomically), and
    every ``checkpoint_every`` seconds while training.

    Raises RuntimeError naming the worker when a worker fails or is killed, and
    TrainingInterrupted (a KeyboardInterrupt) on SIGTERM; the blocks are unlinked
    and the workers gone in every case.
    """
    n_workers = int(cfg.workers)
    model = get_model(cfg.model).name
    edges = np.ascontiguousarray(kg.train, dtype=np.int32)
    budget = Budget(cfg, edges.shape[0])
    validator = Validator(kg, cfg, cfg.seed)
    cdf = negative_cdf(kg, cfg)
    job = _Job(model, n_workers, int(cfg.batch), int(cfg.neg_chunk), int(cfg.neg), kernel_args(cfg),
               int(cfg.seed), budget.max_steps, _fault_from_env(), os.getpid())
    ctx = _context()
    if ctx.get_start_method() == "fork":
        _compile(job, emb, edges, cdf)  # forked workers inherit the compiled kernel

    old_sigterm = _install_sigterm()
    tables = SharedTables()
    procs: list = []
    conns: list = []
    stop = ctx.Event()
    go = ctx.Event()  # set once every worker is ready: all start together with the clock
    ok = False
    try:
        for key, array in (("ent", emb.entity), ("rel", emb.relation), ("ent_st", emb.entity_state),
                           ("rel_st", emb.relation_state), ("edges", edges)):
            tables.add(key, array)
        if cdf.size:
            tables.add("cdf", cdf)
        reserved = ctx.Value("q", 0)  # steps handed out so far, over all workers
        for w in range(n_workers):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker_main, args=(w, tables.specs, job, send, stop, go, reserved),
                               name=f"kgnum-worker-{w}", daemon=True)
            proc.start()
            send.close()  # the parent keeps only the read end: EOF once the worker is gone
            procs.append(proc)
            conns.append(recv)
        log.debug("kgnum.shm run %s: %d workers, blocks %s", tables.run_id, n_workers, tables.names)
        stats = _supervise(procs, conns, stop, go, tables, emb, budget, validator, save,
                           checkpoint_every, progress)
        _copy_out(tables, emb)
        ok = True
    finally:
        pending = _shutdown(procs, conns, stop, tables, old_sigterm)
    if pending:  # a signal arrived during the clean-up of a run that had finished
        raise TrainingInterrupted(f"received {pending[0].name} while cleaning up")
    validator.restore_best(emb)
    emb.train_stats = stats
    if save:
        emb.save(save)
    return emb


# -- parent ---------------------------------------------------------------------------

def _context():
    """fork on Linux (workers inherit the compiled kernels), spawn elsewhere."""
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if sys.platform.startswith("linux") and "fork" in methods else "spawn")


def _compile(job: _Job, emb: Embeddings, edges: np.ndarray, cdf: np.ndarray) -> None:
    """Compile train_kernel for these array types with an empty range (touches nothing)."""
    kernel = train_kernel(job.model)
    kernel(emb.entity, emb.relation, emb.entity_state, emb.relation_state, edges,
           np.zeros(1, dtype=np.int64), 0, 0, job.batch, job.neg_chunk, job.neg, cdf, *job.scalars, 0)
    seed_kernel_rng(job.seed)


def _fault_from_env() -> tuple | None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    try:
        action, worker, calls = spec.split(":")
        if action not in ("raise", "kill"):
            raise ValueError
        return action, int(worker), int(calls)
    except ValueError:
        raise ValueError(f"{FAULT_ENV}={spec!r}: expected 'raise:<worker>:<calls>' or "
                         f"'kill:<worker>:<calls>'") from None


def _install_sigterm():
    """SIGTERM -> TrainingInterrupted; returns ``(old handler,)``, or None off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return None  # signal handlers can only be set from the main thread

    def on_sigterm(signum, frame):
        raise TrainingInterrupted("received SIGTERM: training stopped")

    old = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, on_sigterm)
    return (old,)


def _supervise(procs, conns, stop, go, tables, emb, budget, validator, save, checkpoint_every,
               progress) -> dict:
    """The parent's loop until every worker has exited; returns train_stats."""
    n_workers = len(procs)
    worker_steps = [0] * n_workers
    live = set(range(n_workers))
    open_conns = set(range(n_workers))
    ready = set()
    steps = positives = 0
    loss_sum = 0.0
    last_ckpt = time.perf_counter()
    bar = Progress(progress, budget.max_steps)  # after the forks: tqdm may start a monitor thread
    try:
        while live:
            mp.connection.wait([conns[w] for w in open_conns] + [procs[w].sentinel for w in live],
                               timeout=POLL_SECONDS)
            before = steps
            for w in sorted(live):
                exited = procs[w].exitcode is not None  # read before draining: no message lost
                for msg in _drain(conns[w], w, open_conns):
                    if msg[0] == "progress":
                        _, n_steps, n_pos, loss = msg
                        steps += n_steps
                        positives += n_pos
                        loss_sum += loss
                        worker_steps[w] += n_steps
                        bar.update(n_steps, positives / max(budget.elapsed(), 1e-9), loss / max(n_pos, 1))
                    elif msg[0] == "ready":
                        ready.add(w)
                        if len(ready) == n_workers:
                            budget.start()  # start-up is not training time
                            go.set()
                    elif msg[0] == "error":
                        raise _worker_error(w, msg[1])
                if exited:
                    code = procs[w].exitcode
                    if code < 0:
                        raise RuntimeError(f"kgnum worker {w} (pid {procs[w].pid}) was killed by signal "
                                           f"{_signal_name(-code)}; training stopped")
                    if code > 0:
                        raise RuntimeError(f"kgnum worker {w} (pid {procs[w].pid}) exited with code {code} "
                                           f"without reporting an error; training stopped")
                    live.discard(w)
            if stop.is_set():
                continue
            if validator.due(steps, before):
                # Hogwild: the workers keep training while the parent scores a copy, on one
                # BLAS thread (the cores are the workers'; spinning BLAS threads would stall them)
                with threadpool_limits(1):
                    if validator.check(_snapshot(tables, emb, with_state=False), steps):
                        stop.set()
            if save and checkpoint_every and time.perf_counter() - last_ckpt >= checkpoint_every:
                _snapshot(tables, emb, with_state=True,
                          stats={"steps": steps, "positives": positives, "checkpoint": True}).save(save)
                last_ckpt = time.perf_counter()
            if budget.done(steps):
                stop.set()
    finally:
        bar.close()
    seconds = budget.elapsed()
    return {"train_seconds": seconds, "steps": steps, "positives": positives,
            "triples_per_second": positives / max(seconds, 1e-9),
            "mean_loss": loss_sum / max(positives, 1), "workers": n_workers,
            "worker_steps": worker_steps, "valid_history": validator.history}


def _drain(conn, w: int, open_conns: set) -> list:
    """Every message waiting on worker ``w``'s pipe (the pipe is dropped at EOF)."""
    msgs = []
    if w not in open_conns:
        return msgs
    try:
        while conn.poll():
            msgs.append(conn.recv())
    except (EOFError, OSError):  # the worker has exited (or died mid-message)
        open_conns.discard(w)
    return msgs


def _worker_error(w: int, text: str) -> RuntimeError:
    cause = text.strip().splitlines()[-1] if text.strip() else "unknown error"
    return RuntimeError(f"kgnum worker {w} failed: {cause}\n--- worker {w} traceback ---\n{text.rstrip()}")


def _signal_name(signum: int) -> str:
    try:
        return f"{signal.Signals(signum).name} ({signum})"
    except ValueError:
        return str(signum)


def _snapshot(tables: SharedTables, emb: Embeddings, with_state: bool, stats: dict | None = None) -> Embeddings:
    """Embeddings holding copies of the shared tables (rows may be mid-update: Hogwild)."""
    a = tables.arrays
    return Embeddings(emb.model, a["ent"].copy(), a["rel"].copy(), emb.config, emb.entity_names,
                      emb.relation_names, a["ent_st"].copy() if with_state else None,
                      a["rel_st"].copy() if with_state else None, stats)


def _copy_out(tables: SharedTables, emb: Embeddings) -> None:
    a = tables.arrays
    emb.entity[...] = a["ent"]
    emb.relation[...] = a["rel"]
    emb.entity_state[...] = a["ent_st"]
    emb.relation_state[...] = a["rel_st"]


def _shutdown(procs, conns, stop, tables: SharedTables, old_sigterm) -> list:
    """Stop and reap every worker, unlink every block, restore SIGTERM.

    SIGINT/SIGTERM are held off meanwhile (it takes at most a few seconds) so a
    second Ctrl-C cannot leave blocks behind; returns the signals that arrived.
    """
    pending: list = []
    held = _hold_signals(pending)
    try:
        stop.set()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        open_conns = set(range(len(conns)))
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            for w, conn in enumerate(conns):
                _drain(conn, w, open_conns)  # a worker blocked writing to a full pipe must get through
            mp.connection.wait([p.sentinel for p in procs if p.is_alive()], timeout=POLL_SECONDS)
        for sig_method in ("terminate", "kill"):
            alive = [p for p in procs if p.is_alive()]
            for p in alive:
                getattr(p, sig_method)()
            for p in alive:
                p.join(2.0)
        for p in procs:
            if p.exitcode is not None:
                p.close()
        for conn in conns:
            conn.close()
        tables.close()
    finally:
        _restore_signals(held, old_sigterm)
    return pending


def _hold_signals(pending: list):
    if threading.current_thread() is not threading.main_thread():
        return None

    def remember(signum, frame):
        pending.append(signal.Signals(signum))

    held = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        held[sig] = signal.getsignal(sig)
        signal.signal(sig, remember)
    return held


def _restore_signals(held, old_sigterm) -> None:
    if held is None:
        return
    signal.signal(signal.SIGINT, held[signal.SIGINT] if held[signal.SIGINT] is not None else signal.SIG_DFL)
    if old_sigterm is not None:  # None handler: installed outside Python; SIG_DFL is the closest
        signal.signal(signal.SIGTERM, old_sigterm[0] if old_sigterm[0] is not None else signal.SIG_DFL)


# -- worker ---------------------------------------------------------------------------

def _worker_main(w: int, specs: dict, job: _Job, conn, stop, go, reserved) -> None:
    """Process entry point: train on shard ``w`` until the budget is spent or ``stop`` is set."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C hits the whole group; the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # forked from the parent's handler: undo it
    handles = []
    arrays = {}
    code = 0
    try:
        _pin_threads()
        for key, spec in specs.items():
            shm, arrays[key] = attach(spec)
            handles.append(shm)
        _train_worker(w, arrays, job, conn, stop, go, reserved)
        conn.send(("done",))
    except BaseException:
        code = 1
        try:
            conn.send(("error", traceback.format_exc()))
        except Exception:
            pass
    finally:
        arrays.clear()  # views first, or close() fails with BufferError
        for shm in handles:
            close_quietly(shm)  # close only: the parent owns and unlinks the blocks
        conn.close()
    if code:
        sys.exit(code)  # exit code 1 without multiprocessing printing the traceback again


def _pin_threads() -> None:
    """One thread per worker so N workers use N cores."""
    threadpool_limits(1)  # BLAS (numba's np.dot goes through scipy's)
    try:
        from numba.np.ufunc import parallel

        if parallel._is_initialized:  # only when a threading layer exists; never start one here
            import numba

            numba.set_num_threads(1)
    except (ImportError, AttributeError):
        pass


def _train_worker(w: int, a: dict, job: _Job, conn, stop, go, reserved) -> None:
    kernel = train_kernel(job.model)  # already compiled when forked; compiled here under spawn
    seed_kernel_rng(job.seed + 1000 * (w + 1))
    cdf = a["cdf"] if "cdf" in a else np.empty(0, dtype=np.float64)
    n_train = a["edges"].shape[0]
    # shard: every n_workers-th position of one seeded permutation, as a small index array
    shard = np.ascontiguousarray(np.random.default_rng(job.seed).permutation(n_train)[w::job.n_workers])
    conn.send(("ready",))
    while not go.wait(POLL_SECONDS):
        if stop.is_set():
            return
    steps_per_call = 1
    calls = 0
    chunk_index = 0
    epoch = 0
    while shard.size and not stop.is_set():
        order = shard[np.random.default_rng((job.seed, w, epoch)).permutation(shard.size)]
        epoch += 1
        pos = 0
        while pos < order.size and not stop.is_set():
            if os.getppid() != job.parent_pid:
                return  # orphaned: the parent was killed without cleaning up
            want = int(min(steps_per_call, math.ceil((order.size - pos) / job.batch)))
            n_steps = _reserve(reserved, want, job.max_steps)
            if n_steps == 0:
                return
            end = min(order.size, pos + n_steps * job.batch)
            t0 = time.perf_counter()
            loss, chunk_index = kernel(a["ent"], a["rel"], a["ent_st"], a["rel_st"], a["edges"], order,
                                       pos, end, job.batch, job.neg_chunk, job.neg, cdf, *job.scalars,
                                       chunk_index)
            steps_per_call = next_call_steps(steps_per_call, time.perf_counter() - t0,
                                             math.ceil(order.size / job.batch), CALL_SECONDS)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} in worker {w}; lower --lr or --gamma")
            conn.send(("progress", n_steps, end - pos, float(loss)))
            pos = end
            calls += 1
            if job.fault is not None and job.fault[1] == w and job.fault[2] == calls:
                _inject_fault(job.fault)


def _reserve(reserved, want: int, max_steps: int | None) -> int:
    """Take up to ``want`` steps from the global budget; 0 when it is spent."""
    if max_steps is None:
        return want
    with reserved.get_lock():
        grant = max(0, min(want, max_steps - reserved.value))
        reserved.value += grant
    return grant


def _inject_fault(fault: tuple) -> None:
    action, w, calls = fault
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected fault in worker {w} after {calls} kernel calls ({FAULT_ENV})")
