"""numbaconv.ndimage: scipy.ndimage's linear filters for 1-D to 3-D arrays, on numbaconv's
parallel Numba kernels.

The names, signatures and semantics are scipy 1.17's: ``correlate``, ``convolve``,
``correlate1d``, ``convolve1d``, ``gaussian_filter``, ``gaussian_filter1d``,
``uniform_filter``, ``uniform_filter1d``, ``sobel``, ``prewitt``, ``laplace``,
``gaussian_laplace``, ``gaussian_gradient_magnitude``; every boundary mode (reflect,
constant, nearest, mirror, wrap and the grid- aliases), ``cval``, ``origin``, ``axes``,
``output`` as an array or a dtype. Bad arguments raise scipy's exception types.
Complex arrays and arrays of more than 3 dimensions are not supported.

How results relate to scipy's:

- The high-level filters run the same sequence of 1-D passes as scipy, with the same
  intermediate dtype (each pass is written into ``output``: a uint16 output truncates
  between the passes of gaussian_filter, as scipy's does), so exactness reduces to two
  primitives: the 1-D pass and the dense correlation.
- Working precision: a float32 input with a float32 output accumulates in float32 (fast:
  twice the SIMD lanes; the error stays within float32 rounding of scipy's float64
  result, about eps32 * sum|w|*|x|). Everything else accumulates in float64: float64
  input or output, and integer inputs, because scipy computes in double and truncates
  toward zero into integer outputs, where float32 rounding would move values across an
  integer and flip the truncation.
- In float64 the 1-D pass sums in scipy's order (it pairs symmetric and antisymmetric
  taps, like ``NI_Correlate1D``; the uniform filter is scipy's running sum), so integer
  outputs are scipy's, cast as C casts (toward zero; out-of-range values wrap).
- The dense correlation sums the taps in raster order from zero (like ``NI_Correlate``)
  but with fused multiply-adds: an integer output whose sum lies within rounding of an
  integer may truncate one away from scipy's. Kernels of ``FFT_TAPS`` (11^3) or more on
  integer data of up to 16 bits go through the FFT, and every output within a proven
  bound of an integer is summed again in scipy's exact order
  (``numbaconv.kernels.scipy_sums``): those integer outputs are scipy's, bit for bit.
- ``correlate``/``convolve`` with a rank-1 (outer product) kernel run as 1-D passes;
  for integer outputs only when the factors are integers reproducing the weights
  exactly (then every partial sum is exact).

One deliberate difference: scipy's dense ``correlate`` with mode reflect reads outside
the array for halos of 4x the axis length or more (see ``_boundary``); here those
positions get the reflection.
"""
from ._filters import (convolve, convolve1d, correlate, correlate1d, gaussian_filter,
                       gaussian_filter1d, gaussian_gradient_magnitude, gaussian_laplace, laplace,
                       prewitt, sobel, uniform_filter, uniform_filter1d)

__all__ = ["correlate", "convolve", "correlate1d", "convolve1d", "gaussian_filter",
           "gaussian_filter1d", "uniform_filter", "uniform_filter1d", "sobel", "prewitt",
           "laplace", "gaussian_laplace", "gaussian_gradient_magnitude"]
