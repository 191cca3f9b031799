"""The naive float64 reference for conv3d, written from the formula: the one oracle.

The tests, ``python -m numbaconv`` and the benchmark check numbaconv against it. It
shares no code with the package (it imports only numpy): it pads with ``np.pad``, loops
over kernel taps and uses einsum over channels, all in float64.

    out[n, g*Cout/G + o, z, y, x] = bias[g*Cout/G + o]
        + sum_{c, kd, kh, kw} w[g, o, c, kd, kh, kw]
                              * inp_padded[n, g*Cin/G + c, z*sD + kd*dD, y*sH + kh*dH, x*sW + kw*dW]
"""
import numpy as np

__all__ = ["conv3d_reference", "conv_transpose3d_reference", "explicit_padding", "pad_reference",
           "to_grouped", "triple"]

#: numpy's np.pad names for PyTorch's padding modes (written here again on purpose: the
#: oracle shares nothing with the code it checks).
NUMPY_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                   "circular": "wrap"}


def triple(v):
    """An int or 3 ints as a tuple of 3 Python ints."""
    if isinstance(v, (tuple, list, np.ndarray)):
        return tuple(int(i) for i in v)
    return (int(v),) * 3


def to_grouped(weight, groups):
    """Any accepted weight layout as float64 (G, Cout/G, Cin/G, kD, kH, kW)."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 6:
        return w
    return w.reshape((groups, w.shape[0] // groups) + w.shape[1:])


def explicit_padding(padding, kernel, dilation=1):
    """[(before, after)] per axis for an int, 3 ints, "valid" or "same" (PyTorch's
    documented rule for "same": an odd total puts the extra element after)."""
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * 3
        totals = [d * (k - 1) for k, d in zip(kernel, triple(dilation))]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in triple(padding)]


def pad_reference(x, kernel, padding=0, dilation=1, padding_mode="zeros"):
    """``x`` (N, C, D, H, W) as float64, padded as ``padding`` and ``padding_mode`` say,
    so that an unpadded convolution of the result is the padded convolution of ``x``."""
    widths = [(0, 0), (0, 0)] + explicit_padding(padding, kernel, dilation)
    return np.pad(np.asarray(x, np.float64), widths, mode=NUMPY_PAD_MODES[padding_mode])


def conv3d_reference(inp, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                     conv_mode="cross_correlation", padding_mode="zeros"):
    """float64 result of a 3-D convolution; arguments as :func:`numbaconv.conv3d`."""
    w = to_grouped(weight, groups)
    if conv_mode.lower() == "convolution":
        w = w[..., ::-1, ::-1, ::-1]
    s, d = triple(stride), triple(dilation)
    g, cout_g, cin_g = w.shape[:3]
    k = w.shape[3:]
    xp = pad_reference(inp, k, padding, dilation, padding_mode)
    n = xp.shape[0]
    out_size = [(xp.shape[2 + i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(3)]
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


def conv_transpose3d_reference(inp, weight, bias=None, stride=1, padding=0, output_padding=0,
                               dilation=1, groups=1):
    """float64 result of a 3-D transposed convolution, from its scatter formula (not as
    a convolution's input gradient); arguments as :func:`numbaconv.conv_transpose3d`,
    with the weight as (Cin, Cout/G, kD, kH, kW) or (G, Cin/G, Cout/G, kD, kH, kW):

        full[n, g*Cout/G + o, i*s + k*d] += inp[n, g*Cin/G + c, i] * w[g, c, o, k]  (per axis)

    and the output is ``full[..., p : p + L]`` per axis, ``L = (I-1)*s - 2p + d*(k-1) +
    output_padding + 1``, with zeros where that reaches past ``full``."""
    x = np.asarray(inp, np.float64)
    w = to_grouped(weight, groups)  # (G, Cin/G, Cout/G, k): the same reshape as a forward weight's
    s, p, op, d = triple(stride), triple(padding), triple(output_padding), triple(dilation)
    g, cin_g, cout_g = w.shape[:3]
    k = w.shape[3:]
    size = x.shape[2:]
    full_size = [(size[a] - 1) * s[a] + d[a] * (k[a] - 1) + 1 for a in range(3)]
    out_size = [full_size[a] - 2 * p[a] + op[a] for a in range(3)]
    # room for the output window wherever it lies
    full = np.zeros((x.shape[0], g * cout_g) + tuple(max(f, p_ + o) for f, p_, o in
                                                     zip(full_size, p, out_size)))
    for gi in range(g):
        xg = x[:, gi * cin_g:(gi + 1) * cin_g]
        for kd in range(k[0]):
            for kh in range(k[1]):
                for kw in range(k[2]):
                    full[:, gi * cout_g:(gi + 1) * cout_g,
                         kd * d[0]: kd * d[0] + s[0] * (size[0] - 1) + 1: s[0],
                         kh * d[1]: kh * d[1] + s[1] * (size[1] - 1) + 1: s[1],
                         kw * d[2]: kw * d[2] + s[2] * (size[2] - 1) + 1: s[2]] += np.einsum(
                        "ncdhw,co->nodhw", xg, w[gi, :, :, kd, kh, kw])
    out = full[:, :, p[0]:p[0] + out_size[0], p[1]:p[1] + out_size[1], p[2]:p[2] + out_size[2]]
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64).reshape(1, -1, 1, 1, 1)
    return np.ascontiguousarray(out)
