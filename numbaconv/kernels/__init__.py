"""numbaconv's compiled kernels: plain numerics over C-contiguous arrays and a
:class:`~numbaconv.kernels.geometry.Geometry`; no validation, no Python objects. Each
module declares its kernels in :mod:`numbaconv.kernels.registry`."""
