"""Argument checking and normalisation: the one place where a convolution's inputs are judged.

Every entry point (``conv3d`` and its backward, the transposed convolution, the modules
and ``numbaconv.dask``) turns its arguments into a :class:`ConvSpec` (a frozen, hashable
description of one convolution; the modules keep its shape-free part, a
:class:`ConvParams`) before any work or compilation happens. Everything derived from
the hyper-parameters (per-group counts, padding amounts, output sizes, the kernels'
geometry and plane sizes) is a property of these two, written once.

Argument errors come from this module: they name the argument, say what was expected
and what was given. (The dispatcher adds one resource error: a forced algorithm whose
buffers would be too large.)
"""
from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from .kernels.geometry import Geometry, pack

__all__ = ["ConvSpec", "ConvParams", "as_triple", "as_positive_int", "check_array", "check_flag",
           "check_choice", "PADDING_MODES"]

#: Largest stride, padding, dilation, kernel size or group count accepted; with it, all
#: index arithmetic in the kernels fits in int64.
MAX_EXTENT = 2**31 - 1
#: Largest number of output elements accepted.
MAX_ELEMENTS = 2**62

_CONV_MODES = {"cross_correlation": False, "convolution": True}


def _describe(value) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _as_int(name: str, value) -> int:
    """``value`` as a Python int; floats, bools and other types are a TypeError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    return operator.index(value)


def as_positive_int(name: str, value, minimum: int = 1) -> int:
    """An int >= ``minimum`` (used for groups and channel counts)."""
    result = _as_int(name, value)
    if result < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {result}")
    if result > MAX_EXTENT:
        raise ValueError(f"{name} must be <= {MAX_EXTENT} (2**31 - 1), got {result}")
    return result


def as_triple(name: str, value, minimum: int) -> tuple[int, int, int]:
    """An int or a sequence of exactly 3 ints, each >= ``minimum``, as a (D, H, W) tuple."""
    if isinstance(value, (str, bytes, set, frozenset, dict)):  # sets and dicts: no order
        raise TypeError(f"{name} must be an int or a sequence of 3 ints, got {_describe(value)}")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)):
        items = (value,) * 3
    elif isinstance(value, (numbers.Number, bool, np.bool_)):
        raise TypeError(f"{name} must be an int or a sequence of 3 ints, got {_describe(value)}")
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise TypeError(
                f"{name} must be an int or a sequence of 3 ints, got {_describe(value)}"
            ) from None
        if len(items) != 3:
            raise ValueError(
                f"{name} must have exactly 3 entries (D, H, W), got {len(items)}: {value!r}"
            )
    triple = tuple(_as_int(f"{name}[{i}]", v) for i, v in enumerate(items))
    if min(triple) < minimum:
        raise ValueError(f"{name} entries must be >= {minimum}, got {triple}")
    if max(triple) > MAX_EXTENT:
        raise ValueError(f"{name} entries must be <= {MAX_EXTENT} (2**31 - 1), got {triple}")
    return triple


def check_array(name: str, value) -> np.ndarray:
    """``value`` as an ndarray of a real numeric dtype (float, int or bool); else TypeError."""
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    if isinstance(value, np.ma.MaskedArray):  # np.asarray would drop the mask silently
        raise TypeError(
            f"{name} is a masked array; numbaconv does not honour masks: pass "
            f"{name}.filled(value) or {name}.data explicitly"
        )
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        if hasattr(value, "detach"):  # a torch tensor that requires grad refuses .numpy()
            value = value.detach()
        try:
            value = value.numpy()  # a MegEngine or torch tensor
        except (TypeError, RuntimeError) as exc:  # on a GPU, bfloat16, ...
            raise TypeError(f"{name} could not be read as a numpy array: "
                            f"{type(value).__name__}.numpy() failed: {exc}") from None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be a numeric array, got {_describe(value)}: {exc}") from None
    if array.dtype.kind not in "fiub":
        raise TypeError(
            f"{name} must have a real float or integer dtype, got dtype {array.dtype} "
            f"(complex, object, string and other dtypes are not supported)"
        )
    if array.dtype.kind == "f" and array.dtype.itemsize not in (2, 4, 8):
        raise TypeError(f"{name} dtype must be float16, float32 or float64, got {array.dtype}")
    return array


#: padding_mode names (PyTorch's), each with the ``np.pad`` mode that fills the same
#: values. "zeros" is MegEngine's only mode; the kernels apply it without a copy.
PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                 "circular": "wrap"}


def check_choice(name: str, value, choices, case_sensitive=True) -> str:
    """``value``, a str that is one of ``choices`` (returned as spelled there)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {tuple(choices)}, got {_describe(value)}")
    key = value if case_sensitive else value.lower()
    if key not in choices:
        case = "" if case_sensitive else " (case-insensitive)"
        raise ValueError(f"{name} must be one of {tuple(choices)}{case}, got {value!r}")
    return key


def check_flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {_describe(value)}")
    return bool(value)


def check_mode_padding(padding_mode, axis, size, before, after):
    """PyTorch's limits: reflect padding must be smaller than the input, circular
    padding no larger than it."""
    largest = max(before, after)
    if padding_mode == "reflect" and largest >= size:
        raise ValueError(
            f"padding_mode='reflect' needs padding smaller than the input on axis "
            f"{'DHW'[axis]}: padding {largest}, input size {size}"
        )
    if padding_mode == "circular" and largest > size:
        raise ValueError(
            f"padding_mode='circular' needs padding no larger than the input on axis "
            f"{'DHW'[axis]}: padding {largest}, input size {size}"
        )


def result_dtype(inp: np.ndarray, weight: np.ndarray) -> np.dtype:
    """The dtype of the output. Floats promote as numpy does; an integer operand takes
    the other operand's float dtype; two integer operands are a TypeError."""
    inp_float = inp.dtype.kind == "f"
    weight_float = weight.dtype.kind == "f"
    if inp_float and weight_float:
        return np.result_type(inp.dtype, weight.dtype).newbyteorder("=")
    if inp_float:
        return inp.dtype.newbyteorder("=")
    if weight_float:
        return weight.dtype.newbyteorder("=")
    raise TypeError(
        f"at least one of inp and weight must be floating point, got inp {inp.dtype} and "
        f"weight {weight.dtype}; cast one of them, e.g. inp.astype(np.float32)"
    )


def dilated_span(kernel, dilation) -> tuple[int, ...]:
    """The extent of a dilated kernel per axis: ``d * (k - 1) + 1``."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))


def output_length(size: int, before: int, after: int, span: int, stride: int) -> int:
    """Output positions along one axis: windows of ``span`` padded voxels, ``stride``
    apart, that fit in ``size + before + after``."""
    return (size + before + after - span) // stride + 1


def transposed_length(size, stride, padding, span, output_padding) -> int:
    """The transposed convolution's output length along one axis: the input length of
    the convolution whose output has ``size`` positions (plus ``output_padding``)."""
    return (size - 1) * stride - 2 * padding + span + output_padding


def _transposed_axis(size, span, stride, padding, output_padding) -> tuple:
    """One axis of a transposed convolution as the input gradient of a forward one:
    (the forward convolution's input length, the tail, its padding after the input).

    The transposed output has ``transposed_length(...)`` positions; the forward
    convolution covers all but the ``tail``, the last positions, which no input
    reaches and which hold the bias alone. Its padding after the input makes its output
    ``size`` long. With ``output_padding < stride`` that is the whole output and the
    padding before (``padding``). PyTorch's rule also allows ``output_padding`` up to
    the dilation: the last position an input reaches then lies ``output_padding -
    padding`` before the end (where that is positive), and the tail is the whole
    strides of that excess, with no padding after; otherwise there is no tail and
    ``padding - output_padding`` after."""
    length = transposed_length(size, stride, padding, span, output_padding)
    if output_padding < stride:
        return length, 0, padding
    excess = output_padding - padding
    if excess < 0:
        return length, 0, -excess
    tail = excess - excess % stride
    return length - tail, tail, 0


@dataclass(frozen=True)
class ConvParams:
    """The shape-free hyper-parameters of a convolution, checked and normalised: what a
    module holds and every call repeats. ``padding`` is 3 ints or "same"/"valid"."""

    stride: tuple[int, int, int] = (1, 1, 1)
    padding: tuple[int, int, int] | str = (0, 0, 0)
    dilation: tuple[int, int, int] = (1, 1, 1)
    groups: int = 1
    flip: bool = False
    padding_mode: str = "zeros"
    output_padding: tuple[int, int, int] = (0, 0, 0)

    @classmethod
    def from_args(cls, stride=1, padding=0, dilation=1, groups=1, conv_mode="cross_correlation",
                  padding_mode="zeros", *, transposed=False, output_padding=0) -> "ConvParams":
        """Check the hyper-parameters, in the order a signature lists them.
        ``transposed``: a transposed convolution's, with ``output_padding``; its
        ``padding`` must be ints."""
        stride = as_triple("stride", stride, 1)
        if isinstance(padding, str) and not transposed:
            if padding not in ("same", "valid"):  # PyTorch's names, case-sensitive as there
                raise ValueError(
                    f"padding must be an int, 3 ints, 'same' or 'valid', got {padding!r}")
            if padding == "same" and stride != (1, 1, 1):
                raise ValueError(
                    f"padding='same' needs stride 1 on every axis (as in PyTorch), got stride={stride}"
                )
        else:
            padding = as_triple("padding", padding, 0)
        dilation = as_triple("dilation", dilation, 1)
        output_padding = as_triple("output_padding", output_padding, 0)
        if transposed:
            # PyTorch's rule: below the stride or the dilation (either picks one of the
            # output sizes whose input gradient has inp's shape).
            if any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation)):
                raise ValueError(
                    f"output_padding must be smaller than stride or dilation on every axis, "
                    f"got output_padding={output_padding} with stride={stride} and "
                    f"dilation={dilation}"
                )
        groups = as_positive_int("groups", groups)
        # MegEngine compares conv_mode case-insensitively; padding_mode is PyTorch's and
        # case-sensitive there.
        flip = check_choice("conv_mode", conv_mode, _CONV_MODES, case_sensitive=False) == "convolution"
        padding_mode = check_choice("padding_mode", padding_mode, PADDING_MODES)
        return cls(stride, padding, dilation, groups, flip, padding_mode, output_padding)

    @property
    def conv_mode(self) -> str:
        return "convolution" if self.flip else "cross_correlation"

    def padding_amounts(self, kernel) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(before, after) padding per axis. "same" follows PyTorch: an odd total puts
        the extra element after."""
        if self.padding == "valid":
            return (0, 0, 0), (0, 0, 0)
        if self.padding == "same":
            total = tuple(span - 1 for span in dilated_span(kernel, self.dilation))
            before = tuple(t // 2 for t in total)
            return before, tuple(t - b for t, b in zip(total, before))
        return self.padding, self.padding

    def check_channels(self, in_channels, out_channels) -> tuple[int, int]:
        """A layer's channel counts: positive ints that ``groups`` divides."""
        in_channels = as_positive_int("in_channels", in_channels)
        out_channels = as_positive_int("out_channels", out_channels)
        for name, count in (("in_channels", in_channels), ("out_channels", out_channels)):
            if count % self.groups:
                raise ValueError(f"{name} ({count}) must be divisible by groups ({self.groups})")
        return in_channels, out_channels


@dataclass(frozen=True)
class ConvSpec:
    """A checked, normalised 3-D convolution: shapes, hyper-parameters and dtypes.

    ``padding`` is the padding before the input on each axis and ``padding_hi`` after
    it; they differ only for ``padding="same"`` with an even dilated kernel, and for a
    transposed convolution with ``output_padding >= stride`` (:func:`_transposed_axis`).
    """

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: tuple[int, int, int]
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    dilation: tuple[int, int, int]
    flip: bool
    dtype: np.dtype  # dtype of the result
    padding_hi: tuple[int, int, int] = None
    #: How the padding is filled: a key of ``PADDING_MODES``.
    padding_mode: str = "zeros"
    #: Transposed convolutions only: positions after ``in_size`` on each axis that no
    #: input reaches (:func:`_transposed_axis`); the transposed output has ``in_size +
    #: tail`` and they hold the bias alone.
    tail: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self):
        if self.padding_hi is None:
            object.__setattr__(self, "padding_hi", self.padding)

    # ---- Derived sizes: each written once, computed once (the per-call path reads them) -
    @property
    def compute_dtype(self) -> np.dtype:
        """float16 is computed in float32; float32 and float64 in their own precision."""
        return np.dtype(np.float32) if self.dtype == np.float16 else self.dtype

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @cached_property
    def span(self) -> tuple[int, int, int]:
        """The dilated kernel's extent per axis."""
        return dilated_span(self.kernel, self.dilation)

    @cached_property
    def padded_size(self) -> tuple[int, int, int]:
        return tuple(i + p + q for i, p, q in zip(self.in_size, self.padding, self.padding_hi))

    @cached_property
    def out_size(self) -> tuple[int, int, int]:
        return tuple(map(output_length, self.in_size, self.padding, self.padding_hi, self.span,
                         self.stride))

    @cached_property
    def out_shape(self) -> tuple[int, int, int, int, int]:
        return (self.batch, self.out_channels) + self.out_size

    @cached_property
    def in_shape(self) -> tuple[int, int, int, int, int]:
        return (self.batch, self.in_channels) + self.in_size

    @cached_property
    def group_weight_shape(self) -> tuple[int, ...]:
        """The 6-D layout the kernels use: (G, Cout/G, Cin/G, kD, kH, kW)."""
        return (self.groups, self.out_per_group, self.in_per_group) + self.kernel

    @cached_property
    def reduction(self) -> int:
        """Terms summed per output element: Cin/G * kD * kH * kW."""
        return self.in_per_group * int(np.prod(self.kernel))

    @cached_property
    def flops(self) -> int:
        """Multiply-adds times two over the whole output."""
        return 2 * int(np.prod(self.out_shape, dtype=np.int64)) * self.reduction

    @cached_property
    def kernel_stride(self) -> tuple[int, int, int]:
        """The stride, 1 on an axis with one output position (it never applies there,
        and a huge one would otherwise size the kernels' buffers)."""
        return tuple(1 if o == 1 else s for s, o in zip(self.stride, self.out_size))

    @cached_property
    def plane_layout(self) -> tuple[int, int, int, int]:
        """(phase_w, phase_h, row_pitch, plane_size) of one zero-bordered input plane
        split by (H, W)-stride phase: padded columns and rows per phase, the pitch of a
        padded row within a phase, a plane (``stride_h * stride_w`` phases)."""
        stride_h, stride_w = self.kernel_stride[1:]
        padded_h, padded_w = self.padded_size[1:]
        phase_w = -(-padded_w // stride_w)
        phase_h = -(-padded_h // stride_h)
        return phase_w, phase_h, phase_w, stride_h * stride_w * phase_h * phase_w

    @cached_property
    def geometry(self) -> Geometry:
        """What the kernels read besides the arrays' shapes (see :class:`Geometry`).

        The plane layout is capped at 2**62 so that every value is an int64: only the
        GEMM kernels run where it would be larger (huge padding; see ``plane_bytes``),
        and they do not read it."""
        layout = (min(v, MAX_ELEMENTS) for v in self.plane_layout)
        return Geometry(*self.kernel_stride, *self.padding, *self.padding_hi, *self.dilation,
                        *self.kernel, *layout)

    @cached_property
    def kernel_geometry(self) -> np.ndarray:
        """:attr:`geometry` as kernels are called with it (see ``kernels.geometry.pack``)."""
        return pack(self.geometry)

    @cached_property
    def plane_bytes(self) -> int:
        """Bytes of the zero-bordered input planes one direct-kernel work item holds
        (one plane per input channel of a group and depth tap)."""
        return (self.in_per_group * self.kernel[0] * self.plane_layout[3]
                * self.compute_dtype.itemsize)

    # ---- Related convolutions ----------------------------------------------------------
    def zero_padded(self) -> "ConvSpec":
        """For a padding mode other than "zeros": the convolution, without padding, of
        the input padded by that mode (:func:`numbaconv.functional.pad_input`)."""
        return replace(self, in_size=self.padded_size, padding=(0, 0, 0), padding_hi=(0, 0, 0),
                       padding_mode="zeros")

    # ---- Construction from user arguments ----------------------------------------------
    @classmethod
    def from_args(cls, inp, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                  conv_mode="cross_correlation", padding_mode="zeros", *, params=None):
        """Check the arguments of :func:`numbaconv.conv3d`; return (spec, inp, weight, bias)
        with the arrays as ndarrays (not yet cast or copied). ``params``: already
        checked hyper-parameters, used instead of the keyword ones."""
        inp = check_array("inp", inp)
        weight = check_array("weight", weight)
        dtype = result_dtype(inp, weight)
        if params is None:
            params = ConvParams.from_args(stride, padding, dilation, groups, conv_mode, padding_mode)
        batch, in_channels, in_size = _check_input(inp)
        out_channels, kernel = _check_weight(weight, in_channels, params.groups)
        before, after = params.padding_amounts(kernel)
        spec = cls(batch=batch, in_channels=in_channels, out_channels=out_channels,
                   groups=params.groups, in_size=in_size, kernel=kernel, stride=params.stride,
                   padding=before, padding_hi=after, dilation=params.dilation, flip=params.flip,
                   dtype=dtype, padding_mode=params.padding_mode)
        spec._check_sizes(inp.shape)
        if bias is not None:
            bias = _check_bias(bias, out_channels)
        return spec, inp, weight, bias

    def _check_sizes(self, inp_shape) -> None:
        """The dilated kernel fits in the padded input, the padding mode's limits hold and
        the output is not too large."""
        for axis, (i, k, p, q, d, span) in enumerate(zip(self.in_size, self.kernel, self.padding,
                                                         self.padding_hi, self.dilation, self.span)):
            if i + p + q < span:
                raise ValueError(
                    f"inp is too small on spatial axis {'DHW'[axis]}: size {i} with padding "
                    f"{p}+{q} gives {i + p + q}, but the dilated kernel spans {span} "
                    f"(kernel {k}, dilation {d}); inp shape {tuple(inp_shape)}"
                )
            check_mode_padding(self.padding_mode, axis, i, p, q)
        if math.prod(self.out_shape) > MAX_ELEMENTS:
            raise ValueError(
                f"the output would have {math.prod(self.out_shape)} elements, more than "
                f"{MAX_ELEMENTS}; check padding={self.padding} and stride={self.stride}"
            )

    @classmethod
    def for_transpose(cls, inp, weight, bias=None, stride=1, padding=0, output_padding=0,
                      dilation=1, groups=1, *, params=None):
        """Check the arguments of :func:`numbaconv.conv_transpose3d`.

        A transposed convolution is the input gradient of the convolution whose output
        has ``inp``'s shape, with the same weight. Returns (spec, inp, weight, bias),
        where ``spec`` describes that forward convolution: its ``out_shape`` is
        ``inp.shape`` and its ``in_shape`` the transposed convolution's output shape.
        Weight layouts: MegEngine's ``(Cin, Cout, k...)`` (groups == 1) and grouped
        ``(G, Cin/G, Cout/G, k...)``, or PyTorch's grouped ``(Cin, Cout/G, k...)``.
        """
        inp = check_array("inp", inp)
        weight = check_array("weight", weight)
        dtype = result_dtype(inp, weight)
        if params is None:
            params = ConvParams.from_args(stride, padding, dilation, groups,
                                          transposed=True, output_padding=output_padding)
        batch, in_channels, in_size = _check_input(inp)
        # The weight is the forward convolution's: (Cin, Cout/G, k) there is (Cout, Cin/G, k) here.
        out_channels, kernel = _check_weight(weight, in_channels, params.groups, transposed=True)
        axes = list(map(_transposed_axis, in_size, dilated_span(kernel, params.dilation),
                        params.stride, params.padding, params.output_padding))
        out_size = tuple(length for length, _, _ in axes)
        tail = tuple(t for _, t, _ in axes)
        if min(out_size) < 1:
            raise ValueError(
                f"the transposed convolution's output would have spatial size "
                f"{tuple(o + t for o, t in zip(out_size, tail))} with no position reached by "
                f"the input: padding={params.padding} is too large for inp of shape {inp.shape}"
            )
        spec = cls(batch=batch, in_channels=out_channels, out_channels=in_channels,
                   groups=params.groups, in_size=out_size, kernel=kernel, stride=params.stride,
                   padding=params.padding, padding_hi=tuple(hi for _, _, hi in axes),
                   dilation=params.dilation, flip=False, dtype=dtype, tail=tail)
        if bias is not None:
            bias = _check_bias(bias, spec.in_channels)
        return spec, inp, weight, bias

    def check_grad_output(self, grad_output, transposed=False) -> np.ndarray:
        """``grad_output`` must have a real dtype and the output's shape: the forward
        output's, or for a transposed convolution (``spec`` from :meth:`for_transpose`)
        its output's, which is this spec's input shape."""
        grad_output = check_array("grad_output", grad_output)
        shape, what = ((self.transposed_shape, "the transposed convolution's output") if transposed
                       else (self.out_shape, "the forward output's"))
        if grad_output.shape != shape:
            raise ValueError(f"grad_output must have {what} shape {shape}, got {grad_output.shape}")
        return grad_output

    @property
    def transposed_shape(self) -> tuple:
        """A transposed convolution's output shape (``spec`` from :meth:`for_transpose`)."""
        return (self.batch, self.in_channels) + tuple(n + t for n, t in zip(self.in_size, self.tail))

    def check_bias(self, bias) -> np.ndarray:
        """``bias`` of shape (1, Cout, 1, 1, 1) or (Cout,), returned as a (Cout,) array."""
        return _check_bias(bias, self.out_channels)


def _check_input(inp: np.ndarray):
    """(batch, channels, spatial size) of a 5-D input with channels and space."""
    if inp.ndim != 5:
        raise ValueError(
            f"inp must be a 5-D array (N, Cin, D, H, W), got {inp.ndim}-D with shape {inp.shape}"
        )
    batch, channels = (int(v) for v in inp.shape[:2])
    size = tuple(int(v) for v in inp.shape[2:])
    if channels < 1 or min(size) < 1:
        raise ValueError(f"inp must have at least 1 channel and spatial size >= 1, got shape {inp.shape}")
    return batch, channels, size


def _check_bias(bias, channels: int) -> np.ndarray:
    """``bias`` of shape (1, C, 1, 1, 1) or (C,), returned as a (C,) array."""
    bias = check_array("bias", bias)
    if bias.shape not in ((channels,), (1, channels, 1, 1, 1)):
        raise ValueError(
            f"bias must have shape (1, {channels}, 1, 1, 1) or ({channels},) for {channels} "
            f"output channels, got shape {bias.shape}"
        )
    return bias.reshape(channels)


def _check_weight(weight: np.ndarray, in_channels: int, groups: int, transposed=False):
    """(out_channels, kernel) of a weight given the input's channels: (Cout, Cin/G, k...)
    or grouped (G, Cout/G, Cin/G, k...); for a transposed convolution, whose input is
    the forward output, (Cin, Cout/G, k...) or (G, Cin/G, Cout/G, k...), and
    ``out_channels`` is the transposed convolution's."""
    first, second = ("Cin", "Cout") if transposed else ("Cout", "Cin")
    if weight.ndim == 6:
        g, lead_g, other_g = (int(s) for s in weight.shape[:3])
        if g != groups:
            raise ValueError(
                f"weight is 6-D (G, {first}/G, {second}/G, kD, kH, kW) with G={g}, but "
                f"groups={groups}; pass groups={g}"
            )
        lead = g * lead_g
    elif weight.ndim == 5:
        lead, other_g = (int(s) for s in weight.shape[:2])
        if lead % groups:
            raise ValueError(
                f"weight has {lead} {'input' if transposed else 'output'} channels, which "
                f"groups={groups} does not divide"
            )
        lead_g = lead // groups
    else:
        raise ValueError(
            f"weight must be 5-D ({first}, {second}/G, kD, kH, kW) or 6-D (G, {first}/G, "
            f"{second}/G, kD, kH, kW), got {weight.ndim}-D with shape {weight.shape}"
        )
    kernel = tuple(int(s) for s in weight.shape[-3:])
    if lead < 1 or other_g < 1 or min(kernel) < 1:
        raise ValueError(f"weight must have no zero-length axis, got shape {weight.shape}")
    # The channels the weight's first axis counts must be the input's.
    own_g = lead_g if transposed else other_g
    if not transposed and in_channels % groups:
        raise ValueError(f"inp has {in_channels} channels, which groups={groups} does not divide")
    if own_g * groups != in_channels:
        raise ValueError(
            f"channel mismatch: inp has {in_channels} channels, but weight of shape "
            f"{weight.shape} with groups={groups} expects {own_g * groups}"
            + ("" if transposed else f" ({own_g} per group)")
        )
    return (other_g * groups if transposed else lead), kernel
