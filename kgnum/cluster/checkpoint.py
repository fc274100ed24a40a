"""Part checkpoints of the cluster engine, on a path every worker can reach (``--checkpoint-dir``).

    DIR/cluster.json          model, dim, parts, the run's configuration, the step of each part's file
    DIR/entities.tsv, relations.tsv, entity_owner.npy, relation_owner.npy   (written by the driver)
    DIR/part_<p>.npz          that part's own rows and Adagrad state, its relations, the step, and
                              the steps the part had trained when it wrote them (``part_steps``;
                              their sum is the step a resume continues from)
                              (written by the worker holding the part, to a temporary file renamed
                              into place: a crash leaves the previous file)

A run's first set (the starting tables) is written by the driver to a temporary sibling of DIR
that replaces DIR once every part's store is created: a run that fails to start, resumed from
DIR or not, leaves the set DIR held.

A dead worker's part is re-created from its file; a run that lost every
worker or the scheduler resumes from the whole set (``assemble``:
``kgnum train --backend dask --checkpoint-dir DIR --resume``).
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..files import atomic_file, read_names, write_json, write_names

MANIFEST = "cluster.json"


def part_path(directory: str, part: int) -> str:
    return os.path.join(directory, f"part_{part}.npz")


def write_part(directory, part, step, ids, rows, state, rel_ids, rel_rows, rel_state, part_steps: int = 0) -> None:
    """``step``: the run's step when the checkpoint was asked for; ``part_steps``: the steps this part
    itself had trained in this leg when it wrote its rows (their sum over the parts is the run's
    step the files hold)."""
    with atomic_file(part_path(directory, part), suffix=".npz") as tmp:
        np.savez(tmp, ids=ids, rows=rows, state=state, rel_ids=rel_ids, rel_rows=rel_rows, rel_state=rel_state,
                 step=np.int64(step), part_steps=np.int64(part_steps))


def read_part(directory: str, part: int) -> dict:
    with np.load(part_path(directory, part)) as f:
        return {k: f[k] for k in f.files}


def write_manifest(directory: str, model: str, entity_names, relation_names, config: dict, entity_owner,
                   relation_owner, train_stats: dict | None = None) -> None:
    os.makedirs(directory, exist_ok=True)
    write_names(os.path.join(directory, "entities.tsv"), entity_names)
    write_names(os.path.join(directory, "relations.tsv"), relation_names)
    np.save(os.path.join(directory, "entity_owner.npy"), entity_owner)
    np.save(os.path.join(directory, "relation_owner.npy"), relation_owner)
    write_json(os.path.join(directory, MANIFEST),
               {"model": model, "parts": int(entity_owner.max()) + 1, "config": config,
                "train_stats": train_stats})


def assemble(directory: str):
    """The model held by the part checkpoints in ``directory`` (an ``Embeddings``)."""
    from ..embeddings import Embeddings

    flag = f"--checkpoint-dir {directory}"
    try:
        with open(os.path.join(directory, MANIFEST)) as f:
            meta = json.load(f)
        names = {kind: read_names(os.path.join(directory, f"{kind}.tsv")) for kind in ("entities", "relations")}
        parts = [read_part(directory, p) for p in range(int(meta["parts"]))]
    except FileNotFoundError as e:
        raise ValueError(f"{flag}: no complete set of part checkpoints ({os.path.basename(e.filename)} "
                         f"missing)") from None
    except (ValueError, KeyError, OSError) as e:
        raise ValueError(f"{flag}: unreadable part checkpoints ({e})") from None
    n_e, n_r = len(names["entities"]), len(names["relations"])
    dim = parts[0]["rows"].shape[1]
    rel_dim = parts[0]["rel_rows"].shape[1]
    entity = np.full((n_e, dim), np.nan, np.float32)
    relation = np.full((n_r, rel_dim), np.nan, np.float32)
    entity_state = np.zeros(n_e, np.float32)
    relation_state = np.zeros(n_r, np.float32)
    for saved in parts:
        entity[saved["ids"]] = saved["rows"]
        entity_state[saved["ids"]] = saved["state"]
        relation[saved["rel_ids"]] = saved["rel_rows"]
        relation_state[saved["rel_ids"]] = saved["rel_state"]
    if np.isnan(entity).any() or np.isnan(relation).any():
        raise ValueError(f"{flag}: the part checkpoints do not cover every entity and relation")
    stats = dict(meta.get("train_stats") or {})
    # + earlier legs: the steps the parts' rows hold (a part writes its file between two of its rounds,
    # which need not be the rounds the checkpoint was asked in)
    held = sum(int(saved["part_steps"]) for saved in parts) if all("part_steps" in saved for saved in parts) \
        else min(int(saved["step"]) for saved in parts)  # files written before part_steps
    stats["steps"] = int(stats.get("steps", 0)) + held
    emb = Embeddings(meta["model"], entity, relation, meta["config"], names["entities"], names["relations"],
                     entity_state, relation_state, stats)
    return emb
