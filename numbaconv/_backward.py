"""The backward passes, derived from a forward :class:`ConvSpec` and run on the
dispatcher's kernels.

- The input gradient (and so the transposed convolution) is a sum over the forward
  convolution's output positions scattered back through the weight. With stride ``s``
  it splits into ``s`` phases per axis (input positions ``r, r + s, r + 2s, ...``): each
  phase receives only the taps ``t`` with ``(r + p - t*d) % s == 0``, and is a dense
  stride-1 correlation of grad_output with that sub-kernel, flipped, with the channel
  axes swapped (:func:`input_grad_phases`). No zero-stuffed buffer and no product with
  a stuffed zero; stride 1 is the one-phase case. Each phase runs on the forward
  kernels and plans.
- The weight gradient is a correlation of the input with grad_output, on the
  weight-gradient kernels (``_dispatch.choose(spec, WEIGHT_GRAD)``), which read the
  strided positions directly.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

from . import _config, _dispatch
from ._lru import LRU
from ._spec import ConvSpec
from .kernels import gemm
from .kernels.registry import WEIGHT_GRAD, readonly


@dataclass(frozen=True)
class AxisPhase:
    """One phase of one axis: input positions ``first, first + stride, ...`` (``count``
    of them) receive taps ``taps`` (ascending) of grad_output read from ``crop_lo`` to
    ``length - crop_hi``, as a stride-1 correlation with the reversed taps, dilation
    ``dilation`` and zero padding ``pad_lo``/``pad_hi``."""

    first: int
    count: int
    taps: tuple
    dilation: int
    crop_lo: int
    crop_hi: int
    pad_lo: int
    pad_hi: int


def axis_phases(in_length, out_length, kernel, stride, dilation, padding) -> list:
    """The phases of one axis (see :class:`AxisPhase`); a phase whose positions no tap
    reaches (or that reads only outside grad_output) has no taps: it is zero.

    Input position ``o = r + s*j`` receives grad_output ``i = j + (r + p - t*d) / s``
    through tap ``t`` whenever that is an integer. Those taps step by ``s/g`` (g =
    gcd(s, d)) and their ``i`` by ``d/g``, so reversed they form a correlation with
    dilation ``d/g`` whose window starts at ``c0 - (K-1)*d/g``.
    """
    phases = []
    for r in range(min(stride, in_length)):
        count = -(-(in_length - r) // stride)
        taps = tuple(t for t in range(kernel) if (r + padding - t * dilation) % stride == 0)
        if not taps:
            phases.append(AxisPhase(r, count, (), 1, 0, 0, 0, 0))
            continue
        step = dilation // math.gcd(stride, dilation)
        start = (r + padding - taps[0] * dilation) // stride - (len(taps) - 1) * step
        pad_lo = -start
        # the correlation's output length, in + lo + hi - (K-1)*step, must be count
        pad_hi = count - out_length - pad_lo + (len(taps) - 1) * step
        crop_lo, crop_hi = max(0, -pad_lo), max(0, -pad_hi)
        if out_length - crop_lo - crop_hi < 1:  # every window lies outside grad_output
            phases.append(AxisPhase(r, count, (), 1, 0, 0, 0, 0))
            continue
        phases.append(AxisPhase(r, count, taps, step, crop_lo, crop_hi, max(0, pad_lo),
                                max(0, pad_hi)))
    return phases


def input_grad_phases(spec: ConvSpec) -> tuple:
    """((per-axis AxisPhase triple, the phase's forward ConvSpec or None if it is zero),
    ...) covering every input position once; made once per spec (a pure function of it,
    off the per-call path)."""
    return _PHASES.get_or_make(spec, lambda: _make_phases(spec))


_PHASES = LRU(_config.SPEC_PLANS)


def _make_phases(spec: ConvSpec) -> tuple:
    axes = [axis_phases(*args) for args in zip(spec.in_size, spec.out_size, spec.kernel,
                                                spec.stride, spec.dilation, spec.padding)]
    result = []
    for phase in itertools.product(*axes):
        if any(not p.taps for p in phase):
            result.append((phase, None))
            continue
        size = tuple(o - p.crop_lo - p.crop_hi for o, p in zip(spec.out_size, phase))
        sub = replace(spec, in_channels=spec.out_channels, out_channels=spec.in_channels,
                      in_size=size, kernel=tuple(len(p.taps) for p in phase), stride=(1, 1, 1),
                      padding=tuple(p.pad_lo for p in phase),
                      padding_hi=tuple(p.pad_hi for p in phase),
                      dilation=tuple(p.dilation for p in phase), flip=False,
                      padding_mode="zeros")
        result.append((phase, sub))
    return tuple(result)


def _positions(spec: ConvSpec, phase) -> tuple:
    """The index of ``phase``'s positions in the input gradient (N, Cin, D, H, W)."""
    return (slice(None), slice(None)) + tuple(slice(p.first, None, s)
                                              for p, s in zip(phase, spec.stride))


def grad_input(spec: ConvSpec, grad_out: np.ndarray, w6: np.ndarray, algorithm="auto") -> np.ndarray:
    """The input gradient (N, Cin, D, H, W) in the compute dtype.

    grad_out: (N, Cout, Do, Ho, Wo) and w6: (G, Cout/G, Cin/G, kD, kH, kW) (already
    flipped for ``conv_mode="convolution"``), both C-contiguous in the compute dtype.
    ``algorithm`` is forced on every phase.
    """
    dtype = spec.compute_dtype
    out = np.empty(spec.in_shape, dtype)
    if not out.size:
        return out
    if algorithm == "auto" and _scatter_pays(spec) or algorithm == "gemm_scatter":
        return _gemm_scatter(spec, grad_out, w6, out, tiered=algorithm == "auto")
    swapped = w6.transpose(0, 2, 1, 3, 4, 5)  # (G, Cin/G, Cout/G, k): Cin is the output here
    phases = input_grad_phases(spec)
    if _pointwise_phases(phases):
        return _stacked_pointwise_phases(spec, phases, grad_out, swapped, algorithm, out)
    # A forced algorithm runs every phase, so the plans come first: a phase it cannot
    # compute is refused before any work, in terms of the caller's layer.
    plans = [None if sub is None else _phase_plan(spec, sub, algorithm) for _, sub in phases]
    zeros = np.zeros(spec.in_channels, dtype)
    # A single phase (stride 1) covers every position: its kernel writes the gradient in
    # place, not into a copy (32 -> 32 on 64^3: 33 MB).
    whole = len(phases) == 1
    for (phase, sub), plan in zip(phases, plans):
        where = _positions(spec, phase)
        if sub is None:
            out[where] = 0
            continue
        weight = np.ascontiguousarray(swapped[(Ellipsis,) + tuple(_reversed(p.taps) for p in phase)])
        source = np.ascontiguousarray(grad_out[(slice(None), slice(None)) + tuple(
            slice(p.crop_lo, length - p.crop_hi) for p, length in zip(phase, spec.out_size))])
        result = out if whole else np.empty(sub.out_shape, dtype)
        plan.run(source, weight, zeros, result)
        if not whole:
            out[where] = result
    return out


def _phase_plan(spec: ConvSpec, sub: ConvSpec, algorithm):
    """The plan of one phase; the dispatcher's refusal restated for the caller's layer,
    not for a phase they never wrote."""
    try:
        return _dispatch.plan_for(sub, algorithm)
    except _dispatch.UnsupportedLayer as refusal:
        raise ValueError(
            f"algorithm={algorithm!r} cannot compute the input gradient (the transposed "
            f"convolution) of this layer (kernel {spec.kernel}, stride {spec.stride}, "
            f"dilation {spec.dilation}): it runs as stride-1 convolutions, here one of "
            f"kernel {sub.kernel} and dilation {sub.dilation}, and {refusal.reason}") from None


#: Largest product (taps x Cin/G x grad_output positions) the GEMM-and-scatter path makes.
SCATTER_BYTES = 128 << 20
#: grad_output positions up to which it beats the phases at stride 1 (deep layers)...
SCATTER_POSITIONS = 16 ** 3
#: ...of at least this many output channels per group (the product's reduction).
SCATTER_DEEP_CHANNELS = 128
#: grad_output positions up to which it beats the phases for stride-1 layers of at most
#: 3 taps (see :func:`_scatter_pays`).
FEW_TAPS_SCATTER_POSITIONS = 10 ** 3


def _scatter_pays(spec: ConvSpec) -> bool:
    """GEMM and scatter where it was measured faster than the phases (Ice Lake,
    2026-12-01, float32, ms, phases vs scatter): strided layers (the suite's e 122 vs
    100, m 118 vs 62; stride-2 convolutions 32->64 on 48^3 74 vs 44, 64->128 on 24^3 51
    vs 16; transposed k3 s2 384->64 on 6^3 44 vs 10), deep layers on small volumes
    (l2 60 vs 31; 256 channels on 6^3 25 vs 16, 128 on 12^3 55 vs 25) and layers of at
    most 3 taps on small volumes (see below). Not for few channels per group (depthwise g
    15 vs 369, grouped f 39 vs 95) or large stride-1 volumes (b 84 vs 217, l1 80 vs 107),
    where the phases run on the direct and Winograd kernels. Its product must fit in
    ``SCATTER_BYTES``, unless it goes in channel blocks (strided layers only, where
    they were measured)."""
    cout_g = spec.out_per_group  # the product's reduction
    if cout_g < 16:
        return False
    if spec.stride != (1, 1, 1) and gemm.scatter_block_channels(spec):
        # In channel blocks the products never exist whole, whatever their size (Zen 4,
        # 2026-12-07, float32, ms, phases vs blocks, k3 s2 with the products' size:
        # 32 -> 64 on 96^3 (364 MB) 164 vs 112, 16 -> 32 on 96^3 66 vs 39, on 128^3 147
        # vs 102, 64 -> 128 on 64^3 142 vs 102, on 96^3 425 vs 327).
        return True
    product = math.prod(spec.kernel) * spec.in_per_group * math.prod(spec.out_size)
    if product * spec.compute_dtype.itemsize > SCATTER_BYTES:
        return False
    if spec.stride != (1, 1, 1):
        return True
    if math.prod(spec.kernel) <= 3:
        # Since the phases of (k, 1, 1) layers read grad_output's planes in place and
        # pointwise ones read its channels (the GEMM kernel's depth-tap products and
        # slabs), they beat the scatter except on small volumes (Zen 4, 2026-12-07,
        # float32, 2 threads, ms, medians of 7 alternating calls, scatter vs phases on
        # GEMM: (3, 1, 1) 64 ch on 2 x 8 x 56^2 (suite k2) 19.2 vs 11.6, 128 on 8 x 24^2
        # 3.8 vs 3.2, (2, 1, 1) 64 on 16 x 48^2 9.0 vs 6.7, (1, 1, 3) 10.9 vs 10.2;
        # pointwise 128 -> 256 on 2 x 16 x 28^2 (suite j) 20.4 vs 13.6, 64 on 32^3 5.1 vs
        # 4.1, 256 on 16^3 4.4 vs 3.9, 128 on 24^3 5.5 vs 4.9, 256 -> 128 on 12^3 1.06-1.21
        # vs 1.00-1.18; but 512 -> 256 on 6^3 0.53-0.61 vs 0.78-0.83, 512 on 8^3 2.1-2.7
        # vs 2.6-2.9, 512 -> 256 on 10^3 2.2-2.4 vs 2.4-2.5, (3, 1, 1) 256 on 6^3 1.1-1.2
        # vs 1.3-1.5. AVX2 code alike: k2 16.5 vs 10.4, j 36.7 vs 28.0.)
        return cout_g >= 64 and math.prod(spec.out_size) <= FEW_TAPS_SCATTER_POSITIONS
    # Deep layers on small volumes, unless the phase runs on Winograd (Zen 4, 2026-12-05,
    # float32, ms, scatter vs phases: 128 on 16^3 33 vs 19, 256 on 16^3 100 vs 84, 96 on
    # 16^3 20 vs 13) or has under 128 channels (64 on 14^3 6.0 vs 4.2, on 12^3 3.8 vs
    # 3.1, 96 on 12^3 7.4 vs 6.9); scatter stays for 128 on 13^3 15 vs 21, 256 on 14^3
    # 67 vs 82 (128 on 14^3: a tie, 23 vs 23).
    return (cout_g >= SCATTER_DEEP_CHANNELS and math.prod(spec.out_size) <= SCATTER_POSITIONS
            and not _phase_on_winograd(spec))


def _phase_on_winograd(spec: ConvSpec) -> bool:
    """Whether ``auto`` runs the input gradient's one stride-1 phase on Winograd."""
    phases = input_grad_phases(spec)
    return len(phases) == 1 and phases[0][1] is not None and \
        _dispatch.resolve(phases[0][1], "auto") == "winograd"


#: Most bytes of tap products held at once: the product and its scatter go by units of
#: whole samples or of input channels within this (views of one buffer). Below glibc's
#: largest mmap threshold (32 MiB), so that malloc reuses the buffer's pages call after
#: call instead of mapping fresh ones that fault in (46 MB: 4 ms).
SCATTER_UNIT_BYTES = 30 << 20
#: Input channels per unit at least, where a unit is part of one sample: the scatter's
#: parallel loop is over a unit's channels, and this many keep several threads busy.
SCATTER_UNIT_MIN_CHANNELS = 4


def _gemm_scatter(spec: ConvSpec, grad_out: np.ndarray, w6: np.ndarray, out: np.ndarray,
                  tiered: bool):
    """The input gradient as BLAS products of the weight and grad_output, and a scatter-add.

    The products hold every tap's contribution, ``cols[ci, t, o] = sum_co w[co, ci, t] *
    grad_out[co, o]``, ((Cin/G * taps) x positions); tap ``t`` of grad_output position
    ``o`` lands on input position ``o*s + t*d - p`` and is added there, tap after tap
    in a fixed order. No zero-stuffing and no im2col: for deep layers on small volumes
    the one product is big enough for BLAS where each phase's convolution is not. Its
    sums round as the GEMM path's.

    The products are made and scattered by units of at most ``SCATTER_UNIT_BYTES``
    (whole samples, or input channels of one sample and group), so that a large
    product no longer faults in fresh pages at every call (Zen 4, 2026-12-06, float32,
    ms, 3 runs alternating in one process, one unit vs units: 32 -> 64 k3 s2 on 48^3
    (46 MB) 20.5, 28.1, 23.1 vs 18.5, 23.9, 19.1; on 64^3 (113 MB) 53, 59, 48 vs 48, 50,
    45; 64 -> 128 on 48^3 (91 MB) 64, 73, 60 vs 59, 75, 54). Smaller units cost more
    than they saved (8 MB: 128 -> 256 on 24^3 21.5 -> 25.0: BLAS packs grad_output once
    per unit). Each element is the same dot product, and its taps are added in the same
    order, whatever the units: the same bits.
    """
    groups, cout_g, cin_g = w6.shape[:3]
    taps = math.prod(spec.kernel)
    positions = math.prod(spec.out_size)
    w3 = w6.reshape(groups, cout_g, cin_g * taps)
    grads = grad_out.reshape(spec.batch * groups, cout_g, positions)
    if taps == 1 and spec.stride == (1, 1, 1) and spec.in_size == spec.out_size:
        # A pointwise stride-1 layer's products are the input gradient itself, in its layout.
        _tap_products(w3, grads, out.reshape(spec.batch * groups, cin_g, positions), 0, tiered)
        return out
    block_channels = gemm.scatter_block_channels(spec)
    if block_channels:
        _scatter_channel_blocks(spec, grad_out, w3, out, block_channels, tiered)
        return out
    planes = out.reshape((spec.batch * groups, cin_g) + spec.in_size)
    units = _scatter_units(spec.batch, groups, cin_g, taps * positions * out.itemsize)
    buffer = np.empty(max((i1 - i0) * (c1 - c0) for i0, i1, c0, c1 in units) * taps * positions,
                      out.dtype)
    for i0, i1, c0, c1 in units:
        cols = buffer[:(i1 - i0) * (c1 - c0) * taps * positions]
        # A unit of one item reads its group's weight; whole samples start at group 0.
        weight = w3[i0 % groups:i0 % groups + 1] if i1 - i0 == 1 else w3
        _tap_products(weight, grads[i0:i1], cols.reshape(i1 - i0, (c1 - c0) * taps, positions),
                      c0 * taps, tiered)
        _scatter(spec, cols.reshape(((i1 - i0) * (c1 - c0), taps) + spec.out_size),
                 planes[i0:i1, c0:c1].reshape((-1,) + spec.in_size))
    return out


def _scatter_channel_blocks(spec: ConvSpec, grad_out: np.ndarray, w3: np.ndarray, out: np.ndarray,
                            block_channels: int, tiered: bool) -> None:
    """The products and their scatter by blocks of input channels, slab by slab (the
    ``scatter_channel_blocks`` kernel), where a group has enough input channels for
    several blocks (``gemm.scatter_block_channels``): the products never exist whole
    (32 -> 64 k3 s2 on 48^3: 46 MB, in fresh pages at every call). While the kernel
    compiles (``tiered``), and in a process forked after OpenMP started, its numpy twin
    makes the same BLAS calls and adds."""
    slab_planes = gemm.scatter_slab_planes(spec, block_channels)
    kernel = _dispatch.called_kernel("scatter_channel_blocks", w3.dtype, wait=0 if tiered else None)
    with _dispatch.single_threaded_blas():
        if kernel is None:
            from .kernels import gemm_numpy
            gemm_numpy.scatter_channel_blocks(w3, grad_out, out, spec.kernel_geometry, block_channels,
                                              slab_planes)
        else:
            _dispatch.launch(kernel, readonly(w3), readonly(grad_out), out, spec.kernel_geometry,
                             block_channels, slab_planes)


def _scatter_units(batch: int, groups: int, cin_g: int, channel_bytes: int) -> list:
    """(first item, end item, first channel, end channel) of each unit of the products,
    items being (sample, group) pairs: as many whole samples as fit ``SCATTER_UNIT_BYTES``,
    or, where one sample does not, channels of one item, at least
    ``SCATTER_UNIT_MIN_CHANNELS``. A function of the layer only."""
    items = batch * groups
    per_sample = groups * cin_g * channel_bytes
    if per_sample <= SCATTER_UNIT_BYTES:
        step = SCATTER_UNIT_BYTES // per_sample * groups
        return [(i, min(items, i + step), 0, cin_g) for i in range(0, items, step)]
    chunk = min(cin_g, max(SCATTER_UNIT_MIN_CHANNELS, SCATTER_UNIT_BYTES // channel_bytes))
    return [(i, i + 1, c, min(cin_g, c + chunk)) for i in range(items) for c in range(0, cin_g, chunk)]


def _tap_products(w3: np.ndarray, grads: np.ndarray, cols: np.ndarray, first_row: int,
                  tiered: bool) -> None:
    """``cols[i] = w3[i % G, :, first_row:first_row + cols.shape[1]].T @ grads[i]``: the
    ``tap_products`` kernel, BLAS single-threaded inside its parallel loop, reading the
    weight transposed in place (it was copied transposed before: 512 x 512 x 27 on 6^3,
    products 23.3 -> 18.6 ms, the same bits). While it compiles (``tiered``), and in a
    process forked after OpenMP started, its numpy twin makes the same BLAS calls.
    (numpy's own matmul here ran OpenBLAS's threads, which then spun against numba's:
    512->256 1x1x1 on 6^3, both gradients 8.0 ms, each alone 0.8 and 2.0 ms.)"""
    blocks = gemm.tap_product_blocks(cols.shape[1], grads.shape[2])
    kernel = _dispatch.called_kernel("tap_products", w3.dtype, wait=0 if tiered else None)
    with _dispatch.single_threaded_blas():
        if kernel is None:
            from .kernels import gemm_numpy
            gemm_numpy.tap_products(w3, grads, cols, first_row, *blocks)
        else:
            _dispatch.launch(kernel, readonly(w3), readonly(grads), cols, first_row, *blocks)


def _scatter(spec: ConvSpec, cols: np.ndarray, out: np.ndarray) -> None:
    """``out`` (planes, D, H, W) = the taps' products ``cols`` (planes, taps, Do, Ho,
    Wo) added at their input positions, plane by plane (a plane is one input channel
    of one sample): the ``col2im`` kernel, or, while it compiles in the background (and
    in a process forked after OpenMP started), its numpy twin, whose adds come in the
    same order."""
    kernel = _dispatch.called_kernel("col2im", out.dtype)
    if kernel is None or not out.flags.c_contiguous:
        from .kernels import gemm_numpy
        gemm_numpy.col2im(cols, spec.kernel_geometry, out)
        return
    _dispatch.launch(kernel, readonly(cols), spec.kernel_geometry, out)


def _reversed(taps) -> slice:
    """A slice picking ``taps`` (an arithmetic progression) in reverse: a view, where an
    index array would gather element by element (28 MB of weight took ~50 ms)."""
    step = taps[1] - taps[0] if len(taps) > 1 else 1
    stop = taps[0] - step
    return slice(taps[-1], stop if stop >= 0 else None, -step)


def _pointwise_phases(phases) -> bool:
    """Several phases, each one tap per axis reading all of grad_output unpadded (kernel
    = stride, no padding, e.g. a k2 s2 decoder layer)."""
    return len(phases) > 1 and all(
        sub is not None and sub.kernel == (1, 1, 1) and sub.padding == sub.padding_hi == (0, 0, 0)
        and all(p.crop_lo == p.crop_hi == 0 for p in phase) for phase, sub in phases)


def _stacked_pointwise_phases(spec, phases, grad_out, swapped, algorithm, out):
    """Pointwise phases as one pointwise convolution with every phase's output channels
    stacked per group (one BLAS product instead of one small one per phase), then
    scattered to the phases' positions. Each output element is the same sum as in its
    own phase."""
    groups, cin_g = spec.groups, spec.in_per_group
    taps = [tuple(p.taps[0] for p in phase) for phase, _ in phases]
    sub = replace(phases[0][1], out_channels=groups * len(taps) * cin_g)
    plan = _phase_plan(spec, sub, algorithm)
    stacked = np.stack([swapped[..., d, h, w] for d, h, w in taps], axis=1)  # (G, P, Cin/G, Cout/G)
    weight = np.ascontiguousarray(stacked.reshape(groups, len(taps) * cin_g, -1, 1, 1, 1))
    result = np.empty(sub.out_shape, out.dtype)
    plan.run(grad_out, weight, np.zeros(sub.out_channels, out.dtype), result)
    result = result.reshape((spec.batch, groups, len(taps), cin_g) + sub.out_size)
    for i, (phase, _) in enumerate(phases):
        out[_positions(spec, phase)] = result[:, :, i].reshape((spec.batch, spec.in_channels) + sub.out_size)
    return out


def grad_weight(spec: ConvSpec, x: np.ndarray, grad_out: np.ndarray, algorithm="auto") -> np.ndarray:
    """The weight gradient (G, Cout/G, Cin/G, kD, kH, kW) in the compute dtype (for the
    weight as the kernels saw it, i.e. flipped for ``conv_mode="convolution"``).

    x: (N, Cin, D, H, W) and grad_out: (N, Cout, Do, Ho, Wo), C-contiguous, compute dtype.
    ``algorithm``: one of ``_dispatch.WEIGHT_GRAD_ALGORITHMS``.
    """
    return _dispatch.plan_for(spec, algorithm, WEIGHT_GRAD).run(x, grad_out)
