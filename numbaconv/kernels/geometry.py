"""What a kernel knows about its convolution besides the arrays' shapes.

:class:`Geometry` names the values, so kernels read ``geo.stride_h`` rather than an
index into a vector. Kernels are called with the values as an int64 array (numba types
an array argument in C, a tuple in Python: the array saves about 2 us per call) and
:func:`unpack` it into a ``Geometry`` on entry: a tuple of values, which LLVM keeps in
registers and no store can alias. ``ConvSpec.geometry`` makes it; nothing else computes
these values.
"""
from typing import NamedTuple

import numpy as np
from numba import njit


class Geometry(NamedTuple):
    """Per axis (D, H, W): stride, padding before and after, dilation, kernel size; and
    the layout of one zero-bordered input plane.

    The stride is 1 on an axis with one output position (it never applies there, and a
    huge one would otherwise size the kernels' buffers). A plane is split by H- and
    W-stride phase (see ``kernels.direct.fill_padded_planes``) into ``stride_h *
    stride_w`` phases of ``phase_h`` rows of ``phase_w`` padded columns, each row
    ``row_pitch`` (= ``phase_w``) apart: consecutive output rows read consecutive rows of
    a phase. ``plane_size`` in all.
    """

    stride_d: int
    stride_h: int
    stride_w: int
    pad_d: int
    pad_h: int
    pad_w: int
    pad_after_d: int
    pad_after_h: int
    pad_after_w: int
    dilation_d: int
    dilation_h: int
    dilation_w: int
    kernel_d: int
    kernel_h: int
    kernel_w: int
    phase_w: int
    phase_h: int
    row_pitch: int
    plane_size: int


FIELDS = len(Geometry._fields)


@njit(cache=True, inline="always")
def unpack(array):
    """The :class:`Geometry` held in an int64 array (see :func:`pack`)."""
    return Geometry(array[0], array[1], array[2], array[3], array[4], array[5], array[6],
                    array[7], array[8], array[9], array[10], array[11], array[12], array[13],
                    array[14], array[15], array[16], array[17], array[18])


def pack(geometry: Geometry) -> np.ndarray:
    """What kernels are called with: the values as an int64 array."""
    return np.array(geometry, np.int64)


#: A geometry of the right type, for compiling kernels ahead of a call.
EXAMPLE = pack(Geometry(*([1] * FIELDS)))
