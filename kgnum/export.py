"""A trained model's tables in other formats: word2vec text, Parquet, or kgnum's own .npy layout.

``kgnum export --load MODEL --format word2vec|parquet|npy --out PATH``. Nothing heavy is imported
with kgnum: pyarrow only inside ``export_parquet``.
"""
from __future__ import annotations

import logging
import os
import re

import numpy as np

from .files import atomic_file

log = logging.getLogger("kgnum")

FORMATS = ("word2vec", "parquet", "npy")
KINDS = ("entity", "relation", "all")
_SPACE = re.compile(r"\s")


def _tables(emb, kind: str):
    """[(kind, names, table)] of ``kind``: "entity", "relation" or "all" (both)."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    out = []
    if kind in ("entity", "all"):
        out.append(("entity", emb.entity_names, emb.entity))
    if kind in ("relation", "all"):
        out.append(("relation", emb.relation_names, emb.relation))
    return out


def _prepare(path: str) -> str:
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise ValueError(f"--out {path}: is a directory; give a file name")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def word2vec_names(names) -> list[str]:
    """Names as word2vec tokens: each whitespace character becomes "_" (a warning says how many
    names changed); two names that become the same token are refused."""
    tokens = [_SPACE.sub("_", str(n)) for n in names]
    changed = [(str(n), tok) for n, tok in zip(names, tokens) if tok != str(n)]
    if changed:
        seen = {}
        for n, tok in zip(names, tokens):
            if tok in seen:
                raise ValueError(f"word2vec: names {seen[tok]!r} and {str(n)!r} are both written {tok!r} "
                                 f"(whitespace becomes _); export --format parquet or npy instead")
            seen[tok] = str(n)
        log.warning("word2vec: %d name(s) held whitespace, written with _ (e.g. %r -> %r)", len(changed),
                    *changed[0])
    if any(tok == "" for tok in tokens):
        raise ValueError("word2vec: an empty name cannot be written; export --format parquet or npy instead")
    return tokens


def export_word2vec(emb, path: str, kind: str = "entity") -> str:
    """The ``kind`` table ("entity" or "relation") as word2vec text: a first line ``N DIM``, then
    ``name v1 ... vDIM`` per row (values as %.9g, which reads back to the same float32)."""
    if kind == "all":
        raise ValueError("word2vec holds one table: export --kind entity or --kind relation")
    [(_, names, table)] = _tables(emb, kind)
    tokens = word2vec_names(names)
    path = _prepare(path)
    row = " ".join(["%.9g"] * table.shape[1])
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{table.shape[0]} {table.shape[1]}\n")
        for b0 in range(0, table.shape[0], 4096):
            block = table[b0:b0 + 4096].tolist()
            f.write("".join(f"{tok} {row % tuple(vec)}\n" for tok, vec in zip(tokens[b0:b0 + 4096], block)))
    return path


def read_word2vec(path: str):
    """(names, table float32) of a word2vec text file (what ``export_word2vec`` writes)."""
    with open(path, encoding="utf-8") as f:
        n, dim = (int(x) for x in f.readline().split())
        names, rows = [], []
        for line in f:
            name, *values = line.rstrip("\n").split(" ")
            names.append(name)
            rows.append(values)
    table = np.array(rows, dtype=np.float32).reshape(len(rows), dim)
    if table.shape[0] != n:
        raise ValueError(f"{path}: header says {n} rows, file holds {table.shape[0]}")
    return names, table


def export_parquet(emb, path: str, kind: str = "all") -> str:
    """One Parquet file of rows ``kind`` ("entity" / "relation"), ``id`` (the row id), ``name`` and
    ``vector`` (list<float32>: relation rows may be longer or shorter than entity rows); entities
    first, then relations, for kind "all"."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError("export --format parquet needs pyarrow: pip install 'kgnum[parquet]'") from None
    parts = _tables(emb, kind)
    kinds, ids, names, vectors = [], [], [], []
    for which, row_names, table in parts:
        n, dim = table.shape
        kinds.append(pa.array([which] * n, pa.string()))
        ids.append(pa.array(np.arange(n, dtype=np.int64)))
        names.append(pa.array([str(x) for x in row_names], pa.string()))
        offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
        vectors.append(pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(table).ravel())))
    out = pa.table({"kind": pa.concat_arrays(kinds), "id": pa.concat_arrays(ids), "name": pa.concat_arrays(names),
                    "vector": pa.concat_arrays(vectors)})
    path = _prepare(path)
    with atomic_file(path) as tmp:
        pq.write_table(out, tmp)
    return path


def export_npy(emb, path: str) -> str:
    """The model in kgnum's own layout (entity.npy, relation.npy, entities.tsv, relations.tsv,
    config.json, ...): ``Embeddings.save``, loadable with ``kgnum.load``."""
    if os.path.isfile(path):
        raise ValueError(f"--out {path}: is a file; npy writes a directory")
    return emb.save(path)


def export(emb, path: str, format: str, kind: str | None = None) -> str:
    """Write ``emb`` to ``path`` in ``format`` (word2vec, parquet, npy); kind: the tables (default
    entity for word2vec, all for parquet; npy always writes the whole model)."""
    if format == "word2vec":
        return export_word2vec(emb, path, kind or "entity")
    if format == "parquet":
        return export_parquet(emb, path, kind or "all")
    if format == "npy":
        if kind not in (None, "all"):
            raise ValueError("npy writes the whole model (what kgnum train --save writes): no --kind")
        return export_npy(emb, path)
    raise ValueError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
