"""Bias measurement (kgnum.bias.measure, ``kgnum bias measure``).

Closed-form checks from BIAS.md (the linear-model identity of B_p, its sign flip
when the values swap and its scaling with alpha; D as the mean log-odds of the
true value under the M-way softmax), every score function through the registry
(a per-person loop in the test as the reference for the vectorized step), and a
generated graph with a planted gender -> profession correlation.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import kgnum
from kgnum.bias.measure import difference_in_scores, probe, read_display_names, sensitive_relation, target_bias
from kgnum.bias.planted import planted_bias_graph
from kgnum.cli import main
from kgnum.data import KGDataError
from kgnum.embeddings import Embeddings
from kgnum.kernels.registry import get_model, model_names

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def kg():
    return planted_bias_graph(seed=0)


def random_model(kg, model, seed=0, dim=8):
    sf = get_model(model)
    entity, relation = sf.init_tables(kg.n_entities, kg.n_relations, dim, 6.0, seed)
    rng = np.random.default_rng(seed)
    entity = entity + rng.normal(0, 0.3, entity.shape).astype(np.float32)
    return Embeddings(model, entity, relation, {"gamma": 6.0}, kg.entity_names, kg.relation_names)


@pytest.fixture(scope="module")
def trained(kg, tmp_path_factory):
    emb = kgnum.train(kg, "DistMult", dim=64, time_budget=5, workers=1, progress=False)
    path = tmp_path_factory.mktemp("bias") / "model"
    emb.save(str(path))
    return emb, path


def test_person_side_is_detected_and_can_be_forced(kg):
    s = sensitive_relation(kg, "gender")
    assert s.person_side == "head" and {kg.entity_names[v] for v in s.top_values} == {"male", "female"}
    assert sensitive_relation(kg, "gender", "tail").person_side == "tail"
    # the same facts stored the other way round (value -> person): the persons are now the tails
    g = kg.train[:, 1] == kg.relation_id("gender")
    flipped = kg.train.copy()
    flipped[g] = flipped[g][:, ::-1]
    rev = kgnum.KnowledgeGraph("rev", flipped, kg.valid, kg.test, kg.entity_names, kg.relation_names)
    s_rev = sensitive_relation(rev, "gender")
    assert s_rev.person_side == "tail"
    assert np.array_equal(np.sort(s_rev.persons), np.sort(s.persons))


def test_linear_model_identity_sign_flip_and_alpha_scaling(kg):
    emb = random_model(kg, "DistMult")
    s = sensitive_relation(kg, "gender")
    a, b, rp = kg.entity_id("male"), kg.entity_id("female"), kg.relation_id("profession")
    res = target_bias(emb, kg, s, "male", "female", "profession", alpha=0.01, min_persons=1)
    E, R = emb.entity.astype(np.float64), emb.relation.astype(np.float64)
    for row in res["targets"]:
        p = kg.entity_id(row["entity"])
        # DistMult is linear in the head: every person moves by the same alpha r_s (e_a - e_b)
        expected = 0.01 * np.sum(R[s.relation] * (E[a] - E[b]) * R[rp] * E[p])
        assert row["bias"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    swapped = {r["entity"]: r["bias"] for r in target_bias(emb, kg, s, "female", "male", "profession",
                                                           min_persons=1)["targets"]}
    doubled = {r["entity"]: r["bias"] for r in target_bias(emb, kg, s, "male", "female", "profession",
                                                           alpha=0.02, min_persons=1)["targets"]}
    for row in res["targets"]:
        assert swapped[row["entity"]] == pytest.approx(-row["bias"], rel=1e-9)
        assert doubled[row["entity"]] == pytest.approx(2 * row["bias"], rel=1e-9)
    assert res["mean_abs_bias_over_alpha"] == pytest.approx(np.mean([abs(r["bias"]) for r in res["targets"]]) / 0.01)


@pytest.mark.parametrize("alpha", [0.01, 0.5])
def test_transe_dot_bias_is_alpha_times_the_value_difference_dot_the_target(kg, alpha):
    """TransE_dot: m_j = <e_j + r_s, e_a - e_b>, so every person moves by alpha (e_a - e_b) and, the
    score being linear in the head, B_p = alpha <e_a - e_b, e_p> for every person and relation."""
    emb = random_model(kg, "TransE_dot", seed=3)
    emb.relation += np.random.default_rng(4).normal(0, 0.3, emb.relation.shape).astype(np.float32)
    s = sensitive_relation(kg, "gender")
    assert s.person_side == "head"
    res = target_bias(emb, kg, s, "male", "female", "profession", alpha=alpha, min_persons=1)
    E = emb.entity.astype(np.float64)
    a, b = kg.entity_id("male"), kg.entity_id("female")
    assert len(res["targets"]) > 2
    for row in res["targets"]:
        expected = alpha * np.dot(E[a] - E[b], E[kg.entity_id(row["entity"])])
        assert row["bias"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("model", model_names())
def test_every_model_matches_a_per_person_reference(kg, model):
    """The vectorized step equals one person at a time with finite-difference gradients."""
    sf = get_model(model)
    emb = random_model(kg, model, seed=1, dim=4 if sf.relation_dim(8) > 16 else 8)
    s = sensitive_relation(kg, "gender")
    res = target_bias(emb, kg, s, "male", "female", "profession", alpha=0.01, min_persons=1)
    a, b, rp = kg.entity_id("male"), kg.entity_id("female"), kg.relation_id("profession")
    E, R = emb.entity.astype(np.float64), emb.relation.astype(np.float64)
    persons = np.unique(s.persons)
    targets = [kg.entity_id(r["entity"]) for r in res["targets"]]

    def g(h, r, t):
        return float(sf.score(h, r, t, emb.gamma))

    total = np.zeros(len(targets))
    for j in persons:  # the slow, obvious way
        e = E[j]
        grad = np.zeros_like(e)
        for k in range(e.size):
            step = np.zeros_like(e)
            step[k] = 1e-6
            m_plus = g(e + step, R[s.relation], E[a]) - g(e + step, R[s.relation], E[b])
            m_minus = g(e - step, R[s.relation], E[a]) - g(e - step, R[s.relation], E[b])
            grad[k] = (m_plus - m_minus) / 2e-6
        moved = e + 0.01 * grad
        total += [g(moved, R[rp], E[p]) - g(e, R[rp], E[p]) for p in targets]
    np.testing.assert_allclose([r["bias"] for r in res["targets"]], total / persons.size, rtol=1e-4, atol=1e-9)


def test_difference_in_scores_is_the_mean_log_odds_of_the_true_value(kg):
    emb = random_model(kg, "ComplEx", seed=2)
    s = sensitive_relation(kg, "gender")
    d = difference_in_scores(emb, s)
    V = s.top_values
    scores = emb.score(np.repeat(s.persons, V.size), np.full(s.persons.size * V.size, s.relation),
                       np.tile(V, s.persons.size)).astype(np.float64).reshape(-1, V.size)
    log_q = scores - np.log(np.exp(scores - scores.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - scores.max(1, keepdims=True)
    true = np.searchsorted(V, s.values) if np.all(np.diff(V) > 0) else np.array([list(V).index(v) for v in s.values])
    odds = [log_q[i, true[i]] - np.delete(log_q[i], true[i]).mean() for i in range(len(true))]
    assert d == pytest.approx(np.mean(odds), rel=1e-4)


def test_planted_professions_rank_on_top_and_the_probe_sees_gender(kg, trained):
    emb, _ = trained
    s = sensitive_relation(kg, "gender")
    res = target_bias(emb, kg, s, "male", "female", "profession", min_persons=10)
    order = [r["entity"][:6] for r in res["targets"]]
    assert set(order[:4]) == {"prof_m"} and set(order[-4:]) == {"prof_f"}, order
    assert res["spearman_rho"] > 0.8
    pr = probe(emb, s)
    assert pr["accuracy"] > pr["majority"] + 0.2, pr
    assert difference_in_scores(emb, s) > 0.3


def test_cli_writes_the_documented_json_and_a_chart(kg, trained, tmp_path, monkeypatch, capsys, write_tsv):
    _, path = trained
    data = write_tsv(kg, tmp_path / "planted")
    (data / "entity_names.tsv").write_text("male\tMen\nfemale\tWomen\nprof_m0\tMiner\n")
    monkeypatch.setenv("KGNUM_CACHE_DIR", str(tmp_path / "cache"))
    out, png = tmp_path / "bias.json", tmp_path / "bias.png"
    assert main(["bias", "measure", "--load", str(path), "--data-path", str(data), "--sensitive",
                 "gender,member_of", "--values", "male,female", "--target", "profession", "--min-persons", "10",
                 "--json", str(out), "--plot", str(png)]) == 0
    report = json.loads(out.read_text())
    assert set(report["difference_in_scores"]) == {"gender", "member_of"}
    assert set(report["probe"]["gender"]) >= {"accuracy", "majority"}
    assert {"entity", "name", "bias", "counts"} <= set(report["targets"][0])
    assert any(r["name"] == "Miner" for r in report["targets"])  # names file read from the dataset folder
    assert png.stat().st_size > 1000
    assert "most toward Men" in capsys.readouterr().out


def test_an_undefined_correlation_is_null_in_strict_json(kg, trained, tmp_path, monkeypatch, capsys, write_tsv):
    """With two targets left (--min-persons), Spearman's rho is undefined: the JSON holds null, which
    every JSON reader takes, not NaN (which strict readers refuse), and the summary says so."""
    _, path = trained
    data = write_tsv(kg, tmp_path / "planted")
    monkeypatch.setenv("KGNUM_CACHE_DIR", str(tmp_path / "cache"))
    rel = kg.relation_id("profession")
    counts = np.sort(np.unique(kg.train[kg.train[:, 1] == rel][:, 2], return_counts=True)[1])
    out = tmp_path / "bias.json"
    assert main(["bias", "measure", "--load", str(path), "--data-path", str(data), "--sensitive", "gender",
                 "--values", "male,female", "--target", "profession", "--min-persons", str(int(counts[-2])),
                 "--json", str(out)]) == 0

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    report = json.loads(out.read_text(), parse_constant=refuse)
    assert len(report["targets"]) <= 2 and report["target_summary"]["spearman_rho"] is None
    assert "Spearman rho against log count ratio undefined" in capsys.readouterr().out


def test_names_file_keeps_its_first_entity_and_names_holding_line_breaks(tmp_path):
    """An entity_names.tsv saved with a byte-order mark (as Windows editors write UTF-8) names its
    first entity too, and the entity names are split at newlines only, as the loaders split them."""
    path = tmp_path / "entity_names.tsv"
    path.write_bytes("\ufeff/m/a\tAlice\r\ncarriage\rreturn\tCR\r\nnext\x85line\tNEL\n".encode("utf-8"))
    assert read_display_names(str(path)) == {"/m/a": "Alice", "carriage\rreturn": "CR", "next\x85line": "NEL"}


def test_the_report_does_not_depend_on_the_order_of_the_triples(kg, trained, tmp_path, monkeypatch, write_tsv):
    """``knows`` gives many persons several of its top values: the probe's label of such a person
    must not be whichever value comes first in train.txt."""
    import random

    _, path = trained
    monkeypatch.setenv("KGNUM_CACHE_DIR", str(tmp_path / "cache"))
    reports = []
    for name, shuffle in (("ordered", False), ("shuffled", True)):
        data = write_tsv(kg, tmp_path / name)
        if shuffle:
            for split in ("train", "valid", "test"):
                lines = (data / f"{split}.txt").read_text().splitlines(keepends=True)
                random.Random(5).shuffle(lines)
                (data / f"{split}.txt").write_text("".join(lines))
        out = tmp_path / f"{name}.json"
        assert main(["bias", "measure", "--load", str(path), "--data-path", str(data), "--sensitive",
                     "gender,knows", "--top-m", "10", "--json", str(out)]) == 0
        reports.append(json.loads(out.read_text()))
    a, b = reports
    assert a["probe"] == b["probe"]
    assert a["difference_in_scores"] == pytest.approx(b["difference_in_scores"], rel=1e-12)


@pytest.mark.parametrize("flags, words", [
    (["--sensitive", "no_such_relation"], "--sensitive no_such_relation"),
    (["--sensitive", "gender", "--values", "male,prof_m0", "--target", "profession"], "--values prof_m0"),
    (["--sensitive", "gender", "--values", "male", "--target", "profession"], "two values"),
    (["--sensitive", "gender", "--values", "male,female", "--target", "nope"], "--target nope"),
    (["--sensitive", "gender", "--values", "male,female", "--target", "located_in"], "no person"),
    (["--sensitive", "gender", "--person-side", "gender=middle"], "--person-side"),
    (["--sensitive", "knows", "--top-m", "60"], "lower --top-m"),  # 59 values, 51 persons in the 20%
    # a step of 0 measures nothing (mean |B_p| / alpha is NaN), a negative one ranks the targets backwards
    (["--sensitive", "gender", "--values", "male,female", "--target", "profession", "--alpha", "0"], "--alpha 0"),
    (["--sensitive", "gender", "--values", "male,female", "--target", "profession", "--alpha", "-0.01"],
     "--alpha -0.01"),
])
def test_bad_input_is_one_line_naming_it(kg, trained, tmp_path, flags, words, capsys, monkeypatch, write_tsv):
    _, path = trained
    data = write_tsv(kg, tmp_path / "planted")
    monkeypatch.setenv("KGNUM_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["bias", "measure", "--load", str(path), "--data-path", str(data), "--json",
                 str(tmp_path / "x.json"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


@pytest.mark.parametrize("flags", [["--values", "male,prof_m0", "--target", "profession"],
                                   ["--values", "male,female", "--target", "nope"],
                                   ["--values", "male,female"]])
def test_bad_values_or_target_are_refused_before_the_probes_train(kg, trained, tmp_path, flags, capsys, monkeypatch,
                                                                 write_tsv):
    """A misspelt --values or --target is refused before the difference in scores and the probes
    (an MLP per relation: the slow part on a big graph) are computed, not after them."""
    import kgnum.bias.measure as measure

    def no_probe(*a, **k):
        raise AssertionError("the probe ran before the bad flag was refused")

    monkeypatch.setattr(measure, "probe", no_probe)
    _, path = trained
    data = write_tsv(kg, tmp_path / "planted")
    monkeypatch.setenv("KGNUM_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["bias", "measure", "--load", str(path), "--data-path", str(data), "--sensitive", "gender",
                 "--json", str(tmp_path / "x.json"), *flags]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()


def test_a_relation_with_one_value_is_refused(kg):
    one = kgnum.KnowledgeGraph("one", kg.train[kg.train[:, 2] != kg.entity_id("female")], kg.valid[:0],
                               kg.test[:0], kg.entity_names, kg.relation_names)
    with pytest.raises(KGDataError, match="at least two values"):
        sensitive_relation(one, "gender")


def test_person_side_of_a_relation_whose_name_holds_an_equals_sign(kg, tmp_path, monkeypatch, write_tsv):
    """``--person-side REL=SIDE`` splits at the last "=": a relation named ``sex=gender`` can be forced."""
    names = np.array(["sex=gender" if n == "gender" else n for n in kg.relation_names], dtype=object)
    renamed = kgnum.KnowledgeGraph("renamed", kg.train, kg.valid, kg.test, kg.entity_names, names)
    random_model(renamed, "DistMult").save(str(tmp_path / "model"))
    data = write_tsv(renamed, tmp_path / "data")
    monkeypatch.setenv("KGNUM_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "x.json"
    assert main(["bias", "measure", "--load", str(tmp_path / "model"), "--data-path", str(data), "--sensitive",
                 "sex=gender", "--person-side", "sex=gender=head", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["person_side"] == {"sex=gender": "head"}
    assert report["difference_in_scores"]["sex=gender"] == pytest.approx(
        difference_in_scores(kgnum.load(str(tmp_path / "model")), sensitive_relation(renamed, "sex=gender", "head")))


def test_the_python_api_matches_a_graph_numbered_otherwise_to_the_model_by_name(kg, trained):
    """A copy of the graph with other ids (as from a shuffled train.txt), given to the Python API
    with a model trained on the original: D, the probe and B_p are the same. The ids were taken as
    the model's rows, so every person read another entity's row."""
    from kgnum.data import KnowledgeGraph

    emb, _ = trained
    rng = np.random.default_rng(5)
    new_e, new_r = rng.permutation(kg.n_entities), rng.permutation(kg.n_relations)  # old id -> new id
    names_e, names_r = np.empty(kg.n_entities, object), np.empty(kg.n_relations, object)
    names_e[new_e], names_r[new_r] = kg.entity_names, kg.relation_names

    def renumber(t):
        return np.stack([new_e[t[:, 0]], new_r[t[:, 1]], new_e[t[:, 2]]], axis=1).astype(np.int32)

    copy = KnowledgeGraph(kg.name, renumber(kg.train), renumber(kg.valid), renumber(kg.test), names_e, names_r)
    s, s_copy = sensitive_relation(kg, "gender"), sensitive_relation(copy, "gender")
    assert difference_in_scores(emb, s_copy) == pytest.approx(difference_in_scores(emb, s), rel=1e-12)
    assert probe(emb, s_copy) == probe(emb, s)
    a = target_bias(emb, kg, s, "male", "female", "profession", min_persons=10)
    b = target_bias(emb, copy, s_copy, "male", "female", "profession", min_persons=10)
    assert [r["entity"] for r in b["targets"]] == [r["entity"] for r in a["targets"]]
    assert [r["bias"] for r in b["targets"]] == pytest.approx([r["bias"] for r in a["targets"]], rel=1e-9)


def test_the_bias_report_runs_kl_attr_on_a_graph_without_display_names(kg, tmp_path, monkeypatch):
    """bench/bench_bias.py is the issue's documented report; its own example on the planted graph
    (no entity_names.tsv) stopped with "--names entity_names.tsv: no such file" before any run."""
    import argparse
    import importlib.util
    import pathlib

    script = pathlib.Path(__file__).resolve().parent.parent / "bench" / "bench_bias.py"
    spec = importlib.util.spec_from_file_location("bench_bias", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.chdir(tmp_path)  # it writes bench/out/whitelist_<graph>.tsv
    path = bench.attribute_whitelist(argparse.Namespace(whitelist=None, sensitive="gender,member_of"), kg)
    assert (tmp_path / path).read_text() == ""  # no award categories to find: attribute vectors, no whitelist
    emb = kgnum.train(kg, "TransE_l2", dim=8, max_steps=5, workers=1, progress=False, valid_every=0,
                      debias="gender", attribute_whitelist=str(tmp_path / path))
    assert emb.entity.shape[0] == kg.n_entities
