"""Keras 3 as a reference for the parity tests: whether it is installed, and the module on the
torch backend (tests that need it skip with a reason otherwise)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import pytest

HAS_KERAS = importlib.util.find_spec("keras") is not None
needs_keras = pytest.mark.skipif(not HAS_KERAS, reason="keras is not installed")


def keras_module() -> Any:
    """``keras``, imported with ``KERAS_BACKEND=torch`` (skips the test on another backend)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        pytest.skip("the Keras comparison needs KERAS_BACKEND=torch")
    return keras
