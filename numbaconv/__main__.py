"""``python -m numbaconv``: the seed example, a check against the float64 reference, a timing.

``python -m numbaconv.bench`` is the full benchmark against PyTorch.
"""
import time

import numpy as np

import numbaconv as nc
from numbaconv.reference import conv3d_reference


def main() -> None:
    print(f"numbaconv {nc.__version__}")
    m = nc.Conv3d(in_channels=3, out_channels=1, kernel_size=3, rng=0)
    inp = np.arange(0, 384).astype("float32").reshape(2, 3, 4, 4, 4)
    start = time.perf_counter()
    oup = m(inp)
    first = time.perf_counter() - start
    print(f"seed example: {m!r} on {inp.shape} -> {oup.shape}")
    error = np.abs(oup - conv3d_reference(inp, m.weight)).max()
    print(f"max |numbaconv - float64 reference| = {error:.3g} (values up to {np.abs(oup).max():.4g})")
    print(f"first call (compile or load from cache): {first * 1e3:.0f} ms")

    rng = np.random.default_rng(0)
    layer = nc.Conv3d(32, 32, 3, padding=1, rng=0)
    x = rng.standard_normal((1, 32, 64, 64, 64), dtype=np.float32)
    layer(x)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        layer(x)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    gflop = 2 * 32 * 32 * 27 * 64 ** 3 / 1e9
    print(f"U-Net layer 32->32, 64^3, k3 p1, float32: {median * 1e3:.1f} ms "
          f"({gflop / median:.0f} GFLOP/s)")
    if error > 1e-3 * max(1.0, float(np.abs(oup).max())):
        raise SystemExit("check against the reference FAILED")


if __name__ == "__main__":
    main()
