"""``python -m numbaconv._compile NAME DTYPE``: compile one kernel into numba's disk cache.

The dispatcher runs this in a child process for the kernels it builds in the background:
numba holds the GIL while it compiles, so compiling in the caller's process would stall
every thread there. The caller then loads the kernel from the disk cache in milliseconds.
"""
import sys

import numpy as np

from numbaconv import _dispatch
from numbaconv.kernels.registry import kernel_named

if __name__ == "__main__":
    name, dtype = sys.argv[1:3]
    _dispatch.compile_kernel(kernel_named(name), np.dtype(dtype))
