import os

import pytest


@pytest.fixture(scope="session")
def data_dir():
    path = os.environ.get("KGNUM_DATA_DIR")
    if not path or not os.path.isdir(path):
        pytest.skip("KGNUM_DATA_DIR not set to the benchmark datasets folder")
    return path


@pytest.fixture(scope="session")
def small_kg():
    import kgnum

    return kgnum.synthetic(n_entities=300, n_relations=6, n_train=6000, n_valid=300, n_test=300, seed=3)


@pytest.fixture
def write_tsv():
    """``write_tsv(kg, folder)``: ``kg``'s splits as train/valid/test.txt name triples in a new folder."""
    def write(kg, folder):
        folder.mkdir()
        for split in ("train", "valid", "test"):
            (folder / f"{split}.txt").write_text("".join(
                f"{kg.entity_names[h]}\t{kg.relation_names[r]}\t{kg.entity_names[t]}\n"
                for h, r, t in kg.split(split).tolist()))
        return folder

    return write
