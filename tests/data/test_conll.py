"""Tests for rnnkit.data.conll (column files and tag schemes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data import (
    TAG_SCHEMES,
    DataError,
    Span,
    convert_tags,
    detect_scheme,
    read_conll,
    spans_to_tags,
    tags_to_spans,
    validate_tags,
)
from rnnkit.data.conll import first_scheme_violation
from rnnkit.data.errors import config_keys

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP B-LOC
"""


def test_read_conll(tmp_path: Path) -> None:
    f = tmp_path / "train.txt"
    f.write_text(CONLL, encoding="utf-8")
    sents = read_conll(f)
    assert len(sents) == 3
    assert sents[0].tokens == ("EU", "rejects", "German", "call", ".")
    assert sents[0].tags == ("B-ORG", "O", "B-MISC", "O", "O")
    assert sents[0].source == f"{f}:3" and len(sents[0]) == 5
    assert sents[1].tags == ("B-PER", "I-PER") and sents[2].tokens == ("BRUSSELS",)
    pos = read_conll(f, token_column=0, tag_column=1)
    assert pos[0].tags == ("NNP", "VBZ", "JJ", "NN", ".")
    keep = read_conll(f, docstart=None)
    assert keep[0].tokens == ("-DOCSTART-",)


def test_conll_column_errors(tmp_path: Path) -> None:
    f = tmp_path / "bad.txt"
    f.write_text("EU NNP B-NP B-ORG\nrejects VBZ O\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_conll(f)
    assert f"{f}:2: line has 3 columns, expected 4 (as on line 1)" in str(err.value)
    f.write_text("EU B-ORG\n", encoding="utf-8")
    with pytest.raises(DataError, match="tag_column=5 but lines have 2 columns") as err:
        read_conll(f, tag_column=5)
    assert "fix: pass tag_column=N with N between 0 and 1 (-1 is the last column)" in str(err.value)
    with config_keys({"tag_column": "data.tag_column"}), pytest.raises(DataError) as err:
        read_conll(f, tag_column=5)  # worded for the command line, as a task reads its files
    assert str(err.value).startswith(f"{f}:1: data.tag_column=5 but lines have 2 columns; fix: add --set "
                                     "data.tag_column=N with N between 0 and 1")


def test_conll_tab_separator(tmp_path: Path) -> None:
    f = tmp_path / "tab.tsv"
    f.write_text("New York\tB-LOC\nis\tO\n\nok\tO\n", encoding="utf-8")
    sents = read_conll(f, separator="\t")
    assert sents[0].tokens == ("New York", "is") and len(sents) == 2


@pytest.mark.parametrize(("text", "line", "message"), [
    ("EU\tB-ORG\n\tO\n", 2, "empty token in column 0"),
    ("EU\tB-ORG\nrejects\t \n", 2, "empty tag in column 1"),
    ("EU\tNNP\tB-ORG\n  \tVBZ\tO\n", 2, "empty token in column 0"),
])
def test_conll_tab_file_with_an_empty_token_or_tag_is_refused(tmp_path: Path, text: str, line: int,
                                                              message: str) -> None:
    # split on a tab, a line may hold an empty column: a token "" would become a word of the vocabulary
    f = tmp_path / "tab.tsv"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_conll(f, separator="\t")
    assert str(err.value).startswith(f"{f}:{line}: {message}") and "fix:" in str(err.value)


def test_spans_per_scheme() -> None:
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC"]
    bioes = ["B-PER", "E-PER", "O", "S-LOC", "B-LOC", "E-LOC"]
    spans = [Span(0, 2, "PER"), Span(3, 4, "LOC"), Span(4, 6, "LOC")]
    assert tags_to_spans(iob2, "IOB2") == spans
    assert tags_to_spans(iob1, "IOB1") == spans
    assert tags_to_spans(bioes, "BIOES") == spans
    assert spans_to_tags(spans, 6, "IOB2") == iob2
    assert spans_to_tags(spans, 6, "IOB1") == iob1
    assert spans_to_tags(spans, 6, "BIOES") == bioes
    assert convert_tags(iob1, "IOB1", "BIOES") == bioes
    assert convert_tags(bioes, "iobes", "bio") == iob2  # aliases, any case


def test_lenient_span_extraction() -> None:
    # conlleval-style: a dangling I- starts a chunk; a type change closes the previous one.
    assert tags_to_spans(["O", "I-PER", "I-LOC"], "IOB2") == [Span(1, 2, "PER"), Span(2, 3, "LOC")]
    assert tags_to_spans(["I-PER", "E-PER", "E-LOC"], "BIOES") == [Span(0, 2, "PER"), Span(2, 3, "LOC")]


def test_unknown_scheme_lists_valid_ones() -> None:
    with pytest.raises(DataError) as err:
        convert_tags(["O"], "BILUO", "IOB2")
    for name in TAG_SCHEMES:
        assert name in str(err.value)


def test_validate_and_detect() -> None:
    validate_tags(["B-PER", "I-PER", "O"], "IOB2")
    validate_tags(["I-PER", "B-PER", "O"], "IOB1")
    validate_tags(["S-PER", "B-LOC", "I-LOC", "E-LOC"], "BIOES")
    with pytest.raises(DataError, match="cannot follow 'O' in IOB2"):
        validate_tags(["O", "I-PER"], "IOB2")
    with pytest.raises(DataError, match="in IOB1"):
        validate_tags(["O", "B-PER"], "IOB1")
    with pytest.raises(DataError, match="not closed"):
        validate_tags(["B-PER"], "BIOES")
    with pytest.raises(DataError, match="malformed tag"):
        tags_to_spans(["PER"], "IOB2")
    assert detect_scheme([["B-PER", "I-PER"], ["O"]]) == "IOB2"
    assert detect_scheme([["I-PER", "I-PER"]]) == "IOB1"
    assert detect_scheme([["S-PER"]]) == "BIOES"


def test_detect_scheme_weighs_chunk_starts_and_names_the_first_violation() -> None:
    iob2 = [["B-PER", "I-PER", "O"], ["O", "B-LOC"], ["B-ORG", "O", "I-ORG"]]  # one stray I- after O
    assert detect_scheme(iob2) == "IOB2"
    iob1 = [["I-PER", "I-PER", "B-PER"], ["O", "I-LOC"], ["O", "B-ORG"]]  # one B- that IOB1 forbids
    assert detect_scheme(iob1) == "IOB1"
    assert detect_scheme([["O"], []]) == "IOB2"
    assert first_scheme_violation(iob2, "IOB2") == (2, 2, 1)
    assert first_scheme_violation(iob1, "IOB1") == (2, 1, 1)
    assert first_scheme_violation([["B-PER", "I-PER"]], "BIO") is None
    assert first_scheme_violation([["S-A"], ["B-A"], ["I-A"]], "BIOES") == (1, 0, 2)


def test_spans_to_tags_errors() -> None:
    with pytest.raises(DataError, match="overlaps"):
        spans_to_tags([Span(0, 2, "A"), Span(1, 3, "B")], 4)
    with pytest.raises(DataError, match="outside"):
        spans_to_tags([Span(2, 5, "A")], 4)


@st.composite
def span_layouts(draw: st.DrawFn) -> tuple[list[Span], int]:
    length = draw(st.integers(0, 15))
    spans: list[Span] = []
    pos = 0
    while pos < length:
        gap = draw(st.integers(0, 2))
        pos += gap
        if pos >= length:
            break
        size = draw(st.integers(1, min(4, length - pos)))
        spans.append(Span(pos, pos + size, draw(st.sampled_from(["PER", "LOC", "ORG"]))))
        pos += size
    return spans, length


@settings(max_examples=200, deadline=None)
@given(layout=span_layouts(), a=st.sampled_from(TAG_SCHEMES), b=st.sampled_from(TAG_SCHEMES))
def test_scheme_round_trips(layout: tuple[list[Span], int], a: str, b: str) -> None:
    spans, length = layout
    tags_a = spans_to_tags(spans, length, a)
    validate_tags(tags_a, a)
    assert tags_to_spans(tags_a, a) == spans
    tags_b = convert_tags(tags_a, a, b)
    validate_tags(tags_b, b)
    assert tags_to_spans(tags_b, b) == spans
    assert convert_tags(tags_b, b, a) == tags_a
