"""Image recognition with recurrent networks: images read as sequences.

Three layers, as in the rest of rnnkit: this module speaks in images and labels (reading MNIST
idx files, ``.npz`` archives and digit CSVs, scaling, the pixel order, reports);
:class:`ImageSequenceClassifier` speaks in tensors; ``rnnkit.nn`` runs the recurrences.

How an ``[H, W]`` image becomes a sequence (``data.sequence``, see :mod:`rnnkit.data.images`):

* ``rows``: ``H`` steps of ``W`` pixels (row-by-row MNIST: 28 steps of 28 features);
* ``pixels``: ``H*W`` steps of one pixel in raster order (sequential MNIST, Le et al. 2015);
* ``permuted``: the pixels in one fixed, seeded random order (permuted MNIST, Le et al. 2015);
  the permutation itself is saved in the run folder (``permutation.json``), so evaluation and
  prediction read pixels in exactly the training order.

Inputs (``--train``, ``--dev``, ``evaluate --data``):

* a folder holding MNIST idx files (``train-images*idx3*`` / ``train-labels*idx1*``; with
  ``data.split=test`` the ``t10k-*`` files);
* an idx images file (``*-images*idx3*[.gz]``): its labels file is found beside it, or name both
  as ``IMAGES,LABELS``;
* a ``.npz`` archive (arrays ``data.images_key`` and ``data.labels_key``);
* a digits CSV (``.csv`` / ``.csv.gz``: pixel columns then the label, images of ``data.image_shape``);
* a folder of class folders holding picture files (``FOLDER/<class>/<picture>.png``, as torchvision's
  ``ImageFolder``): the class is the folder's name; pictures are resized to ``data.image_shape`` (or
  must share one size) and read grey or colour (``data.color``);
* ``builtin:digits``: the 8x8 digits shipped with rnnkit (1,797 images; a quick test).

Images are grey ``[N, H, W]`` or colour ``[N, H, W, C]`` (channels last: ``rows`` steps then have
``W*C`` features, ``pixels``/``permuted`` steps ``C``); labels are whole-number class indices, or
class names (the class folders). ``predict`` converts picture files to the training colour mode and size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells import CELLS
from ..nn import masked_max, masked_mean, recurrent_layer
from .config import (
    LR_DECAY_HELP,
    LR_DECAY_PATIENCE_HELP,
    MAX_MINUTES_HELP,
    PRECISION_HELP,
    ConfigError,
    PrecisionName,
    check_at_least_one,
    check_batch,
    check_cell,
    check_early_stopping_and_clipping,
    check_lr_decay,
    check_max_minutes,
    check_precision,
    option,
    seconds_budget,
    section,
)
from .run import RunDir, RunError

NAME = "image-classification"
# The data readers' arguments as config keys, for one-line errors worded for the command line.
CONFIG_KEYS = {"images_key": "data.images_key", "labels_key": "data.labels_key", "image_shape": "data.image_shape"}
DESCRIPTION = ("Image recognition with images read as sequences (MNIST idx, npz, digits CSV, class folders of "
               "pictures; rows, pixels, permuted)")
BUILTIN_DIGITS = "builtin:digits"
COLOR_CHANNELS = {"auto": None, "grey": 1, "rgb": 3, "rgba": 4}


# -- configuration -----------------------------------------------------------------------------
@dataclass
class DataConfig:
    format: Literal["auto", "mnist", "idx", "npz", "digits-csv", "folders", "builtin", "ts"] = option(
        "auto", "input format; auto: folder of idx files -> mnist, folder of class folders of pictures -> folders, "
        "*idx* -> idx, .npz -> npz, .csv[.gz] -> digits-csv, .ts[.gz] -> ts (UCR/UEA time series: one step per "
        "time point, one feature per dimension), builtin:digits -> builtin")
    split: Literal["train", "test"] = option("train", "which MNIST files a folder gives: train-* or t10k-* (test)")
    sequence: Literal["rows", "pixels", "permuted"] = option(
        "rows", "rows: one step per image row; pixels: one step per pixel; permuted: pixels in a fixed random order")
    permutation_seed: int = option(0, "seed of the pixel permutation (sequence=permuted); saved in the run folder")
    images_key: str = option("x", "array of images in a .npz archive")
    labels_key: str = option("y", "array of labels in a .npz archive")
    image_shape: list[int] | None = option(None, "[height, width]: of the images in a digits CSV (null: 8x8); "
                                                 "class-folder pictures are resized to it (null: all must share "
                                                 "one size)")
    color: Literal["auto", "grey", "rgb", "rgba"] = option(
        "auto", "colour mode class-folder pictures are read in; auto: grey when every picture is grey, else rgb")
    standardize: bool = option(True, "subtract the training pixel mean and divide by its standard deviation")
    dev_fraction: float = option(0.1, "fraction of training images held out as dev when --dev is not given")
    max_train_examples: int | None = option(None, "train on N of the training images (after the dev split), drawn "
                                                  "with train.seed in proportion to each class; null: all")


@dataclass
class ModelConfig:
    cell: str = option("lstm", f"recurrent cell: {', '.join(sorted(CELLS))}")
    hidden_size: int = option(128, "hidden units per direction")
    num_layers: int = option(1, "stacked recurrent layers")
    bidirectional: bool = option(False, "read the sequence in both directions")
    pooling: Literal["last", "mean", "max"] = option("last", "how the outputs become one vector: last state, mean or max")
    dropout: float = option(0.1, "dropout between layers and before the classifier")


@dataclass
class TrainConfig:
    epochs: int = option(10, "maximum epochs")
    max_minutes: float | None = option(None, MAX_MINUTES_HELP)
    precision: PrecisionName = option("32-true", PRECISION_HELP)
    batch_size: int = option(128, "images per batch")
    learning_rate: float = option(1e-3, "learning rate")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = option("adam", "optimizer")
    weight_decay: float = option(0.0, "weight decay")
    clip_norm: float | None = option(1.0, "clip the gradient norm to this (null: no clipping); long pixel "
                                          "sequences need it")
    patience: int | None = option(3, "stop after this many epochs without dev improvement (null: never)")
    lr_decay: float | None = option(None, LR_DECAY_HELP)
    lr_decay_patience: int = option(1, LR_DECAY_PATIENCE_HELP)
    monitor: Literal["accuracy", "macro_f1"] = option("accuracy", "dev metric that selects the best epoch")
    seed: int = option(0, "random seed (dev split, initialisation, batching)")
    accelerator: Literal["auto", "cpu", "gpu", "mps"] = option("auto", "device")


@dataclass
class Config:
    data: DataConfig = section(DataConfig, "reading images and turning them into sequences")
    model: ModelConfig = section(ModelConfig, "the network")
    train: TrainConfig = section(TrainConfig, "optimisation")

    def validate(self) -> None:
        check_max_minutes(self.train.max_minutes)
        self.train.precision = check_precision(self.train.precision)  # an alias by its full name
        check_cell(self.model.cell)
        check_at_least_one(("model.hidden_size", self.model.hidden_size), ("model.num_layers", self.model.num_layers),
                           ("train.epochs", self.train.epochs), ("train.batch_size", self.train.batch_size))
        if self.data.image_shape is not None and (len(self.data.image_shape) != 2 or min(self.data.image_shape) < 1):
            raise ConfigError(f"data.image_shape: expected [height, width] of positive sizes, got {self.data.image_shape}")
        if self.data.max_train_examples is not None and self.data.max_train_examples < 2:
            raise ConfigError(f"data.max_train_examples: must be >= 2 or null, got {self.data.max_train_examples}")
        if not 0 <= self.model.dropout < 1:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.model.dropout}")
        if not 0 < self.data.dev_fraction < 1:
            raise ConfigError(f"data.dev_fraction: must be in (0, 1), got {self.data.dev_fraction}")
        if self.train.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate: must be > 0, got {self.train.learning_rate}")
        if self.data.permutation_seed < 0:
            raise ConfigError(f"data.permutation_seed: must be >= 0, got {self.data.permutation_seed}")
        check_early_stopping_and_clipping(self.train.patience, self.train.clip_norm, self.train.weight_decay)
        check_lr_decay(self.train.lr_decay, self.train.lr_decay_patience)


# -- model -------------------------------------------------------------------------------------
class ImageSequenceClassifier(nn.Module):
    """Recurrent encoder over image steps -> pooling -> dropout -> linear classifier.

    ``forward(x [B, T, I])`` returns logits ``[B, C]`` (``T`` steps of ``I`` features: rows of
    ``W`` pixels, or single pixels).
    """

    def __init__(self, input_size: int, num_classes: int, *, hidden_size: int = 128, num_layers: int = 1,
                 bidirectional: bool = False, cell: str = "lstm", pooling: str = "last",
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = recurrent_layer(cell, input_size, hidden_size, num_layers=num_layers,
                                       bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.directions = 2 if bidirectional else 1
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size * self.directions, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        outputs, state = self.encoder(x)  # [B, T, D*H]
        if self.pooling == "mean":
            pooled = masked_mean(outputs, None)
        elif self.pooling == "max":
            pooled = masked_max(outputs, None)
        else:
            h = state[0] if isinstance(state, tuple) else state  # [L*D, B, H]
            pooled = torch.cat(list(h[-self.directions:]), -1)  # [B, D*H]
        return self.classifier(self.dropout(pooled))  # [B, C]


# -- data --------------------------------------------------------------------------------------
def detect_format(path: str | Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if str(path) == BUILTIN_DIGITS:
        return "builtin"
    p = Path(str(path).split(",")[0])
    name = p.name.lower()
    if not p.exists():
        raise FileNotFoundError(f"data not found: {p} (give an existing folder of MNIST idx files or of class "
                                "folders of pictures, an idx, .npz or .csv[.gz] file, or builtin:digits)")
    if p.is_dir():
        idx_files = any("idx" in q.name or "ubyte" in q.name for q in p.iterdir() if q.is_file())
        return "folders" if not idx_files and _holds_pictures(p) else "mnist"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".csv", ".csv.gz")):
        return "digits-csv"
    if name.endswith((".ts", ".ts.gz")):
        return "ts"
    if "idx" in name or "ubyte" in name:
        return "idx"
    raise ConfigError(f"{path}: cannot tell the image format from the name; pass a folder of MNIST idx files or of "
                      "class folders of pictures, an idx, .npz or .csv[.gz] file, or builtin:digits (or set "
                      "data.format)")


def _find_one(folder: Path, prefix: str, kind: str) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: data.format=mnist needs a folder holding MNIST idx files; "
                                "pass the folder, or data.format=idx for one idx file")
    found = sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and kind in p.name and p.is_file())
    if not found and _holds_pictures(folder):
        raise ConfigError(f"{folder}: holds picture files, not MNIST idx files; set data.format=folders (or auto) to "
                          "read one subfolder of pictures per class")
    if not found and not any("idx" in q.name or "ubyte" in q.name for q in folder.iterdir()):
        raise FileNotFoundError(f"{folder}: no MNIST file named {prefix}*{kind}* and no class folders of pictures "
                                "in it; pass a folder of MNIST idx files or of class folders of pictures "
                                "(FOLDER/<class>/<picture>.png)")
    if not found:
        raise FileNotFoundError(f"{folder}: no MNIST file named {prefix}*{kind}* (expected e.g. "
                                f"{prefix}-images-idx3-ubyte.gz); set data.split or pass the idx file itself")
    return found[0]


def _holds_pictures(folder: Path) -> bool:
    """Whether ``folder`` or one of its subfolders holds a picture file (PNG, JPEG ...)."""
    from ..data.images import PICTURE_SUFFIXES

    def pictures(d: Path) -> bool:
        return any(q.suffix.lower() in PICTURE_SUFFIXES and q.is_file() for q in d.iterdir())

    try:
        return pictures(folder) or any(d.is_dir() and pictures(d) for d in folder.iterdir())
    except OSError:
        return False


def integer_labels(labels: Any, source: str) -> np.ndarray:
    """Labels as int64 class indices, or a one-line error for fractional or other non-integer values."""
    arr = np.asarray(labels).reshape(-1)
    if arr.dtype.kind in "biu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr))) and bool(np.all(arr == np.round(arr))):
        return arr.astype(np.int64)
    bad = next((v for v in arr.tolist() if not (isinstance(v, int | float) and float(v).is_integer())), arr.dtype)
    raise ConfigError(f"{source}: labels must be whole-number class indices or class names (strings), got {bad!r}; "
                      "map other values to 0..K-1 first (numpy.unique(y, return_inverse=True) does it)")


def class_labels(labels: Any, source: str) -> np.ndarray:
    """Class names (strings, e.g. the class folders) as they are, else whole-number class indices
    (:func:`integer_labels`)."""
    arr = np.asarray(labels).reshape(-1)
    if arr.dtype.kind in "US" or (arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr.tolist())):
        return arr.astype(str)
    return integer_labels(arr, source)


def _labels_beside(images: Path) -> Path:
    name = images.name
    for a, b in (("images", "labels"), ("idx3", "idx1")):
        name = name.replace(a, b)
    candidate = images.with_name(name)
    if name == images.name or not candidate.is_file():
        raise FileNotFoundError(f"{images}: no labels file found beside it (looked for {candidate.name}); pass "
                                "IMAGES,LABELS")
    return candidate


def read_images(path: str | Path, cfg: DataConfig, *, labelled: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Read ``(images [N, H, W], labels [N] | None)`` with the data layer's readers."""
    from ..data.errors import config_keys
    from ..data.images import read_digits_csv, read_idx, read_image_folder, read_npz

    fmt = detect_format(path, cfg.format)
    if fmt == "builtin":
        if str(path) != BUILTIN_DIGITS:
            raise ConfigError(f"{path}: the only builtin image dataset is {BUILTIN_DIGITS}")
        from ..datasets import load_digits

        digits, digit_labels = load_digits()
        return digits, digit_labels
    parts = str(path).split(",")
    p = Path(parts[0])
    labels: np.ndarray | None
    if not p.exists():
        raise FileNotFoundError(f"data not found: {p}")
    if fmt == "mnist":
        prefix = "train" if cfg.split == "train" else "t10k"
        image_file = _find_one(p, prefix, "idx3")
        label_file: Path | None = _find_one(p, prefix, "idx1") if labelled else None
        images, labels = read_idx(image_file), (read_idx(label_file) if label_file is not None else None)
    elif fmt == "idx":
        images = read_idx(p)
        label_file = Path(parts[1]) if len(parts) > 1 else (_labels_beside(p) if labelled else None)
        labels = read_idx(label_file) if label_file is not None else None
    elif fmt == "npz":
        images, labels = read_npz(p, cfg.images_key, cfg.labels_key if labelled else None)
    elif fmt == "ts":
        images, labels = read_time_series(p, labelled)
    elif fmt == "folders":
        with config_keys(CONFIG_KEYS):
            try:
                images, labels = read_image_folder(p, cfg.image_shape, COLOR_CHANNELS[cfg.color])
            except MemoryError:
                size = f" at data.image_shape={cfg.image_shape}" if cfg.image_shape else ""
                raise ConfigError(f"{path}: not enough memory to hold the pictures{size}; set a smaller "
                                  "data.image_shape=[H,W]") from None
    else:
        h, w = cfg.image_shape or (8, 8)
        images, labels = read_digits_csv(p, (h, w))
    images = _channels_last(images, str(path))
    if labels is not None:
        labels = class_labels(labels, str(path))
        if len(labels) != len(images):
            raise ConfigError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


FEW_STEPS = 5  # optimizer steps per epoch below which training is noted as too short for its settings


def read_time_series(path: Path, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A UCR/UEA ``.ts`` file as ``([N, T, D] series, labels)``: each time point is one step of ``D``
    features (one per dimension), as an image's row is one step of its pixels. The series must share
    one length and hold no missing values (``?``): the sequence model reads whole ``[T, D]`` arrays."""
    from ..data.ucr import read_ts_file

    data = read_ts_file(path)
    if not data.series:
        raise ConfigError(f"{path}: the .ts file holds no series after @data; give a file with data lines")
    lengths = sorted({s.shape[0] for s in data.series})
    if len(lengths) > 1:
        raise ConfigError(f"{path}: the series have {len(lengths)} different lengths ({lengths[0]} to {lengths[-1]} "
                          "steps); resample or pad them to one length (e.g. sktime's PaddingTransformer) first")
    x = np.stack(data.series)
    missing = ~np.isfinite(x)
    if missing.any():
        first = int(np.flatnonzero(missing.reshape(len(x), -1).any(1))[0])
        raise ConfigError(f"{path}: {int(missing.any(axis=(1, 2)).sum())} series hold missing values ('?' or NaN; "
                          f"first: series {first}); fill them first (e.g. interpolate along time) or drop them")
    labels = None
    if labelled:
        if any(label is None for label in data.labels):
            raise ConfigError(f"{path}: the .ts file has no class labels (@classLabel true <labels>); a labelled "
                              "file is needed to train or evaluate")
        header = {key.lower(): value.strip().lower() for key, value in data.header.items()}
        if header.get("targetlabel", "").split()[:1] == ["true"]:
            raise ConfigError(f"{path}: @targetLabel true marks a regression target, not a class; this task "
                              "classifies (forecasting or a regression model is needed for targets)")
        labels = np.asarray(data.labels)
    return x.astype(np.float32), labels


def _channels_last(images: np.ndarray, source: str) -> np.ndarray:
    """``[N, H, W]`` grey or ``[N, H, W, C]`` images (``C == 1`` dropped) of finite real pixel values,
    or a one-line error."""
    if images.dtype.kind not in "biuf":
        raise ConfigError(f"{source}: pixel values must be real numbers, got an array of {images.dtype}; store "
                          "the images as numbers (e.g. uint8 0-255 or float32)")
    if images.dtype.kind == "f" and not bool(np.isfinite(images).all()):
        bad = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(1)) if images.ndim else [0]
        raise ConfigError(f"{source}: {len(bad)} image(s) hold NaN or infinite pixel values (first: image "
                          f"{int(bad[0])}); replace the values (numpy.nan_to_num) or drop those images")
    if images.ndim == 4 and images.shape[3] == 1:
        images = images[..., 0]
    if images.ndim == 4 and images.shape[3] > 4 and images.shape[1] <= 4:
        raise ConfigError(f"{source}: images of shape {images.shape} look channels-first; store them channels-last "
                          "[N, H, W, C] (numpy.moveaxis(x, 1, -1))")
    if images.ndim not in (3, 4):
        raise ConfigError(f"{source}: expected images [N, H, W] (grey) or [N, H, W, C] (channels last), got an array "
                          f"of shape {images.shape}; reshape flat images to [N, H, W]")
    return images


def read_image_file(path: Path, shape: tuple[int, int], channels: int = 1) -> np.ndarray:
    """One picture file (PNG, JPEG ...) as float values 0-255, converted to the training colour mode
    (grey ``[H, W]``, or ``[H, W, C]`` for 3 or 4 channels) and resized to ``shape``."""
    from ..data.images import PICTURE_MODES, read_picture

    if channels not in PICTURE_MODES:
        raise ConfigError(f"{path}: the model was trained on images of {channels} channels, which picture files "
                          "do not have; give .npy or .npz arrays of that shape")
    return read_picture(path, shape, channels).astype(np.float32)


class Preprocessor:
    """Scaling, standardisation, pixel order and label set, fitted on training images only."""

    def __init__(self, cfg: DataConfig, image_shape: tuple[int, int], scale: float, mean: float, std: float,
                 classes: Sequence[int | str], permutation: Any = None, channels: int = 1,
                 pictures: bool = False) -> None:
        self.cfg, self.image_shape, self.scale = cfg, (int(image_shape[0]), int(image_shape[1])), float(scale)
        # class indices (ints) or class names (the class folders), in output order
        self.classes = [c if isinstance(c, str) else int(c) for c in classes]
        self.mean, self.std = float(mean), float(std)
        # trained on picture files (class folders): pictures given to predict are on the training scale as
        # they are; otherwise their 0-255 values are mapped to the training arrays' 0..max range
        self.pictures = bool(pictures)
        self.permutation, self.channels = permutation, int(channels)

    @classmethod
    def fit(cls, images: np.ndarray, labels: np.ndarray, cfg: DataConfig, pictures: bool = False) -> Preprocessor:
        from ..data.images import PixelPermutation, natural_key

        images = _channels_last(np.asarray(images), "training images")
        labels = class_labels(labels, "training labels")
        top = float(images.max()) if images.size else 1.0
        scale = 1.0 / top if top > 1.0 else 1.0  # uint8 MNIST: 1/255; digits CSV (0-16): 1/16
        x = images.astype(np.float32) * scale
        mean, std = (float(x.mean()), float(x.std()) or 1.0) if cfg.standardize else (0.0, 1.0)
        shape = (int(images.shape[1]), int(images.shape[2]))
        perm = PixelPermutation(shape[0] * shape[1], cfg.permutation_seed) if cfg.sequence == "permuted" else None
        channels = 1 if images.ndim == 3 else int(images.shape[3])
        names = labels.dtype.kind == "U"
        classes = sorted(np.unique(labels).tolist(), key=natural_key if names else None)
        return cls(cfg, shape, scale, mean, std, classes, perm, channels, pictures)

    def describe(self, size: Sequence[int] | None = None, channels: int | None = None) -> str:
        """``8x8`` (grey) or ``32x32x3`` (3 channels): the training images, or the given ones."""
        h, w = size if size is not None else self.image_shape
        c = self.channels if channels is None else channels
        return f"{h}x{w}" + (f"x{c}" if c != 1 else "")

    def check_shape(self, images: np.ndarray, source: str, single: bool = False) -> np.ndarray:
        """``images`` (``[N, H, W(, C)]``, or one ``[H, W(, C)]`` image with ``single``) in the training
        shape, or a one-line error naming the difference."""
        x = images[None] if single else images
        x = _channels_last(x, source)
        size, channels = tuple(x.shape[1:3]), 1 if x.ndim == 3 else int(x.shape[3])
        if size != self.image_shape or channels != self.channels:
            what = "images are" if not single else "image is"
            fix = ("convert them to the training colour mode" if size == self.image_shape else
                   "resize them to the training size (picture files given to predict are resized)")
            raise ConfigError(f"{source}: {what} {self.describe(size, channels)} but the model was trained on "
                              f"{self.describe()} ({'grey' if self.channels == 1 else 'channels last'}); {fix}")
        return x

    def read(self, path: str | Path, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
        """Labelled images of ``path`` on the training pixel scale (:meth:`from_source`); pictures of class
        folders are read in the training colour mode and size, as ``predict`` reads picture files."""
        if detect_format(path, cfg.format) == "folders":
            mode = next((m for m, c in COLOR_CHANNELS.items() if c == self.channels), cfg.color)
            cfg = replace(cfg, image_shape=list(self.image_shape), color=mode)  # type: ignore[arg-type]
        images, labels = read_images(path, cfg)
        assert labels is not None
        return self.from_source(images, path), labels

    def from_source(self, images: np.ndarray, path: str | Path) -> np.ndarray:
        """Images read from ``path`` on the training pixel scale: pictures from class folders (0-255) for a
        model trained on arrays are mapped to the arrays' 0..max range, as ``predict`` maps picture files."""
        if detect_format(path, self.cfg.format) != "folders":
            return images
        return self.picture_scale(images)

    def picture_scale(self, pictures: np.ndarray) -> np.ndarray:
        """0-255 picture values on the training scale: as they are for a model trained on pictures,
        mapped to the arrays' 0..max range for one trained on arrays."""
        if self.pictures:
            return pictures
        return pictures.astype(np.float32) * np.float32(1.0 / (255.0 * self.scale))

    @property
    def input_size(self) -> int:
        return (self.image_shape[1] if self.cfg.sequence == "rows" else 1) * self.channels

    @property
    def steps(self) -> int:
        return self.image_shape[0] if self.cfg.sequence == "rows" else self.image_shape[0] * self.image_shape[1]

    def sequences(self, images: np.ndarray, source: str = "images") -> Tensor:
        """``[N, H, W]`` images -> standardized float32 sequences ``[N, T, I]``."""
        from ..data.images import images_to_sequences

        images = self.check_shape(np.asarray(images), source)
        seq = images_to_sequences(images, self.cfg.sequence, permutation=self.permutation, scale=self.scale)
        return (seq - self.mean) / self.std

    def unknown_labels(self, labels: np.ndarray, source: str) -> list[str]:
        """Labels (names or indices, compared as text: class folder ``3`` is label 3) not among the
        training classes, sorted."""
        from ..data.images import natural_key

        known = {str(c) for c in self.classes}
        return sorted({str(v) for v in class_labels(labels, source).tolist()} - known, key=natural_key)

    def encode_labels(self, labels: np.ndarray, source: str) -> Tensor:
        labels = class_labels(labels, source)
        unknown = self.unknown_labels(labels, source)
        if unknown:
            raise ConfigError(f"{source}: label {unknown[0]} is not in the training labels "
                              f"({', '.join(map(str, self.classes))})")
        index = {str(c): i for i, c in enumerate(self.classes)}
        return torch.tensor([index[str(v)] for v in labels.tolist()], dtype=torch.long)

    def save(self, run: RunDir) -> None:
        if self.permutation is not None:
            run.write_json("permutation.json", self.permutation.to_config())
        run.write_json("preprocessing.json", {"data": asdict(self.cfg), "image_shape": list(self.image_shape),
                                              "channels": self.channels, "pictures": self.pictures,
                                              "scale": self.scale, "mean": self.mean, "std": self.std,
                                              "classes": self.classes})

    @classmethod
    def load(cls, run: RunDir) -> Preprocessor:
        from ..data.images import PixelPermutation

        meta = run.read_json("preprocessing.json")
        cfg = DataConfig(**meta["data"])
        perm = None
        if cfg.sequence == "permuted":
            try:
                perm = PixelPermutation.from_config(run.read_json("permutation.json"))
            except (KeyError, ValueError, TypeError) as err:  # TypeError: not a JSON object
                raise RunError(f"run folder {run.path}: permutation.json is missing or corrupt ({err}); "
                               "train again") from None
        return cls(cfg, tuple(meta["image_shape"]), meta["scale"], meta["mean"], meta["std"],  # type: ignore[arg-type]
                   meta["classes"], perm, int(meta.get("channels", 1)), bool(meta.get("pictures", False)))


def _loader(x: Tensor, y: Tensor | None, batch_size: int, *, shuffle: bool, seed: int) -> torch.utils.data.DataLoader:
    from ..data.bucketing import EpochSampler

    tensors = (x,) if y is None else (x, y)
    # the order depends on (seed, epoch) only, so a resumed run draws what an uninterrupted one would;
    # the generator keeps the loader's per-epoch seed draw off the global random state
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors), batch_size=batch_size,
                                       sampler=EpochSampler(len(x), shuffle=shuffle, seed=seed),
                                       generator=torch.Generator().manual_seed(seed))


# -- the trained classifier --------------------------------------------------------------------
def build_model(hyper: dict[str, Any]) -> ImageSequenceClassifier:
    return ImageSequenceClassifier(**hyper)


class TrainedImageClassifier:
    """A model with its preprocessing: predict on image files or arrays, evaluate on labelled data."""

    def __init__(self, model: nn.Module, prep: Preprocessor, batch_size: int = 256,
                 device: str | torch.device = "cpu") -> None:
        self.model, self.prep, self.batch_size = model.to(device).eval(), prep, batch_size
        self.device = torch.device(device)

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> TrainedImageClassifier:
        """Load a run; ``device`` (``"cpu"``, ``"cuda"``, ...) is where predictions are computed."""
        run, meta = RunDir.open_task(run_dir, NAME)
        prep = Preprocessor.load(run)
        return cls(run.load_into(run.build_model(meta, build_model)), prep, device=device)

    def scores(self, images: np.ndarray, source: str = "images") -> Tensor:
        """Class probabilities ``[N, C]`` for raw ``[N, H, W]`` (or ``[N, H, W, C]``) images (training pixel
        scale)."""
        x = self.prep.sequences(images, source)
        out = []
        with torch.no_grad():
            for (xb,) in _loader(x, None, self.batch_size, shuffle=False, seed=0):
                out.append(torch.softmax(self.model(xb.to(self.device)), -1).cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.prep.classes))

    def _split(self, arr: np.ndarray, name: str, numbered: bool) -> tuple[list[str], list[np.ndarray]]:
        """One image (``[H, W]``, or ``[H, W, C]`` for a colour model) or a batch of them, each checked
        against the training shape (a one-line error names the input)."""
        arr = np.asarray(arr)
        single = arr.ndim == 2 or (self.prep.channels > 1 and arr.ndim == 3 and arr.shape[-1] == self.prep.channels)
        if not single and arr.ndim not in (3, 4):
            raise ConfigError(f"{name}: an array of shape {arr.shape} is not an image; give [H, W] images (or "
                              "[H, W, C]) or batches [N, H, W(, C)] of them")
        batch = self.prep.check_shape(arr, name, single=single)
        if single and not numbered:
            return [name], [batch[0]]
        return [f"{name}[{i}]" for i in range(len(batch))], list(batch)

    def _inputs(self, inputs: Sequence[str | Path | np.ndarray]) -> tuple[list[str], np.ndarray]:
        from ..data.images import PICTURE_SUFFIXES

        names: list[str] = []
        arrays: list[np.ndarray] = []
        for item in self._expand_folders(inputs):
            if isinstance(item, np.ndarray):
                more_names, more = self._split(item, "array", numbered=True)
            else:
                p = Path(item)
                if not p.is_file():
                    raise FileNotFoundError(f"input not found: {p} (give image files, folders of them, .npy or "
                                            ".npz files)")
                if p.suffix.lower() == ".npz":
                    images, _ = read_images(p, self.prep.cfg, labelled=False)
                    more_names, more = self._split(images, str(p), numbered=True)
                elif p.suffix.lower() == ".npy":
                    try:
                        arr = np.load(p, allow_pickle=False)
                    except (OSError, ValueError) as err:
                        raise ValueError(f"{p}: cannot read the array ({err})") from None
                    more_names, more = self._split(arr, str(p), numbered=False)
                elif p.name.lower().endswith((".ts", ".ts.gz")):  # UCR/UEA series: one [T, D] array each
                    series, _ = read_time_series(p, labelled=False)
                    more_names, more = self._split(series, str(p), numbered=True)
                elif p.suffix.lower() in PICTURE_SUFFIXES:
                    picture = read_image_file(p, self.prep.image_shape, self.prep.channels)
                    more_names, more = [str(p)], [self.prep.picture_scale(picture)]
                else:
                    raise ValueError(f"{p}: cannot predict on {p.suffix or 'this'} files; give PNG/JPEG images "
                                     "(or folders of them), .npy arrays or .npz archives (or UCR/UEA .ts files)")
            names += more_names
            arrays += more
        if not arrays:
            shape = self.prep.image_shape if self.prep.channels == 1 else (*self.prep.image_shape, self.prep.channels)
            return names, np.zeros((0, *shape), dtype=np.float32)
        return names, np.stack([np.asarray(a, dtype=np.float32) for a in arrays])

    @staticmethod
    def _expand_folders(inputs: Sequence[str | Path | np.ndarray]) -> list[str | Path | np.ndarray]:
        """Each folder among ``inputs`` replaced by the picture files in it and its subfolders (sorted)."""
        from ..data.images import picture_files

        out: list[str | Path | np.ndarray] = []
        for item in inputs:
            if not isinstance(item, np.ndarray) and Path(item).is_dir():
                found = picture_files(item)
                if not found:
                    raise FileNotFoundError(f"{item}: no picture files (PNG, JPEG, BMP, GIF, TIFF, WebP) in this "
                                            "folder or its subfolders")
                out += found
            else:
                out.append(item)
        return out

    def predict(self, inputs: Sequence[str | Path | np.ndarray]) -> list[dict[str, Any]]:
        """Label and per-class probabilities for each image (picture files, folders of them, ``.npy``
        arrays, ``.npz`` rows or arrays) or series (the cases of a UCR/UEA ``.ts`` file, labelled or not)."""
        check_batch(inputs, "images")
        names, images = self._inputs(inputs)
        probs = self.scores(images, "prediction input")
        classes = [str(c) for c in self.prep.classes]
        results = []
        for name, row in zip(names, probs.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            results.append({"text": name, "input": name, "label": classes[best],
                            "probabilities": dict(zip(classes, row))})
        return results

    def _data_cfg(self, overrides: Sequence[str], command: str) -> DataConfig:
        from .config import apply_overrides, from_dict

        data = apply_overrides({"data": asdict(self.prep.cfg)}, list(overrides))
        if set(data) != {"data"}:
            raise ConfigError(f"{command} accepts data.* keys only, got {sorted(set(data) - {'data'})}")
        cfg = from_dict(DataConfig, data["data"], "data.")
        for key in ("sequence", "permutation_seed", "standardize"):
            if getattr(cfg, key) != getattr(self.prep.cfg, key):
                raise ConfigError(f"{command} data.{key}: the model was trained with "
                                  f"{getattr(self.prep.cfg, key)!r}; this cannot change after training")
        return cfg

    def use_overrides(self, overrides: Sequence[str]) -> None:
        """Read later files (``predict`` on ``.npz``, ``evaluate``) with ``data.*`` overrides, e.g.
        ``data.images_key=images``."""
        self.prep.cfg = self._data_cfg(overrides, "predict --set")

    def evaluate_arrays(self, images: np.ndarray, labels: np.ndarray, source: str = "data") -> dict[str, Any]:
        from .text_classification import classification_metrics

        if len(labels) == 0:
            raise ConfigError(f"{source}: no labelled images read (an empty file or array?); give at least one image "
                              "and its label")

        targets = self.prep.encode_labels(labels, source)
        metrics = classification_metrics(self.scores(images, source), targets, multi_label=False)
        metrics["examples"] = len(labels)
        metrics["classes"] = [str(c) for c in self.prep.classes]  # names of the per_class entries
        return metrics

    def evaluate(self, path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
        """Metrics on labelled images; ``overrides`` (``data.key=value``) change how they are read,
        e.g. ``data.split=test`` for the ``t10k-*`` files of an MNIST folder."""
        cfg = self._data_cfg(overrides, "evaluate --set")
        images, labels = self.prep.read(path, cfg)
        return self.evaluate_arrays(images, labels, str(path))

    def diagnostic_batch(self, path: str | Path, size: int = 32) -> tuple[nn.Module, tuple[Tensor, Tensor],
                                                                           Callable[[nn.Module, Any], Tensor]]:
        """``(model, (x, y), loss_fn)`` on the first ``size`` labelled images of ``path`` (for
        :func:`rnnkit.insight.gradient_diagnostics`)."""
        images, labels = self.prep.read(path, self.prep.cfg)
        x = self.prep.sequences(images[:size], str(path))
        y = self.prep.encode_labels(labels[:size], str(path))

        def loss_fn(model: nn.Module, batch: Any) -> Tensor:
            return F.cross_entropy(model(batch[0]), batch[1])

        return self.model, (x.to(self.device), y.to(self.device)), loss_fn


# -- training ----------------------------------------------------------------------------------
def _inference_device(accelerator: str) -> torch.device:
    """Where to score after training: the GPU when training asked for one (or ``auto`` found one)."""
    if accelerator in ("gpu", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _same_data(a: str | Path, b: str | Path) -> bool:
    """Whether two data arguments name the same file(s) or folder."""
    if str(a) == str(b):
        return True
    try:
        return [Path(x).resolve() for x in str(a).split(",")] == [Path(x).resolve() for x in str(b).split(",")]
    except (OSError, RuntimeError):  # Python < 3.13 raises RuntimeError on a symlink loop: not the same data
        return False


def _is_mnist_test(source: str | Path, cfg: DataConfig) -> bool:
    """Whether ``source`` reads MNIST test files: a folder with ``data.split=test``, or a ``t10k*`` file."""
    first = Path(str(source).split(",")[0])
    if first.is_dir():
        return cfg.split == "test" and detect_format(first, cfg.format) == "mnist"
    return first.name.startswith("t10k")


def _split_dev(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keep, held)`` indices: ``fraction`` of the examples held out as dev, stratified by label and
    fixed by ``seed``, as the text-classification task holds out its dev texts.

    Each class gives its share ``count * n_dev / n`` of the ``n_dev = round(n * fraction)`` (at least 1)
    dev examples, rounded down, and the largest remainders take the rest; a class keeps at least one
    example in training. Which examples of a class go to dev is drawn from ``seed``. An unstratified
    draw can hold out one class only (5 dev series of GunPoint's 50, all of one class, gave a dev
    accuracy of 0 and selected the epoch on one class) or a rare class whole."""
    from ..data.splits import class_quotas

    order, codes, counts, rank = _seeded_class_ranks(labels, seed)
    first = np.unique(codes, return_index=True)[1]  # each class's first place in the seeded order: the ties
    take = np.asarray(class_quotas(counts.tolist(), max(1, int(round(len(labels) * fraction))), first.tolist()))
    held = rank < take[codes]
    return np.sort(order[~held]), np.sort(order[held])


def _seeded_class_ranks(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(order, codes, counts, rank)``: a permutation of the examples drawn from ``seed``, each one's class
    code in that order, the examples per class, and each one's place among its class in that order."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).numpy()
    _, codes = np.unique(np.asarray(labels)[order].astype(str), return_inverse=True)
    counts = np.bincount(codes)
    by_class = np.argsort(codes, kind="stable")  # each class's members, in the seeded order
    rank = np.empty(len(order), dtype=np.int64)
    rank[by_class] = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    return order, codes, counts, rank


def _stratified_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` of ``labels``, in their original order, each class in proportion to its size.

    Class folders are read class by class, so the first ``n`` images would hold only the first
    classes. Each image's key is its rank within its class (in a permutation drawn from ``seed``)
    over the class size; the ``n`` smallest keys take every class's share in turn.
    """
    order, codes, counts, rank = _seeded_class_ranks(labels, seed)
    keys = (rank + 0.5) / counts[codes]
    return np.sort(order[np.argsort(keys, kind="stable")[:n]])


def dev_metrics(config: Config) -> dict[str, str | None]:
    """The dev metrics and their directions, as for text classification (the same classification metrics)."""
    from .text_classification import dev_metrics as classification_metrics

    return classification_metrics(config)  # type: ignore[arg-type]  # reads nothing from config


def quality_metric(config: Config) -> str:
    """The dev metric ``rnnkit compare`` compares cells by: the one that selects the best epoch
    (``train.monitor``)."""
    return config.train.monitor


def train(config: Config, train_path: str | Path, dev_path: str | Path | None, run: RunDir,
          log: Callable[[str], None], progress: bool = True) -> dict[str, Any]:
    """Read images, turn them into sequences, train with early stopping on dev, save, report."""
    from .engine import EngineOptions, build_for_run, fit, prior_seconds, stop_reason
    from .report import markdown_table, plot_confusion, plot_learning_curves
    from .text_classification import _best_epoch, classification_metrics

    cfg, t = config, time.perf_counter()
    torch.manual_seed(cfg.train.seed)
    if dev_path is not None and _same_data(train_path, dev_path):
        raise ConfigError(f"--dev {dev_path} is the training data itself, so dev scores would measure memorisation; "
                          "drop --dev to hold out data.dev_fraction of the training images, or give other data")
    for role, source in (("training", train_path), ("dev", dev_path)):
        if source is not None and _is_mnist_test(source, cfg.data):
            log(f"note: the {role} data are MNIST test (t10k) files; keep them for the final evaluate only")
    images, labels = read_images(train_path, cfg.data)
    assert labels is not None
    held_note = ""
    if dev_path is None:
        keep, held = _split_dev(labels, cfg.data.dev_fraction, cfg.train.seed)
        if not len(held) and len(images) == 1:  # a lone image: the count check below names the hold-out
            keep, held = held, keep
        elif not len(held):
            raise ConfigError(f"{train_path}: every class has one training image only, so none can be held out as "
                              "dev; give more images of each class, or --dev")
        dev_images, dev_labels = images[held], labels[held]
        images, labels = images[keep], labels[keep]
        held_note = f" (after holding out {len(held)} for dev; give more images or --dev)"
        log(f"no --dev given: held out {len(held)} of the training images (data.dev_fraction="
            f"{cfg.data.dev_fraction}) for model selection")
    if cfg.data.max_train_examples is not None and len(images) > cfg.data.max_train_examples:
        chosen = _stratified_sample(labels, cfg.data.max_train_examples, cfg.train.seed)
        images, labels = images[chosen], labels[chosen]
        log(f"data.max_train_examples: training on {len(images)} images drawn in proportion to each class")
    if len(images) < 2:
        raise ConfigError(f"{train_path}: need at least 2 training images, found {len(images)}{held_note}")
    prep = Preprocessor.fit(images, labels, cfg.data, pictures=detect_format(train_path, cfg.data.format) == "folders")
    if dev_path is not None:  # class-folder pictures: in the training colour mode, size and pixel scale
        dev_images, dev_labels = prep.read(dev_path, cfg.data)
    unseen = prep.unknown_labels(dev_labels, str(dev_path or train_path))
    if unseen:
        if cfg.data.max_train_examples is not None:
            fix = "raise data.max_train_examples (it keeps N training images in proportion to each class)"
        elif dev_path is not None:
            fix = "give dev data of the training classes only"
        else:
            fix = "those classes are too rare to hold out: give more images of them, or remove them"
        raise ConfigError(f"{dev_path or train_path}: dev label(s) {', '.join(map(str, unseen[:5]))} never occur in "
                          f"the {len(images)} training images (labels {', '.join(map(str, prep.classes))}); {fix}")
    if len(prep.classes) < 2:
        raise ConfigError(f"{train_path}: only one label ({prep.classes[0]}) in the training data; "
                          "a classifier needs at least two")
    x_train, y_train = prep.sequences(images, str(train_path)), prep.encode_labels(labels, str(train_path))
    x_dev = prep.sequences(dev_images, str(dev_path or train_path))
    y_dev = prep.encode_labels(dev_labels, str(dev_path or train_path))
    is_ts = detect_format(train_path, cfg.data.format) == "ts"
    log(f"{len(images)} training / {len(dev_images)} dev {_examples_phrase(prep, is_ts)}, {len(prep.classes)} classes; "
        f"data.sequence={cfg.data.sequence}: {_steps_phrase(prep)}")
    steps_per_epoch = math.ceil(len(images) / cfg.train.batch_size)
    if steps_per_epoch < FEW_STEPS:  # e.g. a UCR set of 45 series at the default batch of 64: one step an epoch
        log(f"note: {len(images)} training examples at train.batch_size={cfg.train.batch_size} make "
            f"{steps_per_epoch} optimizer step(s) per epoch, so train.epochs={cfg.train.epochs} (and early stopping "
            f"after train.patience={cfg.train.patience} epochs) train very little; for a small set lower "
            "train.batch_size (e.g. 8) and raise train.epochs")

    hyper = {"input_size": prep.input_size, "num_classes": len(prep.classes), "hidden_size": cfg.model.hidden_size,
             "num_layers": cfg.model.num_layers, "bidirectional": cfg.model.bidirectional, "cell": cfg.model.cell,
             "pooling": cfg.model.pooling, "dropout": cfg.model.dropout}
    model = build_for_run(run, lambda: build_model(hyper))
    params = sum(p.numel() for p in model.parameters())
    log(f"model: {cfg.model.cell} cells, {params:,} parameters")
    train_loader = _loader(x_train, y_train, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed)
    dev_loader = _loader(x_dev, y_dev, 2 * cfg.train.batch_size, shuffle=False, seed=0)

    def loss_fn(m: nn.Module, batch: Any) -> Tensor:
        return F.cross_entropy(m(batch[0]), batch[1])

    def predict_fn(m: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        return torch.softmax(m(batch[0]), -1), batch[1]

    def metric_fn(scores: Tensor, targets: Tensor) -> dict[str, float]:
        m = classification_metrics(scores, targets, False)
        return {k: m[k] for k in ("accuracy", "macro_f1")}

    options = EngineOptions(epochs=cfg.train.epochs, learning_rate=cfg.train.learning_rate,
                            optimizer=cfg.train.optimizer, weight_decay=cfg.train.weight_decay,
                            clip_norm=cfg.train.clip_norm, patience=cfg.train.patience, monitor=cfg.train.monitor,
                            mode="max", seed=cfg.train.seed, accelerator=cfg.train.accelerator, progress=progress,
                            lr_decay=cfg.train.lr_decay, lr_decay_patience=cfg.train.lr_decay_patience,
                            max_seconds=seconds_budget(cfg.train.max_minutes),
                            precision=cfg.train.precision)
    history = fit(model, train_loader, dev_loader, loss_fn=loss_fn, predict_fn=predict_fn, metric_fn=metric_fn,
                  options=options, run=run, log=log)

    prep.save(run)
    run.save_model(model, NAME, hyper)
    trained = TrainedImageClassifier(model, prep, device=_inference_device(cfg.train.accelerator))
    dev_metrics = trained.evaluate_arrays(dev_images, dev_labels, "dev")
    model.cpu()
    seconds = time.perf_counter() - t + prior_seconds()  # a resumed run: its whole training
    metrics = {"dev": dev_metrics, "train_seconds": seconds, "parameters": params,
               "best_epoch": _best_epoch(history, cfg.train.monitor), "epochs_run": len(history), "stopped": stop_reason()}
    run.write_json("metrics.json", metrics)
    curves = plot_learning_curves(history, run.file("learning_curves.png"))
    classes = [str(c) for c in prep.classes]
    plot_confusion(dev_metrics["confusion_matrix"], classes, run.file("confusion_matrix.png"))
    per_class = dev_metrics["per_class"]
    report = [f"# Image classification run: {run.path.name}", "",
              f"Trained on `{train_path}` ({len(images)} {_examples_phrase(prep, is_ts)}), selected on "
              f"{'`' + str(dev_path) + '`' if dev_path else 'a held-out part of the training data'} "
              f"({len(dev_images)} {'series' if is_ts else 'images'}) in {seconds:.0f} s; best epoch "
              f"{metrics['best_epoch']} of {len(history)}.",
              "", (f"Series read one time point per step: {_steps_phrase(prep)}" if is_ts else
                   f"Images read as `{cfg.data.sequence}`: {_steps_phrase(prep)}")
              + (f" (pixel permutation seed {cfg.data.permutation_seed}, saved in permutation.json)"
                 if cfg.data.sequence == "permuted" else "") + ".",
              "", f"Model: cell {cfg.model.cell}, hidden {cfg.model.hidden_size}, {cfg.model.num_layers} layer(s)"
              f"{', bidirectional' if cfg.model.bidirectional else ''}, {params:,} parameters.", "",
              "## Dev metrics", "",
              markdown_table(["metric", "value"], [[k, dev_metrics[k]] for k in ("accuracy", "macro_f1")]),
              "", "## Per class (dev)", "",
              markdown_table(["class", "precision", "recall", "f1", "support"],
                             [[c, per_class["precision"][i], per_class["recall"][i], per_class["f1"][i],
                               per_class["support"][i]]
                              for i, c in enumerate(classes)]),
              "", "## Learning curves", "", "![learning curves](learning_curves.png)" if curves else "", "",
              "## Confusion matrix (dev)", "", "![confusion matrix](confusion_matrix.png)", ""]
    run.write_text("report.md", "\n".join(report))
    return metrics


def _examples_phrase(prep: Preprocessor, is_ts: bool) -> str:
    """How the report and log name the training examples: ``images of 8x8``, or for a UCR/UEA ``.ts`` file
    (time series, not pictures) ``series of 150 steps x 1 dimension``."""
    if is_ts:
        steps, dims = prep.image_shape
        return f"series of {steps} steps x {dims} dimension{'s' if dims != 1 else ''}"
    return f"images of {prep.describe()}"


def _steps_phrase(prep: Preprocessor) -> str:
    """``28 steps of 28 features`` (``1 feature``, not ``1 features``)."""
    return f"{prep.steps} steps of {prep.input_size} feature{'s' if prep.input_size != 1 else ''}"


__all__ = ["NAME", "DESCRIPTION", "Config", "ImageSequenceClassifier", "TrainedImageClassifier", "read_images",
           "train"]
