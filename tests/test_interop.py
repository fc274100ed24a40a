"""DGL-KE interoperability: a model directory in DGL-KE's documented layout, built here, imports
with triples scoring as DGL-KE's formulas say; kgnum models export and come back unchanged."""
from __future__ import annotations

import json

import numpy as np
import pytest

import kgnum
from kgnum.cli import main
from kgnum.data import KGDataError
from kgnum.interop import export_dglke, import_dglke

N_E, N_R, HIDDEN, GAMMA = 12, 3, 4, 9.0


def dglke_score(model, h, r, t):
    """Scores as DGL-KE's score functions compute them (its own layouts)."""
    if model in ("TransE", "TransE_l2"):
        return GAMMA - np.linalg.norm(h + r - t)
    if model == "DistMult":
        return np.sum(h * r * t)
    if model == "ComplEx":
        hr, hi = np.split(h, 2)
        rr, ri = np.split(r, 2)
        tr, ti = np.split(t, 2)
        return np.sum(hr * tr * rr + hi * ti * rr + hr * ti * ri - hi * tr * ri)
    if model == "RotatE":
        phase = r / (((GAMMA + 2.0) / HIDDEN) / np.pi)
        hr, hi = np.split(h, 2)
        tr, ti = np.split(t, 2)
        re = hr * np.cos(phase) - hi * np.sin(phase) - tr
        im = hr * np.sin(phase) + hi * np.cos(phase) - ti
        return GAMMA - np.sum(np.sqrt(re ** 2 + im ** 2))
    if model == "RESCAL":  # edge_func and infer (dglke_score, dglke_predict): h . (M t), M row-major
        return float(h @ (r.reshape(HIDDEN, HIDDEN) @ t))
    if model == "SimplE":
        hi, hj = np.split(h, 2)
        ti, tj = np.split(t, 2)
        r_fw, r_inv = np.split(r, 2)
        return np.clip(np.sum(hi * r_fw * tj + ti * r_inv * hj) / 2, -20, 20)
    raise AssertionError(model)


SHAPES = {"TransE": (HIDDEN, HIDDEN), "DistMult": (HIDDEN, HIDDEN), "ComplEx": (2 * HIDDEN, 2 * HIDDEN),
          "RotatE": (2 * HIDDEN, HIDDEN), "RESCAL": (HIDDEN, HIDDEN * HIDDEN), "SimplE": (2 * HIDDEN, 2 * HIDDEN)}


def make_dglke_dir(tmp_path, model, seed=0):
    rng = np.random.default_rng(seed)
    d_e, d_r = SHAPES[model]
    save = tmp_path / f"ckpt_{model}"
    save.mkdir()
    np.save(save / f"FB15k_{model}_entity.npy", rng.normal(size=(N_E, d_e)).astype(np.float32))
    np.save(save / f"FB15k_{model}_relation.npy", rng.normal(size=(N_R, d_r)).astype(np.float32) * 0.3)
    (save / "config.json").write_text(json.dumps({
        "model_name": model, "dataset": "FB15k", "hidden_dim": HIDDEN, "gamma": GAMMA,
        "double_ent": model in ("ComplEx", "RotatE", "SimplE"), "double_rel": model in ("ComplEx", "SimplE"),
        "lr": 0.1, "neg_sample_size": 256, "batch_size": 1024, "neg_adversarial_sampling": True,
        "adversarial_temperature": 1.0, "regularization_coef": 2e-6, "regularization_norm": 3}))
    data = tmp_path / f"data_{model}"
    data.mkdir()
    # the dict files in shuffled line order: ids, not line positions, name the rows
    order = rng.permutation(N_E)
    (data / "entities.dict").write_text("".join(f"{i}\t/m/e{i}\n" for i in order))
    (data / "relations.dict").write_text("".join(f"{i}\t/r/{i}\n" for i in range(N_R)))
    return save, data


@pytest.mark.parametrize("model", sorted(SHAPES))
def test_imported_triples_score_as_dglke_would(tmp_path, model):
    save, data = make_dglke_dir(tmp_path, model)
    emb = import_dglke(str(save), str(data))
    E = np.load(save / f"FB15k_{model}_entity.npy").astype(np.float64)
    R = np.load(save / f"FB15k_{model}_relation.npy").astype(np.float64)
    for h, r, t in [(0, 0, 1), (5, 2, 7), (11, 1, 3)]:
        want = dglke_score(model, E[h], R[r], E[t])
        got = emb.score(f"/m/e{h}", f"/r/{r}", f"/m/e{t}")[0]
        if model == "SimplE":
            got = np.clip(got, -20, 20)
        assert got == pytest.approx(want, rel=1e-4, abs=1e-4), (model, h, r, t)
    assert emb.config["adv"] is True and emb.config["gamma"] == GAMMA


@pytest.mark.parametrize("model", ["TransE_l2", "RotatE", "RESCAL", "ComplEx"])
def test_export_then_import_gives_back_the_same_model(small_kg, tmp_path, model):
    emb = kgnum.train(small_kg, model, max_steps=5, dim=8, workers=1, progress=False)
    out = tmp_path / "dglke"
    export_dglke(emb, str(out))
    back = import_dglke(str(out), str(out))
    assert list(back.entity_names) == list(emb.entity_names)
    np.testing.assert_allclose(back.entity, emb.entity)
    np.testing.assert_allclose(back.relation, emb.relation, rtol=1e-5, atol=1e-6)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_name"] == model and cfg["hidden_dim"] == (4 if model in ("RotatE", "ComplEx") else 8)


@pytest.mark.parametrize("first, second", [("b", "a"), ("a", "b")])
def test_import_reads_the_tables_config_json_names(small_kg, tmp_path, first, second):
    """A folder exported into twice (--dataset-name changed) holds two sets of tables; the ones
    config.json's dataset names are the model, as DGL-KE reads them."""
    old = kgnum.train(small_kg, "DistMult", max_steps=5, dim=8, workers=1, progress=False, seed=1)
    new = kgnum.train(small_kg, "DistMult", max_steps=5, dim=8, workers=1, progress=False, seed=2)
    out = tmp_path / "dglke [run 1]"
    export_dglke(old, str(out), first)
    export_dglke(new, str(out), second)
    back = import_dglke(str(out), str(out))
    np.testing.assert_array_equal(back.entity, new.entity)
    np.testing.assert_array_equal(back.relation, new.relation)


def test_import_names_rows_from_the_map_files_config_json_names(tmp_path):
    """A dataset folder may hold entities.dict (the download's ids) and entities.tsv (written by a
    raw_udd_* run, ids in order of first appearance): the rows follow the one the run used."""
    save, data = make_dglke_dir(tmp_path, "DistMult")
    rng = np.random.default_rng(7)
    order = rng.permutation(N_E)  # the run's ids: another numbering of the same names
    (data / "entities.tsv").write_text("".join(f"{i}\t/m/e{j}\n" for i, j in enumerate(order)))
    (data / "relations.tsv").write_text("".join(f"{i}\t/r/{j}\n" for i, j in enumerate([2, 0, 1])))
    cfg = json.loads((save / "config.json").read_text())
    # DGL-KE's save_model writes the entity map under "emp_file"
    (save / "config.json").write_text(json.dumps({**cfg, "emp_file": "entities.tsv", "rmap_file": "relations.tsv"}))
    emb = import_dglke(str(save), str(data))
    assert list(emb.entity_names) == [f"/m/e{j}" for j in order]
    assert list(emb.relation_names) == ["/r/2", "/r/0", "/r/1"]
    (save / "config.json").write_text(json.dumps({**cfg, "emap_file": "entities.tsv", "rmap_file": "relations.tsv"}))
    assert list(import_dglke(str(save), str(data)).entity_names) == [f"/m/e{j}" for j in order]


def test_cli_import_then_eval_and_clear_errors(tmp_path, capsys):
    save, data = make_dglke_dir(tmp_path, "DistMult")
    out = tmp_path / "model"
    assert main(["import-dglke", str(save), "--data-path", str(data), "--out", str(out)]) == 0
    assert kgnum.load(str(out)).model == "DistMult"
    (data / "entities.dict").write_text("0\t/m/e0\n")
    assert main(["import-dglke", str(save), "--data-path", str(data), "--out", str(out)]) == 2
    assert "1 entities" in capsys.readouterr().err
    cfg = json.loads((save / "config.json").read_text())
    (save / "config.json").write_text(json.dumps({**cfg, "model_name": "TransR"}))
    with pytest.raises(KGDataError, match="TransR"):
        import_dglke(str(save), str(data))


@pytest.mark.parametrize("model", ["TransR", "TransE_dot"])
def test_models_dglke_cannot_score_are_not_exported(tmp_path, model):
    from kgnum.embeddings import Embeddings
    from kgnum.kernels.registry import get_model

    entity, relation = get_model(model).init_tables(N_E, N_R, HIDDEN, GAMMA, 0)
    with pytest.raises(KGDataError, match=f"kgnum {model} cannot be exported to DGL-KE"):
        export_dglke(Embeddings(model, entity, relation, {"gamma": GAMMA}), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit, words", [
    (lambda cfg: [cfg], "config.json: expected a JSON object"),
    (lambda cfg: {**cfg, "hidden_dim": None}, "config.json: hidden_dim"),
    (lambda cfg: {**cfg, "hidden_dim": "four"}, "config.json: hidden_dim"),
    (lambda cfg: {**cfg, "hidden_dim": 4.5}, "config.json: hidden_dim"),
    (lambda cfg: {**cfg, "hidden_dim": True}, "config.json: hidden_dim"),
    (lambda cfg: {**cfg, "gamma": "x"}, "config.json: gamma"),
    (lambda cfg: {**cfg, "gamma": None}, "config.json: gamma"),
    (lambda cfg: {k: v for k, v in cfg.items() if k != "model_name"}, "config.json: no model_name"),
    (lambda cfg: {**cfg, "model_name": ["RotatE"]}, "config.json: model_name"),
], ids=["list", "hidden_null", "hidden_string", "hidden_float", "hidden_bool", "gamma_string", "gamma_null",
        "no_model_name", "model_name_list"])
def test_malformed_config_json_is_one_line_naming_the_key(tmp_path, capsys, edit, words):
    save, data = make_dglke_dir(tmp_path, "RotatE")
    cfg = json.loads((save / "config.json").read_text())
    (save / "config.json").write_text(json.dumps(edit(cfg)))
    assert main(["import-dglke", str(save), "--data-path", str(data), "--out", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "model").exists()


def test_rotate_without_hidden_dim_takes_the_phase_scale_from_the_relation_rows(tmp_path):
    """DGL-KE's RotatE relation rows are hidden_dim phases (entity rows 2 x hidden_dim): a config.json
    without hidden_dim scores as DGL-KE would, and one whose hidden_dim the tables contradict is refused."""
    save, data = make_dglke_dir(tmp_path, "RotatE")
    cfg = json.loads((save / "config.json").read_text())
    (save / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "hidden_dim"}))
    emb = import_dglke(str(save), str(data))
    E = np.load(save / "FB15k_RotatE_entity.npy").astype(np.float64)
    R = np.load(save / "FB15k_RotatE_relation.npy").astype(np.float64)
    for h, r, t in [(0, 0, 1), (5, 2, 7)]:
        want = dglke_score("RotatE", E[h], R[r], E[t])
        assert emb.score(f"/m/e{h}", f"/r/{r}", f"/m/e{t}")[0] == pytest.approx(want, rel=1e-4, abs=1e-4)
    (save / "config.json").write_text(json.dumps({**cfg, "hidden_dim": 2 * HIDDEN}))
    with pytest.raises(KGDataError, match=f"config.json: hidden_dim {2 * HIDDEN}"):
        import_dglke(str(save), str(data))


def test_map_files_written_with_the_runs_delimiter_are_read_at_their_first_delimiter(tmp_path):
    """A raw_udd_* run writes entities.tsv / relations.tsv as ``id<delimiter>name`` with its own
    --delimiter (config.json's delimiter); ids are integers, so a name holding the delimiter or a tab
    stays whole."""
    save, data = make_dglke_dir(tmp_path, "DistMult")
    names = [f"/m/e{i}" for i in range(N_E)]
    names[3], names[5] = "Smith, John", "tab\there"
    (data / "entities.tsv").write_text("".join(f"{i},{n}\n" for i, n in enumerate(names)))
    (data / "relations.tsv").write_text("".join(f"{i},/r/{i}\n" for i in range(N_R)))
    cfg = json.loads((save / "config.json").read_text())
    (save / "config.json").write_text(json.dumps({**cfg, "format": "raw_udd_hrt", "delimiter": ",",
                                                  "emp_file": "entities.tsv", "rmap_file": "relations.tsv"}))
    emb = import_dglke(str(save), str(data))
    assert list(emb.entity_names) == names and list(emb.relation_names) == [f"/r/{i}" for i in range(N_R)]
    # the download's .dict files stay tab-separated whatever the run's delimiter
    (save / "config.json").write_text(json.dumps({**cfg, "delimiter": ","}))
    assert list(import_dglke(str(save), str(data)).entity_names)[0] == f"/m/e{0}"
    (data / "entities.tsv").write_text("0,a\n1;b\n")
    (save / "config.json").write_text(json.dumps({**cfg, "delimiter": ",", "emp_file": "entities.tsv"}))
    with pytest.raises(KGDataError, match="entities.tsv:2: expected id,name"):
        import_dglke(str(save), str(data))


def test_names_holding_a_tab_come_back_from_export(tmp_path):
    """A name may hold a tab (a comma-delimited graph): export writes ``id<TAB>name``, import reads
    the line at its first tab."""
    from kgnum.embeddings import Embeddings

    names = [f"e{i}" for i in range(N_E)]
    names[2] = "a\tb"
    rng = np.random.default_rng(0)
    emb = Embeddings("DistMult", rng.normal(size=(N_E, HIDDEN)).astype(np.float32),
                     rng.normal(size=(N_R, HIDDEN)).astype(np.float32), {"gamma": GAMMA}, names,
                     ["r\t0", "r1", "r2"])
    out = tmp_path / "dglke"
    export_dglke(emb, str(out))
    back = import_dglke(str(out), str(out))
    assert list(back.entity_names) == names and list(back.relation_names) == ["r\t0", "r1", "r2"]


def test_import_refuses_a_folder_without_the_map_files_config_json_names(tmp_path, capsys):
    """An export names its rows in entities.tsv (config.json's emap_file); imported with a dataset
    folder that holds only entities.dict, numbered otherwise, every row took another entity's name
    and the model evaluated at chance, silently."""
    from kgnum.embeddings import Embeddings

    save, data = make_dglke_dir(tmp_path, "DistMult")
    emb = import_dglke(str(save), str(data))
    out = tmp_path / "exported"
    export_dglke(Embeddings("DistMult", emb.entity[::-1].copy(), emb.relation, {"gamma": GAMMA},
                            list(emb.entity_names)[::-1], list(emb.relation_names)), str(out))
    with pytest.raises(KGDataError, match="no entities.tsv, the entity map"):
        import_dglke(str(out), str(data))
    assert main(["import-dglke", str(out), "--data-path", str(data), "--out", str(tmp_path / "m")]) == 2
    assert "no entities.tsv" in capsys.readouterr().err
    back = import_dglke(str(out), str(out))  # the folder holding the map files the export wrote
    assert list(back.entity_names) == list(emb.entity_names)[::-1]
    cfg = json.loads((out / "config.json").read_text())  # paths of the machine that trained
    (out / "config.json").write_text(json.dumps({**cfg, "emap_file": "/elsewhere/entities.tsv"}))
    assert list(import_dglke(str(out), str(out)).entity_names) == list(emb.entity_names)[::-1]
