"""Argument checking: every bad input to ``conv3d`` / ``Conv3d`` is a ValueError or a
TypeError whose message names the argument, what was expected and what was given,
raised before any kernel is compiled.

The rules are in the project's ``shared/spec/SEMANTICS.md`` (outside this repository;
section "Where MegEngine is poor and numbaconv must do better"). Valid-but-unusual
inputs (numpy integer hyper-parameters, batch 0, exactly fitting inputs, integer
inputs, case-insensitive conv_mode) are checked against the float64 reference in
``numbaconv/reference.py``, within a relative tolerance (this module's own
``assert_matches_reference``, looser than helpers.py's rounding bound).
"""
import re

import numpy as np
import pytest

import numbaconv
from numbaconv.reference import conv3d_reference


# ---------------------------------------------------------------------------
# Helpers and small operands
# ---------------------------------------------------------------------------

def msg(*parts) -> str:
    """A regex for ``pytest.raises(match=...)`` that requires every part (literal text)
    to appear somewhere in the message, in any order."""
    return "(?s)" + "".join(f"(?=.*{re.escape(str(p))})" for p in parts)


RNG = np.random.default_rng(1234)
X = RNG.standard_normal((1, 2, 4, 4, 4)).astype(np.float32)   # (N, Cin, D, H, W)
W = RNG.standard_normal((3, 2, 2, 2, 2)).astype(np.float32)   # (Cout, Cin, kD, kH, kW)
B = RNG.standard_normal((1, 3, 1, 1, 1)).astype(np.float32)
# A larger input for stride/padding/dilation variations.
X_BIG = RNG.standard_normal((1, 2, 5, 6, 7)).astype(np.float32)


def randn(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def assert_matches_reference(out, *args, rtol=1e-5, **kwargs):
    ref = conv3d_reference(*args, **kwargs)
    assert out.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    np.testing.assert_allclose(out, ref, rtol=rtol, atol=1e-5 * scale)


HYPER = ["stride", "padding", "dilation"]
MINIMUM = {"stride": 1, "padding": 0, "dilation": 1}


# ---------------------------------------------------------------------------
# stride / padding / dilation
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["stride", "dilation"])
@pytest.mark.parametrize("value, shown", [
    (0, "(0, 0, 0)"),
    (-1, "(-1, -1, -1)"),
    (-7, "(-7, -7, -7)"),
    ((1, 0, 1), "(1, 0, 1)"),
    ((1, 1, -2), "(1, 1, -2)"),
    ([0, 1, 1], "(0, 1, 1)"),
    (np.int64(0), "(0, 0, 0)"),
    (np.array([1, 1, 0]), "(1, 1, 0)"),
])
def test_stride_dilation_below_one(name, value, shown):
    with pytest.raises(ValueError, match=msg(name, ">= 1", shown)):
        numbaconv.conv3d(X, W, **{name: value})


@pytest.mark.parametrize("value, shown", [
    (-1, "(-1, -1, -1)"),
    (-3, "(-3, -3, -3)"),
    ((0, -1, 0), "(0, -1, 0)"),
    ((0, 0, -5), "(0, 0, -5)"),
    (np.int32(-2), "(-2, -2, -2)"),
])
def test_padding_negative(value, shown):
    with pytest.raises(ValueError, match=msg("padding", ">= 0", shown)):
        numbaconv.conv3d(X, W, padding=value)


@pytest.mark.parametrize("value", [0, (0, 0, 0), [0, 0, 0], np.int64(0)])
def test_padding_zero_is_valid(value):
    out = numbaconv.conv3d(X, W, B, padding=value)
    assert_matches_reference(out, X, W, B, padding=0)


@pytest.mark.parametrize("name", HYPER)
@pytest.mark.parametrize("value, shown", [
    (1.0, "1.0 (float)"),
    (1.5, "1.5 (float)"),
    (2.0, "2.0 (float)"),
    (float("nan"), "nan"),
    (True, "True (bool)"),
    (False, "False (bool)"),
    (np.float64(1.0), "float64"),
    (np.float32(2.0), "float32"),
    (np.bool_(True), "bool"),
    (np.array(1.0), "1.0"),
    (1j, "1j"),
    ("1", "'1' (str)"),
    ("111", "'111' (str)"),
    ("(1, 1, 1)", "'(1, 1, 1)' (str)"),
    (b"1", "b'1' (bytes)"),
    (None, "None (NoneType)"),
    (object(), "(object)"),
    # unordered: {4, 1, 2} would otherwise become (1, 2, 4)
    ({4, 1, 2}, "{1, 2, 4} (set)"),
    (frozenset({1, 2, 3}), "(frozenset)"),
    ({1: 1}, "{1: 1} (dict)"),
    ({0: 1, 1: 1, 2: 1}, "(dict)"),
])
def test_hyper_bad_type(name, value, shown):
    if name == "padding" and isinstance(value, str):
        # padding also takes the strings "same" and "valid" (PyTorch's); others are a ValueError
        with pytest.raises(ValueError, match=r"padding must be an int, 3 ints, 'same' or 'valid', got " + re.escape(repr(value))):
            numbaconv.conv3d(X, W, **{name: value})
        return
    with pytest.raises(TypeError, match=msg(name, "must be an int or a sequence of 3 ints", shown)):
        numbaconv.conv3d(X, W, **{name: value})


@pytest.mark.parametrize("name", HYPER)
@pytest.mark.parametrize("value, where, shown", [
    ((1, 1.5, 1), "[1]", "1.5 (float)"),
    ((1.0, 1, 1), "[0]", "1.0 (float)"),
    ([1, 1, 1.0], "[2]", "1.0 (float)"),
    ((1, True, 1), "[1]", "True (bool)"),
    ((1, 1, False), "[2]", "False (bool)"),
    ((1, "2", 1), "[1]", "'2' (str)"),
    ((1, 1, None), "[2]", "None (NoneType)"),
    (((1, 1, 1), 1, 1), "[0]", "(1, 1, 1) (tuple)"),
    ((1, [2], 1), "[1]", "[2] (list)"),
    ((1, 1, (1,)), "[2]", "(1,) (tuple)"),
    (np.array([1.0, 1.0, 1.0]), "[0]", "float"),
    (np.ones((3, 1), dtype=np.int64), "[0]", "ndarray"),
])
def test_hyper_bad_entry(name, value, where, shown):
    """A sequence with a non-int entry names the entry, e.g. ``stride[1]``."""
    with pytest.raises(TypeError, match=msg(f"{name}{where}", "must be an int", shown)):
        numbaconv.conv3d(X, W, **{name: value})


@pytest.mark.parametrize("name", HYPER)
@pytest.mark.parametrize("value, count", [
    ((1, 1), 2),
    ([1, 1], 2),
    ((1, 1, 1, 1), 4),
    ([1, 1, 1, 1], 4),
    ((), 0),
    ((1,), 1),
    (np.array([1, 1]), 2),
    (np.array([1, 1, 1, 1]), 4),
])
def test_hyper_wrong_length(name, value, count):
    with pytest.raises(ValueError, match=msg(name, "exactly 3 entries", f"got {count}")):
        numbaconv.conv3d(X, W, **{name: value})


@pytest.mark.parametrize("name", HYPER)
@pytest.mark.parametrize("value, triple", [
    (np.int64(2), (2, 2, 2)),
    (np.int32(1), (1, 1, 1)),
    (np.uint8(2), (2, 2, 2)),
    (np.int16(1), (1, 1, 1)),
    (np.array(2), (2, 2, 2)),
    (np.array([1, 2, 1]), (1, 2, 1)),
    (np.array([2, 1, 2], dtype=np.int32), (2, 1, 2)),
    (np.array([1, 1, 2], dtype=np.uint16), (1, 1, 2)),
    ((np.int64(2), 1, np.int8(2)), (2, 1, 2)),
    ([1, 2, 2], (1, 2, 2)),
])
def test_hyper_numpy_ints_accepted(name, value, triple):
    out = numbaconv.conv3d(X_BIG, W, B, **{name: value})
    assert out.dtype == np.float32
    assert_matches_reference(out, X_BIG, W, B, **{name: triple})


# ---------------------------------------------------------------------------
# groups
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, exc, shown", [
    (0, ValueError, "got 0"),
    (-1, ValueError, "got -1"),
    (-4, ValueError, "got -4"),
    (np.int64(0), ValueError, "got 0"),
    (1.5, TypeError, "1.5 (float)"),
    (2.0, TypeError, "2.0 (float)"),
    (True, TypeError, "True (bool)"),
    (np.bool_(True), TypeError, "bool"),
    (None, TypeError, "None (NoneType)"),
    ("2", TypeError, "'2' (str)"),
    ((2,), TypeError, "(2,) (tuple)"),
])
def test_groups_bad_value(value, exc, shown):
    with pytest.raises(exc, match=msg("groups", "int", shown)):
        numbaconv.conv3d(X, W, groups=value)


def test_groups_numpy_int_accepted():
    x = randn(1, 4, 3, 3, 3, seed=1)
    w = randn(6, 2, 2, 2, 2, seed=2)  # PyTorch layout, groups=2
    out = numbaconv.conv3d(x, w, groups=np.int64(2))
    assert_matches_reference(out, x, w, groups=2)


@pytest.mark.parametrize("cin, weight_shape, groups", [
    (3, (2, 1, 2, 2, 2), 2),          # PyTorch layout
    (5, (2, 1, 1, 2, 2, 2), 2),       # MegEngine 6-D layout
    (4, (3, 1, 1, 2, 2, 2), 3),
    (7, (4, 1, 2, 2, 2), 4),
])
def test_groups_not_dividing_inp_channels(cin, weight_shape, groups):
    x = np.zeros((1, cin, 3, 3, 3), np.float32)
    w = np.zeros(weight_shape, np.float32)
    with pytest.raises(ValueError, match=msg("inp", f"{cin} channels", f"groups={groups}", "divide")):
        numbaconv.conv3d(x, w, groups=groups)


@pytest.mark.parametrize("cout, groups", [(3, 2), (5, 2), (4, 3), (2, 4)])
def test_groups_not_dividing_weight_out_channels(cout, groups):
    cin = 2 * groups
    x = np.zeros((1, cin, 3, 3, 3), np.float32)
    w = np.zeros((cout, 2, 2, 2, 2), np.float32)
    with pytest.raises(ValueError, match=msg("weight", f"{cout} output channels", f"groups={groups}")):
        numbaconv.conv3d(x, w, groups=groups)


@pytest.mark.parametrize("g_weight, groups", [(2, 1), (2, 3), (3, 1), (1, 2), (4, 2)])
def test_six_d_weight_disagrees_with_groups(g_weight, groups):
    x = np.zeros((1, 12, 3, 3, 3), np.float32)
    w = np.zeros((g_weight, 1, 12 // g_weight, 2, 2, 2), np.float32)
    with pytest.raises(ValueError, match=msg("weight", "6-D", f"G={g_weight}", f"groups={groups}")):
        numbaconv.conv3d(x, w, groups=groups)


# ---------------------------------------------------------------------------
# Shapes: ndim, channels, zero-size axes, too-small inputs
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [
    (2, 4, 4), (1, 2, 4, 4), (1, 2, 4, 4, 4, 1), (1, 1, 2, 4, 4, 4), (), (4,),
])
def test_inp_wrong_ndim(shape):
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=msg("inp", "5-D", f"{len(shape)}-D", str(shape))):
        numbaconv.conv3d(x, W)


@pytest.mark.parametrize("shape", [
    (3, 2, 2, 2), (1, 1, 3, 2, 2, 2, 2), (3, 2), (), (3, 2, 2, 2, 2, 2, 2, 2),
])
def test_weight_wrong_ndim(shape):
    w = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=msg("weight", "5-D", "6-D", f"{len(shape)}-D", str(shape))):
        numbaconv.conv3d(X, w)


@pytest.mark.parametrize("cin, weight_shape, groups, expects", [
    (3, (2, 2, 2, 2, 2), 1, 2),          # dense
    (2, (2, 3, 2, 2, 2), 1, 3),          # dense
    (1, (4, 2, 1, 1, 1), 1, 2),          # dense, 1x1x1 kernel
    (4, (2, 3, 1, 2, 2, 2), 2, 2),       # MegEngine grouped 6-D
    (6, (2, 1, 2, 2, 2, 2), 2, 4),       # MegEngine grouped 6-D
    (4, (4, 1, 2, 2, 2), 2, 2),          # PyTorch-layout grouped 5-D
    (4, (4, 4, 2, 2, 2), 2, 8),          # PyTorch-layout grouped 5-D
    (6, (6, 1, 2, 2, 2), 3, 3),          # PyTorch-layout grouped 5-D
])
def test_channel_mismatch(cin, weight_shape, groups, expects):
    x = np.zeros((1, cin, 3, 3, 3), np.float32)
    w = np.zeros(weight_shape, np.float32)
    with pytest.raises(ValueError, match=msg("channel mismatch", f"inp has {cin} channels",
                                             str(weight_shape), f"expects {expects}")):
        numbaconv.conv3d(x, w, groups=groups)


@pytest.mark.parametrize("weight_shape, groups", [
    ((0, 2, 2, 2, 2), 1),
    ((3, 0, 2, 2, 2), 1),
    ((3, 2, 0, 2, 2), 1),
    ((3, 2, 2, 0, 2), 1),
    ((3, 2, 2, 2, 0), 1),
    ((2, 0, 1, 2, 2, 2), 2),
    ((2, 1, 0, 2, 2, 2), 2),
    ((2, 1, 1, 2, 0, 2), 2),
    ((0, 1, 2, 2, 2), 2),
])
def test_weight_zero_size_axis(weight_shape, groups):
    w = np.zeros(weight_shape, np.float32)
    with pytest.raises(ValueError, match=msg("weight", "zero-length axis", str(weight_shape))):
        numbaconv.conv3d(X, w, groups=groups)


@pytest.mark.parametrize("shape", [
    (1, 0, 4, 4, 4), (0, 0, 4, 4, 4), (1, 2, 0, 4, 4), (1, 2, 4, 0, 4), (1, 2, 4, 4, 0),
])
def test_inp_zero_channels_or_spatial(shape):
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=msg("inp", "at least 1 channel", "spatial size >= 1", str(shape))):
        numbaconv.conv3d(x, W)


@pytest.mark.parametrize("x_shape, w_shape, kwargs, out_shape", [
    ((0, 2, 4, 4, 4), (3, 2, 2, 2, 2), {}, (0, 3, 3, 3, 3)),
    ((0, 2, 5, 6, 7), (3, 2, 3, 1, 2), dict(stride=(1, 2, 3), padding=1), (0, 3, 5, 4, 3)),
    ((0, 4, 4, 4, 4), (2, 3, 2, 2, 2, 2), dict(groups=2), (0, 6, 3, 3, 3)),
    ((0, 4, 4, 4, 4), (6, 2, 2, 2, 2), dict(groups=2), (0, 6, 3, 3, 3)),
])
@pytest.mark.parametrize("with_bias", [False, True])
def test_batch_zero_is_valid(x_shape, w_shape, kwargs, out_shape, with_bias):
    x = np.zeros(x_shape, np.float32)
    w = np.ones(w_shape, np.float32)
    bias = np.ones(out_shape[1], np.float32) if with_bias else None
    out = numbaconv.conv3d(x, w, bias, **kwargs)
    assert isinstance(out, np.ndarray)
    assert out.shape == out_shape
    assert out.dtype == np.float32
    assert out.size == 0


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("size, kernel, dilation, padding, span", [
    (2, 3, 1, 0, 3),
    (1, 2, 1, 0, 2),
    (3, 2, 3, 0, 4),
    (4, 3, 2, 0, 5),
    (1, 5, 1, 1, 5),   # 1 + 2*1 = 3 < 5
    (2, 3, 3, 1, 7),   # 2 + 2 = 4 < 7
])
def test_inp_too_small_for_dilated_kernel(axis, size, kernel, dilation, padding, span):
    in_size = [8, 8, 8]
    in_size[axis] = size
    k = [1, 1, 1]
    k[axis] = kernel
    d = [1, 1, 1]
    d[axis] = dilation
    p = [0, 0, 0]
    p[axis] = padding
    x = np.zeros((1, 2) + tuple(in_size), np.float32)
    w = np.zeros((3, 2) + tuple(k), np.float32)
    letter = "DHW"[axis]
    with pytest.raises(ValueError, match=msg("inp", "too small", f"axis {letter}", f"size {size}",
                                             f"spans {span}", f"kernel {kernel}",
                                             f"dilation {dilation}")):
        numbaconv.conv3d(x, w, padding=tuple(p), dilation=tuple(d))


@pytest.mark.parametrize("in_size, kernel, dilation, padding", [
    ((3, 4, 5), (3, 4, 5), 1, 0),
    ((4, 5, 7), (2, 2, 2), (3, 4, 6), 0),
    ((1, 1, 1), (3, 3, 3), 1, 1),
    ((1, 2, 3), (3, 4, 5), 1, 1),
    ((1, 1, 1), (1, 1, 1), 1, 0),
    ((5, 1, 3), (2, 1, 2), (4, 7, 2), 0),
])
def test_exactly_fitting_input_is_valid(in_size, kernel, dilation, padding):
    x = randn(2, 2, *in_size, seed=3)
    w = randn(3, 2, *kernel, seed=4)
    out = numbaconv.conv3d(x, w, B, padding=padding, dilation=dilation)
    assert out.shape == (2, 3, 1, 1, 1)
    assert_matches_reference(out, x, w, B, padding=padding, dilation=dilation)


# ---------------------------------------------------------------------------
# bias
# ---------------------------------------------------------------------------

X_W6 = RNG.standard_normal((1, 2, 4, 4, 6)).astype(np.float32)  # output (1, 3, 3, 3, 5)


@pytest.mark.parametrize("shape", [
    (5,),               # (Wo,): MegEngine broadcasts this along W and gives wrong results
    (4,),               # (Cout + 1,)
    (2,),               # (Cout - 1,)
    (1, 3, 1, 1, 2),
    (1, 3, 1, 1, 5),
    (1, 3),             # 2-D
    (3, 1),             # 2-D
    (1, 1, 1, 1, 1),    # broadcastable, but not one value per channel
    (1, 4, 1, 1, 1),
    (1, 3, 1, 1),
    (1, 3, 1, 1, 1, 1),
    (),
    (1, 3, 3, 3, 5),    # the whole output's shape
])
def test_bias_wrong_shape(shape):
    assert numbaconv.conv3d(X_W6, W).shape == (1, 3, 3, 3, 5)
    bias = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=msg("bias", "(1, 3, 1, 1, 1)", "(3,)", f"got shape {shape}")):
        numbaconv.conv3d(X_W6, W, bias)


@pytest.mark.parametrize("bias", [
    np.arange(3, dtype=np.float32) - 1.0,
    (np.arange(3, dtype=np.float32) - 1.0).reshape(1, 3, 1, 1, 1),
    [0.5, -1.0, 2.0],
    np.arange(3, dtype=np.float64),
    np.arange(3, dtype=np.int32),
])
def test_bias_valid_shapes(bias):
    out = numbaconv.conv3d(X_W6, W, bias)
    assert out.dtype == np.float32
    assert_matches_reference(out, X_W6, W, np.asarray(bias, np.float64).reshape(-1))


@pytest.mark.parametrize("bias, shown", [
    (np.zeros(3, np.complex64), "complex64"),
    (np.zeros(3, object), "object"),
    (np.array(["a", "b", "c"]), "<U1"),
    ("abc", "<U3"),
])
def test_bias_bad_dtype(bias, shown):
    with pytest.raises(TypeError, match=msg("bias", "dtype", shown)):
        numbaconv.conv3d(X, W, bias)


# ---------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["inp", "weight"])
@pytest.mark.parametrize("dtype, shown", [
    (np.complex64, "complex64"),
    (np.complex128, "complex128"),
    (object, "object"),
    ("U1", "<U1"),
    ("S1", "S1"),
    ("datetime64[s]", "datetime64"),
    ("timedelta64[s]", "timedelta64"),
    ([("a", "f4")], "('a', '<f4')"),
])
def test_bad_dtype(which, dtype, shown):
    arrays = {"inp": X, "weight": W}
    if dtype in ("U1", "S1"):
        arrays[which] = np.full(arrays[which].shape, "1", dtype=dtype)
    else:
        arrays[which] = np.zeros(arrays[which].shape, dtype=dtype)
    with pytest.raises(TypeError, match=msg(which, "real float or integer dtype", shown)):
        numbaconv.conv3d(arrays["inp"], arrays["weight"])


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize in (8,), reason="longdouble is float64 here")
@pytest.mark.parametrize("which", ["inp", "weight"])
def test_longdouble_rejected(which):
    arrays = {"inp": X, "weight": W}
    arrays[which] = arrays[which].astype(np.longdouble)
    with pytest.raises(TypeError, match=msg(which, "float16, float32 or float64",
                                            np.dtype(np.longdouble).name)):
        numbaconv.conv3d(arrays["inp"], arrays["weight"])


@pytest.mark.parametrize("which", ["inp", "weight"])
def test_none_array(which):
    arrays = {"inp": X, "weight": W}
    arrays[which] = None
    with pytest.raises(TypeError, match=msg(which, "must be an array", "None")):
        numbaconv.conv3d(arrays["inp"], arrays["weight"])


@pytest.mark.parametrize("inp_dtype, weight_dtype", [
    (np.int32, np.int64),
    (np.int64, np.int32),
    (np.int64, np.int64),
    (np.bool_, np.int64),
    (np.int64, np.bool_),
    (np.bool_, np.bool_),
    (np.uint8, np.int16),
])
def test_two_integer_operands(inp_dtype, weight_dtype):
    x = X.astype(inp_dtype)
    w = W.astype(weight_dtype)
    with pytest.raises(TypeError, match=msg("floating point", "inp", "weight",
                                            np.dtype(inp_dtype).name, np.dtype(weight_dtype).name)):
        numbaconv.conv3d(x, w)


@pytest.mark.parametrize("inp_dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint16])
def test_integer_inp_float32_weight(inp_dtype):
    x = np.random.default_rng(5).integers(0, 50, X.shape).astype(inp_dtype)
    out = numbaconv.conv3d(x, W, B)
    assert out.dtype == np.float32
    assert_matches_reference(out, x, W, B)


@pytest.mark.parametrize("weight_dtype", [np.int8, np.int64])
def test_float32_inp_integer_weight(weight_dtype):
    w = np.random.default_rng(6).integers(-3, 4, W.shape).astype(weight_dtype)
    out = numbaconv.conv3d(X, w)
    assert out.dtype == np.float32
    assert_matches_reference(out, X, w)


# ---------------------------------------------------------------------------
# conv_mode
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [
    "cross-correlation", "conv", "", "CROSS CORRELATION", "correlation", "convolution ",
    " cross_correlation", "convolve",
])
def test_conv_mode_typo(mode):
    with pytest.raises(ValueError, match=msg("conv_mode", "'cross_correlation'", "'convolution'",
                                             f"got {mode!r}")):
        numbaconv.conv3d(X, W, conv_mode=mode)


@pytest.mark.parametrize("mode, shown", [
    (None, "None (NoneType)"),
    (1, "1 (int)"),
    (0, "0 (int)"),
    (True, "True (bool)"),
    (b"convolution", "b'convolution' (bytes)"),
    (["convolution"], "['convolution'] (list)"),
])
def test_conv_mode_not_str(mode, shown):
    with pytest.raises(TypeError, match=msg("conv_mode", "must be a str", shown)):
        numbaconv.conv3d(X, W, conv_mode=mode)


@pytest.mark.parametrize("mode, canonical", [
    ("CROSS_CORRELATION", "cross_correlation"),
    ("Cross_Correlation", "cross_correlation"),
    ("cross_correlation", "cross_correlation"),
    ("Convolution", "convolution"),
    ("CONVOLUTION", "convolution"),
    ("convolution", "convolution"),
])
def test_conv_mode_valid_case_insensitive(mode, canonical):
    out = numbaconv.conv3d(X, W, B, conv_mode=mode)
    assert_matches_reference(out, X, W, B, conv_mode=canonical)


def test_convolution_differs_from_cross_correlation():
    a = numbaconv.conv3d(X, W, conv_mode="convolution")
    b = numbaconv.conv3d(X, W, conv_mode="cross_correlation")
    assert not np.allclose(a, b)
    flipped = np.ascontiguousarray(W[..., ::-1, ::-1, ::-1])
    np.testing.assert_allclose(a, numbaconv.conv3d(X, flipped), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------
# The Conv3d constructor and forward
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("args, kwargs, first", [
    ((3, 4, 3), dict(groups=2), "in_channels (3)"),
    ((4, 3, 3), dict(groups=2), "out_channels (3)"),
    ((3, 5, 3), dict(groups=2), "in_channels (3)"),      # both bad: in_channels first
    ((6, 4, 3), dict(groups=4), "in_channels (6)"),      # both bad: in_channels first
    ((4, 6, 3), dict(groups=4), "out_channels (6)"),
    ((2, 2, 3), dict(groups=3), "in_channels (2)"),
])
def test_module_channels_not_divisible_by_groups(args, kwargs, first):
    with pytest.raises(ValueError, match=msg(first, "divisible", f"groups ({kwargs['groups']})")):
        numbaconv.Conv3d(*args, **kwargs)


@pytest.mark.parametrize("name", ["in_channels", "out_channels"])
@pytest.mark.parametrize("value, exc, shown", [
    (0, ValueError, "got 0"),
    (-2, ValueError, "got -2"),
    (1.5, TypeError, "1.5 (float)"),
    (3.0, TypeError, "3.0 (float)"),
    (True, TypeError, "True (bool)"),
    ("3", TypeError, "'3' (str)"),
    (None, TypeError, "None (NoneType)"),
])
def test_module_bad_channels(name, value, exc, shown):
    kwargs = dict(in_channels=2, out_channels=2, kernel_size=3)
    kwargs[name] = value
    with pytest.raises(exc, match=msg(name, "int", shown)):
        numbaconv.Conv3d(**kwargs)


@pytest.mark.parametrize("value, exc, shown", [
    (0, ValueError, "(0, 0, 0)"),
    ((3, 0, 3), ValueError, "(3, 0, 3)"),
    (-1, ValueError, "(-1, -1, -1)"),
    ((3, 3), ValueError, "got 2"),
    ((3, 3, 3, 3), ValueError, "got 4"),
    (3.0, TypeError, "3.0 (float)"),
    (2.5, TypeError, "2.5 (float)"),
    ((3, 3.0, 3), TypeError, "kernel_size[1]"),
    ("3", TypeError, "'3' (str)"),
    (None, TypeError, "None (NoneType)"),
    (True, TypeError, "True (bool)"),
])
def test_module_bad_kernel_size(value, exc, shown):
    with pytest.raises(exc, match=msg("kernel_size", shown)):
        numbaconv.Conv3d(2, 2, value)


@pytest.mark.parametrize("name, value, exc, shown", [
    ("stride", 0, ValueError, "(0, 0, 0)"),
    ("stride", 1.5, TypeError, "1.5 (float)"),
    ("stride", (1, 1), ValueError, "got 2"),
    ("padding", -1, ValueError, "(-1, -1, -1)"),
    ("padding", (0, 0, 0, 0), ValueError, "got 4"),
    ("padding", "1", ValueError, "'1'"),  # strings: only 'same' and 'valid'
    ("dilation", 0, ValueError, "(0, 0, 0)"),
    ("dilation", True, TypeError, "True (bool)"),
    ("dilation", None, TypeError, "None (NoneType)"),
    ("groups", 0, ValueError, "got 0"),
    ("groups", 1.5, TypeError, "1.5 (float)"),
])
def test_module_bad_hyper(name, value, exc, shown):
    with pytest.raises(exc, match=msg(name, shown)):
        numbaconv.Conv3d(2, 2, 3, **{name: value})


@pytest.mark.parametrize("bias, shown", [
    ("yes", "str"),
    ("False", "str"),
    (None, "NoneType"),
    ([True], "list"),
])
def test_module_bias_not_bool(bias, shown):
    with pytest.raises(TypeError, match=msg("bias", "bool", shown)):
        numbaconv.Conv3d(2, 2, 3, bias=bias)


@pytest.mark.parametrize("mode, exc, shown", [
    ("conv", ValueError, "'conv'"),
    ("cross-correlation", ValueError, "'cross-correlation'"),
    ("", ValueError, "''"),
    (None, TypeError, "None (NoneType)"),
    (1, TypeError, "1 (int)"),
])
def test_module_bad_conv_mode(mode, exc, shown):
    with pytest.raises(exc, match=msg("conv_mode", shown)):
        numbaconv.Conv3d(2, 2, 3, conv_mode=mode)


@pytest.mark.parametrize("mode", ["CROSS_CORRELATION", "Convolution"])
def test_module_conv_mode_case_insensitive(mode):
    m = numbaconv.Conv3d(2, 3, 2, conv_mode=mode, rng=0)
    out = m.forward(X)
    assert_matches_reference(out, X, m.weight, m.bias, conv_mode=mode.lower())


@pytest.mark.parametrize("inp, exc, parts", [
    (np.zeros((1, 3, 4, 4, 4), np.float32), ValueError, ["channel mismatch", "inp has 3 channels"]),
    (np.zeros((2, 4, 4, 4), np.float32), ValueError, ["inp", "5-D", "4-D"]),
    (np.zeros((1, 2, 1, 4, 4), np.float32), ValueError, ["inp", "too small", "axis D"]),
    (np.zeros((1, 2, 4, 4, 1), np.float32), ValueError, ["inp", "too small", "axis W"]),
    (np.zeros((1, 2, 4, 4, 4), np.complex64), TypeError, ["inp", "complex64"]),
    (np.zeros((1, 2, 4, 4, 4), np.int64), None, None),  # valid: float32 weight
    (None, TypeError, ["inp", "None"]),
])
@pytest.mark.parametrize("call", ["forward", "__call__"])
def test_module_forward_bad_input(inp, exc, parts, call):
    m = numbaconv.Conv3d(2, 3, 2, rng=0)
    if exc is None:
        out = getattr(m, call)(inp)
        assert out.dtype == np.float32 and out.shape == (1, 3, 3, 3, 3)
        return
    with pytest.raises(exc, match=msg(*parts)):
        getattr(m, call)(inp)


def test_module_forward_grouped_channel_mismatch():
    m = numbaconv.Conv3d(4, 6, 2, groups=2, rng=0)
    x = np.zeros((1, 6, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=msg("channel mismatch", "inp has 6 channels", "expects 4")):
        m(x)


# ---------------------------------------------------------------------------
# Errors come before any compilation; nothing but ValueError/TypeError escapes
# ---------------------------------------------------------------------------

def test_errors_raised_before_compilation():
    numbaconv.clear_kernel_cache()
    bad_calls = [
        (ValueError, lambda: numbaconv.conv3d(X, W, stride=0)),
        (ValueError, lambda: numbaconv.conv3d(X, W, padding=-1)),
        (TypeError, lambda: numbaconv.conv3d(X, W, dilation=1.5)),
        (ValueError, lambda: numbaconv.conv3d(X, W, stride=(1, 1, 1, 1))),
        (ValueError, lambda: numbaconv.conv3d(X, W, groups=0)),
        (TypeError, lambda: numbaconv.conv3d(X.astype(np.complex64), W)),
        (TypeError, lambda: numbaconv.conv3d(X.astype(np.int32), W.astype(np.int64))),
        (ValueError, lambda: numbaconv.conv3d(np.zeros((1, 3, 4, 4, 4), np.float32), W)),
        (ValueError, lambda: numbaconv.conv3d(np.zeros((1, 2, 1, 4, 4), np.float32), W)),
        (ValueError, lambda: numbaconv.conv3d(X, W, np.zeros(4, np.float32))),
        (ValueError, lambda: numbaconv.conv3d(X, W, conv_mode="conv")),
        (TypeError, lambda: numbaconv.conv3d(None, W)),
        (ValueError, lambda: numbaconv.Conv3d(3, 4, 3, groups=2)),
        (ValueError, lambda: numbaconv.Conv3d(2, 3, 2, rng=0)(np.zeros((1, 5, 4, 4, 4), np.float32))),
    ]
    for exc, call in bad_calls:
        with pytest.raises(exc):
            call()
    info = numbaconv.kernel_cache_info()
    assert info["misses"] == 0
    assert info["entries"] == []


class _Weird:
    def __repr__(self):
        return "<weird>"


ODD_CALLS = {
    "inp ragged list": lambda: numbaconv.conv3d([[1.0, 2.0], [3.0]], W),
    "inp dict": lambda: numbaconv.conv3d({}, W),
    "inp set": lambda: numbaconv.conv3d({1.0, 2.0}, W),
    "inp str": lambda: numbaconv.conv3d("abc", W),
    "inp float scalar": lambda: numbaconv.conv3d(5.0, W),
    "inp object": lambda: numbaconv.conv3d(_Weird(), W),
    "inp matrix": lambda: numbaconv.conv3d(np.asmatrix(np.ones((2, 2))), W),
    "inp structured": lambda: numbaconv.conv3d(np.zeros(X.shape, [("a", "f4")]), W),
    "inp void": lambda: numbaconv.conv3d(np.zeros(X.shape, "V4"), W),
    "weight 0-d": lambda: numbaconv.conv3d(X, np.float32(1.0)),
    "weight nested list 2-D": lambda: numbaconv.conv3d(X, [[1.0]]),
    "weight ragged": lambda: numbaconv.conv3d(X, [[1.0], [1.0, 2.0]]),
    "bias ragged": lambda: numbaconv.conv3d(X, W, [[1.0], [1.0, 2.0]]),
    "bias str": lambda: numbaconv.conv3d(X, W, "abc"),
    "bias object": lambda: numbaconv.conv3d(X, W, _Weird()),
    "stride object": lambda: numbaconv.conv3d(X, W, stride=_Weird()),
    "stride dict": lambda: numbaconv.conv3d(X, W, stride={1: 1}),
    "stride 2-D array": lambda: numbaconv.conv3d(X, W, stride=np.ones((3, 3), int)),
    "stride complex": lambda: numbaconv.conv3d(X, W, stride=1 + 0j),
    "stride 2**70": lambda: numbaconv.conv3d(X, W, stride=2 ** 70),
    "stride (1, 2**64, 1)": lambda: numbaconv.conv3d(X, W, stride=(1, 2 ** 64, 1)),
    "padding 2**70": lambda: numbaconv.conv3d(X, W, padding=2 ** 70),
    "dilation 2**70": lambda: numbaconv.conv3d(X, W, dilation=2 ** 70),
    "groups 2**70": lambda: numbaconv.conv3d(X, W, groups=2 ** 70),
    "groups object": lambda: numbaconv.conv3d(X, W, groups=_Weird()),
    "conv_mode bytes": lambda: numbaconv.conv3d(X, W, conv_mode=b"convolution"),
    "conv_mode object": lambda: numbaconv.conv3d(X, W, conv_mode=_Weird()),
    "module kernel_size object": lambda: numbaconv.Conv3d(2, 2, _Weird()),
    "module in_channels 2**70 groups 3": lambda: numbaconv.Conv3d(2 ** 70, 3, 1, groups=3),
    "module forward str": lambda: numbaconv.Conv3d(2, 2, 1, rng=0)("abc"),
}


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix
@pytest.mark.parametrize("name", sorted(ODD_CALLS))
def test_odd_inputs_only_value_or_type_error(name):
    try:
        ODD_CALLS[name]()
    except (ValueError, TypeError):
        return
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{name}: {type(exc).__module__}.{type(exc).__name__} escaped: {exc}")
    pytest.fail(f"{name}: no error raised")
