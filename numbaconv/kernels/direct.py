"""The generic direct kernel: any kernel size, stride, padding, dilation and groups.

One ``prange`` iteration owns the output plane ``out[n, block of Cout/G, od]``: no two
iterations write the same element, and each element is summed in one fixed order
(input channel, then kd, kh, kw), so the result does not depend on the thread count.

Inside an iteration, the input planes it needs are copied once into a zero-bordered
buffer (one flat plane of about ``Hp*Wp`` per input channel and kd tap), so that every tap
(kh, kw) is a constant offset into a flat plane and no index can go negative. Output
positions are walked in one run over the flat padded plane (the planes are split by H
and W stride phase, so that consecutive output rows read consecutive rows of a phase;
the margin columns of each row are computed and thrown away). The run is cut into
chunks whose accumulators stay in L1, and the innermost loop is an axpy over contiguous
positions, which LLVM vectorises.
"""
import numpy as np
from numba import njit, prange

from .geometry import unpack
from .loops import copy_every, copy_row, split_runs
from .registry import FORWARD, example_arrays, readonly, register

#: Output channels that share one pass over an input slice.
CHANNEL_BLOCK = 8
#: Output positions per accumulator chunk: CHANNEL_BLOCK * CHUNK * 4 bytes = 16 KiB.
CHUNK = 512


@njit(cache=True, inline="always")
def run_length(out_h, out_w, geo):
    """Accumulator positions of one output plane: the planes are split by stride phase,
    so that output row ``oh`` of a tap reads row ``oh`` of its phase (plus the tap's
    offset), and position ``oh * row_pitch + ow`` reads the input at that position plus
    the tap's offset: all rows are one run over the flat plane, the margin columns of
    each row included (computed and thrown away), at every stride."""
    return (out_h - 1) * geo.row_pitch + out_w


@njit(cache=True, inline="always")
def split_item(item, groups, inner):
    """Work item ``item`` of ``N * groups * inner`` as (n, g, i), i fastest: every
    kernel's items are (batch, group, something inside a group)."""
    i = item % inner
    rest = item // inner
    return rest // groups, rest % groups, i


@njit(cache=True, inline="always")
def tap_offset(th, tw, geo):
    """Offset of kernel tap (kh=th, kw=tw) within a padded, phase-split plane: the tap
    reads the phase ``((kh*dH) % sH, (kw*dW) % sW)`` from row ``(kh*dH) // sH`` and
    column ``(kw*dW) // sW`` on."""
    row = th * geo.dilation_h
    col = tw * geo.dilation_w
    phase = (row % geo.stride_h) * geo.stride_w + col % geo.stride_w
    return (phase * geo.phase_h + row // geo.stride_h) * geo.row_pitch + col // geo.stride_w


@njit(cache=True, inline="always")
def depth_taps(od, geo, depth):
    """Input depth index of each kd tap for output depth ``od``; -1 outside the input."""
    index = np.empty(geo.kernel_d, np.int64)
    for t in range(geo.kernel_d):
        z = od * geo.stride_d + t * geo.dilation_d - geo.pad_d
        index[t] = z if 0 <= z < depth else -1
    return index


@njit(cache=True, inline="always")
def store_tile(tile, out, bias, n, g, od, co0, cout_g, pos0, valid, acc_pitch):
    """out[n, g*cout_g + co0 + c, od] at accumulator positions pos0 .. pos0+valid-1
    (row pitch ``acc_pitch``, the geometry's ``row_pitch``; margin columns dropped) =
    tile[c, :valid] + bias."""
    out_w = out.shape[4]
    oh0 = pos0 // acc_pitch
    ow0 = pos0 - oh0 * acc_pitch
    for c in range(min(tile.shape[0], cout_g - co0)):
        co = g * cout_g + co0 + c
        b = bias[co]
        dst = out[n, co, od]
        src = tile[c]
        oh = oh0
        ow = ow0
        j = 0
        while j < valid:  # one row segment at a time, each a contiguous copy
            seg = min(valid - j, acc_pitch - ow)
            if ow < out_w:
                row = dst[oh, ow:min(out_w, ow + seg)]
                for k in range(row.shape[0]):
                    row[k] = src[j + k] + b
            j += seg
            ow = 0
            oh += 1


# Called, not inlined: every direct, blocked and weight-gradient kernel copies its planes
# here, and one compiled copy serves them all. A cold first backward (the serial weight
# gradient, after the forward compiled this) went from 3.35-3.44 to 2.93-3.18 s
# (``bench --cold``, blocked 16->16 on 32^3, Zen 4, 2026-12-05); one call per plane
# costs nothing measurable (kernels A/B within noise).
@njit(cache=True, inline="always")
def split_row(src_row, dst, first_phase, phase_step, phase_w, pad_w):
    """The padded row ``src_row`` (input width W, ``pad_w`` zeros each side) into its
    two W-stride phases: padded column ``p + 2 * k`` to ``dst[first_phase + p *
    phase_step + k]`` for ``k < phase_w``, zeros where the column is padding. The even
    input columns go to one phase and the odd to the other in one loop
    (``loops.split_runs``), which LLVM vectorises; a stride-2 copy per phase it loads
    element by element. Zen 4, 2026-12-07, float32, the planes of 16-32 channels on
    48^3 (k3 s2 p1) copied single-threaded, ns per value, two processes each, per-phase
    copies vs split rows: 0.85-1.32 vs 0.53-0.81; AVX2 code 1.43-1.91 vs 0.55-0.87."""
    width = src_row.shape[0]
    # Input column 2m is padded column 2m + pad_w: phase pad_w % 2, index m + pad_w // 2;
    # input column 2m + 1 the other phase, index m + (pad_w + 1) // 2.
    even_at = first_phase + (pad_w % 2) * phase_step
    odd_at = first_phase + ((pad_w + 1) % 2) * phase_step
    even_first, odd_first = pad_w // 2, (pad_w + 1) // 2
    # Input columns that land inside both phase rows (the rest lie past phase_w).
    count = max(0, min(width, 2 * (phase_w - even_first), 2 * (phase_w - odd_first) + 1))
    evens = dst[even_at:even_at + phase_w]
    odds = dst[odd_at:odd_at + phase_w]
    for k in range(min(even_first, phase_w)):
        evens[k] = 0
    for k in range(min(odd_first, phase_w)):
        odds[k] = 0
    if count > 0:
        split_runs(evens[even_first:], odds[odd_first:], src_row, np.uint64(0), np.uint64(0),
                   np.uint64(1), count)
    for k in range(min(phase_w, even_first + (count + 1) // 2), phase_w):
        evens[k] = 0
    for k in range(min(phase_w, odd_first + count // 2), phase_w):
        odds[k] = 0


@njit(cache=True)
def fill_padded_planes(x, n, c0, channels, depth_index, buf, geo):
    """Copy ``x[n, c0 + c, depth_index[t]]`` into ``buf[c, t]``: zero-bordered and split
    by stride phase.

    Padded row ``y``, column ``i`` lands in phase ``(y % stride_h, i % stride_w)`` at
    row ``y // stride_h``, column ``i // stride_w`` (``phase_h`` rows of ``row_pitch``
    per phase), so that the rows and columns one tap reads at a stride are contiguous.
    Taps whose depth index is -1 (outside the input) are left as zeros.
    """
    height, width = x.shape[3], x.shape[4]
    pad_h, pad_w, stride_h, stride_w = geo.pad_h, geo.pad_w, geo.stride_h, geo.stride_w
    phase_w, phase_h, row_pitch = geo.phase_w, geo.phase_h, geo.row_pitch
    for c in range(channels):
        for t in range(depth_index.shape[0]):
            z = depth_index[t]
            dst = buf[c, t]
            if z < 0:
                dst[:] = 0
                continue
            src = x[n, c0 + c, z]
            for y in range(phase_h * stride_h):  # every row of every phase, padding included
                iy = y - pad_h
                first_phase = ((y % stride_h) * stride_w * phase_h + y // stride_h) * row_pitch
                if stride_w == 2 and 0 <= iy < height:
                    split_row(src[iy], dst, first_phase, phase_h * row_pitch, phase_w, pad_w)
                    continue
                for phase in range(stride_w):
                    at = first_phase + phase * phase_h * row_pitch
                    row = dst[at:at + phase_w]
                    if iy < 0 or iy >= height:
                        row[:] = 0
                        continue
                    # padded column phase + k * stride_w is input column i, for k in
                    # [first, last): zeros before and after.
                    first = min(phase_w, (pad_w - phase + stride_w - 1) // stride_w)
                    last = max(first, min(phase_w, (width - 1 + pad_w - phase) // stride_w + 1))
                    row[:first] = 0
                    row[last:] = 0
                    start = phase + first * stride_w - pad_w
                    src_row = src[iy]
                    if stride_w == 1:  # a contiguous copy, kept apart so it vectorises
                        copy_row(row[first:], src_row[start:start + last - first])
                    else:
                        copy_every(row[first:last], src_row[start:], stride_w)


@njit(cache=True, inline="always")
def axpy_block(acc, taps, xs):
    """acc[c, :len(xs)] += taps[c] * xs for every c < len(taps)."""
    m = xs.shape[0]
    for c in range(taps.shape[0]):
        wv = taps[c]
        a = acc[c]
        for j in range(m):
            a[j] += wv * xs[j]


@njit(cache=True, inline="always")
def item_count(x, w, out):
    """Number of independent work items: (n, group, channel block, output depth)."""
    groups, cout_g = w.shape[0], w.shape[1]
    blocks = (cout_g + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK
    return x.shape[0] * groups * blocks * out.shape[2]


@njit(cache=True, inline="always")
def item_buffers(x, w, geo):
    """Scratch space for one work item: (padded input planes, accumulators)."""
    acc = np.empty((min(CHANNEL_BLOCK, w.shape[1]), CHUNK), x.dtype)
    return np.empty((w.shape[2], geo.kernel_d, geo.plane_size), x.dtype), acc


@njit(cache=True, inline="always")
def forward_direct_item(x, w, bias, out, geo, item, planes, acc_space):
    """Compute work item ``item``: out[n, block of channels of group g, od], in full,
    using the scratch space from :func:`item_buffers`."""
    groups, cout_g, cin_g, kd_, kh_, kw_ = w.shape
    out_d, out_h, out_w = out.shape[2], out.shape[3], out.shape[4]
    positions = run_length(out_h, out_w, geo)
    blocks = (cout_g + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK

    n, g, inner = split_item(item, groups, blocks * out_d)
    block, od = inner // out_d, inner % out_d
    co0 = block * CHANNEL_BLOCK
    count = min(CHANNEL_BLOCK, cout_g - co0)

    fill_padded_planes(x, n, g * cin_g, cin_g, depth_taps(od, geo, x.shape[2]), planes, geo)
    acc = acc_space[:count]
    for q0 in range(0, positions, CHUNK):
        m = min(CHUNK, positions - q0)
        acc[:, :m] = 0
        for ci in range(cin_g):
            for t in range(kd_):  # a tap outside the input in depth reads zeros
                plane = planes[ci, t]
                for th in range(kh_):
                    for tw in range(kw_):
                        start = tap_offset(th, tw, geo) + q0
                        axpy_block(acc, w[g, co0:co0 + count, ci, t, th, tw], plane[start:start + m])
        store_tile(acc, out, bias, n, g, od, co0, cout_g, q0, m, geo.row_pitch)


# One loop nest, two drivers: the serial one avoids waking the thread pool for tiny
# convolutions, where that costs more than the work.
@njit(parallel=True, cache=True, nogil=True, fastmath={"contract"})
def forward_direct(x, w, bias, out, geometry):
    """out = conv3d(x, w) + bias, cross-correlation, in parallel over work items.

    x: (N, Cin, D, H, W); w: (G, Cout/G, Cin/G, kD, kH, kW); bias: (Cout,);
    out: (N, Cout, Do, Ho, Wo), written in full. All C-contiguous, one float dtype.
    geometry: the convolution's :class:`~numbaconv.kernels.geometry.Geometry`, packed.
    """
    geo = unpack(geometry)
    for item in prange(item_count(x, w, out)):
        planes, acc = item_buffers(x, w, geo)
        forward_direct_item(x, w, bias, out, geo, item, planes, acc)


@njit(cache=True, nogil=True, fastmath={"contract"})
def forward_direct_serial(x, w, bias, out, geometry):
    """:func:`forward_direct` on the calling thread."""
    geo = unpack(geometry)
    planes, acc = item_buffers(x, w, geo)
    for item in range(item_count(x, w, out)):
        forward_direct_item(x, w, bias, out, geo, item, planes, acc)


@njit(cache=True, nogil=True, fastmath={"contract"})
def forward_tiny(x, w, bias, out, geometry):
    """:func:`forward_direct` for tiny convolutions, one output element at a time, with
    no scratch buffers (which cost more than the arithmetic at this size).

    Each element gets the same fused multiply-adds in the same order as in the direct
    kernel, padded positions included as zeros, so the two agree bitwise.
    """
    geo = unpack(geometry)
    n_batch, _, depth, height, width = x.shape
    groups, cout_g, cin_g, kd_, kh_, kw_ = w.shape
    out_d, out_h, out_w = out.shape[2], out.shape[3], out.shape[4]
    sd, sh, sw, pd, ph, pw = geo.stride_d, geo.stride_h, geo.stride_w, geo.pad_d, geo.pad_h, geo.pad_w
    dd, dh, dw = geo.dilation_d, geo.dilation_h, geo.dilation_w
    acc = np.zeros(out_w, x.dtype)
    zero = acc[0]
    for n in range(n_batch):
        for g in range(groups):
            for co in range(cout_g):
                for od in range(out_d):
                    for oh in range(out_h):
                        acc[:] = 0
                        for ci in range(cin_g):
                            channel = x[n, g * cin_g + ci]
                            for t in range(kd_):
                                z = od * sd + t * dd - pd
                                for th in range(kh_):
                                    y = oh * sh + th * dh - ph
                                    inside = 0 <= y < height and 0 <= z < depth
                                    for tw in range(kw_):
                                        wv = w[g, co, ci, t, th, tw]
                                        for ow in range(out_w):
                                            i = ow * sw + tw * dw - pw
                                            v = channel[z, y, i] if inside and 0 <= i < width else zero
                                            acc[ow] += wv * v
                        co_all = g * cout_g + co
                        for ow in range(out_w):
                            out[n, co_all, od, oh, ow] = acc[ow] + bias[co_all]


# ---- Declarations -----------------------------------------------------------------------
def launch_direct(run, spec, x, w6, bias, out):
    """The direct kernels take the operands as they are."""
    run(readonly(x), readonly(w6), readonly(bias), out, spec.kernel_geometry)


def direct_examples(dtype):
    return example_arrays(dtype, 5, 6, 1, 5)


register(name="direct", computes=FORWARD, function=forward_direct, examples=direct_examples,
         launch=launch_direct, plane_memory=True, serial="direct_serial",
         description="generic direct kernel: 8 channels x 512 positions in L1, any configuration")
register(name="direct_serial", computes=FORWARD, function=forward_direct_serial,
         examples=direct_examples, launch=launch_direct, parallel=False, plane_memory=True,
         description="the direct kernel on the calling thread (no thread-pool wake-up)")
register(name="tiny", computes=FORWARD, function=forward_tiny, examples=direct_examples,
         launch=launch_direct, parallel=False,
         description="one output row at a time, no scratch buffers (tiny convolutions)")
