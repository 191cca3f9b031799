"""numbaconv's changes to numba's process-wide settings: documented, switchable, and
the results are right either way."""
import os

import numba

import numbaconv  # noqa: F401  (applies the settings)
from numbaconv import _numba_setup
from helpers import describe, last_json, python_env, run_script

_SCRIPT = r"""
import json
import numpy as np
import numba
import numbaconv as nc
from numbaconv.reference import conv3d_reference
rng = np.random.default_rng(0)
worst = 0.0
for algorithm in ("direct", "tiny"):
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((2, 4, 6, 7, 8)).astype(dtype)
        w = rng.standard_normal((6, 2, 3, 2, 3)).astype(dtype)
        args = dict(stride=(1, 2, 1), padding=(1, 0, 2), dilation=(2, 1, 1), groups=2)
        out = nc.conv3d(x, w, algorithm=algorithm, **args)
        ref = conv3d_reference(x, w, **args)
        worst = max(worst, float(np.abs(out - ref).max() / np.abs(ref).max()))
print(json.dumps({"worst": worst, "slp": numba.config.SLP_VECTORIZE,
                  "cpu_name": numba.config.CPU_NAME, "applied": nc.numba_settings()}))
"""


def test_settings_are_reported():
    applied = numbaconv.numba_settings()
    assert applied == _numba_setup.applied
    if _numba_setup.tuning_enabled() and "NUMBA_SLP_VECTORIZE" not in os.environ:
        assert numba.config.SLP_VECTORIZE == 1 and applied["SLP_VECTORIZE"] == 1


def test_switched_off_leaves_numba_alone_and_is_still_correct(tmp_path):
    env = python_env(NUMBACONV_TUNE_NUMBA="0", NUMBACONV_BACKGROUND_COMPILE="0",
                     NUMBA_SLP_VECTORIZE=None, NUMBA_CPU_NAME=None, NUMBA_CPU_FEATURES=None)
    done = run_script(tmp_path, _SCRIPT, env=env)
    assert done.returncode == 0, describe(done)
    result = last_json(done)
    assert result["applied"] == {}
    assert result["slp"] == 0 and result["cpu_name"] is None  # numba's own defaults
    assert result["worst"] < 1e-5


def test_the_code_generator_uses_the_settings(tmp_path):
    """numba reads its settings when it sets its code generator up, once: the settings
    must be applied before any numbaconv module touches numba's target. The compiled
    code's target (what the disk cache is keyed on) carries them, in a fresh process,
    however numbaconv is imported."""
    source = """
        import json
        import numbaconv.kernels.geometry  # a submodule first, as `python -m numbaconv._compile` does
        import numbaconv as nc
        from numba.core.registry import cpu_target
        name, features = cpu_target.target_context.codegen().magic_tuple()[1:]
        print(json.dumps({"applied": nc.numba_settings(), "name": name, "features": features}))
    """
    done = run_script(tmp_path, source, env=python_env(NUMBA_CPU_NAME=None, NUMBA_CPU_FEATURES=None))
    assert done.returncode == 0, describe(done)
    result = last_json(done)
    if "CPU_FEATURES" in result["applied"]:
        assert result["features"].endswith(result["applied"]["CPU_FEATURES"])
        assert result["name"] == result["applied"]["CPU_NAME"]


def test_kernels_load_without_importing_scipy_linalg(tmp_path):
    """numba's first kernel load imports ``numba.np.arraymath``, whose BLAS check would
    import all of scipy.linalg (0.13-0.28 s) for kernels that never call BLAS. The check
    gets the same answer without it, and BLAS still works where it is needed: numba's
    own ``np.dot`` and numbaconv's GEMM kernel, in the same process."""
    source = """
        import json, sys
        import numpy as np
        import numba
        import numbaconv as nc
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, 4, 6, 6, 6)).astype(np.float32)
        w = rng.standard_normal((4, 4, 3, 3, 3)).astype(np.float32)
        direct = nc.conv3d(x, w, padding=1, algorithm="direct")
        after_direct = "scipy.linalg" in sys.modules
        import numba.np.arraymath
        have_blas = numba.np.arraymath._HAVE_BLAS

        @numba.njit
        def product(a, b):
            return np.dot(a, b)

        a = rng.standard_normal((3, 5))
        dot_error = float(np.abs(product(a, a.T) - a @ a.T).max())
        gemm_error = float(np.abs(nc.conv3d(x, w, padding=1, algorithm="gemm") - direct).max())
        print(json.dumps({"after_direct": after_direct, "have_blas": have_blas,
                          "dot_error": dot_error, "gemm_error": gemm_error,
                          "applied": nc.numba_settings()}))
    """
    done = run_script(tmp_path, source, env=python_env(NUMBACONV_BACKGROUND_COMPILE="0"))
    assert done.returncode == 0, describe(done)
    result = last_json(done)
    if _numba_setup.tuning_enabled():
        assert "BLAS_CHECK" in result["applied"]
        assert result["after_direct"] is False
    assert result["have_blas"] is True
    assert result["dot_error"] < 1e-12 and result["gemm_error"] < 1e-4
