"""``kgnum split``: one file of triples into train / valid / test, every valid/test name seen in train.

    lines -> distinct triples -> shuffle (seed) -> a covering set to train first: each triple that
    brings an entity or relation not yet in train goes there -> valid and test take their shares
    from the rest -> train.txt, valid.txt, test.txt (head<TAB>relation<TAB>tail, the input's order
    of columns kept; a repeated line goes, every copy, to its triple's split)
"""
from __future__ import annotations

import logging
import os

import numpy as np

from .data import KGDataError, _delimiter

log = logging.getLogger("kgnum")


def parse_ratios(text: str) -> tuple[float, float, float]:
    try:
        ratios = tuple(float(x) for x in text.split(","))
    except ValueError:
        ratios = ()
    if len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0 or abs(sum(ratios) - 1) > 1e-6:
        raise KGDataError(f"--ratios {text}: expected three shares TRAIN,VALID,TEST >= 0 that sum to 1 "
                          f"(e.g. 0.8,0.1,0.1)")
    return ratios


def read_triples(path: str, delimiter: str = "tab") -> list[tuple[str, str, str]]:
    """Triples of a text file: one per line, three fields; blank lines skipped. As in the loaders,
    ``#`` is not a comment mark: a ``#`` line with three fields is a triple, else an error.
    ``delimiter``: as the loaders' (tab, space for any run of whitespace, comma, one character)."""
    sep = _delimiter(delimiter)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise KGDataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise KGDataError(f"{path}: is a folder, not a file of triples") from None
    except UnicodeDecodeError as e:
        raise KGDataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # as the loaders: a name may hold \f, U+2028, ...
        line = line.strip("\r\n")
        if not line.strip():
            continue
        parts = line.split(sep)
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise KGDataError(f"{path}:{n}: expected 3 fields separated by "
                              f"{'whitespace' if sep is None else repr(sep)}, got {len(parts)}")
        row = tuple(p.strip() for p in parts)
        tabbed = next((p for p in row if "\t" in p), None)
        if tabbed is not None:
            raise KGDataError(f"{path}:{n}: the name {tabbed[:120]!r} holds a tab; the splits are written "
                              f"tab-separated, so it would read back as two fields")
        rows.append(row)
    if not rows:
        raise KGDataError(f"{path}: no triples")
    return rows


def split_triples(rows: list, ratios: tuple, seed: int) -> dict[str, list]:
    """{"train", "valid", "test"}: lists of rows; every entity and relation of valid/test is in train.
    The shares are of distinct triples; every copy of a repeated triple goes to the same split. The same
    triples in another order, with the same seed, split the same way."""
    copies: dict[tuple, list[int]] = {}  # triple -> its rows, in order of first appearance
    for i, row in enumerate(rows):
        copies.setdefault(row, []).append(i)
    if len(copies) < len(rows):
        log.info("%d lines repeat an earlier triple; each copy goes to the split of its first",
                 len(rows) - len(copies))
    distinct = sorted(copies)  # which triple goes where depends on the triples and the seed, not the line order
    order = np.random.default_rng(seed).permutation(len(distinct))
    seen_e: set = set()
    seen_r: set = set()
    forced, pool = [], []
    for i in order:
        h, r, t = distinct[i]
        if h not in seen_e or t not in seen_e or r not in seen_r:
            forced.append(i)
            seen_e.update((h, t))
            seen_r.add(r)
        else:
            pool.append(i)
    n_valid = min(len(pool), int(round(ratios[1] * len(distinct))))
    n_test = min(len(pool) - n_valid, int(round(ratios[2] * len(distinct))))
    if n_valid + n_test < int(round((ratios[1] + ratios[2]) * len(distinct))):
        log.warning("only %d triples can leave train without taking an entity or relation with them: "
                    "valid %d, test %d", len(pool), n_valid, n_test)
    valid, test, rest = pool[:n_valid], pool[n_valid:n_valid + n_test], pool[n_valid + n_test:]

    def lines(part):  # the rows of every copy of the part's triples, in the file's order
        return [rows[i] for i in sorted(i for k in part for i in copies[distinct[k]])]

    return {"train": lines(forced + rest), "valid": lines(valid), "test": lines(test)}


def split_file(path: str, ratios: str, seed: int, out: str, delimiter: str = "tab") -> dict:
    rows = read_triples(path, delimiter)
    parts = split_triples(rows, parse_ratios(ratios), seed)
    os.makedirs(out, exist_ok=True)
    for name, part in parts.items():
        tmp = os.path.join(out, f".{name}.txt.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines("\t".join(row) + "\n" for row in part)
        os.replace(tmp, os.path.join(out, f"{name}.txt"))
    return {name: len(part) for name, part in parts.items()}
