"""scipy.ndimage's linear filters, composed exactly as scipy 1.17's ``_filters.py``
composes them, on two primitives: a 1-D pass along one axis (:func:`_pass1d`, on
``numbaconv.kernels.separable``) and a dense correlation (:func:`_dense`, on
numbaconv's forward conv3d kernels).

Arrays of 1 to 3 dimensions are handled as 3-D with leading singleton axes.
"""
from __future__ import annotations

import functools
import math
import numbers
import operator
from collections.abc import Iterable

import numba
import numpy as np

from .. import _dispatch
from .._dispatch import all_finite
from ..kernels import separable
from ..kernels.registry import readonly
from . import _support as S
from ._boundary import extend, source_index

__all__ = ["correlate1d", "convolve1d", "gaussian_filter1d", "gaussian_filter",
           "uniform_filter1d", "uniform_filter", "correlate", "convolve", "sobel", "prewitt",
           "laplace", "gaussian_laplace", "gaussian_gradient_magnitude", "choose_algorithm"]

_DBL_EPSILON = np.finfo(np.float64).eps


# ---- Shapes and results ------------------------------------------------------------------
def _as_input(inp) -> np.ndarray:
    inp = np.asarray(inp)
    S.reject_complex(inp)
    if not 1 <= inp.ndim <= 3:
        raise ValueError(f"numbaconv.ndimage filters 1-D to 3-D arrays; input has "
                         f"ndim={inp.ndim}")
    return inp


def _as3d(x: np.ndarray) -> np.ndarray:
    return x.reshape((1,) * (3 - x.ndim) + x.shape)


def _lines(a: np.ndarray, axis: int) -> np.ndarray:
    """A C-contiguous 3-D array viewed as (A, L, B) with ``axis`` in the middle."""
    d, h, w = a.shape
    return a.reshape(((1, d, h * w), (d, h, w), (d * h, w, 1))[axis])


def _store(result: np.ndarray, output: np.ndarray) -> None:
    """Write a work-dtype result into ``output``: a C cast, as scipy's, for integers
    (truncation toward zero; out-of-range values wrap as on x86, which numpy's cast
    matches for the 8/16/32-bit types, see the tests)."""
    result = result.reshape(output.shape)
    if result is output or np.shares_memory(result, output):
        return
    if output.dtype == np.bool_:
        # scipy stores a bool output as ``(npy_bool)sum``, an unsigned char: truncated
        # (0.3 -> False), where numpy's cast to bool tests for nonzero.
        output = output.view(np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):
        if output.dtype == np.uint32 and result.dtype.kind == "f" and _uint32_through_int64():
            # scipy's C cast of a double to uint32 goes through a 64-bit integer here:
            # values past 2^32 or below 0 wrap modulo 2^32. numpy's own cast does that in
            # its scalar loop but gives 0 in its vector loop, so it changed with the
            # array's length (numbaconv.dask's blocks; uint32 sobel, found by a review).
            result = result.astype(np.int64)
        np.copyto(output, result, casting="unsafe")


@functools.lru_cache(maxsize=None)
def _uint32_through_int64() -> bool:
    """Whether C casts a double to uint32 as it casts it to int64, then narrows (x86-64):
    numpy's one-element cast is C's (its scalar loop)."""
    probe = [1.7e10, -5.5, 2.0 ** 40 + 3.7, -2.0 ** 33 - 1.2]
    with np.errstate(all="ignore"):
        scalar = [int(np.array([v]).astype(np.uint32)[0]) for v in probe]
        return scalar == [int(v) for v in np.array(probe).astype(np.int64).astype(np.uint32)]


def _target(output: np.ndarray, shape3, work) -> np.ndarray:
    """Where a kernel writes a result of ``shape3``: ``output`` itself (as 3-D) when it is
    C-contiguous in the work dtype, else a new work-dtype array."""
    if output.dtype == work and output.flags.c_contiguous and output.size == math.prod(shape3):
        return output.reshape(shape3)
    return np.empty(shape3, work)


# ---- The 1-D primitive ---------------------------------------------------------------------
def _run_lines(src3: np.ndarray, axis: int, weights: np.ndarray, out3: np.ndarray,
               index: np.ndarray, cval=0.0, work=None) -> int:
    """One pass along ``axis`` of a C-contiguous 3-D array into ``out3`` (C-contiguous,
    same shape), summed in ``work`` (default: the source's dtype): the source extended
    by ``index`` (:func:`_boundary.source_index`: the source position of each extended
    position, -1 for ``cval``, which the source's dtype must hold). Returns how many
    values fell outside an integer ``out3``'s range and were not stored."""
    work = src3.dtype if work is None else work
    w = readonly(np.ascontiguousarray(weights, work))
    lines = _lines(src3, axis)
    cval_row = readonly(np.full(max(1, lines.shape[2]), cval, np.float64).astype(src3.dtype))
    kernel = _pass_kernel(_parallel(out3, w.shape[0]), "lines", separable.correlate_lines,
                          separable.correlate_lines_serial, src3.dtype, work, out3.dtype)
    return kernel(readonly(lines), readonly(index), cval_row, w, separable.tap_plan(weights),
                  numpy_wraps(out3.dtype), _lines(out3, axis))


#: dtypes the 1-D pass kernels read and write as they are (converting each element).
_AS_IS = frozenset(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32,
                                         np.int32, np.uint64, np.int64, np.float32, np.float64))


@functools.lru_cache(maxsize=None)
def numpy_wraps(dtype: np.dtype) -> bool:
    """Whether numpy casts float64 values outside the range of the integer ``dtype``
    (within +-2^31) by truncating toward zero and wrapping modulo 2^bits, as the 1-D pass
    kernel can store them itself (``wrap``). x86-64 does (a 32-bit conversion); others
    may saturate. Probed once per dtype, on an array long enough for numpy's vector
    loops, against the int64 route, whose narrowing numpy defines as modular."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu" or dtype.itemsize > 4:
        return False
    probe = np.tile([-1.0, -5.5, -300.25, 255.9, 256.0, -129.0, 128.5, 65535.5, 65536.0,
                     70000.7, -70000.2, 1e6 + 0.5, -1e6 - 0.5, 2.0**31 - 1.5, -2.0**31 + 1.5], 67)
    with np.errstate(all="ignore"):
        return bool(np.array_equal(probe.astype(dtype), np.trunc(probe).astype(np.int64).astype(dtype)))


def _read_as_is(x: np.ndarray, weights: np.ndarray, output: np.ndarray, cval,
                wrap: bool = False) -> bool:
    """A pass can read ``x`` and write ``output`` without converted copies: both of
    :data:`_AS_IS` dtypes, ``cval`` exact in ``x``'s dtype (a tap outside reads it from a
    row of that dtype), and either an integer output's range holds every sum the weights
    can make of these values, or (``wrap``, for the correlation kernel) the kernel stores
    values outside it as numpy would (:func:`numpy_wraps`). Else the kernel would find
    values outside and the pass would run twice: derivative filters of unsigned volumes."""
    if x.dtype not in _AS_IS or output.dtype not in _AS_IS:
        return False
    with np.errstate(all="ignore"):
        if np.float64(cval).astype(x.dtype).astype(np.float64) != np.float64(cval):
            return False
    if output.dtype.kind == "f" or (wrap and numpy_wraps(output.dtype)):
        return True
    info = np.iinfo(output.dtype)
    positive, negative = float(weights[weights > 0].sum()), float(weights[weights < 0].sum())
    if negative == 0 and positive <= 1 and np.can_cast(x.dtype, output.dtype) and info.min <= cval <= info.max:
        return True  # averages of values the output holds
    low, high = min(float(x.min()), cval), max(float(x.max()), cval)
    slack = 1e-9 * (abs(low) + abs(high)) * (positive - negative)  # the sums' rounding
    return (info.min - 1 < positive * low + negative * high - slack
            and positive * high + negative * low + slack < info.max + 1)


def _parallel(out: np.ndarray, taps: int) -> bool:
    return out.size * taps >= separable.SERIAL_WORK


def _pass_kernel(parallel: bool, name: str, parallel_kernel, serial_kernel, data, work, out):
    """The 1-D pass kernel to run: the parallel one where it pays and is ready; else the
    serial one (the same sums, the same bits) while the parallel one compiles in the
    background (it takes twice as long: a first float32 ``gaussian_filter`` waited 5 s),
    for every combination of dtypes (``separable.declared``)."""
    if parallel and _dispatch.ready_or_started(separable.declared(name, data, work, out), work):
        return parallel_kernel
    return serial_kernel


def _halo(length: int, origin: int) -> tuple[int, int]:
    return length // 2 + origin, length - 1 - length // 2 - origin


def _finite(cval, *arrays) -> bool:
    """No NaN or Inf in ``cval`` (what the constant mode extends with) nor ``arrays``."""
    return bool(np.isfinite(cval)) and all_finite(arrays)


def _pass1d(inp, weights, axis, output, rule, cval, origin, running_mean=False, finite=None):
    """scipy's correlate1d (or uniform_filter1d with ``running_mean``) once validated:
    ``inp`` and ``output`` have the same shape; ``weights`` float64 (K,). ``finite``:
    for ``running_mean``, whether ``inp`` and ``cval`` hold no NaN or Inf (None: look)."""
    cval = S.check_cval(cval)
    if inp.size == 0:
        return output
    work = S.work_dtype(inp.dtype, output.dtype)
    x3 = _as3d(inp)
    axis3 = axis + 3 - inp.ndim
    index = source_index(x3.shape[axis3], *_halo(weights.shape[0], origin), rule)
    if running_mean and work != np.float64 and not (
            finite if finite is not None else _finite(cval, x3)):
        # scipy's running sum carries a NaN or Inf on along the line (Inf - Inf is NaN):
        # only the running mean gives its NaNs; float32 data otherwise takes the sums.
        work = np.dtype(np.float64)
    if running_mean and work == np.float64:
        # The input's dtype where it can be (the kernel converts each element), and the
        # output's; else work-dtype sums that _store casts as scipy does (a bool output
        # truncates, where the kernel's cast would test for nonzero).
        as_is = _read_as_is(x3, weights, output, cval)
        data = x3.dtype if as_is else work
        out3 = _target(output, x3.shape, output.dtype if as_is else work)
        src = np.ascontiguousarray(x3, data)
        if np.shares_memory(src, out3):  # in place (scipy's passes read their output)
            src = src.copy()
        lines = _lines(src, axis3)
        cval_row = readonly(np.full(max(1, lines.shape[2]), cval, np.float64).astype(data))
        kernel = _pass_kernel(_parallel(out3, 2), "running_mean", separable.running_mean_lines,
                              separable.running_mean_lines_serial, data, work, out3.dtype)
        kernel(readonly(lines), readonly(index), cval_row, weights.shape[0], _lines(out3, axis3))
    else:
        if _read_as_is(x3, weights, output, cval, wrap=True):
            src = np.ascontiguousarray(x3)
            out3 = _target(output, x3.shape, output.dtype)
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                src = np.ascontiguousarray(x3, work)
            out3 = _target(output, x3.shape, work)
        if np.shares_memory(src, out3):  # in place (scipy's passes read their output)
            src = src.copy()
        if _run_lines(src, axis3, weights, out3, index, cval, work):
            # Outside an integer output's range: numpy's cast (CPU-dependent there).
            out3 = np.empty(x3.shape, work)
            with np.errstate(invalid="ignore", over="ignore"):
                _run_lines(np.ascontiguousarray(src, work), axis3, weights, out3, index, cval)
    _store(out3, output)
    return output


# ---- The dense primitive and the algorithm choice -------------------------------------------
def _rank1_factors(w3: np.ndarray, integral: bool):
    """Three 1-D factors whose outer product is ``w3`` (float64, 3-D), or None.

    ``integral``: the factors must be integers reproducing ``w3`` exactly (then any
    summation order gives the same exact sums, so integer outputs truncate as scipy's).
    Otherwise each product must be within 2 eps of its weight, so that the result stays
    within the float rounding bound of the dense sum.
    """
    pivot_at = np.unravel_index(np.argmax(np.abs(w3)), w3.shape)
    pivot = w3[pivot_at]
    if pivot == 0 or not np.all(np.isfinite(w3)):
        return None
    lines = [w3[:, pivot_at[1], pivot_at[2]], w3[pivot_at[0], :, pivot_at[2]],
             w3[pivot_at[0], pivot_at[1], :]]
    if integral:
        if not np.all(w3 == np.round(w3)):
            return None
        factors = [line / math.gcd(*map(int, line)) for line in lines]
        scale = pivot / math.prod(f[i] for f, i in zip(factors, pivot_at))
        if scale != np.round(scale):
            return None
    else:
        factors = [line / line[i] for line, i in zip(lines, pivot_at)]
        scale = pivot
    # The scale goes on the longest factor, so that length-1 factors are exactly [1].
    longest = int(np.argmax(w3.shape))
    factors[longest] = factors[longest] * scale
    product = factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None, :]
    if integral:
        return factors if np.array_equal(product, w3) else None
    return factors if np.all(np.abs(product - w3) <= 2 * _DBL_EPSILON * np.abs(w3)) else None


def choose_algorithm(shape3, w3: np.ndarray, work, integer_exact: bool):
    """How :func:`correlate` computes: ``("separable", factors)`` for a rank-1 kernel,
    else ``("dense", None)`` (:func:`_dense`, on :func:`dense_algorithm`'s kernel).

    ``integer_exact``: the output is integer and the input integer, so a separable
    path must give scipy's exact sums (integral factors only).
    """
    if sum(k > 1 for k in w3.shape) >= 2:
        factors = _rank1_factors(w3, integral=integer_exact)
        if factors is not None:
            return "separable", factors
    return "dense", None


#: Taps from which a dense correlation with a float output goes through the FFT. A fixed
#: count, not conv3d's FLOP rule, so that the choice does not depend on the volume's size
#: (numbaconv.dask.ndimage's blocks take the path the whole volume takes). Measured
#: (float32, one channel, ms, FFT in blocks vs direct, Zen 4, 2026-12-05, each timed
#: back to back): 9^3 taps on 128^3 36 vs 29; 11^3 on 64^3 7.6 vs 7.3, on 128^3 36 vs
#: 53; 15^3 on 64^3 14 vs 19.
FFT_TAPS = 11 ** 3


def dense_algorithm(w3: np.ndarray, out_size: int, exact: bool) -> str:
    """The conv3d algorithm of a dense correlation: ``exact`` (integer outputs not
    checked by :func:`_resum_near_integers`) keeps to the direct sums, whose bits are
    the direct kernel's (taps in raster order from zero, as scipy's NI_Correlate), so
    that truncation agrees with scipy's but where a sum lies within rounding of an
    integer. Other outputs of large kernels take the FFT (``numbaconv.kernels.fft``:
    float64 transforms, error about 1e-15 of the largest output)."""
    if out_size * w3.size < separable.SERIAL_WORK:
        return "direct_serial"  # direct's bits without waking the thread pool
    if not exact and w3.size >= FFT_TAPS:
        return "fft"
    return "blocked"


def _sums_exact_in_any_order(w: np.ndarray, dtype: np.dtype, cval) -> bool:
    """Every partial sum of products of ``w`` (float64) with values of the integer
    ``dtype`` (or ``cval``) is exact in float64: the weights are multiples of 2^-8 and
    no sum reaches 2^45. Any summation order then gives scipy's sums, bit for bit."""
    scaled = w * 256.0
    if not np.all(np.isfinite(scaled)) or not np.array_equal(scaled, np.round(scaled)):
        return False
    info = np.iinfo(dtype)
    largest = max(abs(float(info.min)), float(info.max), abs(float(cval)))
    return largest * float(np.abs(w).sum()) < 2.0 ** 45


def _checks_truncation(x3: np.ndarray, w: np.ndarray, output: np.ndarray, cval) -> bool:
    """Whether a dense correlation's integer output is made exact to scipy's by
    :func:`_resum_near_integers`: integer data of up to 16 bits (whose values
    ``kernels.scipy_sums.flat_windows`` squares and sums exactly), finite weights whose
    sums are not exact in any order, and a kernel large enough for the FFT (whose
    rounding differs from scipy's more than the direct sums'). Those take the FFT."""
    return (output.dtype.kind in "iu" and x3.dtype.kind in "iu" and x3.dtype.itemsize <= 2
            and w.size >= FFT_TAPS and bool(np.all(np.isfinite(w)))
            and not _sums_exact_in_any_order(w, x3.dtype, cval))


#: The FFT's rounding: a float64 transform of N points errs by at most about
#: ``FFT_ERROR_CONSTANT * u * log2(N)`` of the 2-norm (Higham, Accuracy and Stability of
#: Numerical Algorithms, 24.1: about 6u per radix-2 stage with accurate twiddles; 16 leaves
#: room for pocketfft's other radices and real transforms). Measured on the tests' cases,
#: the actual error stays below 1/100 of the bound it gives.
FFT_ERROR_CONSTANT = 16


def _truncation_bound(ext: np.ndarray, w: np.ndarray, algorithm: str) -> float:
    """How far a sum that ``algorithm`` computes over ``ext`` (the extended input,
    float64) with ``w`` may lie from scipy's sum of the same products: scipy's rounding
    (``gamma_T * max|x| * ||w||_1``) plus the method's. The direct sums round as scipy's
    do, in another order. The FFT's result errs by at most ``(3 eps + u) ||x||_2 ||w||_1``
    (two forward transforms, the products, one inverse, each transform within ``eps =
    FFT_ERROR_CONSTANT u log2 N`` of the 2-norm, the weights' spectrum also element by
    element within ``eps ||w||_1``), with ``N`` at most the padded volume."""
    u = _DBL_EPSILON / 2
    taps = int(np.count_nonzero(w))
    l1 = float(np.abs(w).sum())
    largest = max(abs(float(ext.min())), abs(float(ext.max())))
    scipy_error = taps * u / (1 - taps * u) * largest * l1
    if algorithm != "fft":
        return 2 * scipy_error
    flat = ext.reshape(-1)
    eps = FFT_ERROR_CONSTANT * u * math.log2(ext.size + w.size)
    return scipy_error + (3 * eps + u) * math.sqrt(float(np.dot(flat, flat))) * l1


def _resum_near_integers(ext: np.ndarray, w: np.ndarray, result: np.ndarray,
                         algorithm: str) -> None:
    """``result`` (D, H, W) float64, the correlation of ``ext`` with ``w`` (both float64)
    that ``algorithm`` computed: every value within :func:`_truncation_bound` of an
    integer is summed again as scipy sums it (``kernels.scipy_sums``). Every other value
    truncates as scipy's sum does, since no integer lies between them; so all of them
    do, and an integer output is scipy's, bit for bit."""
    from ..kernels import scipy_sums
    bound = _truncation_bound(ext, w, algorithm)
    if scipy_sums.count_near_integers(result, bound) == 0:
        return
    flat = np.zeros(result.shape, np.bool_)
    if w.size ** 2 * FLAT_SENTINEL ** 2 < 2 ** 62:
        scipy_sums.flat_windows(readonly(ext), readonly(np.array(w.shape, np.int64)),
                                float(FLAT_SENTINEL), flat)
    kept = np.abs(w) > 0  # scipy's taps: weights within DBL_EPSILON of zero are zeroed
    offsets = readonly(np.ascontiguousarray(np.argwhere(kept), np.int64))
    scipy_sums.resum_near_integers(readonly(ext), offsets, readonly(w[kept]), readonly(flat),
                                   result, bound)


#: Above every value of the integer dtypes that :func:`_checks_truncation` takes: the
#: level ``kernels.scipy_sums.flat_windows`` gives a non-integral ``cval``.
FLAT_SENTINEL = 1 << 17


#: Bytes of the extended slab a dense correlation works on at a time (the direct
#: kernels; the FFT path cuts its own blocks). An extended copy of a 256^3 volume (70 MB
#: in float32, 140 MB in float64 for integer data) was fresh memory on every call, and
#: where the OS had taken freed pages back that cost more than the correlation: 256^3 with
#: a 5^3 kernel, 86-93 ms back to back but 230-400 ms after the process idled 2 s. In
#: slabs of 8 MB (reused from glibc's heap; 16 MB ones were handed back and faulted in
#: again, 12 MB per call): 83-91 ms back to back, 84-205 ms after idling.
SLAB_BYTES = 8 << 20


def _dense(x3, w3, halos, rule, cval, work, output3, exact: bool) -> None:
    """``output3`` (``x3``'s shape, any dtype and layout) = the valid cross-correlation
    of ``x3`` extended by ``halos`` (``rule``, ``cval``) with ``w3``, on numbaconv's
    forward conv3d (:func:`dense_algorithm`'s choice, made once for the whole volume),
    slab by slab along axis 0. Each slab is extended through the three axes' index maps
    in one parallel pass (``separable.extend_volume``), and the sums go straight into
    ``output3`` where it has the work dtype, else are cast into it in parallel. Every
    output's sum is the same whatever the slab (the direct kernels' taps in a fixed
    order)."""
    from ..functional import correlate_into
    # scipy leaves out weights within DBL_EPSILON of zero; a zero weight adds exactly 0.
    w = np.where(np.abs(w3) > _DBL_EPSILON, w3, 0.0).astype(work)
    resum = _checks_truncation(x3, w, output3, cval)
    local = exact and not resum
    if not local and w.size >= FFT_TAPS and not _finite(cval, x3, w):
        # The FFT would spread a NaN or Inf over every output (its transform mixes them),
        # where scipy's sums keep it to the windows that read it.
        local = True
    algorithm = dense_algorithm(w, x3.size, local)
    depth, height, width = x3.shape
    (before, after), (top, bottom), (left, right) = halos
    ext_plane = (height + top + bottom, width + left + right)
    whole = algorithm == "fft" or resum
    slab = depth if whole else \
        max(1, SLAB_BYTES // (math.prod(ext_plane) * np.dtype(work).itemsize) - (before + after))
    threads = numba.get_num_threads()
    if not whole and slab > threads:
        # Whole multiples of the thread count, so that each slab's depths split evenly
        # between the threads (256^3 float64 5^3: 11-depth slabs 87-88 ms, 10 or 12 80-82).
        slab -= slab % threads
    if x3.dtype not in _AS_IS:
        x3 = x3.astype(work)  # read as it is: the extension kernel converts each element
    src = np.ascontiguousarray(x3)
    if slab < depth and np.shares_memory(src, output3):
        src = src.copy()  # in place: later slabs read planes that earlier ones overwrite
    src = readonly(src)
    rows = readonly(source_index(depth, before, after, rule))
    cols = readonly(source_index(height, top, bottom, rule))
    lanes = readonly(source_index(width, left, right, rule))
    cval_row = readonly(np.full(1, cval, np.float64).astype(work))
    w5 = w.reshape((1, 1) + w.shape)
    slab = min(slab, depth)
    ext_slab = np.empty((slab + before + after,) + ext_plane, work)
    sums_slab = None
    for start in range(0, depth, slab):
        stop = min(depth, start + slab)
        ext = ext_slab[:stop - start + before + after]
        separable.extend_volume(src, rows[start:stop + before + after], cols, lanes, left,
                                cval_row, ext)
        target = output3[start:stop]
        if resum:
            into = None
        elif target.flags.c_contiguous and target.dtype == work:
            into = target.reshape((1, 1) + target.shape)
        else:
            if sums_slab is None:
                sums_slab = np.empty((slab,) + target.shape[1:], work)
            into = sums_slab[:stop - start].reshape((1, 1, stop - start) + target.shape[1:])
        result = correlate_into(into, ext.reshape((1, 1) + ext.shape), w5, algorithm)
        result = result.reshape(target.shape)
        if resum:  # one slab
            _resum_near_integers(ext, w, result, algorithm)
        if result is target or np.shares_memory(result, target):
            continue  # written in place
        if (target.flags.c_contiguous and target.dtype in _AS_IS and target.dtype != work
                and width and not separable.store_rows(readonly(result.reshape(-1, width)),
                                             numpy_wraps(target.dtype), target.reshape(-1, width))):
            continue
        _store(result, target)


# ---- correlate and convolve --------------------------------------------------------------------
def _expand_to_input(ndim, axes, weights, origin):
    """scipy's _expand_footprint/_expand_origin: weights and origins for every input axis."""
    num_axes = len(axes)
    origins = S.normalize_sequence(origin, num_axes, "origin")
    if num_axes < ndim:
        if weights.ndim != num_axes:
            raise RuntimeError(f"weights.ndim ({weights.ndim}) must match len(axes) ({num_axes})")
        weights = np.expand_dims(weights, tuple(ax for ax in range(ndim) if ax not in axes))
        full = [0] * ndim
        for o, ax in zip(origins, axes):
            full[ax] = o
        origins = full
    return weights, origins


def _correlate_or_convolve(inp, weights, output, mode, cval, origin, convolution, axes):
    inp = _as_input(inp)
    S.reject_complex(weights)
    axes = S.check_axes(axes, inp.ndim)
    weights = S.as_float64_weights(weights)
    weights, origins = _expand_to_input(inp.ndim, axes, weights, origin)
    wshape = [k for k in weights.shape if k > 0]
    if len(wshape) != inp.ndim:
        raise RuntimeError(f"weights.ndim ({len(wshape)}) must match len(axes) ({len(axes)})")
    if convolution:
        weights = weights[(slice(None, None, -1),) * weights.ndim]
        origins = [-o - (0 if k & 1 else 1) for o, k in zip(origins, weights.shape)]
    origins = [S.check_origin(o, k, "origin") for o, k in zip(origins, wshape)]
    output = S.get_output(output, inp)
    if not isinstance(mode, str) and isinstance(mode, Iterable):
        raise RuntimeError("A sequence of modes is not supported: mode must be one string")
    rule = S.rule(mode)
    cval = S.check_cval(cval)
    if inp.size == 0:
        return output
    work = S.work_dtype(inp.dtype, output.dtype)
    x3, w3 = _as3d(inp), _as3d(weights)
    origins3 = [0] * (3 - inp.ndim) + origins
    halos = [_halo(k, o) for k, o in zip(w3.shape, origins3)]
    integer_exact = output.dtype.kind in "biu" and inp.dtype.kind in "biu"
    algorithm, factors = choose_algorithm(x3.shape, w3, work, integer_exact)
    if algorithm == "dense":
        _dense(x3, w3, halos, rule, cval, work, _as3d(output), exact=output.dtype.kind in "biu")
        return output
    # Separable: 1-D passes over the extended volume.
    ext = extend(x3, halos, [rule] * 3, cval, work)
    passes = [axis for axis in range(3) if not np.array_equal(factors[axis], [1.0])]
    for i, axis in enumerate(passes):
        shape = list(ext.shape)
        shape[axis] = x3.shape[axis]
        last = i == len(passes) - 1
        target = _target(output, shape, work) if last else np.empty(shape, work)
        _run_lines(ext, axis, factors[axis], target, np.arange(ext.shape[axis]))
        ext = target
    _store(ext, output)
    return output


def correlate(input, weights, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    """scipy.ndimage.correlate for 1-D to 3-D real arrays: ``output[i] = sum_j
    weights[j] * input[i + j - weights.shape // 2 - origin]``, extended by ``mode``.

    input: (n,), (h, w) or (d, h, w) of any real dtype; weights: as many dims as
    ``axes`` (default all). Returns ``output`` (an array of input's shape, or a new one
    of the given dtype, or of input's dtype)."""
    return _correlate_or_convolve(input, weights, output, mode, cval, origin, False, axes)


def convolve(input, weights, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    """scipy.ndimage.convolve: :func:`correlate` with the weights flipped on every axis
    (and scipy's origin shift for even lengths)."""
    return _correlate_or_convolve(input, weights, output, mode, cval, origin, True, axes)


# ---- The 1-D filters ------------------------------------------------------------------------------
def correlate1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    """scipy.ndimage.correlate1d: correlation with ``weights`` (K,) along ``axis`` of a
    1-D to 3-D real array; result in ``output`` (array, dtype, or input's dtype)."""
    inp = _as_input(input)
    S.reject_complex(weights)
    output = S.get_output(output, inp)
    weights = S.as_float64_weights(weights)
    if weights.ndim != 1 or weights.shape[0] < 1:
        raise RuntimeError(f"no filter weights given: weights must be 1-D and non-empty, "
                           f"got shape {weights.shape}")
    axis = S.axis_index(axis, inp.ndim)
    origin = S.check_origin(origin, weights.shape[0])
    return _pass1d(inp, weights, axis, output, S.rule(mode), cval, origin)


def convolve1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    """scipy.ndimage.convolve1d: :func:`correlate1d` with the weights reversed."""
    weights = np.asarray(weights)[::-1]
    origin = -origin
    if not weights.shape[0] & 1:
        origin -= 1
    return correlate1d(input, weights, axis, output, mode, cval, origin)


def _gaussian_kernel1d(sigma, order, radius):
    """scipy's 1-D Gaussian (derivative) kernel, computed by the same float64 operations
    so that the weights have the same bits."""
    if order < 0:
        raise ValueError(f"order must be non-negative, got order={order}")
    exponent_range = np.arange(order + 1)
    sigma2 = sigma * sigma
    x = np.arange(-radius, radius + 1)
    phi_x = np.exp(-0.5 / sigma2 * x ** 2)
    phi_x = phi_x / phi_x.sum()
    if order == 0:
        return phi_x
    # The kernel is q(x) * phi(x), q a polynomial: each derivative maps q to q' + q p'.
    q = np.zeros(order + 1)
    q[0] = 1
    derivative = np.diag(exponent_range[1:], 1) + np.diag(np.ones(order) / -sigma2, -1)
    for _ in range(order):
        q = derivative.dot(q)
    q = (x[:, None] ** exponent_range).dot(q)
    return q * phi_x


def gaussian_filter1d(input, sigma, axis=-1, order=0, output=None, mode="reflect", cval=0.0,
                      truncate=4.0, *, radius=None):
    """scipy.ndimage.gaussian_filter1d: correlation with the (reversed) Gaussian of
    ``sigma`` (order-th derivative), radius ``int(truncate * sigma + 0.5)`` or ``radius``."""
    sd = float(sigma)
    lw = int(truncate * sd + 0.5)
    if radius is not None:
        lw = radius
    if not isinstance(lw, numbers.Integral) or lw < 0:
        raise ValueError(f"Radius must be a nonnegative integer, got radius={lw!r} "
                         f"(sigma={sigma!r}, truncate={truncate!r})")
    weights = _gaussian_kernel1d(sigma, order, lw)[::-1]
    return correlate1d(input, weights, axis, output, mode, cval, 0)


def uniform_filter1d(input, size, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    """scipy.ndimage.uniform_filter1d: the mean of ``size`` neighbours along ``axis``
    (scipy's running sum, operation for operation, in float64)."""
    return _uniform_filter1d(input, size, axis, output, mode, cval, origin)


def _uniform_filter1d(input, size, axis, output, mode, cval, origin, finite=None):
    inp = _as_input(input)
    axis = S.axis_index(axis, inp.ndim)
    size = S.check_size(size)
    output = S.get_output(output, inp)
    if size // 2 + origin < 0 or size // 2 + origin >= size:
        raise ValueError(f"invalid origin: origin={origin} for size={size}")
    weights = np.full(size, 1.0 / size)
    return _pass1d(inp, weights, axis, output, S.rule(mode), cval, operator.index(origin),
                   running_mean=True, finite=finite)


# ---- Compositions (scipy's sequences of passes and intermediate dtypes) ------------------------
def _chain(inp, output, passes):
    """Run ``passes`` (each ``pass_(source, target)``) one after another, every one
    reading the previous one's result, as scipy's filters do through ``output``. Two
    buffers of the output dtype (``output`` and one more) alternate so that no pass reads
    the array it writes (which would cost a copy per pass), ending in ``output``."""
    if not passes:
        output[...] = inp[...]
        return output
    if output.dtype == np.bool_:
        # scipy's bool is an unsigned char: each pass stores its sums truncated into bytes
        # (0.3 -> 0, 2.7 -> 2) and the next reads those bytes back, as a uint8 array's.
        _chain(inp, output.view(np.uint8), passes)
        return output
    spare = np.empty_like(output) if len(passes) > 1 else output
    targets = [output, spare] if len(passes) % 2 else [spare, output]
    source = inp
    for i, pass_ in enumerate(passes):
        target = targets[i % 2]
        pass_(source, target)
        source = target
    return output


def gaussian_filter(input, sigma, order=0, output=None, mode="reflect", cval=0.0, truncate=4.0,
                    *, radius=None, axes=None):
    """scipy.ndimage.gaussian_filter: one gaussian_filter1d per axis (sigma > 1e-15),
    each written into ``output`` and read back from it (so integer outputs truncate
    between passes, as scipy's)."""
    inp = _as_input(input)
    output = S.get_output(output, inp)
    axes = S.check_axes(axes, inp.ndim)
    n = len(axes)
    orders = S.normalize_sequence(order, n, "order")
    sigmas = S.normalize_sequence(sigma, n, "sigma")
    modes = S.normalize_sequence(mode, n, "mode")
    radii = S.normalize_sequence(radius, n, "radius")
    passes = [functools.partial(_gaussian_pass, axis=axes[i], sigma=sigmas[i], order=orders[i],
                                mode=modes[i], radius=radii[i], cval=cval, truncate=truncate)
              for i in range(n) if sigmas[i] > 1e-15]
    return _chain(inp, output, passes)


def _gaussian_pass(source, target, axis, sigma, order, mode, radius, cval, truncate):
    gaussian_filter1d(source, sigma, axis, order, target, mode, cval, truncate, radius=radius)


def uniform_filter(input, size=3, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    """scipy.ndimage.uniform_filter: one uniform_filter1d per axis of size > 1, each
    written into ``output`` and read back from it."""
    inp = _as_input(input)
    output = S.get_output(output, inp)
    axes = S.check_axes(axes, inp.ndim)
    n = len(axes)
    sizes = S.normalize_sequence(size, n, "size")
    origins = S.normalize_sequence(origin, n, "origin")
    modes = S.normalize_sequence(mode, n, "mode")
    # Looked at once: the means of finite values are finite, so every pass of finite
    # data is (float32 data takes the running mean only where it is not).
    finite = None if S.work_dtype(inp.dtype, output.dtype) == np.float64 else \
        _finite(S.check_cval(cval), inp)
    passes = [functools.partial(_uniform_pass, axis=axes[i], size=int(sizes[i]),
                                origin=origins[i], mode=modes[i], cval=cval, finite=finite)
              for i in range(n) if sizes[i] > 1]
    return _chain(inp, output, passes)


def _uniform_pass(source, target, axis, size, origin, mode, cval, finite):
    _uniform_filter1d(source, size, axis, target, mode, cval, origin, finite)


def _derivative_then_smooth(input, axis, output, mode, cval, smooth):
    """scipy's sobel/prewitt: [-1, 0, 1] along ``axis`` into ``output``, then ``smooth``
    along every other axis in place."""
    inp = _as_input(input)
    axis = S.axis_index(axis, inp.ndim)
    output = S.get_output(output, inp)
    modes = S.normalize_sequence(mode, inp.ndim, "mode")
    passes = [functools.partial(_correlate_pass, weights=[-1, 0, 1], axis=axis,
                                mode=modes[axis], cval=cval)]
    passes += [functools.partial(_correlate_pass, weights=smooth, axis=other, mode=modes[other],
                                 cval=cval) for other in range(inp.ndim) if other != axis]
    return _chain(inp, output, passes)


def _correlate_pass(source, target, weights, axis, mode, cval):
    correlate1d(source, weights, axis, target, mode, cval, 0)


def sobel(input, axis=-1, output=None, mode="reflect", cval=0.0):
    """scipy.ndimage.sobel: derivative along ``axis``, [1, 2, 1] smoothing along the others."""
    return _derivative_then_smooth(input, axis, output, mode, cval, [1, 2, 1])


def prewitt(input, axis=-1, output=None, mode="reflect", cval=0.0):
    """scipy.ndimage.prewitt: derivative along ``axis``, [1, 1, 1] smoothing along the others."""
    return _derivative_then_smooth(input, axis, output, mode, cval, [1, 1, 1])


def _generic_laplace(inp, derivative2, output, mode, cval, axes, extra=()):
    """scipy's generic_laplace: the first axis' derivative into ``output``, the others
    computed into new arrays of the output dtype and added in that dtype."""
    output = S.get_output(output, inp)
    axes = S.check_axes(axes, inp.ndim)
    if not axes:
        output[...] = inp[...]
        return output
    modes = S.normalize_sequence(mode, len(axes), "mode")
    derivative2(inp, axes[0], output, modes[0], cval, *extra)
    for i in range(1, len(axes)):
        output += derivative2(inp, axes[i], output.dtype, modes[i], cval, *extra)
    return output


def laplace(input, output=None, mode="reflect", cval=0.0, *, axes=None):
    """scipy.ndimage.laplace: the sum over ``axes`` of [1, -2, 1] along each."""
    def derivative2(inp, axis, out, m, c):
        return correlate1d(inp, [1, -2, 1], axis, out, m, c, 0)
    return _generic_laplace(_as_input(input), derivative2, output, mode, cval, axes)


def gaussian_laplace(input, sigma, output=None, mode="reflect", cval=0.0, *, axes=None, **kwargs):
    """scipy.ndimage.gaussian_laplace: the sum over ``axes`` of gaussian_filter with
    order 2 on that axis (``kwargs``: truncate, radius)."""
    inp = _as_input(input)

    def derivative2(x, axis, out, m, c, sigmas):
        order = [0] * x.ndim
        order[axis] = 2
        return gaussian_filter(x, sigmas, order, out, m, c, **kwargs)

    checked = S.check_axes(axes, inp.ndim)
    sigmas = S.normalize_sequence(sigma, len(checked), "sigma")
    if len(checked) < inp.ndim:
        full = [0] * inp.ndim
        for s, ax in zip(sigmas, checked):
            full[ax] = s
        sigmas = full
    return _generic_laplace(inp, derivative2, output, mode, cval, checked, (sigmas,))


def gaussian_gradient_magnitude(input, sigma, output=None, mode="reflect", cval=0.0, *,
                                axes=None, **kwargs):
    """scipy.ndimage.gaussian_gradient_magnitude: sqrt of the sum over ``axes`` of the
    squared first-order Gaussian derivatives, squared and summed in the output dtype."""
    inp = _as_input(input)

    def derivative(x, axis, out, m, c):
        order = [0] * x.ndim
        order[axis] = 1
        return gaussian_filter(x, sigma, order, out, m, c, **kwargs)

    output = S.get_output(output, inp)
    axes = S.check_axes(axes, inp.ndim)
    if not axes:
        output[...] = inp[...]
        return output
    modes = S.normalize_sequence(mode, len(axes), "mode")
    derivative(inp, axes[0], output, modes[0], cval)
    np.multiply(output, output, output)
    for i in range(1, len(axes)):
        tmp = derivative(inp, axes[i], output.dtype, modes[i], cval)
        np.multiply(tmp, tmp, tmp)
        output += tmp
    np.sqrt(output, output, casting="unsafe")
    return output
