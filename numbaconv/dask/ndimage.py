"""scipy.ndimage's linear filters on dask arrays: :mod:`numbaconv.ndimage`, block by block.

The names and signatures are dask-image's (``dask_image.ndfilters``: scipy.ndimage's
without ``output``), plus scipy's keyword-only ``radius`` and ``axes`` where
numbaconv.ndimage has them: ``correlate``, ``convolve``, ``correlate1d``, ``convolve1d``,
``gaussian_filter``, ``gaussian_filter1d``, ``uniform_filter``, ``uniform_filter1d``,
``sobel``, ``prewitt``, ``laplace``, ``gaussian_laplace``, ``gaussian_gradient_magnitude``.
Each takes a 1-D to 3-D dask array (or anything ``da.asarray`` takes) and returns a lazy
dask array of its shape, with the in-memory function's dtype (the input's) and the
in-memory result's bits: ``f(x).compute()`` is bitwise ``numbaconv.ndimage.f(x.compute())``
for every mode, origin and chunking, except where a dense ``correlate``/``convolve`` with
a float output takes the FFT path (kernels of ``_filters.FFT_TAPS`` taps or more): the
transforms' rounding depends on their size, so blocks agree with the whole array to
about 1e-15 of the largest output. Bad arguments raise the in-memory function's
exceptions when the graph is built.

How one filter step runs (:func:`_filter_blocks`; a step is one 1-D pass, or a whole
``correlate``/``convolve``). Output position ``i`` along an axis reads the extended input
at ``[i - before, i + after]`` (``before = K//2 + origin`` for K taps):

1. Chunks along each filtered axis are merged until each is at least the halo
   ``max(before, after)`` long (dask's overlap takes from neighbours only) and the border
   chunks at least one longer; an axis shorter than that becomes one chunk.
2. ``da.overlap.overlap(boundary="none")`` adds ``before``/``after`` voxels of the
   neighbouring chunks to each block's interior sides.
3. Each block runs the in-memory function, with the real ``mode`` and ``cval``, and its
   halo is trimmed. At the volume's true borders that function extends the data itself
   (``numbaconv.ndimage._boundary.extend``) from the border block, which holds every
   voxel the extension reads: reflect reads ``before`` voxels from the border, mirror
   ``before + 1``, nearest one, constant none, and an axis shorter than the halo is one
   chunk, where the extension is the whole array's (scipy's periodic one). Only ``wrap``
   reads the far side: on an axis of several chunks the volume is padded first with its
   far ``before`` and ``after`` voxels (a concatenation, in the input's dtype: values,
   not ``cval``, so nothing is rounded), and the block's own extension then lands in
   trimmed positions only. On interior sides the block's own extension also reaches
   trimmed positions only.

Why the kept positions have the whole array's bits: every output element is computed
from its window by the same float operations wherever it lies. The 1-D pass
(``separable.correlate_lines``) sums each element in one fixed tap order, the dense
correlation (the direct conv3d kernels) in raster order; serial and parallel drivers
(chosen by size in ``numbaconv/ndimage/_filters.py``) share one loop body, and the
separable-or-dense choice (``choose_algorithm``) and the dense kernel
(``dense_algorithm``) depend on the weights and dtypes, not the shape. The block has the input's dtype, so the work dtype and that choice are the
whole array's. Integer outputs of large kernels on integer data (the FFT, or the serial
direct sums on a tiny block, each checked and summed again near integers) are scipy's
exactly, in a block as in the whole.

Composed filters (gaussian_filter, uniform_filter, sobel, prewitt, laplace,
gaussian_laplace, gaussian_gradient_magnitude) are the in-memory compositions written
with these steps: one lazy array per 1-D pass, in the output dtype, so each pass extends
the previous pass's result at the true borders exactly as in memory (one overlap with the
summed halo would be exact in the interior but not at the borders, where the in-memory
function extends an intermediate, not the input); the sums, squares and square roots
between passes are the same numpy operations on the same dtypes.

One exception to "any chunking": the float64 running sum of ``uniform_filter1d``
(inputs other than float32, see ``separable.running_mean_lines``) adds and subtracts
along the whole line, so its rounding depends on where a line starts. Integer inputs of
up to 32 bits sum exactly in float64, so any start gives the same bits and they are
chunked as above; for float inputs (float64, float16) the filtered axis is made one chunk.

Memory: steps are blockwise with neighbour halos, so dask orders them as a sweep through
the volume (``tests/test_dask_ndimage.py`` checks the number of results held at once does
not grow with the volume; ``python -m numbaconv.dask.ndimage_demo`` measures peak RSS).
"""
from __future__ import annotations

import functools

import numpy as np

from .. import ndimage as _nd
from ..ndimage import _support as S
from . import da, task_threads

__all__ = list(_nd.__all__) + ["gaussian"]


# ---- One step -------------------------------------------------------------------------------
def _halo(length: int, origin: int) -> tuple[int, int]:
    """(before, after): the input positions a filter of ``length`` taps and ``origin``
    reads on each side of an output position (as numbaconv.ndimage._filters._halo)."""
    return length // 2 + origin, length - 1 - length // 2 - origin


def _merged(chunks, need: int, border_need: int) -> tuple:
    """``chunks`` of one axis with neighbours merged until every chunk is >= ``need``
    and the two border chunks >= ``border_need`` (or there is one chunk)."""
    out = []
    for c in chunks:
        if out and out[-1] < need:
            out[-1] += c
        else:
            out.append(c)
    if len(out) > 1 and out[-1] < need:
        last = out.pop()
        out[-1] += last
    while len(out) > 1 and out[0] < border_need:
        out[0:2] = [out[0] + out[1]]
    while len(out) > 1 and out[-1] < border_need:
        out[-2:] = [out[-2] + out[-1]]
    return tuple(out)


def _wrap_pad(x, axis: int, before: int, after: int):
    """``x`` with its last ``before`` and first ``after`` voxels along ``axis`` added at
    the other end (scipy's wrap; the axis is longer than both), merged into the border
    chunks so that the chunk grid is unchanged."""
    n = x.shape[axis]
    take = [slice(None)] * x.ndim
    pieces = []
    for lo, hi in ((n - before, n), (0, n), (0, after)):
        take[axis] = slice(lo, hi)
        pieces.append(x[tuple(take)])
    chunks = list(x.chunks[axis])
    chunks[0] += before
    chunks[-1] += after
    return da.concatenate(pieces, axis=axis).rechunk({axis: tuple(chunks)})


def _run_block(block, filt, trims, numblocks, numba_threads, block_id=None):
    """The in-memory filter of one overlapped block, its halo trimmed: ``trims[a]`` is
    (before, after, padded) for axis ``a``; a side is trimmed where the block has a
    neighbour's voxels or wrap padding there."""
    with task_threads(numba_threads):
        result = filt(block)
    keep = []
    for (before, after, padded), index, count, n in zip(trims, block_id, numblocks, result.shape):
        lo = before if padded or index > 0 else 0
        hi = after if padded or index < count - 1 else 0
        keep.append(slice(lo, n - hi))
    return result[tuple(keep)]


def _as_dask(image):
    x = da.asarray(image)
    if any(np.isnan(c) for chunks in x.chunks for c in chunks):
        raise ValueError("numbaconv.dask.ndimage needs known chunk sizes "
                         "(call compute_chunk_sizes() first)")
    return x


def _filter_blocks(image, filt, halos, mode, whole_axes=(), numba_threads=None):
    """One filter step on a dask array: ``filt(block)`` is the in-memory filter (mode
    ``mode`` at the borders), which reads ``halos[a] = (before, after)`` voxels around
    each output on axis ``a``; ``whole_axes`` must be one chunk. Lazy; see the module
    docstring. ``filt`` is first run on one voxel, which checks the arguments as the
    in-memory function does and gives the result's dtype."""
    x = _as_dask(image)
    dtype = filt(np.zeros((1,) * x.ndim, x.dtype)).dtype
    if x.size == 0:
        return da.zeros(x.shape, dtype, chunks=x.chunks)
    wrap = S.rule(mode) == "wrap"
    chunks, depth, trims = list(x.chunks), {}, []
    for axis, (before, after) in enumerate(halos):
        halo = max(before, after)
        if axis in whole_axes:
            chunks[axis] = (x.shape[axis],)
        elif halo:
            chunks[axis] = _merged(chunks[axis], halo, halo + 1)
        several = len(chunks[axis]) > 1 and halo > 0
        depth[axis] = (before, after) if several else 0
        trims.append((before, after, wrap) if several else (0, 0, False))
    x = x.rechunk(tuple(chunks))
    out_chunks = x.chunks
    for axis, (before, after, padded) in enumerate(trims):
        if padded:
            x = _wrap_pad(x, axis, before, after)
    if any(depth.values()):
        x = da.overlap.overlap(x, depth=depth, boundary="none")
    return da.map_blocks(_run_block, x, filt, tuple(trims), x.numblocks, numba_threads,
                         chunks=out_chunks, dtype=dtype, meta=np.empty((0,) * x.ndim, dtype),
                         token="numbaconv-ndimage")


def _on_axis(ndim: int, axis: int, halo) -> list:
    """Halos for a 1-D pass along ``axis``: ``halo`` there, none elsewhere."""
    halos = [(0, 0)] * ndim
    halos[axis] = halo
    return halos


# ---- correlate and convolve ------------------------------------------------------------------
def _dense(image, weights, mode, cval, origin, convolution):
    x = _as_dask(image)
    in_memory = _nd.convolve if convolution else _nd.correlate
    filt = functools.partial(in_memory, weights=weights, mode=mode, cval=cval, origin=origin)
    filt(np.zeros((1,) * x.ndim, x.dtype))  # scipy's checks before the halos are computed
    shape = np.shape(weights)
    origins = S.normalize_sequence(origin, x.ndim, "origin")
    if convolution:  # the flipped weights' origin, as scipy's convolve shifts it
        origins = [-o - (0 if k & 1 else 1) for o, k in zip(origins, shape)]
    return _filter_blocks(x, filt, [_halo(k, o) for k, o in zip(shape, origins)], mode)


def correlate(image, weights, mode="reflect", cval=0.0, origin=0):
    """scipy.ndimage.correlate of a 1-D to 3-D dask array; ``weights`` a numpy array
    with ``image.ndim`` dimensions; lazy, same dtype as ``image``."""
    return _dense(image, weights, mode, cval, origin, False)


def convolve(image, weights, mode="reflect", cval=0.0, origin=0):
    """scipy.ndimage.convolve of a 1-D to 3-D dask array (weights flipped)."""
    return _dense(image, weights, mode, cval, origin, True)


# ---- The 1-D filters ---------------------------------------------------------------------------
def _pass(image, in_memory, axis, halo, mode, whole=False, **kwargs):
    """One 1-D step: ``in_memory(block, axis=axis, mode=mode, **kwargs)``."""
    x = _as_dask(image)
    filt = functools.partial(in_memory, axis=axis, mode=mode, **kwargs)
    filt(np.zeros((1,) * x.ndim, x.dtype))  # checks (axis, origin, ...) before halo() runs
    axis = S.axis_index(axis, x.ndim)
    return _filter_blocks(x, filt, _on_axis(x.ndim, axis, halo()), mode,
                          whole_axes=(axis,) if whole else ())


def correlate1d(image, weights, axis=-1, mode="reflect", cval=0.0, origin=0):
    """scipy.ndimage.correlate1d along ``axis`` of a 1-D to 3-D dask array; weights (K,)."""
    return _pass(image, _nd.correlate1d, axis, lambda: _halo(len(weights), origin), mode,
                 weights=weights, cval=cval, origin=origin)


def convolve1d(image, weights, axis=-1, mode="reflect", cval=0.0, origin=0):
    """scipy.ndimage.convolve1d: :func:`correlate1d` with the weights reversed (and
    scipy's origin shift for even lengths), as the in-memory convolve1d does."""
    weights = np.asarray(weights)[::-1]
    origin = -origin - (0 if np.shape(weights)[0] & 1 else 1)
    return correlate1d(image, weights, axis, mode, cval, origin)


def gaussian_filter1d(image, sigma, axis=-1, order=0, mode="reflect", cval=0.0, truncate=4.0,
                      *, radius=None):
    """scipy.ndimage.gaussian_filter1d along ``axis``: radius ``int(truncate * sigma +
    0.5)`` (or ``radius``) voxels on each side."""
    lw = int(truncate * float(sigma) + 0.5) if radius is None else radius
    return _pass(image, _nd.gaussian_filter1d, axis, lambda: (lw, lw), mode, sigma=sigma,
                 order=order, cval=cval, truncate=truncate, radius=radius)


def _exact_running_sum(dtype) -> bool:
    """Whether uniform_filter1d's float64 running sum of this input dtype is exact (so
    its bits do not depend on where a line starts): integers of up to 32 bits, or a
    float32 input, which takes the weighted pass instead (float32 work)."""
    dtype = np.dtype(dtype)
    return dtype == np.float32 or (dtype.kind in "biu" and dtype.itemsize <= 4)


def uniform_filter1d(image, size, axis=-1, mode="reflect", cval=0.0, origin=0):
    """scipy.ndimage.uniform_filter1d along ``axis``. For float inputs other than float32
    the axis becomes one chunk (see the module docstring)."""
    x = _as_dask(image)
    return _pass(x, _nd.uniform_filter1d, axis, lambda: _halo(int(size), origin), mode,
                 whole=not _exact_running_sum(x.dtype), size=size, cval=cval, origin=origin)


# ---- Compositions (numbaconv.ndimage._filters', pass by pass) -----------------------------------
def _checked(image, in_memory, *args, **kwargs):
    """``image`` as a dask array, after the in-memory function has checked the
    arguments on one voxel."""
    x = _as_dask(image)
    in_memory(np.zeros((1,) * x.ndim, x.dtype), *args, **kwargs)
    return x


def _chain(x, steps):
    """``x`` through ``steps`` (1-D passes, each ``step(x)``), each on the previous one's
    result. A bool result goes on as its bytes (uint8) and the last comes back as bool,
    as in memory (``numbaconv.ndimage._filters._chain``): scipy's bool is an unsigned
    char, whose bytes (2 for 2.7, 255 for -1) the next pass reads."""
    boolean = False
    for step in steps:
        x = step(x)
        if x.dtype == np.bool_:
            boolean, x = True, x.view(np.uint8)
    return x.view(np.bool_) if boolean else x


def gaussian_filter(image, sigma, order=0, mode="reflect", cval=0.0, truncate=4.0, *,
                    radius=None, axes=None):
    """scipy.ndimage.gaussian_filter: one :func:`gaussian_filter1d` per axis with sigma >
    1e-15, each on the previous one's result (input dtype in between, as in memory)."""
    x = _checked(image, _nd.gaussian_filter, sigma, order, None, mode, cval, truncate,
                 radius=radius, axes=axes)
    axes = S.check_axes(axes, x.ndim)
    n = len(axes)
    passes = zip(axes, S.normalize_sequence(sigma, n, "sigma"),
                 S.normalize_sequence(order, n, "order"), S.normalize_sequence(mode, n, "mode"),
                 S.normalize_sequence(radius, n, "radius"))
    return _chain(x, [functools.partial(gaussian_filter1d, sigma=sd, axis=axis, order=o, mode=m,
                                        cval=cval, truncate=truncate, radius=r)
                      for axis, sd, o, m, r in passes if sd > 1e-15])


def uniform_filter(image, size=3, mode="reflect", cval=0.0, origin=0, *, axes=None):
    """scipy.ndimage.uniform_filter: one :func:`uniform_filter1d` per axis of size > 1."""
    x = _checked(image, _nd.uniform_filter, size, None, mode, cval, origin, axes=axes)
    axes = S.check_axes(axes, x.ndim)
    n = len(axes)
    passes = zip(axes, S.normalize_sequence(size, n, "size"),
                 S.normalize_sequence(origin, n, "origin"), S.normalize_sequence(mode, n, "mode"))
    return _chain(x, [functools.partial(uniform_filter1d, size=int(size_), axis=axis, mode=m,
                                        cval=cval, origin=o)
                      for axis, size_, o, m in passes if size_ > 1])


def _derivative_then_smooth(image, in_memory, axis, mode, cval, smooth):
    """sobel/prewitt: [-1, 0, 1] along ``axis``, then ``smooth`` along each other axis."""
    x = _checked(image, in_memory, axis, None, mode, cval)
    axis = S.axis_index(axis, x.ndim)
    modes = S.normalize_sequence(mode, x.ndim, "mode")
    steps = [functools.partial(correlate1d, weights=[-1, 0, 1], axis=axis, mode=modes[axis], cval=cval)]
    steps += [functools.partial(correlate1d, weights=smooth, axis=other, mode=modes[other], cval=cval)
              for other in range(x.ndim) if other != axis]
    return _chain(x, steps)


def sobel(image, axis=-1, mode="reflect", cval=0.0):
    """scipy.ndimage.sobel: derivative along ``axis``, [1, 2, 1] smoothing along the others."""
    return _derivative_then_smooth(image, _nd.sobel, axis, mode, cval, [1, 2, 1])


def prewitt(image, axis=-1, mode="reflect", cval=0.0):
    """scipy.ndimage.prewitt: derivative along ``axis``, [1, 1, 1] smoothing along the others."""
    return _derivative_then_smooth(image, _nd.prewitt, axis, mode, cval, [1, 1, 1])


def _sum_over_axes(x, term, mode, axes, combine=None):
    """``combine(term(x, axis, mode))`` summed over ``axes`` in the input dtype, in
    ``axes``' order (scipy's generic_laplace and gaussian_gradient_magnitude)."""
    axes = S.check_axes(axes, x.ndim)
    modes = S.normalize_sequence(mode, len(axes), "mode")
    total = None
    for axis, m in zip(axes, modes):
        t = term(x, axis, m)
        t = t if combine is None else combine(t)
        total = t if total is None else total + t  # numpy's same-dtype add, as `output += t`
    return x if total is None else total


def laplace(image, mode="reflect", cval=0.0, *, axes=None):
    """scipy.ndimage.laplace: the sum over ``axes`` of [1, -2, 1] along each."""
    x = _checked(image, _nd.laplace, None, mode, cval, axes=axes)
    return _sum_over_axes(x, lambda y, axis, m: correlate1d(y, [1, -2, 1], axis, m, cval),
                          mode, axes)


def _gaussian_derivative(order, sigma, cval, truncate, radius):
    """``term(x, axis, mode)``: gaussian_filter of ``x`` with ``order`` along ``axis``."""
    def term(x, axis, m):
        orders = [0] * x.ndim
        orders[axis] = order
        return gaussian_filter(x, sigma, orders, m, cval, truncate, radius=radius)
    return term


def _full_sigmas(sigma, axes, ndim):
    """scipy's gaussian_laplace: ``sigma`` per axis of ``axes``, 0 on the other axes."""
    sigmas = S.normalize_sequence(sigma, len(axes), "sigma")
    if len(axes) == ndim:
        return sigmas
    full = [0] * ndim
    for s, ax in zip(sigmas, axes):
        full[ax] = s
    return full


def gaussian_laplace(image, sigma, mode="reflect", cval=0.0, truncate=4.0, *, radius=None,
                     axes=None):
    """scipy.ndimage.gaussian_laplace: the sum over ``axes`` of second Gaussian derivatives."""
    x = _checked(image, _nd.gaussian_laplace, sigma, None, mode, cval, axes=axes,
                 truncate=truncate, radius=radius)
    sigmas = _full_sigmas(sigma, S.check_axes(axes, x.ndim), x.ndim)
    return _sum_over_axes(x, _gaussian_derivative(2, sigmas, cval, truncate, radius),
                          mode, axes)


def _sqrt_in_place(block):
    """``np.sqrt(out, out, casting="unsafe")`` on a copy, as the in-memory function ends."""
    out = np.array(block)
    np.sqrt(out, out, casting="unsafe")
    return out


def gaussian_gradient_magnitude(image, sigma, mode="reflect", cval=0.0, truncate=4.0, *,
                                radius=None, axes=None):
    """scipy.ndimage.gaussian_gradient_magnitude: sqrt of the sum over ``axes`` of the
    squared first Gaussian derivatives, all in the input dtype."""
    x = _checked(image, _nd.gaussian_gradient_magnitude, sigma, None, mode, cval, axes=axes,
                 truncate=truncate, radius=radius)
    total = _sum_over_axes(x, _gaussian_derivative(1, sigma, cval, truncate, radius),
                           mode, axes, combine=lambda t: t * t)
    if not S.check_axes(axes, x.ndim):
        return total
    return total.map_blocks(_sqrt_in_place, dtype=total.dtype)


#: dask-image's alias (``dask_image.ndfilters.gaussian``).
gaussian = gaussian_filter
