"""How the bench measures: threads, interleaved timing, the GEMM peak and peak memory.

Everything here is about making two libraries' numbers comparable on a shared, noisy
machine: the same thread count for numba, torch and BLAS; calls of the two libraries
alternating, so that a passing load slows both alike; medians rather than means.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import platform
import time

import numba
import numpy as np

#: Adaptive repeats: at least ``min_reps`` torch/numbaconv pairs, more until ``budget``
#: seconds have passed (at most ``max_reps``).
ADAPTIVE = {"min_reps": 5, "budget": 1.0, "max_reps": 1000}
ADAPTIVE_QUICK = {"min_reps": 3, "budget": 0.3, "max_reps": 300}
GEMM_N = 2048


# ---- Threads and the machine ------------------------------------------------------------
@contextlib.contextmanager
def using_threads(threads: int, torch):
    """numba (and torch, if given) on ``threads`` threads; the previous counts after."""
    previous = numba.get_num_threads(), None if torch is None else torch.get_num_threads()
    numba.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(previous[0])
        if torch is not None:
            torch.set_num_threads(previous[1])


def blas_limited(threads: int):
    """numpy's BLAS on ``threads`` threads for the run, like numba and torch."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def blas_info() -> list:
    """The BLAS and OpenMP libraries loaded, with their thread counts (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("prefix", "user_api", "internal_api", "num_threads", "version", "filepath")
    return [{k: lib.get(k) for k in keep} for lib in threadpool_info()]


def machine() -> dict:
    """The CPU as the OS, LLVM and /proc/cpuinfo name it (any of them may be None)."""
    try:
        import llvmlite.binding as llvm

        cpu_name = llvm.get_host_cpu_name()
    except Exception:  # pragma: no cover - llvmlite comes with numba
        cpu_name = None
    model = None
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            model = next((line.partition(":")[2].strip() for line in f
                          if line.startswith("model name")), None)
    import numbaconv

    return {"processor": platform.processor() or None, "cpu_name": cpu_name, "model": model,
            "platform": platform.platform(), "python": platform.python_version(),
            "target": numbaconv.cpu_info()}


# ---- Time ---------------------------------------------------------------------------------
def median_ms(times) -> float:
    return float(np.median(times)) * 1e3


def interleaved(torch_call, nc_call, repeats, adaptive) -> tuple[list, list]:
    """Seconds per call of each, torch and numbaconv alternating: ``repeats`` pairs, or
    (``repeats`` None) as many as the ``adaptive`` budget allows. ``torch_call`` may be
    None (torch's list is then empty)."""
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
                return t_torch, t_nc
        elif n >= adaptive["max_reps"] or (
                n >= adaptive["min_reps"] and time.perf_counter() - begin >= adaptive["budget"]):
            return t_torch, t_nc


def gemm_peak(torch, dtype: str, reps: int) -> dict:
    """What BLAS reaches on this machine: the median of ``reps`` n x n x n matrix products
    (torch.mm, or numpy's ``@`` without torch), as GFLOP/s."""
    n = GEMM_N
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
    ms = median_ms(times)
    return {"backend": backend, "n": n, "dtype": dtype, "ms": ms,
            "gflops": 2 * n**3 / 1e9 / (ms / 1e3), "reps": len(times)}


# ---- Memory -------------------------------------------------------------------------------
# One call's peak memory is the peak resident set size (VmHWM) during the call minus the
# resident set size before it. Linux lets a process reset VmHWM to its current RSS
# (writing 5 to /proc/self/clear_refs); psutil and getrusage only give the peak over the
# process's whole life, which the earlier, bigger layers would already hold. So this
# reads /proc directly, and reports None where it is unavailable.
_libc = None


def _malloc_trim() -> None:
    """Hand glibc's free heap pages back to the OS before the baseline is taken.

    Needed for a right answer: pages freed by earlier calls but kept by malloc count in
    the RSS before the call, and a call that reuses them would show no peak at all."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None)
        _libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_extra_mib(call):
    """MiB of peak RSS during one ``call()`` beyond what existed before it and the arrays
    it returns; None where /proc is unavailable."""
    gc.collect()
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        before = _status_kib("VmRSS")
    except (OSError, KeyError, ValueError):
        return None
    out = call()  # kept alive until VmHWM is read: its pages count, then are subtracted
    try:
        peak = _status_kib("VmHWM")
    except (OSError, KeyError, ValueError):
        return None
    nbytes = sum(o.nbytes for o in (out if isinstance(out, tuple) else (out,)))
    return ((peak - before) * 1024 - nbytes) / 2**20
