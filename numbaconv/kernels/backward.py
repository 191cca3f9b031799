"""The direct weight-gradient kernel: a correlation of the input with grad_output.

    gw[g, co, ci, kd, kh, kw] = sum over n, od, oh, ow of
        grad_out[n, g*Cout/G + co, od, oh, ow] * x_padded[n, g*Cin/G + ci, od*sD + kd*dD, ...]

It reuses the forward kernels' index arithmetic: the input planes are the same
zero-bordered, phase-split planes, and output positions are walked in the same runs,
so a tap is a constant offset. grad_output is laid out "wide" (zeros in the margin
columns) so that each tap is one dot product over contiguous positions. Dot products are
kept in ``LANES`` partial sums (vectorised) and summed in a fixed order at the end:
one ``prange`` item per (group, input channel) owns its weights' gradients, so the result
does not depend on the thread count.

Input planes are copied once per (n, od) per item, so this kernel suits layers with few
channels per group (depthwise); the GEMM path serves dense layers.
"""
import numpy as np
from numba import njit

from .direct import depth_taps, fill_padded_planes, plane_geometry, plane_layout, tap_offset

#: Partial sums per dot product (one 512-bit vector of float32).
LANES = 16
#: Positions per piece in the register-blocked kernel (a multiple of LANES).
POSITION_CHUNK = 1024


@njit(cache=True, inline="always")
def wgrad_layout(x, grad_out, geometry):
    """(runs, run_span, row_pitch, plane_size): output positions walked as in the forward
    kernels, each run rounded up to whole ``LANES``."""
    phase_w, row_pitch, plane_size = plane_geometry(x, geometry)
    runs, run_length, _ = plane_layout(grad_out.shape[3], grad_out.shape[4], geometry[1],
                                       geometry[2], row_pitch)
    return runs, (run_length + LANES - 1) // LANES * LANES, row_pitch, plane_size


@njit(cache=True, inline="always")
def wgrad_prepare(x, grad_out, n, od, ci, co0, co_end, geometry, planes, wide, tap_ids, offsets):
    """Load what output depth ``od`` of batch ``n`` contributes to the gradients of input
    channel ``ci`` and output channels ``co0 .. min(co_end, co0 + len(wide))`` (absolute
    channel indices).

    planes: (kD * plane_size + slack,) flat zero-bordered input planes, one per kd tap;
    wide: (channels, runs, run_span) grad_out in run layout (margins stay zero: they
    must be zero on entry); tap_ids/offsets: for each tap whose depth is inside the
    input, in (kd, kh, kw) order, its flattened index and its offset into ``planes``.
    Returns the number of such taps.
    """
    sd, sh, sw, pd, ph, pw = geometry[0], geometry[1], geometry[2], geometry[3], geometry[4], geometry[5]
    dd, kd_, kh_, kw_ = geometry[6], geometry[9], geometry[10], geometry[11]
    phase_w, row_pitch, plane_size = plane_geometry(x, geometry)
    runs, run_length, acc_pitch = plane_layout(grad_out.shape[3], grad_out.shape[4], sh, sw, row_pitch)
    depth_index = depth_taps(od, sd, pd, dd, kd_, x.shape[2])
    fill_padded_planes(x, n, ci, 1, depth_index,
                       planes[:kd_ * plane_size].reshape((1, kd_, plane_size)), ph, pw, sw, phase_w)
    out_h, out_w = grad_out.shape[3], grad_out.shape[4]
    for c in range(min(wide.shape[0], co_end - co0)):
        src = grad_out[n, co0 + c, od]
        for oh in range(out_h):
            if runs > 1:  # a run per output row
                wide[c, oh, :out_w] = src[oh]
            else:  # one run over the flat plane, rows acc_pitch apart
                wide[c, 0, oh * acc_pitch:oh * acc_pitch + out_w] = src[oh]
    count = 0
    for t in range(kd_):  # a tap outside the input in depth reads a zero plane
        for th in range(kh_):
            for tw in range(kw_):
                tap_ids[count] = (t * kh_ + th) * kw_ + tw
                offsets[count] = t * plane_size + tap_offset(th, tw, geometry, phase_w, row_pitch)
                count += 1
    return count


@njit(cache=True, inline="always")
def sum_lanes(lanes, gw, g, co0, ci):
    """gw[g, co0 + c, ci, tap] = the sum of lanes[tap, c, :] in lane order."""
    kd_, kh_, kw_ = gw.shape[3], gw.shape[4], gw.shape[5]
    for c in range(min(lanes.shape[1], gw.shape[1] - co0)):
        for tap in range(kd_ * kh_ * kw_):
            total = lanes[tap, c, 0]
            for lane in range(1, LANES):
                total += lanes[tap, c, lane]
            gw[g, co0 + c, ci, tap // (kh_ * kw_), (tap // kw_) % kh_, tap % kw_] = total


@njit(cache=True, inline="always")
def weight_grad_direct_item(x, grad_out, gw, geometry, item):
    """Item ``item`` = (group, input channel) of the direct weight gradient: gw (G,
    Cout/G, Cin/G, kD, kH, kW) from x (N, Cin, D, H, W) and grad_out (N, Cout, Do, Ho,
    Wo). Its parallel driver, ``weight_grad_direct``, lives in the generated module so
    that numba's disk cache is invalidated when these helpers change."""
    groups, cout_g, cin_g, kd_, kh_, kw_ = gw.shape
    runs, run_span, row_pitch, plane_size = wgrad_layout(x, grad_out, geometry)
    sh = geometry[1]
    taps = kd_ * kh_ * kw_
    g = item // cin_g
    ci = item % cin_g
    lanes = np.zeros((taps, cout_g, LANES), x.dtype)
    planes = np.zeros(kd_ * plane_size + run_span, x.dtype)
    wide = np.zeros((cout_g, runs, run_span), x.dtype)
    tap_ids = np.empty(taps, np.int64)
    offsets = np.empty(taps, np.int64)
    for n in range(x.shape[0]):
        for od in range(grad_out.shape[2]):
            count = wgrad_prepare(x, grad_out, n, od, g * cin_g + ci, g * cout_g,
                                  (g + 1) * cout_g, geometry, planes, wide, tap_ids, offsets)
            for i in range(count):
                for r in range(runs):
                    base = r * sh * row_pitch + offsets[i]
                    xs = planes[base:base + run_span]
                    for c in range(cout_g):
                        gs = wide[c, r]
                        a = lanes[tap_ids[i], c]
                        for q0 in range(0, run_span, LANES):
                            for lane in range(LANES):
                                a[lane] += gs[q0 + lane] * xs[q0 + lane]
    sum_lanes(lanes, gw, g, 0, ci)
