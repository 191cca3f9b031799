"""``python -m numbaconv``: the seed example, a check against the float64 reference, a timing.

``python -m numbaconv warmup``: compile (or load) every kernel this machine will use,
once, for a Docker image or a cluster node. ``python -m numbaconv.bench`` is the full
benchmark against PyTorch.
"""
import sys
import time

import numpy as np

import numbaconv as nc
from numbaconv import _dispatch
from numbaconv._spec import ConvSpec
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
    start = time.perf_counter()
    layer(x)
    plan = _dispatch.plan_for(ConvSpec.from_args(x, layer.weight, None, 1, 1)[0])
    compiled = _wait_for_a_compiled_tier(plan, COMPILE_WAIT_SECONDS)
    if compiled:
        print(f"waited {time.perf_counter() - start:.1f} s for the {compiled} kernel to compile "
              f"(a fresh cache: the first calls ran in numpy meanwhile)")
    # Timed with background compiles paused: they would take a core from the timing.
    with _dispatch.background_paused():
        layer(x)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            layer(x)
            times.append(time.perf_counter() - start)
    median = float(np.median(times))
    gflop = 2 * 32 * 32 * 27 * 64 ** 3 / 1e9
    served, best = plan.kernel_name, plan.state[0][0]
    print(f"U-Net layer 32->32, 64^3, k3 p1, float32: {median * 1e3:.1f} ms "
          f"({gflop / median:.0f} GFLOP/s, {served} kernel)")
    if served != best:
        print(f"  ({served}: {_dispatch.REGISTRY[served].description}; the {best} kernel that "
              f"later calls use, with the same bits, was still compiling in the background; "
              f"run this again, or `python -m numbaconv warmup` once)")
    if error > 1e-3 * max(1.0, float(np.abs(oup).max())):
        raise SystemExit("check against the reference FAILED")


#: How long the timing waits for a compiled kernel where a fresh cache has only the
#: numpy twin ready (the Winograd kernel in parts compiles in about 10 s on 2 cores).
COMPILE_WAIT_SECONDS = 30


def _wait_for_a_compiled_tier(plan, seconds) -> str | None:
    """Where a numpy twin (nothing compiled) serves ``plan``, wait up to ``seconds`` for
    the tier above it; its name if it had to be compiled, else None."""
    tiers = plan.state[0]
    if _dispatch.REGISTRY[plan.kernel_name].compiled or len(tiers) < 2:
        return None
    name = tiers[-2]
    on_disk = _dispatch._on_disk(_dispatch.REGISTRY[name], plan.dtype)
    _dispatch.CACHE.get_soon(name, plan.dtype, seconds)
    return None if on_disk else name


def warmup() -> None:
    cpu = nc.cpu_info()
    print(f"numbaconv {nc.__version__}: compiling or loading the kernels for {cpu['cpu']} "
          f"({cpu['isa']}), float32 and float64", flush=True)
    start = time.perf_counter()
    pairs = nc.warmup(progress=lambda text: print("  " + text, flush=True))
    print(f"{len(pairs)} kernels ready in {time.perf_counter() - start:.1f} s; later processes "
          f"load them from numba's disk cache")


USAGE = "usage: python -m numbaconv [warmup]\n\n" + __doc__

if __name__ == "__main__":
    if sys.argv[1:] == ["warmup"]:
        warmup()
    elif sys.argv[1:] in (["-h"], ["--help"]):
        print(USAGE)
    elif sys.argv[1:]:
        raise SystemExit(USAGE)
    else:
        main()
