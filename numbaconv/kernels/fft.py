"""FFT convolution: large kernels over few channels (point-spread functions, the
``numbaconv.ndimage`` filters).

A direct convolution costs kD*kH*kW multiply-adds per output and channel pair; through
the FFT it costs a few transforms per output block, whatever the kernel size. The output
is cut into blocks (overlap-save): a block of ``b`` outputs along an axis reads
``(b - 1) * stride + span`` padded inputs, which are transformed at a size ``n`` at least
that long. Per block, (sample, group), with ``F`` the real FFT over all three axes:

    out[n, co, block] = bias[co] + irfft( sum_ci F(x[n, ci, window]) * conj(F(w[co, ci])) )[p * stride]

The correlation is circular, but no kept output ``p`` reads past the block's window, so
none wraps around, and whatever the buffer holds beyond the window is never read by a
kept output. Dilation spreads the kernel's taps over zeros before its transform; stride
keeps every ``stride``-th output.

Why blocks: one transform of the whole padded volume touched a few hundred MB of fresh
memory per call (the input, its spectrum, the weight's spectrum at full size), and this
was most of a call's time where the OS had taken freed pages back (41 MB of page faults:
80 ms back to back, 200-240 ms after the process idled a second, 128^3 with a 15^3 PSF).
Blocks of about 80^3 keep the buffers a few MB per thread and the weight's transform
small, and they run on threads in parallel (one single-threaded transform each), which
scales better than scipy.fft's workers inside one transform. :func:`block_plan` chooses
the block from the layer alone, never from the thread count, so the bits are the same at
every thread count: each block is computed the same way on whichever thread takes it.

Rounding: this is a transform method (``direct_sums=False``), so ``auto`` takes it only
under ``set_precision("fast")``. It always computes in float64, float32 layers included.
Its error is then about 1e-15 of the largest output, far below float32's rounding of any
output that is not 1e-8 times smaller than the largest. A float32 FFT would save half
the time but err by 1e-6 of the largest output, more than the direct sums' own error on
small outputs. Products are summed over input channels in order. A NaN or infinity in
the input spreads to every output of the blocks that read it (a transform mixes them).
"""
from __future__ import annotations

import functools
import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numba
import numpy as np

from .registry import FORWARD, example_arrays, register

#: Largest transformed operands (the weight's spectra and the threads' buffers) accepted.
MEMORY_BYTES = 2 << 30
#: Largest block transform (points) chosen unless the kernel's span needs more: beyond
#: about 96^3 a transform no longer fits this machine's caches. Measured (Zen 4, 2 threads,
#: 128^3 volume, 15^3 kernel, one transform of the whole padded volume at 144^3 vs 8 blocks
#: at 80^3 in parallel): 57-80 vs 26-29 ms.
MAX_BLOCK_POINTS = 90 ** 3
#: The planner's costs, in units of one point of a transform's ``N log2 N`` (about 0.3 ns
#: here): a spectral multiply-add per point, and the fixed cost of each numpy call on a
#: block's arrays (about 10 us, Python's and the call's own).
PRODUCT_COST = 4
CALL_COST = 30_000
#: ...and that fixed cost in FLOPs, for ``fft_flops`` (at the transforms' FLOP rate).
CALL_FLOPS = 100_000


class BlockPlan(NamedTuple):
    """Outputs per block (``block``), the transform size (``shape``) and the block count
    (``counts``), per axis."""
    block: tuple[int, int, int]
    shape: tuple[int, int, int]
    counts: tuple[int, int, int]

    @property
    def spectrum_points(self) -> int:
        d, h, w = self.shape
        return d * h * (w // 2 + 1)


def _axis_candidates(out_len, stride, span, real):
    """(outputs per block, transform size, blocks) along one axis: for each block count,
    the shortest equal blocks, kept where the axis's total transform length is at most
    twice the least (the other choices never pay)."""
    from scipy import fft as sp_fft

    found = {}
    for per_block in range(out_len, 0, -1):
        blocks = -(-out_len // per_block)
        per_block = -(-out_len // blocks)
        if blocks not in found:
            size = sp_fft.next_fast_len((per_block - 1) * stride + span, real=real)
            found[blocks] = (per_block, size, blocks)
    least = min(size * blocks for _, size, blocks in found.values())
    return [c for c in found.values() if c[1] * c[2] <= 2 * least]


@functools.lru_cache(maxsize=512)
def block_plan(out_size, stride, span, transforms, products, calls, weight_pairs) -> BlockPlan:
    """The blocks of least modelled cost, per block: ``transforms`` transforms of ``N``
    points (``N log2 N`` each), ``products`` spectral multiply-adds per point and
    ``calls`` numpy calls; once: ``weight_pairs`` weight transforms. ``N`` stays within
    ``MAX_BLOCK_POINTS`` where the span permits."""
    axes = [_axis_candidates(o, s, k, real=(axis == 2))
            for axis, (o, s, k) in enumerate(zip(out_size, stride, span))]
    smallest = math.prod(min(size for _, size, _ in choices) for choices in axes)
    cap = max(MAX_BLOCK_POINTS, smallest)
    best, best_cost = None, math.inf
    for choice in itertools.product(*axes):
        points = math.prod(size for _, size, _ in choice)
        if points > cap:
            continue
        transform = points * math.log2(max(points, 2))
        blocks = math.prod(count for _, _, count in choice)
        cost = (blocks * (transforms * transform + products * PRODUCT_COST * points + calls * CALL_COST)
                + weight_pairs * transform)
        if cost < best_cost:
            best, best_cost = choice, cost
    return BlockPlan(*(tuple(c[i] for c in best) for i in range(3)))


def _calls_per_block(spec) -> int:
    """numpy calls per block: per input channel a copy and a transform; per output
    channel two per input channel (multiply, add) and four more (two inverses, the
    store, the buffer's zeroing)."""
    return spec.batch * (2 * spec.in_channels + spec.out_channels * (2 * spec.in_per_group + 4))


def plan_for(spec) -> BlockPlan:
    """:func:`block_plan` for a layer: a function of the layer only (never of the thread
    count), so that the bits are too."""
    return block_plan(spec.out_size, spec.stride, spec.span,
                      transforms=spec.batch * (spec.in_channels + spec.out_channels),
                      products=spec.batch * spec.out_channels * spec.in_per_group // 2,
                      calls=_calls_per_block(spec),
                      weight_pairs=spec.out_channels * spec.in_per_group)


def transformed_bytes(spec, threads=None) -> int:
    """Bytes of the weight's spectra and of the threads' buffers (one group's input
    spectra, their weighted sum and a product, a real block and the inverse's output)."""
    plan = plan_for(spec)
    threads = numba.get_num_threads() if threads is None else threads
    spectrum = plan.spectrum_points * 16
    weight = spec.out_channels * spec.in_per_group * spectrum
    per_thread = (spec.in_per_group + 2) * spectrum + 2 * 8 * math.prod(plan.shape)
    return weight + threads * per_thread


def fft_flops(spec) -> float:
    """Rough FLOPs of the FFT path: the transforms (5 n log2 n per complex transform,
    half for real ones), the spectral products (8 per complex multiply-add) and the
    numpy calls' fixed cost (``CALL_FLOPS`` each)."""
    plan = plan_for(spec)
    size = math.prod(plan.shape)
    blocks = math.prod(plan.counts)
    transforms = blocks * spec.batch * (spec.in_channels + spec.out_channels) + spec.out_channels * spec.in_per_group
    products = blocks * spec.batch * spec.out_channels * spec.in_per_group * size / 2
    calls = blocks * _calls_per_block(spec)
    return 2.5 * size * math.log2(size) * transforms + 8 * products + CALL_FLOPS * calls


def supports(spec) -> str | None:
    """None if the FFT kernel computes ``spec``, else why not."""
    needed = transformed_bytes(spec)
    if needed > MEMORY_BYTES:
        return (f"its transforms would take {needed / 2**30:.1f} GiB (the FFT path takes "
                f"at most {MEMORY_BYTES / 2**30:.0f} GiB: few channels, large kernels)")
    return None


def _block_ranges(plan, out_size):
    """Each block's output start and stop per axis, in raster order."""
    per_axis = [[(start, min(start + b, o)) for start in range(0, o, b)]
                for b, o in zip(plan.block, out_size)]
    return list(itertools.product(*per_axis))


class _Workspace:
    """One thread's buffers: a real block, zero outside the box ``dirty`` (so a block's
    buffer holds its window and zeros, whatever the thread ran before), and the weighted
    sum of one group's input spectra."""

    def __init__(self, plan):
        self.real = np.zeros(plan.shape)
        spectrum = plan.shape[:2] + (plan.shape[2] // 2 + 1,)
        self.acc = np.empty(spectrum, np.complex128)
        self.product = np.empty(spectrum, np.complex128)
        self.dirty = (0, 0, 0)


def _window(block, spec):
    """The input slices a block reads and where they go in its real buffer (the rest
    of its ``box`` is padding, zero), per axis."""
    src, dst, box = [], [], []
    for (o0, o1), stride, span, pad, size in zip(block, spec.stride, spec.span, spec.padding,
                                                spec.in_size):
        start, stop = o0 * stride - pad, (o1 - 1) * stride + span - pad
        first = min(max(start, 0), size)
        last = max(min(stop, size), first)  # an empty slice where the window is all padding
        src.append(slice(first, last))
        dst.append(slice(first - start, last - start))
        box.append(stop - start)
    return tuple(src), tuple(dst), tuple(box)


def forward_fft(x, w6, bias, out, spec):
    """x: (N, Cin, D, H, W); w6: (G, Cout/G, Cin/G, kD, kH, kW), cross-correlation
    orientation; bias: (Cout,); out: (N, Cout, Do, Ho, Wo), written in full."""
    from scipy import fft as sp_fft

    plan = plan_for(spec)
    groups, cout_g, cin_g = w6.shape[:3]
    threads = numba.get_num_threads()
    dilated = np.zeros(w6.shape[:3] + plan.shape, np.float64)
    dilated[(...,) + tuple(slice(0, k, d) for k, d in zip(spec.span, spec.dilation))] = w6
    weight_spectra = np.conjugate(sp_fft.rfftn(dilated, axes=(-3, -2, -1), workers=threads))
    del dilated
    items = [(block, n, g) for block in _block_ranges(plan, spec.out_size)
             for n in range(x.shape[0]) for g in range(groups)]
    # Fewer items than threads: one at a time, each transform on all threads. scipy.fft
    # computes a transform the same way on any number of workers, so the bits agree.
    pool_size = threads if len(items) >= threads else 1
    workers = 1 if pool_size > 1 else threads
    stride = spec.stride

    def run(item, ws):
        block, n, g = item
        src, dst, box = _window(block, spec)
        if ws.dirty != box or any(d.stop - d.start != b for d, b in zip(dst, box)):
            ws.real[tuple(slice(0, d) for d in ws.dirty)] = 0
            ws.dirty = box
        spectra = []
        for ci in range(g * cin_g, (g + 1) * cin_g):
            ws.real[dst] = x[(n, ci) + src]
            spectra.append(sp_fft.rfftn(ws.real, workers=workers))
        kept = tuple(slice(0, (o1 - o0 - 1) * s + 1, s) for (o0, o1), s in zip(block, stride))
        target = tuple(slice(o0, o1) for o0, o1 in block)
        for co in range(cout_g):
            np.multiply(spectra[0], weight_spectra[g, co, 0], out=ws.acc)
            for ci in range(1, cin_g):
                np.multiply(spectra[ci], weight_spectra[g, co, ci], out=ws.product)
                ws.acc += ws.product
            # In place along the first two axes, then the real inverse along the last.
            mixed = sp_fft.ifftn(ws.acc, axes=(0, 1), workers=workers, overwrite_x=True)
            y = sp_fft.irfft(mixed, plan.shape[2], axis=2, workers=workers)
            channel = g * cout_g + co
            np.add(y[kept], bias[channel], out=out[(n, channel) + target])

    def run_share(share):
        ws = _Workspace(plan)
        for item in items[share::pool_size]:
            run(item, ws)

    if pool_size == 1:
        run_share(0)
    else:
        with ThreadPoolExecutor(pool_size, thread_name_prefix="numbaconv-fft") as pool:
            list(pool.map(run_share, range(pool_size)))


def launch_forward(run, spec, x, w6, bias, out):
    run(x, w6, bias, out, spec)


register(name="fft", computes=FORWARD, function=forward_fft,
         examples=lambda dtype: example_arrays(dtype, 5, 6, 1, 5),
         launch=launch_forward, bitwise=None, parallel=False, supports=supports,
         direct_sums=False,
         description="FFT (scipy.fft, float64) in blocks: large kernels on few channels")
