"""Time-series classification files in the sktime ``.ts`` format (UCR/UEA archive).

A ``.ts`` file has ``@key value`` header lines then ``@data``; each data line holds the
dimensions separated by ``:`` (values comma-separated, ``?`` = missing) and, when
``@classLabel true``, the label as the last field. :func:`read_ts_file` returns one
``[T, D]`` float array per example, ready for :func:`~rnnkit.data.padding.pad_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import DataError
from .io import PathLike_, check_file, iter_lines

__all__ = ["TsDataset", "read_ts_file"]


@dataclass
class TsDataset:
    """Examples of a ``.ts`` file.

    Attributes:
        series: One float64 ``[T_i, D]`` array per example (NaN for ``?``).
        labels: One label per example (``None`` without ``@classLabel true``).
        class_labels: Labels declared in the header (in header order).
        header: All ``@key value`` header entries.
    """

    series: list[np.ndarray]
    labels: list[str | None]
    class_labels: tuple[str, ...]
    header: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.series)


def read_ts_file(path: PathLike_, *, encoding: str = "utf-8", errors: str = "strict") -> TsDataset:
    """Read a sktime/UCR ``.ts`` file (without ``@timeStamps true``).

    Args:
        path: The file (plain or ``.gz``).
        encoding: Text encoding.
        errors: Decoding error policy.

    Returns:
        A :class:`TsDataset`.
    """
    p = check_file(path)
    header: dict[str, str] = {}
    in_data = False
    series: list[np.ndarray] = []
    labels: list[str | None] = []
    has_labels = False
    class_labels: tuple[str, ...] = ()
    dims: int | None = None
    for number, raw in iter_lines(p, encoding=encoding, errors=errors):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise DataError(
                    "expected a '@key value' header line or '@data'",
                    path=p,
                    line=number,
                    hint="check the file is in .ts format",
                )
            key, _, value = line[1:].partition(" ")
            key = key.lower()
            if key == "data":
                in_data = True
                if header.get("timestamps", "false").lower() == "true":
                    raise DataError(
                        "@timeStamps true is not supported",
                        path=p,
                        line=number,
                        hint="export the data without timestamps",
                    )
                continue
            header[key] = value.strip()
            if key == "classlabel":
                parts = value.split()
                has_labels = bool(parts) and parts[0].lower() == "true"
                class_labels = tuple(parts[1:]) if has_labels else ()
            continue
        fields = line.split(":")
        label: str | None = None
        if has_labels:
            if len(fields) < 2:
                raise DataError(
                    "data line has no label after ':'",
                    path=p,
                    line=number,
                    hint="end each line with ':<label>'",
                )
            label = fields[-1].strip()
            fields = fields[:-1]
            if class_labels and label not in class_labels:
                raise DataError(
                    f"label {label!r} not declared in @classLabel {list(class_labels)}",
                    path=p,
                    line=number,
                    hint="fix the label or the header",
                )
        if dims is None:
            dims = len(fields)
        elif len(fields) != dims:
            raise DataError(
                f"line has {len(fields)} dimensions, earlier lines {dims}",
                path=p,
                line=number,
                hint="give every example the same dimensions",
            )
        try:
            channels = [
                np.asarray([np.nan if v.strip() == "?" else float(v) for v in f.split(",")], dtype=np.float64)
                for f in fields
            ]
        except ValueError as exc:
            raise DataError(
                f"non-numeric value ({exc})", path=p, line=number, hint="values must be numbers or '?'"
            ) from None
        length = {len(c) for c in channels}
        if len(length) != 1:
            raise DataError(
                f"dimensions have different lengths {sorted(length)}",
                path=p,
                line=number,
                hint="pad dimensions to the same length",
            )
        series.append(np.stack(channels, axis=1))
        labels.append(label)
    if not in_data:
        raise DataError("no @data line", path=p, hint="check the file is in .ts format")
    if not series:
        raise DataError("no examples after @data", path=p, hint="check the file")
    return TsDataset(series, labels, class_labels, header)
