"""Fuzzing every public entry point (issue 8): random valid configurations against
independent oracles, and random bad arguments, which must raise ValueError or
TypeError (never another exception, never a crash).

Oracles: the float64 reference (forward, via ``assert_matches_reference``), and for
gradients and transposed convolutions the exact linearity identities, evaluated in
float64 with the reference:

    <grad_x, V> = <conv(V, w), G>,   <grad_w, U> = <conv(x, U), G>,
    <conv_transpose(y, w), V> = <y, conv(V, w)>.

Examples per test: ``NUMBACONV_FUZZ_EXAMPLES`` (default 300), e.g.
``NUMBACONV_FUZZ_EXAMPLES=10000 pytest tests/test_fuzz.py``. Generation is
derandomized (the same examples on every run) and uses no example database.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings, strategies as st

import numbaconv as nc
from numbaconv import _dispatch
from numbaconv.reference import conv3d_reference, explicit_padding, triple
from helpers import (assert_matches_reference, describe, python_env, reference_args, run_script,
                     transform_error)

#: Examples per fuzz test (6 tests: 1,800 by default).
FUZZ_EXAMPLES = int(os.environ.get("NUMBACONV_FUZZ_EXAMPLES", "300"))
#: No shrinking: an example is a seed, and a smaller seed is not a simpler example.
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

#: Algorithms that take every layer; Winograd's are added where they apply.
WINOGRAD = [a for a in _dispatch.ALGORITHMS
            if a in _dispatch.REGISTRY and _dispatch.REGISTRY[a].bitwise == "winograd"]
ALGORITHMS = [a for a in _dispatch.ALGORITHMS if a not in WINOGRAD]


def algorithms_for(kernel, stride, dilation):
    """The algorithms a call may force for a layer (Winograd: 3x3x3, stride 1, dilation 1)."""
    fits = tuple(kernel) == (3, 3, 3) and tuple(stride) == (1, 1, 1) and tuple(dilation) == (1, 1, 1)
    return ALGORITHMS + WINOGRAD if fits else ALGORITHMS
MODES = ["zeros", "reflect", "replicate", "circular"]
CONV_MODES = ["cross_correlation", "convolution", "CONVOLUTION", "Cross_Correlation"]


class Picker:
    """Every choice of one example, from one seed that hypothesis draws. (Drawn piece by
    piece, hypothesis spread its 100 examples unevenly: one algorithm and most
    function x corruption pairs never came up, because it varies some draws while
    keeping others. One seed per example makes every example different and the choices
    uniform; a failure reports its seed, which reproduces it.)"""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def pick(self, values):
        return values[int(self.rng.integers(len(values)))]

    def int(self, low, high):
        """An int in [low, high]."""
        return int(self.rng.integers(low, high + 1))

    def coin(self):
        return bool(self.rng.integers(2))


SEEDS = st.integers(0, 2**64 - 1)


# ---- Valid configurations ------------------------------------------------------------
def geometry(r, padding_strings=True, padding_modes=True, huge_strides=False):
    """(groups, cin, cout, kernel, stride, padding, dilation, padding_mode, size):
    small, valid for conv3d, padding possibly "same"/"valid" and a padding mode; with
    ``huge_strides``, one example in 8 has a stride up to 2**31 - 1 on one axis."""
    groups = r.int(1, 3)
    cin = groups * r.int(1, 3)
    cout = groups * r.int(1, 3)
    kernel = tuple(r.int(1, 3) for _ in range(3))
    dilation = tuple(r.int(1, 2) for _ in range(3))
    mode = r.pick(MODES) if padding_modes else "zeros"
    kind = r.pick(["int", "triple", "same", "valid"] if padding_strings else ["int", "triple"])
    if kind == "int":
        padding = r.int(0, 2)
    elif kind == "triple":
        padding = tuple(r.int(0, 3) for _ in range(3))
    else:
        padding = kind
    stride = (1, 1, 1) if padding == "same" else tuple(r.int(1, 3) for _ in range(3))
    if huge_strides and padding != "same" and r.int(0, 7) == 0:
        axis = r.int(0, 2)
        stride = stride[:axis] + (r.pick([2**31 - 1, 10**6, 1000]),) + stride[axis + 1:]
    widths = explicit_padding(padding, kernel, dilation)
    size = []
    for k, d, (lo, hi) in zip(kernel, dilation, widths):
        smallest = max(1, d * (k - 1) + 1 - lo - hi)
        if mode == "reflect":
            smallest = max(smallest, max(lo, hi) + 1)
        elif mode == "circular":
            smallest = max(smallest, max(lo, hi))
        size.append(smallest + r.int(0, 4))
    if r.int(0, 3) == 0:  # a wide last axis: full register tiles and several of them
        size[2] += r.int(5, 40)
    return groups, cin, cout, kernel, stride, padding, dilation, mode, tuple(size)


def as_given(r, value):
    """A triple in one of the accepted spellings: tuple, list, numpy array, numpy ints,
    or a plain int when all three agree."""
    if isinstance(value, str):
        return value
    value = triple(value)
    spelling = r.pick(["tuple", "list", "array", "np_ints", "int"])
    if spelling == "int" and len(set(value)) == 1:
        return value[0] if r.coin() else np.int64(value[0])
    if spelling == "list":
        return list(value)
    if spelling == "array":
        return np.array(value)
    if spelling == "np_ints":
        return tuple(np.int32(v) for v in value)
    return value


def layout_variant(r, array, big_endian=True):
    """``array`` in another memory layout (same values). Big-endian only where
    ``big_endian``: a big-endian operand whose partner is not a float fails today
    (test_non_native_byte_order_operands); the fuzz keeps guarding the rest."""
    kind = r.pick(["c", "c", "fortran", "strided", "reversed", "read_only", "big_endian"])
    if kind == "fortran":
        return np.asfortranarray(array)
    if kind == "strided":
        doubled = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), array.dtype)
        doubled[..., ::2] = array
        return doubled[..., ::2]
    if kind == "reversed":
        return np.ascontiguousarray(array[..., ::-1])[..., ::-1]
    if kind == "read_only":
        array = array.copy()
        array.flags.writeable = False
        return array
    if kind == "big_endian" and big_endian and array.dtype.kind == "f":
        return array.astype(array.dtype.newbyteorder(">"))
    return array


#: (inp dtype, weight dtype): the result dtype follows numpy's promotion of floats;
#: an integer or bool operand takes the other's float dtype.
DTYPE_PAIRS = [(np.float32, np.float32), (np.float64, np.float64), (np.float16, np.float16),
               (np.float16, np.float32), (np.float32, np.float64), (np.int32, np.float32),
               (np.float64, np.int16), (np.bool_, np.float32)]


def make_operand(rng, shape, dtype):
    if np.dtype(dtype).kind == "b":
        return rng.random(shape) < 0.5
    if np.dtype(dtype).kind in "iu":
        return rng.integers(-3, 4, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def conv_case(r):
    groups, cin, cout, kernel, stride, padding, dilation, mode, size = geometry(r, huge_strides=True)
    batch = r.pick([0, 1, 1, 2, 2])
    x_dtype, w_dtype = r.pick(DTYPE_PAIRS)
    rng = r.rng
    x = make_operand(rng, (batch, cin) + size, x_dtype)
    w6 = make_operand(rng, (groups, cout // groups, cin // groups) + kernel, w_dtype)
    layout = r.pick(["6d", "5d"]) if groups > 1 else "5d"
    w = w6 if layout == "6d" else w6.reshape((cout, cin // groups) + kernel)
    bias_kind = r.pick([None, "flat", "5d"])
    result = np.result_type(x.dtype, w.dtype) if x.dtype.kind == w.dtype.kind == "f" else (
        x.dtype if x.dtype.kind == "f" else w.dtype)
    b = None if bias_kind is None else rng.standard_normal(cout).astype(result)
    if bias_kind == "5d":
        b = b.reshape(1, cout, 1, 1, 1)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  conv_mode=r.pick(CONV_MODES), padding_mode=mode,
                  algorithm=r.pick(algorithms_for(kernel, stride, dilation)))
    given_kwargs = dict(kwargs, stride=as_given(r, stride), padding=as_given(r, padding),
                        dilation=as_given(r, dilation))
    given_x = layout_variant(r, x, big_endian=w.dtype.kind == "f")
    given_w = layout_variant(r, w, big_endian=x.dtype.kind == "f")
    return x, w, b, kwargs, given_x, given_w, given_kwargs, np.dtype(result)


def reference_conv(x, w, kwargs):
    """The float64 reference of a call (any padding and padding mode), without bias."""
    return conv3d_reference(x, w, None, **reference_args(kwargs))


# ---- Valid calls against the oracles -------------------------------------------------
@FUZZ
@given(seed=SEEDS)
def test_fuzz_conv3d_matches_reference(seed):
    x, w, b, kwargs, given_x, given_w, given_kwargs, result = conv_case(Picker(seed))
    out = nc.conv3d(given_x, given_w, b, **given_kwargs)
    assert out.dtype == result
    assert_matches_reference(out, x, w, b, algorithm=kwargs["algorithm"], **reference_args(kwargs))


def reduction_length(w, groups):
    """Terms per output element: Cin/G * kD * kH * kW."""
    return int(np.prod(w.shape[-4:])) if w.ndim == 6 else int(np.prod(w.shape[1:]))


def identity_tolerance(dtype, terms, scale, value_scale=0.0):
    """|<computed, V> - exact| bound: each element of the computed gradient has at most
    ``terms`` rounded terms ((terms + 2) * eps of sum|terms|; ``scale`` is that sum
    weighted by |V|), plus float16's final rounding (``value_scale``: sum|grad*V|)."""
    dtype = np.dtype(dtype)
    eps = np.finfo(np.float32 if dtype == np.float16 else dtype).eps
    tolerance = (terms + 2) * eps * scale + 1e-12 * scale + 1e-300
    if dtype == np.float16:
        tolerance += 2.0 ** -11 * value_scale + 2.0 ** -20 * scale
    return tolerance


@FUZZ
@given(seed=SEEDS)
def test_fuzz_conv3d_backward_identities(seed):
    """conv3d is linear in x and w: <grad_x, V> = <conv(V, w), G> and
    <grad_w, U> = <conv(x, U), G> exactly, evaluated in float64 by the reference."""
    r = Picker(seed)
    x, w, b, kwargs, given_x, given_w, given_kwargs, result = conv_case(r)
    rng = r.rng
    out_shape = reference_conv(x, w, kwargs).shape
    grad = rng.standard_normal(out_shape).astype(result)
    need_x, need_w = r.pick([(True, True), (True, False), (False, True)])
    gi, gw, gb = nc.conv3d_backward(grad, given_x, given_w, need_input_grad=need_x,
                                    need_weight_grad=need_w, **given_kwargs)
    g64 = grad.astype(np.float64)
    loose = 1e-2 if result == np.float16 else 1e-5
    np.testing.assert_allclose(gb.reshape(-1).astype(np.float64), g64.sum(axis=(0, 2, 3, 4)),
                               rtol=loose, atol=loose)
    assert gb.shape == (1, out_shape[1], 1, 1, 1) and gb.dtype == result
    if need_x:
        assert gi.shape == x.shape and gi.dtype == result
        v = rng.standard_normal(x.shape)
        exact = np.sum(reference_conv(v, w, kwargs) * g64)
        scale = np.sum(reference_conv(np.abs(v), np.abs(w.astype(np.float64)), kwargs) * np.abs(g64))
        terms = out_shape[1] // kwargs["groups"] * int(np.prod(w.shape[-3:]))
        if kwargs["padding_mode"] != "zeros":  # gradients folded back through the padding
            terms *= 27
        computed = np.sum(gi.astype(np.float64) * v)
        tolerance = identity_tolerance(result, terms, scale, np.sum(np.abs(gi.astype(np.float64) * v)))
        if kwargs["algorithm"] == "fft":  # its error at every element, folded like the terms
            tolerance += transform_error(g64, w) * terms * np.sum(np.abs(v))
        assert abs(computed - exact) <= tolerance, (computed, exact)
    else:
        assert gi is None
    if need_w:
        assert gw.shape == w.shape and gw.dtype == result
        u = rng.standard_normal(w.shape)
        exact = np.sum(reference_conv(x, u, kwargs) * g64)
        scale = np.sum(reference_conv(np.abs(x.astype(np.float64)), np.abs(u), kwargs) * np.abs(g64))
        terms = int(np.prod(out_shape)) // out_shape[1]  # N * Do * Ho * Wo
        computed = np.sum(gw.astype(np.float64) * u)
        assert abs(computed - exact) <= identity_tolerance(
            result, terms, scale, np.sum(np.abs(gw.astype(np.float64) * u))), (computed, exact)
    else:
        assert gw is None


def transpose_case(r):
    """A transposed convolution: (y, w, b, kwargs, conv_w, out_shape, given...) where
    ``conv_w`` is the weight of the forward convolution whose adjoint it is."""
    groups, cin_c, cout_c, kernel, stride, padding, dilation, _, size = geometry(
        r, padding_strings=False, padding_modes=False)
    # The forward convolution maps (N, cin_c, size) -> (N, cout_c, out); the transposed
    # one maps (N, cout_c, out) -> (N, cin_c, size + output_padding slack).
    output_padding = tuple(r.int(0, s - 1) for s in stride)
    batch = r.int(0, 2)
    p = triple(padding)
    out = tuple((i + 2 * q - d * (k - 1) - 1) // s + 1
                for i, q, d, k, s in zip(size, p, dilation, kernel, stride))
    t_size = tuple((o - 1) * s - 2 * q + d * (k - 1) + op + 1
                   for o, s, q, d, k, op in zip(out, stride, p, dilation, kernel, output_padding))
    if min(t_size) < 1:
        return None  # an error, which the bad-argument test covers
    dtype = r.pick([np.float64, np.float64, np.float32, np.float16])
    rng = r.rng
    y = rng.standard_normal((batch, cout_c) + out).astype(dtype)
    # Transposed weight (Cin_t, Cout_t/G, k) with Cin_t = cout_c, Cout_t = cin_c; 6-D
    # (G, Cin_t/G, Cout_t/G, k) when grouped and asked for.
    conv_w = rng.standard_normal((cout_c, cin_c // groups) + kernel).astype(dtype)
    w = conv_w
    if groups > 1 and r.coin():
        w = conv_w.reshape((groups, cout_c // groups, cin_c // groups) + kernel)
    b = rng.standard_normal(cin_c).astype(dtype) if r.coin() else None
    kwargs = dict(stride=stride, padding=padding, output_padding=output_padding,
                  dilation=dilation, groups=groups,
                  # it runs as stride-1 convolutions of the full kernel at stride 1 only
                  algorithm=r.pick(algorithms_for(kernel, stride, dilation)))
    given_kwargs = dict(kwargs, stride=as_given(r, stride), padding=as_given(r, padding),
                        output_padding=as_given(r, output_padding),
                        dilation=as_given(r, dilation))
    return y, w, b, kwargs, conv_w, (batch, cin_c) + t_size, layout_variant(r, y), given_kwargs


def forward_kwargs(kwargs):
    return {k: kwargs[k] for k in ("stride", "padding", "dilation", "groups")}


@FUZZ
@given(seed=SEEDS)
def test_fuzz_conv_transpose3d_and_backward(seed):
    """conv_transpose3d is the adjoint of conv3d: <convT(y, w), V> = <y, conv(V, w)>;
    its input gradient is conv3d(grad, w) (checked against the reference directly) and
    <grad_w, U> = <y, conv(G, U)>."""
    r = Picker(seed)
    case = transpose_case(r)
    assume(case is not None)
    y, w, b, kwargs, conv_w, t_shape, given_y, given_kwargs = case
    rng = r.rng
    dtype = y.dtype
    fwd = forward_kwargs(kwargs)
    out = nc.conv_transpose3d(given_y, w, b, **given_kwargs)
    assert out.shape == t_shape and out.dtype == dtype
    v = rng.standard_normal(t_shape)
    y64 = y.astype(np.float64)
    conv_v = conv3d_reference(v, conv_w, None, **fwd)
    assert conv_v.shape == y.shape
    exact = np.sum(y64 * conv_v)
    out64 = out.astype(np.float64)
    if b is not None:
        exact += np.sum(b.astype(np.float64).reshape(1, -1, 1, 1, 1) * v)
    scale = np.sum(np.abs(y64) * conv3d_reference(np.abs(v), np.abs(conv_w.astype(np.float64)), None, **fwd))
    if b is not None:
        scale += np.sum(np.abs(b.astype(np.float64)).reshape(1, -1, 1, 1, 1) * np.abs(v))
    terms = conv_w.shape[0] // kwargs["groups"] * int(np.prod(conv_w.shape[2:])) + 1
    tolerance = identity_tolerance(dtype, terms, scale, np.sum(np.abs(out64 * v)))
    if kwargs["algorithm"] == "fft":  # its error at every element, even where terms are zero
        tolerance += transform_error(y64, conv_w) * np.sum(np.abs(v))
    assert abs(np.sum(out64 * v) - exact) <= tolerance

    grad = rng.standard_normal(t_shape).astype(dtype)
    gi, gw, gb = nc.conv_transpose3d_backward(grad, given_y, w, **given_kwargs)
    assert gi.shape == y.shape and gw.shape == w.shape and gb.shape == (1, t_shape[1], 1, 1, 1)
    assert gi.dtype == gw.dtype == gb.dtype == dtype
    assert_matches_reference(gi, grad, conv_w, None, algorithm=kwargs["algorithm"], **fwd)
    u = rng.standard_normal(w.shape)
    u_conv = u.reshape(conv_w.shape)
    g64 = grad.astype(np.float64)
    exact = np.sum(y64 * conv3d_reference(g64, u_conv, None, **fwd))
    scale = np.sum(np.abs(y64) * conv3d_reference(np.abs(g64), np.abs(u_conv), None, **fwd))
    terms = int(np.prod(y.shape)) // y.shape[1]
    assert abs(np.sum(gw.astype(np.float64) * u) - exact) <= identity_tolerance(
        dtype, terms, scale, np.sum(np.abs(gw.astype(np.float64) * u)))
    np.testing.assert_allclose(gb.reshape(-1).astype(np.float64), g64.sum(axis=(0, 2, 3, 4)),
                               rtol=1e-2 if dtype == np.float16 else 1e-5,
                               atol=1e-2 if dtype == np.float16 else 1e-5)


@FUZZ
@given(seed=SEEDS)
def test_fuzz_modules(seed):
    """Conv3d and ConvTranspose3d built from random valid hyper-parameters (in any
    accepted spelling): forward equals the reference (Conv3d) or the functional
    (ConvTranspose3d, itself checked above), backward equals the functional gradients
    bitwise, gradients accumulate, and eval mode keeps no input."""
    r = Picker(seed)
    rng = r.rng
    seed = seed % 2**32
    if r.coin():
        groups, cin, cout, kernel, stride, padding, dilation, mode, size = geometry(r)
        conv_mode = r.pick(CONV_MODES)
        m = nc.Conv3d(cin, cout, as_given(r, kernel), as_given(r, stride), as_given(r, padding),
                      as_given(r, dilation), groups, r.coin(), conv_mode, padding_mode=mode, rng=seed)
        x = rng.standard_normal((r.int(0, 2), cin) + size).astype(np.float32)
        out = m(x)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                      conv_mode=conv_mode, padding_mode=mode)
        assert_matches_reference(out, x, m.weight, m.bias, **reference_args(kwargs))
        grad = rng.standard_normal(out.shape).astype(np.float32)
        expected = nc.conv3d_backward(grad, x, m.weight, stride, padding, dilation, groups,
                                      conv_mode, padding_mode=mode)
    else:
        groups, cin, cout, kernel, stride, padding, dilation, _, size = geometry(
            r, padding_strings=False, padding_modes=False)
        output_padding = tuple(r.int(0, s - 1) for s in stride)
        m = nc.ConvTranspose3d(cin, cout, as_given(r, kernel), as_given(r, stride),
                               as_given(r, padding), as_given(r, output_padding),
                               as_given(r, dilation), groups, r.coin(), rng=seed)
        # An input whose transposed output has a positive size.
        p = triple(padding)
        size = tuple(max(s, 2 * q + 1) for s, q in zip(size, p))
        x = rng.standard_normal((r.int(0, 2), cin) + size).astype(np.float32)
        out = m(x)
        expected_out = nc.conv_transpose3d(x, m.weight, m.bias, stride, padding, output_padding,
                                           dilation, groups)
        assert out.tobytes() == expected_out.tobytes()
        grad = rng.standard_normal(out.shape).astype(np.float32)
        expected = nc.conv_transpose3d_backward(grad, x, m.weight, stride, padding, output_padding,
                                                dilation, groups)
    gi = m.backward(grad)
    assert gi.tobytes() == expected[0].tobytes()
    assert m.grads["weight"].tobytes() == expected[1].tobytes()
    if m.bias is not None:
        assert m.grads["bias"].tobytes() == expected[2].tobytes()
    m.backward(grad)  # accumulates: g + g == 2 * g exactly
    assert m.grads["weight"].tobytes() == (2 * expected[1]).tobytes()
    m.zero_grad()
    assert not m.grads["weight"].any()
    m.eval()
    m(x)
    with pytest.raises(RuntimeError):
        m.backward(grad)


# ---- Bad arguments -------------------------------------------------------------------
#: Values that are never a valid stride or dilation (ints >= 1, or 3 of them).
BAD_STRIDES = [0, -1, 1.5, 2.0, "1", "", True, False, None, (1, 1), (1, 1, 1, 1), (1, 0, 1),
               (1, -2, 1), (1, 1.0, 1), (1, None, 1), [1, "1", 1], 2**31, 2**63, -2**70, 10**30,
               np.float32(1), np.array([[1, 1, 1]]), np.array([1.0, 1.0, 1.0]), np.bool_(True),
               float("nan"), float("inf"), 1 + 0j, {"d": 1}, object(), b"1"]
#: Values that are never a valid padding (ints >= 0, 3 of them, "same", "valid").
BAD_PADDINGS = [-1, 1.5, "full", "SAME", "Same", "", True, None, (0, 0), (0, 0, 0, 0),
                (0, -1, 0), (0, 0.5, 0), 2**31, 2**64, np.float64(1), float("nan"), object(), b"same"]
BAD_GROUPS = [0, -1, 1.5, True, "2", None, 2**31, 2**64, (1,), np.float64(1), np.array([1, 1])]
BAD_CONV_MODES = ["conv", "", "cross-correlation", "correlation", None, 1, b"convolution", True,
                  ("convolution",)]
BAD_PADDING_MODES = ["zero", "REFLECT", "Reflect", "", "same", "constant", None, 0, b"zeros"]
BAD_ALGORITHMS = ["fftw", "", "AUTO", "blocked8x16", "Winograd", None, 3, ("auto",)]
BAD_FLAGS = ["yes", "", 1, 0, None, 1.0, np.array([True]), [True]]
BAD_DTYPES = [np.complex64, np.complex128, object, "U3", "S2", np.longdouble, "datetime64[s]",
              "timedelta64[s]", [("a", np.float32)]]
BAD_ARRAYS = [None, "abc", 3.5, {"a": 1}, [[1.0, 2.0], [3.0]], object()]


def with_dtype(array, dtype):
    dtype = np.dtype(dtype)
    if dtype.fields is not None:
        return np.zeros(array.shape, dtype)
    if dtype.kind in "US":
        return array.astype(int).astype(dtype)
    if dtype.kind in "mM":
        return array.astype(np.int64).astype(dtype)
    return array.astype(dtype)


def base_call(r, function):
    """A valid call of ``function``: (kwargs with arrays and hyper-parameters, facts
    about it), or None when the draw gives no valid transposed call."""
    groups, cin, cout, kernel, stride, padding, dilation, mode, size = geometry(
        r, padding_strings=False, padding_modes=False)
    rng = r.rng
    batch = r.int(1, 2)
    x = rng.standard_normal((batch, cin) + size).astype(np.float32)
    w = rng.standard_normal((cout, cin // groups) + kernel).astype(np.float32)
    out_shape = conv3d_reference(np.zeros((batch, cin) + size), w, None, stride=stride,
                                 padding=padding, dilation=dilation, groups=groups).shape
    common = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if function in ("conv3d", "conv3d_backward"):
        call = dict(inp=x, weight=w, conv_mode="cross_correlation", padding_mode="zeros",
                    algorithm="auto", **common)
        if function == "conv3d":
            call["bias"] = rng.standard_normal(cout).astype(np.float32)
        else:
            call["grad_output"] = rng.standard_normal(out_shape).astype(np.float32)
            call["need_input_grad"] = call["need_weight_grad"] = True
        return call, dict(cin=cin, cout=cout, size=size, out_shape=out_shape)
    # Transposed: input y (N, cout, out), weight w as (Cin_t = cout, Cout_t/G = cin/G, k).
    y = rng.standard_normal(out_shape).astype(np.float32)
    call = dict(inp=y, weight=w, output_padding=(0, 0, 0), algorithm="auto", **common)
    t_shape = (batch, cin) + tuple((o - 1) * s - 2 * p + d * (k - 1) + 1 for o, s, p, d, k in zip(
        out_shape[2:], triple(stride), triple(padding), triple(dilation), kernel))
    if min(t_shape[2:]) < 1:
        return None
    if function == "conv_transpose3d":
        call["bias"] = rng.standard_normal(cin).astype(np.float32)
    else:
        call["grad_output"] = rng.standard_normal(t_shape).astype(np.float32)
        call["need_input_grad"] = call["need_weight_grad"] = True
    return call, dict(cin=cout, cout=cin, size=out_shape[2:], out_shape=t_shape)


FUNCTIONS = {"conv3d": nc.conv3d, "conv3d_backward": nc.conv3d_backward,
             "conv_transpose3d": nc.conv_transpose3d,
             "conv_transpose3d_backward": nc.conv_transpose3d_backward}


def corruptions(function):
    names = ["inp_ndim", "inp_dtype", "inp_not_array", "inp_empty_axis", "weight_ndim",
             "weight_dtype", "weight_not_array", "weight_empty_axis", "integer_operands",
             "channels", "stride", "padding", "dilation", "groups", "algorithm", "too_small",
             "grouped_weight_mismatch"]
    if function in ("conv3d", "conv3d_backward"):
        names += ["conv_mode", "padding_mode", "mode_padding_too_large", "same_with_stride"]
    else:
        names += ["output_padding", "padding_string"]
    if "bias" in base_names(function):
        names += ["bias_shape", "bias_dtype"]
    if function.endswith("backward"):
        names += ["grad_shape", "grad_dtype", "grad_not_array", "flag"]
    return names


def base_names(function):
    return {"conv3d": ("bias",), "conv_transpose3d": ("bias",)}.get(function, ())


def corrupt(r, function, call, info, name):
    """Apply corruption ``name`` to ``call`` (in place)."""
    x, w = call["inp"], call["weight"]
    pick = r.pick
    if name == "inp_ndim":
        call["inp"] = pick([x[0], x[None], x.reshape(-1), np.float32(1.0), x[..., None]])
    elif name == "inp_dtype":
        call["inp"] = with_dtype(x, pick(BAD_DTYPES))
    elif name == "inp_not_array":
        call["inp"] = pick(BAD_ARRAYS)
    elif name == "inp_empty_axis":
        call["inp"] = np.take(x, [], axis=r.int(1, 4))
    elif name == "weight_ndim":
        call["weight"] = pick([w[0], w[None, None], w.reshape(-1), w[..., None, None]])
    elif name == "weight_dtype":
        call["weight"] = with_dtype(w, pick(BAD_DTYPES))
    elif name == "weight_not_array":
        call["weight"] = pick(BAD_ARRAYS)
    elif name == "weight_empty_axis":
        call["weight"] = np.take(w, [], axis=r.int(0, 4))
    elif name == "integer_operands":
        call["inp"] = x.astype(pick([np.int32, np.int8, np.bool_, np.uint16]))
        call["weight"] = w.astype(pick([np.int64, np.bool_, np.int16]))
    elif name == "channels":  # one channel more than the weight expects
        call["inp"] = np.concatenate([x, x[:, :1]], axis=1)
    elif name in ("stride", "dilation"):
        call[name] = pick(BAD_STRIDES)
    elif name == "padding":
        call["padding"] = pick(BAD_PADDINGS)
    elif name == "groups":
        value = pick(BAD_GROUPS + ["other"])
        if isinstance(value, str) and value == "other":  # an int that fits neither weight nor input
            value = x.shape[1] + 1 if function.startswith("conv_transpose") else call["groups"] + 1
        call["groups"] = value
    elif name == "algorithm":
        call["algorithm"] = pick(BAD_ALGORITHMS)
    elif name == "conv_mode":
        call["conv_mode"] = pick(BAD_CONV_MODES)
    elif name == "padding_mode":
        call["padding_mode"] = pick(BAD_PADDING_MODES)
    elif name == "mode_padding_too_large":
        mode = pick(["reflect", "circular"])
        size = max(info["size"])
        call.update(padding_mode=mode, padding=size if mode == "reflect" else size + 1)
    elif name == "same_with_stride":
        call.update(padding="same", stride=pick([2, (1, 1, 2), (3, 1, 1)]))
    elif name == "too_small":
        if function.startswith("conv_transpose"):  # the output would be empty
            o, s, d, k = info["size"][0], triple(call["stride"])[0], triple(call["dilation"])[0], w.shape[2]
            call["padding"] = ((o - 1) * s + d * (k - 1)) // 2 + 1
        else:  # the dilated kernel is longer than the padded input in depth
            call["padding"] = 0
            call["dilation"] = 1
            call["weight"] = np.ones(w.shape[:2] + (x.shape[2] + 1,) + w.shape[3:], np.float32)
    elif name == "grouped_weight_mismatch":  # a 6-D weight whose G is not `groups`
        g = call["groups"]
        call["weight"] = w.reshape((1,) + w.shape) if g != 1 else np.concatenate([w[None], w[None]])
    elif name == "output_padding":
        # PyTorch's rule: each entry below the stride or the dilation
        s = tuple(max(a, b) for a, b in zip(triple(call["stride"]), triple(call["dilation"])))
        call["output_padding"] = pick([s, tuple(v + 1 for v in s), -1, 1.5, "1", (0, 0), None,
                                       (0, 0, s[2])])
    elif name == "padding_string":
        call["padding"] = pick(["same", "valid"])
    elif name == "bias_shape":
        c = info["cout"]
        call["bias"] = np.ones(pick([(c + 1,), (c, 1), (1, c, 1, 1), (1, c, 1, 1, 2), (), (c, c)]),
                               np.float32)
    elif name == "bias_dtype":
        call["bias"] = pick([with_dtype(call["bias"], pick(BAD_DTYPES)), "bias", {"b": 1}])
    elif name == "grad_shape":
        g = call["grad_output"]
        call["grad_output"] = pick([np.concatenate([g, g[..., :1]], axis=-1), g[0], g[None],
                                    np.concatenate([g, g[:, :1]], axis=1), g[:, :, :0]])
    elif name == "grad_dtype":
        call["grad_output"] = with_dtype(call["grad_output"], pick(BAD_DTYPES))
    elif name == "grad_not_array":
        call["grad_output"] = pick(BAD_ARRAYS)
    elif name == "flag":
        call[pick(["need_input_grad", "need_weight_grad"])] = pick(BAD_FLAGS)
    else:
        raise AssertionError(name)


def bad_call(r):
    function = r.pick(sorted(FUNCTIONS))
    made = base_call(r, function)
    if made is None:
        return None
    call, info = made
    name = r.pick(corruptions(function))
    corrupt(r, function, call, info, name)
    return function, call, name


@FUZZ
@given(seed=SEEDS)
def test_fuzz_bad_arguments_raise_value_or_type_error(seed):
    """Every public function, one bad argument at a time: ValueError or TypeError, with
    a message, and nothing else (no other exception, no crash)."""
    case = bad_call(Picker(seed))
    assume(case is not None)
    function, call, name = case
    with pytest.raises((ValueError, TypeError)) as info:
        FUNCTIONS[function](**call)
    assert str(info.value), f"{function} / {name}: an empty message"


BAD_CHANNELS = [0, -1, 1.5, "3", True, None, 2**31, np.float32(2)]
BAD_BIAS_FLAGS = ["yes", 1, 0, None, 1.0, "False"]


def bad_module(r):
    """A module constructor call with one bad argument, or a valid module and a bad
    forward/backward argument: (what, thunk)."""
    transposed = r.coin()
    groups = r.int(1, 3)
    cin, cout = groups * r.int(1, 3), groups * r.int(1, 3)
    kwargs = dict(in_channels=cin, out_channels=cout, kernel_size=r.int(1, 3),
                  stride=r.int(1, 2), padding=r.int(0, 1), dilation=1,
                  groups=groups, bias=r.coin())
    cls = nc.ConvTranspose3d if transposed else nc.Conv3d
    target = r.pick(["in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "dilation", "groups", "bias", "divisible", "mode", "forward", "backward"])
    pick = r.pick
    if target in ("in_channels", "out_channels"):
        kwargs[target] = pick(BAD_CHANNELS)
    elif target in ("kernel_size", "stride", "dilation"):
        kwargs[target] = pick(BAD_STRIDES)
    elif target == "padding":
        kwargs["padding"] = pick(BAD_PADDINGS + (["same"] if transposed else []))
        same = isinstance(kwargs["padding"], str) and kwargs["padding"] == "same"
        if same or (not transposed and pick([False, True])):
            kwargs.update(padding="same", stride=2)
    elif target == "groups":
        kwargs["groups"] = pick(BAD_GROUPS + [cin + 1])
    elif target == "bias":
        kwargs["bias"] = pick(BAD_BIAS_FLAGS)
    elif target == "divisible":  # channels that groups does not divide
        kwargs["groups"] = 2
        kwargs[pick(["in_channels", "out_channels"])] = 3
    elif target == "mode":
        if transposed:
            kwargs["output_padding"] = pick([2, 5, -1, 1.5, (0, 0)])
            kwargs["stride"] = 2
        elif pick([True, False]):
            kwargs["conv_mode"] = pick(BAD_CONV_MODES)
        else:
            kwargs["padding_mode"] = pick(BAD_PADDING_MODES)
    if target not in ("forward", "backward"):
        return f"{cls.__name__}({target})", lambda: cls(**kwargs)
    m = cls(**kwargs, rng=0)
    x = np.random.default_rng(0).standard_normal((1, cin, 4, 5, 6)).astype(np.float32)
    if target == "forward":
        bad = pick([x[0], x[:, :0], np.concatenate([x, x[:, :1]], axis=1), x.astype(np.complex64),
                    "x", None, x[:, :, :0]])
        return f"{cls.__name__}.forward", lambda: m(bad)
    out = m(x)
    shorter = out[..., :-1] if out.shape[-1] > 1 else out[..., :0]
    bad = pick([out[0], shorter, np.concatenate([out, out], axis=1), out.astype(np.complex128),
                "g", None])
    return f"{cls.__name__}.backward", lambda: m.backward(bad)


@FUZZ
@given(seed=SEEDS)
def test_fuzz_bad_module_arguments(seed):
    """Conv3d / ConvTranspose3d: bad constructor arguments, bad inputs to forward and
    bad gradients to backward raise ValueError or TypeError."""
    what, thunk = bad_module(Picker(seed))
    with pytest.raises((ValueError, TypeError)) as info:
        thunk()
    assert str(info.value), what


# ---- Extreme but valid hyper-parameters (found by fuzzing) ---------------------------
_EXTREME_SCRIPT = r'''
import json, sys
import numpy as np
import numbaconv as nc

B = 2**31 - 1
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 2, 3, 3, 3))
w = rng.standard_normal((2, 2, 2, 2, 2))
case = sys.argv[1]
if case == "transposed":
    args = dict(stride=(1, B, B), padding=(0, B - 1, B - 1))
    y = nc.conv_transpose3d(x, w, **args)
    grads = nc.conv_transpose3d_backward(np.ones(y.shape), x, w, **args)
else:
    p, s = {"max": (B - 1, B), "large": (20000, 40000)}[case]
    args = dict(padding=(0, p, p), stride=(1, s, s))
    y = nc.conv3d(x, w, **args)          # the forward works (auto: the GEMM path)
    grads = nc.conv3d_backward(np.ones(y.shape), x, w, **args)
print(json.dumps({"forward": list(y.shape), "grads": [list(g.shape) for g in grads]}))
'''


@pytest.mark.parametrize("case", ["large", "max", "transposed"])
def test_gradients_of_huge_padding_and_stride(case, tmp_path):
    """conv3d with padding (0, p, p) and stride (1, s, s) far beyond the input (the
    package's own test_huge_padding_and_stride_stay_small does the forward): the
    gradients must work too (or fail with ValueError), never with a SystemError or by
    exhausting memory. Run in a subprocess limited to 6 GiB of address space."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    proc = run_script(tmp_path, _EXTREME_SCRIPT, case, timeout=300, preexec_fn=limit,
                      env=python_env(NUMBACONV_BACKGROUND_COMPILE="0"))
    assert proc.returncode == 0 or "\nValueError" in proc.stderr, describe(proc)


# ---- Non-native byte order (found by fuzzing) -----------------------------------------
@pytest.mark.parametrize("x_dtype, w_dtype", [(">f4", "int32"), ("int8", ">f8"), (">f2", "bool"),
                                              (">f4", ">f4"), (">f8", "<f4")])
@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_non_native_byte_order_operands(function, x_dtype, w_dtype):
    """Big-endian operands are accepted (README: "non-native byte order arrays"), and an
    integer or bool operand takes the other's float dtype: the result is the same, in
    a native dtype, as with native copies of the operands."""
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (2, 2, 4, 5, 6)).astype(x_dtype)
    w = rng.integers(-3, 4, (2, 2, 2, 3, 2)).astype(w_dtype)
    native_x, native_w = x.astype(x.dtype.newbyteorder("=")), w.astype(w.dtype.newbyteorder("="))
    fn = FUNCTIONS[function]
    if function.endswith("backward"):
        forward = nc.conv3d if function == "conv3d_backward" else nc.conv_transpose3d
        out = forward(native_x, native_w)
        grad = rng.standard_normal(out.shape).astype(out.dtype)
        expected, got = fn(grad, native_x, native_w), fn(grad, x, w)
    else:
        expected, got = (fn(native_x, native_w),), (fn(x, w),)
    for e, g in zip(expected, got):
        assert g.dtype == e.dtype and g.dtype.isnative, (g.dtype, e.dtype)
        assert g.tobytes() == e.tobytes()
