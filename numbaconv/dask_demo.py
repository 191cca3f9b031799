"""Stream a volume larger than you would like to hold through conv3d: Zarr -> Zarr.

    python -m numbaconv.dask_demo [--size GIB] [--workdir DIR] [--scheduler threads|distributed]

1. Writes a synthetic float32 volume of shape (1, 1, D, 1024, 1024) and about ``--size``
   GiB (default 4) to a Zarr store in ``--workdir`` (default: a new folder in the system's
   temporary directory). It is generated chunk by chunk with ``dask.array.random``, so it
   never lives in memory.
2. Reads it back lazily (``da.from_zarr``), runs ``numbaconv.dask.conv3d`` with a 3x3x3
   binomial blur (padding 1) and writes the result with ``da.to_zarr`` to a second store.
3. Checks a few random output chunks against the in-memory ``numbaconv.conv3d`` of the
   matching input slab (with its halo, zero-padded at the volume's borders).
4. Prints the volume size, the peak memory (RSS) of every process involved, their ratio,
   the time and the throughput; then deletes both stores (``--keep`` keeps them).

Peak memory is measured two ways: the operating system's high-water mark of resident
memory (``getrusage`` ``ru_maxrss``) of this process over its whole life (imports, data
generation, convolution and verification included), and, over the convolution stage, the
sum of the RSS of this process and all its descendants (the worker processes with
``--scheduler distributed``), sampled every 20 ms. The larger of the two is reported.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

MIB = 1 << 20
GIB = 1 << 30


def blur_kernel() -> np.ndarray:
    """A 3x3x3 binomial blur ([1, 2, 1] / 4 on each axis) as a (1, 1, 3, 3, 3) weight."""
    b = np.array([1.0, 2.0, 1.0]) / 4.0
    return np.einsum("i,j,k->ijk", b, b, b).astype(np.float32).reshape(1, 1, 3, 3, 3)


def volume_shape(size_gib: float, height: int = 1024, width: int = 1024):
    depth = max(8, int(round(size_gib * GIB / (4 * height * width))))
    return (1, 1, depth, height, width)


class PeakMemory:
    """Samples the RSS of this process plus all its descendants in a background thread
    (needs psutil, which ``distributed`` brings; without it the peak stays 0 and only
    ``ru_maxrss`` is reported)."""

    def __init__(self, interval: float = 0.02):
        try:
            import psutil
        except ImportError:  # pragma: no cover
            psutil = None
        self._psutil = psutil
        self._root = psutil.Process() if psutil else None
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def sample(self) -> int:
        """The current RSS of the process tree, in bytes (and update the peak)."""
        if self._psutil is None:
            return 0
        total = 0
        for proc in [self._root] + self._root.children(recursive=True):
            try:
                total += proc.memory_info().rss
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                pass
        self.peak = max(self.peak, total)
        return total

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self.start = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def max_rss_bytes() -> int:
    """High-water mark of resident memory of this process (and of its waited-for
    children, the larger of the two), from getrusage."""
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * scale


def fresh(path: str) -> str:
    """``path``, with any store left there removed (``da.to_zarr`` then creates the array
    with the dask array's chunks and writes without a lock)."""
    shutil.rmtree(path, ignore_errors=True)
    return path


def verify(inp_path, out_path, weight, n_blocks: int, seed: int):
    """Compare ``n_blocks`` random output chunks with the in-memory conv3d of their input
    slabs; return (blocks checked, all bitwise equal, max abs difference)."""
    import zarr

    import numbaconv as nc

    src = zarr.open_array(inp_path, mode="r")
    dst = zarr.open_array(out_path, mode="r")
    rng = np.random.default_rng(seed)
    chunks = dst.chunks
    grid = [-(-s // c) for s, c in zip(dst.shape, chunks)]
    equal, worst = True, 0.0
    for _ in range(n_blocks):
        index = [int(rng.integers(g)) for g in grid]
        out_sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks, dst.shape))
        # stride 1, padding 1: output voxel o reads input [o - 1, o + 2)
        lo = [sl.start - 1 for sl in out_sl[2:]]
        hi = [sl.stop + 1 for sl in out_sl[2:]]
        size = src.shape[2:]
        in_sl = out_sl[:2] + tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(lo, hi, size))
        slab = np.asarray(src[in_sl])
        pads = ((0, 0), (0, 0)) + tuple((max(0, -a), max(0, b - n)) for a, b, n in zip(lo, hi, size))
        expected = nc.conv3d(np.pad(slab, pads), weight, padding=0)
        got = np.asarray(dst[out_sl])
        equal &= bool(np.array_equal(got, expected))
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - expected))))
    return n_blocks, equal, worst


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m numbaconv.dask_demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=float, default=4.0, help="volume size in GiB (default 4)")
    parser.add_argument("--workdir", default=None,
                        help="folder for the two Zarr stores (default: a new temporary folder)")
    parser.add_argument("--chunk", type=int, nargs=3, default=(16, 256, 256), metavar=("D", "H", "W"),
                        help="chunk shape (default 16 256 256: 4 MiB of float32)")
    parser.add_argument("--scheduler", choices=("threads", "distributed"), default="threads",
                        help="dask's threaded scheduler (default) or a LocalCluster of one "
                             "single-threaded worker process per core")
    parser.add_argument("--workers", type=int, default=None, help="task threads / worker processes (default: cores)")
    parser.add_argument("--verify", type=int, default=3, help="random output chunks to check (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the Zarr stores")
    args = parser.parse_args(argv)
    if args.size <= 0:
        parser.error("--size must be > 0")

    import dask
    import dask.array as da
    from dask.system import CPU_COUNT

    from numbaconv import dask as ncd

    workers = args.workers or CPU_COUNT
    shape = volume_shape(args.size)
    chunks = (1, 1) + tuple(min(c, s) for c, s in zip(args.chunk, shape[2:]))
    nbytes = int(np.prod(shape)) * 4
    weight = blur_kernel()

    made_workdir = args.workdir is None
    workdir = tempfile.mkdtemp(prefix="numbaconv-dask-demo-") if made_workdir else args.workdir
    os.makedirs(workdir, exist_ok=True)
    inp_path = os.path.join(workdir, "volume.zarr")
    out_path = os.path.join(workdir, "blurred.zarr")
    n_chunks = int(np.prod([-(-s // c) for s, c in zip(shape, chunks)]))
    print("numbaconv.dask demo: conv3d, 3x3x3 blur, padding 1, Zarr -> Zarr")
    print(f"volume:          {shape} float32, {nbytes / GIB:.2f} GiB, {n_chunks} chunks of "
          f"{chunks} ({int(np.prod(chunks)) * 4 / MIB:.0f} MiB)")
    print(f"stores:          {workdir}")

    client = cluster = None
    try:
        if args.scheduler == "distributed":
            import distributed

            cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                               dashboard_address=None, silence_logs=40)
            client = distributed.Client(cluster)
            sched = dict(scheduler=client)
            where = f"distributed LocalCluster, {workers} worker processes x 1 task thread"
        else:
            sched = dict(scheduler="threads", num_workers=workers)
            where = f"threads, {workers} task threads"
        # what numbaconv.dask picks inside the tasks (see task_numba_threads)
        per_task = max(1, CPU_COUNT // workers) if args.scheduler == "distributed" else 1
        print(f"scheduler:       {where}, {per_task} numba thread(s) per task")

        # 1. The synthetic volume, chunk by chunk.
        start = time.perf_counter()
        volume = da.random.default_rng(2024).random(shape, dtype=np.float32, chunks=chunks)
        with dask.config.set(**sched):
            da.to_zarr(volume, fresh(inp_path))
        t_write = time.perf_counter() - start
        print(f"write input:     {t_write:6.1f} s")

        # 2. conv3d, streamed from store to store.
        with PeakMemory() as peak, dask.config.set(**sched):
            start = time.perf_counter()
            x = da.from_zarr(inp_path)
            y = ncd.conv3d(x, weight, padding=1)
            assert y.chunks == x.chunks  # a "same" convolution keeps the chunks
            da.to_zarr(y, fresh(out_path))
            t_conv = time.perf_counter() - start
        rusage = max_rss_bytes()
        peak_bytes = max(peak.peak, rusage)

        # 3. Spot checks against the in-memory function.
        checked, equal, worst = verify(inp_path, out_path, weight, args.verify, seed=7)
        rusage = max_rss_bytes()
        peak_bytes = max(peak_bytes, rusage)

        voxels = int(np.prod(shape))
        print(f"conv3d + write:  {t_conv:6.1f} s")
        print(f"throughput:      {nbytes / MIB / t_conv:.0f} MiB/s, {voxels / t_conv / 1e6:.0f} Mvoxel/s "
              f"(read, convolve, write)")
        print(f"peak memory:     {peak_bytes / MIB:.0f} MiB  (ru_maxrss of this process over the whole "
              f"run {rusage / MIB:.0f} MiB; sampled RSS of the process tree during conv3d "
              f"{peak.peak / MIB:.0f} MiB, of which {peak.start / MIB:.0f} MiB before it started)")
        print(f"memory / volume: {peak_bytes / nbytes:.3f}  (volume {nbytes / GIB:.2f} GiB)")
        print(f"verify:          {checked} random output chunks "
              f"{'bitwise equal to' if equal else 'DIFFER from'} in-memory numbaconv.conv3d "
              f"(max abs diff {worst:.3g})")
        return 0 if equal else 1
    finally:
        if client is not None:
            client.close()
            cluster.close()
        if not args.keep:
            for path in (inp_path, out_path):
                shutil.rmtree(path, ignore_errors=True)
            if made_workdir:
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
