"""1-D passes along one axis of an already extended, C-contiguous volume.

A pass along axis ``a`` of a 3-D array sees it as ``(A, L, B)`` with the filtered axis
in the middle (axis 0: ``(1, D, H*W)``; axis 1: ``(D, H, W)``; axis 2: ``(D*H, W, 1)``):
``ext`` is ``(A, L + K - 1, B)`` and ``out`` is ``(A, L, B)``, both C-contiguous.

- ``correlate_lines``: ``out[a, l, b] = sum_j w[j] * ext[a, l + j, b]``, summed in the
  order a ``plan`` gives (:func:`tap_plan`: scipy's ``NI_Correlate1D`` order, which pairs
  taps for symmetric and antisymmetric filters; in float64 the bits are scipy's).
- ``running_mean_lines``: scipy's ``NI_UniformFilter1D`` running sum, operation for
  operation (float64), so integer outputs truncate exactly as scipy's. (A separate
  loop nest because scipy's uniform filter is not a correlation: its rounding differs.)

Work items never share an output element and each element is computed in one fixed
order, so the bits do not depend on the thread count. When B > 1 the innermost loop
runs over B (contiguous) in chunks that stay in L1; when B == 1 (the last axis) an item
is a whole row and the innermost loop runs along it. Every inner loop reads slices
taken first and indexed by a plain range variable: no negative or gathered indices.
"""
import numpy as np
from numba import njit, prange

from .registry import readonly

#: Below this many multiply-adds a pass runs on the calling thread.
SERIAL_WORK = 1 << 16
#: B-elements per work item when B > 1 (float64: 16 KiB for the output chunk).
CHUNK = 2048
#: ``tap_plan`` operations: out = x[j]*w[j]; out += x[j]*w[j]; out += (x[j] +/- x[k])*w[j].
SET, ADD, ADD_SUM, ADD_DIFF = 0, 1, 2, 3


def tap_plan(weights: np.ndarray) -> np.ndarray:
    """Rows ``(op, j, k)`` of int64: scipy's summation order for these float64 weights.

    Odd lengths are tested for symmetry and antisymmetry as scipy does (differences up to
    DBL_EPSILON count as equal, and then only the left half of the weights is used).
    """
    w = np.asarray(weights, np.float64)
    size = w.shape[0]
    half = size // 2
    symmetric = 0
    if size & 1:
        pairs = [(half + i, half - i) for i in range(1, half + 1)]
        if all(abs(w[r] - w[l]) <= np.finfo(np.float64).eps for r, l in pairs):
            symmetric = 1
        elif all(abs(w[r] + w[l]) <= np.finfo(np.float64).eps for r, l in pairs):
            symmetric = -1
    if symmetric:
        op = ADD_SUM if symmetric > 0 else ADD_DIFF
        rows = [(SET, half, half)] + [(op, j, size - 1 - j) for j in range(half)]
    else:
        rows = [(SET, size - 1, size - 1)] + [(ADD, j, j) for j in range(size - 1)]
    return readonly(np.array(rows, np.int64))


@njit(cache=True, inline="always")
def _step(dst, xj, xk, wj, op):
    """One plan row on vectors: ``dst`` and the tap vectors ``xj``, ``xk`` (same length)."""
    n = dst.shape[0]
    if op == SET:
        for i in range(n):
            dst[i] = xj[i] * wj
    elif op == ADD:
        for i in range(n):
            dst[i] += xj[i] * wj
    elif op == ADD_SUM:
        for i in range(n):
            dst[i] += (xj[i] + xk[i]) * wj
    else:
        for i in range(n):
            dst[i] += (xj[i] - xk[i]) * wj


@njit(cache=True, inline="always")
def _line_items(out):
    """Work items: whole rows when B == 1, else (line, position, chunk of B)."""
    lines, length, width = out.shape
    if width == 1:
        return lines
    return lines * length * ((width + CHUNK - 1) // CHUNK)


@njit(cache=True, inline="always")
def _correlate_item(ext, weights, plan, out, item):
    lines, length, width = out.shape
    if width == 1:
        # As 2-D C arrays, so that rows are contiguous to the compiler (no stride).
        src = ext.reshape((ext.shape[0], ext.shape[1]))[item]
        dst = out.reshape((lines, length))[item]
        for r in range(plan.shape[0]):
            op, j, k = plan[r, 0], plan[r, 1], plan[r, 2]
            _step(dst, src[j:j + length], src[k:k + length], weights[j], op)
        return
    chunks = (width + CHUNK - 1) // CHUNK
    c = item % chunks
    rest = item // chunks
    a, l = rest // length, rest % length
    b0 = c * CHUNK
    b1 = min(width, b0 + CHUNK)
    window = ext[a, l:l + weights.shape[0], b0:b1]
    dst = out[a, l, b0:b1]
    for r in range(plan.shape[0]):
        op, j, k = plan[r, 0], plan[r, 1], plan[r, 2]
        _step(dst, window[j], window[k], weights[j], op)


# One loop body, two drivers (as in direct.py): the serial one avoids waking the thread
# pool for small passes, where that costs more than the work. Same bits either way.
@njit(parallel=True, cache=True)
def correlate_lines(ext, weights, plan, out):
    """``out`` (A, L, B) = the correlation of ``ext`` (A, L + K - 1, B) with ``weights``
    (K,) along axis 1, in ``plan``'s order; all float32 or all float64."""
    for item in prange(_line_items(out)):
        _correlate_item(ext, weights, plan, out, item)


@njit(cache=True)
def correlate_lines_serial(ext, weights, plan, out):
    """:func:`correlate_lines` on the calling thread."""
    for item in range(_line_items(out)):
        _correlate_item(ext, weights, plan, out, item)


@njit(cache=True, inline="always")
def _mean_item(ext, size, out, item):
    lines, length, width = out.shape
    chunks = (width + CHUNK - 1) // CHUNK
    c = item % chunks
    a = item // chunks
    b0 = c * CHUNK
    b1 = min(width, b0 + CHUNK)
    src = ext[a, :, b0:b1]
    dst = out[a, :, b0:b1]
    n = b1 - b0
    total = np.zeros(n, np.float64)
    for j in range(size):
        row = src[j]
        for i in range(n):
            total[i] += row[i]
    first = dst[0]
    for i in range(n):
        first[i] = total[i] / size
    for l in range(1, length):
        enter = src[l + size - 1]
        leave = src[l - 1]
        row = dst[l]
        for i in range(n):
            total[i] += enter[i] - leave[i]
            row[i] = total[i] / size


@njit(parallel=True, cache=True)
def running_mean_lines(ext, size, out):
    """``out`` (A, L, B) = scipy's running mean of ``size`` taps of ``ext``
    (A, L + size - 1, B) along axis 1: a running sum (``+= entering - leaving`` per
    step), each output the sum divided by ``size``, in float64 as scipy 1.17."""
    for item in prange(out.shape[0] * ((out.shape[2] + CHUNK - 1) // CHUNK)):
        _mean_item(ext, size, out, item)


@njit(cache=True)
def running_mean_lines_serial(ext, size, out):
    """:func:`running_mean_lines` on the calling thread."""
    for item in range(out.shape[0] * ((out.shape[2] + CHUNK - 1) // CHUNK)):
        _mean_item(ext, size, out, item)
