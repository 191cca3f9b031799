"""The kernel cache and dispatcher: the only module that asks numba to compile.

A kernel entry is keyed on ``(algorithm, dtype)``: every kernel reads all sizes, strides,
paddings, dilations and group counts at run time, so nothing else changes the machine
code. (The register-blocked kernels are specialised on their block shape, which is part
of the algorithm's name.) Compiled kernels also persist on disk through numba's
``cache=True``, so a new process loads them instead of compiling.

Algorithms (``ALGORITHMS``):

- ``direct``: the generic direct kernel (fast to compile; serves everything);
- ``direct_serial``: the same loop nest on the calling thread, for small convolutions;
- ``tiny``: one output element at a time, for tiny convolutions (the seed example);
- ``blocked``: register-blocked direct kernels, 8 output channels x 16 positions (dense
  layers) or 1 x 64 (depthwise and other layers with 1-2 output channels per group);
- ``gemm``: im2col slabs and BLAS.

The direct and blocked kernels sum in the same order with the same fused multiply-adds,
so they agree bitwise: the tiers below never change a result. ``gemm`` agrees to
rounding.

Tiers: a blocked kernel takes 5-20 s to compile the first time, the parallel direct one
about 4 s, the serial direct one about 1.5 s (later processes load them from disk in
milliseconds). When ``auto`` picks a blocked kernel that is not ready, the slower tiers
compile in a background thread while the best ready one serves (the serial direct kernel,
compiled on the spot, at worst); each call moves up to the best tier ready by then.
``NUMBACONV_BACKGROUND_COMPILE=0`` makes ``auto`` wait for its first choice instead.
"""
from __future__ import annotations

import functools
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import numba
import numpy as np
from numba import typeof

from . import _numba_setup

_numba_setup.apply()  # before the first kernel module is compiled

from .kernels import blocked, direct, gemm  # noqa: E402  (after the numba settings)
from .kernels import _blocked_generated  # noqa: E402

ALGORITHMS = ("auto", "direct", "direct_serial", "tiny", "blocked", "gemm")

#: Entries kept; the least recently used one is dropped beyond this.
MAX_ENTRIES = 64
#: Below this many FLOPs the thread pool costs more than it saves.
SERIAL_FLOPS = 2_000_000
#: Below this many FLOPs the direct kernel's scratch buffers cost more than the work.
TINY_FLOPS = 100_000
#: Above this many bytes of padded input planes per work item, ``auto`` takes the GEMM
#: path, whose buffers do not grow with the padding.
PLANE_BYTES_LIMIT = 32 << 20
#: Above this, even a forced direct or blocked algorithm is refused (huge padding would
#: otherwise ask for tens of GB, or overflow).
FORCED_PLANE_BYTES_LIMIT = 2 << 30
#: Seconds ``auto`` waits for a kernel being compiled or loaded before using a lower tier.
TIER_WAIT_SECONDS = 0.25


def _background_enabled() -> bool:
    return os.environ.get("NUMBACONV_BACKGROUND_COMPILE", "1").strip() not in ("0", "false", "no", "off")


class KernelCache:
    """Compiled kernels keyed on (algorithm, dtype), with hit/miss counts and the time
    spent compiling (or loading from numba's disk cache). Thread-safe: a kernel is built
    once, and other threads asking for it wait for that build."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, Future] = OrderedDict()
        self._seconds: dict[tuple, float] = {}
        self._lock = threading.Lock()
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="numbaconv-compile")
        self.hits = 0
        self.misses = 0

    def _future(self, key, build, background: bool):
        """The entry's future, and whether this call created it."""
        with self._lock:
            future = self._entries.get(key)
            if future is not None:
                self._entries.move_to_end(key)
                if future.done():
                    self.hits += 1
                return future
            self.misses += 1
            future = Future()
            self._entries[key] = future
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        if background:
            self._background.submit(self._build, key, build, future)
        else:
            self._build(key, build, future)
        return future

    def _build(self, key, build, future):
        start = time.perf_counter()
        try:
            kernel = build()
        except BaseException as exc:  # the waiting callers see it
            with self._lock:
                self._entries.pop(key, None)
            future.set_exception(exc)
            return
        with self._lock:
            self._seconds[key] = time.perf_counter() - start
        future.set_result(kernel)

    def get(self, algorithm: str, dtype, build):
        """The kernel, compiled now (in this thread) if needed."""
        return self._future((algorithm, np.dtype(dtype).name), build, background=False).result()

    def get_soon(self, algorithm: str, dtype, build, wait: float):
        """The kernel if it is ready within ``wait`` seconds, else None (it keeps
        compiling in the background)."""
        future = self._future((algorithm, np.dtype(dtype).name), build, background=True)
        try:
            return future.result(timeout=wait)
        except TimeoutError:
            return None

    def info(self) -> dict:
        with self._lock:
            entries = [
                {"algorithm": k[0], "dtype": k[1], "ready": f.done(),
                 "compile_seconds": self._seconds.get(k)}
                for k, f in self._entries.items()
            ]
            return {
                "entries": entries,
                "hits": self.hits,
                "misses": self.misses,
                "compile_seconds": sum(self._seconds.values()),
                "max_entries": self.max_entries,
            }

    def clear(self) -> None:
        with self._lock:
            self._entries = OrderedDict((k, f) for k, f in self._entries.items() if not f.done())
            self._seconds.clear()
            self.hits = self.misses = 0


CACHE = KernelCache()


# ---- Building kernels ----------------------------------------------------------------
def _compile(dispatcher, *example_args):
    """Compile ``dispatcher`` for the types of ``example_args`` (or load it from disk).

    The kernels' inputs are compiled as read-only arrays and :func:`launch` passes them
    read-only, so every call matches a compiled signature exactly: numba never compiles
    a second specialisation behind the cache's back.
    """
    dispatcher.compile(tuple(typeof(a) for a in example_args))
    return dispatcher


def readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array`` (the type the kernels' inputs are compiled for)."""
    if not array.flags.writeable:
        return array
    view = array.view()
    view.flags.writeable = False
    return view


_GEOMETRY = np.ones(15, np.int64)


def _examples(dtype, weight_ndim):
    """Arguments whose types the kernels are compiled for. The inputs are typed
    read-only, so one compiled kernel takes writeable and read-only arrays alike."""
    x = np.zeros((1, 1, 1, 1, 1), dtype)
    w = np.zeros((1,) * weight_ndim, dtype)
    bias = np.zeros(1, dtype)
    out = x.copy()
    for array in (x, w, bias):
        array.flags.writeable = False
    return x, w, bias, out, _GEOMETRY


_DIRECT = {"direct": direct.forward_direct, "direct_serial": direct.forward_direct_serial,
           "tiny": direct.forward_tiny}
_BLOCK_SHAPES = {"blocked8x16": (8, 16), "blocked1x64": (1, 64)}


def _builder(name, dtype):
    if name in _DIRECT:
        return lambda: _compile(_DIRECT[name], *_examples(dtype, 6))
    if name in _BLOCK_SHAPES:
        cob, vw = _BLOCK_SHAPES[name]
        fn = getattr(_blocked_generated, f"forward_c{cob}_v{vw}")
        return lambda: _compile(fn, *_examples(dtype, 4), 1)
    if name == "gemm":
        return lambda: _compile(gemm.forward_gemm, *_examples(dtype, 3), 1)
    if name in ("wgrad_direct", "wgrad_blocked"):
        fn = (_blocked_generated.weight_grad_direct if name == "wgrad_direct"
              else _blocked_generated.weight_grad_c4_t4)
        x, _, _, _, geometry = _examples(dtype, 6)
        return lambda: _compile(fn, x, x, np.zeros((1,) * 6, dtype), geometry)
    if name == "wgrad_gemm":
        x, _, _, _, geometry = _examples(dtype, 6)
        return lambda: _compile(gemm.weight_grad_gemm, x, x, np.zeros((1,) * 4, dtype), geometry, 1)
    raise AssertionError(name)


_serial_wgrad = {}


def serial_weight_grad_kernel(dtype):
    """The direct weight-gradient kernel compiled without threads (same bits), for a
    process forked after OpenMP started (see :func:`in_forked_child`). Compiled on
    first use in that process, not cached on disk."""
    dtype = np.dtype(dtype)
    if dtype not in _serial_wgrad:
        fn = numba.njit(nogil=True, fastmath={"contract"})(_blocked_generated.weight_grad_direct.py_func)
        x, _, _, _, geometry = _examples(dtype, 6)
        _serial_wgrad[dtype] = _compile(fn, x, x, np.zeros((1,) * 6, dtype), geometry)
    return _serial_wgrad[dtype]


def weight_grad_kernel(name, dtype):
    """The weight-gradient kernel ``name`` ("wgrad_direct", "wgrad_blocked" or
    "wgrad_gemm")."""
    return _kernel(name, np.dtype(dtype), background=False)


# ---- Choosing and running -------------------------------------------------------------
def blocked_variant(spec) -> str:
    """8x16 for layers with 3 or more output channels per group, 1x64 otherwise
    (measured on the benchmark suite; 8x32 and 4x32 were no faster and compile slower)."""
    return "blocked8x16" if spec.out_channels // spec.groups >= 3 else "blocked1x64"


def choose_algorithm(spec) -> str:
    """The algorithm ``auto`` prefers for ``spec`` (a heuristic from the benchmark suite;
    see the README)."""
    if plane_bytes(spec) > PLANE_BYTES_LIMIT:
        return "gemm"
    if spec.flops < TINY_FLOPS:
        return "tiny"
    if spec.flops < SERIAL_FLOPS:
        return "direct_serial"
    if spec.kernel == (1, 1, 1) and spec.in_channels // spec.groups >= 64:
        return "gemm"  # a plain matrix product: BLAS does it best
    return blocked_variant(spec)


def plane_bytes(spec) -> int:
    """Bytes of zero-bordered input planes one direct-kernel work item holds."""
    _, sh, sw = (int(v) for v in spec.geometry[:3])
    (_, h, w), (kd, _, _) = spec.in_size, spec.kernel
    (_, ph, pw), (_, qh, qw) = spec.padding, spec.padding_hi
    row_pitch = sw * -(-(w + pw + qw) // sw)
    return (spec.in_channels // spec.groups) * kd * (h + ph + qh) * row_pitch * spec.compute_dtype.itemsize


def _kernel(name, dtype, background, wait=TIER_WAIT_SECONDS):
    build = _builder(name, dtype)
    if background:
        return CACHE.get_soon(name, dtype, build, wait)
    return CACHE.get(name, dtype, build)


class Plan:
    """A checked convolution bound to its algorithm and kernel.

    ``run(x, w6, bias, out)`` writes conv3d(x, w6) + bias into ``out`` and returns the
    name of the algorithm that ran. x, out: C-contiguous in the compute dtype; w6:
    (G, Cout/G, Cin/G, kD, kH, kW); bias: (Cout,).
    """

    def __init__(self, spec, algorithm="auto"):
        self.spec = spec
        self.dtype = spec.compute_dtype
        self.geometry = spec.geometry
        name = choose_algorithm(spec) if algorithm == "auto" else algorithm
        if name == "blocked":
            name = blocked_variant(spec)
        if algorithm == "auto" and name in _BLOCK_SHAPES and _background_enabled():
            # Tiers, best first; all give the same bits. The last is compiled now if
            # need be (about 1.5 s), the others in the background.
            self.tiers = [name, "direct", "direct_serial"]
            # The floor first: numba compiles one function at a time, process-wide.
            _kernel("direct_serial", self.dtype, background=False)
            _kernel("direct", self.dtype, background=True, wait=0)  # the quicker compile
            _kernel(name, self.dtype, background=True)  # a disk-cache load is quick
        else:
            self.tiers = [name]
            if name in _PLANE_ALGORITHMS and plane_bytes(spec) > FORCED_PLANE_BYTES_LIMIT:
                raise ValueError(
                    f"algorithm={name!r} would need {plane_bytes(spec) / 2**20:.0f} MiB of "
                    f"padded input planes per work item (padding {spec.padding}); use "
                    f"algorithm='auto' or 'gemm'"
                )
        self._use_best_ready()

    def _use_best_ready(self):
        """Take the best tier whose kernel is ready (the last one always is). The state
        changes in one assignment: other threads may be running this plan."""
        tiers = self.state[0] if hasattr(self, "state") else self.tiers
        for i, name in enumerate(tiers):
            last = i == len(tiers) - 1
            kernel = _kernel(name, self.dtype, background=not last, wait=0)
            if kernel is not None:
                break
        self.state = (tiers[:i + 1], name, kernel)

    @property
    def name(self) -> str:
        return self.state[1]

    def run(self, x, w6, bias, out) -> str:
        tiers, name, kernel = self.state
        if len(tiers) > 1:
            self._use_best_ready()
            tiers, name, kernel = self.state
        if in_forked_child() and name not in _SERIAL:
            name, kernel = _serial_fallback(self.spec, self.dtype)
        if name in _BLOCK_SHAPES:
            # depth_chunk per call: it depends on numba's (changeable) thread count
            launch(kernel, readonly(x), readonly(blocked.pack_weights(w6, _BLOCK_SHAPES[name][0])),
                   readonly(bias), out, self.geometry, depth_chunk(self.spec))
        elif name == "gemm":
            wmat = w6.reshape(w6.shape[0], w6.shape[1], -1)
            with single_threaded_blas():
                launch(kernel, readonly(x), readonly(wmat), readonly(bias), out,
                       self.geometry, gemm_slab_positions(self.spec))
        else:
            launch(kernel, readonly(x), readonly(w6), readonly(bias), out, self.geometry)
        return name


#: Kernels that run on the calling thread.
_SERIAL = ("tiny", "direct_serial")
#: Kernels that copy zero-bordered input planes (their memory grows with the padding).
_PLANE_ALGORITHMS = ("direct", "direct_serial", "blocked8x16", "blocked1x64")

_forked_after_omp = False


def _after_fork_in_child():
    global _forked_after_omp
    _forked_after_omp = _threading_layer == "omp"


os.register_at_fork(after_in_child=_after_fork_in_child)


def in_forked_child() -> bool:
    """True in a process forked after numba's OpenMP layer started: GNU OpenMP
    terminates such a child when it enters a parallel region, so kernels run serially
    there (the serial kernels give the same bits)."""
    return _forked_after_omp


def _serial_fallback(spec, dtype):
    name = "tiny" if spec.flops < TINY_FLOPS else "direct_serial"
    return name, _kernel(name, dtype, background=False)


_launch_lock = threading.Lock()
_threading_layer = None  # known after the first parallel launch


def launch(kernel, *args):
    """Run a kernel. numba's ``workqueue`` threading layer aborts the process when two
    threads launch parallel kernels at once, so under it launches are serialised (and
    the first launch is, until numba has chosen its layer); ``omp`` and ``tbb`` take
    concurrent launches."""
    global _threading_layer
    if _threading_layer is not None and _threading_layer != "workqueue":
        return kernel(*args)
    with _launch_lock:
        result = kernel(*args)
        if _threading_layer is None:
            try:
                _threading_layer = numba.threading_layer()
            except ValueError:  # a serial kernel: no layer chosen yet
                pass
        return result


@functools.lru_cache(maxsize=256)
def plan_for(spec, algorithm="auto") -> Plan:
    """The :class:`Plan` for ``spec``, made once: choosing the algorithm and fetching
    its kernels (and, for ``auto``, waiting briefly for a tier) stays off the per-call
    path of the backward passes and transposed convolutions."""
    return Plan(spec, algorithm)


#: Upper bound on the input planes one blocked work item copies.
CHUNK_PLANE_BYTES = 8 << 20


def depth_chunk(spec) -> int:
    """Output depths per blocked work item: as many as keep >= 4 items per thread (load
    balance) and the item's input planes within ``CHUNK_PLANE_BYTES``."""
    out_d = spec.out_size[0]
    per_depth = spec.batch * spec.groups
    threads = numba.get_num_threads()
    sd, dd, kd = spec.stride[0], spec.dilation[0], spec.kernel[0]
    plane = plane_bytes(spec) // kd  # one input plane of one group's channels
    chunk = out_d
    while chunk > 1 and (per_depth * -(-out_d // chunk) < 4 * threads
                         or min(spec.in_size[0], (chunk - 1) * sd + (kd - 1) * dd + 1) * plane
                         > CHUNK_PLANE_BYTES):
        chunk = -(-chunk // 2)
    return chunk


def gemm_slab_positions(spec) -> int:
    """Output positions per im2col slab: the slab (reduction x positions) and BLAS's
    result (output channels x positions) each within ``gemm.SLAB_BYTES``."""
    reduction = (spec.in_channels // spec.groups) * int(np.prod(spec.kernel))
    rows = max(reduction, spec.out_channels // spec.groups)
    return max(16, gemm.SLAB_BYTES // (rows * spec.compute_dtype.itemsize))


_blas_controller = None


def single_threaded_blas():
    """BLAS limited to one thread while numba's threads run the GEMM path."""
    global _blas_controller
    from threadpoolctl import ThreadpoolController

    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


def warmup(dtypes=("float32", "float64"), algorithms=("direct", "direct_serial", "blocked8x16", "blocked1x64")):
    """Compile (or load from disk) the kernels now, so that no later call waits."""
    for dtype in dtypes:
        for name in algorithms:
            _kernel(name, np.dtype(dtype), background=False)
