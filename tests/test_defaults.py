"""Defaults a user gets without flags: per-model hyperparameters, early stopping, workers, the cap."""
from __future__ import annotations

import json
import logging

import pytest

import kgnum
from kgnum import config as config_module
from kgnum.cli import main
from kgnum.config import TrainConfig, available_cores, default_gamma
from kgnum.kernels.registry import get_model, model_names

SMALL = dict(dim=16, neg=16, neg_chunk=16, batch=128, workers=1, progress=False)


def test_each_model_carries_its_own_defaults_into_the_saved_config(small_kg, tmp_path):
    seen = {}
    for model in ("TransE_l2", "ComplEx", "RotatE"):
        emb = kgnum.train(small_kg, model, max_steps=2, save=str(tmp_path / model), **SMALL)
        saved = json.loads((tmp_path / model / "config.json").read_text())["config"]
        for key, value in get_model(model).defaults.items():
            if key == "gamma":  # a product model's default keeps its initial scale at this dim
                value = default_gamma(get_model(model), SMALL["dim"])
            assert saved[key] == value, (model, key)
        assert saved["adv"] is True and emb.config == saved
        seen[model] = (saved["lr"], saved["gamma"], saved["reg_coef"])
    assert len(set(seen.values())) == 3  # the models really differ
    # an explicit flag still wins over the model's default
    assert kgnum.train(small_kg, "ComplEx", max_steps=1, lr=0.5, **SMALL).config["lr"] == 0.5


def test_every_registered_model_has_complete_defaults():
    per_model = [f for f in TrainConfig.__dataclass_fields__.values() if f.metadata.get("per_model")]
    for name in model_names():
        defaults = get_model(name).defaults
        assert {f.name for f in per_model} - {"dim"} <= set(defaults), name  # dim: 400 unless a model says
        cfg = TrainConfig(model=name, max_steps=1).validate()
        assert all(getattr(cfg, f.name) is not None for f in per_model)


def test_matrix_models_default_to_a_smaller_dim(small_kg):
    assert TrainConfig(model="RESCAL", max_steps=1).validate().dim == 100
    assert TrainConfig(model="TransR", max_steps=1).validate().dim == 100
    assert TrainConfig(model="ComplEx", max_steps=1).validate().dim == 400
    assert TrainConfig(model="RESCAL", dim=32, max_steps=1).validate().dim == 32


def test_bilinear_default_gamma_keeps_the_initial_scale_at_any_dim():
    for name in ("ComplEx", "DistMult", "TransE_dot"):
        base = TrainConfig(model=name, max_steps=1).validate()
        for dim in (50, 100, 800):
            cfg = TrainConfig(model=name, dim=dim, max_steps=1).validate()
            assert (cfg.gamma + 2) / dim == pytest.approx((base.gamma + 2) / base.dim)
        assert TrainConfig(model=name, dim=100, gamma=143.0, max_steps=1).validate().gamma == 143.0
    # a margin is not a scale: distance models keep theirs
    margin = get_model("TransE_l2").defaults["gamma"]
    assert TrainConfig(model="TransE_l2", dim=100, max_steps=1).validate().gamma == margin


@pytest.fixture(scope="module")
def nations(data_dir, tmp_path_factory):
    return kgnum.load_dataset("nations", data_dir=data_dir, cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_bilinear_defaults_learn_at_a_small_dim(nations):
    """At dim 32 the dim-400 default's gamma (143) gives entries of +-4.5 and saturated scores;
    the default keeps the dim-400 scale and learns far better."""
    common = dict(dim=32, epochs=30, valid_every=0, workers=1, progress=False, seed=0)
    scaled = kgnum.evaluate(kgnum.train(nations, "DistMult", **common), nations)["mrr"]
    unscaled = kgnum.evaluate(kgnum.train(nations, "DistMult", gamma=143.0, **common), nations)["mrr"]
    assert scaled > unscaled + 0.05, (scaled, unscaled)


def test_help_lists_each_models_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for name in model_names():
        assert f"  {name} " in out
    assert "--no-adv" in out and "(default: None)" not in out


def test_early_stopping_runs_by_default_when_valid_exists(small_kg, caplog):
    with caplog.at_level(logging.INFO, logger="kgnum"):
        emb = kgnum.train(small_kg, "TransE_l2", time_budget=5, **SMALL)
    stats = emb.train_stats
    assert stats["valid_history"], "no validation by default"
    assert "validating every" in caplog.text
    # at least MIN_VALID_SECONDS of training apart, and validation a small share of the run
    times = [h["train_seconds"] for h in stats["valid_history"] if h["step"] < stats["steps"]]  # not the final
    assert all(b - a >= config_module.MIN_VALID_SECONDS * 0.8 for a, b in zip(times, times[1:])), times
    assert stats["valid_seconds"] < 0.1 * stats["train_seconds"]


def test_validations_stay_apart_when_the_engine_speeds_up(small_kg, monkeypatch):
    """The automatic interval is a number of steps chosen from the speed measured so far: an
    engine three times faster after its first seconds (a busy machine freeing up) would bring
    the next validation closer than MIN_VALID_SECONDS of training without the time floor."""
    import time

    from kgnum.local import InProcessEngine

    advance, first = InProcessEngine.advance, []

    def slow_then_fast(self, max_steps):
        t0 = time.perf_counter()
        first.append(first[0] if first else t0)
        report = advance(self, max_steps)
        if t0 - first[0] < 3.0:  # the first 3 s run at a third of the speed
            time.sleep(2 * (time.perf_counter() - t0))
        return report

    monkeypatch.setattr(InProcessEngine, "advance", slow_then_fast)
    stats = kgnum.train(small_kg, "TransE_l2", time_budget=7, **SMALL).train_stats
    times = [h["train_seconds"] for h in stats["valid_history"] if h["step"] < stats["steps"]]
    assert len(times) >= 2, times
    assert all(b - a >= config_module.MIN_VALID_SECONDS for a, b in zip(times, times[1:])), times


def test_no_validation_without_valid_triples_or_with_valid_every_0(small_kg):
    no_valid = kgnum.KnowledgeGraph("no-valid", small_kg.train, small_kg.valid[:0], small_kg.test,
                                    small_kg.entity_names, small_kg.relation_names)
    assert kgnum.train(no_valid, "TransE_l2", time_budget=3, **SMALL).train_stats["valid_history"] == []
    off = kgnum.train(small_kg, "TransE_l2", time_budget=3, valid_every=0, **SMALL).train_stats
    assert off["valid_history"] == [] and off["train_seconds"] >= 3


def test_no_stopping_rule_trains_until_early_stopping_under_the_stated_cap(small_kg, monkeypatch, caplog):
    monkeypatch.setattr(config_module, "CAP_EPOCHS", 3)
    no_valid = kgnum.KnowledgeGraph("no-valid", small_kg.train, small_kg.valid[:0], small_kg.test,
                                    small_kg.entity_names, small_kg.relation_names)
    with caplog.at_level(logging.INFO, logger="kgnum"):
        stats = kgnum.train(no_valid, "TransE_l2", **SMALL).train_stats
    per_epoch = -(-small_kg.train.shape[0] // SMALL["batch"])
    assert stats["steps"] == 3 * per_epoch  # the cap ended it
    assert "no stopping rule given" in caplog.text and "3 epochs" in caplog.text


def test_workers_default_to_the_available_cores(small_kg):
    assert TrainConfig(max_steps=1).validate().workers == available_cores()
    assert kgnum.train(small_kg, "TransE_l2", max_steps=4, dim=16, progress=False).train_stats["workers"] == \
        available_cores()
    with pytest.raises(SystemExit) as info:
        main(["train", "--dataset", "synthetic", "--max-steps", "1", "--workers", "lots"])
    assert info.value.code == 2


def test_no_adv_turns_self_adversarial_weighting_off(tmp_path):
    out = tmp_path / "m"
    assert main(["train", "--dataset", "synthetic", "--max-steps", "2", "--dim", "8", "--workers", "1",
                 "--no-adv", "--no-progress", "--eval-split", "none", "--save", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["adv"] is False


def test_config_file_is_applied_and_flags_win(tmp_path, capsys):
    cfg = tmp_path / "best.json"
    cfg.write_text(json.dumps({"model": "DistMult", "dim": 12, "lr": 0.03, "neg": 8, "neg_chunk": 8,
                               "workers": 1}))
    out = tmp_path / "m"
    assert main(["train", "--dataset", "synthetic", "--config", str(cfg), "--lr", "0.05", "--max-steps", "2",
                 "--no-progress", "--eval-split", "none", "--save", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"] == "DistMult" and saved["dim"] == 12 and saved["config"]["neg"] == 8
    assert saved["config"]["lr"] == 0.05
    cfg.write_text(json.dumps({"lr": 0.1, "learning_rate": 3}))
    assert main(["train", "--dataset", "synthetic", "--config", str(cfg), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "learning_rate" in err and len(err.strip().splitlines()) == 1


def test_automatic_validation_waits_for_a_measured_speed(small_kg, monkeypatch):
    """A model too slow to report a step before the calibration time must not get a zero rate."""
    from kgnum import loop

    monkeypatch.setattr(loop, "CALIBRATE_SECONDS", 0.0)  # calibrate at the very first report
    for workers in (1, 2):  # (two workers often report no step at first: that gave a rate of 0 and a
        # ZeroDivisionError at the first validation)
        stats = kgnum.train(small_kg, "TransE_l2", time_budget=3, **{**SMALL, "workers": workers}).train_stats
        assert stats["steps"] > 0  # and no ZeroDivisionError


def test_a_per_call_cost_of_scoring_does_not_turn_automatic_validation_off(small_kg, monkeypatch, caplog):
    """Before the first automatic validation the loop times a few queries to see whether
    validation is affordable. Each scoring call has a cost of its own (on a busy machine its
    threads start tens of ms late); timing 32 queries and scaling up counted it once per 32
    queries, not once per block as the validation pays it, and a short run on a small graph
    (every ``kgnum tune`` trial) lost its validation: the study then had no trial to keep."""
    import time

    from kgnum.embeddings import Embeddings

    score = Embeddings.score_candidates

    def late_start(self, *args, **kwargs):
        time.sleep(0.03)
        return score(self, *args, **kwargs)

    monkeypatch.setattr(Embeddings, "score_candidates", late_start)
    with caplog.at_level(logging.INFO, logger="kgnum"):
        stats = kgnum.train(small_kg, "TransE_l2", time_budget=3, **SMALL).train_stats
    assert "no validation and no early stopping" not in caplog.text
    assert stats["valid_history"]
