"""Mutation testing, round 5: the data ingestion rules (file reading, CSV/JSONL/label lines,
CoNLL files, word vectors, audio files, pictures, .ts files, time-series CSVs, corpora).

Each test here was written because a plausible wrong rule in a reader (a line number off by
one, a delimiter or suffix rule, a missing-value token, a sort order, a channel or axis order)
left the rest of the suite passing. Every expected value comes from an independent reference:
Python's csv/json modules, plain bytes decoding, NumPy, Pillow, soundfile, or small hand-made
files with known content, never from the code path under test.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from rnnkit.data.errors import DataError


def _csv_rows(text, delimiter=","):
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


# -- io: line splitting and decoding ------------------------------------------------------------
def test_crlf_lines_lose_the_carriage_return_too(tmp_path):
    from rnnkit.data import read_parallel

    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_bytes(b"a b\r\nc d\r\n")
    tgt.write_bytes(b"x y\r\nz w\r\n")
    corpus = read_parallel(src, tgt, strip=False)
    # Python's universal newlines give the reference lines
    assert corpus.sources == src.read_text().splitlines()
    assert corpus.targets == ["x y", "z w"]


def test_errors_ignore_drops_undecodable_bytes_instead_of_replacing_them(tmp_path):
    from rnnkit.data import read_label_sentence

    raw = b"pos caf\xe9 ok\nneg plain\n"
    path = tmp_path / "sst.txt"
    path.write_bytes(raw)
    got = read_label_sentence(path, errors="ignore")
    expected = [line.split(" ", 1) for line in raw.decode("utf-8", errors="ignore").splitlines()]
    assert [(ex.label, ex.text) for ex in got] == [(a, b) for a, b in expected]
    assert "\ufffd" not in got[0].text


# -- text: CSV / TSV ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["DATA.TSV", "data.tab", "data.Tab.gz"])
def test_tab_delimiter_from_suffix_any_case_and_tab(tmp_path, name):
    import gzip

    from rnnkit.data import read_delimited

    text = "text\tlabel\nhello, world\tpos\nbye\tneg\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    got = read_delimited(path)
    rows = _csv_rows(text, "\t")[1:]
    assert [(ex.text, ex.label) for ex in got] == [(r[0], r[1]) for r in rows]


def test_header_names_are_matched_without_surrounding_spaces(tmp_path):
    from rnnkit.data import read_delimited

    text = " text , label \nhello,pos\nbye,neg\n"
    path = tmp_path / "d.csv"
    path.write_text(text)
    got = read_delimited(path, text_column="text", label_column="label")
    assert [(ex.text, ex.label) for ex in got] == [tuple(r) for r in _csv_rows(text)[1:]]


def test_a_line_of_spaces_between_records_is_no_record(tmp_path):
    from rnnkit.data import read_delimited

    text = "text,label\nhello,pos\n   \nbye,neg\n"
    path = tmp_path / "d.csv"
    path.write_text(text)
    got = read_delimited(path)
    rows = [r for r in _csv_rows(text)[1:] if len(r) == 2]
    assert [(ex.text, ex.label) for ex in got] == [tuple(r) for r in rows]
    assert [ex.source.rsplit(":", 1)[1] for ex in got] == ["2", "4"]


def test_negative_column_indexes_count_from_the_end(tmp_path):
    from rnnkit.data import read_delimited

    text = "1,a,hello\n2,b,bye\n"
    path = tmp_path / "d.csv"
    path.write_text(text)
    got = read_delimited(path, text_column=-1, label_column=-2, has_header=False)
    assert [(ex.text, ex.label) for ex in got] == [(r[-1], r[-2]) for r in _csv_rows(text)]


# -- text: JSON Lines ----------------------------------------------------------------------------
def test_jsonl_error_names_the_1_based_column_json_reports(tmp_path):
    from rnnkit.data import read_jsonl

    bad = '{"text": "a", "label": 1,}'
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "label": 0}\n' + bad + "\n")
    with pytest.raises(json.JSONDecodeError) as ref:
        json.loads(bad)
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert f"at column {ref.value.colno})" in str(err.value)
    assert err.value.line == 2


# -- text: label lines and class folders ---------------------------------------------------------
def test_label_last_lines_split_at_the_last_separator(tmp_path):
    from rnnkit.data import read_label_sentence

    lines = ["a good movie 1", "not so good 0"]
    path = tmp_path / "d.txt"
    path.write_text("\n".join(lines) + "\n")
    got = read_label_sentence(path, label_first=False)
    assert [(ex.text, ex.label) for ex in got] == [(s[: s.rindex(" ")], s[s.rindex(" ") + 1 :]) for s in lines]


def test_class_folders_come_in_sorted_class_order_whatever_order_classes_lists(tmp_path):
    from rnnkit.data import read_class_folders

    for label in ("pos", "neg"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "1.txt").write_text(f"a {label} text")
    got = read_class_folders(tmp_path, classes=["pos", "neg"])
    assert [ex.label for ex in got] == ["neg", "pos"]
    assert [ex.text for ex in got] == ["a neg text", "a pos text"]


def test_archive_files_come_in_natural_number_order(tmp_path):
    import tarfile

    from rnnkit.data import read_class_folders

    archive = tmp_path / "c.tar.gz"
    names = ["10_1.txt", "2_1.txt", "1_1.txt"]
    with tarfile.open(archive, "w:gz") as tar:
        for name in names:
            data = f"text {name}".encode()
            info = tarfile.TarInfo(f"train/pos/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    got = read_class_folders(archive, member_prefix="train")
    expected = sorted(names, key=lambda n: int(n.split("_")[0]))
    assert [ex.text for ex in got] == [f"text {n}" for n in expected]


# -- conll ----------------------------------------------------------------------------------------
def test_each_conll_sentence_is_named_by_its_own_first_line(tmp_path):
    from rnnkit.data import read_conll

    text = "-DOCSTART- O\n\nEU B-ORG\nrejects O\n\n\nPeter B-PER\n"
    path = tmp_path / "d.conll"
    path.write_text(text)
    got = read_conll(path)
    lines = text.split("\n")
    starts = [i + 1 for i, ln in enumerate(lines) if ln and not ln.startswith("-DOCSTART-") and not lines[i - 1]]
    assert [s.source for s in got] == [f"{path}:{n}" for n in starts] == [f"{path}:3", f"{path}:7"]


def test_a_conll_line_with_an_extra_column_is_refused(tmp_path):
    from rnnkit.data import read_conll

    path = tmp_path / "d.conll"
    path.write_text("EU NNP B-ORG\nrejects VBZ O\ngerman JJ B-MISC extra\n")
    with pytest.raises(DataError) as err:
        read_conll(path)
    assert err.value.line == 3


# -- word vectors ---------------------------------------------------------------------------------
def test_only_the_first_line_can_be_a_word2vec_header(tmp_path):
    from rnnkit.data.vectors import load_word_vectors

    path = tmp_path / "v.txt"
    path.write_text("2 1\nthe 0.5\n2019 7\n")
    vectors, found = load_word_vectors(path, ["the", "2019"], 1)
    assert found.tolist() == [True, True]
    assert vectors[:, 0].tolist() == [0.5, 7.0]


def test_an_exact_match_wins_over_a_later_lowercase_match(tmp_path):
    from rnnkit.data.vectors import load_word_vectors

    path = tmp_path / "v.txt"
    path.write_text("The 1 2\nthe 3 4\n")
    vectors, found = load_word_vectors(path, ["The", "THE"], 2)
    assert found.tolist() == [True, True]
    assert vectors.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_trailing_spaces_on_a_vector_line_are_no_extra_value(tmp_path):
    from rnnkit.data.vectors import load_word_vectors

    path = tmp_path / "v.txt"
    path.write_text("the 1 2 \nof 3 4  \n")
    vectors, found = load_word_vectors(path, ["of", "the"], 2)
    assert found.all()
    assert vectors.tolist() == [[3.0, 4.0], [1.0, 2.0]]


# -- keras_utils: timeseries_dataset_from_array --------------------------------------------------
def _keras():
    import importlib.util
    import os

    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        pytest.skip("the Keras comparison needs KERAS_BACKEND=torch")
    return keras


def test_a_sampling_rate_equal_to_the_data_length_is_refused_as_keras_refuses_it():
    from rnnkit.data import timeseries_dataset_from_array

    keras = _keras()
    data = np.arange(6, dtype=np.float32)
    with pytest.raises(ValueError):
        keras.utils.timeseries_dataset_from_array(data, None, sequence_length=1, sampling_rate=6)
    with pytest.raises(ValueError, match="sampling_rate"):
        timeseries_dataset_from_array(data, None, sequence_length=1, sampling_rate=6)


# -- corpus: id dtype --------------------------------------------------------------------------
def _vocab_of(n, tmp_path):
    from rnnkit.data import build_vocab_from_file

    src = tmp_path / "t.txt"
    src.write_text("\n".join(f"w{i}" for i in range(n)) + "\n")
    vocab = build_vocab_from_file(src, str.split, line_ending="drop", unk_token=None, bos_token=None,
                                  eos_token=None, pad_token=None)
    assert len(vocab) == n
    return src, vocab


def test_uint8_holds_a_vocabulary_of_256_ids(tmp_path):
    from rnnkit.data import tokenize_to_memmap

    src, vocab = _vocab_of(256, tmp_path)
    ids = tokenize_to_memmap(src, tmp_path / "o.ids", str.split, vocab, line_ending="drop", dtype="uint8")
    assert ids.dtype == np.uint8 and int(ids.max()) == np.iinfo(np.uint8).max


def test_the_default_dtype_is_uint16_up_to_65536_ids(tmp_path):
    from rnnkit.data import tokenize_to_memmap

    src, vocab = _vocab_of(np.iinfo(np.uint16).max + 1, tmp_path)
    ids = tokenize_to_memmap(src, tmp_path / "o.ids", str.split, vocab, line_ending="drop")
    assert ids.dtype == np.uint16 and int(ids.max()) == 65535


# -- batch ------------------------------------------------------------------------------------
def test_float_extras_are_stacked_into_a_tensor():
    import torch

    from rnnkit.data import collate_sequences

    weights = [0.5, 2.0]
    batch = collate_sequences([{"inputs": [1, 2], "weight": w} for w in weights])
    assert isinstance(batch.extras["weight"], torch.Tensor)
    assert batch.extras["weight"].tolist() == weights


def test_dataset_lengths_are_those_of_the_transformed_inputs():
    from rnnkit.data import SequenceDataset

    inputs = [[1, 2, 3], [4, 5]]
    ds = SequenceDataset(inputs, transform=lambda x: list(x) + [0, 0])
    assert ds.lengths() == [len(ds[i]) for i in range(len(ds))] == [5, 4]


# -- parallel ---------------------------------------------------------------------------------
def test_a_tsv_line_with_fewer_fields_than_the_first_is_ragged(tmp_path):
    from rnnkit.data import read_parallel_tsv

    text = "a\tx\tsource-1\nb\ty\nc\tz\tsource-3\n"
    path = tmp_path / "p.tsv"
    path.write_text(text)
    corpus = read_parallel_tsv(path)
    counts = [len(r) for r in _csv_rows(text, "\t")]
    assert corpus.num_ragged == sum(c != counts[0] for c in counts) == 1
    assert corpus.first_ragged == (2, 2, 1, 3)


def test_a_whitespace_only_side_is_empty_without_strip_too(tmp_path):
    from rnnkit.data import read_parallel

    src, tgt = tmp_path / "s.txt", tmp_path / "t.txt"
    src.write_text("hello\n   \nbye\n")
    tgt.write_text("salut\nrien\nciao\n")
    corpus = read_parallel(src, tgt, strip=False)
    assert corpus.sources == ["hello", "bye"] and corpus.num_skipped_empty == 1
    assert corpus.line_numbers == [1, 3]


# -- audio ------------------------------------------------------------------------------------
def test_a_data_chunk_one_byte_past_the_file_loses_no_sample_and_gets_no_truncation_note(tmp_path):
    import struct

    sf = pytest.importorskip("soundfile")
    from rnnkit.data import read_wav

    samples = (np.arange(10) * 100).astype(np.int16)
    path = tmp_path / "a.wav"
    sf.write(path, samples, 8000, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    at = raw.index(b"data")
    raw[at + 4 : at + 8] = struct.pack("<I", 2 * len(samples) + 1)  # an odd size: half a frame more
    path.write_bytes(bytes(raw))
    clip = read_wav(path)
    assert sf.info(str(path)).frames == len(samples) == clip.waveform.shape[0]
    assert np.allclose(clip.waveform.numpy(), samples / 32768.0)
    assert not any("truncated" in n for n in clip.notes)


def test_an_upper_case_tsv_manifest_is_read_as_tab_separated(tmp_path):
    from rnnkit.data import read_audio_manifest

    text = "path\tlabel\tspeaker\na, b.wav\tyes\tjo\nc.wav\tno\tal\n"
    path = tmp_path / "LIST.TSV"
    path.write_text(text)
    items = read_audio_manifest(path, check_exists=False)
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    assert [(i.path, i.label, i.metadata) for i in items] == [
        (str(tmp_path / r["path"]), r["label"], {"speaker": r["speaker"]}) for r in rows
    ]


# -- images -----------------------------------------------------------------------------------
def test_one_colour_picture_among_grey_ones_makes_the_folder_rgb(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from rnnkit.data import read_image_folder

    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # pure red: grey would lose the hue
    grey = np.full((2, 3), 90, dtype=np.uint8)
    for cls, arr in (("a", rgb), ("b", grey)):  # the colour picture is read first, a grey one last
        (tmp_path / cls).mkdir()
        Image.fromarray(arr).save(tmp_path / cls / "1.png")
    images, labels = read_image_folder(tmp_path)
    assert images.shape == (2, 2, 3, 3)
    assert labels.tolist() == ["a", "b"]
    np.testing.assert_array_equal(images[0], rgb)
    np.testing.assert_array_equal(images[1], np.repeat(grey[..., None], 3, axis=2))


def test_digits_csv_with_full_255_pixels_stays_uint8(tmp_path):
    from rnnkit.data import read_digits_csv

    rows = [[0, 255, 128, 7, 3], [255, 255, 0, 1, 9]]
    path = tmp_path / "digits.csv"
    path.write_text("".join(",".join(map(str, r)) + "\n" for r in rows))
    images, labels = read_digits_csv(path, image_shape=(2, 2))
    ref = np.asarray(rows)
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images, ref[:, :4].reshape(-1, 2, 2).astype(np.uint8))
    assert labels.tolist() == ref[:, 4].tolist()


# -- ucr .ts files ----------------------------------------------------------------------------
def test_series_length_is_checked_only_with_equal_length_true(tmp_path):
    from rnnkit.data import read_ts_file

    path = tmp_path / "d.ts"
    path.write_text("@problemName x\n@univariate true\n@equalLength false\n@seriesLength 3\n"
                    "@classLabel true a b\n@data\n1,2,3:a\n4,5:b\n6,7,8,9:a\n")
    ds = read_ts_file(path)
    assert [s[:, 0].tolist() for s in ds.series] == [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    assert ds.labels == ["a", "b", "a"]


def test_a_missing_value_mark_with_spaces_around_it_is_nan(tmp_path):
    from rnnkit.data import read_ts_file

    path = tmp_path / "d.ts"
    path.write_text("@univariate true\n@classLabel true a b\n@data\n1, ? ,3:a\n?,5:b\n")
    ds = read_ts_file(path)
    np.testing.assert_array_equal(ds.series[0][:, 0], [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(ds.series[1][:, 0], [np.nan, 5.0])


# -- time-series CSVs -------------------------------------------------------------------------
def _series_csv(tmp_path, text, name="s.csv", **kw):
    from rnnkit.data import read_timeseries

    path = tmp_path / name
    path.write_text(text)
    return read_timeseries(path, kw.pop("time_column", "t"), kw.pop("target", "y"), **kw)


def test_excel_hash_na_is_a_missing_value(tmp_path):
    ds = _series_csv(tmp_path, "t,y\n1,1.5\n2,#N/A\n3,4\n", time_format="numeric", fill="ffill")
    s = ds.only()
    assert s.targets[:, 0].tolist() == [1.5, 1.5, 4.0]
    assert s.observed[:, 0].tolist() == [True, False, True]


def test_basic_format_iso_times_with_an_offset_are_converted_to_utc(tmp_path):
    from datetime import datetime, timezone

    stamps = ["20200101T000000+0100", "20200101T010000+0100", "20200101T020000+0100"]
    ds = _series_csv(tmp_path, "t,y\n" + "".join(f"{t},{i}\n" for i, t in enumerate(stamps)))
    expected = [np.datetime64(datetime.fromisoformat(t).astimezone(timezone.utc).replace(tzinfo=None), "s")
                for t in stamps]
    assert ds.only().time.tolist() == expected
    assert str(expected[0]) == "2019-12-31T23:00:00"


def test_daily_data_at_a_fixed_hour_is_named_one_day(tmp_path):
    days = np.arange("2024-03-01", "2024-03-06", dtype="datetime64[D]")
    text = "t,y\n" + "".join(f"{d} 09:00:00,{i}\n" for i, d in enumerate(days))
    ds = _series_csv(tmp_path, text)
    assert ds.only().freq == "1D"
    assert ds.reports["0"].freq == "1D"


def test_a_gap_of_weekend_days_is_named_as_trading_day_data(tmp_path):
    days = np.arange("2024-01-01", "2024-01-29", dtype="datetime64[D]")
    trading = days[np.is_busday(days)]  # NumPy's calendar: Monday to Friday
    text = "t,y\n" + "".join(f"{d},{i}\n" for i, d in enumerate(trading))
    assert _series_csv(tmp_path, text).only().freq == "1B"  # weekdays only: business days
    with pytest.raises(DataError, match="mostly weekends"):  # declared daily: the weekend gaps are named
        _series_csv(tmp_path, text, freq="D")


@pytest.mark.parametrize("sep", ["\t", "|", ";"])
def test_a_csv_named_file_separated_by_another_character_is_sniffed(tmp_path, sep):
    text = f"t{sep}y{sep}z\n1{sep}2.5{sep}0\n2{sep}3.5{sep}1\n"
    ds = _series_csv(tmp_path, text, target=["y", "z"], time_format="numeric")
    rows = _csv_rows(text, sep)
    assert ds.only().targets.tolist() == [[float(r[1]), float(r[2])] for r in rows[1:]]


def test_whole_numeric_times_stay_integers(tmp_path):
    text = "t,y\n10,1\n20,2\n40,4\n"
    ds = _series_csv(tmp_path, text, time_format="numeric", fill="interpolate")
    s = ds.only()
    assert s.time.dtype.kind == "i"
    assert s.time.tolist() == [10, 20, 30, 40]
    assert ds.reports["0"].gaps == [("20", "40", 1)]


# -- keras parity: pad_sequences / to_categorical ------------------------------------------------
def test_padding_no_sequence_keeps_the_dtype_like_keras():
    from rnnkit.data import pad_sequences

    keras = _keras()
    ref = keras.utils.pad_sequences([], maxlen=3, dtype="float32", value=1.5)
    got = pad_sequences([], maxlen=3, dtype="float32", value=1.5)
    assert got.dtype == ref.dtype and got.shape == ref.shape == (0, 3)


def test_to_categorical_keeps_a_single_id_as_one_row_like_keras():
    from rnnkit.models.utils import to_categorical

    keras = _keras()
    for y in ([1], [[1]], [[0], [2]]):
        ref = np.asarray(keras.utils.to_categorical(y, 3))
        got = to_categorical(y, 3)
        assert got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("dtype", ["int32", "float64", "uint8"])
def test_to_categorical_returns_the_dtype_asked_for(dtype):
    from rnnkit.models.utils import to_categorical

    y = np.array([[2, 0], [1, 1]])
    got = to_categorical(y, 4, dtype=dtype)
    ref = np.eye(4, dtype=dtype)[y]
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)
