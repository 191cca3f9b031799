"""numbaconv.ndimage against scipy.ndimage (the oracle), for every function, boundary
mode and dtype, with origins, axes, ``output`` as array and dtype, 1-D to 3-D arrays
including axes shorter than the kernel.

Tolerances. Float outputs: ``(taps + 2) * eps * magnitude``, the worst-case rounding of
any summation order of ``taps`` products, where ``magnitude`` is ``sum |w| * |x|`` per
element (scipy's own filter of ``|x|`` by ``|w|``) for single passes, and ``max|x|`` times
the L1 norm of the composed kernel for multi-pass filters (whose float32 intermediates
round in scipy and here, hence a factor 2). eps is float32's when the output or the work
is float32, float64's otherwise. Integer outputs: equal, except the dense correlate (see
:func:`assert_dense_integer`).
"""
import math

import numba
import numpy as np
import pytest
import scipy.ndimage as sn
from hypothesis import given, settings, strategies as st

import numbaconv.ndimage as nn
from helpers import python_env, run_script
from numbaconv.ndimage._filters import _gaussian_kernel1d

MODES = ["reflect", "constant", "nearest", "mirror", "wrap", "grid-constant", "grid-mirror",
         "grid-wrap"]
DTYPES = ["uint8", "uint16", "int16", "int32", "float32", "float64"]
#: Odd shapes, and axes shorter than the kernels (1 and 2).
SHAPES = [(7,), (2,), (5, 3), (1, 6), (4, 5, 7), (3, 1, 2)]
CVAL = 1.5
HYPOTHESIS = settings(max_examples=40, derandomize=True, deadline=None, database=None)


def sample(shape, dtype, seed=0):
    """Values spanning the dtype's useful range (negatives for signed types)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 50).astype(dtype)
    hi = min(np.iinfo(dtype).max, 1000)
    lo = 0 if dtype.kind == "u" else -hi
    return rng.integers(lo, hi, shape, endpoint=True).astype(dtype)


def eps_for(inp_dtype, out_dtype):
    f32 = np.dtype(np.float32)
    low = np.dtype(out_dtype) == f32 or np.dtype(inp_dtype) == f32
    return float(np.finfo(np.float32 if low else np.float64).eps)


def assert_close(got, expected, bound):
    assert got.shape == expected.shape and got.dtype == expected.dtype
    if got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, expected)
        return
    err = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    bound = bound + np.finfo(np.float64).tiny
    assert np.all(err <= bound), f"max excess {np.max(err - bound)} (max err {err.max()})"


def single_pass_bound(fn, x, w, eps, **kw):
    """(taps + 2) * eps * sum|w||x| per element, from scipy's own filter of |x| by |w|."""
    kw = dict(kw, cval=abs(kw.get("cval", 0.0)))
    magnitude = fn(np.abs(x.astype(np.float64)), np.abs(np.asarray(w, np.float64)), **kw)
    return (np.asarray(w).size + 2) * eps * magnitude


# ---- The composed filters: (name, args, passes' taps, composed kernel's L1 norm) -------------
def gauss_l1(sigma, order, truncate=4.0):
    radius = int(truncate * sigma + 0.5)
    return np.abs(_gaussian_kernel1d(sigma, order, radius)).sum(), 2 * radius + 1


def composed(name, ndim):
    """(args, kwargs, taps summed over passes, L1 norm of the composed kernel)."""
    if name == "gaussian_filter":
        l1, taps = gauss_l1(1.2, 0)
        return (1.2,), {}, taps * ndim, l1 ** ndim
    if name == "gaussian_filter_order":
        l1d, taps = gauss_l1(0.8, 1)
        l10, _ = gauss_l1(0.8, 0)
        return (0.8,), {"order": [1] + [0] * (ndim - 1)}, taps * ndim, l1d * l10 ** (ndim - 1)
    if name == "uniform_filter":
        return (3,), {"origin": 1}, 3 * ndim, 1.0
    if name in ("sobel", "prewitt"):
        side = 4 if name == "sobel" else 3
        return (0,), {}, 3 * ndim, 2 * side ** (ndim - 1)
    if name == "laplace":
        return (), {}, 3 * ndim + ndim, 4.0 * ndim
    l12, taps = gauss_l1(1.0, 2)
    l11, _ = gauss_l1(1.0, 1)
    l10, _ = gauss_l1(1.0, 0)
    if name == "gaussian_laplace":
        return (1.0,), {}, taps * ndim * ndim + ndim, ndim * l12 * l10 ** (ndim - 1)
    assert name == "gaussian_gradient_magnitude"
    return (1.0,), {}, taps * ndim * ndim + 2 * ndim, ndim * l11 * l10 ** (ndim - 1)


COMPOSED = ["gaussian_filter", "gaussian_filter_order", "uniform_filter", "sobel", "prewitt",
            "laplace", "gaussian_laplace", "gaussian_gradient_magnitude"]


@pytest.mark.parametrize("name", COMPOSED)
@pytest.mark.parametrize("dtype", DTYPES)
def test_composed_filters_match_scipy(name, dtype):
    function = name.replace("_order", "")
    for shape in SHAPES:
        x = sample(shape, dtype)
        args, kwargs, taps, l1 = composed(name, x.ndim)
        for mode in MODES:
            kw = dict(kwargs, mode=mode, cval=CVAL)
            expected = getattr(sn, function)(x, *args, **kw)
            got = getattr(nn, function)(x, *args, **kw)
            xmax = max(float(np.abs(x.astype(np.float64)).max()), CVAL)
            bound = 2 * (taps + 2) * eps_for(dtype, dtype) * xmax * l1
            assert_close(got, expected, bound)


@pytest.mark.parametrize("name", ["gaussian_filter", "uniform_filter", "sobel", "laplace",
                                  "gaussian_gradient_magnitude"])
@pytest.mark.parametrize("out_dtype", ["uint8", "int16", "float32", "float64"])
def test_output_as_array_and_dtype(name, out_dtype):
    """Mixed input/output dtypes; ``output`` given as a dtype and as a (strided) array."""
    x = sample((5, 6, 7), "uint16" if out_dtype == "float32" else "float32")
    args, kwargs, taps, l1 = composed(name, 3)
    expected = getattr(sn, name)(x, *args, output=out_dtype, **kwargs)
    got = getattr(nn, name)(x, *args, output=np.dtype(out_dtype), **kwargs)
    bound = 2 * (taps + 2) * eps_for(x.dtype, out_dtype) * float(np.abs(x).max()) * l1
    assert_close(got, expected, bound)
    backing = np.zeros((5, 6, 14), out_dtype)
    out = backing[:, :, ::2]
    returned = getattr(nn, name)(x, *args, output=out, **kwargs)
    assert returned is out
    assert_close(out.copy(), expected, bound)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_d_filters_match_scipy(dtype):
    weights = [[0.5, -1.25, 2.0], [1.0, 3.0], [0.2, 0.3, 0.1, 0.25, 0.15], [2.0]]
    for shape in SHAPES:
        x = sample(shape, dtype, seed=1)
        for axis in range(-x.ndim, x.ndim):
            for mode in MODES:
                for w in weights:
                    for origin in sorted({0, -(len(w) // 2), (len(w) - 1) // 2}):
                        kw = dict(axis=axis, mode=mode, cval=CVAL, origin=origin)
                        for fn in ("correlate1d", "convolve1d"):
                            expected = getattr(sn, fn)(x, w, **kw)
                            got = getattr(nn, fn)(x, w, **kw)
                            bound = single_pass_bound(
                                getattr(sn, fn), x, w, eps_for(dtype, dtype), **kw)
                            assert_close(got, expected, bound)
                size = 4
                for origin in (-2, 0, 1):
                    kw = dict(axis=axis, mode=mode, cval=CVAL, origin=origin)
                    expected = sn.uniform_filter1d(x, size, **kw)
                    got = nn.uniform_filter1d(x, size, **kw)
                    bound = single_pass_bound(
                        lambda a, w, **k: sn.uniform_filter1d(a, size, **k), x, np.ones(size) / size,
                        eps_for(dtype, dtype), **kw)
                    assert_close(got, expected, bound)
                for kw in (dict(order=0), dict(order=2, truncate=2.0), dict(radius=1)):
                    expected = sn.gaussian_filter1d(x, 1.3, axis, mode=mode, cval=CVAL, **kw)
                    got = nn.gaussian_filter1d(x, 1.3, axis, mode=mode, cval=CVAL, **kw)
                    # The same pass as correlate1d with scipy's (reversed) Gaussian taps.
                    radius = kw.get("radius", int(kw.get("truncate", 4.0) * 1.3 + 0.5))
                    taps = _gaussian_kernel1d(1.3, kw.get("order", 0), radius)[::-1]
                    bound = single_pass_bound(sn.correlate1d, x, taps, eps_for(dtype, dtype),
                                              axis=axis, mode=mode, cval=CVAL)
                    assert_close(got, expected, bound if dtype == "float32" else 0.0)


@pytest.mark.parametrize("dtype", ["uint16", "float32", "float64"])
def test_one_d_passes_over_many_runs_and_chunks(dtype):
    """Axes longer than a work item's run of rows (``separable.RUN``, with a short last
    run) and rows wider than a chunk (``separable.CHUNK``, three chunks here), so that
    items start and end mid-axis: every pass as scipy's."""
    from numbaconv.kernels import separable
    shape = (2 * separable.RUN + 5, separable.RUN + 3, 2 * separable.CHUNK + 17)
    x = sample(shape, dtype, seed=4)
    w = [0.2, 0.3, -0.1, 0.25, 0.15, 0.05, 0.4]
    for axis in range(3):
        for mode in ("reflect", "constant", "wrap"):
            kw = dict(axis=axis, mode=mode, cval=CVAL, origin=1)
            bound = single_pass_bound(sn.correlate1d, x, w, eps_for(dtype, dtype), **kw)
            assert_close(nn.correlate1d(x, w, **kw), sn.correlate1d(x, w, **kw), bound)
            kw = dict(axis=axis, mode=mode, cval=3)
            for size in (5, 20):
                bound = single_pass_bound(lambda a, v, **k: sn.uniform_filter1d(a, size, **k),
                                          x, np.ones(size) / size, eps_for(dtype, dtype), **kw)
                assert_close(nn.uniform_filter1d(x, size, **kw),
                             sn.uniform_filter1d(x, size, **kw), bound)
    assert_close(nn.gaussian_filter(x, 2.0), sn.gaussian_filter(x, 2.0),
                 0.0 if dtype != "float32" else 40 * eps_for(dtype, dtype) * np.abs(x).max())


def assert_dense_integer(got, x, w, fn="correlate", **kw):
    """Integer outputs of the dense correlate equal scipy's, except by one where scipy's
    float64 sum is within rounding of an integer: numbaconv's direct kernel fuses each
    multiply-add (FMA, ``fastmath={"contract"}``), scipy's C code rounds the product
    first, so sums that are exactly integral in real arithmetic can land on either side
    of the integer, and the truncation toward zero differs by one."""
    expected = getattr(sn, fn)(x, w, output=got.dtype, **kw)
    exact = getattr(sn, fn)(x, w, output=np.float64, **kw)
    near_integer = np.abs(exact - np.round(exact)) <= single_pass_bound(
        getattr(sn, fn), x, w, np.finfo(np.float64).eps, **kw)
    diff = got.astype(np.int64) - expected.astype(np.int64)
    wrap = 2 ** (8 * got.dtype.itemsize)
    diff = np.where(np.abs(diff) > wrap // 2, diff - np.sign(diff) * wrap, diff)
    assert np.all((diff == 0) | ((np.abs(diff) == 1) & near_integer))


DENSE_WEIGHTS = {
    "random": lambda nd: np.random.default_rng(3).uniform(-1, 1, (3, 2, 4)[:nd]),
    "box": lambda nd: np.full((3,) * nd, 1.0 / 3 ** nd),
    "sobel": lambda nd: np.multiply.outer(np.array([-1.0, 0, 1]), np.ones((1,) * (nd - 1))
                                          * np.array([1.0, 2, 1]) ** (nd > 1)) if nd > 1
    else np.array([-1.0, 0, 1]),
}


def reflect_reads_outside(mode, w_shape, origins, shape):
    """scipy's dense reflect reads outside the array for halos >= 4n (see _boundary)."""
    if mode not in ("reflect", "grid-mirror"):
        return False
    return any(max(k // 2 + o, k - 1 - k // 2 - o) >= 4 * n
               for k, o, n in zip(w_shape, origins, shape))


@pytest.mark.parametrize("kind", list(DENSE_WEIGHTS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_correlate_convolve_match_scipy(kind, dtype):
    for shape in SHAPES:
        x = sample(shape, dtype, seed=2)
        w = DENSE_WEIGHTS[kind](x.ndim)
        origins = [min(1, (k - 1) // 2) for k in w.shape]
        for mode in MODES:
            for origin in (0, origins):
                o = origin if origin else [0] * x.ndim
                if reflect_reads_outside(mode, w.shape, o, x.shape):
                    continue
                kw = dict(mode=mode, cval=CVAL, origin=origin)
                for fn in ("correlate", "convolve"):
                    got = getattr(nn, fn)(x, w, **kw)
                    if got.dtype.kind in "iu":
                        assert_dense_integer(got, x, w, fn, **kw)
                        continue
                    expected = getattr(sn, fn)(x, w, **kw)
                    bound = single_pass_bound(getattr(sn, fn), x, w, eps_for(dtype, dtype), **kw)
                    assert_close(got, expected, bound)


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32", "float64"])
def test_dense_correlate_in_slabs(monkeypatch, dtype):
    """Volumes larger than ``SLAB_BYTES`` are correlated slab by slab along axis 0, each
    slab's halo planes through the axis's index map: the same bits as in one slab, and
    scipy's result, on every mode, with slabs of one plane and of a few."""
    from numbaconv.ndimage import _filters
    x = sample((11, 5, 6), dtype, seed=5)
    w = DENSE_WEIGHTS["random"](3)
    for mode in MODES:
        for origin in (0, (1, 0, -1)):
            kw = dict(mode=mode, cval=CVAL if dtype.startswith("float") else 3, origin=origin)
            whole = nn.correlate(x, w, **kw)
            for slab_bytes in (1, 2500):  # slabs of 1 plane, and of 3 (float64) or 9
                monkeypatch.setattr(_filters, "SLAB_BYTES", slab_bytes)
                np.testing.assert_array_equal(nn.correlate(x, w, **kw), whole)
                in_place = x.copy()  # later slabs must still read the input
                nn.correlate(in_place, w, output=in_place, **kw)
                np.testing.assert_array_equal(in_place, whole)
                monkeypatch.undo()
            if whole.dtype.kind in "iu":
                assert_dense_integer(whole, x, w, "correlate", **kw)
            else:
                bound = single_pass_bound(sn.correlate, x, w, eps_for(dtype, dtype), **kw)
                assert_close(whole, sn.correlate(x, w, **kw), bound)


@pytest.mark.parametrize("out_dtype", ["float32", "float64", "uint16", "int16"])
def test_dense_correlate_layouts(monkeypatch, out_dtype):
    """The dense path's inputs and outputs of any layout and dtype: a strided input view,
    an int64 input, outputs as a dtype and as a strided array, with
    several slabs and in one; the sums go straight into a contiguous output of the work
    dtype, else are cast into it, as scipy's."""
    from numbaconv.ndimage import _filters
    w = DENSE_WEIGHTS["random"](3)
    backing = sample((9, 12, 14), "float32", seed=12)
    for x in (backing[::2, 1:, ::2], (backing * 10).astype(np.int64)):
        expected = sn.correlate(x, w, output=out_dtype, mode="nearest")
        for slab_bytes in (1, _filters.SLAB_BYTES):
            monkeypatch.setattr(_filters, "SLAB_BYTES", slab_bytes)
            got = nn.correlate(x, w, output=out_dtype, mode="nearest")
            strided = np.zeros(x.shape[:2] + (2 * x.shape[2],), out_dtype)[:, :, ::2]
            assert nn.correlate(x, w, output=strided, mode="nearest") is strided
            for result in (got, strided):
                if result.dtype.kind in "iu":
                    assert_dense_integer(result, x, w, "correlate", mode="nearest")
                else:
                    bound = single_pass_bound(sn.correlate, x.astype(np.float64), w,
                                              eps_for(np.float32, out_dtype), mode="nearest")
                    assert_close(result, expected, bound)
            monkeypatch.undo()


def psf_weights(size, width=2.0):
    """A radial, non-separable point-spread function (a Lorentzian), normalised: its
    float64 sums are exact in no order."""
    r2 = np.sum(np.square(np.indices((size,) * 3) - (size - 1) / 2), axis=0)
    psf = 1 / (1 + r2 / width ** 2)
    return psf / psf.sum()


def flat_and_textured(shape, dtype, seed):
    """Integer data with flat regions (zeros, a constant block) beside random texture:
    flat windows sum to within rounding of an integer, where truncation is fragile."""
    x = sample(shape, dtype, seed)
    x[: shape[0] // 3] = 0
    x[shape[0] // 3: 2 * shape[0] // 3] = 200
    return x


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16"])
def test_large_integer_kernels_exact_to_scipy(dtype):
    """Integer data and outputs with a kernel of FFT_TAPS or more go through the FFT;
    every output that lies within the FFT's bound of an integer is summed again as scipy
    sums it, so the result is scipy's exactly (no off-by-one), flat regions included,
    on every mode, with a non-integral ``cval`` and origins, for correlate and convolve."""
    from numbaconv.ndimage import _filters
    w = psf_weights(11)
    assert w.size >= _filters.FFT_TAPS
    x = flat_and_textured((37, 15, 13), dtype, seed=8)
    for mode in MODES:
        for cval, origin in ((0.0, 0), (2.5, (1, -2, 0)), (3.0, 0)):
            for fn in ("correlate", "convolve"):
                kw = dict(mode=mode, cval=cval, origin=origin)
                np.testing.assert_array_equal(getattr(nn, fn)(x, w, **kw),
                                              getattr(sn, fn)(x, w, **kw))
    mask = x > 100  # bool data: the direct sums (a review found the check raised on them);
    for output in (None, np.uint8):  # a bool output truncates, as scipy's unsigned char
        np.testing.assert_array_equal(nn.correlate(mask, w, output=output),
                                      sn.correlate(mask, w, output=output))


def test_resummed_outputs_are_scipys_float64_sums():
    """What the resum changes: the FFT's values that lie near an integer (many, in flat
    regions) become scipy's float64 sums bit for bit, and the rest are within the bound
    of scipy's sums, by far more than the bound's margin (FFT_ERROR_CONSTANT)."""
    import numbaconv as nc
    from numbaconv.ndimage import _filters
    from numbaconv.ndimage._boundary import extend
    w = psf_weights(11, width=3.0)
    for seed, mode in ((9, "reflect"), (10, "constant")):
        x = flat_and_textured((36, 14, 12), "uint16", seed)
        ext = extend(x, [(5, 5)] * 3, [mode] * 3, 1.5, np.float64)
        fft = nc.conv3d(ext[None, None], w[None, None], algorithm="fft")[0, 0]
        scipys = sn.correlate(x, w, output=np.float64, mode=mode, cval=1.5)
        bound = _filters._truncation_bound(ext, w, "fft")
        assert np.abs(fft - scipys).max() * 100 <= bound
        near = np.abs(fft - np.rint(fft)) <= bound
        assert near.sum() >= 20 and not near.all()
        result = fft.copy()
        _filters._resum_near_integers(ext, w, result, "fft")
        assert result[near].tobytes() == scipys[near].tobytes()
        assert result[~near].tobytes() == fft[~near].tobytes()


def test_flat_windows():
    """``flat_windows`` marks exactly the windows holding one value (naive check),
    a non-integral value standing for itself by the sentinel."""
    from numbaconv.kernels import scipy_sums
    from numbaconv.kernels.registry import readonly
    rng = np.random.default_rng(11)
    ext = rng.integers(0, 2, (9, 10, 12)).astype(np.float64)
    ext[:4] = 1.0
    ext[6:, :, :5] = 2.5  # a non-integral cval's level
    window = (3, 2, 4)
    flat = np.zeros((7, 9, 9), np.bool_)
    scipy_sums.flat_windows(readonly(ext), readonly(np.array(window, np.int64)), 2.0 ** 17, flat)
    windows = np.lib.stride_tricks.sliding_window_view(ext, window)
    expected = windows.max(axis=(3, 4, 5)) == windows.min(axis=(3, 4, 5))
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(flat, expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nonfinite_values_reach_what_they_reach_in_scipy(dtype):
    """A NaN or Inf reaches the outputs it reaches in scipy: the windows that read it for
    the sums (the FFT, which would spread it over the volume, is not used then; nor for
    an infinite cval), and the rest of the line for uniform_filter, whose running sum
    carries it on (Inf - Inf is NaN; float32 data takes the running mean then)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((19, 23, 27)).astype(dtype)
    x[9, 11, 13], x[2, 20, 5], x[15, 3, 26] = np.inf, np.nan, -np.inf
    large = rng.random((11, 11, 11)) + 0.5  # FFT_TAPS: the FFT for finite data
    calls = [(lambda m: m.correlate(x, large, mode="reflect")),
             (lambda m: m.correlate(np.where(np.isfinite(x), x, 0), large, mode="constant", cval=np.inf)),
             (lambda m: m.uniform_filter(x, 4)), (lambda m: m.uniform_filter1d(x, 6, axis=0)),
             (lambda m: m.gaussian_filter(x, 1.5, mode="wrap")), (lambda m: m.sobel(x, 1))]
    for call in calls:
        got, expected = call(nn), call(sn)
        assert np.array_equal(np.isnan(got), np.isnan(expected))
        inf = np.isinf(expected)
        assert np.array_equal(np.isinf(got), inf) and np.array_equal(got[inf], expected[inf])
        finite = np.isfinite(expected)
        scale = np.abs(expected[finite]).max()
        np.testing.assert_allclose(got[finite], expected[finite], atol=1e-4 * scale)


def test_axes_argument():
    x = sample((4, 5, 6), "float64")
    w2 = np.random.default_rng(4).standard_normal((3, 2))
    for axes in [(0, 2), (2, 1), (-1, 0)]:
        # scipy pairs origins with ``axes`` but keeps the weights' axis order: for
        # unsorted axes these origins are out of range (both raise, tested below).
        origin = (1, 0) if list(axes) == sorted(a % 3 for a in axes) else 0
        for fn in ("correlate", "convolve"):
            expected = getattr(sn, fn)(x, w2, axes=axes, origin=origin, mode="wrap")
            got = getattr(nn, fn)(x, w2, axes=axes, origin=origin, mode="wrap")
            assert_close(got, expected, 1e-12 * np.abs(expected).max())
        for name, args in [("gaussian_filter", ([1.0, 0.7],)), ("uniform_filter", ([3, 2],)),
                           ("laplace", ()), ("gaussian_laplace", (1.0,)),
                           ("gaussian_gradient_magnitude", (1.0,))]:
            expected = getattr(sn, name)(x, *args, axes=axes, mode=["nearest", "mirror"])
            got = getattr(nn, name)(x, *args, axes=axes, mode=["nearest", "mirror"])
            assert_close(got, expected, 1e-12 * np.abs(x).max())


def test_negative_and_out_of_range_values_cast_like_scipy():
    """scipy casts double results as C does: toward zero, out-of-range values wrap."""
    x = np.array([-0.5, -1.5, -2.7, -300.7, 300.2, 70000.9, -70000.9, 2.9999999, 65535.9])
    for dtype in ["uint8", "uint16", "int16", "int32"]:
        np.testing.assert_array_equal(nn.correlate1d(x, [1.0], output=dtype),
                                      sn.correlate1d(x, [1.0], output=dtype))
        np.testing.assert_array_equal(nn.correlate(x, [1.0], output=dtype),
                                      sn.correlate(x, [1.0], output=dtype))


@pytest.mark.parametrize("dtype", ["float64", "float32", "uint8"])
def test_bool_outputs_hold_scipys_bytes(dtype):
    """scipy's bool output is an unsigned char: every pass stores its sums truncated
    (0.3 -> 0, 2.7 -> 2, -1.5 -> 255) and the next pass reads those bytes back. The
    running mean (uniform_filter1d) stored them with a test for nonzero, and the composed
    filters read the bytes as bools between passes (a review found both)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 6, 7)) * 3 if dtype != "uint8" else rng.integers(0, 5, (5, 6, 7))
    x = x.astype(dtype)
    w = rng.standard_normal((3, 3, 3))
    calls = {"uniform_filter1d": (3,), "uniform_filter": (3,), "gaussian_filter1d": (1.0,),
             "gaussian_filter": (1.0,), "sobel": (), "prewitt": (), "laplace": (),
             "gaussian_laplace": (1.0,), "gaussian_gradient_magnitude": (1.0,),
             "correlate": (w,), "convolve": (w,), "correlate1d": ([0.3, 0.5, -0.2],)}
    for name, args in calls.items():
        expected = getattr(sn, name)(x, *args, output=np.bool_)
        np.testing.assert_array_equal(getattr(nn, name)(x, *args, output=np.bool_).view(np.uint8),
                                      expected.view(np.uint8), err_msg=name)
        out = np.zeros(x.shape, np.bool_)
        assert getattr(nn, name)(x, *args, output=out) is out
        np.testing.assert_array_equal(out.view(np.uint8), expected.view(np.uint8), err_msg=name)


def test_grid_modes_are_their_filter_aliases():
    x = sample((3, 4, 5), "float64")
    w = np.random.default_rng(5).standard_normal((3, 5, 2))
    for grid, plain in [("grid-mirror", "reflect"), ("grid-wrap", "wrap"),
                        ("grid-constant", "constant")]:
        for fn in (sn.correlate, lambda a, k, **kw: sn.correlate1d(a, k[0, 0], **kw)):
            np.testing.assert_array_equal(fn(x, w, mode=grid, cval=2.0),
                                          fn(x, w, mode=plain, cval=2.0))


@HYPOTHESIS
@given(data=st.data())
def test_random_correlations(data):
    ndim = data.draw(st.integers(1, 3))
    shape = tuple(data.draw(st.integers(1, 8)) for _ in range(ndim))
    k = tuple(data.draw(st.integers(1, 5)) for _ in range(ndim))
    origin = [data.draw(st.integers(-(n // 2), (n - 1) // 2)) for n in k]
    mode = data.draw(st.sampled_from(MODES))
    dtype = data.draw(st.sampled_from(DTYPES))
    x = sample(shape, dtype, seed=data.draw(st.integers(0, 100)))
    w = np.random.default_rng(data.draw(st.integers(0, 100))).uniform(-2, 2, k)
    if data.draw(st.booleans()):  # a rank-1 kernel: the separable path
        w = math.prod(np.ix_(*[np.random.default_rng(i).integers(-3, 4, n).astype(float)
                              for i, n in enumerate(k)]))
    kw = dict(mode=mode, cval=CVAL, origin=origin)
    if not reflect_reads_outside(mode, k, origin, shape):
        got = nn.correlate(x, w, **kw)
        if got.dtype.kind in "iu":
            assert_dense_integer(got, x, w, **kw)
        else:
            assert_close(got, sn.correlate(x, w, **kw),
                         single_pass_bound(sn.correlate, x, w, eps_for(dtype, dtype), **kw))
    axis = data.draw(st.integers(-ndim, ndim - 1))
    w1 = w.reshape(-1)[:k[0]]
    kw1 = dict(mode=mode, cval=CVAL, origin=origin[0], axis=axis)
    assert_close(nn.correlate1d(x, w1, **kw1), sn.correlate1d(x, w1, **kw1),
                 single_pass_bound(sn.correlate1d, x, w1, eps_for(dtype, dtype), **kw1))


# ---- Errors: scipy's exception types ------------------------------------------------------------
X = np.zeros((4, 5, 6), np.float32)
ERRORS = [
    ("correlate", (X, np.ones((3, 3, 3))), dict(mode="bogus")),
    ("correlate", (X, np.ones((3, 3, 3))), dict(origin=2)),
    ("correlate", (X, np.ones((3, 3, 3))), dict(origin=(0, 0))),
    ("correlate", (X, np.ones((3, 3))), {}),
    ("correlate", (X, np.ones((3, 3))), dict(axes=(0, 5))),
    ("correlate", (X, np.ones((3, 3))), dict(axes=(1, 1))),
    ("correlate", (X, np.ones((3, 2))), dict(axes=(2, 1), origin=(1, 0))),
    ("correlate", (X, np.ones((3, 3, 3))), dict(mode=["reflect"] * 3)),
    ("correlate", (X, np.ones((3, 3, 3))), dict(output=np.zeros((4, 5)))),
    ("convolve", (X, np.ones((2, 2, 2))), dict(origin=1)),
    ("correlate1d", (X, np.ones((2, 2))), {}),
    ("correlate1d", (X, []), {}),
    ("correlate1d", (X, [1, 2, 3]), dict(axis=3)),
    ("correlate1d", (X, [1, 2, 3]), dict(origin=-2)),
    ("convolve1d", (X, [1, 2, 3]), dict(mode="wrapped")),
    ("gaussian_filter1d", (X, -1.0), {}),
    ("gaussian_filter1d", (X, 1.0), dict(order=-1)),
    ("gaussian_filter1d", (X, 1.0), dict(radius=-2)),
    ("gaussian_filter", (X, [1.0, 2.0]), {}),
    ("gaussian_filter", (X, 1.0), dict(mode="nope")),
    ("uniform_filter1d", (X, 0), {}),
    ("uniform_filter1d", (X, 3), dict(origin=2)),
    ("uniform_filter", (X, 3), dict(axes=(0, 0))),
    ("sobel", (X,), dict(axis=3)),
    ("prewitt", (X,), dict(mode="bad")),
    ("laplace", (X,), dict(axes=7)),
    ("gaussian_laplace", (X, [1.0, 1.0]), {}),
    ("gaussian_gradient_magnitude", (X, 1.0), dict(mode=["reflect"])),
    # found by a review: scipy checks an origin's range before its type, reads cval as a
    # C double, takes a 1-D size as a C integer, and has no complex output for real data
    ("correlate", (X, np.ones((3, 3, 3))), dict(origin=1.5)),
    ("correlate", (X, np.ones((3, 3, 3))), dict(origin=0.5)),
    ("correlate", (X, np.ones((3, 3, 3))), dict(mode="constant", cval="a")),
    ("correlate1d", (X, [1, 2, 3]), dict(cval=None)),
    ("gaussian_filter", (X, 1.0), dict(cval=1j)),
    ("sobel", (X,), dict(cval="a")),
    ("uniform_filter", (X.astype(np.float32), 3), dict(cval="a")),
    ("uniform_filter1d", (X, 2.5), {}),
    ("uniform_filter1d", (X, np.float64(3)), {}),
    ("correlate", (X, np.ones((3, 3, 3))), dict(output=np.complex128)),
    ("correlate1d", (X, [1, 2]), dict(output=np.zeros(X.shape, np.complex64))),
    ("uniform_filter", (X, 3), dict(output=np.complex128)),
    # found in the sixteenth session: inputs and outputs of dtypes scipy does not filter
    # (numbaconv read them through a float64 cast: objects became NaN)
    ("uniform_filter", (np.array([[None, 1.0, 2.0]] * 3), 2), {}),
    ("gaussian_filter", (np.ones((3, 4), object), 1.0), {}),
    ("correlate", (np.ones((3, 4), np.longdouble), np.ones((2, 2))), {}),
    ("sobel", (np.zeros((3, 4), "datetime64[s]"),), {}),
    ("laplace", (np.zeros((3, 4), "timedelta64[s]"),), {}),
    ("correlate1d", (X, [1, 2]), dict(output=np.zeros(X.shape, object))),
    ("uniform_filter", (X, 3), dict(output=np.longdouble)),
    ("uniform_filter", (X, 3), dict(output=np.str_)),
    ("gaussian_filter1d", (X, 1.0), dict(output=np.dtype("datetime64[s]"))),
]


@pytest.mark.parametrize("name,args,kwargs", ERRORS)
def test_errors_are_scipys(name, args, kwargs):
    with pytest.raises(Exception) as theirs:
        getattr(sn, name)(*args, **kwargs)
    with pytest.raises(Exception) as ours:
        getattr(nn, name)(*args, **kwargs)
    assert type(ours.value) is type(theirs.value), (ours.value, theirs.value)


def test_signatures_are_scipys():
    import inspect
    for name in nn.__all__:
        assert inspect.signature(getattr(nn, name)) == inspect.signature(getattr(sn, name)), name


# ---- Determinism and imports ------------------------------------------------------------------
def test_bitwise_identical_at_one_and_two_threads():
    x = sample((9, 10, 33), "float32")
    w = np.random.default_rng(6).standard_normal((3, 4, 5)).astype(np.float32)
    runs = []
    previous = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            runs.append([nn.gaussian_filter(x, 1.5), nn.uniform_filter(x.astype(np.float64), 4),
                         nn.correlate(x, w, mode="wrap"), nn.sobel(x, 2),
                         nn.correlate1d(x, w[0, 0], axis=0)])
    finally:
        numba.set_num_threads(previous)
    for a, b in zip(*runs):
        assert a.tobytes() == b.tobytes()


def test_dense_slabs_follow_the_thread_count_and_keep_the_bits(monkeypatch):
    """A dense correlation's slabs are whole multiples of the thread count (7 depths
    at 1 thread, 6 at 2, here): the same bits at both, and scipy's."""
    from numbaconv.ndimage import _filters
    sn = pytest.importorskip("scipy.ndimage")
    x = sample((20, 9, 10), "uint16")
    w = DENSE_WEIGHTS["random"](3)
    monkeypatch.setattr(_filters, "SLAB_BYTES", 9 * 11 * 12 * 8)  # 9 extended planes
    runs = []
    previous = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            runs.append(nn.correlate(x.astype(np.float64), w, mode="mirror"))
    finally:
        numba.set_num_threads(previous)
    assert runs[0].tobytes() == runs[1].tobytes()
    np.testing.assert_allclose(runs[0], sn.correlate(x.astype(np.float64), w, mode="mirror"),
                               rtol=1e-13, atol=1e-9)


def test_import_numbaconv_does_not_load_ndimage(tmp_path):
    proc = run_script(tmp_path, """
        import sys
        import numbaconv
        assert "numbaconv.ndimage" not in sys.modules and "scipy.ndimage" not in sys.modules
        import numbaconv.ndimage
        assert "scipy.ndimage" not in sys.modules
        print("ok")
    """, env=python_env())
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_warmup_compiles_the_signatures_the_filters_run():
    """``nc.warmup`` compiles the 1-D pass kernels for exactly the argument types the
    filters pass, so that a warmed-up process never compiles another specialisation."""
    import numbaconv as nc
    from numbaconv.kernels import separable
    from numbaconv.kernels.registry import algorithm_names
    nc.warmup(algorithms=algorithm_names(separable.LINES))
    from numbaconv.kernels import scipy_sums
    nc.warmup(algorithms=algorithm_names(scipy_sums.SCIPY_SUMS))
    kernels = (separable.correlate_lines, separable.correlate_lines_serial,
               separable.running_mean_lines, separable.running_mean_lines_serial,
               separable.extend_volume, separable.store_rows, scipy_sums.count_near_integers,
               scipy_sums.flat_windows, scipy_sums.resum_near_integers)
    before = [len(k.signatures) for k in kernels]
    x = np.random.default_rng(0).random((20, 21, 22))
    integers = [(x * 100).astype(t) for t in separable.WARM_INTEGERS]
    dense = DENSE_WEIGHTS["random"](3)
    psf = psf_weights(11)
    for data in [x.astype(np.float32), x] + integers:
        nn.gaussian_filter(data, 2.0)
        nn.uniform_filter(data, 3)
        nn.sobel(data[:2, :2, :3])  # small: the serial drivers
        nn.uniform_filter(data[:2, :2, :3], 3)
        nn.correlate(data, dense)
        nn.correlate(data, psf)
        nn.correlate(np.zeros_like(data), psf)  # integers: near-integer outputs summed again
    assert [len(k.signatures) for k in kernels] == before


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32"])
def test_integer_passes_out_of_range_cast_as_scipy(dtype):
    """Integer volumes are read and written as they are; a sum outside the output's
    range is stored as numpy casts it where the kernel can do the same (``wrap``, on
    machines where numpy wraps), else counted, not stored, and the pass is redone with
    numpy's cast (scipy's)."""
    from numbaconv.kernels import separable
    from numbaconv.kernels.registry import readonly
    info = np.iinfo(dtype)
    x = np.random.default_rng(3).integers(info.min, info.max, (3, 4, 50), endpoint=True).astype(dtype)
    for weights in ([3.0], [-1.0, 0.0, 1.0], [0.25, 0.5, 0.25]):
        np.testing.assert_array_equal(nn.correlate1d(x, weights, axis=2),
                                      sn.correlate1d(x, weights, axis=2))
        np.testing.assert_array_equal(nn.correlate1d(x, weights, axis=0),
                                      sn.correlate1d(x, weights, axis=0))
    out = np.zeros((1, 4, 1), dtype)
    # Read-only, as the filters launch it: the specialisation the warmup compiled.
    src, index, cval_row, w = map(readonly, (np.full((1, 4, 1), info.max, dtype), np.arange(4),
                                             np.zeros(1, dtype), np.array([2.0])))
    outside = separable.correlate_lines_serial(src, index, cval_row, w, separable.tap_plan(w),
                                               False, out)
    assert outside == 4 and not out.any()
    outside = separable.correlate_lines_serial(src, index, cval_row, w, separable.tap_plan(w),
                                               True, out)
    if 2.0 * info.max < 2.0**31:  # stored modulo 2^bits, as numpy's cast where it wraps
        expected = (2 * src.astype(np.int64)).astype(dtype)
        assert outside == 0 and np.array_equal(out, expected)
        from numbaconv.ndimage._filters import numpy_wraps
        if numpy_wraps(np.dtype(dtype)):
            with np.errstate(all="ignore"):
                assert np.array_equal(out, (2.0 * src).astype(dtype))
    else:
        assert outside == 4


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32", "uint32"])
def test_rows_that_wrap_store_numpys_int64_route(dtype):
    """A row with sums outside the output's range (a derivative of unsigned data) is
    stored in one pass where every value lies within +-2^31: truncated toward zero and
    wrapped as the cast through int64 does. A NaN or a value beyond +-2^31 anywhere in
    the row leaves that value unstored and counted, the rest stored the same way."""
    from numbaconv.kernels import separable
    from numbaconv.kernels.registry import readonly
    info = np.iinfo(dtype)
    rng = np.random.default_rng(7)
    span = 2.0**31 - 1.0
    rows = rng.uniform(-span, span, (5, 37))
    rows[1] = rng.uniform(info.min - 300.5, info.max + 300.5, 37)  # near the range
    rows[2, :3] = [-0.5, -1.0 + 1e-9, 2.0**31 - 0.5]
    rows[3, 5] = np.nan
    rows[4, 8] = -2.0**31 - 1.0  # beyond +-2^31: left to numpy's cast
    out = np.zeros(rows.shape, dtype)
    outside = separable.store_rows(readonly(rows), True, out)
    assert outside == 2
    with np.errstate(invalid="ignore"):
        expected = np.trunc(np.nan_to_num(rows)).astype(np.int64).astype(dtype)
    expected[3, 5] = expected[4, 8] = 0  # not stored
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32"])
def test_uniform_filter1d_of_integers_read_as_they_are(dtype):
    """Integer volumes with an exact ``cval`` are read without a converted copy; along
    the last axis their window sums are summed afresh (up to WINDOW_SUM_TAPS taps) or
    run as scipy's chain (longer windows): equal to scipy either way."""
    x = sample((5, 4, 23), dtype, seed=7)
    for axis in range(3):
        for mode in MODES:
            for size in (1, 2, 5, 16, 17, 30):
                for origin in sorted({0, -(size // 2), (size - 1) // 2}):
                    kw = dict(axis=axis, mode=mode, cval=3, origin=origin)
                    np.testing.assert_array_equal(nn.uniform_filter1d(x, size, **kw),
                                                  sn.uniform_filter1d(x, size, **kw))


# ---- Cold start: tiers while the kernels compile -------------------------------------------
def test_pass_kernels_of_any_dtypes_are_declared_by_name():
    """A pass over dtypes outside ``WARM_INTEGERS`` is declared when first used, under a
    name that a child process (which compiles it in the background) declares again."""
    from numbaconv.kernels import separable
    from numbaconv.kernels.registry import REGISTRY, kernel_named
    f32, f64, u8 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.uint8)
    assert separable.declared("lines", f32, f32, f32) == "lines"
    assert separable.declared("lines", u8, f64, u8) == "lines_uint8"
    name = separable.declared("lines_serial", u8, f64, f32)
    assert name == "lines_serial_uint8_float32"
    examples = REGISTRY[name].examples(f64)
    assert (examples[0].dtype, examples[3].dtype, examples[-1].dtype) == (u8, f64, f32)
    declared = REGISTRY.pop("running_mean_int16_float64", None)
    try:
        assert kernel_named("running_mean_int16_float64").examples(f64)[-1].dtype == f64
    finally:
        if declared is not None:
            REGISTRY["running_mean_int16_float64"] = declared
    for unknown in ("lines_uint8_complex64", "blocked_uint8_float32", "lines_foo_float32"):
        with pytest.raises(KeyError):
            kernel_named(unknown)


def test_first_calls_run_on_quicker_kernels_with_the_same_bits(monkeypatch):
    """While a parallel 1-D pass kernel or the dense correlation's blocked kernel is not
    compiled, numbaconv.ndimage runs the serial pass kernel and the direct-sum tiers (which
    compile in a fraction of the time) and starts the others in the background: the same
    bits as once every kernel is ready."""
    import numbaconv as nc
    from numbaconv import _dispatch
    rng = np.random.default_rng(3)
    v = rng.standard_normal((20, 40, 70)).astype(np.float32)
    u = rng.integers(0, 4000, (20, 40, 70)).astype(np.uint16)
    k = rng.random((3, 4, 5))
    calls = {"gaussian": lambda: nn.gaussian_filter(v, 1.5),
             "uniform u16": lambda: nn.uniform_filter(u, 4),
             "correlate u16": lambda: nn.correlate(u, k),
             "correlate f32": lambda: nn.correlate(v, k, mode="wrap"),
             # dtypes outside the warm set: their kernels are declared on first use
             "gaussian u8 into f32": lambda: nn.gaussian_filter(u.astype(np.uint8), 1.5,
                                                               output=np.float32),
             "uniform i32": lambda: nn.uniform_filter(u.astype(np.int32), 4)}
    nc.clear_kernel_cache()
    ready = {name: call() for name, call in calls.items()}
    started = []
    real = _dispatch._kernel
    monkeypatch.setattr(_dispatch, "background_enabled", lambda: True)
    monkeypatch.setattr(_dispatch, "_kernel_ready", lambda kernel, dtype: kernel.name == "tiny")

    def kernel(name, dtype, wait=None):  # nothing but the floor is ready
        if wait is None:
            return real(name, dtype)
        started.append(name)
        return None
    monkeypatch.setattr(_dispatch, "_kernel", kernel)
    nc.clear_kernel_cache()
    try:
        cold = {name: call() for name, call in calls.items()}
    finally:
        nc.clear_kernel_cache()
    for name in calls:
        assert cold[name].tobytes() == ready[name].tobytes(), name
    assert {"lines", "running_mean_uint16", "direct_serial", "lines_uint8_float32",
            "running_mean_int32_int32"} <= set(started), started
    assert any(name.startswith("blocked") for name in started), started
