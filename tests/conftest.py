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
