"""The kernel registry: every kernel declared once, beside its code.

A :class:`Kernel` says what a compiled function computes, how to compile it (example
arguments) and how to launch it (packing, slabs, chunks), and what it needs and
guarantees. The dispatcher (``numbaconv._dispatch``) only chooses among the entries,
compiles them through its cache and launches them; a new kernel family is one
:func:`register` call beside its code, plus a rule in ``_dispatch.choose``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .geometry import EXAMPLE as EXAMPLE_GEOMETRY

#: What a kernel computes. The input gradient is a forward convolution (of the
#: zero-stuffed grad_output with the flipped weight), so it runs on forward kernels.
FORWARD = "forward"
WEIGHT_GRAD = "weight_grad"


@dataclass(frozen=True)
class Kernel:
    """One compiled kernel and what the dispatcher needs to know about it.

    ``launch(run, spec, *operands)`` prepares the kernel's arguments from a
    ``ConvSpec`` and the operands and calls ``run(*arguments)``, which runs the
    compiled kernel. Operands: forward ``(x, w6, bias, out)`` (x, out: C-contiguous
    (N, C, D, H, W) in the compute dtype; w6: (G, Cout/G, Cin/G, kD, kH, kW); bias:
    (Cout,)), writing ``out``; weight gradient ``(x, grad_out)``, returning the
    gradient (G, Cout/G, Cin/G, kD, kH, kW).
    """

    name: str
    computes: str
    #: The numba dispatcher, or "module:attribute" to import it on first compile.
    function: object
    #: ``examples(dtype)``: arguments whose types the kernel is compiled for.
    examples: Callable
    launch: Callable
    description: str
    #: False for kernels outside numba's parallel layer: on the calling thread, or run in
    #: parts on Python threads (kernels/parts.py), which also work in a process forked
    #: after OpenMP started.
    parallel: bool = True
    #: Copies zero-bordered input planes: memory grows with the padding.
    plane_memory: bool = False
    #: Kernels in the same class give the same bits for the same spec (None: rounding only).
    bitwise: str | None = "direct"
    #: A kernel outside numba's parallel layer (``parallel=False``) to use where parallel
    #: ones can't run (a process forked after OpenMP started).
    serial: str | None = None
    #: Kernels with the same bits that compile faster, best first: ``auto`` serves
    #: from them while this one compiles in the background.
    fallbacks: tuple = ()
    #: Calls BLAS inside its parallel loop: BLAS must run single-threaded meanwhile.
    blas: bool = False
    #: The family this kernel is one shape of (e.g. "blocked"): users name the family,
    #: and the dispatcher picks the shape that fits the target CPU.
    variant_of: str | None = None
    #: ``supports(spec)``: None if the kernel computes ``spec``, else why not (kernels
    #: for some layers only; None here means every layer).
    supports: Callable | None = None
    #: Sums every product itself (rounding as any order of the direct sums). False for
    #: transform methods, which ``auto`` runs only under ``set_precision("fast")``.
    direct_sums: bool = True
    #: Its dot products run over margin positions, where grad_output's "wide" rows hold
    #: zeros and the input holds values of other positions (the direct weight
    #: gradients): zero times an Inf there is NaN.
    sums_margins: bool = False
    #: Leaves out products with a zero factor (padding) that the kernels of its bits
    #: make: 0 x Inf is NaN in those, so it serves only finite operands (``wgrad_tiny``).
    skips_zero_products: bool = False
    #: The compute dtypes it is compiled for (``examples``' argument).
    dtypes: tuple = ("float32", "float64")
    #: False for a plain Python function (the BLAS kernels' numpy twins): nothing to
    #: compile, so ``warmup`` passes it by.
    compiled: bool = True

    @property
    def nonfinite_operands(self) -> int:
        """How many leading operands a NaN or Inf in which can reach outputs whose sums
        never read it: both a transform mixes (the input and the weight or grad_output),
        the input alone for margins (multiplied by grad_output's zeros); 0 for none."""
        return 2 if not self.direct_sums else 1 if self.sums_margins else 0

    @property
    def spreads_nonfinite(self) -> bool:
        return self.nonfinite_operands > 0

    def dispatcher(self):
        """The numba dispatcher (imported now if it was declared by name)."""
        if isinstance(self.function, str):
            module, attribute = self.function.split(":")
            return getattr(importlib.import_module(module), attribute)
        return self.function


REGISTRY: dict[str, Kernel] = {}


def register(**fields) -> Kernel:
    """Declare a kernel (the fields of :class:`Kernel`)."""
    kernel = Kernel(**fields)
    if kernel.name in REGISTRY:
        raise ValueError(f"kernel {kernel.name!r} is declared twice")
    REGISTRY[kernel.name] = kernel
    return kernel


#: Functions that declare a kernel from its name when it is first asked for (kernels of
#: more dtype combinations than are worth declaring up front): each returns the
#: :class:`Kernel`, or None for a name it does not know.
_DECLARERS: list = []


def declares_by_name(declare: Callable) -> Callable:
    """Register ``declare(name)`` (a decorator) with :func:`kernel_named`."""
    _DECLARERS.append(declare)
    return declare


def kernel_named(name: str) -> Kernel:
    """``REGISTRY[name]``, declared now if a declarer knows the name (as in a child
    process compiling a kernel its parent declared on demand)."""
    kernel = REGISTRY.get(name)
    for declare in _DECLARERS:
        if kernel is not None:
            break
        kernel = declare(name)
    if kernel is None:
        raise KeyError(f"no kernel is declared as {name!r}")
    return kernel


def algorithm_names(computes: str) -> tuple[str, ...]:
    """What ``algorithm=`` takes for ``computes``: each kernel, or its family's name."""
    # A copy: another thread may declare a kernel by name meanwhile.
    found = [k.variant_of or k.name for k in list(REGISTRY.values()) if k.computes == computes]
    return tuple(dict.fromkeys(found))


# ---- Shared pieces of declarations -----------------------------------------------------
def called_directly(caller: str) -> Callable:
    """The ``launch`` of a kernel that ``caller`` runs itself, outside the dispatcher's
    plans (registered so that ``warmup`` compiles it)."""
    def launch(run, spec, *operands):
        raise TypeError(f"{caller} calls this kernel directly, not through a plan")
    return launch


def in_python(function: Callable) -> Callable:
    """An njit function's Python original, for calls from Python code (plan rules, numpy
    twins) that should not compile it; under ``NUMBA_DISABLE_JIT=1`` njit returns the
    function as it is, and this returns it too."""
    return getattr(function, "py_func", function)


def readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array``. Kernels' inputs are compiled as read-only arrays
    and launched as such, so every call matches a compiled signature exactly: numba
    never compiles a second specialisation behind the cache's back."""
    if not array.flags.writeable:
        return array
    view = array.view()
    view.flags.writeable = False
    return view


def example_arrays(dtype, *ndims, outputs=1):
    """Zero arrays of ``dtype`` with ``ndims`` dimensions, all read-only but the last
    ``outputs``, followed by a geometry: a kernel's example arguments."""
    arrays = [np.zeros((1,) * nd, dtype) for nd in ndims]
    for array in arrays[:len(arrays) - outputs]:
        array.flags.writeable = False
    return (*arrays, EXAMPLE_GEOMETRY)
