"""The public functional API: numpy arrays in, numpy arrays out."""
from __future__ import annotations

import numpy as np

from . import _autotune, _backward, _config, _dispatch
from ._lru import LRU
from ._spec import PADDING_MODES, ConvSpec, check_choice, check_flag
from .kernels.registry import FORWARD, WEIGHT_GRAD

__all__ = ["conv3d", "conv3d_backward", "conv_transpose3d", "conv_transpose3d_backward"]


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
           conv_mode="cross_correlation", *, padding_mode="zeros", algorithm="auto"):
    """3-D convolution (MegEngine's ``functional.conv3d``).

    Args:
        inp: (N, Cin, D, H, W) array.
        weight: (Cout, Cin, kD, kH, kW) when groups == 1; MegEngine's grouped
            (G, Cout/G, Cin/G, kD, kH, kW) or PyTorch's (Cout, Cin/G, kD, kH, kW) otherwise.
        bias: None, (1, Cout, 1, 1, 1) or (Cout,).
        stride, dilation: int or 3 ints (D, H, W).
        padding: int or 3 ints (the same before and after), or PyTorch's "valid" (none)
            or "same" (output size = input size; stride 1 only; an odd total puts the
            extra element after).
        groups: number of channel groups.
        conv_mode: "cross_correlation" (MegEngine's only mode) or "convolution" (kernel
            flipped on the three spatial axes); case-insensitive.
        padding_mode: "zeros" (MegEngine's only mode), or PyTorch's "reflect",
            "replicate" or "circular" (with PyTorch's limits on the padding size).
        algorithm: "auto" (default), or force one of "direct", "direct_serial", "tiny",
            "blocked", "gemm" or "winograd" (3x3x3, stride 1, dilation 1 only). ``auto``
            runs Winograd only while ``numbaconv.get_precision() == "fast"``.

    Returns:
        (N, Cout, Do, Ho, Wo) array with ``Do = (D + 2*pD - dD*(kD-1) - 1) // sD + 1``
        (likewise H, W). float32 and float64 are computed in their own precision;
        float16 is accumulated in float32 and returned as float16. Mixed float operands
        promote as in numpy; an integer operand takes the other's float dtype. The
        bias is cast to that dtype (the input and the weight decide it).
    """
    return _forward(inp, weight, bias, stride, padding, dilation, groups, conv_mode,
                    padding_mode, algorithm)


def _forward(inp, weight, bias, stride, padding, dilation, groups, conv_mode, padding_mode,
             algorithm, out=None, tiered=None) -> np.ndarray:
    """:func:`conv3d`, written into ``out`` where :meth:`ForwardPlan.__call__` can;
    ``tiered`` as :class:`~numbaconv._dispatch.Plan` takes it."""
    key = _plan_key(inp, weight, bias, stride, padding, dilation, groups, conv_mode, algorithm,
                    padding_mode)
    if key is not None and tiered is not None:
        key += (tiered,)
    plan = _PLANS.get(key) if key is not None else None
    if plan is None:
        algorithm = check_algorithm(algorithm)
        spec, inp, weight, bias = ConvSpec.from_args(
            inp, weight, bias, stride, padding, dilation, groups, conv_mode, padding_mode)
        plan = ForwardPlan(spec, algorithm, tiered)
        if key is not None:
            _PLANS.put(key, plan)
    return plan(inp, weight, bias, out)


def correlate_into(out: np.ndarray, inp: np.ndarray, weight: np.ndarray, algorithm: str) -> np.ndarray:
    """The valid cross-correlation of ``inp`` (N, C, D, H, W) with ``weight``, written
    into ``out`` when it is a C-contiguous array of the result's shape and dtype (else a
    new array); returns the result. For numbaconv.ndimage's dense filters: ``algorithm``
    names the sums' order, and while its kernel compiles, a kernel with the same bits
    serves (a first uint16 ``correlate`` waited 27 s for the blocked kernel)."""
    return _forward(inp, weight, None, 1, 0, 1, 1, "cross_correlation", "zeros", algorithm, out,
                    tiered=True)


def check_algorithm(algorithm) -> str:
    return check_choice("algorithm", algorithm, _dispatch.ALGORITHMS)


class ForwardPlan:
    """A checked forward convolution: call it with operands of the checked shapes and
    dtypes (any memory layout) to get the output."""

    def __init__(self, spec: ConvSpec, algorithm="auto", tiered=None):
        self.spec = spec
        self.dtype = spec.compute_dtype
        self.out_shape = spec.out_shape
        # Padding modes other than zeros pad the input once, then convolve unpadded.
        self.kernel_spec = spec if spec.padding_mode == "zeros" else spec.zero_padded()
        self.kernel_plan = None if 0 in spec.out_shape else \
            _dispatch.plan_for(self.kernel_spec, algorithm, tiered=tiered)

    def __call__(self, inp, weight, bias, out=None) -> np.ndarray:
        """``out``: an array to write the result into, used when it is C-contiguous and
        of the result's shape and (compute) dtype; else a new one is returned."""
        dtype = self.dtype
        if not (out is not None and out.dtype == dtype == self.spec.dtype
                and out.shape == self.out_shape and out.flags.c_contiguous
                and out.flags.writeable):
            out = np.empty(self.out_shape, dtype)
        if self.kernel_plan is not None:
            x = pad_input(self.spec, _operand(inp, dtype))
            w = prepare_weight(self.spec, weight)
            b = np.zeros(self.spec.out_channels, dtype) if bias is None else _operand(bias.reshape(-1), dtype)
            self.kernel_plan.run(x, w, b, out)
        return out if self.spec.dtype == dtype else out.astype(self.spec.dtype)


#: Plans of recent calls, keyed on everything the checks depend on (shapes, dtypes and
#: the hyper-parameters, with their exact types), so that a repeated call skips them.
_PLANS = LRU(_config.CALL_PLANS)


def _is_plain(value) -> bool:
    """An int, or a tuple of ints (exact types: True == 1 but must still be rejected)."""
    return type(value) is int or (type(value) is tuple and all(type(v) is int for v in value))


def pad_input(spec: ConvSpec, x: np.ndarray) -> np.ndarray:
    """``x`` padded by ``spec.padding_mode`` (unchanged for "zeros", which the kernels
    apply themselves without a copy)."""
    if spec.padding_mode == "zeros":
        return x
    widths = ((0, 0), (0, 0)) + tuple(zip(spec.padding, spec.padding_hi))
    return np.pad(x, widths, mode=PADDING_MODES[spec.padding_mode])


def unpad_gradient(spec: ConvSpec, grad: np.ndarray) -> np.ndarray:
    """The adjoint of :func:`pad_input`: the gradient with respect to the padded input
    folded back onto the input (each padded element adds into its source)."""
    if spec.padding_mode == "zeros":
        return grad
    for axis, (size, before, after) in enumerate(zip(spec.in_size, spec.padding, spec.padding_hi)):
        source = np.pad(np.arange(size), (before, after), mode=PADDING_MODES[spec.padding_mode])
        g = np.moveaxis(grad, axis + 2, 0)
        folded = g[before:before + size].copy()
        for j in list(range(before)) + list(range(before + size, before + size + after)):
            folded[source[j]] += g[j]
        grad = np.moveaxis(folded, 0, axis + 2)
    return np.ascontiguousarray(grad)


def _plan_key(inp, weight, bias, stride, padding, dilation, groups, conv_mode, algorithm,
              padding_mode):
    """The plan cache key, or None when the arguments are not all of plain types."""
    if type(inp) is not np.ndarray or type(weight) is not np.ndarray:
        return None
    if bias is None:
        bias_key = None
    elif type(bias) is np.ndarray:
        bias_key = (bias.shape, bias.dtype)
    else:
        return None
    if not (_is_plain(stride) and (_is_plain(padding) or type(padding) is str)
            and _is_plain(dilation) and type(groups) is int and type(conv_mode) is str
            and type(algorithm) is str and type(padding_mode) is str):
        return None
    return (inp.shape, inp.dtype, weight.shape, weight.dtype, bias_key, stride, padding,
            dilation, groups, conv_mode, algorithm, padding_mode)


def clear_plans() -> None:
    _PLANS.clear()
    _dispatch.clear_plans()


def _weight_grad(spec, x, grad_out, weight) -> np.ndarray:
    """The weight gradient in ``weight``'s own layout and the result dtype."""
    gw = _backward.grad_weight(spec, x, grad_out)
    if spec.flip:  # the kernels saw the flipped weight
        gw = gw[..., ::-1, ::-1, ::-1]
    return np.ascontiguousarray(gw, dtype=spec.dtype).reshape(weight.shape)


def _bias_grad(spec, grad_out) -> np.ndarray:
    """grad_out summed over batch and space, as (1, C, 1, 1, 1)."""
    total = grad_out.sum(axis=(0, 2, 3, 4), dtype=spec.compute_dtype)
    return total.reshape(1, -1, 1, 1, 1).astype(spec.dtype, copy=False)


def conv3d_backward(grad_output, inp, weight, stride=1, padding=0, dilation=1, groups=1,
                    conv_mode="cross_correlation", need_input_grad=True, need_weight_grad=True,
                    *, padding_mode="zeros", algorithm="auto"):
    """Gradients of ``conv3d(inp, weight, bias, ...)`` given ``grad_output`` (the
    gradient of the loss with respect to its output).

    Returns ``(grad_input, grad_weight, grad_bias)``: grad_input like ``inp``,
    grad_weight in the layout of ``weight`` as given (5-D or 6-D), grad_bias
    ``(1, Cout, 1, 1, 1)``; a gradient not asked for is None. dtypes as in
    :func:`conv3d`. ``algorithm`` applies to the input gradient's convolution.
    """
    need_input_grad = check_flag("need_input_grad", need_input_grad)
    need_weight_grad = check_flag("need_weight_grad", need_weight_grad)
    algorithm = check_algorithm(algorithm)
    spec, inp, weight, _ = ConvSpec.from_args(inp, weight, None, stride, padding, dilation,
                                              groups, conv_mode, padding_mode)
    grad_output = spec.check_grad_output(grad_output)
    dtype = spec.compute_dtype
    grad_out = _operand(grad_output, dtype)
    # A padding mode other than zeros: the gradients of the unpadded convolution of the
    # padded input, the input gradient folded back through the padding.
    kernel_spec = spec if spec.padding_mode == "zeros" else spec.zero_padded()
    grad_input = grad_weight = None
    if need_input_grad:
        grad_input = _backward.grad_input(kernel_spec, grad_out, prepare_weight(spec, weight), algorithm)
        grad_input = unpad_gradient(spec, grad_input).astype(spec.dtype, copy=False)
    if need_weight_grad:
        x = pad_input(spec, _operand(inp, dtype))
        grad_weight = _weight_grad(kernel_spec, x, grad_out, weight)
    return grad_input, grad_weight, _bias_grad(spec, grad_out)


def autotune(inp, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
             conv_mode="cross_correlation", *, padding_mode="zeros", backward=False,
             force=False) -> dict:
    """Time the kernels ``algorithm="auto"`` may run for ``conv3d(inp, weight, ...)``
    (same arguments) on this CPU, and store the fastest for the layer's class, so that
    ``auto`` runs it from now on, in this process and later ones.

    ``backward``: tune the input and weight gradients too (the input gradient's
    record is a list: one per stride phase, see ``numbaconv._backward``). ``force``: time again a class
    that has a stored choice. Returns ``{"forward": record, ...}``, each record with the
    kernel chosen and each candidate's median seconds. The choices are kept in
    ``autotune_info()["path"]``; ``clear_autotune()`` removes them (see the README).
    """
    force = check_flag("force", force)
    backward = check_flag("backward", backward)
    spec = ConvSpec.from_args(inp, weight, bias, stride, padding, dilation, groups, conv_mode,
                              padding_mode)[0]
    if spec.padding_mode != "zeros":
        spec = spec.zero_padded()
    if 0 in spec.out_shape:
        return {}
    records = {"forward": _autotune.tune(spec, FORWARD, force)}
    if backward:
        records["input_grad"] = [_autotune.tune(sub, FORWARD, force)
                                 for _, sub in _backward.input_grad_phases(spec) if sub is not None]
        records["weight_grad"] = _autotune.tune(spec, WEIGHT_GRAD, force)
    clear_plans()  # plans made before this may hold another kernel
    return records


def conv_transpose3d(inp, weight, bias=None, stride=1, padding=0, output_padding=0,
                     dilation=1, groups=1, *, algorithm="auto"):
    """3-D transposed convolution (MegEngine's ``functional.conv_transpose3d``): the
    input gradient of the convolution with the same weight and hyper-parameters.

    Args:
        inp: (N, Cin, D, H, W).
        weight: (Cin, Cout, kD, kH, kW) when groups == 1; MegEngine's grouped
            (G, Cin/G, Cout/G, kD, kH, kW) or PyTorch's (Cin, Cout/G, kD, kH, kW).
        bias: None, (1, Cout, 1, 1, 1) or (Cout,).
        output_padding: extra size on the high side of each axis, smaller than the
            stride or the dilation on each axis (PyTorch's rule).

    Returns:
        (N, Cout, Do, Ho, Wo) with ``Do = (D-1)*sD - 2*pD + dD*(kD-1) + opD + 1``.
    """
    algorithm = check_algorithm(algorithm)
    spec, inp, weight, bias = ConvSpec.for_transpose(inp, weight, bias, stride, padding,
                                                     output_padding, dilation, groups)
    dtype = spec.compute_dtype
    out = _backward.grad_input(spec, _operand(inp, dtype), prepare_weight(spec, weight), algorithm)
    if any(spec.tail):
        out = np.pad(out, ((0, 0), (0, 0)) + tuple((0, t) for t in spec.tail))
    if bias is not None:
        out += _operand(bias, dtype).reshape(1, -1, 1, 1, 1)
    return out.astype(spec.dtype, copy=False)


def conv_transpose3d_backward(grad_output, inp, weight, stride=1, padding=0, output_padding=0,
                              dilation=1, groups=1, need_input_grad=True, need_weight_grad=True,
                              *, algorithm="auto"):
    """Gradients of ``conv_transpose3d(inp, weight, bias, ...)``: ``(grad_input,
    grad_weight, grad_bias)`` as in :func:`conv3d_backward`. The input gradient of a
    transposed convolution is the forward convolution of grad_output."""
    need_input_grad = check_flag("need_input_grad", need_input_grad)
    need_weight_grad = check_flag("need_weight_grad", need_weight_grad)
    algorithm = check_algorithm(algorithm)
    spec, inp, weight, _ = ConvSpec.for_transpose(inp, weight, None, stride, padding,
                                                  output_padding, dilation, groups)
    # In ``spec``'s terms (the forward convolution), grad_output is the input and
    # ``inp`` the output gradient.
    grad_output = spec.check_grad_output(grad_output, transposed=True)
    dtype = spec.compute_dtype
    # The tail (output_padding past the stride) reaches no input: only the bias sees it.
    x = _operand(grad_output[(Ellipsis,) + tuple(slice(0, n) for n in spec.in_size)], dtype)
    grad_input = grad_weight = None
    if need_input_grad:
        grad_input = ForwardPlan(spec, algorithm)(x, weight, None)
    if need_weight_grad:
        grad_weight = _weight_grad(spec, x, _operand(inp, dtype), weight)
    return grad_input, grad_weight, _bias_grad(spec, grad_output)
