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


def test_plan_counts_the_adversarial_views():
    from kgnum.config import TrainConfig
    from kgnum.plan import plan_for

    kg = kgnum.synthetic(n_entities=2000, n_relations=6, n_train=4000, n_valid=100, n_test=100, seed=0)
    names = ",".join(kg.relation_names[:3])
    base = plan_for(kg, TrainConfig(model="TransE_l2", dim=64, max_steps=1, workers=1).validate())
    kl = plan_for(kg, TrainConfig(model="TransE_l2", dim=64, max_steps=1, workers=1, debias=names).validate())
    adv = plan_for(kg, TrainConfig(model="TransE_l2", dim=64, max_steps=1, workers=1, debias=names,
                                   debias_method="adversarial").validate())
    assert kl.peak == base.peak
    views = 4 * 2000 * 64 * 4  # the [a] view and three [s] views
    assert adv.during("train") - base.during("train") == views + plan_module.TORCH_BYTES
    assert any("3 [s] views" in what for what, *_ in adv.items)


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
