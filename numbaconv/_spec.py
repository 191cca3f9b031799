"""Argument checking and normalisation: the one place where conv3d's inputs are judged.

Every public entry point turns its arguments into a :class:`ConvSpec` (a frozen,
hashable description of one convolution) before any work or compilation happens.
All error messages come from this module; they name the argument, say what was
expected and what was given.
"""
from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

__all__ = ["ConvSpec", "as_triple", "as_positive_int", "conv_mode_flips", "check_array"]

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
    if isinstance(value, (str, bytes)):
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


def conv_mode_flips(conv_mode) -> bool:
    """True for ``"convolution"`` (kernel flipped), False for ``"cross_correlation"``."""
    if not isinstance(conv_mode, str):
        raise TypeError(
            f"conv_mode must be a str, 'cross_correlation' or 'convolution', got {_describe(conv_mode)}"
        )
    key = conv_mode.lower()
    if key not in _CONV_MODES:
        raise ValueError(
            f"conv_mode must be 'cross_correlation' or 'convolution' (case-insensitive), "
            f"got {conv_mode!r}"
        )
    return _CONV_MODES[key]


def check_array(name: str, value) -> np.ndarray:
    """``value`` as an ndarray of a real numeric dtype (float, int or bool); else TypeError."""
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()  # a MegEngine or torch tensor
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


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def check_padding_mode(padding_mode) -> str:
    if not isinstance(padding_mode, str):
        raise TypeError(f"padding_mode must be a str, one of {PADDING_MODES}, got {_describe(padding_mode)}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    return padding_mode


def padding_amounts(padding, kernel, stride, dilation):
    """(before, after) padding per axis for 3 ints, "valid" or "same" (PyTorch's
    semantics: stride 1 only; an odd total puts the extra element after)."""
    if not isinstance(padding, str):
        return padding, padding
    if padding == "valid":
        return (0, 0, 0), (0, 0, 0)
    if padding == "same":
        if stride != (1, 1, 1):
            raise ValueError(
                f"padding='same' needs stride 1 on every axis (as in PyTorch), got stride={stride}"
            )
        total = tuple(d * (k - 1) for k, d in zip(kernel, dilation))
        before = tuple(t // 2 for t in total)
        return before, tuple(t - b for t, b in zip(total, before))
    raise ValueError(f"padding must be an int, 3 ints, 'same' or 'valid', got {padding!r}")


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


@dataclass(frozen=True)
class ConvSpec:
    """A checked, normalised 3-D convolution: shapes, hyper-parameters and dtypes.

    Weight layouts (``weight_layout``):
      - ``"dense"``: ``(Cout, Cin, kD, kH, kW)``, groups == 1;
      - ``"grouped"``: MegEngine's ``(G, Cout/G, Cin/G, kD, kH, kW)``;
      - ``"torch"``: PyTorch's ``(Cout, Cin/G, kD, kH, kW)`` with groups > 1.
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
    weight_layout: str
    #: Padding after the input on each axis; ``padding`` is before it. They differ only
    #: for ``padding="same"`` with an even dilated kernel.
    padding_hi: tuple[int, int, int] = None
    #: How the padding is filled: "zeros", or PyTorch's "reflect", "replicate", "circular".
    padding_mode: str = "zeros"

    def __post_init__(self):
        if self.padding_hi is None:
            object.__setattr__(self, "padding_hi", self.padding)

    @property
    def compute_dtype(self) -> np.dtype:
        """float16 is computed in float32; float32 and float64 in their own precision."""
        return np.dtype(np.float32) if self.dtype == np.float16 else self.dtype

    @property
    def out_size(self) -> tuple[int, int, int]:
        return tuple(
            (i + p + q - (d * (k - 1) + 1)) // s + 1
            for i, k, s, p, q, d in zip(self.in_size, self.kernel, self.stride, self.padding,
                                        self.padding_hi, self.dilation)
        )

    @property
    def out_shape(self) -> tuple[int, int, int, int, int]:
        return (self.batch, self.out_channels) + self.out_size

    @property
    def in_shape(self) -> tuple[int, int, int, int, int]:
        return (self.batch, self.in_channels) + self.in_size

    @property
    def group_weight_shape(self) -> tuple[int, ...]:
        """The 6-D layout the kernels use: (G, Cout/G, Cin/G, kD, kH, kW)."""
        g = self.groups
        return (g, self.out_channels // g, self.in_channels // g) + self.kernel

    @cached_property
    def geometry(self) -> np.ndarray:
        """int64 (stride, padding before, dilation, kernel, padding after), each (D, H, W):
        the kernels' view.

        On an axis with one output position the stride never applies, so the kernels
        see stride 1 there (a huge stride would otherwise size their buffers).
        """
        stride = tuple(1 if o == 1 else s for s, o in zip(self.stride, self.out_size))
        return np.array(stride + self.padding + self.dilation + self.kernel + self.padding_hi,
                        np.int64)

    def zero_padded(self) -> "ConvSpec":
        """For a padding mode other than "zeros": the convolution, without padding, of
        the input padded by that mode (:func:`numbaconv.functional.pad_input`)."""
        size = tuple(i + p + q for i, p, q in zip(self.in_size, self.padding, self.padding_hi))
        return replace(self, in_size=size, padding=(0, 0, 0), padding_hi=(0, 0, 0),
                       padding_mode="zeros")

    @property
    def flops(self) -> int:
        """Multiply-adds times two over the whole output."""
        n_out = int(np.prod(self.out_shape, dtype=np.int64))
        return 2 * n_out * (self.in_channels // self.groups) * int(np.prod(self.kernel))

    @classmethod
    def from_args(cls, inp, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                  conv_mode="cross_correlation", padding_mode="zeros"):
        """Check the arguments of :func:`numbaconv.conv3d`; return (spec, inp, weight, bias)
        with the arrays as ndarrays (not yet cast or copied)."""
        inp = check_array("inp", inp)
        weight = check_array("weight", weight)
        dtype = result_dtype(inp, weight)
        stride = as_triple("stride", stride, 1)
        padding_arg = padding if isinstance(padding, str) else as_triple("padding", padding, 0)
        dilation = as_triple("dilation", dilation, 1)
        groups = as_positive_int("groups", groups)
        flip = conv_mode_flips(conv_mode)
        padding_mode = check_padding_mode(padding_mode)

        batch, in_channels, in_size = _check_input(inp)

        out_channels, layout, kernel = _check_weight(weight, in_channels, groups)
        padding, padding_hi = padding_amounts(padding_arg, kernel, stride, dilation)
        for axis, (i, k, p, q, d) in enumerate(zip(in_size, kernel, padding, padding_hi, dilation)):
            span = d * (k - 1) + 1
            if i + p + q < span:
                raise ValueError(
                    f"inp is too small on spatial axis {'DHW'[axis]}: size {i} with padding "
                    f"{p}+{q} gives {i + p + q}, but the dilated kernel spans {span} "
                    f"(kernel {k}, dilation {d}); inp shape {inp.shape}"
                )
            check_mode_padding(padding_mode, axis, i, p, q)
        out_elements = batch * out_channels
        for i, k, s, p, q, d in zip(in_size, kernel, stride, padding, padding_hi, dilation):
            out_elements *= (i + p + q - d * (k - 1) - 1) // s + 1
        if out_elements > MAX_ELEMENTS:
            raise ValueError(
                f"the output would have {out_elements} elements, more than {MAX_ELEMENTS}; "
                f"check padding={padding} and stride={stride}"
            )
        spec = cls(batch=int(batch), in_channels=int(in_channels), out_channels=out_channels,
                   groups=groups, in_size=in_size, kernel=kernel, stride=stride, padding=padding,
                   dilation=dilation, flip=flip, dtype=dtype, weight_layout=layout,
                   padding_hi=padding_hi, padding_mode=padding_mode)
        if bias is not None:
            bias = spec.check_bias(bias)
        return spec, inp, weight, bias

    @classmethod
    def for_transpose(cls, inp, weight, bias=None, stride=1, padding=0, output_padding=0,
                      dilation=1, groups=1):
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
        stride = as_triple("stride", stride, 1)
        padding = as_triple("padding", padding, 0)
        output_padding = as_triple("output_padding", output_padding, 0)
        dilation = as_triple("dilation", dilation, 1)
        groups = as_positive_int("groups", groups)
        if any(op >= s for op, s in zip(output_padding, stride)):
            raise ValueError(
                f"output_padding must be smaller than stride on every axis, got "
                f"output_padding={output_padding} with stride={stride}"
            )
        batch, in_channels, in_size = _check_input(inp)
        if weight.ndim == 6:
            g, cin_g, cout_g = (int(v) for v in weight.shape[:3])
            if g != groups:
                raise ValueError(
                    f"weight is 6-D (G, Cin/G, Cout/G, kD, kH, kW) with G={g}, but groups={groups}; "
                    f"pass groups={g}"
                )
            layout = "grouped"
        elif weight.ndim == 5:
            if int(weight.shape[0]) % groups:
                raise ValueError(
                    f"weight has {weight.shape[0]} input channels, which groups={groups} does not divide"
                )
            cin_g, cout_g = int(weight.shape[0]) // groups, int(weight.shape[1])
            layout = "dense" if groups == 1 else "torch"
        else:
            raise ValueError(
                "weight must be 5-D (Cin, Cout/G, kD, kH, kW) or 6-D (G, Cin/G, Cout/G, kD, kH, kW), "
                f"got {weight.ndim}-D with shape {weight.shape}"
            )
        kernel = tuple(int(v) for v in weight.shape[-3:])
        if cin_g < 1 or cout_g < 1 or min(kernel) < 1:
            raise ValueError(f"weight must have no zero-length axis, got shape {weight.shape}")
        if cin_g * groups != in_channels:
            raise ValueError(
                f"channel mismatch: inp has {in_channels} channels, but weight of shape "
                f"{weight.shape} with groups={groups} expects {cin_g * groups}"
            )
        out_size = tuple(
            (i - 1) * s - 2 * p + d * (k - 1) + op + 1
            for i, s, p, d, k, op in zip(in_size, stride, padding, dilation, kernel, output_padding))
        if min(out_size) < 1:
            raise ValueError(
                f"the transposed convolution's output would have spatial size {out_size}: "
                f"padding={padding} is too large for inp of shape {inp.shape}"
            )
        spec = cls(batch=batch, in_channels=cout_g * groups, out_channels=in_channels,
                   groups=groups, in_size=out_size, kernel=kernel, stride=stride,
                   padding=padding, dilation=dilation, flip=False, dtype=dtype,
                   weight_layout=layout)
        if bias is not None:
            bias = _check_bias(bias, spec.in_channels)
        return spec, inp, weight, bias

    def check_grad_output(self, grad_output, transposed=False) -> np.ndarray:
        """``grad_output`` must have a real dtype and the output's shape: the forward
        output's, or for a transposed convolution (``spec`` from :meth:`for_transpose`)
        its output's, which is this spec's input shape."""
        grad_output = check_array("grad_output", grad_output)
        shape, what = ((self.in_shape, "the transposed convolution's output") if transposed
                       else (self.out_shape, "the forward output's"))
        if grad_output.shape != shape:
            raise ValueError(f"grad_output must have {what} shape {shape}, got {grad_output.shape}")
        return grad_output

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


def _check_weight(weight: np.ndarray, in_channels: int, groups: int):
    """Return (out_channels, layout, kernel) for a weight given the input's channels."""
    if weight.ndim == 6:
        g, cout_g, cin_g = (int(s) for s in weight.shape[:3])
        if g != groups:
            raise ValueError(
                f"weight is 6-D (G, Cout/G, Cin/G, kD, kH, kW) with G={g}, but groups={groups}; "
                f"pass groups={g}"
            )
        layout = "grouped"
        out_channels = g * cout_g
    elif weight.ndim == 5:
        cout, cin_g = (int(s) for s in weight.shape[:2])
        layout = "dense" if groups == 1 else "torch"
        if cout % groups:
            raise ValueError(
                f"weight has {cout} output channels, which groups={groups} does not divide"
            )
        out_channels = cout
    else:
        raise ValueError(
            "weight must be 5-D (Cout, Cin/G, kD, kH, kW) or 6-D (G, Cout/G, Cin/G, kD, kH, kW), "
            f"got {weight.ndim}-D with shape {weight.shape}"
        )
    kernel = tuple(int(s) for s in weight.shape[-3:])
    if out_channels < 1 or cin_g < 1 or min(kernel) < 1:
        raise ValueError(f"weight must have no zero-length axis, got shape {weight.shape}")
    if in_channels % groups:
        raise ValueError(
            f"inp has {in_channels} channels, which groups={groups} does not divide"
        )
    if cin_g * groups != in_channels:
        raise ValueError(
            f"channel mismatch: inp has {in_channels} channels, but weight of shape "
            f"{weight.shape} with groups={groups} expects {cin_g * groups} "
            f"({cin_g} per group)"
        )
    return out_channels, layout, kernel
