"""Batch inference from files (kgnum predict / similar, as dglke_predict / dglke_emb_sim) and
exports (kgnum export): the TSV output against direct Embeddings calls, the known marking, the
pairing modes, the similarity metrics against NumPy brute force, word2vec / Parquet / npy read
back, and the one-line errors."""
import itertools
import logging
import sys

import numpy as np
import pytest

import kgnum
from kgnum.cli import main
from kgnum.embeddings import Embeddings
from kgnum.export import read_word2vec

K = 4


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    kg = kgnum.synthetic(n_entities=200, n_relations=5, n_train=3000, n_valid=100, n_test=100, seed=1)
    emb = kgnum.train(kg, "TransE_l2", dim=16, max_steps=50, workers=1, progress=False)
    path = tmp_path_factory.mktemp("inference") / "model"
    emb.save(str(path))
    return str(path), kgnum.load(str(path))


def lines(tmp_path, name, items):
    path = tmp_path / name
    path.write_text("".join(f"{x}\n" for x in items))
    return str(path)


def run_tsv(capsys, *args):
    capsys.readouterr()
    assert main(list(args)) == 0
    out = capsys.readouterr().out.splitlines()
    header = out[0].split("\t")
    return header, [line.split("\t") for line in out[1:]]


def run_error(capsys, *args):
    capsys.readouterr()
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


HEADS = ["e0", "e7", "e42"]
RELS = ["r0", "r3"]
TAILS = ["e5", "e9"]


def test_h_r_star_is_predict_tail_of_every_head_and_relation(model, tmp_path, capsys):
    path, emb = model
    header, rows = run_tsv(capsys, "predict", "--load", path, "--head-file", lines(tmp_path, "h", HEADS),
                           "--relation-file", lines(tmp_path, "r", RELS), "--format", "h_r_*", "--topk", str(K))
    assert header == ["head", "relation", "tail", "score"]  # exclude-mode all: nothing known is shown
    pairs = list(itertools.product(HEADS, RELS))  # the cross product, relations varying fastest
    want = emb.predict_tail([h for h, _ in pairs], [r for _, r in pairs], K, exclude="all")
    assert len(rows) == len(pairs) * K
    for q, (h, r) in enumerate(pairs):
        got = rows[q * K:(q + 1) * K]
        assert all(row[0] == h and row[1] == r for row in got)
        assert [row[2] for row in got] == [name for name, _ in want[q]]
        assert [float(row[3]) for row in got] == pytest.approx([s for _, s in want[q]], rel=1e-5, abs=1e-5)


def test_star_r_t_is_predict_head_and_ids_read_like_names(model, tmp_path, capsys):
    path, emb = model
    rel_ids, tail_ids = [emb.relation_id(r) for r in RELS], [emb.entity_id(t) for t in TAILS]
    by_name = run_tsv(capsys, "predict", "--load", path, "--relation-file", lines(tmp_path, "r", RELS),
                      "--tail-file", lines(tmp_path, "t", TAILS), "--topk", str(K), "--raw_data")
    by_id = run_tsv(capsys, "predict", "--load", path, "--relation-file", lines(tmp_path, "ri", rel_ids),
                    "--tail-file", lines(tmp_path, "ti", tail_ids), "--topk", str(K), "--ids", "--format", "*_r_t")
    assert by_name == by_id
    rows = by_name[1]
    pairs = list(itertools.product(RELS, TAILS))
    want = emb.predict_head([r for r, _ in pairs], [t for _, t in pairs], K, exclude="all")
    for q, (r, t) in enumerate(pairs):
        got = rows[q * K:(q + 1) * K]
        assert all(row[1] == r and row[2] == t for row in got)
        assert [row[0] for row in got] == [name for name, _ in want[q]]
        assert [float(row[3]) for row in got] == pytest.approx([s for _, s in want[q]], rel=1e-5, abs=1e-5)


def test_h_r_t_scores_every_triple_and_topk_keeps_the_best(model, tmp_path, capsys):
    path, emb = model
    files = ["--head-file", lines(tmp_path, "h", HEADS), "--relation-file", lines(tmp_path, "r", RELS),
             "--tail-file", lines(tmp_path, "t", TAILS)]
    header, rows = run_tsv(capsys, "predict", "--load", path, *files)
    assert header == ["head", "relation", "tail", "score", "known"]  # h_r_t marks, never drops
    triples = list(itertools.product(HEADS, RELS, TAILS))
    assert [tuple(row[:3]) for row in rows] == triples
    want = emb.score(*zip(*triples))
    assert [float(row[3]) for row in rows] == pytest.approx(want.tolist(), rel=1e-5, abs=1e-5)
    _, best = run_tsv(capsys, "predict", "--load", path, *files, "--topk", "3")
    order = np.argsort(-want, kind="stable")[:3]
    assert [tuple(row[:3]) for row in best] == [triples[i] for i in order]


def test_h_star_t_ranks_every_relation_by_score(model, tmp_path, capsys):
    path, emb = model
    header, rows = run_tsv(capsys, "predict", "--load", path, "--data_files", lines(tmp_path, "h", HEADS),
                           lines(tmp_path, "t", TAILS), "--format", "h_*_t", "--topk", "3", "--exclude-mode", "none")
    assert header[:4] == ["head", "relation", "tail", "score"]
    n_rel = emb.relation.shape[0]
    for q, (h, t) in enumerate(itertools.product(HEADS, TAILS)):
        scores = emb.score([h] * n_rel, list(range(n_rel)), [t] * n_rel)
        order = np.argsort(-scores, kind="stable")[:3]
        got = rows[q * 3:(q + 1) * 3]
        assert all(row[0] == h and row[2] == t for row in got)
        assert [row[1] for row in got] == [str(emb.relation_names[i]) for i in order]
        assert [float(row[3]) for row in got] == pytest.approx(scores[order].tolist(), rel=1e-5, abs=1e-5)


def test_triplet_wise_pairs_line_i_with_line_i(model, tmp_path, capsys):
    path, emb = model
    heads, rels, tails = ["e0", "e7", "e42"], ["r0", "r3", "r1"], ["e5", "e9", "e11"]
    files = ["--head-file", lines(tmp_path, "h", heads), "--relation-file", lines(tmp_path, "r", rels),
             "--tail-file", lines(tmp_path, "t", tails)]
    _, paired = run_tsv(capsys, "predict", "--load", path, *files, "--exec-mode", "triplet_wise")
    _, product = run_tsv(capsys, "predict", "--load", path, *files, "--exec_mode", "all")
    assert [tuple(row[:3]) for row in paired] == list(zip(heads, rels, tails))
    assert len(product) == 27 and all(row in product for row in paired)
    # a single value is used with every line
    _, one = run_tsv(capsys, "predict", "--load", path, "--head", "e0", "--relation-file", lines(tmp_path, "r2", rels),
                     "--exec-mode", "triplet_wise", "--topk", "2")
    want = emb.predict_tail(["e0"] * 3, rels, 2, exclude="all")
    assert [row[2] for row in one] == [name for q in want for name, _ in q]
    assert "triplet_wise" in run_error(capsys, "predict", "--load", path, "--head-file", lines(tmp_path, "h2", heads[:2]),
                                       "--relation-file", lines(tmp_path, "r3", rels), "--exec-mode", "triplet_wise")


def test_known_answers_marked_when_shown_and_left_out_otherwise(model, tmp_path, capsys):
    path, emb = model
    train = emb.known_triples["train"]
    h, r = int(train[0, 0]), int(train[0, 1])
    head, rel = str(emb.entity_names[h]), str(emb.relation_names[r])
    every = np.concatenate([emb.known_triples[s] for s in ("train", "valid", "test")])
    known = {str(emb.entity_names[t]) for hh, rr, t in every.tolist() if (hh, rr) == (h, r)}
    in_train = {str(emb.entity_names[t]) for hh, rr, t in train.tolist() if (hh, rr) == (h, r)}
    args = ["predict", "--load", path, "--head-file", lines(tmp_path, "h", [head]), "--relation-file",
            lines(tmp_path, "r", [rel])]
    header, rows = run_tsv(capsys, *args, "--topk", "200", "--exclude-mode", "none")
    assert header[-1] == "known" and len(rows) == 200
    assert {row[2] for row in rows if row[4] == "1"} == known and known
    assert all(row[4] == "0" for row in rows if row[2] not in known)
    _, rows = run_tsv(capsys, *args, "--topk", "200", "--exclude-mode", "train")
    assert not {row[2] for row in rows} & in_train
    assert {row[2] for row in rows if row[4] == "1"} == known - in_train
    header, rows = run_tsv(capsys, *args, "--topk", "200")
    assert "known" not in header and not {row[2] for row in rows} & known
    assert len(rows) == 200 - len(known)


@pytest.mark.parametrize("side", ["head", "tail"])
def test_one_query_marks_the_valid_and_test_answers_exclude_mode_train_shows(model, capsys, side):
    path, emb = model
    h, r, t = (int(x) for x in emb.known_triples["valid"][0])
    # --head h asks for the tails of (h, r), --tail t for the heads of (r, t)
    anchor, anchor_col, answer_col = (h, 0, 2) if side == "head" else (t, 2, 0)
    answers = {s: {str(emb.entity_names[x[answer_col]]) for x in emb.known_triples[s].tolist()
                   if (x[anchor_col], x[1]) == (anchor, r)} for s in ("train", "valid", "test")}
    capsys.readouterr()
    assert main(["predict", "--load", path, f"--{side}", str(emb.entity_names[anchor]), "--relation",
                 str(emb.relation_names[r]), "--k", "200", "--exclude-mode", "train"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    shown = {line.split()[1]: line.endswith("(known)") for line in out}
    held_out = (answers["valid"] | answers["test"]) - answers["train"]
    assert held_out and not set(shown) & answers["train"]
    assert {name for name, marked in shown.items() if marked} == held_out


def test_output_file_holds_what_stdout_shows(model, tmp_path, capsys):
    path, _ = model
    args = ["predict", "--load", path, "--head-file", lines(tmp_path, "h", HEADS), "--relation", "r0"]
    _, rows = run_tsv(capsys, *args)
    out = tmp_path / "out.tsv"
    assert main(args + ["--output", str(out)]) == 0
    text = out.read_text().splitlines()
    assert [line.split("\t") for line in text[1:]] == rows and len(rows) == 3 * 10


def brute_force(table, q, metric, k):
    if metric == "cosine":
        unit = table / (np.linalg.norm(table, axis=1, keepdims=True) + 1e-12)
        values, higher = unit @ unit[q], True
    elif metric == "dot":
        values, higher = table @ table[q], True
    elif metric == "l2":
        values, higher = np.sqrt(((table.astype(np.float64) - table[q]) ** 2).sum(1)), False
    else:
        values, higher = np.abs(table.astype(np.float64) - table[q]).sum(1), False
    order = [i for i in np.argsort(-values if higher else values, kind="stable") if i != q][:k]
    return order, values[order]


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2", "l1"])
@pytest.mark.parametrize("kind", ["entity", "relation"])
def test_similar_metrics_match_numpy_brute_force(metric, kind):
    rng = np.random.default_rng(7)
    emb = Embeddings("TransE_l2", rng.normal(size=(300, 12)).astype(np.float32),
                     rng.normal(size=(40, 12)).astype(np.float32), {"gamma": 4.0})
    table = emb.entity if kind == "entity" else emb.relation
    queries = np.arange(0, table.shape[0], 3)
    got = emb.similar(queries, 5, metric=metric, kind=kind)
    names = emb.entity_names if kind == "entity" else emb.relation_names
    for q, neighbours in zip(queries, got):
        order, values = brute_force(table, q, metric, 5)
        assert [n for n, _ in neighbours] == [str(names[i]) for i in order]
        assert [v for _, v in neighbours] == pytest.approx(values.tolist(), rel=1e-4, abs=1e-4)
    one = emb.similar(queries[1], 5, metric, kind)  # one key: one list, the same (up to BLAS rounding)
    assert [n for n, _ in one] == [n for n, _ in got[1]]
    assert [v for _, v in one] == pytest.approx([v for _, v in got[1]], rel=1e-5, abs=1e-6)


def test_similar_from_files_writes_tsv_of_each_query(model, tmp_path, capsys):
    path, emb = model
    header, rows = run_tsv(capsys, "similar", "--load", path, "--entity-file", lines(tmp_path, "e", HEADS),
                           "--relation-file", lines(tmp_path, "r", RELS), "--metric", "l1", "--topk", "3")
    assert header == ["kind", "query", "neighbour", "l1"]
    want = [("entity", q, n, v) for q, got in zip(HEADS, emb.similar(HEADS, 3, "l1")) for n, v in got]
    want += [("relation", q, n, v) for q, got in zip(RELS, emb.similar(RELS, 3, "l1", "relation")) for n, v in got]
    assert [tuple(row[:3]) for row in rows] == [w[:3] for w in want]
    assert [float(row[3]) for row in rows] == pytest.approx([w[3] for w in want], rel=1e-5)
    assert not any(row[1] == row[2] for row in rows)


def test_word2vec_export_reads_back_as_the_table(model, tmp_path, capsys):
    path, emb = model
    out = tmp_path / "vectors.txt"
    assert main(["export", "--load", path, "--format", "word2vec", "--out", str(out)]) == 0
    first = out.read_text().splitlines()[0]
    assert first == f"{emb.n_entities} {emb.dim}"
    names, table = read_word2vec(str(out))
    assert names == [str(n) for n in emb.entity_names]
    np.testing.assert_array_equal(table, emb.entity)  # %.9g reads back to the same float32
    assert main(["export", "--load", path, "--format", "word2vec", "--kind", "relation", "--out", str(out)]) == 0
    names, table = read_word2vec(str(out))
    np.testing.assert_array_equal(table, emb.relation)
    assert "one table" in run_error(capsys, "export", "--load", path, "--format", "word2vec", "--kind", "all",
                                    "--out", str(out))


def test_word2vec_names_with_whitespace_become_underscores_or_are_refused(tmp_path, caplog):
    from kgnum.export import export_word2vec

    ent = np.arange(12, dtype=np.float32).reshape(3, 4)
    emb = Embeddings("DistMult", ent, np.ones((1, 4), np.float32), {"gamma": 1.0},
                     entity_names=["new york", "paris", "a\tb"])
    with caplog.at_level(logging.WARNING, logger="kgnum"):
        export_word2vec(emb, str(tmp_path / "w.txt"))
    assert "2 name(s) held whitespace" in caplog.text
    names, table = read_word2vec(str(tmp_path / "w.txt"))
    assert names == ["new_york", "paris", "a_b"]
    np.testing.assert_array_equal(table, ent)
    clash = Embeddings("DistMult", ent, np.ones((1, 4), np.float32), {"gamma": 1.0},
                       entity_names=["new york", "new_york", "x"])
    with pytest.raises(ValueError, match="both written 'new_york'"):
        export_word2vec(clash, str(tmp_path / "w2.txt"))


def test_parquet_export_reads_back_and_needs_pyarrow(model, tmp_path, capsys, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    path, emb = model
    out = tmp_path / "model.parquet"
    assert main(["export", "--load", path, "--format", "parquet", "--out", str(out)]) == 0
    table = pq.read_table(str(out)).to_pydict()
    assert set(table) == {"kind", "id", "name", "vector"}
    n_e, n_r = emb.n_entities, emb.relation.shape[0]
    assert table["kind"] == ["entity"] * n_e + ["relation"] * n_r
    assert table["name"] == [str(n) for n in emb.entity_names] + [str(n) for n in emb.relation_names]
    assert table["id"] == list(range(n_e)) + list(range(n_r))
    np.testing.assert_array_equal(np.array(table["vector"][:n_e], np.float32), emb.entity)
    np.testing.assert_array_equal(np.array(table["vector"][n_e:], np.float32), emb.relation)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    err = run_error(capsys, "export", "--load", path, "--format", "parquet", "--out", str(tmp_path / "x.parquet"))
    assert "pip install 'kgnum[parquet]'" in err


def test_npy_export_is_the_saved_model(model, tmp_path):
    path, emb = model
    out = tmp_path / "copy"
    assert main(["export", "--load", path, "--format", "npy", "--out", str(out)]) == 0
    back = kgnum.load(str(out))
    np.testing.assert_array_equal(back.entity, emb.entity)
    np.testing.assert_array_equal(back.relation, emb.relation)
    assert list(back.entity_names) == list(emb.entity_names)
    assert (out / "entities.tsv").exists() and (out / "relations.tsv").exists()


def test_an_input_file_saved_with_a_byte_order_mark_reads_as_without(model, tmp_path, capsys):
    path, _ = model
    plain = lines(tmp_path, "h", HEADS)
    marked = tmp_path / "h_bom"
    marked.write_bytes(b"\xef\xbb\xbf" + open(plain, "rb").read())  # as Windows editors save UTF-8
    args = ["predict", "--load", path, "--relation", "r0", "--head-file"]
    assert run_tsv(capsys, *args, str(marked)) == run_tsv(capsys, *args, plain)


def test_bad_inputs_are_one_line_errors_naming_file_and_line(model, tmp_path, capsys):
    path, _ = model
    rel = lines(tmp_path, "r", ["r0"])
    bad = lines(tmp_path, "bad", ["e0", "", "nosuch"])
    err = run_error(capsys, "predict", "--load", path, "--head-file", bad, "--relation-file", rel)
    assert f"--head-file {bad}:3: unknown entity 'nosuch'" in err
    ids = lines(tmp_path, "ids", ["0", "999"])
    err = run_error(capsys, "predict", "--load", path, "--head-file", ids, "--relation-file", rel, "--ids")
    assert f"{ids}:2: entity id 999 out of range [0, 200)" in err
    assert "give --ids" in run_error(capsys, "predict", "--load", path, "--head-file", ids, "--relation-file", rel)
    err = run_error(capsys, "predict", "--load", path, "--head-file", lines(tmp_path, "h", ["0"]),
                    "--relation-file", lines(tmp_path, "rn", ["r0"]), "--ids")
    assert "rn:1: 'r0' is not a row id" in err
    empty = lines(tmp_path, "empty", [])
    assert f"{empty}: empty" in run_error(capsys, "predict", "--load", path, "--head-file", empty, "--relation-file", rel)
    err = run_error(capsys, "predict", "--load", path, "--head-file", rel, "--format", "h_r_t",
                    "--relation-file", rel)
    assert "--format h_r_t needs the tails" in err
    assert "--format h_r_* predicts the tail" in run_error(
        capsys, "predict", "--load", path, "--head-file", rel, "--relation-file", rel, "--tail-file", rel,
        "--format", "h_r_*")
    assert "no such file" in run_error(capsys, "predict", "--load", path, "--head-file", str(tmp_path / "none"),
                                       "--relation-file", rel)
    assert "takes 2 data files" in run_error(capsys, "predict", "--load", path, "--data-files", rel,
                                             "--format", "h_r_*")
    err = run_error(capsys, "similar", "--load", path, "--entity-file", bad)
    assert f"--entity-file {bad}:3: unknown entity 'nosuch'" in err
    err = run_error(capsys, "similar", "--load", path, "--relation-file", lines(tmp_path, "rr", ["r0", "r99"]))
    assert "rr:2: unknown relation 'r99'" in err
    for k in ("0", "-2", "x"):
        for cmd in (["predict", "--load", path, "--head-file", bad, "--relation-file", rel],
                    ["similar", "--load", path, "--entity", "e0"]):
            with pytest.raises(SystemExit) as info:
                main(cmd + ["--topk", k])
            assert info.value.code == 2
            assert "expected a positive integer" in capsys.readouterr().err
