"""BLAS's gemm called from njit code with its own transpose flags and leading dimensions.

``np.dot`` inside njit takes C- or F-contiguous operands only: a transposed block of a
matrix (``w[:, r0:r1].T``) is copied first, and a weight that must be read transposed
is transposed in memory first (a 512 x 512 x 27 weight: 28 MB, 6-8 ms on this project's
2-core machines). :func:`product_tn` makes the call BLAS can make on the operands in
place. It is the same library function ``np.dot`` calls: numba's wrapper of scipy's
cython gemm (``numba_xxgemm`` in numba's helper library, the symbol numba's own
``np.dot`` lowers to; resolved by name when code loads, so kernels that call it cache
like any other).
"""
import numpy as np
from numba import types
from numba.extending import overload


def _gemm_function(dtype):
    """numba's gemm wrapper for ``dtype``: column-major, arguments as BLAS takes them
    (kind, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)."""
    pointer = types.CPointer(dtype)
    return types.ExternalFunction("numba_xxgemm", types.intc(
        types.char, types.char, types.char, types.intp, types.intp, types.intp,
        pointer, pointer, types.intp, pointer, types.intp, pointer, pointer, types.intp))


def product_tn(a, b, out):
    """``out[:, :] = a.T @ b``: a (K, M), b (K, N), out (M, N), float32 or float64, each a
    2-D view whose last axis is contiguous (a block of a larger matrix is read in place)."""
    raise NotImplementedError("product_tn is called from njit code")


@overload(product_tn)
def _product_tn(a, b, out):
    if a.dtype not in (types.float32, types.float64):
        return None
    from numba.np.linalg import ensure_blas  # when a kernel compiles, not at import

    ensure_blas()
    gemm = _gemm_function(a.dtype)
    kind = ord("s" if a.dtype == types.float32 else "d")
    transposed, as_is = ord("t"), ord("n")

    def impl(a, b, out):
        k, m = a.shape
        n = b.shape[1]
        if a.strides[1] != a.itemsize or b.strides[1] != b.itemsize or out.strides[1] != out.itemsize:
            raise ValueError("product_tn needs rows with contiguous elements")
        if m == 0 or n == 0:
            return
        if k == 0:  # (a loop: numba's slice assignment compiles slowly, see loops.py)
            for i in range(m):
                for j in range(n):
                    out[i, j] = 0
            return
        scale = np.ones(1, out.dtype)
        keep = np.zeros(1, out.dtype)
        # Row-major out = a^T b is column-major out^T (n x m) = b^T (b's rows read as
        # columns: as it is) times a (a's rows read as columns, transposed back).
        status = gemm(kind, as_is, transposed, n, m, k, scale.ctypes, b.ctypes,
                      b.strides[0] // b.itemsize, a.ctypes, a.strides[0] // a.itemsize,
                      keep.ctypes, out.ctypes, out.strides[0] // out.itemsize)
        if status != 0:
            raise RuntimeError("BLAS gemm is not available (scipy's cython_blas)")
    return impl
