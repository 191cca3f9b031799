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
