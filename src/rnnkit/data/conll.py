"""CoNLL column files and chunk tag schemes (IOB1, IOB2, BIOES).

:func:`read_conll` reads whitespace- (or tab-) separated column files: one token per line,
blank lines between sentences, ``-DOCSTART-`` lines skipped. Every line must have the same
number of columns; a line that does not raises an error naming file and line.

Tag schemes:

* ``IOB1`` (CoNLL-2003 original): ``I-X`` inside chunks; ``B-X`` only to start a chunk
  right after another ``X`` chunk.
* ``IOB2`` (a.k.a. BIO): every chunk starts with ``B-X``.
* ``BIOES`` (a.k.a. IOBES): ``S-X`` single-token chunks, ``B-X ... E-X`` longer ones.

:func:`tags_to_spans` extracts chunks (lenient, like ``conlleval``: an ``I-X`` that cannot
continue a chunk starts one), :func:`spans_to_tags` writes them in any scheme and
:func:`convert_tags` goes between schemes through spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import DataError, fixes, name_of, setting
from .io import PathLike_, check_file, iter_lines

__all__ = [
    "TaggedSentence",
    "Span",
    "TAG_SCHEMES",
    "read_conll",
    "normalize_scheme",
    "tags_to_spans",
    "spans_to_tags",
    "convert_tags",
    "validate_tags",
    "detect_scheme",
    "first_scheme_violation",
    "split_columns",
]

TAG_SCHEMES = ("IOB1", "IOB2", "BIOES")
_ALIASES = {"IOB1": "IOB1", "IOB": "IOB1", "IOB2": "IOB2", "BIO": "IOB2", "BIOES": "BIOES", "IOBES": "BIOES"}


@dataclass(frozen=True)
class TaggedSentence:
    """A sentence of a CoNLL file.

    Attributes:
        tokens: The tokens.
        tags: One tag per token.
        source: ``"file:line"`` of the sentence's first token.
        document: 0-based index of the document it belongs to (documents start at ``-DOCSTART-``
            lines; a file without them is one document).
    """

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    source: str
    document: int = 0

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True, order=True)
class Span:
    """A labelled chunk ``[start, end)`` over token positions.

    Attributes:
        start: First token index.
        end: One past the last token index.
        label: Chunk type (``PER``, ``LOC``...).
    """

    start: int
    end: int
    label: str


def normalize_scheme(scheme: str) -> str:
    """Return the canonical name of a tag scheme.

    Args:
        scheme: ``IOB1``, ``IOB2``, ``BIOES`` or an alias (``BIO``, ``IOB``, ``IOBES``),
            any case.

    Returns:
        One of :data:`TAG_SCHEMES`.
    """
    canon = _ALIASES.get(str(scheme).upper())
    if canon is None:
        raise DataError(
            f"unknown tag scheme {scheme!r}; valid schemes: {', '.join(TAG_SCHEMES)} (aliases: BIO=IOB2, IOBES=BIOES)",
            hint="pass one of the valid schemes",
        )
    return canon


def read_conll(
    path: PathLike_,
    token_column: int = 0,
    tag_column: int = -1,
    *,
    separator: str | None = None,
    docstart: str | None = "-DOCSTART-",
    encoding: str = "utf-8",
    errors: str = "strict",
) -> list[TaggedSentence]:
    """Read a CoNLL-style column file.

    Args:
        path: The file (plain or ``.gz``).
        token_column: 0-based index of the token column (negative counts from the end).
        tag_column: 0-based index of the tag column (default: the last one).
        separator: Column separator (default: any whitespace; pass ``'\\t'`` for tokens
            that contain spaces). Spaces around a column are dropped; a ``-DOCSTART-`` line is
            recognised however its columns are separated.
        docstart: Token that marks document boundaries; those lines are skipped. ``None``
            keeps them.
        encoding: Text encoding.
        errors: Decoding error policy.

    Returns:
        The sentences in file order.
    """
    p = check_file(path)
    sentences: list[TaggedSentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    start_line = 0
    ncols: int | None = None
    ncols_line = 0
    document = 0  # the first -DOCSTART- opens document 0, each later one the next
    seen_docstart = False

    def flush() -> None:
        nonlocal tokens, tags
        if tokens:
            sentences.append(TaggedSentence(tuple(tokens), tuple(tags), f"{p}:{start_line}", document))
        tokens, tags = [], []

    for number, line in iter_lines(p, encoding=encoding, errors=errors):
        fields = split_columns(line, separator)
        if not fields:
            flush()
            continue
        # a -DOCSTART- line is one however its columns are separated (a tab file may space them)
        if docstart is not None and line.split()[0] == docstart:
            flush()
            document += seen_docstart or bool(sentences)
            seen_docstart = True
            continue
        if ncols is None:
            ncols, ncols_line = len(fields), number
            for col, role in ((token_column, "token"), (tag_column, "tag")):
                if not -ncols <= col < ncols:
                    key = name_of(role + "_column")
                    command = "pass" if key == role + "_column" else "add --set"  # a Python call or a command
                    raise DataError(
                        f"{key}={col} but lines have {ncols} columns",
                        path=p,
                        line=number,
                        hint=f"{command} {key}=N with N between 0 and {ncols - 1} (-1 is the last column), "
                        "or give a file with the expected columns",
                    )
        elif len(fields) != ncols:
            raise DataError(
                f"line has {len(fields)} columns, expected {ncols} (as on line {ncols_line})",
                path=p,
                line=number,
                hint=fixes(
                    "fix the line", setting("separator", ("'\\t'", "tab"), then=" if tokens contain spaces")
                ),
            )
        for col, role in ((token_column, "token"), (tag_column, "tag")):
            if not fields[col]:  # only a separator given can leave a column empty ("\tB-ORG")
                raise DataError(
                    f"empty {role} in column {col % ncols} (the line is {line.rstrip(chr(10))!r})",
                    path=p,
                    line=number,
                    hint=f"give every line a {role}, or remove the line",
                )
        if not tokens:
            start_line = number
        tokens.append(fields[token_column])
        tags.append(fields[tag_column])
    flush()
    return sentences


def split_columns(line: str, separator: str | None) -> list[str]:
    """The columns of a line (``[]`` for a blank one): split on ``separator`` (any whitespace when
    ``None``), each column stripped of the spaces around it, so ``'EU\\tB-ORG '`` has the tag ``B-ORG``
    (spaces inside a column, as in ``New York``, stay)."""
    if separator is None:
        return line.split()
    if not line.strip():
        return []
    return [field.strip() for field in line.split(separator)]


def _split_tag(tag: str, position: int) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIES":
        return tag[0], tag[2:]
    raise DataError(
        f"malformed tag {tag!r} at position {position}",
        hint="tags must be 'O' or '<B|I|E|S>-<TYPE>' (e.g. B-PER)",
    )


def tags_to_spans(tags: Sequence[str], scheme: str = "IOB2") -> list[Span]:
    """Extract labelled chunks from a tag sequence, by ``conlleval``'s chunk rules.

    The rules are the same for every scheme (as in ``conlleval`` and seqeval's default mode):
    ``B-X`` and ``S-X`` start a chunk, ``E-X`` and ``S-X`` end it, ``O`` ends the open one, and an
    ``I-X`` (or ``E-X``) that cannot continue the open chunk (none is open, it has another type, or
    the previous tag ended it) starts a new one, so malformed sequences still yield spans. On tags
    of the scheme's own prefixes this is the scheme's reading (IOB1's ``I-X`` after ``O``, IOB2's
    ``B-X``, BIOES's ``E-X``/``S-X``); ``B-PER E-PER I-PER`` is two chunks under any scheme.

    Args:
        tags: One tag per token.
        scheme: The tag scheme of ``tags`` (checked; the chunk rules do not depend on it).

    Returns:
        Spans sorted by start.
    """
    normalize_scheme(scheme)
    spans: list[Span] = []
    start: int | None = None
    label = ""
    for i, tag in enumerate(tags):
        prefix, typ = _split_tag(tag, i)
        if prefix == "O":
            if start is not None:
                spans.append(Span(start, i, label))
            start = None
        elif prefix == "S":
            if start is not None:
                spans.append(Span(start, i, label))
            spans.append(Span(i, i + 1, typ))
            start = None
        elif prefix == "B" or start is None or typ != label:
            if start is not None:
                spans.append(Span(start, i, label))
            start, label = i, typ
            if prefix == "E":
                spans.append(Span(i, i + 1, typ))
                start = None
        elif prefix == "E":
            spans.append(Span(start, i + 1, label))
            start = None
        # prefix I continuing the open chunk: nothing to do
    if start is not None:
        spans.append(Span(start, len(tags), label))
    return spans


def spans_to_tags(spans: Sequence[Span], length: int, scheme: str = "IOB2") -> list[str]:
    """Write chunks as a tag sequence.

    Args:
        spans: Non-overlapping spans within ``[0, length)``.
        length: Number of tokens.
        scheme: Output tag scheme.

    Returns:
        ``length`` tags.
    """
    scheme = normalize_scheme(scheme)
    tags = ["O"] * length
    ordered = sorted(spans)
    prev_end, prev_label = -1, None
    for span in ordered:
        if not 0 <= span.start < span.end <= length:
            raise DataError(f"span {span} outside [0, {length})", hint="check span boundaries")
        if span.start < prev_end:
            raise DataError(f"span {span} overlaps the previous span", hint="spans must not overlap")
        n = span.end - span.start
        if scheme == "IOB2":
            tags[span.start] = f"B-{span.label}"
            for j in range(span.start + 1, span.end):
                tags[j] = f"I-{span.label}"
        elif scheme == "IOB1":
            adjacent = span.start == prev_end and prev_label == span.label
            tags[span.start] = f"{'B' if adjacent else 'I'}-{span.label}"
            for j in range(span.start + 1, span.end):
                tags[j] = f"I-{span.label}"
        else:
            if n == 1:
                tags[span.start] = f"S-{span.label}"
            else:
                tags[span.start] = f"B-{span.label}"
                for j in range(span.start + 1, span.end - 1):
                    tags[j] = f"I-{span.label}"
                tags[span.end - 1] = f"E-{span.label}"
        prev_end, prev_label = span.end, span.label
    return tags


def convert_tags(tags: Sequence[str], from_scheme: str, to_scheme: str) -> list[str]:
    """Convert a tag sequence between schemes (through spans).

    Args:
        tags: Tags in ``from_scheme``.
        from_scheme: Scheme of ``tags``.
        to_scheme: Wanted scheme.

    Returns:
        The same chunks written in ``to_scheme``.
    """
    return spans_to_tags(tags_to_spans(tags, from_scheme), len(tags), to_scheme)


def validate_tags(tags: Sequence[str], scheme: str) -> None:
    """Check that ``tags`` is a well-formed sequence of ``scheme``; raise :class:`DataError` if not.

    Args:
        tags: Tag sequence.
        scheme: Expected scheme.

    Returns:
        None.
    """
    scheme = normalize_scheme(scheme)
    problem = _scheme_violation(tags, scheme)
    if problem is not None:
        raise DataError(problem[1], hint=problem[2])


def _scheme_violation(tags: Sequence[str], scheme: str) -> tuple[int, str, str] | None:
    """``(position, message, fix)`` of the first tag that breaks ``scheme`` (canonical name), or None."""
    prev_prefix, prev_type = "O", ""
    for i, tag in enumerate(tags):
        prefix, typ = _split_tag(tag, i)
        ok = True
        if scheme in ("IOB1", "IOB2") and prefix in "ES":
            return (i, f"tag {tag!r} at position {i}: {scheme} has no {prefix}- prefix (it is a BIOES tag)",
                    f"convert the tags with convert_tags(tags, 'BIOES', {scheme!r}), or read them as BIOES")
        if (scheme == "IOB2" and prefix == "I") or (scheme == "IOB1" and prefix == "B"):
            ok = prev_prefix in "BI" and prev_type == typ
        elif scheme == "BIOES":
            open_chunk = prev_prefix in "BI"
            if prefix in "IE":
                ok = open_chunk and prev_type == typ
            else:
                ok = not open_chunk
        if not ok:
            return (i, f"tag {tag!r} at position {i} cannot follow {tags[i - 1] if i else 'the start'!r} in {scheme}",
                    f"fix the tags, or convert them with convert_tags(tags, <their scheme>, {scheme!r})")
        prev_prefix, prev_type = prefix, typ
    if scheme == "BIOES" and prev_prefix in "BI":
        return len(tags) - 1, f"{scheme} chunk not closed at the end (last tag {tags[-1]!r})", "end chunks with E- or use S-"
    return None


def detect_scheme(sentences: Sequence[Sequence[str]]) -> str:
    """Guess the tag scheme of tagged sentences.

    Args:
        sentences: Tag sequences.

    Returns:
        ``'BIOES'`` if any ``E-``/``S-`` tag appears; else ``'IOB1'`` or ``'IOB2'`` by how chunks
        start: a chunk that opens with ``I-`` (after ``O`` or another type) is IOB1's way, a ``B-``
        that opens a chunk after ``O`` or another type is IOB2's (IOB1 writes ``B-`` only between
        two chunks of one type). The scheme with more such starts wins, so a stray ``I-`` after
        ``O`` in an IOB2 file does not turn the whole file into IOB1 (ties, and files with
        neither, read as IOB2).
    """
    iob1 = iob2 = 0
    for tags in sentences:
        prev_prefix, prev_type = "O", ""
        for i, tag in enumerate(tags):
            prefix, typ = _split_tag(tag, i)
            if prefix in "ES":
                return "BIOES"
            after_other = prev_prefix == "O" or prev_type != typ
            if prefix == "I" and after_other:
                iob1 += 1
            elif prefix == "B" and after_other:
                iob2 += 1
            prev_prefix, prev_type = prefix, typ
    return "IOB1" if iob1 > iob2 else "IOB2"


def first_scheme_violation(sentences: Sequence[Sequence[str]], scheme: str) -> tuple[int, int, int] | None:
    """Where tag sequences first break ``scheme``: ``(sentence index, token position, number of
    sentences that break it)``, or ``None`` when every one is well formed (see :func:`validate_tags`)."""
    scheme = normalize_scheme(scheme)
    first: tuple[int, int] | None = None
    count = 0
    for index, tags in enumerate(sentences):
        problem = _scheme_violation(tags, scheme)
        if problem is not None:
            count += 1
            first = first or (index, problem[0])
    return None if first is None else (*first, count)
