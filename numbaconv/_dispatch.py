"""The kernel cache and dispatcher: the only module that asks numba to compile.

Kernels are declared in :mod:`numbaconv.kernels.registry` beside their code. This
module chooses among them (:func:`choose`), compiles them through one cache, and
launches them (:class:`Plan`): tiers, the fork fallback, the plane-memory limit and
BLAS threading are handled here once, for every kernel.

A cache entry is keyed on ``(kernel name, dtype)``: every kernel reads sizes, strides,
paddings, dilations and group counts at run time, so nothing else changes the machine
code (a register-blocked kernel's block shape is part of its name). Compiled kernels
also persist on disk through numba's ``cache=True``, so a new process loads them
instead of compiling.

Tiers: a register-blocked kernel takes 5-20 s to compile the first time, the parallel
direct one about 4 s, the serial direct one about 2 s; the Winograd kernels 40-45 s
(10 s run in parts on Python threads), the GEMM kernels 6-12 s, whose numpy twins
compile nothing. When ``auto`` picks a kernel
that declares ``fallbacks`` and it is not ready, the fallbacks (same bits) serve while
it compiles in a background thread: the last one is compiled on the spot if need be,
and each call moves up to the best tier ready by then.
``NUMBACONV_BACKGROUND_COMPILE=0`` makes ``auto`` wait for its first choice instead.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import math
import os
import queue
import threading
import time
import warnings
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout  # not the builtin before 3.11

import numba
import numpy as np
from numba import typeof
from numba.core.compiler_lock import global_compiler_lock

from . import _config, _cpu, _numba_setup
from ._lru import LRU

# Before anything imports numba code: numba reads its settings when it first sets up
# its code generator, and ignores later changes (a module importing kernels.registry
# first once cost every kernel the AVX-512 settings).
_numba_setup.apply()

from . import _autotune  # noqa: E402
# Importing the kernel modules declares their kernels.
from .kernels import backward, blocked, direct, fft, gemm, scipy_sums, separable, winograd  # noqa: E402,F401
from .kernels.registry import FORWARD, REGISTRY, WEIGHT_GRAD, algorithm_names  # noqa: E402

#: The names ``algorithm=`` takes: the kernels, a register-blocked family ("blocked",
#: "wgrad_blocked") standing for its variant that fits the target CPU
#: (:func:`blocked_variant`). Internally any registered kernel name works too.
ALGORITHMS = ("auto",) + algorithm_names(FORWARD)
WEIGHT_GRAD_ALGORITHMS = ("auto",) + algorithm_names(WEIGHT_GRAD)

#: Below this many FLOPs the thread pool costs more than it saves.
SERIAL_FLOPS = 2_000_000
#: Below this many FLOPs the direct kernel's scratch buffers cost more than the work.
TINY_FLOPS = 100_000
#: Above this many bytes of padded input planes per work item, ``auto`` takes the GEMM
#: path, whose buffers do not grow with the padding.
PLANE_BYTES_LIMIT = 32 << 20
#: Above this, even a forced plane-copying kernel is refused (huge padding would
#: otherwise ask for tens of GB, or overflow).
FORCED_PLANE_BYTES_LIMIT = 2 << 30
#: The weight gradient is a matrix product with (Cout/G) x (Cin/G * taps) outputs and a
#: reduction over every output position. From this many outputs per group BLAS's
#: blocking beats the register-blocked kernel (autotuner on the suite, Ice Lake,
#: 2026-12-01, ms: b 158 vs 288, e 106 vs 258, j 17 vs 273, k2 15 vs 68, m 42 vs 57;
#: below it the blocked kernel wins: f 64 vs 96, i 18 vs 31, d 10 vs 26, depthwise g 40
#: vs 152, and c, 27648 outputs, is a tie at 406 vs 416).
WEIGHT_GRAD_GEMM_TERMS = 10_000
#: ...except with fewer output channels per group than this (one side of BLAS's
#: product, 51-79 GFLOP/s so narrow) over at least ``WEIGHT_GRAD_NARROW_POSITIONS``
#: output positions, where the blocked kernel wins. Zen 4, 2026-12-06, float32, ms,
#: blocked vs GEMM (AVX-512 | AVX2 code): k3 s2 16->32 on 64^3 8.4 vs 11.4 | 12.0 vs
#: 17.4, 32->32 on 64^3 16.9 vs 23.8 | 23.7 vs 35.8, 64->32 on 48^3 15.7 vs 20.4 | 21.3
#: vs 29.5, 24->48 on 64^3 18.1 vs 21.5 | 25.4 vs 28.4, 128->32 on 48^3 31.8 vs 42.5,
#: 64->32 on 96^3 125 vs 138; k3 s1 16->32 on 32^3 6.9 vs 11.9 | 8.9 vs 12.5; float64
#: 64->32 on 48^3 28.4 vs 33.8, 16->32 on 64^3 22.7 vs 21.4. Not on few positions: 256->32
#: k3 s2 on 24^3 (1728) 12.7 vs 12.7, 512->48 on 12^3 (216) 10.4 vs 6.6; and 64 channels
#: are a tossup (16->64 on 64^3 15.9 vs 20.2 | 22.2 vs 21.9, 32->64 on 96^3 122 vs 106).
#: Pointwise layers (one tap, which fills a quarter of the blocked kernel's tap block)
#: take GEMM at any size: 256->32 on 24^3 15.0 vs 2.6, 64->48 on 64^3 153 vs 19, 16->16
#: on 48^3 3.1 vs 1.5, 32->2 on 96^3 13.3 vs 8.5 (float64 64->48 on 32^3 54 vs 9.2).
WEIGHT_GRAD_GEMM_MIN_ROWS = 64
WEIGHT_GRAD_NARROW_POSITIONS = 4096
#: ...and except for stems (at most this many input channels per group: RGB frames,
#: single-channel volumes) where the blocked kernel has the 4 x 4 block (float32 on
#: AVX-512). Zen 4, 2026-12-07, float32, ms, blocked vs GEMM, AVX-512 | AVX2 code (the
#: 2 x 2 block): 3->64 (3,7,7) s(1,2,2) on 16 x 112^2 31.5 vs 39.5 and 17.2 vs 21.3 |
#: 27.4 vs 22.1, on 8 x 112^2 9.4 vs 13.5 | 25.7 vs 21.1; 3->128 17.6 vs 22.1 | 23.8 vs
#: 22.8, 3->256 35.6 vs 40.1 | 47.2 vs 39.4; 3->64 (7,7,7) s2 on 32 x 112^2 42.6 vs
#: 52.6; 1->64 (7,7,7) on 64^3 64.8 vs 86.8 | 91.0 vs 99.1; 3->64 (5,5,5) on 64^3 77.2
#: vs 88.0 | 109.0 vs 90.9; 8->64 (3,7,7) s(1,2,2) on 32 x 64^2 30.2 vs 36.5 | 42.3 vs
#: 38.6; 4->128 k3 on 48^3 27.7 vs 28.3 | 34.1 vs 28.5. But 16->64 k3 on 64^3 117.8 vs
#: 109.8: GEMM from 16 input channels.
WEIGHT_GRAD_STEM_CHANNELS = 8
#: ...as long as its partial sums (``gemm.PARTIAL_BYTES`` at most) can hold this many
#: weight-sized chunks, to run in parallel: 512 x 512 x 27 (28 MB) on 6^3 positions, 2
#: chunks, 92 vs 380 ms on the blocked kernel (Ice Lake, 2026-12-01; before, the budget
#: sent it to the blocked kernel rather than cut the chunks); a larger weight stays there.
WEIGHT_GRAD_GEMM_MIN_CHUNKS = 2
#: How many times fewer FLOPs (``kernels.fft.fft_flops``) the FFT path needs before
#: ``auto`` takes it over the direct kernels, which run that many times more FLOP/s.
#: Measured crossover (Zen 4, 2026-12-05, FFT in blocks, float32, fft vs blocked, ms,
#: each timed back to back): one channel, 128^3 k9 36 vs 29 (9.8x fewer), k11 36 vs 53
#: (15.7x), k13 41 vs 86 (23x); 64^3 k11 7.6 vs 7.3 (12.5x), k13 15 vs 12 (18x), k15
#: 14 vs 19 (24x); 4 channels on 64^3 k7 26 vs 30 (10.8x), k9 27 vs 64 (21.7x); 8 on
#: 32^3 k9 23 vs 18 (15.2x).
FFT_ADVANTAGE = 12
#: ...and never for kernels of fewer taps (4x4x4).
FFT_MIN_TAPS = 64
#: Output tiles (2x2x2) from which the Winograd kernel's weight transform pays.
WINOGRAD_TILES = 512
#: ...or at least this many where it runs staged (``winograd.staged``): the forward...
WINOGRAD_STAGED_TILES = 64
#: ...and the weight gradient, from as many where both channel counts per group reach
#: ``WINOGRAD_WIDE_CHANNELS``, else from ``WINOGRAD_STAGED_WEIGHT_GRAD_TILES``. Zen 4,
#: 2026-12-06, float32 unless said, ms, Winograd vs GEMM (since the transform back to
#: the taps runs in the kernel): on 8^3 (64 tiles) 128 channels 2.8 vs 3.9, 256 11.7 vs
#: 14.7 (float64 26.5 vs 34.4), 384 22.3 vs 33.3, 512 35.5 vs 48.7; 256 on 10^3 16.4 vs
#: 27.4; 2 x 256 on 6^3 (54 tiles) 11.8 vs 15.2; but 64 channels on 8^3 2.5 vs 2.0, and
#: on 6^3 (27 tiles) 256 9.4 vs 8.1, 512 48 vs 29.
WINOGRAD_WIDE_CHANNELS = 128
WINOGRAD_STAGED_WEIGHT_GRAD_TILES = 200
#: ...and for the weight gradient, at least this many partial sums (work for every
#: thread) within ``winograd.PARTIAL_BYTES``.
WINOGRAD_WEIGHT_GRAD_CHUNKS = 4
#: Below this many FLOPs (times the stride along rows) the tiny kernel is the lowest tier:
#: it compiles in 1.2 s where direct_serial takes 2.4-2.7 (Zen 4, cold, beside one
#: background compile), and runs a first call within a fraction of a second: float32,
#: ms, tiny vs direct_serial, 64->64 on 16^3 (0.9 GFLOP) 193 vs 54, 16->16 on 32^3 37 vs
#: 16, 1->8 k5 on 64^3 46 vs 21; but strided rows gather: k3 s2 32->64 on 40^3 (0.9
#: GFLOP) 484 vs 60. The later calls run on it until direct_serial comes from the
#: background (about 7 s after the first call).
TINY_FLOOR_FLOPS = 1_000_000_000
#: The tiny kernel of each direction: the floor of its small layers' tiers. The weight
#: gradient's compiles in 1.0 s where wgrad_direct_serial takes 2.9 (Zen 4, cold) and
#: runs at 40% of its speed (float32, ms, 16->16 on 32^3 (0.45 GFLOP) 190 vs 77, 64->64
#: on 16^3 391 vs 165).
TINY_KERNELS = {FORWARD: "tiny", WEIGHT_GRAD: "wgrad_tiny"}


# ---- Choosing --------------------------------------------------------------------------
def blocked_variant(spec, computes=FORWARD) -> str:
    """The register-blocked kernel whose block fits the target CPU's vector registers
    (``numbaconv._cpu``'s tables): dense, or 1 x positions for layers with 1-2 output
    channels per group (of two output rows at once where :func:`_row_pairs_pay`)."""
    if computes == FORWARD and spec.out_per_group < 3 and _row_pairs_pay(spec):
        return _row_pair_name(spec.compute_dtype)
    return _blocked_name(spec.compute_dtype, spec.out_per_group, computes)


def _row_pair_name(dtype) -> str | None:
    block = _cpu.row_pair_block(dtype)
    return None if block is None else "blocked{}x{}r2".format(*block)


def _row_pairs_pay(spec) -> bool:
    """The row-pair block where the target has one, the layer's taps along H read
    consecutive rows (stride and dilation 1, 2+ taps, 2+ output rows), and its rows fill
    whole blocks but for at most 1/16: it computes each row in blocks from the row's
    start (the 1 x vw block runs on over the margin into the next row). Zen 4,
    2026-12-06, ms, 1 row vs 2, float64 | float32: 5^3 over 15 x 256^2 4.15 vs 3.44 |
    2.35 vs 1.97, over 60 x 128^2 4.24 vs 3.35 | 2.43 vs 1.91; but 77-wide rows (1.66x
    the work) 0.56 vs 0.64 | 0.35 vs 0.42, depthwise 3^3 32 ch on 2 x 16 x 56^2 (1.14x)
    5.5 vs 5.6 | 3.8 vs 3.8."""
    name = _row_pair_name(spec.compute_dtype)
    if name is None or REGISTRY[name].supports(spec) is not None:
        return False
    vw = _cpu.row_pair_block(spec.compute_dtype)[1]
    out_h, out_w = spec.out_size[1], spec.out_size[2]
    return spec.geometry.kernel_h >= 2 and out_h >= 2 and 16 * -(-out_w // vw) * vw <= 17 * out_w


def _blocked_name(dtype, out_per_group, computes=FORWARD) -> str:
    if computes == WEIGHT_GRAD:
        return "wgrad_blocked{}x{}".format(*_cpu.weight_grad_block(dtype))
    return "blocked{}x{}".format(*_cpu.forward_block(dtype, out_per_group))


#: Channels (in or out, per group) from which a layer of 2-3 taps goes to GEMM.
FEW_TAPS_GEMM_CHANNELS = 128
#: Output channels per group from which a pointwise layer goes to GEMM whatever its
#: input channels (below, the 1 x positions register block serves it).
POINTWISE_GEMM_OUTPUTS = 3


def choose(spec, computes=FORWARD) -> str:
    """The kernel ``auto`` runs for ``spec`` (rules measured on the benchmark suite; see
    the README)."""
    if computes == WEIGHT_GRAD:
        if _winograd_pays(spec, computes) and (
                winograd.staged(spec) or winograd.weight_grad_chunks(spec) >= WINOGRAD_WEIGHT_GRAD_CHUNKS):
            # Zen 4, 2026-12-05, float32, ms, wgrad_gemm vs winograd: 64->32 on 96^3
            # 1075 vs 502, 128->64 on 48^3 526 vs 243, 256->128 on 24^3 266 vs 168,
            # 32->32 on 64^3 161 vs 65; staged: 256 on 12^3 50 vs 40, 2 x 256 on 12^3 87
            # vs 63, 256 on 16^3 99 vs 60, 128 on 12^3 11.6 vs 9.6, 96 on 12^3 6.4 vs 5.4;
            # on 64 tiles see WINOGRAD_WIDE_CHANNELS.
            return "wgrad_winograd"
        if spec.plane_bytes > PLANE_BYTES_LIMIT:
            return "wgrad_gemm"  # its buffers do not grow with the padding
        taps = math.prod(spec.kernel)
        many_weights = spec.out_per_group * spec.in_per_group * taps >= WEIGHT_GRAD_GEMM_TERMS
        narrow = (spec.out_per_group < WEIGHT_GRAD_GEMM_MIN_ROWS
                  and spec.batch * math.prod(spec.out_size) >= WEIGHT_GRAD_NARROW_POSITIONS)
        partials_fit = (WEIGHT_GRAD_GEMM_MIN_CHUNKS * spec.out_channels * spec.reduction
                        * spec.compute_dtype.itemsize <= gemm.PARTIAL_BYTES)
        stem = (spec.in_per_group <= WEIGHT_GRAD_STEM_CHANNELS
                and math.prod(_cpu.weight_grad_block(spec.compute_dtype)) >= 16)
        if partials_fit and (taps == 1 or many_weights and not narrow and not stem
                             or gemm.weight_grad_depth_taps(spec)):
            # Taps along depth only: grad_output's planes times the input planes, read
            # in place (gemm.weight_grad_gemm). Zen 4, 2026-12-07, float32, ms, blocked vs
            # gemm, (3,1,1) p(1,0,0) on 16x56^2 unless said: 16 ch (2 samples) 4.2 vs
            # 1.0, 32 ch 12.8 vs 7.5, depthwise 64 ch 2.8 vs 0.9, 8->16 on 16x64^2 1.0
            # vs 0.34; (5,1,1) 32 ch 7.9 vs 6.0; s(2,1,1) 64 ch 10.9 vs 5.4.
            return "wgrad_gemm"
        return blocked_variant(spec, computes)
    if _fft_pays(spec):
        return "fft"
    if spec.plane_bytes > PLANE_BYTES_LIMIT:
        return "gemm"
    if spec.flops < TINY_FLOPS:
        return "tiny"
    if spec.flops < SERIAL_FLOPS:
        return "direct_serial"
    if _winograd_pays(spec):
        return "winograd"
    taps = math.prod(spec.kernel)
    if taps == 1 and (spec.out_per_group >= POINTWISE_GEMM_OUTPUTS or spec.in_per_group >= 64):
        # Pointwise layers with a dense register block's worth of outputs, of any input
        # channel count (or with 64 input channels, of any output count: a plain matrix
        # product): the blocked kernel's tile reuses no input load across taps.
        # Zen 4, 2026-12-06, float32, ms, blocked vs gemm, AVX-512 | AVX2 code: 16->16 on
        # 32^3 1.48 vs 0.82 | 0.79 vs 0.53, 32->32 on 48^3 6.0 vs 3.5 | 4.7 vs 3.3, 8->16
        # on 64^3 5.1 vs 2.9 | 4.2 vs 3.1, 32->8 8.7 vs 5.1 | 6.4 vs 5.6, 4->4 2.5 vs 0.76
        # | 1.30 vs 0.49, 16->32 14.0 vs 8.7 | 14.9 vs 9.1, 1->16 7.1 vs 2.5, 3->16 on 96^3
        # 25 vs 12; but 32->2 on 96^3 (the 1 x 64 block) 11.6 vs 14.6 | 9.1 vs 12.6.
        return "gemm"
    if gemm.forward_depth_taps(spec):
        # Taps along depth only ((k, 1, 1): the temporal layers of (2+1)-D video models):
        # the GEMM path multiplies each input plane in place, one BLAS call per tap
        # (gemm._forward_depth_taps), where a register tile reuses few loads. Zen 4,
        # 2026-12-07, float32, ms, blocked vs gemm: (3,1,1) p(1,0,0) 64 ch on 2x8x56^2
        # 11.9 vs 10.1, 32 ch on 2x16x56^2 10.3 vs 9.0, 16 ch 5.6 vs 1.4, 128 on 8x28^2
        # 4.8 vs 3.6, 64 ch s(2,1,1) on 16x56^2 5.6 vs 4.9; (5,1,1) 32 ch on 16x56^2 4.8
        # vs 4.8.
        return "gemm"
    if (taps <= 3 and spec.in_per_group >= 64
            and max(spec.in_per_group, spec.out_per_group) >= FEW_TAPS_GEMM_CHANNELS):
        # Nearly a plain matrix product (2-3 taps): too few taps per input channel
        # for a register tile to reuse its loads (Ice Lake, 2026-12-01: k2, (3,1,1) 64
        # ch, 14.5 vs 19.3 ms). Not below 128 channels, where the tile keeps up (Zen 4,
        # 2026-12-05, float32, ms, blocked vs gemm; AVX-512 | AVX2 code): k2 (3,1,1) 64
        # ch on 2x8x56x56 10.3 vs 14.0 | 10.8 vs 11.3, (1,1,3) 10.9 vs 13.3 | 10.7 vs
        # 10.9, (1,3,1) 9.8 vs 12.0 | 10.0 vs 10.9, (2,1,1) 64 ch on 32^3 5.5 vs 6.6 |
        # 8.4 vs 8.0; GEMM from 128: 128 on 16x28x28 9.7 vs 10.4 | 11.0 vs 10.6, 96->192
        # on 16x32x32 12.6 vs 14.3 | 29.0 vs 15.8, 256 on 8x14x14 5.2 vs 3.9 | 6.0 vs 3.9.
        return "gemm"
    if spec.kernel == spec.stride and spec.dilation == (1, 1, 1) and taps > 1:
        # Taps that never overlap (kernel = stride: k2 s2 downsampling, video patch
        # embeddings, and so the input gradient of a k2 s2 transposed layer): im2col is
        # a permutation, and a register tile reuses no input across positions. GEMM won
        # on every such layer measured (Zen 4, 2026-12-05, float32, ms, blocked vs gemm,
        # k2 s2 unless stated: 32->64 on 48^3 5.9 vs 4.1, 64->32 on 48^3 8.0 vs 6.9,
        # 128->64 on 24^3 3.4 vs 2.1, 16->32 on 96^3 17.0 vs 14.9, 4->8 on 64^3 0.95 vs
        # 0.63, 1->8 0.44 vs 0.20, 16->4 3.0 vs 2.4; 3->768 (2,16,16) patches on
        # 16x224x224 30.0 vs 21.5; k4 s4 8->8 on 64^3 1.9 vs 1.5; depthwise 32 on 48^3
        # 3.0 vs 2.1; 8 groups 64->64 on 48^3 8.6 vs 4.2).
        return "gemm"
    overlapping = any(span > stride for span, stride in zip(spec.span, spec.stride))
    if (spec.stride != (1, 1, 1) and overlapping and spec.out_per_group >= 32
            and 2 * spec.reduction >= math.prod(spec.out_size)):
        # Strided layers whose taps overlap (k3 s2 downsampling), unless positions
        # outnumber the reduction 2 to 1: a strided register tile reuses few loads, and
        # BLAS wins. Zen 4, 2026-12-06, float32, k3 s2 p1, ms, blocked vs gemm, AVX-512 |
        # AVX2 code, with the reduction / positions ratio: gemm 32->64 on 24^3 (0.5) 1.65
        # vs 1.70 | 1.93 vs 1.88, 16->32 on 16^3 (0.84) 0.25 vs 0.20 | 0.30 vs 0.28,
        # 64->128 on 24^3 (1.0) 5.4 vs 5.5 | 6.7 vs 6.1, 128->256 on 24^3 (2.0) 19.9 vs
        # 19.7 | 24.8 vs 23.0, 128->128 on 16^3 (6.8) 4.0 vs 3.4 | 5.1 vs 3.9; blocked
        # 48->96 on 32^3 (0.32) 6.8 vs 8.5 | 8.6 vs 10.5, 64->128 on 32^3 (0.42) 11.5 vs
        # 14.8 | 14.4 vs 17.0, 96->192 on 40^3 (0.32) 48 vs 56 | 74 vs 75, 40->80 on 28^3
        # (0.39) 3.9 vs 4.3 | 5.6 vs 6.1. (The ratio was 4 before the blocked kernel
        # stopped copying its weights per output depth.)
        return "gemm"
    if 16 * math.prod(spec.out_size) < spec.reduction and spec.out_per_group >= 32:
        # Deep layers on tiny volumes: too few positions to fill the register tiles, and
        # BLAS's blocking wins (Ice Lake, 2026-12-01, with the blocked kernel's L2-sized
        # passes over input channels: 512 ch on 2x7x7 18 vs 48 ms; 256 ch on 4x14x14
        # stays blocked, 25 vs 28; 128 ch on 8x28x28 75 vs 105).
        return "gemm"
    return blocked_variant(spec)


def permitted(kernel, spec) -> bool:
    """``kernel`` computes ``spec`` and the precision setting lets ``auto`` run it (the
    rules and the autotuner alike)."""
    if kernel.supports is not None and kernel.supports(spec) is not None:
        return False
    return kernel.direct_sums or _config.precision() == "fast"


def _winograd_pays(spec, computes=FORWARD) -> bool:
    """Winograd where it is permitted and measured faster: 3x3x3 stride-1 layers with
    >= 32 channels per group on both sides (the 64 matrix products are then big enough
    for BLAS) over >= WINOGRAD_TILES output tiles (the weight transform, 64 values per
    channel pair, is then small beside them). Ice Lake, 2026-12-01, float32 vs the
    blocked kernel, ms: b 72 vs 159, c 78 vs 104, l1 51 vs 76; losses where these
    fail: l2 (98 tiles) 35 vs 26, f (16 per group) 21 vs 16, d (1 input channel) 37 vs 31.
    float64: b 142 vs 320, c 128 vs 224.

    Also where it runs staged (deep layers on small volumes) over >=
    ``WINOGRAD_STAGED_TILES`` tiles (the weight gradient of narrower layers from
    ``WINOGRAD_STAGED_WEIGHT_GRAD_TILES``). Zen 4, 2026-12-05, ms,
    Winograd vs the rules before (blocked, or GEMM for 384 and 512), float32: 128
    channels on 8^3 2.9 vs 5.2, on 12^3 8.1 vs 13.2, 256 on 8^3 10.3 vs 22.5, on 12^3
    22.3 vs 51.3, 384 on 8^3 23.5 vs 30.2, 512 on 8^3 46 vs 51; float64: 256 on 12^3 37
    vs 90, 512 on 8^3 66 vs 130. Not on 6^3 (27 tiles), where the weight transform
    outweighs the products: 256 6.8 vs GEMM 6.0, 512 36 vs 24."""
    if not (permitted(REGISTRY["winograd"], spec) and spec.in_per_group >= 32
            and spec.out_per_group >= 32):
        return False
    tiles = spec.batch * math.prod((o + 1) // 2 for o in spec.out_size)
    staged_tiles = WINOGRAD_STAGED_TILES
    if computes == WEIGHT_GRAD and min(spec.in_per_group, spec.out_per_group) < WINOGRAD_WIDE_CHANNELS:
        staged_tiles = WINOGRAD_STAGED_WEIGHT_GRAD_TILES
    return tiles >= WINOGRAD_TILES or (tiles >= staged_tiles and winograd.staged(spec))


def _fft_pays(spec) -> bool:
    """The FFT path where it is permitted and its (rough) FLOPs are ``FFT_ADVANTAGE``
    times fewer than the direct sums': large kernels on few channels."""
    return (math.prod(spec.kernel) >= FFT_MIN_TAPS  # spares scipy.fft's import otherwise
            and spec.flops > FFT_ADVANTAGE * fft.fft_flops(spec)
            and permitted(REGISTRY["fft"], spec))


def resolve(spec, algorithm, computes=FORWARD) -> str:
    """The kernel name for ``algorithm`` (checked by the caller); for ``auto``, the
    autotuner's choice where one is stored (``numbaconv._autotune``), else the rules'."""
    if algorithm == "auto":
        return _autotune.choice(spec, computes) or choose(spec, computes)
    if algorithm in ("blocked", "wgrad_blocked"):
        return blocked_variant(spec, computes)
    return algorithm


# ---- Compiling ---------------------------------------------------------------------------
def background_enabled() -> bool:
    return _config.env_flag("NUMBACONV_BACKGROUND_COMPILE")


class _Interrupted(Exception):
    """A build stopped by KeyboardInterrupt or SystemExit in the thread that ran it:
    the interrupt is that thread's; other threads waiting for the kernel build it again."""


class _Background:
    """One daemon thread that builds queued kernels, each compiled by a child process
    (:func:`_compile_in_child`). A daemon, so that a script exits as soon as it is done
    instead of waiting for compiles it never asked for (kernels that finished are
    already in numba's disk cache; numba writes each file whole)."""

    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()

    def submit(self, job, *args) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="numbaconv-compile",
                                                daemon=True)
                self._thread.start()
        self._queue.put((job, args))

    def _work(self):
        while True:
            job, args = self._queue.get()
            job(*args)


class KernelCache:
    """Compiled kernels keyed on (name, dtype), with hit/miss counts and the time spent
    compiling (or loading from numba's disk cache). Thread-safe: a kernel is built
    once, and other threads asking for it wait for that build."""

    def __init__(self, max_entries: int = _config.KERNELS):
        self._entries = LRU(max_entries)  # key -> Future
        self._seconds: dict[tuple, float] = {}
        self._background = _Background()
        self.hits = 0
        self.misses = 0

    @property
    def max_entries(self) -> int:
        return self._entries.size

    def _future(self, name, dtype, background: bool) -> Future:
        key = (name, np.dtype(dtype).name)
        with self._entries.lock:
            future = self._entries.get(key)
            if future is not None:
                if future.done():
                    self.hits += 1
                return future
            self.misses += 1
            future = Future()
            self._entries.put(key, future)
        if background:
            self._background.submit(self._build, key, future, True)
        else:
            self._build(key, future)
        return future

    def _build(self, key, future, background=False):
        start = time.perf_counter()
        try:
            kernel, dtype = REGISTRY[key[0]], np.dtype(key[1])
            if background and not _on_disk(kernel, dtype):
                # numba holds the GIL while it compiles: in this process, a background
                # compile would stall every other thread, the caller's included.
                _compile_in_child(kernel.name, dtype)
                if _exiting:
                    return
            kernel = compile_kernel(kernel, dtype)  # a disk-cache load, if the child did it
        except Exception as exc:  # the waiting callers see it
            self._entries.pop(key)
            future.set_exception(exc)
            return
        except BaseException:  # an interrupt: this thread's alone
            self._entries.pop(key)
            future.set_exception(_Interrupted())
            raise
        self._seconds[key] = time.perf_counter() - start
        future.set_result(kernel)

    def get(self, name: str, dtype):
        """The kernel, compiled now (in this thread) if needed."""
        while True:
            try:
                return self._future(name, dtype, background=False).result()
            except _Interrupted:  # another thread's build was interrupted: build it here
                continue

    def get_soon(self, name: str, dtype, wait: float):
        """The kernel if it is ready within ``wait`` seconds, else None (it keeps
        compiling in the background)."""
        try:
            return self._future(name, dtype, background=True).result(timeout=wait)
        except (FutureTimeout, _Interrupted):
            return None

    def ready(self, name: str, dtype):
        """True if the kernel is built, False if it is being built, None if unknown."""
        future = self._entries.get((name, np.dtype(dtype).name))
        return None if future is None else future.done()

    def info(self) -> dict:
        entries = [{"algorithm": k[0], "dtype": k[1], "ready": f.done(),
                    "compile_seconds": self._seconds.get(k)} for k, f in self._entries.items()]
        return {"entries": entries, "hits": self.hits, "misses": self.misses,
                "compile_seconds": sum(self._seconds.values()), "max_entries": self.max_entries}

    def clear(self) -> None:
        """Forget the ready kernels (those still compiling finish and stay)."""
        self._entries.clear(keep=lambda future: not future.done())
        self._seconds.clear()
        self.hits = self.misses = 0

    def after_fork(self) -> None:
        """In a forked child: builds pending in the parent never finish here (their
        thread did not fork), so forget them, and compile with a thread of our own."""
        self._entries.keep_only(lambda future: future.done())
        self._background = _Background()


def ready_or_started(name: str, dtype) -> bool:
    """Whether kernel ``name`` is ready for ``dtype`` (loading it from the disk cache if it
    is there); if not, its compile starts in the background (a child process) and the
    caller runs a kernel with the same bits meanwhile. Always True where background
    compiles are off (the caller then compiles in its own thread, as it always did)."""
    if not background_enabled() or _kernel_ready(REGISTRY[name], dtype):
        return True
    _kernel(name, dtype, wait=0)
    return False


def _kernel_ready(kernel, dtype) -> bool:
    """Whether ``kernel`` is compiled here or loadable from the disk cache (then it is
    loaded now: milliseconds)."""
    known = CACHE.ready(kernel.name, dtype)
    if known is not None:
        return known
    if _on_disk(kernel, dtype):
        _kernel(kernel.name, dtype)
        return True
    return False


def _on_disk(kernel, dtype) -> bool:
    """Whether numba's disk cache holds ``kernel`` for ``dtype`` (loadable in ms)."""
    dispatcher = kernel.dispatcher()
    cache = getattr(dispatcher, "_cache", None)
    if cache is None or numba.config.DISABLE_JIT:
        return True  # nothing to compile in a child
    signature = tuple(typeof(a) for a in kernel.examples(dtype))
    try:
        return signature in _compiled_signatures(dispatcher) or \
            _indexed(cache, signature, dispatcher.targetctx)
    except Exception:  # damaged: the child recompiles and rewrites it
        return False


def _indexed(cache, signature, target_context) -> bool:
    """Whether the cache's index lists ``signature`` for this target. Only the small
    index file is read: loading the entry here would load it twice (the compile that
    follows loads it again), and outside numba's compiler lock."""
    try:
        key = cache._index_key(signature, target_context.codegen())
        index = cache._cache_file._load_index()
    except AttributeError:  # another numba's internals: load the entry itself
        return cache.load_overload(signature, target_context) is not None
    return key in index


_children: set = set()
_children_lock = threading.Lock()
_unpaused = threading.Event()  # clear while background_paused
_unpaused.set()
_pauses = 0
_exiting = False


def _compile_in_child(name: str, dtype) -> None:
    """Compile kernel ``name`` for ``dtype`` in a child interpreter with this process's
    numba target, which writes it to numba's disk cache. Best effort: if it fails, the
    caller compiles in this process."""
    import subprocess
    import sys

    if _exiting:
        return
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    for variable, value in (("NUMBA_CPU_NAME", numba.config.CPU_NAME),
                            ("NUMBA_CPU_FEATURES", numba.config.CPU_FEATURES),
                            ("NUMBA_SLP_VECTORIZE", int(numba.config.SLP_VECTORIZE))):
        if value:  # the same target and settings as here, however they were set
            env[variable] = str(value)
    _unpaused.wait()
    with _children_lock:  # started and listed at once, for _stop_children and background_paused
        if _exiting:
            return
        try:
            child = subprocess.Popen([sys.executable, "-m", "numbaconv._compile", name,
                                      np.dtype(dtype).name], env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            return
        _children.add(child)
    try:
        child.wait()
    finally:
        _children.discard(child)


def _stop_children() -> None:
    """At exit: no compile process is left behind (the next process compiles again)."""
    global _exiting
    with _children_lock:
        _exiting = True
        for child in list(_children):
            child.kill()


atexit.register(_stop_children)


@contextlib.contextmanager
def background_paused():
    """Background compile processes stopped meanwhile (``SIGSTOP``, then ``SIGCONT``;
    where the platform has no such signals, only no new one starts): for timings that
    should not share the CPU with a compile. Nests, and works from several threads."""
    global _pauses
    with _children_lock:
        _pauses += 1
        _unpaused.clear()  # no new compile starts meanwhile
        _signal_children("SIGSTOP")
    try:
        yield
    finally:
        with _children_lock:
            _pauses -= 1
            if _pauses == 0:
                _signal_children("SIGCONT")
                _unpaused.set()


def _signal_children(name) -> None:
    import signal

    if hasattr(signal, name):
        for child in _children:
            with contextlib.suppress(OSError):
                child.send_signal(getattr(signal, name))


def compile_kernel(kernel, dtype):
    """Compile ``kernel``'s dispatcher for its example arguments in ``dtype`` (or load it
    from numba's disk cache). A damaged cache entry is recompiled, and a cache that
    cannot be written is left alone, each with a warning; under ``NUMBA_DISABLE_JIT=1``
    the kernel runs as plain Python (slowly)."""
    dispatcher = kernel.dispatcher()
    if not hasattr(dispatcher, "compile"):  # NUMBA_DISABLE_JIT=1: a Python function
        return dispatcher
    signature = tuple(typeof(a) for a in kernel.examples(dtype))
    try:
        dispatcher.compile(signature)
    except OSError as exc:
        if not _raised_in_numba_cache(exc) or signature not in _compiled_signatures(dispatcher):
            raise
        _warn_cache(dispatcher, f"could not be written ({exc}); the kernel compiled and runs, "
                                f"but later processes will compile it again")
    except Exception as exc:
        if not _raised_in_numba_cache(exc):
            raise
        _warn_cache(dispatcher, f"held a damaged entry for {kernel.name} ({type(exc).__name__}: "
                                f"{exc}); it is compiled again and rewritten")
        dispatcher._cache.flush()  # drop the damaged index; the compile below rewrites it
        dispatcher.compile(signature)
    return dispatcher


def _raised_in_numba_cache(exc) -> bool:
    """Whether ``exc`` came from numba's disk cache (loading or saving), not the compiler."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(os.path.join("core", "caching.py")):
            return True
        tb = tb.tb_next
    return False


def _compiled_signatures(dispatcher):
    return [tuple(sig) for sig in dispatcher.overloads]


_warned_cache_dirs: set = set()


def _warn_cache(dispatcher, what: str) -> None:
    """Warn once per cache folder."""
    folder = getattr(getattr(dispatcher, "_cache", None), "_cache_path", "numba's cache folder")
    if folder in _warned_cache_dirs:
        return
    _warned_cache_dirs.add(folder)
    warnings.warn(f"numbaconv: numba's disk cache in {folder} {what}", RuntimeWarning, stacklevel=4)


CACHE = KernelCache()


def called_kernel(name, dtype, wait=0):
    """A kernel its caller launches itself (declared with ``called_directly``), or None
    where the caller's numpy version must serve: while it compiles in the background
    (not ready within ``wait`` seconds; None waits for it) and in a process forked after
    OpenMP started. With background compiles off (``NUMBACONV_BACKGROUND_COMPILE=0``)
    it waits, as ``auto``'s plans do: the numpy version served every call until a
    child process had compiled the kernel (a transposed k2 s2 128 -> 64 on 24^3: 48
    ms a call, not 20)."""
    if _forked_after_omp:
        return None
    return _kernel(name, dtype, wait if background_enabled() else None)


def _kernel(name, dtype, wait=None):
    """The compiled kernel ``name``: now, or (``wait`` seconds given) None if it is not
    ready by then, while it compiles in the background."""
    if wait is None:
        return CACHE.get(name, dtype)
    return CACHE.get_soon(name, dtype, wait)


# ---- Launching ---------------------------------------------------------------------------
#: True in a process forked after numba's OpenMP layer started: GNU OpenMP terminates
#: such a child when it enters a parallel region, so kernels run serially there (with
#: the same bits where the kernel declares a serial twin).
_forked_after_omp = False


_launch_lock = threading.Lock()
_threading_layer = None  # known after the first parallel launch


def launch(kernel, *args):
    """Run a compiled kernel. numba's ``workqueue`` threading layer aborts the process
    when two threads launch parallel kernels at once, so under it launches are
    serialised (and the first launch is, until numba has chosen its layer); ``omp`` and
    ``tbb`` take concurrent launches."""
    global _threading_layer
    if _threading_layer is not None and _threading_layer != "workqueue":
        return kernel(*args)
    with _launch_lock:
        result = kernel(*args)
        if _threading_layer is None:
            try:
                _threading_layer = numba.threading_layer()
            except ValueError:  # a serial kernel: no layer chosen yet
                pass
        return result


def _runner(kernel, compiled):
    """What runs ``kernel``'s compiled function: through :func:`launch` if it is numba
    parallel; directly otherwise (a kernel run in parts calls it from several threads
    at once, which :func:`launch` would serialise)."""
    return functools.partial(launch, compiled) if kernel.parallel else compiled


class _BlasLimit:
    """BLAS held to one thread while any numba-parallel GEMM kernel runs, restored when
    the last one ends. Counted, so that overlapping calls from several Python threads
    never restore a stale limit."""

    def __init__(self):
        self.after_fork()

    def after_fork(self):
        self._lock = threading.Lock()
        self._users = 0
        self._limiter = None
        self._controller = None
        self._openblas = ()  # (get, set) of each pthreads OpenBLAS
        self._others = True  # BLAS libraries threadpoolctl limits (per thread there)
        self._restore = ()  # the OpenBLAS thread counts before the limit

    @contextlib.contextmanager
    def __call__(self):
        with self._lock:
            if self._users == 0:
                if self._controller is None:
                    # Finding the BLAS libraries reads /proc/self/maps: 1.2 ms, once per
                    # call it was 10x the GEMM of a small layer. So the library the
                    # kernels' gemm calls is loaded first: a first BLAS call that ran
                    # before any kernel had loaded (a numpy twin while the kernel loads
                    # in the background) listed the libraries without it, and scipy's
                    # OpenBLAS then ran its own threads inside numba's parallel loops
                    # ("OpenBLAS Warning : Detect OpenMP Loop"), for the process's life.
                    import scipy.linalg.cython_blas  # noqa: F401
                    from threadpoolctl import ThreadpoolController

                    self._controller = ThreadpoolController()
                    openblas = dict(_pthreads_openblas(self._controller))  # file -> calls
                    self._openblas = tuple(openblas.values())
                    self._others = any(lib.user_api == "blas" and lib.filepath not in openblas
                                       for lib in self._controller.lib_controllers)
                self._restore = tuple((set_, get()) for get, set_ in self._openblas)
                # threadpoolctl (3.6 and later) changes a pthreads OpenBLAS only from the
                # first Python thread that limited it: from any other, its limit did
                # nothing and BLAS ran two threads inside numba's loops, with other
                # bits (a gemm layer called from a worker thread; found by a review). So
                # those are set directly (also quicker: threadpoolctl's limit took 20 us
                # of a 360 us pointwise layer), and threadpoolctl limits the others.
                for _, set_ in self._openblas:
                    set_(1)
                if self._others:
                    self._limiter = self._controller.limit(limits=1, user_api="blas")
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    if self._limiter is not None:
                        self._limiter.restore_original_limits()
                        self._limiter = None
                    for set_, threads in self._restore:
                        set_(threads)


single_threaded_blas = _BlasLimit()


def _pthreads_openblas(controller) -> tuple:
    """``(file, (openblas_get_num_threads, openblas_set_num_threads))`` of each OpenBLAS
    that ``controller`` (threadpoolctl's) found with one process-wide thread pool (not
    the OpenMP build, whose limit is per thread), called through ctypes."""
    import ctypes

    calls = []
    for lib in controller.lib_controllers:
        if lib.internal_api != "openblas" or getattr(lib, "threading_layer", None) == "openmp":
            continue
        try:
            dll = ctypes.CDLL(lib.filepath)
        except OSError:
            continue
        for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
            get = getattr(dll, f"{prefix}openblas_get_num_threads{suffix}", None)
            set_ = getattr(dll, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                get.restype, set_.argtypes, set_.restype = ctypes.c_int, [ctypes.c_int], None
                calls.append((lib.filepath, (get, set_)))
                break
    return tuple(calls)


class UnsupportedLayer(ValueError):
    """A forced algorithm cannot compute the layer; ``reason`` says why, so that a caller
    that runs the layer as parts (stride phases) can say it in its own terms."""

    def __init__(self, algorithm, reason):
        super().__init__(f"algorithm={algorithm!r} cannot compute this layer: {reason}")
        self.reason = reason


class Plan:
    """A checked convolution bound to its kernel: ``run(*operands)`` launches it (see
    :class:`~numbaconv.kernels.registry.Kernel` for the operands of each ``computes``)."""

    def __init__(self, spec, algorithm="auto", computes=FORWARD, tiered=None):
        """``tiered``: serve from the kernel's same-bits fallbacks while it compiles; by
        default for ``auto`` only (a forced algorithm runs the kernel it names)."""
        self.spec = spec
        self.dtype = spec.compute_dtype
        self.computes = computes
        self.auto = algorithm == "auto"
        kernel = REGISTRY[resolve(spec, algorithm, computes)]
        reason = kernel.supports(spec) if kernel.supports else None
        if reason is not None:
            raise UnsupportedLayer(algorithm, reason)
        if algorithm != "auto" and kernel.plane_memory and spec.plane_bytes > FORCED_PLANE_BYTES_LIMIT:
            raise ValueError(
                f"algorithm={algorithm!r} would need {spec.plane_bytes / 2**20:.0f} MiB of "
                f"padded input planes per work item (padding {spec.padding}); use "
                f"algorithm='auto' or a GEMM algorithm"
            )
        tiers = [kernel.name]
        lower = _lower_tiers(spec, kernel, computes)
        if ((algorithm == "auto" if tiered is None else tiered) and lower
                and background_enabled() and not _kernel_ready(kernel, self.dtype)):
            tiers += lower
            if computes == FORWARD and self.auto:  # a layer's (not numbaconv.ndimage's)
                _start_weight_grad_floor(spec)
            # The floor now, in this thread; the others in the background.
            _kernel(tiers[-1], self.dtype)
            for name in tiers[-2::-1]:  # the quickest compile first
                _kernel(name, self.dtype, wait=0)
        self.kernel = kernel  # the plan's own, whatever tier serves it now
        self.state = (tiers, kernel, None)
        self._use_best_ready()

    def _use_best_ready(self):
        """Take the best tier whose kernel is ready (the last one always is). The state
        changes in one assignment: other threads may be running this plan."""
        tiers = self.state[0]
        for i, name in enumerate(tiers):
            last = i == len(tiers) - 1
            compiled = _kernel(name, self.dtype, wait=None if last else 0)
            if compiled is not None:
                break
        self.state = (tiers[:i + 1], REGISTRY[name], _runner(REGISTRY[name], compiled))

    def run(self, *operands):
        tiers, kernel, run = self.state
        if len(tiers) > 1:
            self._use_best_ready()
            tiers, kernel, run = self.state
        # ``auto`` keeps MegEngine's semantics: a NaN or Inf reaches only the outputs
        # whose sums read it (a forced algorithm runs as named). The plan's own kernel
        # decides, not the tier serving now, so that every call takes the same path.
        if self.auto and self.kernel.spreads_nonfinite and not all_finite(
                operands[:self.kernel.nonfinite_operands]):
            return plan_for(self.spec, _exact_algorithm(self.spec, self.computes), self.computes,
                            tiered=True).run(*operands)
        if kernel.skips_zero_products and len(tiers) > 1 and not all_finite(operands):
            # A NaN or Inf operand would not meet the zeros this tier leaves out, where
            # the tiers above make 0 x Inf = NaN: the tier above serves (compiled now).
            kernel = REGISTRY[tiers[-2]]
            run = _runner(kernel, _kernel(kernel.name, self.dtype))
        if kernel.parallel and _forked_after_omp:
            kernel = REGISTRY[kernel.serial]
            run = _runner(kernel, _kernel(kernel.name, self.dtype))
        if kernel.blas:
            with single_threaded_blas():
                return kernel.launch(run, self.spec, *operands)
        return kernel.launch(run, self.spec, *operands)

    @property
    def kernel_name(self) -> str:
        """The kernel the next call runs (a lower tier while the best one compiles)."""
        return self.state[1].name


def _lower_tiers(spec, kernel, computes) -> tuple:
    """The kernels with ``kernel``'s bits that serve ``spec`` while it compiles, best
    first: its declared fallbacks, then, for layers it runs within a fraction of a
    second, the direction's tiny kernel (``TINY_KERNELS``), whose compile is the
    quickest (below direct_serial too)."""
    if computes not in TINY_KERNELS:
        return kernel.fallbacks
    tiny = REGISTRY[TINY_KERNELS[computes]]
    floor = (tiny.name,) if (spec.flops * spec.stride[2] < TINY_FLOOR_FLOPS and kernel is not tiny
                             and kernel.bitwise == tiny.bitwise) else ()
    return kernel.fallbacks + floor


def _start_weight_grad_floor(spec) -> None:
    """Queue, ahead of a cold forward layer's own background tiers, the kernel its first
    backward would otherwise compile in the caller's thread: the weight gradient's lowest
    tier (``wgrad_tiny``, 1 s, or ``wgrad_direct_serial``, about 3 s). Its child process
    runs on the core the forward's foreground compile leaves idle, and leaves the kernel
    in numba's disk cache, so it is one compile per machine and dtype even for a script
    that never calls backward. Blocked 16->16 on 32^3, empty caches, 8 interleaved pairs
    (Zen 4, 2026-12-06): first backward 2.8-4.2 -> 1.3-2.0 s; first forward 0.15 s
    slower on average (float64 +0.33-0.40 s, float32 -0.2 to +0.3 s). With wgrad_tiny
    (``bench --cold``, 2 runs each): first backward 2.66-2.82 -> 0.62-0.63 s."""
    lower = _lower_tiers(spec, REGISTRY[resolve(spec, "auto", WEIGHT_GRAD)], WEIGHT_GRAD)
    if lower and REGISTRY[lower[-1]].compiled:  # a numpy twin compiles nothing
        _kernel(lower[-1], spec.compute_dtype, wait=0)


_PLANS = LRU(_config.SPEC_PLANS)


def all_finite(arrays) -> bool:
    """Whether every element of ``arrays`` is finite: each array's dot product with itself
    (one vectorised pass; a NaN or an Inf makes it NaN or Inf, since no square is
    negative), or, where that overflows, the exact test. 27 MB of float32 in 0.65 ms,
    where its largest and smallest elements (two passes) took 1.30 and a sum 1.22 (Zen
    4, 2026-12-06); allocating ``isfinite`` costs more. Integer arrays are finite (their
    dot product would be numpy's slow integer loop, and may wrap)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return all(a.size == 0 or a.dtype.kind not in "fc" or np.isfinite(_self_dot(a))
                   or bool(np.isfinite(a).all()) for a in arrays)


def _self_dot(a: np.ndarray):
    flat = a.reshape(-1)
    return np.dot(flat, flat)


def _exact_algorithm(spec, computes) -> str:
    """A direct-sum algorithm that sums no margins, for operands holding a NaN or Inf
    (im2col reads exactly each output's window)."""
    if computes == WEIGHT_GRAD:
        return "wgrad_gemm"
    return "gemm" if spec.plane_bytes > PLANE_BYTES_LIMIT else blocked_variant(spec)


def plan_for(spec, algorithm="auto", computes=FORWARD, tiered=None) -> Plan:
    """The :class:`Plan` for ``spec``, made once: choosing the kernel and fetching it
    (and, for ``auto``, waiting briefly for a tier) stays off the per-call path."""
    return _PLANS.get_or_make((spec, algorithm, computes, tiered),
                              lambda: Plan(spec, algorithm, computes, tiered))


def clear_plans() -> None:
    _PLANS.clear()


#: Kernels ``auto`` only serves from while another compiles (a lower tier): ``warmup``
#: has no need of them. (``wgrad_direct_serial`` is a process's weight gradient after a
#: fork once OpenMP has started, so it is warmed up: a review found it left out.)
_NEVER_FINAL = ("wgrad_tiny",)


def warmup(dtypes=("float32", "float64"), algorithms=None, progress=None) -> list:
    """Compile (or load from disk) kernels now, so that no later call waits; returns
    the (kernel, dtype) pairs loaded.

    ``algorithms``: names as ``algorithm=`` takes them (``"blocked"`` and
    ``"wgrad_blocked"`` mean the target CPU's register-blocked kernels, dense and
    depthwise); by default every compiled kernel ``auto`` may use (the numpy twins
    compile nothing), forward and weight gradient,
    numbaconv.ndimage's 1-D pass kernels and scipy-order sums, and the input gradient's
    scatter (``col2im``).
    Kernels not yet in numba's disk cache compile in child processes, one per core at a
    time, then load here. ``progress``: a callable given one line of text per kernel.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ._spec import check_choice

    if isinstance(dtypes, (str, type, np.dtype)):
        dtypes = (dtypes,)  # one dtype, not the characters of its name
    if isinstance(algorithms, str):
        algorithms = (algorithms,)
    if algorithms is None:
        uncompiled = {name for name, kernel in list(REGISTRY.items()) if not kernel.compiled}
        algorithms = tuple(a for a in ALGORITHMS[1:] + WEIGHT_GRAD_ALGORITHMS[1:]
                           if a not in _NEVER_FINAL and a not in uncompiled) \
            + algorithm_names(separable.LINES) \
            + algorithm_names(gemm.COL2IM) + algorithm_names(scipy_sums.SCIPY_SUMS)
    choices = ALGORITHMS[1:] + WEIGHT_GRAD_ALGORITHMS[1:] + tuple(REGISTRY)
    algorithms = [check_choice("algorithms[]", name, choices) for name in algorithms]
    pairs = []
    for dtype in dtypes:
        dtype = np.dtype(check_choice("dtypes[]", np.dtype(dtype).name, ("float32", "float64")))
        for name in algorithms:
            if name == "blocked":  # dense and depthwise (and row pairs)
                row_pairs = _row_pair_name(dtype)
                names = [_blocked_name(dtype, out_per_group) for out_per_group in (3, 1)]
                names += [row_pairs] if row_pairs is not None else []
            elif name == "wgrad_blocked":
                names = [_blocked_name(dtype, 3, WEIGHT_GRAD)]
            else:
                names = [name]
            pairs += [(n, dtype) for n in names
                      if (n, dtype) not in pairs and dtype.name in REGISTRY[n].dtypes]
    say = progress or (lambda text: None)
    missing, functions = [], set()
    for name, dtype in pairs:
        kernel = REGISTRY[name]
        # Names of one function and signature (winograd_threads, winograd_serial) compile once.
        compiled = (kernel.function, tuple(typeof(a) for a in kernel.examples(dtype)))
        if compiled not in functions and not _on_disk(kernel, dtype):
            missing.append((name, dtype))
            functions.add(compiled)

    def compile_one(pair):
        start = time.perf_counter()
        _compile_in_child(*pair)
        return time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=max(1, min(len(missing), os.cpu_count() or 1))) as pool:
        for i, ((name, dtype), seconds) in enumerate(zip(missing, pool.map(compile_one, missing))):
            say(f"[{i + 1}/{len(missing)}] compiled {name} {dtype.name} in {seconds:.1f} s")
    for name, dtype in pairs:
        start = time.perf_counter()
        _kernel(name, dtype)
        say(f"ready: {name} {dtype.name} ({time.perf_counter() - start:.2f} s to load)")
    return pairs


# ---- Forks ---------------------------------------------------------------------------------
def _before_fork():
    # A compile running in another thread would leave numba's and LLVM's state half
    # done in the child, which has no such thread: wait for it to finish first.
    global_compiler_lock.acquire()


def _after_fork_in_parent():
    global_compiler_lock.release()


def _after_fork_in_child():
    """Only the forking thread exists here: locks that other threads held stay held, and
    their pending compiles never finish. Start afresh with what is ready."""
    global _forked_after_omp, _launch_lock
    try:  # started by any parallel launch, and by compiling or loading a parallel kernel
        _forked_after_omp = numba.threading_layer() == "omp"
    except ValueError:  # no threading layer started in the parent
        _forked_after_omp = False
    try:
        global_compiler_lock.release()
    except RuntimeError:  # not owned by this thread after all: a new one
        global_compiler_lock._lock = threading.RLock()
    _launch_lock = threading.Lock()
    single_threaded_blas.after_fork()
    CACHE.after_fork()  # the caches' own locks are renewed by _lru


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
