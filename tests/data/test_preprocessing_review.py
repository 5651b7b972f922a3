"""Regression tests for preprocessing defects found in a user-level review."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnkit.data as rd
from rnnkit.data import DataError


def test_pad_sequences_rejects_scalar_and_float_maxlen() -> None:
    with pytest.raises(DataError, match="sequence 1 is a scalar"):
        rd.pad_sequences([[1, 2], 5])  # Keras raises too; it used to be padded as [5]
    with pytest.raises(DataError, match="maxlen must be an int"):
        rd.pad_sequences([[1, 2, 3]], maxlen=2.5)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="max_length must be an int"):
        rd.pad_batch([[1, 2, 3]], max_length=2.5)  # type: ignore[arg-type]


def test_pad_sequences_warns_when_int_dtype_cuts_floats(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rnnkit.data"):
        out = rd.pad_sequences([[0.5, 1.5], [2.0]])
    assert out.tolist() == [[0, 1], [0, 2]]  # Keras semantics kept
    assert "fractional part" in caplog.text and "dtype='float32'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rnnkit.data"):
        rd.pad_sequences([[1.0, 2.0]])  # whole floats lose nothing
        rd.pad_sequences([[0.5]], dtype="float32")
    assert caplog.text == ""


def test_collate_reports_target_truncation_and_bad_targets() -> None:
    batch = rd.collate_sequences([([1, 2, 3], [7, 8, 9]), ([4], [5])], max_length=2)
    assert batch.extras["target_num_truncated"] == 1 and batch.extras["target_tokens_dropped"] == 1
    with pytest.raises(DataError, match="target of sample 0 is a string"):
        rd.collate_sequences([([1, 2], "pos"), ([3], "neg")])
    with pytest.raises(DataError, match="scalar target but sample 1 has a sequence"):
        rd.collate_sequences([([1, 2], 5), ([3], [1, 2])])


def test_tokenizers_reject_non_text() -> None:
    for tok in (rd.WordTokenizer(), rd.CharTokenizer(), rd.WordTokenizer(pattern=None)):
        with pytest.raises(DataError, match=r"text is a float \(nan\), not a str"):
            tok.tokenize(float("nan"))
        with pytest.raises(DataError, match="text is a NoneType"):
            tok.tokenize(None)  # type: ignore[arg-type]


def test_word_tokenizer_keeps_combining_marks_in_words(tmp_path: Path) -> None:
    tok = rd.WordTokenizer()
    assert tok.tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert tok.tokenize("كَتَبَ الوَلَدُ") == ["كَتَبَ", "الوَلَدُ"]
    assert rd.WordTokenizer(normalization="NFD").tokenize("Café.") == ["cafe\u0301", "."]
    assert tok.tokenize("Don't STOP!") == ["don't", "stop", "!"]
    loaded = rd.WordTokenizer.load(tok.save(tmp_path / "tok.json"))
    assert loaded == tok and loaded.tokenize("हिन्दी") == ["हिन्दी"]
    # a tokenizer saved before join_marks existed keeps tokenizing as it did
    old = rd.WordTokenizer.from_config({"pattern": tok.pattern, "lowercase": True, "normalization": "NFKC"})
    assert len(old.tokenize("हिन्दी")) > 1


def test_label_encoder_missing_empty_and_tensor_labels() -> None:
    with pytest.raises(DataError, match=r"label 1 is missing \(None\)"):
        rd.LabelEncoder.fit(["pos", None])
    with pytest.raises(DataError, match="label 2 is missing"):
        rd.LabelEncoder.fit([1.0, 2.0, float("nan")])
    with pytest.raises(DataError, match="no labels"):
        rd.LabelEncoder.fit([])
    enc = rd.LabelEncoder.fit(torch.tensor([1, 0, 1]))
    assert enc.classes == ("0", "1") and enc.encode(torch.tensor([1, 0])) == [1, 0]


def test_text_encoder_truncation_keeps_bos_eos_and_checks_max_length(tmp_path: Path) -> None:
    texts = ["a b c d e f"]
    enc = rd.TextEncoder.fit(texts, rd.WordTokenizer(), add_bos=True, add_eos=True, max_length=4)
    v = enc.vocab
    assert v is not None
    ids = enc.encode("a b c d e f")
    assert ids == v.encode(["a", "b"], add_bos=True, add_eos=True)
    assert enc.num_truncated == 1 and enc.tokens_dropped == 4
    pre = rd.TextEncoder(
        rd.CharTokenizer(), rd.Vocabulary.build(["abcd"]), add_bos=True, truncation="pre", max_length=3
    )
    assert pre.encode("abcd")[0] == pre.vocab.bos_id  # type: ignore[union-attr]
    assert rd.TextEncoder.load(enc.save(tmp_path / "enc.json")).encode("a b c d e f") == ids
    old = rd.TextEncoder.from_config({k: v for k, v in enc.to_config().items() if k != "keep_specials"})
    assert old.encode("a b c d e f")[-1] != v.eos_id  # older files encode as they did
    for bad in (-1, 2, 2.5):
        with pytest.raises(DataError, match="max_length must be an int with room"):
            rd.TextEncoder(rd.WordTokenizer(), v, add_bos=True, add_eos=True, max_length=bad)  # type: ignore[arg-type]


def test_standard_scaler_treats_float_constant_as_constant() -> None:
    x = np.full((100, 1), 123456.789)  # x.std() is ~6e-11, not 0
    scaler = rd.StandardScaler().fit(x)
    np.testing.assert_allclose(scaler.transform(x + 1.0), 1.0)
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(x)), x)


def test_scalers_and_transforms_name_bad_input() -> None:
    with pytest.raises(DataError, match="not a rectangular array"):
        rd.StandardScaler().fit([[1, 2], [3]])
    with pytest.raises(DataError, match="1 NaN values"):
        rd.LogTransform().transform(np.array([1.0, np.nan]))
    with pytest.raises(DataError, match="whole numbers"):
        rd.DifferenceTransform(lag=1.5)  # type: ignore[arg-type]


def test_windows_reject_nan_and_ragged_series() -> None:
    ts = rd.TimeSeries.from_arrays([1.0, np.nan, 3, 4, 5])
    with pytest.raises(DataError, match=r"series '0' has 1 NaN/inf values .* at step 1.*fix: fill"):
        rd.WindowDataset(ts, lookback=2, horizon=1)
    values = np.r_[np.arange(25.0), np.nan, np.arange(4.0)]  # NaN outside the scaler's training rows
    with pytest.raises(DataError, match="at step 25"):
        rd.make_forecasting_splits(rd.TimeSeries.from_arrays(values), 5, 2, target_scaler=rd.StandardScaler())
    with pytest.raises(DataError, match="targets are not a rectangular array"):
        rd.TimeSeries.from_arrays([[1.0, 2.0], [3.0]])


def test_audio_features_reject_nan_and_warn_on_empty_filters(caplog: pytest.LogCaptureFixture) -> None:
    melspec = rd.LogMelSpectrogram(sample_rate=8000, n_fft=256, n_mels=20)
    wave = torch.sin(torch.arange(4000) / 5.0)
    wave[1000] = float("nan")
    with pytest.raises(DataError, match="waveform has 1 NaN/inf samples"):
        melspec(wave)
    with caplog.at_level(logging.WARNING, logger="rnnkit.data"):
        rd.LogMelSpectrogram(sample_rate=16000, n_fft=64, n_mels=128)
    assert "cover no FFT bin" in caplog.text
    assert rd.resample(np.zeros(100), 8000, 16000).shape == (200,)


def test_bucketing_rejects_bad_sizes_and_reports_empty_epochs(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DataError, match="batch_size must be an int"):
        rd.BucketBatchSampler([1, 2], batch_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="max_length must be an int"):
        rd.BucketBatchSampler([1, 2], batch_size=2, max_length=-1)
    with caplog.at_level(logging.WARNING, logger="rnnkit.data"):
        assert list(rd.BucketBatchSampler([3, 1, 2], batch_size=8, drop_last=True)) == []
    assert "yields no batch at all" in caplog.text
    assert list(rd.BucketBatchSampler([3, 1, 2], batch_size=8)) == [[1, 2, 0]]
    with pytest.raises(DataError, match="flat sequence"):
        rd.BucketBatchSampler([[1], [2, 3]], batch_size=2)
    with pytest.raises(DataError, match="index outside"):
        rd.padding_efficiency([1, 2, 3], [[0, 5]])
