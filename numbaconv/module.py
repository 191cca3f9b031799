"""MegEngine-style modules: parameters, initialisation, repr and state_dict; no numerics."""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from ._spec import ConvParams, as_positive_int, as_triple, check_array
from .functional import conv3d, conv3d_backward, conv_transpose3d, conv_transpose3d_backward

__all__ = ["Conv3d", "ConvTranspose3d"]


class _ConvNd:
    """What Conv3d and ConvTranspose3d share: hyper-parameters, float32 parameters,
    MegEngine's initialisation, the training state and MegEngine's Module API."""

    def __init__(self, in_channels, out_channels, kernel_size, make_params, bias, rng):
        """``make_params()`` checks the hyper-parameters into a :class:`ConvParams`."""
        as_positive_int("in_channels", in_channels)  # reported before the others
        as_positive_int("out_channels", out_channels)
        params = make_params()
        self.in_channels, self.out_channels = params.check_channels(in_channels, out_channels)
        self.kernel_size = as_triple("kernel_size", kernel_size, 1)
        self.params = params
        self.groups, self.stride, self.padding, self.dilation = (
            params.groups, params.stride, params.padding, params.dilation)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be a bool (whether to add a bias), got {bias!r} "
                            f"({type(bias).__name__})")
        self.training = True
        self._weight = np.zeros(self._weight_shape(), np.float32)
        self._bias = np.zeros((1, self.out_channels, 1, 1, 1), np.float32) if bias else None
        self._saved_input = None
        self.grads = {}
        self.zero_grad()
        self.reset_parameters(rng)

    def _weight_shape(self) -> tuple:
        """(first, second, k...) dense, or (G, first/G, second/G, k...) grouped."""
        first, second = self._weight_channels()
        if self.groups == 1:
            return (first, second) + self.kernel_size
        g = self.groups
        return (g, first // g, second // g) + self.kernel_size

    def reset_parameters(self, rng=None) -> None:
        """weight ~ Normal(0, sqrt(1 / fan_in)), fan_in = kD*kH*kW*in_channels (as
        MegEngine, not divided by groups); bias = 0."""
        rng = np.random.default_rng(rng)
        fan_in = math.prod(self.kernel_size) * self.in_channels
        std = math.sqrt(1.0 / fan_in)
        self.weight[...] = rng.normal(0.0, std, self.weight.shape)
        if self.bias is not None:
            self.bias[...] = 0

    def __call__(self, inp) -> np.ndarray:
        return self.forward(inp)

    def forward(self, inp) -> np.ndarray:
        """The layer's output; in training mode the input is kept for :meth:`backward`."""
        out = self._forward(inp)
        self._saved_input = inp if self.training else None
        return out

    def backward(self, grad_output, need_input_grad: bool = True):
        """Given the loss gradient with respect to the last forward's output, add the
        parameter gradients into ``self.grads`` and return the input gradient (None with
        ``need_input_grad=False``, e.g. for a first layer: it saves that convolution)."""
        if self._saved_input is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward needs a forward call in training mode first "
                f"(training={self.training})"
            )
        grad_input, grad_weight, grad_bias = self._backward(grad_output, self._saved_input,
                                                            need_input_grad)
        self.grads["weight"] += grad_weight
        if self.bias is not None:
            self.grads["bias"] += grad_bias
        return grad_input

    def zero_grad(self) -> None:
        """Reset the accumulated parameter gradients to zero, in place (an optimiser
        may hold references to them)."""
        for name, array in self.named_parameters():
            if name in self.grads:
                self.grads[name][...] = 0
            else:
                self.grads[name] = np.zeros_like(array)

    # ---- MegEngine's Module API -------------------------------------------------------
    def train(self, mode: bool = True):
        """Set training mode (``forward`` keeps its input for ``backward``) or not."""
        self.training = bool(mode)
        if not self.training:
            self._saved_input = None
        return self

    def eval(self):
        return self.train(False)

    def named_parameters(self):
        """(name, array) pairs, sorted by name as MegEngine does."""
        params = {"weight": self.weight}
        if self.bias is not None:
            params["bias"] = self.bias
        return iter(sorted(params.items()))

    def parameters(self):
        return (array for _, array in self.named_parameters())

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of the parameters, keyed ``bias`` and ``weight``."""
        return OrderedDict((name, array.copy()) for name, array in self.named_parameters())

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy parameters in from a mapping of name to array (numpy arrays, or objects
        with ``.numpy()`` such as MegEngine or torch tensors). Shapes must match, except
        that a ``(Cout,)`` bias and PyTorch's 5-D grouped weight are accepted."""
        own = dict(self.named_parameters())
        unexpected = sorted(set(state_dict) - set(own))
        missing = sorted(set(own) - set(state_dict))
        if strict and (unexpected or missing):
            raise KeyError(
                f"state_dict does not match {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        arrays = {name: self._as_parameter(name, state_dict[name], f"state_dict[{name!r}]")
                  for name in own if name in state_dict}
        for name in arrays:
            if not own[name].flags.writeable:
                raise ValueError(
                    f"{type(self).__name__}.{name} is read-only (a memory map or a view?), so "
                    f"state_dict cannot be copied into it; assign a writeable array to "
                    f"{name} first"
                )
        for name, value in arrays.items():  # all checked before anything changes
            own[name][...] = value

    # ---- Parameters: assignment is checked like load_state_dict -------------------------
    @property
    def weight(self) -> np.ndarray:
        return self._weight

    @weight.setter
    def weight(self, value) -> None:
        self._weight = self._as_parameter("weight", value, "weight")

    @property
    def bias(self) -> np.ndarray | None:
        return self._bias

    @bias.setter
    def bias(self, value) -> None:
        """None removes the bias; an array adds or replaces it."""
        self._bias = None if value is None else self._as_parameter("bias", value, "bias")
        grads = getattr(self, "grads", None)
        if grads is not None:
            if self._bias is None:
                grads.pop("bias", None)
            elif grads.get("bias") is None:
                grads["bias"] = np.zeros_like(self._bias)

    def _as_parameter(self, name: str, value, label: str) -> np.ndarray:
        """``value`` as parameter ``name``: a float32 array of its shape (a (Cout,) bias
        and PyTorch's 5-D grouped weight are reshaped; a float32 array of the right shape
        is kept as it is, others are cast). Raises, naming ``label``, on another shape, a
        non-real dtype, or values that overflow float32."""
        value = check_array(label, value)
        shape = self._weight_shape() if name == "weight" else (1, self.out_channels, 1, 1, 1)
        if name == "bias" and value.shape == (self.out_channels,):
            value = value.reshape(shape)
        if len(shape) == 6 and value.shape == (shape[0] * shape[1],) + shape[2:]:
            value = value.reshape(shape)  # PyTorch's grouped layout
        if value.shape != shape:
            raise ValueError(f"{label} has shape {value.shape}, expected {shape}")
        if value.dtype != np.float32:
            with np.errstate(over="ignore", invalid="ignore"):
                cast = value.astype(np.float32)
            if value.dtype.kind == "f" and np.count_nonzero(np.isinf(cast)) > np.count_nonzero(np.isinf(value)):
                raise ValueError(
                    f"{label} has values too large for float32 (magnitude up to "
                    f"{np.nanmax(np.abs(value[np.isfinite(value)])):.4g}); parameters are float32"
                )
            value = cast
        return value

    def _module_info_string(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1, 1):
            text += f", stride={self.stride}"
        if self.padding != (0, 0, 0):
            text += f", padding={self.padding!r}"
        if self.dilation != (1, 1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if getattr(self, "padding_mode", "zeros") != "zeros":  # beyond MegEngine
            text += f", padding_mode={self.padding_mode!r}"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._module_info_string()})"


class Conv3d(_ConvNd):
    """MegEngine's ``module.Conv3d`` on numbaconv's kernels.

    Parameters are float32 numpy arrays: ``weight`` is (Cout, Cin, kD, kH, kW) when
    ``groups == 1`` and (G, Cout/G, Cin/G, kD, kH, kW) otherwise; ``bias`` is
    (1, Cout, 1, 1, 1) or None. ``rng`` (keyword-only: an int seed or a
    ``numpy.random.Generator``) makes the initialisation reproducible.

    Beyond MegEngine: ``padding`` may be "same" or "valid" and ``padding_mode``
    (keyword-only) "reflect", "replicate" or "circular", as in PyTorch; see
    :func:`numbaconv.conv3d`. :meth:`from_torch` and :meth:`to_torch` convert.

    Training: ``forward`` keeps its input while ``training`` is true; ``backward(
    grad_output)`` returns the input gradient and adds the parameter gradients into
    ``grads`` (keyed like ``state_dict``); ``zero_grad()`` clears them.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, conv_mode="cross_correlation", *, padding_mode="zeros",
                 rng=None):
        super().__init__(in_channels, out_channels, kernel_size, lambda: ConvParams.from_args(
            stride, padding, dilation, groups, conv_mode, padding_mode), bias, rng)
        self.conv_mode, self.padding_mode = self.params.conv_mode, self.params.padding_mode

    def _weight_channels(self):
        return self.out_channels, self.in_channels

    def _forward(self, inp):
        return conv3d(inp, self.weight, self.bias, self.stride, self.padding, self.dilation,
                      self.groups, self.conv_mode, padding_mode=self.padding_mode)

    def _backward(self, grad_output, inp, need_input_grad):
        return conv3d_backward(grad_output, inp, self.weight, self.stride, self.padding,
                               self.dilation, self.groups, self.conv_mode,
                               need_input_grad=need_input_grad, padding_mode=self.padding_mode)

    @classmethod
    def from_torch(cls, module) -> "Conv3d":
        """A Conv3d with the hyper-parameters and weights of a ``torch.nn.Conv3d``
        (parameters become float32, MegEngine's layouts)."""
        torch = _torch()
        if not isinstance(module, torch.nn.Conv3d):
            raise TypeError(f"module must be a torch.nn.Conv3d, got {type(module).__name__}")
        padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
        layer = cls(module.in_channels, module.out_channels, tuple(module.kernel_size),
                    tuple(module.stride), padding, tuple(module.dilation), module.groups,
                    module.bias is not None, padding_mode=module.padding_mode)
        layer.load_state_dict({name: _to_numpy(t) for name, t in module.state_dict().items()})
        return layer

    def to_torch(self):
        """A ``torch.nn.Conv3d`` with this layer's hyper-parameters and weights (for
        ``conv_mode="convolution"`` the weight flipped on its three spatial axes: PyTorch
        only cross-correlates)."""
        torch = _torch()
        module = torch.nn.Conv3d(self.in_channels, self.out_channels, self.kernel_size,
                                 self.stride, self.padding, self.dilation, self.groups,
                                 self.bias is not None, padding_mode=self.padding_mode)
        _copy_into_torch(module, self, flip=str(self.conv_mode).lower() == "convolution")
        return module


class ConvTranspose3d(_ConvNd):
    """MegEngine's ``module.ConvTranspose3d``, grouped ones included (MegEngine's own
    fails at forward when grouped).

    ``weight`` is (Cin, Cout, kD, kH, kW) when ``groups == 1`` and (G, Cin/G, Cout/G,
    kD, kH, kW) otherwise; ``bias`` (1, Cout, 1, 1, 1) or None. Output size per axis:
    ``(in - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1``. The repr
    leaves out ``output_padding``, as MegEngine's does. Training as in :class:`Conv3d`.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, dilation=1, groups=1, bias=True, *, rng=None):
        super().__init__(in_channels, out_channels, kernel_size, lambda: ConvParams.from_args(
            stride, padding, dilation, groups, transposed=True, output_padding=output_padding), bias, rng)
        self.output_padding = self.params.output_padding

    def _weight_channels(self):
        return self.in_channels, self.out_channels

    def _forward(self, inp):
        return conv_transpose3d(inp, self.weight, self.bias, self.stride, self.padding,
                                self.output_padding, self.dilation, self.groups)

    def _backward(self, grad_output, inp, need_input_grad):
        return conv_transpose3d_backward(grad_output, inp, self.weight, self.stride,
                                         self.padding, self.output_padding, self.dilation,
                                         self.groups, need_input_grad=need_input_grad)

    @classmethod
    def from_torch(cls, module) -> "ConvTranspose3d":
        """A ConvTranspose3d with the hyper-parameters and weights of a
        ``torch.nn.ConvTranspose3d`` (zero padding only, as in PyTorch)."""
        torch = _torch()
        if not isinstance(module, torch.nn.ConvTranspose3d):
            raise TypeError(f"module must be a torch.nn.ConvTranspose3d, got {type(module).__name__}")
        layer = cls(module.in_channels, module.out_channels, tuple(module.kernel_size),
                    tuple(module.stride), tuple(module.padding), tuple(module.output_padding),
                    tuple(module.dilation), module.groups, module.bias is not None)
        layer.load_state_dict({name: _to_numpy(t) for name, t in module.state_dict().items()})
        return layer

    def to_torch(self):
        """A ``torch.nn.ConvTranspose3d`` with this layer's hyper-parameters and weights."""
        torch = _torch()
        module = torch.nn.ConvTranspose3d(self.in_channels, self.out_channels, self.kernel_size,
                                          self.stride, self.padding, self.output_padding,
                                          self.groups, self.bias is not None, self.dilation)
        _copy_into_torch(module, self)
        return module


def _torch():
    """torch, imported only when a conversion asks for it."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError("converting to or from PyTorch needs torch: pip install torch") from exc
    return torch


def _to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _copy_into_torch(module, layer, flip: bool = False) -> None:
    """Copy ``layer``'s parameters into the torch ``module`` (MegEngine's grouped 6-D
    weight becomes PyTorch's 5-D one: the same memory order; ``flip``: reversed on the
    three spatial axes)."""
    torch = _torch()
    weight = layer.weight.reshape(tuple(module.weight.shape))
    if flip:
        weight = np.ascontiguousarray(weight[..., ::-1, ::-1, ::-1])
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(weight))
        if layer.bias is not None:
            module.bias.copy_(torch.from_numpy(layer.bias.reshape(-1)))
