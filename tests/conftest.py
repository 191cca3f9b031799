"""Fixtures. The helpers that test modules share are in helpers.py (``from helpers
import ...``); this file puts tests/ on sys.path for that."""
import atexit
import os
import shutil
import sys
import tempfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

# The autotuner's choices on this machine must not change which kernels the tests run:
# the tests (and the interpreters they start) read an empty folder of their own, and
# tune only where a test asks for it.
os.environ["NUMBACONV_AUTOTUNE_DIR"] = tempfile.mkdtemp(prefix="numbaconv-autotune-")
atexit.register(shutil.rmtree, os.environ["NUMBACONV_AUTOTUNE_DIR"], ignore_errors=True)
os.environ.pop("NUMBACONV_AUTOTUNE", None)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
