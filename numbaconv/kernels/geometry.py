"""What a kernel knows about its convolution besides the arrays' shapes.

:class:`Geometry` is a named tuple of int64 that numba passes by value, so kernels read
``geo.stride_h`` rather than an index into a vector, and LLVM sees constants that no
store can alias. ``ConvSpec.geometry`` makes it; nothing else computes these values.
"""
from typing import NamedTuple


class Geometry(NamedTuple):
    """Per axis (D, H, W): stride, padding before and after, dilation, kernel size; and
    the layout of one zero-bordered input plane.

    The stride is 1 on an axis with one output position (it never applies there, and a
    huge one would otherwise size the kernels' buffers). A plane is split by W-stride
    phase (see ``kernels.direct.fill_padded_planes``): ``phase_w`` padded columns per
    phase, ``row_pitch = stride_w * phase_w`` per padded row, ``plane_size`` in all.
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
    row_pitch: int
    plane_size: int


#: A geometry of the right type, for compiling kernels ahead of a call.
EXAMPLE = Geometry(*([1] * 18))
