"""A naive float64 numpy reference for conv3d, written from the formula.

It shares no code with the package's kernels: it pads with numpy, loops over kernel taps
and uses einsum over channels, all in float64.

    out[n, g*Cout/G + o, z, y, x] = bias[g*Cout/G + o]
        + sum_{c, kd, kh, kw} w[g, o, c, kd, kh, kw]
                              * inp_padded[n, g*Cin/G + c, z*sD + kd*dD, y*sH + kh*dH, x*sW + kw*dW]
"""
import numpy as np


def triple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


def to_grouped(weight, groups):
    """Any accepted weight layout as float64 (G, Cout/G, Cin/G, kD, kH, kW)."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 6:
        return w
    return w.reshape((groups, w.shape[0] // groups) + w.shape[1:])


def conv3d_reference(inp, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                     conv_mode="cross_correlation"):
    """float64 result of a 3-D convolution (zero padding)."""
    x = np.asarray(inp, dtype=np.float64)
    w = to_grouped(weight, groups)
    if conv_mode.lower() == "convolution":
        w = w[..., ::-1, ::-1, ::-1]
    s, p, d = triple(stride), triple(padding), triple(dilation)
    n, cin = x.shape[:2]
    g, cout_g, cin_g = w.shape[:3]
    k = w.shape[3:]
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple((pi, pi) for pi in p))
    out_size = [(x.shape[2 + i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(3)]
    out = np.zeros((n, g * cout_g) + tuple(out_size))
    for gi in range(g):
        xg = xp[:, gi * cin_g:(gi + 1) * cin_g]
        for kd in range(k[0]):
            for kh in range(k[1]):
                for kw in range(k[2]):
                    patch = xg[:, :,
                               kd * d[0]: kd * d[0] + s[0] * (out_size[0] - 1) + 1: s[0],
                               kh * d[1]: kh * d[1] + s[1] * (out_size[1] - 1) + 1: s[1],
                               kw * d[2]: kw * d[2] + s[2] * (out_size[2] - 1) + 1: s[2]]
                    out[:, gi * cout_g:(gi + 1) * cout_g] += np.einsum(
                        "ncdhw,oc->nodhw", patch, w[gi, :, :, kd, kh, kw])
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64).reshape(1, -1, 1, 1, 1)
    return out
