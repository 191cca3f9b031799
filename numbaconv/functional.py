"""The public functional API: numpy arrays in, numpy arrays out."""
from __future__ import annotations

import numpy as np

from . import _dispatch
from ._spec import ConvSpec

__all__ = ["conv3d"]


def _operand(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` as a C-contiguous, writeable, native-byte-order array of ``dtype``.

    Copies only when needed (Fortran order, negative strides, another dtype or byte
    order, or a read-only buffer).
    """
    result = np.ascontiguousarray(array, dtype=dtype)
    if not result.flags.writeable:
        result = result.copy()
    return result


def prepare_weight(spec: ConvSpec, weight: np.ndarray) -> np.ndarray:
    """The weight as the kernels want it: (G, Cout/G, Cin/G, kD, kH, kW), flipped for
    ``conv_mode="convolution"``, in the compute dtype."""
    grouped = weight.reshape(spec.group_weight_shape)
    if spec.flip:
        grouped = grouped[..., ::-1, ::-1, ::-1]
    return _operand(grouped, spec.compute_dtype)


def conv3d(inp, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           conv_mode="cross_correlation", *, algorithm="auto"):
    """3-D convolution (MegEngine's ``functional.conv3d``), zero padding.

    Args:
        inp: (N, Cin, D, H, W) array.
        weight: (Cout, Cin, kD, kH, kW) when groups == 1; MegEngine's grouped
            (G, Cout/G, Cin/G, kD, kH, kW) or PyTorch's (Cout, Cin/G, kD, kH, kW) otherwise.
        bias: None, (1, Cout, 1, 1, 1) or (Cout,).
        stride, padding, dilation: int or 3 ints (D, H, W).
        groups: number of channel groups.
        conv_mode: "cross_correlation" (MegEngine's only mode) or "convolution" (kernel
            flipped on the three spatial axes); case-insensitive.
        algorithm: "auto" (default), or force one of "direct", "direct_serial",
            "blocked", "gemm" (for tests and benchmarks).

    Returns:
        (N, Cout, Do, Ho, Wo) array with ``Do = (D + 2*pD - dD*(kD-1) - 1) // sD + 1``
        (likewise H, W). float32 and float64 are computed in their own precision;
        float16 is accumulated in float32 and returned as float16. Mixed float operands
        promote as in numpy; an integer operand takes the other's float dtype.
    """
    if algorithm not in _dispatch.ALGORITHMS:
        raise ValueError(f"algorithm must be one of {_dispatch.ALGORITHMS}, got {algorithm!r}")
    spec, inp, weight, bias = ConvSpec.from_args(
        inp, weight, bias, stride, padding, dilation, groups, conv_mode)
    return run_forward(spec, inp, weight, bias, algorithm)


def run_forward(spec: ConvSpec, inp, weight, bias, algorithm="auto") -> np.ndarray:
    """Compute a checked convolution (``spec`` from :meth:`ConvSpec.from_args`)."""
    dtype = spec.compute_dtype
    out = np.empty(spec.out_shape, dtype)
    if out.size:
        x = _operand(inp, dtype)
        w = prepare_weight(spec, weight)
        b = np.zeros(spec.out_channels, dtype) if bias is None else _operand(bias, dtype)
        _dispatch.forward(spec, x, w, b, out, algorithm)
    return out.astype(spec.dtype, copy=False)
