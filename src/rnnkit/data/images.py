"""Images as sequences: readers for idx (MNIST), ``.npz``, scikit-learn's ``digits.csv.gz``
and folders of picture files (one subfolder per class), and conversion of ``[N, H, W(, C)]`` images into sequences:

* ``'rows'``: one step per row, ``[N, H, W*C]``;
* ``'pixels'``: one step per pixel in raster order, ``[N, H*W, C]`` (sequential MNIST);
* ``'permuted'``: pixels in a fixed, seeded permutation (permuted MNIST), saved with
  :class:`PixelPermutation` so evaluation uses the exact same order.
"""

from __future__ import annotations

import gzip
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import DataError, name_of, setting
from .io import PathLike_, check_file, is_number, iter_lines
from .serialization import JsonSerializable

__all__ = [
    "read_idx",
    "read_npz",
    "read_digits_csv",
    "read_picture",
    "read_image_folder",
    "picture_files",
    "natural_key",
    "PICTURE_SUFFIXES",
    "PixelPermutation",
    "images_to_sequences",
    "SEQUENCE_MODES",
]

SEQUENCE_MODES = ("rows", "pixels", "permuted")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# colour mode of a picture per channel count: grey, RGB, RGB with alpha
PICTURE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
# Pillow modes with one colour band (an alpha band, as in "LA", is dropped)
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
# EXIF orientation -> the transpose that shows the picture upright (as Pillow's ImageOps.exif_transpose)
_ORIENTATION_FIXES = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
                      7: "TRANSVERSE", 8: "ROTATE_90"}
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
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":  # NumPy would take another file for a pickle and say it holds object data
        raise DataError(
            "not an npz archive (it does not start with the zip signature)",
            path=p,
            hint="pass a file written by numpy.savez",
        )
    try:
        archive = np.load(p, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"cannot read npz ({exc})", path=p, hint="pass a complete file written by numpy.savez"
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
    for key, array in ((images_key, images), (labels_key, labels)):
        if array is not None and array.ndim == 0:  # len() of a 0-d array raises a TypeError
            raise DataError(f"array {key!r} is a single value, not one {'image' if key == images_key else 'label'} "
                            "per row", path=p, hint="store an array with one row per image")
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
            bad = next(v for v in fields if not is_number(v))
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


def picture_files(folder: PathLike_, recursive: bool = True) -> list[Path]:
    """Picture files (PNG, JPEG, BMP, GIF, TIFF, WebP) in ``folder`` (and its subfolders), sorted by path;
    hidden files (``.name``) are skipped."""
    root = Path(folder)
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        q for q in found
        if q.suffix.lower() in PICTURE_SUFFIXES and q.is_file()
        and not any(part.startswith(".") for part in q.relative_to(root).parts)
    )


def _pillow(path: Path) -> Any:
    """Pillow's ``Image`` module, or a one-line error saying how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError(
            "reading picture files needs the Pillow package", path=path, hint="pip install 'rnnkit[image]'"
        ) from None
    return Image


def _open_picture(path: Path) -> Any:
    Image = _pillow(path)
    try:
        return Image.open(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read the picture ({exc})", path=path, hint="remove or replace the file") from None


def _orientation(img: Any) -> int:
    """The EXIF orientation (1: upright) from the header; a PNG's EXIF after its pixels is not read
    (that would decode the picture)."""
    if "exif" not in img.info and img.format != "TIFF":
        return 1
    try:
        value = int(img.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block: show the picture as stored
        return 1
    return value if value in _ORIENTATION_FIXES else 1


def _upright_size(img: Any) -> tuple[int, int]:
    """``(height, width)`` as the picture is shown (EXIF orientations 5-8 turn it a quarter)."""
    return (img.width, img.height) if _orientation(img) in (5, 6, 7, 8) else (img.height, img.width)


def read_picture(path: PathLike_, image_shape: Sequence[int] | None = None, channels: int = 1) -> np.ndarray:
    """One picture file as uint8 values 0-255 in a colour mode and size.

    Args:
        path: A PNG, JPEG, BMP, GIF, TIFF or WebP file.
        image_shape: ``(H, W)`` to resize to (bilinear), or ``None`` for the picture's own size.
        channels: 1 (grey ``[H, W]``), 3 (RGB ``[H, W, 3]``) or 4 (RGBA ``[H, W, 4]``); the picture
            is converted to that mode (colour to grey by ITU-R 601-2 luma, an alpha band dropped or
            added as opaque). 16-bit grey pictures are scaled to 0-255; 32-bit integer and float
            pictures are clipped to 0-255. A photo's EXIF orientation is applied (as it is shown).

    Returns:
        ``uint8 [H, W]`` or ``[H, W, C]``.
    """
    p = check_file(path)
    Image = _pillow(p)
    if channels not in PICTURE_MODES:
        raise DataError(
            f"pictures are read with 1, 3 or 4 channels, not {channels}",
            path=p,
            hint="give .npy or .npz arrays for other channel counts",
        )
    with _open_picture(p) as img:
        try:
            orientation = _orientation(img)
            if img.mode in _SIXTEEN_BIT_MODES:  # convert() would clip 0-65535 to 0-255: nearly all white
                wide = np.asarray(img).astype(np.uint32)
                img = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
            converted = img.convert(PICTURE_MODES[channels])
            if orientation != 1:
                converted = converted.transpose(getattr(Image.Transpose, _ORIENTATION_FIXES[orientation]))
            if image_shape is not None and converted.size != (image_shape[1], image_shape[0]):
                converted = converted.resize((int(image_shape[1]), int(image_shape[0])), Image.Resampling.BILINEAR)
            return np.asarray(converted, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(
                f"cannot read the picture ({exc})", path=p, hint="remove or replace the file"
            ) from None


def natural_key(name: str) -> tuple[Any, ...]:
    """``"2" < "10"``, ``"cat" < "dog"``: numbers compare as numbers."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def read_image_folder(
    root: PathLike_, image_shape: Sequence[int] | None = None, channels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read pictures laid out one subfolder per class (``root/<class>/<picture>``, as
    torchvision's ``ImageFolder``; pictures may sit deeper inside a class folder).

    Args:
        root: The folder of class folders. Class folders without pictures are ignored; pictures
            directly in ``root`` (no class) are an error.
        image_shape: ``(H, W)`` every picture is resized to, or ``None``: all pictures must share
            one size.
        channels: 1 (grey), 3 (RGB) or 4 (RGBA), or ``None``: grey when every picture is grey,
            else RGB (alpha dropped).

    Returns:
        ``(images uint8 [N, H, W] or [N, H, W, C], labels [N])``: the labels are the class
        folders' names (strings), in class-then-file order (classes sorted with numbers as numbers).
    """
    top = Path(root)
    if not top.is_dir():
        raise DataError("not a folder", path=top, hint="pass the folder that holds one subfolder per class")
    loose = picture_files(top, recursive=False)
    if loose:
        raise DataError(
            f"{len(loose)} picture(s) directly in the folder (e.g. {loose[0].name}) have no class",
            path=top,
            hint="put each picture in a subfolder named after its class",
        )
    classes = sorted((d for d in top.iterdir() if d.is_dir() and not d.name.startswith(".")),
                     key=lambda d: natural_key(d.name))
    files: list[Path] = []
    names: list[str] = []
    for folder in classes:
        found = picture_files(folder)
        files += found
        names += [folder.name] * len(found)
    if not files:
        raise DataError(
            "no picture files (PNG, JPEG, BMP, GIF, TIFF, WebP) in its subfolders",
            path=top,
            hint="lay the pictures out as FOLDER/<class>/<picture>",
        )
    if channels is None or image_shape is None:
        sizes: dict[tuple[int, int], Path] = {}
        colour = False
        for f in files:  # headers only: Pillow decodes pixels on first access
            with _open_picture(f) as img:
                sizes.setdefault(_upright_size(img), f)
                colour = colour or img.mode not in _GREY_MODES
            if image_shape is None and len(sizes) > 1:
                (a, fa), (b, fb) = list(sizes.items())[:2]
                raise DataError(
                    f"pictures differ in size: {fa} is {a[0]}x{a[1]}, {fb} is {b[0]}x{b[1]} (height x width)",
                    path=top,
                    hint=setting("image_shape", ("(H, W)", "[H,W]"), then=" to resize them all"),
                )
        if channels is None:
            channels = 3 if colour else 1
        if image_shape is None:
            image_shape = next(iter(sizes))
    h, w = int(image_shape[0]), int(image_shape[1])
    images = np.empty((len(files), h, w) if channels == 1 else (len(files), h, w, channels), dtype=np.uint8)
    for i, f in enumerate(files):
        images[i] = read_picture(f, (h, w), channels)
    return images, np.asarray(names, dtype=str)


class PixelPermutation(JsonSerializable):
    """A fixed permutation of pixel positions (permuted sequential MNIST).

    Args:
        num_pixels: Number of pixels ``H*W``.
        seed: Seed of the NumPy generator that draws the permutation.
        order: Explicit permutation (overrides ``seed``; saved so loading never depends on
            the generator's implementation).
    """

    #: Most pixels a permutation may cover: 4096 x 4096 (an int64 order of 128 MiB), far past the
    #: images a pixel-by-pixel RNN reads (28 x 28, 32 x 32), so that a file asking for
    #: ``num_pixels: 10000000000`` is refused instead of drawing an 80 GB permutation.
    MAX_PIXELS = 1 << 24

    def __init__(self, num_pixels: int, seed: int = 0, order: Sequence[int] | None = None) -> None:
        self.num_pixels = int(num_pixels)
        if not 0 <= self.num_pixels <= self.MAX_PIXELS:
            raise DataError(
                f"num_pixels must be between 0 and {self.MAX_PIXELS} (4096 x 4096), got {num_pixels}",
                hint="permute smaller images (e.g. 28 x 28 = 784 pixels), or re-save the permutation",
            )
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
