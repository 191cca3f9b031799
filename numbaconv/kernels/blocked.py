"""Register-blocked direct kernels: the shared pieces and the Python-side packing.

The kernels themselves are generated (``blocked_codegen.py`` writes
``_blocked_generated.py``). Their contract, for every ``forward_c{cob}_v{vw}``:

    forward(x, wpack, bias, out, geometry, depth_chunk)

x: (N, Cin, D, H, W); wpack: (G, blocks, Cin/G*kD*kH*kW, cob) from :func:`pack_weights`;
bias: (Cout,); out: (N, Cout, Do, Ho, Wo), written in full; geometry: int64 (stride,
padding before, dilation, kernel, padding after; each D H W); depth_chunk: output depths per work item.

One ``prange`` iteration owns ``out[n, group, :, od0:od0 + depth_chunk]`` and copies
the input planes those depths read once.
Each output element is summed in the same order as the generic direct kernel (input
channel, kd, kh, kw; depth taps outside the input skipped; bias added last), with the
same fused multiply-adds, so the two agree bitwise.
"""
import numpy as np
from numba import njit

from .direct import depth_taps, fill_padded_planes, plane_geometry, tap_offset


def pack_weights(w: np.ndarray, cob: int) -> np.ndarray:
    """(G, Cout/G, Cin/G, kD, kH, kW) -> (G, blocks, Cin/G*kD*kH*kW, cob), the output
    channels padded with zeros to a multiple of ``cob``."""
    groups, cout_g = w.shape[:2]
    reduction = int(np.prod(w.shape[2:]))
    blocks = -(-cout_g // cob)
    packed = np.zeros((groups, blocks * cob, reduction), w.dtype)
    packed[:, :cout_g] = w.reshape(groups, cout_g, reduction)
    return np.ascontiguousarray(packed.reshape(groups, blocks, cob, reduction).transpose(0, 1, 3, 2))


@njit(cache=True, inline="always")
def chunk_planes(x, n, g, groups, od0, od1, geometry, slack):
    """The zero-bordered input planes that output depths [od0, od1) of (n, g) read.

    Returns (planes, zmin, nz): a flat buffer holding planes ``[ci][z - zmin]`` for the
    ``nz`` input depths from ``zmin`` (each plane copied once, however many output
    depths read it), then one zero plane (what taps outside the input in depth read),
    plus ``slack`` zeros so that the last tile may read past the end.
    """
    depth = x.shape[2]
    cin_g = x.shape[1] // groups
    sd, pd, dd, kd_ = geometry[0], geometry[3], geometry[6], geometry[9]
    phase_w, _, plane_size = plane_geometry(x, geometry)
    zmin = max(0, od0 * sd - pd)
    zmax = min(depth - 1, (od1 - 1) * sd + (kd_ - 1) * dd - pd)
    nz = max(0, zmax - zmin + 1)
    size = cin_g * nz * plane_size
    # Start on a cache line: a tile's vector load then touches one line, not two,
    # whenever the plane size and the tap offset are multiples of 64 bytes.
    raw = np.empty(size + plane_size + slack + 64 // x.itemsize, x.dtype)
    shift = ((64 - raw.ctypes.data % 64) % 64) // x.itemsize
    planes = raw[shift:shift + size + plane_size + slack]
    planes[size:] = 0
    fill_padded_planes(x, n, g * cin_g, cin_g, np.arange(zmin, zmin + nz),
                       planes[:size].reshape((cin_g, nz, plane_size)),
                       geometry[4], geometry[5], geometry[2], phase_w)
    return planes, zmin, nz


@njit(cache=True, inline="always")
def reduction_terms(wpack, g, od, zmin, nz, x, geometry):
    """The reduction terms (ci, kd, kh, kw) of output depth ``od`` in summation order:
    their offsets into :func:`chunk_planes`'s buffer (the zero plane for a depth tap
    outside the input; unsigned, so numba emits no negative-index wraparound, which
    would keep LLVM from vectorising the loads) and their weights, gathered as
    (blocks, terms, cob).
    """
    cin_g = x.shape[1] // wpack.shape[0]
    blocks, cob = wpack.shape[1], wpack.shape[3]
    sd, pd, dd = geometry[0], geometry[3], geometry[6]
    kd_, kh_, kw_ = geometry[9], geometry[10], geometry[11]
    phase_w, row_pitch, plane_size = plane_geometry(x, geometry)
    depth_index = depth_taps(od, sd, pd, dd, kd_, x.shape[2])
    terms = cin_g * kd_ * kh_ * kw_
    offsets = np.empty(terms, np.uint64)
    wsel = np.empty((blocks, terms, cob), wpack.dtype)
    count = 0
    zero_plane = cin_g * nz * plane_size
    for ci in range(cin_g):
        for t in range(kd_):
            z = depth_index[t]
            plane = zero_plane if z < 0 else (ci * nz + z - zmin) * plane_size
            for th in range(kh_):
                for tw in range(kw_):
                    offsets[count] = plane + tap_offset(th, tw, geometry, phase_w, row_pitch)
                    row = ((ci * kd_ + t) * kh_ + th) * kw_ + tw
                    for block in range(blocks):
                        wsel[block, count] = wpack[g, block, row]
                    count += 1
    return offsets[:count], wsel[:, :count]
