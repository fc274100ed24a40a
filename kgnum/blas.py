"""Whether OpenBLAS runs below what the CPU can: one log line before a run, never a change.

The step's products run on SciPy's OpenBLAS (Numba's np.dot) and evaluation on NumPy's.
Each picks its kernels for the CPU when it loads, unless OPENBLAS_CORETYPE names a core.
Some machine images set it (identical results across hosts), and on an AVX-512 CPU
``OPENBLAS_CORETYPE=Haswell`` holds both to their AVX2 kernels: FB15k-237 TransE_l2
trains about 1.5x slower and evaluates 1.5x slower (bench/bench_blas.py). The
variable is the user's: kgnum only says what it costs.
"""
from __future__ import annotations

import os

# the AVX-512 subsets OpenBLAS's SkylakeX kernels are built for
AVX512 = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
# OpenBLAS's x86 cores that run AVX-512 kernels (threadpoolctl's "architecture")
AVX512_CORES = frozenset({"SkylakeX", "Cooperlake", "SapphireRapids"})


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset:
    """The first processor's flags in /proc/cpuinfo; empty where there is none (not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(value.split())
                if not line.strip():
                    break
    except OSError:
        pass
    return frozenset()


def openblas_cores() -> set[str]:
    """The cores the OpenBLAS libraries loaded in this process run."""
    from threadpoolctl import threadpool_info

    return {i["architecture"] for i in threadpool_info()
            if i.get("internal_api") == "openblas" and i.get("architecture")}


def held_back(environ=os.environ, flags=None, cores=None) -> str | None:
    """A one-line note when OPENBLAS_CORETYPE holds a loaded OpenBLAS to kernels without
    AVX-512 on a CPU that has it; None otherwise (the variable unset, or no gain to name)."""
    pinned = environ.get("OPENBLAS_CORETYPE")
    if not pinned:
        return None
    flags = cpu_flags() if flags is None else flags
    if not AVX512 <= flags:
        return None
    slow = sorted((openblas_cores() if cores is None else cores) - AVX512_CORES)
    if not slow:
        return None
    return (f"OPENBLAS_CORETYPE={pinned} holds OpenBLAS to its {'/'.join(slow)} kernels on a CPU with "
            f"AVX-512: unset it to let OpenBLAS choose (about 1.5x faster training and evaluation on "
            f"FB15k-237)")
