"""Process-wide settings in one place: environment switches and cache sizes."""
from __future__ import annotations

import os

#: Values of an environment switch that mean "off" (compared lower-cased, stripped).
_OFF = ("0", "false", "no", "off")

#: Call plans of recent ``conv3d`` calls, keyed on the arguments' shapes and types.
CALL_PLANS = 256
#: Plans per (spec, algorithm): chosen kernels and tiers, shared by every entry point.
SPEC_PLANS = 256
#: Compiled kernels, keyed on (kernel name, dtype).
KERNELS = 64
#: numbaconv.dask: task-thread counts per distributed worker host.
DASK_HOSTS = 64


def env_flag(name: str, default: bool = True) -> bool:
    """The boolean environment switch ``name``: "0", "false", "no" and "off" (any case)
    turn it off, any other value on; unset means ``default``."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in _OFF
