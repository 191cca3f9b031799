"""Register-blocked direct kernels: the shared pieces and the Python-side packing.

The kernels themselves are generated (``blocked_codegen.py`` writes
``_blocked_generated.py``). Their contract, for every ``forward_c{cob}_v{vw}``:

    forward(x, wpack, bias, out, geometry, depth_chunk, pass_terms)

x: (N, Cin, D, H, W); wpack: (G, blocks, Cin/G*kD*kH*kW, cob) from :func:`pack_weights`;
bias: (Cout,); out: (N, Cout, Do, Ho, Wo), written in full; geometry: the convolution's
packed ``Geometry``; depth_chunk: output depths per work item; pass_terms: reduction
terms per pass (a multiple of kD*kH*kW, see :func:`pass_terms`).

One ``prange`` iteration owns ``out[n, group, :, od0:od0 + depth_chunk]`` and copies
the input planes those depths read once. ``forward_c{cob}_v{vw}_rows2`` has the same
contract for layers of stride and dilation 1 along H: its block holds two output rows
(vw positions of each, from a row's start), whose taps read the same input rows.
Each output element is summed in the same order as the generic direct kernel (input
channel, kd, kh, kw; depth taps outside the input read a zero plane, as the direct
kernel's zero-filled planes; bias added last), with the same fused multiply-adds, so
the two agree bitwise.
"""
import functools
import math

import numba
import numpy as np
from numba import njit

from .. import _cpu
from .blocked_codegen import ROW_PAIR_VARIANTS, VARIANTS
from .direct import depth_taps, fill_padded_planes, tap_offset
from .registry import FORWARD, example_arrays, readonly, register


def pack_weights(w: np.ndarray, cob: int) -> np.ndarray:
    """(G, Cout/G, Cin/G, kD, kH, kW) -> (G, blocks, Cin/G*kD*kH*kW, cob), the output
    channels padded with zeros to a multiple of ``cob``.

    One transposing copy into an empty array, and zeros only in a partial last block
    (512 x 512 x 27 float32: 4.9 ms, where zeroing, copying and transposing took 12)."""
    groups, cout_g = w.shape[:2]
    reduction = int(np.prod(w.shape[2:]))
    blocks, full = -(-cout_g // cob), cout_g // cob
    rows = w.reshape(groups, cout_g, reduction)
    packed = np.empty((groups, blocks, reduction, cob), w.dtype)
    packed[:, :full] = rows[:, :full * cob].reshape(groups, full, cob, reduction).transpose(0, 1, 3, 2)
    if full < blocks:
        packed[:, full] = 0
        packed[:, full, :, :cout_g - full * cob] = rows[:, full * cob:].transpose(0, 2, 1)
    return packed


@njit(cache=True, inline="always")
def chunk_planes(x, n, g, groups, od0, od1, geo, slack):
    """The zero-bordered input planes that output depths [od0, od1) of (n, g) read.

    Returns (planes, zmin, nz): a flat buffer holding planes ``[ci][z - zmin]`` for the
    ``nz`` input depths from ``zmin`` (each plane copied once, however many output
    depths read it), then one zero plane (what taps outside the input in depth read),
    plus ``slack`` zeros so that the last tile may read past the end.
    """
    depth = x.shape[2]
    cin_g = x.shape[1] // groups
    plane_size = geo.plane_size
    zmin = max(0, od0 * geo.stride_d - geo.pad_d)
    zmax = min(depth - 1, (od1 - 1) * geo.stride_d + (geo.kernel_d - 1) * geo.dilation_d - geo.pad_d)
    nz = max(0, zmax - zmin + 1)
    size = cin_g * nz * plane_size
    # Start on a cache line: a tile's vector load then touches one line, not two,
    # whenever the plane size and the tap offset are multiples of 64 bytes.
    raw = np.empty(size + plane_size + slack + 64 // x.itemsize, x.dtype)
    shift = ((64 - raw.ctypes.data % 64) % 64) // x.itemsize
    planes = raw[shift:shift + size + plane_size + slack]
    planes[size:] = 0
    fill_padded_planes(x, n, g * cin_g, cin_g, np.arange(zmin, zmin + nz),
                       planes[:size].reshape((cin_g, nz, plane_size)), geo)
    return planes, zmin, nz


@njit(cache=True, inline="always")
def reduction_terms(wpack, g, od, zmin, nz, x, geo):
    """The reduction terms (ci, kd, kh, kw) of output depth ``od`` in summation order:
    their offsets into :func:`chunk_planes`'s buffer (the zero plane for a depth tap
    outside the input; unsigned, so numba emits no negative-index wraparound, which
    would keep LLVM from vectorising the loads) and their weights (blocks, terms, cob).

    Every term is kept (a depth tap outside the input reads the zero plane), so the
    weights are ``wpack[g]`` as packed, read in place: copying them per output depth
    cost 5-15% on small planes (128 -> 128 on 12^3, 6^3).
    """
    cin_g = x.shape[1] // wpack.shape[0]
    kd_, kh_, kw_ = geo.kernel_d, geo.kernel_h, geo.kernel_w
    plane_size = geo.plane_size
    depth_index = depth_taps(od, geo, x.shape[2])
    terms = cin_g * kd_ * kh_ * kw_
    offsets = np.empty(terms, np.uint64)
    count = 0
    zero_plane = cin_g * nz * plane_size
    for ci in range(cin_g):
        for t in range(kd_):
            z = depth_index[t]
            plane = zero_plane if z < 0 else (ci * nz + z - zmin) * plane_size
            for th in range(kh_):
                for tw in range(kw_):
                    offsets[count] = plane + tap_offset(th, tw, geo)
                    count += 1
    return offsets, wpack[g]


# ---- Declarations -----------------------------------------------------------------------
#: Upper bound on the input planes one blocked work item copies.
CHUNK_PLANE_BYTES = 8 << 20


def depth_chunk(spec) -> int:
    """Output depths per blocked work item. A first count keeps >= 4 items per thread
    and the item's input planes within ``CHUNK_PLANE_BYTES``; then the largest count
    (within the same bound) that gives no thread more output depths than that one:
    numba's ``prange`` hands each thread an equal share of the items, so larger items
    balance as well, and each item copies the input planes its depths read once, which
    for few channels costs more than the sums (a 5^3 single-channel float64 slab of 11
    depths on 260^2 planes: 11 items copying 5 planes each, 2 items copying 10 and 9).
    Computed per call: it depends on numba's (changeable) thread count, never on the
    result."""
    return _depth_chunk(spec.out_size[0], spec.batch * spec.groups, numba.get_num_threads(),
                        spec.stride[0], spec.dilation[0], spec.kernel[0], spec.in_size[0],
                        spec.plane_bytes // spec.kernel[0])


@functools.lru_cache(maxsize=256)
def _depth_chunk(out_d, per_depth, threads, sd, dd, kd, in_d, plane) -> int:
    def planes_fit(chunk):  # one group's input planes that ``chunk`` output depths read
        return min(in_d, (chunk - 1) * sd + (kd - 1) * dd + 1) * plane <= CHUNK_PLANE_BYTES

    def busiest(chunk):  # output depths of the busiest thread
        items = per_depth * -(-out_d // chunk)
        return -(-items // threads) * chunk

    chunk = out_d
    while chunk > 1 and (per_depth * -(-out_d // chunk) < 4 * threads or not planes_fit(chunk)):
        chunk = -(-chunk // 2)
    load = busiest(chunk)
    larger = chunk + 1
    while larger <= out_d and planes_fit(larger):
        if busiest(larger) <= load:
            chunk = larger
        larger += 1
    return chunk


#: Share of the L2 cache (per core) that one reduction pass's weights may fill; the rest
#: holds the input lines and partial sums the pass touches.
PASS_L2_SHARE = 0.5
L2_FALLBACK_BYTES = 1 << 20  # where the L2 size cannot be read


def pass_terms(spec, cob) -> int:
    """Reduction terms per pass of the blocked kernel: as many whole input channels as
    keep the pass's weights for every output block within ``PASS_L2_SHARE`` of L2, so
    that deep layers reuse them from L2 across all tiles instead of streaming them from
    memory for each tile. The order of each sum's terms does not change."""
    taps = math.prod(spec.kernel)
    padded_cout = -(-spec.out_per_group // cob) * cob
    per_channel = taps * padded_cout * np.dtype(spec.compute_dtype).itemsize
    l2 = _cpu.target().l2_bytes or L2_FALLBACK_BYTES
    channels = max(1, int(l2 * PASS_L2_SHARE) // per_channel)
    return min(spec.in_per_group, channels) * taps


def _launcher(cob):
    def launch_blocked(run, spec, x, w6, bias, out):
        run(readonly(x), readonly(pack_weights(w6, cob)), readonly(bias), out, spec.kernel_geometry,
            depth_chunk(spec), pass_terms(spec, cob))
    return launch_blocked


def _examples(dtype):
    return example_arrays(dtype, 5, 4, 1, 5) + (1, 1)


def _consecutive_rows(spec):
    """Why the row-pair kernels cannot compute ``spec`` (None: they can): the two rows
    of a pair share their input rows only at stride and dilation 1 along H."""
    geo = spec.geometry
    if geo.stride_h != 1 or geo.dilation_h != 1:
        return "the row-pair block needs stride and dilation 1 along H"
    return None


# All are declared; the dispatcher picks the target CPU's. (name suffix, function suffix,
# what the block holds, what it supports)
for _variants, _suffix, _function, _rows, _supports in (
        (VARIANTS, "", "", "", None),
        (ROW_PAIR_VARIANTS, "r2", "_rows2", " of two output rows", _consecutive_rows)):
    for _cob, _vw in _variants:
        register(name=f"blocked{_cob}x{_vw}{_suffix}", computes=FORWARD,
                 function=f"numbaconv.kernels._blocked_generated:forward_c{_cob}_v{_vw}{_function}",
                 examples=_examples, launch=_launcher(_cob), plane_memory=True,
                 serial="direct_serial", fallbacks=("direct", "direct_serial"), variant_of="blocked",
                 supports=_supports,
                 description=f"register-blocked direct kernel: {_cob} output channels x {_vw} "
                             f"positions{_rows} in registers (generated)")
