"""``python -m numbaconv.bench``: see :mod:`numbaconv.bench.cli`."""
import sys

from .cli import main

sys.exit(main())
