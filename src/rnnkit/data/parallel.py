"""Parallel (source, target) sentence pairs for sequence-to-sequence tasks.

:func:`read_parallel` reads two line-aligned files (plain or ``.gz``, e.g. Multi30k's
``train.en.gz`` / ``train.de.gz``); :func:`read_parallel_tsv` reads one tab-separated file.
Files with different line counts raise an error naming both files and both counts. The
``empty`` policy decides what happens to pairs with an empty side; the number skipped is
recorded on the result.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import zip_longest

from .errors import DataError, fixes, setting
from .io import PathLike_, check_file, iter_lines

__all__ = ["ParallelCorpus", "read_parallel", "read_parallel_tsv", "EMPTY_POLICIES"]

EMPTY_POLICIES = ("skip", "keep", "error")


@dataclass
class ParallelCorpus:
    """Aligned sentence pairs.

    Attributes:
        sources: Source sentences.
        targets: Target sentences (same length as ``sources``).
        line_numbers: 1-based line of each kept pair.
        num_skipped_empty: Pairs dropped because a side was empty (``empty='skip'``).
        files: The file(s) read.
        num_ragged: TSV lines with another number of tab-separated fields than the first pair's
            (a tab inside a sentence shifts the columns: part of it is cut or read as the other side).
        first_ragged: ``(line, fields, first line, its fields)`` of the first such line, or ``None``.
    """

    sources: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    num_skipped_empty: int = 0
    files: tuple[str, ...] = ()
    num_ragged: int = 0
    first_ragged: tuple[int, int, int, int] | None = None

    def ragged_note(self) -> str | None:
        """A one-line note on TSV lines whose field count differs from the first pair's, or ``None``."""
        if self.first_ragged is None:
            return None
        line, fields, first_line, first_fields = self.first_ragged
        return (f"{self.files[0]}: {self.num_ragged} line(s) have another number of tab-separated fields than line "
                f"{first_line} ({first_fields}), first line {line} ({fields}): a tab inside a sentence shifts the "
                "columns, so part of it was cut or read as the other side; replace tabs inside sentences with spaces")

    def __len__(self) -> int:
        return len(self.sources)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(zip(self.sources, self.targets))

    def __getitem__(self, index: int) -> tuple[str, str]:
        return self.sources[index], self.targets[index]


def _check_policy(empty: str) -> None:
    if empty not in EMPTY_POLICIES:
        raise DataError(f"empty must be one of {EMPTY_POLICIES}, got {empty!r}", hint="use empty='skip'")


def _add(
    corpus: ParallelCorpus,
    src: str,
    tgt: str,
    number: int,
    empty: str,
    src_file: str,
    tgt_file: str,
    strip: bool,
) -> None:
    if strip:
        src, tgt = src.strip(), tgt.strip()
    if not src.strip() or not tgt.strip():
        if empty == "skip":
            corpus.num_skipped_empty += 1
            return
        if empty == "error":
            side, where = ("source", src_file) if not src.strip() else ("target", tgt_file)
            raise DataError(
                f"empty {side} sentence",
                path=where,
                line=number,
                hint=setting("empty", "skip", then=" to drop such pairs"),
            )
    corpus.sources.append(src)
    corpus.targets.append(tgt)
    corpus.line_numbers.append(number)


def read_parallel(
    source_path: PathLike_,
    target_path: PathLike_,
    *,
    empty: str = "skip",
    strip: bool = True,
    encoding: str = "utf-8",
    errors: str = "strict",
) -> ParallelCorpus:
    """Read two line-aligned files.

    Args:
        source_path: Source-language file (plain or ``.gz``).
        target_path: Target-language file, same number of lines.
        empty: ``'skip'`` pairs with an empty side (counted in ``num_skipped_empty``),
            ``'keep'`` them, or raise (``'error'``).
        strip: Strip surrounding whitespace.
        encoding: Text encoding.
        errors: Decoding error policy.

    Returns:
        The pairs.
    """
    _check_policy(empty)
    sp, tp = check_file(source_path), check_file(target_path)
    corpus = ParallelCorpus(files=(str(sp), str(tp)))
    n_src = n_tgt = 0
    src_iter = iter_lines(sp, encoding=encoding, errors=errors)
    tgt_iter = iter_lines(tp, encoding=encoding, errors=errors)
    mismatch = False
    for s, t in zip_longest(src_iter, tgt_iter):
        if s is not None:
            n_src = s[0]
        if t is not None:
            n_tgt = t[0]
        if s is None or t is None:
            mismatch = True
            continue
        _add(corpus, s[1], t[1], s[0], empty, str(sp), str(tp), strip)
    if mismatch:
        raise DataError(
            f"line counts differ: {sp} has {n_src} lines, {tp} has {n_tgt}",
            hint="pass files that are aligned line by line",
        )
    return corpus


def read_parallel_tsv(
    path: PathLike_,
    source_column: int = 0,
    target_column: int = 1,
    *,
    empty: str = "skip",
    strip: bool = True,
    has_header: bool = False,
    encoding: str = "utf-8",
    errors: str = "strict",
) -> ParallelCorpus:
    """Read sentence pairs from a tab-separated file.

    Args:
        path: The file (plain or ``.gz``).
        source_column: 0-based column of the source sentence.
        target_column: 0-based column of the target sentence.
        empty: Empty-side policy (see :func:`read_parallel`).
        strip: Strip surrounding whitespace.
        has_header: Skip the first line.
        encoding: Text encoding.
        errors: Decoding error policy.

    Returns:
        The pairs.
    """
    _check_policy(empty)
    p = check_file(path)
    corpus = ParallelCorpus(files=(str(p),))
    need = max(source_column, target_column) + 1
    first: tuple[int, int] | None = None  # (line, fields) of the first pair: every line must have as many
    for number, line in iter_lines(p, encoding=encoding, errors=errors):
        if has_header and number == 1:
            continue
        if not line.strip():
            if empty == "skip":
                corpus.num_skipped_empty += 1
                continue
            if empty == "error":
                raise DataError(
                    "blank line", path=p, line=number, hint=fixes("remove it", setting("empty", "skip"))
                )
        fields = line.split("\t")
        if len(fields) < need:
            raise DataError(
                f"line has {len(fields)} tab-separated fields, need at least {need}",
                path=p,
                line=number,
                hint="separate source and target with a tab",
            )
        if first is None:
            first = (number, len(fields))
        elif len(fields) != first[1]:  # a tab inside a sentence shifts the columns: recorded, never silent
            corpus.num_ragged += 1
            corpus.first_ragged = corpus.first_ragged or (number, len(fields), first[0], first[1])
        _add(corpus, fields[source_column], fields[target_column], number, empty, str(p), str(p), strip)
    return corpus
