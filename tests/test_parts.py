"""Kernels run in parts on Python threads (numbaconv/kernels/parts.py): every part of
every stage runs once, stages in order with a barrier between them, errors reach the
caller; the Winograd kernels so give the bits of their ``prange`` twins at any number
of parts, from several calling threads at once, and in a process forked after OpenMP
started."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import numbaconv as nc
from numbaconv import _backward
from numbaconv._spec import ConvSpec
from numbaconv.kernels import parts, winograd
from helpers import (assert_runs_bitwise_equal, describe, last_json, outputs_per_thread_count,
                     run_script)


def test_every_part_of_every_stage_runs_once_in_stage_order():
    log, lock = [], threading.Lock()

    def run(tag, stage, part, count):
        start = time.perf_counter()
        time.sleep(0.01 * (part % 2))  # uneven parts: the barrier must wait for the slow one
        with lock:
            log.append((tag, stage, part, count, threading.get_ident(), start, time.perf_counter()))

    parts.run_in_parts(run, ("x",), stages=3, parts=3)
    assert sorted(entry[1:4] for entry in log) == [(s, p, 3) for s in range(3) for p in range(3)]
    assert {entry[0] for entry in log} == {"x"}
    for stage in range(2):
        ended = max(e[6] for e in log if e[1] == stage)
        assert ended <= min(e[5] for e in log if e[1] == stage + 1)
    main = threading.get_ident()
    assert {e[4] for e in log if e[2] == 0} == {main}
    assert main not in {e[4] for e in log if e[2] != 0}


def test_one_part_runs_on_the_calling_thread_alone():
    threads = []
    parts.run_in_parts(lambda stage, part, count: threads.append((stage, part, count,
                                                                  threading.get_ident())),
                       (), stages=2, parts=1)
    assert threads == [(0, 0, 1, threading.get_ident()), (1, 0, 1, threading.get_ident())]


def test_parts_run_on_the_calling_thread_when_no_thread_takes_work(monkeypatch):
    """At interpreter shutdown an executor refuses new work (RuntimeError): the parts
    then run here, in order, with the same results."""
    closed = ThreadPoolExecutor(1)
    closed.shutdown()
    monkeypatch.setattr(parts, "_workers", lambda: closed)
    calls = []
    parts.run_in_parts(lambda stage, part, count: calls.append((stage, part, count,
                                                                threading.get_ident())),
                       (), stages=2, parts=3)
    me = threading.get_ident()
    assert calls == [(s, p, 3, me) for s in range(2) for p in range(3)]


@pytest.mark.parametrize("failing_part", [0, 1])
def test_an_error_in_any_part_is_raised_after_its_stage_ends(failing_part):
    ended, lock = [], threading.Lock()

    def run(stage, part, count):
        if part == failing_part:
            raise ValueError(f"part {part}")
        time.sleep(0.05)
        with lock:
            ended.append((stage, part))

    with pytest.raises(ValueError, match=f"part {failing_part}"):
        parts.run_in_parts(run, (), stages=2, parts=2)
    assert ended == [(0, 1 - failing_part)]  # the other part finished; no later stage ran


def _layers(dtype):
    """(x, w, padding) of a layer run item by item and of a deep one run staged."""
    rng = np.random.default_rng(7)
    plain = (rng.standard_normal((2, 6, 9, 8, 10)).astype(dtype),
             rng.standard_normal((4, 3, 3, 3, 3)).astype(dtype), 1, 2)
    deep = (rng.standard_normal((2, 96, 6, 5, 6)).astype(dtype),
            rng.standard_normal((96, 96, 3, 3, 3)).astype(dtype), 1, 1)
    spec = ConvSpec.from_args(deep[0], deep[1], None, 1, 1)[0]
    assert winograd.staged(spec)
    return plain, deep


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_in_parts_from_several_calling_threads_at_once(dtype):
    """Four threads call the kernels in parts at once (their parts share the pool): each
    result has the bits of the parallel kernel's."""
    cases = []
    for x, w, padding, groups in _layers(dtype):
        spec = ConvSpec.from_args(x, w, None, 1, padding, 1, groups)[0]
        grad_out = np.cos(np.arange(np.prod(spec.out_shape))).reshape(spec.out_shape).astype(dtype)
        expected = (nc.conv3d(x, w, padding=padding, groups=groups, algorithm="winograd"),
                    _backward.grad_weight(spec, x, grad_out, "wgrad_winograd"))
        cases.append((x, w, padding, groups, spec, grad_out, expected))

    def call(case):
        x, w, padding, groups, spec, grad_out, expected = case
        got = (nc.conv3d(x, w, padding=padding, groups=groups, algorithm="winograd_threads"),
               _backward.grad_weight(spec, x, grad_out, "wgrad_winograd_threads"))
        return all(a.tobytes() == b.tobytes() for a, b in zip(got, expected))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(call, cases * 4))


def test_winograd_in_parts_has_the_same_bits_at_any_part_count(tmp_path):
    """1, 3 and 5 numba threads (more than this machine's cores): the parts split the
    jobs differently, the bits stay."""
    runs = outputs_per_thread_count(tmp_path, """
        import sys
        import numpy as np, numbaconv as nc
        from numbaconv import _backward
        from numbaconv._spec import ConvSpec
        arrays = {}
        rng = np.random.default_rng(11)
        for name, (shape, wshape, groups) in {"plain": ((2, 6, 9, 8, 10), (4, 3, 3, 3, 3), 2),
                                              "deep": ((2, 96, 6, 5, 6), (96, 96, 3, 3, 3), 1)}.items():
            x = rng.standard_normal(shape).astype(np.float32)
            w = rng.standard_normal(wshape).astype(np.float32)
            spec = ConvSpec.from_args(x, w, None, 1, 1, 1, groups)[0]
            out = nc.conv3d(x, w, padding=1, groups=groups, algorithm="winograd_threads")
            gw = _backward.grad_weight(spec, x, np.sin(out), "wgrad_winograd_threads")
            assert out.tobytes() == nc.conv3d(x, w, padding=1, groups=groups,
                                              algorithm="winograd").tobytes()
            assert gw.tobytes() == _backward.grad_weight(spec, x, np.sin(out), "wgrad_winograd").tobytes()
            arrays[name], arrays[name + "_gw"] = out, gw
        np.savez(sys.argv[1], **arrays)
    """, thread_counts=(1, 3, 5))
    assert_runs_bitwise_equal(runs)


_FORK_SCRIPT = r'''
import json
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
import numpy as np
import numbaconv as nc

def winograd_layer(algorithm):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 8, 10, 9, 8)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3, 3)).astype(np.float32)
    return nc.conv3d(x, w, padding=1, algorithm=algorithm)

if __name__ == "__main__":
    # The parent has used OpenMP (the parallel kernel) and the part threads.
    expected = winograd_layer("winograd")
    assert winograd_layer("winograd_threads").tobytes() == expected.tobytes()
    with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as pool:
        got = list(pool.map(winograd_layer, ["winograd", "winograd_threads"] * 2, timeout=120))
    print(json.dumps({"same": [g.tobytes() == expected.tobytes() for g in got]}))
'''


@pytest.mark.slow  # on a cold cache (the other Pythons' subsets in .ci/run) it compiles 50 s
def test_winograd_in_a_process_forked_after_openmp_and_the_part_threads(tmp_path):
    """A forked worker runs the parallel kernel's fork fallback, the kernel in parts,
    on part threads of its own (the parent's did not fork), with the parent's bits."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork start method here")
    proc = run_script(tmp_path, _FORK_SCRIPT, timeout=300)
    assert proc.returncode == 0, describe(proc)
    assert last_json(proc)["same"] == [True] * 4
