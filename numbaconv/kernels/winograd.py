"""Winograd F(2x2x2, 3x3x3): 3x3x3 stride-1 convolutions with 64 multiplications per
(2x2x2 output tile, input channel, output channel) instead of 216 (Lavin & Gray 2016,
in three dimensions as in Budden et al. 2017).

In one dimension, F(2, 3) computes two outputs of a 3-tap correlation from four inputs
``d``: ``y = A^T [(G g) * (B^T d)]``. In three dimensions the transforms apply along each
axis; the products of a tile become 64 independent sums over input channels, i.e. 64
matrix products (tiles x Cin/G) @ (Cin/G x Cout/G), which BLAS runs near the peak.

The weights are transformed once per call, in a first parallel loop, into an array the
caller allocates: numpy asks for huge pages for large arrays, and the transform of 512 x
512 channels (67 MB) took 28 ms so, 42 when the kernel allocated it itself. Then one
``prange`` iteration owns a block of whole tile rows of one (n, group): it transforms
their input tiles (``v``: 64 x tiles x Cin/G), multiplies (``m``: 64 x tiles x Cout/G)
and transforms back into the output, in a scratch row of its thread's. Deep layers on
small volumes would have few, narrow blocks: there each (n, group) is one block, and
the blocks run stage by stage, each stage split across threads (:func:`staged`). The
block size depends only on the layer (never on the thread count), so results are the
same at every thread count, and the serial twin's are the same too; BLAS runs
single-threaded inside the loop (the dispatcher arranges it). Sums are rounded in
another order, and through the transforms, than the direct kernels': the error bound is
measured and stated in the README.
"""
import numba
import numpy as np
from numba import njit, prange

from .blas import product_nt_add
from .direct import split_item
from .geometry import unpack
from .parts import run_in_parts, thread_count
from .registry import FORWARD, WEIGHT_GRAD, example_arrays, readonly, register

# F(2, 3) for a correlation y[i] = sum_k d[i + k] g[k], i = 0, 1:
# B^T d = (d0 - d2, d1 + d2, d2 - d1, d1 - d3), G g = (g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2),
# A^T m = (m0 + m1 + m2, m1 - m2 - m3).
#: Upper bound on one work item's transformed input and products (v and m), in bytes.
BLOCK_BYTES = 3 << 20


@njit(cache=True, inline="always")
def input_rows(x, n, c, z0, y0, pad_w, raw, mixed, lines):
    """lines[p, a, b, t] = (B^T along depth, then height) of the 4x4 input rows from
    (z0, y0), at padded column 2t + p (input column 2t + p - pad_w; zero outside the
    input): a whole tile row's depth and height transforms, vectorised along the row.
    Even and odd columns are kept apart so that the width transform reads contiguous
    rows. raw, mixed: scratch of lines' shape (2, 4, 4, tiles_w + 1)."""
    depth, height, width = x.shape[2], x.shape[3], x.shape[4]
    half = lines.shape[3]
    raw[:] = 0
    for p in range(2):
        # columns 2t + p - pad_w inside [0, width): t in [lo, hi)
        lo = min(half, max(0, (pad_w - p + 1) // 2))
        hi = max(lo, min(half, (width + pad_w - p + 1) // 2))
        first = 2 * lo + p - pad_w
        for i in range(4):
            z = z0 + i
            if z < 0 or z >= depth:
                continue
            for j in range(4):
                y = y0 + j
                if y < 0 or y >= height:
                    continue
                src = x[n, c, z, y, first:]
                dst = raw[p, i, j, lo:hi]
                for t in range(hi - lo):
                    dst[t] = src[2 * t]
    for p in range(2):
        for j in range(4):  # B^T along depth
            r0, r1, r2, r3 = raw[p, 0, j], raw[p, 1, j], raw[p, 2, j], raw[p, 3, j]
            for t in range(half):
                mixed[p, 0, j, t] = r0[t] - r2[t]
                mixed[p, 1, j, t] = r1[t] + r2[t]
                mixed[p, 2, j, t] = r2[t] - r1[t]
                mixed[p, 3, j, t] = r1[t] - r3[t]
        for a in range(4):  # B^T along height
            r0, r1, r2, r3 = mixed[p, a, 0], mixed[p, a, 1], mixed[p, a, 2], mixed[p, a, 3]
            for t in range(half):
                lines[p, a, 0, t] = r0[t] - r2[t]
                lines[p, a, 1, t] = r1[t] + r2[t]
                lines[p, a, 2, t] = r2[t] - r1[t]
                lines[p, a, 3, t] = r1[t] - r3[t]


@njit(cache=True, inline="always")
def output_row(m, co, t0, tiles_w, out, n, channel, bias, oz, oy, r, s, ybuf):
    """out[n, channel, oz:oz+2, oy:oy+2, :] = A^T m[:, co, t0:t0 + tiles_w] (along each
    axis) + bias: one tile row, every step vectorised along its tiles (the parts past the
    output's end dropped). r: (32, tiles_w), s: (16, tiles_w), ybuf: (8, tiles_w) scratch."""
    for ab in range(16):  # A^T along width
        m0, m1 = m[ab * 4, co, t0:t0 + tiles_w], m[ab * 4 + 1, co, t0:t0 + tiles_w]
        m2, m3 = m[ab * 4 + 2, co, t0:t0 + tiles_w], m[ab * 4 + 3, co, t0:t0 + tiles_w]
        lo, hi = r[ab * 2], r[ab * 2 + 1]
        for t in range(tiles_w):
            lo[t] = m0[t] + m1[t] + m2[t]
            hi[t] = m1[t] - m2[t] - m3[t]
    for a in range(4):  # A^T along height
        for c in range(2):
            m0, m1, m2, m3 = r[a * 8 + c], r[a * 8 + 2 + c], r[a * 8 + 4 + c], r[a * 8 + 6 + c]
            lo, hi = s[a * 4 + c], s[a * 4 + 2 + c]
            for t in range(tiles_w):
                lo[t] = m0[t] + m1[t] + m2[t]
                hi[t] = m1[t] - m2[t] - m3[t]
    for k in range(4):  # A^T along depth
        m0, m1, m2, m3 = s[k], s[4 + k], s[8 + k], s[12 + k]
        lo, hi = ybuf[k], ybuf[4 + k]
        for t in range(tiles_w):
            lo[t] = m0[t] + m1[t] + m2[t]
            hi[t] = m1[t] - m2[t] - m3[t]
    out_d, out_h, out_w = out.shape[2], out.shape[3], out.shape[4]
    b = bias[channel]
    full = out_w // 2  # tiles whose two columns are both inside
    for dz in range(min(2, out_d - oz)):
        for dy in range(min(2, out_h - oy)):
            row = out[n, channel, oz + dz, oy + dy]
            y0, y1 = ybuf[dz * 4 + dy * 2], ybuf[dz * 4 + dy * 2 + 1]
            for t in range(full):
                row[2 * t] = y0[t] + b
                row[2 * t + 1] = y1[t] + b
            if full < tiles_w:
                row[2 * full] = y0[full] + b


#: G of F(2, 3), row by row (entries 0, 1 and +-1/2).
G_ROWS = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


@njit(cache=True, inline="always")
def transformed_weights(w6, item, ut):
    """ut[g, :, co, :] for ``item`` = (g, co): the 64 transformed values (G k G^T along
    each axis) of each input channel's 3x3x3 kernel ``k``, G along width, then height,
    then depth, summed in float64 and rounded once.

    Every step runs along the input channels (contiguous rows), and the result rows are
    ut's own: kernel by kernel, with strided stores into ut, this took 14.5 ms for 256 x
    256 channels and 69 ms for 512 x 512 (Zen 4, 2 threads), more than the rest of a
    256 -> 256 layer on 6^3."""
    cout_g, cin_g = w6.shape[1], w6.shape[2]
    g, co = item // cout_g, item % cout_g
    kernels = w6[g, co].reshape((cin_g, 27))
    taps = np.empty((27, cin_g))  # float64, a row per tap
    for ci in range(cin_g):
        for t in range(27):
            taps[t, ci] = kernels[ci, t]
    along_w = np.empty((9, 4, cin_g))  # (depth and height tap, width value)
    for ij in range(9):
        k0, k1, k2 = taps[ij * 3], taps[ij * 3 + 1], taps[ij * 3 + 2]
        for c in range(4):
            g0, g1, g2 = G_ROWS[c]
            dst = along_w[ij, c]
            for ci in range(cin_g):
                dst[ci] = g0 * k0[ci] + g1 * k1[ci] + g2 * k2[ci]
    along_h = np.empty((3, 4, 4, cin_g))  # (depth tap, height value, width value)
    for i in range(3):
        for b in range(4):
            g0, g1, g2 = G_ROWS[b]
            for c in range(4):
                k0, k1, k2 = along_w[i * 3, c], along_w[i * 3 + 1, c], along_w[i * 3 + 2, c]
                dst = along_h[i, b, c]
                for ci in range(cin_g):
                    dst[ci] = g0 * k0[ci] + g1 * k1[ci] + g2 * k2[ci]
    for a in range(4):
        g0, g1, g2 = G_ROWS[a]
        for bc in range(16):
            k0, k1, k2 = along_h[0, bc // 4, bc % 4], along_h[1, bc // 4, bc % 4], along_h[2, bc // 4, bc % 4]
            dst = ut[g, a * 16 + bc, co]
            for ci in range(cin_g):
                dst[ci] = g0 * k0[ci] + g1 * k1[ci] + g2 * k2[ci]


@njit(cache=True, inline="always")
def tile_counts(out):
    """(tile rows, tiles per row): the output's 2x2x2 tiles, (depth, height) pairs by
    width."""
    tiles_d, tiles_h, tiles_w = (out.shape[2] + 1) // 2, (out.shape[3] + 1) // 2, (out.shape[4] + 1) // 2
    return tiles_d * tiles_h, tiles_w


# input_block, grad_block and output_block are called, not inlined: the parallel drivers
# call them from several loops (staged and block by block), and inlined copies took the
# parallel kernels 45 and 48 s to compile, 43 and 40 s as calls (Zen 4; same run time).
@njit(cache=True)
def input_block(x, geo, n, g, r0, r1, tiles_h, tiles_w, v, ci0, ci1):
    """v[xi, ci, t] = (B^T d B along each axis)[xi] for the input tiles d of tile rows
    [r0, r1) of sample n, group g (t: tile index within the block, rows by width), for
    the group's input channels ci in [ci0, ci1)."""
    cin_g = v.shape[1]
    raw = np.empty((2, 4, 4, tiles_w + 1), x.dtype)
    mixed = np.empty((2, 4, 4, tiles_w + 1), x.dtype)
    lines = np.empty((2, 4, 4, tiles_w + 1), x.dtype)
    for ci in range(ci0, ci1):
        for r in range(r0, r1):
            tz, ty = r // tiles_h, r % tiles_h
            input_rows(x, n, g * cin_g + ci, 2 * tz - geo.pad_d, 2 * ty - geo.pad_h, geo.pad_w,
                       raw, mixed, lines)
            t0 = (r - r0) * tiles_w
            for ab in range(16):  # B^T along width, for every tile of the row
                even, odd = lines[0, ab // 4, ab % 4], lines[1, ab // 4, ab % 4]
                v0, v1 = v[ab * 4, ci, t0:t0 + tiles_w], v[ab * 4 + 1, ci, t0:t0 + tiles_w]
                v2, v3 = v[ab * 4 + 2, ci, t0:t0 + tiles_w], v[ab * 4 + 3, ci, t0:t0 + tiles_w]
                for t in range(tiles_w):
                    d0, d1, d2, d3 = even[t], odd[t], even[t + 1], odd[t + 1]
                    v0[t] = d0 - d2
                    v1[t] = d1 + d2
                    v2[t] = d2 - d1
                    v3[t] = d1 - d3


@njit(cache=True)
def grad_block(grad_out, n, g, r0, r1, tiles_h, tiles_w, u, co0, co1):
    """u[xi, co, t] = (A y A^T along each axis)[xi] for the 2x2x2 grad_output tiles y of
    tile rows [r0, r1) of sample n, group g (zero past grad_output's end), for the
    group's output channels co in [co0, co1). A maps a
    pair (y0, y1) to (y0, y0 + y1, y0 - y1, -y1): the transpose of the forward output
    transform, as the weight gradient is the adjoint of the forward product."""
    cout_g = u.shape[1]
    out_d, out_h, out_w = grad_out.shape[2], grad_out.shape[3], grad_out.shape[4]
    pairs = np.zeros((2, 2, 2, tiles_w), grad_out.dtype)  # (dz, dy, even/odd column, tile)
    rows = np.empty((2, 4, tiles_w), grad_out.dtype)  # (dz, height value b, tile)
    half = out_w // 2
    for co in range(co0, co1):
        for r in range(r0, r1):
            tz, ty = r // tiles_h, r % tiles_h
            t0 = (r - r0) * tiles_w
            for dz in range(2):
                for dy in range(2):
                    pair = pairs[dz, dy]
                    z, y = 2 * tz + dz, 2 * ty + dy
                    if z >= out_d or y >= out_h:
                        pair[:] = 0
                        continue
                    src = grad_out[n, g * cout_g + co, z, y]
                    even, odd = pair[0], pair[1]
                    for t in range(half):
                        even[t] = src[2 * t]
                        odd[t] = src[2 * t + 1]
                    if half < tiles_w:
                        even[half] = src[2 * half]
                        odd[half] = 0
            for c in range(4):  # width value c of every row, then A along height and depth
                for dz in range(2):
                    for dy in range(2):
                        even, odd = pairs[dz, dy, 0], pairs[dz, dy, 1]
                        along_width = rows[dz, dy]
                        for t in range(tiles_w):
                            along_width[t] = along(even[t], odd[t], c)
                    y0, y1, y2, y3 = rows[dz, 0], rows[dz, 1], rows[dz, 2], rows[dz, 3]
                    for t in range(tiles_w):  # A along height, in place
                        a0, a1 = y0[t], y1[t]
                        y1[t] = a0 + a1
                        y2[t] = a0 - a1
                        y3[t] = -a1
                for b in range(4):
                    for a in range(4):
                        dst = u[(a * 4 + b) * 4 + c, co, t0:t0 + tiles_w]
                        f0, f1 = rows[0, b], rows[1, b]
                        for t in range(tiles_w):
                            dst[t] = along(f0[t], f1[t], a)


@njit(cache=True, inline="always")
def along(y0, y1, j):
    """(A (y0, y1))[j]: y0, y0 + y1, y0 - y1, -y1."""
    if j == 0:
        return y0
    if j == 1:
        return y0 + y1
    if j == 2:
        return y0 - y1
    return -y1


@njit(cache=True, inline="always")
def tile_blocks(out, block_rows):
    """Blocks of ``block_rows`` tile rows per (sample, group)."""
    rows = tile_counts(out)[0]
    return (rows + block_rows - 1) // block_rows


@njit(cache=True, inline="always")
def item_block(out, groups, cin_g, cout_g, item, block_rows, mine):
    """Work item ``item`` = (n, group, block of ``block_rows`` tile rows of ``out``'s
    tiles): (n, g, r0, r1, tiles_h, tiles_w, v, w), with v (64, Cin/G, count) and w
    (64, Cout/G, count) views of this thread's scratch row ``mine`` (count: the block's
    tiles; tiles innermost, so that the transforms run along contiguous rows)."""
    rows, tiles_w = tile_counts(out)
    tiles_h = (out.shape[3] + 1) // 2
    n, g, block = split_item(item, groups, tile_blocks(out, block_rows))
    r0 = block * block_rows
    r1 = min(rows, r0 + block_rows)
    count = (r1 - r0) * tiles_w
    v = mine[:64 * cin_g * count].reshape((64, cin_g, count))
    w = mine[64 * cin_g * count:64 * (cin_g + cout_g) * count].reshape((64, cout_g, count))
    return n, g, r0, r1, tiles_h, tiles_w, v, w


@njit(cache=True, inline="always")
def products(ut, g, v, m, xi):
    """m[xi] = ut[g, xi] @ v[xi]: one of a block's 64 products (Cout/G x Cin/G) @
    (Cin/G x tiles)."""
    np.dot(ut[g, xi], v[xi], m[xi])


@njit(cache=True)
def output_block(m, out, bias, n, g, r0, r1, tiles_h, tiles_w, co0, co1):
    """out[n, g*Cout/G + co] for co in [co0, co1), tile rows [r0, r1) = A^T m (along
    each axis) + bias."""
    cout_g = m.shape[1]
    r_buf = np.empty((32, tiles_w), out.dtype)
    s_buf = np.empty((16, tiles_w), out.dtype)
    ybuf = np.empty((8, tiles_w), out.dtype)
    for co in range(co0, co1):
        for r in range(r0, r1):
            tz, ty = r // tiles_h, r % tiles_h
            output_row(m, co, (r - r0) * tiles_w, tiles_w, out, n, g * cout_g + co, bias,
                       2 * tz, 2 * ty, r_buf, s_buf, ybuf)


@njit(cache=True, inline="always")
def forward_item(x, ut, bias, out, geo, item, block_rows, mine):
    """Work item ``item`` = (n, group, block of ``block_rows`` tile rows): transform the
    block's input tiles, multiply, transform back into ``out``. ``mine``: this thread's
    scratch row (:func:`scratch_size`)."""
    cin_g, cout_g = ut.shape[3], ut.shape[2]
    n, g, r0, r1, tiles_h, tiles_w, v, m = item_block(out, ut.shape[0], cin_g, cout_g,
                                                      item, block_rows, mine)
    input_block(x, geo, n, g, r0, r1, tiles_h, tiles_w, v, 0, cin_g)
    for xi in range(64):
        products(ut, g, v, m, xi)
    output_block(m, out, bias, n, g, r0, r1, tiles_h, tiles_w, 0, cout_g)


@njit(cache=True, inline="always")
def item_counts(x, w6, out, block_rows):
    """(weight items, forward items) of one call."""
    return w6.shape[0] * w6.shape[1], x.shape[0] * w6.shape[0] * tile_blocks(out, block_rows)


# One loop nest, two drivers with the same bits: ``prange``, and in parts on Python
# threads (kernels/parts.py), which compiles in a quarter of the time: it serves ``auto``
# while the other compiles, and processes forked after OpenMP started (the numpy twin
# serves ``auto`` while both compile).
@njit(parallel=True, cache=True, nogil=True)
def forward_winograd(x, w6, bias, out, geometry, block_rows, staged, ut, scratch):
    """out = conv3d(x, w) + bias for 3x3x3 stride-1 dilation-1 layers.

    x: (N, Cin, D, H, W); w6: (G, Cout/G, Cin/G, 3, 3, 3); bias: (Cout,); out: (N, Cout,
    Do, Ho, Wo), written in full; block_rows: tile rows (2 output rows of 2 output
    planes) per work item; staged: run the items stage by stage (see :func:`staged`);
    ut: (G, 64, Cout/G, Cin/G), x's dtype, overwritten with the transformed weights;
    scratch: (threads, scratch_size(spec, block_rows)), x's dtype, one row per thread
    that may run the loop (staged: one per item).
    """
    geo = unpack(geometry)
    weight_items, items = item_counts(x, w6, out, block_rows)
    # The weights transformed once per call: 64 matrices per group.
    for item in prange(weight_items):
        transformed_weights(w6, item, ut)
    if staged:
        # Deep layers on few tiles (see ``staged``): items are few and each product
        # narrow, so the items run stage by stage, each stage split finely: the input
        # transforms by (item, input channel), the products by (item, xi), the output
        # transforms by (item, output channel), every item in its own scratch row. The
        # same operations on the same values as item by item: the same bits.
        cout_g, cin_g = w6.shape[1], w6.shape[2]
        groups = w6.shape[0]
        for job in prange(items * cin_g):
            item, ci = job // cin_g, job % cin_g
            n, g, r0, r1, tiles_h, tiles_w, v, m = item_block(out, groups, cin_g, cout_g, item,
                                                              block_rows, scratch[item])
            input_block(x, geo, n, g, r0, r1, tiles_h, tiles_w, v, ci, ci + 1)
        for job in prange(items * 64):
            item, xi = job // 64, job % 64
            n, g, r0, r1, tiles_h, tiles_w, v, m = item_block(out, groups, cin_g, cout_g, item,
                                                              block_rows, scratch[item])
            products(ut, g, v, m, xi)
        for job in prange(items * cout_g):
            item, co = job // cout_g, job % cout_g
            n, g, r0, r1, tiles_h, tiles_w, v, m = item_block(out, groups, cin_g, cout_g, item,
                                                              block_rows, scratch[item])
            output_block(m, out, bias, n, g, r0, r1, tiles_h, tiles_w, co, co + 1)
        return
    for item in prange(items):
        # A thread's items reuse its scratch row: a fresh block per item cost a page
        # fault per 4 KiB whenever the allocator had returned the last one to the OS
        # (measured: 250 MB of faults per call, 3x the time, on a 32->32 64^3 layer).
        forward_item(x, ut, bias, out, geo, item, block_rows, scratch[numba.get_thread_id()])


@njit(cache=True, nogil=True)
def forward_winograd_part(x, w6, bias, out, geometry, block_rows, staged, ut, scratch,
                          stage, part, parts):
    """Part ``part`` of ``parts`` of stage ``stage`` of :func:`forward_winograd` (the same
    arguments), item by item whatever ``staged`` says (the same bits either way), with
    one scratch row per part.
    Stages (``PART_STAGES``): 0 the weight transforms, 1 the work items, each split into
    ``parts`` ranges of independent jobs, so any split gives the same bits; ``parts = 1``
    is the whole kernel on the calling thread."""
    geo = unpack(geometry)
    weight_items, items = item_counts(x, w6, out, block_rows)
    jobs = weight_items if stage == 0 else items
    for job in range(part * jobs // parts, (part + 1) * jobs // parts):
        if stage == 0:
            transformed_weights(w6, job, ut)
        else:
            forward_item(x, ut, bias, out, geo, job, block_rows, scratch[part])


@njit(cache=True, inline="always")
def back_to_taps(p0, p1, p2, p3, t0, t1, t2):
    """G^T along one axis, row by row (4 float64 rows -> 3): t0 = p0 + p1/2 + p2/2,
    t1 = p1/2 - p2/2, t2 = p1/2 + p2/2 + p3, each summed left to right (as the numpy
    twin does: the same bits)."""
    for i in range(p0.shape[0]):
        t0[i] = p0[i] + 0.5 * p1[i] + 0.5 * p2[i]
        t1[i] = 0.5 * p1[i] - 0.5 * p2[i]
        t2[i] = 0.5 * p1[i] + 0.5 * p2[i] + p3[i]


@njit(cache=True, inline="always")
def taps_from_products(partial, gw, job):
    """gw[g, co, ci, :] for every ci of job = (g, co): the chunks' 64 products summed in
    order in float64, then G^T along width, height and depth (64 -> 48 -> 36 -> 27
    rows of Cin/G), rounded once. partial: (chunks, G, 64, Cout/G, Cin/G); gw: (G,
    Cout/G, Cin/G, 27)."""
    cout_g, cin_g = partial.shape[3], partial.shape[4]
    g, co = job // cout_g, job % cout_g
    rows = np.empty((64 + 48 + 36 + 27, cin_g), np.float64)
    p, q, r, t = rows[:64], rows[64:112], rows[112:148], rows[148:]
    for xi in range(64):
        row = p[xi]
        first = partial[0, g, xi, co]
        for ci in range(cin_g):
            row[ci] = first[ci]
        for chunk in range(1, partial.shape[0]):  # a fixed order: any thread count
            other = partial[chunk, g, xi, co]
            for ci in range(cin_g):
                row[ci] += other[ci]
    for ab in range(16):  # xi = (a, b, c) -> q = (a, b, kw)
        back_to_taps(p[4 * ab], p[4 * ab + 1], p[4 * ab + 2], p[4 * ab + 3],
                     q[3 * ab], q[3 * ab + 1], q[3 * ab + 2])
    for a in range(4):  # -> r = (a, kh, kw)
        for f in range(3):
            back_to_taps(q[12 * a + f], q[12 * a + 3 + f], q[12 * a + 6 + f], q[12 * a + 9 + f],
                         r[9 * a + f], r[9 * a + 3 + f], r[9 * a + 6 + f])
    for ef in range(9):  # -> t = (kd, kh, kw)
        back_to_taps(r[ef], r[9 + ef], r[18 + ef], r[27 + ef], t[ef], t[9 + ef], t[18 + ef])
    out = gw[g, co]
    for ci in range(cin_g):
        for tap in range(27):
            out[ci, tap] = t[tap, ci]


@njit(cache=True, inline="always")
def weight_grad_item(x, grad_out, part, geo, item, block_rows, mine):
    """part[g, xi] += U[xi] V[xi]^T for work item ``item`` = (n, group, block of tile
    rows): the 64 products of the block's transformed grad_output and input tiles.
    part: (G, 64, Cout/G, Cin/G); mine: this thread's scratch row."""
    n, g, r0, r1, tiles_h, tiles_w, v, u = item_block(grad_out, part.shape[0], part.shape[3],
                                                      part.shape[2], item, block_rows, mine)
    input_block(x, geo, n, g, r0, r1, tiles_h, tiles_w, v, 0, v.shape[1])
    grad_block(grad_out, n, g, r0, r1, tiles_h, tiles_w, u, 0, u.shape[1])
    for xi in range(64):
        product_nt_add(u[xi], v[xi], part[g, xi])


@njit(cache=True, inline="always")
def weight_grad_items(x, grad_out, partial, block_rows):
    return x.shape[0] * partial.shape[1] * tile_blocks(grad_out, block_rows)


# The weight gradient: the same tiles, the adjoint transforms (Winograd's F(3x3x3,
# 2x2x2)): 64 products per tile and channel pair instead of 216. Work items are split
# into ``chunks`` fixed ranges, each summed into its own partial, so the sums do not
# depend on the thread count; two drivers with the same bits, as for the forward.
@njit(parallel=True, cache=True, nogil=True)
def weight_grad_winograd(x, grad_out, partial, geometry, block_rows, staged, scratch, gw):
    """gw = the weight gradient, from partial[chunk] = the 64 transformed products of
    chunk ``chunk``'s work items.

    x: (N, Cin, D, H, W); grad_out: (N, Cout, Do, Ho, Wo) of a 3x3x3 stride-1 layer;
    partial: (chunks, G, 64, Cout/G, Cin/G), zeroed; staged (one chunk of whole (sample,
    group)s): stage by stage, as the forward; scratch as for the forward; gw: (G,
    Cout/G, Cin/G, 27), written in full (:func:`taps_from_products`).
    """
    geo = unpack(geometry)
    chunks = partial.shape[0]
    total = weight_grad_items(x, grad_out, partial, block_rows)
    if staged:
        # Both transforms by (item, channel), then the products by (group, xi), each
        # summing its samples' products in order, as the one chunk item by item does.
        groups, cout_g, cin_g = partial.shape[1], partial.shape[3], partial.shape[4]
        for job in prange(total * cin_g):
            item, ci = job // cin_g, job % cin_g
            n, g, r0, r1, tiles_h, tiles_w, v, u = item_block(grad_out, groups, cin_g, cout_g,
                                                              item, block_rows, scratch[item])
            input_block(x, geo, n, g, r0, r1, tiles_h, tiles_w, v, ci, ci + 1)
        for job in prange(total * cout_g):
            item, co = job // cout_g, job % cout_g
            n, g, r0, r1, tiles_h, tiles_w, v, u = item_block(grad_out, groups, cin_g, cout_g,
                                                              item, block_rows, scratch[item])
            grad_block(grad_out, n, g, r0, r1, tiles_h, tiles_w, u, co, co + 1)
        for job in prange(groups * 64):
            g, xi = job // 64, job % 64
            for item in range(g, total, groups):  # item = n * groups + g
                n, g, r0, r1, tiles_h, tiles_w, v, u = item_block(grad_out, groups, cin_g, cout_g,
                                                                  item, block_rows, scratch[item])
                product_nt_add(u[xi], v[xi], partial[0, g, xi])
    else:
        for chunk in prange(chunks):
            mine = scratch[numba.get_thread_id()]
            for item in range(chunk * total // chunks, (chunk + 1) * total // chunks):
                weight_grad_item(x, grad_out, partial[chunk], geo, item, block_rows, mine)
    for job in prange(gw.shape[0] * gw.shape[1]):
        taps_from_products(partial, gw, job)


@njit(cache=True, nogil=True)
def weight_grad_winograd_part(x, grad_out, partial, geometry, block_rows, staged, scratch, gw,
                              stage, part, parts):
    """Part ``part`` of ``parts`` of stage ``stage`` of :func:`weight_grad_winograd`, item
    by item, as :func:`forward_winograd_part` is of the forward. Stages
    (``PART_STAGES``): 0 the chunks (each part whole chunks), 1 the taps."""
    geo = unpack(geometry)
    chunks = partial.shape[0]
    total = weight_grad_items(x, grad_out, partial, block_rows)
    jobs = chunks if stage == 0 else gw.shape[0] * gw.shape[1]
    for job in range(part * jobs // parts, (part + 1) * jobs // parts):
        if stage == 0:
            for item in range(job * total // chunks, (job + 1) * total // chunks):
                weight_grad_item(x, grad_out, partial[job], geo, item, block_rows, scratch[part])
        else:
            taps_from_products(partial, gw, job)


# ---- Declarations -----------------------------------------------------------------------
def supports(spec) -> str | None:
    """None if the Winograd kernel computes ``spec``, else why not."""
    if spec.kernel != (3, 3, 3) or spec.stride != (1, 1, 1) or spec.dilation != (1, 1, 1):
        return (f"it computes 3x3x3 kernels with stride 1 and dilation 1 only (got kernel "
                f"{spec.kernel}, stride {spec.stride}, dilation {spec.dilation})")
    return None


def block_rows(spec) -> int:
    """Tile rows per work item: the transformed input and the products within
    ``BLOCK_BYTES`` (at least one row). A function of the layer only."""
    tiles_w = -(-spec.out_size[2] // 2)
    per_tile = 64 * (spec.in_per_group + spec.out_per_group) * spec.compute_dtype.itemsize
    return max(1, BLOCK_BYTES // (per_tile * tiles_w))


#: The forward runs stage by stage (see ``forward_winograd``) where its blocks would hold
#: fewer tiles than this (each of their 64 products too narrow for BLAS)...
STAGED_NARROW_TILES = 32
#: ...or fewer than this and be fewer than ``STAGED_FEW_ITEMS`` (too few to share between
#: threads evenly)...
STAGED_FEW_TILES = 64
STAGED_FEW_ITEMS = 8
#: ...while every (sample, group)'s transformed input and products fit in this together.
STAGED_BYTES = 64 << 20


def _tile_rows(spec) -> tuple:
    """(tile rows, tiles per row) of the output."""
    tiles_d, tiles_h, tiles_w = (-(-size // 2) for size in spec.out_size)
    return tiles_d * tiles_h, tiles_w


def staged(spec) -> bool:
    """Whether the kernels run whole (sample, group)s stage by stage: deep layers on
    few tiles, whose blocks (:func:`block_rows`) would be narrow or few. A function of
    the layer only. Zen 4, 2026-12-05, float32, ms, blocks vs staged: 256 -> 256 on 12^3
    32 vs 20 (blocks of 18 tiles), 2 x 256 on 12^3 61 vs 43, 256 on 16^3 67 vs 46 (24),
    512 on 6^3 55 vs 36 (12), 256 on 6^3 9.2 vs 6.8 (24), 128 on 12^3 7.3 vs 6.1 (5
    blocks of 48); blocks stay for 128 on 16^3 11.7 vs 14.4 (11 blocks of 48), 64 on 16^3
    5.4 vs 6.6 (6 of 96), 48 on 16^3 4.3 vs 4.9 (4 of 128), 64 on 24^3 13.5 vs 19 (18 of
    96), and where the whole exceeds ``STAGED_BYTES`` (256 -> 128 on 24^3 73 vs 80, 128
    on 24^3 30 vs 45)."""
    rows, tiles_w = _tile_rows(spec)
    whole = 64 * (spec.in_per_group + spec.out_per_group) * rows * tiles_w * spec.compute_dtype.itemsize
    per_item = min(rows, block_rows(spec))
    items = spec.batch * spec.groups * -(-rows // per_item)
    block_tiles = per_item * tiles_w
    return ((block_tiles < STAGED_NARROW_TILES
             or block_tiles < STAGED_FEW_TILES and items < STAGED_FEW_ITEMS)
            and spec.batch * spec.groups * whole <= STAGED_BYTES)


def item_rows(spec) -> int:
    """Tile rows per work item: all of them where the kernels run :func:`staged`, else
    :func:`block_rows`."""
    return _tile_rows(spec)[0] if staged(spec) else block_rows(spec)


def scratch_size(spec, rows_per_item) -> int:
    """Elements of one scratch row: a work item's ``v`` and ``m``."""
    rows, tiles_w = _tile_rows(spec)
    return 64 * (spec.in_per_group + spec.out_per_group) * min(rows, rows_per_item) * tiles_w


def _scratch(spec, rows, rows_per_item) -> np.ndarray:
    """``rows`` scratch rows (one per thread that may run the kernel, or per item)."""
    return np.empty((rows, scratch_size(spec, rows_per_item)), spec.compute_dtype)


def _launcher(scratch_rows):
    """The forward's launcher for a kernel that uses ``scratch_rows(spec)`` scratch rows."""
    def launch_forward(run, spec, x, w6, bias, out):
        rows_per_item = item_rows(spec)
        ut = np.empty((spec.groups, 64, spec.out_per_group, spec.in_per_group), spec.compute_dtype)
        run(readonly(x), readonly(w6), readonly(bias), out, spec.kernel_geometry, rows_per_item,
            staged(spec), ut, _scratch(spec, scratch_rows(spec), rows_per_item))
    return launch_forward


def _parallel_scratch_rows(spec) -> int:
    """One per thread, or, staged, one per item (every item's stages are open at once)."""
    return spec.batch * spec.groups if staged(spec) else numba.get_num_threads()


#: Stages of the ``_part`` kernels, each ending when all of its parts have.
PART_STAGES = 2


def _in_parts(launcher, parts_now):
    """``launcher(scratch_rows)``'s kernel (one of the ``_part`` kernels) run in
    ``parts_now()`` parts on Python threads (kernels/parts.py), a scratch row each."""
    def launch_in_parts(run, spec, *operands):
        parts = parts_now()
        return launcher(lambda spec: parts)(
            lambda *arguments: run_in_parts(run, arguments, PART_STAGES, parts), spec, *operands)
    return launch_in_parts


def _in_parts_examples(examples):
    """The examples of a ``_part`` kernel: ``examples``' and (stage, part, parts)."""
    return lambda dtype: examples(dtype) + (0, 0, 1)


def _examples(dtype):
    return example_arrays(dtype, 5, 6, 1, 5) + (1, False, np.empty((1, 64, 6, 5), dtype),
                                                np.empty((1, 1), dtype))


#: Bytes of the weight gradient's partial sums at most (each holds 64 products per
#: weight pair, 2.4x the weight).
PARTIAL_BYTES = 64 << 20
#: Fixed number of partial sums (independent of the thread count) at most.
WEIGHT_GRAD_CHUNKS = 16


def weight_grad_chunks(spec) -> int:
    """Partial sums of the weight gradient: a function of the layer only (one where it
    runs :func:`staged`)."""
    if staged(spec):
        return 1
    rows, _ = _tile_rows(spec)
    items = spec.batch * spec.groups * -(-rows // block_rows(spec))
    chunk_bytes = spec.groups * 64 * spec.out_per_group * spec.in_per_group * spec.compute_dtype.itemsize
    return max(1, min(WEIGHT_GRAD_CHUNKS, items, PARTIAL_BYTES // chunk_bytes))


def _weight_grad_launcher(scratch_rows):
    """The weight gradient's launcher for a kernel that uses ``scratch_rows(spec)`` scratch
    rows."""
    def launch_weight_grad(run, spec, x, grad_out):
        dtype = spec.compute_dtype
        partial = np.zeros((weight_grad_chunks(spec), spec.groups, 64, spec.out_per_group,
                            spec.in_per_group), dtype)
        rows_per_item = item_rows(spec)
        gw = np.empty(spec.group_weight_shape, dtype)
        # The transform back to the taps runs in the kernel, per (group, output channel):
        # here, in numpy (the chunks summed in float64, one (27 x 64) matmul, a strided
        # rounding copy) it took 18 of a 50 ms call (256 -> 256 on 12^3).
        run(readonly(x), readonly(grad_out), partial, spec.kernel_geometry, rows_per_item,
            staged(spec), _scratch(spec, scratch_rows(spec), rows_per_item),
            gw.reshape(spec.groups, spec.out_per_group, spec.in_per_group, 27))
        return gw
    return launch_weight_grad


def _weight_grad_examples(dtype):
    return example_arrays(dtype, 5, 5, 5) + (1, False, np.empty((1, 1), dtype), np.empty((1, 1, 1, 27), dtype))


_DESCRIPTION = "Winograd F(2x2x2, 3x3x3) and BLAS: 3.4x fewer multiplications (3x3x3, stride 1, dilation 1)"
_WEIGHT_GRAD_DESCRIPTION = ("weight gradient by Winograd F(3x3x3, 2x2x2) and BLAS: 3.4x fewer "
                            "multiplications (3x3x3, stride 1, dilation 1)")
# Tiers of ``auto``, with the same bits: the numpy twins (kernels/winograd_numpy.py,
# nothing to compile) serve the first calls, then the kernels run in parts on Python
# threads (10 s to compile cold, Zen 4), then the prange kernels (40-44 s). The kernels in parts
# also serve processes forked after OpenMP started, and in one part on the calling
# thread ("_serial": the same compiled kernel). (The twins use no scratch: their
# launchers allocate zero rows of it.)
_TWINS = "numbaconv.kernels.winograd_numpy:"
_COMMON = dict(bitwise="winograd", blas=True, supports=supports, direct_sums=False)
register(name="winograd", computes=FORWARD, function=forward_winograd, examples=_examples,
         launch=_launcher(_parallel_scratch_rows), serial="winograd_threads",
         fallbacks=("winograd_threads", "winograd_numpy"), description=_DESCRIPTION, **_COMMON)
register(name="winograd_threads", computes=FORWARD, function=forward_winograd_part,
         examples=_in_parts_examples(_examples), launch=_in_parts(_launcher, thread_count),
         parallel=False, description=_DESCRIPTION + ", on Python threads", **_COMMON)
register(name="winograd_serial", computes=FORWARD, function=forward_winograd_part,
         examples=_in_parts_examples(_examples), launch=_in_parts(_launcher, lambda: 1),
         parallel=False, description=_DESCRIPTION + ", on the calling thread", **_COMMON)
register(name="winograd_numpy", computes=FORWARD, function=_TWINS + "forward_winograd",
         examples=lambda dtype: (), compiled=False, launch=_launcher(lambda spec: 0), parallel=False,
         description=_DESCRIPTION + ", in numpy (no compile)", **_COMMON)
register(name="wgrad_winograd", computes=WEIGHT_GRAD, function=weight_grad_winograd,
         examples=_weight_grad_examples, launch=_weight_grad_launcher(_parallel_scratch_rows),
         serial="wgrad_winograd_threads", fallbacks=("wgrad_winograd_threads", "wgrad_winograd_numpy"),
         description=_WEIGHT_GRAD_DESCRIPTION, **_COMMON)
register(name="wgrad_winograd_threads", computes=WEIGHT_GRAD, function=weight_grad_winograd_part,
         examples=_in_parts_examples(_weight_grad_examples),
         launch=_in_parts(_weight_grad_launcher, thread_count), parallel=False,
         description="the Winograd weight gradient on Python threads", **_COMMON)
register(name="wgrad_winograd_serial", computes=WEIGHT_GRAD, function=weight_grad_winograd_part,
         examples=_in_parts_examples(_weight_grad_examples),
         launch=_in_parts(_weight_grad_launcher, lambda: 1), parallel=False,
         description="the Winograd weight gradient on the calling thread", **_COMMON)
register(name="wgrad_winograd_numpy", computes=WEIGHT_GRAD, function=_TWINS + "weight_grad_winograd",
         examples=lambda dtype: (), compiled=False, launch=_weight_grad_launcher(lambda spec: 0),
         parallel=False, description="the Winograd weight gradient in numpy (no compile)", **_COMMON)
