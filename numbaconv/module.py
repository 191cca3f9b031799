"""MegEngine-style modules: parameters, initialisation, repr and state_dict; no numerics."""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from ._spec import as_positive_int, as_triple, check_array, conv_mode_flips
from .functional import conv3d

__all__ = ["Conv3d"]


class Conv3d:
    """MegEngine's ``module.Conv3d`` on numbaconv's kernels.

    Parameters are float32 numpy arrays: ``weight`` is (Cout, Cin, kD, kH, kW) when
    ``groups == 1`` and (G, Cout/G, Cin/G, kD, kH, kW) otherwise; ``bias`` is
    (1, Cout, 1, 1, 1) or None. ``rng`` (keyword-only: an int seed or a
    ``numpy.random.Generator``) makes the initialisation reproducible.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, conv_mode="cross_correlation", *, rng=None):
        self.in_channels = as_positive_int("in_channels", in_channels)
        self.out_channels = as_positive_int("out_channels", out_channels)
        self.groups = as_positive_int("groups", groups)
        if self.in_channels % self.groups:
            raise ValueError(f"in_channels ({self.in_channels}) must be divisible by groups ({self.groups})")
        if self.out_channels % self.groups:
            raise ValueError(f"out_channels ({self.out_channels}) must be divisible by groups ({self.groups})")
        self.kernel_size = as_triple("kernel_size", kernel_size, 1)
        self.stride = as_triple("stride", stride, 1)
        self.padding = as_triple("padding", padding, 0)
        self.dilation = as_triple("dilation", dilation, 1)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be a bool (whether to add a bias), got {type(bias).__name__}")
        conv_mode_flips(conv_mode)
        self.conv_mode = conv_mode.lower()
        self.training = True
        self.weight = np.zeros(self._weight_shape(), np.float32)
        self.bias = np.zeros((1, self.out_channels, 1, 1, 1), np.float32) if bias else None
        self.reset_parameters(rng)

    def _weight_shape(self) -> tuple:
        if self.groups == 1:
            return (self.out_channels, self.in_channels) + self.kernel_size
        g = self.groups
        return (g, self.out_channels // g, self.in_channels // g) + self.kernel_size

    def reset_parameters(self, rng=None) -> None:
        """weight ~ Normal(0, sqrt(1 / fan_in)), fan_in = kD*kH*kW*in_channels (as
        MegEngine, not divided by groups); bias = 0."""
        rng = np.random.default_rng(rng)
        fan_in = math.prod(self.kernel_size) * self.in_channels
        std = math.sqrt(1.0 / fan_in)
        self.weight[...] = rng.normal(0.0, std, self.weight.shape)
        if self.bias is not None:
            self.bias[...] = 0

    def forward(self, inp) -> np.ndarray:
        """(N, Cin, D, H, W) -> (N, Cout, Do, Ho, Wo); see :func:`numbaconv.conv3d`."""
        return conv3d(inp, self.weight, self.bias, self.stride, self.padding, self.dilation,
                      self.groups, self.conv_mode)

    __call__ = forward

    # ---- MegEngine's Module API -------------------------------------------------------
    def train(self, mode: bool = True):
        self.training = bool(mode)
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
        with ``.numpy()`` such as MegEngine or torch tensors). Shapes must match."""
        own = dict(self.named_parameters())
        unexpected = sorted(set(state_dict) - set(own))
        missing = sorted(set(own) - set(state_dict))
        if strict and (unexpected or missing):
            raise KeyError(
                f"state_dict does not match {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        arrays = {}
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = check_array(f"state_dict[{name!r}]", state_dict[name])
            if name == "bias" and value.shape == (self.out_channels,):
                value = value.reshape(target.shape)
            if value.shape != target.shape:
                raise ValueError(
                    f"state_dict[{name!r}] has shape {value.shape}, expected {target.shape}"
                )
            arrays[name] = value
        for name, value in arrays.items():  # all checked before anything changes
            own[name][...] = value

    def _module_info_string(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1, 1):
            text += f", stride={self.stride}"
        if self.padding != (0, 0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._module_info_string()})"
