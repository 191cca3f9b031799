"""The backward passes, derived from a forward :class:`ConvSpec` and run on the
dispatcher's kernels.

- The input gradient (and so the transposed convolution) is a forward convolution of
  grad_output, zero-stuffed by the stride and padded, with the weight flipped and its
  channel axes swapped. It runs on the forward kernels and plans.
- The weight gradient is a correlation of the input with grad_output: a direct kernel
  for depthwise layers, a register-blocked one otherwise (they agree bitwise); im2col
  slabs and BLAS on request.
"""
from __future__ import annotations

import numpy as np

from . import _dispatch
from ._spec import ConvSpec

#: Fixed number of partial sums in the GEMM weight gradient (independent of threads,
#: so the result is the same at every thread count).
WEIGHT_GRAD_CHUNKS = 16


def transposed_spec(spec: ConvSpec) -> ConvSpec:
    """The forward convolution that computes ``spec``'s input gradient from the
    zero-stuffed, padded grad_output (see :func:`stuffed_grad_output`)."""
    size = tuple(i + d * (k - 1) for i, k, d in zip(spec.in_size, spec.kernel, spec.dilation))
    return ConvSpec(batch=spec.batch, in_channels=spec.out_channels, out_channels=spec.in_channels,
                    groups=spec.groups, in_size=size, kernel=spec.kernel, stride=(1, 1, 1),
                    padding=(0, 0, 0), dilation=spec.dilation, flip=False, dtype=spec.dtype,
                    weight_layout="grouped")


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
    for length, out, k, s, p, d in zip(size, spec.out_size, spec.kernel, spec.stride,
                                       spec.padding, spec.dilation):
        lead = d * (k - 1) - p
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
        t_spec = transposed_spec(spec)
        flipped = np.ascontiguousarray(w6.transpose(0, 2, 1, 3, 4, 5)[..., ::-1, ::-1, ::-1])
        _dispatch.plan_for(t_spec, algorithm).run(stuffed_grad_output(spec, grad_out), flipped,
                                              np.zeros(spec.in_channels, dtype), out)
    return out


WEIGHT_GRAD_ALGORITHMS = ("auto", "wgrad_direct", "wgrad_blocked", "wgrad_gemm")


def weight_grad_algorithm(spec: ConvSpec) -> str:
    """The direct kernel for 1-2 output channels per group (depthwise), the
    register-blocked one (4 output channels x 4 taps) otherwise. The two agree bitwise;
    ``wgrad_gemm`` (BLAS) is slower on the benchmark suite and kept as a cross-check."""
    if _dispatch.plane_bytes(spec) > _dispatch.PLANE_BYTES_LIMIT:
        return "wgrad_gemm"  # its buffers do not grow with the padding
    return "wgrad_direct" if spec.out_channels // spec.groups <= 2 else "wgrad_blocked"


def grad_weight(spec: ConvSpec, x: np.ndarray, grad_out: np.ndarray, algorithm="auto") -> np.ndarray:
    """The weight gradient (G, Cout/G, Cin/G, kD, kH, kW) in the compute dtype (for the
    weight as the kernels saw it, i.e. flipped for ``conv_mode="convolution"``).

    x: (N, Cin, D, H, W) and grad_out: (N, Cout, Do, Ho, Wo), C-contiguous, compute dtype.
    ``algorithm``: one of ``WEIGHT_GRAD_ALGORITHMS``.
    """
    name = weight_grad_algorithm(spec) if algorithm == "auto" else algorithm
    if name != "wgrad_gemm" and _dispatch.plane_bytes(spec) > _dispatch.FORCED_PLANE_BYTES_LIMIT:
        raise ValueError(
            f"algorithm={name!r} would need {_dispatch.plane_bytes(spec) / 2**20:.0f} MiB of "
            f"padded input planes per work item (padding {spec.padding}); use 'auto' or 'wgrad_gemm'"
        )
    if _dispatch.in_forked_child() and name != "wgrad_gemm":
        # serial: GNU OpenMP kills a forked child that enters a parallel region; the
        # direct kernel gives the same bits as the blocked one
        name = "wgrad_direct"
        kernel = _dispatch.serial_weight_grad_kernel(spec.compute_dtype)
    else:
        kernel = _dispatch.weight_grad_kernel(name, spec.compute_dtype)
    if name != "wgrad_gemm":
        gw = np.empty(spec.group_weight_shape, spec.compute_dtype)
        _dispatch.launch(kernel, _dispatch.readonly(x), _dispatch.readonly(grad_out), gw,
                         spec.geometry)
        return gw
    groups, cout_g, cin_g = spec.group_weight_shape[:3]
    partial = np.zeros((WEIGHT_GRAD_CHUNKS, groups, cout_g, cin_g * int(np.prod(spec.kernel))),
                       spec.compute_dtype)
    with _dispatch.single_threaded_blas():
        _dispatch.launch(kernel, _dispatch.readonly(x), _dispatch.readonly(grad_out), partial,
                         spec.geometry, _dispatch.gemm_slab_positions(spec))
    total = partial[0]
    for chunk in partial[1:]:  # a fixed order: the same sum at every thread count
        total += chunk
    return total.reshape(spec.group_weight_shape)
