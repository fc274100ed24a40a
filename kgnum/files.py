"""Files written so a crash never leaves half of them: directories and JSON swapped into place."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager


@contextmanager
def atomic_directory(path: str):
    """Yield a temporary sibling of ``path`` to fill; on success it replaces ``path`` by rename
    (the previous copy stays loadable until the switch), on any error it is removed."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    try:
        yield tmp
        if not os.path.exists(path):
            os.rename(tmp, path)
            return
        old = f"{path}.old-{uuid.uuid4().hex[:8]}"
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_names(path: str, names) -> None:
    """``id<TAB>name`` lines, one per name in order (entities.tsv / relations.tsv)."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{i}\t{name}\n" for i, name in enumerate(names))


@contextmanager
def atomic_file(path: str, suffix: str = ""):
    """Yield a temporary name next to ``path`` to write; renamed onto ``path`` on success, removed on
    any error (a reader sees the old file or the new one, never half of one). ``suffix``: an ending
    the writer insists on (``np.savez`` adds ``.npz``)."""
    tmp = f"{path}.tmp-{os.getpid()}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, payload, **dump) -> None:
    """``payload`` as JSON, written to a temporary file renamed into place."""
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        json.dump(payload, f, indent=2, **dump)
