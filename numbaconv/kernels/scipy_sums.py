"""Dense correlation sums as scipy.ndimage sums them, at the outputs where a faster
method's value could truncate to another integer than scipy's.

scipy's ``NI_Correlate`` sums, for each output, the products of the weights above
DBL_EPSILON with their inputs in the weights' raster order, from 0.0, each product
rounded before it is added (scipy's x86-64 wheels target a baseline without FMA); an
integer output is that float64 sum truncated toward zero. A faster method (the FFT)
gives values within a known ``bound`` of scipy's sums. Where a value lies farther than
``bound`` from every integer, no integer separates it from scipy's sum, so both truncate
alike; the others are summed again here, as scipy sums them.

- ``count_near_integers(values, bound)``: how many values would be summed again.
- ``flat_windows(ext, window, sentinel, flat)``: which outputs read one value only
  (their sum is then a function of that value, taken once).
- ``resum_near_integers(ext, offsets, weights, flat, values, bound)``: sum them again.

Both run one plane per work item; a count is exact in any order and every sum has one
order, so the bits do not depend on the thread count.
"""
import numpy as np
from numba import njit, prange

from .loops import add_row, copy_row
from .registry import called_directly, readonly, register


@njit(cache=True, inline="always")
def _near_integer(value, bound):
    """Within ``bound`` of an integer, or not finite (NaN compares false)."""
    return not abs(value - np.rint(value)) > bound


@njit(parallel=True, cache=True)
def count_near_integers(values, bound):
    """How many of ``values`` (D, H, W) float64 lie within ``bound`` of an integer, or
    are not finite."""
    depth, height, width = values.shape
    count = 0
    for z in prange(depth):
        rows = values[z]
        near = 0
        for y in range(height):
            row = rows[y]
            for x in range(width):
                near += _near_integer(row[x], bound)
        count += near
    return count


@njit(cache=True, inline="always")
def _level(value, sentinel):
    """An integer standing for ``value``: itself when it is an integer below
    ``sentinel`` in magnitude, else ``sentinel`` (a non-integral ``cval``)."""
    if abs(value) < sentinel and value == np.floor(value):
        return np.int64(value)
    return np.int64(sentinel)


@njit(parallel=True, cache=True)
def flat_windows(ext, window, sentinel, flat):
    """``flat[z, y, x]`` (D, H, W) := whether every value of ``ext[z:z + kD, y:y + kH,
    x:x + kW]`` is the same (``window`` = (kD, kH, kW); values as :func:`_level`). From
    exact int64 window sums of the levels and of their squares: ``K * sum(v^2) ==
    sum(v)^2`` holds only for constant windows (Cauchy-Schwarz). The caller keeps
    ``K^2 * sentinel^2`` below 2^62."""
    kd, kh, kw = window[0], window[1], window[2]
    depth, height, width = flat.shape
    ext_depth, ext_height = ext.shape[0], ext.shape[1]
    # Window sums along x, then y, then z: each a running sum along one axis.
    along_x = np.empty((2, ext_depth, ext_height, width), np.int64)
    for z in prange(ext_depth):
        for y in range(ext_height):
            row = ext[z, y]
            total, squares = 0, 0
            for t in range(kw):
                v = _level(row[t], sentinel)
                total += v
                squares += v * v
            along_x[0, z, y, 0], along_x[1, z, y, 0] = total, squares
            for x in range(1, width):
                v, u = _level(row[x + kw - 1], sentinel), _level(row[x - 1], sentinel)
                total += v - u
                squares += v * v - u * u
                along_x[0, z, y, x], along_x[1, z, y, x] = total, squares
    along_y = np.empty((2, ext_depth, height, width), np.int64)
    for z in prange(ext_depth):
        for m in range(2):
            sums, source = along_y[m, z], along_x[m, z]
            copy_row(sums[0], source[0])
            for t in range(1, kh):
                add_row(sums[0], source[t])
            for y in range(1, height):
                for x in range(width):
                    sums[y, x] = sums[y - 1, x] + source[y + kh - 1, x] - source[y - 1, x]
    count = kd * kh * kw
    for y in prange(height):
        total = along_y[0, 0, y].copy()
        squares = along_y[1, 0, y].copy()
        for t in range(1, kd):
            add_row(total, along_y[0, t, y])
            add_row(squares, along_y[1, t, y])
        for z in range(depth):
            if z > 0:
                for x in range(width):
                    total[x] += along_y[0, z + kd - 1, y, x] - along_y[0, z - 1, y, x]
                    squares[x] += along_y[1, z + kd - 1, y, x] - along_y[1, z - 1, y, x]
            out = flat[z, y]
            for x in range(width):
                out[x] = count * squares[x] == total[x] * total[x]


@njit(parallel=True, cache=True)
def resum_near_integers(ext, offsets, weights, flat, values, bound):
    """Each of ``values`` (D, H, W) float64 within ``bound`` of an integer (or not
    finite) := ``sum_t ext[z + offsets[t, 0], y + offsets[t, 1], x + offsets[t, 2]] *
    weights[t]`` in t's order from 0.0, each product rounded before it is added: scipy's
    sum for that output. ``ext`` (D + kD - 1, H + kH - 1, W + kW - 1) float64 is the
    extended input; ``offsets`` (T, 3) int64 and ``weights`` (T,) float64 are the taps
    scipy keeps, in raster order. ``flat`` (D, H, W) bool: the output's window is one
    value (:func:`flat_windows`; False where unknown)."""
    depth, height, width = values.shape
    taps = weights.shape[0]
    for z in prange(depth):
        # A flat window's sum depends on its one value only: flat regions (a mask's
        # background, a saturated area) lie near integers everywhere, and their sums,
        # each a long dependency chain, are taken once per value and plane.
        flat_value, flat_sum = np.nan, 0.0
        for y in range(height):
            row, flat_row = values[z, y], flat[z, y]
            for x in range(width):
                if not _near_integer(row[x], bound):
                    continue
                first = ext[z + offsets[0, 0], y + offsets[0, 1], x + offsets[0, 2]]
                if flat_row[x] and first == flat_value:
                    row[x] = flat_sum
                    continue
                total = 0.0
                for t in range(taps):
                    total += ext[z + offsets[t, 0], y + offsets[t, 1], x + offsets[t, 2]] \
                        * weights[t]
                row[x] = total
                if flat_row[x]:
                    flat_value, flat_sum = first, total


# ---- Declarations (for ``python -m numbaconv warmup``; numbaconv.ndimage calls them) ----------
#: What these kernels compute: scipy's sums of numbaconv.ndimage, outside ``auto``'s choices.
SCIPY_SUMS = "scipy_sums"

register(name="count_near_integers", computes=SCIPY_SUMS, function=count_near_integers,
         examples=lambda dtype: (np.zeros((1, 1, 1), dtype), 0.0),
         launch=called_directly("numbaconv.ndimage"), bitwise=None, dtypes=("float64",),
         description="numbaconv.ndimage: outputs near an integer, to sum again")
register(name="flat_windows", computes=SCIPY_SUMS, function=flat_windows,
         examples=lambda dtype: (readonly(np.zeros((1, 1, 1), dtype)),
                                 readonly(np.ones(3, np.int64)), 1.0,
                                 np.zeros((1, 1, 1), np.bool_)),
         launch=called_directly("numbaconv.ndimage"), bitwise=None, dtypes=("float64",),
         description="numbaconv.ndimage: outputs whose window holds one value")
register(name="resum_near_integers", computes=SCIPY_SUMS, function=resum_near_integers,
         examples=lambda dtype: (readonly(np.zeros((1, 1, 1), dtype)),
                                 readonly(np.zeros((1, 3), np.int64)),
                                 readonly(np.zeros(1, dtype)),
                                 readonly(np.zeros((1, 1, 1), np.bool_)),
                                 np.zeros((1, 1, 1), dtype), 0.0),
         launch=called_directly("numbaconv.ndimage"), bitwise=None, dtypes=("float64",),
         description="numbaconv.ndimage: scipy's dense sums at outputs near an integer")
