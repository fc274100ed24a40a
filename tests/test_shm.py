"""Tests of the multi-core engine kgnum.shm (shared-memory Hogwild workers).

Covered: results close to the 1-worker trainer; workers really write the
parent's shared tables; and the lifecycle of the shared blocks and worker
processes on normal exit, a worker exception, a worker killed by SIGKILL,
and SIGTERM in the parent of a fresh interpreter (SIGINT and SIGTERM for
every engine: tests/test_engines.py). After each: no
``/dev/shm/kgnum_<pid>_*`` block of that run is left, no worker is left,
the error names the worker, and the checkpoint written earlier loads. Also: a
/dev/shm too small for the tables is a clear MemoryError, and a kernel call
still running when the run stops is waited for and counted, and a row going
bad while a checkpoint copies the tables is not checkpointed.

Faults are injected with the engine's test hook ``KGNUM_TEST_FAULT``. Block
names carry the owner's pid, so checks are not confused by other runs on the
machine. One test starts a fresh interpreter (it pays a ~10 s kernel compile)
to see the resource tracker's stderr: no "leaked shared_memory" warnings.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest

import kgnum
from kgnum.config import TrainConfig
from kgnum.shm import SharedTables, attach, block_names, engine
from kgnum.shm.engine import FAULT_ENV
from kgnum.train import initial_embeddings

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="needs /dev/shm and the fork start method")

MODEL = "TransE_l2"
OPTS = dict(dim=32, neg=32, neg_chunk=32, batch=128, lr=0.1, gamma=8.0, adv=True, seed=0)
GRAPH = dict(n_entities=500, n_relations=10, n_train=10000, n_valid=200, n_test=300, seed=0)
FAULT_CALLS = 200  # kernel calls before an injected fault (~6 ms each here, capped by the shard epoch): ~1 s


@pytest.fixture(scope="module")
def kg():
    return kgnum.synthetic(**GRAPH)


@pytest.fixture(autouse=True)
def no_leftovers():
    """Every test: no block of this process's runs and no worker process survives."""
    assert block_names(os.getpid()) == []
    yield
    assert block_names(os.getpid()) == []
    assert mp.active_children() == []


def assert_checkpoint(path, kg):
    ckpt = kgnum.load(str(path))
    assert ckpt.entity.shape == (kg.n_entities, OPTS["dim"])
    assert ckpt.relation.shape == (kg.n_relations, OPTS["dim"])
    assert ckpt.entity_state.shape == (kg.n_entities,)
    assert ckpt.relation_state.shape == (kg.n_relations,)
    assert np.isfinite(ckpt.entity).all()
    return ckpt


def test_two_workers_match_one_worker(kg):
    one = kgnum.train(kg, MODEL, epochs=10, progress=False, **OPTS)
    two = kgnum.train(kg, MODEL, epochs=10, workers=2, progress=False, **OPTS)
    untrained = initial_embeddings(kg, TrainConfig(model=MODEL, epochs=1, **OPTS).validate(), None)
    mrr_one, mrr_two = kgnum.evaluate(one, kg)["mrr"], kgnum.evaluate(two, kg)["mrr"]
    mrr_untrained = kgnum.evaluate(untrained, kg)["mrr"]
    assert abs(mrr_two - mrr_one) < 0.05, (mrr_one, mrr_two)
    assert mrr_two > mrr_untrained + 0.15, (mrr_untrained, mrr_two)
    stats = two.train_stats
    assert stats["workers"] == 2
    assert stats["steps"] == one.train_stats["steps"]  # epochs -> max_steps, exact over both workers
    assert sum(stats["worker_steps"]) == stats["steps"] and min(stats["worker_steps"]) > 0
    assert 0 < stats["positives"] <= 10 * kg.train.shape[0]
    assert np.isfinite(stats["mean_loss"]) and stats["triples_per_second"] > 0


def _write_rows(spec, value):
    """Child side of the sharing test: attach by name and write in place."""
    shm, array = attach(spec)
    array[::2] = value
    del array
    shm.close()


def test_blocks_are_shared_memory():
    with SharedTables() as tables:
        view = tables.add("t", np.zeros((64, 8), np.float32))
        assert all(name.startswith(f"kgnum_{os.getpid()}_") for name in tables.names)
        assert set(block_names(os.getpid())) == set(tables.names)
        child = mp.get_context("fork").Process(target=_write_rows, args=(tables.specs["t"], 7.0))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert (view[::2] == 7.0).all() and (view[1::2] == 0.0).all()  # the child wrote our pages
        del view
    assert block_names(os.getpid()) == []


def test_workers_train_the_parents_tables(kg, monkeypatch):
    cfg = TrainConfig(model=MODEL, epochs=2, **OPTS).validate()
    init = initial_embeddings(kg, cfg, None)
    seen = {}
    snapshot = engine.SharedMemoryEngine.snapshot

    def spy(self, with_state):  # the parent's own view of the blocks, as the workers left them
        seen["block"] = self.tables.specs["ent"].name
        seen["changed"] = not np.allclose(self.tables.arrays["ent"], init.entity)
        return snapshot(self, with_state)

    monkeypatch.setattr(engine.SharedMemoryEngine, "snapshot", spy)
    emb = kgnum.train(kg, MODEL, init=init, epochs=2, workers=2, progress=False, **OPTS)
    assert seen["changed"] and seen["block"].startswith(f"kgnum_{os.getpid()}_")
    # only worker processes ran kernels: what the parent copied out of the blocks is their work
    assert not np.allclose(emb.entity, init.entity)
    assert not np.allclose(emb.relation, init.relation)
    assert (emb.entity_state > 0).mean() > 0.9 and (emb.relation_state > 0).all()
    assert min(emb.train_stats["worker_steps"]) > 0


def test_normal_exit_saves_and_cleans_up(kg, tmp_path):
    out = tmp_path / "model"
    emb = kgnum.train(kg, MODEL, epochs=3, workers=2, save=str(out), checkpoint_every=0.01,
                      valid_every=50, progress=False, **OPTS)
    ckpt = assert_checkpoint(out, kg)
    np.testing.assert_array_equal(ckpt.entity, emb.entity)
    assert ckpt.train_stats["workers"] == 2 and ckpt.train_stats["valid_history"]
    assert not [n for n in os.listdir(tmp_path) if n != "model"]  # no temporary save dirs left


@pytest.mark.parametrize("action, worker, expect", [("raise", 1, "injected fault in worker 1"),
                                                      ("kill", 0, "killed by signal SIGKILL")])
def test_worker_failure_stops_everything(kg, tmp_path, monkeypatch, action, worker, expect):
    monkeypatch.setenv(FAULT_ENV, f"{action}:{worker}:{FAULT_CALLS}")
    out = tmp_path / "ckpt"
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=f"kgnum worker {worker} ") as info:
        kgnum.train(kg, MODEL, time_budget=60, workers=2, save=str(out), checkpoint_every=0.05,
                    progress=False, **OPTS)
    assert expect in str(info.value)
    assert time.perf_counter() - start < 30  # stopped at the fault, not at the time budget
    ckpt = assert_checkpoint(out, kg)
    assert ckpt.train_stats.get("checkpoint") and ckpt.train_stats["steps"] > 0


def wait_for_checkpoint(path, proc_alive, timeout=90):
    deadline = time.monotonic() + timeout
    while not (path / "config.json").exists():
        assert proc_alive(), "training exited before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)
    time.sleep(0.2)  # let training go on past the checkpoint


SIGTERM_SCRIPT = textwrap.dedent("""
    import os, sys
    import kgnum
    from kgnum.shm import block_names
    kg = kgnum.synthetic(**{graph!r})
    opts = {opts!r}
    kgnum.train(kg, {model!r}, max_steps=300, workers=2, progress=False, **opts)
    assert block_names(os.getpid()) == []
    print("normal run ok", flush=True)
    kgnum.train(kg, {model!r}, time_budget=60, workers=2, save=sys.argv[1], checkpoint_every=0.05,
                progress=False, **opts)
""")


@pytest.mark.timeout(180)
def test_sigterm_in_parent_fresh_interpreter(kg, tmp_path):
    out = tmp_path / "ckpt"
    script = SIGTERM_SCRIPT.format(graph=GRAPH, opts=OPTS, model=MODEL)
    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoint(out, lambda: proc.poll() is None, timeout=150)
        children = psutil.Process(proc.pid).children()  # 2 workers + the resource tracker
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)  # also waits for the tracker's stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "normal run ok" in stdout
    assert proc.returncode != 0
    assert "TrainingInterrupted: received SIGTERM" in stderr, stderr
    for noise in ("leaked", "resource_tracker", "Exception ignored", "KeyError", "Process kgnum-worker"):
        assert noise not in stderr, stderr
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
    assert block_names(proc.pid) == []
    assert_checkpoint(out, kg)


SMALL_SHM_SCRIPT = textwrap.dedent("""
    import os
    import numpy as np
    import kgnum
    from kgnum.shm import SharedTables, block_names
    try:
        SharedTables().add("big", np.ones(1 << 20))  # 8 MiB into 2 MiB
        print("added")
    except MemoryError as e:
        print("block:", e)
    assert block_names(os.getpid()) == []
    kg = kgnum.synthetic(n_entities=20000, n_relations=10, n_train=40000, n_valid=100, n_test=100, seed=0)
    try:
        kgnum.train(kg, "TransE_l2", dim=64, max_steps=50, workers=2, progress=False)
        print("trained")
    except MemoryError as e:
        print("run:", e)
    assert block_names(os.getpid()) == []
""")


def _small_shm_command(size: str) -> list | None:
    """A command prefix running in a mount namespace of its own with a ``size`` /dev/shm, or None."""
    prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    mount = f"mount -t tmpfs -o size={size} tmpfs /dev/shm"
    try:
        probe = subprocess.run(prefix + ["sh", "-c", mount], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return prefix + ["sh", "-c", f'{mount} && exec "$0" "$@"'] if probe.returncode == 0 else None


@pytest.mark.timeout(180)
def test_a_full_dev_shm_is_a_clear_error_not_a_bus_error():
    """/dev/shm is 64 MB in a Docker container by default. Blocks are created sparse: the parent
    writing the tables into them past the room left died of SIGBUS ("Bus error", exit 135, no
    message, blocks left to the resource tracker). Here /dev/shm is 2 MB, in a mount namespace of
    the test's own (where unshare can make one)."""
    command = _small_shm_command("2m")
    if command is None:
        pytest.skip("cannot mount a small /dev/shm in a private mount namespace here")
    proc = subprocess.run(command + [sys.executable, "-c", SMALL_SHM_SCRIPT], capture_output=True, text=True,
                          timeout=150)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    block, run = proc.stdout.splitlines()
    assert block.startswith("block: shared memory (/dev/shm) is too small for the shared block 'big': 8.0 MiB "
                            "needed, 2.0 MiB free"), block
    assert run.startswith("run: shared memory (/dev/shm) is too small for the 2-worker run's tables and edges"), run
    assert "--workers 1" in run and "\n" not in run


def test_a_kernel_call_outlasting_the_stop_grace_is_still_counted(kg, monkeypatch):
    """A kernel call that outlasts STOP_GRACE_SECONDS (one step of a big batch or model on a busy
    machine takes seconds) when the run stops: the run waits for it. The parent stopped collecting
    reports after the grace, so the run reported fewer steps and positives than its tables had
    trained, and took the final tables while that worker was still writing them."""
    trained = mp.get_context("fork").Value("q", 0)  # positives the workers' kernels ran, over both
    real = engine.train_kernel

    def slow_kernel(model, terms=()):
        kernel = real(model, terms)

        def call(tables, edges, order, start, stop, params, chunk_index):
            out = kernel(tables, edges, order, start, stop, params, chunk_index)
            if stop > start:  # the tables are trained; the call goes on for much longer than the grace
                with trained.get_lock():
                    trained.value += stop - start
                time.sleep(0.8)
            return out
        return call

    monkeypatch.setattr(engine, "train_kernel", slow_kernel)  # forked workers inherit it
    monkeypatch.setattr(engine, "STOP_GRACE_SECONDS", 0.05)
    stats = kgnum.train(kg, MODEL, time_budget=1.2, workers=2, valid_every=0, progress=False, **OPTS).train_stats
    assert trained.value > 0
    assert stats["positives"] == trained.value
    assert sum(stats["worker_steps"]) == stats["steps"]


def test_a_row_going_bad_while_a_checkpoint_copies_the_tables_is_not_checkpointed(kg, tmp_path, monkeypatch):
    """A checkpoint copies the tables while the workers train on (Hogwild), the entity table before
    the Adagrad state, and the step updates a row's state before the row. A row going non-finite
    between the two copies came out as finite tables with a non-finite state, which was checkpointed: the
    run then stopped as diverged saying the last checkpoint was intact, and a resume from it
    diverged at once. Here the first checkpoints' copies go through, then one row goes bad (as
    a diverging worker's step would leave it) right after the entity copy of the next one."""
    out = tmp_path / "ckpt"
    real = engine.SharedMemoryEngine.snapshot
    copies = []

    def racing_snapshot(self, with_state):
        if not with_state or len(copies) < 3:
            copies.append(with_state)
            return real(self, with_state)
        a = self.tables.arrays
        entity, relation = a["ent"].copy(), a["rel"].copy()
        a["ent_st"][0] = np.inf  # the state first, then the row: as adagrad_accumulate / apply
        a["ent"][0] = np.nan
        return engine.Tables(entity, relation, a["ent_st"].copy(), a["rel_st"].copy())

    monkeypatch.setattr(engine.SharedMemoryEngine, "snapshot", racing_snapshot)
    with pytest.raises(kgnum.loop.TrainingDiverged, match="intact"):
        kgnum.train(kg, MODEL, time_budget=60, workers=2, save=str(out), checkpoint_every=0.05,
                    valid_every=0, progress=False, **OPTS)
    ckpt = assert_checkpoint(out, kg)
    assert np.isfinite(ckpt.entity_state).all() and np.isfinite(ckpt.relation_state).all()
