"""``python -m numbaconv.bench --ndimage``: numbaconv.ndimage against scipy.ndimage, side
by side in one process (needs only scipy).

Volumes of 128^3 and 256^3 (``SIZES``), float32 and uint16 (values 0-1000), the filters
scientists run most: a dense 5^3 ``correlate``, ``gaussian_filter`` (sigma 2),
``uniform_filter`` (5), ``sobel`` (axis 0), and a 15^3 point-spread function
(``correlate``; numbaconv takes its FFT path for float outputs) on 128^3 only, where
scipy already takes seconds. numbaconv runs on numba's threads, scipy on one. Each call
is timed in alternation with its scipy twin after one warm-up pair; medians of
``REPEATS`` pairs (one pair for the 15^3 kernel). Every line also prints the largest
difference between the two results, relative to scipy's largest value.
"""
from __future__ import annotations

import time

import numpy as np

SIZES = (128, 256)
DTYPES = ("float32", "uint16")
REPEATS = 5


def _cases(rng):
    w5 = rng.random((5, 5, 5))
    # A radial, non-separable point-spread function (a Lorentzian of width 2 voxels).
    psf = 1 / (1 + np.sum(np.square(np.indices((15, 15, 15)) - 7.0), axis=0) / 4.0)
    psf /= psf.sum()
    return [("correlate 5^3", lambda m, x: m.correlate(x, w5), None),
            ("gaussian_filter sigma 2", lambda m, x: m.gaussian_filter(x, 2.0), None),
            ("uniform_filter 5", lambda m, x: m.uniform_filter(x, 5), None),
            ("sobel axis 0", lambda m, x: m.sobel(x, 0), None),
            ("correlate 15^3 (PSF)", lambda m, x: m.correlate(x, psf), 128)]


def _timed_pair(ours, theirs, repeats):
    """Medians (ms) of two calls in alternation, and their last results."""
    results = ours(), theirs()
    times = np.empty((repeats, 2))
    for i in range(repeats):
        for j, call in enumerate((ours, theirs)):
            start = time.perf_counter()
            results = results[:j] + (call(),) + results[j + 1:]
            times[i, j] = time.perf_counter() - start
    ms = np.median(times, axis=0) * 1e3
    return float(ms[0]), float(ms[1]), results


def main(sizes=SIZES, dtypes=DTYPES, repeats=REPEATS) -> int:
    import numba
    import scipy
    import scipy.ndimage as sn

    import numbaconv as nc
    import numbaconv.ndimage as nn

    rng = np.random.default_rng(0)
    print(f"numbaconv {nc.__version__} ({numba.get_num_threads()} threads), scipy "
          f"{scipy.__version__} (1 thread); medians in ms")
    for size in sizes:
        for dtype in dtypes:
            x = (rng.random((size,) * 3) * 1000).astype(dtype)
            for name, case, only_size in _cases(rng):
                if only_size is not None and size != only_size:
                    continue
                ours, theirs, (a, b) = _timed_pair(lambda: case(nn, x), lambda: case(sn, x),
                                                   1 if only_size else repeats)
                scale = max(1.0, float(np.abs(b.astype(np.float64)).max()))
                diff = float(np.abs(a.astype(np.float64) - b).max()) / scale
                print(f"{size}^3 {dtype:8s} {name:24s} numbaconv {ours:8.1f}  scipy "
                      f"{theirs:8.1f}  = {theirs / ours:5.1f}x  diff {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
