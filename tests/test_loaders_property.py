"""Bring-your-own-files loading: property tests of the parsers, and the CLI's --data-files.

Every input either loads the triples a reference reading of the file gives (compared by
name) or raises KGDataError naming the file (and the 1-based line where there is one);
never another exception, never a hang.
"""
import json
import logging
import os
import re
import tempfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import kgnum
from kgnum.cli import main
from kgnum.data import FORMATS, KGDataError, load_dataset, load_files

pytestmark = pytest.mark.timeout(120)

ORDERS = ("hrt", "htr", "rht", "rth", "thr", "trh")
PROPS = settings(max_examples=40, deadline=2000, suppress_health_check=[HealthCheck.too_slow],
                 derandomize=True)
# The delimiters a user gives, and what the reference reading splits on (None: any whitespace).
DELIMS = {"\t": "\t", "tab": "\t", " ": None, "space": None, ",": ",", "comma": ",", "|": "|", ";": ";"}

# Names: no control, separator (whitespace) or format characters (a leading U+FEFF at the
# start of a file is a BOM), so a name never holds a line break or a field separator.
NAME_CHARS = st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Cf"))
NAMES = st.text(NAME_CHARS, min_size=1, max_size=6)


def name_strategy(sep):
    return NAMES.filter(lambda s: sep is None or sep not in s)


def write(path, content):
    with open(path, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def as_strings(kg, split):
    return [(kg.entity_names[h], kg.relation_names[r], kg.entity_names[t]) for h, r, t in kg.split(split).tolist()]


def reference(data: bytes, sep):
    """What a triples file means: ("ok", triples) or ("error", line or None)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return "error", None
    rows = []
    for i, raw in enumerate(text.split("\n")):
        s = raw.strip()
        if not s:
            continue
        parts = s.split(sep)
        if len(parts) != 3 or "" in parts:
            return "error", i + 1
        rows.append(tuple(parts))
    return "ok", rows


def check_error(exc: KGDataError, path: str, line):
    msg = str(exc)
    assert path in msg, msg
    if line is not None:
        assert f"{path}:{line}:" in msg, msg
    assert "\n" not in msg.strip()


def render(rows, sep_out, order="hrt", newline="\n"):
    """Rows of (h, r, t) as lines with columns in ``order``."""
    return "".join(sep_out.join({"h": h, "r": r, "t": t}[c] for c in order) + newline for h, r, t in rows)


# --------------------------------------------------------------------------- random input

JUNK_TEXT = st.text(st.sampled_from(list("ab\u00e9\u4e2d#\t\t\t\r\n\n ,|;\ufeff\x00\u2028\x85\xa0")), max_size=80)
JUNK = st.one_of(st.binary(max_size=120), JUNK_TEXT.map(lambda s: s.encode("utf-8")),
                 JUNK_TEXT.map(lambda s: b"\xef\xbb\xbf" + s.encode("utf-8")))


@PROPS
@given(data=JUNK, delimiter=st.sampled_from(sorted(DELIMS)), role=st.sampled_from(["train", "test"]))
def test_random_bytes_load_or_name_file_and_line(data, delimiter, role):
    sep = DELIMS[delimiter]
    with tempfile.TemporaryDirectory() as d:
        path = write(os.path.join(d, "junk.bin"), data)
        if role == "train":
            args = (path,)
        else:  # a good train file, the junk as test; new names kept
            args = (write(os.path.join(d, "train"), (sep or " ").join("xyz") + "\n"), None, path)
        kind, expected = reference(data, sep)
        try:
            kg = load_files(*args, delimiter=delimiter, unseen="keep", cache_dir=os.path.join(d, "cache"))
        except KGDataError as exc:
            if kind == "ok" and role == "train" and not expected:
                assert f"{path}: the training split is empty" in str(exc)
            elif kind == "ok":
                pytest.fail(f"the reference reads {expected!r}, the loader raised {exc}")
            else:
                check_error(exc, path, expected)
                if expected is None:
                    assert "not valid UTF-8" in str(exc)
            return
        assert kind == "ok", f"loaded although line {expected} is malformed"
        assert as_strings(kg, role) == expected


@st.composite
def messy_file(draw, sep):
    """(text, expected triples or error line): triples mixed with blank, comment-like and
    wrong-width lines, CRLF or LF endings, maybe a BOM and no final newline."""
    name = name_strategy(sep)
    sep_out = " " if sep is None else sep
    lines, rows, bad_line = [], [], None
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["triple", "triple", "triple", "blank", "comment", "width"]))
        if kind == "triple":
            row = (draw(name), draw(name), draw(name))
            lines.append(sep_out.join(row))
            rows.append(row)
        elif kind == "blank":
            lines.append(draw(st.sampled_from(["", " ", "\t", "  \t ", "\r"])))
        elif kind == "comment":  # '#' has no special meaning: 3 fields load, others are an error
            fields = ["#" + draw(name)] + [draw(name) for _ in range(draw(st.integers(0, 3)))]
            lines.append(sep_out.join(fields))
            if len(fields) == 3:
                rows.append(tuple(fields))
            elif bad_line is None:
                bad_line = len(lines)
        else:
            n = draw(st.sampled_from([1, 2, 4, 5]))
            lines.append(sep_out.join(draw(name) for _ in range(n)))
            if bad_line is None:
                bad_line = len(lines)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(lines) + (newline if draw(st.booleans()) else "")
    if draw(st.booleans()):
        text = "\ufeff" + text
    return text, (rows if bad_line is None else bad_line)


@PROPS
@given(st.data(), st.sampled_from(sorted(DELIMS)))
def test_blank_crlf_bom_comment_and_width_lines(data, delimiter):
    sep = DELIMS[delimiter]
    text, expected = data.draw(messy_file(sep))
    with tempfile.TemporaryDirectory() as d:
        train = write(os.path.join(d, "train"), "a\tr\tb\n".replace("\t", " " if sep is None else sep))
        path = write(os.path.join(d, "valid file.tsv"), text)
        try:
            kg = load_files(train, path, delimiter=delimiter, unseen="keep", cache_dir=os.path.join(d, "c"))
        except KGDataError as exc:
            assert isinstance(expected, int), f"expected {expected!r}, got {exc}"
            check_error(exc, path, expected)
            return
        assert not isinstance(expected, int), f"line {expected} is malformed but the file loaded"
        assert as_strings(kg, "valid") == expected
        assert len(kg.test) == 0


# --------------------------------------------------------------------------- column orders


@st.composite
def graphs(draw):
    """Train/valid/test lists of (h, r, t) name triples over a small vocabulary."""
    ents = draw(st.lists(name_strategy("\t"), min_size=2, max_size=8, unique=True))
    rels = draw(st.lists(name_strategy("\t"), min_size=1, max_size=3, unique=True))
    triple = st.tuples(st.sampled_from(ents), st.sampled_from(rels), st.sampled_from(ents))
    return {"train": draw(st.lists(triple, min_size=1, max_size=15)),
            "valid": draw(st.lists(triple, max_size=5)), "test": draw(st.lists(triple, max_size=5))}


@PROPS
@given(graphs(), st.sampled_from(ORDERS))
def test_every_string_column_order_matches_hrt(g, order):
    with tempfile.TemporaryDirectory() as d:
        hrt = {s: write(os.path.join(d, f"{s}.hrt"), render(rows, "\t")) for s, rows in g.items()}
        mine = {s: write(os.path.join(d, f"{s}.{order}"), render(rows, "\t", order)) for s, rows in g.items()}
        ref = load_files(hrt["train"], hrt["valid"], hrt["test"], format="tsv", unseen="keep",
                         cache_dir=os.path.join(d, "c"))
        kg = load_files(mine["train"], mine["valid"], mine["test"], format=f"raw_udd_{order}",
                        unseen="keep", cache_dir=os.path.join(d, "c"))
        for split in ("train", "valid", "test"):
            assert as_strings(kg, split) == as_strings(ref, split) == g[split]
        assert list(kg.entity_names) == list(ref.entity_names)


@PROPS
@given(graphs(), st.sampled_from(ORDERS), st.randoms(use_true_random=False), st.sampled_from(["\t", " ", ","]))
def test_every_id_column_order_matches_hrt(g, order, rnd, delimiter):
    ents = sorted({x for rows in g.values() for h, _, t in rows for x in (h, t)})
    rels = sorted({r for rows in g.values() for _, r, _ in rows})
    rnd.shuffle(ents)  # ids by a random permutation, dict lines in another order
    rnd.shuffle(rels)
    eid = {n: i for i, n in enumerate(ents)}
    rid = {n: i for i, n in enumerate(rels)}
    with tempfile.TemporaryDirectory() as d:
        dicts = {}
        for kind, ids in (("entities", eid), ("relations", rid)):
            items = list(ids.items())
            rnd.shuffle(items)
            dicts[kind] = write(os.path.join(d, f"{kind}.dict"), "".join(f"{i}\t{n}\n" for n, i in items))
        files = {s: write(os.path.join(d, f"{s}.ids"), render(
            [(str(eid[h]), str(rid[r]), str(eid[t])) for h, r, t in rows], delimiter, order))
            for s, rows in g.items()}
        kg = load_files(files["train"], files["valid"], files["test"], format=f"udd_{order}",
                        delimiter=delimiter, unseen="keep", cache_dir=os.path.join(d, "c"), **dicts)
        for split in ("train", "valid", "test"):
            assert as_strings(kg, split) == g[split]
        assert list(kg.entity_names) == ents  # the dicts' ids are kept


def test_id_orders_in_a_folder_and_wrong_order_hint(tmp_path):
    folder = tmp_path / "udd"
    folder.mkdir()
    write(folder / "entities.dict", "0\talice\n1\tbob\n2\tcarol\n")
    write(folder / "relations.dict", "0\tknows\n1\tlikes\n")
    for split, text in (("train", "0\t0\t1\n1\t1\t2\n"), ("valid", "0\t0\t2\n"), ("test", "")):
        write(folder / f"{split}.txt", text)
    kg = load_dataset(str(folder), format="udd_hrt", unseen="keep", cache_dir=str(tmp_path / "c"))
    assert as_strings(kg, "train") == [("alice", "knows", "bob"), ("bob", "likes", "carol")]
    kg = load_dataset(str(folder), format="udd_rth", unseen="keep", cache_dir=str(tmp_path / "c"))
    # columns r, t, h: "0 0 1" is (head 1, relation 0, tail 0)
    assert as_strings(kg, "train") == [("bob", "knows", "alice"), ("carol", "likes", "bob")]
    # DGL-KE's --data_files order for the id formats is ENTITIES RELATIONS TRAIN ...
    with pytest.raises(KGDataError, match=r"train\.txt:1: expected 2 tab-separated fields.*ENTITIES RELATIONS"):
        load_files(str(folder / "valid.txt"), entities=str(folder / "train.txt"),
                   relations=str(folder / "relations.dict"), format="udd_hrt", cache_dir=str(tmp_path / "c"))
    with pytest.raises(KGDataError, match=r"test\.txt:1: id 'x' is not an integer \(--format udd_hrt"):
        write(folder / "test.txt", "x\t0\t1\n")
        load_dataset(str(folder), format="udd_hrt", cache_dir=str(tmp_path / "c"))
    write(folder / "test.txt", "0\t0\t" + "9" * 30 + "\n")
    with pytest.raises(KGDataError, match=r"test\.txt:1: entity id 9+ is outside 0\.\.2"):
        load_dataset(str(folder), format="udd_hrt", cache_dir=str(tmp_path / "c"))


# --------------------------------------------------------------------------- delimiters


@PROPS
@given(graphs(), st.sampled_from(sorted(DELIMS)), st.data())
def test_delimiters(g, delimiter, data):
    sep = DELIMS[delimiter]
    rows = g["train"]
    assume(sep in (None, "\t") or not any(sep in x for row in rows for x in row))
    if sep is None:  # any run of whitespace between and around the fields
        gap = st.text(st.sampled_from([" ", "\t", "\u3000"]), min_size=1, max_size=3)
        text = "".join(data.draw(gap) + data.draw(gap).join(row) + data.draw(gap) + "\n" for row in rows)
    else:
        text = render(rows, sep)
    with tempfile.TemporaryDirectory() as d:
        path = write(os.path.join(d, "t.csv"), text)
        kg = load_files(path, delimiter=delimiter, cache_dir=os.path.join(d, "c"))
        assert as_strings(kg, "train") == rows


@pytest.mark.parametrize("bad", ["", "::", "tabs", "\n", "\r", None, 9])
def test_bad_delimiter_is_named(tmp_path, bad):
    path = write(tmp_path / "t", "a\tr\tb\n")
    with pytest.raises(KGDataError, match=r"^--delimiter .*: expected tab, space"):
        load_files(path, delimiter=bad, cache_dir=str(tmp_path / "c"))


def test_space_in_a_tab_file_hints_at_the_delimiter(tmp_path):
    path = write(tmp_path / "t", "a r b\n")
    with pytest.raises(KGDataError, match=r"t:1: expected 3 tab-separated fields .*--delimiter space"):
        load_files(path, cache_dir=str(tmp_path / "c"))
    assert as_strings(load_files(path, delimiter="space", cache_dir=str(tmp_path / "c")), "train") == [("a", "r", "b")]


# --------------------------------------------------------------------------- duplicates


@PROPS
@given(graphs())
def test_duplicates_keep_and_drop(g):
    rows = g["train"] + g["train"][: len(g["train"]) // 2]  # surely some repeats
    with tempfile.TemporaryDirectory() as d:
        path = write(os.path.join(d, "train.tsv"), render(rows, "\t"))
        kept = load_files(path, cache_dir=os.path.join(d, "c"))
        dropped = load_files(path, duplicates="drop", cache_dir=os.path.join(d, "c"))
    first = list(dict.fromkeys(rows))
    assert as_strings(kept, "train") == rows
    assert as_strings(dropped, "train") == first
    n_dup = len(rows) - len(first)
    assert kept.duplicates == dropped.duplicates == ({"train": n_dup} if n_dup else {})


def test_duplicates_logged_once_per_split_and_cached(tmp_path, caplog):
    train = write(tmp_path / "tr", "a\tr\tb\na\tr\tb\nb\tr\ta\na\tr\tb\n")
    valid = write(tmp_path / "va", "a\tr\tb\na\tr\tb\n")
    test = write(tmp_path / "te", "b\tr\ta\n")
    for _ in range(2):  # the second load comes from the cache and says the same
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kgnum"):
            kg = load_files(train, valid, test, duplicates="drop", cache_dir=str(tmp_path / "c"))
        lines = [r.getMessage() for r in caplog.records if "repeat" in r.getMessage()]
        assert len(lines) == 2 and "2 repeated train triples" in lines[0] and "1 repeated valid" in lines[1]
        assert kg.duplicates == {"train": 2, "valid": 1} and len(kg.train) == 2 and len(kg.valid) == 1
    with pytest.raises(KGDataError, match=r"--duplicates twice: unknown policy; allowed: keep, drop"):
        load_files(train, duplicates="twice")


# --------------------------------------------------------------------------- long lines, empty splits, bad paths


def test_very_long_lines(tmp_path):
    long_name = "x" * 200_000
    path = write(tmp_path / "t", f"{long_name}\tr\tb\n")
    kg = load_files(path, cache_dir=str(tmp_path / "c"))
    assert as_strings(kg, "train") == [(long_name, "r", "b")]
    path = write(tmp_path / "bad", "a\tr\tb\n" + "y" * 200_000 + "\tr\n")
    with pytest.raises(KGDataError) as info:
        load_files(path, cache_dir=str(tmp_path / "c"))
    check_error(info.value, path, 2)
    assert len(str(info.value)) < 600  # the line is quoted, not copied whole


def test_empty_or_missing_valid_and_test(tmp_path):
    train = write(tmp_path / "tr", "a\tr\tb\nb\tr\tc\n")
    empty = write(tmp_path / "empty", "\n \r\n")
    for args in ((train,), (train, empty), (train, empty, empty), (train, None, empty)):
        kg = load_files(*args, cache_dir=str(tmp_path / "c"))
        assert len(kg.train) == 2 and kg.valid.shape == (0, 3) and kg.test.shape == (0, 3)
        assert kg.name == tmp_path.name and kg.source == str(tmp_path)
    with pytest.raises(KGDataError, match=r"empty: the training split is empty"):
        load_files(empty, cache_dir=str(tmp_path / "c"))
    with pytest.raises(KGDataError, match=r"nope: file not found"):
        load_files(train, str(tmp_path / "nope"), cache_dir=str(tmp_path / "c"))
    with pytest.raises(KGDataError, match=r"cannot read"):
        load_files(str(tmp_path), cache_dir=str(tmp_path / "c"))
    with pytest.raises(KGDataError, match=r"--format csv: unknown format"):
        load_files(train, format="csv")
    with pytest.raises(KGDataError, match=r"entities\.dict: file not found \(--format udd_hrt"):
        load_files(train, format="udd_hrt", cache_dir=str(tmp_path / "c"))


def test_cache_key_has_every_option(tmp_path):
    path = write(tmp_path / "t", "a\tr\tb\na\tr\tb\n")
    c = str(tmp_path / "c")
    assert len(load_files(path, cache_dir=c).train) == 2
    assert len(load_files(path, duplicates="drop", cache_dir=c).train) == 1
    with pytest.raises(KGDataError):
        load_files(path, delimiter=",", cache_dir=c)
    assert len(load_files(path, format="raw_udd_trh", cache_dir=c).train) == 2
    assert as_strings(load_files(path, format="raw_udd_trh", cache_dir=c), "train")[0] == ("b", "r", "a")
    assert set(FORMATS) >= {f"{p}{o}" for p in ("raw_udd_", "udd_") for o in ORDERS}


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("KGNUM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_cli_train_with_only_a_train_file(cli_env, write_tsv, capsys, caplog):
    kg = kgnum.synthetic(n_entities=30, n_relations=3, n_train=200, n_valid=0, n_test=0, seed=1)
    folder = write_tsv(kg, cli_env / "kg")
    out = cli_env / "run.json"
    with caplog.at_level(logging.INFO, logger="kgnum"):
        rc = main(["train", "--data-files", str(folder / "train.txt"), "--max-steps", "5", "--dim", "16",
                   "--no-progress", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    log_text = caplog.text
    assert "no validation and no early stopping" in log_text
    assert "no test triples: no test metrics" in log_text
    result = json.loads(out.read_text())
    assert result["steps"] == 5 and "test" not in result


def test_cli_data_path_is_the_folder_of_data_files(cli_env, write_tsv, capsys, monkeypatch):
    kg = kgnum.synthetic(n_entities=40, n_relations=3, n_train=300, n_valid=20, n_test=20, seed=2)
    folder = write_tsv(kg, cli_env / "kg")
    for split, new in (("train", "a.tsv"), ("valid", "b.tsv"), ("test", "c.tsv")):
        os.rename(folder / f"{split}.txt", folder / new)
    elsewhere = cli_env / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the names resolve against --data-path, not the working directory
    out = cli_env / "run.json"
    assert main(["train", "--data_path", str(folder), "--data_files", "a.tsv", "b.tsv", "c.tsv",
                 "--max-steps", "5", "--dim", "16", "--no-progress", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["test"]["mrr"] > 0
    capsys.readouterr()
    assert main(["train", "--data-path", str(folder), "--data-files", "a.tsv", "nope.tsv",
                 "--max-steps", "5", "--dim", "16", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and os.path.join(str(folder), "nope.tsv") in err[0] and "file not found" in err[0]


def test_cli_id_format_takes_dicts_first(cli_env, capsys):
    d = cli_env / "udd"
    d.mkdir()
    write(d / "ent.dict", "0\ta\n1\tb\n")
    write(d / "rel.dict", "0\tr\n")
    write(d / "tr.ids", "0  0 1\n")  # relation, head, tail
    out = cli_env / "run.json"
    assert main(["train", "--data-path", str(d), "--data-files", "ent.dict", "rel.dict", "tr.ids",
                 "--format", "udd_rht", "--delimiter", "space", "--max-steps", "2", "--dim", "8",
                 "--no-progress", "--json", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--data-path", str(d), "--data-files", "tr.ids", "--format", "udd_hrt",
                 "--max-steps", "2"]) == 2
    assert "ENTITIES RELATIONS TRAIN" in capsys.readouterr().err


@pytest.mark.parametrize("flags, word", [
    (["--format", "csv"], "--format"),
    (["--format", "udd_xyz"], "--format"),
    (["--delimiter", "::"], "--delimiter"),
    (["--delimiter", ""], "--delimiter"),
])
def test_cli_bad_format_or_delimiter_is_one_line(cli_env, capsys, flags, word):
    train = write(cli_env / "t.tsv", "a\tr\tb\n")
    assert main(["train", "--data-files", train, *flags, "--max-steps", "1", "--dim", "8", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kgnum train: error: " + word), err
    assert not re.search(r"\b(format|delimiter)=", err[0])


def test_cli_data_flags_exclude_each_other(cli_env, capsys):
    train = write(cli_env / "t.tsv", "a\tr\tb\n")
    for argv in (["--dataset", "synthetic", "--data-files", train], ["--dataset", "synthetic", "--data-path", "x"],
                 ["--data-path", "x", "--dataset", "synthetic"]):
        with pytest.raises(SystemExit) as info:
            main(["train", *argv, "--max-steps", "1"])
        assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main(["train", "--max-steps", "1"]) == 2
    assert "--data-files" in capsys.readouterr().err
    assert main(["train", "--data-path", str(cli_env / "missing"), "--data-files", "t.tsv", "--max-steps", "1"]) == 2
    assert "not a directory" in capsys.readouterr().err
