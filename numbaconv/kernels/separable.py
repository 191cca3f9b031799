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

Operands of other dtypes than the work dtype (the weights'), such as uint16 volumes,
are read and written as they are: each element is converted when it is loaded, and the
sums are kept in a row of the work dtype, then stored as numpy casts (truncating toward
zero into integers). That spares a converted copy of the source and of the result per
pass, which cost as much as the pass. A value outside an integer output's range (or NaN)
is not stored but counted, and the caller redoes that pass with numpy's cast, whose
wrap-around differs between CPUs; within the range every cast agrees.

Work items never share an output element and each element is computed in one fixed
order, so the bits do not depend on the thread count. When B > 1 the innermost loop
runs over B (contiguous) in chunks that stay in L1; when B == 1 (the last axis) an item
is a whole row and the innermost loop runs along it. Every inner loop reads slices
taken first and indexed by a plain range variable: no negative or gathered indices.
"""
import numpy as np
from numba import njit, prange
from numba.core import types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

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


def _to_work(x, w):
    """``x`` converted to the work dtype, the type of the weight ``w``."""


@overload(_to_work, inline="always")
def _to_work_impl(x, w):
    cast = as_dtype(w).type
    return lambda x, w: cast(x)


@njit(cache=True, inline="always")
def _step(dst, xj, xk, wj, op):
    """One plan row on vectors: ``dst`` (work dtype) and the tap vectors ``xj``, ``xk``
    (same length, the source's dtype)."""
    n = dst.shape[0]
    if op == SET:
        for i in range(n):
            dst[i] = _to_work(xj[i], wj) * wj
    elif op == ADD:
        for i in range(n):
            dst[i] += _to_work(xj[i], wj) * wj
    elif op == ADD_SUM:
        for i in range(n):
            dst[i] += (_to_work(xj[i], wj) + _to_work(xk[i], wj)) * wj
    else:
        for i in range(n):
            dst[i] += (_to_work(xj[i], wj) - _to_work(xk[i], wj)) * wj


def _sums_row(dst, weights):
    """Where the sums of output row ``dst`` accumulate: ``dst`` itself when it has the
    work dtype, else a new row of it."""


@overload(_sums_row, inline="always")
def _sums_row_impl(dst, weights):
    if dst.dtype == weights.dtype:
        return lambda dst, weights: dst
    return lambda dst, weights: np.empty(dst.shape[0], weights.dtype)


def _store_row(dst, sums):
    """``sums`` cast into ``dst`` (nothing to do when they are the same row); returns how
    many values fell outside an integer ``dst``'s range (those are not stored)."""


@overload(_store_row)  # inlined by LLVM; numba's IR inlining of its loop warns
def _store_row_impl(dst, sums):
    if dst.dtype == sums.dtype:
        return lambda dst, sums: 0
    if isinstance(dst.dtype, types.Float):
        def store_float(dst, sums):
            for i in range(dst.shape[0]):
                dst[i] = sums[i]
            return 0
        return store_float
    info = np.iinfo(as_dtype(dst.dtype))
    cast = as_dtype(dst.dtype).type
    # (low, high) open: every value there truncates into the range; NaN is outside.
    low, high = float(info.min) - 1.0, float(info.max) + 1.0

    def store_integer(dst, sums):
        outside = 0
        for i in range(dst.shape[0]):
            v = sums[i]
            if v > low and v < high:
                dst[i] = cast(v)
            else:
                outside += 1
        return outside
    return store_integer


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
        extended = np.empty(index.shape[0], weights.dtype)
        for p in range(index.shape[0]):
            q = index[p]
            extended[p] = row[q] if q >= 0 else cval_row[0]
        dst = out.reshape((lines, length))[item]
        sums = _sums_row(dst, weights)
        for r in range(plan.shape[0]):
            op, j, k = plan[r, 0], plan[r, 1], plan[r, 2]
            _step(sums, extended[j:j + length], extended[k:k + length], weights[j], op)
        return _store_row(dst, sums)
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
    sums = _sums_row(dst, weights)
    outside = cval_row[b0:b1]
    for r in range(plan.shape[0]):
        op, j, k = plan[r, 0], plan[r, 1], plan[r, 2]
        qj, qk = index[l + j], index[l + k]
        xj = src_rows[a * taps_length + qj][b0:b1] if qj >= 0 else outside
        xk = src_rows[a * taps_length + qk][b0:b1] if qk >= 0 else outside
        _step(sums, xj, xk, weights[j], op)
    return _store_row(dst, sums)


# One loop body, two drivers (as in direct.py): the serial one avoids waking the thread
# pool for small passes, where that costs more than the work. Same bits either way.
@njit(parallel=True, cache=True)
def correlate_lines(src, index, cval_row, weights, plan, out):
    """``out`` (A, L, B) = the correlation with ``weights`` (K,) along axis 1 of ``src``
    (A, S, B) extended by ``index`` (L + K - 1,): the source position along axis 1 of
    each extended position, -1 for ``cval_row[:B]`` (B,, the source's dtype). In
    ``plan``'s order, summed in the weights' dtype (float32 or float64); ``src`` and
    ``out`` of any real dtype. Returns how many outputs fell outside an integer ``out``'s
    range (not stored)."""
    outside = 0
    for item in prange(_line_items(out)):
        outside += _correlate_item(src, index, cval_row, weights, plan, out, item)
    return outside


@njit(cache=True)
def correlate_lines_serial(src, index, cval_row, weights, plan, out):
    """:func:`correlate_lines` on the calling thread."""
    outside = 0
    for item in range(_line_items(out)):
        outside += _correlate_item(src, index, cval_row, weights, plan, out, item)
    return outside


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
            total[i] += np.float64(row[i])
    first = dst[0]
    for i in range(n):
        first[i] = total[i] / size
    for l in range(1, length):
        enter = src[l + size - 1]
        leave = src[l - 1]
        row = dst[l]
        for i in range(n):
            total[i] += np.float64(enter[i]) - np.float64(leave[i])
            row[i] = total[i] / size  # into an integer output: in range, truncated


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


def _correlate_examples(dtype, data=None):
    """Arguments of a pass summing in ``dtype`` over a volume of ``data`` (default:
    ``dtype``) into an output of ``data``."""
    data = dtype if data is None else data
    volume, row, weights = np.zeros((1, 1, 1), data), np.zeros(1, data), np.zeros(1, dtype)
    return (readonly(volume), readonly(np.zeros(1, np.int64)), readonly(row), readonly(weights),
            readonly(np.zeros((1, 3), np.int64)), np.zeros((1, 1, 1), data))


def _mean_examples(dtype, data=None):
    data = dtype if data is None else data
    return readonly(np.zeros((1, 1, 1), data)), 1, np.zeros((1, 1, 1), data)


def _called_directly(run, spec, *operands):
    raise TypeError("numbaconv.ndimage calls the 1-D pass kernels directly")


#: Integer volumes whose passes (float64 sums, output of the input's dtype, scipy's
#: default) ``python -m numbaconv warmup`` compiles too; others compile on first use.
WARM_INTEGERS = ("uint8", "uint16", "int16")

for _name, _function, _examples, _what in (
        ("lines", correlate_lines, _correlate_examples, "1-D correlation along one axis"),
        ("lines_serial", correlate_lines_serial, _correlate_examples, "the same, on the calling thread"),
        ("running_mean", running_mean_lines, _mean_examples, "scipy's running-sum uniform filter"),
        ("running_mean_serial", running_mean_lines_serial, _mean_examples,
         "the same, on the calling thread")):
    register(name=_name, computes=LINES, function=_function, examples=_examples,
             launch=_called_directly, parallel=not _name.endswith("serial"), bitwise=None,
             description=f"numbaconv.ndimage: {_what}")
    for _data in WARM_INTEGERS:
        register(name=f"{_name}_{_data}", computes=LINES, function=_function,
                 examples=lambda dtype, data=_data, examples=_examples: examples(dtype, data),
                 launch=_called_directly, parallel=not _name.endswith("serial"), bitwise=None,
                 dtypes=("float64",), description=f"numbaconv.ndimage: {_what}, {_data} volumes")
