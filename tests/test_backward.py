"""Gradients and the transposed convolution, against MegEngine's gradients, exact
directional derivatives of the float64 reference, and torch autograd."""
import glob
import itertools
import math
import os

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import numbaconv as nc
from numbaconv import _backward, _dispatch
from numbaconv._spec import ConvSpec
from numbaconv.kernels.registry import REGISTRY, readonly
from numbaconv.reference import conv3d_reference, conv_transpose3d_reference
from helpers import (CASES, GOLDEN_DATA, assert_matches_reference, assert_runs_bitwise_equal,
                     configurations, describe, load_golden, make_case, outputs_per_thread_count,
                     python_env, run_script, stride_2_along_w)

CONV_GOLDEN = sorted(p for p in glob.glob(os.path.join(GOLDEN_DATA, "conv3d_*.npz")) if "_f16_" not in p)
TRANSPOSE_GOLDEN = sorted(glob.glob(os.path.join(GOLDEN_DATA, "conv_transpose3d_*.npz")))


def close(actual, expected, rtol=2e-5):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


# ---- MegEngine's gradients -----------------------------------------------------------
@pytest.mark.parametrize("path", CONV_GOLDEN, ids=[os.path.basename(p)[:-4] for p in CONV_GOLDEN])
def test_megengine_golden_gradients(path):
    z, meta = load_golden(path)
    args = dict(stride=meta["stride"], padding=meta["padding"], dilation=meta["dilation"],
                groups=meta["groups"])
    grad_input, grad_weight, grad_bias = nc.conv3d_backward(z["grad_out"], z["inp"], z["weight"], **args)
    assert grad_weight.shape == z["weight"].shape  # 6-D stays 6-D
    assert grad_input.dtype == grad_weight.dtype == np.float32
    close(grad_input, z["grad_inp"])
    close(grad_weight, z["grad_weight"])
    if meta["bias"]:
        close(grad_bias, z["grad_bias"])
    assert grad_bias.shape == (1, meta["out_channels"], 1, 1, 1)


@pytest.mark.parametrize("path", TRANSPOSE_GOLDEN, ids=[os.path.basename(p)[:-4] for p in TRANSPOSE_GOLDEN])
def test_megengine_golden_transposed(path):
    z, meta = load_golden(path)
    args = dict(stride=meta["stride"], padding=meta["padding"], output_padding=meta["output_padding"],
                dilation=meta["dilation"], groups=meta["groups"])
    bias = z["bias"] if "bias" in z.files else None
    out = nc.conv_transpose3d(z["inp"], z["weight"], bias, **args)
    assert out.shape == z["out"].shape
    close(out, z["out"])
    grad_input, grad_weight, grad_bias = nc.conv_transpose3d_backward(z["grad_out"], z["inp"], z["weight"], **args)
    close(grad_input, z["grad_inp"])
    close(grad_weight, z["grad_weight"])
    if bias is not None:
        close(grad_bias, z["grad_bias"])
    module = nc.ConvTranspose3d(**meta["ctor_args"])
    assert repr(module) == meta["repr"]
    assert module.weight.shape == z["weight"].shape
    module.load_state_dict({"weight": z["weight"], **({"bias": bias} if bias is not None else {})})
    close(module(z["inp"]), z["out"])


# ---- Exact directional derivatives of the reference ----------------------------------
def check_gradients(x, w, b, grad_out, args, conv_mode="cross_correlation"):
    """conv3d is linear in x and in w, so <grad_x, V> = <conv(V, w), G> and
    <grad_w, U> = <conv(x, U), G> exactly; check both with the float64 reference."""
    rng = np.random.default_rng(1)
    gi, gw, gb = nc.conv3d_backward(grad_out, x, w, conv_mode=conv_mode, **args)
    v, u = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
    dx = np.sum(conv3d_reference(v, w, None, conv_mode=conv_mode, **args) * grad_out)
    dw = np.sum(conv3d_reference(x, u, None, conv_mode=conv_mode, **args) * grad_out)
    scale_x = np.sum(np.abs(conv3d_reference(np.abs(v), np.abs(w), None, conv_mode=conv_mode, **args)
                            * np.abs(grad_out))) + 1e-300
    scale_w = np.sum(np.abs(conv3d_reference(np.abs(x), np.abs(u), None, conv_mode=conv_mode, **args)
                            * np.abs(grad_out))) + 1e-300
    assert abs(np.sum(gi * v) - dx) <= 1e-10 * scale_x
    assert abs(np.sum(gw * u) - dw) <= 1e-10 * scale_w
    np.testing.assert_allclose(gb.reshape(-1), grad_out.sum(axis=(0, 2, 3, 4)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_match_reference(name, rng):
    x, w, b, args = make_case(rng, *CASES[name], dtype=np.float64)
    out_shape = conv3d_reference(x, w, None, **args).shape
    check_gradients(x, w, b, rng.standard_normal(out_shape), args)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configurations(), mode=st.sampled_from(["cross_correlation", "convolution"]),
       seed=st.integers(0, 2**32 - 1))
def test_random_gradients_match_reference(config, mode, seed):
    rng = np.random.default_rng(seed)
    x, w, b, args = make_case(rng, *config, dtype=np.float64)
    out_shape = conv3d_reference(x, w, None, conv_mode=mode, **args).shape
    check_gradients(x, w, b, rng.standard_normal(out_shape), args, conv_mode=mode)


@pytest.mark.parametrize("algorithm", ["wgrad_direct", "wgrad_blocked", "wgrad_gemm"])
@pytest.mark.parametrize("name", ["aniso", "groups3", "depthwise_k3", "many_channels", "stride_gt_kernel"])
def test_weight_gradient_paths(name, algorithm, rng):
    x, w, b, args = make_case(rng, *CASES[name], dtype=np.float64)
    spec = ConvSpec.from_args(x, w, None, **args)[0]
    grad_out = rng.standard_normal(spec.out_shape)
    gw = _backward.grad_weight(spec, x, grad_out, algorithm)
    expected = nc.conv3d_backward(grad_out, x, w, need_input_grad=False, **args)[1]
    np.testing.assert_allclose(gw.reshape(expected.shape), expected, rtol=1e-11, atol=1e-11)


def test_gradients_not_asked_for_are_none(rng):
    x, w, b, args = make_case(rng, *CASES["groups3"], dtype=np.float32)
    grad_out = np.ones(nc.conv3d(x, w, **args).shape, np.float32)
    gi, gw, gb = nc.conv3d_backward(grad_out, x, w, need_input_grad=False, **args)
    assert gi is None and gw is not None and gb is not None
    gi, gw, gb = nc.conv3d_backward(grad_out, x, w, need_weight_grad=False, **args)
    assert gw is None and gi is not None


def test_weight_gradient_keeps_layout(rng):
    x, w, b, args = make_case(rng, *CASES["groups3"], dtype=np.float64)
    grad_out = rng.standard_normal(nc.conv3d(x, w, **args).shape)
    six = nc.conv3d_backward(grad_out, x, w, **args)[1]
    torch_layout = w.reshape((-1,) + w.shape[2:])
    five = nc.conv3d_backward(grad_out, x, torch_layout, **args)[1]
    assert six.shape == w.shape and five.shape == torch_layout.shape
    np.testing.assert_array_equal(five, six.reshape(five.shape))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_gradient_dtypes(dtype, rng):
    x, w, b, args = make_case(rng, *CASES["k2"], dtype=dtype)
    grad_out = np.ones(nc.conv3d(x, w, **args).shape, dtype)
    for grad in nc.conv3d_backward(grad_out, x, w, **args):
        assert grad.dtype == dtype


def test_transposed_is_adjoint_of_forward(rng):
    """<conv3d(x, w), y> == <x, conv_transpose3d(y, w)>, groups included."""
    x, w, b, args = make_case(rng, 2, 6, (7, 8, 9), 9, (3, 2, 1), (2, 1, 3), (1, 0, 1), (1, 2, 1), 3,
                              np.float64)
    y = rng.standard_normal(nc.conv3d(x, w, **args).shape)
    spec = ConvSpec.from_args(x, w, None, **args)[0]
    output_padding = tuple(i + 2 * p - d * (k - 1) - 1 - (o - 1) * s for i, p, d, k, o, s in zip(
        spec.in_size, spec.padding, spec.dilation, spec.kernel, spec.out_size, spec.stride))
    xt = nc.conv_transpose3d(y, w, None, output_padding=output_padding, **args)
    assert xt.shape == x.shape
    np.testing.assert_allclose(np.sum(nc.conv3d(x, w, **args) * y), np.sum(x * xt), rtol=1e-12)


# ---- Modules -------------------------------------------------------------------------
def test_module_backward_accumulates(rng):
    m = nc.Conv3d(4, 6, 3, padding=1, groups=2, rng=0)
    x = rng.standard_normal((2, 4, 5, 6, 7)).astype(np.float32)
    grad_out = rng.standard_normal(m(x).shape).astype(np.float32)
    expected = nc.conv3d_backward(grad_out, x, m.weight, padding=1, groups=2)
    grad_input = m.backward(grad_out)
    np.testing.assert_array_equal(grad_input, expected[0])
    np.testing.assert_array_equal(m.grads["weight"], expected[1])
    np.testing.assert_array_equal(m.grads["bias"], expected[2])
    m(x)
    m.backward(grad_out)
    np.testing.assert_allclose(m.grads["weight"], 2 * expected[1], rtol=1e-6)
    m.zero_grad()
    assert not m.grads["weight"].any() and not m.grads["bias"].any()
    assert set(m.grads) == set(m.state_dict())


def test_module_backward_needs_training_forward(rng):
    m = nc.Conv3d(2, 2, 3)
    with pytest.raises(RuntimeError, match="forward call in training mode"):
        m.backward(np.zeros((1, 2, 1, 1, 1), np.float32))
    m.eval()
    m(np.zeros((1, 2, 3, 3, 3), np.float32))
    with pytest.raises(RuntimeError, match="training=False"):
        m.backward(np.zeros((1, 2, 1, 1, 1), np.float32))


def test_grouped_conv_transpose_module(rng):
    m = nc.ConvTranspose3d(4, 6, (2, 3, 1), stride=(2, 1, 3), padding=(0, 1, 0), output_padding=(1, 0, 2),
                           groups=2, rng=0)
    assert m.weight.shape == (2, 2, 3, 2, 3, 1)
    x = rng.standard_normal((2, 4, 3, 4, 5)).astype(np.float64)
    out = m(x)
    assert out.shape == (2, 6, 7, 4, 15)  # (in-1)*s - 2p + d(k-1) + op + 1
    grad_out = rng.standard_normal(out.shape)
    grad_input = m.backward(grad_out)
    expected = nc.conv_transpose3d_backward(grad_out, x, m.weight, (2, 1, 3), (0, 1, 0), (1, 0, 2), 1, 2)
    np.testing.assert_array_equal(grad_input, expected[0])
    np.testing.assert_array_equal(m.grads["weight"], expected[1].astype(np.float32))


# ---- Bad input -----------------------------------------------------------------------
def test_bad_backward_input(rng):
    x, w, b, args = make_case(rng, *CASES["k2"], dtype=np.float32)
    shape = nc.conv3d(x, w, **args).shape
    with pytest.raises(ValueError, match=r"grad_output must have the forward output's shape"):
        nc.conv3d_backward(np.zeros(shape[:-1] + (shape[-1] + 1,), np.float32), x, w, **args)
    with pytest.raises(TypeError, match="grad_output must have a real float or integer dtype"):
        nc.conv3d_backward(np.zeros(shape, np.complex64), x, w, **args)
    with pytest.raises(TypeError, match="need_input_grad must be a bool"):
        nc.conv3d_backward(np.zeros(shape, np.float32), x, w, need_input_grad="yes", **args)
    with pytest.raises(ValueError, match="stride entries must be >= 1"):
        nc.conv3d_backward(np.zeros(shape, np.float32), x, w, stride=0)


def test_bad_transposed_input(rng):
    x = rng.standard_normal((1, 4, 3, 3, 3)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="output_padding must be smaller than stride"):
        nc.conv_transpose3d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="channel mismatch"):
        nc.conv_transpose3d(x[:, :3], w)
    with pytest.raises(ValueError, match="padding=.* is too large"):
        nc.conv_transpose3d(x, w, padding=5)
    with pytest.raises(ValueError, match="grad_output must have the transposed convolution's output shape"):
        nc.conv_transpose3d_backward(np.zeros((1, 2, 4, 4, 4), np.float32), x, w)
    with pytest.raises(ValueError, match="output_padding must be smaller than stride"):
        nc.ConvTranspose3d(4, 2, 3, stride=1, output_padding=1)


# ---- The GEMM-and-scatter input gradient ----------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configurations(), seed=st.integers(0, 2**32 - 1), blocks=st.booleans())
def test_gemm_scatter_input_gradient_matches_the_phases(config, seed, blocks):
    """Every stride, dilation, padding (larger than the kernel too) and group count: the
    scattered product equals the phases' direct sums to float64 rounding, in channel
    blocks where the layer has enough input channels per group, and made whole."""
    from numbaconv.kernels import gemm
    rng = np.random.default_rng(seed)
    x, w, b, args = make_case(rng, *config, dtype=np.float64)
    spec = ConvSpec.from_args(x, w, None, args["stride"], args["padding"], args["dilation"],
                              args["groups"])[0]
    with pytest.MonkeyPatch.context() as patch:
        if not blocks:
            patch.setattr(gemm, "SCATTER_BLOCK_MAX_OUTPUTS", 0)
        assert_scatter_matches_the_phases(spec, w, rng)


def assert_scatter_matches_the_phases(spec, w, rng):
    """The GEMM-and-scatter input gradient of ``spec`` (float64 weight ``w``, a random
    grad_output) equals the phases' direct sums to float64 rounding."""
    g = rng.standard_normal(spec.out_shape)
    w6 = np.ascontiguousarray(w.reshape(spec.group_weight_shape))
    scattered = _backward.grad_input(spec, g, w6, "gemm_scatter")
    direct = _backward.grad_input(spec, g, w6, "direct")
    scale = _backward.grad_input(spec, np.abs(g), np.abs(w6), "direct")
    assert np.all(np.abs(scattered - direct) <= 1e-13 * (scale + 1e-300))


def test_gemm_pointwise_row_blocks(monkeypatch, rng):
    """Pointwise layers on few positions split their output rows into blocks, each one
    product written straight into the output (forced here with blocks of 2 rows): the
    forward pass with groups, a batch and a bias against the reference, and the input
    gradient's product (such a layer) against the phases, with stride and groups."""
    from numbaconv.kernels import gemm
    monkeypatch.setattr(gemm, "ROW_BLOCK_ROWS", 2)
    x = rng.standard_normal((2, 6, 3, 4, 5)).astype(np.float32)
    w = rng.standard_normal((10, 3, 1, 1, 1)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    assert gemm.forward_row_blocks(ConvSpec.from_args(x, w, b, 1, 0, 1, 2)[0]) == 2
    assert_matches_reference(nc.conv3d(x, w, b, groups=2, algorithm="gemm"), x, w, b, groups=2)
    for stride, groups in ((1, 1), (2, 2)):
        x = rng.standard_normal((2, 4, 7, 6, 5))
        w = rng.standard_normal((6, 4 // groups, 3, 3, 3))
        assert_scatter_matches_the_phases(ConvSpec.from_args(x, w, None, stride, 1, 1, groups)[0],
                                          w, rng)


@pytest.mark.parametrize("kernel, stride, padding", [(1, 1, 0), (3, 2, 1), ((2, 1, 3), 1, (0, 1, 1))])
def test_gemm_weight_gradient_channel_blocks(monkeypatch, rng, kernel, stride, padding):
    """The weight gradient by blocks of input channels (2 per block here, with groups),
    each summing over the samples and over slabs of 64 positions in order: against the
    float64 sum over samples and positions (the direct kernel's, to its rounding)."""
    from numbaconv.kernels import gemm
    monkeypatch.setattr(gemm, "CHANNEL_SLAB_BYTES", 1)
    x = rng.standard_normal((3, 16, 9, 10, 11))
    k = kernel if isinstance(kernel, tuple) else (kernel,) * 3
    w = rng.standard_normal((10, 8) + k)
    spec = ConvSpec.from_args(x, w, None, stride, padding, 1, 2)[0]
    assert gemm.weight_grad_block_channels(spec) == 2
    positions = math.prod(spec.out_size)
    assert positions > gemm.weight_grad_channel_slab(spec, 2) or k == (1, 1, 1)
    grad_out = rng.standard_normal(spec.out_shape)
    gw = _backward.grad_weight(spec, x, grad_out, "wgrad_gemm")
    expected = _backward.grad_weight(spec, x, grad_out, "wgrad_direct")
    scale = _backward.grad_weight(spec, np.abs(x), np.abs(grad_out), "wgrad_direct")
    assert np.all(np.abs(gw - expected) <= 1e-13 * scale)


def _col2im_and_twin(spec, rng, dtype):
    """(the ``col2im`` kernel's input gradient, its numpy twin's) from the same random
    tap products, each written over NaN."""
    from numbaconv.kernels import gemm_numpy
    cols = readonly(rng.standard_normal((spec.batch * spec.in_channels, math.prod(spec.kernel))
                                        + spec.out_size).astype(dtype))
    by_kernel, by_twin = np.full(spec.in_shape, np.nan, dtype), np.full(spec.in_shape, np.nan, dtype)
    _dispatch._kernel("col2im", dtype)(cols, spec.kernel_geometry, by_kernel.reshape((-1,) + spec.in_size))
    gemm_numpy.col2im(cols, spec.kernel_geometry, by_twin.reshape((-1,) + spec.in_size))
    return by_kernel, by_twin


def _scatter_channel_blocks_and_twin(spec, w, grad_out, block_channels, slab_planes):
    """(the ``scatter_channel_blocks`` kernel's input gradient, its numpy twin's), each
    written over NaN."""
    from numbaconv.kernels import gemm_numpy
    w3 = np.ascontiguousarray(w.reshape(spec.groups, spec.out_per_group, -1))
    by_kernel = np.full(spec.in_shape, np.nan, grad_out.dtype)
    by_twin = by_kernel.copy()
    with _dispatch.single_threaded_blas():
        _dispatch._kernel("scatter_channel_blocks", grad_out.dtype)(
            readonly(w3), readonly(grad_out), by_kernel, spec.kernel_geometry, block_channels, slab_planes)
        gemm_numpy.scatter_channel_blocks(w3, grad_out, by_twin, spec.kernel_geometry, block_channels,
                                          slab_planes)
    return by_kernel, by_twin


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configurations(), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_col2im_kernel_same_bits_as_the_numpy_scatter(config, seed, dtype):
    """The scatter's parallel kernel adds each element's taps in the order of numpy's
    strided adds (the tier that serves while it compiles, or after a fork): the same
    bits, on every stride, dilation, padding (larger than the kernel too) and group
    count."""
    rng = np.random.default_rng(seed)
    x, w, b, args = make_case(rng, *config, dtype=dtype)
    spec = ConvSpec.from_args(x, w, None, args["stride"], args["padding"], args["dilation"],
                              args["groups"])[0]
    np.testing.assert_array_equal(*_col2im_and_twin(spec, rng, dtype))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configurations(), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]), block_channels=st.integers(1, 4),
       slab_planes=st.integers(1, 3))
def test_scatter_channel_blocks_kernel_same_bits_as_its_twin(config, seed, dtype, block_channels,
                                                             slab_planes):
    """The input gradient by blocks of input channels, slab by slab of output planes: the
    kernel's bits are its numpy twin's (the tier that serves while it compiles), and
    both equal the phases' direct sums to rounding, on every stride, dilation, padding
    (larger than the kernel too), group count, block and slab (uneven ones included)."""
    rng = np.random.default_rng(seed)
    x, w, b, args = make_case(rng, *config, dtype=dtype)
    spec = ConvSpec.from_args(x, w, None, args["stride"], args["padding"], args["dilation"],
                              args["groups"])[0]
    grad_out = rng.standard_normal(spec.out_shape).astype(dtype)
    by_kernel, by_twin = _scatter_channel_blocks_and_twin(spec, w, grad_out, block_channels, slab_planes)
    np.testing.assert_array_equal(by_kernel, by_twin)
    w6 = w.reshape(spec.group_weight_shape).astype(np.float64)
    expected = _backward.grad_input(spec, grad_out.astype(np.float64), w6, "direct")
    scale = _backward.grad_input(spec, np.abs(grad_out).astype(np.float64), np.abs(w6), "direct")
    eps = np.finfo(dtype).eps * (spec.out_per_group + math.prod(spec.kernel))
    assert np.all(np.abs(by_kernel - expected) <= eps * scale + 1e-300)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=stride_2_along_w(), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from([np.float32, np.float64]), block_channels=st.integers(1, 3),
       slab_planes=st.integers(1, 3))
def test_tap_pairs_along_w_same_bits_as_the_twins(config, seed, dtype, block_channels, slab_planes):
    """Taps added in pairs along W (stride 2, dilation 1) keep each element's taps in
    raster order: ``col2im`` and ``scatter_channel_blocks`` give their numpy twins'
    bits, which add tap by tap."""
    rng = np.random.default_rng(seed)
    x, w, b, args = make_case(rng, *config, dtype=dtype)
    spec = ConvSpec.from_args(x, w, None, args["stride"], args["padding"], args["dilation"],
                              args["groups"])[0]
    np.testing.assert_array_equal(*_col2im_and_twin(spec, rng, dtype))
    grad_out = rng.standard_normal(spec.out_shape).astype(dtype)
    np.testing.assert_array_equal(*_scatter_channel_blocks_and_twin(spec, w, grad_out, block_channels,
                                                                    slab_planes))


def test_gemm_scatter_in_channel_blocks_matches_the_phases(rng):
    """``gemm_scatter`` takes the channel blocks on layers with at least 4 input channels
    per group: strided, dilated, grouped, with a batch, against the phases' direct sums."""
    from numbaconv.kernels import gemm
    for shape, cout, kernel, stride, padding, dilation, groups in [
            ((2, 8, 7, 6, 9), 6, 3, 2, 1, 1, 1), ((1, 12, 9, 8, 7), 6, (3, 2, 1), (2, 1, 3), 2, (1, 2, 1), 3),
            ((3, 10, 5, 5, 5), 8, 1, 2, 0, 1, 2)]:
        x = rng.standard_normal(shape)
        k = kernel if isinstance(kernel, tuple) else (kernel,) * 3
        w = rng.standard_normal((cout, shape[1] // groups) + k)
        spec = ConvSpec.from_args(x, w, None, stride, padding, dilation, groups)[0]
        assert gemm.scatter_block_channels(spec) > 0
        assert_scatter_matches_the_phases(spec, w, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tap_products_read_the_weight_transposed(dtype, rng):
    """The scatter's products (BLAS reading the weight transposed, by blocks of rows and
    positions, from a given first row) against a float64 product, and bit for bit
    against the numpy twin that serves while the kernel compiles; with groups, samples,
    and blocks that do and do not divide the rows and positions."""
    from numbaconv.kernels import gemm_numpy
    kernel = _dispatch._kernel("tap_products", dtype)
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    for groups, cout_g, rows, batch, positions, first, count, row_blocks, column_blocks in [
            (1, 1, 1, 1, 1, 0, 1, 1, 1), (1, 64, 1728, 1, 216, 0, 1728, 13, 1),
            (2, 7, 33, 2, 500, 0, 33, 3, 2), (3, 4, 9, 1, 7, 2, 5, 2, 3),
            (1, 16, 300, 1, 2, 0, 300, 1, 1), (1, 16, 300, 2, 40, 270, 30, 2, 3)]:
        w3 = rng.standard_normal((groups, cout_g, rows)).astype(dtype)
        grads = rng.standard_normal((batch * groups, cout_g, positions)).astype(dtype)
        by_kernel = np.full((batch * groups, count, positions), np.nan, dtype)
        by_twin = by_kernel.copy()
        with _dispatch.single_threaded_blas():
            kernel(readonly(w3), readonly(grads), by_kernel, first, row_blocks, column_blocks)
            gemm_numpy.tap_products(w3, grads, by_twin, first, row_blocks, column_blocks)
        expected = np.stack([w3[i % groups, :, first:first + count].T.astype(np.float64) @ grads[i]
                             for i in range(batch * groups)])
        np.testing.assert_allclose(by_kernel, expected, rtol=tolerance, atol=tolerance * cout_g)
        np.testing.assert_array_equal(by_kernel, by_twin)


@pytest.mark.parametrize("twin", [False, True])
def test_gemm_scatter_units_do_not_change_the_bits(rng, monkeypatch, twin):
    """The products and their scatter go by units of whole samples, or of channels of one
    (sample, group), within SCATTER_UNIT_BYTES: units of every kind (several samples,
    one sample, channels of one group) at 1 and 2 threads give the bits of one
    unit holding everything, with the kernels and with their numpy twins (the whole
    products, not the channel blocks, which would take this layer)."""
    from numbaconv.kernels import gemm
    monkeypatch.setattr(gemm, "SCATTER_BLOCK_MAX_OUTPUTS", 0)
    x, w, b, args = make_case(rng, 3, 12, (7, 6, 9), 8, 3, 2, 1, 1, 2, np.float32)
    spec = ConvSpec.from_args(x, w, None, args["stride"], args["padding"], args["dilation"],
                              args["groups"])[0]
    grad = rng.standard_normal(spec.out_shape).astype(np.float32)
    w6 = np.ascontiguousarray(w.reshape(spec.group_weight_shape))
    if twin:
        monkeypatch.setattr(_dispatch, "called_kernel", lambda name, dtype, wait=0: None)
    whole = _backward.grad_input(spec, grad, w6, "gemm_scatter")
    channel = math.prod(spec.kernel) * math.prod(spec.out_size) * 4
    per_sample = spec.groups * spec.in_per_group * channel
    seen = set()
    assert gemm.scatter_block_channels(spec) == 0
    for budget in (2 * per_sample, per_sample, per_sample - 1, 5 * channel, 2 * channel, 1):
        monkeypatch.setattr(_backward, "SCATTER_UNIT_BYTES", budget)
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):  # one-core machines too
            previous = numba.get_num_threads()
            numba.set_num_threads(threads)
            try:
                units = _backward._scatter_units(spec.batch, spec.groups, spec.in_per_group, channel)
                out = _backward.grad_input(spec, grad, w6, "gemm_scatter")
            finally:
                numba.set_num_threads(previous)
            seen.add((units[0][1] - units[0][0], units[0][3] - units[0][2]))
            assert out.tobytes() == whole.tobytes(), (budget, threads, units)
    # (items, channels) of a unit: two samples, one sample, channels of one group
    assert seen == {(4, 6), (2, 6), (1, 6), (1, 5), (1, 4)}


def test_auto_takes_gemm_scatter_for_strided_and_deep_layers():
    def spec(cin, cout, size, k, stride=1, groups=1):
        x = np.zeros((1, cin, size, size, size), np.float32)
        w = np.zeros((cout, cin // groups, k, k, k), np.float32)
        return ConvSpec.from_args(x, w, None, stride, k // 2, 1, groups)[0]
    assert _backward._scatter_pays(spec(32, 64, 48, 3, stride=2))      # encoder downsampling
    assert _backward._scatter_pays(spec(256, 256, 6, 3))               # bottleneck
    assert _backward._scatter_pays(spec(512, 256, 6, 1))               # pointwise, small volume
    assert _backward._scatter_pays(spec(512, 512, 10, 1))
    assert not _backward._scatter_pays(spec(256, 128, 12, 1))          # pointwise, larger volumes
    assert not _backward._scatter_pays(spec(256, 128, 28, 1))
    assert not _backward._scatter_pays(spec(64, 128, 56, 3))           # large stride-1 volume
    assert not _backward._scatter_pays(spec(96, 96, 28, 3, groups=96))  # depthwise
    # products over the cap: in channel blocks they never exist whole, unless
    # grad_output is too deep for the blocks
    assert _backward._scatter_pays(spec(64, 64, 256, 3, stride=2))
    assert not _backward._scatter_pays(spec(64, 256, 128, 3, stride=2))
    assert _backward._scatter_pays(spec(128, 128, 14, 3))              # deep, small volume
    assert not _backward._scatter_pays(spec(64, 64, 12, 3))            # too few channels
    # the phase runs on Winograd under the default precision (staged on 12^3: Zen 4,
    # float32, ms, phases vs scatter, 128 channels 8.0 vs 11.4, 256 26 vs 40), not under
    # "exact"
    assert not _backward._scatter_pays(spec(128, 128, 16, 3))
    assert not _backward._scatter_pays(spec(128, 128, 12, 3))
    previous = nc.set_precision("exact")
    try:
        assert _backward._scatter_pays(spec(128, 128, 16, 3))
        assert _backward._scatter_pays(spec(128, 128, 12, 3))
    finally:
        nc.set_precision(previous)


_SCATTER_SCRIPT = """
import sys, numpy as np, numbaconv as nc
from numbaconv import _backward
from numbaconv._spec import ConvSpec
rng = np.random.default_rng(6)
x = rng.standard_normal((2, 24, 13, 12, 11)).astype(np.float32)
w = rng.standard_normal((64, 24, 3, 3, 3)).astype(np.float32)
spec = ConvSpec.from_args(x, w, None, 2, 1)[0]
assert _backward._scatter_pays(spec)
g = rng.standard_normal(spec.out_shape).astype(np.float32)
np.savez(sys.argv[1], *nc.conv3d_backward(g, x, w, stride=2, padding=1))
"""


def test_gemm_scatter_bitwise_identical_across_thread_counts(tmp_path):
    """Its product runs on BLAS's threads: the bits hold at 1, 2 and 3 of them too
    (OpenBLAS splits the output, not the sums)."""
    runs = outputs_per_thread_count(tmp_path, _SCATTER_SCRIPT, (1, 2, 2))
    for blas_threads in (1, 3):
        path = os.path.join(str(tmp_path), f"blas_{blas_threads}.npz")
        proc = run_script(tmp_path, _SCATTER_SCRIPT, path, env=python_env(
            OPENBLAS_NUM_THREADS=blas_threads, OMP_NUM_THREADS=blas_threads))
        assert proc.returncode == 0, describe(proc)
        with np.load(path) as z:
            runs.append({k: z[k] for k in z.files})
    assert_runs_bitwise_equal(runs)


# ---- Reproducibility -----------------------------------------------------------------
_SCRIPT = """
import sys, numpy as np, numbaconv as nc
from numbaconv import _backward
from numbaconv._spec import ConvSpec
rng = np.random.default_rng(5)
x = rng.standard_normal((2, 8, 7, 8, 9)).astype(np.float32)
w = rng.standard_normal((12, 8, 3, 3, 3)).astype(np.float32)
g = rng.standard_normal((2, 12, 7, 8, 9)).astype(np.float32)
spec = ConvSpec.from_args(x, w, None, 1, 1)[0]
outs = list(nc.conv3d_backward(g, x, w, padding=1))
outs += [_backward.grad_weight(spec, x, g, a)
         for a in ("wgrad_direct", "wgrad_blocked", "wgrad_gemm", "wgrad_winograd")]
np.savez(sys.argv[1], *outs)
"""


def test_backward_bitwise_identical_across_thread_counts(tmp_path):
    assert_runs_bitwise_equal(outputs_per_thread_count(tmp_path, _SCRIPT, (1, 2, 2)))


# ---- PyTorch autograd ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["aniso", "groups3", "depthwise_k3", "k4_stride3", "dilated", "pad_gt_kernel"])
def test_matches_torch_autograd(name, rng):
    torch = pytest.importorskip("torch")
    x, w, b, args = make_case(rng, *CASES[name], dtype=np.float64)
    g = args["groups"]
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w.reshape((-1,) + w.shape[-4:]) if g > 1 else w, requires_grad=True)
    bt = torch.tensor(b.reshape(-1), requires_grad=True)
    out = torch.nn.functional.conv3d(xt, wt, bt, stride=args["stride"], padding=args["padding"],
                                     dilation=args["dilation"], groups=g)
    grad_out = rng.standard_normal(out.shape)
    out.backward(torch.from_numpy(grad_out))
    gi, gw, gb = nc.conv3d_backward(grad_out, x, w, **args)
    np.testing.assert_allclose(gi, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw.reshape(wt.shape), wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gb.reshape(-1), bt.grad.numpy(), rtol=1e-10, atol=1e-10)


# ---- The input gradient by stride phases ------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(in_length=st.integers(1, 20), out_length=st.integers(1, 12), kernel=st.integers(1, 5),
       stride=st.integers(1, 4), dilation=st.integers(1, 4), padding=st.integers(0, 6))
def test_axis_phases_cover_each_position_once_with_exactly_its_taps(in_length, out_length, kernel,
                                                                      stride, dilation, padding):
    """Phase r's position first + s*j gets tap taps[K-1-m] from grad_output index
    j - pad_lo + crop_lo + m*dilation: exactly the (i, t) with o = i*s + t*d - p."""
    seen = {}
    for phase in _backward.axis_phases(in_length, out_length, kernel, stride, dilation, padding):
        for j in range(phase.count):
            o = phase.first + stride * j
            assert o not in seen
            pairs = set()
            for m, t in enumerate(phase.taps[::-1]):
                i = j - phase.pad_lo + phase.crop_lo + m * phase.dilation
                if 0 <= i < out_length:
                    pairs.add((i, t))
            seen[o] = pairs
    assert sorted(seen) == list(range(in_length))
    for o, pairs in seen.items():
        expected = {(i, t) for i in range(out_length) for t in range(kernel)
                    if i * stride + t * dilation - padding == o}
        assert pairs == expected


@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), ((3, 2, 1), (1, 2, 3), 0)])
def test_strided_input_gradient_does_no_work_on_zeros(kernel, stride, padding):
    """The phases' products are a 1/(sD*sH*sW) share of a zero-stuffed grad_output's
    (every input position times every tap)."""
    k = kernel if isinstance(kernel, tuple) else (kernel,) * 3
    x = np.zeros((1, 8, 12, 12, 12), np.float32)
    w = np.zeros((16, 8) + k, np.float32)
    spec = ConvSpec.from_args(x, w, None, stride, padding)[0]
    phases = [sub for _, sub in _backward.input_grad_phases(spec) if sub is not None]
    stuffed = 2 * spec.batch * math.prod(spec.in_size) * spec.in_channels * spec.out_per_group * math.prod(k)
    assert sum(sub.flops for sub in phases) <= stuffed / math.prod(spec.stride)
    assert all(sub.stride == (1, 1, 1) for sub in phases)


_MIXED = dict(stride=(2, 1, 3), padding=(0, 1, 0), output_padding=(1, 0, 2), dilation=(1, 2, 1),
              kernel=(2, 3, 1), cin=4, cout=6, size=(3, 4, 5))


@pytest.mark.parametrize("args", [
    dict(stride=2, padding=0, output_padding=0, dilation=1, kernel=2),           # decoder k2 s2
    dict(stride=2, padding=1, output_padding=1, dilation=1, kernel=3),           # decoder k3 s2 op1
    dict(stride=(3, 2, 1), padding=0, output_padding=(2, 3, 1), dilation=4, kernel=3),  # op < dilation
    dict(stride=(1, 3, 4), padding=(2, 0, 1), output_padding=(0, 2, 3), dilation=(2, 1, 1), kernel=(3, 2, 1)),
    dict(_MIXED, groups=1),
    dict(_MIXED, groups=2),  # PyTorch's grouped layout (Cin, Cout/G, k...)
    # output_padding past the stride and padding on every axis: inputs reach into it
    dict(stride=(1, 2, 1), padding=(1, 2, 3), output_padding=(1, 3, 2), dilation=(2, 4, 3), kernel=(3, 2, 2)),
])
def test_transposed_matches_torch(args, rng):
    """PyTorch's output_padding rule (smaller than the stride or the dilation), phases
    with no taps (stride > kernel) and groups included; forward, backward and (ungrouped)
    the module."""
    torch = pytest.importorskip("torch")
    args = dict(args)
    k = args.pop("kernel")
    k = k if isinstance(k, tuple) else (k,) * 3
    cin, cout, size = args.pop("cin", 6), args.pop("cout", 4), args.pop("size", (4, 5, 3))
    groups = args.setdefault("groups", 1)
    x = rng.standard_normal((2, cin) + size)
    w = rng.standard_normal((cin, cout // groups) + k)
    b = rng.standard_normal(cout)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = torch.nn.functional.conv_transpose3d(xt, wt, bt, **args)
    np.testing.assert_allclose(nc.conv_transpose3d(x, w, b, **args), out.detach().numpy(),
                               rtol=1e-10, atol=1e-10)
    grad_out = rng.standard_normal(out.shape)
    out.backward(torch.from_numpy(grad_out))
    gi, gw, gb = nc.conv_transpose3d_backward(grad_out, x, w, **args)
    np.testing.assert_allclose(gi, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gb.reshape(-1), bt.grad.numpy(), rtol=1e-10, atol=1e-10)
    if groups == 1:
        module = nc.ConvTranspose3d(cin, cout, k, **args)
        module.weight, module.bias = w, b.reshape(1, cout, 1, 1, 1)  # float32 parameters
        np.testing.assert_allclose(module(x), out.detach().numpy(), rtol=1e-5, atol=1e-5)


def _past_the_stride():
    """Every one-axis transposed convolution on 1-3 inputs with output_padding at or past
    the stride (below the dilation), padding 0-3 and kernel 1-3."""
    for size, k, s, d, p in itertools.product((1, 2, 3), (1, 2, 3), (1, 2), (2, 3, 4), (0, 1, 2, 3)):
        for op in range(s, d):
            if (size - 1) * s - 2 * p + d * (k - 1) + op + 1 >= 1:
                yield size, k, s, d, p, op


def test_output_padding_past_the_stride_matches_the_scatter_reference(rng):
    """Where output_padding >= stride (PyTorch's rule allows it below the dilation), the
    padding moves the last position an input reaches into the output_padding: those
    positions are sums, not bias alone. Forward against the scatter-formula oracle
    (``conv_transpose3d_reference``), the input gradient against the forward oracle (its
    adjoint), and the weight gradient against ``<grad_out, T(x, e_j)>`` for every weight
    element ``e_j``."""
    checked = 0
    for size, k, s, d, p, op in _past_the_stride():
        args = dict(stride=(1, 1, s), padding=(0, 0, p), output_padding=(0, 0, op), dilation=(1, 1, d))
        x = rng.standard_normal((2, 2, 1, 1, size))
        w = rng.standard_normal((2, 3, 1, 1, k))
        b = rng.standard_normal(3)
        try:
            expected = conv_transpose3d_reference(x, w, b, **args)
        except ValueError:
            continue
        try:
            out = nc.conv_transpose3d(x, w, b, **args)
        except ValueError as error:  # refused only where no input reaches the output
            assert "no position reached by the input" in str(error)
            assert not conv_transpose3d_reference(np.ones_like(x), np.ones_like(w), **args).any()
            continue
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
        grad_out = rng.standard_normal(expected.shape)
        gi, gw, gb = nc.conv_transpose3d_backward(grad_out, x, w, **args)
        forward_args = {key: v for key, v in args.items() if key != "output_padding"}
        adjoint = conv3d_reference(grad_out, w, **forward_args)[..., :size]
        np.testing.assert_allclose(gi, adjoint, rtol=1e-12, atol=1e-12)
        by_element = np.zeros(w.size)
        for j in range(w.size):
            unit = np.zeros(w.size)
            unit[j] = 1
            by_element[j] = np.sum(grad_out * conv_transpose3d_reference(x, unit.reshape(w.shape), **args))
        np.testing.assert_allclose(gw.reshape(-1), by_element, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gb.reshape(-1), grad_out.sum(axis=(0, 2, 3, 4)), rtol=1e-12)
        checked += 1
    assert checked > 100


def test_output_padding_must_be_below_stride_or_dilation(rng):
    x = rng.standard_normal((1, 2, 3, 3, 3))
    w = rng.standard_normal((2, 2, 3, 3, 3))
    nc.conv_transpose3d(x, w, stride=1, dilation=3, output_padding=2)  # below the dilation
    with pytest.raises(ValueError, match="smaller than stride or dilation"):
        nc.conv_transpose3d(x, w, stride=2, dilation=3, output_padding=3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["aniso", "groups3", "many_channels", "k7", "wide"])
def test_weight_gradient_direct_and_blocked_agree_bitwise(name, dtype, rng):
    """All keep LANES partial sums per weight, added in the same order: the direct ones
    serve ``auto`` while the blocked kernel compiles (its declared fallbacks), and so
    does ``wgrad_tiny`` (one product at a time, skipping the zeros) for small layers."""
    x, w, b, args = make_case(rng, *CASES[name], dtype=dtype)
    spec = ConvSpec.from_args(x, w, None, **args)[0]
    grad_out = rng.standard_normal(spec.out_shape).astype(dtype)
    blocked = _backward.grad_weight(spec, x, grad_out, "wgrad_blocked")
    assert REGISTRY[_dispatch.blocked_variant(spec, "weight_grad")].fallbacks == (
        "wgrad_direct", "wgrad_direct_serial")
    for fallback in ("wgrad_direct", "wgrad_direct_serial", "wgrad_tiny"):
        assert _backward.grad_weight(spec, x, grad_out, fallback).tobytes() == blocked.tobytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configurations(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_tiny_weight_gradient_gives_the_direct_kernels_bits_on_random_layers(config, dtype, seed):
    rng = np.random.default_rng(seed)
    x, w, b, args = make_case(rng, *config, dtype=dtype)
    spec = ConvSpec.from_args(x, w, None, **args)[0]
    grad_out = rng.standard_normal(spec.out_shape).astype(dtype)
    tiny = _backward.grad_weight(spec, x, grad_out, "wgrad_tiny")
    assert tiny.tobytes() == _backward.grad_weight(spec, x, grad_out, "wgrad_direct").tobytes()


@pytest.mark.parametrize("name", sorted(CASES))
def test_tiny_weight_gradient_gives_the_direct_kernels_bits(name, rng):
    """Strides, dilations, padding larger than the kernel, groups, one-voxel planes, an
    empty batch: each product lands in the lane of its position in the direct kernel's
    run, so every layer gets the direct kernel's bits."""
    x, w, b, args = make_case(rng, *CASES[name], dtype=np.float32)
    spec = ConvSpec.from_args(x, w, None, **args)[0]
    grad_out = rng.standard_normal(spec.out_shape).astype(np.float32)
    tiny = _backward.grad_weight(spec, x, grad_out, "wgrad_tiny")
    assert tiny.tobytes() == _backward.grad_weight(spec, x, grad_out, "wgrad_direct").tobytes()


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_weight_gradient_blocked_parts_keep_the_bits(parts, monkeypatch, rng):
    """The register-blocked weight gradient splits each (group, input channel)'s blocks
    of output channels into parts (as many as the thread count asks for); every sum
    keeps its order, so any split gives the direct kernel's bits: one part, some, and
    one block per part (9 output channels per group: 3 blocks of 4 or fewer)."""
    from numbaconv.kernels import backward
    x, w, b, args = make_case(rng, 2, 6, (5, 7, 9), 18, 3, (1, 2, 2), 1, 1, 2, dtype=np.float32)
    spec = ConvSpec.from_args(x, w, None, **args)[0]
    grad_out = rng.standard_normal(spec.out_shape).astype(np.float32)
    direct = _backward.grad_weight(spec, x, grad_out, "wgrad_direct")
    monkeypatch.setattr(backward, "block_parts", lambda spec, cob: min(parts, -(-9 // cob)))
    assert _backward.grad_weight(spec, x, grad_out, "wgrad_blocked").tobytes() == direct.tobytes()


def test_tap_product_blocks_are_a_function_of_the_product():
    """TAP_BLOCKS blocks of rows, or of positions where rows are few, whatever the
    thread count (so that the bits cannot depend on it)."""
    from numbaconv.kernels import gemm
    assert gemm.tap_product_blocks(1728, 216) == (4, 1)
    assert gemm.tap_product_blocks(432, 13824) == (4, 1)
    assert gemm.tap_product_blocks(40, 5000) == (2, 2)    # 16 rows a block at least
    assert gemm.tap_product_blocks(3, 5000) == (1, 4)     # few rows: positions
    assert gemm.tap_product_blocks(3, 300) == (1, 1)      # nothing worth splitting
