"""``kgnum tune``: the study runs within its budget, writes a loadable best.json, errors are one line."""
from __future__ import annotations

import builtins
import json
import time

import pytest

import kgnum
from kgnum.cli import main
from kgnum.tune import parse_space

pytest.importorskip("optuna")  # installed by `make test` (the `tune` extra); kept optional for users


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "study"
    started = time.perf_counter()
    code = main(["tune", "--dataset", "synthetic", "--model", "DistMult", "--time-budget", "16",
                 "--trials", "4", "--workers", "1", "--space", "dim=16|32", "--out", str(out)])
    return code, out, time.perf_counter() - started


def test_tune_writes_a_best_config_that_trains(study, tmp_path, capsys):
    code, out, seconds = study
    assert code == 0
    assert seconds < 16 + 40  # the budget is wall clock for the whole study (plus start-up, compilation)
    summary = json.loads((out / "study.json").read_text())
    assert 2 <= len(summary["trials"]) <= 4  # --trials 4, fewer when the budget runs out first
    best = json.loads((out / "best.json").read_text())
    complete = [t for t in summary["trials"] if t["state"] == "complete"]
    assert max(t["valid_mrr"] for t in complete) == summary["best_valid_mrr"]
    assert best["dim"] in (16, 32) and best["model"] == "DistMult"
    lines = (out / "trials.tsv").read_text().strip().splitlines()
    assert lines[0].startswith("trial\tstate\tvalid_mrr") and len(lines) == 1 + len(summary["trials"])
    assert (out / "journal.log").exists()
    # the trial configs are sampled, not all the same
    assert len({json.dumps(t["config"], sort_keys=True) for t in summary["trials"]}) == len(summary["trials"])
    # best.json feeds kgnum train --config and kgnum.train(**json)
    emb = kgnum.train(kgnum.synthetic(), **{**best, "progress": False})
    assert emb.config["lr"] == best["lr"] and emb.dim == best["dim"]
    model = tmp_path / "m"
    assert main(["train", "--dataset", "synthetic", "--config", str(out / "best.json"), "--no-progress",
                 "--eval-split", "none", "--save", str(model)]) == 0
    assert json.loads((model / "config.json").read_text())["config"]["lr"] == best["lr"]


def test_the_first_trial_is_the_models_defaults(study):
    _, out, _ = study
    first = json.loads((out / "study.json").read_text())["trials"][0]["config"]
    assert first["lr"] == 0.1 and first["gamma"] == 143.0 and first["adv_temp"] == 2.0


@pytest.mark.parametrize("spec, words", [("lr=1:0.1", "LOW < HIGH"), ("colour=1:2", "cannot be searched"),
                                         ("lr", "NAME=LOW:HIGH"), ("dim=a|b", "positive integers"),
                                         ("lr=0:1", "0 < LOW")])
def test_bad_search_space_is_one_line_naming_the_flag(spec, words, tmp_path, capsys):
    with pytest.raises(ValueError, match=words):
        parse_space("ComplEx", [spec])
    assert main(["tune", "--dataset", "synthetic", "--model", "ComplEx", "--time-budget", "10",
                 "--space", spec, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--space" in err


def test_missing_optuna_says_how_to_install(monkeypatch, tmp_path, capsys):
    real_import = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name == "optuna" or name.startswith("optuna."):
            raise ImportError("No module named 'optuna'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    assert main(["tune", "--dataset", "synthetic", "--model", "ComplEx", "--time-budget", "10",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'kgnum[tune]'" in err and len(err.splitlines()) == 1
