"""numbaconv's changes to numba's process-wide code generation settings.

numba's defaults cost numbaconv's kernels up to 10x on AVX-512 CPUs: the SLP vectoriser
is off, and LLVM prefers 256-bit vectors and gathers. Before numba compiles anything in
the process, numbaconv therefore (unless told not to):

- turns on SLP vectorisation (``numba.config.SLP_VECTORIZE``);
- on CPUs with AVX-512, sets ``CPU_NAME`` to the host CPU and adds
  ``-prefer-256-bit,+prefer-no-gather,+prefer-no-scatter`` to the host's CPU features.

These settings are process-wide: they also apply to other numba code compiled later in
the same process. Set ``NUMBACONV_TUNE_NUMBA=0`` before importing numbaconv to leave
numba's configuration alone; results are the same, only slower. Settings the user made
through numba's own environment variables (``NUMBA_SLP_VECTORIZE``, ``NUMBA_CPU_NAME``,
``NUMBA_CPU_FEATURES``) are never overridden.
"""
from __future__ import annotations

import os

import numba

from ._config import env_flag

ENV_SWITCH = "NUMBACONV_TUNE_NUMBA"
_EXTRA_FEATURES = "-prefer-256-bit,+prefer-no-gather,+prefer-no-scatter"

#: What was changed, for ``numbaconv.numba_settings()`` and the tests.
applied: dict = {}


def tuning_enabled() -> bool:
    return env_flag(ENV_SWITCH)


def apply() -> dict:
    """Apply the settings once; return what was changed."""
    if applied or not tuning_enabled():
        return applied
    import llvmlite.binding as llvm

    if "NUMBA_SLP_VECTORIZE" not in os.environ:
        numba.config.SLP_VECTORIZE = 1
        applied["SLP_VECTORIZE"] = 1
    features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" in features.split(",") and not (
        "NUMBA_CPU_NAME" in os.environ or "NUMBA_CPU_FEATURES" in os.environ
    ):
        numba.config.CPU_NAME = llvm.get_host_cpu_name()
        numba.config.CPU_FEATURES = features + "," + _EXTRA_FEATURES
        applied["CPU_NAME"] = numba.config.CPU_NAME
        applied["CPU_FEATURES"] = _EXTRA_FEATURES
    return applied
