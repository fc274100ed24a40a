"""The math: score functions, metrics, loss, samplers, Adagrad, the training step, ranking.

Numba's ``np.dot`` calls SciPy's BLAS, which loads lazily; importing it here
means a ``threadpool_limits`` entered before the first kernel call governs it
too (otherwise it runs with one thread per core inside every worker).
"""
import scipy.linalg  # noqa: F401
