"""``python -m numbaconv.bench --cold``: what a new user waits for. Each layer runs in a
fresh interpreter with an empty numba disk cache: import, first forward call, first
backward call (both gradients), and the process's start to exit. The layers are one of
each kind ``auto`` treats differently: register-blocked, Winograd, GEMM (deep, pointwise,
strided), float32 and float64.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

#: name: (Cin, Cout, size, kernel, stride, dtype), input (1, Cin, size^3), padding k // 2
LAYERS = {
    "blocked 16->16 32^3": (16, 16, 32, 3, 1, "float32"),
    "winograd 64->64 16^3": (64, 64, 16, 3, 1, "float32"),
    "gemm 256->256 6^3": (256, 256, 6, 3, 1, "float32"),
    "pointwise 128->128 16^3": (128, 128, 16, 1, 1, "float32"),
    "strided 64->128 k3s2 24^3": (64, 128, 24, 3, 2, "float32"),
    "blocked 16->16 32^3 f64": (16, 16, 32, 3, 1, "float64"),
    "winograd 64->64 16^3 f64": (64, 64, 16, 3, 1, "float64"),
}

_CHILD = """
import json, sys, time
start = time.perf_counter()
import numpy as np
import numbaconv as nc
imported = time.perf_counter()
cin, cout, size, k, stride, dtype = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.standard_normal((1, cin, size, size, size)).astype(dtype)
w = rng.standard_normal((cout, cin, k, k, k)).astype(dtype)
y = nc.conv3d(x, w, padding=k // 2, stride=stride)
forward = time.perf_counter()
nc.conv3d_backward(np.ones_like(y), x, w, padding=k // 2, stride=stride)
backward = time.perf_counter()
print(json.dumps([imported - start, forward - imported, backward - forward]))
"""


def measure(layer) -> dict:
    """One layer's cold figures, in seconds."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        start = time.perf_counter()
        child = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(layer)], env=env,
                               capture_output=True, text=True, check=True)
        total = time.perf_counter() - start
    imported, forward, backward = json.loads(child.stdout.strip().splitlines()[-1])
    return {"import": imported, "forward": forward, "backward": backward, "start_to_exit": total}


def main() -> int:
    print("each layer in a fresh process with an empty numba cache; seconds")
    print(f"{'layer':28s} {'import':>7s} {'first fwd':>10s} {'first bwd':>10s} {'start-exit':>11s}")
    for name, layer in LAYERS.items():
        r = measure(layer)
        print(f"{name:28s} {r['import']:7.2f} {r['forward']:10.2f} {r['backward']:10.2f} "
              f"{r['start_to_exit']:11.2f}", flush=True)
    return 0
