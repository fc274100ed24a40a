"""Named shared-memory blocks holding NumPy arrays, owned by one parent process.

The parent creates one POSIX shared-memory block per array (``SharedTables``),
named ``kgnum_<pid>_<run>_<key>`` so leftovers are easy to find in /dev/shm and
to trace to their owner. Other processes attach by name (``attach``) from a
picklable ``BlockSpec`` (name, shape, dtype): nothing is copied, every process
maps the same pages. Only the owner unlinks; attached processes only close.

Python's ``multiprocessing.resource_tracker`` unlinks, at shutdown, every block
still registered with it and warns about "leaked shared_memory objects". Before
Python 3.13 *attaching* registers the block too, and with the fork start method
children share the parent's tracker, whose registry is a set: a child that
unregistered after attaching would drop the owner's registration as well (the
owner's own unlink then makes the tracker print a KeyError). So ``attach`` never
registers at all (``track=False`` on 3.13+, a no-op register during the call
before), and the owner's registration stays as the safety net that unlinks the
blocks if the owner itself is killed with SIGKILL.
"""
from __future__ import annotations

import errno
import logging
import os
import sys
import uuid
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

log = logging.getLogger("kgnum")

PREFIX = "kgnum_"
SHM_DIR = "/dev/shm"  # where Linux shows POSIX shared memory as files

# blocks whose close() failed because a NumPy view was still alive: kept referenced so
# SharedMemory.__del__ does not print "Exception ignored ... BufferError" at a random moment
_unclosed: list = []


@dataclass(frozen=True)
class BlockSpec:
    """Everything another process needs to map one array: block name, shape, dtype string."""
    name: str
    shape: tuple
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def new_run_id() -> str:
    """``<pid>_<6 hex>``: unique per run; short so names fit macOS's 31-character limit."""
    return f"{os.getpid()}_{uuid.uuid4().hex[:6]}"


def block_names(pid: int | None = None) -> list[str]:
    """Names of the ``kgnum_`` blocks in /dev/shm (of the run owned by ``pid`` when given)."""
    prefix = PREFIX if pid is None else f"{PREFIX}{pid}_"
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:  # not Linux: no file view of POSIX shared memory
        return []


def _as_view(shm: shared_memory.SharedMemory, spec: BlockSpec) -> np.ndarray:
    return np.ndarray(spec.shape, dtype=np.dtype(spec.dtype), buffer=shm.buf)


def attach(spec: BlockSpec) -> tuple[shared_memory.SharedMemory, np.ndarray]:
    """Map the block ``spec.name`` without registering it with the resource tracker.

    Returns ``(handle, array)``: ``array`` has ``spec.shape`` / ``spec.dtype`` and
    writes go straight to the shared pages. Delete every view of ``array`` before
    ``handle.close()``; never unlink from an attached process (the owner does).
    """
    if sys.version_info >= (3, 13):
        shm = shared_memory.SharedMemory(name=spec.name, track=False)
    else:
        from multiprocessing import resource_tracker

        register = resource_tracker.register
        # SharedMemory.__init__ registers even when attaching; skip it (see module docstring)
        resource_tracker.register = lambda name, rtype: None
        try:
            shm = shared_memory.SharedMemory(name=spec.name)
        finally:
            resource_tracker.register = register
    if shm.size < spec.nbytes:
        shm.close()
        raise ValueError(f"shared block {spec.name} holds {shm.size} bytes, {spec.nbytes} expected")
    return shm, _as_view(shm, spec)


def close_quietly(shm: shared_memory.SharedMemory) -> None:
    """Close a mapping; when a NumPy view still holds it, leave it mapped until exit."""
    try:
        shm.close()
    except BufferError:
        _unclosed.append(shm)


def free_bytes() -> int | None:
    """Bytes free for new blocks in SHM_DIR (None where it cannot be read)."""
    try:
        st = os.statvfs(SHM_DIR)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _reserve_pages(shm: shared_memory.SharedMemory, key: str, nbytes: int) -> None:
    """Allocate the block's pages now. A block is created sparse, so on a full /dev/shm (64 MB by
    default in a Docker container) the first write past the room left kills the process with
    SIGBUS ("Bus error"), with no message; reserved here, it is a MemoryError naming the sizes."""
    fd = getattr(shm, "_fd", -1)
    if nbytes == 0 or fd < 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.ENOMEM):
            return  # a file system that cannot reserve (EOPNOTSUPP, EINVAL): written as before
        raise no_room(nbytes, f"the shared block {key!r}") from None


def no_room(nbytes: int, what: str) -> MemoryError:
    """The error for ``what`` (``nbytes``) not fitting in SHM_DIR, in CLI terms."""
    free = free_bytes()
    room = f", {free / 2**20:,.1f} MiB free" if free is not None else ""
    return MemoryError(f"shared memory ({SHM_DIR}) is too small for {what}: {nbytes / 2**20:,.1f} MiB needed{room}; "
                       f"make {SHM_DIR} larger (docker run --shm-size), or train with --workers 1, which needs "
                       f"no shared memory")


class SharedTables:
    """The owner's side: one shared block per array, created, filled, closed and unlinked here.

    ``arrays[key]`` is the owner's view of the block (same shape/dtype as the array
    given to ``add``), ``specs[key]`` the picklable ``BlockSpec`` for ``attach``.
    ``close()`` is idempotent and unlinks every block even if views are still alive;
    use it in ``finally`` (or the object as a context manager).
    """

    def __init__(self, run_id: str | None = None):
        self.run_id = run_id or new_run_id()
        self.arrays: dict[str, np.ndarray] = {}
        self.specs: dict[str, BlockSpec] = {}
        self._blocks: dict[str, shared_memory.SharedMemory] = {}

    def add(self, key: str, array: np.ndarray) -> np.ndarray:
        """Create block ``kgnum_<run_id>_<key>`` and copy ``array`` (C order) into it."""
        if key in self._blocks:
            raise ValueError(f"shared block {key!r} already exists")
        array = np.ascontiguousarray(array)
        spec = BlockSpec(f"{PREFIX}{self.run_id}_{key}", tuple(int(n) for n in array.shape), array.dtype.str)
        # size 0 is refused by shm_open/mmap; an empty array still gets a 1-byte block
        shm = shared_memory.SharedMemory(name=spec.name, create=True, size=max(1, spec.nbytes))
        try:
            _reserve_pages(shm, key, spec.nbytes)
        except BaseException:
            shm.close()
            shm.unlink()
            raise
        self._blocks[key] = shm
        view = _as_view(shm, spec)
        view[...] = array
        self.arrays[key] = view
        self.specs[key] = spec
        return view

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs.values()]

    def close(self) -> None:
        """Drop the owner's views, close and unlink every block (errors logged, never raised)."""
        self.arrays.clear()
        blocks, self._blocks = self._blocks, {}
        for shm in blocks.values():
            close_quietly(shm)
            try:
                shm.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:  # keep going: the other blocks must still be unlinked
                log.warning("could not unlink shared block %s: %s", shm.name, e)

    def __enter__(self) -> "SharedTables":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
