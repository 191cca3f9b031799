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
from numba import njit, prange

from .direct import depth_taps, fill_padded_planes, plane_geometry, plane_layout

#: Partial sums per dot product (one 512-bit vector of float32).
LANES = 16


@njit(parallel=True, cache=True, nogil=True, fastmath={"contract"})
def weight_grad_direct(x, grad_out, gw, geometry):
    """gw (G, Cout/G, Cin/G, kD, kH, kW), written in full, from x (N, Cin, D, H, W) and
    grad_out (N, Cout, Do, Ho, Wo); geometry as in the forward kernels."""
    n_batch, _, depth = x.shape[0], x.shape[1], x.shape[2]
    groups, cout_g, cin_g, kd_, kh_, kw_ = gw.shape
    out_d, out_h, out_w = grad_out.shape[2], grad_out.shape[3], grad_out.shape[4]
    sd, sh, sw, pd, ph, pw, dd, dh, dw = geometry[0], geometry[1], geometry[2], geometry[3], \
        geometry[4], geometry[5], geometry[6], geometry[7], geometry[8]
    phase_w, row_pitch, plane_size = plane_geometry(x, geometry)
    runs, run_length, acc_pitch = plane_layout(out_h, out_w, sh, sw, row_pitch)
    run_span = (run_length + LANES - 1) // LANES * LANES  # a run's positions, rounded up
    taps = kd_ * kh_ * kw_
    for item in prange(groups * cin_g):
        g = item // cin_g
        ci = item % cin_g
        acc = np.zeros((cout_g, taps, LANES), x.dtype)
        planes = np.zeros((1, kd_, plane_size + run_span), x.dtype)
        wide = np.zeros((cout_g, runs, run_span), x.dtype)  # grad_out, zero margins
        for n in range(n_batch):
            for od in range(out_d):
                depth_index = depth_taps(od, sd, pd, dd, kd_, depth)
                fill_padded_planes(x, n, g * cin_g + ci, 1, depth_index,
                                   planes[:, :, :plane_size], ph, pw, sw, phase_w)
                for co in range(cout_g):
                    src = grad_out[n, g * cout_g + co, od]
                    for oh in range(out_h):
                        if runs > 1:  # a run per output row
                            wide[co, oh, :out_w] = src[oh]
                        else:  # one run over the flat plane, rows acc_pitch apart
                            wide[co, 0, oh * acc_pitch:oh * acc_pitch + out_w] = src[oh]
                for t in range(kd_):
                    if depth_index[t] < 0:
                        continue
                    plane = planes[0, t]
                    for th in range(kh_):
                        for tw in range(kw_):
                            col = tw * dw
                            tap = (t * kh_ + th) * kw_ + tw
                            for r in range(runs):
                                base = ((r * sh + th * dh) * row_pitch
                                        + (col % sw) * phase_w + col // sw)
                                xs = plane[base:base + run_span]
                                for co in range(cout_g):
                                    gs = wide[co, r]
                                    a = acc[co, tap]
                                    for q0 in range(0, run_span, LANES):
                                        for lane in range(LANES):
                                            a[lane] += gs[q0 + lane] * xs[q0 + lane]
        for co in range(cout_g):
            for tap in range(taps):
                total = acc[co, tap, 0]
                for lane in range(1, LANES):
                    total += acc[co, tap, lane]
                t = tap // (kh_ * kw_)
                th = (tap // kw_) % kh_
                tw = tap % kw_
                gw[g, co, ci, t, th, tw] = total
