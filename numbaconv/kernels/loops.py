"""Array copies and sums written as loops, for use inside kernels.

numba compiles a slice assignment from an array (``a[i, :n] = b``, ``a[i] += b``)
together with a formatted shape-mismatch message: 2.5 s of compiling the first time a
process meets one, which a cold first call used to pay (numba 0.68; measured
2026-12-05: the serial direct kernel 3.7 -> 2.2 s). These loops compile in
milliseconds and vectorise the same.
"""
import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def copy_row(dst, src):
    """dst[:len(src)] = src, for 1-D arrays."""
    for i in range(src.shape[0]):
        dst[i] = src[i]


@njit(cache=True, inline="always")
def copy_matrix(dst, src):
    """dst[:, :] = src, for 2-D arrays of one shape."""
    for i in range(src.shape[0]):
        copy_row(dst[i], src[i])


@njit(cache=True, inline="always")
def fill_matrix(dst, value):
    """dst[:, :] = value, for 2-D arrays."""
    for i in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[i, j] = value


@njit(cache=True, inline="always")
def add_row(dst, src):
    """dst[:len(src)] += src, for 1-D arrays."""
    for i in range(src.shape[0]):
        dst[i] += src[i]


@njit(cache=True, inline="always")
def add_matrix(dst, src):
    """dst[:, :] += src, for 2-D arrays of one shape."""
    for i in range(src.shape[0]):
        add_row(dst[i], src[i])


@njit(cache=True, inline="always")
def copy_every(dst, src, stride):
    """dst[k] = src[k * stride] for k < len(dst), for 1-D arrays. (At stride 2,
    :func:`split_runs` takes both phases at once.)"""
    for k in range(dst.shape[0]):
        dst[k] = src[k * stride]


@njit(cache=True, inline="always")
def copy_runs_every(dst, dst_first, dst_step, src, src_first, src_step, runs, length, stride):
    """``dst[dst_first + i*dst_step + k] = src[src_first + i*src_step + k*stride]`` for
    ``i < runs`` and ``k < length``: runs of 1-D (flattened) arrays, every offset and
    count unsigned (np.uint64). numba checks a signed index for wrap-around (negative
    from the end) at every access, and through 2-D views of run-time strides the copy
    ran scalar; unsigned offsets into flat arrays have nothing to check, and LLVM
    vectorises the copy at stride 1 (im2col of 256 -> 256 k3 on 12^3 at signed flat
    offsets 23 ms single-threaded, through 2-D views 10.5; a view per run cost more than
    a short run's copy). At stride 2, :func:`split_runs` first."""
    step = np.uint64(stride)
    for i in range(runs):
        d, s = dst_first + i * dst_step, src_first + i * src_step
        for k in range(length):
            dst[d + k] = src[s + k * step]


@njit(cache=True, inline="always")
def split_runs(evens, odds, src, src_first, src_step, runs, width):
    """``evens[i*E + k] = src[src_first + i*src_step + 2*k]`` and ``odds[i*E + k] =
    src[... + 2*k + 1]`` for ``i < runs`` and the columns ``< width`` of each run (E =
    ``(width + 1) // 2``; ``odds`` has room for E per run), offsets unsigned as in
    :func:`copy_runs_every`. Reading the even and the odd elements in one loop, LLVM
    loads each run whole and splits it (an interleaved group), where one of them alone
    is loaded element by element. The stores must go to two arrays (or ``runs`` be 1):
    LLVM's overlap check spans every run at once, and two interleaved rows of one array
    fail it and take the scalar loop (Zen 4, float32, 48-wide runs: 0.07-0.08 ns per
    value into two arrays, 0.27 into two rows of one, 0.40 for a stride-2 copy)."""
    half = np.uint64(width // 2)
    stride = np.uint64((width + 1) // 2)
    for i in range(runs):
        d, s = i * stride, src_first + i * src_step
        for k in range(half):
            evens[d + k] = src[s + np.uint64(2) * k]
            odds[d + k] = src[s + np.uint64(2) * k + np.uint64(1)]
        if width % 2 == 1:
            evens[d + half] = src[s + np.uint64(width - 1)]


@njit(cache=True, inline="always")
def split_run(dst, even_first, odd_first, src, src_first, length):
    """``dst[even_first + k] = src[src_first + 2*k]`` and ``dst[odd_first + k] =
    src[src_first + 2*k + 1]`` for ``k < length``: one run of 1-D (flattened) arrays
    split into two runs of one destination, offsets unsigned as in
    :func:`copy_runs_every`. One run per call: LLVM's overlap check then spans this
    run alone (see :func:`split_runs`)."""
    two = np.uint64(2)
    for k in range(length):
        dst[even_first + k] = src[src_first + two * k]
        dst[odd_first + k] = src[src_first + two * k + np.uint64(1)]
