"""The GEMM kernels' twins in numpy: the same im2col slabs, the same BLAS calls, the same
bits, and nothing to compile.

``auto`` serves a new GEMM layer's first calls from these while the compiled kernels
compile in a child process (6-12 s each on a 2-core machine). numba's ``np.dot`` inside
njit calls scipy's BLAS gemm (``numba_xxgemm``, through ``scipy.linalg.cython_blas``)
on the row-major operands read as column-major ones; :func:`dot` makes the same call
through scipy's own wrapper of the same library function, with the same transposes,
sizes and leading dimensions. Everything else here only copies values, or adds them
in the kernels' order. Like the kernels, these run with BLAS single-threaded (the
dispatcher arranges it for every kernel that declares ``blas``).

Importing this module loads scipy's BLAS: the dispatcher's BLAS thread limit must see
that library, so the twins are declared by name and imported when a plan first needs
one, before any of them runs.
"""
import math

import numpy as np
from scipy.linalg import blas

from .geometry import Geometry
from . import gemm
from .gemm import NARROW_GRAD_ROWS
from .registry import in_python


def dot(a, b, a_transposed=False, b_transposed=False):
    """``op(a) @ op(b)`` as numba's ``np.dot`` computes it inside njit, C-contiguous.

    a, b: C-contiguous 2-D arrays; ``op`` transposes the flagged ones (numba's
    F-contiguous operands, e.g. ``grad.T``). numba reads the row-major operands as
    column-major ones and calls gemm for ``out^T = op(b)^T op(a)^T``; where one side of
    the product is 1 it calls gemv, or dot for a 1 x 1 result (numba/np/linalg.py,
    ``dot_3_mm``). Each call here is that call, through scipy's wrapper of the function.
    """
    m = a.shape[1] if a_transposed else a.shape[0]
    n = b.shape[0] if b_transposed else b.shape[1]
    single = a.dtype == np.float32
    if m == 1 and n == 1:
        return np.array([[(blas.sdot if single else blas.ddot)(a.ravel(), b.ravel())]], a.dtype)
    gemv = blas.sgemv if single else blas.dgemv
    if n == 1:
        return gemv(1.0, a.T, b.ravel(), trans=int(not a_transposed)).reshape(m, 1)
    if m == 1:
        return gemv(1.0, b.T, a.ravel(), trans=int(b_transposed)).reshape(1, n)
    gemm = blas.sgemm if single else blas.dgemm
    return gemm(1.0, b.T, a.T, trans_a=int(b_transposed), trans_b=int(a_transposed)).T


def product_nt_add(a, b, out):
    """``out += a @ b.T`` as ``blas.product_nt_add`` makes it inside njit: one gemm call
    with beta = 1 on out^T (column-major) = b a^T, b's rows transposed back and a's as
    they are. a (M, K), b (N, K), out (M, N): C-contiguous."""
    if out.size == 0 or a.shape[1] == 0:  # nothing to add (the kernel makes no call)
        return
    gemm = blas.sgemm if a.dtype == np.float32 else blas.dgemm
    out.T[...] = gemm(1.0, b.T, a.T, beta=1.0, c=out.T, trans_a=1, trans_b=0, overwrite_c=1)


def im2col(x_zero, dims, geo, out_shape, s0, size):
    """:func:`gemm.slab_col`'s slab ((Cin/G * kD*kH*kW) x size, rows in (ci, kd, kh, kw)
    order) for output positions ``s0 .. s0+size-1``. x_zero: (Cin/G, D*H*W + 1), one
    group's input channels of one sample, flat, with a zero appended: padding reads it."""
    depth, height, width = dims
    out_h, out_w = out_shape[3], out_shape[4]
    od, rest = np.divmod(np.arange(s0, s0 + size), out_h * out_w)
    oh, ow = np.divmod(rest, out_w)
    index = np.empty((geo.kernel_d, geo.kernel_h, geo.kernel_w, size), np.intp)
    for t in range(geo.kernel_d):
        z = od * geo.stride_d + t * geo.dilation_d - geo.pad_d
        for u in range(geo.kernel_h):
            y = oh * geo.stride_h + u * geo.dilation_h - geo.pad_h
            for s in range(geo.kernel_w):
                i = ow * geo.stride_w + s * geo.dilation_w - geo.pad_w
                inside = (z >= 0) & (z < depth) & (y >= 0) & (y < height) & (i >= 0) & (i < width)
                index[t, u, s] = np.where(inside, (z * height + y) * width + i, depth * height * width)
    return x_zero[:, index].reshape(-1, size)


def _channels_with_zero(x, n, c0, count):
    """x[n, c0:c0+count] flat, a zero appended (see :func:`im2col`)."""
    channels = x[n, c0:c0 + count].reshape(count, -1)
    return np.concatenate([channels, np.zeros((count, 1), x.dtype)], axis=1)


def _whole_columns(x, n, g, cin_g, geo, out_shape):
    """The whole im2col matrix of sample n, group g (:func:`gemm.fill_columns`; the input
    channels as they are where :func:`gemm.channels_are_columns`)."""
    if in_python(gemm.channels_are_columns)(x.shape, out_shape, geo):
        return x[n, g * cin_g:(g + 1) * cin_g].reshape(cin_g, -1)
    return im2col(_channels_with_zero(x, n, g * cin_g, cin_g), x.shape[2:], geo, out_shape, 0, math.prod(out_shape[2:]))


def forward_gemm(x, wmat, bias, out, geometry, slab_positions, row_blocks):
    """:func:`gemm.forward_gemm`, same arguments, same bits."""
    geo = Geometry(*geometry.tolist())
    n_batch = x.shape[0]
    groups, cout_g, reduction = wmat.shape
    positions = math.prod(out.shape[2:])
    cin_g = x.shape[1] // groups
    if row_blocks > 1:
        weights = wmat.reshape(groups * cout_g, reduction)
        out_rows = out.reshape(n_batch * groups * cout_g, positions)
        for ng in range(n_batch * groups):
            columns = _whole_columns(x, *divmod(ng, groups), cin_g, geo, out.shape)
            g = ng % groups
            for block in range(row_blocks):
                m0, m1 = block * cout_g // row_blocks, (block + 1) * cout_g // row_blocks
                rows = dot(weights[g * cout_g + m0:g * cout_g + m1], columns)
                out_rows[ng * cout_g + m0:ng * cout_g + m1] = rows + bias[g * cout_g + m0:g * cout_g + m1, None]
        return
    if geo.kernel_d > 1 and in_python(gemm.planes_are_columns)(x.shape, out.shape, geo):
        _forward_depth_taps(x, wmat, bias, out, geo)
        return
    out_flat = out.reshape(n_batch, groups, cout_g, positions)
    for n in range(n_batch):
        for g in range(groups):
            x_zero = _channels_with_zero(x, n, g * cin_g, cin_g)
            for s0 in range(0, positions, slab_positions):
                size = min(slab_positions, positions - s0)
                col = im2col(x_zero, x.shape[2:], geo, out.shape, s0, size)
                out_flat[n, g, :, s0:s0 + size] = dot(wmat[g], col) + bias[g * cout_g:(g + 1) * cout_g, None]


def weight_grad_gemm(x, grad_out, partial, geometry, slab_positions, block_channels):
    """:func:`gemm.weight_grad_gemm`, same arguments, same bits."""
    geo = Geometry(*geometry.tolist())
    n_batch = x.shape[0]
    chunks, groups, cout_g, _ = partial.shape
    cin_g = x.shape[1] // groups
    positions = math.prod(grad_out.shape[2:])
    if block_channels > 0:
        _weight_grad_channel_blocks(x, grad_out, partial, geo, slab_positions, block_channels)
        return
    if in_python(gemm.planes_are_columns)(x.shape, grad_out.shape, geo):  # depth taps only
        _weight_grad_depth_taps(x, grad_out, partial, geo)
        return
    slabs = -(-positions // slab_positions)
    total = n_batch * groups * slabs
    grad_flat = grad_out.reshape(n_batch, groups, cout_g, positions)
    loaded, x_zero = None, None
    for chunk in range(chunks):
        started = np.zeros(groups, bool)
        for item in range(chunk * total // chunks, (chunk + 1) * total // chunks):
            ng, slab = divmod(item, slabs)
            n, g = divmod(ng, groups)
            if loaded != (n, g):
                loaded, x_zero = (n, g), _channels_with_zero(x, n, g * cin_g, cin_g)
            s0 = slab * slab_positions
            size = min(slab_positions, positions - s0)
            col = im2col(x_zero, x.shape[2:], geo, grad_out.shape, s0, size)
            grad = np.ascontiguousarray(grad_flat[n, g, :, s0:s0 + size])
            if cout_g <= NARROW_GRAD_ROWS:
                product = dot(col, grad, b_transposed=True).T
            else:
                product = dot(grad, col, b_transposed=True)
            if started[g]:
                partial[chunk, g] += product
            else:
                partial[chunk, g] = product
            started[g] = True
        partial[chunk, ~started] = 0


def _weight_grad_channel_blocks(x, grad_out, partial, geo, slab_positions, block_channels):
    """``gemm._weight_grad_channel_blocks``: the same blocks, slabs and beta = 1 gemm calls."""
    n_batch, cin = x.shape[:2]
    groups, cout_g = partial.shape[1:3]
    cin_g = cin // groups
    taps = geo.kernel_d * geo.kernel_h * geo.kernel_w
    positions = math.prod(grad_out.shape[2:])
    grads = grad_out.reshape(n_batch, groups * cout_g, positions)
    pointwise = in_python(gemm.channels_are_columns)(x.shape, grad_out.shape, geo)
    for g in range(groups):
        for c0 in range(0, cin_g, block_channels):
            count = min(block_channels, cin_g - c0)
            dst = np.zeros((cout_g, count * taps), partial.dtype)
            for n in range(n_batch):
                channels = (x[n, g * cin_g + c0:g * cin_g + c0 + count].reshape(count, -1) if pointwise
                            else _channels_with_zero(x, n, g * cin_g + c0, count))
                for s0 in range(0, positions, slab_positions):
                    size = min(slab_positions, positions - s0)
                    if pointwise:
                        rows = np.ascontiguousarray(channels[:, s0:s0 + size])
                    else:
                        rows = im2col(channels, x.shape[2:], geo, grad_out.shape, s0, size)
                    product_nt_add(np.ascontiguousarray(grads[n, g * cout_g:(g + 1) * cout_g, s0:s0 + size]),
                                   rows, dst)
            partial[0, g, :, c0 * taps:(c0 + count) * taps] = dst


def product_tn(a, b, out, accumulate=False):
    """``out = a.T @ b`` (or ``+=``, beta = 1) as ``blas.product_tn`` (``product_tn_add``)
    makes it inside njit: one gemm call on out^T (column-major) = b^T a, b as it is and
    a's rows transposed back. a (K, M), b (K, N), out (M, N)."""
    if out.size == 0:
        return
    if a.shape[0] == 0:  # no gemm call: zeros, or nothing to add
        if not accumulate:
            out[...] = 0
        return
    gemm_call = blas.sgemm if a.dtype == np.float32 else blas.dgemm
    if accumulate:
        out[...] = gemm_call(1.0, b.T, a.T, beta=1.0, c=out.T, trans_a=0, trans_b=1).T
    else:
        out[...] = gemm_call(1.0, b.T, a.T, trans_a=0, trans_b=1).T


def _forward_depth_taps(x, wmat, bias, out, geo):
    """``gemm._forward_depth_taps``: the same items, taps and gemm calls."""
    n_batch = x.shape[0]
    groups, cout_g, reduction = wmat.shape
    kd, out_d = geo.kernel_d, out.shape[2]
    cin_g = reduction // kd
    # Sizes spelled out: -1 cannot be inferred for an empty batch.
    planes = x.reshape(n_batch, x.shape[1], x.shape[2], x.shape[3] * x.shape[4])
    out_planes = out.reshape(n_batch, groups * cout_g, out_d, out.shape[3] * out.shape[4])
    taps = wmat.reshape(groups, cout_g, cin_g, kd).transpose(0, 3, 2, 1)  # (G, kD, Cin/G, Cout/G)
    for item in range(n_batch * groups * out_d):
        (n, g), od = divmod(item // out_d, groups), item % out_d
        dst = out_planes[n, g * cout_g:(g + 1) * cout_g, od]
        started = False
        for t in range(kd):
            z = od * geo.stride_d + t * geo.dilation_d - geo.pad_d
            if 0 <= z < x.shape[2]:
                product_tn(np.ascontiguousarray(taps[g, t]),
                           np.ascontiguousarray(planes[n, g * cin_g:(g + 1) * cin_g, z]), dst, started)
                started = True
        if not started:
            dst[...] = 0
        dst += bias[g * cout_g:(g + 1) * cout_g, None]


def _weight_grad_depth_taps(x, grad_out, partial, geo):
    """The depth-tap products of :func:`gemm.weight_grad_gemm` (a layer whose taps move
    along depth only): the same items, taps and beta = 1 gemm calls, into the partial
    laid out [tap, cout, cin]."""
    n_batch, cin = x.shape[:2]
    chunks, groups, cout_g, reduction = partial.shape
    kd, cin_g, out_d = geo.kernel_d, cin // groups, grad_out.shape[2]
    taps = partial.reshape(chunks, groups, kd, cout_g, reduction // kd)
    # Sizes spelled out: -1 cannot be inferred for an empty batch.
    planes = x.reshape(n_batch, cin, x.shape[2], x.shape[3] * x.shape[4])
    grads = grad_out.reshape(n_batch, groups * cout_g, out_d, grad_out.shape[3] * grad_out.shape[4])
    total = n_batch * groups * out_d
    for chunk in range(chunks):
        taps[chunk] = 0
        for item in range(chunk * total // chunks, (chunk + 1) * total // chunks):
            (n, g), od = divmod(item // out_d, groups), item % out_d
            grad = np.ascontiguousarray(grads[n, g * cout_g:(g + 1) * cout_g, od])
            for t in range(kd):
                z = od * geo.stride_d + t * geo.dilation_d - geo.pad_d
                if 0 <= z < x.shape[2]:
                    plane = np.ascontiguousarray(planes[n, g * cin_g:(g + 1) * cin_g, z])
                    product_nt_add(grad, plane, taps[chunk, g, t])


def tap_slices(in_length, out_length, stride, shift, first_out=0):
    """(output positions counted from ``first_out``, input positions) as slices: the
    outputs ``o >= first_out`` whose input position ``o*stride + shift`` lies in the
    input (``gemm.tap_range``'s, run as Python); None if there are none."""
    first, last = in_python(gemm.tap_range)(in_length, out_length, stride, shift)
    first = max(first, first_out)
    if last < first:
        return None
    start = first * stride + shift
    return (slice(first - first_out, last + 1 - first_out),
            slice(start, start + (last - first) * stride + 1, stride))


def _add_taps(cols, out, geo, od0, od1):
    """``gemm.add_taps``: every tap in order, for all planes at once: ``out`` (P, D, H,
    W) += ``cols`` (P, taps, od1 - od0, Ho, Wo), the products of output planes ``od0 ..
    od1 - 1``, at their input positions, by numpy's strided adds (each element adds its
    taps one by one, in the kernels' order)."""
    kernel = (geo.kernel_d, geo.kernel_h, geo.kernel_w)
    strides = (geo.stride_d, geo.stride_h, geo.stride_w)
    dilations = (geo.dilation_d, geo.dilation_h, geo.dilation_w)
    pads = (geo.pad_d, geo.pad_h, geo.pad_w)
    out_lengths = (od1, cols.shape[3], cols.shape[4])
    for t, tap in enumerate(np.ndindex(*kernel)):
        picked = [tap_slices(*args) for args in zip(out.shape[1:], out_lengths, strides,
                                                     (i * d - p for i, d, p in zip(tap, dilations, pads)),
                                                     (od0, 0, 0))]
        if any(p is None for p in picked):
            continue
        out[(slice(None),) + tuple(p[1] for p in picked)] += cols[(slice(None), t) + tuple(p[0] for p in picked)]


def col2im(cols, geometry, out):
    """:func:`gemm.col2im`, same arguments, same bits: from zero, tap after tap."""
    out[...] = 0
    _add_taps(cols, out, Geometry(*geometry.tolist()), 0, cols.shape[2])


def scatter_channel_blocks(w3, grad_out, out, geometry, block_channels, slab_planes):
    """:func:`gemm.scatter_channel_blocks`: the same blocks and slabs, the same gemm call
    per slab (``blas.product_tn``'s), and the same adds in the same order."""
    geo = Geometry(*geometry.tolist())
    n_batch, _, out_d, out_h, out_w = grad_out.shape
    groups, cout_g, reduction = w3.shape
    taps = geo.kernel_d * geo.kernel_h * geo.kernel_w
    cin_g = reduction // taps
    plane = out_h * out_w
    grads = grad_out.reshape(n_batch * groups, cout_g, out_d * plane)
    for item in range(n_batch * groups):
        g = item % groups
        for c0 in range(0, cin_g, block_channels):
            count = min(block_channels, cin_g - c0)
            dst = out[item // groups, g * cin_g + c0:g * cin_g + c0 + count]
            dst[...] = 0
            for od0 in range(0, out_d, slab_planes):
                od1 = min(out_d, od0 + slab_planes)
                cols = np.empty((count * taps, (od1 - od0) * plane), out.dtype)
                product_tn(np.ascontiguousarray(w3[g, :, c0 * taps:(c0 + count) * taps]),
                           np.ascontiguousarray(grads[item, :, od0 * plane:od1 * plane]), cols)
                _add_taps(cols.reshape(count, taps, od1 - od0, out_h, out_w), dst, geo, od0, od1)


def tap_products(w3, grads, cols, first_row, row_blocks, column_blocks):
    """:func:`gemm.tap_products`: the same blocks, each the same gemm call that
    ``blas.product_tn`` makes (transposes 'n' and 't' on grad_output's and the weight's
    rows read as columns)."""
    gemm_call = blas.sgemm if w3.dtype == np.float32 else blas.dgemm
    groups = w3.shape[0]
    rows = cols.shape[1]
    positions = grads.shape[2]
    for i in range(grads.shape[0]):
        for rb in range(row_blocks):
            r0, r1 = rb * rows // row_blocks, (rb + 1) * rows // row_blocks
            for cb in range(column_blocks):
                p0, p1 = cb * positions // column_blocks, (cb + 1) * positions // column_blocks
                if r1 == r0 or p1 == p0:
                    continue
                a, b = w3[i % groups, :, first_row + r0:first_row + r1], grads[i, :, p0:p1]
                cols[i, r0:r1, p0:p1] = gemm_call(1.0, b.T, a.T, trans_a=0, trans_b=1).T
