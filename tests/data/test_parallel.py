"""Tests for rnnkit.data.parallel."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from rnnkit.data import DataError, read_parallel, read_parallel_tsv


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_read_parallel_plain_and_gz(tmp_path: Path) -> None:
    en = _write(tmp_path / "train.en.gz", "A dog .\n  A cat.  \nHello\n")
    de = _write(tmp_path / "train.de", "Ein Hund .\nEine Katze.\nHallo\n")
    corpus = read_parallel(en, de)
    assert len(corpus) == 3 and corpus[1] == ("A cat.", "Eine Katze.")
    assert list(corpus)[0] == ("A dog .", "Ein Hund .") and corpus.line_numbers == [1, 2, 3]
    assert corpus.num_skipped_empty == 0 and corpus.files == (str(en), str(de))


def test_mismatched_line_counts_names_both(tmp_path: Path) -> None:
    en = _write(tmp_path / "a.en", "1\n2\n3\n")
    de = _write(tmp_path / "a.de", "1\n2\n")
    with pytest.raises(DataError) as err:
        read_parallel(en, de)
    msg = str(err.value)
    assert f"{en} has 3 lines" in msg and f"{de} has 2" in msg
    with pytest.raises(DataError, match="has 2 lines"):
        read_parallel(de, en)


def test_empty_policies(tmp_path: Path) -> None:
    en = _write(tmp_path / "b.en", "one\n\nthree\nfour\n")
    de = _write(tmp_path / "b.de", "eins\nzwei\n \nvier\n")
    skipped = read_parallel(en, de)
    assert (
        skipped.sources == ["one", "four"]
        and skipped.num_skipped_empty == 2
        and skipped.line_numbers == [1, 4]
    )
    kept = read_parallel(en, de, empty="keep")
    assert len(kept) == 4 and kept[1] == ("", "zwei")
    with pytest.raises(DataError, match=r"b\.en:2: empty source sentence"):
        read_parallel(en, de, empty="error")
    with pytest.raises(DataError, match="empty must be one of"):
        read_parallel(en, de, empty="drop")


def test_read_parallel_tsv(tmp_path: Path) -> None:
    f = _write(tmp_path / "pairs.tsv", "src\ttgt\nhello\thallo\n\nbye\t\nyes\tja\textra\n")
    corpus = read_parallel_tsv(f, has_header=True)
    assert corpus.sources == ["hello", "yes"] and corpus.targets == ["hallo", "ja"]
    assert corpus.num_skipped_empty == 2
    reversed_ = read_parallel_tsv(f, 1, 0, has_header=True)
    assert reversed_[0] == ("hallo", "hello")
    bad = _write(tmp_path / "bad.tsv", "hello hallo\n")
    with pytest.raises(DataError, match=r"bad\.tsv:1: line has 1 tab-separated fields"):
        read_parallel_tsv(bad)


def test_tsv_lines_with_a_tab_inside_a_sentence_are_counted_and_noted(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("ein Hund\ta dog\nzwei\tKatzen\ttwo cats\ndrei\tthree\n", encoding="utf-8")  # line 2: a stray tab
    corpus = read_parallel_tsv(path)
    assert corpus.num_ragged == 1 and corpus.first_ragged == (2, 3, 1, 2)
    note = corpus.ragged_note()
    assert note is not None and "1 line(s) have another number of tab-separated fields than line 1 (2)" in note
    assert "first line 2 (3)" in note and "replace tabs inside sentences with spaces" in note
    same = tmp_path / "three.tsv"  # a third column on every line (an id, a score) is fine
    same.write_text("ein Hund\ta dog\t1\nzwei Katzen\ttwo cats\t2\n", encoding="utf-8")
    consistent = read_parallel_tsv(same)
    assert consistent.num_ragged == 0 and consistent.ragged_note() is None
    assert [tuple(p) for p in consistent] == [("ein Hund", "a dog"), ("zwei Katzen", "two cats")]
