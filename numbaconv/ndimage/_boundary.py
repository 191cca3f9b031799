"""Extend an array by a halo on each axis, exactly as scipy.ndimage extends lines.

Each rule is a closed formula for the source index of every position ``p`` of the
extended axis (``0 <= p < n`` is the array itself), valid for any halo, including halos
longer than the axis (where scipy's extension is periodic, not numpy.pad's):

- ``reflect`` (scipy's reflect and grid-mirror; numpy.pad's "symmetric"): period 2n,
  ``dcba|abcd|dcba``;
- ``mirror`` (numpy.pad's "reflect"): period 2n - 2, ``dcb|abcd|cba``; an axis of
  length 1 repeats its element (scipy switches to nearest there);
- ``wrap`` (and grid-wrap): period n;
- ``nearest``: the edge element;
- ``constant`` (and grid-constant): ``cval`` (index -1 below).

One known difference: scipy's dense ``correlate`` with reflect reads out of bounds at
positions ``p = -2kn`` for k >= 2 (a halo of 4n or more on an axis of length n; see
``NI_InitFilterOffsets``); there it returns an unspecified value, here the reflection.
"""
from __future__ import annotations

import numpy as np

__all__ = ["source_index", "extend"]


def source_index(n: int, before: int, after: int, rule: str) -> np.ndarray:
    """int64 source index (into an axis of length ``n``) of each of the ``before + n +
    after`` extended positions; -1 where the rule is ``constant`` and outside."""
    p = np.arange(-before, n + after, dtype=np.int64)
    if rule == "constant":
        return np.where((p >= 0) & (p < n), p, -1)
    if rule == "nearest":
        return np.clip(p, 0, n - 1)
    if rule == "wrap":
        return p % n
    if rule == "reflect":
        q = p % (2 * n)
        return np.where(q < n, q, 2 * n - 1 - q)
    if rule == "mirror":
        if n == 1:
            return np.zeros_like(p)
        q = p % (2 * n - 2)
        return np.where(q < n, q, 2 * n - 2 - q)
    raise ValueError(f"unknown extension rule {rule!r}")


def extend(x: np.ndarray, halos, rules, cval: float, dtype) -> np.ndarray:
    """A new C-contiguous array of ``dtype``: ``x`` (any ndim, any layout and dtype)
    with ``halos[a] = (before, after)`` elements added on axis ``a`` by ``rules[a]``.

    The array is copied once; then each axis' halo slabs are filled from the part
    already filled (earlier axes extended, later ones not yet), so corners come out
    as the per-axis formulas compose, as in scipy.
    """
    shape = tuple(n + b + a for n, (b, a) in zip(x.shape, halos))
    out = np.empty(shape, dtype)
    interior = tuple(slice(b, b + n) for n, (b, _) in zip(x.shape, halos))
    with np.errstate(invalid="ignore", over="ignore"):
        out[interior] = x
    cval = np.asarray(cval, dtype=np.float64).astype(dtype)
    for axis, (n, (before, after), rule) in enumerate(zip(x.shape, halos, rules)):
        if before == 0 and after == 0:
            continue
        # Axes before this one are already extended, later ones are still the interior.
        region = [slice(None)] * axis + [None] + list(interior[axis + 1:])
        index = source_index(n, before, after, rule)
        for positions in (np.arange(before), np.arange(before + n, before + n + after)):
            if positions.size == 0:
                continue
            src = index[positions]
            region[axis] = slice(positions[0], positions[-1] + 1)
            target = out[tuple(region)]
            if rule == "constant":
                target[...] = cval
            else:
                region_src = list(region)
                region_src[axis] = src + before
                target[...] = out[tuple(region_src)]
    return out
