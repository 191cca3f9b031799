"""Argument normalisation and validation for numbaconv.ndimage, in one place.

Every check raises the exception type scipy.ndimage raises for the same bad input
(scipy 1.17's ``_ni_support.py`` and ``_filters.py``), with a message naming the
argument. Nothing here computes a filter.
"""
from __future__ import annotations

import numbers
import operator
from collections.abc import Iterable

import numpy as np
from numpy.lib.array_utils import normalize_axis_index

#: scipy's boundary mode names -> the one extension rule each means for a filter
#: (scipy maps grid-mirror to reflect, grid-wrap to wrap and grid-constant to constant;
#: tests/test_ndimage.py checks this against scipy, also for the dense correlate).
RULES = {
    "reflect": "reflect", "grid-mirror": "reflect",
    "mirror": "mirror",
    "nearest": "nearest",
    "wrap": "wrap", "grid-wrap": "wrap",
    "constant": "constant", "grid-constant": "constant",
}

__all__ = ["RULES", "rule", "normalize_sequence", "check_axes", "axis_index", "check_origin",
           "check_cval", "check_size", "get_output", "work_dtype", "as_float64_weights",
           "reject_complex", "check_array_dtype"]


def rule(mode) -> str:
    """The extension rule of one mode name (RuntimeError like scipy's if unknown)."""
    if isinstance(mode, str) and mode in RULES:
        return RULES[mode]
    raise RuntimeError(f"boundary mode not supported: mode={mode!r}; expected one of "
                       f"{sorted(RULES)}")


def normalize_sequence(value, rank: int, name: str = "argument") -> list:
    """``value`` repeated ``rank`` times, or a sequence of exactly ``rank`` items
    (RuntimeError otherwise, as scipy)."""
    if not isinstance(value, str) and np.iterable(value):
        values = list(value)
        if len(values) != rank:
            raise RuntimeError(f"sequence argument must have length equal to input rank: "
                               f"{name} has {len(values)} items, expected {rank}")
        return values
    return [value] * rank


def check_axes(axes, ndim: int) -> tuple:
    """``axes`` as a tuple of distinct non-negative ints (ValueError/TypeError as scipy)."""
    if axes is None:
        return tuple(range(ndim))
    if np.isscalar(axes):
        axes = (operator.index(axes),)
    elif isinstance(axes, Iterable):
        axes = tuple(operator.index(ax) for ax in axes)
        for ax in axes:
            if ax < -ndim or ax > ndim - 1:
                raise ValueError(f"axes: specified axis {ax} is out of range for {ndim} dims")
        axes = tuple(ax % ndim for ax in axes)
    else:
        raise ValueError("axes must be an integer, iterable of integers, or None")
    if len(set(axes)) != len(axes):
        raise ValueError(f"axes must be unique, got {axes}")
    return axes


def axis_index(axis, ndim: int) -> int:
    """One axis as a non-negative int (numpy's AxisError, a ValueError, as scipy)."""
    return normalize_axis_index(operator.index(axis), ndim)


def check_origin(origin, length: int, name: str = "origin") -> int:
    """An origin for a filter of ``length`` taps: scipy's range
    ``-(length // 2) <= origin <= (length - 1) // 2`` (ValueError otherwise, also for a
    float outside it), then an integer (TypeError otherwise: scipy's C layer)."""
    if origin < -(length // 2) or origin > (length - 1) // 2:
        raise ValueError(f"Invalid origin; {name}={origin} must satisfy "
                         f"-({length} // 2) <= origin <= ({length} - 1) // 2")
    return operator.index(origin)


def check_cval(cval) -> float:
    """``cval`` as the float scipy's C layer reads (TypeError for what is not a real
    number: a string, a complex number, None)."""
    if isinstance(cval, (str, bytes, complex, np.complexfloating)) or not (
            isinstance(cval, numbers.Real) or hasattr(cval, "__float__") or hasattr(cval, "__index__")):
        raise TypeError(f"cval must be a real number, not {type(cval).__name__}")
    return float(cval)


def check_size(size, name: str = "size") -> int:
    """A 1-D filter's size: at least 1 (RuntimeError, as scipy's), and an integer
    (TypeError, as scipy's C layer; the n-D filters take ``int()`` of each size)."""
    if size < 1:
        raise RuntimeError(f"incorrect filter size: {name}={size} must be >= 1")
    return operator.index(size)


def get_output(output, inp: np.ndarray) -> np.ndarray:
    """The output array as scipy's ``_get_output`` makes it: None -> zeros of the input's
    dtype; a dtype, type or dtype string -> zeros of it; an array -> itself (its shape
    must be the input's). Then both dtypes are checked (:func:`check_array_dtype`)."""
    if output is None:
        output = np.zeros(inp.shape, dtype=inp.dtype.name)
    elif isinstance(output, (type, np.dtype)):
        output = np.zeros(inp.shape, dtype=output)
    elif isinstance(output, str):
        dtype = np.dtype(output)
        if not issubclass(dtype.type, np.number):
            raise RuntimeError(f"output must have numeric dtype, got output={output!r}")
        output = np.zeros(inp.shape, dtype=dtype)
    else:
        output = np.asarray(output)
        if output.shape != inp.shape:
            raise RuntimeError(f"output shape not correct: output has shape {output.shape}, "
                               f"input {inp.shape}")
    if output.dtype.kind == "c":  # scipy's only for complex input or weights, refused here
        raise RuntimeError(f"output array type {output.dtype} not supported: numbaconv.ndimage "
                           f"filters real arrays into real outputs")
    # After the output is made, as scipy's C code checks both (a string input has
    # already failed above, as scipy's, making its output).
    check_array_dtype(inp.dtype, "input")
    check_array_dtype(output.dtype, "output")
    return output


def work_dtype(input_dtype, output_dtype) -> np.dtype:
    """The precision a pass accumulates in: float32 only when both the input and the
    output are float32, float64 otherwise (see the package docstring for why)."""
    f32 = np.dtype(np.float32)
    if np.dtype(input_dtype) == f32 and np.dtype(output_dtype) == f32:
        return f32
    return np.dtype(np.float64)


def as_float64_weights(weights) -> np.ndarray:
    """Weights as scipy converts them (float64; complex is rejected elsewhere)."""
    return np.asarray(weights, dtype=np.float64)


def check_array_dtype(dtype, name: str) -> None:
    """scipy.ndimage filters bool, integer and float32/float64 arrays (and complex ones,
    which :func:`reject_complex` and :func:`get_output` turn away here); it refuses an
    input or output of any other dtype (object, float128, datetime64, strings, ...) with
    RuntimeError, and so does numbaconv.ndimage: such arrays were read through a float64
    cast that made NaN of objects and dropped float128's extra bits. float16, which scipy
    also refuses, is taken: summed in float64 and stored as numpy casts."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biuc" or dtype in (np.float16, np.float32, np.float64):
        return
    raise RuntimeError(f"{name} array type {dtype!r} not supported: numbaconv.ndimage, as "
                       f"scipy.ndimage, filters bool, integer and float32/float64 arrays")


def reject_complex(*arrays) -> None:
    """numbaconv.ndimage computes real arrays only (scipy also takes complex ones)."""
    for array in arrays:
        if np.asarray(array).dtype.kind == "c":
            raise TypeError("complex input or weights are not supported by numbaconv.ndimage "
                            "(use scipy.ndimage for complex arrays)")
