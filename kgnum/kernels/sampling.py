"""Negative sampling inside Numba, from the calling process's own random state."""
import numba
import numpy as np


@numba.njit(cache=True)
def seed_kernel_rng(seed):
    """Seed the Numba random state of this process (each worker seeds its own)."""
    np.random.seed(seed)


@numba.njit(cache=True)
def sample_negatives(n_entities, n_neg, degree_cdf):
    """n_neg entity ids (int64): uniform when degree_cdf is empty, else drawn
    proportionally to degree (degree_cdf (n_entities,) float64, cumulative)."""
    out = np.empty(n_neg, dtype=np.int64)
    if degree_cdf.shape[0] == 0:
        for j in range(n_neg):
            out[j] = np.random.randint(0, n_entities)
    else:
        total = degree_cdf[-1]
        for j in range(n_neg):
            out[j] = np.searchsorted(degree_cdf, np.random.random() * total, side="right")
            if out[j] >= n_entities:
                out[j] = n_entities - 1
    return out


def degree_cdf(triples: np.ndarray, n_entities: int) -> np.ndarray:
    """Cumulative entity degree over triples (n, 3) int32, for degree-proportional negatives."""
    deg = np.bincount(triples[:, 0], minlength=n_entities) + np.bincount(triples[:, 2], minlength=n_entities)
    return np.cumsum(deg.astype(np.float64))
