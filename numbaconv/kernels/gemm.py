"""The GEMM path: bounded im2col slabs, then BLAS (``np.dot`` inside njit).

One ``prange`` iteration owns the output positions ``[s0, s0 + S)`` (flattened over
Do*Ho*Wo) of one (n, group): it gathers the input patches of those positions into a
thread-local ``(Cin/G*kD*kH*kW, S)`` slab and multiplies it by the group's weight matrix
with BLAS. The slab size is bounded (``SLAB_BYTES``), so the memory beyond input,
weight and output is at most ``threads * SLAB_BYTES``. BLAS must run single-threaded
here (the dispatcher arranges it), or its threads would fight numba's.

BLAS sums in its own order, so this path agrees with the direct kernels to rounding,
not bitwise; its own result does not depend on the thread count.
"""
import math

import numpy as np
from numba import njit, prange

from .blas import product_nt_add, product_tn, product_tn_add
from .direct import split_item
from .geometry import EXAMPLE, unpack
from .loops import (add_matrix, copy_matrix, copy_row, copy_runs_every, fill_matrix, split_run,
                    split_runs)
from .registry import (FORWARD, WEIGHT_GRAD, called_directly, example_arrays, in_python, readonly,
                       register)

#: Upper bound on one im2col slab, in bytes.
SLAB_BYTES = 4 << 20
#: Output channels per group up to which the weight gradient's product is taken
#: transposed (see ``weight_grad_gemm``).
NARROW_GRAD_ROWS = 64
#: Fixed number of partial sums in the weight gradient (independent of the thread
#: count, so the result is the same at every thread count).
WEIGHT_GRAD_CHUNKS = 16


@njit(cache=True, inline="always")
def channels_are_columns(x_shape, out_shape, geo):
    """Whether the layer's im2col matrix is its input channels as they are (pointwise,
    unpadded, stride 1: each output position reads the input at the same position)."""
    return (geo.kernel_d * geo.kernel_h * geo.kernel_w == 1 and geo.stride_d == 1
            and geo.stride_h == 1 and geo.stride_w == 1 and geo.pad_d == 0 and geo.pad_h == 0
            and geo.pad_w == 0 and out_shape[2] == x_shape[2] and out_shape[3] == x_shape[3]
            and out_shape[4] == x_shape[4])


#: BLAS's INTEGER (scipy's LP64 BLAS, which numba's ``numba_xxgemm`` calls after casting
#: every size and leading dimension to it): a larger one would wrap around.
BLAS_MAX_INT = 2**31 - 1


@njit(cache=True, inline="always")
def planes_are_columns(x_shape, out_shape, geo):
    """Whether every tap of the layer moves along depth only (kernel 1 x 1 in H and W,
    stride 1 and no padding there): then each (input channel, tap) row of the im2col
    matrix, over one output plane, is an input plane as it is, and BLAS reads it in
    place (:func:`_forward_depth_taps`, :func:`weight_grad_gemm`'s plane products).
    Not where a channel's volume, the planes' leading dimension, exceeds BLAS's integer
    (the im2col path's slabs are bounded)."""
    return (geo.kernel_h == 1 and geo.kernel_w == 1 and geo.stride_h == 1 and geo.stride_w == 1
            and geo.pad_h == 0 and geo.pad_w == 0 and out_shape[3] == x_shape[3]
            and out_shape[4] == x_shape[4]
            and x_shape[2] * x_shape[3] * x_shape[4] <= BLAS_MAX_INT
            and out_shape[2] * out_shape[3] * out_shape[4] <= BLAS_MAX_INT)


def forward_depth_taps(spec) -> bool:
    """Whether :func:`forward_gemm` takes ``spec`` through :func:`_forward_depth_taps`:
    taps along depth only, more than one (a pointwise layer's planes are better read as
    one slab of many positions: 16 -> 64 on 48^3 2.8 ms in slabs, 4.7 by planes), and not
    a layer on few positions, which takes row blocks."""
    return (spec.kernel[0] > 1 and forward_row_blocks(spec) == 1
            and in_python(planes_are_columns)(spec.in_shape, spec.out_shape, spec.geometry))


def weight_grad_depth_taps(spec) -> bool:
    """Whether :func:`weight_grad_gemm` takes ``spec`` through its depth-tap products
    (:func:`planes_are_columns`, unless the layer takes channel blocks)."""
    return (not weight_grad_block_channels(spec)
            and in_python(planes_are_columns)(spec.in_shape, spec.out_shape, spec.geometry))


@njit(cache=True, inline="always")
def term_columns(inside, base, run, width, stride):
    """[lo, hi): the k < ``run`` whose input column ``base + k * stride`` lies in [0,
    width) (none where the term's plane or row lies outside, ``inside`` False), found
    without a loop."""
    if not inside:
        return 0, 0
    if stride == 1:
        lo = min(run, -base) if base < 0 else 0
        return lo, max(lo, min(run, width - base))
    lo = min(run, (stride - 1 - base) // stride) if base < 0 else 0
    return lo, max(lo, min(run, (width - base + stride - 1) // stride))


@njit(cache=True, inline="always")
def slab_start(s0, out_h, out_w):
    """(od, oh, ow): the output position a slab starting at flat position ``s0`` begins
    at."""
    plane = out_h * out_w
    od = s0 // plane
    oh = (s0 - od * plane) // out_w
    return od, oh, s0 - od * plane - oh * out_w


@njit(cache=True, inline="always")
def next_row(od, oh, out_h):
    """(od, oh) of the output row after row ``oh`` of plane ``od``."""
    if oh + 1 == out_h:
        return od + 1, 0
    return od, oh + 1


@njit(cache=True, inline="always")
def im2col_pairs(x_flat, n, c0, cin_g, geo, x_shape, out_shape, s0, size, col, col_flat):
    """:func:`im2col_slab` of a layer with kernel 2, stride 2 and no padding along W (before
    or after: ``2 * out_w <= width``): the two taps of an input row read its even and
    its odd columns, each once, all inside, and the row splits straight into their two
    slab rows (``loops.split_run``). Channel by channel, each channel's input read in
    order: with every channel's rows in the inner loop (as :func:`im2col_slab` does, to
    share a short run's bounds among channels), 32 -> 64 on 48^3 read 128 scattered
    rows per output row and ran at 1.1 ns per value (single-threaded, Zen 4), its 14 MB
    input beyond L2."""
    _, channels, depth, height, width = x_shape
    out_h, out_w = out_shape[3], out_shape[4]
    kd_, kh_ = geo.kernel_d, geo.kernel_h
    taps = kd_ * kh_ * 2
    row_length = np.uint64(col.shape[1])
    for ci in range(cin_g):
        channel = (n * channels + c0 + ci) * depth
        od, oh, ow0 = slab_start(s0, out_h, out_w)
        j = 0
        while j < size:
            run = min(out_w - ow0, size - j)
            for t in range(kd_):
                z = od * geo.stride_d + t * geo.dilation_d - geo.pad_d
                for th in range(kh_):
                    y = oh * geo.stride_h + th * geo.dilation_h - geo.pad_h
                    term = ci * taps + (t * kh_ + th) * 2
                    if 0 <= z < depth and 0 <= y < height:
                        at = np.uint64(term) * row_length + np.uint64(j)
                        split_run(col_flat, at, at + row_length, x_flat,
                                  np.uint64(((channel + z) * height + y) * width + ow0 * 2),
                                  np.uint64(run))
                    else:
                        for k in range(run):
                            col[term, j + k] = 0
                            col[term + 1, j + k] = 0
            j += run
            ow0 = 0
            od, oh = next_row(od, oh, out_h)


@njit(cache=True, inline="always")
def im2col_slab(x, n, c0, cin_g, geo, out_shape, s0, size, col):
    """col[r, j] = input value under kernel term r for output position s0 + j, for j <
    ``size`` (r runs over (ci, kd, kh, kw); zero where the term falls into the
    padding). x: C-contiguous; col: C-contiguous, ``size`` columns or more (a slab
    buffer whose last slab is shorter is passed whole)."""
    _, channels, depth, height, width = x.shape
    out_h, out_w = out_shape[3], out_shape[4]
    sd, sh, sw, pd, ph, pw = geo.stride_d, geo.stride_h, geo.stride_w, geo.pad_d, geo.pad_h, geo.pad_w
    dd, dh, dw = geo.dilation_d, geo.dilation_h, geo.dilation_w
    kd_, kh_, kw_ = geo.kernel_d, geo.kernel_h, geo.kernel_w
    if channels_are_columns(x.shape, out_shape, geo):
        # Pointwise, unpadded (padding after included: the output has the input's
        # shape), stride 1: a slab row is a contiguous run of an input channel. Row by
        # row, as below, it cost 3-5 ns per element on 6-wide rows (512 -> 256 channels
        # on 6^3: 1.17 ms single-threaded against 0.56 for its sgemm).
        channels = x.reshape((x.shape[0] * x.shape[1], depth * height * width))
        for ci in range(cin_g):
            copy_row(col[ci], channels[n * x.shape[1] + c0 + ci, s0:s0 + size])
        return
    # Output rows outermost: the slab's first position is split into (od, oh, ow) once,
    # then each row's run is one copy per kernel term, its bounds found without a
    # division (per-run divisions cost more than the copies on 6-12 wide rows:
    # 256 -> 256 k3 on 12^3 spent half its time here). The copies go through flat
    # views at unsigned offsets (``copy_runs_every``); through 2-D views of run-time
    # strides they ran scalar. Zen 4, 2026-12-07, float32, 2 threads, ms, medians of 5
    # processes alternating, 2-D views vs flat: weight gradients of (1, 3, 3) 64 ch on 8
    # x 56^2 15.9 vs 13.2, dilation 2 64 ch on 2 x 32^3 120.7 vs 103.0, k2 64 ch on 48^3
    # 61.4 vs 52.1; strided layers and 256-512 ch on 6^3 within noise (0.93-1.03). AVX2
    # code (4 processes): (1, 3, 3) 20.2 vs 18.4, 256 ch on 6^3 forward 7.1 vs 6.4. The
    # zero fills stay on the 2-D views: flat, they cost the 6^3 layers 5-10%.
    x_flat = x.reshape(x.size)
    col_flat = col.reshape(col.size)
    taps = kd_ * kh_ * kw_
    row_length = np.uint64(col.shape[1])
    channel_rows = np.uint64(taps) * row_length  # from a channel's row of a term to the next's
    channel_values = np.uint64(depth * height * width)
    od, oh, ow0 = slab_start(s0, out_h, out_w)
    # Stride 2 along W: each input row is split into its even and its odd columns
    # once (all channels), and every tap copies its run from one of them at stride 1;
    # LLVM loads a stride-2 copy element by element. Zen 4, 2026-12-07, float32, the
    # whole im2col single-threaded, ns per value, three processes each, stride-2
    # copies vs split rows: 32 -> 64 k3 s2 on 48^3 0.68-0.69 vs 0.37-0.45, 64 -> 128
    # k3 s2 on 24^3 0.56 vs 0.48, 32 -> 64 k2 s2 on 48^3 0.84-1.03 vs 0.60-0.72; AVX2
    # code 0.71-0.99 vs 0.42, 0.71-0.73 vs 0.54-0.56, 0.73-1.9 vs 0.72-0.85.
    split = sw == 2
    # Kernel 2, stride 2, no padding along W (a k2 s2 downsampling layer, the input
    # gradient of a k2 s2 decoder layer): the two taps of a row read its even and its
    # odd columns, each once and all inside (no padding after the row either, which
    # the output width tells), so a row splits straight into their two slab rows.
    pairs = split and kw_ == 2 and dw == 1 and pw == 0 and 2 * out_w <= width
    if pairs:
        im2col_pairs(x_flat, n, c0, cin_g, geo, x.shape, out_shape, s0, size, col, col_flat)
        return
    half = (width + 1) // 2
    evens = np.empty(cin_g * half if split else 0, x.dtype)
    odds = np.empty(cin_g * half if split else 0, x.dtype)
    j = 0
    while j < size:
        run = min(out_w - ow0, size - j)
        for t in range(kd_):
            z = od * sd + t * dd - pd
            for th in range(kh_):
                y = oh * sh + th * dh - ph
                inside_zy = 0 <= z < depth and 0 <= y < height
                row_source = (((n * channels + c0) * depth + z) * height + y) * width
                if split and inside_zy:
                    split_runs(evens, odds, x_flat, np.uint64(row_source), channel_values,
                               np.uint64(cin_g), width)
                for tw in range(kw_):
                    base = ow0 * sw + tw * dw - pw
                    lo, hi = term_columns(inside_zy, base, run, width, sw)
                    term = (t * kh_ + th) * kw_ + tw
                    # This term's rows of every input channel at once, with no view per
                    # channel (a view and a slice assignment per channel cost more than
                    # its 6-12 element copy).
                    rows = col[term::taps]
                    for ci in range(cin_g):
                        for k in range(lo):
                            rows[ci, j + k] = 0
                        for k in range(hi, run):
                            rows[ci, j + k] = 0
                    if hi <= lo:
                        continue
                    first = np.uint64(term) * row_length + np.uint64(j + lo)
                    column = base + lo * sw  # of the input row, the first one copied
                    if split:
                        copy_runs_every(col_flat, first, channel_rows, odds if column % 2 else evens,
                                        np.uint64(column // 2), np.uint64(half), np.uint64(cin_g),
                                        np.uint64(hi - lo), 1)
                    else:
                        copy_runs_every(col_flat, first, channel_rows, x_flat, np.uint64(row_source + column),
                                        channel_values, np.uint64(cin_g), np.uint64(hi - lo), sw)
        j += run
        ow0 = 0
        od, oh = next_row(od, oh, out_h)


@njit(cache=True, inline="always")
def slab_col(x, out_shape, geo, groups, slabs, slab_positions, item):
    """Work item ``item`` = (n, group, slab): (n, g, s0, size, its im2col slab)."""
    positions = out_shape[2] * out_shape[3] * out_shape[4]
    cin_g = x.shape[1] // groups
    n, g, slab = split_item(item, groups, slabs)
    s0 = slab * slab_positions
    size = min(slab_positions, positions - s0)
    col = np.empty((cin_g * geo.kernel_d * geo.kernel_h * geo.kernel_w, size), x.dtype)
    im2col_slab(x, n, g * cin_g, cin_g, geo, out_shape, s0, size, col)
    return n, g, s0, size, col


#: Input-channel blocks of a whole im2col matrix filled in parallel (row blocks).
COLUMN_BLOCKS = 16


@njit(cache=True, inline="always")
def fill_columns(x, n, c0, cin_g, geo, out_shape, cols):
    """cols: the whole im2col matrix (Cin/G*kD*kH*kW, Do*Ho*Wo) of input channels c0 ..
    c0+cin_g of sample n, filled in parallel by blocks of input channels (each block is a
    contiguous band of rows)."""
    taps = geo.kernel_d * geo.kernel_h * geo.kernel_w
    positions = cols.shape[1]
    blocks = min(cin_g, COLUMN_BLOCKS)
    for block in prange(blocks):
        ci0 = block * cin_g // blocks
        ci1 = (block + 1) * cin_g // blocks
        im2col_slab(x, n, c0 + ci0, ci1 - ci0, geo, out_shape, 0, positions, cols[ci0 * taps:ci1 * taps])


@njit(cache=True, inline="always")
def forward_block_products(weights, columns, bias, out_rows, ng, groups, cout_g, row_blocks):
    """out_rows[ng*cout_g + m0 : ng*cout_g + m1] = weights' rows of the block @ columns
    + bias, one BLAS product per block of output channels, in parallel."""
    g = ng % groups
    for block in prange(row_blocks):
        m0 = block * cout_g // row_blocks
        m1 = (block + 1) * cout_g // row_blocks
        rows = out_rows[ng * cout_g + m0:ng * cout_g + m1]
        np.dot(weights[g * cout_g + m0:g * cout_g + m1], columns, rows)
        for c in range(m1 - m0):
            b = bias[g * cout_g + m0 + c]
            row = rows[c]
            for j in range(row.shape[0]):
                row[j] += b


@njit(cache=True, inline="always")
def _weight_grad_channel_blocks(x, grad_out, partial, geo, slab_positions, block_channels):
    """The channel-block mode of :func:`weight_grad_gemm`: one job per (group, block of
    ``block_channels`` input channels) owns the block's columns of the gradient,
    ``partial[0, g, :, rows]`` (rows: the block's channels x taps), and sums into it
    over the samples and the position slabs in order, one beta = 1 BLAS product each of
    grad_output's slab and the block's im2col slab (the input channels as they are for
    a pointwise, unpadded, stride-1 layer). The slab stays in cache between its copy and
    its product, and no partial sum is added up after."""
    n_batch = x.shape[0]
    groups, cout_g = partial.shape[1], partial.shape[2]
    cin_g = x.shape[1] // groups
    taps = geo.kernel_d * geo.kernel_h * geo.kernel_w
    blocks = (cin_g + block_channels - 1) // block_channels
    positions = grad_out.shape[2] * grad_out.shape[3] * grad_out.shape[4]
    grads = grad_out.reshape((n_batch, groups * cout_g, positions))
    pointwise = channels_are_columns(x.shape, grad_out.shape, geo)
    channels = x.reshape((n_batch * x.shape[1], x.shape[2] * x.shape[3] * x.shape[4]))
    for job in prange(groups * blocks):
        g, first = job // blocks, (job % blocks) * block_channels  # first: within the group
        c0 = g * cin_g + first
        count = min(block_channels, cin_g - first)
        dst = partial[0, g, :, first * taps:(first + count) * taps]
        fill_matrix(dst, 0)
        col = np.empty((0 if pointwise else count * taps, slab_positions), x.dtype)
        for n in range(n_batch):
            for s0 in range(0, positions, slab_positions):
                size = min(slab_positions, positions - s0)
                if pointwise:
                    rows = channels[n * x.shape[1] + c0:n * x.shape[1] + c0 + count, s0:s0 + size]
                else:
                    im2col_slab(x, n, c0, count, geo, grad_out.shape, s0, size, col)
                    rows = col[:, :size]
                product_nt_add(grads[n, g * cout_g:(g + 1) * cout_g, s0:s0 + size], rows, dst)


@njit(cache=True, inline="always")
def _forward_depth_taps(x, wmat, bias, out, geo):
    """:func:`forward_gemm` of a layer whose taps move along depth only
    (:func:`planes_are_columns`): each (sample, group, output depth) is the sum over the
    taps whose input plane lies inside of the tap's weight (Cout/G, Cin/G) times that
    plane (Cin/G, H*W), one BLAS call each (beta = 1 after the first) reading the plane
    in place and writing the output plane in place: no im2col slab, which copied every
    plane kD times."""
    n_batch = x.shape[0]
    groups, cout_g, reduction = wmat.shape
    kd_ = geo.kernel_d
    cin_g = reduction // kd_
    out_d = out.shape[2]
    plane = out.shape[3] * out.shape[4]  # = H * W
    planes = x.reshape((n_batch, x.shape[1], x.shape[2], plane))
    out_planes = out.reshape((n_batch, groups * cout_g, out_d, plane))
    # Each tap's weight as (Cin/G, Cout/G), which BLAS reads transposed (rows (ci, kd)).
    taps = np.empty((groups, kd_, cin_g, cout_g), x.dtype)
    for g in range(groups):
        for c in range(cout_g):
            for ci in range(cin_g):
                for t in range(kd_):
                    taps[g, t, ci, c] = wmat[g, c, ci * kd_ + t]
    for item in prange(n_batch * groups * out_d):
        n, g, od = split_item(item, groups, out_d)
        dst = out_planes[n, g * cout_g:(g + 1) * cout_g, od]
        started = False
        for t in range(kd_):
            z = od * geo.stride_d + t * geo.dilation_d - geo.pad_d
            if 0 <= z < x.shape[2]:
                src = planes[n, g * cin_g:(g + 1) * cin_g, z]
                if started:
                    product_tn_add(taps[g, t], src, dst)
                else:
                    product_tn(taps[g, t], src, dst)
                    started = True
        if not started:
            fill_matrix(dst, 0)
        for c in range(cout_g):
            b = bias[g * cout_g + c]
            row = dst[c]
            for j in range(plane):
                row[j] += b


@njit(parallel=True, cache=True, nogil=True)
def forward_gemm(x, wmat, bias, out, geometry, slab_positions, row_blocks):
    """out = conv3d(x, w) + bias via im2col slabs and BLAS.

    x: (N, Cin, D, H, W); wmat: (G, Cout/G, Cin/G*kD*kH*kW); bias: (Cout,);
    out: (N, Cout, Do, Ho, Wo), written in full; geo as in the direct kernels;
    slab_positions: output positions per slab. ``row_blocks`` > 1 (layers on few
    positions: :func:`forward_row_blocks`): for each (sample, group), the whole im2col
    matrix (the input channels as they are, for a pointwise, unpadded, stride-1 layer),
    then items are blocks of output rows over all positions, each one BLAS product of a
    block of the weight with it, written straight into ``out``.
    """
    geo = unpack(geometry)
    n_batch = x.shape[0]
    groups, cout_g, reduction = wmat.shape
    positions = out.shape[2] * out.shape[3] * out.shape[4]
    if row_blocks > 1:
        weights = wmat.reshape((groups * cout_g, reduction))
        out_rows = out.reshape((n_batch * groups * cout_g, positions))
        if channels_are_columns(x.shape, out.shape, geo):
            channels = x.reshape((n_batch * x.shape[1], positions))
            for ng in range(n_batch * groups):
                c0 = (ng // groups) * x.shape[1] + (ng % groups) * reduction
                forward_block_products(weights, channels[c0:c0 + reduction], bias, out_rows, ng,
                                       groups, cout_g, row_blocks)
        else:
            cin_g = x.shape[1] // groups
            cols = np.empty((reduction, positions), x.dtype)
            for ng in range(n_batch * groups):
                fill_columns(x, ng // groups, (ng % groups) * cin_g, cin_g, geo, out.shape, cols)
                forward_block_products(weights, cols, bias, out_rows, ng, groups, cout_g, row_blocks)
        return
    if geo.kernel_d > 1 and planes_are_columns(x.shape, out.shape, geo):
        _forward_depth_taps(x, wmat, bias, out, geo)
        return
    slabs = (positions + slab_positions - 1) // slab_positions
    out_flat = out.reshape((n_batch, groups, cout_g, positions))
    for item in prange(n_batch * groups * slabs):
        n, g, s0, size, col = slab_col(x, out.shape, geo, groups, slabs, slab_positions, item)
        result = np.dot(wmat[g], col)
        for c in range(cout_g):
            b = bias[g * cout_g + c]
            dst = out_flat[n, g, c, s0:s0 + size]
            for j in range(size):
                dst[j] = result[c, j] + b


@njit(parallel=True, cache=True, nogil=True)
def weight_grad_gemm(x, grad_out, partial, geometry, slab_positions, block_channels):
    """Weight gradient via im2col slabs and BLAS, summed in a fixed order.

    x: (N, Cin, D, H, W); grad_out: (N, Cout, Do, Ho, Wo); partial: (chunks, G, Cout/G,
    Cin/G*kD*kH*kW), written in full. ``block_channels`` > 0 (with one chunk; see
    :func:`weight_grad_block_channels`): jobs own blocks of input channels and sum
    over all positions themselves (:func:`_weight_grad_channel_blocks`). Otherwise one
    partial sum per chunk: the (n, group, slab) items (or output planes, for taps
    along depth only) are split into ``chunks`` fixed, contiguous ranges (independent of
    the thread count), and the caller adds the chunks up in order.
    """
    geo = unpack(geometry)
    n_batch = x.shape[0]
    chunks, groups, cout_g, reduction = partial.shape
    positions = grad_out.shape[2] * grad_out.shape[3] * grad_out.shape[4]
    if block_channels > 0:
        _weight_grad_channel_blocks(x, grad_out, partial, geo, slab_positions, block_channels)
        return
    if planes_are_columns(x.shape, grad_out.shape, geo):
        # Depth taps only (a (k, 1, 1) layer): each (sample, group, output depth) adds,
        # for every tap whose input plane lies inside, grad_output's plane (Cout/G, Ho*Wo)
        # times that input plane (Cin/G, H*W) transposed into the tap's block of the
        # partial, one BLAS call each, both read in place: no im2col matrix (which
        # copied every plane kD times). The partial is laid out [tap, cout, cin] here
        # (see launch_weight_grad).
        kd_ = geo.kernel_d
        taps = partial.reshape((chunks, groups, kd_, cout_g, reduction // kd_))
        plane = grad_out.shape[3] * grad_out.shape[4]  # = H * W
        planes = x.reshape((n_batch, x.shape[1], x.shape[2], plane))
        grads = grad_out.reshape((n_batch, groups * cout_g, grad_out.shape[2], plane))
        cin_g = x.shape[1] // groups
        total = n_batch * groups * grad_out.shape[2]
        for chunk in prange(chunks):
            chunk_taps = taps[chunk]
            for g in range(groups):
                for t in range(kd_):
                    fill_matrix(chunk_taps[g, t], 0)
            for item in range(chunk * total // chunks, (chunk + 1) * total // chunks):
                n, g, od = split_item(item, groups, grad_out.shape[2])
                grad = grads[n, g * cout_g:(g + 1) * cout_g, od]
                for t in range(kd_):
                    z = od * geo.stride_d + t * geo.dilation_d - geo.pad_d
                    if 0 <= z < x.shape[2]:
                        product_nt_add(grad, planes[n, g * cin_g:(g + 1) * cin_g, z],
                                       chunk_taps[g, t])
        return
    slabs = (positions + slab_positions - 1) // slab_positions
    total = n_batch * groups * slabs
    grad_flat = grad_out.reshape((n_batch, groups, cout_g, positions))
    for chunk in prange(chunks):
        # A chunk's first product for a group is stored, not added to zeros: deep layers
        # on small volumes have weight-sized partials of tens of MB and one item each.
        started = np.zeros(groups, np.bool_)
        for item in range(chunk * total // chunks, (chunk + 1) * total // chunks):
            n, g, s0, size, col = slab_col(x, grad_out.shape, geo, groups, slabs, slab_positions,
                                           item)
            grad = np.ascontiguousarray(grad_flat[n, g, :, s0:s0 + size])
            if cout_g <= NARROW_GRAD_ROWS:
                # BLAS runs a product with a short side 1.2-1.7x faster with that side
                # last (single-threaded sgemm, Zen 4: 32 x 864 x 1213 at 80 vs 47 GFLOP/s;
                # at 512 x 512 both run alike, and the transposed add would cost more).
                product = np.dot(col, grad.T).T
                if started[g]:
                    add_matrix(partial[chunk, g], product)
                else:
                    copy_matrix(partial[chunk, g], product)
            elif started[g]:
                add_matrix(partial[chunk, g], np.dot(grad, col.T))
            else:
                np.dot(grad, col.T, partial[chunk, g])
            started[g] = True
        for g in range(groups):
            if not started[g]:
                partial[chunk, g] = 0


# ---- Declarations -----------------------------------------------------------------------
#: Forward slabs per (sample, group) at least, where there are positions enough: small
#: volumes (a 6^3 decoder layer is 216 positions) would otherwise be one work item on one
#: thread. A function of the layer only, never of the thread count. (Not for the weight
#: gradient, whose every slab adds into a whole weight-sized partial sum.)
MIN_SLABS = 8
#: Positions per slab at least: BLAS's product is narrow below that (single-threaded
#: sgemm 6912 x 256 x N on Zen 4: 37 GFLOP/s at N = 27, 61 at 54, 73 at 108).
MIN_SLAB_POSITIONS = 64


def slab_positions(spec, min_slabs=1) -> int:
    """Output positions per im2col slab: the slab (reduction x positions) and BLAS's
    result (output channels x positions) each within ``SLAB_BYTES``, and at least
    ``min_slabs`` slabs per (sample, group) while each keeps >= ``MIN_SLAB_POSITIONS``."""
    rows = max(spec.reduction, spec.out_per_group)
    by_memory = SLAB_BYTES // (rows * spec.compute_dtype.itemsize)
    by_count = -(-math.prod(spec.out_size) // min_slabs)
    return max(16, min(by_memory, max(by_count, MIN_SLAB_POSITIONS)))


#: Bytes of the weight gradient's partial sums at most (each is a whole weight-sized
#: array): a 512 x 512 x 27 layer would otherwise add up to 16 copies of a 28 MB weight.
PARTIAL_BYTES = 64 << 20
#: Slabs per (sample, group) the weight gradient cuts at least (``slab_positions``):
#: few slabs left one thread with two of three partial sums. A/B, ms, 1 vs 8: 64->128 k3
#: s2 on 24^3 9.2 vs 7.2, 128->256 1x1x1 on 16^3 3.2 vs 1.8, 256->256 k3 on 12^3 52.3 vs
#: 51.9 (Zen 4, 2 threads).
WEIGHT_GRAD_MIN_SLABS = 8


def _partials_within_budget(spec) -> int:
    """Weight-sized partial sums that fit in ``PARTIAL_BYTES``."""
    return PARTIAL_BYTES // (spec.out_channels * spec.reduction * spec.compute_dtype.itemsize)


#: The weight gradient cuts fewer slabs than ``WEIGHT_GRAD_MIN_SLABS`` (and so fills fewer
#: partial sums) where that many weight-sized partials would exceed this (at least two
#: remain, for two threads). A/B, ms, 64 vs 16 MB: 384->384 k3 on 8^3 33 vs 27, 512->256
#: on 6^3 18 vs 13, 256->256 on 8^3 17 vs 12.3, on 6^3 7.5 vs 5.3; 256->256 on 12^3 48
#: vs 50 and 128->256 on 12^3 20 vs 21 (Zen 4, 2026-12-05, interleaved in one process).
WEIGHT_GRAD_SLAB_PARTIAL_BYTES = 16 << 20


def weight_grad_slab_positions(spec) -> int:
    """Positions per slab of the weight gradient: at least ``WEIGHT_GRAD_MIN_SLABS``
    slabs per (sample, group) (:func:`slab_positions`), unless the weight is so large
    that fewer partial sums than that fit in ``WEIGHT_GRAD_SLAB_PARTIAL_BYTES``: then
    one slab per partial sum (two at least), each a single product written straight into
    it, the slab bounded by the weight's size rather than ``SLAB_BYTES`` (the partial it
    fills is that large anyway).
    A partial filled by several slabs is written once per slab and added to through a
    temporary: 512 -> 512 k3 on 6^3 had 4 slabs of 64 positions in 2 partials of 28 MB."""
    itemsize = spec.compute_dtype.itemsize
    budget = max(2, WEIGHT_GRAD_SLAB_PARTIAL_BYTES // (spec.out_channels * spec.reduction * itemsize))
    if budget >= WEIGHT_GRAD_MIN_SLABS:
        return slab_positions(spec, WEIGHT_GRAD_MIN_SLABS)
    per_sample_group = max(1, budget // (spec.batch * spec.groups))
    group_weight_bytes = spec.out_per_group * spec.reduction * itemsize
    by_memory = max(SLAB_BYTES, group_weight_bytes) // (max(spec.reduction, spec.out_per_group) * itemsize)
    return max(16, min(by_memory, -(-math.prod(spec.out_size) // per_sample_group)))


def weight_grad_chunks(spec) -> int:
    """Partial sums of the weight gradient: ``WEIGHT_GRAD_CHUNKS``, or fewer when there
    are fewer work items (slabs, or output planes for the depth-tap products) or when
    more would exceed ``PARTIAL_BYTES``. A function of the layer only: the sums do not
    depend on the thread count."""
    if weight_grad_depth_taps(spec):
        items = spec.batch * spec.groups * spec.out_size[0]
    else:
        items = spec.batch * spec.groups * -(-math.prod(spec.out_size) // weight_grad_slab_positions(spec))
    return max(1, min(WEIGHT_GRAD_CHUNKS, items, _partials_within_budget(spec)))


#: Output rows per item, at least, where layers on few positions split rows (see below).
ROW_BLOCK_ROWS = 128
#: At most this many row blocks per (sample, group), and only up to this many positions.
MAX_ROW_BLOCKS = 16
ROW_BLOCK_POSITIONS = 4096
#: The whole im2col matrix of one (sample, group) at most, where it is not the input
#: channels as they are (row blocks need all positions at once): three slabs, so that
#: only layers the slab path cuts into 3 items or fewer take row blocks. A/B, ms,
#: forward / weight gradient, slabs vs row blocks (float32, Zen 4, 2 threads,
#: 2026-12-06): 512 -> 512 k3 on 6^3 (3 slabs) 24.8-26.6 vs 20.9-21.4 / 25.5-26.4 vs
#: 23.3-24.4; 256 -> 256 k3 on 6^3 6.1-6.4 vs 5.5-5.8; 256 -> 512 k3 s2 on 12^3
#: 12.1-13.0 vs 10.7-11.2; but 256 -> 256 k3 on 8^3 (4 slabs, 14 MB) 12.5-12.9 vs
#: 13.7-14.2 / 12.7-13.0 vs 14.2-17.1.
ROW_BLOCK_COLUMN_BYTES = 3 * SLAB_BYTES


def forward_row_blocks(spec) -> int:
    """Row blocks of :func:`forward_gemm` for ``spec``: 1 (position slabs) unless the
    layer is on few positions (:func:`_few_positions`) with at least two blocks of
    ``ROW_BLOCK_ROWS`` outputs per group. Position slabs of such layers are short, few,
    and each repacks the whole weight in BLAS: the input gradient's product of 512 ->
    512 k3 on 6^3 (13824 x 512 weight) took four 28 MB repacks for 216 positions, and
    its forward's three slabs of 75 positions left one of two threads idle a third of
    the time. A function of the layer only, as every item count."""
    if not _few_positions(spec):
        return 1
    return max(1, min(MAX_ROW_BLOCKS, spec.out_per_group // ROW_BLOCK_ROWS))


def _few_positions(spec) -> bool:
    """At most ``ROW_BLOCK_POSITIONS`` output positions per sample, and the whole im2col
    matrix of a (sample, group) is either the input channels as they are (a pointwise,
    unpadded, stride-1 layer) or within ``ROW_BLOCK_COLUMN_BYTES``."""
    positions = math.prod(spec.out_size)
    if positions > ROW_BLOCK_POSITIONS:
        return False
    if spec.kernel == (1, 1, 1) and spec.stride == (1, 1, 1) and spec.out_size == spec.in_size:
        return True
    return spec.reduction * positions * spec.compute_dtype.itemsize <= ROW_BLOCK_COLUMN_BYTES


def launch_forward(run, spec, x, w6, bias, out):
    wmat = w6.reshape(w6.shape[0], w6.shape[1], -1)
    run(readonly(x), readonly(wmat), readonly(bias), out, spec.kernel_geometry,
        slab_positions(spec, MIN_SLABS), forward_row_blocks(spec))


#: Rows of a channel block's tap products at most (its input channels x taps); the
#: blocks are smaller where a group would otherwise have fewer than
#: ``CHANNEL_BLOCK_JOBS`` of them. Zen 4, 2026-12-07, float32, 2 threads, ms, 11 runs
#: alternating in one process, 128 / 256 / 512 rows (with 1 MB slabs): the weight
#: gradient of k3 s2 64 -> 128 on 24^3 6.5 / 7.4 / 6.1, k3 256 on 6^3 6.1 / 5.6 / 5.7;
#: the scattered input gradient of k3 s2 64 -> 128 on 48^3 49 / 49 / 41, 64 -> 384 on
#: 12^3 1.85 / 1.98 / 1.70, 32 -> 64 on 48^3 13.2 / 13.3 / 13.2.
CHANNEL_BLOCK_ROWS = 512
#: Blocks (jobs) per group at least; fewer input channels than this per group: no blocks.
CHANNEL_BLOCK_JOBS = 4
#: A block's im2col slab, or slab of tap products, at most: it stays in L2 between its
#: copy and its product (512 KB and 2 MB: within 5% on the layers above).
CHANNEL_SLAB_BYTES = 1 << 20


def channel_block_size(spec) -> int:
    """Input channels per job of the channel-block modes (the weight gradient's and the
    scattered input gradient's); 0 (not those modes) where a group has fewer than
    ``CHANNEL_BLOCK_JOBS`` input channels. A function of the layer only."""
    if spec.in_per_group < CHANNEL_BLOCK_JOBS:
        return 0
    return max(1, min(CHANNEL_BLOCK_ROWS // math.prod(spec.kernel), spec.in_per_group // CHANNEL_BLOCK_JOBS))


def weight_grad_block_channels(spec) -> int:
    """Input channels per job of the weight gradient's channel-block mode on layers on
    few positions (:func:`_few_positions`, which took row blocks of the whole im2col
    matrix before), or 0 for the position slabs and their partial sums (or the
    depth-tap products). Zen 4, 2026-12-07, float32, 2 threads, ms, 7-11 runs
    alternating in one process, row blocks vs channel blocks: k3 s2 64 -> 128 on 24^3
    7.19 vs 5.73 (a later run: slabs 7.35 vs 6.1), 64 -> 384 on 12^3 2.46 vs 1.87; k3 256
    on 6^3 6.26 vs 5.08, 512 on 6^3 23.0 vs 18.3; pointwise 256 -> 128 on 12^3 0.83 vs
    0.66, 512 -> 256 on 6^3 0.41 vs 0.32. On more positions the slabs keep up or win:
    32 -> 64 k2 s2 on 48^3 5.3 vs 6.0-6.6, k3 s2 15.5 vs 15.3-16.4, 16 -> 64 7.7 vs 8.1."""
    return channel_block_size(spec) if _few_positions(spec) else 0


#: The scattered input gradient runs in channel blocks where grad_output has at most
#: this many channels per group: each block reads grad_output's slab again (128 -> 256
#: k3 s2 on 24^3: 18.9 ms with the whole products, 21.4 in blocks).
SCATTER_BLOCK_MAX_OUTPUTS = 128


def scatter_block_channels(spec) -> int:
    """Input channels per job of :func:`scatter_channel_blocks`, or 0 for the whole
    products and :func:`col2im`. Zen 4, 2026-12-07, float32, 2 threads, ms, 11 runs
    alternating in one process through the public functions (where the whole products
    also fault in fresh pages at every call), whole vs blocks: transposed k2 s2 128 -> 64
    on 24^3 (27 MB of products) 39.3 vs 23.3, 64 -> 32 on 24^3 (14 MB) 8.7 vs 5.7, 256
    -> 128 on 12^3 6.7 vs 6.2, k3 s2 64 -> 16 on 24^3 11.2 vs 7.8; the input gradient of
    k3 s2 16 -> 64 on 48^3 11.4 vs 8.2, 64 -> 128 on 24^3 6.2 vs 5.9, of k2 s2 32 -> 64
    on 48^3 8.7 vs 6.3. Called alone (the products' pages reused), k3 s2 32 -> 64 on
    48^3 (46 MB) 20.1 vs 14.6, 64 -> 128 on 48^3 82 vs 41, k2 s2 32 -> 64 on 96^3 94 vs
    50. Stride-1 layers alike: 128 on 13^3 14.9 vs 14.9, (3, 1, 1) 64 on 2 x 8 x 56^2
    15.2 vs 15.4."""
    return 0 if spec.out_per_group > SCATTER_BLOCK_MAX_OUTPUTS else channel_block_size(spec)


def weight_grad_channel_slab(spec, block_channels) -> int:
    """Positions per slab of the channel-block mode, in blocks of ``block_channels``: the
    block's im2col slab within ``CHANNEL_SLAB_BYTES`` (every position at once for a
    pointwise layer read in place)."""
    positions = math.prod(spec.out_size)
    if in_python(channels_are_columns)(spec.in_shape, spec.out_shape, spec.geometry):
        return positions
    rows = block_channels * math.prod(spec.kernel)
    return max(MIN_SLAB_POSITIONS, min(positions, CHANNEL_SLAB_BYTES // (rows * spec.compute_dtype.itemsize)))


def scatter_slab_planes(spec, block_channels) -> int:
    """Output planes per slab of :func:`scatter_channel_blocks` in blocks of
    ``block_channels``: a block's tap products within ``CHANNEL_SLAB_BYTES``, one plane
    at least."""
    rows = block_channels * math.prod(spec.kernel)
    plane = spec.out_size[1] * spec.out_size[2]
    return max(1, min(spec.out_size[0], CHANNEL_SLAB_BYTES // (rows * plane * spec.compute_dtype.itemsize)))


def launch_weight_grad(run, spec, x, grad_out):
    groups, cout_g = spec.groups, spec.out_per_group
    block_channels = weight_grad_block_channels(spec)
    if block_channels:
        chunks, slab = 1, weight_grad_channel_slab(spec, block_channels)
    else:
        chunks, slab = weight_grad_chunks(spec), weight_grad_slab_positions(spec)
    partial = np.empty((chunks, groups, cout_g, spec.reduction), spec.compute_dtype)
    run(readonly(x), readonly(grad_out), partial, spec.kernel_geometry, slab, block_channels)
    total = partial[0]
    for chunk in partial[1:]:  # a fixed order: the same sum at every thread count
        total += chunk
    if not block_channels and weight_grad_depth_taps(spec):  # laid out [tap, cout, cin] by the kernel
        kd = spec.kernel[0]
        total = total.reshape(groups, kd, cout_g, -1).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(total).reshape(spec.group_weight_shape)


# The numpy twins (kernels/gemm_numpy.py: the same BLAS calls, nothing to compile) serve
# ``auto``'s first calls while these compile.
_TWINS = "numbaconv.kernels.gemm_numpy:"
register(name="gemm", computes=FORWARD, function=forward_gemm,
         examples=lambda dtype: example_arrays(dtype, 5, 3, 1, 5) + (1, 1),
         launch=launch_forward, bitwise=None, serial="direct_serial", fallbacks=("gemm_numpy",),
         blas=True, description="im2col slabs and BLAS (pointwise layers, huge padding)")
register(name="gemm_numpy", computes=FORWARD, function=_TWINS + "forward_gemm",
         examples=lambda dtype: (), compiled=False, launch=launch_forward, parallel=False, bitwise=None,
         blas=True, description="the GEMM kernel in numpy, the same bits (no compile)")
register(name="wgrad_gemm", computes=WEIGHT_GRAD, function=weight_grad_gemm,
         examples=lambda dtype: example_arrays(dtype, 5, 5, 4) + (1, 1),
         launch=launch_weight_grad, bitwise=None, serial="wgrad_direct_serial",
         fallbacks=("wgrad_gemm_numpy",), blas=True,
         description="weight gradient via im2col slabs and BLAS, 16 partial sums in order")
register(name="wgrad_gemm_numpy", computes=WEIGHT_GRAD, function=_TWINS + "weight_grad_gemm",
         examples=lambda dtype: (), compiled=False, launch=launch_weight_grad, parallel=False, bitwise=None,
         blas=True, description="the GEMM weight gradient in numpy, the same bits (no compile)")


# ---- col2im: the scatter-add after the input gradient's product ---------------------------------
#: What ``col2im`` computes (called directly by ``numbaconv._backward``, outside ``auto``).
COL2IM = "col2im"


@njit(cache=True, inline="always")
def tap_range(in_length, out_length, stride, shift):
    """First and last output position ``o`` whose input position ``o*stride + shift``
    lies in ``[0, in_length)`` (last < first where none does)."""
    first = max(0, -(shift // stride))
    last = min(out_length - 1, (in_length - 1 - shift) // stride)
    return first, last


@njit(cache=True, inline="always")
def tap_window(shape, geo, t, od1, out_h, out_w):
    """Tap ``t``'s input shifts ``t*dilation - padding`` (d, h, w), and the output
    positions (first and last along d, h, w; below ``od1`` along d) whose input position
    ``o*stride + shift`` lies in an input of ``shape`` (D, H, W)."""
    depth, height, width = shape
    kh, kw = geo.kernel_h, geo.kernel_w
    td, th, tw = t // (kh * kw), (t // kw) % kh, t % kw
    shift_d = td * geo.dilation_d - geo.pad_d
    shift_h = th * geo.dilation_h - geo.pad_h
    shift_w = tw * geo.dilation_w - geo.pad_w
    z0, z1 = tap_range(depth, od1, geo.stride_d, shift_d)
    y0, y1 = tap_range(height, out_h, geo.stride_h, shift_h)
    x0, x1 = tap_range(width, out_w, geo.stride_w, shift_w)
    return shift_d, shift_h, shift_w, z0, z1, y0, y1, x0, x1


@njit(cache=True, inline="always")
def add_tap(src, dst, geo, t, od0, od1, out_h, out_w):
    """``dst`` (D, H, W) += tap ``t``'s products ``src`` (flat over the output planes
    ``od0 .. od1 - 1``, Ho*Wo each), each added at input position ``o*stride +
    t*dilation - padding`` where that lies in the input."""
    shift_d, shift_h, shift_w, z0, z1, y0, y1, x0, x1 = tap_window(dst.shape, geo, t, od1, out_h, out_w)
    if x1 < x0:
        return
    count = x1 - x0 + 1
    start = x0 * geo.stride_w + shift_w
    for oz in range(max(z0, od0), z1 + 1):
        plane = dst[oz * geo.stride_d + shift_d]
        for oy in range(y0, y1 + 1):
            row = src[((oz - od0) * out_h + oy) * out_w + x0:]
            seg = plane[oy * geo.stride_h + shift_h][start:start + (count - 1) * geo.stride_w + 1:geo.stride_w]
            for k in range(count):
                seg[k] += row[k]


@njit(cache=True, inline="always")
def add_interleaved(dst, first, second):
    """``dst[0::2] += first`` and ``dst[1::2] += second``, in one contiguous pass."""
    for k in range(first.shape[0]):
        dst[2 * k] += first[k]
        dst[2 * k + 1] += second[k]


@njit(cache=True, inline="always")
def add_tap_pair(first, second, dst, geo, t, od0, od1, out_h, out_w):
    """:func:`add_tap` of taps ``t`` and ``t + 1``, neighbours along W, with W stride 2
    and dilation 1: they reach alternate positions of the same rows, so they are added
    together in contiguous pairs (the two strided passes of :func:`add_tap` each store
    scalar by scalar: see :func:`add_taps`)."""
    shift_d, shift_h, shift_w, z0, z1, y0, y1, x0, x1 = tap_window(dst.shape, geo, t, od1, out_h, out_w)
    # The second tap's outputs: its input positions lie one further, so a0 <= x0 and
    # a1 <= x1. Both reach x0 .. a1 (positions 2*x0 + shift_w .. 2*a1 + shift_w + 1);
    # the second alone reaches the outputs before x0, the first alone those after a1.
    a0, a1 = tap_range(dst.shape[2], out_w, 2, shift_w + 1)
    for oz in range(max(z0, od0), z1 + 1):
        plane = dst[oz * geo.stride_d + shift_d]
        for oy in range(y0, y1 + 1):
            base = ((oz - od0) * out_h + oy) * out_w
            row = plane[oy * geo.stride_h + shift_h]
            if x0 <= a1:
                add_interleaved(row[2 * x0 + shift_w:2 * a1 + shift_w + 2], first[base + x0:base + a1 + 1],
                                second[base + x0:base + a1 + 1])
            for o in range(a0, min(x0, a1 + 1)):
                row[2 * o + shift_w + 1] += second[base + o]
            for o in range(max(x0, a1 + 1), x1 + 1):
                row[2 * o + shift_w] += first[base + o]


@njit(cache=True, inline="always")
def add_taps(cols, first_row, dst, geo, od0, od1, out_h, out_w):
    """``dst`` (D, H, W) += every tap's products, rows ``first_row .. first_row + taps -
    1`` of ``cols`` (each flat over the output planes ``od0 .. od1 - 1``), tap after tap
    in raster order. With W stride 2 and dilation 1, neighbouring taps along W go in
    pairs (:func:`add_tap_pair`): each element still receives its taps in raster
    order, since at most one tap of a pair reaches it, so the sums are the same bits
    (and the numpy twins' adds, tap by tap). Zen 4, 2026-12-07, float32, 2 threads, ms,
    the adds of the transposed layers' ``scatter_channel_blocks``, tap by tap vs pairs:
    k2 s2 64 -> 32 on 24^3 1.10 vs 0.76 (AVX2 code 1.23 vs 0.66), 128 -> 64 on 12^3 0.35
    vs 0.31 (0.34 vs 0.26), k3 s2 p1 64 -> 16 on 24^3 1.62 vs 1.44 (1.86 vs 1.35), on
    23^3 1.41 vs 1.26 (1.57 vs 1.13); small layers alike (k3 s2 p2 32 -> 16 on 11^3 0.17
    vs 0.18, k4 s2 p1 40 -> 16 on 9^3 0.28 vs 0.33 (0.28 vs 0.30)). Through the public
    functions, medians of 7 processes alternating: the input gradients of k3 s2 16 -> 32
    on 96^3 40.2 vs 34.1 and of k2 s2 32 -> 64 on 96^3 52.6 vs 45.6, the transposed k2
    s2 64 -> 32 on 48^3 45.3 vs 42.0, k3 s2 64 -> 16 on 24^3 7.45 vs 7.02."""
    kw = geo.kernel_w
    taps = geo.kernel_d * geo.kernel_h * kw
    pairs = geo.stride_w == 2 and geo.dilation_w == 1
    t = 0
    while t < taps:
        if pairs and t % kw + 1 < kw:
            add_tap_pair(cols[first_row + t], cols[first_row + t + 1], dst, geo, t, od0, od1, out_h, out_w)
            t += 2
        else:
            add_tap(cols[first_row + t], dst, geo, t, od0, od1, out_h, out_w)
            t += 1


@njit(parallel=True, cache=True)
def col2im(cols, geometry, out):
    """``out`` (P, D, H, W) = for each tap ``t`` in raster order, from zero: ``cols[p,
    t, o]`` (P, taps, Do, Ho, Wo) added at input position ``o*stride + t*dilation -
    padding`` where that lies in the input. One plane per iteration: every element sums
    its taps in the same order at any thread count (its numpy twin,
    ``gemm_numpy.col2im``, serves while this compiles, with the same bits)."""
    geo = unpack(geometry)
    planes, taps, out_d, out_h, out_w = cols.shape
    flat = cols.reshape((planes * taps, out_d * out_h * out_w))
    for p in prange(planes):
        dst = out[p]
        dst[...] = 0
        add_taps(flat, p * taps, dst, geo, 0, out_d, out_h, out_w)


@njit(parallel=True, cache=True, nogil=True)
def scatter_channel_blocks(w3, grad_out, out, geometry, block_channels, slab_planes):
    """The input gradient by blocks of input channels: ``out`` (N, Cin, D, H, W) from
    grad_out (N, Cout, Do, Ho, Wo) and w3 (G, Cout/G, Cin/G*kD*kH*kW), the weight as it
    is. One job per (sample, group, block of ``block_channels`` input channels) owns the
    block's input channels: for each slab of ``slab_planes`` output planes in order, the
    block's tap products ``w3[g, :, rows].T @ grad_out``'s slab (one BLAS product, each
    element one dot product over Cout/G) and their scatter-add, tap after tap. The
    products stay in cache between the two, where :func:`tap_products` and
    :func:`col2im` write and read them whole. Each element adds its taps slab by slab,
    in a fixed order: the same bits at every thread count."""
    geo = unpack(geometry)
    n_batch, _, out_d, out_h, out_w = grad_out.shape
    groups, cout_g, reduction = w3.shape
    taps = geo.kernel_d * geo.kernel_h * geo.kernel_w
    cin_g = reduction // taps
    blocks = (cin_g + block_channels - 1) // block_channels
    plane = out_h * out_w
    grads = grad_out.reshape((n_batch * groups, cout_g, out_d * plane))
    for job in prange(n_batch * groups * blocks):
        item, block = job // blocks, job % blocks
        g, c0 = item % groups, block * block_channels
        count = min(block_channels, cin_g - c0)
        dst = out[item // groups, g * cin_g + c0:g * cin_g + c0 + count]
        dst[...] = 0
        cols = np.empty((count * taps, slab_planes * plane), out.dtype)
        for od0 in range(0, out_d, slab_planes):
            od1 = min(out_d, od0 + slab_planes)
            size = (od1 - od0) * plane
            product_tn(w3[g, :, c0 * taps:(c0 + count) * taps], grads[item, :, od0 * plane:od0 * plane + size],
                       cols[:, :size])
            for c in range(count):
                add_taps(cols, c * taps, dst[c], geo, od0, od1, out_h, out_w)


@njit(parallel=True, cache=True, nogil=True)
def tap_products(w3, grads, cols, first_row, row_blocks, column_blocks):
    """The input gradient's tap products, ``cols[i] = w3[i % G, :, rows].T @ grads[i]``
    for every (sample, group) ``i`` and the rows ``first_row .. first_row + cols.shape[1]``,
    by blocks of rows x positions, one BLAS product each.

    w3: (G, Cout/G, Cin/G*kD*kH*kW), the weight as it is (rows of the product in (ci,
    kd, kh, kw) order); grads: (N*G, Cout/G, Do*Ho*Wo); cols: (N*G, rows, Do*Ho*Wo). BLAS
    reads the weight transposed and every block in place (``blas.product_tn``). Each
    element is one BLAS dot product over Cout/G whatever the block and the rows asked
    for: the same bits at every thread count, and as the numpy twin's.
    """
    groups = w3.shape[0]
    rows = cols.shape[1]
    positions = grads.shape[2]
    per_item = row_blocks * column_blocks
    for job in prange(grads.shape[0] * per_item):
        i, block = job // per_item, job % per_item
        rb, cb = block // column_blocks, block % column_blocks
        r0, r1 = rb * rows // row_blocks, (rb + 1) * rows // row_blocks
        p0, p1 = cb * positions // column_blocks, (cb + 1) * positions // column_blocks
        product_tn(w3[i % groups, :, first_row + r0:first_row + r1], grads[i, :, p0:p1],
                   cols[i, r0:r1, p0:p1])


#: Blocks per (sample, group) product of :func:`tap_products`: rows (or positions, where
#: rows are few) split 4 ways, one or two blocks per thread on 2 to 4 threads, whatever the
#: thread count (so the bits never depend on it).
TAP_BLOCKS = 4
TAP_BLOCK_MIN_ROWS = 16
TAP_BLOCK_MIN_POSITIONS = 256


def tap_product_blocks(rows: int, positions: int) -> tuple[int, int]:
    """(row blocks, position blocks) of :func:`tap_products`: ``TAP_BLOCKS`` blocks. More
    blocks only repack the operands in BLAS, whose single-threaded product blocks for
    the cache itself. Zen 4, 2026-12-06, float32, 2 threads, ms, 3 runs alternating in
    one process, the input gradient (GEMM and scatter) with 13-16 x 1-6 blocks (rows of
    128, positions of 2048, evened out for the threads) vs these: the transposed 384 ->
    64 k3 s2 on 6^3 2.15, 2.12, 1.88 vs 2.08, 1.95, 1.74; 64 -> 128 k3 s2 on 24^3 6.99,
    6.12, 5.85 vs 6.61, 5.67, 5.45; 16 -> 64 on 48^3 9.39, 9.14, 8.64 vs 8.92, 8.17, 8.20;
    128 -> 256 on 24^3 19.1, 19.2, 21.5 vs 18.4, 18.3, 19.8; 32 -> 64 on 48^3 and 256 or
    512 on 6^3 within 1-6%. Each element is one BLAS dot product whatever its block."""
    row_blocks = max(1, min(TAP_BLOCKS, rows // TAP_BLOCK_MIN_ROWS))
    column_blocks = max(1, min(TAP_BLOCKS // row_blocks, positions // TAP_BLOCK_MIN_POSITIONS))
    return row_blocks, column_blocks


def _col2im_examples(dtype):
    cols, out = np.zeros((1, 1, 1, 1, 1), dtype), np.zeros((1, 1, 1, 1), dtype)
    return readonly(cols), EXAMPLE, out


register(name="tap_products", computes=COL2IM, function=tap_products,
         examples=lambda dtype: (readonly(np.zeros((1, 1, 1), dtype)),
                                 readonly(np.zeros((1, 1, 1), dtype)), np.zeros((1, 1, 1), dtype), 0, 1, 1),
         launch=called_directly("numbaconv._backward"), bitwise=None, blas=True,
         description="the GEMM-and-scatter input gradient's products (BLAS reads the weight transposed)")
register(name="scatter_channel_blocks", computes=COL2IM, function=scatter_channel_blocks,
         examples=lambda dtype: (readonly(np.zeros((1, 1, 1), dtype)), readonly(np.zeros((1, 1, 1, 1, 1), dtype)),
                                 np.zeros((1, 1, 1, 1, 1), dtype), EXAMPLE, 1, 1),
         launch=called_directly("numbaconv._backward"), bitwise=None, blas=True,
         description="the GEMM-and-scatter input gradient by blocks of input channels, slab by slab")
register(name="col2im", computes=COL2IM, function=col2im, examples=_col2im_examples,
         launch=called_directly("numbaconv._backward"), bitwise=None,
         description="the input gradient's scatter-add of tap products (GEMM and scatter)")
