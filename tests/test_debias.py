"""Debiasing inside the step: the KL term (kgnum/kernels/kl.py) and ``kgnum train --debias``.

The term's Numba kernel against its NumPy reference for every score function,
the reference against finite differences of the penalty, no KL gradient for
relations or value entities, and training on a generated graph with planted
gender bias: D_gender falls at least 10x and the probe comes down to the
majority rate while link prediction on the other relations keeps its level.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import kgnum
from kgnum.bias.measure import difference_in_scores, probe, sensitive_relation
from kgnum.bias.planted import planted_bias_graph
from kgnum.cli import main
from kgnum.config import TrainConfig
from kgnum.kernels.registry import get_model, model_names
from kgnum.kernels.step import Tables
from kgnum.kernels.terms import TERMS, active_terms

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def kg():
    return planted_bias_graph(seed=0)


def chunk(kg, model, seed=0):
    sf = get_model(model)
    cfg = TrainConfig(model=model, debias="gender,member_of", max_steps=1,
                      dim=4 if sf.relation_dim(8) > 16 else 8).validate()
    names, params = active_terms(cfg, kg)
    p = params[names.index("kl")]
    ent, rel = sf.init_tables(kg.n_entities, kg.n_relations, cfg.dim, 6.0, seed)
    ent = ent + np.random.default_rng(seed).normal(0, 0.3, ent.shape).astype(np.float32)
    tables = Tables(ent, rel, np.zeros(len(ent), np.float32), np.zeros(len(rel), np.float32))
    rows = kg.train[np.random.default_rng(seed + 1).choice(len(kg.train), 24, replace=False)]
    heads, rels, tails = (rows[:, i].astype(np.int64) for i in range(3))
    negs = np.random.default_rng(seed + 2).integers(0, kg.n_entities, 5)
    return sf, p, tables, heads, rels, tails, negs


def run_term(fn, p, tables, heads, rels, tails, negs, dtype):
    ent, rel = tables.entity, tables.relation
    H, R, T, N = ent[heads], rel[rels], ent[tails], ent[negs]
    grads = [np.zeros(X.shape, dtype) for X in (H, R, T, N)]
    out = fn(p, tables, 0.25, heads, rels, tails, negs, H, R, T, N, *grads)
    return out[0], grads


@pytest.mark.parametrize("model", model_names())
def test_kl_kernel_matches_reference_and_touches_persons_only(kg, model):
    sf, p, tables, heads, rels, tails, negs = chunk(kg, model)
    pen, grads = run_term(TERMS["kl"].kernel(sf), p, tables, heads, rels, tails, negs, np.float32)
    pen_ref, grads_ref = run_term(TERMS["kl"].reference(sf), p, tables, heads, rels, tails, negs, np.float64)
    assert pen == pytest.approx(pen_ref, rel=1e-4) and pen > 0
    scale = max(np.abs(g).max() for g in grads_ref)
    for g, w in zip(grads, grads_ref):
        np.testing.assert_allclose(g, w, atol=1e-4 * scale, rtol=1e-3)
    gH, gR, gT, gN = grads
    assert not gR.any() and not gN.any(), "relations and negatives get no KL gradient"
    persons = p.person_mask.any(axis=0)
    assert not gH[~persons[heads]].any() and not gT[~persons[tails]].any(), "only persons move"
    values = set(p.values.ravel().tolist())
    for ids, g in ((heads, gH), (tails, gT)):
        for i, e in enumerate(ids):
            if e in values:
                assert not g[i].any(), "value entities are frozen for this term"
    assert gH[persons[heads]].any() or gT[persons[tails]].any()


@pytest.mark.parametrize("model", ["DistMult", "TransE_l2", "RotatE", "TransR"])
def test_kl_reference_matches_finite_differences(kg, model):
    sf, p, tables, heads, rels, tails, negs = chunk(kg, model, seed=3)
    ref = TERMS["kl"].reference(sf)
    _, grads = run_term(ref, p, tables, heads, rels, tails, negs, np.float64)
    ent = tables.entity.astype(np.float64)
    person = int(heads[np.flatnonzero(p.person_mask.any(axis=0)[heads])[0]])  # a person among the heads
    # the term reads persons' rows from the table: its gradient for that row is the sum over
    # every place the person takes in the chunk, on either side
    analytic = grads[0][heads == person].sum(0) + grads[2][tails == person].sum(0)
    for k in range(ent.shape[1]):
        plus, minus = ent.copy(), ent.copy()
        plus[person, k] += 1e-6
        minus[person, k] -= 1e-6
        fd = []
        for e in (plus, minus):
            rows = [e[heads], tables.relation[rels].astype(np.float64), e[tails], e[negs]]
            zeros = [np.zeros_like(X) for X in rows]
            fd.append(ref(p, Tables(e, tables.relation.astype(np.float64), None, None), 0.25, heads, rels,
                          tails, negs, *rows, *zeros)[0])
        assert analytic[k] == pytest.approx((fd[0] - fd[1]) / 2e-6, rel=1e-4, abs=1e-5 * np.abs(analytic).max())


def test_bad_debias_flags_name_them(kg):
    with pytest.raises(ValueError, match="--debias colour"):
        kgnum.train(kg, "DistMult", max_steps=1, debias="colour", workers=1, progress=False)
    with pytest.raises(ValueError, match="--debias-weight"):
        kgnum.train(kg, "DistMult", max_steps=1, debias="gender", debias_weight="gender=lots", workers=1,
                    progress=False)
    with pytest.raises(ValueError, match="--debias-weight member_of"):
        kgnum.train(kg, "DistMult", max_steps=1, debias="gender", debias_weight="member_of=3", workers=1,
                    progress=False)


# relations the planted graph correlates with gender by construction; the others carry none
GENDERED = ["gender", "member_of", "profession", "works_at"]


def _measure(emb, kg):
    s = sensitive_relation(kg, "gender")
    mrr = kgnum.evaluate(emb, kg, exclude_relations=GENDERED)["mrr"]
    return difference_in_scores(emb, s), probe(emb, s), mrr


def test_kl_removes_planted_gender_bias_and_keeps_link_prediction(kg):
    """Gender leaks through member_of (men's and women's teams), so both are debiased; link
    prediction on the relations that carry no gender keeps its level."""
    opts = dict(dim=64, epochs=100, workers=1, valid_every=0, progress=False, seed=1)
    basic = kgnum.train(kg, "TransE_l2", **opts)
    debiased = kgnum.train(kg, "TransE_l2", debias="gender,member_of", debias_weight="gender=2,member_of=5",
                           **opts)
    d0, p0, mrr0 = _measure(basic, kg)
    d1, p1, mrr1 = _measure(debiased, kg)
    assert abs(d1) <= abs(d0) / 10, (d0, d1)
    assert abs(p1["accuracy"] - p1["majority"]) <= 0.05, p1
    assert p0["accuracy"] > p0["majority"] + 0.2, p0  # the basic model did encode it
    assert mrr1 >= 0.95 * mrr0, (mrr0, mrr1)


def test_cli_debias_saves_the_setting_and_excludes_the_relation_from_metrics(tmp_path, kg, capsys, write_tsv):
    data = write_tsv(kg, tmp_path / "planted")
    out, js = tmp_path / "m", tmp_path / "run.json"
    assert main(["train", "--data-path", str(data), "--model", "DistMult", "--dim", "16", "--max-steps", "20",
                 "--workers", "1", "--debias", "gender", "--no-progress", "--save", str(out), "--json", str(js)]) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["debias"] == "gender" and saved["debias_top_m"] == 30
    n_test = int((kg.test[:, 1] != kg.relation_id("gender")).sum())
    assert json.loads(js.read_text())["test"]["mrr"] > 0
    emb = kgnum.load(str(out))
    assert kgnum.evaluate(emb, kgnum.load_dataset(str(data)), exclude_relations=["gender"])["n_queries"] == 2 * n_test
    # kgnum eval of the saved model leaves them out too, as the run's own report does: on a copy of the
    # graph whose test split holds gender triples, it gives the metrics without them
    import dataclasses

    g = kg.train[kg.train[:, 1] == kg.relation_id("gender")][:20]
    with_gender = write_tsv(dataclasses.replace(kg, test=np.concatenate([kg.test, g])), tmp_path / "with_gender")
    again = tmp_path / "eval.json"
    assert main(["eval", "--load", str(out), "--data-path", str(with_gender), "--json", str(again)]) == 0
    graph = kgnum.load_dataset(str(with_gender))
    without = {k: kgnum.evaluate(emb, graph, exclude_relations=["gender"])[k] for k in ("mrr", "hits@10")}
    assert without["mrr"] != kgnum.evaluate(emb, graph)["mrr"]
    assert {k: json.loads(again.read_text())["test"][k] for k in without} == pytest.approx(without, abs=1e-12)
