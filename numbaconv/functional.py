"""The public functional API: numpy arrays in, numpy arrays out."""
from __future__ import annotations

import numpy as np

from . import _dispatch
from ._spec import ConvSpec

__all__ = ["conv3d"]


def _operand(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` as a C-contiguous, native-byte-order array of ``dtype``.

    Copies only when needed (Fortran order, negative strides, another dtype or byte
    order). The kernels only read it, and are compiled for read-only arrays too.
    """
    if array.dtype == dtype and array.flags.c_contiguous:
        return array
    return np.ascontiguousarray(array, dtype=dtype)


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
    key = _plan_key(inp, weight, bias, stride, padding, dilation, groups, conv_mode, algorithm)
    plan = _PLANS.get(key) if key is not None else None
    if plan is None:
        if algorithm not in _dispatch.ALGORITHMS:
            raise ValueError(f"algorithm must be one of {_dispatch.ALGORITHMS}, got {algorithm!r}")
        spec, inp, weight, bias = ConvSpec.from_args(
            inp, weight, bias, stride, padding, dilation, groups, conv_mode)
        plan = ForwardPlan(spec, algorithm)
        if key is not None:
            if len(_PLANS) >= MAX_PLANS:
                _PLANS.clear()
            _PLANS[key] = plan
    return plan(inp, weight, bias)


class ForwardPlan:
    """A checked forward convolution: call it with operands of the checked shapes and
    dtypes (any memory layout) to get the output."""

    def __init__(self, spec: ConvSpec, algorithm="auto"):
        self.spec = spec
        self.dtype = spec.compute_dtype
        self.out_shape = spec.out_shape
        self.kernel_plan = None if 0 in spec.out_shape else _dispatch.Plan(spec, algorithm)

    def __call__(self, inp, weight, bias) -> np.ndarray:
        dtype = self.dtype
        out = np.empty(self.out_shape, dtype)
        if self.kernel_plan is not None:
            x = _operand(inp, dtype)
            w = prepare_weight(self.spec, weight)
            b = np.zeros(self.spec.out_channels, dtype) if bias is None else _operand(bias.reshape(-1), dtype)
            self.kernel_plan.run(x, w, b, out)
        return out if self.spec.dtype == dtype else out.astype(self.spec.dtype)


#: Plans of recent calls, keyed on everything the checks depend on (shapes, dtypes and
#: the hyper-parameters, with their exact types), so that a repeated call skips them.
_PLANS: dict = {}
MAX_PLANS = 256


def _is_plain(value) -> bool:
    """An int, or a tuple of ints (exact types: True == 1 but must still be rejected)."""
    return type(value) is int or (type(value) is tuple and all(type(v) is int for v in value))


def _plan_key(inp, weight, bias, stride, padding, dilation, groups, conv_mode, algorithm):
    """The plan cache key, or None when the arguments are not all of plain types."""
    if type(inp) is not np.ndarray or type(weight) is not np.ndarray:
        return None
    if bias is None:
        bias_key = None
    elif type(bias) is np.ndarray:
        bias_key = (bias.shape, bias.dtype)
    else:
        return None
    if not (_is_plain(stride) and _is_plain(padding) and _is_plain(dilation)
            and type(groups) is int and type(conv_mode) is str and type(algorithm) is str):
        return None
    return (inp.shape, inp.dtype, weight.shape, weight.dtype, bias_key, stride, padding,
            dilation, groups, conv_mode, algorithm)


def clear_plans() -> None:
    _PLANS.clear()
