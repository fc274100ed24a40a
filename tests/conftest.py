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


class SharedCluster:
    """A ``distributed.Client`` of one LocalCluster (2 worker processes, one thread each), started on
    first use and shared by the tests that pass it as ``client=`` (what a user with a running
    cluster does); closed when the session ends."""
    client = None
    cluster = None

    USED = ("submit", "scatter", "run", "wait_for_workers", "scheduler_info", "cancel", "status", "gather")

    def __getattr__(self, name):
        if name not in self.USED:  # pytest and pickling probe attributes: they must not start a cluster
            raise AttributeError(name)
        if SharedCluster.client is None:
            from distributed import Client, LocalCluster

            SharedCluster.cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                 dashboard_address=None)
            SharedCluster.client = Client(SharedCluster.cluster)
        return getattr(SharedCluster.client, name)

    @classmethod
    def pids(cls) -> set:
        if cls.client is None:
            return set()
        return set(cls.client.run(os.getpid).values())

    @classmethod
    def close(cls):
        if cls.client is not None:
            cls.client.close()
            cls.cluster.close()
            cls.client = cls.cluster = None


SHARED_CLUSTER = SharedCluster()


def pytest_sessionfinish(session, exitstatus):
    SharedCluster.close()


@pytest.fixture(scope="module", autouse=True)
def _shared_cluster_closes_with_the_module():
    """The shared cluster's worker processes do not outlive the module that started them (other
    modules check that no child process is left)."""
    yield
    SharedCluster.close()
