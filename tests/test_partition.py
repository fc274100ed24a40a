"""Graph partitioning for the cluster engine (kgnum.cluster.partition, ``kgnum partition``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import kgnum
from kgnum.cli import main
from kgnum.cluster.partition import load_partition, partition, save_partition
from kgnum.data import KGDataError

pytest.importorskip("pymetis")


def communities(n_groups=4, size=60, inside=1500, across=60, seed=0):
    """Groups of entities densely linked inside, sparsely across: a graph METIS must cut well."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        base = g * size
        rows.append(np.stack([base + rng.integers(0, size, inside), rng.integers(0, 3, inside),
                              base + rng.integers(0, size, inside)], axis=1))
    rows.append(np.stack([rng.integers(0, n_groups * size, across), rng.integers(0, 3, across),
                          rng.integers(0, n_groups * size, across)], axis=1))
    train = np.concatenate(rows).astype(np.int32)
    return kgnum.KnowledgeGraph("communities", train, train[:0], train[:0],
                                np.array([f"e{i}" for i in range(n_groups * size)], dtype=object),
                                np.array(["r0", "r1", "r2"], dtype=object))


def test_metis_cuts_far_fewer_edges_than_random_and_stays_balanced():
    kg = communities()
    metis, rand = partition(kg, 4, "metis"), partition(kg, 4, "random")
    assert metis.report["edge_cut_fraction"] < 0.25 * rand.report["edge_cut_fraction"]
    for p in (metis, rand):
        sizes = np.bincount(p.owner, minlength=4)
        assert sizes.sum() == kg.n_entities and sizes.max() <= 1.1 * kg.n_entities / 4
        # every edge belongs to exactly the part that owns its head
        positions = np.sort(np.concatenate(p.part_edges))
        assert np.array_equal(positions, np.arange(kg.train.shape[0]))
        for i, e in enumerate(p.part_edges):
            assert np.all(p.owner[kg.train[e, 0]] == i)
        cut = np.mean(p.owner[kg.train[:, 0]] != p.owner[kg.train[:, 2]])
        assert p.report["edge_cut_fraction"] == pytest.approx(cut)


def test_saved_partition_round_trips_and_refuses_another_graph(tmp_path, small_kg):
    p = partition(small_kg, 3, "metis")
    save_partition(p, small_kg, str(tmp_path / "part"))
    back = load_partition(str(tmp_path / "part"), small_kg)
    assert np.array_equal(back.owner, p.owner) and back.parts == 3
    assert all(np.array_equal(a, b) for a, b in zip(back.part_edges, p.part_edges))
    assert back.report == json.loads((tmp_path / "part" / "partition.json").read_text())
    other = kgnum.synthetic(n_entities=300, n_relations=6, n_train=6000, n_valid=10, n_test=10, seed=9)
    with pytest.raises(KGDataError, match="another graph|edge files"):
        load_partition(str(tmp_path / "part"), other)
    with pytest.raises(KGDataError, match="not a saved partition"):
        load_partition(str(tmp_path / "nothing"), small_kg)
    (tmp_path / "part" / "owner.npy").write_bytes(b"garbage")
    with pytest.raises(KGDataError, match="unreadable"):
        load_partition(str(tmp_path / "part"), small_kg)


@pytest.mark.parametrize("parts, words", [(0, "positive"), (10**6, "more parts")])
def test_bad_part_counts_are_one_line_errors(parts, words, tmp_path, capsys):
    assert main(["partition", "--dataset", "synthetic", "--parts", str(parts), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "--parts" in err


def test_cli_writes_the_documented_json(tmp_path):
    out = tmp_path / "report.json"
    assert main(["partition", "--dataset", "synthetic", "--parts", "4", "--method", "random",
                 "--out", str(tmp_path / "p"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"parts", "method", "edge_cut_fraction", "part_sizes", "seconds"} <= set(report)
    assert report["parts"] == 4 and report["method"] == "random" and sum(report["part_sizes"]) == 2000
