import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from numbaconv.reference import conv3d_reference  # noqa: E402


def error_bound(dtype, inp, weight, bias=None, **conv_args):
    """A worst-case rounding bound for any summation order: (n + 2) * eps * sum|w*x|,
    with n the reduction length (Cin/G * kD * kH * kW)."""
    dtype = np.dtype(dtype)
    eps = np.finfo(np.float32 if dtype == np.float16 else dtype).eps
    w = np.asarray(weight)
    n = int(np.prod(w.shape[-4:])) if w.ndim == 6 else int(np.prod(w.shape[1:]))
    magnitude = conv3d_reference(np.abs(np.asarray(inp, np.float64)), np.abs(w.astype(np.float64)),
                                 None if bias is None else np.abs(np.asarray(bias, np.float64)),
                                 **conv_args)
    return (n + 2) * eps * magnitude + np.finfo(np.float64).tiny


def assert_matches_reference(out, inp, weight, bias=None, **conv_args):
    """``out`` equals the float64 reference within the rounding bound of its dtype."""
    expected = conv3d_reference(inp, weight, bias, **conv_args)
    assert out.shape == expected.shape
    bound = error_bound(out.dtype, inp, weight, bias, **conv_args)
    if out.dtype == np.float16:  # plus the final rounding to float16
        bound = bound + np.abs(expected) * 2.0 ** -11 + 2.0 ** -24
    error = np.abs(out.astype(np.float64) - expected)
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else None
    assert np.all(error <= bound), (
        f"max excess {np.max(error - bound)} at {worst}: got {out[worst]}, expected {expected[worst]}")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
