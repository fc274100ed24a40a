"""DGL-KE models in and out: ``kgnum import-dglke`` / ``kgnum export-dglke``.

A DGL-KE save directory holds ``config.json`` (its training arguments: model_name,
hidden_dim, gamma, double_ent, ...) and ``<dataset>_<model>_entity.npy`` /
``<dataset>_<model>_relation.npy``; the names of the rows are in the dataset's
``entities.dict`` / ``relations.dict`` (built-in datasets) or ``entities.tsv`` /
``relations.tsv`` (user data), lines ``id<TAB>name`` (``id<delimiter>name`` with the run's
--delimiter, as a raw_udd_* run writes them); config.json names the ones the run used.

How DGL-KE's models map onto kgnum's score functions (kgnum's ``dim`` counts the
real floats of an entity row, DGL-KE's ``hidden_dim`` the complex or split halves
when ``-de`` doubles it):

* TransE (= TransE_l2), TransE_l1, DistMult: same rows, same score.
* ComplEx: rows [real half | imaginary half] in both; same score.
* SimplE: rows [head part | tail part], relation [r | r_inv] in both; same score
  (DGL-KE clips it to [-20, 20]).
* RotatE: DGL-KE stores relation values v and rotates by the phase
  v * pi / ((gamma + 2) / hidden_dim), hidden_dim the width of its relation rows (entity rows
  2 x hidden_dim); kgnum stores the phase itself.
* RESCAL: both score h^T M t with M row-major (relation_dim x entity_dim), as
  DGL-KE's edge_func and infer (dglke_score, dglke_predict) do: same rows.
* TransR: not imported; DGL-KE keeps its projections in a separate table and
  scores with its own norm, which kgnum's TransR does not reproduce.
"""
from __future__ import annotations

import glob
import json
import math
import os

import numpy as np

from .data import KGDataError, _read_dict
from .files import write_names
from .embeddings import Embeddings
from .kernels.registry import get_model

_NAMES = {"transe": "TransE_l2", "transe_l2": "TransE_l2", "transe_l1": "TransE_l1", "distmult": "DistMult",
          "complex": "ComplEx", "rotate": "RotatE", "rescal": "RESCAL", "simple": "SimplE"}
_DOUBLED = ("ComplEx", "RotatE", "SimplE")  # DGL-KE trains these with -de (entity rows of 2 x hidden_dim)


def _rotate_scale(gamma: float, hidden_dim: int) -> float:
    """DGL-KE's relation value -> phase factor: pi / ((gamma + 2) / hidden_dim)."""
    return math.pi / ((gamma + 2.0) / hidden_dim)


def _shown(value) -> str:
    """A config.json value as JSON spells it (containers by kind)."""
    return {dict: "an object", list: "an array"}.get(type(value)) or json.dumps(value)


def _config_number(cfg: dict, key: str, where: str, default, integer: bool = False):
    """``cfg[key]`` (``default`` when absent) checked as DGL-KE writes it: a number, for
    ``integer`` a positive whole one; KGDataError naming ``where`` (the config.json) and the key."""
    if key not in cfg:
        return default
    value = cfg[key]
    ok = isinstance(value, int) and value > 0 if integer else \
        isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(value, bool) or not ok:
        want = "a positive integer" if integer else "a number"
        raise KGDataError(f"{where}: {key} must be {want}, got {_shown(value)}")
    return value


def _read_map(folder: str, kind: str, what: str, configured=None, delimiter=None) -> list[str]:
    """Row names from the map file config.json names (``configured``, relative to ``folder``, or
    its base name there; an error when neither is there), else the dataset's ``<kind>.dict`` or
    ``<kind>.tsv``: lines ``id<TAB>name``, or ``id<delimiter>name`` with the run's ``delimiter`` (a
    raw_udd_* run writes its map files so), split at the first one."""
    delimiters = (delimiter, "\t") if isinstance(delimiter, str) and delimiter else ("\t",)
    if isinstance(configured, str) and configured:
        # only the file the run used: another map numbers the names otherwise, and every row would
        # get another one's name; a path on the training machine is looked for by its name here
        for name in dict.fromkeys((configured, os.path.basename(configured))):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return _read_dict(path, what, delimiters=delimiters)
        raise KGDataError(f"--data-path {folder}: no {configured}, the {what} map the DGL-KE run used "
                          f"(its config.json names it); give the folder that holds it")
    for name in (f"{kind}.dict", f"{kind}.tsv"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return _read_dict(path, what, delimiters=delimiters)
    raise KGDataError(f"--data-path {folder}: no {kind}.dict or {kind}.tsv (id<TAB>name lines)")


def import_dglke(save_dir: str, data_path: str) -> Embeddings:
    """A DGL-KE saved model as kgnum Embeddings (rows named from ``data_path``'s dicts)."""
    try:
        with open(os.path.join(save_dir, "config.json")) as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise KGDataError(f"{save_dir}: no config.json; not a DGL-KE save directory") from None
    except json.JSONDecodeError as e:
        raise KGDataError(f"{save_dir}/config.json: not valid JSON ({e})") from None
    where = f"{save_dir}/config.json"
    if not isinstance(cfg, dict):
        raise KGDataError(f"{where}: expected a JSON object of DGL-KE's training arguments, "
                          f"got {_shown(cfg)}")
    if "model_name" not in cfg:
        raise KGDataError(f"{where}: no model_name (DGL-KE writes the model it trained there)")
    dglke_model = cfg["model_name"]
    if not isinstance(dglke_model, str):
        raise KGDataError(f"{where}: model_name must be a string, got {_shown(dglke_model)}")
    gamma = float(_config_number(cfg, "gamma", where, 12.0))  # DGL-KE's default gamma
    hidden = _config_number(cfg, "hidden_dim", where, None, integer=True)
    if dglke_model.lower() == "transr":
        raise KGDataError("DGL-KE TransR cannot be imported: its projection table and norm differ from kgnum's TransR")
    model = _NAMES.get(dglke_model.lower())
    if model is None:
        raise KGDataError(f"{save_dir}/config.json: model_name {dglke_model!r} has no kgnum counterpart; "
                          f"supported: {', '.join(sorted(set(_NAMES.values())))}")
    tables = {}
    folder = glob.escape(save_dir)
    for kind in ("entity", "relation"):
        # DGL-KE reads <dataset>_<model>_<kind>.npy, the dataset named by config.json; a folder
        # may hold the tables of other datasets too (exported into twice)
        named = os.path.join(save_dir, f"{cfg.get('dataset')}_{dglke_model}_{kind}.npy")
        found = [named] if "dataset" in cfg and os.path.isfile(named) else \
            sorted(glob.glob(os.path.join(folder, f"*_{dglke_model}_{kind}.npy"))) or \
            sorted(glob.glob(os.path.join(folder, f"*_{kind}.npy")))
        if not found:
            raise KGDataError(f"{save_dir}: no <dataset>_{dglke_model}_{kind}.npy")
        if len(found) > 1:
            raise KGDataError(f"{save_dir}: {len(found)} {kind} tables ({', '.join(map(os.path.basename, found))}) "
                              f"and no config.json dataset naming one")
        tables[kind] = np.load(found[0]).astype(np.float32)
    entity, relation = tables["entity"], tables["relation"]
    sf = get_model(model)
    dim = entity.shape[1]
    if sf.relation_dim(dim) != relation.shape[1]:
        raise KGDataError(f"{save_dir}: {model} with entity rows of {dim} floats needs relation rows of "
                          f"{sf.relation_dim(dim)}, the file has {relation.shape[1]}")
    if model == "RotatE":
        # DGL-KE's RotatE relation rows are hidden_dim phases (entity rows 2 x hidden_dim, -de)
        if hidden is not None and hidden != relation.shape[1]:
            raise KGDataError(f"{where}: hidden_dim {hidden} contradicts the tables: RotatE's relation rows are "
                              f"hidden_dim floats, the file's {relation.shape[1]}")
        relation = relation * np.float32(_rotate_scale(gamma, relation.shape[1]))
    # the map files the run used: a raw_udd_* run writes entities.tsv beside a download's entities.dict,
    # numbered otherwise (DGL-KE's save_model spells the entity key "emp_file")
    entities = _read_map(data_path, "entities", "entity", cfg.get("emap_file") or cfg.get("emp_file"),
                         cfg.get("delimiter"))
    relations = _read_map(data_path, "relations", "relation", cfg.get("rmap_file"), cfg.get("delimiter"))
    if len(entities) != entity.shape[0] or len(relations) != relation.shape[0]:
        raise KGDataError(f"--data-path {data_path}: {len(entities)} entities / {len(relations)} relations named, "
                          f"the model has {entity.shape[0]} / {relation.shape[0]} rows")
    config = {"model": model, "dim": dim, "gamma": gamma, "lr": cfg.get("lr"),
              "neg": cfg.get("neg_sample_size"), "batch": cfg.get("batch_size"),
              "adv": bool(cfg.get("neg_adversarial_sampling", False)),
              "adv_temp": cfg.get("adversarial_temperature"), "reg_coef": cfg.get("regularization_coef"),
              "reg_norm": cfg.get("regularization_norm"), "imported_from": "DGL-KE"}
    config = {k: v for k, v in config.items() if v is not None}
    return Embeddings(model, entity, np.ascontiguousarray(relation, dtype=np.float32), config, entities, relations)


def export_dglke(emb: Embeddings, out: str, dataset: str = "kgnum") -> str:
    """Write ``emb`` in DGL-KE's save layout (plus entities.tsv / relations.tsv) to ``out``."""
    model = emb.model
    if model == "TransR":
        raise KGDataError("kgnum TransR cannot be exported to DGL-KE: its projection table and norm differ")
    if model not in _NAMES.values():
        raise KGDataError(f"kgnum {model} cannot be exported to DGL-KE: DGL-KE has no such model")
    name = "TransE_l2" if model == "TransE_l2" else model
    doubled = model in _DOUBLED
    hidden = emb.dim // 2 if doubled else emb.dim
    relation = emb.relation
    if model == "RotatE":
        relation = relation / np.float32(_rotate_scale(emb.gamma, hidden))
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, f"{dataset}_{name}_entity.npy"), emb.entity)
    np.save(os.path.join(out, f"{dataset}_{name}_relation.npy"), np.ascontiguousarray(relation, np.float32))
    c = emb.config
    config = {"model_name": name, "dataset": dataset, "hidden_dim": hidden, "gamma": emb.gamma,
              "double_ent": doubled, "double_rel": model in ("ComplEx", "SimplE"), "lr": c.get("lr"),
              "neg_sample_size": c.get("neg"), "batch_size": c.get("batch"),
              "neg_adversarial_sampling": bool(c.get("adv", False)), "adversarial_temperature": c.get("adv_temp"),
              "regularization_coef": c.get("reg_coef"), "regularization_norm": c.get("reg_norm"),
              "emap_file": "entities.tsv", "rmap_file": "relations.tsv"}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=4)
    write_names(os.path.join(out, "entities.tsv"), emb.entity_names)
    write_names(os.path.join(out, "relations.tsv"), emb.relation_names)
    return out
