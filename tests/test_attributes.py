"""Attribute vectors (``--attribute-vectors``, ``--attribute-whitelist``): rows, kernels, training.

The graph gains one attribute row per sensitive value and one twin relation per
sensitive relation; the step adds a person's attribute rows to its chunk rows on twin and
whitelisted triples and forwards their gradient to the attribute rows (checked against
the NumPy reference and against finite differences of the chunk loss); attribute rows
are never negatives; the saved model has exactly the graph's entities and relations.
"""
from __future__ import annotations

import numpy as np
import pytest

import kgnum
from kgnum.bias.attributes import augment
from kgnum.bias.measure import difference_in_scores, probe, sensitive_relation
from kgnum.bias.planted import planted_bias_graph
from kgnum.cli import main
from kgnum.config import TrainConfig
from kgnum.kernels.attributes import attribute_name, attribute_rows, twin_name
from kgnum.kernels.registry import get_model
from kgnum.kernels.sampling import sample_negatives, seed_kernel_rng
from kgnum.kernels.step import Tables, _rows_kernel
from kgnum.kernels.losses import add_regularization
from kgnum.kernels.terms import TERMS, active_terms, compose
from kgnum.train import initial_embeddings, make_job

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def kg():
    return planted_bias_graph(seed=0)


@pytest.fixture
def whitelist(tmp_path):
    path = tmp_path / "whitelist.tsv"
    path.write_text("member_of\nprofession\tprof_m0\n")
    return str(path)


def config(whitelist, **extra):
    return TrainConfig(model="TransE_l2", dim=8, max_steps=1, debias="gender", attribute_whitelist=whitelist,
                       **extra).validate()


def test_augment_adds_one_row_per_value_and_a_twin_per_relation(kg, whitelist):
    cfg = config(whitelist)
    big = augment(kg, cfg)
    assert big.n_entities == kg.n_entities + 2 and big.n_relations == kg.n_relations + 1
    assert {attribute_name("gender", "male"), attribute_name("gender", "female")} <= set(big.entity_names)
    twin = big.relation_id(twin_name("gender"))
    gender = kg.relation_id("gender")
    np.testing.assert_array_equal(big.train[big.train[:, 1] == twin][:, [0, 2]],
                                  kg.train[kg.train[:, 1] == gender][:, [0, 2]])
    assert attribute_rows(big.entity_names).sum() == 2 and not attribute_rows(kg.entity_names).any()


def chunk_with_attributes(kg, whitelist, seed=0):
    cfg = config(whitelist)
    big = augment(kg, cfg)
    names, params = active_terms(cfg, big)
    p = params[names.index("attributes")]
    sf = get_model(cfg.model)
    rng = np.random.default_rng(seed)
    ent, rel = sf.init_tables(big.n_entities, big.n_relations, cfg.dim, 6.0, seed)
    ent = ent + rng.normal(0, 0.3, ent.shape).astype(np.float32)
    tables = Tables(ent, rel, np.zeros(len(ent), np.float32), np.zeros(len(rel), np.float32))
    twin, member = big.relation_id(twin_name("gender")), big.relation_id("member_of")
    pick = np.concatenate([np.flatnonzero(big.train[:, 1] == twin)[:6], np.flatnonzero(big.train[:, 1] == member)[:6],
                           np.flatnonzero(big.train[:, 1] == big.relation_id("knows"))[:6]])
    rows = big.train[pick].astype(np.int64)
    return cfg, big, p, tables, rows[:, 0], rows[:, 1], rows[:, 2], rng.integers(0, kg.n_entities, 5)


def test_prepare_and_gradient_kernels_match_the_reference(kg, whitelist):
    cfg, big, p, tables, heads, rels, tails, negs = chunk_with_attributes(kg, whitelist)
    term = TERMS["attributes"]
    out = {}
    for kind, prep, kernel in (("numba", term.prepare, term.kernel(None)),
                               ("numpy", term.prepare_reference, term.reference(None))):
        H, R, T = tables.entity[heads], tables.relation[rels], tables.entity[tails]
        N = tables.entity[negs]
        prep(p, tables, heads, rels, tails, H, T)
        prepared = H.copy(), T.copy()
        gH, gR, gT, gN = (np.random.default_rng(1).normal(size=X.shape).astype(np.float32) for X in (H, R, T, N))
        pen, rows, grads, rel_rows, _ = kernel(p, tables, 0.5, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN)
        order = np.lexsort((grads[:, 0], rows))
        out[kind] = prepared[0], prepared[1], rows[order], grads[order], gH, gT
        assert pen == 0.0 and rel_rows.shape[0] == 0
        # the terms after this one (the regularizer) see the persons' own rows again
        np.testing.assert_allclose(H, tables.entity[heads], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(T, tables.entity[tails], rtol=1e-6, atol=1e-6)
    for a, b in zip(out["numba"], out["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    H, T, rows, _, gH, _ = out["numba"]
    twin = big.relation_id(twin_name("gender"))
    male = big.entity_id(attribute_name("gender", "male"))
    female = big.entity_id(attribute_name("gender", "female"))
    assert set(rows.tolist()) == {male, female}
    # twin triples: head = person + its gender's vector, and the person row gets no gradient
    gender_of = {int(h): int(t) for h, r, t in kg.train if r == kg.relation_id("gender")}
    for i in np.flatnonzero(rels == twin):
        a = male if kg.entity_names[gender_of[int(heads[i])]] == "male" else female
        np.testing.assert_allclose(H[i], tables.entity[heads[i]] + tables.entity[a], rtol=1e-6)
        assert not gH[i].any()
    knows = np.flatnonzero(rels == big.relation_id("knows"))
    np.testing.assert_array_equal(H[knows], tables.entity[heads[knows]])  # not whitelisted: untouched


def test_the_regularizer_sees_the_persons_own_rows(kg, whitelist):
    """With a regularized model the person of a twin triple gets only the penalty's gradient of
    its own row, never one of e_p + A_v (which would push e_p along -A_v: the attribute)."""
    cfg = TrainConfig(model="ComplEx", dim=8, max_steps=1, debias="gender", attribute_whitelist=whitelist,
                      reg_coef=1e-2, reg_norm=3).validate()
    big = augment(kg, cfg)
    names, params = active_terms(cfg, big)
    assert names[0] == "attributes" and "regularizer" in names
    sf = get_model(cfg.model)
    ent, rel = sf.init_tables(big.n_entities, big.n_relations, cfg.dim, 6.0, 0)
    ent = ent + np.random.default_rng(0).normal(0, 0.3, ent.shape).astype(np.float32)
    tables = Tables(ent, rel, np.zeros(len(ent), np.float32), np.zeros(len(rel), np.float32))
    twin = big.train[big.train[:, 1] == big.relation_id(twin_name("gender"))][:6].astype(np.int64)
    heads, rels, tails = twin[:, 0], twin[:, 1], twin[:, 2]
    negs = np.arange(5, dtype=np.int64)
    H, R, T, N = ent[heads], rel[rels], ent[tails], ent[negs]
    TERMS["attributes"].prepare(params[0], tables, heads, rels, tails, H, T)
    assert not np.allclose(H, ent[heads])
    gH, gR, gT, gN = (np.zeros_like(X) for X in (H, R, T, N))
    reg = params[names.index("regularizer")]
    pair = ("attributes", "regularizer")  # (the KL term's gradient of the own row is checked in test_debias)
    compose(cfg.model, pair)((params[0], reg), tables, 1.0, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN)
    own = np.zeros_like(H)
    add_regularization(ent[heads], reg.coef, reg.norm, own)
    assert own.any()
    np.testing.assert_allclose(gH, own, rtol=1e-5, atol=1e-7)


def test_attribute_gradient_matches_finite_differences(kg, whitelist):
    """The gradient the term sends to an attribute row is the derivative of the chunk loss."""
    cfg, big, p, tables, heads, rels, tails, negs = chunk_with_attributes(kg, whitelist)
    term, rows_kernel = TERMS["attributes"], _rows_kernel(cfg.model)
    gamma, adv = np.float32(cfg.gamma), np.float32(0.0)  # self-adversarial weights are constants in the step

    def loss_and_grads(entity):
        t = tables._replace(entity=entity)
        H, R, T, N = entity[heads], t.relation[rels], entity[tails], entity[negs]
        term.prepare(p, t, heads, rels, tails, H, T)
        loss, gH, gR, gT, gN = rows_kernel(H, R, T, N, False, gamma, adv, np.float32(1.0))
        _, rows, grads, _, _ = term.kernel(None)(p, t, 1.0, heads, rels, tails, negs, H, R, T, N, gH, gR, gT, gN)
        return float(loss), rows, grads

    _, rows, grads = loss_and_grads(tables.entity)
    male = big.entity_id(attribute_name("gender", "male"))
    analytic = grads[rows == male].sum(0)
    eps = 1e-2
    for c in range(4):
        up, down = tables.entity.copy(), tables.entity.copy()
        up[male, c] += eps
        down[male, c] -= eps
        numeric = (loss_and_grads(up)[0] - loss_and_grads(down)[0]) / (2 * eps)
        assert numeric == pytest.approx(analytic[c], rel=0.05, abs=2e-3)


def test_attribute_rows_are_never_negatives(kg, whitelist):
    cfg = config(whitelist)
    big = augment(kg, cfg)
    job = make_job(big, cfg, initial_embeddings(big, cfg, None))
    seed_kernel_rng(0)
    negs = sample_negatives(big.n_entities, 50_000, job.params.neg_cdf)
    assert not attribute_rows(big.entity_names)[negs].any()
    assert np.unique(negs).size > 0.95 * kg.n_entities  # still every other entity


def test_kl_with_attribute_vectors_debiases_and_saves_the_graphs_own_rows(kg, whitelist, tmp_path):
    gender = sensitive_relation(kg, "gender")
    common = dict(dim=64, epochs=60, valid_every=0, workers=1, progress=False, seed=0)
    basic = kgnum.train(kg, "TransE_l2", **common)
    emb = kgnum.train(kg, "TransE_l2", debias="gender", attribute_whitelist=whitelist, save=str(tmp_path / "m"),
                      **common)
    assert list(emb.entity_names) == list(kg.entity_names) and list(emb.relation_names) == list(kg.relation_names)
    saved = kgnum.load(str(tmp_path / "m"))
    assert saved.entity.shape == (kg.n_entities, 64) and saved.relation.shape[0] == kg.n_relations
    assert saved.config["attribute_vectors"] and saved.config["attribute_whitelist"] == whitelist
    d_basic, d_attr = difference_in_scores(basic, gender), difference_in_scores(emb, gender)
    assert d_attr < d_basic / 5, (d_basic, d_attr)
    pr = probe(emb, gender)
    assert pr["accuracy"] < probe(basic, gender)["accuracy"] - 0.1
    free = ["gender", "member_of"]  # the gender-free relations keep their link prediction
    other = kgnum.evaluate(basic, kg, exclude_relations=free)["mrr"]
    assert kgnum.evaluate(saved, kg, exclude_relations=free)["mrr"] >= 0.9 * other


def test_a_checkpoint_resumed_without_attribute_vectors_saves_none_of_them(kg, whitelist, tmp_path):
    """A run with attribute vectors that fails leaves a checkpoint holding the attribute rows and twin
    relations; resumed without --attribute-vectors, the saved model has only the graph's own rows
    (they were kept, untrained, with names no graph has)."""
    out = tmp_path / "m"

    def fail_after_a_checkpoint(step, mrr, seconds):
        if (out / "config.json").exists():
            raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        kgnum.train(kg, "TransE_l2", dim=8, epochs=200, valid_every=20, workers=1, progress=False, debias="gender",
                    attribute_whitelist=whitelist, save=str(out), checkpoint_every=0.001,
                    on_validation=fail_after_a_checkpoint)
    checkpoint = kgnum.load(str(out))
    assert checkpoint.train_stats["checkpoint"] and checkpoint.n_entities > kg.n_entities  # the attribute rows
    resumed = kgnum.train(kg, init=checkpoint, max_steps=5, attribute_vectors=False, attribute_whitelist=None,
                          save=str(out), progress=False)
    assert list(resumed.entity_names) == list(kg.entity_names)
    assert list(resumed.relation_names) == list(kg.relation_names)
    saved = kgnum.load(str(out))
    assert saved.n_entities == kg.n_entities and saved.relation.shape[0] == kg.n_relations
    assert checkpoint.n_entities > kg.n_entities  # the loaded model itself is left as it was


def test_validation_ranks_only_the_returned_models_entities(kg, whitelist):
    """The attribute rows leave the returned model, so validation must not rank them: the best
    valid MRR the run reports is the returned model's own."""
    emb = kgnum.train(kg, "TransE_l2", dim=32, epochs=6, valid_every=5, patience=100, workers=1, progress=False,
                      seed=0, debias="gender", attribute_whitelist=whitelist)
    stats = emb.train_stats
    assert len(stats["valid_history"]) >= 2
    mine = kgnum.evaluate(emb, kg, "valid", exclude_relations=["gender"])["mrr"]
    assert stats["best_valid_mrr"] == pytest.approx(mine, abs=1e-6)


@pytest.mark.parametrize("line, why", [("no_such_relation", "no relation 'no_such_relation'"),
                                       ("member_of\tno_such_team", "no entity 'no_such_team'"),
                                       ("member_of\tteam_m0\textra", "expected REL or REL<TAB>TAIL")])
def test_bad_whitelist_lines_are_named(kg, tmp_path, line, why):
    path = tmp_path / "wl.tsv"
    path.write_text("member_of\n" + line + "\n")
    with pytest.raises(ValueError, match=rf"--attribute-whitelist {path}, line 2: {why}"):
        kgnum.train(kg, "TransE_l2", dim=8, max_steps=1, debias="gender", attribute_whitelist=str(path))


def test_attribute_flags_need_debias_and_kl(kg, whitelist):
    with pytest.raises(ValueError, match="--attribute-vectors True: only with --debias"):
        kgnum.train(kg, "TransE_l2", dim=8, max_steps=1, attribute_vectors=True)
    with pytest.raises(ValueError, match="--attribute-vectors True: only with --debias-method kl"):
        kgnum.train(kg, "TransE_l2", dim=8, max_steps=1, debias="gender", attribute_vectors=True,
                    debias_method="adversarial")


def test_cli_attribute_whitelist(kg, whitelist, tmp_path, write_tsv, capsys):
    data = write_tsv(kg, tmp_path / "data")
    assert main(["train", "--data-path", str(data), "--model", "TransE_l2", "--dim", "16", "--max-steps", "30",
                 "--workers", "1", "--debias", "gender", "--attribute-whitelist", whitelist,
                 "--save", str(tmp_path / "m")]) == 0
    saved = kgnum.load(str(tmp_path / "m"))
    assert not any(str(n).endswith("[ATTR]") for n in saved.relation_names)


def test_a_person_with_two_values_as_frequent_gets_one_by_name_not_by_id():
    """Which value's attribute vector a person with two equally frequent values gets must not
    depend on the order of train.txt (it numbers the entities)."""
    from kgnum.data import KnowledgeGraph
    from kgnum.kernels.attributes import person_values

    lines = [("p0", "rel", "zeta"), ("p0", "rel", "alpha"), ("p1", "rel", "zeta"), ("p2", "rel", "alpha"),
             ("p3", "rel", "zeta"), ("p4", "rel", "alpha")]  # zeta and alpha: 3 persons each

    def chosen(order):
        rows = [lines[i] for i in order]
        names = list(dict.fromkeys(n for h, _, t in rows for n in (h, t)))  # ids in order of appearance
        train = np.array([[names.index(h), 0, names.index(t)] for h, _, t in rows], dtype=np.int32)
        graph = KnowledgeGraph("g", train, np.zeros((0, 3), np.int32), np.zeros((0, 3), np.int32), names, ["rel"])
        _, _, best = person_values(graph, "rel", 30)
        return {names[p]: names[v] for p, v in best.items()}

    assert chosen(range(6))["p0"] == chosen([1, 0, 2, 3, 4, 5])["p0"] == "alpha"


def test_a_twin_triple_adds_the_attribute_vector_of_its_own_value():
    """BIAS.md: for each sensitive triple (p, r_j, v) the twin (e_p + A_v, r_j[ATTR], v). A person
    with two values trains both vectors, each on its own triple; it used to add the vector of the
    person's most frequent value to both, so A_alpha learned to predict zeta."""
    from kgnum.data import KnowledgeGraph
    from kgnum.kernels.attributes import _augmentations, _reference_augmentations

    lines = [("p0", "rel", "zeta"), ("p0", "rel", "alpha"), ("p1", "rel", "zeta"), ("p2", "rel", "zeta"),
             ("p3", "rel", "alpha"), ("p0", "knows", "p1")]
    names = list(dict.fromkeys(n for h, _, t in lines for n in (h, t)))
    rels = ["rel", "knows"]
    train = np.array([[names.index(h), rels.index(r), names.index(t)] for h, r, t in lines], dtype=np.int32)
    empty = np.zeros((0, 3), np.int32)
    graph = KnowledgeGraph("g", train, empty, empty, names, rels)
    cfg = TrainConfig(model="TransE_l2", dim=8, max_steps=1, debias="rel", attribute_vectors=True).validate()
    big = augment(graph, cfg)
    terms, params = active_terms(cfg, big)
    p = params[terms.index("attributes")]
    twin = big.relation_id(twin_name("rel"))
    rows = big.train[big.train[:, 1] == twin].astype(np.int64)
    aug = _augmentations(p, rows[:, 0], rows[:, 1], rows[:, 2])
    got = {(str(big.entity_names[rows[i, 0]]), str(big.entity_names[rows[i, 2]])): str(big.entity_names[a])
           for i, side, a in aug.tolist()}
    assert got == {(h, t): attribute_name("rel", t) for h, r, t in lines if r == "rel"}
    for i in range(rows.shape[0]):  # the reference agrees
        (side, a), = _reference_augmentations(p, int(rows[i, 0]), int(rows[i, 1]), int(rows[i, 2]))
        assert str(big.entity_names[a]) == attribute_name("rel", str(big.entity_names[rows[i, 2]]))
