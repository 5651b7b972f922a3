"""Review of branches the default suite never ran: each input below reaches one of them, and the
result is checked against an independent computation or an exact one-line message."""

from __future__ import annotations

import io
import json
import struct
import tarfile

import numpy as np
import pytest
import torch

from rnnkit.data import audio as A
from rnnkit.data import batch as B
from rnnkit.data import conll as C
from rnnkit.data import images as I
from rnnkit.data import scalers as S
from rnnkit.data import text as X
from rnnkit.data import windows as W
from rnnkit.data.errors import DataError
from rnnkit.data.io import read_text
from rnnkit.data.parallel import read_parallel_tsv
from rnnkit.data.timeseries import (
    TimeSeries,
    TimeSeriesDataset,
    _coarsest_unit,
    fill_missing,
    read_timeseries,
)
from rnnkit.data.ucr import read_ts_file
from rnnkit.data.vocab import LabelEncoder, Vocabulary
from rnnkit.metrics import forecasting as MF
from rnnkit.tasks import forecasting as F
from rnnkit.tasks.config import ConfigError


def _msg(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# -- timeseries ------------------------------------------------------------------------------


def test_timeseries_csv_header_field_over_csv_limit_is_one_line(tmp_path):
    p = tmp_path / "big.csv"
    p.write_text('"' + "x" * 140_000 + '"\n1\n')
    with pytest.raises(DataError) as exc:
        read_timeseries(p, None, "y")
    assert _msg(exc) == f"{p}:1: malformed CSV header: field larger than field limit (131072); fix: check quoting"


def test_timeseries_csv_body_field_over_csv_limit(tmp_path):
    p = tmp_path / "big.csv"
    p.write_text('t,y\n1,"' + "x" * 140_000 + "\n")
    with pytest.raises(DataError, match=r"big\.csv:2: malformed CSV: field larger than field limit"):
        read_timeseries(p, None, "y")


def test_timeseries_unclosed_quote_is_named(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text('t,y\n1,"2\n2,3\n3,4\n')
    with pytest.raises(DataError, match=r"an unclosed quote\?\); fix: close the quote"):
        read_timeseries(p, None, "y")


def test_timeseries_empty_file_and_header_only(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError) as exc:
        read_timeseries(tmp_path / "e.csv", "t", "y")
    assert _msg(exc) == f"{tmp_path / 'e.csv'}: file is empty; fix: check the file"
    (tmp_path / "h.csv").write_text("t,y\n")
    with pytest.raises(DataError) as exc:
        read_timeseries(tmp_path / "h.csv", "t", "y")
    assert _msg(exc) == f"{tmp_path / 'h.csv'}: no data rows; fix: check the file"


def test_timeseries_argument_errors(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("t,y\n1,2\n")
    with pytest.raises(DataError, match="no target column given"):
        read_timeseries(p, "t", [])
    with pytest.raises(DataError) as exc:
        read_timeseries(p, "t", "y", file_format="xlsx")
    assert _msg(exc) == f"{p}: unknown file_format 'xlsx'; fix: use 'csv' or 'parquet'"
    with pytest.raises(DataError) as exc:
        TimeSeries.from_arrays(np.zeros((2, 2, 2)))
    assert _msg(exc) == "targets must be [N] or [N, n_targets], got shape (2, 2, 2); fix: reshape the array"


def test_numeric_time_column_refuses_text_and_nan(tmp_path):
    for value in ("abc", "nan"):
        p = tmp_path / "n.csv"
        p.write_text(f"t,y\n1,1\n{value},2\n")
        with pytest.raises(DataError) as exc:
            read_timeseries(p, "t", "y", time_format="numeric")
        assert _msg(exc) == f"{p}:3: cannot parse {value!r} in time column 't' as a number; fix: fix the value"


def test_iso_offsets_are_converted_to_utc(tmp_path):
    p = tmp_path / "tz.csv"
    p.write_text("t,y\n2020-01-01T00:00:00+01:00,1\n2020-01-01T01:00:00+01:00,2\n2020-01-01T02:00:00+01:00,3\n")
    s = read_timeseries(p, "t", "y").only()
    want = np.array(["2019-12-31T23:00:00", "2020-01-01T00:00:00", "2020-01-01T01:00:00"], dtype="datetime64[s]")
    np.testing.assert_array_equal(s.time, want)


def test_value_parsing_matches_python_float(tmp_path):
    p = tmp_path / "u.csv"
    p.write_text("t,y\n1,1_000\n2,\uff12\n3, 3.5 \n")  # float() reads all three
    s = read_timeseries(p, None, "y").only()
    assert s.targets[:, 0].tolist() == [float("1_000"), float("\uff12"), float(" 3.5 ")]


def test_monthly_grid_refuses_mid_month_date(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("t,y\n2020-01-01,1\n2020-02-01,2\n2020-03-05,3\n")
    with pytest.raises(DataError, match=r"m\.csv:4: timestamp 2020-03-05T00:00:00 is not on a M grid"):
        read_timeseries(p, "t", "y", freq="M")


def test_single_row_file_has_no_grid(tmp_path):
    p = tmp_path / "one.csv"
    p.write_text("t,y\n2020-01-01,1\n")
    s = read_timeseries(p, "t", "y").only()
    assert s.targets.tolist() == [[1.0]] and s.freq is None


def test_coarsest_unit_of_whole_seconds():
    t = np.array(["2020-01-01T00:00:00", "2020-01-01T00:00:07"], dtype="datetime64[s]")
    assert _coarsest_unit(t) == "s"
    assert _coarsest_unit(t[:1]) == "Y"


def test_fill_missing_policy_and_no_gaps():
    with pytest.raises(DataError) as exc:
        fill_missing(np.array([1.0, np.nan]), "bogus")
    assert _msg(exc) == ("unknown fill policy 'bogus'; valid: ('ffill', 'interpolate', 'zero', 'error'); "
                         "fix: pick one of them")
    out = fill_missing(np.array([1.0, 2.0]), "ffill")
    assert out.tolist() == [1.0, 2.0] and out.ndim == 1


def test_parquet_timezone_nat_and_text_columns(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"t": pd.date_range("2020-01-01", periods=3, freq="h", tz="Europe/Berlin"),
                          "y": [1.0, 2.0, 3.0], "s": ["a", None, "c"]})
    frame.to_parquet(tmp_path / "p.parquet")
    s = read_timeseries(tmp_path / "p.parquet", "t", "y").only()
    np.testing.assert_array_equal(s.time, np.array(["2019-12-31T23", "2020-01-01T00", "2020-01-01T01"],
                                                   dtype="datetime64[h]").astype("datetime64[s]"))
    with pytest.raises(DataError, match=r"p\.parquet row 1: cannot parse 'a' in column 's' as a number"):
        read_timeseries(tmp_path / "p.parquet", "t", "s")
    pd.DataFrame({"t": pd.to_datetime(["2020-01-01", None]), "y": [1.0, 2.0]}).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"n\.parquet row 2: missing timestamp in column 't'"):
        read_timeseries(tmp_path / "n.parquet", "t", "y")


# -- audio -----------------------------------------------------------------------------------


def _chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def _fmt(channels: int = 1, rate: int = 8000) -> bytes:
    return _chunk(b"fmt ", struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16))


def _wav(path, *chunks: bytes):
    body = b"WAVE" + b"".join(chunks)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


_PCM = np.array([0, 16384, -16384, 32767], dtype="<i2")


@pytest.mark.parametrize("chunks, problem", [
    ((_fmt(channels=0), _chunk(b"data", _PCM.tobytes())), "the WAV header gives 0 channels"),
    ((_chunk(b"data", _PCM.tobytes()), _fmt()), "the WAV file has no 'fmt ' chunk before its data"),
    ((_chunk(b"LIST", b"abcd"),), "the WAV header is cut short (no 'fmt ' chunk in 24 bytes)"),
])
def test_damaged_wav_headers(tmp_path, chunks, problem):
    p = _wav(tmp_path / "x.wav", *chunks)
    with pytest.raises(DataError) as exc:
        A.read_wav(p)
    assert _msg(exc) == (f"{p}: cannot read audio ({problem}); fix: check the file is a valid, complete audio "
                         "file (re-export it, or remove it)")


def test_wav_with_data_beyond_first_64k(tmp_path):
    p = _wav(tmp_path / "big.wav", _fmt(), _chunk(b"junk", b"\0" * 70_000), _chunk(b"data", _PCM.tobytes()))
    clip = A.read_wav(p)
    assert clip.waveform.tolist() == (_PCM / 32768.0).tolist() and clip.notes == ()


def test_audio_folder_and_manifest_errors(tmp_path):
    with pytest.raises(DataError, match="audio folder not found; fix: check the path"):
        A.list_audio_folder(tmp_path / "nope")
    with pytest.raises(DataError) as exc:
        A.list_audio_folder(tmp_path, on_mismatch="warn")
    assert _msg(exc) == "on_mismatch must be 'error' or 'skip', got 'warn'; fix: use 'error' or 'skip'"
    with pytest.raises(DataError, match=r"invalid file-name pattern '\(x'.*; fix: pass a valid regular expression"):
        A.list_audio_folder(tmp_path, pattern="(x")
    _wav(tmp_path / "hello.wav", _fmt(), _chunk(b"data", _PCM.tobytes()))
    items = A.list_audio_folder(tmp_path, pattern=r"hello\.wav")  # no group: no label
    assert [(i.label, i.metadata) for i in items] == [(None, {})]
    m = tmp_path / "m.csv"
    for body, want in (("hello.wav,a,extra\n", ":2: row has the wrong number of fields (header has 2)"),
                       ("hello.wav\n", ":2: row has the wrong number of fields (header has 2)"),
                       (",a\n", ":2: empty path; fix: fill the path column"),
                       ("", ": manifest lists no files; fix: add rows")):
        m.write_text("path,label\n" + body)
        with pytest.raises(DataError) as exc:
            A.read_audio_manifest(m)
        assert _msg(exc).startswith(f"{m}{want}")


def test_audio_feature_argument_errors():
    cases = [
        (lambda: A.mel_to_hz(100, "foo"), "unknown mel_scale 'foo'; valid: ('htk', 'slaney'); fix: use 'htk' or 'slaney'"),
        (lambda: A.mel_filterbank(201, 8000, 0), "need n_mels >= 1 and n_freqs >= 2, got n_mels=0, n_freqs=201; "
                                                "fix: use n_mels >= 1 and n_fft >= 2"),
        (lambda: A.mel_filterbank(201, 8000, 10, norm="l2"), "norm must be None or 'slaney', got 'l2'; "
                                                            "fix: use None or 'slaney'"),
        (lambda: A.dct_matrix(0, 10), "need at least one DCT coefficient, got n_mfcc=0; fix: use n_mfcc >= 1"),
        (lambda: A.dct_matrix(3, 10, norm="l2"), "norm must be 'ortho' or None, got 'l2'; fix: use 'ortho'"),
        (lambda: A.MFCC(normalize="global"), "normalize must be None or 'utterance', got 'global'; "
                                             "fix: use 'utterance' or None"),
    ]
    for call, want in cases:
        with pytest.raises(DataError) as exc:
            call()
        assert _msg(exc) == want


def test_mel_to_hz_slaney_inverts_hz_to_mel_and_htk_formula():
    f = np.array([0.0, 500.0, 1000.0, 4000.0])
    np.testing.assert_allclose(A.mel_to_hz(A.hz_to_mel(f, "slaney"), "slaney"), f, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(A.mel_to_hz(2595.0 * np.log10(1 + f / 700.0)), f, rtol=1e-9, atol=1e-9)


def test_integer_waveform_and_mfcc_rate():
    spec = A.LogMelSpectrogram(sample_rate=8000)
    x = torch.tensor(np.random.default_rng(0).integers(-1000, 1000, 4000))
    assert torch.equal(spec(x), spec(x.double().float()))
    assert A.MFCC(sample_rate=16000).sample_rate == 16000


# -- images ----------------------------------------------------------------------------------


def test_idx_header_truncated(tmp_path):
    p = tmp_path / "t.idx"
    p.write_bytes(bytes([0, 0, 8, 3]) + b"\0\0\0\1")
    with pytest.raises(DataError) as exc:
        I.read_idx(p)
    assert _msg(exc) == f"{p}: idx header is truncated; fix: re-download the file"


def test_npz_not_a_zip_and_damaged_zip(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"hello, not an archive")
    with pytest.raises(DataError) as exc:
        I.read_npz(tmp_path / "a.npz")
    assert _msg(exc) == (f"{tmp_path / 'a.npz'}: not an npz archive (it does not start with the zip signature); "
                         "fix: pass a file written by numpy.savez")
    np.savez(tmp_path / "ok.npz", x=np.zeros((2, 3, 3)), y=np.array([1, 2]))
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])  # was: a zipfile.BadZipFile traceback
    with pytest.raises(DataError) as exc:
        I.read_npz(tmp_path / "cut.npz")
    assert _msg(exc) == (f"{tmp_path / 'cut.npz'}: cannot read npz (File is not a zip file); "
                         "fix: pass a complete file written by numpy.savez")


def test_digits_csv_blank_lines_and_no_rows(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("\n1,2,3,4,7\n\n")
    images, labels = I.read_digits_csv(p, (2, 2))
    assert images.tolist() == [[[1, 2], [3, 4]]] and labels.tolist() == [7]
    p.write_text("\n\n")
    with pytest.raises(DataError) as exc:
        I.read_digits_csv(p, (2, 2))
    assert _msg(exc) == f"{p}: no rows; fix: check the file"


def test_picture_channels_and_damaged_file(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).save(tmp_path / "p.png")
    with pytest.raises(DataError, match="pictures are read with 1, 3 or 4 channels, not 2"):
        I.read_picture(tmp_path / "p.png", channels=2)
    (tmp_path / "t.png").write_bytes((tmp_path / "p.png").read_bytes()[:40])
    with pytest.raises(DataError, match=r"t\.png: cannot read the picture \(.*\); fix: remove or replace the file"):
        I.read_picture(tmp_path / "t.png")


# -- text ------------------------------------------------------------------------------------


def test_delimited_field_limit_and_blank_lines(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text('"' + "x" * 140_000 + '"\n')
    with pytest.raises(DataError, match=r"q\.csv:1: malformed CSV: field larger than field limit"):
        X.read_delimited(p, text_column=0, label_column=None, has_header=False)
    p.write_text('text,label\nhi,pos\n"' + "x" * 140_000 + '",neg\n')
    with pytest.raises(DataError, match=r"q\.csv:3: malformed CSV: field larger than field limit"):
        X.read_delimited(p)
    p.write_text("text,label\nhi,pos\n\nho,neg\n")
    got = [(e.text, e.label, e.source) for e in X.read_delimited(p)]
    assert got == [("hi", "pos", f"{p}:2"), ("ho", "neg", f"{p}:4")]


def test_jsonl_wrong_types(tmp_path):
    p = tmp_path / "j.jsonl"
    p.write_text(json.dumps({"text": 5, "label": "a"}) + "\n")
    with pytest.raises(DataError, match=r"j\.jsonl:1: text field 'text' is int, not a string"):
        X.read_jsonl(p)
    p.write_text(json.dumps({"text": "hi", "label": {"a": 1}}) + "\n")
    with pytest.raises(DataError) as exc:
        X.read_jsonl(p)
    assert _msg(exc) == (f"{p}:1: label field 'label' is an object; "
                         "fix: write a label as a string or number, or a list of them")


def test_class_folders_errors_and_tar_with_dot_slash(tmp_path):
    with pytest.raises(DataError, match="folder or archive not found"):
        X.read_class_folders(tmp_path / "nope")
    (tmp_path / "cf" / "pos").mkdir(parents=True)
    (tmp_path / "cf" / "pos" / "a.md").write_text("good")
    with pytest.raises(DataError, match=r"cf/train: folder not found; fix: check member_prefix"):
        X.read_class_folders(tmp_path / "cf", member_prefix="train")
    with pytest.raises(DataError, match=r"no class sub-folders with '\*\.txt' files"):
        X.read_class_folders(tmp_path / "cf")
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in (("./train/pos/1.txt", b"good"), ("./train/neg/2.txt", b"bad")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./train/pos/link.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "1.txt"
        tar.addfile(link)
    got = [(e.text, e.label) for e in X.read_class_folders(archive, member_prefix="train")]
    assert got == [("bad", "neg"), ("good", "pos")]


# -- small modules ---------------------------------------------------------------------------


def test_vocab_and_labels():
    assert repr(Vocabulary(["a"])) == "Vocabulary(size=5, specials=['<pad>', '<unk>', '<bos>', '<eos>'])"
    with pytest.raises(DataError, match="add_eos=True but the vocabulary has no eos token"):
        Vocabulary(["a"], eos_token=None).encode(["a"], add_eos=True)
    with pytest.raises(DataError) as exc:
        LabelEncoder(["1", 1])
    assert _msg(exc) == "duplicate labels in ['1', '1']; fix: give each class once"


def test_word_vectors_skip_short_and_unused_lines(tmp_path):
    from rnnkit.data.vectors import load_word_vectors

    p = tmp_path / "v.txt"
    p.write_text("2 3\ncat 1 2 3\n\nx\nzzz 1 q 3\nbird 4 5 6\n")
    vectors, found = load_word_vectors(p, ["bird", "cat", "dog"], 3)
    assert vectors.tolist() == [[4, 5, 6], [1, 2, 3], [0, 0, 0]] and found.tolist() == [True, True, False]
    p.write_text("cat 1 q 3\n")
    with pytest.raises(DataError, match=r"v\.txt:1: a vector value is not a number"):
        load_word_vectors(p, ["cat"], 3)


def test_padding_ragged_rows():
    from rnnkit.data.padding import pad_batch, pad_sequences

    with pytest.raises(DataError, match="sequence 1 cannot be converted to a tensor"):
        pad_batch([[1, 2], [[1], [2, 3]]])
    with pytest.raises(DataError, match="sequence 1 is not array-like"):
        pad_sequences([[1, 2], [[1], [2, 3]]])


def test_windows_errors_and_dataset_input():
    with pytest.raises(DataError) as exc:
        W.chronological_split(10, True, 2, 2)
    assert _msg(exc) == ("train size must be a step count >= 0 or a fraction in [0, 1], got True; "
                         "fix: pass a count or a fraction in [0, 1]")
    s = TimeSeries.from_arrays(np.arange(20.0), series_id="a")
    ds = TimeSeriesDataset({"a": s}, {}, "mem")
    assert len(W.WindowDataset(ds, lookback=3, horizon=2)) == 20 - 3 - 2 + 1
    with pytest.raises(DataError, match="split must be 'train', 'val', 'test' or None, got 'dev'"):
        W.WindowDataset(s, lookback=3, horizon=2, split="dev")
    with pytest.raises(DataError, match="series ids are not unique"):
        W.make_forecasting_splits([s, s], lookback=3, horizon=2)


def test_scaler_fit_transform_matches_hand_computation():
    x = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]])
    scaler = S.StandardScaler()
    assert not scaler.fitted
    out = scaler.fit_transform(x)
    assert scaler.fitted
    for c in range(2):
        col = x[:, c].tolist()
        mean = sum(col) / 3
        sd = (sum((v - mean) ** 2 for v in col) / 3) ** 0.5
        assert out[:, c].tolist() == pytest.approx([(v - mean) / sd for v in col])
    with pytest.raises(DataError, match="cannot fit on an empty mapping"):
        S.StandardScaler().fit({})


def test_batch_to_moves_list_targets_and_nested_extras():
    b = B.Batch(inputs=torch.ones(2, 3), targets=[torch.ones(1), torch.zeros(2)], lengths=torch.tensor([3, 3]),
                mask=torch.ones(2, 3, dtype=torch.bool), extras={"a": {"b": [torch.ones(1)]}, "n": 3})
    moved = b.to("cpu")  # was: AttributeError: 'list' object has no attribute 'to'
    assert isinstance(moved.targets, list) and [t.tolist() for t in moved.targets] == [[1.0], [0.0, 0.0]]
    assert moved.extras["a"]["b"][0].tolist() == [1.0] and moved.extras["n"] == 3
    assert B._is_sequence_target(np.array([1, 2])) and not B._is_sequence_target(np.float64(1.0))


def test_collate_stacks_equal_shape_tensor_extras():
    batch = B.collate_sequences([{"inputs": torch.ones(2), "targets": 1, "e": torch.ones(3)},
                                 {"inputs": torch.ones(3), "targets": 0, "e": torch.zeros(3)}])
    assert batch.extras["e"].tolist() == [[1.0] * 3, [0.0] * 3]


def test_misc_one_line_errors(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("x\n")
    with pytest.raises(DataError) as exc:
        read_text(p, encoding="klingon")
    assert _msg(exc) == f"{p}: unknown encoding 'klingon'; fix: use e.g. encoding='utf-8' or 'latin-1'"
    assert str(DataError("bad", line=3, hint="fix")) == "line 3: bad; fix: fix"
    assert str(DataError("bad", row=3)) == "row 3: bad"
    t = tmp_path / "par.tsv"
    t.write_text("a\tb\n\nc\td\n")
    with pytest.raises(DataError) as exc:
        read_parallel_tsv(t, empty="error")
    assert _msg(exc) == f"{t}:2: blank line; fix: remove it or pass empty='skip'"


def test_bucketing_skips_empty_batches():
    from rnnkit.data.bucketing import padding_efficiency

    report = padding_efficiency([3, 1, 2], [[0, 1], [], [2]])
    # batch [0, 1]: 3 + 1 real of 2 x 3; batch [2]: 2 of 2
    assert (report.real_tokens, report.padded_tokens, report.num_batches) == (6, 8, 2)


@pytest.mark.parametrize("tags, scheme, want", [
    (["B-PER", "E-PER"], "IOB2", "tag 'E-PER' at position 1: IOB2 has no E- prefix (it is a BIOES tag); "
                                 "fix: convert the tags with convert_tags(tags, 'BIOES', 'IOB2'), or read them as BIOES"),
    (["S-PER"], "IOB1", "tag 'S-PER' at position 0: IOB1 has no S- prefix (it is a BIOES tag); "
                        "fix: convert the tags with convert_tags(tags, 'BIOES', 'IOB1'), or read them as BIOES"),
])
def test_bioes_prefix_in_iob_scheme_is_named(tags, scheme, want):
    with pytest.raises(DataError) as exc:
        C.validate_tags(tags, scheme)
    assert _msg(exc) == want


def test_ts_file_header_conflicts(tmp_path):
    p = tmp_path / "u.ts"
    p.write_text("@problemName x\n@univariate true\n@classLabel true a b\n@targetLabel true\n@data\n1,2,3:a\n")
    with pytest.raises(DataError, match=r"u\.ts:5: both @classLabel true and @targetLabel true"):
        read_ts_file(p)
    p.write_text("@problemName x\n@univariate true\n@dimensions 3\n@classLabel true a b\n@data\n1,2,3:a\n")
    with pytest.raises(DataError, match=r"u\.ts:5: @univariate true but @dimensions 3"):
        read_ts_file(p)


# -- forecasting -----------------------------------------------------------------------------


def _validate(**settings) -> None:
    cfg = F.Config()
    cfg.data.target = ["y"]
    for key, value in settings.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    cfg.validate()


@pytest.mark.parametrize("settings, want", [
    ({"evaluation__stride": 0}, "evaluation.stride: must be >= 1, got 0"),
    ({"data__seasonal_period": 0}, "data.seasonal_period: must be >= 1, got 0"),
    ({"data__calendar": ["weekly"]}, "data.calendar: 'weekly' is not valid; choose from auto, hour, weekday, month"),
    ({"evaluation__baselines": ["arima"]},
     "evaluation.baselines: 'arima' is not valid; choose from naive, seasonal_naive, drift, ets"),
    ({"model__quantiles": [0.1, 1.0]}, "model.quantiles: every level must be in (0, 1), got [0.1, 1.0]"),
    ({"model__dropout": 1.0}, "model.dropout: must be in [0, 1), got 1.0"),
    ({"model__teacher_forcing_end": -0.1}, "model.teacher_forcing_end: must be in [0, 1], got -0.1"),
    ({"model__window_norm": "seasonal", "model__decoder": "autoregressive"},
     "model.window_norm=seasonal works with the direct decoder only; add --set model.decoder=direct or choose "
     "another window_norm"),
    ({"data__future_covariates": ["y"]}, "column 'y' is both a target and a covariate"),
])
def test_forecasting_config_errors(settings, want):
    with pytest.raises(ConfigError) as exc:
        _validate(**settings)
    assert _msg(exc) == want


def test_forecasting_calendar_period_and_future_times():
    numeric = TimeSeries.from_arrays(np.arange(5.0), series_id="a")
    with pytest.raises(ConfigError, match="data.calendar=hour needs a date/time column"):
        F.resolve_calendar(["hour"], numeric)
    t = np.array(["2020-01-01", "2020-01-03", "2020-01-04"], dtype="datetime64[s]")
    irregular = TimeSeries.from_arrays(np.arange(3.0), time=t, series_id="b")
    assert irregular.freq is None and F.resolve_calendar(["auto", "month"], irregular) == ["month"]
    got = F.future_times(irregular, 3)  # the last step (1 day) repeated
    np.testing.assert_array_equal(got, np.array(["2020-01-05", "2020-01-06", "2020-01-07"], dtype="datetime64[s]"))
    one = TimeSeries.from_arrays(np.arange(1.0), time=t[:1], series_id="c")
    with pytest.raises(DataError) as exc:
        F.future_times(one, 3)
    assert _msg(exc) == ("cannot tell the step of series 'c' from one timestamp; "
                         "fix: give data.freq, e.g. --set data.freq=D")
    # 86400 s is not a whole number of 7-hour steps; a year of yearly steps is one step
    assert [F.infer_period(f) for f in ("Y", "7h", "h", "15min", "W", "Q", "5D")] == [1, 1, 24, 96, 52, 4, 1]


def test_mase_scale_of_too_short_history_is_nan():
    assert np.isnan(MF.mase_scale(np.array([[1.0]]), 12)).all()
    assert np.isnan(F.observed_mase_scale(np.array([[1.0], [2.0]]), np.array([[True], [False]]), 1)).all()


def test_calendar_feature_name_checked():
    from rnnkit.tasks import forecasting_models as FM

    with pytest.raises(ValueError, match="unknown calendar feature 'minute'; choose from hour, weekday, month"):
        FM.calendar_features(np.array(["2020-01-01"], dtype="datetime64[s]"), ["minute"])
