"""``python -m numbaconv.bench.decoder``: a 3-D U-Net's decoder and strided layers
against PyTorch, forward and backward (needs torch).

Transposed convolutions as widely used 3-D U-Nets place them on a 96^3 patch (k2 s2, and
k3 s2 p1 output_padding 1), and the backward of the encoder's stride-2 convolutions.
float32, numba's and torch's threads as set, medians of ``REPEATS`` calls each after one
warm-up, torch interleaved in the same process.
"""
from __future__ import annotations

import time

import numpy as np

import numbaconv as nc

REPEATS = 9
#: (name, Cin, Cout, size, kernel, padding, output_padding), all stride 2
TRANSPOSED = (("T 256->128 k2s2 6^3", 256, 128, 6, 2, 0, 0),
              ("T 128->64 k2s2 12^3", 128, 64, 12, 2, 0, 0),
              ("T 64->32 k2s2 24^3", 64, 32, 24, 2, 0, 0),
              ("T 384->64 k3s2p1op1 6^3", 384, 64, 6, 3, 1, 1),
              ("T 64->16 k3s2p1op1 24^3", 64, 16, 24, 3, 1, 1))
#: (name, Cin, Cout, size): k3 s2 p1
STRIDED = (("conv 32->64 k3s2p1 48^3", 32, 64, 48), ("conv 64->128 k3s2p1 24^3", 64, 128, 24))


def _median_ms(call) -> float:
    call()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def _torch_backward(torch, function, x, w, grad, args):
    def call():
        xt, wt = x.clone().requires_grad_(), w.clone().requires_grad_()
        function(xt, wt, **args).backward(grad)
    return call


def main() -> int:
    import torch

    rng = np.random.default_rng(0)
    print(f"numbaconv {nc.__version__}, torch {torch.__version__}, threads: numba "
          f"{__import__('numba').get_num_threads()}, torch {torch.get_num_threads()}")
    for name, cin, cout, size, k, p, op in TRANSPOSED:
        x = rng.standard_normal((1, cin, size, size, size)).astype(np.float32)
        w = (rng.standard_normal((cin, cout, k, k, k)) / np.sqrt(cin * k ** 3)).astype(np.float32)
        args = dict(stride=2, padding=p, output_padding=op)
        y = nc.conv_transpose3d(x, w, **args)
        g = rng.standard_normal(y.shape).astype(np.float32)
        xt, wt, gt = map(torch.from_numpy, (x, w, g))
        ours = _median_ms(lambda: nc.conv_transpose3d(x, w, **args))
        theirs = _median_ms(lambda: torch.nn.functional.conv_transpose3d(xt, wt, **args))
        ours_b = _median_ms(lambda: nc.conv_transpose3d_backward(g, x, w, **args))
        theirs_b = _median_ms(_torch_backward(torch, torch.nn.functional.conv_transpose3d, xt, wt, gt, args))
        error = np.abs(y - torch.nn.functional.conv_transpose3d(xt, wt, **args).numpy()).max()
        print(f"{name:26s} fwd nc {ours:7.1f} torch {theirs:6.1f} = {theirs / ours:5.2f}x | "
              f"bwd nc {ours_b:7.1f} torch {theirs_b:6.1f} = {theirs_b / ours_b:5.2f}x  err {error:.1e}")
    for name, cin, cout, size in STRIDED:
        x = rng.standard_normal((1, cin, size, size, size)).astype(np.float32)
        w = (rng.standard_normal((cout, cin, 3, 3, 3)) / np.sqrt(cin * 27)).astype(np.float32)
        args = dict(stride=2, padding=1)
        g = rng.standard_normal(nc.conv3d(x, w, **args).shape).astype(np.float32)
        xt, wt, gt = map(torch.from_numpy, (x, w, g))
        ours_b = _median_ms(lambda: nc.conv3d_backward(g, x, w, **args))
        theirs_b = _median_ms(_torch_backward(torch, torch.nn.functional.conv3d, xt, wt, gt, args))
        print(f"{name:26s} bwd nc {ours_b:7.1f} torch {theirs_b:6.1f} = {theirs_b / ours_b:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
