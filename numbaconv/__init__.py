"""numbaconv: MegEngine's Conv3d on parallel Numba kernels, for the CPU."""
from ._dispatch import CACHE as _CACHE, warmup
from . import functional as _functional
from .functional import autotune, conv3d, conv3d_backward, conv_transpose3d, conv_transpose3d_backward
from .module import Conv3d, ConvTranspose3d

__version__ = "0.1.0"


def kernel_cache_info() -> dict:
    """The compiled kernels held, least recently used first: each entry's algorithm,
    dtype, whether it is ready (it may be compiling in the background) and the seconds
    its compile or disk-cache load took; the hit and miss counts; the total compile
    seconds (summed over threads: background compiles overlap the caller's work)."""
    return _CACHE.info()


def numba_settings() -> dict:
    """What numbaconv changed in numba's process-wide configuration (empty when
    ``NUMBACONV_TUNE_NUMBA=0``); see the README."""
    from . import _numba_setup
    return dict(_numba_setup.applied)


def cpu_info() -> dict:
    """The CPU numba compiles for (``NUMBA_CPU_NAME`` when set, else the host): its ISA,
    vector width and registers, caches, and the register-block shapes numbaconv picked
    for it per dtype, with the reason."""
    from . import _cpu
    return _cpu.info()


def autotune_info() -> dict:
    """The autotuner's file for the target CPU (``path``), whether it tunes, uses or
    ignores stored choices (``mode``, from ``NUMBACONV_AUTOTUNE``), and the choices
    stored: layer class -> kernel and the seconds measured."""
    from . import _autotune
    return _autotune.info()


def clear_autotune() -> None:
    """Remove the target CPU's stored autotuner choices; ``auto`` follows its rules
    again (call plans made from the choices are dropped too)."""
    from . import _autotune
    _autotune.clear()
    _functional.clear_plans()


def set_precision(precision: str) -> str:
    """What ``algorithm="auto"`` may trade for speed, process-wide; returns the previous
    setting. ``"fast"`` (the default) lets it pick Winograd for 3x3x3 stride-1 layers
    (float32 error within 1e-5 * max|y|, see the README); ``"exact"`` keeps it to kernels
    that sum every product directly. Forced algorithms are not affected. The environment
    variable ``NUMBACONV_PRECISION`` sets it at import."""
    from . import _config
    from ._spec import check_choice
    previous = _config.set_precision(check_choice("precision", precision, _config.PRECISIONS,
                                                  case_sensitive=False))
    _functional.clear_plans()  # plans made before hold the other setting's choices
    return previous


def get_precision() -> str:
    """The current precision setting ("fast" or "exact"), see :func:`set_precision`."""
    from . import _config
    return _config.precision()


def clear_kernel_cache() -> None:
    """Forget every compiled kernel and call plan, and reset the counts."""
    _functional.clear_plans()
    _CACHE.clear()


__all__ = ["conv3d", "autotune", "autotune_info", "clear_autotune", "set_precision", "get_precision", "conv3d_backward", "conv_transpose3d", "conv_transpose3d_backward", "Conv3d", "ConvTranspose3d", "warmup", "numba_settings", "kernel_cache_info", "cpu_info", "clear_kernel_cache", "__version__"]
