"""``kgnum split``: one file of triples into train/valid/test, usable by every command after it."""
from __future__ import annotations

import pytest

import kgnum
from kgnum.cli import main


def write_graph(path, n=3000, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    lines = [f"e{rng.integers(400)}\tr{rng.integers(7)}\te{rng.integers(400)}" for _ in range(n)]
    lines[::500] = [f"#tag{i}\tr0\te{i}" for i in range(len(lines[::500]))]  # "#" is a name, as in the loaders
    path.write_text("\ufeff\n" + "\r\n".join(lines) + "\n")
    return lines


def test_split_keeps_every_valid_and_test_name_in_train(tmp_path, monkeypatch):
    src = tmp_path / "all.tsv"
    lines = write_graph(src)
    out = tmp_path / "split"
    assert main(["split", str(src), "--ratios", "0.8,0.1,0.1", "--seed", "3", "--out", str(out)]) == 0
    parts = {s: (out / f"{s}.txt").read_text().splitlines() for s in ("train", "valid", "test")}
    assert sorted(parts["train"] + parts["valid"] + parts["test"]) == sorted(lines)
    assert abs(len(parts["valid"]) - 300) <= 1 and abs(len(parts["test"]) - 300) <= 1
    train_names = {x for line in parts["train"] for x in line.split("\t")}
    for line in parts["valid"] + parts["test"]:
        assert set(line.split("\t")) <= train_names
    monkeypatch.setenv("KGNUM_CACHE_DIR", str(tmp_path / "cache"))
    kg = kgnum.load_dataset(str(out))  # unseen="error" for own data: it loads, so nothing is unseen
    assert kg.train.shape[0] == len(parts["train"])
    again = tmp_path / "again"
    assert main(["split", str(src), "--ratios", "0.8,0.1,0.1", "--seed", "3", "--out", str(again)]) == 0
    assert (again / "test.txt").read_text() == (out / "test.txt").read_text()  # same seed, same split


def test_a_repeated_triple_stays_in_one_split(tmp_path):
    """A line that occurs twice must not land in train and in test: the test triple would be a
    training fact, its rank a memory."""
    src = tmp_path / "all.tsv"
    lines = write_graph(src, n=1000)
    lines = lines + lines[:400]  # 400 triples repeated
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "split"
    assert main(["split", str(src), "--seed", "1", "--out", str(out)]) == 0
    parts = {s: (out / f"{s}.txt").read_text().splitlines() for s in ("train", "valid", "test")}
    assert sorted(parts["train"] + parts["valid"] + parts["test"]) == sorted(lines)
    assert not set(parts["train"]) & set(parts["valid"] + parts["test"])
    assert not set(parts["valid"]) & set(parts["test"])
    assert len(parts["valid"]) > 50 and len(parts["test"]) > 50


def test_the_same_triples_in_another_order_split_the_same_way(tmp_path):
    """A seed names one split of a graph: the file's line order (a sort, a concatenation in another
    order) does not move a triple to another split; each split keeps its input's order."""
    import random

    src = tmp_path / "all.tsv"
    lines = write_graph(src, n=2000)
    shuffled = list(lines)
    random.Random(5).shuffle(shuffled)
    (tmp_path / "shuffled.tsv").write_text("\n".join(shuffled) + "\n")
    parts = {}
    for name in ("all", "shuffled"):
        out = tmp_path / f"split_{name}"
        assert main(["split", str(tmp_path / f"{name}.tsv"), "--seed", "2", "--out", str(out)]) == 0
        parts[name] = {s: (out / f"{s}.txt").read_text().splitlines() for s in ("train", "valid", "test")}
    for s in ("train", "valid", "test"):
        assert sorted(parts["all"][s]) == sorted(parts["shuffled"][s])
    order = {line: i for i, line in enumerate(shuffled)}
    assert parts["shuffled"]["test"] == sorted(parts["shuffled"]["test"], key=order.get)


@pytest.mark.parametrize("ratios", ["0.8,0.1", "0.9,0.1,0.1", "0,0.5,0.5", "a,b,c"])
def test_bad_ratios_are_one_line(ratios, tmp_path, capsys):
    src = tmp_path / "all.tsv"
    write_graph(src, n=50)
    assert main(["split", str(src), "--ratios", ratios, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--ratios" in err


def test_bad_line_names_file_and_line(tmp_path, capsys):
    src = tmp_path / "all.tsv"
    src.write_text("a\tr\tb\nb\tr\n")
    assert main(["split", str(src), "--out", str(tmp_path / "o")]) == 2
    assert f"{src}:2" in capsys.readouterr().err


def test_lines_end_at_newlines_only_as_in_the_loaders(tmp_path, capsys, monkeypatch):
    """Names may hold the other characters str.splitlines breaks at (form feed, U+2028, ...): the
    loaders keep them, so split does, and an error's line number is the file's."""
    names = ["Page\x0cbreak", "first\u2028second", "group\x1dsep", "next\x85line", "carriage\rreturn"]
    lines = write_graph(tmp_path / "plain.tsv", n=400)
    lines[1:1 + len(names)] = [f"{n}\tr0\te1" for n in names]
    src = tmp_path / "all.tsv"
    src.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("KGNUM_CACHE_DIR", str(tmp_path / "cache"))
    direct = kgnum.data.load_files(str(src))
    out = tmp_path / "split"
    assert main(["split", str(src), "--out", str(out)]) == 0
    kg = kgnum.load_dataset(str(out))
    assert set(kg.entity_names) == set(direct.entity_names) >= set(names)
    src.write_text("\n".join(lines[:6] + ["a\tr0"] + lines[6:]) + "\n")
    assert main(["split", str(src), "--out", str(tmp_path / "o")]) == 2
    assert f"{src}:7:" in capsys.readouterr().err


@pytest.mark.parametrize("name, sep", [("comma", ","), ("space", "  "), (";", ";")])
def test_delimiter_names_are_the_loaders(name, sep, tmp_path, monkeypatch):
    """--delimiter takes the names kgnum train takes; the splits come out tab-separated and load."""
    lines = write_graph(tmp_path / "tabs.tsv", n=400)
    src = tmp_path / "all.txt"
    src.write_text("".join(line.replace("\t", sep) + "\n" for line in lines))
    out = tmp_path / "split"
    assert main(["split", str(src), "--delimiter", name, "--out", str(out)]) == 0
    parts = [line for s in ("train", "valid", "test") for line in (out / f"{s}.txt").read_text().splitlines()]
    assert sorted(parts) == sorted(lines)
    monkeypatch.setenv("KGNUM_CACHE_DIR", str(tmp_path / "cache"))
    assert kgnum.load_dataset(str(out)).train.shape[0] > 0


def test_a_name_with_a_tab_is_refused_naming_file_and_line(tmp_path, capsys):
    """With --delimiter comma a name may hold a tab; written tab-separated it would split in two."""
    src = tmp_path / "all.csv"
    src.write_text("a,r,b\nb,r,c\nNew\tYork,r,a\n")
    assert main(["split", str(src), "--delimiter", "comma", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{src}:3:" in err and "tab" in err


def test_a_bad_delimiter_is_one_line(tmp_path, capsys):
    src = tmp_path / "all.tsv"
    write_graph(src, n=50)
    assert main(["split", str(src), "--delimiter", "semicolon", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--delimiter" in err

