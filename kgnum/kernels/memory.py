"""Row gathers from large tables, with the next rows' cache lines requested ahead.

A training chunk reads a few hundred random rows of the entity table (1.6 KB
each at dim 400) and later writes them back. Once the table outgrows the
caches, each new row starts with a miss the hardware prefetcher cannot guess;
asking for rows ``AHEAD`` positions early keeps several rows in flight
instead of one. Adagrad's per-row state (one float per row, 20 MB for 5
million entities) is requested the same way before its random updates.
"""
import numba
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
import numpy as np

AHEAD = 4  # rows requested ahead of the one being copied
_LINE = 16  # float32 values per 64-byte cache line
# the intrinsic's name carries its pointer type: typed i8* up to LLVM 14, opaque after
_PREFETCH = "llvm.prefetch.p0" if binding.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


def _prefetch_intrinsic(for_write):
    rw = 1 if for_write else 0

    @intrinsic
    def prefetch(typingctx, table, index):
        """Hint the CPU to load the cache line holding table[index] (index: a tuple of
        integers, one per dimension; LLVM's prefetch)."""
        def codegen(context, builder, sig, args):
            aryty, idxty = sig.args
            ary = context.make_array(aryty)(context, builder, args[0])
            parts = cgutils.unpack_tuple(builder, args[1], len(idxty))
            idx = [context.cast(builder, v, t, types.intp) for v, t in zip(parts, idxty)]
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx)
            addr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [addr.type, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH)
            # (address, 0 read / 1 write, locality 3 = keep in all levels, 1 = data cache)
            builder.call(fn, [addr, i32(rw), i32(3), i32(1)])
            return context.get_dummy_value()

        return types.void(table, index), codegen

    return prefetch


_prefetch_read = _prefetch_intrinsic(False)
_prefetch_write = _prefetch_intrinsic(True)


@numba.njit(cache=True)
def prefetch_row(table, row):
    """Request every cache line of table[row] (2-D C-contiguous) for reading, without waiting."""
    for k in range(0, table.shape[1], _LINE):
        _prefetch_read(table, (row, k))


@numba.njit(cache=True)
def prefetch_row_for_write(table, row):
    """As prefetch_row, for a row about to be updated in place."""
    for k in range(0, table.shape[1], _LINE):
        _prefetch_write(table, (row, k))


@numba.njit(cache=True)
def prefetch_item_for_write(array, i):
    """Request the cache line of array[i] (1-D) for an update, without waiting."""
    _prefetch_write(array, (i,))


@numba.njit(cache=True, fastmath=True)
def gather_rows(table, ids):
    """table[ids] as a new contiguous array, prefetching ``AHEAD`` rows ahead."""
    n = ids.shape[0]
    out = np.empty((n, table.shape[1]), dtype=table.dtype)
    for j in range(n):
        if j + AHEAD < n:
            prefetch_row(table, ids[j + AHEAD])
        src, dst = table[ids[j]], out[j]
        for k in range(src.shape[0]):
            dst[k] = src[k]
    return out


@numba.njit(cache=True, nogil=True)
def no_rows(width):
    """An empty (rows (0,) int64, grads (0, width) float32) pair: "no extra rows" of a loss term."""
    return np.empty(0, dtype=np.int64), np.empty((0, width), dtype=np.float32)
