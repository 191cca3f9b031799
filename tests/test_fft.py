"""The FFT path (``algorithm="fft"``): exact to its documented bound on random layers
(strides, dilations, paddings, groups, padding modes, both conv modes), the same bits at
every thread count, ``auto`` taking it for large kernels on few channels only where the
precision setting permits, and a clear refusal where its transforms would not fit."""
import contextlib
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import numbaconv as nc
from numbaconv import _dispatch
from numbaconv._spec import ConvSpec
from numbaconv.kernels import fft
from helpers import assert_matches_reference, assert_runs_bitwise_equal, make_case, outputs_per_thread_count


@st.composite
def fft_layers(draw):
    groups = draw(st.integers(1, 2))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 6)) for _ in range(3))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(3))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(3))
    padding = tuple(draw(st.integers(0, 3)) for _ in range(3))
    size = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 12))
                 for k, d, p in zip(kernel, dilation, padding))
    return draw(st.integers(1, 2)), cin, size, cout, kernel, stride, padding, dilation, groups


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer=fft_layers(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_matches_the_reference_on_random_layers(layer, dtype, seed):
    x, w, b, args = make_case(np.random.default_rng(seed), *layer, dtype=dtype)
    out = nc.conv3d(x, w, b, algorithm="fft", **args)
    assert out.dtype == dtype
    assert_matches_reference(out, x, w, b, algorithm="fft", **args)


@contextlib.contextmanager
def small_blocks(points):
    """The FFT path with blocks of at most ``points`` transform points (fewer where the
    span needs more), so that small layers run in many blocks."""
    saved = fft.MAX_BLOCK_POINTS
    fft.MAX_BLOCK_POINTS = points
    fft.block_plan.cache_clear()
    try:
        yield
    finally:
        fft.MAX_BLOCK_POINTS = saved
        fft.block_plan.cache_clear()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer=fft_layers(), points=st.sampled_from([1, 6**3, 10**3]),
       seed=st.integers(0, 2**32 - 1))
def test_blocks_match_the_reference(layer, points, seed):
    """Block windows that start in the padding, end past the input, hold one output or
    a short last block, under stride and dilation: each block against the definition."""
    x, w, b, args = make_case(np.random.default_rng(seed), *layer, dtype=np.float64)
    with small_blocks(points):
        out = nc.conv3d(x, w, b, algorithm="fft", **args)
    assert_matches_reference(out, x, w, b, algorithm="fft", **args)


@pytest.mark.parametrize("args", [dict(padding="same", padding_mode="reflect"),
                                  dict(padding=2, padding_mode="circular"),
                                  dict(padding=(1, 0, 3), conv_mode="convolution"),
                                  dict(padding="same", dilation=2)])
def test_padding_forms_and_conv_modes(rng, args):
    x = rng.standard_normal((1, 2, 9, 7, 10))
    w = rng.standard_normal((3, 2, 4, 3, 5))
    out = nc.conv3d(x, w, algorithm="fft", **args)
    assert_matches_reference(out, x, w, None, algorithm="fft", **args)


def test_input_gradient_runs_on_it(rng):
    x = rng.standard_normal((1, 2, 9, 8, 7))
    w = rng.standard_normal((3, 2, 5, 5, 5))
    grad_out = rng.standard_normal((1, 3, 5, 4, 3))
    fast = nc.conv3d_backward(grad_out, x, w, algorithm="fft", need_weight_grad=False)[0]
    direct = nc.conv3d_backward(grad_out, x, w, algorithm="direct", need_weight_grad=False)[0]
    np.testing.assert_allclose(fast, direct, rtol=0, atol=1e-11 * np.abs(direct).max())


def test_same_bits_at_every_thread_count(tmp_path):
    runs = outputs_per_thread_count(tmp_path, """
        import sys
        import numpy as np, numbaconv as nc
        rng = np.random.default_rng(5)
        x = rng.standard_normal((2, 2, 20, 17, 23)).astype(np.float32)
        w = rng.standard_normal((2, 2, 9, 9, 9)).astype(np.float32)
        psf = rng.standard_normal((1, 1, 15, 15, 15))
        volume = rng.standard_normal((1, 1, 90, 97, 90)).astype(np.float32)  # 8 blocks
        np.savez(sys.argv[1], f32=nc.conv3d(x, w, padding=4, algorithm="fft"),
                 f64=nc.conv3d(x.astype(np.float64), w, padding=4, algorithm="fft"),
                 blocks=nc.conv3d(volume, psf, padding=7, algorithm="fft"),
                 # one block of one sample and group: each transform on every thread
                 one=nc.conv3d(x[:1, :1], w[:1, :1], padding=4, algorithm="fft"))
    """, thread_counts=(1, 2, 2))
    assert_runs_bitwise_equal(runs)


def _spec(size, kernel, channels=1, dtype=np.float32):
    x = np.zeros((1, channels, size, size, size), dtype)
    w = np.zeros((channels, channels, kernel, kernel, kernel), dtype)
    return ConvSpec.from_args(x, w, None, 1, kernel // 2)[0]


def test_auto_takes_it_for_large_kernels_on_few_channels_only():
    assert _dispatch.choose(_spec(64, 15)) == "fft"
    assert _dispatch.choose(_spec(128, 13)) == "fft"
    for small in (_spec(64, 9), _spec(128, 5), _spec(32, 3, channels=64), _spec(24, 5, channels=64)):
        assert _dispatch.choose(small) != "fft"
    try:
        nc.set_precision("exact")
        assert _dispatch.choose(_spec(64, 15)) != "fft"
    finally:
        nc.set_precision("fast")


def test_auto_result_on_a_large_kernel(rng):
    x = rng.standard_normal((1, 1, 40, 33, 37)).astype(np.float32)
    w = rng.standard_normal((1, 1, 15, 15, 15)).astype(np.float32)
    assert _dispatch.choose(ConvSpec.from_args(x, w, None, 1, 7)[0]) == "fft"
    assert_matches_reference(nc.conv3d(x, w, padding=7), x, w, None, algorithm="fft", padding=7)


def test_block_plans():
    """Beyond ``MAX_BLOCK_POINTS``, equal blocks that cover the output, each transform
    long enough for its window."""
    plan = fft.plan_for(_spec(128, 15))
    assert math.prod(plan.counts) > 1 and math.prod(plan.shape) <= fft.MAX_BLOCK_POINTS
    for block, count, size in zip(plan.block, plan.counts, plan.shape):
        assert block * count >= 128 > block * (count - 1)
        assert size >= block - 1 + 15


def test_layers_whose_transforms_do_not_fit_are_refused(rng):
    x = np.zeros((1, 512, 40, 40, 40), np.float32)
    w = np.zeros((512, 512, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="algorithm='fft' cannot compute this layer: its transforms"):
        nc.conv3d(x, w, algorithm="fft")
