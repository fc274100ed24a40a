"""Tests of kgnum.eval / kgnum.kernels.ranking (filtered link-prediction ranking)."""

import numpy as np
import pytest

from kgnum.eval import FilterIndex, evaluate_ranks, link_prediction_metrics, metrics_from_ranks

N_ENT, N_REL = 50, 5


def random_graph(seed=0, n_triples=400):
    rng = np.random.default_rng(seed)
    known = np.stack(
        [rng.integers(0, N_ENT, n_triples), rng.integers(0, N_REL, n_triples), rng.integers(0, N_ENT, n_triples)],
        axis=1,
    ).astype(np.int32)
    # queries: 150 known triples (filtered answers exist) + 20 unseen ones (own answer not in the index)
    unseen = np.stack(
        [rng.integers(0, N_ENT, 20), rng.integers(0, N_REL, 20), rng.integers(0, N_ENT, 20)], axis=1
    ).astype(np.int32)
    queries = np.concatenate([known[rng.choice(n_triples, 150, replace=False)], unseen])
    return known, queries


def table_score_fn(table_tail, table_head, calls=None):
    """score_fn looking rows up in fixed tables (n_ent, n_rel, n_ent): batch independent."""

    def score_fn(anchor, rel, predict_head):
        assert anchor.dtype == np.int32 and rel.dtype == np.int32
        if calls is not None:
            calls.append((anchor.copy(), rel.copy(), predict_head))
        table = table_head if predict_head else table_tail
        return table[anchor, rel].astype(np.float32)

    return score_fn


def random_tables(seed, kind):
    rng = np.random.default_rng(seed)
    shape = (N_ENT, N_REL, N_ENT)
    if kind == "continuous":
        return rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    if kind == "ties":  # few distinct values -> many ties
        return rng.integers(-2, 3, shape).astype(np.float32), rng.integers(-2, 3, shape).astype(np.float32)
    if kind == "nan":  # continuous with NaN sprinkled in (true scores and candidates)
        a, b = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
        a[rng.random(shape) < 0.05] = np.nan
        b[rng.random(shape) < 0.05] = np.nan
        return a, b
    raise AssertionError(kind)


def brute_force_ranks(table_tail, table_head, queries, known, side):
    """Explicit filtered candidate set per query, then count greater / equal."""
    known_set = set(map(tuple, np.asarray(known).tolist()))
    out = []
    for h, r, t in np.asarray(queries).tolist():
        if side == "tail":
            row, true = table_tail[h, r], t
            cands = [e for e in range(N_ENT) if e == true or (h, r, e) not in known_set]
        else:
            row, true = table_head[t, r], h
            cands = [e for e in range(N_ENT) if e == true or (e, r, t) not in known_set]
        s = row[true]
        if np.isnan(s):
            out.append(float(N_ENT))
            continue
        others = row[[e for e in cands if e != true]]
        greater = np.sum(others > s) + np.sum(np.isnan(others))  # NaN candidates count as better
        equal = np.sum(others == s)
        out.append(1.0 + greater + equal / 2.0)
    return np.array(out)


@pytest.mark.parametrize("kind", ["continuous", "ties", "nan"])
@pytest.mark.parametrize("batch_size", [7, 512])
def test_matches_brute_force(kind, batch_size):
    known, queries = random_graph(seed=1)
    tt, th = random_tables(2, kind)
    index = FilterIndex.from_triples(known, N_ENT, N_REL)
    ranks = evaluate_ranks(table_score_fn(tt, th), queries, index, N_ENT, batch_size=batch_size)
    assert set(ranks) == {"head", "tail"}
    for side in ("head", "tail"):
        assert ranks[side].dtype == np.float64 and ranks[side].shape == (len(queries),)
        np.testing.assert_array_equal(ranks[side], brute_force_ranks(tt, th, queries, known, side))


def test_constant_rows_give_middle_rank():
    known, queries = random_graph(seed=3)
    index = FilterIndex.from_triples(known, N_ENT, N_REL)

    def const_fn(anchor, rel, predict_head):
        return np.zeros((len(anchor), N_ENT), dtype=np.float32)

    ranks = evaluate_ranks(const_fn, queries, index, N_ENT)
    known_set = set(map(tuple, known.tolist()))
    for side in ("head", "tail"):
        expected = []
        for h, r, t in queries.tolist():
            if side == "tail":
                n_other_known = sum((h, r, e) in known_set for e in range(N_ENT) if e != t)
            else:
                n_other_known = sum((e, r, t) in known_set for e in range(N_ENT) if e != h)
            n_cand = N_ENT - n_other_known  # includes the true answer
            expected.append((1 + n_cand) / 2)
        np.testing.assert_array_equal(ranks[side], expected)
    # a query with nothing to filter: (1 + n_entities) / 2
    lone = np.array([[0, 0, 1]], dtype=np.int32)
    empty_index = FilterIndex.from_triples(np.empty((0, 3), np.int32), N_ENT, N_REL)
    r = evaluate_ranks(const_fn, lone, empty_index, N_ENT)
    assert r["tail"][0] == r["head"][0] == (1 + N_ENT) / 2


def test_integer_ties_hand_made():
    # tail row for (0, 0): entity scores [3, 5, 5, 5, 1, 9]; true tail 2; no filter.
    row = np.array([3, 5, 5, 5, 1, 9], dtype=np.float32)

    def fn(anchor, rel, predict_head):
        return np.tile(row, (len(anchor), 1))

    index = FilterIndex.from_triples(np.empty((0, 3), np.int32), 6, 1)
    r = evaluate_ranks(fn, np.array([[0, 0, 2]], np.int32), index, 6, sides=("tail",))
    # 1 better (9), 2 tied (entities 1, 3): optimistic 2, pessimistic 4 -> 3
    assert r["tail"][0] == 3.0


def filter_setup():
    """6 entities, 1 relation; tail row of head 0: e1 = 10, e2 = 5, e3 = 5, others 0.

    Known: (0,0,1), (0,0,2).  Query (0,0,2): e1 is a known answer scored above the
    true e2, e3 ties with e2.
    """
    row = np.array([0, 10, 5, 5, 0, 0], dtype=np.float32)

    def fn(anchor, rel, predict_head):
        return np.tile(row, (len(anchor), 1))

    return fn


def test_filtering_removes_known_answer_above_truth():
    fn = filter_setup()
    query = np.array([[0, 0, 2]], np.int32)
    unfiltered = FilterIndex.from_triples(np.empty((0, 3), np.int32), 6, 1)
    assert evaluate_ranks(fn, query, unfiltered, 6, sides=("tail",))["tail"][0] == 2.5  # 1 better + tie
    known = np.array([[0, 0, 1], [0, 0, 2]], np.int32)
    filtered = FilterIndex.from_triples(known, 6, 1)
    # e1 filtered: 0 better, one tie (e3); the own answer e2 is in the index but not removed
    assert evaluate_ranks(fn, query, filtered, 6, sides=("tail",))["tail"][0] == 1.5
    # duplicate known triples are collapsed, not subtracted twice
    dup = FilterIndex.from_triples(np.concatenate([known, known, known[:1]]), 6, 1)
    assert evaluate_ranks(fn, query, dup, 6, sides=("tail",))["tail"][0] == 1.5


def test_filtering_is_per_side_and_per_relation():
    fn = filter_setup()
    query = np.array([[0, 0, 2]], np.int32)
    # (1, 0, 0) is a known triple with head 1, but it is not an answer of (0, 0, ?)
    # and (0, 1, 1) has another relation: neither may filter e1 out of the tail ranking.
    other = FilterIndex.from_triples(np.array([[1, 0, 0], [0, 1, 1], [0, 0, 2]], np.int32), 6, 2)
    assert evaluate_ranks(fn, query, other, 6, sides=("tail",))["tail"][0] == 2.5
    # head side: anchor is the tail 2, known heads of (?, 0, 2) are {0, 4}; row scores
    # e1 = 10 (unknown -> counts), e0 = 0 true, e4 = 0 known (filtered), e5 = 0 tie.
    idx = FilterIndex.from_triples(np.array([[0, 0, 2], [4, 0, 2]], np.int32), 6, 1)
    r = evaluate_ranks(fn, query, idx, 6, sides=("head",))["head"][0]
    # better: e1, e2, e3 (3); ties with 0: e5 only (e4 filtered) -> 1 + 3 + 0.5
    assert r == 4.5


def test_own_answer_never_filtered_even_if_only_known_answer():
    # true entity has the unique top score and is the only known answer: rank 1 exactly
    row = np.array([0, 0, 7, 0], dtype=np.float32)

    def fn(anchor, rel, predict_head):
        return np.tile(row, (len(anchor), 1))

    idx = FilterIndex.from_triples(np.array([[2, 0, 2]], np.int32), 4, 1)
    r = evaluate_ranks(fn, np.array([[2, 0, 2]], np.int32), idx, 4)
    assert r["tail"][0] == 1.0 and r["head"][0] == 1.0


def test_nan_true_score_is_worst_rank():
    row = np.array([np.nan, 1, 2, 3], dtype=np.float32)

    def fn(anchor, rel, predict_head):
        return np.tile(row, (len(anchor), 1))

    idx = FilterIndex.from_triples(np.array([[1, 0, 3], [1, 1, 0], [1, 1, 3]], np.int32), 4, 2)
    q = np.array([[1, 0, 0], [1, 0, 2], [1, 1, 2]], np.int32)
    r = evaluate_ranks(fn, q, idx, 4, sides=("tail",))
    # q0: true score NaN -> n_entities.  q1: true score 2, e3 filtered, unfiltered NaN e0
    # counts as better -> 2.  q2: e0 (NaN) and e3 both filtered -> 1.
    np.testing.assert_array_equal(r["tail"], [4.0, 2.0, 1.0])


def test_metrics_do_not_depend_on_the_order_of_the_ranks():
    """A test file in another line order gives the same metrics to the last bit (a JSON diff of two
    evaluations of the same model shows nothing), not sums that differ in the last digit."""
    rng = np.random.default_rng(0)
    ranks = np.maximum(1.0, rng.integers(1, 500, 20000) + rng.random(20000).round(1))
    assert metrics_from_ranks(ranks) == metrics_from_ranks(ranks[rng.permutation(ranks.size)])


def test_metrics_from_ranks_hand_computed():
    m = metrics_from_ranks(np.array([1, 2, 4, 20]))
    assert set(m) == {"mrr", "mr", "hits@1", "hits@3", "hits@10"}
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4 + 1 / 20) / 4)  # 0.45
    assert m["mr"] == pytest.approx(6.75)
    assert m["hits@1"] == pytest.approx(0.25)
    assert m["hits@3"] == pytest.approx(0.5)
    assert m["hits@10"] == pytest.approx(0.75)
    # a tie at the top (rank 1.5) is not a hit@1; hits@k include rank k itself
    m2 = metrics_from_ranks(np.array([1.5, 3.0, 10.0, 10.5]))
    assert m2["hits@1"] == 0.0 and m2["hits@3"] == 0.5 and m2["hits@10"] == 0.75
    assert all(isinstance(v, float) for v in m.values())


def test_batch_size_does_not_change_ranks_and_bounds_batches():
    known, queries = random_graph(seed=4)
    tt, th = random_tables(5, "ties")
    index = FilterIndex.from_triples(known, N_ENT, N_REL)
    ref = evaluate_ranks(table_score_fn(tt, th), queries, index, N_ENT, batch_size=10_000)
    for bs in (1, 3, 64):
        calls, done = [], []
        r = evaluate_ranks(table_score_fn(tt, th, calls), queries, index, N_ENT, batch_size=bs, progress=done.append)
        for side in ("head", "tail"):
            np.testing.assert_array_equal(r[side], ref[side])
        assert max(len(a) for a, _, _ in calls) <= bs
        assert done == sorted(done) and done[-1] == 2 * len(queries)


def test_each_anchor_relation_pair_scored_once_per_side():
    known, queries = random_graph(seed=6)
    queries = np.concatenate([queries, queries[:30]])  # force repeated (anchor, relation) pairs
    tt, th = random_tables(7, "continuous")
    index = FilterIndex.from_triples(known, N_ENT, N_REL)
    calls = []
    ranks = evaluate_ranks(table_score_fn(tt, th, calls), queries, index, N_ENT, batch_size=16)
    for side, col in (("tail", 0), ("head", 2)):
        pairs = [
            (a, r) for anc, rel, ph in calls if ph == (side == "head") for a, r in zip(anc.tolist(), rel.tolist())
        ]
        expected = set(map(tuple, queries[:, [col, 1]].tolist()))
        assert len(pairs) == len(set(pairs)) == len(expected) and set(pairs) == expected
        np.testing.assert_array_equal(ranks[side], brute_force_ranks(tt, th, queries, known, side))


def test_sides_selection_and_link_prediction_metrics():
    known, queries = random_graph(seed=8)
    tt, th = random_tables(9, "continuous")
    fn = table_score_fn(tt, th)
    index = FilterIndex.from_triples(known, N_ENT, N_REL)
    only_tail = evaluate_ranks(fn, queries, index, N_ENT, sides=("tail",))
    assert set(only_tail) == {"tail"}

    res = link_prediction_metrics(fn, queries, known, N_ENT, N_REL, batch_size=13)
    bh = brute_force_ranks(tt, th, queries, known, "head")
    bt = brute_force_ranks(tt, th, queries, known, "tail")
    both = metrics_from_ranks(np.concatenate([bh, bt]))
    for k, v in both.items():
        assert res[k] == pytest.approx(v)
    assert res["head"] == pytest.approx(metrics_from_ranks(bh))
    assert res["tail"] == pytest.approx(metrics_from_ranks(bt))
    assert res["n_queries"] == 2 * len(queries)

    res_t = link_prediction_metrics(fn, queries, known, N_ENT, N_REL, sides=("tail",))
    assert "head" not in res_t and res_t["n_queries"] == len(queries)
    assert res_t["mrr"] == pytest.approx(metrics_from_ranks(bt)["mrr"])


def test_filter_index_lookup():
    known = np.array([[0, 1, 3], [0, 1, 2], [0, 1, 3], [4, 1, 3], [0, 0, 4]], np.int32)
    idx = FilterIndex.from_triples(known, 5, 2)
    np.testing.assert_array_equal(idx.answers(0, 1, predict_head=False), [2, 3])
    np.testing.assert_array_equal(idx.answers(3, 1, predict_head=True), [0, 4])
    np.testing.assert_array_equal(idx.answers(4, 0, predict_head=True), [0])
    assert idx.answers(1, 1, predict_head=False).size == 0
    assert idx.answers(4, 1, predict_head=False).tolist() == [3]
    assert idx.n_known == 4


# ---------------------------------------------------------------- bad inputs


def _ok_setup():
    known, queries = random_graph(seed=10)
    tt, th = random_tables(11, "continuous")
    return known, queries, table_score_fn(tt, th), FilterIndex.from_triples(known, N_ENT, N_REL)


@pytest.mark.parametrize(
    "bad_fn, match",
    [
        (lambda a, r, ph: np.zeros((len(a), N_ENT - 1), np.float32), r"score_fn.*shape"),
        (lambda a, r, ph: np.zeros((len(a) + 1, N_ENT), np.float32), r"score_fn.*shape"),
        (lambda a, r, ph: np.zeros((len(a), N_ENT), np.float64), r"score_fn.*float32"),
        (lambda a, r, ph: np.zeros((len(a), N_ENT), np.float32).tolist(), r"score_fn.*ndarray"),
    ],
)
def test_bad_score_fn_output(bad_fn, match):
    _, queries, _, index = _ok_setup()
    with pytest.raises(ValueError, match=match):
        evaluate_ranks(bad_fn, queries, index, N_ENT)


def test_bad_triples_and_arguments():
    known, queries, fn, index = _ok_setup()
    with pytest.raises(ValueError, match=r"triples.*\(n, 3\)"):
        evaluate_ranks(fn, queries[:, :2], index, N_ENT)
    with pytest.raises(ValueError, match=r"triples.*\(n, 3\)"):
        evaluate_ranks(fn, queries.ravel(), index, N_ENT)
    with pytest.raises(ValueError, match=r"triples.*integer"):
        evaluate_ranks(fn, queries.astype(np.float32), index, N_ENT)
    bad = queries.copy()
    bad[0, 2] = N_ENT
    with pytest.raises(ValueError, match=r"triples.*entity"):
        evaluate_ranks(fn, bad, index, N_ENT)
    bad = queries.copy()
    bad[3, 0] = -1
    with pytest.raises(ValueError, match=r"triples.*entity"):
        evaluate_ranks(fn, bad, index, N_ENT)
    bad = queries.copy()
    bad[1, 1] = N_REL
    with pytest.raises(ValueError, match=r"triples.*relation"):
        evaluate_ranks(fn, bad, index, N_ENT)
    with pytest.raises(ValueError, match="filter_index"):
        evaluate_ranks(fn, queries, index, N_ENT + 1)
    with pytest.raises(ValueError, match="filter_index"):
        evaluate_ranks(fn, queries, known, N_ENT)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_ranks(fn, queries, index, N_ENT, batch_size=0)
    with pytest.raises(ValueError, match="sides"):
        evaluate_ranks(fn, queries, index, N_ENT, sides=("tails",))
    with pytest.raises(ValueError, match="sides"):
        evaluate_ranks(fn, queries, index, N_ENT, sides=())
    bad_known = known.copy()
    bad_known[5, 1] = N_REL + 2
    with pytest.raises(ValueError, match=r"known_triples.*relation"):
        link_prediction_metrics(fn, queries, bad_known, N_ENT, N_REL)
    with pytest.raises(ValueError, match=r"known_triples.*\(n, 3\)"):
        link_prediction_metrics(fn, queries, known[:, :2], N_ENT, N_REL)
    with pytest.raises(ValueError, match=r"triples.*entity"):
        FilterIndex.from_triples(known, N_ENT - 10, N_REL)
    with pytest.raises(ValueError, match="n_relations"):
        FilterIndex.from_triples(known, N_ENT, 0)


def test_bad_ranks():
    with pytest.raises(ValueError, match="ranks"):
        metrics_from_ranks(np.array([0.0, 2.0]))
    with pytest.raises(ValueError, match="ranks"):
        metrics_from_ranks(np.array([]))
    with pytest.raises(ValueError, match="ranks"):
        metrics_from_ranks(np.array([1.0, np.nan]))


def test_per_relation_metrics_add_up_to_the_pooled_ones(small_kg):
    import kgnum

    emb = kgnum.train(small_kg, "TransE_l2", max_steps=50, dim=16, workers=1, progress=False)
    m = kgnum.evaluate(emb, small_kg, per_relation=True)
    rows = m["per_relation"]
    assert sum(r["triples"] for r in rows) == small_kg.test.shape[0]
    assert [r["triples"] for r in rows] == sorted((r["triples"] for r in rows), reverse=True)
    # the pooled MRR is the triple-weighted mean of the per-relation ones
    pooled = sum(r["mrr"] * r["triples"] for r in rows) / sum(r["triples"] for r in rows)
    assert pooled == pytest.approx(m["mrr"], rel=1e-9)
    assert all(r["name"] == small_kg.relation_names[r["relation"]] for r in rows)
    assert all(0 < r["head"]["mrr"] <= 1 and 0 < r["tail"]["mrr"] <= 1 for r in rows)


def test_cli_per_relation_table_shows_mrr_and_hits_at_10_per_side(small_kg, tmp_path, capsys, write_tsv):
    """Issue 14: ``kgnum eval --per-relation``: MRR and Hits@10 per relation and per side (head /
    tail), with the triple count of each, as a table and in the JSON."""
    import json

    import kgnum
    from kgnum.cli import main

    emb = kgnum.train(small_kg, "TransE_l2", max_steps=50, dim=16, workers=1, progress=False)
    emb.save(str(tmp_path / "model"))
    folder = write_tsv(small_kg, tmp_path / "graph")
    out = tmp_path / "eval.json"
    assert main(["eval", "--load", str(tmp_path / "model"), "--data-path", str(folder), "--per-relation",
                 "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("relation"))
    assert header.split()[1:] == ["triples", "MRR", "H@10", "head", "MRR", "tail", "MRR", "head", "H@10",
                                  "tail", "H@10"]
    rows = json.loads(out.read_text())["per_relation"]
    first = next(line for line in lines if line.startswith(rows[0]["name"] + " ")).split()
    assert int(first[1]) == rows[0]["triples"]
    assert [float(x) for x in first[-2:]] == pytest.approx([rows[0]["head"]["hits@10"], rows[0]["tail"]["hits@10"]],
                                                           abs=5e-4)


def test_topk_rows_matches_a_full_sort_and_skips_excluded():
    from kgnum.kernels.ranking import topk_rows

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 300)).astype(np.float32)
    scores[3, :295] = -np.inf  # only 5 candidates left in this row
    scores[4, 7] = np.nan
    idx, val = topk_rows(scores, 10)
    for i in range(50):
        finite = np.flatnonzero(np.isfinite(scores[i]))
        want = finite[np.argsort(-scores[i, finite], kind="stable")][:10]
        got = idx[i][idx[i] >= 0]
        assert np.array_equal(got, want), i
        np.testing.assert_array_equal(val[i][: got.size], scores[i, got])
    assert (idx[3] >= 0).sum() == 5 and 7 not in idx[4]


def test_per_relation_rows_do_not_depend_on_how_the_model_numbers_its_relations(small_kg):
    """Relations with as many test triples come in name order: the same model with its relation
    rows renumbered gives the same table, row for row."""
    import dataclasses

    import kgnum
    from kgnum.embeddings import Embeddings

    test = np.concatenate([small_kg.test[small_kg.test[:, 1] == r][:8] for r in range(small_kg.n_relations)])
    kg = dataclasses.replace(small_kg, test=test)  # 8 test triples per relation: every count ties
    emb = kgnum.train(kg, "TransE_l2", max_steps=50, dim=16, workers=1, progress=False)
    perm = np.random.default_rng(0).permutation(kg.n_relations)
    renumbered = Embeddings(emb.model, emb.entity, emb.relation[perm], emb.config, emb.entity_names,
                            emb.relation_names[perm])

    def rows(model):
        return [{k: v for k, v in r.items() if k != "relation"}
                for r in kgnum.evaluate(model, kg, per_relation=True)["per_relation"]]

    assert [r["name"] for r in rows(emb)] == sorted(kg.relation_names)
    assert rows(renumbered) == rows(emb)
