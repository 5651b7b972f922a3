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

    ``@classLabel true <labels>`` takes the last ``:`` field of each line as a declared class
    label; ``@targetLabel true`` takes it as a numeric regression target (kept as a string in
    ``labels``). ``@dimensions``, ``@univariate true`` and ``@equalLength true`` with
    ``@seriesLength`` are checked against every line. Time-stamped series are refused.

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
    has_target = False
    class_labels: tuple[str, ...] = ()
    declared_dims: int | None = None
    declared_length: int | None = None
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
            key, *rest = line[1:].split(None, 1)
            key = key.lower()
            value = rest[0].strip() if rest else ""
            if key == "data":
                in_data = True
                if header.get("timestamps", "false").lower() == "true":
                    raise DataError(
                        "@timeStamps true is not supported",
                        path=p,
                        line=number,
                        hint="export the data without timestamps",
                    )
                if has_labels and has_target:
                    raise DataError(
                        "both @classLabel true and @targetLabel true",
                        path=p,
                        line=number,
                        hint="keep only one of the two tags true",
                    )
                declared_dims, declared_length = _declared_shape(header, p, number)
                continue
            header[key] = value
            if key in ("dimensions", "serieslength") and not (value.isascii() and value.isdigit()):
                tag = "@dimensions" if key == "dimensions" else "@seriesLength"
                raise DataError(
                    f"{tag} must be a whole number, got {value!r}",
                    path=p,
                    line=number,
                    hint=f"fix the {tag} header line",
                )
            if key in ("classlabel", "targetlabel"):
                parts = value.split()
                flag = parts[0].lower() if parts else ""
                if flag not in ("true", "false"):
                    raise DataError(
                        f"@{'classLabel' if key == 'classlabel' else 'targetLabel'} must be 'true' or 'false',"
                        f" got {value!r}",
                        path=p,
                        line=number,
                        hint="write e.g. '@classLabel true <label> <label>...' or '@classLabel false'",
                    )
                if key == "targetlabel":
                    has_target = flag == "true"
                    continue
                has_labels = flag == "true"
                class_labels = tuple(parts[1:]) if has_labels else ()
                if has_labels and not class_labels:
                    raise DataError(
                        "@classLabel true without the list of labels",
                        path=p,
                        line=number,
                        hint="list the labels: '@classLabel true <label> <label>...'",
                    )
            continue
        fields = line.split(":")
        label: str | None = None
        if has_labels or has_target:
            what = "label" if has_labels else "target"
            if len(fields) < 2 or (declared_dims is not None and len(fields) == declared_dims):
                raise DataError(
                    f"data line has no {what} after the series",
                    path=p,
                    line=number,
                    hint=f"end each line with ':<{what}>'",
                )
            label = fields[-1].strip()
            fields = fields[:-1]
            if has_labels and label not in class_labels:
                raise DataError(
                    f"label {label!r} not declared in @classLabel {list(class_labels)}",
                    path=p,
                    line=number,
                    hint="fix the label or add it to the @classLabel line",
                )
            if has_target:
                try:
                    float(label)
                except ValueError:
                    raise DataError(
                        f"target {label!r} is not a number",
                        path=p,
                        line=number,
                        hint="end each line with ':<number>' (or use @classLabel for class labels)",
                    ) from None
        if any("(" in f for f in fields):
            raise DataError(
                "time-stamped values '(t, v)' are not supported",
                path=p,
                line=number,
                hint="export the data without timestamps (@timeStamps false)",
            )
        if declared_dims is not None and len(fields) != declared_dims:
            raise DataError(
                f"line has {len(fields)} dimensions, the header declares {declared_dims}",
                path=p,
                line=number,
                hint="fix the line or the @dimensions/@univariate header",
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
                f"non-numeric value ({exc})",
                path=p,
                line=number,
                hint="values must be numbers or '?' (a class label at the end needs '@classLabel true <labels>')",
            ) from None
        length = {len(c) for c in channels}
        if len(length) != 1:
            raise DataError(
                f"dimensions have different lengths {[len(c) for c in channels]}",
                path=p,
                line=number,
                hint="pad dimensions to the same length (e.g. with '?')",
            )
        if declared_length is not None and len(channels[0]) != declared_length:
            raise DataError(
                f"series has length {len(channels[0])}, @seriesLength declares {declared_length}",
                path=p,
                line=number,
                hint="fix the line, or the header (@equalLength false)",
            )
        series.append(np.stack(channels, axis=1))
        labels.append(label)
    if not in_data:
        raise DataError("no @data line", path=p, hint="check the file is in .ts format")
    if not series:
        raise DataError(
            "no examples after @data", path=p, hint="add data lines after @data (the file may be cut short)"
        )
    return TsDataset(series, labels, class_labels, header)


def _declared_shape(header: dict[str, str], p: PathLike_, number: int) -> tuple[int | None, int | None]:
    """The dimensions (``@dimensions``/``@univariate true``) and the length (``@equalLength true``
    with ``@seriesLength``) the header declares, or ``None`` where it declares none."""
    found = {key: int(header[key]) for key in ("dimensions", "serieslength") if key in header}
    dims = found.get("dimensions")
    if header.get("univariate", "").lower() == "true":
        if dims not in (None, 1):
            raise DataError(
                f"@univariate true but @dimensions {dims}",
                path=p,
                line=number,
                hint="fix @univariate or @dimensions",
            )
        dims = 1
    equal = header.get("equallength", "").lower() == "true"
    return dims, found.get("serieslength") if equal else None
