"""kgnum plan: the memory a run needs, before it starts; kgnum train refuses a run that does not fit."""
from __future__ import annotations

import json

import pytest

import kgnum
from kgnum import plan as plan_module
from kgnum.cli import main
from kgnum.plan import plan


def test_plan_counts_the_tables_and_the_engine_copies():
    one = plan(1_000_000, 100, 10_000_000, "TransE_l2", 100, workers=1)
    two = plan(1_000_000, 100, 10_000_000, "TransE_l2", 100, workers=2)
    tables = 1_000_000 * (400 + 4) + 100 * (400 + 4)
    assert one.peak > tables and two.during("train") > one.during("train") + tables  # the shared copy
    assert two.peak == max(two.during("train"), two.during("eval"))
    wide = plan(1_000_000, 100, 10_000_000, "TransE_l2", 400, workers=2)
    assert wide.during("train") - two.during("train") >= 2 * 1_000_000 * 300 * 4  # both copies grow with dim
    rescal = plan(1000, 50, 10_000, "RESCAL", 100)
    assert any("50 x 10000 relation" in what for what, *_ in rescal.items)  # RESCAL: dim x dim relations
    dask = plan(1_000_000, 100, 10_000_000, "TransE_l2", 100, workers=4, backend="dask")
    assert dask.per_worker is not None and dask.per_worker < dask.peak


def test_plan_counts_the_local_cluster_processes_train_starts(small_kg):
    from kgnum.config import TrainConfig
    from kgnum.plan import plan_for

    cfg = lambda **kw: TrainConfig(model="TransE_l2", dim=64, max_steps=10, backend="dask", **kw).validate()  # noqa: E731
    four, one = plan_for(small_kg, cfg(local_cluster=4, workers=1)), plan_for(small_kg, cfg(workers=1))
    assert four.workers == 4 and one.workers == 1
    assert four.during("train") > one.during("train")


def test_plan_of_a_debiased_run_takes_train_flags_and_train_refuses_what_it_refuses(tmp_path, monkeypatch,
                                                                                    capsys, write_tsv):
    """kgnum plan with a debiased run's flags counts what that run holds (attribute rows,
    PyTorch and the adversarial views), and kgnum train refuses the adversarial run on a machine
    where the plan of the KL run of the same graph and size fits."""
    from kgnum.bias.planted import planted_bias_graph

    kg = planted_bias_graph(n_persons=3000)
    folder = write_tsv(kg, tmp_path / "graph")
    flags = ["--data-path", str(folder), "--dim", "64", "--workers", "1", "--debias", "gender,member_of"]

    def peak(*extra):
        out = tmp_path / "plan.json"
        assert main(["plan", *flags, *extra, "--json", str(out)]) == 0
        capsys.readouterr()
        return json.loads(out.read_text())["peak_bytes"]

    basic = peak()
    attributes = peak("--attribute-vectors")
    kl, adversarial = peak("--debias-weight", "gender=2"), peak("--debias-method", "adversarial")
    assert kl == basic < attributes  # attribute rows and twin triples; the KL term holds nothing
    assert adversarial - kl > 100 * 1024 ** 2  # PyTorch (and the views)
    assert main(["plan", "--entities", "100", "--relations", "3", "--edges", "1000", "--attribute-vectors",
                 "--debias", "gender"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--attribute-vectors" in err and "dataset" in err

    free = int((kl + 50 * 1024 ** 2) / plan_module.HEADROOM)
    monkeypatch.setattr(plan_module, "available_bytes", lambda: free)
    out = tmp_path / "fits.json"
    assert main(["plan", *flags, "--json", str(out)]) == 0 and json.loads(out.read_text())["fits"]
    run = ["train", *flags, "--max-steps", "2", "--no-progress", "--eval-split", "none"]
    assert main(run + ["--debias-method", "adversarial"]) == 2  # refused before it starts
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "available" in err and "--force" in err, err


def test_cli_plan_from_counts_and_from_a_dataset(tmp_path, capsys, small_kg, write_tsv):
    out = tmp_path / "plan.json"
    assert main(["plan", "--entities", "5000000", "--relations", "1000", "--edges", "50000000", "--dim", "100",
                 "--workers", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "planned peak" in text and "MemAvailable" in text
    data = json.loads(out.read_text())
    assert data["peak_bytes"] > 5_000_000 * 400 * 2 and data["free_bytes"] > 0 and "fits" in data
    folder = write_tsv(small_kg, tmp_path / "graph")
    assert main(["plan", "--data-path", str(folder), "--model", "ComplEx", "--workers", "1"]) == 0
    assert f"{small_kg.n_entities:,} entities" in capsys.readouterr().out
    assert main(["plan", "--entities", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--edges" in err


def test_train_refuses_a_run_that_does_not_fit_unless_forced(small_kg, monkeypatch, tmp_path, capsys,
                                                            write_tsv):
    monkeypatch.setattr(plan_module, "available_bytes", lambda: 64 * 1024 ** 2)  # 64 MiB free
    opts = dict(dim=16, max_steps=3, workers=1, progress=False)
    with pytest.raises(MemoryError) as info:
        kgnum.train(small_kg, "TransE_l2", **opts)
    assert "MiB" in str(info.value) and "--force" in str(info.value)
    emb = kgnum.train(small_kg, "TransE_l2", force=True, **opts)
    assert emb.train_stats["steps"] == 3
    folder = write_tsv(small_kg, tmp_path / "graph")
    flags = ["train", "--data-path", str(folder), "--dim", "16", "--max-steps", "3", "--workers", "1",
             "--no-progress", "--eval-split", "none"]
    assert main(flags) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "available" in err and "--force" in err, err
    assert main(flags + ["--force"]) == 0


def test_plan_counts_the_projected_entity_table_a_pair_model_evaluates_with():
    """TransR scores candidates against the entity table projected by each relation: a copy of the
    entity table while it evaluates."""
    n, dim = 1_000_000, 64
    transr, transe = plan(n, 10, 1_000_000, "TransR", dim), plan(n, 10, 1_000_000, "TransE_l2", dim)
    relations = 10 * (4 * (dim + dim * dim) - 4 * dim)  # TransR's wider relation rows
    assert transr.during("eval") - transe.during("eval") >= n * dim * 4 + relations


def test_cli_plan_for_the_gpu_backend_plans_each_device_against_its_free_memory(tmp_path, capsys, small_kg,
                                                                               write_tsv):
    """Issue 14: the plan says what the machine has free "per device for --backend gpu" (here two
    devices emulated with NumPy: their free memory is the host's)."""
    folder = write_tsv(small_kg, tmp_path / "graph")
    out = tmp_path / "plan.json"
    assert main(["plan", "--data-path", str(folder), "--dim", "16", "--backend", "gpu", "--gpus", "numpy:2",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "on device numpy:0 (placement host)" in text and "on device numpy:1 (placement host)" in text
    devices = json.loads(out.read_text())["per_device"]
    assert [d["device"] for d in devices] == ["numpy:0", "numpy:1"]
    assert all(0 < d["bytes"] < d["free_bytes"] and d["placement"] == "host" for d in devices)
    # one device that holds everything: auto means device, which holds the tables too
    assert main(["plan", "--data-path", str(folder), "--dim", "16", "--backend", "gpu", "--gpus", "numpy:1",
                 "--json", str(out)]) == 0
    (one,) = json.loads(out.read_text())["per_device"]
    assert one["placement"] == "device" and one["bytes"] > small_kg.n_entities * 16 * 4
    assert "on device numpy:0 (placement device)" in capsys.readouterr().out
