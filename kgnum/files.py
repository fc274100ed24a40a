"""Files written so a crash never leaves half of them: directories and JSON swapped into place."""
from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager


def _blocking_ancestor(path: str) -> str | None:
    """The nearest existing ancestor of ``path`` when it is not a folder (nothing can go under it)."""
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    return None if os.path.isdir(parent) else parent


def check_output_dir(path: str, flag: str, marker: str | None = None) -> None:
    """Refuse, before any work, a folder kgnum could not write, or (``marker``: the file that makes
    a folder one kgnum wrote, e.g. a model's config.json) one it must not replace: a folder holding
    other files and no ``marker``. ValueError in CLI terms (``flag`` and the path)."""
    where = f"{flag} {path}".strip()
    blocked = _blocking_ancestor(path)
    if blocked:
        raise ValueError(f"{where}: {blocked} is a file, so no folder can be made under it")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{where}: is a file, not a folder")
    if marker and os.path.isdir(path) and os.listdir(path) and not os.path.exists(os.path.join(path, marker)):
        raise ValueError(f"{where}: the folder holds other files and no {marker}; it would be replaced as a "
                         f"whole, so give a new or empty folder")


def check_output_file(path: str, flag: str) -> None:
    """Refuse, before any work, a file path that is a folder or lies under a file (ValueError)."""
    blocked = _blocking_ancestor(path)
    if blocked:
        raise ValueError(f"{flag} {path}: {blocked} is a file, so no folder can be made under it")
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a folder, not a file")


@contextmanager
def atomic_directory(path: str, marker: str):
    """Yield a temporary sibling of ``path`` to fill; on success it replaces ``path`` by rename
    (the previous copy stays loadable until the switch), on any error it is removed. ``path`` may
    be new, empty, or a folder this writer wrote before (it holds ``marker``): anything else is
    refused (``check_output_dir``), never deleted."""
    path = os.path.abspath(path)
    check_output_dir(path, "", marker)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    old = None
    try:
        yield tmp
        if not os.path.exists(path):
            os.rename(tmp, path)
            return
        old = f"{path}.old-{uuid.uuid4().hex[:8]}"
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        if old is not None and os.path.isdir(old) and not os.path.exists(path):
            os.rename(old, path)  # stopped between the two renames (a signal): the previous copy goes back
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_naming(e, path)


def write_names(path: str, names) -> None:
    """``id<TAB>name`` lines, one per name in order (entities.tsv / relations.tsv)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{i}\t{name}\n" for i, name in enumerate(names))


def read_names(path: str) -> list[str]:
    """The names of a file ``write_names`` wrote, in order. Lines end at "\\n" only (not at "\\r"
    as well, Python's default): a name read from a data file may hold a "\\r"."""
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\n").split("\t", 1)[1] for line in f if line.strip()]


@contextmanager
def atomic_file(path: str, suffix: str = ""):
    """Yield a temporary name next to ``path`` to write; renamed onto ``path`` on success, removed on
    any error (a reader sees the old file or the new one, never half of one). ``suffix``: an ending
    the writer insists on (``np.savez`` adds ``.npz``)."""
    check_output_file(path, "")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        _raise_naming(e, path)


def _raise_naming(error: BaseException, path: str):
    """Re-raise ``error``; an OSError that names no file (a write to a full disk: "No space left on
    device") is raised naming ``path``, the file or folder that could not be written."""
    if isinstance(error, OSError) and not error.filename and error.errno and error.strerror:
        raise OSError(error.errno, error.strerror, path) from error
    raise error


def write_json(path: str, payload, **dump) -> None:
    """``payload`` as JSON, written to a temporary file renamed into place. A number that is not finite
    (an undefined correlation) is written as null: JSON has no NaN, and strict readers refuse it."""
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        json.dump(_finite_or_null(payload), f, indent=2, allow_nan=False, **dump)


def _finite_or_null(value):
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # NumPy's floats too
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value
