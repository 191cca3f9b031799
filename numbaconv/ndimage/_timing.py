"""Short timings of numbaconv.ndimage against scipy.ndimage in one process:
``python -m numbaconv.ndimage._timing [size] [repeats]`` (defaults 128, 5); medians, ms."""
import sys
import time

import numpy as np


def median_ms(fn, repeats):
    fn()  # compile or load from numba's cache
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main(size=128, repeats=5):
    import scipy.ndimage as sn

    import numbaconv.ndimage as nn
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 5, 5))
    cases = [("correlate 5^3", lambda m, x: m.correlate(x, w)),
             ("gaussian_filter s=2", lambda m, x: m.gaussian_filter(x, 2.0)),
             ("uniform_filter 5", lambda m, x: m.uniform_filter(x, 5)),
             ("sobel axis 0", lambda m, x: m.sobel(x, 0))]
    print(f"{size}^3, median of {repeats} runs, ms")
    for dtype in ("float32", "uint16"):
        x = (rng.random((size,) * 3) * 1000).astype(dtype)
        for name, case in cases:
            ours = median_ms(lambda: case(nn, x), repeats)
            theirs = median_ms(lambda: case(sn, x), repeats)
            print(f"{dtype:8s} {name:20s} numbaconv {ours:8.1f}  scipy {theirs:8.1f}  "
                  f"x{theirs / ours:5.1f}")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
