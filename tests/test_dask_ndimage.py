"""numbaconv.dask.ndimage against the in-memory numbaconv.ndimage (the oracle), bitwise."""
import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import numbaconv.ndimage as nd  # noqa: E402
from numbaconv.dask import ndimage as dnd  # noqa: E402

MODES = ["reflect", "constant", "nearest", "mirror", "wrap"]

#: (shape, chunks, dtype): chunks smaller than every halo below (1, 2), uneven chunks,
#: an axis shorter than the halo (3 < gaussian radius 6), one chunk.
LAYOUTS = [
    ((29,), (2,), np.float32),
    ((17, 21), ((3, 5, 9), (1, 2, 7, 11)), np.uint16),
    ((3, 16, 18), (1, 5, (4, 4, 4, 6)), np.float32),
    ((9, 12, 13), (4, (1, 11), 13), np.uint16),
]


def _weights(ndim, size, seed):
    return np.random.default_rng(seed).uniform(-1, 2, (size,) * ndim)


#: name -> keyword arguments (a function of ndim): origins, even lengths and
#: derivative orders included; sigmas give radii of 2 to 6.
CASES = {
    "correlate": lambda n: dict(weights=_weights(n, 3, 1), origin=1 if n == 1 else 0),
    "convolve": lambda n: dict(weights=_weights(n, 4, 2), origin=-1),
    "correlate1d": lambda n: dict(weights=[1.0, 3.0, -2.0, 0.5], axis=0, origin=-1),
    "convolve1d": lambda n: dict(weights=[0.25, 0.5, 0.25, 0.125, 1.0], origin=2),
    "gaussian_filter": lambda n: dict(sigma=[1.5, 0.6, 1.0][:n]),
    "gaussian_filter1d": lambda n: dict(sigma=1.0, axis=-1, order=1),
    "uniform_filter": lambda n: dict(size=[4, 3, 5][:n], origin=1),
    "uniform_filter1d": lambda n: dict(size=5, axis=0, origin=-2),
    "sobel": lambda n: dict(axis=0),
    "prewitt": lambda n: dict(axis=-1),
    "laplace": lambda n: dict(),
    "gaussian_laplace": lambda n: dict(sigma=0.8),
    "gaussian_gradient_magnitude": lambda n: dict(sigma=1.2, truncate=3.0),
}


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 3000).astype(dtype)


def check(name, x, chunks, **kwargs):
    """The dask result, computed, has the in-memory result's dtype and bits."""
    expected = getattr(nd, name)(x, **kwargs)
    result = getattr(dnd, name)(da.from_array(x, chunks=chunks), **kwargs)
    assert isinstance(result, da.Array)
    got = result.compute(scheduler="sync")
    assert got.dtype == expected.dtype == result.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_function_mode_and_layout(name, mode):
    for shape, chunks, dtype in LAYOUTS:
        check(name, _data(shape, dtype), chunks, mode=mode, cval=7.5,
              **CASES[name](len(shape)))


@pytest.mark.parametrize("mode", ["grid-mirror", "grid-wrap", "grid-constant"])
def test_grid_modes(mode):
    check("gaussian_filter", _data((11, 14), np.float32), (3, 4), sigma=1.0, mode=mode, cval=2)


def test_per_axis_modes_and_axes():
    x = _data((10, 12, 9), np.uint16)
    check("gaussian_filter", x, (3, 5, 4), sigma=(1.0, 2.0), axes=(2, 0),
          mode=["wrap", "mirror"])
    check("sobel", x, (2, 5, 4), axis=1, mode=["wrap", "constant", "reflect"], cval=100)
    check("uniform_filter", x, (4, 3, 2), size=(2, 5), axes=(0, 1), origin=(-1, 2))
    check("gaussian_laplace", x, (4, 3, 2), sigma=(1.0, 0.5), axes=(1, 2), radius=2)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint32])
def test_derivative_filters_of_bool_and_uint32_data_hold_scipys_bytes(dtype):
    """A bool intermediate holds bytes such as 255 (scipy's unsigned char) that the next
    pass reads, and uint32 sums past 2^32 wrap as C's cast does, whose numpy twin gave 0
    in its vector loop (so the bits changed with a block's length). Byte for byte
    against scipy itself, on blocks of several sizes (found by a review)."""
    sn = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(8)
    x = rng.integers(0, 2 if dtype == np.bool_ else 100, (9, 8, 7)).astype(dtype)
    for name, kwargs in (("sobel", dict(axis=0)), ("prewitt", dict(axis=1)),
                         ("gaussian_filter", dict(sigma=1.0)), ("gaussian_laplace", dict(sigma=1.0))):
        expected = getattr(sn, name)(x, **kwargs)
        assert getattr(nd, name)(x, **kwargs).tobytes() == expected.tobytes(), name
        for chunks in ((4, 3, 2), (1, 8, 7), -1):
            got = getattr(dnd, name)(da.from_array(x, chunks=chunks), **kwargs).compute(scheduler="sync")
            assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes(), (name, chunks)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.uint8])
def test_more_dtypes(dtype):
    """float64/float16 take uniform_filter1d's whole-axis path, the integers the
    exact running sum on any chunks."""
    x = _data((13, 11), dtype) if dtype != np.uint8 else _data((13, 11), np.float32).astype(dtype)
    for name in ("uniform_filter", "gaussian_filter", "correlate"):
        kwargs = dict(weights=_weights(2, 5, 3)) if name == "correlate" else dict(sigma=1.3) \
            if name == "gaussian_filter" else dict(size=4)
        check(name, x, (3, 2), **kwargs)


def test_serial_blocks_of_a_parallel_whole():
    """The whole array is large enough for the parallel drivers (more than
    separable.SERIAL_WORK multiply-adds), the blocks small enough for the serial ones,
    and a PSF-like 7^3 dense kernel runs parallel on both: same bits."""
    from numbaconv.kernels.separable import SERIAL_WORK

    x = _data((20, 40, 44), np.float32)
    assert x.size * 9 >= SERIAL_WORK and 4 * 6 * 10 * 27 < SERIAL_WORK
    w3 = _weights(3, 3, 4)  # random: not rank-1, the dense path
    check("correlate", x, (2, 4, 8), weights=w3, mode="reflect")
    check("gaussian_filter", x, (4, 5, 8), sigma=1.0, mode="nearest")
    check("uniform_filter", x.astype(np.uint16), (4, 5, 8), size=3)
    psf = np.exp(-np.add.outer(np.add.outer(*[np.arange(-3, 4) ** 2] * 2),
                               np.arange(-3, 4) ** 2) / 6.0)
    psf[0, 0, 0] = 0.3  # not rank-1
    check("correlate", x, (7, 20, 44), weights=psf, mode="mirror")
    check("correlate", x, (10, 20, 22), weights=psf, mode="wrap")


def test_large_integer_kernels_on_blocks():
    """Integer data with an 11^3 kernel: the whole volume's and each block's outputs are
    scipy's exactly (the FFT, its near-integer outputs summed again), whether a block is
    large enough for the FFT or small enough for the serial direct sums."""
    from numbaconv.ndimage._filters import FFT_TAPS
    r2 = np.sum(np.square(np.indices((11, 11, 11)) - 5.0), axis=0)
    psf = 1 / (1 + r2 / 4.0)
    psf /= psf.sum()
    assert psf.size >= FFT_TAPS
    x = _data((26, 13, 14), np.uint16)
    x[:9] = 0
    x[9:18] = 200  # flat: sums within rounding of an integer
    for mode in ("reflect", "constant"):
        check("correlate", x, (9, 13, 14), weights=psf, mode=mode, cval=1.5)
        check("correlate", x, ((1, 12, 13), (13,), (2, 12)), weights=psf, mode=mode, cval=1.5)


def test_dask_images_gaussian_alias():
    assert dnd.gaussian is dnd.gaussian_filter and "gaussian" in dnd.__all__


def test_chunk_merging():
    assert dnd._merged((2, 2, 2, 2, 1), 3, 4) == (4, 5)
    assert dnd._merged((1, 1, 1), 5, 6) == (3,)
    assert dnd._merged((10, 1, 10), 2, 3) == (10, 11)  # a short chunk joins the next
    for chunks in [(3, 1, 4, 1, 5, 9, 2, 6), (1,) * 17, (20,)]:
        for need in (1, 2, 5):
            merged = dnd._merged(chunks, need, need + 1)
            assert sum(merged) == sum(chunks)
            assert len(merged) == 1 or (min(merged) >= need
                                        and min(merged[0], merged[-1]) >= need + 1)


def test_lazy_and_chunks_kept():
    """Nothing runs before compute; chunks longer than the halo (radius 4) stay."""
    calls = []

    def source(block):
        calls.append(1)
        return block

    x = _data((12, 12), np.float32)
    xd = da.from_array(x, chunks=6).map_blocks(source, dtype=x.dtype,
                                              meta=np.empty((0, 0), x.dtype))
    result = dnd.gaussian_filter(xd, 1.0)
    assert calls == [] and result.chunks == xd.chunks
    np.testing.assert_array_equal(result.compute(scheduler="sync"), nd.gaussian_filter(x, 1.0))


@pytest.mark.parametrize("name, kwargs, error", [
    ("correlate1d", dict(weights=[1, 2, 3], origin=2), ValueError),
    ("correlate", dict(weights=np.ones((3, 3, 3))), RuntimeError),
    ("gaussian_filter", dict(sigma=1.0, mode="bogus"), RuntimeError),
    ("gaussian_filter", dict(sigma=(1.0, 2.0, 3.0)), RuntimeError),
    ("uniform_filter1d", dict(size=0), RuntimeError),
    ("sobel", dict(axis=5), ValueError),
])
def test_errors_match_in_memory(name, kwargs, error):
    x = np.zeros((6, 6), np.float32)
    with pytest.raises(error):
        getattr(nd, name)(x, **kwargs)
    with pytest.raises(error):
        getattr(dnd, name)(da.from_array(x, chunks=3), **kwargs)


def _max_pressure(result):
    """Most task results dask.order holds at once to store ``result`` chunk by chunk."""
    from dask.order import diagnostics

    stored = da.store(result, np.empty(result.shape, result.dtype), compute=False, lock=False)
    return max(diagnostics(dict(stored.__dask_graph__()))[1])


@pytest.mark.parametrize("mode", ["reflect", "constant", "wrap"])
def test_memory_does_not_grow_with_the_volume(mode):
    """gaussian_filter's three passes are ordered as a sweep along D: tripling the volume
    leaves the number of results held at once about the same (slack for dask.order's
    tie-breaking)."""
    small, large = [_max_pressure(dnd.gaussian_filter(
        da.zeros((depth, 64, 64), np.float32, chunks=(8, 32, 32)), 1.0, mode=mode))
        for depth in (64, 192)]
    assert large <= 1.25 * small, (small, large)


def test_ndimage_demo_runs_and_its_summaries_are_the_volumes():
    """The demo's per-chunk (sum, max) reduction equals numpy's over the whole array,
    and the demo itself (a 32 MB volume) checks its chunks bitwise and succeeds."""
    from numbaconv.dask import ndimage_demo

    x = da.random.default_rng(1).random((20, 30, 40), dtype=np.float32, chunks=(7, 16, 16))
    total, top = ndimage_demo.block_summaries(x)
    whole = x.compute()
    assert total == pytest.approx(whole.sum(dtype=np.float64), rel=1e-12)
    assert top == whole.max()
    assert ndimage_demo.main(["--gib", "0.03", "--chunk", "8", "256", "256", "--verify", "1"]) == 0
