"""conv3d on Dask arrays: volumes larger than memory, computed block by block.

``numbaconv.dask.conv3d`` takes a 5-D :class:`dask.array.Array` and returns a lazy dask
array equal to the in-memory :func:`numbaconv.conv3d` of the whole volume. The same
kernels run on each block and sum each output in the same order, so the result is
bitwise the same wherever ``auto`` runs the direct kernels (direct, blocked, tiny: one
summation order) for the whole volume and for every block. It picks per call, from the
block's shape, and three other kinds of kernel agree with those to rounding only (about
1e-6 of the output's scale in float32): the GEMM (BLAS) path (pointwise layers with >= 64
input channels per group, very large planes), and under the default precision
``"fast"`` Winograd (dense 3x3x3 stride-1 layers: its tiles start at each block's
origin) and the FFT (large kernels). ``numbaconv.set_precision("exact")`` leaves out
the last two. A choice stored by ``numbaconv.autotune`` is per layer class, which
depends on the shape, so it too may differ between the whole and a block. Requires
``dask[array]``; ``distributed`` is optional.

How the blocks are made, per spatial axis (size ``I``, kernel ``k``, stride ``s``,
padding ``p``, dilation ``d``; the dilated kernel spans ``K = d*(k-1) + 1``):

1. ``_pad_borders`` pads the volume at its true borders only (``padding_mode``), by
   ``p`` before and ``q`` after (they differ for ``"same"`` with an even dilated
   kernel), so the padded size is ``P = I + p + q`` and output position ``o`` reads the padded window
   ``[o*s, o*s + K)``; ``O = (P - K)//s + 1`` outputs.
2. The output is cut into chunks ``[B_j, B_{j+1})``, one per input chunk: ``B_j`` is
   the first output whose window centre lies at or after the input chunk boundary
   (so a "same" convolution keeps the input's chunks). Chunks that would be smaller
   than the halo are merged with their left neighbour.
3. The padded volume is rechunked so that chunk ``j`` starts at ``B_j*s + L``: each
   chunk start is aligned with the stride. The halo of ``K - s`` voxels (none when
   ``K <= s``) is split into ``L = min(K - s, (K - 1)//2)`` on the left and the rest,
   ``R``, on the right; dask's overlap (``boundary="none"``) adds it, so block ``j``
   holds exactly the padded voxels ``[B_j*s, (B_{j+1} - 1)*s + K)`` that its outputs read.
4. Each block runs the in-memory ``numbaconv.conv3d`` with ``padding=0``; its output is
   exactly the output chunk (the halo is consumed by the kernel, so nothing is trimmed).

The channel axis is one chunk (every output channel reads all input channels of its
group); the batch axis keeps its chunks.

Memory: blocks are independent apart from their halos, and the border padding is done by
the border blocks themselves (see ``_pad_borders``), so dask's ordering sweeps through
the volume: with a "same" convolution the number of results held at once does not grow
with the volume (``tests/test_dask.py`` checks this with ``dask.order.diagnostics``). It
is a few slabs of one chunk's depth across the whole (H, W) plane, so chunks that are
thin along D keep it small.
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing
import sys
import threading
import time

import numba
import numpy as np

from .. import _config
from .. import functional as _functional
from .._lru import LRU
from .._spec import PADDING_MODES, ConvParams, ConvSpec, as_positive_int, output_length

try:
    import dask.array as da
    from dask.system import CPU_COUNT  # cores usable here (affinity, cgroups)
except ImportError as exc:  # pragma: no cover - exercised only without dask
    raise ImportError(
        "numbaconv.dask needs dask: pip install 'numbaconv[dask]' (or 'dask[array]')"
    ) from exc

__all__ = ["conv3d", "PADDING_MODES", "task_numba_threads"]


def conv3d(inp, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           conv_mode="cross_correlation", padding_mode="zeros", *, numba_threads=None):
    """3-D convolution of a 5-D dask array; returns a lazy dask array.

    Arguments and result are those of :func:`numbaconv.conv3d` (same checks, same error
    messages, same dtype rules), except:

    Args:
        inp: a ``dask.array.Array`` of shape (N, Cin, D, H, W) with known chunk sizes.
            Its batch chunks are kept; its channel axis is merged into one chunk; its
            spatial chunks set the output's (see the module docstring).
        weight, bias: array-likes (numpy arrays; small dask arrays are computed).
        padding_mode: how the ``padding`` voxels at the volume's true borders are
            filled, with PyTorch's names and semantics:
            ``"zeros"`` (MegEngine's and the in-memory function's only mode),
            ``"reflect"`` (mirror without repeating the edge, numpy's ``"reflect"``;
            padding must be < the size on each axis), ``"replicate"`` (repeat the edge,
            numpy's ``"edge"``) or ``"circular"`` (wrap around, numpy's ``"wrap"``;
            padding must be <= the size).
        numba_threads: numba threads each block computation uses (keyword only). By
            default it is chosen inside each task so that numba threads x concurrently
            running tasks do not exceed the cores:

            - in a ``distributed`` worker: ``max(1, cores // T)``, where ``T`` is the
              number of task threads of all the workers on the worker's host (from the
              scheduler, refreshed every 30 s; the worker's own ``nthreads`` if the
              scheduler cannot be asked) and ``cores`` is dask's ``CPU_COUNT`` (the
              cores usable by the process: affinity mask and cgroup quota);
            - in the threaded scheduler's pool threads and in the processes
              scheduler's worker processes: 1, since these run one task per core by
              default (pass ``numba_threads`` if you run fewer tasks at once);
            - in the synchronous scheduler (the main thread of the main process):
              numba's current setting (all cores by default).

            The setting applies to the task's thread only (numba's thread count is
            thread-local) and is restored after the block. Results do not depend on it.

    Returns:
        A dask array of shape (N, Cout, Do, Ho, Wo), dtype as the in-memory function's,
        whose chunks are exact (batch chunks of ``inp``, one channel chunk, spatial
        chunks derived from ``inp``'s).

    Raises:
        TypeError: ``inp`` is not a dask array, or an argument has a bad type.
        ValueError: bad values or shapes (the in-memory function's messages), unknown
            chunk sizes, an unknown ``padding_mode``, or a ``"reflect"``/``"circular"``
            padding larger than the volume allows.
    """
    if not isinstance(inp, da.Array):
        raise TypeError(
            f"inp must be a dask.array.Array, got {type(inp).__name__}; wrap a numpy array "
            f"with dask.array.from_array(inp, chunks=...) or use numbaconv.conv3d"
        )
    if any(isinstance(s, float) and math.isnan(s) for s in inp.shape):
        raise ValueError(
            f"inp has unknown chunk sizes (shape {inp.shape}); call inp.compute_chunk_sizes() first"
        )
    # The in-memory checks, on a stand-in of inp's exact shape and dtype that holds one
    # element (zero strides), so the messages quote the real shape.
    stand_in = np.broadcast_to(np.empty((), dtype=inp.dtype), inp.shape)
    params = ConvParams.from_args(stride, padding, dilation, groups, conv_mode, padding_mode)
    spec, _, weight, bias = ConvSpec.from_args(stand_in, weight, bias, params=params)
    if numba_threads is not None:
        numba_threads = as_positive_int("numba_threads", numba_threads)
    weight = np.asarray(weight)

    if spec.batch == 0:
        return da.zeros(spec.out_shape, dtype=spec.dtype, chunks=spec.out_shape)

    plans = [_axis_plan(inp.chunks[2 + a], spec.in_size[a], spec.padding[a], spec.padding_hi[a],
                        spec.span[a], spec.stride[a]) for a in range(3)]

    padded = _pad_borders(inp.rechunk({1: -1}), spec.padding, spec.padding_hi,
                          PADDING_MODES[spec.padding_mode])
    padded = padded.rechunk((inp.chunks[0], (spec.in_channels,)) + tuple(p.padded_chunks for p in plans))
    depth = {0: 0, 1: 0}
    depth.update({2 + a: (p.left, p.right) for a, p in enumerate(plans)})
    blocks = da.overlap.overlap(padded, depth=depth, boundary="none")
    expected = (padded.chunks[0], padded.chunks[1]) + tuple(p.block_chunks for p in plans)
    if blocks.chunks != expected:  # dask rechunked behind our back: a bug here
        raise AssertionError(f"overlap gave blocks {blocks.chunks}, expected {expected}")

    out_chunks = (inp.chunks[0], (spec.out_channels,)) + tuple(p.out_chunks for p in plans)
    return da.map_blocks(
        _conv_block, blocks, weight, bias, spec.stride, spec.dilation, spec.groups, params.conv_mode,
        numba_threads,
        chunks=out_chunks, dtype=spec.dtype, meta=np.empty((0,) * 5, spec.dtype),
        token="numbaconv-conv3d",
    )


def _pad_borders(x, before, after, mode):
    """``x`` padded by ``before`` and ``after`` (each D, H, W) on its spatial axes, at the
    volume's true borders, filled as numpy's ``np.pad(mode=mode)`` fills them: mode
    "constant" (zeros), "reflect", "edge" or "wrap". Lazy.

    "constant", "edge" and "reflect" only need voxels near the border, so each block
    that touches a border pads itself (``np.pad`` in a blockwise task; for "reflect" the
    border chunks are first made longer than the padding). The chunks stay as they
    were, plus the padding on the border chunks, and interior blocks pass through: dask
    then orders the tasks as a sweep through the volume, whereas ``da.pad``'s
    concatenations make it hold a growing part of the volume in memory. "wrap" needs the
    far side of the volume: ``da.pad(mode="wrap")``.
    """
    widths = tuple(zip(before, after))
    if not any(before + after):
        return x
    if mode == "wrap":
        return da.pad(x, ((0, 0), (0, 0)) + widths, mode="wrap")
    if mode == "reflect":
        x = x.rechunk((x.chunks[0], x.chunks[1]) + tuple(
            _border_chunks_at_least(c, max(p, q) + 1) for c, (p, q) in zip(x.chunks[2:], widths)))
    chunks = list(x.chunks)
    for axis, (p, q) in zip((2, 3, 4), widths):
        c = list(chunks[axis])
        c[0] += p
        c[-1] += q
        chunks[axis] = tuple(c)
    return da.map_blocks(_pad_block, x, widths, mode, x.numblocks, chunks=tuple(chunks),
                         dtype=x.dtype, meta=np.empty((0,) * 5, x.dtype),
                         token="numbaconv-pad-borders")


def _pad_block(block, widths, mode, numblocks, block_id=None):
    """``np.pad`` a block on the sides where it touches the volume's border."""
    widths = [(0, 0), (0, 0)] + [
        (p if block_id[axis] == 0 else 0, q if block_id[axis] == numblocks[axis] - 1 else 0)
        for axis, (p, q) in zip((2, 3, 4), widths)]
    if not any(a or b for a, b in widths):
        return block
    return np.pad(block, widths, mode=mode)


def _border_chunks_at_least(chunks, size):
    """``chunks`` with the first and the last chunk merged with their neighbours until
    each is at least ``size`` long (or there is one chunk)."""
    chunks = list(chunks)
    while len(chunks) > 1 and chunks[0] < size:
        chunks[0:2] = [chunks[0] + chunks[1]]
    while len(chunks) > 1 and chunks[-1] < size:
        chunks[-2:] = [chunks[-2] + chunks[-1]]
    return tuple(chunks)


class _AxisPlan:
    """The chunking of one spatial axis: padded chunks, halo (left, right), blocks
    (padded chunks plus halo) and output chunks."""

    __slots__ = ("padded_chunks", "left", "right", "block_chunks", "out_chunks")

    def __init__(self, padded_chunks, left, right, out_chunks):
        self.padded_chunks = padded_chunks
        self.left, self.right = left, right
        self.out_chunks = out_chunks
        if len(padded_chunks) == 1:
            self.block_chunks = padded_chunks
        else:
            self.block_chunks = ((padded_chunks[0] + right,)
                                 + tuple(c + left + right for c in padded_chunks[1:-1])
                                 + (padded_chunks[-1] + left,))


def _axis_plan(chunks, size, before, after, span, stride) -> _AxisPlan:
    """Plan one spatial axis from the input's chunks along it (see the module docstring):
    ``size`` voxels padded by ``before`` and ``after``, a dilated kernel spanning ``span``."""
    padded_size = size + before + after
    n_out = output_length(size, before, after, span, stride)
    halo = max(span - stride, 0)
    left = min(halo, (span - 1) // 2)
    right = halo - left
    need = max(left, right, 1)  # dask's overlap needs every chunk >= the depth

    bounds = []  # output chunk boundaries, strictly inside (0, n_out)
    start = 0  # padded start of the current chunk
    edge = 0
    for c in chunks[:-1]:
        edge += c
        # the first output whose window centre o*s + (span-1)/2 (padded coordinates) is
        # at or after the input boundary, padded coordinate edge + before
        b = -(-(2 * (edge + before) - (span - 1)) // (2 * stride))
        if b <= (bounds[-1] if bounds else 0) or b >= n_out:
            continue
        chunk_start = b * stride + left
        if chunk_start - start < need:
            continue
        bounds.append(b)
        start = chunk_start
    starts = [0] + [b * stride + left for b in bounds] + [padded_size]
    outs = [0] + bounds + [n_out]
    padded_chunks = tuple(b - a for a, b in zip(starts, starts[1:]))
    out_chunks = tuple(b - a for a, b in zip(outs, outs[1:]))
    return _AxisPlan(padded_chunks, left, right, out_chunks)


# ---- The task --------------------------------------------------------------------------
def _conv_block(block, weight, bias, stride, dilation, groups, conv_mode, numba_threads):
    """One output chunk: the in-memory conv3d of one padded, overlapped block."""
    with task_threads(numba_threads):
        return _functional.conv3d(block, weight, bias, stride=stride, padding=0,
                                  dilation=dilation, groups=groups, conv_mode=conv_mode)


@contextlib.contextmanager
def task_threads(numba_threads=None):
    """Run the body with numba's thread count set to :func:`task_numba_threads` (the
    block computations of ``numbaconv.dask`` and ``numbaconv.dask.ndimage``); the
    previous count is restored after."""
    previous = numba.get_num_threads()
    numba.set_num_threads(task_numba_threads(numba_threads))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def task_numba_threads(numba_threads=None) -> int:
    """The numba thread count a block computation uses where this is called (see
    :func:`conv3d`'s ``numba_threads``), at most numba's ``NUMBA_NUM_THREADS``."""
    limit = numba.config.NUMBA_NUM_THREADS
    if numba_threads is not None:
        return max(1, min(int(numba_threads), limit))
    worker = _current_worker()
    if worker is not None:
        return max(1, min(limit, CPU_COUNT // _host_task_threads(worker)))
    if threading.current_thread() is threading.main_thread() and multiprocessing.parent_process() is None:
        return numba.get_num_threads()  # the synchronous scheduler: one task at a time
    return 1  # a threaded-scheduler thread or a processes-scheduler worker: one per core


def _current_worker():
    """The distributed worker running this task, or None."""
    distributed = sys.modules.get("distributed")
    if distributed is None:  # never imported: not in a worker
        return None
    try:
        return distributed.get_worker()
    except ValueError:
        return None


#: worker address -> (monotonic time, task threads on its host)
_HOST_THREADS = LRU(_config.DASK_HOSTS)
_HOST_THREADS_TTL = 30.0


def _host_task_threads(worker) -> int:
    """Task threads of all the workers on ``worker``'s host, asked of the scheduler (and
    remembered for 30 s); the worker's own thread count if that fails."""
    own = _worker_nthreads(worker)
    now = time.monotonic()
    entry = _HOST_THREADS.get(worker.address)
    if entry is not None and now - entry[0] < _HOST_THREADS_TTL:
        return max(own, entry[1])
    total = own
    try:
        from distributed.comm.addressing import get_address_host
        from distributed.utils import sync

        info = sync(worker.loop, worker.scheduler.identity, n_workers=-1, callback_timeout=10)
        host = get_address_host(worker.address)
        total = sum(int(w.get("nthreads", 0)) for addr, w in info.get("workers", {}).items()
                    if get_address_host(addr) == host)
    except Exception:  # no scheduler reply: count this worker alone
        total = own
    total = max(own, total)
    _HOST_THREADS.put(worker.address, (now, total))
    return total


def _worker_nthreads(worker) -> int:
    state = getattr(worker, "state", None)
    n = getattr(state, "nthreads", None) or getattr(worker, "nthreads", None) or 1
    return max(1, int(n))
