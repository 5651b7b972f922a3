"""Small Keras-style helpers: ``to_categorical`` and ``set_random_seed``."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def to_categorical(y: Any, num_classes: int | None = None, dtype: str = "float32") -> np.ndarray:
    """One-hot encode class ids (Keras ``keras.utils.to_categorical``).

    Args:
        y: integer class ids, any shape (a trailing axis of size 1 is dropped).
        num_classes: number of classes (default: ``max(y) + 1``).
        dtype: dtype of the result.

    Returns:
        ``y.shape + (num_classes,)`` array of zeros and ones.

    Raises:
        ValueError: for negative, fractional or out-of-range ids.
    """
    arr = np.asarray(y)
    if arr.ndim > 1 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.size and (arr.dtype.kind == "f" and not np.all(arr == np.round(arr))):
        raise ValueError("to_categorical expects integer class ids, got fractional values")
    ids = arr.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise ValueError(f"to_categorical expects class ids >= 0, got {ids.min()}")
    n = int(num_classes) if num_classes is not None else (int(ids.max()) + 1 if ids.size else 0)
    if ids.size and ids.max() >= n:
        raise ValueError(f"to_categorical got class id {ids.max()} but num_classes={n}")
    out = np.zeros((*ids.shape, n), dtype=dtype)
    np.put_along_axis(out, ids[..., None], 1, axis=-1)
    return out


def set_random_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and CUDA) at once (Keras ``set_random_seed``).

    With the same seed, building a model, ``fit`` (weights, dropout, shuffling) and ``predict``
    repeat exactly on the same machine and thread count.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
