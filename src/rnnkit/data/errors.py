"""Errors raised by the data layer.

Every problem with input data surfaces as a :class:`DataError`: a one-line message that
names the source (file, and line or row where known), says what is wrong and how to fix it.
``DataError`` subclasses :class:`ValueError`, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from os import PathLike

__all__ = ["DataError", "one_line"]


def one_line(text: str) -> str:
    """Collapse whitespace (newlines included) so a message fits on one line.

    Args:
        text: Any text.

    Returns:
        The text with every run of whitespace replaced by a single space.
    """
    return " ".join(str(text).split())


class DataError(ValueError):
    """A one-line error about bad input data.

    Args:
        message: What is wrong.
        path: The file (or archive member) involved, if any.
        line: 1-based line number in ``path``, if known.
        row: 1-based data row (for tables whose rows are not lines, e.g. Parquet).
        hint: How to fix it.

    The string form is ``"<path>:<line>: <message>; fix: <hint>"`` with the missing parts left
    out, always on a single line.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        line: int | None = None,
        row: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = one_line(message)
        self.path = None if path is None else str(path)
        self.line = line
        self.row = row
        self.hint = None if hint is None else one_line(hint)
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
            elif self.row is not None:
                where += f" row {self.row}"
        elif self.line is not None:
            where = f"line {self.line}"
        elif self.row is not None:
            where = f"row {self.row}"
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f"; fix: {self.hint}"
        return one_line(text)
