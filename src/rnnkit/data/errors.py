"""Errors raised by the data layer.

Every problem with input data surfaces as a :class:`DataError`: a one-line message that
names the source (file, and line or row where known), says what is wrong and how to fix it.
``DataError`` subclasses :class:`ValueError`, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from os import PathLike

__all__ = ["DataError", "config_keys", "fixes", "for_command", "name_of", "one_line", "setting"]

_CONFIG_KEYS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "rnnkit_config_keys", default=None
)


@contextlib.contextmanager
def config_keys(keys: Mapping[str, str]) -> Iterator[None]:
    """Inside this block, fixes built with :func:`setting` name config keys, as a command sets
    them (``--set data.fill=ffill``), instead of the readers' Python arguments (``fill='ffill'``).

    Args:
        keys: Reader argument name -> config key (``{"fill": "data.fill"}``). An argument with no
            key here has no setting on that command, and the fix leaves it out.
    """
    token = _CONFIG_KEYS.set(dict(keys))
    try:
        yield
    finally:
        _CONFIG_KEYS.reset(token)


def for_command() -> bool:
    """Whether errors are being worded for a command (inside :func:`config_keys`)."""
    return _CONFIG_KEYS.get() is not None


def setting(argument: str, *values: str | tuple[str, str], then: str = "") -> str | None:
    """A fix that sets a reader argument, worded for whoever called the reader.

    Args:
        argument: The reader's argument name (``"fill"``).
        *values: Suggested values: a string (written ``'ffill'`` in Python, ``ffill`` on the
            command line), or a ``(python, command_line)`` pair such as ``("True", "true")``.
        then: Text appended to the fix (when there is one).

    Returns:
        ``"pass fill='ffill' or 'zero'"``; inside :func:`config_keys`, ``"add --set
        data.fill=ffill (or zero)"``, or ``None`` when the command has no key for ``argument``.
    """
    python = [repr(v) if isinstance(v, str) else v[0] for v in values]
    command = [v if isinstance(v, str) else v[1] for v in values]
    keys = _CONFIG_KEYS.get()
    if keys is None:
        return f"pass {argument}={fixes(*python) or '...'}{then}"
    key = keys.get(argument)
    if key is None:
        return None
    rest = f" (or {', '.join(command[1:])})" if len(command) > 1 else ""
    return f"add --set {key}={command[0] if command else 'VALUE'}{rest}{then}"


def name_of(argument: str) -> str:
    """A reader argument's name as the caller knows it: the config key inside :func:`config_keys`
    (``data.member_prefix``), else the argument (``member_prefix``)."""
    keys = _CONFIG_KEYS.get()
    return argument if keys is None else keys.get(argument, argument)


def fixes(*parts: str | None) -> str:
    """Join the available fixes (``None`` parts dropped): ``"a, b or c"``."""
    kept = [p for p in parts if p]
    return kept[0] if len(kept) == 1 else f"{', '.join(kept[:-1])} or {kept[-1]}" if kept else ""


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
