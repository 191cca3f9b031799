"""One layer of the suite: the two calls it times, their check, and its row of the result.

torch's side is the op torch itself runs (``F.conv3d`` forward; ``aten.convolution_backward``
for the gradients, the op its autograd runs), so that both sides time the same work.
Without torch, the forward output is checked against the one float64 reference,
``numbaconv.reference.conv3d_reference``.
"""
from __future__ import annotations

import math

import numpy as np

import numbaconv
from numbaconv import _dispatch
from numbaconv._backward import input_grad_phases
from numbaconv._spec import ConvSpec
from numbaconv.reference import conv3d_reference

from . import timing

#: Relative difference (max |nc - ref| / max |ref|) above which a layer is flagged.
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
#: Output positions checked against the float64 reference when torch is absent.
SAMPLES = 256


def bench_layer(shape, index: int, dtype: str, repeats, adaptive, torch, backward=False) -> dict:
    """Check, measure the memory of, and time ``shape``: the result's row for it."""
    rng = np.random.default_rng(1000 + index)
    x, w, b = shape.inputs(dtype, rng)
    args = shape.args()
    spec = ConvSpec.from_args(x, w, b, **args)[0]
    forward, grad_input, grad_weight = _algorithm_names(spec)
    misses0 = numbaconv.kernel_cache_info()["misses"]
    if backward:
        grad_out = rng.standard_normal(spec.out_shape).astype(dtype)
        nc_call, torch_call = _backward_calls(grad_out, x, w, args, torch)
        algorithm, gflop = f"bwd {grad_input} + {grad_weight}", 2 * spec.flops / 1e9
    else:
        nc_call, torch_call = _forward_calls(x, w, b, args, torch)
        algorithm, gflop = forward, spec.flops / 1e9

    for _ in range(2):  # warm-up
        if torch_call is not None:
            torch_call()
        nc_call()

    out = nc_call()
    if torch_call is not None:
        rel_diff, check = relative_diff(out, torch_call()), "torch"
    elif backward:
        rel_diff, check = float("nan"), "none (torch not installed)"
    else:
        rel_diff, check = sampled_reference_diff(x, w, b, shape, out), "float64 sample"
    del out

    workspace = timing.peak_extra_mib(nc_call)
    torch_workspace = None if torch_call is None else timing.peak_extra_mib(torch_call)

    t_torch, t_nc = timing.interleaved(torch_call, nc_call, repeats, adaptive)
    nc_ms = timing.median_ms(t_nc)
    torch_ms = timing.median_ms(t_torch) if t_torch else None
    tolerance = TOLERANCE[dtype]
    return {
        "id": shape.id,
        "name": shape.name,
        "layer": shape.describe(),
        "config": shape.config(),
        "out_shape": list(spec.out_shape),
        "gflop": gflop,
        "torch_ms": torch_ms,
        "numbaconv_ms": nc_ms,
        "speedup": None if torch_ms is None else torch_ms / nc_ms,
        "numbaconv_gflops": gflop / (nc_ms / 1e3),
        "torch_gflops": None if torch_ms is None else gflop / (torch_ms / 1e3),
        "pct_of_peak": None,  # set by run() once the gemm peak is final
        "algorithm": algorithm,
        "workspace_mib": _finite(workspace),
        "torch_workspace_mib": _finite(torch_workspace),
        "rel_diff": rel_diff,
        "check": check,
        "tolerance": tolerance,
        "ok": bool(rel_diff <= tolerance) if rel_diff == rel_diff else True,
        "reps": len(t_nc),
        "compiles": numbaconv.kernel_cache_info()["misses"] - misses0,
    }


def _algorithm_names(spec) -> tuple[str, str, str]:
    """The algorithms ``auto`` picks for ``spec``: (forward, input gradient, weight
    gradient); the input gradient's phases (one per stride residue) joined by "+"."""
    phases = [sub for _, sub in input_grad_phases(spec) if sub is not None]
    input_grad = "+".join(dict.fromkeys(_dispatch.resolve(sub, "auto") for sub in phases))
    return (_dispatch.resolve(spec, "auto"), input_grad or "zeros",
            _dispatch.resolve(spec, "auto", "weight_grad"))


def _forward_calls(x, w, b, args, torch):
    """(numbaconv call, torch call or None) for the forward pass."""
    def nc_call():
        return numbaconv.conv3d(x, w, b, **args)

    if torch is None:
        return nc_call, None
    tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)

    def torch_call():
        with torch.no_grad():
            return torch.nn.functional.conv3d(tx, tw, tb, **args).numpy()

    return nc_call, torch_call


def _backward_calls(grad_out, x, w, args, torch):
    """(numbaconv call, torch call or None) for the input and weight gradients."""
    def nc_call():
        gi, gw, _ = numbaconv.conv3d_backward(grad_out, x, w, **args)
        return gi, gw

    if torch is None:
        return nc_call, None
    tg, tx, tw = torch.from_numpy(grad_out), torch.from_numpy(x), torch.from_numpy(w)
    hyper = [list(args[k]) for k in ("stride", "padding", "dilation")]

    def torch_call():
        with torch.no_grad():
            gi, gw, _ = torch.ops.aten.convolution_backward(
                tg, tx, tw, None, *hyper, False, [0, 0, 0], args["groups"], [True, True, False])
        return gi.numpy(), gw.numpy()

    return nc_call, torch_call


def relative_diff(ours, theirs) -> float:
    """max |ours - theirs| / max |theirs| over one array or a tuple of them."""
    if not isinstance(ours, tuple):
        ours, theirs = (ours,), (theirs,)
    worst = 0.0
    for a, b in zip(ours, theirs):
        if b.size:
            scale = float(np.max(np.abs(b)))
            diff = float(np.max(np.abs(a.astype(np.float64) - b)))
            worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def sampled_reference_diff(x, w, b, shape, out, samples: int = SAMPLES) -> float:
    """max |out - float64 reference| / max |out| at ``samples`` random output positions.

    The full reference is too slow for the big layers, so it runs on what determines
    the sampled outputs only: each one's receptive field, cut from the input at the
    (dilated) tap positions with zeros where it falls in the padding, becomes one item of
    a batch, on which the reference is a 1x1x1-output convolution (stride 1, no padding,
    no dilation)."""
    rng = np.random.default_rng(7)
    n, co, *opos = (rng.integers(0, s, samples) for s in out.shape)
    taps, inside = [], np.ones((samples, 1, 1, 1), bool)
    for axis, (o, k, s, p, d, size) in enumerate(zip(
            opos, shape.kernel, shape.stride, shape.padding, shape.dilation, shape.size)):
        q = o[:, None] * s - p + np.arange(k) * d  # (samples, k) input positions
        view = [samples, 1, 1, 1]
        view[1 + axis] = k
        inside = inside & ((q >= 0) & (q < size)).reshape(view)
        taps.append(np.clip(q, 0, size - 1).reshape(view))
    # Index arrays on both sides of the ":" put their axes (sample, kD, kH, kW) first.
    fields = x[n[:, None, None, None], :, taps[0], taps[1], taps[2]] * inside[..., None]
    ref = conv3d_reference(fields.transpose(0, 4, 1, 2, 3), w, b, groups=shape.groups)
    worst = float(np.max(np.abs(out[(n, co, *opos)] - ref[np.arange(samples), co, 0, 0, 0])))
    scale = float(np.max(np.abs(out))) if out.size else 0.0
    return worst / scale if scale > 0 else worst


def _finite(value):
    return None if value is None or not math.isfinite(value) else float(value)
