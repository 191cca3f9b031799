"""The Winograd kernels' twins in numpy: the same transforms, the same work items and BLAS
calls, the same bits, and nothing to compile.

``auto`` serves a new Winograd layer's first calls from these while the compiled
kernels compile: the serial kernels take 9 s each to compile on a 2-core machine, the
parallel ones 40-45 s. Every transform step is one add, subtract or negation per
element, done here in the kernels' order over whole blocks; the weight transform is the
same float64 expression, rounded once; the products are :func:`gemm_numpy.dot` and
:func:`gemm_numpy.product_nt_add`, the kernels' own BLAS calls, per work item as in the
kernels (see :mod:`numbaconv.kernels.winograd` for the algorithm; its staged mode gives
the same bits as item by item).
"""
import numpy as np

from .gemm_numpy import dot, product_nt_add
from .geometry import Geometry
from .winograd import G_ROWS


def _apply_g(rows):
    """G along the second-last axis (length 3 -> 4): float64 ``rows`` (..., 3, M) ->
    (..., 4, M), each value g0 k0 + g1 k1 + g2 k2 summed left to right."""
    k0, k1, k2 = rows[..., 0, :], rows[..., 1, :], rows[..., 2, :]
    return np.stack([g0 * k0 + g1 * k1 + g2 * k2 for g0, g1, g2 in G_ROWS], axis=-2)


def transformed_weights(w6, dtype):
    """(G, 64, Cout/G, Cin/G): ``winograd.transformed_weights`` for every (g, co, ci).
    G along width, then height, then depth, in float64, rounded once to ``dtype``; every
    step on rows of all (g, co, ci) at once (by kernel, it took 110 ms for 256 x 256)."""
    groups, cout_g, cin_g = w6.shape[:3]
    taps = np.ascontiguousarray(w6.reshape(-1, 27).T, np.float64)  # (27, G*Co*Ci)
    along_w = _apply_g(taps.reshape(3, 3, 3, -1))                   # (3, 3, 4, M): kd, kh, c
    along_h = _apply_g(along_w.transpose(0, 2, 1, 3))              # (3, 4, 4, M): kd, c, b
    u = _apply_g(along_h.transpose(2, 1, 0, 3))                    # (4, 4, 4, M): b, c, a
    u = u.transpose(2, 0, 1, 3).reshape(64, groups, cout_g, cin_g)  # (a, b, c) order
    return np.ascontiguousarray(u.transpose(1, 0, 2, 3)).astype(dtype)


def _b_t(d, axis):
    """B^T along ``axis`` (4 values -> 4): d0 - d2, d1 + d2, d2 - d1, d1 - d3."""
    d0, d1, d2, d3 = (np.take(d, i, axis=axis) for i in range(4))
    return np.stack([d0 - d2, d1 + d2, d2 - d1, d1 - d3], axis=axis)


def _a_t(m, axis):
    """A^T along ``axis`` (4 values -> 2): m0 + m1 + m2, m1 - m2 - m3."""
    m0, m1, m2, m3 = (np.take(m, i, axis=axis) for i in range(4))
    return np.stack([m0 + m1 + m2, m1 - m2 - m3], axis=axis)


def _a(y, axis):
    """A along ``axis`` (2 values -> 4): y0, y0 + y1, y0 - y1, -y1."""
    y0, y1 = np.take(y, 0, axis=axis), np.take(y, 1, axis=axis)
    return np.stack([y0, y0 + y1, y0 - y1, -y1], axis=axis)


def _zero_bordered(source, corner, tiles, dtype):
    """(C, 2*tiles_d + 2, 2*tiles_h + 2, 2*tiles_w + 2): ``source`` (C, D, H, W) placed at
    ``corner``, zeros elsewhere (every tile's window then lies inside)."""
    shape = tuple(2 * t + 2 for t in tiles)
    padded = np.zeros((source.shape[0],) + shape, dtype)
    ends = [min(c + s, size) for c, s, size in zip(corner, source.shape[1:], shape)]
    padded[:, corner[0]:ends[0], corner[1]:ends[1], corner[2]:ends[2]] = \
        source[:, :ends[0] - corner[0], :ends[1] - corner[1], :ends[2] - corner[2]]
    return padded


def _tile_rows(padded, tiles_h, r0, r1, depth):
    """(C, rows, depth, 4, Wp): the ``depth`` planes and 4 rows of tile rows [r0, r1) of
    a zero-bordered volume (tile row r: tz = r // tiles_h, ty = r % tiles_h)."""
    rows = np.arange(r0, r1)
    z = 2 * (rows // tiles_h)[:, None] + np.arange(depth)
    y = 2 * (rows % tiles_h)[:, None] + np.arange(4)
    return padded[:, z[:, :, None], y[:, None, :], :]


def input_block(padded, tiles, r0, r1):
    """``winograd.input_block``'s v (64, Cin/G, (r1 - r0) * tiles_w): B^T along depth,
    height, then width of every input tile of tile rows [r0, r1)."""
    tiles_w = tiles[2]
    d = _b_t(_b_t(_tile_rows(padded, tiles[1], r0, r1, 4), 2), 3)  # (C, rows, 4a, 4b, Wp)
    even, odd = d[..., 0::2], d[..., 1::2]
    d0, d1, d2, d3 = even[..., :tiles_w], odd[..., :tiles_w], even[..., 1:], odd[..., 1:tiles_w + 1]
    v = np.stack([d0 - d2, d1 + d2, d2 - d1, d1 - d3], axis=4)  # (C, rows, a, b, c, tiles_w)
    return np.ascontiguousarray(v.transpose(2, 3, 4, 0, 1, 5)).reshape(64, padded.shape[0], -1)


def grad_block(padded_grad, tiles, r0, r1):
    """``winograd.grad_block``'s u (64, Cout/G, (r1 - r0) * tiles_w): A along width,
    height, then depth of every grad_output tile of tile rows [r0, r1)."""
    g = _tile_rows(padded_grad, tiles[1], r0, r1, 2)[:, :, :, :2]  # (C, rows, dz, dy, Wp)
    even, odd = g[..., 0:2 * tiles[2]:2], g[..., 1:2 * tiles[2]:2]
    w = np.stack([even, even + odd, even - odd, -odd], axis=4)  # (C, rows, dz, dy, c, tw)
    u = _a(_a(w, 3), 2)  # (C, rows, a, b, c, tw)
    return np.ascontiguousarray(u.transpose(2, 3, 4, 0, 1, 5)).reshape(64, padded_grad.shape[0], -1)


def _tiles(out_shape):
    """The output's 2x2x2 tiles along (depth, height, width)."""
    return tuple(-(-size // 2) for size in out_shape[2:])


def _items(out_shape, groups, block_rows):
    """The kernels' work items in order: (n, g, r0, r1)."""
    tiles_d, tiles_h, _ = _tiles(out_shape)
    rows = tiles_d * tiles_h
    blocks = -(-rows // block_rows)
    for item in range(out_shape[0] * groups * blocks):
        rest, block = divmod(item, blocks)
        n, g = divmod(rest, groups)
        yield n, g, block * block_rows, min(rows, (block + 1) * block_rows)


def forward_winograd(x, w6, bias, out, geometry, block_rows, staged, ut, scratch):
    """:func:`winograd.forward_winograd`, same arguments (``staged``, ``ut`` and
    ``scratch`` unused: item by item gives the same bits), same bits."""
    groups, cout_g, cin_g = w6.shape[:3]
    geo = Geometry(*geometry.tolist())
    pads = (geo.pad_d, geo.pad_h, geo.pad_w)
    tiles = _tiles(out.shape)
    ut = transformed_weights(w6, x.dtype)
    rows_total = tiles[0] * tiles[1]
    padded, tiled = None, None
    for n, g, r0, r1 in _items(out.shape, groups, block_rows):
        if r0 == 0:  # a (sample, group)'s first block: its items come in row order
            padded = _zero_bordered(x[n, g * cin_g:(g + 1) * cin_g], pads, tiles, x.dtype)
            # (Cout/G, tile rows, dz, dy, tiles_w, dx): the output's 2x2x2 tiles
            tiled = np.empty((cout_g, rows_total, 2, 2, tiles[2], 2), x.dtype)
        v = input_block(padded, tiles, r0, r1)
        m = np.stack([dot(ut[g, xi], v[xi]) for xi in range(64)])
        m = m.reshape(4, 4, 4, cout_g, r1 - r0, tiles[2])
        y = _a_t(_a_t(_a_t(m, 2), 1), 0)  # (dz, dy, dx, Cout/G, rows, tiles_w)
        y = y + bias[g * cout_g:(g + 1) * cout_g, None, None]
        tiled[:, r0:r1] = y.transpose(3, 4, 0, 1, 5, 2)
        if r1 == rows_total:
            volume = tiled.reshape(cout_g, tiles[0], tiles[1], 2, 2, tiles[2], 2) \
                .transpose(0, 1, 3, 2, 4, 5, 6).reshape(cout_g, 2 * tiles[0], 2 * tiles[1], 2 * tiles[2])
            out[n, g * cout_g:(g + 1) * cout_g] = volume[:, :out.shape[2], :out.shape[3], :out.shape[4]]


def _back_to_taps(p, axis):
    """:func:`winograd.back_to_taps` along ``axis`` (4 -> 3), the same sums."""
    p0, p1, p2, p3 = (np.take(p, i, axis) for i in range(4))
    return np.stack([p0 + 0.5 * p1 + 0.5 * p2, 0.5 * p1 - 0.5 * p2, 0.5 * p1 + 0.5 * p2 + p3], axis)


def taps_from_products(partial, gw):
    """:func:`winograd.taps_from_products` for every (g, co): gw (G, Cout/G, Cin/G, 27)
    from partial (chunks, G, 64, Cout/G, Cin/G), the same bits."""
    sums = partial[0].astype(np.float64)
    for chunk in partial[1:]:
        sums += chunk
    groups, _, cout_g, cin_g = sums.shape
    p = sums.reshape(groups, 4, 4, 4, cout_g, cin_g)
    t = _back_to_taps(_back_to_taps(_back_to_taps(p, 3), 2), 1)  # (G, kd, kh, kw, Co, Ci)
    gw[...] = t.reshape(groups, 27, cout_g, cin_g).transpose(0, 2, 3, 1)


def weight_grad_winograd(x, grad_out, partial, geometry, block_rows, staged, scratch, gw):
    """:func:`winograd.weight_grad_winograd`, same arguments (``staged`` and ``scratch``
    unused: item by item gives the same bits), same bits: ``partial[chunk]`` sums the
    products of its fixed range of work items, and ``gw`` gets the taps."""
    chunks, groups, _, cout_g, cin_g = partial.shape
    geo = Geometry(*geometry.tolist())
    pads = (geo.pad_d, geo.pad_h, geo.pad_w)
    tiles = _tiles(grad_out.shape)
    items = list(_items(grad_out.shape, groups, block_rows))
    loaded, padded, padded_grad = None, None, None
    for chunk in range(chunks):
        for n, g, r0, r1 in items[chunk * len(items) // chunks:(chunk + 1) * len(items) // chunks]:
            if loaded != (n, g):
                loaded = (n, g)
                padded = _zero_bordered(x[n, g * cin_g:(g + 1) * cin_g], pads, tiles, x.dtype)
                padded_grad = _zero_bordered(grad_out[n, g * cout_g:(g + 1) * cout_g], (0, 0, 0),
                                             tiles, x.dtype)
            v = input_block(padded, tiles, r0, r1)
            u = grad_block(padded_grad, tiles, r0, r1)
            for xi in range(64):
                product_nt_add(u[xi], v[xi], partial[chunk, g, xi])
    taps_from_products(partial, gw)
