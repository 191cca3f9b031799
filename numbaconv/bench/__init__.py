"""``numbaconv.bench``: numbaconv's ``conv3d`` against PyTorch's, in one process.

For every layer of a fixed suite, one ``torch.nn.functional.conv3d`` call and one
``numbaconv.conv3d`` call alternate (after two warm-up calls of each), with the same
number of threads for both, and the medians are compared. The run also measures the
machine's GEMM peak (``torch.mm`` on 2048 x 2048, or numpy's ``@`` without torch; before
and after the suite, the better median counts) so that numbaconv's GFLOP/s can be read
as a fraction of what BLAS reaches, checks numbaconv's output against torch's once per
layer, and measures numbaconv's (and torch's) peak extra memory.

Usage::

    python -m numbaconv.bench                      # the whole suite, a table
    python -m numbaconv.bench --quick              # a, d, g, i, j with fewer repeats
    python -m numbaconv.bench --json --shapes a,c  # one line of JSON on stdout
    python -m numbaconv.bench --dtype float64 --threads 1 --repeats 5
    python -m numbaconv.bench --backward           # input and weight gradients

From Python (notebooks): ``numbaconv.bench.run(...)`` returns the same dict the JSON
holds, and ``numbaconv.bench.format_table(result)`` renders it.

Without torch only numbaconv is timed (torch's columns are None), and the output is
checked at a few hundred sampled output positions against the float64 reference
(``numbaconv.reference``). torch, and tqdm for the progress bar, come with the ``bench``
extra; numbaconv itself needs neither.

Modules: ``suite`` (the layers), ``layer`` (one layer's calls, check and row),
``timing`` (threads, interleaved timing, GEMM peak, peak memory), ``runner`` (``run``),
``report`` (table and JSON), ``cli`` (``main``).
"""
from .cli import main
from .report import format_table
from .runner import run
from .suite import QUICK_SHAPES, SHAPES, Shape

__all__ = ["SHAPES", "QUICK_SHAPES", "Shape", "run", "format_table", "main"]
