"""The Dask engine beyond the engine contract (tests/test_engines.py runs that on a shared cluster).

Real processes throughout: LocalClusters of worker processes, and ``dask scheduler`` / ``dask
worker`` started from the command line on 127.0.0.1. Covered: a part's store in process (negatives
uniform over all entities through the pool, deltas reaching their owner); accuracy against the
single-machine engine at the same epochs; a worker killed mid-run; every worker lost, then
``--resume``; a worker running another kgnum; the KL term on parts.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import kgnum
from kgnum.cli import main
from kgnum.cluster import store
from kgnum.cluster.checkpoint import assemble
from kgnum.cluster.engine import FAULT_ENV, ClusterLost
from kgnum.cluster.partition import partition
from kgnum.kernels.step import step_params

from conftest import SHARED_CLUSTER

GRAPH = dict(n_entities=400, n_relations=8, n_train=8000, n_valid=300, n_test=300, seed=2)
OPTS = dict(model="TransE_l2", dim=32, neg=32, neg_chunk=32, batch=128, lr=0.1, gamma=8.0, seed=0,
            valid_every=0, progress=False)


@pytest.fixture(scope="module")
def kg():
    return kgnum.synthetic(**GRAPH)


def _specs(kg, parts=2, weight=None, terms=(), term_params=()):
    p = partition(kg, parts, "metis")
    owner = p.owner
    rel_owner = np.zeros(kg.n_relations, np.int32)
    params = step_params(64, 32, 32, None, 8.0, 0.1, 1.0, term_params)
    specs = []
    for q in range(parts):
        e = kg.train[p.part_edges[q]].astype(np.int32)
        read = np.unique(np.concatenate([e[:, 0], e[:, 2]]).astype(np.int64))
        specs.append(store.PartSpec("t", q, parts, "TransE_l2", terms, params, 0,
                                    np.flatnonzero(owner == q).astype(np.int64), read[owner[read] != q], owner,
                                    rel_owner, e, weight, "", None))
    return specs


def test_pool_makes_negatives_uniform_over_all_entities(kg, monkeypatch):
    """A part holds only some rows; its negatives must still be uniform (or degree-proportional)
    over every entity, as in a single-process run."""
    monkeypatch.setattr(store, "POOL_ROWS", 40)  # fewer pool slots than outside entities: drawn
    rng = np.random.default_rng(0)
    for weight in (None, rng.uniform(0.5, 3.0, kg.n_entities)):
        spec = _specs(kg, weight=weight)[0]
        spec = spec._replace(boundary=spec.boundary[: spec.boundary.size // 3])  # more entities outside
        spec = spec._replace(edges=spec.edges[np.isin(spec.edges[:, 2], np.concatenate([spec.own, spec.boundary]))])
        own = spec.own
        s = store.PartStore(spec, np.zeros((own.size, 4), np.float32), np.zeros(own.size, np.float32),
                            np.zeros((kg.n_relations, 4), np.float32), np.zeros(kg.n_relations, np.float32))
        assert not s.pool_fixed
        want = np.ones(kg.n_entities) if weight is None else weight
        want = want / want.sum()
        got = np.zeros(kg.n_entities)
        for _ in range(400):  # expected probability of each global id, over pool draws
            cdf = s.params.neg_cdf
            p_local = np.diff(cdf, prepend=0.0) / cdf[-1]
            np.add.at(got, s.gids, p_local)
            s.requests()  # a later round's pool, installed as train would
            pool, _ = s.wants.pop()
            s.gids[s.fixed.size:] = pool
        got /= 400
        inside = np.concatenate([spec.own, spec.boundary])
        np.testing.assert_allclose(got[inside], want[inside], rtol=1e-9)  # exact for held rows
        outside = np.setdiff1d(np.arange(kg.n_entities), inside)
        assert abs(got[outside].sum() - want[outside].sum()) < 1e-9
        # each outside entity: its share within sampling noise of 400 draws of 40 slots
        assert np.abs(got[outside] / want[outside] - 1).mean() < 0.25


def test_deltas_reach_the_owner_and_rows_come_back(kg):
    """One round by hand: part 0 trains, its changes to part 1's rows arrive there, part 1 serves
    the updated rows back."""
    specs = _specs(kg)
    dim = 8
    rng = np.random.default_rng(1)
    entity = rng.normal(size=(kg.n_entities, dim)).astype(np.float32)
    relation = rng.normal(size=(kg.n_relations, dim)).astype(np.float32)
    stores = [store.PartStore(s, entity[s.own], np.zeros(s.own.size, np.float32), relation.copy(),
                              np.zeros(kg.n_relations, np.float32)) for s in specs]
    requests = [s.requests() for s in stores]
    responses = [stores[q].serve([requests[1 - q][q]], None) for q in range(2)]
    out = stores[0].train(5, [responses[1][0]])
    report, msg = out[0], out[2]
    assert report["steps"] == 5 and report["positives"] == 5 * 64 and msg.ids.size > 0
    sent = {int(i): row for i, row in zip(msg.ids, msg.rows)}
    before = stores[1].entity[:stores[1].n_own].copy()
    back = stores[1].serve([msg], None)[0]
    at = np.searchsorted(stores[1].own, msg.ids)
    np.testing.assert_allclose(stores[1].entity[at], before[at] + msg.rows, rtol=1e-6)
    # part 0 now gets part 1's rows with its own changes applied
    local = stores[0].wants[0][1][1]  # the rows part 0 asked part 1 for, for its next install
    for g, row in zip(stores[0].gids[local], back.rows):
        expect = entity[g] + sent.get(int(g), 0)
        np.testing.assert_allclose(row, expect, rtol=1e-5, atol=1e-6)
    assert msg.rel_ids.size == 0  # part 0 owns every relation here: nothing to push


def test_two_workers_match_the_single_machine_engine(kg):
    single = kgnum.train(kg, epochs=40, workers=1, **OPTS)
    dask = kgnum.train(kg, epochs=40, backend="dask", workers=2, client=SHARED_CLUSTER, **OPTS)
    a, b = kgnum.evaluate(single, kg)["mrr"], kgnum.evaluate(dask, kg)["mrr"]
    assert a > 0.2 and abs(a - b) < 0.02, (a, b)
    assert dask.entity.shape == single.entity.shape and np.isfinite(dask.entity).all()
    log = dask.train_stats["engine_log"]
    assert log[-1]["epoch"] >= 39 and all(len(e["parts"]) == 2 for e in log)
    part = log[-1]["parts"][0]
    assert part["bytes_pulled"] > 0 and part["bytes_pushed"] > 0 and part["triples_per_second"] > 0


def test_debias_runs_on_parts(kg):
    """The KL term reads value entities of other parts: they are held on every part."""
    planted = kgnum.synthetic(**{**GRAPH, "n_train": 4000})
    rel = str(planted.relation_names[0])
    emb = kgnum.train(planted, epochs=3, backend="dask", workers=2, client=SHARED_CLUSTER, debias=rel,
                      debias_top_m=5, **{**OPTS, "valid_every": 0})
    assert np.isfinite(emb.entity).all() and emb.train_stats["steps"] > 0


class _CreateFails:
    """The shared cluster, but the connection to the scheduler drops as the parts are created."""
    def __getattr__(self, name):
        return getattr(SHARED_CLUSTER, name)

    def submit(self, fn, *args, **kw):
        if fn is store.create:
            raise OSError("lost the connection to the Dask scheduler")
        return SHARED_CLUSTER.submit(fn, *args, **kw)


def test_a_resume_that_fails_to_start_keeps_the_part_checkpoints(kg, tmp_path):
    """A resumed run starts a new set of part checkpoints in the same --checkpoint-dir; until that
    set is complete, the one it resumed from must stay whole (the run may fail on the way)."""
    parts = str(tmp_path / "parts")
    kgnum.train(kg, epochs=2, backend="dask", workers=2, client=SHARED_CLUSTER, checkpoint_dir=parts,
                part_checkpoint_every=0.01, **OPTS)
    saved = assemble(parts)
    with pytest.raises(OSError, match="scheduler"):
        kgnum.train(kg, epochs=2, init=saved, backend="dask", workers=2, client=_CreateFails(),
                    checkpoint_dir=parts, **OPTS)
    again = assemble(parts)
    np.testing.assert_array_equal(again.entity, saved.entity)
    np.testing.assert_array_equal(again.relation, saved.relation)
    np.testing.assert_array_equal(again.entity_state, saved.entity_state)
    assert again.train_stats["steps"] == saved.train_stats["steps"] > 0


def test_a_part_checkpoint_holds_the_steps_it_is_labelled_with(kg, tmp_path):
    """A resume from the part checkpoints continues from the step they are labelled with, so the label
    must count exactly the steps in their rows. A part writes its file between two of its own rounds,
    not necessarily those of the round that asked for it (rounds are pipelined), so each file counts
    the steps its part had trained (the label was the steps reported when the checkpoint was asked
    for: a round or two low). One part trains deterministically, so the rows at label L are those of a
    run of L steps."""
    from kgnum.train import initial_embeddings, make_engine, make_job, resolve_config

    parts = str(tmp_path / "parts")
    options = {k: v for k, v in OPTS.items() if k not in ("model", "progress")}
    cfg = resolve_config(OPTS["model"], {**options, "backend": "dask", "parts": 1, "checkpoint_dir": parts,
                                         "part_checkpoint_every": 1e-6, "max_steps": 1200}, None)
    engine = make_engine(cfg, kg, SHARED_CLUSTER)
    try:
        engine.open(make_job(kg, cfg, initial_embeddings(kg, cfg, None)))
        # rounds of 300 steps, each submitted while the one before is in flight; every one checkpoints
        reported = [engine.advance(300 if k == 0 else 600).steps for k in range(4)] + [engine.stop().steps]
    finally:
        engine.close()
    assert reported == [0, 300, 300, 300, 300]
    saved = assemble(parts)
    label = saved.train_stats["steps"]
    assert label in (600, 900, 1200)  # the last round's file: after rounds 2, 3 or 4 had trained
    again = kgnum.train(kg, max_steps=label, backend="dask", parts=1, client=SHARED_CLUSTER, **OPTS)
    np.testing.assert_array_equal(again.entity, saved.entity)
    np.testing.assert_array_equal(again.entity_state, saved.entity_state)


def test_a_killed_worker_is_replaced_from_its_checkpoint(kg, monkeypatch, caplog, tmp_path):
    base = dict(epochs=30, backend="dask", local_cluster=2, part_checkpoint_every=0.01, **OPTS)
    undisturbed = kgnum.train(kg, **base)
    monkeypatch.setenv(FAULT_ENV, "1:20")  # part 1's worker kills itself after its 20th round
    with caplog.at_level(logging.WARNING, logger="kgnum"):
        emb = kgnum.train(kg, checkpoint_dir=str(tmp_path / "parts"), **base)
    warned = [r.getMessage() for r in caplog.records if "is gone" in r.getMessage()]
    assert len(warned) == 1 and "part 1" in warned[0] and "steps" in warned[0] and "tcp://" in warned[0]
    assert np.isfinite(emb.entity).all() and emb.entity.shape == (kg.n_entities, OPTS["dim"])
    a, b = kgnum.evaluate(undisturbed, kg)["mrr"], kgnum.evaluate(emb, kg)["mrr"]
    assert abs(a - b) < 0.02, (a, b)
    stats = emb.train_stats  # the lost worker's steps stay counted; its part went to the survivor or
    assert len(stats["worker_steps"]) in (2, 3) and sum(stats["worker_steps"]) == stats["steps"]  # a new one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask(*args, env=None):
    exe = os.path.join(os.path.dirname(sys.executable), "dask")
    return subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _stop(procs):
    """Workers first (procs[1:]), then the scheduler (procs[0])."""
    for group in (procs[1:], procs[:1]):
        for p in group:
            if p.poll() is None:
                p.terminate()
        for p in group:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _start_cluster(procs: list, workers: int = 2) -> str:
    """Start ``dask scheduler`` and ``workers`` ``dask worker`` processes on 127.0.0.1 (appended to
    ``procs``, the scheduler first) and wait until every worker has joined; return the address. A
    scheduler that exits at once (its port taken between choosing and binding) is started again on
    another port."""
    from distributed import Client

    for _ in range(3):
        port = _free_port()
        scheduler = _dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
        time.sleep(2)
        if scheduler.poll() is None:
            break
    procs.append(scheduler)
    address = f"tcp://127.0.0.1:{port}"
    procs += [_dask("worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1")
              for _ in range(workers)]
    with Client(address, timeout=60) as c:
        c.wait_for_workers(workers, timeout=60)
    return address


@pytest.fixture
def command_line_cluster():
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1: (address, procs)."""
    procs = []
    try:
        address = _start_cluster(procs)
        yield address, procs
    finally:
        _stop(procs)


def test_train_through_a_command_line_scheduler(command_line_cluster, write_tsv, tmp_path, capsys):
    address, procs = command_line_cluster
    data = write_tsv(kgnum.synthetic(**GRAPH), tmp_path / "graph")
    out = tmp_path / "model"
    code = main(["train", "--data-path", str(data), "--model", "TransE_l2", "--dim", "32", "--neg", "32",
                 "--neg-chunk", "32", "--batch", "128", "--epochs", "10", "--backend", "dask", "--scheduler",
                 address, "--save", str(out), "--no-progress", "--json", str(tmp_path / "run.json")])
    assert code == 0, capsys.readouterr().err
    import json

    run = json.loads((tmp_path / "run.json").read_text())
    assert run["backend"] == "dask" and run["workers"] == 2 and run["test"]["mrr"] > 0.1
    emb = kgnum.load(str(out))  # the ordinary saved format
    assert emb.entity.shape[0] == GRAPH["n_entities"]
    assert main(["eval", "--load", str(out), "--data-path", str(data)]) == 0
    assert all(p.poll() is None for p in procs)  # the user's cluster keeps running


def test_losing_every_worker_keeps_the_checkpoints_and_resume_continues(command_line_cluster, write_tsv,
                                                                        tmp_path, capsys):
    address, procs = command_line_cluster
    data = write_tsv(kgnum.synthetic(**GRAPH), tmp_path / "graph")
    parts = tmp_path / "parts"
    flags = ["--data-path", str(data), "--model", "TransE_l2", "--dim", "32", "--neg", "32", "--neg-chunk", "32",
             "--batch", "128", "--backend", "dask", "--scheduler", address, "--checkpoint-dir", str(parts),
             "--part-checkpoint-every", "0.01", "--no-progress", "--valid-every", "0"]
    kg = kgnum.load_dataset(str(data))
    import threading

    def kill_workers():
        while not (parts / "part_1.npz").exists():
            time.sleep(0.05)
        time.sleep(1.5)
        for p in procs[1:]:
            p.kill()

    killer = threading.Thread(target=kill_workers)
    killer.start()
    with pytest.raises(ClusterLost) as info:
        kgnum.train(kg, "TransE_l2", dim=32, neg=32, neg_chunk=32, batch=128, time_budget=60, backend="dask",
                    scheduler=address, checkpoint_dir=str(parts), part_checkpoint_every=0.01, valid_every=0,
                    progress=False)
    killer.join()
    message = str(info.value)
    assert "every Dask worker is gone" in message and "--resume" in message and str(parts) in message
    saved = assemble(str(parts))
    assert saved.train_stats["steps"] > 0 and np.isfinite(saved.entity).all()
    # a new cluster, the same checkpoints
    _stop(procs)
    procs.clear()
    address = _start_cluster(procs)  # the fixture stops these
    flags[flags.index("--scheduler") + 1] = address
    code = main(["train", *flags, "--epochs", "2", "--resume", "--json", str(tmp_path / "run.json")])
    assert code == 0, capsys.readouterr().err
    import json

    run = json.loads((tmp_path / "run.json").read_text())
    assert run["steps"] > saved.train_stats["steps"]  # continued from the checkpoints' step


def test_a_worker_with_another_kgnum_is_named_before_training(tmp_path, write_tsv, capsys):
    fake = tmp_path / "fake" / "kgnum"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '0.0.0-other'\n")
    (fake / "cluster").mkdir()
    (fake / "cluster" / "__init__.py").write_text("")
    real = os.path.dirname(os.path.dirname(kgnum.__file__))
    (fake / "cluster" / "store.py").write_text(
        f"import sys; sys.path.insert(0, {real!r})\n"
        "def worker_info():\n    return {'kgnum': '0.0.0-other', 'pid': 0}\n")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "fake"))
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")]
    try:
        time.sleep(2)
        procs.append(_dask("worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", env=env))
        data = write_tsv(kgnum.synthetic(**GRAPH), tmp_path / "graph")
        code = main(["train", "--data-path", str(data), "--max-steps", "5", "--dim", "16", "--backend", "dask",
                     "--scheduler", address, "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert "tcp://127.0.0.1" in err and "0.0.0-other" in err and kgnum.__version__ in err
    finally:
        _stop(procs)


def test_bad_cluster_flags_are_one_line_errors(kg, capsys):
    for flags, needle in ((["--scheduler", "tcp://127.0.0.1:1"], "--scheduler"),
                          (["--backend", "dask", "--scheduler", "tcp://127.0.0.1:1", "--local-cluster", "2"],
                           "--local-cluster"),
                          (["--backend", "dask", "--parts", "0"], "--parts"),
                          (["--resume"], "--resume")):
        code = main(["train", "--dataset", "synthetic", "--max-steps", "1", "--no-progress", *flags])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and needle in err, (flags, err)


def test_losing_the_scheduler_is_a_clear_error(command_line_cluster, tmp_path, monkeypatch):
    address, procs = command_line_cluster
    # the client tries to reconnect for this long before it gives up (30 s by default)
    monkeypatch.setattr("kgnum.cluster.engine.SCHEDULER_TIMEOUT", 3.0)
    parts = tmp_path / "parts"
    import threading

    def kill_scheduler():
        while not (parts / "part_1.npz").exists():
            time.sleep(0.05)
        time.sleep(1.5)
        procs[0].kill()

    killer = threading.Thread(target=kill_scheduler)
    killer.start()
    started = time.monotonic()
    with pytest.raises(ClusterLost) as info:
        kgnum.train(kgnum.synthetic(**GRAPH), time_budget=120, backend="dask", scheduler=address,
                    checkpoint_dir=str(parts), part_checkpoint_every=0.01, **OPTS)
    killer.join()
    assert "scheduler" in str(info.value) and "--resume" in str(info.value)
    assert time.monotonic() - started < 90
    assert assemble(str(parts)).train_stats["steps"] > 0


def test_a_worker_lost_while_the_parts_are_created_is_a_clear_error(kg, monkeypatch):
    """The engine's internal "parts lost" signal must not escape from its start: the CLI prints a
    ClusterLost as one line, anything else as a traceback."""
    from kgnum.cluster import engine as dask_engine

    wait = dask_engine.DaskEngine._wait

    def lost_at_start(self, futures, timeout=None):
        if timeout == dask_engine.START_TIMEOUT:
            self.client.cancel(futures)
            raise dask_engine._PartsLost({1: "tcp://127.0.0.1:1"})
        return wait(self, futures, timeout=timeout)

    monkeypatch.setattr(dask_engine.DaskEngine, "_wait", lost_at_start)
    with pytest.raises(ClusterLost, match=r"while the parts were created \(part 1 on tcp://127.0.0.1:1\)"):
        kgnum.train(kg, epochs=1, backend="dask", workers=2, client=SHARED_CLUSTER, **OPTS)
