"""1-D passes along one axis of a C-contiguous volume, extended on the fly.

A pass along axis ``a`` of a 3-D array sees it as ``(A, L, B)`` with the filtered axis
in the middle (axis 0: ``(1, D, H*W)``; axis 1: ``(D, H, W)``; axis 2: ``(D*H, W, 1)``).

- ``correlate_lines``: ``out[a, l, b] = sum_j w[j] * ext[a, l + j, b]``, where ``ext``
  is the source extended along the axis through an index map (no extended copy), summed in the
  order a ``plan`` gives (:func:`tap_plan`: scipy's ``NI_Correlate1D`` order, which pairs
  taps for symmetric and antisymmetric filters; in float64 the bits are scipy's).
- ``running_mean_lines``: scipy's ``NI_UniformFilter1D`` running sum, operation for
  operation (float64), so integer outputs truncate exactly as scipy's (integer sources
  along the last axis: the same exact sums, window by window). (A separate
  loop nest because scipy's uniform filter is not a correlation: its rounding differs.)
- ``extend_volume`` and ``store_rows``: the same index maps on all three axes at once,
  and the same cast into the output, for whole volumes (the dense correlation's slabs,
  which the conv3d kernels then sum).

Operands of other dtypes than the work dtype (the weights'), such as uint16 volumes,
are read and written as they are: each element is converted when it is loaded, and the
sums are kept in a row of the work dtype, then stored as numpy casts (truncating toward
zero into integers). That spares a converted copy of the source and of the result per
pass, which cost as much as the pass. A value outside an integer output's range (or NaN)
is not stored but counted, and the caller redoes that pass with numpy's cast, whose
wrap-around differs between CPUs; within the range every cast agrees. Where the caller
has found that numpy's cast on this machine truncates and wraps modulo 2^bits (x86-64),
``wrap`` stores such values the same way in the kernel (a derivative filter of an
unsigned volume: 128^3 uint16 ``sobel`` 9 -> 4 ms, without the float64 copies).

Work items never share an output element and each element is computed in one fixed
order, so the bits do not depend on the thread count. When B > 1 the innermost loop
runs over B (contiguous) in chunks that stay in L1, and an item is a run of ``RUN``
positions along the axis whose extended rows it converts once into the work dtype;
when B == 1 (the last axis) an item is ``RUN`` whole rows and the innermost loop runs
along each. Items of one row spent as long allocating their scratch as summing
(128^3 uint16 ``gaussian_filter``, three passes: 10 -> 8 ms). Every inner loop reads slices
taken first and indexed by a plain range variable: no negative or gathered indices.
"""
import threading

import numpy as np
from numba import njit, prange
from numba.core import types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .registry import REGISTRY, called_directly, declares_by_name, readonly, register

#: Below this many multiply-adds a pass runs on the calling thread.
SERIAL_WORK = 1 << 16
#: B-elements per work item when B > 1 (float64: 16 KiB for the output chunk).
CHUNK = 512
#: Rows (B == 1) or positions along the axis (B > 1) per work item.
RUN = 16
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
    """Where the sums of output rows like ``dst`` accumulate: ``dst`` itself when it has
    the work dtype (then :func:`_same_row` gives each row), else one new row of it,
    reused for every row of an item."""


@overload(_sums_row, inline="always")
def _sums_row_impl(dst, weights):
    if dst.dtype == weights.dtype:
        return lambda dst, weights: dst
    return lambda dst, weights: np.empty(dst.shape[0], weights.dtype)


def _same_row(dst, sums):
    """The row the sums of ``dst`` go to: ``dst`` when ``sums`` has its dtype (sums
    straight into the output), else ``sums``."""


@overload(_same_row, inline="always")
def _same_row_impl(dst, sums):
    if dst.dtype == sums.dtype:
        return lambda dst, sums: dst
    return lambda dst, sums: sums


def _store_row(dst, sums, wrap):
    """``sums`` cast into ``dst`` (nothing to do when they are the same row); returns how
    many values fell outside an integer ``dst``'s range (those are not stored). With
    ``wrap``, values outside the range but within +-2^31 are stored truncated toward zero
    and wrapped modulo 2^bits (what numpy's cast does on x86-64; the caller checks that
    it does on this machine) and are not counted."""


@overload(_store_row)  # inlined by LLVM; numba's IR inlining of its loop warns
def _store_row_impl(dst, sums, wrap):
    if dst.dtype == sums.dtype:
        return lambda dst, sums, wrap: 0
    if isinstance(dst.dtype, types.Float):
        def store_float(dst, sums, wrap):
            for i in range(dst.shape[0]):
                dst[i] = sums[i]
            return 0
        return store_float
    info = np.iinfo(as_dtype(dst.dtype))
    cast = as_dtype(dst.dtype).type
    # (low, high) open: every value there truncates into the range; NaN is outside.
    low, high = float(info.min) - 1.0, float(info.max) + 1.0
    limit = 2.0 ** 31
    # Wrapping through int32 is wrapping through int64 for values within +-2^31, and
    # for 8- and 16-bit outputs it is also the plain cast of values in range; it
    # vectorises where int64 does not (AVX2 has no double -> int64 conversion).
    narrow = info.bits <= 16

    def store_integer(dst, sums, wrap):
        # Rows wholly in range (the usual case) in two loops that vectorise: the test,
        # then the casts (one branchy loop doing both cost 9 ms of a 256^3 uint16
        # correlation's 137). Rows that wrap (a derivative of unsigned data) likewise
        # where they can: a sobel of 128^3 uint16 data took 17 ms, 5.0 in float32
        # (Zen 3).
        inside = True
        within = True
        for i in range(dst.shape[0]):
            inside &= (sums[i] > low) & (sums[i] < high)
            within &= (sums[i] > -limit) & (sums[i] < limit)
        if inside:
            for i in range(dst.shape[0]):
                dst[i] = cast(sums[i])
            return 0
        if narrow and wrap and within:
            for i in range(dst.shape[0]):
                dst[i] = cast(np.int32(sums[i]))
            return 0
        outside = 0
        for i in range(dst.shape[0]):
            v = sums[i]
            if v > low and v < high:
                dst[i] = cast(v)
            elif wrap and v > -limit and v < limit:
                dst[i] = cast(np.int64(v))  # int64 -> narrower integer: modulo 2^bits
            else:
                outside += 1
        return outside
    return store_integer


@njit(cache=True, inline="always")
def _line_items(out):
    """Work items: runs of ``RUN`` rows when B == 1, else (line, chunk of B, run of
    ``RUN`` positions). An item allocates its scratch rows once for its run: one item
    per row (128 elements) spent as long in allocation as in the sums."""
    lines, length, width = out.shape
    if width == 1:
        return (lines + RUN - 1) // RUN
    return lines * ((length + RUN - 1) // RUN) * ((width + CHUNK - 1) // CHUNK)


@njit(cache=True, inline="always")
def _extend_row(row, index, cval_row, extended):
    """``extended[p]`` = ``row[index[p]]``, or ``cval_row[0]`` where that is -1, each
    element converted to ``extended``'s dtype as it is loaded."""
    for p in range(index.shape[0]):
        q = index[p]
        extended[p] = row[q] if q >= 0 else cval_row[0]


@njit(cache=True, inline="always")
def _correlate_item(src, index, cval_row, weights, plan, wrap, out, item):
    lines, length, width = out.shape
    taps_length = src.shape[1]
    outside = 0
    if width == 1:
        # Each row extended once into a buffer (a gather, one load per element beside
        # the K multiply-adds), then every tap reads a contiguous slice of it.
        src_rows = src.reshape((lines, taps_length))
        dst_rows = out.reshape((lines, length))
        extended = np.empty(index.shape[0], weights.dtype)
        sums = _sums_row(dst_rows[0], weights)
        for line in range(item * RUN, min(lines, item * RUN + RUN)):
            _extend_row(src_rows[line], index, cval_row, extended)
            dst = dst_rows[line]
            row_sums = _same_row(dst, sums)
            for r in range(plan.shape[0]):
                op, j, k = plan[r, 0], plan[r, 1], plan[r, 2]
                _step(row_sums, extended[j:j + length], extended[k:k + length], weights[j], op)
            outside += _store_row(dst, row_sums, wrap)
        return outside
    # Positions along the axis fastest: consecutive items (one thread's share of the
    # range) read the same rows but one, from cache; chunks fastest read every row from
    # memory once per item (3x slower).
    chunks = (width + CHUNK - 1) // CHUNK
    runs = (length + RUN - 1) // RUN
    c = item % chunks
    rest = item // chunks
    l0 = (rest % runs) * RUN
    a = rest // runs
    b0 = c * CHUNK
    b1 = min(width, b0 + CHUNK)
    # Rows of 2-D C views, then a slice: numba types them contiguous, so the loops in
    # _step vectorise (a slice of the 3-D array is typed strided: 8x slower). The
    # extension needs no copy: a tap outside the axis reads its source row, or cval's.
    src_rows = src.reshape((lines * taps_length, width))
    dst_rows = out.reshape((lines * length, width))
    sums = _sums_row(dst_rows[0][b0:b1], weights)
    cval_part = cval_row[b0:b1]
    l1 = min(length, l0 + RUN)
    # The run's extended rows, each converted once into the work dtype (every tap would
    # convert it again: uint16 sums in float64 took 1.5x a float32 pass).
    window = np.empty((l1 - l0 + weights.shape[0] - 1, b1 - b0), weights.dtype)
    for t in range(window.shape[0]):
        q = index[l0 + t]
        row = src_rows[a * taps_length + q][b0:b1] if q >= 0 else cval_part
        converted = window[t]
        for i in range(b1 - b0):
            converted[i] = row[i]
    for l in range(l0, l1):
        dst = dst_rows[a * length + l][b0:b1]
        row_sums = _same_row(dst, sums)
        for r in range(plan.shape[0]):
            op, j, k = plan[r, 0], plan[r, 1], plan[r, 2]
            _step(row_sums, window[l - l0 + j], window[l - l0 + k], weights[j], op)
        outside += _store_row(dst, row_sums, wrap)
    return outside


# One loop body, two drivers (as in direct.py): the serial one avoids waking the thread
# pool for small passes, where that costs more than the work. Same bits either way.
@njit(parallel=True, cache=True)
def correlate_lines(src, index, cval_row, weights, plan, wrap, out):
    """``out`` (A, L, B) = the correlation with ``weights`` (K,) along axis 1 of ``src``
    (A, S, B) extended by ``index`` (L + K - 1,): the source position along axis 1 of
    each extended position, -1 for ``cval_row[:B]`` (B,, the source's dtype). In
    ``plan``'s order, summed in the weights' dtype (float32 or float64); ``src`` and
    ``out`` of any real dtype. Returns how many outputs fell outside an integer ``out``'s
    range and were not stored (with ``wrap``: only those beyond +-2^31, see
    ``_store_row``)."""
    outside = 0
    for item in prange(_line_items(out)):
        outside += _correlate_item(src, index, cval_row, weights, plan, wrap, out, item)
    return outside


@njit(cache=True)
def correlate_lines_serial(src, index, cval_row, weights, plan, wrap, out):
    """:func:`correlate_lines` on the calling thread."""
    outside = 0
    for item in range(_line_items(out)):
        outside += _correlate_item(src, index, cval_row, weights, plan, wrap, out, item)
    return outside


#: Up to this many taps, a running mean along rows of integers sums each window afresh.
WINDOW_SUM_TAPS = 16


def _exact_window_sums(row):
    """Whether float64 sums of any values of ``row``'s dtype are exact (integers of at
    most 32 bits, in windows of fewer than 2^21): a compile-time constant."""


@overload(_exact_window_sums, inline="always")
def _exact_window_sums_impl(row):
    exact = isinstance(row.dtype, types.Integer) and row.dtype.bitwidth <= 32
    return lambda row: exact


@njit(cache=True, inline="always")
def _mean_items(out):
    """Work items: runs of ``RUN`` rows when B == 1, else (line, chunk of B); a running
    sum runs along the whole axis."""
    lines, _, width = out.shape
    return (lines + RUN - 1) // RUN if width == 1 else lines * ((width + CHUNK - 1) // CHUNK)


@njit(cache=True, inline="always")
def _mean_item(src, index, cval_row, size, out, item):
    lines, length, width = out.shape
    taps_length = src.shape[1]
    if width == 1:
        # Along the last axis each row is extended once into a buffer.
        src_rows = src.reshape((lines, taps_length))
        dst_rows = out.reshape((lines, length))
        extended = np.empty(index.shape[0], np.float64)
        sums = np.empty(length, np.float64)
        for line in range(item * RUN, min(lines, item * RUN + RUN)):
            _extend_row(src_rows[line], index, cval_row, extended)
            if _exact_window_sums(src) and size <= WINDOW_SUM_TAPS:
                # Integers: every partial sum is exact, so the window sums are scipy's in
                # any order, here tap by tap along the row (vectorised, no chain).
                sums[:] = 0.0
                for j in range(size):
                    taps = extended[j:j + length]
                    for l in range(length):
                        sums[l] += taps[l]
            else:
                # The running sum is one dependency chain: the sums go into a row first
                # and are divided afterwards, in a loop that vectorises (3x faster than
                # a division per step in the chain).
                total = 0.0
                for j in range(size):
                    total += extended[j]
                sums[0] = total
                for l in range(1, length):
                    total += extended[l + size - 1] - extended[l - 1]
                    sums[l] = total
            dst = dst_rows[line]
            for l in range(length):
                dst[l] = sums[l] / size  # into an integer output: in range, truncated
        return
    chunks = (width + CHUNK - 1) // CHUNK
    c = item % chunks
    a = item // chunks
    b0 = c * CHUNK
    b1 = min(width, b0 + CHUNK)
    n = b1 - b0
    # Rows of 2-D C views, then a slice, as in _correlate_item (slices of the 3-D arrays
    # are typed strided and do not vectorise: 4-6x slower). A position outside the axis
    # reads its source row through ``index``, or cval's row.
    src_rows = src.reshape((lines * taps_length, width))
    dst_rows = out.reshape((lines * length, width))
    src0, dst0 = a * taps_length, a * length
    outside = cval_row[b0:b1]
    total = np.zeros(n, np.float64)
    for j in range(size):
        q = index[j]
        row = src_rows[src0 + q][b0:b1] if q >= 0 else outside
        for i in range(n):
            total[i] += np.float64(row[i])
    first = dst_rows[dst0][b0:b1]
    for i in range(n):
        first[i] = total[i] / size
    for l in range(1, length):
        q_enter, q_leave = index[l + size - 1], index[l - 1]
        enter = src_rows[src0 + q_enter][b0:b1] if q_enter >= 0 else outside
        leave = src_rows[src0 + q_leave][b0:b1] if q_leave >= 0 else outside
        row = dst_rows[dst0 + l][b0:b1]
        for i in range(n):
            total[i] += np.float64(enter[i]) - np.float64(leave[i])
            row[i] = total[i] / size  # into an integer output: in range, truncated


@njit(parallel=True, cache=True)
def running_mean_lines(src, index, cval_row, size, out):
    """``out`` (A, L, B) = scipy's running mean of ``size`` taps along axis 1 of ``src``
    (A, S, B) extended by ``index`` (L + size - 1,) and ``cval_row`` as in
    :func:`correlate_lines`: a running sum (``+= entering - leaving`` per step), each
    output the sum divided by ``size``, in float64 as scipy 1.17."""
    for item in prange(_mean_items(out)):
        _mean_item(src, index, cval_row, size, out, item)


@njit(cache=True)
def running_mean_lines_serial(src, index, cval_row, size, out):
    """:func:`running_mean_lines` on the calling thread."""
    for item in range(_mean_items(out)):
        _mean_item(src, index, cval_row, size, out, item)


# ---- Whole volumes: extension and the cast into the output (the dense correlation) -----------
@njit(parallel=True, cache=True)
def extend_volume(src, rows, cols, lanes, before, cval_row, out):
    """``out[p, q, r]`` (P, Q, R) := ``src[rows[p], cols[q], lanes[r]]`` (``src`` (D, H,
    W) of any real dtype, each element converted to ``out``'s), or ``cval_row[0]`` where
    any of the three is -1 (:func:`_boundary.source_index` maps). ``lanes`` is the
    identity ``lanes[before + i] = i`` on the row itself, which is copied as a run;
    the halo's few elements go through ``lanes``. One plane per work item: the planes'
    gather, the extension and the conversion in one parallel pass (numpy took three
    serial ones, a fifth of a 5^3 correlation's time)."""
    width = src.shape[2]
    cval = cval_row[0]
    for p in prange(out.shape[0]):
        plane = out[p]
        z = rows[p]
        for q in range(out.shape[1]):
            dst = plane[q]
            y = cols[q]
            if z < 0 or y < 0:
                for r in range(dst.shape[0]):
                    dst[r] = cval
                continue
            row = src[z, y]
            inside = dst[before:before + width]
            for i in range(width):
                inside[i] = row[i]
            for r in range(before):
                dst[r] = row[lanes[r]] if lanes[r] >= 0 else cval
            for r in range(before + width, dst.shape[0]):
                dst[r] = row[lanes[r]] if lanes[r] >= 0 else cval


@njit(parallel=True, cache=True)
def store_rows(values, wrap, out):
    """``out`` (R, W) := ``values`` (R, W, the work dtype) cast as :func:`_store_row`
    casts (integers: truncated toward zero; with ``wrap``, wrapped modulo 2^bits within
    +-2^31). Returns how many values fell outside an integer ``out``'s range and were
    not stored; one row per work item."""
    outside = 0
    for r in prange(values.shape[0]):
        outside += _store_row(out[r], values[r], wrap)
    return outside


# ---- Declarations (for ``python -m numbaconv warmup``; numbaconv.ndimage calls them) ----------
#: What these kernels compute: 1-D passes of numbaconv.ndimage, outside ``auto``'s choices.
LINES = "lines"


def _correlate_examples(dtype, data=None, out=None):
    """Arguments of a pass summing in ``dtype`` over a volume of ``data`` (default:
    ``dtype``) into an output of ``out`` (default: ``data``)."""
    data = dtype if data is None else data
    out = data if out is None else out
    volume, row, weights = np.zeros((1, 1, 1), data), np.zeros(1, data), np.zeros(1, dtype)
    return (readonly(volume), readonly(np.zeros(1, np.int64)), readonly(row), readonly(weights),
            readonly(np.zeros((1, 3), np.int64)), False, np.zeros((1, 1, 1), out))


def _mean_examples(dtype, data=None, out=None):
    data = dtype if data is None else data
    out = data if out is None else out
    return (readonly(np.zeros((1, 1, 1), data)), readonly(np.zeros(1, np.int64)),
            readonly(np.zeros(1, data)), 1, np.zeros((1, 1, 1), out))


#: Integer volumes whose passes (float64 sums, output of the input's dtype, scipy's
#: default) ``python -m numbaconv warmup`` compiles too; other combinations are declared
#: when first used (:func:`declared`).
WARM_INTEGERS = ("uint8", "uint16", "int16")


def _extend_examples(dtype, data=None):
    data = dtype if data is None else data
    index = readonly(np.zeros(1, np.int64))
    return (readonly(np.zeros((1, 1, 1), data)), index, index, index, 0,
            readonly(np.zeros(1, dtype)), np.zeros((1, 1, 1), dtype))


def _store_examples(dtype, data=None):
    data = dtype if data is None else data
    return readonly(np.zeros((1, 1), dtype)), False, np.zeros((1, 1), data)


#: The 1-D pass kernels, which numbaconv.ndimage tiers (the serial one serves while the
#: parallel one compiles): name -> (function, examples, what it computes).
PASSES = {
    "lines": (correlate_lines, _correlate_examples, "1-D correlation along one axis"),
    "lines_serial": (correlate_lines_serial, _correlate_examples, "the same, on the calling thread"),
    "running_mean": (running_mean_lines, _mean_examples, "scipy's running-sum uniform filter"),
    "running_mean_serial": (running_mean_lines_serial, _mean_examples,
                            "the same, on the calling thread"),
}


def _register_line_kernel(name, function, examples, what, data=None, out=None):
    """Declare ``function`` for volumes of ``data`` into outputs of ``out`` (summing in
    float64), or of the work dtype throughout (``data`` None)."""
    dtypes = (data,) if out is None else (data, out)
    bound = examples if data is None else (lambda dtype: examples(dtype, *dtypes))
    of = "" if data is None else f", {data} volumes" + ("" if out is None else f" into {out}")
    return register(name=name, computes=LINES, function=function, examples=bound,
                    launch=called_directly("numbaconv.ndimage"), parallel=not name.endswith("serial"),
                    bitwise=None, dtypes=("float32", "float64") if data is None else ("float64",),
                    description=f"numbaconv.ndimage: {what}{of}")


for _name, (_function, _examples, _what) in (
        ("extend_volume", (extend_volume, _extend_examples, "a volume extended by index maps")),
        *PASSES.items()):
    _register_line_kernel(_name, _function, _examples, _what)
for _name, (_function, _examples, _what) in (
        ("store_rows", (store_rows, _store_examples, "sums cast into an integer output")),
        ("extend_volume", (extend_volume, _extend_examples, "a volume extended by index maps")),
        *PASSES.items()):
    for _data in WARM_INTEGERS:
        _register_line_kernel(f"{_name}_{_data}", _function, _examples, _what, _data)


def declared(name: str, data, work, out) -> str:
    """The registry entry of pass kernel ``name`` (one of ``PASSES``) for a pass over
    ``data`` summed in ``work`` into ``out`` (numpy dtypes). Combinations other than the
    work dtype throughout and ``WARM_INTEGERS`` are declared now, under a name that
    :func:`_declare_by_name` reads back in the child process compiling them: a first
    ``gaussian_filter`` of uint8 into float32 compiled its parallel pass in the caller's
    thread, holding the GIL for 5 s."""
    if data == work == out:
        return name
    if work == np.float64 and out == data and data.name in WARM_INTEGERS:
        return f"{name}_{data.name}"
    return _declare_pass(name, data, out).name


def _declare_pass(base: str, data, out):
    """Pass kernel ``base`` for ``data`` volumes into ``out`` outputs (numpy dtypes),
    declared now if it is not yet, as ``{base}_{data}_{out}``."""
    name = f"{base}_{data.name}_{out.name}"
    if name in REGISTRY:  # every later call of a pass: no lock
        return REGISTRY[name]
    with _declaring:  # threads of one process may ask at once
        return REGISTRY.get(name) or _register_line_kernel(name, *PASSES[base], data.name, out.name)


@declares_by_name
def _declare_by_name(name: str):
    """The pass kernel named ``{pass}_{data dtype}_{output dtype}`` (see :func:`declared`),
    declared now; None for other names."""
    parts = name.rsplit("_", 2)
    if len(parts) != 3 or parts[0] not in PASSES:
        return None
    try:
        data, out = np.dtype(parts[1]), np.dtype(parts[2])
    except TypeError:
        return None
    if data.kind not in "biuf" or out.kind not in "biuf":
        return None
    return _declare_pass(parts[0], data, out)


_declaring = threading.Lock()
