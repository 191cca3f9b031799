"""Trust under load (issue 8): threads, processes, the on-disk kernel cache, memory over
many calls, tensors past 2**31 elements, and the numerics of NaN, Inf and long sums.

Scenarios that could abort or hang the interpreter (threading layers, fork, the disk
cache, huge allocations) run in subprocesses, so that an abort shows as a failed test
with its output instead of taking pytest down. Measured figures are printed in a
"numbaconv trust figures" section at the end of the pytest run.
"""
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time

import numba
import numpy as np
import pytest

import numbaconv as nc
from numbaconv import _config, _dispatch, functional
from numbaconv._spec import ConvSpec
from numbaconv.reference import conv3d_reference, triple
from helpers import (FORCED, REPO, check_against_reference, describe, error_bound, last_json,
                     outputs_per_thread_count, python_env, run_script, write_script)

GiB = 1 << 30
MiB = 1 << 20


# ---- Helpers -------------------------------------------------------------------------
class _Figures:
    """Collects measured figures and prints them in the terminal summary."""

    def __init__(self):
        self.lines = []

    def pytest_terminal_summary(self, terminalreporter):
        if self.lines:
            terminalreporter.section("numbaconv trust figures")
            for line in self.lines:
                terminalreporter.write_line(line)


@pytest.fixture
def figure(request):
    """figure(text): report a measured figure (printed, and listed in the summary)."""
    manager = request.config.pluginmanager
    plugin = manager.get_plugin("numbaconv-figures")
    if plugin is None:
        plugin = _Figures()
        manager.register(plugin, "numbaconv-figures")

    def add(text):
        plugin.lines.append(f"{request.node.name}: {text}")
        print(text)
    return add


# ---- 1. Concurrency ------------------------------------------------------------------
#: The concurrent workload: exec'd in this process and in the subprocess scripts.
WORKLOAD = r'''
import numpy as np
import numbaconv as nc

CONFIGS = [
    # name, (N, Cin, size, Cout, kernel, stride, padding, dilation, groups), extra kwargs
    ("dense", (2, 8, (9, 10, 11), 16, 3, 1, 1, 1, 1), {}),
    ("grouped_strided", (1, 6, (7, 8, 9), 9, 3, 2, 1, 1, 3), {}),
    ("depthwise", (2, 8, (8, 9, 10), 8, 3, 1, 1, 1, 8), {}),
    ("aniso_dilated", (1, 4, (9, 9, 9), 6, (1, 2, 3), (2, 1, 2), (0, 1, 2), (2, 1, 1), 2), {}),
    ("reflect", (1, 4, (6, 7, 8), 5, 3, 1, 1, 1, 1), {"padding_mode": "reflect"}),
    ("circular_same", (1, 4, (6, 7, 8), 5, (2, 3, 3), 1, "same", 1, 1), {"padding_mode": "circular"}),
    ("replicate_grouped", (1, 4, (5, 6, 7), 4, 3, (1, 2, 1), 2, 1, 2), {"padding_mode": "replicate"}),
    ("seed_tiny", (2, 3, (4, 4, 4), 1, 3, 1, 0, 1, 1), {}),
    ("pointwise_wide", (1, 64, (5, 6, 7), 32, 1, 1, 0, 1, 1), {}),
    ("convolution_mode", (1, 3, (6, 6, 6), 4, 2, 1, 1, 2, 1), {"conv_mode": "convolution"}),
]
ALGORITHMS = ["auto", "direct", "blocked", "gemm", "direct_serial", "tiny"]
DTYPES = [np.float32, np.float64, np.float16]
JOBS = 24


def job(i):
    """Job i: (x, w, b, kwargs) for one configuration, dtype and algorithm."""
    name, (n, cin, size, cout, k, s, p, d, g), extra = CONFIGS[i % len(CONFIGS)]
    dtype = DTYPES[i % len(DTYPES)]
    algorithm = ALGORITHMS[(i // 2) % len(ALGORITHMS)]
    rng = np.random.default_rng(1000 + i)
    k = k if isinstance(k, tuple) else (k,) * 3
    x = rng.standard_normal((n, cin) + size).astype(dtype)
    w = rng.standard_normal((cout, cin // g) + k).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    kwargs = dict(stride=s, padding=p, dilation=d, groups=g, algorithm=algorithm, **extra)
    return x, w, b, kwargs


def run_job(i):
    """[forward output, grad_input, grad_weight, grad_bias] of job i."""
    x, w, b, kwargs = job(i)
    out = nc.conv3d(x, w, b, **kwargs)
    grad_out = np.random.default_rng(2000 + i).standard_normal(out.shape).astype(out.dtype)
    grads = nc.conv3d_backward(grad_out, x, w, **kwargs)
    return [out] + list(grads)


def run_concurrently(threads, rounds, expected, log=print):
    """``threads`` Python threads released together by a barrier, ``rounds`` times,
    each running a different job; every result must equal ``expected`` bitwise."""
    import threading
    for r in range(rounds):
        barrier = threading.Barrier(threads)
        results, errors = {}, []

        def worker(t):
            i = (t + r * threads) % JOBS
            try:
                barrier.wait(timeout=60)
                results[i] = run_job(i)
            except BaseException as exc:  # reported below
                errors.append(f"job {i}: {exc!r}")

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in pool), "a thread hangs"
        assert not errors, errors
        for i, arrays in results.items():
            for k, (a, e) in enumerate(zip(arrays, expected[i])):
                assert a.dtype == e.dtype and a.shape == e.shape, (i, k)
                assert a.tobytes() == e.tobytes(), f"round {r}, job {i}, result {k} differs"
        log(f"round {r}: {len(results)} concurrent jobs bitwise equal")
'''


def workload():
    namespace = {}
    exec(compile(WORKLOAD, "<numbaconv trust workload>", "exec"), namespace)
    return namespace


def test_concurrent_threads_bitwise_equal_to_single_threaded(figure):
    """8 threads call conv3d and conv3d_backward at once (mixed configurations, dtypes,
    algorithms, padding modes), 4 rounds; every result equals the single-threaded one
    bitwise, and the single-threaded forward results match the float64 reference."""
    w = workload()
    expected = {i: w["run_job"](i) for i in range(w["JOBS"])}
    for i in range(w["JOBS"]):
        x, wt, b, kwargs = w["job"](i)
        check_against_reference(expected[i][0], x, wt, b, kwargs)
    w["run_concurrently"](8, 4, expected, log=lambda s: None)
    figure(f"numba threading layer in the pytest process: {numba.threading_layer()}; "
           f"{w['JOBS']} jobs, 8 threads x 4 rounds, all bitwise equal")


_CONCURRENT_SCRIPT = WORKLOAD + r'''
import json, sys, numba
expected = {i: run_job(i) for i in range(JOBS)}
run_concurrently(8, 4, expected)
np.savez(sys.argv[1], **{f"{i}_{k}": a for i, arrays in expected.items()
                          for k, a in enumerate(arrays) if a is not None})
print(json.dumps({"layer": numba.threading_layer(), "threads": numba.get_num_threads()}))
'''


def _layer_loads(layer):
    """Whether numba can load ``layer`` here (tbb needs the tbb package's library)."""
    module = {"omp": "omppool", "workqueue": "workqueue", "tbb": "tbbpool"}[layer]
    proc = subprocess.run([sys.executable, "-c", f"from numba.np.ufunc import {module}"],
                          capture_output=True, text=True, env=python_env(), timeout=120)
    return proc.returncode == 0, proc.stderr.strip().splitlines()[-1:] or [""]


@pytest.fixture(scope="module")
def layer_outputs():
    return {}


@pytest.mark.parametrize("layer", ["omp", "workqueue", "tbb"])
def test_concurrent_calls_under_each_threading_layer(layer, tmp_path, layer_outputs, figure):
    """The concurrent workload in a subprocess under NUMBA_THREADING_LAYER=layer: it
    must not abort (numba's workqueue layer aborts on concurrent parallel launches
    unless numbaconv serialises them), results equal the single-threaded ones bitwise,
    and all layers give the same bits."""
    loads, why = _layer_loads(layer)
    if not loads:
        pytest.skip(f"numba's {layer} threading layer cannot be loaded here: {why[0]}")
    path = tmp_path / f"{layer}.npz"
    proc = run_script(tmp_path, _CONCURRENT_SCRIPT, path, timeout=600,
                      env=python_env(NUMBA_THREADING_LAYER=layer))
    assert proc.returncode == 0, f"NUMBA_THREADING_LAYER={layer}: " + describe(proc)
    report = last_json(proc)
    assert report["layer"] == layer
    figure(f"NUMBA_THREADING_LAYER={layer}: 8 threads x 4 rounds ok, exit code 0")
    z = np.load(path)
    layer_outputs[layer] = {k: z[k] for k in z.files}
    for other, arrays in layer_outputs.items():
        for key, value in arrays.items():
            assert value.tobytes() == layer_outputs[layer][key].tobytes(), (other, layer, key)


def test_plan_tier_switch_is_atomic_for_concurrent_callers(monkeypatch):
    """A Plan is shared by every thread that makes the same call (functional._PLANS).
    When ``auto`` starts on a lower tier and a better kernel becomes ready, the next
    call switches the plan to it; another thread running the same plan meanwhile must
    still get a correct result, whatever moment of the switch it sees.

    The blocked kernel's build is held back so that the plan starts on a lower tier.
    Then, during the switch, right after each attribute the switching thread stores
    on the plan, a second thread runs the plan (the interleaving a GIL switch can give
    at that point, made deterministic) and must get the same bits."""
    monkeypatch.delenv("NUMBACONV_BACKGROUND_COMPILE", raising=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 12, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3, 3)).astype(np.float32)
    spec = ConvSpec.from_args(x, w, None, 1, 1)[0]
    assert _dispatch.choose(spec) == _dispatch.blocked_variant(spec)

    gate = threading.Event()
    compile_kernel = _dispatch.compile_kernel

    def held_compile(kernel, dtype):
        if kernel.name.startswith("blocked"):
            gate.wait(60)
        return compile_kernel(kernel, dtype)

    cache = _dispatch.KernelCache()
    monkeypatch.setattr(_dispatch, "CACHE", cache)
    monkeypatch.setattr(_dispatch, "compile_kernel", held_compile)
    # as on a cold cache: the blocked kernel is not on disk, and compiles in this process
    on_disk = _dispatch._on_disk
    monkeypatch.setattr(_dispatch, "_on_disk",
                        lambda kernel, dtype: not kernel.name.startswith("blocked") and on_disk(kernel, dtype))
    monkeypatch.setattr(_dispatch, "_compile_in_child", lambda name, dtype: None)
    try:
        _check_tier_switch(spec, x, w, gate, monkeypatch)
    finally:
        gate.set()
        deadline = time.monotonic() + 120  # let the held builds finish before the next test
        while not all(e["ready"] for e in cache.info()["entries"]) and time.monotonic() < deadline:
            time.sleep(0.01)


def _check_tier_switch(spec, x, w, gate, monkeypatch):
    plan = _dispatch.Plan(spec, "auto")
    assert len(plan.state[0]) > 1, plan.state[0]  # started below the blocked tier
    w6 = w.reshape(spec.group_weight_shape)
    bias = np.zeros(16, np.float32)
    first = np.empty(spec.out_shape, np.float32)
    plan.run(x, w6, bias, first)
    gate.set()
    deadline = time.monotonic() + 120
    while not all(e["ready"] for e in _dispatch.CACHE.info()["entries"]):
        assert time.monotonic() < deadline
        time.sleep(0.01)

    errors, stores, others = [], [], []
    switching = threading.current_thread()

    def other_thread(after):
        try:
            out = np.empty(spec.out_shape, np.float32)
            plan.run(x, w6, bias, out)
            assert out.tobytes() == first.tobytes(), "a different result"
        except Exception as exc:
            errors.append(f"after the switch stored {after!r}: {exc!r}")

    def storing(self, name, value):
        object.__setattr__(self, name, value)
        if self is plan and threading.current_thread() is switching:
            stores.append(name)
            t = threading.Thread(target=other_thread, args=(name,))
            t.start()
            t.join(2)  # a thread that waits for a lock finishes after the switch
            others.append(t)

    monkeypatch.setattr(_dispatch.Plan, "__setattr__", storing)
    out = np.empty(spec.out_shape, np.float32)
    plan.run(x, w6, bias, out)
    assert plan.kernel_name == _dispatch.blocked_variant(spec)
    switching = None  # no more probes
    for t in others:
        t.join(60)
        assert not t.is_alive()
    assert out.tobytes() == first.tobytes()
    assert stores, "the plan did not switch tiers"
    assert not errors, (f"threads running the plan while it switched tiers (attributes stored in "
                        f"this order: {stores}) failed: {errors}")


# ---- Processes -----------------------------------------------------------------------
_POOL_SCRIPT = r'''
import json, sys, multiprocessing as mp
import concurrent.futures as cf
import numpy as np
import numbaconv as nc


def small(seed):
    """conv3d on small inputs (auto: a serial kernel)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 4, 4, 4)).astype(np.float32)
    w = rng.standard_normal((1, 3, 3, 3, 3)).astype(np.float32)
    return nc.conv3d(x, w)


def parallel(seed):
    """conv3d on the parallel direct kernel."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 4, 10, 10, 10)).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3, 3)).astype(np.float32)
    return nc.conv3d(x, w, padding=1, algorithm="direct")


def small_backward(seed):
    """The weight gradient of a small convolution (its kernels are all parallel)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 4, 4, 4)).astype(np.float32)
    w = rng.standard_normal((1, 3, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((2, 1, 2, 2, 2)).astype(np.float32)
    return nc.conv3d_backward(g, x, w, need_input_grad=False)[1]


if __name__ == "__main__":
    method, which = sys.argv[1], sys.argv[2]
    fn = {"small": small, "parallel": parallel, "small_backward": small_backward}[which]
    seeds = [1, 2, 3, 4]
    # The parent runs conv3d first, on the parallel kernels too (fork after threads).
    parallel(0)
    expected = [fn(s) for s in seeds]
    ctx = mp.get_context(method)
    if which == "small":
        with ctx.Pool(2) as pool:
            got = pool.map_async(fn, seeds).get(timeout=120)
    else:  # a dead worker breaks this pool at once instead of hanging it
        with cf.ProcessPoolExecutor(2, mp_context=ctx) as pool:
            got = list(pool.map(fn, seeds, timeout=120))
    same = [g.tobytes() == e.tobytes() for g, e in zip(got, expected)]
    print(json.dumps({"same": same}))
'''


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_pool_small_inputs(method, tmp_path):
    """A Pool of 2 workers maps conv3d on small inputs, after the parent has itself run
    conv3d (on parallel kernels): the workers' results equal the parent's bitwise."""
    if method not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    proc = run_script(tmp_path, _POOL_SCRIPT, method, "small", timeout=300)
    assert proc.returncode == 0, describe(proc)
    assert last_json(proc)["same"] == [True] * 4


@pytest.mark.parametrize("which", ["parallel", "small_backward"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_workers_on_parallel_kernels(method, which, tmp_path):
    """The same with work that runs on numba's thread pool in the workers: a forward
    convolution on the parallel direct kernel, or the weight gradient of a small one
    (every weight-gradient kernel is parallel). With fork, the workers inherit a
    process that has already used GNU OpenMP (numba's default ``omp`` layer on Linux),
    and numba kills any such child that launches a parallel kernel ("Terminating:
    fork() called from a process already using GNU OpenMP, this is unsafe."); a
    multiprocessing.Pool then waits forever (here a ProcessPoolExecutor reports it)."""
    if method not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    proc = run_script(tmp_path, _POOL_SCRIPT, method, which, timeout=300)
    assert proc.returncode == 0, (
        f"conv3d in a {method}ed worker after the parent used the thread pool: " + describe(proc))
    assert last_json(proc)["same"] == [True] * 4


# ---- 2. The on-disk kernel cache -----------------------------------------------------
_CACHE_SCRIPT = r'''
import json, sys, time
start = time.perf_counter()
import numba
import numpy as np
import numbaconv as nc
from numbaconv import _dispatch
from numbaconv._cpu import forward_block
from numbaconv.kernels import _blocked_generated, direct, gemm

rng = np.random.default_rng(5)
x = rng.standard_normal((1, 4, 6, 7, 8)).astype(np.float32)
w = rng.standard_normal((2, 4, 3, 3, 3)).astype(np.float32)  # 2 output channels: depthwise block
b = rng.standard_normal(2).astype(np.float32)
algorithms = sys.argv[2].split(",")
outs = {a: nc.conv3d(x, w, b, padding=1, algorithm=a) for a in algorithms}
np.savez(sys.argv[1], **outs)
cob, vw = forward_block(np.float32, 2)
dispatchers = {"tiny": direct.forward_tiny, "direct": direct.forward_direct,
               "blocked": getattr(_blocked_generated, f"forward_c{cob}_v{vw}"), "gemm": gemm.forward_gemm}
stats = {name: {"hits": sum(d.stats.cache_hits.values()), "misses": sum(d.stats.cache_misses.values())}
         for name, d in dispatchers.items() if name in algorithms}
print(json.dumps({"threads": numba.get_num_threads(), "stats": stats, "file": nc.__file__,
                  "compile_seconds": nc.kernel_cache_info()["compile_seconds"],
                  "seconds": time.perf_counter() - start}))
'''


def _cache_env(root, cache_dir, threads):
    return python_env(str(root), NUMBA_CACHE_DIR=cache_dir, NUMBA_NUM_THREADS=threads,
                      NUMBACONV_BACKGROUND_COMPILE="0")


#: Every kind of kernel the cache holds: plain and parallel loops, the generated module,
#: and a kernel that calls scipy's BLAS.
_CACHED_KINDS = "tiny,direct,blocked,gemm"
#: Enough to race two processes writing one cache: a plain and a parallel kernel (the
#: others are written the same way, and compile 15-20 s each on a Zen 3).
_RACED_KINDS = "tiny,direct"


def _cache_run(tmp_path, root, cache_dir, threads, name, kinds=_CACHED_KINDS):
    out = tmp_path / f"{name}.npz"
    proc = run_script(tmp_path, _CACHE_SCRIPT, out, kinds, env=_cache_env(root, cache_dir, threads),
                      timeout=600)
    assert proc.returncode == 0, f"run {name}: " + describe(proc)
    report = last_json(proc)
    assert report["threads"] == threads
    assert report["file"].startswith(str(root)), report["file"]
    z = np.load(out)
    return {k: z[k] for k in z.files}, report


def _assert_same(a, b, what):
    """``b`` has ``a``'s bits for every algorithm ``b`` ran."""
    assert set(b) <= set(a) and b
    for key in b:
        assert a[key].tobytes() == b[key].tobytes(), f"{what}: algorithm {key} differs"


@pytest.mark.slow
def test_disk_cache_across_thread_counts_and_concurrent_fills(tmp_path, figure):
    """(a) A cache filled under NUMBA_NUM_THREADS=1 serves a process with 2 threads, and
    one filled under 2 serves 1 thread; (b) two processes filling the same empty cache
    at once (with the tiny and the parallel direct kernel) both succeed and agree, and a
    third process loads everything from it.
    All results are bitwise equal; the warm runs compile nothing (numba's cache hits).
    The runs use a snapshot of the package, so that edits made meanwhile in the work tree
    (which change the source time stamps numba's cache checks) cannot interfere."""
    start = time.perf_counter()
    root = _copy_package(tmp_path)
    dir_a, dir_b = str(tmp_path / "cache_a"), str(tmp_path / "cache_b")
    cold_1, r_cold_1 = _cache_run(tmp_path, root, dir_a, 1, "fill_with_1_thread")
    warm_2, r_warm_2 = _cache_run(tmp_path, root, dir_a, 2, "use_with_2_threads")

    out_paths = [tmp_path / f"concurrent_{i}.npz" for i in range(2)]
    scripts = [write_script(tmp_path, _CACHE_SCRIPT) for _ in range(2)]
    procs = [subprocess.Popen([sys.executable, s, str(p), _RACED_KINDS], env=_cache_env(root, dir_b, 2),
                              cwd=str(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s, p in zip(scripts, out_paths)]
    concurrent = []
    for proc, path in zip(procs, out_paths):
        stdout, stderr = proc.communicate(timeout=600)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert proc.returncode == 0, "concurrent cold fill: " + describe(done)
        z = np.load(path)
        concurrent.append(({k: z[k] for k in z.files}, last_json(done)))
    warm_1, r_warm_1 = _cache_run(tmp_path, root, dir_b, 1, "reuse_with_1_thread", _RACED_KINDS)

    for other, what in ((warm_2, "cache filled with 1 thread, used with 2"),
                        (concurrent[0][0], "concurrent fill #1"), (concurrent[1][0], "concurrent fill #2"),
                        (warm_1, "cache filled with 2 threads, used with 1")):
        _assert_same(cold_1, other, what)
    for report, what in ((r_warm_2, "warm run with 2 threads"), (r_warm_1, "warm run with 1 thread")):
        for name, s in report["stats"].items():
            assert s["misses"] == 0 and s["hits"] >= 1, f"{what}: {name} was not loaded from the cache: {s}"
    assert any(s["misses"] for s in r_cold_1["stats"].values())  # the cold run compiled
    figure(f"cold fill {r_cold_1['seconds']:.1f} s, concurrent cold fills "
           f"{concurrent[0][1]['seconds']:.1f} s / {concurrent[1][1]['seconds']:.1f} s, warm runs "
           f"{r_warm_2['seconds']:.1f} s / {r_warm_1['seconds']:.1f} s; "
           f"test {time.perf_counter() - start:.0f} s")


def _copy_package(tmp_path):
    """A copy of the numbaconv package (without caches); returns its parent directory."""
    root = tmp_path / "copy"
    shutil.copytree(os.path.join(REPO, "numbaconv"), root / "numbaconv",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


def _edit(path, old, new):
    with open(path) as f:
        text = f.read()
    assert text.count(old) == 1, f"{path} no longer contains {old!r} once: update this test"
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def _regenerate(root):
    proc = subprocess.run([sys.executable, str(root / "numbaconv" / "kernels" / "blocked_codegen.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, describe(proc)


def _generated_is_current(root) -> bool:
    proc = subprocess.run(
        [sys.executable, "-c", "from numbaconv.kernels import blocked_codegen as c; "
         "print(open(c.GENERATED_PATH).read() == c.module_source())"],
        capture_output=True, text=True, env=python_env(str(root)), timeout=120, cwd=str(root))
    assert proc.returncode == 0, describe(proc)
    return proc.stdout.strip() == "True"


_STALE_SCRIPT = r'''
import sys
import numpy as np
import numbaconv as nc
assert nc.__file__.startswith(sys.argv[2]), nc.__file__  # the copy, not the original
rng = np.random.default_rng(11)
x = rng.standard_normal((1, 4, 6, 7, 8)).astype(np.float32)
w = rng.standard_normal((2, 4, 3, 3, 3)).astype(np.float32)     # blocked1x64
wd = rng.standard_normal((4, 1, 3, 3, 3)).astype(np.float32)    # depthwise
g = rng.standard_normal((1, 4, 6, 7, 8)).astype(np.float32)
what = sys.argv[3]
if what == "tiny":
    out = nc.conv3d(x, w, padding=1, algorithm="tiny")
elif what == "blocked":
    out = nc.conv3d(x, w, padding=1, algorithm="blocked")
else:  # the serial weight_grad_direct: same generated module, a fraction of the compile
    from numbaconv import _backward
    from numbaconv._spec import ConvSpec
    spec = ConvSpec.from_args(x, wd, None, 1, 1, 1, 4)[0]
    out = _backward.grad_weight(spec, x, g, "wgrad_direct_serial")
np.save(sys.argv[1], out)
'''


def _stale_run(tmp_path, root, cache_dir, what, name):
    out = tmp_path / f"{name}.npy"
    proc = run_script(tmp_path, _STALE_SCRIPT, out, str(root), what, timeout=600,
                      env=python_env(str(root), NUMBA_CACHE_DIR=cache_dir,
                                     NUMBACONV_BACKGROUND_COMPILE="0"))
    assert proc.returncode == 0, f"{name}: " + describe(proc)
    return np.load(out)


@pytest.mark.slow
def test_stale_cache_not_used_after_kernel_edit(tmp_path):
    """Editing a kernel (forward_tiny adds 1 to its output) in a copy of the package:
    the next run, with the same NUMBA_CACHE_DIR, shows the new behaviour."""
    root, cache = _copy_package(tmp_path), str(tmp_path / "cache")
    before = _stale_run(tmp_path, root, cache, "tiny", "before")
    _edit(root / "numbaconv" / "kernels" / "direct.py",
          "out[n, co_all, od, oh, ow] = acc[ow] + bias[co_all]",
          "out[n, co_all, od, oh, ow] = acc[ow] + bias[co_all] + 1.0")
    _regenerate(root)  # direct.py is inlined by the generated kernels
    after = _stale_run(tmp_path, root, cache, "tiny", "after")
    assert after.tobytes() == (before + np.float32(1)).tobytes(), "the stale forward_tiny was used"


@pytest.mark.slow
def test_stale_cache_not_used_after_blocked_helper_edit(tmp_path, figure):
    """Editing a helper of kernels/blocked.py that the generated kernels inline
    (reduction_terms doubles the weights) and regenerating: algorithm="blocked" doubles
    its output with the same cache. Forgetting to regenerate is caught by
    test_generated_kernels_are_current's check; what a run does then is reported."""
    root, cache = _copy_package(tmp_path), str(tmp_path / "cache")
    before = _stale_run(tmp_path, root, cache, "blocked", "before")
    _edit(root / "numbaconv" / "kernels" / "blocked.py",
          "return offsets, wpack[g]",
          "return offsets, 2 * wpack[g]")
    assert not _generated_is_current(root), "the guard does not notice the helper edit"
    forgotten = _stale_run(tmp_path, root, cache, "blocked", "not_regenerated")
    stale = forgotten.tobytes() == before.tobytes()
    figure("helper edited, generated module NOT regenerated: the run with the warm cache "
           + ("silently used the STALE blocked kernel (old result)" if stale
              else "used the new helper"))
    _regenerate(root)
    assert _generated_is_current(root)
    after = _stale_run(tmp_path, root, cache, "blocked", "after")
    assert after.tobytes() == (2 * before).tobytes(), "the stale blocked kernel was used"


@pytest.mark.slow
def test_stale_cache_not_used_after_direct_helper_edit_weight_gradient(tmp_path):
    """kernels/backward.py's weight_grad_direct(_serial) inlines helpers of kernels/direct.py
    (fill_padded_planes, ...). After editing such a helper (the copied planes are
    doubled, so the weight gradient doubles) and regenerating as the guard asks, a run
    with the same cache must show the new behaviour, as a run with a fresh cache does."""
    root, cache = _copy_package(tmp_path), str(tmp_path / "cache")
    before = _stale_run(tmp_path, root, cache, "wgrad", "before")
    _edit(root / "numbaconv" / "kernels" / "direct.py",
          "copy_row(row[first:], src_row[start:start + last - first])",
          "copy_row(row[first:], 2 * src_row[start:start + last - first])")
    _regenerate(root)
    fresh = _stale_run(tmp_path, root, str(tmp_path / "fresh_cache"), "wgrad", "fresh")
    assert fresh.tobytes() == (2 * before).tobytes()  # the edit does double it
    after = _stale_run(tmp_path, root, cache, "wgrad", "after")
    assert after.tobytes() == fresh.tobytes(), (
        "numba loaded a stale weight_grad_direct from the disk cache: kernels/backward.py "
        "did not change, so numba's cache (which checks only a function's own file) kept the "
        "machine code compiled with the old kernels/direct.py helpers")


# ---- 3. Memory over many calls -------------------------------------------------------
def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


_MEM_ALGORITHMS = ["auto", "direct", "direct_serial", "tiny", "blocked", "gemm"]
_MEM_DTYPES = [np.float32, np.float64, np.float16]


def _memory_call(i, keys):
    """Call i of the memory test: a small convolution, its gradients or a transposed one;
    about 600 distinct shapes in all."""
    rng = np.random.default_rng(i % 1009)
    groups = (1, 1, 2, 3)[i % 4]
    cin = groups * (1 + (i // 4) % 3)
    cout = groups * (1 + (i // 12) % 3)
    k = 1 + (i // 2) % 3
    size = (k + i % 5, k + (i // 5) % 4, k + (i // 7) % 6)
    n = 1 + (i // 3) % 2
    dtype = _MEM_DTYPES[i % 3]
    algorithm = _MEM_ALGORITHMS[(i // 3) % 6]
    x = rng.standard_normal((n, cin) + size).astype(dtype)
    w = rng.standard_normal((cout, cin // groups, k, k, k)).astype(dtype)
    kind = i % 10
    if kind < 7:
        stride, padding = 1 + i % 2, (i // 2) % 2
        keys.add((x.shape, w.shape, dtype, stride, padding, groups, algorithm))
        return nc.conv3d(x, w, None, stride=stride, padding=padding, groups=groups, algorithm=algorithm)
    if kind < 9:
        grad_out = np.ones(nc.conv3d(x, w, padding=1, groups=groups).shape, dtype)
        return nc.conv3d_backward(grad_out, x, w, padding=1, groups=groups, algorithm=algorithm)
    wt = rng.standard_normal((cin, cout // groups, k, k, k)).astype(dtype)
    return nc.conv_transpose3d(x, wt, None, stride=2, groups=groups, algorithm=algorithm)


def test_memory_bounded_over_10000_calls(figure):
    """10,000 calls in mixed small configurations (shapes, dtypes, algorithms, forward,
    backward, transposed): RSS grows less than 50 MiB after a 500-call warm-up, and the
    plan cache and the kernel cache stay within their bounds."""
    start = time.perf_counter()
    keys = set()
    for i in range(500):
        _memory_call(i, keys)
    rss_warm = _rss_mib()
    hits_warm = nc.kernel_cache_info()["hits"]
    largest_plans, plan_drops, previous = 0, 0, len(functional._PLANS)
    for i in range(500, 10_000):
        _memory_call(i, keys)
        plans = len(functional._PLANS)
        plan_drops += plans < previous
        previous = plans
        largest_plans = max(largest_plans, plans)
        if i % 500 == 0:
            info = nc.kernel_cache_info()
            assert len(info["entries"]) <= info["max_entries"]
    rss_end = _rss_mib()
    info = nc.kernel_cache_info()
    elapsed = time.perf_counter() - start
    figure(f"RSS {rss_warm:.1f} MiB after 500 calls, {rss_end:.1f} MiB after 10,000 "
           f"(growth {rss_end - rss_warm:+.1f} MiB); {len(keys)} distinct forward plan keys, "
           f"plan cache at most {largest_plans} (emptied {plan_drops} times); "
           f"{len(info['entries'])} kernels; {elapsed:.1f} s")
    assert len(keys) > _config.CALL_PLANS  # the plan cache really overflowed
    assert largest_plans <= _config.CALL_PLANS
    assert len(functional._PLANS) <= _config.CALL_PLANS
    assert len(info["entries"]) <= info["max_entries"]
    assert info["hits"] > hits_warm
    assert rss_end - rss_warm < 50, f"RSS grew by {rss_end - rss_warm:.1f} MiB"


_GEMM_MEMORY_SCRIPT = r'''
import json
import numba
import numpy as np
import numbaconv as nc
from numbaconv.kernels import gemm


def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024


rng = np.random.default_rng(0)
nc.conv3d(np.ones((1, 1, 4, 4, 4), np.float32), np.ones((4, 1, 1, 1, 1), np.float32), algorithm="gemm")
x = rng.standard_normal((1, 1, 32, 64, 64)).astype(np.float32)
w = rng.standard_normal((256, 1, 1, 1, 1)).astype(np.float32)
before = hwm()
out = nc.conv3d(x, w, algorithm="gemm")
extra = hwm() - before - out.nbytes
print(json.dumps({"extra": extra, "out": out.nbytes, "threads": numba.get_num_threads(),
                  "slab": gemm.SLAB_BYTES}))
'''


def test_gemm_scratch_memory_is_bounded(tmp_path, figure):
    """The GEMM path's memory beyond input, weight and output is documented as at most
    threads x SLAB_BYTES: measured (peak RSS) on a layer with many output channels
    and a short reduction (1 input channel, 256 output channels, 1x1x1)."""
    proc = run_script(tmp_path, _GEMM_MEMORY_SCRIPT, timeout=300)
    assert proc.returncode == 0, describe(proc)
    r = last_json(proc)
    allowed = r["threads"] * r["slab"] + 32 * MiB
    figure(f"gemm, 1 -> 256 channels, 131072 positions: {r['extra'] / MiB:.0f} MiB beyond the "
           f"{r['out'] / MiB:.0f} MiB output (allowed {allowed / MiB:.0f} MiB)")
    assert r["extra"] <= allowed, (
        f"the GEMM path used {r['extra'] / MiB:.0f} MiB of scratch memory for a "
        f"{r['out'] / MiB:.0f} MiB output (bound: {allowed / MiB:.0f} MiB)")


# ---- 4. Tensors past 2**31 elements --------------------------------------------------
def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


_BIG_SCRIPT = r'''
import json, sys, time
import numpy as np
import numbaconv as nc


def hwm_gib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20


S, C = 128, 1025                      # C * S**3 = 2,149,580,800 > 2**31
base = (np.arange(S**3, dtype=np.int64) % 1009).astype(np.float32).reshape(S, S, S)
weights = ((np.arange(C) % 5) - 2).astype(np.float32)
weights[weights == 0] = 3             # small nonzero integers: every sum below is exact
rng = np.random.default_rng(0)
report = {"cases": []}
start = time.perf_counter()


def sample(shape, end_axis):
    """~200 positions: 100 random, 100 at the far end of ``end_axis`` and of space."""
    pos = [tuple(int(rng.integers(0, s)) for s in shape) for _ in range(100)]
    for _ in range(100):
        p = [int(rng.integers(0, s)) for s in shape]
        p[end_axis] = shape[end_axis] - 1 - int(rng.integers(0, 2))
        p[2:] = [s - 1 - int(rng.integers(0, 3)) if rng.random() < 0.5 else v
                 for s, v in zip(shape[2:], p[2:])]
        pos.append(tuple(p))
    return pos


# Output past 2**31 elements: one input channel, 1025 output channels, 1x1x1.
x = base[None, None]
w = weights.reshape(C, 1, 1, 1, 1)
for algorithm in ("auto", "direct"):
    t = time.perf_counter()
    out = nc.conv3d(x, w, algorithm=algorithm)
    seconds = time.perf_counter() - t
    assert out.shape == (1, C, S, S, S) and out.size > 2**31
    bad = [p for p in sample(out.shape, 1)
           if out[p] != np.float32(float(base[p[2:]]) * float(weights[p[1]]))]
    last = out[0, C - 1, S - 1, S - 1, S - 1] == base[-1, -1, -1] * weights[-1]
    report["cases"].append({"case": "output", "algorithm": algorithm, "seconds": seconds,
                            "bad": len(bad), "last_ok": bool(last)})
    del out

# Input past 2**31 elements: 1025 input channels, 1 output channel, 1x1x1.
t = time.perf_counter()
x = np.empty((1, C, S, S, S), np.float32)
for c in range(C):
    np.add(base, np.float32(c % 13), out=x[0, c])
report["fill_seconds"] = time.perf_counter() - t
w = weights.reshape(1, C, 1, 1, 1)
w64 = weights.astype(np.float64)
for algorithm in ("auto", "blocked"):
    t = time.perf_counter()
    out = nc.conv3d(x, w, algorithm=algorithm)
    seconds = time.perf_counter() - t
    assert out.shape == (1, 1, S, S, S) and x.size > 2**31
    bad = [p for p in sample(out.shape, 4)
           if out[p] != np.float32(x[0, :, p[2], p[3], p[4]].astype(np.float64) @ w64)]
    report["cases"].append({"case": "input", "algorithm": algorithm, "seconds": seconds,
                            "bad": len(bad)})
    del out
report["seconds"] = time.perf_counter() - start
report["peak_gib"] = hwm_gib()
print(json.dumps(report))
'''


@pytest.mark.slow
def test_tensors_past_2_31_elements(tmp_path, figure):
    """conv3d whose output (1 x 1025 x 128**3, float32, 8 GiB) and then whose input
    has more than 2**31 elements, on two algorithms each; ~200 sampled outputs, half of
    them at the far end (where 32-bit index arithmetic would overflow), equal an exact
    computation (small integers: every sum is exact in float32). Under 2 minutes."""
    available = _mem_available()
    if available < 20 * GiB:
        pytest.skip(f"needs 20 GiB of available memory, {available / GiB:.1f} GiB available")
    start = time.perf_counter()
    proc = run_script(tmp_path, _BIG_SCRIPT, timeout=600)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, describe(proc)
    r = last_json(proc)
    cases = ", ".join(f"{c['case']} {c['algorithm']} {c['seconds']:.1f} s" for c in r["cases"])
    figure(f"{elapsed:.0f} s in all ({cases}, input fill {r['fill_seconds']:.1f} s), "
           f"peak RSS {r['peak_gib']:.2f} GiB")
    for case in r["cases"]:
        assert case["bad"] == 0, case
        assert case.get("last_ok", True), case
    assert elapsed < 120, f"took {elapsed:.0f} s"


# ---- 5. Numerics ---------------------------------------------------------------------
#: name: (N, Cin, size, Cout, kernel, stride, padding, dilation, groups)
NONFINITE_CASES = {
    "padded": (1, 3, (5, 6, 7), 4, 3, 1, 1, 1, 1),
    "strided_grouped": (2, 4, (6, 7, 8), 6, (2, 3, 3), (2, 1, 2), (1, 2, 1), 1, 2),
    "dilated_depthwise": (1, 3, (7, 7, 7), 3, 3, 1, 2, 2, 3),
    "pointwise": (1, 4, (3, 4, 5), 5, 1, 1, 0, 1, 1),
}


def _case(name, dtype, seed):
    n, cin, size, cout, k, s, p, d, g = NONFINITE_CASES[name]
    rng = np.random.default_rng(seed)
    k = k if isinstance(k, tuple) else (k,) * 3
    x = rng.standard_normal((n, cin) + size).astype(dtype)
    w = rng.standard_normal((cout, cin // g) + k).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    return x, w, b, dict(stride=s, padding=p, dilation=d, groups=g)


def assert_nonfinite_like_reference(out, x, w, b, args):
    """NaN exactly where the float64 reference is NaN, +-Inf where it is +-Inf, and
    the finite elements within the rounding bound."""
    expected = conv3d_reference(x, w, b, **args)
    nan_diff = np.isnan(out) != np.isnan(expected)
    assert not nan_diff.any(), (
        f"NaN differs at {nan_diff.sum()} of {out.size} elements, e.g. {tuple(np.argwhere(nan_diff)[0])}:"
        f" got {out[tuple(np.argwhere(nan_diff)[0])]}, reference {expected[tuple(np.argwhere(nan_diff)[0])]}")
    inf = np.isinf(expected)
    assert np.array_equal(np.isinf(out), inf)
    assert np.array_equal(out[inf], expected[inf])  # the signs
    finite = np.isfinite(expected)
    bound = error_bound(out.dtype, np.nan_to_num(x, nan=0, posinf=0, neginf=0),
                        np.nan_to_num(w, nan=0, posinf=0, neginf=0), b, **args)
    if out.dtype == np.float16:
        bound = bound + np.abs(expected) * 2.0 ** -11 + 2.0 ** -24
    error = np.abs(out.astype(np.float64)[finite] - expected[finite])
    assert np.all(error <= bound[finite])


def _plant(array, rng, values):
    """Put ``values`` at the corners, along the borders and in the interior of the
    spatial axes of ``array`` (a copy)."""
    a = array.copy()
    n, c = a.shape[:2]
    d, h, w = a.shape[2:]
    spots = [(0, 0, 0), (d - 1, h - 1, w - 1), (0, h // 2, w - 1), (d - 1, 0, w // 2),
             (d // 2, h // 2, w // 2), (d // 2, h - 1, 0)]
    for i, spot in enumerate(spots):
        a[(int(rng.integers(0, n)), int(rng.integers(0, c))) + spot] = values[i % len(values)]
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("algorithm", FORCED + ["auto"])
def test_nonfinite_inputs_propagate_like_reference(algorithm, dtype):
    for name in NONFINITE_CASES:
        x, w, b, args = _case(name, dtype, 3)
        x = _plant(x, np.random.default_rng(4), [np.nan, np.inf, -np.inf])
        out = nc.conv3d(x, w, b, algorithm=algorithm, **args)
        assert_nonfinite_like_reference(out, x, w, b, args)


def _plant_weight(w, values):
    w = w.copy()
    w[(0, 0) + tuple(k // 2 for k in w.shape[2:])] = values[0]  # the centre tap
    w[(-1, -1, 0, 0, w.shape[4] - 1)] = values[1]               # a corner tap
    return w


@pytest.mark.parametrize("algorithm", FORCED + ["auto"])
def test_nonfinite_weights_with_hw_padding_like_reference(algorithm):
    """NaN and Inf weights, padding in H and W only: padding is zeros, and zero times
    Inf is NaN, as in the reference."""
    for dtype in (np.float32, np.float64):
        for name in NONFINITE_CASES:
            x, w, b, args = _case(name, dtype, 5)
            p = triple(args["padding"])
            args["padding"] = (0, max(1, p[1]), max(1, p[2]))
            w = _plant_weight(w, [np.inf, np.nan])
            out = nc.conv3d(x, w, b, algorithm=algorithm, **args)
            assert_nonfinite_like_reference(out, x, w, b, args)


@pytest.mark.parametrize("algorithm", FORCED + ["auto"])
def test_nonfinite_weights_with_depth_padding_like_reference(algorithm):
    """NaN and Inf weights with padding in depth too: padding is zeros and zero times Inf
    is NaN on every axis, so the float64 reference (and the GEMM path) give NaN wherever
    a window overlaps the padding. The direct kernels skip depth taps outside the input
    instead (finite results there), so the algorithms disagree with each other."""
    for dtype in (np.float32, np.float64):
        for name in NONFINITE_CASES:
            x, w, b, args = _case(name, dtype, 6)
            if name == "pointwise":
                args["padding"] = 1
            w = _plant_weight(w, [-np.inf, np.nan])
            out = nc.conv3d(x, w, b, algorithm=algorithm, **args)
            assert_nonfinite_like_reference(out, x, w, b, args)


def _weight_grad_reference(x, grad_out, kernel, stride, padding):
    """The float64 weight gradient (groups 1) from its formula: each tap's window of the
    zero-padded input against grad_output, over samples and positions (einsum)."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0)) + ((padding, padding),) * 3)
    g = grad_out.astype(np.float64)
    gw = np.empty((g.shape[1], x.shape[1]) + (kernel,) * 3)
    for tap in itertools.product(range(kernel), repeat=3):
        window = xp[(slice(None), slice(None)) + tuple(
            slice(t, t + stride * (o - 1) + 1, stride) for t, o in zip(tap, g.shape[2:]))]
        gw[(slice(None), slice(None)) + tap] = np.einsum("nopqr,ncpqr->oc", g, window)
    return gw


def _assert_nonfinite_where_expected(got, expected, tolerance):
    assert np.array_equal(np.isnan(got), np.isnan(expected)), \
        f"NaN at {np.isnan(got).sum()} elements, expected at {np.isnan(expected).sum()}"
    inf = np.isinf(expected)
    assert np.array_equal(np.isinf(got), inf) and np.array_equal(got[inf], expected[inf])
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_finite_check_has_no_false_negatives(dtype):
    """``_dispatch.all_finite`` (one dot product per array): any NaN, +Inf or -Inf, at
    any place, is found; huge finite values, whose squares overflow, are finite (the
    exact test decides); empty and non-contiguous arrays work."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3, 5, 7, 9)).astype(dtype)
    assert _dispatch.all_finite([base, base[:, ::2, 1:, ::-1], base[:0]])
    huge = np.full(100, np.finfo(dtype).max / 4, dtype)
    huge[::2] *= -1
    assert _dispatch.all_finite([base, huge])
    assert _dispatch.all_finite([np.full(1000, 65535, np.uint16), np.full(10, 2**62, np.int64)])
    for bad in (np.nan, np.inf, -np.inf):
        for index in ((0, 0, 0, 0), (2, 4, 6, 8), (1, 2, 3, 4)):
            spoiled = base.copy()
            spoiled[index] = bad
            assert not _dispatch.all_finite([base, spoiled])
            assert not _dispatch.all_finite([spoiled[:, ::2, :, ::-1] if index[1] % 2 == 0 else spoiled])
        spoiled_huge = huge.copy()
        spoiled_huge[-1] = bad
        assert not _dispatch.all_finite([spoiled_huge])


@pytest.mark.parametrize("channels, size, stride, padding", [
    (4, 9, 1, 0), (4, 9, 2, 0), (4, 10, 1, 1),  # the direct and blocked weight gradients
    (32, 24, 1, 1)])                            # Winograd, forward and weight gradient
def test_auto_keeps_nonfinite_inputs_to_the_sums_that_read_them(channels, size, stride, padding):
    """Kernels that spread a NaN or Inf beyond the sums that read it: transforms (Winograd
    mixes a tile's positions) and the direct weight gradients (their dot products run
    over grad_output's zero margins, where the input holds other positions' values, and
    0 x Inf is NaN). For operands that are not all finite, ``auto`` runs a kernel that
    sums each output's window only, as MegEngine and the float64 reference do."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, channels, size, size, size)).astype(np.float32)
    x[0, 1, size // 2, size // 2, size - 1] = np.inf  # the last column: other rows' margins
    x[0, 2, 0, 3, size - 1] = np.nan
    x[0, 3, size - 2, 1, 2] = -np.inf
    w = (rng.standard_normal((2 * channels, channels, 3, 3, 3)) / channels).astype(np.float32)
    spec = ConvSpec.from_args(x, w, None, stride, padding, 1, 1)[0]
    forward = _dispatch.REGISTRY[_dispatch.resolve(spec, "auto")]
    weight_grad = _dispatch.REGISTRY[_dispatch.resolve(spec, "auto", "weight_grad")]
    assert weight_grad.spreads_nonfinite  # finite operands take it: the case in question
    out = nc.conv3d(x, w, stride=stride, padding=padding)
    assert_nonfinite_like_reference(out, x, w, None, dict(stride=stride, padding=padding))
    if channels == 32:
        assert forward.spreads_nonfinite
    g = rng.standard_normal(spec.out_shape).astype(np.float32)
    _, gw, _ = nc.conv3d_backward(g, x, w, stride=stride, padding=padding)
    _assert_nonfinite_where_expected(gw, _weight_grad_reference(x, g, 3, stride, padding), 1e-3)


_THREADS_SCRIPT = WORKLOAD + r'''
import sys
arrays = {}
for i in range(JOBS):
    for k, a in enumerate(run_job(i)):
        arrays[f"{i}_{k}"] = a
rng = np.random.default_rng(9)  # transposed convolutions and their gradients too
y = rng.standard_normal((2, 6, 5, 6, 7)).astype(np.float32)
wt = rng.standard_normal((6, 2, 3, 2, 3)).astype(np.float32)
for algorithm in ("auto", "direct", "blocked", "gemm"):
    out = nc.conv_transpose3d(y, wt, None, stride=2, padding=1, output_padding=1, groups=3,
                              algorithm=algorithm)
    g = rng.standard_normal(out.shape).astype(np.float32)
    grads = nc.conv_transpose3d_backward(g, y, wt, stride=2, padding=1, output_padding=1, groups=3,
                                         algorithm=algorithm)
    for k, a in enumerate([out] + list(grads)):
        arrays[f"t_{algorithm}_{k}"] = a
np.savez(sys.argv[1], **arrays)
'''


def test_bitwise_identical_across_runs_and_thread_counts(tmp_path):
    """Forward and backward (every job of the concurrency workload, transposed
    convolutions too) give the same bits with 1 and 2 threads and from run to run."""
    results = outputs_per_thread_count(tmp_path, _THREADS_SCRIPT, (1, 2, 2))
    for other, what in ((results[1], "1 vs 2 threads"), (results[2], "run to run")):
        for key, value in results[0].items():
            assert value.tobytes() == other[key].tobytes(), f"{what}: {key}"


@pytest.mark.parametrize("data", ["normal", "uniform"])
def test_float32_long_reduction_error(data, figure):
    """A reduction of Cin*k**3 = 4096*125 = 512,000 terms in float32: the error against
    float64, relative to sum|w*x|, stays below the rigorous (n+2)*eps bound; the measured
    values are reported (normal data: cancelling signs; uniform: all terms positive,
    the worst case for a running sum)."""
    rng = np.random.default_rng(21)
    if data == "normal":
        x = rng.standard_normal((1, 4096, 6, 6, 6)).astype(np.float32)
        w = rng.standard_normal((2, 4096, 5, 5, 5)).astype(np.float32)
    else:
        x = rng.random((1, 4096, 6, 6, 6)).astype(np.float32)
        w = rng.random((2, 4096, 5, 5, 5)).astype(np.float32)
    n = 4096 * 125
    eps = float(np.finfo(np.float32).eps)
    expected = conv3d_reference(x, w)
    magnitude = conv3d_reference(np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64)))
    measured = {}
    for algorithm in FORCED + ["auto"]:
        out = nc.conv3d(x, w, algorithm=algorithm)
        measured[algorithm] = float(np.max(np.abs(out - expected) / magnitude))
        assert measured[algorithm] < (n + 2) * eps, (algorithm, measured[algorithm])
    figure(f"{data} data, n = {n}: max |error| / sum|w*x| = " + ", ".join(
        f"{a} {v:.2e} ({v / eps:.0f} eps)" for a, v in measured.items())
        + f"; bound (n+2)*eps = {(n + 2) * eps:.2e}")
