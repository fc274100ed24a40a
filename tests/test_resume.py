"""Resume: ``kgnum train --load DIR`` continues the saved run.

The saved configuration carries on (only the stopping rules are the new leg's),
explicit flags override it and are logged, the statistics accumulate, and the
dataset is matched to the model's rows by name (a relabelled copy of the same
graph resumes to the very same tables).
"""
from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

import kgnum
from kgnum.cli import main
from kgnum.data import KGDataError, load_dataset

# deliberately far from the global defaults: a resume that forgot them would show
FIRST = ["train", "--dataset", "synthetic", "--model", "DistMult", "--dim", "24", "--neg", "16",
         "--neg-chunk", "16", "--batch", "64", "--lr", "0.07", "--gamma", "5", "--adv", "--adv-temp", "0.5",
         "--reg-coef", "1e-4", "--reg-norm", "2", "--valid-every", "40", "--patience", "50",
         "--valid-sample", "100", "--seed", "3", "--max-steps", "120", "--workers", "1", "--no-progress",
         "--eval-split", "none"]
STOPPING = ("max_steps", "epochs", "time_budget")


def _saved(path):
    with open(path / "config.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    path = tmp_path_factory.mktemp("first") / "model"
    assert main(FIRST + ["--save", str(path)]) == 0
    return path, _saved(path)


def test_resume_without_model_flags_continues_the_saved_configuration(first, tmp_path, caplog):
    path, meta = first
    out = tmp_path / "resumed"
    with caplog.at_level(logging.INFO, logger="kgnum"):
        assert main(["train", "--load", str(path), "--dataset", "synthetic", "--max-steps", "80",
                     "--no-progress", "--eval-split", "none", "--save", str(out)]) == 0
    resumed = _saved(out)
    for key, value in meta["config"].items():
        if key not in STOPPING:
            assert resumed["config"][key] == value, key
    assert resumed["config"]["max_steps"] == 80
    assert resumed["model"] == "DistMult" and resumed["dim"] == 24
    a, b = meta["train_stats"], resumed["train_stats"]
    assert b["steps"] == a["steps"] + 80 == 200
    assert b["positives"] == a["positives"] + 80 * 64
    assert b["train_seconds"] > a["train_seconds"] and b["legs"] == 2
    assert b["valid_history"][: len(a["valid_history"])] == a["valid_history"]
    assert [h["step"] for h in b["valid_history"][len(a["valid_history"]):]] == [160, 200]
    assert "overrides" not in caplog.text and "saved configuration" in caplog.text


def test_explicit_flags_override_and_are_logged(first, tmp_path, caplog):
    path, meta = first
    out = tmp_path / "resumed"
    with caplog.at_level(logging.INFO, logger="kgnum"):
        assert main(["train", "--load", str(path), "--dataset", "synthetic", "--max-steps", "10",
                     "--lr", "0.03", "--no-progress", "--eval-split", "none", "--save", str(out)]) == 0
    config = _saved(out)["config"]
    assert config["lr"] == 0.03 and config["neg"] == 16 and config["batch"] == 64
    assert "--lr 0.07 -> 0.03" in caplog.text


def test_resume_refuses_another_model_or_dim(first, capsys):
    path, _ = first
    for flags in (["--model", "ComplEx"], ["--dim", "32"]):
        assert main(["train", "--load", str(path), "--dataset", "synthetic", "--max-steps", "1",
                     "--no-progress", *flags]) == 2
        assert "cannot resume" in capsys.readouterr().err


def test_api_resume_continues_the_configuration(small_kg):
    first = kgnum.train(small_kg, "ComplEx", dim=16, neg=8, neg_chunk=8, batch=32, lr=0.05, max_steps=20,
                        progress=False)
    again = kgnum.train(small_kg, init=first, max_steps=5, progress=False)
    assert {k: v for k, v in again.config.items() if k not in STOPPING} == \
        {k: v for k, v in first.config.items() if k not in STOPPING}
    assert again.train_stats["steps"] == 25


@pytest.fixture(scope="module")
def umls(data_dir, tmp_path_factory):
    return load_dataset(f"{data_dir}/umls", cache_dir=str(tmp_path_factory.mktemp("cache")))


def _relabelled_copy(kg, folder, seed):
    """The same graph, same line order, in udd_hrt with ids drawn by a permutation."""
    rng = np.random.default_rng(seed)
    new_ent, new_rel = rng.permutation(kg.n_entities), rng.permutation(kg.n_relations)
    folder.mkdir()
    for kind, names, new in (("entities", kg.entity_names, new_ent), ("relations", kg.relation_names, new_rel)):
        (folder / f"{kind}.dict").write_text("".join(f"{new[i]}\t{names[i]}\n" for i in range(len(names))))
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_text(
            "".join(f"{new_ent[h]}\t{new_rel[r]}\t{new_ent[t]}\n" for h, r, t in kg.split(split).tolist()))
    return load_dataset(str(folder), format="udd_hrt", cache_dir=str(folder / "cache"))


def test_resume_on_a_relabelled_copy_trains_the_same_rows(umls, tmp_path):
    opts = dict(dim=16, neg=16, neg_chunk=16, batch=128, lr=0.1, gamma=6.0, workers=1, progress=False)
    start = kgnum.train(umls, "TransE_l2", max_steps=30, **opts)
    copy = _relabelled_copy(umls, tmp_path / "udd", seed=5)
    assert list(copy.entity_names) != list(umls.entity_names)
    on_original = kgnum.train(umls, init=start, max_steps=30, progress=False)
    on_copy = kgnum.train(copy, init=start, max_steps=30, progress=False)
    assert list(on_copy.entity_names) == list(start.entity_names)  # rows keep the model's order
    np.testing.assert_array_equal(on_copy.entity, on_original.entity)
    np.testing.assert_array_equal(on_copy.relation, on_original.relation)
    metrics = [{k: v for k, v in kgnum.evaluate(emb, kg).items() if k != "eval_seconds"}
               for emb, kg in ((on_copy, copy), (on_original, umls))]
    assert metrics[0] == metrics[1]


def test_resume_on_a_grown_graph_appends_rows_and_keeps_the_old_ones(umls, tmp_path, caplog):
    start = kgnum.train(umls, "TransE_l2", max_steps=20, dim=8, workers=1, progress=False)
    folder = tmp_path / "grown"
    folder.mkdir()
    extra = "brand_new_thing\tisa\tcell\nbrand_new_thing\tnew_relation\tanother_new_thing\n"
    for split in ("train", "valid", "test"):
        lines = open(f"{umls.source}/{split}.txt").read()
        (folder / f"{split}.txt").write_text(lines + (extra if split == "train" else ""))
    import logging

    with caplog.at_level(logging.INFO, logger="kgnum"):
        grown = kgnum.train(load_dataset(str(folder)), init=start, max_steps=3, lr=1e-12, progress=False)
    assert "adds 2 entities and 1 relations" in caplog.text
    # ids stay stable for old names; old rows moved only by (almost zero) training
    assert list(grown.entity_names[: start.n_entities]) == list(start.entity_names)
    assert list(grown.entity_names[start.n_entities:]) == ["brand_new_thing", "another_new_thing"]
    assert list(grown.relation_names[-1:]) == ["new_relation"]
    np.testing.assert_allclose(grown.entity[: start.n_entities], start.entity, atol=1e-6)
    np.testing.assert_array_equal(grown.entity_state[: start.n_entities] >= start.entity_state, True)
    new_rows = grown.entity[start.n_entities:]
    assert new_rows.shape == (2, 8) and np.isfinite(new_rows).all() and np.abs(new_rows).sum() > 0
    assert np.isfinite(grown.score("brand_new_thing", "new_relation", "another_new_thing")).all()
    # evaluation still refuses a name the model does not have
    with pytest.raises(KGDataError, match="brand_new_thing"):
        kgnum.evaluate(start, load_dataset(str(folder)))


def test_a_worse_leg_keeps_the_earlier_best_tables(tmp_path, caplog):
    """The loaded tables are the first leg's best validated ones: a second leg that only validates
    worse (a learning rate that wrecks the tables) must return them and report the first leg's
    best step, not its own best."""
    kg = kgnum.synthetic(n_entities=200, n_relations=5, n_train=4000, n_valid=200, n_test=200, seed=2)
    opts = dict(dim=32, valid_every=20, workers=1, progress=False, seed=0)
    first = kgnum.train(kg, "TransE_l2", max_steps=60, save=str(tmp_path / "a"), **opts)
    best = first.train_stats["best_step"]
    with caplog.at_level(logging.INFO, logger="kgnum"):
        second = kgnum.train(kg, "TransE_l2", init=kgnum.load(str(tmp_path / "a")), max_steps=40,
                             **{**opts, "lr": 50.0})
    own = [h["valid_mrr"] for h in second.train_stats["valid_history"] if h["step"] > first.train_stats["steps"]]
    assert own and max(own) < first.train_stats["best_valid_mrr"], (own, first.train_stats["best_valid_mrr"])
    assert second.train_stats["best_step"] == best and second.train_stats["best_valid_mrr"] == \
        first.train_stats["best_valid_mrr"]
    np.testing.assert_array_equal(second.entity, first.entity)
    assert "the loaded tables are the best so far" in caplog.text
    # another valid set: the first leg's MRR does not compare, the loaded tables are not kept by it
    other = kgnum.KnowledgeGraph(kg.name, kg.train, kg.valid[:100], kg.test, kg.entity_names, kg.relation_names)
    third = kgnum.train(other, "TransE_l2", init=kgnum.load(str(tmp_path / "a")), max_steps=40,
                        **{**opts, "lr": 50.0})
    assert third.train_stats["best_step"] > first.train_stats["steps"]


def test_a_sampled_valid_set_is_the_same_whatever_the_order_of_its_lines(tmp_path):
    """--valid-sample picks the same valid triples from a copy whose valid lines are in another
    order, so a worse second leg on it still keeps the first leg's best tables."""
    kg = kgnum.synthetic(n_entities=200, n_relations=5, n_train=4000, n_valid=200, n_test=200, seed=2)
    opts = dict(dim=32, valid_every=20, valid_sample=100, workers=1, progress=False, seed=0)
    first = kgnum.train(kg, "TransE_l2", max_steps=60, save=str(tmp_path / "a"), **opts)
    order = np.random.default_rng(1).permutation(kg.valid.shape[0])
    reordered = kgnum.KnowledgeGraph(kg.name, kg.train, kg.valid[order], kg.test, kg.entity_names,
                                     kg.relation_names)
    second = kgnum.train(reordered, "TransE_l2", init=kgnum.load(str(tmp_path / "a")), max_steps=40,
                         **{**opts, "lr": 50.0})
    assert second.train_stats["best_step"] == first.train_stats["best_step"]
    np.testing.assert_array_equal(second.entity, first.entity)


def test_a_grown_graph_does_not_keep_the_loaded_tables_by_an_mrr_over_fewer_entities(tmp_path, caplog):
    """The first leg's valid MRR ranked its own entities; on a graph that adds entities every
    valid triple has more candidates, so that MRR does not compare: the grown run's best tables and
    best MRR are its own (the loaded tables kept as the best would return the new rows as drawn, and
    report a best MRR that no validation on this graph measured)."""
    kg = kgnum.synthetic(n_entities=200, n_relations=5, n_train=4000, n_valid=200, n_test=200, seed=2)
    opts = dict(dim=32, valid_every=20, workers=1, progress=False, seed=0)
    first = kgnum.train(kg, "TransE_l2", max_steps=60, save=str(tmp_path / "a"), **opts)
    rng = np.random.default_rng(0)
    new = rng.integers(kg.n_entities, kg.n_entities + 300, size=(3000, 2))
    extra = np.stack([new[:, 0], rng.integers(0, kg.n_relations, 3000), new[:, 1]], axis=1)
    names = np.array(list(kg.entity_names) + [f"new{i}" for i in range(300)], dtype=object)
    order = rng.permutation(kg.train.shape[0] + extra.shape[0])  # and in another line order
    bigger = kgnum.KnowledgeGraph(kg.name, np.concatenate([kg.train, extra])[order].astype(np.int32), kg.valid,
                                  kg.test, names, kg.relation_names)
    with caplog.at_level(logging.INFO, logger="kgnum"):
        second = kgnum.train(bigger, "TransE_l2", init=kgnum.load(str(tmp_path / "a")), max_steps=40,
                             **{**opts, "lr": 1e-12})  # a leg that cannot do better than the loaded tables
    stats = second.train_stats
    own = [h for h in stats["valid_history"] if h["step"] > first.train_stats["steps"]]
    assert own and stats["best_step"] > first.train_stats["steps"], stats["best_step"]
    assert stats["best_valid_mrr"] == max(h["valid_mrr"] for h in own)
    assert "the loaded tables are the best so far" not in caplog.text


def test_a_worker_count_from_a_bigger_machine_is_capped_to_this_ones_cores(first, caplog):
    """The saved configuration holds the worker count of the machine that trained (by default
    every core it had): resumed on a smaller one, the run uses the cores it may use, and says so."""
    from kgnum.config import available_cores

    path, meta = first
    init = kgnum.load(str(path))
    init.config = dict(init.config, workers=available_cores() + 62)
    kg = kgnum.synthetic()
    with caplog.at_level(logging.INFO, logger="kgnum"):
        emb = kgnum.train(kg, init=init, max_steps=5, progress=False)
    assert emb.config["workers"] == available_cores()
    assert f"--workers {available_cores() + 62} -> {available_cores()}" in caplog.text
    kept = kgnum.train(kg, init=kgnum.load(str(path)), max_steps=5, progress=False)  # a count that fits stays
    assert kept.config["workers"] == meta["config"]["workers"]


def test_resume_on_a_graph_without_the_saved_eval_excluded_relation(small_kg, tmp_path, write_tsv):
    """A model saved with --eval-exclude-relations resumes on a subset of its graph that lacks that
    relation (as kgnum eval of the same model and graph does); it was refused as a flag naming no
    relation of the graph, a flag this run was never given."""
    rel = str(small_kg.relation_names[0])
    emb = kgnum.train(small_kg, "DistMult", dim=8, max_steps=20, valid_every=0, workers=1, progress=False,
                      eval_exclude_relations=rel)
    path = emb.save(str(tmp_path / "model"))
    kept = {s: small_kg.split(s)[small_kg.split(s)[:, 1] != 0] for s in ("train", "valid", "test")}
    folder = write_tsv(dataclasses.replace(small_kg, **kept), tmp_path / "without")
    sub = load_dataset(str(folder), unseen="skip", cache_dir=str(tmp_path / "cache"))
    assert rel not in set(map(str, sub.relation_names))
    out = kgnum.train(sub, init=kgnum.load(path), max_steps=5, valid_every=0, workers=1, progress=False)
    assert out.train_stats["steps"] == 25
    assert main(["eval", "--load", path, "--data-path", str(folder), "--unseen", "skip"]) == 0
    assert main(["train", "--load", path, "--data-path", str(folder), "--unseen", "skip", "--max-steps", "5",
                 "--no-progress", "--eval-split", "test"]) == 0
