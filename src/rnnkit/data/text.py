"""Readers for labelled text: CSV/TSV, JSON Lines, ``label sentence`` lines, and
folder-per-class layouts (aclImdb's ``train/pos/*.txt``), also straight from a
``.tar``/``.tar.gz``/``.tar.xz`` archive.

Every reader returns a list of :class:`TextExample` (text, label, source). ``source`` is
``"file:line"`` or ``"archive::member"`` so any example can be traced back to its origin.
Undecodable bytes raise a one-line :class:`~rnnkit.data.errors.DataError` with file and line,
unless ``errors="replace"`` is passed.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
import math
import re
import shlex
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import DataError, fixes, name_of, setting
from .io import PathLike_, check_file, decode_bytes, iter_lines, read_text

logger = logging.getLogger("rnnkit.data")

__all__ = [
    "TextExample",
    "read_delimited",
    "read_jsonl",
    "read_label_sentence",
    "read_class_folders",
    "texts_and_labels",
]


@dataclass(frozen=True)
class TextExample:
    """One labelled text.

    Attributes:
        text: The text.
        label: Its label (as written in the source), or ``None`` for unlabelled data.
        source: Where it came from (``"file:line"`` or ``"archive::member"``).
    """

    text: str
    label: str | None
    source: str


def texts_and_labels(examples: Iterable[TextExample]) -> tuple[list[str], list[str | None]]:
    """Split examples into parallel lists.

    Args:
        examples: Examples from any reader.

    Returns:
        ``(texts, labels)``.
    """
    texts: list[str] = []
    labels: list[str | None] = []
    for ex in examples:
        texts.append(ex.text)
        labels.append(ex.label)
    return texts, labels


def _resolve_column(
    column: str | int, header: Sequence[str] | None, path: Path, role: str, ncols: int
) -> int:
    if isinstance(column, int):
        index = column if column >= 0 else ncols + column
        if not 0 <= index < ncols:
            raise DataError(
                f"{role} column index {column} out of range: the file has {ncols} columns",
                path=path,
                line=1,
                hint=f"pick an index between 0 and {ncols - 1}",
            )
        return index
    if header is None:
        raise DataError(
            f"{role} column {column!r} given by name but the file is read without a header row",
            path=path,
            hint=fixes(
                setting(f"{role}_column", ("<index>", "<index>"), then=" (0-based)"),
                setting("has_header", ("True", "true"), then=" if its first row names the columns"),
            ),
        )
    if column not in header:
        near = _closest(column, header)
        raise DataError(
            f"no {role} column {column!r}; columns are {list(header)}"
            + (f"; did you mean {near!r}?" if near else ""),
            path=path,
            line=1,
            hint=setting(f"{role}_column", (repr(near), shlex.quote(near)))
            if near
            else fixes(
                setting(f"{role}_column", ("<name>", "<name>"), then=" with one of those names (or a 0-based index)"),
                setting("has_header", ("False", "false"), then=" and give 0-based column indexes if the first row "
                        "is data, not names"),
            ),
        )
    return list(header).index(column)


def _closest(name: str, names: Sequence[str]) -> str | None:
    """The name in ``names`` that ``name`` most likely meant (same letters in another case, else the
    closest spelling), or ``None``."""
    same = [n for n in names if n.strip().lower() == name.strip().lower()]
    if same:
        return same[0]
    lowered = {n.lower(): n for n in reversed(names)}
    near = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[near[0]] if near else None


def read_delimited(
    path: PathLike_,
    text_column: str | int = "text",
    label_column: str | int | None = "label",
    *,
    delimiter: str | None = None,
    has_header: bool = True,
    encoding: str = "utf-8",
    errors: str = "strict",
    skip_empty: bool = True,
) -> list[TextExample]:
    """Read a CSV or TSV file (plain or ``.gz``) with chosen text and label columns.

    Args:
        path: The file.
        text_column: Column name (needs a header) or 0-based index of the text.
        label_column: Column name or index of the label, or ``None`` for unlabelled data.
        delimiter: Field separator; by default ``'\\t'`` for ``.tsv``/``.tab`` files and ``','``
            otherwise.
        has_header: Whether the first row holds column names.
        encoding: Text encoding.
        errors: ``'strict'`` (raise on undecodable bytes) or ``'replace'``.
        skip_empty: Skip rows whose text is empty or whitespace.

    Returns:
        The examples in file order (an empty label cell gives the label ``None``: missing).
    """
    p = check_file(path)
    if delimiter is None:
        suffixes = [s.lower() for s in p.suffixes]
        delimiter = "\t" if ".tsv" in suffixes or ".tab" in suffixes else ","
    text = read_text(p, encoding=encoding, errors=errors)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        first = next(reader)
    except StopIteration:
        raise DataError("file is empty", path=p, hint="check the file was written completely") from None
    except csv.Error as exc:
        raise DataError(
            f"malformed CSV: {exc}", path=p, line=1, hint="check quoting and the delimiter"
        ) from None
    ncols = len(first)
    header = [h.strip() for h in first] if has_header else None
    ti = _resolve_column(text_column, header, p, "text", ncols)
    li = None if label_column is None else _resolve_column(label_column, header, p, "label", ncols)
    rows: Iterable[list[str]] = reader if has_header else _prepend(first, reader)
    out: list[TextExample] = []
    skipped: list[int] = []
    end = reader.line_num if has_header else 0
    try:
        for row in rows:
            # a quoted field may hold newlines: a record is named by the line it starts on
            line, end = end + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != ncols:
                spans = f" (the record runs from line {line} to line {end}: an unclosed quote?)" if end > line else ""
                raise DataError(
                    f"row has {len(row)} fields, the {'header' if has_header else 'first row'} has {ncols}{spans}",
                    path=p,
                    line=line,
                    hint=f"quote fields containing {delimiter!r} or fix the row",
                )
            value = row[ti]
            if skip_empty and not value.strip():
                skipped.append(line)
                continue
            # an empty label cell (what pandas writes for NaN) is a missing label, as JSON null is
            label = None if li is None else row[li].strip() or None
            out.append(TextExample(value, label, f"{p}:{line}"))
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", path=p, line=reader.line_num, hint="check quoting") from None
    _report_skipped(p, skipped)
    return out


def _report_skipped(path: Path, lines: list[int]) -> None:
    """Log the records skipped for an empty text (``skip_empty=True``), so none vanishes silently."""
    if lines:
        logger.warning(
            "%s: skipped %d record(s) with an empty text (first on line %d); pass skip_empty=False to keep them",
            path,
            len(lines),
            lines[0],
        )


def _prepend(first: list[str], rest: Iterable[list[str]]) -> Iterable[list[str]]:
    yield first
    yield from rest


def read_jsonl(
    path: PathLike_,
    text_field: str = "text",
    label_field: str | None = "label",
    *,
    encoding: str = "utf-8",
    errors: str = "strict",
    skip_empty: bool = True,
    label_separator: str = "|",
) -> list[TextExample]:
    """Read a JSON Lines file (one object per line, plain or ``.gz``).

    Args:
        path: The file.
        text_field: Key of the text.
        label_field: Key of the label, or ``None``.
        encoding: Text encoding.
        errors: Decoding error policy.
        skip_empty: Skip records whose text is empty.
        label_separator: Joins the labels of a JSON list label (``["a", "b"]`` -> ``'a|b'``, a
            multi-label record, as a CSV cell would write it).

    Returns:
        The examples in file order (labels converted to ``str``, a whole float such as ``1.0`` as
        ``'1'``, ``true``/``false`` as written in JSON; a ``null`` or ``NaN`` label is ``None``).
    """
    p = check_file(path)
    out: list[TextExample] = []
    skipped: list[int] = []
    for number, line in iter_lines(p, encoding=encoding, errors=errors):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"invalid JSON ({exc.msg} at column {exc.colno})",
                path=p,
                line=number,
                hint="write one JSON object per line",
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"expected a JSON object, got {type(record).__name__}",
                path=p,
                line=number,
                hint="write one JSON object per line",
            )
        for key, role in ((text_field, "text"), (label_field, "label")):
            if key is not None and key not in record:
                near = _closest(key, sorted(record))
                raise DataError(
                    f"no {role} field {key!r}; fields are {sorted(record)}"
                    + (f"; did you mean {near!r}?" if near else ""),
                    path=p,
                    line=number,
                    hint=setting(f"{role}_field", (repr(near), shlex.quote(near)))
                    if near
                    else setting(f"{role}_field", ("<key>", "<key>"), then=" with one of those keys"),
                )
        value = record[text_field]
        if not isinstance(value, str):
            raise DataError(
                f"text field {text_field!r} is {type(value).__name__}, not a string",
                path=p,
                line=number,
                hint="store the text as a JSON string",
            )
        if skip_empty and not value.strip():
            skipped.append(number)
            continue
        raw = None if label_field is None else record[label_field]
        # null and NaN are missing labels (None), not the classes 'None' and 'nan'
        missing = raw is None or (isinstance(raw, float) and math.isnan(raw))
        if isinstance(raw, list):  # several labels of one text: joined as a multi-label cell writes them
            bad = [v for v in raw if not isinstance(v, str | int | float) or isinstance(v, bool)]
            if bad or any(label_separator in _json_label(v) for v in raw):
                raise DataError(
                    f"label field {label_field!r} is a list with {bad[0]!r} in it" if bad else
                    f"a label in {raw!r} contains the label separator {label_separator!r}",
                    path=p,
                    line=number,
                    hint="write a label as a string or number, or a list of them"
                    if bad else setting("label_separator", ("';'", "';'")),
                )
            label = label_separator.join(_json_label(v) for v in raw) if raw else None
        elif isinstance(raw, dict):
            raise DataError(f"label field {label_field!r} is an object", path=p, line=number,
                            hint="write a label as a string or number, or a list of them")
        else:
            label = None if missing else _json_label(raw)
        out.append(TextExample(value, label, f"{p}:{number}"))
    _report_skipped(p, skipped)
    return out


def _json_label(raw: object) -> str:
    """A JSON label value as text: 1.0 (a float column written out) is ``'1'``, as in a file that
    writes 1; ``true``/``false`` as JSON and CSV files write them (Python's ``str`` gives ``'True'``)."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw)


def read_label_sentence(
    path: PathLike_,
    *,
    separator: str | None = None,
    label_first: bool = True,
    encoding: str = "utf-8",
    errors: str = "strict",
) -> list[TextExample]:
    """Read ``label sentence`` lines (SST-2's ``stsa.binary.*`` format, fastText-like files).

    Args:
        path: The file (plain or ``.gz``).
        separator: What splits the label from the sentence (default: the first run of
            whitespace).
        label_first: ``False`` for ``sentence label`` lines (label after the last separator).
        encoding: Text encoding.
        errors: Decoding error policy.

    Returns:
        The examples in file order; blank lines are skipped.
    """
    p = check_file(path)
    out: list[TextExample] = []
    for number, line in iter_lines(p, encoding=encoding, errors=errors):
        stripped = line.strip()
        if not stripped:
            continue
        parts = stripped.split(separator, 1) if label_first else stripped.rsplit(separator, 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise DataError(
                "expected 'label sentence' but found only one field",
                path=p,
                line=number,
                hint="put the label and the sentence on the same line, separated by whitespace",
            )
        label, sentence = (parts[0], parts[1]) if label_first else (parts[1], parts[0])
        out.append(TextExample(sentence.strip(), label.strip(), f"{p}:{number}"))
    return out


_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")


def _is_archive(p: Path) -> bool:
    name = p.name.lower()
    return p.is_file() and name.endswith(_ARCHIVE_SUFFIXES)


def _natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_class_folders(
    root: PathLike_,
    *,
    member_prefix: str | None = None,
    classes: Sequence[str] | None = None,
    pattern: str = "*.txt",
    encoding: str = "utf-8",
    errors: str = "strict",
) -> list[TextExample]:
    """Read a folder-per-class corpus (``root/<class>/<file>``), on disk or in a tar archive.

    For an archive (``.tar``, ``.tar.gz``, ``.tar.xz``...) pass the folder inside it as
    ``member_prefix`` (e.g. ``"aclImdb/train"``); the archive is streamed once, never
    extracted to disk.

    Args:
        root: A folder, or a tar archive.
        member_prefix: For archives: the folder inside the archive that holds the class
            folders. For folders: an optional sub-folder of ``root``.
        classes: Class folder names to read; default: every sub-folder holding files
            matching ``pattern`` (others, like aclImdb's ``unsup``, can be left out by listing
            the ones you want).
        pattern: Glob pattern of the files to read inside each class folder.
        encoding: Text encoding.
        errors: Decoding error policy.

    Returns:
        Examples sorted by class then by file name (natural order), label = class folder name.
        Hidden files and folders (``.DS_Store``, macOS's ``._name.txt``) are skipped.
    """
    rp = Path(root)
    if not rp.exists():
        raise DataError("folder or archive not found", path=rp, hint="check the path")
    if rp.is_dir():
        base = rp / member_prefix if member_prefix else rp
        if not base.is_dir():
            raise DataError("folder not found", path=base, hint=f"check {name_of('member_prefix')}")
        return _read_class_dirs(base, classes, pattern, encoding, errors)
    if _is_archive(rp):
        return _read_class_archive(rp, member_prefix or "", classes, pattern, encoding, errors)
    raise DataError(
        "not a folder nor a tar archive",
        path=rp,
        hint=f"pass a folder or an archive ending in one of {', '.join(_ARCHIVE_SUFFIXES)}",
    )


def _read_class_dirs(
    base: Path, classes: Sequence[str] | None, pattern: str, encoding: str, errors: str
) -> list[TextExample]:
    found = sorted(
        d.name for d in base.iterdir() if d.is_dir() and not _hidden(d.name) and any(_files(d, pattern))
    )
    wanted = list(classes) if classes is not None else found
    missing = [c for c in wanted if not (base / c).is_dir()]
    if missing:
        raise DataError(
            f"class folders {missing} not found; folders with {pattern!r} files: {found}",
            path=base,
            hint=setting("classes", ("[...]", "a,b"), then=" with a subset of the existing folders"),
        )
    if not wanted:
        raise DataError(
            f"no class sub-folders with {pattern!r} files", path=base,
            hint=fixes(f"give a folder holding one sub-folder of {pattern!r} files per class",
                       setting("member_prefix", "aclImdb/train", then=" for the class folders' parent inside it"),
                       setting("pattern", "*.*", then=" for files of any name")),
        )
    out: list[TextExample] = []
    for label in sorted(wanted):
        files = sorted(_files(base / label, pattern), key=lambda f: _natural_key(f.name))
        for f in files:
            text = decode_bytes(f.read_bytes(), f, encoding=encoding, errors=errors)
            out.append(TextExample(text, label, str(f)))
    return out


def _hidden(name: str) -> bool:
    """Hidden names (``.DS_Store``, macOS's ``._review.txt`` resource forks that archives made on
    a Mac carry next to every file, ``.ipynb_checkpoints``) are no data: readers skip them."""
    return name.startswith(".")


def _files(folder: Path, pattern: str) -> Iterable[Path]:
    return (f for f in folder.glob(pattern) if f.is_file() and not _hidden(f.name))


def _read_class_archive(
    archive: Path, prefix: str, classes: Sequence[str] | None, pattern: str, encoding: str, errors: str
) -> list[TextExample]:
    prefix = prefix.strip("/")
    wanted = None if classes is None else set(classes)
    items: list[tuple[str, str, str]] = []
    seen_dirs: set[str] = set()
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                rel = PurePosixPath(name)
                if prefix:
                    try:
                        rel = rel.relative_to(prefix)
                    except ValueError:
                        continue
                parts = rel.parts
                if len(parts) >= 1 and member.isdir() and not _hidden(parts[0]):
                    seen_dirs.add(parts[0])
                if not member.isfile() or len(parts) != 2:
                    continue
                label, fname = parts
                if _hidden(label) or _hidden(fname):
                    continue
                seen_dirs.add(label)
                if not PurePosixPath(fname).match(pattern) or (wanted is not None and label not in wanted):
                    continue
                fobj = tar.extractfile(member)
                assert fobj is not None  # member.isfile(): a regular file always has data
                source = f"{archive}::{member.name}"
                items.append(
                    (label, fname, decode_bytes(fobj.read(), source, encoding=encoding, errors=errors))
                )
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(
            f"cannot read archive ({exc})", path=archive, hint="check the file is a complete tar archive"
        ) from None
    labels_found = sorted({label for label, _, _ in items})
    if wanted is not None:
        missing = sorted(wanted - set(labels_found))
        if missing:
            raise DataError(
                f"class folders {missing} not found under {prefix or '/'!r} in the archive; folders there: {sorted(seen_dirs)}",
                path=archive,
                hint=f"check {name_of('member_prefix')} and {name_of('classes')}",
            )
    if not items:
        raise DataError(
            f"no {pattern!r} files in class folders under {prefix or '/'!r}; folders there: {sorted(seen_dirs)}",
            path=archive,
            hint=f"check {name_of('member_prefix')} (e.g. 'aclImdb/train') and pattern",
        )
    items.sort(key=lambda it: (it[0], _natural_key(it[1])))
    return [
        TextExample(text, label, f"{archive}::{(prefix + '/') if prefix else ''}{label}/{fname}")
        for label, fname, text in items
    ]
