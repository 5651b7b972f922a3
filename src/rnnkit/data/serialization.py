"""JSON persistence for fitted transforms (never pickle).

Every fitted object of the data layer (scalers, tokenizers, vocabularies, label encoders,
feature extractors, pixel permutations...) derives from :class:`JsonSerializable`: it
exposes ``to_config()`` returning plain JSON data and ``from_config(config)`` rebuilding an
equal object, plus ``save(path)`` / ``load(path)`` writing a small JSON document
``{"type": ..., "format_version": 1, "config": {...}}``. :func:`load_transform` rebuilds any
registered class from such a file without knowing its type in advance.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..runtime import atomic_write_bytes
from .errors import DataError

__all__ = [
    "JsonSerializable",
    "FORMAT_VERSION",
    "load_transform",
    "transform_from_config",
    "registered_types",
]

FORMAT_VERSION = 1

_REGISTRY: dict[str, type[JsonSerializable]] = {}

T = TypeVar("T", bound="JsonSerializable")


class JsonSerializable:
    """Mixin: JSON ``to_config`` / ``from_config`` and ``save`` / ``load``.

    Subclasses implement :meth:`to_config` and :meth:`from_config`; they are registered under
    their class name (or ``type_name``) when defined.
    """

    type_name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("type_name") or cls.__name__
        cls.type_name = name
        _REGISTRY[name] = cls

    def to_config(self) -> dict[str, Any]:
        """Return the object's state as JSON-able data.

        Returns:
            A dict of plain Python values (str, int, float, bool, None, lists, dicts).
        """
        raise NotImplementedError

    @classmethod
    def from_config(cls: type[T], config: dict[str, Any]) -> T:
        """Rebuild an object from :meth:`to_config` output.

        Args:
            config: The dict returned by ``to_config``.

        Returns:
            An equivalent object.
        """
        raise NotImplementedError

    def to_document(self) -> dict[str, Any]:
        """Return the full self-describing document written by :meth:`save`.

        Returns:
            ``{"type": name, "format_version": 1, "config": to_config()}``.
        """
        return {"type": self.type_name, "format_version": FORMAT_VERSION, "config": self.to_config()}

    def save(self, path: str | PathLike[str]) -> Path:
        """Write the object as JSON (atomically: to a temporary file beside ``path``, flushed to
        disk and renamed over it, so a crash leaves the old file or the new one, never half).

        Args:
            path: Destination file (parent folders are created).

        Returns:
            The path written.
        """
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            text = json.dumps(self.to_document(), indent=1, allow_nan=False, ensure_ascii=False)
        except ValueError as exc:  # NaN or inf in a fitted statistic
            raise DataError(
                f"cannot save {self.type_name}: {exc}",
                path=out,
                hint="fit on data without NaN/inf values",
            ) from None
        atomic_write_bytes(out, (text + "\n").encode("utf-8"))
        return out

    @classmethod
    def load(cls: type[T], path: str | PathLike[str]) -> T:
        """Read an object written by :meth:`save`.

        Args:
            path: A JSON file written by ``save``.

        Returns:
            The rebuilt object; a :class:`DataError` if the file holds another type.
        """
        obj = load_transform(path)
        if not isinstance(obj, cls):
            raise DataError(
                f"file holds a {type(obj).__name__}, not a {cls.__name__}",
                path=path,
                hint=f"load it with {type(obj).__name__}.load or rnnkit.data.load_transform",
            )
        return obj

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, JsonSerializable)
        return self.to_config() == other.to_config()

    __hash__ = None  # type: ignore[assignment]


def _detail(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing entry {exc}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200] or type(exc).__name__


def registered_types() -> list[str]:
    """List the names of the classes :func:`load_transform` can rebuild.

    Returns:
        Sorted class names.
    """
    return sorted(_REGISTRY)


def transform_from_config(document: dict[str, Any], *, source: str | None = None) -> JsonSerializable:
    """Rebuild an object from a ``{"type", "config"}`` document.

    Args:
        document: A dict as produced by ``JsonSerializable.to_document``.
        source: Where the document came from, for error messages.

    Returns:
        The rebuilt object.
    """
    if not isinstance(document, dict) or "type" not in document or "config" not in document:
        raise DataError(
            "not an rnnkit transform document (needs keys 'type' and 'config')",
            path=source,
            hint="pass a file written by .save()",
        )
    version = document.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise DataError(
            f"unsupported format_version {version!r} (this rnnkit reads {FORMAT_VERSION})",
            path=source,
            hint="re-save the transform with this rnnkit version",
        )
    name = document["type"]
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise DataError(
            f"unknown transform type {name!r}; known: {', '.join(registered_types())}",
            path=source,
            hint="import the module that defines it first",
        )
    config = document["config"]
    if not isinstance(config, dict) or cls.from_config.__func__ is JsonSerializable.from_config.__func__:  # type: ignore[attr-defined]
        what = "its config is not a JSON object" if not isinstance(config, dict) else "an abstract type"
        raise DataError(
            f"corrupt {name} document ({what})", path=source, hint="re-save the transform with .save()"
        )
    try:
        return cls.from_config(config)
    except DataError as exc:
        if exc.path is None and source is not None:
            raise DataError(exc.message, path=source, hint=exc.hint) from None
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, RecursionError,
            NotImplementedError) as exc:
        raise DataError(
            f"corrupt {name} config ({_detail(exc)})", path=source, hint="re-save the transform with .save()"
        ) from None


def load_transform(path: str | PathLike[str]) -> JsonSerializable:
    """Load any saved transform, whatever its type.

    Args:
        path: A JSON file written by ``save``.

    Returns:
        The rebuilt object.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found", path=p, hint="check the path")
    try:
        document = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"invalid JSON: {exc.msg}", path=p, line=exc.lineno, hint="re-save the transform"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not UTF-8 text (byte {exc.start}): not a saved transform", path=p, hint="re-save the transform"
        ) from None
    except RecursionError:
        raise DataError("invalid JSON: nested too deeply", path=p, hint="re-save the transform") from None
    except OSError as exc:
        raise DataError(
            f"cannot read the file ({exc.strerror or exc})", path=p, hint="check its permissions"
        ) from None
    return transform_from_config(document, source=str(p))
