"""1-D passes along one axis of a C-contiguous volume, extended on the fly.

A pass along axis ``a`` of a 3-D array sees it as ``(A, L, B)`` with the filtered axis
in the middle (axis 0: ``(1, D, H*W)``; axis 1: ``(D, H, W)``; axis 2: ``(D*H, W, 1)``).

- ``correlate_lines``: ``out[a, l, b] = sum_j w[j] * ext[a, l + j, b]``, where ``ext``
  is the source extended along the axis through an index map (no extended copy), summed in the
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

from .registry import readonly, register

#: Below this many multiply-adds a pass runs on the calling thread.
SERIAL_WORK = 1 << 16
#: B-elements per work item when B > 1 (float64: 16 KiB for the output chunk).
CHUNK = 512
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
    """Work items: whole rows when B == 1, else (line, chunk of B, position)."""
    lines, length, width = out.shape
    if width == 1:
        return lines
    return lines * length * ((width + CHUNK - 1) // CHUNK)


@njit(cache=True, inline="always")
def _correlate_item(src, index, cval_row, weights, plan, out, item):
    lines, length, width = out.shape
    taps_length = src.shape[1]
    if width == 1:
        # The row extended once into a buffer (a gather, one load per element beside
        # the K multiply-adds), then every tap reads a contiguous slice of it.
        row = src.reshape((lines, taps_length))[item]
        extended = np.empty(index.shape[0], src.dtype)
        for p in range(index.shape[0]):
            q = index[p]
            extended[p] = row[q] if q >= 0 else cval_row[0]
        dst = out.reshape((lines, length))[item]
        for r in range(plan.shape[0]):
            op, j, k = plan[r, 0], plan[r, 1], plan[r, 2]
            _step(dst, extended[j:j + length], extended[k:k + length], weights[j], op)
        return
    # Positions along the axis fastest: consecutive items (one thread's share of the
    # range) read the same rows but one, from cache; chunks fastest read every row from
    # memory once per item (3x slower).
    chunks = (width + CHUNK - 1) // CHUNK
    l = item % length
    rest = item // length
    a, c = rest // chunks, rest % chunks
    b0 = c * CHUNK
    b1 = min(width, b0 + CHUNK)
    # Rows of 2-D C views, then a slice: numba types them contiguous, so the loops in
    # _step vectorise (a slice of the 3-D array is typed strided: 8x slower). The
    # extension needs no copy: a tap outside the axis reads its source row, or cval's.
    src_rows = src.reshape((lines * taps_length, width))
    dst = out.reshape((lines * length, width))[a * length + l][b0:b1]
    outside = cval_row[b0:b1]
    for r in range(plan.shape[0]):
        op, j, k = plan[r, 0], plan[r, 1], plan[r, 2]
        qj, qk = index[l + j], index[l + k]
        xj = src_rows[a * taps_length + qj][b0:b1] if qj >= 0 else outside
        xk = src_rows[a * taps_length + qk][b0:b1] if qk >= 0 else outside
        _step(dst, xj, xk, weights[j], op)


# One loop body, two drivers (as in direct.py): the serial one avoids waking the thread
# pool for small passes, where that costs more than the work. Same bits either way.
@njit(parallel=True, cache=True)
def correlate_lines(src, index, cval_row, weights, plan, out):
    """``out`` (A, L, B) = the correlation with ``weights`` (K,) along axis 1 of ``src``
    (A, S, B) extended by ``index`` (L + K - 1,): the source position along axis 1 of
    each extended position, -1 for ``cval_row[:B]`` (B,). In ``plan``'s order; src,
    cval_row, weights and out all float32 or all float64."""
    for item in prange(_line_items(out)):
        _correlate_item(src, index, cval_row, weights, plan, out, item)


@njit(cache=True)
def correlate_lines_serial(src, index, cval_row, weights, plan, out):
    """:func:`correlate_lines` on the calling thread."""
    for item in range(_line_items(out)):
        _correlate_item(src, index, cval_row, weights, plan, out, item)


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


# ---- Declarations (for ``python -m numbaconv warmup``; numbaconv.ndimage calls them) ----------
#: What these kernels compute: 1-D passes of numbaconv.ndimage, outside ``auto``'s choices.
LINES = "lines"


def _correlate_examples(dtype):
    volume, vector = np.zeros((1, 1, 1), dtype), np.zeros(1, dtype)
    return (readonly(volume), readonly(np.zeros(1, np.int64)), readonly(vector), readonly(vector),
            readonly(np.zeros((1, 3), np.int64)), np.zeros((1, 1, 1), dtype))


def _mean_examples(dtype):
    return readonly(np.zeros((1, 1, 1), dtype)), 1, np.zeros((1, 1, 1), dtype)


def _called_directly(run, spec, *operands):
    raise TypeError("numbaconv.ndimage calls the 1-D pass kernels directly")


for _name, _function, _examples, _what in (
        ("lines", correlate_lines, _correlate_examples, "1-D correlation along one axis"),
        ("lines_serial", correlate_lines_serial, _correlate_examples, "the same, on the calling thread"),
        ("running_mean", running_mean_lines, _mean_examples, "scipy's running-sum uniform filter"),
        ("running_mean_serial", running_mean_lines_serial, _mean_examples,
         "the same, on the calling thread")):
    register(name=_name, computes=LINES, function=_function, examples=_examples,
             launch=_called_directly, parallel=not _name.endswith("serial"), bitwise=None,
             description=f"numbaconv.ndimage: {_what}")
