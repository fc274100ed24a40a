"""Devices for the GPU engine: CuPy GPUs, or NumPy standing in for CuPy on emulated devices.

``open_devices("0,1")`` gives the CuPy devices 0 and 1; ``open_devices(None)``
every visible one; ``open_devices("numpy:2")`` two emulated devices whose
array module is NumPy (how the engine is tested without a GPU: the same
engine code, arrays on the host). A missing CuPy or no visible device is a
one-line error naming what is missing.
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np


class Device:
    """One device: its array module, memory, and the host <-> device copies."""

    def __init__(self, index: int, xp, emulated: bool):
        self.index, self.xp, self.emulated = index, xp, emulated
        self.name = f"numpy:{index}" if emulated else f"cuda:{index}"

    def use(self):
        """Context making this the current device (CuPy); nothing for an emulated one."""
        return nullcontext() if self.emulated else self.xp.cuda.Device(self.index)

    def free_bytes(self) -> int:
        if self.emulated:
            from ..config import available_bytes

            return available_bytes() or 0
        with self.use():
            free, _total = self.xp.cuda.runtime.memGetInfo()
        return int(free)

    def to_device(self, a):
        if self.emulated:
            return np.ascontiguousarray(a)
        with self.use():
            return self.xp.asarray(a)

    def to_host(self, a) -> np.ndarray:
        return np.asarray(a) if self.emulated else self.xp.asnumpy(a)

    def host_buffer(self, shape, dtype):
        """A buffer for host -> device copies: page-locked (pinned) memory on a GPU."""
        if self.emulated:
            return np.empty(shape, dtype)
        import cupyx

        return cupyx.empty_pinned(shape, dtype)

    def synchronize(self) -> None:
        if not self.emulated:
            with self.use():
                self.xp.cuda.get_current_stream().synchronize()

    def release(self) -> None:
        if not self.emulated:
            with self.use():
                self.xp.get_default_memory_pool().free_all_blocks()
                self.xp.get_default_pinned_memory_pool().free_all_blocks()


def open_devices(spec: str | None) -> list[Device]:
    """Devices named by ``--gpus`` (``0,1``, or ``numpy:K`` for K emulated devices)."""
    if spec and spec.startswith("numpy:"):
        try:
            k = int(spec.split(":", 1)[1])
            if k < 1:
                raise ValueError
        except ValueError:
            raise ValueError(f"--gpus {spec}: expected numpy:K with K >= 1 emulated devices") from None
        return [Device(i, np, emulated=True) for i in range(k)]
    try:
        import cupy
    except ImportError:
        raise ValueError("--backend gpu: needs CuPy, which is not installed (pip install 'kgnum[gpu]'); or use "
                         "--backend cpu") from None
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - no driver, no device: all mean "none visible"
        raise ValueError(f"--backend gpu: CuPy sees no CUDA device ({type(e).__name__}: {e}); or use "
                         f"--backend cpu") from None
    if n < 1:
        raise ValueError("--backend gpu: CuPy sees no CUDA device; or use --backend cpu")
    if not spec:
        return [Device(i, cupy, emulated=False) for i in range(n)]
    try:
        ids = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--gpus {spec}: expected device numbers such as 0,1 (or numpy:K)") from None
    bad = [i for i in ids if not 0 <= i < n]
    if bad or not ids:
        raise ValueError(f"--gpus {spec}: this machine has devices 0..{n - 1}")
    return [Device(i, cupy, emulated=False) for i in ids]
