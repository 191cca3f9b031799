"""The ``numbaconv.Conv3d`` module: attributes, parameters, initialisation, repr,
state_dict, and forward against MegEngine 1.13 golden data (``tests/golden/data``)."""
import glob
import json
import math
import os
from collections import OrderedDict

import numpy as np
import pytest

import numbaconv
from numbaconv.reference import conv3d_reference
from helpers import GOLDEN_DATA


def _golden_conv3d_files():
    """conv3d_*.npz module files (not the f16 functional ones, not conv_transpose3d)."""
    files = []
    for path in sorted(glob.glob(os.path.join(GOLDEN_DATA, "conv3d_*.npz"))):
        name = os.path.basename(path)
        if name.startswith("conv3d_f16_"):
            continue
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
        if meta["kind"] == "conv3d":
            files.append(path)
    return files


GOLDEN_FILES = _golden_conv3d_files()
GOLDEN_IDS = [os.path.basename(p)[len("conv3d_"):-len(".npz")] for p in GOLDEN_FILES]


def _load(path):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"]))
    return arrays, meta


def assert_close(out, expected, rtol=1e-5, atol=1e-5):
    expected = np.asarray(expected)
    assert out.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=atol * scale)


def test_golden_files_found():
    assert len(GOLDEN_FILES) == 30


# ---------------------------------------------------------------------------
# The seed example
# ---------------------------------------------------------------------------

def test_seed_example():
    m = numbaconv.Conv3d(in_channels=3, out_channels=1, kernel_size=3)
    inp = np.arange(0, 384).astype("float32").reshape(2, 3, 4, 4, 4)
    out = m(inp)
    assert isinstance(out, np.ndarray)
    assert out.shape == (2, 1, 2, 2, 2)
    assert out.dtype == np.float32
    assert_close(out, conv3d_reference(inp, m.weight, m.bias))
    np.testing.assert_array_equal(m.forward(inp), out)


# ---------------------------------------------------------------------------
# Attributes and parameters
# ---------------------------------------------------------------------------

def _is_int_triple(value):
    return isinstance(value, tuple) and len(value) == 3 and all(type(v) is int for v in value)


@pytest.mark.parametrize("args, kwargs, expected", [
    ((3, 1, 3), {}, dict(in_channels=3, out_channels=1, kernel_size=(3, 3, 3), stride=(1, 1, 1),
                         padding=(0, 0, 0), dilation=(1, 1, 1), groups=1,
                         weight_shape=(1, 3, 3, 3, 3))),
    ((2, 4, (1, 2, 3)), dict(stride=(1, 2, 1), padding=[0, 1, 2], dilation=2),
     dict(in_channels=2, out_channels=4, kernel_size=(1, 2, 3), stride=(1, 2, 1),
          padding=(0, 1, 2), dilation=(2, 2, 2), groups=1, weight_shape=(4, 2, 1, 2, 3))),
    ((4, 6, 3), dict(groups=2, padding=1),
     dict(in_channels=4, out_channels=6, kernel_size=(3, 3, 3), stride=(1, 1, 1),
          padding=(1, 1, 1), dilation=(1, 1, 1), groups=2, weight_shape=(2, 3, 2, 3, 3, 3))),
    ((4, 8, (2, 1, 3)), dict(groups=4), dict(in_channels=4, out_channels=8, kernel_size=(2, 1, 3),
                                             stride=(1, 1, 1), padding=(0, 0, 0),
                                             dilation=(1, 1, 1), groups=4,
                                             weight_shape=(4, 2, 1, 2, 1, 3))),
    ((np.int64(6), np.int32(3), np.array([1, 2, 1])),
     dict(stride=np.int64(2), padding=np.array(1), dilation=(np.int8(1), 2, 1), groups=np.int64(3)),
     dict(in_channels=6, out_channels=3, kernel_size=(1, 2, 1), stride=(2, 2, 2),
          padding=(1, 1, 1), dilation=(1, 2, 1), groups=3, weight_shape=(3, 1, 2, 1, 2, 1))),
])
@pytest.mark.parametrize("bias", [True, False])
def test_attributes_and_parameter_shapes(args, kwargs, expected, bias):
    m = numbaconv.Conv3d(*args, bias=bias, **kwargs, rng=0)
    for name in ("in_channels", "out_channels", "groups"):
        assert getattr(m, name) == expected[name]
        assert type(getattr(m, name)) is int, name
    for name in ("kernel_size", "stride", "padding", "dilation"):
        assert getattr(m, name) == expected[name]
        assert _is_int_triple(getattr(m, name)), (name, getattr(m, name))
    assert m.conv_mode == "cross_correlation"
    assert isinstance(m.weight, np.ndarray)
    assert m.weight.shape == expected["weight_shape"]
    assert m.weight.dtype == np.float32
    if bias:
        assert isinstance(m.bias, np.ndarray)
        assert m.bias.shape == (1, expected["out_channels"], 1, 1, 1)
        assert m.bias.dtype == np.float32
    else:
        assert m.bias is None
    assert m.training is True


@pytest.mark.parametrize("mode", ["cross_correlation", "CROSS_CORRELATION", "convolution", "Convolution"])
def test_conv_mode_attribute(mode):
    m = numbaconv.Conv3d(2, 2, 2, conv_mode=mode)
    assert m.conv_mode.lower() == mode.lower()


# ---------------------------------------------------------------------------
# repr
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", GOLDEN_FILES, ids=GOLDEN_IDS)
def test_repr_and_shapes_match_megengine(path):
    _, meta = _load(path)
    m = numbaconv.Conv3d(**meta["ctor_args"])
    assert repr(m) == meta["repr"]
    assert list(m.weight.shape) == meta["weight_shape"]
    if meta["bias_shape"] is None:
        assert m.bias is None
    else:
        assert list(m.bias.shape) == meta["bias_shape"]
    for name in ("in_channels", "out_channels", "groups"):
        assert getattr(m, name) == meta[name]
    for name in ("kernel_size", "stride", "padding", "dilation"):
        assert list(getattr(m, name)) == meta[name]


@pytest.mark.parametrize("args, kwargs, text", [
    ((4, 8), dict(kernel_size=(1, 3, 3), stride=(1, 2, 3), padding=(0, 1, 2), dilation=(2, 1, 1),
                  groups=4, bias=False),
     "Conv3d(4, 8, kernel_size=(1, 3, 3), stride=(1, 2, 3), padding=(0, 1, 2), "
     "dilation=(2, 1, 1), groups=4, bias=False)"),
    ((3, 1, 3), {}, "Conv3d(3, 1, kernel_size=(3, 3, 3))"),
    ((3, 1, 3), dict(stride=1, padding=0, dilation=1, groups=1, bias=True),
     "Conv3d(3, 1, kernel_size=(3, 3, 3))"),
    ((2, 2, 1), dict(padding=(0, 0, 1)), "Conv3d(2, 2, kernel_size=(1, 1, 1), padding=(0, 0, 1))"),
    ((2, 2, 1), dict(conv_mode="convolution"), "Conv3d(2, 2, kernel_size=(1, 1, 1))"),
])
def test_repr_examples(args, kwargs, text):
    assert repr(numbaconv.Conv3d(*args, **kwargs)) == text


# ---------------------------------------------------------------------------
# Forward against MegEngine
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", GOLDEN_FILES, ids=GOLDEN_IDS)
def test_forward_matches_megengine(path):
    z, meta = _load(path)
    m = numbaconv.Conv3d(**meta["ctor_args"], rng=0)
    if meta["bias"]:
        m.load_state_dict({"weight": z["weight"], "bias": z["bias"]})
        np.testing.assert_array_equal(m.bias, z["bias"])
    else:
        assert "bias" not in z
        m.load_state_dict({"weight": z["weight"]}, strict=True)
        assert m.bias is None
    np.testing.assert_array_equal(m.weight, z["weight"])
    out = m(z["inp"])
    assert out.dtype == np.float32
    assert list(out.shape) == meta["output_shape"]
    assert_close(out, z["out"])


# ---------------------------------------------------------------------------
# reset_parameters
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("in_channels, out_channels, kernel_size, groups", [
    (64, 64, 3, 1),
    (64, 64, 3, 4),     # grouped: fan_in uses in_channels, NOT in_channels // groups
    (256, 512, 3, 256),  # depthwise, multiplier 2
])
def test_reset_parameters_statistics(in_channels, out_channels, kernel_size, groups):
    m = numbaconv.Conv3d(in_channels, out_channels, kernel_size, groups=groups, rng=12345)
    k = math.prod(m.kernel_size)
    expected_std = math.sqrt(1.0 / (k * in_channels))
    w = m.weight.astype(np.float64)
    n = w.size
    assert n > 10000
    assert abs(w.mean()) < 5 * expected_std / math.sqrt(n)
    assert abs(w.std() / expected_std - 1) < 0.03
    if groups > 1:  # clearly not the fan-in divided by groups
        wrong_std = math.sqrt(groups / (k * in_channels))
        assert abs(w.std() / wrong_std - 1) > 0.3
    np.testing.assert_array_equal(m.bias, 0)
    assert m.bias.dtype == np.float32 and m.weight.dtype == np.float32


def test_reset_parameters_seeding():
    a = numbaconv.Conv3d(4, 6, 3, groups=2, rng=7)
    b = numbaconv.Conv3d(4, 6, 3, groups=2, rng=7)
    c = numbaconv.Conv3d(4, 6, 3, groups=2, rng=8)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not np.array_equal(a.weight, c.weight)
    # A Generator is accepted too, and reset_parameters reseeds in place.
    d = numbaconv.Conv3d(4, 6, 3, groups=2, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.weight, d.weight)
    weight_id = id(c.weight)
    c.bias[...] = 5
    c.reset_parameters(7)
    assert id(c.weight) == weight_id
    np.testing.assert_array_equal(c.weight, a.weight)
    np.testing.assert_array_equal(c.bias, 0)
    # Unseeded layers differ from each other.
    assert not np.array_equal(numbaconv.Conv3d(4, 6, 3).weight, numbaconv.Conv3d(4, 6, 3).weight)


def test_reset_parameters_without_bias():
    m = numbaconv.Conv3d(2, 3, 2, bias=False, rng=1)
    m.reset_parameters(2)
    assert m.bias is None
    assert m.weight.shape == (3, 2, 2, 2, 2)


# ---------------------------------------------------------------------------
# parameters, state_dict, load_state_dict, train/eval
# ---------------------------------------------------------------------------

def test_parameters_and_named_parameters():
    m = numbaconv.Conv3d(2, 3, 2, rng=0)
    named = list(m.named_parameters())
    assert [name for name, _ in named] == ["bias", "weight"]
    assert named[0][1] is m.bias and named[1][1] is m.weight
    params = list(m.parameters())
    assert len(params) == 2
    assert params[0] is m.bias and params[1] is m.weight

    nb = numbaconv.Conv3d(2, 3, 2, bias=False, rng=0)
    assert [name for name, _ in nb.named_parameters()] == ["weight"]
    assert [p is nb.weight for p in nb.parameters()] == [True]


@pytest.mark.parametrize("groups", [1, 2])
def test_state_dict_keys_and_copies(groups):
    m = numbaconv.Conv3d(2, 4, 2, groups=groups, rng=0)
    sd = m.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd.keys()) == ["bias", "weight"]
    np.testing.assert_array_equal(sd["weight"], m.weight)
    np.testing.assert_array_equal(sd["bias"], m.bias)
    assert sd["weight"].shape == m.weight.shape and sd["bias"].shape == m.bias.shape
    assert not np.shares_memory(sd["weight"], m.weight)
    assert not np.shares_memory(sd["bias"], m.bias)
    before = m.weight.copy()
    sd["weight"][...] = 123.0
    sd["bias"][...] = 7.0
    np.testing.assert_array_equal(m.weight, before)
    np.testing.assert_array_equal(m.bias, 0)

    assert list(numbaconv.Conv3d(2, 4, 2, bias=False).state_dict().keys()) == ["weight"]


def test_load_state_dict_round_trip():
    a = numbaconv.Conv3d(2, 4, 2, groups=2, rng=1)
    a.bias[...] = np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1, 1)
    b = numbaconv.Conv3d(2, 4, 2, groups=2, rng=2)
    weight_id, bias_id = id(b.weight), id(b.bias)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(b.weight, a.weight)
    np.testing.assert_array_equal(b.bias, a.bias)
    # loaded in place (arrays keep their identity and float32 dtype)
    assert id(b.weight) == weight_id and id(b.bias) == bias_id
    assert b.weight.dtype == np.float32 and b.bias.dtype == np.float32
    # and copied, not aliased
    sd = a.state_dict()
    b.load_state_dict(sd)
    sd["weight"][...] = 0
    assert not np.array_equal(b.weight, sd["weight"])
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(a(x), b(x))


def test_load_state_dict_casts_float64():
    m = numbaconv.Conv3d(2, 3, 1, rng=0)
    w = np.random.default_rng(3).standard_normal((3, 2, 1, 1, 1))
    m.load_state_dict({"weight": w, "bias": np.zeros((1, 3, 1, 1, 1))})
    assert m.weight.dtype == np.float32
    np.testing.assert_allclose(m.weight, w, rtol=1e-6)


@pytest.mark.parametrize("state, missing, unexpected", [
    ({"weight": "W"}, "bias", None),
    ({"bias": "B"}, "weight", None),
    ({}, "weight", None),
    ({"weight": "W", "bias": "B", "extra": "B"}, None, "extra"),
    ({"weight": "W", "bias": "B", "running_mean": "B"}, None, "running_mean"),
    ({"weight": "W", "Bias": "B"}, "bias", "Bias"),
])
def test_load_state_dict_strict_keys(state, missing, unexpected):
    m = numbaconv.Conv3d(2, 3, 2, rng=0)
    arrays = {"W": np.ones((3, 2, 2, 2, 2), np.float32), "B": np.ones((1, 3, 1, 1, 1), np.float32)}
    state = {k: arrays[v] for k, v in state.items()}
    before = m.state_dict()
    with pytest.raises(KeyError) as info:
        m.load_state_dict(state)
    text = str(info.value)
    if missing:
        assert missing in text
    if unexpected:
        assert unexpected in text
    np.testing.assert_array_equal(m.weight, before["weight"])
    np.testing.assert_array_equal(m.bias, before["bias"])


def test_load_state_dict_strict_bias_on_biasless_module():
    m = numbaconv.Conv3d(2, 3, 2, bias=False, rng=0)
    with pytest.raises(KeyError, match="bias"):
        m.load_state_dict({"weight": np.ones((3, 2, 2, 2, 2), np.float32),
                           "bias": np.ones((1, 3, 1, 1, 1), np.float32)})
    assert not np.all(m.weight == 1)


def test_load_state_dict_non_strict():
    m = numbaconv.Conv3d(2, 3, 2, rng=0)
    m.bias[...] = 4
    m.load_state_dict({"weight": np.ones((3, 2, 2, 2, 2), np.float32), "extra": 1}, strict=False)
    np.testing.assert_array_equal(m.weight, 1)
    np.testing.assert_array_equal(m.bias, 4)


@pytest.mark.parametrize("name, shape", [
    ("weight", (3, 2, 2, 2)),
    ("weight", (2, 3, 2, 2, 2)),
    ("weight", (3, 2, 2, 2, 3)),
    ("weight", (1, 3, 2, 2, 2, 2)),
    ("bias", (1, 4, 1, 1, 1)),
    ("bias", (4,)),
    ("bias", (1, 3)),
    ("bias", (3, 1, 1, 1, 1)),
])
def test_load_state_dict_shape_mismatch_leaves_module_unchanged(name, shape):
    m = numbaconv.Conv3d(2, 3, 2, rng=0)
    m.bias[...] = np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1, 1)
    before = m.state_dict()
    state = {"weight": np.full((3, 2, 2, 2, 2), 9.0, np.float32),
             "bias": np.full((1, 3, 1, 1, 1), 9.0, np.float32)}
    state[name] = np.full(shape, 9.0, np.float32)
    with pytest.raises(ValueError, match=name) as info:
        m.load_state_dict(state)
    assert str(shape) in str(info.value)
    # nothing was written, not even the well-shaped parameter
    np.testing.assert_array_equal(m.weight, before["weight"])
    np.testing.assert_array_equal(m.bias, before["bias"])


def test_load_state_dict_accepts_flat_bias():
    m = numbaconv.Conv3d(2, 3, 2, rng=0)
    w = m.weight.copy()
    m.load_state_dict({"weight": w, "bias": np.array([1.0, 2.0, 3.0], np.float32)})
    assert m.bias.shape == (1, 3, 1, 1, 1)
    np.testing.assert_array_equal(m.bias.reshape(3), [1.0, 2.0, 3.0])


class FakeTensor:
    """Stands in for a MegEngine / torch tensor: only has ``.numpy()``."""

    def __init__(self, array):
        self._array = np.asarray(array)
        self.calls = 0

    def numpy(self):
        self.calls += 1
        return self._array.copy()


def test_load_state_dict_accepts_objects_with_numpy_method():
    m = numbaconv.Conv3d(2, 3, 2, rng=0)
    w = np.random.default_rng(9).standard_normal((3, 2, 2, 2, 2)).astype(np.float32)
    b = np.array([0.5, -0.5, 1.5], np.float32).reshape(1, 3, 1, 1, 1)
    tw, tb = FakeTensor(w), FakeTensor(b)
    m.load_state_dict({"weight": tw, "bias": tb})
    assert tw.calls >= 1 and tb.calls >= 1
    np.testing.assert_array_equal(m.weight, w)
    np.testing.assert_array_equal(m.bias, b)
    # a flat bias through .numpy() works too
    m.load_state_dict({"weight": FakeTensor(w), "bias": FakeTensor(b.reshape(3) * 2)})
    np.testing.assert_array_equal(m.bias.reshape(3), b.reshape(3) * 2)


def test_load_state_dict_bad_dtype_is_type_error():
    m = numbaconv.Conv3d(2, 3, 2, rng=0)
    before = m.state_dict()
    with pytest.raises(TypeError, match="weight"):
        m.load_state_dict({"weight": np.zeros((3, 2, 2, 2, 2), np.complex64),
                           "bias": np.zeros((1, 3, 1, 1, 1), np.float32)})
    np.testing.assert_array_equal(m.weight, before["weight"])
    np.testing.assert_array_equal(m.bias, before["bias"])


def test_train_eval():
    m = numbaconv.Conv3d(2, 3, 2)
    assert m.training is True
    assert m.eval() is m
    assert m.training is False
    assert m.train() is m
    assert m.training is True
    m.train(False)
    assert m.training is False
    m.train(True)
    assert m.training is True


def test_forward_uses_current_parameters():
    """forward reads the parameters at call time (after load_state_dict or in-place edits)."""
    m = numbaconv.Conv3d(2, 3, 2, padding=1, stride=(1, 2, 1), rng=0)
    x = np.random.default_rng(4).standard_normal((2, 2, 3, 4, 5)).astype(np.float32)
    assert_close(m(x), conv3d_reference(x, m.weight, m.bias, stride=(1, 2, 1), padding=1))
    m.bias[...] = np.array([1.0, -2.0, 3.0], np.float32).reshape(1, 3, 1, 1, 1)
    m.weight *= 2
    assert_close(m(x), conv3d_reference(x, m.weight, m.bias, stride=(1, 2, 1), padding=1))


def test_grouped_module_forward_matches_reference():
    m = numbaconv.Conv3d(4, 6, (1, 2, 3), groups=2, dilation=(2, 1, 1), padding=(1, 0, 1), rng=3)
    m.bias[...] = np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 6, 1, 1, 1)
    x = np.random.default_rng(5).standard_normal((1, 4, 3, 4, 5)).astype(np.float32)
    out = m(x)
    assert out.shape == (1, 6, 5, 3, 5)
    assert_close(out, conv3d_reference(x, m.weight, m.bias, padding=(1, 0, 1),
                                       dilation=(2, 1, 1), groups=2))


def test_module_forward_batch_zero():
    m = numbaconv.Conv3d(2, 3, 2, rng=0)
    out = m(np.zeros((0, 2, 3, 3, 3), np.float32))
    assert out.shape == (0, 3, 2, 2, 2) and out.dtype == np.float32
