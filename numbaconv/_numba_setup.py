"""numbaconv's changes to numba's process-wide code generation settings.

numba's defaults cost numbaconv's kernels up to 10x on AVX-512 CPUs: the SLP vectoriser
is off, and LLVM prefers 256-bit vectors and gathers. Before numba compiles anything in
the process, numbaconv therefore (unless told not to):

- turns on SLP vectorisation (``numba.config.SLP_VECTORIZE``);
- on CPUs with AVX-512, sets ``CPU_NAME`` to the host CPU and adds
  ``-prefer-256-bit,+prefer-no-gather,+prefer-no-scatter`` to the host's CPU features.

It also spares the first kernel load scipy.linalg's import (0.13-0.28 s): numba's
``numba.np.arraymath`` asks at import whether scipy's cython BLAS exists by importing
all of ``scipy.linalg``. numbaconv imports that module with the question answered from
the file's presence (the same answer); kernels that call BLAS import scipy's bindings
when they compile or first run, as before.

These settings are process-wide: they also apply to other numba code compiled later in
the same process. Set ``NUMBACONV_TUNE_NUMBA=0`` before importing numbaconv to leave
numba's configuration alone; results are the same, only slower. Settings the user made
through numba's own environment variables (``NUMBA_SLP_VECTORIZE``, ``NUMBA_CPU_NAME``,
``NUMBA_CPU_FEATURES``) are never overridden.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

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
    _import_arraymath_without_scipy_linalg()
    return applied


def _scipy_has_cython_blas() -> bool:
    """Whether scipy's ``linalg.cython_blas`` extension is installed, without importing
    scipy (or anything else)."""
    spec = importlib.util.find_spec("scipy")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        linalg = os.path.join(folder, "linalg")
        if any(os.path.isfile(os.path.join(linalg, "cython_blas" + suffix))
               for suffix in importlib.machinery.EXTENSION_SUFFIXES):
            return True
    return False


def _import_arraymath_without_scipy_linalg() -> None:
    """Import ``numba.np.arraymath`` with its import-time BLAS check (``_HAVE_BLAS``)
    answered by :func:`_scipy_has_cython_blas`, where nothing has imported it yet."""
    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return
    from numba.np import linalg

    def installed_or_import_error():
        if not _scipy_has_cython_blas():
            raise ImportError("scipy 0.16+ is required for linear algebra")

    ensure_blas = linalg.ensure_blas
    linalg.ensure_blas = installed_or_import_error
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        linalg.ensure_blas = ensure_blas
    applied["BLAS_CHECK"] = "from the file, scipy.linalg not imported"
