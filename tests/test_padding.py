"""Padding modes, "same"/"valid", and interop with PyTorch and MegEngine state_dicts."""
import numpy as np
import pytest

import numbaconv as nc
from numbaconv.reference import explicit_padding, pad_reference
from helpers import assert_matches_reference

MODES = ["zeros", "reflect", "replicate", "circular"]


def padded_reference_case(rng, mode, padding, kernel=(2, 3, 4), dilation=(1, 2, 1), size=(5, 6, 7)):
    x = rng.standard_normal((2, 4) + size)
    w = rng.standard_normal((6, 2) + kernel)
    b = rng.standard_normal(6)
    return x, w, b, dict(padding=padding, dilation=dilation, groups=2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding", [1, (2, 1, 0), "same", "valid"])
def test_modes_against_numpy_pad_and_reference(mode, padding, rng):
    """Padding mode m equals np.pad(mode m) followed by an unpadded convolution."""
    x, w, b, args = padded_reference_case(rng, mode, padding)
    out = nc.conv3d(x, w, b, padding_mode=mode, **args)
    xp = pad_reference(x, w.shape[2:], padding, args["dilation"], mode)  # np.pad, mode m
    assert_matches_reference(out, xp, w, b, dilation=args["dilation"], groups=2)
    if padding == "same":
        assert out.shape[2:] == x.shape[2:]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding", [1, (2, 1, 0), "same", "valid"])
@pytest.mark.parametrize("kernel, dilation", [((2, 3, 4), (1, 2, 1)), ((4, 2, 3), (2, 1, 3))])
def test_modes_match_torch(mode, padding, kernel, dilation, rng):
    torch = pytest.importorskip("torch")
    x, w, b, args = padded_reference_case(rng, mode, padding, kernel, dilation, size=(8, 9, 10))
    if mode == "reflect" and padding != "valid" and max(max(p) for p in explicit_padding(
            padding, kernel, dilation)) >= min(x.shape[2:]):
        pytest.skip("reflect padding as large as the input (an error in both)")
    m = torch.nn.Conv3d(4, 6, kernel, padding=padding, dilation=dilation, groups=2,
                        padding_mode=mode).double()
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
        m.bias.copy_(torch.from_numpy(b))
    xt = torch.tensor(x, requires_grad=True)
    out_t = m(xt)
    grad_out = rng.standard_normal(out_t.shape)
    out_t.backward(torch.from_numpy(grad_out))
    out = nc.conv3d(x, w, b, padding_mode=mode, **args)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-11, atol=1e-11)
    gi, gw, gb = nc.conv3d_backward(grad_out, x, w, padding_mode=mode, **args)
    np.testing.assert_allclose(gi, xt.grad.numpy(), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(gw, m.weight.grad.numpy(), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(gb.reshape(-1), m.bias.grad.numpy(), rtol=1e-11, atol=1e-11)


def test_same_with_even_kernel_puts_extra_padding_after(rng):
    x = rng.standard_normal((1, 1, 6, 6, 6))
    w = np.zeros((1, 1, 2, 2, 2))
    w[0, 0, 0, 0, 0] = 1.0  # picks the window's first element
    out = nc.conv3d(x, w, padding="same")
    # total padding 1 per axis: 0 before, 1 after, so out[i] = x[i]
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(padding="same", stride=2), ValueError, r"padding='same' needs stride 1"),
    (dict(padding="full"), ValueError, r"padding must be an int, 3 ints, 'same' or 'valid', got 'full'"),
    (dict(padding=1, padding_mode="mirror"), ValueError, r"padding_mode must be one of .*'mirror'"),
    (dict(padding=1, padding_mode=None), TypeError, r"padding_mode must be a str"),
    (dict(padding=(0, 0, 4), padding_mode="reflect"), ValueError,
     r"padding_mode='reflect' needs padding smaller than the input on axis W: padding 4, input size 4"),
    (dict(padding=(0, 5, 0), padding_mode="circular"), ValueError,
     r"padding_mode='circular' needs padding no larger than the input on axis H: padding 5, input size 4"),
])
def test_padding_errors(kwargs, exc, message):
    x = np.ones((1, 1, 4, 4, 4), np.float32)
    w = np.ones((1, 1, 3, 3, 3), np.float32)
    with pytest.raises(exc, match=message):
        nc.conv3d(x, w, **kwargs)
    with pytest.raises(exc, match=message):
        nc.Conv3d(1, 1, 3, **kwargs)(x)


def test_replicate_any_padding_and_circular_up_to_size():
    x = np.arange(64, dtype=np.float64).reshape(1, 1, 4, 4, 4)
    w = np.ones((1, 1, 1, 1, 1))
    out = nc.conv3d(x, w, padding=6, padding_mode="replicate")
    np.testing.assert_array_equal(out, np.pad(x, [(0, 0), (0, 0)] + [(6, 6)] * 3, mode="edge"))
    out = nc.conv3d(x, w, padding=4, padding_mode="circular")
    np.testing.assert_array_equal(out, np.pad(x, [(0, 0), (0, 0)] + [(4, 4)] * 3, mode="wrap"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding", [(1, 0, 2), "same", "valid"])
def test_torch_round_trip(mode, padding, rng):
    torch = pytest.importorskip("torch")
    module = torch.nn.Conv3d(4, 6, (3, 2, 3), stride=1, padding=padding, dilation=(1, 2, 1),
                             groups=2, padding_mode=mode)
    layer = nc.Conv3d.from_torch(module)
    assert layer.weight.shape == (2, 3, 2, 3, 2, 3)  # MegEngine's grouped layout
    assert layer.padding_mode == mode and layer.padding == (padding if isinstance(padding, str) else padding)
    x = rng.standard_normal((2, 4, 6, 7, 8)).astype(np.float32)
    expected = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)
    back = layer.to_torch()
    assert back.padding_mode == mode and back.groups == 2
    np.testing.assert_array_equal(back(torch.from_numpy(x)).detach().numpy(), expected)


def test_torch_round_trip_transposed(rng):
    torch = pytest.importorskip("torch")
    module = torch.nn.ConvTranspose3d(4, 6, (3, 2, 3), stride=(2, 1, 2), padding=(1, 0, 1),
                                      output_padding=(1, 0, 0), groups=2, dilation=(1, 2, 1))
    layer = nc.ConvTranspose3d.from_torch(module)
    assert layer.weight.shape == (2, 2, 3, 3, 2, 3)
    x = rng.standard_normal((2, 4, 3, 4, 5)).astype(np.float32)
    expected = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(layer.to_torch()(torch.from_numpy(x)).detach().numpy(), expected)


def test_convolution_mode_to_torch_flips_the_weight(rng):
    """PyTorch only cross-correlates: a conv_mode="convolution" layer's torch twin
    holds the flipped weight (it held it as it was: other outputs; found by a review)."""
    torch = pytest.importorskip("torch")
    layer = nc.Conv3d(4, 6, (3, 2, 3), padding=1, groups=2, conv_mode="convolution", rng=0)
    x = rng.standard_normal((2, 4, 5, 6, 7)).astype(np.float32)
    twin = layer.to_torch()
    np.testing.assert_allclose(twin(torch.from_numpy(x)).detach().numpy(), layer(x),
                               rtol=1e-5, atol=1e-5)
    assert layer.weight.shape == (2, 3, 2, 3, 2, 3)  # the layer's own weight is unchanged


def test_from_torch_rejects_other_modules():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="must be a torch.nn.Conv3d"):
        nc.Conv3d.from_torch(torch.nn.Conv2d(1, 1, 3))


def test_torch_tensors_that_require_grad_are_read(rng):
    """A torch parameter requires grad, and torch refuses its .numpy(): load_state_dict
    of t.weight and nc.conv3d of it raised torch's RuntimeError (a review); a tensor
    numpy cannot hold (bfloat16) is a TypeError naming the argument."""
    torch = pytest.importorskip("torch")
    twin = torch.nn.Conv3d(2, 3, 3, padding=1)
    layer = nc.Conv3d(2, 3, 3, padding=1)
    layer.load_state_dict({"weight": twin.weight, "bias": twin.bias})
    x = rng.standard_normal((1, 2, 5, 5, 5)).astype(np.float32)
    expected = twin(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nc.conv3d(x, twin.weight, twin.bias, padding=1), expected,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="weight could not be read as a numpy array"):
        nc.conv3d(x, twin.weight.to(torch.bfloat16))


def test_megengine_style_state_dict(rng):
    """MegEngine's state_dict: objects with .numpy(), a (1, C, 1, 1, 1) bias."""
    class Tensor:
        def __init__(self, array):
            self._array = array

        def numpy(self):
            return self._array

    layer = nc.Conv3d(4, 6, 3, groups=2)
    weight = rng.standard_normal(layer.weight.shape).astype(np.float32)
    bias = rng.standard_normal((1, 6, 1, 1, 1)).astype(np.float32)
    layer.load_state_dict({"weight": Tensor(weight), "bias": Tensor(bias)})
    np.testing.assert_array_equal(layer.weight, weight)
    np.testing.assert_array_equal(layer.bias, bias)
