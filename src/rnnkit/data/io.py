"""Low-level file helpers shared by the readers: opening (plain or gzip), decoding with
line-accurate errors, and checked paths."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import IO

from .errors import DataError, fixes, for_command, setting

__all__ = [
    "PathLike_",
    "check_file",
    "open_binary",
    "decode_bytes",
    "iter_lines",
    "read_text",
    "is_number",
    "ERRORS_MODES",
]

PathLike_ = str | PathLike[str]

ERRORS_MODES = ("strict", "replace", "ignore")


def check_file(path: PathLike_, what: str = "file") -> Path:
    """Return ``path`` as a :class:`Path`, or raise :class:`DataError` if it is not a file.

    Args:
        path: The path to check.
        what: Word used in the error ("file", "archive"...).

    Returns:
        The path.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"{what} not found", path=p, hint="check the path (relative paths start at the current folder)"
        )
    if not p.is_file():
        raise DataError(f"{what} is not a regular file", path=p, hint="pass a file, not a folder")
    return p


def _check_errors(errors: str) -> None:
    if errors not in ERRORS_MODES:
        raise DataError(
            f"errors must be one of {ERRORS_MODES}, got {errors!r}", hint="use errors='strict' or 'replace'"
        )


def open_binary(path: PathLike_) -> IO[bytes]:
    """Open a file for binary reading, transparently gunzipping ``.gz`` files (by magic bytes).

    Args:
        path: The file.

    Returns:
        A binary file object.
    """
    p = check_file(path)
    with open(p, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(p, "rb")  # type: ignore[return-value]
    return open(p, "rb")


def _decode_fix() -> str:
    if not for_command():
        return "pass the right encoding=..., or errors='replace' to substitute U+FFFD"
    replace = setting("errors", "replace")
    return fixes("re-save the file as UTF-8", replace and f"{replace} to substitute U+FFFD")


def decode_bytes(
    data: bytes, source: PathLike_, *, encoding: str = "utf-8", errors: str = "strict", first_line: int = 1
) -> str:
    """Decode ``data``; on failure raise a :class:`DataError` naming the file and line.

    Args:
        data: Raw bytes.
        source: File name for messages.
        encoding: Text encoding.
        errors: ``'strict'`` (raise), ``'replace'`` (U+FFFD) or ``'ignore'``.
        first_line: Line number of the first line in ``data``.

    Returns:
        The decoded text (a leading UTF-8 byte-order mark removed).
    """
    _check_errors(errors)
    try:
        text = data.decode(encoding, errors=errors)
    except UnicodeDecodeError as exc:
        line = first_line + data[: exc.start].count(b"\n")
        bad = data[exc.start : exc.end].hex(" ")
        raise DataError(
            f"cannot decode bytes {bad} as {encoding} ({exc.reason})",
            path=source,
            line=line,
            hint=_decode_fix(),
        ) from None
    except LookupError:
        raise DataError(
            f"unknown encoding {encoding!r}", path=source, hint="use e.g. encoding='utf-8' or 'latin-1'"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def iter_lines(
    path: PathLike_, *, encoding: str = "utf-8", errors: str = "strict", keepends: bool = False
) -> Iterator[tuple[int, str]]:
    """Stream ``(line_number, text)`` pairs from a plain or gzipped text file.

    Args:
        path: The file.
        encoding: Text encoding.
        errors: Decoding error policy (see :func:`decode_bytes`).
        keepends: Keep the trailing newline.

    Returns:
        An iterator of 1-based line numbers and decoded lines (no newline unless ``keepends``).
    """
    _check_errors(errors)
    with open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            text = decode_bytes(raw, path, encoding=encoding, errors=errors, first_line=number)
            if not keepends:
                text = text.rstrip("\r\n")
            yield number, text


def read_text(path: PathLike_, *, encoding: str = "utf-8", errors: str = "strict") -> str:
    """Read a whole (plain or gzipped) text file.

    Args:
        path: The file.
        encoding: Text encoding.
        errors: Decoding error policy.

    Returns:
        The decoded text.
    """
    with open_binary(path) as f:
        data = f.read()
    return decode_bytes(data, path, encoding=encoding, errors=errors)


def is_number(text: str) -> bool:
    """Whether ``float(text)`` reads ``text`` (what NumPy's string-to-float conversion accepts too)."""
    try:
        float(text)
    except ValueError:
        return False
    return True
