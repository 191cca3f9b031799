"""The opt-in autotuner: time the kernels ``auto`` may run for a layer, once per
(CPU, layer class), and store the fastest on disk for ``auto`` to use from then on.

Why: ``_dispatch.choose``'s rules were measured on a few CPUs; where the balance
between register-blocked direct kernels and BLAS differs (cache sizes, AVX2 vs
AVX-512, another BLAS), timing on the machine itself picks better.

- **Where**: one JSON file per compilation target,
  ``<dir>/autotune-<cpu>-<isa>.json``, with ``<dir>`` = ``$NUMBACONV_AUTOTUNE_DIR``,
  else ``$XDG_CACHE_HOME/numbaconv``, else ``~/.cache/numbaconv``. A target named by
  ``NUMBA_CPU_NAME`` (e.g. haswell on an AVX-512 host) keeps its own file.
- **When**: :func:`numbaconv.autotune` tunes one layer on request.
  ``NUMBACONV_AUTOTUNE=1`` tunes every new layer class on first sight (that call waits
  for the compiles and the timing). Unset, stored choices are used and nothing is timed;
  ``NUMBACONV_AUTOTUNE=0`` ignores them (the rules only).
- **Deterministic**: the file is read once per process; a stored choice is never
  re-timed, so ``auto`` runs the same kernel, and gives the same bits, on every run and
  at every thread count, until :func:`clear` removes the file.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import warnings

import numpy as np

from . import _config, _cpu
from .kernels.registry import FORWARD, REGISTRY, WEIGHT_GRAD

#: Timing rounds; each times every candidate once, interleaved so that a noisy spell on
#: a shared machine hits all of them alike. The median of the rounds is compared.
ROUNDS = 5
#: Another kernel replaces the rule's choice only when it is this much faster: timing
#: noise must not flip a choice the rules got right.
MARGIN = 0.05

_lock = threading.Lock()
_stores: dict = {}  # file -> {layer class -> record}, each file read once per process


def mode() -> str:
    """"tune" (``NUMBACONV_AUTOTUNE=1``), "off" (``=0``) or "use" (unset)."""
    value = os.environ.get("NUMBACONV_AUTOTUNE")
    if value is None or not value.strip():
        return "use"
    return "off" if value.strip().lower() in ("0", "false", "no", "off") else "tune"


def path() -> str:
    """The file holding this compilation target's choices."""
    folder = os.environ.get("NUMBACONV_AUTOTUNE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "numbaconv")
    target = _cpu.target()
    return os.path.join(folder, f"autotune-{target.name}-{target.isa}.json")


def layer_class(spec, computes) -> str:
    """The key choices are stored under: layers that differ only within a power of two
    of channels or output positions share it (their best kernel is the same). Each
    precision setting keeps its own choices."""
    def bucket(n):
        return 1 << max(0, (n - 1).bit_length())

    positions = spec.batch * math.prod(spec.out_size)
    triple = "x".join
    return (f"{computes} {np.dtype(spec.compute_dtype).name} groups={'1' if spec.groups == 1 else 'n'} "
            f"cin/g~{bucket(spec.in_per_group)} cout/g~{bucket(spec.out_per_group)} "
            f"kernel={triple(map(str, spec.kernel))} stride={triple(map(str, spec.stride))} "
            f"dilation={triple(map(str, spec.dilation))} positions~{bucket(positions)} "
            f"precision={_config.precision()}")


def _read(file) -> dict:
    """The choices stored in ``file``: none if there is none yet, or it is unreadable
    (then the rules decide)."""
    try:
        with open(file) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _load() -> dict:
    """This target's choices (read on first use; callers hold ``_lock``)."""
    file = path()
    if file not in _stores:
        _stores[file] = _read(file)
    return _stores[file]


def choice(spec, computes) -> str | None:
    """The kernel ``auto`` runs for ``spec`` by the autotuner, or None to follow the
    rules: tuned now under ``NUMBACONV_AUTOTUNE=1`` if its class is new."""
    current = mode()
    if current == "off":
        return None
    record = tune(spec, computes) if current == "tune" else _record(spec, computes)
    return record["kernel"] if record is not None and record["stored"] else None


def _record(spec, computes) -> dict | None:
    """The stored record for ``spec``'s class, if there is a valid one (a file edited by
    hand, or written by another version, may name a kernel that is not there)."""
    from . import _dispatch

    with _lock:
        record = _load().get(layer_class(spec, computes))
    if not isinstance(record, dict):
        return None
    name = record.get("kernel")
    kernel = REGISTRY.get(name) if isinstance(name, str) else None
    if kernel is None or kernel.computes != computes or not _dispatch.permitted(kernel, spec):
        return None
    return dict(record, stored=True)


def _save(key: str, record: dict) -> None:
    """Add one record: to this process's choices, and to the file, which is read again,
    merged and rewritten whole under a lock (so that processes tuning at once keep each
    other's records), through a temporary file (so a reader never sees half of it). A
    file that cannot be written warns, and the choice holds for this process only."""
    with _lock:
        _load()[key] = record
        file = path()
        try:
            os.makedirs(os.path.dirname(file), exist_ok=True)
            with _file_lock(file):
                store = _read(file)
                store[key] = record
                temporary = f"{file}.{os.getpid()}.tmp"
                with open(temporary, "w") as f:
                    json.dump(store, f, indent=1, sort_keys=True)
                os.replace(temporary, file)
        except OSError as error:
            warnings.warn(f"numbaconv could not store the autotuner's choice in {file} "
                          f"({error}); it holds for this process only", RuntimeWarning,
                          stacklevel=3)


@contextlib.contextmanager
def _file_lock(file):
    """Hold ``file``'s lock file, so that another process's read-merge-write of it waits
    (POSIX ``flock``; where there is none, nothing is locked)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(file + ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clear() -> None:
    """Remove this target's stored choices (the file and what this process read)."""
    with _lock:
        file = path()
        try:
            os.remove(file)
        except FileNotFoundError:
            pass
        _stores[file] = {}


def info() -> dict:
    """The file and its choices."""
    with _lock:
        return {"path": path(), "mode": mode(), "choices": dict(_load())}


def candidates(spec, computes) -> list[str]:
    """The kernels ``auto`` may run for ``spec``: the rules' choice first."""
    from . import _dispatch

    rule = _dispatch.choose(spec, computes)
    if computes == WEIGHT_GRAD:
        names = [rule, "wgrad_direct", _dispatch.blocked_variant(spec, computes), "wgrad_gemm",
                 "wgrad_winograd"]
    else:
        names = [rule, _dispatch.blocked_variant(spec), "gemm", "direct"]
        names.append("winograd")
    fits = spec.plane_bytes <= _dispatch.PLANE_BYTES_LIMIT
    return [n for n in dict.fromkeys(names) if _dispatch.permitted(REGISTRY[n], spec)
            and (fits or not REGISTRY[n].plane_memory)]


def _operands(spec, computes, rng):
    dtype = spec.compute_dtype
    x = rng.standard_normal(spec.in_shape).astype(dtype)
    if computes == WEIGHT_GRAD:
        return (x, rng.standard_normal(spec.out_shape).astype(dtype))
    w6 = rng.standard_normal(spec.group_weight_shape).astype(dtype)
    return (x, w6, np.zeros(spec.out_channels, dtype), np.empty(spec.out_shape, dtype))


def tune(spec, computes=FORWARD, force=False) -> dict:
    """Time the candidates for ``spec`` (compiling them first), store the fastest for its
    class and return the record: the kernel, each candidate's median seconds, when and
    at how many threads. A stored class is returned as it is unless ``force``."""
    from . import _dispatch
    import numba

    record = _record(spec, computes)
    if record is not None and not force:
        return record
    names = candidates(spec, computes)
    if spec.flops < _dispatch.SERIAL_FLOPS or len(names) == 1:
        # Too small to matter, or nothing to choose from: the rule, not stored.
        return {"kernel": names[0], "seconds": {}, "stored": False}
    plans = {n: _dispatch.Plan(spec, n, computes) for n in names}  # compiles them
    operands = _operands(spec, computes, np.random.default_rng(0))
    for plan in plans.values():
        plan.run(*operands)  # first touch of buffers and pages
    samples = {n: [] for n in names}
    for _ in range(ROUNDS):
        for name, plan in plans.items():
            start = time.perf_counter()
            plan.run(*operands)
            samples[name].append(time.perf_counter() - start)
    times = {n: float(np.median(s)) for n, s in samples.items()}
    best = fastest = min(times, key=times.get)
    if times[fastest] >= times[names[0]] * (1 - MARGIN):
        best = names[0]
    record = {"kernel": best, "seconds": times, "threads": numba.get_num_threads(),
              "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    _save(layer_class(spec, computes), record)
    return dict(record, stored=True)
