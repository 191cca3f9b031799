"""Kernels run in parts on Python threads: a serial ``nogil`` kernel called once per
(stage, part), the parts of a stage on threads of their own, a barrier between stages.

Why not ``prange``: numba compiles a parallel kernel by outlining each ``prange`` body
and inlining everything it calls into it, and LLVM then finalizes each of those modules
with its callees: the Winograd forward takes 40 s to compile cold so (Zen 4), its
loop nest as one serial kernel 10 s. A kernel of the form ``kernel(*arguments, stage, part,
parts)`` runs jobs ``[part * jobs // parts, (part + 1) * jobs // parts)`` of its stage.
Where each job writes only its own outputs (the Winograd kernels' do: items, and the
weight gradient's fixed chunks), the split changes no bit, so it computes exactly what
its ``prange`` twin computes: it serves ``auto`` while the twin compiles, and processes
forked after OpenMP started, where ``prange`` cannot run. (It is not the first choice once
the twin is compiled: numba's OpenMP threads spin for milliseconds after each parallel
kernel, and Python threads running meanwhile lost 6-8 ms a call to them.)
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numba

_pool = None
_pool_lock = threading.Lock()


def _workers() -> ThreadPoolExecutor:
    """The process's part threads (started on first use; as many as numba may run)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, numba.config.NUMBA_NUM_THREADS - 1),
                                       thread_name_prefix="numbaconv-part")
        return _pool


def _forget_workers() -> None:
    """In a forked child: the parent's threads did not fork; start new ones on demand."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)


def run_in_parts(run, arguments: tuple, stages: int, parts: int) -> None:
    """``run(*arguments, stage, part, parts)`` for every stage in order and every part of
    it: part 0 on the calling thread, the others on the part threads (on the calling
    thread too once the interpreter shuts down and takes no new thread work); each stage
    ends when all of its parts have. An exception in any part is raised here, after
    every part of its stage has ended (none writes into the operands afterwards)."""
    for stage in range(stages):
        pool = _workers() if parts > 1 else None
        others, here = [], [0]
        for part in range(1, parts):
            try:
                others.append(pool.submit(run, *arguments, stage, part, parts))
            except RuntimeError:  # the interpreter is shutting down: no new work on threads
                here.append(part)
        try:
            for part in here:
                run(*arguments, stage, part, parts)
        finally:
            wait(others)
        for other in others:
            other.result()


def thread_count() -> int:
    """Parts per stage: numba's thread count for the calling thread
    (``numba.set_num_threads`` applies, as to ``prange``)."""
    return numba.get_num_threads()
