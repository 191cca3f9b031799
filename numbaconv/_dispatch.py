"""The kernel cache and dispatcher: the only module that asks numba to compile.

A kernel entry is keyed on ``(algorithm, dtype, config)``: the algorithm's name, the
compute dtype (float32 or float64) and the part of the convolution that changes the
generated machine code (``config``; empty for generic kernels, which read every size at
run time). Compiled kernels are also kept on disk by numba (``cache=True``), so a new
process loads them instead of compiling again.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from numba import typeof

from . import _numba_setup

_numba_setup.apply()  # before the first kernel module is compiled

from .kernels import direct  # noqa: E402  (after the numba settings)

#: Entries kept; the least recently used one is dropped beyond this.
MAX_ENTRIES = 64


@dataclass
class _Entry:
    kernel: object
    compile_seconds: float
    hits: int = 0


class KernelCache:
    """Compiled kernels keyed on (algorithm, dtype, config), with hit/miss counts."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.compile_seconds = 0.0

    def get(self, algorithm: str, dtype: np.dtype, config: tuple, build):
        """The kernel for this key; ``build()`` compiles it on a miss."""
        key = (algorithm, np.dtype(dtype).name, config)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self.hits += 1
                entry.hits += 1
                self._entries.move_to_end(key)
                return entry.kernel
            start = time.perf_counter()
            kernel = build()
            seconds = time.perf_counter() - start
            self.misses += 1
            self.compile_seconds += seconds
            self._entries[key] = _Entry(kernel, seconds)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return kernel

    def info(self) -> dict:
        with self._lock:
            return {
                "entries": [
                    {"algorithm": k[0], "dtype": k[1], "config": k[2],
                     "compile_seconds": e.compile_seconds, "hits": e.hits}
                    for k, e in self._entries.items()
                ],
                "hits": self.hits,
                "misses": self.misses,
                "compile_seconds": self.compile_seconds,
                "max_entries": self.max_entries,
            }

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0
            self.compile_seconds = 0.0


CACHE = KernelCache()


def _compiled(dispatcher, *example_args):
    """Compile ``dispatcher`` for the types of ``example_args`` (or load it from disk)."""
    dispatcher.compile(tuple(typeof(a) for a in example_args))
    return dispatcher


def _example_operands(dtype):
    triple = (1, 1, 1)
    x = np.zeros((1, 1, 1, 1, 1), dtype)
    w = np.zeros((1, 1, 1, 1, 1, 1), dtype)
    return x, w, np.zeros(1, dtype), x.copy(), triple, triple, triple


def direct_forward_kernel(dtype):
    """The generic direct forward kernel for ``dtype`` (float32 or float64)."""
    return CACHE.get("direct", dtype, (),
                     lambda: _compiled(direct.forward_direct, *_example_operands(dtype)))
