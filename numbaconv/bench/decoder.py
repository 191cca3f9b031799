"""``python -m numbaconv.bench --decoder``: a 3-D U-Net's decoder, strided and bottleneck
layers, and a whole small U-Net's convolutions, against PyTorch, forward and backward
(needs torch).

Every layer is timed both ways in the same process, interleaved call by call: the
forward pass against ``torch.nn.functional.conv3d``/``conv_transpose3d``, and the input
and weight gradients against ``aten.convolution_backward`` (the op torch's autograd
runs, so that neither side's backward includes a forward). float32, numba's and torch's
threads as set, medians of ``REPEATS`` pairs after one warm-up pair.

The U-Net: a 96^3 single-channel patch, channels 32 to 256; an encoder of k3 p1
convolutions and k3 s2 p1 downsampling convolutions, a decoder of k2 s2 transposed
convolutions, each followed by a k3 p1 convolution over the skip connection's
concatenated channels, and a pointwise head. Its line sums every layer's median.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import numbaconv as nc

REPEATS = 7


@dataclass(frozen=True)
class Layer:
    """One convolution of the bench: input (1, cin, size^3)."""
    name: str
    cin: int
    cout: int
    size: int
    kernel: int
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    transposed: bool = False

    @property
    def weight_shape(self):
        k = (self.kernel,) * 3
        return (self.cin, self.cout, *k) if self.transposed else (self.cout, self.cin, *k)

    @property
    def args(self) -> dict:
        args = dict(stride=self.stride, padding=self.padding)
        if self.transposed:
            args["output_padding"] = self.output_padding
        return args


def _transposed(name, cin, cout, size, k, p=0, op=0):
    return Layer(name, cin, cout, size, k, 2, p, op, transposed=True)


TRANSPOSED = (_transposed("T 256->128 k2s2 6^3", 256, 128, 6, 2),
              _transposed("T 128->64 k2s2 12^3", 128, 64, 12, 2),
              _transposed("T 64->32 k2s2 24^3", 64, 32, 24, 2),
              _transposed("T 384->64 k3s2p1op1 6^3", 384, 64, 6, 3, 1, 1),
              _transposed("T 64->16 k3s2p1op1 24^3", 64, 16, 24, 3, 1, 1))
STRIDED = (Layer("conv 32->64 k3s2p1 48^3", 32, 64, 48, 3, 2, 1),
           Layer("conv 64->128 k3s2p1 24^3", 64, 128, 24, 3, 2, 1))
BOTTLENECK = (Layer("conv 256->256 k3p1 6^3", 256, 256, 6, 3, 1, 1),
              Layer("conv 512->512 k3p1 6^3", 512, 512, 6, 3, 1, 1),
              Layer("conv 128->128 k3p1 12^3", 128, 128, 12, 3, 1, 1),
              Layer("conv 512->256 k1 6^3", 512, 256, 6, 1),
              Layer("conv 256->128 k1 12^3", 256, 128, 12, 1))


def unet_layers(size=96, channels=(32, 64, 128, 256)) -> tuple:
    """The U-Net's convolutions, in order (see the module docstring)."""
    layers = [Layer(f"enc {1}->{channels[0]} {size}^3", 1, channels[0], size, 3, 1, 1)]
    s = size
    for c_in, c_out in zip(channels, channels[1:]):
        layers.append(Layer(f"down {c_in}->{c_out} {s}^3", c_in, c_out, s, 3, 2, 1))
        s //= 2
        layers.append(Layer(f"enc {c_out}->{c_out} {s}^3", c_out, c_out, s, 3, 1, 1))
    for c_in, c_out in zip(channels[:0:-1], channels[-2::-1]):
        layers.append(_transposed(f"up {c_in}->{c_out} {s}^3", c_in, c_out, s, 2))
        s *= 2
        layers.append(Layer(f"dec {2 * c_out}->{c_out} {s}^3", 2 * c_out, c_out, s, 3, 1, 1))
    layers.append(Layer(f"head {channels[0]}->2 {s}^3", channels[0], 2, s, 1))
    return tuple(layers)


UNET = unet_layers()


def _medians_ms(ours, theirs) -> tuple[float, float]:
    """Median times (ms) of two calls timed in alternation."""
    ours(), theirs()
    times = np.empty((REPEATS, 2))
    for i in range(REPEATS):
        for j, call in enumerate((ours, theirs)):
            start = time.perf_counter()
            call()
            times[i, j] = time.perf_counter() - start
    median = np.median(times, axis=0) * 1e3
    return float(median[0]), float(median[1])


def compare(layer: Layer, torch, rng) -> dict:
    """Forward and backward times of ``layer`` (ms, numbaconv and torch) and the largest
    difference of numbaconv's forward output from torch's."""
    x = rng.standard_normal((1, layer.cin) + (layer.size,) * 3).astype(np.float32)
    fan_in = layer.cin * layer.kernel ** 3
    w = (rng.standard_normal(layer.weight_shape) / np.sqrt(fan_in)).astype(np.float32)
    if layer.transposed:
        forward, backward = nc.conv_transpose3d, nc.conv_transpose3d_backward
        torch_forward = torch.nn.functional.conv_transpose3d
    else:
        forward, backward, torch_forward = nc.conv3d, nc.conv3d_backward, torch.nn.functional.conv3d
    y = forward(x, w, **layer.args)
    g = rng.standard_normal(y.shape).astype(np.float32)
    xt, wt, gt = map(torch.from_numpy, (x, w, g))
    with torch.no_grad():
        error = float(np.abs(y - torch_forward(xt, wt, **layer.args).numpy()).max())

    def torch_forward_call():
        with torch.no_grad():
            torch_forward(xt, wt, **layer.args)

    def torch_backward_call():
        with torch.no_grad():
            torch.ops.aten.convolution_backward(
                gt, xt, wt, None, [layer.stride] * 3, [layer.padding] * 3, [1] * 3,
                layer.transposed, [layer.output_padding] * 3, 1, [True, True, False])

    fwd = _medians_ms(lambda: forward(x, w, **layer.args), torch_forward_call)
    bwd = _medians_ms(lambda: backward(g, x, w, **layer.args), torch_backward_call)
    return {"forward": fwd, "backward": bwd, "error": error}


def _line(name, fwd, bwd, error=None) -> str:
    text = (f"{name:28s} fwd nc {fwd[0]:7.1f} torch {fwd[1]:7.1f} = {fwd[1] / fwd[0]:5.2f}x | "
            f"bwd nc {bwd[0]:7.1f} torch {bwd[1]:7.1f} = {bwd[1] / bwd[0]:5.2f}x")
    return text if error is None else f"{text}  err {error:.1e}"


def main(unet: bool = True) -> int:
    import numba
    import torch

    rng = np.random.default_rng(0)
    print(f"numbaconv {nc.__version__}, torch {torch.__version__}, threads: numba "
          f"{numba.get_num_threads()}, torch {torch.get_num_threads()}; times in ms")
    for layer in TRANSPOSED + STRIDED + BOTTLENECK:
        result = compare(layer, torch, rng)
        print(_line(layer.name, result["forward"], result["backward"], result["error"]))
    if unet:
        total = np.zeros((2, 2))
        for layer in UNET:
            result = compare(layer, torch, rng)
            total += (result["forward"], result["backward"])
            print("  " + _line(layer.name, result["forward"], result["backward"], result["error"]))
        print(_line(f"U-Net {UNET[0].size}^3, all convs", total[0], total[1]))
        both = total.sum(axis=0)
        print(f"U-Net forward + backward: nc {both[0]:.0f} ms, torch {both[1]:.0f} ms = "
              f"{both[1] / both[0]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
