"""Register-blocked direct kernels: the shared pieces and the Python-side packing.

The kernels themselves are generated (``blocked_codegen.py`` writes
``_blocked_generated.py``). Their contract, for every ``forward_c{cob}_v{vw}``:

    forward(x, wpack, bias, out, geometry)

x: (N, Cin, D, H, W); wpack: (G, blocks, Cin/G*kD*kH*kW, cob) from :func:`pack_weights`;
bias: (Cout,); out: (N, Cout, Do, Ho, Wo), written in full; geometry: int64 (stride,
padding, dilation, kernel; each D H W). One ``prange`` iteration owns ``out[n, group, :, od]``.
Each output element is summed in the same order as the generic direct kernel (input
channel, kd, kh, kw; depth taps outside the input skipped; bias added last), with the
same fused multiply-adds, so the two agree bitwise.
"""
import numpy as np
from numba import njit


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
def reduction_offsets(depth_index, cin_g, geometry, phase_w, row_pitch, plane_size):
    """For each reduction term (ci, kd, kh, kw) whose depth tap is inside the input:
    its offset in the flat plane buffer and its row in the packed weights."""
    stride_w, dh, dw = geometry[2], geometry[7], geometry[8]
    kd_, kh_, kw_ = geometry[9], geometry[10], geometry[11]
    offsets = np.empty(cin_g * kd_ * kh_ * kw_, np.int64)
    rows = np.empty(cin_g * kd_ * kh_ * kw_, np.int64)
    count = 0
    for ci in range(cin_g):
        for t in range(kd_):
            if depth_index[t] < 0:
                continue
            for th in range(kh_):
                for tw in range(kw_):
                    col = tw * dw
                    offsets[count] = ((ci * kd_ + t) * plane_size + th * dh * row_pitch
                                      + (col % stride_w) * phase_w + col // stride_w)
                    rows[count] = ((ci * kd_ + t) * kh_ + th) * kw_ + tw
                    count += 1
    return offsets[:count], rows[:count]
