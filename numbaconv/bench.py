"""``python -m numbaconv.bench``: numbaconv's ``conv3d`` against PyTorch's, in one process.

For every layer of a fixed suite, one ``torch.nn.functional.conv3d`` call and one
``numbaconv.conv3d`` call alternate (after two warm-up calls of each), with the same
number of threads for both, and the medians are compared. The run also measures the
machine's GEMM peak (``torch.mm`` on 2048 x 2048, or numpy's ``@`` without torch; before
and after the suite, the better median counts) so that numbaconv's GFLOP/s can be read
as a fraction of what BLAS reaches, checks numbaconv's output against torch's once per
layer, and measures numbaconv's (and torch's) peak extra memory.

Usage::

    python -m numbaconv.bench                      # the whole suite, a table
    python -m numbaconv.bench --quick              # a, d, g, i, j with fewer repeats
    python -m numbaconv.bench --json --shapes a,c  # one JSON document on stdout
    python -m numbaconv.bench --dtype float64 --threads 1 --repeats 5

From Python (notebooks): ``numbaconv.bench.run(...)`` returns the same dict the JSON
holds, and ``numbaconv.bench.format_table(result)`` renders it.

Without torch only numbaconv is timed (torch's columns are None), and the output is
checked at a few hundred sampled output positions against a float64 numpy sum.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import math
import platform
import sys
import time
from dataclasses import dataclass

import numba
import numpy as np

import numbaconv
from numbaconv import _dispatch
from numbaconv._spec import ConvSpec

__all__ = ["SHAPES", "QUICK_SHAPES", "run", "format_table", "main"]


@dataclass(frozen=True)
class Shape:
    """One layer of the suite: conv3d(N x Cin x D x H x W input, Cout output channels)."""

    id: str
    name: str
    batch: int
    in_channels: int
    size: tuple
    out_channels: int
    kernel: tuple
    stride: tuple = (1, 1, 1)
    padding: tuple = (0, 0, 0)
    dilation: tuple = (1, 1, 1)
    groups: int = 1

    def describe(self) -> str:
        def triple(t):
            return str(t[0]) if len(set(t)) == 1 else "(" + ",".join(map(str, t)) + ")"

        text = (f"{self.batch}x{self.in_channels}x{'x'.join(map(str, self.size))}"
                f" -> {self.out_channels} k{triple(self.kernel)}")
        if self.stride != (1, 1, 1):
            text += f" s{triple(self.stride)}"
        if self.padding != (0, 0, 0):
            text += f" p{triple(self.padding)}"
        if self.dilation != (1, 1, 1):
            text += f" d{triple(self.dilation)}"
        if self.groups != 1:
            text += f" g{self.groups}"
        return text

    def config(self) -> dict:
        return {"N": self.batch, "Cin": self.in_channels, "size": list(self.size),
                "Cout": self.out_channels, "kernel": list(self.kernel),
                "stride": list(self.stride), "padding": list(self.padding),
                "dilation": list(self.dilation), "groups": self.groups}


def _s(k, *, s=1, p=0, d=1):
    t = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)  # noqa: E731
    return {"kernel": t(k), "stride": t(s), "padding": t(p), "dilation": t(d)}


SHAPES = (
    Shape("a", "seed", 2, 3, (4, 4, 4), 1, **_s(3)),
    Shape("b", "C3D conv2", 1, 64, (16, 56, 56), 128, **_s(3, p=1)),
    Shape("c", "U-Net mid", 1, 32, (64, 64, 64), 32, **_s(3, p=1)),
    Shape("d", "U-Net first", 1, 1, (96, 96, 96), 16, **_s(3, p=1)),
    Shape("e", "strided", 2, 32, (32, 64, 64), 64, **_s(3, s=2, p=1)),
    Shape("f", "grouped", 2, 64, (16, 32, 32), 64, **_s(3, p=1), groups=4),
    Shape("g", "depthwise", 4, 96, (16, 28, 28), 96, **_s(3, p=1), groups=96),
    Shape("h", "depthwise x2", 2, 32, (16, 32, 32), 64, **_s(3, p=1), groups=32),
    Shape("i", "dilated", 1, 16, (32, 32, 32), 16, **_s(3, p=2, d=2)),
    Shape("j", "pointwise", 2, 128, (16, 28, 28), 256, **_s(1)),
    Shape("k1", "(1,3,3)", 2, 64, (8, 56, 56), 64, **_s((1, 3, 3), p=(0, 1, 1))),
    Shape("k2", "(3,1,1)", 2, 64, (8, 56, 56), 64, **_s((3, 1, 1), p=(1, 0, 0))),
)
QUICK_SHAPES = ("a", "d", "g", "i", "j")
_BY_ID = {s.id: s for s in SHAPES}

#: Adaptive repeats: at least ``min_reps`` torch/numbaconv pairs, more until ``budget``
#: seconds have passed (at most ``max_reps``).
_ADAPTIVE = {"min_reps": 5, "budget": 1.0, "max_reps": 1000}
_ADAPTIVE_QUICK = {"min_reps": 3, "budget": 0.3, "max_reps": 300}
_GEMM_N = 2048
#: Relative difference (max |nc - torch| / max |torch|) above which a layer is flagged.
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}


# ---- Helpers ---------------------------------------------------------------------------
def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


class _Progress:
    """``[#####.....] 5/12 c U-Net mid`` on stderr, redrawn in place."""

    def __init__(self, total: int, enabled: bool, width: int = 20):
        self.total, self.enabled, self.width = max(total, 1), enabled, width
        self._last = 0

    def show(self, done: int, label: str) -> None:
        if not self.enabled:
            return
        filled = round(self.width * done / self.total)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} {label}"
        pad = " " * max(0, self._last - len(line))
        self._last = len(line)
        sys.stderr.write("\r" + line + pad)
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._last:
            sys.stderr.write("\r" + " " * self._last + "\r")
            sys.stderr.flush()

    def note(self, text: str) -> None:
        if self.enabled:
            self.close()
            self._last = 0
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


def _proc_status_kib() -> dict:
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


_libc = None


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so that it cannot hide a peak."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None)
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _peak_extra_mib(call):
    """Run ``call()`` once; return (MiB of peak RSS beyond what existed before the call and
    the returned output, the output). The MiB are None where /proc is unavailable."""
    gc.collect()
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        before = _proc_status_kib()["VmRSS"]
    except (OSError, KeyError, ValueError):
        return None, call()
    out = call()  # kept alive until VmHWM is read: its pages count, then are subtracted
    try:
        peak = _proc_status_kib()["VmHWM"]
    except (OSError, KeyError, ValueError):
        return None, out
    outs = out if isinstance(out, tuple) else (out,)
    nbytes = sum(o.nbytes if isinstance(o, np.ndarray) else o.numel() * o.element_size()
                 for o in outs)
    return ((peak - before) * 1024 - nbytes) / 2**20, out


def _median_ms(times) -> float:
    return float(np.median(times)) * 1e3


def _finite(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def _machine() -> dict:
    try:
        import llvmlite.binding as llvm

        cpu_name = llvm.get_host_cpu_name()
    except Exception:  # pragma: no cover - llvmlite comes with numba
        cpu_name = None
    return {"processor": platform.processor() or None, "cpu_name": cpu_name,
            "model": _cpu_model(), "platform": platform.platform(),
            "python": platform.python_version()}


def _blas_info() -> list:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("prefix", "user_api", "internal_api", "num_threads", "version", "filepath")
    return [{k: lib.get(k) for k in keep} for lib in threadpool_info()]


def _blas_limit(threads: int):
    """BLAS (numpy's) limited to ``threads`` for the run, like numba and torch."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def _gemm_peak(torch, dtype: str, reps: int) -> dict:
    """Median time of one n x n x n matrix product, as GFLOP/s."""
    n = _GEMM_N
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        fn, backend = (lambda: torch.mm(ta, tb)), "torch.mm"
    else:
        fn, backend = (lambda: a @ b), "numpy matmul"
    for _ in range(2):
        fn()
    times = []
    for _ in range(max(1, reps)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    ms = _median_ms(times)
    return {"backend": backend, "n": n, "dtype": dtype, "ms": ms,
            "gflops": 2 * n**3 / 1e9 / (ms / 1e3), "reps": len(times)}


def _sampled_check(x, w, b, shape: Shape, out, samples: int = 256) -> float:
    """max |out - float64 sum| / max |out| at ``samples`` random output positions."""
    rng = np.random.default_rng(7)
    cout_g = shape.out_channels // shape.groups
    cin_g = shape.in_channels // shape.groups
    worst = 0.0
    for _ in range(samples):
        n, co, *opos = (int(rng.integers(0, s)) for s in out.shape)
        g = co // cout_g
        positions = [np.arange(k) * d + o * s - p for k, d, o, s, p in
                     zip(shape.kernel, shape.dilation, opos, shape.stride, shape.padding)]
        valid = [(q >= 0) & (q < size) for q, size in zip(positions, shape.size)]
        chans = np.arange(g * cin_g, (g + 1) * cin_g)
        patch = x[n][np.ix_(chans, *(q[v] for q, v in zip(positions, valid)))]
        wsub = w[co][np.ix_(np.arange(cin_g), *(np.flatnonzero(v) for v in valid))]
        ref = float(np.sum(patch.astype(np.float64) * wsub.astype(np.float64))) + float(b[co])
        worst = max(worst, abs(float(out[(n, co, *opos)]) - ref))
    scale = float(np.max(np.abs(out))) if out.size else 0.0
    return worst / scale if scale > 0 else worst


def _select(shapes, quick: bool) -> list:
    if shapes is None:
        ids = list(QUICK_SHAPES) if quick else [s.id for s in SHAPES]
    else:
        if isinstance(shapes, str):
            shapes = [s for s in shapes.split(",")]
        ids = [str(s).strip() for s in shapes if str(s).strip()]
        unknown = [s for s in ids if s not in _BY_ID]
        if unknown or not ids:
            raise ValueError(f"unknown shape id(s) {unknown or shapes!r}; "
                             f"choose from {', '.join(_BY_ID)}")
    return [_BY_ID[s] for s in ids]


# ---- The run ---------------------------------------------------------------------------
def run(shapes=None, dtype="float32", threads=None, repeats=None, quick=False,
        progress=True, backward=False) -> dict:
    """Benchmark numbaconv against torch; return the results as a JSON-ready dict.

    Args:
        shapes: ids from ``SHAPES`` (a list or "a,b,c"); default all (``QUICK_SHAPES``
            with ``quick``).
        dtype: "float32" or "float64".
        threads: threads for numba, torch and BLAS; default numba's default.
        repeats: timed torch/numbaconv pairs per layer; default adaptive (about 1 s and
            at least 5 pairs per layer; 0.3 s and 3 pairs with ``quick``).
        quick: a small subset with fewer repeats.
        progress: a progress bar on stderr.
        backward: time the input and weight gradients (``conv3d_backward``) against
            torch's ``convolution_backward`` (what its autograd runs) instead.
    """
    dtype = np.dtype(dtype).name
    if dtype not in TOLERANCE:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    selected = _select(shapes, quick)
    max_threads = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        threads = numba.get_num_threads()
    threads = int(threads)
    if not 1 <= threads <= max_threads:
        raise ValueError(f"threads must be between 1 and {max_threads} (NUMBA_NUM_THREADS; "
                         f"set that variable before starting Python for more), got {threads}")
    if repeats is not None and int(repeats) < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    adaptive = _ADAPTIVE_QUICK if quick else _ADAPTIVE
    gemm_reps = int(repeats) if repeats is not None else (3 if quick else 7)

    torch = _import_torch()
    bar = _Progress(len(selected), progress)
    if torch is None:
        bar.note("torch not installed: timing numbaconv only")

    prev_numba = numba.get_num_threads()
    prev_torch = torch.get_num_threads() if torch is not None else None
    numba.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        info0 = numbaconv.kernel_cache_info()
        bar.show(0, f"warm-up: compiling or loading {dtype} kernels")
        start = time.perf_counter()
        numbaconv.warmup(dtypes=(dtype,))
        # One parallel call, so that numba's threading layer is initialised.
        tiny = np.ones((1, 1, 4, 4, 4), dtype)
        numbaconv.conv3d(tiny, np.ones((1, 1, 2, 2, 2), dtype), algorithm="direct")
        warmup_wall = time.perf_counter() - start
        info1 = numbaconv.kernel_cache_info()
        try:
            threading_layer = numba.threading_layer()
        except ValueError:
            threading_layer = None

        # BLAS limited after the warm-up, which can load another BLAS (scipy's, via numba).
        with _blas_limit(threads):
            blas = _blas_info()
            bar.show(0, f"gemm peak ({_GEMM_N}x{_GEMM_N} {dtype})")
            peak_before = _gemm_peak(torch, dtype, gemm_reps)
            rows = []
            for index, shape in enumerate(selected):
                bar.show(index, f"{shape.id} {shape.name}")
                rows.append(_bench_shape(shape, index, dtype, repeats, adaptive, torch, backward))
            bar.show(len(selected), f"gemm peak again ({_GEMM_N}x{_GEMM_N} {dtype})")
            peak_after = _gemm_peak(torch, dtype, gemm_reps)
        info2 = numbaconv.kernel_cache_info()
        torch_threads = None if torch is None else torch.get_num_threads()
    finally:
        bar.close()
        numba.set_num_threads(prev_numba)
        if torch is not None:
            torch.set_num_threads(prev_torch)

    # The better of the two medians: a transient load on the machine lowers one of them.
    peak = dict(min(peak_before, peak_after, key=lambda p: p["ms"]),
                before_ms=peak_before["ms"], after_ms=peak_after["ms"])
    for row in rows:
        row["pct_of_peak"] = 100.0 * row["numbaconv_gflops"] / peak["gflops"]
    speedups = [(r["speedup"], r["id"]) for r in rows if r["speedup"]]
    summary = {"geomean_speedup": None, "min_speedup": None, "min_speedup_shape": None,
               "all_ok": all(r["ok"] for r in rows)}
    if speedups:
        summary["geomean_speedup"] = math.exp(sum(math.log(v) for v, _ in speedups) / len(speedups))
        summary["min_speedup"], summary["min_speedup_shape"] = min(speedups)

    return {
        "numbaconv_version": numbaconv.__version__,
        "numba_version": numba.__version__,
        "numpy_version": np.__version__,
        "torch_version": None if torch is None else torch.__version__,
        "dtype": dtype,
        "threads": threads,
        "torch_threads": torch_threads,
        "blas": blas,
        "threading_layer": threading_layer,
        "machine": _machine(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": bool(quick),
        "backward": bool(backward),
        "repeats": repeats,
        "compile": {
            "warmup_count": info1["misses"] - info0["misses"],
            "warmup_seconds": info1["compile_seconds"] - info0["compile_seconds"],
            "warmup_wall_seconds": warmup_wall,
            "suite_count": info2["misses"] - info1["misses"],
            "suite_seconds": info2["compile_seconds"] - info1["compile_seconds"],
            "kernels": [f"{e['algorithm']}/{e['dtype']}" for e in info2["entries"]],
        },
        "gemm_peak": peak,
        "results": rows,
        "summary": summary,
    }


def _bench_shape(shape: Shape, index: int, dtype: str, repeats, adaptive, torch,
                 backward=False) -> dict:
    rng = np.random.default_rng(1000 + index)
    x = rng.standard_normal((shape.batch, shape.in_channels) + shape.size).astype(dtype)
    fan_in = shape.in_channels // shape.groups * int(np.prod(shape.kernel))
    w = (rng.standard_normal((shape.out_channels, shape.in_channels // shape.groups)
                             + shape.kernel) / math.sqrt(fan_in)).astype(dtype)
    b = (0.1 * rng.standard_normal(shape.out_channels)).astype(dtype)
    args = {"stride": shape.stride, "padding": shape.padding, "dilation": shape.dilation,
            "groups": shape.groups}
    spec = ConvSpec.from_args(x, w, b, **args)[0]
    gflop = spec.flops / 1e9
    misses0 = numbaconv.kernel_cache_info()["misses"]

    if backward:
        nc_call, torch_call, algorithm, gflop = _backward_calls(spec, x, w, args, rng, torch)
    else:
        def nc_call():
            return numbaconv.conv3d(x, w, b, **args)

        torch_call = None
        if torch is not None:
            tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)
            F = torch.nn.functional

            def torch_call():
                with torch.no_grad():
                    return F.conv3d(tx, tw, tb, **args).numpy()

    # Warm-up: two calls of each.
    for _ in range(2):
        if torch_call is not None:
            torch_call()
        nc_call()
    if not backward:
        algorithm = _dispatch.choose_algorithm(spec)

    # Correctness, once.
    out = nc_call()
    if torch_call is not None:
        rel_diff, check = _relative_diff(out, torch_call()), "torch"
    elif backward:
        rel_diff, check = float("nan"), "none (torch not installed)"
    else:
        rel_diff, check = _sampled_check(x, w, b, shape, out), "float64 sample"
    del out

    # Peak extra memory of one call each.
    workspace, out = _peak_extra_mib(nc_call)
    del out
    torch_workspace = None
    if torch_call is not None:
        torch_workspace, out = _peak_extra_mib(torch_call)
        del out

    # Interleaved timing.
    t_torch, t_nc = [], []
    begin = time.perf_counter()
    while True:
        if torch_call is not None:
            t0 = time.perf_counter()
            torch_call()
            t_torch.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        nc_call()
        t_nc.append(time.perf_counter() - t0)
        n = len(t_nc)
        if repeats is not None:
            if n >= repeats:
                break
        elif n >= adaptive["max_reps"] or (
                n >= adaptive["min_reps"] and time.perf_counter() - begin >= adaptive["budget"]):
            break

    nc_ms = _median_ms(t_nc)
    torch_ms = _median_ms(t_torch) if t_torch else None
    nc_gflops = gflop / (nc_ms / 1e3)
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
        "numbaconv_gflops": nc_gflops,
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


def _relative_diff(ours, theirs) -> float:
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


def _backward_calls(spec, x, w, args, rng, torch):
    """(numbaconv call, torch call or None, algorithm label, GFLOP) for the input and
    weight gradients. torch's side is ``aten.convolution_backward``, the op its
    autograd runs for conv3d, so that both sides time the backward pass alone."""
    from . import _backward

    grad_out = rng.standard_normal(spec.out_shape).astype(x.dtype)

    def nc_call():
        gi, gw, _ = numbaconv.conv3d_backward(grad_out, x, w, **args)
        return gi, gw

    torch_call = None
    if torch is not None:
        tg, tx, tw = torch.from_numpy(grad_out), torch.from_numpy(x), torch.from_numpy(w)
        aten = torch.ops.aten

        def torch_call():
            with torch.no_grad():
                gi, gw, _ = aten.convolution_backward(
                    tg, tx, tw, None, _triple_list(args["stride"]), _triple_list(args["padding"]),
                    _triple_list(args["dilation"]), False, [0, 0, 0], args["groups"],
                    [True, True, False])
            return gi.numpy(), gw.numpy()

    algorithm = "bwd " + _dispatch.choose_algorithm(_backward.transposed_spec(spec)) + " + " \
        + _backward.weight_grad_algorithm(spec)
    return nc_call, torch_call, algorithm, 2 * spec.flops / 1e9


def _triple_list(value):
    return list(value) if isinstance(value, (tuple, list)) else [value] * 3


# ---- Output ----------------------------------------------------------------------------
def _fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "ms":
        return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "gflop":
        return f"{value:.3f}" if value < 1 else f"{value:.2f}"
    if kind == "rate":
        return f"{value:.1f}"
    if kind == "pct":
        return f"{value:.0f}%"
    if kind == "mib":
        return f"{round(value, 1) + 0.0:.1f}"  # no "-0.0"
    if kind == "diff":
        return f"{value:.1e}"
    return str(value)


_COLUMNS = (  # header, key, kind, left-aligned
    ("id", "id", "str", True),
    ("layer", "name", "str", True),
    ("GFLOP", "gflop", "gflop", False),
    ("torch ms", "torch_ms", "ms", False),
    ("nc ms", "numbaconv_ms", "ms", False),
    ("speedup", "speedup", "x", False),
    ("nc GFLOP/s", "numbaconv_gflops", "rate", False),
    ("%peak", "pct_of_peak", "pct", False),
    ("algorithm", "algorithm", "str", True),
    ("nc MiB", "workspace_mib", "mib", False),
    ("torch MiB", "torch_workspace_mib", "mib", False),
    ("rel diff", "rel_diff", "diff", False),
    ("reps", "reps", "str", False),
)


def format_table(result: dict) -> str:
    """The result of :func:`run` as an aligned text table with a summary."""
    cells = [[h for h, *_ in _COLUMNS]]
    for row in result["results"]:
        line = [_fmt(row[key], kind) for _, key, kind, _ in _COLUMNS]
        if not row["ok"]:
            line[-2] += " !"
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(_COLUMNS))]

    def render(r):
        return "  ".join(c.ljust(wd) if left else c.rjust(wd)
                         for c, wd, (_, _, _, left) in zip(r, widths, _COLUMNS)).rstrip()

    lines = [render(cells[0]), "  ".join("-" * wd for wd in widths)]
    lines += [render(r) for r in cells[1:]]

    s, peak, comp, m = result["summary"], result["gemm_peak"], result["compile"], result["machine"]
    lines.append("")
    if result["torch_version"] is None:
        lines.append("torch not installed: numbaconv timed alone; checked at sampled "
                     "positions against a float64 sum")
    else:
        lines.append(f"geometric-mean speedup (torch ms / numbaconv ms): "
                     f"{_fmt(s['geomean_speedup'], 'x')}; min {_fmt(s['min_speedup'], 'x')} "
                     f"({s['min_speedup_shape']})")
    lines.append(f"gemm peak: {peak['gflops']:.1f} GFLOP/s ({peak['backend']} "
                 f"{peak['n']}x{peak['n']} {peak['dtype']}, median {peak['ms']:.1f} ms; "
                 f"the better of {peak['before_ms']:.1f} ms before and "
                 f"{peak['after_ms']:.1f} ms after the suite)")
    blas = ", ".join(dict.fromkeys(f"{b['prefix']} {b['num_threads']}" for b in result["blas"]
                                   if b["user_api"] == "blas")) or "none found"
    lines.append(f"threads: {result['threads']} (numba), {result['torch_threads']} (torch); "
                 f"BLAS threads: {blas}; numba threading layer: {result['threading_layer']}")
    machine = " / ".join(str(v) for v in (m["model"], m["processor"], m["cpu_name"]) if v)
    lines.append(f"dtype: {result['dtype']}; machine: {machine}; date: {result['date']}")
    lines.append(f"versions: numbaconv {result['numbaconv_version']}, numba "
                 f"{result['numba_version']}, numpy {result['numpy_version']}, torch "
                 f"{result['torch_version']}")
    lines.append(f"kernels compiled or loaded: warm-up {comp['warmup_count']} in "
                 f"{comp['warmup_seconds']:.2f} s (wall {comp['warmup_wall_seconds']:.2f} s); "
                 f"during the suite {comp['suite_count']} in {comp['suite_seconds']:.2f} s")
    lines.append("nc MiB / torch MiB: peak memory of one call beyond its input, weight and "
                 "output (VmHWM); rel diff: max |nc - ref| / max |ref|")
    if not s["all_ok"]:
        bad = [r["id"] for r in result["results"] if not r["ok"]]
        lines.append(f"MISMATCH (rel diff above tolerance) on: {', '.join(bad)}")
    return "\n".join(lines)


def _clean(value):
    """Non-finite floats as None, so the JSON is strict."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m numbaconv.bench",
        description="Time numbaconv.conv3d against torch.nn.functional.conv3d.")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for numba, torch and BLAS (default: numba's default)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--shapes", default=None,
                        help=f"comma-separated ids from: {','.join(_BY_ID)}")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed pairs per layer (default: adaptive, ~1 s and >= 5)")
    parser.add_argument("--backward", action="store_true",
                        help="time the input and weight gradients instead of the forward pass")
    parser.add_argument("--quick", action="store_true",
                        help=f"only {','.join(QUICK_SHAPES)}, fewer repeats")
    args = parser.parse_args(argv)
    try:
        result = run(shapes=args.shapes, dtype=args.dtype, threads=args.threads,
                     repeats=args.repeats, quick=args.quick, progress=True,
                     backward=args.backward)
    except ValueError as exc:
        parser.error(str(exc))
    if args.json:
        print(json.dumps(_clean(result), indent=2, allow_nan=False))
    else:
        print(format_table(result))
    if not result["summary"]["all_ok"]:
        print("numbaconv's output differs from the reference beyond tolerance",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
