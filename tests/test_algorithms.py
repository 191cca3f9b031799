"""Every algorithm path, forced, against the reference; the tiers agree bitwise."""
import math

import numpy as np
import pytest

import numbaconv as nc
from numbaconv import _cpu, _dispatch
from numbaconv._spec import ConvSpec
from numbaconv.kernels import blocked, gemm
from numbaconv.kernels.registry import WEIGHT_GRAD
from numbaconv.reference import conv3d_reference
from helpers import (CASES, FORCED, assert_matches_reference, assert_runs_bitwise_equal, make_case,
                     outputs_per_thread_count)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", FORCED)
@pytest.mark.parametrize("name", list(CASES))
def test_forced_algorithm_matches_reference(name, algorithm, dtype, rng):
    x, w, b, args = make_case(rng, *CASES[name], dtype=dtype)
    out = nc.conv3d(x, w, b, algorithm=algorithm, **args)
    assert out.dtype == dtype
    assert_matches_reference(out, x, w, b, **args)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["aniso", "groups3", "depthwise_k3", "many_channels", "k7",
                                  "pad_gt_kernel", "stride_gt_kernel", "wide"])
def test_direct_tiers_agree_bitwise(name, dtype, rng):
    """direct, direct_serial and blocked sum in one order with the same FMAs, so the
    tiered choice never changes a result."""
    x, w, b, args = make_case(rng, *CASES[name], dtype=dtype)
    outs = [nc.conv3d(x, w, b, algorithm=a, **args) for a in ("direct", "direct_serial", "tiny", "blocked")]
    for other in outs[1:]:
        assert other.tobytes() == outs[0].tobytes()


def test_blocked_variants_cover_many_and_few_channels(rng):
    dense, depthwise = _cpu.FORWARD_BLOCKS[_cpu.target().isa, 4]
    for cout, (cob, vw) in ((16, dense), (2, depthwise), (1, depthwise)):
        x = rng.standard_normal((1, 4, 6, 7, 8)).astype(np.float32)
        w = rng.standard_normal((cout, 4, 3, 3, 3)).astype(np.float32)
        spec = ConvSpec.from_args(x, w)[0]
        assert _dispatch.blocked_variant(spec) == f"blocked{cob}x{vw}"
        assert_matches_reference(nc.conv3d(x, w, algorithm="blocked"), x, w)


ROW_PAIR_KERNELS = [name for name in _dispatch.REGISTRY if name.endswith("r2")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [
    (1, 1, (6, 9, 64), 1, 5, 1, 2, 1, 1),  # an odd last row pair
    (2, 3, (5, 8, 70), 6, (3, 2, 3), (1, 1, 2), (1, 0, 1), (1, 1, 2), 3),  # groups, W phases
    (1, 4, (5, 3, 130), 2, (2, 3, 1), (2, 1, 1), (0, 1, 0), (2, 1, 1), 1),  # a row of 3 blocks
    (1, 2, (3, 2, 10), 1, (1, 2, 3), 1, 0, 1, 1),  # one output row
])
def test_row_pair_kernel_gives_the_direct_kernels_bits(rng, monkeypatch, case, dtype):
    """The row-pair block adds each output row's taps in the direct kernel's order: the
    same bits, with passes over input channels, and with an Inf that only one row of a
    pair reads (its second row's last kernel row, its first row's first)."""
    if _cpu.row_pair_block(dtype) is None:
        # Compiling them costs 40-50 s per dtype on a Zen 3, for kernels that no call
        # reaches on this CPU (neither the rules nor a forced "blocked" pick them, and the
        # autotuner's file is per CPU); the hosts that run them test them.
        pytest.skip(f"no row-pair block on {_cpu.target().isa}: these kernels never run here")
    x, w, b, args = make_case(rng, *case, dtype)
    x[0, 0, 1, 1, 3] = np.inf
    x[-1, -1, -1, 0, 2] = -np.inf
    expected = nc.conv3d(x, w, b, algorithm="direct", **args)
    spec = ConvSpec.from_args(x, w, b, **args)[0]

    def run(name):  # an internal kernel name: through a plan, as ``auto`` runs it
        out = np.empty(spec.out_shape, dtype)
        _dispatch.Plan(spec, name).run(x, w.reshape(spec.group_weight_shape), b.reshape(-1), out)
        return out
    assert ROW_PAIR_KERNELS
    for name in ROW_PAIR_KERNELS:
        out = run(name)
        assert np.array_equal(np.isnan(out), np.isnan(expected))
        assert out[~np.isnan(out)].tobytes() == expected[~np.isnan(expected)].tobytes(), name
    taps = math.prod(w.shape[-3:])
    monkeypatch.setattr(blocked, "pass_terms", lambda spec, cob: taps)  # a pass per channel
    for name in ROW_PAIR_KERNELS:
        out = run(name)
        assert out[~np.isnan(out)].tobytes() == expected[~np.isnan(expected)].tobytes(), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_pairs_where_rows_are_wide_and_taps_consecutive(monkeypatch, dtype):
    monkeypatch.setattr(_cpu, "target", lambda: _cpu.Target("x", "avx512", 64, 32, True, "host",
                                                             32 << 10, 1 << 20))

    def variant(size=(8, 16, 256), cin=1, cout=1, kernel=5, stride=1, dilation=1):
        x = np.zeros((1, cin) + size, dtype)
        w = np.zeros((cout, cin) + (kernel if isinstance(kernel, tuple) else (kernel,) * 3), dtype)
        return _dispatch.blocked_variant(ConvSpec.from_args(x, w, None, stride, 0, dilation)[0])
    row_pairs, rows = "blocked1x64r2", "blocked{}x{}".format(*_cpu.forward_block(dtype, 1))
    assert variant() == variant(cout=2) == variant(size=(8, 16, 128)) == row_pairs
    assert variant(size=(8, 16, 252)) == row_pairs  # 256 - 4 outputs: 1/63 more work
    assert variant(size=(8, 16, 124)) == rows  # 120 outputs: 128 is 1/15 more
    assert variant(size=(8, 16, 81)) == rows
    assert variant(stride=(1, 2, 1)) == variant(dilation=(1, 2, 1)) == rows
    assert variant(kernel=(5, 1, 5)) == variant(size=(8, 5, 256)) == rows  # 1 tap, 1 row
    assert variant(cout=3).startswith("blocked") and variant(cout=3) not in (rows, row_pairs)
    monkeypatch.setattr(_cpu, "target", lambda: _cpu.Target("x", "avx2", 32, 16, True, "host",
                                                             32 << 10, 1 << 20))
    assert variant() == "blocked{}x{}".format(*_cpu.forward_block(dtype, 1))
    # Forced (internally) where rows do not share their inputs: refused, not wrong.
    x, w = np.zeros((1, 1, 8, 16, 256), dtype), np.zeros((1, 1, 3, 3, 3), dtype)
    for stride, dilation in (((1, 2, 1), 1), (1, (1, 2, 1))):
        spec = ConvSpec.from_args(x, w, None, stride, 0, dilation)[0]
        for name in ROW_PAIR_KERNELS:
            with pytest.raises(_dispatch.UnsupportedLayer, match="stride and dilation 1 along H"):
                _dispatch.Plan(spec, name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_passes_over_input_channels_do_not_change_results(rng, monkeypatch, dtype):
    """The blocked kernel's L2-sized passes keep partial sums in memory between passes;
    every sum still adds its terms in the direct kernel's order (grouped, strided, and a
    pass size that does not divide the channels)."""
    x, w, b, args = make_case(rng, 2, 10, (5, 9, 8), 12, (2, 3, 2), (1, 2, 1), 1, 1, 2, dtype)
    expected = nc.conv3d(x, w, b, algorithm="direct", **args)
    taps = 2 * 3 * 2
    for channels in (1, 2, 3, 5, 100):
        monkeypatch.setattr(blocked, "pass_terms", lambda spec, cob, c=channels: min(c, 5) * taps)
        out = nc.conv3d(x, w, b, algorithm="blocked", **args)
        assert out.tobytes() == expected.tobytes(), channels


def test_pass_size_follows_l2(monkeypatch):
    x = np.zeros((1, 256, 4, 14, 14), np.float32)
    w = np.zeros((256, 256, 3, 3, 3), np.float32)
    spec = ConvSpec.from_args(x, w, None, 1, 1)[0]
    monkeypatch.setattr(_cpu, "target", lambda: _cpu.Target("x", "avx2", 32, 16, True, "host",
                                                             32 << 10, 1 << 20))
    assert blocked.pass_terms(spec, 8) == (512 << 10) // (27 * 256 * 4) * 27  # 18 channels
    small = ConvSpec.from_args(x[:, :8], w[:16, :8], None, 1, 1)[0]
    assert blocked.pass_terms(small, 8) == 8 * 27  # the whole reduction in one pass


def test_depth_chunks_do_not_change_results(rng, monkeypatch):
    x, w, b, args = make_case(rng, 2, 4, (11, 6, 7), 9, 3, (2, 1, 1), 2, (2, 1, 1), 1, np.float64)
    expected = nc.conv3d(x, w, b, algorithm="direct", **args)
    for chunk in (1, 2, 3, 100):
        monkeypatch.setattr(blocked, "depth_chunk", lambda spec, c=chunk: c)
        out = nc.conv3d(x, w, b, algorithm="blocked", **args)
        assert out.tobytes() == expected.tobytes()


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_depth_chunks_are_as_large_as_balance_allows(threads, monkeypatch):
    """The chunk never leaves a thread more output depths than ``>= 4 items per thread``
    would, keeps each item's planes within CHUNK_PLANE_BYTES, and no larger chunk also
    does both (checked by brute force)."""
    monkeypatch.setattr(blocked.numba, "get_num_threads", lambda: threads)
    for depth, batch, kernel, stride, width in [(15, 1, 5, 1, 260), (260, 1, 5, 1, 260), (11, 1, 3, 2, 40),
                                                (7, 3, 3, 1, 30), (64, 2, 1, 1, 16), (33, 1, 3, 1, 1000)]:
        x = np.zeros((batch, 1, depth, 8, width), np.float64)
        w = np.zeros((1, 1, kernel, 3, 3), np.float64)
        spec = ConvSpec.from_args(x, w, None, (stride, 1, 1), 0)[0]
        out_d, plane = spec.out_size[0], spec.plane_bytes // kernel

        def fits(c):
            return c == 1 or min(depth, (c - 1) * stride + kernel) * plane <= blocked.CHUNK_PLANE_BYTES

        def busiest(c):
            return -(-(batch * -(-out_d // c)) // threads) * c

        first = out_d  # the old rule alone
        while first > 1 and (batch * -(-out_d // first) < 4 * threads or not fits(first)):
            first = -(-first // 2)
        chunk = blocked.depth_chunk(spec)
        assert fits(chunk) and busiest(chunk) <= busiest(first), (depth, threads, chunk)
        assert not any(fits(c) and busiest(c) <= busiest(first) for c in range(chunk + 1, out_d + 1))
    # the case it is for: a slab of 11 output depths of a 5^3 single-channel filter
    if threads == 2:
        x = np.zeros((1, 1, 15, 260, 260), np.float64)
        spec = ConvSpec.from_args(x, np.zeros((1, 1, 5, 5, 5)), None, 1, 0)[0]
        assert blocked.depth_chunk(spec) == 6  # was 1: 11 items, each copying 5 planes


def test_auto_choices():
    def spec(n, cin, size, cout, k, groups=1, padding=1):
        x = np.zeros((n, cin) + size, np.float32)
        w = np.zeros((cout, cin // groups, k, k, k), np.float32)
        return ConvSpec.from_args(x, w, None, 1, padding, 1, groups)[0]
    dense, depthwise = ("blocked{}x{}".format(*b) for b in _cpu.FORWARD_BLOCKS[_cpu.target().isa, 4])
    assert _dispatch.choose(spec(2, 3, (4, 4, 4), 1, 3, padding=0)) == "tiny"
    assert _dispatch.choose(spec(1, 32, (32, 32, 32), 32, 3)) == "winograd"
    assert _dispatch.choose(spec(1, 16, (32, 32, 32), 16, 3)) == dense
    assert _dispatch.choose(spec(4, 96, (16, 28, 28), 96, 3, groups=96)) == depthwise
    # huge padding: the GEMM path, whose buffers do not grow with the padding
    huge = spec(1, 1, (4, 4, 4), 1, 3, padding=(0, 20000, 20000))
    assert _dispatch.choose(huge) == "gemm"
    assert _dispatch.choose(huge, "weight_grad") == "wgrad_gemm"
    # deep layers on tiny volumes (positions < reduction terms / 16): GEMM
    assert _dispatch.choose(spec(1, 512, (2, 7, 7), 512, 3)) == "gemm"
    # ...but Winograd, staged, from 64 tiles (Zen 4, float32, ms: 256 on 4x14x14 11.3 vs
    # blocked 21; 256 on 12^3 22 vs 51), not on 27 (256 on 6^3: GEMM)
    assert _dispatch.choose(spec(1, 256, (4, 14, 14), 256, 3)) == "winograd"
    assert _dispatch.choose(spec(1, 256, (12, 12, 12), 256, 3)) == "winograd"
    assert _dispatch.choose(spec(1, 256, (6, 6, 6), 256, 3)) == "gemm"
    assert _dispatch.choose(spec(2, 128, (8, 28, 28), 128, 3)) == "winograd"
    # few taps per input channel on many channels: GEMM
    assert _dispatch.choose(spec(1, 64, (8, 16, 16), 64, 1, padding=0)) == "gemm"
    # taps that never overlap (kernel = stride, dilation 1): GEMM, any channels and groups
    def strided(cin, size, cout, groups=1, k=2):
        x = np.zeros((1, cin) + (size,) * 3, np.float32)
        w = np.zeros((cout, cin // groups, k, k, k), np.float32)
        return ConvSpec.from_args(x, w, None, k, 0, 1, groups)[0]
    assert _dispatch.choose(strided(128, 12, 256)) == "gemm"
    assert _dispatch.choose(strided(128, 24, 64)) == "gemm"
    assert _dispatch.choose(strided(64, 48, 32)) == "gemm"
    assert _dispatch.choose(strided(4, 64, 8)) == "gemm"
    assert _dispatch.choose(strided(32, 48, 32, groups=32)) == "gemm"
    assert _dispatch.choose(strided(8, 64, 8, k=4)) == "gemm"
    # ...and pointwise layers of few channels, down to 3 outputs per group
    assert _dispatch.choose(spec(1, 16, (32, 32, 32), 16, 1, padding=0)) == "gemm"
    assert _dispatch.choose(spec(1, 4, (64, 64, 64), 4, 1, padding=0)) == "gemm"
    assert _dispatch.choose(spec(1, 32, (64, 64, 64), 2, 1, padding=0)) == depthwise
    # strided layers with overlapping taps unless positions outnumber the reduction 2:1
    def k3s2(cin, size, cout):
        x = np.zeros((1, cin) + (size,) * 3, np.float32)
        return ConvSpec.from_args(x, np.zeros((cout, cin, 3, 3, 3), np.float32), None, 2, 1)[0]
    assert _dispatch.choose(k3s2(64, 24, 128)) == "gemm"
    assert _dispatch.choose(k3s2(32, 24, 64)) == "gemm"  # ratio 0.5
    assert _dispatch.choose(k3s2(48, 32, 96)) == dense  # ratio 0.32
    assert _dispatch.choose(k3s2(64, 48, 128)) == dense
    assert _dispatch.choose(k3s2(32, 48, 64)) == dense
    # weight gradient: Winograd for 3x3x3 stride-1 layers where it pays; else GEMM from
    # WEIGHT_GRAD_GEMM_TERMS outputs per group, else blocked
    wgrad_blocked = "wgrad_blocked{}x{}".format(*_cpu.weight_grad_block(np.float32))
    assert _dispatch.choose(spec(1, 64, (16, 16, 16), 128, 3), "weight_grad") == "wgrad_winograd"
    # ...and staged from 64 tiles with >= 128 channels (256 on 8^3, not on 6^3: 27
    # tiles), not on 64 tiles with fewer (64 on 8^3)
    assert _dispatch.choose(spec(1, 256, (12, 12, 12), 256, 3), "weight_grad") == "wgrad_winograd"
    assert _dispatch.choose(spec(1, 256, (8, 8, 8), 256, 3), "weight_grad") == "wgrad_winograd"
    assert _dispatch.choose(spec(1, 256, (6, 6, 6), 256, 3), "weight_grad") == "wgrad_gemm"
    assert _dispatch.choose(spec(1, 64, (8, 8, 8), 64, 3), "weight_grad") == "wgrad_gemm"
    assert _dispatch.choose(spec(1, 64, (16, 16, 16), 128, 2), "weight_grad") == "wgrad_gemm"
    assert _dispatch.choose(spec(1, 16, (16, 16, 16), 16, 3), "weight_grad") == wgrad_blocked
    # ...blocked for fewer than 64 outputs per group on >= 4096 positions, GEMM on fewer
    assert _dispatch.choose(k3s2(16, 64, 32), "weight_grad") == wgrad_blocked
    assert _dispatch.choose(k3s2(128, 48, 32), "weight_grad") == wgrad_blocked
    assert _dispatch.choose(k3s2(512, 12, 48), "weight_grad") == "wgrad_gemm"
    assert _dispatch.choose(k3s2(32, 64, 64), "weight_grad") == "wgrad_gemm"
    # ...and GEMM for pointwise layers of any size
    assert _dispatch.choose(spec(1, 256, (24, 24, 24), 32, 1, padding=0), "weight_grad") == "wgrad_gemm"
    assert _dispatch.choose(spec(1, 32, (16, 16, 16), 2, 1, padding=0), "weight_grad") == "wgrad_gemm"
    assert _dispatch.choose(spec(4, 96, (16, 28, 28), 96, 3, groups=96), "weight_grad") == wgrad_blocked


@pytest.mark.parametrize("cin, size, stride, cout, tiny", [
    (1, (8, 8, 8), 1, 4, True),  # direct_serial, then tiny (its own floor)
    (16, (32, 32, 32), 1, 16, True),  # 0.45 GFLOP: blocked, its fallbacks, then tiny
    (32, (40, 40, 40), 2, 64, False),  # 0.9 GFLOP on strided rows: tiny would gather
    (64, (64, 64, 64), 1, 64, False),  # 29 GFLOP
])
def test_cold_plans_start_small_layers_on_the_tiny_kernel(monkeypatch, cin, size, stride, cout, tiny):
    """While a layer's kernel compiles, ``auto`` serves it from quicker compiles with the
    same bits; the lowest is the tiny kernel for layers it runs within a fraction of a
    second (``TINY_FLOOR_FLOPS``), the serial direct kernel's layers included."""
    x = np.zeros((1, cin) + size, np.float32)
    w = np.zeros((cout, cin, 3, 3, 3), np.float32)
    spec = ConvSpec.from_args(x, w, None, stride, 1, 1, 1)[0]
    kernel = _dispatch.choose(spec)
    started = []
    monkeypatch.setattr(_dispatch, "background_enabled", lambda: True)
    monkeypatch.setattr(_dispatch, "_kernel_ready", lambda kernel, dtype: False)
    monkeypatch.setattr(_dispatch, "_start_weight_grad_floor", lambda spec: None)
    monkeypatch.setattr(_dispatch, "_kernel", lambda name, dtype, wait=None: started.append(name) or
                        (object() if wait is None else None))
    plan = _dispatch.Plan(spec, "auto")
    expected = [kernel] + list(_dispatch.REGISTRY[kernel].fallbacks) + (["tiny"] if tiny else [])
    assert (kernel == "direct_serial") == (cin == 1)
    assert plan.state[0] == expected
    assert started[0] == expected[-1]  # the floor compiles first, in the caller's thread
    assert plan.kernel_name == expected[-1]
    for name in expected:
        assert _dispatch.REGISTRY[name].bitwise == _dispatch.REGISTRY[kernel].bitwise


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cold_weight_gradients_start_on_the_tiny_kernel_with_the_same_bits(monkeypatch, dtype):
    """A cold small layer's weight gradient is served by ``wgrad_tiny`` (a 1 s compile)
    while its kernel compiles: the blocked kernel's bits for finite operands, and for an
    Inf in the input the path the blocked kernel's plan takes (another algorithm, since
    its margins would spread the Inf): the plan's kernel decides, not the tier serving."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 7, 9, 11)).astype(dtype)
    w = rng.standard_normal((8, 6, 3, 3, 3)).astype(dtype)
    spec = ConvSpec.from_args(x, w, None, 1, 1, 1, 1)[0]
    g = rng.standard_normal(spec.out_shape).astype(dtype)
    spoiled = x.copy()
    spoiled[1, 2, 3, 4, -1] = np.inf  # the last column: other rows' margins
    kernel = _dispatch.choose(spec, WEIGHT_GRAD)
    assert _dispatch.REGISTRY[kernel].spreads_nonfinite
    warm = _dispatch.plan_for(spec, "auto", WEIGHT_GRAD)
    expected, expected_spoiled = warm.run(x, g), warm.run(spoiled, g)
    real = _dispatch._kernel
    monkeypatch.setattr(_dispatch, "background_enabled", lambda: True)
    monkeypatch.setattr(_dispatch, "_kernel_ready", lambda kernel, dtype: False)
    # Nothing else becomes ready: only the tier the caller waits for.
    monkeypatch.setattr(_dispatch, "_kernel", lambda name, dtype, wait=None:
                        None if wait is not None else real(name, dtype))
    plan = _dispatch.Plan(spec, "auto", WEIGHT_GRAD)
    assert plan.state[0] == [kernel, *_dispatch.REGISTRY[kernel].fallbacks, "wgrad_tiny"]
    assert plan.kernel_name == "wgrad_tiny"
    assert plan.run(x, g).tobytes() == expected.tobytes()
    assert plan.run(spoiled, g).tobytes() == expected_spoiled.tobytes()
    assert not np.isfinite(expected_spoiled).all() and np.isfinite(expected_spoiled).any()
    # A NaN or Inf in grad_output at the border meets the input's padding, whose zeros
    # the tiny kernel leaves out and the blocked one multiplies (0 x Inf = NaN): the tier
    # above serves then (found by a review: fewer NaN than the blocked kernel).
    for value in (np.nan, np.inf):
        bad = g.copy()
        bad[0, 1, 0, 0, 0] = value
        blocked = warm.run(x, bad)
        assert np.isnan(blocked).any() and not np.isnan(blocked).all()
        assert plan.run(x, bad).tobytes() == blocked.tobytes()
    assert plan.kernel_name == "wgrad_tiny"  # finite operands still take it


def test_huge_padding_and_stride_stay_small(rng):
    """Windows that fall wholly into the padding give zeros; the others equal a small
    valid convolution of the input they cover (the numpy reference cannot pad this)."""
    x = rng.standard_normal((1, 2, 4, 4, 4))
    w = rng.standard_normal((3, 2, 3, 3, 3))
    out = nc.conv3d(x, w, stride=(1, 40000, 40000), padding=(0, 20000, 20000))
    assert out.shape == (1, 3, 2, 2, 2)
    assert not out.any()  # every H/W window lies in the padding
    big = 2**31 - 1
    out = nc.conv3d(x, w, stride=(1, big, big), padding=(0, big - 1, big - 1))
    expected = np.zeros((1, 3, 2, 2, 2))
    expected[:, :, :, 1, 1] = conv3d_reference(x[:, :, :, 1:4, 1:4], w)[:, :, :, 0, 0]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_unknown_algorithm_is_rejected(rng):
    x, w, b, args = make_case(rng, *CASES["seed"], dtype=np.float32)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        nc.conv3d(x, w, b, algorithm="winograd2", **args)


def test_kernel_cache_info_and_clear(rng):
    x, w, b, args = make_case(rng, *CASES["seed"], dtype=np.float32)
    nc.conv3d(x, w, b, algorithm="direct", **args)
    info = nc.kernel_cache_info()
    assert {"entries", "hits", "misses", "compile_seconds", "max_entries"} <= set(info)
    assert any(e["algorithm"] == "direct" and e["dtype"] == "float32" for e in info["entries"])
    x2 = np.concatenate([x, x])  # a new shape: a new plan, the same compiled kernel
    nc.conv3d(x2, w, b, algorithm="direct", **args)
    assert nc.kernel_cache_info()["hits"] >= 1
    nc.clear_kernel_cache()
    info = nc.kernel_cache_info()
    assert info["hits"] == 0 and info["misses"] == 0
    nc.conv3d(x, w, b, algorithm="direct", **args)
    assert nc.kernel_cache_info()["misses"] == 1


def test_generated_kernels_are_current():
    """_blocked_generated.py is what blocked_codegen.py writes."""
    from numbaconv.kernels import blocked_codegen
    with open(blocked_codegen.GENERATED_PATH) as f:
        assert f.read() == blocked_codegen.module_source(), \
            "run: python numbaconv/kernels/blocked_codegen.py"


_THREADS_SCRIPT = """
import sys, numpy as np, numbaconv as nc
rng = np.random.default_rng(3)
x = rng.standard_normal((2, 12, 9, 10, 11)).astype(np.float32)
w = rng.standard_normal((16, 12, 3, 3, 3)).astype(np.float32)
xd = rng.standard_normal((2, 8, 9, 10, 11)).astype(np.float32)
wd = rng.standard_normal((16, 1, 3, 3, 3)).astype(np.float32)
outs = [nc.conv3d(x, w, padding=1, algorithm=a) for a in ("direct", "blocked", "gemm")]
outs.append(nc.conv3d(xd, wd, padding=1, groups=8, algorithm="blocked"))
np.savez(sys.argv[1], *outs)
"""


def test_every_path_bitwise_identical_across_thread_counts(tmp_path):
    assert_runs_bitwise_equal(outputs_per_thread_count(tmp_path, _THREADS_SCRIPT, (1, 2, 2)))


def test_gemm_pointwise_with_padding_after_only(rng):
    """A pointwise layer whose output is longer than its input (padding after only, as
    the input gradient's stride phases make): im2col must not take the contiguous-run
    shortcut of same-shaped pointwise layers (a fuzz seed found it did)."""
    from dataclasses import replace
    x = rng.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    w = rng.standard_normal((2, 3, 1, 1, 1)).astype(np.float32)
    for padding_hi in [(2, 0, 0), (0, 1, 0), (0, 0, 3)]:
        spec = replace(ConvSpec.from_args(x, w, None, 1, 0)[0], padding_hi=padding_hi)
        out = np.empty(spec.out_shape, np.float32)
        _dispatch.plan_for(spec, "gemm").run(x, w.reshape(spec.group_weight_shape),
                                             np.zeros(2, np.float32), out)
        padded = np.pad(x, ((0, 0), (0, 0)) + tuple((0, p) for p in padding_hi))
        assert_matches_reference(out, padded, w)


def test_weight_gradient_slabs_fill_large_partials_in_one_product():
    """Weights too large for WEIGHT_GRAD_MIN_SLABS partial sums within
    WEIGHT_GRAD_SLAB_PARTIAL_BYTES: one slab per partial
    (each a single product written into it); smaller weights keep their 8 slabs."""
    def spec(channels, size, batch=1):
        x = np.zeros((batch, channels) + (size,) * 3, np.float32)
        return ConvSpec.from_args(x, np.zeros((channels, channels, 3, 3, 3), np.float32), None, 1, 1)[0]
    for large in (spec(512, 6), spec(384, 8), spec(512, 6, batch=2), spec(256, 8)):
        slabs = -(-math.prod(large.out_size) // gemm.weight_grad_slab_positions(large))
        assert large.batch * slabs == gemm.weight_grad_chunks(large) < gemm.WEIGHT_GRAD_MIN_SLABS
    small = spec(128, 12)
    assert gemm.weight_grad_slab_positions(small) == gemm.slab_positions(small, gemm.WEIGHT_GRAD_MIN_SLABS)


@pytest.mark.parametrize("stride, dilation, padding", [
    ((1, 2, 3), (1, 3, 2), (0, 1, 2)),
    ((1, 3, 2), (1, 1, 3), (0, 2, 0)),
    ((1, 2, 2), (1, 2, 1), (0, 3, 1)),
    ((1, 1, 1), (1, 2, 2), (0, 1, 1)),
])
def test_phase_split_planes_put_each_tap_at_a_constant_offset(stride, dilation, padding, rng):
    """The index arithmetic every direct, blocked and weight-gradient kernel shares, read
    through its own functions: in a plane from ``fill_padded_planes``, tap (kh, kw) of
    output position (oh, ow) sits at ``tap_offset + oh * row_pitch + ow`` and holds the
    zero-padded input at (oh*sH + kh*dH, ow*sW + kw*dW); every position of the run
    (``run_length``), margin columns included, lies inside the plane."""
    from numbaconv.kernels import direct
    x = rng.standard_normal((1, 1, 1, 11, 13))
    w = np.ones((1, 1, 1, 3, 4))
    spec = ConvSpec.from_args(x, w, None, stride, padding, dilation, 1)[0]
    geo = spec.geometry
    planes = np.full((1, 1, geo.plane_size), np.nan)
    direct.fill_padded_planes.py_func(x, 0, 0, 1, np.array([0]), planes, geo)
    assert not np.isnan(planes).any()  # every element written: data or zero
    padded = np.pad(x[0, 0, 0], [(padding[1], spec.padding_hi[1]), (padding[2], spec.padding_hi[2])])
    _, out_h, out_w = spec.out_size
    positions = direct.run_length.py_func(out_h, out_w, geo)
    for th in range(3):
        for tw in range(4):
            offset = direct.tap_offset.py_func(th, tw, geo)
            assert offset + positions <= geo.plane_size
            for oh in range(out_h):
                for ow in range(out_w):
                    expected = padded[oh * stride[1] + th * dilation[1], ow * stride[2] + tw * dilation[2]]
                    assert planes[0, 0, offset + oh * geo.row_pitch + ow] == expected
