"""The backward passes, derived from a forward :class:`ConvSpec` and run on the
dispatcher's kernels.

- The input gradient (and so the transposed convolution) is a forward convolution of
  grad_output, zero-stuffed by the stride and padded, with the weight flipped and its
  channel axes swapped. It runs on the forward kernels and plans.
- The weight gradient is a correlation of the input with grad_output, on the
  weight-gradient kernels (``_dispatch.choose(spec, WEIGHT_GRAD)``).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import _dispatch
from ._spec import ConvSpec
from .kernels.registry import WEIGHT_GRAD


def transposed_spec(spec: ConvSpec) -> ConvSpec:
    """The forward convolution that computes ``spec``'s input gradient from the
    zero-stuffed, padded grad_output (see :func:`stuffed_grad_output`)."""
    size = tuple(i + s - 1 for i, s in zip(spec.in_size, spec.span))
    return replace(spec, in_channels=spec.out_channels, out_channels=spec.in_channels,
                   in_size=size, stride=(1, 1, 1), padding=(0, 0, 0), padding_hi=(0, 0, 0),
                   flip=False, padding_mode="zeros")


def stuffed_grad_output(spec: ConvSpec, grad_out: np.ndarray) -> np.ndarray:
    """grad_out with stride-1 zeros between its elements, placed so that a valid
    cross-correlation with the flipped weight gives the input gradient.

    Output position ``o`` feeds input ``o*s + t*d - p`` through tap ``t``; with the kernel
    flipped that is position ``o*s + d*(k-1) - p`` of the stuffed array. Elements that
    land outside it feed no input position and are dropped.
    """
    size = transposed_spec(spec).in_size
    stuffed = np.zeros(grad_out.shape[:2] + size, grad_out.dtype)
    dst, src = [slice(None)] * 2, [slice(None)] * 2
    for length, out, span, s, p in zip(size, spec.out_size, spec.span, spec.stride, spec.padding):
        lead = span - 1 - p
        first = max(0, -(lead // s))  # the first o with o*s + lead >= 0
        last = min(out, (length - 1 - lead) // s + 1)  # past the last inside
        count = max(0, last - first)
        start = first * s + lead
        dst.append(slice(start, start + (count - 1) * s + 1, s) if count else slice(0, 0))
        src.append(slice(first, first + count))
    stuffed[tuple(dst)] = grad_out[tuple(src)]
    return stuffed


def grad_input(spec: ConvSpec, grad_out: np.ndarray, w6: np.ndarray, algorithm="auto") -> np.ndarray:
    """The input gradient (N, Cin, D, H, W) in the compute dtype.

    grad_out: (N, Cout, Do, Ho, Wo) and w6: (G, Cout/G, Cin/G, kD, kH, kW) (already
    flipped for ``conv_mode="convolution"``), both C-contiguous in the compute dtype.
    """
    dtype = spec.compute_dtype
    out = np.empty(spec.in_shape, dtype)
    if out.size:
        flipped = np.ascontiguousarray(w6.transpose(0, 2, 1, 3, 4, 5)[..., ::-1, ::-1, ::-1])
        _dispatch.plan_for(transposed_spec(spec), algorithm).run(
            stuffed_grad_output(spec, grad_out), flipped, np.zeros(spec.in_channels, dtype), out)
    return out


def grad_weight(spec: ConvSpec, x: np.ndarray, grad_out: np.ndarray, algorithm="auto") -> np.ndarray:
    """The weight gradient (G, Cout/G, Cin/G, kD, kH, kW) in the compute dtype (for the
    weight as the kernels saw it, i.e. flipped for ``conv_mode="convolution"``).

    x: (N, Cin, D, H, W) and grad_out: (N, Cout, Do, Ho, Wo), C-contiguous, compute dtype.
    ``algorithm``: one of ``_dispatch.WEIGHT_GRAD_ALGORITHMS``.
    """
    return _dispatch.plan_for(spec, algorithm, WEIGHT_GRAD).run(x, grad_out)
