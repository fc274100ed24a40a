"""Multi-core Hogwild training: N worker processes on tables in shared memory.

    open:    tables + edges -> shared blocks -> fork N workers -> wait until all are ready
    advance: wait ~POLL_SECONDS for the workers' reports (they train on their own)
    snapshot: copy the shared tables (rows may be mid-update: Hogwild)
    stop / close: stop flag -> reap every worker -> unlink every block (always)
    worker:  attach by name -> train_kernel over its shard of edge positions,
             ~CALL_SECONDS per call, lock-free on the shared tables -> report over a pipe

This is the ``cpu`` backend with more than one worker; the run loop
(``kgnum.loop``) drives it like any engine: stopping rules, validation,
checkpoints and the divergence check are the loop's. Steps are reserved from a
shared counter before each kernel call, so ``max_steps`` / ``epochs`` are exact
over all workers.

Failures: a worker exception (its traceback comes through its pipe), a worker
killed by a signal, KeyboardInterrupt or SIGTERM in the parent all end in
``close``, which stops every worker and unlinks every block before the error
propagates.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass

import logging

import numpy as np
from threadpoolctl import threadpool_limits

from ..kernels.sampling import seed_kernel_rng
from ..kernels.step import StepParams, Tables, empty_range, train_kernel
from ..loop import CALL_SECONDS, Job, Report, TrainingDiverged, fit_call_steps
from .tables import SharedTables, attach, close_quietly, free_bytes, no_room

log = logging.getLogger("kgnum")

# Test hook (fault injection), read by the parent when training starts:
#   KGNUM_TEST_FAULT="raise:<worker>:<n>"  that worker raises RuntimeError after its n-th kernel call
#   KGNUM_TEST_FAULT="kill:<worker>:<n>"   that worker sends itself SIGKILL after its n-th call
FAULT_ENV = "KGNUM_TEST_FAULT"

POLL_SECONDS = 0.05  # parent's wake-up period for time budget, checkpoints and dead workers
STOP_GRACE_SECONDS = 5.0  # after close sets the stop flag, how long workers get before SIGTERM
_TABLE_KEYS = ("ent", "rel", "ent_st", "rel_st")


@dataclass(frozen=True)
class _WorkerJob:
    """What every worker needs besides the shared blocks (picklable for spawn)."""
    model: str
    terms: tuple
    params: StepParams
    n_workers: int
    seed: int
    max_steps: int | None  # over all workers; None: until stopped
    fault: tuple | None  # (action, worker, n_calls) from KGNUM_TEST_FAULT
    parent_pid: int  # a worker whose parent is gone (SIGKILL) stops by itself


class SharedMemoryEngine:
    """``cfg.workers`` Hogwild processes on shared-memory tables (the Engine contract)."""
    backend = "cpu"

    def __init__(self, workers: int):
        self.workers = int(workers)
        self.worker_steps = [0] * self.workers
        self.tables = SharedTables()
        self.procs: list = []
        self.conns: list = []
        self.ctx = _context()
        self.stop_flag = self.ctx.Event()
        self.go = self.ctx.Event()  # set once every worker is ready: all start together with the clock
        self.live: set = set()
        self.open_conns: set = set()
        self.closed = False

    # -- contract --------------------------------------------------------------------
    def open(self, job: Job) -> None:
        need = sum(a.nbytes for a in job.tables) + job.edges.nbytes
        free = free_bytes()
        if free is not None and need > free:  # before the compile; each block is checked again
            raise no_room(need, f"the {self.workers}-worker run's tables and edges")
        wjob = _WorkerJob(job.model, tuple(job.terms), job.params, self.workers, int(job.seed),
                          job.max_steps, _fault_from_env(), os.getpid())
        if self.ctx.get_start_method() == "fork":
            # forked workers inherit the compiled kernel; an empty range touches nothing
            train_kernel(job.model, wjob.terms)(job.tables, job.edges, *empty_range(), job.params, 0)
        for key, array in zip(_TABLE_KEYS, job.tables):
            self.tables.add(key, array)
        self.tables.add("edges", job.edges)
        reserved = self.ctx.Value("q", 0)  # steps handed out so far, over all workers
        for w in range(self.workers):
            recv, send = self.ctx.Pipe(duplex=False)
            proc = self.ctx.Process(target=_worker_main,
                                    args=(w, self.tables.specs, wjob, send, self.stop_flag, self.go, reserved),
                                    name=f"kgnum-worker-{w}", daemon=True)
            proc.start()
            send.close()  # the parent keeps only the read end: EOF once the worker is gone
            self.procs.append(proc)
            self.conns.append(recv)
        self.live = set(range(self.workers))
        self.open_conns = set(range(self.workers))
        log.debug("kgnum.shm run %s: %d workers, blocks %s", self.tables.run_id, self.workers, self.tables.names)
        ready: set = set()
        while len(ready) < self.workers:
            for w, msg in self._poll():
                if msg[0] == "ready":
                    ready.add(w)
            if not self.live:
                raise RuntimeError("kgnum workers exited before training started")
        self.go.set()

    def advance(self, max_steps: int) -> Report:
        # the workers size their own calls and take steps from the shared counter (capped by
        # the job's max_steps), so max_steps is not needed here
        return self._collect(self._poll())

    def snapshot(self, with_state: bool) -> Tables:
        a = self.tables.arrays
        return Tables(a["ent"].copy(), a["rel"].copy(), a["ent_st"].copy() if with_state else None,
                      a["rel_st"].copy() if with_state else None)

    def stop(self) -> Report:
        """Set the stop flag and collect every report until all workers have exited. Each finishes
        its kernel call first, however long it takes (a worker that dies instead is raised by
        ``_poll``): the final tables and counts include that call, and no worker still writes them."""
        self.stop_flag.set()
        messages = []
        while self.live:
            messages += self._poll()
        return self._collect(messages)

    def close(self) -> None:
        """Stop and reap every worker, unlink every block (the loop holds signals off meanwhile)."""
        if self.closed:
            return
        self.closed = True
        self.stop_flag.set()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(p.is_alive() for p in self.procs) and time.monotonic() < deadline:
            for w, conn in enumerate(self.conns):
                _drain(conn, w, self.open_conns)  # a worker blocked writing to a full pipe must get through
            mp.connection.wait([p.sentinel for p in self.procs if p.is_alive()], timeout=POLL_SECONDS)
        for sig_method in ("terminate", "kill"):
            alive = [p for p in self.procs if p.is_alive()]
            for p in alive:
                getattr(p, sig_method)()
            for p in alive:
                p.join(2.0)
        for p in self.procs:
            if p.exitcode is not None:
                p.close()
        for conn in self.conns:
            conn.close()
        self.tables.close()

    # -- parent side -----------------------------------------------------------------
    def _poll(self) -> list:
        """Wait up to POLL_SECONDS; return [(worker, message)] received. Raises on a failed worker."""
        mp.connection.wait([self.conns[w] for w in self.open_conns] + [self.procs[w].sentinel for w in self.live],
                           timeout=POLL_SECONDS)
        out = []
        for w in sorted(self.live):
            exited = self.procs[w].exitcode is not None  # read before draining: no message lost
            for msg in _drain(self.conns[w], w, self.open_conns):
                if msg[0] == "error":
                    raise _worker_error(w, msg[1])
                if msg[0] == "diverged":
                    raise TrainingDiverged(f"worker {w}: {msg[1]}")
                out.append((w, msg))
            if exited:
                code, pid = self.procs[w].exitcode, self.procs[w].pid
                if code < 0:
                    raise RuntimeError(f"kgnum worker {w} (pid {pid}) was killed by signal "
                                       f"{_signal_name(-code)}; training stopped")
                if code > 0:
                    raise RuntimeError(f"kgnum worker {w} (pid {pid}) exited with code {code} "
                                       f"without reporting an error; training stopped")
                self.live.discard(w)
        return out

    def _collect(self, messages: list) -> Report:
        steps = positives = 0
        loss = 0.0
        for w, msg in messages:
            if msg[0] == "progress":
                _, n_steps, n_pos, n_loss = msg
                steps += n_steps
                positives += n_pos
                loss += n_loss
                self.worker_steps[w] += n_steps
        return Report(steps, positives, loss, finished=not self.live)


def _context():
    """fork on Linux (workers inherit the compiled kernels), spawn elsewhere."""
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if sys.platform.startswith("linux") and "fork" in methods else "spawn")


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


# -- worker ---------------------------------------------------------------------------

def _worker_main(w: int, specs: dict, job: _WorkerJob, conn, stop, go, reserved) -> None:
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
    except ZeroDivisionError:
        code = 1
        _send_quietly(conn, ("diverged", "division by zero in the training step"))
    except BaseException:
        code = 1
        _send_quietly(conn, ("error", traceback.format_exc()))
    finally:
        arrays.clear()  # views first, or close() fails with BufferError
        for shm in handles:
            close_quietly(shm)  # close only: the parent owns and unlinks the blocks
        conn.close()
    if code:
        sys.exit(code)  # exit code 1 without multiprocessing printing the traceback again


def _send_quietly(conn, msg) -> None:
    try:
        conn.send(msg)
    except Exception:
        pass


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


def _train_worker(w: int, a: dict, job: _WorkerJob, conn, stop, go, reserved) -> None:
    kernel = train_kernel(job.model, job.terms)  # already compiled when forked; compiled here under spawn
    seed_kernel_rng(job.seed + 1000 * (w + 1))
    tables = Tables(*(a[key] for key in _TABLE_KEYS))
    edges, batch = a["edges"], job.params.batch
    n_train = edges.shape[0]
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
            want = int(min(steps_per_call, math.ceil((order.size - pos) / batch)))
            n_steps = _reserve(reserved, want, job.max_steps)
            if n_steps == 0:
                return
            end = min(order.size, pos + n_steps * batch)
            t0 = time.perf_counter()
            loss, chunk_index = kernel(tables, edges, order, pos, end, job.params, chunk_index)
            steps_per_call = fit_call_steps(steps_per_call, time.perf_counter() - t0,
                                            math.ceil(order.size / batch), CALL_SECONDS)
            conn.send(("progress", n_steps, end - pos, float(loss)))  # the loop checks the loss
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
