"""What more than one test module uses: the check against the float64 reference, the
case tables, MegEngine's golden files, and running a script in a fresh interpreter.

A plain module (``from helpers import ...``): conftest.py puts tests/ on sys.path. Test
modules import shared things from here or from ``numbaconv.reference`` (the one float64
oracle, which also pads for every padding mode), never from one another.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
from hypothesis import strategies as st

from numbaconv.reference import conv3d_reference, pad_reference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: MegEngine's outputs and gradients (tests/golden/data/*.npz).
GOLDEN_DATA = os.path.join(REPO, "tests", "golden", "data")
#: The algorithms a caller can force that name one kernel family (not "auto").
FORCED = ["direct", "direct_serial", "tiny", "blocked", "gemm"]


# ---- The check against the float64 reference -----------------------------------------
def error_bound(dtype, inp, weight, bias=None, **conv_args):
    """A worst-case rounding bound for any summation order: (n + 2) * eps * sum|w*x|,
    with n the reduction length (Cin/G * kD * kH * kW)."""
    dtype = np.dtype(dtype)
    eps = np.finfo(np.float32 if dtype == np.float16 else dtype).eps
    w = np.asarray(weight)
    n = int(np.prod(w.shape[-4:])) if w.ndim == 6 else int(np.prod(w.shape[1:]))
    magnitude = conv3d_reference(np.abs(np.asarray(inp, np.float64)), np.abs(w.astype(np.float64)),
                                 None if bias is None else np.abs(np.asarray(bias, np.float64)),
                                 **conv_args)
    return (n + 2) * eps * magnitude + np.finfo(np.float64).tiny


def transform_error(inp, weight, padding=0, dilation=1, padding_mode="zeros", **_):
    """A bound on the FFT path's extra error (``algorithm="fft"``, float64 transforms):
    FFT convolution errs by about eps * log2(size) * ||x||_2 * ||w||_2 at every output
    (x padded as the call pads it), so an output whose terms are all zero is not exactly
    zero. 1e-12 is eps64 * 4500: log2 of any size here, and a margin."""
    w = np.asarray(weight, np.float64)
    padded = pad_reference(inp, w.shape[-3:], padding, dilation, padding_mode)
    return 1e-12 * np.linalg.norm(padded) * np.linalg.norm(w)


#: Algorithms that compute through Winograd's transforms.
WINOGRAD = ("winograd", "winograd_threads", "winograd_serial")


def winograd_error(dtype, inp, weight, groups=1, **_):
    """A worst-case bound on Winograd F(2x2x2, 3x3x3)'s error, (N, Cout, 1, 1, 1).

    The transforms mix a tile's 4x4x4 inputs, so an output's error follows the tile's
    magnitudes, not its own terms': with M_ci = max |x| over input channel ci, the input
    transform's values are at most 8 M_ci (two +-1 terms per axis) and the weight
    transform's at most ||w[co, ci]||_1 (|G| <= 1 entries). Each of the 64 products sums
    Cin/G terms (BLAS, then the roundings of the transforms: + 8), and an output adds 27
    of them (|A^T| <= 1 entries):
    error <= 27 * 8 * (Cin/G + 8) * eps * sum_ci ||w[co, ci]||_1 M_ci."""
    eps = np.finfo(np.float32 if np.dtype(dtype) == np.float16 else dtype).eps
    w = np.abs(np.asarray(weight, np.float64))
    w = w.reshape((-1,) + w.shape[-4:])  # (Cout, Cin/G, 3, 3, 3)
    cout, cin_g = w.shape[:2]
    peaks = np.abs(np.asarray(inp, np.float64)).max(axis=(2, 3, 4))  # (N, Cin)
    peaks = peaks.reshape(peaks.shape[0], groups, 1, cin_g)
    norms = w.sum(axis=(2, 3, 4)).reshape(1, groups, cout // groups, cin_g)
    total = (norms * peaks).sum(axis=3).reshape(peaks.shape[0], cout, 1, 1, 1)
    return 27 * 8 * (cin_g + 8) * eps * total


def assert_matches_reference(out, inp, weight, bias=None, *, algorithm="auto", **conv_args):
    """``out`` equals the float64 reference within the rounding bound of its dtype (plus
    the transforms' error where ``algorithm`` is "fft" or Winograd's)."""
    expected = conv3d_reference(inp, weight, bias, **conv_args)
    assert out.shape == expected.shape
    bound = error_bound(out.dtype, inp, weight, bias, **conv_args)
    if out.dtype == np.float16:  # plus the final rounding to float16
        bound = bound + np.abs(expected) * 2.0 ** -11 + 2.0 ** -24
    if algorithm == "fft":
        bound = bound + transform_error(inp, weight, **conv_args)
    if algorithm in WINOGRAD:
        bound = bound + winograd_error(out.dtype, inp, weight, **conv_args)
    error = np.abs(out.astype(np.float64) - expected)
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else None
    assert np.all(error <= bound), (
        f"max excess {np.max(error - bound)} at {worst}: got {out[worst]}, expected {expected[worst]}")


def reference_args(kwargs):
    """A call's keyword arguments as the reference takes them (without ``algorithm``)."""
    return {k: v for k, v in kwargs.items() if k != "algorithm"}


def check_against_reference(out, x, w, b, kwargs):
    """assert_matches_reference for a call's keyword arguments (any padding, padding mode
    and algorithm)."""
    assert_matches_reference(out, x, w, b, algorithm=kwargs.get("algorithm", "auto"),
                             **reference_args(kwargs))


# ---- Case tables -----------------------------------------------------------------------
CASES = {
    # name: (N, Cin, size, Cout, kernel, stride, padding, dilation, groups)
    "seed": (2, 3, (4, 4, 4), 1, 3, 1, 0, 1, 1),
    "k1": (2, 4, (3, 5, 6), 5, 1, 1, 0, 1, 1),
    "k1_groups": (2, 6, (3, 4, 9), 9, 1, 1, 0, 1, 3),  # GEMM slabs off the first channel
    "k2": (1, 3, (6, 5, 7), 4, 2, 1, 1, 1, 1),
    "k4_stride3": (1, 2, (9, 10, 11), 3, 4, 3, 1, 1, 1),
    "k5": (1, 2, (7, 8, 9), 2, 5, 1, 2, 1, 1),
    "k6": (1, 1, (8, 8, 8), 2, 6, 1, 0, 1, 1),
    "k7": (1, 2, (9, 9, 9), 2, 7, 1, 3, 1, 1),
    "groups3": (2, 6, (5, 6, 7), 9, 3, 1, 1, 1, 3),
    "depthwise": (2, 4, (5, 6, 7), 4, 3, 1, 1, 1, 4),
    "depthwise_k3": (1, 4, (5, 6, 7), 12, 3, 2, 1, 1, 4),
    "aniso": (2, 4, (7, 9, 11), 6, (1, 2, 3), (1, 2, 3), (0, 1, 2), (3, 2, 1), 2),
    "stride_gt_kernel": (1, 3, (9, 10, 11), 2, 2, (3, 4, 5), 0, 1, 1),
    "pad_gt_kernel": (1, 2, (3, 4, 5), 3, 2, (3, 4, 5), (4, 5, 6), 1, 1),
    "dilated": (1, 3, (9, 9, 9), 4, 3, 1, 2, 2, 1),
    "spatial1": (2, 3, (1, 1, 5), 4, (1, 1, 3), 1, 0, 1, 1),
    "spatial1_padded": (1, 2, (1, 1, 1), 3, 3, 1, 1, 1, 1),
    "batch0": (0, 3, (4, 5, 6), 2, 3, 1, 1, 1, 1),
    "many_channels": (1, 20, (4, 5, 6), 19, 3, 1, 1, 1, 1),
    "wide": (1, 2, (3, 4, 700), 3, 3, 1, 1, 1, 1),
}


def make_case(rng, n, cin, size, cout, kernel, stride, padding, dilation, groups, dtype, bias=True):
    """(x, 6-D or 5-D weight, (1, Cout, 1, 1, 1) bias or None, conv3d kwargs) for a row
    of CASES (or of ``configurations``)."""
    k = kernel if isinstance(kernel, tuple) else (kernel,) * 3
    x = rng.standard_normal((n, cin) + size).astype(dtype)
    w = rng.standard_normal((groups, cout // groups, cin // groups) + k).astype(dtype)
    if groups == 1:
        w = w[0]
    b = rng.standard_normal((1, cout, 1, 1, 1)).astype(dtype) if bias else None
    return x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


@st.composite
def configurations(draw):
    """A random valid row in the form of CASES' rows."""
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(3))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(3))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(3))
    padding = tuple(draw(st.integers(0, 4)) for _ in range(3))
    size = tuple(
        draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), max(1, d * (k - 1) + 1 - 2 * p) + 8))
        for k, d, p in zip(kernel, dilation, padding))
    batch = draw(st.integers(0, 2))
    return batch, cin, size, cout, kernel, stride, padding, dilation, groups


@st.composite
def stride_2_along_w(draw, max_dilation=1, two_taps_unpadded=False):
    """A random configuration whose W axis has stride 2, a dilation up to
    ``max_dilation`` and 2-4 taps. With dilation 1 the scatter adds neighbouring taps
    along W in pairs (``gemm.add_interleaved``), with ends one tap reaches alone where
    the padding is odd or the width cuts a pair; im2col splits each input row into its
    even and odd columns (``loops.split_runs``), odd widths included. Some rows are
    wide enough for the vectorised loops' bodies, not only their remainders. A batch of
    at least one: an empty one reaches neither. ``two_taps_unpadded``: 2 taps,
    dilation 1 and no padding along W, which im2col splits straight into the taps'
    rows (``gemm.im2col_pairs``)."""
    _, cin, size, cout, kernel, stride, padding, dilation, groups = draw(configurations())
    batch = draw(st.integers(1, 2))
    kernel_w, padding_w = draw(st.integers(2, 4)), draw(st.integers(0, 4))
    dilation_w = draw(st.integers(1, max_dilation))
    if two_taps_unpadded:
        kernel_w, padding_w, dilation_w = 2, 0, 1
    width = (max(1, dilation_w * (kernel_w - 1) + 1 - 2 * padding_w)
             + draw(st.one_of(st.integers(0, 9), st.integers(30, 80))))
    return (batch, cin, size[:2] + (width,), cout, kernel[:2] + (kernel_w,), stride[:2] + (2,),
            padding[:2] + (padding_w,), dilation[:2] + (dilation_w,), groups)


# ---- MegEngine's golden files ----------------------------------------------------------
def load_golden(path):
    """(the opened .npz, its decoded "meta" dict)."""
    z = np.load(path)
    return z, json.loads(str(z["meta"]))


# ---- Scripts in a fresh interpreter ----------------------------------------------------
def python_env(pythonpath=REPO, **overrides):
    """os.environ with ``pythonpath`` first on PYTHONPATH and the given overrides
    (a value of None removes the variable)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


_script_counter = iter(range(10**6))


def write_script(directory, source) -> str:
    path = os.path.join(str(directory), f"script_{next(_script_counter)}.py")
    with open(path, "w") as f:
        f.write(textwrap.dedent(source))
    return path


def run_script(directory, source, *args, env=None, timeout=300, preexec_fn=None):
    """Run ``source`` as a script in a new interpreter; return the CompletedProcess."""
    path = write_script(directory, source)
    return subprocess.run([sys.executable, path, *map(str, args)], env=env or python_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=str(directory),
                          preexec_fn=preexec_fn)


def describe(proc) -> str:
    return (f"exit code {proc.returncode}\n--- stdout (tail) ---\n{proc.stdout[-3000:]}"
            f"\n--- stderr (tail) ---\n{proc.stderr[-3000:]}")


def last_json(proc):
    """The last line of stdout that is a JSON object."""
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError("no JSON line in the output\n" + describe(proc))


def outputs_per_thread_count(directory, source, thread_counts=(1, 2, 2)):
    """Run ``source`` once per entry of ``thread_counts``, each time in a new interpreter
    with that NUMBA_NUM_THREADS; the script saves its arrays with ``np.savez`` to the
    path in sys.argv[1]. Returns one {name: array} per run, in order."""
    results = []
    for i, threads in enumerate(thread_counts):
        path = os.path.join(str(directory), f"threads_{i}.npz")
        proc = run_script(directory, source, path, env=python_env(NUMBA_NUM_THREADS=threads))
        assert proc.returncode == 0, f"NUMBA_NUM_THREADS={threads}: " + describe(proc)
        with np.load(path) as z:
            results.append({k: z[k] for k in z.files})
    return results


def assert_runs_bitwise_equal(runs):
    """Every array of every run in ``runs`` (from outputs_per_thread_count) has the bits
    of the first run's array of that name."""
    for other in runs[1:]:
        for name, array in runs[0].items():
            assert array.tobytes() == other[name].tobytes(), name


@st.composite
def winograd_layers(draw):
    """A random 3x3x3 stride-1 layer: sizes from 1, paddings 0-3 per axis, groups."""
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 4))
    cout = groups * draw(st.integers(1, 4))
    padding = tuple(draw(st.integers(0, 3)) for _ in range(3))
    size = tuple(draw(st.integers(max(1, 3 - 2 * p), 10)) for p in padding)
    batch = draw(st.integers(1, 2))
    return batch, cin, size, cout, 3, 1, padding, 1, groups
