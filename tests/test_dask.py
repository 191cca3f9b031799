"""numbaconv.dask.conv3d against the in-memory conv3d, over chunkings and schedulers."""
import re
import threading

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import numba  # noqa: E402
from hypothesis import given, settings, strategies as st, HealthCheck  # noqa: E402

import numbaconv as nc  # noqa: E402
from numbaconv import dask as ncd  # noqa: E402
from numbaconv.reference import NUMPY_PAD_MODES, explicit_padding  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """A 2-process local cluster (one task thread each), shared by the module."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    c = distributed.Client(cluster, set_as_default=False)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def computed_blocks(result, compute=None):
    """Compute every block of ``result`` in one pass, check each block against the
    declared chunks, and return the assembled array."""
    delayed = result.to_delayed()
    flat = list(delayed.ravel())
    values = compute(flat) if compute else dask.compute(*flat, scheduler="threads")
    grid = np.empty(delayed.shape, dtype=object)
    for index, value in zip(np.ndindex(delayed.shape), values):
        declared = tuple(c[i] for c, i in zip(result.chunks, index))
        assert value.shape == declared, f"block {index}: computed {value.shape}, declared {declared}"
        assert value.dtype == result.dtype
        grid[index] = value
    return np.block(grid.tolist())


def expected_result(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                    conv_mode="cross_correlation", padding_mode="zeros"):
    if padding_mode == "zeros":
        return nc.conv3d(x, weight, bias, stride, padding, dilation, groups, conv_mode)
    widths = [(0, 0), (0, 0)] + explicit_padding(padding, np.shape(weight)[-3:])
    xp = np.pad(x, widths, mode=NUMPY_PAD_MODES[padding_mode])  # in x's own dtype
    return nc.conv3d(xp, weight, bias, stride, 0, dilation, groups, conv_mode)


def check(x, chunks, weight, bias=None, *, exact=True, compute=None, **args):
    xd = da.from_array(x, chunks=chunks)
    result = ncd.conv3d(xd, weight, bias, **args)
    expected = expected_result(x, weight, bias, **args)
    assert result.shape == expected.shape and result.dtype == expected.dtype
    got = computed_blocks(result, compute)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    if exact:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    return result


def make(rng, shape, cout, kernel, groups=1, dtype=np.float32, bias=True):
    x = rng.standard_normal(shape).astype(dtype)
    cin = shape[1]
    k = kernel if isinstance(kernel, tuple) else (kernel,) * 3
    w = rng.standard_normal((cout, cin // groups) + k).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype) if bias else None
    return x, w, b


# ---- Chunkings, strides, dilation, groups (threaded scheduler) --------------------------
CASES = {
    # name: (shape, chunks, Cout, kernel, groups, args)
    "same_k3": ((1, 2, 12, 10, 9), (1, 2, 4, 5, 3), 3, 3, 1, dict(padding=1)),
    "chunks_below_halo": ((1, 2, 11, 9, 10), (1, 1, 1, 2, 3), 2, 3, 1,
                          dict(padding=2, dilation=2)),
    "chunks_of_one": ((1, 1, 7, 6, 8), 1, 2, (3, 2, 3), 1, dict(padding=(1, 0, 2))),
    "uneven": ((2, 3, 13, 11, 9), (1, 3, (5, 1, 7), (2, 9), (4, 4, 1)), 4, 3, 1,
               dict(padding=1, stride=2)),
    "stride3_chunks5": ((1, 2, 17, 16, 15), (1, 2, 5, 5, 5), 2, 3, 1, dict(stride=3, padding=1)),
    "stride_gt_kernel": ((1, 2, 14, 13, 12), (1, 2, 4, 3, 5), 2, 2, 1, dict(stride=(3, 4, 5))),
    "stride_aniso_dilation": ((2, 2, 15, 14, 13), (1, 2, 4, 6, 5), 3, (2, 3, 3), 1,
                              dict(stride=(1, 2, 3), padding=(2, 0, 1), dilation=(3, 2, 1))),
    "patchify": ((1, 3, 16, 12, 8), (1, 1, 6, 5, 3), 4, 4, 1, dict(stride=4)),
    "pad_gt_chunks": ((1, 1, 6, 5, 7), (1, 1, 2, 2, 2), 2, 3, 1, dict(padding=4, stride=2)),
    "kernel_covers_input": ((1, 2, 5, 6, 4), (1, 2, 2, 3, 2), 2, (5, 6, 4), 1, {}),
    "huge_stride": ((1, 1, 9, 8, 7), (1, 1, 3, 3, 3), 1, 3, 1, dict(stride=100, padding=1)),
    "groups2": ((2, 4, 10, 9, 8), (1, 4, 3, 4, 5), 6, 3, 2, dict(padding=1, groups=2)),
    "depthwise_stride2": ((1, 4, 12, 11, 10), (1, 1, 5, 4, 3), 8, 3, 4,
                          dict(padding=1, stride=2, groups=4)),
    "convolution_mode": ((1, 2, 9, 8, 7), (1, 2, 3, 3, 3), 3, (2, 3, 4), 1,
                         dict(padding=(1, 1, 2), conv_mode="CONVOLUTION")),
    "batch_chunks": ((5, 2, 8, 7, 6), ((2, 1, 2), 1, 4, 3, 6), 3, 3, 1, dict(padding=1)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_in_memory(name, rng):
    shape, chunks, cout, kernel, groups, args = CASES[name]
    x, w, b = make(rng, shape, cout, kernel, groups)
    result = check(x, chunks, w, b, **args)
    assert result.chunks[1] == (cout,)  # the channel axis is one chunk
    xd = da.from_array(x, chunks=chunks)
    assert result.chunks[0] == xd.chunks[0]  # batch chunks are kept


def test_same_convolution_keeps_chunks(rng):
    x, w, b = make(rng, (1, 1, 16, 12, 10), 1, 3)
    xd = da.from_array(x, chunks=(1, 1, (4, 5, 7), 6, (3, 3, 4)))
    result = ncd.conv3d(xd, w, b, padding=1)
    assert result.chunks == xd.chunks
    x2 = da.from_array(x, chunks=(1, 1, 4, 6, 2))
    assert ncd.conv3d(x2, w, b, stride=2, padding=1).chunks == (
        (1,), (1,), (2, 2, 2, 2), (3, 3), (1, 1, 1, 1, 1))


def test_weight_layouts_and_bias_shapes(rng):
    x = rng.standard_normal((1, 4, 8, 7, 6)).astype(np.float32)
    w6 = rng.standard_normal((2, 3, 2, 3, 3, 3)).astype(np.float32)  # MegEngine grouped
    b = rng.standard_normal((1, 6, 1, 1, 1)).astype(np.float32)
    check(x, (1, 2, 3, 3, 3), w6, b, padding=1, groups=2)
    check(x, (1, 2, 3, 3, 3), w6.reshape(6, 2, 3, 3, 3), b.reshape(6), padding=1, groups=2)


@pytest.mark.parametrize("dtypes", [("float64", "float64"), ("float16", "float16"),
                                    ("float16", "float32"), ("int32", "float32"),
                                    ("float32", "int64")])
def test_dtypes(dtypes, rng):
    x = (rng.standard_normal((1, 2, 7, 6, 5)) * 3).astype(dtypes[0])
    w = (rng.standard_normal((3, 2, 3, 3, 3)) * 2).astype(dtypes[1])
    result = check(x, (1, 2, 3, 2, 4), w, None, padding=1, stride=(1, 2, 1))
    assert result.dtype == nc.conv3d(x, w, padding=1).dtype


def test_gemm_path_allclose(rng):
    # A pointwise layer with many channels: with the dispatcher's current heuristics the
    # whole volume takes the BLAS (GEMM) path and the small blocks the direct kernel, so
    # they need only agree to rounding (GEMM's summation order is BLAS's).
    x, w, b = make(rng, (1, 64, 16, 12, 12), 8, 1)
    check(x, (1, 16, 8, 6, 12), w, b, exact=False)


def test_winograd_layers_agree_to_rounding_and_exactly_under_exact_precision(rng):
    """A dense 3x3x3 U-Net layer: under the default precision the whole volume runs
    Winograd and the blocks (another tile grid) other kernels, so they agree to
    rounding; under "exact" both run the direct kernels, bit for bit (a review found
    the README claimed bits here)."""
    from numbaconv import _dispatch
    from numbaconv._spec import ConvSpec

    x, w, b = make(rng, (1, 32, 16, 16, 16), 32, 3)
    assert nc.get_precision() == "fast"
    assert _dispatch.choose(ConvSpec.from_args(x, w, b, padding=1)[0]) == "winograd"
    got = ncd.conv3d(da.from_array(x, chunks=(1, 32, 8, 8, 8)), w, b, padding=1).compute()
    whole = nc.conv3d(x, w, b, padding=1)
    # Winograd's documented float32 bound (README, Precision): 1e-5 * max|y|
    np.testing.assert_allclose(got, whole, rtol=0, atol=1e-5 * np.abs(whole).max())
    previous = nc.set_precision("exact")
    try:
        check(x, (1, 32, 8, 8, 8), w, b, padding=1)
    finally:
        nc.set_precision(previous)


# ---- Padding modes -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("chunks, args", [
    ((1, 2, 3, 4, 2), dict(padding=1)),
    ((1, 1, 2, 1, 3), dict(padding=(2, 1, 3), stride=2)),
    ((1, 2, (1, 6), (5, 2), 7), dict(padding=(3, 2, 1), dilation=(1, 2, 3), stride=(3, 1, 2))),
])
def test_padding_modes(mode, chunks, args, rng):
    x, w, b = make(rng, (2, 2, 7, 7, 7), 3, 3)
    check(x, chunks, w, b, padding_mode=mode, **args)


def test_padding_mode_at_the_limits(rng):
    x, w, b = make(rng, (1, 1, 4, 3, 5), 2, 3)
    check(x, 2, w, b, padding=(3, 2, 4), padding_mode="reflect")  # padding = size - 1
    check(x, 2, w, b, padding=(4, 3, 5), padding_mode="circular")  # padding = size
    check(x, 2, w, b, padding=(9, 8, 1), padding_mode="replicate")  # any padding
    xd = da.from_array(x, chunks=2)
    # the in-memory function's messages (one ConvSpec checks both)
    with pytest.raises(ValueError, match="padding_mode='reflect'.*axis H: padding 3, input size 3"):
        ncd.conv3d(xd, w, b, padding=3, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode='circular'.*axis D: padding 5, input size 4"):
        ncd.conv3d(xd, w, b, padding=5, padding_mode="circular")


def test_padding_mode_errors(rng):
    x, w, _ = make(rng, (1, 1, 4, 4, 4), 1, 3)
    xd = da.from_array(x, chunks=2)
    with pytest.raises(ValueError, match="padding_mode must be one of .* got 'mirror'"):
        ncd.conv3d(xd, w, padding=1, padding_mode="mirror")
    with pytest.raises(TypeError, match="padding_mode must be a str"):
        ncd.conv3d(xd, w, padding=1, padding_mode=None)
    for mode in ("mirror", None, "Reflect"):  # case-sensitive, as conv3d and PyTorch
        with pytest.raises((ValueError, TypeError)) as memory:
            nc.conv3d(x, w, padding=1, padding_mode=mode)
        with pytest.raises(memory.type, match=re.escape(str(memory.value))):
            ncd.conv3d(xd, w, padding=1, padding_mode=mode)


# ---- Hypothesis: random geometry and chunking -----------------------------------------------
def chunking(size):
    """Random chunks along an axis of ``size``."""
    return st.lists(st.integers(1, size), min_size=1, max_size=size).map(
        lambda cuts: _cuts_to_chunks(size, cuts))


def _cuts_to_chunks(size, cuts):
    edges = sorted({c for c in cuts if 0 < c < size})
    bounds = [0] + edges + [size]
    return tuple(b - a for a, b in zip(bounds, bounds[1:]))


@st.composite
def geometries(draw):
    mode = draw(st.sampled_from(["zeros", "replicate", "circular", "reflect"]))
    k, s, p, d, size = [], [], [], [], []
    for _ in range(3):
        k.append(draw(st.integers(1, 4)))
        d.append(draw(st.integers(1, 3)))
        p.append(draw(st.integers(0, 3)))
        s.append(draw(st.integers(1, 4)))
        smallest = max(1, d[-1] * (k[-1] - 1) + 1 - 2 * p[-1])
        if mode == "reflect":  # PyTorch's limits: padding < size (reflect), <= size (circular)
            smallest = max(smallest, p[-1] + 1)
        elif mode == "circular":
            smallest = max(smallest, p[-1])
        size.append(draw(st.integers(smallest, 14)))
    chunks = tuple(draw(chunking(n)) for n in size)
    return tuple(k), tuple(s), tuple(p), tuple(d), tuple(size), chunks, mode


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(geometries())
def test_random_geometries(geometry):
    kernel, stride, padding, dilation, size, chunks, mode = geometry
    rng = np.random.default_rng(abs(hash(geometry)) % 2**32)
    x = rng.standard_normal((1, 2) + size).astype(np.float32)
    w = rng.standard_normal((2, 2) + kernel).astype(np.float32)
    check(x, (1, 2) + chunks, w, None, stride=stride, padding=padding, dilation=dilation,
          padding_mode=mode)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 60), k=st.integers(1, 7), s=st.integers(1, 6), p=st.integers(0, 6),
       q=st.integers(0, 6), d=st.integers(1, 4), cuts=st.lists(st.integers(1, 60), max_size=12))
def test_axis_plan_invariants(size, k, s, p, q, d, cuts):
    span = d * (k - 1) + 1
    if size + p + q < span:
        return
    chunks = _cuts_to_chunks(size, cuts)
    plan = ncd._axis_plan(chunks, size, p, q, span, s)
    n_out = (size + p + q - span) // s + 1
    assert sum(plan.padded_chunks) == size + p + q and sum(plan.out_chunks) == n_out
    assert plan.left + plan.right == max(span - s, 0)
    assert min(plan.padded_chunks) >= max(plan.left, plan.right)  # no rechunk by dask
    start = out_start = 0
    for j, (chunk, block, out) in enumerate(zip(plan.padded_chunks, plan.block_chunks, plan.out_chunks)):
        block_start = start - (plan.left if j else 0)
        assert block_start == out_start * s  # each block starts at its first window (aligned)
        assert out >= 1 and (block - span) // s + 1 == out
        start += chunk
        out_start += out


#: Chunks along (D, H, W) of a 13 x 11 x 12 volume, smaller than most halos, so that
#: every block's halo crosses one or more chunk boundaries.
HALO_CUTTING_CHUNKS = ((3, 1, 4, 2, 3), (2, 2, 5, 2), (1, 3, 3, 5))


@pytest.mark.parametrize("padding", ["same", "valid", 2, (0, 1, 3)])
@pytest.mark.parametrize("kernel", [1, 2, 3, 4])
def test_every_padding_kernel_dilation_stride_matches_in_memory(padding, kernel, rng):
    """The lazy result equals the in-memory conv3d, shapes and bits, for kernels 1-4,
    dilations 1-3, strides 1-3 ("same": stride 1, as in PyTorch) and every kind of
    padding; "same" with an even kernel pads one more voxel after than before."""
    x = rng.standard_normal((1, 2, 13, 11, 12)).astype(np.float32)
    w = rng.standard_normal((3, 2, kernel, kernel, kernel)).astype(np.float32)
    for dilation in (1, 2, 3):
        for stride in ((1,) if padding == "same" else (1, 2, 3)):
            args = dict(padding=padding, dilation=dilation, stride=stride)
            result = check(x, (1, 2) + HALO_CUTTING_CHUNKS, w, None, **args)
            assert result.shape == nc.conv3d(x, w, **args).shape, args


# ---- Arguments ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape, wshape, args", [
    ((1, 2, 4, 4), (1, 2, 3, 3, 3), {}),
    ((1, 2, 4, 4, 4), (1, 3, 3, 3, 3), {}),
    ((1, 2, 2, 4, 4), (1, 2, 3, 3, 3), {}),
    ((1, 2, 4, 4, 4), (1, 2, 3, 3, 3), dict(stride=0)),
    ((1, 2, 4, 4, 4), (1, 2, 3, 3, 3), dict(stride=(1, 2))),
    ((1, 2, 4, 4, 4), (1, 2, 3, 3, 3), dict(padding=1.5)),
    ((1, 2, 4, 4, 4), (1, 2, 3, 3, 3), dict(groups=2)),
    ((1, 2, 4, 4, 4), (1, 2, 3, 3, 3), dict(conv_mode="corr")),
    ((1, 2, 4, 4, 4), (1, 2, 3, 3, 3), dict(bias=np.zeros(2))),
])
def test_errors_match_in_memory(shape, wshape, args):
    x = np.zeros(shape, np.float32)
    w = np.zeros(wshape, np.float32)
    with pytest.raises((ValueError, TypeError)) as memory:
        nc.conv3d(x, w, **args)
    with pytest.raises(memory.type) as lazy:
        ncd.conv3d(da.from_array(x, chunks=2), w, **args)
    assert str(lazy.value) == str(memory.value)


def test_more_errors():
    w = np.zeros((1, 1, 3, 3, 3), np.float32)
    with pytest.raises(TypeError, match="inp must be a dask.array.Array"):
        ncd.conv3d(np.zeros((1, 1, 4, 4, 4), np.float32), w)
    with pytest.raises(TypeError, match="two|at least one of inp and weight must be floating"):
        ncd.conv3d(da.zeros((1, 1, 4, 4, 4), dtype=np.int32), w.astype(np.int32))
    with pytest.raises(TypeError, match="inp must have a real float or integer dtype"):
        ncd.conv3d(da.zeros((1, 1, 4, 4, 4), dtype=np.complex64), w)
    with pytest.raises(ValueError, match="numba_threads must be an int >= 1"):
        ncd.conv3d(da.zeros((1, 1, 4, 4, 4)), w, numba_threads=0)
    x = da.zeros((1, 1, 8, 4, 4), chunks=4)
    unknown = x[x[:, :, :, 0, 0].ravel() > -1]  # unknown chunk sizes along axis 0
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        ncd.conv3d(unknown, w)


def test_empty_batch():
    x = da.zeros((0, 2, 5, 5, 5), dtype=np.float32, chunks=(1, 2, 2, 2, 2))
    result = ncd.conv3d(x, np.ones((3, 2, 3, 3, 3), np.float32), padding=1, stride=2)
    assert result.shape == (0, 3, 3, 3, 3) and result.dtype == np.float32
    assert result.compute(scheduler="sync").shape == (0, 3, 3, 3, 3)


def test_lazy(rng):
    calls = []

    def source(block):
        calls.append(1)
        return block

    x, w, b = make(rng, (1, 1, 6, 6, 6), 1, 3)
    xd = da.from_array(x, chunks=3).map_blocks(source, dtype=x.dtype, meta=np.empty((0,) * 5, x.dtype))
    result = ncd.conv3d(xd, w, b, padding=1)
    assert calls == [] and isinstance(result, da.Array)  # nothing computed yet
    np.testing.assert_array_equal(result.compute(scheduler="sync"), nc.conv3d(x, w, b, padding=1))


def _max_pressure(result):
    """Most task results dask.order holds at once to store ``result`` chunk by chunk."""
    from dask.order import diagnostics

    stored = da.store(result, np.empty(result.shape, result.dtype), compute=False, lock=False)
    return max(diagnostics(dict(stored.__dask_graph__()))[1])


@pytest.mark.parametrize("mode", ["zeros", "replicate", "reflect", "circular"])
def test_memory_does_not_grow_with_the_volume(mode):
    """A "same" convolution is ordered as a sweep: tripling the volume along D leaves the
    number of results held at once about the same (with da.pad's concatenations for
    zeros it grew with the volume: 152 -> 272 tasks for 2x). The slack allows for
    dask.order's tie-breaking."""
    w = np.ones((1, 1, 3, 3, 3), np.float32)
    small, large = [_max_pressure(ncd.conv3d(da.zeros((1, 1, depth, 64, 64), np.float32,
                                                       chunks=(1, 1, 8, 16, 16)),
                                             w, padding=1, padding_mode=mode))
                    for depth in (64, 192)]
    assert large <= 1.25 * small, (small, large)


# ---- Schedulers and threads -----------------------------------------------------------------
def test_synchronous_scheduler_restores_threads(rng):
    x, w, b = make(rng, (1, 2, 8, 7, 6), 2, 3)
    before = numba.get_num_threads()
    result = ncd.conv3d(da.from_array(x, chunks=3), w, b, padding=1, numba_threads=1)
    np.testing.assert_array_equal(result.compute(scheduler="sync"), nc.conv3d(x, w, b, padding=1))
    assert numba.get_num_threads() == before


def test_threaded_tasks_use_one_numba_thread(rng, monkeypatch):
    seen = []
    inner = ncd._functional.conv3d

    def recording(*args, **kwargs):
        seen.append((threading.current_thread().name, numba.get_num_threads()))
        return inner(*args, **kwargs)

    monkeypatch.setattr(ncd._functional, "conv3d", recording)
    x, w, b = make(rng, (1, 2, 12, 8, 8), 2, 3)
    xd = da.from_array(x, chunks=(1, 2, 4, 4, 8))
    ncd.conv3d(xd, w, b, padding=1).compute(scheduler="threads", num_workers=2)
    assert len(seen) == 6 and all(n == 1 for _, n in seen)
    seen.clear()
    limit = numba.config.NUMBA_NUM_THREADS
    ncd.conv3d(xd, w, b, padding=1, numba_threads=64).compute(scheduler="threads")
    assert all(n == limit for _, n in seen)


def test_processes_scheduler(rng):
    x, w, b = make(rng, (1, 2, 9, 8, 7), 3, 3)
    check(x, (1, 2, 4, 3, 7), w, b, padding=1, stride=(2, 1, 1),
          compute=lambda blocks: dask.compute(*blocks, scheduler="processes", num_workers=2))


def test_distributed_scheduler(client, rng):
    x, w, b = make(rng, (2, 4, 14, 12, 10), 4, 3, groups=2)
    on_cluster = lambda blocks: client.gather(client.compute(blocks))  # noqa: E731
    check(x, (1, 4, 5, 7, 6), w, b, padding=(1, 2, 1), stride=(2, 1, 3), dilation=(1, 2, 1),
          groups=2, compute=on_cluster)
    check(x, (2, 2, 6, 5, 10), w, b, padding=2, padding_mode="circular", groups=2,
          compute=on_cluster)
    # The whole lazy array, computed on the cluster.
    xd = da.from_array(x, chunks=(1, 4, 7, 6, 10))
    result = client.compute(ncd.conv3d(xd, w, b, padding=1, groups=2)).result()
    np.testing.assert_array_equal(result, nc.conv3d(x, w, b, padding=1, groups=2))


def test_distributed_numba_threads(client):
    """Two workers of one thread each on one host: each task gets cores // 2 threads."""
    from dask.system import CPU_COUNT

    got = client.gather([client.submit(ncd.task_numba_threads, None, pure=False, workers=[a])
                         for a in client.scheduler_info(n_workers=-1)["workers"]])
    expected = max(1, min(CPU_COUNT // 2, numba.config.NUMBA_NUM_THREADS))
    assert got == [expected, expected]
    assert client.submit(ncd.task_numba_threads, 1).result() == 1


def test_task_threads_outside_workers():
    assert ncd.task_numba_threads() == numba.get_num_threads()  # main thread: synchronous
    box = []
    t = threading.Thread(target=lambda: box.append(ncd.task_numba_threads()))
    t.start()
    t.join()
    assert box == [1]
    assert ncd.task_numba_threads(10**6) == numba.config.NUMBA_NUM_THREADS


@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_graph_pickles_with_plain_pickle(mode):
    """The task functions are module-level: the graph pickles without cloudpickle."""
    import pickle

    x = da.ones((1, 2, 6, 6, 6), chunks=3)
    result = ncd.conv3d(x, np.ones((2, 2, 3, 3, 3)), np.zeros(2), padding=1, padding_mode=mode)
    graph = pickle.loads(pickle.dumps(dict(result.__dask_graph__())))
    assert len(graph) == len(result.__dask_graph__())
    assert pickle.loads(pickle.dumps(ncd._conv_block)) is ncd._conv_block
