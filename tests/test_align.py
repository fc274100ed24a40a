"""A saved model is matched to a dataset by entity / relation NAME, never by id position.

The dataset's ids follow first appearance in its train file (or its .dict files), so the same
graph written in another line order, or relabelled, numbers its entities differently; the
metrics of a model must not change with that.
"""
import dataclasses
import json
import os
import re
import time

import numpy as np
import pytest

import kgnum
from kgnum.cli import main
from kgnum.data import KGDataError, load_dataset

SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [s for s in f.read().split("\n") if s.strip()]


def _write(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _copy_with(src, dst, edit=lambda split, lines: lines):
    """Copy the three split files of ``src`` into a new folder ``dst``, passing each through ``edit``."""
    os.makedirs(dst)
    for name in SPLIT_FILES:
        _write(os.path.join(dst, name), edit(name[:-4], _lines(os.path.join(src, name))))
    return str(dst)


def _numbers(metrics):
    """The metrics without the timing, so two runs can be compared exactly."""
    return {k: v for k, v in metrics.items() if k != "eval_seconds"}


def _named(kg, split):
    """``(n, 3)`` object array of the split's (head, relation, tail) names."""
    a = kg.split(split)
    return np.stack([kg.entity_names[a[:, 0]], kg.relation_names[a[:, 1]], kg.entity_names[a[:, 2]]], axis=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def umls_dir(data_dir):
    return os.path.join(data_dir, "umls")


@pytest.fixture(scope="module")
def umls(umls_dir, cache):
    return load_dataset(umls_dir, format="tsv", cache_dir=cache)


@pytest.fixture(scope="module")
def model(umls, tmp_path_factory):
    """(saved model dir, the model loaded back from it): trained once for the module."""
    emb = kgnum.train(umls, "TransE_l2", dim=32, neg=32, neg_chunk=32, batch=256, lr=0.1, gamma=6.0,
                      adv=True, max_steps=300, progress=False)
    path = emb.save(str(tmp_path_factory.mktemp("model") / "transe"))
    return path, kgnum.load(path)


@pytest.fixture(scope="module")
def baseline(model, umls):
    return _numbers(kgnum.evaluate(model[1], umls))


@pytest.fixture(scope="module")
def shuffled(umls_dir, tmp_path_factory):
    """(folder, test permutation): umls with the lines of every split shuffled.

    ``test.txt`` line i of the copy is line ``perm[i]`` of the original; evaluating the
    original's test rows in that order makes the pooled means sum in the same order, so
    the metrics can be compared to the last digit.
    """
    rng = np.random.default_rng(7)
    perms = {}

    def shuffle(split, lines):
        perms[split] = rng.permutation(len(lines))
        return [lines[i] for i in perms[split]]

    folder = _copy_with(umls_dir, tmp_path_factory.mktemp("shuffled") / "umls", shuffle)
    return folder, perms["test"]


def _in_order(kg, split, perm):
    return dataclasses.replace(kg, **{split: kg.split(split)[perm]})


# --------------------------------------------------------------------------- evaluation


def test_shuffled_train_file_gives_the_same_metrics(model, umls, shuffled, cache):
    folder, perm = shuffled
    kg = load_dataset(folder, format="tsv", cache_dir=cache)
    # The point of the test: the copy numbers its entities and relations differently.
    assert list(kg.entity_names) != list(umls.entity_names)
    assert list(kg.relation_names) != list(umls.relation_names)
    assert sorted(kg.entity_names) == sorted(umls.entity_names)

    expected = _numbers(kgnum.evaluate(model[1], _in_order(umls, "test", perm)))
    got = _numbers(kgnum.evaluate(model[1], kg))
    assert got == expected  # every value, pooled and head/tail, to the last digit
    assert got["mrr"] > 0.2  # and it is a trained model, not two equally random scores


def test_reversed_train_and_valid_give_the_same_metrics(model, umls, umls_dir, cache, tmp_path):
    # valid order only matters through the ids and the filter; test order is kept here
    folder = _copy_with(umls_dir, tmp_path / "umls",
                        lambda split, lines: lines if split == "test" else lines[::-1])
    kg = load_dataset(folder, format="tsv", cache_dir=cache)
    assert list(kg.entity_names) != list(umls.entity_names)
    assert _numbers(kgnum.evaluate(model[1], kg, "test")) == _numbers(kgnum.evaluate(model[1], umls, "test"))


def test_relabelled_udd_hrt_copy_gives_the_same_metrics(model, umls, baseline, cache, tmp_path):
    rng = np.random.default_rng(11)
    new_ent = rng.permutation(umls.n_entities)  # old id -> new id
    new_rel = rng.permutation(umls.n_relations)
    folder = tmp_path / "umls_udd"
    folder.mkdir()
    for kind, names, new in (("entities", umls.entity_names, new_ent), ("relations", umls.relation_names, new_rel)):
        _write(folder / f"{kind}.dict", [f"{new[i]}\t{names[i]}" for i in rng.permutation(len(names))])
    for split in ("train", "valid", "test"):
        a = umls.split(split)
        _write(folder / f"{split}.txt",
               [f"{new_ent[h]}\t{new_rel[r]}\t{new_ent[t]}" for h, r, t in a.tolist()])

    kg = load_dataset(str(folder), format="udd_hrt", cache_dir=cache)
    assert kg.entity_names[new_ent[0]] == umls.entity_names[0]  # the dicts were honoured...
    assert list(kg.entity_names) != list(umls.entity_names)  # ...and number differently
    assert _numbers(kgnum.evaluate(model[1], kg)) == baseline


def test_eval_cli_on_the_shuffled_copy(model, umls, shuffled, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KGNUM_CACHE_DIR", str(tmp_path / "cache"))
    folder, perm = shuffled
    out = tmp_path / "eval.json"
    assert main(["eval", "--load", model[0], "--data-path", folder, "--json", str(out)]) == 0
    with open(out) as f:
        test = json.load(f)["test"]
    expected = kgnum.evaluate(model[1], _in_order(umls, "test", perm))
    assert test["mrr"] == expected["mrr"]
    assert test == {k: expected[k] for k in ("mrr", "mr", "hits@1", "hits@3", "hits@10")}


def test_subset_graph_evaluates_on_the_model_rows(model, umls, umls_dir, cache, tmp_path):
    # Drop every triple touching a few entities and one relation: the copy has fewer names.
    gone_ent = set(umls.entity_names[:3])
    gone_rel = umls.relation_names[0]

    def keep(split, lines):
        return [s for s in lines
                if not ({s.split("\t")[0], s.split("\t")[2]} & gone_ent) and s.split("\t")[1] != gone_rel]

    kg = load_dataset(_copy_with(umls_dir, tmp_path / "umls_sub", keep), format="tsv", cache_dir=cache)
    assert kg.n_entities < umls.n_entities and kg.n_relations < umls.n_relations
    # Same triples, same order, under the original ids: ranks run over all the model's rows.
    mask = {s: ~np.isin(umls.split(s)[:, [0, 2]], list(umls.entity_id(e) for e in gone_ent)).any(axis=1)
            & (umls.split(s)[:, 1] != umls.relation_id(gone_rel)) for s in ("train", "valid", "test")}
    expected = dataclasses.replace(umls, **{s: umls.split(s)[m] for s, m in mask.items()})
    got = _numbers(kgnum.evaluate(model[1], kg))
    assert got["n_queries"] == 2 * len(kg.test)
    assert got == _numbers(kgnum.evaluate(model[1], expected))


# --------------------------------------------------------------------------- resuming
def test_resuming_on_a_shuffled_copy_writes_checkpoints(model, shuffled, tmp_path, monkeypatch):
    """A run that loads a model onto a graph numbered differently trains on the aligned graph; its
    checkpoints must still be written, or a crash loses the whole leg."""
    from kgnum.embeddings import Embeddings

    calls = []
    save = Embeddings.save
    monkeypatch.setattr(Embeddings, "save", lambda self, path: calls.append(path) or save(self, path))
    kg = load_dataset(shuffled[0], format="tsv", cache_dir=str(tmp_path / "cache"))
    assert list(kg.entity_names) != list(model[1].entity_names), "the copy numbers its entities anew"
    out = str(tmp_path / "resumed")
    emb = kgnum.train(kg, "TransE_l2", init=model[1], time_budget=1.5, save=out, checkpoint_every=0.1,
                      valid_every=0, workers=1, progress=False)
    assert len(calls) >= 4 and set(calls) == {out}, f"{len(calls)} save(s): the checkpoints were not written"
    np.testing.assert_array_equal(kgnum.load(out).entity, emb.entity)  # the last save is the final model


# --------------------------------------------------------------------------- names the model lacks


def _with_extra_train_line(src, dst, line):
    return _copy_with(src, dst, lambda split, lines: lines + [line] if split == "train" else lines)


def test_unknown_entity_is_a_one_line_error(model, umls, umls_dir, cache, tmp_path, monkeypatch, capsys):
    e0, r0 = umls.entity_names[0], umls.relation_names[0]
    folder = _with_extra_train_line(umls_dir, tmp_path / "umls_new", f"{e0}\t{r0}\tzz_new_entity")
    kg = load_dataset(folder, format="tsv", cache_dir=cache)
    with pytest.raises(KGDataError, match="1 entity the saved model does not have") as err:
        kgnum.evaluate(model[1], kg)
    assert "'zz_new_entity'" in str(err.value) and "\n" not in str(err.value)

    monkeypatch.setenv("KGNUM_CACHE_DIR", cache)
    capsys.readouterr()
    assert main(["eval", "--load", model[0], "--data-path", folder]) == 2
    stderr = capsys.readouterr().err
    errors = [s for s in stderr.splitlines() if s.startswith("kgnum eval: error:")]
    assert len(errors) == 1 and "'zz_new_entity'" in errors[0]
    assert "Traceback" not in stderr


def test_unknown_relation_is_an_error_naming_it(model, umls, umls_dir, cache, tmp_path, monkeypatch, capsys):
    e0, e1 = umls.entity_names[:2]
    folder = _with_extra_train_line(umls_dir, tmp_path / "umls_newrel", f"{e0}\tzz_new_relation\t{e1}")
    with pytest.raises(KGDataError, match="1 relation the saved model does not have.*'zz_new_relation'"):
        kgnum.evaluate(model[1], load_dataset(folder, format="tsv", cache_dir=cache))
    monkeypatch.setenv("KGNUM_CACHE_DIR", cache)
    capsys.readouterr()
    assert main(["eval", "--load", model[0], "--data-path", folder]) == 2
    stderr = capsys.readouterr().err
    assert "'zz_new_relation'" in stderr and "Traceback" not in stderr


def test_many_unknown_names_are_counted_and_the_first_few_shown(umls):
    keep = umls.entity_names[10:]  # a vocabulary without the first 10 entities
    with pytest.raises(KGDataError) as err:
        umls.aligned_to(keep, umls.relation_names)
    msg = str(err.value)
    assert "names 10 entities" in msg and repr(str(umls.entity_names[0])) in msg
    assert repr(str(umls.entity_names[9])) not in msg  # only the first few, not all ten
    assert "\n" not in msg


# --------------------------------------------------------------------------- aligned_to itself


def test_aligned_to_the_same_names_is_the_same_graph(small_kg):
    assert small_kg.aligned_to(small_kg.entity_names, small_kg.relation_names) is small_kg
    # equal names in other containers take the fast path too
    assert small_kg.aligned_to(list(small_kg.entity_names), tuple(small_kg.relation_names)) is small_kg


def test_aligned_to_renumbers_by_name_and_keeps_the_rest(small_kg):
    rng = np.random.default_rng(3)
    ents = list(small_kg.entity_names[rng.permutation(small_kg.n_entities)]) + ["unused_row"]
    rels = list(small_kg.relation_names[rng.permutation(small_kg.n_relations)])
    kg = dataclasses.replace(small_kg, dropped_unseen={"test": 2}, source="/some/folder")
    out = kg.aligned_to(ents, rels)
    assert list(out.entity_names) == ents and list(out.relation_names) == rels
    for split in ("train", "valid", "test"):
        assert out.split(split).dtype == np.int32
        assert (_named(out, split) == _named(kg, split)).all()
        assert not np.array_equal(out.split(split), kg.split(split))
    assert (out.name, out.dropped_unseen, out.source) == (kg.name, {"test": 2}, "/some/folder")


def test_duplicate_model_names_are_an_error(small_kg):
    first = str(small_kg.entity_names[0])
    ents = list(small_kg.entity_names[::-1]) + [first]  # every name, one of them twice
    with pytest.raises(KGDataError, match=f"not unique.*{re.escape(repr(first))}"):
        small_kg.aligned_to(ents, small_kg.relation_names)


def test_aligning_fb15k237_is_vectorized(data_dir, tmp_path):
    fb = load_dataset("FB15k-237", data_dir=data_dir, cache_dir=str(tmp_path))
    rng = np.random.default_rng(0)
    ents = list(fb.entity_names[rng.permutation(fb.n_entities)])
    rels = list(fb.relation_names[rng.permutation(fb.n_relations)])
    best = float("inf")
    for _ in range(3):  # best of three: a busy machine must not fail it
        start = time.perf_counter()
        out = fb.aligned_to(ents, rels)
        best = min(best, time.perf_counter() - start)
    assert best < 0.2, f"aligning FB15k-237 took {best:.3f} s: a per-triple Python loop?"
    assert (_named(out, "test") == _named(fb, "test")).all()
