"""The engine contract: every training backend must pass this file.

Each test runs once per engine in ``ENGINES``: the in-process engine (``cpu``,
one worker), the shared-memory engine (``cpu``, two Hogwild processes) and
the Dask engine (a LocalCluster of two worker processes, one part each) and
the GPU engine on two emulated devices (NumPy standing in for CuPy). New
engines join by adding a parameter here.

The adversarial-filters baseline is an engine of the run loop too (``adversarial``).

Covered: exact ``max_steps`` / ``epochs``; the time budget; early stopping
keeps the best tables; the same ``TrainStats`` keys from every engine and in
every checkpoint; checkpoints load and resume continues; any numeric blow-up
(NaN or inf loss, a division by zero in the kernel) stops with one error
naming the flags and leaves the last checkpoint intact; SIGINT / SIGTERM
leave no process or shared-memory block behind. Also: ``import kgnum``
imports no engine and the package has no import cycle; unavailable backends
are a clear error.
"""
from __future__ import annotations

import ast
import dataclasses
import logging
import multiprocessing as mp
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

import kgnum
from kgnum import loop
from kgnum.cli import main
from kgnum.embeddings import Embeddings
from kgnum.loop import TrainingDiverged, TrainStats
from kgnum.shm import block_names

from conftest import SHARED_CLUSTER, SharedCluster

ENGINES = [pytest.param(dict(backend="cpu", workers=1), id="cpu-1"),
           pytest.param(dict(backend="cpu", workers=2), id="cpu-2"),
           pytest.param(dict(backend="dask", workers=2, client=SHARED_CLUSTER), id="dask-2"),  # 2 processes
           pytest.param(dict(backend="gpu", workers=2, gpus="numpy:2"), id="gpu-numpy-2"),  # emulated devices
           # the adversarial-filters baseline (PyTorch around the Numba chunk kernel): r0 and r1 as the
           # sensitive relations of the synthetic graph
           pytest.param(dict(backend="cpu", workers=1, debias="r0,r1", debias_method="adversarial"),
                        id="adversarial")]
OPTS = dict(dim=32, neg=32, neg_chunk=32, batch=128, lr=0.1, gamma=8.0, adv=True, seed=0, progress=False)
GRAPH = dict(n_entities=400, n_relations=8, n_train=8000, n_valid=300, n_test=300, seed=2)
STATS_KEYS = {f.name for f in dataclasses.fields(TrainStats)}


@pytest.fixture(scope="module")
def kg():
    return kgnum.synthetic(**GRAPH)


@pytest.fixture(autouse=True)
def nothing_left_behind():
    yield
    assert block_names(os.getpid()) == []
    shared = SharedCluster.pids()  # the shared Dask cluster's workers stay up between tests
    assert [c for c in mp.active_children() if c.pid not in shared] == []


@pytest.mark.parametrize("engine", ENGINES)
def test_max_steps_and_epochs_are_exact(kg, engine):
    stats = kgnum.train(kg, "TransE_l2", max_steps=37, **engine, **OPTS).train_stats
    assert stats["steps"] == 37 and sum(stats["worker_steps"]) == 37
    assert len(stats["worker_steps"]) == engine["workers"]
    per_epoch = -(-kg.train.shape[0] // OPTS["batch"])
    stats = kgnum.train(kg, "TransE_l2", epochs=3, **engine, **OPTS).train_stats
    assert stats["steps"] == 3 * per_epoch
    assert stats["backend"] == engine["backend"] and stats["workers"] == engine["workers"]
    assert set(stats) == STATS_KEYS


@pytest.mark.parametrize("engine", ENGINES)
def test_time_budget_is_respected(kg, engine):
    stats = kgnum.train(kg, "TransE_l2", time_budget=1.5, valid_every=50, patience=10**6, **engine, **OPTS).train_stats
    assert 1.5 <= stats["train_seconds"] < 2.5, stats["train_seconds"]
    assert stats["valid_seconds"] > 0 and stats["valid_history"]
    assert stats["triples_per_second"] == pytest.approx(stats["positives"] / stats["train_seconds"])


@pytest.mark.parametrize("engine", ENGINES)
def test_early_stopping_keeps_the_best_tables(kg, engine):
    # valid MRR plateaus within a few validations at this lr and then only wanders; the epoch limit
    # lies far beyond, so the run ends by patience, not by ending on its best validation (60 epochs
    # did that once: the threaded engines' validations vary from run to run)
    emb = kgnum.train(kg, "TransE_l2", epochs=600, valid_every=15, patience=2,
                      **engine, **{**OPTS, "lr": 0.5})
    stats = emb.train_stats
    history = stats["valid_history"]
    best = max(history, key=lambda h: h["valid_mrr"])
    assert stats["best_step"] == best["step"] and stats["best_valid_mrr"] == best["valid_mrr"]
    assert stats["restored_best"] and best["step"] < stats["steps"]  # it did stop early and restore
    from kgnum.eval import link_prediction_metrics, without_relations

    valid = without_relations(kg, kg.valid, engine.get("debias", "").split(",") if engine.get("debias") else [])
    again = link_prediction_metrics(emb.score_candidates, valid, kg.all_triples(), kg.n_entities,
                                    kg.n_relations)["mrr"]  # a debiased run's relations are not validated
    assert again == pytest.approx(best["valid_mrr"], abs=1e-6)


def test_restored_best_model_is_the_model_of_its_step(kg):
    """The tables early stopping keeps come with their own step's Adagrad state, not the last step's:
    the model is the one a run of exactly best_step steps gives (one worker is deterministic), so a
    resume from it continues from that step. (The last state was kept: larger, a lower learning rate.)"""
    opts = {**OPTS, "lr": 0.5}
    emb = kgnum.train(kg, "TransE_l2", epochs=600, valid_every=15, patience=2, backend="cpu", workers=1, **opts)
    stats = emb.train_stats
    assert stats["restored_best"] and stats["best_step"] < stats["steps"]
    short = kgnum.train(kg, "TransE_l2", max_steps=stats["best_step"], valid_every=0, backend="cpu", workers=1,
                        **opts)
    np.testing.assert_array_equal(emb.entity, short.entity)
    np.testing.assert_array_equal(emb.entity_state, short.entity_state)
    np.testing.assert_array_equal(emb.relation_state, short.relation_state)


@pytest.mark.parametrize("engine", ENGINES)
def test_checkpoints_load_and_resume_continues(kg, engine, tmp_path):
    out = tmp_path / "model"
    first = kgnum.train(kg, "TransE_l2", epochs=3, save=str(out), checkpoint_every=0.01, **engine, **OPTS)
    saved = kgnum.load(str(out))
    assert set(saved.train_stats) == STATS_KEYS and not saved.train_stats["checkpoint"]
    np.testing.assert_array_equal(saved.entity, first.entity)
    assert saved.entity_state.sum() > 0
    resumed = kgnum.train(kg, "TransE_l2", epochs=3, init=saved, **engine, **OPTS)
    a, b = first.train_stats, resumed.train_stats
    assert b["steps"] == 2 * a["steps"] and b["legs"] == 2  # the counters continue
    # the Adagrad state carries on: it only grows, row by row (a restarted state would not)
    assert (resumed.entity_state >= saved.entity_state).all() and (resumed.relation_state >= saved.relation_state).all()
    assert resumed.entity_state.sum() > 1.2 * saved.entity_state.sum()
    # and the tables: the second leg's loss is below the first's (by 13-20% here; how much depends
    # on the schedule for the dask engine, whose rounds follow the measured speed)
    second = (b["loss_sum"] - a["loss_sum"]) / (b["positives"] - a["positives"])
    assert second < a["mean_loss"], {
        "first_mean": a["mean_loss"], "second_mean": second, "workers": (a["workers"], b["workers"]),
        "worker_steps": (a["worker_steps"], b["worker_steps"]), "seconds": (a["train_seconds"], b["train_seconds"]),
        "valid": (a["valid_history"], a["restored_best"])}
    if engine.get("debias_method") == "adversarial":
        return  # its MRR is not monotone in training here (the discriminators pull against it)
    if b["best_step"] is not None and b["best_step"] <= a["steps"]:
        # no validation of the second leg beat the first's best: the loaded (best) tables are kept
        np.testing.assert_array_equal(resumed.entity, first.entity)
        assert b["best_valid_mrr"] == a["best_valid_mrr"]
    else:
        assert kgnum.evaluate(resumed, kg)["mrr"] > kgnum.evaluate(first, kg)["mrr"]


def _poisoned(kg, value):
    """Fresh tables with one entity row set to ``value``: the loss stops being finite."""
    emb = kgnum.train(kg, "TransE_l2", max_steps=1, **{**OPTS, "lr": 1e-9})
    emb.entity[: kg.n_entities // 2] = value
    return emb


BLOWUPS = {
    "nan": lambda kg: dict(init=_poisoned(kg, np.nan)),
    "inf": lambda kg: dict(init=_poisoned(kg, 1e38)),
    "zero-division": lambda kg: dict(gamma=1e30),
}


@pytest.mark.parametrize("blowup", sorted(BLOWUPS))
@pytest.mark.parametrize("engine", ENGINES)
def test_numeric_blowup_stops_with_one_error_and_keeps_the_checkpoint(kg, engine, blowup, tmp_path):
    out = tmp_path / "model"
    good = kgnum.train(kg, "TransE_l2", max_steps=20, save=str(out), **engine, **OPTS)
    with pytest.raises(TrainingDiverged) as info:
        kgnum.train(kg, "TransE_l2", time_budget=30, save=str(out), checkpoint_every=0.01,
                    **engine, **{**OPTS, **BLOWUPS[blowup](kg)})
    message = str(info.value)
    assert "diverged" in message and "--lr" in message and "--gamma" in message, message
    assert "\n" not in message
    back = kgnum.load(str(out))
    np.testing.assert_array_equal(back.entity, good.entity)
    assert sorted(os.listdir(tmp_path)) == ["model"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cli_blowup_is_one_line_without_traceback(workers, capsys):
    code = main(["train", "--dataset", "synthetic", "--model", "TransE_l2", "--gamma", "1e30",
                 "--max-steps", "2000", "--dim", "16", "--no-progress", "--workers", workers])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "--gamma" in err, err


# a long run in a fresh Python process, to be stopped by a signal: Python's own SIGINT handler
# even where the test runner was started with SIGINT ignored (a background job), since what is
# tested is kgnum's clean-up on KeyboardInterrupt
_INTERRUPTIBLE = """
import signal, sys, kgnum
signal.signal(signal.SIGINT, signal.default_int_handler)
kg = kgnum.synthetic(**{graph})
try:
    kgnum.train(kg, "TransE_l2", time_budget=60, save=sys.argv[1], checkpoint_every=0.05, **{engine}, **{opts})
    text = "finished"
except BaseException as e:
    text = f"{{type(e).__name__}}: {{e}}"
open(sys.argv[2], "w").write(text)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("engine", ENGINES)
def test_signals_leave_nothing_behind(kg, engine, signum, tmp_path):
    out, result = tmp_path / "ckpt", tmp_path / "result.txt"
    own = {k: v for k, v in engine.items() if k != "client"}  # the child starts its own cluster
    script = _INTERRUPTIBLE.format(graph=GRAPH, engine=own, opts=OPTS)
    driver = subprocess.Popen([sys.executable, "-c", script, str(out), str(result)])
    try:
        deadline = time.monotonic() + 150  # past the dask engine's own start-up limit (START_TIMEOUT, 120 s)
        while not (out / "config.json").exists():
            if driver.poll() is not None:  # the run ended on its own: say how
                pytest.fail(f"the run exited ({driver.returncode}) before its first checkpoint: "
                            f"{result.read_text() if result.exists() else 'no result written'}")
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.05)
        time.sleep(0.3)
        children = psutil.Process(driver.pid).children(recursive=True)
        os.kill(driver.pid, signum)
        code = driver.wait(60)
        assert code == 0, f"the run exited ({code}): {result.read_text() if result.exists() else 'no result written'}"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    text = result.read_text()
    assert text.startswith("TrainingInterrupted" if signum == signal.SIGTERM else "KeyboardInterrupt"), text
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {[' '.join(p.cmdline()[:4]) for p in alive]} (the run said: {text})"
    assert block_names(driver.pid) == []
    ckpt = kgnum.load(str(out))
    assert ckpt.train_stats["checkpoint"] and ckpt.train_stats["steps"] > 0
    assert np.isfinite(ckpt.entity).all()


def _unpickle_chain(interrupt, depth=3):
    """The interrupt as raised inside Numba's unpickling helper: one SystemError per C call
    unwound, each the cause of the next."""
    error = interrupt
    for _ in range(depth):
        wrapper = SystemError("<function _numba_unpickle> returned a result with an exception set")
        wrapper.__cause__, error = error, wrapper
    return error


@pytest.mark.parametrize("cause, raised", [(loop.TrainingInterrupted("received SIGTERM"), loop.TrainingInterrupted),
                                           (KeyboardInterrupt(), KeyboardInterrupt), (None, SystemError),
                                           (_unpickle_chain(loop.TrainingInterrupted("received SIGTERM")),
                                            loop.TrainingInterrupted),
                                           (_unpickle_chain(ValueError("not an interrupt")), SystemError)],
                         ids=["sigterm", "sigint", "no-cause", "sigterm-in-unpickle", "other-in-unpickle"])
def test_an_interrupt_inside_a_compiled_call_is_still_an_interrupt(kg, monkeypatch, cause, raised):
    """A signal handler that raises inside a compiled function's call comes out of CPython as
    SystemError("... returned a result with an exception set") with the interrupt as its cause,
    or as its cause's cause when it was raised in one of Numba's Python helpers (seen with the
    adversarial baseline's kernel): the run stops as on the signal itself."""
    from kgnum.local import InProcessEngine

    calls = []
    advance = InProcessEngine.advance

    def interrupted(self, max_steps):
        calls.append(1)
        if len(calls) == 3:
            error = SystemError("CPUDispatcher(<function train_range>) returned a result with an exception set")
            raise error from cause
        return advance(self, max_steps)

    monkeypatch.setattr(InProcessEngine, "advance", interrupted)
    with pytest.raises(raised) as info:
        kgnum.train(kg, "TransE_l2", time_budget=30, backend="cpu", workers=1, **OPTS)
    assert type(info.value) is raised


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, loop.TrainingInterrupted),
                                            (signal.SIGINT, KeyboardInterrupt)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_whose_exception_is_swallowed_still_stops_the_run(kg, monkeypatch, signum, raised):
    """A signal handler's exception can land in code that swallows it: dask's gc callback did,
    in a clean-clone run, and the run then trained on to its budget and returned as finished.
    Here the signal arrives inside a __del__, whose exception Python only reports."""
    from kgnum.local import InProcessEngine

    class RaisesTheSignal:
        def __del__(self):
            signal.raise_signal(signum)
            went_on.append(1)  # not reached: the handler's exception ends __del__ here

    swallowed, calls, went_on = [], [], []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_type))
    advance = InProcessEngine.advance

    def signalled(self, max_steps):
        calls.append(1)
        if len(calls) == 3:
            RaisesTheSignal()  # collected at once: the signal's exception goes to unraisablehook
        return advance(self, max_steps)

    monkeypatch.setattr(InProcessEngine, "advance", signalled)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(raised) as info:
            kgnum.train(kg, "TransE_l2", time_budget=20, backend="cpu", workers=1, **OPTS)
    finally:
        signal.signal(signal.SIGINT, old)
    assert type(info.value) is raised
    assert went_on == [], "the signal's exception was not raised in __del__"
    # Python reports an exception a __del__ (a ctypes callback of Numba's compiler, a gc callback)
    # swallows with its traceback: printed before the one-line exit, it is not reported
    assert swallowed == [], "the signal's own exception was reported"
    assert len(calls) == 3, "the run stopped right after the call the signal arrived in"


def test_an_interrupt_while_the_engine_compiles_is_still_an_interrupt(kg, monkeypatch):
    """Ctrl-C during the engine's start (where it compiles and first calls its kernel) stops the
    run as an interrupt too, with the engine closed."""
    from kgnum.local import InProcessEngine

    closed = []
    close = InProcessEngine.close

    def interrupted_open(self, job):
        raise _unpickle_chain(KeyboardInterrupt())

    def counted_close(self):
        closed.append(1)
        return close(self)

    monkeypatch.setattr(InProcessEngine, "open", interrupted_open)
    monkeypatch.setattr(InProcessEngine, "close", counted_close)
    with pytest.raises(KeyboardInterrupt) as info:
        kgnum.train(kg, "TransE_l2", time_budget=30, backend="cpu", workers=1, **OPTS)
    assert type(info.value) is KeyboardInterrupt and closed == [1]


@pytest.mark.parametrize("engine", ENGINES)
def test_progress_goes_to_the_log_without_a_bar(kg, engine, monkeypatch, caplog):
    monkeypatch.setattr(loop, "LOG_EVERY_SECONDS", 0.2)
    # the loop logs between engine calls, and a dask call is a round of ROUND_SECONDS (0.5 s): give
    # it room for several, as a busy machine slows each round (1.2 s gave one line there)
    budget = 3.0 if engine["backend"] == "dask" else 1.2
    with caplog.at_level(logging.INFO, logger="kgnum"):
        emb = kgnum.train(kg, "TransE_l2", time_budget=budget, **engine, **OPTS)
    lines = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith("step ") and "triples/s" in r.getMessage()]
    assert len(lines) >= 3 and all("loss" in line for line in lines), lines
    history = emb.train_stats["history"]
    assert len(history) == len(lines)
    assert [h["steps"] for h in history] == sorted(h["steps"] for h in history)
    assert history[-1]["steps"] == emb.train_stats["steps"]
    assert all(h["triples_per_second"] > 0 and np.isfinite(h["loss"]) for h in history)


def test_unavailable_backends_are_a_clear_error(kg, capsys):
    try:
        import cupy  # noqa: F401

        has_cupy = True
    except ImportError:
        has_cupy = False
    if not has_cupy:  # --backend gpu without CuPy: one line naming it
        with pytest.raises(ValueError, match="--backend gpu: needs CuPy.*--backend cpu"):
            kgnum.train(kg, "TransE_l2", max_steps=1, backend="gpu", **OPTS)
        assert main(["train", "--dataset", "synthetic", "--max-steps", "1", "--backend", "gpu"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--backend gpu" in err and "CuPy" in err
    with pytest.raises(ValueError, match="--backend"):
        kgnum.train(kg, "TransE_l2", max_steps=1, backend="tpu", **OPTS)


def test_import_kgnum_imports_no_engine():
    code = ("import sys, kgnum; heavy = ('dask', 'distributed', 'cupy', 'torch', 'optuna', 'sklearn', "
            "'pymetis', 'kgnum.shm', 'kgnum.local', 'kgnum.gpu', 'kgnum.cluster'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def _imports_of(path: pathlib.Path, module: str, package_root: pathlib.Path) -> set[str]:
    """kgnum modules imported anywhere in ``path`` (module level or inside functions)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            found.add(prefix)
            found.update(f"{prefix}.{a.name}" for a in node.names)
    return {m for m in found if m == "kgnum" or m.startswith("kgnum.")}


def test_no_import_cycle_in_the_package():
    root = pathlib.Path(kgnum.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    graph = {m: {d for d in _imports_of(p, m, root) if d in modules and d != m} for m, p in modules.items()}
    # a package's __init__ importing its own submodules is not a cycle of ideas; drop parent edges
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        stack.append(m)
        for d in graph[m]:
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, cycles
