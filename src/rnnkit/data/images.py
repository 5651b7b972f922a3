"""Images as sequences: readers for idx (MNIST), ``.npz`` and scikit-learn's
``digits.csv.gz``, and conversion of ``[N, H, W(, C)]`` images into sequences:

* ``'rows'``: one step per row, ``[N, H, W*C]``;
* ``'pixels'``: one step per pixel in raster order, ``[N, H*W, C]`` (sequential MNIST);
* ``'permuted'``: pixels in a fixed, seeded permutation (permuted MNIST), saved with
  :class:`PixelPermutation` so evaluation uses the exact same order.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import DataError, name_of, setting
from .io import PathLike_, check_file, iter_lines
from .serialization import JsonSerializable

__all__ = [
    "read_idx",
    "read_npz",
    "read_digits_csv",
    "PixelPermutation",
    "images_to_sequences",
    "SEQUENCE_MODES",
]

SEQUENCE_MODES = ("rows", "pixels", "permuted")
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: PathLike_) -> np.ndarray:
    """Read an idx file (MNIST format), gzipped or not.

    Args:
        path: ``*-ubyte`` or ``*-ubyte.gz`` file.

    Returns:
        The array, e.g. ``uint8 [60000, 28, 28]`` for MNIST training images.
    """
    p = check_file(path)
    with open(p, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    try:
        if gz:
            with gzip.open(p, "rb") as g:
                data = g.read()
        else:
            data = p.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(
            f"cannot decompress ({exc})", path=p, hint="the .gz file is corrupt or truncated"
        ) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(
            f"not an idx file (magic bytes {data[:4].hex(' ')})",
            path=p,
            hint="idx files start with 00 00 <type> <ndim>; pass an MNIST-format file",
        )
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError("idx header is truncated", path=p, hint="re-download the file")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"idx header announces shape {shape} ({expected} bytes of data) but the file holds {len(data) - header}",
            path=p,
            hint="the file is truncated or corrupt: re-download it",
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def read_npz(
    path: PathLike_, images_key: str = "x", labels_key: str | None = "y"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read images (and labels) from an ``.npz`` archive (``allow_pickle=False``).

    Args:
        path: The archive.
        images_key: Name of the image array.
        labels_key: Name of the label array, or ``None``.

    Returns:
        ``(images, labels)``.
    """
    p = check_file(path)
    try:
        archive = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot read npz ({exc})", path=p, hint="pass a file written by numpy.savez"
        ) from None
    with archive:
        keys = list(archive.files)
        for key in (images_key, labels_key):
            if key is not None and key not in keys:
                raise DataError(
                    f"no array {key!r}; arrays are {keys}",
                    path=p,
                    hint=setting(
                        "images_key" if key == images_key else "labels_key",
                        ("<name>", "<name>"),
                        then=" with one of those",
                    ),
                )
        images = archive[images_key]
        labels = archive[labels_key] if labels_key is not None else None
    if labels is not None and len(labels) != len(images):
        raise DataError(
            f"{len(images)} images but {len(labels)} labels", path=p, hint="store one label per image"
        )
    return images, labels


def read_digits_csv(path: PathLike_, image_shape: tuple[int, int] = (8, 8)) -> tuple[np.ndarray, np.ndarray]:
    """Read scikit-learn's ``digits.csv.gz`` (no header; pixel columns then the label).

    Args:
        path: The CSV (plain or ``.gz``).
        image_shape: ``(H, W)``; each row has ``H*W`` pixel values plus a label.

    Returns:
        ``(images uint8 [N, H, W], labels int64 [N])``.
    """
    p = check_file(path)
    n_pix = image_shape[0] * image_shape[1]
    rows: list[list[float]] = []
    for number, line in iter_lines(p):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != n_pix + 1:
            raise DataError(
                f"row has {len(fields)} values, expected {n_pix + 1} ({n_pix} pixels + label)",
                path=p,
                line=number,
                hint=f"check {name_of('image_shape')} or the file",
            )
        try:
            rows.append([float(v) for v in fields])
        except ValueError:
            bad = next(v for v in fields if not _is_float(v))
            raise DataError(
                f"non-numeric value {bad!r}", path=p, line=number, hint="every field must be a number"
            ) from None
    if not rows:
        raise DataError("no rows", path=p, hint="check the file")
    arr = np.asarray(rows)
    images = arr[:, :n_pix].reshape(-1, *image_shape)
    labels = arr[:, n_pix].astype(np.int64)
    if images.min() >= 0 and images.max() <= 255 and np.all(images == np.round(images)):
        images = images.astype(np.uint8)
    return images, labels


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


class PixelPermutation(JsonSerializable):
    """A fixed permutation of pixel positions (permuted sequential MNIST).

    Args:
        num_pixels: Number of pixels ``H*W``.
        seed: Seed of the NumPy generator that draws the permutation.
        order: Explicit permutation (overrides ``seed``; saved so loading never depends on
            the generator's implementation).
    """

    def __init__(self, num_pixels: int, seed: int = 0, order: Sequence[int] | None = None) -> None:
        self.num_pixels = int(num_pixels)
        self.seed = int(seed)
        if order is None:
            perm = np.random.default_rng(self.seed).permutation(self.num_pixels)
        else:
            perm = np.asarray(order, dtype=np.int64)
            if perm.shape != (self.num_pixels,) or not np.array_equal(
                np.sort(perm), np.arange(self.num_pixels)
            ):
                raise DataError(
                    f"order is not a permutation of {self.num_pixels} pixels", hint="re-save the permutation"
                )
        self.order = perm.astype(np.int64)

    def to_config(self) -> dict[str, Any]:
        """Return size, seed and the permutation itself."""
        return {"num_pixels": self.num_pixels, "seed": self.seed, "order": self.order.tolist()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PixelPermutation:
        """Rebuild from :meth:`to_config` output."""
        return cls(config["num_pixels"], config["seed"], config["order"])


def images_to_sequences(
    images: Any,
    mode: str = "rows",
    *,
    permutation: PixelPermutation | None = None,
    seed: int = 0,
    scale: float | None = None,
    channels_last: bool = True,
) -> Tensor:
    """Turn images into float32 sequences.

    Args:
        images: ``[N, H, W]`` or ``[N, H, W, C]`` (``[N, C, H, W]`` with
            ``channels_last=False``) array or tensor.
        mode: ``'rows'`` (``[N, H, W*C]``), ``'pixels'`` (``[N, H*W, C]``) or ``'permuted'``
            (``[N, H*W, C]`` in a fixed random order).
        permutation: For ``'permuted'``: the permutation to use (pass the training one at
            evaluation); default: a new one from ``seed``.
        seed: Seed of the permutation when ``permutation`` is not given.
        scale: Multiply values (e.g. ``1/255``); ``None`` leaves them.
        channels_last: Layout of 4-D input.

    Returns:
        float32 tensor of sequences.
    """
    if mode not in SEQUENCE_MODES:
        raise DataError(f"unknown mode {mode!r}; valid: {SEQUENCE_MODES}", hint="pick one of them")
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images)
    if x.dim() == 4 and not channels_last:
        x = x.permute(0, 2, 3, 1)
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    if x.dim() != 4:
        raise DataError(
            f"images must be [N, H, W] or [N, H, W, C], got shape {tuple(x.shape)}",
            hint="reshape flat images to [N, H, W]",
        )
    x = x.to(torch.float32)
    if scale is not None:
        x = x * scale
    n, h, w, c = x.shape
    if mode == "rows":
        return x.reshape(n, h, w * c).contiguous()
    seq = x.reshape(n, h * w, c)
    if mode == "pixels":
        return seq.contiguous()
    perm = permutation if permutation is not None else PixelPermutation(h * w, seed)
    if perm.num_pixels != h * w:
        raise DataError(
            f"permutation has {perm.num_pixels} pixels, images have {h * w}",
            hint="use the permutation made for these images",
        )
    return seq[:, torch.as_tensor(perm.order)].contiguous()
