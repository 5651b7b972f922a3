"""Small datasets shipped inside the package, for the demo, quick starts and tests.

* ``digits``: 1,797 handwritten digits as 8x8 images (UCI optdigits test set, as shipped by
  scikit-learn under BSD-3; see ``digits.rst``). Read row by row it is an 8-step sequence of 8
  features: the smallest real sequence-classification problem.
"""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images [1797, 8, 8] float32 in [0, 1], labels [1797] int64)``."""
    with resources.files(__package__).joinpath("digits.csv.gz").open("rb") as raw, gzip.open(raw, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = (table[:, :64] / 16.0).reshape(-1, 8, 8)
    labels = table[:, 64].astype(np.int64)
    return images, labels


__all__ = ["load_digits"]
