"""Single-process training: learning, determinism, stopping rules, save/load/resume."""
import os
import subprocess
import sys

import numpy as np
import pytest

import kgnum
from kgnum.data import load_files
from kgnum.embeddings import Embeddings

FAST = dict(dim=32, neg=32, neg_chunk=32, batch=256, lr=0.1, gamma=6.0, adv=True, workers=1, progress=False)


def test_training_beats_untrained_model_by_far(small_kg):
    untrained = kgnum.train(small_kg, "TransE_l2", max_steps=1, **FAST)
    trained = kgnum.train(small_kg, "TransE_l2", epochs=30, **FAST)
    before = kgnum.evaluate(untrained, small_kg)["mrr"]
    after = kgnum.evaluate(trained, small_kg)["mrr"]
    assert after > 3 * before and after > 0.2, (before, after)
    assert trained.train_stats["triples_per_second"] > 0


@pytest.mark.parametrize("model", ["DistMult", "ComplEx", "RotatE"])
def test_other_models_learn(small_kg, model):
    emb = kgnum.train(small_kg, model, epochs=20, **FAST)
    assert kgnum.evaluate(emb, small_kg, "valid")["mrr"] > 0.15


def test_same_seed_same_tables_different_seed_differs(small_kg):
    a = kgnum.train(small_kg, "TransE_l2", max_steps=40, seed=5, **FAST)
    b = kgnum.train(small_kg, "TransE_l2", max_steps=40, seed=5, **FAST)
    c = kgnum.train(small_kg, "TransE_l2", max_steps=40, seed=6, **FAST)
    assert np.array_equal(a.entity, b.entity) and np.array_equal(a.relation, b.relation)
    assert not np.array_equal(a.entity, c.entity)


def test_stopping_rules(small_kg):
    assert kgnum.train(small_kg, "TransE_l2", max_steps=17, **FAST).train_stats["steps"] == 17
    steps_per_epoch = -(-small_kg.train.shape[0] // FAST["batch"])
    assert kgnum.train(small_kg, "TransE_l2", epochs=2, **FAST).train_stats["steps"] == 2 * steps_per_epoch
    timed = kgnum.train(small_kg, "TransE_l2", time_budget=1.0, **FAST).train_stats
    assert 1.0 <= timed["train_seconds"] < 2.5


def test_long_time_budget_on_a_tiny_graph_runs_to_the_end():
    # thousands of sub-millisecond kernel calls: the adaptive call size must stay bounded
    tiny = kgnum.synthetic(n_entities=60, n_relations=3, n_train=500, n_valid=20, n_test=20, seed=1)
    stats = kgnum.train(tiny, "TransE_l2", time_budget=3.0, **{**FAST, "dim": 8}).train_stats
    assert stats["train_seconds"] >= 3.0 and stats["steps"] > 2000


def test_the_tables_after_the_last_validation_are_validated_too(small_kg):
    """A run that ends between two validations validates its final tables as well, and keeps the
    best of all: the training after the last validation is not dropped unseen."""
    emb = kgnum.train(small_kg, "TransE_l2", max_steps=45, valid_every=20, patience=100, **FAST)
    stats = emb.train_stats
    history = stats["valid_history"]
    assert [h["step"] for h in history] == [20, 40, 45]
    best = max(history, key=lambda h: h["valid_mrr"])
    assert stats["best_step"] == best["step"] and stats["restored_best"] == (best["step"] != 45)
    from kgnum.eval import link_prediction_metrics

    again = link_prediction_metrics(emb.score_candidates, small_kg.valid, small_kg.all_triples(),
                                    small_kg.n_entities, small_kg.n_relations)["mrr"]
    assert again == pytest.approx(best["valid_mrr"], abs=1e-6)


def test_early_stopping_keeps_best_valid_tables(small_kg):
    emb = kgnum.train(small_kg, "TransE_l2", epochs=40, valid_every=10, patience=2, **FAST)
    history = emb.train_stats["valid_history"]
    assert len(history) >= 2
    best = max(h["valid_mrr"] for h in history)
    from kgnum.eval import link_prediction_metrics

    again = link_prediction_metrics(emb.score_candidates, small_kg.valid, small_kg.all_triples(),
                                    small_kg.n_entities, small_kg.n_relations)["mrr"]
    assert again == pytest.approx(best, abs=1e-6)


def test_bad_options_name_the_flag(small_kg):
    with pytest.raises(ValueError, match="--neg-chunk"):
        kgnum.train(small_kg, "TransE_l2", max_steps=1, **{**FAST, "neg_chunk": 0})
    with pytest.raises(ValueError, match="--dim"):
        kgnum.train(small_kg, "ComplEx", max_steps=1, **{**FAST, "dim": 33})
    with pytest.raises(ValueError, match="--model"):
        kgnum.train(small_kg, "NoSuchModel", max_steps=1, **FAST)


def test_save_load_gives_same_scores_and_predictions(small_kg, tmp_path):
    emb = kgnum.train(small_kg, "ComplEx", epochs=3, **FAST)
    path = emb.save(str(tmp_path / "model"))
    back = kgnum.load(path)
    assert back.model == "ComplEx" and back.dim == 32
    triples = small_kg.test[:50]
    assert np.array_equal(emb.score(*triples.T), back.score(*triples.T))
    assert emb.predict_tail("e0", "r0", 5) == back.predict_tail("e0", "r0", 5)
    assert kgnum.evaluate(back, small_kg)["mrr"] == kgnum.evaluate(emb, small_kg)["mrr"]


def test_saved_names_come_back_exactly_whatever_they_hold(tmp_path):
    """The loaders end lines at "\\n" only, so a name may hold a lone "\\r" (even as its last
    character, next to the same name without it), a form feed, U+2028, \\x85, ...: a saved model
    gives every name its own row back."""
    odd = ["carriage\rreturn", "x\r", "x", "page\x0cbreak", "line\u2028sep", "next\x85line", "group\x1dsep"]
    rel_odd = ["r\r", "r", "r\x0b1"]
    src = tmp_path / "train.tsv"
    src.write_text("".join(f"{h}\t{r}\t{t}\n" for h, t in zip(odd, odd[1:] + odd[:1]) for r in rel_odd),
                   newline="")
    kg = load_files(str(src), cache_dir=str(tmp_path / "cache"))
    assert set(kg.entity_names) == set(odd) and set(kg.relation_names) == set(rel_odd)
    rng = np.random.default_rng(0)
    emb = Embeddings("DistMult", rng.normal(size=(kg.n_entities, 8)).astype(np.float32),
                     rng.normal(size=(kg.n_relations, 8)).astype(np.float32), {"gamma": 6.0},
                     kg.entity_names, kg.relation_names)
    back = kgnum.load(emb.save(str(tmp_path / "model")))
    assert list(back.entity_names) == list(emb.entity_names)
    assert list(back.relation_names) == list(emb.relation_names)
    assert np.array_equal(back.score(odd, "r\r", odd[::-1]), emb.score(odd, "r\r", odd[::-1]))


def test_score_candidates_agree_with_reference_scores(small_kg):
    # relations repeat out of order in the batch (TransR projects the table once per relation)
    pick = np.array([0, 1, 2, 0, 5, 1, 3, 7])
    from kgnum.kernels.registry import get_model

    for model in ("TransE_l2", "RotatE", "DistMult", "TransE_l1", "TransE_dot", "TransR"):
        entity, relation = get_model(model).init_tables(small_kg.n_entities, small_kg.n_relations, 32, 6.0, 0)
        relation = relation + np.random.default_rng(0).normal(0, 0.2, relation.shape)  # TransR: M_r != I
        emb = kgnum.Embeddings(model, entity, relation, {"gamma": 6.0})  # any tables: no training to compile
        h, r = small_kg.test[pick, 0], small_kg.test[pick, 1]
        r[4] = r[0]
        tails = emb.score_candidates(h, r, False)
        ref = emb.score(np.repeat(h, emb.n_entities), np.repeat(r, emb.n_entities),
                        np.tile(np.arange(emb.n_entities), 8)).reshape(8, -1)
        np.testing.assert_allclose(tails, ref, rtol=1e-4, atol=1e-4)
        heads = emb.score_candidates(small_kg.test[pick, 2], r, True)
        ref = emb.score(np.tile(np.arange(emb.n_entities), 8), np.repeat(r, emb.n_entities),
                        np.repeat(small_kg.test[pick, 2], emb.n_entities)).reshape(8, -1)
        np.testing.assert_allclose(heads, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", ["RotatE", "TransE_l1"])
def test_tiled_scoring_split_over_threads_gives_the_same_scores(small_kg, model):
    # tiled metrics split the query rows over as many threads as BLAS may use
    from threadpoolctl import threadpool_limits

    from kgnum.embeddings import _scoring_threads

    emb = kgnum.train(small_kg, model, max_steps=5, **FAST)
    rows = np.arange(64) % small_kg.n_entities
    rels = np.arange(64) % small_kg.n_relations
    with threadpool_limits(1):
        assert _scoring_threads(64) == 1
        one = emb.score_candidates(rows, rels, False)
    if len(os.sched_getaffinity(0)) > 1:
        assert _scoring_threads(64) > 1
    assert _scoring_threads(8) == 1  # too few rows to split
    split = emb.score_candidates(rows, rels, False)
    assert np.array_equal(split, one)
    ref = emb.score(np.repeat(rows, emb.n_entities), np.repeat(rels, emb.n_entities),
                    np.tile(np.arange(emb.n_entities), 64)).reshape(64, -1)
    np.testing.assert_allclose(split, ref, rtol=1e-4, atol=1e-4)


def test_resume_continues_and_rejects_other_model(small_kg, tmp_path):
    first = kgnum.train(small_kg, "TransE_l2", epochs=2, save=str(tmp_path / "m"), **FAST)
    saved = kgnum.load(str(tmp_path / "m"))
    assert np.array_equal(saved.entity_state, first.entity_state) and saved.entity_state.sum() > 0
    resumed = kgnum.train(small_kg, "TransE_l2", epochs=2, init=saved, **FAST)
    # continuing, not restarting: the resumed leg's loss starts where the first ended
    a, b = first.train_stats, resumed.train_stats
    assert b["steps"] == 2 * a["steps"] and b["legs"] == 2
    leg_loss = (b["loss_sum"] - a["loss_sum"]) / (b["positives"] - a["positives"])
    assert leg_loss < 0.8 * a["mean_loss"]
    assert kgnum.evaluate(resumed, small_kg)["mrr"] > kgnum.evaluate(first, small_kg)["mrr"]
    with pytest.raises(ValueError, match="cannot resume.*TransE_l2 dim 32.*--dim 64"):
        kgnum.train(small_kg, "TransE_l2", epochs=1, init=saved, **{**FAST, "dim": 64})
    with pytest.raises(ValueError, match="cannot resume.*--model DistMult"):
        kgnum.train(small_kg, "DistMult", epochs=1, init=saved, **FAST)


def test_failed_save_keeps_last_good_checkpoint(small_kg, tmp_path, monkeypatch):
    emb = kgnum.train(small_kg, "TransE_l2", max_steps=3, **FAST)
    path = str(tmp_path / "ckpt")
    emb.save(path)
    before = kgnum.load(path).entity.copy()
    emb.entity += 1.0
    calls = []
    real_save = np.save

    def failing_save(file, arr, *a, **k):
        calls.append(file)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(file, arr, *a, **k)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        emb.save(path)
    monkeypatch.undo()
    assert np.array_equal(kgnum.load(path).entity, before)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no half-written temporary left behind


def test_a_full_disk_on_save_names_the_folder_it_could_not_write(tmp_path, monkeypatch, capsys):
    """A write to a full disk fails with "[Errno 28] No space left on device" and no file name (np.save
    writes through a file object): the CLI's one line said only that, not which --save it was."""
    import errno

    from kgnum.cli import main

    path = tmp_path / "model"
    args = ["train", "--dataset", "synthetic", "--dim", "8", "--max-steps", "2", "--workers", "1",
            "--no-progress", "--eval-split", "none", "--save", str(path)]
    assert main(args) == 0
    before = kgnum.load(str(path)).entity.copy()
    capsys.readouterr()

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", full_disk)
    assert main(args + ["--seed", "1"]) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"kgnum train: error: {path}: No space left on device"], err
    np.testing.assert_array_equal(kgnum.load(str(path)).entity, before)
    assert sorted(os.listdir(tmp_path)) == ["model"]


_SIGNALLED_FINAL_SAVE = """
import os, signal, sys
import numpy as np
import kgnum.embeddings
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even under a background runner
from kgnum.cli import main

real_save, real_np_save = kgnum.embeddings.Embeddings.save, np.save
final = []

def save(self, path):  # the signal lands in the middle of the final model's write
    final.append(not self.train_stats["checkpoint"])
    return real_save(self, path)

def np_save(*a, **k):
    real_np_save(*a, **k)
    if final and final[-1]:
        final[-1] = False
        os.kill(os.getpid(), signal.{sig})

kgnum.embeddings.Embeddings.save, kgnum.embeddings.np.save = save, np_save
sys.exit(main(["train", "--dataset", "synthetic", "--dim", "8", "--max-steps", "200", "--workers", "1",
               "--valid-every", "0", "--no-progress", "--eval-split", "none", "--save", sys.argv[1],
               "--checkpoint-every", "0.01"]))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_during_the_final_save_removes_the_half_written_copy(tmp_path, sig):
    """The run loop's SIGTERM handler was gone by the time the final model was written: SIGTERM there
    (a batch system's time limit) killed the process at once, with no message, and left a hidden
    temporary copy of the model beside the last checkpoint."""
    path = tmp_path / "model"
    proc = subprocess.run([sys.executable, "-c", _SIGNALLED_FINAL_SAVE.format(sig=sig), str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, (proc.returncode, proc.stderr)
    assert proc.stderr.strip().splitlines()[-1].startswith("kgnum train: interrupted after"), proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no .model.tmp-* left
    stats = kgnum.load(str(path)).train_stats
    assert stats["checkpoint"] and stats["steps"] > 0  # the last checkpoint, intact


def test_an_interrupt_between_the_two_renames_of_a_save_keeps_the_last_model_in_place(small_kg, tmp_path,
                                                                                        monkeypatch):
    """A checkpoint moves the previous copy aside, then renames the new one into place: SIGTERM (a
    batch system's time limit) or Ctrl-C landing between the two removed the new copy and left the
    folder missing, the previous copy only under DIR.old-<hex>, where it stayed after the next save
    (and with two of them, load picked one by its random name)."""
    import kgnum.files

    emb = kgnum.train(small_kg, "TransE_l2", max_steps=3, **FAST)
    path = tmp_path / "ckpt"
    emb.save(str(path))
    before = kgnum.load(str(path)).entity.copy()
    emb.entity += 1.0
    real_rename, renames = os.rename, []

    def interrupted_rename(src, dst):
        real_rename(src, dst)
        renames.append(dst)
        if ".old-" in os.path.basename(dst):  # the previous copy moved aside: the signal lands here
            raise KeyboardInterrupt

    monkeypatch.setattr(kgnum.files.os, "rename", interrupted_rename)
    with pytest.raises(KeyboardInterrupt):
        emb.save(str(path))
    monkeypatch.undo()
    assert renames, "the save did not move the previous copy aside"
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    np.testing.assert_array_equal(kgnum.load(str(path)).entity, before)


def test_load_missing_or_broken_model_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved model"):
        kgnum.load(str(tmp_path / "nothing"))
    (tmp_path / "broken").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        kgnum.load(str(tmp_path / "broken"))


def test_similar_excludes_itself():
    ent = np.eye(4, dtype=np.float32)
    ent[1] = ent[0] * 2 + 0.01
    emb = Embeddings("DistMult", ent, np.ones((1, 4), np.float32), {"gamma": 1.0})
    top = emb.similar("e0", 2)
    assert top[0][0] == "e1" and all(name != "e0" for name, _ in top)


def test_a_pinned_openblas_without_avx512_is_named_once_before_the_run(small_kg, monkeypatch, caplog, tmp_path):
    """OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU costs about 1.5x: the run says so (and changes nothing)."""
    import logging

    from kgnum import blas

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 fma avx512f avx512dq "
                    "avx512cd avx512bw avx512vl\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert blas.AVX512 <= blas.cpu_flags(str(info)) and "avx2" in blas.cpu_flags(str(info))
    assert blas.cpu_flags(str(tmp_path / "absent")) == frozenset()
    avx512 = blas.cpu_flags(str(info))
    pinned = {"OPENBLAS_CORETYPE": "Haswell"}
    note = blas.held_back(pinned, avx512, {"Haswell"})
    assert "OPENBLAS_CORETYPE=Haswell" in note and "unset it" in note
    assert blas.held_back({}, avx512, {"Haswell"}) is None  # OpenBLAS chose: nothing to say
    assert blas.held_back(pinned, avx512 - {"avx512bw"}, {"Haswell"}) is None  # no AVX-512 kernels to gain
    assert blas.held_back({"OPENBLAS_CORETYPE": "SkylakeX"}, avx512, {"SkylakeX"}) is None

    monkeypatch.setattr(blas, "cpu_flags", lambda: avx512)
    monkeypatch.setattr(blas, "openblas_cores", lambda: {"Haswell"})
    for value in ("Haswell", None):
        if value is None:
            monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
        else:
            monkeypatch.setenv("OPENBLAS_CORETYPE", value)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kgnum"):
            kgnum.train(small_kg, "TransE_l2", max_steps=2, **FAST)
        said = [r.getMessage() for r in caplog.records if "OPENBLAS_CORETYPE" in r.getMessage()]
        assert len(said) == (1 if value else 0), said
        assert os.environ.get("OPENBLAS_CORETYPE") == value  # the variable stays the user's


def test_a_misspelled_eval_exclude_relation_stops_the_run_before_it_trains(small_kg, monkeypatch):
    """With validation off the names were first used by the evaluation after training: an hour's
    run ended in the error. The run is refused before its engine starts."""
    import sys

    train_module = sys.modules["kgnum.train"]  # the module (kgnum.train is the function)

    def no_training(*args, **kwargs):
        raise AssertionError("the run started training")

    monkeypatch.setattr(train_module, "make_engine", no_training)
    with pytest.raises(ValueError, match="--eval-exclude-relations r_typo: no such relation"):
        kgnum.train(small_kg, "TransE_l2", max_steps=10, valid_every=0, eval_exclude_relations="r1,r_typo",
                    progress=False)
