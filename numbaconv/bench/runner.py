"""``run()``: the whole suite in one process, as one JSON-ready dict.

The order matters: kernels are compiled (or loaded) before anything is timed, BLAS is
limited only after that warm-up (which can load another BLAS, scipy's, via numba), and
the GEMM peak is measured before and after the layers so that a transient load on the
machine lowers at most one of the two.
"""
from __future__ import annotations

import datetime
import math
import sys
import time

import numba
import numpy as np

import numbaconv

from . import timing
from .layer import TOLERANCE, bench_layer
from .suite import select


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
        progress: a progress bar on stderr (tqdm, if installed and stderr is a terminal).
        backward: time the input and weight gradients (``conv3d_backward``) against
            torch's ``convolution_backward`` (what its autograd runs) instead.
    """
    dtype = np.dtype(dtype).name
    if dtype not in TOLERANCE:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    selected = select(shapes, quick)
    max_threads = numba.config.NUMBA_NUM_THREADS
    threads = int(numba.get_num_threads() if threads is None else threads)
    if not 1 <= threads <= max_threads:
        raise ValueError(f"threads must be between 1 and {max_threads} (NUMBA_NUM_THREADS; "
                         f"set that variable before starting Python for more), got {threads}")
    if repeats is not None and int(repeats) < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    adaptive = timing.ADAPTIVE_QUICK if quick else timing.ADAPTIVE
    gemm_reps = int(repeats) if repeats is not None else (3 if quick else 7)
    gemm = f"({timing.GEMM_N}x{timing.GEMM_N} {dtype})"

    torch = _import_torch()
    if torch is None and progress:
        print("torch not installed: timing numbaconv only", file=sys.stderr)
    bar = _progress_bar(len(selected), progress)
    try:
        with timing.using_threads(threads, torch):
            bar.set_description_str(f"warm-up: compiling or loading {dtype} kernels")
            info0 = numbaconv.kernel_cache_info()
            warmup_wall, threading_layer = _warm_up(dtype)
            info1 = numbaconv.kernel_cache_info()
            with timing.blas_limited(threads):
                blas = timing.blas_info()
                bar.set_description_str(f"gemm peak {gemm}")
                peak_before = timing.gemm_peak(torch, dtype, gemm_reps)
                rows = []
                for index, shape in enumerate(selected):
                    bar.set_description_str(f"{shape.id} {shape.name}")
                    rows.append(bench_layer(shape, index, dtype, repeats, adaptive, torch,
                                            backward))
                    bar.update(1)
                bar.set_description_str(f"gemm peak again {gemm}")
                peak_after = timing.gemm_peak(torch, dtype, gemm_reps)
            info2 = numbaconv.kernel_cache_info()
            torch_threads = None if torch is None else torch.get_num_threads()
    finally:
        bar.close()

    # The better of the two medians: a transient load on the machine lowers one of them.
    peak = dict(min(peak_before, peak_after, key=lambda p: p["ms"]),
                before_ms=peak_before["ms"], after_ms=peak_after["ms"])
    for row in rows:
        row["pct_of_peak"] = 100.0 * row["numbaconv_gflops"] / peak["gflops"]
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
        "machine": timing.machine(),
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
        "summary": _summary(rows),
    }


def _warm_up(dtype: str):
    """Compile or load the kernels for ``dtype`` and start numba's thread pool, so that
    no layer's time includes either; (wall seconds, numba's threading layer)."""
    start = time.perf_counter()
    numbaconv.warmup(dtypes=(dtype,))
    tiny = np.ones((1, 1, 4, 4, 4), dtype)  # one parallel call starts the threading layer
    numbaconv.conv3d(tiny, np.ones((1, 1, 2, 2, 2), dtype), algorithm="direct")
    wall = time.perf_counter() - start
    try:
        return wall, numba.threading_layer()
    except ValueError:
        return wall, None


def _summary(rows) -> dict:
    """Geometric-mean and smallest speed-up over the layers torch timed; all checks ok."""
    speedups = [(r["speedup"], r["id"]) for r in rows if r["speedup"]]
    summary = {"geomean_speedup": None, "min_speedup": None, "min_speedup_shape": None,
               "all_ok": all(r["ok"] for r in rows)}
    if speedups:
        summary["geomean_speedup"] = math.exp(sum(math.log(v) for v, _ in speedups) / len(speedups))
        summary["min_speedup"], summary["min_speedup_shape"] = min(speedups)
    return summary


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


class _NoBar:
    """Stands in for a tqdm bar that is off or not installed."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar on stderr that hides itself when stderr is not a terminal (tqdm is
    optional: the ``bench`` extra installs it; without it there is no bar)."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, file=sys.stderr, disable=None, leave=False, unit="layer")
    return _NoBar()
