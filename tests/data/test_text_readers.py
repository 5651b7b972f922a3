"""Tests for rnnkit.data.text (CSV/TSV/JSONL, label-sentence and folder-per-class readers)."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from rnnkit.data import (
    DataError,
    read_class_folders,
    read_delimited,
    read_jsonl,
    read_label_sentence,
    texts_and_labels,
)


def test_csv_by_column_names(tmp_path: Path) -> None:
    f = tmp_path / "reviews.csv"
    f.write_text('id,review,sentiment\n1,"great, really",pos\n2,awful,neg\n3,,neg\n', encoding="utf-8")
    examples = read_delimited(f, "review", "sentiment")
    assert [(e.text, e.label) for e in examples] == [("great, really", "pos"), ("awful", "neg")]
    assert examples[0].source == f"{f}:2"
    texts, labels = texts_and_labels(examples)
    assert texts == ["great, really", "awful"] and labels == ["pos", "neg"]
    assert len(read_delimited(f, "review", "sentiment", skip_empty=False)) == 3


def test_tsv_by_index_without_header_and_gz(tmp_path: Path) -> None:
    f = tmp_path / "data.tsv.gz"
    with gzip.open(f, "wt", encoding="utf-8") as g:
        g.write("neg\tbad movie\npos\tgood movie\n")
    examples = read_delimited(f, 1, 0, has_header=False)
    assert [(e.text, e.label, e.source.rsplit(":", 1)[1]) for e in examples] == [
        ("bad movie", "neg", "1"),
        ("good movie", "pos", "2"),
    ]
    unlabeled = read_delimited(f, 1, None, has_header=False)
    assert unlabeled[0].label is None


def test_missing_column_names_file_and_columns(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("text,target\na,1\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_delimited(f, "text", "label")
    msg = str(err.value)
    assert str(f) in msg and "'label'" in msg and "['text', 'target']" in msg and "\n" not in msg
    with pytest.raises(DataError, match="out of range"):
        read_delimited(f, 5, None)
    with pytest.raises(DataError, match="given by name but the file is read without a header row; fix: pass text_column"):
        read_delimited(f, "text", None, has_header=False)


def test_wrong_field_count_names_line(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("text,label\na,1\nb,2,3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.csv:3: row has 3 fields"):
        read_delimited(f)


def test_undecodable_bytes_strict_and_replace(tmp_path: Path) -> None:
    f = tmp_path / "bad.csv"
    f.write_bytes(b"text,label\nfine,1\nbad \xff byte,0\n")
    with pytest.raises(DataError) as err:
        read_delimited(f)
    assert f"{f}:3:" in str(err.value) and "errors='replace'" in str(err.value)
    examples = read_delimited(f, errors="replace")
    assert examples[1].text == "bad \ufffd byte"
    with pytest.raises(DataError, match="errors must be one of"):
        read_delimited(f, errors="bogus")


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_delimited(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="not found"):
        read_delimited(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="not a regular file"):
        read_delimited(tmp_path)


def test_jsonl(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "hi", "label": 1}\n\n{"text": "yo", "label": 0, "x": 2}\n', encoding="utf-8")
    examples = read_jsonl(f)
    assert [(e.text, e.label) for e in examples] == [("hi", "1"), ("yo", "0")]
    assert examples[1].source.endswith(":3")
    f.write_text('{"text": "hi", "label": 1}\n{"text": "oops"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON"):
        read_jsonl(f)
    f.write_text('{"body": "hi"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"no text field 'text'; fields are \['body'\]"):
        read_jsonl(f)
    f.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON object"):
        read_jsonl(f)


def test_label_sentence(tmp_path: Path) -> None:
    f = tmp_path / "stsa.binary.train"
    f.write_text("1 a fine film .\n0   dull\n\n", encoding="utf-8")
    examples = read_label_sentence(f)
    assert [(e.label, e.text) for e in examples] == [("1", "a fine film ."), ("0", "dull")]
    g = tmp_path / "rev.txt"
    g.write_text("a fine film\tpos\n", encoding="utf-8")
    assert read_label_sentence(g, separator="\t", label_first=False)[0].label == "pos"
    f.write_text("1 ok\nlonely\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"stsa\.binary\.train:2: expected 'label sentence'"):
        read_label_sentence(f)


def _make_imdb_tree(root: Path) -> None:
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            d = root / "aclImdb" / split / label
            d.mkdir(parents=True)
            for i in (0, 2, 10):
                (d / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(
                    f"{split} {label} review {i}", encoding="utf-8"
                )
    (root / "aclImdb" / "train" / "labeledBow.feat").write_text("not a class", encoding="utf-8")
    (root / "aclImdb" / "train" / "unsup").mkdir()


def test_class_folders_on_disk(tmp_path: Path) -> None:
    _make_imdb_tree(tmp_path)
    examples = read_class_folders(tmp_path / "aclImdb" / "train")
    assert len(examples) == 6
    assert [e.label for e in examples] == ["neg"] * 3 + ["pos"] * 3
    assert [Path(e.source).name for e in examples[:3]] == ["0_2.txt", "2_2.txt", "10_2.txt"]  # natural order
    assert examples[3].text == "train pos review 0"
    same = read_class_folders(tmp_path, member_prefix="aclImdb/train", classes=["pos"])
    assert {e.label for e in same} == {"pos"}
    with pytest.raises(DataError, match=r"class folders \['maybe'\] not found"):
        read_class_folders(tmp_path / "aclImdb" / "train", classes=["maybe"])


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tar.xz", "w:xz")])
def test_class_folders_in_archive(tmp_path: Path, suffix: str, mode: str) -> None:
    _make_imdb_tree(tmp_path / "src")
    archive = tmp_path / f"imdb{suffix}"
    with tarfile.open(archive, mode) as tar:
        tar.add(tmp_path / "src" / "aclImdb", arcname="aclImdb")
    examples = read_class_folders(archive, member_prefix="aclImdb/train")
    assert len(examples) == 6 and {e.label for e in examples} == {"neg", "pos"}
    assert examples[0].source == f"{archive}::aclImdb/train/neg/0_2.txt"
    assert examples[0].text == "train neg review 0"
    test = read_class_folders(archive, member_prefix="aclImdb/test/", classes=("neg", "pos"))
    assert all(e.text.startswith("test ") for e in test)
    with pytest.raises(DataError, match="folders there"):
        read_class_folders(archive, member_prefix="aclImdb/valid")
    with pytest.raises(DataError, match=r"\['unsup'\] not found"):
        read_class_folders(archive, member_prefix="aclImdb/train", classes=["pos", "unsup"])


def test_archive_decode_error_and_bad_archive(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"line one\nline \xfe two\n"
        info = tarfile.TarInfo("corpus/pos/1.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError) as err:
        read_class_folders(archive, member_prefix="corpus")
    assert f"{archive}::corpus/pos/1.txt:2:" in str(err.value)
    assert (
        read_class_folders(archive, member_prefix="corpus", errors="replace")[0].text
        == "line one\nline \ufffd two\n"
    )
    bad = tmp_path / "broken.tar.xz"
    bad.write_bytes(b"this is not xz data at all")
    with pytest.raises(DataError, match="cannot read archive"):
        read_class_folders(bad)
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="not a folder nor a tar archive"):
        read_class_folders(tmp_path / "file.txt")


def test_jsonl_null_and_nan_labels_are_missing_not_strings(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a", "label": null}\n{"text": "b", "label": NaN}\n{"text": "c", "label": "nan"}\n')
    assert [e.label for e in read_jsonl(f)] == [None, None, "nan"]  # the string is the task's call


def test_jsonl_list_and_boolean_labels(tmp_path: Path) -> None:
    """A JSON list label is a multi-label record (joined as a CSV cell writes it; it used to become the
    class "['a', 'b']"), booleans read as JSON writes them (not Python's 'True'), and a list holding an
    object, or a label containing the separator, is refused."""
    f = tmp_path / "x.jsonl"
    f.write_text('{"text": "one", "label": ["sport", "news"]}\n{"text": "two", "label": ["news"]}\n'
                 '{"text": "three", "label": true}\n{"text": "four", "label": []}\n{"text": "five", "label": [1.0, 2]}\n')
    assert [e.label for e in read_jsonl(f)] == ["sport|news", "news", "true", None, "1|2"]
    assert read_jsonl(f, label_separator=";")[0].label == "sport;news"
    f.write_text('{"text": "one", "label": ["a", {"b": 1}]}\n')
    with pytest.raises(DataError, match="is a list with"):
        read_jsonl(f)
    f.write_text('{"text": "one", "label": ["a|b"]}\n')
    with pytest.raises(DataError, match="contains the label separator"):
        read_jsonl(f)
