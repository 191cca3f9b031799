"""Generate MegEngine golden reference data for numbaconv's Conv3d tests.

How to run
----------
This script must be run with Python 3.10 inside a dedicated virtualenv that
holds ``megengine==1.13.0`` and ``numpy<2`` (MegEngine 1.13 wheels exist only
for CPython <= 3.10 and are built against numpy 1.x)::

    /root/.pyenv/versions/3.10.13/bin/python3.10 -m venv /work/golden-venv
    /work/golden-venv/bin/pip install "numpy<2" megengine==1.13.0
    /work/golden-venv/bin/python tests/golden/make_megengine_golden.py

It writes ``.npz`` files into the ``data/`` directory beside this file,
overwriting any existing ones.  Everything runs on CPU and all random data
comes from fixed ``numpy.random.default_rng(seed)`` seeds, so re-running the
script reproduces the same inputs (and, up to MegEngine's own floating-point
determinism on CPU, the same outputs).

MegEngine is *never* a dependency of the ``numbaconv`` package or its test
suite: the tests only read the saved ``.npz`` files with numpy.

File format
-----------
``conv3d_<name>.npz`` / ``conv_transpose3d_<name>.npz``:

* ``inp``          float32 (N, Cin, D, H, W)
* ``weight``       float32 in MegEngine layout:
                   Conv3d groups == 1 -> (Cout, Cin, kD, kH, kW);
                   Conv3d groups > 1  -> (G, Cout/G, Cin/G, kD, kH, kW);
                   ConvTranspose3d    -> (Cin, Cout, kD, kH, kW)
* ``bias``         float32 (1, Cout, 1, 1, 1) -- only present when bias is on
* ``out``          float32, module forward output
* ``grad_out``     float32 G, same shape as ``out``
* ``grad_inp``, ``grad_weight`` (weight's own layout), ``grad_bias`` (only when
  bias is on): gradients of ``loss = (out * G).sum()`` obtained with
  ``megengine.autodiff.GradManager``
* ``meta``         0-d numpy unicode array holding a JSON string; see
                   ``_meta`` below for the keys.

``conv3d_f16_<name>.npz``: ``inp``, ``weight``, (``bias``), ``out`` all
float16, computed by ``megengine.functional.conv3d``; ``meta`` as above (no
module, so ``repr``/``ctor_args`` are null and ``functional_args`` is given).
"""

import json
import os
import sys

import numpy as np

import megengine as mge
import megengine.functional as F
import megengine.module as M
from megengine.autodiff import GradManager

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "data")


def _norm3(v):
    """int or 3-sequence -> list of 3 ints (MegEngine's own normalisation)."""
    if isinstance(v, (list, tuple)):
        assert len(v) == 3
        return [int(a) for a in v]
    return [int(v)] * 3


def _jsonable(v):
    """ints stay ints, tuples become lists, recursively."""
    if isinstance(v, (list, tuple)):
        return [_jsonable(a) for a in v]
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, np.integer):
        return int(v)
    raise TypeError("not JSON-able: %r" % (v,))


# ---------------------------------------------------------------------------
# Configurations.
#   args   : positional constructor args (in_channels, out_channels, kernel_size)
#   kwargs : keyword constructor args, exactly as passed
#   spatial: (D, H, W) of the input
#   batch  : N
#   seed   : numpy default_rng seed
# ---------------------------------------------------------------------------

CONV3D_CONFIGS = [
    # The seed example: Conv3d(3, 1, 3) on arange(384).reshape(2,3,4,4,4).
    dict(name="seed_example", args=(3, 1, 3), kwargs={}, batch=2,
         spatial=(4, 4, 4), seed=0, arange_input=True),
    dict(name="basic_k3_bias", args=(2, 4, 3), kwargs={}, batch=2,
         spatial=(5, 5, 5), seed=1),
    dict(name="basic_k3_nobias", args=(2, 4, 3), kwargs=dict(bias=False),
         batch=1, spatial=(5, 5, 5), seed=2),
    dict(name="k1_pointwise", args=(4, 3, 1), kwargs={}, batch=2,
         spatial=(3, 4, 5), seed=3),
    dict(name="k2_stride2", args=(2, 3, 2), kwargs=dict(stride=2), batch=1,
         spatial=(4, 4, 4), seed=4),
    dict(name="k4_pad1", args=(2, 2, 4), kwargs=dict(padding=1), batch=1,
         spatial=(6, 6, 6), seed=5),
    dict(name="k5_pad2_nobias", args=(1, 2, 5),
         kwargs=dict(padding=2, bias=False), batch=2, spatial=(6, 5, 7),
         seed=6),
    dict(name="k7_one_axis", args=(2, 2, (7, 1, 3)),
         kwargs=dict(padding=(3, 0, 1)), batch=1, spatial=(9, 3, 5), seed=7),
    dict(name="groups2_pad1", args=(4, 6, 3),
         kwargs=dict(padding=1, groups=2), batch=2, spatial=(4, 5, 4),
         seed=8),
    dict(name="groups3_aniso_nobias", args=(6, 3, (3, 2, 1)),
         kwargs=dict(stride=(1, 2, 1), groups=3, bias=False), batch=1,
         spatial=(5, 6, 4), seed=9),
    dict(name="groups4_stride2_pad1", args=(8, 8, 3),
         kwargs=dict(stride=2, padding=1, groups=4), batch=1,
         spatial=(5, 5, 5), seed=10),
    dict(name="groups2_batch3_nobias_dil2", args=(4, 2, 2),
         kwargs=dict(dilation=2, groups=2, bias=False), batch=3,
         spatial=(4, 5, 6), seed=11),
    dict(name="depthwise_mult1", args=(4, 4, 3),
         kwargs=dict(padding=1, groups=4), batch=2, spatial=(4, 4, 4),
         seed=12),
    dict(name="depthwise_mult2", args=(3, 6, 3), kwargs=dict(groups=3),
         batch=1, spatial=(4, 5, 6), seed=13),
    dict(name="depthwise_mult3_aniso", args=(2, 6, (1, 3, 2)),
         kwargs=dict(stride=(2, 1, 1), padding=(0, 1, 1),
                     dilation=(1, 2, 1), groups=2),
         batch=2, spatial=(5, 6, 5), seed=14),
    dict(name="aniso_all", args=(3, 4, (2, 3, 4)),
         kwargs=dict(stride=(1, 2, 3), padding=(0, 1, 2),
                     dilation=(2, 1, 1)),
         batch=1, spatial=(6, 7, 9), seed=15),
    dict(name="aniso_dilation_padding", args=(2, 3, 3),
         kwargs=dict(padding=(1, 2, 3), dilation=(1, 2, 3)), batch=1,
         spatial=(5, 6, 7), seed=16),
    dict(name="odd_spatial_5x7x9_batch3", args=(2, 3, 3),
         kwargs=dict(stride=2), batch=3, spatial=(5, 7, 9), seed=17),
    dict(name="spatial1_depth_k1", args=(3, 2, (1, 3, 3)), kwargs={},
         batch=2, spatial=(1, 5, 5), seed=18),
    dict(name="spatial1_two_axes", args=(2, 2, (1, 1, 3)),
         kwargs=dict(padding=(0, 0, 1)), batch=1, spatial=(1, 1, 8),
         seed=19),
    dict(name="pad_gt_kernel", args=(2, 2, 2), kwargs=dict(padding=3),
         batch=1, spatial=(3, 3, 3), seed=20),
    dict(name="pad_gt_kernel_aniso", args=(2, 3, (1, 2, 3)),
         kwargs=dict(stride=(1, 2, 2), padding=(2, 3, 4), bias=False),
         batch=2, spatial=(3, 4, 3), seed=21),
    dict(name="stride_gt_kernel", args=(2, 2, 2), kwargs=dict(stride=3),
         batch=1, spatial=(8, 8, 8), seed=22),
    dict(name="stride_gt_kernel_aniso", args=(3, 2, (1, 2, 1)),
         kwargs=dict(stride=(2, 3, 4)), batch=2, spatial=(5, 7, 9), seed=23),
    # Same data (seed 24) with int args vs. tuple args.
    dict(name="args_int", args=(2, 3, 3),
         kwargs=dict(stride=2, padding=1, dilation=1, groups=1), batch=1,
         spatial=(5, 5, 5), seed=24),
    dict(name="args_tuple", args=(2, 3, (3, 3, 3)),
         kwargs=dict(stride=(2, 2, 2), padding=(1, 1, 1), dilation=(1, 1, 1),
                     groups=1),
         batch=1, spatial=(5, 5, 5), seed=24),
    dict(name="kernel_covers_input", args=(2, 2, (3, 4, 5)), kwargs={},
         batch=2, spatial=(3, 4, 5), seed=26),
    dict(name="groups2_everything_aniso", args=(4, 6, (2, 3, 1)),
         kwargs=dict(stride=(2, 1, 3), padding=(1, 0, 2), dilation=(2, 1, 1),
                     groups=2),
         batch=2, spatial=(6, 5, 7), seed=27),
    dict(name="explicit_conv_mode", args=(2, 2, 2),
         kwargs=dict(conv_mode="cross_correlation"), batch=1,
         spatial=(3, 3, 3), seed=28),
    dict(name="padding_zero_tuple_k1_stride2", args=(3, 5, 1),
         kwargs=dict(stride=(2, 1, 2), padding=(0, 0, 0)), batch=1,
         spatial=(5, 3, 4), seed=29),
]

CONV_TRANSPOSE3D_CONFIGS = [
    dict(name="basic_k2_stride2", args=(2, 2, 2), kwargs=dict(stride=2),
         batch=1, spatial=(2, 3, 2), seed=100),
    dict(name="stride2_pad1_outpad1", args=(2, 3, 3),
         kwargs=dict(stride=2, padding=1, output_padding=1), batch=2,
         spatial=(3, 3, 3), seed=101),
    dict(name="dilation2_pad2", args=(2, 2, 3),
         kwargs=dict(padding=2, dilation=2), batch=2, spatial=(3, 4, 3),
         seed=102),
    dict(name="aniso_all_nobias", args=(3, 2, (2, 3, 1)),
         kwargs=dict(stride=(1, 2, 3), padding=(0, 1, 0),
                     output_padding=(0, 1, 2), dilation=(2, 1, 1),
                     bias=False),
         batch=1, spatial=(3, 3, 2), seed=103),
]

F16_CONFIGS = [
    dict(name="k3_bias", cin=2, cout=3, kernel=(3, 3, 3),
         fargs=dict(stride=1, padding=1, dilation=1, groups=1), bias=True,
         batch=1, spatial=(4, 4, 4), seed=200),
    dict(name="groups2_aniso_nobias", cin=4, cout=4, kernel=(2, 3, 1),
         fargs=dict(stride=(1, 2, 1), padding=(1, 0, 0), dilation=(2, 1, 1),
                    groups=2),
         bias=False, batch=2, spatial=(4, 5, 3), seed=201),
]


def _meta(kind, name, seed, m, ctor_args, inp_shape, out_shape,
          output_padding=None):
    meta = dict(
        kind=kind,
        name=name,
        seed=seed,
        in_channels=int(m.in_channels),
        out_channels=int(m.out_channels),
        kernel_size=_norm3(m.kernel_size),
        stride=_norm3(m.stride),
        padding=_norm3(m.padding),
        dilation=_norm3(m.dilation),
        groups=int(m.groups),
        bias=m.bias is not None,
        # ConvTranspose3d has no conv_mode attribute; it only supports
        # cross_correlation.
        conv_mode=getattr(m, "conv_mode", "cross_correlation"),
        repr=str(m),
        weight_shape=list(m.weight.shape),
        bias_shape=None if m.bias is None else list(m.bias.shape),
        megengine_version=mge.__version__,
        ctor_args=ctor_args,
        input_shape=list(inp_shape),
        output_shape=list(out_shape),
    )
    if output_padding is not None:
        meta["output_padding"] = _norm3(output_padding)
    return meta


def _ctor_args(cfg, names):
    d = {}
    for n, v in zip(names, cfg["args"]):
        d[n] = _jsonable(v)
    for k, v in cfg["kwargs"].items():
        d[k] = _jsonable(v)
    return d


def _run_module(kind, cfg):
    name, seed = cfg["name"], cfg["seed"]
    rng = np.random.default_rng(seed)
    cls = M.Conv3d if kind == "conv3d" else M.ConvTranspose3d
    m = cls(*cfg["args"], **cfg["kwargs"])
    cin = m.in_channels
    inp_shape = (cfg["batch"], cin) + tuple(cfg["spatial"])

    if cfg.get("arange_input"):
        inp = np.arange(int(np.prod(inp_shape)), dtype=np.float32)
        inp = inp.reshape(inp_shape)
        # keep rng stream identical in structure to the other configs
        rng.standard_normal(inp_shape)
    else:
        inp = rng.standard_normal(inp_shape).astype(np.float32)
    weight = rng.standard_normal(m.weight.shape).astype(np.float32)
    has_bias = m.bias is not None
    bias = None
    if has_bias:
        bias = rng.standard_normal(m.bias.shape).astype(np.float32)

    # Set the module's parameters to our arrays.
    m.weight[...] = mge.tensor(weight)
    if has_bias:
        m.bias[...] = mge.tensor(bias)
    assert np.array_equal(m.weight.numpy(), weight)
    if has_bias:
        assert np.array_equal(m.bias.numpy(), bias)

    x = mge.tensor(inp)
    params = [x, m.weight] + ([m.bias] if has_bias else [])
    gm = GradManager()
    gm.attach(params)
    with gm:
        out_t = m(x)
        out = out_t.numpy()
        G = rng.standard_normal(out.shape).astype(np.float32)
        loss = (out_t * mge.tensor(G)).sum()
        gm.backward(loss)

    grad_inp = x.grad.numpy()
    grad_weight = m.weight.grad.numpy()
    grad_bias = m.bias.grad.numpy() if has_bias else None

    # Cross-check the module against the functional API on the same arrays.
    bt = mge.tensor(bias) if has_bias else None
    if kind == "conv3d":
        ref = F.conv3d(mge.tensor(inp), mge.tensor(weight), bt,
                       stride=m.stride, padding=m.padding,
                       dilation=m.dilation, groups=m.groups,
                       conv_mode=m.conv_mode).numpy()
    else:
        ref = F.conv_transpose3d(mge.tensor(inp), mge.tensor(weight), bt,
                                 stride=m.stride, padding=m.padding,
                                 output_padding=m.output_padding,
                                 dilation=m.dilation).numpy()
    if not np.array_equal(ref, out):
        raise AssertionError("%s/%s: module != functional (max diff %g)"
                             % (kind, name, np.abs(ref - out).max()))

    assert out.dtype == np.float32 and grad_inp.shape == inp.shape
    assert grad_weight.shape == weight.shape

    if kind == "conv3d":
        ctor = _ctor_args(cfg, ("in_channels", "out_channels", "kernel_size"))
        meta = _meta(kind, name, seed, m, ctor, inp.shape, out.shape)
    else:
        ctor = _ctor_args(cfg, ("in_channels", "out_channels", "kernel_size"))
        meta = _meta(kind, name, seed, m, ctor, inp.shape, out.shape,
                     output_padding=m.output_padding)

    arrays = dict(inp=inp, weight=weight, out=out, grad_out=G,
                  grad_inp=grad_inp, grad_weight=grad_weight)
    if has_bias:
        arrays["bias"] = bias
        arrays["grad_bias"] = grad_bias
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    path = os.path.join(OUT_DIR, "%s_%s.npz" % (kind, name))
    np.savez_compressed(path, **arrays)
    return path, meta


def _run_f16(cfg):
    name, seed = cfg["name"], cfg["seed"]
    rng = np.random.default_rng(seed)
    g = cfg["fargs"]["groups"]
    cin, cout = cfg["cin"], cfg["cout"]
    inp_shape = (cfg["batch"], cin) + tuple(cfg["spatial"])
    if g == 1:
        w_shape = (cout, cin) + tuple(cfg["kernel"])
    else:
        w_shape = (g, cout // g, cin // g) + tuple(cfg["kernel"])
    inp = rng.standard_normal(inp_shape).astype(np.float16)
    weight = rng.standard_normal(w_shape).astype(np.float16)
    bias = None
    if cfg["bias"]:
        bias = rng.standard_normal((1, cout, 1, 1, 1)).astype(np.float16)
    out_t = F.conv3d(mge.tensor(inp), mge.tensor(weight),
                     None if bias is None else mge.tensor(bias),
                     **cfg["fargs"])
    out = out_t.numpy()
    if out.dtype != np.float16:
        raise AssertionError("f16 conv3d returned %s" % out.dtype)
    fargs = {k: _jsonable(v) for k, v in cfg["fargs"].items()}
    meta = dict(
        kind="conv3d_f16_functional",
        name=name,
        seed=seed,
        in_channels=cin,
        out_channels=cout,
        kernel_size=_norm3(cfg["kernel"]),
        stride=_norm3(fargs["stride"]),
        padding=_norm3(fargs["padding"]),
        dilation=_norm3(fargs["dilation"]),
        groups=g,
        bias=bias is not None,
        conv_mode="cross_correlation",
        repr=None,
        weight_shape=list(w_shape),
        bias_shape=None if bias is None else [1, cout, 1, 1, 1],
        megengine_version=mge.__version__,
        ctor_args=None,
        functional_args=fargs,
        input_shape=list(inp.shape),
        output_shape=list(out.shape),
        dtype="float16",
    )
    arrays = dict(inp=inp, weight=weight, out=out)
    if bias is not None:
        arrays["bias"] = bias
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    path = os.path.join(OUT_DIR, "conv3d_f16_%s.npz" % name)
    np.savez_compressed(path, **arrays)
    return path, meta


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    written = []
    for cfg in CONV3D_CONFIGS:
        written.append(_run_module("conv3d", cfg))
    for cfg in CONV_TRANSPOSE3D_CONFIGS:
        written.append(_run_module("conv_transpose3d", cfg))
    for cfg in F16_CONFIGS:
        written.append(_run_f16(cfg))
    total = 0
    for path, meta in written:
        size = os.path.getsize(path)
        total += size
        print("%-60s %7d B  in=%s out=%s  %s"
              % (os.path.relpath(path, HERE), size, meta["input_shape"],
                 meta["output_shape"], meta["repr"]))
    print("%d files, %d bytes total" % (len(written), total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
