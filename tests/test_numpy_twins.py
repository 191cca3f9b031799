"""The numpy twins of the BLAS kernels (GEMM and Winograd): ``auto`` serves a new
layer's first calls from them while the compiled kernel compiles, so they must give that
kernel's bits exactly, on every path of it (position slabs, pointwise row blocks,
narrow and wide weight gradient products, one or many work items and partial sums,
groups, batches, strides, padding, odd sizes, products with a side of 1)."""
import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import numbaconv as nc
from numbaconv import _backward, _dispatch
from numbaconv._spec import ConvSpec
from numbaconv.kernels import gemm, gemm_numpy, winograd
from numbaconv.kernels.blas import product_nt_add
from numbaconv.kernels.registry import REGISTRY, in_python
from helpers import CASES, configurations, make_case, stride_2_along_w, winograd_layers

#: compiled kernel -> its twin
TWINS = {"gemm": "gemm_numpy", "wgrad_gemm": "wgrad_gemm_numpy",
         "winograd": "winograd_numpy", "wgrad_winograd": "wgrad_winograd_numpy"}

#: Layers on the GEMM paths the table of CASES does not reach, in CASES' form.
GEMM_LAYERS = {
    # pointwise, >= 256 outputs per group on <= 4096 positions: row blocks
    "row_blocks": (2, 24, (5, 6, 7), 512, 1, 1, 0, 1, 1),
    "row_blocks_groups": (1, 16, (4, 4, 4), 1024, 1, 1, 0, 1, 2),
    # >= 256 outputs per group on few positions, any kernel: row blocks of a whole im2col
    "row_blocks_im2col": (2, 6, (3, 4, 5), 256, 3, 1, 1, 1, 1),
    "row_blocks_im2col_strided": (1, 8, (5, 6, 7), 512, 3, 2, 1, 1, 2),
    # > 64 outputs per group: the weight gradient's product untransposed; several slabs
    # (fewer than 4 input channels per group: the weight gradient's position slabs and
    # partial sums; more: its channel blocks, the last one short in "deep")
    "deep": (1, 42, (6, 6, 6), 80, 3, 1, 1, 1, 1),
    "deep_strided": (2, 18, (9, 8, 7), 130, 3, 2, 1, 1, 2),
    "deep_strided_few_inputs": (2, 3, (9, 8, 7), 130, 3, 2, 1, 1, 1),
    "one_output": (1, 5, (6, 7, 8), 1, 3, 1, 1, 1, 1),
    "one_position": (2, 7, (3, 3, 3), 9, 3, 1, 0, 1, 1),
    # taps along depth only: the forward's and the weight gradient's products of planes
    # read in place, with padding beyond the kernel (planes no tap reaches), stride,
    # dilation, groups; a pointwise layer on many positions (the weight gradient's only)
    "depth_taps": (2, 6, (16, 16, 17), 10, (3, 1, 1), 1, (1, 0, 0), 1, 1),
    "depth_taps_far_padding": (1, 4, (3, 4, 2), 6, (2, 1, 1), 1, (4, 0, 0), 1, 2),
    "depth_taps_strided_dilated": (2, 6, (11, 3, 4), 9, (3, 1, 1), (2, 1, 1), (2, 0, 0), (2, 1, 1), 3),
    "pointwise_many_positions": (1, 5, (20, 16, 17), 70, 1, 1, 0, 1, 1),
}


def assert_twins_agree(case, dtype, seed=0, family="gemm"):
    """The twin's forward and weight gradient are the compiled kernels' bit for bit."""
    rng = np.random.default_rng(seed)
    x, w, b, args = make_case(rng, *case, dtype=dtype)
    compiled = nc.conv3d(x, w, b, algorithm=family, **args)
    twin = nc.conv3d(x, w, b, algorithm=TWINS[family], **args)
    assert twin.tobytes() == compiled.tobytes()
    spec = ConvSpec.from_args(x, w, None, **args)[0]
    if not x.size:
        return
    grad_out = rng.standard_normal(spec.out_shape).astype(dtype)
    compiled = _backward.grad_weight(spec, x, grad_out, "wgrad_" + family)
    twin = _backward.grad_weight(spec, x, grad_out, TWINS["wgrad_" + family])
    assert twin.tobytes() == compiled.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES) + list(GEMM_LAYERS))
def test_gemm_twins_give_the_kernels_bits(name, dtype):
    assert_twins_agree({**CASES, **GEMM_LAYERS}[name], dtype)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=stride_2_along_w(max_dilation=3), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_gemm_twins_on_rows_split_at_stride_2(config, seed, dtype):
    """im2col splits each input row into its even and its odd columns where the W
    stride is 2, and copies every tap from one of them: the forward and the weight
    gradient keep the twins' bits, whose im2col slices the input at stride 2."""
    assert_twins_agree(config, dtype, seed)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=stride_2_along_w(two_taps_unpadded=True), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_gemm_twins_on_k2_s2_rows(config, seed, dtype):
    """Kernel 2, stride 2, no padding along W: im2col splits each input row straight
    into its two taps' rows, channel by channel (``gemm.im2col_pairs``), odd widths
    (whose last column no tap reads) and padded depths and heights included."""
    assert_twins_agree(config, dtype, seed)


def test_the_layers_reach_the_paths():
    """GEMM_LAYERS cover row blocks (of the input channels as they are and of a whole
    im2col matrix), both weight gradient products and several partials."""
    def spec(name):
        x, w, b, args = make_case(np.random.default_rng(0), *GEMM_LAYERS[name], dtype=np.float32)
        return ConvSpec.from_args(x, w, None, **args)[0]
    assert gemm.forward_row_blocks(spec("row_blocks")) > 1
    assert gemm.forward_row_blocks(spec("row_blocks_groups")) > 1
    for name in ("row_blocks_im2col", "row_blocks_im2col_strided"):
        assert spec(name).kernel != (1, 1, 1)
        assert gemm.forward_row_blocks(spec(name)) > 1
    for name in ("row_blocks", "row_blocks_groups", "row_blocks_im2col", "row_blocks_im2col_strided",
                 "deep", "deep_strided"):
        assert gemm.weight_grad_block_channels(spec(name)) > 0, name
    assert spec("deep").in_per_group % gemm.weight_grad_block_channels(spec("deep")) != 0
    assert spec("deep").out_per_group > gemm.NARROW_GRAD_ROWS
    assert gemm.weight_grad_block_channels(spec("deep_strided_few_inputs")) == 0
    assert gemm.weight_grad_chunks(spec("deep_strided_few_inputs")) > 1
    for name in ("depth_taps", "depth_taps_far_padding", "depth_taps_strided_dilated",
                 "pointwise_many_positions"):
        assert gemm.weight_grad_depth_taps(spec(name)) and gemm.weight_grad_chunks(spec(name)) > 1, name
        assert gemm.forward_depth_taps(spec(name)) == ("depth" in name), name
    assert not any(gemm.weight_grad_depth_taps(spec(name)) for name in GEMM_LAYERS if "depth" not in name
                   and "pointwise" not in name)


@pytest.mark.parametrize("kernel, channels", [((1, 1, 1), 2), ((3, 1, 1), 2), ((3, 3, 3), 8), ((1, 1, 1), 8)])
def test_twins_of_an_empty_batch(kernel, channels):
    """An empty batch: the twins (which serve while the kernels compile) give the
    kernels' zero weight gradient and empty output on every path (depth taps, slabs,
    channel blocks), where reshaping by -1 once failed."""
    x = np.zeros((0, channels, 4, 5, 6), np.float32)
    w = np.ones((3, channels) + kernel, np.float32)
    spec = ConvSpec.from_args(x, w, None, 1, tuple(k // 2 for k in kernel))[0]
    grad_out = np.zeros(spec.out_shape, np.float32)
    for family in ("gemm", "wgrad_gemm"):
        if family == "gemm":
            twin = nc.conv3d(x, w, padding=spec.padding, algorithm=TWINS[family])
            assert twin.shape == spec.out_shape
        else:
            twin = _backward.grad_weight(spec, x, grad_out, TWINS[family])
            compiled = _backward.grad_weight(spec, x, grad_out, family)
            assert twin.tobytes() == compiled.tobytes() and not twin.any()


def test_planes_past_blas_integers_take_the_slabs():
    """BLAS reads a plane with the channel's volume as its leading dimension, a 32-bit
    integer in scipy's BLAS: a channel of more than 2**31 - 1 voxels (a 1291^3 volume)
    takes the im2col slabs instead, whose sizes are bounded."""
    x, w, b, args = make_case(np.random.default_rng(0), *GEMM_LAYERS["depth_taps"], dtype=np.float32)
    geo = ConvSpec.from_args(x, w, None, **args)[0].geometry
    within = in_python(gemm.planes_are_columns)
    assert within((1, 6, 2, 32768, 32767), (1, 6, 2, 32768, 32767), geo)  # 2**31 - 2**16 voxels
    half, past = (1, 6, 1, 32768, 32768), (1, 6, 2, 32768, 32768)  # 2**30 and 2**31 voxels
    assert within(half, half, geo)
    assert not within(past, past, geo) and not within(past, half, geo) and not within(half, past, geo)


@pytest.mark.parametrize("name", ["deep", "deep_strided", "row_blocks_im2col_strided", "k1",
                                  "many_channels"])
def test_gemm_twins_in_channel_blocks_of_small_slabs(monkeypatch, name):
    """The weight gradient's channel blocks summing over many slabs of 64 positions and
    over the samples, beta = 1 product after product: the twin's bits (the forward is
    untouched by the setting)."""
    monkeypatch.setattr(gemm, "CHANNEL_SLAB_BYTES", 1)
    case = {**CASES, **GEMM_LAYERS}[name]
    x, w, b, args = make_case(np.random.default_rng(0), *case, dtype=np.float32)
    spec = ConvSpec.from_args(x, w, None, **args)[0]
    block_channels = gemm.weight_grad_block_channels(spec)
    assert block_channels > 0
    assert gemm.weight_grad_channel_slab(spec, block_channels) in (gemm.MIN_SLAB_POSITIONS, np.prod(spec.out_size))
    assert_twins_agree(case, np.float32)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=configurations(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_gemm_twins_on_random_layers(case, dtype, seed):
    assert_twins_agree(case, dtype, seed)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=winograd_layers(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_winograd_twins_on_random_layers(case, dtype, seed):
    assert_twins_agree(case, dtype, seed, family="winograd")


@pytest.mark.parametrize("staged", [False, True])
@pytest.mark.parametrize("block_bytes", [1, 20_000, winograd.BLOCK_BYTES])
def test_winograd_twins_in_blocks_and_chunks(monkeypatch, block_bytes, staged):
    """Blocks of one tile row up to whole (sample, group)s, item by item or stage by
    stage (the forward); the weight gradient's partial sums each over several blocks,
    of several samples and groups."""
    monkeypatch.setattr(winograd, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(winograd, "STAGED_BYTES", 1 << 40 if staged else 0)
    monkeypatch.setattr(winograd, "STAGED_NARROW_TILES", 1 << 20)
    case = (2, 12, (9, 7, 8), 8, 3, 1, 1, 1, 2)
    x, w, b, args = make_case(np.random.default_rng(0), *case, dtype=np.float32)
    spec = ConvSpec.from_args(x, w, None, **args)[0]
    assert winograd.staged(spec) == staged
    if block_bytes == 1 and not staged:
        assert winograd.block_rows(spec) == 1 and winograd.weight_grad_chunks(spec) > 1
    if staged:  # whole (sample, group)s: 4 items, each in its own scratch row
        assert winograd.item_rows(spec) == winograd._tile_rows(spec)[0] > 1
        assert spec.batch * spec.groups == 4 and winograd.weight_grad_chunks(spec) == 1
    for dtype in (np.float32, np.float64):
        assert_twins_agree(case, dtype, family="winograd")
        x, w, b, args = make_case(np.random.default_rng(1), *case, dtype=dtype)
        parallel = nc.conv3d(x, w, b, algorithm="winograd", **args)
        for twin in ("winograd_threads", "winograd_serial"):
            assert nc.conv3d(x, w, b, algorithm=twin, **args).tobytes() == parallel.tobytes(), twin
        spec = ConvSpec.from_args(x, w, None, **args)[0]  # this dtype's (the kernels' types)
        grad_out = np.random.default_rng(2).standard_normal(spec.out_shape).astype(dtype)
        gw = _backward.grad_weight(spec, x, grad_out, "wgrad_winograd")
        for twin in ("wgrad_winograd_threads", "wgrad_winograd_serial"):
            assert _backward.grad_weight(spec, x, grad_out, twin).tobytes() == gw.tobytes(), twin


@numba.njit(cache=False)
def _add_products(a, b, out, starts):
    """blas.product_nt_add on blocks of larger matrices (rows strided), from njit code."""
    k0, k1 = starts
    product_nt_add(a[:, k0:k1], b[:, k0:k1], out[1:, 2:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n, k", [(5, 7, 300), (1, 9, 4), (6, 1, 33), (1, 1, 17), (40, 3, 1)])
def test_product_nt_add_adds_one_product_in_place(m, n, k, dtype):
    """``out += a @ b.T`` (Winograd's weight gradient): the float64 product added, to
    rounding, and only in the destination block; the twin's scipy call gives its bits."""
    rng = np.random.default_rng(m * n * k)
    a = rng.standard_normal((m, k + 3)).astype(dtype)
    b = rng.standard_normal((n, k + 3)).astype(dtype)
    out = rng.standard_normal((m + 1, n + 2)).astype(dtype)
    expected = out.astype(np.float64)
    expected[1:, 2:] += a[:, 1:k + 1].astype(np.float64) @ b[:, 1:k + 1].astype(np.float64).T
    compiled = out.copy()
    _add_products(a, b, compiled, (1, k + 1))
    eps = np.finfo(dtype).eps
    scale = 1 + np.abs(out[1:, 2:]) + np.abs(a[:, 1:k + 1]) @ np.abs(b[:, 1:k + 1]).T
    assert np.all(np.abs(compiled[1:, 2:] - expected[1:, 2:]) <= (k + 2) * eps * scale)
    assert compiled[0].tobytes() == out[0].tobytes() and compiled[:, :2].tobytes() == out[:, :2].tobytes()
    twin = out.copy()
    block = np.ascontiguousarray(twin[1:, 2:])
    gemm_numpy.product_nt_add(np.ascontiguousarray(a[:, 1:k + 1]), np.ascontiguousarray(b[:, 1:k + 1]),
                              block)
    assert block.tobytes() == compiled[1:, 2:].tobytes()


def test_twins_serve_auto_while_the_kernel_compiles(monkeypatch):
    """A plan whose GEMM kernel is not ready runs the twin, and moves to the kernel once
    it is; both calls give the same bits."""
    for kernel, twin in TWINS.items():
        assert REGISTRY[kernel].fallbacks[-1] == twin  # the floor: nothing to compile
        assert REGISTRY[twin].blas and REGISTRY[twin].bitwise == REGISTRY[kernel].bitwise
    rng = np.random.default_rng(5)
    x, w, b, args = make_case(rng, 1, 64, (8, 9, 10), 80, 1, 1, 0, 1, 1, dtype=np.float32)
    spec = ConvSpec.from_args(x, w, b, **args)[0]
    assert _dispatch.choose(spec) == "gemm"
    nc.conv3d(x, w, b, algorithm="gemm", **args)  # compiled (or loaded) before the plan
    ready = {"gemm": False}
    monkeypatch.setattr(_dispatch, "_kernel_ready", lambda kernel, dtype: ready.get(kernel.name, True))
    real = _dispatch._kernel
    monkeypatch.setattr(_dispatch, "_kernel", lambda name, dtype, wait=None:
                        None if name in ready and not ready[name] else real(name, dtype, wait))
    plan = _dispatch.Plan(spec, "auto")
    assert plan.state[0] == ["gemm", "gemm_numpy"]
    w6 = w.reshape(spec.group_weight_shape)
    first = np.empty(spec.out_shape, np.float32)
    plan.run(x, w6, b.reshape(-1), first)
    assert plan.kernel_name == "gemm_numpy"
    ready["gemm"] = True
    second = np.empty(spec.out_shape, np.float32)
    plan.run(x, w6, b.reshape(-1), second)
    assert plan.kernel_name == "gemm"
    assert first.tobytes() == second.tobytes()
