"""FFT convolution: large kernels over few channels (point-spread functions, the
``numbaconv.ndimage`` filters).

A direct convolution costs kD*kH*kW multiply-adds per output and channel pair; through
the FFT it costs a few transforms of the padded volume, whatever the kernel size. Per
(sample, group), with ``F`` the real FFT of the zero-padded volume over all three axes:

    out[n, co] = bias[co] + irfft( sum_ci F(x[n, ci]) * conj(F(w[co, ci])) )[o * stride]

The transforms have the padded input's size (rounded up to a size scipy.fft computes
fast). The correlation is then circular, but no output ``o`` reads past the padded
input, so none wraps around. Dilation spreads the kernel's taps over zeros before its
transform; stride keeps every ``stride``-th output.

Rounding: this is a transform method (``direct_sums=False``), so ``auto`` takes it only
under ``set_precision("fast")``. It always computes in float64, float32 layers included.
Its error is then about 1e-15 of the largest output, far below float32's rounding of any
output that is not 1e-8 times smaller than the largest. A float32 FFT would save half
the time but err by 1e-6 of the largest output, more than the direct sums' own error on
small outputs. Work and memory: the transformed input (N*Cin), weight (Cout*Cin/G) and
one output channel, in complex128. ``supports`` refuses layers whose transforms exceed
``MEMORY_BYTES``. scipy.fft runs the transforms on numba's thread count, and each
transform is computed the same way on any number of workers, so the bits do not depend
on the thread count. Products are summed over input channels in order.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .registry import FORWARD, example_arrays, register

#: Largest transformed operands (input, weight and one output, complex128) accepted.
MEMORY_BYTES = 2 << 30


def transform_shape(spec) -> tuple[int, int, int]:
    """The FFT's size per axis: the padded input's, rounded up to a fast size."""
    from scipy import fft as sp_fft

    return tuple(sp_fft.next_fast_len(p, real=True) for p in spec.padded_size)


def transformed_bytes(spec) -> int:
    """Bytes of the transformed input, weight and one output channel."""
    d, h, w = transform_shape(spec)
    spectrum = d * h * (w // 2 + 1) * 16
    operands = spec.batch * spec.in_channels + spec.out_channels * spec.in_per_group + 1
    return spectrum * operands


def fft_flops(spec) -> float:
    """Rough FLOPs of the FFT path: the transforms (5 n log2 n per complex transform,
    half for real ones) and the spectral products (8 per complex multiply-add)."""
    shape = transform_shape(spec)
    size = math.prod(shape)
    transforms = spec.batch * (spec.in_channels + spec.out_channels) + spec.out_channels * spec.in_per_group
    products = spec.batch * spec.out_channels * spec.in_per_group * size / 2
    return 2.5 * size * math.log2(size) * transforms + 8 * products


def supports(spec) -> str | None:
    """None if the FFT kernel computes ``spec``, else why not."""
    needed = transformed_bytes(spec)
    if needed > MEMORY_BYTES:
        return (f"its transforms would take {needed / 2**30:.1f} GiB (the FFT path takes "
                f"at most {MEMORY_BYTES / 2**30:.0f} GiB: few channels, large kernels)")
    return None


def forward_fft(x, w6, bias, out, spec):
    """x: (N, Cin, D, H, W); w6: (G, Cout/G, Cin/G, kD, kH, kW), cross-correlation
    orientation; bias: (Cout,); out: (N, Cout, Do, Ho, Wo), written in full."""
    from scipy import fft as sp_fft

    shape = transform_shape(spec)
    axes = (-3, -2, -1)
    workers = numba.get_num_threads()
    groups, cout_g, cin_g = w6.shape[:3]
    pads = ((0, 0), (0, 0)) + tuple(zip(spec.padding, spec.padding_hi))
    spans = spec.span
    dilated = np.zeros(w6.shape[:3] + spans, np.float64)
    dd, dh, dw = spec.dilation
    dilated[..., ::dd, ::dh, ::dw] = w6
    weight_spectra = np.conj(sp_fft.rfftn(dilated, s=shape, axes=axes, workers=workers))
    input_spectra = sp_fft.rfftn(np.pad(x.astype(np.float64), pads), s=shape, axes=axes,
                                 workers=workers)
    sd, sh, sw = spec.stride
    od, oh, ow = out.shape[2:]
    acc = np.empty(input_spectra.shape[2:], np.complex128)
    for n in range(x.shape[0]):
        for g in range(groups):
            for co in range(cout_g):
                np.multiply(input_spectra[n, g * cin_g], weight_spectra[g, co, 0], out=acc)
                for ci in range(1, cin_g):
                    acc += input_spectra[n, g * cin_g + ci] * weight_spectra[g, co, ci]
                y = sp_fft.irfftn(acc, s=shape, axes=axes, workers=workers)
                channel = g * cout_g + co
                out[n, channel] = y[:od * sd:sd, :oh * sh:sh, :ow * sw:sw] + bias[channel]


def launch_forward(run, spec, x, w6, bias, out):
    run(x, w6, bias, out, spec)


register(name="fft", computes=FORWARD, function=forward_fft,
         examples=lambda dtype: example_arrays(dtype, 5, 6, 1, 5),
         launch=launch_forward, bitwise=None, parallel=False, supports=supports,
         direct_sums=False,
         description="FFT (scipy.fft, float64): large kernels on few channels")
