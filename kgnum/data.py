"""Knowledge-graph datasets: parsing, validation, caching, downloads, synthetic graphs.

Every graph is a :class:`KnowledgeGraph` holding three ``(n, 3)`` int32 arrays of
``(head, relation, tail)`` ids plus the id -> string vocabularies. Entry point::

    kg = load_dataset("FB15k-237", unseen="keep")   # built-in name, folder, or "synthetic"
    kg = load_files("my/train.tsv", "my/valid.tsv", format="raw_udd_rth", delimiter=",")

Parsed graphs are cached as ``.npy`` arrays + vocabulary text files under
``cache_dir`` / ``$KGNUM_CACHE_DIR`` / ``~/.cache/kgnum``; dataset folders are only read.
Every problem with user input raises :class:`KGDataError` with the file and 1-based line
number (or the offending argument) in its message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

__all__ = [
    "KGDataError",
    "KnowledgeGraph",
    "load_dataset",
    "load_files",
    "download_dataset",
    "synthetic",
    "DATASET_URLS",
    "FORMATS",
    "UNSEEN_POLICIES",
    "DUPLICATE_POLICIES",
    "DELIMITERS",
    "SPLITS",
]

log = logging.getLogger("kgnum")

SPLITS = ("train", "valid", "test")
# DGL-KE's column orders: the letters name the file's columns (h head, r relation, t tail).
_ORDERS = ("hrt", "htr", "rht", "rth", "thr", "trh")
# "tsv" = "raw_udd_hrt" with train/valid/test.txt names only; raw_udd_*: string triples;
# udd_*: integer ids plus entities.dict / relations.dict (lines id<TAB>name).
FORMATS = ("tsv", *(f"raw_udd_{o}" for o in _ORDERS), *(f"udd_{o}" for o in _ORDERS))
UNSEEN_POLICIES = ("error", "skip", "keep")
DUPLICATE_POLICIES = ("keep", "drop")
# Words accepted for the field separator of triple files (a single other character is taken
# literally); "space" splits on any run of whitespace.
DELIMITERS = {"tab": "\t", "\\t": "\t", "space": " ", "comma": ","}

# Public benchmarks fetched when not found locally: canonical name -> (url, sha256 or None).
# Module-level so tests and offline mirrors can point it elsewhere. The DGL-KE archives
# hold <name>/train.txt, valid.txt, test.txt (plus entities.dict/relations.dict, unused).
DATASET_URLS: dict[str, tuple[str, str | None]] = {
    "FB15k": ("https://data.dgl.ai/dataset/FB15k.zip", None),
    "FB15k-237": ("https://data.dgl.ai/dataset/FB15k-237.zip", None),
    "wn18": ("https://data.dgl.ai/dataset/wn18.zip", None),
    "wn18rr": ("https://data.dgl.ai/dataset/wn18rr.zip", None),
}

# Bump when the cache layout or parsing semantics change, so old caches are rebuilt.
_CACHE_VERSION = 2
_DOWNLOAD_TIMEOUT_S = 60
# Names quoted by KnowledgeGraph.aligned_to's error; the count says how many there are in all.
_N_MISSING_SHOWN = 5


class KGDataError(ValueError):
    """A problem with user input: a data file, a dataset name, or an argument."""


# --------------------------------------------------------------------------- graph


@dataclass(eq=False)  # eq on numpy fields would be ambiguous; identity is what callers want
class KnowledgeGraph:
    """A knowledge graph split into train/valid/test triples.

    Attributes:
        name: dataset name (e.g. ``"FB15k-237"``, a folder name, ``"synthetic"``).
        train, valid, test: ``(n, 3)`` int32 arrays, columns ``head, relation, tail``;
            valid/test may have 0 rows.
        entity_names: ``(n_entities,)`` object array of str, id -> name.
        relation_names: ``(n_relations,)`` object array of str, id -> name.
        dropped_unseen: ``{"valid": n, "test": m}`` triples dropped by ``unseen="skip"``
            (empty when nothing was dropped).
        duplicates: ``{split: n}`` repeated triples found within a split when it was read
            (each occurrence after the first counts), whether kept (``duplicates="keep"``)
            or dropped (``"drop"``); splits without repeats are absent.
        source: the folder the graph was read from (for files: the train file's), or None.
    """

    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    entity_names: np.ndarray
    relation_names: np.ndarray
    dropped_unseen: dict = field(default_factory=dict)
    source: str | None = None
    duplicates: dict = field(default_factory=dict)
    _entity_index: dict | None = field(default=None, init=False, repr=False)
    _relation_index: dict | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.entity_names = _as_name_array(self.entity_names, "entity_names")
        self.relation_names = _as_name_array(self.relation_names, "relation_names")
        for split in SPLITS:
            setattr(self, split, self._checked_triples(split, getattr(self, split)))

    def _checked_triples(self, split: str, arr) -> np.ndarray:
        arr = np.asarray(arr)
        if arr.size == 0:
            return np.empty((0, 3), dtype=np.int32)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise KGDataError(f"KnowledgeGraph.{split}: expected shape (n, 3), got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise KGDataError(f"KnowledgeGraph.{split}: expected integer ids, got dtype {arr.dtype}")
        lo = int(arr.min())
        ent_hi = int(max(arr[:, 0].max(), arr[:, 2].max()))
        rel_hi = int(arr[:, 1].max())
        if lo < 0 or ent_hi >= self.n_entities or rel_hi >= self.n_relations:
            raise KGDataError(
                f"KnowledgeGraph.{split}: ids out of range (min {lo}, max entity id {ent_hi} "
                f"for {self.n_entities} entities, max relation id {rel_hi} for "
                f"{self.n_relations} relations)")
        return np.ascontiguousarray(arr, dtype=np.int32)

    @property
    def n_entities(self) -> int:
        return len(self.entity_names)

    @property
    def n_relations(self) -> int:
        return len(self.relation_names)

    def entity_id(self, name: str) -> int:
        """Id of entity ``name``; KGDataError if the graph has no such entity."""
        if self._entity_index is None:
            self._entity_index = _index_of(self.entity_names, "entity")
        try:
            return self._entity_index[name]
        except (KeyError, TypeError):
            raise KGDataError(f"unknown entity {name!r} in graph {self.name!r}") from None

    def relation_id(self, name: str) -> int:
        """Id of relation ``name``; KGDataError if the graph has no such relation."""
        if self._relation_index is None:
            self._relation_index = _index_of(self.relation_names, "relation")
        try:
            return self._relation_index[name]
        except (KeyError, TypeError):
            raise KGDataError(f"unknown relation {name!r} in graph {self.name!r}") from None

    def split(self, name: str) -> np.ndarray:
        """The ``(n, 3)`` int32 triples of split ``"train"``, ``"valid"`` or ``"test"``."""
        if name not in SPLITS:
            raise KGDataError(f"split: unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def all_triples(self) -> np.ndarray:
        """``(n_train + n_valid + n_test, 3)`` int32: train, valid and test stacked in order."""
        return np.concatenate([self.train, self.valid, self.test])

    def aligned_to(self, entity_names, relation_names) -> KnowledgeGraph:
        """This graph with its ids renumbered to the given vocabularies, matched by name.

        A saved model's rows are its own id order; a dataset's ids follow first appearance
        in its train file (or its .dict files), so the two agree only by accident. Matching
        by name makes evaluation independent of the dataset's line order.

        Args:
            entity_names: ``(n_entities',)`` sequence of str, row -> name (e.g. a model's
                ``entity_names``); names must be unique.
            relation_names: ``(n_relations',)`` sequence of str, row -> name.

        Returns:
            A KnowledgeGraph whose ``entity_names`` / ``relation_names`` are exactly the
            given ones and whose int32 ``(n, 3)`` train/valid/test arrays hold the same
            triples under those ids; every other field (name, dropped_unseen, source) is kept.
            ``self`` when both vocabularies already equal this graph's, in the same order.
            Given names this graph lacks are allowed (unused ids).

        Raises:
            KGDataError: a name of this graph is missing from the given vocabulary (one
                line with the count and the first few), or the given names are not unique.
        """
        ent = _as_name_array(entity_names, "entity_names")
        rel = _as_name_array(relation_names, "relation_names")
        if _same_names(self.entity_names, ent) and _same_names(self.relation_names, rel):
            return self
        ent_map = _name_map(self.entity_names, ent, "entity", "entities", self.name)
        rel_map = _name_map(self.relation_names, rel, "relation", "relations", self.name)
        remapped = {}
        for split in SPLITS:  # old id -> new id: one NumPy gather per column, no per-triple Python
            a = self.split(split)
            remapped[split] = np.stack([ent_map[a[:, 0]], rel_map[a[:, 1]], ent_map[a[:, 2]]], axis=1)
        # replace() re-runs __post_init__ (range checks) and carries every other field along.
        return dataclasses.replace(self, entity_names=ent, relation_names=rel,
                                   dropped_unseen=dict(self.dropped_unseen),
                                   duplicates=dict(self.duplicates), **remapped)

    def __repr__(self) -> str:
        return (f"KnowledgeGraph({self.name!r}, entities={self.n_entities:,}, "
                f"relations={self.n_relations:,}, train={len(self.train):,}, "
                f"valid={len(self.valid):,}, test={len(self.test):,})")


def _as_name_array(names, what: str) -> np.ndarray:
    arr = np.asarray(names, dtype=object)
    if arr.ndim != 1:
        raise KGDataError(f"KnowledgeGraph.{what}: expected a 1-D sequence of names, got shape {arr.shape}")
    return arr


def _same_names(a: np.ndarray, b: np.ndarray) -> bool:
    """True when the two ``(n,)`` object name arrays are equal element by element, in order."""
    return a is b or (len(a) == len(b) and bool(np.all(a == b)))


def _name_map(names: np.ndarray, target: np.ndarray, kind: str, plural: str, graph: str) -> np.ndarray:
    """``(len(names),)`` int32: the row of each of ``names`` in ``target``, matched by str.

    One dict over ``target`` plus one lookup pass over ``names`` (no per-triple Python work).
    KGDataError when ``target`` repeats a name or lacks any of ``names``.
    """
    target_str = list(map(str, target))
    index = {s: i for i, s in enumerate(target_str)}
    if len(index) != len(target_str):
        dup = next(s for i, s in enumerate(target_str) if index[s] != i)
        raise KGDataError(f"the saved model's {kind} names are not unique ({dup!r} appears more "
                          f"than once); cannot match them to graph {graph!r} by name")
    ids = _lookup(index, map(str, names), len(names))
    missing = np.flatnonzero(ids < 0)
    if len(missing):
        first = ", ".join(repr(str(names[i])) for i in missing[:_N_MISSING_SHOWN])
        more = ", ..." if len(missing) > _N_MISSING_SHOWN else ""
        noun = kind if len(missing) == 1 else plural
        raise KGDataError(
            f"the dataset {graph!r} names {len(missing)} {noun} the saved model does not have "
            f"(first: {first}{more}); use the graph the model was trained on, or a subset of "
            f"its entities and relations")
    return ids


def _index_of(names: np.ndarray, what: str) -> dict:
    index = {str(n): i for i, n in enumerate(names)}
    if len(index) != len(names):
        raise KGDataError(f"{what} names are not unique; cannot look up ids by name")
    return index


# --------------------------------------------------------------------------- entry point


def load_dataset(name_or_path: str, *, format: str | None = None, unseen: str | None = None,
                 delimiter: str = "\t", duplicates: str = "keep", data_dir: str | None = None,
                 cache_dir: str | None = None, names_first: bool = False) -> KnowledgeGraph:
    """Load a knowledge graph by name or folder.

    Resolution order:
      1. ``"synthetic"`` (any case) -> :func:`synthetic` with its defaults.
      2. An existing directory -> parsed with ``format``.
      3. A folder under ``data_dir`` (default ``$KGNUM_DATA_DIR``) whose name matches
         case-insensitively (``"FB15k-237"`` finds ``fb15k-237/``); else, for the public
         benchmarks in :data:`DATASET_URLS`, a previous download in the cache or a new one.
    ``names_first`` (the CLI's ``--dataset``): 3's folder under ``data_dir`` comes before 2, so
    that a folder of the same name in the working directory (a saved model ``umls/``) is not taken
    for the dataset.

    Args:
        name_or_path: dataset name or folder path.
        format: one of :data:`FORMATS`. ``"tsv"`` (default: ``train.txt``/``valid.txt``/
            ``test.txt``, string ``head<TAB>relation<TAB>tail``); ``"raw_udd_hrt"`` (same,
            ``.tsv`` names also accepted) and DGL-KE's other column orders ``raw_udd_htr``,
            ``_rht``, ``_rth``, ``_thr``, ``_trh`` (the letters name the file's columns);
            ``"udd_hrt"`` etc. (integer ids in that column order + ``entities.dict`` /
            ``relations.dict``, lines ``id<TAB>name``).
        unseen: what to do with a valid/test triple whose entity or relation never occurs in
            train: ``"error"`` (KGDataError naming file, line and string), ``"skip"`` (drop
            it, log a WARNING on logger ``"kgnum"``, count in ``kg.dropped_unseen``) or
            ``"keep"`` (keep it; new strings get ids after all train ids, as DGL-KE and the
            published FB15k-237 numbers do). Default (None): ``"keep"`` for the public
            benchmarks (FB15k, FB15k-237, wn18, wn18rr), so their published protocol and
            counts hold, and ``"error"`` for everything else.
        delimiter: field separator of the triple files: ``"\\t"`` (default) or ``"tab"``,
            ``" "`` or ``"space"`` (any run of whitespace), ``","`` or ``"comma"``, or any
            other single character. Fields are kept verbatim; ``.dict`` files are always
            tab separated.
        duplicates: a triple repeated within one split: ``"keep"`` (default, as DGL-KE
            does) or ``"drop"`` (the first occurrence stays). Either way the count is logged
            (INFO, logger ``"kgnum"``, one line per split) and stored in ``kg.duplicates``.
        data_dir: folder holding named datasets; default ``$KGNUM_DATA_DIR``.
        cache_dir: cache folder; default ``$KGNUM_CACHE_DIR``, else ``~/.cache/kgnum``.

    Returns:
        KnowledgeGraph with int32 ``(n, 3)`` train/valid/test arrays. For string formats,
        ids follow first appearance in train (head before tail within a line).
    """
    text_name = _text_path(name_or_path, "name_or_path", "a dataset name or folder path")
    public = _public_name(text_name)
    path = os.path.expanduser(text_name)
    data_root = data_dir if data_dir is not None else os.environ.get("KGNUM_DATA_DIR")
    folder = _find_named_folder(data_root, text_name) if names_first else None
    if unseen is None:
        unseen = "keep" if public is not None and (folder is not None or not os.path.isdir(path)) else "error"
    spec = _spec(format, unseen, delimiter, duplicates)

    if text_name.lower() == "synthetic":
        return synthetic()

    if folder is None and os.path.isdir(path):
        full = os.path.abspath(path)
        return _load_folder(full, os.path.basename(full.rstrip(os.sep)) or full, spec, cache_dir)

    folder = folder or _find_named_folder(data_root, text_name)
    if folder is not None:
        return _load_folder(folder, public or os.path.basename(folder), spec, cache_dir)
    if public is not None:
        folder = download_dataset(public, cache_dir=cache_dir)
        return _load_folder(folder, public, spec, cache_dir)

    if data_root is None:
        looked = "KGNUM_DATA_DIR is not set and no data_dir was given"
    elif not os.path.isdir(data_root):
        looked = f"data dir {data_root!r} does not exist"
    else:
        looked = f"looked in data dir {os.path.abspath(data_root)!r}"
    known: dict[str, str] = {}  # lower -> first spelling, so "fb15k-237/" doesn't repeat "FB15k-237"
    for n in ["synthetic", *DATASET_URLS, *_local_dataset_names(data_root)]:
        known.setdefault(n.lower(), n)
    raise KGDataError(
        f"--dataset {text_name}: neither an existing folder nor a known dataset "
        f"({looked}). Known names: {', '.join(known.values())}")


def load_files(train, valid=None, test=None, *, format: str | None = None, delimiter: str = "\t",
               unseen: str | None = None, duplicates: str = "keep", entities=None, relations=None,
               name: str | None = None, cache_dir: str | None = None) -> KnowledgeGraph:
    """Load a knowledge graph from files with any names (DGL-KE's ``--data_files``).

    Args:
        train: path of the training triples (required, at least one triple).
        valid, test: paths of the validation / test triples, or None for an empty split
            (no early stopping without valid triples; nothing to evaluate without test ones).
        format: as in :func:`load_dataset`; ``"tsv"`` and ``"raw_udd_hrt"`` are the same here.
        delimiter, duplicates: as in :func:`load_dataset`.
        unseen: as in :func:`load_dataset`; default (None) ``"error"``.
        entities, relations: the ``.dict`` files of the ``udd_*`` formats (lines
            ``id<TAB>name``); default ``entities.dict`` / ``relations.dict`` in the train
            file's folder. Ignored by the string formats.
        name: the graph's name; default the train file's folder name.
        cache_dir: as in :func:`load_dataset`; the cache entry is keyed by every file's path,
            size, mtime, inode and ctime and every option above.

    Returns:
        KnowledgeGraph (``source``: the train file's folder).

    Raises:
        KGDataError: a missing or unreadable file, a malformed line (file and 1-based line
            in the message), an unknown option value.
    """
    spec = _spec(format, "error" if unseen is None else unseen, delimiter, duplicates)
    files = {}
    for role, value in (("train", train), ("valid", valid), ("test", test)):
        if value is None and role != "train":
            continue
        files[role] = _file_arg(value, role)
    folder = os.path.dirname(files["train"])
    if spec.ids:
        for role, value in (("entities", entities), ("relations", relations)):
            path = os.path.join(folder, f"{role}.dict") if value is None else _file_arg(value, role)
            if not os.path.isfile(path):
                raise KGDataError(
                    f"{path}: file not found (--format {spec.fmt} needs entities.dict and relations.dict, "
                    f"lines id<TAB>name; give them as --data-files ENTITIES RELATIONS TRAIN [VALID [TEST]], "
                    f"DGL-KE's order)")
            files[role] = path
    if name is None:
        name = os.path.basename(folder) or files["train"]
    ident = {"files": {role: os.path.realpath(p) for role, p in files.items()}}
    return _load_cached(files, str(name), folder, spec, ident, cache_dir)


def _text_path(value, where: str, what: str) -> str:
    """``value`` as a non-empty str path; KGDataError "``where``: expected ``what``" otherwise."""
    try:
        path = os.fspath(value)
    except TypeError:
        raise KGDataError(f"{where}: expected {what}, got {type(value).__name__}") from None
    if not isinstance(path, str) or not path:
        raise KGDataError(f"{where}: expected {what.replace('a ', 'a non-empty ', 1)}, got {value!r}")
    return path


def _file_arg(value, role: str) -> str:
    """Absolute path of a file argument; KGDataError for a non-path or an empty string."""
    path = _text_path(value, "--data-files", f"a path for the {role} file")
    return os.path.abspath(os.path.expanduser(path))


@dataclass(frozen=True)
class _Spec:
    """How to read triple files: ``fmt`` (a FORMATS name), its column ``order`` (e.g. "rth"),
    ``ids`` (integer ids + .dict files), ``delimiter`` (None: any whitespace), the policies."""

    fmt: str
    order: str
    ids: bool
    delimiter: str | None
    unseen: str
    duplicates: str

    def ident(self) -> dict:
        """The options that change the parsed graph, for the cache key."""
        return {"format": self.fmt, "unseen": self.unseen, "delimiter": self.delimiter,
                "duplicates": self.duplicates}


def _spec(format, unseen, delimiter, duplicates) -> _Spec:
    """Validated reading options; KGDataError (in CLI terms) for an unknown value."""
    fmt = "tsv" if format is None else format
    if fmt not in FORMATS:
        raise KGDataError(f"--format {format}: unknown format; allowed: {', '.join(FORMATS)}")
    if unseen not in UNSEEN_POLICIES:
        raise KGDataError(f"--unseen {unseen}: unknown policy; allowed: {', '.join(UNSEEN_POLICIES)}")
    if duplicates not in DUPLICATE_POLICIES:
        raise KGDataError(f"--duplicates {duplicates}: unknown policy; allowed: "
                          f"{', '.join(DUPLICATE_POLICIES)}")
    order = "hrt" if fmt == "tsv" else fmt.rsplit("_", 1)[1]
    return _Spec(fmt, order, fmt.startswith("udd_"), _delimiter(delimiter), unseen, duplicates)


def _delimiter(value) -> str | None:
    """The separator to split lines on: one character, or None for any run of whitespace."""
    if isinstance(value, str):
        d = DELIMITERS.get(value.lower(), value)
        if len(d) == 1 and d not in "\n\r":
            return None if d == " " else d
    raise KGDataError(f"--delimiter {value!r}: expected tab, space (any run of whitespace), comma, "
                      f"or one other character (not a line break)")


def _public_name(name: str) -> str | None:
    for canonical in DATASET_URLS:
        if canonical.lower() == name.lower():
            return canonical
    return None


def _local_dataset_names(data_root: str | None) -> list[str]:
    if not data_root or not os.path.isdir(data_root):
        return []
    return sorted(e for e in os.listdir(data_root) if os.path.isdir(os.path.join(data_root, e)))


def _find_named_folder(data_root: str | None, name: str) -> str | None:
    for entry in _local_dataset_names(data_root):
        if entry.lower() == name.lower():
            return os.path.abspath(os.path.join(data_root, entry))
    return None


# --------------------------------------------------------------------------- folder loading


def _split_files(folder: str, spec: _Spec) -> dict[str, str]:
    """Paths of the files ``spec`` needs in ``folder``; KGDataError naming any missing one."""
    exts = (".txt",) if spec.fmt == "tsv" else (".txt", ".tsv")
    files = {}
    for split in SPLITS:
        candidates = [os.path.join(folder, split + ext) for ext in exts]
        found = next((c for c in candidates if os.path.isfile(c)), None)
        if found is None:
            raise KGDataError(f"{candidates[0]}: file not found (--format {spec.fmt} needs "
                              f"{' or '.join(split + e for e in exts)} in {folder}; --data-files "
                              f"takes files with other names)")
        files[split] = found
    if spec.ids:
        for kind in ("entities", "relations"):
            path = os.path.join(folder, kind + ".dict")
            if not os.path.isfile(path):
                raise KGDataError(f"{path}: file not found (--format {spec.fmt} needs "
                                  f"entities.dict and relations.dict, lines id<TAB>name)")
            files[kind] = path
    return files


def _load_folder(folder: str, name: str, spec: _Spec, cache_dir: str | None) -> KnowledgeGraph:
    files = _split_files(folder, spec)
    return _load_cached(files, name, folder, spec, {"source": os.path.realpath(folder)}, cache_dir)


def _load_cached(files: dict[str, str], name: str, source: str, spec: _Spec, ident: dict,
                 cache_dir: str | None) -> KnowledgeGraph:
    """Parse ``files`` ({role: path}; valid/test may be absent) or take the graph from the cache.

    ``ident`` names the source (a folder, or every file's path); with ``spec.ident()`` it
    selects the cache entry, and the files' sizes, mtimes, inodes and ctimes decide whether it
    is current.
    """
    root = _cache_root(cache_dir)
    entry_id, key = _cache_keys({**ident, **spec.ident()}, files)
    entry = os.path.join(root, "parsed", f"{_slug(name)}-{entry_id}")
    kg = _cache_read(entry, key)
    if kg is not None:
        log.debug("loaded %s from cache %s", name, entry)
        _log_dropped(kg.name, kg.dropped_unseen, {s: kg.split(s) for s in SPLITS})  # as a parse logs them
        _log_duplicates(kg, spec.duplicates)
        return kg
    t0 = time.perf_counter()
    if spec.ids:
        kg = _parse_udd(files, spec, name)
    else:
        kg = _parse_string_files(files, spec, name)
    kg.source = source
    label = source if "source" in ident else ", ".join(files[s] for s in SPLITS if s in files)
    log.info("parsed %s in %.2f s: %r", label, time.perf_counter() - t0, kg)
    _log_duplicates(kg, spec.duplicates)
    try:
        _cache_write(root, entry, key, kg)
    except OSError as exc:  # an unwritable cache must not stop training
        log.warning("could not write dataset cache %s: %s", entry, exc)
    return kg


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "dataset"


# --------------------------------------------------------------------------- parsing


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic GC: it rescans the millions of fresh lists/strings while splitting (3x slower)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise KGDataError(f"{path}: file not found") from None
    except OSError as exc:
        raise KGDataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise KGDataError(f"{path}:{line}: not valid UTF-8 ({exc.reason})") from None


class _Fields:
    """The fields of one file's non-blank lines, plus row -> line mapping."""

    def __init__(self, path: str | None, lines: list[str], cols: tuple[tuple[str, ...], ...], n_rows: int):
        self.path = path
        self.cols = cols
        self.n_rows = n_rows
        self._lines = lines
        self._line_numbers: list[int] | None = None

    @classmethod
    def empty(cls, n_fields: int) -> _Fields:
        """No file (an optional split that was not given): no rows."""
        return cls(None, [], tuple(() for _ in range(n_fields)), 0)

    def line_of(self, row: int) -> int:
        """1-based line number of the ``row``-th non-blank line."""
        if self._line_numbers is None:
            self._line_numbers = [i + 1 for i, s in enumerate(self._lines) if s.strip()]
        return self._line_numbers[row]


def _separator_words(delimiter: str | None) -> tuple[str, str]:
    """(adjective, token) describing ``delimiter`` in messages: ("tab-separated", "<TAB>")."""
    if delimiter == "\t":
        return "tab-separated", "<TAB>"
    if delimiter is None:
        return "whitespace-separated", " "
    return f"{delimiter!r}-separated", delimiter


def _read_fields(path: str, n_fields: int, what: str, delimiter: str | None = "\t",
                 hints: dict[int, str] | None = None) -> _Fields:
    """Split ``path`` into ``n_fields`` columns on ``delimiter`` (None: any run of whitespace).

    Lines end at "\\n" and are stripped of surrounding whitespace (handles CRLF files) as
    DGL-KE does; blank lines are skipped; the fields themselves are kept verbatim.
    KGDataError names the first malformed line; ``hints`` maps a wrong field count to a
    sentence appended to that message.
    """
    text = _read_text(path)
    with _gc_paused():
        lines = text.split("\n")
        rows = [s.split(delimiter) for s in map(str.strip, lines) if s]
        if any(len(r) != n_fields for r in rows):
            _raise_first_bad_line(path, lines, n_fields, what, delimiter, hints or {})
        cols = tuple(zip(*rows)) if rows else tuple(() for _ in range(n_fields))
        if delimiter is not None and any("" in c for c in cols):
            _raise_first_bad_line(path, lines, n_fields, what, delimiter, hints or {})
    return _Fields(path, lines, cols, len(rows))


def _raise_first_bad_line(path: str, lines: list[str], n_fields: int, what: str, delimiter: str | None,
                          hints: dict[int, str]):
    adjective, _ = _separator_words(delimiter)
    for i, raw in enumerate(lines):
        s = raw.strip()
        if not s:
            continue
        parts = s.split(delimiter)
        if len(parts) != n_fields:
            hint = hints.get(len(parts), "")
            if not hint and len(parts) == 1 and delimiter == "\t" and " " in s:
                hint = " (fields must be separated by tabs, not spaces; --delimiter space splits on whitespace)"
            elif not hint and len(parts) == 1 and delimiter != "\t" and "\t" in s:
                hint = " (the line has tabs; --delimiter tab, the default, splits on them)"
            raise KGDataError(f"{path}:{i + 1}: expected {n_fields} {adjective} fields "
                              f"({what}), found {len(parts)}{hint}: {s[:120]!r}")
        if "" in parts:
            raise KGDataError(f"{path}:{i + 1}: empty field in {s[:120]!r} (expected {what})")
    raise AssertionError("no malformed line found")  # callers only get here after a failed check


def _what(spec: _Spec) -> str:
    """The expected columns of a triples file, e.g. ``relation<TAB>tail<TAB>head``."""
    names = {"h": "head", "r": "relation", "t": "tail"}
    suffix = "_id" if spec.ids else ""
    _, token = _separator_words(spec.delimiter)
    return token.join(names[c] + suffix for c in spec.order)


def _hrt(cols: tuple, order: str) -> tuple:
    """The file's columns (in ``order``, e.g. "rth") rearranged as (head, relation, tail)."""
    return tuple(cols[order.index(c)] for c in "hrt")


def _first_appearance_index(heads: tuple, tails: tuple) -> dict[str, int]:
    """Entity -> id in order of first appearance, head before tail within a line."""
    inter = [None] * (2 * len(heads))
    inter[0::2] = heads
    inter[1::2] = tails
    return {s: i for i, s in enumerate(dict.fromkeys(inter))}


def _lookup(index: dict, names: tuple, n: int) -> np.ndarray:
    """``(n,)`` int32 ids of ``names`` through ``index``; -1 for names not in it."""
    return np.fromiter(map(index.get, names, repeat(-1)), dtype=np.int32, count=n)


def _parse_string_files(files: dict[str, str], spec: _Spec, name: str) -> KnowledgeGraph:
    """Parse tsv / raw_udd_*: string triples, vocabularies built from train first.

    ``files``: {"train": path, "valid": path, "test": path}; a missing valid/test is empty.
    """
    what = _what(spec)
    train_f = _read_fields(files["train"], 3, what, spec.delimiter)
    if train_f.n_rows == 0:
        raise KGDataError(f"{files['train']}: the training split is empty (no triples)")
    h, r, t = _hrt(train_f.cols, spec.order)
    ent = _first_appearance_index(h, t)
    rel = {s: i for i, s in enumerate(dict.fromkeys(r))}
    n = train_f.n_rows
    train = np.stack([_lookup(ent, h, n), _lookup(rel, r, n), _lookup(ent, t, n)], axis=1)

    n_train_ent, n_train_rel = len(ent), len(rel)
    out, dropped, kept = {"train": train}, {}, {}
    for split in ("valid", "test"):
        f = _read_fields(files[split], 3, what, spec.delimiter) if split in files else _Fields.empty(3)
        cols = _hrt(f.cols, spec.order)
        h, r, t = cols
        ids = np.stack([_lookup(ent, h, f.n_rows), _lookup(rel, r, f.n_rows),
                        _lookup(ent, t, f.n_rows)], axis=1)
        bad = np.flatnonzero((ids < 0).any(axis=1))
        if len(bad) and spec.unseen == "error":
            row = int(bad[0])
            col = int(np.flatnonzero(ids[row] < 0)[0])
            kind = "relation" if col == 1 else "entity"
            _raise_unseen(f, row, f"{kind} {cols[col][row]!r}", files["train"])
        if len(bad) and spec.unseen == "keep":
            # New strings get ids after every train id, in order of appearance.
            for row in bad:
                for col, index in ((0, ent), (1, rel), (2, ent)):
                    if ids[row, col] < 0:
                        ids[row, col] = index.setdefault(cols[col][row], len(index))
            kept[split] = int(((ids[:, 0] >= n_train_ent) | (ids[:, 1] >= n_train_rel)
                               | (ids[:, 2] >= n_train_ent)).sum())
        if len(bad) and spec.unseen == "skip":
            ids = np.delete(ids, bad, axis=0)
            dropped[split] = len(bad)
        out[split] = ids

    _log_dropped(name, dropped, out)
    if kept:
        log.info("%s: kept %s triples whose entity or relation does not occur in train "
                 "(--unseen keep); %d entities and %d relations got ids after the train ones",
                 name, " and ".join(f"{n} {s}" for s, n in kept.items()),
                 len(ent) - n_train_ent, len(rel) - n_train_rel)
    duplicates = _count_duplicates(out, spec.duplicates, len(ent), len(rel))
    return KnowledgeGraph(name=name, entity_names=list(ent), relation_names=list(rel),
                          dropped_unseen=dropped, duplicates=duplicates, **out)


def _count_duplicates(out: dict, policy: str, n_ent: int, n_rel: int) -> dict:
    """{split: n} repeated triples within each split of ``out`` (int ``(n, 3)`` arrays).

    Ids name triples one to one here, so equal ids are equal names. With ``policy`` "drop"
    the repeats are removed from ``out`` in place, the first occurrence of each kept.
    """
    counts = {}
    for split in SPLITS:
        a = out[split]
        if len(a) < 2:
            continue
        if n_ent * n_ent * n_rel < 2**62:  # one int64 key per triple: a 1-D sort, fast
            key = (a[:, 0].astype(np.int64) * n_rel + a[:, 1]) * n_ent + a[:, 2]
            _, first = np.unique(key, return_index=True)  # stable sort: index of the first occurrence
        else:
            _, first = np.unique(a, axis=0, return_index=True)
        n_dup = len(a) - len(first)
        if n_dup:
            counts[split] = n_dup
            if policy == "drop":
                out[split] = a[np.sort(first)]
    return counts


def _log_duplicates(kg: KnowledgeGraph, policy: str):
    """One INFO line per split that repeats a triple."""
    for split, n in kg.duplicates.items():
        if policy == "drop":
            log.info("%s: dropped %d repeated %s triples, the first occurrence of each kept "
                     "(--duplicates drop); %d remain", kg.name, n, split, len(kg.split(split)))
        else:
            log.info("%s: %d of the %d %s triples repeat an earlier one; kept, as DGL-KE does "
                     "(--duplicates drop removes them)", kg.name, n, len(kg.split(split)), split)


def _raise_unseen(f: _Fields, row: int, desc: str, train_path: str):
    raise KGDataError(
        f"{f.path}:{f.line_of(row)}: {desc} does not occur in the training split "
        f"{train_path}; --unseen skip drops such triples, --unseen keep keeps them (unseen= in Python)")


def _log_dropped(name: str, dropped: dict, out: dict):
    if dropped:
        parts = [f"{n} of {n + len(out[s])} {s}" for s, n in dropped.items()]
        log.warning("%s: dropped %s triples whose entity or relation does not occur in train "
                    "(--unseen skip)", name, " and ".join(parts))


_DICT_HINTS = {3: " (is this a triples file? With a udd_* --format, --data-files takes ENTITIES "
                  "RELATIONS TRAIN [VALID [TEST]], DGL-KE's order)"}


def _read_id_names(path: str, delimiters: tuple[str, ...]) -> _Fields:
    """The (id, name) fields of lines ``id<delimiter>name``, split at the first delimiter (ids are
    integers, a name may hold the delimiter): the first of ``delimiters`` that follows the first
    line's id, else the last. Lines end and are stripped as in ``_read_fields``."""
    text = _read_text(path)
    lines = text.split("\n")
    stripped = [s for s in map(str.strip, lines) if s]
    first = stripped[0] if stripped else ""
    sep = next((d for d in delimiters if d in first and _is_digits(first.split(d, 1)[0])), delimiters[-1])
    rows = [s.split(sep, 1) for s in stripped]
    bad = next((row for row, r in enumerate(rows) if len(r) != 2 or "" in r), None)
    if bad is not None:
        f = _Fields(path, lines, (), len(rows))
        raise KGDataError(f"{path}:{f.line_of(bad)}: expected id{_separator_words(sep)[1]}name, "
                          f"found {stripped[bad][:120]!r}")
    cols = tuple(zip(*rows)) if rows else ((), ())
    return _Fields(path, lines, cols, len(rows))


def _is_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def _read_dict(path: str, kind: str, hints: dict[int, str] | None = None,
               delimiters: tuple[str, ...] | None = None) -> list[str]:
    """Names indexed by id from a DGL-KE ``.dict`` file (lines ``id<TAB>name``, always tabs), or
    with ``delimiters`` a map file a DGL-KE run wrote (``_read_id_names``)."""
    f = _read_fields(path, 2, "id<TAB>name", "\t", hints) if delimiters is None else \
        _read_id_names(path, delimiters)
    ids, names = f.cols
    by_id: dict[int, int] = {}  # id -> row, to report duplicates
    for row, s in enumerate(ids):
        try:
            i = int(s)
        except ValueError:
            raise KGDataError(f"{path}:{f.line_of(row)}: {kind} id {s!r} is not an integer") from None
        if i < 0:
            raise KGDataError(f"{path}:{f.line_of(row)}: {kind} id {i} is negative")
        if i in by_id:
            raise KGDataError(f"{path}:{f.line_of(row)}: {kind} id {i} already defined on "
                              f"line {f.line_of(by_id[i])}")
        by_id[i] = row
    n = len(ids)
    if n == 0:
        raise KGDataError(f"{path}: no {kind} entries")
    missing = next((i for i in range(n) if i not in by_id), None)
    if missing is not None:
        raise KGDataError(f"{path}: {kind} ids must be 0..{n - 1} without gaps; id {missing} is missing")
    out = [names[by_id[i]] for i in range(n)]
    if len(set(out)) != n:
        seen: dict[str, int] = {}
        for row, s in enumerate(names):
            if s in seen:
                raise KGDataError(f"{path}:{f.line_of(row)}: {kind} name {s!r} already used on "
                                  f"line {f.line_of(seen[s])}")
            seen[s] = row
    return out


def _parse_id_triples(path: str | None, spec: _Spec, ent_path: str, n_ent: int, rel_path: str,
                      n_rel: int) -> tuple[np.ndarray, _Fields]:
    """``(n, 3)`` int32 (head, relation, tail) ids of a udd_* triples file, range-checked
    against the dicts; no rows for ``path`` None."""
    f = _Fields.empty(3) if path is None else _read_fields(path, 3, _what(spec), spec.delimiter)
    cols = _hrt(f.cols, spec.order)
    arr = np.empty((f.n_rows, 3), dtype=np.int64)
    for col, n, dict_path, kind in ((0, n_ent, ent_path, "entity"), (1, n_rel, rel_path, "relation"),
                                    (2, n_ent, ent_path, "entity")):
        try:
            arr[:, col] = np.fromiter(map(int, cols[col]), dtype=np.int64, count=f.n_rows)
        except (ValueError, OverflowError):
            row = next(i for i, s in enumerate(cols[col]) if not _is_int64(s))
            s = cols[col][row]
            if not _is_int(s):
                raise KGDataError(f"{path}:{f.line_of(row)}: id {s!r} is not an integer (--format "
                                  f"{spec.fmt} expects integer ids)") from None
            raise KGDataError(f"{path}:{f.line_of(row)}: {kind} id {s.strip()} is outside "
                              f"0..{n - 1} defined by {dict_path}") from None
        bad = np.flatnonzero((arr[:, col] < 0) | (arr[:, col] >= n))
        if len(bad):
            row = int(bad[0])
            raise KGDataError(f"{path}:{f.line_of(row)}: {kind} id {arr[row, col]} is outside "
                              f"0..{n - 1} defined by {dict_path}")
    return arr.astype(np.int32), f


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def _is_int64(s: str) -> bool:
    try:
        return -2**63 <= int(s) < 2**63
    except ValueError:
        return False


def _parse_udd(files: dict[str, str], spec: _Spec, name: str) -> KnowledgeGraph:
    """Parse udd_*: integer triples with dict files; ids are kept as the dicts give them."""
    ent_names = _read_dict(files["entities"], "entity", _DICT_HINTS)
    rel_names = _read_dict(files["relations"], "relation", _DICT_HINTS)
    dims = (files["entities"], len(ent_names), files["relations"], len(rel_names))
    train, _ = _parse_id_triples(files["train"], spec, *dims)
    if len(train) == 0:
        raise KGDataError(f"{files['train']}: the training split is empty (no triples)")
    ent_seen = np.zeros(len(ent_names), dtype=bool)
    ent_seen[train[:, 0]] = True
    ent_seen[train[:, 2]] = True
    rel_seen = np.zeros(len(rel_names), dtype=bool)
    rel_seen[train[:, 1]] = True

    out, dropped = {"train": train}, {}
    for split in ("valid", "test"):
        ids, f = _parse_id_triples(files.get(split), spec, *dims)
        unseen_cols = np.stack([~ent_seen[ids[:, 0]], ~rel_seen[ids[:, 1]], ~ent_seen[ids[:, 2]]], axis=1)
        bad = np.flatnonzero(unseen_cols.any(axis=1))
        if len(bad) and spec.unseen == "error":
            row = int(bad[0])
            col = int(np.flatnonzero(unseen_cols[row])[0])
            desc = (f"relation {rel_names[ids[row, 1]]!r} (id {ids[row, 1]})" if col == 1
                    else f"entity {ent_names[ids[row, col]]!r} (id {ids[row, col]})")
            _raise_unseen(f, row, desc, files["train"])
        if len(bad) and spec.unseen == "skip":
            ids = np.delete(ids, bad, axis=0)
            dropped[split] = len(bad)
        out[split] = ids
    _log_dropped(name, dropped, out)
    duplicates = _count_duplicates(out, spec.duplicates, len(ent_names), len(rel_names))
    return KnowledgeGraph(name=name, entity_names=ent_names, relation_names=rel_names,
                          dropped_unseen=dropped, duplicates=duplicates, **out)


# --------------------------------------------------------------------------- cache


def _cache_root(cache_dir: str | None) -> str:
    root = cache_dir or os.environ.get("KGNUM_CACHE_DIR") or os.path.join("~", ".cache", "kgnum")
    return os.path.abspath(os.path.expanduser(root))


def _cache_keys(ident: dict, files: dict[str, str]) -> tuple[str, str]:
    """(entry id, content key): the entry is per ``ident`` (the source and every reading
    option), the key adds the files' names, sizes, mtimes, inodes and ctimes (a file replaced
    by another of the same size, its mtime carried over by ``mv``, ``cp -p`` or an unpacked
    archive, still gets a new inode or ctime, which no tool sets back)."""
    entry_id = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    stats = {}
    for role, path in sorted(files.items()):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise KGDataError(f"{path}: file not found") from None
        except OSError as exc:
            raise KGDataError(f"{path}: cannot read: {exc.strerror or exc}") from None
        stats[role] = [os.path.basename(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    full = dict(ident, stats=stats, version=_CACHE_VERSION)
    return entry_id, hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()


def _cache_read(entry: str, key: str) -> KnowledgeGraph | None:
    """The cached graph, or None when absent, stale, or unreadable (then it gets rebuilt)."""
    meta_path = os.path.join(entry, "meta.json")
    if not os.path.isfile(meta_path):
        return None
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("key") != key:
            return None
        arrays = {}
        for split in SPLITS:
            arr = np.load(os.path.join(entry, f"{split}.npy"), allow_pickle=False)
            if arr.dtype != np.int32 or arr.shape != (meta["counts"][split], 3):
                raise ValueError(f"{split}.npy has shape {arr.shape} dtype {arr.dtype}")
            arrays[split] = arr
        vocab = {}
        for kind in ("entities", "relations"):
            with open(os.path.join(entry, f"{kind}.txt"), "rb") as f:
                names = f.read().decode("utf-8").split("\n")
            if len(names) != meta["counts"][kind]:
                raise ValueError(f"{kind}.txt has {len(names)} names, expected {meta['counts'][kind]}")
            vocab[kind] = names
        # KnowledgeGraph re-checks id ranges, so a damaged array is caught here too.
        return KnowledgeGraph(name=meta["name"], entity_names=vocab["entities"],
                              relation_names=vocab["relations"], dropped_unseen=meta["dropped_unseen"],
                              duplicates=meta["duplicates"], source=meta["source"], **arrays)
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        log.warning("ignoring unreadable dataset cache %s (%s); rebuilding it", entry, exc)
        return None


def _cache_write(root: str, entry: str, key: str, kg: KnowledgeGraph):
    """Write the cache entry into a temp dir and rename it into place (readers never see half)."""
    parent = os.path.dirname(entry)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a shared KGNUM_CACHE_DIR should stay readable
        for split in SPLITS:
            np.save(os.path.join(tmp, f"{split}.npy"), kg.split(split))
        for kind, names in (("entities", kg.entity_names), ("relations", kg.relation_names)):
            with open(os.path.join(tmp, f"{kind}.txt"), "wb") as f:
                # Names never contain "\n" (files are split on it), so it is a safe separator.
                f.write("\n".join(names).encode("utf-8"))
        meta = {"key": key, "name": kg.name, "source": kg.source, "dropped_unseen": kg.dropped_unseen,
                "duplicates": kg.duplicates,
                "counts": {"entities": kg.n_entities, "relations": kg.n_relations,
                           **{s: len(kg.split(s)) for s in SPLITS}}}
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f)
        if os.path.exists(entry):  # stale or corrupt: move aside first, a dir can't replace a full one
            trash = tempfile.mkdtemp(prefix=".old-", dir=parent)
            os.replace(entry, os.path.join(trash, "x"))
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(tmp, entry)
        except OSError:
            if not os.path.isdir(entry):  # else another process just wrote the same entry
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- downloads


def download_dataset(name: str, *, cache_dir: str | None = None,
                     urls: dict[str, tuple[str, str | None]] | None = None) -> str:
    """Fetch public benchmark ``name`` into ``<cache>/datasets/<name>`` and return that folder.

    ``urls`` (default :data:`DATASET_URLS`) maps a canonical name to ``(url, sha256 or None)``;
    any urllib URL works, including ``file://``. When a sha256 is given the archive must match
    it (else KGDataError; the partial file is deleted). An existing download is reused.
    """
    table = DATASET_URLS if urls is None else urls
    canonical = next((k for k in table if k.lower() == str(name).lower()), None)
    if canonical is None:
        raise KGDataError(f"name: no download known for {name!r}; known: {', '.join(table)}")
    url, sha256 = table[canonical]
    root = _cache_root(cache_dir)
    datasets = os.path.join(root, "datasets")
    dest = os.path.join(datasets, canonical)
    if os.path.isfile(os.path.join(dest, "train.txt")):
        return dest
    os.makedirs(datasets, exist_ok=True)

    fd, archive = tempfile.mkstemp(prefix=f".{canonical}-", suffix=".zip.part", dir=datasets)
    extract = None
    try:
        log.info("downloading %s from %s", canonical, url)
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise KGDataError(
                f"could not download {canonical} from {url}: {getattr(exc, 'reason', exc)}. Offline? "
                f"Put the folder (train.txt, valid.txt, test.txt) under $KGNUM_DATA_DIR/{canonical}") from None
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise KGDataError(f"{url}: sha256 mismatch for {canonical}: expected {sha256}, "
                              f"got {digest.hexdigest()}; the download was deleted")
        extract = tempfile.mkdtemp(prefix=f".{canonical}-", dir=datasets)
        os.chmod(extract, 0o755)  # it may become the dataset folder itself
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(extract)  # extractall drops absolute paths and ".." components
        except zipfile.BadZipFile as exc:
            raise KGDataError(f"{url}: not a valid zip archive ({exc})") from None
        inner = _find_extracted_folder(extract, canonical)
        if inner is None:
            raise KGDataError(f"{url}: archive has no {canonical}/train.txt")
        try:
            os.replace(inner, dest)
        except OSError:
            if not os.path.isdir(dest):  # else a concurrent download finished first
                raise
        return dest
    finally:
        with contextlib.suppress(OSError):
            os.remove(archive)
        if extract is not None:
            shutil.rmtree(extract, ignore_errors=True)


def _find_extracted_folder(extract: str, canonical: str) -> str | None:
    """The folder holding train.txt: ``<canonical>/`` (any case), the top level, or a lone subfolder."""
    subdirs = [e for e in os.listdir(extract) if os.path.isdir(os.path.join(extract, e))]
    named = [e for e in subdirs if e.lower() == canonical.lower()]
    for cand in [os.path.join(extract, e) for e in named] + [extract] + \
            ([os.path.join(extract, subdirs[0])] if len(subdirs) == 1 else []):
        if os.path.isfile(os.path.join(cand, "train.txt")):
            return cand
    return None


# --------------------------------------------------------------------------- synthetic


def synthetic(n_entities: int = 2000, n_relations: int = 20, n_train: int = 40000,
              n_valid: int = 1000, n_test: int = 1000, dim: int = 16, noise: float = 0.1,
              seed: int = 0, name: str = "synthetic") -> KnowledgeGraph:
    """A random graph with planted TransE structure, for tests and demos.

    Ground truth: entities are points in R^dim drawn around clustered centres, relations are
    translation vectors. For each (head, relation) the candidate tails are the few entities
    (``k``, 3 by default) nearest to ``head + relation + noise * N(0, I)``; triples are drawn
    without replacement from these candidates. So each (h, r) has at most ``k`` plausible
    tails and a translation model can recover them: filtered MRR far above the random
    ``~ln(n_entities) / n_entities``.

    Every entity and relation occurs in train, so valid/test hold no unseen ids. Triples are
    unique and the three splits are disjoint. Deterministic for a given ``seed``.

    Returns:
        KnowledgeGraph with int32 arrays ``train (n_train, 3)``, ``valid (n_valid, 3)``,
        ``test (n_test, 3)``, entity names ``e0..``, relation names ``r0..``.
    """
    for arg, value, least in (("n_entities", n_entities, 2), ("n_relations", n_relations, 1),
                              ("n_train", n_train, 1), ("n_valid", n_valid, 0),
                              ("n_test", n_test, 0), ("dim", dim, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise KGDataError(f"{arg}: expected an integer >= {least}, got {value!r}")
    if not (isinstance(noise, (int, float)) and noise >= 0 and math.isfinite(noise)):
        raise KGDataError(f"noise: expected a finite number >= 0, got {noise!r}")
    if n_train < n_entities + n_relations:
        raise KGDataError(f"n_train: {n_train} is too small to put every entity and relation in "
                          f"train; need at least n_entities + n_relations = {n_entities + n_relations}")
    n_total = n_train + n_valid + n_test
    # Candidate pool >= 2x the sample, so sampled (h, r) still leave unseen true tails to predict.
    k = min(n_entities - 1, max(3, math.ceil(2 * n_total / (n_entities * n_relations))))
    n_pairs = n_entities * n_relations
    if n_total > n_pairs * k:
        raise KGDataError(f"n_train: {n_total} triples requested but only {n_pairs * k} distinct "
                          f"planted triples exist for n_entities={n_entities}, n_relations={n_relations}")

    rng = np.random.default_rng(seed)
    ent_emb, rel_emb = _planted_embeddings(rng, n_entities, n_relations, dim)
    tails = _planted_tails(rng, ent_emb, rel_emb, k, noise)  # (n_entities, n_relations, k)

    # Candidate c = (h * n_relations + r) * k + j is the triple (h, r, tails[h, r, j]).
    forced = np.unique(np.concatenate([
        (np.arange(n_entities) * n_relations + rng.integers(n_relations, size=n_entities)) * k
        + rng.integers(k, size=n_entities),  # one triple per entity (as head)
        (rng.integers(n_entities, size=n_relations) * n_relations + np.arange(n_relations)) * k
        + rng.integers(k, size=n_relations),  # one triple per relation
    ]))
    pool = np.setdiff1d(np.arange(n_pairs * k), forced, assume_unique=True)
    extra = rng.choice(pool, size=n_total - len(forced), replace=False)
    held = extra[: n_valid + n_test]  # held-out triples come from the non-forced ones only
    train_c = rng.permutation(np.concatenate([forced, extra[n_valid + n_test:]]))

    def triples(c: np.ndarray) -> np.ndarray:
        pair, j = np.divmod(c, k)
        h, r = np.divmod(pair, n_relations)
        return np.stack([h, r, tails[h, r, j]], axis=1).astype(np.int32)

    return KnowledgeGraph(
        name=name, train=triples(train_c), valid=triples(held[:n_valid]), test=triples(held[n_valid:]),
        entity_names=[f"e{i}" for i in range(n_entities)],
        relation_names=[f"r{i}" for i in range(n_relations)])


def _planted_embeddings(rng: np.random.Generator, n_entities: int, n_relations: int,
                        dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth ``(n_entities, dim)`` entity points and ``(n_relations, dim)`` translations."""
    n_clusters = max(1, round(math.sqrt(n_entities)))
    centres = rng.normal(0.0, 1.0, size=(n_clusters, dim))
    ent = centres[rng.integers(n_clusters, size=n_entities)] + rng.normal(0.0, 0.5, size=(n_entities, dim))
    # Translations about as long as the within-cluster spread: tails stay near the data
    # instead of all landing on a few outlying "hub" entities.
    rel = rng.normal(0.0, 0.5, size=(n_relations, dim))
    return ent, rel


def _planted_tails(rng: np.random.Generator, ent: np.ndarray, rel: np.ndarray, k: int,
                   noise: float) -> np.ndarray:
    """``(n_entities, n_relations, k)`` int: the k entities nearest to h + r + noise, never h."""
    from scipy.spatial import cKDTree  # local: scipy is only needed for synthetic graphs

    n_ent, dim = ent.shape
    n_rel = rel.shape[0]
    query = (ent[:, None, :] + rel[None, :, :]).reshape(-1, dim)
    query += noise * rng.normal(size=query.shape)
    _, nbr = cKDTree(ent).query(query, k=k + 1)
    nbr = nbr.reshape(n_ent * n_rel, k + 1)
    keep = nbr != np.repeat(np.arange(n_ent), n_rel)[:, None]
    keep[keep.all(axis=1), -1] = False  # exactly one column dropped per row: h itself, or the farthest
    return nbr[keep].reshape(n_ent, n_rel, k)
