"""BLAS's gemm called from njit code with its own transpose flags and leading dimensions.

``np.dot`` inside njit takes C- or F-contiguous operands only: a transposed block of a
matrix (``w[:, r0:r1].T``) is copied first, and a weight that must be read transposed
is transposed in memory first (a 512 x 512 x 27 weight: 28 MB, 6-8 ms on this project's
2-core machines). :func:`product_tn` makes the call BLAS can make on the operands in
place, and :func:`product_nt_add` and :func:`product_tn_add` add a product into its destination (beta = 1), where
``np.dot`` would write a temporary for a second pass to add. It is the same library function ``np.dot`` calls: numba's wrapper of scipy's
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
    2-D view whose last axis is contiguous (a block of a larger matrix is read in place).
    Called from Python (``NUMBA_DISABLE_JIT=1``), numpy's product does it."""
    out[:, :] = a.T @ b


def product_tn_add(a, b, out):
    """``out[:, :] += a.T @ b`` in one gemm call (beta = 1), operands as for
    :func:`product_tn` (and numpy's product from Python)."""
    out += a.T @ b


def product_nt_add(a, b, out):
    """``out[:, :] += a @ b.T`` in one gemm call (beta = 1: no temporary product, no
    second pass over ``out``): a (M, K), b (N, K), out (M, N), as for :func:`product_tn`
    (and numpy's product from Python)."""
    out += a @ b.T


def _gemm_overload(transpose_a, accumulate):
    """An njit implementation of ``out (+)= op(a) @ op(b)`` for row-major 2-D views: with
    ``transpose_a``, a (K, M) and b (K, N) (``a.T @ b``), else a (M, K) and b (N, K)
    (``a @ b.T``); with ``accumulate``, beta = 1."""
    def typer(a, b, out):
        if a.dtype not in (types.float32, types.float64):
            return None
        from numba.np.linalg import ensure_blas  # when a kernel compiles, not at import

        ensure_blas()
        gemm = _gemm_function(a.dtype)
        kind = ord("s" if a.dtype == types.float32 else "d")
        transposed, as_is = ord("t"), ord("n")
        # Row-major out = op(a) op(b) is column-major out^T (N x M) = op(b)^T op(a)^T,
        # each operand's rows read as columns: for a.T @ b, b as it is and a transposed
        # back; for a @ b.T, b transposed back and a as it is.
        first_op, second_op = (as_is, transposed) if transpose_a else (transposed, as_is)
        beta = 1.0 if accumulate else 0.0

        def impl(a, b, out):
            m, n = out.shape
            k = a.shape[0] if transpose_a else a.shape[1]
            if a.strides[1] != a.itemsize or b.strides[1] != b.itemsize or out.strides[1] != out.itemsize:
                raise ValueError("BLAS products need rows with contiguous elements")
            if m == 0 or n == 0:
                return
            if k == 0:  # (loops: numba's slice assignment compiles slowly, see loops.py)
                if not accumulate:
                    for i in range(m):
                        for j in range(n):
                            out[i, j] = 0
                return
            scale = np.ones(1, out.dtype)
            keep = np.full(1, beta, out.dtype)
            status = gemm(kind, first_op, second_op, n, m, k, scale.ctypes, b.ctypes,
                          b.strides[0] // b.itemsize, a.ctypes, a.strides[0] // a.itemsize,
                          keep.ctypes, out.ctypes, out.strides[0] // out.itemsize)
            if status != 0:
                raise RuntimeError("BLAS gemm is not available (scipy's cython_blas)")
        return impl
    return typer


overload(product_tn)(_gemm_overload(transpose_a=True, accumulate=False))
overload(product_tn_add)(_gemm_overload(transpose_a=True, accumulate=True))
overload(product_nt_add)(_gemm_overload(transpose_a=False, accumulate=True))
