"""The CPU numba compiles for, and the register-block shapes that fit it.

numba compiles for ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` when they are set (for
example ``NUMBA_CPU_NAME=haswell`` builds AVX2 code on an AVX-512 host), else for the
host. The register-blocked kernels keep a block of accumulators in vector registers;
a block that needs more registers than the target has spills to memory and runs at
half speed or worse, so the block shape is chosen per target and dtype here.
"""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import numpy as np

#: LLVM CPU names (x86) whose features include AVX-512F / AVX2+FMA; any other x86 name
#: is taken as SSE only (conservative: smaller blocks never spill).
_AVX512_CPUS = ("skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
                "icelake-server", "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids",
                "graniterapids", "graniterapids-d", "diamondrapids", "knl", "knm", "znver4",
                "znver5", "x86-64-v4")
_AVX2_CPUS = ("haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake",
              "arrowlake", "arrowlake-s", "lunarlake", "pantherlake", "gracemont", "sierraforest",
              "grandridge", "clearwaterforest", "znver1", "znver2", "znver3", "bdver4",
              "x86-64-v3")


@dataclass(frozen=True)
class Target:
    """What the kernels are compiled for."""

    name: str              # LLVM CPU name
    isa: str               # "avx512", "avx2", "neon" or "sse"
    vector_bytes: int      # width of one vector register
    vector_registers: int  # architectural vector registers
    fma: bool
    source: str            # where the name came from: "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES" or "host"
    l1d_bytes: int | None  # the host's caches (None where they cannot be read)
    l2_bytes: int | None


#: ISA -> (vector bytes, vector registers, FMA)
_ISAS = {"avx512": (64, 32, True), "avx2": (32, 16, True), "neon": (16, 32, True),
         "sse": (16, 16, False)}


def _isa(name: str, features: str) -> str:
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "neon"
    flags = set(features.replace(" ", "").split(","))
    if features:
        if "+avx512f" in flags and "-avx512f" not in flags:
            return "avx512"
        if "+avx2" in flags and "+fma" in flags:
            return "avx2"
        if "-avx512f" in flags and (name in _AVX512_CPUS) and "-avx2" not in flags:
            return "avx2"
    if name in _AVX512_CPUS and "-avx512f" not in flags:
        return "avx512"
    if name in _AVX512_CPUS + _AVX2_CPUS and "-avx2" not in flags:
        return "avx2"
    return "sse"


def _cache_bytes(level: int) -> int | None:
    """The host's data (or unified) cache size at ``level``, from sysfs; None elsewhere."""
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return None
    for entry in entries:
        try:
            with open(f"{root}/{entry}/level") as f:
                if int(f.read()) != level:
                    continue
            with open(f"{root}/{entry}/type") as f:
                if f.read().strip() == "Instruction":
                    continue
            with open(f"{root}/{entry}/size") as f:
                text = f.read().strip()
        except (OSError, ValueError):
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
    return None


@functools.cache
def target() -> Target:
    """The target numba compiles for in this process (read once, after numbaconv's numba
    settings are applied)."""
    import llvmlite.binding as llvm
    import numba

    name = numba.config.CPU_NAME
    features = numba.config.CPU_FEATURES or ""
    if name and name != "host":
        source = "NUMBA_CPU_NAME" if "NUMBA_CPU_NAME" in os.environ else "numbaconv"
    else:
        source = "NUMBA_CPU_FEATURES" if features else "host"
        name = llvm.get_host_cpu_name()
        if not features:
            features = llvm.get_host_cpu_features().flatten()
    isa = _isa(name, features)
    vector_bytes, registers, fma = _ISAS[isa]
    return Target(name=name, isa=isa, vector_bytes=vector_bytes, vector_registers=registers,
                  fma=fma, source=source, l1d_bytes=_cache_bytes(1), l2_bytes=_cache_bytes(2))


# ---- Register blocks ---------------------------------------------------------------------
# A cob x vw forward block holds cob * vw sums: cob * vw * itemsize / vector_bytes
# registers, plus the vw inputs of the current term and a broadcast weight. It must fit
# the register file with room to spare, or LLVM spills the sums to the stack on every
# term. Measured: 8x16 float32 runs at 46 GFLOP/s on AVX2 (Zen 3; 16 ymm of sums, all
# there are), 4x16 at twice that; on AVX-512 8x16 (8 zmm of sums) is the best measured.
#: (ISA, itemsize) -> (dense block cob x vw, depthwise block 1 x vw)
FORWARD_BLOCKS = {
    ("avx512", 4): ((8, 16), (1, 64)),  # 8 + 1 + 1 of 32 zmm; 1x64: 4 zmm of sums
    ("avx512", 8): ((8, 16), (1, 64)),  # 16 + 2 + 1 of 32 zmm; 1x64: 8 zmm
    ("avx2", 4): ((4, 16), (1, 64)),    # 8 + 2 + 1 of 16 ymm; 1x64: 8 ymm
    ("avx2", 8): ((4, 8), (1, 32)),     # 8 + 2 + 1 of 16 ymm; 1x32: 8 ymm
    ("neon", 4): ((4, 16), (1, 64)),    # 16 + 4 + 1 of 32 q registers
    ("neon", 8): ((4, 8), (1, 32)),     # 16 + 4 + 1 of 32
    ("sse", 4): ((4, 8), (1, 32)),      # 8 + 2 + 1 of 16 xmm
    ("sse", 8): ((2, 8), (1, 16)),      # 8 + 4 + 1 of 16
}
# A 1 x vw block's every term loads vw inputs for vw multiply-adds, and the loads bound
# it (Zen 4: 25 GFLOP/s per core in float64, about 60% of the FMA peak). The row-pair
# block keeps two output rows, one row apart, whose taps read the same input rows (at
# stride and dilation 1 along H): each load feeds two multiply-adds. Its 2 * vw sums, vw
# inputs and two weights must fit. Measured only where it pays: AVX-512 (Zen 4, 5^3 on
# 256- and 128-wide planes, 16-22% faster in both dtypes). Compiled for AVX2 on the same
# host, 1 x 32 (float32) gained 4-9% and 1 x 16 (float64) nothing, so other ISAs keep
# the 1 x vw block.
#: (ISA, itemsize) -> row-pair block 1 x vw (x 2 rows)
ROW_PAIR_BLOCKS = {
    ("avx512", 4): (1, 64),  # 8 + 4 + 2 of 32 zmm
    ("avx512", 8): (1, 64),  # 16 + 8 + 2 of 32 zmm
}
# The weight gradient keeps cob output channels x tb taps of LANES (16) partial sums:
# cob * tb * 16 * itemsize / vector_bytes registers, plus cob + tb rows of 16 inputs.
#: (ISA, itemsize) -> (cob, tb)
WEIGHT_GRAD_BLOCKS = {
    ("avx512", 4): (4, 4),  # 16 zmm of sums + 4 + 4 of 32
    ("avx512", 8): (2, 4),  # 16 + 4 + 8 of 32
    ("avx2", 4): (2, 2),    # 8 + 4 + 4 of 16 ymm
    ("avx2", 8): (1, 2),    # 8 + 4 + 8: the loads stream
    ("neon", 4): (2, 2),    # 16 + 8 + 8 of 32
    ("neon", 8): (1, 2),    # 16 + 8 + 16: the loads stream
    ("sse", 4): (1, 2),     # 8 + 4 + 8 of 16: the loads stream
    ("sse", 8): (1, 1),     # 8 + 8 + 8: the loads stream
}


def forward_block(dtype, out_per_group: int) -> tuple[int, int]:
    """(cob, vw) for a layer: the dense block, or the depthwise one for layers with
    1-2 output channels per group (a dense block would compute mostly padding)."""
    dense, depthwise = FORWARD_BLOCKS[target().isa, _itemsize(dtype)]
    return dense if out_per_group >= 3 else depthwise


def row_pair_block(dtype) -> tuple[int, int] | None:
    """The row-pair block (see ``ROW_PAIR_BLOCKS``) for the target CPU, if it has one."""
    return ROW_PAIR_BLOCKS.get((target().isa, _itemsize(dtype)))


def weight_grad_block(dtype) -> tuple[int, int]:
    return WEIGHT_GRAD_BLOCKS[target().isa, _itemsize(dtype)]


def _itemsize(dtype) -> int:
    return np.dtype(dtype).itemsize


def info() -> dict:
    """The target and the block shapes chosen for it, for ``numbaconv.cpu_info()``."""
    t = target()
    blocks = {}
    for name, size in (("float32", 4), ("float64", 8)):
        dense, depthwise = FORWARD_BLOCKS[t.isa, size]
        pairs = row_pair_block(name)
        blocks[name] = {"forward": f"{dense[0]}x{dense[1]}", "depthwise": f"1x{depthwise[1]}",
                        "row_pairs": None if pairs is None else "{}x{} x 2 rows".format(*pairs),
                        "weight_grad": "{}x{}".format(*WEIGHT_GRAD_BLOCKS[t.isa, size])}
    return {"cpu": t.name, "isa": t.isa, "source": t.source, "vector_bits": 8 * t.vector_bytes,
            "vector_registers": t.vector_registers, "fma": t.fma, "l1d_bytes": t.l1d_bytes,
            "l2_bytes": t.l2_bytes, "blocks": blocks,
            "why": "register blocks sized so that the sums, one term's inputs and a weight "
                   "fit the vector registers (see numbaconv/_cpu.py)"}


def variants() -> tuple[tuple, tuple, tuple]:
    """Every (cob, vw) forward, (cob, tb) weight-gradient and (cob, vw) row-pair block of
    the tables (the generated module holds them all; only the target's are compiled)."""
    forward = sorted({b for pair in FORWARD_BLOCKS.values() for b in pair}, reverse=True)
    return (tuple(forward), tuple(sorted(set(WEIGHT_GRAD_BLOCKS.values()), reverse=True)),
            tuple(sorted(set(ROW_PAIR_BLOCKS.values()), reverse=True)))
