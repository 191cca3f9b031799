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


#: What ``algorithm="auto"`` may trade for speed: "fast" lets it pick kernels that round
#: differently from the direct sums (Winograd: a few times the direct kernels' rounding
#: error, bounded in the README), "exact" keeps it to kernels that sum the products
#: themselves. Set by ``NUMBACONV_PRECISION`` at import, or ``numbaconv.set_precision``.
PRECISIONS = ("fast", "exact")
_precision = os.environ.get("NUMBACONV_PRECISION", "fast").strip().lower() or "fast"
if _precision not in PRECISIONS:
    raise ValueError(f"NUMBACONV_PRECISION must be one of {PRECISIONS}, got {_precision!r}")


def precision() -> str:
    return _precision


def set_precision(value: str) -> str:
    """Set the process-wide precision (checked by the caller); returns the previous one."""
    global _precision
    previous, _precision = _precision, value
    return previous
