"""Fixtures. The helpers that test modules share are in helpers.py (``from helpers
import ...``); this file puts tests/ on sys.path for that."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
