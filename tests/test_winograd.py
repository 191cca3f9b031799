"""The Winograd F(2x2x2, 3x3x3) kernel: exact to the rounding bound on every layer it
takes (any padding, groups, odd sizes, padding modes), its error as channels grow,
MegEngine's golden outputs, the same bits at every thread count, the precision switch
that keeps ``auto`` from it, and clear errors where it does not apply."""
import glob
import itertools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import numbaconv as nc
from numbaconv import _autotune, _backward, _dispatch
from numbaconv._spec import ConvSpec
from numbaconv.reference import conv3d_reference
from helpers import (GOLDEN_DATA, assert_matches_reference, assert_runs_bitwise_equal, describe,
                     last_json, load_golden, make_case, outputs_per_thread_count, python_env,
                     run_script, winograd_layers)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer=winograd_layers(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_matches_the_reference_on_random_layers(layer, dtype, seed):
    x, w, b, args = make_case(np.random.default_rng(seed), *layer, dtype=dtype)
    out = nc.conv3d(x, w, b, algorithm="winograd", **args)
    assert out.dtype == dtype
    assert_matches_reference(out, x, w, b, algorithm="winograd", **args)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer=winograd_layers(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_twins_in_parts_give_the_same_bits(layer, dtype, seed):
    """``auto`` serves from winograd_threads while the parallel kernel compiles, and a
    process forked after OpenMP started runs it (winograd_serial: the same kernel in one
    part): the switch must never change a result."""
    x, w, b, args = make_case(np.random.default_rng(seed), *layer, dtype=dtype)
    parallel = nc.conv3d(x, w, b, algorithm="winograd", **args)
    for twin in ("winograd_threads", "winograd_serial"):
        assert nc.conv3d(x, w, b, algorithm=twin, **args).tobytes() == parallel.tobytes(), twin


def test_tiers_and_fork_fallback_share_the_bits():
    """The tiers below each parallel kernel: in parts on Python threads (also the fork
    fallback), then the numpy twin (its bits: tests/test_numpy_twins.py). The serial
    name is the same compiled kernel in one part."""
    for name in ("winograd", "wgrad_winograd"):
        kernel = _dispatch.REGISTRY[name]
        assert kernel.fallbacks == (name + "_threads", name + "_numpy")
        assert kernel.serial == name + "_threads"
        for other in (name + "_threads", name + "_serial", name + "_numpy"):
            assert _dispatch.REGISTRY[other].bitwise == kernel.bitwise
            assert not _dispatch.REGISTRY[other].parallel
        assert (_dispatch.REGISTRY[name + "_threads"].function
                is _dispatch.REGISTRY[name + "_serial"].function)


def test_auto_climbs_the_tiers_as_they_become_ready(monkeypatch):
    """While the parallel kernel compiles, a tiered plan (``auto``'s) runs the numpy twin,
    then the kernel in parts once that is ready, then the parallel one: the same bits at
    every step."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 16, 10, 11, 12)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    spec = ConvSpec.from_args(x, w, b, 1, 1)[0]
    for name in ("winograd", "winograd_threads"):
        nc.conv3d(x, w, b, padding=1, algorithm=name)  # compiled (or loaded) before the plan
    ready = {"winograd": False, "winograd_threads": False}
    monkeypatch.setattr(_dispatch, "_kernel_ready", lambda kernel, dtype: ready.get(kernel.name, True))
    real = _dispatch._kernel
    monkeypatch.setattr(_dispatch, "_kernel", lambda name, dtype, wait=None:
                        None if name in ready and not ready[name] else real(name, dtype, wait))
    monkeypatch.setattr(_dispatch, "_start_weight_grad_floor", lambda spec: None)
    plan = _dispatch.Plan(spec, "winograd", tiered=True)
    assert plan.state[0] == ["winograd", "winograd_threads", "winograd_numpy"]
    outputs = []
    for served, now_ready in (("winograd_numpy", "winograd_threads"),
                              ("winograd_threads", "winograd"), ("winograd", None)):
        out = np.empty(spec.out_shape, np.float32)
        plan.run(x, w.reshape(spec.group_weight_shape), b, out)
        assert plan.kernel_name == served
        outputs.append(out.tobytes())
        if now_ready:
            ready[now_ready] = True
    assert outputs[0] == outputs[1] == outputs[2]


def weight_grad_oracle(x, grad_out, padding, groups):
    """float64 weight gradient of a 3x3x3 stride-1 layer, straight from the definition:
    gw[co, ci, k] = sum over samples and output positions o of grad_out[co, o] *
    x_padded[ci, o + k] (ci within co's group)."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0)) + tuple((p, p) for p in padding))
    g64 = grad_out.astype(np.float64)
    cout, cin_g = grad_out.shape[1], x.shape[1] // groups
    cout_g = cout // groups
    size = grad_out.shape[2:]
    gw = np.zeros((cout, cin_g, 3, 3, 3))
    for kd, kh, kw in itertools.product(range(3), repeat=3):
        window = xp[:, :, kd:kd + size[0], kh:kh + size[1], kw:kw + size[2]]
        for group in range(groups):
            gw[group * cout_g:(group + 1) * cout_g, :, kd, kh, kw] = np.einsum(
                "nodhw,ncdhw->oc", g64[:, group * cout_g:(group + 1) * cout_g],
                window[:, group * cin_g:(group + 1) * cin_g])
    return gw


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer=winograd_layers(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1))
def test_weight_gradient_matches_the_definition(layer, dtype, seed):
    """The weight gradient by F(3x3x3, 2x2x2) against the float64 definition, within a
    worst-case bound derived as for the forward (``helpers.winograd_error``): a tile's
    grad_output transform is at most its 1-norm (A's entries are +-1), its input
    transform at most 8 max |x|; each of the 64 products sums ``tiles`` terms (+ 8 for
    the transforms' roundings) and a tap adds 64 of them (|G| <= 1 entries):
    error <= 64 * 8 * (tiles + 8) * eps * ||g[:, co]||_1 * max |x[:, ci]|. The serial
    twin gives the same bits."""
    rng = np.random.default_rng(seed)
    x, w, _, args = make_case(rng, *layer, dtype=dtype)
    padding = args["padding"] if isinstance(args["padding"], tuple) else (args["padding"],) * 3
    spec = ConvSpec.from_args(x, w, None, **args)[0]
    grad_out = rng.standard_normal(spec.out_shape).astype(dtype)
    gw = _backward.grad_weight(spec, x, grad_out, "wgrad_winograd")
    for twin in ("wgrad_winograd_threads", "wgrad_winograd_serial"):
        assert _backward.grad_weight(spec, x, grad_out, twin).tobytes() == gw.tobytes(), twin
    expected = weight_grad_oracle(x, grad_out, padding, spec.groups)
    tiles = spec.batch * np.prod([-(-size // 2) for size in spec.out_size])
    cout_g, cin_g = spec.out_per_group, spec.in_per_group
    grad_norms = np.abs(grad_out.astype(np.float64)).sum(axis=(0, 2, 3, 4))  # (Cout,)
    peaks = np.abs(x.astype(np.float64)).max(axis=(0, 2, 3, 4)).reshape(spec.groups, 1, cin_g)
    scale = (grad_norms.reshape(spec.groups, cout_g, 1) * peaks).reshape(-1, cin_g, 1, 1, 1)
    bound = 64 * 8 * (tiles + 8) * np.finfo(dtype).eps * scale
    assert np.all(np.abs(gw.reshape(expected.shape) - expected) <= bound)


def test_weight_gradient_is_chosen_where_it_pays():
    spec = ConvSpec.from_args(np.zeros((1, 64, 16, 16, 16), np.float32),
                              np.zeros((128, 64, 3, 3, 3), np.float32), None, 1, 1)[0]
    assert _dispatch.choose(spec, "weight_grad") == "wgrad_winograd"
    assert "wgrad_winograd" in _autotune.candidates(spec, "weight_grad")
    try:
        nc.set_precision("exact")
        assert _dispatch.choose(spec, "weight_grad") != "wgrad_winograd"
    finally:
        nc.set_precision("fast")


@pytest.mark.parametrize("padding, padding_mode", [("same", "zeros"), ((1, 0, 2), "zeros"),
                                                   (1, "reflect"), (2, "circular"),
                                                   (1, "replicate")])
def test_padding_forms(rng, padding, padding_mode):
    x = rng.standard_normal((1, 5, 7, 6, 9))
    w = rng.standard_normal((6, 5, 3, 3, 3))
    args = dict(padding=padding, padding_mode=padding_mode)
    out = nc.conv3d(x, w, algorithm="winograd", **args)
    np.testing.assert_allclose(out, conv3d_reference(x, w, **args), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cin", [16, 128, 512])
def test_float32_error_stays_within_the_documented_bound(rng, cin):
    """max |error| <= 1e-5 * max |y| for unit-normal input and MegEngine's default
    initialisation (uniform, bound 1/sqrt(fan-in)), up to 512 input channels; and within
    a small factor of the direct kernel's own error."""
    x = rng.standard_normal((1, cin, 6, 6, 6)).astype(np.float32)
    bound = 1 / np.sqrt(cin * 27)
    w = rng.uniform(-bound, bound, (16, cin, 3, 3, 3)).astype(np.float32)
    expected = conv3d_reference(x, w, padding=1)
    scale = np.abs(expected).max()
    winograd = np.abs(nc.conv3d(x, w, padding=1, algorithm="winograd") - expected).max()
    direct = np.abs(nc.conv3d(x, w, padding=1, algorithm="direct") - expected).max()
    assert winograd <= 1e-5 * scale
    assert winograd <= 4 * direct


GOLDEN = [p for p in sorted(glob.glob(os.path.join(GOLDEN_DATA, "conv3d_*.npz")))
          if "_f16_" not in p]


def _golden_winograd_cases():
    cases = []
    for path in GOLDEN:
        z, meta = load_golden(path)
        if (meta.get("kind") == "conv3d" and z["weight"].shape[-3:] == (3, 3, 3)
                and meta["stride"] in (1, [1, 1, 1]) and meta["dilation"] in (1, [1, 1, 1])):
            cases.append(path)
    return cases


@pytest.mark.parametrize("path", _golden_winograd_cases(), ids=os.path.basename)
def test_megengine_golden_outputs(path):
    z, meta = load_golden(path)
    bias = z["bias"] if "bias" in z.files else None
    args = dict(stride=meta["stride"], padding=meta["padding"], dilation=meta["dilation"],
                groups=meta["groups"])
    out = nc.conv3d(z["inp"], z["weight"], bias, algorithm="winograd", **args)
    expected = z["out"]
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * scale)
    assert_matches_reference(out, z["inp"], z["weight"], bias, **args)


def test_golden_files_include_winograd_layers():
    assert len(_golden_winograd_cases()) >= 3


def test_same_bits_at_every_thread_count(tmp_path):
    runs = outputs_per_thread_count(tmp_path, """
        import sys
        import numpy as np, numbaconv as nc
        rng = np.random.default_rng(3)
        x = rng.standard_normal((2, 40, 9, 12, 11)).astype(np.float32)
        w = rng.standard_normal((36, 40, 3, 3, 3)).astype(np.float32)
        out = nc.conv3d(x, w, padding=1, algorithm="winograd")
        gi, _, _ = nc.conv3d_backward(np.ones_like(out), x, w, padding=1, algorithm="winograd",
                                      need_weight_grad=False)
        # a deep layer on a small volume: staged (whole samples, stage by stage)
        from numbaconv import _backward
        from numbaconv._spec import ConvSpec
        from numbaconv.kernels import winograd
        x = rng.standard_normal((2, 128, 8, 8, 7)).astype(np.float32)
        w = rng.standard_normal((128, 128, 3, 3, 3)).astype(np.float32)
        spec = ConvSpec.from_args(x, w, None, 1, 1)[0]
        assert winograd.staged(spec)
        deep = nc.conv3d(x, w, padding=1, algorithm="winograd")
        deep_gw = _backward.grad_weight(spec, x, np.cos(deep), "wgrad_winograd")
        # run in parts on Python threads, one per numba thread
        deep_parts = nc.conv3d(x, w, padding=1, algorithm="winograd_threads")
        deep_gw_parts = _backward.grad_weight(spec, x, np.cos(deep), "wgrad_winograd_threads")
        assert deep_parts.tobytes() == deep.tobytes() and deep_gw_parts.tobytes() == deep_gw.tobytes()
        np.savez(sys.argv[1], out=out, grad_input=gi, deep=deep, deep_gw=deep_gw)
    """, thread_counts=(1, 2, 2))
    assert_runs_bitwise_equal(runs)


def test_input_gradient_runs_on_it(rng):
    """The input gradient of a 3x3x3 stride-1 layer is a 3x3x3 stride-1 convolution."""
    x = rng.standard_normal((1, 6, 5, 7, 6))
    w = rng.standard_normal((4, 3, 3, 3, 3))
    grad_out = rng.standard_normal((1, 4, 5, 7, 6))
    fast = nc.conv3d_backward(grad_out, x, w, padding=1, groups=2, algorithm="winograd")[0]
    direct = nc.conv3d_backward(grad_out, x, w, padding=1, groups=2, algorithm="direct")[0]
    np.testing.assert_allclose(fast, direct, rtol=0, atol=1e-12)


@pytest.mark.parametrize("args", [dict(stride=2), dict(dilation=2, padding=2)])
def test_other_layers_are_refused_with_the_reason(rng, args):
    x = rng.standard_normal((1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="3x3x3 kernels with stride 1 and dilation 1"):
        nc.conv3d(x, rng.standard_normal((2, 2, 3, 3, 3)), algorithm="winograd", **args)
    with pytest.raises(ValueError, match="3x3x3"):
        nc.conv3d(x, rng.standard_normal((2, 2, 1, 3, 3)), algorithm="winograd")


def test_strided_transposed_convolution_is_refused_in_the_callers_terms(rng):
    """At stride 2 the transposed convolution (and input gradient) runs as phases of
    smaller kernels, which it cannot compute; the error names the caller's layer."""
    y = rng.standard_normal((1, 2, 4, 4, 4))
    w = rng.standard_normal((2, 3, 3, 3, 3))
    with pytest.raises(ValueError, match=r"input gradient .*\(kernel \(3, 3, 3\), stride \(2, 2, 2\)"):
        nc.conv_transpose3d(y, w, stride=2, algorithm="winograd")
    with pytest.raises(ValueError, match="3x3x3 kernels with stride 1 and dilation 1"):
        nc.conv3d_backward(rng.standard_normal((1, 3, 4, 4, 4)), rng.standard_normal((1, 2, 8, 8, 8)),
                           w.transpose(1, 0, 2, 3, 4), stride=2, padding=1, algorithm="winograd")


def _big_layer():
    x = np.zeros((1, 32, 16, 16, 16), np.float32)
    w = np.zeros((32, 32, 3, 3, 3), np.float32)
    return ConvSpec.from_args(x, w, None, 1, 1)[0]


def test_auto_uses_it_only_when_permitted():
    spec = _big_layer()
    assert nc.get_precision() == "fast"
    assert _dispatch.choose(spec) == "winograd"
    assert "winograd" in _autotune.candidates(spec, "forward")
    try:
        assert nc.set_precision("exact") == "fast"
        assert nc.get_precision() == "exact"
        assert _dispatch.choose(spec) == _dispatch.blocked_variant(spec)
        assert "winograd" not in _autotune.candidates(spec, "forward")
    finally:
        nc.set_precision("fast")
    small = ConvSpec.from_args(np.zeros((1, 32, 4, 4, 4), np.float32),
                               np.zeros((32, 32, 3, 3, 3), np.float32), None, 1, 1)[0]
    assert _dispatch.choose(small) != "winograd"  # too few tiles to pay for the transform


def test_precision_switch_is_checked():
    """Unknown names and non-strings are refused (the case is not checked, as in
    NUMBACONV_PRECISION: see test_faults' case-insensitivity test)."""
    with pytest.raises(ValueError, match="precision"):
        nc.set_precision("highest")
    with pytest.raises(TypeError, match="precision"):
        nc.set_precision(None)
    assert nc.get_precision() == "fast"


def test_precision_environment_variable(tmp_path):
    source = """
        import json
        import numpy as np, numbaconv as nc
        from numbaconv import _dispatch
        from numbaconv._spec import ConvSpec
        spec = ConvSpec.from_args(np.zeros((1, 32, 16, 16, 16), np.float32),
                                  np.zeros((32, 32, 3, 3, 3), np.float32), None, 1, 1)[0]
        print(json.dumps({"precision": nc.get_precision(), "choice": _dispatch.choose(spec)}))
    """
    proc = run_script(tmp_path, source, env=python_env(NUMBACONV_PRECISION="exact"))
    assert proc.returncode == 0, describe(proc)
    assert last_json(proc)["precision"] == "exact"
    assert last_json(proc)["choice"] != "winograd"
    proc = run_script(tmp_path, source, env=python_env(NUMBACONV_PRECISION="sloppy"))
    assert proc.returncode != 0 and "NUMBACONV_PRECISION" in proc.stderr
