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
    # the step compiled first: the budget is wall clock, and a first trial that compiled it would
    # take most of this small one (the test alone, or first in a session)
    kgnum.train(kgnum.synthetic(), "DistMult", dim=16, max_steps=1, workers=1, valid_every=0, progress=False)
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
    assert not {"time_budget", "workers", "epochs", "max_steps"} & set(best), best  # settings, not a trial's budget
    emb = kgnum.train(kgnum.synthetic(), **{**best, "progress": False, "max_steps": 50})
    assert emb.config["lr"] == best["lr"] and emb.dim == best["dim"]
    model = tmp_path / "m"
    assert main(["train", "--dataset", "synthetic", "--config", str(out / "best.json"), "--no-progress",
                 "--eval-split", "none", "--save", str(model), "--max-steps", "50"]) == 0
    assert json.loads((model / "config.json").read_text())["config"]["lr"] == best["lr"]


def test_the_first_trial_is_the_models_defaults(study):
    _, out, _ = study
    first = json.loads((out / "study.json").read_text())["trials"][0]["config"]
    # --space dim=16|32: dim 32, and the gamma a plain DistMult run uses at dim 32 (143 is dim 400's)
    assert first["lr"] == 0.1 and first["dim"] == 32 and first["adv_temp"] == 2.0
    assert first["gamma"] == pytest.approx((143.0 + 2) * 32 / 400 - 2)


def test_the_first_trial_is_what_a_plain_run_uses_for_every_model():
    from kgnum.config import default_gamma, model_default
    from kgnum.kernels.registry import get_model, model_names
    from kgnum.tune import default_space, first_trial

    for model in model_names():
        first = first_trial(model, default_space(model))
        assert first["dim"] == model_default(model, "dim"), model  # RESCAL and TransR: 100, not 400
        assert first["gamma"] == pytest.approx(model_default(model, "gamma")), model
    # a space without the default dim: the gamma a plain run uses at the dim the trial takes
    first = first_trial("ComplEx", parse_space("ComplEx", ["dim=100|200"]))
    assert first["dim"] == 200 and first["gamma"] == pytest.approx(default_gamma(get_model("ComplEx"), 200))


def test_a_rerun_into_the_same_out_adds_to_the_study(study, tmp_path, capsys):
    import shutil

    _, first_out, _ = study
    out = tmp_path / "again"
    shutil.copytree(first_out, out)
    before = json.loads((out / "study.json").read_text())
    assert main(["tune", "--dataset", "synthetic", "--model", "DistMult", "--time-budget", "4", "--trials", "1",
                 "--workers", "1", "--space", "dim=16|32", "--space", "lr=0.001:0.002", "--out", str(out)]) == 0
    after = json.loads((out / "study.json").read_text())
    assert after["trials"][:len(before["trials"])] == before["trials"]  # the earlier trials are kept
    assert len(after["trials"]) > len(before["trials"])
    assert after["best_valid_mrr"] >= before["best_valid_mrr"]
    lines = (out / "trials.tsv").read_text().strip().splitlines()
    assert len(lines) == 1 + len(after["trials"])
    capsys.readouterr()
    assert main(["tune", "--dataset", "synthetic", "--model", "TransE_l2", "--time-budget", "8", "--trials", "2",
                 "--workers", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds a study of DistMult" in err, err


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


def test_a_failed_trial_is_recorded_and_the_study_goes_on(tmp_path, capsys):
    """A trial whose sampled settings fail (here a dim whose run does not fit in memory; a numeric
    blow-up alike) is one failed row; the study samples on and writes its best. It ended the whole
    study with that trial's error, and the trials finished before it were not written."""
    out = tmp_path / "study"
    huge = 10 ** 10  # entity rows of 10^10 floats: the memory plan refuses the trial before it starts
    assert main(["tune", "--dataset", "synthetic", "--model", "TransE_l2", "--time-budget", "12", "--trials", "4",
                 "--workers", "1", "--space", f"dim={huge}|16", "--out", str(out)]) == 0
    captured = capsys.readouterr().out
    summary = json.loads((out / "study.json").read_text())
    states = [t["state"] for t in summary["trials"]]
    assert "failed" in states and len(states) == 4, states
    assert "trial   1 failed" in captured and "lower --dim" in captured
    assert json.loads((out / "best.json").read_text())["dim"] == 16
    assert (out / "trials.tsv").read_text().count("\tfailed\t") == states.count("failed")


def test_a_failing_first_trial_ends_the_study_in_one_line(tmp_path, capsys):
    """The first trial is what a plain run uses: when even it fails, so would the others; the
    study stops with its error, and the failed trial is still written."""
    out = tmp_path / "study"
    assert main(["tune", "--dataset", "synthetic", "--model", "TransE_l2", "--time-budget", "12", "--trials", "4",
                 "--workers", "1", "--space", f"dim={10 ** 10}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lower --dim" in err, err
    assert [t["state"] for t in json.loads((out / "study.json").read_text())["trials"]] == ["failed"]


@pytest.mark.parametrize("flags, words", [(["--time-budget", "nan"], "--time-budget nan"),
                                          (["--time-budget", "inf"], "--time-budget inf"),
                                          (["--time-budget", "30", "--seed", "-1"], "--seed -1"),
                                          (["--time-budget", "30", "--seed", str(2 ** 40)], "--seed")])
def test_bad_budget_or_seed_is_one_line_naming_the_flag(flags, words, tmp_path, capsys):
    # nan passed the budget check (then "cannot convert float NaN to integer"), inf ended in a
    # traceback, and a seed Optuna's sampler refuses said "Seed must be between ..." without the flag
    assert main(["tune", "--dataset", "synthetic", "--model", "TransE_l2", "--trials", "1", *flags,
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def test_the_closing_line_counts_this_runs_trials_and_seconds(study, tmp_path, capsys, monkeypatch):
    """A rerun into the same --out says how many trials it ran and for how long, not the study's
    total against the budget; an interrupted study says how long it really ran."""
    import shutil

    import optuna

    _, first_out, _ = study
    out = tmp_path / "again"
    shutil.copytree(first_out, out)
    capsys.readouterr()
    assert main(["tune", "--dataset", "synthetic", "--model", "DistMult", "--time-budget", "4", "--trials", "1",
                 "--workers", "1", "--space", "dim=16|32", "--out", str(out)]) == 0
    assert "\n1 trials in " in capsys.readouterr().out

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(optuna.study.Study, "optimize", interrupted)
    assert main(["tune", "--dataset", "synthetic", "--model", "DistMult", "--time-budget", "600",
                 "--workers", "1", "--out", str(tmp_path / "cut")]) == 130
    line = next(l for l in capsys.readouterr().out.splitlines() if "trials in" in l)
    assert line.startswith("0 trials in ") and "in 600 s" not in line and "(interrupted)" in line, line
