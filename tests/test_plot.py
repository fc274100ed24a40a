"""``kgnum plot``: curves of saved runs."""
from __future__ import annotations

import pytest

import kgnum
from kgnum.cli import main

pytest.importorskip("matplotlib")


def test_plot_draws_saved_runs_side_by_side(small_kg, tmp_path, capsys):
    paths = []
    for lr in (0.05, 0.2):
        path = tmp_path / f"lr{lr}"
        kgnum.train(small_kg, "TransE_l2", time_budget=2.5, valid_every=20, patience=100, dim=16, lr=lr,
                    workers=1, progress=False, save=str(path))
        assert kgnum.load(str(path)).train_stats["valid_history"]
        paths.append(str(path))
    out = tmp_path / "curves.png"
    assert main(["plot", *paths, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    empty = tmp_path / "empty"
    kgnum.load(paths[0]).__class__("TransE_l2", kgnum.load(paths[0]).entity, kgnum.load(paths[0]).relation,
                                   {}).save(str(empty))
    assert main(["plot", str(empty), "--out", str(out)]) == 2
    assert "no training history" in capsys.readouterr().err
